"""Noise calibration: the smallest noise multiplier that keeps a planned run within its budget.

A thin layer over dp-accounting's `calibrate_dp_mechanism` (Brent's method, then a check that the
returned value does not overspend), fed with our accountants so Skellam events calibrate too.
"""

from __future__ import annotations

from collections.abc import Callable

import dp_accounting as dpa

from silobridge.errors import ConfigError
from silobridge.privacy.dp.accounting import AccountingSpec
from silobridge.privacy.dp.budget import Budget
from silobridge.privacy.dp.events import dpsgd_event
from silobridge.privacy.dp.sampling import Sampling

# Precision of the returned noise multiplier: far below what changes a model, and it keeps a PLD
# calibration to a few seconds.
DEFAULT_TOLERANCE = 1e-4


def calibrate_noise_multiplier(
    make_event: Callable[[float], dpa.DpEvent],
    budget: Budget,
    spec: AccountingSpec | None = None,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
) -> float:
    """The smallest noise multiplier z (within `tolerance`) with epsilon(make_event(z)) <= budget.epsilon.

    `make_event(z)` must describe the whole planned run (all rounds or steps) for noise multiplier z,
    and its epsilon must fall as z grows.
    """
    spec = spec or AccountingSpec()

    def event_for(z: float) -> dpa.DpEvent:
        # dp-accounting's search starts at z = 0, which no mechanism accepts: no noise is not private.
        return make_event(z) if z > 0 else dpa.NonPrivateDpEvent()

    try:
        return float(
            dpa.calibrate_dp_mechanism(
                make_fresh_accountant=spec.fresh_accountant,
                make_event_from_param=event_for,
                target_epsilon=budget.epsilon,
                target_delta=budget.delta,
                tol=tolerance,
            )
        )
    except (dpa.mechanism_calibration.NoBracketIntervalFoundError, dpa.UnsupportedEventError) as err:
        raise ConfigError(
            f"cannot calibrate a noise multiplier for ({budget.epsilon:g}, {budget.delta:g}): {err}",
            field="noise_multiplier",
        ) from err


def calibrate_rounds(
    budget: Budget, rounds: int, sampling: Sampling, spec: AccountingSpec | None = None, **kwargs: float
) -> float:
    """Noise multiplier for `rounds` rounds of a sampled Gaussian release (firm-level DP-FedAvg)."""
    spec = spec or AccountingSpec()
    sampling.check_relation(spec.relation)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ConfigError(f"must be a positive integer, got {rounds!r}", field="rounds")

    def make_event(z: float) -> dpa.DpEvent:
        return dpa.SelfComposedDpEvent(sampling.wrap(dpa.GaussianDpEvent(z)), rounds)

    return calibrate_noise_multiplier(make_event, budget, spec, **kwargs)


def calibrate_dpsgd(
    budget: Budget, sample_rate: float, steps: int, spec: AccountingSpec | None = None, **kwargs: float
) -> float:
    """Noise multiplier for `steps` steps of record-level DP-SGD at `sample_rate`."""
    return calibrate_noise_multiplier(lambda z: dpsgd_event(z, sample_rate, steps), budget, spec, **kwargs)
