"""Calibration round trips: the calibrated noise multiplier meets the target, and only just."""

from __future__ import annotations

import dp_accounting as dpa
import pytest
from dp_accounting import NeighboringRelation

from silobridge.errors import ConfigError
from silobridge.privacy.dp import (
    AccountantKind,
    AccountingSpec,
    Budget,
    DistributedSkellam,
    Sampling,
    calibrate_dpsgd,
    calibrate_noise_multiplier,
    calibrate_rounds,
    dpsgd_event,
    epsilon,
)


@pytest.mark.parametrize(
    "kind,target",
    [(AccountantKind.RDP, 7.9), (AccountantKind.RDP, 1.0), (AccountantKind.PLD, 7.05)],
    ids=["rdp-7.9", "rdp-1", "pld-7.05"],
)
def test_rounds_round_trip(kind: AccountantKind, target: float) -> None:
    spec = AccountingSpec(kind=kind)
    budget = Budget(target, 1e-5)
    z = calibrate_rounds(budget, 100, Sampling.poisson(0.1), spec)
    spent = epsilon([dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(z)), 100)], 1e-5, spec)
    assert spent <= target
    assert spent == pytest.approx(target, rel=2e-3)
    if target in (7.9, 7.05):
        assert z == pytest.approx(1.0, abs=2e-3)  # the published configuration, inverted


def test_dpsgd_round_trip() -> None:
    budget = Budget(3.0, 1e-6)
    z = calibrate_dpsgd(budget, sample_rate=0.01, steps=2000)
    spent = epsilon([dpsgd_event(z, 0.01, 2000)], 1e-6, AccountingSpec())
    assert 2.99 <= spent <= 3.0


def test_distributed_skellam_round_trip() -> None:
    spec = AccountingSpec(relation=NeighboringRelation.REPLACE_SPECIAL)
    budget = Budget(5.0, 1e-5)

    def plan(z: float) -> dpa.DpEvent:
        config = DistributedSkellam(1.0, 256.0, 1000, z, expected_shares=10)
        return dpa.SelfComposedDpEvent(config.event(8), 50)  # worst case: 8 of 10 shares survive

    z = calibrate_noise_multiplier(plan, budget, spec)
    assert 4.99 <= epsilon([plan(z)], 1e-5, spec) <= 5.0


def test_unsupported_plan_is_a_config_error() -> None:
    fixed = Sampling.fixed(population=100, sample_size=10)
    with pytest.raises(ConfigError, match="REPLACE_ONE"):
        calibrate_rounds(Budget(1.0, 1e-5), 10, fixed)
