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
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
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


def _machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores; /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _process_cpu_s(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    utime, stime = stat.rsplit(")", 1)[1].split()[11:13]
    return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")


class OtherWorkSampler:
    """How much of the machine other work used while a process tree ran (the tree started inside).

    Every `interval_s` it reads the CPU time of each process in the tree (keeping the last value of
    each, so processes that ended still count up to their last sample) and the machine's busy time.
    `other_share` = (machine busy - tree) / (wall x cores): 0 on a quiet machine; a benchmark whose
    ratios come from separate runs should flag the runs where it was high.
    """

    def __init__(self, pid: int, interval_s: float = 0.25):
        import threading

        self.pid = pid
        self.interval_s = interval_s
        self._tree_cpu: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.other_share = float("nan")

    def _sample(self) -> None:
        children = _children_map()
        stack = [self.pid]
        while stack:
            pid = stack.pop()
            stack.extend(children.get(pid, []))
            seconds = _process_cpu_s(pid)
            if seconds is not None:
                self._tree_cpu[pid] = seconds

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval_s)

    def __enter__(self) -> OtherWorkSampler:
        self._started = time.monotonic()
        self._busy_at_start = _machine_busy_s()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        wall = time.monotonic() - self._started
        other = _machine_busy_s() - self._busy_at_start - sum(self._tree_cpu.values())
        self.other_share = max(0.0, other) / (wall * (os.cpu_count() or 1)) if wall > 0 else float("nan")


@dataclass(frozen=True)
class LoggedRun:
    """A command run to completion with its output in a log file: exit code, wall time, the share of the
    machine other work used meanwhile, and the log's tail (for an error row)."""

    returncode: int
    wall_s: float
    other_share: float
    log_tail: str


def run_logged(command: Sequence[str], log: Path, cwd: Path) -> LoggedRun:
    """Run `command` in a fresh process (stdout and stderr to `log`), timing it and sampling other work."""
    started = time.monotonic()
    with log.open("w") as sink:
        process = subprocess.Popen(list(command), cwd=cwd, stdout=sink, stderr=subprocess.STDOUT, text=True)
        with OtherWorkSampler(process.pid) as other:
            process.wait()
    wall = time.monotonic() - started
    return LoggedRun(process.returncode, wall, other.other_share, log.read_text()[-2000:])
