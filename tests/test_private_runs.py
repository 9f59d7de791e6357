"""End to end under differential privacy (the default): budgets, refusals, the ledger and its audit.

Each run is a real Flower simulation of the tiny scenario; every figure asserted is recomputed from
the run's signed ledger, by the same verification an auditor runs. A round refused for the run's budget:
test_report.py (conftest's REFUSED_RUN, which its private page reads).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from silobridge.federation.server_app import RunResult
from silobridge.federation.simulation import simulate
from silobridge.privacy.ledger import verify_ledger
from silobridge.scenarios.schema import load_scenario
from tests.conftest import ROOT, TINY
from tests.test_cli import silobridge_in_process

MLP = "training.model=mlp"
"""The MLP family (DP-SGD rounds) where a test is about it: under record-level DP 'auto' trains the linear one."""
NO_BASELINES = "training.baselines=none"
"""Runs whose tests read only the privacy accounting: under DP the harness measures the local-only baselines
outside the federation (no release, no spend), so fitting none changes nothing asserted and saves their fits."""
FIRM_LEVEL = f"privacy.unit=firm;training.rounds=2;{NO_BASELINES}"
"""Firm-level runs: their test asserts the mechanism, the accountant and that the calibrated budget holds,
whatever the number of rounds (calibration spends the budget over the planned rounds)."""


def _simulate(out: Path, run_id: str, overrides: str = "", **config: object) -> RunResult:
    return simulate({"scenario": str(TINY), "out-dir": str(out), "run-id": run_id, "set": overrides, **config})


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("private-runs")


# One fixture per run, made when a test first needs it: a test's set-up (which pytest-timeout counts) holds
# only the runs it reads, not all five.
@pytest.fixture(scope="module")
def record_run(out: Path) -> RunResult:
    return _simulate(out, "record", f"{MLP};firms.R2.budget_epsilon=7.0;firms.S1.budget_epsilon=1.0;{NO_BASELINES}")


@pytest.fixture(scope="module")
def linear_run(out: Path) -> RunResult:
    return _simulate(out, "linear", "firms.S1.budget_epsilon=1.0")


@pytest.fixture(scope="module")
def central_run(out: Path) -> RunResult:
    return _simulate(out, "central", f"{FIRM_LEVEL};privacy.mechanism=central;privacy.accountant=pld")


@pytest.fixture(scope="module")
def distributed_run(out: Path) -> RunResult:
    return _simulate(out, "distributed", f"{FIRM_LEVEL};privacy.mechanism=distributed")


def _audit(*args: str) -> subprocess.CompletedProcess[str]:
    """`silobridge audit` as its own process: the audit command's exit codes as a shell sees them."""
    return subprocess.run(
        [sys.executable, "-m", "silobridge.federation.cli", "audit", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "COLUMNS": "200"},
    )


def test_record_level_run_spends_the_calibrated_budget_and_no_more(record_run: RunResult) -> None:
    run = record_run
    privacy = run.summary["privacy"]
    assert privacy["enabled"] and privacy["unit"] == "record" and privacy["mechanism"] == "dpsgd"
    assert privacy["within_budget"]
    # The noise multiplier was calibrated so that the planned rounds spend the whole budget.
    assert 7.8 <= privacy["epsilon_overall"] <= 8.0
    report = verify_ledger(run.path / "privacy_ledger.jsonl", public_key=privacy["ledger_public_key"])
    assert report.key_trusted and report.ended and report.end_reason == "completed"
    assert report.epsilon_overall == pytest.approx(privacy["epsilon_overall"], rel=1e-6)
    # PLD, reported next to RDP, is tighter for DP-SGD.
    firm = privacy["firms"]["R1"]
    assert firm["epsilon_pld"] < firm["epsilon_rdp"]


def test_a_firm_with_its_own_budget_stops_contributing_when_it_is_spent(record_run: RunResult) -> None:
    run = record_run
    firms = run.summary["privacy"]["firms"]
    assert firms["R2"]["epsilon_rdp"] <= 7.0 < firms["R1"]["epsilon_rdp"]
    assert firms["R2"]["releases"] < firms["R1"]["releases"] == 4
    assert any(d["firm"] == "R2" and "its own privacy budget is spent" in d["reason"] for d in run.summary["dropouts"])
    # S1's budget cannot pay for one round: it never takes part, and the summary says it spent nothing.
    assert firms["S1"] == {"releases": 0, "epsilon_rdp": 0.0, "epsilon_pld": 0.0, "datasets": {}}
    # The others' accounting is unaffected: each is charged only for the rounds it took part in. The
    # ledger accounts each of a firm's data sets on its own (a record is in one of them only).
    report = verify_ledger(run.path / "privacy_ledger.jsonl")
    r2_parties = {p: row for p, row in report.firms.items() if p.startswith("R2/")}
    assert set(r2_parties) == {f"R2/{kind}" for kind in firms["R2"]["datasets"]}
    assert max(row.releases for row in r2_parties.values()) == firms["R2"]["releases"]
    r1_worst = max(row.epsilon for p, row in report.firms.items() if p.startswith("R1/"))
    assert r1_worst == pytest.approx(firms["R1"]["epsilon_rdp"], rel=1e-6)
    # S1 took part in no round: the summary says so, and every release names it among the excluded firms
    # (before: `excluded_firms` was empty under record-level DP).
    assert run.summary["privacy"]["firms_in_no_round"] == ["S1"]
    assert all(any(p.startswith("S1/") for p in release.excluded_firms) for release in report.releases)


