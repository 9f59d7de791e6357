"""The SuperNode -> warm executor wake-up (federation/network/task_wake.py): a FIFO, real pipes, no timing asserted."""

from __future__ import annotations

import fcntl
import inspect
import os
from pathlib import Path
from typing import Any

import pytest

from silobridge.errors import FederationError
from silobridge.federation.network import node_supervisor, warm_executor
from silobridge.federation.network.task_wake import WAKE_ENV, Waker, hook_supernode, make_fifo, notify, wake_path
from silobridge.federation.network.warm_executor import TaskExecutor, TaskPollSleeps


def test_a_byte_written_before_the_wait_wakes_it_and_one_wait_takes_every_byte(tmp_path: Path) -> None:
    fifo = make_fifo(tmp_path)
    assert fifo.stat().st_mode & 0o777 == 0o600
    waker = Waker(fifo)
    try:
        assert waker.wait(0) is False
        notify(fifo)
        notify(fifo)
        assert waker.wait(5) is True  # the bytes were written while no one waited: they still wake it
        assert waker.wait(0) is False  # both taken by the one wait
    finally:
        waker.close()


def test_notify_never_blocks_or_fails_without_a_reader_nor_with_a_full_pipe(tmp_path: Path) -> None:
    notify(tmp_path / "missing.fifo")  # the supervisor removed it: nothing to wake
    fifo = make_fifo(tmp_path)
    notify(fifo)  # no executor has opened it yet (ENXIO)
    waker = Waker(fifo)
    try:
        capacity = fcntl.fcntl(waker.fd, fcntl.F_SETPIPE_SZ, 4096)
        for _ in range(capacity + 10):  # more bytes than the pipe holds
            notify(fifo)
        assert waker.wait(5) is True
        assert waker.wait(0) is False
    finally:
        waker.close()


def test_the_pipe_does_not_read_as_closed_after_a_writer_leaves(tmp_path: Path) -> None:
    fifo = make_fifo(tmp_path)
    waker = Waker(fifo)
    try:
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(writer)  # a read-only end would now see end-of-file and every wait would return at once
        assert waker.wait(0.01) is False
    finally:
        waker.close()


def test_a_waker_on_a_path_that_is_not_there_is_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(FederationError, match="task wake-up pipe"):
        Waker(tmp_path / "gone.fifo")


def test_the_environment_names_the_pipe_and_zero_turns_it_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WAKE_ENV, raising=False)
    assert wake_path() is None
    monkeypatch.setenv(WAKE_ENV, "0")
    assert wake_path() is None
    monkeypatch.setenv(WAKE_ENV, "/run/x/tasks.fifo")
    assert wake_path() == Path("/run/x/tasks.fifo")


def test_flowers_supernode_creates_its_tasks_through_the_method_we_wrap() -> None:
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState
    from flwr.supernode.nodestate.nodestate_factory import NodeStateFactory

    assert callable(getattr(InMemoryNodeState, "create_task", None))
    assert inspect.getsource(loop).count("state.create_task(") == 1
    assert "InMemoryNodeState(" in inspect.getsource(NodeStateFactory)


def test_the_supernode_announces_each_task_it_creates_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    ids = iter([7, None])
    monkeypatch.setattr(InMemoryNodeState, "create_task", lambda self, *a, **k: next(ids))  # restored afterwards
    fifo = make_fifo(tmp_path)
    hook_supernode(fifo)
    waker = Waker(fifo)
    try:
        assert InMemoryNodeState.create_task(None, "clientapp", run_id=1, fab_hash="h") == 7  # type: ignore[arg-type]
        assert waker.wait(5) is True
        assert InMemoryNodeState.create_task(None, "clientapp", run_id=1, fab_hash="h") is None  # type: ignore[arg-type]
        assert waker.wait(0) is False  # no task, no wake
    finally:
        waker.close()


class _Waker:
    def __init__(self) -> None:
        self.waited: list[float] = []

    def wait(self, timeout_s: float) -> bool:
        self.waited.append(timeout_s)
        return True


class _NoSleep:
    def sleep(self, seconds: float) -> None:
        raise AssertionError("with a waker the loop waits on it, never sleeps")

    def monotonic(self) -> float:
        return 0.0


def test_with_a_waker_the_executor_waits_on_it_for_up_to_flowers_own_poll() -> None:
    waker = _Waker()
    sleeps = TaskPollSleeps(_NoSleep(), TaskExecutor(mode="warm"), waker)  # type: ignore[arg-type]
    sleeps.sleep(0.05)  # what Flower's loop passes (FLWR_SUPEREXEC_TASK_POLL_INTERVAL)
    sleeps.sleep(2.0)  # an operator's longer poll is kept
    assert waker.waited == [warm_executor.FLOWER_TASK_POLL_S, 2.0]


def test_join_gives_the_node_and_its_executor_one_fresh_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []

    def fake_supervise(plan: Any, env: dict[str, str], **kwargs: Any) -> int:
        path = Path(env[WAKE_ENV])
        seen.append({"env": dict(env), "fifo": path.exists() and not path.is_file(), "secret": plan.node[-1]})
        return 0

    monkeypatch.setattr(node_supervisor, "supervise", fake_supervise)
    assert node_supervisor.run_supervised(["flower-supernode"], "127.0.0.1:1", {}, mode="warm", handoff_log=None) == 0
    (run,) = seen
    assert run["fifo"] and Path(run["env"][WAKE_ENV]).parent == Path(run["secret"]).parent
    assert not Path(run["env"][WAKE_ENV]).exists()  # removed with the secret's folder

    def keeps_off(plan: Any, env: dict[str, str], **kwargs: Any) -> int:
        assert env[WAKE_ENV] == "0"
        return 0

    monkeypatch.setattr(node_supervisor, "supervise", keeps_off)
    node_supervisor.run_supervised(["flower-supernode"], "127.0.0.1:1", {WAKE_ENV: "0"}, mode="warm", handoff_log=None)
