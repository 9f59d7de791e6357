"""A firm's halves of the federated analytics queries: query name -> local statistics of one step.

Each half reads the step's parameters, computes on the firm's own validated tables and returns one
vector; the caller clips it with `silobridge.contract.query_protocol.clip_answer` and releases it through the
secure sum. Nothing else leaves the firm.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from silobridge.clients.data import FirmData
from silobridge.clients.query_answers import anomaly, apriori, kmeans, logistic
from silobridge.clients.query_answers.histogram import histogram_local, quantiles_local
from silobridge.clients.query_answers.moments import count_local, mean_local, sum_local, variance_local
from silobridge.clients.query_answers.regression import autoregression_local, linear_regression_local
from silobridge.contract.queries import TableQuery
from silobridge.contract.query_protocol import LocalAnswer, QueryStep, clip_answer
from silobridge.errors import ProtocolError

LocalHalf = Callable[[QueryStep, FirmData], np.ndarray]

LOCAL_HALVES: dict[str, LocalHalf] = {
    "count": count_local,
    "sum": sum_local,
    "mean": mean_local,
    "variance": variance_local,
    "histogram": histogram_local,
    "quantiles": quantiles_local,
    "linear_regression": linear_regression_local,
    "autoregression": autoregression_local,
    "logistic_regression": logistic.local,
    "kmeans": kmeans.local,
    "frequent_itemsets": apriori.local,
    "anomaly_detection": anomaly.local,
}


def _named_table(step: QueryStep) -> tuple[str, ...]:
    return (str(step.params.get("table", TableQuery.model_fields["table"].default)),)


TABLES_READ: dict[str, Callable[[QueryStep], tuple[str, ...]]] = {
    "count": _named_table,
    "sum": _named_table,
    "mean": _named_table,
    "variance": _named_table,
    "histogram": _named_table,
    "quantiles": _named_table,
    "linear_regression": _named_table,
    "autoregression": lambda step: ("demand",),
    "kmeans": lambda step: ("demand",),
    "logistic_regression": lambda step: ("risk",),
    "anomaly_detection": lambda step: ("risk",),
    "frequent_itemsets": lambda step: ("orders",),
}
"""The firm's data sets each query's half reads: what a lifetime odometer charges a query step to."""


def tables_read(step: QueryStep, *, firm: str) -> tuple[str, ...]:
    """The data sets (demand, risk, orders) one step of the named query reads on this firm's side."""
    reads = TABLES_READ.get(step.query)
    if reads is None:
        raise ProtocolError(
            f"unknown query '{step.query}' (this firm answers: {', '.join(sorted(TABLES_READ))})", firm=firm
        )
    return reads(step)


def answer_step(step: QueryStep, data: FirmData) -> LocalAnswer:
    """The firm's answer to one step: its half of the named query, clipped to the step's public bounds."""
    half = LOCAL_HALVES.get(step.query)
    if half is None:
        raise ProtocolError(
            f"unknown query '{step.query}' (this firm answers: {', '.join(sorted(LOCAL_HALVES))})", firm=data.firm_id
        )
    return clip_answer(step, half(step, data), firm=data.firm_id)
