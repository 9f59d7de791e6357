"""Data: `generate` partner files from a scenario, `init` a federation file from extracts, `validate` a firm's files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from silobridge.errors import SiloBridgeError
from silobridge.federation.cli.common import fail, out_console, sub_app

app = sub_app()


@app.command()
def generate(
    scenario: Annotated[Path, typer.Argument(help="Scenario file (TOML).")],
    out: Annotated[Path, typer.Option("--out", help="Folder that receives one sub-folder of CSV files per firm.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a scenario field, as for simulate.")] = None,
) -> None:
    """Write each firm's generated data as a partner firm's CSV files (demand.csv, risk.csv, orders.csv)."""
    from silobridge.federation.pilot_data import generate_firm_files

    try:
        firms = generate_firm_files(scenario, set_ or [], out)
    except SiloBridgeError as err:
        raise fail(err) from None
    out_console.print(f"Wrote {len(firms)} firms' data to [bold]{out}[/]")


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
    from silobridge.federation.pilot_data import write_federation_file
    from silobridge.federation.pilot_init import Columns

    try:
        columns = Columns(date=date_column, units=units_column, series=series_column, label=label_column)
        surveys = write_federation_file(data_dir, out, name=name, columns=columns)
    except SiloBridgeError as err:
        raise fail(err) from None
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
    from silobridge.federation.pilot_data import check_firm_folder

    try:
        checked = check_firm_folder(data_dir, config, firm_id=firm_id)
    except SiloBridgeError as err:
        raise fail(err) from None
    out_console.print(f"firm '{checked.data.firm_id}': valid ({'; '.join(checked.parts)}); nothing was sent anywhere")
