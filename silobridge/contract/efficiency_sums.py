"""The numerators and denominators of cross-firm efficiency, as a vector firms release and the server sums.

A firm never releases its E, O or I: it releases served units, costs, demand, on-time units and
forecast-error totals, placed in the slot the server assigned it. Sums of these vectors give every
published group's and the chain's efficiency as ratios of sums, so a secure sum is all the server needs.

A slot's sum is as good as published: the server sees it. So the server assigns slots from the public
manifests (`EfficiencyGroups`): a tier gets its own slot only if it holds at least the minimum number
of firms, the others share the OTHER slot, and a firm refuses a slot said to hold fewer firms.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from silobridge.contract.config import TIERS
from silobridge.contract.slots import SlotAssignment
from silobridge.errors import ProtocolError

OTHER = "other tiers"
"""The slot of every firm whose tier is too small to publish on its own."""
TIER_SLOTS: tuple[str, ...] = (*TIERS, OTHER)
"""One slot per tier plus the pooled slot; the chain is their sum."""

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
            raise ProtocolError(f"efficiency sums take {cls.size()} values, got shape {v.shape}")
        return cls(*map(float, v))

    def __add__(self, other: EfficiencySums) -> EfficiencySums:
        return EfficiencySums.from_vector(self.to_vector() + other.to_vector())


EFFICIENCY_LENGTH = EfficiencySums.size() * len(TIER_SLOTS)
"""Length of a tier-slotted efficiency vector."""


def slot_by_tier(sums: EfficiencySums, slot: str) -> np.ndarray:
    """A firm's sums in its assigned slot, zeros elsewhere, so one sum yields every group."""
    if slot not in TIER_SLOTS:
        raise ProtocolError(f"unknown efficiency slot '{slot}' (expected one of {', '.join(TIER_SLOTS)})")
    size = EfficiencySums.size()
    out = np.zeros(EFFICIENCY_LENGTH)
    index = TIER_SLOTS.index(slot)
    out[index * size : (index + 1) * size] = sums.to_vector()
    return out


def split_tiers(vector: np.ndarray) -> dict[str, EfficiencySums]:
    """Inverse of `slot_by_tier` on a sum: one total per slot plus 'chain'."""
    v = np.asarray(vector, dtype=float)
    if v.shape != (EFFICIENCY_LENGTH,):
        raise ProtocolError(f"a slotted efficiency vector has {EFFICIENCY_LENGTH} values, got shape {v.shape}")
    size = EfficiencySums.size()
    parts = {t: EfficiencySums.from_vector(v[i * size : (i + 1) * size]) for i, t in enumerate(TIER_SLOTS)}
    chain = EfficiencySums()
    for part in parts.values():
        chain = chain + part
    return {"chain": chain, **parts}


@dataclass(frozen=True)
class EfficiencyGroups(SlotAssignment):
    """The server's slot assignment, sent with every request that releases efficiency sums.

    `slots` maps a tier to its slot (the tier itself, or OTHER); a tier absent from it releases
    nothing (the whole chain holds too few firms).
    """

    @classmethod
    def from_config(cls, values: dict[str, object], *, firm: str | None = None) -> EfficiencyGroups:
        slots, counts = cls.parse(values, groups=TIERS, slot_names=TIER_SLOTS, what="efficiency", firm=firm)
        return cls(slots=slots, counts=counts)

    def slot_for(self, tier: str, minimum: int, *, firm: str) -> str | None:
        """The slot this firm may use, None if it must release nothing (see `checked_slot`)."""
        return self.checked_slot(tier, minimum, firm=firm, what="efficiency totals")
