"""Parameters of the iterative analytics queries, shared by the server halves and the firm halves.

A query's parameters are validated once where the query is posed (`query_params.parse_params`: a
`ConfigError` naming the parameter), then travel inside every `QueryStep` so a firm computes exactly
what the server asks; a firm re-validates what it receives (`query_params.step_params`: a
`ProtocolError`, the step itself is malformed).
Each step's own state (coefficients, centroids, candidate itemsets, leaf masses) travels beside them.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

Range = tuple[float, float]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _check_ranges(features: tuple[str, ...], ranges: dict[str, Range]) -> None:
    for name in features:
        if name not in ranges:
            raise ValueError(f"feature '{name}' has no public range (ranges cover: {sorted(ranges)})")
        low, high = ranges[name]
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"range of '{name}' must be finite with low < high, got ({low}, {high})")


def _unique(value: tuple[str, ...], what: str) -> tuple[str, ...]:
    if len(set(value)) != len(value):
        raise ValueError(f"{what} must be unique")
    if any(not name.strip() for name in value):
        raise ValueError(f"{what} must be non-empty names")
    return value


class RangedFeatures(_Frozen):
    """Numeric risk-table features and their public ranges (the server fills both from the DataSchema)."""

    features: tuple[str, ...] = ()
    ranges: dict[str, Range] = Field(default_factory=dict, validate_default=True)

    @field_validator("features")
    @classmethod
    def _unique_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _unique(value, "features")

    @field_validator("ranges")
    @classmethod
    def _every_feature_has_a_range(cls, value: dict[str, Range], info: ValidationInfo) -> dict[str, Range]:
        _check_ranges(info.data.get("features", ()), value)
        return value

    def feature_ranges(self) -> list[Range]:
        return [self.ranges[name] for name in self.features]


class LogisticParams(RangedFeatures):
    """Logistic regression of `disrupted` on risk features by federated Newton steps.

    Features are mapped onto [-1, 1] by their public ranges, so each record's gradient and Hessian
    terms are bounded and a firm's whole contribution is bounded by `max_records` records.
    `ridge` is an L2 penalty on the slopes (not the intercept): sklearn's 1 / C.
    """

    ridge: float = Field(default=1.0, ge=0, le=1e6)
    max_iterations: int = Field(default=10, ge=1, le=50, description="Newton steps (each one release)")
    tolerance: float = Field(default=1e-8, ge=0, description="stop when no coefficient moves more than this")
    max_step: float = Field(default=10.0, gt=0, description="trust region: longest Newton step (L2)")
    min_curvature: float = Field(default=1e-9, gt=0, description="eigenvalue floor of the penalised Hessian")
    max_records: int = Field(default=10_000, ge=1, le=10_000_000, description="records a firm uses at most")


DemandFeature = Literal["log_mean", "cv", "trend", "zero_share"]
DEMAND_FEATURE_RANGES: dict[str, Range] = {
    "log_mean": (0.0, 10.0),  # log(1 + mean weekly units)
    "cv": (0.0, 2.0),  # std / mean of weekly units
    "trend": (-0.05, 0.05),  # least-squares slope per week, relative to the mean
    "zero_share": (0.0, 1.0),  # share of weeks without demand (intermittency)
}
"""Public ranges of the demand-profile features K-means clusters on (overridable per query)."""
KMEANS_CENTRE = 0.5
"""K-means' Lloyd sums carry x - KMEANS_CENTRE (the [0, 1] cube's public midpoint): a point then adds at
most sqrt(features) / 2 to a sum, not sqrt(features), which halves the noise the sums need."""


class KMeansParams(_Frozen):
    """K-means (Lloyd rounds) on demand profiles: one point per series (`series`) or per firm (`firm`).

    Step 0 releases a coarse joint histogram (`init_grid` cells per feature) from which the server
    picks deterministic initial centroids; each further step is one Lloyd round. `max_iterations`
    defaults to 1: under DP (the default mode) every round is a release, and 1 round beat 2 at
    epsilon 1 on every chain measured (12, 50 and 200 firms; benchmarks/results/analytics_sweep*.md);
    a run without noise should ask for more (10, say) to converge.
    """

    k: int = Field(ge=2, le=64)
    unit: Literal["series", "firm"] = "series"
    features: tuple[DemandFeature, ...] = Field(default=("log_mean", "cv", "trend"), min_length=1)
    ranges: dict[str, Range] = Field(
        default_factory=dict, validate_default=True, description="public ranges; defaults per feature"
    )
    init_grid: int = Field(default=4, ge=2, le=16, validate_default=True)
    max_iterations: int = Field(default=1, ge=1, le=100, description="Lloyd rounds (each one release)")
    tolerance: float = Field(default=1e-6, ge=0, description="stop when no centroid coordinate moves more")
    max_points: int = Field(default=200, ge=1, le=100_000, description="series a firm contributes at most")
    min_count: float = Field(default=1.0, ge=0, description="a cluster with fewer points keeps its centroid")
    count_sigmas: float = Field(default=2.0, ge=0, description="... or with a count under this many noise stds")

    @field_validator("features")
    @classmethod
    def _unique_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _unique(value, "features")

    @field_validator("ranges")
    @classmethod
    def _fill_ranges(cls, value: dict[str, Range], info: ValidationInfo) -> dict[str, Range]:
        features = info.data.get("features", ())
        unknown = sorted(set(value) - set(DEMAND_FEATURE_RANGES))
        if unknown:
            raise ValueError(f"{unknown} are not demand-profile features {sorted(DEMAND_FEATURE_RANGES)}")
        filled = {name: value.get(name, DEMAND_FEATURE_RANGES[name]) for name in features}
        _check_ranges(features, filled)
        return filled

    @field_validator("init_grid")
    @classmethod
    def _grid_size(cls, value: int, info: ValidationInfo) -> int:
        width = len(info.data.get("features", ()))
        cells = value**width
        if cells > 4096:
            raise ValueError(f"init_grid ** {width} features is {cells} cells, over 4096")
        if info.data.get("k", 0) > cells:
            raise ValueError(f"k = {info.data['k']} is more than the {cells} initial grid cells: raise init_grid")
        return value

    @property
    def points_per_firm(self) -> int:
        """Points one firm contributes at most: its series (capped), or one point for the firm."""
        return 1 if self.unit == "firm" else self.max_points

    def feature_ranges(self) -> list[Range]:
        return [self.ranges[name] for name in self.features]


class AprioriParams(_Frozen):
    """Frequent itemsets over order baskets; `min_support` is an absolute count of baskets chain-wide.

    A firm contributes at most `max_baskets` baskets of at most `max_basket_items` items each (chosen
    by a hash of the order id and item, so the choice is fixed and the same at every level). By default
    a candidate survives when its noisy count reaches max(min_support, the absent-itemset guard): at
    min_support an itemset counted d above is missed as often as one d below is kept (false positives
    and negatives balanced), and the guard keeps an itemset that no basket holds with probability
    `absent_kept / candidates` (at most `absent_kept` such itemsets expected per level).
    `threshold_sigmas` instead sets the cut-off at min_support + that many noise stds.
    """

    items: tuple[str, ...] = Field(min_length=1, max_length=5000, description="the public item vocabulary")
    min_support: float = Field(default=20.0, ge=1)
    threshold_sigmas: float | None = Field(
        default=None, ge=0, description="cut-off min_support + this many noise stds (default: the balanced rule)"
    )
    absent_kept: float = Field(
        default=0.1, gt=0, lt=1, description="itemsets held by no basket that one level keeps by noise, expected"
    )
    max_size: int = Field(default=3, ge=1, le=6)
    max_baskets: int = Field(default=1000, ge=1, le=1_000_000)
    max_basket_items: int = Field(default=6, ge=1, le=20)
    max_candidates: int = Field(default=5000, ge=1, le=100_000)

    @field_validator("items")
    @classmethod
    def _unique_items(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _unique(value, "items")


class AnomalyParams(RangedFeatures):
    """Isolation-style anomaly scores from a shared, seeded forest of random half-space trees.

    Every firm builds the same trees from `seed` and the public ranges (splits at mid-points of
    randomly shifted boxes, never at data values), so one record gets the same score at any firm
    once the federation has released the trees' leaf masses.
    """

    trees: int = Field(default=32, ge=1, le=256)
    depth: int = Field(default=6, ge=1, le=12, validate_default=True)
    seed: int = Field(default=0, ge=0, lt=2**32)
    isolation_mass: float = Field(default=1.0, ge=0, description="a node with at most this mass isolates a record")
    contamination: float = Field(default=0.01, gt=0, lt=0.5, description="share of records to flag")
    score_threshold: float | None = Field(default=None, gt=0, le=1, description="fixed cut-off; skips a release")
    score_bins: int = Field(default=50, ge=10, le=10_000, description="histogram bins; fewer: less noise per tail")
    max_records: int = Field(default=10_000, ge=1, le=10_000_000)

    @field_validator("depth")
    @classmethod
    def _forest_size(cls, value: int, info: ValidationInfo) -> int:
        leaves = info.data.get("trees", 1) * 2**value
        if leaves > 65_536:
            raise ValueError(f"trees * 2 ** depth = {leaves} leaves is over 65536")
        return value


# ---- what each step carries -------------------------------------------------------------------------


class LogisticStep(_Frozen):
    """Current coefficients (intercept first) on the [-1, 1] scale."""

    query: LogisticParams
    coefficients: tuple[float, ...]

    @model_validator(mode="after")
    def _shape(self) -> LogisticStep:
        if not self.query.features:
            raise ValueError("query.features is empty: the server must resolve them")
        if len(self.coefficients) != len(self.query.features) + 1:
            raise ValueError(f"coefficients: {len(self.coefficients)} values for {len(self.query.features)} features")
        return self


class KMeansStep(_Frozen):
    """`grid`: the initial histogram; `lloyd`: one round against `centroids` (k rows on the [0, 1] scale)."""

    query: KMeansParams
    phase: Literal["grid", "lloyd"]
    centroids: tuple[tuple[float, ...], ...] = ()

    @model_validator(mode="after")
    def _shape(self) -> KMeansStep:
        if self.phase == "lloyd":
            width = len(self.query.features)
            if len(self.centroids) != self.query.k or any(len(row) != width for row in self.centroids):
                raise ValueError(f"centroids must be {self.query.k} rows of {width} values")
        return self


class AprioriStep(_Frozen):
    """Candidate itemsets of one size, each sorted, drawn from the vocabulary."""

    query: AprioriParams
    level: int = Field(ge=1)
    candidates: tuple[tuple[str, ...], ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _shape(self) -> AprioriStep:
        known = set(self.query.items)
        for itemset in self.candidates:
            if len(itemset) != self.level or list(itemset) != sorted(set(itemset)) or not known.issuperset(itemset):
                raise ValueError(f"candidate {list(itemset)} is not a sorted set of {self.level} known items")
        return self


class AnomalyStep(_Frozen):
    """`mass`: leaf counts; `histogram`: score histogram given the masses; `flag`: count scores >= cutoff."""

    query: AnomalyParams
    phase: Literal["mass", "histogram", "flag"]
    masses: tuple[float, ...] = ()
    cutoff: float | None = None

    @model_validator(mode="after")
    def _shape(self) -> AnomalyStep:
        if not self.query.features:
            raise ValueError("query.features is empty: the server must resolve them")
        leaves = self.query.trees * 2**self.query.depth
        if self.phase != "mass" and len(self.masses) != leaves:
            raise ValueError(f"masses: {len(self.masses)} values, expected trees * 2 ** depth = {leaves}")
        if self.phase == "flag" and self.cutoff is None:
            raise ValueError("cutoff: required in the flag phase")
        return self
