"""Federated K-means: Lloyd rounds on secure sums equal pooled Lloyd from the same (grid) start."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from silobridge.clients.data import FirmData
from silobridge.clients.query_answers import kmeans as firm_half
from silobridge.contract.iterative_params import KMeansParams
from silobridge.errors import ConfigError
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.server.query_plans import PLANS, kmeans
from tests.analytics_support import chain_firms, drive
from tests.conftest import DEFAULT


@pytest.fixture(scope="module")
def firms() -> list[FirmData]:
    return list(chain_firms(str(DEFAULT))[1])


def _pooled_points(firms: list[FirmData], params: KMeansParams) -> np.ndarray:
    return np.vstack([firm_half.points(f.demand, params) for f in firms])


def _pooled_lloyd(x: np.ndarray, start: np.ndarray, rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """Plain Lloyd on the pooled points; an empty cluster keeps its centroid."""
    centroids = start.copy()
    counts = np.zeros(len(start))
    for _ in range(rounds):
        labels = np.argmin(((x[:, None, :] - centroids[None]) ** 2).sum(axis=2), axis=1)
        counts = np.bincount(labels, minlength=len(start)).astype(float)
        for j in np.flatnonzero(counts):
            centroids[j] = x[labels == j].mean(axis=0)
    return centroids, counts


@pytest.mark.parametrize(
    "params",
    [
        {"k": 4, "max_iterations": 30, "tolerance": 0.0},
        {"k": 3, "unit": "firm", "features": ["log_mean", "cv"], "init_grid": 3},
        {"k": 5, "features": ["log_mean", "cv", "trend", "zero_share"], "max_points": 3},
    ],
)
def test_federated_lloyd_equals_pooled_lloyd_from_the_same_start(firms: list[FirmData], params: dict) -> None:
    plan = PLANS["kmeans"](params, schema=GENERATED_SCHEMA)
    result, trace = drive(plan, firms)
    assert trace.clipped == 0
    x = _pooled_points(firms, plan.params)
    assert len(x) == (
        len(firms)
        if plan.params.unit == "firm"
        else sum(min(f.demand["series"].nunique(), plan.params.max_points) for f in firms)
    )
    # The grid release is the pooled histogram exactly, so the start is the pooled start.
    grid = plan.params.init_grid
    np.testing.assert_array_equal(trace.totals[0], firm_half.grid_counts(x, grid))
    start = kmeans.grid_init(firm_half.grid_counts(x, grid), grid, x.shape[1], plan.params.k)
    np.testing.assert_array_equal(np.array(result["initial_centroids_scaled"]), start)

    centroids, counts = _pooled_lloyd(x, start, result["iterations"])
    np.testing.assert_allclose(np.array(result["centroids_scaled"]), centroids, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(result["counts"], counts)
    assert sum(result["counts"]) == len(x)
    if params.get("tolerance") == 0.0:
        assert result["converged"]  # Lloyd reaches a fixed point: no centroid moves at all


def _series(name: str, units: list[float]) -> pd.DataFrame:
    return pd.DataFrame(
        {"date": pd.date_range("2025-01-06", periods=len(units), freq="7D"), "series": name, "units": units}
    )


def test_one_series_moves_each_step_by_at_most_its_record_bound_tight_at_opposite_corners() -> None:
    """The record is one series. A firm at its cap (max_points 2) gains series 'a', which sorts first and
    pushes 'c' out: 'a' sits at the corner (1, 1, 1) (a late spike: huge mean, cv and trend, clipped), 'c'
    at (0, 0, 1/2) (no demand). The Lloyd vector moves by 1.80 against the bound sqrt(2 (3/4 + 1)) = 1.87;
    opposite corners in two clusters reach the bound exactly; the grid moves by sqrt(2), its bound."""
    spike = [0.0] * 9 + [1e7]
    base = pd.concat([_series("b", [5.0, 7.0, 6.0, 8.0] * 2 + [5.0, 6.0]), _series("c", [0.0] * 10)])
    grown = pd.concat([_series("a", spike), base])
    plan = kmeans.make_plan({"k": 2, "max_points": 2}, schema=GENERATED_SCHEMA)
    np.testing.assert_array_equal(firm_half.points(_series("a", spike), plan.params), [[1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(firm_half.points(_series("c", [0.0] * 10), plan.params), [[0.0, 0.0, 0.5]])
    before, after = FirmData("F", base, None), FirmData("F", grown, None)
    grid = plan.first()
    assert grid.record_l2_bound == pytest.approx(np.sqrt(2))
    moved = np.linalg.norm(firm_half.local(grid, after) - firm_half.local(grid, before))
    assert moved == pytest.approx(grid.record_l2_bound)
    lloyd = plan._lloyd_step(np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.5]]))
    assert lloyd.record_l2_bound == pytest.approx(np.sqrt(3.5))
    moved = np.linalg.norm(firm_half.local(lloyd, after) - firm_half.local(lloyd, before))
    assert moved == pytest.approx(np.sqrt(3.25)) and moved <= lloyd.record_l2_bound
    # The corner itself: (1, 1, 1) in one cluster replaced by (0, 0, 0) in the other.
    centroids = np.array([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    corner = firm_half.lloyd_terms(np.ones((1, 3)), centroids) - firm_half.lloyd_terms(np.zeros((1, 3)), centroids)
    assert np.linalg.norm(corner) == pytest.approx(kmeans.displacement_bound(3), rel=1e-12)
    # Added without displacing (a firm under its cap): one point's terms, sqrt(3/4 + 1).
    alone = firm_half.lloyd_terms(np.ones((1, 3)), centroids)
    assert np.linalg.norm(alone) == pytest.approx(kmeans.point_bound(3), rel=1e-12)
    for width in range(1, 5):  # the same-cluster move sqrt(width) never exceeds the two-cluster one here
        assert kmeans.displacement_bound(width) == pytest.approx(np.sqrt(2 * (width / 4 + 1)))


def test_grid_init_is_deterministic_and_spread() -> None:
    counts = np.zeros(16)
    counts[[0, 1, 15]] = [10, 9, 1]  # a 4 x 4 grid: two dense neighbours and one far cell
    picks = kmeans.grid_init(counts, 4, 2, 3)
    centres = kmeans.cell_centres(4, 2)
    np.testing.assert_array_equal(picks, centres[[0, 15, 1]])  # densest, then count x distance^2
    np.testing.assert_array_equal(kmeans.grid_init(counts, 4, 2, 3), picks)
    # Fewer occupied cells than clusters: the rest spread over empty cells, never repeating one.
    spread = kmeans.grid_init(np.eye(1, 16).ravel(), 4, 2, 4)
    assert len({tuple(row) for row in spread}) == 4


def test_feature_map_on_a_known_series() -> None:
    units = np.array([10.0, 12.0, 14.0, 16.0, 0.0, 20.0])
    features = firm_half.profile(units)
    mean = units.mean()
    assert features["log_mean"] == pytest.approx(np.log1p(mean))
    assert features["cv"] == pytest.approx(units.std() / mean)
    assert features["trend"] == pytest.approx(np.polyfit(np.arange(6), units, 1)[0] / mean)
    assert features["zero_share"] == pytest.approx(1 / 6)
    assert firm_half.profile(np.zeros(5)) == {"log_mean": 0.0, "cv": 0.0, "trend": 0.0, "zero_share": 1.0}


def test_with_noise_each_round_stays_within_the_noise_scale(firms: list[FirmData]) -> None:
    """Each noisy Lloyd update against the exact one from the same centroids: a centroid moves to
        (s + e_s) / (c + e_c), so each coordinate is off by about (e_s - m e_c) / c, std <= sigma sqrt(2) / c;
        within 5 of those (plus the second-order term) when c > 10 sigma; it stays put when its noisy count is
    under the plan's threshold."""
    multiplier = 0.02
    params = {"k": 4, "max_iterations": 6, "tolerance": 0.0, "max_points": 8}  # no firm has more series
    plan = kmeans.make_plan(params, schema=GENERATED_SCHEMA, noise_multiplier=multiplier, unit="firm")
    _, trace = drive(plan, firms, noise_multiplier=multiplier, seed=5, unit="firm")
    x = _pooled_points(firms, plan.params)
    k, width = 4, x.shape[1]
    threshold = max(plan.params.min_count, plan.params.count_sigmas * multiplier * plan.lloyd_bound())
    assert len(trace.steps) == 7
    checked = 0
    for step, total in zip(trace.steps[1:], trace.totals[1:], strict=True):
        sigma = multiplier * step.l2_bound
        centroids = np.array(step.params["centroids"])
        exact = firm_half.lloyd_terms(x, centroids)
        counts = exact[k * width : k * width + k]
        noisy_counts = total[k * width : k * width + k]
        np.testing.assert_array_less(np.abs(noisy_counts - counts), 5 * sigma)
        moved = kmeans.lloyd_update(centroids, total[: k * width].reshape(k, width), noisy_counts, threshold)
        truth = kmeans.lloyd_update(centroids, exact[: k * width].reshape(k, width), counts, 0.5)
        for j in range(k):
            if noisy_counts[j] < threshold:
                np.testing.assert_array_equal(moved[j], centroids[j])
            elif counts[j] > 10 * sigma:
                bound = 5 * sigma * np.sqrt(2) / counts[j] / (1 - 5 * sigma / counts[j])
                np.testing.assert_array_less(np.abs(moved[j] - truth[j]), bound)
                checked += 1
            else:  # too few points for the linear bound: only the public box holds it
                assert np.all((moved[j] >= 0) & (moved[j] <= 1))
    assert checked >= 12  # most cluster updates were held to the bound
    assert not np.allclose(trace.totals[0], firm_half.grid_counts(x, plan.params.init_grid))  # noise was added


