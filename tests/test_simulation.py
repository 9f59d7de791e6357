"""End to end: a real Flower simulation of the tiny scenario, run in-process, and its run directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from clients.models import build_model
from federation.server_app import RunResult
from federation.simulation import simulate
from federation.summary import GROUP_ORDER, METHODS, METRICS
from scenarios.schema import Scenario
from tests.conftest import TINY


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunResult:
    out = tmp_path_factory.mktemp("runs")
    return simulate({"scenario": str(TINY), "out-dir": str(out), "run-id": "tiny-e2e"}, cpus=2)


def test_run_directory_is_complete(run: RunResult) -> None:
    assert run.path.name == "tiny-e2e"
    names = {p.name for p in run.path.iterdir()}
    assert names == {"config.json", "metrics.jsonl", "models", "summary.json", "summary.md"}
    assert not list(run.path.parent.glob(".*partial"))
    config = json.loads((run.path / "config.json").read_text())
    assert config["scenario"]["name"] == "tiny" and config["run_config"]["run-id"] == "tiny-e2e"
    assert json.loads((run.path / "summary.json").read_text()) == run.summary
    assert "| federated |" in (run.path / "summary.md").read_text()


def test_summary_has_every_model_method_group_and_metric(run: RunResult) -> None:
    models = run.summary["models"]
    for kind, methods in METHODS.items():
        assert set(models[kind]) == set(methods)
        for method in methods:
            for group in GROUP_ORDER:
                assert set(models[kind][method][group]) == set(METRICS[kind])
    demand = models["demand"]
    assert all(demand[m]["all"]["wape"] > 0 for m in METHODS["demand"])
    assert run.summary["federation"]["groups"] == {"small": 3, "large": 2}
    assert run.summary["dropouts"] == []
    assert {c["name"] for c in run.summary["acceptance"]} and all(
        isinstance(c["passed"], bool) for c in run.summary["acceptance"]
    )


def test_federated_metrics_beat_round_zero(run: RunResult) -> None:
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    rounds = 4
    assert [r["round"] for r in records if r["model"] == "demand"] == list(range(1, rounds + 1))
    first = {r["model"]: r for r in records if r["round"] == 1}
    assert first["demand"]["evaluated_round"] == 0
    final = run.summary["models"]
    # The initial model forecasts about zero (WAPE near 1) and scores disruptions at random.
    assert final["demand"]["federated"]["all"]["wape"] < 0.6 * first["demand"]["metrics"]["all"]["wape"]
    assert final["risk"]["federated"]["all"]["roc_auc"] > first["risk"]["metrics"]["all"]["roc_auc"] + 0.1
    losses = [r["train_loss"] for r in records if r["model"] == "demand"]
    assert losses[-1] < losses[0]


def test_saved_models_load(run: RunResult, tiny_scenario: Scenario) -> None:
    from federation.settings import settings_from_run_config

    spec = settings_from_run_config({"scenario": str(TINY)}).spec
    for kind in ("demand", "risk"):
        model = build_model(kind, spec)
        model.load_state_dict(torch.load(run.path / "models" / f"{kind}.pt"))
    normaliser = json.loads((run.path / "models" / "risk_normaliser.json").read_text())
    assert len(normaliser["mean"]) == len(spec.data.risk_features)


def test_existing_run_directory_is_refused(run: RunResult) -> None:
    from silobridge.errors import ConfigError

    with pytest.raises(ConfigError, match="already exists"):
        simulate({"scenario": str(TINY), "out-dir": str(run.path.parent), "run-id": "tiny-e2e"})
    assert not list(Path(run.path.parent).glob(".*partial"))
