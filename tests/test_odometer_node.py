"""A firm's node and its lifetime odometer: charged before a round is released, refused past the budget,
and a tampered odometer stops the node. No simulation: the node's own functions, as the ClientApp calls them."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import dp_accounting as dpa
import pytest
from typer.testing import CliRunner

from silobridge.clients.data import write_firm_data
from silobridge.clients.own_budget import charge_lifetime, own_epsilon
from silobridge.clients.query_answers import LOCAL_HALVES, TABLES_READ, tables_read
from silobridge.contract.config import FederationSpec, PrivacySpec
from silobridge.contract.query_protocol import QueryStep
from silobridge.errors import BudgetExhausted, LedgerTampered, ProtocolError
from silobridge.federation.cli import app
from silobridge.federation.odometer_charges import charge_linear, charge_query_step
from silobridge.federation.odometer_glue import NODE_LIFETIME_EPSILON, NODE_STATE_DIR, node_odometer
from silobridge.federation.preflight import first_release_events
from silobridge.federation.settings import settings_from_run_config
from silobridge.privacy.odometer import LOG_FILE
from silobridge.scenarios.generator import generate_chain
from silobridge.scenarios.schema import load_scenario
from silobridge.server.linear import linear_noise_multipliers
from tests.conftest import ROOT

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"

PRIVACY = PrivacySpec(unit="record", epsilon=8.0, noise_multiplier=1.5, sample_rate=0.1)


def _node(folder: Path, lifetime: float | None = None) -> dict[str, object]:
    config: dict[str, object] = {NODE_STATE_DIR: str(folder)}
    if lifetime is not None:
        config[NODE_LIFETIME_EPSILON] = lifetime
    return config


def test_rounds_of_several_runs_compose_and_the_one_past_the_lifetime_budget_is_refused(tmp_path: Path) -> None:
    lifetime = own_epsilon(PRIVACY, 3) * 1.0001  # three rounds fit, a fourth does not
    for run, rounds in (("run-1", 2), ("run-2", 1)):  # two runs: 2 + 1 rounds
        for number in range(1, rounds + 1):
            odometer = node_odometer("R1", None, _node(tmp_path, lifetime))
            charge_lifetime(odometer, PRIVACY, ["demand", "risk"], run_id=run, release_id=f"round-{number}", firm="R1")
    odometer = node_odometer("R1", None, _node(tmp_path))  # the budget is kept: no need to repeat it
    assert odometer.spent("demand") == pytest.approx(own_epsilon(PRIVACY, 3), rel=1e-9)
    with pytest.raises(BudgetExhausted, match="firm 'R1' refuses round-1 of run run-3"):
        charge_lifetime(odometer, PRIVACY, ["demand"], run_id="run-3", release_id="round-1", firm="R1")
    assert node_odometer("R1", None, _node(tmp_path)).datasets()[0].releases == 3  # nothing charged
    result = CliRunner().invoke(app, ["budget", str(tmp_path)], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "R1" in result.output and "demand" in result.output


def test_a_node_with_an_odometer_does_not_take_part_in_a_firm_level_run(tmp_path: Path) -> None:
    odometer = node_odometer("R1", None, _node(tmp_path, 10.0))
    firm_level = PrivacySpec(unit="firm", epsilon=8.0, noise_multiplier=1.0)
    with pytest.raises(ProtocolError, match="counts record-level releases only"):
        charge_lifetime(odometer, firm_level, ["demand"], run_id="r", release_id="round-1", firm="R1")


def _rdp_epsilon(events: list[dpa.DpEvent], delta: float = 1e-5) -> float:
    """dp-accounting's own RDP accountant, add-or-remove-one: the figure the odometer must agree with."""
    accountant = dpa.rdp.RdpAccountant()
    for event in events:
        accountant.compose(event)
    return float(accountant.get_epsilon(delta))


@pytest.fixture(scope="module")
def linear_spec() -> FederationSpec:
    spec = settings_from_run_config({"scenario": str(TRIO)}).spec
    linear = spec.linear.model_copy(update={"model": "linear"})
    return spec.model_copy(update={"linear": linear, "privacy": PrivacySpec(unit="record", epsilon=8.0)})


