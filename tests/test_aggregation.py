"""Aggregation: FedAvg over summed weighted updates equals the example-weighted mean of local models."""

from __future__ import annotations

import numpy as np
import pytest

from silobridge.contract.config import AggregationSpec
from silobridge.contract.optimiser import OptimiserSpec
from silobridge.privacy.secagg.layout import Segment, VectorLayout
from silobridge.server.aggregation import PlainSum
from silobridge.server.layouts import baselines_layout, training_layout
from silobridge.server.strategy import FedAvg

LAYOUT = VectorLayout((Segment("update", 3, 1e5), Segment("weight", 1, 1e5)))
SGD = OptimiserSpec(name="sgd", learning_rate=0.1, momentum=0.9, weight_decay=0.0)


def test_fedavg_equals_hand_computed_weighted_mean() -> None:
    global_weights = np.array([1.0, -2.0, 0.5])
    local_models = {"A": np.array([2.0, -1.0, 0.5]), "B": np.array([0.0, -4.0, 1.5]), "C": np.array([1.0, 0.0, 0.0])}
    examples = {"A": 100.0, "B": 300.0, "C": 600.0}
    contributions = {
        f: {"update": examples[f] * (m - global_weights), "weight": np.array([examples[f]])}
        for f, m in local_models.items()
    }
    summed = PlainSum().sum(contributions, LAYOUT, stage="train")
    strategy = FedAvg(local_epochs=1, batch_size=8, optimiser=SGD)
    new = strategy.aggregate_train(global_weights, summed.segments["update"], summed.segments["weight"][0])
    by_hand = (100 * local_models["A"] + 300 * local_models["B"] + 600 * local_models["C"]) / 1000
    np.testing.assert_allclose(new, by_hand)
    np.testing.assert_allclose(new, [0.8, -1.3, 0.5])
    assert summed.contributors == ["A", "B", "C"]


def test_bad_contributions_are_named_and_left_out() -> None:
    summed = PlainSum().sum(
        {
            "A": {"update": np.array([1.0, 2.0, 3.0]), "weight": np.array([1.0])},
            "B": {"update": np.array([np.nan, 1.0, 1.0])},
            "C": {"update": np.array([1.0, 2.0])},
            "D": {"weights": np.array([1.0])},
            "E": {"weight": np.array([2.0])},  # a firm without an update still adds its other segments
        },
        LAYOUT,
        stage="train",
    )
    np.testing.assert_array_equal(summed.segments["update"], [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(summed.segments["weight"], [3.0])
    assert summed.contributors == ["A", "E"]
    assert summed.rejected["B"] == "firm 'B', stage 'train': segment 'update': 1 of 3 values are NaN or infinite"
    assert "segment 'update': expected 3 values, got shape (2,)" in summed.rejected["C"]
    assert "unknown segments ['weights']" in summed.rejected["D"]


def test_strategy_refuses_an_empty_round_and_a_wrong_shape() -> None:
    strategy = FedAvg(local_epochs=1, batch_size=8, optimiser=SGD, proximal_mu=0.5)
    assert strategy.name == "fedprox" and strategy.configure_train(3).proximal_mu == 0.5
    with pytest.raises(ValueError, match="no training examples"):
        strategy.aggregate_train(np.zeros(2), np.zeros(2), 0.0)
    with pytest.raises(ValueError, match="update has 3 values"):
        strategy.aggregate_train(np.zeros(2), np.zeros(3), 5.0)


def test_layouts_bound_every_segment_and_count_clipping() -> None:
    spec = AggregationSpec(max_examples=1000, update_bound=0.5)
    layout = training_layout({"demand": 10, "risk": 4}, spec)
    names = [s.name for s in layout.segments]
    assert names[:4] == ["demand/update", "demand/weight", "demand/loss", "demand/eval"] and names[-1] == "clipped"
    assert layout.segments[0].bound == 500.0
    assert layout.count_clipped({"demand/update": np.array([499.0, -501.0, 600.0] + [0.0] * 7)}) == 2
    assert {s.name for s in baselines_layout(spec).segments} == {
        "demand/local_only",
        "demand/naive",
        "risk/local_only",
        "efficiency/before",
        "clipped",
    }
