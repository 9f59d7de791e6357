"""Which slot of a secure sum each group of firms writes into, as the server assigns it and a firm checks it.

The server sees every slot's sum, so a slot must never hold fewer than the minimum number of firms
(one firm's own figures, or two firms that can subtract their own). Test statistics (small/large)
and efficiency sums (tiers) share this one mechanism: the server picks the slots from the public
manifests and sends them with the firms' counts; a firm releases nothing into a slot, and next to
any other listed slot, said to hold fewer firms than its own spec's minimum.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from silobridge.errors import ProtocolError


@dataclass(frozen=True)
class SlotAssignment:
    """`slots`: group -> slot (a group absent releases nothing); `counts`: slot -> firms the server counted."""

    slots: dict[str, str]
    counts: dict[str, int]

    def to_config(self, prefix: str = "") -> dict[str, int | str]:
        """Flat values for a ConfigRecord."""
        return {
            **{f"{prefix}slot.{group}": slot for group, slot in self.slots.items()},
            **{f"{prefix}count.{slot}": count for slot, count in self.counts.items()},
        }

    @staticmethod
    def parse(
        values: Mapping[str, object],
        *,
        groups: Collection[str],
        slot_names: Collection[str],
        what: str,
        prefix: str = "",
        firm: str | None = None,
    ) -> tuple[dict[str, str], dict[str, int]]:
        """Read `to_config`'s values (those under `prefix`); anything else under it is a malformed request."""
        slots: dict[str, str] = {}
        counts: dict[str, int] = {}
        for key, value in values.items():
            if not key.startswith(prefix):
                continue
            field, _, name = key[len(prefix) :].partition(".")
            if field == "slot" and name in groups and isinstance(value, str) and value in slot_names:
                slots[name] = value
            elif field == "count" and name in slot_names and type(value) is int and value >= 0:
                counts[name] = value
            else:
                raise ProtocolError(f"malformed {what} grouping: field '{key}' is {value!r}", firm=firm)
        return slots, counts

    def checked_slot(self, group: str, minimum: int, *, firm: str, what: str) -> str | None:
        """The slot `group` writes into, None if it releases nothing. Refused: a slot of fewer than `minimum`
        firms, or any other non-empty slot of fewer (the total would expose it as a complement)."""
        if group not in self.slots:
            return None
        slot = self.slots[group]
        for name in sorted({slot, *self.counts}):
            count = self.counts.get(name, 0)
            if (name == slot or count > 0) and count < minimum:
                raise ProtocolError(
                    f"the server put '{group}' in {what} slot '{slot}' where slot '{name}' holds {count} firm(s); "
                    f"a firm releases {what} only into sums whose slots hold at least {minimum} firms",
                    firm=firm,
                )
        return slot
