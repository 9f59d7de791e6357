"""Every query has a server half and a firm half under the same name, and its steps carry that name."""

from __future__ import annotations

from clients.analytics import LOCAL_HALVES
from federation.settings import GENERATED_SCHEMA
from server.analytics import PLANS

MINIMAL = {"kmeans": {"k": 2}, "frequent_itemsets": {"items": ["a", "b"]}}


def test_both_halves_are_registered_under_one_name() -> None:
    assert set(PLANS) == set(LOCAL_HALVES)
    for name, factory in PLANS.items():
        plan = factory(MINIMAL.get(name, {}), schema=GENERATED_SCHEMA, noise_multiplier=0.0)
        assert plan.name == name
        assert plan.first().query == name
        assert plan.max_steps >= 1
