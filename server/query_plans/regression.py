"""The server half of linear regression and AR(p): exact least squares from secure sums.

The firms release [upper triangle of X^T X, X^T y, y^T y] of their scaled, clipped data in one
sum; the server unscales it and solves the ridge-stabilised normal equations
(X^T X + lambda P) beta = X^T y, with P the identity except for the intercept and lambda = ridge x
the mean diagonal of X^T X over the features. Without noise that is the pooled fit, to float
precision. Linear regression's columns are standardised with their public ranges (centred on the
midpoint, divided by half the width, so they span [-1, 1]): against a fixed record bound that
quarters the coefficients' noise for a 0/1 feature, against dividing by the magnitude; the solve
runs on those columns and the coefficients are mapped back. Under DP the noised X^T X may not be
positive definite; it is then projected onto the positive definite matrices (eigenvalues floored at
lambda, or 1e-9 x the largest one) before the solve, post-processing that costs no privacy. Under DP
the ridge is noise-aware: each feature's diagonal also gets sqrt(dim) x the noise std of its
released Gram entry (about half the spectral norm of the symmetric noise matrix), so a noised matrix
is regularised by what the noise can do to it.

Record level: for linear regression one row of the demand table adds its own [x x^T, x y, y^2],
L2 norm <= sqrt(dim (dim + 1) / 2 + dim + 1) / max_rows (`gram_record_bound`). For AR the record is
one observation, and the relation is the replacement of its value (the series and weeks are public:
the lag windows need them); see `silobridge.contract.queries.ar_record_bound` for the sensitivity of
each step.

AR(p) is the same regression on lag windows of every firm's demand series, then a second step sums
each series' last p values (and counts the series), from which the forecast of the total of all
series runs `horizon` periods ahead: S_{T+1} = k c + sum_i phi_i S_{T+1-i} is exact for the sum of
k series that share the AR coefficients. With `differences` d (ARIMA(p, d, 0)) the firms difference
each series d times first; the forecast of the summed d-th difference is integrated back to levels
from the sum of every series' last d levels (released in the same second step).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from silobridge.contract.config import DataSchema
from silobridge.contract.queries import (
    AR_NEIGHBOURS,
    ROW_NEIGHBOURS,
    VALUE_BOUND,
    AutoregressionParams,
    LinearRegressionParams,
    ar_ends_record_bound,
    ar_record_bound,
    ar_standardisation,
    difference_scale,
    gram_l2_bound,
    gram_length,
    gram_record_bound,
)
from silobridge.contract.query_params import parse_params
from silobridge.contract.query_protocol import FIRM_NEIGHBOURS, QueryStep, Unit
from silobridge.errors import FederationError


@dataclass(frozen=True)
class Normal:
    """Unscaled sufficient statistics: X^T X, X^T y, y^T y (X's first column is the intercept)."""

    xtx: np.ndarray
    xty: np.ndarray
    yty: float

    @classmethod
    def from_vector(cls, total: np.ndarray, scales: np.ndarray, target_scale: float, rows: int) -> Normal:
        """Undo the firms' scaling: column j was divided by scales[j], the target by target_scale, sums by rows."""
        dim = scales.size
        tri = gram_length(dim) - dim - 1
        upper, xty, yty = total[:tri], total[tri : tri + dim], total[tri + dim]
        gram = np.zeros((dim, dim))
        gram[np.triu_indices(dim)] = upper
        gram = gram + np.triu(gram, 1).T
        outer = np.outer(scales, scales)
        return cls(gram * outer * rows, xty * scales * target_scale * rows, float(yty * target_scale**2 * rows))

    @property
    def rows(self) -> float:
        return float(self.xtx[0, 0])

    def unstandardised(
        self, centres: np.ndarray, halves: np.ndarray, target_centre: float, target_half: float
    ) -> Normal:
        """The statistics of X = Z M and y = c + h v from those of standardised Z and v (M: `transform`)."""
        m = transform(centres, halves)
        first = self.xtx[:, 0]  # Z^T 1 (Z's first column is the intercept)
        xty = m.T @ (target_centre * first + target_half * self.xty)
        yty = target_centre**2 * self.rows + 2 * target_centre * target_half * self.xty[0] + target_half**2 * self.yty
        return Normal(m.T @ self.xtx @ m, xty, float(yty))


def transform(centres: np.ndarray, halves: np.ndarray) -> np.ndarray:
    """M with x = z M: x_0 = z_0 = 1 and x_j = centres_j + halves_j z_j (index 0 the intercept: 0 and 1)."""
    m = np.diag(np.asarray(halves, dtype=np.float64))
    m[0, 1:] = np.asarray(centres, dtype=np.float64)[1:]
    return m


def ridge_lambda(xtx: np.ndarray, ridge: float) -> float:
    """lambda = ridge x the mean diagonal of X^T X over the features (not the intercept)."""
    return ridge * float(np.mean(np.diag(xtx)[1:])) if xtx.shape[0] > 1 else 0.0


def noise_penalty(sigma: float, scales: np.ndarray, rows: int) -> np.ndarray:
    """Per-column noise-aware ridge: sqrt(dim) x the noise std of each feature's unscaled diagonal entry.

    `sigma` is the noise std of an entry of the released (scaled) vector; column j was divided by
    scales[j] and the sums by `rows`, so its diagonal entry carries sigma x rows x scales[j]^2. The
    intercept (column 0) is not shrunk."""
    penalty = math.sqrt(scales.size) * sigma * rows * np.asarray(scales, dtype=np.float64) ** 2
    penalty[0] = 0.0
    return penalty


def ridge_solve(
    xtx: np.ndarray,
    xty: np.ndarray,
    ridge: float,
    extra_penalty: np.ndarray | None = None,
    *,
    scales: np.ndarray | None = None,
    noise_floor: float = 0.0,
) -> np.ndarray:
    """(X^T X + lambda P + diag(extra)) beta = X^T y, solved on the columns' public scales.

    On the scaled columns (X^T X divided by scales_i scales_j) the DP noise is the same on every entry,
    so with `noise_floor` > 0 (sqrt(dim) x that noise std) the matrix's eigenvalues are floored there
    before the solve: a noised matrix is never inverted as it is, even when a tiny noisy eigenvalue
    leaves it positive definite. Without noise the matrix is solved as it is unless noise-free rounding
    made it indefinite (then projected, eigenvalues floored at lambda or 1e-9 x the largest)."""
    lam = ridge_lambda(xtx, ridge)
    penalty = np.diag([0.0] + [lam] * (xtx.shape[0] - 1))
    if extra_penalty is not None:
        penalty = penalty + np.diag(extra_penalty)
    d = np.ones(xtx.shape[0]) if scales is None else np.asarray(scales, dtype=np.float64)
    matrix = ((xtx + xtx.T) / 2 + penalty) / np.outer(d, d)
    rhs = np.asarray(xty, dtype=np.float64) / d
    if noise_floor <= 0:
        try:
            np.linalg.cholesky(matrix)
            return np.linalg.solve(matrix, rhs) / d
        except np.linalg.LinAlgError:
            pass
    values, vectors = np.linalg.eigh(matrix)
    floor = max(noise_floor, lam / float(np.max(d)) ** 2, 1e-9 * float(np.max(np.abs(values))), 1e-300)
    return (vectors @ ((vectors.T @ rhs) / np.maximum(values, floor))) / d


def fit_summary(normal: Normal, beta: np.ndarray) -> dict[str, float | None]:
    """Rows, R^2 and the residual standard deviation, from the same sufficient statistics."""
    n = normal.rows
    rss = normal.yty - 2 * beta @ normal.xty + beta @ normal.xtx @ beta
    tss = normal.yty - normal.xty[0] ** 2 / n if n > 0 else 0.0
    dof = n - beta.size
    return {
        "rows": float(np.round(n)),  # an integer; rounding only removes float residue (post-processing)
        "r2": float(1 - rss / tss) if tss > 0 else None,
        "residual_std": float(math.sqrt(max(rss, 0.0) / dof)) if dof > 0 else None,
    }


def _gram_step(name: str, index: int, dim: int, params: dict[str, Any], record_bound: float) -> QueryStep:
    return QueryStep.build(
        name,
        index,
        length=gram_length(dim),
        value_bound=VALUE_BOUND,
        l2_bound=gram_l2_bound(dim),
        record_l2_bound=record_bound,
        params=params,
    )


class LinearRegressionPlan:
    name = "linear_regression"
    planned_steps = 1

    def __init__(self, params: LinearRegressionParams, *, noise_multiplier: float = 0.0, unit: Unit = "record"):
        self.params = params
        self.noise_multiplier = noise_multiplier
        self.unit = unit
        self.neighbours = FIRM_NEIGHBOURS if unit == "firm" else ROW_NEIGHBOURS.format(table=params.table)
        self.centres = np.array([0.0] + [params.centre(c) for c in params.features])
        self.halves = np.array([1.0] + [params.half_width(c) for c in params.features])
        self.standard: Normal | None = None
        self.normal: Normal | None = None
        self.contributors = 0

    @staticmethod
    def create(
        raw: Mapping[str, Any], schema: DataSchema, *, noise_multiplier: float = 0.0, unit: Unit = "record"
    ) -> LinearRegressionPlan:
        params = parse_params(LinearRegressionParams, raw, query="linear_regression", schema=schema)
        return LinearRegressionPlan(params, noise_multiplier=noise_multiplier, unit=unit)

    def first(self) -> QueryStep:
        dim = self.halves.size
        bound = gram_record_bound(dim) / self.params.max_rows
        return _gram_step(self.name, 0, dim, self.params.model_dump(mode="json"), bound)

    @property
    def entry_noise_std(self) -> float:
        """Noise std of every entry of the released (standardised, divided by max_rows) vector."""
        return float(self.noise_multiplier * self.first().sensitivity(self.unit))

    def next(self, total: np.ndarray, contributors: int) -> QueryStep | None:
        p = self.params
        ones = np.ones(self.halves.size)
        self.standard = Normal.from_vector(np.asarray(total), ones, 1.0, p.max_rows)
        self.normal = self.standard.unstandardised(
            self.centres, self.halves, p.centre(p.target), p.half_width(p.target)
        )
        self.contributors = contributors
        return None

    def coefficients(self) -> np.ndarray:
        """The fit in the data's units, solved on the standardised columns where every entry's noise is the same.

        The stated ridge (lambda on the data's coefficients) is lambda / half_j^2 on the standardised ones,
        which is the same objective divided by the target's half width squared; under DP the noise-aware
        ridge and the eigenvalue floor are added there."""
        if self.standard is None or self.normal is None:
            raise FederationError(f"query '{self.name}' has no released sum yet")
        p = self.params
        sigma = self.entry_noise_std
        stated = ridge_lambda(self.normal.xtx, p.ridge) / self.halves**2
        stated[0] = 0.0
        penalty = stated + (noise_penalty(sigma, np.ones(self.halves.size), p.max_rows) if sigma > 0 else 0.0)
        floor = math.sqrt(self.halves.size) * sigma * p.max_rows
        scaled = ridge_solve(self.standard.xtx, self.standard.xty, 0.0, penalty, noise_floor=floor)
        beta = p.half_width(p.target) * np.linalg.solve(transform(self.centres, self.halves), scaled)
        beta[0] += p.centre(p.target)
        return np.asarray(beta)

    def result(self) -> dict[str, Any]:
        if self.normal is None:
            raise FederationError(f"query '{self.name}' has no released sum yet")
        beta = self.coefficients()
        p = self.params
        sigma = self.entry_noise_std
        return {
            "firms": self.contributors,
            "target": self.params.target,
            "intercept": float(beta[0]),
            "coefficients": {c: float(b) for c, b in zip(self.params.features, beta[1:], strict=True)},
            **fit_summary(self.normal, beta),
            "noise_std": {
                "rows": sigma * p.max_rows,
                "standardised_entry": sigma * p.max_rows,
            },
            "standardised": {
                "centres": dict(zip((p.target, *p.features), (p.centre(p.target), *self.centres[1:]), strict=True)),
                "half_widths": dict(
                    zip((p.target, *p.features), (p.half_width(p.target), *self.halves[1:]), strict=True)
                ),
            },
            "noise_ridge": None
            if sigma == 0
            else (noise_penalty(sigma, np.ones(self.halves.size), p.max_rows)).tolist(),
        }


def integrate(differenced: list[float], levels: np.ndarray) -> list[float]:
    """Levels from forecasts of the d-th difference, given the last d levels (most recent first).

    Linear in the levels, so it integrates the sum of many series from the sum of their last levels.
    """
    d = len(levels)
    # the last value of each lower difference: last[k] = (Delta^k y)_T
    last = [sum((-1) ** j * math.comb(k, j) * float(levels[j]) for j in range(k + 1)) for k in range(d)]
    out = []
    for step in differenced:
        value = step
        for k in reversed(range(d)):
            last[k] += value
            value = last[k]
        out.append(float(value))
    return out


class AutoregressionPlan:
    name = "autoregression"
    planned_steps = 2

    def __init__(self, params: AutoregressionParams, *, noise_multiplier: float = 0.0, unit: Unit = "record"):
        self.params = params
        self.noise_multiplier = noise_multiplier
        self.privacy_unit = unit
        self.neighbours = FIRM_NEIGHBOURS if unit == "firm" else AR_NEIGHBOURS
        self.unit = params.high * difference_scale(params.differences)  # the second step's scale
        centre, half = ar_standardisation(params.high, params.differences)
        self.centre, self.half = centre, half  # the first step's standardisation, in units
        self.centres = np.array([0.0] + [centre] * params.lags)
        self.halves = np.array([1.0] + [half] * params.lags)
        self.scales = self.halves
        self.standard: Normal | None = None
        self.sigmas: list[float] = []
        self.beta: np.ndarray | None = None
        self.normal: Normal | None = None
        self.forecast: list[float] | None = None
        self.differenced: list[float] = []
        self.series = 0.0
        self.contributors = 0

    @staticmethod
    def create(
        raw: Mapping[str, Any], schema: DataSchema, *, noise_multiplier: float = 0.0, unit: Unit = "record"
    ) -> AutoregressionPlan:
        params = parse_params(AutoregressionParams, raw, query="autoregression", schema=schema)
        return AutoregressionPlan(params, noise_multiplier=noise_multiplier, unit=unit)

    def first(self) -> QueryStep:
        p = self.params
        bound = ar_record_bound(p.lags, p.differences) / p.max_rows
        step = _gram_step(self.name, 0, self.scales.size, p.model_dump(mode="json"), bound)
        self.sigmas = [self.noise_multiplier * step.sensitivity(self.privacy_unit)]
        return step

    def next(self, total: np.ndarray, contributors: int) -> QueryStep | None:
        p = self.params
        total = np.asarray(total, dtype=np.float64)
        if self.beta is None:
            ones = np.ones(self.halves.size)
            self.standard = Normal.from_vector(total, ones, 1.0, p.max_rows)
            self.normal = self.standard.unstandardised(self.centres, self.halves, self.centre, self.half)
            self.beta = self._solve()
            self.contributors = contributors
            length = 1 + p.lags + p.differences
            step = QueryStep.build(
                self.name,
                1,
                length=length,
                value_bound=VALUE_BOUND,
                l2_bound=math.sqrt(length),
                record_l2_bound=ar_ends_record_bound(p.differences) / p.max_series,
                params=p.model_dump(mode="json"),
            )
            self.sigmas.append(self.noise_multiplier * step.sensitivity(self.privacy_unit))
            return step
        self.series = max(0.0, float(np.round(total[0] * p.max_series)))
        window = list(total[1 : 1 + p.lags] * p.max_series * self.unit)  # most recent first
        levels = total[1 + p.lags :] * p.max_series * p.high  # the last d levels, most recent first
        self.differenced = []
        for _ in range(p.horizon):
            value = float(self.series * self.beta[0] + np.dot(self.beta[1:], window))
            self.differenced.append(value)
            window = [value, *window[:-1]]
        self.forecast = integrate(self.differenced, levels)
        return None

    def _solve(self) -> np.ndarray:
        """The fit in units, solved on the standardised lags (every released entry's noise the same there):
        the stated ridge carried over exactly (lambda / half^2), the noise-aware ridge and eigenvalue
        floor added there, the coefficients mapped back (as linear regression does)."""
        if self.standard is None or self.normal is None:
            raise FederationError(f"query '{self.name}' has not released its Gram sum yet")
        p = self.params
        sigma = self.sigmas[0] if self.sigmas else 0.0
        stated = ridge_lambda(self.normal.xtx, p.ridge) / self.halves**2
        stated[0] = 0.0
        penalty = stated + (noise_penalty(sigma, np.ones(self.halves.size), p.max_rows) if sigma > 0 else 0.0)
        floor = math.sqrt(self.halves.size) * sigma * p.max_rows
        scaled = ridge_solve(self.standard.xtx, self.standard.xty, 0.0, penalty, noise_floor=floor)
        beta = self.half * np.linalg.solve(transform(self.centres, self.halves), scaled)
        beta[0] += self.centre
        return np.asarray(beta)

    def result(self) -> dict[str, Any]:
        if self.beta is None or self.normal is None or self.forecast is None:
            raise FederationError(f"query '{self.name}' has not released both of its sums yet")
        return {
            "firms": self.contributors,
            "intercept": float(self.beta[0]),
            "coefficients": {f"lag_{i}": float(b) for i, b in enumerate(self.beta[1:], start=1)},
            **fit_summary(self.normal, self.beta),
            "series": self.series,
            "differences": self.params.differences,
            "forecast_total": self.forecast,
            **({"forecast_differenced": self.differenced} if self.params.differences else {}),
            "noise_std": {
                "gram_entry_scaled": self.sigmas[0],
                "xtx_lags": self.sigmas[0] * self.params.max_rows * self.half**2,
                "series": self.sigmas[1] * self.params.max_series,
                "last_values_sum": self.sigmas[1] * self.params.max_series * self.unit,
            },
        }
