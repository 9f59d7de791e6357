"""Distributed DP with Skellam noise shares: each firm noises its own integer update before masking.

Per round, a firm clips its update to `clip_norm`, scales it by `scale`, rounds it to integers
(`quantise`), adds its noise share (`noise_share`) and hands the result to secure aggregation. The
sum that secure aggregation reveals then carries Sk(V) noise, V being the sum of the shares present.

Dropouts. Shares are sized for `expected_shares` firms. A firm that drops out before its masked
input is counted takes its share with it, so the revealed sum has less noise: account every round
with `event(noise_shares)` where `noise_shares` counts the shares actually in the sum (firms whose
masked input was included). If some firms may collude with the aggregator, they can subtract their
own shares: pass only the shares of firms outside that coalition. Before contacting any firm, check
the budget with `event(min_shares)` (the fewest shares a round may finish with: below that secure
aggregation aborts), since fewer shares cost more epsilon; after the round, spend the realised event.

Neighbouring. The guarantee is for one firm's update replaced by zero while the firm stays in the
round (REPLACE_SPECIAL), or replaced by another update (REPLACE_ONE, twice the sensitivity). Under
secure aggregation the aggregator sees who took part anyway, so there is no add/remove guarantee
and no amplification by sampling to claim.

Modular arithmetic. Secure aggregation sums modulo 2^bits and reads the result as a signed integer
in [-2^(bits-1), 2^(bits-1)). `check_modulus` refuses a bit width for which the noised sum of
`num_firms` updates could wrap, except with probability `failure_probability` (noise tail).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from dp_accounting import NeighboringRelation

from silobridge.errors import ConfigError, DataError
from silobridge.privacy.dp.events import SkellamDpEvent
from silobridge.privacy.dp.skellam import skellam_noise, skellam_tail_bound

# Kairouz, Liu, Steinke (2021) use beta = exp(-0.5) for conditional randomized rounding: a rounding
# attempt exceeds the norm bound with probability at most beta, so at most 1 / (1 - beta) ~ 2.5
# attempts on average (in practice nearly always one).
DEFAULT_ROUNDING_BETA = math.exp(-0.5)
DEFAULT_WRAP_FAILURE_PROBABILITY = 1e-9
_MAX_ROUNDING_ATTEMPTS = 1000


def rounded_l2_bound(scaled_norm: float, dim: int, beta: float = DEFAULT_ROUNDING_BETA) -> float:
    """L2 norm bound after conditional randomized rounding of a vector of norm <= `scaled_norm`.

    Kairouz, Liu, Steinke, "The Distributed Discrete Gaussian Mechanism" (ICML 2021), theorem 1:
    min(scaled_norm + sqrt(d), sqrt(scaled_norm^2 + d/4 + sqrt(2 log(1/beta)) (scaled_norm + sqrt(d)/2))).
    Rounding is retried until the rounded vector meets the bound, so the bound always holds; with
    beta = 0 only the deterministic first term is used (every rounding meets it).
    """
    if not (math.isfinite(scaled_norm) and scaled_norm > 0):
        raise ConfigError(f"must be a positive finite number, got {scaled_norm!r}", field="scaled_norm")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"must be a positive integer, got {dim!r}", field="dim")
    if not 0 <= beta < 1:
        raise ConfigError(f"must be in [0, 1), got {beta!r}", field="rounding_beta")
    deterministic = scaled_norm + math.sqrt(dim)
    if beta == 0:
        return deterministic
    squared = scaled_norm**2 + dim / 4.0 + math.sqrt(2.0 * math.log(1.0 / beta)) * (scaled_norm + math.sqrt(dim) / 2.0)
    return min(deterministic, math.sqrt(squared))


def integer_l1_bound(l2_bound: float, dim: int) -> float:
    """L1 bound of an integer vector of L2 norm <= `l2_bound`: |v|_1 <= |v|_2 min(sqrt(d), |v|_2).

    The second factor holds because |v_i| <= v_i^2 for integers.
    """
    return l2_bound * min(math.sqrt(dim), l2_bound)


def stochastic_round(
    values: np.ndarray, norm_bound: float, rng: np.random.Generator, *, firm: str = "local"
) -> np.ndarray:
    """Unbiased randomized rounding of `values` to int64, retried until the L2 norm is <= `norm_bound`."""
    values = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise DataError(firm, "the scaled update contains NaN or infinite values; it cannot be rounded")
    floor = np.floor(values)
    fraction = values - floor
    for _ in range(_MAX_ROUNDING_ATTEMPTS):
        rounded = floor + (rng.random(values.shape) < fraction)
        if np.linalg.norm(rounded) <= norm_bound:
            integers: np.ndarray = rounded.astype(np.int64)
            return integers
    raise DataError(
        firm,
        f"randomized rounding did not meet the norm bound {norm_bound:.6g} in {_MAX_ROUNDING_ATTEMPTS} "
        f"attempts (input norm {float(np.linalg.norm(values)):.6g}); was the update clipped first?",
    )


@dataclass(frozen=True)
class DistributedSkellam:
    """One run's distributed-DP parameters, and everything derived from them.

    `noise_multiplier` z sets the total noise std to z times the integer L2 sensitivity when
    `expected_shares` shares are present; each firm's share has variance total / expected_shares.
    """

    clip_norm: float
    scale: float
    dim: int
    noise_multiplier: float
    expected_shares: int
    relation: NeighboringRelation = NeighboringRelation.REPLACE_SPECIAL
    rounding_beta: float = DEFAULT_ROUNDING_BETA

    def __post_init__(self) -> None:
        for name in ("clip_norm", "scale", "noise_multiplier"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"must be a positive finite number, got {value!r}", field=f"distributed_dp.{name}")
        for name in ("dim", "expected_shares"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be a positive integer, got {value!r}", field=f"distributed_dp.{name}")
        if self.relation not in (NeighboringRelation.REPLACE_SPECIAL, NeighboringRelation.REPLACE_ONE):
            raise ConfigError(
                f"distributed DP protects a firm's update within a round it is seen to take part in: use "
                f"REPLACE_SPECIAL (zero-out) or REPLACE_ONE, not {self.relation.name}",
                field="distributed_dp.relation",
            )
        rounded_l2_bound(self.scale * self.clip_norm, self.dim, self.rounding_beta)  # validates beta

    @property
    def norm_bound(self) -> float:
        """L2 bound of one firm's integer update (after scaling and rounding)."""
        return rounded_l2_bound(self.scale * self.clip_norm, self.dim, self.rounding_beta)

    @property
    def l2_sensitivity(self) -> float:
        """How far one firm can move the integer sum in L2 under `relation`."""
        factor = 2.0 if self.relation is NeighboringRelation.REPLACE_ONE else 1.0
        return factor * self.norm_bound

    @property
    def l1_sensitivity(self) -> float:
        return integer_l1_bound(self.l2_sensitivity, self.dim)

    @property
    def total_variance(self) -> float:
        """Noise variance per coordinate when `expected_shares` shares are present."""
        return (self.noise_multiplier * self.l2_sensitivity) ** 2

    @property
    def share_variance(self) -> float:
        """Variance of one firm's share."""
        return self.total_variance / self.expected_shares

    def event(self, noise_shares: int) -> SkellamDpEvent:
        """The event of a sum that contains `noise_shares` firms' shares (account with the realised count)."""
        if isinstance(noise_shares, bool) or not isinstance(noise_shares, int) or noise_shares < 1:
            raise ConfigError(
                f"a private sum needs at least one noise share, got {noise_shares!r}", field="noise_shares"
            )
        return SkellamDpEvent(
            variance=self.share_variance * noise_shares,
            l1_sensitivity=self.l1_sensitivity,
            l2_sensitivity=self.l2_sensitivity,
        )

    def quantise(self, clipped_update: np.ndarray, rng: np.random.Generator, *, firm: str = "local") -> np.ndarray:
        """A clipped real update as integers: scaled, then randomly rounded within `norm_bound`."""
        clipped_update = np.asarray(clipped_update, dtype=np.float64)
        if clipped_update.shape != (self.dim,):
            raise DataError(firm, f"expected an update of shape ({self.dim},), got {clipped_update.shape}")
        norm = float(np.linalg.norm(clipped_update))
        if norm > self.clip_norm * (1 + 1e-9):
            raise DataError(firm, f"update norm {norm:.6g} exceeds the clip norm {self.clip_norm:g}: clip it first")
        return stochastic_round(self.scale * clipped_update, self.norm_bound, rng, firm=firm)

    def noise_share(self, rng: np.random.Generator) -> np.ndarray:
        """One firm's noise share: Sk(share_variance) on every coordinate, int64."""
        return skellam_noise(self.share_variance, self.dim, rng)

    def dequantise(self, noised_sum: np.ndarray) -> np.ndarray:
        """The revealed integer sum back in update units."""
        return np.asarray(noised_sum, dtype=np.float64) / self.scale

    def max_abs_sum(self, num_firms: int, failure_probability: float = DEFAULT_WRAP_FAILURE_PROBABILITY) -> int:
        """A bound on |coordinate| of the noised sum of `num_firms` firms, except w.p. `failure_probability`.

        Each coordinate of a firm's integer update is at most its L2 norm (floor of `norm_bound`);
        the noise of up to `num_firms` shares has variance num_firms * share_variance, whose tail over
        all coordinates is bounded by `skellam_tail_bound`.
        """
        if isinstance(num_firms, bool) or not isinstance(num_firms, int) or num_firms < 1:
            raise ConfigError(f"must be a positive integer, got {num_firms!r}", field="num_firms")
        signal = num_firms * math.floor(self.norm_bound)
        noise = skellam_tail_bound(num_firms * self.share_variance, self.dim, failure_probability)
        return signal + noise

    def required_bits(self, num_firms: int, failure_probability: float = DEFAULT_WRAP_FAILURE_PROBABILITY) -> int:
        """Fewest bits for which the noised sum of `num_firms` firms does not wrap (signed reading)."""
        return 1 + math.ceil(math.log2(self.max_abs_sum(num_firms, failure_probability) + 1))

    def check_modulus(
        self, bits: int, num_firms: int, failure_probability: float = DEFAULT_WRAP_FAILURE_PROBABILITY
    ) -> None:
        """Raise ConfigError if summing `num_firms` noised updates modulo 2^bits could wrap."""
        needed = self.required_bits(num_firms, failure_probability)
        if bits < needed:
            raise ConfigError(
                f"a modulus of 2^{bits} is too small: the noised sum of {num_firms} firms (clip {self.clip_norm:g}, "
                f"scale {self.scale:g}, dimension {self.dim}, "
                f"noise std {math.sqrt(num_firms * self.share_variance):.4g}) "
                f"can reach +/-{self.max_abs_sum(num_firms, failure_probability)} and needs {needed} bits "
                f"(wrap probability <= {failure_probability:g}); raise the bits or lower the scale",
                field="bits",
            )