def test_a_firm_without_demand_contributes_nothing() -> None:
    plan = kmeans.make_plan({"k": 2}, schema=GENERATED_SCHEMA)
    step = plan.first()
    np.testing.assert_array_equal(firm_half.local(step, FirmData("F1", None, None)), np.zeros(step.length))
    one = pd.DataFrame({"date": pd.date_range("2025-01-06", periods=4, freq="7D"), "series": "a", "units": 5.0})
    assert firm_half.local(step, FirmData("F2", one, None)).sum() == 1


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({}, "k"),
        ({"k": 1}, "k"),
        ({"k": 3, "features": ["log_mean", "colour"]}, "features.1"),
        ({"k": 3, "features": ["cv", "cv"]}, "features"),
        ({"k": 3, "ranges": {"cv": [1.0, 0.5]}}, "ranges"),
        ({"k": 3, "init_grid": 16, "features": ["log_mean", "cv", "trend", "zero_share"]}, "init_grid"),
        ({"k": 20, "init_grid": 2}, "init_grid"),
        ({"k": 3, "unit": "region"}, "unit"),
    ],
)
def test_malformed_params_are_rejected_naming_the_field(params: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        kmeans.make_plan(params, schema=GENERATED_SCHEMA)
    assert info.value.field == f"params.{field}"
