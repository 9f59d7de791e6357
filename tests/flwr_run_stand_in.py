"""A `flwr run` stand-in and a Ctrl-C that reaches the main thread only once `flower_run` has read its run id.

Watching captured output from another thread loses lines (`capsys.readouterr()` empties the buffer while the
main thread writes), and a SIGINT sent as soon as the run id's line is written can land before `flower_run`
parsed it. So the stand-in prints a second line, and the interrupt waits until that line reaches the sink:
by then the loop has handled the first one.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TextIO, cast

import pytest

AFTER_STARTED = "streaming the run's log"


def flwr_run_stand_in(run_id: int) -> list[str]:
    """A command that prints what `flwr run` prints once the SuperLink accepted the run, then waits."""
    code = (
        "import time; "
        f"print('Successfully started run {run_id}', flush=True); "
        f"print({AFTER_STARTED!r}, flush=True); "
        "time.sleep(600)"
    )
    return [sys.executable, "-c", code]


class _Watch:
    """A sink that passes everything on and notes when the stand-in's second line went through."""

    def __init__(self, sink: TextIO, seen: threading.Event):
        self._sink, self._seen = sink, seen

    def write(self, text: str) -> int:
        written = self._sink.write(text)
        if AFTER_STARTED in text:
            self._seen.set()
        return written

    def flush(self) -> None:
        self._sink.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self._sink, name)


def ctrl_c_once_started(
    monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, timeout_s: float = 300
) -> None:
    """Send SIGINT to this (main) thread once `flower_run`'s sink received the stand-in's second line
    (`monkeypatch` wraps `runs.flower_run`'s sink until the test ends). Python's own SIGINT handler is put
    in place for the test: a process started in the background inherits SIGINT ignored, and then Ctrl-C
    would never raise KeyboardInterrupt."""
    from silobridge.federation.network import runs

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))

    seen = threading.Event()
    flower_run = runs.flower_run

    def watched(command: Sequence[str], env: Mapping[str, str], sink: TextIO) -> int:
        return flower_run(command, env, cast(TextIO, _Watch(sink, seen)))

    monkeypatch.setattr(runs, "flower_run", watched)
    main = threading.get_ident()

    def interrupt() -> None:
        if seen.wait(timeout_s):
            signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
