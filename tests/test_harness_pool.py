"""The harness's per-firm fits over a process pool give exactly what the one-after-another path gives."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from silobridge.clients.deploy import demand_statistics, risk_training
from silobridge.clients.linear import demand_dim, logistic_fit, ridge
from silobridge.clients.models import build_model, state_to_arrays
from silobridge.clients.normaliser import Normaliser
from silobridge.contract.sufficient import split_regression
from silobridge.errors import DataError, FederationError, ProtocolError
from silobridge.federation.coordinator import baseline_instruction
from silobridge.federation.deployment import DeployedOutcome, deploy_all
from silobridge.federation.harness import MIN_POOLED_FIRMS, SimulationHarness
from silobridge.federation.harness_pool import _portable, map_in_order
from silobridge.federation.settings import settings_from_run_config
from silobridge.federation.simulation_cpus import simulation_cpus
from silobridge.server.efficiency import group_tiers
from tests.conftest import TINY

pytestmark = pytest.mark.slow  # spawns two worker processes and fits every tiny firm's local-only models


def _global_models(harness: SimulationHarness, norm: Normaliser) -> dict[str, Any]:
    """Pooled linear models (stand-ins for the released global ones) and a seeded demand MLP."""
    firms = harness.firms
    spec = firms[0].spec
    demand = [f for f in firms if f.trains("demand")]
    xtx, xty = split_regression(sum(demand_statistics(f) for f in demand), demand_dim(spec), spec.horizon)
    rows = [risk_training(f, norm) for f in firms if f.trains("risk")]
    x, y = np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])
    risk = logistic_fit(x, y, spec.linear.risk_ridge)
    return {
        "linear": {"demand": ridge(xtx, xty, spec.linear.ridge), "risk": risk},
        "mlp": {"demand": state_to_arrays(build_model("demand", spec, seed=3))},
    }


def _same(a: Any, b: Any) -> bool:
    """Equal bit for bit, nan equal to nan, through dicts, lists and arrays."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b, equal_nan=True)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return a == b


def _outcome(outcome: DeployedOutcome) -> dict[str, Any]:
    return {name: getattr(outcome, name) for name in DeployedOutcome.__dataclass_fields__}


def test_pooled_baselines_and_deployment_equal_the_sequential_path_bit_for_bit() -> None:
    settings = settings_from_run_config({"scenario": str(TINY)})
    instruction = baseline_instruction(settings).model_copy(update={"max_epochs": 3, "patience": 1})  # quick fits
    sequential, pooled = SimulationHarness(settings, workers=1), SimulationHarness(settings, workers=2)
    minimum = settings.spec.efficiency.min_firms_per_group
    groups = group_tiers([f.tier for f in sequential.firms if f.trains("demand")], minimum).assignment
    norm = Normaliser.from_ranges(settings.spec.data.risk_feature_ranges, settings.spec.data.risk_features)
    models = _global_models(sequential, norm)

    reference = sequential.firm_baselines(instruction, groups)  # main's loop: each firm in turn, this process
    expected = deploy_all(sequential.firms, reference, instruction, groups, norm, models["linear"], models["mlp"])
    baselines = pooled.firm_baselines(instruction, groups)
    deployed = pooled.deploy(instruction, groups, norm, models["linear"], models["mlp"])

    assert list(baselines) == [f.firm_id for f in sequential.firms] and _same(baselines, reference)
    assert _same(pooled.local_baselines(instruction, groups), sequential.local_baselines(instruction, groups))
    assert _same(_outcome(deployed), _outcome(expected))
    choices = [row["choice"] for row in deployed.per_firm["demand"] + deployed.per_firm["risk"]]
    assert len(choices) == 2 * len(sequential.firms) and len(set(choices)) > 1  # real choices, not one default


def _fails(item: str) -> str:
    if item == "bad":
        raise ProtocolError("no data", firm="F9")
    return item


def test_a_firm_that_fails_in_a_worker_fails_the_stage_naming_it() -> None:
    with pytest.raises(ProtocolError, match="firm 'F9': no data"):
        map_in_order(_fails, ["a", "bad", "c"], workers=2)


def test_an_error_that_cannot_travel_back_comes_as_its_message() -> None:
    unpicklable = DataError("F8", "risk.csv, row 3: not a number")  # needs more than its message to be rebuilt
    assert isinstance(_portable(unpicklable), FederationError) and str(_portable(unpicklable)) == str(unpicklable)
    kept = ProtocolError("no data", firm="F9")
    assert _portable(kept) is kept


def test_a_few_firms_fit_in_this_process_unless_workers_are_named() -> None:
    few = settings_from_run_config({"scenario": str(TINY)})  # 5 firms
    many = settings_from_run_config({"scenario": "scenarios/default.toml"})  # 12 firms
    assert len(few.scenario.firms) < MIN_POOLED_FIRMS <= len(many.scenario.firms)
    assert SimulationHarness(few).workers == 1
    assert SimulationHarness(few, workers=2).workers == 2
    assert SimulationHarness(many, workers=2).workers == 2
    assert SimulationHarness(many).workers == simulation_cpus()
