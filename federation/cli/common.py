"""What every command of the CLI shares: the consoles, the exit codes, how an error ends a command,
and the summary table a run prints (a simulation's and a networked run's alike)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from silobridge.errors import ConfigError, DataError, SiloBridgeError

if TYPE_CHECKING:
    from pydantic import ValidationError

err_console = Console(stderr=True)
out_console = Console()

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TAMPERED = 3
EXIT_INCOMPLETE = 4  # a ledger without its end entry (privacy.ledger.verdict.Verdict)
EXIT_SELF_SIGNED = 5  # a ledger checked only against a key found in its own run directory
EXIT_INTERRUPTED = 130

PilotData = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Pilot on real extracts: a folder with one sub-folder of CSV files per firm of the scenario "
        "(each validated first) instead of generated data.",
    ),
]
"""`--data` of simulate and query: the firms' own files instead of the generator's."""


def sub_app() -> typer.Typer:
    """A group of commands; merged into `silobridge` without a name of its own (same command line)."""
    return typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)


def fail(err: SiloBridgeError) -> typer.Exit:
    """Print the error (naming file, firm and field) and the exit that ends the command: 2 for bad
    configuration or data, 1 for anything else."""
    kind = (
        "configuration error"
        if isinstance(err, ConfigError)
        else "data error"
        if isinstance(err, DataError)
        else "error"
    )
    err_console.print(f"[bold red]{kind}:[/] {err}", markup=True, highlight=False)
    return typer.Exit(EXIT_BAD_INPUT if isinstance(err, ConfigError | DataError) else EXIT_FAILED)


def option_error(err: ValidationError, options: dict[str, str]) -> ConfigError:
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


def print_summary(summary: dict) -> None:
    """A run's data lines, results, efficiency, acceptance and privacy tables."""
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
