"""The linear model family on a firm's side: clipped designs, sufficient statistics and forecasts.

Demand: a direct multi-horizon ridge forecaster. One window's features are its last `lags` values
scaled by the series' training mean and then by the window's own level (`window_level`: the mean of
those lags), their mean, the seasonal values (52 periods before each forecast period, zero with an
indicator where the history lacks them) on the same scale, the federation's per-period calendar
terms and covariates, the firm's tier and an intercept; targets are on the window's level too, so
the model forecasts relative to where the series stands now. Values are clipped to the public bounds of
`FederationSpec.linear` and each row to a public L2 norm, so one window moves the firm's X^T X and
X^T Y by a known amount (`demand_sensitivity`). Risk: logistic regression on features scaled by the
federation's normaliser, rows clipped to a public norm, with per-record gradient and Hessian sums for
Newton steps. Pure numpy/scipy, no torch.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.linalg import solve
from scipy.special import expit

from silobridge.clients.features import DemandWindows, demand_input_dim
from silobridge.contract.config import TIERS, FederationSpec
from silobridge.contract.sufficient import split_newton, triu_vector
from silobridge.errors import ConfigError


def clip_rows(matrix: np.ndarray, bound: float) -> np.ndarray:
    """Each row scaled down to L2 norm at most `bound` (rows inside the ball are left as they are)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix * np.minimum(1.0, bound / np.maximum(norms, 1e-300))


# -- demand ------------------------------------------------------------------------------------------


def demand_dim(spec: FederationSpec) -> int:
    """Features of one window: lags, their mean, seasonal values and indicators, per-period terms, tier, 1."""
    per_period = (demand_input_dim(spec) - spec.lags - len(TIERS)) // spec.horizon
    return spec.lags + 1 + 2 * spec.horizon + spec.horizon * per_period + len(TIERS) + 1


DESIGN = "window-level/1"
"""The linear family's design, recorded in a run's checkpoints: a release replayed on resume must come from the
design that continues the run (the windows' level scaling changed what the released statistics mean)."""

LEVEL_FLOOR = 0.1
"""The smallest window level (`window_level`), as a share of the series' training mean: a window whose
recent values are (almost) all zero is scaled by this instead of dividing by zero."""


def window_level(lags: np.ndarray, floor: float = LEVEL_FLOOR) -> np.ndarray:
    """Each window's level: the mean of its lags (scaled by the series' training mean), at least `floor`.

    A short history's training mean is a poor scale for the next season: the default scenario's small
    firms started recording in spring, so their winter weeks run at 2.5-3.3x that mean, past the design's
    value bound (the lags were clipped, the model saw a capped level). Relative to the window's own
    recent level the values stay near 1 in every season, for long and short histories alike. The level
    is a function of the window alone, so one window still moves the statistics by the same bound."""
    return np.maximum(np.asarray(lags, dtype=float).mean(axis=1), floor)


def demand_design(windows: DemandWindows, spec: FederationSpec) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y) of the windows, relative to each window's level and clipped to the federation's public bounds:
    X (n, d), Y (n, horizon) scaled (units: Y x `demand_units_scale`)."""
    bounds = spec.linear
    lags, horizon = spec.lags, spec.horizon
    raw = windows.features.astype(float)
    level = window_level(raw[:, :lags])[:, None]
    lag = np.clip(raw[:, :lags] / level, 0.0, bounds.value_bound)
    period = np.clip(raw[:, lags : raw.shape[1] - len(TIERS)], -bounds.feature_bound, bounds.feature_bound)
    tier = raw[:, raw.shape[1] - len(TIERS) :]
    known = windows.seasonal_known.astype(bool)
    scale = np.maximum(windows.scale.astype(float), 1e-12)[:, None]
    seasonal = np.where(known, np.clip(windows.naive / scale / level, 0.0, bounds.value_bound), 0.0)
    ones = np.ones((len(windows), 1))
    x = np.concatenate([lag, lag.mean(axis=1, keepdims=True), seasonal, known, period, tier, ones], axis=1)
    if x.shape[1] != demand_dim(spec):
        raise ConfigError(f"demand windows have {raw.shape[1]} features; the federation's layout expects another count")
    targets = windows.targets.astype(float) / level
    y = clip_rows(np.clip(targets, 0.0, bounds.value_bound), bounds.target_norm)
    if horizon != y.shape[1]:
        raise ConfigError(f"demand targets cover {y.shape[1]} periods, the federation forecasts {horizon}")
    return clip_rows(x, bounds.row_norm), y


def demand_sensitivity(row_norm: float, target_norm: float) -> float:
    """L2 sensitivity of [triu(X^T X), X^T Y] to adding or removing one window.

    One window adds triu(x x^T) (norm at most ||x||^2) and x y^T (norm ||x|| ||y||): at most
    R_x sqrt(R_x^2 + R_y^2).
    """
    return row_norm * math.sqrt(row_norm**2 + target_norm**2)


def sufficient_statistics(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """[triu(X^T X), X^T Y flattened row-major]: what a firm adds to the federation's sum."""
    return np.concatenate([triu_vector(x.T @ x), (x.T @ y).ravel()])


