"""The joining-pays benchmark's pure parts on hand-made summaries (no simulation): reading today's summary and
issue 17's, averaging draws, judging the targets, the plan, the results files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench_joining_pays import (
    DRAWS,
    EPSILONS,
    EVERY_FIRM_RISK,
    FEW_EVENTS_RISK,
    NOT_PRODUCED,
    SEEDS,
    Point,
    combine_draws,
    evaluate_targets,
    kept_points,
    plan,
    read_summary,
    reductions,
    report,
)


def _group(metric: str, all_: float, small: float, large: float) -> dict[str, Any]:
    return {"all": {metric: all_}, "small": {metric: small}, "large": {metric: large}}


def _today(fed_wape: float = 0.36, k_tfp: float = 0.71) -> dict[str, Any]:
    """A summary as main writes it: federated, local_only, centralised, naive; no deployed, no per-firm."""
    return {
        "federation": {"firms": 12, "rounds": 5},
        "privacy": {"enabled": True, "epsilon_overall": 7.99},
        "stopped": None,
        "models": {
            "demand": {
                "federated": _group("wape", fed_wape, 0.40, 0.35),
                "local_only": _group("wape", 0.30, 0.60, 0.27),
                "centralised": _group("wape", 0.27, 0.30, 0.27),
                "naive": _group("wape", 0.55, 0.61, 0.54),
            },
            "risk": {
                "federated": _group("roc_auc", 0.82, 0.87, 0.78),
                "local_only": _group("roc_auc", 0.71, 0.66, 0.78),
                "centralised": _group("roc_auc", 0.86, 0.91, 0.82),
            },
        },
        "efficiency": {
            "chain": {"K": {"K_TFP": k_tfp}},
            "tiers": {"retailer": {"K": {"K_TFP": 0.93}}, "other tiers": {"K": {"K_TFP": 0.58}}},
        },
        "seconds": 60.0,
    }


def _issue17(
    deployed: float, small: float, firms: dict[str, tuple[float, float]], risk: dict[str, tuple[float, float]]
) -> dict[str, Any]:
    """A summary with issue 17's keys: deployed models and per-firm rows."""
    summary = _today()
    demand, models = summary["models"]["demand"], summary["models"]
    demand["deployed"] = _group("wape", deployed, small, deployed)
    worst = max(dep / loc for dep, loc in firms.values())
    demand["per_firm"] = {
        "worst_ratio": worst,
        "firms": {f: {"deployed": d, "local_only": loc, "choice": "global_adapted"} for f, (d, loc) in firms.items()},
    }
    models["risk"]["deployed"] = _group("roc_auc", 0.84, 0.88, 0.80)
    models["risk"]["per_firm"] = {
        f: {"deployed": {"roc_auc": d}, "local_only": {"roc_auc": loc}} for f, (d, loc) in risk.items()
    }
    summary["efficiency"] = {
        "chain": {"K": {"K_TFP": 1.04}},
        "tiers": {"retailer": {"K": {"K_TFP": 1.01}}, "other tiers": {"K": {"K_TFP": 0.99}}},
    }
    return summary


def test_read_summary_of_today_marks_missing_keys_instead_of_failing() -> None:
    row = read_summary(_today())
    assert row["wape_federated_all"] == 0.36 and row["wape_naive_small"] == 0.61 and row["auc_local_only_all"] == 0.71
    assert row["wape_deployed_all"] is None and row["auc_deployed_all"] is None and row["worst_ratio"] is None
    assert set(row["missing"]) == {
        "models.demand.deployed",
        "models.risk.deployed",
        "models.demand.per_firm",
        "models.risk.per_firm",
    }
    assert row["k_tfp_chain"] == 0.71 and row["k_tfp_groups"] == {"retailer": 0.93, "other tiers": 0.58}
    assert row["epsilon_spent"] == 7.99 and row["seconds"] == 60.0


