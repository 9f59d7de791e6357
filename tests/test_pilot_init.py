"""`silobridge init`: a first federation file from the firms' folders, and random [data] tables that only ever
fail with the project's own errors."""

from __future__ import annotations

import datetime as dt
import re
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from silobridge.clients.data import load_for_spec, write_firm_data
from silobridge.contract.config import FederationSpec
from silobridge.errors import SiloBridgeError
from silobridge.federation.cli import app
from silobridge.scenarios.generator import generate_chain
from silobridge.scenarios.schema import load_scenario, scenario_from_dict
from tests.test_pilot_extracts import TRIO, reshape_as_extract

TIERS = {"R1": "retailer", "D1": "distributor", "M1": "manufacturer"}


@pytest.fixture(scope="module")
def extracts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trio's files as a retailer exports them (Fridays, week_ending, unit_price, qty x100)."""
    generated = tmp_path_factory.mktemp("generated")
    chain = generate_chain(load_scenario(TRIO))
    root = tmp_path_factory.mktemp("extracts")
    for firm, tables in chain.tables.items():
        write_firm_data(generated / firm, tables.demand, tables.risk)
        reshape_as_extract(generated / firm, root / firm)
    return root


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())


def fill_in(text: str, tiers: dict[str, str]) -> str:
    """What the coordinator does after `init`: the tiers, and (here, for a test) the suggested ranges."""
    for firm, tier in tiers.items():
        text = text.replace(f'{{ id = "{firm}", tier = "TODO"', f'{{ id = "{firm}", tier = "{tier}"')
    return re.sub(r"^# (\[data\.risk_feature_ranges\]|\w+ = \[.*\])$", r"\1", text, flags=re.M)


def test_init_writes_what_the_files_say_and_leaves_tiers_and_ranges(extracts: Path, tmp_path: Path) -> None:
    out = tmp_path / "federation.toml"
    code, output = invoke("init", str(extracts), "--out", str(out))
    assert code == 0, output
    text = out.read_text()
    raw = tomllib.loads(text)
    assert raw["end"] == dt.date(2026, 1, 2) and raw["end"].weekday() == 4  # the last Friday found
    assert raw["data"]["date_column"] == "week_ending" and raw["data"]["units_column"] == "qty"
    assert "series_column" not in raw["data"]  # `series`, the default
    assert raw["data"]["demand_covariates"] == {"unit_price": "log_ratio", "promotion": "raw", "holiday": "raw"}
    assert "lead_time_cv" in raw["data"]["risk_features"] and "supplier" not in raw["data"]["risk_features"]
    assert "risk_feature_ranges" not in raw["data"]  # only as commented suggestions
    assert "# [data.risk_feature_ranges]" in text and "leak" in text
    firms = {f["id"]: f for f in raw["firms"]}
    assert {f["tier"] for f in firms.values()} == {"TODO"}
    assert firms["R1"]["history"] == 90 and firms["M1"]["history"] == 40
    assert firms["M1"]["size"] == 1.0 and firms["R1"]["size"] > firms["D1"]["size"] > 1.0

    code, output = invoke("validate", str(extracts / "R1"), "--config", str(out))
    assert code == 2
    assert "field 'firms[D1].tier': 3 problems" in output
    assert "firms[R1].tier: still 'TODO': write the firm's tier, one of supplier, manufacturer, distributor" in output

    tiers_only = tmp_path / "tiers.toml"
    tiers_only.write_text(fill_in(text, TIERS).replace("[data.risk_feature_ranges]", "# no ranges"))
    tiers_only.write_text(re.sub(r"^(\w+ = \[[-0-9., ]+\])$", r"# \1", tiers_only.read_text(), flags=re.M))
    code, output = invoke("validate", str(extracts / "R1"), "--config", str(tiers_only))
    assert code == 2 and "under differential privacy every risk feature needs a public range" in output

    filled = tmp_path / "filled.toml"
    filled.write_text(fill_in(text, TIERS))
    for firm in TIERS:
        code, output = invoke("validate", str(extracts / firm), "--config", str(filled))
        assert code == 0, output


