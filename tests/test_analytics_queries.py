"""Federated analytics queries against the same computation on the pooled data (every firm's table concatenated).

Without noise the sum-based queries are exact (1e-9 relative), through a plain sum and through the
real SecAgg protocol in memory. With DP (fixed seed) each answer is within a tolerance derived from
the noise the engine added (5 standard deviations of what that noise does to the answer). Also:
clipping is counted, malformed parameters and steps are refused naming the field, and a query that
would overspend is refused before any firm is contacted.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import dp_accounting as dpa
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from silobridge.clients.data import FirmData
from silobridge.clients.query_answers import LOCAL_HALVES, answer_step
from silobridge.contract.config import AggregationSpec
from silobridge.contract.query_protocol import QueryStep
from silobridge.errors import BudgetExhausted, ConfigError, FederationError, ProtocolError
from silobridge.federation.query_run import SecAggSumStep, plain_sum_step
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.privacy.dp import Budget, epsilon
from silobridge.privacy.dp.codec import event_from_json
from silobridge.privacy.ledger import PrivacyRun, verify_ledger
from silobridge.scenarios.generator import ChainData
from silobridge.scenarios.schema import Scenario
from silobridge.server.query_plans import PLANS, build_plan
from silobridge.server.query_plans.engine import (
    QueryEngine,
    QueryPrivacy,
    StepSum,
    calibrate_query_noise,
    query_accounting,
)
from silobridge.server.query_plans.histogram import histogram_quantiles
from silobridge.server.query_plans.regression import Normal, integrate, transform
from silobridge.server.secure_sum import resolve_aggregation
from tests.analytics_support import REGRESSION, RTOL, UNITS, pooled, pooled_ar, ridge_fit, tiny_firms


@pytest.fixture(scope="module")
def firms(tiny_scenario: Scenario, tiny_chain: ChainData) -> list[FirmData]:
    return tiny_firms(tiny_scenario, tiny_chain)


def _run(firms: list[FirmData], name: str, params: dict[str, Any], *, secure: bool = False) -> dict[str, Any]:
    if secure:
        agg = resolve_aggregation(AggregationSpec(), len(firms))
        sum_step = SecAggSumStep(firms, agg)
    else:
        sum_step = plain_sum_step(firms)
    engine = QueryEngine(sum_step, [f.firm_id for f in firms])
    return engine.run(build_plan(name, params, GENERATED_SCHEMA)).answer


def test_every_query_has_both_halves() -> None:
    assert set(PLANS) == set(LOCAL_HALVES)


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secagg"])
def test_moments_equal_pooled(firms: list[FirmData], secure: bool) -> None:
    units = pooled(firms, "demand", "units")
    distance = np.clip(pooled(firms, "risk", "distance_km"), 0, 200)  # the range clips some values
    assert np.max(pooled(firms, "risk", "distance_km")) > 200
    count = _run(firms, "count", {"table": "risk"}, secure=secure)
    assert count["count"] == distance.size and count["firms"] == 5
    total = _run(firms, "sum", {"table": "risk", "column": "distance_km", "low": 0, "high": 200}, secure=secure)
    assert np.isclose(total["sum"], distance.sum(), rtol=RTOL, atol=0)
    mean = _run(firms, "mean", UNITS, secure=secure)
    assert mean["count"] == units.size
    assert np.isclose(mean["mean"], units.mean(), rtol=RTOL, atol=0)
    variance = _run(firms, "variance", UNITS, secure=secure)
    assert np.isclose(variance["variance"], units.var(ddof=1), rtol=RTOL, atol=0)
    assert np.isclose(variance["std"], units.std(ddof=1), rtol=RTOL, atol=0)


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secagg"])
def test_histogram_and_quantiles_equal_pooled(firms: list[FirmData], secure: bool) -> None:
    price = pooled(firms, "demand", "price")
    edges = [2.0, 5.0, 10.0, 15.0, 18.0]  # both outer edges clip: outside values count in the outer bins
    answer = _run(firms, "histogram", {"column": "price", "edges": edges}, secure=secure)
    expected, _ = np.histogram(np.clip(price, edges[0], edges[-1]), bins=edges)
    assert answer["counts"] == expected.astype(float).tolist()
    assert answer["total"] == price.size

    units = pooled(firms, "demand", "units")
    probs = [0.1, 0.25, 0.5, 0.9, 1.0]
    params = {**UNITS, "bins": 500, "probs": probs}
    answer = _run(firms, "quantiles", params, secure=secure)
    edges_q = np.linspace(0, 5000, 501)
    counts, _ = np.histogram(units, bins=edges_q)
    reference = histogram_quantiles(counts, edges_q, probs)
    width = answer["bin_width"]
    assert width == 10.0
    for p, ref in zip(probs, reference, strict=True):
        value = answer["quantiles"][f"{p:g}"]
        assert value == pytest.approx(ref, rel=RTOL)
        # the stated error bound: within one bin of the pooled data's own quantile
        assert abs(value - np.quantile(units, p, method="inverted_cdf")) <= width


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secagg"])
def test_linear_regression_equals_pooled(firms: list[FirmData], secure: bool) -> None:
    answer = _run(firms, "linear_regression", REGRESSION, secure=secure)
    x = np.column_stack([pooled(firms, "demand", c) for c in REGRESSION["features"]])
    y = pooled(firms, "demand", "units")
    beta = ridge_fit(x, y, 1e-9)
    got = np.array([answer["intercept"], *answer["coefficients"].values()])
    assert np.allclose(got, beta, rtol=RTOL, atol=0)
    assert answer["rows"] == y.size
    residual = y - np.column_stack([np.ones(y.size), x]) @ beta
    assert np.isclose(answer["r2"], 1 - residual @ residual / np.sum((y - y.mean()) ** 2), rtol=1e-7)
    # and the ridge is only a stabiliser: ordinary least squares agrees to far better than the noise
    ols, *_ = np.linalg.lstsq(np.column_stack([np.ones(y.size), x]), y, rcond=None)
    assert np.allclose(got, ols, rtol=1e-5)


def test_a_stated_ridge_is_the_pooled_ridge_on_the_data_s_columns(firms: list[FirmData]) -> None:
    """The solve runs on standardised columns; the stated lambda (on the data's coefficients) is carried over
    exactly, so a large ridge still gives the pooled ridge fit and not a fit shrunk on another scale."""
    answer = _run(firms, "linear_regression", {**REGRESSION, "ridge": 0.5})
    x = np.column_stack([pooled(firms, "demand", c) for c in REGRESSION["features"]])
    y = pooled(firms, "demand", "units")
    beta = ridge_fit(x, y, 0.5)
    assert not np.allclose(beta, ridge_fit(x, y, 1e-9), rtol=1e-3)  # the ridge really shrinks
    assert np.allclose([answer["intercept"], *answer["coefficients"].values()], beta, rtol=1e-9, atol=0)


def test_standardised_statistics_map_back_to_the_data_s() -> None:
    """Known values: x = centre + half z for the features, y = c + h v, so X^T X = M^T Z^T Z M and so on."""
    z = np.array([[1.0, -1.0, 0.5], [1.0, 0.0, 1.0], [1.0, 1.0, -0.5]])
    v = np.array([-1.0, 0.2, 0.6])
    centres, halves = np.array([0.0, 25.0, 0.5]), np.array([1.0, 25.0, 0.5])
    x = np.column_stack([np.ones(3), 25 + 25 * z[:, 1], 0.5 + 0.5 * z[:, 2]])
    y = 2500 + 2500 * v
    assert np.allclose(transform(centres, halves), [[1, 25, 0.5], [0, 25, 0], [0, 0, 0.5]])
    standard = Normal(z.T @ z, z.T @ v, float(v @ v))
    data = standard.unstandardised(centres, halves, 2500.0, 2500.0)
    assert np.allclose(data.xtx, x.T @ x) and np.allclose(data.xty, x.T @ y) and np.isclose(data.yty, y @ y)


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secagg"])
def test_autoregression_equals_pooled(firms: list[FirmData], secure: bool) -> None:
    lags, horizon = 3, 5
    answer = _run(firms, "autoregression", {"lags": lags, "horizon": horizon, "high": 5000}, secure=secure)
    x, y, series = pooled_ar(firms, lags)
    beta = ridge_fit(x, y, 1e-9)
    got = np.array([answer["intercept"], *answer["coefficients"].values()])
    assert np.allclose(got, beta, rtol=RTOL, atol=0)
    assert answer["rows"] == y.size and answer["series"] == len(series)
    # forecast each series with the pooled coefficients, then add them up
    total = np.zeros(horizon)
    for s in series:
        window = list(s[::-1][:lags])
        for h in range(horizon):
            value = beta[0] + np.dot(beta[1:], window)
            total[h] += value
            window = [value, *window[:-1]]
    assert np.allclose(answer["forecast_total"], total, rtol=RTOL, atol=0)


@pytest.mark.parametrize("secure", [False, True], ids=["plain", "secagg"])
def test_arima_with_one_difference_equals_pooled(firms: list[FirmData], secure: bool) -> None:
    """ARIMA(p, 1, 0): AR(p) on every series' first differences, the forecast integrated back to levels."""
    lags, horizon = 2, 4
    params = {"lags": lags, "horizon": horizon, "high": 5000, "differences": 1}
    answer = _run(firms, "autoregression", params, secure=secure)
    _, _, series = pooled_ar(firms, lags)
    rows, targets = [], []
    for s in series:
        diff = np.diff(s)
        for t in range(lags, diff.size):
            rows.append(diff[t - lags : t][::-1])
            targets.append(diff[t])
    beta = ridge_fit(np.array(rows), np.array(targets), 1e-9)
    got = np.array([answer["intercept"], *answer["coefficients"].values()])
    assert np.allclose(got, beta, rtol=RTOL, atol=0)
    assert answer["rows"] == len(targets) and answer["series"] == len(series) and answer["differences"] == 1
    # forecast each series' differences with the pooled coefficients, integrate from its last level, add up
    total, total_diff = np.zeros(horizon), np.zeros(horizon)
    for s in series:
        window, level = list(np.diff(s)[::-1][:lags]), s[-1]
        for h in range(horizon):
            step = beta[0] + np.dot(beta[1:], window)
            level += step
            total_diff[h] += step
            total[h] += level
            window = [step, *window[:-1]]
    assert np.allclose(answer["forecast_differenced"], total_diff, rtol=RTOL, atol=1e-6)
    assert np.allclose(answer["forecast_total"], total, rtol=RTOL, atol=0)
    # differencing really changed the model: plain AR(p) on the levels forecasts something else
    levels = _run(firms, "autoregression", {**params, "differences": 0})
    assert not np.allclose(levels["forecast_total"], total, rtol=1e-3)


def test_integration_inverts_differencing_twice() -> None:
    """d = 2: the integrated forecast of second differences continues the levels exactly."""
    y = np.array([3.0, 5.0, 10.0, 12.0, 20.0, 21.0, 30.0])
    seen, future = y[:4], y[4:]
    assert np.allclose(integrate(list(np.diff(y, n=2)[2:]), seen[::-1][:2]), future, rtol=0, atol=1e-12)


def test_clipping_is_counted(firms: list[FirmData]) -> None:
    """A public row bound below what firms hold clips their counts to it, and says how many entries."""
    engine = QueryEngine(plain_sum_step(firms), [f.firm_id for f in firms])
    outcome = engine.run(build_plan("count", {"table": "demand", "max_rows": 100}, GENERATED_SCHEMA))
    sizes = [len(f.demand) for f in firms]
    assert outcome.answer["count"] == sum(min(n, 100) for n in sizes)
    assert outcome.steps[0].clipped == sum(n > 100 for n in sizes) > 0
    secure = QueryEngine(
        SecAggSumStep(firms, resolve_aggregation(AggregationSpec(), len(firms))), [f.firm_id for f in firms]
    )
    assert secure.run(build_plan("count", {"max_rows": 100}, GENERATED_SCHEMA)).steps[0].clipped == sum(
        n > 100 for n in sizes
    )
    unclipped = engine.run(build_plan("count", {"table": "demand"}, GENERATED_SCHEMA))
    assert unclipped.steps[0].clipped == 0


@pytest.mark.parametrize(
    ("name", "params", "field"),
    [
        ("mean", {"column": "nope", "low": 0, "high": 1}, "params.column"),
        ("mean", {"column": "units", "low": 5, "high": 1}, "params.high"),
        ("mean", {"column": "units", "low": 0}, "params.high"),
        ("mean", {"column": "units", "low": 0, "high": 1, "colour": "red"}, "params.colour"),
        ("count", {"table": "orders"}, "params.table"),
        ("histogram", {"column": "price", "edges": [3, 2]}, "params.edges"),
        ("quantiles", {**UNITS, "probs": [0.5, 1.5]}, "params.probs"),
        ("quantiles", {**UNITS, "bins": 1}, "params.bins"),
        ("linear_regression", {**REGRESSION, "features": ["units"]}, "params.features"),
        ("linear_regression", {**REGRESSION, "ranges": {"units": [0, 1]}}, "params.ranges"),
        ("linear_regression", {**REGRESSION, "features": ["price", "colour"]}, "params.ranges"),
        ("linear_regression", {**REGRESSION, "target": "disrupted"}, "params.ranges"),
        ("autoregression", {"lags": 0, "high": 10}, "params.lags"),
        ("autoregression", {"lags": 2}, "params.high"),
        ("autoregression", {"high": 10, "differences": 3}, "params.differences"),
    ],
)
def test_malformed_parameters_name_the_field(name: str, params: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_plan(name, params, GENERATED_SCHEMA)
    assert caught.value.field == field
    assert f"field '{field}'" in str(caught.value)


def test_feature_outside_the_schema_names_its_position() -> None:
    params = {**REGRESSION, "features": ["price", "colour"], "ranges": {**REGRESSION["ranges"], "colour": [0, 1]}}
    params["ranges"].pop("promotion")
    params["ranges"].pop("holiday")
    with pytest.raises(
        ConfigError, match="column 'colour' is not a numeric column of the federation's demand"
    ) as caught:
        build_plan("linear_regression", params, GENERATED_SCHEMA)
    assert caught.value.field == "params.features.1"


def test_unknown_query_is_refused() -> None:
    with pytest.raises(ConfigError, match="unknown query 'median'") as caught:
        build_plan("median", {}, GENERATED_SCHEMA)
    assert caught.value.field == "query"


def test_malformed_steps_are_refused_by_the_firm(firms: list[FirmData]) -> None:
    firm = firms[0]
    with pytest.raises(ProtocolError, match="field 'length'"):
        QueryStep.from_config({"query": "mean", "step": 0, "length": 0, "value_bound": 1, "l2_bound": 1}, firm="R1")
    with pytest.raises(ProtocolError, match="field 'params_json'"):
        QueryStep.from_config(
            {"query": "mean", "step": 0, "length": 2, "value_bound": 1, "l2_bound": 1, "params_json": "[1]"}
        )
    no_column = QueryStep.build("mean", 0, length=2, value_bound=1, l2_bound=2, params={"low": 0, "high": 1})
    with pytest.raises(ProtocolError, match="firm 'R1'.*field 'params.column'"):
        answer_step(no_column, firm)
    wrong_length = QueryStep.build("mean", 0, length=3, value_bound=1, l2_bound=2, params=UNITS)
    with pytest.raises(ProtocolError, match="local vector has 2 entries, expected 3"):
        answer_step(wrong_length, firm)
    unknown = QueryStep.build("median", 0, length=1, value_bound=1, l2_bound=1, params={})
    with pytest.raises(ProtocolError, match="unknown query 'median'"):
        answer_step(unknown, firm)


def _ledger(tmp_path: Path, budget: Budget, unit: str = "record") -> PrivacyRun:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return PrivacyRun.start(
        tmp_path / "ledger.jsonl",
        run_id="analytics-test",
        config_sha256="0" * 64,
        budget=budget,
        signing_key=Ed25519PrivateKey.generate(),
        spec=query_accounting(unit=unit),
    )


def test_firm_level_dp_answers_within_the_noise_tolerance_and_ledger_audits(
    firms: list[FirmData], tmp_path: Path
) -> None:
    """Unit firm: large epsilon so the tolerance means something with five firms; 5 sigma of the noise added."""
    budget = Budget(epsilon=2000.0, delta=1e-5)
    z = calibrate_query_noise(4, budget, query_accounting(unit="firm"))  # mean, linear regression, AR (2)
    ledger = _ledger(tmp_path, budget, unit="firm")
    rows = 2000  # every firm's demand table fits: nothing is clipped
    engine = QueryEngine(
        plain_sum_step(firms),
        [f.firm_id for f in firms],
        privacy=QueryPrivacy(ledger, z, np.random.default_rng(3), unit="firm"),
    )
    units = pooled(firms, "demand", "units")

    def build(name: str, params: dict[str, Any]) -> Any:
        return build_plan(name, params, GENERATED_SCHEMA, noise_multiplier=z, unit="firm")

    mean = engine.run(build("mean", {**UNITS, "max_rows": rows}))
    sigma = z * math.hypot(0.25, 1.0)  # per entry of the scaled vector [0.25 n / rows, sum / (rows M)]
    sigma_n, sigma_sum = sigma * rows / 0.25, sigma * rows * 5000
    assert mean.answer["noise_std"]["count"] == pytest.approx(sigma_n)
    assert mean.answer["noise_std"]["sum"] == pytest.approx(sigma_sum)
    assert abs(mean.answer["count"] - units.size) <= 5 * sigma_n + 0.5
    n_low = units.size - 5 * sigma_n
    assert abs(mean.answer["mean"] - units.mean()) <= (5 * sigma_sum + units.mean() * 5 * sigma_n) / n_low
    assert mean.answer["count"] != units.size  # the noise is really there
    assert mean.steps[0].noise_std == pytest.approx(sigma)
    assert mean.epsilon == pytest.approx(epsilon([ledger_event(ledger, 0)], 1e-5, query_accounting(unit="firm")))
    assert mean.to_dict()["privacy"]["unit"] == "firm" and "whole contribution" in mean.neighbours

    regression = engine.run(build("linear_regression", {**REGRESSION, "max_rows": rows}))
    sigma_rows = z * regression.steps[0].l2_bound * rows  # the noise on X^T X [0, 0], the row count
    assert regression.steps[0].noise_std == pytest.approx(z * math.sqrt(4 * 4 + 4 + 1))
    assert 0 < abs(regression.answer["rows"] - units.size) <= 5 * sigma_rows + 0.5
    assert all(math.isfinite(c) for c in regression.answer["coefficients"].values())

    ar_params = {"lags": 2, "high": 5000, "max_rows": rows, "max_series": 30}
    ar = engine.run(build("autoregression", ar_params))
    series = sum(f.demand["series"].nunique() for f in firms)
    assert len(ar.steps) == 2 and abs(ar.answer["series"] - series) <= 5 * z * math.sqrt(3) * 30 + 0.5
    ledger.close()
    report = verify_ledger(ledger.path)
    assert report.within_budget
    assert [r.release_id for r in report.releases] == [
        "query-1/mean/step-0",
        "query-2/linear_regression/step-0",
        "query-3/autoregression/step-0",
        "query-3/autoregression/step-1",
    ]
    assert report.epsilon_overall == pytest.approx(ar.epsilon_total)
    assert ar.epsilon_total <= budget.epsilon


def ledger_event(ledger: PrivacyRun, release: int) -> Any:
    lines = [json.loads(line) for line in ledger.path.read_text().splitlines()]
    return event_from_json([e for e in lines if e["kind"] == "release"][release]["event"])


def test_linear_regression_tolerance_follows_the_noise(firms: list[FirmData], tmp_path: Path) -> None:
    """Coefficient error shrinks with the noise: ten times less noise, ten times closer (on average)."""
    exact = _run(firms, "linear_regression", {**REGRESSION, "max_rows": 2000})
    errors = []
    for z in (1e-2, 1e-3):
        deviations = []
        for seed in range(5):
            ledger = _ledger(tmp_path / f"{z}-{seed}", Budget(1e9, 1e-5))
            engine = QueryEngine(
                plain_sum_step(firms),
                [f.firm_id for f in firms],
                privacy=QueryPrivacy(ledger, z, np.random.default_rng(seed)),
            )
            answer = engine.run(
                build_plan("linear_regression", {**REGRESSION, "max_rows": 2000}, GENERATED_SCHEMA)
            ).answer
            deviations.append(abs(answer["coefficients"]["price"] - exact["coefficients"]["price"]))
        errors.append(np.mean(deviations))
    assert errors[1] < errors[0] / 3


def test_overspending_query_is_refused_before_any_firm_is_asked(firms: list[FirmData], tmp_path: Path) -> None:
    asked: list[QueryStep] = []
    inner = plain_sum_step(firms)

    def counting(step: QueryStep) -> StepSum:
        asked.append(step)
        return inner(step)

    ledger = _ledger(tmp_path, Budget(epsilon=1.0, delta=1e-5))
    engine = QueryEngine(counting, [f.firm_id for f in firms], privacy=QueryPrivacy(ledger, 2.0))
    with pytest.raises(BudgetExhausted, match=r"query 'count' \(1 release\(s\) at noise multiplier 2\) refused"):
        engine.run(build_plan("count", {}, GENERATED_SCHEMA))  # z = 2 once spends more than 1 at delta 1e-5
    assert asked == []
    ledger.close()
    report = verify_ledger(ledger.path)
    assert not report.releases and len(report.refusals) == 1 and report.epsilon_overall == 0


def test_budget_refusal_names_spent_and_asked(firms: list[FirmData], tmp_path: Path) -> None:
    asked: list[QueryStep] = []
    inner = plain_sum_step(firms)

    def counting(step: QueryStep) -> StepSum:
        asked.append(step)
        return inner(step)

    budget = Budget(epsilon=3.0, delta=1e-5)
    ledger = _ledger(tmp_path, budget)
    z = calibrate_query_noise(1, budget)
    engine = QueryEngine(counting, [f.firm_id for f in firms], privacy=QueryPrivacy(ledger, z))
    first = engine.run(build_plan("count", {}, GENERATED_SCHEMA))
    assert first.epsilon_total == pytest.approx(budget.epsilon, abs=0.01) and len(asked) == 1
    with pytest.raises(BudgetExhausted) as caught:
        engine.run(build_plan("autoregression", {"high": 5000}, GENERATED_SCHEMA))
    message = str(caught.value)
    assert "query 'autoregression' (2 release(s)" in message
    alone = epsilon([dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(z), 2)], 1e-5, query_accounting())
    assert f"spent {first.epsilon_total:.6g} of the budget 3 at delta 1e-05" in message
    assert f"this query alone asks {alone:.6g}" in message
    assert len(asked) == 1  # no firm was asked anything for the refused query
    ledger.close()
    report = verify_ledger(ledger.path)
    assert len(report.releases) == 1 and len(report.refusals) == 1 and report.within_budget


def test_plan_asking_beyond_its_planned_steps_is_stopped(firms: list[FirmData]) -> None:
    class Greedy:
        name = "greedy"
        planned_steps = 1

        def first(self) -> QueryStep:
            return QueryStep.build("count", 0, length=1, value_bound=1, l2_bound=1, params={})

        def next(self, total: np.ndarray, contributors: int) -> QueryStep | None:
            return QueryStep.build("count", 1, length=1, value_bound=1, l2_bound=1, params={})

        def result(self) -> dict[str, Any]:
            return {}

    engine = QueryEngine(plain_sum_step(firms), [f.firm_id for f in firms])
    with pytest.raises(FederationError, match="beyond its 1 planned steps"):
        engine.run(Greedy())
