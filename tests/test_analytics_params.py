"""One parser of query parameters for every query, with one error shape at each edge."""

from __future__ import annotations

import pytest

from silobridge.contract.config import DataSchema
from silobridge.contract.iterative_params import KMeansParams, LogisticParams
from silobridge.contract.queries import ColumnParams
from silobridge.contract.query_params import param_error, parse_params, step_params
from silobridge.contract.query_protocol import QueryStep
from silobridge.errors import ConfigError, ProtocolError

SCHEMA = DataSchema()


@pytest.mark.parametrize(
    ("model", "raw", "query", "field"),
    [
        (ColumnParams, {"column": "units", "low": 5, "high": 1}, "mean", "params.high"),  # a table query
        (LogisticParams, {"ridge": -1}, "logistic_regression", "params.ridge"),  # an iterative query
        (KMeansParams, {"k": 3, "features": ["log_mean", "colour"]}, "kmeans", "params.features.1"),
    ],
)
def test_every_query_is_refused_in_one_shape_naming_the_parameter(
    model: type, raw: dict, query: str, field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_params(model, raw, query=query, schema=SCHEMA)
    assert caught.value.field == field
    assert caught.value.source == f"query '{query}'"
    assert str(caught.value).startswith(f"query '{query}', field '{field}': ")


def test_several_problems_are_all_listed_under_the_first_parameter() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_params(LogisticParams, {"ridge": -1, "max_iterations": 0}, query="logistic_regression")
    assert caught.value.field == "params.ridge"
    assert "ridge:" in str(caught.value) and "max_iterations:" in str(caught.value)


def test_a_column_outside_the_schema_is_refused_only_against_a_schema() -> None:
    raw = {"column": "colour", "low": 0, "high": 1}
    assert parse_params(ColumnParams, raw, query="mean").column == "colour"
    with pytest.raises(ConfigError) as caught:
        parse_params(ColumnParams, raw, query="mean", schema=SCHEMA)
    assert caught.value.field == "params.column" and "'colour'" in str(caught.value)


def test_a_schema_level_refusal_has_the_same_shape() -> None:
    err = param_error("apriori", "items", "too many")
    assert (err.source, err.field, str(err)) == (
        "query 'apriori'",
        "params.items",
        "query 'apriori', field 'params.items': too many",
    )


def test_a_malformed_step_is_a_protocol_error_naming_the_firm_and_the_parameter() -> None:
    step = QueryStep.build("mean", 0, length=2, value_bound=1.0, l2_bound=1.0, params={"column": "units", "low": 1})
    with pytest.raises(ProtocolError) as caught:
        step_params(ColumnParams, step, firm="R1")
    assert caught.value.firm == "R1"
    assert "query 'mean' step 0: field 'params.high'" in str(caught.value)
