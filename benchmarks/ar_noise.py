"""Where AR(p)'s record-level DP error comes from: the noise of each released block against its signal.

Run from the repository root:  python -m benchmarks.ar_noise [--firms 200] [--draws 60]

AR's first step releases one Gram vector of the standardised lag windows (levels centred on high / 2,
divided by high / 2); every entry carries Gaussian noise of std z x the record bound. This script
takes the exact (noise-free) sum from the firms, then draws the noise into one block at a time (the
intercept row's first moments, the lag x lag block, X^T y), at other noise scales, with other ridge
sizes and other public bounds `high`, and solves as the plan does (`AutoregressionPlan`: the stated
ridge, the noise-aware ridge and the eigenvalue floor; checked against the plan's own answer). The
error is the benchmark's: relative L2 of [intercept, lags] against the pooled least-squares fit on
units clipped at 5000. It also prints the signal each entry must resolve: the eigenvalues of N x the
covariance of the standardised [lags, target], against the entries' noise std.
Results: benchmarks/results/ar_noise.{json,md}.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
from typing import Any

import numpy as np

from benchmarks._common import write_results
from benchmarks.bench_analytics import HIGH, LAGS, _ar_truth, chain_firms, default_firms
from silobridge.clients.data import FirmData
from silobridge.contract.queries import ar_record_bound, gram_length
from silobridge.federation.query_run import plain_sum_step
from silobridge.federation.settings import GENERATED_SCHEMA, quiet_accountant
from silobridge.privacy.dp import Budget
from silobridge.server.query_plans import build_plan
from silobridge.server.query_plans.engine import calibrate_query_noise
from silobridge.server.query_plans.regression import (
    AutoregressionPlan,
    Normal,
    noise_penalty,
    ridge_lambda,
    ridge_solve,
    transform,
)


def _plan(firms: list[FirmData], high: float, z: float) -> tuple[AutoregressionPlan, np.ndarray]:
    """The plan at noise multiplier z and its step 0's exact sum (before noise)."""
    max_rows = max(len(f.demand) for f in firms if f.demand is not None)
    params = {"lags": LAGS, "horizon": 4, "high": high, "max_rows": max_rows, "max_series": 100, "ridge": 0.0}
    plan = build_plan("autoregression", params, GENERATED_SCHEMA, noise_multiplier=z)
    if not isinstance(plan, AutoregressionPlan):
        raise TypeError(f"expected the AR plan, got {type(plan).__name__}")
    total = np.asarray(plain_sum_step(firms)(plan.first()).total, dtype=np.float64)
    return plan, total


def solve(plan: AutoregressionPlan, total: np.ndarray, sigma: float, ridge_scale: float = 1.0) -> np.ndarray:
    """`AutoregressionPlan._solve` with the noise-aware ridge and floor scaled by `ridge_scale` (1: the plan's)."""
    p = plan.params
    ones = np.ones(plan.halves.size)
    standard = Normal.from_vector(total, ones, 1.0, p.max_rows)
    normal = standard.unstandardised(plan.centres, plan.halves, plan.centre, plan.half)
    stated = ridge_lambda(normal.xtx, p.ridge) / plan.halves**2
    stated[0] = 0.0
    aware = noise_penalty(sigma, ones, p.max_rows) if sigma > 0 else 0.0
    floor = math.sqrt(plan.halves.size) * sigma * p.max_rows
    scaled = ridge_solve(standard.xtx, standard.xty, 0.0, stated + ridge_scale * aware, noise_floor=ridge_scale * floor)
    beta = plan.half * np.linalg.solve(transform(plan.centres, plan.halves), scaled)
    beta[0] += plan.centre
    return np.asarray(beta)


def _blocks(dim: int) -> dict[str, np.ndarray]:
    """Masks over the released vector [upper triangle of X^T X (row-major), X^T y, y^T y]."""
    length = gram_length(dim)
    tri = length - dim - 1
    rows, cols = np.triu_indices(dim)
    first = np.zeros(length)
    first[:tri] = (rows == 0) & (cols > 0)
    first[tri] = 1.0  # sum of the targets: a first moment too
    gram = np.zeros(length)
    gram[:tri] = (rows > 0) & (cols > 0)
    cross = np.zeros(length)
    cross[tri + 1 : tri + dim] = 1.0
    return {
        "all entries": np.ones(length),
        "first moments only (intercept row, sum of targets)": first,
        "lag x lag block only": gram,
        "X^T y lag entries only": cross,
    }


