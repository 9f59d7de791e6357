"""Sufficient statistics that firms release and the server only ever sums.

Every evaluation metric and feature normalisation in SiloBridge is computed from sums over firms:
error totals for forecasts, score histograms for classifiers, moments for features. A firm turns
its local figures into a vector; vectors add; the metric comes from the sum. That is what lets a
secure sum stand in for plain aggregation without changing any metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from silobridge.contract.slots import SlotAssignment

GROUPS: tuple[str, ...] = ("small", "large")
"""Firm groups reported separately (when each is large enough, see `StatGroups`); 'all' is their sum."""
POOLED = "pooled"
"""The slot every firm uses when small and large are not released separately: only 'all' is."""
STAT_SLOTS: tuple[str, ...] = (*GROUPS, POOLED)
"""The slots of a statistics vector; 'all' is their sum."""

RISK_BINS = 1024
LOGIT_RANGE = 12.0
"""Scores are binned on the logit scale over [-12, 12]: fine where rare-event probabilities live."""


@dataclass(frozen=True)
class DemandErrorStats:
    """Absolute-error and demand totals of a set of forecasts, in units."""

    abs_error: float = 0.0
    actual: float = 0.0
    count: float = 0.0

    SIZE = 3

    @classmethod
    def from_forecasts(cls, forecast: np.ndarray, actual: np.ndarray) -> DemandErrorStats:
        forecast = np.asarray(forecast, dtype=float)
        actual = np.asarray(actual, dtype=float)
        return cls(float(np.abs(forecast - actual).sum()), float(actual.sum()), float(actual.size))

    def to_vector(self) -> np.ndarray:
        return np.array([self.abs_error, self.actual, self.count], dtype=float)

    @classmethod
    def from_vector(cls, vector: np.ndarray) -> DemandErrorStats:
        return cls(*map(float, np.asarray(vector, dtype=float)[: cls.SIZE]))

    def __add__(self, other: DemandErrorStats) -> DemandErrorStats:
        return DemandErrorStats(self.abs_error + other.abs_error, self.actual + other.actual, self.count + other.count)

    def metrics(self) -> dict[str, float]:
        """WAPE (sum |error| / sum demand) and MAE (mean |error| per forecast, units)."""
        return {
            "wape": self.abs_error / self.actual if self.actual > 0 else math.nan,
            "mae": self.abs_error / self.count if self.count > 0 else math.nan,
        }


def score_bins(probabilities: np.ndarray) -> np.ndarray:
    """Bin index of each probability, on the logit scale."""
    p = np.clip(np.asarray(probabilities, dtype=float), 1e-12, 1 - 1e-12)
    logit = np.log(p) - np.log1p(-p)
    position = (np.clip(logit, -LOGIT_RANGE, LOGIT_RANGE) + LOGIT_RANGE) / (2 * LOGIT_RANGE)
    bins: np.ndarray = np.minimum((position * RISK_BINS).astype(int), RISK_BINS - 1)
    return bins


@dataclass(frozen=True)
class RiskStats:
    """Score histograms of positives and negatives plus the Brier total of a classifier's predictions.

    ROC-AUC and PR-AUC from histograms are exact up to ties inside one bin (counted as half).
    """

    positives: np.ndarray
    negatives: np.ndarray
    brier: float
    count: float

    SIZE = 2 * RISK_BINS + 2

    @classmethod
    def empty(cls) -> RiskStats:
        return cls(np.zeros(RISK_BINS), np.zeros(RISK_BINS), 0.0, 0.0)

    @classmethod
    def from_predictions(cls, probabilities: np.ndarray, labels: np.ndarray) -> RiskStats:
        p = np.asarray(probabilities, dtype=float)
        y = np.asarray(labels, dtype=float)
        bins = score_bins(p)
        positives = np.bincount(bins[y == 1], minlength=RISK_BINS).astype(float)
        negatives = np.bincount(bins[y == 0], minlength=RISK_BINS).astype(float)
        return cls(positives, negatives, float(np.sum((p - y) ** 2)), float(y.size))

    def to_vector(self) -> np.ndarray:
        return np.concatenate([self.positives, self.negatives, [self.brier, self.count]])

    @classmethod
    def from_vector(cls, vector: np.ndarray) -> RiskStats:
        v = np.asarray(vector, dtype=float)
        return cls(v[:RISK_BINS].copy(), v[RISK_BINS : 2 * RISK_BINS].copy(), float(v[-2]), float(v[-1]))

    def __add__(self, other: RiskStats) -> RiskStats:
        return RiskStats(
            self.positives + other.positives,
            self.negatives + other.negatives,
            self.brier + other.brier,
            self.count + other.count,
        )

    def metrics(self) -> dict[str, float]:
        """ROC-AUC, PR-AUC (average precision) and Brier score."""
        n_pos, n_neg = self.positives.sum(), self.negatives.sum()
        brier = self.brier / self.count if self.count > 0 else math.nan
        if n_pos == 0 or n_neg == 0:
            return {"roc_auc": math.nan, "pr_auc": math.nan, "brier": brier}
        negatives_below = np.cumsum(self.negatives) - self.negatives
        roc_auc = float(np.sum(self.positives * (negatives_below + 0.5 * self.negatives)) / (n_pos * n_neg))
        # Average precision, thresholds from the highest score bin down.
        tp = np.cumsum(self.positives[::-1])
        fp = np.cumsum(self.negatives[::-1])
        has_pos = self.positives[::-1] > 0
        precision = tp[has_pos] / (tp[has_pos] + fp[has_pos])
        recall_step = self.positives[::-1][has_pos] / n_pos
        pr_auc = float(np.sum(precision * recall_step))
        return {"roc_auc": roc_auc, "pr_auc": pr_auc, "brier": brier}


@dataclass(frozen=True)
class Moments:
    """Count, sum and sum of squares per feature: enough for a federation-wide mean and std."""

    count: float
    total: np.ndarray
    total_sq: np.ndarray

    @classmethod
    def of(cls, features: np.ndarray) -> Moments:
        x = np.asarray(features, dtype=float)
        return cls(float(x.shape[0]), x.sum(axis=0), (x**2).sum(axis=0))

    def to_vector(self) -> np.ndarray:
        return np.concatenate([[self.count], self.total, self.total_sq])

    @classmethod
    def from_vector(cls, vector: np.ndarray) -> Moments:
        v = np.asarray(vector, dtype=float)
        d = (len(v) - 1) // 2
        return cls(float(v[0]), v[1 : 1 + d].copy(), v[1 + d :].copy())

    def __add__(self, other: Moments) -> Moments:
        return Moments(self.count + other.count, self.total + other.total, self.total_sq + other.total_sq)

    def mean(self) -> np.ndarray:
        return self.total / max(self.count, 1.0)

    def std(self) -> np.ndarray:
        """Population std, floored so a constant feature does not divide by zero."""
        variance = self.total_sq / max(self.count, 1.0) - self.mean() ** 2
        std: np.ndarray = np.sqrt(np.maximum(variance, 1e-12)).clip(min=1e-6)
        return std


def slot_by_group(vector: np.ndarray, group: str) -> np.ndarray:
    """Place a firm's vector in its slot (a group, or POOLED), zeros elsewhere, so one sum yields every slot."""
    if group not in STAT_SLOTS:
        raise ValueError(f"unknown firm group '{group}' (expected one of {', '.join(STAT_SLOTS)})")
    v = np.asarray(vector, dtype=float)
    out = np.zeros(len(STAT_SLOTS) * v.size)
    index = STAT_SLOTS.index(group)
    out[index * v.size : (index + 1) * v.size] = v
    return out


