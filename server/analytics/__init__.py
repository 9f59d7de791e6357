"""The server halves of the federated analytics queries, and the engine that runs them.

`PLANS` maps a query's name to its factory: raw parameters and the federation's schema in, a
`QueryPlan` out (parameters validated at the edge, errors naming the field). A factory also takes
the keyword `noise_multiplier`: the Gaussian noise std per unit of a step's `l2_bound` that the
engine will add (0 without DP), which the iterative queries use to scale their DP thresholds; the
one-release queries do not depend on it (their answers are post-processing of the noisy sums).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from server.analytics import anomaly, apriori, kmeans, logistic
from server.analytics.histogram import HistogramPlan, QuantilesPlan
from server.analytics.moments import MomentsPlan
from server.analytics.regression import AutoregressionPlan, LinearRegressionPlan
from silobridge.analytics import PlanFactory, QueryPlan
from silobridge.config import DataSchema
from silobridge.errors import ConfigError


def _noise_free(factory: Any) -> PlanFactory:
    """A factory whose plan does not depend on the noise level: the keyword is accepted and unused."""

    def make(raw: Mapping[str, Any], schema: DataSchema, *, noise_multiplier: float = 0.0) -> QueryPlan:
        return factory(raw, schema)

    make.__doc__ = factory.__doc__
    return make


PLANS: dict[str, PlanFactory] = {
    "count": _noise_free(MomentsPlan.factory("count")),
    "sum": _noise_free(MomentsPlan.factory("sum")),
    "mean": _noise_free(MomentsPlan.factory("mean")),
    "variance": _noise_free(MomentsPlan.factory("variance")),
    "histogram": _noise_free(HistogramPlan.create),
    "quantiles": _noise_free(QuantilesPlan.create),
    "linear_regression": _noise_free(LinearRegressionPlan.create),
    "autoregression": _noise_free(AutoregressionPlan.create),
    logistic.NAME: logistic.make_plan,
    kmeans.NAME: kmeans.make_plan,
    apriori.NAME: apriori.make_plan,
    anomaly.NAME: anomaly.make_plan,
}


def build_plan(name: str, raw: Mapping[str, Any], schema: DataSchema, *, noise_multiplier: float = 0.0) -> QueryPlan:
    """The server half of query `name` with its parameters validated against the federation's schema.

    `noise_multiplier` is the engine's (after calibration), so that plans with DP thresholds match the noise.
    """
    factory = PLANS.get(name)
    if factory is None:
        raise ConfigError(f"unknown query '{name}' (known: {', '.join(sorted(PLANS))})", field="query")
    return factory(raw, schema, noise_multiplier=noise_multiplier)
