"""The simulation harness: measurements only a party holding every firm's data can make.

A simulation (or a pilot on all firms' extracts) knows every firm's data, so it can score the
federated model on each firm's test split, fit each firm's local-only baselines and train the
centralised baseline -- the non-private upper bound -- without any firm releasing anything. Under
differential privacy the federation itself releases only DP-accounted updates, so all measurement
happens here; without DP, firms release their test statistics through secure sums and the harness
adds the centralised baseline only.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import torch

from silobridge.clients.features import DemandWindows, RiskExamples
from silobridge.clients.firm import FirmClient
from silobridge.clients.models import build_model, load_arrays, state_to_arrays
from silobridge.clients.normaliser import Normaliser
from silobridge.clients.training import FitSettings, fit, resolve_device
from silobridge.contract.efficiency_sums import EFFICIENCY_AFTER, EfficiencyGroups
from silobridge.contract.messages import BaselineInstruction
from silobridge.federation.deployment import (
    DeployedOutcome,
    centralised_linear,
    deployed_firms,
    global_linear_stats,
    merge_outcomes,
)
from silobridge.federation.firm_source import simulated_firm
from silobridge.federation.harness_pool import baseline_job, deploy_job, map_in_order
from silobridge.federation.settings import RunSettings
from silobridge.federation.simulation_cpus import simulation_cpus

HARNESS_RUN_ID = -1
"""Cache key of the firms the harness rebuilds from the scenario (never a Flower run id)."""


MIN_POOLED_FIRMS = 6
"""Below this many firms the harness fits in its own process unless told otherwise: each pool spawns
interpreters that import torch (seconds of CPU each), more than a handful of small firms' fits cost."""


