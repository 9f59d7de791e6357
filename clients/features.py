"""Turn a firm's validated tables into model inputs, split at the federation's test date.

Demand: one example per (series, forecast origin) with the last `lags` values scaled by the series'
training mean, and for each forecast period its calendar position and known covariates; the model
forecasts `horizon` periods at once. Risk: the feature columns as they are, standardised later with
federation-wide moments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from silobridge.contract.config import RISK_SPLIT, TIERS, FederationSpec

FOURIER_HARMONICS = 2
SEASON_DAYS = 365.25


def demand_input_dim(spec: FederationSpec) -> int:
    per_period = 2 * FOURIER_HARMONICS + len(spec.data.demand_covariates)
    return spec.lags + spec.horizon * per_period + len(TIERS)


def risk_input_dim(spec: FederationSpec) -> int:
    return len(spec.data.risk_features)


WINDOW_FIELDS = ("features", "targets", "scale", "naive", "origin", "seasonal_known")


@dataclass(frozen=True)
class DemandWindows:
    """Examples of one split: inputs, scaled targets, per-example scale and seasonal-naive forecasts."""

    features: np.ndarray  # (n, input_dim) float32
    targets: np.ndarray  # (n, horizon) float32, divided by `scale`
    scale: np.ndarray  # (n,) float32: training mean of the example's series
    naive: np.ndarray  # (n, horizon) float32, in units
    origin: np.ndarray  # (n,) datetime64[D]: last observed period
    seasonal_known: np.ndarray  # (n, horizon) bool: `naive` is the value a year (52 periods) earlier

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @property
    def actual(self) -> np.ndarray:
        """Targets in units."""
        return self.targets * self.scale[:, None]

    @classmethod
    def concat(cls, parts: list[DemandWindows]) -> DemandWindows:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in WINDOW_FIELDS))


def calendar_features(dates: pd.Series | pd.DatetimeIndex) -> np.ndarray:
    """Yearly Fourier terms of each date: public knowledge, the same for every firm."""
    day = pd.DatetimeIndex(dates).day_of_year.to_numpy(dtype=float)
    angle = 2 * np.pi * day / SEASON_DAYS
    return np.column_stack([f(k * angle) for k in range(1, FOURIER_HARMONICS + 1) for f in (np.sin, np.cos)])


def tier_features(tier: str) -> np.ndarray:
    """One-hot tier: retail sales and upstream orders behave differently (bullwhip), and a firm knows its tier."""
    out = np.zeros(len(TIERS))
    if tier in TIERS:
        out[TIERS.index(tier)] = 1.0
    return out


def _series_windows(
    rows: pd.DataFrame, spec: FederationSpec, test_start: np.datetime64, static: np.ndarray
) -> tuple[DemandWindows, DemandWindows]:
    y = rows["units"].to_numpy(dtype=float)
    dates = rows["date"].to_numpy(dtype="datetime64[D]")
    is_train_period = dates < test_start
    scale = max(float(y[is_train_period].mean()) if is_train_period.any() else float(y.mean()), 1.0)

    per_period = [calendar_features(rows["date"])]
    for column, transform in spec.data.demand_covariates.items():
        values = rows[column].to_numpy(dtype=float)
        if transform == "log_ratio":
            reference = values[is_train_period].mean() if is_train_period.any() else values.mean()
            values = np.log(values / reference)
        per_period.append(values[:, None])
    period_features = np.concatenate(per_period, axis=1)  # (T, per_period)

    lags, horizon = spec.lags, spec.horizon
    n_windows = len(y) - lags - horizon + 1
    if n_windows <= 0:
        empty = _empty_windows(spec)
        return empty, empty
    origin_index = np.arange(lags - 1, lags - 1 + n_windows)
    lag_block = sliding_window_view(y, lags)[:n_windows] / scale
    target_index = origin_index[:, None] + np.arange(1, horizon + 1)[None, :]
    targets = y[target_index] / scale
    future = period_features[target_index].reshape(n_windows, -1)
    features = np.concatenate([lag_block, future, np.broadcast_to(static, (n_windows, static.size))], axis=1)

    seasonal_index = target_index - 52
    known = seasonal_index >= 0
    naive = np.where(known, y[np.maximum(seasonal_index, 0)], y[origin_index][:, None])

    first_target = dates[target_index[:, 0]]
    last_target = dates[target_index[:, -1]]
    windows = DemandWindows(
        features.astype(np.float32),
        targets.astype(np.float32),
        np.full(n_windows, scale, dtype=np.float32),
        naive.astype(np.float32),
        dates[origin_index],
        known,
    )
    return _take(windows, last_target < test_start), _take(windows, first_target >= test_start)


def _take(windows: DemandWindows, mask: np.ndarray) -> DemandWindows:
    return DemandWindows(*(getattr(windows, f)[mask] for f in WINDOW_FIELDS))


def _empty_windows(spec: FederationSpec) -> DemandWindows:
    d, h = demand_input_dim(spec), spec.horizon
    return DemandWindows(
        np.zeros((0, d), np.float32),
        np.zeros((0, h), np.float32),
        np.zeros(0, np.float32),
        np.zeros((0, h), np.float32),
        np.zeros(0, "datetime64[D]"),
        np.zeros((0, h), bool),
    )


def demand_windows(demand: pd.DataFrame, spec: FederationSpec, tier: str) -> tuple[DemandWindows, DemandWindows]:
    """Training windows (all targets before the test date) and test windows (all targets after)."""
    test_start = np.datetime64(spec.test_start, "D")
    static = tier_features(tier)
    train_parts, test_parts = [], []
    for _, rows in demand.groupby("series", sort=True):
        train, test = _series_windows(rows, spec, test_start, static)
        train_parts.append(train)
        test_parts.append(test)
    if not train_parts:
        return _empty_windows(spec), _empty_windows(spec)
    return DemandWindows.concat(train_parts), DemandWindows.concat(test_parts)


@dataclass(frozen=True)
class RiskExamples:
    """Raw risk features and binary labels of one split."""

    features: np.ndarray  # (n, d) float64, unstandardised
    labels: np.ndarray  # (n,) float32

    def __len__(self) -> int:
        return int(self.features.shape[0])

    @classmethod
    def concat(cls, parts: list[RiskExamples]) -> RiskExamples:
        return cls(np.concatenate([p.features for p in parts]), np.concatenate([p.labels for p in parts]))


def risk_examples(risk: pd.DataFrame, spec: FederationSpec) -> tuple[RiskExamples, RiskExamples]:
    """Rows dated before the test date train, the rest test; a `split` column (given or a holdout) decides instead."""
    if RISK_SPLIT in risk.columns:
        is_test = (risk[RISK_SPLIT] == "test").to_numpy()
    else:
        is_test = risk["date"].to_numpy(dtype="datetime64[D]") >= np.datetime64(spec.test_start, "D")
    features = risk[list(spec.data.risk_features)].to_numpy(dtype=float)
    labels = risk["disrupted"].to_numpy(dtype=np.float32)
    return RiskExamples(features[~is_test], labels[~is_test]), RiskExamples(features[is_test], labels[is_test])


def standardise(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return ((features - mean) / std).astype(np.float32)
