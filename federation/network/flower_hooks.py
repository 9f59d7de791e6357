"""The one private hook SiloBridge puts into Flower: the SuperNode's fixed sleeps, made short.

flwr 1.41's SuperNode loop (`flwr/supernode/start_client_internal.py`) sleeps a hard-coded 3 s after
every pull that finds no message, and 0.5 s per check while it waits for the ClientApp's reply (and
for a reply's content). No option or environment variable changes them, and they put up to 3.5 s on
every exchange. The hook replaces that module's `time` with a stand-in whose `sleep` maps those two
literal values to ours and passes every other call through unchanged.

It is pinned: `apply_supernode_polling` checks the installed flwr version and that the module still
holds exactly those calls, and raises `FederationError` otherwise, so a Flower upgrade that moves
them fails loudly instead of silently running slow (tests/test_flower_hooks.py fails as well).
The SuperExec's task poll needs no hook: it reads `FLWR_SUPEREXEC_TASK_POLL_INTERVAL`.
"""

from __future__ import annotations

import importlib
import inspect
import time
from importlib.metadata import version
from types import ModuleType
from typing import Any

from silobridge.errors import FederationError

HOOKED_MODULE = "flwr.supernode.start_client_internal"
TESTED_FLWR = ("1.41.0",)
"""Flower versions whose SuperNode loop was read and holds exactly the sleeps below."""

FLOWER_IDLE_SLEEP_S = 3
"""Flower's sleep after an empty pull from the SuperLink (once in the module)."""
FLOWER_REPLY_SLEEP_S = 0.5
"""Flower's sleep per check while the reply and its content are not yet there (twice in the module)."""
EXPECTED_CALLS = {f"time.sleep({FLOWER_IDLE_SLEEP_S})": 1, f"time.sleep({FLOWER_REPLY_SLEEP_S})": 2}

IDLE_POLL_S = 0.1
"""Our pull interval when idle: a message waits at most 0.1 s at the SuperLink (10 pulls a second per node)."""
REPLY_POLL_S = 0.01
"""Our check interval for the ClientApp's reply: a local lookup in the SuperNode's own state."""

SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
"""Read by flwr's `run_superexec` (default 1 s, allowed 0.01 to 60 s): how often a SuperExec asks for a task."""
SUPEREXEC_POLL_S = "0.05"


class _ShortSleeps:
    """Stands in for the `time` module inside Flower's SuperNode loop: only the two known sleeps change."""

    def __init__(self, real: ModuleType, *, idle_s: float, reply_s: float) -> None:
        self._real = real
        self.idle_s = idle_s
        self.reply_s = reply_s

    def sleep(self, seconds: float) -> None:
        if seconds == FLOWER_IDLE_SLEEP_S:
            seconds = self.idle_s
        elif seconds == FLOWER_REPLY_SLEEP_S:
            seconds = self.reply_s
        self._real.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def check_supernode_loop() -> ModuleType:
    """The module to hook, after checking it is the one this hook was written against."""
    installed = version("flwr")
    if installed not in TESTED_FLWR:
        raise FederationError(
            f"flwr {installed} is installed, but the SuperNode polling hook (federation/network/flower_hooks.py) "
            f"was checked against flwr {', '.join(TESTED_FLWR)} only: re-read {HOOKED_MODULE} and update the hook"
        )
    module = importlib.import_module(HOOKED_MODULE)
    found = getattr(module, "time", None)
    if not (isinstance(found, _ShortSleeps) or getattr(found, "__name__", None) == "time"):
        raise FederationError(f"{HOOKED_MODULE} no longer imports the time module: the polling hook cannot apply")
    source = inspect.getsource(module)
    counts = {call: source.count(call) for call in EXPECTED_CALLS}
    if counts != EXPECTED_CALLS:
        raise FederationError(
            f"{HOOKED_MODULE} (flwr {installed}) has sleeps {counts}, the polling hook expects {EXPECTED_CALLS}: "
            "update federation/network/flower_hooks.py"
        )
    return module


def apply_supernode_polling(*, idle_s: float = IDLE_POLL_S, reply_s: float = REPLY_POLL_S) -> _ShortSleeps:
    """Shorten the SuperNode's idle and reply-wait sleeps in this process (call before it starts)."""
    if not (0.001 <= idle_s <= FLOWER_IDLE_SLEEP_S and 0.001 <= reply_s <= FLOWER_REPLY_SLEEP_S):
        raise FederationError(
            f"SuperNode poll intervals must be 0.001-{FLOWER_IDLE_SLEEP_S} s (idle) and "
            f"0.001-{FLOWER_REPLY_SLEEP_S} s (reply), got {idle_s} and {reply_s}"
        )
    module = check_supernode_loop()
    sleeps = _ShortSleeps(time, idle_s=idle_s, reply_s=reply_s)
    module.time = sleeps  # type: ignore[attr-defined]
    return sleeps
