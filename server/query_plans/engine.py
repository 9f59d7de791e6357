"""The query engine: drives a query's server half step by step over any way of summing the firms' vectors.

The engine knows nothing of Flower: `sum_step(step)` returns the (secure) sum of the firms' clipped
vectors for one step, however it was obtained (the Flower glue, the in-memory SecAgg protocol, a
plain sum in a test). Under DP the unit is the record by default: each firm bounds every record's
contribution (clipping to public ranges, caps), so one record moves a step's sum by at most the
step's `record_l2_bound`, and the step is a Gaussian release with noise std z x record_l2_bound
added here, to the secure sum (central DP: the coordinator sees only the noised sum). With unit
`firm` a firm's whole vector is the unit (noise std z x `l2_bound`), for federations of many firms.
Central rather than distributed noise: queries are a handful of releases whose sensitivity is tiny
next to the secure sum's float64 precision, and the firms already trust the coordinator to add
noise to the training sums; distributed shares would add rounding and per-firm noise that dropouts
leave short. Before any firm is contacted, the whole query (its planned steps) and then each step
are previewed against the run's budget; every step is recorded in the signed ledger as
`query-<n>/<name>/step-<k>`, charged to the firms whose vectors are in its sum (a firm that dropped
out of a step is not charged for it) and naming its unit, neighbouring relation and sensitivity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import dp_accounting as dpa
import numpy as np

from silobridge.contract.query_protocol import FIRM_NEIGHBOURS, UNITS, QueryPlan, QueryStep, Unit
from silobridge.errors import BudgetExhausted, ConfigError, FederationError
from silobridge.privacy.dp import Budget, Sampling, calibrate_noise_multiplier, central_round_event, epsilon
from silobridge.privacy.dp.accounting import AccountantKind, AccountingSpec, PrivacyUnit
from silobridge.privacy.ledger import PrivacyRun, Release


@dataclass(frozen=True)
class StepSum:
    """What one step released before noise: the sum, the firms in it, and how many entries they clipped."""

    total: np.ndarray
    contributors: tuple[str, ...]
    clipped: int = 0


SumStep = Callable[[QueryStep], StepSum]


def query_accounting(kind: str = "rdp", unit: Unit = "record") -> AccountingSpec:
    """Queries are accounted per record (each firm's own account; the run's epsilon is the largest
    firm's, the firms holding disjoint records) or per firm (one run account)."""
    if unit not in UNITS:
        raise ConfigError(f"must be one of {', '.join(UNITS)}, got '{unit}'", field="unit")
    return AccountingSpec(kind=AccountantKind(kind), unit=PrivacyUnit(unit))


def step_event(noise_multiplier: float, sensitivity: float) -> dpa.DpEvent:
    """One step: the Gaussian mechanism with noise std z x sensitivity on a sum of that L2 sensitivity."""
    return central_round_event(noise_multiplier, sensitivity, Sampling.none())


def calibrate_query_noise(releases: int, budget: Budget, spec: AccountingSpec | None = None) -> float:
    """The noise multiplier with which `releases` Gaussian steps spend at most `budget` (rounded up)."""
    if releases < 1:
        raise ConfigError(f"must be at least 1, got {releases}", field="releases")
    z = calibrate_noise_multiplier(
        lambda z: dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(z), releases), budget, spec or query_accounting()
    )
    return round(z, 4) + 1e-4


@dataclass(frozen=True)
class QueryPrivacy:
    """Central DP for queries: the run's ledger (budget and accounting) and the noise multiplier."""

    ledger: PrivacyRun
    noise_multiplier: float
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    unit: Unit = "record"

    def __post_init__(self) -> None:
        if not (np.isfinite(self.noise_multiplier) and self.noise_multiplier > 0):
            raise ConfigError(f"must be positive, got {self.noise_multiplier!r}", field="noise_multiplier")
        if self.unit not in UNITS:
            raise ConfigError(f"must be one of {', '.join(UNITS)}, got '{self.unit}'", field="unit")
        if self.ledger.spec.unit.value != self.unit:
            raise ConfigError(
                f"the ledger accounts unit '{self.ledger.spec.unit.value}', the queries unit '{self.unit}'",
                field="unit",
            )


@dataclass(frozen=True)
class StepReport:
    """One released step. `noise_std` is per entry of the step's vector (in the firms' scaled units,
    as the vector travels) = noise multiplier x `sensitivity` (the unit's L2 bound); `clipped` is how
    many entries the firms' clipping changed, summed."""

    step: int
    length: int
    l2_bound: float
    sensitivity: float | None
    contributors: int
    clipped: int
    noise_std: float
    release_id: str | None
    epsilon_after: float | None


