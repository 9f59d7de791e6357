"""`query`: federated analytics (simulated, on a pilot's files, or over the network), the answer and its cost."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from silobridge.contract.seeds import MAX_NOISE_SEED
from silobridge.errors import ConfigError, SiloBridgeError
from silobridge.federation.cli.common import PilotData, fail, out_console, sub_app

if TYPE_CHECKING:
    from silobridge.federation.query_run import QueryBudget, QueryRequest

app = sub_app()


def parse_param_options(items: list[str]) -> dict[str, object]:
    """`--param k=v`: v is read as JSON when it is (numbers, lists, objects), else kept as text."""
    params: dict[str, object] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value, got '{item}'", source="command line", field="--param")
        try:
            params[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            params[key.strip()] = text
    return params


def check_query_options(
    *,
    name: str | None,
    plan: Path | None,
    params: list[str],
    accountant: str,
    unit: str,
    network: bool,
    data: Path | None,
    resume: bool = False,
) -> None:
    """Options that contradict each other, or name an unknown accountant or unit, refused before anything runs."""
    if accountant not in ("rdp", "pld"):
        raise ConfigError(
            f"unknown accountant '{accountant}' (rdp or pld)", source="command line", field="--accountant"
        )
    if network and data is not None:
        raise ConfigError(
            "--data pilots on folders here; over the network each partner reads its own files: choose one",
            source="command line",
            field="--data",
        )
    if not (resume and name is None and plan is None) and (name is None) == (plan is None):
        raise ConfigError(
            "name one query, or give --plan FILE for a session of several (not both)",
            source="command line",
            field="--plan" if plan is not None else "query",
        )
    if plan is not None and params:
        raise ConfigError(
            "--param belongs to a single query: put each query's params in the plan file",
            source="command line",
            field="--param",
        )
    if unit not in ("record", "firm"):
        raise ConfigError(f"unknown unit '{unit}' (record or firm)", source="command line", field="--unit")


def flatten_answer(answer: dict[str, object], prefix: str = "") -> list[tuple[str, str]]:
    """An answer's nested fields as (dotted name, text) rows: floats to 6 significant digits."""
    rows: list[tuple[str, str]] = []
    for key, value in answer.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += flatten_answer(value, f"{name}.")
        elif isinstance(value, float):
            rows.append((name, f"{value:.6g}"))
        elif isinstance(value, list) and value and all(isinstance(v, float) for v in value):
            rows.append((name, ", ".join(f"{v:.6g}" for v in value)))
        else:
            rows.append((name, str(value)))
    return rows


