"""The linear family over a federation: one secure sum of sufficient statistics per release.

Demand: every firm holding demand data sends [triu(X^T X), X^T Y] of its clipped training windows
into one secure sum; the coordinator adds Gaussian noise once (under DP) and solves AdaSSP. Risk:
`newton_steps` sums of [gradient, triu(Hessian)] at the current coefficients, each noised once.
Under record-level DP each release is admitted by the ledger before any firm is contacted and
recorded after (the accountant composes them with anything else the run releases).

Security note: the noise is central. The secure sum hides each firm's statistics from the
coordinator, but the coordinator sees the un-noised pooled sum before it adds the noise (see the
README's security notes); the firms are protected from each other and from anyone who sees the
released model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from flwr.app import ConfigRecord

from silobridge.clients.linear import demand_dim, demand_sensitivity, newton_sensitivity, risk_row_norm
from silobridge.clients.normaliser import Normaliser
from silobridge.contract.config import FederationSpec
from silobridge.contract.sufficient import LINEAR_COEF, LINEAR_REQUEST, LINEAR_SEGMENT, newton_size, regression_size
from silobridge.contract.wire_names import TRAIN_LINEAR
from silobridge.errors import BudgetExhausted, ConfigError, FederationError
from silobridge.federation.coordinator import Federation
from silobridge.federation.linear_resume import LinearProgress
from silobridge.federation.records import NORMALISER, arrays_record
from silobridge.federation.resume import Checkpoints
from silobridge.privacy.ledger import Release
from silobridge.server.dp_rounds import dataset_party
from silobridge.server.layouts import linear_layout
from silobridge.server.linear import adassp, add_noise, linear_noise_multipliers, newton_step, release_event


@dataclass
class LinearModels:
    """The global linear models (None where no firm holds the data or the budget refused) and their noise."""

    demand: np.ndarray | None = None  # (features, horizon)
    risk: np.ndarray | None = None  # (features + 1,)
    noise: dict[str, dict[str, float]] = field(default_factory=dict)  # per model: multiplier, sensitivity, std

    def weights(self) -> dict[str, dict[str, np.ndarray]]:
        """As the run directory saves models: one array per model."""
        out = {}
        if self.demand is not None:
            out["demand"] = {"coef": self.demand}
        if self.risk is not None:
            out["risk"] = {"coef": self.risk}
        return out


def model_families(spec: FederationSpec) -> tuple[str, ...]:
    """The global model families a run trains: `training.model`, where 'auto' is the linear family under
    DP (its few releases spend the budget once, where DP-SGD composes 30 rounds) and both families
    without DP (each firm then chooses among them on its own data)."""
    model = spec.linear.model
    firm_level = spec.privacy.enabled and spec.privacy.unit == "firm"
    if model == "linear" and firm_level:
        raise ConfigError(
            "the linear family is accounted per record (one window, one delivery row); firm-level DP trains the "
            "MLP: set privacy.unit = 'record' or training.model = 'mlp'",
            field="training.model",
        )
    if model == "auto":
        if firm_level:
            return ("mlp",)  # DP-FedAvg's firm-level noise is calibrated for model updates
        return ("linear",) if spec.privacy.enabled else ("mlp", "linear")
    return (model,)


def linear_privacy(models: LinearModels) -> dict[str, Any]:
    """The privacy summary's mechanism lines for a run that trained only the linear family."""
    return {
        "mechanism": "sufficient_statistics_gaussian",
        "noise_multiplier": {kind: round(noise["multiplier"], 6) for kind, noise in models.noise.items()},
        "clip_norm": {kind: round(noise["sensitivity"], 6) for kind, noise in models.noise.items()},
        "noise_std": {kind: round(noise["std"], 6) for kind, noise in models.noise.items()},
        "sample_rate": 1.0,
        "steps_per_round": None,
    }


def _multipliers(federation: Federation) -> dict[str, float]:
    """Noise multipliers calibrated so each model's releases (and a DP efficiency release) spend the budget."""
    return linear_noise_multipliers(federation.spec)


