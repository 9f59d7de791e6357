"""Federated logistic regression: Newton steps on secure sums equal Newton on pooled data."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from silobridge.clients.data import FirmData
from silobridge.clients.query_answers import logistic as firm_half
from silobridge.contract.iterative_params import LogisticParams
from silobridge.contract.query_protocol import QueryStep, clip_answer
from silobridge.contract.ranges import to_symmetric
from silobridge.errors import ConfigError, ProtocolError
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.server.query_plans import PLANS, logistic
from tests.analytics_support import chain_firms, drive, pooled_firm
from tests.conftest import DEFAULT

RIDGE = 2.0


@pytest.fixture(scope="module")
def firms() -> list[FirmData]:
    return list(chain_firms(str(DEFAULT))[1])


def _pooled_design(firms: list[FirmData], params: LogisticParams) -> tuple[np.ndarray, np.ndarray]:
    risk = pooled_firm(firms).risk
    x = to_symmetric(risk[list(params.features)].to_numpy(), params.feature_ranges())
    return np.column_stack([np.ones(len(x)), x]), risk["disrupted"].to_numpy(dtype=float)


def _pooled_newton(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """Textbook Newton on the pooled rows: maximise log-likelihood - ridge/2 ||slopes||^2."""
    beta = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], ridge)
    penalty[0] = 0.0
    for _ in range(100):
        p = 1 / (1 + np.exp(-x @ beta))
        gradient = x.T @ (y - p) - penalty * beta
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty)
        delta = np.linalg.solve(hessian, gradient)
        beta = beta + delta
        if np.max(np.abs(delta)) < 1e-12:
            return beta
    raise AssertionError("pooled Newton did not converge")


def _scaled(result: dict) -> np.ndarray:
    return np.array(list(result["coefficients_scaled"].values()))


def test_federated_newton_equals_pooled_newton_and_sklearn(firms: list[FirmData]) -> None:
    plan = PLANS["logistic_regression"](
        {"ridge": RIDGE, "tolerance": 1e-10, "max_iterations": 30}, schema=GENERATED_SCHEMA
    )
    result, trace = drive(plan, firms)
    assert result["converged"] and trace.clipped == 0
    assert result["records"] == sum(len(f.risk) for f in firms)
    x, y = _pooled_design(firms, plan.params)
    expected = _pooled_newton(x, y, RIDGE)
    np.testing.assert_allclose(_scaled(result), expected, rtol=0, atol=1e-6)

    # scikit-learn minimises ||w||^2 / 2 + C sum(log-loss) with an unpenalised intercept: C = 1 / ridge.
    reference = LogisticRegression(C=1 / RIDGE, tol=1e-10, max_iter=10_000).fit(x[:, 1:], y)
    sk = np.concatenate([reference.intercept_, reference.coef_[0]])
    np.testing.assert_allclose(_scaled(result), sk, rtol=0, atol=1e-4)  # lbfgs stops within its own tolerance

    # Coefficients in raw units give the same linear predictor inside the ranges.
    raw = pooled_firm(firms).risk[list(plan.params.features)].to_numpy()
    inside = np.all((x[:, 1:] > -1) & (x[:, 1:] < 1), axis=1)
    slopes = np.array([result["coefficients"][name] for name in plan.params.features])
    np.testing.assert_allclose(
        (result["coefficients"]["intercept"] + raw @ slopes)[inside], (x @ expected)[inside], atol=1e-6
    )


def test_with_noise_coefficients_stay_within_the_noise_scale(firms: list[FirmData]) -> None:
    """Tolerance from the noise: near the optimum, gradient noise e (std sigma per entry) moves the
    coefficients by A^-1 e (A = H + ridge, the penalised curvature), and Hessian noise E perturbs A by
    at most rho = 2 sigma sqrt(d) / lambda_min(A) relatively (the spectral norm of Gaussian noise on a
    d x d symmetric matrix), so each coefficient stays within 5 std of A^-1 e, inflated by 1 / (1 - rho)."""
    ridge, multiplier = 20.0, 2e-5
    params = {"ridge": ridge, "max_iterations": 12, "max_records": 5000}
    plan = logistic.make_plan(params, schema=GENERATED_SCHEMA, noise_multiplier=multiplier, unit="firm")
    result, trace = drive(plan, firms, noise_multiplier=multiplier, seed=3, unit="firm")
    sigma = multiplier * trace.steps[-1].l2_bound
    assert result["noise_std"] == pytest.approx(sigma)
    x, y = _pooled_design(firms, plan.params)
    exact = _pooled_newton(x, y, ridge)
    p = 1 / (1 + np.exp(-x @ exact))
    curvature = (x * (p * (1 - p))[:, None]).T @ x + np.diag([0.0] + [ridge] * (x.shape[1] - 1))
    inverse = np.linalg.inv(curvature)
    rho = 2 * sigma * np.sqrt(x.shape[1]) / np.linalg.eigvalsh(curvature)[0]
    assert rho < 0.5  # the regime where the statement holds
    std = sigma * np.sqrt(np.diag(inverse @ inverse))
    error = np.abs(_scaled(result) - exact)
    assert np.all(error <= 5 * std / (1 - rho)), (error / std).round(2)
    assert np.any(error > 1e-6)  # noise was added


def test_step_bounds_hold_for_any_firm() -> None:
    """A firm of max_records rows at the extremes stays inside the step's bounds: clipping changes nothing."""
    plan = logistic.make_plan({"max_records": 50, "features": ["distance_km", "expedited"]}, schema=GENERATED_SCHEMA)
    step = plan.first()
    import pandas as pd

    extreme = pd.DataFrame(
        {"date": pd.Timestamp("2025-01-06"), "distance_km": [1e9] * 80, "expedited": [1.0] * 80, "disrupted": 1}
    )
    firm = FirmData("F1", None, extreme)
    raw = firm_half.local(step, firm)
    answer = clip_answer(step, raw, firm="F1")
    assert answer.clipped == 0
    assert raw[-1] == 50  # capped to max_records
    assert np.linalg.norm(raw) <= step.l2_bound
    # A firm without a risk table contributes nothing.
    np.testing.assert_array_equal(firm_half.local(step, FirmData("F2", None, None)), np.zeros(step.length))


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"ridge": -1}, "ridge"),
        ({"max_iterations": 0}, "max_iterations"),
        ({"features": ["no_such_feature"]}, "features"),
        ({"ranges": {"distance_km": [10, 5]}}, "ranges"),
        ({"max_records": "many"}, "max_records"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_malformed_params_are_rejected_naming_the_field(params: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        logistic.make_plan(params, schema=GENERATED_SCHEMA)
    assert info.value.field == f"params.{field}"
    assert f"field 'params.{field}'" in str(info.value)


def test_a_malformed_step_is_a_protocol_error_naming_the_firm(firms: list[FirmData]) -> None:
    step = logistic.make_plan({}, schema=GENERATED_SCHEMA).first()
    params = step.params
    params["coefficients"] = params["coefficients"][:-1]
    bad = QueryStep.build(
        step.query, step.step, length=step.length, value_bound=step.value_bound, l2_bound=step.l2_bound, params=params
    )
    with pytest.raises(ProtocolError, match="firm 'R1'.*coefficients"):
        firm_half.local(bad, firms[0])
