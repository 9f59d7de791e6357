"""`flwr run .` runs the same ServerApp and ClientApp on a local SuperLink's simulation runtime.

The test starts its own local SuperLink (its own FLWR_HOME and ports) and stops every process it
started, also when it fails. `flwr run --stream` exits 0 even when the run failed, so the test
judges the run by the run directory it wrote.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"
"""Three firms: what is asserted is that `flwr run .` writes the run directory a simulation writes, at any size."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _processes_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and int(entry.name) != os.getpid():
                pids.append(int(entry.name))
    return pids


@pytest.fixture()
def flwr_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "flwr-home"
    home.mkdir()
    try:
        yield home
    finally:
        for pid in _processes_mentioning(str(home)):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10
        while _processes_mentioning(str(home)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in _processes_mentioning(str(home)):
            os.kill(pid, signal.SIGKILL)


def test_flwr_run_writes_the_same_run_directory(flwr_home: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    bin_dir = Path(sys.executable).parent  # flwr starts flower-superlink from PATH
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "FLWR_HOME": str(flwr_home),
        "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
        "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": str(_free_port()),
        "FLWR_LOCAL_CONTROL_API_PORT": str(_free_port()),
    }
    run_config = f'scenario="{TRIO}" out-dir="{out}" run-id="via-flwr-run" num-rounds=2 set="training.model=mlp"'
    flwr = bin_dir / "flwr"
    result = subprocess.run(
        [
            str(flwr),
            "run",
            str(ROOT),
            "--run-config",
            run_config,
            "--federation-config",
            "num-supernodes=3",
            "--stream",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=480,
    )
    run_dir = out / "via-flwr-run"
    assert (run_dir / "summary.json").exists(), result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["federation"]["firms"] == 3 and summary["federation"]["rounds"] == 2
    # the MLP family (DP-SGD rounds, pinned by the run config's `set`); firms deploy their own choice
    methods = set(summary["models"]["demand"])
    required = {"deployed", "per_firm", "federated", "local_only", "centralised", "naive"}
    assert required <= methods <= required | {"federated_linear"}
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if r["model"] in ("demand", "risk")]) == 4  # two MLP rounds of two models
    assert "stage: round 2/2" in result.stdout + result.stderr
