"""A firm's half of every exchange, as a plain object with no Flower in it: the facade the ClientApp calls.

`FirmClient` holds the firm's validated data (`holdings`) and hands each request to the module of
its release mode: training rounds (`round_update`, with firm-level DP in `firm_release`), test
statistics and efficiency sums (`evaluation`), local-only baselines (`baselines`). Everything it
returns is either a weighted update or a statistics vector placed in the firm's group or tier
slot, so the server only ever needs sums.
"""

from __future__ import annotations

import numpy as np
import torch

from silobridge.clients import evaluation, round_update
from silobridge.clients.baselines import LocalBaselines
from silobridge.clients.data import FirmData
from silobridge.clients.evaluation import Forecaster
from silobridge.clients.features import DemandWindows, RiskExamples
from silobridge.clients.firm_release import round_clip_norm
from silobridge.clients.holdings import FirmHoldings, StatSlots
from silobridge.clients.models import ModelKind
from silobridge.clients.normaliser import Normaliser, has_public_ranges, range_scaled_moments
from silobridge.clients.round_update import TrainOutcome
from silobridge.contract.config import FederationSpec
from silobridge.contract.efficiency_sums import EfficiencyGroups, EfficiencySums
from silobridge.contract.messages import BaselineInstruction, FirmManifest, TrainInstruction
from silobridge.contract.stats import Moments
from silobridge.contract.wire_names import RISK_MOMENTS


