"""The per-run privacy ledger: signed, hash-chained JSON Lines, and its audit.

`PrivacyRun` checks budgets and writes the ledger during a run; `verify_ledger` recomputes what a
ledger says from its recorded events and refuses any ledger that was altered.
"""

from silobridge.privacy.ledger.run import Admission, PrivacyRun, Release
from silobridge.privacy.ledger.sealing import canonical_bytes, config_hash, public_key_hex
from silobridge.privacy.ledger.verify import AuditReport, FirmAudit, ReleaseAudit, verify_ledger
from silobridge.privacy.ledger.writer import LedgerWriter

__all__ = [
    "Admission",
    "AuditReport",
    "FirmAudit",
    "LedgerWriter",
    "PrivacyRun",
    "Release",
    "ReleaseAudit",
    "canonical_bytes",
    "config_hash",
    "public_key_hex",
    "verify_ledger",
]
