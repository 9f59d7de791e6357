"""Nothing half-written: a run that fails leaves no run directory behind."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from federation.rundir import RunDirectory
from federation.simulation import simulate
from privacy.ledger import verify_ledger
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


class _FailsInRoundTwo:
    def stage(self, name: str) -> None:
        return None

    def round_done(self, record: dict[str, Any]) -> None:
        if record["round"] == 2:
            raise RuntimeError("coordinator crashed in round 2")


def test_a_run_without_dp_that_fails_midway_leaves_nothing_in_runs(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="coordinator crashed in round 2"):
        simulate(
            {"scenario": str(TINY), "out-dir": str(out), "num-rounds": 3, "dp": "off"},
            observer=_FailsInRoundTwo(),
            cpus=2,
        )
    assert not out.exists() or list(out.iterdir()) == []


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
                "set": "training.model=mlp",
            },
            observer=_FailsInRoundTwo(),
            cpus=2,
        )
    run = out / "crashed"
    assert (run / "failure.json").exists() and not (run / "summary.json").exists()
    report = verify_ledger(run / "privacy_ledger.jsonl")
    assert report.ended and report.end_reason.startswith("aborted: RuntimeError")
    released = [r.release_id for r in report.releases]
    assert released == ["round-1/demand", "round-1/risk", "round-2/demand", "round-2/risk"]
    assert report.within_budget
