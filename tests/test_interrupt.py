"""Ctrl-C during a private simulation: it stops at once, cleanly, and loses no ledger.

The issue: SIGINT to the process group killed the Ray workers, the process then hung for ten minutes,
wrote a failure.json with a wrong reason, left the run hidden in `.RUNID.partial` (which the next run
with the same id deleted), and a second SIGINT ended in a traceback. One small simulation (trio, 2
rounds, no baselines: not checked here), interrupted once round 1's release is in the ledger.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from silobridge.federation.cli import app
from silobridge.privacy.ledger import verify_ledger
from tests.conftest import ROOT
from tests.test_cli import silobridge_in_process

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"


def _silobridge(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "silobridge.federation.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: SIGINT goes to it and its Ray workers, as Ctrl-C does
        env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"},
    )


def _wait_for_release(ledger: Path, process: subprocess.Popen[str], timeout: float = 420) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ledger.exists() and '"kind":"release"' in ledger.read_text():
            return
        if process.poll() is not None:
            raise AssertionError(f"the simulation ended before its first release: {process.communicate()}")
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    raise AssertionError("no release reached the ledger in time")


ROUNDS = 10
"""Enough rounds after the first release for Ctrl-C to land mid-training: on a quiet machine a trio round takes
about 0.1 s, and with 2 rounds the run had closed its ledger as completed before the signal arrived (CI, quiet)."""


@pytest.mark.timeout(900)  # two simulations: the interrupted one and its resume
def test_ctrl_c_stops_a_private_simulation_cleanly_and_keeps_its_ledger(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    args = (
        "simulate",
        str(TRIO),
        "--rounds",
        str(ROUNDS),
        "--baselines",
        "none",
        "--run-id",
        "cut",
        "--out",
        str(out),
        "--plain",
    )
    process = _silobridge(*args)
    _wait_for_release(out / ".cut.partial" / "privacy_ledger.jsonl", process)
    os.killpg(process.pid, signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)  # before: alive for ten more minutes
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raise
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "privacy spent before the interrupt: epsilon" in stderr
    run = out / "cut"  # visible, not hidden in .cut.partial
    assert not (out / ".cut.partial").exists()
    assert json.loads((run / "failure.json").read_text())["error"] == "interrupted: SIGINT (Ctrl-C)"
    report = verify_ledger(run / "privacy_ledger.jsonl")
    assert report.ended and report.end_reason == "interrupted: SIGINT (Ctrl-C)" and report.releases
    assert f"epsilon {report.epsilon_overall:.4f} of 8" in stderr
    assert f"silobridge simulate --resume {run}" in stderr  # the resume command, printed
    # `report` accepts the interrupted run; `audit` verifies its ledger (a per-run key: said so, exit 5).
    shown = CliRunner().invoke(app, ["report", str(run)])
    assert shown.exit_code == 0 and "This run failed: interrupted: SIGINT" in (run / "report.html").read_text()
    assert CliRunner().invoke(app, ["audit", str(run)]).exit_code == 5
    # The same run id again is refused: the interrupted run is never overwritten.
    again = CliRunner().invoke(app, list(args))
    assert again.exit_code == 2 and "already exists" in " ".join(again.output.split())
    # The printed command resumes it: the ledger reopens after its interrupt entry and closes completed. No one
    # interrupts it: it runs in this process, on the worker's Ray (no process's Python, torch and Ray start-up).
    resumed = silobridge_in_process("simulate", "--resume", str(run), "--plain", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = verify_ledger(run / "privacy_ledger.jsonl")
    assert final.end_reason == "completed" and final.resumes[0]["reopened_after"] == "interrupted: SIGINT (Ctrl-C)"
    assert sorted({r.release_id.split("/")[0] for r in final.releases}) == sorted(
        f"round-{n}" for n in range(1, ROUNDS + 1)
    )
    assert (run / "summary.json").exists() and (run / "failure.1.json").exists()
