"""A firm's own choice of what it deploys: backtest split, candidates, fallbacks."""

from __future__ import annotations

import numpy as np

from clients.features import DemandWindows, demand_windows
from clients.linear import demand_design, ridge, risk_design
from clients.personalise import choose_demand, choose_risk, demand_forecasts, validation_split
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