def test_init_never_overwrites(extracts: Path, tmp_path: Path) -> None:
    out = tmp_path / "federation.toml"
    out.write_text("mine")
    code, output = invoke("init", str(extracts), "--out", str(out))
    assert code == 2 and "already exists" in output and out.read_text() == "mine"


def test_init_refuses_two_weekly_anchors(extracts: Path, tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    for firm in ("R1", "D1"):
        (root / firm).mkdir(parents=True)
        for name in ("demand.csv", "risk.csv"):
            (root / firm / name).write_bytes((extracts / firm / name).read_bytes())
    demand = pd.read_csv(root / "D1" / "demand.csv")
    demand["week_ending"] = (pd.to_datetime(demand["week_ending"]) + dt.timedelta(days=1)).dt.strftime("%Y-%m-%d")
    demand.to_csv(root / "D1" / "demand.csv", index=False)
    code, output = invoke("init", str(root), "--out", str(tmp_path / "federation.toml"))
    assert code == 2
    assert "weeks fall on different weekdays (D1: Saturdays, R1: Fridays)" in output
    assert not (tmp_path / "federation.toml").exists()


def test_init_asks_for_a_column_it_cannot_tell(extracts: Path, tmp_path: Path) -> None:
    folder = tmp_path / "shop" / "R1"
    folder.mkdir(parents=True)
    demand = pd.read_csv(extracts / "R1" / "demand.csv").rename(columns={"qty": "amount"})
    demand.to_csv(folder / "demand.csv", index=False)
    out = tmp_path / "federation.toml"
    code, output = invoke("init", str(tmp_path / "shop"), "--out", str(out))
    assert code == 2 and "cannot tell which column holds the weekly units" in output and "--units-column" in output
    code, output = invoke("init", str(tmp_path / "shop"), "--out", str(out), "--units-column", "amount")
    assert code == 0, output
    assert tomllib.loads(out.read_text())["data"]["units_column"] == "amount"


# -- random [data] tables -------------------------------------------------------------------------

NAMES = st.one_of(
    st.sampled_from(["date", "units", "series", "disrupted", "split", "week_ending", "qty", "price", "x"]),
    st.text(max_size=6),
)
VALUES = st.one_of(
    NAMES,
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.lists(NAMES, max_size=3),
    st.lists(st.floats(allow_nan=True), max_size=3),
    st.dictionaries(NAMES, st.one_of(st.sampled_from(["raw", "log_ratio", "cube"]), st.integers()), max_size=3),
    st.dictionaries(NAMES, st.lists(st.floats(allow_nan=True), max_size=3), max_size=3),
)
KEYS = st.sampled_from(
    [
        "date_column",
        "units_column",
        "series_column",
        "label_column",
        "demand_covariates",
        "risk_features",
        "risk_feature_ranges",
        "risk_holdout",
        "unit_column",
    ]
)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(data=st.dictionaries(KEYS, VALUES, max_size=6))
def test_random_data_tables_fail_only_with_our_errors(data: dict, extracts: Path) -> None:
    """A table is refused with a ConfigError, or accepted, hashed, and the files judged by it with a DataError."""
    raw = tomllib.loads(TRIO.read_text())
    raw["end"] = dt.date(2026, 1, 2)
    raw["data"] = {k: v for k, v in data.items() if v is not None}
    try:
        scenario = scenario_from_dict(raw, source="random.toml")
    except SiloBridgeError:
        return
    assert scenario.data is not None
    hash(scenario)  # a valid table can be cached (the crash of the issue)
    spec = FederationSpec(
        data=scenario.data, lags=8, horizon=4, test_start=scenario.test_start, test_periods=13, hidden=8
    )
    try:
        load_for_spec(extracts / "M1", spec)
    except SiloBridgeError:
        return
