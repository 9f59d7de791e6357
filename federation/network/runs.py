"""Runs over the real federation: `flwr run` of the training or of an analytics session on the
SuperLink of the 'silobridge' connection, each refused here first when it would be refused later
(settings, ledger key, query parameters, budget), and its result read back from the run directory.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from silobridge.errors import FederationError

if TYPE_CHECKING:
    from silobridge.federation.query_run import QueryJob


@dataclass(frozen=True)
class NetworkRun:
    """What a networked run wrote: its summary and its run directory."""

    summary: dict[str, Any]
    path: Path


@dataclass(frozen=True)
class NetworkQueries:
    """What a networked analytics session answered: each query's outcome, the noise, the run directory."""

    outcomes: list[dict[str, Any]]
    noise_multiplier: float | None
    path: Path


def run_federation(run_config: Mapping[str, str | int], *, resume: Path | None = None) -> NetworkRun:
    """Check the settings (and, under DP, the ledger key) before the partners are asked, then `flwr run`.

    `resume`: the folder of an interrupted run to continue (`run_config` is then its recorded one, see
    `federation.resume.network_resume_config`): checked here as `simulate --resume` checks it (a completed run,
    both folders present, a federation file changed since: refused naming the field), then passed to the
    ServerApp, which continues from its checkpoint in a new Flower run.
    `flwr run --stream` exits 0 even when the run failed: a run without its summary is a `FederationError`.
    """
    from silobridge.federation.ledger_signer import ledger_signer
    from silobridge.federation.network.deploy import process_env, run_command
    from silobridge.federation.settings import APP_DIR, RESUME_KEY, settings_from_run_config

    settings = settings_from_run_config(dict(run_config))
    if settings.spec.privacy.enabled:
        ledger_signer(settings)  # a missing or wrong ledger key: refused before the partners are asked
    config = {**run_config, "run-id": settings.run_id}
    if resume is not None:
        from silobridge.federation.resume import check_scenario_unchanged
        from silobridge.federation.rundir import RunDirectory

        rundir = RunDirectory.resume(resume)  # a completed run, or both of its folders: refused here
        check_scenario_unchanged(resume, settings)
        config[RESUME_KEY] = str(rundir.final if rundir.final.exists() else rundir.partial)
    code = subprocess.call(run_command(APP_DIR, config), env=process_env())
    summary_path = settings.out_dir / settings.run_id / "summary.json"
    if not summary_path.exists():
        raise FederationError(f"the run wrote no {summary_path} (flwr exit code {code}); see the log above")
    return NetworkRun(json.loads(summary_path.read_text()), summary_path.parent)


def run_queries(run_config: Mapping[str, object], job: QueryJob) -> NetworkQueries:
    """`flwr run` of the queries on the federation's SuperLink; the answer read back from the run directory."""
    from silobridge.federation.ledger_signer import ledger_signer
    from silobridge.federation.network.deploy import process_env, run_command
    from silobridge.federation.query_run import (
        QUERIES_FILE,
        check_query_privacy,
        noised_plans,
        plan_queries,
        query_settings,
    )
    from silobridge.federation.settings import APP_DIR, NODES, QUERIES_KEY

    config = {**run_config, "data": NODES}
    settings = query_settings(config)
    check_query_privacy(settings, job.budget, [r.name for r in job.requests])
    if job.budget is not None:
        ledger_signer(settings)  # a missing or wrong ledger key: refused before the partners are asked
    # parameter errors (and, under DP, the budget's calibration) surface before the partners are asked
    if job.budget is None:
        plan_queries(settings, job.requests)
    else:
        noised_plans(settings, job.requests, job.budget)
    flower_config = {**settings.to_run_config(), QUERIES_KEY: job.to_run_config()}
    # flwr's streamed log goes to stderr, so that stdout holds only the answer (`--json` pipes cleanly)
    code = subprocess.call(run_command(APP_DIR, flower_config), env=process_env(), stdout=sys.stderr)
    written = settings.out_dir / settings.run_id / QUERIES_FILE
    if not written.exists():  # `flwr run --stream` exits 0 even when the run failed
        raise FederationError(f"the query run wrote no {written} (flwr exit code {code}); see the log above")
    result = json.loads(written.read_text())
    return NetworkQueries(result["queries"], result["noise_multiplier"], written.parent)
