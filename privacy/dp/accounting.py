"""The accountant facade: what a list of DpEvents costs, by RDP and by PLD.

`Account` is an immutable value: the events spent so far plus the accountant's running state (the
summed RDP curve, or the composed privacy loss distribution). `account.compose(event)` returns a
new `Account` in time independent of how many events came before, which is what keeps a budget
check fast in round 1,000. Each distinct event is accounted once and cached (by its canonical JSON),
so a run that repeats one round configuration pays for its RDP curve or PLD once.

Epsilon is a pure function of (events, delta, spec): `epsilon(events, delta, spec)` recomputes it
from scratch and gives the same number as the incremental path.
"""

from __future__ import annotations

import enum
import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dp_accounting as dpa
import numpy as np
from dp_accounting import NeighboringRelation
from dp_accounting.pld import privacy_loss_distribution
from dp_accounting.rdp import rdp_privacy_accountant

from silobridge.errors import ConfigError
from silobridge.privacy.dp.accountants import PldAccountantView, SkellamRdpAccountant
from silobridge.privacy.dp.codec import event_from_json, event_key

DEFAULT_RDP_ORDERS: tuple[float, ...] = tuple(rdp_privacy_accountant.DEFAULT_RDP_ORDERS)
# dp-accounting's PLDAccountant defaults to 1e-4. 1e-3 is about ten times faster per composition
# (about 10 ms instead of 130 ms at round 1,000 of a Poisson-sampled Gaussian run) and, being a
# pessimistic discretisation, still an upper bound: it moves epsilon by < 1e-4 in our checks.
DEFAULT_PLD_DISCRETIZATION = 1e-3


class AccountantKind(str, enum.Enum):
    """Which dp-accounting accountant turns events into epsilon."""

    RDP = "rdp"  # Renyi DP: accepts every event we build (Skellam, fixed-size sampling)
    PLD = "pld"  # privacy loss distributions: tighter, but Gaussian/Laplace under Poisson sampling only


class PrivacyUnit(str, enum.Enum):
    """What one neighbouring step adds, removes or changes."""

    FIRM = "firm"  # a firm's whole contribution to a release (DP-FedAvg, analytics queries)
    RECORD = "record"  # one training example inside one firm (DP-SGD)


