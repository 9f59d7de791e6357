"""Firm half of federated K-means: demand profiles as points, then grid counts or Lloyd statistics.

The feature map: for each demand series (or for the firm's total demand, `unit = "firm"`), over the
weeks it holds, `log_mean` = log(1 + mean units), `cv` = std / mean, `trend` = least-squares slope
per week / mean, `zero_share` = share of weeks without demand; each is mapped from its public range
onto [0, 1]. A firm uses at most `max_points` series (the first by name).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from silobridge.clients.data import FirmData
from silobridge.contract.iterative_params import KMEANS_CENTRE as CENTRE
from silobridge.contract.iterative_params import KMeansParams, KMeansStep
from silobridge.contract.query_params import step_params
from silobridge.contract.query_protocol import QueryStep
from silobridge.contract.ranges import to_unit


def profile(units: np.ndarray) -> dict[str, float]:
    """The demand-profile features of one series of weekly units."""
    u = np.asarray(units, dtype=np.float64)
    mean = float(u.mean()) if u.size else 0.0
    if u.size > 1 and mean > 0:
        t = np.arange(u.size, dtype=np.float64)
        slope = float(np.sum((t - t.mean()) * (u - mean)) / np.sum((t - t.mean()) ** 2))
        cv, trend = float(u.std()) / mean, slope / mean
    else:
        cv = trend = 0.0
    return {"log_mean": float(np.log1p(mean)), "cv": cv, "trend": trend, "zero_share": float(np.mean(u == 0))}


def points(demand: pd.DataFrame | None, query: KMeansParams) -> np.ndarray:
    """This firm's points on the [0, 1]^features scale (no rows without a demand table)."""
    if demand is None or len(demand) == 0:
        return np.zeros((0, len(query.features)))
    if query.unit == "firm":
        series = [demand.groupby("date", sort=True)["units"].sum().to_numpy()]
    else:
        names = sorted(demand["series"].unique())[: query.max_points]
        grouped = demand.sort_values("date", kind="stable").groupby("series", sort=True)["units"]
        series = [grouped.get_group(name).to_numpy() for name in names]
    raw = np.array([[profile(u)[name] for name in query.features] for u in series], dtype=np.float64)
    return to_unit(raw, query.feature_ranges())


def grid_counts(x: np.ndarray, grid: int) -> np.ndarray:
    """Points per cell of the grid on [0, 1]^features (a value of 1 falls in the last cell)."""
    width = x.shape[1]
    if len(x) == 0:
        return np.zeros(grid**width)
    cells = np.minimum((x * grid).astype(np.int64), grid - 1)
    index = np.ravel_multi_index(tuple(cells.T), (grid,) * width)
    return np.bincount(index, minlength=grid**width).astype(np.float64)


def lloyd_terms(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Per-cluster sums of x - CENTRE (k x features) and counts (k).

    Centred on the cube's public midpoint, a point adds at most sqrt(features) / 2 to a sum (not
    sqrt(features)), which halves the noise the sums need. Each point joins its nearest centroid;
    ties go to the lowest cluster index."""
    k, width = centroids.shape
    sums = np.zeros((k, width))
    counts = np.zeros(k)
    if len(x) == 0:
        return np.concatenate([sums.ravel(), counts])
    squared = np.sum((x[:, None, :] - centroids[None, :, :]) ** 2, axis=2)
    labels = np.argmin(squared, axis=1)
    np.add.at(sums, labels, x - CENTRE)
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    return np.concatenate([sums.ravel(), counts])


def local(step: QueryStep, data: FirmData) -> np.ndarray:
    """The vector this firm contributes to one K-means step."""
    parsed = step_params(KMeansStep, step, firm=data.firm_id)
    x = points(data.demand, parsed.query)
    if parsed.phase == "grid":
        return grid_counts(x, parsed.query.init_grid)
    return lloyd_terms(x, np.asarray(parsed.centroids, dtype=np.float64))