def _release(
    federation: Federation,
    kind: str,
    release_id: str,
    records: dict[str, Any],
    length: int,
    multiplier: float | None,
    sensitivity: float,
    progress: LinearProgress,
    step: int = 1,
) -> tuple[np.ndarray, float, dict[str, Any]] | None:
    """One (noised) sum of the holders' statistics; None if the budget refuses it. Returns the released
    vector, the noise std and a history record. A release the run's checkpoint holds is replayed from it
    (a resumed run), neither summed nor charged again."""
    std = 0.0 if multiplier is None else multiplier * sensitivity
    replayed = progress.replay(release_id)
    if replayed is not None:
        return replayed[0], std, replayed[1]
    started = time.monotonic()
    holders = [federation.manifests[n].firm_id for n in federation.manifests if federation.manifests[n].trains(kind)]
    participants = holders
    ledger = federation.ledger
    if multiplier is not None:
        if ledger is None:
            raise FederationError("no privacy ledger in this run")
        parties = {dataset_party(firm, kind): firm for firm in holders}
        try:
            admission = ledger.admit(release_id, release_event(multiplier), sorted(parties))
        except BudgetExhausted as err:
            federation.stopped = f"{release_id} refused: {err}"
            return None
        participants = [parties[p] for p in admission.participants]
        for party in admission.excluded:
            federation._drop(parties[party], release_id, "its own privacy budget is spent")
    fewest = federation.secure.params.min_firms if federation.secure is not None else 1
    if len(participants) < fewest:  # a secure sum over fewer firms would be theirs alone: not released
        reason = (
            f"{len(participants)} firm(s) hold {kind} data and can take part, fewer than the {fewest} a secure sum "
            f"needs: no global linear {kind} model; firms keep their own models"
        )
        federation.dropped.append({"stage": release_id, "firm": None, "reason": reason})
        federation.observer.stage(f"{release_id} skipped: {reason}")
        return None
    layout = linear_layout(length, federation.spec.aggregation)
    nodes = [federation.node_of[firm] for firm in participants]
    outcome = federation.release_sum(TRAIN_LINEAR, records, layout, nodes, release_id)
    summed = outcome.segments[LINEAR_SEGMENT]
    released = add_noise(summed, std, progress.rng)
    record: dict[str, Any] = {
        "round": step,
        "evaluated_round": step,
        "model": f"{kind}_linear",
        "release": release_id,
        "firms": len(outcome.contributors),
        "train_loss": None,
        "clipped_values": outcome.clipped,
        "metrics": None,
    }
    release = None
    if multiplier is not None and ledger is not None:
        contributed = set(outcome.contributors)
        release = Release(
            release_id=release_id,
            mechanism="gaussian",
            event=release_event(multiplier),
            firms=sorted(dataset_party(f, kind) for f in holders if f in contributed),
            noise_multiplier=multiplier,
            clip_norm=sensitivity,
            parameters={"query": f"sufficient statistics of the linear {kind} model", "noise_std": std},
        )
    record["seconds"] = round(time.monotonic() - started, 3)
    progress.complete(release_id, released, record, ledger, release, federation.dropped)
    return released, std, record


def train_linear(
    federation: Federation, norm: Normaliser, checkpoints: Checkpoints | None = None
) -> tuple[LinearModels, list[dict[str, Any]]]:
    """Release the statistics, solve the global models; a refused release leaves that model None. With
    `checkpoints`, each release is checkpointed and a resumed run replays those it completed."""
    spec = federation.spec
    private = federation.private
    multipliers = _multipliers(federation) if private else {}
    # Fresh OS entropy: noise the firms cannot predict; a simulation's --noise-seed fixes it (experiments only).
    seed = federation.settings.noise_seed if federation.settings.simulated else None
    rng = np.random.default_rng(None if seed is None else [seed, 17])
    progress = LinearProgress(checkpoints, rng)
    models, history = LinearModels(), []
    if any(m.trains("demand") for m in federation.manifests.values()):
        federation.observer.stage("linear demand: sufficient statistics")
        dim = demand_dim(spec)
        sensitivity = demand_sensitivity(spec.linear.row_norm, spec.linear.target_norm)
        out = _release(
            federation,
            "demand",
            "linear/demand",
            {LINEAR_REQUEST: ConfigRecord({"model": "demand"})},
            regression_size(dim, spec.horizon),
            multipliers.get("demand"),
            sensitivity,
            progress,
        )
        if out is not None:
            released, std, record = out
            models.demand = adassp(released, dim, spec.horizon, std, spec.linear.ridge)
            models.noise["demand"] = {"multiplier": multipliers.get("demand", 0.0), "sensitivity": sensitivity}
            models.noise["demand"]["std"] = std
            history.append(record)
            federation.observer.round_done(record)
    if any(m.trains("risk") for m in federation.manifests.values()):
        dim = len(spec.data.risk_features) + 1
        sensitivity = newton_sensitivity(risk_row_norm(dim - 1))
        coef = np.zeros(dim)
        for step in range(1, spec.linear.newton_steps + 1):
            federation.observer.stage(f"linear risk: Newton step {step}/{spec.linear.newton_steps}")
            records = {
                LINEAR_REQUEST: ConfigRecord({"model": "risk"}),
                LINEAR_COEF: arrays_record({"coef": coef}),
                NORMALISER: arrays_record(norm.to_arrays()),
            }
            out = _release(
                federation,
                "risk",
                f"linear/risk-{step}",
                records,
                newton_size(dim),
                multipliers.get("risk"),
                sensitivity,
                progress,
                step,
            )
            if out is None:
                break
            released, std, record = out
            coef = newton_step(coef, released, std, spec.linear.risk_ridge)
            history.append(record)
            federation.observer.round_done(record)
            models.risk = coef
            models.noise["risk"] = {"multiplier": multipliers.get("risk", 0.0), "sensitivity": sensitivity, "std": std}
    return models, history
