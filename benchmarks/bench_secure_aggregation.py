"""Secure aggregation on Flower's simulation runtime: plain vs ours vs Flower's SecAgg+, side by side.

Run from the repository root:

    python -m benchmarks.bench_secure_aggregation [--quick | --full] [--rounds R] [--train-ms MS]
        [--firms N [N ...]] [--params P [P ...]] [--dropouts D [D ...]] [--methods M [M ...]]

For each configuration (firms n, parameters P, dropout) the three methods of
`benchmarks._secagg_apps` run on the same synthetic firms, one after the other, each in a fresh
process (in-process `flwr.simulation.run_simulation`, Ray backend, one CPU per virtual node, two
CPUs): plain FedAvg over the Message API; our secure aggregation driven as `federation/runner.py`
drives it; Flower's legacy SecAgg+ workflow with the same neighbours and threshold as ours. With
dropout, the same 30% of the firms vanish in every method: after sending their masked input under
secure aggregation (the survivors' shares recover them), with no update at all under plain.

Firms train nothing by default: each sends a seeded synthetic update, so a plain round is only
message passing and the ratio to plain is pure protocol overhead. --train-ms MS gives every firm, in
every method, MS milliseconds of process CPU time of a fixed workload per round before it makes its
update (`_secagg_case.local_training`, 64x64 float64 matmuls on one thread), a stand-in for local
training (about 100 ms is what a default-scenario firm spends training its two models a round on
this 2-core machine), so that the ratio is measured on rounds in which firms train; the workload is
reported as the firms' step `train` (train_cpu_ms).

Per configuration and method: wall time per round in the steady state (round 1 and the start-up
excluded; a warm-up message has started the simulation's workers before round 1), its ratio to
plain, our key setup (two exchanges once per `rounds_per_session` sums, reported apart and
amortised), exchanges and their time, the server's own work on the sum, each firm's CPU time and
payload per round, and how far the final weights are from an exact float64 reference (with the
method's quantisation bound).

Modes: --quick (n = 10, P = 10k and 100k, 0% and 30%: a few minutes), the default (n = 50 for every
P, plus n = 10 and 100 at P = 100k, 0% and 30% each), --full (n in 10/50/100 x P in 10k/100k/1M x 0%
and 30%; long). --firms, --params and --dropouts replace that dimension of the mode's grid (each
configuration takes every value given, duplicates dropped): `--firms 50 --params 100000 --dropouts 0
0.3` runs just those two configurations. A case that fails, runs out of time or memory is recorded
with its error, never with a number. Results: benchmarks/results/secure_aggregation.{json,md}
(--quick: secure_aggregation_quick, --full: secure_aggregation_full); with --train-ms MS > 0 the name
gets `_train{MS}ms` after `secure_aggregation` (secure_aggregation_train100ms_quick), and a grid
changed by --firms/--params/--dropouts ends in `_custom`, so that neither overwrites the mode's own
results.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flwr.common.secure_aggregation.secaggplus_constants import Stage

from benchmarks._common import OtherWorkSampler, write_results
from benchmarks._secagg_apps import ERROR_FILE, RESULT_FILE, CaseRun, load_run, run_in_child
from benchmarks._secagg_case import (
    METHODS,
    OURS_SETUP,
    Case,
    error_bound,
    ours_layout,
    ours_spec,
    reference_weights,
    security_parameters,
)
from silobridge.contract.config import AggregationSpec

QUICK_GRID = [(10, p, d) for p in (10_000, 100_000) for d in (0.0, 0.3)]
DEFAULT_GRID = [(50, p, d) for p in (10_000, 100_000, 1_000_000) for d in (0.0, 0.3)] + [
    (n, 100_000, d) for n in (10, 100) for d in (0.0, 0.3)
]
FULL_GRID = [(n, p, d) for n in (10, 50, 100) for p in (10_000, 100_000, 1_000_000) for d in (0.0, 0.3)]

OTHERS_PCT_FLAG = 10  # a case during which other work used this much of the machine is flagged
TARGET_OURS_VS_PLAIN = 1.2  # design target at n = 50
REPORTED_FLOWER_VS_PLAIN = (1.7, 2.6)  # Flower SecAgg+ / plain as first measured here (10, 50 clients; 10k-1M params)
ROUNDS_PER_SESSION = AggregationSpec().rounds_per_session
"""The app's default, which the benchmark keeps."""

