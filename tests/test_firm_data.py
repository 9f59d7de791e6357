"""A firm's CSV files: every problem reported with file, row and column, nothing accepted silently."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from silobridge.clients.data import load_firm_data, write_firm_data
from silobridge.errors import DataError
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.scenarios.generator import ChainData

MIN_PERIODS = 28


@pytest.fixture()
def firm_folder(tmp_path: Path, tiny_chain: ChainData) -> Path:
    tables = tiny_chain.tables["R2"]
    folder = tmp_path / "R2"
    write_firm_data(folder, tables.demand, tables.risk)
    return folder


def _problems(folder: Path) -> list[str]:
    with pytest.raises(DataError) as info:
        load_firm_data(folder, GENERATED_SCHEMA, min_periods=MIN_PERIODS)
    assert info.value.firm == folder.name
    return [str(p) for p in info.value.problems]


def test_round_trip_through_csv(firm_folder: Path, tiny_chain: ChainData) -> None:
    data = load_firm_data(firm_folder, GENERATED_SCHEMA, min_periods=MIN_PERIODS)
    original = tiny_chain.tables["R2"].demand.sort_values(["series", "date"]).reset_index(drop=True)
    assert data.firm_id == "R2"
    assert len(data.demand) == len(original)
    pd.testing.assert_series_equal(data.demand["units"], original["units"].astype(float), check_names=False)
    assert set(data.risk["disrupted"].unique()) <= {0, 1}


def test_missing_column_is_named(firm_folder: Path) -> None:
    demand = pd.read_csv(firm_folder / "demand.csv").drop(columns=["price"])
    demand.to_csv(firm_folder / "demand.csv", index=False)
    [problem] = _problems(firm_folder)
    assert problem.startswith("demand.csv, column 'price': required column is missing")


def test_every_bad_cell_is_reported_with_row_and_column(firm_folder: Path) -> None:
    demand = pd.read_csv(firm_folder / "demand.csv", dtype=str)
    demand.loc[3, "units"] = "NaN"
    demand.loc[5, "units"] = "-4"
    demand.loc[7, "date"] = "2025-13-01"
    demand.to_csv(firm_folder / "demand.csv", index=False)
    risk = pd.read_csv(firm_folder / "risk.csv", dtype=str)
    risk.loc[0, "disrupted"] = "2"
    risk.loc[1, "financial_stress"] = "high"
    risk.to_csv(firm_folder / "risk.csv", index=False)
    problems = _problems(firm_folder)
    assert "demand.csv, row 5, column 'units': expected a finite number" in problems
    assert "demand.csv, row 7, column 'units': demand cannot be negative" in problems
    assert "demand.csv, row 9, column 'date': expected an ISO date such as 2025-01-06" in problems
    assert "risk.csv, row 2, column 'disrupted': expected 0 or 1" in problems
    assert "risk.csv, row 3, column 'financial_stress': expected a finite number" in problems


def test_gaps_duplicates_and_short_series(firm_folder: Path) -> None:
    demand = pd.read_csv(firm_folder / "demand.csv")
    first = demand["series"].iloc[0]
    rows = demand[demand["series"] == first]
    demand = pd.concat([demand.drop(index=rows.index[10]), rows.iloc[[3]]], ignore_index=True)
    demand.to_csv(firm_folder / "demand.csv", index=False)
    problems = _problems(firm_folder)
    assert any("a second row for the same series and date" in p for p in problems)

    demand = demand.drop_duplicates(["series", "date"])
    demand.to_csv(firm_folder / "demand.csv", index=False)
    problems = _problems(firm_folder)
    assert any(f"series '{first}': dates must be consecutive weeks" in p for p in problems)

    short = pd.read_csv(firm_folder / "demand.csv").groupby("series").tail(20)
    short.to_csv(firm_folder / "demand.csv", index=False)
    problems = _problems(firm_folder)
    assert any("has 20 periods; at least 28 are needed" in p for p in problems)


def test_folder_without_data(tmp_path: Path) -> None:
    (tmp_path / "F9").mkdir()
    with pytest.raises(DataError, match="holds neither demand.csv nor risk.csv"):
        load_firm_data(tmp_path / "F9", GENERATED_SCHEMA, min_periods=MIN_PERIODS)
    with pytest.raises(DataError, match="does not exist"):
        load_firm_data(tmp_path / "F8", GENERATED_SCHEMA, min_periods=MIN_PERIODS)


def test_empty_or_unreadable_file(firm_folder: Path) -> None:
    (firm_folder / "risk.csv").write_text("")
    assert _problems(firm_folder) == ["risk.csv: the file is empty"]


def test_a_firm_may_hold_only_one_file(firm_folder: Path) -> None:
    (firm_folder / "risk.csv").unlink()
    data = load_firm_data(firm_folder, GENERATED_SCHEMA, min_periods=MIN_PERIODS)
    assert data.risk is None and data.demand is not None
