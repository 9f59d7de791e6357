"""What every firm of a federation agrees on, shared by the firms' side and the server's side.

The coordinator fixes it and sends it with the first message of a run; each firm validates its
own data against it before taking part.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

if TYPE_CHECKING:
    from silobridge.privacy.secagg import SecAggParams

CovariateTransform = Literal["raw", "log_ratio"]


COLUMN_NAME_PATTERN = r"^[^\x00-\x1f]{1,128}$"
"""A column name as a CSV header holds it: any printable text, at most 128 characters."""

DEMAND_COLUMNS = ("date", "series", "units")
"""The names a firm's demand table has inside SiloBridge, whatever its extract calls them."""
RISK_LABEL = "disrupted"
RISK_SPLIT = "split"
"""The optional column of risk.csv that assigns each row to `train` or `test` (cross-sectional data)."""


class DataSchema(BaseModel):
    """The columns every firm of a federation must provide, agreed in the federation's configuration.

    Demand covariates are known in advance for the forecast periods (planned price, promotion,
    holiday); `log_ratio` compares a positive covariate with the series' own training mean.
    `date_column`, `units_column`, `series_column` and `label_column` name the extract's own columns
    (a retailer's `week_ending`, say): files are read as they come and renamed once, at load time.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    date_column: str = Field(
        default="date", pattern=COLUMN_NAME_PATTERN, description="demand.csv's (and risk.csv's) date"
    )
    units_column: str = Field(default="units", pattern=COLUMN_NAME_PATTERN, description="demand.csv's quantity")
    series_column: str = Field(
        default="series", pattern=COLUMN_NAME_PATTERN, description="demand.csv's item or department (optional column)"
    )
    label_column: str = Field(default=RISK_LABEL, pattern=COLUMN_NAME_PATTERN, description="risk.csv's 0/1 label")
    demand_covariates: dict[str, CovariateTransform] = Field(default_factory=dict)
    risk_features: tuple[str, ...] = ()
    risk_feature_ranges: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="public range of each risk feature: under DP, features are clipped and scaled by it",
    )
    risk_holdout: float = Field(
        default=0.2,
        gt=0,
        lt=1,
        description="share of a firm's risk rows held out for testing when risk.csv has neither a date nor a "
        "split column (a seeded holdout, stratified by label)",
    )

    def __hash__(self) -> int:
        """Frozen but holding dicts: hash the canonical JSON, so settings built on it can be cached."""
        return hash(self.model_dump_json())

    @field_validator("demand_covariates", "risk_feature_ranges")
    @classmethod
    def _column_names(cls, value: dict[str, object]) -> dict[str, object]:
        for name in value:
            if not name or len(name) > 128:
                raise ValueError(f"'{name}' is not a column name (1 to 128 characters)")
        return value

    @field_validator("risk_features")
    @classmethod
    def _unique_features(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("risk features must be unique")
        for name in value:
            if not name or len(name) > 128:
                raise ValueError(f"'{name}' is not a column name (1 to 128 characters)")
        return value

    @field_validator("risk_feature_ranges")
    @classmethod
    def _ordered_ranges(cls, value: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (low, high) in value.items():
            if not low < high:
                raise ValueError(f"range of '{name}' must have low < high, got ({low}, {high})")
        return value

    @model_validator(mode="after")
    def _distinct_columns(self) -> DataSchema:
        """Each file's columns must mean one thing each: a covariate cannot also be the units, say."""
        demand = {self.date_column: "date_column", self.units_column: "units_column"}
        if self.series_column in demand:
            raise ValueError(f"series_column '{self.series_column}' is also the {demand[self.series_column]}")
        demand[self.series_column] = "series_column"
        if self.units_column == self.date_column:
            raise ValueError(f"units_column and date_column are both '{self.date_column}'")
        demand.update({name: f"name SiloBridge gives the {name} column" for name in DEMAND_COLUMNS})
        for name in self.demand_covariates:
            if name in demand:
                raise ValueError(f"demand covariate '{name}' is also the {demand[name]}")
        risk = {self.date_column: "date_column", self.label_column: "label_column", RISK_SPLIT: "split column"}
        risk.update({"date": "name SiloBridge gives the date column", RISK_LABEL: "name SiloBridge gives the label"})
        if self.label_column in (self.date_column, RISK_SPLIT):
            raise ValueError(f"label_column '{self.label_column}' is also the {risk[self.label_column]}")
        for name in self.risk_features:
            if name in risk:
                raise ValueError(f"risk feature '{name}' is also the {risk[name]}")
        unknown = sorted(set(self.risk_feature_ranges) - set(self.risk_features))
        if unknown:
            raise ValueError(f"risk_feature_ranges names {unknown}, which are not risk_features")
        return self


