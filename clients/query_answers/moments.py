"""A firm's half of count, sum, mean and variance: its row count and power sums, scaled by public bounds.

count sends [n / max_rows]; sum [sum x / (max_rows M)]; mean adds the count; variance also
sum x^2 / (max_rows M^2), with x clipped to the public [low, high] and M = max(|low|, |high|), each
entry times its public weight (`silobridge.contract.queries.MOMENT_WEIGHTS`). Within the bounds every entry is
in [-1, 1], and one row moves the vector by at most ||weights|| / max_rows.
"""

from __future__ import annotations

import numpy as np

from silobridge.clients.data import FirmData
from silobridge.clients.query_answers.columns import column_values, row_count
from silobridge.contract.queries import MOMENT_WEIGHTS, ColumnParams, CountParams
from silobridge.contract.query_params import step_params
from silobridge.contract.query_protocol import QueryStep


def count_local(step: QueryStep, data: FirmData) -> np.ndarray:
    params = step_params(CountParams, step, firm=data.firm_id)
    return np.array([MOMENT_WEIGHTS["count"][0] * row_count(data, params.table) / params.max_rows])


def _power_sums(step: QueryStep, data: FirmData, powers: tuple[int, ...]) -> np.ndarray:
    params = step_params(ColumnParams, step, firm=data.firm_id)
    values = np.clip(column_values(data, params.table, params.column), params.low, params.high)
    scale = params.magnitude
    weights = MOMENT_WEIGHTS[step.query]
    return np.array([w * np.sum((values / scale) ** k) / params.max_rows for w, k in zip(weights, powers, strict=True)])


def sum_local(step: QueryStep, data: FirmData) -> np.ndarray:
    return _power_sums(step, data, (1,))


def mean_local(step: QueryStep, data: FirmData) -> np.ndarray:
    return _power_sums(step, data, (0, 1))


def variance_local(step: QueryStep, data: FirmData) -> np.ndarray:
    return _power_sums(step, data, (0, 1, 2))
