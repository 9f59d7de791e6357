"""Plain FedAvg simulations of 10, 50 and 200 firms: wall time, time per round, peak memory.

Run from the repository root:  python -m benchmarks.bench_fedavg_scale [--rounds 5] [--firms 10 50 200]

Each size runs `silobridge simulate` in a fresh process (so Ray's start-up and memory are counted),
on a chain built by `scenarios.builder`. The summary's stage timings say where the time goes:
start-up (Ray and the virtual SuperNodes), local-only baselines, the rounds, the centralised
baseline. Results: benchmarks/results/fedavg_scale.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import TreeMemorySampler, write_results
from silobridge.scenarios.builder import chain_scenario, to_toml

ROOT = Path(__file__).resolve().parent.parent


def run_one(num_firms: int, rounds: int, work: Path) -> dict[str, object]:
    scenario = work / f"chain{num_firms}.toml"
    scenario.write_text(to_toml(chain_scenario(num_firms, seed=20251230, name=f"chain{num_firms}", rounds=rounds)))
    command = [
        sys.executable,
        "-m",
        "silobridge.federation.cli",
        "simulate",
        str(scenario),
        "--plain",
        "--out",
        str(work / "runs"),
        "--run-id",
        f"n{num_firms}",
    ]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with TreeMemorySampler(process.pid) as memory:
        output, _ = process.communicate()
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"simulation of {num_firms} firms failed:\n{output[-4000:]}")
    summary = json.loads((work / "runs" / f"n{num_firms}" / "summary.json").read_text())
    stages = summary["stage_seconds"]
    return {
        "firms": num_firms,
        "rounds": rounds,
        "wall_s": round(wall, 2),
        "per_round_s": round(stages["rounds"] / rounds, 3),
        "per_round_per_firm_ms": round(1000 * stages["rounds"] / rounds / num_firms, 1),
        "startup_s": round(stages.get(f"waiting for {num_firms} firms", 0.0), 2),
        "local_baselines_s": stages.get("local-only baselines"),
        "rounds_s": stages["rounds"],
        "centralised_s": stages.get("centralised baseline"),
        "outside_server_s": round(wall - summary["seconds"], 2),
        "peak_rss_mib": round(memory.peak_mib, 1),
        "demand_wape_federated": summary["models"]["demand"]["federated"]["all"]["wape"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="FedAvg simulation scaling benchmark")
    parser.add_argument("--firms", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.firms:
            row = run_one(n, args.rounds, Path(tmp))
            print(json.dumps(row), flush=True)
            rows.append(row)
    base = rows[0]
    for row in rows:
        row["per_round_vs_smallest"] = round(row["per_round_s"] / base["per_round_s"], 2)
    columns = [
        "firms",
        "rounds",
        "wall_s",
        "startup_s",
        "local_baselines_s",
        "rounds_s",
        "per_round_s",
        "per_round_per_firm_ms",
        "per_round_vs_smallest",
        "centralised_s",
        "outside_server_s",
        "peak_rss_mib",
    ]
    json_path, md_path = write_results(
        "fedavg_scale",
        parameters={
            "firms": args.firms,
            "rounds": args.rounds,
            "aggregation": "plain",
            "scenario": "scenarios.builder",
        },
        rows=rows,
        columns=columns,
        notes="Stage seconds come from the run summary; outside_server_s is process start, imports and Ray shutdown.",
    )
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
