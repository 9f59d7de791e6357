"""Federated anomaly detection: a shared seeded forest, agreed masses and cut-off, locally scored records."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from silobridge.clients.data import FirmData
from silobridge.clients.query_answers import anomaly as firm_half
from silobridge.contract.iterative_params import AnomalyParams
from silobridge.contract.query_protocol import QueryStep
from silobridge.errors import ConfigError, ProtocolError
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.server.query_plans import PLANS, anomaly
from tests.analytics_support import chain_firms, drive
from tests.conftest import DEFAULT

OUTLIERS = 4


@pytest.fixture(scope="module")
def firms() -> list[FirmData]:
    """The default chain, with a few implausible deliveries planted at the first firm (its last rows)."""
    chain = list(chain_firms(str(DEFAULT))[1])
    first = chain[0]
    odd = first.risk.tail(OUTLIERS).copy()
    odd[["distance_km", "quality_incidents", "congestion_index", "order_volume_ratio"]] = [1990.0, 19.0, -3.9, 4.8]
    chain[0] = FirmData(first.firm_id, first.demand, pd.concat([first.risk, odd], ignore_index=True), first.orders)
    return chain


def _pooled_scores(firms: list[FirmData], q: AnomalyParams, masses: np.ndarray | None = None) -> tuple:
    """Every firm's records scored against the pooled masses (or the given ones): the pooled computation."""
    x = np.vstack([firm_half.unit_records(f, q, firm=f.firm_id) for f in firms])
    feature, split = firm_half.build_forest(q.trees, q.depth, len(q.features), q.seed)
    leaf = firm_half.leaves(x, feature, split, q.depth)
    pooled_masses = firm_half.leaf_masses(leaf, q.trees, q.depth)
    used = pooled_masses if masses is None else masses
    scores = firm_half.scores(leaf, used, trees=q.trees, depth=q.depth, isolation_mass=q.isolation_mass)
    return scores, pooled_masses


def test_flagged_counts_equal_the_pooled_counts(firms: list[FirmData]) -> None:
    plan = PLANS["anomaly_detection"]({"contamination": 0.01, "score_bins": 100}, schema=GENERATED_SCHEMA)
    result, trace = drive(plan, firms)
    assert trace.clipped == 0 and len(trace.steps) == 3
    scores, masses = _pooled_scores(firms, plan.params)
    np.testing.assert_array_equal(trace.totals[0], masses)
    histogram = firm_half.score_histogram(scores, 100)
    np.testing.assert_array_equal(trace.totals[1], histogram)
    cutoff = anomaly.cutoff_from_histogram(histogram, 0.01)
    assert result["score_cutoff"] == cutoff
    assert result["flagged"] == np.count_nonzero(scores >= cutoff)
    assert result["records"] == len(scores) == sum(len(f.risk) for f in firms)
    # The cut-off is the lowest bin edge keeping at most 1% above it.
    assert np.count_nonzero(scores >= cutoff) <= 0.01 * len(scores) < np.count_nonzero(scores >= cutoff - 0.01)
    # The planted deliveries are among the flagged records.
    first = firms[0]
    mine = firm_half.scores(
        firm_half.leaves(
            firm_half.unit_records(first, plan.params, firm=first.firm_id),
            *firm_half.build_forest(plan.params.trees, plan.params.depth, len(plan.params.features), 0),
            plan.params.depth,
        ),
        masses,
        trees=plan.params.trees,
        depth=plan.params.depth,
        isolation_mass=1.0,
    )
    assert np.all(mine[-OUTLIERS:] >= cutoff)
    np.testing.assert_array_equal(mine, scores[: len(mine)])  # a record scores the same wherever it is scored


def test_a_fixed_threshold_skips_the_histogram(firms: list[FirmData]) -> None:
    plan = anomaly.make_plan({"score_threshold": 0.45, "trees": 16, "depth": 5, "seed": 7}, schema=GENERATED_SCHEMA)
    result, trace = drive(plan, firms)
    assert [s.params["phase"] for s in trace.steps] == ["mass", "flag"] and plan.planned_steps == 2
    scores, _ = _pooled_scores(firms, plan.params)
    assert result["flagged"] == np.count_nonzero(scores >= 0.45) > 0
    assert result["cutoff_source"] == "fixed score_threshold"


