"""Running analytics queries over a federation: in memory (tests, benchmarks) or as a Flower simulation.

Both halves meet here only: the server's plans (`server.query_plans`) and the firms' halves
(`clients.query_answers`). Every step is one sum of the firms' clipped vectors -- in the clear, through
the real SecAgg protocol in memory, or over Flower messages with the same secure-sum path training
uses -- and the engine adds the DP noise and writes the ledger. `run_queries` runs a list of
queries over a scenario's firms in a Flower simulation and writes a run directory whose ledger
`silobridge audit` verifies; the session is checkpointed after every step, and `resume=` continues one
that a crash or Ctrl-C stopped (`federation.query_resume`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dp_accounting as dpa
import numpy as np
from flwr.app import ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from silobridge.clients.data import FirmData
from silobridge.clients.query_answers import answer_step
from silobridge.contract.config import AggregationSpec
from silobridge.contract.query_protocol import QUERY_SEGMENT, UNITS, QueryPlan, QueryStep, Unit
from silobridge.contract.wire_names import QUERY_ANALYTICS
from silobridge.errors import BudgetExhausted, ConfigError, FederationError, SiloBridgeError
from silobridge.federation.coordinator import Federation, RunObserver
from silobridge.federation.firm_source import pilot_folders, validate_pilot
from silobridge.federation.launch import launch
from silobridge.federation.ledger_signer import ledger_signer
from silobridge.federation.progress import LogObserver
from silobridge.federation.query_resume import QueryProgress
from silobridge.federation.records import ANALYTICS
from silobridge.federation.resume import RUN_KEY_FILE, Checkpoints, changed_scenario_field
from silobridge.federation.rundir import CONFIG_FILE, RunDirectory, live_runs
from silobridge.federation.settings import NODES, QUERIES_KEY, RunSettings, settings_from_run_config
from silobridge.privacy.dp import Budget, epsilon
from silobridge.privacy.ledger import PrivacyRun, config_hash, public_key_hex
from silobridge.privacy.secagg.layout import CLIPPED
from silobridge.privacy.secagg.simulate import InMemoryFederation
from silobridge.scenarios.generator import catalogue_items
from silobridge.scenarios.schema import load_scenario
from silobridge.server.layouts import query_layout
from silobridge.server.query_plans import build_plan
from silobridge.server.query_plans.engine import (
    QueryEngine,
    QueryOutcome,
    QueryPrivacy,
    StepSum,
    SumStep,
    calibrate_query_noise,
    query_accounting,
)
from silobridge.server.query_plans.kmeans import KMeansPlan

QUERIES_FILE = "queries.json"

log = logging.getLogger("silobridge")


# -- in memory ------------------------------------------------------------------------------------


def plain_sum_step(firms: Sequence[FirmData]) -> SumStep:
    """Every firm answers in turn; the answers are added in the clear (the reference path of the tests)."""

    def sum_step(step: QueryStep) -> StepSum:
        answers = {data.firm_id: answer_step(step, data) for data in firms}
        total = np.sum([a.vector for a in answers.values()], axis=0)
        return StepSum(total, tuple(sorted(answers)), sum(a.clipped for a in answers.values()))

    return sum_step


class SecAggSumStep:
    """Every step through the real SecAgg+ protocol in memory: quantise, mask, unmask, decode.

    One key session serves `rounds_per_session` steps, as in a run; `aggregation` must be resolved
    for the number of firms (`server.secure_sum.resolve_aggregation`).
    """

    def __init__(self, firms: Sequence[FirmData], aggregation: AggregationSpec, *, run_id: str = "in-memory-queries"):
        self.firms = {data.firm_id: data for data in firms}
        self.aggregation = aggregation
        self.params = aggregation.secagg_params()
        self.federation = InMemoryFederation(self.firms, self.params, run_id=run_id)
        self.next_round = 1
        self.session_end = 1
        self.rng = np.random.default_rng()

    def __call__(self, step: QueryStep) -> StepSum:
        layout = query_layout(step.length, step.value_bound, self.aggregation)
        vectors = {}
        for firm, data in self.firms.items():
            answer = answer_step(step, data)
            segments = {QUERY_SEGMENT: answer.vector}
            clipped = layout.count_clipped(segments) + answer.clipped
            vectors[firm], _ = layout.encode({**segments, CLIPPED: np.array([clipped])}, self.rng, firm=firm)
        if self.next_round >= self.session_end:
            self.federation.open_session(self.next_round)
            self.session_end = self.next_round + self.params.rounds_per_session
        result = self.federation.run_round(self.next_round, vectors)
        self.next_round += 1
        decoded = layout.decode(result.total, len(self.firms))
        contributors = tuple(sorted(result.record.contributors))
        return StepSum(decoded[QUERY_SEGMENT], contributors, int(round(float(decoded[CLIPPED][0]))))


# -- a Flower simulation --------------------------------------------------------------------------


@dataclass(frozen=True)
class QueryRequest:
    """One query of a run: its name and raw parameters (validated when the run is planned)."""

    name: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class QueryBudget:
    """DP for a run of queries: the run's (epsilon, delta), the accountant, optionally a fixed noise, and
    the unit of privacy (`record`, the default, or `firm`)."""

    epsilon: float
    delta: float
    accountant: str = "rdp"
    noise_multiplier: float | None = None
    unit: Unit = "record"


@dataclass(frozen=True)
class QueryJob:
    """What a run of queries asks, as the run config's `queries` key carries it to a ServerApp under `flwr run`.

    One JSON object: {"queries": [{"query": ..., "params": {...}}, ...], "privacy": budget or null}.
    Single quotes are written as JSON escapes, so the text fits a TOML literal string on `flwr run
    --run-config` (Flower's parser allows no escapes inside quotes).
    """

    requests: tuple[QueryRequest, ...]
    budget: QueryBudget | None

    def to_run_config(self) -> str:
        payload = {
            "queries": [{"query": r.name, "params": dict(r.params)} for r in self.requests],
            "privacy": None if self.budget is None else vars(self.budget),
        }
        return json.dumps(payload, sort_keys=True).replace("'", "\\u0027")

    @classmethod
    def from_run_config(cls, text: str) -> QueryJob:
        """The run config's `queries` text, checked: every malformed part is named."""
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as err:
            raise ConfigError(f"not JSON: {err}", source="run config", field=QUERIES_KEY) from None
        if not isinstance(payload, dict) or set(payload) != {"queries", "privacy"}:
            raise ConfigError(
                "expected a JSON object with keys 'queries' and 'privacy'", source="run config", field=QUERIES_KEY
            )
        entries = payload["queries"]
        if not isinstance(entries, list) or not entries:
            raise ConfigError("'queries' must be a non-empty list", source="run config", field=QUERIES_KEY)
        requests = []
        for i, entry in enumerate(entries):
            if not (
                isinstance(entry, dict)
                and set(entry) == {"query", "params"}
                and isinstance(entry["query"], str)
                and isinstance(entry["params"], dict)
            ):
                raise ConfigError(
                    "expected {'query': NAME, 'params': {...}}", source="run config", field=f"{QUERIES_KEY}.{i}"
                )
            requests.append(QueryRequest(entry["query"], entry["params"]))
        privacy = payload["privacy"]
        budget = None
        if privacy is not None:
            try:
                budget = QueryBudget(
                    epsilon=float(privacy["epsilon"]),
                    delta=float(privacy["delta"]),
                    accountant=str(privacy.get("accountant", "rdp")),
                    noise_multiplier=None
                    if privacy.get("noise_multiplier") is None
                    else float(privacy["noise_multiplier"]),
                    unit=str(privacy.get("unit", "record")),  # type: ignore[arg-type]  # checked below
                )
            except (TypeError, KeyError, ValueError) as err:
                raise ConfigError(
                    f"expected epsilon, delta, accountant and noise_multiplier: {err!r}",
                    source="run config",
                    field=f"{QUERIES_KEY}.privacy",
                ) from None
            check_budget(budget, source="run config")
        return cls(tuple(requests), budget)


def check_query_privacy(settings: RunSettings, budget: QueryBudget | None, queries: Sequence[str] = ()) -> None:
    """Exact answers (no DP) from a real federation only where its federation file turns DP off.

    The partners agreed to that file; the coordinator alone may not drop the noise on their data, so a
    `--set privacy.enabled=false` override does not count. (A guard against mistakes: the coordinator
    adds the noise, and the partners trust it to.)
    """
    if (
        budget is None
        and settings.data == NODES
        and (settings.scenario.privacy.enabled or load_scenario(settings.scenario_path).privacy.enabled)
    ):
        raise ConfigError(
            f"{settings.scenario_path.name} enables differential privacy ([privacy] enabled = true), so the "
            "partners' answers are released only with noise under a budget: drop --no-dp",
            source=str(settings.scenario_path),
            field="privacy.enabled",
        )
    if budget is not None:
        check_budget(budget, queries=queries)


@dataclass(frozen=True)
class QueryRunResult:
    path: Path
    outcomes: list[QueryOutcome]
    noise_multiplier: float | None
    public_key: str | None
    seconds: float


def query_settings(run_config: Mapping[str, Any]) -> RunSettings:
    """A query run's settings: the scenario's training DP is off, since queries are accounted by their own budget."""
    return settings_from_run_config({**run_config, "dp": "off"})


def with_scenario_defaults(settings: RunSettings, requests: Sequence[QueryRequest]) -> list[QueryRequest]:
    """Parameters a generated scenario can supply publicly: `frequent_itemsets` defaults its `items` to the
    scenario's catalogue (item names are public; a pilot's or a network's firms must name theirs)."""
    completed = []
    for request in requests:
        if request.name == "frequent_itemsets" and "items" not in request.params and settings.data == "generated":
            request = QueryRequest(request.name, {**request.params, "items": list(catalogue_items(settings.scenario))})
        completed.append(request)
    return completed


def plan_queries(
    settings: RunSettings, requests: Sequence[QueryRequest], *, noise_multiplier: float = 0.0, unit: Unit = "record"
) -> list[QueryPlan]:
    """Every query's parameters checked against the federation's schema before anything starts.

    `noise_multiplier` and `unit` are the engine's: plans with DP thresholds scale them with both.
    """
    if not requests:
        raise ConfigError("give at least one query", field="query")
    plans = [
        build_plan(r.name, r.params, settings.spec.data, noise_multiplier=noise_multiplier, unit=unit) for r in requests
    ]
    firms = len(settings.scenario.firms)
    for plan in plans:
        if isinstance(plan, KMeansPlan) and plan.params.k > firms * plan.params.points_per_firm:
            raise ConfigError(
                f"query 'kmeans': k = {plan.params.k} is more than the at most {firms * plan.params.points_per_firm} "
                f"points the {firms} firms can contribute ({plan.params.points_per_firm} each)",
                field="params.k",
            )
    return plans


def noised_plans(
    settings: RunSettings, requests: Sequence[QueryRequest], budget: QueryBudget
) -> tuple[list[QueryPlan], float]:
    """The plans and the noise multiplier: calibrated on the planned steps, then given to the plans.

    A plan's `planned_steps` depends on its parameters only, so planning again with the noise cannot
    change what was calibrated; it is checked all the same.
    """
    check_budget(budget, queries=[r.name for r in requests])
    drafts = plan_queries(settings, requests, unit=budget.unit)
    noise = _noise(drafts, budget)
    plans = plan_queries(settings, requests, noise_multiplier=noise, unit=budget.unit)
    if [p.planned_steps for p in plans] != [d.planned_steps for d in drafts]:
        raise FederationError("a query's planned steps changed with the noise multiplier; the calibration is void")
    preview_session(plans, noise, budget)
    return plans, noise


def preview_session(plans: Sequence[QueryPlan], noise_multiplier: float, budget: QueryBudget) -> dict[str, Any]:
    """What the whole session will spend if every query makes all its planned releases; refused if over budget.

    Every step is a Gaussian release at `noise_multiplier` (its sensitivity cancels), so the session is
    their composition: under record level each firm's account (every firm is in every step at most),
    under firm level the run's. Checked before any firm is contacted and before anything is written.
    """
    releases = sum(plan.planned_steps for plan in plans)
    spec = query_accounting(budget.accountant, budget.unit)
    event = dpa.SelfComposedDpEvent(dpa.GaussianDpEvent(noise_multiplier), releases)
    spent = epsilon([event], budget.delta, spec)
    preview = {
        "queries": [{"query": plan.name, "planned_releases": plan.planned_steps} for plan in plans],
        "releases": releases,
        "noise_multiplier": noise_multiplier,
        "epsilon": spent,
        "delta": budget.delta,
        "unit": budget.unit,
    }
    if spent > budget.epsilon:
        listed = ", ".join(f"'{plan.name}' ({plan.planned_steps})" for plan in plans)
        raise BudgetExhausted(
            f"the session's {releases} planned release(s) [{listed}] at noise multiplier {noise_multiplier:g} "
            f"would spend epsilon {spent:.6g} at delta {budget.delta:g}, over the budget of {budget.epsilon:g}: "
            "refused before any firm was contacted"
        )
    return preview


def _noise(plans: Sequence[QueryPlan], budget: QueryBudget) -> float:
    """One noise multiplier for every step of every query, so that all of them together spend the budget."""
    if budget.noise_multiplier is not None:
        return budget.noise_multiplier
    releases = sum(plan.planned_steps for plan in plans)
    return calibrate_query_noise(
        releases, Budget(budget.epsilon, budget.delta), query_accounting(budget.accountant, budget.unit)
    )


def check_budget(budget: QueryBudget, *, source: str = "command line", queries: Sequence[str] = ()) -> None:
    """A query budget that cannot be met or means nothing is refused before anything starts or is written."""
    if queries:
        source = f"{source}, {'query' if len(queries) == 1 else 'queries'} {', '.join(repr(q) for q in queries)}"
    if not (math.isfinite(budget.epsilon) and budget.epsilon > 0):
        raise ConfigError(f"epsilon must be a positive number, got {budget.epsilon:g}", source=source, field="epsilon")
    if not (math.isfinite(budget.delta) and 0 < budget.delta < 1):
        raise ConfigError(f"delta must lie in (0, 1), got {budget.delta:g}", source=source, field="delta")
    if budget.accountant not in ("rdp", "pld"):
        raise ConfigError(f"unknown accountant '{budget.accountant}' (rdp or pld)", source=source, field="accountant")
    z = budget.noise_multiplier
    if z is not None and not (math.isfinite(z) and z > 0):
        raise ConfigError(
            f"the noise multiplier must be a positive number, got {z:g} (for exact answers use --no-dp)",
            source=source,
            field="noise_multiplier",
        )
    if budget.unit not in UNITS:
        raise ConfigError(f"unit must be one of {', '.join(UNITS)}, got '{budget.unit}'", source=source, field="unit")


def _federation_sum_step(federation: Federation) -> SumStep:
    """A step's sum over Flower messages, through the runner's secure (or plain) sum."""

    def sum_step(step: QueryStep) -> StepSum:
        layout = query_layout(step.length, step.value_bound, federation.spec.aggregation)
        outcome = federation.release_sum(
            QUERY_ANALYTICS,
            {ANALYTICS: ConfigRecord(step.to_config())},
            layout,
            list(federation.manifests),
            f"query {step.query} step {step.step}",
        )
        if not outcome.contributors:
            raise FederationError(f"query '{step.query}' step {step.step}: no firm contributed; see the dropout log")
        clipped = int(round(float(outcome.segments[CLIPPED][0])))
        return StepSum(outcome.segments[QUERY_SEGMENT], tuple(outcome.contributors), clipped)

    return sum_step


def session_config(
    settings: RunSettings, requests: Sequence[QueryRequest], budget: QueryBudget | None, noise: float | None
) -> dict[str, Any]:
    """What config.json records of a session (as JSON reads it back): a resumed session must ask the same."""
    config = {
        "run_config": settings.to_run_config(),
        "scenario": settings.scenario.model_dump(mode="json"),
        "queries": [{"query": r.name, "params": dict(r.params)} for r in requests],
        "privacy": None if budget is None else {**vars(budget), "noise_multiplier": noise},
    }
    normalised: dict[str, Any] = json.loads(json.dumps(config, default=str))
    return normalised


def check_same_session(folder: Path, config: Mapping[str, Any]) -> None:
    """A resumed session keeps its plan and every setting: the first that differs is named. Only the parts
    `config` holds are compared (the plan can be checked before the budget is planned)."""
    path = folder / CONFIG_FILE
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError(f"unreadable session configuration: {err}", source=str(path)) from None
    if not isinstance(recorded, dict):
        raise ConfigError("unreadable session configuration: not a JSON object", source=str(path))
    changed = changed_scenario_field({key: recorded.get(key) for key in config}, dict(config))
    if changed is not None:
        raise ConfigError(
            f"'{changed}' differs from the session as it started (the plan, an option, the scenario file or its "
            "data changed since): a resumed session keeps its plan and every setting; start a new session instead",
            source=str(path),
            field=changed,
        )


def resumable_session(folder: Path) -> Path:
    """The folder of a query session that a crash or Ctrl-C stopped; a completed one is refused (nothing to
    resume), and so is a simulation's run directory."""
    if (folder / QUERIES_FILE).exists():
        raise ConfigError(
            f"{folder} holds a completed query session ({QUERIES_FILE}): nothing to resume", field="--resume"
        )
    rundir = RunDirectory.resume(folder)  # no config.json, a summary, or both folders of the run: refused
    recorded = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    if not isinstance(recorded, dict) or "queries" not in recorded:
        raise ConfigError(
            f"{folder} holds a simulation, not a query session: resume it with silobridge simulate --resume",
            field="--resume",
        )
    return rundir.final if rundir.final.exists() else rundir.partial


@dataclass(frozen=True)
class RecordedSession:
    """A stopped session as its config.json records it: what `silobridge query --resume` continues."""

    run_config: dict[str, Any]
    requests: list[QueryRequest]
    budget: QueryBudget | None


def recorded_session(folder: Path) -> RecordedSession:
    """The run config, queries and budget a session started with (its calibrated noise multiplier fixed)."""
    path = resumable_session(folder) / CONFIG_FILE
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        requests = [QueryRequest(str(q["query"]), dict(q["params"])) for q in recorded["queries"]]
        privacy = recorded["privacy"]
        budget = (
            None
            if privacy is None
            else QueryBudget(
                epsilon=float(privacy["epsilon"]),
                delta=float(privacy["delta"]),
                accountant=str(privacy["accountant"]),
                noise_multiplier=float(privacy["noise_multiplier"]),
                unit=privacy["unit"],
            )
        )
        # `query` has no --rounds or --seed: the recorded values are the scenario's own, which, parsed again
        # as overrides, would be added to 'set' (then the session would differ from itself)
        run_config = {**recorded["run_config"], "num-rounds": 0, "seed": -1}
        return RecordedSession(run_config, requests, budget)
    except (KeyError, TypeError, ValueError) as err:
        raise ConfigError(f"unreadable session configuration: {err!r}", source=str(path)) from None


def session_rng(settings: RunSettings) -> np.random.Generator:
    """The coordinator's noise: fresh OS entropy; a simulation's --noise-seed fixes it (experiments only)."""
    seed = settings.noise_seed if settings.simulated else None
    return np.random.default_rng(None if seed is None else [seed, 29])


def serve_queries(
    grid: Grid,
    settings: RunSettings,
    requests: Sequence[QueryRequest],
    budget: QueryBudget | None,
    *,
    flower_run_id: int,
    observer: RunObserver,
    resume: Path | None = None,
) -> QueryRunResult:
    """The coordinator's side: connect, open the ledger (under DP), run every query, write the run directory.

    Every completed step is checkpointed; `resume` is the folder of a stopped session to continue.
    """
    started = time.monotonic()
    check_query_privacy(settings, budget, [r.name for r in requests])
    pilot_folders(settings)  # a pilot's folder holds exactly the declared firms
    requests = with_scenario_defaults(settings, requests)
    plans, noise = (
        (plan_queries(settings, requests), None) if budget is None else noised_plans(settings, requests, budget)
    )
    config = session_config(settings, requests, budget, noise)
    if resume is not None:
        resume = resumable_session(resume)
        check_same_session(resume, config)
    opened = RunDirectory.resume(resume) if resume is not None else RunDirectory(settings.out_dir, settings.run_id)
    with opened as rundir, live_runs.hold(rundir):
        if resume is None:
            rundir.write_json(CONFIG_FILE, config)
        checkpoints = Checkpoints(rundir, config_hash(config), resuming=resume is not None)
        federation = Federation(grid, settings, observer, flower_run_id=flower_run_id)
        manifests = federation.connect()
        firms = sorted(m.firm_id for m in manifests.values())
        privacy, ledger, public_key = None, None, None
        rng = session_rng(settings) if budget is not None else None
        if budget is not None and noise is not None and rng is not None:
            ledger, public_key = _open_ledger(settings, checkpoints, config, budget, manifests.values())
            privacy = QueryPrivacy(ledger, noise, rng=rng, unit=budget.unit)
        progress = QueryProgress(checkpoints, rng, ledger, federation.dropped)
        if progress.replayable:
            observer.stage(f"resumed: {progress.replayable} completed step(s) replayed, no firm asked again")
        engine = QueryEngine(_federation_sum_step(federation), firms, privacy=privacy, log=progress)
        outcomes: list[QueryOutcome] = []
        try:
            for plan in plans:
                observer.stage(f"query {plan.name}")
                outcomes.append(engine.run(plan))
        except BaseException as err:
            live_runs.yield_to_interrupt()  # a pending Ctrl-C's handler closes the ledger as interrupted instead
            if ledger is not None:
                ledger.close(f"aborted: {type(err).__name__}: {err}")
            raise
        if ledger is not None:
            ledger.close()
        seconds = round(time.monotonic() - started, 3)
        rundir.write_json(
            QUERIES_FILE,
            {
                "queries": [o.to_dict() for o in outcomes],
                "preview": None if budget is None or noise is None else preview_session(plans, noise, budget),
                "noise_multiplier": noise,
                "public_key": public_key,
                "aggregation": federation.describe_aggregation(),
                "dropped": federation.dropped,
                "seconds": seconds,
            },
        )
        (rundir.partial / RUN_KEY_FILE).unlink(missing_ok=True)  # a completed session is never resumed
        path = rundir.commit()
    return QueryRunResult(path, outcomes, noise, public_key, seconds)


def _open_ledger(
    settings: RunSettings,
    checkpoints: Checkpoints,
    config: Mapping[str, Any],
    budget: QueryBudget,
    manifests: Any,
) -> tuple[PrivacyRun, str]:
    """The session's ledger, started or (a resumed session) reopened as a training run's is
    (`Checkpoints.open_ledger`), under the federation's long-term key or one made for this session."""
    key, key_kind = ledger_signer(settings)
    key = checkpoints.signing_key(key, key_kind)
    ledger = checkpoints.open_ledger(
        key,
        key_kind,
        lambda path: PrivacyRun.start(
            path,
            run_id=settings.run_id,
            config_sha256=config_hash(config),
            budget=Budget(budget.epsilon, budget.delta),
            signing_key=key,
            key_kind=key_kind,
            spec=query_accounting(budget.accountant, budget.unit),
            firm_budgets={
                m.firm_id: Budget(m.budget_epsilon, budget.delta) for m in manifests if m.budget_epsilon is not None
            },
        ),
    )
    return ledger, public_key_hex(key.public_key())


def run_queries(
    run_config: Mapping[str, Any],
    requests: Sequence[QueryRequest],
    budget: QueryBudget | None,
    *,
    observer: RunObserver | None = None,
    cpus: int | None = None,
    resume: Path | None = None,
) -> QueryRunResult:
    """Run `requests` over the scenario's firms in an in-process Flower simulation (secure sums by default).

    `resume`: the folder of a stopped session to continue after its last completed step (`recorded_session`
    gives what it started with); a changed plan or setting is refused, naming it, before anything starts.

    `run_config` is the flat run config of `silobridge simulate` (scenario, overrides, aggregation,
    out-dir, run-id, and `data` for a pilot on per-firm CSV folders, each validated first); the
    training DP of the scenario is not used: queries are accounted by `budget`.
    """
    from silobridge.federation.client_app import build_client_app

    settings = query_settings(run_config)
    if settings.data == NODES:
        raise ConfigError(
            "a simulation cannot read the partners' nodes: run queries over a real federation with `flwr run` "
            "(`silobridge query FEDERATION.toml QUERY --network`)",
            source="run config",
            field="data",
        )
    check_query_privacy(settings, budget, [r.name for r in requests])
    validate_pilot(settings)  # every firm's files, every problem reported, before anything starts
    if budget is not None:
        ledger_signer(settings)  # a missing or wrong ledger key, before anything starts
    requests = with_scenario_defaults(settings, requests)
    if resume is not None:  # a changed plan or setting is named before the budget is planned again
        resume = resumable_session(resume)
        planned = session_config(settings, requests, budget, None)
        check_same_session(resume, {key: planned[key] for key in ("run_config", "scenario", "queries")})
    # parameter errors surface before anything starts; under DP, the budget is checked and calibrated too
    if budget is None:
        noise = None
        plan_queries(settings, requests)
    else:
        noise = noised_plans(settings, requests, budget)[1]
    if resume is not None:
        check_same_session(resume, session_config(settings, requests, budget, noise))
    config = settings.to_run_config()
    results: list[QueryRunResult] = []
    errors: list[SiloBridgeError] = []
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            results.append(
                serve_queries(
                    grid,
                    settings,
                    requests,
                    budget,
                    flower_run_id=context.run_id,
                    observer=observer or LogObserver(),
                    resume=resume,
                )
            )
        except SiloBridgeError as err:  # raised again below, in the caller's thread, with its own message
            errors.append(err)

    launch(server_app, build_client_app(config), num_supernodes=len(settings.scenario.firms), cpus=cpus)
    if errors:
        raise errors[0]
    if not results:
        raise FederationError("the query run ended without a result; see the messages above")
    return results[0]
