"""A query session killed mid-step and resumed over Flower ends with an uninterrupted session's answers and spend.

`silobridge query --plan` on the trio scenario (secure sums, seeded noise: the coordinator's and the firms'
rounding), SIGKILLed (its whole process group, `federation.crash_points`) once the middle step of a multi-step
query has its ledger entry and no checkpoint yet; a changed plan, a changed budget and a completed session are
refused; `query --resume` replays the completed steps and finishes. Slow: three simulations (the uninterrupted
reference, the killed one, the resumed one); the refusals come before any simulation starts. The killed session
is a process (the kill ends its process group); the reference, the refusals, the resumed session (no one kills
it) and the audit run in this process (`silobridge_in_process`, on the worker's Ray), without a process's
start-up. The crash points one by one, without Flower: test_query_resume.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from silobridge.federation.crash_points import CRASH_AT
from tests.conftest import ROOT
from tests.test_cli import silobridge_in_process

pytestmark = pytest.mark.slow

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"

PLAN = (
    "[[query]]\n"
    'name = "mean"\n'
    'params = { column = "units", low = 0, high = 5000 }\n\n'
    "[[query]]\n"
    'name = "kmeans"\n'
    "params = { k = 2, max_iterations = 2 }\n\n"
    "[[query]]\n"
    'name = "count"\n'
    'params = { table = "risk" }\n'
)


def _query(*args: str, cwd: Path, crash_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200", "HOME": str(cwd)}
    if crash_at is not None:
        env[CRASH_AT] = crash_at
    return subprocess.run(
        [sys.executable, "-m", "silobridge.federation.cli", "query", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: the crash point kills it and its Ray workers
        timeout=600,
        check=False,
    )


@pytest.mark.timeout(1500)  # three simulations on the shared 2-core machine
def test_a_killed_query_session_resumes_to_the_uninterrupted_answers_and_spend(tmp_path: Path) -> None:
    plan = tmp_path / "plan.toml"
    plan.write_text(PLAN)
    out = tmp_path / "runs"
    common = (str(TRIO), "--plan", str(plan), "--epsilon", "30", "--noise-seed", "5", "--json", "--out", str(out))
    straight = silobridge_in_process("query", *common, "--run-id", "straight", cwd=tmp_path)
    assert straight.returncode == 0, straight.stderr[-3000:]
    expected = json.loads(straight.stdout)

    killed = _query(*common, "--run-id", "cut", cwd=tmp_path, crash_at="entry:query-2/kmeans/step-1")
    assert killed.returncode == -9, killed.stderr[-3000:]
    partial = out / ".cut.partial"
    assert (partial / "checkpoint.pending.npz").exists()

    changed = tmp_path / "changed.toml"
    changed.write_text(PLAN.replace("max_iterations = 2", "max_iterations = 3"))
    refused = silobridge_in_process("query", "--resume", str(partial), "--plan", str(changed), cwd=tmp_path)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert "queries.1.params.max_iterations" in refused.stderr
    refused = silobridge_in_process("query", "--resume", str(partial), "--epsilon", "10", cwd=tmp_path)
    assert refused.returncode == 2 and "--epsilon" in refused.stderr, refused.stderr[-3000:]

    resumed = silobridge_in_process("query", "--resume", str(partial), "--plan", str(plan), "--json", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # mean and kmeans' first two steps (the second finished from its pending checkpoint): no firm asked again
    assert "3 completed step(s) replayed" in resumed.stderr
    answered = json.loads(resumed.stdout)
    run = out / "cut"
    assert answered["run_dir"] == str(run) and not partial.exists()
    assert answered["noise_multiplier"] == expected["noise_multiplier"]
    # answers, every step's report and the epsilons, exactly
    assert answered["queries"] == expected["queries"]

    key = json.loads((run / "queries.json").read_text())["public_key"]
    audit = silobridge_in_process("audit", str(run), "--json", "--public-key", key, cwd=tmp_path)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    report = json.loads(audit.stdout)
    ids = [r["release_id"] for r in report["releases"]]
    assert len(ids) == len(set(ids)) == sum(len(q["steps"]) for q in expected["queries"])  # each charged once
    assert report["epsilon_overall"] == pytest.approx(expected["queries"][-1]["privacy"]["epsilon_total"], rel=1e-9)
    assert len(report["resumes"]) == 1

    again = silobridge_in_process("query", "--resume", str(run), cwd=tmp_path)
    assert again.returncode == 2 and "completed query session" in again.stderr, again.stderr[-3000:]
