"""A real federation on loopback against the same simulation: round time for 2, 5 and 10 partners.

Run from the repository root: `python -m benchmarks.bench_network [--nodes 2 5 10] [--rounds 2]
[--executor cold|warm|both]`.
Writes benchmarks/results/network.{json,md} (`--results NAME` for another name, e.g. the smallest
configuration: `--nodes 2 --results network_small`).

For each size, one federation file (a distributor and its retailers) and its generated CSV files;
then, side by side in one run: the loopback federation (SuperLink with TLS and node
authentication, one `silobridge join` SuperNode per firm, `silobridge run`) and the pilot
simulation on the same files (`simulate --data`). Both run secure aggregation (plain for 2 firms,
where secure aggregation refuses: a sum of two tells each the other's input) and record-level DP.
Per round: wall seconds of each training round as the ServerApp measured it (metrics.jsonl).
`--executor` picks who serves each partner's messages (`silobridge join --executor`): `warm`, one
process per partner that imported everything once and forks per message; `cold`, the same executor
starting a fresh interpreter per message (what Flower's own `flwr-clientapp` per message costs);
`both` runs the two side by side on the same files. Each message's hand-off (the executor took the
task from the SuperNode -> the ClientApp's handler entered) is recorded by `join --handoff-log`.
Every run is traced (`SILOBRIDGE_NET_TRACE`, federation/network/trace.py): the results carry each step of a
message's trip, median and max, from the ServerApp's push to its pull of the reply.
Also measured: the cold start of one ClientApp process (a SuperNode starts one per message), for a
stage that trains (torch, Opacus) and for a stage that does not (secure-sum key and unmask stages,
analytics: no model code).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import tomli_w

from benchmarks._common import write_results
from silobridge.clients.data import write_firm_data
from silobridge.federation.network.flower_hooks import (
    PULL_CAP_ENV,
    REMOTE_PULL_CAP_S,
    SUPEREXEC_POLL_ENV,
    SUPEREXEC_POLL_S,
)
from silobridge.federation.network.loopback import THREADS_ENV, LoopbackFederation
from silobridge.federation.network.task_wake import WAKE_ENV
from silobridge.federation.network.trace import SPANS, STEPS, TRACE_ENV, breakdown, load
from silobridge.federation.records import PACK_ENV
from silobridge.federation.simulation import simulate
from silobridge.scenarios.generator import generate_chain
from silobridge.scenarios.schema import load_scenario

ROOT = Path(__file__).resolve().parent.parent

POLLING = {"s11": {}, "s10": {WAKE_ENV: "0", SUPEREXEC_POLL_ENV: SUPEREXEC_POLL_S}}
"""`--polling`: the environment of every process of a loopback federation. 's10' turns the task wake-up off (each
warm executor asks its SuperNode for a task every 0.05 s while a run is active) and gives the SuperLink's SuperExec
the nodes' 0.05 s poll, as in session 10; 's11' leaves the code's own (wake-up on, the SuperLink's SuperExec 0.5 s)."""


def federation_file(
    path: Path, nodes: int, rounds: int, *, aggregation: str | None = None, model: str | None = None
) -> Path:
    """A distributor and `nodes - 1` retailers it supplies; sizes alternate large and small; `aggregation`
    ('plain' or 'secure'): default secure from 3 firms; `model`: the scenario's training model (default its own)."""
    firms = [{"id": "D1", "tier": "distributor", "size": 6.0, "history": 100, "region": "north"}]
    for i in range(1, nodes):
        large = i % 3 == 1
        firms.append(
            {
                "id": f"R{i}",
                "tier": "retailer",
                "size": 6.0 if large else 1.2,
                "history": 100 if large else 45,
                "region": "north" if i % 2 else "south",
            }
        )
    raw = {
        "name": f"net{nodes}",
        "seed": 5,
        "end": "2025-12-29",
        "items": 4,
        "firms": firms,
        "links": [{"supplier": "D1", "customer": f["id"]} for f in firms[1:]],
        "training": {"rounds": rounds, "local_epochs": 1, "hidden": 16, "min_firms": 2},
    }
    if nodes < 3:  # a sum of two firms tells each the other's input: secure aggregation refuses it
        raw["aggregation"] = {"mode": "plain"}
    if aggregation is not None:
        raw["aggregation"] = {"mode": aggregation}
    if model is not None:
        raw["training"]["model"] = model  # type: ignore[index]
    text = tomli_w.dumps(raw).replace('end = "2025-12-29"', "end = 2025-12-29")
    path.write_text(text)
    return path


def round_seconds(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    by_round: dict[int, float] = {}
    for record in records:
        by_round[record["round"]] = record["seconds"]
    return [by_round[r] for r in sorted(by_round)]


COLD_STARTS = {
    "light": "import silobridge.federation.client_app",
    "train": "import silobridge.federation.client_app, silobridge.clients.firm, silobridge.clients.own_budget",
}
"""What a fresh ClientApp process imports for a stage without model code, and for one that trains."""


def clientapp_cold_start(repeats: int, code: str = COLD_STARTS["train"]) -> list[float]:
    """Seconds for a fresh interpreter to import what a stage needs: per message on a SuperNode."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
        times.append(time.perf_counter() - started)
    return times


def handoffs_ms(logs: list[Path]) -> list[float]:
    """Every message's hand-off, in ms, from the partners' `--handoff-log` files."""
    rows = [json.loads(line) for log in logs if log.exists() for line in log.read_text().splitlines()]
    return [row["handoff_ms"] for row in rows]


def _descendants(pid: int) -> list[int]:
    """`pid`'s child processes, their children, ... (Linux /proc)."""
    found, stack = [], [pid]
    while stack:
        parent = stack.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            stack += children
    return found


def superlink_usage(launcher_pid: int) -> dict[str, float]:
    """The `flower-superlink` process under `silobridge superlink` (`launcher_pid`): its CPU seconds (user +
    system) and its peak resident memory (VmHWM) so far, read from /proc before it is stopped."""
    for pid in [launcher_pid, *_descendants(launcher_pid)]:
        try:
            if "flower-superlink" not in Path(f"/proc/{pid}/cmdline").read_text():
                continue
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
        ticks = os.sysconf("SC_CLK_TCK")
        return {
            "superlink_cpu_s": round((int(fields[11]) + int(fields[12])) / ticks, 1),
            "superlink_peak_rss_mib": round(peak_kib / 1024, 1),
        }
    return {}


ROLES = (
    ("superlink", "flower-superlink"),
    ("serverapp", "flwr-serverapp"),
    ("supernode", "silobridge.federation.network.supernode"),
    ("executor", "warm_executor"),
)
"""CPU roles by a piece of each process's command line; anything else (launchers, supervisors) is 'other'."""


def cpu_by_role(roots: list[int]) -> dict[str, float]:
    """CPU seconds (user + system) so far of every process under `roots`, by role (ROLES); the children a process
    has reaped count as '<role> reaped' (the SuperLink's ServerApp processes), except a warm executor's forked
    tasks, counted with it ('executor+tasks')."""
    ticks = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    seen: set[int] = set()
    for pid in [p for root in roots for p in (root, *_descendants(root))]:
        if pid in seen:
            continue
        seen.add(pid)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        role = next((name for name, text in ROLES if text in cmdline), "other")
        own, reaped = int(fields[11]) + int(fields[12]), int(fields[13]) + int(fields[14])
        if role == "executor":
            own, reaped, role = own + reaped, 0, "executor+tasks"
        totals[role] = totals.get(role, 0.0) + own / ticks
        if reaped:
            totals[f"{role} reaped"] = totals.get(f"{role} reaped", 0.0) + reaped / ticks
    return totals


def arms(pollings: tuple[str, ...], threads: tuple[str, ...]) -> list[tuple[str, str]]:
    """The (polling, threads) arms to run: every pair, but the session-10 polling only with torch's default threads
    when both thread choices are asked for (the before arm: one change at a time from there)."""
    pairs = [(p, t) for p in pollings for t in threads]
    if len(threads) > 1:
        pairs = [(p, t) for p, t in pairs if not (p == "s10" and t != "all")]
    return pairs


def network_run(
    work: Path,
    config: Path,
    firms: list[str],
    executor: str,
    pull_cap: float | None = None,
    pack: bool = True,
    polling: str = "s11",
    threads: str = "1",
) -> dict[str, Any]:
    """One loopback federation whose partners join with `--executor executor` (and, if given, whose SuperNodes and
    ServerApp wait at most `pull_cap` s between pulls of an object: PULL_CAP_ENV; `pack` False: every process sends
    one Array per name, PACK_ENV=0; `polling` 's10': the task polls as in session 10, POLLING; `threads` 'all':
    each process's torch uses every core, as before session 11, THREADS_ENV unset); its round times, hand-offs and
    CPU."""
    folder = work / (executor if pull_cap is None else f"{executor}-cap{pull_cap:g}")
    folder = folder.with_name(folder.name + ("" if pack else "-unpacked") + f"-{polling}-t{threads}")
    folder.mkdir()
    logs = [folder / f"handoff-{firm}.jsonl" for firm in firms]
    trace = folder / "trace.jsonl"
    with LoopbackFederation(folder, config, ROOT) as net:
        net.env[TRACE_ENV] = str(trace)
        if pull_cap is not None:
            net.env[PULL_CAP_ENV] = repr(pull_cap)
        net.env[PACK_ENV] = "1" if pack else "0"
        net.env.update(POLLING[polling])
        if threads == "all":
            net.env.pop(THREADS_ENV, None)
        net.make_credentials(firms)
        net.start_superlink()
        for firm, log in zip(firms, logs, strict=True):
            net.register(firm)
            net.join(firm, work / "data" / firm, "--executor", executor, "--handoff-log", str(log))
        roots = [process.pid for process in net.processes]
        cpu_before = cpu_by_role(roots)
        started = time.perf_counter()
        result = net.run(folder / "runs", "net", timeout=3600)
        wall = time.perf_counter() - started
        cpu_after = cpu_by_role(roots)
        usage = superlink_usage(net.processes[0].pid)  # the SuperLink is the first process started
        if not (folder / "runs" / "net" / "summary.json").exists():
            raise RuntimeError(result.stdout[-3000:] + result.stderr[-3000:])
    handoffs = handoffs_ms(logs)
    steps = breakdown(load(trace))
    return {
        "rounds": round_seconds(folder / "runs" / "net"),
        "wall": wall,
        "handoff_median_ms": round(statistics.median(handoffs), 1) if handoffs else None,
        "handoff_max_ms": round(max(handoffs), 1) if handoffs else None,
        "handoff_available_median_ms": steps.get("handoff_available", {}).get("median_ms"),
        "messages": len(handoffs),
        **usage,
        "cpu_s": {role: round(cpu_after[role] - cpu_before.get(role, 0.0), 1) for role in sorted(cpu_after)},
        "steps": steps,
    }


def measure(
    nodes: int,
    rounds: int,
    work: Path,
    executors: list[str],
    pull_caps: list[float | None],
    packs: list[bool],
    model: str | None = None,
    pollings: tuple[str, ...] = ("s11",),
    threads: tuple[str, ...] = ("1",),
) -> list[dict[str, Any]]:
    work.mkdir(parents=True)
    config = federation_file(work / "federation.toml", nodes, rounds, model=model)
    scenario = load_scenario(config)
    chain = generate_chain(scenario)
    for firm in scenario.firm_ids:
        write_firm_data(work / "data" / firm, chain.tables[firm].demand, chain.tables[firm].risk)
    runs = {
        (executor, cap, pack, polling, thread): network_run(
            work, config, list(scenario.firm_ids), executor, cap, pack, polling, thread
        )
        for executor in executors
        for cap in pull_caps
        for pack in packs
        for polling, thread in arms(pollings, threads)
    }
    started = time.perf_counter()
    pilot = simulate(
        {"scenario": str(config), "out-dir": str(work / "runs"), "run-id": "sim", "data": str(work / "data")}
    )
    simulation_wall = time.perf_counter() - started
    sim_round = statistics.mean(round_seconds(pilot.path))
    rows = []
    for (executor, cap, pack, polling, thread), run in runs.items():
        net_round = statistics.mean(run["rounds"])
        rows.append(
            {
                "nodes": nodes,
                "rounds": rounds,
                "aggregation": "plain" if nodes < 3 else "secure",
                "executor": executor,
                "pull_cap_s": cap if cap is not None else REMOTE_PULL_CAP_S,
                "packed": pack,
                "polling": polling,
                "torch_threads": thread,
                "network_round_s": round(net_round, 2),
                "simulation_round_s": round(sim_round, 2),
                "round_ratio": round(net_round / sim_round, 2),
                "handoff_median_ms": run["handoff_median_ms"],
                "handoff_max_ms": run["handoff_max_ms"],
                "handoff_available_median_ms": run["handoff_available_median_ms"],
                "messages": run["messages"],
                "network_run_s": round(run["wall"], 1),
                "superlink_cpu_s": run.get("superlink_cpu_s"),
                "superlink_peak_rss_mib": run.get("superlink_peak_rss_mib"),
                "simulation_run_s": round(simulation_wall, 1),
                "run_cpu_s": run["cpu_s"],
                "steps": run["steps"],
            }
        )
    return rows


def steps_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: each step of a message's trip (federation/network/trace.py), median / max ms, per run."""
    names = [name for name, _, _ in (*STEPS, *SPANS)]
    head = "| nodes | executor | pull cap s | packed | polling | threads | " + " | ".join(names) + " |"
    lines = [head, "| " + " | ".join("---" for _ in range(len(names) + 6)) + " |"]
    for row in rows:
        steps = row.get("steps") or {}
        cells = [f"{steps[n]['median_ms']:.0f} / {steps[n]['max_ms']:.0f}" if n in steps else "-" for n in names]
        arm = f"{row['packed']} | {row['polling']} | {row['torch_threads']}"
        label = f"| {row['nodes']} | {row['executor']} | {row['pull_cap_s']:g} | {arm} | "
        lines.append(label + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cold-starts", type=int, default=5)
    parser.add_argument("--results", default="network", help="Name of the results files.")
    parser.add_argument(
        "--executor", choices=("cold", "warm", "both"), default="both", help="Who serves the partners' messages."
    )
    parser.add_argument(
        "--pull-caps",
        type=float,
        nargs="+",
        default=None,
        help=f"Run each size once per cap (s) on the longest wait between object pulls from the SuperLink "
        f"({PULL_CAP_ENV}), side by side; default: the code's own ({REMOTE_PULL_CAP_S} s), once.",
    )
    parser.add_argument(
        "--pack",
        choices=("on", "off"),
        nargs="+",
        default=["on"],
        help=f"Run each size once per choice, side by side: 'on' packs each record's arrays into one Flower object "
        f"(the default since session 10), 'off' sends one per array ({PACK_ENV}=0, before).",
    )
    parser.add_argument(
        "--polling",
        choices=tuple(POLLING),
        nargs="+",
        default=["s11"],
        help="Run each size once per choice, side by side: 's11' (the code's own: each SuperNode wakes its executor "
        "when it creates a task; the SuperLink's SuperExec polls every 0.5 s), 's10' (before: the executors and the "
        "SuperLink's SuperExec poll every 0.05 s).",
    )
    parser.add_argument(
        "--threads",
        choices=("1", "all"),
        nargs="+",
        default=["1"],
        help=f"Run once per choice, side by side: '1' (the loopback's own, {THREADS_ENV}=1: one torch thread per "
        "process, as each simulated firm), 'all' (torch's default, one per core in every process: before session "
        "11). With two --polling choices and two here, three arms run: s10/all (before), s11/all, s11/1.",
    )
    parser.add_argument("--model", default=None, help="The federation's training model (default: the scenario's).")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    starts = clientapp_cold_start(args.cold_starts)
    light = clientapp_cold_start(args.cold_starts, COLD_STARTS["light"])
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-network-") as tmp:
        for nodes in args.nodes:
            executors = ["cold", "warm"] if args.executor == "both" else [args.executor]
            caps: list[float | None] = list(args.pull_caps) if args.pull_caps else [None]
            packs = [choice == "on" for choice in args.pack]
            work = Path(tmp) / f"n{nodes}"
            for row in measure(
                nodes, args.rounds, work, executors, caps, packs, args.model, tuple(args.polling), tuple(args.threads)
            ):
                print(row, flush=True)
                rows.append(row)
    start_s, light_s = statistics.median(starts), statistics.median(light)
    notes = (
        f"ClientApp cold start (fresh interpreter importing torch, flwr and the ClientApp), median of "
        f"{len(starts)}: {start_s:.2f} s; for a stage without model code (secure-sum key and unmask stages, "
        f"analytics: no torch, no Opacus): {light_s:.2f} s. A SuperNode starts one such process per message, so "
        "every exchange costs each partner at least this, in parallel across partners (each on its own machine); a "
        "secure, private round is 2 exchanges (train, then unmask without model code), plus 2 per key-agreement "
        "session. The SuperNode's idle and reply sleeps are shortened (federation/network/flower_hooks.py) and the "
        "warm executor is woken by its SuperNode when a task is created (polling 's11'; 's10': it asked every 0.05 s, "
        "as did the SuperLink's SuperExec, now 0.5 s); torch_threads '1': every process of the loopback federation "
        "uses one torch thread (OMP_NUM_THREADS=1, as each simulated firm), 'all': torch's default (one per core). "
        "run_cpu_s: CPU seconds of each role's processes over the run (executor+tasks: the warm executors with their "
        "forked tasks; other: every other process under the federation's launchers: `silobridge` commands, "
        "supervisors, the SuperLink's SuperExec). Here every partner's "
        "SuperNode and its per-message processes share this machine's cores, so the loopback round grows with the "
        "number of nodes (n cold starts per exchange on 2 cores); on the partners' own machines an exchange costs "
        "about one cold start plus the network and training, whatever the number of partners. "
        "executor 'warm' (the default of `silobridge join`): each partner's warm executor imported torch, Opacus, flwr "
        "and the ClientApp once and forks per message; 'cold': the same executor starting a fresh interpreter per "
        "message; a warm ClientApp start is the trace's fork step (task taken -> the fork runs) plus load_app. "
        "handoff: the executor took the task from its SuperNode -> the ClientApp's handler entered, over every message "
        "of every partner (the executor's own record); the SuperNode creates the task as soon as it has the message "
        "and only then pulls the message's objects from the SuperLink (which the ServerApp may still be pushing), so "
        "this hand-off also holds that transfer. handoff_available: the message whole at the SuperNode (its objects "
        "pulled) -> the handler entered (trace). pull_cap_s: the longest wait between two pulls of a missing object "
        "from the SuperLink (SuperNodes and ServerApp; 1.0 until session 9, 0.1 since). packed: each record's arrays "
        "sent as one Flower object (True, since session 10: a training request is 14 objects instead of 36) or one "
        "per array (False), each object pushed and pulled by its own request. superlink_cpu_s, "
        "superlink_peak_rss_mib: the flower-superlink process's CPU seconds and peak resident memory over its whole "
        "life (the partners' registration and connection, then the run), read from /proc. Targets (issue 20): handoff "
        "(message available at the SuperNode -> our handler running) median <= 150 ms, 2 partners plain round <= "
        "1.5 s."
    )
    parameters = {
        "nodes": args.nodes,
        "rounds": args.rounds,
        "executor": args.executor,
        "pull_caps_s": args.pull_caps or [REMOTE_PULL_CAP_S],
        "pack": args.pack,
        "polling": args.polling,
        "threads": args.threads,
        "model": args.model or "scenario default",
        "load_average_1m_before": round(load_before, 1),
        "clientapp_cold_start_s": [round(t, 2) for t in starts],
        "clientapp_cold_start_light_s": [round(t, 2) for t in light],
        "load_average_1m": round(os.getloadavg()[0], 1),
    }
    notes += (
        "\n\nWhere a message's time goes (median / max ms over every message of the run; steps in "
        "federation/network/trace.py: push = the ServerApp's push_messages; to_node = pushed -> the SuperNode created "
        "the task; node_objects = task created -> the SuperNode has pulled the message's objects from the SuperLink "
        "(beside the next three); to_executor = task created -> the executor took it; fork = -> the task's process "
        "runs; input = -> Flower's runner pulled context, run, FAB and message; fab = FAB installed; load_app = -> our "
        "handler entered; handler = our ClientApp's work; push_reply = reply pushed to the SuperNode; to_link = -> the "
        "SuperNode sent it to the SuperLink; to_server = -> the ServerApp's pull returned it; round_trip = push start "
        "-> pulled; handoff and handoff_available as above):\n\n" + steps_table(rows)
    )
    columns = [c for c in rows[0] if c != "steps"] if rows else ["nodes"]
    json_path, md_path = write_results(args.results, parameters=parameters, rows=rows, columns=columns, notes=notes)
    print(md_path.read_text())


if __name__ == "__main__":
    main()
