"""A firm's half of the linear family and of deployment: its sufficient statistics, and what it deploys.

The statistics are what the firm adds to the federation's secure sum (clipped to the public bounds,
see `clients.linear`). Deployment happens at the firm, on its own data, after the global models are
known: it backtests its candidates on its most recent training windows (`clients.personalise`) --
seasonal naive, its local-only models (ridge, and the MLP it fits as its local-only baseline), the
global models and the global linear model adapted to its data -- and deploys the best. Nothing of
this is released; the simulation harness, which holds every firm's data, scores what each deployed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from scipy.special import expit

from silobridge.clients.evaluation import forecast_units
from silobridge.clients.features import DemandWindows
from silobridge.clients.firm import FirmClient
from silobridge.clients.linear import (
    demand_design,
    newton_statistics,
    risk_design,
    sufficient_statistics,
    wape,
)
from silobridge.clients.models import build_model, load_arrays
from silobridge.clients.normaliser import Normaliser
from silobridge.clients.personalise import (
    BLEND_WEIGHTS,
    DEMAND_SWITCH_MARGIN,
    HEDGE_FULL_AT,
    RISK_HEDGE_EVENTS,
    RISK_HEDGE_WEIGHT,
    SWITCH_STANDARD_ERRORS,
    Choice,
    blend,
    blend_name,
    choose_demand,
    choose_risk,
    clear_gain,
    confirms,
    demand_forecasts,
    hedge_weight,
    keep_or_switch,
    linear_order,
    logit_blend,
    one_se_pick,
    origin_errors,
    refit_candidate,
    row_log_losses,
    tail_forecasts,
    validation_split,
)
from silobridge.clients.training import predict
from silobridge.contract.messages import BaselineInstruction
from silobridge.contract.stats import DemandErrorStats, RiskStats
from silobridge.errors import ProtocolError

Forecaster = Callable[[DemandWindows], np.ndarray]
LINEAR_NAMES = {"local": "local_ridge", "global": "global_linear", "adapted": "adapted_linear"}
"""The linear family's candidates as a deployment names them (beside naive, local_mlp, global_mlp)."""


def demand_statistics(firm: FirmClient) -> np.ndarray:
    """[triu(X^T X), X^T Y] over the firm's clipped training windows."""
    if firm.demand_split is None:
        raise ProtocolError("asked for demand statistics but the firm holds no demand data", firm=firm.firm_id)
    return sufficient_statistics(*demand_design(firm.demand_split[0], firm.spec))


def risk_training(firm: FirmClient, norm: Normaliser) -> tuple[np.ndarray, np.ndarray]:
    """The firm's risk design rows (scaled, intercept, clipped) and labels, in date order."""
    if firm.risk_split is None:
        raise ProtocolError("asked for risk statistics but the firm holds no risk data", firm=firm.firm_id)
    train = firm.risk_split[0]
    return risk_design(norm.apply(train.features)), train.labels.astype(float)


def risk_statistics(firm: FirmClient, norm: Normaliser, coef: np.ndarray) -> np.ndarray:
    """[gradient, triu(Hessian)] of the log loss at `coef` over the firm's risk training rows."""
    x, y = risk_training(firm, norm)
    if coef.shape != (x.shape[1],):
        raise ProtocolError(f"risk coefficients have shape {coef.shape}, expected ({x.shape[1]},)", firm=firm.firm_id)
    return newton_statistics(x, y, coef)


@dataclass
class Deployment:
    """What one firm deploys for demand, why, and how it forecasts."""

    name: str
    reason: str
    forecaster: Forecaster
    shrinkage: float | None = None
    validation: dict[str, float] = field(default_factory=dict)
    recent: dict[str, float] = field(default_factory=dict)  # the confirmation on the recent tail, where one ran
    blend_weight: float | None = None  # a blend's weight on the local-only MLP
    blend_partner: str | None = None  # a blend's other candidate
    hedged_from: str | None = None  # the contender a hedged switch blended with the local-only MLP (`hedge_weight`)


def _take(windows: DemandWindows, mask: np.ndarray) -> DemandWindows:
    return DemandWindows(*(getattr(windows, f)[mask] for f in windows.__dataclass_fields__))


def _torch_forecaster(model: torch.nn.Module, device: torch.device) -> Forecaster:
    return lambda windows: forecast_units(model, windows, device)


