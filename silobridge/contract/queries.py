"""Parameters of the simple queries, shared by their server half and their firm half.

Every bound here is public: the federation agrees on it before any firm computes anything. A firm
clips its values to the column's range and scales its statistics by these bounds, so that every
entry of the vector it sends lies in [-1, 1] (`VALUE_BOUND`) and its whole vector has a known L2
norm (the firm-level sensitivity). One record (a row; for AR one observation of a series) then
moves the summed vector by a known, much smaller L2 norm: the record-level sensitivity the DP noise
is scaled to by default. Whatever exceeds a bound (a firm with more rows than `max_rows`, say) is
clipped by `clip_answer` and counted, never silently; under record-level DP `max_rows` only scales
the vector for transport (clipping a firm's whole vector is a projection, so it never enlarges what
one record can change).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from silobridge.contract.query_params import QueryParams

VALUE_BOUND = 1.0
"""Every entry of a simple query's vector is scaled into [-1, 1] by its public bounds."""

MOMENT_WEIGHTS: dict[str, tuple[float, ...]] = {
    "count": (1.0,),
    "sum": (1.0,),
    "mean": (0.25, 1.0),
    "variance": (0.1, 0.3, 1.0),
}
"""Public weights of [n, sum x, sum x^2] in a moment query's vector (the server divides them out).

One record moves the vector by at most ||w|| / max_rows, so the weights split the noise between the
entries: a count is large next to its noise (n >> 1) while sum x is bounded by n max|x| and usually far
below it, so the higher power gets most of the budget (for the mean, 0.88% instead of 1.2% relative
error on the default scenario at epsilon 1; for the variance about 6% instead of 10%)."""

ROW_NEIGHBOURS = "add or remove one row of the {table} table (values clipped to the public ranges)"
"""The record-level neighbouring relation of the one-row-one-record queries."""

Table = Literal["demand", "risk"]


def _split_csv(value: Any) -> Any:
    """`--param features=price,promotion` on the command line: a comma-separated string is a list."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _finite_range(low: float, high: float) -> None:
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"range ({low}, {high}) must be finite")
    if not low < high:
        raise ValueError(f"range must have low < high, got ({low}, {high})")


class TableQuery(QueryParams):
    """Rows of one table; `max_rows` is the public bound on how many rows one firm contributes."""

    table: Table = "demand"
    max_rows: int = Field(default=10_000, ge=1, le=10**9)


class CountParams(TableQuery):
    """How many rows the firms' tables hold together."""


class ColumnParams(TableQuery):
    """One numeric column, clipped to the public range [low, high]."""

    column: str = Field(min_length=1)
    low: float = Field(allow_inf_nan=False)
    high: float = Field(allow_inf_nan=False)

    @field_validator("high")
    @classmethod
    def _above_low(cls, value: float, info: ValidationInfo) -> float:
        low = info.data.get("low")
        if low is not None and not value > low:
            raise ValueError(f"must be greater than low ({low}), got {value}")
        return value

    @property
    def magnitude(self) -> float:
        """The largest |value| after clipping: the scale of sums of the column."""
        return max(abs(self.low), abs(self.high))

    def columns(self) -> list[tuple[str, str, str]]:
        return [("column", self.table, self.column)]


