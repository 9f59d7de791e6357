"""Shared by the analytics tests: firms as validated tables, pooled references, and a federation in a loop.

`drive` runs a plan to its answer the way the engine does (optionally adding Gaussian noise of
`noise_multiplier x step.sensitivity(unit)` to each released sum), sending each step through a JSON round trip as
it would travel in a Flower message; `pooled_firm` turns several firms into one firm holding all rows,
`pooled` concatenates one column of every firm.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from silobridge.clients.data import FirmData, firm_data_from_tables
from silobridge.clients.query_answers import LOCAL_HALVES
from silobridge.contract.config import min_periods
from silobridge.contract.query_protocol import QueryPlan, QueryStep, clip_answer
from silobridge.federation.settings import GENERATED_SCHEMA
from silobridge.scenarios.generator import ChainData, generate_chain
from silobridge.scenarios.schema import Scenario, load_scenario

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
            orders=tiny_chain.tables[f.id].orders,
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


@dataclass
class Trace:
    """What a driven query released: the steps asked and the sums released."""

    steps: list[QueryStep] = field(default_factory=list)
    totals: list[np.ndarray] = field(default_factory=list)
    clipped: int = 0


def drive(
    plan: QueryPlan,
    firms: list[FirmData],
    *,
    noise_multiplier: float = 0.0,
    seed: int = 0,
    max_steps: int = 200,
    unit: str = "record",
) -> tuple[dict[str, Any], Trace]:
    """Run `plan` over `firms`; returns its result and the trace of releases."""
    rng = np.random.default_rng(seed)
    trace = Trace()
    step = plan.first()
    while step is not None:
        if len(trace.steps) >= max_steps:
            raise RuntimeError(f"plan {plan.name} did not finish in {max_steps} steps")
        if step.step >= plan.planned_steps:  # the engine refuses it: budgets are charged for planned_steps
            raise RuntimeError(f"plan {plan.name} asked step {step.step} beyond its {plan.planned_steps} planned")
        step = QueryStep.model_validate_json(step.model_dump_json())  # as it travels in a message
        total = np.zeros(step.length)
        for firm in firms:
            answer = clip_answer(step, LOCAL_HALVES[step.query](step, firm), firm=firm.firm_id)
            total += answer.vector
            trace.clipped += answer.clipped
        if noise_multiplier > 0:
            total = total + rng.normal(0.0, noise_multiplier * step.sensitivity(unit), size=step.length)
        trace.steps.append(step)
        trace.totals.append(total)
        step = plan.next(total, len(firms))
    if len(trace.steps) > plan.planned_steps:
        raise RuntimeError(f"plan {plan.name} released {len(trace.steps)} sums, more than its {plan.planned_steps}")
    result = plan.result()
    if json.loads(json.dumps(result)) != result:
        raise RuntimeError(f"plan {plan.name}'s result does not survive JSON")
    return result, trace


def pooled_firm(firms: list[FirmData]) -> FirmData:
    """One firm holding every firm's rows (series and order ids made unique per firm)."""

    def stack(tables: list[pd.DataFrame | None], key: str | None) -> pd.DataFrame | None:
        parts = []
        for firm, table in zip(firms, tables, strict=True):
            if table is None:
                continue
            table = table.copy()
            if key is not None:
                table[key] = firm.firm_id + "/" + table[key].astype(str)
            parts.append(table)
        return pd.concat(parts, ignore_index=True) if parts else None

    return FirmData(
        firm_id="pooled",
        demand=stack([f.demand for f in firms], "series"),
        risk=stack([f.risk for f in firms], None),
        orders=stack([f.orders for f in firms], "order_id"),
    )


@lru_cache(maxsize=2)
def chain_firms(scenario_path: str) -> tuple[ChainData, tuple[FirmData, ...]]:
    """A generated chain and its firms' validated data (generated once per test session)."""
    scenario = load_scenario(scenario_path)
    chain = generate_chain(scenario)
    need = min_periods(scenario.training.lags, scenario.horizon, scenario.test_periods)
    firms = tuple(
        firm_data_from_tables(f.id, t.demand, t.risk, GENERATED_SCHEMA, min_periods=need, orders=t.orders)
        for f in scenario.firms
        for t in [chain.tables[f.id]]
    )
    return chain, firms
