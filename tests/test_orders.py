"""Order baskets: generated deterministically with planted patterns, validated like the other tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from silobridge.clients.data import ORDERS_FILE, firm_data_from_tables, load_firm_data, validate_orders, write_firm_data
from silobridge.errors import DataError
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.scenarios.generator import ChainData, generate_chain
from silobridge.scenarios.schema import Scenario, load_scenario, parse_override
from tests.conftest import TINY

MIN_PERIODS = 28


def test_baskets_are_deterministic_by_seed(tiny_scenario: Scenario, tiny_chain: ChainData) -> None:
    again = generate_chain(tiny_scenario)
    for firm_id, tables in tiny_chain.tables.items():
        pd.testing.assert_frame_equal(tables.orders, again.tables[firm_id].orders)
    assert again.basket_patterns == tiny_chain.basket_patterns
    other = generate_chain(load_scenario(TINY, [parse_override("seed=12")]))
    assert not other.tables["R1"].orders.equals(tiny_chain.tables["R1"].orders)


def test_baskets_hold_the_firms_items_and_the_planted_patterns(default_chain: ChainData) -> None:
    patterns = default_chain.basket_patterns
    assert [len(p) for p in patterns] == [3, 2, 2]
    assert len({item for p in patterns for item in p}) == 7  # disjoint
    with_pattern = 0
    for firm in default_chain.scenario.firms:
        tables = default_chain.tables[firm.id]
        orders = tables.orders
        assert set(orders["item"]) <= set(tables.demand["series"])  # a firm orders what it trades
        assert orders["order_id"].str.startswith(f"{firm.id}-").all()
        assert orders["order_id"].nunique() == max(20, round(60 * firm.size))
        assert not orders.duplicated().any()
        baskets = orders.groupby("order_id")["item"].agg(frozenset)
        share = np.mean([baskets.map(set(p).issubset).mean() for p in patterns[:1]])
        with_pattern += share > 0.1
    assert with_pattern >= 6  # the triple is bought together at half of the firms at least


def test_orders_round_trip_through_csv(tmp_path: Path, tiny_chain: ChainData) -> None:
    tables = tiny_chain.tables["R2"]
    write_firm_data(tmp_path / "R2", tables.demand, tables.risk, tables.orders)
    data = load_firm_data(tmp_path / "R2", GENERATED_SCHEMA, min_periods=MIN_PERIODS)
    pd.testing.assert_frame_equal(data.orders, validate_orders(tables.orders, firm="R2"))
    assert len(data.orders) == len(tables.orders)
    # In memory, the generator's tables pass the same validation.
    again = firm_data_from_tables("R2", None, None, GENERATED_SCHEMA, min_periods=MIN_PERIODS, orders=tables.orders)
    pd.testing.assert_frame_equal(again.orders, data.orders)


def test_a_firm_may_hold_only_orders(tmp_path: Path, tiny_chain: ChainData) -> None:
    write_firm_data(tmp_path / "R1", None, None, tiny_chain.tables["R1"].orders)
    data = load_firm_data(tmp_path / "R1", GENERATED_SCHEMA, min_periods=MIN_PERIODS)
    assert data.demand is None and data.risk is None and len(data.orders) == len(tiny_chain.tables["R1"].orders)


def _problems(folder: Path) -> list[str]:
    with pytest.raises(DataError) as info:
        load_firm_data(folder, GENERATED_SCHEMA, min_periods=MIN_PERIODS)
    return [str(p) for p in info.value.problems]


def test_every_bad_cell_is_reported_with_file_row_and_column(tmp_path: Path) -> None:
    folder = tmp_path / "F1"
    folder.mkdir()
    (folder / ORDERS_FILE).write_text("order_id,item\no1,a\no1,b\n,c\no2,\no1,a\n o3 , d \n")
    assert _problems(folder) == [
        "orders.csv, row 4, column 'order_id': expected an order id",
        "orders.csv, row 5, column 'item': expected an item name",
    ]
    (folder / ORDERS_FILE).write_text("order_id,item\no1,a\no1,b\no2,c\no1,a\n")
    assert _problems(folder) == ["orders.csv, row 5, column 'item': the same item twice in one order"]
    (folder / ORDERS_FILE).write_text("order,item\no1,a\n")
    [problem] = _problems(folder)
    assert problem.startswith("orders.csv, column 'order_id': required column is missing")
    (folder / ORDERS_FILE).write_text("order_id,item\n")
    assert _problems(folder) == ["orders.csv: the file has no rows"]
    (folder / ORDERS_FILE).write_text("")
    assert _problems(folder) == ["orders.csv: the file is empty"]


def test_order_problems_are_reported_with_the_other_files(tmp_path: Path, tiny_chain: ChainData) -> None:
    tables = tiny_chain.tables["R2"]
    write_firm_data(tmp_path / "R2", tables.demand, tables.risk, tables.orders)
    risk = pd.read_csv(tmp_path / "R2" / "risk.csv", dtype=str)
    risk.loc[0, "disrupted"] = "7"
    risk.to_csv(tmp_path / "R2" / "risk.csv", index=False)
    orders = pd.read_csv(tmp_path / "R2" / ORDERS_FILE, dtype=str)
    orders.loc[2, "item"] = ""
    orders.to_csv(tmp_path / "R2" / ORDERS_FILE, index=False)
    assert _problems(tmp_path / "R2") == [
        "risk.csv, row 2, column 'disrupted': expected 0 or 1",
        "orders.csv, row 4, column 'item': expected an item name",
    ]


def test_stripped_values_are_kept_stripped() -> None:
    out = validate_orders(pd.DataFrame({"order_id": [" o2", "o1 "], "item": ["b ", " a"]}), firm="F1")
    assert out.to_dict("list") == {"order_id": ["o1", "o2"], "item": ["a", "b"]}
