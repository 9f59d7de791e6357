"""Reading a query's parameters, at both edges, with one error shape.

Where a query is posed its parameters are validated once: a refusal is a `ConfigError` from the
query (`source`) naming the parameter (`field` = `params.<name>`). The same models read them again
where a firm receives a step; there a refusal is a `ProtocolError` naming the firm: the step itself
is malformed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from silobridge.contract.config import DataSchema
from silobridge.contract.query_protocol import QueryStep
from silobridge.errors import ConfigError, ProtocolError

TABLES = ("demand", "risk")


class QueryParams(BaseModel):
    """Base of every query's parameters: frozen, no unknown fields, and the columns it reads.

    `columns()` lists (field path, table, column) for every column the query reads, so one check
    against the federation's schema serves every query.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    def columns(self) -> list[tuple[str, str, str]]:
        return []


M = TypeVar("M", bound=BaseModel)


def param_error(query: str, field: str, message: str) -> ConfigError:
    """A query's parameter refused: the query is the source, `params.<field>` the field."""
    return ConfigError(message, source=f"query '{query}'", field=f"params.{field}")


def table_columns(schema: DataSchema, table: str, *, query: str) -> tuple[str, ...]:
    """The numeric columns a query may read from a firm's table, as the federation's schema names them."""
    if table == "demand":
        return ("units", *schema.demand_covariates)
    if table == "risk":
        return (*schema.risk_features, "disrupted")
    raise param_error(query, "table", f"unknown table '{table}' (known: {', '.join(TABLES)})")


def _problems(err: ValidationError) -> tuple[str, str]:
    """The first offending field's dotted path, and every problem (one line each when several)."""
    found = err.errors()

    def path(problem: Any) -> str:
        return ".".join(str(part) for part in problem["loc"])

    if len(found) == 1:
        return path(found[0]), found[0]["msg"]
    return path(found[0]), "; ".join(f"{path(p) or 'params'}: {p['msg']}" for p in found)


def parse_params(model: type[M], raw: Mapping[str, Any], *, query: str, schema: DataSchema | None = None) -> M:
    """A query's parameters as posed; with `schema`, every column a `QueryParams` reads must be a numeric
    column of the federation's table."""
    try:
        params = model.model_validate(dict(raw))
    except ValidationError as err:
        field, message = _problems(err)
        raise ConfigError(message, source=f"query '{query}'", field=f"params.{field}" if field else "params") from None
    if schema is not None and isinstance(params, QueryParams):
        for field, table, column in params.columns():
            known = table_columns(schema, table, query=query)
            if column not in known:
                raise param_error(
                    query,
                    field,
                    f"column '{column}' is not a numeric column of the federation's {table} table "
                    f"(numeric columns: {', '.join(known)})",
                )
    return params


def step_params(model: type[M], step: QueryStep, *, firm: str) -> M:
    """A firm reads a step's parameters with the same model the server validated them with."""
    try:
        return model.model_validate(step.params)
    except ValidationError as err:
        field, message = _problems(err)
        raise ProtocolError(
            f"query '{step.query}' step {step.step}: field 'params{'.' + field if field else ''}': {message}", firm=firm
        ) from None