def _mlp_forecasts(
    firm: FirmClient,
    instruction: BaselineInstruction,
    train: DemandWindows,
    split: tuple[np.ndarray, np.ndarray],
    global_mlp: torch.nn.Module | None,
) -> dict[str, np.ndarray]:
    """Forecasts on the split's tail of the local-only MLP (its recipe, fitted on the split's fit windows) and
    of the global MLP."""
    fit, tail = split
    tail_windows = _take(train, tail)
    local = firm.fit_local_demand(_take(train, fit), instruction)
    out = {"local_mlp": forecast_units(local, tail_windows, firm.device)}
    if global_mlp is not None:
        out["global_mlp"] = forecast_units(global_mlp, tail_windows, firm.device)
    return out


@dataclass
class SplitScores:
    """Every candidate's validation WAPE on one split, its per-origin shares (`origin_errors`), and the
    contenders the deployment decides among: seasonal naive, the linear candidate `one_se_pick` chose
    (`linear`), the MLPs and the blends of the local-only MLP with that linear candidate."""

    scores: dict[str, float]
    errors: dict[str, np.ndarray]
    contenders: list[str]
    linear: str | None


def split_scores(
    firm: FirmClient,
    instruction: BaselineInstruction,
    linear_coef: np.ndarray | None,
    split: tuple[np.ndarray, np.ndarray],
    global_mlp: torch.nn.Module | None,
) -> SplitScores:
    """`SplitScores` of every candidate on the split's tail, each fitted on the split's fit windows."""
    train = firm.demand_split[0]  # type: ignore[index]
    actual, origins = train.actual[split[1]], train.origin[split[1]]
    forecasts = {
        **tail_forecasts(train, firm.spec, linear_coef, *split),
        **_mlp_forecasts(firm, instruction, train, split, global_mlp),
    }
    errors = {name: origin_errors(forecast, actual, origins) for name, forecast in forecasts.items()}
    linear = one_se_pick(errors, linear_order(linear_coef is not None))
    contenders = [name for name in ("naive", linear, "local_mlp", "global_mlp") if name in forecasts]
    if linear is not None and "local_mlp" in forecasts:
        for weight in BLEND_WEIGHTS:
            name = blend_name(weight)
            forecasts[name] = blend(forecasts["local_mlp"], forecasts[linear], weight)
            errors[name] = origin_errors(forecasts[name], actual, origins)
            contenders.append(name)
    scores = {name: wape(forecast, actual) for name, forecast in forecasts.items()}
    return SplitScores(scores, errors, contenders, linear)


def _partner_forecaster(
    partner: str, firm: FirmClient, choice: Choice, linear_coef: np.ndarray | None, global_mlp: torch.nn.Module | None
) -> Forecaster:
    """The partner candidate refitted on all the firm's training windows, as a forecaster."""
    spec, train = firm.spec, firm.demand_split[0]  # type: ignore[index]
    if partner == "global_mlp" and global_mlp is not None:
        return _torch_forecaster(global_mlp, firm.device)
    if partner == "naive":
        return lambda windows: windows.naive.astype(float)
    x, y = demand_design(train, spec)
    coef, alpha = refit_candidate(partner, x, y, linear_coef, spec)
    refit = Choice(partner, coef, choice.reason, shrinkage=alpha)
    return lambda windows: demand_forecasts(refit, windows, spec)


