"""What a firm deploys: its own choice, made on its most recent training windows, at no privacy cost.

The firm backtests each candidate on a validation tail (its last `validation_periods` forecast
origins and, where its history allows, the season it is about to forecast, a year earlier), each
fitted only on windows whose targets were all observed by the tail's first origin,
picks the lowest WAPE (risk: log loss), and refits the choice on all its training data. Candidates:
seasonal naive, its local-only ridge, the global model, and the global model adapted to its data
(ridge shrunk toward the global coefficients, the shrinkage chosen on the same tail). Nothing of
this leaves the firm.

The choice is conservative: a firm keeps its local-only model (the one it runs without joining)
unless another candidate beats it on the tail by a relative margin (`keep_or_switch`) and by at least
one standard error of the paired per-origin difference (demand: `clear_gain`). The
tail is short (a few origins, a few hundred risk rows), so the lowest score among a dozen candidates is
partly luck, and a switch that validated slightly better can test worse; switching also has a cost
(a model the firm did not build and cannot inspect), so a small validated gain does not pay for it.
For the same reason the deployment (`clients.deploy`) lets only one linear candidate contend: the most
shrunk toward the global model within one standard error of the best (`one_se_pick`), beside seasonal
naive, the MLPs, and blends of the local-only MLP with that candidate (`blend`). A switch won by a modest margin
is hedged rather than made outright: demand by `hedge_weight` (firms whose history covers a season), risk by
`logit_blend` (firms with RISK_HEDGE_EVENTS events or more).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import expit

from silobridge.clients.features import DemandWindows
from silobridge.clients.linear import (
    demand_design,
    demand_units_scale,
    forecast_units,
    linear_demand_forecasts,
    logistic_fit,
    ridge,
    wape,
)
from silobridge.contract.config import FederationSpec

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
    hedge: float | None = None  # risk: the local-only model's weight in a hedged switch (`logit_blend`)


def _take(windows: DemandWindows, mask: np.ndarray) -> DemandWindows:
    return DemandWindows(*(getattr(windows, f)[mask] for f in windows.__dataclass_fields__))


DEMAND_SWITCH_MARGIN = 0.10
"""Relative validation WAPE by which a candidate must beat the firm's local-only model to replace it.
On the default run a large firm's candidates differ by a few percent on the tail (R2: 6% better on
validation, 18% worse on test), a small firm's by 18% to 54% (the global model against a local MLP
fitted on little data)."""
RISK_SWITCH_MARGIN = 0.02
"""Relative validation log loss by which a candidate must beat the firm's local-only risk model."""
MIN_VALIDATION_EVENTS = 5
"""Fewest events (positive labels) the risk validation must hold before any candidate may replace the
local-only model: with fewer, the log loss turns on one or two predictions."""
MIN_TAIL_EVENTS = 2 * MIN_VALIDATION_EVENTS
"""Fewest events the recent risk tail must hold to be validated on alone; with fewer the firm validates on
folds of all its rows, so every event it holds is evidence (a tail of 5 events is a quarter of 20: the
other 15 would judge nothing)."""


def keep_or_switch(scores: dict[str, float], incumbent: str, margin: float) -> str:
    """The candidate a firm deploys: the best-scoring one if it beats `incumbent` (its local-only model)
    by `margin` relative on the validation tail, else the incumbent. Non-finite scores never win; an
    incumbent without a finite score gives way to the best finite one."""
    finite = {name: value for name, value in scores.items() if np.isfinite(value)}
    if not finite:
        return incumbent
    best = min(finite, key=lambda name: (finite[name], name != incumbent))
    if incumbent not in finite or best == incumbent:
        return best
    return best if finite[best] < (1.0 - margin) * finite[incumbent] else incumbent


def confirms(scores: dict[str, float], pick: str, incumbent: str, margin: float) -> bool:
    """Whether `pick` also beats `incumbent` by `margin` relative on a second validation's `scores` (a
    missing or non-finite score of either never confirms a switch)."""
    mine, theirs = scores.get(pick, math.nan), scores.get(incumbent, math.nan)
    return bool(np.isfinite(mine) and np.isfinite(theirs) and mine < (1.0 - margin) * theirs)


