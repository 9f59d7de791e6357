"""One run's privacy: budget checks before a release, accounting and a ledger entry after it.

The upper layers talk to this object only:

    run = PrivacyRun.start(path, run_id=..., config_sha256=..., budget=Budget(8, 1e-5), signing_key=key)
    admission = run.admit(release_id, worst_case_event, candidate_firms)   # before contacting firms
    ... release with admission.participants ...
    run.record(Release(release_id, mechanism, realised_event, firms=..., ...))
    run.close()

What is charged to whom depends on the unit of privacy:
- `firm`: every release's event is composed into the run's account (overall epsilon, checked against
  the run budget) and into the account of each firm listed in the release (checked against the
  firm's own budget). For a Poisson-sampled release, list the whole eligible population, not the
  sample: that is what the amplified event accounts for, and the ledger must not reveal the sample.
- `record`: firms hold disjoint records, so each firm's account is its own DP-SGD history; overall
  epsilon is the largest firm's (parallel composition), and each firm is held to its budget.
  Record one release per firm (or per group of firms with the same sample rate and steps).
- Distributed DP (no sampling amplification): list the firms whose noised updates are in the
  revealed sum, and record the event for the shares actually present (see privacy.dp.distributed).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn

import dp_accounting as dpa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from silobridge.errors import BudgetExhausted, ConfigError
from silobridge.privacy.dp.accounting import AccountingSpec, PrivacyUnit
from silobridge.privacy.dp.budget import Budget, BudgetGuard, FirmBudgets, FirmCharge, overall_epsilon
from silobridge.privacy.dp.codec import event_from_json, event_to_json
from silobridge.privacy.dp.sampling import Sampling
from silobridge.privacy.ledger.sealing import sha256_hex
from silobridge.privacy.ledger.writer import LedgerWriter, TornTail

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Release:
    """One release as the ledger records it; `firms` are the firms accounted for it."""

    release_id: str
    mechanism: str
    event: dpa.DpEvent
    firms: Sequence[str]
    sampling: Sampling = field(default_factory=Sampling.none)
    noise_multiplier: float | None = None
    clip_norm: float | None = None
    excluded_firms: Sequence[str] = ()
    parameters: Mapping[str, Scalar] = field(default_factory=dict)


@dataclass(frozen=True)
class LedgerState:
    """A reopened ledger's whole entries (parsed, verified) with each line's SHA-256, and a torn tail moved aside."""

    entries: tuple[dict[str, Any], ...]
    hashes: tuple[str, ...]
    torn: TornTail | None


@dataclass(frozen=True)
class Admission:
    """Which candidate firms can pay for a planned release, and the overall epsilon if it happens."""

    participants: list[str]
    excluded: list[str]
    epsilon_if_released: float


class PrivacyRun:
    """Budget guards for the run and its firms, with the signed ledger that records them."""

    def __init__(self, writer: LedgerWriter, spec: AccountingSpec, budget: Budget, firm_budgets: FirmBudgets):
        self._writer = writer
        self.spec = spec
        self.budget = budget
        self._run = BudgetGuard(budget, spec, name="run")
        self._firms = firm_budgets
        # An interrupt (Ctrl-C) closes the ledger from another thread: an entry and the accounts it
        # commits are written as one step, so the end entry always states totals the entries give.
        self._lock = threading.RLock()
        self._excluded: dict[str, list[str]] = {}  # release id -> firms its admission left out

    @classmethod
    def start(
        cls,
        path: str | Path,
        *,
        run_id: str,
        config_sha256: str,
        budget: Budget,
        signing_key: Ed25519PrivateKey,
        spec: AccountingSpec | None = None,
        firm_budgets: Mapping[str, Budget] | None = None,
        key_kind: str | None = None,
    ) -> PrivacyRun:
        """Create the ledger at `path` (header entry) and the guards; `firm_budgets` are stricter overrides.

        `key_kind` records which key signs: "long-term" (the federation's ledger key) or "per-run".
        """
        spec = spec or AccountingSpec()
        firms = FirmBudgets(budget, spec, firm_budgets)
        header = {
            "run_id": run_id,
            "config_sha256": config_sha256,
            "accountant": spec.to_dict(),
            "budget": budget.to_dict(),
            "firm_budgets": {firm: b.to_dict() for firm, b in sorted(firms.overrides.items())},
        }
        if key_kind is not None:
            header["key_kind"] = key_kind
        return cls(LedgerWriter(path, signing_key, header), spec, budget, firms)

    @classmethod
    def reopen(cls, path: str | Path, signing_key: Ed25519PrivateKey) -> tuple[PrivacyRun, LedgerState]:
        """Continue a run's ledger (a resumed run): verified under `signing_key`, its accounts rebuilt by
        replaying its releases in order, a torn last line moved aside (`LedgerWriter.reopen`).

        Raises `LedgerTampered` if the ledger does not verify. The caller reconciles the entries with
        its checkpoint and writes the resume entry (`resumed`) before any release.
        """
        from silobridge.privacy.ledger.verify import verify_ledger  # the audit is the reader of record

        path = Path(path)
        report = verify_ledger(path, public_key=signing_key.public_key())
        lines = path.read_bytes().split(b"\n")[: report.entries]
        entries = [json.loads(line) for line in lines]
        header = entries[0]
        spec = AccountingSpec.from_dict(header["accountant"])
        budget = Budget.from_dict(header["budget"])
        overrides = {firm: Budget.from_dict(b) for firm, b in header["firm_budgets"].items()}
        writer, torn = LedgerWriter.reopen(path, signing_key)
        run = cls(writer, spec, budget, FirmBudgets(budget, spec, overrides))
        for entry in entries:
            if entry["kind"] == "release":
                run._replay(event_from_json(entry["event"]), list(entry["firms"]))
        return run, LedgerState(tuple(entries), hashes=tuple(sha256_hex(line) for line in lines), torn=torn)

    def _replay(self, event: dpa.DpEvent, firms: list[str]) -> None:
        """Account a release the ledger already holds, exactly as `_record` did (no entry written)."""
        charge = self._firms.preview(firms, event)
        if self.spec.unit is PrivacyUnit.FIRM:
            self._run.spend(event)
        self._firms.commit(charge)

    def resumed(
        self, *, checkpoint_round: int, entries: int, last_hash: str, torn: TornTail | None, after_end: str | None
    ) -> None:
        """Write the resume entry: from here on the ledger records the resumed run."""
        with self._lock:
            self._writer.append(
                "resume",
                {
                    "checkpoint_round": checkpoint_round,
                    "checkpoint_entries": entries,
                    "checkpoint_hash": last_hash,
                    "torn_tail": torn.to_dict() if torn is not None else None,
                    "reopened_after": after_end,
                },
            )

    def excluded_for(self, release_id: str) -> list[str]:
        """The firms this release's admission left out (what its entry will name as excluded)."""
        with self._lock:
            return list(self._excluded.get(release_id, ()))

    @property
    def pointer(self) -> tuple[int, str]:
        """Entries written so far and the SHA-256 of the last: where a checkpoint stands in the ledger."""
        with self._lock:
            return self._writer.entries_written, self._writer.last_hash

    @property
    def path(self) -> Path:
        return self._writer.path

    @property
    def overall_epsilon(self) -> float:
        """Epsilon spent so far at the run's delta: the run account (firm unit) or the largest firm's (record unit)."""
        return overall_epsilon(self.spec.unit, self._run.account, self._firms.accounts, self.budget.delta)

    def firm_epsilon(self, firm: str) -> float:
        """Epsilon the firm has spent, at its own delta."""
        return self._firms.spent(firm)

    def admit(self, release_id: str, event: dpa.DpEvent, candidates: Sequence[str]) -> Admission:
        """Check a planned release before any firm is contacted.

        Returns the candidates whose budgets can pay for `event`; raises `BudgetExhausted` (and writes
        a refusal entry) if the run budget cannot, or if no candidate can. For distributed DP pass the
        worst-case event (fewest noise shares the round may end with).
        """
        with self._lock:
            charge = self._firms.preview(candidates, event)
            participants = [firm for firm in charge.accounts if firm not in charge.over_budget]
            requested = self._overall_if(charge, participants, event, release_id, candidates)  # the run's budget first
            if not participants:
                self._refuse(release_id, candidates, event, f"no candidate firm has budget left for {event}")
            self._excluded[release_id] = list(charge.over_budget)
            return Admission(participants, list(charge.over_budget), requested)

    def record(self, release: Release) -> dict[str, Any]:
        """Account a release that happened and append its ledger entry; returns the epsilon totals written.

        Raises `BudgetExhausted` (writing a refusal entry, charging nothing) if it would overspend:
        that means the release was not admitted with a worst-case event, a bug in the caller.
        """
        with self._lock:
            return self._record(release)

    def _record(self, release: Release) -> dict[str, Any]:
        firms = list(release.firms)
        # Firms its admission left out for their budgets are excluded from this release, whether or
        # not the caller repeats them: a firm that takes part in no round is named in the ledger.
        excluded = sorted({*release.excluded_firms, *self._excluded.pop(release.release_id, ())} - set(firms))
        if set(firms) & set(release.excluded_firms):
            raise ConfigError("a firm cannot be both accounted and excluded", field="excluded_firms")
        if not firms:
            raise ConfigError("a release must account at least one firm", field="firms")
        charge = self._firms.preview(firms, release.event)
        overall = self._overall_if(charge, firms, release.event, release.release_id, firms)  # the run's budget first
        if charge.over_budget:
            self._refuse(
                release.release_id, firms, release.event, f"firms {list(charge.over_budget)} would exceed their budgets"
            )
        totals = {"overall": overall, "firms": {firm: charge.epsilons[firm] for firm in sorted(firms)}}
        self._writer.append(
            "release",
            {
                "release_id": release.release_id,
                "mechanism": release.mechanism,
                "noise_multiplier": release.noise_multiplier,
                "clip_norm": release.clip_norm,
                "sampling": release.sampling.to_dict(),
                "firms": sorted(firms),
                "excluded_firms": excluded,
                "event": event_to_json(release.event),
                "parameters": dict(release.parameters),
                "epsilon": totals,
            },
        )
        # Written first, committed second: a failed write leaves the accounts as they were.
        if self.spec.unit is PrivacyUnit.FIRM:
            self._run.spend(release.event)
        self._firms.commit(charge)
        return totals

    @property
    def closed(self) -> bool:
        return self._writer.closed

    def close(self, reason: str = "completed") -> None:
        """Write the end-of-run entry with every firm's total, and close the ledger (once: later calls do nothing)."""
        with self._lock:
            if self.closed:
                return
            firms = {firm: self._firms.spent(firm) for firm in sorted(self._firms.accounts)}
            totals = {"overall": self.overall_epsilon, "firms": firms}
            self._writer.append("end", {"reason": reason, "epsilon": totals})
            self._writer.close()

    def __enter__(self) -> PrivacyRun:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.closed:
            self.close("completed" if exc is None else f"aborted: {type(exc).__name__}: {exc}")

    def _overall_if(
        self, charge: FirmCharge, firms: Sequence[str], event: dpa.DpEvent, release_id: str, listed: Sequence[str]
    ) -> float:
        """Overall epsilon if `event` were released to `firms`; refuses (listing `listed`) if over the run budget."""
        run_account = self._run.composed(event) if self.spec.unit is PrivacyUnit.FIRM else self._run.account
        firm_accounts = {**self._firms.accounts, **{firm: charge.accounts[firm] for firm in firms}}
        requested = overall_epsilon(self.spec.unit, run_account, firm_accounts, self.budget.delta)
        if requested > self.budget.epsilon:
            self._refuse(
                release_id,
                listed,
                event,
                f"overall epsilon would go from {self.overall_epsilon:.6g} to {requested:.6g} at delta "
                f"{self.budget.delta:g}, over the run budget of {self.budget.epsilon:g}",
            )
        return requested

    def _refuse(self, release_id: str, firms: Sequence[str], event: dpa.DpEvent, reason: str) -> NoReturn:
        self._writer.append(
            "refusal",
            {"release_id": release_id, "firms": sorted(firms), "event": event_to_json(event), "reason": reason},
        )
        raise BudgetExhausted(f"release '{release_id}' refused: {reason}")
