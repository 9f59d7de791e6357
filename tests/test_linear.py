"""The linear family's maths on known values: designs, sufficient statistics, sensitivity, AdaSSP, Newton."""

from __future__ import annotations

import dp_accounting as dpa
import numpy as np
import pytest

from silobridge.clients.features import DemandWindows, demand_windows
from silobridge.clients.linear import (
    clip_rows,
    demand_design,
    demand_dim,
    demand_sensitivity,
    demand_units_scale,
    linear_demand_forecasts,
    logistic_fit,
    newton_sensitivity,
    newton_statistics,
    ridge,
    risk_design,
    risk_row_norm,
    sufficient_statistics,
    wape,
    window_level,
)
from silobridge.contract.config import PrivacySpec
from silobridge.contract.sufficient import split_newton, split_regression, symmetric_from_triu, triu_vector
from silobridge.errors import ConfigError
from silobridge.privacy.dp import Account
from silobridge.server.linear import (
    adassp,
    calibrate_release,
    floored_solve,
    newton_step,
    noise_norm_bound,
    release_event,
)
from silobridge.server.privacy import accounting_spec
from tests.firm_support import tiny_firm


def test_triangle_round_trip() -> None:
    matrix = np.array([[1.0, 2.0, 3.0], [2.0, 4.0, 5.0], [3.0, 5.0, 6.0]])
    assert triu_vector(matrix).tolist() == [1, 2, 3, 4, 5, 6]
    assert np.array_equal(symmetric_from_triu(triu_vector(matrix), 3), matrix)
    with pytest.raises(ConfigError, match="has 6 values"):
        symmetric_from_triu(np.zeros(5), 3)


def test_sufficient_statistics_layout_and_sum() -> None:
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    y = np.array([[1.0], [2.0]])
    vector = sufficient_statistics(x, y)
    # X^T X = [[10, 14], [14, 20]], X^T Y = [[7], [10]]
    assert vector.tolist() == [10, 14, 20, 7, 10]
    xtx, xty = split_regression(vector + sufficient_statistics(x[:1], y[:1]), 2, 1)
    assert np.array_equal(xtx, x.T @ x + np.outer(x[0], x[0])) and np.array_equal(xty.ravel(), [8, 12])


def test_clip_rows_only_shrinks_long_rows() -> None:
    out = clip_rows(np.array([[3.0, 4.0], [0.3, 0.4]]), 1.0)
    assert np.allclose(out, [[0.6, 0.8], [0.3, 0.4]])


def test_one_window_moves_the_statistics_by_at_most_the_sensitivity() -> None:
    rng = np.random.default_rng(1)
    row, target = 6.0, 4.0
    bound = demand_sensitivity(row, target)
    assert bound == pytest.approx(6.0 * np.sqrt(52.0))
    worst = 0.0
    for _ in range(200):
        x = clip_rows(rng.normal(size=(1, 10)) * 10, row)
        y = clip_rows(np.abs(rng.normal(size=(1, 4))) * 10, target)
        worst = max(worst, float(np.linalg.norm(sufficient_statistics(x, y))))
    assert worst <= bound + 1e-9 and worst > 0.7 * bound  # tight for rows on the bounds


def test_newton_sensitivity_bounds_one_record() -> None:
    rng = np.random.default_rng(2)
    bound = newton_sensitivity(risk_row_norm(5))
    for _ in range(100):
        x = risk_design(rng.uniform(-1, 1, size=(1, 5)))
        assert np.linalg.norm(newton_statistics(x, np.array([rng.integers(0, 2)]), rng.normal(size=6))) <= bound


def test_demand_design_is_clipped_and_marks_seasonal_history() -> None:
    firm, *_ = tiny_firm("")
    train, _ = demand_windows(firm.data.demand, firm.spec, firm.tier)
    x, y = demand_design(train, firm.spec)
    bounds = firm.spec.linear
    assert x.shape == (len(train), demand_dim(firm.spec)) and y.shape == (len(train), firm.spec.horizon)
    assert np.linalg.norm(x, axis=1).max() <= bounds.row_norm + 1e-9
    assert np.linalg.norm(y, axis=1).max() <= bounds.target_norm + 1e-9
    lags = firm.spec.lags
    known = x[:, lags + 1 + firm.spec.horizon : lags + 1 + 2 * firm.spec.horizon]
    assert np.array_equal(known.astype(bool), train.seasonal_known)
    seasonal = x[:, lags + 1 : lags + 1 + firm.spec.horizon]
    assert np.all(seasonal[~train.seasonal_known] == 0)
    assert np.all(x[:, -1] > 0)  # the intercept survives row clipping


def test_window_level_is_the_mean_of_its_lags_floored() -> None:
    lags = np.array([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.2], [2.5, 2.5, 2.5, 2.5]])
    assert window_level(lags) == pytest.approx([3.0, 0.1, 0.1, 2.5])  # 0.05 is below the floor 0.1
    assert window_level(lags, floor=0.01) == pytest.approx([3.0, 0.01, 0.05, 2.5])


def _times(windows: DemandWindows, factor: np.ndarray, lags: int) -> DemandWindows:
    """The windows with every demand value (lags, seasonal values, targets) multiplied per window by `factor`."""
    features = windows.features.copy()
    features[:, :lags] *= factor[:, None]
    return DemandWindows(
        features,
        windows.targets * factor[:, None],
        windows.scale,
        windows.naive * factor[:, None],
        windows.origin,
        windows.seasonal_known,
    )