class FirmClient:
    """One firm: its data, its group, the federation's spec."""

    def __init__(
        self,
        data: FirmData,
        *,
        group: str,
        spec: FederationSpec,
        tier: str = "unknown",
        device: str = "cpu",
        public_weight: float = 1.0,
        budget_epsilon: float | None = None,
        noise_seed: int | None = None,
    ):
        self.holdings = FirmHoldings(data, group, spec, tier, torch.device(device))
        self.public_weight = public_weight  # the FedAvg weight under DP, where record counts stay private
        self.budget_epsilon = budget_epsilon
        self.noise_seed = noise_seed  # the firm's own, never the coordinator's: None is fresh OS entropy
        self.baselines = LocalBaselines(self.holdings)

    # -- who the firm is and what it holds -------------------------------------------------------

    @property
    def data(self) -> FirmData:
        return self.holdings.data

    @property
    def group(self) -> str:
        return self.holdings.group

    @property
    def spec(self) -> FederationSpec:
        return self.holdings.spec

    @property
    def tier(self) -> str:
        return self.holdings.tier

    @property
    def device(self) -> torch.device:
        return self.holdings.device

    @property
    def firm_id(self) -> str:
        return self.holdings.firm_id

    @property
    def demand_split(self) -> tuple[DemandWindows, DemandWindows] | None:
        return self.holdings.demand_split

    @property
    def demand_series(self) -> list[tuple[DemandWindows, DemandWindows]]:
        return self.holdings.demand_series

    @property
    def risk_split(self) -> tuple[RiskExamples, RiskExamples] | None:
        return self.holdings.risk_split

    def trains(self, kind: str) -> bool:
        """Whether the firm holds training data for this model."""
        return self.holdings.trains(kind)

    def stat_slot(self, kind: str, groups: StatSlots | None) -> str | None:
        return self.holdings.stat_slot(kind, groups)

    def efficiency_slot(self, groups: EfficiencyGroups) -> str | None:
        return self.holdings.efficiency_slot(groups)

    def manifest(self) -> FirmManifest:
        """Who the firm is and which models it can train; how much data it holds stays with it."""
        return FirmManifest(
            firm_id=self.firm_id,
            group=self.group,  # type: ignore[arg-type]
            tier=self.tier,
            has_demand=self.trains("demand"),
            has_risk=self.trains("risk"),
            public_weight=self.public_weight,
            budget_epsilon=self.budget_epsilon,
        )

    def risk_moments(self) -> dict[str, np.ndarray]:
        """Moments of the risk features over the training rows (none if the firm holds no risk data);
        range-scaled where the schema gives public ranges, so large-valued features stay within the sum's bound."""
        if not self.trains("risk"):
            return {}
        features = self.risk_split[0].features  # type: ignore[index]
        data = self.spec.data
        if has_public_ranges(data.risk_feature_ranges, data.risk_features):
            moments = range_scaled_moments(features, data.risk_feature_ranges, data.risk_features)
        else:
            moments = Moments.of(features)
        return {RISK_MOMENTS: moments.to_vector()}

    # -- training rounds -------------------------------------------------------------------------

    def train(
        self,
        kind: ModelKind,
        arrays: dict[str, np.ndarray],
        instruction: TrainInstruction,
        norm: Normaliser | None = None,
        groups: StatSlots | None = None,
    ) -> TrainOutcome:
        """Evaluate the received global model, then train it locally and return the weighted change."""
        return round_update.train(self.holdings, kind, arrays, instruction, norm, groups, noise_seed=self.noise_seed)

    def train_round(
        self,
        weights: dict[str, dict[str, np.ndarray]],
        instruction: TrainInstruction,
        norm: Normaliser | None,
        groups: StatSlots | None = None,
    ) -> dict[str, np.ndarray]:
        """One round of every model the firm can train: the segments it releases into the sum."""
        return round_update.train_round(
            self.holdings,
            weights,
            instruction,
            norm,
            groups,
            public_weight=self.public_weight,
            noise_seed=self.noise_seed,
        )

    def round_clip_norm(self, instruction: TrainInstruction) -> float:
        """The L2 bound of this round's change (firm-level DP): the spec's, or the coordinator's C_t."""
        return round_clip_norm(self.spec.privacy, instruction, firm=self.firm_id)

    # -- evaluation and efficiency ---------------------------------------------------------------

    def evaluate(
        self,
        kind: ModelKind,
        arrays: dict[str, np.ndarray],
        norm: Normaliser | None = None,
        groups: StatSlots | None = None,
    ) -> np.ndarray:
        """Test-split statistics of the given weights, in the slot assigned to this firm's group."""
        return evaluation.evaluate(self.holdings, kind, arrays, norm, groups)

    def evaluate_model(self, kind: ModelKind, model: torch.nn.Module, norm: Normaliser | None = None) -> np.ndarray:
        """`evaluate` of a model already built and loaded (unslotted groups: the simulation's own scoring)."""
        return evaluation.evaluate_model(self.holdings, kind, model, norm)

    def efficiency_sums(self, model: torch.nn.Module | Forecaster) -> EfficiencySums:
        """Totals of the inventory simulation on the held-out horizon when ordering from `model`'s forecasts."""
        return evaluation.efficiency_sums(self.holdings, model)

    def efficiency(self, arrays: dict[str, np.ndarray], groups: EfficiencyGroups) -> np.ndarray | None:
        """Slotted efficiency sums of ordering from the given demand model's forecasts (None: release nothing)."""
        return evaluation.efficiency(self.holdings, arrays, groups)

    def evaluate_all(
        self,
        weights: dict[str, dict[str, np.ndarray]],
        norm: Normaliser | None,
        groups: EfficiencyGroups,
        stat_groups: StatSlots | None = None,
    ) -> dict[str, np.ndarray]:
        """Test statistics of every model the firm holds data for, and the efficiency sums 'after'."""
        return evaluation.evaluate_all(self.holdings, weights, norm, groups, stat_groups)

    # -- local-only baselines --------------------------------------------------------------------

    def local_baselines(
        self, instruction: BaselineInstruction, groups: EfficiencyGroups, stat_groups: StatSlots | None = None
    ) -> dict[str, np.ndarray]:
        """Local-only (and naive) test statistics and the efficiency sums 'before', in the assigned slots."""
        return self.baselines.release(instruction, groups, stat_groups)

    def local_demand_model(self, instruction: BaselineInstruction) -> torch.nn.Module:
        """The local-only demand model: this firm's training windows alone, early stopping (deterministic)."""
        return self.baselines.demand_model(instruction)

    def local_risk_model(self, instruction: BaselineInstruction) -> tuple[torch.nn.Module, Normaliser]:
        """The local-only risk model and its scaling: this firm's training rows alone (deterministic, cached)."""
        return self.baselines.risk_model(instruction)

    def fit_local_demand(self, windows: DemandWindows, instruction: BaselineInstruction) -> torch.nn.Module:
        """The local-only demand recipe on the given windows (also used to choose what the firm deploys)."""
        return self.baselines.fit_demand(windows, instruction)

    def fit_local_risk(
        self, features: np.ndarray, labels: np.ndarray, instruction: BaselineInstruction, fallback: np.ndarray
    ) -> tuple[torch.nn.Module, Normaliser]:
        """The local-only risk recipe on some of this firm's rows (also used to validate it)."""
        return self.baselines.fit_risk(features, labels, instruction, fallback)

    def efficiency_release(
        self, arrays: dict[str, np.ndarray], instruction: BaselineInstruction, groups: EfficiencyGroups
    ) -> dict[str, np.ndarray]:
        """Efficiency sums before and after, clipped jointly: the firm's contribution to a DP release."""
        return self.baselines.efficiency_release(arrays, instruction, groups)