def test_read_summary_of_issue17_reads_deployed_and_per_firm() -> None:
    summary = _issue17(0.25, 0.30, {"R1": (0.2, 0.21), "S1": (0.3, 0.5)}, {"R1": (0.8, 0.7)})
    row = read_summary(summary)
    assert row["missing"] == [] and row["wape_deployed_all"] == 0.25 and row["auc_deployed_small"] == 0.88
    assert row["worst_ratio"] == pytest.approx(0.2 / 0.21)
    assert row["demand_per_firm"] == {"R1": [0.2, 0.21], "S1": [0.3, 0.5]} and row["risk_per_firm"] == {
        "R1": [0.8, 0.7]
    }
    del summary["models"]["demand"]["per_firm"]["worst_ratio"]  # computed from the firms when not given
    assert read_summary(summary)["worst_ratio"] == pytest.approx(0.2 / 0.21)


def test_combine_draws_averages_and_a_failed_draw_fails_the_point() -> None:
    point = Point("default", 1, 8.0, draws=2, rounds=5)
    firms = {"R1": (0.2, 0.2), "S1": (0.3, 0.5)}
    draws = [
        read_summary(_issue17(0.24, 0.30, firms | {"R1": (0.19, 0.2)}, {})) | {"wall_s": 10.0},
        read_summary(_issue17(0.26, 0.30, firms | {"R1": (0.23, 0.2)}, {})) | {"wall_s": 12.0},
    ]
    row = combine_draws(point, draws)
    assert row["wape_deployed_all"] == pytest.approx(0.25) and row["wape_deployed_all_sd"] == pytest.approx(
        0.01414, 1e-3
    )
    assert row["demand_per_firm"]["R1"] == pytest.approx([0.21, 0.2])
    assert row["worst_ratio"] == pytest.approx(0.21 / 0.2)  # worst firm of the averaged WAPE, not of one draw
    assert row["wall_s"] == 22.0 and row["noise_seeds"] == [0, 1] and row["draws"] == 2
    assert row["firms"] == 12 and isinstance(row["firms"], int)  # what the draws share is kept as it is
    failed = combine_draws(point, [draws[0], {"error": "exit 1: boom", "wall_s": 3.0}])
    assert failed["error"] == "exit 1: boom" and "wape_deployed_all" not in failed


