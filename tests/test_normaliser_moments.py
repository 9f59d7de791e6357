"""Feature moments without DP: a lender's dollar features must reach the coordinator unclipped.

Found on the LendingClub pilot: raw sums of squared incomes (~1e13) passed the secure sum's statistics
bound (2^40), the variance came out negative, the std floor (1e-6) scaled features by 1e6 and every
firm's first MLP update was non-finite.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from silobridge.clients.features import RiskExamples
from silobridge.clients.normaliser import Normaliser, summed_moments_normaliser
from silobridge.contract.stats import Moments
from silobridge.contract.wire_names import RISK_MOMENTS
from silobridge.errors import ConfigError
from silobridge.server.layouts import moments_layout
from tests.firm_support import tiny_firm

DOLLARS = (0.0, 300_000.0)


def _lender(rows: int = 2000) -> tuple:
    """The tiny scenario's first firm holding `rows` loans whose features are incomes of ~$80k."""
    firm, *_ = tiny_firm("privacy.enabled=false")
    names = firm.spec.data.risk_features
    ranges = {name: DOLLARS for name in names}
    spec = firm.spec.model_copy(update={"data": firm.spec.data.model_copy(update={"risk_feature_ranges": ranges})})
    rng = np.random.default_rng(0)
    features = rng.lognormal(np.log(80_000.0), 0.6, size=(rows, len(names)))
    labels = (rng.random(rows) < 0.05).astype(np.float32)
    holdings = dataclasses.replace(firm.holdings, spec=spec)
    holdings.__dict__["risk_split"] = (RiskExamples(features, labels), RiskExamples(features[:10], labels[:10]))
    firm.holdings = holdings
    return firm, features, ranges


def test_a_lenders_moments_pass_the_secure_sum_unclipped_and_give_the_true_scale() -> None:
    firm, features, ranges = _lender()
    names = firm.spec.data.risk_features
    assert Moments.of(features).to_vector().max() > firm.spec.aggregation.stats_bound  # raw moments would clip

    vector = firm.risk_moments()[RISK_MOMENTS]
    layout = moments_layout(len(names), firm.spec.aggregation)
    _, stats = layout.encode({RISK_MOMENTS: vector}, np.random.default_rng(1), firm=firm.firm_id)
    assert sum(s.num_clipped for s in stats.values()) == 0

    norm = Normaliser.from_scaled_moments(Moments.from_vector(vector), ranges, names)
    clipped = np.clip(features, *DOLLARS)
    np.testing.assert_allclose(norm.mean, clipped.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(norm.std, clipped.std(axis=0), rtol=1e-9)
    scaled = norm.apply(features)
    assert np.isfinite(scaled).all() and np.abs(scaled).max() < 10


def test_scaled_moments_of_known_values() -> None:
    """Range [0, 4]: values 1 and 3 map to -0.5 and 0.5; mean 2, std 1 back in feature units; 9 is clipped to 4."""
    norm = Normaliser.from_scaled_moments(Moments.of(np.array([[-0.5], [0.5]])), {"x": (0.0, 4.0)}, ("x",))
    np.testing.assert_allclose(norm.mean, [2.0])
    np.testing.assert_allclose(norm.std, [1.0])
    np.testing.assert_allclose(norm.apply(np.array([[9.0]])), [[2.0]])


def test_without_public_ranges_a_clipped_moment_sum_is_refused_with_the_field_to_fill() -> None:
    moments = Moments.of(np.array([[1.0], [3.0]]))
    plain = summed_moments_normaliser(moments, {}, ("x",), clipped=0, bound=2.0**40)
    np.testing.assert_allclose([plain.mean, plain.std], [[2.0], [1.0]])
    assert plain.low is None  # no public range: no clipping at scoring either
    with pytest.raises(ConfigError, match=r"data\.risk_feature_ranges.*2 of the risk features' summed moments"):
        summed_moments_normaliser(moments, {}, ("x",), clipped=2, bound=2.0**40)
    ranged = summed_moments_normaliser(
        Moments.of(np.array([[-0.5], [0.5]])), {"x": (0.0, 4.0)}, ("x",), clipped=0, bound=2.0**40
    )
    assert ranged.low is not None and ranged.mean[0] == pytest.approx(2.0)
