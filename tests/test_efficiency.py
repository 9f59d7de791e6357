"""Cross-firm efficiency: the seed's worked example, hand-worked inventory cases, and group values from sums.

The inventory cases are small enough to follow period by period in the comments; the group values
must come out of a secure sum exactly as they do from the firms' own numerators pooled.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from silobridge.clients.data import firm_data_from_tables
from silobridge.clients.firm import FirmClient
from silobridge.clients.inventory import (
    SeriesHorizon,
    forecast_error_std,
    forecast_sums,
    order_up_to_level,
    safety_factor,
    simulate_series,
)
from silobridge.clients.models import build_model, load_arrays, state_to_arrays
from silobridge.clients.training import FitSettings, fit
from silobridge.contract.config import AggregationSpec, EfficiencySpec, FederationSpec
from silobridge.contract.efficiency_sums import (
    EFFICIENCY_AFTER,
    OTHER,
    EfficiencyGroups,
    EfficiencySums,
    slot_by_tier,
    split_tiers,
)
from silobridge.contract.optimiser import OptimiserSpec
from silobridge.errors import ConfigError, DataError, ProtocolError
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.scenarios.schema import scenario_from_dict
from silobridge.server.efficiency import (
    Efficiency,
    Improvement,
    apply_improvement,
    efficiency_table,
    group_tiers,
    improvement,
)
from silobridge.server.layouts import evaluation_layout
from silobridge.server.secure_sum import resolve_aggregation
from tests.test_secure_sum import _Federation

# -- the seed document's worked example ---------------------------------------------------------------


def test_worked_example_gives_tfp_12_3552() -> None:
    before = Efficiency(E=10.0, O=0.8, I=0.9)
    rates = Improvement(K_E=1.1, K_O=1.2, K_I=1.3)
    after = apply_improvement(before, rates)
    assert after.E == pytest.approx(11.0, rel=1e-15)
    assert after.O == pytest.approx(0.96, rel=1e-15)
    assert after.I == pytest.approx(1.17, rel=1e-15)
    assert after.tfp == pytest.approx(12.3552, rel=1e-14)
    assert abs(after.tfp - 11.5208) > 0.8  # the seed document's arithmetic slip
    assert before.tfp == pytest.approx(7.2, rel=1e-15)
    assert rates.K_TFP == pytest.approx(after.tfp / before.tfp, rel=1e-14)


def test_improvement_rates_invert_the_worked_example() -> None:
    before = Efficiency(E=10.0, O=0.8, I=0.9)
    recovered = improvement(before, Efficiency(E=11.0, O=0.96, I=1.17))
    assert recovered.K_E == pytest.approx(1.1, rel=1e-15)
    assert recovered.K_O == pytest.approx(1.2, rel=1e-15)
    assert recovered.K_I == pytest.approx(1.3, rel=1e-15)
    assert recovered.K_TFP == pytest.approx(1.716, rel=1e-14)


def test_efficiency_is_a_ratio_of_sums_with_skill_clipped() -> None:
    sums = EfficiencySums(
        served=90, on_time=80, demand=100, holding_cost=20, shortage_cost=15, order_cost=10, abs_error=30, actual=120
    )
    value = Efficiency.from_sums(sums)
    assert value.E == 2.0 and value.O == 0.8 and value.I == 0.75
    assert value.tfp == pytest.approx(1.2)
    worse_than_nothing = Efficiency.from_sums(EfficiencySums(abs_error=130, actual=120))
    assert worse_than_nothing.I == 0.0
    assert math.isnan(worse_than_nothing.E) and math.isnan(worse_than_nothing.O)
    assert math.isnan(Efficiency.from_sums(EfficiencySums()).I)


# -- the inventory simulation, by hand ----------------------------------------------------------------

POLICY = EfficiencySpec(
    review_period=1, lead_time=1, service_level=0.95, holding_cost=1.0, shortage_cost=4.0, order_cost=10.0
)


def test_steady_demand_perfect_forecast() -> None:
    # Level 20 (two periods of 10). k=0: 20 on hand, no order, 10 left (holding 10). k=1: order 10 (arrives
    # k=2), serve the last 10, 0 left. k=2 and k=3: order 10, receive 10, serve 10. Three orders.
    out = simulate_series(SeriesHorizon(np.full(4, 10.0), np.full((4, 2), 10.0), 0.0), POLICY)
    assert out == EfficiencySums(served=40, on_time=40, demand=40, holding_cost=10, shortage_cost=0, order_cost=30)
    assert Efficiency.from_sums(out).E == 1.0 and Efficiency.from_sums(out).O == 1.0


def test_a_demand_spike_is_backordered_and_served_late() -> None:
    # k=0: 20 on hand, serve 10, hold 10. k=1: position 10 -> order 10; serve 10 of 30, backlog 20
    # (shortage 80). k=2: position 0 + 10 - 20 = -10 -> order 30; 10 arrive and go to the backlog (10 late),
    # the period's 10 wait: backlog 20 (shortage 80). Served 30 of 50, 20 on time; two orders.
    out = simulate_series(SeriesHorizon(np.array([10.0, 30.0, 10.0]), np.full((3, 2), 10.0), 0.0), POLICY)
    assert out == EfficiencySums(served=30, on_time=20, demand=50, holding_cost=10, shortage_cost=160, order_cost=20)
    value = Efficiency.from_sums(out)
    assert value.E == pytest.approx(30 / 190) and value.O == pytest.approx(0.4)


def test_review_every_second_period_without_lead_time() -> None:
    # Level = next two forecasts. k=0: 10 on hand, position 10 = level, no order; serve 5 (hold 5).
    # k=1 (no review): serve 5 of 7, backlog 2 (shortage 8). k=2: position -2, level 12 -> order 14, arrives
    # now; 2 late, 6 on time, hold 6. k=3 (no review): serve 4, hold 2. One order.
    policy = POLICY.model_copy(update={"review_period": 2, "lead_time": 0})
    forecasts = np.array([[5.0, 5.0], [6.0, 6.0], [6.0, 6.0], [5.0, 5.0]])
    out = simulate_series(SeriesHorizon(np.array([5.0, 7.0, 6.0, 4.0]), forecasts, 0.0), policy)
    assert out == EfficiencySums(served=22, on_time=20, demand=22, holding_cost=13, shortage_cost=8, order_cost=10)


def test_safety_stock_from_the_forecast_error() -> None:
    assert safety_factor(0.95) == pytest.approx(1.6448536269514722, rel=1e-12)
    level = order_up_to_level(np.array([10.0, 12.0, 99.0]), 2.0, POLICY)
    assert level == pytest.approx(22.0 + 1.6448536269514722 * 2.0 * math.sqrt(2.0), rel=1e-12)
    assert forecast_error_std(np.array([[1.0, 3.0]]), np.array([[2.0, 0.0]])) == pytest.approx(math.sqrt(5.0))
    with pytest.raises(ConfigError, match="must cover 2 periods"):
        order_up_to_level(np.array([10.0]), 0.0, POLICY)


def test_safety_stock_buys_fill_rate_with_holding() -> None:
    demand = np.array([10.0, 14.0, 8.0, 13.0, 9.0, 12.0])
    forecasts = np.full((6, 2), 10.0)
    lean = simulate_series(SeriesHorizon(demand, forecasts, 0.0), POLICY)
    safe = simulate_series(SeriesHorizon(demand, forecasts, 3.0), POLICY)
    assert safe.on_time > lean.on_time and safe.holding_cost > lean.holding_cost
    assert safe.demand == lean.demand == demand.sum()


def test_forecast_sums_and_bad_inputs() -> None:
    out = forecast_sums(np.array([[9.0, 12.0], [10.0, 10.0]]), np.array([[10.0, 10.0], [10.0, 10.0]]))
    assert out == EfficiencySums(abs_error=3.0, actual=40.0)
    with pytest.raises(DataError, match="firm 'F9': demand and sigma cannot be negative"):
        SeriesHorizon(np.array([-1.0]), np.zeros((1, 2)), 0.0, firm="F9")
    with pytest.raises(DataError, match="need demand"):
        SeriesHorizon(np.zeros(3), np.zeros((2, 2)), 0.0)
    assert simulate_series(SeriesHorizon(np.zeros(0), np.zeros((0, 2)), 0.0), POLICY) == EfficiencySums()


def test_scenario_rejects_an_order_no_forecast_covers(tiny_scenario) -> None:
    raw = tiny_scenario.model_dump(mode="json")
    raw["efficiency"] = {"lead_time": 3, "review_period": 2}
    with pytest.raises(ConfigError, match="lead_time \\+ review_period is 5"):
        scenario_from_dict(raw)


# -- group values from sums ---------------------------------------------------------------------------


def test_tier_slots_sum_to_the_chain() -> None:
    a = EfficiencySums(served=1, on_time=2, demand=3, holding_cost=4, shortage_cost=5, order_cost=6, abs_error=7)
    b = EfficiencySums(served=10, demand=30, actual=5)
    parts = split_tiers(slot_by_tier(a, "retailer") + slot_by_tier(b, "supplier") + slot_by_tier(b, "retailer"))
    assert parts["retailer"] == a + b and parts["supplier"] == b and parts["manufacturer"] == EfficiencySums()
    assert parts["chain"] == a + b + b
    assert split_tiers(slot_by_tier(a, OTHER))[OTHER] == a
    with pytest.raises(ProtocolError, match="unknown efficiency slot 'wholesaler'"):
        slot_by_tier(a, "wholesaler")


DEFAULT_TIERS = ["retailer"] * 5 + ["distributor"] * 3 + ["manufacturer"] * 2 + ["supplier"] * 2


def test_tiers_below_the_minimum_are_pooled() -> None:
    # The default scenario: 5 retailers and 3 distributors stand alone; 2 + 2 upstream firms pool into 4.
    grouping = group_tiers(DEFAULT_TIERS, 3)
    assert grouping.published == ("distributor", "retailer", OTHER)
    assert grouping.assignment.slots == {
        "retailer": "retailer",
        "distributor": "distributor",
        "manufacturer": OTHER,
        "supplier": OTHER,
    }
    assert grouping.assignment.counts == {"retailer": 5, "distributor": 3, OTHER: 4}
    described = grouping.describe()
    assert described["groups"][OTHER] == {"firms": 4, "tiers": ["supplier", "manufacturer"]}
    assert set(described["suppressed_tiers"]) == {"supplier", "manufacturer"}
    assert (
        "2 firm(s), fewer than the minimum 3; pooled into 'other tiers' (4 firms)"
        in (described["suppressed_tiers"]["supplier"])
    )
    # A stricter minimum: nothing stands alone but the retailers; the rest (7 firms) pool.
    assert group_tiers(DEFAULT_TIERS, 4).published == ("retailer", OTHER)


def test_a_pool_too_small_to_publish_takes_the_smallest_tier_with_it() -> None:
    # Chain minus the published tiers is the pool: a pool of one firm would be that firm's totals.
    grouping = group_tiers(["retailer"] * 5 + ["distributor"] * 3 + ["supplier"], 3)
    assert grouping.published == ("retailer", OTHER)
    assert grouping.assignment.counts == {"retailer": 5, OTHER: 4}
    assert "would expose the remaining tiers' 1 firm(s)" in grouping.suppressed["distributor"]
    # One firm per tier (the trio scenario): nothing but the chain.
    trio = group_tiers(["retailer", "distributor", "manufacturer"], 3)
    assert trio.published == () and trio.assignment.counts == {OTHER: 3}
    assert all("counted in the chain only" in why for why in trio.suppressed.values())
    # Fewer firms than the minimum in the whole chain: no slot at all, nothing released.
    pair = group_tiers(["retailer", "supplier"], 3)
    assert pair.assignment == EfficiencyGroups({}, {}) and pair.published == ()
    # Whatever the tiers, no published group and no pool has fewer than the minimum.
    rng = np.random.default_rng(0)
    tiers = ("supplier", "manufacturer", "distributor", "retailer")
    for _ in range(300):
        drawn = list(rng.choice(tiers, size=int(rng.integers(1, 15))))
        for minimum in (3, 4, 5):
            grouping = group_tiers(drawn, minimum)
            assert all(n >= minimum for n in grouping.assignment.counts.values()), (drawn, minimum)
            assert sum(grouping.assignment.counts.values()) == (len(drawn) if len(drawn) >= minimum else 0)


def test_minimum_group_size_is_never_below_three() -> None:
    assert EfficiencySpec().min_firms_per_group == 3
    with pytest.raises(ValueError, match="greater than or equal to 3"):
        EfficiencySpec(min_firms_per_group=2)


def test_a_firm_refuses_a_slot_said_to_hold_too_few_firms() -> None:
    groups = EfficiencyGroups({"retailer": "retailer", "supplier": OTHER}, {"retailer": 2, OTHER: 5})
    with pytest.raises(ProtocolError, match="firm 'R1'.*slot 'retailer' holds 2 firm\\(s\\)"):
        groups.slot_for("retailer", 3, firm="R1")
    # A sum with any slot too small is refused by every firm, not only by that slot's members: the
    # released sum would expose the retailers, and no firm takes part in such a release.
    with pytest.raises(ProtocolError, match="firm 'S1'.*slot 'other tiers' where slot 'retailer' holds 2"):
        groups.slot_for("supplier", 3, firm="S1")
    fine = EfficiencyGroups({"retailer": "retailer", "supplier": OTHER}, {"retailer": 3, OTHER: 5})
    assert fine.slot_for("supplier", 3, firm="S1") == OTHER and fine.slot_for("retailer", 3, firm="R1") == "retailer"
    assert groups.slot_for("manufacturer", 3, firm="M1") is None  # no slot: releases nothing
    assert EfficiencyGroups.from_config(groups.to_config()) == groups
    with pytest.raises(ProtocolError, match="firm 'R1': malformed efficiency grouping: field 'count.retailer'"):
        EfficiencyGroups.from_config({"slot.retailer": "retailer", "count.retailer": "many"}, firm="R1")
    with pytest.raises(ProtocolError, match="field 'slot.retailer'"):
        EfficiencyGroups.from_config({"slot.retailer": "wholesaler"}, firm="R1")


@pytest.fixture(scope="module")
def firms(tiny_chain, tiny_scenario) -> list[FirmClient]:
    spec = FederationSpec(
        data=GENERATED_SCHEMA, lags=8, horizon=4, test_start=tiny_scenario.test_start, test_periods=13, hidden=16
    )
    out = []
    for firm in tiny_scenario.firms:
        tables = tiny_chain.tables[firm.id]
        data = firm_data_from_tables(firm.id, tables.demand, tables.risk, spec.data, min_periods=spec.min_periods)
        out.append(FirmClient(data, group=tiny_scenario.group_of(firm.id), spec=spec, tier=firm.tier))
    return out


@pytest.fixture(scope="module")
def demand_weights(firms: list[FirmClient]) -> dict[str, np.ndarray]:
    """A demand model briefly trained on one firm, so that every firm's forecasts mean something."""
    model = build_model("demand", firms[0].spec, seed=0)
    train, _ = firms[0].demand_split
    sgd = OptimiserSpec(name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=0.0)
    settings = FitSettings(epochs=5, batch_size=32, optimiser=sgd, seed=0)
    fit(model, train.features, train.targets, loss="l1", settings=settings, device=torch.device("cpu"))
    return state_to_arrays(model)


