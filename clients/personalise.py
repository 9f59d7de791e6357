"""What a firm deploys: its own choice, made on its most recent training windows, at no privacy cost.

The firm backtests each candidate on a validation tail (its last `validation_periods` forecast
origins and, where its history allows, the season it is about to forecast, a year earlier), each
fitted only on windows whose targets were all observed by the tail's first origin,
picks the lowest WAPE (risk: log loss), and refits the choice on all its training data. Candidates:
seasonal naive, its local-only ridge, the global model, and the global model adapted to its data
(ridge shrunk toward the global coefficients, the shrinkage chosen on the same tail). Nothing of
this leaves the firm.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from clients.features import DemandWindows
from clients.linear import demand_design, forecast_units, log_loss, logistic_fit, ridge, wape
from silobridge.config import FederationSpec

SHRINKAGE_GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)
"""Penalties toward the global coefficients a firm tries (statistics are sums over its windows)."""

MIN_FIT_WINDOWS = 2
"""Fewest windows a backtest fit needs; below it the firm cannot validate and falls back."""


@dataclass(frozen=True)
class Choice:
    """A firm's deployed model: which candidate, its coefficients (None for naive), and why."""

    name: str  # "naive" | "local" | "global" | "adapted"
    coef: np.ndarray | None
    reason: str
    shrinkage: float | None = None
    validation: dict[str, float] = field(default_factory=dict)  # candidate -> validation WAPE or log loss


def _take(windows: DemandWindows, mask: np.ndarray) -> DemandWindows:
    return DemandWindows(*(getattr(windows, f)[mask] for f in windows.__dataclass_fields__))


SEASON = 52
"""Periods in a year: a firm with a long history also validates on the same season a year earlier."""
MIN_SEASONAL_FIT_ORIGINS = 26
"""Fewest origins a firm must keep for fitting before it validates on last year's season."""


