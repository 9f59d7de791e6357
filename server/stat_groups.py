"""Which firm groups' test statistics a run without DP may release, decided from the public manifests.

The server sees every slot's sum of the firms' test statistics, so a slot of one or two firms is
their own figures, and so is a group whose complement in 'all' holds one or two. Mirroring the
efficiency grouping (server/efficiency.py): small and large are released separately only if both
hold at least the minimum number of firms; otherwise all holders share one pooled slot and only
'all' is released; below the minimum in all, nothing is.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from silobridge.contract.stats import GROUPS, POOLED, StatGroups


@dataclass(frozen=True)
class StatGrouping:
    """One model's slot assignment and, when small and large are not released on their own, why."""

    assignment: StatGroups
    withheld: str | None


def group_statistics(groups: Iterable[str], minimum: int) -> StatGrouping:
    """Assign statistics slots from the groups of the firms that hold one model's data (one entry per firm)."""
    counts = Counter(groups)
    unknown = sorted(set(counts) - set(GROUPS))
    if unknown:
        raise ValueError(f"unknown firm group(s) {unknown} (expected {', '.join(GROUPS)})")
    total = sum(counts.values())
    described = ", ".join(f"{counts[g]} {g}" for g in GROUPS)
    if total < minimum:
        reason = f"{total} firm(s) hold this model's data, fewer than the minimum {minimum}: no statistics released"
        return StatGrouping(StatGroups({}, {}), reason)
    if all(counts[g] >= minimum for g in GROUPS):
        return StatGrouping(StatGroups({g: g for g in GROUPS}, {g: counts[g] for g in GROUPS}), None)
    reason = f"groups of fewer than {minimum} firms are not released ({described}): only 'all' is"
    return StatGrouping(StatGroups({g: POOLED for g in GROUPS if counts[g]}, {POOLED: total}), reason)
