"""Named float segments <-> one integer vector, so one secure sum carries everything a round releases.

A training round releases a weighted update, the weight behind it, a weighted loss and evaluation
statistics; their magnitudes differ by many orders. Each segment gets its own public bound (values
beyond it are clipped and counted) and all share one number of value bits, so one ring modulus
serves the whole vector and the sum of all firms cannot wrap.

A segment may take two words per value ("double"): a deterministic high part and a stochastically
rounded remainder, both summed exactly, so statistics with a wide public bound (error totals,
feature moments) come back at float64 precision instead of the bound's coarse step. An "integer"
segment carries values a mechanism already quantised (distributed DP's noised integers): they pass
unscaled and come back as their exact integer sum.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np

from silobridge.errors import ConfigError, DataError
from silobridge.privacy.secagg.quantise import (
    QuantStats,
    choose_modulus_bits,
    dequantise,
    max_level,
    quantise,
    sum_error_bound,
)
from silobridge.privacy.secagg.ring import to_signed

CLIPPED = "clipped"
"""Segment name for the number of values a firm's quantisation clipped: summed, never sent per firm."""

Precision = Literal["single", "double", "integer"]


@dataclass(frozen=True)
class Segment:
    """`length` values whose magnitude is at most `bound` (public: every firm uses the same)."""

    name: str
    length: int
    bound: float
    precision: Precision = "single"

    def __post_init__(self) -> None:
        if not self.name or not self.name.isprintable():
            raise ConfigError(f"segment name must be printable text, got {self.name!r}", field="segment")
        if type(self.length) is not int or self.length < 1:
            raise ConfigError(f"segment '{self.name}': length must be a positive integer", field="segment")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ConfigError(f"segment '{self.name}': bound must be positive and finite", field="segment")
        if self.precision not in ("single", "double", "integer"):
            raise ConfigError(
                f"segment '{self.name}': precision must be 'single', 'double' or 'integer'", field="segment"
            )

    @property
    def words(self) -> int:
        """Integers per value in the encoded vector."""
        return 2 if self.precision == "double" else 1


def _encode_double(
    values: np.ndarray, bound: float, value_bits: int, rng: np.random.Generator, firm: str
) -> tuple[np.ndarray, QuantStats]:
    """High part floor(x L / bound) in [-L, L], then the remainder (in [0, 1) steps) rounded to [0, L]."""
    level = max_level(value_bits)
    clipped = np.clip(values, -bound, bound)
    scaled = clipped * (level / bound)
    high = np.clip(np.floor(scaled), -level, level)
    low, _ = quantise(np.clip(scaled - high, 0.0, 1.0), 1.0, value_bits, rng, firm=firm)
    stats = QuantStats(
        num_values=int(values.size),
        num_clipped=int(np.count_nonzero(np.abs(values) > bound)),
        max_abs=float(np.abs(values).max()) if values.size else 0.0,
        clip_range=bound,
        value_bits=value_bits,
        scale=level * level / bound,
    )
    return np.concatenate([high.astype(np.int64), low]), stats


def _encode_integers(values: np.ndarray, value_bits: int, name: str, firm: str) -> tuple[np.ndarray, QuantStats]:
    """Already-quantised values pass as they are; anything not an integer within [-L, L] is refused."""
    level = max_level(value_bits)
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise DataError(firm, f"segment '{name}' must hold integers")
    if values.size and np.max(np.abs(values)) > level:
        raise DataError(firm, f"segment '{name}' holds a value beyond +/-{level}")
    stats = QuantStats(int(values.size), 0, float(np.abs(values).max()) if values.size else 0.0, level, value_bits, 1.0)
    return values.astype(np.int64), stats


@dataclass(frozen=True)
class VectorLayout:
    """The agreed shape of one secure sum: segments in order, and the value bits of each integer."""

    segments: tuple[Segment, ...]
    value_bits: int = 48

    def __post_init__(self) -> None:
        names = [s.name for s in self.segments]
        if not names or len(set(names)) != len(names):
            raise ConfigError(f"segment names must be unique and non-empty, got {names}", field="segments")

    @property
    def length(self) -> int:
        """Integers in the encoded vector."""
        return sum(s.length * s.words for s in self.segments)

    def modulus_bits(self, num_firms: int) -> int:
        """The ring in which the sum of `num_firms` encoded vectors cannot wrap."""
        return choose_modulus_bits(num_firms, self.value_bits)

    def count_clipped(self, values: Mapping[str, np.ndarray]) -> int:
        """How many values lie beyond their segment's bound (what `encode` will clip); checks the names."""
        bounds = {s.name: s.bound for s in self.segments}
        unknown = sorted(set(values) - set(bounds))
        if unknown:
            raise DataError("local", f"values for unknown segments {unknown}")
        return sum(int(np.count_nonzero(np.abs(np.asarray(v, dtype=float)) > bounds[k])) for k, v in values.items())

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
            if segment.precision == "double":
                if not np.all(np.isfinite(value)):
                    raise DataError(firm, f"segment '{segment.name}' has non-finite values")
                encoded, stats[segment.name] = _encode_double(value, segment.bound, self.value_bits, rng, firm)
            elif segment.precision == "integer":
                encoded, stats[segment.name] = _encode_integers(value, self.value_bits, segment.name, firm)
            else:
                encoded, stats[segment.name] = quantise(value, segment.bound, self.value_bits, rng, firm=firm)
            parts.append(encoded)
        return np.concatenate(parts), stats

    def decode(self, ring_sum: np.ndarray, num_firms: int) -> dict[str, np.ndarray]:
        """The float sum of every segment from the exact ring sum of `num_firms` encoded vectors."""
        if np.asarray(ring_sum).size != self.length:
            raise ConfigError(f"sum has {np.asarray(ring_sum).size} values, the layout {self.length}", field="sum")
        bits = self.modulus_bits(num_firms)
        level = max_level(self.value_bits)
        out, offset = {}, 0
        for segment in self.segments:
            size = segment.length * segment.words
            part = ring_sum[offset : offset + size]
            if segment.precision == "integer":
                out[segment.name] = to_signed(part, bits).astype(np.float64)
            elif segment.precision == "double":
                signed = to_signed(part, bits)
                high, low = signed[: segment.length], signed[segment.length :]
                step = segment.bound / level
                out[segment.name] = high.astype(np.float64) * step + low.astype(np.float64) * (step / level)
            else:
                out[segment.name] = dequantise(part, bits, segment.bound, self.value_bits)
            offset += size
        return out

    def error_bounds(self, num_firms: int) -> dict[str, float]:
        """Worst-case quantisation error of the decoded sum per coordinate (clipping aside); the float64
        result adds its own rounding, 2^-52 of its magnitude."""
        level = max_level(self.value_bits)
        return {
            s.name: (
                0.0
                if s.precision == "integer"
                else num_firms * s.bound / level / level
                if s.precision == "double"
                else sum_error_bound(num_firms, s.bound, self.value_bits)
            )
            for s in self.segments
        }

    def describe(self) -> dict[str, object]:
        return {
            "value_bits": self.value_bits,
            "segments": {
                s.name: {"length": s.length, "bound": s.bound, "precision": s.precision} for s in self.segments
            },
        }