def _signal(total: np.ndarray, dim: int, max_rows: int) -> tuple[float, list[float], float]:
    """Windows N, eigenvalues of N x covariance of the standardised [lags, target], and their mean."""
    std = Normal.from_vector(total, np.ones(dim), 1.0, max_rows)
    moments = np.block([[std.xtx, std.xty[:, None]], [std.xty[None, :], np.array([[std.yty]])]])
    n = float(moments[0, 0])
    means = moments[0, 1:] / n
    centred = moments[1:, 1:] - n * np.outer(means, means)
    return n, [float(v) for v in np.linalg.eigvalsh(centred)], float(means.mean())


def first_moment_weighted_bound(lags: int, weight: float) -> float:
    """The record bound (x max_rows) when the firms multiply the first moments by a public `weight`.

    As `ar_record_bound` (d = 0): a value a replaced by b (both in [-1, 1], delta = b - a) moves the
    p + 1 first moments by delta (now weight x delta), the p + 1 squares by delta (a + b) with |a + b| <=
    2 - delta, and the p (p + 1) / 2 products by delta x (two neighbours) <= 2 delta; the maximum over
    delta in [0, 2] of delta^2 (p + 1) (weight^2 + (2 - delta)^2 + 2p), taken on a fine grid."""
    deltas = np.linspace(0.0, 2.0, 2001)
    squares = deltas**2 * (lags + 1) * (weight**2 + (2.0 - deltas) ** 2 + 2.0 * lags)
    return float(math.sqrt(squares.max()))


def _series(firms: list[FirmData], high: float) -> list[np.ndarray]:
    """Every demand series, clipped to [0, high] and standardised on the public midpoint, in date order."""
    out = []
    for firm in firms:
        if firm.demand is None:
            continue
        for _, rows in firm.demand.sort_values(["series", "date"], kind="stable").groupby("series"):
            out.append((np.clip(rows["units"].to_numpy(dtype=float), 0.0, high) - high / 2) / (high / 2))
    return out


def yule_walker_vector(firms: list[FirmData], high: float, lags: int, max_rows: int) -> np.ndarray:
    """The plan's Gram vector rebuilt from what an autocovariance release holds (the sum of all values,
    one sum of products per lag, and the public counts): every window entry taken from the whole series,
    edges ignored. Without noise it shows that estimator's distance from the least-squares fit."""
    series = [z for z in _series(firms, high) if z.size > lags]
    windows = sum(z.size - lags for z in series)
    values = sum(z.size for z in series)
    total = sum(float(z.sum()) for z in series)
    products = [sum(float(z[k:] @ z[: z.size - k]) for z in series) for k in range(lags + 1)]
    pairs = [sum(z.size - k for z in series) for k in range(lags + 1)]
    dim = lags + 2  # [1, y_t, y_{t-1}, ..., y_{t-p}]
    gram = np.zeros((dim, dim))
    gram[0, 0] = windows
    for i in range(1, dim):
        gram[0, i] = gram[i, 0] = total * windows / values
        for j in range(1, dim):
            k = abs(i - j)
            gram[i, j] = products[k] * windows / pairs[k]
    design = [0, *range(2, dim)]  # intercept and the lags; column 1 is the target
    xtx = gram[np.ix_(design, design)]
    rows, cols = np.triu_indices(lags + 1)
    return np.concatenate([xtx[rows, cols], gram[design, 1], [gram[1, 1]]]) / max_rows


