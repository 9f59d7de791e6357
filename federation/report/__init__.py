"""`silobridge report RUN_DIR`: one self-contained HTML page about a run (plots, tables, the ledger's audit).

`load_run` reads and checks the run directory, `render` draws the page; `write_report` does both.
"""

from __future__ import annotations

from pathlib import Path

from silobridge.errors import ConfigError
from silobridge.federation.report.data import REPORT_FILE, RunData, load_run
from silobridge.federation.report.page import render


def write_report(
    run_dir: Path, out: Path | None = None, *, public_key: str | None = None, federation: Path | None = None
) -> tuple[Path, RunData]:
    """Write the report of `run_dir` to `out` (a file, or a folder to hold report.html; default RUN_DIR/report.html).

    `public_key` or `federation` (the federation file) give the key the ledger is audited against.
    Returns the path written and what was read.
    """
    run = load_run(run_dir, public_key=public_key, federation=federation)
    target = out if out is not None else run_dir / REPORT_FILE
    if target.is_dir():
        target = target / REPORT_FILE
    page = render(run)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page, encoding="utf-8")
    except OSError as err:
        raise ConfigError(
            f"cannot write the report: {err.strerror or err}", source=str(target), field="--out"
        ) from None
    return target, run


__all__ = ["REPORT_FILE", "RunData", "load_run", "render", "write_report"]
