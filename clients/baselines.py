"""A firm's local-only baselines: models fitted on its own data alone (deterministic, cached per
instruction), their test statistics beside the naive forecast's, and the efficiency sums before
(local-only) and after (federated) that a DP efficiency release clips jointly."""

from __future__ import annotations

import math

import numpy as np
import torch

from silobridge.clients.evaluation import demand_stats, efficiency_sums, risk_stats
from silobridge.clients.features import DemandWindows
from silobridge.clients.holdings import FirmHoldings, StatSlots
from silobridge.clients.models import build_model, load_arrays
from silobridge.clients.normaliser import Normaliser
from silobridge.clients.training import FitSettings, fit_early_stopping
from silobridge.contract.efficiency_sums import EFFICIENCY_AFTER, EFFICIENCY_BEFORE, EfficiencyGroups, slot_by_tier
from silobridge.contract.messages import BaselineInstruction
from silobridge.contract.stats import DemandErrorStats, Moments
from silobridge.contract.wire_names import DEMAND_LOCAL_ONLY, DEMAND_NAIVE, RISK_LOCAL_ONLY
from silobridge.errors import ProtocolError
from silobridge.privacy.dp import clip_l2


class BaseRate(torch.nn.Module):
    """The log-odds of a firm's smoothed event rate, (events + 0.5) / (rows + 1), the same for every row: its
    local-only risk model when its training rows hold one class. From one class nothing can be learnt to
    rank rows by, and early stopping cannot choose an epoch either (the loss on one class falls with every
    epoch, so the MLP ran all of `max_epochs` to rank at random): the MLP is not fitted."""

    log_odds: torch.Tensor

    def __init__(self, labels: np.ndarray):
        super().__init__()
        rate = (float(np.sum(labels == 1.0)) + 0.5) / (len(labels) + 1.0)
        self.register_buffer("log_odds", torch.tensor(math.log(rate / (1.0 - rate)), dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.log_odds.expand(x.shape[0]).clone()


def one_class(labels: np.ndarray) -> bool:
    """Whether the labels hold fewer than both classes (no event, or nothing but events, or no rows)."""
    return np.unique(labels).size < 2


class LocalBaselines:
    """The local-only models of one firm, fitted once per instruction."""

    def __init__(self, firm: FirmHoldings):
        self.firm = firm
        self._demand: dict[str, torch.nn.Module] = {}  # local-only demand models by instruction (deterministic)
        self._risk: dict[str, tuple[torch.nn.Module, Normaliser]] = {}  # local-only risk models, likewise

    def settings(self, instruction: BaselineInstruction) -> FitSettings:
        return FitSettings(
            epochs=instruction.max_epochs,
            batch_size=instruction.batch_size,
            seed=self.firm.seed(instruction.seed),
            optimiser=instruction.optimiser,
        )

    def fit_demand(self, windows: DemandWindows, instruction: BaselineInstruction) -> torch.nn.Module:
        """The local-only demand recipe on the given windows (all of them for the baseline, a validation
        split's fit windows when the firm chooses what to deploy)."""
        model = build_model("demand", self.firm.spec, seed=self.firm.seed(instruction.seed))
        fit_early_stopping(
            model,
            windows.features,
            windows.targets,
            loss="l1",
            settings=self.settings(instruction),
            device=self.firm.device,
            patience=instruction.patience,
        )
        return model

    def fit_risk(
        self, features: np.ndarray, labels: np.ndarray, instruction: BaselineInstruction, fallback: np.ndarray
    ) -> tuple[torch.nn.Module, Normaliser]:
        """A local-only risk MLP on some of this firm's rows, scaled by their own moments (by `fallback`'s
        where there are no rows): the local-only baseline's recipe, also used to validate it. Rows of one
        class fit nothing: the model is their `BaseRate`."""
        own = Moments.of(features) if len(features) else Moments.of(fallback)
        norm = Normaliser(own.mean(), own.std())
        if one_class(labels):
            return BaseRate(labels), norm
        model = build_model("risk", self.firm.spec, seed=self.firm.seed(instruction.seed))
        fit_early_stopping(
            model,
            norm.apply(features),
            labels,
            loss="bce",
            settings=self.settings(instruction),
            device=self.firm.device,
            patience=instruction.patience,
        )
        return model, norm

    def demand_model(self, instruction: BaselineInstruction) -> torch.nn.Module:
        """The local-only demand model: this firm's training windows alone, early stopping (deterministic)."""
        if self.firm.demand_split is None:
            raise ProtocolError(
                "asked for a local demand model but the firm holds no demand data", firm=self.firm.firm_id
            )
        key = instruction.model_dump_json()
        if key not in self._demand:
            self._demand[key] = self.fit_demand(self.firm.demand_split[0], instruction)
        return self._demand[key]

    def risk_model(self, instruction: BaselineInstruction) -> tuple[torch.nn.Module, Normaliser]:
        """The local-only risk model and its scaling: this firm's training rows alone (deterministic, cached)."""
        if self.firm.risk_split is None:
            raise ProtocolError("asked for a local risk model but the firm holds no risk data", firm=self.firm.firm_id)
        key = instruction.model_dump_json()
        if key not in self._risk:
            train, test = self.firm.risk_split
            self._risk[key] = self.fit_risk(train.features, train.labels, instruction, test.features)
        return self._risk[key]

    def release(
        self, instruction: BaselineInstruction, groups: EfficiencyGroups, stat_groups: StatSlots | None = None
    ) -> dict[str, np.ndarray]:
        """Fit local-only models on this firm's data alone; return their (and naive) test statistics and
        the efficiency sums of ordering from the local-only forecasts (the 'before'), in the assigned slots."""
        firm = self.firm
        slot = firm.efficiency_slot(groups) if firm.trains("demand") else None
        for kind in ("demand", "risk"):
            if firm.trains(kind):
                firm.stat_slot(kind, stat_groups)  # refuse a too-small slot before fitting anything
        out: dict[str, np.ndarray] = {}
        if firm.demand_split is not None:
            test = firm.demand_split[1]
            model = self.demand_model(instruction)
            local = demand_stats(model, test, firm.device).to_vector()
            out[DEMAND_LOCAL_ONLY] = firm.slotted("demand", local, stat_groups)
            naive = DemandErrorStats.from_forecasts(test.naive, test.actual)
            out[DEMAND_NAIVE] = firm.slotted("demand", naive.to_vector(), stat_groups)
            if slot is not None and firm.trains("demand"):
                out[EFFICIENCY_BEFORE] = slot_by_tier(efficiency_sums(firm, model), slot)
        if firm.risk_split is not None:
            test = firm.risk_split[1]
            model, norm = self.risk_model(instruction)
            stats = risk_stats(model, norm.apply(test.features), test.labels, firm.device)
            out[RISK_LOCAL_ONLY] = firm.slotted("risk", stats.to_vector(), stat_groups)
        return out

    def efficiency_release(
        self, arrays: dict[str, np.ndarray], instruction: BaselineInstruction, groups: EfficiencyGroups
    ) -> dict[str, np.ndarray]:
        """Efficiency sums before (local-only model) and after (the given federated model), clipped
        jointly to the federation's L2 bound: the firm's contribution to a DP release."""
        firm = self.firm
        if not firm.trains("demand"):
            return {}
        slot = firm.efficiency_slot(groups)
        if slot is None:
            return {}
        before = slot_by_tier(efficiency_sums(firm, self.demand_model(instruction)), slot)
        federated = build_model("demand", firm.spec)
        load_arrays(federated, arrays)
        after = slot_by_tier(efficiency_sums(firm, federated), slot)
        clipped = clip_l2(np.concatenate([before, after]), firm.spec.efficiency.dp_clip_norm, firm=firm.firm_id).vector
        return {EFFICIENCY_BEFORE: clipped[: before.size], EFFICIENCY_AFTER: clipped[before.size :]}