Tier = Literal["supplier", "manufacturer", "distributor", "retailer"]
TIERS: tuple[Tier, ...] = ("supplier", "manufacturer", "distributor", "retailer")
"""Upstream first: goods flow from suppliers towards retailers, orders flow the other way."""

MIN_TRAIN_WINDOWS = 4
"""A firm needs at least this many training windows per series to fit anything at all."""


class AggregationSpec(BaseModel):
    """How firms' vectors are summed: securely (the default) or in the clear, for comparison.

    Under secure aggregation every released vector is quantised segment by segment: a firm's
    model change is bounded per coordinate by `update_bound` (its weight by `max_examples`), and
    statistics by `stats_bound`; values beyond a bound are clipped and the clipping is counted.
    `num_neighbours`, `threshold` and `modulus_bits` are filled in by the coordinator for the
    federation's size (None: not yet resolved).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    mode: Literal["secure", "plain"] = "secure"
    value_bits: int = Field(default=48, ge=8, le=52, description="bits of each quantised value")
    rounds_per_session: int = Field(default=10, ge=1, le=1000, description="secure sums per key agreement")
    num_neighbours: int | None = Field(default=None, ge=1, description="SecAgg+ neighbours; default ~log n")
    threshold: int | None = Field(default=None, ge=2, description="shares needed to recover a firm; default majority")
    expected_dropout: float = Field(default=0.1, ge=0, lt=0.5, description="sizes the default neighbourhoods")
    max_examples: int = Field(default=100_000, ge=1, description="cap on a firm's weight (training examples)")
    update_bound: float = Field(default=1.0, gt=0, description="bound on each coordinate of a firm's model change")
    stats_bound: float = Field(default=2.0**40, gt=0, description="bound on each released statistic")
    modulus_bits: int | None = Field(default=None, ge=8, le=64)

    def secagg_params(self) -> SecAggParams:
        """The protocol parameters both sides derive from this spec; requires a resolved spec."""
        from silobridge.privacy.secagg import SecAggParams

        if self.modulus_bits is None or self.num_neighbours is None or self.threshold is None:
            raise ValueError("aggregation spec is not resolved for a federation size yet")
        return SecAggParams(
            modulus_bits=self.modulus_bits,
            num_neighbours=self.num_neighbours,
            threshold=self.threshold,
            rounds_per_session=self.rounds_per_session,
            expected_dropout=self.expected_dropout,
        )


class PrivacySpec(BaseModel):
    """Differential privacy of a run; on by default. The unit says what two neighbouring inputs differ in.

    `record`: one training example of one firm (a demand window or a delivery row); every firm trains
    with DP-SGD and is accounted on its own, each of its data sets separately (a record is in one of
    them only, so they compose in parallel); each model has its own per-example clip norm.
    `firm`: a firm's whole contribution to a round (DP-FedAvg with clipped model changes and Gaussian
    noise, added by the server to the secure sum (`central`) or by the firms in shares before masking
    (`distributed`)). `noise_multiplier` left as None is
    calibrated by the coordinator so that the planned rounds spend exactly the budget. With
    `adaptive_clipping` (firm, central) it is the multiplier of the update and the unclipped count
    combined, as the accountant sees them; the update itself gets less (see `server.privacy`).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    enabled: bool = True
    unit: Literal["record", "firm"] = "record"
    epsilon: float = Field(default=8.0, gt=0, le=1000)
    delta: float = Field(default=1e-5, gt=0, lt=1)
    accountant: Literal["rdp", "pld"] = "rdp"
    noise_multiplier: float | None = Field(default=None, gt=0, le=1000)
    # record level: DP-SGD inside each firm
    demand_max_grad_norm: float = Field(default=1.0, gt=0, description="per-example gradient clip, demand model")
    risk_max_grad_norm: float = Field(default=1.0, gt=0, description="per-example gradient clip, risk model")
    sample_rate: float = Field(default=0.1, gt=0, le=1, description="Poisson rate of examples per step (record)")
    learning_rate: float = Field(
        default=0.5,
        gt=0,
        description="DP-SGD step size (record unit), in place of training.learning_rate: clipped gradients "
        "averaged over large Poisson batches move far less than plain minibatch gradients.",
    )
    local_epochs: int = Field(
        default=1,
        ge=1,
        le=100,
        description="DP-SGD epochs per round (record unit), in place of training.local_epochs: every step spends.",
    )
    weight_power: float = Field(
        default=2.0,
        ge=0,
        description="record unit: a firm's FedAvg weight is its public size to this power. DP-SGD noise on a "
        "firm's update has a variance of about 1 / size^2, so 2 weights each firm inversely to its noise.",
    )
    # firm level: DP-FedAvg
    mechanism: Literal["central", "distributed"] = "central"
    clip_norm: float = Field(default=0.5, gt=0, description="L2 bound on a firm's model change (firm unit)")
    firm_sample_rate: float = Field(default=1.0, gt=0, le=1, description="Poisson rate of firms per round (firm)")
    distributed_scale: float = Field(default=1000.0, gt=0, description="integer steps per unit (distributed)")
    expected_shares: int | None = Field(default=None, ge=1, description="firms expected per sum (distributed)")
    # firm level, central: adaptive clipping (Andrew, Thakkar, McMahan, Ramaswamy 2021); clip_norm is the first norm
    adaptive_clipping: bool = Field(
        default=False,
        description="move the clip norm each round towards a quantile of the firms' update norms, from a noised "
        "count of unclipped firms released (and accounted) with the update (firm unit, central mechanism)",
    )
    clip_target_quantile: float = Field(default=0.5, gt=0, lt=1, description="share of firms meant to go unclipped")
    clip_learning_rate: float = Field(default=0.2, gt=0, le=10, description="geometric step of the clip norm")
    clip_count_noise_std: float | None = Field(
        default=None,
        gt=0,
        le=1e6,
        description="Gaussian noise std on the unclipped count; None: expected participants / 20 (as the paper)",
    )
    ledger_public_key: str | None = Field(
        default=None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="the coordinator's long-term Ed25519 ledger key (hex, `silobridge keys --ledger`): every "
        "run's ledger must be signed by it, and `silobridge audit --config` checks against it",
    )

    @field_validator("ledger_public_key")
    @classmethod
    def _lower_hex(cls, value: str | None) -> str | None:
        """Hex of either case names the same key; stored in lower case, as ledgers write it."""
        return None if value is None else value.lower()

    @field_validator("adaptive_clipping")
    @classmethod
    def _adaptive_needs_central_firm(cls, value: bool, info: ValidationInfo) -> bool:
        """Only the central firm-level release carries the noised count adaptive clipping needs."""
        if not value:
            return value
        if info.data.get("unit") == "record":
            raise ValueError(
                "adaptive clipping applies to the firm unit only: under unit 'record' Opacus clips each example "
                "at demand_max_grad_norm / risk_max_grad_norm"
            )
        if info.data.get("mechanism") == "distributed":
            raise ValueError(
                "adaptive clipping is not built for the distributed mechanism: the unclipped count would need its "
                "own noise shares added by the firms; use mechanism 'central'"
            )
        return value

    def max_grad_norm(self, kind: str) -> float:
        """The per-example clip of one model under record-level DP."""
        return self.demand_max_grad_norm if kind == "demand" else self.risk_max_grad_norm


