"""Shared by the analytics tests: the tiny scenario's firms as validated tables, and pooled references."""

from __future__ import annotations

import numpy as np

from clients.data import FirmData, firm_data_from_tables
from federation.settings import GENERATED_SCHEMA
from scenarios.generator import ChainData
from scenarios.schema import Scenario
from silobridge.config import min_periods

RTOL = 1e-9
UNITS = {"column": "units", "low": 0.0, "high": 5000.0}
REGRESSION = {
    "target": "units",
    "features": ["price", "promotion", "holiday"],
    "ranges": {"units": [0, 5000], "price": [0, 50], "promotion": [0, 1], "holiday": [0, 1]},
}


def tiny_firms(tiny_scenario: Scenario, tiny_chain: ChainData) -> list[FirmData]:
    periods = min_periods(tiny_scenario.training.lags, tiny_scenario.horizon, tiny_scenario.test_periods)
    return [
        firm_data_from_tables(
            f.id,
            tiny_chain.tables[f.id].demand,
            tiny_chain.tables[f.id].risk,
            GENERATED_SCHEMA,
            min_periods=periods,
        )
        for f in tiny_scenario.firms
    ]


def pooled(firms: list[FirmData], table: str, column: str) -> np.ndarray:
    return np.concatenate([getattr(f, table)[column].to_numpy(dtype=float) for f in firms])


def ridge_fit(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
    """The pooled reference: normal equations with the same ridge rule as the query states."""
    design = np.column_stack([np.ones(len(y)), x])
    xtx = design.T @ design
    lam = ridge * np.mean(np.diag(xtx)[1:])
    return np.linalg.solve(xtx + np.diag([0.0] + [lam] * x.shape[1]), design.T @ y)


def pooled_ar(firms: list[FirmData], lags: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Lag windows of every (firm, series) pooled, and each series in date order."""
    rows, targets, series = [], [], []
    for firm in firms:
        for _, frame in firm.demand.groupby("series"):
            y = frame.sort_values("date")["units"].to_numpy(dtype=float)
            series.append(y)
            for t in range(lags, y.size):
                rows.append(y[t - lags : t][::-1])
                targets.append(y[t])
    return np.array(rows), np.array(targets), series
