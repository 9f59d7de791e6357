"""Our dp-accounting subclasses agree with the originals, and compose Skellam events as documented."""

from __future__ import annotations

import dp_accounting as dpa
import numpy as np
import pytest
from dp_accounting import NeighboringRelation
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from silobridge.privacy.dp.accountants import PldAccountantView, SkellamRdpAccountant
from silobridge.privacy.dp.events import SkellamDpEvent
from silobridge.privacy.dp.skellam import skellam_rdp

STANDARD_EVENTS = [
    dpa.GaussianDpEvent(1.5),
    dpa.PoissonSampledDpEvent(0.05, dpa.GaussianDpEvent(0.9)),
    dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.2, dpa.GaussianDpEvent(1.2)), 50),
    dpa.ComposedDpEvent([dpa.GaussianDpEvent(2.0), dpa.LaplaceDpEvent(3.0)]),
    dpa.NonPrivateDpEvent(),
]


@pytest.mark.parametrize("event", STANDARD_EVENTS, ids=lambda e: type(e).__name__)
def test_skellam_rdp_accountant_leaves_standard_events_to_dp_accounting(event: dpa.DpEvent) -> None:
    ours = SkellamRdpAccountant().compose(event)
    theirs = RdpAccountant().compose(event)
    np.testing.assert_array_equal(ours.rdp, theirs.rdp)


@pytest.mark.parametrize("event", STANDARD_EVENTS[:3], ids=lambda e: type(e).__name__)
def test_pld_view_exposes_the_same_distribution(event: dpa.DpEvent) -> None:
    view = PldAccountantView(value_discretization_interval=1e-3).compose(event)
    plain = PLDAccountant(value_discretization_interval=1e-3).compose(event)
    assert view.pld.get_epsilon_for_delta(1e-6) == plain.get_epsilon(1e-6)
    assert not view.contains_non_private


def test_pld_view_reports_non_private() -> None:
    assert PldAccountantView().compose(dpa.NonPrivateDpEvent()).contains_non_private


def test_skellam_event_composes_its_rdp_curve_including_nested() -> None:
    event = SkellamDpEvent(variance=1e4, l1_sensitivity=50.0, l2_sensitivity=10.0)
    relation = NeighboringRelation.REPLACE_SPECIAL
    single = SkellamRdpAccountant(neighboring_relation=relation).compose(event)
    np.testing.assert_allclose(single.rdp, skellam_rdp(single.orders, 1e4, 50.0, 10.0))
    nested = SkellamRdpAccountant(neighboring_relation=relation).compose(
        dpa.ComposedDpEvent([dpa.SelfComposedDpEvent(event, 3), dpa.GaussianDpEvent(2.0)])
    )
    gaussian = RdpAccountant().compose(dpa.GaussianDpEvent(2.0)).rdp
    np.testing.assert_allclose(nested.rdp, 3 * single.rdp + gaussian)


def test_skellam_event_refused_under_add_remove_and_by_plain_accountants() -> None:
    event = SkellamDpEvent(variance=1e4, l1_sensitivity=50.0, l2_sensitivity=10.0)
    assert not SkellamRdpAccountant().supports(event)
    assert SkellamRdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_ONE).supports(event)
    assert not RdpAccountant(neighboring_relation=NeighboringRelation.REPLACE_SPECIAL).supports(event)
    assert not PLDAccountant(neighboring_relation=NeighboringRelation.REPLACE_SPECIAL).supports(event)
