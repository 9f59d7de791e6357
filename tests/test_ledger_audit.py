"""`silobridge audit` and `report` against a trusted key: the ledger's signature must mean something.

Each ledger here is written by `PrivacyRun` (no simulation); the cases are the issue's "found by
trying to break it" list: a ledger re-signed with a fresh key, a `head -n` prefix, a header-only
ledger, an upper-case key, a write torn by a crash, and a summary that names another key.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from silobridge.errors import ConfigError
from silobridge.federation.cli import app
from silobridge.federation.ledger_audit import audit_ledger_file
from silobridge.privacy.dp import Budget, Sampling
from silobridge.privacy.ledger import PrivacyRun, Release, config_hash, public_key_hex, verify_ledger
from silobridge.privacy.ledger.keys import load_signing_key, same_key, write_signing_key
from silobridge.privacy.ledger.verdict import Verdict
from tests.conftest import ROOT
from tests.privacy.ledger_support import KEY, OTHER_KEY, ROUND_EVENT, SPEC, write_sample_ledger

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"
KEY_HEX = public_key_hex(KEY)
runner = CliRunner()


def _audit(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", *map(str, args)], env={"COLUMNS": "250"})
    # Table borders out, whitespace collapsed: a long cell (a temp path) wraps inside the table.
    return result.exit_code, " ".join(result.output.replace("│", " ").split())


def _run_dir(tmp_path: Path, *, summary_key: str | None = KEY_HEX) -> Path:
    """A run directory holding the sample ledger (signed by KEY) and, optionally, its summary."""
    run = tmp_path / "run"
    run.mkdir()
    ledger = write_sample_ledger(run / "privacy_ledger.jsonl")
    if summary_key is not None:
        report = verify_ledger(ledger)
        privacy = {
            "enabled": True,
            "ledger_public_key": summary_key,
            "ledger_entries": report.entries,
            "epsilon_overall": round(report.epsilon_overall, 6),
        }
        (run / "summary.json").write_text(json.dumps({"privacy": privacy}))
    return run


def _federation_file(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "federation.toml"
    path.write_text(TRIO.read_text() + f'\n[privacy]\nledger_public_key = "{key}"\n')
    return path


def _forged(path: Path, rounds: int) -> None:
    """What the issue's forger did: fewer rounds, totals recomputed, every entry re-signed with a fresh key."""
    path.unlink()
    run = PrivacyRun.start(
        path,
        run_id="sample-run",
        config_sha256=config_hash({}),
        budget=Budget(2.5, 1e-5),
        signing_key=OTHER_KEY,
        spec=SPEC,
    )
    for number in range(rounds):
        run.record(
            Release(f"round-{number}", "central_gaussian", ROUND_EVENT, firms=["acme"], sampling=Sampling.poisson(0.5))
        )
    run.close()


# -- the long-term key ---------------------------------------------------------------------------


