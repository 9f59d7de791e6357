"""`query`: federated analytics (simulated, on a pilot's files, or over the network), the answer and its cost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from silobridge.errors import ConfigError, SiloBridgeError
from silobridge.federation.cli.common import PilotData, fail, out_console, sub_app

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
    if (name is None) == (plan is None):
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
        Path,
        typer.Argument(help="Scenario file (TOML), e.g. scenarios/default.toml; with --network, the federation file."),
    ],
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
        float, typer.Option(help="Privacy budget of this run (the query, or every query of --plan together).")
    ] = 1.0,
    unit: Annotated[
        str,
        typer.Option(
            help="Unit of privacy: 'record' (one row, basket, series or observation as each query states; "
            "the default) or 'firm' (a firm's whole contribution: for federations of hundreds of firms)."
        ),
    ] = "record",
    delta: Annotated[float, typer.Option(help="Delta of the budget.")] = 1e-5,
    noise_multiplier: Annotated[
        float | None,
        typer.Option(help="Fix the noise multiplier instead of calibrating it to spend the budget."),
    ] = None,
    accountant: Annotated[str, typer.Option(help="'rdp' or 'pld'.")] = "rdp",
    no_dp: Annotated[
        bool,
        typer.Option(
            "--no-dp",
            help="No noise and no ledger: the exact answer, for comparison only (over a real federation only where "
            "the federation file turns DP off).",
        ),
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="Folder that receives the run directory.")] = Path("runs"),
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
) -> None:
    """Run federated analytics queries (simulated, on a pilot's files, or over the network); print answers and cost.

    One query, or a session of several (--plan) under one budget. Each invocation is its own run with
    its own ledger and budget: separate invocations compose across runs, outside any one budget.
    """
    from silobridge.federation.network.runs import run_queries as run_network_queries
    from silobridge.federation.progress import log_to_stderr
    from silobridge.federation.query_plan import load_plan
    from silobridge.federation.query_run import QueryBudget, QueryJob, QueryRequest, run_queries
    from silobridge.federation.run_requests import query_config

    try:
        check_query_options(
            name=name, plan=plan, params=param or [], accountant=accountant, unit=unit, network=network, data=data
        )
        requests = load_plan(plan) if plan is not None else [QueryRequest(name or "", parse_param_options(param or []))]
        budget = None if no_dp else QueryBudget(epsilon, delta, accountant, noise_multiplier, unit)  # type: ignore[arg-type]
        run_config = query_config(
            scenario,
            out,
            overrides=set_ or [],
            run_id=run_id,
            aggregation=aggregation,
            data=data,
            ledger_key=ledger_key,
        )
        if network:
            answered = run_network_queries(run_config, QueryJob(tuple(requests), budget))
            outcomes, noise, path = answered.outcomes, answered.noise_multiplier, answered.path
        else:
            log_to_stderr()
            result = run_queries(run_config, requests, budget)
            outcomes, noise, path = [o.to_dict() for o in result.outcomes], result.noise_multiplier, result.path
    except SiloBridgeError as err:
        raise fail(err) from None
    if plan is None:
        print_query(outcomes[0], noise, path, epsilon=epsilon, as_json=as_json)
    elif as_json:
        out_console.print_json(
            json.dumps({"queries": outcomes, "noise_multiplier": noise, "run_dir": str(path)}, default=str)
        )
    else:
        for outcome in outcomes:
            print_query(outcome, noise, path, epsilon=epsilon, as_json=False)


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
