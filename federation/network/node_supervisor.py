"""`silobridge join` with a warm executor: the SuperNode and its executor, started and kept running together.

The SuperNode (`--isolation process`) holds everything a partner must not lose: its registration
with the SuperLink (node id), the messages it pulled, and each run's `context.state`; the lifetime
odometer is a signed file under `--state`. The executor holds nothing but imported code, so when it
exits the SuperNode keeps running and the executor is started again; the node's next task goes to
the new one. A task in flight when it died is lost (the coordinator sees this partner drop out of that
exchange). An executor that cannot start at all (exit code 2: Flower changed, bad option) or keeps
dying (more than `max_restarts` within `window_s`) stops the node: it leaves with an error, not in a
crash loop. The node announces each task it creates on a FIFO beside the executor's secret (`task_wake`), so the
executor need not ask it for tasks 20 times a second.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from silobridge.errors import FederationError
from silobridge.federation.network.task_wake import WAKE_ENV, make_fifo
from silobridge.federation.network.warm_executor import EXIT_CONFIG


@dataclass(frozen=True)
class SupervisedNode:
    """The two commands of a warm partner and the local address the executor reaches the node by."""

    node: list[str]
    executor: Callable[[int], list[str]]
    """The executor's command, given the SuperNode's pid."""
    runtime_address: str
    max_restarts: int = 5
    window_s: float = 60.0
    ready_timeout_s: float = 120.0


def executor_command(
    runtime_address: str,
    *,
    mode: str,
    secret_file: Path,
    node_pid: int,
    handoff_log: Path | None = None,
    node_config: str | None = None,
) -> list[str]:
    """The warm executor for one SuperNode (started with this interpreter; its parent is `silobridge join`);
    `node_config`: the node's `--node-config`, whose firm the executor prepares before it forks."""
    command = [
        sys.executable,
        "-m",
        "silobridge.federation.network.warm_executor",
        "--runtime-api-address",
        runtime_address,
        "--mode",
        mode,
        "--superexec-auth-secret-file",
        str(secret_file),
        "--parent-pid",
        str(os.getpid()),
        "--node-pid",
        str(node_pid),
    ]
    if handoff_log is not None:
        command += ["--handoff-log", str(handoff_log.resolve())]
    if node_config is not None:
        command += ["--node-config", node_config]
    return command


@contextmanager
def superexec_secret() -> Iterator[Path]:
    """A fresh shared secret (mode 0600, removed afterwards): only our executor may take the node's tasks."""
    with tempfile.TemporaryDirectory(prefix="silobridge-exec-") as folder:
        path = Path(folder) / "superexec.secret"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(secrets.token_bytes(32))
        yield path


def wait_listening(address: str, node: subprocess.Popen, *, timeout_s: float) -> None:
    """Block until the SuperNode's Runtime API accepts connections (or the node has exited)."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if node.poll() is not None:
            raise FederationError(f"the SuperNode exited with {node.returncode} before {address} opened")
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return
        except OSError:
            time.sleep(0.1)
    raise FederationError(f"the SuperNode's Runtime API at {address} did not open within {timeout_s:.0f} s")


NODE_EXIT_GRACE_S = 5.0
"""How long `join`, stopped by a signal, lets the SuperNode exit on its own before terminating it. A SIGTERM or
Ctrl-C to join's process group reaches the node too, which then deactivates itself at the SuperLink; a second
SIGTERM from us cut that short, and the SuperLink counted the partner online (its key unable to rejoin) for up
to a minute more. A signal to join's pid alone costs this wait before the node is stopped."""


def _exited_within(process: subprocess.Popen | None, seconds: float) -> None:
    """Wait up to `seconds` for `process` to exit by itself."""
    if process is None:
        return
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        pass  # still running: `_stop` terminates it


def _stop(process: subprocess.Popen | None) -> None:
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def supervise(
    plan: SupervisedNode,
    env: Mapping[str, str],
    *,
    say: Callable[[str], None] = lambda text: print(text, file=sys.stderr, flush=True),
    poll_s: float = 0.2,
) -> int:
    """Run the SuperNode and keep its executor running; the exit code `silobridge join` leaves with."""

    def stop_on_signal(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop_on_signal)
    node: subprocess.Popen | None = None
    executor: subprocess.Popen | None = None
    try:
        node = subprocess.Popen(plan.node, env=dict(env))
        wait_listening(plan.runtime_address, node, timeout_s=plan.ready_timeout_s)
        executor = subprocess.Popen(plan.executor(node.pid), env=dict(env))
        restarts: deque[float] = deque()
        while True:
            if node.poll() is not None:
                return node.returncode
            code = executor.poll()
            if code is not None:
                if code == EXIT_CONFIG:
                    say("error: the warm executor cannot run (see its message above); stopping the SuperNode")
                    return 1
                now = time.monotonic()
                while restarts and now - restarts[0] > plan.window_s:
                    restarts.popleft()
                if len(restarts) >= plan.max_restarts:
                    say(
                        f"error: the warm executor exited {len(restarts) + 1} times within {plan.window_s:.0f} s "
                        f"(last code {code}); stopping the SuperNode"
                    )
                    return 1
                restarts.append(now)
                say(f"warm executor exited with code {code}: restarting it (the SuperNode stays registered)")
                executor = subprocess.Popen(plan.executor(node.pid), env=dict(env))
            time.sleep(poll_s)
    except FederationError as err:
        say(f"error: {err}")
        return (node.returncode or 1) if node is not None and node.poll() is not None else 1
    except (KeyboardInterrupt, SystemExit):  # SystemExit: `stop_on_signal`
        _stop(executor)
        _exited_within(node, NODE_EXIT_GRACE_S)
        raise
    finally:
        _stop(executor)
        _stop(node)
        signal.signal(signal.SIGTERM, previous)


def run_supervised(
    node: Sequence[str], runtime_address: str, env: Mapping[str, str], *, mode: str, handoff_log: Path | None
) -> int:
    """`silobridge join`'s warm path: a fresh executor secret, the node with it, the executor, supervised."""
    node_config = node[node.index("--node-config") + 1] if "--node-config" in node else None
    with superexec_secret() as secret:
        if env.get(WAKE_ENV) != "0":  # the node wakes its executor when it creates a task (task_wake)
            env = {**env, WAKE_ENV: str(make_fifo(secret.parent))}
        plan = SupervisedNode(
            node=[*node, "--isolation", "process", "--superexec-auth-secret-file", str(secret)],
            executor=lambda node_pid: executor_command(
                runtime_address,
                mode=mode,
                secret_file=secret,
                node_pid=node_pid,
                handoff_log=handoff_log,
                node_config=node_config,
            ),
            runtime_address=runtime_address,
        )
        return supervise(plan, env)
