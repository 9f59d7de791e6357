"""Models and local training: losses fall, FedProx pulls towards the anchor, weights round-trip strictly."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from silobridge.clients.data import firm_data_from_tables
from silobridge.clients.firm import FirmClient
from silobridge.clients.models import build_model, load_arrays, state_to_arrays
from silobridge.clients.normaliser import Normaliser
from silobridge.clients.training import FitSettings, evaluate_loss, fit
from silobridge.contract.arrays import flatten, unflatten
from silobridge.contract.config import FederationSpec
from silobridge.contract.efficiency_sums import EfficiencyGroups
from silobridge.contract.messages import BaselineInstruction, TrainInstruction
from silobridge.contract.optimiser import OptimiserSpec
from silobridge.contract.stats import POOLED, DemandErrorStats, Moments, StatGroups, split_groups, split_slots
from silobridge.errors import ProtocolError
from silobridge.federation.settings import GENERATED_SCHEMA

CPU = torch.device("cpu")
SGD = OptimiserSpec(name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=0.0)


@pytest.fixture(scope="module")
def spec(tiny_scenario) -> FederationSpec:
    return FederationSpec(
        data=GENERATED_SCHEMA, lags=8, horizon=4, test_start=tiny_scenario.test_start, test_periods=13, hidden=16
    )


@pytest.fixture(scope="module")
def firm(tiny_chain, spec) -> FirmClient:
    tables = tiny_chain.tables["R1"]
    data = firm_data_from_tables("R1", tables.demand, tables.risk, spec.data, min_periods=spec.min_periods)
    return FirmClient(data, group="large", spec=spec, tier="retailer")


def test_demand_loss_falls_and_beats_the_untrained_model(firm: FirmClient, spec: FederationSpec) -> None:
    train, test = firm.demand_split
    model = build_model("demand", spec, seed=0)
    before = evaluate_loss(model, test.features, test.targets, loss="l1", device=CPU)
    report = fit(
        model,
        train.features,
        train.targets,
        loss="l1",
        device=CPU,
        settings=FitSettings(epochs=15, batch_size=32, optimiser=SGD, seed=1),
    )
    assert report.epoch_losses[-1] < 0.7 * report.epoch_losses[0]
    assert evaluate_loss(model, test.features, test.targets, loss="l1", device=CPU) < 0.8 * before


def test_risk_loss_falls(firm: FirmClient, spec: FederationSpec) -> None:
    train, _ = firm.risk_split
    moments = Moments.of(train.features)
    x = ((train.features - moments.mean()) / moments.std()).astype(np.float32)
    model = build_model("risk", spec, seed=0)
    report = fit(
        model,
        x,
        train.labels,
        loss="bce",
        device=CPU,
        settings=FitSettings(epochs=10, batch_size=64, optimiser=SGD),
    )
    assert report.epoch_losses[-1] < 0.5 * report.epoch_losses[0]


def test_fedprox_stays_closer_to_the_global_model(firm: FirmClient, spec: FederationSpec) -> None:
    train, _ = firm.demand_split
    distances = []
    for mu in (0.0, 5.0):
        model = build_model("demand", spec, seed=0)
        anchor = [p.detach().clone() for p in model.parameters()]
        settings = FitSettings(epochs=3, batch_size=32, optimiser=SGD, proximal_mu=mu, seed=2)
        fit(model, train.features, train.targets, loss="l1", settings=settings, device=CPU, anchor=anchor)
        distances.append(
            sum(float(((p.detach() - a) ** 2).sum()) for p, a in zip(model.parameters(), anchor, strict=True))
        )
    assert distances[1] < 0.5 * distances[0]


def test_train_returns_the_weighted_change_and_evaluates_what_it_received(
    firm: FirmClient, spec: FederationSpec
) -> None:
    weights = state_to_arrays(build_model("demand", spec, seed=3))
    instruction = TrainInstruction(
        round=1,
        epochs=1,
        batch_size=32,
        optimiser=OptimiserSpec(name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=0.0),
        proximal_mu=0.0,
        seed=0,
    )
    outcome = firm.train("demand", weights, instruction)
    assert outcome.weight == len(firm.demand_split[0])
    local = flatten(weights) + outcome.weighted_delta / outcome.weight
    assert not np.allclose(local, flatten(weights))
    np.testing.assert_allclose(split_groups(outcome.evaluation)["small"], 0.0)
    received = DemandErrorStats.from_vector(split_groups(firm.evaluate("demand", weights))["large"])
    assert DemandErrorStats.from_vector(split_groups(outcome.evaluation)["large"]) == received


def test_local_baselines_report_in_the_firms_group(firm: FirmClient) -> None:
    instruction = BaselineInstruction(
        max_epochs=20,
        patience=5,
        batch_size=64,
        optimiser=OptimiserSpec(name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=0.0),
        seed=0,
    )
    out = firm.local_baselines(instruction, EfficiencyGroups({"retailer": "retailer"}, {"retailer": 3}))
    assert set(out) == {"demand/local_only", "demand/naive", "risk/local_only", "efficiency/before"}
    demand = DemandErrorStats.from_vector(split_groups(out["demand/local_only"])["large"])
    naive = DemandErrorStats.from_vector(split_groups(out["demand/naive"])["large"])
    assert demand.count == naive.count > 0
    assert demand.metrics()["wape"] < naive.metrics()["wape"]


def test_weights_load_strictly(spec: FederationSpec) -> None:
    model = build_model("risk", spec, seed=0)
    arrays = state_to_arrays(model)
    np.testing.assert_array_equal(flatten(unflatten(flatten(arrays), arrays)), flatten(arrays))
    broken = dict(arrays)
    first = next(iter(broken))
    broken[first] = np.full_like(broken[first], np.nan)
    with pytest.raises(ValueError, match="NaN or infinite"):
        load_arrays(model, broken)
    broken[first] = np.zeros((1, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="has shape"):
        load_arrays(model, broken)
    with pytest.raises(ValueError, match="do not match the model"):
        load_arrays(model, {"other": np.zeros(1)})


def test_risk_needs_the_federation_normaliser(firm: FirmClient, spec: FederationSpec) -> None:
    weights = state_to_arrays(build_model("risk", spec, seed=0))
    with pytest.raises(ProtocolError, match="firm .R1.: the request carries no normaliser"):
        firm.evaluate("risk", weights)
    d = len(spec.data.risk_features)
    stats = firm.evaluate("risk", weights, Normaliser(np.zeros(d), np.ones(d)))
    assert stats.size == 3 * (2 * 1024 + 2)  # small, large and pooled slots


def test_firm_releases_in_the_assigned_slot_and_refuses_a_slot_of_too_few_firms(
    firm: FirmClient, spec: FederationSpec
) -> None:
    weights = state_to_arrays(build_model("demand", spec, seed=3))
    own = DemandErrorStats.from_vector(split_groups(firm.evaluate("demand", weights))["large"])
    pooled = firm.evaluate("demand", weights, groups={"demand": StatGroups({"large": POOLED}, {POOLED: 5})})
    slots = split_slots(pooled)
    np.testing.assert_array_equal(slots["large"], 0.0)
    np.testing.assert_array_equal(slots["small"], 0.0)
    assert DemandErrorStats.from_vector(slots[POOLED]) == own
    # R1 is the trio's only large firm: a 'large' slot of one firm is its own figures.
    alone = {"demand": StatGroups({"small": "small", "large": "large"}, {"small": 3, "large": 1})}
    with pytest.raises(ProtocolError, match="firm 'R1'.*slot 'large' holds 1 firm"):
        firm.evaluate("demand", weights, groups=alone)
    with pytest.raises(ProtocolError, match="firm 'R1'.*no statistics slot for the demand model"):
        firm.evaluate("demand", weights, groups={})
    # Too few holders in all: the firm releases zeros for the model.
    nothing = firm.evaluate("demand", weights, groups={"demand": StatGroups({}, {})})
    np.testing.assert_array_equal(nothing, 0.0)


def test_the_sgd_steps_equal_torch_sgd_bit_for_bit() -> None:
    """`_SgdSteps` (torch's functional SGD without the Optimizer's bookkeeping) against `torch.optim.SGD` itself,
    momentum and weight decay on: the same weights after 20 steps, to the bit."""
    import copy

    from torch import nn

    from silobridge.clients.training import _SgdSteps
    from silobridge.contract.optimiser import OptimiserSpec

    torch.manual_seed(0)
    ours = nn.Sequential(nn.Linear(7, 16), nn.ReLU(), nn.Linear(16, 3))
    reference, initial = copy.deepcopy(ours), copy.deepcopy(ours)
    spec = OptimiserSpec(name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=1e-4)
    steps = _SgdSteps(ours, spec)
    torch_sgd = torch.optim.SGD(reference.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-4, foreach=True)
    x, y = torch.randn(64, 7), torch.randn(64, 3)
    for _ in range(20):
        for model, optimiser in ((ours, steps), (reference, torch_sgd)):
            optimiser.zero_grad()
            ((model(x) - y) ** 2).mean().backward()
            optimiser.step()
    assert all(torch.equal(p, q) for p, q in zip(ours.parameters(), reference.parameters(), strict=True))
    assert not any(torch.equal(p, q) for p, q in zip(ours.parameters(), initial.parameters(), strict=True))
