"""Smoke test of the secure-aggregation benchmark: the three methods on a tiny federation, in-process.

Five firms, 1,000 parameters, two rounds, no dropout, 20 ms of training workload per firm and round:
every method must arrive at the same global weights within its quantisation bound (the workload
leaves the updates alone), run the workload once per firm and round, and the summary must carry the
ratios and the per-firm costs.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from benchmarks._secagg_apps import simulate
from benchmarks._secagg_case import METHODS, Case, local_training, reference_weights
from benchmarks.bench_secure_aggregation import (
    _where_time_goes,
    add_ratios,
    notes,
    override_grid,
    results_name,
    summarise,
)

FIRMS, PARAMS, ROUNDS, TRAIN_MS = 5, 1_000, 2, 20.0


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    work = tmp_path_factory.mktemp("bench-secagg")
    reference = reference_weights(Case("plain", FIRMS, PARAMS, 0.0, ROUNDS), include_dropped=True)
    out = {}
    for method in METHODS:
        run = simulate(Case(method, FIRMS, PARAMS, 0.0, ROUNDS, train_ms=TRAIN_MS), work)
        assert run.outcome.error is None, run.outcome.error
        out[method] = summarise(run, reference.astype(np.float64))
    add_ratios(list(out.values()))
    return out


def test_every_method_sums_to_the_reference_within_its_bound(rows: dict[str, dict]) -> None:
    for method, row in rows.items():
        assert row["status"] == "ok", (method, row)
        assert row["max_err"] <= row["err_bound"], method
    assert rows["plain"]["err_bound"] < 1e-7  # float32 rounding only
    assert rows["ours"]["err_bound"] < 1e-7  # 48-bit quantisation: float32 rounding dominates
    assert 1e-6 < rows["flower_secaggplus"]["err_bound"] < 1e-3  # 22-bit quantisation


def test_ratios_exchanges_and_costs_are_reported(rows: dict[str, dict]) -> None:
    plain, ours, flower = rows["plain"], rows["ours"], rows["flower_secaggplus"]
    assert plain["vs_plain"] == 1.0
    assert ours["vs_plain"] == pytest.approx(ours["round_s"] / plain["round_s"], rel=1e-2)
    assert flower["vs_plain"] == pytest.approx(flower["round_s"] / plain["round_s"], rel=1e-2)
    assert (plain["exchanges"], ours["exchanges"], flower["exchanges"]) == (1, 2, 4)
    assert ours["keys_s"] > 0 and ours["amortised_s"] > ours["round_s"]
    assert (ours["k"], ours["t"], flower["k"], flower["t"]) == (4, 3, 4, 3)
    for row in rows.values():
        assert row["client_cpu_ms"] > 0 and row["server_s"] >= 0
        assert row["up_kib"] * 1024 >= 4 * PARAMS  # at least a float32 update each
        assert row["down_kib"] * 1024 >= 4 * PARAMS  # the float32 global weights
    assert ours["up_kib"] * 1024 >= 8 * PARAMS  # 64-bit ring words
    assert ours["clipped"] == 0 and ours["recovered_self_masks_per_round"] == 0
    text = notes(list(rows.values()))
    assert f"ours {ours['vs_plain']:.2f}x plain" in text
    assert f"Flower's SecAgg+ {flower['vs_plain']:.2f}x" in text
    assert "No firm trains here" in text


def test_every_method_trains_once_per_firm_and_round(rows: dict[str, dict]) -> None:
    for method, row in rows.items():
        assert row["train_ms"] == TRAIN_MS
        assert TRAIN_MS <= row["train_cpu_ms"] < 1.5 * TRAIN_MS, method  # once, not twice
        assert row["client_cpu_ms"] >= row["train_cpu_ms"], method
        assert row["breakdown"]["firm_cpu_ms_per_round_by_step"]["train"] == pytest.approx(
            row["train_cpu_ms"], abs=0.01
        )
    text = notes(list(rows.values()), TRAIN_MS)
    assert f"each firm spends {TRAIN_MS:g} ms of process CPU time a round" in text
    flower = rows["flower_secaggplus"]
    stages = flower["breakdown"]["firm_cpu_ms_per_round_by_stage"]
    train = flower["breakdown"]["firm_cpu_ms_per_round_by_step"]["train"]
    assert stages["collect_masked_vectors"] >= train  # SecAgg+ trains in this stage
    line = _where_time_goes(flower)  # which shows the training apart from the stage
    assert f"train {train:.1f}" in line
    assert f"collect_masked_vectors {stages['collect_masked_vectors'] - train:.1f}" in line


def test_training_workload_uses_the_requested_cpu_time() -> None:
    started = time.process_time()
    products = local_training(50.0)
    used_ms = 1000 * (time.process_time() - started)
    assert products > 0
    assert 50.0 <= used_ms < 80.0  # at least the budget; the overshoot is one 64x64 product and the loop
    assert local_training(0.0) == 0


def test_a_case_rejects_a_negative_or_undefined_training_time() -> None:
    assert Case("plain", FIRMS, PARAMS, 0.0, ROUNDS).train_ms == 0.0
    assert Case("ours", FIRMS, PARAMS, 0.0, ROUNDS, train_ms=100.0).to_dict()["train_ms"] == 100.0
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="train_ms"):
            Case("plain", FIRMS, PARAMS, 0.0, ROUNDS, train_ms=bad)


def test_grid_override_and_results_name() -> None:
    grid = [(50, 10_000, 0.0), (50, 100_000, 0.3), (10, 100_000, 0.0)]
    assert override_grid(grid) == grid
    assert override_grid(grid, [50], [100_000], [0, 0.3]) == [(50, 100_000, 0.0), (50, 100_000, 0.3)]
    assert override_grid(grid, firms=[20]) == [(20, 10_000, 0.0), (20, 100_000, 0.3), (20, 100_000, 0.0)]
    assert results_name("default", 0.0, custom=False) == "secure_aggregation"
    assert results_name("quick", 100.0, custom=False) == "secure_aggregation_train100ms_quick"
    assert results_name("default", 100.0, custom=True) == "secure_aggregation_train100ms_custom"
