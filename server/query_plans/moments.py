"""The server half of count, sum, mean and variance: one secure sum of scaled power sums.

Each query asks only the statistics it needs (count: n; sum: sum x; mean: n and sum x; variance:
n, sum x and sum x^2), so its vector has the smallest L2 bound and gets the least noise. Under DP
the answers are post-processed into their possible range (a count is a non-negative integer, a
mean lies in [low, high], a variance in [0, (high - low)^2 / 4 x n / (n - 1)]); without noise these
steps change nothing and the answer equals the pooled computation. Record level: one row adds its
weighted [1, x / M, (x / M)^2] / max_rows, of L2 norm at most ||weights|| / max_rows.

Every answer states its error scale: `noise_std` of each released number in the answer's units
(count, sum, sum of squares), and for mean and variance the first-order (delta-method) std of the
answer itself, evaluated at the released values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from silobridge.contract.config import DataSchema
from silobridge.contract.queries import MOMENT_WEIGHTS, ROW_NEIGHBOURS, VALUE_BOUND, ColumnParams, CountParams
from silobridge.contract.query_params import parse_params
from silobridge.contract.query_protocol import FIRM_NEIGHBOURS, QueryStep, Unit
from silobridge.errors import FederationError

POWERS = {"count": (0,), "sum": (1,), "mean": (0, 1), "variance": (0, 1, 2)}


class MomentsPlan:
    """One step: the firms' [n, sum x, sum x^2] (as the query needs), scaled by the public bounds."""

    planned_steps = 1

    def __init__(
        self, name: str, params: CountParams | ColumnParams, *, noise_multiplier: float = 0.0, unit: Unit = "record"
    ):
        self.name = name
        self.params = params
        self.powers = POWERS[name]
        self.weights = np.array(MOMENT_WEIGHTS[name])
        self.noise_multiplier = noise_multiplier
        self.unit = unit
        self.neighbours = FIRM_NEIGHBOURS if unit == "firm" else ROW_NEIGHBOURS.format(table=params.table)
        self._total: np.ndarray | None = None
        self._contributors = 0

    @classmethod
    def factory(cls, name: str) -> Any:
        model: type[CountParams | ColumnParams] = CountParams if name == "count" else ColumnParams

        def make(
            raw: Mapping[str, Any], schema: DataSchema, *, noise_multiplier: float = 0.0, unit: Unit = "record"
        ) -> MomentsPlan:
            params = parse_params(model, raw, query=name, schema=schema)
            return cls(name, params, noise_multiplier=noise_multiplier, unit=unit)

        return make

    def first(self) -> QueryStep:
        norm = float(np.linalg.norm(self.weights))
        return QueryStep.build(
            self.name,
            0,
            length=len(self.powers),
            value_bound=VALUE_BOUND,
            l2_bound=norm,
            record_l2_bound=norm / self.params.max_rows,
            params=self.params.model_dump(mode="json"),
        )

    def next(self, total: np.ndarray, contributors: int) -> QueryStep | None:
        self._total = np.asarray(total, dtype=np.float64) / self.weights
        self._contributors = contributors
        return None

    def _noise_stds(self) -> dict[int, float]:
        """Noise std of n, sum x and sum x^2 (answer units): z x sensitivity / weight, unscaled."""
        sigma = self.noise_multiplier * self.first().sensitivity(self.unit)
        scale = self.params.magnitude if isinstance(self.params, ColumnParams) else 1.0
        rows = self.params.max_rows
        return {k: float(sigma / w * rows * scale**k) for k, w in zip(self.powers, self.weights, strict=True)}

    def result(self) -> dict[str, Any]:
        if self._total is None:
            raise FederationError(f"query '{self.name}' has no released sum yet")
        rows = self.params.max_rows
        sums = dict(zip(self.powers, self._total, strict=True))
        stds = self._noise_stds()
        names = {0: "count", 1: "sum", 2: "sum_of_squares"}
        answer: dict[str, Any] = {"firms": self._contributors, "noise_std": {names[k]: stds[k] for k in self.powers}}
        if 0 in sums:
            answer["count"] = max(0.0, float(np.round(sums[0] * rows)))
        if self.name == "count":
            return answer
        params = self.params
        if not isinstance(params, ColumnParams):
            raise FederationError(f"query '{self.name}' needs a column and its range")
        scale = params.magnitude
        total = float(sums[1] * rows * scale)
        if self.name == "sum":
            answer["sum"] = total
            return answer
        n = answer["count"]
        if n < 1:
            return {**answer, "mean": None, "variance": None, "std": None}
        mean = min(params.high, max(params.low, total / n))
        answer["mean"] = mean
        # d(S/n) = dS/n - S dn / n^2, the two noises independent
        answer["noise_std"]["mean"] = math.hypot(stds[1] / n, mean * stds[0] / n)
        if self.name == "mean":
            return answer
        if n < 2:
            return {**answer, "variance": None, "std": None}
        squares = float(sums[2] * rows * scale * scale)
        variance = (squares - total * total / n) / (n - 1)
        variance = min((params.high - params.low) ** 2 / 4 * n / (n - 1), max(0.0, variance))
        # d((Q - S^2/n)/(n-1)) ~ dQ/n - 2 mean dS/n + (mean^2 - variance) dn / n
        answer["noise_std"]["variance"] = (
            math.sqrt(stds[2] ** 2 + (2 * mean * stds[1]) ** 2 + ((mean * mean - variance) * stds[0]) ** 2) / n
        )
        return {**answer, "variance": variance, "std": math.sqrt(variance)}
