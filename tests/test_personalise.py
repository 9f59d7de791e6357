"""A firm's own choice of what it deploys: backtest split, candidates, fallbacks."""

from __future__ import annotations

import numpy as np
import pytest

from silobridge.clients.features import DemandWindows, demand_windows
from silobridge.clients.linear import demand_design, ridge, risk_design
from silobridge.clients.personalise import (
    DEMAND_SWITCH_MARGIN,
    MIN_TAIL_EVENTS,
    MIN_VALIDATION_EVENTS,
    RISK_FOLDS,
    RISK_SWITCH_MARGIN,
    SHRINKAGE_GRID,
    blend,
    blend_scores,
    choose_demand,
    choose_risk,
    clear_gain,
    confirms,
    demand_forecasts,
    demand_scores,
    hedge_weight,
    keep_or_switch,
    linear_order,
    logit_blend,
    one_se_pick,
    origin_errors,
    refit_candidate,
    risk_validation,
    stratified_folds,
    stratified_tail,
    validation_split,
)
from tests.firm_support import tiny_firm


def _train() -> tuple[DemandWindows, object]:
    firm, *_ = tiny_firm("")
    train, _ = demand_windows(firm.data.demand, firm.spec, firm.tier)
    return train, firm.spec


def test_validation_split_leaves_a_gap_of_one_horizon() -> None:
    train, spec = _train()
    fit, tail = validation_split(train, 4, spec.horizon)
    first_tail = train.origin[tail].min()
    assert np.unique(train.origin[tail]).size == 4
    # every fit window's last target was observed at the tail's first origin
    assert np.all(train.origin[fit] + np.timedelta64(7 * spec.horizon, "D") <= first_tail)
    assert not np.any(fit & tail)


def test_no_windows_deploys_naive_and_too_few_falls_back_with_a_reason() -> None:
    train, spec = _train()
    empty = DemandWindows(*(getattr(train, f)[:0] for f in train.__dataclass_fields__))
    choice = choose_demand(empty, spec, None)
    assert choice.name == "naive" and "no training windows" in choice.reason
    few = DemandWindows(*(getattr(train, f)[:3] for f in train.__dataclass_fields__))
    glob = np.zeros((demand_design(train, spec)[0].shape[1], spec.horizon))
    fallback = choose_demand(few, spec, glob)
    assert fallback.name == "global" and "too few to validate" in fallback.reason
    assert choose_demand(few, spec, None).name == "local"


def test_the_choice_is_the_lowest_validation_wape_and_refits_on_all_windows() -> None:
    train, spec = _train()
    x, y = demand_design(train, spec)
    truth = ridge(x.T @ x, x.T @ y, spec.linear.ridge)
    choice = choose_demand(train, spec, truth)
    assert choice.validation[choice.name if choice.name != "adapted" else f"adapted@{choice.shrinkage:g}"] == min(
        choice.validation.values()
    )
    forecasts = demand_forecasts(choice, train, spec)
    assert forecasts.shape == train.targets.shape and np.all(forecasts >= 0)


def test_a_useless_global_model_is_not_deployed() -> None:
    train, spec = _train()
    x, _ = demand_design(train, spec)
    useless = np.full((x.shape[1], spec.horizon), -5.0)  # forecasts zero everywhere
    choice = choose_demand(train, spec, useless)
    assert choice.name != "global"


def test_risk_choice_is_the_lowest_validation_loss_and_falls_back() -> None:
    rng = np.random.default_rng(0)
    x = risk_design(rng.uniform(-1, 1, size=(300, 3)))
    truth = np.array([3.0, -2.0, 1.0, 0.0])
    y = (rng.random(300) < 1 / (1 + np.exp(-(x @ truth)))).astype(float)
    choice = choose_risk(x, y, truth, 1.0)
    key = choice.name if choice.name != "adapted" else f"adapted@{choice.shrinkage:g}"
    assert choice.validation[key] == min(choice.validation.values())
    assert choose_risk(x, y, -truth, 1.0).name != "global"  # a model pointing the wrong way is not deployed
    assert choose_risk(x[:0], y[:0], truth, 1.0).name == "global"
    one_class = choose_risk(x[:10], np.zeros(10), None, 1.0)
    assert one_class.name == "local" and "too few" in one_class.reason


