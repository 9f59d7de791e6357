"""Fixed-point quantisation of float updates into integers, and back.

Values are clipped to [-clip_range, clip_range] (every clipped value is counted and returned, never
hidden), scaled so clip_range maps to L = 2^(value_bits - 1) - 1, and rounded stochastically so the
integer is an unbiased estimate of the scaled value. The ring modulus is chosen so that the sum of
all firms' integers cannot wrap: n * L < 2^(m - 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from silobridge.errors import ConfigError, DataError
from silobridge.privacy.secagg.ring import MAX_MODULUS_BITS, check_modulus_bits, to_signed

MAX_VALUE_BITS = 52  # float64 holds every integer up to 2^53 exactly, so floor() stays exact


@dataclass(frozen=True)
class QuantStats:
    """What quantisation did to one vector, for the run summary: clipping is reported, never silent."""

    num_values: int
    num_clipped: int
    max_abs: float
    clip_range: float
    value_bits: int
    scale: float

    @property
    def clipped_fraction(self) -> float:
        return self.num_clipped / self.num_values if self.num_values else 0.0


def _check_value_bits(value_bits: int) -> int:
    if type(value_bits) is not int or not 2 <= value_bits <= MAX_VALUE_BITS:
        raise ConfigError(f"must be an integer in [2, {MAX_VALUE_BITS}], got {value_bits!r}", field="value_bits")
    return value_bits


def _check_clip_range(clip_range: float) -> float:
    if not (isinstance(clip_range, (int, float)) and math.isfinite(clip_range) and clip_range > 0):
        raise ConfigError(f"must be a positive finite number, got {clip_range!r}", field="clip_range")
    return float(clip_range)


def max_level(value_bits: int) -> int:
    """L = 2^(value_bits - 1) - 1: the largest quantised magnitude."""
    return (1 << (_check_value_bits(value_bits) - 1)) - 1


def quantisation_scale(clip_range: float, value_bits: int) -> float:
    """Integer steps per unit: clip_range maps to L."""
    return max_level(value_bits) / _check_clip_range(clip_range)


def quantise(
    vector: np.ndarray, clip_range: float, value_bits: int, rng: np.random.Generator, *, firm: str = "local"
) -> tuple[np.ndarray, QuantStats]:
    """Clip, scale and stochastically round a float vector to int64 values in [-L, L].

    q = floor(y) + Bernoulli(y - floor(y)) with y = clip(x) * scale, so E[q] = y exactly. A NaN or
    infinite value raises DataError (it would otherwise be clipped to a bogus extreme).
    """
    values = np.asarray(vector, dtype=np.float64)
    if values.ndim != 1:
        raise DataError(firm, f"update must be a 1-D vector, got shape {values.shape}")
    magnitudes = np.abs(values)
    max_abs = float(magnitudes.max()) if values.size else 0.0
    if not np.isfinite(max_abs):  # one pass finds a NaN or infinity; the second only names it
        bad = ~np.isfinite(values)
        raise DataError(firm, f"update has {int(bad.sum())} non-finite values (first at index {int(np.argmax(bad))})")
    clip_range = _check_clip_range(clip_range)
    scale = quantisation_scale(clip_range, value_bits)
    num_clipped = int(np.count_nonzero(magnitudes > clip_range)) if max_abs > clip_range else 0
    # In place on fresh buffers: this runs on every firm's whole update every round.
    scaled = np.clip(values, -clip_range, clip_range, out=magnitudes)
    scaled *= scale
    quantised = np.floor(scaled)
    scaled -= quantised  # the fractional part, in [0, 1)
    quantised += rng.random(values.shape) < scaled
    level = max_level(value_bits)
    np.clip(quantised, -level, level, out=quantised)  # guards float round-off at +-L only
    quantised = quantised.astype(np.int64)
    stats = QuantStats(
        num_values=int(values.size),
        num_clipped=num_clipped,
        max_abs=max_abs,
        clip_range=clip_range,
        value_bits=value_bits,
        scale=scale,
    )
    return quantised, stats


def choose_modulus_bits(num_firms: int, value_bits: int, *, headroom_bits: int = 0) -> int:
    """Smallest m with n * L < 2^(m - 1): the signed sum of n values in [-L, L] cannot wrap.

    m = value_bits + ceil(log2 n) + headroom_bits; headroom is for later additions (e.g. DP noise).
    """
    if type(num_firms) is not int or num_firms < 1:
        raise ConfigError(f"must be a positive integer, got {num_firms!r}", field="num_firms")
    if type(headroom_bits) is not int or headroom_bits < 0:
        raise ConfigError(f"must be a non-negative integer, got {headroom_bits!r}", field="headroom_bits")
    bits = _check_value_bits(value_bits) + math.ceil(math.log2(num_firms)) + headroom_bits
    if bits > MAX_MODULUS_BITS:
        raise ConfigError(
            f"{num_firms} firms at {value_bits} value bits (+{headroom_bits} headroom) need a "
            f"{bits}-bit modulus; at most {MAX_MODULUS_BITS} is supported: lower value_bits",
            field="value_bits",
        )
    return bits


def dequantise(ring_sum: np.ndarray, modulus_bits: int, clip_range: float, value_bits: int) -> np.ndarray:
    """The float sum from the exact ring sum: read it as signed, divide by the scale."""
    check_modulus_bits(modulus_bits)
    return to_signed(ring_sum, modulus_bits).astype(np.float64) / quantisation_scale(clip_range, value_bits)


def sum_error_bound(num_firms: int, clip_range: float, value_bits: int, *, confidence: float | None = None) -> float:
    """Bound on |dequantised sum - sum of the clipped floats|, per coordinate.

    Each firm's stochastic rounding moves its value by less than one step (1 / scale), so n firms
    err by less than n / scale: the worst case, returned when `confidence` is None. The errors are
    independent, zero-mean and each within an interval of one step, so by Hoeffding's inequality
    |error| <= sqrt(n ln(2 / (1 - confidence)) / 2) / scale with probability >= confidence.
    Clipping is not a quantisation error: it is reported in QuantStats instead.
    """
    if type(num_firms) is not int or num_firms < 1:
        raise ConfigError(f"must be a positive integer, got {num_firms!r}", field="num_firms")
    scale = quantisation_scale(clip_range, value_bits)
    worst = num_firms / scale
    if confidence is None:
        return worst
    if not 0 < confidence < 1:
        raise ConfigError(f"must lie in (0, 1), got {confidence!r}", field="confidence")
    hoeffding = math.sqrt(num_firms * math.log(2 / (1 - confidence)) / 2) / scale
    return min(worst, hoeffding)
