"""Budget guards: never overspend, refuse without recording, charge each firm only for its releases."""

from __future__ import annotations

import dp_accounting as dpa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from silobridge.errors import BudgetExhausted, ConfigError
from silobridge.privacy.dp import AccountantKind, AccountingSpec, Budget, BudgetGuard, FirmBudgets, epsilon

ROUND = dpa.PoissonSampledDpEvent(0.1, dpa.GaussianDpEvent(1.0))

events = st.builds(
    lambda q, z: dpa.PoissonSampledDpEvent(q, dpa.GaussianDpEvent(z)),
    st.sampled_from([0.01, 0.05, 0.2, 1.0]),
    st.sampled_from([0.8, 1.5, 3.0, 6.0]),
)


def check_guard_schedule(kind: AccountantKind, schedule: list[dpa.DpEvent], budget_epsilon: float) -> None:
    guard = BudgetGuard(Budget(budget_epsilon, 1e-5), AccountingSpec(kind=kind))
    for event in schedule:
        before = guard.events
        preview = guard.preview(event)
        if preview <= budget_epsilon:
            assert guard.spend(event) == preview
        else:
            with pytest.raises(BudgetExhausted):
                guard.spend(event)
            assert guard.events == before  # a refusal records nothing
        assert guard.spent <= budget_epsilon
    assert guard.spent == pytest.approx(epsilon(guard.events, 1e-5, guard.spec), rel=1e-9)


@settings(max_examples=25, deadline=None)
@given(schedule=st.lists(events, min_size=1, max_size=40), budget_epsilon=st.floats(0.5, 6.0))
def test_rdp_guard_never_lets_spent_epsilon_exceed_the_budget(
    schedule: list[dpa.DpEvent], budget_epsilon: float
) -> None:
    check_guard_schedule(AccountantKind.RDP, schedule, budget_epsilon)


@settings(max_examples=6, deadline=None)  # PLD compositions cost milliseconds each: fewer, shorter schedules
@given(schedule=st.lists(events, min_size=1, max_size=12), budget_epsilon=st.floats(0.5, 6.0))
def test_pld_guard_never_lets_spent_epsilon_exceed_the_budget(
    schedule: list[dpa.DpEvent], budget_epsilon: float
) -> None:
    check_guard_schedule(AccountantKind.PLD, schedule, budget_epsilon)


@settings(max_examples=15, deadline=None)
@given(
    rounds=st.lists(st.sets(st.sampled_from(["a", "b", "c", "d"]), min_size=1), min_size=1, max_size=25),
    strict=st.sampled_from(["a", "b", "c", "d"]),
)
def test_each_firm_is_charged_exactly_for_the_releases_it_took_part_in(rounds: list[set[str]], strict: str) -> None:
    run_budget = Budget(4.0, 1e-5)
    firms = FirmBudgets(run_budget, overrides={strict: Budget(1.5, 1e-6)})
    taken: dict[str, list[dpa.DpEvent]] = {firm: [] for firm in "abcd"}
    event = dpa.GaussianDpEvent(8.0)  # the strict firm affords about four of these, the others about 35
    for wanted in rounds:
        participants = firms.participants_within_budget(sorted(wanted), event)
        assert set(participants) <= wanted
        firms.spend(participants, event)
        for firm in participants:
            taken[firm].append(event)
    for firm in "abcd":
        budget = firms.budget(firm)
        expected = epsilon(taken[firm], budget.delta, firms.spec)
        assert firms.spent(firm) == pytest.approx(expected, rel=1e-9)
        assert firms.spent(firm) <= budget.epsilon


def test_refusal_message_names_spent_requested_and_budget() -> None:
    guard = BudgetGuard(Budget(2.0, 1e-5), name="run")
    while guard.can_spend(ROUND):
        guard.spend(ROUND)
    spent = guard.spent
    with pytest.raises(BudgetExhausted) as info:
        guard.spend(ROUND)
    message = str(info.value)
    assert f"{spent:.6g}" in message and f"{guard.preview(ROUND):.6g}" in message and "budget of 2" in message
    assert guard.spent == spent


def test_firm_spend_is_all_or_nothing() -> None:
    firms = FirmBudgets(Budget(3.0, 1e-5), overrides={"tight": Budget(0.5, 1e-5)})
    with pytest.raises(BudgetExhausted, match="'tight'"):
        firms.spend(["loose", "tight"], dpa.GaussianDpEvent(2.0))
    assert firms.spent("loose") == 0.0 and firms.spent("tight") == 0.0
    assert firms.participants_within_budget(["tight", "loose"], dpa.GaussianDpEvent(2.0)) == ["loose"]


def test_a_firm_may_be_stricter_than_the_run_never_looser() -> None:
    with pytest.raises(ConfigError, match="firm_budgets.greedy"):
        FirmBudgets(Budget(1.0, 1e-5), overrides={"greedy": Budget(2.0, 1e-5)})
    with pytest.raises(ConfigError, match="firm_budgets.greedy"):
        FirmBudgets(Budget(1.0, 1e-5), overrides={"greedy": Budget(1.0, 1e-3)})


def test_stale_charge_is_refused() -> None:
    firms = FirmBudgets(Budget(3.0, 1e-5))
    charge = firms.preview(["a"], dpa.GaussianDpEvent(2.0))
    firms.spend(["a"], dpa.GaussianDpEvent(2.0))
    with pytest.raises(ConfigError, match="preview again"):
        firms.commit(charge)


def test_repeated_firm_ids_are_refused() -> None:
    with pytest.raises(ConfigError, match="repeat"):
        FirmBudgets(Budget(3.0, 1e-5)).preview(["a", "a"], ROUND)


def test_budget_validation() -> None:
    for bad in ((0.0, 1e-5), (float("inf"), 1e-5), (1.0, 0.0), (1.0, 1.0)):
        with pytest.raises(ConfigError, match="budget"):
            Budget(*bad)


@pytest.mark.parametrize("kind", list(AccountantKind), ids=lambda kind: kind.value)
def test_incremental_composition_late_in_a_long_run_matches_from_scratch(kind: AccountantKind) -> None:
    """The guard composes incrementally (its speed is measured in benchmarks/bench_accountant.py);
    what it reports at round 1001 must equal composing the whole history from scratch."""
    spec = AccountingSpec(kind=kind)
    guard = BudgetGuard(Budget(100.0, 1e-5), spec)
    guard.spend(dpa.SelfComposedDpEvent(ROUND, 999))
    guard.spend(ROUND)
    previewed = guard.preview(ROUND)
    guard.spend(ROUND)
    assert guard.spent == pytest.approx(previewed)
    assert guard.spent == pytest.approx(epsilon([dpa.SelfComposedDpEvent(ROUND, 1001)], 1e-5, spec), rel=1e-3)


def test_many_firms_with_one_history_compose_once() -> None:
    firms = FirmBudgets(Budget(50.0, 1e-5))
    ids = [f"firm-{i}" for i in range(1000)]
    for _ in range(50):
        firms.spend(ids, ROUND)
    assert len({id(account) for account in firms.accounts.values()}) == 1
    firms.spend(ids, ROUND)
    assert len({id(account) for account in firms.accounts.values()}) == 1
