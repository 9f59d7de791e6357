"""A firm's own count of what its record-level DP-SGD has spent in a run.

The coordinator's ledger decides who takes part in a round, and an auditor checks that ledger; but a
firm that declared its own budget should not have to trust the coordinator to honour it. Under
`record` the firm knows everything its spend depends on (the federation file's noise multiplier,
sampling rate and local epochs, and the rounds it trained), so it accounts them itself with the same
accountant and refuses a round that would take any of its data sets past its own epsilon. An honest
coordinator never asks for such a round: it charges the same events (and possibly more).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import dp_accounting as dpa
from dp_accounting import NeighboringRelation

from silobridge.contract.config import PrivacySpec
from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.dp import (
    AccountantKind,
    AccountingSpec,
    PrivacyUnit,
    dpsgd_event,
    epsilon,
    poisson_steps_per_epoch,
)
from silobridge.privacy.odometer import Odometer


def round_event(privacy: PrivacySpec) -> dpa.DpEvent:
    """One round of DP-SGD on one of the firm's data sets, as the firm itself runs it."""
    if privacy.noise_multiplier is None:
        raise ConfigError("record-level DP needs a calibrated noise multiplier", field="privacy.noise_multiplier")
    steps = privacy.local_epochs * poisson_steps_per_epoch(privacy.sample_rate)
    return dpsgd_event(privacy.noise_multiplier, privacy.sample_rate, steps)


def own_epsilon(privacy: PrivacySpec, rounds: int) -> float:
    """Epsilon (at the run's delta) of `rounds` rounds of DP-SGD on one data set, by the run's accountant.

    Composed round by round, as the coordinator's ledger composes them, so both sides agree to the last bit.
    """
    if rounds <= 0:
        return 0.0
    return _epsilon(round_event(privacy), privacy.accountant, privacy.delta, rounds)


@functools.lru_cache(maxsize=256)
def _epsilon(event: dpa.DpEvent, kind: str, delta: float, rounds: int) -> float:
    """Cached: the train handler asks for the same few values every round."""
    spec = AccountingSpec(
        kind=AccountantKind(kind), relation=NeighboringRelation.ADD_OR_REMOVE_ONE, unit=PrivacyUnit.RECORD
    )
    return epsilon([event] * rounds, delta, spec)


def check_round(
    privacy: PrivacySpec,
    budget_epsilon: float | None,
    trained: Mapping[str, int],
    kinds: list[str],
    *,
    firm: str,
    stage: str,
) -> None:
    """Refuse (before training) a round that would take one of `kinds` past the firm's own budget.

    `trained` counts the rounds each data set has already released in this run. Nothing to check
    without an own budget or outside record-level DP (firm-level spend depends on the coordinator's
    secret sample and on how many firms add noise, which a firm cannot see).
    """
    if budget_epsilon is None or not privacy.enabled or privacy.unit != "record":
        return
    for kind in kinds:
        done = int(trained.get(kind, 0))
        after = own_epsilon(privacy, done + 1)
        if after > budget_epsilon:
            raise ProtocolError(
                f"refused: one more round would take this firm's {kind} data to epsilon {after:.4g} (spent "
                f"{own_epsilon(privacy, done):.4g} in {done} rounds), over its own budget {budget_epsilon:g} "
                f"at delta {privacy.delta:g}",
                firm=firm,
                stage=stage,
            )


OWN_LINEAR_SPEND = "silobridge.own_linear_spend"
"""Node state (per Flower run): how many linear-family releases the firm made on each data set."""


def check_release(
    privacy: PrivacySpec,
    budget_epsilon: float | None,
    spent: Sequence[dpa.DpEvent],
    event: dpa.DpEvent,
    *,
    dataset: str,
    firm: str,
    stage: str,
) -> None:
    """Refuse (before computing anything) a release of `event` on `dataset` that would take it past the firm's
    own per-run budget, `spent` being the events this run already released on it (rounds and releases alike).

    As for rounds: nothing to check without an own budget or outside record-level DP. The firm derives every
    event from the federation's spec, and composes them with the run's accountant, as the ledger does.
    """
    if budget_epsilon is None or not privacy.enabled or privacy.unit != "record":
        return
    spec = AccountingSpec(
        kind=AccountantKind(privacy.accountant), relation=NeighboringRelation.ADD_OR_REMOVE_ONE, unit=PrivacyUnit.RECORD
    )
    after = epsilon([*spent, event], privacy.delta, spec)
    if after > budget_epsilon:
        before = epsilon(list(spent), privacy.delta, spec) if spent else 0.0
        raise ProtocolError(
            f"refused: {stage} would take this firm's {dataset} data to epsilon {after:.4g} (spent {before:.4g} in "
            f"{len(spent)} releases of this run), over its own budget {budget_epsilon:g} at delta {privacy.delta:g}",
            firm=firm,
            stage=stage,
        )


def run_events(privacy: PrivacySpec, rounds: int, releases: int, release: dpa.DpEvent) -> list[dpa.DpEvent]:
    """What a run has released on one data set, from a node's own counts: `rounds` DP-SGD rounds, then
    `releases` linear-family releases of `release`."""
    return [*([round_event(privacy)] * rounds if rounds > 0 else []), *([release] * releases)]


def already_charged(odometer: Odometer, privacy: PrivacySpec, kinds: list[str], run_id: str, release_id: str) -> bool:
    """Whether the odometer holds this training round already, charged to each of `kinds` (a redone round)."""
    if not privacy.enabled or privacy.unit != "record" or not kinds:
        return False
    return odometer.holds(sorted(kinds), round_event(privacy), run_id=run_id, release_id=release_id)


def charge_lifetime(
    odometer: Odometer,
    privacy: PrivacySpec,
    kinds: list[str],
    *,
    run_id: str,
    release_id: str,
    firm: str,
    repeatable: bool = False,
) -> None:
    """Charge one training round (DP-SGD on each of `kinds`) to the firm's lifetime odometer before it releases
    anything; see `charge_release`."""
    if not privacy.enabled or not kinds:
        return
    event = round_event(privacy)
    charge_release(
        odometer, privacy.unit, kinds, event, run_id=run_id, release_id=release_id, firm=firm, repeatable=repeatable
    )


def charge_release(
    odometer: Odometer,
    unit: str,
    datasets: list[str],
    event: dpa.DpEvent,
    *,
    run_id: str,
    release_id: str,
    firm: str,
    repeatable: bool = False,
) -> None:
    """Charge one record-level release of `event` on each of `datasets` to the lifetime odometer.

    Refuses (BudgetExhausted, charging nothing) a release that would take one of them past the lifetime
    budget, whichever run asks. The firm computes `event` itself from the federation's spec, never from a
    figure the coordinator sends. A firm-level spend depends on what only the coordinator knows (its noise
    and sample of firms), so a node that keeps an odometer takes no part in one. `repeatable`: the release is
    the same bits whenever it is asked again under `release_id` (the firm's own noise seed fixes its noise and
    rounding, and the id names what it is computed from), so a repeat already charged is not charged again.
    """
    if unit != "record":
        raise ProtocolError(
            "refused: this node keeps a lifetime privacy odometer, which counts record-level releases only; "
            "it cannot account a firm-level release's spend itself",
            firm=firm,
            stage=release_id,
        )
    odometer.charge(sorted(datasets), event, run_id=run_id, release_id=release_id, repeatable=repeatable)
