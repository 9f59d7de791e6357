"""`silobridge`: simulate a federation, audit a run's privacy ledger, calibrate noise, generate data.

Every SiloBridge error ends the command with its message (naming file, firm and field) and a
non-zero exit code: 2 for bad configuration or data, 1 for a run that failed or overspent, 3 for a
ledger that fails verification.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from silobridge.errors import ConfigError, DataError, LedgerTampered, SiloBridgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SiloBridge: federated analytics for supply chains.")
err_console = Console(stderr=True)
out_console = Console()

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
) -> None:
    """Simulate every firm of a scenario as a Flower client and compare federated, local-only, centralised and naive."""
    from federation.progress import (
        LogObserver,
        RichObserver,
        acceptance_table,
        efficiency_table,
        log_to_stderr,
        privacy_table,
        results_tables,
    )
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
    if run_id:
        run_config["run-id"] = run_id
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
    for table in results_tables(result.summary):
        out_console.print(table)
    efficiency = efficiency_table(result.summary)
    if efficiency is not None:
        out_console.print(efficiency)
    out_console.print(acceptance_table(result.summary))
    privacy = privacy_table(result.summary)
    if privacy is not None:
        out_console.print(privacy)
    out_console.print(f"Run directory: [bold]{result.path}[/]")


@app.command()
def generate(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (TOML).")],
    out: Annotated[Path, typer.Option("--out", help="Folder that receives one sub-folder of CSV files per firm.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a scenario field, as for simulate.")] = None,
) -> None:
    """Write each firm's generated data as the CSV files a partner firm would prepare (demand.csv, risk.csv)."""
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
        write_firm_data(out / firm.id, tables.demand, tables.risk)
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
