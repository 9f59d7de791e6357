"""`silobridge`: simulate a federation, audit a run's privacy ledger, report on a run, calibrate noise, generate data.

Every SiloBridge error ends the command with its message (naming file, firm and field) and a
non-zero exit code: 2 for bad configuration or data, 1 for a run that failed or overspent, 3 for a
ledger that fails verification.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from silobridge.errors import ConfigError, DataError, FederationError, LedgerTampered, SiloBridgeError
from silobridge.seeds import MAX_NOISE_SEED

if TYPE_CHECKING:
    from federation.analytics import QueryJob

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SiloBridge: federated analytics for supply chains.")
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
) -> None:
    """Simulate every firm of a scenario as a Flower client and compare federated, local-only, centralised and naive."""
    from federation.progress import LogObserver, RichObserver, log_to_stderr
    from federation.settings import settings_from_run_config
    from federation.simulation import simulate as run

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
    from federation.progress import acceptance_table, efficiency_table, privacy_table, results_tables

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
            help="A TOML file of [[query]] entries (name, params): run them all as one session, one run, one "
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
) -> None:
    """Run federated analytics queries (simulated, on a pilot's files, or over the network); print answers and cost.

    One query, or a session of several (--plan) under one budget. Each invocation is its own run with
    its own ledger and budget: separate invocations compose across runs, outside any one budget.
    """
    from federation.analytics import QueryBudget, QueryJob, QueryRequest, run_queries
    from federation.progress import log_to_stderr
    from federation.query_plan import load_plan

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

    from federation.analytics import QUERIES_FILE, check_query_privacy, noised_plans, plan_queries, query_settings
    from federation.network.deploy import process_env, run_command
    from federation.settings import APP_DIR, NODES, QUERIES_KEY

    run_config = {**run_config, "data": NODES}
    settings = query_settings(run_config)
    check_query_privacy(settings, job.budget, [r.name for r in job.requests])
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
    from clients.data import write_firm_data
    from scenarios.generator import generate_chain
    from scenarios.schema import load_scenario, parse_override

    try:
        loaded = load_scenario(scenario, [parse_override(text) for text in set_ or []])
    except SiloBridgeError as err:
        raise _fail(err) from None
    if out.exists() and any(out.iterdir()):
        raise _fail(ConfigError(f"{out} is not empty; choose a new folder", source="command line", field="--out"))
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
        typer.Option(
            help="The coordinator's Ed25519 public key (hex) as published for this run; checked against the ledger."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the audit report as JSON.")] = False,
) -> None:
    """Verify a run's privacy ledger (chain, signatures, epsilon recomputed by the accountant) and report spend."""
    from privacy.ledger import verify_ledger

    path = target / "privacy_ledger.jsonl" if target.is_dir() else target
    if not path.exists():
        raise _fail(ConfigError(f"no privacy ledger at {path} (a run without DP has none)", source=str(target)))
    try:
        report = verify_ledger(path, public_key=public_key)
    except LedgerTampered as err:
        if as_json:
            out_console.print_json(json.dumps({"verified": False, "error": str(err), "entry": err.entry}))
        err_console.print(f"[bold red]ledger check failed:[/] {err}", highlight=False)
        raise typer.Exit(EXIT_TAMPERED) from None
    except SiloBridgeError as err:
        raise _fail(err) from None
    if as_json:
        out_console.print_json(json.dumps({"verified": True, **report.to_dict()}, default=str))
        raise typer.Exit(0 if report.within_budget else EXIT_FAILED)
    from rich.table import Table

    summary = Table(title=f"Privacy ledger of run {report.run_id}", show_header=False)
    summary.add_row("ledger", str(path))
    summary.add_row("entries", f"{report.entries} (chain and signatures verified)")
    summary.add_row(
        "signing key", f"{report.public_key} ({'trusted' if report.key_trusted else 'from the ledger header only'})"
    )
    summary.add_row(
        "accountant",
        f"{report.accountant.kind.value}, {report.accountant.relation.name}, unit {report.accountant.unit.value}",
    )
    summary.add_row("budget", f"epsilon {report.budget.epsilon:g} at delta {report.budget.delta:g}")
    summary.add_row("epsilon spent (recomputed)", f"{report.epsilon_overall:.4f}")
    summary.add_row("within budget", "yes" if report.within_budget else "NO")
    summary.add_row("ended", report.end_reason if report.ended else "no end entry: the run was cut off")
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
    for column in ("entry", "release", "mechanism", "firms", "epsilon after"):
        releases.add_column(column)
    for release in report.releases:
        releases.add_row(
            str(release.index),
            release.release_id,
            release.mechanism,
            str(len(release.firms)),
            f"{release.epsilon_overall:.4f}",
        )
    out_console.print(releases)
    for refusal in report.refusals:
        out_console.print(f"refused: {refusal}")
    if not report.within_budget:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (runs/<run-id>).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the HTML file (default RUN_DIR/report.html).")
    ] = None,
) -> None:
    """Write a self-contained HTML report of a run: training curves, privacy spent (ledger audited), efficiency, events.

    Exit code as for audit: 0, or 3 when the ledger fails verification and 1 when it shows an overspend.
    """
    from federation.report import write_report

    try:
        path, run = write_report(run_dir, out)
    except SiloBridgeError as err:
        raise _fail(err) from None
    if run.audit is not None:
        style = "green" if run.audit.verified and run.audit.report.within_budget else "bold red"
        out_console.print(f"privacy ledger: [{style}]{run.audit.verdict}[/]", highlight=False)
    out_console.print(f"Report written to [bold]{path}[/]")
    if run.audit is not None and not run.audit.verified:
        raise typer.Exit(EXIT_TAMPERED)  # the report is written either way; the exit code carries the verdict
    if run.audit is not None and not run.audit.report.within_budget:
        raise typer.Exit(EXIT_FAILED)


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
    from server.privacy import PrivacyPlan, accounting_spec, resolve_privacy
    from silobridge.config import PrivacySpec

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
    except (SiloBridgeError, ValueError) as err:
        raise _fail(err if isinstance(err, SiloBridgeError) else ConfigError(str(err), source="command line")) from None
    plan = PrivacyPlan(spec=resolved, rounds=rounds, local_epochs=local_epochs, num_firms=1, min_firms=1, model_dim=1)
    from privacy.dp import epsilon as spent

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
    from federation.network.certs import make_certificates

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
) -> None:
    """Firm: make the SuperNode's authentication key pair (EC P-384, OpenSSH format)."""
    from federation.network.keys import make_node_keys

    try:
        files = make_node_keys(out, overwrite=overwrite, comment=out.stem)
    except SiloBridgeError as err:
        raise _fail(err) from None
    out_console.print(f"Private key (never leaves this machine): [bold]{files.private_key}[/]")
    out_console.print(f"Public key (send to the coordinator): [bold]{files.public_key}[/]")
    out_console.print(f"Fingerprint (read it to the coordinator out of band): {files.fingerprint}")


