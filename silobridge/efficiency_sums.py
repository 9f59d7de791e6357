"""The numerators and denominators of cross-firm efficiency, as a vector firms release and the server sums.

A firm never releases its E, O or I: it releases served units, costs, demand, on-time units and
forecast-error totals, placed in its tier's slot. Sums of these vectors give every tier's and the
chain's efficiency as ratios of sums, so a secure sum is all the server ever needs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from silobridge.config import TIERS

TIER_SLOTS: tuple[str, ...] = TIERS
"""One slot per tier; the chain is their sum."""

EFFICIENCY_BEFORE = "efficiency/before"
"""Segment of the baselines sum: ordering from each firm's local-only demand model."""
EFFICIENCY_AFTER = "efficiency/after"
"""Segment of the final evaluation sum: ordering from the federated demand model."""


@dataclass(frozen=True)
class EfficiencySums:
    """One firm's (or a group's) totals over the held-out horizon of the inventory simulation."""

    served: float = 0.0  # units delivered to customers within the horizon (on time or late)
    on_time: float = 0.0  # units delivered in the period they were demanded
    demand: float = 0.0  # units demanded in the simulated periods
    holding_cost: float = 0.0
    shortage_cost: float = 0.0
    order_cost: float = 0.0
    abs_error: float = 0.0  # sum |forecast - actual| over the held-out forecasts
    actual: float = 0.0  # sum of actual demand over the same forecasts

    @classmethod
    def size(cls) -> int:
        return len(fields(cls))

    @property
    def operating_cost(self) -> float:
        return self.holding_cost + self.shortage_cost + self.order_cost

    def to_vector(self) -> np.ndarray:
        return np.array([getattr(self, f.name) for f in fields(self)], dtype=float)

    @classmethod
    def from_vector(cls, vector: np.ndarray) -> EfficiencySums:
        v = np.asarray(vector, dtype=float)
        if v.shape != (cls.size(),):
            raise ValueError(f"efficiency sums take {cls.size()} values, got shape {v.shape}")
        return cls(*map(float, v))

    def __add__(self, other: EfficiencySums) -> EfficiencySums:
        return EfficiencySums.from_vector(self.to_vector() + other.to_vector())


EFFICIENCY_LENGTH = EfficiencySums.size() * len(TIER_SLOTS)
"""Length of a tier-slotted efficiency vector."""


def slot_by_tier(sums: EfficiencySums, tier: str) -> np.ndarray:
    """A firm's sums in its tier's slot, zeros elsewhere, so one sum yields every tier."""
    if tier not in TIER_SLOTS:
        raise ValueError(f"unknown tier '{tier}' (expected one of {', '.join(TIER_SLOTS)})")
    size = EfficiencySums.size()
    out = np.zeros(EFFICIENCY_LENGTH)
    index = TIER_SLOTS.index(tier)
    out[index * size : (index + 1) * size] = sums.to_vector()
    return out


def split_tiers(vector: np.ndarray) -> dict[str, EfficiencySums]:
    """Inverse of `slot_by_tier` on a sum: one total per tier plus 'chain'."""
    v = np.asarray(vector, dtype=float)
    if v.shape != (EFFICIENCY_LENGTH,):
        raise ValueError(f"a tier-slotted efficiency vector has {EFFICIENCY_LENGTH} values, got shape {v.shape}")
    size = EfficiencySums.size()
    parts = {t: EfficiencySums.from_vector(v[i * size : (i + 1) * size]) for i, t in enumerate(TIER_SLOTS)}
    chain = EfficiencySums()
    for part in parts.values():
        chain = chain + part
    return {"chain": chain, **parts}
