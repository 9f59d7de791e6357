"""Utility against epsilon: federated demand WAPE and risk ROC-AUC at epsilon 1, 2, 4, 8 and without DP.

Run from the repository root:
    python -m benchmarks.bench_dp_utility [--quick] [--rounds N] [--large-rounds N]
        [--skip-large | --skip-default] [--epsilons 1,2,4,8] [--draws N]

Settings (delta 1e-5 throughout; each budget is calibrated by the coordinator so that the planned
rounds spend it exactly):
- the default scenario (12 firms), record-level DP: DP-SGD inside every firm, epsilon per firm;
- the large scenario (240 firms), firm-level DP-FedAvg, `central` (the server adds Gaussian noise to
  the secure sum) and `distributed` (the firms add Skellam shares before masking).
Every scenario is also run without DP, at the same seed and rounds: the non-private reference. The
local-only and centralised baselines of every run never leave a firm or are not private; they are
the same in every run of a scenario.

Targets (from the issue): default scenario, `record`, epsilon 8 per firm: federated demand WAPE
within 10% of the non-private federated model, and below local-only for small firms; large scenario,
`firm`, epsilon 8: below local-only for small firms. The results say "met" or "NOT met" as measured.

`--quick` runs the default scenario only, at epsilon 2 and 8 and without DP, for 10 rounds: a check
that the benchmark works, not the issue's setting. The full mode takes hours on a small machine
(every large-scenario run fits 240 firms' local-only baselines first); `--large-rounds` (default 10)
and `--skip-large` bound it.

Each run is `silobridge simulate` in a fresh process (Ray's start-up and memory released after each),
its figures read from the run's summary.json. A private point is the mean of `--draws` runs (default
3 on the default scenario, 1 on the large one) that differ only in the DP noise: under `record` draw d
runs with `--noise-seed d`, so every draw can be rerun exactly; its standard deviation over the draws
is reported beside it.
Results, rewritten after every point: benchmarks/results/dp_utility{,_quick,_default,_large}.{json,md,png}
(_default or _large when one scenario is left out, so a partial run keeps the other's results).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import RESULTS_DIR, markdown_table, run_logged, write_results

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = {"default": ROOT / "scenarios" / "default.toml", "large": ROOT / "scenarios" / "large.toml"}
DELTA = 1e-5
EPSILONS = (1.0, 2.0, 4.0, 8.0)
QUICK_EPSILONS = (2.0, 8.0)
QUICK_ROUNDS = 10
LARGE_ROUNDS = 10
DEFAULT_DRAWS = {"default": 3, "large": 1}
FED_METRICS = ("fed_wape_all", "fed_wape_small", "fed_auc_all", "fed_auc_small")
TARGET_EPSILON = 8.0
MAX_WAPE_RATIO = 1.10

COLUMNS = [
    "setting",
    "epsilon",
    "epsilon_spent",
    "noise_multiplier",
    "rounds",
    "rounds_trained",
    "stopped",
    "draws",
    "fed_wape_all",
    "fed_wape_all_sd",
    "fed_wape_small",
    "local_wape_all",
    "local_wape_small",
    "central_wape_all",
    "central_wape_small",
    "fed_auc_all",
    "fed_auc_small",
    "local_auc_all",
    "local_auc_small",
    "wall_s",
    "rounds_s",
    "other_share",
]
CHECK_COLUMNS = ["setting", "epsilon", "check", "value", "target", "status"]


@dataclass(frozen=True)
class Config:
    """One run: a scenario, a privacy unit and mechanism (None: no DP), a budget and the rounds."""

    scenario: str
    unit: str | None = None
    mechanism: str | None = None
    epsilon: float | None = None
    rounds: int | None = None  # None: the scenario's own
    draws: int = 1  # runs averaged into the point (private points only: no DP has no noise)
    draw: int | None = None  # which draw of a point this run is (None: the point itself)
    noise_seed: int | None = None  # one draw's DP-SGD seed (record level); None: fresh entropy

    @property
    def setting(self) -> str:
        if self.unit is None:
            return f"{self.scenario} / no DP"
        return f"{self.scenario} / {self.unit}" + (f" {self.mechanism}" if self.mechanism else "")

    @property
    def run_id(self) -> str:
        if self.unit is None:
            return f"{self.scenario}-nodp"
        name = "-".join(filter(None, (self.scenario, self.unit, self.mechanism))) + f"-eps{self.epsilon:g}"
        return name if self.draw is None else f"{name}-d{self.draw}"

    def draw_configs(self) -> list[Config]:
        """The runs of this point: one per noise draw, seeded 0, 1, ... where the firms' noise can be seeded."""
        if self.unit is None:
            return [self]
        seeded = self.unit == "record"  # firm-level noise is the server's or the firms' Skellam shares: unseeded
        return [replace(self, draw=draw, noise_seed=draw if seeded else None) for draw in range(self.draws)]

    def overrides(self) -> list[str]:
        # This benchmark measures the MLP family (DP-SGD / DP-FedAvg); bench_joining_pays measures the default.
        if self.unit is None:
            return ["privacy.enabled=false", "training.model=mlp"]
        out = [
            "training.model=mlp",
            "privacy.enabled=true",
            f"privacy.unit={self.unit}",
            f"privacy.epsilon={self.epsilon}",
        ]
        out.append(f"privacy.delta={DELTA}")
        if self.mechanism:
            out.append(f"privacy.mechanism={self.mechanism}")
        return out