def test_a_long_history_also_validates_on_last_years_season() -> None:
    train, spec = _train()
    origins = np.unique(train.origin)
    week = np.timedelta64(7, "D")
    fit, tail = validation_split(train, 4, spec.horizon, season=13)
    season_start = origins[-1] + week * spec.horizon - 52 * week
    tail_origins = np.unique(train.origin[tail])
    assert np.sum(tail_origins < origins[-4]) == 13  # the season a year before the next forecast
    assert tail_origins.min() == season_start
    assert np.all(train.origin[fit] + week * spec.horizon <= season_start)
    # without the season only the recent tail validates
    _, recent = validation_split(train, 4, spec.horizon)
    assert np.unique(train.origin[recent]).size == 4


def test_a_candidate_within_the_margin_does_not_replace_the_local_only_model() -> None:
    scores = {"local_mlp": 0.40, "global": 0.39, "adapted@10": 0.385}  # 3.75% better: within 5%
    assert keep_or_switch(scores, "local_mlp", 0.05) == "local_mlp"
    assert keep_or_switch(scores, "local_mlp", 0.03) == "adapted@10"  # beyond a 3% margin
    beyond = {"local_mlp": 0.40, "global": 0.30, "naive": 0.37}
    assert keep_or_switch(beyond, "local_mlp", 0.05) == "global"
    assert keep_or_switch({"local_mlp": 0.40, "global": 0.38}, "local_mlp", 0.05) == "local_mlp"  # exactly 5%
    assert keep_or_switch({"local_mlp": 0.40, "global": 0.0}, "local_mlp", 0.0) == "global"


def test_non_finite_scores_never_win_and_a_local_model_without_a_score_gives_way() -> None:
    assert keep_or_switch({"local_mlp": 0.40, "global": float("nan")}, "local_mlp", 0.05) == "local_mlp"
    assert keep_or_switch({"local_mlp": float("nan"), "global": 0.5}, "local_mlp", 0.05) == "global"
    assert keep_or_switch({"global": 0.5}, "local_mlp", 0.05) == "global"
    assert keep_or_switch({"local_mlp": float("inf")}, "local_mlp", 0.05) == "local_mlp"


def _risk_rows(n: int = 300) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = risk_design(rng.uniform(-1, 1, size=(n, 3)))
    truth = np.array([3.0, -2.0, 1.0, 0.0])
    y = (rng.random(n) < 1 / (1 + np.exp(-(x @ truth)))).astype(float)
    return x, y, truth


def test_risk_considers_the_local_only_model_and_keeps_it_unless_beaten_by_the_margin() -> None:
    x, y, truth = _risk_rows()
    tails: list[np.ndarray] = []
    reference = choose_risk(x, y, truth, 1.0)
    best = min(reference.validation.values())

    def barely_worse(tail: np.ndarray) -> float:
        tails.append(tail)
        return best * (1 + RISK_SWITCH_MARGIN / 2)  # the best logistic beats it by less than the margin

    kept = choose_risk(x, y, truth, 1.0, local_only=barely_worse)
    assert len(tails) == 1 and np.array_equal(tails[0], stratified_tail(y, 0.25))  # the candidates' tail
    assert kept.name == "local_only" and kept.coef is None and "local-only" in kept.reason
    assert kept.validation["local_only"] == pytest.approx(best * (1 + RISK_SWITCH_MARGIN / 2))
    switched = choose_risk(x, y, truth, 1.0, local_only=lambda cut: 2 * best)
    assert switched.name != "local_only" and switched.coef is not None
    key = switched.name if switched.name not in ("adapted",) else f"adapted@{switched.shrinkage:g}"
    assert switched.validation[key] == min(switched.validation.values())


def test_the_risk_tail_holds_the_last_quarter_of_each_class() -> None:
    y = np.array([0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0], dtype=float)
    tail = stratified_tail(y, 0.25)
    assert tail is not None
    assert np.flatnonzero(tail & (y == 1)).tolist() == [16]  # one of four positives: the last one
    assert np.flatnonzero(tail & (y == 0)).tolist() == [18, 19, 20, 21]  # 4 of the 18 negatives (4.5 rounded)
    assert stratified_tail(np.array([0, 0, 0, 1, 0, 0], dtype=float), 0.25) is None  # one positive: none to fit
    assert stratified_tail(np.zeros(8), 0.25) is None


