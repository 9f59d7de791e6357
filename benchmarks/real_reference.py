"""Reference figures on the real pilots, computed in-process: what simple, well-known models reach on this data.

No DP, no federation, pure numpy: seasonal naive, a ridge regression on lag features per firm and pooled over
firms (demand), and an L2 logistic regression per lender and pooled (risk). They read the pilot folders through
the federation file's column mapping and score exactly the windows and rows the simulation scores: demand
windows of `lags` observed weeks and `horizon` forecast weeks whose targets all lie in the last `test_periods`
weeks; risk rows marked `test` in the `split` column. They are the yardstick for the federation's figures, not
a SiloBridge model.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from silobridge.errors import ConfigError, DataError

SEASON = 52
RIDGE_ALPHA = 1.0
LOGISTIC_L2 = 1.0


@dataclass(frozen=True)
class Series:
    """One firm's weekly series, scaled features come from it."""

    firm: str
    units: np.ndarray  # (T,)
    dates: np.ndarray  # (T,) datetime64[D], consecutive weeks
    covariates: np.ndarray  # (T, k) known-in-advance covariates


@dataclass(frozen=True)
class Windows:
    """Forecast windows of one firm: scaled lag features, targets in units, the series' scale, seasonal naive."""

    features: np.ndarray  # (n, d) with an intercept column first
    targets: np.ndarray  # (n, horizon), units
    scale: float
    naive: np.ndarray  # (n, horizon), units


def _federation(folder: Path) -> dict[str, Any]:
    path = folder / "federation.toml"
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", source=str(path)) from None


def _groups(federation: Mapping[str, Any]) -> dict[str, str]:
    large = float(federation.get("large_size", 5.0))
    return {firm["id"]: "large" if float(firm["size"]) >= large else "small" for firm in federation["firms"]}


def read_demand(folder: Path) -> tuple[dict[str, Any], list[Series]]:
    """Every firm's demand.csv of a pilot, columns taken from the federation file's `[data]` mapping."""
    federation = _federation(folder)
    data = federation.get("data", {})
    date_column, units_column = data.get("date_column", "date"), data.get("units_column", "units")
    covariates = list(data.get("demand_covariates", {}))
    out = []
    for firm in federation["firms"]:
        path = folder / firm["id"] / "demand.csv"
        if not path.is_file():
            raise DataError(firm["id"], f"{path} is missing")
        table = pd.read_csv(path)
        missing = [c for c in (date_column, units_column, *covariates) if c not in table.columns]
        if missing:
            raise DataError(firm["id"], f"{path.name}: columns {missing} are missing")
        table = table.sort_values(date_column, kind="stable")
        dates = pd.to_datetime(table[date_column]).to_numpy(dtype="datetime64[D]")
        if np.any(np.diff(dates).astype(int) != 7):
            raise DataError(firm["id"], f"{path.name}: dates are not consecutive weeks")
        out.append(
            Series(
                firm["id"],
                table[units_column].to_numpy(dtype=float),
                dates,
                table[covariates].to_numpy(dtype=float).reshape(len(table), len(covariates)),
            )
        )
    return federation, out


def windows(series: Series, test_start: np.datetime64, lags: int, horizon: int) -> tuple[Windows, Windows]:
    """Training windows (every target before `test_start`, a full season of history) and test windows (every
    target from `test_start` on), as the simulation cuts them; features: intercept, lags / scale, the seasonal
    lag of each target / scale, the targets' covariates."""
    y = series.units
    is_train = series.dates < test_start
    scale = max(float(y[is_train].mean()), 1.0)
    n = len(y) - lags - horizon + 1
    origin = np.arange(lags - 1, lags - 1 + n)
    target = origin[:, None] + np.arange(1, horizon + 1)[None, :]
    seasonal = target - SEASON
    naive = np.where(seasonal >= 0, y[np.maximum(seasonal, 0)], y[origin][:, None])
    lag_block = np.stack([y[o - lags + 1 : o + 1] for o in origin]) / scale
    covariates = series.covariates[target].reshape(n, -1)
    features = np.column_stack([np.ones(n), lag_block, naive / scale, covariates])
    train = (series.dates[target[:, -1]] < test_start) & (seasonal[:, 0] >= 0)
    test = series.dates[target[:, 0]] >= test_start
    return (
        Windows(features[train], y[target[train]], scale, naive[train]),
        Windows(features[test], y[target[test]], scale, naive[test]),
    )


def ridge_fit(features: np.ndarray, targets: np.ndarray, alpha: float) -> np.ndarray:
    """Multi-output ridge (intercept in column 0, not penalised), solved with lstsq on the normal equations."""
    penalty = alpha * np.eye(features.shape[1])
    penalty[0, 0] = 0.0
    gram = features.T @ features + penalty
    return np.linalg.lstsq(gram, features.T @ targets, rcond=None)[0]


