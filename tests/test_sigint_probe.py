"""Ctrl-C's race with the run's own thread (issue 19): the SIGINT that reaches the process group kills
Ray's workers, so the run's thread can fail before the main thread's handler runs. The thread must see
the pending interrupt and leave the run (folder and open ledger) to the handler."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from silobridge.federation.rundir import LiveRuns, RunDirectory
from silobridge.federation.sigint_probe import SignalProbe


@pytest.fixture
def usr1_probe() -> SignalProbe:
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: None)
    probe = SignalProbe(signal.SIGUSR1)
    probe.install()
    yield probe
    probe.uninstall()
    signal.signal(signal.SIGUSR1, previous)


def test_the_probe_sees_its_signal_after_python_ran_the_handler_and_ignores_others(usr1_probe: SignalProbe) -> None:
    previous = signal.signal(signal.SIGUSR2, lambda signum, frame: None)
    try:
        assert usr1_probe() is False
        os.kill(os.getpid(), signal.SIGUSR2)
        assert usr1_probe() is False  # another signal's byte is read and dropped
        os.kill(os.getpid(), signal.SIGUSR1)
        assert usr1_probe() is True
        assert usr1_probe() is True  # stays seen once the pipe is drained
    finally:
        signal.signal(signal.SIGUSR2, previous)


def test_a_thread_sees_the_signal_the_main_thread_received(usr1_probe: SignalProbe) -> None:
    os.kill(os.getpid(), signal.SIGUSR1)
    seen: list[bool] = []
    thread = threading.Thread(target=lambda: seen.append(usr1_probe()))
    thread.start()
    thread.join()
    assert seen == [True]


def _fail_inside_hold(runs: LiveRuns, rundir: RunDirectory, entered: threading.Event) -> None:
    with pytest.raises(RuntimeError), runs.hold(rundir):
        entered.set()
        raise RuntimeError("Ray's workers died")


@pytest.mark.parametrize("pending", [True, False])
def test_a_failing_run_thread_keeps_the_run_for_a_pending_interrupt_handler(tmp_path: Path, pending: bool) -> None:
    runs = LiveRuns()
    runs.grace_s = 1.5 if pending else 600  # without a pending interrupt it must not wait at all
    asked = threading.Event()

    def interrupt_pending() -> bool:
        asked.set()
        return pending

    runs.watch_interrupts(interrupt_pending)
    rundir = RunDirectory(tmp_path, "r1")
    entered = threading.Event()
    thread = threading.Thread(target=_fail_inside_hold, args=(runs, rundir, entered))
    thread.start()
    assert entered.wait(10) and asked.wait(10)
    time.sleep(0.3)
    held, _ = runs.current()
    if pending:
        assert held is rundir and thread.is_alive()  # the handler still finds the run to close
    thread.join(60)
    assert not thread.is_alive()  # the grace period ended (pending) or was never entered (600 s otherwise)
    assert runs.current() == (None, None)


def test_without_a_probe_or_in_the_main_thread_a_failure_does_not_wait(tmp_path: Path) -> None:
    runs = LiveRuns()
    runs.grace_s = 600
    rundir = RunDirectory(tmp_path, "r1")
    with pytest.raises(RuntimeError), runs.hold(rundir):
        raise RuntimeError("no probe")
    runs.watch_interrupts(lambda: True)
    with pytest.raises(RuntimeError), runs.hold(rundir):  # would wait 600 s if it waited at all
        raise RuntimeError("main thread: the handler would run here")
