"""Demand windows and risk splits: no target crosses the test date, naive forecasts are what they claim."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

from silobridge.clients.features import demand_input_dim, demand_windows, risk_examples
from silobridge.contract.config import TIERS, DataSchema, FederationSpec
from silobridge.federation.settings import GENERATED_SCHEMA


def _spec(test_start: dt.date, lags: int = 3, horizon: int = 2) -> FederationSpec:
    return FederationSpec(
        data=DataSchema(demand_covariates={"price": "log_ratio"}),
        lags=lags,
        horizon=horizon,
        test_start=test_start,
        test_periods=4,
        hidden=8,
    )


def test_windows_by_hand() -> None:
    dates = pd.date_range("2024-01-01", periods=60, freq="7D")
    units = np.arange(60, dtype=float) + 10
    frame = pd.DataFrame({"date": dates, "series": "a", "units": units, "price": 2.0})
    spec = _spec(dates[56].date())
    train, test = demand_windows(frame, spec, tier="retailer")
    scale = units[:56].mean()
    # Training windows: every target before the test date; test windows: every target on or after it.
    assert train.origin.max() == np.datetime64(dates[53].date())
    assert test.origin.min() == np.datetime64(dates[55].date()) and len(test) == 3
    np.testing.assert_allclose(test.features[0, :3], units[53:56] / scale, rtol=1e-6)
    np.testing.assert_allclose(test.actual[0], units[56:58], rtol=1e-5)
    # One year back where the history has it.
    np.testing.assert_allclose(test.naive[0], units[56 - 52 : 58 - 52])
    assert train.features.shape[1] == demand_input_dim(spec) == 3 + 2 * (4 + 1) + len(TIERS)
    np.testing.assert_array_equal(test.features[0, -len(TIERS) :], [0, 0, 0, 1])


def test_naive_falls_back_to_last_value_without_a_year_of_history() -> None:
    dates = pd.date_range("2025-01-06", periods=30, freq="7D")
    frame = pd.DataFrame({"date": dates, "series": "a", "units": np.arange(30.0) + 1, "price": 1.5})
    _, test = demand_windows(frame, _spec(dates[26].date()), tier="supplier")
    np.testing.assert_allclose(test.naive[0], [26.0, 26.0])


def test_generated_firm_windows_respect_the_split(tiny_chain, tiny_scenario) -> None:
    spec = FederationSpec(
        data=GENERATED_SCHEMA, lags=8, horizon=4, test_start=tiny_scenario.test_start, test_periods=13, hidden=16
    )
    train, test = demand_windows(tiny_chain.tables["R1"].demand, spec, tier="retailer")
    last_train_target = train.origin.max() + np.timedelta64(7 * 4, "D")
    assert last_train_target < np.datetime64(tiny_scenario.test_start)
    assert test.origin.min() + np.timedelta64(7, "D") == np.datetime64(tiny_scenario.test_start)
    assert np.isfinite(train.features).all() and np.isfinite(test.features).all()
    risk_train, risk_test = risk_examples(tiny_chain.tables["R1"].risk, spec)
    assert len(risk_train) + len(risk_test) == len(tiny_chain.tables["R1"].risk)
    assert risk_train.features.shape[1] == len(GENERATED_SCHEMA.risk_features)
