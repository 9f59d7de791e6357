"""The one launcher of Flower's simulation runtime, in-process: training runs and query runs both start here.

Every firm is a virtual SuperNode running the ClientApp a real partner would run; the ServerApp runs
in a thread of this process, so its caller collects the run's result itself. This module also owns
what surrounds a launch: Flower's log level, the one deprecation we silence, and a clean Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest.mock import patch

from flwr.clientapp import ClientApp
from flwr.serverapp import ServerApp

from silobridge.errors import FederationError
from silobridge.federation.resume import resume_command
from silobridge.federation.rundir import live_runs
from silobridge.federation.settings import quiet_accountant
from silobridge.federation.sigint_probe import SignalProbe
from silobridge.federation.simulation_cpus import simulation_cpus

# The runtime would otherwise try to pip-install the app's dependencies, which fails offline.
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def launch(server_app: ServerApp, client_app: ClientApp, *, num_supernodes: int, cpus: int | None = None) -> None:
    """Run the apps on Flower's simulation runtime (Ray backend, one CPU per virtual node; `simulation_cpus`
    CPUs in all) until the ServerApp returns; Ctrl-C stops it cleanly (`stop_on_interrupt`)."""
    num_cpus = simulation_cpus(cpus)
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {
            "num_cpus": num_cpus,
            "include_dashboard": False,
            "logging_level": logging.ERROR,
            "log_to_driver": True,
        },
    }
    from flwr.simulation import run_simulation  # Ray: only where a simulation runs

    with warnings.catch_warnings(), stop_on_interrupt(), _ray_kept(num_cpus):
        warnings.simplefilter("ignore", FutureWarning)
        quiet_flower()
        _start_ray(backend_config["init_args"])
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=num_supernodes,
            backend_config=backend_config,
        )


# ---- Ray's start, retried ----------------------------------------------------------------------------------
RAY_START_ATTEMPTS = 3
"""Ray gives its raylet a fixed 30 s to register (ray/_private/node.py); an overloaded machine can miss it once."""


def _start_ray(init_args: dict[str, Any]) -> None:
    """Start Ray before Flower does, retrying a failed start: inside `run_simulation` a failed `ray.init` leaves
    the run waiting for workers that never come, so it must fail (or succeed) here, where it can be reported."""
    import ray

    if ray.is_initialized():
        return
    # What flwr 1.41's RayBackend.init_ray passes (it skips its own init once Ray is up): the driver's sys.path
    # reaches the workers through PYTHONPATH.
    pythonpath = os.pathsep.join(sys.path)
    if os.environ.get("PYTHONPATH"):
        pythonpath = f"{pythonpath}{os.pathsep}{os.environ['PYTHONPATH']}"
    os.environ["PYTHONPATH"] = pythonpath
    start_with_retries(
        lambda: ray.init(runtime_env={"env_vars": {"PYTHONPATH": pythonpath}}, **init_args),
        ray.shutdown,
        attempts=RAY_START_ATTEMPTS,
    )


def start_with_retries(
    start: Callable[[], object], clean_up: Callable[[], object], *, attempts: int, pause_s: float = 1.0
) -> None:
    """Call `start` until it returns, cleaning up after each failure; after `attempts` failures, a
    FederationError that says what failed (no traceback reaches the user)."""
    failures: list[str] = []
    for attempt in range(1, attempts + 1):
        try:
            start()
            return
        except Exception as error:  # Ray raises a bare Exception on a start timeout
            failures.append(f"{type(error).__name__}: {error}")
            clean_up()
            if attempt < attempts:
                time.sleep(pause_s * attempt)
    raise FederationError(
        f"the simulation runtime (Ray) did not start in {attempts} attempts; last error: {failures[-1]} "
        "(on an overloaded machine Ray's raylet can miss its fixed 30 s registration window: retry when the load "
        "is lower)"
    )


# ---- One Ray instance for many launches (tests) ---------------------------------------------------------
# Flower's RayBackend (flwr 1.41, `server/superlink/fleet/vce/backend/raybackend.py`) skips `ray.init` when Ray
# is already initialised, but its `terminate()` always calls `ray.shutdown()`: every launch pays Ray's start
# (seconds on 2 cores). Inside `one_ray_for_many_launches()` a launch ends by killing its own actors instead,
# so the next launch in this process reuses Ray but gets a fresh actor pool (fresh processes: no state carried
# over). A CLI run launches once and keeps flwr's behaviour; the test suite keeps Ray per pytest worker.
_keepers: list[object] = []  # one entry per active `one_ray_for_many_launches` block (they may nest)
ACTORS_RELEASED_S = 60.0
"""How long a launch waits for its killed actors to give their CPUs back before it shuts Ray down instead."""


@contextmanager
def one_ray_for_many_launches() -> Iterator[None]:
    """Keep Ray running between the launches made inside, each with a fresh actor pool; the outermost block
    shuts Ray down when it ends."""
    token = object()
    _keepers.append(token)
    try:
        yield
    finally:
        _keepers.remove(token)
        if not _keepers and "ray" in sys.modules and sys.modules["ray"].is_initialized():
            sys.modules["ray"].shutdown()


@contextmanager
def _ray_kept(num_cpus: int) -> Iterator[None]:
    """While `one_ray_for_many_launches` is active: reuse a running Ray of the same size, and end the launch by
    killing its actors (every one, busy ones included, as when a run fails mid-round) rather than Ray."""
    if not _keepers:
        yield
        return
    import ray
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    if ray.is_initialized() and ray.cluster_resources().get("CPU") != num_cpus:
        ray.shutdown()  # a launch asked for another number of CPUs: a Ray of that size, as without this hook
    with patch.object(RayBackend, "terminate", _kill_actors_keep_ray):
        yield


def _kill_actors_keep_ray(backend: Any) -> None:
    """RayBackend.terminate, less `ray.shutdown()`: kill the run's actors and wait until their CPUs are free."""
    import ray

    pool = backend.pool
    if pool is not None:
        for actor in [*pool.pool, *pool._future_to_actor.values()]:  # idle, then busy
            ray.kill(actor, no_restart=True)
    deadline = time.monotonic() + ACTORS_RELEASED_S
    total = ray.cluster_resources().get("CPU", 0.0)
    while ray.available_resources().get("CPU", 0.0) < total:
        if time.monotonic() > deadline:  # an actor that would not die: start the next launch on a fresh Ray
            ray.shutdown()
            return
        time.sleep(0.05)


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

    The run's ledger gets its end entry ("interrupted"), a run that spent privacy or completed a round keeps
    its folder with failure.json, Ray is shut down, what was spent and the resume command are printed, and
    the process exits with 130.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread receives signals
        return
    previous = signal.signal(signal.SIGINT, _interrupted)
    probe = SignalProbe(signal.SIGINT)
    probe.install()
    live_runs.watch_interrupts(probe)  # the run's thread, failing because Ray's workers died, waits for us
    try:
        yield
    finally:
        live_runs.watch_interrupts(None)
        probe.uninstall()
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
        audit = f"; check it with: silobridge audit {kept}" if ledger is not None else ""
        lines.append(f"run directory kept with failure.json: {kept}{audit}")
        command = resume_command(kept)
        if command is not None:
            lines.append(f"resume it after its last completed round or step with: {command}")
    elif ledger is None:
        lines.append("no privacy was spent; nothing was kept")
    sys.stderr.write("interrupted: " + "\n".join(lines) + "\n")
    sys.stderr.flush()
    # No `ray.shutdown()` here: Flower's runtime thread may touch Ray once it is down, and Ray then ends the
    # process at once with exit status 1 (seen in CI). `ray.init` started a reaper that stops Ray's own
    # processes when this one ends, so exiting is enough; Flower's runtime thread, still waiting on dead
    # workers, is not joined.
    os._exit(EXIT_INTERRUPTED)


def quiet_flower() -> None:
    """Flower logs every message exchange at INFO; keep warnings and errors, less the one deprecation we chose."""
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)
    flower = logging.getLogger("flwr")
    if RUN_SIMULATION_DEPRECATION not in flower.filters:
        flower.addFilter(RUN_SIMULATION_DEPRECATION)
    quiet_accountant()
