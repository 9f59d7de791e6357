"""Runs that write ledgers, and audits that recompute them: totals, refusals, units, crashes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dp_accounting as dpa
import pytest
from dp_accounting import NeighboringRelation

from silobridge.errors import BudgetExhausted, ConfigError, LedgerTampered
from silobridge.privacy.dp import (
    AccountantKind,
    AccountingSpec,
    Budget,
    DistributedSkellam,
    PrivacyUnit,
    Sampling,
    dpsgd_event,
    epsilon,
)
from silobridge.privacy.ledger import PrivacyRun, Release, config_hash, public_key_hex, verify_ledger
from tests.privacy.ledger_support import FIRMS, KEY, ROUND_EVENT, SPEC, read_entries, write_sample_ledger

REPO = Path(__file__).resolve().parents[2]


def start(path: Path, **kwargs: object) -> PrivacyRun:
    options = dict(run_id="run", config_sha256=config_hash({}), budget=Budget(3.0, 1e-5), signing_key=KEY, spec=SPEC)
    options.update(kwargs)
    return PrivacyRun.start(path, **options)


def test_recomputed_epsilon_equals_the_accountant(tmp_path: Path) -> None:
    path = write_sample_ledger(tmp_path / "ledger.jsonl")
    report = verify_ledger(path, public_key=public_key_hex(KEY))
    assert report.epsilon_overall == pytest.approx(epsilon([ROUND_EVENT] * 4, 1e-5, SPEC), rel=1e-12)
    assert report.firms["acme"].epsilon == pytest.approx(epsilon([ROUND_EVENT] * 4, 1e-5, SPEC), rel=1e-12)
    assert report.firms["strict"].epsilon == pytest.approx(epsilon([ROUND_EVENT] * 2, 1e-6, SPEC), rel=1e-12)
    assert report.firms["strict"].releases == 2 and report.firms["strict"].within_budget
    assert [r.excluded_firms for r in report.releases] == [(), (), ("strict",), ("strict",)]
    assert report.refusals == ("greedy-query",)
    assert report.within_budget and report.ended and report.end_reason == "completed"
    json.dumps(report.to_dict())  # the --json form is plain JSON


def test_refused_release_writes_a_refusal_and_charges_nothing(tmp_path: Path) -> None:
    run = start(tmp_path / "ledger.jsonl")
    run.record(Release("r0", "central_gaussian", ROUND_EVENT, FIRMS, Sampling.poisson(0.5), 3.0, 1.0))
    before = run.overall_epsilon
    with pytest.raises(BudgetExhausted, match="release 'r1' refused: overall epsilon"):
        run.record(Release("r1", "central_gaussian", dpa.GaussianDpEvent(0.2), FIRMS))
    assert run.overall_epsilon == before and run.firm_epsilon("acme") == before
    run.close()
    entries = read_entries(tmp_path / "ledger.jsonl")
    assert [e["kind"] for e in entries] == ["header", "release", "refusal", "end"]
    assert entries[2]["firms"] == sorted(FIRMS)
    assert verify_ledger(tmp_path / "ledger.jsonl").refusals == ("r1",)


def test_admission_drops_firms_over_their_own_budget(tmp_path: Path) -> None:
    run = start(tmp_path / "ledger.jsonl", firm_budgets={"strict": Budget(1.1, 1e-6)})
    first = run.admit("r0", ROUND_EVENT, FIRMS)
    assert first.participants == FIRMS and first.excluded == []
    run.record(Release("r0", "central_gaussian", ROUND_EVENT, first.participants))
    second = run.admit("r1", ROUND_EVENT, FIRMS)
    assert second.excluded == ["strict"] and "strict" not in second.participants
    run.close()


def test_record_unit_composes_firms_in_parallel(tmp_path: Path) -> None:
    spec = AccountingSpec(unit=PrivacyUnit.RECORD, rdp_orders=SPEC.rdp_orders)
    path = tmp_path / "ledger.jsonl"
    with start(path, spec=spec, budget=Budget(10.0, 1e-5)) as run:
        for round_number in range(3):
            for firm, rate in (("acme", 0.01), ("bolt", 0.05)):
                event = dpsgd_event(1.1, rate, 100)
                run.record(Release(f"round-{round_number}", "dpsgd", event, [firm], Sampling.poisson(rate), 1.1, 1.0))
        acme = epsilon([dpsgd_event(1.1, 0.01, 100)] * 3, 1e-5, spec)
        bolt = epsilon([dpsgd_event(1.1, 0.05, 100)] * 3, 1e-5, spec)
        assert run.firm_epsilon("acme") == pytest.approx(acme) and run.firm_epsilon("bolt") == pytest.approx(bolt)
        assert run.overall_epsilon == pytest.approx(max(acme, bolt))  # not their composition
    report = verify_ledger(path)
    assert report.epsilon_overall == pytest.approx(max(acme, bolt)) and report.end_reason == "completed"


def test_distributed_skellam_run_accounts_realised_shares(tmp_path: Path) -> None:
    spec = AccountingSpec(relation=NeighboringRelation.REPLACE_SPECIAL)
    config = DistributedSkellam(clip_norm=1.0, scale=128.0, dim=1000, noise_multiplier=3.0, expected_shares=4)
    path = tmp_path / "ledger.jsonl"
    survivors = [4, 3, 4]
    with start(path, spec=spec, budget=Budget(6.0, 1e-5)) as run:
        for round_number, shares in enumerate(survivors):
            admission = run.admit(f"round-{round_number}", config.event(2), FIRMS)  # worst case: 2 shares
            run.record(
                Release(
                    f"round-{round_number}",
                    "distributed_skellam",
                    config.event(shares),
                    admission.participants,
                    noise_multiplier=3.0,
                    clip_norm=1.0,
                    parameters={"noise_shares": shares, "scale": 128.0, "bits": config.required_bits(4)},
                )
            )
    report = verify_ledger(path)
    assert report.epsilon_overall == pytest.approx(epsilon([config.event(s) for s in survivors], 1e-5, spec))


def test_pld_ledger_verifies(tmp_path: Path) -> None:
    spec = AccountingSpec(kind=AccountantKind.PLD)
    path = tmp_path / "ledger.jsonl"
    with start(path, spec=spec) as run:
        for round_number in range(5):
            run.record(Release(f"r{round_number}", "central_gaussian", ROUND_EVENT, FIRMS, Sampling.poisson(0.5)))
    assert verify_ledger(path).epsilon_overall == pytest.approx(epsilon([ROUND_EVENT] * 5, 1e-5, spec))


def test_context_manager_records_an_abort(tmp_path: Path) -> None:
    path = tmp_path / "ledger.jsonl"
    with pytest.raises(RuntimeError):
        with start(path) as run:
            run.record(Release("r0", "central_gaussian", ROUND_EVENT, FIRMS))
            raise RuntimeError("secure aggregation aborted")
    assert verify_ledger(path).end_reason == "aborted: RuntimeError: secure aggregation aborted"


def test_a_ledger_is_never_overwritten(tmp_path: Path) -> None:
    path = write_sample_ledger(tmp_path / "ledger.jsonl")
    with pytest.raises(ConfigError, match="already exists"):
        start(path)


def test_release_must_not_list_a_firm_as_both_accounted_and_excluded(tmp_path: Path) -> None:
    run = start(tmp_path / "ledger.jsonl")
    with pytest.raises(ConfigError, match="both"):
        run.record(Release("r0", "central_gaussian", ROUND_EVENT, ["acme"], excluded_firms=["acme"]))


@pytest.mark.parametrize("cut", range(1, 8))
def test_truncation_at_any_entry_boundary_verifies(tmp_path: Path, cut: int) -> None:
    path = write_sample_ledger(tmp_path / "ledger.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:cut]))
    report = verify_ledger(path)
    assert report.entries == cut
    assert report.ended == (cut == len(lines))
    assert not report.torn_tail


def test_torn_last_line_is_left_out_and_reported(tmp_path: Path) -> None:
    path = write_sample_ledger(tmp_path / "ledger.jsonl")
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    path.write_bytes(b"".join(lines[:4]) + lines[4][:50])
    report = verify_ledger(path)
    assert report.torn_tail and report.entries == 4 and not report.ended
    assert any("torn write" in w for w in report.warnings)


def test_a_torn_header_leaves_nothing_to_verify(tmp_path: Path) -> None:
    path = write_sample_ledger(tmp_path / "ledger.jsonl")
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(LedgerTampered, match="no complete header"):
        verify_ledger(path)


def test_a_run_killed_mid_way_leaves_a_verifiable_ledger(tmp_path: Path) -> None:
    """SIGKILL a real writer process between fsyncs; the ledger it leaves must verify."""
    path = tmp_path / "ledger.jsonl"
    script = textwrap.dedent(
        f"""
        import time
        from tests.privacy.ledger_support import FIRMS, KEY, ROUND_EVENT
        from silobridge.privacy.dp import Budget
        from silobridge.privacy.ledger import PrivacyRun, Release
        run = PrivacyRun.start({str(path)!r}, run_id="doomed", config_sha256="0" * 64,
                               budget=Budget(1000.0, 1e-5), signing_key=KEY)
        for r in range(100_000):
            run.record(Release(f"round-{{r}}", "central_gaussian", ROUND_EVENT, FIRMS))
            time.sleep(0.001)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (not path.exists() or path.read_bytes().count(b"\n") < 20):
            assert child.poll() is None, "the writer exited before it could be killed"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    report = verify_ledger(path)
    assert len(report.releases) >= 19 and not report.ended
    assert report.epsilon_overall == pytest.approx(
        epsilon([ROUND_EVENT] * len(report.releases), 1e-5, AccountingSpec())
    )