def test_a_linear_release_is_charged_with_the_coordinators_event(tmp_path: Path, linear_spec: FederationSpec) -> None:
    odometer = node_odometer("R1", None, _node(tmp_path, 100.0))
    z = linear_noise_multipliers(linear_spec)  # what the coordinator noises with (federation/linear_run.py)
    assert z["risk"] > z["demand"] > 0  # risk: three Newton steps share the budget
    charge_linear(odometer, linear_spec, "demand", run_id="r", release_id="linear/demand", firm="R1")
    for step in range(3):
        charge_linear(odometer, linear_spec, "risk", run_id="r", release_id=f"linear/risk@{step}", firm="R1")
    assert odometer.spent("demand") == pytest.approx(_rdp_epsilon([dpa.GaussianDpEvent(z["demand"])]), rel=1e-9)
    assert odometer.spent("risk") == pytest.approx(_rdp_epsilon([dpa.GaussianDpEvent(z["risk"])] * 3), rel=1e-9)
    assert {row.dataset: row.releases for row in odometer.datasets()} == {"demand": 1, "risk": 3}
    # The run's budget is 8 at delta 1e-5 (less the efficiency release it reserves): the lifetime figure agrees.
    assert 7.0 < odometer.spent("demand") <= 8.0 and 7.0 < odometer.spent("risk") <= 8.0
    assert first_release_events(linear_spec) == {m: dpa.GaussianDpEvent(z[m]) for m in ("demand", "risk")}


def test_a_linear_release_past_the_lifetime_budget_is_refused(tmp_path: Path, linear_spec: FederationSpec) -> None:
    odometer = node_odometer("R1", None, _node(tmp_path, 10.0))
    charge_linear(odometer, linear_spec, "demand", run_id="run-1", release_id="linear/demand", firm="R1")
    with pytest.raises(BudgetExhausted, match="firm 'R1' refuses linear/demand of run run-2: its demand data"):
        charge_linear(odometer, linear_spec, "demand", run_id="run-2", release_id="linear/demand", firm="R1")
    assert node_odometer("R1", None, _node(tmp_path)).datasets()[0].releases == 1  # nothing charged
    with pytest.raises(ProtocolError, match="expected 'demand' or 'risk'"):
        charge_linear(odometer, linear_spec, "orders", run_id="run-2", release_id="linear/orders", firm="R1")
    charge_linear(None, linear_spec, "demand", run_id="r", release_id="linear/demand", firm="R1")  # no odometer


def _step(query: str, params: dict[str, object], z: float | None = 2.0, unit: str = "record") -> QueryStep:
    dp = {"noise_multiplier": z, "unit": unit, "delta": 1e-5, "accountant": "rdp"} if z is not None else {}
    return QueryStep(query=query, step=0, length=4, value_bound=1.0, l2_bound=2.0, params_json=json.dumps(params), **dp)


def test_a_query_step_is_charged_to_the_tables_it_reads(tmp_path: Path) -> None:
    odometer = node_odometer("R1", None, _node(tmp_path, 100.0))
    steps = [
        _step("mean", {"table": "risk", "column": "delay_days"}),
        _step("kmeans", {}),
        _step("frequent_itemsets", {}),
        _step("count", {}),  # a table query names no table: the demand table, the query's default
        _step("mean", {"table": "risk"}, z=None),  # no noise: nothing the odometer can count
    ]
    for step in steps:
        charge_query_step(odometer, step, run_id="s", firm="R1")
    one = _rdp_epsilon([dpa.GaussianDpEvent(2.0)])
    assert {row.dataset: row.releases for row in odometer.datasets()} == {"demand": 2, "orders": 1, "risk": 1}
    assert odometer.spent("risk") == pytest.approx(one, rel=1e-9)
    assert odometer.spent("demand") == pytest.approx(_rdp_epsilon([dpa.GaussianDpEvent(2.0)] * 2), rel=1e-9)
    with pytest.raises(ProtocolError, match="counts record-level releases only"):
        charge_query_step(odometer, _step("mean", {"table": "risk"}, unit="firm"), run_id="s", firm="R1")
    with pytest.raises(ProtocolError, match="unknown query 'median'"):
        tables_read(_step("median", {}), firm="R1")


