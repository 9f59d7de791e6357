"""Scenario files: the shipped ones load; every malformed one fails with file, firm and field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w

from scenarios.schema import apply_overrides, load_scenario, parse_override
from silobridge.errors import ConfigError
from tests.conftest import DEFAULT, LARGE, TINY


def test_shipped_scenarios_load() -> None:
    default = load_scenario(DEFAULT)
    assert len(default.firms) == 12
    assert {f.tier for f in default.firms} == {"supplier", "manufacturer", "distributor", "retailer"}
    large = load_scenario(LARGE)
    assert len(large.firms) >= 200
    assert default.test_start.isoformat() == "2025-10-06"


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "scenario.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


def _raw() -> dict:
    return tomllib.loads(TINY.read_text())


def _error(tmp_path: Path, raw: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_scenario(_write(tmp_path, raw))
    return info.value


def test_missing_field_names_file_firm_and_field(tmp_path: Path) -> None:
    raw = _raw()
    del raw["firms"][1]["history"]
    err = _error(tmp_path, raw)
    assert err.source == str(tmp_path / "scenario.toml")
    assert err.field == "firms[R2].history"
    assert "required field is missing" in str(err)


def test_negative_size(tmp_path: Path) -> None:
    raw = _raw()
    raw["firms"][0]["size"] = -3.0
    err = _error(tmp_path, raw)
    assert err.field == "firms[R1].size"
    assert "greater than 0" in str(err)


def test_unknown_tier(tmp_path: Path) -> None:
    raw = _raw()
    raw["firms"][2]["tier"] = "wholesaler"
    err = _error(tmp_path, raw)
    assert err.field == "firms[D1].tier"
    assert "'retailer'" in str(err)


def test_link_to_unknown_firm(tmp_path: Path) -> None:
    raw = _raw()
    raw["links"].append({"supplier": "D9", "customer": "R1"})
    err = _error(tmp_path, raw)
    assert "links[4].supplier: unknown firm 'D9'" in str(err)


def test_cyclic_links(tmp_path: Path) -> None:
    raw = _raw()
    raw["firms"].append({"id": "D2", "tier": "distributor", "size": 2.0, "history": 60, "region": "north"})
    raw["links"] += [{"supplier": "D1", "customer": "D2"}, {"supplier": "D2", "customer": "D1"}]
    err = _error(tmp_path, raw)
    assert "links form a cycle" in str(err)
    assert "D1" in str(err) and "D2" in str(err)


def test_link_running_upstream(tmp_path: Path) -> None:
    raw = _raw()
    raw["links"].append({"supplier": "R1", "customer": "M1"})
    assert "runs upstream" in str(_error(tmp_path, raw))


def test_too_little_history_names_firm_and_field(tmp_path: Path) -> None:
    raw = _raw()
    raw["firms"][1]["history"] = 20
    err = _error(tmp_path, raw)
    assert "firm 'R2': field 'history' is 20 periods; at least 28 are needed" in str(err)


def test_upstream_firm_without_customers(tmp_path: Path) -> None:
    raw = _raw()
    raw["links"] = [link for link in raw["links"] if link["supplier"] != "S1"]
    assert "firm 'S1': a supplier needs at least one customer link" in str(_error(tmp_path, raw))


def test_unknown_field_and_several_problems_at_once(tmp_path: Path) -> None:
    raw = _raw()
    raw["firms"][0]["colour"] = "red"
    raw["firms"][3]["size"] = 0
    err = _error(tmp_path, raw)
    assert "2 problems" in str(err)
    assert "firms[R1].colour: unknown field" in str(err)
    assert "firms[M1].size" in str(err)


def test_end_must_be_a_monday(tmp_path: Path) -> None:
    raw = _raw()
    raw["end"] = raw["end"].replace(day=30)
    assert "is a Tuesday" in str(_error(tmp_path, raw))


def test_not_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_scenario(bad)
    with pytest.raises(ConfigError, match="file not found"):
        load_scenario(tmp_path / "absent.toml")


def test_overrides_by_dotted_path_and_firm_id() -> None:
    scenario = load_scenario(
        TINY, [parse_override("training.rounds=9"), parse_override("firms.R2.history=50"), parse_override("seed=5")]
    )
    assert scenario.training.rounds == 9
    assert scenario.firm("R2").history == 50
    assert scenario.seed == 5


def test_override_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match="no entry with id 'R9'"):
        apply_overrides(_raw(), [("firms.R9.size", 2.0)])
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("rounds")
    with pytest.raises(ConfigError) as info:
        load_scenario(TINY, [parse_override("training.rounds=-1")])
    assert info.value.field == "training.rounds"
