"""The firm's lifetime odometer: runs compose, the budget holds across them, and tampering stops the node."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from silobridge.errors import BudgetExhausted, ConfigError, LedgerTampered
from silobridge.privacy.dp import AccountingSpec, Budget, PrivacyUnit, dpsgd_event, epsilon
from silobridge.privacy.odometer import HEAD_FILE, KEY_FILE, LOG_FILE, Odometer

ROUND = dpsgd_event(1.2, 0.1, 10)  # one round of DP-SGD on one data set
LIFETIME = Budget(10.0, 1e-5)
RECORD = AccountingSpec(unit=PrivacyUnit.RECORD)


def _charged(folder: Path, rounds: int, run_id: str = "run-1") -> Odometer:
    odometer = Odometer.open(folder, firm="R1", lifetime=LIFETIME)
    for number in range(1, rounds + 1):
        odometer.charge(["demand", "risk"], ROUND, run_id=run_id, release_id=f"round-{number}")
    return odometer


def test_spend_composes_across_runs_and_equals_the_accountant(tmp_path: Path) -> None:
    _charged(tmp_path, 2, "run-1")
    odometer = Odometer.open(tmp_path, firm="R1")  # a later run: the budget is already set
    odometer.charge(["demand"], ROUND, run_id="run-2", release_id="round-1")
    reopened = Odometer.open(tmp_path, firm="R1")
    assert reopened.spent("demand") == pytest.approx(epsilon([ROUND] * 3, 1e-5, RECORD), rel=1e-12)
    assert reopened.spent("risk") == pytest.approx(epsilon([ROUND] * 2, 1e-5, RECORD), rel=1e-12)
    demand = reopened.datasets()[0]
    assert demand.dataset == "demand" and demand.releases == 3 and demand.runs == ("run-1", "run-2")
    assert stat.S_IMODE((tmp_path / KEY_FILE).stat().st_mode) == 0o600


def test_a_release_past_the_lifetime_budget_is_refused_and_charges_nothing(tmp_path: Path) -> None:
    per_round = epsilon([ROUND], 1e-5, RECORD)
    rounds_that_fit = max(n for n in range(1, 40) if epsilon([ROUND] * n, 1e-5, RECORD) <= LIFETIME.epsilon)
    assert per_round < LIFETIME.epsilon and rounds_that_fit >= 1
    odometer = _charged(tmp_path, rounds_that_fit)
    before = odometer.spent("demand")
    with pytest.raises(BudgetExhausted, match="lifetime budget 10 at delta 1e-05"):
        Odometer.open(tmp_path, firm="R1").charge(["demand", "risk"], ROUND, run_id="run-3", release_id="round-1")
    assert Odometer.open(tmp_path, firm="R1").spent("demand") == before


def _lines(tmp_path: Path) -> list[bytes]:
    return (tmp_path / LOG_FILE).read_bytes().splitlines(keepends=True)


@pytest.mark.parametrize("tamper", ["edit", "delete-middle", "delete-last", "swap", "delete-head", "drop-log"])
def test_tampering_is_detected_and_the_node_refuses(tmp_path: Path, tamper: str) -> None:
    _charged(tmp_path, 2)
    lines = _lines(tmp_path)
    log = tmp_path / LOG_FILE
    if tamper == "edit":  # claim less spent: a smaller event in a spend entry
        log.write_bytes(b"".join(lines).replace(b'"noise_multiplier":1.2', b'"noise_multiplier":9.9', 1))
    elif tamper == "delete-middle":
        log.write_bytes(b"".join(lines[:2] + lines[3:]))
    elif tamper == "delete-last":  # the chain alone cannot see this: the signed head does
        log.write_bytes(b"".join(lines[:-1]))
    elif tamper == "swap":
        log.write_bytes(b"".join(lines[:2] + [lines[3], lines[2]] + lines[4:]))
    elif tamper == "delete-head":
        (tmp_path / HEAD_FILE).unlink()
    else:
        log.unlink()
    with pytest.raises(LedgerTampered):
        Odometer.open(tmp_path, firm="R1")


def test_another_firms_odometer_is_refused(tmp_path: Path) -> None:
    _charged(tmp_path, 1)
    with pytest.raises(ConfigError, match="belongs to firm 'R1', not 'D1'"):
        Odometer.open(tmp_path, firm="D1")


def test_a_new_odometer_needs_a_lifetime_budget(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--lifetime-epsilon"):
        Odometer.open(tmp_path, firm="R1")
