"""One verdict on an audited ledger, shared by `silobridge audit` and `silobridge report`.

A ledger is "verified" only when its chain and signatures check under a key the auditor trusts
(given, or from the federation file), its run closed it with an end entry, and nothing else that
was written with it (the run's summary) disagrees. Everything short of that has its own verdict and
exit code, so that a script cannot mistake a crash prefix or a self-signed ledger for a clean audit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from silobridge.privacy.ledger.verify import AuditReport


class Verdict(enum.Enum):
    """From worst to best; each has its own exit code."""

    TAMPERED = 3  # chain, signature, schema, a recomputed total, the trusted key or the summary disagree
    OVER_BUDGET = 1  # verified, but the recomputed epsilon exceeds the run's or a firm's budget
    INCOMPLETE = 4  # no end entry: a crash prefix (possibly torn mid-line), or a ledger cut short
    UNTRUSTED_KEY = 5  # intact, but checked only against a key found in the run directory itself
    VERIFIED = 0

    @property
    def exit_code(self) -> int:
        return self.value


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    text: str


def judge(report: AuditReport | None, problems: tuple[str, ...] = (), error: str | None = None) -> Judgement:
    """The verdict on an audit: `report` when the ledger verified, `error` when it did not; `problems` are
    disagreements found by cross-checks outside the ledger (the summary written with it)."""
    if report is None:
        return Judgement(Verdict.TAMPERED, f"FAILED: {error}")
    if problems:
        return Judgement(Verdict.TAMPERED, "FAILED: " + "; ".join(problems))
    budget = report.budget
    spent = f"epsilon {report.epsilon_overall:.4f} of {budget.epsilon:g} at delta {budget.delta:g} (recomputed)"
    spent += _resumes(report)
    if not report.within_budget:
        return Judgement(Verdict.OVER_BUDGET, f"verified but OVER BUDGET: {spent}")
    if not report.ended:
        cut = (
            f"cut mid-line by a crash after entry {report.entries - 1}"
            if report.torn_tail
            else f"no end entry after {report.entries} entries"
        )
        return Judgement(
            Verdict.INCOMPLETE,
            f"INCOMPLETE: {cut}; the {report.entries} whole entries are intact and spend at least {spent}. "
            "A run that crashed or was cut short: the spend is a lower bound",
        )
    if not report.key_trusted:
        kind = "a per-run key" if report.key_kind == "per-run" else "a key"
        return Judgement(
            Verdict.UNTRUSTED_KEY,
            f"intact but signed by {kind} found only in the run directory (not checked against the federation "
            f"file's key or --public-key): whoever can edit the directory could have re-signed it; {spent}",
        )
    return Judgement(Verdict.VERIFIED, f"verified: chain and signatures intact under the trusted key, {spent}")


def _resumes(report: AuditReport) -> str:
    """A resumed run says so: after which checkpointed rounds, and any torn line it moved aside."""
    if not report.resumes:
        return ""
    parts = []
    for resume in report.resumes:
        torn = resume.get("torn_tail")
        moved = f", torn line of {torn['length']} bytes kept as {torn['kept_as']}" if torn else ""
        done = resume["checkpoint_round"]
        # a session without rounds (a query, the linear family) resumed after the releases its checkpoint charged
        after = f"round {done}" if done else f"{resume['checkpoint_releases']} release(s)"
        parts.append(f"after {after} (entry {resume['index']}{moved})")
    return "; resumed " + ", ".join(parts) + ", no release charged twice"