class EfficiencySpec(BaseModel):
    """How every firm orders in the efficiency simulation (periodic review, order-up-to, the same for
    all), and how the resulting sums are released.

    Every `review_period` periods a firm orders up to its forecast of the demand over `lead_time` +
    `review_period` periods plus a safety stock of z(service_level) x its forecast error's std x
    sqrt(lead_time + review_period). Unmet demand is backordered and served late. Costs are per unit
    held or backordered at the end of a period, and per order placed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    review_period: int = Field(default=1, ge=1, le=52, description="periods between orders")
    lead_time: int = Field(default=1, ge=0, le=52, description="periods between an order and its arrival")
    service_level: float = Field(default=0.95, gt=0.5, lt=1, description="cycle service level the safety stock aims at")
    holding_cost: float = Field(default=1.0, ge=0, description="cost per unit on hand at the end of a period")
    shortage_cost: float = Field(default=4.0, ge=0, description="cost per unit backordered at the end of a period")
    order_cost: float = Field(default=10.0, ge=0, description="fixed cost per order placed (per series)")
    error_windows: int = Field(
        default=26, ge=1, le=1000, description="recent training windows whose forecast errors size the safety stock"
    )
    min_firms_per_group: int = Field(
        default=3,
        ge=3,
        le=1000,
        description="fewest firms in any group whose efficiency is published (a tier below it is pooled); never "
        "below 3: in a group of two each member learns the other's totals by subtracting its own",
    )
    dp: bool = Field(
        default=False,
        description="in a private run, firms release their efficiency sums clipped, with Gaussian noise on the "
        "secure sum, charged to the run's budget (otherwise the simulation harness measures them, like every "
        "other test statistic under DP)",
    )
    dp_clip_norm: float = Field(
        default=1e5, gt=0, description="L2 bound on one firm's released efficiency sums (before and after)"
    )
    dp_noise_multiplier: float = Field(
        default=2.0, gt=0, le=1000, description="noise std over dp_clip_norm of the efficiency release"
    )

    @property
    def protection(self) -> int:
        """Periods one order must cover: until the order after it arrives."""
        return self.lead_time + self.review_period


class LinearSpec(BaseModel):
    """The linear model family (sufficient-statistics ridge and logistic regression): public constants only.

    One demand window's features and targets are clipped to these bounds before they enter the firm's
    X^T X and X^T Y, so one window moves the summed statistics by a known amount; the bounds are part
    of the federation file, never read from the data.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: Literal["auto", "linear", "mlp"] = Field(
        default="auto",
        description="global model family: 'auto' trains the linear family under DP (one release spends the "
        "budget once) and both families without DP, each firm choosing what it deploys",
    )
    value_bound: float = Field(default=4.0, gt=0, le=1000, description="scaled demand values are clipped to [0, c]")
    feature_bound: float = Field(default=3.0, gt=0, le=1000, description="calendar and covariates clipped to [-b, b]")
    row_norm: float = Field(default=6.0, gt=0, description="L2 bound on one window's feature vector")
    target_norm: float = Field(default=4.0, gt=0, description="L2 bound on one window's scaled targets")
    ridge: float = Field(default=1.0, gt=0, description="ridge penalty of the global and local fits")
    validation_periods: int = Field(
        default=8, ge=1, le=104, description="a firm's most recent training origins it chooses its model on"
    )
    newton_steps: int = Field(default=3, ge=1, le=20, description="noised Newton steps of the logistic risk model")
    risk_ridge: float = Field(default=1.0, gt=0, description="L2 penalty of the logistic risk model")


