"""FedAvg simulations of growing federations: wall time, time per round, baselines' share, peak memory,
and (`--flower`) Flower's own plain FedAvg over the same firms and MLPs, side by side.

Run from the repository root:
  python -m benchmarks.bench_fedavg_scale [--rounds 5] [--firms 10 50 200]            (plain, no DP: the default)
  python -m benchmarks.bench_fedavg_scale --firms 200 1000 --secure --dp --flower --name fedavg_scale_secure_dp

Each size runs `silobridge simulate` in a fresh process (so Ray's start-up and memory are counted),
on a chain built by `scenarios.builder` (the MLP family: `training.model = "mlp"`). The summary's stage
timings say where the time goes: start-up (Ray and the virtual SuperNodes), local-only baselines, the
rounds, the centralised baseline. With `--flower`, `benchmarks.flower_fedavg` then runs flwr's FedAvg
strategy on the same chain in a fresh process; its first round builds every firm's data (ours does that
when the firms connect), so the ratio compares our rounds with Flower's later rounds. Results:
benchmarks/results/<name>.{json,md}.
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

from benchmarks._common import TreeMemorySampler, write_results
from silobridge.clients.models import MODEL_KINDS
from silobridge.scenarios.builder import chain_scenario, to_toml

ROOT = Path(__file__).resolve().parent.parent


def _load() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def write_chain(num_firms: int, rounds: int, work: Path, items: int | None) -> Path:
    """The builder's chain of `num_firms` firms as a scenario file (`items` overrides its catalogue size)."""
    raw = chain_scenario(num_firms, seed=20251230, name=f"chain{num_firms}", rounds=rounds)
    if items is not None:
        raw["items"] = items
    scenario = work / f"chain{num_firms}.toml"
    scenario.write_text(to_toml(raw))
    return scenario


