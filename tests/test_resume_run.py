"""Checkpoint and resume end to end: a private simulation killed (SIGKILL to its process group) at chosen
points, resumed each time, ends with the models and the spend of an uninterrupted run with the same seeds,
bit for bit (the firms' DP-SGD noise and their secure-sum rounding are seeded by their own noise seed).

One trio run of 2 rounds with fixed noise seeds and no baselines (not checked here), killed twice: after
round 1's first ledger entry (its ledger then cut mid-line, as a crash during the write leaves it) and,
resumed, in round 2's secure sum before the unmasking. Kill points come from `federation.crash_points`.
The uninterrupted reference run is one module fixture. Slow: four simulations (plus one refused at once,
in this process). The two that are killed are processes of their own (the kill ends a process group); the
reference and the last resume, which no one kills, run in this process (`silobridge_in_process`, on the
worker's Ray): two Python, torch and Ray start-ups fewer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from silobridge.federation.crash_points import CRASH_AT
from silobridge.privacy.ledger import verify_ledger
from tests.conftest import ROOT
from tests.test_cli import silobridge_in_process

pytestmark = pytest.mark.slow

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"
LEDGER = "privacy_ledger.jsonl"


def _simulate(*args: str, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "200"}
    env.pop(CRASH_AT, None)
    if crash_at is not None:
        env[CRASH_AT] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "silobridge.federation.cli", "simulate", *args, "--plain"],
        capture_output=True,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: the crash point kills it and its Ray workers
        timeout=540,
        check=False,
    )


def _models(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {path.name: torch.load(path) for path in sorted((run / "models").glob("*.pt"))}


COMMON = (str(TRIO), "--rounds", "2", "--noise-seed", "5", "--baselines", "none")


@pytest.fixture(scope="module")
def straight(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run every resumed one in this file must equal."""
    out = tmp_path_factory.mktemp("straight")
    run = silobridge_in_process("simulate", *COMMON, "--out", str(out), "--run-id", "straight", "--plain", cwd=out)
    assert run.returncode == 0, run.stderr[-3000:]
    return out / "straight"


@pytest.mark.timeout(1200)  # four simulations: several minutes on the shared 2-core machine under load
def test_a_killed_private_run_resumes_to_the_uninterrupted_models_and_spend(tmp_path: Path, straight: Path) -> None:
    out = tmp_path / "runs"
    common = (*COMMON, "--out", str(out))
    killed = _simulate(*common, "--run-id", "cut", crash_at="entry:1")
    assert killed.returncode == -9, killed.stderr[-3000:]
    partial = out / ".cut.partial"
    ledger = partial / LEDGER
    data = ledger.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    ledger.write_bytes(data[: last + (len(data) - last) // 2])  # round 1's entry torn mid-line
    cut = verify_ledger(ledger)
    assert cut.torn_tail and not cut.ended and not cut.releases

    again = _simulate("--resume", str(partial), crash_at="unmask:round 2")
    assert again.returncode == -9, again.stderr[-3000:]
    # refused before anything starts: in this process (no Ray, no crash point), not a process of its own
    changed = silobridge_in_process("simulate", "--resume", str(partial), "--rounds", "3", "--plain", cwd=tmp_path)
    assert changed.returncode == 2 and "num-rounds" in changed.stderr, changed.stderr[-3000:]
    resumed = silobridge_in_process("simulate", "--resume", str(partial), "--plain", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    run, reference = out / "cut", straight
    expected, got = _models(reference), _models(run)
    assert sorted(got) == sorted(expected)
    for name, state in expected.items():
        assert sorted(got[name]) == sorted(state)
        for key, tensor in state.items():
            assert torch.equal(got[name][key], tensor), f"{name} {key} differs"  # bit for bit
    audit, uninterrupted = verify_ledger(run / LEDGER), verify_ledger(reference / LEDGER)
    assert audit.ended and audit.end_reason == "completed"
    assert audit.epsilon_overall == uninterrupted.epsilon_overall
    assert {f: a.epsilon for f, a in audit.firms.items()} == {f: a.epsilon for f, a in uninterrupted.firms.items()}
    assert sorted(r.release_id for r in audit.releases) == sorted(r.release_id for r in uninterrupted.releases)
    assert [r["checkpoint_round"] for r in audit.resumes] == [0, 1]  # round 1 was finished from its pending state
    assert audit.resumes[0]["torn_tail"] is not None and (run / f"{LEDGER}.torn-{cut.entries}").exists()