def plan(
    quick: bool,
    rounds: int | None,
    large_rounds: int,
    skip_large: bool,
    skip_default: bool = False,
    epsilons: tuple[float, ...] = EPSILONS,
    draws: int | None = None,
) -> list[Config]:
    """The points of a mode; each scenario's non-private reference first. `draws` None: the scenario's default."""
    default_draws = draws or DEFAULT_DRAWS["default"]
    if quick:
        rounds = rounds or QUICK_ROUNDS
        return [Config("default", rounds=rounds)] + [
            Config("default", "record", None, eps, rounds, default_draws) for eps in QUICK_EPSILONS
        ]
    configs: list[Config] = []
    if not skip_default:
        configs += [Config("default", rounds=rounds)]
        configs += [Config("default", "record", None, eps, rounds, default_draws) for eps in epsilons]
    if not skip_large:
        large_draws = draws or DEFAULT_DRAWS["large"]
        configs.append(Config("large", rounds=large_rounds))
        for mechanism in ("central", "distributed"):
            configs += [Config("large", "firm", mechanism, eps, large_rounds, large_draws) for eps in epsilons]
    return configs


def _metric(summary: dict[str, Any], model: str, method: str, group: str, metric: str) -> float | None:
    value = summary.get("models", {}).get(model, {}).get(method, {}).get(group, {}).get(metric)
    return None if value is None else float(value)


def summarise(config: Config, summary: dict[str, Any], rounds_trained: int) -> dict[str, Any]:
    """One results row from a run's summary.json."""
    privacy = summary.get("privacy") or {}
    stages = summary.get("stage_seconds") or {}
    row: dict[str, Any] = {
        "setting": config.setting,
        "scenario": config.scenario,
        "firms": summary["federation"]["firms"],
        "unit": config.unit,
        "mechanism": privacy.get("mechanism") if privacy.get("enabled") else None,
        "epsilon": config.epsilon,
        "delta": DELTA if config.unit else None,
        "epsilon_spent": privacy.get("epsilon_overall"),
        "noise_multiplier": privacy.get("noise_multiplier"),
        "within_budget": privacy.get("within_budget"),
        "rounds": summary["federation"]["rounds"],
        "rounds_trained": rounds_trained,
        "stopped": summary.get("stopped") or "",
    }
    for label, method in (("fed", "federated"), ("local", "local_only"), ("central", "centralised")):
        for group in ("all", "small"):
            row[f"{label}_wape_{group}"] = _metric(summary, "demand", method, group, "wape")
            row[f"{label}_auc_{group}"] = _metric(summary, "risk", method, group, "roc_auc")
    row["naive_wape_all"] = _metric(summary, "demand", "naive", "all", "wape")
    row["server_s"] = summary.get("seconds")
    row["rounds_s"] = stages.get("rounds")
    return row


def rounds_trained(run_dir: Path) -> int:
    """Rounds that reached the metrics log (fewer than planned when a round was refused)."""
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return 0
    return len({json.loads(line)["round"] for line in path.read_text().splitlines() if line.strip()})


