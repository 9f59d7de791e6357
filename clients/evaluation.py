"""A firm's test-split statistics of a model and the efficiency sums of ordering from its forecasts.

What leaves is always a group-slotted statistics vector or a tier-slotted efficiency vector, so the
server only ever sees sums over a group or a tier of the chain.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.special import expit

from silobridge.clients.features import DemandWindows
from silobridge.clients.holdings import FirmHoldings, StatSlots
from silobridge.clients.inventory import SeriesHorizon, forecast_error_std, forecast_sums, simulate_series
from silobridge.clients.models import ModelKind, build_model, load_arrays
from silobridge.clients.normaliser import Normaliser
from silobridge.clients.training import predict
from silobridge.contract.efficiency_sums import EFFICIENCY_AFTER, EfficiencyGroups, EfficiencySums, slot_by_tier
from silobridge.contract.stats import DemandErrorStats, RiskStats
from silobridge.contract.wire_names import eval_segment
from silobridge.errors import ConfigError, ProtocolError

Forecaster = Callable[[DemandWindows], np.ndarray]
"""Forecasts in units of the given windows."""


def forecast_units(model: torch.nn.Module, windows: DemandWindows, device: torch.device) -> np.ndarray:
    """The model's forecasts of each window, in units (never negative)."""
    if len(windows) == 0:
        return np.zeros(windows.targets.shape, dtype=float)
    scaled = predict(model, windows.features, device=device).reshape(len(windows), -1)
    return np.maximum(scaled * windows.scale[:, None], 0.0)


def demand_stats(model: torch.nn.Module, windows: DemandWindows, device: torch.device) -> DemandErrorStats:
    return DemandErrorStats.from_forecasts(forecast_units(model, windows, device), windows.actual)


def risk_stats(model: torch.nn.Module, features: np.ndarray, labels: np.ndarray, device: torch.device) -> RiskStats:
    logits = predict(model, features, device=device)
    return RiskStats.from_predictions(expit(logits), labels)  # no overflow for very negative logits


def model_stats(firm: FirmHoldings, kind: ModelKind, model: torch.nn.Module, norm: Normaliser | None) -> np.ndarray:
    """The model's test-split statistics on this firm's data, unslotted."""
    if kind == "demand":
        return demand_stats(model, firm.demand_windows(1), firm.device).to_vector()
    x, y = firm.xy("risk", 1, norm)
    return risk_stats(model, x, y, firm.device).to_vector()


def evaluate(
    firm: FirmHoldings,
    kind: ModelKind,
    arrays: dict[str, np.ndarray],
    norm: Normaliser | None = None,
    groups: StatSlots | None = None,
) -> np.ndarray:
    """Test-split statistics of the given weights, in the slot assigned to this firm's group."""
    firm.stat_slot(kind, groups)  # refuse a too-small slot before computing anything
    model = build_model(kind, firm.spec)
    load_arrays(model, arrays)
    return evaluate_model(firm, kind, model, norm, groups)


def evaluate_model(
    firm: FirmHoldings,
    kind: ModelKind,
    model: torch.nn.Module,
    norm: Normaliser | None = None,
    groups: StatSlots | None = None,
) -> np.ndarray:
    """`evaluate` of a model already built and loaded: a simulation scores one model on every firm."""
    return firm.slotted(kind, model_stats(firm, kind, model, norm), groups)


def efficiency_sums(firm: FirmHoldings, model: torch.nn.Module | Forecaster) -> EfficiencySums:
    """Totals of the inventory simulation on the held-out horizon when ordering from `model`'s forecasts
    (a torch model, or any forecaster of windows in units: what the firm deploys).

    Per series: the safety stock comes from the model's errors on the series' most recent training
    windows (over the periods one order covers); the orders from its forecasts on the test windows.
    """
    policy = firm.spec.efficiency
    cover = policy.protection
    if cover > firm.spec.horizon:
        raise ConfigError(
            f"firm '{firm.firm_id}': an order covers lead_time + review_period = {cover} periods but the models "
            f"forecast only {firm.spec.horizon}",
            field="efficiency.lead_time",
        )
    forecaster: Callable[[DemandWindows], np.ndarray]
    if isinstance(model, torch.nn.Module):
        torch_model = model

        def forecast_with_the_network(windows: DemandWindows) -> np.ndarray:
            return forecast_units(torch_model, windows, firm.device)

        forecaster = forecast_with_the_network
    else:
        forecaster = model
    total = EfficiencySums()
    for train, test in firm.demand_series:
        if len(test) == 0:
            continue
        past = forecaster(train)[-policy.error_windows :, :cover]
        sigma = forecast_error_std(past, train.actual[-policy.error_windows :, :cover])
        forecast = forecaster(test)
        if not (np.all(np.isfinite(forecast)) and np.isfinite(sigma)):
            raise ProtocolError("the demand model sent gives non-finite forecasts", firm=firm.firm_id)
        horizon = SeriesHorizon(demand=test.actual[:, 0], forecasts=forecast, sigma=sigma, firm=firm.firm_id)
        total = total + simulate_series(horizon, policy) + forecast_sums(forecast, test.actual)
    return total


def efficiency(firm: FirmHoldings, arrays: dict[str, np.ndarray], groups: EfficiencyGroups) -> np.ndarray | None:
    """Slotted efficiency sums of ordering from the given demand model's forecasts (None: release nothing)."""
    slot = firm.efficiency_slot(groups)
    if slot is None:
        return None
    model = build_model("demand", firm.spec)
    load_arrays(model, arrays)
    return slot_by_tier(efficiency_sums(firm, model), slot)


def evaluate_all(
    firm: FirmHoldings,
    weights: dict[str, dict[str, np.ndarray]],
    norm: Normaliser | None,
    groups: EfficiencyGroups,
    stat_groups: StatSlots | None = None,
) -> dict[str, np.ndarray]:
    """Test-split statistics of every model the firm holds data for, and the efficiency sums of
    ordering from the demand model's forecasts (the 'after' of the efficiency comparison)."""
    # The slots are checked first: a firm that refuses its slot releases nothing at all.
    for kind in weights:
        if firm.trains(kind):
            firm.stat_slot(kind, stat_groups)
    after = efficiency(firm, weights["demand"], groups) if "demand" in weights and firm.trains("demand") else None
    out = {
        eval_segment(kind): evaluate(firm, kind, arrays, norm, stat_groups)  # type: ignore[arg-type]
        for kind, arrays in weights.items()
        if firm.trains(kind)
    }
    if after is not None:
        out[EFFICIENCY_AFTER] = after
    return out
