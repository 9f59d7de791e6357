"""A firm's inventory simulation on the held-out horizon: it orders from its own forecasts.

Periodic review, order-up-to: every `review_period` periods the firm raises its inventory position
(on hand + on order - backorders) to its forecast of the demand over `lead_time + review_period`
periods plus a safety stock z(service level) x sigma x sqrt(lead_time + review_period), where sigma
is the std of its own one-period forecast error. Unmet demand is backordered and served first
from later arrivals (late). The firm starts at its first order-up-to level with nothing on order.

Only totals come out (`EfficiencySums`): served and on-time units, demand, holding, shortage and
ordering costs, forecast-error totals. Ratios are the server's business, over sums of firms.
Deterministic: no randomness anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from silobridge.contract.config import EfficiencySpec
from silobridge.contract.efficiency_sums import EfficiencySums
from silobridge.errors import ConfigError, DataError


def safety_factor(service_level: float) -> float:
    """z such that P(N(0, 1) <= z) = service_level."""
    return NormalDist().inv_cdf(service_level)


def order_up_to_level(forecast: np.ndarray, sigma: float, policy: EfficiencySpec) -> float:
    """Forecast demand over the protection interval plus safety stock."""
    cover = policy.protection
    if len(forecast) < cover:
        raise ConfigError(
            f"an order must cover {cover} periods but the forecast has {len(forecast)}", field="efficiency.lead_time"
        )
    return float(np.sum(forecast[:cover])) + safety_factor(policy.service_level) * sigma * math.sqrt(cover)


def forecast_error_std(forecast: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared one-period error of past forecasts (any shape, in units); 0 with none."""
    errors = np.asarray(forecast, dtype=float) - np.asarray(actual, dtype=float)
    return float(np.sqrt(np.mean(errors**2))) if errors.size else 0.0


@dataclass(frozen=True)
class SeriesHorizon:
    """One series on the held-out horizon: what happened, and what the firm forecast before each period.

    `forecasts[k]` was made at the end of period k - 1 for periods k, k + 1, ...; `demand[k]` is the
    demand of period k. `sigma` comes from forecasts made before the horizon (training windows).
    """

    demand: np.ndarray  # (P,)
    forecasts: np.ndarray  # (P, horizon)
    sigma: float
    firm: str = "unknown"  # whose series, for errors

    def __post_init__(self) -> None:
        demand, forecasts = np.asarray(self.demand), np.asarray(self.forecasts)
        if demand.ndim != 1 or forecasts.ndim != 2 or forecasts.shape[0] != demand.shape[0]:
            raise DataError(
                self.firm, f"need demand (P,) and forecasts (P, horizon); got {demand.shape} and {forecasts.shape}"
            )
        if not (np.all(np.isfinite(demand)) and np.all(np.isfinite(forecasts)) and math.isfinite(self.sigma)):
            raise DataError(self.firm, "demand, forecasts and sigma must be finite")
        if np.any(demand < 0) or self.sigma < 0:
            raise DataError(self.firm, "demand and sigma cannot be negative")


def simulate_series(series: SeriesHorizon, policy: EfficiencySpec) -> EfficiencySums:
    """Run the order-up-to policy over the horizon; forecast-error totals are left at zero (see `forecast_sums`)."""
    demand = np.asarray(series.demand, dtype=float)
    forecasts = np.maximum(np.asarray(series.forecasts, dtype=float), 0.0)
    periods = demand.size
    if periods == 0:
        return EfficiencySums()
    arrivals = np.zeros(periods + policy.lead_time + 1)
    on_hand = order_up_to_level(forecasts[0], series.sigma, policy)
    backlog = served = on_time = holding = shortage = 0.0
    orders = 0
    for k in range(periods):
        if k % policy.review_period == 0:
            position = on_hand + arrivals[k:].sum() - backlog
            quantity = order_up_to_level(forecasts[k], series.sigma, policy) - position
            if quantity > 0:
                arrivals[k + policy.lead_time] += quantity
                orders += 1
        available = on_hand + arrivals[k]
        late = min(backlog, available)  # backorders are served first, late
        available -= late
        backlog -= late
        now = min(demand[k], available)
        available -= now
        backlog += demand[k] - now
        on_hand = available
        served += late + now
        on_time += now
        holding += policy.holding_cost * on_hand
        shortage += policy.shortage_cost * backlog
    return EfficiencySums(
        served=served,
        on_time=on_time,
        demand=float(demand.sum()),
        holding_cost=holding,
        shortage_cost=shortage,
        order_cost=policy.order_cost * orders,
    )


def forecast_sums(forecast: np.ndarray, actual: np.ndarray) -> EfficiencySums:
    """The forecast-skill totals (sum |forecast - actual| and sum actual) of the held-out forecasts."""
    forecast = np.asarray(forecast, dtype=float)
    actual = np.asarray(actual, dtype=float)
    return EfficiencySums(abs_error=float(np.abs(forecast - actual).sum()), actual=float(actual.sum()))
