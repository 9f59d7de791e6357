"""Cross-firm efficiency from summed numerators and denominators (design notes, section 5).

E (production): units served per unit of operating cost; O (organisational): fill rate, the share
of demand served on time; I (innovation): forecast skill, 1 - WAPE clipped to [0, 1]. Each is a
ratio of sums, so a group's value comes from the secure sum of its firms' totals and no firm's own
figures are needed. K_E, K_O, K_I are the after/before ratios and TFP = E x O x I.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from silobridge.efficiency_sums import EfficiencySums, split_tiers


def _ratio(numerator: float, denominator: float) -> float:
    """An undefined ratio (nothing to divide by) is NaN, never an error or a silent zero."""
    return numerator / denominator if denominator > 0 else math.nan


@dataclass(frozen=True)
class Efficiency:
    """E, O and I of a firm or a group for one method (before or after federation)."""

    E: float
    O: float  # noqa: E741 - the seed documents' symbol
    I: float  # noqa: E741

    @property
    def tfp(self) -> float:
        return self.E * self.O * self.I

    @classmethod
    def from_sums(cls, sums: EfficiencySums) -> Efficiency:
        skill = 1.0 - _ratio(sums.abs_error, sums.actual)
        return cls(
            E=_ratio(sums.served, sums.operating_cost),
            O=_ratio(sums.on_time, sums.demand),
            I=float(np.clip(skill, 0.0, 1.0)) if not math.isnan(skill) else math.nan,
        )

    def to_dict(self) -> dict[str, float]:
        return {"E": self.E, "O": self.O, "I": self.I, "TFP": self.tfp}


@dataclass(frozen=True)
class Improvement:
    """Improvement rates after/before; K_TFP = K_E x K_O x K_I = TFP1 / TFP0."""

    K_E: float
    K_O: float
    K_I: float

    @property
    def K_TFP(self) -> float:
        return self.K_E * self.K_O * self.K_I

    def to_dict(self) -> dict[str, float]:
        return {"K_E": self.K_E, "K_O": self.K_O, "K_I": self.K_I, "K_TFP": self.K_TFP}


def improvement(before: Efficiency, after: Efficiency) -> Improvement:
    return Improvement(_ratio(after.E, before.E), _ratio(after.O, before.O), _ratio(after.I, before.I))


def apply_improvement(before: Efficiency, rates: Improvement) -> Efficiency:
    """The inverse: the after values that `rates` make of `before` (E1 = K_E E0, ...); not clipped,
    as in the seed document's worked example."""
    return Efficiency(before.E * rates.K_E, before.O * rates.K_O, before.I * rates.K_I)


def comparison(before: EfficiencySums, after: EfficiencySums) -> dict[str, dict[str, float]]:
    """{"before": {E, O, I, TFP}, "after": {...}, "K": {K_E, K_O, K_I, K_TFP}} of one group."""
    e0, e1 = Efficiency.from_sums(before), Efficiency.from_sums(after)
    return {"before": e0.to_dict(), "after": e1.to_dict(), "K": improvement(e0, e1).to_dict()}


def efficiency_table(before: np.ndarray, after: np.ndarray, tiers: Iterable[str]) -> dict[str, Any]:
    """The chain's and each named tier's comparison, from the summed tier-slotted vectors."""
    b, a = split_tiers(before), split_tiers(after)
    return {
        "chain": comparison(b["chain"], a["chain"]),
        "tiers": {tier: comparison(b[tier], a[tier]) for tier in tiers},
    }
