"""The server half of histogram and quantiles: one secure sum of bin counts.

Quantiles come from one fine histogram (`bins` equal bins over the public [low, high]), read off
its cumulative counts with linear interpolation inside the bin. Error bound: without noise the
answer lies in the same bin as the pooled data's quantile (numpy's 'inverted_cdf'), so it is off by
at most one bin width (high - low) / bins (plus clipping to [low, high]). With DP, every bin count
carries N(0, (z max_rows)^2) noise, so the cumulative count before any bin is off by at most
z max_rows sqrt(bins) x 4 with probability > 0.9999, which moves the quantile's rank by that much
over the total count (the tolerance the tests use). One release: one noise draw for every
quantile, instead of one per bisection step.

Record level: one row is in one bin, so it moves the counts by 1 (1 / max_rows as they travel): the
noise std of every bin is z rows, not z max_rows. Each answer states it (`noise_std_per_bin`); quantiles
also state, per probability, the std of the rank error at the answer as a share of the total
(`rank_noise_std`): the quantile is off by about that share of the distribution. Fewer bins mean
less noise in the total and wider bins: with many empty tail bins, the total's noise dominates.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from silobridge.contract.config import DataSchema
from silobridge.contract.queries import ROW_NEIGHBOURS, VALUE_BOUND, HistogramParams, QuantileParams
from silobridge.contract.query_params import parse_params
from silobridge.contract.query_protocol import FIRM_NEIGHBOURS, QueryStep, Unit
from silobridge.errors import FederationError


def histogram_quantiles(counts: np.ndarray, edges: np.ndarray, probs: Sequence[float]) -> list[float | None]:
    """Quantiles of a histogram: the first bin whose cumulative count reaches p N, interpolated inside it.

    Noisy counts are summed as released, not clamped at 0 first: clamping would add about 0.4 noise
    std to every empty bin and, over hundreds of empty tail bins, push every quantile up. The running
    sum is made non-decreasing (a running maximum, post-processing) so the first crossing is defined.
    """
    counts = np.asarray(counts, dtype=np.float64)
    total = float(counts.sum())
    if total <= 0:
        return [None for _ in probs]
    cumulative = np.maximum.accumulate(np.cumsum(counts))
    out: list[float | None] = []
    for p in probs:
        target = p * total
        k = min(int(np.searchsorted(cumulative, target, side="left")), counts.size - 1)
        before = max(cumulative[k - 1], 0.0) if k > 0 else 0.0
        inside = cumulative[k] - before
        share = (target - before) / inside if inside > 0 else 1.0
        out.append(float(edges[k] + min(1.0, max(0.0, share)) * (edges[k + 1] - edges[k])))
    return out


class _CountsPlan:
    """One step: the firms' bin counts over max_rows; counts sum to at most 1 per firm, so L2 <= 1."""

    planned_steps = 1

    def __init__(
        self,
        name: str,
        params: HistogramParams | QuantileParams,
        edges: np.ndarray,
        *,
        noise_multiplier: float = 0.0,
        unit: Unit = "record",
    ):
        self.name = name
        self.params = params
        self.edges = edges
        self.noise_multiplier = noise_multiplier
        self.unit = unit
        self.neighbours = FIRM_NEIGHBOURS if unit == "firm" else ROW_NEIGHBOURS.format(table=params.table)
        self.counts: np.ndarray | None = None
        self.contributors = 0

    def first(self) -> QueryStep:
        return QueryStep.build(
            self.name,
            0,
            length=self.edges.size - 1,
            value_bound=VALUE_BOUND,
            l2_bound=1.0,
            record_l2_bound=1.0 / self.params.max_rows,
            params=self.params.model_dump(mode="json"),
        )

    @property
    def bin_noise_std(self) -> float:
        """Noise std of every released bin count, in rows."""
        return float(self.noise_multiplier * self.first().sensitivity(self.unit) * self.params.max_rows)

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
    def __init__(self, params: HistogramParams, *, noise_multiplier: float = 0.0, unit: Unit = "record"):
        edges = np.asarray(params.edges, dtype=np.float64)
        super().__init__("histogram", params, edges, noise_multiplier=noise_multiplier, unit=unit)

    @staticmethod
    def create(
        raw: Mapping[str, Any], schema: DataSchema, *, noise_multiplier: float = 0.0, unit: Unit = "record"
    ) -> HistogramPlan:
        params = parse_params(HistogramParams, raw, query="histogram", schema=schema)
        return HistogramPlan(params, noise_multiplier=noise_multiplier, unit=unit)

    def result(self) -> dict[str, Any]:
        counts = self._counts()
        return {
            "firms": self.contributors,
            "edges": self.edges.tolist(),
            "counts": counts.tolist(),
            "total": float(counts.sum()),
            "noise_std_per_bin": self.bin_noise_std,
        }


class QuantilesPlan(_CountsPlan):
    def __init__(self, params: QuantileParams, *, noise_multiplier: float = 0.0, unit: Unit = "record"):
        super().__init__("quantiles", params, params.edges(), noise_multiplier=noise_multiplier, unit=unit)
        self.quantile_params = params

    @staticmethod
    def create(
        raw: Mapping[str, Any], schema: DataSchema, *, noise_multiplier: float = 0.0, unit: Unit = "record"
    ) -> QuantilesPlan:
        params = parse_params(QuantileParams, raw, query="quantiles", schema=schema)
        return QuantilesPlan(params, noise_multiplier=noise_multiplier, unit=unit)

    def rank_noise_std(self, counts: np.ndarray, p: float, value: float | None) -> float | None:
        """Std of the rank error at `value`, as a share of the total: the quantile is where C_k - p T crosses 0
        (C_k: the cumulative count of its first k bins, T: the total), whose noise is (1 - p) times that of
        the k bins below and p times that of the B - k bins above: sigma sqrt((1 - p)^2 k + p^2 (B - k)) / T."""
        total = float(counts.sum())
        if value is None or total <= 0:
            return None
        k = max(1, min(int(np.searchsorted(self.edges, value, side="right")), counts.size))
        spread = (1 - p) ** 2 * k + p**2 * (counts.size - k)
        return float(self.bin_noise_std * np.sqrt(spread) / total)

    def result(self) -> dict[str, Any]:
        counts = self._counts()
        probs = self.quantile_params.probs
        values = histogram_quantiles(counts, self.edges, probs)
        return {
            "firms": self.contributors,
            "count": max(0.0, float(counts.sum())),  # unbiased: the noisy counts summed as released
            "quantiles": {f"{p:g}": q for p, q in zip(probs, values, strict=True)},
            "bin_width": float(self.edges[1] - self.edges[0]),
            "noise_std_per_bin": self.bin_noise_std,
            "rank_noise_std": {f"{p:g}": self.rank_noise_std(counts, p, q) for p, q in zip(probs, values, strict=True)},
        }
