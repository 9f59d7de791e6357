"""A partner's warm executor: the SuperNode's tasks served by forks of one process that imported everything once.

flwr 1.41 serves each message with a fresh `flwr-clientapp` process (interpreter, flwr, torch, our
ClientApp: seconds on every exchange), which exits after one message. With `flower-supernode
--isolation process` the node starts no SuperExec of its own: an outside process polls the node's
Runtime API (`AcquireTask`), receives a one-task token, and runs a ClientApp with it. This module is
that process (`python -m silobridge.federation.network.warm_executor`): it imports torch, Opacus,
flwr and our ClientApp once, then runs Flower's own SuperExec loop (`run_superexec`) with an executor
of ours whose `launch` forks a child that runs Flower's own `run_clientapp` with the token (pull the
message and context, run the ClientApp, push the reply and context, exit). The parent never runs a
task, so torch's thread pools are never started before a fork.

One private hook, pinned like `flower_hooks`: `run_superexec` builds its executor with the module's
`get_executor` name, which offers only Flower's subprocess and Kubernetes executors; we replace that
name in the module. `check_superexec_loop` checks the flwr version and the calls this relies on and
raises `FederationError` otherwise (tests/test_warm_executor.py fails as well).

`--mode cold` starts a fresh interpreter per task instead (what `flwr-clientapp` costs), with the
same hand-off record, so the benchmark compares both paths by the same clock.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import inspect
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from silobridge.errors import FederationError, SiloBridgeError
from silobridge.federation.network.flower_hooks import IdleBackoff, apply_object_pull_backoff
from silobridge.federation.network.task_wake import Waker, wake_path
from silobridge.federation.network.trace import mark, trace_task

HOOKED_MODULE = "flwr.supercore.superexec.run_superexec"
TESTED_FLWR = ("1.41.0",)
"""Flower versions whose SuperExec loop and ClientApp runner were read for this executor."""
EXPECTED_SOURCE = (
    "executor = get_executor(",
    "plugin.launch_task(",
    "client.AcquireTask(",
    "time.sleep(task_poll_interval)",
)
"""What `run_superexec` must still contain: the executor is built by name, every task is launched through it, and
the loop sleeps its task poll interval through the module's `time` (which `TaskPollSleeps` stands in for)."""
FLOWER_TASK_POLL_S = 1.0
"""Flower's default task poll: where an idle executor's poll backs off to."""
RUN_CLIENTAPP_PARAMS = (
    "runtime_api_address",
    "token",
    "insecure",
    "certificates",
    "parent_pid",
    "runtime_dependency_install",
)
"""The keyword arguments `flwr.supernode.runtime.run_clientapp.run_clientapp` takes (and a child passes)."""

PRELOAD = (
    "torch",
    "flwr.supernode.runtime.run_clientapp",
    "opacus",
    "silobridge.federation.client_app",
    "silobridge.clients.firm",
    "silobridge.clients.own_budget",
    "silobridge.clients.deploy",
    "silobridge.clients.models",
    "silobridge.clients.normaliser",
    "silobridge.clients.query_answers",
    "silobridge.clients.query_answers.own_spend",
    "silobridge.federation.odometer_glue",
    "silobridge.federation.odometer_charges",
)
"""Everything a task imports: Flower's ClientApp runner (its FAB installer pulls in typer and tomli: 0.3 s under
load) and what the ClientApp's handlers import (client_app.py imports them lazily, so that a fresh process for a
light stage stays light): loaded once in the warm parent, shared copy-on-write by every fork."""

EXIT_CONFIG = 2
"""The executor cannot serve at all (Flower changed, bad option): `silobridge join` does not restart it."""

Mode = Literal["warm", "cold"]


