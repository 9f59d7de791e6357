"""`silobridge`, the command line: one typer app made of a sub-app per group of commands.

- runs (`runs.py`): simulate a scenario's federation, run the real one on its SuperLink, report on a run;
- analytics (`query.py`): federated queries, simulated, on a pilot's files or over the network;
- data (`data.py`): generate partner files, init a federation file from extracts, validate a firm's files;
- privacy (`privacy.py`): audit a run's ledger, a firm's lifetime budget, calibrate the noise;
- network (`network.py`): certificates and keys, the SuperLink, registering firms, a firm joining.

Each command parses its options and prints; the work is done in the layers below (`federation`,
`server`, `clients`). Every SiloBridge error ends the command with its message (naming file, firm and
field) and a non-zero exit code: 2 for bad configuration or data, 1 for a run that failed or
overspent, 3 for a ledger (or odometer) that fails verification, 4 for an incomplete ledger (no end
entry), 5 for a ledger checked only against a key found in its own run directory, 130 for a command
stopped by Ctrl-C. Anything else is a bug: one line names the command and the error's class, and the
traceback goes to a private temp file (never local variables: they may hold a firm's rows or keys).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from silobridge.federation.cli import data, network, privacy, query, runs
from silobridge.federation.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INCOMPLETE,
    EXIT_INTERRUPTED,
    EXIT_SELF_SIGNED,
    EXIT_TAMPERED,
    err_console,
    out_console,
)

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INCOMPLETE",
    "EXIT_INTERRUPTED",
    "EXIT_SELF_SIGNED",
    "EXIT_TAMPERED",
    "app",
    "crash_report",
    "err_console",
    "main",
    "out_console",
]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="SiloBridge: federated analytics for supply chains.",
    # a traceback with locals would print a firm's rows or keys into a terminal or a CI log
    pretty_exceptions_show_locals=False,
)
for group in (runs, query, data, privacy, network):
    app.add_typer(group.app)  # no name: the group's commands are `silobridge <command>` as before


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
        sys.exit(EXIT_INTERRUPTED)
    except Exception as err:  # noqa: BLE001 - the last stop: anything we did not expect is a bug, said in one line
        command = " ".join(filter(None, ("silobridge", _command_name(sys.argv[1:]))))
        path = crash_report(err)
        err_console.print(
            f"[bold red]internal error:[/] `{command}` stopped on an unexpected {type(err).__name__}; this is a bug "
            f"in SiloBridge, not in your input. The traceback (without local variables) is in {path}",
            highlight=False,
        )
        sys.exit(EXIT_FAILED)