SWITCH_STANDARD_ERRORS = 1.0
"""How many standard errors of the paired difference a candidate's validated gain over the local-only model
must reach (`clear_gain`), beside the relative margin: a gain made on one or two lucky origins (or rows) is
within the noise of the validation however large it is."""


def clear_gain(incumbent: np.ndarray, candidate: np.ndarray, z: float = SWITCH_STANDARD_ERRORS) -> bool:
    """Whether the candidate's total loss over paired validation units (forecast origins, risk rows) is below
    the incumbent's by at least `z` standard errors of the paired difference's total (sqrt(n) x the sample
    standard deviation of the per-unit differences). Fewer than two units, or a non-finite loss: never."""
    incumbent, candidate = np.asarray(incumbent, dtype=float), np.asarray(candidate, dtype=float)
    if incumbent.shape != candidate.shape or incumbent.size < 2:
        return False
    gains = incumbent - candidate
    if not np.all(np.isfinite(gains)):
        return False
    spread = math.sqrt(gains.size) * float(np.std(gains, ddof=1))
    return bool(gains.sum() > z * spread)


def linear_order(has_global: bool) -> list[str]:
    """The linear candidates from the most shrunk toward the global model to the least (the firm's own ridge)."""
    if not has_global:
        return ["local"]
    return ["global", *(f"adapted@{alpha:g}" for alpha in sorted(SHRINKAGE_GRID, reverse=True)), "local"]


def one_se_pick(errors: dict[str, np.ndarray], order: list[str], z: float = SWITCH_STANDARD_ERRORS) -> str | None:
    """The first candidate of `order` (most conservative first) whose validation loss the best candidate does
    not beat by `z` standard errors of their paired difference (`clear_gain`): the one-standard-error rule for
    a penalty. The shrinkage levels differ by a few percent on a firm's tail, so the lowest of them is mostly
    luck, and a small firm's tail (weeks before the season it forecasts) underrates the pooled model. None
    without a finite candidate."""
    usable = [name for name in order if name in errors and np.all(np.isfinite(errors[name]))]
    if not usable:
        return None
    best = min(usable, key=lambda name: float(np.sum(errors[name])))
    return next(name for name in usable if name == best or not clear_gain(errors[name], errors[best], z))


def origin_errors(forecast: np.ndarray, actual: np.ndarray, origins: np.ndarray) -> np.ndarray:
    """Each forecast origin's share of the WAPE: its windows' absolute error over the total absolute actual
    of all windows (sorted by origin), so the shares sum to the WAPE and pair across candidates."""
    total = float(np.abs(actual).sum())
    errors = np.abs(np.asarray(forecast, dtype=float) - actual).reshape(len(actual), -1).sum(axis=1)
    labels, index = np.unique(origins, return_inverse=True)
    per_origin = np.bincount(index, weights=errors, minlength=labels.size)
    return per_origin / total if total > 0 else np.full(labels.size, math.nan)


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


def tail_forecasts(
    train: DemandWindows, spec: FederationSpec, global_coef: np.ndarray | None, fit: np.ndarray, tail: np.ndarray
) -> dict[str, np.ndarray]:
    """Forecasts in units on the `tail` windows of seasonal naive and of every linear candidate fitted on the
    `fit` windows (keys: naive, local, global, adapted@ALPHA)."""
    x_all, y_all = demand_design(train, spec)
    tail_windows = _take(train, tail)
    out = {"naive": tail_windows.naive.astype(float)}
    units = demand_units_scale(tail_windows, spec)
    for name, (coef, _) in _candidates(x_all[fit], y_all[fit], global_coef, spec).items():
        out[name] = forecast_units(x_all[tail], coef, units)
    return out


def demand_scores(
    train: DemandWindows, spec: FederationSpec, global_coef: np.ndarray | None, fit: np.ndarray, tail: np.ndarray
) -> dict[str, float]:
    """Validation WAPE on the `tail` windows of seasonal naive and of every linear candidate fitted on the
    `fit` windows (keys: naive, local, global, adapted@ALPHA)."""
    actual = train.actual[tail]
    return {
        name: wape(forecast, actual) for name, forecast in tail_forecasts(train, spec, global_coef, fit, tail).items()
    }


