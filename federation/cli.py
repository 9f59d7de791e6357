"""`silobridge`: simulate a federation, audit a run's privacy ledger, report on a run, calibrate noise, generate data.

Every SiloBridge error ends the command with its message (naming file, firm and field) and a
non-zero exit code: 2 for bad configuration or data, 1 for a run that failed or overspent, 3 for a
ledger that fails verification, 4 for an incomplete ledger (no end entry), 5 for a ledger checked
only against a key found in its own run directory, 130 for a simulation stopped by Ctrl-C. Anything
else is a bug: one line names the command and the error's class, and the traceback goes to a private
temp file (never local variables: they may hold a firm's rows or keys).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from silobridge.contract.seeds import MAX_NOISE_SEED
from silobridge.errors import ConfigError, DataError, FederationError, LedgerTampered, SiloBridgeError

if TYPE_CHECKING:
    from pydantic import ValidationError

    from silobridge.federation.analytics import QueryJob
    from silobridge.federation.ledger_audit import LedgerAudit

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="SiloBridge: federated analytics for supply chains.",
    # a traceback with locals would print a firm's rows or keys into a terminal or a CI log
    pretty_exceptions_show_locals=False,
)
err_console = Console(stderr=True)
out_console = Console()

PilotData = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Pilot on real extracts: a folder with one sub-folder of CSV files per firm of the scenario "
        "(each validated first) instead of generated data.",
    ),
]
"""`--data` of simulate and query: the firms' own files instead of the generator's."""

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TAMPERED = 3
EXIT_INCOMPLETE = 4  # a ledger without its end entry (privacy.ledger.verdict.Verdict)
EXIT_SELF_SIGNED = 5  # a ledger checked only against a key found in its own run directory


def _fail(err: SiloBridgeError) -> typer.Exit:
    kind = (
        "configuration error"
        if isinstance(err, ConfigError)
        else "data error"
        if isinstance(err, DataError)
        else "error"
    )
    err_console.print(f"[bold red]{kind}:[/] {err}", markup=True, highlight=False)
    return typer.Exit(EXIT_BAD_INPUT if isinstance(err, ConfigError | DataError) else EXIT_FAILED)


@app.command()
def simulate(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (TOML), e.g. scenarios/default.toml.")] = Path(
        "scenarios/default.toml"
    ),
    out: Annotated[Path, typer.Option("--out", help="Folder that receives the run directory.")] = Path("runs"),
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.", min=0)] = None,
    rounds: Annotated[int | None, typer.Option(help="Override the number of federated rounds.", min=1)] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a scenario field: --set horizon=8, --set training.local_epochs=2, --set firms.R3.history=40",
        ),
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Name of the run directory (default: time, scenario and seed).")
    ] = None,
    aggregation: Annotated[
        str | None,
        typer.Option(help="'secure' (the scenario's default) or 'plain' to compare with aggregation in the clear."),
    ] = None,
    no_dp: Annotated[
        bool,
        typer.Option("--no-dp", help="Turn differential privacy off: the non-private comparison (no ledger)."),
    ] = False,
    plain: Annotated[bool, typer.Option("--plain", help="Log lines instead of the live progress display.")] = False,
    data: PilotData = None,
    noise_seed: Annotated[
        int | None,
        typer.Option(
            "--noise-seed",
            help="Fix every firm's DP-SGD sampling and noise (reproducible experiments); default: fresh OS entropy.",
            min=0,
            max=MAX_NOISE_SEED,
        ),
    ] = None,
    ledger_key: Annotated[
        Path | None,
        typer.Option(
            "--ledger-key",
            help="Sign the privacy ledger with this long-term key (`silobridge keys --ledger`); default: a key made "
            "for this run only, which an audit reports as such.",
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Give every simulated firm its own lifetime privacy odometer in STATE/<firm>: repeated simulations "
            "of the same firms compose, and a firm refuses a round past its lifetime budget.",
        ),
    ] = None,
    lifetime_epsilon: Annotated[
        float | None,
        typer.Option("--lifetime-epsilon", help="With --state: each firm's lifetime epsilon per data set.", min=0.0),
    ] = None,
) -> None:
    """Simulate every firm of a scenario as a Flower client and compare federated, local-only, centralised and naive."""
    from silobridge.federation.progress import LogObserver, RichObserver, log_to_stderr
    from silobridge.federation.settings import settings_from_run_config
    from silobridge.federation.simulation import simulate as run

    run_config: dict[str, object] = {
        "scenario": str(scenario.resolve()),
        "out-dir": str(out.resolve()),
        "num-rounds": rounds or 0,
        "seed": -1 if seed is None else seed,
        "set": ";".join(set_ or []),
        "aggregation": aggregation or "",
    }
    if no_dp:
        run_config["dp"] = "off"
    if noise_seed is not None:
        run_config["noise-seed"] = noise_seed
    if run_id:
        run_config["run-id"] = run_id
    if data is not None:
        run_config["data"] = str(data.resolve())
    if ledger_key is not None:
        run_config["ledger-key"] = str(ledger_key.resolve())
    if state is not None:
        run_config["state-dir"] = str(state.resolve())
    if lifetime_epsilon is not None:
        run_config["lifetime-epsilon"] = lifetime_epsilon
    try:
        settings = settings_from_run_config(run_config)
        run_config["run-id"] = settings.run_id
        if plain or not err_console.is_terminal:
            log_to_stderr()
            result = run(run_config, observer=LogObserver())
        else:
            with RichObserver(settings.scenario.training.rounds, console=err_console) as observer:
                result = run(run_config, observer=observer)
    except SiloBridgeError as err:
        raise _fail(err) from None
    _print_summary(result.summary)
    out_console.print(f"Run directory: [bold]{result.path}[/]")


def _print_summary(summary: dict) -> None:
    from silobridge.federation.progress import acceptance_table, efficiency_table, privacy_table, results_tables
    from silobridge.federation.summary import data_lines

    for line in data_lines(summary.get("data")):
        out_console.print(line, highlight=False)
    for table in results_tables(summary):
        out_console.print(table)
    efficiency = efficiency_table(summary)
    if efficiency is not None:
        out_console.print(efficiency)
    out_console.print(acceptance_table(summary))
    privacy = privacy_table(summary)
    if privacy is not None:
        out_console.print(privacy)


def _parse_query_params(items: list[str]) -> dict[str, object]:
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


def _flatten_answer(answer: dict[str, object], prefix: str = "") -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in answer.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            rows += _flatten_answer(value, f"{name}.")
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
    from silobridge.federation.analytics import QueryBudget, QueryJob, QueryRequest, run_queries
    from silobridge.federation.progress import log_to_stderr
    from silobridge.federation.query_plan import load_plan

    try:
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
        if plan is not None and param:
            raise ConfigError(
                "--param belongs to a single query: put each query's params in the plan file",
                source="command line",
                field="--param",
            )
        if unit not in ("record", "firm"):
            raise ConfigError(f"unknown unit '{unit}' (record or firm)", source="command line", field="--unit")
        requests = load_plan(plan) if plan is not None else [QueryRequest(name or "", _parse_query_params(param or []))]
        budget = None if no_dp else QueryBudget(epsilon, delta, accountant, noise_multiplier, unit)  # type: ignore[arg-type]
        run_config: dict[str, object] = {
            "scenario": str(scenario.resolve()),
            "out-dir": str(out.resolve()),
            "set": ";".join(set_ or []),
            "aggregation": aggregation or "",
        }
        if run_id:
            run_config["run-id"] = run_id
        if data is not None:
            run_config["data"] = str(data.resolve())
        if ledger_key is not None:
            run_config["ledger-key"] = str(ledger_key.resolve())
        if network:
            job = QueryJob(tuple(requests), budget)
            outcomes, noise, path = _network_query(run_config, job)
        else:
            log_to_stderr()
            result = run_queries(run_config, requests, budget)
            outcomes, noise, path = [o.to_dict() for o in result.outcomes], result.noise_multiplier, result.path
    except SiloBridgeError as err:
        raise _fail(err) from None
    if plan is None:
        _print_query(outcomes[0], noise, path, epsilon=epsilon, as_json=as_json)
    elif as_json:
        out_console.print_json(
            json.dumps({"queries": outcomes, "noise_multiplier": noise, "run_dir": str(path)}, default=str)
        )
    else:
        for outcome in outcomes:
            _print_query(outcome, noise, path, epsilon=epsilon, as_json=False)


def _network_query(run_config: dict[str, object], job: QueryJob) -> tuple[list[dict], float | None, Path]:
    """`flwr run` of the queries on the federation's SuperLink; the answer read back from the run directory."""
    import subprocess

    from silobridge.federation.analytics import (
        QUERIES_FILE,
        check_query_privacy,
        noised_plans,
        plan_queries,
        query_settings,
    )
    from silobridge.federation.ledger_signer import ledger_signer
    from silobridge.federation.network.deploy import process_env, run_command
    from silobridge.federation.settings import APP_DIR, NODES, QUERIES_KEY

    run_config = {**run_config, "data": NODES}
    settings = query_settings(run_config)
    check_query_privacy(settings, job.budget, [r.name for r in job.requests])
    if job.budget is not None:
        ledger_signer(settings)  # a missing or wrong ledger key: refused before the partners are asked
    # parameter errors (and, under DP, the budget's calibration) surface before the partners are asked
    if job.budget is None:
        plan_queries(settings, job.requests)
    else:
        noised_plans(settings, job.requests, job.budget)
    flower_config = {**settings.to_run_config(), QUERIES_KEY: job.to_run_config()}
    # flwr's streamed log goes to stderr, so that stdout holds only the answer (`--json` pipes cleanly)
    code = subprocess.call(run_command(APP_DIR, flower_config), env=process_env(), stdout=sys.stderr)
    written = settings.out_dir / settings.run_id / QUERIES_FILE
    if not written.exists():  # `flwr run --stream` exits 0 even when the run failed
        raise FederationError(f"the query run wrote no {written} (flwr exit code {code}); see the log above")
    result = json.loads(written.read_text())
    return result["queries"], result["noise_multiplier"], written.parent