@dataclass(frozen=True)
class ReplayedStep:
    """A step a resumed session completed before: its released (noised) vector and its report."""

    released: np.ndarray
    report: StepReport


class StepLog(Protocol):
    """Where a session keeps its completed steps, so that a resumed session replays them.

    A replayed step asks no firm and charges nothing: its released vector is the one the ledger charged.
    `complete` takes each new step once its noise is drawn, records its release (under DP) and returns
    the run's epsilon after it; the log decides how the ledger entry and its checkpoint are ordered.
    """

    def replay(self, release_id: str) -> ReplayedStep | None: ...

    def started(self, prefix: str) -> bool: ...

    def complete(
        self, release_id: str, released: np.ndarray, report: StepReport, release: Release | None
    ) -> float | None: ...


@dataclass(frozen=True)
class QueryOutcome:
    """A query's answer and what it cost: its own epsilon and the run's total after it (at the run's delta)."""

    query: str
    answer: dict[str, Any]
    steps: list[StepReport]
    epsilon: float | None
    epsilon_total: float | None
    delta: float | None
    unit: Unit | None = None
    neighbours: str | None = None
    noise_multiplier: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "query": self.query,
            "answer": self.answer,
            "privacy": None
            if self.epsilon is None
            else {
                "epsilon": self.epsilon,
                "epsilon_total": self.epsilon_total,
                "delta": self.delta,
                "unit": self.unit,
                "neighbours": self.neighbours,
                "noise_multiplier": self.noise_multiplier,
            },
            "steps": [vars(s) for s in self.steps],
        }


