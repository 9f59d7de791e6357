"""A query session's plan file: several queries run as one run, under one budget, one ledger, one audit.

    # queries.toml
    [[query]]
    name = "mean"
    params = { column = "units", low = 0, high = 5000 }

    [[query]]
    name = "histogram"
    params = { column = "price", edges = [0, 5, 10, 20, 50] }

`silobridge query FEDERATION --plan queries.toml` reads it; the budget (`--epsilon`, `--delta`,
`--unit`, `--noise-multiplier`) is the command line's and covers every query of the file. Every
problem is reported naming the file and the entry (`query.<i>.<field>`) before anything starts.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from silobridge.errors import ConfigError
from silobridge.federation.query_run import QueryRequest
from silobridge.server.query_plans import PLANS


class PlanEntry(BaseModel):
    """One query of the session: its name and its raw parameters (checked against the schema later)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class PlanFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    query: list[PlanEntry] = Field(min_length=1)


def load_plan(path: Path) -> list[QueryRequest]:
    """The plan file's queries, in order; every error names the file and the entry."""
    source = str(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError("no such plan file", source=source) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the plan file: {err}", source=source) from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", source=source) from None
    try:
        plan = PlanFile.model_validate(raw)
    except ValidationError as err:
        first = err.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "query"
        raise ConfigError(first["msg"], source=source, field=field) from None
    for i, entry in enumerate(plan.query):
        if entry.name not in PLANS:
            raise ConfigError(
                f"unknown query '{entry.name}' (known: {', '.join(sorted(PLANS))})",
                source=source,
                field=f"query.{i}.name",
            )
    return [QueryRequest(entry.name, entry.params) for entry in plan.query]