def test_a_firms_forecast_totals_match_its_test_statistics(firms: list[FirmClient], demand_weights) -> None:
    from silobridge.clients.evaluation import demand_stats

    firm = firms[0]
    model = build_model("demand", firm.spec)
    load_arrays(model, demand_weights)
    sums = firm.efficiency_sums(model)
    stats = demand_stats(model, firm.demand_split[1], torch.device("cpu"))
    assert sums.abs_error == pytest.approx(stats.abs_error, rel=1e-9)
    assert sums.actual == pytest.approx(stats.actual, rel=1e-9)
    periods = firm.spec.test_periods - firm.spec.horizon + 1
    series = len(firm.demand_series)
    first_targets = firm.demand_split[1].actual[:, 0]
    assert len(first_targets) == periods * series
    assert sums.demand == pytest.approx(float(first_targets.astype(float).sum()), rel=1e-12)
    assert 0 < sums.on_time <= sums.served <= sums.demand
    assert sums.holding_cost > 0 and sums.order_cost > 0


def test_no_published_group_holds_fewer_than_the_minimum(firms: list[FirmClient], demand_weights) -> None:
    # The tiny chain: 2 retailers and one firm in each other tier. No tier reaches 3 firms, so every firm
    # is told the pooled slot, the server's sum holds nothing per tier, and only the chain is published.
    grouping = group_tiers([f.tier for f in firms], 3)
    assert grouping.published == () and grouping.assignment.counts == {OTHER: 5}
    vectors = {firm.firm_id: firm.efficiency(demand_weights, grouping.assignment) for firm in firms}
    agg = resolve_aggregation(AggregationSpec(), len(firms))
    layout = evaluation_layout(("demand",), agg)
    federation = _Federation([f.firm_id for f in firms], agg)
    result = federation.secure_sum(layout, {f: {EFFICIENCY_AFTER: v} for f, v in vectors.items()}, {})
    summed = result.segments[EFFICIENCY_AFTER]
    # Two words per statistic: the secure sum is the plain sum to float64 precision.
    np.testing.assert_allclose(summed, np.sum(list(vectors.values()), axis=0), rtol=1e-12, atol=1e-9)
    slots = split_tiers(summed)
    for tier in ("supplier", "manufacturer", "distributor", "retailer"):
        assert slots[tier] == EfficiencySums()  # S1's (or M1's, D1's) own totals are nowhere in the sum

    table = efficiency_table(summed, summed, grouping.published)
    assert table["tiers"] == {}
    per_firm = {}
    for firm in firms:
        model = build_model("demand", firm.spec)
        load_arrays(model, demand_weights)
        per_firm[firm.firm_id] = firm.efficiency_sums(model)
    pooled = EfficiencySums()
    for sums in per_firm.values():
        pooled = pooled + sums
    chain = table["chain"]["after"]
    assert chain["E"] == pytest.approx(pooled.served / pooled.operating_cost, rel=1e-12)
    assert chain["O"] == pytest.approx(pooled.on_time / pooled.demand, rel=1e-12)
    assert chain["I"] == pytest.approx(1 - pooled.abs_error / pooled.actual, rel=1e-12)
    assert table["chain"]["K"] == {"K_E": 1.0, "K_O": 1.0, "K_I": 1.0, "K_TFP": 1.0}
    # The chain is a ratio of sums, not a mean of the firms' ratios.
    mean_of_ratios = np.mean([s.served / s.operating_cost for s in per_firm.values()])
    assert chain["E"] != pytest.approx(mean_of_ratios, rel=1e-6)


