"""One run of the federation, stage by stage: connect, baselines, train, evaluate, deploy, release.

`run_federation` is what the ServerApp calls: it opens the privacy ledger once the firms have declared
their own budgets, then runs the stages in order over a `coordinator.Federation`: feature moments
(or the schema's public ranges under DP), local-only baselines, the FedAvg rounds of the MLP family
(`training`), the linear family's releases (`linear_run`), in a simulation the deployment each firm
chooses (scored by the harness), and under DP with `efficiency.dp` the efficiency release.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.serverapp import Grid

from silobridge.clients.models import MODEL_KINDS
from silobridge.clients.normaliser import Normaliser
from silobridge.contract.config import BaselineSelection
from silobridge.contract.efficiency_sums import EFFICIENCY_AFTER, EFFICIENCY_BEFORE
from silobridge.contract.messages import FirmManifest
from silobridge.errors import FederationError
from silobridge.federation.coordinator import Federation, RunObserver
from silobridge.federation.deployment import DeployedOutcome
from silobridge.federation.harness import SimulationHarness
from silobridge.federation.linear_run import LinearModels, model_families, train_linear
from silobridge.federation.resume import Checkpoints
from silobridge.federation.settings import RunSettings
from silobridge.federation.training import train
from silobridge.privacy.ledger import PrivacyRun
from silobridge.server.efficiency import Grouping
from silobridge.server.efficiency_release import release_epsilon


@dataclass
class FederationOutcome:
    """What the federated part of a run produced; the ServerApp adds centralised baselines and writes it out."""

    manifests: dict[int, FirmManifest]
    normaliser: Normaliser
    weights: dict[str, OrderedDict[str, np.ndarray]]
    federated: dict[str, np.ndarray]  # final group-slotted statistics per model
    baselines: dict[str, np.ndarray]  # DEMAND_LOCAL_ONLY, DEMAND_NAIVE, RISK_LOCAL_ONLY
    aggregation: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)
    stopped: str | None = None  # why training ended early (a refused round), if it did
    efficiency: dict[str, np.ndarray] = field(default_factory=dict)  # "before"/"after" slotted sums
    efficiency_grouping: Grouping | None = None  # the slots the firms were assigned (from the manifests)
    efficiency_firms: dict[str, list[str]] = field(default_factory=dict)  # "before"/"after": firms in each sum
    efficiency_dp: dict[str, float] | None = None  # epsilon, delta, noise multiplier of a DP efficiency release
    released_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per model: groups shown besides 'all'
    groups_withheld: dict[str, str] = field(default_factory=dict)  # per model: why small/large are not shown
    families: tuple[str, ...] = ("mlp",)  # the global model families trained ("mlp", "linear")
    linear: LinearModels | None = None  # the global linear models, where trained
    deployed: DeployedOutcome | None = None  # simulation only: what each firm deployed, scored by the harness
    baselined: BaselineSelection | None = None  # whose local-only baselines were fitted (all, a sample, none)


def measure_deployment(
    federation: Federation,
    harness: SimulationHarness,
    norm: Normaliser,
    linear: LinearModels | None,
    mlp: dict[str, Any],
    final: dict[str, np.ndarray],
) -> DeployedOutcome:
    """Let every firm choose what it deploys, score it, and make the efficiency comparison's 'after' the
    deployed forecasts (in `final`, in place); without the MLP family the global linear models are the
    federated ones there too, scored over every firm (not only the baselined ones the deployment covers)."""
    federation.observer.stage("deployment (simulation)")
    selection = federation.baselined
    partial = selection is not None and not selection.complete
    deployed = harness.deploy(
        federation.baseline_instruction(),
        federation._assignment(),
        norm,
        {"demand": linear.demand, "risk": linear.risk} if linear is not None else {},
        mlp or None,
        baselined=selection.firms if partial and selection is not None else None,
    )
    compared = list(selection.firms) if partial and selection is not None else list(federation.node_of)
    federation.efficiency_firms["after"] = federation._efficiency_holders(compared)
    final.pop(EFFICIENCY_AFTER, None)
    if deployed.efficiency_after is not None:
        final[EFFICIENCY_AFTER] = deployed.efficiency_after
    if linear is not None:  # the 'federated_linear' rows beside the MLP, else the federated figures themselves
        scored = harness.global_linear(norm, {"demand": linear.demand, "risk": linear.risk})
        deployed.global_demand, deployed.global_risk = scored.get("demand"), scored.get("risk")
        if not mlp:
            final.update(scored)
    return deployed


def run_federation(
    grid: Grid,
    settings: RunSettings,
    observer: RunObserver,
    *,
    flower_run_id: int,
    open_ledger: Callable[[Mapping[str, float | None]], PrivacyRun] | None = None,
    harness: SimulationHarness | None = None,
    checkpoints: Checkpoints | None = None,
) -> FederationOutcome:
    """Connect, (without DP) release feature moments, baselines, train, evaluate.

    Under DP the privacy ledger opens once the firms have declared their own budgets (`open_ledger`).
    With `checkpoints` every FedAvg round is checkpointed, and a resumed run continues after its last
    (the stages before training spend no privacy and are deterministic: they are run again).
    """
    federation = Federation(grid, settings, observer, flower_run_id=flower_run_id, harness=harness)
    manifests = federation.connect()
    if federation.private:
        if open_ledger is None:
            raise FederationError("a differentially private run needs its privacy ledger")
        own = {m.firm_id: m.budget_epsilon for m in manifests.values()}
        federation.ledger = open_ledger({party: own[firm] for party, firm in federation.accounted_parties().items()})
    norm = federation.feature_normaliser()
    baselines = federation.local_baselines()
    families = model_families(settings.spec)
    weights: dict[str, OrderedDict[str, np.ndarray]] = {}
    history: list[dict[str, Any]] = []
    final: dict[str, np.ndarray] = {}
    if "mlp" in families:
        weights, history = train(federation, norm, checkpoints)
        final = federation.evaluate(weights, norm)
    linear = None
    if "linear" in families:
        linear, linear_history = train_linear(federation, norm, checkpoints)
        history += linear_history
    deployed = measure_deployment(federation, harness, norm, linear, weights, final) if harness is not None else None
    before = baselines.pop(EFFICIENCY_BEFORE, None)
    if deployed is None and federation.baselined is not None and not federation.baselined.complete:
        before = None  # a sample's 'before' against every firm's 'after' compares different firms: no comparison
    efficiency = {"before": before, "after": final.pop(EFFICIENCY_AFTER, None)}
    efficiency_dp = None
    if federation.private and settings.spec.efficiency.dp and "demand" in weights:
        released = federation.release_efficiency(weights["demand"], checkpoints)
        if released is not None:
            efficiency, privacy = released, settings.spec.privacy
            efficiency_dp = {
                "epsilon": release_epsilon(privacy, settings.spec.efficiency),
                "delta": privacy.delta,
                "noise_multiplier": settings.spec.efficiency.dp_noise_multiplier,
            }
    return FederationOutcome(
        manifests=manifests,
        normaliser=norm,
        weights=weights,
        federated=final,
        baselines=baselines,
        aggregation=federation.describe_aggregation(),
        history=history,
        dropped=federation.dropped,
        stopped=federation.stopped,
        efficiency={when: vector for when, vector in efficiency.items() if vector is not None},
        efficiency_grouping=federation.grouping,
        efficiency_firms=federation.efficiency_firms,
        efficiency_dp=efficiency_dp,
        released_groups={kind: federation.released_groups(kind) for kind in MODEL_KINDS},
        groups_withheld=federation.groups_withheld(),
        families=families,
        linear=linear,
        deployed=deployed,
        baselined=federation.baselined,
    )