class QuantileParams(ColumnParams):
    """Quantiles read off one fine histogram of `bins` equal bins over [low, high]."""

    probs: tuple[float, ...] = (0.25, 0.5, 0.75)
    bins: int = Field(default=256, ge=2, le=100_000)

    _split = field_validator("probs", mode="before")(_split_csv)

    @field_validator("probs")
    @classmethod
    def _in_unit_interval(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("give at least one probability")
        if any(not 0 < p <= 1 for p in value):
            raise ValueError(f"probabilities must lie in (0, 1], got {list(value)}")
        return value

    def edges(self) -> np.ndarray:
        """The fine histogram's public bin edges: `bins` equal bins over [low, high]."""
        return np.linspace(self.low, self.high, self.bins + 1)


class HistogramParams(TableQuery):
    """Counts of one column in public bins; values beyond the outer edges count in the outer bins."""

    column: str = Field(min_length=1)
    edges: tuple[float, ...]

    _split = field_validator("edges", mode="before")(_split_csv)

    @field_validator("edges")
    @classmethod
    def _increasing(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) < 2:
            raise ValueError("give at least two bin edges")
        if not all(math.isfinite(e) for e in value) or any(b <= a for a, b in zip(value, value[1:], strict=False)):
            raise ValueError(f"edges must be finite and strictly increasing, got {list(value)}")
        return value

    def columns(self) -> list[tuple[str, str, str]]:
        return [("column", self.table, self.column)]


def _parse_ranges(value: Any) -> Any:
    """`units:0:1000,price:0:50` on the command line, or a mapping column -> [low, high]."""
    if isinstance(value, str):
        out: dict[str, list[str]] = {}
        for part in value.split(","):
            if part.strip():
                column, _, bounds = part.strip().partition(":")
                out[column] = bounds.split(":")
        return out
    return value


class LinearRegressionParams(TableQuery):
    """Least squares of `target` on an intercept and `features`, every column in its public range.

    `ridge` stabilises the solve: lambda = ridge x the mean diagonal of X^T X over the features
    (the intercept is not shrunk); the pooled reference uses the same lambda.
    """

    target: str = Field(min_length=1)
    features: tuple[str, ...]
    ranges: dict[str, tuple[float, float]]
    ridge: float = Field(default=1e-9, ge=0, le=1e6)

    _split = field_validator("features", mode="before")(_split_csv)
    _ranges = field_validator("ranges", mode="before")(_parse_ranges)

    @field_validator("features")
    @classmethod
    def _unique(cls, value: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if not value:
            raise ValueError("give at least one feature")
        if len(set(value)) != len(value):
            raise ValueError(f"features repeat: {list(value)}")
        if info.data.get("target") in value:
            raise ValueError(f"the target '{info.data['target']}' cannot also be a feature")
        return value

    @field_validator("ranges")
    @classmethod
    def _covered(cls, value: dict[str, tuple[float, float]], info: ValidationInfo) -> dict[str, tuple[float, float]]:
        used = [info.data.get("target"), *info.data.get("features", ())]
        missing = [c for c in used if c is not None and c not in value]
        if missing:
            raise ValueError(f"give a public range for every column; missing: {missing}")
        extra = sorted(set(value) - set(used))
        if extra:
            raise ValueError(f"ranges given for columns the regression does not use: {extra}")
        for column, (low, high) in value.items():
            try:
                _finite_range(low, high)
            except ValueError as err:
                raise ValueError(f"column '{column}': {err}") from None
        return value

    def magnitude(self, column: str) -> float:
        low, high = self.ranges[column]
        return max(abs(low), abs(high))

    def centre(self, column: str) -> float:
        """The midpoint of the column's public range: the firms centre on it (public, so no privacy cost)."""
        low, high = self.ranges[column]
        return (low + high) / 2

    def half_width(self, column: str) -> float:
        """Half the public range: centred values divided by it lie in [-1, 1] and span all of it, so the
        fixed noise of a record's bound is as small as it can be against the data's spread."""
        low, high = self.ranges[column]
        return (high - low) / 2

    def columns(self) -> list[tuple[str, str, str]]:
        return [
            ("target", self.table, self.target),
            *((f"features.{i}", self.table, c) for i, c in enumerate(self.features)),
        ]


class AutoregressionParams(QueryParams):
    """AR(`lags`) on every firm's demand series (`units`), one set of coefficients for all of them.

    Units are clipped to [0, `high`]; a firm contributes at most `max_rows` lag windows and
    `max_series` series; the forecast is of the sum of all series, `horizon` periods past each
    series' last observation. `differences` d > 0 fits the AR on each series differenced d times
    (ARIMA(lags, d, 0)) and integrates the forecast back to levels.
    """

    lags: int = Field(default=4, ge=1, le=52)
    differences: int = Field(default=0, ge=0, le=2)
    horizon: int = Field(default=4, ge=1, le=104)
    high: float = Field(gt=0, allow_inf_nan=False)
    max_rows: int = Field(default=10_000, ge=1, le=10**9)
    max_series: int = Field(default=1_000, ge=1, le=10**7)
    ridge: float = Field(default=1e-9, ge=0, le=1e6)

    def columns(self) -> list[tuple[str, str, str]]:
        return [("column", "demand", "units")]


def difference_scale(differences: int) -> float:
    """|d-th difference| <= 2^d x the levels' bound: the differenced series is divided by it to stay in [-1, 1]."""
    return float(2**differences)


def gram_length(dim: int) -> int:
    """Entries of the vector [upper triangle of X^T X (row-major), X^T y, y^T y] for `dim` columns of X."""
    return dim * (dim + 1) // 2 + dim + 1


def ar_standardisation(high: float, differences: int) -> tuple[float, float]:
    """(centre, half width) the firms standardise AR's series with before the lag windows, in units.

    Levels (d = 0) are centred on the public range's midpoint high / 2 and divided by high / 2, so they
    span [-1, 1]: one replaced value then moves the centred products by at most half of what it moves
    the products of values in [0, high] (a centre in the data's mean would gain nothing: the largest
    |y - c| stays near high). A d-times differenced series already spans [-2^d high, 2^d high] around 0."""
    if differences == 0:
        return high / 2.0, high / 2.0
    return 0.0, high * difference_scale(differences)


def ar_record_bound(lags: int, differences: int) -> float:
    """L2 change of the lag-window Gram vector (times max_rows) when one observation's value is replaced.

    The observation enters at most lags + 1 windows. With d = 0 the standardised values lie in [-1, 1];
    a value a replaced by b moves the p + 1 intercept-row sums by b - a, the p + 1 squares by b^2 - a^2 =
    (b - a)(a + b), and the p (p + 1) / 2 products with its neighbours by (b - a) times the sum of two
    neighbours (<= 2): (p + 1)(b - a)^2 (1 + 2p + (a + b)^2) in squares, at most 4 (p + 1)(2p + 1), at
    a = -1, b = 1 (0 replaced by high inside a series at high: the bound is tight there).
    With d > 0 the differenced values lie in [-1, 1] and one level changes d + 1 of them by amounts
    whose absolute values sum to at most 1 (binomial weights over 2^d); squares then change by up to
    twice the amount, which gives (2 lags + 5)(lags + 1) in squares per unit of change."""
    if differences == 0:
        return 2.0 * math.sqrt((lags + 1.0) * (2.0 * lags + 1.0))
    return math.sqrt((2.0 * lags + 5.0) * (lags + 1))


def ar_ends_record_bound(differences: int) -> float:
    """L2 change (times max_series) of the second AR step when one observation's value is replaced: one of
    the last values (d = 0), or differenced values of L1 change <= 1 and one level (d > 0)."""
    return 1.0 if differences == 0 else math.sqrt(2.0)


AR_NEIGHBOURS = (
    "replace the value of one observation (one series in one week, units clipped to [0, high]); which series "
    "and weeks exist is public, as the lag structure needs"
)


def gram_record_bound(dim: int) -> float:
    """L2 norm of one row's [upper triangle of x x^T, x y, y^2] when every value lies in [-1, 1]: each
    product is at most 1 in absolute value and the upper triangle holds dim (dim + 1) / 2 of them (tight:
    a row at a corner of the ranges reaches it)."""
    return math.sqrt(dim * (dim + 1) / 2 + dim + 1.0)


def gram_l2_bound(dim: int) -> float:
    """L2 norm of that vector when every scaled value lies in [-1, 1] and there are at most max_rows rows
    (each divided by max_rows): ||X^T X||_F <= dim, ||X^T y|| <= sqrt(dim), y^T y <= 1."""
    return math.sqrt(dim * dim + dim + 1.0)
