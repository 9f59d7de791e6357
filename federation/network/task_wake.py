"""A partner's SuperNode wakes its warm executor when it creates a task, instead of being asked 20 times a second.

With `--isolation process` the executor learns of a task only by asking the SuperNode's Runtime API
(`AcquireTask`, one HTTP request); it asked every 0.05 s while a run was active, on every partner, and on a
loopback federation those requests shared two cores with the round itself. Here `silobridge join` makes a
FIFO (a named pipe, mode 0600, in the folder that holds the executor's secret) and gives both processes its
path (`WAKE_ENV`): the SuperNode writes one byte after each task it creates (`hook_supernode`, a wrapper on
Flower's `InMemoryNodeState.create_task`, pinned by name), and the executor waits on the pipe between polls
(`Waker.wait`), polling as soon as a byte comes and otherwise once a second (Flower's own task poll), so a
missed byte costs at most a second, never a task. A byte written while the executor polls stays in the pipe
and wakes the next wait: no task is missed between a poll and the wait.
"""

from __future__ import annotations

import errno
import os
import select
from pathlib import Path
from typing import Any

from silobridge.errors import FederationError

WAKE_ENV = "SILOBRIDGE_TASK_WAKE"
"""The FIFO's path, in the SuperNode's and the executor's environment; '0' turns the wake-up off (the network
benchmark's arm for the session-10 behaviour: the executor polls at FLWR_SUPEREXEC_TASK_POLL_INTERVAL)."""
FIFO_NAME = "tasks.fifo"


def wake_path() -> Path | None:
    """The FIFO named by WAKE_ENV, or None when the wake-up is off."""
    raw = os.environ.get(WAKE_ENV, "")
    return Path(raw) if raw and raw != "0" else None


def make_fifo(folder: Path) -> Path:
    """A fresh FIFO in `folder` (readable and writable by this user only)."""
    path = folder / FIFO_NAME
    os.mkfifo(path, 0o600)
    return path


def notify(path: Path) -> None:
    """Write one byte to the FIFO without blocking. Nothing happens when no executor has it open (ENXIO: it polls
    by itself once started) or the pipe is full (EAGAIN: bytes already wait to wake it)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as err:
        if err.errno in (errno.ENXIO, errno.ENOENT):
            return
        raise
    try:
        os.write(fd, b"t")
    except BlockingIOError:
        pass
    finally:
        os.close(fd)


class Waker:
    """The executor's end of the FIFO. Opened read-write (Linux) so that the pipe never reads as closed when the
    SuperNode's writes come and go: a closed pipe would make every wait return at once."""

    def __init__(self, path: Path) -> None:
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
        except OSError as err:
            raise FederationError(f"cannot open the task wake-up pipe {path}: {err.strerror}") from None

    def wait(self, timeout_s: float) -> bool:
        """Block until a task was announced or `timeout_s` passed; True if announced (the pipe is then emptied,
        so one poll answers every byte written before it)."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout_s))
        if not ready:
            return False
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        os.close(self.fd)


def hook_supernode(path: Path | None = None) -> None:
    """In the SuperNode's process: announce each task it creates on the FIFO (WAKE_ENV; nothing when unset)."""
    path = path if path is not None else wake_path()
    if path is None:
        return
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    original = getattr(InMemoryNodeState, "create_task", None)
    if original is None:
        raise FederationError(
            "flwr's InMemoryNodeState has no create_task: the task wake-up (federation/network/task_wake.py) was "
            "written for flwr 1.41"
        )

    def create_task(self: Any, *args: Any, **kwargs: Any) -> Any:
        task_id = original(self, *args, **kwargs)
        if task_id is not None:
            notify(path)
        return task_id

    InMemoryNodeState.create_task = create_task  # type: ignore[method-assign]
