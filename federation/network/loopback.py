"""A whole federation on 127.0.0.1, started through the same commands a coordinator and partners run.

The loopback test and the network benchmark both use it: certificates, one key per firm, a
SuperLink with TLS and node authentication, registered keys, one `silobridge join` per firm, and
`silobridge run`. Every process it starts runs in its own session and is stopped by `stop()`
(a context manager makes that happen on failure too).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from silobridge.errors import FederationError
from silobridge.federation.network.deploy import process_env, wait_healthy

CLI = (sys.executable, "-m", "silobridge.federation.cli")

THREADS_ENV = "OMP_NUM_THREADS"
"""Read by torch when a process imports it. Every partner of a loopback federation shares this machine's cores, so
each process's torch gets one thread, as each simulated firm's does (`client_app` sets it), not one per core each:
with 5 partners' forks on 2 cores, OpenMP threads spinning against each other cost a training step 3x the CPU
(measured, session 11). A partner on its own machine keeps torch's default. The caller's own setting wins."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LoopbackFederation:
    """Files under `root`; processes started by the methods below, all stopped by `stop()`."""

    root: Path
    federation_file: Path
    app_dir: Path
    port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.env = process_env(self.root / "flwr-home", superexec_poll_s=None)  # each command sets its own
        self.env.setdefault(THREADS_ENV, "1")
        self.env["PYTHONPATH"] = str(self.app_dir) + os.pathsep + self.env.get("PYTHONPATH", "")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> LoopbackFederation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- processes ---------------------------------------------------------------------------------

    def start(self, name: str, command: Sequence[str]) -> subprocess.Popen:
        """A background process whose output goes to `<root>/<name>.log`."""
        with open(self.root / f"{name}.log", "wb") as log:
            process = subprocess.Popen(
                list(command),
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.app_dir,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        return (self.root / f"{name}.log").read_text(errors="replace")

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """A `silobridge` command run to completion (output captured)."""
        return subprocess.run(
            [*CLI, *args], env=self.env, cwd=self.app_dir, capture_output=True, text=True, timeout=timeout, check=False
        )

    def _checked(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        result = self.cli(*args, timeout=timeout)
        if result.returncode != 0:
            raise FederationError(f"silobridge {' '.join(args)} failed: {result.stdout[-2000:]}{result.stderr[-2000:]}")
        return result

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

    # -- the coordinator's and the partners' steps ---------------------------------------------------

    def make_credentials(self, firms: Sequence[str]) -> None:
        self._checked("certs", "--out", str(self.root / "certs"), "--host", "127.0.0.1")
        for firm in firms:
            self._checked("keys", "--out", str(self.key(firm)))

    def key(self, firm: str) -> Path:
        return self.root / "keys" / f"{firm}.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "certs" / "ca.pem"

    def start_superlink(self, *, timeout_s: float = 90) -> None:
        self.start("superlink", [*CLI, "superlink", "--certs", str(self.root / "certs"), "--port", str(self.port)])
        wait_healthy(self.address, self.ca_cert, timeout_s=timeout_s)

    def register(self, firm: str) -> None:
        self._checked("register", str(self.key(firm).with_name(self.key(firm).name + ".pub")))

    def join_command(self, data_dir: Path, *extra: str, key: Path, ca_cert: Path | None = None) -> list[str]:
        return [
            *CLI,
            "join",
            "--superlink",
            self.address,
            "--ca",
            str(ca_cert or self.ca_cert),
            "--key",
            str(key),
            "--data",
            str(data_dir),
            "--config",
            str(self.federation_file),
            "--runtime-port",
            str(free_port()),
            *extra,
        ]

    def join(self, firm: str, data_dir: Path, *extra: str) -> subprocess.Popen:
        """Start the firm's SuperNode with `silobridge join`; `extra` options pass through (e.g. --noise-seed)."""
        return self.start(f"node-{firm}", self.join_command(data_dir, *extra, key=self.key(firm)))

    def run(self, out: Path, run_id: str, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
        return self.cli(
            "run", str(self.federation_file), "--out", str(out), "--run-id", run_id, *extra, timeout=timeout
        )