def run_one(config: Config, work: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        "-m",
        "silobridge.federation.cli",
        "simulate",
        str(SCENARIOS[config.scenario]),
        "--plain",
        "--out",
        str(work / "runs"),
        "--run-id",
        config.run_id,
    ]
    if config.rounds:
        command += ["--rounds", str(config.rounds)]
    if config.noise_seed is not None:
        command += ["--noise-seed", str(config.noise_seed)]
    for override in config.overrides():
        command += ["--set", override]
    done = run_logged(command, work / f"{config.run_id}.log", ROOT)
    summary_path = work / "runs" / config.run_id / "summary.json"
    if done.returncode != 0 or not summary_path.exists():
        tail = done.log_tail
        return {
            "setting": config.setting,
            "scenario": config.scenario,
            "unit": config.unit,
            "epsilon": config.epsilon,
            "wall_s": round(done.wall_s, 1),
            "error": f"exit {done.returncode}: {tail.strip().splitlines()[-1] if tail.strip() else ''}",
            "log_tail": tail,
        }
    row = summarise(config, json.loads(summary_path.read_text()), rounds_trained(summary_path.parent))
    row["wall_s"] = round(done.wall_s, 1)
    row["other_share"] = round(done.other_share, 2)
    return row


def combine_draws(config: Config, draws: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One point from its draws: the federated metrics averaged (with their spread and each draw's WAPE),
    everything the noise does not change (budget, baselines) from the first draw, wall time summed.
    A failed draw fails the point: a mean over the draws that happened to finish would be biased."""
    failed = [row for row in draws if "error" in row]
    if failed:
        return {**failed[0], "draws": len(draws)}
    row = dict(draws[0])
    for key in FED_METRICS:
        values = [draw[key] for draw in draws if draw.get(key) is not None]
        row[key] = float(np.mean(values)) if len(values) == len(draws) else None
        if key.startswith("fed_wape"):
            row[f"{key}_sd"] = float(np.std(values, ddof=1)) if len(draws) > 1 and row[key] is not None else None
            row[f"{key}_draws"] = [draw.get(key) for draw in draws]
    row["draws"] = len(draws)
    row["noise_seeds"] = [draw_config.noise_seed for draw_config in config.draw_configs()]
    row["epsilon_spent"] = max(float(draw["epsilon_spent"]) for draw in draws) if config.unit else None
    row["wall_s"] = round(sum(float(draw["wall_s"]) for draw in draws), 1)
    row["other_share"] = max(float(draw.get("other_share") or 0.0) for draw in draws)
    return row


def run_point(config: Config, work: Path) -> dict[str, Any]:
    """Every draw of one point, combined."""
    draws = []
    for draw in config.draw_configs():
        draws.append(run_one(draw, work))
        if "error" in draws[-1]:
            break
    return combine_draws(config, draws)


def _find(rows: Sequence[dict[str, Any]], **match: Any) -> dict[str, Any] | None:
    for row in rows:
        if "error" not in row and all(row.get(key) == value for key, value in match.items()):
            return row
    return None


def _status(value: float | None, passed: bool | None) -> str:
    if value is None or passed is None or (isinstance(value, float) and math.isnan(value)):
        return "not run"
    return "met" if passed else "NOT met"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def target_checks(rows: Sequence[dict[str, Any]], epsilon: float = TARGET_EPSILON) -> list[dict[str, Any]]:
    """The issue's targets, judged on the measured rows ("not run" where a row is missing or failed)."""
    checks = []
    record = _find(rows, scenario="default", unit="record", epsilon=epsilon)
    reference = _find(rows, scenario="default", unit=None)
    ratio = _ratio(record and record["fed_wape_all"], reference and reference["fed_wape_all"])
    checks.append(
        {
            "setting": "default / record",
            "epsilon": epsilon,
            "check": "federated demand WAPE (all) / non-private federated WAPE (all)",
            "value": ratio,
            "target": f"<= {MAX_WAPE_RATIO:.2f}",
            "status": _status(ratio, None if ratio is None else ratio <= MAX_WAPE_RATIO),
        }
    )
    settings = [("default / record", {"scenario": "default", "unit": "record"})] + [
        (f"large / firm {mechanism}", {"scenario": "large", "unit": "firm", "setting": f"large / firm {mechanism}"})
        for mechanism in ("central", "distributed")
    ]
    for setting, match in settings:
        row = _find(rows, epsilon=epsilon, **match)
        ratio = _ratio(row and row["fed_wape_small"], row and row["local_wape_small"])
        checks.append(
            {
                "setting": setting,
                "epsilon": epsilon,
                "check": "federated demand WAPE (small) / local-only WAPE (small)",
                "value": ratio,
                "target": "< 1.00",
                "status": _status(ratio, None if ratio is None else ratio < 1.0),
            }
        )
    return checks


def _nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def plot(rows: Sequence[dict[str, Any]], path: Path, title: str) -> Path | None:
    """WAPE (top) and risk ROC-AUC (bottom) against epsilon, one column per DP setting; the
    non-private federated model (dashed) and local-only (dotted) as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    good = [row for row in rows if "error" not in row]
    settings = list(dict.fromkeys(row["setting"] for row in good if row["unit"] is not None))
    if not settings:
        return None
    figure, axes = plt.subplots(2, len(settings), figsize=(5.2 * len(settings) + 1, 8.5), squeeze=False)
    panels = (("wape", "demand WAPE (lower is better)"), ("auc", "risk ROC-AUC (higher is better)"))
    for column, setting in enumerate(settings):
        points = sorted((row for row in good if row["setting"] == setting), key=lambda row: row["epsilon"])
        scenario = points[0]["scenario"]
        reference = _find(good, scenario=scenario, unit=None)
        epsilons = [row["epsilon"] for row in points]
        for line, (metric, label) in enumerate(panels):
            axis = axes[line][column]
            for group, colour in (("all", "tab:blue"), ("small", "tab:orange")):
                values = [_nan(row[f"fed_{metric}_{group}"]) for row in points]
                axis.plot(epsilons, values, "o-", color=colour, label=f"federated, DP ({group} firms)")
                if reference is not None and reference[f"fed_{metric}_{group}"] is not None:
                    axis.axhline(
                        reference[f"fed_{metric}_{group}"],
                        color=colour,
                        linestyle="--",
                        label=f"federated, no DP ({group})",
                    )
                local = next(
                    (
                        row[f"local_{metric}_{group}"]
                        for row in [reference, *points]
                        if row is not None and row[f"local_{metric}_{group}"] is not None
                    ),
                    None,
                )
                if local is not None:
                    axis.axhline(local, color=colour, linestyle=":", label=f"local-only ({group})")
            axis.set_xscale("log", base=2)
            axis.set_xticks(epsilons, [f"{eps:g}" for eps in epsilons])
            axis.set_xlabel(f"epsilon (delta {DELTA:g})")
            axis.set_ylabel(label)
            axis.grid(True, alpha=0.3)
            if line == 0:
                axis.set_title(f"{setting} ({points[0]['firms']} firms, {points[0]['rounds']} rounds)")
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=3 if len(settings) > 1 else 2, fontsize="small")
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0.09, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def notes(rows: Sequence[dict[str, Any]], checks: Sequence[dict[str, Any]], plot_name: str, quick: bool) -> str:
    text = [
        "## Targets (epsilon 8)",
        "",
        markdown_table(checks, CHECK_COLUMNS),
        "",
    ]
    if quick:
        text += [
            f"Quick mode: the default scenario only, {rows[0].get('rounds', QUICK_ROUNDS)} rounds instead of 30 and "
            "epsilon 2 and 8 only; the checks above are indicative, not the issue's setting.",
            "",
        ]
    failed = [row for row in rows if "error" in row]
    if failed:
        listed = "; ".join(f"{row['setting']} eps {row['epsilon']}: {row['error']}" for row in failed)
        text += [f"Failed runs: {listed}", ""]
    text += [
        f"Plot: `{plot_name}`. epsilon is the budget at delta {DELTA:g}, per firm: record, one training example "
        "(each of a firm's data sets accounted on its own); firm, a firm's whole contribution. epsilon_spent is "
        "the largest spend of any firm, recomputed from the run's verified ledger. The local-only and centralised "
        "baselines are trained without DP in every run. A private point is the mean over `draws` runs that differ "
        "only in the DP noise (fed_wape_all_sd: their standard deviation; record level: draw d ran with "
        "`--noise-seed d`). other_share is the share of the machine that other work used during the run "
        "(wall times are comparable only where it is low).",
    ]
    return "\n".join(text)


def report(
    rows: list[dict[str, Any]], name: str, parameters: dict[str, Any], quick: bool, out_dir: Path | None = None
) -> tuple[Path, Path, Path | None, list[dict[str, Any]]]:
    """Write <name>.json, .md and .png; the JSON also carries the target checks."""
    out = out_dir or RESULTS_DIR
    checks = target_checks(rows)
    image = plot(rows, out / f"{name}.png", f"{name}: utility against epsilon")
    json_path, md_path = write_results(
        name,
        parameters=parameters,
        rows=rows,
        columns=COLUMNS,
        notes=notes(rows, checks, f"{name}.png", quick),
        out_dir=out,
    )
    payload = json.loads(json_path.read_text())
    payload["checks"] = checks
    payload["plot"] = image.name if image else None
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return json_path, md_path, image, checks


def kept_rows(path: Path, configs: Sequence[Config]) -> list[dict[str, Any]]:
    """Rows of an earlier results file that ran without error and belong to this plan (same rounds)."""
    if not path.exists():
        return []
    wanted = {(config.setting, config.epsilon): config for config in configs}
    kept = []
    for row in json.loads(path.read_text()).get("results", []):
        config = wanted.get((row.get("setting"), row.get("epsilon")))
        if config is None or "error" in row:
            continue
        if config.rounds is not None and row.get("rounds") != config.rounds:
            continue
        if row.get("draws", 1) != config.draws:
            continue
        kept.append(row)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="default scenario, epsilon 2 and 8, 10 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="default scenario rounds (30; quick 10)")
    parser.add_argument("--large-rounds", type=int, default=LARGE_ROUNDS, help="rounds on the large scenario")
    parser.add_argument("--skip-large", action="store_true", help="leave out the large scenario")
    parser.add_argument("--skip-default", action="store_true", help="leave out the default scenario")
    parser.add_argument(
        "--epsilons", default=",".join(f"{e:g}" for e in EPSILONS), help="comma-separated budgets (not --quick)"
    )
    parser.add_argument(
        "--draws",
        type=int,
        default=None,
        help="noise draws averaged per private point (default 3 on the default scenario, 1 on the large one)",
    )
    parser.add_argument("--work", type=Path, default=None, help="keep run directories and logs here (default: temp)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows of the existing results file that ran without error and run only the missing ones "
        "(a long large-scenario sweep can be done in parts)",
    )
    args = parser.parse_args()
    epsilons = tuple(float(e) for e in args.epsilons.split(","))
    if args.draws is not None and args.draws < 1:
        parser.error("--draws must be at least 1")
    if args.skip_large and args.skip_default:
        parser.error("--skip-large and --skip-default leave nothing to run")
    configs = plan(args.quick, args.rounds, args.large_rounds, args.skip_large, args.skip_default, epsilons, args.draws)
    name = "dp_utility_quick" if args.quick else "dp_utility"
    if not args.quick and (args.skip_large or args.skip_default):
        name += "_default" if args.skip_large else "_large"  # a partial run keeps the other's results
    parameters = {
        "mode": "quick" if args.quick else "full",
        "epsilons": list(QUICK_EPSILONS if args.quick else epsilons),
        "delta": DELTA,
        "default_rounds": args.rounds or (QUICK_ROUNDS if args.quick else "scenario (30)"),
        "large_rounds": None if args.quick or args.skip_large else args.large_rounds,
        "settings": list(dict.fromkeys(config.setting for config in configs)),
        "aggregation": "secure",
        "accountant": "rdp",
        "seed": "scenario's",
        "draws": {
            scenario: max((c.draws for c in configs if c.scenario == scenario), default=None)
            for scenario in dict.fromkeys(c.scenario for c in configs)
        },
        "points": len(configs),
        "runs": sum(len(config.draw_configs()) for config in configs),
    }
    rows: list[dict[str, Any]] = kept_rows(RESULTS_DIR / f"{name}.json", configs) if args.resume else []
    done = {(row["setting"], row["epsilon"]) for row in rows}
    configs = [config for config in configs if (config.setting, config.epsilon) not in done]
    if rows:
        parameters["kept_rows"] = [f"{row['setting']} eps {row['epsilon']}" for row in rows]
        print(f"kept {len(rows)} earlier rows of {name}.json; {len(configs)} runs to go", flush=True)
    started = time.monotonic()
    json_path, md_path, image = RESULTS_DIR / f"{name}.json", RESULTS_DIR / f"{name}.md", None
    checks = target_checks(rows)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for index, config in enumerate(configs, 1):
            print(
                f"[{index}/{len(configs)}] {config.setting}, epsilon {config.epsilon}, {config.draws} draw(s)",
                flush=True,
            )
            row = run_point(config, work)
            print(json.dumps({k: v for k, v in row.items() if k != "log_tail"}), flush=True)
            rows.append(row)
            json_path, md_path, image, checks = report(rows, name, parameters, args.quick)
    print(markdown_table(rows, COLUMNS))
    print()
    print(markdown_table(checks, CHECK_COLUMNS))
    print(f"\n{len(configs)} points in {time.monotonic() - started:.0f} s; written: {json_path}, {md_path}, {image}")
    if any("error" in row for row in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
