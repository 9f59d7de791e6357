"""`silobridge report RUN_DIR`: one self-contained HTML page about a run (plots, tables, the ledger's audit).

`load_run` reads and checks the run directory, `render` draws the page; `write_report` does both.
"""

from __future__ import annotations

from pathlib import Path

from federation.report.data import REPORT_FILE, RunData, load_run
from federation.report.page import render


def write_report(run_dir: Path, out: Path | None = None) -> tuple[Path, RunData]:
    """Write the report of `run_dir` to `out` (default RUN_DIR/report.html); returns the path and what it read."""
    run = load_run(run_dir)
    target = out if out is not None else run_dir / REPORT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render(run), encoding="utf-8")
    return target, run


__all__ = ["REPORT_FILE", "RunData", "load_run", "render", "write_report"]
