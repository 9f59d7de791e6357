"""Audit a privacy ledger: chain, signatures, schema, and epsilon recomputed from the recorded events.

`verify_ledger` trusts nothing written in the file: it re-derives every line's canonical bytes,
checks each entry's index, its link to the previous line (SHA-256) and its Ed25519 signature under
the header's key (and, given a trusted key, that the header's key is that one), then replays the
recorded DpEvents through the accountant named in the header and compares the epsilon totals the
file states with the recomputed ones. The first failure raises `LedgerTampered` naming the entry.

Truncation. A ledger cut at an entry boundary (a run killed mid-way) verifies; the report says it has
no end-of-run entry. A last line without its newline is a write torn by a crash: it is left out and
reported (`torn_tail`), and the prefix before it is verified: a crash prefix, which `privacy.ledger.verdict`
calls incomplete, not verified. A damaged line anywhere else, or bytes after the end entry, fail.

Resume. A resumed run writes a `resume` entry (after the end entry an interrupt wrote, if any) that
points at its checkpoint's place in the ledger (entry count and that entry's SHA-256, checked here);
the ledger must then end again. No firm is charged twice for one release id: a round is released once, resumed or not.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dp_accounting as dpa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from silobridge.errors import ConfigError, LedgerTampered
from silobridge.privacy.dp.accounting import Account, AccountingSpec, PrivacyUnit, compose_each
from silobridge.privacy.dp.budget import Budget, overall_epsilon
from silobridge.privacy.dp.codec import event_from_json
from silobridge.privacy.ledger.entries import (
    ENTRY_MODELS,
    EndEntry,
    EpsilonTotals,
    HeaderEntry,
    RefusalEntry,
    ReleaseEntry,
    ResumeEntry,
)
from silobridge.privacy.ledger.keys import public_key_bytes, raw_public
from silobridge.privacy.ledger.sealing import (
    GENESIS_HASH,
    canonical_bytes,
    load_public_key,
    sha256_hex,
    signature_valid,
)

# Stored totals are written by the same code that recomputes them; the tolerance only absorbs a
# different floating-point library, not a different accountant.
_REL_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ReleaseAudit:
    """One release, with the epsilon totals recomputed after it."""

    index: int
    release_id: str
    mechanism: str
    firms: tuple[str, ...]
    excluded_firms: tuple[str, ...]
    epsilon_overall: float
    epsilon_firms: Mapping[str, float]


@dataclass(frozen=True)
class FirmAudit:
    """One firm's recomputed spend against its budget."""

    firm: str
    releases: int
    epsilon: float
    budget: Budget

    @property
    def within_budget(self) -> bool:
        return self.epsilon <= self.budget.epsilon


@dataclass(frozen=True)
class AuditReport:
    """What a verified ledger says, recomputed; `to_dict()` gives the `--json` form."""

    path: str
    run_id: str
    config_sha256: str
    accountant: AccountingSpec
    budget: Budget
    public_key: str
    key_trusted: bool
    entries: int
    releases: tuple[ReleaseAudit, ...]
    refusals: tuple[str, ...]
    firms: Mapping[str, FirmAudit]
    epsilon_overall: float
    ended: bool
    end_reason: str | None
    torn_tail: bool
    warnings: tuple[str, ...] = field(default=())
    key_kind: str | None = None  # what the header says of its key: "long-term" or "per-run" (older ledgers: None)
    resumes: tuple[Mapping[str, Any], ...] = ()  # each resume entry: index, checkpoint round, torn tail moved aside

    @property
    def within_budget(self) -> bool:
        """Whether the run and every firm stayed within budget (by the recomputed epsilon)."""
        return self.epsilon_overall <= self.budget.epsilon and all(f.within_budget for f in self.firms.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "run_id": self.run_id,
            "config_sha256": self.config_sha256,
            "accountant": self.accountant.to_dict(),
            "budget": self.budget.to_dict(),
            "public_key": self.public_key,
            "key_trusted": self.key_trusted,
            "entries": self.entries,
            "epsilon_overall": self.epsilon_overall,
            "within_budget": self.within_budget,
            "ended": self.ended,
            "end_reason": self.end_reason,
            "torn_tail": self.torn_tail,
            "key_kind": self.key_kind,
            "resumes": [dict(resume) for resume in self.resumes],
            "warnings": list(self.warnings),
            "refusals": list(self.refusals),
            "firms": {
                firm: {
                    "releases": audit.releases,
                    "epsilon": audit.epsilon,
                    "budget": audit.budget.to_dict(),
                    "within_budget": audit.within_budget,
                }
                for firm, audit in sorted(self.firms.items())
            },
            "releases": [
                {
                    **asdict(release),
                    "firms": list(release.firms),
                    "excluded_firms": list(release.excluded_firms),
                    "epsilon_firms": dict(release.epsilon_firms),
                }
                for release in self.releases
            ],
        }


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys in {keys}")
    return dict(pairs)


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a finite number")


