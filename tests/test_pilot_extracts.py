"""A partner's extract as it comes: mapped columns, any weekly anchor, cross-sectional risk files, and every
rule the run applies checked by `silobridge validate` first, each refusal naming file, row, column and firm."""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tomli_w
from typer.testing import CliRunner

from silobridge.clients.data import (
    RISK_SPLIT_COLUMN,
    RISK_SPLIT_DATE,
    RISK_SPLIT_HOLDOUT,
    load_for_spec,
    stratified_holdout,
    write_firm_data,
)
from silobridge.contract.config import FederationSpec
from silobridge.errors import ConfigError, DataError
from silobridge.federation.cli import app
from silobridge.federation.settings import settings_from_run_config
from silobridge.scenarios.generator import generate_chain
from silobridge.scenarios.schema import load_scenario
from tests.conftest import ROOT

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"
SHIFT = dt.timedelta(days=4)  # Monday -> Friday: the retailer's weeks end on Fridays
EXTRACT_DATA = {
    "date_column": "week_ending",
    "units_column": "qty",
    "demand_covariates": {"unit_price": "log_ratio", "promotion": "raw", "holiday": "raw"},
    "risk_features": ["lead_time_cv", "financial_stress"],
    "risk_feature_ranges": {"lead_time_cv": [0.0, 1.0], "financial_stress": [0.0, 1.0]},
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trio's generated files, written once: each test copies what it changes."""
    root = tmp_path_factory.mktemp("generated")
    chain = generate_chain(load_scenario(TRIO))
    for firm, tables in chain.tables.items():
        write_firm_data(root / firm, tables.demand, tables.risk)
    return root


def reshape_as_extract(source: Path, target: Path) -> None:
    """Generated files turned into what a retailer exports: Friday weeks, its own column names, x100 volumes."""
    target.mkdir(parents=True)
    demand = pd.read_csv(source / "demand.csv")
    demand["date"] = (pd.to_datetime(demand["date"]) + SHIFT).dt.strftime("%Y-%m-%d")
    demand["units"] = demand["units"] * 100
    demand = demand.rename(columns={"date": "week_ending", "units": "qty", "price": "unit_price"})
    demand.to_csv(target / "demand.csv", index=False)
    risk = pd.read_csv(source / "risk.csv")
    risk["date"] = (pd.to_datetime(risk["date"]) + SHIFT).dt.strftime("%Y-%m-%d")
    risk.rename(columns={"date": "week_ending"}).to_csv(target / "risk.csv", index=False)


def extract_federation(path: Path, *, data: dict | None = None, change: Callable[[dict], None] | None = None) -> Path:
    raw = tomllib.loads(TRIO.read_text())
    raw["end"] = raw["end"] + SHIFT
    raw["data"] = dict(EXTRACT_DATA if data is None else data)
    if change is not None:
        change(raw)
    path.write_text(tomli_w.dumps(raw))
    return path


def spec_of(federation: Path) -> FederationSpec:
    return settings_from_run_config({"scenario": str(federation), "dp": "off", "data": "nodes"}).spec


@pytest.fixture()
def extract(tmp_path: Path, generated: Path) -> tuple[Path, Path]:
    """(R1's extract folder, its federation file)."""
    reshape_as_extract(generated / "R1", tmp_path / "R1")
    return tmp_path / "R1", extract_federation(tmp_path / "federation.toml")


def _problems(folder: Path, federation: Path) -> str:
    with pytest.raises(DataError) as info:
        load_for_spec(folder, spec_of(federation))
    assert info.value.firm == folder.name
    return str(info.value)


def validate(folder: Path, federation: Path) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["validate", str(folder), "--config", str(federation)])
    return result.exit_code, " ".join(result.output.split())


def test_a_data_table_on_the_pilot_path_validates(tmp_path: Path, generated: Path) -> None:
    """The issue's reproduction: trio.toml plus a [data] table crashed `validate` (unhashable dict)."""
    federation = tmp_path / "trio-data.toml"
    federation.write_text(TRIO.read_text() + '\n[data]\ndemand_covariates = { holiday = "raw" }\n')
    code, output = validate(generated / "R1", federation)
    assert code == 0, output
    assert "firm 'R1': valid" in output
    assert hash(spec_of(federation)) == hash(spec_of(federation))


