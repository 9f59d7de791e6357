"""Clipping, adaptive clipping, central Gaussian noise and the events they come with."""

from __future__ import annotations

import math

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting import NeighboringRelation

from silobridge.errors import ConfigError, DataError
from silobridge.privacy.dp import (
    AdaptiveClipping,
    Sampling,
    central_release,
    central_round_event,
    clip_l2,
    combine_gaussians,
    dpsgd_event,
    gaussian_event,
    remaining_noise_multiplier,
)


def chi_square_z(sample: np.ndarray, variance: float) -> float:
    """Standardised chi-square statistic of the sample variance of a normal sample."""
    n = sample.size
    statistic = (n - 1) * sample.var(ddof=1) / variance
    return (statistic - (n - 1)) / math.sqrt(2 * (n - 1))


def test_clip_leaves_short_updates_alone() -> None:
    result = clip_l2(np.array([0.3, 0.4]), clip_norm=1.0)
    np.testing.assert_array_equal(result.vector, [0.3, 0.4])
    assert result.norm == pytest.approx(0.5) and not result.clipped


def test_clip_scales_long_updates_to_the_clip_norm() -> None:
    result = clip_l2(np.array([3.0, 4.0]), clip_norm=2.0)
    assert np.linalg.norm(result.vector) == pytest.approx(2.0)
    np.testing.assert_allclose(result.vector / np.linalg.norm(result.vector), [0.6, 0.8])
    assert result.norm == pytest.approx(5.0) and result.clipped


def test_clip_refuses_non_finite_updates_naming_the_firm() -> None:
    with pytest.raises(DataError, match="firm 'acme'.*NaN"):
        clip_l2(np.array([1.0, np.nan]), 1.0, firm="acme")
    with pytest.raises(ConfigError, match="clip_norm"):
        clip_l2(np.array([1.0]), 0.0)


def test_adaptive_clipping_moves_towards_the_target_quantile() -> None:
    rng = np.random.default_rng(3)
    state = AdaptiveClipping(clip_norm=1.0, count_noise_std=0.5)
    norms = rng.lognormal(mean=1.0, sigma=0.3, size=1000)  # median e ~ 2.72
    for _ in range(200):
        sample = rng.choice(norms, size=100, replace=False)
        state, event = state.update((sample <= state.clip_norm).astype(int), 100, rng)
    assert state.clip_norm == pytest.approx(math.e, rel=0.1)
    assert event == dpa.GaussianDpEvent(1.0)  # std 0.5 over sensitivity 1/2


def test_adaptive_clipping_event_doubles_sensitivity_under_replace_one() -> None:
    state = AdaptiveClipping(clip_norm=1.0, count_noise_std=0.5)
    assert state.count_event(NeighboringRelation.REPLACE_ONE) == dpa.GaussianDpEvent(0.5)


def test_adaptive_clipping_refuses_bad_indicators() -> None:
    state = AdaptiveClipping(clip_norm=1.0, count_noise_std=0.5)
    with pytest.raises(ConfigError, match="0/1"):
        state.update(np.array([0, 2]), 2, np.random.default_rng(0))


def test_combine_gaussians_adds_precisions() -> None:
    combined = combine_gaussians(dpa.GaussianDpEvent(1.0), dpa.GaussianDpEvent(2.0))
    assert combined.noise_multiplier == pytest.approx((1 + 0.25) ** -0.5)


def test_central_round_event_wraps_the_sampled_gaussian() -> None:
    event = central_round_event(1.1, 0.5, Sampling.poisson(0.2))
    assert event == dpa.PoissonSampledDpEvent(0.2, dpa.GaussianDpEvent(pytest.approx(1.1)))
    assert central_round_event(1.1, 0.5, Sampling.none()) == dpa.GaussianDpEvent(pytest.approx(1.1))


def test_central_round_event_with_adaptive_clipping_count() -> None:
    count = AdaptiveClipping(clip_norm=1.0, count_noise_std=5.0).count_event()
    event = central_round_event(1.0, 1.0, Sampling.poisson(0.1), extra=(count,))
    expected = (1.0 + 10.0**-2) ** -0.5
    assert event.event.noise_multiplier == pytest.approx(expected)


def test_replace_one_halves_the_effective_noise_multiplier() -> None:
    fixed = Sampling.fixed(population=50, sample_size=10)
    event = central_round_event(2.0, 1.0, fixed, NeighboringRelation.REPLACE_ONE)
    assert event.event.noise_multiplier == pytest.approx(1.0)


def test_central_noise_has_the_right_variance() -> None:
    rng = np.random.default_rng(11)
    summed = np.full(100_000, 3.0)
    noised, event = central_release(summed, noise_multiplier=1.3, clip_norm=0.7, sampling=Sampling.none(), rng=rng)
    noise = noised - summed
    assert abs(chi_square_z(noise, (1.3 * 0.7) ** 2)) < 4
    assert abs(noise.mean()) < 4 * 1.3 * 0.7 / math.sqrt(noise.size)
    assert event == dpa.GaussianDpEvent(pytest.approx(1.3))


def test_gaussian_event_is_std_over_sensitivity() -> None:
    assert gaussian_event(3.0, 2.0) == dpa.GaussianDpEvent(1.5)
    with pytest.raises(ConfigError, match="sensitivity"):
        gaussian_event(1.0, 0.0)


def test_dpsgd_event_structure_and_validation() -> None:
    event = dpsgd_event(1.1, 0.01, 500)
    assert event == dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.01, dpa.GaussianDpEvent(1.1)), 500)
    with pytest.raises(ConfigError, match="steps"):
        dpsgd_event(1.1, 0.01, 0)
    with pytest.raises(ConfigError, match="sample_rate"):
        dpsgd_event(1.1, 1.5, 10)


def test_adaptive_clipping_split_steps_match_update() -> None:
    """The server sees only the summed indicators: noised_count then step is update, draw for draw."""
    state = AdaptiveClipping(clip_norm=2.0, count_noise_std=0.7, target_quantile=0.3, learning_rate=0.5)
    bits = np.array([1, 0, 1, 1, 0, 1])
    whole, _ = state.update(bits, 8.0, np.random.default_rng(21))
    noised = state.noised_count(float(bits.sum()) - bits.size / 2, np.random.default_rng(21))
    split = state.step(noised, 8.0)
    assert split.clip_norm == whole.clip_norm
    expected_noise = np.random.default_rng(21).normal(0.0, 0.7)
    assert noised == pytest.approx(1.0 + expected_noise)
    fraction = noised / 8.0 + 0.5
    assert split.clip_norm == pytest.approx(2.0 * math.exp(-0.5 * (fraction - 0.3)))
    with pytest.raises(ConfigError, match="expected_participants"):
        state.step(1.0, 0.0)
    with pytest.raises(ConfigError, match="noised_count"):
        state.step(float("nan"), 8.0)


def test_remaining_noise_multiplier_inverts_combine_gaussians() -> None:
    count = dpa.GaussianDpEvent(4.0)
    update = remaining_noise_multiplier(1.3, count)
    assert update == pytest.approx((1.3**-2 - 4.0**-2) ** -0.5)
    combined = combine_gaussians(dpa.GaussianDpEvent(update), count)
    assert combined.noise_multiplier == pytest.approx(1.3, rel=1e-12)
    with pytest.raises(ConfigError, match="already spend the whole combined multiplier"):
        remaining_noise_multiplier(1.3, dpa.GaussianDpEvent(1.3))
