"""`silobridge query --network --resume`: a session over the real federation continues in a new Flower run.

Without a federation: the recorded session is sent back (its plan, budget and run config, and the folder in the
`resume-dir` key, which the ServerApp hands to the query path), refusals name the option or field before
`flwr run` starts, and Ctrl-C prints the resume command (stand-ins for `flwr run` and `flwr stop`, as
test_run_resume.py does for runs). The step-by-step resume itself is the simulation's: test_query_resume.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from silobridge.errors import ConfigError
from silobridge.federation import server_app
from silobridge.federation.checkpoint import CHECKPOINT_FILE
from silobridge.federation.cli.query import check_resumed_where
from silobridge.federation.network import deploy, runs
from silobridge.federation.query_run import (
    QUERIES_FILE,
    QueryBudget,
    QueryJob,
    QueryRequest,
    noised_plans,
    query_settings,
    recorded_session,
    session_config,
)
from silobridge.federation.resume import resume_command
from silobridge.federation.run_requests import query_config
from silobridge.federation.rundir import CONFIG_FILE
from silobridge.federation.settings import NODES, QUERIES_KEY, RESUME_KEY
from tests.conftest import ROOT
from tests.flwr_run_stand_in import ctrl_c_once_started, flwr_run_stand_in
from tests.test_cli import silobridge_in_process

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"
REQUESTS = [QueryRequest("mean", {"column": "units", "low": 0, "high": 5000}), QueryRequest("count", {})]
BUDGET = QueryBudget(2.0, 1e-5, "rdp", None, "record")


def _stopped_network_session(tmp_path: Path, run_id: str = "q") -> Path:
    """The folder a killed `query --network` leaves: config.json as its ServerApp records it, a checkpoint."""
    federation = tmp_path / "federation.toml"
    if not federation.exists():
        federation.write_text(TRIO.read_text())
    # what the ServerApp parses under `flwr run`: the run config `query --network` sent
    sent = query_settings({**query_config(federation, tmp_path / "runs", run_id=run_id), "data": NODES})
    settings = query_settings(sent.to_run_config())
    noise = noised_plans(settings, REQUESTS, BUDGET)[1]
    folder = tmp_path / "runs" / f".{run_id}.partial"
    folder.mkdir(parents=True)
    (folder / CONFIG_FILE).write_text(json.dumps(session_config(settings, REQUESTS, BUDGET, noise)))
    (folder / CHECKPOINT_FILE).write_bytes(b"")
    return folder


def _job(folder: Path) -> tuple[dict[str, Any], QueryJob]:
    recorded = recorded_session(folder)
    return recorded.run_config, QueryJob(tuple(recorded.requests), recorded.budget)


def test_the_recorded_session_and_its_folder_reach_the_serverapp_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _stopped_network_session(tmp_path)
    assert resume_command(folder) == f"silobridge query --network --resume {folder}"
    sent: list[dict[str, Any]] = []

    def flwr_run(command: list[str], env: object, sink: object) -> int:
        config = json.loads(command[0])
        sent.append(config)
        (tmp_path / "runs" / "q").mkdir()  # what the ServerApp leaves once the session completes
        (tmp_path / "runs" / "q" / QUERIES_FILE).write_text(json.dumps({"queries": [], "noise_multiplier": 0.5}))
        return 0

    monkeypatch.setattr(deploy, "run_command", lambda app_dir, config: [json.dumps(config)])
    monkeypatch.setattr(runs, "flower_run", flwr_run)
    run_config, job = _job(folder)
    answered = runs.run_queries(run_config, job, resume=folder)
    assert answered.path == tmp_path / "runs" / "q"
    config = sent[0]
    assert config[RESUME_KEY] == str(folder) and config["run-id"] == "q" and config["data"] == NODES
    recorded = json.loads((folder / CONFIG_FILE).read_text())
    assert json.loads(config[QUERIES_KEY])["queries"] == recorded["queries"]  # the plan it started with
    assert json.loads(config[QUERIES_KEY])["privacy"]["noise_multiplier"] == recorded["privacy"]["noise_multiplier"]
    # parsed again by the ServerApp, the session is the recorded one (its checkpoint's hash still matches)
    settings = query_settings({key: value for key, value in config.items() if key not in (QUERIES_KEY, RESUME_KEY)})
    assert settings.to_run_config() == recorded["run_config"]


def test_the_serverapp_hands_the_folder_to_the_query_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _stopped_network_session(tmp_path)
    run_config, job = _job(folder)
    seen: dict[str, Any] = {}

    def serve(grid: object, settings: object, requests: object, budget: object, **kwargs: Any) -> object:
        seen.update(kwargs, requests=requests)
        return SimpleNamespace(path=folder)

    monkeypatch.setattr(server_app, "serve_queries", serve)
    monkeypatch.setattr(server_app, "apply_object_pull_backoff", lambda: None)  # no grid to pull from here
    monkeypatch.setattr(server_app, "trace_grid", lambda: None)
    config = {**run_config, "data": NODES, QUERIES_KEY: job.to_run_config(), RESUME_KEY: str(folder)}
    app = server_app.build_server_app(run_config=config, observer=SimpleNamespace())  # type: ignore[arg-type]
    app._main(object(), SimpleNamespace(run_id=7, run_config=config))  # type: ignore[attr-defined]
    assert seen["resume"] == folder and seen["flower_run_id"] == 7 and list(seen["requests"]) == list(job.requests)
    fresh = {**config, RESUME_KEY: ""}
    server_app.build_server_app(run_config=fresh, observer=SimpleNamespace())._main(  # type: ignore[arg-type, attr-defined]
        object(), SimpleNamespace(run_id=8, run_config=fresh)
    )
    assert seen["resume"] is None


def test_a_session_resumes_where_it_ran(tmp_path: Path) -> None:
    folder = _stopped_network_session(tmp_path)
    run_config, _ = _job(folder)
    check_resumed_where(folder, run_config, network=True)
    with pytest.raises(ConfigError, match="add --network") as refused:
        check_resumed_where(folder, run_config, network=False)
    assert refused.value.field == "--network"
    with pytest.raises(ConfigError, match="leave out --network"):
        check_resumed_where(folder, {**run_config, "data": ""}, network=True)


def test_a_changed_federation_file_is_refused_before_flower_naming_the_field(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _stopped_network_session(tmp_path)
    (tmp_path / "federation.toml").write_text(TRIO.read_text().replace("horizon = 4", "horizon = 5"))
    monkeypatch.setattr(runs, "flower_run", lambda *_: pytest.fail("flwr run must not start"))
    run_config, job = _job(folder)
    with pytest.raises(ConfigError, match="horizon") as refused:
        runs.run_queries(run_config, job, resume=folder)
    assert refused.value.field is not None and refused.value.field.endswith("horizon")


@pytest.mark.slow  # in-process CLI calls: over 5 s on 2 cores
def test_query_network_resume_refuses_a_changed_option_or_a_completed_session(tmp_path: Path) -> None:
    folder = _stopped_network_session(tmp_path)
    epsilon = silobridge_in_process("query", "--network", "--resume", str(folder), "--epsilon", "5", cwd=tmp_path)
    assert epsilon.returncode == 2 and "--epsilon" in epsilon.stderr, epsilon.stderr[-2000:]
    out = silobridge_in_process(
        "query", "--network", "--resume", str(folder), "--out", str(tmp_path / "x"), cwd=tmp_path
    )
    assert out.returncode == 2 and "out-dir" in out.stderr, out.stderr[-2000:]
    local = silobridge_in_process("query", "--resume", str(folder), cwd=tmp_path)
    assert local.returncode == 2 and "add --network" in local.stderr, local.stderr[-2000:]
    (folder / QUERIES_FILE).write_text("{}")
    done = silobridge_in_process("query", "--network", "--resume", str(folder), cwd=tmp_path)
    assert done.returncode == 2 and "nothing to resume" in done.stderr, done.stderr[-2000:]


def test_ctrl_c_stops_the_session_and_prints_its_resume_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Stand-ins: a `flwr run` that prints its run id and waits; a `flwr stop` that does what a stopped ServerApp
    does (keeps the folder under its final name)."""
    folder = _stopped_network_session(tmp_path)
    flwr_stop = f"import os; os.rename({str(folder)!r}, {str(folder.parent / 'q')!r})"
    monkeypatch.setattr(deploy, "run_command", lambda app_dir, config: flwr_run_stand_in(4343))
    monkeypatch.setattr(deploy, "stop_command", lambda run_id: [sys.executable, "-c", flwr_stop])
    ctrl_c_once_started(monkeypatch)
    run_config, job = _job(folder)
    with pytest.raises(KeyboardInterrupt):
        runs.run_queries(run_config, job, resume=folder)
    kept = folder.parent / "q"
    err = capsys.readouterr().err
    assert f"silobridge query --network --resume {kept}" in err and f"silobridge audit {kept}" in err, err