def test_a_firm_checks_its_slot_against_its_own_minimum(firms: list[FirmClient], demand_weights) -> None:
    firm = firms[4]  # S1, the only supplier
    told_alone = EfficiencyGroups({"supplier": "supplier"}, {"supplier": 1})
    with pytest.raises(ProtocolError, match="firm 'S1'.*slot 'supplier' holds 1 firm"):
        firm.evaluate_all({"demand": demand_weights}, None, told_alone)
    strict = firm.spec.model_copy(update={"efficiency": EfficiencySpec(min_firms_per_group=4)})
    strict_firm = FirmClient(firm.data, group=firm.group, spec=strict, tier=firm.tier)
    with pytest.raises(ProtocolError, match="at least 4 firms"):
        strict_firm.efficiency(demand_weights, EfficiencyGroups({"supplier": OTHER}, {OTHER: 3}))
    assert firm.efficiency(demand_weights, EfficiencyGroups({}, {})) is None  # chain too small: nothing


def test_a_malformed_efficiency_request_is_an_error_reply_naming_the_firm(firms: list[FirmClient]) -> None:
    """The ClientApp's handlers turn only SiloBridgeErrors into error replies: these must be ones."""
    from types import SimpleNamespace

    from flwr.app import ConfigRecord

    from silobridge.contract.stats import POOLED, StatGroups
    from silobridge.errors import SiloBridgeError
    from silobridge.federation.client_app import Request, _baselines, _efficiency
    from silobridge.federation.records import EFFICIENCY_GROUPS, INSTRUCTION, STAT_GROUPS

    instruction = {
        "max_epochs": 1,
        "patience": 1,
        "batch_size": 8,
        "optimiser": "sgd",
        "learning_rate": 0.1,
        "momentum": 0.0,
        "weight_decay": 0.0,
        "seed": 0,
    }

    def request(configs: dict[str, dict], message_type: str) -> Request:
        content = SimpleNamespace(config_records={k: ConfigRecord(v) for k, v in configs.items()}, array_records={})
        message = SimpleNamespace(content=content, metadata=SimpleNamespace(message_type=message_type))
        return Request(firms[0], None, None, message)  # type: ignore[arg-type]

    pooled = StatGroups({"small": POOLED, "large": POOLED}, {POOLED: 5})
    stat_groups = {**pooled.to_config("demand"), **pooled.to_config("risk")}
    bad_groups = {
        INSTRUCTION: instruction,
        EFFICIENCY_GROUPS: {"slot.retailer": "retailer", "count.retailer": 2},
        STAT_GROUPS: stat_groups,
    }
    with pytest.raises(ProtocolError, match="firm 'R1'.*slot 'retailer' holds 2 firm") as refused:
        _baselines(request(bad_groups, "train.baselines"))
    assert isinstance(refused.value, SiloBridgeError)
    with pytest.raises(ProtocolError, match="message has no 'efficiency_groups' record"):
        _baselines(request({INSTRUCTION: instruction, STAT_GROUPS: stat_groups}, "train.baselines"))
    good_efficiency = {"slot.retailer": "retailer", "count.retailer": 3}
    with pytest.raises(ProtocolError, match="message has no 'stat_groups' record"):
        _baselines(request({INSTRUCTION: instruction, EFFICIENCY_GROUPS: good_efficiency}, "train.baselines"))
    # R1 told its 'large' slot holds one firm (itself): refused before anything is fitted.
    alone = StatGroups({"small": "small", "large": "large"}, {"small": 3, "large": 1})
    told_alone = {
        INSTRUCTION: instruction,
        EFFICIENCY_GROUPS: good_efficiency,
        STAT_GROUPS: {**stat_groups, **alone.to_config("demand")},
    }
    with pytest.raises(ProtocolError, match="firm 'R1'.*slot 'large' holds 1 firm"):
        _baselines(request(told_alone, "train.baselines"))
    with pytest.raises(ProtocolError, match="firm 'R1'.*needs the federated demand model"):
        _efficiency(request(bad_groups, "evaluate.efficiency"))
    with pytest.raises(ProtocolError, match="firm 'R1': malformed BaselineInstruction"):
        _baselines(request({INSTRUCTION: {**instruction, "patience": 0}}, "train.baselines"))


