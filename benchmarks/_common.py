"""Shared plumbing for benchmarks: machine facts and a results file (JSON + Markdown table).

Benchmarks compare variants side by side in one run; absolute seconds vary across machines, ratios
hold. Every results file carries the machine, the date, the package versions and the parameters.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

_VERSIONED = ("silobridge", "flwr", "torch", "numpy", "cryptography", "dp-accounting", "opacus", "ray")


def machine_info() -> dict[str, Any]:
    """What a reader needs to compare this run with another one."""
    versions: dict[str, str] = {}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "hostname": platform.node(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "versions": versions,
    }


def peak_rss_mib() -> float:
    """Peak resident memory of this process and its waited-for children, in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024.0  # ru_maxrss is in KiB on Linux


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """A GitHub-flavoured Markdown table of `rows` restricted to `columns`."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def write_results(
    name: str,
    *,
    parameters: dict[str, Any],
    rows: Sequence[dict[str, Any]],
    columns: Sequence[str],
    notes: str = "",
    out_dir: Path | None = None,
) -> tuple[Path, Path]:
    """Write `<name>.json` and `<name>.md` (machine, date, versions, parameters, results)."""
    out = out_dir or RESULTS_DIR
    out.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    payload = {"benchmark": name, "machine": info, "parameters": parameters, "results": list(rows)}
    json_path = out / f"{name}.json"
    md_path = out / f"{name}.md"
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md = [
        f"# {name}",
        "",
        f"- date: {info['date']}",
        f"- machine: {info['hostname']} ({info['platform']}, {info['cpu_count']} CPUs)",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()),
        f"- parameters: `{json.dumps(parameters, default=str)}`",
        "",
        markdown_table(rows, columns),
        "",
    ]
    if notes:
        md += [notes, ""]
    md_path.write_text("\n".join(md))
    return json_path, md_path


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def tree_rss_mib(root: int) -> float:
    """Resident memory of a process and all its descendants now (Ray workers included), in MiB."""
    children = _children_map()
    total_kib, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kib += int(line.split()[1])
                    break
        except OSError:
            continue
    return total_kib / 1024.0


class TreeMemorySampler:
    """Samples `tree_rss_mib(pid)` in a background thread; `peak_mib` is the largest sample."""

    def __init__(self, pid: int, interval_s: float = 0.25):
        import threading

        self.pid = pid
        self.interval_s = interval_s
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_mib = max(self.peak_mib, tree_rss_mib(self.pid))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> TreeMemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
