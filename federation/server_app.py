"""The coordinator's ServerApp: run the federation, add the centralised baseline, write the run directory.

`app` is what `flwr run .` loads; `build_server_app` binds a run config and a display when the
simulation runs in-process (`silobridge simulate`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from federation.baselines import centralised_baseline
from federation.firm_source import simulated_firm
from federation.progress import Fanout, LogObserver, StageTimer
from federation.rundir import CONFIG_FILE, SUMMARY_JSON, SUMMARY_MD, RunDirectory
from federation.runner import RunObserver, run_federation
from federation.settings import RunSettings, settings_from_run_config
from federation.summary import build_summary, summary_markdown

log = logging.getLogger("silobridge")

CENTRALISED_RUN_ID = -1
"""Cache key for the firms the coordinator rebuilds to compute the centralised baseline."""


@dataclass(frozen=True)
class RunResult:
    path: Path
    summary: dict[str, Any]


class _MetricsFile:
    """Observer that appends every round's record to the run directory's metrics.jsonl."""

    def __init__(self, rundir: RunDirectory):
        self.rundir = rundir

    def stage(self, name: str) -> None:
        return None

    def round_done(self, record: dict[str, Any]) -> None:
        self.rundir.append_metrics(record)


def run_server(grid: Grid, settings: RunSettings, observer: RunObserver, *, flower_run_id: int) -> RunResult:
    """The whole run; the run directory appears only if everything succeeded."""
    started = time.monotonic()
    timer = StageTimer()
    with RunDirectory(settings.out_dir, settings.run_id) as rundir:
        rundir.write_json(
            CONFIG_FILE, {"run_config": settings.to_run_config(), "scenario": settings.scenario.model_dump(mode="json")}
        )
        observers = Fanout(observer, timer, _MetricsFile(rundir))
        outcome = run_federation(grid, settings, observers, flower_run_id=flower_run_id)
        observers.stage("centralised baseline")
        spec = settings.spec
        firms = [
            simulated_firm(settings, spec, i, run_id=CENTRALISED_RUN_ID) for i in range(len(settings.scenario.firms))
        ]
        centralised = centralised_baseline(
            firms, settings.scenario.training, outcome.normaliser, seed=settings.scenario.seed
        )
        for kind, weights in outcome.weights.items():
            extra = {"mean": outcome.normaliser.mean, "std": outcome.normaliser.std} if kind == "risk" else None
            rundir.write_model(kind, weights, extra)
        summary = build_summary(
            settings, outcome, centralised, seconds=round(time.monotonic() - started, 2), stage_seconds=timer.totals()
        )
        rundir.write_json(SUMMARY_JSON, summary)
        rundir.write_text(SUMMARY_MD, summary_markdown(summary))
        path = rundir.commit()
    observer.stage("done")
    return RunResult(path=path, summary=summary)


def build_server_app(
    run_config: Mapping[str, Any] | None = None,
    observer: RunObserver | None = None,
    on_result: Callable[[RunResult], None] | None = None,
) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if observer is None:
            _log_to_stderr()
        settings = settings_from_run_config(run_config if run_config is not None else context.run_config)
        result = run_server(grid, settings, observer or LogObserver(), flower_run_id=context.run_id)
        log.info("run written to %s", result.path)
        if on_result is not None:
            on_result(result)

    return app


def _log_to_stderr() -> None:
    """Under `flwr run` nothing configures our logger; its lines reach the user through the log stream."""
    logger = logging.getLogger("silobridge")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False


app = build_server_app()
"""The ServerApp `flwr run .` loads (pyproject [tool.flwr.app.components])."""
