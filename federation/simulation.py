"""Run a whole federation on this machine: validate everything first, then train in Flower's simulation.

Every firm is a virtual SuperNode running the same ClientApp as a real partner would; the
ServerApp runs in a thread of this process (`federation.launch`), so the caller gets the run's
result back directly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from silobridge.errors import FederationError
from silobridge.federation.client_app import build_client_app
from silobridge.federation.coordinator import RunObserver
from silobridge.federation.firm_source import validate_pilot
from silobridge.federation.launch import launch
from silobridge.federation.ledger_signer import ledger_signer
from silobridge.federation.preflight import preflight
from silobridge.federation.resume import check_scenario_unchanged
from silobridge.federation.rundir import RunDirectory
from silobridge.federation.server_app import RunResult, build_server_app
from silobridge.federation.settings import settings_from_run_config


def simulate(
    run_config: Mapping[str, Any],
    *,
    observer: RunObserver | None = None,
    cpus: int | None = None,
    resume: Path | None = None,
) -> RunResult:
    """Validate the run config, then run the simulation; raise if it produced no result.

    `resume`: the folder of an interrupted run to continue (its recorded run config is `run_config`,
    see `federation.resume.resume_run_config`); a scenario that changed since it started is refused.
    """
    settings = settings_from_run_config(run_config)  # every config error surfaces before anything starts
    validate_pilot(settings)  # a pilot's CSV files, every firm's problems at once
    if settings.spec.privacy.enabled:
        ledger_signer(settings)  # a missing or wrong ledger key
        preflight(settings)  # a budget no round can fit, firms' own budgets that leave too few firms
    if resume is None:
        RunDirectory(settings.out_dir, settings.run_id)  # an existing run, or an interrupted one, with this id
    else:
        rundir = RunDirectory.resume(resume)  # a completed run, or both of its folders
        check_scenario_unchanged(resume, settings)
        resume = rundir.final if rundir.final.exists() else rundir.partial
    config = settings.to_run_config()  # pins the run id, so server and firms agree on it
    results: list[RunResult] = []
    server_app = build_server_app(config, observer, results.append, resume=resume, cpus=cpus)
    client_app = build_client_app(config)
    launch(server_app, client_app, num_supernodes=len(settings.scenario.firms), cpus=cpus)
    if not results:
        raise FederationError("the simulation ended without a result; see the messages above")
    return results[0]
