"""The DP efficiency release (a run's last) checkpointed around its ledger entry: a run killed during or after it
resumes without asking the firms again or charging it twice, and reports the sums that were charged."""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import dp_accounting as dpa
import numpy as np
import pytest

from silobridge.contract.efficiency_sums import EFFICIENCY_AFTER, EFFICIENCY_BEFORE
from silobridge.federation import efficiency_resume
from silobridge.federation.checkpoint import CHECKPOINT_FILE, PENDING_FILE, Checkpoint, read_checkpoint
from silobridge.federation.coordinator import Federation
from silobridge.federation.efficiency_resume import commit_efficiency, replayed_efficiency
from silobridge.federation.resume import Checkpoints
from silobridge.privacy.dp import Budget
from silobridge.privacy.ledger import PrivacyRun, Release, config_hash, verify_ledger
from tests.privacy.ledger_support import KEY, SPEC
from tests.run_folder_fake import FakeRunFolder

CONFIG = {"model": "mlp", "efficiency": {"dp": True}}
PARTIES = ["acme/demand", "bolt/demand", "cargo/demand"]
FIRMS = {"before": ["acme", "bolt", "cargo"], "after": ["acme", "bolt", "cargo"]}
DROPPED = [{"stage": "round 1", "firm": "dawn", "reason": "no reply"}]


class _Crash(Exception):
    """Stands in for the SIGKILL a crash point sends."""


def _release(release_id: str) -> Release:
    return Release(release_id, "gaussian", dpa.GaussianDpEvent(4.0), firms=PARTIES, noise_multiplier=4.0)


def _noised(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The noised (before, after) sums as the coordinator releases them: fresh draws every time."""
    return {EFFICIENCY_BEFORE: rng.normal(10.0, 3.0, 6), EFFICIENCY_AFTER: rng.normal(12.0, 3.0, 6)}


def _run(folder: Path, crash_at: str | None, monkeypatch: pytest.MonkeyPatch) -> dict[str, np.ndarray]:
    """One training round (committed), then the efficiency release; a crash point stops it."""

    def crash(name: str) -> None:
        if name == crash_at:
            raise _Crash(name)

    monkeypatch.setattr(efficiency_resume, "crash_point", crash)
    folder.mkdir()
    checkpoints = Checkpoints(FakeRunFolder(folder), config_hash(CONFIG), resuming=False)  # type: ignore[arg-type]
    ledger = PrivacyRun.start(
        folder / "ledger.jsonl",
        run_id="r",
        config_sha256=config_hash(CONFIG),
        budget=Budget(8.0, 1e-5),
        signing_key=KEY,
        spec=SPEC,
    )
    weights = {"demand": OrderedDict(w=np.arange(3.0))}
    history = [{"round": 1, "model": "demand", "epsilon": None}]
    checkpoints.pending(Checkpoint(1, config_hash(CONFIG), weights, history=history), [_release("round-1")])
    ledger.record(_release("round-1"))
    history[0]["epsilon"] = ledger.overall_epsilon
    entries, last_hash = ledger.pointer
    checkpoints.commit(
        Checkpoint(1, config_hash(CONFIG), weights, history, ledger_entries=entries, ledger_hash=last_hash)
    )
    released = _noised(np.random.default_rng())
    try:
        if crash_at == "unmask:efficiency":
            raise _Crash(crash_at)  # killed while the firms' sum was in flight
        commit_efficiency(checkpoints, ledger, _release("efficiency"), released, FIRMS, DROPPED)
    except _Crash:
        pass
    finally:
        ledger.close()
    return released


def _resume(folder: Path) -> tuple[Checkpoints, PrivacyRun]:
    checkpoints = Checkpoints(FakeRunFolder(folder), config_hash(CONFIG), resuming=True)  # type: ignore[arg-type]
    ledger, state = PrivacyRun.reopen(folder / "ledger.jsonl", KEY)
    checkpoints.reconcile(ledger, state)
    return checkpoints, ledger


@pytest.mark.parametrize("crash_at", ["pending:efficiency", "entry:efficiency", None])
def test_a_completed_efficiency_release_is_replayed_and_charged_once(
    tmp_path: Path, crash_at: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = _run(tmp_path / "cut", crash_at, monkeypatch)
    _run(tmp_path / "straight", None, monkeypatch)
    assert (tmp_path / "cut" / PENDING_FILE).exists() == (crash_at is not None)
    checkpoints, ledger = _resume(tmp_path / "cut")
    replayed = replayed_efficiency(checkpoints)
    assert replayed is not None, "the resumed run must not ask the firms again"
    sums, firms = replayed
    assert all(np.array_equal(sums[name], released[name]) for name in released) and firms == FIRMS  # bit for bit
    ledger.close()
    audit, reference = (
        verify_ledger(tmp_path / "cut" / "ledger.jsonl"),
        verify_ledger(tmp_path / "straight" / "ledger.jsonl"),
    )
    assert [r.release_id for r in audit.releases] == ["round-1", "efficiency"]  # each charged once
    assert audit.epsilon_overall == reference.epsilon_overall
    final = read_checkpoint(tmp_path / "cut" / CHECKPOINT_FILE)
    assert final.position == (1, 0, 1) and final.dropped == DROPPED
    straight = read_checkpoint(tmp_path / "straight" / CHECKPOINT_FILE)
    assert final.history == straight.history  # the round's record keeps its own spend, not the release's


def test_an_efficiency_release_killed_in_its_sum_is_redone_and_charged_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _run(tmp_path / "cut", "unmask:efficiency", monkeypatch)  # the firms' sum in flight: nothing written of it
    assert not (tmp_path / "cut" / PENDING_FILE).exists()
    checkpoints, ledger = _resume(tmp_path / "cut")
    assert replayed_efficiency(checkpoints) is None  # nothing to replay: the release is made again
    commit_efficiency(checkpoints, ledger, _release("efficiency"), _noised(np.random.default_rng(1)), FIRMS, [])
    ledger.close()
    audit = verify_ledger(tmp_path / "cut" / "ledger.jsonl")
    assert [r.release_id for r in audit.releases] == ["round-1", "efficiency"]


def test_the_coordinator_replays_a_checkpointed_release_without_a_sum(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    released = _run(tmp_path / "cut", "entry:efficiency", monkeypatch)
    checkpoints, ledger = _resume(tmp_path / "cut")

    def no_sum(*_: object) -> None:
        raise AssertionError("a replayed release asks no firm")

    coordinator = SimpleNamespace(ledger=ledger, plan=object(), efficiency_firms={}, _sum=no_sum)
    out = Federation.release_efficiency(coordinator, OrderedDict(), checkpoints)  # type: ignore[arg-type]
    ledger.close()
    assert out is not None and np.array_equal(out["before"], released[EFFICIENCY_BEFORE])
    assert np.array_equal(out["after"], released[EFFICIENCY_AFTER]) and coordinator.efficiency_firms == FIRMS
    assert [r.release_id for r in verify_ledger(tmp_path / "cut" / "ledger.jsonl").releases] == [
        "round-1",
        "efficiency",
    ]
