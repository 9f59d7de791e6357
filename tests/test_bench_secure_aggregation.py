"""Smoke test of the secure-aggregation benchmark: the three methods on a tiny federation, in-process.

Five firms, 1,000 parameters, two rounds, no dropout: every method must arrive at the same global
weights within its quantisation bound, and the summary must carry the ratios and the per-firm costs.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks._secagg_apps import METHODS, Case, reference_weights, simulate
from benchmarks.bench_secure_aggregation import add_ratios, notes, summarise

FIRMS, PARAMS, ROUNDS = 5, 1_000, 2


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    work = tmp_path_factory.mktemp("bench-secagg")
    reference = reference_weights(Case("plain", FIRMS, PARAMS, 0.0, ROUNDS), include_dropped=True)
    out = {}
    for method in METHODS:
        run = simulate(Case(method, FIRMS, PARAMS, 0.0, ROUNDS), work)
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
