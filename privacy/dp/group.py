"""Group privacy: the guarantee for one observation that sits in g training examples.

A demand observation enters up to g lag windows, so record-level DP-SGD protects it only as a group
of g records. The standard conversion (Dwork and Roth 2014, theorem 2.2 and its (eps, delta) form):
if a mechanism is (eps, delta)-DP for one record, it is (g eps, g e^((g-1) eps) delta)-DP for groups
of g. It holds for any mechanism, so it is loose; where the accountant can be told the group's
sensitivity directly (a plain Gaussian release with sensitivity g C), that is tighter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from silobridge.errors import ConfigError
from silobridge.privacy.dp.accounting import Account


@dataclass(frozen=True)
class GroupPrivacy:
    """The group guarantee and the individual delta it was converted from."""

    group_size: int
    epsilon: float
    delta: float
    individual_epsilon: float
    individual_delta: float


def _group_delta(group_size: int, individual_epsilon: float, individual_delta: float) -> float:
    # g e^((g-1) eps) delta, in logs so a large eps gives inf rather than an overflow.
    log = math.log(group_size) + (group_size - 1) * individual_epsilon + math.log(individual_delta)
    return math.exp(log) if log < 700 else math.inf


def group_epsilon(account: Account, group_size: int, delta: float, *, iterations: int = 60) -> GroupPrivacy:
    """The smallest group epsilon at group `delta` that the conversion gives for what `account` spent.

    Searches (by bisection on log delta) the individual delta whose conversion meets `delta`: a larger
    individual delta means a smaller individual epsilon, so the largest feasible one is best.
    """
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ConfigError(f"must be a positive integer, got {group_size!r}", field="group_size")
    if not 0 < delta < 1:
        raise ConfigError(f"must be in (0, 1), got {delta!r}", field="delta")
    if group_size == 1:
        eps = account.epsilon(delta)
        return GroupPrivacy(1, eps, delta, eps, delta)

    def feasible(log_delta: float) -> bool:
        individual = math.exp(log_delta)
        return _group_delta(group_size, account.epsilon(individual), individual) <= delta

    low, high = math.log(delta) - 60.0, math.log(delta / group_size)  # delta_i <= delta / g always
    if not feasible(low):
        raise ConfigError(
            f"no individual delta above {math.exp(low):.3g} converts to group delta {delta:g} for g={group_size}: "
            "the individual epsilon is too large for group privacy to say anything",
            field="group_size",
        )
    if feasible(high):
        low = high
    else:
        for _ in range(iterations):
            middle = (low + high) / 2.0
            if feasible(middle):
                low = middle
            else:
                high = middle
    individual_delta = math.exp(low)
    individual_epsilon = account.epsilon(individual_delta)
    return GroupPrivacy(
        group_size=group_size,
        epsilon=group_size * individual_epsilon,
        delta=_group_delta(group_size, individual_epsilon, individual_delta),
        individual_epsilon=individual_epsilon,
        individual_delta=individual_delta,
    )
