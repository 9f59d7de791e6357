"""Issue 18, item 4: demand statistics by small/large group and efficiency sums by tier, combined.

Both carry the same forecast-error totals per firm; the server sees every slot's sum of both. The
check is linear algebra on the real slot assignments (`server.stat_groups.group_statistics`,
`server.efficiency.group_tiers`): a firm is exposed when its indicator lies in the span of the slots'.
"""

from __future__ import annotations

import numpy as np

from silobridge.contract.slot_overlap import isolated_members
from silobridge.scenarios.schema import load_scenario
from silobridge.server.efficiency import group_tiers
from silobridge.server.stat_groups import group_statistics


def _slots(groups: dict[str, str], tiers: dict[str, str], minimum: int) -> list[dict[str, str | None]]:
    firms = sorted(groups)
    stat = group_statistics([groups[f] for f in firms], minimum).assignment
    eff = group_tiers([tiers[f] for f in firms], minimum).assignment
    return [
        {f: stat.slots.get(groups[f]) for f in firms},
        {f: eff.slots.get(tiers[f]) for f in firms},
    ]


def test_a_chain_composition_where_combining_the_two_releases_isolates_a_firm() -> None:
    """Minimum 2: small = {D1, D2}, large = {D3, M1, M2}; tiers distributor = {D1, D2, D3}, manufacturer = {M1, M2}.
    Every slot of each release holds >= 2 firms, yet large - manufacturer = D3 alone."""
    groups = {"D1": "small", "D2": "small", "D3": "large", "M1": "large", "M2": "large"}
    tiers = {"D1": "distributor", "D2": "distributor", "D3": "distributor", "M1": "manufacturer", "M2": "manufacturer"}
    partitions = _slots(groups, tiers, minimum=2)
    assert all(list(p.values()).count(s) >= 2 for p in partitions for s in set(p.values()))  # each alone is fine
    assert isolated_members(partitions) == ["D3"]
    rng = np.random.default_rng(0)
    error = {f: float(rng.uniform(10, 100)) for f in groups}  # each firm's sum |forecast - actual|
    large = sum(error[f] for f in groups if groups[f] == "large")
    manufacturer = sum(error[f] for f in tiers if tiers[f] == "manufacturer")
    assert np.isclose(large - manufacturer, error["D3"])


def test_when_the_cells_form_a_cycle_no_firm_is_isolated() -> None:
    groups = {"D1": "small", "D2": "large", "D3": "large", "M1": "small", "M2": "large"}
    tiers = {"D1": "distributor", "D2": "distributor", "D3": "distributor", "M1": "manufacturer", "M2": "manufacturer"}
    assert isolated_members(_slots(groups, tiers, minimum=2)) == []


def test_the_default_scenario_isolates_no_firm() -> None:
    scenario = load_scenario("scenarios/default.toml")
    groups = {f.id: scenario.group_of(f.id) for f in scenario.firms}  # every firm of it holds demand data
    tiers = {f.id: f.tier for f in scenario.firms}
    assert isolated_members(_slots(groups, tiers, minimum=scenario.efficiency.min_firms_per_group)) == []
