"""Server half of federated logistic regression: Newton steps from securely summed gradients and Hessians.

Each step releases, for the current coefficients, the firms' summed gradient of the log-likelihood,
the upper triangle of the summed Hessian and the record count; the server takes one ridge-penalised,
eigenvalue-floored, trust-region-limited Newton step. The same `newton_step` applied to pooled sums
is the pooled solution, which is how the tests check the federated one.

Record level: the record is one row of the risk table; adding it adds its terms (`record_bound`)
and may push the firm's oldest row out of its `max_records` cap, so one record moves a step's sum
by at most 2 x record_bound (`CAP_DISPLACEMENT`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from silobridge.contract.config import DataSchema
from silobridge.contract.iterative_params import LogisticParams
from silobridge.contract.query_protocol import FIRM_NEIGHBOURS, QueryStep, Unit
from silobridge.contract.ranges import range_arrays
from silobridge.errors import ProtocolError
from silobridge.server.query_plans._resolve import risk_query_params

NAME = "logistic_regression"
CAP_DISPLACEMENT = 2.0
"""A record added to a firm over its cap pushes another out: the sum moves by two records' terms at most."""
NEIGHBOURS = "add or remove one row of the risk table (features clipped to the public ranges)"


def vector_length(dim: int) -> int:
    """Gradient (dim), Hessian upper triangle (dim (dim + 1) / 2), record count (1); dim counts the intercept."""
    return dim + dim * (dim + 1) // 2 + 1


def record_bound(dim: int) -> float:
    """L2 norm bound of one record's terms: features on [-1, 1] and an intercept give ||x||^2 <= dim,
    so the gradient term is at most sqrt(dim), the Hessian term 0.25 dim, the count 1."""
    return float(np.sqrt(dim + (0.25 * dim) ** 2 + 1.0))


def unpack(total: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(gradient, symmetric Hessian, count) from a released vector."""
    gradient = total[:dim]
    upper = total[dim : dim + dim * (dim + 1) // 2]
    hessian = np.zeros((dim, dim))
    hessian[np.triu_indices(dim)] = upper
    hessian = hessian + np.triu(hessian, 1).T
    return gradient, hessian, float(total[-1])


def newton_step(
    beta: np.ndarray, gradient: np.ndarray, hessian: np.ndarray, *, ridge: float, min_curvature: float, max_step: float
) -> np.ndarray:
    """One Newton step on log-likelihood - ridge/2 ||slopes||^2; the Hessian's eigenvalues are floored
    (noise can make it indefinite) and the step is shortened to `max_step`."""
    penalty = np.full(beta.size, ridge)
    penalty[0] = 0.0  # the intercept is not penalised (as in scikit-learn)
    curvature = hessian + np.diag(penalty)
    values, vectors = np.linalg.eigh((curvature + curvature.T) / 2)
    values = np.maximum(values, min_curvature)
    direction = vectors @ ((vectors.T @ (gradient - penalty * beta)) / values)
    length = float(np.linalg.norm(direction))
    if length > max_step:
        direction = direction * (max_step / length)
    return direction


def original_units(beta: np.ndarray, ranges: list[tuple[float, float]]) -> tuple[float, np.ndarray]:
    """Intercept and slopes for raw feature values (valid inside the public ranges, where nothing is clipped)."""
    low, high = range_arrays(ranges)
    scale = 2.0 / (high - low)  # x_s = scale (x - low) - 1
    slopes = beta[1:] * scale
    intercept = float(beta[0] - np.sum(beta[1:] * (scale * low + 1.0)))
    return intercept, slopes


class LogisticPlan:
    """Newton iterations until no coefficient moves more than `tolerance`, or `max_iterations` releases."""

    name = NAME

    def __init__(self, params: LogisticParams, *, noise_multiplier: float = 0.0, unit: Unit = "record"):
        self.params = params
        self.noise_multiplier = noise_multiplier
        self.unit = unit
        self.neighbours = FIRM_NEIGHBOURS if unit == "firm" else NEIGHBOURS
        self.dim = len(params.features) + 1
        self.beta = np.zeros(self.dim)
        self.iterations = 0
        self.converged = False
        self.records = 0.0
        self.history: list[float] = []

    @property
    def planned_steps(self) -> int:
        """Releases this query makes at most (for budgeting before it starts)."""
        return self.params.max_iterations

    def _step(self) -> QueryStep:
        bound = self.params.max_records * record_bound(self.dim)
        return QueryStep.build(
            NAME,
            self.iterations,
            length=vector_length(self.dim),
            value_bound=float(self.params.max_records),
            l2_bound=bound,
            record_l2_bound=CAP_DISPLACEMENT * record_bound(self.dim),
            params={"query": self.params.model_dump(mode="json"), "coefficients": self.beta.tolist()},
        )

    def first(self) -> QueryStep:
        return self._step()

    def noise_std(self) -> float:
        """Noise std of every released entry (gradient, Hessian, count) under the plan's unit."""
        return self.noise_multiplier * self._step().sensitivity(self.unit)

    def next(self, total: np.ndarray, contributors: int) -> QueryStep | None:
        values = np.asarray(total, dtype=np.float64).reshape(-1)
        if values.shape != (vector_length(self.dim),):
            raise ProtocolError(
                f"{NAME}: released vector has {values.size} entries, expected {vector_length(self.dim)}"
            )
        gradient, hessian, self.records = unpack(values, self.dim)
        p = self.params
        # noise-aware: the curvature is floored at the noise's spectral scale (about sqrt(dim) x its std per
        # entry), so a noised Hessian cannot send a step off along a direction the noise flattened
        floor = max(p.min_curvature, float(np.sqrt(self.dim)) * self.noise_std())
        delta = newton_step(self.beta, gradient, hessian, ridge=p.ridge, min_curvature=floor, max_step=p.max_step)
        self.beta = self.beta + delta
        self.iterations += 1
        moved = float(np.max(np.abs(delta)))
        self.history.append(moved)
        self.converged = moved <= p.tolerance
        if self.converged or self.iterations >= p.max_iterations:
            return None
        return self._step()

    def result(self) -> dict[str, Any]:
        ranges = self.params.feature_ranges()
        intercept, slopes = original_units(self.beta, ranges)
        return {
            "query": NAME,
            "features": list(self.params.features),
            "coefficients_scaled": {
                "intercept": float(self.beta[0]),
                **dict(zip(self.params.features, self.beta[1:].tolist(), strict=True)),
            },
            "coefficients": {"intercept": intercept, **dict(zip(self.params.features, slopes.tolist(), strict=True))},
            "scale": "features mapped from their public ranges onto [-1, 1] (clipped)",
            "noise_std": self.noise_std(),
            "records": self.records,
            "iterations": self.iterations,
            "converged": self.converged,
            "largest_move_per_iteration": self.history,
            "ridge": self.params.ridge,
        }


def make_plan(
    params: Mapping[str, Any], schema: DataSchema, *, noise_multiplier: float = 0.0, unit: Unit = "record"
) -> LogisticPlan:
    """A logistic-regression plan; features default to all of the schema's risk features, ranges to its ranges."""
    parsed = risk_query_params(LogisticParams, params, schema=schema, query=NAME)
    return LogisticPlan(parsed, noise_multiplier=noise_multiplier, unit=unit)