def deploy_demand(
    firm: FirmClient,
    instruction: BaselineInstruction,
    linear_coef: np.ndarray | None,
    mlp_arrays: dict[str, np.ndarray] | None = None,
) -> Deployment:
    """The firm's deployed demand forecaster: its local-only MLP unless a candidate (seasonal naive and the
    blends of the MLP with its best partner included) beats its validation WAPE by DEMAND_SWITCH_MARGIN
    (`keep_or_switch`) and, where the tail reached back to last year's season, also on the recent tail alone
    (`confirms`), and then, under 3x the margin, hedged with the MLP (`hedge_weight`); too few windows to validate,
    the linear fallback."""
    if firm.demand_split is None:
        raise ProtocolError("asked to deploy a demand model but the firm holds no demand data", firm=firm.firm_id)
    spec, train = firm.spec, firm.demand_split[0]
    choice: Choice = choose_demand(train, spec, linear_coef)
    periods = spec.linear.validation_periods
    split = validation_split(train, periods, spec.horizon, spec.test_periods) if len(train) else None
    if split is None:
        return Deployment(
            LINEAR_NAMES.get(choice.name, choice.name),
            choice.reason,
            lambda windows: demand_forecasts(choice, windows, spec),
            choice.shrinkage,
            dict(choice.validation),
        )
    global_mlp: torch.nn.Module | None = None
    if mlp_arrays is not None:
        global_mlp = build_model("demand", spec)
        load_arrays(global_mlp, mlp_arrays)
    validated = split_scores(firm, instruction, linear_coef, split, global_mlp)
    scores, errors = validated.scores, validated.errors
    candidates = {name: scores[name] for name in validated.contenders}
    origins = int(np.unique(train.origin[split[1]]).size)
    pick = keep_or_switch(candidates, "local_mlp", DEMAND_SWITCH_MARGIN)
    confirm: dict[str, float] = {}
    reason = f"no candidate beat its local-only MLP by {DEMAND_SWITCH_MARGIN:.0%} WAPE on {origins} origins"
    if pick != "local_mlp" and "local_mlp" in errors and not clear_gain(errors["local_mlp"], errors[pick]):
        reason = (
            f"{pick} beat its local-only MLP by {DEMAND_SWITCH_MARGIN:.0%} WAPE on {origins} origins, by less than "
            f"{SWITCH_STANDARD_ERRORS:g} standard error(s) of the paired per-origin difference: kept it"
        )
        pick = "local_mlp"
    recent = validation_split(train, periods, spec.horizon)
    if pick != "local_mlp" and recent is not None and not np.array_equal(recent[1], split[1]):
        # The seasonal tail leaves the fitted candidates a year less to fit on; seasonal naive fits nothing, so
        # it (or a model that needs less data) can win there and lose once the local-only MLP has all its data.
        again = split_scores(firm, instruction, linear_coef, recent, global_mlp)
        confirm = dict(again.scores)
        if pick.startswith("blend@") and again.linear != validated.linear:
            confirm[pick] = math.nan  # the blend's partner changed: not the same candidate
        if not confirms(confirm, pick, "local_mlp", DEMAND_SWITCH_MARGIN):
            recent_origins = int(np.unique(train.origin[recent[1]]).size)
            reason = (
                f"{pick} beat its local-only MLP by {DEMAND_SWITCH_MARGIN:.0%} WAPE on {origins} origins but not on "
                f"its {recent_origins} most recent (the local-only MLP fitted on more windows): kept it"
            )
            pick = "local_mlp"
    local_mlp = _torch_forecaster(firm.local_demand_model(instruction), firm.device)
    if pick == "local_mlp":
        return Deployment(pick, reason, local_mlp, None, scores, confirm)
    lead = f"lowest WAPE on {origins} of its own training origins"
    reason = f"{lead}, over {DEMAND_SWITCH_MARGIN:.0%} below its local-only MLP's"
    if confirm:
        reason += f" (also on its {int(np.unique(train.origin[recent[1]]).size)} most recent)"  # type: ignore[index]
    if confirm:  # its history covers a season: hedge a switch won by a modest margin (`hedge_weight`)
        partner_name = validated.linear if pick.startswith("blend@") else pick
        held = 1.0 - float(pick.split("@", 1)[1]) if pick.startswith("blend@") else 1.0
        gain = 1.0 - scores[pick] / scores["local_mlp"]
        weight = min(held, hedge_weight(gain, DEMAND_SWITCH_MARGIN))
        if weight < held:
            partner = _partner_forecaster(partner_name, firm, choice, linear_coef, global_mlp)  # type: ignore[arg-type]
            local_weight = 1.0 - weight
            reason += (
                f"; {pick} won by {gain:.0%}, under {HEDGE_FULL_AT:g} x the margin, so hedged: {local_weight:g} x its "
                f"local-only MLP + {weight:g} x {partner_name} (refitted on all its windows)"
            )

            def hedged(windows: DemandWindows) -> np.ndarray:
                return blend(local_mlp(windows), partner(windows), local_weight)

            return Deployment(
                "blend", reason, hedged, None, scores, confirm, local_weight, partner_name, hedged_from=pick
            )
    if pick.startswith("blend@"):
        weight = float(pick.split("@", 1)[1])
        partner_name = validated.linear
        partner = _partner_forecaster(partner_name, firm, choice, linear_coef, global_mlp)  # type: ignore[arg-type]
        reason += f": {weight:g} x its local-only MLP + {1 - weight:g} x {partner_name} (refitted on all its windows)"

        def blended(windows: DemandWindows) -> np.ndarray:
            return blend(local_mlp(windows), partner(windows), weight)

        return Deployment("blend", reason, blended, None, scores, confirm, weight, partner_name)
    if pick == "global_mlp" and global_mlp is not None:
        return Deployment(pick, reason, _torch_forecaster(global_mlp, firm.device), None, scores, confirm)
    if pick == "naive":
        return Deployment(pick, reason, lambda windows: windows.naive.astype(float), None, scores, confirm)
    x, y = demand_design(train, spec)
    coef, alpha = refit_candidate(pick, x, y, linear_coef, spec)
    picked = Choice(pick, coef, reason, shrinkage=alpha)
    name = "adapted" if pick.startswith("adapted") else pick
    return Deployment(
        LINEAR_NAMES.get(name, name),
        reason,
        lambda windows: demand_forecasts(picked, windows, spec),
        alpha,
        scores,
        confirm,
    )


