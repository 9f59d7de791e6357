"""One firm of the tiny scenario with fresh models and a train instruction: for tests of a firm's half."""

from __future__ import annotations

import numpy as np

from silobridge.clients.firm import FirmClient
from silobridge.clients.models import MODEL_KINDS, build_model, state_to_arrays
from silobridge.clients.normaliser import Normaliser
from silobridge.contract.messages import TrainInstruction
from silobridge.federation.firm_source import simulated_firm
from silobridge.federation.settings import settings_from_run_config
from tests.conftest import TINY


def tiny_firm(
    overrides: str, *, round_number: int = 1, noise_seed: int | None = None
) -> tuple[FirmClient, dict[str, dict[str, np.ndarray]], TrainInstruction, Normaliser]:
    """The tiny scenario's first firm under `overrides` ("a=b;c=d"), models seeded 3, instruction seeded 5;
    DP-SGD noise from `noise_seed` (None: fresh OS entropy, as in a real run)."""
    run_config: dict[str, object] = {"scenario": str(TINY), "set": overrides}
    if noise_seed is not None:
        run_config["noise-seed"] = noise_seed
    settings = settings_from_run_config(run_config)
    spec = settings.spec
    firm = simulated_firm(settings, spec, 0, run_id=-7)
    weights = {kind: state_to_arrays(build_model(kind, spec, seed=3)) for kind in MODEL_KINDS}
    training = settings.scenario.training
    instruction = TrainInstruction(
        round=round_number,
        epochs=1,
        batch_size=training.batch_size,
        optimiser=training.optimiser_spec,
        proximal_mu=0.0,
        seed=5,
    )
    return firm, weights, instruction, Normaliser.from_ranges(spec.data.risk_feature_ranges, spec.data.risk_features)
