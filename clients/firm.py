"""A firm's half of every exchange, as a plain object with no Flower in it.

It holds the firm's validated data and answers the server's requests: describe itself, release
feature moments, train a model from the global weights, evaluate a model, fit its local-only
baselines. Everything it returns is either a weighted update or a sufficient-statistics vector
placed in the firm's group slot, so the server only ever needs sums.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from clients.data import FirmData
from clients.features import DemandWindows, RiskExamples, demand_windows, risk_examples, standardise
from clients.models import ModelKind, build_model, load_arrays, state_to_arrays
from clients.training import TrainSettings, fit, fit_early_stopping, predict
from silobridge.arrays import flatten
from silobridge.config import FederationSpec
from silobridge.messages import BaselineInstruction, FirmManifest, TrainInstruction
from silobridge.stats import DemandErrorStats, Moments, RiskStats, slot_by_group


@dataclass(frozen=True)
class Normaliser:
    """Federation-wide mean and std of the risk features."""

    mean: np.ndarray
    std: np.ndarray


@dataclass(frozen=True)
class TrainOutcome:
    """A firm's answer to one training round of one model."""

    weighted_delta: np.ndarray  # weight * (local weights - global weights), flat float64
    weight: float  # training examples
    loss: float  # mean training loss of the last local epoch
    evaluation: np.ndarray  # group-slotted statistics of the *received* global model on the test split


def demand_stats(model: torch.nn.Module, windows: DemandWindows, device: torch.device) -> DemandErrorStats:
    scaled = predict(model, windows.features, device=device).reshape(len(windows), -1)
    forecast = np.maximum(scaled * windows.scale[:, None], 0.0)
    return DemandErrorStats.from_forecasts(forecast, windows.actual)


def risk_stats(model: torch.nn.Module, features: np.ndarray, labels: np.ndarray, device: torch.device) -> RiskStats:
    logits = predict(model, features, device=device)
    return RiskStats.from_predictions(1 / (1 + np.exp(-logits)), labels)