def steady_rounds(round_seconds: list[float]) -> list[float]:
    """The later half of a run's rounds (at least one): a simulated firm is built in each Ray worker the first
    time that worker serves it, so early rounds carry firm builds in proportions that differ between runs; by
    the later rounds every worker has built every firm, on our side and Flower's alike."""
    return round_seconds[len(round_seconds) // 2 :]


def our_round_seconds(rundir: Path) -> list[float]:
    """Each MLP round's seconds from the run's metrics (one record per model and round, the round's time on each;
    the linear family's releases have records of their own, not rounds)."""
    seconds: dict[int, float] = {}
    for line in (rundir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("model") in MODEL_KINDS and "seconds" in record:
            seconds[int(record["round"])] = float(record["seconds"])
    return [seconds[r] for r in sorted(seconds)]


def training_seconds(stages: dict[str, float]) -> float:
    """The training stages' seconds: the MLP's rounds, or the linear family's releases (its Newton steps too)."""
    return sum(v for k, v in stages.items() if k == "rounds" or k.startswith("linear "))


def run_one(
    num_firms: int,
    rounds: int,
    work: Path,
    *,
    secure: bool,
    dp: bool,
    baselines: str | None,
    model: str = "mlp",
    items: int | None = None,
) -> dict:
    """One `silobridge simulate` of the chain of `num_firms` firms, in a fresh process."""
    scenario = write_chain(num_firms, rounds, work, items)
    run_id = f"n{num_firms}{'s' if secure else 'p'}{'dp' if dp else ''}{model}"
    command = [
        sys.executable,
        "-m",
        "silobridge.federation.cli",
        "simulate",
        str(scenario),
        "--plain",
        *([] if model == "auto" else ["--set", f"training.model={model}"]),
        "--aggregation",
        "secure" if secure else "plain",
        "--out",
        str(work / "runs"),
        "--run-id",
        run_id,
        *([] if dp else ["--no-dp"]),
        *(["--baselines", baselines] if baselines else []),
    ]
    load_before = _load()
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    with TreeMemorySampler(process.pid) as memory:
        output, _ = process.communicate()
    wall = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"simulation of {num_firms} firms failed:\n{output[-4000:]}")
    summary = json.loads((work / "runs" / run_id / "summary.json").read_text())
    stages = summary["stage_seconds"]
    baselines_s = stages.get("local-only baselines", 0.0)
    selection = summary.get("baselines") or {}
    trained = training_seconds(stages)
    mlp_rounds = rounds if "rounds" in stages else 0  # the linear family alone has no rounds
    per_round = trained / mlp_rounds if mlp_rounds else trained
    steady = steady_rounds(our_round_seconds(work / "runs" / run_id)) if mlp_rounds else []
    return {
        "firms": num_firms,
        "rounds": rounds,
        "model": model,
        "families": "+".join(summary.get("model_families", [])),
        "stopped": summary.get("stopped"),
        "items": items,
        "aggregation": "secure" if secure else "plain",
        "dp": dp,
        "wall_s": round(wall, 2),
        "training_s": round(trained, 2),
        "per_round_s": round(per_round, 3),
        "per_round_per_firm_ms": round(1000 * per_round / num_firms, 1),
        "steady_round_s": round(statistics.mean(steady), 3) if steady else None,
        "startup_s": round(stages.get(f"waiting for {num_firms} firms", 0.0), 2),
        "local_baselines_s": baselines_s,
        "baselined": f"{selection.get('baselined', '?')}/{selection.get('of', num_firms)}",
        "baselines_share": round(baselines_s / wall, 3),
        "rounds_s": stages.get("rounds", 0.0),
        "deployment_s": stages.get("deployment (simulation)"),
        "centralised_s": stages.get("centralised baseline"),
        "outside_server_s": round(wall - summary["seconds"], 2),
        "peak_rss_mib": round(memory.peak_mib, 1),
        "load_before": load_before,
        "load_after": _load(),
        "demand_wape_federated": summary["models"]["demand"].get("federated", {}).get("all", {}).get("wape"),
        "stages": stages,
    }


def run_flower(num_firms: int, rounds: int, work: Path) -> dict:
    """Flower's own plain FedAvg (`benchmarks.flower_fedavg`) over the same chain file, in a fresh process."""
    scenario = work / f"chain{num_firms}.toml"
    out = work / f"flower{num_firms}.json"
    command = [
        sys.executable,
        "-m",
        "benchmarks.flower_fedavg",
        str(scenario),
        "--rounds",
        str(rounds),
        "--out",
        str(out),
    ]
    # Ray's workers import the benchmark's ClientApp too
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(ROOT)) if p)}
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    with TreeMemorySampler(process.pid) as memory:
        output, _ = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"Flower's FedAvg over {num_firms} firms failed:\n{output[-4000:]}")
    result = json.loads(out.read_text())
    later = result["round_s"][1:] or result["round_s"]
    return {
        "flower_wall_s": round(result["wall_s"], 2),
        "flower_first_round_s": round(result["round_s"][0], 3),
        "flower_round_s": round(statistics.mean(later), 3),
        "flower_steady_round_s": round(statistics.mean(steady_rounds(result["round_s"])), 3),
        "flower_round_list_s": [round(v, 3) for v in result["round_s"]],
        "flower_peak_rss_mib": round(memory.peak_mib, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="FedAvg simulation scaling benchmark")
    parser.add_argument("--firms", type=int, nargs="+", default=[10, 50, 200])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--secure", action="store_true", help="secure aggregation (default: in the clear)")
    parser.add_argument("--dp", action="store_true", help="the scenario's differential privacy (default: off)")
    parser.add_argument("--baselines", choices=["all", "sample", "none"], default=None, help="default: auto")
    parser.add_argument("--flower", action="store_true", help="also run Flower's own plain FedAvg at each size")
    parser.add_argument("--flower-rounds", type=int, default=None, help="Flower's rounds (default: --rounds)")
    parser.add_argument(
        "--model",
        choices=["mlp", "linear", "auto"],
        default="mlp",
        help="training.model: the MLP (rounds of FedAvg, DP-SGD under DP; the default here), the linear family "
        "(one secure release of sufficient statistics, Newton steps for risk) or the scenario's auto",
    )
    parser.add_argument("--items", type=int, default=None, help="the chain's catalogue size (default: builder's)")
    parser.add_argument("--name", "--results", dest="name", default="fedavg_scale", help="results file name")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.firms:
            row = run_one(
                n,
                args.rounds,
                Path(tmp),
                secure=args.secure,
                dp=args.dp,
                baselines=args.baselines,
                model=args.model,
                items=args.items,
            )
            print(json.dumps(row), flush=True)
            if args.flower:
                row.update(run_flower(n, args.flower_rounds or args.rounds, Path(tmp)))
                # a ratio of rounds: the linear family alone has none (its releases are in training_s)
                row["per_round_vs_flower"] = (
                    round(row["per_round_s"] / row["flower_round_s"], 2) if row["rounds_s"] else None
                )
                row["steady_vs_flower"] = (
                    round(row["steady_round_s"] / row["flower_steady_round_s"], 2) if row["steady_round_s"] else None
                )
                print(json.dumps(row), flush=True)
            rows.append(row)
    base = rows[0]
    for row in rows:
        row["per_round_vs_smallest"] = round(row["per_round_s"] / base["per_round_s"], 2)
    columns = [
        "firms",
        "rounds",
        "model",
        "families",
        "items",
        "aggregation",
        "dp",
        "wall_s",
        "startup_s",
        "local_baselines_s",
        "baselined",
        "baselines_share",
        "rounds_s",
        "training_s",
        "per_round_s",
        "per_round_per_firm_ms",
        "per_round_vs_smallest",
        "steady_round_s",
        *(
            [
                "flower_first_round_s",
                "flower_round_s",
                "per_round_vs_flower",
                "flower_steady_round_s",
                "steady_vs_flower",
            ]
            if args.flower
            else []
        ),
        "deployment_s",
        "centralised_s",
        "outside_server_s",
        "peak_rss_mib",
        *(["flower_peak_rss_mib"] if args.flower else []),
        "load_before",
        "load_after",
    ]
    json_path, md_path = write_results(
        args.name,
        parameters={
            "firms": args.firms,
            "rounds": args.rounds,
            "aggregation": "secure" if args.secure else "plain",
            "dp": args.dp,
            "baselines": args.baselines or "auto",
            "model": args.model,
            "items": args.items,
            "flower": args.flower,
            "flower_rounds": args.flower_rounds or args.rounds,
            "scenario": "scenarios.builder",
        },
        rows=rows,
        columns=columns,
        notes=(
            "Stage seconds come from the run summary; outside_server_s is process start, imports and Ray shutdown; "
            "peak_rss_mib is the whole process tree (Ray's workers included). baselines_share is the local-only "
            "baselines' seconds over the wall time. flower_round_s is the mean of Flower's rounds after the first "
            "(its first builds every firm's data, which ours does when the firms connect). steady_round_s and "
            "flower_steady_round_s are the means of the later half of each side's rounds: a Ray worker builds a "
            "simulated firm the first time it serves it, on both sides, so early rounds carry builds in proportions "
            "that differ between runs; steady_vs_flower is their ratio, the like-for-like figure. Since session 11 "
            "Flower's ClientApp carries only its run config (before, the settings object, 63 KB pickled, rode "
            "with every message) and a round without a good reply from every firm fails the benchmark. The machine "
            "was shared with other work (load_before/load_after: the 1, 5 and 15-minute load averages): absolute "
            "seconds are inflated; ratios measured side by side are what count."
        ),
    )
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
