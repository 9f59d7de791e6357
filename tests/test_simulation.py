"""End to end: real Flower simulations of the tiny scenario, run in-process, and their run directories.

Runs of the same scenario and seed without DP (so models can be compared exactly): secure
aggregation (conftest's OPEN_RUN, which test_report and test_efficiency_run read too), aggregation in the
clear, and secure aggregation with 30% of the firms vanishing after sending their masked input. The
differentially private default has its own tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from silobridge.clients.models import build_model
from silobridge.contract.stats import POOLED, split_slots
from silobridge.federation.server_app import RunResult
from silobridge.federation.settings import settings_from_run_config
from silobridge.federation.simulation import simulate
from silobridge.federation.summary_schema import METHODS, METRICS
from tests.conftest import OPEN_RUN_SECURE_SUMS, TINY


def _simulate(out: Path, run_id: str, **config: object) -> RunResult:
    return simulate({"scenario": str(TINY), "out-dir": str(out), "run-id": run_id, **config})


NO_BASELINES = "training.baselines=none"


@pytest.fixture(scope="module")
def runs(tiny_open_run: RunResult, tmp_path_factory: pytest.TempPathFactory) -> dict[str, RunResult]:
    out = tmp_path_factory.mktemp("runs")
    # The plain and dropout runs are compared with the secure one in their models and federated metrics only:
    # they fit no local-only baselines (training does not depend on them; a firm's dropout draws are seeded
    # by firm, sum and stage, so the training rounds' draws are unchanged).
    return {
        "secure": tiny_open_run,
        "plain": _simulate(out, "tiny-plain", aggregation="plain", dp="off", set=NO_BASELINES),
        "dropout": _simulate(
            out, "tiny-dropout", dp="off", set=f"dropout.rate=0.3;dropout.stage=after_masking;{NO_BASELINES}"
        ),
    }


@pytest.fixture(scope="module")
def run(runs: dict[str, RunResult]) -> RunResult:
    return runs["secure"]


def _weights(run: RunResult, kind: str) -> dict[str, torch.Tensor]:
    return torch.load(run.path / "models" / f"{kind}.pt")


def test_run_directory_is_complete(run: RunResult) -> None:
    assert run.path.name == "open"
    names = {p.name for p in run.path.iterdir()}
    # checkpoint.npz: the state after the last round, kept as the README's run-directory table says
    assert names == {"checkpoint.npz", "config.json", "metrics.jsonl", "models", "summary.json", "summary.md"}
    assert not list(run.path.parent.glob(".*partial"))
    config = json.loads((run.path / "config.json").read_text())
    assert config["scenario"]["name"] == "tiny" and config["run_config"]["run-id"] == "open"
    assert json.loads((run.path / "summary.json").read_text()) == run.summary
    assert "| federated |" in (run.path / "summary.md").read_text()


def test_summary_has_every_model_method_and_metric_for_all_firms_only(run: RunResult) -> None:
    """Tiny has 2 large firms: without DP the firms pool their statistics and only 'all' is released,
    whatever the method; the checks that need the small group cannot be judged."""
    models = run.summary["models"]
    for kind, methods in METHODS.items():
        assert set(models[kind]) == {*methods, "per_firm"}  # without DP 'auto' trains both families
        for method in methods:
            assert set(models[kind][method]) == {"all"}
            assert set(models[kind][method]["all"]) == set(METRICS[kind])
    assert all(models["demand"][m]["all"]["wape"] > 0 for m in METHODS["demand"])
    assert run.summary["federation"]["groups"] == {"small": 3, "large": 2}
    for kind in ("demand", "risk"):
        assert "(3 small, 2 large): only 'all' is" in run.summary["groups_withheld"][kind]
    assert run.summary["dropouts"] == []
    judged = {c["name"]: c["passed"] for c in run.summary["acceptance"]}
    for name, passed in judged.items():
        if "small" in name or "non-private" in name:  # withheld groups; the other run is not known to this one
            assert passed is None
        else:
            assert isinstance(passed, bool)
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert all(set(r["metrics"]) == {"all"} for r in records if not r["model"].endswith("_linear"))
    assert {r["model"] for r in records if r["metrics"] is None} == {"demand_linear", "risk_linear"}


def test_secure_sums_of_statistics_fill_only_the_pooled_slot(runs: dict[str, RunResult]) -> None:
    """What the server decoded from every secure sum of statistics: zero in the small and large slots."""
    stages = {stage for stage, _ in OPEN_RUN_SECURE_SUMS}
    assert {"baselines", "round 1", "evaluate"} <= stages
    checked = 0
    for _, segments in OPEN_RUN_SECURE_SUMS:
        for name, vector in segments.items():
            if name.endswith(("/eval", "/local_only", "/naive")):
                slots = split_slots(vector)
                np.testing.assert_array_equal(slots["small"], 0.0)
                np.testing.assert_array_equal(slots["large"], 0.0)
                assert slots[POOLED][-1] > 0  # a count: every holder's statistics are in the pooled slot
                checked += 1
    assert checked == 3 + 2 * 4 + 2  # baselines, 4 rounds of both models, the final evaluation


def test_secure_aggregation_is_the_default_and_is_described(run: RunResult, runs: dict[str, RunResult]) -> None:
    secure = run.summary["federation"]["aggregation"]
    assert secure["mode"] == "secure"
    # Five firms: every firm neighbours every other (classic SecAgg); a majority of 5 holders.
    assert secure["num_neighbours"] == 4 and secure["threshold"] == 3 and secure["complete_graph"]
    assert secure["modulus_bits"] == 48 + 3 and secure["clipped_values"] == 0
    assert runs["plain"].summary["federation"]["aggregation"] == {"mode": "plain"}


def test_secure_model_matches_plain_fedavg(runs: dict[str, RunResult]) -> None:
    """Per round the decoded sum differs from the float sum by at most the layout's quantisation bound
    (about 1e-9 on a weighted update, 1e-13 on the averaged model); after float32 rounding of the
    weights the two runs' models agree to well within 1e-5."""
    for kind in ("demand", "risk"):
        secure, plain = _weights(runs["secure"], kind), _weights(runs["plain"], kind)
        for name in plain:
            np.testing.assert_allclose(secure[name].numpy(), plain[name].numpy(), atol=1e-5, rtol=0)
    for kind, metric in (("demand", "wape"), ("risk", "roc_auc")):
        assert runs["secure"].summary["models"][kind]["federated"]["all"][metric] == pytest.approx(
            runs["plain"].summary["models"][kind]["federated"]["all"][metric], abs=1e-5
        )


