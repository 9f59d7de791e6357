"""What a report shows, read from a run directory and checked: the summary, the rounds, the ledger's audit.

Every file is parsed once into pydantic models here, so the plots and the page never see raw dicts;
a file that does not have the expected shape ends the report with an error naming the file and field.
The privacy figures are not taken from the summary: the ledger is verified and its epsilon recomputed
by the auditor's own code (`privacy.ledger.verify_ledger`), and a ledger that fails shows as failed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from silobridge.errors import ConfigError
from silobridge.federation.ledger_audit import audit_ledger_file
from silobridge.federation.rundir import CONFIG_FILE, FAILURE_FILE, METRICS_FILE, SUMMARY_JSON
from silobridge.privacy.ledger import AuditReport
from silobridge.privacy.ledger.verdict import Judgement, judge

LEDGER_FILE = "privacy_ledger.jsonl"
REPORT_FILE = "report.html"

Number = float | None


class _Model(BaseModel):
    # Runs written by later versions may carry more fields; the ones read here must be as expected.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Levels(_Model):
    """Efficiency levels: production E, organisational O, innovation I, and TFP = E x O x I."""

    E: Number
    O: Number  # noqa: E741 -- the README's symbols (Cross-firm efficiency)
    I: Number  # noqa: E741
    TFP: Number


class Rates(_Model):
    """Improvement rates after / before."""

    K_E: Number
    K_O: Number
    K_I: Number
    K_TFP: Number


class EfficiencyBlock(_Model):
    before: Levels
    after: Levels
    K: Rates


class EfficiencyDp(_Model):
    epsilon: float
    delta: float
    noise_multiplier: Number


class Efficiency(_Model):
    """`summary.json["efficiency"]`: the inventory simulation before and after federation."""

    horizon: int
    policy: dict[str, float | int | str | bool | None]
    dp: EfficiencyDp | None
    chain: EfficiencyBlock
    tiers: dict[str, EfficiencyBlock]  # published groups only
    min_firms_per_group: int | None = None
    suppressed_tiers: dict[str, str] = {}  # tier -> why it is not published on its own


class Acceptance(_Model):
    name: str
    value: Number
    target: str
    passed: bool | None


class Dropout(_Model):
    """A firm left out of a stage (no answer, a bad message, its budget spent) or an aborted secure sum."""

    stage: str
    firm: str | None = None
    reason: str
    message: str | None = None


class FirmRow(_Model):
    """Simulation only: what one firm deployed and what going alone would have given it."""

    firm: str
    group: str
    choice: str
    reason: str
    shrinkage: Number = None
    deployed_wape: Number = None
    local_only_wape: Number = None
    ratio: Number = None
    deployed_roc_auc: Number = None
    local_only_roc_auc: Number = None
    difference: Number = None
    test_events: int | None = None


class PerFirm(_Model):
    """`summary.json["models"][kind]["per_firm"]`: every firm's row and the worst of them."""

    firms: list[FirmRow]
    worst_ratio: Number = None
    worst_difference: Number = None
    mean_difference: Number = None
    min_test_events: int | None = None  # risk: the worst difference is over firms with this many test events
    few_test_events: dict[str, Number] = {}  # risk: the others' differences, reported apart


class Summary(_Model):
    run_id: str
    created: str | None = None
    scenario: dict[str, Any]
    federation: dict[str, Any]
    privacy: dict[str, Any]
    stopped: str | None = None
    models: dict[str, dict[str, dict[str, dict[str, Number]]]]
    acceptance: list[Acceptance]
    dropouts: list[Dropout]
    seconds: Number = None
    stage_seconds: dict[str, float] = {}
    versions: dict[str, str] = {}
    efficiency: Efficiency | None = None
    groups_withheld: dict[str, str] = {}  # per model: why small/large are not released on their own
    per_firm: dict[str, PerFirm] = {}  # per model, moved out of `models` when read

    @model_validator(mode="before")
    @classmethod
    def _per_firm_out_of_models(cls, data: Any) -> Any:
        """`models[kind]` holds the methods' metrics and, for a simulated run, its `per_firm` rows."""
        if isinstance(data, dict) and isinstance(data.get("models"), dict):
            models = {k: dict(v) if isinstance(v, dict) else v for k, v in data["models"].items()}
            per_firm = {k: v.pop("per_firm") for k, v in models.items() if isinstance(v, dict) and "per_firm" in v}
            data = {**data, "models": models, "per_firm": per_firm}
        return data


class RoundRecord(_Model):
    """One line of metrics.jsonl: a round of one model, with the test metrics of `evaluated_round`'s model."""

    round: int
    model: str
    firms: int
    train_loss: Number = None
    clipped_values: int = 0
    evaluated_round: int
    metrics: dict[str, dict[str, Number]] | None = None  # None: not measured (a real federation under DP)
    epsilon: Number = None
    clip_norm: Number = None  # adaptive clipping: the clip norm this round's firms were sent
    seconds: Number = None


@dataclass(frozen=True)
class PrivacyStep:
    """The spend after one round (or query): every release whose id starts `<label>/`, replayed in order."""

    label: str
    epsilon_overall: float
    epsilon_min: float  # over the parties charged so far
    epsilon_max: float


