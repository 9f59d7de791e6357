"""The server halves of the federated analytics queries, and the engine that runs them.

`PLANS` maps a query's name to its factory: raw parameters and the federation's schema in,
a `QueryPlan` out (parameters validated at the edge, errors naming the field).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.analytics.histogram import HistogramPlan, QuantilesPlan
from server.analytics.moments import MomentsPlan
from server.analytics.regression import AutoregressionPlan, LinearRegressionPlan
from silobridge.analytics import PlanFactory, QueryPlan
from silobridge.config import DataSchema
from silobridge.errors import ConfigError

PLANS: dict[str, PlanFactory] = {
    "count": MomentsPlan.factory("count"),
    "sum": MomentsPlan.factory("sum"),
    "mean": MomentsPlan.factory("mean"),
    "variance": MomentsPlan.factory("variance"),
    "histogram": HistogramPlan.create,
    "quantiles": QuantilesPlan.create,
    "linear_regression": LinearRegressionPlan.create,
    "autoregression": AutoregressionPlan.create,
}


def build_plan(name: str, raw: Mapping[str, Any], schema: DataSchema) -> QueryPlan:
    """The server half of query `name` with its parameters validated against the federation's schema."""
    factory = PLANS.get(name)
    if factory is None:
        raise ConfigError(f"unknown query '{name}' (known: {', '.join(sorted(PLANS))})", field="query")
    return factory(raw, schema)