def _print_query(outcome: dict, noise: float | None, path: Path, *, epsilon: float, as_json: bool) -> None:
    if as_json:
        out_console.print_json(json.dumps({**outcome, "noise_multiplier": noise, "run_dir": str(path)}, default=str))
        return
    from rich.table import Table

    table = Table(title=f"Query '{outcome['query']}'")
    table.add_column("answer")
    table.add_column("value", justify="right")
    for key, value in _flatten_answer(outcome["answer"]):
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


@app.command()
def generate(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (TOML).")],
    out: Annotated[Path, typer.Option("--out", help="Folder that receives one sub-folder of CSV files per firm.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a scenario field, as for simulate.")] = None,
) -> None:
    """Write each firm's generated data as a partner firm's CSV files (demand.csv, risk.csv, orders.csv)."""
    from silobridge.clients.data import write_firm_data
    from silobridge.scenarios.generator import generate_chain
    from silobridge.scenarios.schema import check_generatable, load_scenario, parse_override

    try:
        loaded = load_scenario(scenario, [parse_override(text) for text in set_ or []])
        check_generatable(loaded, source=str(scenario))
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{out} is a file; name a new folder", source="command line", field="--out")
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"{out} is not empty; choose a new folder", source="command line", field="--out")
    except SiloBridgeError as err:
        raise _fail(err) from None
    chain = generate_chain(loaded)
    for firm in loaded.firms:
        tables = chain.tables[firm.id]
        write_firm_data(out / firm.id, tables.demand, tables.risk, tables.orders)
    out_console.print(f"Wrote {len(loaded.firms)} firms' data to [bold]{out}[/]")


