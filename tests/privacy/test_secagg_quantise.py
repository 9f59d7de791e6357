"""Quantisation: unbiased stochastic rounding, counted clipping, no wrap, stated error bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from silobridge.errors import ConfigError, DataError
from silobridge.privacy.secagg.quantise import (
    choose_modulus_bits,
    dequantise,
    max_level,
    quantisation_scale,
    quantise,
    sum_error_bound,
)
from silobridge.privacy.secagg.ring import to_ring, to_signed


def test_stochastic_rounding_is_unbiased() -> None:
    # Statistical test, fixed seed: each quantised value is floor(y) + Bernoulli(frac(y)), so its
    # mean over N draws has standard error <= 0.5 / sqrt(N) steps; allow 5 standard errors.
    clip, bits, draws = 1.0, 8, 200_000
    scale = quantisation_scale(clip, bits)
    rng = np.random.default_rng(2024)
    for x in (0.3 / scale, 0.123456, -0.777, 0.5 / scale, -2.9 / scale, 0.999):
        q, _ = quantise(np.full(draws, x), clip, bits, rng)
        mean_error_steps = q.mean() - x * scale
        assert abs(mean_error_steps) < 5 * 0.5 / math.sqrt(draws), (x, mean_error_steps)


def test_the_unbiasedness_check_catches_biased_rounding() -> None:
    # The same criterion applied to round-half-to-even on a value 0.3 steps above an integer: its
    # mean is 0.3 steps off, far outside the tolerance, so the check above can fail.
    draws, y = 200_000, 10.3
    biased = np.round(np.full(draws, y))
    assert abs(biased.mean() - y) > 5 * 0.5 / math.sqrt(draws)


def test_clipping_is_counted_and_reported() -> None:
    values = np.array([0.0, 0.5, 1.5, -3.0, 1.0, -1.0, 7.25, -0.999])
    q, stats = quantise(values, 1.0, 10, np.random.default_rng(0))
    level = max_level(10)
    assert stats.num_values == 8
    assert stats.num_clipped == 3  # 1.5, -3.0 and 7.25 lie outside [-1, 1]; +-1.0 do not
    assert stats.clipped_fraction == pytest.approx(3 / 8)
    assert stats.max_abs == 7.25
    assert q[2] == level and q[3] == -level and q[6] == level
    assert np.all(np.abs(q) <= level)


def test_non_finite_values_raise_instead_of_being_clipped() -> None:
    with pytest.raises(DataError, match="non-finite"):
        quantise(np.array([0.1, np.nan, 0.2]), 1.0, 8, np.random.default_rng(0), firm="acme")
    with pytest.raises(DataError):
        quantise(np.array([np.inf]), 1.0, 8, np.random.default_rng(0))


@settings(max_examples=40, deadline=None)
@given(num_firms=st.integers(1, 5000), value_bits=st.integers(2, 40), sign=st.sampled_from([1, -1]))
def test_all_firms_at_the_extreme_do_not_wrap(num_firms: int, value_bits: int, sign: int) -> None:
    modulus_bits = choose_modulus_bits(num_firms, value_bits)
    clip = 2.5
    q, _ = quantise(np.full(4, sign * clip), clip, value_bits, np.random.default_rng(0))
    assert np.all(q == sign * max_level(value_bits))
    # The ring sum of num_firms copies, as the protocol would reveal it.
    ring_sum = (to_ring(q, modulus_bits).astype(object) * num_firms) % (1 << modulus_bits)
    ring_sum = np.array([int(v) for v in ring_sum], dtype=np.uint64)
    np.testing.assert_allclose(
        dequantise(ring_sum, modulus_bits, clip, value_bits), sign * num_firms * clip, rtol=1e-12
    )
    if sign == 1 and num_firms > 1 and num_firms & (num_firms - 1) == 0:
        # One bit fewer and the positive extreme wraps: for n a power of two the chosen modulus is
        # the smallest safe one (for other n, ceil(log2 n) may leave some slack).
        smaller = modulus_bits - 1
        exact = num_firms * max_level(value_bits)
        assert to_signed(np.array([exact % (1 << smaller)], dtype=np.uint64), smaller)[0] != exact


@settings(max_examples=40, deadline=None)
@given(
    num_firms=st.integers(1, 30),
    value_bits=st.integers(4, 24),
    length=st.integers(1, 200),
    seed=st.integers(0, 2**32 - 1),
)
def test_dequantised_sum_is_within_the_worst_case_bound(
    num_firms: int, value_bits: int, length: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    clip = 3.0
    floats = rng.uniform(-clip, clip, size=(num_firms, length))
    modulus_bits = choose_modulus_bits(num_firms, value_bits)
    ring_total = np.zeros(length, dtype=np.uint64)
    for row in floats:
        q, stats = quantise(row, clip, value_bits, rng)
        assert stats.num_clipped == 0
        ring_total = (ring_total + to_ring(q, modulus_bits).astype(np.uint64)) & np.uint64((1 << modulus_bits) - 1)
    error = np.abs(dequantise(ring_total, modulus_bits, clip, value_bits) - floats.sum(axis=0))
    assert np.all(error <= sum_error_bound(num_firms, clip, value_bits) * (1 + 1e-9))


def test_hoeffding_bound_holds_at_its_confidence() -> None:
    # Statistical, fixed seed: at confidence 0.99 at most ~1% of coordinates may exceed the bound.
    rng = np.random.default_rng(11)
    num_firms, length, clip, value_bits = 50, 20_000, 1.0, 8
    floats = rng.uniform(-clip, clip, size=(num_firms, length))
    quantised = sum(quantise(row, clip, value_bits, rng)[0] for row in floats)
    error = np.abs(quantised / quantisation_scale(clip, value_bits) - floats.sum(axis=0))
    bound = sum_error_bound(num_firms, clip, value_bits, confidence=0.99)
    assert bound < sum_error_bound(num_firms, clip, value_bits)
    assert np.mean(error > bound) <= 0.015


def test_parameter_validation() -> None:
    with pytest.raises(ConfigError):
        choose_modulus_bits(10**6, 50)  # would need more than 64 bits
    with pytest.raises(ConfigError):
        choose_modulus_bits(0, 8)
    with pytest.raises(ConfigError):
        quantise(np.zeros(3), 0.0, 8, np.random.default_rng(0))
    with pytest.raises(ConfigError):
        quantise(np.zeros(3), 1.0, 1, np.random.default_rng(0))
    assert choose_modulus_bits(100, 16) == 23
    assert choose_modulus_bits(100, 16, headroom_bits=3) == 26