def test_firm_level_central_and_distributed_runs(central_run: RunResult, distributed_run: RunResult) -> None:
    central = central_run.summary["privacy"]
    assert central["unit"] == "firm" and central["mechanism"] == "dp_fedavg_central" and central["accountant"] == "pld"
    assert central["within_budget"] and central["epsilon_overall"] <= 8.0
    distributed = distributed_run.summary["privacy"]
    assert distributed["mechanism"] == "dp_fedavg_distributed" and distributed["within_budget"]
    assert all(row["epsilon_pld"] is None for row in distributed["firms"].values())  # Skellam: RDP only
    ledger = (distributed_run.path / "privacy_ledger.jsonl").read_text().splitlines()
    releases = [json.loads(line) for line in ledger if json.loads(line)["kind"] == "release"]
    assert all(r["mechanism"] == "skellam" and r["parameters"]["noise_shares"] == 5 for r in releases)


def test_audit_command_verifies_and_detects_tampering(record_run: RunResult, tmp_path: Path) -> None:
    run = record_run
    key = run.summary["privacy"]["ledger_public_key"]
    result = _audit(str(run.path), "--public-key", key, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verified"] and report["key_trusted"] and report["within_budget"]
    lines = (run.path / "privacy_ledger.jsonl").read_text().splitlines()
    entry = json.loads(lines[2])
    entry["noise_multiplier"] = entry["noise_multiplier"] * 2  # claim more noise than was added
    lines[2] = json.dumps(entry, separators=(",", ":"), sort_keys=True)
    tampered = tmp_path / "tampered.jsonl"
    tampered.write_text("\n".join(lines) + "\n")
    result = _audit(str(tampered))
    assert result.returncode == 3
    assert "entry 2" in " ".join(result.stderr.split())
    result = _audit(str(run.path), "--public-key", "00" * 32)
    assert result.returncode == 3


def test_linear_family_spends_the_budget_in_one_release_per_model_and_audits(linear_run: RunResult) -> None:
    """The default under DP: one noised secure sum for demand, `newton_steps` for risk, each firm's data sets
    charged the calibrated epsilon; a firm whose own budget cannot pay is left out and spends nothing."""
    run = linear_run
    privacy = run.summary["privacy"]
    assert privacy["mechanism"] == "sufficient_statistics_gaussian" and privacy["within_budget"]
    assert 7.8 <= privacy["epsilon_overall"] <= 8.0
    releases = [
        json.loads(line)
        for line in (run.path / "privacy_ledger.jsonl").read_text().splitlines()
        if json.loads(line)["kind"] == "release"
    ]
    assert [r["release_id"] for r in releases] == ["linear/demand", "linear/risk-1", "linear/risk-2", "linear/risk-3"]
    assert all(r["mechanism"] == "gaussian" and "S1/demand" not in r["firms"] for r in releases)
    firms = privacy["firms"]
    assert firms["R1"]["datasets"]["demand"]["releases"] == 1 and firms["R1"]["datasets"]["risk"]["releases"] == 3
    assert firms["S1"]["releases"] == 0
    report = verify_ledger(run.path / "privacy_ledger.jsonl", public_key=privacy["ledger_public_key"])
    assert report.epsilon_overall == pytest.approx(privacy["epsilon_overall"], rel=1e-6)
    result = silobridge_in_process(
        "audit", str(run.path), "--public-key", privacy["ledger_public_key"], "--json", cwd=run.path
    )
    assert result.returncode == 0, result.stderr
    assert (run.path / "models" / "demand_linear.pt").exists() and not (run.path / "models" / "demand.pt").exists()
    models = run.summary["models"]["demand"]
    assert {"deployed", "federated", "local_only", "centralised", "naive", "per_firm"} == set(models)
    rows = models["per_firm"]["firms"]
    assert {r["firm"] for r in rows} == {f.id for f in load_scenario(TINY).firms}
    assert models["per_firm"]["worst_ratio"] == pytest.approx(max(r["ratio"] for r in rows))
