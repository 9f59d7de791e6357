"""The analytics benchmark's error measures on known values (they judge the issue's targets)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_analytics import _cost, _f1, _itemsets, _lloyd_cost, _roc_auc


def test_roc_auc_counts_ties_half() -> None:
    y = np.array([0, 0, 1, 1])
    assert _roc_auc(np.array([0.1, 0.2, 0.3, 0.4]), y) == 1.0
    assert _roc_auc(np.array([0.4, 0.3, 0.2, 0.1]), y) == 0.0
    assert _roc_auc(np.array([0.5, 0.5, 0.5, 0.5]), y) == 0.5


def test_pooled_apriori_and_f1() -> None:
    baskets = np.array([[1, 1, 0], [1, 1, 1], [1, 0, 1], [1, 1, 0]], dtype=bool)
    items = ["a", "b", "c"]
    assert _itemsets(baskets, items, 2, 3) == {("a",), ("b",), ("c",), ("a", "b"), ("a", "c")}
    assert _itemsets(baskets, items, 1, 3) >= {("a", "b", "c")}
    assert _f1({("a",), ("b",)}, {("a",), ("c",)}) == pytest.approx(0.5)
    assert _f1(set(), set()) == 1.0


def test_kmeans_cost_and_lloyd_from_a_start() -> None:
    x = np.array([[0.0, 0.0], [0.0, 0.2], [1.0, 1.0], [1.0, 0.8]])
    assert _cost(x, np.array([[0.0, 0.1], [1.0, 0.9]])) == pytest.approx(4 * 0.01)
    # from a poor start one Lloyd round already finds the two pairs
    assert _lloyd_cost(x, np.array([[0.0, 0.0], [0.0, 0.2]]), 2) == pytest.approx(4 * 0.01)