@app.command()
def audit(
    target: Annotated[Path, typer.Argument(help="A run directory, or a privacy ledger file (privacy_ledger.jsonl).")],
    public_key: Annotated[
        str | None,
        typer.Option(help="The coordinator's Ed25519 ledger public key (hex, any case) to verify the ledger against."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="The federation file: verify against its [privacy] ledger_public_key (the usual way)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the audit report as JSON.")] = False,
) -> None:
    """Verify a run's privacy ledger (chain, signatures, epsilon recomputed by the accountant) and report spend.

    Exit code: 0 verified under a trusted key; 1 over budget; 2 bad input; 3 failed (tampered, wrong key, or
    the run's summary disagrees); 4 incomplete (no end entry: a crash prefix or a truncated ledger); 5 intact
    but checked only against a key found in the run directory (give --config or --public-key).
    """
    from silobridge.federation.ledger_audit import LEDGER_FILE, audit_ledger_file

    path = target / LEDGER_FILE if target.is_dir() else target
    if not path.exists():
        raise _fail(ConfigError(f"no privacy ledger at {path} (a run without DP has none)", source=str(target)))
    try:
        result = audit_ledger_file(
            path, run_dir=target if target.is_dir() else None, public_key=public_key, federation=config
        )
    except SiloBridgeError as err:
        raise _fail(err) from None
    verdict, report = result.judgement.verdict, result.report
    if as_json:
        body = report.to_dict() if report is not None else {"error": result.error, "entry": result.entry}
        out_console.print_json(
            json.dumps(
                {
                    "verified": result.verified,
                    "verdict": verdict.name.lower(),
                    "verdict_text": result.judgement.text,
                    "key_source": result.key_source,
                    "problems": list(result.problems),
                    **body,
                },
                default=str,
            )
        )
        raise typer.Exit(verdict.exit_code)
    if report is None:
        err_console.print(f"[bold red]ledger check failed:[/] {result.error}", highlight=False)
        raise typer.Exit(verdict.exit_code)
    _print_audit(path, result)
    style = "green" if verdict.exit_code == 0 else "bold red"
    out_console.print(f"verdict: [{style}]{result.judgement.text}[/]", highlight=False)
    raise typer.Exit(verdict.exit_code)


