"""The one private hook SiloBridge puts into Flower: the SuperNode's fixed sleeps, made short.

flwr 1.41's SuperNode loop (`flwr/supernode/start_client_internal.py`) sleeps a hard-coded 3 s after
every pull that finds no message, and 0.5 s per check while it waits for the ClientApp's reply (and
for a reply's content). No option or environment variable changes them, and they put up to 3.5 s on
every exchange. The hook replaces that module's `time` with a stand-in whose `sleep` maps those two
literal values to ours and passes every other call through unchanged. The idle sleep is short
(`--idle-poll`, 0.1 s) for 5 s after the node last served a message and then backs off toward
Flower's 3 s (`IdleBackoff`: a tenth of the idle time so far), so an idle node costs what Flower's does
while a run's exchanges are still picked up within 0.1 s.

It is pinned: `apply_supernode_polling` checks the installed flwr version and that the module still
holds exactly those calls, and raises `FederationError` otherwise, so a Flower upgrade that moves
them fails loudly instead of silently running slow (tests/test_flower_hooks.py fails as well).
The SuperExec's task poll needs no hook: it reads `FLWR_SUPEREXEC_TASK_POLL_INTERVAL`.

A second pinned hook, `apply_object_pull_backoff`, shortens the first wait of Flower's object pulls. A
message is visible before its objects are (the SuperNode creates a task before it has pulled the message's
objects from the SuperLink; a reply reaches the SuperLink before its objects), and a pull that finds an
object missing waits 1 s (+-20%), then 2, 4, ... s. A warm task's process starts within milliseconds, so
its first pull nearly always misses and the hand-off took about 1.2 s; the coordinator's pull of a fresh
reply can miss the same way. The hook changes only the keyword defaults of Flower's two pull functions
(one function object each, whoever imported it): start at 10 ms, double up to 0.1 s (`REMOTE_PULL_CAP_S`),
and allow the tries that make a pull give up after about as long as with Flower's (500 tries, waits up to
10 s: about 4,965 s; 50,000 tries, waits up to 0.1 s: about 5,000 s; `max_time`, 7,200 s, is unchanged).
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
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
"""Our pull interval while a run is active: a message waits at most 0.1 s at the SuperLink (10 pulls a second)."""
HOT_S = 5.0
"""Seconds after the last activity during which a poller keeps its fast interval (a run's exchanges are closer)."""
IDLE_FRACTION = 0.1
"""After that, an idle poller sleeps this fraction of its idle time (up to Flower's 3 s)."""
REPLY_POLL_S = 0.01
"""Our check interval for the ClientApp's reply: a local lookup in the SuperNode's own state."""

SUPEREXEC_POLL_ENV = "FLWR_SUPEREXEC_TASK_POLL_INTERVAL"
"""Read by flwr's `run_superexec` (default 1 s, allowed 0.01 to 60 s): how often a SuperExec asks for a task."""
SUPEREXEC_POLL_S = "0.05"
SUPERLINK_SUPEREXEC_POLL_S = "0.5"
"""The SuperLink's SuperExec asks only for ServerApp tasks (one per run: a run starts at most 0.5 s later), with no
backoff: at 0.05 s it cost the SuperLink and itself about 0.1 CPU s per second for the SuperLink's whole life (0.006
at 1 s; measured idle, session 11), on the coordinator's machine, beside the round."""


PULL_MODULE = "flwr.supercore.inflatable.inflatable_utils"
PULL_FUNCTIONS = ("pull_objects", "pull_and_inflate_object_from_tree")
"""Every object pull in flwr 1.41 goes through these (the SuperNode's, a task's, the ServerApp grid's)."""
FLOWER_PULL_DEFAULTS = {"initial_backoff": 1, "backoff_cap": 10, "max_tries_per_object": 500}
"""Their keyword defaults as Flower ships them (`flwr/supercore/constant.py`: PULL_INITIAL_BACKOFF, ...)."""
PULL_CALLERS = (
    "flwr.supernode.start_client_internal",
    "flwr.supernode.runtime.run_clientapp",
    "flwr.superlink.grid.http_grid",
)
"""Who pulls objects in a networked run (the SuperNode, a task, the ServerApp's grid): none may pass the
keywords the hook changes, or the hook would not reach it."""
GIVE_UP_S = 5000.0
"""About how long a pull of ours keeps trying a missing object (Flower's defaults: about 4,965 s)."""
REMOTE_PULL_CAP_S = 0.1
"""Longest wait between two pulls of a missing object from the SuperLink (Flower: 10 s; ours until session 9: 1 s).
A message's objects reach the SuperLink a few hundred ms after the message (the ServerApp pushes them one request
each, 2 at a time); a SuperNode that started pulling at once and doubled its wait to 1 s had them up to twice that
late (traced: 80-550 ms after the ServerApp's push had returned). At 0.1 s a waiting node asks at most 10 times a
second per pulling thread (Flower pulls with 2), for as long as the push takes."""
PULL_CAP_ENV = "SILOBRIDGE_PULL_BACKOFF_CAP_S"
"""Overrides REMOTE_PULL_CAP_S (0.01-10 s): a node far from its SuperLink may ask less often; the network benchmark
sets 1.0 to run the cap before this change side by side."""


def remote_pull_defaults() -> dict[str, float | int]:
    """Keyword defaults of an object pull from the SuperLink: 10 ms doubling up to the cap (REMOTE_PULL_CAP_S or
    PULL_CAP_ENV), with as many tries as give up after about GIVE_UP_S."""
    raw = os.environ.get(PULL_CAP_ENV, "")
    try:
        cap = float(raw) if raw else REMOTE_PULL_CAP_S
    except ValueError:
        raise FederationError(f"{PULL_CAP_ENV}={raw!r} is not a number of seconds") from None
    if not 0.01 <= cap <= 10:
        raise FederationError(f"{PULL_CAP_ENV}={raw} must be 0.01-10 s")
    return {"initial_backoff": 0.01, "backoff_cap": cap, "max_tries_per_object": round(GIVE_UP_S / cap)}


OUR_PULL_DEFAULTS = {"initial_backoff": 0.01, "backoff_cap": REMOTE_PULL_CAP_S, "max_tries_per_object": 50_000}
"""From the SuperLink (`PULL_CAP_ENV` unset): 10 ms, doubling up to 0.1 s; tries so that giving up takes about as
long as with Flower's."""
LOCAL_PULL_DEFAULTS = {"initial_backoff": 0.01, "backoff_cap": 0.05, "max_tries_per_object": 100_000}
"""A task pulling from its own SuperNode (127.0.0.1, plain HTTP): 10 ms, doubling up to 50 ms, so it has its message
within about 50 ms of the node having pulled it from the SuperLink (with a 1 s cap a task that had waited 2 s for
that slept up to another second: median 0.65 s of the hand-off in a traced run). At most 2 pulling threads, each
asking its node at most 20 times a second while it waits; giving up still takes about 5,000 s."""


@dataclass(frozen=True)
class IdleBackoff:
    """How long an idle poller sleeps, given how long it has been idle: fast while a run is active, then slower.

    A run's exchanges follow one another within seconds, so for `hot_s` after the last activity the
    poller keeps its fast interval; after that it sleeps a tenth (`fraction`) of the idle time so far,
    never less than `fast_s` and never more than `slow_s` (Flower's own idle sleep). The interval only
    grows with idle time, so a message that arrives after an idle spell of T seconds is picked up within
    `interval(T)` (plus one pull): `fast_s` within `hot_s` of activity, at most a tenth of T after it, and
    never later than `slow_s`. An idle poller thus costs Flower's idle CPU once idle for 10 x `slow_s`.
    """

    fast_s: float = IDLE_POLL_S
    hot_s: float = HOT_S
    slow_s: float = FLOWER_IDLE_SLEEP_S
    fraction: float = IDLE_FRACTION

    def __post_init__(self) -> None:
        if not (0.001 <= self.fast_s <= self.slow_s and self.hot_s >= 0 and 0 < self.fraction <= 1):
            raise FederationError(
                f"idle backoff needs 0.001 <= fast ({self.fast_s}) <= slow ({self.slow_s}) s, hot >= 0 "
                f"({self.hot_s}) and 0 < fraction <= 1 ({self.fraction})"
            )

    def interval(self, idle_s: float) -> float:
        """Seconds to sleep after an empty poll, `idle_s` seconds after the last activity."""
        if idle_s <= self.hot_s:
            return self.fast_s
        return min(self.slow_s, max(self.fast_s, self.fraction * idle_s))


class _ShortSleeps:
    """Stands in for the `time` module inside Flower's SuperNode loop: only the two known sleeps change.

    The idle sleep follows `backoff`, counted from the last activity: a reply wait (the loop waits for a
    ClientApp's reply only while it serves a message, at least one check per message since the reply
    comes from another process) or the start.
    """

    def __init__(self, real: ModuleType, *, backoff: IdleBackoff, reply_s: float) -> None:
        self._real = real
        self.backoff = backoff
        self.reply_s = reply_s
        self.active_at = real.monotonic()

    @property
    def idle_s(self) -> float:
        """The idle sleep a poll right after activity gets (`--idle-poll`)."""
        return self.backoff.fast_s

    def sleep(self, seconds: float) -> None:
        if seconds == FLOWER_IDLE_SLEEP_S:
            seconds = self.backoff.interval(self._real.monotonic() - self.active_at)
        elif seconds == FLOWER_REPLY_SLEEP_S:
            self.active_at = self._real.monotonic()
            seconds = self.reply_s
        self._real.sleep(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _tested_flwr(hook: str, module: str) -> str:
    """The installed flwr version, refused unless the hooks were checked against it."""
    installed = version("flwr")
    if installed not in TESTED_FLWR:
        raise FederationError(
            f"flwr {installed} is installed, but the {hook} hook (federation/network/flower_hooks.py) "
            f"was checked against flwr {', '.join(TESTED_FLWR)} only: re-read {module} and update the hook"
        )
    return installed


def check_supernode_loop() -> ModuleType:
    """The module to hook, after checking it is the one this hook was written against."""
    installed = _tested_flwr("SuperNode polling", HOOKED_MODULE)
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
    """Shorten the SuperNode's idle and reply-wait sleeps in this process (call before it starts); the idle sleep
    is `idle_s` while a run is active and backs off toward Flower's 3 s when idle (`IdleBackoff`)."""
    if not (0.001 <= idle_s <= FLOWER_IDLE_SLEEP_S and 0.001 <= reply_s <= FLOWER_REPLY_SLEEP_S):
        raise FederationError(
            f"SuperNode poll intervals must be 0.001-{FLOWER_IDLE_SLEEP_S} s (idle) and "
            f"0.001-{FLOWER_REPLY_SLEEP_S} s (reply), got {idle_s} and {reply_s}"
        )
    module = check_supernode_loop()
    sleeps = _ShortSleeps(time, backoff=IdleBackoff(fast_s=idle_s), reply_s=reply_s)
    module.time = sleeps  # type: ignore[attr-defined]
    return sleeps


def check_object_pulls(callers: Sequence[str] | None = None) -> list[Any]:
    """Flower's two object-pull functions, after checking their keyword defaults are Flower's or ours and that
    `callers` (by default those of PULL_CALLERS this process has imported: importing the others costs seconds)
    leave those keywords to the defaults."""
    installed = _tested_flwr("object-pull", PULL_MODULE)
    module = importlib.import_module(PULL_MODULE)
    functions = [getattr(module, name, None) for name in PULL_FUNCTIONS]
    for name, function in zip(PULL_FUNCTIONS, functions, strict=True):
        defaults = getattr(function, "__kwdefaults__", None) or {}
        found = {key: defaults.get(key) for key in FLOWER_PULL_DEFAULTS}
        if found not in (FLOWER_PULL_DEFAULTS, remote_pull_defaults(), LOCAL_PULL_DEFAULTS):
            raise FederationError(
                f"{PULL_MODULE}.{name} (flwr {installed}) has keyword defaults {found}, the object-pull hook "
                f"expects {FLOWER_PULL_DEFAULTS}: update federation/network/flower_hooks.py"
            )
    if callers is None:
        callers = [name for name in PULL_CALLERS if name in sys.modules]
    for caller in callers:
        source = inspect.getsource(importlib.import_module(caller))
        passed = [key for key in FLOWER_PULL_DEFAULTS if f"{key}=" in source]
        if passed:
            raise FederationError(
                f"{caller} (flwr {installed}) passes {passed} to its object pulls itself, so the object-pull hook "
                "cannot shorten them: update federation/network/flower_hooks.py"
            )
    return functions


def apply_object_pull_backoff(*, local: bool = False) -> None:
    """Make every object pull in this process start at 10 ms instead of 1 s and wait at most 0.1 s between tries
    (`remote_pull_defaults`; call before Flower pulls); `local`: this process pulls only from its own SuperNode on
    127.0.0.1 (a task), so its waits are capped at 50 ms."""
    defaults = LOCAL_PULL_DEFAULTS if local else remote_pull_defaults()
    for function in check_object_pulls():
        function.__kwdefaults__.update(defaults)