BLEND_WEIGHTS = (0.25, 0.5, 0.75)
"""Weights of the firm's local-only model in the blends it tries with its best linear candidate (the rest on
that candidate). Two models that err differently average out part of each other's error: a small firm's
local MLP (fitted on a few dozen windows) and the global model adapted to its data often do."""


def blend_name(weight: float) -> str:
    """A blend's candidate name, e.g. 'blend@0.25' (the local-only model's weight)."""
    return f"blend@{weight:g}"


def blend(local: np.ndarray, partner: np.ndarray, weight: float) -> np.ndarray:
    """The convex combination `weight` x local + (1 - weight) x partner of two forecasts."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"a blend weight must lie in [0, 1], got {weight}")
    return weight * local + (1.0 - weight) * partner


def blend_scores(
    local: np.ndarray, partner: np.ndarray, actual: np.ndarray, weights: tuple[float, ...] = BLEND_WEIGHTS
) -> dict[str, float]:
    """Validation WAPE of each blend of the local-only and the partner forecasts (keys `blend_name(w)`)."""
    return {blend_name(w): wape(blend(local, partner, w), actual) for w in weights}


HEDGE_FULL_AT = 3.0
"""A switch's validated relative gain over the local-only model, in multiples of the switch margin, from which a
firm whose history covers a season deploys the contender alone (`hedge_weight`)."""
HEDGE_WEIGHTS = (0.25, 0.5, 0.75, 1.0)
"""The contender's weights a hedged switch rounds up to (the rest on the firm's local-only model)."""


def hedge_weight(
    gain: float, margin: float, full_at: float = HEDGE_FULL_AT, weights: tuple[float, ...] = HEDGE_WEIGHTS
) -> float:
    """The weight a firm puts on a contender that beat its local-only model by relative `gain` on validation
    (the rest stays on the local-only model): growing linearly from 0 at the switch `margin` to 1 at `full_at` x
    the margin, rounded up to `weights`. A gain just past the margin is modest evidence on a few dozen origins
    (seed 4, R1: 13% on its tail, 1.21x worse on test), so the firm hedges rather than switches outright."""
    if margin <= 0 or full_at <= 1:
        raise ValueError(f"a hedge needs a positive margin and full_at above 1, got {margin} and {full_at}")
    strength = min(1.0, max(0.0, (gain - margin) / ((full_at - 1.0) * margin)))
    return next((w for w in sorted(weights) if w >= strength - 1e-12), 1.0)


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
    scores = demand_scores(train, spec, global_coef, fit, tail)
    best = min(scores, key=lambda name: (np.nan_to_num(scores[name], nan=np.inf), name != "global"))
    reason = f"lowest WAPE on {int(np.unique(train.origin[tail]).size)} of its own training origins"
    if best == "naive":
        return Choice("naive", None, reason, validation=scores)
    if best == "global":
        return Choice("global", global_coef, reason, validation=scores)
    coef, alpha = refit_candidate(best, x_all, y_all, global_coef, spec)
    name = "adapted" if best.startswith("adapted") else best
    return Choice(name, coef, reason, shrinkage=alpha, validation=scores)


def refit_candidate(
    name: str, x: np.ndarray, y: np.ndarray, global_coef: np.ndarray | None, spec: FederationSpec
) -> tuple[np.ndarray, float | None]:
    """A linear candidate (local, global, adapted@ALPHA) refitted on the design rows `x`, `y`: its coefficients
    and shrinkage toward the global model."""
    xtx, xty = x.T @ x, x.T @ y
    if name == "local":
        return ridge(xtx, xty, spec.linear.ridge), None
    if global_coef is None:
        raise ValueError(f"candidate '{name}' needs the global model")
    if name == "global":
        return global_coef, None
    alpha = float(name.split("@", 1)[1])
    return ridge(xtx, xty, alpha, prior=global_coef), alpha


def demand_forecasts(choice: Choice, windows: DemandWindows, spec: FederationSpec) -> np.ndarray:
    """Forecasts in units of the chosen model on the given windows."""
    if len(windows) == 0:
        return np.zeros(windows.targets.shape)
    if choice.coef is None:
        return windows.naive.astype(float)
    return linear_demand_forecasts(windows, choice.coef, spec)


def row_log_losses(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Binary cross-entropy of each row's log-odds `z` for its label `y` (without overflow)."""
    return np.logaddexp(0.0, z) - y * z