def split_slots(vector: np.ndarray) -> dict[str, np.ndarray]:
    """Inverse of `slot_by_group` on a sum: one vector per slot (small, large, pooled)."""
    v = np.asarray(vector, dtype=float)
    size = v.size // len(STAT_SLOTS)
    return {g: v[i * size : (i + 1) * size] for i, g in enumerate(STAT_SLOTS)}


def split_groups(vector: np.ndarray, groups: Sequence[str] = GROUPS) -> dict[str, np.ndarray]:
    """The released parts of a slotted sum: 'all' (every slot) plus the named groups (those released)."""
    slots = split_slots(vector)
    return {**{g: slots[g] for g in groups}, "all": np.sum(list(slots.values()), axis=0)}


@dataclass(frozen=True)
class StatGroups(SlotAssignment):
    """The server's statistics slots for one model, sent with every request that releases test statistics.

    Small and large get slots of their own only when both hold at least the minimum number of firms;
    else every holder uses POOLED and only 'all' is released. With fewer holders than the minimum in
    all, `slots` is empty and the firms release no statistics of the model.
    """

    @property
    def released(self) -> tuple[str, ...]:
        """The groups whose metrics are published besides 'all'."""
        return tuple(g for g in GROUPS if self.slots.get(g) == g)

    def to_config(self, kind: str) -> dict[str, int | str]:  # type: ignore[override]
        """Flat values for a ConfigRecord, prefixed by the model kind."""
        return super().to_config(f"{kind}.")

    @classmethod
    def from_config(cls, values: dict[str, object], kind: str, *, firm: str | None = None) -> StatGroups:
        slots, counts = cls.parse(
            values, groups=GROUPS, slot_names=STAT_SLOTS, what="statistics", prefix=f"{kind}.", firm=firm
        )
        return cls(slots=slots, counts=counts)

    def slot_for(self, group: str, minimum: int, *, firm: str) -> str | None:
        """The slot this firm's group may use, None if it must release nothing (see `checked_slot`)."""
        return self.checked_slot(group, minimum, firm=firm, what="test statistics")


def demand_metrics_by_group(vector: np.ndarray, groups: Sequence[str] = GROUPS) -> dict[str, dict[str, float]]:
    return {g: DemandErrorStats.from_vector(v).metrics() for g, v in split_groups(vector, groups).items()}


def risk_metrics_by_group(vector: np.ndarray, groups: Sequence[str] = GROUPS) -> dict[str, dict[str, float]]:
    return {g: RiskStats.from_vector(v).metrics() for g, v in split_groups(vector, groups).items()}


def sum_vectors(vectors: Sequence[np.ndarray] | Mapping[object, np.ndarray]) -> np.ndarray:
    """Plain elementwise sum; the seam a secure sum replaces."""
    items = list(vectors.values()) if isinstance(vectors, Mapping) else list(vectors)
    if not items:
        raise ValueError("nothing to sum")
    first = np.asarray(items[0], dtype=float)
    total = np.zeros_like(first)
    for item in items:
        arr = np.asarray(item, dtype=float)
        if arr.shape != first.shape:
            raise ValueError(f"vectors differ in shape: {arr.shape} and {first.shape}")
        total += arr
    return total