@app.command()
def query(
    scenario: Annotated[
        Path | None,
        typer.Argument(
            help="Scenario file (TOML), e.g. scenarios/default.toml; with --network, the federation file. "
            "Leave out with --resume.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Argument(
            help="The query: count, sum, mean, variance, histogram, quantiles, linear_regression, autoregression, "
            "logistic_regression, kmeans, frequent_itemsets (items default to a generated scenario's catalogue), "
            "anomaly_detection. Leave out with --plan."
        ),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option(
            "--param",
            help="A query parameter, key=value (JSON or text): --param column=units --param low=0 --param high=5000",
        ),
    ] = None,
    plan: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            help="A TOML file of \\[\\[query]] entries (name, params): run them all as one session, one run, one "
            "budget, one ledger; refused before any firm is contacted if its planned releases would overspend.",
        ),
    ] = None,
    epsilon: Annotated[
        float | None,
        typer.Option(
            help="Privacy budget of this run (the query, or every query of --plan together); default 1.0.",
            show_default=False,
        ),
    ] = None,
    unit: Annotated[
        str | None,
        typer.Option(
            help="Unit of privacy: 'record' (one row, basket, series or observation as each query states; "
            "the default) or 'firm' (a firm's whole contribution: for federations of hundreds of firms).",
            show_default=False,
        ),
    ] = None,
    delta: Annotated[float | None, typer.Option(help="Delta of the budget; default 1e-5.", show_default=False)] = None,
    noise_multiplier: Annotated[
        float | None,
        typer.Option(help="Fix the noise multiplier instead of calibrating it to spend the budget."),
    ] = None,
    accountant: Annotated[str | None, typer.Option(help="'rdp' (the default) or 'pld'.", show_default=False)] = None,
    no_dp: Annotated[
        bool,
        typer.Option(
            "--no-dp",
            help="No noise and no ledger: the exact answer, for comparison only (over a real federation only where "
            "the federation file turns DP off).",
        ),
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder that receives the run directory (default: runs).")
    ] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a scenario field, as for simulate.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Name of the run directory.")] = None,
    aggregation: Annotated[
        str | None, typer.Option(help="'secure' (the scenario's default) or 'plain' (sums in the clear).")
    ] = None,
    data: PilotData = None,
    network: Annotated[
        bool,
        typer.Option(
            "--network",
            help="Run over the real federation: `flwr run` on the SuperLink of the 'silobridge' connection in "
            "$FLWR_HOME, each partner's SuperNode answering from its own files.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer and its privacy cost as JSON.")] = False,
    ledger_key: Annotated[
        Path | None,
        typer.Option("--ledger-key", help="Sign the ledger with the federation's long-term key (keys --ledger)."),
    ] = None,
    noise_seed: Annotated[
        int | None,
        typer.Option(
            "--noise-seed",
            help="Fix the coordinator's DP noise and the simulated firms' secure-sum rounding (reproducible "
            "experiments); default: fresh OS entropy.",
            min=0,
            max=MAX_NOISE_SEED,
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue the session in this folder (left by a crash or Ctrl-C) after its last completed step (over "
            "the network with --network, as it ran), "
            "with the plan and settings it started with (any other plan or setting given is refused).",
        ),
    ] = None,
) -> None:
    """Run federated analytics queries (simulated, on a pilot's files, or over the network); print answers and cost.

    One query, or a session of several (--plan) under one budget. Each invocation is its own run with
    its own ledger and budget: separate invocations compose across runs, outside any one budget.
    """
    from silobridge.federation.network.runs import run_queries as run_network_queries
    from silobridge.federation.progress import log_to_stderr
    from silobridge.federation.query_plan import load_plan
    from silobridge.federation.query_run import QueryJob, QueryRequest, run_queries
    from silobridge.federation.run_requests import query_config

    try:
        check_query_options(
            name=name,
            plan=plan,
            params=param or [],
            accountant=accountant or "rdp",
            unit=unit or "record",
            network=network,
            data=data,
            resume=resume is not None,
        )
        requests = (
            load_plan(plan)
            if plan is not None
            else [QueryRequest(name, parse_param_options(param or []))]
            if name is not None
            else None
        )
        privacy = QueryPrivacyOptions(epsilon, delta, accountant, noise_multiplier, unit, no_dp)
        if scenario is None and resume is None:
            raise ConfigError("give the scenario file (or --resume RUN_DIR)", source="command line", field="scenario")
        run_config = (
            None
            if scenario is None
            else query_config(
                scenario,
                out or Path("runs"),
                overrides=set_ or [],
                run_id=run_id,
                aggregation=aggregation,
                data=data,
                ledger_key=ledger_key,
                noise_seed=noise_seed,
            )
        )
        if resume is not None:
            given = {  # the settings asked for on the command line, as run-config keys
                "scenario": scenario,
                "out-dir": out,
                "set": set_ or None,
                "run-id": run_id,
                "aggregation": aggregation,
                "data": data,
                "ledger-key": ledger_key,
                "noise-seed": noise_seed,
            }
            run_config, requests, budget = resumed_query_session(resume, run_config, given, requests, privacy)
            check_resumed_where(resume, run_config, network=network)
        else:
            budget = privacy.budget()
        if run_config is None or requests is None:  # both given, or both recorded
            raise ConfigError("give the scenario file and a query or --plan", source="command line", field="scenario")
        if network:
            answered = run_network_queries(run_config, QueryJob(tuple(requests), budget), resume=resume)
            outcomes, noise, path = answered.outcomes, answered.noise_multiplier, answered.path
        else:
            log_to_stderr()
            result = run_queries(run_config, requests, budget, resume=resume)
            outcomes, noise, path = [o.to_dict() for o in result.outcomes], result.noise_multiplier, result.path
    except SiloBridgeError as err:
        raise fail(err) from None
    shown = budget.epsilon if budget is not None else 1.0
    if plan is None and len(outcomes) == 1:
        print_query(outcomes[0], noise, path, epsilon=shown, as_json=as_json)
    elif as_json:
        out_console.print_json(
            json.dumps({"queries": outcomes, "noise_multiplier": noise, "run_dir": str(path)}, default=str)
        )
    else:
        for outcome in outcomes:
            print_query(outcome, noise, path, epsilon=shown, as_json=False)


@dataclass(frozen=True)
class QueryPrivacyOptions:
    """The budget options as given on the command line (None: not given, so the default or the recorded one)."""

    epsilon: float | None
    delta: float | None
    accountant: str | None
    noise_multiplier: float | None
    unit: str | None
    no_dp: bool

    def budget(self) -> QueryBudget | None:
        from silobridge.federation.query_run import QueryBudget

        if self.no_dp:
            return None
        return QueryBudget(
            1.0 if self.epsilon is None else self.epsilon,
            1e-5 if self.delta is None else self.delta,
            self.accountant or "rdp",
            self.noise_multiplier,
            (self.unit or "record"),  # type: ignore[arg-type]  # checked by check_query_options
        )


