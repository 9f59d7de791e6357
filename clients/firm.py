"""A firm's half of every exchange, as a plain object with no Flower in it.

It holds the firm's validated data and answers the server's requests: describe itself, release
feature moments, train a model from the global weights, evaluate a model, fit its local-only
baselines. Everything it returns is either a weighted update or a sufficient-statistics vector
placed in the firm's group slot, so the server only ever needs sums.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np
import torch
from scipy.special import expit

from silobridge.clients.data import FirmData
from silobridge.clients.dpsgd import DpSgdSettings, fit_private
from silobridge.clients.features import DemandWindows, RiskExamples, demand_windows, risk_examples, standardise
from silobridge.clients.inventory import SeriesHorizon, forecast_error_std, forecast_sums, simulate_series
from silobridge.clients.models import ModelKind, build_model, load_arrays, state_to_arrays
from silobridge.clients.training import TrainSettings, fit, fit_early_stopping, predict
from silobridge.contract.arrays import flatten
from silobridge.contract.config import FederationSpec
from silobridge.contract.efficiency_sums import (
    EFFICIENCY_AFTER,
    EFFICIENCY_BEFORE,
    EfficiencyGroups,
    EfficiencySums,
    slot_by_tier,
)
from silobridge.contract.messages import BaselineInstruction, FirmManifest, TrainInstruction
from silobridge.contract.stats import DemandErrorStats, Moments, RiskStats, StatGroups, slot_by_group
from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.dp import UNCLIPPED_SEGMENT, DistributedSkellam, clip_l2

Forecaster = Callable[[DemandWindows], np.ndarray]
"""Forecasts in units of the given windows."""

StatSlots = Mapping[str, StatGroups]
"""The server's statistics slots per model kind; None where the caller is the simulation harness (own group)."""


@dataclass(frozen=True)
class Normaliser:
    """How risk features are scaled: federation-wide mean and std, or (under DP) public ranges.

    With `low`/`high` set, features are first clipped to their public range, so a scale taken from
    the range (no data) stays meaningful for outliers.
    """

    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    @classmethod
    def from_ranges(cls, ranges: dict[str, tuple[float, float]], features: tuple[str, ...]) -> Normaliser:
        missing = [name for name in features if name not in ranges]
        if missing:
            raise ConfigError(
                f"the federation's schema gives no public range for {missing}", field="data.risk_feature_ranges"
            )
        low = np.array([ranges[name][0] for name in features], dtype=float)
        high = np.array([ranges[name][1] for name in features], dtype=float)
        return cls(mean=(low + high) / 2, std=(high - low) / 2, low=low, high=high)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Its wire form: mean and std, with the public range when it has one (firms must clip as scored)."""
        arrays = {"mean": self.mean, "std": self.std}
        if self.low is not None and self.high is not None:
            arrays.update(low=self.low, high=self.high)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], *, firm: str = "local") -> Normaliser:
        """Back from `to_arrays`; a range comes whole (low and high) or not at all."""
        if "mean" not in arrays or "std" not in arrays:
            raise ProtocolError("the normaliser carries no mean or std", firm=firm)
        if ("low" in arrays) != ("high" in arrays):
            raise ProtocolError("the normaliser carries only one end of the features' range", firm=firm)

        def vector(name: str) -> np.ndarray | None:
            return np.asarray(arrays[name], dtype=float) if name in arrays else None

        return cls(vector("mean"), vector("std"), vector("low"), vector("high"))  # type: ignore[arg-type]

    def apply(self, features: np.ndarray) -> np.ndarray:
        if self.low is not None and self.high is not None:
            features = np.clip(features, self.low, self.high)
        return standardise(features, self.mean, self.std)


@dataclass(frozen=True)
class TrainOutcome:
    """A firm's answer to one training round of one model."""

    weighted_delta: np.ndarray  # weight * (local weights - global weights), flat float64
    weight: float  # training examples
    loss: float  # mean training loss of the last local epoch
    evaluation: np.ndarray  # group-slotted statistics of the *received* global model on the test split


def forecast_units(model: torch.nn.Module, windows: DemandWindows, device: torch.device) -> np.ndarray:
    """The model's forecasts of each window, in units (never negative)."""
    if len(windows) == 0:
        return np.zeros(windows.targets.shape, dtype=float)
    scaled = predict(model, windows.features, device=device).reshape(len(windows), -1)
    return np.maximum(scaled * windows.scale[:, None], 0.0)


