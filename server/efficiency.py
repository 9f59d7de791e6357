"""Cross-firm efficiency from summed numerators and denominators (README, "Cross-firm efficiency").

E (production): units served per unit of operating cost; O (organisational): fill rate, the share
of demand served on time; I (innovation): forecast skill, 1 - WAPE clipped to [0, 1]. Each is a
ratio of sums, so a group's value comes from the secure sum of its firms' totals and no firm's own
figures are needed. K_E, K_O, K_I are the after/before ratios and TFP = E x O x I.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from silobridge.contract.config import TIERS
from silobridge.contract.efficiency_sums import OTHER, EfficiencyGroups, EfficiencySums, split_tiers


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


def efficiency_table(before: np.ndarray, after: np.ndarray, groups: Iterable[str]) -> dict[str, Any]:
    """The chain's and each named group's (slot's) comparison, from the summed slotted vectors."""
    b, a = split_tiers(before), split_tiers(after)
    return {
        "chain": comparison(b["chain"], a["chain"]),
        "tiers": {group: comparison(b[group], a[group]) for group in groups},
    }


@dataclass(frozen=True)
class Grouping:
    """Which groups' efficiency a run may publish, decided from the public manifests before any sum.

    `assignment` is what the firms are told; `published` the slots whose sums are shown (the chain
    always is, when it has enough firms); `suppressed` says, per tier not published on its own, why.
    """

    assignment: EfficiencyGroups
    published: tuple[str, ...]
    suppressed: dict[str, str]
    members: dict[str, tuple[str, ...]]  # tiers in each published slot
    chain_firms: int
    minimum: int

    def describe(self) -> dict[str, Any]:
        """The summary's account of the grouping (counts of firms per group are public: manifests)."""
        return {
            "min_firms_per_group": self.minimum,
            "chain_firms": self.chain_firms,
            "groups": {
                slot: {"firms": self.assignment.counts[slot], "tiers": list(self.members[slot])}
                for slot in self.published
            },
            "suppressed_tiers": dict(self.suppressed),
        }


def group_tiers(tiers: Iterable[str], minimum: int) -> Grouping:
    """Assign efficiency slots from the tiers of the firms that hold demand data (one entry per firm).

    A tier with at least `minimum` firms gets its own slot; the rest share the OTHER slot. Because the
    chain is published, the OTHER slot is always chain minus the published tiers: so it must hold no
    firm or at least `minimum`, and while it holds 1 to `minimum` - 1 the smallest published tier joins
    it. OTHER is published when some tier is too (otherwise it is the chain). With fewer than `minimum`
    firms in all, nothing is assigned and nothing published.
    """
    counts = Counter(tiers)
    total = sum(counts.values())
    order = [t for t in TIERS if t in counts] + sorted(t for t in counts if t not in TIERS)
    if total < minimum:
        reason = f"the chain has {total} firm(s) with demand data, fewer than the minimum {minimum}: nothing published"
        return Grouping(EfficiencyGroups({}, {}), (), {t: reason for t in order}, {}, total, minimum)
    own = [t for t in order if t in TIERS and counts[t] >= minimum]
    pooled = [t for t in order if t not in own]
    moved: list[str] = []
    while own and 0 < sum(counts[t] for t in pooled) < minimum:
        smallest = min(own, key=lambda t: (counts[t], TIERS.index(t)))
        own.remove(smallest)
        pooled.append(smallest)
        moved.append(smallest)
    other = sum(counts[t] for t in pooled)
    slots = {t: t for t in own} | {t: OTHER for t in pooled}
    slot_counts = {t: counts[t] for t in own} | ({OTHER: other} if other else {})
    published = tuple(own) + ((OTHER,) if own and other else ())
    suppressed: dict[str, str] = {}
    for tier in pooled:
        if tier in moved:
            why = (
                f"{counts[tier]} firms, but publishing it would expose the remaining tiers' "
                f"{other - counts[tier]} firm(s) as chain minus the published tiers"
            )
        else:
            why = f"{counts[tier]} firm(s), fewer than the minimum {minimum}"
        where = f"pooled into '{OTHER}' ({other} firms)" if own else "counted in the chain only"
        suppressed[tier] = f"{why}; {where}"
    members = {t: (t,) for t in own} | ({OTHER: tuple(t for t in order if t in pooled)} if OTHER in published else {})
    return Grouping(EfficiencyGroups(slots, slot_counts), published, suppressed, members, total, minimum)
