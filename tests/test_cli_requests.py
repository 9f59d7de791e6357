"""The CLI's pure helpers and the run requests it builds: known values, no Flower, no run."""

from __future__ import annotations

from pathlib import Path

import pytest

from silobridge.errors import ConfigError
from silobridge.federation.cli.query import check_query_options, flatten_answer, parse_param_options
from silobridge.federation.network.launch import shown_command
from silobridge.federation.run_requests import network_run_config, query_config, simulation_config


def test_a_plain_simulation_asks_for_the_scenario_as_written(tmp_path: Path) -> None:
    config = simulation_config(tmp_path / "s.toml", tmp_path / "runs")
    assert config == {
        "scenario": str(tmp_path / "s.toml"),
        "out-dir": str(tmp_path / "runs"),
        "num-rounds": 0,
        "seed": -1,
        "set": "",
        "aggregation": "",
    }


def test_every_simulation_override_reaches_the_run_config(tmp_path: Path) -> None:
    config = simulation_config(
        tmp_path / "s.toml",
        tmp_path / "runs",
        seed=0,
        rounds=2,
        overrides=["horizon=8", "training.local_epochs=2"],
        run_id="r",
        aggregation="plain",
        no_dp=True,
        noise_seed=7,
        data=tmp_path / "pilot",
        ledger_key=tmp_path / "ledger.pem",
        state=tmp_path / "state",
        lifetime_epsilon=3.0,
    )
    assert config == {
        "scenario": str(tmp_path / "s.toml"),
        "out-dir": str(tmp_path / "runs"),
        "num-rounds": 2,
        "seed": 0,
        "set": "horizon=8;training.local_epochs=2",
        "aggregation": "plain",
        "dp": "off",
        "noise-seed": 7,
        "run-id": "r",
        "data": str(tmp_path / "pilot"),
        "ledger-key": str(tmp_path / "ledger.pem"),
        "state-dir": str(tmp_path / "state"),
        "lifetime-epsilon": 3.0,
    }


def test_query_and_network_run_configs(tmp_path: Path) -> None:
    assert query_config(tmp_path / "s.toml", tmp_path / "runs", run_id="q") == {
        "scenario": str(tmp_path / "s.toml"),
        "out-dir": str(tmp_path / "runs"),
        "set": "",
        "aggregation": "",
        "run-id": "q",
    }
    assert network_run_config(tmp_path / "f.toml", tmp_path / "runs") == {
        "scenario": str(tmp_path / "f.toml"),
        "out-dir": str(tmp_path / "runs"),
        "data": "nodes",
        "run-id": "",
        "ledger-key": "",
    }


def test_param_options_read_json_where_they_can() -> None:
    assert parse_param_options(["column=units", "low=0", "edges=[1, 2.5]", "name= x"]) == {
        "column": "units",
        "low": 0,
        "edges": [1, 2.5],
        "name": " x",
    }
    with pytest.raises(ConfigError) as caught:
        parse_param_options(["=3"])
    assert caught.value.field == "--param"


def test_contradicting_query_options_are_refused_naming_the_option(tmp_path: Path) -> None:
    base = {"name": "count", "plan": None, "params": [], "accountant": "rdp", "unit": "record", "network": False}
    check_query_options(**base, data=None)
    with pytest.raises(ConfigError) as caught:
        check_query_options(**{**base, "network": True}, data=tmp_path)
    assert caught.value.field == "--data"
    with pytest.raises(ConfigError) as caught:
        check_query_options(**{**base, "plan": tmp_path / "plan.toml", "params": ["a=1"]}, data=None)
    assert caught.value.field == "--plan"  # a name and a plan together: refused before the stray --param


def test_an_answer_flattens_to_dotted_rows() -> None:
    answer = {"mean": 1.234567891, "per": {"a": 2, "b": [0.5, 1.0]}, "labels": ["x"]}
    assert flatten_answer(answer) == [("mean", "1.23457"), ("per.a", "2"), ("per.b", "0.5, 1"), ("labels", "['x']")]


def test_a_node_command_hides_the_firm_s_noise_seed() -> None:
    text = "flower-supernode --node-config 'noise-seed=42 firm-id=\"R1\"'"
    assert shown_command(text, 42) == "flower-supernode --node-config 'noise-seed=<hidden> firm-id=\"R1\"'"
    assert shown_command(text, None) == text
