"""benchmarks.ar_noise's weighted record bound on known values: weight 1 is AR's own bound."""

from __future__ import annotations

import math

import pytest

from benchmarks.ar_noise import first_moment_weighted_bound
from silobridge.contract.queries import ar_record_bound


@pytest.mark.parametrize("lags", [1, 3, 6])
def test_weight_one_is_the_plans_bound(lags: int) -> None:
    assert first_moment_weighted_bound(lags, 1.0) == pytest.approx(ar_record_bound(lags, 0), rel=1e-12)


def test_weighted_bound_at_its_corner() -> None:
    # p = 3, weight 2: delta = 2 (a = -1, b = 1) gives 4 x 4 x (4 + 0 + 6) = 160
    assert first_moment_weighted_bound(3, 2.0) == pytest.approx(math.sqrt(160.0), rel=1e-12)
