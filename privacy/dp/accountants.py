"""dp-accounting's accountants, extended through their documented hook (`_maybe_compose`).

- `SkellamRdpAccountant`: dp-accounting's `RdpAccountant` that also accepts our `SkellamDpEvent`
  (plain, or inside Composed/SelfComposed events). Everything else is left to the parent class.
- `PldAccountantView`: dp-accounting's `PLDAccountant` that exposes the composed privacy loss
  distribution, so one event's PLD can be built once and composed incrementally.

Both read or write attributes that dp-accounting keeps on the instance (`_rdp`, `_pld`,
`_contains_non_dp_event`); dp-accounting is pinned in constraints.txt and
tests/privacy/test_dp_accountants.py checks that these subclasses agree with the originals.
"""

from __future__ import annotations

import dp_accounting as dpa
from dp_accounting import NeighboringRelation
from dp_accounting.pld import PLDAccountant, privacy_loss_distribution
from dp_accounting.rdp import RdpAccountant

from silobridge.privacy.dp.events import SkellamDpEvent
from silobridge.privacy.dp.skellam import skellam_rdp

_SKELLAM_RELATIONS = (NeighboringRelation.REPLACE_SPECIAL, NeighboringRelation.REPLACE_ONE)


class SkellamRdpAccountant(RdpAccountant):
    """RDP accountant that also composes `SkellamDpEvent`s.

    A Skellam event is accepted under REPLACE_SPECIAL (one firm's update replaced by zero, its noise
    share still present) and REPLACE_ONE, the relations under which the set of noise shares is the
    same on both sides; under add/remove the departing firm would take its share with it, which the
    Skellam theorem does not cover. No amplification by sampling is claimed for it.
    """

    def _maybe_compose(
        self, event: dpa.DpEvent, count: int, do_compose: bool
    ) -> RdpAccountant.CompositionErrorDetails | None:
        if not isinstance(event, SkellamDpEvent):
            # The parent recurses into Composed/SelfComposed through self._maybe_compose, so nested
            # Skellam events come back here.
            return super()._maybe_compose(event, count, do_compose)
        if self.neighboring_relation not in _SKELLAM_RELATIONS:
            return RdpAccountant.CompositionErrorDetails(
                invalid_event=event,
                error_message=(
                    "SkellamDpEvent is accountable under REPLACE_SPECIAL or REPLACE_ONE only, "
                    f"found {self.neighboring_relation.name}"
                ),
            )
        if do_compose:
            self._rdp += count * skellam_rdp(self._orders, event.variance, event.l1_sensitivity, event.l2_sensitivity)
        return None


class PldAccountantView(PLDAccountant):
    """PLD accountant whose composed distribution can be read (and so composed further elsewhere)."""

    @property
    def pld(self) -> privacy_loss_distribution.PrivacyLossDistribution:
        """The privacy loss distribution of everything composed so far."""
        return self._pld

    @property
    def contains_non_private(self) -> bool:
        """Whether a `NonPrivateDpEvent` (or a zero-noise mechanism) was composed: epsilon is infinite."""
        return self._contains_non_dp_event
