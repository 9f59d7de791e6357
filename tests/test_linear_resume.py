"""Resume exactly, without a simulation: the linear family's releases checkpointed and replayed (never summed or
charged twice, the noise generator continued), and the secure sum's stochastic rounding seeded by a firm's own
noise seed, so that a repeated release quantises to the same integers. End to end: test_resume_run.py (slow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dp_accounting as dpa
import numpy as np
import pytest

from silobridge.clients.secure_sum import rounding_seed
from silobridge.federation import linear_resume
from silobridge.federation.checkpoint import CHECKPOINT_FILE, PENDING_FILE, Checkpoint, read_checkpoint
from silobridge.federation.linear_resume import LinearProgress
from silobridge.federation.resume import Checkpoints
from silobridge.privacy.dp import Budget
from silobridge.privacy.ledger import PrivacyRun, Release, config_hash, verify_ledger
from silobridge.privacy.secagg.layout import Segment, VectorLayout
from tests.privacy.ledger_support import KEY, SPEC
from tests.run_folder_fake import FakeRunFolder

CONFIG = {"model": "linear"}
RELEASES = ("linear/demand", "linear/risk-1", "linear/risk-2")
PARTIES = ["acme/demand", "bolt/demand", "cargo/demand"]


class _Crash(Exception):
    """Stands in for the SIGKILL a crash point sends."""


def _release(release_id: str) -> Release:
    return Release(release_id, "gaussian", dpa.GaussianDpEvent(4.0), firms=PARTIES, noise_multiplier=4.0)


def _sum(index: int) -> np.ndarray:
    """The firms' (un-noised) sum for one release: any fixed vector."""
    return np.linspace(-1.0, 1.0, 7) * (index + 1) / 3