def test_every_query_a_firm_answers_names_the_tables_it_reads() -> None:
    assert set(TABLES_READ) == set(LOCAL_HALVES)


def test_a_tampered_odometer_stops_the_node_and_budget_says_so(tmp_path: Path) -> None:
    odometer = node_odometer("R1", None, _node(tmp_path, 10.0))
    charge_lifetime(odometer, PRIVACY, ["demand"], run_id="r", release_id="round-1", firm="R1")
    charge_lifetime(odometer, PRIVACY, ["demand"], run_id="r", release_id="round-2", firm="R1")
    log = tmp_path / LOG_FILE
    log.write_bytes(b"".join(log.read_bytes().splitlines(keepends=True)[:-1]))  # forget the last round
    with pytest.raises(LedgerTampered):
        node_odometer("R1", None, _node(tmp_path))
    assert CliRunner().invoke(app, ["budget", str(tmp_path)]).exit_code == 3


def test_the_round_event_is_the_ledgers(tmp_path: Path) -> None:
    odometer = node_odometer("R1", None, _node(tmp_path, 10.0))
    charge_lifetime(odometer, PRIVACY, ["risk"], run_id="r", release_id="round-1", firm="R1")
    assert odometer.spent("risk") == pytest.approx(own_epsilon(PRIVACY, 1), rel=1e-12)


@pytest.fixture(scope="module")
def r1_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trio-data")
    tables = generate_chain(load_scenario(TRIO)).tables["R1"]
    write_firm_data(root / "R1", tables.demand, tables.risk)
    return root / "R1"


def _join(r1_data: Path, tmp_path: Path, *extra: str) -> tuple[int, str]:
    (tmp_path / "ca.pem").write_text("ca")
    (tmp_path / "R1.key").write_text("key")
    args = [
        "join",
        "--superlink",
        "127.0.0.1:9093",
        "--ca",
        str(tmp_path / "ca.pem"),
        "--key",
        str(tmp_path / "R1.key"),
    ]
    args += ["--data", str(r1_data), "--config", str(TRIO), *extra]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    return result.exit_code, " ".join(result.output.split())


def _no_processes(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The SuperNode commands `join` would start (by itself with --executor flower, or supervised with its warm
    executor, the default), recorded instead of started."""
    from silobridge.federation.network import node_supervisor

    started: list[list[str]] = []
    monkeypatch.setattr(subprocess, "call", lambda command, env=None: started.append(command) or 0)
    monkeypatch.setattr(node_supervisor, "run_supervised", lambda command, *args, **kw: started.append(command) or 0)
    return started


def test_join_keeps_the_odometer_in_the_node_config(
    r1_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _no_processes(monkeypatch)
    state = tmp_path / "odometer"
    code, output = _join(r1_data, tmp_path, "--state", str(state), "--lifetime-epsilon", "10")
    assert code == 0, output
    node_config = started[0][started[0].index("--node-config") + 1]
    assert f'state-dir="{state}"' in node_config and "lifetime-epsilon=10" in node_config
    assert node_odometer("R1", None, _node(state)).lifetime.epsilon == 10  # made, verified and kept


def test_join_refuses_to_start_with_a_tampered_odometer(
    r1_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = _no_processes(monkeypatch)
    state = tmp_path / "odometer"
    odometer = node_odometer("R1", None, _node(state, 10.0))
    charge_lifetime(odometer, PRIVACY, ["demand"], run_id="r", release_id="round-1", firm="R1")
    (state / "odometer.head").unlink()
    code, output = _join(r1_data, tmp_path, "--state", str(state))
    assert code == 3 and "odometer check failed, not joining" in output and not started
    code, output = _join(r1_data, tmp_path, "--lifetime-epsilon", "10")
    assert code == 2 and "a lifetime budget needs --state DIR" in output