BaselineMode = Literal["auto", "all", "sample", "none"]
"""Which firms a simulation fits local-only baselines for: every firm, a seeded sample, none, or "auto"
(every firm up to `BASELINES_ALL_UP_TO` firms, a sample above)."""

BASELINES_ALL_UP_TO = 200
"""Above this many firms, "auto" baselines a sample: fitting every firm's local-only models would cost
more than the federated rounds themselves (benchmarks/results/fedavg_scale.md)."""


class BaselinesSpec(BaseModel):
    """The scenario's `[training] baselines` and `baseline_sample`: whose local-only baselines are fitted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: BaselineMode = "auto"
    sample_size: int = Field(default=100, ge=1, le=100_000, description="firms baselined by 'sample'")


@dataclass(frozen=True)
class BaselineSelection:
    """The firms whose local-only baselines a run fits; a comparison with local-only is over these only."""

    mode: Literal["all", "sample", "none"]
    firms: tuple[str, ...]
    of: int  # how many firms the federation has
    seed: int | None = None  # the seed of a sample (None for all or none)

    @property
    def complete(self) -> bool:
        """Every firm is baselined, so local-only figures cover the same firms as every other method's."""
        return len(self.firms) == self.of

    @property
    def scope(self) -> str:
        """What a comparison with local-only figures covers, in words."""
        if self.complete:
            return "all firms"
        if not self.firms:
            return "no firm (no local-only or deployed figures, no comparison with them)"
        return (
            f"a seeded sample of {len(self.firms)} of {self.of} firms (seed {self.seed}): local-only and deployed "
            "figures and every comparison with them are over the sample only"
        )

    def describe(self) -> dict[str, object]:
        """For the run summary: which firms were baselined, and over what a local-only comparison runs."""
        return {
            "mode": self.mode,
            "firms": list(self.firms),
            "baselined": len(self.firms),
            "of": self.of,
            "scope": self.scope,
        }


