"""Run a whole federation on this machine: Flower's simulation runtime, in-process.

Every firm is a virtual SuperNode running the same ClientApp as a real partner would; the
ServerApp runs in a thread of this process, so the caller gets the run's result back directly.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from silobridge.errors import FederationError
from silobridge.federation.client_app import build_client_app
from silobridge.federation.firm_source import validate_pilot
from silobridge.federation.ledger_signer import ledger_signer
from silobridge.federation.preflight import preflight
from silobridge.federation.rundir import RunDirectory, live_runs
from silobridge.federation.runner import RunObserver
from silobridge.federation.server_app import RunResult, build_server_app
from silobridge.federation.settings import quiet_accountant, settings_from_run_config

# The runtime would otherwise try to pip-install the app's dependencies, which fails offline.
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def simulate(
    run_config: Mapping[str, Any], *, observer: RunObserver | None = None, cpus: int | None = None
) -> RunResult:
    """Validate the run config, then run the simulation; raise if it produced no result."""
    settings = settings_from_run_config(run_config)  # every config error surfaces before anything starts
    validate_pilot(settings)  # a pilot's CSV files, every firm's problems at once
    if settings.spec.privacy.enabled:
        ledger_signer(settings)  # a missing or wrong ledger key
        preflight(settings)  # a budget no round can fit, firms' own budgets that leave too few firms
    RunDirectory(settings.out_dir, settings.run_id)  # an existing run, or an interrupted one, with this id
    config = settings.to_run_config()  # pins the run id, so server and firms agree on it
    results: list[RunResult] = []
    server_app = build_server_app(config, observer, results.append)
    client_app = build_client_app(config)
    num_cpus = cpus or os.cpu_count() or 1
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": num_cpus,
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": True,
        },
    }
    from flwr.simulation import run_simulation

    with warnings.catch_warnings(), stop_on_interrupt():
        warnings.simplefilter("ignore", FutureWarning)
        _quiet_flower()
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=len(settings.scenario.firms),
            backend_config=backend_config,
        )
    if not results:
        raise FederationError("the simulation ended without a result; see the messages above")
    return results[0]


class _RunSimulationDeprecation(logging.Filter):
    """Drops exactly Flower's "`run_simulation` function is deprecated" warning, nothing else.

    `flwr run` (its replacement) starts a SuperLink and runs the ServerApp in another process, so the
    caller could not get the run's result back in-process and a test could not stop what it starts;
    `run_simulation` is the only in-process entry point of flwr 1.41 and it works. Every other Flower
    warning (other deprecations included) still shows. Drop this filter when a supported in-process
    entry point exists.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (
            record.levelno == logging.WARNING
            and str(record.msg).startswith("DEPRECATED FEATURE")
            and any("`run_simulation` function is deprecated" in str(arg) for arg in args)
        )


RUN_SIMULATION_DEPRECATION = _RunSimulationDeprecation()


EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process Ctrl-C ended


@contextmanager
def stop_on_interrupt() -> Iterator[None]:
    """Ctrl-C (SIGINT) ends the simulation at once, cleanly: Flower's runtime would otherwise lose its Ray
    workers and wait for their replies until the round times out.

    The run's ledger gets its end entry ("interrupted"), a run that spent privacy keeps its folder with
    failure.json, Ray is shut down, what was spent is printed, and the process exits with 130.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    previous = signal.signal(signal.SIGINT, _interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupted(signum: int, frame: object) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean-up
    for name in ("flwr", "ray", "silobridge"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the run's thread now fails: nothing to report
    reason = "interrupted: SIGINT (Ctrl-C)"
    rundir, ledger = live_runs.current()
    lines = []
    if ledger is not None:
        ledger.close(reason)
        lines.append(
            f"privacy spent before the interrupt: epsilon {ledger.overall_epsilon:.4f} of {ledger.budget.epsilon:g} "
            f"at delta {ledger.budget.delta:g} (signed ledger {ledger.path.name}, closed with its end entry)"
        )
    kept = rundir.abandon(reason) if rundir is not None else None
    if kept is not None:
        lines.append(f"run directory kept with failure.json: {kept}; check it with: silobridge audit {kept}")
    elif ledger is None:
        lines.append("no privacy was spent; nothing was kept")
    _shutdown_ray()
    sys.stderr.write("interrupted: " + "\n".join(lines) + "\n")
    sys.stderr.flush()
    os._exit(EXIT_INTERRUPTED)  # Flower's runtime thread is still waiting on dead workers: do not join it


def _shutdown_ray() -> None:
    """Ray's shutdown, bounded: a shutdown that hangs on dead workers must not keep the process alive."""

    def stop() -> None:
        try:
            import ray

            ray.shutdown()
        except Exception:  # noqa: BLE001 - best effort while exiting; the process ends right after
            return

    thread = threading.Thread(target=stop, daemon=True)
    thread.start()
    thread.join(timeout=20)


def _quiet_flower() -> None:
    """Flower logs every message exchange at INFO; keep warnings and errors, less the one deprecation we chose."""
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)
    flower = logging.getLogger("flwr")
    if RUN_SIMULATION_DEPRECATION not in flower.filters:
        flower.addFilter(RUN_SIMULATION_DEPRECATION)
    quiet_accountant()