class QueryEngine:
    """Runs queries one after another over the same firms, numbering their releases `query-<n>`."""

    def __init__(
        self,
        sum_step: SumStep,
        firms: Sequence[str],
        *,
        privacy: QueryPrivacy | None = None,
        log: StepLog | None = None,
    ):
        if not firms:
            raise ConfigError("a query needs at least one firm", field="firms")
        self.sum_step = sum_step
        self.firms = sorted(firms)
        self.privacy = privacy
        self.log = log  # a resumable session's checkpoints (`federation.query_resume`); None: record directly
        self.queries = 0

    def run(self, plan: QueryPlan) -> QueryOutcome:
        self.queries += 1
        prefix = f"query-{self.queries}/{plan.name}"
        events: list[dpa.DpEvent] = []
        steps: list[StepReport] = []
        first = plan.first()
        step: QueryStep | None = first
        # a query a resumed session had begun was admitted then; admitting it again would count its
        # replayed steps twice
        if self.privacy is not None and not (self.log is not None and self.log.started(prefix)):
            self._admit_query(self.privacy, prefix, plan, first)
        while step is not None:
            if step.step >= plan.planned_steps or len(steps) >= plan.planned_steps:
                raise FederationError(
                    f"query '{plan.name}' asked for step {step.step} beyond its {plan.planned_steps} planned steps"
                )
            released, report, event = self._release(prefix, step, plan)
            steps.append(report)
            if event is not None:
                events.append(event)
            step = plan.next(released, report.contributors)
        answer = plan.result()
        if self.privacy is None:
            return QueryOutcome(plan.name, answer, steps, None, None, None)
        ledger = self.privacy.ledger
        own = epsilon(events, ledger.budget.delta, ledger.spec) if events else 0.0
        # the run's total after this query's last release (a resumed session's ledger may hold later ones)
        total = steps[-1].epsilon_after if steps and steps[-1].epsilon_after is not None else ledger.overall_epsilon
        return QueryOutcome(
            plan.name,
            answer,
            steps,
            own,
            total,
            ledger.budget.delta,
            self.privacy.unit,
            self._neighbours(plan),
            self.privacy.noise_multiplier,
        )

    def _neighbours(self, plan: QueryPlan) -> str:
        if self.privacy is None or self.privacy.unit == "firm":
            return FIRM_NEIGHBOURS
        return plan.neighbours

    def _admit_query(self, privacy: QueryPrivacy, prefix: str, plan: QueryPlan, first: QueryStep) -> None:
        """The whole query at the first step's sensitivity for every planned step, before anything is sent.

        Later steps are admitted one by one too, so a plan whose later steps are more sensitive is still
        stopped before it overspends; this check refuses early the queries that cannot fit at all.
        """
        event = step_event(privacy.noise_multiplier, first.sensitivity(privacy.unit))
        whole = event if plan.planned_steps == 1 else dpa.SelfComposedDpEvent(event, plan.planned_steps)
        try:
            self._admit(privacy, prefix, whole)
        except BudgetExhausted as err:
            ledger = privacy.ledger
            asked = epsilon([whole], ledger.budget.delta, ledger.spec)
            raise BudgetExhausted(
                f"query '{plan.name}' ({plan.planned_steps} release(s) at noise multiplier "
                f"{privacy.noise_multiplier:g}) refused before any firm was contacted: {err} (spent "
                f"{ledger.overall_epsilon:.6g} of the budget {ledger.budget.epsilon:g} at delta "
                f"{ledger.budget.delta:g}; this query alone asks {asked:.6g})"
            ) from None

    def _admit(self, privacy: QueryPrivacy, release_id: str, event: dpa.DpEvent) -> None:
        """Every firm must be able to pay: a query's answer is over all of them, none is left out quietly."""
        admission = privacy.ledger.admit(release_id, event, self.firms)
        if admission.excluded:
            spent = ", ".join(
                f"'{firm}' (spent {privacy.ledger.firm_epsilon(firm):.6g})" for firm in admission.excluded
            )
            raise BudgetExhausted(f"release '{release_id}' refused: firms over their own budgets: {spent}")

    def _release(
        self, prefix: str, step: QueryStep, plan: QueryPlan
    ) -> tuple[np.ndarray, StepReport, dpa.DpEvent | None]:
        privacy = self.privacy
        release_id = f"{prefix}/step-{step.step}"
        event = None
        sensitivity = None
        if privacy is not None:
            sensitivity = step.sensitivity(privacy.unit)
            event = step_event(privacy.noise_multiplier, sensitivity)
        replayed = self.log.replay(release_id) if self.log is not None else None
        if replayed is not None:  # completed before a resume: no firm asked, nothing charged again
            return np.array(replayed.released, dtype=np.float64, copy=True), replayed.report, event
        if privacy is not None and event is not None:
            self._admit(privacy, release_id, event)  # before any firm is contacted
        if privacy is not None:  # what the firms need to count their own spend (record level)
            step = step.model_copy(
                update={
                    "noise_multiplier": privacy.noise_multiplier,
                    "unit": privacy.unit,
                    "delta": privacy.ledger.budget.delta,
                    "accountant": privacy.ledger.spec.kind.value,
                }
            )
        summed = self.sum_step(step)
        total = np.asarray(summed.total, dtype=np.float64).reshape(-1)
        if total.shape != (step.length,):
            raise FederationError(f"{release_id}: the sum has {total.size} entries, the step {step.length}")
        noise_std = 0.0
        release = None
        if privacy is not None and event is not None and sensitivity is not None:
            noise_std = privacy.noise_multiplier * sensitivity
            total = total + privacy.rng.normal(0.0, noise_std, size=total.shape)
            charged = sorted(set(summed.contributors))
            unknown = sorted(set(charged) - set(self.firms))
            if unknown:
                raise FederationError(f"{release_id}: firms {unknown} contributed but are not in the federation")
            release = Release(
                release_id=release_id,
                mechanism="gaussian",
                event=event,
                firms=charged,  # a firm that dropped out of the step is not in its sum, and not charged
                noise_multiplier=privacy.noise_multiplier,
                clip_norm=sensitivity,
                parameters={
                    "query": step.query,
                    "step": step.step,
                    "length": step.length,
                    "value_bound": step.value_bound,
                    "unit": privacy.unit,
                    "neighbours": self._neighbours(plan),
                    "firm_l2_bound": step.l2_bound,
                    "contributors": len(summed.contributors),
                    "dropped": ",".join(sorted(set(self.firms) - set(charged))),
                    "clipped": summed.clipped,
                },
            )
        report = StepReport(
            step=step.step,
            length=step.length,
            l2_bound=step.l2_bound,
            sensitivity=sensitivity,
            contributors=len(summed.contributors),
            clipped=summed.clipped,
            noise_std=noise_std,
            release_id=release_id if privacy is not None else None,
            epsilon_after=None,
        )
        if self.log is not None:
            epsilon_after = self.log.complete(release_id, total, report, release)
        else:
            epsilon_after = (
                None if release is None or privacy is None else float(privacy.ledger.record(release)["overall"])
            )
        return total, replace(report, epsilon_after=epsilon_after), event
