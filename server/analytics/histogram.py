"""The server half of histogram and quantiles: one secure sum of bin counts.

Quantiles come from one fine histogram (`bins` equal bins over the public [low, high]), read off
its cumulative counts with linear interpolation inside the bin. Error bound: without noise the
answer lies in the same bin as the pooled data's quantile (numpy's 'inverted_cdf'), so it is off by
at most one bin width (high - low) / bins (plus clipping to [low, high]). With DP, every bin count
carries N(0, (z max_rows)^2) noise, so the cumulative count before any bin is off by at most
z max_rows sqrt(bins) x 4 with probability > 0.9999, which moves the quantile's rank by that much
over the total count (the tolerance the tests use). One release: one noise draw for every
quantile, instead of one per bisection step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from silobridge.analytics import QueryStep, parse_params
from silobridge.config import DataSchema
from silobridge.errors import FederationError
from silobridge.queries import VALUE_BOUND, HistogramParams, QuantileParams


def histogram_quantiles(counts: np.ndarray, edges: np.ndarray, probs: Sequence[float]) -> list[float | None]:
    """Quantiles of a histogram: the first bin whose cumulative count reaches p N, interpolated inside it."""
    counts = np.maximum(np.asarray(counts, dtype=np.float64), 0.0)
    total = float(counts.sum())
    if total <= 0:
        return [None for _ in probs]
    cumulative = np.cumsum(counts)
    out: list[float | None] = []
    for p in probs:
        target = p * total
        k = min(int(np.searchsorted(cumulative, target, side="left")), counts.size - 1)
        before = cumulative[k - 1] if k > 0 else 0.0
        share = (target - before) / counts[k] if counts[k] > 0 else 1.0
        out.append(float(edges[k] + min(1.0, max(0.0, share)) * (edges[k + 1] - edges[k])))
    return out


class _CountsPlan:
    """One step: the firms' bin counts over max_rows; counts sum to at most 1 per firm, so L2 <= 1."""

    planned_steps = 1

    def __init__(self, name: str, params: HistogramParams | QuantileParams, edges: np.ndarray):
        self.name = name
        self.params = params
        self.edges = edges
        self.counts: np.ndarray | None = None
        self.contributors = 0

    def first(self) -> QueryStep:
        return QueryStep.build(
            self.name,
            0,
            length=self.edges.size - 1,
            value_bound=VALUE_BOUND,
            l2_bound=1.0,
            params=self.params.model_dump(mode="json"),
        )

    def next(self, total: np.ndarray, contributors: int) -> QueryStep | None:
        # Counts are integers: rounding is post-processing under DP, and removes float residue without it.
        self.counts = np.round(np.asarray(total, dtype=np.float64) * self.params.max_rows)
        self.contributors = contributors
        return None

    def _counts(self) -> np.ndarray:
        if self.counts is None:
            raise FederationError(f"query '{self.name}' has no released sum yet")
        return self.counts


class HistogramPlan(_CountsPlan):
    def __init__(self, params: HistogramParams):
        super().__init__("histogram", params, np.asarray(params.edges, dtype=np.float64))

    @staticmethod
    def create(raw: Mapping[str, Any], schema: DataSchema) -> HistogramPlan:
        return HistogramPlan(parse_params(HistogramParams, raw, query="histogram", schema=schema))

    def result(self) -> dict[str, Any]:
        counts = self._counts()
        return {
            "firms": self.contributors,
            "edges": self.edges.tolist(),
            "counts": counts.tolist(),
            "total": float(counts.sum()),
        }


class QuantilesPlan(_CountsPlan):
    def __init__(self, params: QuantileParams):
        super().__init__("quantiles", params, params.edges())
        self.quantile_params = params

    @staticmethod
    def create(raw: Mapping[str, Any], schema: DataSchema) -> QuantilesPlan:
        return QuantilesPlan(parse_params(QuantileParams, raw, query="quantiles", schema=schema))

    def result(self) -> dict[str, Any]:
        counts = self._counts()
        probs = self.quantile_params.probs
        values = histogram_quantiles(counts, self.edges, probs)
        return {
            "firms": self.contributors,
            "count": float(np.maximum(counts, 0).sum()),
            "quantiles": {f"{p:g}": q for p, q in zip(probs, values, strict=True)},
            "bin_width": float(self.edges[1] - self.edges[0]),
        }
