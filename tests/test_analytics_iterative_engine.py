"""The iterative queries under the query engine: the same answers as the test driver, planned steps honoured,
and the engine's calibrated noise multiplier handed to the plans whose DP thresholds depend on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from silobridge.clients.data import FirmData
from silobridge.federation.query_run import (
    QueryBudget,
    QueryRequest,
    noised_plans,
    plain_sum_step,
    with_scenario_defaults,
)
from silobridge.federation.settings import GENERATED_SCHEMA, settings_from_run_config
from silobridge.privacy.dp import Budget
from silobridge.privacy.ledger import PrivacyRun, verify_ledger
from silobridge.scenarios.generator import ChainData, catalogue_items
from silobridge.scenarios.schema import Scenario
from silobridge.server.query_plans import apriori, build_plan
from silobridge.server.query_plans.engine import QueryEngine, QueryPrivacy, calibrate_query_noise, query_accounting
from tests.analytics_support import drive, tiny_firms
from tests.conftest import TINY

ITERATIVE: dict[str, dict[str, Any]] = {
    "logistic_regression": {"max_records": 200, "max_iterations": 6},
    "kmeans": {"k": 3, "max_iterations": 5},
    "frequent_itemsets": {"items": [f"item{i:03d}" for i in range(1, 7)], "min_support": 60.5},
    "anomaly_detection": {"trees": 8, "depth": 4, "max_records": 500},
}


@pytest.fixture(scope="module")
def firms(tiny_scenario: Scenario, tiny_chain: ChainData) -> list[FirmData]:
    return tiny_firms(tiny_scenario, tiny_chain)


@pytest.mark.parametrize("name", sorted(ITERATIVE))
def test_engine_answers_equal_the_driver(firms: list[FirmData], name: str) -> None:
    engine = QueryEngine(plain_sum_step(firms), [f.firm_id for f in firms])
    plan = build_plan(name, ITERATIVE[name], GENERATED_SCHEMA)
    outcome = engine.run(plan)
    expected, trace = drive(build_plan(name, ITERATIVE[name], GENERATED_SCHEMA), firms)
    assert outcome.answer == expected
    assert [s.step for s in outcome.steps] == [s.step for s in trace.steps] == list(range(len(trace.steps)))
    assert 1 <= len(outcome.steps) <= plan.planned_steps
    assert all(s.contributors == len(firms) for s in outcome.steps)


def test_calibrated_noise_reaches_the_plans_and_the_ledger(firms: list[FirmData], tmp_path: Path) -> None:
    settings = settings_from_run_config({"scenario": str(TINY), "out-dir": str(tmp_path)})
    requests = with_scenario_defaults(
        settings, [QueryRequest("kmeans", {"k": 2, "max_iterations": 3}), QueryRequest("frequent_itemsets", {})]
    )
    assert (
        requests[1].params["items"] == list(catalogue_items(settings.scenario)) == [f"item{i:03d}" for i in range(1, 7)]
    )
    budget = QueryBudget(epsilon=20.0, delta=1e-5)
    plans, noise = noised_plans(settings, requests, budget)
    kmeans, itemsets = plans
    assert kmeans.planned_steps == 4 and itemsets.planned_steps == 3
    assert noise == calibrate_query_noise(7, Budget(20.0, 1e-5), query_accounting())
    assert kmeans.noise_multiplier == itemsets.noise_multiplier == noise > 0

    ledger = PrivacyRun.start(
        tmp_path / "ledger.jsonl",
        run_id="iterative-test",
        config_sha256="0" * 64,
        budget=Budget(20.0, 1e-5),
        signing_key=Ed25519PrivateKey.generate(),
        spec=query_accounting(),
    )
    engine = QueryEngine(
        plain_sum_step(firms), [f.firm_id for f in firms], privacy=QueryPrivacy(ledger, noise, np.random.default_rng(3))
    )
    outcomes = [engine.run(plan) for plan in plans]
    ledger.close()
    answer = outcomes[1].answer
    for level, step in zip(answer["levels"], outcomes[1].steps, strict=False):
        assert level["noise_std"] == pytest.approx(step.noise_std)  # the plan's threshold noise is the engine's
        expected = apriori.balanced_threshold(20.0, step.noise_std, level["candidates"], 0.1)
        assert level["threshold"] == pytest.approx(expected)
    assert outcomes[0].answer["noise_std"]["lloyd"] == pytest.approx(outcomes[0].steps[-1].noise_std)
    report = verify_ledger(ledger.path)
    released = [s.release_id for o in outcomes for s in o.steps]
    assert [r.release_id for r in report.releases] == released
    assert report.epsilon_overall <= 20.0
