"""A firm's half of linear regression and AR(p): its sufficient statistics X^T X, X^T y, y^T y.

Linear regression's columns are clipped to their public ranges, centred on the ranges' midpoints and
divided by half their widths, and the sums by the public row bound, so every entry is in [-1, 1] (see
`silobridge.contract.queries.gram_record_bound`); AR's levels are centred on high / 2 and divided by
high / 2 (`silobridge.contract.queries.ar_standardisation`). X has an
intercept column of ones. The AR query's second step sends, per lag, the sum over the firm's
series of their last values (and how many series), from which the server forecasts the total.
With `differences` d, every series is differenced d times (and divided by 2^d) before its lag
windows; the second step then also sends the sum of each series' last d levels, for integrating.
"""

from __future__ import annotations

import numpy as np

from silobridge.clients.data import FirmData
from silobridge.clients.query_answers.columns import column_values
from silobridge.contract.queries import (
    AutoregressionParams,
    LinearRegressionParams,
    ar_standardisation,
    difference_scale,
)
from silobridge.contract.query_params import step_params
from silobridge.contract.query_protocol import QueryStep
from silobridge.errors import ProtocolError


def gram_vector(u: np.ndarray, v: np.ndarray, max_rows: int) -> np.ndarray:
    """[upper triangle of u^T u (row-major), u^T v, v^T v] / max_rows for scaled design `u` and target `v`."""
    gram = u.T @ u
    rows, cols = np.triu_indices(u.shape[1])
    return np.concatenate([gram[rows, cols], u.T @ v, [v @ v]]) / max_rows


def standardised(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clipped to [low, high], centred on the midpoint and divided by half the width: in [-1, 1]."""
    return (np.clip(values, low, high) - (low + high) / 2) / ((high - low) / 2)


def linear_regression_local(step: QueryStep, data: FirmData) -> np.ndarray:
    params = step_params(LinearRegressionParams, step, firm=data.firm_id)
    target = standardised(column_values(data, params.table, params.target), *params.ranges[params.target])
    columns = [np.ones_like(target)] + [
        standardised(column_values(data, params.table, c), *params.ranges[c]) for c in params.features
    ]
    return gram_vector(np.column_stack(columns), target, params.max_rows)


def _series(data: FirmData, high: float) -> list[np.ndarray]:
    """Each of the firm's demand series in date order, clipped to [0, high] and divided by high."""
    if data.demand is None:
        return []
    frame = data.demand.sort_values(["series", "date"], kind="stable")
    return [np.clip(rows["units"].to_numpy(dtype=np.float64), 0.0, high) / high for _, rows in frame.groupby("series")]


def lag_windows(series: np.ndarray, lags: int) -> tuple[np.ndarray, np.ndarray]:
    """Design [1, y_{t-1}, ..., y_{t-lags}] and target y_t for every t with `lags` earlier values."""
    n = series.size - lags
    if n <= 0:
        return np.zeros((0, lags + 1)), np.zeros(0)
    lagged = [series[lags - i : lags - i + n] for i in range(1, lags + 1)]
    return np.column_stack([np.ones(n), *lagged]), series[lags:]


def differenced(series: np.ndarray, differences: int) -> np.ndarray:
    """The series differenced `differences` times, divided by 2^d so that it stays in [-1, 1]."""
    return np.diff(series, n=differences) / difference_scale(differences) if differences else series


def ar_standardised(series: np.ndarray, high: float, differences: int) -> np.ndarray:
    """A series on [0, 1] (units / high), differenced and standardised as `ar_standardisation` says: [-1, 1]."""
    centre, half = ar_standardisation(high, differences)
    return (np.diff(series * high, n=differences) - centre) / half


def autoregression_local(step: QueryStep, data: FirmData) -> np.ndarray:
    params = step_params(AutoregressionParams, step, firm=data.firm_id)
    lags, d = params.lags, params.differences
    series = _series(data, params.high)
    if step.step == 0:
        windows = [lag_windows(ar_standardised(s, params.high, d), lags) for s in series if s.size > d]
        u = np.concatenate([w[0] for w in windows]) if windows else np.zeros((0, lags + 1))
        v = np.concatenate([w[1] for w in windows]) if windows else np.zeros(0)
        return gram_vector(u, v, params.max_rows)
    if step.step == 1:
        # per series: its last `lags` differenced values and its last d levels, most recent first
        kept = [s for s in series if s.size >= lags + d]
        ends = np.zeros(lags + d)
        for s in kept:
            ends += np.concatenate([differenced(s, d)[::-1][:lags], s[::-1][:d]])
        return np.concatenate([[len(kept)], ends]) / params.max_series
    raise ProtocolError(f"query '{step.query}' has steps 0 and 1, not {step.step}", firm=data.firm_id)
