"""The SuperLink under many loopback partners: real SuperNodes, one shared warm executor, a few rounds.

Run from the repository root: `python -m benchmarks.bench_many_partners [--nodes 5 10 50] [--rounds 3]
[--aggregation plain|secure] [--results NAME]`. Writes benchmarks/results/NAME.{json,md} (default many_partners).

Per size: a federation file (a distributor and its retailers, bench_network's), each firm's CSV files and key;
one SuperLink with TLS and node authentication (`silobridge superlink`), every key registered (`flwr supernode
register`), one real SuperNode per firm (`flower-supernode --isolation process` through our polling hook, as
`silobridge join` starts it, without join's supervisor), and one shared warm executor (benchmarks/_shared_executor:
imports once, forks one poller per node, each forking per task as a partner's executor does, at most `--max-tasks`
at once over all nodes, default 4: on 2 cores more would only queue, each holding its memory), then `silobridge
run`. Reported: rounds completed and any dropout (a failed round), the run's wall time, the flower-superlink
process's CPU seconds (over the run alone, and over its whole life with the registrations) and peak resident
memory, and the memory of the partners' processes (PSS, so pages shared by forks count once) per SuperNode and
for the shared executor with its pollers, sampled at the end of the run. Partners on their own machines would each
run their own executor; what this measures is the SuperLink's side and the loopback's cost on 2 cores.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks._common import write_results
from benchmarks.bench_network import _descendants, federation_file, round_seconds, superlink_usage
from silobridge.clients.data import write_firm_data
from silobridge.federation.network.deploy import register_command
from silobridge.federation.network.keys import make_node_keys
from silobridge.federation.network.launch import plan_node
from silobridge.federation.network.loopback import LoopbackFederation, free_port
from silobridge.federation.network.node_supervisor import superexec_secret, wait_listening
from silobridge.scenarios.generator import generate_chain
from silobridge.scenarios.schema import load_scenario

ROOT = Path(__file__).resolve().parent.parent


def pss_mib(pid: int) -> float:
    """A process's proportional set size (its private pages plus its share of shared ones), MiB; 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _wait_for(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def one_size(
    nodes: int, rounds: int, aggregation: str, work: Path, max_tasks: int = 4, model: str | None = None
) -> dict[str, Any]:
    """One federation of `nodes` partners run for `rounds` rounds; its figures."""
    work.mkdir(parents=True)
    config = federation_file(work / "federation.toml", nodes, rounds, aggregation=aggregation, model=model)
    scenario = load_scenario(config)
    chain = generate_chain(scenario)
    firms = list(scenario.firm_ids)
    for firm in firms:
        write_firm_data(work / "data" / firm, chain.tables[firm].demand, chain.tables[firm].risk)
    with LoopbackFederation(work, config, ROOT) as net, superexec_secret() as secret:
        net.cli("certs", "--out", str(work / "certs"), "--host", "127.0.0.1")
        for firm in firms:
            make_node_keys(net.key(firm))
        net.start_superlink()
        setup_started = time.perf_counter()

        def register(firm: str) -> None:
            public = net.key(firm).with_name(net.key(firm).name + ".pub")
            done = subprocess.run(register_command(public), env=net.env, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"registering {firm}: {done.stdout[-1000:]}{done.stderr[-1000:]}")

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(register, firms))
        entries = []
        for firm in firms:
            port = free_port()
            plan = plan_node(
                superlink=net.address,
                ca=net.ca_cert,
                key=net.key(firm),
                data=work / "data" / firm,
                config=config,
                runtime_port=port,
            )
            command = [*plan.command, "--isolation", "process", "--superexec-auth-secret-file", str(secret)]
            node = net.start(f"node-{firm}", command)
            node_config = command[command.index("--node-config") + 1]
            entries.append({"firm": firm, "runtime_address": f"127.0.0.1:{port}", "node_pid": node.pid, "node": node})
            entries[-1]["node_config"] = node_config
        for entry in entries:
            wait_listening(entry["runtime_address"], entry["node"], timeout_s=600)
        nodes_file = work / "nodes.json"
        nodes_file.write_text(json.dumps([{k: v for k, v in e.items() if k != "node"} for e in entries]))
        executor = net.start(
            "executor",
            [
                sys.executable,
                "-m",
                "benchmarks._shared_executor",
                "--nodes",
                str(nodes_file),
                "--secret",
                str(secret),
                "--handoff-dir",
                str(work),
                "--max-tasks",
                str(max_tasks),
            ],
        )
        _wait_for(
            lambda: net.log("executor").count("serving ") >= nodes or executor.poll() is not None,
            900,
            "the shared executor's pollers",
        )
        if executor.poll() is not None:
            raise RuntimeError(net.log("executor")[-3000:])
        setup_s = time.perf_counter() - setup_started
        before = superlink_usage(net.processes[0].pid)
        started = time.perf_counter()
        result = net.run(work / "runs", "net", timeout=3600)
        wall = time.perf_counter() - started
        after = superlink_usage(net.processes[0].pid)
        node_pss = [pss_mib(e["node_pid"]) for e in entries]
        executor_pids = [executor.pid, *_descendants(executor.pid)]
        executor_pss = sum(pss_mib(pid) for pid in executor_pids)
        summary_path = work / "runs" / "net" / "summary.json"
        if not summary_path.exists():
            raise RuntimeError(result.stdout[-3000:] + result.stderr[-3000:] + net.log("executor")[-2000:])
        summary = json.loads(summary_path.read_text())
    per_round = round_seconds(work / "runs" / "net")
    return {
        "nodes": nodes,
        "rounds": rounds,
        "aggregation": aggregation,
        "model": model or "scenario default",
        "rounds_recorded": len(per_round),
        "dropouts": len(summary.get("dropouts") or []),
        "round_s_mean": round(statistics.mean(per_round), 2),
        "run_wall_s": round(wall, 1),
        "setup_s": round(setup_s, 1),
        "superlink_cpu_run_s": round(after["superlink_cpu_s"] - before["superlink_cpu_s"], 1),
        "superlink_cpu_total_s": after["superlink_cpu_s"],
        "superlink_peak_rss_mib": after["superlink_peak_rss_mib"],
        "supernode_pss_mib_median": round(statistics.median(node_pss), 1),
        "supernodes_pss_mib_total": round(sum(node_pss), 1),
        "executor_pss_mib_total": round(executor_pss, 1),
        "executor_processes": len(executor_pids),
        "dropout_reasons": sorted({str(d.get("reason"))[:120] for d in summary.get("dropouts") or []}),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[5, 10, 50])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--aggregation", choices=("plain", "secure"), default="plain")
    parser.add_argument("--results", default="many_partners")
    parser.add_argument("--max-tasks", type=int, default=4, help="The shared executor's tasks running at once.")
    parser.add_argument(
        "--model", default=None, help="Training model: 'mlp' trains FedAvg rounds; the default (linear) releases once."
    )
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-many-") as tmp:
        for nodes in args.nodes:
            row = one_size(nodes, args.rounds, args.aggregation, Path(tmp) / f"n{nodes}", args.max_tasks, args.model)
            row["load_average_1m_after"] = round(os.getloadavg()[0], 1)
            print(row, flush=True)
            rows.append(row)
    parameters = {
        "nodes": args.nodes,
        "rounds": args.rounds,
        "aggregation": args.aggregation,
        "max_tasks": args.max_tasks,
        "load_average_1m_before": round(load_before, 1),
        "load_average_1m": round(os.getloadavg()[0], 1),
    }
    notes = (
        "Each size: one SuperLink (TLS, node authentication), one real SuperNode per firm (its own key, registration "
        "and Runtime API; `--isolation process`), their tasks served by one shared warm executor that forks a poller "
        "per node and a process per task (benchmarks/_shared_executor.py; at most max_tasks tasks at once over all "
        "nodes), `silobridge run` for the rounds. "
        "rounds_recorded: the rounds in the run's metrics.jsonl (an MLP's FedAvg rounds; the linear model releases "
        "once: its demand release and Newton steps, numbered 1-3); the run completing (a summary) and dropouts from "
        "its summary: a failed round would abort the run or show as a dropout. superlink_cpu_run_s: the "
        "flower-superlink process's CPU seconds during the run; "
        "superlink_cpu_total_s and superlink_peak_rss_mib over its whole life (registrations and node connections "
        "included), from /proc. PSS (proportional set size: pages shared by forks counted once across them) of each "
        "SuperNode and of the shared executor with its pollers and any task still running, at the run's end. "
        "setup_s: registrations, nodes and executor started. All processes share this machine's 2 cores."
    )
    columns = [c for c in rows[0] if c != "dropout_reasons"]
    _, md_path = write_results(args.results, parameters=parameters, rows=rows, columns=columns, notes=notes)
    print(md_path.read_text())


if __name__ == "__main__":
    main()