COLUMNS = [
    "firms",
    "params",
    "dropout",
    "method",
    "k",
    "t",
    "round_s",
    "vs_plain",
    "overhead_s",
    "keys_s",
    "amortised_s",
    "amortised_vs_plain",
    "exchanges",
    "exchange_s",
    "server_s",
    "client_cpu_ms",
    "train_cpu_ms",
    "up_kib",
    "down_kib",
    "max_err",
    "err_bound",
    "peak_rss_mib",
    "others_pct",
    "status",
]


# -- running the cases ---------------------------------------------------------------------------------


def run_case(case: Case, work_dir: Path, timeout_s: float) -> tuple[CaseRun | str, float]:
    """Run one case in a fresh process: its measurements (or why there are none), and the share of the
    machine that other work used meanwhile."""
    work_dir.mkdir(parents=True)
    process = multiprocessing.get_context("spawn").Process(
        target=run_in_child, args=(case.to_dict(), str(work_dir)), name=f"bench-{case.method}"
    )
    process.start()
    with OtherWorkSampler(process.pid) as others:
        process.join(timeout_s)
        timed_out = process.is_alive()
        if timed_out:
            os.killpg(process.pid, signal.SIGKILL)  # the child leads its own session: this ends its Ray processes
            process.join()
    if timed_out:
        return f"skipped: ran past the {timeout_s:.0f} s limit per case", others.other_share
    if process.exitcode != 0:
        cause = " (killed by SIGKILL: out of memory?)" if process.exitcode == -signal.SIGKILL else ""
        error = work_dir / ERROR_FILE
        last = f": {error.read_text().strip().splitlines()[-1]}" if error.exists() else ""
        return f"failed: the case's process exited with {process.exitcode}{cause}{last}", others.other_share
    if not (work_dir / RESULT_FILE).exists():
        return "failed: the case's process wrote no result", others.other_share
    return load_run(work_dir), others.other_share


# -- summarising one case ---------------------------------------------------------------------------


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return statistics.fmean(values) if values else float("nan")


def _server_work_s(method: str, record: dict[str, Any]) -> float:
    """The server's own work on the sum in one round, outside any exchange."""
    seconds = record["seconds"]
    if method == "plain":
        return seconds["aggregate"]
    if method == "ours":
        return seconds["receive_masked_inputs"] + seconds["finish"]
    return sum(seconds[stage] - seconds[f"{stage}_exchange"] for stage in ("collect_masked_vectors", "unmask"))


def _firm_lines(run: CaseRun, rounds: set[int], *, setup: bool) -> list[dict[str, Any]]:
    """The firms' message lines of `rounds`: our key-session messages (setup) or everything else."""
    return [line for line in run.firm_lines if line["round"] in rounds and (line["stage"] in OURS_SETUP) == setup]


def _per_firm(lines: list[dict[str, Any]], key: str, firms: int, rounds: int) -> float:
    return sum(line[key] for line in lines) / (firms * rounds) if rounds else float("nan")


