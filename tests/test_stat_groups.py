"""Test-statistics slots without DP: small and large are released on their own only when both hold
at least the minimum number of firms; otherwise one pooled slot and only 'all'."""

from __future__ import annotations

import numpy as np
import pytest

from silobridge.contract.stats import POOLED, DemandErrorStats, StatGroups, slot_by_group, split_slots
from silobridge.errors import ProtocolError
from silobridge.scenarios.schema import load_scenario
from silobridge.server.stat_groups import group_statistics
from tests.conftest import DEFAULT, LARGE, ROOT, TINY

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"


def _groups(path) -> list[str]:
    scenario = load_scenario(path)
    return [scenario.group_of(f.id) for f in scenario.firms]


def test_trio_and_tiny_release_only_all() -> None:
    trio = group_statistics(_groups(TRIO), 3)
    assert sorted(_groups(TRIO)) == ["large", "small", "small"]
    assert trio.assignment == StatGroups({"small": POOLED, "large": POOLED}, {POOLED: 3})
    assert trio.assignment.released == ()
    assert "1 large" in trio.withheld and "only 'all'" in trio.withheld
    tiny = group_statistics(_groups(TINY), 3)
    assert sorted(_groups(TINY)).count("large") == 2
    assert tiny.assignment == StatGroups({"small": POOLED, "large": POOLED}, {POOLED: 5})
    assert tiny.assignment.released == ()


def test_default_and_large_keep_small_and_large() -> None:
    default = group_statistics(_groups(DEFAULT), 3)
    assert default.withheld is None
    assert default.assignment == StatGroups({"small": "small", "large": "large"}, {"small": 7, "large": 5})
    assert default.assignment.released == ("small", "large")
    large = group_statistics(_groups(LARGE), 3)
    assert large.withheld is None and large.assignment.released == ("small", "large")


def test_too_few_holders_release_nothing_and_unknown_groups_are_refused() -> None:
    two = group_statistics(["small", "large"], 3)
    assert two.assignment == StatGroups({}, {}) and "fewer than the minimum 3" in two.withheld
    assert two.assignment.slot_for("small", 3, firm="S1") is None
    one_group = group_statistics(["small"] * 4, 3)  # no large firm: 'all' is the small group, pooled
    assert one_group.assignment == StatGroups({"small": POOLED}, {POOLED: 4})
    with pytest.raises(ValueError, match="unknown firm group"):
        group_statistics(["medium"], 3)


def test_assignment_round_trips_per_model_and_rejects_malformed_fields() -> None:
    demand = StatGroups({"small": "small", "large": "large"}, {"small": 4, "large": 3})
    risk = StatGroups({"small": POOLED, "large": POOLED}, {POOLED: 5})
    values = {**demand.to_config("demand"), **risk.to_config("risk")}
    assert StatGroups.from_config(values, "demand") == demand
    assert StatGroups.from_config(values, "risk") == risk
    with pytest.raises(ProtocolError, match="firm 'S1'.*malformed statistics grouping: field 'demand.slot.small'"):
        StatGroups.from_config({"demand.slot.small": "medium"}, "demand", firm="S1")
    with pytest.raises(ProtocolError, match="malformed statistics grouping"):
        StatGroups.from_config({"risk.count.pooled": -1}, "risk")


def test_a_firm_refuses_slots_of_too_few_firms() -> None:
    # Its own group too small (R1 alone in 'large'), or its complement too small (two small firms).
    alone = StatGroups({"small": "small", "large": "large"}, {"small": 3, "large": 1})
    with pytest.raises(ProtocolError, match="firm 'R1'.*slot 'large' holds 1 firm"):
        alone.slot_for("large", 3, firm="R1")
    with pytest.raises(ProtocolError, match="firm 'S1'.*slot 'large' holds 1 firm"):
        alone.slot_for("small", 3, firm="S1")
    with pytest.raises(ProtocolError, match="firm 'S1'.*slot 'pooled' holds 2 firm"):
        StatGroups({"small": POOLED, "large": POOLED}, {POOLED: 2}).slot_for("small", 3, firm="S1")
    assert StatGroups({"small": POOLED}, {POOLED: 3}).slot_for("small", 3, firm="S1") == POOLED


def test_pooled_sum_leaves_the_group_slots_zero() -> None:
    stats = [DemandErrorStats(float(i), 10.0 * i, 2.0) for i in range(1, 6)]
    total = sum(slot_by_group(s.to_vector(), POOLED) for s in stats)
    slots = split_slots(total)
    np.testing.assert_array_equal(slots["small"], 0.0)
    np.testing.assert_array_equal(slots["large"], 0.0)
    np.testing.assert_array_equal(slots[POOLED], [15.0, 150.0, 10.0])
