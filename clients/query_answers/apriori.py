"""Firm half of federated frequent itemsets: how many of this firm's baskets contain each candidate.

Bounded contribution: only items of the query's vocabulary count; the firm keeps at most
`max_baskets` baskets and at most `max_basket_items` items of each, both chosen by SHA-256 of the
order id (and item), so the choice is fixed, the same at every level, and independent of the items'
names or popularity.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import pandas as pd

from silobridge.clients.data import FirmData
from silobridge.contract.iterative_params import AprioriParams, AprioriStep
from silobridge.contract.query_params import step_params
from silobridge.contract.query_protocol import QueryStep

_CHUNK = 512
"""Candidates counted at once (bounds the memory of the baskets x candidates x size test)."""


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _item_order(order_id: object) -> Callable[[object], str]:
    """The sort key of one basket's items: their digests salted with the order id."""
    return lambda item: _digest(f"{order_id}\x00{item}")


def basket_matrix(orders: pd.DataFrame | None, query: AprioriParams) -> np.ndarray:
    """Baskets x vocabulary incidence (bool) after the contribution bounds."""
    vocabulary = {item: i for i, item in enumerate(query.items)}
    matrix = np.zeros((0, len(vocabulary)), dtype=bool)
    if orders is None or len(orders) == 0:
        return matrix
    known = orders[orders["item"].isin(vocabulary)]
    kept = sorted(known["order_id"].unique(), key=_digest)[: query.max_baskets]
    matrix = np.zeros((len(kept), len(vocabulary)), dtype=bool)
    rows = {order_id: i for i, order_id in enumerate(kept)}
    for order_id, items in known[known["order_id"].isin(rows)].groupby("order_id", sort=False)["item"]:
        chosen = sorted(items, key=_item_order(order_id))[: query.max_basket_items]
        matrix[rows[order_id], [vocabulary[item] for item in chosen]] = True
    return matrix


def candidate_counts(matrix: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Baskets containing every item of each candidate (`candidates`: vocabulary indices, one row each)."""
    counts = np.zeros(len(candidates))
    for start in range(0, len(candidates), _CHUNK):
        block = candidates[start : start + _CHUNK]
        counts[start : start + _CHUNK] = matrix[:, block].all(axis=2).sum(axis=0)
    return counts


def local(step: QueryStep, data: FirmData) -> np.ndarray:
    """The vector this firm contributes at one Apriori level (zeros if it holds no order baskets)."""
    parsed = step_params(AprioriStep, step, firm=data.firm_id)
    vocabulary = {item: i for i, item in enumerate(parsed.query.items)}
    candidates = np.array([[vocabulary[item] for item in c] for c in parsed.candidates], dtype=np.int64)
    return candidate_counts(basket_matrix(data.orders, parsed.query), candidates)