def check_superexec_loop() -> ModuleType:
    """Flower's SuperExec module, after checking it is the one this executor was written against."""
    installed = version("flwr")
    if installed not in TESTED_FLWR:
        raise FederationError(
            f"flwr {installed} is installed, but the warm executor (federation/network/warm_executor.py) was "
            f"checked against flwr {', '.join(TESTED_FLWR)} only: re-read {HOOKED_MODULE} and "
            "flwr/supernode/runtime/run_clientapp.py, then update it (or join with --executor flower)"
        )
    module = importlib.import_module(HOOKED_MODULE)
    source = inspect.getsource(module)
    missing = [text for text in EXPECTED_SOURCE if source.count(text) != 1]
    if missing or not callable(getattr(module, "get_executor", None)):
        raise FederationError(
            f"{HOOKED_MODULE} (flwr {installed}) no longer builds its executor as the warm executor expects "
            f"(missing or repeated: {missing or ['get_executor']}): update federation/network/warm_executor.py"
        )
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    params = tuple(inspect.signature(run_clientapp).parameters)
    if params != RUN_CLIENTAPP_PARAMS:
        raise FederationError(
            f"flwr {installed}'s run_clientapp takes {params}, the warm executor passes {RUN_CLIENTAPP_PARAMS}: "
            "update federation/network/warm_executor.py"
        )
    return module


def preload(modules: Sequence[str] = PRELOAD) -> float:
    """Import what every task needs, once; the seconds it took."""
    started = time.perf_counter()
    for name in modules:
        importlib.import_module(name)
    return time.perf_counter() - started


def warm_node_caches(node_config_text: str) -> float:
    """Build once, before any fork, what each task would otherwise rebuild from the node's config (Flower's
    `--node-config` text, as the SuperNode got it): the federation file's spec with its DP noise calibration
    (seconds of accounting: in every training message before this), the firm's data and client. The seconds it
    took. Tasks still check each request against the file; a cache that does not match a request is not used."""
    from flwr.common.config import parse_config_args

    from silobridge.federation.firm_source import warm_node

    started = time.perf_counter()
    warm_node(parse_config_args([node_config_text]))
    return time.perf_counter() - started


# -- one task ------------------------------------------------------------------------------------


def _record_handoffs(
    log: Path | None, *, mode: Mode, task_id: int, acquired: float, executor_pid: int, started: float
) -> None:
    """Append one JSON line when the ClientApp's handler is entered: the task's hand-off, measured (`started`:
    when the task's process began to run: a fork's first line, a fresh interpreter's `main`).

    Patches `ClientApp.__call__` in this (child) process only; the parent and other tasks are untouched. Also
    records when Flower's runner had pulled the task's input (context, run, FAB and the message with its objects:
    `input_ms`), so the log shows whether the hand-off is spent pulling or after it.
    """
    if log is None:
        return
    import flwr.supernode.runtime.run_clientapp as runner
    from flwr.clientapp.client_app import ClientApp

    original = ClientApp.__call__
    pulled: dict[str, float] = {}
    original_pull = runner.pull_task_input

    def timed_pull(client: Any) -> Any:
        result = original_pull(client)
        pulled["at"] = time.time()
        return result

    runner.pull_task_input = timed_pull

    def timed(self: ClientApp, message: Any, context: Any) -> Any:
        entered = time.time()
        row = {
            "mode": mode,
            "task_id": task_id,
            "pid": os.getpid(),
            "executor_pid": executor_pid,
            "message_type": message.metadata.message_type,
            "acquired": acquired,
            "entered": entered,
            "handoff_ms": round((entered - acquired) * 1000, 2),
            "process_ms": round((started - acquired) * 1000, 2),
            "input_ms": round((pulled.get("at", entered) - acquired) * 1000, 2),
        }
        with open(log, "a", encoding="utf-8") as out:
            out.write(json.dumps(row) + "\n")
        return original(self, message, context)

    ClientApp.__call__ = timed  # type: ignore[method-assign]


def serve_one(
    *,
    runtime_api_address: str,
    token: str,
    parent_pid: int | None,
    mode: Mode,
    task_id: int,
    acquired: float,
    handoff_log: Path | None,
    executor_pid: int,
) -> int:
    """Run one task with Flower's own ClientApp runner; its exit code (Flower exits through SystemExit)."""
    started = time.time()
    trace_task(task_id)
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    if mode == "cold":  # a warm parent applied it before forking
        apply_object_pull_backoff(local=True)

    _record_handoffs(
        handoff_log, mode=mode, task_id=task_id, acquired=acquired, executor_pid=executor_pid, started=started
    )
    try:
        run_clientapp(
            runtime_api_address=runtime_api_address,
            token=token,
            insecure=True,
            certificates=None,
            parent_pid=parent_pid,
            runtime_dependency_install=False,
        )
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return 0


# -- the executor Flower's SuperExec loop launches through ------------------------------------------


