"""Scenario files: the shipped ones load; every malformed one fails with file, firm and field."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w

from silobridge.errors import ConfigError
from silobridge.scenarios.schema import apply_overrides, check_generatable, load_scenario, parse_override
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
    del raw["firms"][1]["region"]
    err = _error(tmp_path, raw)
    assert err.source == str(tmp_path / "scenario.toml")
    assert err.field == "firms[R2].region"
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


def test_upstream_firm_without_customers_cannot_be_generated(tmp_path: Path) -> None:
    """A pilot's supplier may hold risk data only; the generator needs its customers' orders for its demand."""
    raw = _raw()
    raw["links"] = [link for link in raw["links"] if link["supplier"] != "S1"]
    scenario = load_scenario(_write(tmp_path, raw))
    with pytest.raises(ConfigError, match="firm 'S1': a supplier needs at least one customer link") as info:
        check_generatable(scenario, source="scenario.toml")
    assert info.value.field == "links"


def test_history_is_bounded_and_needed_only_to_generate(tmp_path: Path) -> None:
    raw = _raw()
    raw["firms"][0]["history"] = 1_000_000_000
    err = _error(tmp_path, raw)
    assert err.field == "firms[R1].history"
    assert "less than or equal to 5200" in str(err)
    del raw["firms"][0]["history"]
    scenario = load_scenario(_write(tmp_path, raw))
    with pytest.raises(ConfigError, match=r"firms \['R1'\] declare no 'history'"):
        check_generatable(scenario)


def test_generation_is_bounded_in_size(tmp_path: Path) -> None:
    raw = _raw()
    raw["items"] = 500
    for firm in raw["firms"]:
        firm["history"] = 5200
    with pytest.raises(ConfigError, match="demand values"):
        check_generatable(load_scenario(_write(tmp_path, raw)))


def test_nan_is_named_as_not_a_number(tmp_path: Path) -> None:
    raw = _raw()
    raw["privacy"] = {"epsilon": float("nan")}
    err = _error(tmp_path, raw)
    assert err.field == "privacy.epsilon"
    assert "finite number" in str(err)


def test_unknown_field_and_several_problems_at_once(tmp_path: Path) -> None:
    raw = _raw()
    raw["firms"][0]["colour"] = "red"
    raw["firms"][3]["size"] = 0
    err = _error(tmp_path, raw)
    assert "2 problems" in str(err)
    assert "firms[R1].colour: unknown field" in str(err)
    assert "firms[M1].size" in str(err)


def test_any_weekday_anchors_a_pilot_but_the_generator_keeps_mondays(tmp_path: Path) -> None:
    raw = _raw()
    raw["end"] = raw["end"].replace(day=30)
    scenario = load_scenario(_write(tmp_path, raw))
    assert scenario.test_start.weekday() == 1  # every week of the federation falls on end's weekday
    with pytest.raises(ConfigError, match="is a Tuesday; the generator writes weeks starting on Monday"):
        check_generatable(scenario)


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
