"""Bad query input is refused before any firm is contacted and before anything is written.

Each case goes through `run_queries` (the path `silobridge query` takes) on the tiny scenario: the
error is raised before the Flower simulation starts (no firm is asked anything), the run folder is
never created, and the message names the query and the parameter. One case also goes through the
command line itself (`--noise-multiplier 0`, which used to start Ray and leave a ledger without an
end entry).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from silobridge.errors import BudgetExhausted, ConfigError, SiloBridgeError
from silobridge.federation.query_plan import load_plan
from silobridge.federation.query_run import QueryBudget, QueryRequest, run_queries
from tests.conftest import TINY
from tests.test_cli import silobridge_in_process

UNITS = {"column": "units", "low": 0, "high": 5000}
BUDGET = QueryBudget(1.0, 1e-5)


def _refused(tmp_path: Path, name: str, params: dict[str, Any], budget: QueryBudget | None = BUDGET) -> SiloBridgeError:
    out = tmp_path / "runs"
    run_config = {"scenario": str(TINY), "out-dir": str(out), "run-id": "refused"}
    with pytest.raises(SiloBridgeError) as caught:
        run_queries(run_config, [QueryRequest(name, params)], budget, cpus=1)
    assert not out.exists()  # nothing written: no run folder, no ledger
    return caught.value


def test_missing_bound(tmp_path: Path) -> None:
    err = _refused(tmp_path, "mean", {"column": "units", "low": 0})
    assert isinstance(err, ConfigError) and err.field == "params.high" and "query 'mean'" in str(err)


def test_inverted_bounds(tmp_path: Path) -> None:
    err = _refused(tmp_path, "variance", {"column": "units", "low": 5000, "high": 0})
    assert err.field == "params.high" and "query 'variance'" in str(err) and "greater than low" in str(err)


def test_unknown_column(tmp_path: Path) -> None:
    err = _refused(tmp_path, "sum", {**UNITS, "column": "colour"})
    assert err.field == "params.column" and "query 'sum'" in str(err) and "'colour'" in str(err)


def test_non_numeric_column(tmp_path: Path) -> None:
    err = _refused(tmp_path, "mean", {**UNITS, "column": "series"})  # the series id: text
    assert err.field == "params.column" and "query 'mean'" in str(err) and "numeric" in str(err)


def test_unknown_query_in_a_plan(tmp_path: Path) -> None:
    plan = tmp_path / "queries.toml"
    plan.write_text(
        '[[query]]\nname = "mean"\nparams = {column = "units", low = 0, high = 10}\n\n[[query]]\nname = "median"\n'
    )
    with pytest.raises(ConfigError) as caught:
        load_plan(plan)
    assert caught.value.field == "query.1.name" and "unknown query 'median'" in str(caught.value)
    assert str(plan) in str(caught.value)


@pytest.mark.parametrize(
    ("epsilon", "delta", "field"), [(0.0, 1e-5, "epsilon"), (-1.0, 1e-5, "epsilon"), (1.0, 1.0, "delta")]
)
def test_epsilon_or_delta_out_of_range(tmp_path: Path, epsilon: float, delta: float, field: str) -> None:
    err = _refused(tmp_path, "count", {}, QueryBudget(epsilon, delta))
    assert err.field == field and "query 'count'" in str(err)


@pytest.mark.parametrize("edges", [[0, 10, 5, 20], [0, 10, 10, 20]])
def test_histogram_edges_unsorted_or_duplicated(tmp_path: Path, edges: list[float]) -> None:
    err = _refused(tmp_path, "histogram", {"column": "units", "edges": edges})
    assert err.field == "params.edges" and "query 'histogram'" in str(err) and "strictly increasing" in str(err)


def test_k_larger_than_the_records_firms_can_contribute(tmp_path: Path) -> None:
    """The number of records is private; the public bound is firms x max_points (5 firms x 2 points here)."""
    err = _refused(tmp_path, "kmeans", {"k": 11, "max_points": 2, "init_grid": 4})
    assert err.field == "params.k" and "query 'kmeans'" in str(err) and "at most 10 points" in str(err)


@pytest.mark.parametrize("multiplier", [0.0, -1.0])
def test_noise_multiplier_zero_or_negative(tmp_path: Path, multiplier: float) -> None:
    err = _refused(tmp_path, "count", {}, QueryBudget(1.0, 1e-5, noise_multiplier=multiplier))
    assert err.field == "noise_multiplier" and "query 'count'" in str(err) and "--no-dp" in str(err)


def test_fixed_noise_overspending_session_refused_by_the_preview(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    requests = [QueryRequest("mean", UNITS), QueryRequest("histogram", {"column": "units", "edges": [0, 10, 100]})]
    with pytest.raises(BudgetExhausted, match=r"2 planned release\(s\) \['mean' \(1\), 'histogram' \(1\)\]"):
        run_queries(
            {"scenario": str(TINY), "out-dir": str(out)}, requests, QueryBudget(1.0, 1e-5, noise_multiplier=2.0)
        )
    assert not out.exists()


def test_command_line_noise_multiplier_zero(tmp_path: Path) -> None:
    done = silobridge_in_process(
        "query",
        str(TINY),
        "mean",
        *("--param", "column=units", "--param", "low=0", "--param", "high=5000"),
        *("--noise-multiplier", "0", "--out", str(tmp_path / "runs")),
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "query 'mean'" in done.stderr and "noise_multiplier" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "runs").exists()
