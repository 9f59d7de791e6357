"""The coordinator's ServerApp: run the federation, add the centralised baseline, write the run directory.

`app` is what `flwr run .` loads; `build_server_app` binds a run config and a display when the
simulation runs in-process (`silobridge simulate`). A run config whose `queries` key is set runs
those analytics queries instead of training (`federation.query_run.serve_queries`, the same path a
query simulation takes) and writes their run directory.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from silobridge.clients.normaliser import Normaliser
from silobridge.federation.coordinator import RunObserver
from silobridge.federation.firm_source import pilot_folders
from silobridge.federation.harness import SimulationHarness
from silobridge.federation.ledger_signer import PER_RUN, ledger_signer
from silobridge.federation.linear_run import linear_privacy
from silobridge.federation.network.flower_hooks import apply_object_pull_backoff
from silobridge.federation.network.trace import trace_grid
from silobridge.federation.preflight import check_firm_budgets
from silobridge.federation.privacy_report import LEDGER_FILE, privacy_summary
from silobridge.federation.progress import Fanout, LogObserver, StageTimer, log_to_stderr
from silobridge.federation.query_run import QueryJob, query_settings, serve_queries
from silobridge.federation.resume import RUN_KEY_FILE, Checkpoints
from silobridge.federation.rundir import CONFIG_FILE, SUMMARY_JSON, SUMMARY_MD, RunDirectory, live_runs
from silobridge.federation.runner import run_federation
from silobridge.federation.settings import QUERIES_KEY, RESUME_KEY, RunSettings, settings_from_run_config
from silobridge.federation.summary import build_summary, summary_markdown
from silobridge.privacy.dp import Budget
from silobridge.privacy.ledger import PrivacyRun, config_hash, public_key_hex
from silobridge.server.privacy import accounting_spec

log = logging.getLogger("silobridge")


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


def run_server(
    grid: Grid,
    settings: RunSettings,
    observer: RunObserver,
    *,
    flower_run_id: int,
    resume: Path | None = None,
    cpus: int | None = None,
) -> RunResult:
    """The whole run. The run directory appears when it succeeded, or -- once privacy was spent or a round
    completed -- also when it failed, so that its ledger can be audited and the run resumed. `resume` is
    the folder of an interrupted run to continue (`federation.resume`); `cpus` those the simulation was
    given, which the harness's per-firm fits use while the firms' workers wait (default: the machine's)."""
    started = time.monotonic()
    timer = StageTimer()
    spec = settings.spec  # configuration and calibration errors surface before anything is written
    pilot_folders(settings)  # a pilot's folder holds exactly the declared firms
    harness = SimulationHarness(settings, workers=cpus) if settings.simulated else None  # none in a real federation
    signer = ledger_signer(settings) if spec.privacy.enabled else None  # a wrong or missing key: refused here
    opened = RunDirectory.resume(resume) if resume is not None else RunDirectory(settings.out_dir, settings.run_id)
    with opened as rundir, live_runs.hold(rundir):
        config = {"run_config": settings.to_run_config(), "scenario": settings.scenario.model_dump(mode="json")}
        if resume is None:
            rundir.write_json(CONFIG_FILE, config)
        checkpoints = Checkpoints(rundir, config_hash(config), resuming=resume is not None)
        observers = Fanout(observer, timer, _MetricsFile(rundir))
        with _LedgerOpener(settings, rundir, config, signer, checkpoints) as ledger:
            outcome = run_federation(
                grid,
                settings,
                observers,
                flower_run_id=flower_run_id,
                open_ledger=ledger.open,
                harness=harness,
                checkpoints=checkpoints,
            )
            ledger.stopped = outcome.stopped
        centralised: dict[str, np.ndarray] = {}
        if harness is not None:
            observers.stage("centralised baseline")
            # the non-private upper bound of the family trained: the MLP's, or (linear only) pooled ridge/logistic
            if "mlp" in outcome.families:
                centralised = harness.centralised(outcome.normaliser)
            else:
                centralised = harness.centralised_linear(outcome.normaliser)
        for kind, weights in outcome.weights.items():
            rundir.write_model(kind, weights, _normaliser_arrays(outcome.normaliser) if kind == "risk" else None)
        for kind, weights in (outcome.linear.weights() if outcome.linear is not None else {}).items():
            extra = _normaliser_arrays(outcome.normaliser) if kind == "risk" else None
            rundir.write_model(f"{kind}_linear", weights, extra)
        privacy = (
            privacy_summary(
                settings.privacy_plan(),
                rundir.partial / LEDGER_FILE,
                ledger.public_key,
                key_kind=ledger.key_kind,
                group_size=spec.lags + spec.horizon,
                firms=[manifest.firm_id for manifest in outcome.manifests.values()],
            )
            if spec.privacy.enabled
            else {"enabled": False}
        )
        if spec.privacy.enabled and outcome.linear is not None and "mlp" not in outcome.families:
            privacy.update(linear_privacy(outcome.linear))
        summary = build_summary(
            settings,
            outcome,
            centralised,
            privacy=privacy,
            seconds=round(time.monotonic() - started, 2),
            stage_seconds=timer.totals(),
        )
        rundir.write_json(SUMMARY_JSON, summary)
        rundir.write_text(SUMMARY_MD, summary_markdown(summary))
        (rundir.partial / RUN_KEY_FILE).unlink(missing_ok=True)  # a completed run is never resumed
        path = rundir.commit()
    observer.stage("done")
    return RunResult(path=path, summary=summary)


def _normaliser_arrays(norm: Normaliser) -> dict[str, np.ndarray]:
    return norm.to_arrays()


class _LedgerOpener:
    """Opens the run's privacy ledger once the firms (and their own budgets) are known."""

    def __init__(
        self,
        settings: RunSettings,
        rundir: RunDirectory,
        config: dict[str, Any],
        signer: tuple[Ed25519PrivateKey, str] | None,
        checkpoints: Checkpoints,
    ):
        self.settings = settings
        self.rundir = rundir
        self.config_sha256 = config_hash(config)
        self.checkpoints = checkpoints
        # The federation's long-term key, or (a simulation without one) a key made for this run only:
        # the header records which, and its public key is in the summary.
        self.key, self.key_kind = signer if signer is not None else (Ed25519PrivateKey.generate(), PER_RUN)
        self.key = checkpoints.signing_key(self.key, self.key_kind)
        self.public_key = public_key_hex(self.key.public_key())
        self.ledger: PrivacyRun | None = None
        self.stopped: str | None = None

    def open(self, firm_budgets: Mapping[str, float | None]) -> PrivacyRun:
        privacy = self.settings.spec.privacy
        # The budgets the firms declared (a real federation learns them only now): refuse before round 1
        # if leaving out the firms that cannot pay for one round leaves too few for a round.
        check_firm_budgets(self.settings, firm_budgets)
        self.ledger = self.checkpoints.open_ledger(
            self.key,
            self.key_kind,
            lambda path: PrivacyRun.start(
                path,
                run_id=self.settings.run_id,
                config_sha256=self.config_sha256,
                budget=Budget(privacy.epsilon, privacy.delta),
                signing_key=self.key,
                spec=accounting_spec(privacy),
                firm_budgets={f: Budget(eps, privacy.delta) for f, eps in firm_budgets.items() if eps is not None},
                key_kind=self.key_kind,
            ),
        )
        return self.ledger

    def __enter__(self) -> _LedgerOpener:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        """The ledger's end entry says how the run ended: completed, stopped early, or aborted."""
        if self.ledger is None or self.ledger.closed:
            return
        if exc_type is not None:
            live_runs.yield_to_interrupt()  # a pending Ctrl-C's handler closes it as interrupted instead
            self.ledger.close(f"aborted: {exc_type.__name__}: {exc}")
        else:
            self.ledger.close("completed" if self.stopped is None else f"stopped early: {self.stopped}")


def build_server_app(
    run_config: Mapping[str, Any] | None = None,
    observer: RunObserver | None = None,
    on_result: Callable[[RunResult], None] | None = None,
    resume: Path | None = None,
    cpus: int | None = None,
) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        if observer is None:
            log_to_stderr()  # under `flwr run` nothing else configures our logger
        from flwr.superlink.grid.inmemory_grid import InMemoryGrid

        if not isinstance(grid, InMemoryGrid):  # a networked run pulls each reply's objects from the SuperLink
            apply_object_pull_backoff()
            trace_grid()  # only when SILOBRIDGE_NET_TRACE names a file (the network benchmark)
        config = run_config if run_config is not None else context.run_config
        resume_dir = str(config.get(RESUME_KEY) or "")  # `run --resume`, `query --network --resume`: the folder
        if str(config.get(QUERIES_KEY) or ""):  # analytics queries instead of training (`silobridge query --network`)
            job = QueryJob.from_run_config(str(config[QUERIES_KEY]))
            queries = serve_queries(
                grid,
                query_settings(config),
                job.requests,
                job.budget,
                flower_run_id=context.run_id,
                observer=observer or LogObserver(),
                resume=Path(resume_dir) if resume_dir else None,
            )
            log.info("queries written to %s", queries.path)
            return
        settings = settings_from_run_config(config)
        result = run_server(
            grid,
            settings,
            observer or LogObserver(),
            flower_run_id=context.run_id,
            resume=resume if resume is not None else Path(resume_dir) if resume_dir else None,
            cpus=cpus,
        )
        log.info("run written to %s", result.path)
        if on_result is not None:
            on_result(result)

    return app


app = build_server_app()
"""The ServerApp `flwr run .` loads (pyproject [tool.flwr.app.components])."""
