"""A real federation on loopback: SuperLink with TLS and node authentication, three partner SuperNodes.

Everything goes through the commands a coordinator and the partners run (`silobridge certs`,
`keys`, `superlink`, `register`, `join`, `run`), on 127.0.0.1 only. The run must equal a pilot
simulation on the same CSV files (secure aggregation and record-level DP, both seeded, so the
models differ only by the secure sum's quantisation). Three would-be nodes are refused: one with an
unregistered key, one with no key, one trusting another CA; each refusal shows in the logs. Every
process the test starts is stopped by it, also on failure.
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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.data import write_firm_data
from federation.network.deploy import process_env, wait_healthy
from federation.simulation import simulate
from scenarios.generator import generate_chain
from scenarios.schema import load_scenario
from tests.conftest import ROOT

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"
FIRMS = ("R1", "D1", "M1")
CLI = [sys.executable, "-m", "federation.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Loopback:
    """The federation's files and the processes the test started (stopped at the end, whatever happens)."""

    root: Path
    env: dict[str, str]
    port: int
    processes: list[subprocess.Popen] = field(default_factory=list)

    def start(self, name: str, command: list[str]) -> subprocess.Popen:
        log = open(self.root / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=ROOT, start_new_session=True
        )
        log.close()
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*CLI, *args], env=self.env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
        )

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for process in self.processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loopback]:
    root = tmp_path_factory.mktemp("loopback")
    env = process_env(root / "flwr-home")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    net = Loopback(root, env, _free_port())
    try:
        chain = generate_chain(load_scenario(TRIO))
        for firm in FIRMS:
            write_firm_data(root / "data" / firm, chain.tables[firm].demand, chain.tables[firm].risk)
        assert net.cli("certs", "--out", str(root / "certs"), "--host", "127.0.0.1").returncode == 0
        assert net.cli("certs", "--out", str(root / "other-ca"), "--host", "127.0.0.1").returncode == 0
        for firm in (*FIRMS, "X9"):
            made = net.cli("keys", "--out", str(root / "keys" / f"{firm}.key"))
            assert made.returncode == 0, made.stderr
        net.start("superlink", [*CLI, "superlink", "--certs", str(root / "certs"), "--port", str(net.port)])
        wait_healthy(f"127.0.0.1:{net.port}", root / "certs" / "ca.pem", timeout_s=90)
        for firm in FIRMS:
            registered = net.cli("register", str(root / "keys" / f"{firm}.key.pub"))
            assert registered.returncode == 0, registered.stdout + registered.stderr
        yield net
    finally:
        net.stop()


def _join(net: Loopback, firm: str, *, key: str, ca: str = "certs", data: str | None = None) -> list[str]:
    return [
        *CLI,
        "join",
        "--superlink",
        f"127.0.0.1:{net.port}",
        "--ca",
        str(net.root / ca / "ca.pem"),
        "--key",
        str(net.root / "keys" / f"{key}.key"),
        "--data",
        str(net.root / "data" / (data or firm)),
        "--config",
        str(TRIO),
        "--runtime-port",
        str(_free_port()),
    ]


@pytest.fixture(scope="module")
def network_run(loopback: Loopback) -> dict:
    for firm in FIRMS:
        loopback.start(f"node-{firm}", _join(loopback, firm, key=firm))
    run = loopback.cli("run", str(TRIO), "--out", str(loopback.root / "runs"), "--run-id", "net", timeout=900)
    summary = loopback.root / "runs" / "net" / "summary.json"
    assert summary.exists(), run.stdout[-4000:] + run.stderr[-4000:] + loopback.log("superlink")[-4000:]
    return {"summary": json.loads(summary.read_text()), "stdout": run.stdout + run.stderr}


def test_a_network_run_equals_the_pilot_simulation_on_the_same_files(loopback: Loopback, network_run: dict) -> None:
    pilot = simulate(
        {
            "scenario": str(TRIO),
            "out-dir": str(loopback.root / "runs"),
            "run-id": "pilot",
            "data": str(loopback.root / "data"),
        },
        cpus=2,
    )
    net_dir = loopback.root / "runs" / "net"
    summary = network_run["summary"]
    assert summary["federation"]["firms"] == 3 and summary["federation"]["rounds"] == 2
    assert summary["federation"]["aggregation"]["mode"] == "secure"
    assert "round 2/2" in network_run["stdout"]
    for kind in ("demand", "risk"):
        ours = torch.load(net_dir / "models" / f"{kind}.pt")
        theirs = torch.load(pilot.path / "models" / f"{kind}.pt")
        assert ours.keys() == theirs.keys()
        for name in ours:
            # Seeded DP-SGD in every firm; only the secure sum's stochastic rounding differs (about 1e-9).
            np.testing.assert_allclose(ours[name].numpy(), theirs[name].numpy(), atol=1e-6, rtol=0)
    spent = summary["privacy"]["firms"]
    assert set(spent) == set(FIRMS)
    for firm, row in pilot.summary["privacy"]["firms"].items():
        assert spent[firm]["releases"] == row["releases"] == 2
        assert spent[firm]["epsilon_rdp"] == pytest.approx(row["epsilon_rdp"], rel=1e-9)
    # The auditor verifies the network run's ledger like any other.
    audit = loopback.cli("audit", str(net_dir), "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    # A real federation holds no one's test data: nothing is measured, nothing pretends to be.
    assert summary["models"] == {"demand": {}, "risk": {}}


@pytest.mark.parametrize(
    ("name", "key", "ca", "node_says", "superlink_says"),
    [
        ("unregistered", "X9", "certs", "Failed to activate SuperNode", "No SuperNode found with the given public key"),
        ("no-key", None, "certs", "All SuperNodes must be registered", "Attempted to register SuperNode"),
        ("wrong-ca", "R1", "other-ca", "CERTIFICATE_VERIFY_FAILED", None),
    ],
)
def test_nodes_without_a_registered_key_or_the_right_ca_are_refused(
    loopback: Loopback,
    network_run: dict,
    name: str,
    key: str | None,
    ca: str,
    node_says: str,
    superlink_says: str | None,
) -> None:
    command = _join(loopback, "R1", key=key or "R1", ca=ca)
    if key is None:  # a SuperNode started by hand without --auth-supernode-private-key
        from federation.network.deploy import flower_executable

        command = [
            flower_executable("flower-supernode"),
            "--superlink",
            f"127.0.0.1:{loopback.port}",
            "--root-certificates",
            str(loopback.root / ca / "ca.pem"),
            "--max-retries",
            "1",
            "--port",
            str(_free_port()),
        ]
    process = loopback.start(f"refused-{name}", command)
    code = process.wait(timeout=120)
    log = loopback.log(f"refused-{name}")
    assert code != 0, log
    assert node_says in log, log[-3000:]
    if superlink_says is not None:
        assert superlink_says in loopback.log("superlink")
