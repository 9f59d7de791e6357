"""Which firm groups' test statistics a run without DP may release, decided from the public manifests.

The server sees every slot's sum of the firms' test statistics, so a slot of one or two firms is
their own figures, and so is a group whose complement in 'all' holds one or two. Mirroring the
efficiency grouping (server/efficiency.py): small and large are released separately only if both
hold at least the minimum number of firms; otherwise all holders share one pooled slot and only
'all' is released; below the minimum in all, nothing is.

The demand statistics carry the same forecast-error totals as the efficiency sums by tier, and the
server sees both: each alone keeps its slots at the minimum, yet together they can isolate a firm
(large minus a tier). `group_statistics_beside` checks the combination and pools small and large
(only 'all', which the tiers already sum to) when it would, or releases nothing if even that would.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from silobridge.contract.slot_overlap import isolated_members
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


def group_statistics_beside(
    groups: Mapping[str, str], overlapping: Sequence[Mapping[str, str | None]], minimum: int
) -> StatGrouping:
    """The statistics slots of one model's holders (firm -> group) that, with the other releases of the
    same per-firm totals (`overlapping`: firm -> slot, None when not in any), isolate no firm."""
    firms = sorted(groups)
    grouping = group_statistics([groups[f] for f in firms], minimum)

    def exposed(assignment: StatGroups) -> list[str]:
        own = {f: assignment.slots.get(groups[f]) for f in firms}
        return isolated_members([own, *overlapping])

    isolated = exposed(grouping.assignment)
    if not isolated:
        return grouping
    why = f"small and large combined with the efficiency sums by tier would isolate {', '.join(isolated)}"
    counts = Counter(groups.values())
    pooled = StatGroups({g: POOLED for g in GROUPS if counts[g]}, {POOLED: len(firms)})
    if not exposed(pooled):
        return StatGrouping(pooled, f"{why}: only 'all' is released")
    return StatGrouping(StatGroups({}, {}), f"{why}, and so would 'all': no statistics released")