def validation_split(
    windows: DemandWindows, periods: int, horizon: int, season: int | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
    """(fit, tail) masks. The tail: the last `periods` origins (at most half of them) and, where the
    history allows, the `season` origins a year before the firm's next forecast (the season it is about
    to forecast, which the recent tail may not resemble). The fit windows: those whose targets were all
    observed at the tail's first origin. None if either would be too small."""
    origins = np.unique(windows.origin)
    tail_count = min(periods, len(origins) // 2)
    if tail_count < 1:
        return None
    step = (origins[1] - origins[0]) if len(origins) > 1 else np.timedelta64(7, "D")
    first = origins[-tail_count]
    tail = windows.origin >= first
    if season is not None:
        season_start = origins[-1] + step * horizon - step * SEASON
        seasonal = (windows.origin >= season_start) & (windows.origin < season_start + step * season)
        kept = origins[origins + step * horizon <= season_start]
        if seasonal.any() and kept.size >= MIN_SEASONAL_FIT_ORIGINS:
            tail, first = tail | seasonal, season_start
    fit = windows.origin + step * horizon <= first
    if int(fit.sum()) < MIN_FIT_WINDOWS or not tail.any():
        return None
    return fit, tail


def _candidates(
    x: np.ndarray, y: np.ndarray, global_coef: np.ndarray | None, spec: FederationSpec
) -> dict[str, tuple[np.ndarray, float | None]]:
    xtx, xty = x.T @ x, x.T @ y
    out: dict[str, tuple[np.ndarray, float | None]] = {"local": (ridge(xtx, xty, spec.linear.ridge), None)}
    if global_coef is not None:
        out["global"] = (global_coef, None)
        for alpha in SHRINKAGE_GRID:
            out[f"adapted@{alpha:g}"] = (ridge(xtx, xty, alpha, prior=global_coef), alpha)
    return out


def choose_demand(train: DemandWindows, spec: FederationSpec, global_coef: np.ndarray | None) -> Choice:
    """The firm's deployed demand model, chosen on its validation tail and refitted on all its windows."""
    if len(train) == 0:
        return Choice("naive", None, "no training windows: seasonal naive")
    split = validation_split(train, spec.linear.validation_periods, spec.horizon, spec.test_periods)
    x_all, y_all = demand_design(train, spec)
    if split is None:
        if global_coef is not None:
            return Choice("global", global_coef, f"{len(train)} training windows, too few to validate: global model")
        coef = ridge(x_all.T @ x_all, x_all.T @ y_all, spec.linear.ridge)
        return Choice("local", coef, f"{len(train)} training windows, too few to validate, no global model: local")
    fit, tail = split
    x_fit, y_fit = x_all[fit], y_all[fit]
    x_tail, tail_windows = x_all[tail], _take(train, tail)
    actual = tail_windows.actual
    scores = {"naive": wape(tail_windows.naive.astype(float), actual)}
    fitted = _candidates(x_fit, y_fit, global_coef, spec)
    for name, (coef, _) in fitted.items():
        scores[name] = wape(forecast_units(x_tail, coef, tail_windows.scale), actual)
    best = min(scores, key=lambda name: (np.nan_to_num(scores[name], nan=np.inf), name != "global"))
    reason = f"lowest WAPE on {int(np.unique(tail_windows.origin).size)} of its own training origins"
    if best == "naive":
        return Choice("naive", None, reason, validation=scores)
    if best == "global":
        return Choice("global", global_coef, reason, validation=scores)
    refit = _candidates(x_all, y_all, global_coef, spec)[best]
    name = "adapted" if best.startswith("adapted") else best
    return Choice(name, refit[0], reason, shrinkage=refit[1], validation=scores)


def demand_forecasts(choice: Choice, windows: DemandWindows, spec: FederationSpec) -> np.ndarray:
    """Forecasts in units of the chosen model on the given windows."""
    if len(windows) == 0:
        return np.zeros(windows.targets.shape)
    if choice.coef is None:
        return windows.naive.astype(float)
    x, _ = demand_design(windows, spec)
    return forecast_units(x, choice.coef, windows.scale)


def choose_risk(
    x: np.ndarray, y: np.ndarray, global_coef: np.ndarray | None, penalty: float, tail_share: float = 0.25
) -> Choice:
    """The firm's deployed logistic model (design rows `x`, in date order): local, global or shrunk,
    chosen by log loss on its most recent `tail_share` of rows, then refitted on all of them."""
    if len(y) == 0:
        if global_coef is None:
            return Choice("none", None, "no risk training rows and no global model")
        return Choice("global", global_coef, "no risk training rows: global model")
    cut = int(round(len(y) * (1 - tail_share)))
    both_classes = len(np.unique(y[:cut])) == 2
    if cut < MIN_FIT_WINDOWS or cut >= len(y) or not both_classes:
        if global_coef is not None:
            return Choice("global", global_coef, f"{len(y)} rows, too few (or one class) to validate: global model")
        return Choice("local", logistic_fit(x, y, penalty), f"{len(y)} rows, too few to validate: local")

    def fits(xs: np.ndarray, ys: np.ndarray) -> dict[str, tuple[np.ndarray, float | None]]:
        out: dict[str, tuple[np.ndarray, float | None]] = {"local": (logistic_fit(xs, ys, penalty), None)}
        if global_coef is not None:
            out["global"] = (global_coef, None)
            for alpha in SHRINKAGE_GRID:
                out[f"adapted@{alpha:g}"] = (logistic_fit(xs, ys, alpha, prior=global_coef), alpha)
        return out

    scores = {name: log_loss(x[cut:], y[cut:], coef) for name, (coef, _) in fits(x[:cut], y[:cut]).items()}
    best = min(scores, key=lambda name: (scores[name], name != "global"))
    reason = f"lowest log loss on its last {len(y) - cut} training rows"
    if best == "global":
        return Choice("global", global_coef, reason, validation=scores)
    coef, alpha = fits(x, y)[best]
    return Choice("adapted" if best.startswith("adapted") else best, coef, reason, shrinkage=alpha, validation=scores)
