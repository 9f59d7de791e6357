"""The Skellam mechanism's maths, cross-checked against exact distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special, stats

from silobridge.errors import ConfigError
from silobridge.privacy.dp.skellam import skellam_noise, skellam_rdp, skellam_tail_bound


def exact_renyi_divergence(alpha: int, variance: float, shift: int) -> float:
    """D_alpha(Sk(V) + shift || Sk(V)) in one dimension, summed over the support numerically."""
    half = variance / 2.0
    width = int(40 * math.sqrt(variance)) + 10 * shift + 50
    k = np.arange(-width, width + 1)
    log_p = stats.skellam.logpmf(k - shift, half, half)  # shifted distribution
    log_q = stats.skellam.logpmf(k, half, half)
    # Far in the tails both pmfs underflow to zero; those terms are negligible, so leave them out.
    finite = np.isfinite(log_p) & np.isfinite(log_q)
    return float(special.logsumexp(alpha * log_p[finite] + (1 - alpha) * log_q[finite]) / (alpha - 1))


@pytest.mark.parametrize("variance", [2.0, 10.0, 200.0, 5000.0])
@pytest.mark.parametrize("shift", [1, 3])
@pytest.mark.parametrize("alpha", [2, 3, 8, 20])
def test_bound_is_above_the_exact_divergence(variance: float, shift: int, alpha: int) -> None:
    bound = skellam_rdp(np.array([float(alpha)]), variance, l1_sensitivity=shift, l2_sensitivity=shift)[0]
    assert exact_renyi_divergence(alpha, variance, shift) <= bound


def test_bound_tends_to_gaussian_for_large_variance() -> None:
    orders = np.array([2.0, 8.0, 32.0])
    for variance in (1e4, 1e6):
        bound = skellam_rdp(orders, variance, 10.0, 10.0)
        gaussian = orders * 100.0 / (2 * variance)
        assert np.all(bound >= gaussian)
        np.testing.assert_allclose(bound, gaussian, rtol=10 / math.sqrt(variance))


def test_bound_is_tight_against_exact_divergence_for_moderate_variance() -> None:
    exact = exact_renyi_divergence(8, 5000.0, 3)
    bound = skellam_rdp(np.array([8.0]), 5000.0, 3.0, 3.0)[0]
    assert bound <= exact * 1.01


def test_fractional_orders_are_charged_at_the_next_integer() -> None:
    fractional = skellam_rdp(np.array([1.1, 2.0, 2.5, 1 + 10 / 10]), 100.0, 5.0, 5.0)
    integer = skellam_rdp(np.array([2.0, 2.0, 3.0, 2.0]), 100.0, 5.0, 5.0)
    np.testing.assert_array_equal(fractional, integer)


def test_orders_below_one_are_refused() -> None:
    with pytest.raises(ConfigError, match="orders"):
        skellam_rdp(np.array([0.5]), 100.0, 1.0, 1.0)


def test_noise_has_the_requested_variance() -> None:
    """Chi-square test of the sample variance (fixed seed; the statistic is near-normal for large n)."""
    rng = np.random.default_rng(20260101)
    variance, n = 37.5, 200_000
    sample = skellam_noise(variance, n, rng)
    assert sample.dtype == np.int64
    statistic = (n - 1) * sample.var(ddof=1) / variance
    # Skellam has excess kurtosis 1/V, so scale the chi-square spread accordingly.
    z = (statistic - (n - 1)) / math.sqrt(2 * (n - 1) * (1 + 1 / (2 * variance)))
    assert abs(z) < 4
    assert abs(sample.mean()) < 4 * math.sqrt(variance / n)


@pytest.mark.parametrize("variance,dim", [(10.0, 1), (400.0, 50)])
def test_tail_bound_holds_empirically(variance: float, dim: int) -> None:
    rng = np.random.default_rng(7)
    failure = 1e-2
    t = skellam_tail_bound(variance, dim, failure)
    draws = skellam_noise(variance, (20_000, dim), rng)
    exceed = np.mean(np.abs(draws).max(axis=1) > t)
    assert exceed <= failure
    # Chernoff plus a union bound is loose, but not absurdly so.
    assert t < 10 * math.sqrt(variance * math.log(2 * dim / failure))


def test_tail_bound_grows_with_confidence_and_dimension() -> None:
    assert skellam_tail_bound(100.0, 10, 1e-9) > skellam_tail_bound(100.0, 10, 1e-3)
    assert skellam_tail_bound(100.0, 10_000, 1e-6) > skellam_tail_bound(100.0, 10, 1e-6)