def _print_audit(path: Path, result: LedgerAudit) -> None:
    from rich.table import Table

    report = result.report
    if report is None:  # a ledger that failed has only its error, printed by the caller
        return
    summary = Table(title=f"Privacy ledger of run {report.run_id}", show_header=False)
    summary.add_row("ledger", str(path))
    summary.add_row("entries", f"{report.entries} (chain and signatures checked)")
    trust = (
        f"trusted: matches the key of {result.key_source}"
        if report.key_trusted
        else "NOT trusted: found in the run directory only"
    )
    summary.add_row("signing key", f"{report.public_key} ({report.key_kind or 'kind not recorded'}; {trust})")
    summary.add_row(
        "accountant",
        f"{report.accountant.kind.value}, {report.accountant.relation.name}, unit {report.accountant.unit.value}",
    )
    summary.add_row("budget", f"epsilon {report.budget.epsilon:g} at delta {report.budget.delta:g}")
    summary.add_row("epsilon spent (recomputed)", f"{report.epsilon_overall:.4f}")
    summary.add_row("within budget", "yes" if report.within_budget else "NO")
    summary.add_row(
        "ended",
        report.end_reason
        if report.ended
        else "NO end entry: torn by a crash mid-line"
        if report.torn_tail
        else "NO end entry: the run was cut off",
    )
    for problem in result.problems:
        summary.add_row("disagreement", problem)
    for warning in report.warnings:
        summary.add_row("warning", warning)
    out_console.print(summary)
    firms = Table(title="Per firm")
    for column in ("firm", "releases", "epsilon", "budget", "within"):
        firms.add_column(column)
    for firm, row in sorted(report.firms.items()):
        firms.add_row(
            firm,
            str(row.releases),
            f"{row.epsilon:.4f}",
            f"{row.budget.epsilon:g}",
            "yes" if row.within_budget else "NO",
        )
    out_console.print(firms)
    releases = Table(title="Per release")
    for column in ("entry", "release", "mechanism", "firms", "excluded", "epsilon after"):
        releases.add_column(column)
    for release in report.releases:
        releases.add_row(
            str(release.index),
            release.release_id,
            release.mechanism,
            str(len(release.firms)),
            ", ".join(release.excluded_firms),
            f"{release.epsilon_overall:.4f}",
        )
    out_console.print(releases)
    for refusal in report.refusals:
        out_console.print(f"refused: {refusal}")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (runs/<run-id>).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the HTML file (default RUN_DIR/report.html).")
    ] = None,
    public_key: Annotated[
        str | None, typer.Option(help="The coordinator's ledger public key (hex) to audit the ledger against.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="The federation file whose [privacy] ledger_public_key to use.")
    ] = None,
) -> None:
    """Write a self-contained HTML report of a run: training curves, privacy spent (ledger audited), efficiency, events.

    Exit code as for audit (3 failed, 1 over budget, 4 incomplete), except that a ledger checked only against
    the key in its own run directory is reported as such in the page and exits 0.
    """
    from silobridge.federation.report import write_report

    try:
        if public_key is not None and config is not None:
            raise ConfigError("give --public-key or --config, not both", source="command line", field="--public-key")
        path, run = write_report(run_dir, out, public_key=public_key, federation=config)
    except SiloBridgeError as err:
        raise _fail(err) from None
    code = 0
    if run.audit is not None:
        judgement = run.audit.judgement
        code = 0 if judgement.verdict.exit_code == EXIT_SELF_SIGNED else judgement.verdict.exit_code
        style = "green" if judgement.verdict.exit_code == 0 else "yellow" if code == 0 else "bold red"
        out_console.print(f"privacy ledger: [{style}]{judgement.text}[/]", highlight=False)
    out_console.print(f"Report written to [bold]{path}[/]")
    raise typer.Exit(code)  # the report is written either way; the exit code carries the verdict


CALIBRATE_OPTIONS = {
    "epsilon": "--epsilon",
    "delta": "--delta",
    "sample_rate": "--sample-rate",
    "firm_sample_rate": "--sample-rate",
    "rounds": "--rounds",
    "local_epochs": "--local-epochs",
}
"""PrivacySpec and PrivacyPlan fields as calibrate's options name them."""


def _option_error(err: ValidationError, options: dict[str, str]) -> ConfigError:
    """A pydantic refusal of command-line values as one line per option, without pydantic's dump and URL."""
    found = [
        (options.get(str(p["loc"][-1]), str(p["loc"][-1])) if p["loc"] else None, p["msg"], p.get("input"))
        for p in err.errors()
    ]
    if len(found) == 1:
        option, message, got = found[0]
        return ConfigError(f"{message} (got {got!r})", source="command line", field=option)
    text = "; ".join(f"{option}: {message} (got {got!r})" for option, message, got in found)
    return ConfigError(text, source="command line")


@app.command()
def calibrate(
    epsilon: Annotated[float, typer.Option(help="Target epsilon.", min=0.0)],
    delta: Annotated[float, typer.Option(help="Target delta.")] = 1e-5,
    rounds: Annotated[int, typer.Option(help="Federated rounds.", min=1)] = 30,
    unit: Annotated[str, typer.Option(help="'record' (DP-SGD in each firm) or 'firm' (DP-FedAvg).")] = "record",
    local_epochs: Annotated[int, typer.Option(help="DP-SGD epochs per round (record unit).", min=1)] = 1,
    sample_rate: Annotated[
        float | None,
        typer.Option(help="Record unit: examples per step (default 0.1); firm unit: firms per round (default 1)."),
    ] = None,
    accountant: Annotated[str, typer.Option(help="'rdp' or 'pld'.")] = "rdp",
) -> None:
    """The noise multiplier that spends exactly (epsilon, delta) over the planned rounds."""
    from pydantic import ValidationError

    from silobridge.contract.config import PrivacySpec
    from silobridge.server.privacy import PrivacyPlan, accounting_spec, resolve_privacy

    try:
        if unit not in ("record", "firm"):
            raise ConfigError(f"unknown unit '{unit}' (record or firm)", source="command line", field="--unit")
        if accountant not in ("rdp", "pld"):
            raise ConfigError(
                f"unknown accountant '{accountant}' (rdp or pld)", source="command line", field="--accountant"
            )
        fields: dict[str, float] = {}
        if sample_rate is not None:
            fields = {"sample_rate": sample_rate} if unit == "record" else {"firm_sample_rate": sample_rate}
        spec = PrivacySpec(unit=unit, epsilon=epsilon, delta=delta, accountant=accountant, **fields)  # type: ignore[arg-type]
        plan = PrivacyPlan(spec=spec, rounds=rounds, local_epochs=local_epochs, num_firms=1, min_firms=1, model_dim=1)
        resolved = resolve_privacy(plan)
    except ValidationError as err:
        raise _fail(_option_error(err, CALIBRATE_OPTIONS)) from None
    except SiloBridgeError as err:
        raise _fail(err) from None
    plan = PrivacyPlan(spec=resolved, rounds=rounds, local_epochs=local_epochs, num_firms=1, min_firms=1, model_dim=1)
    from silobridge.privacy.dp import epsilon as spent

    achieved = spent([plan.planned_run_event(resolved.noise_multiplier)], delta, accounting_spec(resolved))
    out_console.print(
        f"noise multiplier {resolved.noise_multiplier:.4f} for epsilon {epsilon:g} at delta {delta:g}: "
        f"{rounds} rounds, unit {unit}, {accountant.upper()} accountant (spends {achieved:.4f})"
    )


