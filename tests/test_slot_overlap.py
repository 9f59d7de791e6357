"""Issue 18, item 4: demand statistics by small/large group and efficiency sums by tier, combined.

Both carry the same forecast-error totals per firm; the server sees every slot's sum of both. The
check is linear algebra on the real slot assignments (`server.stat_groups.group_statistics`,
`server.efficiency.group_tiers`): a firm is exposed when its indicator lies in the span of the slots'.
"""

from __future__ import annotations

import itertools

import numpy as np

from silobridge.contract.slot_overlap import isolated_members
from silobridge.scenarios.schema import load_scenario
from silobridge.server.efficiency import group_tiers
from silobridge.server.stat_groups import group_statistics, group_statistics_beside


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


def _run_slots(groups: dict[str, str], tiers: dict[str, str], minimum: int) -> list[dict[str, str | None]]:
    """The slots a run assigns (as `Federation.connect` does): the demand statistics chosen beside the
    efficiency sums that carry the same forecast-error totals."""
    firms = sorted(groups)
    eff = group_tiers([tiers[f] for f in firms], minimum).assignment
    efficiency = {f: eff.slots.get(tiers[f]) for f in firms}
    stat = group_statistics_beside(groups, [efficiency], minimum).assignment
    return [{f: stat.slots.get(groups[f]) for f in firms}, efficiency]


def test_the_run_closes_the_leak_of_the_composition_that_isolates_a_firm() -> None:
    groups = {"D1": "small", "D2": "small", "D3": "large", "M1": "large", "M2": "large"}
    tiers = {"D1": "distributor", "D2": "distributor", "D3": "distributor", "M1": "manufacturer", "M2": "manufacturer"}
    assert isolated_members(_run_slots(groups, tiers, minimum=2)) == []
    grouping = group_statistics_beside(groups, [{f: tiers[f] for f in groups}], 2)
    assert grouping.assignment.released == ()  # small and large pooled: only 'all'
    assert grouping.withheld is not None and "D3" in grouping.withheld


def test_no_chain_composition_of_five_firms_isolates_a_firm() -> None:
    """Every assignment of groups and of two tiers to 5 firms (the first firm a distributor), minimum 2."""
    for size in (5,):
        firms = [f"F{i}" for i in range(size)]
        for code in itertools.product(range(2), repeat=size):
            groups = {f: ("small", "large")[c] for f, c in zip(firms, code, strict=True)}
            for tier_code in itertools.product(range(2), repeat=size - 1):
                tiers = {f: ("distributor", "manufacturer")[t] for f, t in zip(firms, (0, *tier_code), strict=True)}
                assert isolated_members(_run_slots(groups, tiers, 2)) == [], (groups, tiers)


def test_the_default_scenario_keeps_small_and_large() -> None:
    scenario = load_scenario("scenarios/default.toml")
    groups = {f.id: scenario.group_of(f.id) for f in scenario.firms}
    tiers = {f.id: f.tier for f in scenario.firms}
    minimum = scenario.efficiency.min_firms_per_group
    eff = group_tiers([tiers[f] for f in sorted(groups)], minimum).assignment
    grouping = group_statistics_beside(groups, [{f: eff.slots.get(t) for f, t in tiers.items()}], minimum)
    assert grouping.assignment.released == ("small", "large")
    assert grouping.withheld is None


def test_at_the_real_minimum_of_three_the_leak_exists_and_the_run_closes_it() -> None:
    """small = {D1, D2, D3}, large = {D4, M1, M2, M3}; tiers distributor = D1-D4, manufacturer = M1-M3."""
    groups = {f: "small" for f in ("D1", "D2", "D3")} | {f: "large" for f in ("D4", "M1", "M2", "M3")}
    tiers = {f: "distributor" if f.startswith("D") else "manufacturer" for f in groups}
    assert isolated_members(_slots(groups, tiers, minimum=3)) == ["D4"]
    assert isolated_members(_run_slots(groups, tiers, minimum=3)) == []
