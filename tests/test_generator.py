"""The synthetic chain: deterministic, with bullwhip upstream, rare disruptions and heterogeneous firms."""

from __future__ import annotations

import numpy as np
import pandas as pd

from silobridge.clients.data import firm_data_from_tables
from silobridge.contract.config import TIERS, min_periods
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.scenarios.generator import ChainData, generate_chain, order_up_to
from silobridge.scenarios.schema import Scenario, load_scenario, parse_override, scenario_from_dict
from tests.conftest import TINY


def test_same_seed_same_data_other_seed_other_data(tiny_scenario: Scenario, tiny_chain: ChainData) -> None:
    again = generate_chain(tiny_scenario)
    for firm_id, tables in tiny_chain.tables.items():
        pd.testing.assert_frame_equal(tables.demand, again.tables[firm_id].demand)
        pd.testing.assert_frame_equal(tables.risk, again.tables[firm_id].risk)
    other = generate_chain(load_scenario(TINY, [parse_override("seed=12")]))
    assert not np.array_equal(other.tables["R1"].demand["units"], tiny_chain.tables["R1"].demand["units"])


def test_adding_an_unlinked_retailer_leaves_other_firms_unchanged(
    tiny_scenario: Scenario, tiny_chain: ChainData
) -> None:
    raw = tiny_scenario.model_dump()
    raw["firms"] = [*raw["firms"], {"id": "R9", "tier": "retailer", "size": 2.0, "history": 60, "region": "south"}]
    bigger = generate_chain(scenario_from_dict(raw))
    pd.testing.assert_frame_equal(bigger.tables["R2"].demand, tiny_chain.tables["R2"].demand)


def test_histories_and_schema(default_scenario: Scenario, default_chain: ChainData) -> None:
    need = min_periods(default_scenario.training.lags, default_scenario.horizon, default_scenario.test_periods)
    for firm in default_scenario.firms:
        tables = default_chain.tables[firm.id]
        per_series = tables.demand.groupby("series")["date"].agg(["count", "max"])
        assert (per_series["count"] == firm.history).all()
        assert (per_series["max"] == pd.Timestamp(default_scenario.end)).all()
        # The generator's tables pass the same validation as a partner's CSV files.
        data = firm_data_from_tables(firm.id, tables.demand, tables.risk, GENERATED_SCHEMA, min_periods=need)
        assert data.demand is not None and data.risk is not None


def _variance_ratio(chain: ChainData, firm_id: str) -> float:
    burn = 52
    return float(np.var(chain.orders_placed[firm_id][burn:]) / np.var(chain.incoming_demand[firm_id][burn:]))


def test_bullwhip_grows_upstream(default_scenario: Scenario, default_chain: ChainData) -> None:
    ratios: dict[str, list[float]] = {tier: [] for tier in TIERS}
    for firm in default_scenario.firms:
        if firm.id in default_chain.orders_placed:
            ratio = _variance_ratio(default_chain, firm.id)
            assert ratio > 1.0, f"{firm.id} orders vary less than its demand ({ratio:.2f})"
            ratios[firm.tier].append(ratio)
    retail, distribution, manufacturing = (np.mean(ratios[t]) for t in ("retailer", "distributor", "manufacturer"))
    assert retail < distribution < manufacturing
    # Upstream firms see more volatile demand than consumers generate.
    cv = {
        tier: np.mean(
            [
                np.std(default_chain.incoming_demand[f.id][52:]) / np.mean(default_chain.incoming_demand[f.id][52:])
                for f in default_scenario.firms
                if f.tier == tier
            ]
        )
        for tier in TIERS
    }
    assert cv["retailer"] < cv["distributor"] < cv["manufacturer"] < cv["supplier"]


def test_order_up_to_on_constant_demand_orders_the_demand() -> None:
    np.testing.assert_array_equal(order_up_to(np.full(40, 100.0), lead_time=2)[10:], np.full(30, 100.0))


def test_disruptions_are_rare_and_depend_on_features(default_chain: ChainData) -> None:
    risk = pd.concat([t.risk for t in default_chain.tables.values()])
    rate = risk["disrupted"].mean()
    assert 0.01 <= rate <= 0.06
    # Stressed, over-capacity suppliers fail more often than calm ones.
    stressed = risk["financial_stress"] > risk["financial_stress"].quantile(0.8)
    assert risk.loc[stressed, "disrupted"].mean() > 2 * risk.loc[~stressed, "disrupted"].mean()
    over = risk["capacity_utilisation"] > 1.0
    assert risk.loc[over, "disrupted"].mean() > 2 * risk.loc[~over, "disrupted"].mean()


def test_firms_are_heterogeneous(default_scenario: Scenario, default_chain: ChainData) -> None:
    large = [f for f in default_scenario.firms if default_scenario.group_of(f.id) == "large"]
    small = [f for f in default_scenario.firms if default_scenario.group_of(f.id) == "small"]
    assert 3 <= len(large) < len(small)
    assert min(f.history for f in large) >= 3 * max(f.history for f in small)
    assert min(f.size for f in large) >= 3 * max(f.size for f in small)
    # Small retailers are noisier: over the same weeks, their changes are larger relative to their level.
    common = pd.Timestamp(default_scenario.end) - pd.Timedelta(weeks=min(f.history for f in small) - 1)

    def roughness(firm_id: str) -> float:
        demand = default_chain.tables[firm_id].demand
        demand = demand[demand["date"] >= common]
        return float(np.mean([np.std(np.diff(s["units"])) / np.mean(s["units"]) for _, s in demand.groupby("series")]))

    small_retail = [roughness(f.id) for f in small if f.tier == "retailer"]
    large_retail = [roughness(f.id) for f in large if f.tier == "retailer"]
    assert np.mean(small_retail) > np.mean(large_retail)
    # Small firms have not seen a full year: no winter peak in their training data.
    test_start = pd.Timestamp(default_scenario.test_start)
    for firm in small:
        train_dates = default_chain.tables[firm.id].demand["date"]
        assert not ((train_dates < test_start) & (train_dates.dt.month == 12)).any()
