"""The server half of count, sum, mean and variance: one secure sum of scaled power sums.

Each query asks only the statistics it needs (count: n; sum: sum x; mean: n and sum x; variance:
n, sum x and sum x^2), so its vector has the smallest L2 bound and gets the least noise. Under DP
the answers are post-processed into their possible range (a count is a non-negative integer, a
mean lies in [low, high], a variance in [0, (high - low)^2 / 4 x n / (n - 1)]); without noise these
steps change nothing and the answer equals the pooled computation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from silobridge.analytics import QueryStep, parse_params
from silobridge.config import DataSchema
from silobridge.errors import FederationError
from silobridge.queries import VALUE_BOUND, ColumnParams, CountParams

POWERS = {"count": (0,), "sum": (1,), "mean": (0, 1), "variance": (0, 1, 2)}


class MomentsPlan:
    """One step: the firms' [n, sum x, sum x^2] (as the query needs), scaled by the public bounds."""

    planned_steps = 1

    def __init__(self, name: str, params: CountParams | ColumnParams):
        self.name = name
        self.params = params
        self.powers = POWERS[name]
        self._total: np.ndarray | None = None
        self._contributors = 0

    @classmethod
    def factory(cls, name: str) -> Any:
        model = CountParams if name == "count" else ColumnParams

        def make(raw: Mapping[str, Any], schema: DataSchema) -> MomentsPlan:
            return cls(name, parse_params(model, raw, query=name, schema=schema))

        return make

    def first(self) -> QueryStep:
        k = len(self.powers)
        return QueryStep.build(
            self.name,
            0,
            length=k,
            value_bound=VALUE_BOUND,
            l2_bound=math.sqrt(k),
            params=self.params.model_dump(mode="json"),
        )

    def next(self, total: np.ndarray, contributors: int) -> QueryStep | None:
        self._total = np.asarray(total, dtype=np.float64)
        self._contributors = contributors
        return None

    def result(self) -> dict[str, Any]:
        if self._total is None:
            raise FederationError(f"query '{self.name}' has no released sum yet")
        rows = self.params.max_rows
        sums = dict(zip(self.powers, self._total, strict=True))
        answer: dict[str, Any] = {"firms": self._contributors}
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
        if self.name == "mean":
            return answer
        if n < 2:
            return {**answer, "variance": None, "std": None}
        squares = float(sums[2] * rows * scale * scale)
        variance = (squares - total * total / n) / (n - 1)
        variance = min((params.high - params.low) ** 2 / 4 * n / (n - 1), max(0.0, variance))
        return {**answer, "variance": variance, "std": math.sqrt(variance)}
