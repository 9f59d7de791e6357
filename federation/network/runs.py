"""Runs over the real federation: `flwr run` of the training or of an analytics session on the
SuperLink of the 'silobridge' connection, each refused here first when it would be refused later
(settings, ledger key, query parameters, budget), and its result read back from the run directory.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

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
    try:
        code = flower_run(run_command(APP_DIR, config), process_env(), sys.stdout)
    except KeyboardInterrupt:
        report_interrupted(settings.out_dir, settings.run_id)
        raise
    summary_path = settings.out_dir / settings.run_id / "summary.json"
    if not summary_path.exists():
        raise FederationError(f"the run wrote no {summary_path} (flwr exit code {code}); see the log above")
    return NetworkRun(json.loads(summary_path.read_text()), summary_path.parent)


def run_queries(run_config: Mapping[str, object], job: QueryJob, *, resume: Path | None = None) -> NetworkQueries:
    """`flwr run` of the queries on the federation's SuperLink; the answer read back from the run directory.

    `resume`: the folder of a stopped session to continue (`run_config` and `job` are then the ones it recorded,
    `query_run.recorded_session`): a completed session, both folders present, a simulation's folder, or a plan,
    option or federation file that differs now are refused here, naming the field, before `flwr run`; the
    ServerApp continues the session after its last completed step (`federation.query_resume`).
    """
    from silobridge.federation.ledger_signer import ledger_signer
    from silobridge.federation.network.deploy import process_env, run_command
    from silobridge.federation.query_run import (
        QUERIES_FILE,
        check_query_privacy,
        check_same_session,
        noised_plans,
        plan_queries,
        query_settings,
        resumable_session,
        session_config,
        with_scenario_defaults,
    )
    from silobridge.federation.settings import APP_DIR, NODES, QUERIES_KEY, RESUME_KEY

    config = {**run_config, "data": NODES}
    settings = query_settings(config)
    check_query_privacy(settings, job.budget, [r.name for r in job.requests])
    if job.budget is not None:
        ledger_signer(settings)  # a missing or wrong ledger key: refused before the partners are asked
    # parameter errors (and, under DP, the budget's calibration) surface before the partners are asked
    if job.budget is None:
        plan_queries(settings, job.requests)
        noise = None
    else:
        noise = noised_plans(settings, job.requests, job.budget)[1]
    flower_config = {**settings.to_run_config(), QUERIES_KEY: job.to_run_config()}
    if resume is not None:
        folder = resumable_session(resume)
        requests = with_scenario_defaults(settings, job.requests)
        check_same_session(folder, session_config(settings, requests, job.budget, noise))
        flower_config[RESUME_KEY] = str(folder)
    # flwr's streamed log goes to stderr, so that stdout holds only the answer (`--json` pipes cleanly)
    try:
        code = flower_run(run_command(APP_DIR, flower_config), process_env(), sys.stderr)
    except KeyboardInterrupt:
        report_interrupted(settings.out_dir, settings.run_id)
        raise
    written = settings.out_dir / settings.run_id / QUERIES_FILE
    if not written.exists():  # `flwr run --stream` exits 0 even when the run failed
        raise FederationError(f"the query run wrote no {written} (flwr exit code {code}); see the log above")
    result = json.loads(written.read_text())
    return NetworkQueries(result["queries"], result["noise_multiplier"], written.parent)


STARTED = re.compile(r"Successfully started run (\d+)")
"""What `flwr run` prints once the SuperLink accepted the run: the Flower run id, which `flwr stop` needs."""

STOP_WAIT_S = 90.0
"""How long Ctrl-C waits for the stopped ServerApp to leave its run directory: it learns of the stop at its next
heartbeat (Flower's interval: about 24 s), then ends as a failed run does (ledger end entry, folder kept)."""


def flower_run(command: Sequence[str], env: Mapping[str, str], sink: TextIO) -> int:
    """`flwr run --stream`, its output passed on to `sink`; its exit code.

    Ctrl-C (KeyboardInterrupt) stops the Flower run on the SuperLink (`flwr stop`), then re-raises: `flwr run`
    alone would only stop streaming, and the ServerApp would go on with nobody watching. `flwr run` runs in a
    session of its own, so that the terminal's Ctrl-C reaches only this process, which stops it in order.
    """
    from silobridge.federation.network.deploy import stop_command

    process = subprocess.Popen(
        list(command), env=dict(env), stdout=subprocess.PIPE, text=True, errors="replace", start_new_session=True
    )
    flower_run_id: int | None = None
    try:
        for line in process.stdout or ():
            sink.write(line)
            sink.flush()
            found = STARTED.search(line)
            if found is not None and flower_run_id is None:
                flower_run_id = int(found.group(1))
        return process.wait()
    except KeyboardInterrupt:
        if flower_run_id is not None:
            sys.stderr.write(f"interrupted: stopping Flower run {flower_run_id} on the SuperLink (flwr stop)\n")
            stopped = subprocess.run(stop_command(flower_run_id), env=dict(env), capture_output=True, text=True)
            if stopped.returncode != 0:
                sys.stderr.write(f"flwr stop failed: {(stopped.stdout + stopped.stderr).strip()[-500:]}\n")
        process.terminate()
        process.wait()
        raise


def report_interrupted(out_dir: Path, run_id: str, *, wait_s: float = STOP_WAIT_S) -> None:
    """After Ctrl-C: wait for the stopped ServerApp to leave the run's folder, then say what it left and the
    command that resumes it (stderr)."""
    from silobridge.federation.resume import resume_command

    final, partial = out_dir / run_id, out_dir / f".{run_id}.partial"
    deadline = time.monotonic() + wait_s
    while partial.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    kept = final if final.exists() else partial if partial.exists() else None
    if kept is None:
        sys.stderr.write("interrupted: no privacy was spent and no round completed; nothing was kept\n")
        return
    lines = [f"run directory: {kept}" + ("" if kept == final else " (its ServerApp had not stopped yet)")]
    command = resume_command(kept)
    if command is not None:
        done = "step" if command.startswith("silobridge query") else "round"
        lines.append(f"resume it after its last completed {done} with: {command}")
    lines.append(f"check its ledger with: silobridge audit {kept}")
    sys.stderr.write("interrupted: " + "\n".join(lines) + "\n")
