"""Scenario files: a supply chain described in TOML and validated once, at the edge.

A scenario names the firms (tier, size, history, region), the supplier links between them, the
shocks that hit the chain, the evaluation split and the training settings. Every error names the
file, the firm and the field, so a malformed scenario never reaches the generator.
"""

from __future__ import annotations

import datetime as dt
import graphlib
import math
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from silobridge.contract.config import (
    MIN_TRAIN_WINDOWS,
    TIERS,
    AggregationSpec,
    BaselineMode,
    BaselinesSpec,
    DataSchema,
    EfficiencySpec,
    PrivacySpec,
    Tier,
    min_periods,
)
from silobridge.contract.optimiser import OptimiserName, OptimiserSpec
from silobridge.errors import ConfigError

FIRM_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
TIER_PLACEHOLDER = "TODO"
"""The tier `silobridge init` writes: not a tier, so the file is refused until the coordinator fills it in."""
MAX_HISTORY = 5200
"""Longest history a firm may declare: the generator allocates firms x series x history values."""
MAX_GENERATED_VALUES = 5_000_000
"""Most demand cells (series x periods, over all firms) `generate` may be asked for: about 40 MB an array."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class Firm(_Frozen):
    """One firm of the chain; `size` scales its volume, `history` is how many periods it recorded."""

    id: str = Field(pattern=FIRM_ID_PATTERN)
    tier: Tier
    size: float = Field(gt=0, description="relative volume; firms at or above the scenario's large_size are 'large'")
    history: int | None = Field(
        default=None,
        ge=1,
        le=MAX_HISTORY,
        description="number of periods of data the firm holds, ending at the scenario's end "
        f"(at most {MAX_HISTORY}: about 100 years of weeks); required to generate data, informative in a pilot",
    )
    region: str = Field(min_length=1)
    series: int | None = Field(
        default=None,
        ge=1,
        le=500,
        description="retailers: items sold (upstream firms see every item their customers order)",
    )
    noise: float | None = Field(
        default=None, ge=0, le=2, description="std of the log demand noise; default falls with size"
    )
    deliveries: int | None = Field(
        default=None, ge=1, le=500, description="inbound deliveries per period (risk data rows)"
    )
    budget_epsilon: float | None = Field(
        default=None, gt=0, description="the firm's own privacy limit (stricter than the run's)"
    )

    def periods(self) -> int:
        """The declared history; the generator needs it (`check_generatable` says so first)."""
        if self.history is None:
            raise ConfigError(f"firm '{self.id}': field 'history' is needed to generate its data", field="firms")
        return self.history

    def series_count(self) -> int:
        """Retail series: given, or about 2 sqrt(size)."""
        return self.series if self.series is not None else max(2, round(2 * math.sqrt(self.size)))

    def noise_std(self) -> float:
        """Small firms are noisier: 0.06 + 0.18 / sqrt(size) unless given."""
        return self.noise if self.noise is not None else 0.06 + 0.18 / math.sqrt(self.size)

    def deliveries_per_period(self) -> int:
        return self.deliveries if self.deliveries is not None else round(4 + 1.5 * self.size)


class Link(_Frozen):
    """`supplier` delivers to `customer`; the customer's orders are the supplier's demand."""

    supplier: str
    customer: str
    share: float = Field(
        default=1.0, gt=0, description="relative share of the customer's orders placed on this supplier"
    )
    lead_time: int = Field(default=2, ge=0, le=26, description="periods between an order and its delivery")


class Shock(_Frozen):
    """A demand and supply shock shared by the whole chain or by one region."""

    name: str = Field(min_length=1)
    scope: Literal["chain", "region"]
    region: str | None = None
    start: dt.date
    periods: int = Field(ge=1, le=104)
    demand_effect: float = Field(ge=-0.95, le=5.0, description="relative change of consumer demand, e.g. -0.3")
    risk_effect: float = Field(default=1.0, ge=0, le=6.0, description="added log-odds of a disruption while active")

    @model_validator(mode="after")
    def _region_matches_scope(self) -> Shock:
        if self.scope == "region" and not self.region:
            raise ValueError("a 'region' shock needs a region")
        if self.scope == "chain" and self.region:
            raise ValueError("a 'chain' shock takes no region")
        return self


class TrainingSpec(_Frozen):
    """How the models are trained; the same settings drive federated and baseline training."""

    rounds: int = Field(default=30, ge=1, le=10_000)
    local_epochs: int = Field(default=1, ge=1, le=100)
    batch_size: int = Field(default=64, ge=1, le=65_536)
    optimiser: OptimiserName = "sgd"
    learning_rate: float = Field(default=0.05, gt=0, le=10.0)
    momentum: float = Field(default=0.9, ge=0, lt=1.0, description="SGD momentum")
    weight_decay: float = Field(default=1e-4, ge=0, le=1.0)
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    proximal_mu: float = Field(
        default=0.01, ge=0, le=10.0, description="FedProx proximal term; used when strategy = 'fedprox'"
    )
    lags: int = Field(default=8, ge=1, le=104)
    hidden: int = Field(default=64, ge=4, le=4096)
    model: Literal["auto", "linear", "mlp"] = Field(
        default="auto",
        description="global model family: 'linear' (ridge and logistic regression from one or a few noised secure "
        "sums of sufficient statistics), 'mlp' (FedAvg rounds; DP-SGD under DP) or 'auto': linear under DP, both "
        "without DP; every firm then deploys what does best on its own recent data",
    )
    min_firms: int | None = Field(
        default=None, ge=1, description="fewest firms a round may aggregate; default: half the firms, at least 2"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    baselines: BaselineMode = Field(
        default="auto",
        description="simulations: whose local-only baselines are fitted: 'all', 'sample' (a seeded sample of "
        "baseline_sample firms), 'none', or 'auto' (all up to 200 firms, a sample above)",
    )
    baseline_sample: int = Field(default=100, ge=1, le=100_000, description="firms a baselines sample holds")

    @property
    def baselines_spec(self) -> BaselinesSpec:
        """The baselines keys of this table as the contract's setting."""
        return BaselinesSpec(mode=self.baselines, sample_size=self.baseline_sample)

    @property
    def optimiser_spec(self) -> OptimiserSpec:
        """The optimiser keys of this table as the one spec that travels to every firm's training."""
        return OptimiserSpec(
            name=self.optimiser,
            learning_rate=self.learning_rate,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
        )


