"""A firm's node and its lifetime odometer: charged before a round is released, refused past the budget,
and a tampered odometer stops the node. No simulation: the node's own functions, as the ClientApp calls them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from clients.own_budget import charge_lifetime, own_epsilon
from federation.cli import app
from federation.odometer_glue import NODE_LIFETIME_EPSILON, NODE_STATE_DIR, node_odometer
from privacy.odometer import LOG_FILE
from silobridge.config import PrivacySpec
from silobridge.errors import BudgetExhausted, LedgerTampered, ProtocolError

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
    with pytest.raises(ProtocolError, match="record-level DP-SGD only"):
        charge_lifetime(odometer, firm_level, ["demand"], run_id="r", release_id="round-1", firm="R1")


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