def _breakdown(run: CaseRun, steady: list[dict[str, Any]], steady_rounds: set[int]) -> dict[str, Any]:
    """Where a round's time goes: server steps, exchanges by stage, the firms' CPU by stage and step."""
    case = run.case
    server: dict[str, float] = defaultdict(float)
    for record in steady:
        for name, seconds in record["seconds"].items():
            server[name] += seconds / len(steady)
    lines = _firm_lines(run, steady_rounds, setup=False)
    by_stage: dict[str, float] = defaultdict(float)
    by_step: dict[str, float] = defaultdict(float)
    scale = 1000.0 / (case.firms * len(steady_rounds))
    for line in lines:
        by_stage[line["stage"]] += line["cpu_s"] * scale
        for step, seconds in line["sections"].items():
            by_step[step] += seconds * scale
    return {
        "server_s_per_round": {k: round(v, 4) for k, v in sorted(server.items())},
        "firm_cpu_ms_per_round_by_stage": {k: round(v, 3) for k, v in sorted(by_stage.items())},
        "firm_cpu_ms_per_round_by_step": {k: round(v, 3) for k, v in sorted(by_step.items())},
    }


def summarise(run: CaseRun, reference: np.ndarray) -> dict[str, Any]:
    """One results row (and its detail) from a finished case."""
    case = run.case
    k, t = security_parameters(case)
    row: dict[str, Any] = {
        "firms": case.firms,
        "params": case.params,
        "dropout": case.dropout,
        "method": case.method,
        "k": k if case.method != "plain" else "",
        "t": t if case.method != "plain" else "",
        "rounds": case.rounds,
        "train_ms": case.train_ms,
    }
    if run.outcome.error is not None:
        return {**row, "status": "failed", "error": run.outcome.error}
    steady = [r for r in run.outcome.rounds if r["round"] >= 2]
    steady_rounds = {r["round"] for r in steady}
    round_s = _mean(r["round_s"] for r in steady)
    lines = _firm_lines(run, steady_rounds, setup=False)
    row.update(
        round_s=round(round_s, 4),
        exchanges=round(_mean(r["exchanges"] for r in steady), 2),
        exchange_s=round(_mean(r["exchange_s"] for r in steady), 4),
        server_s=round(_mean(_server_work_s(case.method, r) for r in steady), 4),
        client_cpu_ms=round(1000 * _per_firm(lines, "cpu_s", case.firms, len(steady)), 2),
        train_cpu_ms=round(
            1000 * sum(line["sections"].get("train", 0.0) for line in lines) / (case.firms * len(steady)), 2
        ),
        up_kib=round(_per_firm(lines, "bytes_up", case.firms, len(steady)) / 1024, 1),
        down_kib=round(_per_firm(lines, "bytes_down", case.firms, len(steady)) / 1024, 1),
        state_kib=round(_mean(line["state_bytes"] for line in lines) / 1024, 1),
        first_round_s=round(run.outcome.rounds[0]["round_s"], 4),
        startup_s=None if run.startup_s is None else round(run.startup_s, 2),
        simulation_s=round(run.simulation_s, 2),
        peak_rss_mib=round(run.peak_rss_mib, 1),
    )
    if case.method == "ours":
        first = run.outcome.rounds[0]
        setup_lines = _firm_lines(run, {1}, setup=True)
        row.update(
            keys_s=round(first["setup_s"], 4),
            amortised_s=round(round_s + first["setup_s"] / run.outcome.protocol["rounds_per_session"], 4),
            setup_exchange_s=round(first["setup_exchange_s"], 4),
            setup_client_cpu_ms=round(1000 * _per_firm(setup_lines, "cpu_s", case.firms, 1), 2),
            setup_up_kib=round(_per_firm(setup_lines, "bytes_up", case.firms, 1) / 1024, 2),
            setup_down_kib=round(_per_firm(setup_lines, "bytes_down", case.firms, 1) / 1024, 2),
            clipped=sum(r["clipped"] for r in run.outcome.rounds),
            recovered_self_masks_per_round=_mean(r["recovered_self_masks"] for r in steady),
        )
    elif case.method == "flower_secaggplus":
        row.update(
            keys_s=round(_mean(r["seconds"]["setup"] + r["seconds"]["share_keys"] for r in steady), 4),
            amortised_s=row["round_s"],
        )
    else:
        row["amortised_s"] = row["round_s"]
    final = run.outcome.final_weights
    if final is None:
        raise ValueError(f"{case}: no final weights although the run reported no error")
    layout = ours_layout(case.params, ours_spec(case)) if case.method == "ours" else None
    row.update(
        max_err=float(np.abs(final.astype(np.float64) - reference).max()),
        err_bound=error_bound(case, layout, final),
    )
    row["status"] = "ok" if row["max_err"] <= row["err_bound"] else "WRONG SUM: error beyond its bound"
    row["protocol"] = run.outcome.protocol
    row["breakdown"] = _breakdown(run, steady, steady_rounds)
    row["per_round_s"] = [round(r["round_s"], 4) for r in run.outcome.rounds]
    return row