def _run(folder: Path, crash_at: str | None, monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """The three releases as train_linear makes them (noise from one seeded generator); a crash stops them."""

    def crash(name: str) -> None:
        if name == crash_at:
            raise _Crash(name)

    monkeypatch.setattr(linear_resume, "crash_point", crash)
    checkpoints = Checkpoints(FakeRunFolder(folder), config_hash(CONFIG), resuming=False)  # type: ignore[arg-type]
    ledger = PrivacyRun.start(
        folder / "ledger.jsonl",
        run_id="r",
        config_sha256=config_hash(CONFIG),
        budget=Budget(8.0, 1e-5),
        signing_key=KEY,
        spec=SPEC,
    )
    progress = LinearProgress(checkpoints, np.random.default_rng([5, 17]))
    out = []
    try:
        for index, release_id in enumerate(RELEASES):
            released = _sum(index) + progress.rng.normal(0.0, 0.3, 7)
            progress.complete(release_id, released, {"release": release_id}, ledger, _release(release_id), [])
            out.append(released)
    except _Crash:
        pass
    finally:
        ledger.close()
    return out


def _resume(folder: Path) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """Reopen, reconcile, replay what the checkpoint holds and release the rest as an uninterrupted run would."""
    checkpoints = Checkpoints(FakeRunFolder(folder), config_hash(CONFIG), resuming=True)  # type: ignore[arg-type]
    ledger, state = PrivacyRun.reopen(folder / "ledger.jsonl", KEY)
    checkpoints.reconcile(ledger, state)
    progress = LinearProgress(checkpoints, np.random.default_rng([5, 17]))
    out = []
    for index, release_id in enumerate(RELEASES):
        replayed = progress.replay(release_id)
        if replayed is not None:
            out.append(replayed[0])
            continue
        released = _sum(index) + progress.rng.normal(0.0, 0.3, 7)
        progress.complete(release_id, released, {"release": release_id}, ledger, _release(release_id), [])
        out.append(released)
    ledger.close()
    return out, progress.history


@pytest.mark.parametrize("crash_at", ["pending:linear/risk-1", "entry:linear/risk-1", "pending:linear/demand"])
def test_a_linear_release_is_replayed_not_redone_and_the_noise_continues_exactly(
    tmp_path: Path, crash_at: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "straight").mkdir()
    (tmp_path / "cut").mkdir()
    straight = _run(tmp_path / "straight", None, monkeypatch)
    _run(tmp_path / "cut", crash_at, monkeypatch)
    assert (tmp_path / "cut" / PENDING_FILE).exists()  # the crash left the release pending
    resumed, history = _resume(tmp_path / "cut")
    assert len(resumed) == len(straight) == 3
    assert all(np.array_equal(a, b) for a, b in zip(resumed, straight, strict=True))  # bit for bit
    audit, reference = (
        verify_ledger(tmp_path / "cut" / "ledger.jsonl"),
        verify_ledger(tmp_path / "straight" / "ledger.jsonl"),
    )
    assert [r.release_id for r in audit.releases] == list(RELEASES)  # each charged once
    assert audit.epsilon_overall == reference.epsilon_overall
    assert [record["epsilon"] is not None for record in history] == [True, True, True]
    final = read_checkpoint(tmp_path / "cut" / CHECKPOINT_FILE)
    assert list(final.released) == list(RELEASES) and final.position == (0, 3, 0)


def test_a_checkpoint_from_another_linear_design_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run checkpointed by a build whose linear design differs (here: one from before designs were recorded)
    is refused rather than replayed into a model of the new design."""
    from silobridge.clients.linear import DESIGN
    from silobridge.errors import ConfigError
    from silobridge.federation.checkpoint import write_checkpoint

    _run(tmp_path, "pending:linear/risk-1", monkeypatch)
    path = tmp_path / CHECKPOINT_FILE
    old = read_checkpoint(path)
    assert old.linear is not None and old.linear["design"] == DESIGN
    del old.linear["design"]
    write_checkpoint(path, old)
    checkpoints = Checkpoints(FakeRunFolder(tmp_path), config_hash(CONFIG), resuming=True)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=f"another design of the linear family .*none.*this build {DESIGN}"):
        LinearProgress(checkpoints, np.random.default_rng([5, 17]))


def test_a_checkpoint_keeps_the_linear_releases_bit_for_bit(tmp_path: Path) -> None:
    from silobridge.federation.checkpoint import write_checkpoint

    rng = np.random.default_rng(3)
    rng.normal(size=4)
    released = {"linear/demand": np.array([1 / 3, -2 / 7, 1e-300])}
    state = Checkpoint(0, "ab" * 32, {}, linear={"history": [{"round": 1}], "rng": rng.bit_generator.state})
    state.released = released
    write_checkpoint(tmp_path / CHECKPOINT_FILE, state)
    back = read_checkpoint(tmp_path / CHECKPOINT_FILE)
    assert np.array_equal(back.released["linear/demand"], released["linear/demand"]) and back.position == (0, 1, 0)
    again = np.random.default_rng(0)
    again.bit_generator.state = back.linear["rng"] if back.linear is not None else {}
    assert np.array_equal(again.normal(size=5), rng.normal(size=5))


def test_the_rounding_seed_is_the_firms_own_and_makes_a_release_quantise_identically() -> None:
    assert rounding_seed(None, "R1", "round-1") is None  # without its own seed a firm draws fresh entropy
    seed = rounding_seed(5, "R1", "round-1")
    assert seed == rounding_seed(5, "R1", "round-1")
    assert (
        len(
            {
                seed,
                rounding_seed(5, "R1", "round-2"),
                rounding_seed(5, "D1", "round-1"),
                rounding_seed(6, "R1", "round-1"),
            }
        )
        == 4
    )
    layout = VectorLayout((Segment("update", 50, 1e5),))
    values = {"update": np.random.default_rng(1).normal(0.0, 1e-3, 50)}
    first, _ = layout.encode(values, np.random.default_rng(seed), firm="R1")
    again, _ = layout.encode(values, np.random.default_rng(seed), firm="R1")
    fresh, _ = layout.encode(values, np.random.default_rng(rounding_seed(5, "R1", "round-2")), firm="R1")
    assert np.array_equal(first, again) and not np.array_equal(first, fresh)