# -- a real federation: certificates, keys, data checks, SuperLink, SuperNode, runs ----------------

SUPERLINK_PORT = 9093


@app.command()
def certs(
    out: Annotated[Path, typer.Option("--out", help="Folder for ca.pem, ca.key, server.pem, server.key.")] = Path(
        "certs"
    ),
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="A name or IP address firms dial the SuperLink by (repeat); default 127.0.0.1."),
    ] = None,
    days: Annotated[int, typer.Option(help="Validity of both certificates, in days.", min=1)] = 365,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")] = False,
) -> None:
    """Coordinator: create a CA and the SuperLink's TLS certificate (for a small or test federation)."""
    from silobridge.federation.network.certs import make_certificates

    try:
        files = make_certificates(out, host or ["127.0.0.1"], days=days, overwrite=overwrite)
    except SiloBridgeError as err:
        raise _fail(err) from None
    out_console.print(f"CA certificate (give it to every firm): [bold]{files.ca_cert}[/]")
    out_console.print(
        f"Server certificate and key (keep on the SuperLink host): {files.server_cert}, {files.server_key}"
    )
    out_console.print(f"CA key (keep offline; signs new server certificates): {files.ca_key}")


@app.command()
def keys(
    out: Annotated[Path, typer.Option("--out", help="Private key file; the public key goes beside it as .pub.")] = Path(
        "firm.key"
    ),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing pair (key rotation).")] = False,
    ledger: Annotated[
        bool,
        typer.Option(
            "--ledger",
            help="Coordinator: make the long-term Ed25519 key that signs every run's privacy ledger instead "
            "(PEM private key, mode 0600; its public key goes into the federation file).",
        ),
    ] = False,
) -> None:
    """Firm: make the SuperNode's authentication key pair (EC P-384, OpenSSH format). Coordinator: --ledger."""
    if ledger:
        from silobridge.privacy.ledger.keys import write_signing_key

        try:
            public_path, public_hex = write_signing_key(out, overwrite=overwrite)
        except SiloBridgeError as err:
            raise _fail(err) from None
        out_console.print(f"Ledger private key (keep on the coordinator, mode 0600): [bold]{out}[/]")
        out_console.print(f"Public key: {public_path}; put it in the federation file every partner holds:")
        out_console.print(
            f'[privacy]\nledger_public_key = "{public_hex}"', highlight=False, markup=False, soft_wrap=True
        )
        return
    from silobridge.federation.network.keys import make_node_keys

    try:
        files = make_node_keys(out, overwrite=overwrite, comment=out.stem)
    except SiloBridgeError as err:
        raise _fail(err) from None
    out_console.print(f"Private key (never leaves this machine): [bold]{files.private_key}[/]")
    out_console.print(f"Public key (send to the coordinator): [bold]{files.public_key}[/]")
    out_console.print(f"Fingerprint (read it to the coordinator out of band): {files.fingerprint}")


def _federation(config: Path):  # noqa: ANN202 - returns (Scenario, FederationSpec)
    """The federation file as a firm checks it: DP off (no calibration needed to check data), DP's own
    demands on the schema checked still."""
    from silobridge.federation.settings import check_public_ranges, settings_from_run_config

    settings = settings_from_run_config({"scenario": str(config.resolve()), "dp": "off", "data": "nodes"})
    check_public_ranges(settings.spec.data, private=settings.scenario.privacy.enabled)
    return settings.scenario, settings.spec