MIN_TAIL_PER_CLASS = 1
"""Fewest rows of each class the risk validation tail (and its fit rows) must hold."""


def stratified_tail(y: np.ndarray, share: float) -> np.ndarray | None:
    """Mask of the most recent `share` of each class's rows (`y` in date order), at least one of each.
    Events are rare: a plain last-quarter tail of a small firm often holds none, or leaves none to fit
    on, and then nothing can be validated. None if a class has too few rows to appear on both sides."""
    tail = np.zeros(len(y), dtype=bool)
    for label in (0.0, 1.0):
        rows = np.flatnonzero(y == label)
        count = max(MIN_TAIL_PER_CLASS, int(round(len(rows) * share)))
        if len(rows) - count < MIN_TAIL_PER_CLASS:
            return None
        tail[rows[-count:]] = True
    if int((~tail).sum()) < MIN_FIT_WINDOWS:
        return None
    return tail


RISK_HEDGE_WEIGHT = 0.5
"""Weight on the local-only model's log-odds in the risk model a firm deploys when it switches away from it
(`logit_blend`; the rest on the chosen logistic model)."""
RISK_HEDGE_EVENTS = 20
"""Fewest events a firm's training rows must hold for its switch to be hedged: below it its local-only model
learnt from too few to be worth keeping in the mix (seed 3: D2, 7 events)."""


def logit_blend(local: np.ndarray, partner: np.ndarray, weight: float) -> np.ndarray:
    """Probabilities of the convex combination `weight` x local + (1 - weight) x partner of two models' log-odds:
    an ensemble of two risk models that err differently, on the scale where a logistic model is linear."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"a blend weight must lie in [0, 1], got {weight}")
    return expit(weight * np.asarray(local, dtype=float) + (1.0 - weight) * np.asarray(partner, dtype=float))


RISK_FOLDS = 4
"""Most folds of the cross-validation a firm runs when its recent tail holds too few events: every
event of its training rows is then validated once."""
MIN_LOCAL_EVENTS = MIN_VALIDATION_EVENTS
"""Fewest events a firm's training rows must hold for it to choose its risk model on its own evidence:
with fewer it can tell no two models apart, and its local-only model has learnt from as few events
(ranking at random with none), so it deploys the global model, which learnt from the federation's."""


def stratified_folds(y: np.ndarray, folds: int) -> list[np.ndarray]:
    """`folds` masks over rows in date order: each class's rows cut into `folds` contiguous blocks, fold j
    holding block j of each class, so every fold holds events and every row is validated once. Needs at
    least `folds` rows of each class."""
    masks = [np.zeros(len(y), dtype=bool) for _ in range(folds)]
    for label in (0.0, 1.0):
        for mask, block in zip(masks, np.array_split(np.flatnonzero(y == label), folds), strict=True):
            mask[block] = True
    return masks


def risk_validation(y: np.ndarray, tail_share: float) -> tuple[list[np.ndarray], str] | None:
    """The masks a firm validates its risk candidates on (each fitted on the other rows) and their
    description: its `stratified_tail` when that holds MIN_TAIL_EVENTS events, else folds of
    `stratified_folds` over all its rows (up to RISK_FOLDS, one event each at least). None if it has too
    few rows of a class for either."""
    tail = stratified_tail(y, tail_share)
    if tail is not None and int(y[tail].sum()) >= MIN_TAIL_EVENTS:
        held = f"({int(tail.sum())}, {int(y[tail].sum())} positive)"
        return [tail], f"the last {tail_share:.0%} of each class's training rows {held}"
    folds = min(RISK_FOLDS, int(np.sum(y == 1.0)), int(np.sum(y == 0.0)))
    if folds < 2 or len(y) < 2 * MIN_FIT_WINDOWS:
        return None
    rows = f"{folds} folds of all {len(y)} training rows ({int(y.sum())} positive)"
    return stratified_folds(y, folds), rows


