"""How a firm scales its risk features: the federation-wide moments, or (under DP) the public ranges."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from silobridge.clients.features import standardise
from silobridge.contract.stats import Moments
from silobridge.errors import ConfigError, ProtocolError


def has_public_ranges(ranges: Mapping[str, tuple[float, float]], features: tuple[str, ...]) -> bool:
    """Whether the schema gives every risk feature a public range (then moments travel range-scaled)."""
    return bool(features) and all(name in ranges for name in features)


def range_scaled_moments(
    features: np.ndarray, ranges: Mapping[str, tuple[float, float]], names: tuple[str, ...]
) -> Moments:
    """Moments of the features clipped to their public range and mapped onto [-1, 1].

    Raw sums of squares of dollar amounts (a lender's incomes: ~1e13) pass the secure sum's
    statistics bound (2^40) and were clipped, which made the variance negative and the features'
    scale 1e-6; scaled values keep every sum within the row count.
    """
    scale = Normaliser.from_ranges(dict(ranges), names)
    x = np.asarray(features, dtype=float)
    return Moments.of((np.clip(x, scale.low, scale.high) - scale.mean) / scale.std)


def summed_moments_normaliser(
    moments: Moments,
    ranges: Mapping[str, tuple[float, float]],
    features: tuple[str, ...],
    *,
    clipped: int,
    bound: float,
) -> Normaliser:
    """The federation's scaling from the firms' summed moments (range-scaled where the schema gives public
    ranges). Without ranges, a sum the secure aggregation clipped (`clipped` values past `bound`) is
    refused: its variance would be wrong, and negative variances scale features by a million."""
    if has_public_ranges(ranges, features):
        return Normaliser.from_scaled_moments(moments, ranges, features)
    if clipped:
        raise ConfigError(
            f"{clipped} of the risk features' summed moments passed the secure sum's statistics bound "
            f"({bound:g}) and were clipped, so their scale is unknown; give every risk feature a public range "
            "(its moments then travel scaled to [-1, 1])",
            field="data.risk_feature_ranges",
        )
    return Normaliser(moments.mean(), moments.std())


@dataclass(frozen=True)
class Normaliser:
    """How risk features are scaled: federation-wide mean and std, or (under DP) public ranges.

    With `low`/`high` set, features are first clipped to their public range, so a scale taken from
    the range (no data) stays meaningful for outliers.
    """

    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray | None = None
    high: np.ndarray | None = None

    @classmethod
    def from_ranges(cls, ranges: dict[str, tuple[float, float]], features: tuple[str, ...]) -> Normaliser:
        missing = [name for name in features if name not in ranges]
        if missing:
            raise ConfigError(
                f"the federation's schema gives no public range for {missing}", field="data.risk_feature_ranges"
            )
        low = np.array([ranges[name][0] for name in features], dtype=float)
        high = np.array([ranges[name][1] for name in features], dtype=float)
        return cls(mean=(low + high) / 2, std=(high - low) / 2, low=low, high=high)

    @classmethod
    def from_scaled_moments(
        cls, moments: Moments, ranges: Mapping[str, tuple[float, float]], features: tuple[str, ...]
    ) -> Normaliser:
        """Federation-wide mean and std from the summed `range_scaled_moments`, back in feature units,
        keeping the public range so features are clipped as the moments were."""
        scale = cls.from_ranges(dict(ranges), features)
        return cls(scale.mean + scale.std * moments.mean(), scale.std * moments.std(), scale.low, scale.high)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Its wire form: mean and std, with the public range when it has one (firms must clip as scored)."""
        arrays = {"mean": self.mean, "std": self.std}
        if self.low is not None and self.high is not None:
            arrays.update(low=self.low, high=self.high)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray], *, firm: str = "local") -> Normaliser:
        """Back from `to_arrays`; a range comes whole (low and high) or not at all."""
        if "mean" not in arrays or "std" not in arrays:
            raise ProtocolError("the normaliser carries no mean or std", firm=firm)
        if ("low" in arrays) != ("high" in arrays):
            raise ProtocolError("the normaliser carries only one end of the features' range", firm=firm)

        def vector(name: str) -> np.ndarray | None:
            return np.asarray(arrays[name], dtype=float) if name in arrays else None

        return cls(vector("mean"), vector("std"), vector("low"), vector("high"))  # type: ignore[arg-type]

    def apply(self, features: np.ndarray) -> np.ndarray:
        if self.low is not None and self.high is not None:
            features = np.clip(features, self.low, self.high)
        return standardise(features, self.mean, self.std)