@app.command()
def init(
    data_dir: Annotated[Path, typer.Argument(help="The pilot's folder: one sub-folder of CSV files per firm.")],
    out: Annotated[Path, typer.Option("--out", help="The federation file to write (must not exist).")] = Path(
        "federation.toml"
    ),
    name: Annotated[str | None, typer.Option(help="The federation's name (default: the folder's).")] = None,
    date_column: Annotated[str | None, typer.Option(help="The date column, if not detected.")] = None,
    units_column: Annotated[str | None, typer.Option(help="demand.csv's units column, if not detected.")] = None,
    series_column: Annotated[str | None, typer.Option(help="demand.csv's series column, if not detected.")] = None,
    label_column: Annotated[str | None, typer.Option(help="risk.csv's 0/1 label column, if not detected.")] = None,
) -> None:
    """Coordinator: write a first federation file from the firms' extracts (columns, weekly anchor, end, sizes).

    Tiers are left as TODO for you to fill in (validate refuses the file until then); ranges for DP
    clipping are only suggested, commented out: computed from private data, they would leak it.
    """
    import re

    from silobridge.federation.pilot_init import Columns, federation_toml, survey_folder

    try:
        if out.exists():
            raise ConfigError(f"{out} already exists; choose another file", source="command line", field="--out")
        if not out.parent.is_dir():
            raise ConfigError(f"{out.parent} is not a folder", source="command line", field="--out")
        title = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", data_dir.resolve().name).strip("-") or "pilot"
        columns = Columns(date=date_column, units=units_column, series=series_column, label=label_column)
        surveys = survey_folder(data_dir, columns)
        text = federation_toml(surveys, name=title, source=data_dir)
    except SiloBridgeError as err:
        raise _fail(err) from None
    out.write_text(text, encoding="utf-8")
    out_console.print(f"Wrote [bold]{out}[/] for {len(surveys)} firms: {', '.join(s.firm_id for s in surveys)}")
    out_console.print(
        "Next: set each firm's tier (TODO), check the columns and the end date, and write public ranges for the "
        f"risk features; then `silobridge validate FIRM_DIR --config {out}`."
    )


@app.command()
def validate(
    data_dir: Annotated[
        Path, typer.Argument(help="The firm's folder (its name is the firm id): demand.csv, risk.csv.")
    ],
    config: Annotated[Path, typer.Option("--config", help="The federation file the coordinator shared.")] = Path(
        "federation.toml"
    ),
    firm_id: Annotated[str | None, typer.Option("--firm-id", help="Firm id, if not the folder's name.")] = None,
) -> None:
    """Firm: check its CSV files against the federation's schema, reporting file, row and column. Sends nothing.

    Every rule the run applies is checked here first: a file that validates is not dropped by the run.
    """
    from silobridge.clients.data import describe_risk_split
    from silobridge.federation.firm_source import validate_firm_folder

    try:
        scenario, spec = _federation(config)
        data = validate_firm_folder(data_dir, scenario, spec, firm_id=firm_id)
    except SiloBridgeError as err:
        raise _fail(err) from None
    parts = []
    if data.demand is not None:
        parts.append(f"demand.csv {len(data.demand)} rows, {data.demand['series'].nunique()} series")
    if data.risk is not None:
        split = describe_risk_split(data.risk_split or "", spec.data)
        parts.append(f"risk.csv {len(data.risk)} rows, train/test split: {split}")
    if data.orders is not None:
        parts.append(f"orders.csv {len(data.orders)} rows")
    out_console.print(f"firm '{data.firm_id}': valid ({'; '.join(parts)}); nothing was sent anywhere")


@app.command()
def superlink(
    certs_dir: Annotated[Path, typer.Option("--certs", help="Folder from `silobridge certs`.")] = Path("certs"),
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for all interfaces).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The one HTTPS port of Fleet, Control and Runtime APIs.")] = SUPERLINK_PORT,
    connect_as: Annotated[
        str, typer.Option("--connect-as", help="Address `flwr` uses to reach it (written to $FLWR_HOME/config.toml).")
    ] = "",
    database: Annotated[Path | None, typer.Option(help="State file, so registrations survive a restart.")] = None,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the flower-superlink command, start nothing.")
    ] = False,
) -> None:
    """Coordinator: start a SuperLink with TLS and SuperNode authentication (registered keys only)."""
    import os
    import subprocess

    from flwr.supercore.utils import get_flwr_home

    from silobridge.federation.network.certs import CA_CERT, SERVER_CERT, SERVER_KEY
    from silobridge.federation.network.deploy import (
        CONNECTION,
        SuperLinkFiles,
        argv_text,
        process_env,
        superlink_command,
        write_connection,
    )

    try:
        files = SuperLinkFiles(certs_dir / CA_CERT, certs_dir / SERVER_CERT, certs_dir / SERVER_KEY)
        command = superlink_command(files, host=host, port=port, database=database)
    except SiloBridgeError as err:
        raise _fail(err) from None
    address = connect_as or f"{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    out_console.print(argv_text(command))
    if print_only:
        return
    home = Path(os.environ.get("FLWR_HOME") or get_flwr_home())
    written = write_connection(home, address=address, ca_cert=files.ca_cert)
    err_console.print(f"flwr connection '{CONNECTION}' -> {address} written to {written}")
    err_console.print(
        f"register a firm: silobridge register FIRM.key.pub (or flwr supernode register FIRM.key.pub {CONNECTION})"
    )
    raise typer.Exit(subprocess.call(command, env=process_env()))


@app.command()
def register(
    public_key: Annotated[Path, typer.Argument(help="The firm's public key (.pub from `silobridge keys`).")],
) -> None:
    """Coordinator: register a firm's public key with the running SuperLink (Flower's `flwr supernode register`)."""
    import subprocess

    from silobridge.federation.network.deploy import process_env, register_command
    from silobridge.federation.network.keys import fingerprint

    try:
        command = register_command(public_key)
    except SiloBridgeError as err:
        raise _fail(err) from None
    err_console.print(f"registering {public_key} ({fingerprint(public_key.read_bytes())}): check it with the firm")
    raise typer.Exit(subprocess.call(command, env=process_env()))