class SimulationHarness:
    """Every firm of the scenario, held by the coordinator's process for measurement."""

    def __init__(self, settings: RunSettings, *, workers: int | None = None):
        """`workers`: processes the per-firm fits (baselines, deployment) spread over, by default the
        simulation's CPUs (`harness_pool`) from MIN_POOLED_FIRMS firms on; 1 fits every firm in this process,
        one after another."""
        # One torch thread, as each simulated firm has: on a shared machine, threads that wait on each other
        # slowed the harness's local fits by more than ten times.
        if torch.get_num_threads() != 1:
            torch.set_num_threads(1)
        self.settings = settings
        spec = settings.spec
        self.firms: list[FirmClient] = [
            simulated_firm(settings, spec, i, run_id=HARNESS_RUN_ID) for i in range(len(settings.scenario.firms))
        ]
        self._baselines: dict[tuple, dict[str, dict[str, np.ndarray]]] = {}
        self.workers = simulation_cpus(workers) if workers is not None or len(self.firms) >= MIN_POOLED_FIRMS else 1

    def evaluate(self, weights: dict[str, dict[str, np.ndarray]], norm: Normaliser) -> dict[str, np.ndarray]:
        """Group-slotted test statistics of the given models, summed over the firms that hold the data."""
        out: dict[str, np.ndarray] = {}
        for kind, arrays in weights.items():
            holders = [f for f in self.firms if f.trains(kind)]
            if holders:
                # One model for every firm (what FirmClient.evaluate computes per firm): building and loading the
                # model for each firm was most of this per-round loop's time under DP.
                model = build_model(kind, holders[0].spec)  # type: ignore[arg-type]
                load_arrays(model, arrays)
                out[kind] = np.sum([f.evaluate_model(kind, model, norm) for f in holders], axis=0)  # type: ignore[arg-type]
        return out

    def efficiency(self, weights: dict[str, dict[str, np.ndarray]], groups: EfficiencyGroups) -> dict[str, np.ndarray]:
        """Slotted efficiency sums of ordering from the given demand model, summed over the firms, in the
        slots the federation assigned (the same grouping as the firms' own releases)."""
        holders = [f for f in self.firms if f.trains("demand")]
        if "demand" not in weights or not holders:
            return {}
        vectors = [v for v in (f.efficiency(weights["demand"], groups) for f in holders) if v is not None]
        return {EFFICIENCY_AFTER: np.sum(vectors, axis=0)} if vectors else {}

    def firm_baselines(
        self, instruction: BaselineInstruction, groups: EfficiencyGroups, firms: Collection[str] | None = None
    ) -> dict[str, dict]:
        """The local-only and naive statistics (in the firm's group's slot) of each of `firms` (default: all),
        fitted once per run: the baselines stage and the deployment share them."""
        wanted = {f.firm_id for f in self.firms} if firms is None else set(firms)
        key = (instruction.model_dump_json(), tuple(sorted(groups.to_config().items())))
        fitted = self._baselines.setdefault(key, {})
        todo = [i for i, firm in enumerate(self.firms) if firm.firm_id in wanted and firm.firm_id not in fitted]
        done = map_in_order(baseline_job, [self.firms[i] for i in todo], instruction, groups, workers=self.workers)
        for i, (vectors, firm) in zip(todo, done, strict=True):
            self.firms[i] = firm  # from a worker: a copy holding its fitted local-only models, for deployment
            fitted[firm.firm_id] = vectors
        return {firm_id: vectors for firm_id, vectors in fitted.items() if firm_id in wanted}

    def local_baselines(
        self, instruction: BaselineInstruction, groups: EfficiencyGroups, firms: Collection[str] | None = None
    ) -> dict[str, np.ndarray]:
        """The local-only models and naive forecasts of each of `firms` (default: all), scored on its own
        test split, summed."""
        totals: dict[str, np.ndarray] = {}
        for vectors in self.firm_baselines(instruction, groups, firms).values():
            for key, vector in vectors.items():
                totals[key] = totals.get(key, 0) + vector
        return totals

    def deploy(
        self,
        instruction: BaselineInstruction,
        groups: EfficiencyGroups,
        norm: Normaliser,
        linear: dict[str, np.ndarray | None],
        mlp: dict[str, dict[str, np.ndarray]] | None = None,
        baselined: Collection[str] | None = None,
    ) -> DeployedOutcome:
        """What every firm deploys, scored (simulation only: see federation.deployment); with `baselined`
        (default: all) only those firms are deployed and scored, beside their own local-only figures."""
        baselines = self.firm_baselines(instruction, groups, baselined)
        partial = baselined is not None and len(baselines) < len(self.firms)
        firms = deployed_firms(self.firms, baselines, over_baselined=partial)
        jobs = [(firm, baselines.get(firm.firm_id, {})) for firm in firms]
        outcomes = map_in_order(deploy_job, jobs, instruction, groups, norm, linear, mlp, workers=self.workers)
        return merge_outcomes(outcomes)

    def global_linear(self, norm: Normaliser, linear: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
        """The global linear models scored on every firm's test split, summed (`global_linear_stats`)."""
        return global_linear_stats(self.firms, norm, linear)

    def centralised_linear(self, norm: Normaliser) -> dict[str, np.ndarray]:
        """The linear family fitted on every firm's training data pooled, without noise, scored per firm."""
        return centralised_linear(self.firms, norm)

    def centralised(self, norm: Normaliser) -> dict[str, np.ndarray]:
        """Models trained on all firms' training data pooled, for as many passes as the federated run."""
        training = self.settings.scenario.training
        seed = self.settings.scenario.seed
        device = resolve_device(training.device)
        settings = FitSettings(
            epochs=training.rounds * training.local_epochs,
            batch_size=training.batch_size,
            seed=seed,
            optimiser=training.optimiser_spec,
        )
        spec = self.firms[0].spec
        weights: dict[str, dict[str, np.ndarray]] = {}
        demand_firms = [f for f in self.firms if f.trains("demand")]
        if demand_firms:
            pooled = DemandWindows.concat([f.demand_split[0] for f in demand_firms])  # type: ignore[index]
            model = build_model("demand", spec, seed=seed)
            fit(model, pooled.features, pooled.targets, loss="l1", settings=settings, device=device)
            weights["demand"] = state_to_arrays(model)
        risk_firms = [f for f in self.firms if f.trains("risk")]
        if risk_firms:
            pooled_risk = RiskExamples.concat([f.risk_split[0] for f in risk_firms])  # type: ignore[index]
            model = build_model("risk", spec, seed=seed)
            fit(
                model,
                norm.apply(pooled_risk.features),
                pooled_risk.labels,
                loss="bce",
                settings=settings,
                device=device,
            )
            weights["risk"] = state_to_arrays(model)
        return self.evaluate(weights, norm)