def test_a_reshaped_extract_validates_under_its_own_column_names(extract: tuple[Path, Path]) -> None:
    folder, federation = extract
    code, output = validate(folder, federation)
    assert code == 0, output
    data = load_for_spec(folder, spec_of(federation))
    assert data.demand is not None and data.risk is not None
    assert list(data.demand.columns[:3]) == ["date", "series", "units"]  # renamed once, at load time
    assert (data.demand["date"].dt.day_of_week == 4).all()
    assert data.demand["units"].max() > 1000
    assert data.risk_split == RISK_SPLIT_DATE


def _edit(path: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    change(pd.read_csv(path, dtype=str)).to_csv(path, index=False)


def _wrong_weekday(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[4, "week_ending"] = (pd.Timestamp(frame.loc[4, "week_ending"]) - dt.timedelta(days=1)).strftime(
        "%Y-%m-%d"
    )
    return frame


def _duplicate_week(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame.iloc[[3]]], ignore_index=True)


def _gap(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(index=[10, 11]).reset_index(drop=True)


def _after_end(frame: pd.DataFrame) -> pd.DataFrame:
    frame["week_ending"] = (pd.to_datetime(frame["week_ending"]) + dt.timedelta(weeks=200)).dt.strftime("%Y-%m-%d")
    return frame


def _huge_units(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[6, "qty"] = "1e300"
    return frame


def _text_covariate(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[2, "promotion"] = "yes"
    return frame


def _header_only(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[:0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            _wrong_weekday,
            "demand.csv, row 6, column 'week_ending': 2024-05-16 is a Thursday; this federation's weeks fall on "
            "Fridays (its end, 2026-01-02, is a Friday): 1 rows are on another weekday",
        ),
        (_duplicate_week, "demand.csv, row 362, column 'week_ending': a second row for the same series and date"),
        (_gap, "column 'week_ending': series 'item001': dates must be consecutive weeks; 2 missing weeks between"),
        (_after_end, "rows lie after the federation's end (2026-01-02), which the run would leave out"),
        (_huge_units, "demand.csv, row 8, column 'qty': 1e+12 at most in magnitude"),
        (_text_covariate, "demand.csv, row 4, column 'promotion': expected a finite number"),
        (_header_only, "demand.csv: the file has a header but no rows"),
    ],
    ids=["weekday", "duplicate", "gap", "after-end", "1e300", "covariate", "header-only"],
)
def test_bad_demand_is_refused_by_validate(extract: tuple[Path, Path], change, expected: str) -> None:
    folder, federation = extract
    _edit(folder / "demand.csv", change)
    code, output = validate(folder, federation)
    assert code == 2
    assert "data error" in output and "firm 'R1'" in output
    assert expected in output


def test_a_mapped_column_that_does_not_exist(extract: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = extract
    federation = extract_federation(tmp_path / "units.toml", data={**EXTRACT_DATA, "units_column": "sales"})
    assert "demand.csv, column 'sales': required column is missing (columns found: week_ending, series, qty" in (
        _problems(folder, federation)
    )
    federation = extract_federation(tmp_path / "date.toml", data={**EXTRACT_DATA, "date_column": "date"})
    assert "if it has another name, set date_column in [data]" in _problems(folder, federation)


def test_an_unknown_key_in_data_is_refused(extract: tuple[Path, Path], tmp_path: Path) -> None:
    folder, _ = extract
    federation = extract_federation(tmp_path / "typo.toml", data={**EXTRACT_DATA, "unit_column": "qty"})
    code, output = validate(folder, federation)
    assert code == 2
    assert "configuration error" in output and "field 'data.unit_column': unknown field (known: date_column, " in output
    assert "units_column" in output


def test_label_values_other_than_0_or_1(extract: tuple[Path, Path]) -> None:
    folder, federation = extract

    def bad_label(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[1, "disrupted"] = "yes"
        return frame

    _edit(folder / "risk.csv", bad_label)
    assert "risk.csv, row 3, column 'disrupted': expected 0 or 1" in _problems(folder, federation)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "demand.csv: the file is empty"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe\x00binary", "demand.csv: not a readable CSV file"),
        (None, "is a folder; expected a CSV file"),
    ],
    ids=["empty", "not-csv", "folder"],
)
def test_files_that_are_not_csv(extract: tuple[Path, Path], content: bytes | None, expected: str) -> None:
    folder, federation = extract
    (folder / "demand.csv").unlink()
    if content is None:
        (folder / "demand.csv").mkdir()
    else:
        (folder / "demand.csv").write_bytes(content)
    code, output = validate(folder, federation)
    assert code == 2 and "firm 'R1'" in output and expected in output


def test_a_spreadsheet_byte_order_mark_is_not_part_of_the_first_column(extract: tuple[Path, Path]) -> None:
    folder, federation = extract
    path = folder / "demand.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_for_spec(folder, spec_of(federation)).demand is not None


# -- risk files without dates ---------------------------------------------------------------------


def test_cross_sectional_risk_gets_a_seeded_stratified_holdout(tmp_path: Path, generated: Path) -> None:
    """A lender's file: no date, no split column; a risk-only supplier needs no supply links."""
    folder = tmp_path / "L1"
    folder.mkdir()
    risk = pd.read_csv(generated / "R1" / "risk.csv").drop(columns=["date", "supplier"])
    risk.rename(columns={"disrupted": "default_flag"}).to_csv(folder / "risk.csv", index=False)

    def lender(raw: dict) -> None:
        raw["firms"].append({"id": "L1", "tier": "supplier", "size": 1.0, "region": "north"})

    data = {**EXTRACT_DATA, "label_column": "default_flag"}
    federation = extract_federation(tmp_path / "federation.toml", data=data, change=lender)
    first = load_for_spec(folder, spec_of(federation))
    again = load_for_spec(folder, spec_of(federation))
    assert first.risk_split == RISK_SPLIT_HOLDOUT
    pd.testing.assert_frame_equal(first.risk, again.risk)  # seeded: the same rows every time
    test = first.risk[first.risk["split"] == "test"]
    positives = int(risk["disrupted"].sum())
    assert len(test) == round(0.2 * positives) + round(0.2 * (len(risk) - positives))
    assert int(test["disrupted"].sum()) == round(0.2 * positives)  # stratified by label
    code, output = validate(folder, federation)
    assert code == 0, output
    assert "seeded holdout of 20%" in output


def test_a_split_column_decides_and_must_hold_train_or_test(extract: tuple[Path, Path]) -> None:
    folder, federation = extract

    def split(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.drop(columns=["week_ending"])
        frame["split"] = np.where(np.arange(len(frame)) % 4 == 0, "test", "Train")
        return frame

    _edit(folder / "risk.csv", split)
    data = load_for_spec(folder, spec_of(federation))
    assert data.risk_split == RISK_SPLIT_COLUMN
    assert set(data.risk["split"]) == {"train", "test"}

    def unknown(frame: pd.DataFrame) -> pd.DataFrame:
        frame.loc[2, "split"] = "holdout"
        return frame

    _edit(folder / "risk.csv", unknown)
    assert "risk.csv, row 4, column 'split': expected train or test" in _problems(folder, federation)


def test_holdout_draws_the_share_of_each_label() -> None:
    labels = np.array([0] * 90 + [1] * 10)
    held = stratified_holdout(labels, 0.2, seed=3)
    assert held.sum() == 20 and held[labels == 1].sum() == 2
    np.testing.assert_array_equal(held, stratified_holdout(labels, 0.2, seed=3))


def test_a_ranges_key_for_a_column_that_is_not_a_feature(tmp_path: Path) -> None:
    data = {**EXTRACT_DATA, "risk_feature_ranges": {"lead_time": [0.0, 1.0]}}
    with pytest.raises(ConfigError, match=r"risk_feature_ranges names \['lead_time'\]"):
        spec_of(extract_federation(tmp_path / "federation.toml", data=data))
