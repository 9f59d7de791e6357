"""Did Ctrl-C arrive? Known at once in any thread, before Python runs the handler in the main thread.

SIGINT reaches the whole process group, so Ray's workers die with it and the run's thread can fail
before the main thread's Python handler runs; that thread must then wait for the handler instead of
closing the run as "aborted" (the handler closes it as "interrupted"). CPython's C-level signal
handler writes the signal's number to the wakeup fd immediately (`signal.set_wakeup_fd`): reading
that pipe is the only portable way for another thread to see a signal whose Python handler is pending.
"""

from __future__ import annotations

import os
import signal
import threading


class SignalProbe:
    """Reads the wakeup pipe: True once `signum` was delivered to this process (and stays True)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        self.signum = signum
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)
        self._lock = threading.Lock()
        self._seen = False
        self._previous_fd: int | None = None

    def install(self) -> None:
        """Main thread only (`signal.set_wakeup_fd` refuses others); remembers the fd it replaces."""
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)

    def uninstall(self) -> None:
        if self._previous_fd is not None:
            signal.set_wakeup_fd(self._previous_fd)
            self._previous_fd = None
        os.close(self._read_fd)
        os.close(self._write_fd)

    def __call__(self) -> bool:
        with self._lock:
            while not self._seen:
                try:
                    data = os.read(self._read_fd, 512)
                except BlockingIOError:
                    break
                if not data:
                    break
                self._seen = self.signum in data
            return self._seen
