"""Budget guards: compose what is spent with what is asked, before anything is released.

`BudgetGuard` holds one budget (the run's, say). `FirmBudgets` holds one account per firm, each
charged only for the releases the firm is accounted in, so a firm whose budget is spent can be left
out of later releases while the others' accounts stay exact. A refused spend raises
`BudgetExhausted` and records nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import dp_accounting as dpa

from silobridge.errors import BudgetExhausted, ConfigError
from silobridge.privacy.dp.accounting import Account, AccountingSpec, PrivacyUnit, compose_each, max_epsilon
from silobridge.privacy.dp.codec import event_key


@dataclass(frozen=True)
class Budget:
    """An (epsilon, delta) privacy budget."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        if not (_is_number(self.epsilon) and math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ConfigError(f"must be a positive finite number, got {self.epsilon!r}", field="budget.epsilon")
        if not (_is_number(self.delta) and 0 < self.delta < 1):
            raise ConfigError(f"must be in (0, 1), got {self.delta!r}", field="budget.delta")

    def is_within(self, other: Budget) -> bool:
        """Whether this budget is at least as strict as `other`."""
        return self.epsilon <= other.epsilon and self.delta <= other.delta

    def to_dict(self) -> dict[str, float]:
        return {"epsilon": self.epsilon, "delta": self.delta}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Budget:
        if not isinstance(data, Mapping) or set(data) != {"epsilon", "delta"}:
            raise ConfigError(f"a budget is {{epsilon, delta}}, got {data!r}", field="budget")
        return cls(epsilon=data["epsilon"], delta=data["delta"])


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class BudgetGuard:
    """One budget and the account charged against it.

    `preview(event)` says what epsilon would be after spending `event`; `spend(event)` spends it or,
    if that would exceed the budget, raises `BudgetExhausted` and records nothing. The last preview
    is remembered, so preview-then-spend of one event composes once.
    """

    def __init__(self, budget: Budget, spec: AccountingSpec | None = None, *, name: str = "run"):
        self.budget = budget
        self.spec = spec or AccountingSpec()
        self.name = name
        self._account = Account.empty(self.spec)
        self._last_preview: tuple[str, Account] | None = None

    @property
    def account(self) -> Account:
        return self._account

    @property
    def events(self) -> tuple[dpa.DpEvent, ...]:
        return self._account.events

    @property
    def spent(self) -> float:
        """Epsilon spent so far, at the budget's delta."""
        return self._account.epsilon(self.budget.delta)

    @property
    def remaining(self) -> float:
        return max(0.0, self.budget.epsilon - self.spent)

    def composed(self, event: dpa.DpEvent) -> Account:
        """The account as it would be after spending `event` (remembered until the next spend)."""
        key = event_key(event)
        if self._last_preview is not None and self._last_preview[0] == key:
            return self._last_preview[1]
        composed = self._account.compose(event)
        self._last_preview = (key, composed)
        return composed

    def preview(self, event: dpa.DpEvent) -> float:
        """Epsilon at the budget's delta if `event` were spent now; changes nothing."""
        return self.composed(event).epsilon(self.budget.delta)

    def can_spend(self, event: dpa.DpEvent) -> bool:
        return self.preview(event) <= self.budget.epsilon

    def spend(self, event: dpa.DpEvent) -> float:
        """Spend `event` and return the new epsilon, or raise `BudgetExhausted` (nothing recorded)."""
        composed = self.composed(event)
        requested = composed.epsilon(self.budget.delta)
        if requested > self.budget.epsilon:
            raise BudgetExhausted(
                f"{self.name}: refused {event}: epsilon would go from {self.spent:.6g} to "
                f"{requested:.6g} at delta {self.budget.delta:g}, over the budget of {self.budget.epsilon:g}"
            )
        self._account = composed
        self._last_preview = None
        return requested


@dataclass(frozen=True)
class FirmCharge:
    """What charging `event` to some firms would do; `FirmBudgets.commit` applies it."""

    event: dpa.DpEvent
    accounts: Mapping[str, Account]
    epsilons: Mapping[str, float]
    over_budget: tuple[str, ...]
    generation: int


