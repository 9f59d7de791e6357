"""What a firm holds (its validated data cut into train and test splits) and where it may release
statistics about it (the slots the server assigns its group and tier, checked against the minimum
group size). Every release mode of `FirmClient` reads the firm through this one object.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from silobridge.clients.data import FirmData
from silobridge.clients.features import DemandWindows, RiskExamples, demand_windows, risk_examples
from silobridge.clients.models import ModelKind
from silobridge.clients.normaliser import Normaliser
from silobridge.contract.config import FederationSpec
from silobridge.contract.efficiency_sums import EfficiencyGroups
from silobridge.contract.stats import StatGroups, slot_by_group
from silobridge.errors import ProtocolError

StatSlots = Mapping[str, StatGroups]
"""The server's statistics slots per model kind; None where the caller is the simulation harness (own group)."""


@dataclass(frozen=True, eq=False)  # identity: a firm's data frames are not compared
class FirmHoldings:
    """One firm's data, group and tier under the federation's spec; the splits are cut once, on first use."""

    data: FirmData
    group: str
    spec: FederationSpec
    tier: str = "unknown"
    device: torch.device = torch.device("cpu")

    @property
    def firm_id(self) -> str:
        return self.data.firm_id

    @cached_property
    def demand_split(self) -> tuple[DemandWindows, DemandWindows] | None:
        """(train, test) demand windows, or None if the firm holds no demand data."""
        return None if self.data.demand is None else demand_windows(self.data.demand, self.spec, self.tier)

    @cached_property
    def demand_series(self) -> list[tuple[DemandWindows, DemandWindows]]:
        """(train, test) windows of each series on its own: the inventory simulation runs per series."""
        if self.data.demand is None:
            return []
        return [demand_windows(rows, self.spec, self.tier) for _, rows in self.data.demand.groupby("series", sort=True)]

    @cached_property
    def risk_split(self) -> tuple[RiskExamples, RiskExamples] | None:
        """(train, test) risk examples, unstandardised, or None if the firm holds no risk data."""
        return None if self.data.risk is None else risk_examples(self.data.risk, self.spec)

    def seed(self, seed: int) -> int:
        """A training seed of this firm's own from the coordinator's (firms never train in lockstep)."""
        return (seed * 1_000_003 + zlib.crc32(self.firm_id.encode())) % 2**31

    def trains(self, kind: str) -> bool:
        """Whether the firm holds training data for this model."""
        split = self.demand_split if kind == "demand" else self.risk_split
        return split is not None and len(split[0]) > 0

    def xy(self, kind: ModelKind, split: int, norm: Normaliser | None) -> tuple[np.ndarray, np.ndarray]:
        """Inputs and targets of one split (0 train, 1 test); risk features scaled by `norm`."""
        if kind == "demand":
            windows = self.demand_windows(split)
            return windows.features, windows.targets
        if self.risk_split is None:
            raise ProtocolError("asked about a risk model but the firm holds no risk data", firm=self.firm_id)
        if norm is None:
            raise ProtocolError("the request carries no normaliser for the risk features", firm=self.firm_id)
        examples = self.risk_split[split]
        return norm.apply(examples.features), examples.labels

    def demand_windows(self, split: int) -> DemandWindows:
        """One split of the demand windows; a firm without demand data refuses the question."""
        if self.demand_split is None:
            raise ProtocolError("asked about a demand model but the firm holds no demand data", firm=self.firm_id)
        return self.demand_split[split]

    # -- where statistics may go ----------------------------------------------------------------

    def stat_slot(self, kind: str, groups: StatSlots | None) -> str | None:
        """The slot of this firm's test statistics of one model, checked against the minimum group size (a
        slot said to hold too few firms is refused); None: the model's holders are too few, release nothing.

        Without `groups` (the simulation harness, which holds every firm's data) the firm's own group.
        """
        if groups is None:
            return self.group
        if kind not in groups:
            raise ProtocolError(f"the request assigns no statistics slot for the {kind} model", firm=self.firm_id)
        return groups[kind].slot_for(self.group, self.spec.efficiency.min_firms_per_group, firm=self.firm_id)

    def slotted(self, kind: str, vector: np.ndarray, groups: StatSlots | None) -> np.ndarray:
        """A statistics vector in the assigned slot (all zeros when the firm must release nothing)."""
        slot = self.stat_slot(kind, groups)
        if slot is None:
            return slot_by_group(np.zeros_like(vector), self.group)
        return slot_by_group(vector, slot)

    def efficiency_slot(self, groups: EfficiencyGroups) -> str | None:
        """The slot the server assigned this firm's tier, checked against the spec's minimum group size
        (refused if said to hold fewer firms); None: the chain is too small, the firm releases nothing."""
        return groups.slot_for(self.tier, self.spec.efficiency.min_firms_per_group, firm=self.firm_id)
