"""Server halves of the analytics queries, by name: each factory turns a query's parameters into a plan.

A factory takes `(params, *, schema, noise_multiplier)`: `schema` supplies public feature ranges,
`noise_multiplier` the Gaussian noise std per unit of a step's `l2_bound` that the engine will add
(0 without noise), which the plans use to scale DP thresholds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from server.analytics import anomaly, apriori, kmeans, logistic
from silobridge.analytics import QueryPlan
from silobridge.config import DataSchema

PlanFactory = Callable[..., QueryPlan]

PLANS: dict[str, PlanFactory] = {
    logistic.NAME: logistic.make_plan,
    kmeans.NAME: kmeans.make_plan,
    apriori.NAME: apriori.make_plan,
    anomaly.NAME: anomaly.make_plan,
}


def make_plan(name: str, params: Mapping[str, Any], *, schema: DataSchema, noise_multiplier: float = 0.0) -> QueryPlan:
    """The plan of query `name` (KeyError if there is none; the caller names the choices)."""
    return PLANS[name](params, schema=schema, noise_multiplier=noise_multiplier)