def _parse_line(line: bytes, index: int) -> dict[str, Any]:
    try:
        obj = json.loads(line.decode("utf-8"), object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as err:
        raise LedgerTampered(f"not a valid JSON line: {err}", entry=index) from err
    if not isinstance(obj, dict):
        raise LedgerTampered("not a JSON object", entry=index)
    if canonical_bytes(obj) != line:
        raise LedgerTampered("not in canonical form: the line was rewritten", entry=index)
    return obj


def _split_lines(data: bytes) -> tuple[list[bytes], bool]:
    """Complete lines, and whether a torn (unterminated) last line was dropped."""
    lines = data.split(b"\n")
    torn = lines.pop() != b""  # after the final newline there is nothing, unless a write was torn
    return lines, torn


def _trusted_key(public_key: Ed25519PublicKey | str | bytes | None) -> bytes | None:
    """The trusted key's raw bytes: hex is compared as bytes, so its case does not matter."""
    if public_key is None:
        return None
    if isinstance(public_key, bytes):
        return public_key
    return public_key_bytes(public_key) if isinstance(public_key, str) else raw_public(public_key)


def _close(stored: float, recomputed: float) -> bool:
    return math.isclose(stored, recomputed, rel_tol=_REL_TOLERANCE, abs_tol=1e-12)


class _Replay:
    """Re-accounts the recorded releases exactly as `PrivacyRun` did."""

    def __init__(self, header: HeaderEntry, index: int):
        try:
            self.spec = AccountingSpec.from_dict(header.accountant)
            self.budget = Budget.from_dict(header.budget.model_dump())
            self.firm_budgets = {firm: Budget.from_dict(b.model_dump()) for firm, b in header.firm_budgets.items()}
        except ConfigError as err:
            raise LedgerTampered(f"invalid header: {err}", entry=index) from err
        self.empty = Account.empty(self.spec)
        self.run_account = self.empty
        self.firm_accounts: dict[str, Account] = {}
        self.release_counts: dict[str, int] = {}

    def budget_of(self, firm: str) -> Budget:
        return self.firm_budgets.get(firm, self.budget)

    def firm_epsilon(self, firm: str) -> float:
        return self.firm_accounts.get(firm, self.empty).epsilon(self.budget_of(firm).delta)

    @property
    def overall(self) -> float:
        return overall_epsilon(self.spec.unit, self.run_account, self.firm_accounts, self.budget.delta)

    def apply(self, event: dpa.DpEvent, firms: list[str], index: int) -> None:
        try:
            if self.spec.unit is PrivacyUnit.FIRM:
                self.run_account = self.run_account.compose(event)
            self.firm_accounts.update(compose_each(self.firm_accounts, firms, event, self.empty))
        except ConfigError as err:
            raise LedgerTampered(f"the recorded event cannot be accounted: {err}", entry=index) from err
        for firm in firms:
            self.release_counts[firm] = self.release_counts.get(firm, 0) + 1

    def check_totals(self, stored: EpsilonTotals, index: int, *, all_firms: bool) -> None:
        if not _close(stored.overall, self.overall):
            raise LedgerTampered(
                f"states overall epsilon {stored.overall!r}, the recorded events give {self.overall!r}", entry=index
            )
        if all_firms and set(stored.firms) != set(self.firm_accounts):
            raise LedgerTampered(
                f"lists totals for firms {sorted(stored.firms)}, but firms {sorted(self.firm_accounts)} were charged",
                entry=index,
            )
        for firm, value in stored.firms.items():
            recomputed = self.firm_epsilon(firm)
            if not _close(value, recomputed):
                raise LedgerTampered(
                    f"states epsilon {value!r} for firm '{firm}', the recorded events give {recomputed!r}", entry=index
                )


def _decode_event(data: dict[str, Any], index: int) -> dpa.DpEvent:
    try:
        return event_from_json(data)
    except ConfigError as err:
        raise LedgerTampered(f"unreadable event: {err}", entry=index) from err


def verify_ledger(path: str | Path, *, public_key: Ed25519PublicKey | str | bytes | None = None) -> AuditReport:
    """Verify the ledger at `path` and recompute its epsilon; raises `LedgerTampered` at the first bad entry.

    `public_key` (an Ed25519 public key or its hex) is the key the auditor trusts for this run; without
    it the header's own key is used: that shows nothing was altered after the header was written, not
    who wrote it.
    """
    path = Path(path)
    lines, torn = _split_lines(path.read_bytes())
    warnings: list[str] = []
    if torn:
        warnings.append(f"the last line (entry {len(lines)}) is incomplete: a torn write, left out of the audit")
    if not lines:
        raise LedgerTampered("the ledger has no complete header entry", entry=0)

    trusted = _trusted_key(public_key)
    prev = GENESIS_HASH
    key: Ed25519PublicKey | None = None
    header: HeaderEntry | None = None
    replay: _Replay | None = None
    releases: list[ReleaseAudit] = []
    refusals: list[str] = []
    end_reason: str | None = None
    hashes: list[str] = []
    released: dict[tuple[str, str], int] = {}  # (release id, firm) -> its entry
    resumes: list[dict[str, Any]] = []

    for index, line in enumerate(lines):
        obj = _parse_line(line, index)
        kind = obj.get("kind")
        if end_reason is not None and kind != "resume":
            raise LedgerTampered("an entry follows the end-of-run entry", entry=index)
        if (index == 0) != (kind == "header"):
            raise LedgerTampered("the header must be the first entry and only the first", entry=index)
        model = ENTRY_MODELS.get(kind) if isinstance(kind, str) else None
        if model is None:
            raise LedgerTampered(f"unknown entry kind {kind!r}", entry=index)
        try:
            entry = model.model_validate(obj)
        except ValidationError as err:
            raise LedgerTampered(f"malformed '{kind}' entry: {err}", entry=index) from err
        if entry.index != index:
            raise LedgerTampered(
                f"says it is entry {entry.index}: entries were removed, inserted or reordered", entry=index
            )
        if entry.prev != prev:
            raise LedgerTampered("does not chain to the previous entry (SHA-256 mismatch)", entry=index)
        if isinstance(entry, HeaderEntry):
            if trusted is not None and bytes.fromhex(entry.public_key) != trusted:
                raise LedgerTampered(
                    f"signed with key {entry.public_key}, not the trusted key {trusted.hex()}", entry=index
                )
            key = load_public_key(entry.public_key)
            header = entry
            replay = _Replay(entry, index)
        assert key is not None and replay is not None, "entry 0 is the header (checked above)"
        if not signature_valid(obj, key):
            raise LedgerTampered("the Ed25519 signature does not match the entry", entry=index)
        prev = sha256_hex(line)
        hashes.append(prev)

        if isinstance(entry, ResumeEntry):
            points = entry.checkpoint_entries
            if points > index or hashes[points - 1] != entry.checkpoint_hash:
                raise LedgerTampered(
                    f"resumes from a checkpoint at entry {points - 1} whose hash is not that entry's", entry=index
                )
            if (end_reason is None) != (entry.reopened_after is None) or (
                end_reason is not None and end_reason != entry.reopened_after
            ):
                raise LedgerTampered("misstates the end entry it reopens after", entry=index)
            end_reason = None
            resumes.append(
                {
                    "index": index,
                    "checkpoint_round": entry.checkpoint_round,
                    # releases the checkpoint had charged: what a session without rounds (queries, the
                    # linear family) resumed after
                    "checkpoint_releases": len({release for (release, _), at in released.items() if at < points}),
                    "reopened_after": entry.reopened_after,
                    "torn_tail": entry.torn_tail.model_dump() if entry.torn_tail is not None else None,
                }
            )
        elif isinstance(entry, ReleaseEntry):
            for firm in entry.firms:  # one release may be recorded per group of firms, each firm once
                first = released.setdefault((entry.release_id, firm), index)
                if first != index:
                    raise LedgerTampered(
                        f"charges firm '{firm}' for release '{entry.release_id}' again (first at entry {first}): "
                        "a release is recorded once",
                        entry=index,
                    )
            event = _decode_event(entry.event, index)
            firms = list(entry.firms)
            if len(set(firms)) != len(firms) or set(firms) & set(entry.excluded_firms):
                raise LedgerTampered("lists a firm twice", entry=index)
            if set(entry.epsilon.firms) != set(firms):
                raise LedgerTampered("states totals for other firms than those it accounts", entry=index)
            replay.apply(event, firms, index)
            replay.check_totals(entry.epsilon, index, all_firms=False)
            releases.append(
                ReleaseAudit(
                    index=index,
                    release_id=entry.release_id,
                    mechanism=entry.mechanism,
                    firms=tuple(firms),
                    excluded_firms=tuple(entry.excluded_firms),
                    epsilon_overall=replay.overall,
                    epsilon_firms={firm: replay.firm_epsilon(firm) for firm in firms},
                )
            )
        elif isinstance(entry, RefusalEntry):
            _decode_event(entry.event, index)
            refusals.append(entry.release_id)
        elif isinstance(entry, EndEntry):
            replay.check_totals(entry.epsilon, index, all_firms=True)
            end_reason = entry.reason

    if end_reason is not None and torn:
        raise LedgerTampered("bytes follow the end-of-run entry: a closed ledger is never written to", entry=len(lines))
    if end_reason is None:
        warnings.append("no end-of-run entry: the run stopped before closing its ledger, or the ledger was truncated")
    assert header is not None and replay is not None, "the ledger has entries, and entry 0 is the header"
    audits = {
        firm: FirmAudit(firm, replay.release_counts[firm], replay.firm_epsilon(firm), replay.budget_of(firm))
        for firm in sorted(replay.firm_accounts)
    }
    over = [firm for firm, audit in audits.items() if not audit.within_budget]
    if replay.overall > replay.budget.epsilon or over:
        warnings.append(f"budget exceeded: overall epsilon {replay.overall:.6g}, firms over budget: {over}")
    return AuditReport(
        path=str(path),
        run_id=header.run_id,
        config_sha256=header.config_sha256,
        accountant=replay.spec,
        budget=replay.budget,
        public_key=header.public_key,
        key_trusted=trusted is not None,
        entries=len(lines),
        releases=tuple(releases),
        refusals=tuple(refusals),
        firms=audits,
        epsilon_overall=replay.overall,
        ended=end_reason is not None,
        end_reason=end_reason,
        torn_tail=torn,
        warnings=tuple(warnings),
        key_kind=header.key_kind,
        resumes=tuple(resumes),
    )
