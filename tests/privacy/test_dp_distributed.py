"""Distributed DP with Skellam shares: rounding, noise of the sum, dropouts and the modulus."""

from __future__ import annotations

import math

import numpy as np
import pytest
from dp_accounting import NeighboringRelation

from silobridge.errors import ConfigError, DataError
from silobridge.privacy.dp import (
    AccountingSpec,
    DistributedSkellam,
    clip_l2,
    epsilon,
    rounded_l2_bound,
    stochastic_round,
)
from silobridge.privacy.dp.distributed import integer_l1_bound

SPEC = AccountingSpec(relation=NeighboringRelation.REPLACE_SPECIAL)


def make(**overrides: object) -> DistributedSkellam:
    params = dict(clip_norm=1.0, scale=64.0, dim=256, noise_multiplier=1.0, expected_shares=8)
    params.update(overrides)
    return DistributedSkellam(**params)


def test_rounded_bound_formulas() -> None:
    assert rounded_l2_bound(10.0, 100, beta=0) == pytest.approx(20.0)
    hp = math.sqrt(100 + 25 + math.sqrt(2 * 0.5) * (10 + 5))
    assert rounded_l2_bound(10.0, 100) == pytest.approx(min(20.0, hp))
    assert integer_l1_bound(3.0, 100) == pytest.approx(9.0)  # |v|_1 <= |v|_2^2 for integers
    assert integer_l1_bound(30.0, 100) == pytest.approx(300.0)  # <= sqrt(d) |v|_2


def test_stochastic_round_is_unbiased_and_within_bound() -> None:
    rng = np.random.default_rng(5)
    values = rng.normal(size=64)
    values *= 8.0 / np.linalg.norm(values)
    bound = rounded_l2_bound(8.0, 64)
    draws = np.stack([stochastic_round(values, bound, rng) for _ in range(4000)])
    assert draws.dtype == np.int64
    assert np.all(np.linalg.norm(draws, axis=1) <= bound)
    assert np.all(np.abs(draws - values).max(axis=1) < 1)
    np.testing.assert_allclose(draws.mean(axis=0), values, atol=0.05)


def test_quantise_refuses_an_unclipped_update() -> None:
    with pytest.raises(DataError, match="firm 'f1'.*clip it first"):
        make().quantise(np.ones(256), np.random.default_rng(0), firm="f1")


def test_relation_must_keep_the_noise_shares() -> None:
    with pytest.raises(ConfigError, match="REPLACE_SPECIAL"):
        make(relation=NeighboringRelation.ADD_OR_REMOVE_ONE)
    assert make(relation=NeighboringRelation.REPLACE_ONE).l2_sensitivity == pytest.approx(2 * make().l2_sensitivity)


def test_shares_add_up_to_the_target_noise() -> None:
    config = make()
    assert config.share_variance * config.expected_shares == pytest.approx(config.total_variance)
    assert config.total_variance == pytest.approx((config.noise_multiplier * config.l2_sensitivity) ** 2)
    assert config.event(8).variance == pytest.approx(config.total_variance)


def test_sum_of_shares_over_n_firms_has_the_right_variance() -> None:
    """Chi-square test on the noise of the aggregate: n firms' shares sum to Sk(n * share variance)."""
    config = make(dim=20_000, scale=8.0, expected_shares=8)
    rng = np.random.default_rng(42)
    total = sum(config.noise_share(rng) for _ in range(8))
    n = total.size
    variance = config.share_variance * 8
    statistic = (n - 1) * total.var(ddof=1) / variance
    z = (statistic - (n - 1)) / math.sqrt(2 * (n - 1) * (1 + 1 / (2 * variance)))
    assert abs(z) < 4


def test_dropouts_leave_less_noise_and_cost_more_epsilon() -> None:
    config = make(noise_multiplier=2.0)
    costs = [epsilon([config.event(shares)], 1e-5, SPEC) for shares in (8, 6, 4, 2)]
    assert costs == sorted(costs) and costs[0] < costs[-1]
    with pytest.raises(ConfigError, match="noise share"):
        config.event(0)


def test_full_shares_cost_about_as_much_as_the_gaussian() -> None:
    from dp_accounting import GaussianDpEvent, SelfComposedDpEvent

    config = make(scale=1024.0, noise_multiplier=1.0)
    skellam = epsilon([SelfComposedDpEvent(config.event(8), 20)], 1e-5, SPEC)
    gaussian = epsilon([SelfComposedDpEvent(GaussianDpEvent(1.0), 20)], 1e-5, SPEC)
    assert gaussian <= skellam <= gaussian * 1.25  # integer orders and rounding cost a little


def test_modulus_check_refuses_too_few_bits() -> None:
    config = make()
    needed = config.required_bits(num_firms=8)
    config.check_modulus(needed, num_firms=8)
    with pytest.raises(ConfigError, match=r"field 'bits'.*needs \d+ bits"):
        config.check_modulus(needed - 1, num_firms=8)
    assert config.required_bits(num_firms=1000) > needed


def test_noised_sum_at_required_bits_does_not_wrap() -> None:
    """Worst-case aligned updates plus noise, summed modulo 2^bits, decode to the true sum."""
    config = make(dim=64, scale=32.0, expected_shares=10)
    bits = config.required_bits(num_firms=10)
    rng = np.random.default_rng(9)
    direction = np.zeros(64)
    direction[0] = 1.0  # every firm pushes the same coordinate as far as the clip allows
    firms = [config.quantise(clip_l2(direction * 5, 1.0).vector, rng) + config.noise_share(rng) for _ in range(10)]
    modulus = 1 << bits
    wrapped = sum(int(v) % modulus for v in (f[0] for f in firms)) % modulus
    signed = wrapped - modulus if wrapped >= modulus // 2 else wrapped
    assert signed == int(sum(f[0] for f in firms))
    assert abs(signed) <= config.max_abs_sum(num_firms=10) < modulus // 2
    assert signed >= 10 * 32 - 10  # the updates really were aligned at the clip norm
