"""Every query has a server half and a firm half under the same name, and its steps carry that name."""

from __future__ import annotations

from silobridge.clients.query_answers import LOCAL_HALVES
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.server.query_plans import PLANS
from tests.analytics_support import REGRESSION, UNITS

MINIMAL = {
    "kmeans": {"k": 2},
    "frequent_itemsets": {"items": ["a", "b"]},
    "sum": UNITS,
    "mean": UNITS,
    "variance": UNITS,
    "histogram": {"column": "price", "edges": [0, 10, 50]},
    "quantiles": UNITS,
    "linear_regression": REGRESSION,
    "autoregression": {"high": 5000},
}


def test_both_halves_are_registered_under_one_name() -> None:
    assert set(PLANS) == set(LOCAL_HALVES)
    assert len(PLANS) == 12
    for name, factory in PLANS.items():
        plan = factory(MINIMAL.get(name, {}), GENERATED_SCHEMA, noise_multiplier=0.0)
        assert plan.name == name
        first = plan.first()
        assert first.query == name
        assert first.step == 0 and plan.planned_steps >= 1