def test_risk_with_few_events_in_its_tail_validates_on_folds_of_all_its_rows() -> None:
    x, y, truth = _risk_rows()
    rare = np.zeros_like(y)
    rare[[10, 50, 90, 130, 170, 210, 250, 290]] = 1.0  # 8 events: the last quarter holds 2
    masks: list[np.ndarray] = []

    def local_only(mask: np.ndarray) -> float:
        masks.append(mask)
        return 10.0  # a local-only model that validates badly

    switched = choose_risk(x, rare, truth, 1.0, local_only=local_only)
    assert len(masks) == RISK_FOLDS and f"{RISK_FOLDS} folds of all 300 training rows (8 positive)" in switched.reason
    assert np.array_equal(np.sum(masks, axis=0), np.ones(300))  # every row validated exactly once
    assert all(int(rare[mask].sum()) == 2 for mask in masks)
    assert switched.name != "local_only" and switched.validation["local_only"] == pytest.approx(10.0)
    kept = choose_risk(x, rare, truth, 1.0, local_only=lambda mask: 0.01)  # however few events, a better one stays
    assert kept.name == "local_only" and "no candidate beat" in kept.reason


def _never_fitted(mask: np.ndarray) -> float:
    raise AssertionError("a local-only fold was fitted although nothing could replace the local-only model")


def test_without_a_global_model_the_local_only_model_is_kept_and_no_fold_is_fitted() -> None:
    x, y, _ = _risk_rows()
    rare = np.zeros_like(y)
    rare[[10, 150, 290]] = 1.0  # 3 events
    for labels in (rare, y):  # few events or many: without a global model joining offers nothing to choose
        kept = choose_risk(x, labels, None, 1.0, local_only=_never_fitted)
        assert kept.name == "local_only" and kept.coef is None and "no global model" in kept.reason
        assert kept.validation == {}


def test_a_tail_with_fewer_than_min_tail_events_gives_way_to_folds_of_all_rows() -> None:
    rng = np.random.default_rng(3)
    y = np.zeros(400)
    y[np.sort(rng.choice(400, size=4 * (MIN_TAIL_EVENTS - 1), replace=False))] = 1.0  # the tail holds 9
    tail_events = int(y[stratified_tail(y, 0.25)].sum())
    assert MIN_VALIDATION_EVENTS <= tail_events < MIN_TAIL_EVENTS
    masks, rows = risk_validation(y, 0.25)
    assert len(masks) == RISK_FOLDS and "folds of all 400" in rows
    assert int(sum(y[mask].sum() for mask in masks)) == int(y.sum())  # every event judges
    y[np.flatnonzero(y == 0)[-200:][::20]] = 1.0  # 10 more recent events: the tail alone suffices
    masks, rows = risk_validation(y, 0.25)
    assert len(masks) == 1 and "the last 25%" in rows


def test_a_firm_with_too_few_events_of_its_own_deploys_the_global_model() -> None:
    x, _, truth = _risk_rows()
    for events in ([], [42], [10, 150, 290, 299]):  # below MIN_LOCAL_EVENTS: nothing to choose on
        y = np.zeros(len(x))
        y[events] = 1.0
        choice = choose_risk(x, y, truth, 1.0, local_only=lambda mask: 0.0)
        assert choice.name == "global" and np.array_equal(choice.coef, truth)
        assert f"hold {len(events)} event(s)" in choice.reason
    one_class = choose_risk(x[:10], np.zeros(10), None, 1.0, local_only=_never_fitted)  # and no global model
    assert one_class.name == "local_only" and "no global model" in one_class.reason


def test_stratified_folds_cut_each_class_in_date_order() -> None:
    y = np.array([0, 1, 0, 0, 1, 0, 1, 0, 0, 1], dtype=float)
    folds = stratified_folds(y, 2)
    assert [np.flatnonzero(f).tolist() for f in folds] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    assert risk_validation(np.array([0, 0, 0, 1, 0, 0], dtype=float), 0.25) is None  # one event: nothing to fold


