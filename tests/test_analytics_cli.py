"""End to end over Flower: queries in a simulation of the tiny scenario, through secure aggregation.

Four simulations only (each costs ~25 s of start-up): without DP, several queries in one run equal
the pooled computation exactly; with DP, `silobridge query` prints the answer and its cost, and
`silobridge audit` verifies the run's ledger; an iterative query (frequent itemsets, its items
defaulting to the scenario's catalogue) run by `silobridge query` equals the in-test driver's answer;
and a pilot (`--data`, one CSV folder per firm) equals the pooled computation on those files.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from silobridge.clients.data import FirmData, write_firm_data
from silobridge.federation.query_run import QueryRequest, run_queries
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.scenarios.generator import ChainData
from silobridge.scenarios.schema import Scenario
from silobridge.server.query_plans import build_plan
from tests.analytics_support import REGRESSION, UNITS, drive, pooled, pooled_ar, ridge_fit, tiny_firms
from tests.conftest import TINY
from tests.test_cli import silobridge, silobridge_in_process


@pytest.fixture(scope="module")
def firms(tiny_scenario: Scenario, tiny_chain: ChainData) -> list[FirmData]:
    return tiny_firms(tiny_scenario, tiny_chain)


def test_queries_in_a_flower_simulation_equal_pooled(tmp_path: Path, firms: list[FirmData]) -> None:
    requests = [
        QueryRequest("variance", UNITS),
        QueryRequest("linear_regression", REGRESSION),
        QueryRequest("autoregression", {"lags": 2, "horizon": 3, "high": 5000}),
        QueryRequest("count", {"table": "risk", "max_rows": 500}),  # R1 and D1 hold more: clipped
    ]
    result = run_queries({"scenario": str(TINY), "out-dir": str(tmp_path), "run-id": "exact"}, requests, None)
    variance, regression, ar, count = (o.answer for o in result.outcomes)
    units = pooled(firms, "demand", "units")
    assert np.isclose(variance["mean"], units.mean(), rtol=1e-9, atol=0)
    assert np.isclose(variance["variance"], units.var(ddof=1), rtol=1e-9, atol=0)
    x = np.column_stack([pooled(firms, "demand", c) for c in REGRESSION["features"]])
    beta = ridge_fit(x, units, 1e-9)
    assert np.allclose([regression["intercept"], *regression["coefficients"].values()], beta, rtol=1e-9, atol=0)
    lags, targets, _ = pooled_ar(firms, 2)
    beta_ar = ridge_fit(lags, targets, 1e-9)
    assert np.allclose([ar["intercept"], *ar["coefficients"].values()], beta_ar, rtol=1e-9, atol=0)
    sizes = [len(f.risk) for f in firms]
    assert count["count"] == sum(min(n, 500) for n in sizes)
    assert result.outcomes[3].steps[0].clipped == sum(n > 500 for n in sizes) > 0
    written = json.loads((result.path / "queries.json").read_text())
    assert written["aggregation"]["mode"] == "secure"
    assert [q["answer"] for q in written["queries"]] == [variance, regression, ar, count]
    assert not (result.path / "privacy_ledger.jsonl").exists()  # no DP: nothing released under a budget


def test_query_command_with_dp_writes_an_auditable_ledger(tmp_path: Path, firms: list[FirmData]) -> None:
    rows = 2000
    done = silobridge(
        "query",
        str(TINY),
        "mean",
        *("--param", "column=units", "--param", "low=0", "--param", "high=5000", "--param", f"max_rows={rows}"),
        *("--epsilon", "50", "--delta", "1e-5", "--json", "--out", str(tmp_path), "--run-id", "private"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["privacy"]["epsilon"] <= 50 and printed["privacy"]["epsilon"] > 45  # calibrated to spend it
    assert printed["privacy"]["unit"] == "record"  # the default
    sigma_n = printed["noise_multiplier"] * math.hypot(0.25, 1.0) / 0.25  # record level: rows do not enter
    assert printed["answer"]["noise_std"]["count"] == pytest.approx(sigma_n)
    assert printed["steps"][0]["sensitivity"] == pytest.approx(math.hypot(0.25, 1.0) / rows)
    units = pooled(firms, "demand", "units")
    assert abs(printed["answer"]["count"] - units.size) <= 5 * sigma_n + 0.5
    key = json.loads((Path(printed["run_dir"]) / "queries.json").read_text())["public_key"]
    audit = silobridge_in_process("audit", printed["run_dir"], "--json", "--public-key", key, cwd=tmp_path)
    assert audit.returncode == 0, audit.stderr
    report = json.loads(audit.stdout)
    assert report["verified"] and report["within_budget"]
    assert report["epsilon_overall"] == pytest.approx(printed["privacy"]["epsilon_total"], rel=1e-6)
    assert [r["release_id"] for r in report["releases"]] == ["query-1/mean/step-0"]

    refused = silobridge_in_process(
        "query",
        str(TINY),
        "mean",
        *("--param", "column=units", "--param", "low=0", "--param", "high=1"),
        *("--param", "colour=red", "--out", str(tmp_path)),
        cwd=tmp_path,
    )
    assert refused.returncode == 2
    assert "field 'params.colour'" in refused.stderr


def test_iterative_query_command_equals_the_driver(tmp_path: Path, firms: list[FirmData]) -> None:
    done = silobridge_in_process(
        "query",
        str(TINY),
        "frequent_itemsets",
        *("--param", "min_support=210.5", "--no-dp", "--json", "--out", str(tmp_path), "--run-id", "itemsets"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    items = [f"item{i:03d}" for i in range(1, 7)]  # the tiny scenario's catalogue, defaulted by the command
    expected, trace = drive(
        build_plan("frequent_itemsets", {"items": items, "min_support": 210.5}, GENERATED_SCHEMA), firms
    )
    answer = printed["answer"]
    assert [s["items"] for s in answer["itemsets"]] == [s["items"] for s in expected["itemsets"]]
    assert np.allclose(
        [s["support"] for s in answer["itemsets"]], [s["support"] for s in expected["itemsets"]], rtol=1e-9, atol=0
    )
    assert ["item002", "item003", "item005"] in [s["items"] for s in answer["itemsets"]]  # the planted triple
    assert [level["frequent"] for level in answer["levels"]] == [level["frequent"] for level in expected["levels"]]
    assert [s["step"] for s in printed["steps"]] == [s.step for s in trace.steps] == [0, 1, 2]
    written = json.loads((Path(printed["run_dir"]) / "queries.json").read_text())
    assert written["aggregation"]["mode"] == "secure" and printed["privacy"] is None
    config = json.loads((Path(printed["run_dir"]) / "config.json").read_text())
    assert config["queries"][0]["params"]["items"] == items


def test_query_command_pilots_on_the_firms_files(
    tmp_path: Path, tiny_scenario: Scenario, tiny_chain: ChainData
) -> None:
    """`--data`: the query reads each firm's own CSV folder (here: halved units), validated before anything starts."""
    pilot = tmp_path / "pilot"
    units = []
    for firm in tiny_scenario.firms:
        tables = tiny_chain.tables[firm.id]
        demand = tables.demand.copy()
        demand["units"] = demand["units"] // 2  # not what the generator would give: the answer must come from here
        units.append(demand["units"].to_numpy(dtype=float))
        write_firm_data(pilot / firm.id, demand, tables.risk, tables.orders)
    args = ("--param", "column=units", "--param", "low=0", "--param", "high=5000", "--no-dp", "--json")
    done = silobridge_in_process(
        "query",
        str(TINY),
        "sum",
        *args,
        "--data",
        str(pilot),
        "--out",
        str(tmp_path / "runs"),
        "--run-id",
        "pilot",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    pooled_units = np.concatenate(units)
    assert np.isclose(printed["answer"]["sum"], pooled_units.sum(), rtol=1e-9, atol=0)
    assert printed["answer"]["sum"] != pytest.approx(
        pooled(tiny_firms(tiny_scenario, tiny_chain), "demand", "units").sum()
    )
    config = json.loads((Path(printed["run_dir"]) / "config.json").read_text())
    assert config["run_config"]["data"] == str(pilot)

    broken = tmp_path / "broken"
    shutil.copytree(pilot, broken)
    demand_csv = broken / "R2" / "demand.csv"
    lines = demand_csv.read_text().splitlines()
    header = lines[0].split(",")
    row = lines[3].split(",")
    row[header.index("units")] = "many"
    lines[3] = ",".join(row)
    demand_csv.write_text("\n".join(lines) + "\n")
    refused = silobridge_in_process(
        "query", str(TINY), "sum", *args, "--data", str(broken), "--out", str(tmp_path), cwd=tmp_path
    )
    assert refused.returncode == 2, refused.stderr
    assert "R2/demand.csv" in refused.stderr and "units" in refused.stderr


def test_query_session_from_a_plan_file_one_budget_one_ledger(tmp_path: Path, firms: list[FirmData]) -> None:
    """`--plan`: three queries in one run under one budget; one ledger with every release, verified; the
    preview's epsilon is the accountant's for all planned releases; answers within the stated noise."""
    plan = tmp_path / "queries.toml"
    plan.write_text(
        "[[query]]\n"
        'name = "mean"\n'
        'params = { column = "units", low = 0, high = 5000 }\n\n'
        "[[query]]\n"
        'name = "histogram"\n'
        'params = { column = "units", edges = [0, 50, 200, 1000, 5000] }\n\n'
        "[[query]]\n"
        'name = "count"\n'
        'params = { table = "risk" }\n'
    )
    done = silobridge_in_process(
        "query",
        str(TINY),
        *("--plan", str(plan), "--epsilon", "30", "--json", "--out", str(tmp_path), "--run-id", "session"),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert [q["query"] for q in printed["queries"]] == ["mean", "histogram", "count"]
    mean, histogram, count = (q["answer"] for q in printed["queries"])
    units = pooled(firms, "demand", "units")
    assert abs(mean["mean"] - units.mean()) <= 5 * mean["noise_std"]["mean"]
    exact = np.histogram(np.clip(units, 0, 5000), bins=[0, 50, 200, 1000, 5000])[0]
    assert np.all(np.abs(np.array(histogram["counts"]) - exact) <= 5 * histogram["noise_std_per_bin"] + 0.5)
    risk_rows = sum(len(f.risk) for f in firms)
    assert abs(count["count"] - risk_rows) <= 5 * count["noise_std"]["count"] + 0.5
    written = json.loads((Path(printed["run_dir"]) / "queries.json").read_text())
    preview = written["preview"]
    assert preview["releases"] == 3 and preview["unit"] == "record" and preview["epsilon"] <= 30
    key = written["public_key"]
    audit = silobridge_in_process("audit", printed["run_dir"], "--json", "--public-key", key, cwd=tmp_path)
    assert audit.returncode == 0, audit.stderr
    report = json.loads(audit.stdout)
    assert report["verified"] and report["within_budget"]
    assert [r["release_id"] for r in report["releases"]] == [
        "query-1/mean/step-0",
        "query-2/histogram/step-0",
        "query-3/count/step-0",
    ]
    assert report["epsilon_overall"] == pytest.approx(preview["epsilon"], rel=1e-6)
    assert report["epsilon_overall"] == pytest.approx(printed["queries"][-1]["privacy"]["epsilon_total"], rel=1e-6)
