"""Query sessions resume exactly, without a simulation: the engine over the tiny scenario's firms (plain sums),
checkpointed after every step (`federation.query_resume`), stopped at each crash point of a step in the middle of
a multi-step query, and resumed: completed steps are replayed (no firm asked, nothing charged again), a step whose
noised vector reached its pending checkpoint is finished from it (its entry written if the ledger lacks it), a step
whose sum was in flight is redone, and the answers and spend equal an uninterrupted session's exactly. End to end
over Flower: test_query_resume_run.py (slow)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from silobridge.clients.data import FirmData
from silobridge.contract.query_protocol import QueryStep
from silobridge.errors import ConfigError
from silobridge.federation import query_resume
from silobridge.federation.checkpoint import CHECKPOINT_FILE, PENDING_FILE
from silobridge.federation.query_resume import QueryProgress
from silobridge.federation.query_run import plain_sum_step
from silobridge.federation.resume import Checkpoints
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.privacy.dp import Budget
from silobridge.privacy.ledger import PrivacyRun, config_hash, verify_ledger
from silobridge.privacy.ledger.verdict import judge
from silobridge.scenarios.generator import ChainData
from silobridge.scenarios.schema import Scenario
from silobridge.server.query_plans import build_plan
from silobridge.server.query_plans.engine import QueryEngine, QueryPrivacy, StepSum, query_accounting
from tests.analytics_support import tiny_firms
from tests.privacy.ledger_support import KEY
from tests.run_folder_fake import FakeRunFolder

CONFIG = {"queries": ["mean", "kmeans", "count"]}
NOISE = 3.0
QUERIES = (
    ("mean", {"column": "units", "low": 0, "high": 5000}),
    ("kmeans", {"k": 2, "max_iterations": 3}),
    ("count", {"table": "risk"}),
)
MIDDLE = "query-2/kmeans/step-1"  # a step whose plan depends on the released values before it


class _Crash(Exception):
    """Stands in for the SIGKILL a crash point sends."""


@pytest.fixture(scope="module")
def firms(tiny_scenario: Scenario, tiny_chain: ChainData) -> list[FirmData]:
    return tiny_firms(tiny_scenario, tiny_chain)


def _counting_sum(
    firms: list[FirmData], asked: list[str], fail_at: str | None = None
) -> Callable[[QueryStep], StepSum]:
    inner = plain_sum_step(firms)

    def sum_step(step: QueryStep) -> StepSum:
        name = f"{step.query}/step-{step.step}"
        if name == fail_at:
            raise _Crash(name)  # the coordinator dies while the firms' sum is in flight
        asked.append(name)
        return inner(step)

    return sum_step


def _session(
    folder: Path,
    firms: list[FirmData],
    *,
    resuming: bool,
    asked: list[str],
    fail_at: str | None = None,
) -> tuple[list[dict[str, Any]], PrivacyRun]:
    """The three queries as serve_queries runs them: ledger started (or reopened and reconciled), then the engine."""
    checkpoints = Checkpoints(FakeRunFolder(folder), config_hash(CONFIG), resuming=resuming)  # type: ignore[arg-type]
    path = folder / "ledger.jsonl"
    if resuming:
        ledger, state = PrivacyRun.reopen(path, KEY)
        checkpoints.reconcile(ledger, state)
    else:
        ledger = PrivacyRun.start(
            path,
            run_id="r",
            config_sha256=config_hash(CONFIG),
            budget=Budget(40.0, 1e-5),
            signing_key=KEY,
            spec=query_accounting("rdp", "record"),
        )
    rng = np.random.default_rng([5, 29])
    progress = QueryProgress(checkpoints, rng, ledger, [])
    privacy = QueryPrivacy(ledger, NOISE, rng=rng)
    engine = QueryEngine(
        _counting_sum(firms, asked, fail_at), [f.firm_id for f in firms], privacy=privacy, log=progress
    )
    plans = [build_plan(name, params, GENERATED_SCHEMA, noise_multiplier=NOISE) for name, params in QUERIES]
    outcomes = [engine.run(plan).to_dict() for plan in plans]
    ledger.close()
    return outcomes, ledger


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory, firms: list[FirmData]) -> tuple[list[dict[str, Any]], float]:
    folder = tmp_path_factory.mktemp("straight")
    asked: list[str] = []
    outcomes, ledger = _session(folder, firms, resuming=False, asked=asked)
    assert len(asked) == 1 + 4 + 1  # mean, kmeans' planned steps, count
    return outcomes, ledger.overall_epsilon


@pytest.mark.parametrize("point", ["pending", "entry"])
def test_a_session_stopped_around_a_steps_ledger_entry_resumes_exactly(
    tmp_path: Path,
    firms: list[FirmData],
    straight: tuple[list[dict[str, Any]], float],
    point: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def crash(name: str) -> None:
        if name == f"{point}:{MIDDLE}":
            raise _Crash(name)

    monkeypatch.setattr(query_resume, "crash_point", crash)
    asked: list[str] = []
    with pytest.raises(_Crash):
        _session(tmp_path, firms, resuming=False, asked=asked)
    assert asked[-1] == "kmeans/step-1" and (tmp_path / PENDING_FILE).exists()
    monkeypatch.setattr(query_resume, "crash_point", lambda name: None)

    again: list[str] = []
    outcomes, ledger = _session(tmp_path, firms, resuming=True, asked=again)
    expected, spent = straight
    assert outcomes == expected  # answers, step reports and epsilons, exactly
    assert ledger.overall_epsilon == spent
    # completed steps are replayed: no firm asked again; the stopped step's noised vector was on disk (its pending
    # checkpoint), so it is finished from there, its entry written if the ledger lacked it, and not redone either
    assert again == ["kmeans/step-2", "kmeans/step-3", "count/step-0"]
    report = verify_ledger(tmp_path / "ledger.jsonl", public_key=KEY.public_key())
    ids = [r.release_id for r in report.releases]
    assert len(ids) == len(set(ids)) == 6  # every step charged once
    assert report.ended and len(report.resumes) == 1
    # the audit says what the session resumed after in releases (a query session has no rounds)
    # (the checkpoint it continued from had charged the two steps before kmeans/step-1), not "after round 0"
    assert report.resumes[0]["checkpoint_releases"] == 2
    assert "resumed after 2 release(s)" in judge(report).text
    assert not (tmp_path / PENDING_FILE).exists() and (tmp_path / CHECKPOINT_FILE).exists()


def test_a_step_in_flight_is_redone_and_charged_once(
    tmp_path: Path, firms: list[FirmData], straight: tuple[list[dict[str, Any]], float]
) -> None:
    asked: list[str] = []
    with pytest.raises(_Crash):
        _session(tmp_path, firms, resuming=False, asked=asked, fail_at="kmeans/step-2")
    assert not (tmp_path / PENDING_FILE).exists()
    again: list[str] = []
    outcomes, ledger = _session(tmp_path, firms, resuming=True, asked=again)
    assert outcomes == straight[0] and ledger.overall_epsilon == straight[1]
    assert again == ["kmeans/step-2", "kmeans/step-3", "count/step-0"]
    report = verify_ledger(tmp_path / "ledger.jsonl", public_key=KEY.public_key())
    assert len(report.releases) == 6


def test_a_checkpoint_of_another_configuration_is_refused(tmp_path: Path, firms: list[FirmData]) -> None:
    asked: list[str] = []
    with pytest.raises(_Crash):
        _session(tmp_path, firms, resuming=False, asked=asked, fail_at="count/step-0")
    with pytest.raises(ConfigError) as caught:
        Checkpoints(FakeRunFolder(tmp_path), config_hash({"other": 1}), resuming=True)  # type: ignore[arg-type]
    assert "another configuration" in str(caught.value)


def test_the_interrupt_prints_the_resume_command_of_a_query_session_or_a_simulation(tmp_path: Path) -> None:
    from silobridge.federation.resume import resume_command

    session, simulation = tmp_path / "session", tmp_path / "simulation"
    for folder, config in ((session, {"queries": [], "privacy": None}), (simulation, {"run_config": {}})):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        assert resume_command(folder) is None  # nothing completed: nothing to resume
        (folder / CHECKPOINT_FILE).write_bytes(b"")
    assert resume_command(session) == f"silobridge query --resume {session}"
    assert resume_command(simulation) == f"silobridge simulate --resume {simulation}"


def test_a_recorded_session_plans_to_itself_and_a_change_is_named(tmp_path: Path) -> None:
    """What `query --resume` reads back from config.json gives the same session config (the scenario's rounds
    and seed are not added to the overrides), and a changed query parameter or budget is named."""
    from silobridge.federation.query_run import (
        QueryBudget,
        QueryRequest,
        check_same_session,
        query_settings,
        recorded_session,
        session_config,
    )
    from silobridge.federation.run_requests import query_config
    from tests.conftest import TINY

    requests = [QueryRequest(name, params) for name, params in QUERIES]
    budget = QueryBudget(30.0, 1e-5)
    settings = query_settings(query_config(TINY, tmp_path, run_id="s", noise_seed=5))
    folder = tmp_path / ".s.partial"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(session_config(settings, requests, budget, NOISE)))
    recorded = recorded_session(folder)
    again = query_settings(recorded.run_config)
    assert recorded.budget == QueryBudget(30.0, 1e-5, noise_multiplier=NOISE)
    assert session_config(again, recorded.requests, recorded.budget, NOISE) == json.loads(
        (folder / "config.json").read_text()
    )
    changed = [QueryRequest("mean", {**QUERIES[0][1], "high": 4000}), *requests[1:]]
    with pytest.raises(ConfigError) as caught:
        check_same_session(folder, session_config(again, changed, recorded.budget, NOISE))
    assert caught.value.field == "queries.0.params.high"
    with pytest.raises(ConfigError) as caught:
        check_same_session(folder, session_config(again, requests, QueryBudget(10.0, 1e-5), NOISE))
    assert caught.value.field == "privacy.epsilon"
    (folder / "queries.json").write_text("{}")
    with pytest.raises(ConfigError, match="completed query session"):
        recorded_session(folder)
