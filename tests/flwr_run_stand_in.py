"""A `flwr run` stand-in and a Ctrl-C raised inside `flower_run` only once it has read the run id.

Watching captured output from another thread loses lines (`capsys.readouterr()` empties the buffer while the
main thread writes). So the stand-in prints a second line, and the interrupt comes when that line reaches the
sink: by then the loop has handled the first one.
"""

from __future__ import annotations

import sys
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


class _CtrlCAfterStarted:
    """A sink that passes everything on and raises KeyboardInterrupt (what Ctrl-C raises in the main thread)
    once the stand-in's second line went through: by then `flower_run` has read the run id."""

    def __init__(self, sink: TextIO):
        self._sink = sink

    def write(self, text: str) -> int:
        written = self._sink.write(text)
        if AFTER_STARTED in text:
            raise KeyboardInterrupt
        return written

    def flush(self) -> None:
        self._sink.flush()

    def __getattr__(self, name: str) -> object:
        return getattr(self._sink, name)


def ctrl_c_once_started(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C inside `flower_run`'s loop once the run has started (`monkeypatch` wraps its sink until the test
    ends). Raised from the sink, not sent as SIGINT: in a pytest worker that holds Ray a SIGINT sent to the main
    thread never raised KeyboardInterrupt (the test hung until the stand-in exited)."""
    from silobridge.federation.network import runs

    flower_run = runs.flower_run

    def interrupted(command: Sequence[str], env: Mapping[str, str], sink: TextIO) -> int:
        return flower_run(command, env, cast(TextIO, _CtrlCAfterStarted(sink)))

    monkeypatch.setattr(runs, "flower_run", interrupted)