def ridge(xtx: np.ndarray, xty: np.ndarray, penalty: float, prior: np.ndarray | None = None) -> np.ndarray:
    """argmin ||Y - X B||^2 + penalty ||B - prior||^2 from exact (positive semi-definite) statistics."""
    if penalty <= 0:
        raise ConfigError(f"a ridge penalty must be positive, got {penalty}", field="linear.ridge")
    dim = xtx.shape[0]
    rhs = xty if prior is None else xty + penalty * prior
    return solve(xtx + penalty * np.eye(dim), rhs, assume_a="pos")


def forecast_units(x: np.ndarray, coef: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Forecasts in units (never negative) of design rows `x` whose units are `scale` per row."""
    return np.maximum(x @ coef, 0.0) * scale.astype(float)[:, None]


def demand_units_scale(windows: DemandWindows, spec: FederationSpec) -> np.ndarray:
    """Units of one design target per window: the series' training mean times the window's level."""
    return windows.scale.astype(float) * window_level(windows.features[:, : spec.lags].astype(float))


def linear_demand_forecasts(windows: DemandWindows, coef: np.ndarray, spec: FederationSpec) -> np.ndarray:
    """Forecasts in units of a linear demand model's coefficients on the windows."""
    return forecast_units(demand_design(windows, spec)[0], coef, demand_units_scale(windows, spec))


def wape(forecast: np.ndarray, actual: np.ndarray) -> float:
    """Sum of absolute errors over total demand (nan without demand)."""
    total = float(np.abs(actual).sum())
    return float(np.abs(forecast - actual).sum()) / total if total > 0 else math.nan


# -- risk --------------------------------------------------------------------------------------------


def risk_row_norm(features: int) -> float:
    """Public L2 bound on one risk row: features scaled to [-1, 1] by their public ranges, plus the intercept."""
    return math.sqrt(features + 1)


def risk_design(scaled: np.ndarray) -> np.ndarray:
    """Scaled features with an intercept, each row clipped to `risk_row_norm`."""
    x = np.concatenate([np.asarray(scaled, dtype=float), np.ones((scaled.shape[0], 1))], axis=1)
    return clip_rows(x, risk_row_norm(scaled.shape[1]))


def newton_sensitivity(row_norm: float) -> float:
    """L2 sensitivity of [X^T (p - y), triu(X^T diag(p(1-p)) X)] to one record: R sqrt(1 + R^2 / 16)."""
    return row_norm * math.sqrt(1.0 + row_norm**2 / 16.0)


def newton_statistics(x: np.ndarray, y: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """[gradient of the log loss, triu(Hessian)] at `coef`, summed over the firm's records."""
    p = expit(x @ coef)
    gradient = x.T @ (p - y)
    hessian = (x * (p * (1 - p))[:, None]).T @ x
    return np.concatenate([gradient, triu_vector(hessian)])


def logistic_fit(
    x: np.ndarray, y: np.ndarray, penalty: float, prior: np.ndarray | None = None, *, steps: int = 25
) -> np.ndarray:
    """argmin log loss + penalty/2 ||w - prior||^2 by Newton's method (exact, on the firm's own data)."""
    dim = x.shape[1]
    centre = np.zeros(dim) if prior is None else prior
    coef = centre.copy()
    for _ in range(steps):
        gradient, hessian = split_newton(newton_statistics(x, y, coef), dim)
        step = solve(hessian + penalty * np.eye(dim), gradient + penalty * (coef - centre), assume_a="pos")
        coef = coef - step
        if float(np.abs(step).max()) < 1e-8:
            break
    return coef


def log_loss(x: np.ndarray, y: np.ndarray, coef: np.ndarray) -> float:
    """Mean binary cross-entropy of the model on (x, y)."""
    return logit_log_loss(x @ coef, y)


def logit_log_loss(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of log-odds `z` for labels `y` (any model's, without overflow)."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))
