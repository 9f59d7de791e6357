"""Smoke test of the DP utility benchmark's pure parts: rows from summaries, the target checks, the
results files and the plot, on synthetic runs (no simulation)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.bench_dp_utility import Config, combine_draws, kept_rows, plan, report, summarise, target_checks


def _summary(fed: tuple[float, float], local: tuple[float, float] = (0.30, 0.50), **privacy: Any) -> dict[str, Any]:
    """A summary.json as a run writes it: demand WAPE and risk ROC-AUC by method and group."""

    def demand(all_: float, small: float) -> dict[str, Any]:
        return {"all": {"wape": all_, "mae": 1.0}, "small": {"wape": small, "mae": 1.0}, "large": {"wape": 0.2}}

    def risk(auc: float) -> dict[str, Any]:
        return {"all": {"roc_auc": auc}, "small": {"roc_auc": None}, "large": {"roc_auc": auc}}

    return {
        "federation": {"firms": 12, "rounds": 10},
        "privacy": {"enabled": True, "epsilon_overall": 7.98, "noise_multiplier": 0.9, **privacy}
        if privacy
        else {"enabled": False},
        "stopped": None,
        "models": {
            "demand": {
                "federated": demand(*fed),
                "local_only": demand(*local),
                "centralised": demand(0.2, 0.3),
                "naive": demand(0.5, 0.6),
            },
            "risk": {"federated": risk(0.8), "local_only": risk(0.7), "centralised": risk(0.85)},
        },
        "seconds": 60.0,
        "stage_seconds": {"rounds": 30.0},
    }


def _rows(record8: tuple[float, float], large8_small: float) -> list[dict[str, Any]]:
    rows = [summarise(Config("default", rounds=10), _summary((0.25, 0.40)), 10)]
    for eps, fed in ((2.0, (0.32, 0.52)), (8.0, record8)):
        config = Config("default", "record", None, eps, 10)
        rows.append(summarise(config, _summary(fed, mechanism="dpsgd", within_budget=True), 10))
    large = _summary((0.3, 0.45), (0.35, 0.5))
    rows.append(summarise(Config("large", rounds=10), large | {"federation": {"firms": 240, "rounds": 10}}, 10))
    for mechanism in ("central", "distributed"):
        for eps in (1.0, 8.0):
            summary = _summary((0.4, 0.6 if eps == 1.0 else large8_small), (0.35, 0.5), mechanism=mechanism)
            rows.append(summarise(Config("large", "firm", mechanism, eps, 10), summary, 10))
    return rows


def test_summarise_reads_the_summary() -> None:
    row = summarise(Config("default", "record", None, 8.0, 10), _summary((0.26, 0.41), mechanism="dpsgd"), 9)
    assert row["setting"] == "default / record" and row["epsilon"] == 8.0 and row["delta"] == 1e-5
    assert (row["fed_wape_all"], row["fed_wape_small"], row["local_wape_small"]) == (0.26, 0.41, 0.50)
    assert (row["fed_auc_all"], row["fed_auc_small"], row["central_wape_all"]) == (0.8, None, 0.2)
    assert (row["epsilon_spent"], row["noise_multiplier"], row["rounds_trained"]) == (7.98, 0.9, 9)
    assert row["stopped"] == "" and row["rounds_s"] == 30.0
    nodp = summarise(Config("default"), _summary((0.25, 0.40)), 10)
    assert nodp["setting"] == "default / no DP" and nodp["epsilon_spent"] is None and nodp["mechanism"] is None


def test_target_checks_are_computed_not_assumed() -> None:
    met = target_checks(_rows(record8=(0.27, 0.45), large8_small=0.48))
    assert [c["status"] for c in met] == ["met"] * 4
    assert met[0]["value"] == pytest.approx(0.27 / 0.25)
    assert met[1]["value"] == pytest.approx(0.45 / 0.50)
    assert met[2]["setting"] == "large / firm central" and met[2]["value"] == pytest.approx(0.48 / 0.5)

    missed = target_checks(_rows(record8=(0.28, 0.55), large8_small=0.52))
    assert [c["status"] for c in missed] == ["NOT met"] * 4
    assert missed[0]["value"] == pytest.approx(1.12)

    quick = target_checks(_rows(record8=(0.27, 0.45), large8_small=0.48)[:3])  # no large runs
    assert [c["status"] for c in quick] == ["met", "met", "not run", "not run"]
    failed = _rows(record8=(0.27, 0.45), large8_small=0.48)
    failed[0] = {"setting": "default / no DP", "scenario": "default", "unit": None, "error": "exit 1"}
    assert target_checks(failed)[0]["status"] == "not run"


def test_report_writes_json_markdown_and_plot(tmp_path: Path) -> None:
    rows = _rows(record8=(0.28, 0.55), large8_small=0.48)
    json_path, md_path, image, checks = report(rows, "dp_utility_test", {"mode": "test"}, quick=False, out_dir=tmp_path)
    payload = json.loads(json_path.read_text())
    assert payload["machine"]["date"] and payload["parameters"] == {"mode": "test"}
    assert len(payload["results"]) == len(rows) and payload["plot"] == "dp_utility_test.png"
    assert (
        [c["status"] for c in payload["checks"]]
        == ["NOT met", "NOT met", "met", "met"]
        == [c["status"] for c in checks]
    )
    md = md_path.read_text()
    assert "| default / record | 8 | 7.98 |" in md
    assert "NOT met" in md and "large / firm distributed" in md
    assert image is not None and image.exists() and image.read_bytes()[:4] == b"\x89PNG"


def test_plans() -> None:
    quick = plan(quick=True, rounds=None, large_rounds=10, skip_large=False)
    assert [(c.setting, c.epsilon, c.rounds) for c in quick] == [
        ("default / no DP", None, 10),
        ("default / record", 2.0, 10),
        ("default / record", 8.0, 10),
    ]
    full = plan(quick=False, rounds=None, large_rounds=5, skip_large=False)
    assert len(full) == 5 + 1 + 8 and {c.rounds for c in full if c.scenario == "large"} == {5}
    assert {c.rounds for c in full if c.scenario == "default"} == {None}
    assert "privacy.mechanism=distributed" in full[-1].overrides() and full[-1].run_id == "large-firm-distributed-eps8"
    assert Config("default").overrides() == ["privacy.enabled=false", "training.model=mlp"]
    assert len(plan(quick=False, rounds=None, large_rounds=5, skip_large=True)) == 5


def test_resume_keeps_only_finished_rows_of_the_same_plan(tmp_path: Path) -> None:
    rows = _rows(record8=(0.28, 0.55), large8_small=0.48)
    rows[2] = {**rows[2], "error": "crashed"}  # default / record eps 8 failed: it must run again
    json_path, *_ = report(rows, "dp_utility_test", {"mode": "test"}, quick=False, out_dir=tmp_path)
    configs = plan(quick=False, rounds=10, large_rounds=10, skip_large=False, epsilons=(1.0, 2.0, 8.0), draws=1)
    kept = kept_rows(json_path, configs)
    kept_keys = [(row["setting"], row["epsilon"]) for row in kept]
    assert ("default / record", 8.0) not in kept_keys  # failed earlier
    assert ("default / record", 2.0) in kept_keys and ("large / firm central", 1.0) in kept_keys
    assert len(kept) == len(rows) - 1
    # other rounds: a row of another plan is not reused
    assert kept_rows(json_path, plan(quick=False, rounds=30, large_rounds=10, skip_large=True)) == []
    assert kept_rows(tmp_path / "missing.json", configs) == []
    # nor a single draw where the plan averages three
    three = plan(quick=False, rounds=10, large_rounds=10, skip_large=True, epsilons=(2.0,), draws=3)
    assert [(row["setting"], row["epsilon"]) for row in kept_rows(json_path, three)] == [("default / no DP", None)]


def test_a_private_point_is_the_mean_of_its_noise_draws() -> None:
    point = Config("default", "record", None, 8.0, 10, draws=3)
    draws = point.draw_configs()
    assert [d.noise_seed for d in draws] == [0, 1, 2]  # record level: each draw can be rerun exactly
    assert [d.run_id for d in draws] == [f"default-record-eps8-d{seed}" for seed in range(3)]
    assert Config("default", rounds=10, draws=3).draw_configs() == [Config("default", rounds=10, draws=3)]
    large = Config("large", "firm", "central", 8.0, 10, draws=2).draw_configs()
    assert [d.noise_seed for d in large] == [None, None]  # the server's noise has no seed to fix
    assert [d.run_id for d in large] == ["large-firm-central-eps8-d0", "large-firm-central-eps8-d1"]
    rows = []
    for draw, (fed, spent) in zip(
        draws, [((0.30, 0.40), 7.99), ((0.36, 0.46), 8.0), ((0.33, 0.43), 7.98)], strict=True
    ):
        row = summarise(draw, _summary(fed, mechanism="dpsgd", epsilon_overall=spent), 10)
        rows.append(row | {"wall_s": 50.0, "other_share": 0.1})
    point_row = combine_draws(point, rows)
    assert point_row["fed_wape_all"] == pytest.approx(0.33) and point_row["fed_wape_small"] == pytest.approx(0.43)
    assert point_row["fed_wape_all_sd"] == pytest.approx(0.03)  # sample standard deviation of 0.30, 0.36, 0.33
    assert point_row["fed_wape_all_draws"] == [0.30, 0.36, 0.33] and point_row["noise_seeds"] == [0, 1, 2]
    assert point_row["fed_auc_all"] == pytest.approx(0.8) and point_row["local_wape_small"] == 0.50
    assert (point_row["draws"], point_row["wall_s"], point_row["epsilon_spent"]) == (3, 150.0, 8.0)
    # A failed draw fails the point instead of averaging the survivors.
    failed = combine_draws(point, [rows[0], {"setting": "default / record", "epsilon": 8.0, "error": "exit 1"}])
    assert failed["error"] == "exit 1" and failed["draws"] == 2 and "fed_wape_all_sd" not in failed


def test_run_logged_keeps_the_exit_code_and_the_logs_tail(tmp_path: Path) -> None:
    """The one runner both simulation benchmarks use: a failing command's code and output reach the error row."""
    from benchmarks._common import run_logged

    script = "import sys; print('x' * 3000); print('the last line'); sys.exit(3)"
    done = run_logged([sys.executable, "-c", script], tmp_path / "run.log", tmp_path)
    assert done.returncode == 3
    assert done.log_tail.endswith("the last line\n") and len(done.log_tail) == 2000
    assert (tmp_path / "run.log").read_text().startswith("x" * 3000)
    assert done.wall_s > 0
