"""What a firm releases in a round under differential privacy, checked on the firm's own half.

Record level: only each model's change and a public weight (its declared size to `weight_power`),
trained by DP-SGD at the privacy section's own step size. Firm level: one joint change clipped to
`clip_norm` (central), or quantised with a Skellam share added (distributed).
"""

from __future__ import annotations

import numpy as np
import pytest

from silobridge.clients.firm import FirmClient
from silobridge.clients.models import MODEL_KINDS
from silobridge.clients.normaliser import Normaliser
from silobridge.clients.round_update import dp_noise_seed
from silobridge.contract.arrays import flatten
from silobridge.contract.messages import TrainInstruction
from tests.firm_support import tiny_firm

KINDS = MODEL_KINDS


def _firm(
    overrides: str, noise_seed: int | None = None
) -> tuple[FirmClient, dict[str, dict[str, np.ndarray]], TrainInstruction, Normaliser]:
    return tiny_firm(overrides, noise_seed=noise_seed)


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_record_level_release_is_the_changes_and_a_public_weight_only(power: float) -> None:
    firm, weights, instruction, norm = _firm(f"privacy.noise_multiplier=1.0;privacy.weight_power={power}")
    released = firm.train_round(weights, instruction, norm)
    assert set(released) == {f"{kind}/{part}" for kind in KINDS for part in ("update", "weight")}
    weight = firm.public_weight**power
    for kind in KINDS:
        assert released[f"{kind}/weight"].tolist() == [pytest.approx(weight)]
        change = released[f"{kind}/update"] / weight
        assert change.shape == flatten(weights[kind]).shape and np.all(np.isfinite(change))
        assert np.linalg.norm(change) > 0


def test_dp_sgd_steps_at_the_privacy_learning_rate() -> None:
    """The same seeds (same batches, same noise) with ten times the step give a far larger change."""
    norms = {}
    for lr in (0.05, 0.5):
        firm, weights, instruction, norm = _firm(f"privacy.noise_multiplier=1.0;privacy.learning_rate={lr}", 11)
        norms[lr] = np.linalg.norm(firm.train_round(weights, instruction, norm)["demand/update"])
    assert norms[0.5] > 3 * norms[0.05]
    # The scenario's training.learning_rate is for plain training only.
    firm, weights, instruction, norm = _firm("privacy.noise_multiplier=1.0;privacy.learning_rate=0.05", 11)
    faster = instruction.model_copy(
        update={"optimiser": instruction.optimiser.model_copy(update={"learning_rate": 0.9})}
    )
    same = np.linalg.norm(firm.train_round(weights, faster, norm)["demand/update"])
    assert same == pytest.approx(norms[0.05], rel=1e-6)


def test_dp_sgd_noise_cannot_be_replayed_from_public_numbers() -> None:
    """The coordinator knows the run seed, the round and the firm id; from those alone it must not be able
    to rebuild a firm's Poisson batches and noise. Without the firm's own seed, two rounds trained from the
    same weights under the same instruction differ; with it, they repeat exactly, and another seed differs."""
    overrides = "privacy.noise_multiplier=1.0"

    def change(noise_seed: int | None) -> np.ndarray:
        firm, weights, instruction, norm = _firm(overrides, noise_seed)
        return firm.train_round(weights, instruction, norm)["demand/update"]

    fresh = [change(None) for _ in range(2)]
    assert not np.allclose(fresh[0], fresh[1])
    np.testing.assert_array_equal(change(11), change(11))
    assert not np.allclose(change(11), change(12))
    # The firm's seed alone fixes the noise: the coordinator's instruction seed does not change it ...
    firm, weights, instruction, norm = _firm(overrides, 11)
    other = instruction.model_copy(update={"seed": 999})
    np.testing.assert_array_equal(firm.train_round(weights, other, norm)["demand/update"], change(11))
    # ... while each round and each model draws its own.
    later = instruction.model_copy(update={"round": 2})
    assert not np.allclose(firm.train_round(weights, later, norm)["demand/update"], change(11))
    seeds = [dp_noise_seed(firm.noise_seed, firm.firm_id, kind, instruction) for kind in ("demand", "risk")]
    assert seeds[0] != seeds[1]


def test_firm_level_central_release_is_clipped_jointly() -> None:
    firm, weights, instruction, norm = _firm("privacy.unit=firm;privacy.noise_multiplier=1.0;privacy.clip_norm=0.05")
    released = firm.train_round(weights, instruction, norm)
    joint = np.concatenate([released[f"{kind}/update"] for kind in KINDS])
    assert np.linalg.norm(joint) == pytest.approx(0.05, rel=1e-6)  # a round's change is far larger: clipped
    assert all(released[f"{kind}/weight"].tolist() == [1.0] for kind in KINDS)