def choose_risk(
    x: np.ndarray,
    y: np.ndarray,
    global_coef: np.ndarray | None,
    penalty: float,
    tail_share: float = 0.25,
    local_only: Callable[[np.ndarray], float | np.ndarray] | None = None,
) -> Choice:
    """The firm's deployed risk model (design rows `x`, in date order), chosen by log loss on
    `risk_validation`'s rows (each candidate fitted on the others), then refitted on all rows: logistic
    local, global or shrunk, or, with `local_only` (the log loss, per row or in all, on a mask of its local-only
    model fitted on the other rows), that model (name "local_only", coef None), kept unless a candidate beats it
    by RISK_SWITCH_MARGIN (also asking for one standard error of the paired per-row difference, `clear_gain`, was
    measured: it undid two firms' better switches and stopped none of the worse, so it is not asked). Fewer than
    MIN_LOCAL_EVENTS events in all: the global model. Without a global model and with `local_only`, the
    local-only model, fitting nothing: joining offered no model to choose."""
    if len(y) == 0:
        if global_coef is None:
            return Choice("none", None, "no risk training rows and no global model")
        return Choice("global", global_coef, "no risk training rows: global model")
    if global_coef is None and local_only is not None:
        return Choice("local_only", None, "no global model to choose: its local-only model")
    events = int(np.sum(y == 1.0))
    if events < MIN_LOCAL_EVENTS and global_coef is not None:
        why = f"its {len(y)} training rows hold {events} event(s), too few to learn risk from or to validate on"
        return Choice("global", global_coef, f"{why}: global model")
    validation = risk_validation(y, tail_share)
    if validation is None:
        too_few = f"{len(y)} rows, too few (or one class) to validate"
        if local_only is not None:
            return Choice("local_only", None, f"{too_few}: its local-only model")
        if global_coef is not None:
            return Choice("global", global_coef, f"{too_few}: global model")
        return Choice("local", logistic_fit(x, y, penalty), f"{len(y)} rows, too few to validate: local")
    masks, rows = validation  # with a global model: every event validated (>= MIN_LOCAL_EVENTS), or a tail's

    shrinkage: dict[str, float | None] = {"local": None}  # candidate -> its penalty toward the global model
    if global_coef is not None:
        shrinkage |= {"global": None} | {f"adapted@{alpha:g}": alpha for alpha in SHRINKAGE_GRID}

    def fit(name: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        alpha = shrinkage[name]
        if name == "global" and global_coef is not None:
            return global_coef
        return logistic_fit(xs, ys, penalty) if alpha is None else logistic_fit(xs, ys, alpha, prior=global_coef)

    def fits(xs: np.ndarray, ys: np.ndarray) -> dict[str, tuple[np.ndarray, float | None]]:
        return {name: (fit(name, xs, ys), alpha) for name, alpha in shrinkage.items()}

    # every candidate's log loss on each validated row (each fitted on the rows outside its mask), in mask order
    rows_lost: dict[str, list[np.ndarray]] = {name: [] for name in shrinkage}
    for mask in masks:
        for name, (coef, _) in fits(x[~mask], y[~mask]).items():
            rows_lost[name].append(row_log_losses(x[mask] @ coef, y[mask]))
    per_row = {name: np.concatenate(parts) for name, parts in rows_lost.items()}
    reason = f"lowest log loss on {rows}"
    if local_only is not None:
        per_row["local_only"] = np.concatenate(
            [np.broadcast_to(np.asarray(local_only(mask), dtype=float), (int(mask.sum()),)) for mask in masks]
        )
    scores = {name: float(np.mean(losses)) for name, losses in per_row.items()}
    if local_only is not None:
        best = keep_or_switch(scores, "local_only", RISK_SWITCH_MARGIN)
        if best == "local_only":
            kept = f"no candidate beat its local-only model by {RISK_SWITCH_MARGIN:.0%} log loss on {rows}"
            return Choice("local_only", None, kept, validation=scores)
        reason += f", more than {RISK_SWITCH_MARGIN:.0%} below its local-only model's"
    else:
        best = min(scores, key=lambda name: (scores[name], name != "global"))
    if best == "global":
        return Choice("global", global_coef, reason, validation=scores)
    coef, alpha = fit(best, x, y), shrinkage[best]  # the choice alone refitted on all rows
    return Choice("adapted" if best.startswith("adapted") else best, coef, reason, shrinkage=alpha, validation=scores)