@dataclass
class TaskExecutor:
    """Flower's `Executor` protocol (flwr.supercore.superexec.executor.types): forks (warm) or spawns (cold).

    Only ClientApp tasks are served (a SuperNode hands out nothing else). Children are reaped between
    polls. A task's process watches the SuperNode (`node_pid`), not this executor: a task in flight when
    the executor dies still pushes its reply, and tasks end when the node that handed them out is gone.
    """

    mode: Mode
    handoff_log: Path | None = None
    node_pid: int | None = None
    children: dict[int, int] = field(default_factory=dict)
    """pid -> task id of the tasks still running."""
    active_at: float = field(default_factory=time.monotonic)
    """When a task was last launched (or the executor started): the task poll is fast for a while after it."""

    def get_eligible_capacity(
        self, supported_task_types: set[Any], *, insecure: bool = False, root_certificates_path: str | None = None
    ) -> tuple[set[Any], set[str]]:
        from flwr.supercore.constant import TaskType

        return {t for t in supported_task_types if t == TaskType.CLIENT_APP}, set()

    def wait_for_capacity(
        self,
        task_type: Any = None,
        *,
        fab_hash: str | None = None,
        insecure: bool = False,
        root_certificates_path: str | None = None,
    ) -> None:
        """Forks have no capacity gate."""

    def launch(self, spec: Any) -> Any:
        from flwr.supercore.constant import TaskType
        from flwr.supercore.superexec.executor import LaunchResult

        acquired = time.time()
        self.active_at = time.monotonic()
        mark("exec.acquired", task_id=spec.task_id)
        if spec.task_type != TaskType.CLIENT_APP:
            return LaunchResult.failed(f"the warm executor serves ClientApp tasks only, not {spec.task_type}")
        if spec.runtime_dependency_install:
            return LaunchResult.failed("the warm executor never installs dependencies at run time")
        if self.mode == "cold":
            pid = self._spawn(spec, acquired)
        else:
            pid = os.fork()
            if pid == 0:  # the child: serve the one task, then leave without running the parent's exit handlers
                code = 1
                try:
                    code = serve_one(
                        runtime_api_address=spec.runtime_api_address,
                        token=spec.token,
                        parent_pid=self.node_pid,
                        mode="warm",
                        task_id=spec.task_id,
                        acquired=acquired,
                        handoff_log=self.handoff_log,
                        executor_pid=os.getppid(),
                    )
                except BaseException:  # os._exit below would drop it unseen: the node's log gets it
                    traceback.print_exc()
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
        self.children[pid] = spec.task_id
        return LaunchResult.accepted()

    def _spawn(self, spec: Any, acquired: float) -> int:
        """A fresh interpreter per task, as `flwr-clientapp` is started (the cold path, measured the same way)."""
        command = [
            sys.executable,
            "-m",
            "silobridge.federation.network.warm_executor",
            "--runtime-api-address",
            spec.runtime_api_address,
            "--one-task",
            str(spec.task_id),
            "--acquired",
            repr(acquired),
        ]
        if self.node_pid is not None:
            command += ["--node-pid", str(self.node_pid)]
        if self.handoff_log is not None:
            command += ["--handoff-log", str(self.handoff_log)]
        # The token goes on stdin (as `flwr-clientapp --token-stdin` takes it), not on a command line.
        process = subprocess.Popen(command, stdin=subprocess.PIPE)
        if process.stdin is not None:
            process.stdin.write(spec.token.encode() + b"\n")
            process.stdin.close()
        return process.pid

    def reconcile(self) -> None:
        """Reap finished children (forks and spawned interpreters alike)."""
        for pid in list(self.children):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                task_id = self.children.pop(pid)
                code = os.waitstatus_to_exitcode(status)
                if code != 0:
                    print(f"warm executor: task {task_id} (pid {pid}) exited with {code}", file=sys.stderr, flush=True)

    def close(self) -> None:
        """Flower calls this on shutdown. Tasks already running finish: they answer to the SuperNode, not to us."""


