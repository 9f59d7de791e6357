"""Server half of federated K-means: a DP-safe grid histogram to start from, then Lloyd rounds.

Step 0 releases a coarse joint histogram of the firms' points (on the [0, 1] scale of the public
ranges); the initial centroids are picked from it deterministically: the densest cell first, then
repeatedly the cell maximising count x squared distance to the nearest pick (k-means++'s rule with
the argmax in place of sampling, so no randomness is needed and noise only moves counts). Each
further step releases per-cluster sums of the points centred on the cube's midpoint (x - 1/2) and
per-cluster counts; nothing else (a within-cluster sum of squares would take a share of the noise
and move no centroid). Under DP every round is a release: few rounds (1-2) leave less noise on each.

Record level: the record is one point, i.e. one demand series (with `unit = "firm"` the firm's
total demand is its only point, so record and firm level coincide). Adding a series may push
another out of the firm's `max_points` cap, so one record may replace a point: a step moves by the
largest difference of two points' terms (`displacement_bound`, grid: sqrt(2)), not by twice one
point's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from silobridge.contract.config import DataSchema
from silobridge.contract.iterative_params import KMEANS_CENTRE as CENTRE
from silobridge.contract.iterative_params import KMeansParams
from silobridge.contract.query_params import parse_params
from silobridge.contract.query_protocol import FIRM_NEIGHBOURS, QueryStep, Unit
from silobridge.contract.ranges import from_unit
from silobridge.errors import ProtocolError

NAME = "kmeans"


def point_bound(width: int) -> float:
    """One point's terms in a Lloyd vector: x - 1/2 (norm <= sqrt(width) / 2) in one sum, 1 in one count."""
    return math.sqrt(width / 4.0 + 1.0)


def displacement_bound(width: int) -> float:
    """One point replaced by another (a series that pushes another out of the cap): in two clusters the
    vector moves by sqrt(2) x one point's terms; in one cluster only the sum moves, by <= sqrt(width).
    Tight at opposite corners of the cube."""
    return max(math.sqrt(2.0) * point_bound(width), math.sqrt(width))


def cell_centres(grid: int, width: int) -> np.ndarray:
    """Centres of the grid's cells on [0, 1]^width, in the order of `np.ravel_multi_index`."""
    index = np.stack(np.unravel_index(np.arange(grid**width), (grid,) * width), axis=1)
    return (index + 0.5) / grid


def grid_init(counts: np.ndarray, grid: int, width: int, k: int) -> np.ndarray:
    """k initial centroids from a (possibly noisy) cell histogram; ties go to the lowest cell index."""
    mass = np.maximum(np.asarray(counts, dtype=np.float64), 0.0)
    centres = cell_centres(grid, width)
    chosen = [int(np.argmax(mass))]
    nearest = np.sum((centres - centres[chosen[0]]) ** 2, axis=1)
    for _ in range(1, k):
        score = mass * nearest
        if score.max() <= 0.0:  # fewer occupied cells than clusters: spread over the empty ones
            score = nearest
        pick = int(np.argmax(score))
        chosen.append(pick)
        nearest = np.minimum(nearest, np.sum((centres - centres[pick]) ** 2, axis=1))
    return centres[chosen]


def lloyd_update(centroids: np.ndarray, sums: np.ndarray, counts: np.ndarray, min_count: float) -> np.ndarray:
    """Each centroid moves to its cluster's mean (`sums` of x - CENTRE); a cluster counted under
    `min_count` (or empty) stays put."""
    moved = centroids.copy()
    keep = counts >= max(min_count, np.finfo(np.float64).tiny)
    moved[keep] = np.clip(CENTRE + sums[keep] / counts[keep, None], 0.0, 1.0)
    return moved