@dataclass(frozen=True)
class PrivacyAudit:
    """The ledger's verdict: `report` when it verified, `error` (and the bad entry) when it did not."""

    ledger: Path
    report: AuditReport | None = None
    error: str | None = None
    entry: int | None = None
    steps: tuple[PrivacyStep, ...] = ()
    firm_budgets: dict[str, float] = field(default_factory=dict)  # own budgets from the verified header
    problems: tuple[str, ...] = ()  # where the summary disagrees with the ledger

    @property
    def verified(self) -> bool:
        """Chain and signatures hold and the summary agrees (the key's origin is in `judgement`)."""
        return self.report is not None and not self.problems

    @property
    def judgement(self) -> Judgement:
        """The same verdict `silobridge audit` gives (incomplete, self-signed, over budget, failed)."""
        return judge(self.report, self.problems, self.error)

    @property
    def verdict(self) -> str:
        return self.judgement.text


@dataclass(frozen=True)
class RunData:
    """Everything the report shows about one run."""

    path: Path
    summary: Summary | None
    failure: str | None
    rounds: tuple[RoundRecord, ...]
    config: dict[str, Any]
    audit: PrivacyAudit | None  # None: the run has no ledger and claims no DP
    notes: tuple[str, ...] = field(default=())


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"cannot read JSON: {err}", source=str(path)) from None


def _validation_error(err: ValidationError, path: Path, prefix: str = "") -> ConfigError:
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return ConfigError(f"{first['msg']} ({err.error_count()} problem(s))", source=str(path), field=prefix + where)


def load_summary(path: Path) -> Summary:
    try:
        return Summary.model_validate(_read_json(path))
    except ValidationError as err:
        raise _validation_error(err, path) from None


def load_rounds(path: Path) -> tuple[RoundRecord, ...]:
    if not path.exists():
        return ()
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(RoundRecord.model_validate(json.loads(line)))
        except ValueError as err:  # json.JSONDecodeError and ValidationError are both ValueErrors
            raise ConfigError(f"line {number}: {err}", source=str(path)) from None
    return tuple(records)


def _step_label(release_id: str) -> str:
    """The round (or query) a release belongs to: record-level DP charges `round-3/demand` and `round-3/risk`."""
    return release_id.split("/", 1)[0]


def privacy_steps(report: AuditReport) -> tuple[PrivacyStep, ...]:
    """The recomputed spend after each round, from the audit's per-release replay."""
    spent: dict[str, float] = {}
    steps: dict[str, PrivacyStep] = {}
    for release in report.releases:
        spent.update(release.epsilon_firms)
        label = _step_label(release.release_id)
        values = [v for v in spent.values() if math.isfinite(v)] or [math.inf]
        steps.pop(label, None)  # a later release of the same round moves the round to its end
        steps[label] = PrivacyStep(label, release.epsilon_overall, min(values), max(values))
    return tuple(steps.values())


def audit_ledger(
    ledger: Path, public_key: str | None = None, *, run_dir: Path | None = None, federation: Path | None = None
) -> PrivacyAudit:
    """Verify the ledger with the auditor's code (`federation.ledger_audit`, as `silobridge audit` does);
    a tampered ledger is a verdict, not an exception. `public_key` or `federation` give the trusted key."""
    audit = audit_ledger_file(ledger, run_dir=run_dir, public_key=public_key, federation=federation)
    if audit.report is None:
        return PrivacyAudit(ledger, error=audit.error, entry=audit.entry)
    header = json.loads(ledger.read_text(encoding="utf-8").split("\n", 1)[0])  # verified just above
    budgets = {party: float(b["epsilon"]) for party, b in header.get("firm_budgets", {}).items()}
    return PrivacyAudit(
        ledger, report=audit.report, steps=privacy_steps(audit.report), firm_budgets=budgets, problems=audit.problems
    )


CRASHED = "the run stopped without writing summary.json or failure.json (killed, or the machine went down)"


def load_run(run_dir: Path, *, public_key: str | None = None, federation: Path | None = None) -> RunData:
    """Read and check a run directory (a finished run, a private run that failed or was interrupted and kept
    its ledger, or the hidden partial folder a crash left with a ledger in it)."""
    if not run_dir.is_dir():
        raise ConfigError("not a run directory", source=str(run_dir))
    summary_path, failure_path = run_dir / SUMMARY_JSON, run_dir / FAILURE_FILE
    summary = load_summary(summary_path) if summary_path.exists() else None
    failure = None
    if failure_path.exists():
        failure = str(_read_json(failure_path).get("error", "unknown error"))
    elif summary is None and (run_dir / LEDGER_FILE).exists():
        failure = CRASHED  # a crash left the ledger: it must still be readable and audited
    if summary is None and failure is None:
        raise ConfigError(f"has neither {SUMMARY_JSON} nor {FAILURE_FILE}: not a run directory", source=str(run_dir))
    config = _read_json(run_dir / CONFIG_FILE) if (run_dir / CONFIG_FILE).exists() else {}
    notes: list[str] = []
    ledger = run_dir / LEDGER_FILE
    claims_dp = summary is not None and bool(summary.privacy.get("enabled"))
    audit: PrivacyAudit | None = None
    if ledger.exists():
        audit = audit_ledger(ledger, public_key, run_dir=run_dir, federation=federation)
        if public_key is None and federation is None:
            notes.append(
                "no trusted key given (--config or --public-key): the ledger was checked against the key in its "
                "own header only"
            )
    elif claims_dp:
        audit = PrivacyAudit(ledger, error=f"the summary says DP was on, but there is no {LEDGER_FILE}")
    return RunData(
        path=run_dir,
        summary=summary,
        failure=failure,
        rounds=load_rounds(run_dir / METRICS_FILE),
        config=config if isinstance(config, dict) else {},
        audit=audit,
        notes=tuple(notes),
    )