class TaskPollSleeps:
    """Stands in for the `time` module inside Flower's SuperExec loop, whose only use is the sleep between task
    polls. With a `waker` (the SuperNode announces each task it creates: `task_wake`) it waits on that for up to
    Flower's 1 s and polls at once when woken; without one, `FLWR_SUPEREXEC_TASK_POLL_INTERVAL` (0.05 s) for 5 s
    after the executor last launched a task, then backing off toward Flower's 1 s (`IdleBackoff`)."""

    def __init__(self, real: ModuleType, executor: TaskExecutor, waker: Waker | None = None) -> None:
        self._real = real
        self.executor = executor
        self.waker = waker

    def sleep(self, seconds: float) -> None:
        if self.waker is not None:
            self.waker.wait(max(seconds, FLOWER_TASK_POLL_S))
            return
        backoff = IdleBackoff(fast_s=seconds, slow_s=max(seconds, FLOWER_TASK_POLL_S))
        self._real.sleep(backoff.interval(self._real.monotonic() - self.executor.active_at))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def install_executor(executor: TaskExecutor, waker: Waker | None = None) -> ModuleType:
    """Make Flower's SuperExec loop launch through `executor` and wait between polls on `waker` (or back off when
    idle) (the pinned hook); the hooked module."""
    module = check_superexec_loop()

    def get_executor(*args: Any, **kwargs: Any) -> TaskExecutor:
        return executor

    module.get_executor = get_executor  # type: ignore[attr-defined]
    module.time = TaskPollSleeps(time, executor, waker)  # type: ignore[attr-defined]
    return module


# -- the process -----------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m silobridge.federation.network.warm_executor")
    parser.add_argument("--runtime-api-address", required=True, help="The SuperNode's Runtime API, HOST:PORT.")
    parser.add_argument("--mode", choices=("warm", "cold"), default="warm")
    parser.add_argument("--superexec-auth-secret-file", type=Path, default=None)
    parser.add_argument("--parent-pid", type=int, default=None, help="Exit when this process (the supervisor) is gone.")
    parser.add_argument("--node-pid", type=int, default=None, help="The SuperNode: tasks end when it is gone.")
    parser.add_argument("--handoff-log", type=Path, default=None)
    parser.add_argument(
        "--node-config", default=None, help="The SuperNode's --node-config: its firm's caches are built before forking."
    )
    parser.add_argument("--one-task", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--acquired", type=float, default=None, help=argparse.SUPPRESS)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    if args.one_task is not None:  # a cold task: token on stdin
        token = sys.stdin.readline().strip()
        sys.exit(
            serve_one(
                runtime_api_address=args.runtime_api_address,
                token=token,
                parent_pid=args.node_pid,
                mode="cold",
                task_id=args.one_task,
                acquired=args.acquired or time.time(),
                handoff_log=args.handoff_log,
                executor_pid=os.getppid(),
            )
        )
    try:
        executor = TaskExecutor(mode=args.mode, handoff_log=args.handoff_log, node_pid=args.node_pid)
        wake = wake_path()
        module = install_executor(executor, Waker(wake) if wake is not None else None)
        secret = None
        if args.superexec_auth_secret_file is not None:
            secret = args.superexec_auth_secret_file.read_bytes()
            if not secret:
                raise FederationError(f"{args.superexec_auth_secret_file} is empty")
    except (FederationError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    if args.mode == "warm":
        seconds = preload()
        try:
            apply_object_pull_backoff(local=True)  # every fork pulls its message's objects from its node with it
        except FederationError as err:
            print(f"error: {err}", file=sys.stderr)
            sys.exit(EXIT_CONFIG)
        print(f"warm executor: torch, opacus, flwr and the ClientApp imported in {seconds:.2f} s", flush=True)
        if args.node_config:
            try:
                seconds = warm_node_caches(args.node_config)
                print(f"warm executor: the firm's spec, data and client built in {seconds:.2f} s", flush=True)
            except SiloBridgeError as err:  # each task meets the same problem and answers it as an error reply
                print(f"warm executor: the firm's caches were not built ({err}); tasks build them", flush=True)
    if args.mode == "warm":
        # What the parent built stays as it is for every fork: kept out of the collector's reach, a child's
        # collections do not write to (and so copy) the parent's pages.
        gc.collect()
        gc.freeze()
    print(f"warm executor ({args.mode}) serving {args.runtime_api_address}", flush=True)
    module.run_superexec(
        runtime_api_address=args.runtime_api_address,
        insecure=True,
        superexec_auth_secret=secret,
        parent_pid=args.parent_pid,
        runtime_dependency_install=False,
    )


if __name__ == "__main__":
    main()