@app.command()
def join(
    superlink: Annotated[str, typer.Option("--superlink", help="The coordinator's SuperLink, HOST:PORT.")],
    ca: Annotated[Path, typer.Option("--ca", help="The federation's CA certificate (ca.pem).")],
    key: Annotated[Path, typer.Option("--key", help="This firm's private key (from `silobridge keys`).")],
    data: Annotated[Path, typer.Option("--data", help="This firm's folder of CSV files (its name is the firm id).")],
    config: Annotated[Path, typer.Option("--config", help="The federation file.")] = Path("federation.toml"),
    firm_id: Annotated[str | None, typer.Option("--firm-id", help="Firm id, if not the folder's name.")] = None,
    budget_epsilon: Annotated[
        float | None, typer.Option("--budget-epsilon", help="This firm's own privacy limit (stricter than the run's).")
    ] = None,
    runtime_port: Annotated[int, typer.Option(help="Local port of the SuperNode's own runtime API.")] = 9094,
    noise_seed: Annotated[
        int | None,
        typer.Option(
            "--noise-seed",
            help="Fix this firm's own DP-SGD sampling and noise, for tests against a coordinator you run yourself: "
            "a coordinator that repeats a round number could then cancel your noise. Default: fresh OS entropy.",
            min=0,
            max=MAX_NOISE_SEED,
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="This firm's lifetime privacy odometer (a folder it owns): what each data set spent across runs, "
            "signed by the node; rounds past --lifetime-epsilon are refused, whichever run asks.",
        ),
    ] = None,
    lifetime_epsilon: Annotated[
        float | None,
        typer.Option(
            "--lifetime-epsilon",
            help="Lifetime epsilon per data set (with --state; needed once, kept after).",
            min=0.0,
        ),
    ] = None,
    lifetime_delta: Annotated[
        float, typer.Option("--lifetime-delta", help="The delta lifetime epsilon is stated at.")
    ] = 1e-5,
) -> None:
    """Firm: validate its data again, then start a SuperNode that joins the federation's rounds."""
    import subprocess

    from silobridge.federation.firm_source import validate_firm_folder
    from silobridge.federation.network.deploy import argv_text, process_env, split_address, supernode_command
    from silobridge.federation.odometer_glue import NODE_LIFETIME_DELTA, NODE_LIFETIME_EPSILON, NODE_STATE_DIR

    try:
        if lifetime_epsilon is not None and state is None:
            raise ConfigError("a lifetime budget needs --state DIR", source="command line", field="--lifetime-epsilon")
        split_address(superlink)
        for path, option in ((ca, "--ca"), (key, "--key")):
            if not path.is_file():
                raise ConfigError(f"{path} does not exist", source="command line", field=option)
        scenario, spec = _federation(config)
        firm = validate_firm_folder(data, scenario, spec, firm_id=firm_id)
        extra: dict[str, str | float] = {}
        if state is not None:
            from silobridge.privacy.dp import Budget
            from silobridge.privacy.odometer import Odometer

            lifetime = Budget(lifetime_epsilon, lifetime_delta) if lifetime_epsilon else None
            Odometer.open(state.resolve(), firm=firm.firm_id, lifetime=lifetime)  # verified (or made) before joining
            extra = {NODE_STATE_DIR: str(state.resolve()), NODE_LIFETIME_DELTA: lifetime_delta}
            if lifetime_epsilon:
                extra[NODE_LIFETIME_EPSILON] = lifetime_epsilon
        command = supernode_command(
            superlink=superlink,
            ca_cert=ca,
            private_key=key,
            data_dir=data,
            federation=config,
            firm_id=firm.firm_id,
            runtime_port=runtime_port,
            budget_epsilon=budget_epsilon,
            noise_seed=noise_seed,
            extra_config=extra,
        )
    except LedgerTampered as err:
        err_console.print(f"[bold red]odometer check failed, not joining:[/] {err}", highlight=False)
        raise typer.Exit(EXIT_TAMPERED) from None
    except SiloBridgeError as err:
        raise _fail(err) from None
    err_console.print(f"firm '{firm.firm_id}': data valid; joining {superlink}")
    shown = argv_text(command)
    if noise_seed is not None:  # the seed is the firm's secret: not in a log someone else may read
        shown = shown.replace(f"noise-seed={noise_seed}", "noise-seed=<hidden>")
        err_console.print(
            "[yellow]warning:[/] --noise-seed fixes this node's DP noise: use it only for tests, against a "
            "coordinator you trust (one that repeats a round number could cancel the noise)"
        )
    err_console.print(shown)
    raise typer.Exit(subprocess.call(command, env=process_env()))


