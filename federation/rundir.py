"""The run directory: written under a hidden partial name, renamed into place only when complete.

A failed or interrupted run leaves nothing half-written in `runs/`: the partial folder is removed
on error, and a crash leaves only a hidden `.<run-id>.partial` that no reader mistakes for a run.
The exception is a run that already spent privacy: its folder is kept, with `failure.json` and no
summary, so that its ledger can be audited (also when Ctrl-C interrupts it: `abandon`). A ledger is
never deleted: a partial folder left by a crash is never reused or removed; a new run with the same
id is refused, naming the folder. `RunDirectory.resume` reopens such a folder (or a kept one with
`failure.json`) for `simulate --resume`: the failure record is kept under a numbered name.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from silobridge.errors import ConfigError

if TYPE_CHECKING:
    from silobridge.privacy.ledger import PrivacyRun

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
MODELS_DIR = "models"
FAILURE_FILE = "failure.json"


class RunDirectory:
    """`runs/<run-id>/`: resolved configuration, per-round metrics, final weights, summaries."""

    def __init__(self, out_dir: Path, run_id: str):
        self.final = out_dir / run_id
        self.partial = out_dir / f".{run_id}.partial"
        self.keep_on_failure = False  # set once the run holds something that must outlive a failure
        self._resuming: Path | None = None  # the folder a resumed run continues (`resume`)
        if self.final.exists():
            raise ConfigError(
                f"run directory {self.final} already exists; choose another --out or run id", field="run-id"
            )
        if self.partial.exists():
            raise ConfigError(
                f"an earlier run with this id stopped without finishing and left {self.partial}, which may hold "
                f"the only record of privacy it spent: audit it (silobridge audit {self.partial}), move it away, "
                "or choose another run id",
                field="run-id",
            )

    @classmethod
    def resume(cls, folder: Path) -> RunDirectory:
        """A run directory left by a crash (`.<run-id>.partial`) or an interrupt (`<run-id>` with failure.json),
        to be continued; refused if it completed (it has a summary) or another folder of the run exists."""
        folder = folder.resolve()
        name = folder.name
        run_id = name[1 : -len(".partial")] if name.startswith(".") and name.endswith(".partial") else name
        rundir = cls.__new__(cls)
        rundir.final = folder.parent / run_id
        rundir.partial = folder.parent / f".{run_id}.partial"
        rundir.keep_on_failure = True  # it holds rounds (and any privacy spent) already
        rundir._resuming = folder
        if not (folder / CONFIG_FILE).exists():
            raise ConfigError(f"{folder} is not a run directory (no {CONFIG_FILE})", field="--resume")
        if (folder / SUMMARY_JSON).exists():
            raise ConfigError(f"{folder} holds a completed run: nothing to resume", field="--resume")
        other = rundir.final if folder == rundir.partial else rundir.partial
        if other.exists():
            raise ConfigError(f"both {folder} and {other} exist: move one away before resuming", field="--resume")
        return rundir

    def __enter__(self) -> RunDirectory:
        resuming = self._resuming
        if resuming is not None:
            if resuming == self.final:  # kept by an interrupt: back under the partial name while it runs
                failure = self.final / FAILURE_FILE
                if failure.exists():
                    count = len(list(self.final.glob("failure.*.json")))
                    failure.rename(self.final / f"failure.{count + 1}.json")
                self.final.rename(self.partial)
            self._metrics = (self.partial / METRICS_FILE).open("a", encoding="utf-8")
            return self
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.partial.mkdir()  # never an existing one: another run may be writing it
        except FileExistsError:
            raise ConfigError(f"{self.partial} appeared meanwhile: another run uses this id", field="run-id") from None
        self._metrics = (self.partial / METRICS_FILE).open("a", encoding="utf-8")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self._metrics.closed:
            self._metrics.close()
        if exc_type is None or not self.partial.exists():
            return
        if self.keep_on_failure:  # the privacy ledger must stay auditable: keep what was written
            self.write_json(FAILURE_FILE, {"error": f"{exc_type.__name__}: {exc}"})
            self.partial.rename(self.final)
        else:
            shutil.rmtree(self.partial)

    def abandon(self, reason: str) -> Path | None:
        """Stop now (an interrupt): a run that spent privacy is kept with `failure.json`, any other removed.

        Returns the kept folder, or None. Called from the thread that handles the interrupt while the run's
        own thread may still be waiting for firms: the folder is renamed, not copied.
        """
        if not self._metrics.closed:
            self._metrics.close()
        if not self.partial.exists():
            return None
        if not self.keep_on_failure:
            shutil.rmtree(self.partial, ignore_errors=True)
            return None
        self.write_json(FAILURE_FILE, {"error": reason, "interrupted": True})
        self.partial.rename(self.final)
        return self.final

    def write_json(self, name: str, payload: Any) -> None:
        (self.partial / name).write_text(json.dumps(payload, indent=2, default=str) + "\n", encoding="utf-8")

    def append_metrics(self, record: dict[str, Any]) -> None:
        self._metrics.write(json.dumps(record, default=_json_default) + "\n")
        self._metrics.flush()

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> None:
        """Replace metrics.jsonl by `records` (a resumed run: the rounds its checkpoint holds)."""
        self._metrics.close()
        temporary = self.partial / f".{METRICS_FILE}.tmp"
        temporary.write_text("".join(json.dumps(r, default=_json_default) + "\n" for r in records), encoding="utf-8")
        temporary.replace(self.partial / METRICS_FILE)
        self._metrics = (self.partial / METRICS_FILE).open("a", encoding="utf-8")

    def write_text(self, name: str, text: str) -> None:
        (self.partial / name).write_text(text, encoding="utf-8")

    def write_model(
        self, kind: str, weights: OrderedDict[str, np.ndarray], extra: dict[str, np.ndarray] | None = None
    ) -> None:
        """torch state_dict files, loadable with `torch.load` into the model `clients.models.build_model` makes."""
        folder = self.partial / MODELS_DIR
        folder.mkdir(exist_ok=True)
        torch.save(OrderedDict((k, torch.from_numpy(np.asarray(v))) for k, v in weights.items()), folder / f"{kind}.pt")
        if extra:
            (folder / f"{kind}_normaliser.json").write_text(
                json.dumps({k: np.asarray(v).tolist() for k, v in extra.items()})
            )

    def commit(self) -> Path:
        self._metrics.close()
        self.partial.rename(self.final)
        return self.final


INTERRUPT_GRACE_S = 60.0
"""How long a failing run's thread waits for a pending Ctrl-C's handler (which ends the process at once)."""


class LiveRuns:
    """The run this process is writing (at most one), so that an interrupt handler can close it properly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rundir: RunDirectory | None = None
        self._ledger: PrivacyRun | None = None
        self._interrupt_pending: Callable[[], bool] | None = None
        self.grace_s = INTERRUPT_GRACE_S

    @contextmanager
    def hold(self, rundir: RunDirectory) -> Iterator[RunDirectory]:
        with self._lock:
            self._rundir, self._ledger = rundir, None
        try:
            yield rundir
        except BaseException:
            self.yield_to_interrupt()
            raise
        finally:
            with self._lock:
                if self._rundir is rundir:
                    self._rundir, self._ledger = None, None

    def ledger_opened(self, rundir: RunDirectory, ledger: PrivacyRun) -> None:
        with self._lock:
            if self._rundir is rundir:
                self._ledger = ledger

    def current(self) -> tuple[RunDirectory | None, PrivacyRun | None]:
        with self._lock:
            return self._rundir, self._ledger

    def watch_interrupts(self, pending: Callable[[], bool] | None) -> None:
        """Set by the launcher that handles Ctrl-C: tells whether one arrived whose handler may not have run."""
        self._interrupt_pending = pending

    def yield_to_interrupt(self) -> None:
        """Called by a failing run's thread before it closes anything: if Ctrl-C arrived (its SIGINT also
        killed the Ray workers, which is likely why the run failed), wait for the main thread's handler,
        which closes the ledger as interrupted, keeps the folder and ends the process. Without a pending
        Ctrl-C, or past the grace period, it returns and the failure takes its normal course."""
        pending = self._interrupt_pending
        if pending is None or threading.current_thread() is threading.main_thread() or not pending():
            return
        threading.Event().wait(self.grace_s)


live_runs = LiveRuns()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float):
        return None
    return str(value)
