"""Named float segments <-> one integer vector, so one secure sum carries everything a round releases.

A training round releases a weighted update, the weight behind it, a weighted loss and evaluation
statistics; their magnitudes differ by many orders. Each segment gets its own public bound (values
beyond it are clipped and counted) and all share one number of value bits, so one ring modulus
serves the whole vector and the sum of all firms cannot wrap.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from privacy.secagg.quantise import QuantStats, choose_modulus_bits, dequantise, quantise, sum_error_bound
from silobridge.errors import ConfigError, DataError

CLIPPED = "clipped"
"""Segment name for the number of values a firm's quantisation clipped: summed, never sent per firm."""


@dataclass(frozen=True)
class Segment:
    """`length` values whose magnitude is at most `bound` (public: every firm uses the same)."""

    name: str
    length: int
    bound: float

    def __post_init__(self) -> None:
        if not self.name or not self.name.isprintable():
            raise ConfigError(f"segment name must be printable text, got {self.name!r}", field="segment")
        if type(self.length) is not int or self.length < 1:
            raise ConfigError(f"segment '{self.name}': length must be a positive integer", field="segment")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ConfigError(f"segment '{self.name}': bound must be positive and finite", field="segment")


@dataclass(frozen=True)
class VectorLayout:
    """The agreed shape of one secure sum: segments in order, and the value bits of each entry."""

    segments: tuple[Segment, ...]
    value_bits: int = 48

    def __post_init__(self) -> None:
        names = [s.name for s in self.segments]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"segment names must be unique and non-empty, got {names}", field="segments")

    @property
    def length(self) -> int:
        return sum(s.length for s in self.segments)

    def modulus_bits(self, num_firms: int) -> int:
        """The ring in which the sum of `num_firms` encoded vectors cannot wrap."""
        return choose_modulus_bits(num_firms, self.value_bits)

    def count_clipped(self, values: Mapping[str, np.ndarray]) -> int:
        """How many values lie beyond their segment's bound (what `encode` will clip)."""
        bounds = {s.name: s.bound for s in self.segments}
        return sum(
            int(np.count_nonzero(np.abs(np.asarray(v, dtype=float)) > bounds[k]))
            for k, v in values.items()
            if k in bounds
        )

    def encode(
        self, values: Mapping[str, np.ndarray], rng: np.random.Generator, *, firm: str = "local"
    ) -> tuple[np.ndarray, dict[str, QuantStats]]:
        """Quantise every segment (a missing one counts as zeros) into one int64 vector."""
        unknown = sorted(set(values) - {s.name for s in self.segments})
        if unknown:
            raise DataError(firm, f"values for unknown segments {unknown}")
        parts, stats = [], {}
        for segment in self.segments:
            value = np.asarray(values.get(segment.name, np.zeros(segment.length)), dtype=np.float64).ravel()
            if value.size != segment.length:
                raise DataError(firm, f"segment '{segment.name}' has {value.size} values, expected {segment.length}")
            quantised, stats[segment.name] = quantise(value, segment.bound, self.value_bits, rng, firm=firm)
            parts.append(quantised)
        return np.concatenate(parts), stats

    def decode(self, ring_sum: np.ndarray, num_firms: int) -> dict[str, np.ndarray]:
        """The float sum of every segment from the exact ring sum of `num_firms` vectors' ring."""
        if np.asarray(ring_sum).size != self.length:
            raise ConfigError(f"sum has {np.asarray(ring_sum).size} values, the layout {self.length}", field="sum")
        bits = self.modulus_bits(num_firms)
        out, offset = {}, 0
        for segment in self.segments:
            part = ring_sum[offset : offset + segment.length]
            out[segment.name] = dequantise(part, bits, segment.bound, self.value_bits)
            offset += segment.length
        return out

    def error_bounds(self, num_firms: int) -> dict[str, float]:
        """Worst-case |decoded sum - float sum| per coordinate of each segment (clipping aside)."""
        return {s.name: sum_error_bound(num_firms, s.bound, self.value_bits) for s in self.segments}

    def describe(self) -> dict[str, object]:
        return {
            "value_bits": self.value_bits,
            "segments": {s.name: {"length": s.length, "bound": s.bound} for s in self.segments},
        }
