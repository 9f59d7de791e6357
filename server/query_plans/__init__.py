"""The server halves of the federated analytics queries, and the engine that runs them.

`PLANS` maps a query's name to its factory: raw parameters and the federation's schema in, a
`QueryPlan` out (parameters validated at the edge, errors naming the field). A factory also takes
the keywords `noise_multiplier` (the Gaussian noise std per unit of a step's sensitivity that the
engine will add, 0 without DP) and `unit` (`record`, the default, or `firm`: which sensitivity); the
iterative queries scale their DP thresholds with them, and every plan states its noise std.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from silobridge.contract.config import DataSchema
from silobridge.contract.query_protocol import UNITS, PlanFactory, QueryPlan, Unit
from silobridge.errors import ConfigError
from silobridge.server.query_plans import anomaly, apriori, kmeans, logistic
from silobridge.server.query_plans.histogram import HistogramPlan, QuantilesPlan
from silobridge.server.query_plans.moments import MomentsPlan
from silobridge.server.query_plans.regression import AutoregressionPlan, LinearRegressionPlan

PLANS: dict[str, PlanFactory] = {
    "count": MomentsPlan.factory("count"),
    "sum": MomentsPlan.factory("sum"),
    "mean": MomentsPlan.factory("mean"),
    "variance": MomentsPlan.factory("variance"),
    "histogram": HistogramPlan.create,
    "quantiles": QuantilesPlan.create,
    "linear_regression": LinearRegressionPlan.create,
    "autoregression": AutoregressionPlan.create,
    logistic.NAME: logistic.make_plan,
    kmeans.NAME: kmeans.make_plan,
    apriori.NAME: apriori.make_plan,
    anomaly.NAME: anomaly.make_plan,
}


def build_plan(
    name: str, raw: Mapping[str, Any], schema: DataSchema, *, noise_multiplier: float = 0.0, unit: Unit = "record"
) -> QueryPlan:
    """The server half of query `name` with its parameters validated against the federation's schema.

    `noise_multiplier` is the engine's (after calibration) and `unit` its unit of privacy, so that plans
    with DP thresholds match the noise and every plan states its noise std.
    """
    factory = PLANS.get(name)
    if factory is None:
        raise ConfigError(f"unknown query '{name}' (known: {', '.join(sorted(PLANS))})", field="query")
    if unit not in UNITS:
        raise ConfigError(f"query '{name}': unit must be one of {', '.join(UNITS)}, got '{unit}'", field="unit")
    return factory(raw, schema, noise_multiplier=noise_multiplier, unit=unit)