def test_seasonal_naive_needs_the_margin_and_the_recent_confirmation() -> None:
    # the Walmart pilot's dept_1 (epsilon 8): naive won the tail reaching back a year (its local-only MLP fitted on
    # 67 windows), lost the recent tail (the MLP fitted on 108), and tested 1.32x the local-only WAPE when deployed
    seasonal = {"naive": 0.0944, "local": 0.2196, "adapted@10": 0.1714, "local_mlp": 0.2078}
    assert keep_or_switch(seasonal, "local_mlp", DEMAND_SWITCH_MARGIN) == "naive"
    assert keep_or_switch({"naive": 0.19, "local_mlp": 0.2078}, "local_mlp", DEMAND_SWITCH_MARGIN) == "local_mlp"
    recent = {"naive": 0.075, "local": 0.230, "local_mlp": 0.044}
    assert not confirms(recent, "naive", "local_mlp", DEMAND_SWITCH_MARGIN)
    assert confirms({"naive": 0.035, "local_mlp": 0.044}, "naive", "local_mlp", DEMAND_SWITCH_MARGIN)
    assert not confirms({"naive": 0.0396, "local_mlp": 0.044}, "naive", "local_mlp", DEMAND_SWITCH_MARGIN)  # 10% only
    assert not confirms({"naive": 0.01, "local_mlp": float("nan")}, "naive", "local_mlp", 0.1)
    assert not confirms({"local_mlp": 0.04}, "naive", "local_mlp", 0.1)


def test_demand_scores_fit_on_the_fit_windows_and_score_the_tail() -> None:
    train, spec = _train()
    fit, tail = validation_split(train, 4, spec.horizon)
    scores = demand_scores(train, spec, None, fit, tail)
    assert set(scores) == {"naive", "local"}
    x, y = demand_design(train, spec)
    coef = ridge(x[fit].T @ x[fit], x[fit].T @ y[fit], spec.linear.ridge)
    actual = train.actual[tail]
    level = train.features[tail, : spec.lags].astype(float).mean(axis=1)  # the window's level (all above the floor)
    assert np.all(level > 0.1)
    forecast = np.maximum(x[tail] @ coef, 0.0) * (train.scale[tail].astype(float) * level)[:, None]
    assert scores["local"] == pytest.approx(np.abs(forecast - actual).sum() / np.abs(actual).sum())


def test_clear_gain_needs_the_total_gain_beyond_z_standard_errors_of_the_paired_difference() -> None:
    incumbent = np.array([0.10, 0.10, 0.10, 0.10])
    steady = np.array([0.08, 0.08, 0.08, 0.09])  # gains 0.02, 0.02, 0.02, 0.01: total 0.07, sd 0.005 -> SE 0.01
    assert clear_gain(incumbent, steady)
    assert clear_gain(incumbent, steady, z=6.9) and not clear_gain(incumbent, steady, z=7.1)
    lucky = np.array([0.0, 0.11, 0.11, 0.11])  # one origin's gain of 0.10 against three losses of 0.01
    assert lucky.sum() < incumbent.sum() and not clear_gain(incumbent, lucky)  # total gain 0.07, 2 x sd 0.055 = 0.11
    assert not clear_gain(incumbent[:1], steady[:1])  # one unit: no spread to judge by
    assert not clear_gain(incumbent, np.array([0.08, np.nan, 0.08, 0.08]))
    assert not clear_gain(incumbent, steady[:3])  # not paired


def test_origin_errors_share_the_wape_among_origins() -> None:
    actual = np.array([[10.0, 10.0], [20.0, 20.0], [10.0, 10.0]])
    forecast = np.array([[12.0, 10.0], [20.0, 15.0], [10.0, 7.0]])
    origins = np.array(["2025-01-13", "2025-01-06", "2025-01-13"], dtype="datetime64[D]")
    shares = origin_errors(forecast, actual, origins)
    assert shares.tolist() == pytest.approx([5 / 80, 5 / 80])  # 2025-01-06: 5; 2025-01-13: 2 + 3
    assert shares.sum() == pytest.approx(np.abs(forecast - actual).sum() / actual.sum())


