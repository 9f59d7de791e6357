"""Audit a run's ledger as an outsider would: against a trusted key, cross-checked with the run's summary.

The trusted key comes from `--public-key` or from the federation file every partner holds (`[privacy]
ledger_public_key`); a key found in the run directory (the ledger's header, summary.json) is only
used when nothing else is given, and the verdict says so. Where the run wrote a summary, its key,
entry count and epsilon must agree with the ledger, or the audit fails.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from silobridge.errors import ConfigError, LedgerTampered
from silobridge.privacy.ledger import AuditReport, verify_ledger
from silobridge.privacy.ledger.keys import public_key_bytes, same_key
from silobridge.privacy.ledger.verdict import Judgement, judge

LEDGER_FILE = "privacy_ledger.jsonl"
SUMMARY_FILE = "summary.json"


@dataclass(frozen=True)
class LedgerAudit:
    """A ledger's audit: the report when it verified, the first error when not, and the verdict on both."""

    ledger: Path
    judgement: Judgement
    key_source: str  # "--public-key", "federation file <path>", or "run directory"
    report: AuditReport | None = None
    error: str | None = None
    entry: int | None = None
    problems: tuple[str, ...] = ()

    @property
    def verified(self) -> bool:
        """The ledger's chain and signatures hold and nothing disagrees with it (whatever the key's origin)."""
        return self.report is not None and not self.problems


def federation_ledger_key(config: Path) -> str:
    """The `[privacy] ledger_public_key` of a federation file; ConfigError naming the file if it has none."""
    from silobridge.scenarios.schema import load_scenario

    key = load_scenario(config).privacy.ledger_public_key
    if key is None:
        raise ConfigError("declares no ledger key", source=str(config), field="silobridge.privacy.ledger_public_key")
    return key


def summary_problems(report: AuditReport, privacy: dict[str, Any]) -> tuple[str, ...]:
    """Where the run's summary (written with the ledger) disagrees with what the ledger verifiably says."""
    problems = []
    stated_key = privacy.get("ledger_public_key")
    if isinstance(stated_key, str):
        try:
            if not same_key(stated_key, report.public_key):
                problems.append(
                    f"{SUMMARY_FILE} names ledger key {stated_key}, the ledger is signed by {report.public_key}"
                )
        except ConfigError:
            problems.append(f"{SUMMARY_FILE} names an unreadable ledger key {stated_key!r}")
    entries = privacy.get("ledger_entries")
    if isinstance(entries, int) and entries != report.entries:
        problems.append(f"{SUMMARY_FILE} counts {entries} ledger entries, the ledger has {report.entries}")
    stated = privacy.get("epsilon_overall")
    recomputed = report.epsilon_overall
    if isinstance(stated, int | float) and math.isfinite(recomputed) and abs(stated - recomputed) > 1e-6:
        problems.append(f"{SUMMARY_FILE} states epsilon {stated}, the ledger's events give {recomputed:.6f}")
    return tuple(problems)


def _summary_privacy(run_dir: Path | None) -> dict[str, Any] | None:
    if run_dir is None or not (run_dir / SUMMARY_FILE).exists():
        return None
    try:
        privacy = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8")).get("privacy")
    except (OSError, ValueError, AttributeError) as err:
        raise ConfigError(f"cannot read: {err}", source=str(run_dir / SUMMARY_FILE)) from None
    return privacy if isinstance(privacy, dict) and privacy.get("enabled") else None


def audit_ledger_file(
    ledger: Path,
    *,
    run_dir: Path | None = None,
    public_key: str | None = None,
    federation: Path | None = None,
) -> LedgerAudit:
    """Verify `ledger` against the trusted key (if any) and cross-check the summary in `run_dir` (if any).

    ConfigError for an unusable trusted key or federation file; a ledger that fails is a verdict, not an error.
    """
    if public_key is not None and federation is not None:
        raise ConfigError("give --public-key or --config, not both", source="command line", field="--public-key")
    trusted: bytes | None = None
    source = "run directory"
    if public_key is not None:
        trusted, source = public_key_bytes(public_key, source="--public-key"), "--public-key"
    elif federation is not None:
        trusted, source = public_key_bytes(federation_ledger_key(federation)), f"federation file {federation}"
    privacy = _summary_privacy(run_dir)
    try:
        report = verify_ledger(ledger, public_key=trusted)
    except LedgerTampered as err:
        return LedgerAudit(ledger, judge(None, error=str(err)), source, error=str(err), entry=err.entry)
    except ConfigError as err:  # an unusable header key: the ledger cannot be trusted either
        return LedgerAudit(ledger, judge(None, error=str(err)), source, error=str(err))
    problems = summary_problems(report, privacy) if privacy is not None else ()
    return LedgerAudit(ledger, judge(report, problems), source, report=report, problems=problems)