def test_demand_design_is_relative_to_the_window_level() -> None:
    firm, *_ = tiny_firm("")
    spec = firm.spec
    train, _ = demand_windows(firm.data.demand, spec, firm.tier)
    level = train.features[:, : spec.lags].astype(float).mean(axis=1)
    assert np.all(level > 0.1)  # no window of the tiny firm at the floor
    x, y = demand_design(train, spec)
    lifted = _times(train, np.linspace(2.0, 3.3, len(train)).astype(np.float32), spec.lags)  # a winter peak's levels
    x2, y2 = demand_design(lifted, spec)
    assert np.allclose(x2, x, atol=1e-5) and np.allclose(y2, y, atol=1e-5)  # the same rows, nothing clipped away
    inside = np.linalg.norm(x, axis=1) < spec.linear.row_norm - 1e-6  # rows the row clip left as they were
    assert inside.sum() > len(x) / 2
    assert np.allclose(x[inside, : spec.lags].mean(axis=1), 1.0, atol=1e-5)  # lags relative to their own mean
    assert demand_units_scale(train, spec) == pytest.approx(train.scale * level, rel=1e-6)
    coef = ridge(x.T @ x, x.T @ y, 1.0)
    base = linear_demand_forecasts(train, coef, spec)
    assert np.allclose(linear_demand_forecasts(lifted, coef, spec), base * np.linspace(2.0, 3.3, len(train))[:, None])
    # in units, the forecast is the model's scaled output times the training mean times the level
    assert base == pytest.approx(np.maximum(x @ coef, 0.0) * (train.scale * level)[:, None], rel=1e-5)


def test_each_window_of_a_design_moves_the_statistics_by_at_most_the_sensitivity() -> None:
    firm, *_ = tiny_firm("")
    spec = firm.spec
    train, _ = demand_windows(firm.data.demand, spec, firm.tier)
    spikes = np.where(np.arange(len(train)) % 3 == 0, 50.0, 0.0).astype(np.float32)  # extreme windows, zeros
    for windows in (train, _times(train, spikes, spec.lags)):
        x, y = demand_design(windows, spec)
        bound = demand_sensitivity(spec.linear.row_norm, spec.linear.target_norm)
        norms = [np.linalg.norm(sufficient_statistics(x[i : i + 1], y[i : i + 1])) for i in range(len(x))]
        assert max(norms) <= bound + 1e-9


def test_ridge_and_adassp_agree_without_noise() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 5))
    coef = rng.normal(size=(5, 2))
    y = x @ coef
    stats = sufficient_statistics(x, y)
    expected = np.linalg.solve(x.T @ x + 0.5 * np.eye(5), x.T @ y)
    assert np.allclose(ridge(x.T @ x, x.T @ y, 0.5), expected)
    assert np.allclose(adassp(stats, 5, 2, 0.0, 0.5), expected)
    # shrinking toward a prior: a huge penalty returns the prior
    assert np.allclose(ridge(x.T @ x, x.T @ y, 1e9, prior=np.ones((5, 2))), 1.0, atol=1e-5)


def test_floored_solve_never_inverts_an_indefinite_matrix() -> None:
    matrix = np.diag([4.0, -3.0])  # noise made it indefinite
    out = floored_solve(matrix, np.array([2.0, 2.0]), 1.0)
    assert np.allclose(out, [2.0 / 5.0, 2.0 / 1.0])  # eigenvalue -3 floored at 0, then + penalty
    with pytest.raises(ValueError, match="positive"):
        floored_solve(matrix, np.ones(2), 0.0)


def test_noise_norm_bound_holds_in_most_draws() -> None:
    rng = np.random.default_rng(4)
    dim, std = 20, 2.0
    bound = noise_norm_bound(std, dim)
    exceed = 0
    for _ in range(200):
        upper = np.triu(rng.normal(0, std, size=(dim, dim)))
        noise = upper + np.triu(upper, 1).T
        exceed += float(np.abs(np.linalg.eigvalsh(noise)).max()) > bound
    assert exceed <= 10  # at most 5 % of draws


def test_calibrated_release_spends_the_budget() -> None:
    privacy = PrivacySpec(enabled=True, epsilon=8.0, delta=1e-5)
    for steps in (1, 3):
        z = calibrate_release(privacy, steps)
        spent = Account.empty(accounting_spec(privacy)).compose(release_event(z, steps)).epsilon(1e-5)
        assert 7.9 <= spent <= 8.0
    assert calibrate_release(privacy, 3) > calibrate_release(privacy, 1)
    reserved = dpa.GaussianDpEvent(5.0)
    assert calibrate_release(privacy, 1, [reserved]) > calibrate_release(privacy, 1)


def test_noiseless_newton_steps_reach_the_logistic_fit() -> None:
    rng = np.random.default_rng(5)
    x = risk_design(rng.uniform(-1, 1, size=(400, 3)))
    y = (rng.random(400) < 1 / (1 + np.exp(-(x @ np.array([2.0, -1.0, 0.5, -0.3]))))).astype(float)
    exact = logistic_fit(x, y, 1.0)
    coef = np.zeros(4)
    for _ in range(8):
        coef = newton_step(coef, newton_statistics(x, y, coef), 0.0, 1.0)
    assert np.allclose(coef, exact, atol=1e-6)
    gradient, hessian = split_newton(newton_statistics(x, y, exact), 4)
    assert np.allclose(gradient + 1.0 * exact, 0, atol=1e-6) and np.all(np.linalg.eigvalsh(hessian) > 0)


def test_wape_known_values() -> None:
    assert wape(np.array([[1.0, 3.0]]), np.array([[2.0, 2.0]])) == pytest.approx(0.5)
    assert np.isnan(wape(np.zeros((1, 2)), np.zeros((1, 2))))
