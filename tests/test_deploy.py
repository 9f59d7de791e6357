"""A firm's deployment choice in full: the margin, and the confirmation on its most recent windows."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import expit

import silobridge.clients.deploy as deploy
from silobridge.clients.deploy import deploy_demand
from silobridge.clients.linear import demand_design, ridge, risk_design
from silobridge.clients.personalise import (
    DEMAND_SWITCH_MARGIN,
    RISK_HEDGE_WEIGHT,
    Choice,
    logit_blend,
    validation_split,
)
from silobridge.federation.coordinator import baseline_instruction
from silobridge.federation.deployment import NO_BASELINE, NO_GLOBAL_RISK, deploy_all, global_linear_stats
from silobridge.federation.firm_source import simulated_firm
from silobridge.federation.settings import settings_from_run_config
from tests.conftest import TINY
from tests.firm_support import tiny_firm


def _scripted_local_mlp(monkeypatch: pytest.MonkeyPatch, seasonal: float, recent: float) -> list[np.ndarray]:
    """Replace the local-only MLP's validation forecasts by the actuals x (1 + WAPE): WAPE `seasonal` on the tail
    reaching back a year, `recent` on the recent tail alone. Returns the tails it was scored on."""
    tails: list[np.ndarray] = []

    def forecasts(firm, instruction, train, split, global_mlp):  # noqa: ANN001, ANN202
        spec = firm.spec
        tails.append(split[1])
        full = validation_split(train, spec.linear.validation_periods, spec.horizon, spec.test_periods)
        error = seasonal if np.array_equal(split[1], full[1]) else recent
        return {"local_mlp": train.actual[split[1]] * (1.0 + error)}

    monkeypatch.setattr(deploy, "_mlp_forecasts", forecasts)
    return tails


def _setup():  # noqa: ANN202
    firm, *_ = tiny_firm("")
    instruction = baseline_instruction(settings_from_run_config({"scenario": str(TINY)}))
    spec, train = firm.spec, firm.demand_split[0]
    full = validation_split(train, spec.linear.validation_periods, spec.horizon, spec.test_periods)
    recent = validation_split(train, spec.linear.validation_periods, spec.horizon)
    assert not np.array_equal(full[1], recent[1])  # the tiny firm's history reaches back a year
    return firm, instruction


def test_a_switch_won_on_last_years_season_must_hold_on_the_recent_tail(monkeypatch: pytest.MonkeyPatch) -> None:
    firm, instruction = _setup()
    tails = _scripted_local_mlp(monkeypatch, seasonal=1e6, recent=1e-3)  # every candidate wins the seasonal tail
    kept = deploy_demand(firm, instruction, None)
    assert len(tails) == 2  # validated, then the switch was checked on the recent tail
    assert kept.name == "local_mlp" and "most recent" in kept.reason and "kept it" in kept.reason
    assert {"naive", "local", "local_mlp"} <= set(kept.recent) and kept.recent["local_mlp"] == pytest.approx(
        1e-3, rel=1e-3
    )


def test_a_switch_confirmed_on_the_recent_tail_is_deployed(monkeypatch: pytest.MonkeyPatch) -> None:
    firm, instruction = _setup()
    _scripted_local_mlp(monkeypatch, seasonal=1e6, recent=1e6)
    switched = deploy_demand(firm, instruction, None)
    assert switched.name in ("naive", "local_ridge") and "also on its" in switched.reason
    key = "naive" if switched.name == "naive" else "local"
    assert switched.recent[key] < (1 - DEMAND_SWITCH_MARGIN) * switched.recent["local_mlp"]
    test = firm.demand_split[1]
    assert switched.forecaster(test).shape == test.targets.shape


def test_no_confirmation_when_the_tail_is_recent_only(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_from_run_config({"scenario": str(TINY)})
    firm = simulated_firm(settings, settings.spec, 1, run_id=-8)  # R2: 40 weeks, too few for last year's season
    instruction = baseline_instruction(settings)
    spec, train = firm.spec, firm.demand_split[0]
    full = validation_split(train, spec.linear.validation_periods, spec.horizon, spec.test_periods)
    recent = validation_split(train, spec.linear.validation_periods, spec.horizon)
    assert np.array_equal(full[1], recent[1])
    tails = _scripted_local_mlp(monkeypatch, seasonal=1e6, recent=1e-3)
    deployment = deploy_demand(firm, instruction, None)
    assert deployment.name != "local_mlp" and len(tails) == 1 and deployment.recent == {}


def test_without_global_models_every_firm_still_deploys_and_says_why() -> None:
    firm, _, _, norm = tiny_firm("")
    assert firm.trains("demand") and firm.trains("risk")
    instruction = baseline_instruction(settings_from_run_config({"scenario": str(TINY)}))
    outcome = deploy_all([firm], {}, instruction, None, norm, {"demand": None, "risk": None})
    (demand,) = outcome.per_firm["demand"]
    (risk,) = outcome.per_firm["risk"]
    assert demand["firm"] == risk["firm"] == firm.firm_id and demand["group"] == firm.group
    assert demand["choice"] in ("local_mlp", "local_ridge", "naive", "blend") and demand["deployed_wape"] > 0
    assert demand["choice"] != "blend" or demand["blend_partner"] == "local"  # its own models only
    assert risk["choice"] in ("local_only", "local") and risk["reason"].startswith(NO_GLOBAL_RISK)
    assert 0.0 <= risk["deployed_roc_auc"] <= 1.0
    assert risk["test_events"] == int(firm.risk_split[1].labels.sum())  # the per-firm promise judges on these
    assert math.isnan(risk["local_only_roc_auc"]) and math.isnan(risk["difference"])  # no baselines given
    assert math.isnan(demand["ratio"])
    assert demand["no_baseline"] == risk["no_baseline"] == NO_BASELINE  # said, not claimed
    assert outcome.risk is not None and global_linear_stats([firm], norm, {"demand": None, "risk": None}) == {}


def test_a_blend_that_wins_clearly_is_deployed_and_recorded_with_its_weight_partner_and_reason(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    firm, _, _, norm = tiny_firm("")
    instruction = baseline_instruction(settings_from_run_config({"scenario": str(TINY)}))
    x, y = demand_design(firm.demand_split[0], firm.spec)
    glob = ridge(x.T @ x, x.T @ y, firm.spec.linear.ridge)

    def linear(train, spec, global_coef, fit, tail):  # noqa: ANN001, ANN202
        actual = train.actual[tail].astype(float)
        return {"naive": 2.0 * actual, "local": 0.8 * actual, "global": 0.8 * actual}  # each 20% low

    def mlp(firm, instruction, train, split, global_mlp):  # noqa: ANN001, ANN202
        return {"local_mlp": 1.2 * train.actual[split[1]].astype(float)}  # 20% high: the half-half blend is exact

    monkeypatch.setattr(deploy, "tail_forecasts", linear)
    monkeypatch.setattr(deploy, "_mlp_forecasts", mlp)
    outcome = deploy_all([firm], {}, instruction, None, norm, {"demand": glob})
    (row,) = outcome.per_firm["demand"]
    assert row["choice"] == "blend" and row["blend_weight"] == 0.5 and row["blend_partner"] == "global"
    assert "0.5 x its local-only MLP + 0.5 x global" in row["reason"] and "also on its" in row["reason"]
    assert row["validation"]["blend@0.5"] == pytest.approx(0.0, abs=1e-6) and row["deployed_wape"] > 0
    assert row["recent_validation"]["blend@0.5"] == pytest.approx(0.0, abs=1e-6)


def test_a_gain_within_the_paired_noise_keeps_the_local_only_model(monkeypatch: pytest.MonkeyPatch) -> None:
    firm, instruction = _setup()

    def linear(train, spec, global_coef, fit, tail):  # noqa: ANN001, ANN202
        actual = train.actual[tail].astype(float)
        lucky = 1.5 * actual  # naive: 50% off on every origin but the first, exact there
        lucky[train.origin[tail] == train.origin[tail].min()] = actual[train.origin[tail] == train.origin[tail].min()]
        return {"naive": lucky, "local": 3.0 * actual}

    def mlp(firm, instruction, train, split, global_mlp):  # noqa: ANN001, ANN202
        actual = train.actual[split[1]].astype(float)
        worse = 1.45 * actual  # the local-only MLP: 45% off (better than naive) on every origin but the first...
        worse[train.origin[split[1]] == train.origin[split[1]].min()] *= 40.0  # ...where it is 57x off: its whole loss
        return {"local_mlp": worse}

    monkeypatch.setattr(deploy, "tail_forecasts", linear)
    monkeypatch.setattr(deploy, "_mlp_forecasts", mlp)
    kept = deploy_demand(firm, instruction, None)
    assert kept.validation["naive"] < (1 - DEMAND_SWITCH_MARGIN) * kept.validation["local_mlp"]
    assert kept.name == "local_mlp" and "standard error" in kept.reason


def _scripted_switch(monkeypatch: pytest.MonkeyPatch, global_error: float, mlp_error: float):  # noqa: ANN202
    """Every tail: the global linear model off by `global_error` and the local-only MLP by `mlp_error` on every
    window (both high, so their blends lie between them), the other candidates far off."""

    def linear(train, spec, global_coef, fit, tail):  # noqa: ANN001, ANN202
        actual = train.actual[tail].astype(float)
        return {"naive": 3.0 * actual, "local": 3.0 * actual, "global": (1.0 + global_error) * actual}

    def mlp(firm, instruction, train, split, global_mlp):  # noqa: ANN001, ANN202
        return {"local_mlp": (1.0 + mlp_error) * train.actual[split[1]].astype(float)}

    monkeypatch.setattr(deploy, "tail_forecasts", linear)
    monkeypatch.setattr(deploy, "_mlp_forecasts", mlp)


def test_a_switch_won_by_a_modest_margin_is_hedged_with_the_local_only_mlp(monkeypatch: pytest.MonkeyPatch) -> None:
    firm, _, _, norm = tiny_firm("")
    instruction = baseline_instruction(settings_from_run_config({"scenario": str(TINY)}))
    x, y = demand_design(firm.demand_split[0], firm.spec)
    glob = ridge(x.T @ x, x.T @ y, firm.spec.linear.ridge)
    _scripted_switch(monkeypatch, global_error=0.26, mlp_error=0.30)  # global 13% better: past the 10% margin only
    (row,) = deploy_all([firm], {}, instruction, None, norm, {"demand": glob}).per_firm["demand"]
    assert row["choice"] == "blend" and row["hedged_from"] == "global" and row["blend_partner"] == "global"
    assert row["blend_weight"] == 0.75  # hedge_weight(0.133, 0.10) = 0.25 on the global model
    assert "hedged: 0.75 x its local-only MLP + 0.25 x global" in row["reason"]


def test_a_switch_won_by_a_wide_margin_is_deployed_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    firm, _, _, norm = tiny_firm("")
    instruction = baseline_instruction(settings_from_run_config({"scenario": str(TINY)}))
    x, y = demand_design(firm.demand_split[0], firm.spec)
    glob = ridge(x.T @ x, x.T @ y, firm.spec.linear.ridge)
    _scripted_switch(monkeypatch, global_error=0.10, mlp_error=0.30)  # 67% better: beyond 3 x the margin
    (row,) = deploy_all([firm], {}, instruction, None, norm, {"demand": glob}).per_firm["demand"]
    assert row["choice"] == "global_linear" and "hedged_from" not in row and "blend_weight" not in row


def test_a_validated_risk_switch_of_a_firm_with_enough_events_is_hedged_in_log_odds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    firm, _, _, norm = tiny_firm("")
    instruction = baseline_instruction(settings_from_run_config({"scenario": str(TINY)}))
    x, y = deploy.risk_training(firm, norm)
    events = int(y.sum())
    coef = np.linspace(-0.5, 0.5, x.shape[1])
    switched = Choice("global", coef, "lowest log loss", validation={"local_only": 0.3, "global": 0.2})
    monkeypatch.setattr(deploy, "choose_risk", lambda *args, **kwargs: switched)
    monkeypatch.setattr(deploy, "RISK_HEDGE_EVENTS", events)  # the tiny firm's rows hold this many events
    deployed = deploy.deploy_risk(firm, norm, coef, instruction)
    assert deployed.choice.hedge == RISK_HEDGE_WEIGHT and "hedged" in deployed.choice.reason
    features = firm.risk_split[1].features
    model, own = firm.local_risk_model(instruction)
    local = np.asarray(deploy.predict(model, own.apply(features), device=firm.device), dtype=float)
    chosen = risk_design(norm.apply(features)) @ coef
    assert np.allclose(deployed.predict(features), logit_blend(local, chosen, RISK_HEDGE_WEIGHT))
    monkeypatch.setattr(deploy, "RISK_HEDGE_EVENTS", events + 1)  # one event fewer than it asks: not hedged
    alone = deploy.deploy_risk(firm, norm, coef, instruction)
    assert alone.choice.hedge is None and np.allclose(alone.predict(features), expit(chosen))
