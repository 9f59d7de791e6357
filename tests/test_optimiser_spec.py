"""One OptimiserSpec from the scenario to a firm's optimiser; instructions still travel as flat keys."""

from __future__ import annotations

import pytest

from silobridge.contract.messages import BaselineInstruction, TrainInstruction
from silobridge.contract.optimiser import OptimiserSpec
from silobridge.errors import ProtocolError
from silobridge.scenarios.schema import TrainingSpec

ADAMW = OptimiserSpec(name="adamw", learning_rate=0.01, momentum=0.5, weight_decay=1e-3)


def test_an_instruction_travels_as_the_same_flat_keys_as_before() -> None:
    instruction = TrainInstruction(round=2, epochs=1, batch_size=8, optimiser=ADAMW, proximal_mu=0.0, seed=3)
    flat = instruction.to_config()
    assert flat == {
        "round": 2,
        "epochs": 1,
        "batch_size": 8,
        "optimiser": "adamw",
        "learning_rate": 0.01,
        "momentum": 0.5,
        "weight_decay": 1e-3,
        "proximal_mu": 0.0,
        "seed": 3,
    }
    assert TrainInstruction.from_config(flat) == instruction
    baseline = BaselineInstruction(max_epochs=4, patience=2, batch_size=8, optimiser=ADAMW, seed=0)
    assert BaselineInstruction.from_config(baseline.to_config()).optimiser == ADAMW


def test_a_malformed_optimiser_key_names_the_firm_and_the_field() -> None:
    flat = BaselineInstruction(max_epochs=4, patience=2, batch_size=8, optimiser=ADAMW, seed=0).to_config()
    with pytest.raises(ProtocolError, match="firm 'R1'.*malformed BaselineInstruction.*learning_rate"):
        BaselineInstruction.from_config({**flat, "learning_rate": -1.0}, firm="R1")
    del flat["weight_decay"]
    with pytest.raises(ProtocolError, match="weight_decay"):
        BaselineInstruction.from_config(flat)


def test_the_scenario_holds_the_only_defaults() -> None:
    """weight_decay 1e-4 (the scenario's default) is what every path trains with when the file is silent."""
    assert TrainingSpec().optimiser_spec == OptimiserSpec(
        name="sgd", learning_rate=0.05, momentum=0.9, weight_decay=1e-4
    )
