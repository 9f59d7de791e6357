"""Aggregation: FedAvg over summed weighted updates equals the example-weighted mean of local models."""

from __future__ import annotations

import numpy as np
import pytest

from server.aggregation import PlainSum
from server.strategy import FedAvg


def test_fedavg_equals_hand_computed_weighted_mean() -> None:
    global_weights = np.array([1.0, -2.0, 0.5])
    local_models = {"A": np.array([2.0, -1.0, 0.5]), "B": np.array([0.0, -4.0, 1.5]), "C": np.array([1.0, 0.0, 0.0])}
    examples = {"A": 100.0, "B": 300.0, "C": 600.0}
    contributions = {
        f: np.concatenate([examples[f] * (m - global_weights), [examples[f]]]) for f, m in local_models.items()
    }
    summed = PlainSum().sum(contributions, length=4, stage="train")
    strategy = FedAvg(local_epochs=1, batch_size=8, learning_rate=0.1)
    new = strategy.aggregate_train(global_weights, summed.total[:-1], summed.total[-1])
    by_hand = (100 * local_models["A"] + 300 * local_models["B"] + 600 * local_models["C"]) / 1000
    np.testing.assert_allclose(new, by_hand)
    np.testing.assert_allclose(new, [0.8, -1.3, 0.5])
    assert summed.contributors == ["A", "B", "C"]


def test_bad_contributions_are_named_and_left_out() -> None:
    summed = PlainSum().sum(
        {
            "A": np.array([1.0, 2.0]),
            "B": np.array([np.nan, 1.0]),
            "C": np.array([1.0, 2.0, 3.0]),
            "D": np.array([3.0, 4.0]),
        },
        length=2,
        stage="train.demand",
    )
    np.testing.assert_array_equal(summed.total, [4.0, 6.0])
    assert summed.contributors == ["A", "D"]
    assert "firm 'B', stage 'train.demand': 1 of 2 values are NaN or infinite" == summed.rejected["B"]
    assert "expected a vector of 2 values, got shape (3,)" in summed.rejected["C"]


def test_strategy_refuses_an_empty_round_and_a_wrong_shape() -> None:
    strategy = FedAvg(local_epochs=1, batch_size=8, learning_rate=0.1, proximal_mu=0.5)
    assert strategy.name == "fedprox" and strategy.configure_train(3).proximal_mu == 0.5
    with pytest.raises(ValueError, match="no training examples"):
        strategy.aggregate_train(np.zeros(2), np.zeros(2), 0.0)
    with pytest.raises(ValueError, match="update has 3 values"):
        strategy.aggregate_train(np.zeros(2), np.zeros(3), 5.0)