def select_baselines(spec: BaselinesSpec, firms: Sequence[str], seed: int) -> BaselineSelection:
    """The firms to baseline: all, none, or `spec.sample_size` of them drawn with `seed` (the same firms
    for the same ids and seed, whatever order the firms connected in)."""
    ordered = sorted(firms)
    mode = spec.mode
    if mode == "auto":
        mode = "all" if len(ordered) <= BASELINES_ALL_UP_TO else "sample"
    if mode == "none":
        return BaselineSelection("none", (), len(ordered))
    if mode == "all" or spec.sample_size >= len(ordered):
        return BaselineSelection("all", tuple(ordered), len(ordered))
    chosen = sorted(random.Random(seed).sample(ordered, spec.sample_size))
    return BaselineSelection("sample", tuple(chosen), len(ordered), seed)


class FederationSpec(BaseModel):
    """Columns, feature layout, model size, evaluation split and aggregation of one federation."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    data: DataSchema
    lags: int = Field(ge=1, le=104)
    horizon: int = Field(ge=1, le=52)
    test_start: dt.date = Field(description="first held-out period; every firm splits at the same date")
    test_periods: int = Field(ge=1, le=104)
    hidden: int = Field(ge=4, le=4096)
    aggregation: AggregationSpec = AggregationSpec()
    privacy: PrivacySpec = PrivacySpec(enabled=False)
    efficiency: EfficiencySpec = EfficiencySpec()
    linear: LinearSpec = LinearSpec()

    @property
    def min_periods(self) -> int:
        return min_periods(self.lags, self.horizon, self.test_periods)

    def digest(self) -> str:
        """Short fingerprint, so a firm can cache what it derived from one spec."""
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


def min_periods(lags: int, horizon: int, test_periods: int) -> int:
    """Shortest series that leaves lags, a few training windows and the test periods."""
    return lags + horizon + MIN_TRAIN_WINDOWS - 1 + test_periods