def demand_stats(model: torch.nn.Module, windows: DemandWindows, device: torch.device) -> DemandErrorStats:
    return DemandErrorStats.from_forecasts(forecast_units(model, windows, device), windows.actual)


def risk_stats(model: torch.nn.Module, features: np.ndarray, labels: np.ndarray, device: torch.device) -> RiskStats:
    logits = predict(model, features, device=device)
    return RiskStats.from_predictions(expit(logits), labels)  # no overflow for very negative logits


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
        self.data = data
        self.group = group
        self.spec = spec
        self.tier = tier
        self.device = torch.device(device)
        self.public_weight = public_weight  # the FedAvg weight under DP, where record counts stay private
        self.budget_epsilon = budget_epsilon
        self.noise_seed = noise_seed  # the firm's own, never the coordinator's: None is fresh OS entropy
        self._local_models: dict[str, torch.nn.Module] = {}  # local-only demand models by instruction (deterministic)
        self._local_risk: dict[str, tuple[torch.nn.Module, Normaliser]] = {}  # local-only risk models, likewise

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

    def _seed(self, seed: int) -> int:
        return (seed * 1_000_003 + zlib.crc32(self.firm_id.encode())) % 2**31

    def _noise_seed(self, kind: str, instruction: TrainInstruction) -> int | None:
        """The DP-SGD seed of one model's round: None (fresh entropy) unless the firm fixed its own seed.

        Never derived from the instruction's seed alone: that is the coordinator's number, and a seed it
        knows would let it replay the firm's sampling and noise.
        """
        if self.noise_seed is None:
            return None
        sequence = np.random.SeedSequence(
            [self.noise_seed, instruction.round, zlib.crc32(self.firm_id.encode()), zlib.crc32(kind.encode())]
        )
        return int(sequence.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))

    # -- requests --------------------------------------------------------------------------------

    def trains(self, kind: str) -> bool:
        """Whether the firm holds training data for this model."""
        split = self.demand_split if kind == "demand" else self.risk_split
        return split is not None and len(split[0]) > 0

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
        """Moments of the risk features over the training rows (none if the firm holds no risk data)."""
        if not self.trains("risk"):
            return {}
        return {"risk_moments": Moments.of(self.risk_split[0].features).to_vector()}  # type: ignore[index]

    def _xy(self, kind: ModelKind, split: int, norm: Normaliser | None) -> tuple[np.ndarray, np.ndarray]:
        if kind == "demand":
            if self.demand_split is None:
                raise ProtocolError("asked about a demand model but the firm holds no demand data", firm=self.firm_id)
            windows = self.demand_split[split]
            return windows.features, windows.targets
        if self.risk_split is None:
            raise ProtocolError("asked about a risk model but the firm holds no risk data", firm=self.firm_id)
        if norm is None:
            raise ProtocolError("the request carries no normaliser for the risk features", firm=self.firm_id)
        examples = self.risk_split[split]
        return norm.apply(examples.features), examples.labels

    def _stats(self, kind: ModelKind, model: torch.nn.Module, norm: Normaliser | None) -> np.ndarray:
        if kind == "demand":
            if self.demand_split is None:
                raise ProtocolError("asked about a demand model but the firm holds no demand data", firm=self.firm_id)
            return demand_stats(model, self.demand_split[1], self.device).to_vector()
        x, y = self._xy("risk", 1, norm)
        return risk_stats(model, x, y, self.device).to_vector()

    def stat_slot(self, kind: str, groups: StatSlots | None) -> str | None:
        """The slot of this firm's test statistics of one model, checked against the minimum group size (a
        slot said to hold too few firms is refused); None: the model's holders are too few, release nothing.

        Without `groups` (the simulation harness, which holds every firm's data) the firm's own group.
        """
        if groups is None:
            return self.group
        if kind not in groups:
            raise ProtocolError(f"the request assigns no statistics slot for the {kind} model", firm=self.firm_id)
        return groups[kind].slot_for(self.group, self.spec.inventory.min_firms_per_group, firm=self.firm_id)

    def _slotted(self, kind: str, vector: np.ndarray, groups: StatSlots | None) -> np.ndarray:
        """A statistics vector in the assigned slot (all zeros when the firm must release nothing)."""
        slot = self.stat_slot(kind, groups)
        if slot is None:
            return slot_by_group(np.zeros_like(vector), self.group)
        return slot_by_group(vector, slot)

    def evaluate(
        self,
        kind: ModelKind,
        arrays: dict[str, np.ndarray],
        norm: Normaliser | None = None,
        groups: StatSlots | None = None,
    ) -> np.ndarray:
        """Test-split statistics of the given weights, in the slot assigned to this firm's group."""
        self.stat_slot(kind, groups)  # refuse a too-small slot before computing anything
        model = build_model(kind, self.spec)
        load_arrays(model, arrays)
        return self._slotted(kind, self._stats(kind, model, norm), groups)

    def efficiency_sums(self, model: torch.nn.Module | Forecaster) -> EfficiencySums:
        """Totals of the inventory simulation on the held-out horizon when ordering from `model`'s forecasts
        (a torch model, or any forecaster of windows in units: what the firm deploys).

        Per series: the safety stock comes from the model's errors on the series' most recent training
        windows (over the periods one order covers); the orders from its forecasts on the test windows.
        """
        policy = self.spec.inventory
        cover = policy.protection
        if cover > self.spec.horizon:
            raise ConfigError(
                f"firm '{self.firm_id}': an order covers lead_time + review_period = {cover} periods but the models "
                f"forecast only {self.spec.horizon}",
                field="efficiency.lead_time",
            )
        if isinstance(model, torch.nn.Module):
            torch_model = model

            def forecaster(windows: DemandWindows) -> np.ndarray:
                return forecast_units(torch_model, windows, self.device)
        else:
            forecaster = model
        total = EfficiencySums()
        for train, test in self.demand_series:
            if len(test) == 0:
                continue
            past = forecaster(train)[-policy.error_windows :, :cover]
            sigma = forecast_error_std(past, train.actual[-policy.error_windows :, :cover])
            forecast = forecaster(test)
            if not (np.all(np.isfinite(forecast)) and np.isfinite(sigma)):
                raise ProtocolError("the demand model sent gives non-finite forecasts", firm=self.firm_id)
            horizon = SeriesHorizon(demand=test.actual[:, 0], forecasts=forecast, sigma=sigma, firm=self.firm_id)
            total = total + simulate_series(horizon, policy) + forecast_sums(forecast, test.actual)
        return total

    def efficiency_slot(self, groups: EfficiencyGroups) -> str | None:
        """The slot the server assigned this firm's tier, checked against the spec's minimum group size
        (refused if said to hold fewer firms); None: the chain is too small, the firm releases nothing."""
        return groups.slot_for(self.tier, self.spec.inventory.min_firms_per_group, firm=self.firm_id)

    def efficiency(self, arrays: dict[str, np.ndarray], groups: EfficiencyGroups) -> np.ndarray | None:
        """Slotted efficiency sums of ordering from the given demand model's forecasts (None: release nothing)."""
        slot = self.efficiency_slot(groups)
        if slot is None:
            return None
        model = build_model("demand", self.spec)
        load_arrays(model, arrays)
        return slot_by_tier(self.efficiency_sums(model), slot)

    def _train_settings(self, instruction: TrainInstruction) -> TrainSettings:
        return TrainSettings(
            epochs=instruction.epochs,
            batch_size=instruction.batch_size,
            learning_rate=instruction.learning_rate,
            weight_decay=instruction.weight_decay,
            proximal_mu=instruction.proximal_mu,
            seed=self._seed(instruction.seed + instruction.round),
            optimiser=instruction.optimiser,
            momentum=instruction.momentum,
        )

    def _local_change(
        self, kind: ModelKind, arrays: dict[str, np.ndarray], instruction: TrainInstruction, norm: Normaliser | None
    ) -> tuple[np.ndarray, float, int]:
        """Train from the global weights; the change of the weights, the last epoch's loss, the examples."""
        model = build_model(kind, self.spec)
        load_arrays(model, arrays)
        x, y = self._xy(kind, 0, norm)
        settings = self._train_settings(instruction)
        loss = "l1" if kind == "demand" else "bce"
        privacy = self.spec.privacy
        if privacy.enabled and privacy.unit == "record":
            if privacy.noise_multiplier is None:
                raise ConfigError(
                    f"firm '{self.firm_id}': record-level DP needs the coordinator's calibrated noise multiplier",
                    field="privacy.noise_multiplier",
                )
            dp = DpSgdSettings(privacy.noise_multiplier, privacy.max_grad_norm(kind), privacy.sample_rate)
            # The firm's own privacy settings, not the instruction, fix how much it trains: the steps it
            # takes are what the accountant charges, whatever the coordinator asks.
            settings = replace(settings, learning_rate=privacy.learning_rate, epochs=privacy.local_epochs)
            report = fit_private(
                model,
                x,
                y,
                loss=loss,
                settings=settings,
                dp=dp,
                device=self.device,
                noise_seed=self._noise_seed(kind, instruction),
            )
        else:
            anchor = [p.detach().clone() for p in model.parameters()]
            report = fit(model, x, y, loss=loss, settings=settings, device=self.device, anchor=anchor)
        delta = flatten(state_to_arrays(model)) - flatten(arrays)
        return delta, report.epoch_losses[-1] if report.epoch_losses else float("nan"), len(x)

    def train(
        self,
        kind: ModelKind,
        arrays: dict[str, np.ndarray],
        instruction: TrainInstruction,
        norm: Normaliser | None = None,
        groups: StatSlots | None = None,
    ) -> TrainOutcome:
        """Evaluate the received global model, then train it locally and return the weighted change."""
        self.stat_slot(kind, groups)  # refuse a too-small slot before training
        model = build_model(kind, self.spec)
        load_arrays(model, arrays)
        evaluation = self._slotted(kind, self._stats(kind, model, norm), groups)
        delta, loss, examples = self._local_change(kind, arrays, instruction, norm)
        weight = float(min(examples, self.spec.aggregation.max_examples))
        return TrainOutcome(weight * delta, weight, loss, evaluation)

    def train_round(
        self,
        weights: dict[str, dict[str, np.ndarray]],
        instruction: TrainInstruction,
        norm: Normaliser | None,
        groups: StatSlots | None = None,
    ) -> dict[str, np.ndarray]:
        """One round of every model the firm can train: the segments it releases into the sum.

        Without DP: example-weighted changes, their weights, the weighted training loss and the test
        statistics of the received models, in the slots `groups` assigns. Under DP only the changes and public
        weights leave: a record count, a loss or a test statistic would be a release the accountant does not cover.
        """
        privacy = self.spec.privacy
        if not privacy.enabled:
            out: dict[str, np.ndarray] = {}
            for kind, arrays in weights.items():
                if not self.trains(kind):
                    continue  # its segments stay zero: the firm adds nothing to this model
                outcome = self.train(kind, arrays, instruction, norm, groups)  # type: ignore[arg-type]
                out[f"{kind}/update"] = outcome.weighted_delta
                out[f"{kind}/weight"] = np.array([outcome.weight])
                out[f"{kind}/loss"] = np.array([outcome.weight * outcome.loss])
                out[f"{kind}/eval"] = outcome.evaluation
            return out
        if privacy.unit == "firm":
            self.round_clip_norm(instruction)  # refuse a bad clip norm before training
        changes = {
            kind: self._local_change(kind, arrays, instruction, norm)[0]  # type: ignore[arg-type]
            for kind, arrays in weights.items()
            if self.trains(kind)
        }
        if privacy.unit == "record":
            weight = self.public_weight**privacy.weight_power
            return {
                **{f"{kind}/update": weight * change for kind, change in changes.items()},
                **{f"{kind}/weight": np.array([weight]) for kind in changes},
            }
        return self._firm_level_release(weights, changes, instruction)

    def round_clip_norm(self, instruction: TrainInstruction) -> float:
        """The L2 bound of this round's change: the spec's, or under adaptive clipping the coordinator's C_t.

        A clip norm that is not finite and positive (or one sent when the federation file fixes the norm)
        is refused before anything is released: it would void the sensitivity the noise is scaled to.
        """
        privacy = self.spec.privacy
        stage = f"train round {instruction.round}"
        value = instruction.clip_norm
        if not privacy.adaptive_clipping:
            if value is not None:
                raise ProtocolError(
                    f"the instruction sets clip norm {value!r}, but the federation fixes it at {privacy.clip_norm:g} "
                    "(adaptive clipping is off)",
                    firm=self.firm_id,
                    stage=stage,
                )
            return privacy.clip_norm
        if value is None:
            raise ProtocolError(
                "adaptive clipping is on but the instruction carries no clip norm", firm=self.firm_id, stage=stage
            )
        if isinstance(value, bool) or not (math.isfinite(value) and value > 0):
            raise ProtocolError(
                f"the round's clip norm must be a finite positive number, got {value!r}", firm=self.firm_id, stage=stage
            )
        return float(value)

    def _firm_level_release(
        self, weights: dict[str, dict[str, np.ndarray]], changes: dict[str, np.ndarray], instruction: TrainInstruction
    ) -> dict[str, np.ndarray]:
        """DP-FedAvg: the firm's whole round (all models) clipped to one L2 norm; noise shares if distributed.

        Under adaptive clipping the firm also adds its unclipped indicator (1 if its change was within the
        round's clip norm) to the sum: the server releases only the noised count over firms.
        """
        privacy = self.spec.privacy
        clip_norm = self.round_clip_norm(instruction)
        sizes = {kind: flatten(arrays).size for kind, arrays in weights.items()}
        joint = np.concatenate([changes.get(kind, np.zeros(size)) for kind, size in sizes.items()])
        result = clip_l2(joint, clip_norm, firm=self.firm_id)
        clipped = result.vector
        if privacy.mechanism == "distributed":
            if privacy.noise_multiplier is None or privacy.expected_shares is None:
                raise ConfigError(
                    f"firm '{self.firm_id}': distributed DP needs the coordinator's noise multiplier and "
                    "expected shares",
                    field="privacy.noise_multiplier",
                )
            skellam = DistributedSkellam(
                clip_norm=privacy.clip_norm,
                scale=privacy.distributed_scale,
                dim=joint.size,
                noise_multiplier=privacy.noise_multiplier,
                expected_shares=privacy.expected_shares,
            )
            rng = np.random.default_rng()  # fresh OS entropy: noise the coordinator cannot predict
            released = (skellam.quantise(clipped, rng, firm=self.firm_id) + skellam.noise_share(rng)).astype(float)
        else:
            released = clipped
        out: dict[str, np.ndarray] = {}
        offset = 0
        for kind, size in sizes.items():
            out[f"{kind}/update"] = released[offset : offset + size]
            out[f"{kind}/weight"] = np.array([1.0])
            offset += size
        if privacy.adaptive_clipping:
            out[UNCLIPPED_SEGMENT] = np.array([0.0 if result.clipped else 1.0])
        return out

    def evaluate_all(
        self,
        weights: dict[str, dict[str, np.ndarray]],
        norm: Normaliser | None,
        groups: EfficiencyGroups,
        stat_groups: StatSlots | None = None,
    ) -> dict[str, np.ndarray]:
        """Test-split statistics of every model the firm holds data for, and the efficiency sums of
        ordering from the demand model's forecasts (the 'after' of the efficiency comparison)."""
        # The slots are checked first: a firm that refuses its slot releases nothing at all.
        for kind in weights:
            if self.trains(kind):
                self.stat_slot(kind, stat_groups)
        after = self.efficiency(weights["demand"], groups) if "demand" in weights and self.trains("demand") else None
        out = {
            f"{kind}/eval": self.evaluate(kind, arrays, norm, stat_groups)  # type: ignore[arg-type]
            for kind, arrays in weights.items()
            if self.trains(kind)
        }
        if after is not None:
            out[EFFICIENCY_AFTER] = after
        return out

    def _baseline_settings(self, instruction: BaselineInstruction) -> TrainSettings:
        return TrainSettings(
            epochs=instruction.max_epochs,
            batch_size=instruction.batch_size,
            learning_rate=instruction.learning_rate,
            weight_decay=instruction.weight_decay,
            seed=self._seed(instruction.seed),
            optimiser=instruction.optimiser,
            momentum=instruction.momentum,
        )

    def local_demand_model(self, instruction: BaselineInstruction) -> torch.nn.Module:
        """The local-only demand model: this firm's training windows alone, early stopping (deterministic)."""
        if self.demand_split is None:
            raise ProtocolError("asked for a local demand model but the firm holds no demand data", firm=self.firm_id)
        key = instruction.model_dump_json()
        if key in self._local_models:
            return self._local_models[key]
        model = self.fit_local_demand(self.demand_split[0], instruction)
        self._local_models[key] = model
        return model

    def fit_local_demand(self, windows: DemandWindows, instruction: BaselineInstruction) -> torch.nn.Module:
        """The local-only demand recipe on the given windows (all of them for the baseline, a validation
        split's fit windows when the firm chooses what to deploy)."""
        model = build_model("demand", self.spec, seed=self._seed(instruction.seed))
        fit_early_stopping(
            model,
            windows.features,
            windows.targets,
            loss="l1",
            settings=self._baseline_settings(instruction),
            device=self.device,
            patience=instruction.patience,
        )
        return model

    def fit_local_risk(
        self, features: np.ndarray, labels: np.ndarray, instruction: BaselineInstruction, fallback: np.ndarray
    ) -> tuple[torch.nn.Module, Normaliser]:
        """A local-only risk MLP on some of this firm's rows, scaled by their own moments (by `fallback`'s
        where there are no rows): the local-only baseline's recipe, also used to validate it."""
        own = Moments.of(features) if len(features) else Moments.of(fallback)
        norm = Normaliser(own.mean(), own.std())
        model = build_model("risk", self.spec, seed=self._seed(instruction.seed))
        fit_early_stopping(
            model,
            norm.apply(features),
            labels,
            loss="bce",
            settings=self._baseline_settings(instruction),
            device=self.device,
            patience=instruction.patience,
        )
        return model, norm

    def local_risk_model(self, instruction: BaselineInstruction) -> tuple[torch.nn.Module, Normaliser]:
        """The local-only risk model and its scaling: this firm's training rows alone (deterministic, cached)."""
        if self.risk_split is None:
            raise ProtocolError("asked for a local risk model but the firm holds no risk data", firm=self.firm_id)
        key = instruction.model_dump_json()
        if key not in self._local_risk:
            train, test = self.risk_split
            self._local_risk[key] = self.fit_local_risk(train.features, train.labels, instruction, test.features)
        return self._local_risk[key]

    def efficiency_release(
        self, arrays: dict[str, np.ndarray], instruction: BaselineInstruction, groups: EfficiencyGroups
    ) -> dict[str, np.ndarray]:
        """Efficiency sums before (local-only model) and after (the given federated model), clipped
        jointly to the federation's L2 bound: the firm's contribution to a DP release."""
        if not self.trains("demand"):
            return {}
        slot = self.efficiency_slot(groups)
        if slot is None:
            return {}
        before = slot_by_tier(self.efficiency_sums(self.local_demand_model(instruction)), slot)
        federated = build_model("demand", self.spec)
        load_arrays(federated, arrays)
        after = slot_by_tier(self.efficiency_sums(federated), slot)
        clipped = clip_l2(np.concatenate([before, after]), self.spec.inventory.dp_clip_norm, firm=self.firm_id).vector
        return {EFFICIENCY_BEFORE: clipped[: before.size], EFFICIENCY_AFTER: clipped[before.size :]}

    def local_baselines(
        self, instruction: BaselineInstruction, groups: EfficiencyGroups, stat_groups: StatSlots | None = None
    ) -> dict[str, np.ndarray]:
        """Fit local-only models on this firm's data alone; return their (and naive) test statistics and
        the efficiency sums of ordering from the local-only forecasts (the 'before'), in the assigned slots."""
        slot = self.efficiency_slot(groups) if self.trains("demand") else None
        for kind in ("demand", "risk"):
            if self.trains(kind):
                self.stat_slot(kind, stat_groups)  # refuse a too-small slot before fitting anything
        out: dict[str, np.ndarray] = {}
        if self.demand_split is not None:
            test = self.demand_split[1]
            model = self.local_demand_model(instruction)
            local = demand_stats(model, test, self.device).to_vector()
            out["demand/local_only"] = self._slotted("demand", local, stat_groups)
            naive = DemandErrorStats.from_forecasts(test.naive, test.actual)
            out["demand/naive"] = self._slotted("demand", naive.to_vector(), stat_groups)
            if slot is not None and self.trains("demand"):
                out[EFFICIENCY_BEFORE] = slot_by_tier(self.efficiency_sums(model), slot)
        if self.risk_split is not None:
            test = self.risk_split[1]
            model, norm = self.local_risk_model(instruction)
            stats = risk_stats(model, norm.apply(test.features), test.labels, self.device)
            out["risk/local_only"] = self._slotted("risk", stats.to_vector(), stat_groups)
        return out
