"""The efficiency sums as a differentially private release (the optional `efficiency.dp`).

Each firm clips its joint (before, after) tier-slotted vector to L2 norm C; the server adds
N(0, (z C)^2) to every coordinate of the secure sum. Adding or removing a firm moves the sum by at
most C; under record-level DP one record can move its firm's clipped vector anywhere in the ball,
so by at most 2C. The event is charged to every firm whose demand data is in the sum.
"""

from __future__ import annotations

import dp_accounting as dpa
import numpy as np

from silobridge.contract.config import EfficiencySpec, PrivacySpec
from silobridge.errors import ConfigError
from silobridge.privacy.dp import Account, add_gaussian_noise, gaussian_event
from silobridge.server.privacy import accounting_spec

RELEASE_ID = "efficiency"


def efficiency_event(unit: str, noise_multiplier: float) -> dpa.GaussianDpEvent:
    """The Gaussian event of one efficiency release, with the clip norm as the unit of noise."""
    return gaussian_event(noise_multiplier, 2.0 if unit == "record" else 1.0)


def release_epsilon(privacy: PrivacySpec, policy: EfficiencySpec) -> float:
    """Epsilon of the efficiency release alone, at the run's delta, by the run's accountant."""
    event = efficiency_event(privacy.unit, policy.dp_noise_multiplier)
    return Account.empty(accounting_spec(privacy)).compose(event).epsilon(privacy.delta)


def check_room(privacy: PrivacySpec, policy: EfficiencySpec) -> None:
    """The efficiency release alone must leave budget for training, or calibration can find no noise."""
    spent = release_epsilon(privacy, policy)
    if spent >= privacy.epsilon:
        raise ConfigError(
            f"the efficiency release alone spends epsilon {spent:.3g} of the run's {privacy.epsilon:g}, leaving "
            "nothing for training; raise it or turn efficiency.dp off",
            field="efficiency.dp_noise_multiplier",
        )


def noised(segments: dict[str, np.ndarray], policy: EfficiencySpec, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The securely summed, clipped segments with Gaussian noise on every coordinate."""
    return {
        name: add_gaussian_noise(value, policy.dp_noise_multiplier, policy.dp_clip_norm, rng)
        for name, value in segments.items()
    }