# -- the optional DP release --------------------------------------------------------------------------


def test_a_firms_dp_contribution_is_clipped_jointly(firms: list[FirmClient], demand_weights) -> None:
    from silobridge.contract.efficiency_sums import EFFICIENCY_BEFORE
    from silobridge.contract.messages import BaselineInstruction

    firm = firms[1]  # the small retailer: quick to fit
    small = firm.spec.model_copy(update={"efficiency": EfficiencySpec(dp_clip_norm=100.0)})
    clipped_firm = FirmClient(firm.data, group=firm.group, spec=small, tier=firm.tier)
    instruction = BaselineInstruction(
        max_epochs=5,
        patience=2,
        batch_size=64,
        optimiser=OptimiserSpec(name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=0.0),
        seed=0,
    )
    groups = group_tiers([f.tier for f in firms], 3).assignment
    out = clipped_firm.efficiency_release(demand_weights, instruction, groups)
    joint = np.concatenate([out[EFFICIENCY_BEFORE], out[EFFICIENCY_AFTER]])
    assert np.linalg.norm(joint) == pytest.approx(100.0, rel=1e-12)
    after = firm.efficiency(demand_weights, groups)
    assert split_tiers(after)[firm.tier] == EfficiencySums()  # R2 is in the pooled slot, not its tier's
    scale = 100.0 / np.linalg.norm(
        np.concatenate([slot_by_tier(firm.efficiency_sums(firm.local_demand_model(instruction)), OTHER), after])
    )
    np.testing.assert_allclose(out[EFFICIENCY_AFTER], after * scale, rtol=1e-9)


