"""Firm half of federated anomaly detection: a shared random half-space forest, scored locally.

Choice: not scikit-learn's IsolationForest, whose splits are drawn from each firm's own data (so
scores would not be comparable across firms and the trees would leak data values). Every firm
instead builds the same forest from the query's seed: in each tree, a box randomly shifted around
[0, 1]^features (the public ranges, rescaled) is halved at mid-points of randomly chosen features
(Tan, Ting and Liu's half-space trees). The federation releases how many records fall in each leaf;
a record's isolation depth in a tree is the first depth on its path whose node holds at most
`isolation_mass` records chain-wide, plus the usual average path length c(mass) of what is left;
its score is 2 ** (-mean depth / c(records)), as in an isolation forest (near 1: anomalous).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from silobridge.clients.data import FirmData
from silobridge.contract.iterative_params import AnomalyParams, AnomalyStep
from silobridge.contract.query_params import step_params
from silobridge.contract.query_protocol import QueryStep
from silobridge.contract.ranges import to_unit
from silobridge.errors import ProtocolError

EULER_GAMMA = 0.5772156649015329


@lru_cache(maxsize=8)
def build_forest(trees: int, depth: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(feature, split) of every internal node, (trees, 2 ** depth - 1) in heap order; data-independent.

    Cached (every step of a query uses the same forest); the arrays are read-only."""
    rng = np.random.default_rng(seed)
    nodes = 2**depth - 1
    feature = np.zeros((trees, nodes), dtype=np.int64)
    split = np.zeros((trees, nodes))
    for t in range(trees):
        centre = rng.uniform(0.0, 1.0, size=width)
        reach = 2.0 * np.maximum(centre, 1.0 - centre)  # the shifted box still covers [0, 1]
        low = np.zeros((2 * nodes + 1, width))
        high = np.zeros((2 * nodes + 1, width))
        low[0], high[0] = centre - reach, centre + reach
        for node in range(nodes):
            q = int(rng.integers(width))
            cut = (low[node, q] + high[node, q]) / 2.0
            feature[t, node], split[t, node] = q, cut
            for child in (2 * node + 1, 2 * node + 2):
                low[child], high[child] = low[node], high[node]
            high[2 * node + 1, q] = cut
            low[2 * node + 2, q] = cut
    feature.flags.writeable = False
    split.flags.writeable = False
    return feature, split


def leaves(x: np.ndarray, feature: np.ndarray, split: np.ndarray, depth: int) -> np.ndarray:
    """Leaf index (0 .. 2 ** depth - 1) of every record in every tree: (records, trees)."""
    trees = feature.shape[0]
    node = np.zeros((len(x), trees), dtype=np.int64)
    tree = np.arange(trees)[None, :]
    rows = np.arange(len(x))[:, None]
    for _ in range(depth):
        right = x[rows, feature[tree, node]] >= split[tree, node]
        node = 2 * node + 1 + right
    return node - (2**depth - 1)


def leaf_masses(leaf: np.ndarray, trees: int, depth: int) -> np.ndarray:
    """Records per leaf, (trees * 2 ** depth), tree by tree."""
    offsets = np.arange(trees)[None, :] * 2**depth
    return np.bincount((leaf + offsets).ravel(), minlength=trees * 2**depth).astype(np.float64)


def average_path(n: np.ndarray | float) -> np.ndarray:
    """c(n): the average path length of an unsuccessful search in a binary search tree of n records."""
    n = np.asarray(n, dtype=np.float64)
    safe = np.maximum(n, 2.0 + 1e-12)
    long = 2.0 * (np.log(safe - 1.0) + EULER_GAMMA) - 2.0 * (safe - 1.0) / safe
    return np.where(n > 2.0, long, np.where(n > 1.0, 1.0, 0.0))


def scores(leaf: np.ndarray, masses: np.ndarray, *, trees: int, depth: int, isolation_mass: float) -> np.ndarray:
    """Isolation scores in (0, 1] of records with the given leaves, from the chain-wide leaf masses."""
    levels = [np.asarray(masses, dtype=np.float64).reshape(trees, 2**depth)]
    for _ in range(depth):  # noisy masses are summed as released (unbiased), then clamped at 0
        levels.insert(0, levels[0].reshape(trees, -1, 2).sum(axis=2))
    levels = [np.maximum(level, 0.0) for level in levels]
    tree = np.arange(trees)[None, :]
    path = np.stack([levels[d][tree, leaf >> (depth - d)] for d in range(depth + 1)], axis=2)  # (n, T, D+1)
    isolated = path <= isolation_mass
    at = np.where(isolated.any(axis=2), np.argmax(isolated, axis=2), depth)
    remaining = np.take_along_axis(path, at[:, :, None], axis=2)[:, :, 0]
    length = (at + average_path(remaining)).mean(axis=1)
    norm = float(average_path(levels[0].mean()))
    return np.power(2.0, -length / (norm if norm > 0 else 1.0))


def unit_records(data: FirmData, query: AnomalyParams, *, firm: str) -> np.ndarray:
    """The firm's (most recent, capped) risk records on the [0, 1]^features scale."""
    if data.risk is None:
        return np.zeros((0, len(query.features)))
    missing = [name for name in query.features if name not in data.risk.columns]
    if missing:
        raise ProtocolError(f"query asks for risk features {missing} this firm's table lacks", firm=firm)
    rows = data.risk.tail(query.max_records)
    return to_unit(rows[list(query.features)].to_numpy(dtype=np.float64), query.feature_ranges())


def score_histogram(values: np.ndarray, bins: int) -> np.ndarray:
    """Counts of scores in `bins` equal bins of [0, 1] (a score of 1 falls in the last)."""
    index = np.minimum((values * bins).astype(np.int64), bins - 1)
    return np.bincount(index, minlength=bins).astype(np.float64)


def local(step: QueryStep, data: FirmData) -> np.ndarray:
    """The vector this firm contributes to one step: leaf masses, a score histogram, or flagged counts."""
    parsed = step_params(AnomalyStep, step, firm=data.firm_id)
    q = parsed.query
    x = unit_records(data, q, firm=data.firm_id)
    feature, split = build_forest(q.trees, q.depth, len(q.features), q.seed)
    leaf = leaves(x, feature, split, q.depth)
    if parsed.phase == "mass":
        return leaf_masses(leaf, q.trees, q.depth)
    s = scores(leaf, np.asarray(parsed.masses), trees=q.trees, depth=q.depth, isolation_mass=q.isolation_mass)
    if parsed.phase == "histogram":
        return score_histogram(s, q.score_bins)
    return np.array([float(np.count_nonzero(s >= parsed.cutoff)), float(len(s))])