def _points(summaries: dict[tuple[str, int | None, float | None], dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for (pilot, seed, eps), summary in summaries.items():
        row = read_summary(summary) | {"wall_s": 1.0}
        out.append(combine_draws(Point(pilot, seed, eps), [row]))
    return out


def _by_target(checks: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {check["target"]: check for check in checks}


def test_targets_on_todays_summaries_say_not_produced_and_judge_what_exists() -> None:
    points = _points({("default", 1, None): _today(0.30, 0.9), ("default", 1, 8.0): _today(0.36, 0.71)})
    checks = _by_target(evaluate_targets(points, [1]))
    assert checks["worst firm's deployed / local-only demand WAPE"]["status"] == NOT_PRODUCED
    private = checks["private / non-private deployed demand WAPE (all)"]
    assert private["status"] == NOT_PRODUCED and private["detail"] == "federated global model instead: seed 1 1.2"
    assert checks["mean over firms of deployed - local-only risk ROC-AUC"]["status"] == NOT_PRODUCED
    chain = checks["chain K_TFP under DP"]
    assert chain["status"] == "NOT met" and chain["value"] == 0.71
    assert checks["every published group's K_TFP under DP"]["value"] == 0.58
    assert checks["real weekly sales: private deployed / seasonal naive WAPE"]["status"] == "not run"
    assert checks["default run time under DP (s)"]["status"] == "met"  # 60 s <= 82.5 s


def test_targets_met_and_missed_with_issue17_keys_over_seeds() -> None:
    good_firms = {"R1": (0.20, 0.20), "S1": (0.30, 0.50)}
    good_risk = {"R1": (0.80, 0.74), "S1": (0.75, 0.69)}
    summaries = {}
    for seed in (1, 2):
        summaries[("default", seed, None)] = _issue17(0.24, 0.30, good_firms, good_risk)
        summaries[("default", seed, 8.0)] = _issue17(0.25, 0.30, good_firms, good_risk)
    walmart = _issue17(0.07, 0.08, {"dept_1": (0.07, 0.08)}, {})
    walmart["models"]["demand"]["naive"] = _group("wape", 0.074, 0.11, 0.06)
    walmart["models"]["demand"]["local_only"] = _group("wape", 0.088, 0.1, 0.08)
    credit = _issue17(0.07, 0.08, {"x": (1.0, 1.0)}, {})
    credit["models"]["risk"]["local_only"] = _group("roc_auc", 0.645, 0.6, 0.7)
    summaries[("walmart", None, 8.0)] = walmart
    summaries[("credit", None, 8.0)] = credit
    checks = _by_target(evaluate_targets(_points(summaries), [1, 2]))
    assert {check["status"] for check in checks.values()} == {"met"}, checks
    assert checks["small firms' deployed / local-only demand WAPE"]["value"] == pytest.approx(0.5)
    assert checks["private / non-private deployed demand WAPE (all)"]["value"] == pytest.approx(0.25 / 0.24)
    assert checks["real loans: private deployed - local-only ROC-AUC (all)"]["value"] == pytest.approx(0.84 - 0.645)

    # seed 2 misses: one firm worse than alone, and one lender's ROC-AUC drops
    summaries[("default", 2, 8.0)] = _issue17(
        0.25, 0.30, good_firms | {"R1": (0.21, 0.20)}, good_risk | {"S1": (0.6, 0.69)}
    )
    checks = _by_target(evaluate_targets(_points(summaries), [1, 2]))
    worst = checks["worst firm's deployed / local-only demand WAPE"]
    assert worst["status"] == "NOT met" and worst["value"] == pytest.approx(1.05) and "met on 1/2" in worst["detail"]
    assert checks[EVERY_FIRM_RISK]["status"] == "NOT met"
    assert checks[EVERY_FIRM_RISK]["value"] == pytest.approx(-0.09)
    assert checks["small firms' deployed / local-only demand WAPE"]["status"] == "met"


def test_a_failed_point_is_not_run() -> None:
    points = [{"pilot": "walmart", "seed": None, "epsilon": 8.0, "error": "exit 1: configuration error"}]
    checks = _by_target(evaluate_targets(points, [1]))
    assert checks["real weekly sales: private deployed / local-only WAPE"]["status"] == "not run"
    assert checks["chain K_TFP under DP"]["status"] == "not run"


def test_plan_and_arguments() -> None:
    points = plan([1, 2, 3, 4, 5], [1.0, 2.0, 4.0, 8.0], draws=3, rounds=None, real=True)
    assert len(points) == 5 * 5 + 4
    assert sum(len(point.runs()) for point in points) == 5 * (1 + 4 * 3) + 2 * (1 + 3)
    draw = Point("default", 2, 8.0, draws=3, rounds=5).runs()[2]
    args = draw.arguments(None)
    assert args[0].endswith("scenarios/default.toml") and args[1:5] == ["--rounds", "5", "--noise-seed", "2"]
    assert "seed=2" in args and "privacy.epsilon=8.0" in args and "privacy.delta=1e-05" in args
    pilot = Point("walmart", None, None).arguments(Path("/p"))
    assert pilot[:3] == ["/p/walmart/federation.toml", "--data", "/p/walmart"] and "privacy.enabled=false" in pilot
    assert not any(arg.startswith("seed=") for arg in pilot)
    with pytest.raises(ValueError, match="pilot folders"):
        Point("credit").arguments(None)


def test_report_writes_results_and_resume_keeps_good_points(tmp_path: Path) -> None:
    points = _points({("default", 1, None): _today(0.30), ("default", 1, 8.0): _today(0.36)})
    points.append({"pilot": "walmart", "seed": None, "epsilon": 8.0, "draws": 1, "error": "exit 1: no"})
    references = {"walmart": {"seasonal_naive": {"all": 0.074}}, "credit": {"local_logistic": {"all": 0.73}}}
    json_path, md_path, image, checks = report(points, "jp_test", {"mode": "test"}, references, [1], True, tmp_path)
    payload = json.loads(json_path.read_text())
    assert payload["machine"]["date"] and payload["parameters"] == {"mode": "test"} and len(payload["checks"]) == 11
    assert payload["references"]["walmart"]["seasonal_naive"]["all"] == 0.074 and image is not None and image.exists()
    text = md_path.read_text()
    assert NOT_PRODUCED in text and "seasonal_naive" in text and "Failed runs" in text and "exit 1: no" in text
    wanted = plan([1], [8.0], draws=1, rounds=5, real=True)
    kept = kept_points(json_path, wanted)
    assert {(row["pilot"], row["epsilon"]) for row in kept} == {("default", None), ("default", 8.0)}
    assert kept_points(json_path, plan([1], [8.0], draws=3, rounds=5, real=False)) == [kept[0]]  # other draws


def test_read_summary_reads_the_summarys_own_per_firm_rows_and_their_means() -> None:
    summary = _issue17(0.25, 0.30, {"R1": (0.2, 0.21)}, {})
    summary["models"]["demand"]["per_firm"] = {
        "worst_ratio": 0.95,
        "firms": [{"firm": "R1", "deployed_wape": 0.2, "local_only_wape": 0.21, "ratio": 0.95}],
    }
    summary["models"]["risk"]["per_firm"] = {
        "firms": [
            {"firm": "R1", "deployed_roc_auc": 0.9, "local_only_roc_auc": 0.6, "difference": 0.3},
            {"firm": "R2", "deployed_roc_auc": 0.7, "local_only_roc_auc": 0.8, "difference": -0.1},
            {"firm": "S1", "deployed_roc_auc": float("nan"), "local_only_roc_auc": float("nan")},  # one test class
        ],
        "worst_difference": -0.1,
    }
    row = read_summary(summary)
    assert row["demand_per_firm"] == {"R1": [0.2, 0.21]}
    assert row["risk_per_firm"] == {"R1": [0.9, 0.6], "R2": [0.7, 0.8], "S1": [None, None]}
    assert row["auc_deployed_firm_mean"] == pytest.approx(0.8) and row["auc_local_only_firm_mean"] == pytest.approx(0.7)


def test_risk_targets_skip_firms_without_a_roc_auc_but_not_half_measured_ones() -> None:
    base = {"pilot": "default", "seed": 1, "epsilon": 8.0}
    row = {**base, "risk_per_firm": {"R1": [0.9, 0.6], "R2": [0.7, 0.8], "S1": [None, None]}}
    checks = {c["target"]: c for c in evaluate_targets([row], [1])}
    every = checks[EVERY_FIRM_RISK]
    mean = checks["mean over firms of deployed - local-only risk ROC-AUC"]
    assert every["status"] == "NOT met" and "S1" not in every["detail"] and every["value"] == pytest.approx(-0.1)
    assert mean["status"] == "met" and mean["value"] == pytest.approx(0.1)
    half = {**base, "risk_per_firm": {"R1": [0.9, 0.6], "S1": [None, 0.5]}}
    assert {c["target"]: c for c in evaluate_targets([half], [1])}[every["target"]]["status"] == "not run"


def test_firms_with_few_test_events_are_reported_apart_and_not_judged() -> None:
    summary = _issue17(0.25, 0.30, {"R1": (0.2, 0.21)}, {})
    summary["models"]["risk"]["per_firm"] = {
        "firms": [
            {"firm": "R1", "deployed_roc_auc": 0.28, "local_only_roc_auc": 0.48, "test_events": 1},
            {"firm": "M1", "deployed_roc_auc": 0.81, "local_only_roc_auc": 0.80, "test_events": 119},
        ]
    }
    row = {"pilot": "default", "seed": 1, "epsilon": 8.0, **read_summary(summary)}
    assert row["risk_test_events"] == {"R1": 1, "M1": 119}
    checks = {c["target"]: c for c in evaluate_targets([row], [1])}
    every, few = checks[EVERY_FIRM_RISK], checks[FEW_EVENTS_RISK]
    assert every["status"] == "met" and "R1" not in every["detail"] and every["value"] == pytest.approx(0.01)
    assert few["status"] == "reported, not judged" and "R1 (1 test event(s))" in few["detail"]
    assert few["value"] == pytest.approx(-0.2)
    mean = checks["mean over firms of deployed - local-only risk ROC-AUC"]  # over every firm
    assert mean["value"] == pytest.approx((-0.2 + 0.01) / 2)


def test_a_reduced_grid_says_what_it_leaves_out() -> None:
    assert reductions(SEEDS, EPSILONS, DRAWS, None, True) == []
    assert reductions((1, 2), (8.0,), 1, None, True) == [
        "seeds 1, 2 of 1-5",
        "epsilon 8 of 1, 2, 4, 8",
        "1 noise draw(s) per private point, not 3",
    ]
    assert reductions(SEEDS, EPSILONS, DRAWS, 5, False) == ["5 rounds instead of the files' own", "no real pilots"]
