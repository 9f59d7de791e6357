"""Sufficient statistics: metrics from summed vectors equal metrics on the pooled predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from silobridge.contract.stats import (
    POOLED,
    STAT_SLOTS,
    DemandErrorStats,
    Moments,
    RiskStats,
    demand_metrics_by_group,
    risk_metrics_by_group,
    slot_by_group,
    split_groups,
    split_slots,
)


def test_demand_metrics_by_hand() -> None:
    stats = DemandErrorStats.from_forecasts(np.array([[10.0, 12.0], [5.0, 0.0]]), np.array([[8.0, 12.0], [6.0, 4.0]]))
    assert stats.metrics() == {"wape": pytest.approx(7 / 30), "mae": pytest.approx(7 / 4)}


def test_risk_metrics_match_sklearn_on_pooled_predictions() -> None:
    rng = np.random.default_rng(3)
    firms = []
    for n, shift in ((4000, 0.0), (300, 0.5), (150, -0.3)):
        labels = (rng.random(n) < 0.04).astype(float)
        logits = rng.normal(-3.2 + shift, 1.0, n) + 1.8 * labels
        firms.append((1 / (1 + np.exp(-logits)), labels))
    summed = sum((RiskStats.from_predictions(p, y) for p, y in firms), RiskStats.empty())
    pooled_p = np.concatenate([p for p, _ in firms])
    pooled_y = np.concatenate([y for _, y in firms])
    metrics = summed.metrics()
    # Exact up to ties within a score bin: 1024 bins on the logit scale keep that below 1e-3 here.
    assert metrics["roc_auc"] == pytest.approx(roc_auc_score(pooled_y, pooled_p), abs=1e-3)
    assert metrics["pr_auc"] == pytest.approx(average_precision_score(pooled_y, pooled_p), abs=5e-3)
    assert metrics["brier"] == pytest.approx(np.mean((pooled_p - pooled_y) ** 2))


def test_risk_metrics_undefined_without_positives() -> None:
    metrics = RiskStats.from_predictions(np.array([0.1, 0.2]), np.array([0.0, 0.0])).metrics()
    assert np.isnan(metrics["roc_auc"]) and np.isnan(metrics["pr_auc"])
    assert metrics["brier"] == pytest.approx((0.01 + 0.04) / 2)


def test_vectors_round_trip_and_add() -> None:
    a = DemandErrorStats(1.0, 10.0, 2.0)
    assert DemandErrorStats.from_vector(a.to_vector()) == a
    r = RiskStats.from_predictions(np.array([0.9, 0.1, 0.5]), np.array([1.0, 0.0, 1.0]))
    back = RiskStats.from_vector(r.to_vector())
    np.testing.assert_array_equal(back.positives, r.positives)
    assert back.count == 3 and r.to_vector().size == RiskStats.SIZE


def test_group_slots_sum_to_groups_and_all() -> None:
    small = DemandErrorStats(2.0, 10.0, 4.0).to_vector()
    large = DemandErrorStats(3.0, 30.0, 6.0).to_vector()
    total = slot_by_group(small, "small") + slot_by_group(large, "large") + slot_by_group(small, "small")
    parts = split_groups(total)
    np.testing.assert_array_equal(parts["small"], 2 * small)
    np.testing.assert_array_equal(parts["all"], 2 * small + large)
    metrics = demand_metrics_by_group(total)
    assert metrics["all"]["wape"] == pytest.approx(7 / 50)
    assert set(risk_metrics_by_group(np.zeros(RiskStats.SIZE * len(STAT_SLOTS)))) == {"small", "large", "all"}
    pooled = slot_by_group(small, POOLED) + slot_by_group(large, POOLED)
    np.testing.assert_array_equal(split_slots(pooled)["small"], 0.0)
    np.testing.assert_array_equal(split_groups(pooled, ())["all"], small + large)
    assert set(demand_metrics_by_group(pooled, ())) == {"all"}
    assert demand_metrics_by_group(pooled, ())["all"]["wape"] == pytest.approx(5 / 40)
    with pytest.raises(ValueError, match="unknown firm group"):
        slot_by_group(small, "medium")


def test_moments_give_pooled_mean_and_std() -> None:
    rng = np.random.default_rng(0)
    parts = [rng.normal(i, 1 + i, size=(50 * (i + 1), 3)) for i in range(3)]
    total = Moments.of(parts[0]) + Moments.of(parts[1]) + Moments.of(parts[2])
    pooled = np.concatenate(parts)
    np.testing.assert_allclose(total.mean(), pooled.mean(axis=0))
    np.testing.assert_allclose(total.std(), pooled.std(axis=0))
    np.testing.assert_allclose(Moments.from_vector(total.to_vector()).total, total.total)
