"""The centralised baseline: every firm's data pooled, the non-private upper bound.

Only a simulation (or a pilot on all firms' extracts) can compute it, because only there does one
party hold every firm's data. It trains the same model with the same optimiser for the same number
of passes over the data as the federated run, then each firm's test split is scored exactly as in
the federation, so the comparison differs in one thing only: where the data sits.
"""

from __future__ import annotations

import numpy as np

from clients.features import DemandWindows, RiskExamples, standardise
from clients.firm import FirmClient, Normaliser
from clients.models import build_model, state_to_arrays
from clients.training import TrainSettings, fit, resolve_device
from scenarios.schema import TrainingSettings


def centralised_baseline(
    firms: list[FirmClient], training: TrainingSettings, norm: Normaliser, *, seed: int
) -> dict[str, np.ndarray]:
    """Group-slotted test statistics of models trained on all firms' training data pooled."""
    device = resolve_device(training.device)
    settings = TrainSettings(
        epochs=training.rounds * training.local_epochs,
        batch_size=training.batch_size,
        learning_rate=training.learning_rate,
        weight_decay=training.weight_decay,
        seed=seed,
        optimiser=training.optimiser,
        momentum=training.momentum,
    )
    spec = firms[0].spec
    out: dict[str, np.ndarray] = {}

    demand_firms = [f for f in firms if f.demand_split is not None]
    if demand_firms:
        pooled = DemandWindows.concat([f.demand_split[0] for f in demand_firms])  # type: ignore[index]
        model = build_model("demand", spec, seed=seed)
        fit(model, pooled.features, pooled.targets, loss="l1", settings=settings, device=device)
        weights = state_to_arrays(model)
        out["demand"] = np.sum([f.evaluate("demand", weights) for f in demand_firms], axis=0)

    risk_firms = [f for f in firms if f.risk_split is not None]
    if risk_firms:
        pooled_risk = RiskExamples.concat([f.risk_split[0] for f in risk_firms])  # type: ignore[index]
        model = build_model("risk", spec, seed=seed)
        fit(
            model,
            standardise(pooled_risk.features, norm.mean, norm.std),
            pooled_risk.labels,
            loss="bce",
            settings=settings,
            device=device,
        )
        weights = state_to_arrays(model)
        out["risk"] = np.sum([f.evaluate("risk", weights, norm) for f in risk_firms], axis=0)
    return out
