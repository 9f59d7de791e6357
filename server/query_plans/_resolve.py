"""Fill a risk-table query's features and ranges from the federation's schema, then validate."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from silobridge.contract.config import DataSchema
from silobridge.contract.iterative_params import RangedFeatures
from silobridge.contract.query_params import param_error, parse_params

R = TypeVar("R", bound=RangedFeatures)


def risk_query_params(model: type[R], params: Mapping[str, Any], *, schema: DataSchema, query: str) -> R:
    """Features default to all of the schema's risk features, ranges to its public ranges (a query may
    narrow the features or give ranges of its own); every feature must be one of the schema's."""
    raw = dict(params)
    raw.setdefault("features", list(schema.risk_features))
    asked = raw["features"]
    if isinstance(asked, list | tuple):
        unknown = [name for name in asked if name not in schema.risk_features]
        if unknown:
            raise param_error(
                query, "features", f"{unknown} are not risk features of the schema {list(schema.risk_features)}"
            )
    given = raw.get("ranges", {})
    if isinstance(given, Mapping):
        raw["ranges"] = {**{name: list(bounds) for name, bounds in schema.risk_feature_ranges.items()}, **given}
    parsed = parse_params(model, raw, query=query)
    if not parsed.features:
        raise param_error(query, "features", "no risk features to use (the schema has none)")
    unknown = [name for name in parsed.features if name not in schema.risk_features]
    if unknown:
        raise param_error(
            query, "features", f"{unknown} are not risk features of the schema {list(schema.risk_features)}"
        )
    return parsed