def test_dropouts_after_masking_are_recovered_and_lose_nothing(runs: dict[str, RunResult]) -> None:
    dropped = runs["dropout"].summary["dropouts"]
    vanished = [d for d in dropped if d["firm"] and "vanished after masking" in d["reason"]]
    assert vanished, "the scenario's 30% dropout made nobody vanish"
    # Every vanished firm's masked input was recovered from its neighbours' shares (or the sum was
    # retried), so the models equal those of the run without dropouts.
    for kind in ("demand", "risk"):
        with_dropouts, without = _weights(runs["dropout"], kind), _weights(runs["secure"], kind)
        for name in without:
            np.testing.assert_allclose(with_dropouts[name].numpy(), without[name].numpy(), atol=1e-5, rtol=0)


def test_federated_metrics_beat_round_zero(run: RunResult) -> None:
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert [r["round"] for r in records if r["model"] == "demand"] == [1, 2, 3, 4]
    first = {r["model"]: r for r in records if r["round"] == 1}
    assert first["demand"]["evaluated_round"] == 0
    final = run.summary["models"]
    # The initial model forecasts about zero (WAPE near 1) and scores disruptions at random.
    assert final["demand"]["federated"]["all"]["wape"] < 0.6 * first["demand"]["metrics"]["all"]["wape"]
    assert final["risk"]["federated"]["all"]["roc_auc"] > first["risk"]["metrics"]["all"]["roc_auc"] + 0.1
    losses = [r["train_loss"] for r in records if r["model"] == "demand"]
    assert losses[-1] < losses[0]


def test_saved_models_load(run: RunResult) -> None:
    spec = settings_from_run_config({"scenario": str(TINY)}).spec
    for kind in ("demand", "risk"):
        model = build_model(kind, spec)
        model.load_state_dict(_weights(run, kind))
    normaliser = json.loads((run.path / "models" / "risk_normaliser.json").read_text())
    assert len(normaliser["mean"]) == len(spec.data.risk_features)


def test_existing_run_directory_is_refused(run: RunResult) -> None:
    from silobridge.errors import ConfigError

    with pytest.raises(ConfigError, match="already exists"):
        simulate({"scenario": str(TINY), "out-dir": str(run.path.parent), "run-id": "open", "dp": "off"})
    assert not list(Path(run.path.parent).glob(".*partial"))