def test_efficiency_event_and_its_epsilon_match_the_accountant() -> None:
    import dp_accounting as dpa

    from silobridge.contract.config import PrivacySpec
    from silobridge.server.efficiency_release import efficiency_event, noised, release_epsilon

    assert efficiency_event("firm", 2.0) == dpa.GaussianDpEvent(2.0)
    assert efficiency_event("record", 2.0) == dpa.GaussianDpEvent(1.0)  # one record moves the clipped vector by 2C
    privacy = PrivacySpec(unit="firm", delta=1e-5)
    accountant = dpa.rdp.RdpAccountant()
    accountant.compose(dpa.GaussianDpEvent(2.0))
    assert release_epsilon(privacy, EfficiencySpec(dp_noise_multiplier=2.0)) == pytest.approx(
        accountant.get_epsilon(1e-5), rel=1e-9
    )
    policy = EfficiencySpec(dp_noise_multiplier=0.5, dp_clip_norm=10.0)
    out = noised({"x": np.zeros(200_000)}, policy, np.random.default_rng(3))
    assert np.std(out["x"]) == pytest.approx(5.0, rel=0.01)


def test_calibration_leaves_room_for_the_efficiency_release(tiny_scenario) -> None:
    from silobridge.federation.settings import settings_from_run_config
    from silobridge.privacy.dp import Account
    from silobridge.server.privacy import accounting_spec
    from tests.conftest import TINY

    plain = settings_from_run_config({"scenario": str(TINY)})
    reserving = settings_from_run_config({"scenario": str(TINY), "set": "efficiency.dp=true"})
    assert reserving.spec.privacy.noise_multiplier > plain.spec.privacy.noise_multiplier
    with pytest.raises(ConfigError, match="efficiency release alone spends epsilon"):
        greedy = "efficiency.dp=true;efficiency.dp_noise_multiplier=0.05"
        settings_from_run_config({"scenario": str(TINY), "set": greedy})
    plan = reserving.privacy_plan()
    assert len(plan.reserved) == 1
    spent = Account.empty(accounting_spec(plan.spec)).compose(plan.planned_run_event(plan.noise_multiplier))
    assert spent.epsilon(plan.spec.delta) <= plan.spec.epsilon


