"""The linear family in a run: which families train, what a firm deploys, and the promise's checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from silobridge.clients.deploy import demand_statistics, deploy_demand, risk_statistics
from silobridge.clients.linear import demand_dim
from silobridge.clients.personalise import DEMAND_SWITCH_MARGIN
from silobridge.contract.sufficient import newton_size, regression_size
from silobridge.errors import ConfigError, ProtocolError
from silobridge.federation.coordinator import baseline_instruction
from silobridge.federation.linear_run import model_families
from silobridge.federation.settings import settings_from_run_config
from silobridge.federation.summary import acceptance_checks, risk_per_firm
from silobridge.federation.summary_schema import MIN_JUDGED_TEST_EVENTS
from tests.conftest import TINY
from tests.firm_support import tiny_firm


def _spec(overrides: str, dp: str = "on"):  # noqa: ANN202
    return settings_from_run_config({"scenario": str(TINY), "set": overrides, "dp": dp}).spec


def test_auto_trains_linear_under_record_dp_both_without_and_the_mlp_at_firm_level() -> None:
    assert model_families(_spec("")) == ("linear",)
    assert model_families(_spec("", dp="off")) == ("mlp", "linear")
    assert model_families(_spec("privacy.unit=firm")) == ("mlp",)
    assert model_families(_spec("training.model=mlp")) == ("mlp",)
    assert model_families(_spec("training.model=linear", dp="off")) == ("linear",)
    with pytest.raises(ConfigError, match="accounted per record"):
        model_families(_spec("training.model=linear;privacy.unit=firm"))


def test_a_firm_releases_statistics_of_the_agreed_shape() -> None:
    firm, _, _, norm = tiny_firm("")
    assert demand_statistics(firm).shape == (regression_size(demand_dim(firm.spec), firm.spec.horizon),)
    dim = len(firm.spec.data.risk_features) + 1
    assert risk_statistics(firm, norm, np.zeros(dim)).shape == (newton_size(dim),)
    with pytest.raises(ProtocolError, match="expected"):
        risk_statistics(firm, norm, np.zeros(dim + 1))


def test_a_firm_deploys_its_local_mlp_unless_a_candidate_beats_it_by_the_margin() -> None:
    firm, _, _, _ = tiny_firm("")
    settings = settings_from_run_config({"scenario": str(TINY)})
    instruction = baseline_instruction(settings)
    x_dim = demand_dim(firm.spec)
    useless = np.full((x_dim, firm.spec.horizon), -5.0)  # a global model forecasting zero
    deployment = deploy_demand(firm, instruction, useless)
    assert deployment.name != "global_linear"
    assert {"naive", "local", "global", "local_mlp"} <= set(deployment.validation)
    names = {"naive": "naive", "local_ridge": "local", "global_linear": "global", "local_mlp": "local_mlp"}
    local = deployment.validation["local_mlp"]
    if deployment.name == "blend":  # the local-only MLP blended with a linear contender (hedged or chosen)
        chosen = deployment.hedged_from or f"blend@{deployment.blend_weight:g}"
        assert deployment.validation[chosen] < (1 - DEMAND_SWITCH_MARGIN) * local
    else:
        chosen = names[deployment.name] if deployment.name in names else f"adapted@{deployment.shrinkage:g}"
    if chosen != "local_mlp" and deployment.name != "blend":
        assert deployment.validation[chosen] == min(deployment.validation.values())
        assert deployment.validation[chosen] < (1 - DEMAND_SWITCH_MARGIN) * local
    elif chosen == "local_mlp" and min(deployment.validation.values()) < (1 - DEMAND_SWITCH_MARGIN) * local:
        # won on the tail reaching back a year, not confirmed on the recent tail (the MLP fitted on more windows)
        best = min(deployment.validation, key=deployment.validation.__getitem__)
        assert "not on its" in deployment.reason
        assert deployment.recent[best] >= (1 - DEMAND_SWITCH_MARGIN) * deployment.recent["local_mlp"]
    test = firm.demand_split[1]
    forecasts = deployment.forecaster(test)
    assert forecasts.shape == test.targets.shape and np.all(forecasts >= 0)


def _table(deployed_small: float, local_small: float) -> dict:
    return {
        "demand": {
            "deployed": {"small": {"wape": deployed_small}},
            "local_only": {"small": {"wape": local_small}},
        }
    }


def test_acceptance_states_the_promise_and_is_honest_when_it_fails() -> None:
    per_firm = {"demand": {"worst_ratio": 1.01}, "risk": {"worst_difference": -0.02}}
    efficiency = {"chain": {"K": {"K_TFP": 1.05}}}
    checks = {c["name"]: c for c in acceptance_checks(_table(0.3, 0.6), per_firm, efficiency)}
    assert checks["demand: no firm's deployed WAPE above 1.02x its local-only"]["passed"] is True
    small = checks["demand: small firms' deployed WAPE at least 30% below local-only"]
    assert small["value"] == pytest.approx(0.5) and small["passed"] is True
    assert checks[RISK_CHECK]["passed"] is False
    assert checks["efficiency: chain K_TFP at least 1 with what firms deploy"]["passed"] is True
    failing = {c["name"]: c for c in acceptance_checks(_table(0.5, 0.6), {"demand": {"worst_ratio": 1.2}}, None)}
    assert failing["demand: no firm's deployed WAPE above 1.02x its local-only"]["passed"] is False
    assert failing["demand: small firms' deployed WAPE at least 30% below local-only"]["passed"] is False
    unknown = failing["efficiency: chain K_TFP at least 1 with what firms deploy"]
    assert math.isnan(unknown["value"]) and unknown["passed"] is None
    private = "demand: private deployed WAPE within 10% of the non-private deployed (all firms)"
    assert failing[private]["passed"] is None  # one run cannot judge it
    table = {"demand": {"deployed": {"all": {"wape": 0.33}}}}
    judged = {c["name"]: c for c in acceptance_checks(table, None, None, non_private_wape=0.30)}
    assert judged[private]["value"] == pytest.approx(1.1) and judged[private]["passed"] is True


RISK_CHECK = (
    f"risk: no firm with {MIN_JUDGED_TEST_EVENTS}+ test events has deployed ROC-AUC more than 0.01 below its local-only"
)


def _risk_row(firm: str, difference: float, test_events: int) -> dict:
    return {"firm": firm, "difference": difference, "test_events": test_events}


def test_the_risk_promise_is_judged_on_firms_with_enough_test_events_and_the_others_reported_apart() -> None:
    rows = [
        _risk_row("R1", -0.19, 1),  # one test event: its ROC-AUC is that row's rank
        _risk_row("R2", 0.02, MIN_JUDGED_TEST_EVENTS),
        _risk_row("M1", -0.005, 119),
        _risk_row("S1", math.nan, 0),  # one class in its test rows: no ROC-AUC at all
    ]
    risk = risk_per_firm(rows)
    assert risk["worst_difference"] == pytest.approx(-0.005)
    assert risk["few_test_events"] == {"R1": pytest.approx(-0.19)}
    assert risk["mean_difference"] == pytest.approx((-0.19 + 0.02 - 0.005) / 3)  # the mean is over every firm
    assert risk["min_test_events"] == MIN_JUDGED_TEST_EVENTS
    checks = {c["name"]: c for c in acceptance_checks(_table(0.3, 0.6), {"risk": risk}, None)}
    assert checks[RISK_CHECK]["passed"] is True
    rows[2] = _risk_row("M1", -0.02, 119)
    checks = {c["name"]: c for c in acceptance_checks(_table(0.3, 0.6), {"risk": risk_per_firm(rows)}, None)}
    assert checks[RISK_CHECK]["passed"] is False
    nobody = risk_per_firm([_risk_row("R1", -0.19, 1)])
    assert nobody["worst_difference"] is None  # no firm can be judged: the check says n/a, never "passed"
    checks = {c["name"]: c for c in acceptance_checks(_table(0.3, 0.6), {"risk": nobody}, None)}
    assert checks[RISK_CHECK]["passed"] is None
