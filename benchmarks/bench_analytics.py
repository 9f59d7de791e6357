"""Federated analytics queries at 10, 50, 100 and 200 firms: latency and error against pooled ground truth.

Run from the repository root:  python -m benchmarks.bench_analytics [--quick] [--firms 10 50] [--epsilon 1]

For each chain (built by `scenarios.builder`, data from the generator, validated as a firm would)
every query runs through the Flower-free engine three ways: a plain in-memory sum (the floor),
the real SecAgg+ protocol in memory (`privacy.secagg.simulate`: key agreement, masking, Shamir
shares, unmasking, every message through its wire form) without noise, and the same with
firm-level central DP at (epsilon, delta) per query. Latency is the wall time of one query (the
firms computed one after another in this process, key agreement included: one session per query
here). Error is the relative L2 error of the query's main output against numpy on the pooled
tables (every firm's rows concatenated); without noise it must be ~1e-12, under DP it is what a
firm-level guarantee costs with that many firms. The public row bound (max_rows) is the largest
firm's row count, as a federation would declare it. Results: benchmarks/results/analytics[_quick].{json,md}.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from benchmarks._common import write_results
from clients.data import FirmData, firm_data_from_tables
from federation.analytics import SecAggSumStep, plain_sum_step
from federation.settings import GENERATED_SCHEMA, quiet_accountant
from privacy.dp import Budget
from privacy.ledger import PrivacyRun
from scenarios.builder import build
from scenarios.generator import generate_chain
from server.analytics import build_plan
from server.analytics.engine import QueryEngine, QueryPrivacy, calibrate_query_noise, query_accounting
from server.secure_sum import resolve_aggregation
from silobridge.config import AggregationSpec, min_periods

HIGH = 5000.0  # public bound on weekly units
LAGS = 3


def chain_firms(num_firms: int) -> list[FirmData]:
    scenario = build(num_firms, seed=20251230, name=f"bench{num_firms}")
    chain = generate_chain(scenario)
    periods = min_periods(scenario.training.lags, scenario.horizon, scenario.test_periods)
    return [
        firm_data_from_tables(
            f.id, chain.tables[f.id].demand, chain.tables[f.id].risk, GENERATED_SCHEMA, min_periods=periods
        )
        for f in scenario.firms
    ]


def _pooled(firms: list[FirmData], table: str, column: str) -> np.ndarray:
    return np.concatenate(
        [getattr(f, table)[column].to_numpy(dtype=float) for f in firms if getattr(f, table) is not None]
    )


def _lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    design = np.column_stack([np.ones(len(y)), x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    return beta


def _ar_truth(firms: list[FirmData]) -> np.ndarray:
    rows, targets = [], []
    for firm in firms:
        if firm.demand is None:
            continue
        for _, frame in firm.demand.groupby("series"):
            y = np.clip(frame.sort_values("date")["units"].to_numpy(dtype=float), 0, HIGH)
            for t in range(LAGS, y.size):
                rows.append(y[t - LAGS : t][::-1])
                targets.append(y[t])
    return _lstsq(np.array(rows), np.array(targets))


Query = tuple[str, dict[str, Any], Callable[[dict[str, Any]], np.ndarray], np.ndarray]


def queries(firms: list[FirmData]) -> list[Query]:
    """(name, parameters, the answer's main output, the pooled ground truth of that output)."""
    demand_rows = max(len(f.demand) for f in firms if f.demand is not None)
    risk_rows = max(len(f.risk) for f in firms if f.risk is not None)
    units = np.clip(_pooled(firms, "demand", "units"), 0, HIGH)
    price = _pooled(firms, "demand", "price")
    features = ["price", "promotion", "holiday"]
    ranges = {"units": [0, HIGH], "price": [0, 50], "promotion": [0, 1], "holiday": [0, 1]}
    x = np.column_stack([np.clip(_pooled(firms, "demand", c), *ranges[c]) for c in features])
    edges = [0.0, 5.0, 10.0, 15.0, 20.0, 30.0]
    column = {"column": "units", "low": 0.0, "high": HIGH, "max_rows": demand_rows}
    probs = [0.25, 0.5, 0.75]
    return [
        (
            "count",
            {"table": "risk", "max_rows": risk_rows},
            lambda a: np.array([a["count"]]),
            np.array([float(_pooled(firms, "risk", "disrupted").size)]),
        ),
        ("mean", column, lambda a: np.array([a["mean"] or 0.0]), np.array([units.mean()])),
        ("variance", column, lambda a: np.array([a["variance"] or 0.0]), np.array([units.var(ddof=1)])),
        (
            "histogram",
            {"column": "price", "edges": edges, "max_rows": demand_rows},
            lambda a: np.array(a["counts"]),
            np.histogram(np.clip(price, edges[0], edges[-1]), bins=edges)[0].astype(float),
        ),
        (
            "quantiles",
            {**column, "bins": 500, "probs": probs},
            lambda a: np.array([v if v is not None else 0.0 for v in a["quantiles"].values()]),
            np.quantile(units, probs, method="inverted_cdf"),
        ),
        (
            "linear_regression",
            {"target": "units", "features": features, "ranges": ranges, "max_rows": demand_rows, "ridge": 0.0},
            lambda a: np.array([a["intercept"], *a["coefficients"].values()]),
            _lstsq(x, units),
        ),
        (
            "autoregression",
            {"lags": LAGS, "horizon": 4, "high": HIGH, "max_rows": demand_rows, "max_series": 100, "ridge": 0.0},
            lambda a: np.array([a["intercept"], *a["coefficients"].values()]),
            _ar_truth(firms),
        ),
    ]


def _error(got: np.ndarray, truth: np.ndarray) -> float:
    return float(np.linalg.norm(got - truth) / max(np.linalg.norm(truth), 1e-300))


def run_size(num_firms: int, *, epsilon: float, delta: float, repeats: int) -> list[dict[str, Any]]:
    started = time.monotonic()
    firms = chain_firms(num_firms)
    print(f"{num_firms} firms: data in {time.monotonic() - started:.1f} s", flush=True)
    ids = [f.firm_id for f in firms]
    aggregation = resolve_aggregation(AggregationSpec(), len(firms))
    rows = []
    for name, params, output, truth in queries(firms):
        plan = build_plan(name, params, GENERATED_SCHEMA)
        t0 = time.monotonic()
        plain = QueryEngine(plain_sum_step(firms), ids).run(plan)
        plain_s = time.monotonic() - t0
        t0 = time.monotonic()
        secure = QueryEngine(SecAggSumStep(firms, aggregation), ids).run(build_plan(name, params, GENERATED_SCHEMA))
        secure_s = time.monotonic() - t0
        budget = Budget(epsilon, delta)
        z = calibrate_query_noise(plan.planned_steps, budget)
        dp_errors, dp_seconds = [], []
        for seed in range(repeats):
            ledger = PrivacyRun.start(
                _ledger_path(num_firms, name, seed),
                run_id=f"bench-{num_firms}-{name}-{seed}",
                config_sha256="0" * 64,
                budget=budget,
                signing_key=Ed25519PrivateKey.generate(),
                spec=query_accounting(),
            )
            engine = QueryEngine(
                SecAggSumStep(firms, aggregation), ids, privacy=QueryPrivacy(ledger, z, np.random.default_rng(seed))
            )
            t0 = time.monotonic()
            outcome = engine.run(build_plan(name, params, GENERATED_SCHEMA))
            dp_seconds.append(time.monotonic() - t0)
            ledger.close()
            dp_errors.append(_error(output(outcome.answer), truth))
        row = {
            "firms": num_firms,
            "query": name,
            "steps": len(secure.steps),
            "plain_ms": round(1000 * plain_s, 1),
            "secagg_ms": round(1000 * secure_s, 1),
            "secagg_dp_ms": round(1000 * statistics.median(dp_seconds), 1),
            "error_secagg": _error(output(secure.answer), truth),
            "error_plain": _error(output(plain.answer), truth),
            "noise_multiplier": z,
            "error_dp_median": statistics.median(dp_errors),
        }
        rows.append(row)
        print(
            f"  {name:18s} plain {row['plain_ms']:8.1f} ms  secagg {row['secagg_ms']:8.1f} ms  "
            f"err(secagg) {row['error_secagg']:.1e}  err(dp, eps {epsilon:g}) {row['error_dp_median']:.3g}",
            flush=True,
        )
    return rows


LEDGER_DIR = Path(tempfile.mkdtemp(prefix="bench-analytics-"))
"""Each DP query writes its signed ledger here, as a run would (the cost is part of the latency)."""


def _ledger_path(num_firms: int, name: str, seed: int) -> Path:
    return LEDGER_DIR / f"{num_firms}-{name}-{seed}.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10 and 50 firms, one DP draw per query")
    parser.add_argument("--firms", type=int, nargs="+", help="chain sizes (default 10 50 100 200)")
    parser.add_argument("--epsilon", type=float, default=1.0, help="firm-level epsilon per query")
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--repeats", type=int, default=None, help="DP draws per query (default 3, quick 1)")
    args = parser.parse_args()
    quiet_accountant()
    sizes = args.firms or ([10, 50] if args.quick else [10, 50, 100, 200])
    repeats = args.repeats or (1 if args.quick else 3)
    rows = []
    for n in sizes:
        rows += run_size(n, epsilon=args.epsilon, delta=args.delta, repeats=repeats)
    name = "analytics_quick" if args.quick else "analytics"
    json_path, md_path = write_results(
        name,
        parameters={"firms": sizes, "epsilon_per_query": args.epsilon, "delta": args.delta, "dp_repeats": repeats},
        rows=rows,
        columns=[
            "firms",
            "query",
            "steps",
            "plain_ms",
            "secagg_ms",
            "secagg_dp_ms",
            "error_secagg",
            "noise_multiplier",
            "error_dp_median",
        ],
        notes=(
            "Latency: one query, firms computed one after another in one process, SecAgg+ in memory with a "
            "fresh key session per query. Error: relative L2 error of the main output (count, mean, variance, "
            "bin counts, quartiles, regression or AR coefficients) against numpy on the pooled tables; under DP "
            "the noise is firm-level (a firm's whole table is the unit), calibrated so each query alone spends "
            "(epsilon, delta). max_rows = the largest firm's row count."
        ),
    )
    print(f"results: {json_path} and {md_path}")


if __name__ == "__main__":
    main()