def test_with_noise_counts_stay_within_the_noise_scale(firms: list[FirmData]) -> None:
    """Given the released masses and cut-off, the released flagged and record counts are the true ones
    plus one Gaussian draw each: within 5 sigma. The histogram noise moves the cut-off: the true share
    above it exceeds the target by at most the noise summed over the bins above it (5 sigma sqrt(bins))."""
    multiplier = 0.003
    params = {"contamination": 0.01, "max_records": 5000, "score_bins": 50}
    plan = anomaly.make_plan(params, schema=GENERATED_SCHEMA, noise_multiplier=multiplier, unit="firm")
    result, trace = drive(plan, firms, noise_multiplier=multiplier, seed=4, unit="firm")
    scores, exact_masses = _pooled_scores(firms, plan.params, masses=trace.totals[0])
    assert not np.array_equal(trace.totals[0], exact_masses)  # noise was added
    sigma_hist, sigma_flag = (multiplier * step.l2_bound for step in trace.steps[1:])
    true_flagged = np.count_nonzero(scores >= result["score_cutoff"])
    assert abs(result["flagged"] - true_flagged) <= 5 * sigma_flag
    assert abs(result["records"] - len(scores)) <= 5 * sigma_flag
    released_total = trace.totals[1].sum()
    assert true_flagged <= 0.01 * released_total + 5 * sigma_hist * np.sqrt(50)


def test_the_forest_is_shared_and_data_independent() -> None:
    feature, split = firm_half.build_forest(8, 4, 3, seed=11)
    again = firm_half.build_forest(8, 4, 3, seed=11)
    np.testing.assert_array_equal(feature, again[0])
    np.testing.assert_array_equal(split, again[1])
    assert not np.array_equal(split, firm_half.build_forest(8, 4, 3, seed=12)[1])
    x = np.random.default_rng(0).random((500, 3))
    leaf = firm_half.leaves(x, feature, split, 4)
    assert leaf.shape == (500, 8) and leaf.min() >= 0 and leaf.max() < 16
    masses = firm_half.leaf_masses(leaf, 8, 4)
    np.testing.assert_array_equal(masses.reshape(8, 16).sum(axis=1), 500)


def test_average_path_length() -> None:
    """c(n) of the isolation-forest paper: c(256) = 2 H(255) - 2 * 255 / 256 = 10.25, with H(i) taken as
    ln(i) + Euler's gamma, which is off by about 1 / (2 i): 2 / 510 here."""
    np.testing.assert_allclose(firm_half.average_path(np.array([0.0, 1.0, 2.0])), [0.0, 0.0, 1.0])
    harmonic = np.sum(1 / np.arange(1, 256))
    assert float(firm_half.average_path(256.0)) == pytest.approx(2 * harmonic - 2 * 255 / 256, abs=2 / 510 + 1e-4)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"contamination": 0.7}, "contamination"),
        ({"trees": 256, "depth": 12}, "depth"),
        ({"features": ["distance_km", "shoe_size"]}, "features"),
        ({"score_threshold": 0}, "score_threshold"),
        ({"isolation_mass": -1}, "isolation_mass"),
        ({"features": ["distance_km"], "ranges": {"distance_km": [0, 0]}}, "ranges"),
    ],
)
def test_malformed_params_are_rejected_naming_the_field(params: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        anomaly.make_plan(params, schema=GENERATED_SCHEMA)
    assert info.value.field == f"params.{field}"


def test_a_malformed_step_is_a_protocol_error(firms: list[FirmData]) -> None:
    step = anomaly.make_plan({}, schema=GENERATED_SCHEMA).first()
    params = {**step.params, "phase": "histogram", "masses": [1.0, 2.0]}
    bad = QueryStep.build(step.query, 1, length=50, value_bound=step.value_bound, l2_bound=step.l2_bound, params=params)
    with pytest.raises(ProtocolError, match="firm 'R1'.*masses: 2 values"):
        firm_half.local(bad, firms[0])