@dataclass(frozen=True)
class AccountingSpec:
    """How a run accounts: the accountant, the neighbouring relation and the unit of privacy."""

    kind: AccountantKind = AccountantKind.RDP
    relation: NeighboringRelation = NeighboringRelation.ADD_OR_REMOVE_ONE
    unit: PrivacyUnit = PrivacyUnit.FIRM
    rdp_orders: tuple[float, ...] = DEFAULT_RDP_ORDERS
    pld_discretization: float = DEFAULT_PLD_DISCRETIZATION

    def __post_init__(self) -> None:
        # Stored as floats so that a spec read back from a ledger compares equal to the one written.
        object.__setattr__(self, "rdp_orders", tuple(float(order) for order in self.rdp_orders))
        if not self.rdp_orders or min(self.rdp_orders) < 1:
            raise ConfigError("RDP orders must be a non-empty list of numbers >= 1", field="accountant.rdp_orders")
        if not 0 < self.pld_discretization < 1:
            raise ConfigError(
                f"must be in (0, 1), got {self.pld_discretization!r}", field="accountant.pld_discretization"
            )

    def with_kind(self, kind: AccountantKind) -> AccountingSpec:
        return AccountingSpec(kind, self.relation, self.unit, self.rdp_orders, self.pld_discretization)

    def fresh_accountant(self) -> dpa.PrivacyAccountant:
        """An empty dp-accounting accountant of this kind and relation (for calibration)."""
        if self.kind is AccountantKind.RDP:
            return SkellamRdpAccountant(orders=self.rdp_orders, neighboring_relation=self.relation)
        return PldAccountantView(
            neighboring_relation=self.relation, value_discretization_interval=self.pld_discretization
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for the ledger header."""
        return {
            "kind": self.kind.value,
            "relation": self.relation.name,
            "unit": self.unit.value,
            "rdp_orders": list(self.rdp_orders),
            "pld_discretization": self.pld_discretization,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AccountingSpec:
        try:
            return cls(
                kind=AccountantKind(data["kind"]),
                relation=NeighboringRelation[data["relation"]],
                unit=PrivacyUnit(data["unit"]),
                rdp_orders=tuple(float(order) for order in data["rdp_orders"]),
                pld_discretization=float(data["pld_discretization"]),
            )
        except (KeyError, ValueError, TypeError) as err:
            raise ConfigError(f"invalid accountant specification {data!r}: {err}", field="accountant") from err


def _check_supported(accountant: dpa.PrivacyAccountant, kind: AccountantKind, event: dpa.DpEvent) -> None:
    if not accountant.supports(event):
        raise ConfigError(
            f"the {kind.value} accountant under {accountant.neighboring_relation.name} cannot account {event}",
            field="accountant",
        )


@functools.lru_cache(maxsize=512)
def _rdp_curve(key: str, orders: tuple[float, ...], relation: NeighboringRelation) -> np.ndarray:
    """The RDP curve of the event whose canonical key is `key` (the key describes it fully)."""
    event = event_from_json(json.loads(key))
    accountant = SkellamRdpAccountant(orders=orders, neighboring_relation=relation)
    _check_supported(accountant, AccountantKind.RDP, event)
    curve: np.ndarray = accountant.compose(event).rdp
    curve.flags.writeable = False
    return curve


@dataclass(frozen=True)
class _PldOf:
    """One event's privacy loss distribution, or the fact that it is not private at all."""

    pld: privacy_loss_distribution.PrivacyLossDistribution
    non_private: bool


@functools.lru_cache(maxsize=64)
def _pld_of(key: str, relation: NeighboringRelation, discretization: float) -> _PldOf:
    """The PLD of the event whose canonical key is `key`."""
    event = event_from_json(json.loads(key))
    accountant = PldAccountantView(neighboring_relation=relation, value_discretization_interval=discretization)
    _check_supported(accountant, AccountantKind.PLD, event)
    accountant.compose(event)
    return _PldOf(accountant.pld, accountant.contains_non_private)


@dataclass(frozen=True, eq=False)
class Account:
    """Events spent so far under one `AccountingSpec`, with the accountant state to extend them cheaply."""

    spec: AccountingSpec
    events: tuple[dpa.DpEvent, ...] = ()
    _rdp: np.ndarray | None = field(default=None, repr=False)
    _pld: privacy_loss_distribution.PrivacyLossDistribution | None = field(default=None, repr=False)
    _non_private: bool = field(default=False, repr=False)
    _epsilons: dict[float, float] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def empty(cls, spec: AccountingSpec) -> Account:
        return cls(spec)

    def compose(self, event: dpa.DpEvent) -> Account:
        """A new account with `event` spent too.

        Raises ConfigError if this accountant cannot account `event`, or if the ledger could not record
        it (only the event types of `privacy.dp.codec` are accepted, so whatever is spent can be audited).
        """
        key = event_key(event)
        if self.spec.kind is AccountantKind.RDP:
            curve = _rdp_curve(key, self.spec.rdp_orders, self.spec.relation)
            rdp = curve.copy() if self._rdp is None else self._rdp + curve
            rdp.flags.writeable = False
            return Account(self.spec, (*self.events, event), _rdp=rdp)
        one = _pld_of(key, self.spec.relation, self.spec.pld_discretization)
        pld = one.pld if self._pld is None else self._pld.compose(one.pld)
        return Account(self.spec, (*self.events, event), _pld=pld, _non_private=self._non_private or one.non_private)

    def compose_all(self, events: Iterable[dpa.DpEvent]) -> Account:
        account = self
        for event in events:
            account = account.compose(event)
        return account

    def epsilon(self, delta: float) -> float:
        """The smallest epsilon this accountant certifies at `delta` for everything spent."""
        if not 0 < delta < 1:
            raise ConfigError(f"must be in (0, 1), got {delta!r}", field="delta")
        cached = self._epsilons.get(delta)
        if cached is not None:
            return cached
        if not self.events:
            value = 0.0
        elif self.spec.kind is AccountantKind.RDP:
            assert self._rdp is not None, "an RDP account with events holds their curve"
            orders, curve = self.spec.rdp_orders, self._rdp
            # dp-accounting annotates the curve as Sequence[float]; it takes (and builds) numpy arrays.
            value = float(rdp_privacy_accountant.compute_epsilon(orders, curve, delta)[0])  # type: ignore[arg-type]
        elif self._non_private:
            value = math.inf
        else:
            assert self._pld is not None, "a PLD account with events holds their distribution"
            value = float(self._pld.get_epsilon_for_delta(delta))
        self._epsilons[delta] = value
        return value


def epsilon(events: Sequence[dpa.DpEvent], delta: float, spec: AccountingSpec) -> float:
    """Epsilon at `delta` of composing `events` under `spec`, computed from scratch."""
    return Account.empty(spec).compose_all(events).epsilon(delta)


@dataclass(frozen=True)
class EpsilonReport:
    """Epsilon by both accountants for the same events; `pld` is None where PLD cannot account them."""

    delta: float
    relation: NeighboringRelation
    rdp: float
    pld: float | None
    pld_unsupported: str | None = None

    @property
    def tighter(self) -> AccountantKind:
        """The accountant that certifies the smaller epsilon (both are valid upper bounds)."""
        if self.pld is not None and self.pld < self.rdp:
            return AccountantKind.PLD
        return AccountantKind.RDP

    @property
    def best(self) -> float:
        return self.rdp if self.pld is None else min(self.rdp, self.pld)


def epsilon_report(events: Sequence[dpa.DpEvent], delta: float, spec: AccountingSpec) -> EpsilonReport:
    """Epsilon of `events` at `delta` by RDP and by PLD under `spec.relation`, and which is tighter."""
    rdp = epsilon(events, delta, spec.with_kind(AccountantKind.RDP))
    try:
        pld: float | None = epsilon(events, delta, spec.with_kind(AccountantKind.PLD))
        reason = None
    except ConfigError as err:
        pld, reason = None, str(err)
    return EpsilonReport(delta=delta, relation=spec.relation, rdp=rdp, pld=pld, pld_unsupported=reason)


def compose_each(
    accounts: Mapping[str, Account], firm_ids: Iterable[str], event: dpa.DpEvent, empty: Account
) -> dict[str, Account]:
    """The accounts of `firm_ids` after each spends `event` (`empty` for a firm not in `accounts`).

    Firms with the same history share one `Account` object, so this composes once per distinct
    history rather than once per firm: a round that charges a thousand firms the same event costs
    about as much as charging one.
    """
    composed: dict[int, Account] = {}
    out: dict[str, Account] = {}
    for firm in firm_ids:
        before = accounts.get(firm, empty)
        after = composed.get(id(before))
        if after is None:
            after = composed[id(before)] = before.compose(event)
        out[firm] = after
    return out


def max_epsilon(accounts: Iterable[Account], delta: float) -> float:
    """The largest epsilon at `delta` among `accounts` (0 if none), evaluating each distinct account once."""
    distinct = {id(account): account for account in accounts}
    return max((account.epsilon(delta) for account in distinct.values()), default=0.0)