@app.command()
def budget(
    state: Annotated[
        Path, typer.Argument(help="An odometer folder (join --state), or a simulation's --state holding one per firm.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
) -> None:
    """Firm: what each data set has spent across runs (the node's lifetime odometer, verified first).

    Exit code 3 if the odometer was altered (the node then refuses to take part), 2 if there is none.
    """
    from rich.table import Table

    from silobridge.privacy.odometer import LOG_FILE, Odometer

    folders = [state] if (state / LOG_FILE).exists() else sorted(p.parent for p in state.glob(f"*/{LOG_FILE}"))
    try:
        if not folders:
            raise ConfigError(f"no odometer here (no {LOG_FILE}, nor one per firm)", source=str(state))
        odometers = [Odometer.open(folder, firm=None) for folder in folders]
    except LedgerTampered as err:
        err_console.print(f"[bold red]odometer check failed:[/] {err}", highlight=False)
        raise typer.Exit(EXIT_TAMPERED) from None
    except SiloBridgeError as err:
        raise _fail(err) from None
    rows = [
        {
            "firm": odo.firm,
            "dataset": row.dataset,
            "releases": row.releases,
            "runs": list(row.runs),
            "epsilon": row.epsilon,
            "lifetime_epsilon": odo.lifetime.epsilon,
            "delta": odo.lifetime.delta,
            "remaining": max(0.0, odo.lifetime.epsilon - row.epsilon),
        }
        for odo in odometers
        for row in odo.datasets()
    ]
    if as_json:
        out_console.print_json(json.dumps({"verified": True, "datasets": rows}))
        return
    table = Table(title="Lifetime privacy spend (odometer verified: chain, signatures, head)")
    for column in ("firm", "data set", "releases", "runs", "epsilon spent", "lifetime budget", "remaining"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["firm"],
            row["dataset"],
            str(row["releases"]),
            str(len(row["runs"])),
            f"{row['epsilon']:.4f}",
            f"{row['lifetime_epsilon']:g} at delta {row['delta']:g}",
            f"{row['remaining']:.4f}",
        )
    for odo in odometers:
        if not odo.datasets():
            table.add_row(odo.firm, "-", "0", "0", "0", f"{odo.lifetime.epsilon:g} at delta {odo.lifetime.delta:g}", "")
    out_console.print(table)


@app.command("run")
def run_federation_command(
    config: Annotated[Path, typer.Argument(help="The federation file (firms, schema, training, privacy).")] = Path(
        "federation.toml"
    ),
    out: Annotated[Path, typer.Option("--out", help="Folder that receives the run directory.")] = Path("runs"),
    run_id: Annotated[str | None, typer.Option(help="Name of the run directory.")] = None,
    ledger_key: Annotated[
        Path | None,
        typer.Option(
            "--ledger-key", help="The long-term ledger key whose public key the federation file names (keys --ledger)."
        ),
    ] = None,
) -> None:
    """Coordinator: run the federation on the SuperLink (`flwr run`); same log, summary and ledger as a simulation.

    No overrides: every partner's node refuses settings that differ from the federation file it holds,
    so a change (rounds, privacy, aggregation) is a new federation file shared with every partner.
    """
    import json
    import subprocess

    from silobridge.federation.network.deploy import process_env, run_command
    from silobridge.federation.settings import APP_DIR, settings_from_run_config

    run_config: dict[str, str | int] = {
        "scenario": str(config.resolve()),
        "out-dir": str(out.resolve()),
        "data": "nodes",
        "run-id": run_id or "",
        "ledger-key": str(ledger_key.resolve()) if ledger_key is not None else "",
    }
    try:
        from silobridge.federation.ledger_signer import ledger_signer

        settings = settings_from_run_config(run_config)
        if settings.spec.privacy.enabled:
            ledger_signer(settings)  # a missing or wrong ledger key: refused before the partners are asked
    except SiloBridgeError as err:
        raise _fail(err) from None
    run_config["run-id"] = settings.run_id
    code = subprocess.call(run_command(APP_DIR, run_config), env=process_env())
    summary_path = settings.out_dir / settings.run_id / "summary.json"
    if not summary_path.exists():  # `flwr run --stream` exits 0 even when the run failed
        err_console.print(
            f"[bold red]error:[/] the run wrote no {summary_path} (flwr exit code {code}); see the log above"
        )
        raise typer.Exit(EXIT_FAILED)
    _print_summary(json.loads(summary_path.read_text()))
    out_console.print(f"Run directory: [bold]{summary_path.parent}[/]")


def _command_name(argv: list[str]) -> str:
    """The subcommand a user typed (`silobridge validate ...` -> "validate"), for the one-line bug report."""
    return next((arg for arg in argv if not arg.startswith("-")), "")


def crash_report(err: BaseException) -> Path:
    """Write the full traceback (frames and lines, no local variables: they may hold a firm's data) to a
    private temp file and return its path."""
    import tempfile
    import traceback

    handle, name = tempfile.mkstemp(prefix="silobridge-error-", suffix=".txt")
    with open(handle, "w", encoding="utf-8") as out:
        out.write(f"silobridge {' '.join(sys.argv[1:2])}\n")
        out.write("".join(traceback.format_exception(err)))
    return Path(name)


def main() -> None:
    from silobridge.federation.settings import quiet_accountant

    quiet_accountant()
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as err:  # noqa: BLE001 - the last stop: anything we did not expect is a bug, said in one line
        command = " ".join(filter(None, ("silobridge", _command_name(sys.argv[1:]))))
        path = crash_report(err)
        err_console.print(
            f"[bold red]internal error:[/] `{command}` stopped on an unexpected {type(err).__name__}; this is a bug "
            f"in SiloBridge, not in your input. The traceback (without local variables) is in {path}",
            highlight=False,
        )
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":
    main()