def demand_test_stats(firm: FirmClient, forecaster: Forecaster) -> DemandErrorStats:
    """Error totals of a forecaster on the firm's test windows."""
    if firm.demand_split is None:
        return DemandErrorStats.from_forecasts(np.zeros((0, firm.spec.horizon)), np.zeros((0, firm.spec.horizon)))
    test = firm.demand_split[1]
    return DemandErrorStats.from_forecasts(forecaster(test), test.actual)


@dataclass
class RiskDeployment:
    """What one firm deploys for risk, why, and its probabilities on raw (unscaled) features."""

    choice: Choice
    predict: Callable[[np.ndarray], np.ndarray]


def _logistic(norm: Normaliser, coef: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    return lambda features: expit(risk_design(norm.apply(features)) @ coef)


def _mlp_probabilities(model: torch.nn.Module, norm: Normaliser, firm: FirmClient) -> Callable[..., np.ndarray]:
    return lambda features: expit(predict(model, norm.apply(features), device=firm.device))


def deploy_risk(
    firm: FirmClient, norm: Normaliser, global_coef: np.ndarray | None, instruction: BaselineInstruction
) -> RiskDeployment:
    """The firm's deployed risk model (`choose_risk`): its local-only MLP (the baseline's recipe), unless a
    logistic one (local, global or shrunk toward the global) beats its validation log loss by
    RISK_SWITCH_MARGIN, or its rows hold too few events to learn from and a global model exists. A validated switch
    of a firm with RISK_HEDGE_EVENTS events or more deploys the average of both models' log-odds (`logit_blend`)."""
    x, y = risk_training(firm, norm)  # raises if the firm holds no risk data
    train = firm.risk_split[0]  # type: ignore[index]

    def local_only(tail: np.ndarray) -> np.ndarray:
        model, own = firm.fit_local_risk(train.features[~tail], train.labels[~tail], instruction, train.features)
        logits = predict(model, own.apply(train.features[tail]), device=firm.device)
        return row_log_losses(np.asarray(logits, dtype=float), train.labels[tail].astype(float))

    choice = choose_risk(x, y, global_coef, firm.spec.linear.risk_ridge, local_only=local_only)
    if choice.name in ("local_only", "none"):  # "none": no rows and no global model, the baseline's fallback
        model, own = firm.local_risk_model(instruction)
        return RiskDeployment(choice, _mlp_probabilities(model, own, firm))
    coef = choice.coef if choice.coef is not None else global_coef
    if coef is None:
        raise ProtocolError("the firm has no risk model to deploy", firm=firm.firm_id)
    events = int(np.sum(y == 1.0))
    if "local_only" in choice.validation and events >= RISK_HEDGE_EVENTS:  # a validated switch from its own model
        model, own = firm.local_risk_model(instruction)
        weight, chosen = RISK_HEDGE_WEIGHT, coef

        def hedged(features: np.ndarray) -> np.ndarray:
            local = np.asarray(predict(model, own.apply(features), device=firm.device), dtype=float)
            return logit_blend(local, risk_design(norm.apply(features)) @ chosen, weight)

        why = (
            f"{choice.reason}; hedged ({events} events, at least {RISK_HEDGE_EVENTS}): {weight:g} x its local-only "
            f"model's log-odds + {1 - weight:g} x the chosen model's"
        )
        return RiskDeployment(replace(choice, reason=why, hedge=weight), hedged)
    return RiskDeployment(choice, _logistic(norm, coef))


def risk_test_stats(firm: FirmClient, norm: Normaliser, coef: np.ndarray) -> RiskStats:
    """Score histograms of a logistic model on the firm's risk test rows."""
    return risk_predict_stats(firm, _logistic(norm, coef))


def risk_predict_stats(firm: FirmClient, probabilities: Callable[[np.ndarray], np.ndarray]) -> RiskStats:
    """Score histograms of a model's probabilities (of raw features) on the firm's risk test rows."""
    if firm.risk_split is None:
        return RiskStats.empty()
    test = firm.risk_split[1]
    return RiskStats.from_predictions(probabilities(test.features), test.labels)
