"""Checkpoint and resume without a simulation: the checkpoint file, the ledger reopened after a crash (torn
last line included), the reconciliation of a pending round with the ledger, and the refusal of changed
settings. The end-to-end kill-and-resume run is in test_resume_run.py (slow)."""

from __future__ import annotations

import json
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from silobridge.errors import ConfigError, LedgerTampered
from silobridge.federation.checkpoint import (
    CHECKPOINT_FILE,
    PENDING_FILE,
    Checkpoint,
    read_checkpoint,
    release_from_dict,
    release_to_dict,
    write_checkpoint,
)
from silobridge.federation.resume import Checkpoints, changed_scenario_field, resume_run_config
from silobridge.federation.rundir import CONFIG_FILE
from silobridge.privacy.dp import Budget, Sampling
from silobridge.privacy.ledger import PrivacyRun, Release, config_hash, verify_ledger
from silobridge.privacy.ledger.verdict import Verdict, judge
from tests.privacy.ledger_support import FIRMS, KEY, ROUND_EVENT, SPEC
from tests.run_folder_fake import FakeRunFolder

CONFIG = {"rounds": 3}


def _release(round_number: int, firms: list[str] = FIRMS[:3]) -> Release:
    return Release(
        f"round-{round_number}",
        "gaussian",
        ROUND_EVENT,
        firms=firms,
        sampling=Sampling.poisson(0.5),
        noise_multiplier=3.0,
        clip_norm=1.0,
        excluded_firms=["strict"],
        parameters={"noise_shares": 3},
    )


def _ledger(path: Path) -> PrivacyRun:
    return PrivacyRun.start(
        path, run_id="r", config_sha256=config_hash(CONFIG), budget=Budget(8.0, 1e-5), signing_key=KEY, spec=SPEC
    )


def _weights(value: float) -> dict[str, OrderedDict[str, np.ndarray]]:
    return {
        "demand": OrderedDict([("w", np.full((2, 3), value, dtype=np.float32)), ("b", np.arange(3.0) * value)]),
        "risk": OrderedDict([("w", np.full(4, -value))]),
    }


def test_a_checkpoint_round_trips_bit_for_bit_and_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    weights = _weights(1 / 3)
    state = Checkpoint(2, "ab" * 32, weights, history=[{"round": 2, "epsilon": 1.5}], clip_norm=0.7)
    state.ledger_entries, state.ledger_hash = 5, "cd" * 32
    write_checkpoint(path, state)
    write_checkpoint(path, state)  # over the earlier one
    back = read_checkpoint(path)
    assert [p.name for p in tmp_path.iterdir()] == [CHECKPOINT_FILE]  # no temporary file left
    assert (back.round, back.history, back.clip_norm, back.ledger_entries) == (
        2,
        [{"round": 2, "epsilon": 1.5}],
        0.7,
        5,
    )
    for kind, state_dict in weights.items():
        assert list(back.weights[kind]) == list(state_dict)
        for name, value in state_dict.items():
            assert back.weights[kind][name].dtype == value.dtype
            assert back.weights[kind][name].tobytes() == value.tobytes()


def test_a_damaged_checkpoint_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_FILE
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=CHECKPOINT_FILE):
        read_checkpoint(path)


def test_a_release_survives_the_pending_checkpoint() -> None:
    release = _release(1)
    back = release_from_dict(json.loads(json.dumps(release_to_dict(release))))
    assert back == release


def test_a_reopened_ledger_moves_a_torn_line_aside_and_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    run = _ledger(path)
    run.record(_release(1))
    torn = b'{"clip_norm":1.0,"epsilon":{"ov'
    with path.open("ab") as handle:  # a crash in the middle of round 2's entry
        handle.write(torn)
    assert judge(verify_ledger(path)).verdict is Verdict.INCOMPLETE  # a crash prefix, not tampering
    reopened, state = PrivacyRun.reopen(path, KEY)
    assert state.torn is not None and (tmp_path / state.torn.kept_as).read_bytes() == torn
    assert reopened.overall_epsilon == run.overall_epsilon  # the accounts are replayed
    reopened.resumed(checkpoint_round=1, entries=2, last_hash=state.hashes[1], torn=state.torn, after_end=None)
    reopened.record(_release(2))
    reopened.close()
    report = verify_ledger(path)
    assert report.ended and [r.release_id for r in report.releases] == ["round-1", "round-2"]
    assert report.resumes[0]["torn_tail"]["length"] == len(torn)
    straight = _ledger(tmp_path / "straight.jsonl")
    straight.record(_release(1))
    straight.record(_release(2))
    assert report.epsilon_overall == straight.overall_epsilon


