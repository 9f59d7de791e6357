"""Pure maths of the Skellam mechanism: its RDP curve, its noise, and its tails.

Symmetric Skellam noise Sk(V) = Poisson(V/2) - Poisson(V/2) has variance V, takes integer values and
is closed under summation (the sum of firms' shares with variances v_i is Sk(sum v_i)), which is why
distributed DP uses it: each firm adds its share to its integer update before secure aggregation
masks it, and the revealed sum carries exactly the noise of the shares it contains.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize

from silobridge.errors import ConfigError


def skellam_rdp(orders: np.ndarray, variance: float, l1_sensitivity: float, l2_sensitivity: float) -> np.ndarray:
    """RDP of the Skellam mechanism at each order (Agarwal, Kairouz, Liu, NeurIPS 2021, theorem 3.5).

    For integer a > 1: eps(a) <= a D2^2 / (2V) + min(((2a - 1) D2^2 + 6 D1) / (4 V^2), 3 D1 / (2V)).
    The theorem holds at integer orders only, so a fractional order a is charged the bound at
    ceil(a): Renyi divergence is non-decreasing in the order, so this stays an upper bound.
    The first term is the Gaussian mechanism's RDP at the same variance; the rest is the price of
    discreteness, which vanishes as V grows.
    """
    orders = np.asarray(orders, dtype=np.float64)
    if np.any(orders < 1):
        raise ConfigError("RDP orders must be at least 1", field="orders")
    # Round first so that an order such as 2.0000000000000004 (1 + 10/10 in floating point) stays 2.
    alpha = np.maximum(2.0, np.ceil(np.round(orders, 9)))
    v, d1, d2sq = float(variance), float(l1_sensitivity), float(l2_sensitivity) ** 2
    gaussian = alpha * d2sq / (2.0 * v)
    discreteness = np.minimum(((2.0 * alpha - 1.0) * d2sq + 6.0 * d1) / (4.0 * v**2), 3.0 * d1 / (2.0 * v))
    return gaussian + discreteness


def skellam_noise(variance: float, size: int | tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Integer noise with distribution Sk(variance), as int64."""
    if not (math.isfinite(variance) and variance > 0):
        raise ConfigError(f"must be a positive finite number, got {variance!r}", field="variance")
    half = variance / 2.0
    return rng.poisson(half, size).astype(np.int64) - rng.poisson(half, size).astype(np.int64)


def _log_tail(t: float, variance: float) -> float:
    """Chernoff exponent: P(Sk(V) >= t) <= exp(-_log_tail(t, V)).

    The moment generating function of Sk(V) is exp(V (cosh(l) - 1)); the optimal l = asinh(t/V).
    """
    return t * math.asinh(t / variance) - (math.hypot(variance, t) - variance)


def skellam_tail_bound(variance: float, dim: int, failure_probability: float) -> int:
    """Smallest integer t with P(max over `dim` coordinates of |Sk(variance)| > t) <= failure_probability.

    Chernoff bound on each tail, union bound over both tails and all coordinates.
    """
    if not (math.isfinite(variance) and variance > 0):
        raise ConfigError(f"must be a positive finite number, got {variance!r}", field="variance")
    if dim < 1:
        raise ConfigError(f"must be positive, got {dim!r}", field="dim")
    if not 0 < failure_probability < 1:
        raise ConfigError(f"must be in (0, 1), got {failure_probability!r}", field="failure_probability")
    target = math.log(2.0 * dim / failure_probability)
    upper = math.sqrt(variance) + target
    while _log_tail(upper, variance) < target:
        upper *= 2.0
    t: float = optimize.brentq(lambda x: _log_tail(x, variance) - target, 0.0, upper, xtol=1e-6)
    return math.ceil(t)
