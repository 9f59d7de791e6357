"""A firm's half of histogram and quantiles: its counts in public bins, over the public row bound.

Values beyond the outer edges count in the outer bins (clipped into the range). The counts sum to
n / max_rows <= 1, so the vector's L2 norm is at most 1.
"""

from __future__ import annotations

import numpy as np

from silobridge.clients.data import FirmData
from silobridge.clients.query_answers.columns import column_values
from silobridge.contract.queries import HistogramParams, QuantileParams
from silobridge.contract.query_params import step_params
from silobridge.contract.query_protocol import QueryStep


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts in `edges` (last bin closed on the right), values outside clipped into the outer bins."""
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return counts.astype(np.float64)


def histogram_local(step: QueryStep, data: FirmData) -> np.ndarray:
    params = step_params(HistogramParams, step, firm=data.firm_id)
    values = column_values(data, params.table, params.column)
    return bin_counts(values, np.asarray(params.edges, dtype=np.float64)) / params.max_rows


def quantiles_local(step: QueryStep, data: FirmData) -> np.ndarray:
    params = step_params(QuantileParams, step, firm=data.firm_id)
    values = column_values(data, params.table, params.column)
    return bin_counts(values, params.edges()) / params.max_rows