def test_the_table_and_markdown_show_chain_and_tiers() -> None:
    from rich.console import Console

    from silobridge.federation.efficiency_report import efficiency_markdown
    from silobridge.federation.progress import efficiency_table as rich_table

    before = slot_by_tier(
        EfficiencySums(served=10, on_time=8, demand=10, holding_cost=5, abs_error=1, actual=10), "retailer"
    )
    after = slot_by_tier(
        EfficiencySums(served=10, on_time=9, demand=10, holding_cost=4, abs_error=1, actual=10), "retailer"
    )
    table = efficiency_table(before, after, ["retailer"])
    section = {"horizon": 10, "policy": EfficiencySpec().model_dump(), "dp": None, **table}
    assert table["chain"]["K"]["K_E"] == pytest.approx(1.25) and table["chain"]["K"]["K_O"] == pytest.approx(9 / 8)
    console = Console(width=80, record=True)
    console.print(rich_table({"efficiency": section}))
    text = console.export_text()
    assert "chain" in text and "retailer" in text and "…" not in text  # fits 80 columns
    assert "│ 1.250 │ 1.125 │ 1.000 │ 1.406 │" in text  # K_TFP = 1.25 x 1.125 x 1
    markdown = "\n".join(efficiency_markdown(section))
    assert "| retailer | 2.0000 | 2.5000 | 0.8000 | 0.9000 | 0.9000 | 0.9000 |" in markdown
    assert "Exact sums" in markdown
    assert "simulation harness" in "\n".join(efficiency_markdown(section, private=True))
    assert rich_table({"efficiency": None}) is None