class KMeansPlan:
    """One grid release, then Lloyd rounds until no centroid coordinate moves more than `tolerance`."""

    name = NAME

    def __init__(self, params: KMeansParams, *, noise_multiplier: float = 0.0, unit: Unit = "record"):
        self.params = params
        self.noise_multiplier = noise_multiplier
        self.unit = unit
        self.neighbours = (
            FIRM_NEIGHBOURS
            if unit == "firm" or params.unit == "firm"
            else "add or remove one demand series of a firm (its profile clipped to the public ranges)"
        )
        self.width = len(params.features)
        self.step = 0
        self.initial: np.ndarray | None = None
        self.centroids: np.ndarray | None = None
        self.counts = np.zeros(params.k)
        self.iterations = 0
        self.converged = False
        self.shifts: list[float] = []

    @property
    def planned_steps(self) -> int:
        return 1 + self.params.max_iterations

    def lloyd_bound(self) -> float:
        """A firm's whole Lloyd vector: its points' terms, each within `point_bound`."""
        return self.params.points_per_firm * point_bound(self.width)

    def lloyd_record_bound(self) -> float:
        """One series added or removed: its point's terms, or (a firm at its cap) a point replaced.
        With `unit = "firm"` the firm's one point is the record: it is added or removed, never replaced."""
        if self.params.unit == "firm":
            return point_bound(self.width)
        return displacement_bound(self.width)

    def grid_record_bound(self) -> float:
        """One series: 1 in one cell, or (replacing another) 1 in and 1 out of two cells."""
        return 1.0 if self.params.unit == "firm" else math.sqrt(2.0)

    def lloyd_sigma(self) -> float:
        """Noise std of every entry of a Lloyd release."""
        unit_bound = self.lloyd_bound() if self.unit == "firm" else self.lloyd_record_bound()
        return self.noise_multiplier * unit_bound

    def grid_sigma(self) -> float:
        unit_bound = float(self.params.points_per_firm) if self.unit == "firm" else self.grid_record_bound()
        return self.noise_multiplier * unit_bound

    def first(self) -> QueryStep:
        m = float(self.params.points_per_firm)
        return QueryStep.build(
            NAME,
            0,
            length=self.params.init_grid**self.width,
            value_bound=m,
            l2_bound=m,
            record_l2_bound=self.grid_record_bound(),
            params={"query": self.params.model_dump(mode="json"), "phase": "grid"},
        )

    def _lloyd_step(self, centroids: np.ndarray) -> QueryStep:
        k = self.params.k
        return QueryStep.build(
            NAME,
            self.step,
            length=k * self.width + k,
            value_bound=float(self.params.points_per_firm),
            l2_bound=self.lloyd_bound(),
            record_l2_bound=self.lloyd_record_bound(),
            params={
                "query": self.params.model_dump(mode="json"),
                "phase": "lloyd",
                "centroids": centroids.tolist(),
            },
        )

    def next(self, total: np.ndarray, contributors: int) -> QueryStep | None:
        values = np.asarray(total, dtype=np.float64).reshape(-1)
        p, k, width = self.params, self.params.k, self.width
        if self.centroids is None:
            if values.size != p.init_grid**width:
                raise ProtocolError(f"{NAME}: grid release has {values.size} entries, expected {p.init_grid**width}")
            self.initial = grid_init(values, p.init_grid, width, k)
            self.centroids = self.initial.copy()
        else:
            if values.size != k * width + k:
                raise ProtocolError(f"{NAME}: Lloyd release has {values.size} entries, expected {k * width + k}")
            sums = values[: k * width].reshape(k, width)
            self.counts = values[k * width :]
            threshold = max(p.min_count, p.count_sigmas * self.lloyd_sigma())
            moved = lloyd_update(self.centroids, sums, self.counts, threshold)
            shift = float(np.max(np.abs(moved - self.centroids)))
            self.centroids = moved
            self.shifts.append(shift)
            self.iterations += 1
            self.converged = shift <= p.tolerance
            if self.converged or self.iterations >= p.max_iterations:
                return None
        self.step += 1
        return self._lloyd_step(self.centroids)

    def result(self) -> dict[str, Any]:
        ranges = self.params.feature_ranges()
        centroids = self.centroids if self.centroids is not None else np.zeros((0, self.width))
        initial = self.initial if self.initial is not None else np.zeros((0, self.width))
        return {
            "query": NAME,
            "unit": self.params.unit,
            "features": list(self.params.features),
            "centroids": from_unit(centroids, ranges).tolist(),
            "centroids_scaled": centroids.tolist(),
            "initial_centroids_scaled": initial.tolist(),
            "counts": self.counts.tolist(),
            "counts_note": "points per cluster at the last released round (noisy under DP)",
            "noise_std": {
                "grid": self.grid_sigma(),
                "lloyd": self.lloyd_sigma(),
            },
            "iterations": self.iterations,
            "converged": self.converged,
            "largest_shift_per_iteration": self.shifts,
        }


def make_plan(
    params: Mapping[str, Any], schema: DataSchema, *, noise_multiplier: float = 0.0, unit: Unit = "record"
) -> KMeansPlan:
    """A K-means plan over demand profiles (the schema is not needed: the feature ranges are the query's)."""
    parsed = parse_params(KMeansParams, params, query=NAME)
    return KMeansPlan(parsed, noise_multiplier=noise_multiplier, unit=unit)