def decompose(label: str, firms: list[FirmData], draws: int) -> list[dict[str, Any]]:
    truth = _ar_truth(firms)
    budget = Budget(1.0, 1e-5)
    z = calibrate_query_noise(2, budget)  # AR plans 2 releases
    z_one = calibrate_query_noise(1, budget)
    z_eps4 = calibrate_query_noise(2, Budget(4.0, 1e-5))
    plan, total = _plan(firms, HIGH, z)
    dim = plan.halves.size
    max_rows = plan.params.max_rows
    bound = ar_record_bound(LAGS, 0)
    sigma = z * bound / max_rows  # per entry of the released vector
    check, _ = _plan(firms, HIGH, z)
    check.first()
    check.next(total, len(firms))
    if check.beta is None or not np.allclose(check.beta, solve(plan, total, sigma)):
        raise RuntimeError("this script's solve no longer matches AutoregressionPlan's: update it")
    windows, eigen, mean_level = _signal(total, dim, max_rows)
    base = {
        "chain": label,
        "windows": int(round(windows)),
        "truth": [round(float(b), 4) for b in truth],
        "entry_noise_std": round(sigma * max_rows, 2),
        "signal_eigenvalues": [round(v, 1) for v in eigen],
        "mean_standardised_level": round(mean_level, 3),
    }
    print(f"{label}: {base}", flush=True)

    def error(beta: np.ndarray) -> float:
        return float(np.linalg.norm(beta - truth) / np.linalg.norm(truth))

    def median(
        vector: np.ndarray,
        noise: float,
        mask: np.ndarray | None = None,
        ridge_scale: float = 1.0,
        p: AutoregressionPlan = plan,
    ) -> float:
        errors = []
        for seed in range(draws):
            rng = np.random.default_rng(seed)
            drawn = rng.normal(0.0, noise, vector.size) * (1.0 if mask is None else mask)
            errors.append(error(solve(p, vector + drawn, noise, ridge_scale)))
        return statistics.median(errors)

    rows: list[dict[str, Any]] = []

    def add(case: str, value: float, **extra: Any) -> None:
        rows.append({**base, "case": case, "error_median": value, **extra})
        print(f"  {case:60s} {value:.4f} {extra or ''}", flush=True)

    add("no noise", error(solve(plan, total, 0.0)))
    for name, mask in _blocks(dim).items():
        add(f"eps 1, noise in {name}", median(total, sigma, mask))
    for scale in (0.0, 0.5, 2.0):
        add(f"eps 1, noise-aware ridge and floor x {scale:g}", median(total, sigma, ridge_scale=scale))
    for scale in (0.7, 0.5, 0.35):
        add(f"noise std x {scale:g} (eps 1's)", median(total, scale * sigma))
    add(f"eps 1 on step 0 alone (z {z_one:.3f}, second step free)", median(total, z_one * bound / max_rows))
    add(f"eps 4 (z {z_eps4:.3f})", median(total, z_eps4 * bound / max_rows))
    first = _blocks(dim)["first moments only (intercept row, sum of targets)"]
    for weight in (2.0, 3.0):
        # the first moments released x weight: the bound grows, their noise (after dividing back) shrinks
        weighted = z * first_moment_weighted_bound(LAGS, weight) / max_rows
        add(f"eps 1, first moments weighted x {weight:g}", median(total, weighted, 1.0 + (1.0 / weight - 1.0) * first))
    add(
        "autocovariance (Yule-Walker) release: bias without noise",
        error(solve(plan, yule_walker_vector(firms, HIGH, LAGS, max_rows), 0.0)),
    )
    units = np.concatenate([f.demand["units"].to_numpy(dtype=float) for f in firms if f.demand is not None])
    for high in (3000.0, 2500.0, 2000.0):
        tighter, vector = _plan(firms, high, z)
        add(
            f"high {high:g}: bias without noise",
            error(solve(tighter, vector, 0.0)),
            clipped_share=round(float(np.mean(units > high)), 4),
        )
        add(f"high {high:g}: eps 1", median(vector, sigma, p=tighter))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--firms", type=int, nargs="*", default=[200], help="built chain sizes (default 200)")
    parser.add_argument("--draws", type=int, default=60, help="noise draws per case (median)")
    parser.add_argument("--note", default="")
    args = parser.parse_args()
    quiet_accountant()
    load_at_start = os.getloadavg()[0]
    rows = decompose("default", default_firms(), args.draws)
    for n in args.firms:
        rows += decompose(f"built-{n}", chain_firms(n), args.draws)
    json_path, md_path = write_results(
        "ar_noise",
        parameters={
            "lags": LAGS,
            "high": HIGH,
            "epsilon": 1.0,
            "delta": 1e-5,
            "draws": args.draws,
            "chains": ["default", *[f"built-{n}" for n in args.firms]],
            "load_average_start_end": [load_at_start, os.getloadavg()[0]],
            "note": args.note,
        },
        rows=rows,
        columns=["chain", "windows", "case", "error_median", "clipped_share"],
        notes=(
            "AR(3) record-level error (relative L2 of [intercept, lags] against the pooled fit on units clipped at "
            "5000), median over the draws, with the noise drawn into one block of the released Gram vector at a "
            "time, at other noise scales, ridge sizes and public bounds. The JSON holds per chain the truth, the "
            "entry noise std (rows x (high/2)^2 units) and the signal: eigenvalues of N x the covariance of the "
            "standardised [lags, target]."
        ),
    )
    print(f"results: {json_path} and {md_path}")


if __name__ == "__main__":
    main()