def test_keys_ledger_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    out = tmp_path / "coordinator" / "ledger.key"
    result = runner.invoke(app, ["keys", "--ledger", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    public = (tmp_path / "coordinator" / "ledger.key.pub").read_text().strip()
    assert f'ledger_public_key = "{public}"' in result.output
    assert public_key_hex(load_signing_key(out)) == public
    again = runner.invoke(app, ["keys", "--ledger", "--out", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output


def test_a_private_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.key"
    write_signing_key(path)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match="accessible to other users"):
        load_signing_key(path)


def test_keys_compare_as_bytes_whatever_the_case() -> None:
    assert same_key(KEY_HEX.upper(), KEY_HEX)
    assert not same_key(KEY_HEX, public_key_hex(OTHER_KEY))


def test_the_federation_file_stores_its_key_in_lower_case(tmp_path: Path) -> None:
    from silobridge.scenarios.schema import load_scenario

    assert load_scenario(_federation_file(tmp_path, KEY_HEX.upper())).privacy.ledger_public_key == KEY_HEX


# -- verdicts and exit codes ---------------------------------------------------------------------


def test_the_right_key_in_upper_case_verifies(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    code, output = _audit(run, "--public-key", KEY_HEX.upper())
    assert code == 0, output
    assert "verified: chain and signatures intact under the trusted key" in output


def test_the_federation_file_key_verifies(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    code, output = _audit(run, "--config", _federation_file(tmp_path, KEY_HEX))
    assert code == 0, output
    assert "trusted: matches the key of federation file" in output


def test_without_a_trusted_key_the_verdict_says_so_with_its_own_exit_code(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    code, output = _audit(run)
    assert code == Verdict.UNTRUSTED_KEY.exit_code == 5, output
    assert "found only in the run directory" in output and "verified:" not in output


def test_a_re_signed_under_reported_ledger_fails_against_the_federation_file(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    _forged(run / "privacy_ledger.jsonl", rounds=1)
    code, output = _audit(run, "--config", _federation_file(tmp_path, KEY_HEX))
    assert code == 3 and "not the trusted key" in output
    # Without a trusted key, the summary written with the run still names the real key.
    code, output = _audit(run)
    assert code == 3 and "summary.json names ledger key" in output
    # With the summary gone too, nothing in the folder can be trusted: never "verified" with 0.
    (run / "summary.json").unlink()
    code, output = _audit(run)
    assert code == 5, output


def test_a_summary_that_disagrees_on_the_spend_fails(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["privacy"]["epsilon_overall"] = 0.5
    (run / "summary.json").write_text(json.dumps(summary))
    code, output = _audit(run, "--public-key", KEY_HEX)
    assert code == 3 and "summary.json states epsilon 0.5" in output


@pytest.mark.parametrize("keep", [1, 3], ids=["header-only", "head-n-3"])
def test_a_prefix_without_end_entry_is_incomplete_never_verified(tmp_path: Path, keep: int) -> None:
    ledger = write_sample_ledger(tmp_path / "privacy_ledger.jsonl")
    lines = ledger.read_bytes().splitlines(keepends=True)
    ledger.write_bytes(b"".join(lines[:keep]))
    for args in ((), ("--public-key", KEY_HEX)):
        code, output = _audit(ledger, *args)
        assert code == Verdict.INCOMPLETE.exit_code == 4, output
        assert "INCOMPLETE: no end entry" in output and "verified:" not in output


def test_a_line_torn_by_a_crash_is_a_crash_prefix_not_tampering(tmp_path: Path) -> None:
    ledger = write_sample_ledger(tmp_path / "privacy_ledger.jsonl")
    lines = ledger.read_bytes().splitlines(keepends=True)
    ledger.write_bytes(b"".join(lines[:3]) + lines[3][:40])  # the crash hit while entry 3 was being written
    code, output = _audit(ledger, "--public-key", KEY_HEX)
    assert code == 4, output
    assert "cut mid-line by a crash after entry 2" in output and "torn" in output


def test_bytes_after_the_end_entry_are_tampering(tmp_path: Path) -> None:
    ledger = write_sample_ledger(tmp_path / "privacy_ledger.jsonl")
    ledger.write_bytes(ledger.read_bytes() + b'{"index":')
    code, output = _audit(ledger, "--public-key", KEY_HEX)
    assert code == 3 and "follow the end-of-run entry" in output


def test_audit_json_carries_the_verdict(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    result = runner.invoke(app, ["audit", str(run), "--public-key", KEY_HEX, "--json"])
    body = json.loads(result.output)
    assert result.exit_code == 0 and body["verdict"] == "verified" and body["key_source"] == "--public-key"


def test_report_on_an_incomplete_ledger_does_not_say_verified(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, summary_key=None)
    ledger = run / "privacy_ledger.jsonl"
    ledger.write_bytes(b"".join(ledger.read_bytes().splitlines(keepends=True)[:3]))  # a crash: no failure.json
    result = runner.invoke(app, ["report", str(run), "--public-key", KEY_HEX])
    assert result.exit_code == 4, result.output
    page = (run / "report.html").read_text()
    assert "INCOMPLETE" in page and "the run stopped without writing summary.json or failure.json" in page


def test_both_key_options_at_once_are_refused(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    with pytest.raises(ConfigError, match="not both"):
        audit_ledger_file(run / "privacy_ledger.jsonl", public_key=KEY_HEX, federation=tmp_path / "x.toml")


# -- the ledger's own records ---------------------------------------------------------------------


def test_the_header_records_which_key_signed(tmp_path: Path) -> None:
    run = PrivacyRun.start(
        tmp_path / "l.jsonl",
        run_id="r",
        config_sha256=config_hash({}),
        budget=Budget(3.0, 1e-5),
        signing_key=Ed25519PrivateKey.generate(),
        spec=SPEC,
        key_kind="per-run",
    )
    run.close()
    report = verify_ledger(tmp_path / "l.jsonl")
    assert report.key_kind == "per-run"
    assert "a per-run key found only in the run directory" in audit_ledger_file(tmp_path / "l.jsonl").judgement.text


def test_a_firm_its_admission_left_out_is_named_in_the_release(tmp_path: Path) -> None:
    """The issue's five-firm run: a firm whose own budget pays for no round must show in excluded_firms."""
    run = PrivacyRun.start(
        tmp_path / "l.jsonl",
        run_id="r",
        config_sha256=config_hash({}),
        budget=Budget(3.0, 1e-5),
        signing_key=KEY,
        spec=SPEC,
        firm_budgets={"poor": Budget(0.01, 1e-5)},
    )
    admission = run.admit("round-1", ROUND_EVENT, ["acme", "poor"])
    assert admission.excluded == ["poor"]
    run.record(Release("round-1", "central_gaussian", ROUND_EVENT, firms=admission.participants))  # caller omits it
    run.close()
    release = verify_ledger(tmp_path / "l.jsonl").releases[0]
    assert release.excluded_firms == ("poor",)


def test_close_is_idempotent(tmp_path: Path) -> None:
    run = PrivacyRun.start(
        tmp_path / "l.jsonl",
        run_id="r",
        config_sha256=config_hash({}),
        budget=Budget(3.0, 1e-5),
        signing_key=KEY,
        spec=SPEC,
    )
    run.close("interrupted: SIGINT (Ctrl-C)")
    run.close("completed")  # the run's own thread closing after an interrupt handler did: nothing more is written
    report = verify_ledger(tmp_path / "l.jsonl")
    assert report.entries == 2 and report.end_reason == "interrupted: SIGINT (Ctrl-C)"