class FirmBudgets:
    """Per-firm budgets and accounts; each firm is charged only for releases it is accounted in.

    Every firm gets `default` (normally the run's budget) unless `overrides` gives it a stricter one;
    a looser one is refused. Firms with identical histories share one account object, so a release
    that charges many firms composes once per distinct history.
    """

    def __init__(
        self, default: Budget, spec: AccountingSpec | None = None, overrides: Mapping[str, Budget] | None = None
    ):
        self.default = default
        self.spec = spec or AccountingSpec()
        self.overrides = dict(overrides or {})
        for firm, budget in self.overrides.items():
            if not budget.is_within(default):
                raise ConfigError(
                    f"firm '{firm}' asks for ({budget.epsilon:g}, {budget.delta:g}), looser than the run's "
                    f"({default.epsilon:g}, {default.delta:g}); a firm may only be stricter",
                    field=f"firm_budgets.{firm}",
                )
        self._empty = Account.empty(self.spec)
        self._accounts: dict[str, Account] = {}
        self._generation = 0

    def budget(self, firm: str) -> Budget:
        return self.overrides.get(firm, self.default)

    def account(self, firm: str) -> Account:
        return self._accounts.get(firm, self._empty)

    @property
    def accounts(self) -> Mapping[str, Account]:
        """Accounts of the firms charged so far."""
        return dict(self._accounts)

    def spent(self, firm: str) -> float:
        """Epsilon the firm has spent, at its own delta."""
        return self.account(firm).epsilon(self.budget(firm).delta)

    def preview(self, firm_ids: Iterable[str], event: dpa.DpEvent) -> FirmCharge:
        """Charge `event` to `firm_ids` on paper: their new epsilons and who would be over budget."""
        firm_ids = _unique(firm_ids)
        accounts = compose_each(self._accounts, firm_ids, event, self._empty)
        epsilons = {firm: accounts[firm].epsilon(self.budget(firm).delta) for firm in firm_ids}
        over = tuple(firm for firm in firm_ids if epsilons[firm] > self.budget(firm).epsilon)
        return FirmCharge(event, accounts, epsilons, over, self._generation)

    def participants_within_budget(self, firm_ids: Iterable[str], event: dpa.DpEvent) -> list[str]:
        """The firms of `firm_ids` (in order) that can spend `event` without exceeding their budgets."""
        charge = self.preview(firm_ids, event)
        return [firm for firm in charge.accounts if firm not in charge.over_budget]

    def commit(self, charge: FirmCharge) -> None:
        """Apply a previewed charge; refuses a charge over budget or one previewed before another spend."""
        if charge.generation != self._generation:
            raise ConfigError("this charge was previewed before another spend; preview again", field="charge")
        if charge.over_budget:
            details = ", ".join(
                f"'{firm}' to {charge.epsilons[firm]:.6g} (spent {self.spent(firm):.6g}, budget "
                f"{self.budget(firm).epsilon:g} at delta {self.budget(firm).delta:g})"
                for firm in charge.over_budget
            )
            raise BudgetExhausted(f"refused {charge.event}: it would take firm {details}")
        self._accounts.update(charge.accounts)
        self._generation += 1

    def spend(self, firm_ids: Iterable[str], event: dpa.DpEvent) -> dict[str, float]:
        """Charge `event` to every firm in `firm_ids`, or to none (raising `BudgetExhausted`)."""
        charge = self.preview(firm_ids, event)
        self.commit(charge)
        return dict(charge.epsilons)


def _unique(firm_ids: Iterable[str]) -> list[str]:
    firm_ids = list(firm_ids)
    if len(set(firm_ids)) != len(firm_ids):
        raise ConfigError(f"firm ids repeat in {firm_ids!r}", field="firms")
    for firm in firm_ids:
        if not isinstance(firm, str) or not firm:
            raise ConfigError(f"firm ids are non-empty strings, got {firm!r}", field="firms")
    return firm_ids


def overall_epsilon(
    unit: PrivacyUnit, run_account: Account, firm_accounts: Mapping[str, Account], delta: float
) -> float:
    """Overall epsilon at `delta`: the run's composition for unit `firm`; the largest firm's for `record`.

    Under the record unit each firm's records are disjoint from the others', so releases by different
    firms compose in parallel and the run's guarantee is the worst firm's.
    """
    if unit is PrivacyUnit.FIRM:
        return run_account.epsilon(delta)
    return max_epsilon(firm_accounts.values(), delta)
