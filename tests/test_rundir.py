"""Nothing half-written: a run that fails leaves no run directory behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from silobridge.errors import ConfigError
from silobridge.federation.checkpoint import read_checkpoint
from silobridge.federation.rundir import RunDirectory
from silobridge.federation.simulation import simulate
from silobridge.privacy.ledger import verify_ledger
from tests.conftest import TINY


def test_failure_inside_removes_the_partial_directory(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="disk on fire"):
        with RunDirectory(tmp_path, "r1") as rundir:
            rundir.write_json("config.json", {"a": 1})
            rundir.append_metrics({"round": 1})
            raise RuntimeError("disk on fire")
    assert list(tmp_path.iterdir()) == []


def test_commit_renames_into_place(tmp_path: Path) -> None:
    with RunDirectory(tmp_path, "r2") as rundir:
        rundir.write_text("summary.md", "# done")
        path = rundir.commit()
    assert path == tmp_path / "r2" and (path / "summary.md").read_text() == "# done"
    assert [p.name for p in tmp_path.iterdir()] == ["r2"]


NO_BASELINES = "training.baselines=none"
"""The failing runs' tests read what a crash in round 2 leaves behind: no local-only baselines are needed."""


class _FailsInRoundTwo:
    def stage(self, name: str) -> None:
        return None

    def round_done(self, record: dict[str, Any]) -> None:
        if record["round"] == 2:
            raise RuntimeError("coordinator crashed in round 2")


def test_a_run_without_dp_that_fails_midway_is_kept_with_its_checkpoint(tmp_path: Path) -> None:
    """A completed round's checkpoint makes the run resumable, so the folder is kept (issue 19), not dropped."""
    out = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="coordinator crashed in round 2"):
        simulate(
            {
                "scenario": str(TINY),
                "out-dir": str(out),
                "num-rounds": 3,
                "dp": "off",
                "run-id": "crashed-open",
                "set": NO_BASELINES,
            },
            observer=_FailsInRoundTwo(),
        )
    run = out / "crashed-open"
    assert (run / "failure.json").exists() and not (run / "summary.json").exists()
    assert "coordinator crashed in round 2" in json.loads((run / "failure.json").read_text())["error"]
    assert read_checkpoint(run / "checkpoint.npz").round == 1
    assert not (run / "privacy_ledger.jsonl").exists()


MLP = "training.model=mlp"  # DP-SGD rounds: under record-level DP 'auto' trains the linear family


def test_a_private_run_that_fails_midway_keeps_its_ledger_for_audit(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="coordinator crashed in round 2"):
        simulate(
            {
                "scenario": str(TINY),
                "out-dir": str(out),
                "num-rounds": 3,
                "run-id": "crashed",
                "set": f"{MLP};{NO_BASELINES}",
            },
            observer=_FailsInRoundTwo(),
        )
    run = out / "crashed"
    assert (run / "failure.json").exists() and not (run / "summary.json").exists()
    report = verify_ledger(run / "privacy_ledger.jsonl")
    assert report.ended and report.end_reason.startswith("aborted: RuntimeError")
    released = [r.release_id for r in report.releases]
    assert released == ["round-1/demand", "round-1/risk", "round-2/demand", "round-2/risk"]
    assert report.within_budget


def test_an_interrupted_runs_partial_folder_is_never_reused_or_deleted(tmp_path: Path) -> None:
    """The issue: re-running with the same --run-id silently deleted `.RUNID.partial` and its ledger."""
    partial = tmp_path / ".r3.partial"
    partial.mkdir()
    (partial / "privacy_ledger.jsonl").write_text("the only record of what was spent\n")
    with pytest.raises(ConfigError, match=r"\.r3\.partial.*silobridge audit"):
        RunDirectory(tmp_path, "r3")
    with pytest.raises(ConfigError, match=r"\.r3\.partial"):  # the simulation refuses before Ray starts
        simulate({"scenario": str(TINY), "out-dir": str(tmp_path), "run-id": "r3"}, cpus=1)
    assert (partial / "privacy_ledger.jsonl").read_text() == "the only record of what was spent\n"


def test_abandon_keeps_a_private_run_with_its_reason(tmp_path: Path) -> None:
    with RunDirectory(tmp_path, "kept") as rundir:
        rundir.keep_on_failure = True
        rundir.write_text("privacy_ledger.jsonl", "{}\n")
        kept = rundir.abandon("interrupted: SIGINT (Ctrl-C)")
    assert kept == tmp_path / "kept"
    assert json.loads((kept / "failure.json").read_text())["error"] == "interrupted: SIGINT (Ctrl-C)"
    with RunDirectory(tmp_path, "dropped") as rundir:
        assert rundir.abandon("interrupted: SIGINT (Ctrl-C)") is None  # nothing private spent: nothing kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept"]
