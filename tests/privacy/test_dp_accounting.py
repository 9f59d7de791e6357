"""The accountant facade against dp-accounting itself, as one suite run for both accountants."""

from __future__ import annotations

import math

import dp_accounting as dpa
import pytest
from dp_accounting import NeighboringRelation
from dp_accounting.pld import PLDAccountant
from dp_accounting.rdp import RdpAccountant

from silobridge.errors import ConfigError
from silobridge.privacy.dp import (
    Account,
    AccountantKind,
    AccountingSpec,
    DistributedSkellam,
    Sampling,
    epsilon,
    epsilon_report,
)

ROUND = dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.0))
DELTA = 1e-5


def test_known_configuration_matches_published_figures() -> None:
    """Noise multiplier 1.0, Poisson sampling 0.1, 100 rounds, delta 1e-5: 7.90 by RDP, 7.05 by PLD."""
    report = epsilon_report([dpa.SelfComposedDpEvent(ROUND, 100)], DELTA, AccountingSpec())
    assert round(report.rdp, 2) == 7.90
    assert round(report.pld, 2) == 7.05
    assert report.tighter is AccountantKind.PLD
    assert report.best == report.pld


def test_rdp_equals_dp_accounting_exactly() -> None:
    ours = epsilon([ROUND] * 100, DELTA, AccountingSpec(kind=AccountantKind.RDP))
    theirs = RdpAccountant().compose(ROUND, 100).get_epsilon(DELTA)
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_pld_matches_dp_accounting_at_its_default_discretisation() -> None:
    spec = AccountingSpec(kind=AccountantKind.PLD, pld_discretization=1e-4)
    ours = epsilon([dpa.SelfComposedDpEvent(ROUND, 100)], DELTA, spec)
    theirs = PLDAccountant().compose(dpa.SelfComposedDpEvent(ROUND, 100)).get_epsilon(DELTA)
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_coarser_pld_discretisation_stays_an_upper_bound_and_close() -> None:
    fine = epsilon(
        [dpa.SelfComposedDpEvent(ROUND, 100)], DELTA, AccountingSpec(kind=AccountantKind.PLD, pld_discretization=1e-4)
    )
    coarse = epsilon([dpa.SelfComposedDpEvent(ROUND, 100)], DELTA, AccountingSpec(kind=AccountantKind.PLD))
    assert fine <= coarse <= fine * (1 + 1e-4)


@pytest.fixture(params=list(AccountantKind), ids=lambda kind: kind.value)
def spec(request: pytest.FixtureRequest) -> AccountingSpec:
    return AccountingSpec(kind=request.param)


class TestAccountSuite:
    """Behaviour every accountant kind must share."""

    def test_empty_account_spends_nothing(self, spec: AccountingSpec) -> None:
        assert Account.empty(spec).epsilon(DELTA) == 0.0

    def test_no_op_costs_nothing(self, spec: AccountingSpec) -> None:
        assert Account.empty(spec).compose(dpa.NoOpDpEvent()).epsilon(DELTA) == 0.0

    def test_non_private_event_is_infinite(self, spec: AccountingSpec) -> None:
        assert math.isinf(Account.empty(spec).compose(ROUND).compose(dpa.NonPrivateDpEvent()).epsilon(DELTA))

    def test_composition_only_increases_epsilon(self, spec: AccountingSpec) -> None:
        account, last = Account.empty(spec), 0.0
        for _ in range(20):
            account = account.compose(ROUND)
            assert account.epsilon(DELTA) >= last
            last = account.epsilon(DELTA)

    def test_incremental_equals_from_scratch(self, spec: AccountingSpec) -> None:
        events = [ROUND, dpa.GaussianDpEvent(3.0), ROUND, dpa.SelfComposedDpEvent(ROUND, 5)]
        incremental = Account.empty(spec)
        for event in events:
            incremental = incremental.compose(event)
        assert incremental.epsilon(DELTA) == pytest.approx(epsilon(events, DELTA, spec), rel=1e-9)
        assert incremental.events == tuple(events)

    def test_compose_leaves_the_original_untouched(self, spec: AccountingSpec) -> None:
        before = Account.empty(spec).compose(ROUND)
        eps = before.epsilon(DELTA)
        before.compose(ROUND)
        assert before.epsilon(DELTA) == eps and len(before.events) == 1

    def test_self_composed_equals_repeated(self, spec: AccountingSpec) -> None:
        repeated = epsilon([ROUND] * 10, DELTA, spec)
        assert epsilon([dpa.SelfComposedDpEvent(ROUND, 10)], DELTA, spec) == pytest.approx(repeated, rel=1e-6)

    def test_smaller_delta_gives_larger_epsilon(self, spec: AccountingSpec) -> None:
        account = Account.empty(spec).compose(dpa.SelfComposedDpEvent(ROUND, 10))
        assert account.epsilon(1e-7) > account.epsilon(1e-5)

    def test_rejects_delta_outside_open_interval(self, spec: AccountingSpec) -> None:
        with pytest.raises(ConfigError, match="delta"):
            Account.empty(spec).epsilon(0.0)


def test_fixed_size_sampling_needs_replace_one() -> None:
    fixed = Sampling.fixed(population=100, sample_size=10)
    with pytest.raises(ConfigError, match="REPLACE_ONE"):
        fixed.check_relation(NeighboringRelation.ADD_OR_REMOVE_ONE)
    event = fixed.wrap(dpa.GaussianDpEvent(1.0))
    assert isinstance(event, dpa.SampledWithoutReplacementDpEvent)
    spec = AccountingSpec(relation=NeighboringRelation.REPLACE_ONE)
    report = epsilon_report([dpa.SelfComposedDpEvent(event, 10)], DELTA, spec)
    assert math.isfinite(report.rdp)
    assert report.pld is None and "cannot account" in report.pld_unsupported
    with pytest.raises(ConfigError, match="cannot account"):
        epsilon([event], DELTA, AccountingSpec())  # add/remove: RDP refuses fixed-size sampling


def test_poisson_sampling_refuses_replace_one() -> None:
    with pytest.raises(ConfigError, match="Poisson"):
        Sampling.poisson(0.1).check_relation(NeighboringRelation.REPLACE_ONE)


def test_skellam_is_rdp_only_and_not_under_add_remove() -> None:
    event = DistributedSkellam(1.0, 64.0, 100, 1.0, expected_shares=10).event(10)
    report = epsilon_report([event], DELTA, AccountingSpec(relation=NeighboringRelation.REPLACE_SPECIAL))
    assert math.isfinite(report.rdp) and report.pld is None
    with pytest.raises(ConfigError, match="cannot account"):
        epsilon([event], DELTA, AccountingSpec(relation=NeighboringRelation.ADD_OR_REMOVE_ONE))


def test_spec_round_trips_through_dict() -> None:
    spec = AccountingSpec(kind=AccountantKind.PLD, relation=NeighboringRelation.REPLACE_SPECIAL, rdp_orders=(2, 4, 8))
    assert AccountingSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ConfigError, match="accountant"):
        AccountingSpec.from_dict({**spec.to_dict(), "kind": "moments"})