class DropoutSimulation(_Frozen):
    """Simulation only: firms that vanish mid-sum, to exercise and measure dropout recovery.

    In each secure sum every firm independently vanishes with probability `rate`, either before
    sending its masked input (it is left out) or after (the others' shares recover its masks).
    Deterministic by the scenario's seed.
    """

    rate: float = Field(default=0.0, ge=0.0, le=0.9)
    stage: Literal["before_masking", "after_masking"] = "after_masking"


class Scenario(_Frozen):
    """A whole supply chain; the seed makes everything generated from it reproducible."""

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    seed: int = Field(ge=0, lt=2**32)
    end: dt.date = Field(
        description="the last period; its weekday anchors every week of the federation (the generator's are Mondays)"
    )
    horizon: int = Field(default=4, ge=1, le=52, description="periods forecast at once")
    test_periods: int = Field(default=13, ge=1, le=104, description="final periods held out for evaluation")
    large_size: float = Field(default=5.0, gt=0, description="firms with size >= large_size form the 'large' group")
    items: int = Field(
        default=12, ge=1, le=500, description="products in the chain's catalogue; retailers sell a subset"
    )
    firms: tuple[Firm, ...] = Field(min_length=2)
    links: tuple[Link, ...] = ()
    shocks: tuple[Shock, ...] = ()
    training: TrainingSpec = TrainingSpec()
    aggregation: AggregationSpec = AggregationSpec()
    privacy: PrivacySpec = PrivacySpec()
    dropout: DropoutSimulation = DropoutSimulation()
    data: DataSchema | None = Field(
        default=None,
        description="columns every firm's CSV files provide (a real federation's [data]); default: the generator's",
    )
    efficiency: EfficiencySpec = EfficiencySpec()

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        check_chain(self)
        return self

    # -- derived facts -------------------------------------------------------------------------
    @property
    def firm_ids(self) -> tuple[str, ...]:
        return tuple(f.id for f in self.firms)

    def firm(self, firm_id: str) -> Firm:
        for firm in self.firms:
            if firm.id == firm_id:
                return firm
        raise KeyError(firm_id)

    def group_of(self, firm_id: str) -> Literal["small", "large"]:
        return "large" if self.firm(firm_id).size >= self.large_size else "small"

    def min_history(self) -> int:
        """Shortest history that leaves lags, a few training windows and the test periods."""
        return min_periods(self.training.lags, self.horizon, self.test_periods)

    @property
    def test_start(self) -> dt.date:
        return self.end - dt.timedelta(weeks=self.test_periods - 1)