def _federation(config: Path):  # noqa: ANN202 - returns (Scenario, FederationSpec)
    from federation.settings import settings_from_run_config

    settings = settings_from_run_config({"scenario": str(config.resolve()), "dp": "off", "data": "nodes"})
    return settings.scenario, settings.spec


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
    """Firm: check its CSV files against the federation's schema, reporting file, row and column. Sends nothing."""
    from federation.firm_source import validate_firm_folder

    try:
        scenario, spec = _federation(config)
        data = validate_firm_folder(data_dir, scenario, spec, firm_id=firm_id)
    except SiloBridgeError as err:
        raise _fail(err) from None
    parts = []
    if data.demand is not None:
        parts.append(f"demand.csv {len(data.demand)} rows, {data.demand['series'].nunique()} series")
    if data.risk is not None:
        parts.append(f"risk.csv {len(data.risk)} rows")
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

    from federation.network.certs import CA_CERT, SERVER_CERT, SERVER_KEY
    from federation.network.deploy import (
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

    from federation.network.deploy import process_env, register_command
    from federation.network.keys import fingerprint

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
) -> None:
    """Firm: validate its data again, then start a SuperNode that joins the federation's rounds."""
    import subprocess

    from federation.firm_source import validate_firm_folder
    from federation.network.deploy import argv_text, process_env, split_address, supernode_command

    try:
        split_address(superlink)
        for path, option in ((ca, "--ca"), (key, "--key")):
            if not path.is_file():
                raise ConfigError(f"{path} does not exist", source="command line", field=option)
        scenario, spec = _federation(config)
        firm = validate_firm_folder(data, scenario, spec, firm_id=firm_id)
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
        )
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


@app.command("run")
def run_federation_command(
    config: Annotated[Path, typer.Argument(help="The federation file (firms, schema, training, privacy).")] = Path(
        "federation.toml"
    ),
    out: Annotated[Path, typer.Option("--out", help="Folder that receives the run directory.")] = Path("runs"),
    run_id: Annotated[str | None, typer.Option(help="Name of the run directory.")] = None,
) -> None:
    """Coordinator: run the federation on the SuperLink (`flwr run`); same log, summary and ledger as a simulation.

    No overrides: every partner's node refuses settings that differ from the federation file it holds,
    so a change (rounds, privacy, aggregation) is a new federation file shared with every partner.
    """
    import json
    import subprocess

    from federation.network.deploy import process_env, run_command
    from federation.settings import APP_DIR, settings_from_run_config

    run_config: dict[str, str | int] = {
        "scenario": str(config.resolve()),
        "out-dir": str(out.resolve()),
        "data": "nodes",
        "run-id": run_id or "",
    }
    try:
        settings = settings_from_run_config(run_config)
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


def main() -> None:
    from federation.settings import quiet_accountant

    quiet_accountant()
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