def wape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Sum of absolute errors over the sum of actuals."""
    return float(np.abs(np.asarray(actual) - np.asarray(forecast)).sum() / np.abs(np.asarray(actual)).sum())


def demand_reference(folder: Path, alpha: float = RIDGE_ALPHA) -> dict[str, Any]:
    """{method: {group: wape}, 'per_firm': {firm: {method: wape}}} for seasonal naive, local and pooled ridge."""
    federation, all_series = read_demand(folder)
    training = federation.get("training", {})
    lags, horizon = int(training.get("lags", 8)), int(federation.get("horizon", 4))
    test_periods = int(federation.get("test_periods", 13))
    end = federation["end"]
    test_start = np.datetime64(end - dt.timedelta(weeks=test_periods - 1), "D")
    cut = {s.firm: windows(s, test_start, lags, horizon) for s in all_series}
    pooled = ridge_fit(
        np.vstack([train.features for train, _ in cut.values()]),
        np.vstack([train.targets / train.scale for train, _ in cut.values()]),
        alpha,
    )
    forecasts: dict[str, dict[str, np.ndarray]] = {}
    for firm, (train, test) in cut.items():
        local = ridge_fit(train.features, train.targets / train.scale, alpha)
        forecasts[firm] = {
            "seasonal_naive": test.naive,
            "local_ridge": test.features @ local * test.scale,
            "pooled_ridge": test.features @ pooled * test.scale,
        }
    groups = _groups(federation)
    methods = ("seasonal_naive", "local_ridge", "pooled_ridge")
    out: dict[str, Any] = {"per_firm": {}, "parameters": {"lags": lags, "horizon": horizon, "alpha": alpha}}
    for method in methods:
        out[method] = {}
        for group in ("all", "small", "large"):
            firms = [f for f in cut if group == "all" or groups[f] == group]
            if firms:
                actual = np.concatenate([cut[f][1].targets.ravel() for f in firms])
                forecast = np.concatenate([forecasts[f][method].ravel() for f in firms])
                out[method][group] = wape(actual, forecast)
    for firm, (_, test) in cut.items():
        out["per_firm"][firm] = {m: wape(test.targets, forecasts[firm][m]) for m in methods}
    return out


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney ROC-AUC (ties count half); NaN when a class is absent."""
    labels = np.asarray(labels).astype(bool)
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def logistic_fit(features: np.ndarray, labels: np.ndarray, l2: float, steps: int = 50) -> np.ndarray:
    """L2-penalised logistic regression by Newton steps (intercept in column 0, not penalised)."""
    weights = np.zeros(features.shape[1])
    penalty = l2 * np.eye(features.shape[1])
    penalty[0, 0] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-(features @ weights)))
        gradient = features.T @ (p - labels) + penalty @ weights
        hessian = (features * (p * (1 - p))[:, None]).T @ features + penalty + 1e-9 * np.eye(features.shape[1])
        step = np.linalg.solve(hessian, gradient)
        weights -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return weights


def read_risk(folder: Path) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """Every firm's risk.csv of a pilot (must carry a `split` column)."""
    federation = _federation(folder)
    out = {}
    for firm in federation["firms"]:
        path = folder / firm["id"] / "risk.csv"
        if not path.is_file():
            raise DataError(firm["id"], f"{path} is missing")
        table = pd.read_csv(path)
        if "split" not in table.columns:
            raise DataError(firm["id"], f"{path.name}: the reference needs a 'split' column (train/test)")
        out[firm["id"]] = table
    return federation, out


def scaled_features(table: pd.DataFrame, ranges: Mapping[str, tuple[float, float]]) -> np.ndarray:
    """Intercept, then each feature clipped to its public range and mapped to [0, 1]."""
    columns = [
        (np.clip(table[name].to_numpy(dtype=float), low, high) - low) / (high - low)
        for name, (low, high) in ranges.items()
    ]
    return np.column_stack([np.ones(len(table)), *columns])


def risk_reference(folder: Path, l2: float = LOGISTIC_L2) -> dict[str, Any]:
    """{method: {group: roc_auc}, 'per_firm': {firm: {method: roc_auc}}} for local and pooled logistic regression."""
    federation, tables = read_risk(folder)
    data = federation.get("data", {})
    label = data.get("label_column", "disrupted")
    ranges = {name: tuple(data["risk_feature_ranges"][name]) for name in data["risk_features"]}
    parts = {}
    for firm, table in tables.items():
        x, y, is_test = scaled_features(table, ranges), table[label].to_numpy(dtype=float), table["split"] == "test"
        parts[firm] = (x[~is_test.to_numpy()], y[~is_test.to_numpy()], x[is_test.to_numpy()], y[is_test.to_numpy()])
    pooled = logistic_fit(np.vstack([p[0] for p in parts.values()]), np.concatenate([p[1] for p in parts.values()]), l2)
    scores = {
        firm: {"local_logistic": x_test @ logistic_fit(x, y, l2), "pooled_logistic": x_test @ pooled}
        for firm, (x, y, x_test, _) in parts.items()
    }
    groups = _groups(federation)
    out: dict[str, Any] = {"per_firm": {}, "parameters": {"l2": l2, "features": len(ranges)}}
    for method in ("local_logistic", "pooled_logistic"):
        out[method] = {}
        for group in ("all", "small", "large"):
            firms = [f for f in parts if group == "all" or groups[f] == group]
            out[method][group] = roc_auc(
                np.concatenate([parts[f][3] for f in firms]), np.concatenate([scores[f][method] for f in firms])
            )
    for firm, (_, _, _, y_test) in parts.items():
        out["per_firm"][firm] = {m: roc_auc(y_test, s) for m, s in scores[firm].items()}
    return out