def check_chain(scenario: Scenario) -> None:
    """Cross-field checks: unique ids, known link ends, downstream links, no cycles, enough history."""
    ids = [f.id for f in scenario.firms]
    seen: set[str] = set()
    for firm in scenario.firms:
        if firm.id in seen:
            raise ValueError(f"firm '{firm.id}': duplicate firm id")
        seen.add(firm.id)
        if firm.series is not None and firm.series > scenario.items:
            raise ValueError(
                f"firm '{firm.id}': field 'series' is {firm.series} but the catalogue has {scenario.items} items"
            )
        if firm.series is not None and firm.tier != "retailer":
            raise ValueError(
                f"firm '{firm.id}': field 'series' applies to retailers only "
                "(upstream firms see every item their customers order)"
            )
    tier_of = {f.id: f.tier for f in scenario.firms}
    pairs: set[tuple[str, str]] = set()
    for i, link in enumerate(scenario.links):
        for end in ("supplier", "customer"):
            name = getattr(link, end)
            if name not in tier_of:
                raise ValueError(f"links[{i}].{end}: unknown firm '{name}' (known: {', '.join(ids)})")
        if link.supplier == link.customer:
            raise ValueError(f"links[{i}]: firm '{link.supplier}' cannot supply itself")
        if (link.supplier, link.customer) in pairs:
            raise ValueError(f"links[{i}]: duplicate link {link.supplier} -> {link.customer}")
        pairs.add((link.supplier, link.customer))
        if TIERS.index(tier_of[link.supplier]) > TIERS.index(tier_of[link.customer]):
            raise ValueError(
                f"links[{i}]: {link.supplier} ({tier_of[link.supplier]}) -> {link.customer} "
                f"({tier_of[link.customer]}) runs upstream; goods flow supplier -> manufacturer -> "
                "distributor -> retailer"
            )
    sorter = graphlib.TopologicalSorter({f.id: set() for f in scenario.firms})
    for link in scenario.links:
        sorter.add(link.customer, link.supplier)
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        cycle = " -> ".join(err.args[1])
        raise ValueError(f"links form a cycle: {cycle}") from None
    regions = {f.region for f in scenario.firms}
    for i, shock in enumerate(scenario.shocks):
        if shock.scope == "region" and shock.region not in regions:
            raise ValueError(
                f"shocks[{i}].region: unknown region '{shock.region}' (known: {', '.join(sorted(regions))})"
            )
    for firm in scenario.firms:
        if firm.budget_epsilon is not None and firm.budget_epsilon > scenario.privacy.epsilon:
            raise ValueError(
                f"firm '{firm.id}': field 'budget_epsilon' ({firm.budget_epsilon:g}) may only be stricter than the "
                f"run's privacy.epsilon ({scenario.privacy.epsilon:g})"
            )
    policy = scenario.efficiency
    if policy.protection > scenario.horizon:
        raise ValueError(
            f"efficiency: lead_time + review_period is {policy.protection} periods but the models forecast only "
            f"horizon = {scenario.horizon}; an order must be covered by one forecast"
        )
    need = scenario.min_history()
    for firm in scenario.firms:
        if firm.history is not None and firm.history < need:
            raise ValueError(
                f"firm '{firm.id}': field 'history' is {firm.history} periods; at least {need} are needed "
                f"({scenario.training.lags} lags + {scenario.horizon} horizon + {MIN_TRAIN_WINDOWS - 1} more training "
                f"windows + {scenario.test_periods} test periods)"
            )


def check_generatable(scenario: Scenario, *, source: str = "<scenario>") -> None:
    """What the generator needs beyond a valid federation file: Monday weeks, a customer for every upstream
    firm (its demand is its customers' orders) and a size it can hold in memory.

    A pilot's federation file needs none of these: there each firm's data comes from its own files.
    """
    if scenario.end.weekday() != 0:
        raise ConfigError(
            f"{scenario.end.isoformat()} is a {scenario.end.strftime('%A')}; the generator writes weeks starting on "
            "Monday (a pilot on real extracts may anchor its weeks on any weekday)",
            source=source,
            field="end",
        )
    undated = [f.id for f in scenario.firms if f.history is None]
    if undated:
        raise ConfigError(
            f"firms {undated} declare no 'history': the generator needs each firm's number of periods",
            source=source,
            field="firms",
        )
    customers = {link.supplier for link in scenario.links}
    for firm in scenario.firms:
        if firm.tier != "retailer" and firm.id not in customers:
            raise ConfigError(
                f"firm '{firm.id}': a {firm.tier} needs at least one customer link to generate its demand "
                "(its customers' orders)",
                source=source,
                field="links",
            )
    periods = max(f.periods() for f in scenario.firms) + 52
    cells = periods * sum(f.series_count() if f.tier == "retailer" else scenario.items for f in scenario.firms)
    if cells > MAX_GENERATED_VALUES:
        raise ConfigError(
            f"generating this scenario means about {cells:,} demand values (firms x series x periods); at most "
            f"{MAX_GENERATED_VALUES:,} are allowed: fewer firms, series or periods of history",
            source=source,
            field="firms",
        )


# ---- loading ---------------------------------------------------------------------------------


