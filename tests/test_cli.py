"""The `silobridge` command: a clear error, a non-zero exit and nothing in runs/ on bad input."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w

from silobridge.clients.data import load_firm_data
from silobridge.federation.settings import GENERATED_SCHEMA
from tests.conftest import ROOT, TINY


def silobridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`silobridge ARGS` as its own process: for the tests about the process boundary (one per command that
    runs a federation), each paying a Python, torch and Ray start-up."""
    return subprocess.run(
        [sys.executable, "-m", "silobridge.federation.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(cwd)},
    )


def silobridge_in_process(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`silobridge ARGS` run by typer's CliRunner in this process, in `cwd` with HOME there, on the worker's
    shared Ray: for tests of a command's output, files and exit code, without a process's start-up.

    What `main()` adds around the app is done here too (the accountant's warnings quietened); an exception
    the app did not turn into an exit code is a bug, raised with its traceback (`main()` would exit 1)."""
    from typer.testing import CliRunner

    from silobridge.federation.cli import app, err_console, out_console
    from silobridge.federation.progress import log as progress_log
    from silobridge.federation.settings import quiet_accountant

    quiet_accountant()
    previous = Path.cwd()
    # the consoles were made at import: in an xdist worker they keep 80 columns whatever COLUMNS says now,
    # and a long tmp path would wrap mid-name
    widths = {console: console._width for console in (err_console, out_console)}  # None: measured when printing
    # the progress logger as in a fresh process (no handler, propagating): `log_to_stderr` binds its handler to
    # this command's stderr, not to the stream of the first command this worker ran, so the live lines are captured
    logger_state = (list(progress_log.handlers), progress_log.propagate, progress_log.level)
    os.chdir(cwd)
    try:
        for console in widths:
            console.width = 200
        for handler in logger_state[0]:
            progress_log.removeHandler(handler)
        progress_log.propagate, progress_log.level = True, logging.NOTSET
        result = CliRunner(env={"COLUMNS": "200", "HOME": str(cwd)}).invoke(app, list(args))
    finally:
        os.chdir(previous)
        for console, width in widths.items():
            console._width = width
        for handler in list(progress_log.handlers):
            progress_log.removeHandler(handler)
        for handler in logger_state[0]:
            progress_log.addHandler(handler)
        progress_log.propagate, progress_log.level = logger_state[1], logger_state[2]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(["silobridge", *args], result.exit_code, result.stdout, result.stderr)


def _bad_scenario(tmp_path: Path, change) -> Path:
    raw = tomllib.loads(TINY.read_text())
    change(raw)
    path = tmp_path / "bad.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda raw: raw["firms"][0].pop("tier"), "field 'firms[R1].tier': required field is missing"),
        (lambda raw: raw["firms"][1].update(size=-1.0), "field 'firms[R2].size'"),
        (lambda raw: raw["links"].append({"supplier": "X1", "customer": "R1"}), "unknown firm 'X1'"),
        (lambda raw: raw["firms"][1].update(history=12), "firm 'R2': field 'history' is 12 periods"),
    ],
)
def test_bad_scenario_exits_2_and_writes_nothing(tmp_path: Path, change, expected: str) -> None:
    scenario = _bad_scenario(tmp_path, change)
    result = silobridge_in_process("simulate", str(scenario), "--out", str(tmp_path / "runs"), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    message = " ".join(result.stderr.split())
    assert "configuration error" in message and str(scenario) in message and expected in message
    assert not (tmp_path / "runs").exists()


def test_out_of_range_options(tmp_path: Path) -> None:
    result = silobridge_in_process(
        "simulate", str(TINY), "--rounds", "0", "--out", str(tmp_path / "runs"), cwd=tmp_path
    )
    assert result.returncode == 2 and "--rounds" in result.stderr
    result = silobridge_in_process(
        "simulate", str(TINY), "--set", "training.learning_rate=-1", "--out", str(tmp_path / "runs"), cwd=tmp_path
    )
    assert result.returncode == 2 and "training.learning_rate" in result.stderr
    result = silobridge_in_process("simulate", str(tmp_path / "missing.toml"), cwd=tmp_path)
    assert result.returncode == 2 and "file not found" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_generate_writes_partner_csv_files(tmp_path: Path) -> None:
    result = silobridge_in_process("generate", str(TINY), "--out", str(tmp_path / "data"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folders = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert folders == ["D1", "M1", "R1", "R2", "S1"]
    data = load_firm_data(tmp_path / "data" / "R2", GENERATED_SCHEMA, min_periods=28)
    assert data.demand is not None and data.risk is not None and data.orders is not None
    again = silobridge_in_process("generate", str(TINY), "--out", str(tmp_path / "data"), cwd=tmp_path)
    assert again.returncode == 2 and "is not empty" in again.stderr


def test_simulate_prints_the_comparison_and_writes_the_run(tmp_path: Path) -> None:
    result = silobridge(
        "simulate",
        str(TINY),
        "--rounds",
        "2",
        "--seed",
        "3",
        "--run-id",
        "cli-run",
        "--out",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for text in (
        "demand model",
        "risk model",
        "federated",
        "local_only",
        "centralised",
        "naive",
        "Acceptance checks",
        "Cross-firm efficiency",
    ):
        assert text in result.stdout
    assert (tmp_path / "runs" / "cli-run" / "summary.json").exists()
    assert "round 2 risk" in result.stderr  # plain progress lines when not on a terminal
    # Private by default: each round's line says what has been spent, the end shows the budget per firm.
    summary = json.loads((tmp_path / "runs" / "cli-run" / "summary.json").read_text())
    spent = summary["privacy"]["epsilon_overall"]
    assert f"epsilon spent {spent:.2f}" in result.stderr
    assert f"epsilon spent {spent:.3f} of 8" in " ".join(result.stdout.split())
    assert (tmp_path / "runs" / "cli-run" / "privacy_ledger.jsonl").exists()


def test_simulate_no_dp_is_the_non_private_comparison(tmp_path: Path) -> None:
    # A process of its own: the live lines it reads go to stderr through the logging handler, which an earlier
    # in-process run in the same xdist worker has bound to another stream (in-process, stderr came back empty).
    result = silobridge(
        "simulate",
        str(TINY),
        "--rounds",
        "1",
        "--no-dp",
        "--baselines",
        "none",  # what this test reads is the privacy, the groups and the tables' rows, not local-only figures
        "--run-id",
        "open",
        "--out",
        str(tmp_path / "runs"),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "runs" / "open"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["privacy"]["enabled"] is False and not (run / "privacy_ledger.jsonl").exists()
    assert "epsilon" not in result.stderr and "Privacy (" not in result.stdout
    # Tiny's 2 large firms: only 'all' is released; the live lines and tables show no small/large rows.
    assert set(summary["groups_withheld"]) == {"demand", "risk"}
    assert all(
        set(by_group) == {"all"}
        for methods in summary["models"].values()
        for method, by_group in methods.items()
        if method != "per_firm"  # keyed by firm: each firm's own figures, simulation only
    )
    assert "demand WAPE all" in result.stderr and "small" not in result.stderr
    assert "demand model" in result.stdout and "federated" in result.stdout
    assert "Small and large firms not shown on their own" in result.stdout


def test_calibrate_finds_the_noise_that_spends_the_budget(tmp_path: Path) -> None:
    import re

    import dp_accounting as dpa
    from dp_accounting.rdp import RdpAccountant

    result = silobridge_in_process("calibrate", "--epsilon", "8", "--rounds", "30", "--local-epochs", "2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    z = float(re.search(r"noise multiplier ([0-9.]+)", result.stdout).group(1))

    # Checked against dp-accounting directly: 30 rounds of 2 epochs of 10 Poisson steps at rate 0.1.
    def spent(noise: float) -> float:
        accountant = RdpAccountant()
        accountant.compose(dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(noise)), 600))
        return accountant.get_epsilon(1e-5)

    assert 7.9 <= spent(z) <= 8.0 + 1e-3
    assert spent(z * 0.98) > 8.0  # and it is the smallest such noise, to within 2%
    result = silobridge_in_process("calibrate", "--epsilon", "8", "--unit", "teams", cwd=tmp_path)
    assert result.returncode == 2 and "--unit" in result.stderr
