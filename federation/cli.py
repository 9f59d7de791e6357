"""`silobridge`: simulate a federation, generate firms' data files.

Every SiloBridge error ends the command with its message (naming file, firm and field) and a
non-zero exit code: 2 for bad configuration or data, 1 for a run that failed.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from silobridge.errors import ConfigError, DataError, SiloBridgeError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="SiloBridge: federated analytics for supply chains.")
err_console = Console(stderr=True)
out_console = Console()

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


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
    plain: Annotated[bool, typer.Option("--plain", help="Log lines instead of the live progress display.")] = False,
) -> None:
    """Simulate every firm of a scenario as a Flower client and compare federated, local-only, centralised and naive."""
    from federation.progress import LogObserver, RichObserver, acceptance_table, results_tables
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
    if run_id:
        run_config["run-id"] = run_id
    try:
        settings = settings_from_run_config(run_config)
        run_config["run-id"] = settings.run_id
        if plain or not err_console.is_terminal:
            logging.basicConfig(level=logging.INFO, format="%(message)s")
            result = run(run_config, observer=LogObserver())
        else:
            with RichObserver(settings.scenario.training.rounds, console=err_console) as observer:
                result = run(run_config, observer=observer)
    except SiloBridgeError as err:
        raise _fail(err) from None
    for table in results_tables(result.summary):
        out_console.print(table)
    out_console.print(acceptance_table(result.summary))
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


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