def parse_override(text: str) -> tuple[str, Any]:
    """`key.path=value` with a TOML value (`5`, `0.1`, `"fedprox"`, `2025-01-06`); bare words are strings."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key=value", source="command line")
    key, raw = (part.strip() for part in text.split("=", 1))
    if not key:
        raise ConfigError(f"override '{text}' has no key", source="command line")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(raw: dict[str, Any], overrides: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """Set dotted keys in the raw scenario; `firms.<id>.field` addresses a firm by its id."""
    data = _deep_copy(raw)
    for key, value in overrides:
        parts = key.split(".")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            if isinstance(node, list):
                node = _find_by_id(node, part, key)
            else:
                if not isinstance(node, dict):
                    raise ConfigError(f"cannot set '{key}': '{'.'.join(parts[:depth])}' is not a table", field=key)
                node = node.setdefault(part, {})
        last = parts[-1]
        if isinstance(node, list):
            raise ConfigError(f"cannot set '{key}': name a firm id after 'firms'", field=key)
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{key}': its parent is not a table", field=key)
        node[last] = value
    return data


def _find_by_id(items: list[Any], ident: str, key: str) -> dict[str, Any]:
    for item in items:
        if isinstance(item, dict) and str(item.get("id")) == ident:
            return item
    if ident.isdigit() and int(ident) < len(items):
        return items[int(ident)]
    raise ConfigError(f"cannot set '{key}': no entry with id '{ident}'", field=key)


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", source=str(path)) from None
    except OSError as err:
        raise ConfigError(f"cannot read: {err.strerror}", source=str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"not valid TOML: {err}", source=str(path)) from None


def load_scenario(path: str | Path, overrides: Sequence[tuple[str, Any]] = ()) -> Scenario:
    """Read, override and validate a scenario file; raise ConfigError naming file, firm and field."""
    source = Path(path)
    raw = apply_overrides(read_toml(source), overrides)
    return scenario_from_dict(raw, source=str(source))


def scenario_from_dict(raw: Mapping[str, Any], *, source: str = "<scenario>") -> Scenario:
    try:
        return Scenario.model_validate(dict(raw))
    except ValidationError as err:
        raise _config_error(err, raw, source) from None


def _config_error(err: ValidationError, raw: Mapping[str, Any], source: str) -> ConfigError:
    lines: list[str] = []
    first_field: str | None = None
    problems = err.errors()
    in_firms = any(len(p["loc"]) > 2 and p["loc"][0] == "firms" for p in problems)
    for problem in problems:
        if in_firms and tuple(problem["loc"]) == ("firms",) and problem["type"] == "too_short":
            continue  # a consequence of the firms' own problems, listed already
        field = _describe_location(problem["loc"], raw)
        message = problem["msg"].removeprefix("Value error, ")
        if problem["loc"][-1:] == ("tier",) and problem.get("input") == TIER_PLACEHOLDER:
            message = f"still '{TIER_PLACEHOLDER}': write the firm's tier, one of {', '.join(TIERS)}"
        elif problem["type"] == "missing":
            message = "required field is missing"
        elif problem["type"] == "extra_forbidden":
            known = _known_fields(problem["loc"])
            message = f"unknown field (known: {', '.join(known)})" if known else "unknown field"
        if field:
            first_field = first_field or field
            lines.append(f"{field}: {message}")
        else:
            lines.append(message)
    text = lines[0] if len(lines) == 1 else f"{len(lines)} problems:\n" + "\n".join(f"  - {ln}" for ln in lines)
    if len(lines) == 1 and first_field and text.startswith(f"{first_field}: "):
        text = text[len(first_field) + 2 :]
        return ConfigError(text, source=source, field=first_field)
    return ConfigError(text, source=source, field=first_field)


def _known_fields(loc: Sequence[Any]) -> list[str]:
    """The fields of the table an unknown key sits in, so a typo (`unit_column`) shows its fix."""
    model: type[BaseModel] = Scenario
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        if field is None:
            return []
        inner = [t for t in _flat_types(field.annotation) if isinstance(t, type) and issubclass(t, BaseModel)]
        if not inner:
            return []
        model = inner[0]
    return list(model.model_fields)


def _flat_types(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    return [annotation] if not args else [t for arg in args for t in _flat_types(arg)]


def _describe_location(loc: Sequence[Any], raw: Mapping[str, Any]) -> str:
    """('firms', 3, 'size') -> 'firms[R4].size' so the user sees the firm, not an index."""
    out: list[str] = []
    node: Any = raw
    for part in loc:
        if isinstance(part, int):
            label = str(part)
            if isinstance(node, list) and part < len(node):
                item = node[part]
                if isinstance(item, dict) and "id" in item:
                    label = str(item["id"])
                node = item
            else:
                node = None
            if out:
                out[-1] += f"[{label}]"
            else:
                out.append(f"[{label}]")
        else:
            out.append(str(part))
            node = node.get(part) if isinstance(node, dict) else None
    return ".".join(out)