def test_a_resume_may_follow_an_interrupt_end_entry_but_must_name_it(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    run = _ledger(path)
    run.record(_release(1))
    run.close("interrupted: SIGINT (Ctrl-C)")
    reopened, state = PrivacyRun.reopen(path, KEY)
    reopened.resumed(checkpoint_round=1, entries=2, last_hash=state.hashes[1], torn=None, after_end=None)
    with pytest.raises(LedgerTampered, match="misstates the end entry"):
        verify_ledger(path)


def test_a_round_charged_twice_fails_the_audit(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    run = _ledger(path)
    run.record(_release(1))
    run.close("interrupted: SIGINT (Ctrl-C)")
    reopened, state = PrivacyRun.reopen(path, KEY)
    reopened.resumed(
        checkpoint_round=0, entries=1, last_hash=state.hashes[0], torn=None, after_end=state.entries[-1]["reason"]
    )
    reopened.record(_release(1))  # the round redone and charged again
    reopened.close()
    with pytest.raises(LedgerTampered, match="again"):
        verify_ledger(path)


def test_a_resume_entry_must_point_at_an_entry_of_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    run = _ledger(path)
    run.record(_release(1))
    reopened, _ = PrivacyRun.reopen(path, KEY)
    reopened.resumed(checkpoint_round=1, entries=2, last_hash="0" * 64, torn=None, after_end=None)
    with pytest.raises(LedgerTampered, match="checkpoint"):
        verify_ledger(path)


def _pending_run(tmp_path: Path, recorded: int) -> tuple[Checkpoints, FakeRunFolder, Path]:
    """A crash inside round 1: its models pending with two releases, `recorded` of them in the ledger."""
    folder = FakeRunFolder(tmp_path)
    checkpoints = Checkpoints(folder, config_hash(CONFIG), resuming=False)  # type: ignore[arg-type]
    path = tmp_path / "ledger.jsonl"
    run = _ledger(path)
    entries, last_hash = run.pointer
    checkpoints.commit(Checkpoint(0, config_hash(CONFIG), _weights(0.0), ledger_entries=entries, ledger_hash=last_hash))
    releases = [_release(1, ["acme", "bolt"]), Release("round-1/risk", "gaussian", ROUND_EVENT, firms=["cargo"])]
    records = [{"round": 1, "model": "demand", "epsilon": None}]
    checkpoints.pending(Checkpoint(1, config_hash(CONFIG), _weights(1.0), history=records), releases)
    for release in releases[:recorded]:
        run.record(release)
    return Checkpoints(folder, config_hash(CONFIG), resuming=True), folder, path  # type: ignore[arg-type]


@pytest.mark.parametrize("recorded", [0, 1, 2])
def test_a_pending_round_is_finished_and_charged_once(tmp_path: Path, recorded: int) -> None:
    checkpoints, folder, path = _pending_run(tmp_path, recorded)
    assert checkpoints.start is not None and checkpoints.start.round == 0
    ledger, state = PrivacyRun.reopen(path, KEY)
    checkpoints.reconcile(ledger, state)
    ledger.close()
    start = checkpoints.start
    assert start is not None and start.round == 1 and start.weights["risk"]["w"][0] == -1.0
    assert not (tmp_path / PENDING_FILE).exists() and folder.keep_on_failure
    report = verify_ledger(path)
    assert sorted(r.release_id for r in report.releases) == ["round-1", "round-1/risk"]
    assert start.history[0]["epsilon"] == report.epsilon_overall
    assert (start.ledger_entries, report.resumes[0]["checkpoint_round"]) == (report.entries - 1, 0)


def test_a_release_beyond_the_checkpoint_that_it_cannot_account_for_refuses_the_resume(tmp_path: Path) -> None:
    checkpoints, _, path = _pending_run(tmp_path, 2)
    ledger, _ = PrivacyRun.reopen(path, KEY)
    ledger.record(Release("efficiency", "gaussian", ROUND_EVENT, firms=["acme"]))
    ledger.close()
    ledger, state = PrivacyRun.reopen(path, KEY)
    with pytest.raises(ConfigError, match="'efficiency'.*charge it twice"):
        checkpoints.reconcile(ledger, state)


def test_a_resumed_run_refuses_a_changed_setting_by_name(tmp_path: Path) -> None:
    run_config = {"scenario": "/s.toml", "num-rounds": 3, "set": "training.rounds=3;seed=7", "noise-seed": 5}
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"run_config": run_config, "scenario": {}}))
    assert resume_run_config(tmp_path, {"num-rounds": 3, "set": "seed=7"}) == run_config
    with pytest.raises(ConfigError, match="num-rounds") as err:
        resume_run_config(tmp_path, {"num-rounds": 4})
    assert err.value.field == "num-rounds"
    with pytest.raises(ConfigError, match="noise-seed"):
        resume_run_config(tmp_path, {"noise-seed": 6})
    with pytest.raises(ConfigError, match="not a run directory"):
        resume_run_config(tmp_path / "missing", {})


def test_the_first_changed_scenario_field_is_named() -> None:
    recorded = {"seed": 7, "training": {"rounds": 3, "hidden": 8}, "firms": [{"id": "R1", "size": 6.0}]}
    assert changed_scenario_field(recorded, json.loads(json.dumps(recorded))) is None
    assert changed_scenario_field(recorded, {**recorded, "training": {"rounds": 3, "hidden": 16}}) == "training.hidden"
    assert changed_scenario_field(recorded, {**recorded, "firms": [{"id": "R1", "size": 5.0}]}) == "firms.0.size"
    assert changed_scenario_field(recorded, {**recorded, "firms": []}) == "firms"