def _config(row: dict[str, Any]) -> tuple[int, int, float]:
    return row["firms"], row["params"], row["dropout"]


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each method's round time over plain's in the same configuration, and the seconds it adds."""
    plain = {_config(r): r for r in rows if r["method"] == "plain" and "round_s" in r}
    for row in rows:
        base = plain.get(_config(row))
        if base is None or "round_s" not in row:
            continue
        row["vs_plain"] = round(row["round_s"] / base["round_s"], 3)
        row["overhead_s"] = round(row["round_s"] - base["round_s"], 4)
        row["amortised_vs_plain"] = round(row["amortised_s"] / base["round_s"], 3)


# -- the report -------------------------------------------------------------------------------------


def _span(values: Sequence[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}x" if values else "n/a"


def _where_time_goes(row: dict[str, Any]) -> str:
    """One line: a round's wall time split into exchanges and server work, and each firm's CPU by step."""
    detail = row["breakdown"]
    by = "stage" if row["method"] == "flower_secaggplus" else "step"
    firm = dict(detail[f"firm_cpu_ms_per_round_by_{by}"])
    train = detail["firm_cpu_ms_per_round_by_step"].get("train", 0.0)
    if by == "stage" and train:  # SecAgg+ trains inside its collect-masked-vectors stage: shown apart
        firm[Stage.COLLECT_MASKED_VECTORS] -= train
        firm["train"] = train
    parts = ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(firm.items(), key=lambda kv: -kv[1]) if ms >= 0.05)
    server = ""
    if row["method"] == "ours":
        seconds = detail["server_s_per_round"]
        server = f" (receive_masked_inputs {seconds['receive_masked_inputs']:.3f}, finish {seconds['finish']:.3f})"
    return (
        f"- {row['method']}, n={row['firms']}, P={row['params']:,}, dropout {row['dropout']:.0%}: "
        f"{row['round_s']:.2f} s a round = {row['exchanges']:g} exchanges {row['exchange_s']:.2f} s + server "
        f"{row['server_s']:.3f} s{server}; each firm {row['client_cpu_ms']:.1f} ms CPU a round by {by} ({parts}), "
        f"its stored state {row['state_kib']:.0f} KiB."
    )


def notes(rows: Sequence[dict[str, Any]], train_ms: float = 0.0) -> str:
    """The key ratios, the design targets and where the time goes, in words (`train_ms`: the firms'
    workload per round, 0 for none)."""
    ok = [r for r in rows if r.get("status") == "ok" and "vs_plain" in r]
    by_config = {(_config(r), r["method"]): r for r in ok}

    def ratios(method: str, firms: int | None = None, key: str = "vs_plain") -> list[float]:
        return [r[key] for r in ok if r["method"] == method and (firms is None or r["firms"] == firms)]

    lines = ["Notes:", ""]
    speedups = []
    for row in ok:
        if row["method"] != "ours":
            continue
        flower = by_config.get((_config(row), "flower_secaggplus"))
        versus = ""
        if flower is not None:
            speedups.append(flower["round_s"] / row["round_s"])
            versus = f"; Flower's SecAgg+ {flower['vs_plain']:.2f}x (+{flower['overhead_s']:.2f} s)"
        lines.append(
            f"- n={row['firms']}, P={row['params']:,}, dropout {row['dropout']:.0%}: ours {row['vs_plain']:.2f}x "
            f"plain (+{row['overhead_s']:.2f} s a round; {row['amortised_vs_plain']:.2f}x with the key setup "
            f"amortised over {ROUNDS_PER_SESSION} sums){versus}."
        )
    lines.append("")
    ours50 = ratios("ours", 50)
    if ours50:
        met = all(v <= TARGET_OURS_VS_PLAIN for v in ours50)
        lines.append(
            f"- Design target, our round at most {TARGET_OURS_VS_PLAIN}x plain at n=50: "
            f"{'met' if met else 'NOT met'} in every case: {_span(ours50)} "
            f"({_span(ratios('ours', 50, 'amortised_vs_plain'))} with the key setup amortised)."
        )
        ours_at_50 = [r for r in ok if r["method"] == "ours" and r["firms"] == 50]
        for dropout in sorted({r["dropout"] for r in ours_at_50}):
            cases = [r["vs_plain"] for r in ours_at_50 if r["dropout"] == dropout]
            lines.append(
                f"  - dropout {dropout:.0%}: {'met' if all(v <= TARGET_OURS_VS_PLAIN for v in cases) else 'NOT met'} "
                f"({_span(cases)})"
            )
    flower_all = ratios("flower_secaggplus")
    if flower_all:
        low, high = REPORTED_FLOWER_VS_PLAIN
        lines.append(
            f"- Flower's SecAgg+, reported at {low}-{high}x plain: here {_span(flower_all)} "
            f"({_span(ratios('flower_secaggplus', 50))} at n=50)."
        )
    if speedups:
        lines.append(f"- Ours against Flower's SecAgg+: {_span(speedups)} faster per round.")
    if train_ms > 0:
        lines.append(
            f"- Every firm trains here: in every method, before it makes its update, each firm spends {train_ms:g} ms "
            "of process CPU time a round on a fixed workload (64x64 float64 matmuls on one thread), a stand-in for "
            "local training (a default-scenario firm spends about 100 ms a round training its two models on this "
            "2-core machine). The synthetic updates are unchanged, so the methods differ from the zero-training "
            "results only by this workload. The simulation runs two firms at a time (num_cpus=2), so the firms' "
            f"training alone takes at least n x {train_ms:g} ms / 2 of a round's wall time in every method. Firms "
            "that vanish have trained first, in every method."
        )
    else:
        lines.append(
            "- No firm trains here, so a plain round is only the simulation passing messages; every millisecond "
            "of masking shows in the ratio. overhead_s, the seconds a method adds to plain's round, is what "
            "would add to rounds in which firms train (--train-ms measures such rounds)."
        )
    busy = [r for r in rows if r.get("others_pct", 0) >= OTHERS_PCT_FLAG]
    if busy:
        listed = "; ".join(f"{r['method']} n={r['firms']} P={r['params']:,} {r['dropout']:.0%}" for r in busy)
        lines.append(
            f"- Other work used at least {OTHERS_PCT_FLAG}% of the machine during: {listed} (others_pct); "
            "their times, and the ratios built on them, are inflated."
        )
    for row in rows:
        if row.get("status") != "ok":
            reason = str(row.get("error") or row.get("status")).strip().splitlines()[-1]
            lines.append(
                f"- {row['method']} at n={row['firms']}, P={row['params']:,}, dropout {row['dropout']:.0%}: "
                f"no numbers: {reason}"
            )
    lines += [
        "",
        "Where the time goes (firm CPU in ms per round, by step for plain and ours, by SecAgg+ stage for Flower"
        + (", its train step apart" if train_ms > 0 else "")
        + "):",
        "",
    ]
    lines += [_where_time_goes(r) for r in ok if (r["method"] != "plain" or train_ms > 0) and r["firms"] == 50]
    lines += [
        "",
        "round_s: mean wall time of rounds 2..R (round 1 and start-up excluded). keys_s: ours, the key "
        f"session's two exchanges, once per {ROUNDS_PER_SESSION} sums (amortised_s adds a tenth of it); Flower, "
        "its setup and share-keys stages, every round (inside round_s). exchange_s: time inside "
        "an exchange (firms' work, Ray transfer, the simulation runtime's 0.1 s polling for requests and "
        "our backing-off polling for replies). server_s: "
        "the server's own work on the sum (plain: averaging; ours: receive_masked_inputs + finish; Flower: "
        "its collect and unmask stages outside their exchanges). client_cpu_ms, up_kib, down_kib: per firm "
        "per round, process CPU time and payload (array bytes + config values) measured by a client mod; "
        "train_cpu_ms: the part of client_cpu_ms spent on the --train-ms workload (the firms' step train). "
        "max_err: largest distance of the final weights from an exact float64 reference (secure methods "
        "include the recovered late dropouts; plain only the firms that answered); err_bound: quantisation "
        "and float32 rounding bound. others_pct: share of the machine's CPU that other processes used during "
        "the case. k, t: our neighbours and threshold; Flower gets num_shares = k + 1, "
        "reconstruction_threshold = t. Ours quantises to 48 value bits in a 64-bit word (8 bytes per "
        "parameter up), Flower to 22 bits, also sent as int64. Firm steps of ours: update (read the weights, "
        "make the update), restore (FirmSecureSum from context.state: re-derives the X25519 agreements with "
        f"every neighbour for the share channel and each of the session's {ROUNDS_PER_SESSION} mask keys; once "
        "per message, twice a round), mask (quantise, HKDF seeds, AES-CTR masks), store (state back into "
        "context.state), unmask (reveal shares). Stored state: context.state after the message (the "
        "simulation ships it to and from the worker with every message).",
    ]
    return "\n".join(lines)


def override_grid(
    grid: Sequence[tuple[int, int, float]],
    firms: Sequence[int] | None = None,
    params: Sequence[int] | None = None,
    dropouts: Sequence[float] | None = None,
) -> list[tuple[int, int, float]]:
    """The grid with each dimension given replaced by its values (in the order given), duplicates dropped."""
    out: dict[tuple[int, int, float], None] = {}
    for n, p, d in grid:
        for new_n in firms or [n]:
            for new_p in params or [p]:
                for new_d in dropouts or [d]:
                    out[(new_n, new_p, float(new_d))] = None
    return list(out)


def results_name(mode: str, train_ms: float, *, custom: bool) -> str:
    """secure_aggregation[_train{MS}ms][_quick|_full][_custom]."""
    name = "secure_aggregation"
    if train_ms > 0:
        name += f"_train{train_ms:g}ms"
    if mode != "default":
        name += f"_{mode}"
    return name + ("_custom" if custom else "")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Secure aggregation on Flower's simulation: plain vs ours vs SecAgg+")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="n=10, P=10k and 100k, 0%% and 30%% dropout")
    size.add_argument("--full", action="store_true", help="the whole grid (long)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per case (default 5, --quick 3)")
    parser.add_argument("--case-timeout", type=float, default=1800.0, help="seconds one case may run")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument(
        "--train-ms",
        type=float,
        default=0.0,
        metavar="MS",
        help="process CPU milliseconds of a fixed workload each firm runs per round before its update, a "
        "stand-in for local training (default 0: no training)",
    )
    parser.add_argument("--firms", type=int, nargs="+", metavar="N", help="replace the grid's numbers of firms")
    parser.add_argument("--params", type=int, nargs="+", metavar="P", help="replace the grid's numbers of parameters")
    parser.add_argument("--dropouts", type=float, nargs="+", metavar="D", help="replace the grid's dropout rates")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full" if args.full else "default"
    rounds = args.rounds or (3 if args.quick else 5)
    grid = override_grid(
        QUICK_GRID if args.quick else FULL_GRID if args.full else DEFAULT_GRID, args.firms, args.params, args.dropouts
    )
    custom = any(values is not None for values in (args.firms, args.params, args.dropouts))
    methods = ["plain", *[m for m in args.methods if m != "plain"]]  # every ratio needs plain
    try:  # every case valid before the first one runs
        for firms, params, dropout in grid:
            Case("plain", firms, params, dropout, rounds, train_ms=args.train_ms)
    except ValueError as err:
        parser.error(str(err))

    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-secagg-") as tmp:
        for firms, params, dropout in grid:
            references: dict[bool, np.ndarray] = {}
            for method in methods:
                case = Case(method, firms, params, dropout, rounds, train_ms=args.train_ms)
                print(
                    f"-- {method}: n={firms}, P={params:,}, dropout {dropout:.0%}, {rounds} rounds, "
                    f"training {args.train_ms:g} ms",
                    flush=True,
                )
                result, others = run_case(
                    case, Path(tmp) / f"n{firms}-p{params}-d{dropout}-{method}", args.case_timeout
                )
                if isinstance(result, str):
                    row = {"firms": firms, "params": params, "dropout": dropout, "method": method, "status": result}
                else:
                    secure = method != "plain"
                    if secure not in references:
                        references[secure] = reference_weights(case, include_dropped=secure).astype(np.float64)
                    row = summarise(result, references[secure])
                row["others_pct"] = round(100 * others)
                rows.append(row)
                brief = {
                    k: row.get(k) for k in ("round_s", "keys_s", "client_cpu_ms", "train_cpu_ms", "max_err", "status")
                }
                print(json.dumps(brief), flush=True)
    add_ratios(rows)
    elapsed = time.monotonic() - started
    name = results_name(mode, args.train_ms, custom=custom)
    k_table = {f"n={n}, dropout {d:.0%}": security_parameters(Case("ours", n, 1, d, 2)) for n, _, d in grid}
    parameters = {
        "mode": mode,
        "custom_grid": custom,
        "grid": [{"firms": n, "params": p, "dropout": d} for n, p, d in grid],
        "rounds": rounds,
        "steady_state_rounds": f"2..{rounds}",
        "methods": methods,
        "train_ms": args.train_ms,
        "training": "none: each firm sends a seeded synthetic update"
        if args.train_ms <= 0
        else f"each firm, in every method, spends {args.train_ms:g} ms of process CPU time a round on a fixed "
        "workload (64x64 float64 matmuls, one thread) before making its update: a stand-in for local training",
        "neighbours_and_threshold": {key: {"k": k, "t": t} for key, (k, t) in k_table.items()},
        "ours": {
            "rounds_per_session": ROUNDS_PER_SESSION,
            "value_bits": AggregationSpec().value_bits,
            "expected_dropout": "0.3 for 30% dropout cases, else the default 0.1",
        },
        "simulation": "flwr.simulation.run_simulation, Ray, client_resources num_cpus=1, init_args num_cpus=2",
        "dropout": "the same firms (seed, round) vanish in every method: after sending their masked input under "
        "secure aggregation, with no update under plain",
        "case_timeout_s": args.case_timeout,
        "total_s": round(elapsed, 1),
    }
    json_path, md_path = write_results(
        name, parameters=parameters, rows=rows, columns=COLUMNS, notes=notes(rows, args.train_ms)
    )
    print(f"wrote {json_path} and {md_path} in {elapsed:.0f} s")
    ours_or_plain_failed = [r for r in rows if r["method"] != "flower_secaggplus" and r.get("status") != "ok"]
    return 1 if ours_or_plain_failed else 0


if __name__ == "__main__":
    sys.exit(main())
