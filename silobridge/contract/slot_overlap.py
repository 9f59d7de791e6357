"""Whether several slotted releases of the same per-firm quantity, combined, isolate one firm.

Demand test statistics are summed by firm group (small / large) and efficiency sums by tier; both
carry the firms' forecast-error totals (sum |forecast - actual| and sum actual over the same held-out
forecasts). Each release alone keeps every slot at the minimum number of firms, but the server sees
every slot's sum of both, and a firm's own total is recoverable whenever its indicator vector lies in
the span of the slots' indicators (for two partitions: when its (group, tier) cell is that firm alone
and the cell is a bridge of the group-tier graph, e.g. large = tier Y + {X3} gives X3 = large - Y).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def isolated_members(partitions: Sequence[Mapping[str, str | None]]) -> list[str]:
    """Members whose own value follows from the slot sums of all `partitions` (member -> slot, None: not
    released), each released sum being the sum over a slot's members of the same per-member quantity."""
    members = sorted({m for partition in partitions for m in partition})
    index = {m: i for i, m in enumerate(members)}
    rows = []
    for partition in partitions:
        for slot in sorted({s for s in partition.values() if s is not None}):
            row = np.zeros(len(members))
            row[[index[m] for m, s in partition.items() if s == slot]] = 1.0
            rows.append(row)
    if not rows:
        return []
    sums = np.array(rows)
    isolated = []
    for member, i in index.items():
        target = np.zeros(len(members))
        target[i] = 1.0
        weights, *_ = np.linalg.lstsq(sums.T, target, rcond=None)
        if np.allclose(sums.T @ weights, target, atol=1e-9):
            isolated.append(member)
    return isolated
