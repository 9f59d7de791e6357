"""Public feature ranges: how both halves of a query put a firm's values on one bounded scale.

A query's sensitivity is only bounded if every value a firm feeds it is bounded by something public;
the federation's agreed ranges (DataSchema.risk_feature_ranges, or a query's own) are that bound.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def range_arrays(ranges: Sequence[tuple[float, float]]) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) as arrays, one entry per feature."""
    bounds = np.asarray(ranges, dtype=np.float64).reshape(-1, 2)
    return bounds[:, 0], bounds[:, 1]


def to_unit(values: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """Map each column from its public range onto [0, 1], clipping values outside the range."""
    low, high = range_arrays(ranges)
    unit: np.ndarray = np.clip((np.asarray(values, dtype=np.float64) - low) / (high - low), 0.0, 1.0)
    return unit


def from_unit(values: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """Back from [0, 1] to the features' own units (for reporting answers)."""
    low, high = range_arrays(ranges)
    own: np.ndarray = low + np.asarray(values, dtype=np.float64) * (high - low)
    return own


def to_symmetric(values: np.ndarray, ranges: Sequence[tuple[float, float]]) -> np.ndarray:
    """Map each column from its public range onto [-1, 1] (centred: better conditioned for regression)."""
    return 2.0 * to_unit(values, ranges) - 1.0
