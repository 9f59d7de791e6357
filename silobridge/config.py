"""What every firm of a federation agrees on, shared by the firms' side and the server's side.

The coordinator fixes it and sends it with the first message of a run; each firm validates its
own data against it before taking part.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

CovariateTransform = Literal["raw", "log_ratio"]


class DataSchema(BaseModel):
    """The columns every firm of a federation must provide, agreed in the federation's configuration.

    Demand covariates are known in advance for the forecast periods (planned price, promotion,
    holiday); `log_ratio` compares a positive covariate with the series' own training mean.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    demand_covariates: dict[str, CovariateTransform] = Field(default_factory=dict)
    risk_features: tuple[str, ...] = ()

    @field_validator("demand_covariates")
    @classmethod
    def _no_reserved(cls, value: dict[str, CovariateTransform]) -> dict[str, CovariateTransform]:
        reserved = {"date", "series", "units"}
        clash = reserved.intersection(value)
        if clash:
            raise ValueError(f"covariate names {sorted(clash)} are reserved demand columns")
        return value

    @field_validator("risk_features")
    @classmethod
    def _no_label(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "disrupted" in value or "date" in value:
            raise ValueError("'date' and 'disrupted' cannot be risk features")
        if len(set(value)) != len(value):
            raise ValueError("risk features must be unique")
        return value


Tier = Literal["supplier", "manufacturer", "distributor", "retailer"]
TIERS: tuple[Tier, ...] = ("supplier", "manufacturer", "distributor", "retailer")
"""Upstream first: goods flow from suppliers towards retailers, orders flow the other way."""

MIN_TRAIN_WINDOWS = 4
"""A firm needs at least this many training windows per series to fit anything at all."""


class FederationSpec(BaseModel):
    """Columns, feature layout, model size and evaluation split of one federation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data: DataSchema
    lags: int = Field(ge=1, le=104)
    horizon: int = Field(ge=1, le=52)
    test_start: dt.date = Field(description="first held-out period; every firm splits at the same date")
    test_periods: int = Field(ge=1, le=104)
    hidden: int = Field(ge=4, le=4096)

    @property
    def min_periods(self) -> int:
        return min_periods(self.lags, self.horizon, self.test_periods)

    def digest(self) -> str:
        """Short fingerprint, so a firm can cache what it derived from one spec."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def min_periods(lags: int, horizon: int, test_periods: int) -> int:
    """Shortest series that leaves lags, a few training windows and the test periods."""
    return lags + horizon + MIN_TRAIN_WINDOWS - 1 + test_periods