def resumed_query_session(
    folder: Path,
    run_config: dict[str, object] | None,
    given: dict[str, object],
    requests: list[QueryRequest] | None,
    privacy: QueryPrivacyOptions,
) -> tuple[dict[str, object], list[QueryRequest], QueryBudget | None]:
    """What a resumed session runs: the run config, queries and budget it recorded. Each option given must
    equal the recorded one (refused, naming the option); a plan given is checked against the recorded one
    when the session is planned again (`query_run.check_same_session`)."""
    from silobridge.federation.query_run import recorded_session
    from silobridge.federation.resume import resume_run_config

    recorded = recorded_session(folder)
    asked = run_config if run_config is not None else _asked_without_scenario(recorded.run_config, given)
    resume_run_config(folder, {key: asked[key] for key, value in given.items() if value is not None})
    budget = recorded.budget
    options = (privacy.epsilon, privacy.delta, privacy.accountant, privacy.noise_multiplier, privacy.unit)
    if (privacy.no_dp and budget is not None) or (budget is None and any(v is not None for v in options)):
        recorded_text = "without DP (--no-dp)" if budget is None else f"under DP (epsilon {budget.epsilon:g})"
        raise ConfigError(
            f"the session was started {recorded_text}: a resumed session keeps its budget",
            source=str(folder),
            field="--no-dp",
        )
    if budget is not None:
        for option, value, kept in (
            ("--epsilon", privacy.epsilon, budget.epsilon),
            ("--delta", privacy.delta, budget.delta),
            ("--accountant", privacy.accountant, budget.accountant),
            ("--noise-multiplier", privacy.noise_multiplier, budget.noise_multiplier),
            ("--unit", privacy.unit, budget.unit),
        ):
            if value is not None and value != kept:
                raise ConfigError(
                    f"the session was started with {option} {kept!r}, and --resume was given {value!r}: a resumed "
                    "session keeps its budget (omit it, or start a new session)",
                    source=str(folder),
                    field=option,
                )
    return recorded.run_config, requests if requests is not None else recorded.requests, budget


def _asked_without_scenario(recorded: dict[str, object], given: dict[str, object]) -> dict[str, object]:
    """The options given beside --resume without the scenario file, as run-config values (paths resolved as
    when a session starts), to compare with the recorded ones."""
    from silobridge.federation.run_requests import query_config

    def path(key: str) -> Path | None:
        value = given.get(key)
        return None if value is None else Path(str(value))

    overrides = given.get("set")
    return query_config(
        Path(str(recorded.get("scenario"))),
        path("out-dir") or Path("runs"),
        overrides=[str(item) for item in overrides] if isinstance(overrides, list) else [],
        run_id=None if given.get("run-id") is None else str(given["run-id"]),
        aggregation=None if given.get("aggregation") is None else str(given["aggregation"]),
        data=path("data"),
        ledger_key=path("ledger-key"),
        noise_seed=None if given.get("noise-seed") is None else int(str(given["noise-seed"])),
    )


def check_resumed_where(folder: Path, run_config: dict[str, object], *, network: bool) -> None:
    """A session resumes where it ran: over the network (`--network`) or simulated / on a pilot's files."""
    from silobridge.federation.settings import NODES

    ran_on_nodes = run_config.get("data") == NODES
    if ran_on_nodes != network:
        where = "over the federation's nodes" if ran_on_nodes else "in a simulation (or on a pilot's files)"
        advice = "add --network" if ran_on_nodes else "leave out --network"
        raise ConfigError(
            f"{folder} holds a query session that ran {where}: {advice} to resume it",
            source=str(folder),
            field="--network",
        )


def print_query(outcome: dict, noise: float | None, path: Path, *, epsilon: float, as_json: bool) -> None:
    """One query's answer and privacy cost: two tables, or one JSON object."""
    if as_json:
        out_console.print_json(json.dumps({**outcome, "noise_multiplier": noise, "run_dir": str(path)}, default=str))
        return
    from rich.table import Table

    table = Table(title=f"Query '{outcome['query']}'")
    table.add_column("answer")
    table.add_column("value", justify="right")
    for key, value in flatten_answer(outcome["answer"]):
        table.add_row(key, value)
    out_console.print(table)
    cost = Table(title="Privacy cost", show_header=False)
    privacy = outcome["privacy"]
    if privacy is None:
        cost.add_row("differential privacy", "off (--no-dp): exact answer, nothing recorded")
    else:
        cost.add_row("epsilon of this query", f"{privacy['epsilon']:.4f} at delta {privacy['delta']:g}")
        cost.add_row("epsilon of the run", f"{privacy['epsilon_total']:.4f} of {epsilon:g}")
        cost.add_row("noise multiplier", f"{noise:.4f} (unit: {privacy.get('unit', 'firm')})")
        cost.add_row("neighbouring datasets", str(privacy.get("neighbours")))
        cost.add_row("across runs", "this budget bounds this run only: separate queries add up (see README)")
    cost.add_row("releases", str(len(outcome["steps"])))
    cost.add_row("clipped values", str(sum(s["clipped"] for s in outcome["steps"])))
    out_console.print(cost)
    out_console.print(f"Run directory: [bold]{path}[/]")