def test_a_blend_is_the_convex_combination_and_can_beat_both_models() -> None:
    actual = np.array([[10.0], [10.0]])
    high, low = np.array([[12.0], [12.0]]), np.array([[8.0], [8.0]])  # each 20% off, on opposite sides
    assert blend(high, low, 0.25).tolist() == [[9.0], [9.0]]
    scores = blend_scores(high, low, actual)
    assert scores == pytest.approx({"blend@0.25": 0.10, "blend@0.5": 0.0, "blend@0.75": 0.10})
    assert keep_or_switch({"local_mlp": 0.2, "global": 0.2, **scores}, "local_mlp", 0.1) == "blend@0.5"
    with pytest.raises(ValueError, match="blend weight"):
        blend(high, low, 1.5)


def test_refit_candidate_names_a_linear_candidate_and_its_shrinkage() -> None:
    train, spec = _train()
    x, y = demand_design(train, spec)
    glob = np.ones((x.shape[1], spec.horizon))
    local, alpha = refit_candidate("local", x, y, glob, spec)
    assert alpha is None and np.allclose(local, ridge(x.T @ x, x.T @ y, spec.linear.ridge))
    adapted, alpha = refit_candidate("adapted@30", x, y, glob, spec)
    assert alpha == 30.0 and np.allclose(adapted, ridge(x.T @ x, x.T @ y, 30.0, prior=glob))
    assert refit_candidate("global", x, y, glob, spec)[0] is glob
    with pytest.raises(ValueError, match="needs the global model"):
        refit_candidate("global", x, y, None, spec)


def test_one_se_pick_takes_the_most_shrunk_candidate_within_one_standard_error_of_the_best() -> None:
    order = linear_order(True)
    assert order[0] == "global" and order[-1] == "local" and order[1] == f"adapted@{max(SHRINKAGE_GRID):g}"
    assert linear_order(False) == ["local"]
    errors = {
        "global": np.array([0.050, 0.060, 0.040, 0.050]),  # 0.200: within the noise of the best
        "adapted@10": np.array([0.045, 0.045, 0.055, 0.045]),  # 0.190: the best
        "local": np.array([0.100, 0.100, 0.100, 0.100]),
    }
    assert one_se_pick(errors, order) == "global"
    errors["global"] = np.array([0.070, 0.070, 0.070, 0.070])  # 0.280: worse on every origin, clearly
    assert one_se_pick(errors, order) == "adapted@10"
    assert one_se_pick({"local": np.array([np.nan, 0.1])}, order) is None
    assert one_se_pick({}, order) is None


def test_hedge_weight_grows_from_the_margin_to_full_at_times_it_rounded_up() -> None:
    # margin 10%, full at 3 x: strength (gain - 0.1) / 0.2 rounded up to 0.25, 0.5, 0.75, 1
    assert hedge_weight(0.10, 0.10) == 0.25  # just past the margin: a quarter on the contender
    assert hedge_weight(0.135, 0.10) == 0.25  # seed 4's R1: 13.5% on its tail (strength 0.175)
    assert hedge_weight(0.151, 0.10) == 0.5  # strength 0.255
    assert hedge_weight(0.20, 0.10) == 0.5  # strength 0.5 exactly
    assert hedge_weight(0.26, 0.10) == 1.0  # strength 0.8
    assert hedge_weight(0.30, 0.10) == 1.0 and hedge_weight(0.9, 0.10) == 1.0
    assert hedge_weight(0.15, 0.10, full_at=2.0) == 0.5  # strength 0.5 with full_at 2
    with pytest.raises(ValueError, match="positive margin"):
        hedge_weight(0.2, 0.0)
    with pytest.raises(ValueError, match="full_at above 1"):
        hedge_weight(0.2, 0.1, full_at=1.0)


def test_logit_blend_averages_log_odds() -> None:
    local, partner = np.array([0.0, 2.0, -4.0]), np.array([2.0, 2.0, 0.0])
    assert np.allclose(logit_blend(local, partner, 0.5), 1 / (1 + np.exp(-np.array([1.0, 2.0, -2.0]))))
    assert np.allclose(logit_blend(local, partner, 1.0), 1 / (1 + np.exp(-local)))
    assert np.allclose(logit_blend(local, partner, 0.0), 1 / (1 + np.exp(-partner)))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        logit_blend(local, partner, 1.5)