class FirmClient:
    """One firm: its data, its group, the federation's spec."""

    def __init__(self, data: FirmData, *, group: str, spec: FederationSpec, tier: str = "unknown", device: str = "cpu"):
        self.data = data
        self.group = group
        self.spec = spec
        self.tier = tier
        self.device = torch.device(device)

    @property
    def firm_id(self) -> str:
        return self.data.firm_id

    @cached_property
    def demand_split(self) -> tuple[DemandWindows, DemandWindows] | None:
        """(train, test) demand windows, or None if the firm holds no demand data."""
        return None if self.data.demand is None else demand_windows(self.data.demand, self.spec, self.tier)

    @cached_property
    def risk_split(self) -> tuple[RiskExamples, RiskExamples] | None:
        """(train, test) risk examples, unstandardised, or None if the firm holds no risk data."""
        return None if self.data.risk is None else risk_examples(self.data.risk, self.spec)

    def _seed(self, seed: int) -> int:
        return (seed * 1_000_003 + zlib.crc32(self.firm_id.encode())) % 2**31

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
        )

    def risk_moments(self) -> dict[str, np.ndarray]:
        """Moments of the risk features over the training rows (none if the firm holds no risk data)."""
        if not self.trains("risk"):
            return {}
        return {"risk_moments": Moments.of(self.risk_split[0].features).to_vector()}  # type: ignore[index]

    def _xy(self, kind: ModelKind, split: int, norm: Normaliser | None) -> tuple[np.ndarray, np.ndarray]:
        if kind == "demand":
            if self.demand_split is None:
                raise ValueError(f"firm '{self.firm_id}' holds no demand data")
            windows = self.demand_split[split]
            return windows.features, windows.targets
        if self.risk_split is None:
            raise ValueError(f"firm '{self.firm_id}' holds no risk data")
        if norm is None:
            raise ValueError("risk features need the federation's normaliser")
        examples = self.risk_split[split]
        return standardise(examples.features, norm.mean, norm.std), examples.labels

    def _stats(self, kind: ModelKind, model: torch.nn.Module, norm: Normaliser | None) -> np.ndarray:
        if kind == "demand":
            if self.demand_split is None:
                raise ValueError(f"firm '{self.firm_id}' holds no demand data")
            return demand_stats(model, self.demand_split[1], self.device).to_vector()
        x, y = self._xy("risk", 1, norm)
        return risk_stats(model, x, y, self.device).to_vector()

    def evaluate(self, kind: ModelKind, arrays: dict[str, np.ndarray], norm: Normaliser | None = None) -> np.ndarray:
        """Test-split statistics of the given weights, in this firm's group slot."""
        model = build_model(kind, self.spec)
        load_arrays(model, arrays)
        return slot_by_group(self._stats(kind, model, norm), self.group)

    def train(
        self,
        kind: ModelKind,
        arrays: dict[str, np.ndarray],
        instruction: TrainInstruction,
        norm: Normaliser | None = None,
    ) -> TrainOutcome:
        """Evaluate the received global model, then train it locally and return the weighted change."""
        model = build_model(kind, self.spec)
        load_arrays(model, arrays)
        evaluation = slot_by_group(self._stats(kind, model, norm), self.group)
        x, y = self._xy(kind, 0, norm)
        anchor = [p.detach().clone() for p in model.parameters()]
        settings = TrainSettings(
            epochs=instruction.epochs,
            batch_size=instruction.batch_size,
            learning_rate=instruction.learning_rate,
            weight_decay=instruction.weight_decay,
            proximal_mu=instruction.proximal_mu,
            seed=self._seed(instruction.seed + instruction.round),
            optimiser=instruction.optimiser,
            momentum=instruction.momentum,
        )
        report = fit(
            model, x, y, loss="l1" if kind == "demand" else "bce", settings=settings, device=self.device, anchor=anchor
        )
        weight = float(len(x))
        delta = flatten(state_to_arrays(model)) - flatten(arrays)
        return TrainOutcome(
            weight * delta, weight, report.epoch_losses[-1] if report.epoch_losses else float("nan"), evaluation
        )

    def train_round(
        self, weights: dict[str, dict[str, np.ndarray]], instruction: TrainInstruction, norm: Normaliser | None
    ) -> dict[str, np.ndarray]:
        """One round of every model the firm can train: the segments it releases into the sum."""
        out: dict[str, np.ndarray] = {}
        for kind, arrays in weights.items():
            if not self.trains(kind):
                continue  # its segments stay zero: the firm adds nothing to this model
            outcome = self.train(kind, arrays, instruction, norm)  # type: ignore[arg-type]
            out[f"{kind}/update"] = outcome.weighted_delta
            out[f"{kind}/weight"] = np.array([outcome.weight])
            out[f"{kind}/loss"] = np.array([outcome.weight * outcome.loss])
            out[f"{kind}/eval"] = outcome.evaluation
        return out

    def evaluate_all(self, weights: dict[str, dict[str, np.ndarray]], norm: Normaliser | None) -> dict[str, np.ndarray]:
        """Test-split statistics of every model the firm holds data for."""
        return {
            f"{kind}/eval": self.evaluate(kind, arrays, norm)  # type: ignore[arg-type]
            for kind, arrays in weights.items()
            if self.trains(kind)
        }

    def local_baselines(self, instruction: BaselineInstruction) -> dict[str, np.ndarray]:
        """Fit local-only models on this firm's data alone; return their (and naive) test statistics."""
        settings = TrainSettings(
            epochs=instruction.max_epochs,
            batch_size=instruction.batch_size,
            learning_rate=instruction.learning_rate,
            weight_decay=instruction.weight_decay,
            seed=self._seed(instruction.seed),
            optimiser=instruction.optimiser,
            momentum=instruction.momentum,
        )
        out: dict[str, np.ndarray] = {}
        if self.demand_split is not None:
            train, test = self.demand_split
            model = build_model("demand", self.spec, seed=self._seed(instruction.seed))
            fit_early_stopping(
                model,
                train.features,
                train.targets,
                loss="l1",
                settings=settings,
                device=self.device,
                patience=instruction.patience,
            )
            out["demand/local_only"] = slot_by_group(demand_stats(model, test, self.device).to_vector(), self.group)
            naive = DemandErrorStats.from_forecasts(test.naive, test.actual)
            out["demand/naive"] = slot_by_group(naive.to_vector(), self.group)
        if self.risk_split is not None:
            train, test = self.risk_split
            own = Moments.of(train.features) if len(train) else Moments.of(test.features)
            norm = Normaliser(own.mean(), own.std())
            model = build_model("risk", self.spec, seed=self._seed(instruction.seed))
            fit_early_stopping(
                model,
                standardise(train.features, norm.mean, norm.std),
                train.labels,
                loss="bce",
                settings=settings,
                device=self.device,
                patience=instruction.patience,
            )
            stats = risk_stats(model, standardise(test.features, norm.mean, norm.std), test.labels, self.device)
            out["risk/local_only"] = slot_by_group(stats.to_vector(), self.group)
        return out
