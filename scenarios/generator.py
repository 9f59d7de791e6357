"""Synthetic supply chain: per-firm demand and supply-risk data with structure a model can learn.

Deterministic by the scenario's seed; each firm draws from its own stream (derived from the seed and
its id) so adding a firm does not reshuffle the others. Retail demand carries trend, yearly
seasonality, holidays, promotions, price effects and shocks; upstream tiers see only the orders of
their customers, placed with an order-up-to policy, so order variance grows upstream (bullwhip).
Disruptions are rare and depend on observable features of the supplier and the order. Every firm
also keeps order baskets (which items were ordered together), with a few chain-wide co-purchase
patterns planted among the most widely traded items, for frequent-itemset queries (which items
those are depends on the whole chain, so adding a firm may change the other firms' baskets).
"""

from __future__ import annotations

import datetime as dt
import graphlib
import zlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from dateutil.easter import easter

from silobridge.scenarios.schema import Firm, Link, Scenario, check_generatable

DEMAND_COVARIATES: tuple[str, ...] = ("price", "promotion", "holiday")
RISK_FEATURES: tuple[str, ...] = (
    "lead_time_cv",
    "financial_stress",
    "supplier_concentration",
    "regional_shock",
    "order_volume_ratio",
    "congestion_index",
    "capacity_utilisation",
    "quality_incidents",
    "distance_km",
    "expedited",
)
BURN_IN = 52
"""Periods simulated before the longest history starts, so policies and AR processes settle."""

BASKET_PATTERN_RATES: tuple[float, ...] = (0.15, 0.10, 0.08)
"""Probability that an order contains each planted co-purchase pattern (a triple, then two pairs)."""

DISRUPTION_BASE_RATE = 0.03
"""Target share of deliveries disrupted over the whole chain and timeline."""

PERIODS_PER_YEAR = 52.1775


@dataclass(frozen=True)
class FirmTables:
    """A firm's data in the schema of a partner's own CSV files (../shared/README.md section 6)."""

    demand: pd.DataFrame
    risk: pd.DataFrame
    orders: pd.DataFrame | None = None
    """Order baskets: one row per (order_id, item)."""


@dataclass(frozen=True)
class ChainData:
    """Everything the generator made; `tables` is what each firm would hold, the rest is ground truth."""

    scenario: Scenario
    dates: pd.DatetimeIndex
    tables: dict[str, FirmTables]
    incoming_demand: dict[str, np.ndarray] = field(repr=False)
    """Per firm, total demand it faced per period over the whole timeline (consumers or customers' orders)."""
    orders_placed: dict[str, np.ndarray] = field(repr=False)
    """Per firm with suppliers, total orders it placed per period over the whole timeline."""
    basket_patterns: tuple[tuple[str, ...], ...] = ()
    """The co-purchase patterns planted in the order baskets (item names), as ground truth."""


# ---- the world's calendar ---------------------------------------------------------------------


def week_start(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def holiday_effects(years: range) -> dict[dt.date, float]:
    """Log-demand effect of the holiday weeks, keyed by the Monday of the week."""
    effects: dict[dt.date, float] = {}
    for year in years:
        november = [dt.date(year, 11, d) for d in range(1, 31)]
        black_friday = [d for d in november if d.weekday() == 4][3]
        marks = {
            week_start(easter(year)): 0.18,
            week_start(black_friday): 0.55,
            week_start(dt.date(year, 12, 18)): 0.40,
            week_start(dt.date(year, 12, 24)): 0.30,
            week_start(dt.date(year, 1, 2)): -0.25,
        }
        for monday, effect in marks.items():
            effects[monday] = max(effects.get(monday, 0.0), effect) if effect > 0 else effect
    return effects


def seasonal_profile(week_of_year: np.ndarray) -> np.ndarray:
    """Chain-wide yearly shape of log demand: a winter peak and a smaller late-spring bump."""
    angle = 2 * np.pi * week_of_year / PERIODS_PER_YEAR
    return 0.28 * np.cos(angle - 2 * np.pi * 50 / PERIODS_PER_YEAR) + 0.09 * np.cos(
        2 * angle - 2 * np.pi * 2 * 22 / PERIODS_PER_YEAR
    )


# ---- random streams -----------------------------------------------------------------------------


def _rng(seed: int, *names: str) -> np.random.Generator:
    """An independent stream per (seed, name...), stable when other firms are added."""
    keys = [zlib.crc32(name.encode()) for name in names]
    return np.random.default_rng(np.random.SeedSequence([seed, *keys]))


def _ar1(rng: np.random.Generator, n: int, phi: float, std: float, size: int | tuple[int, ...] = ()) -> np.ndarray:
    """Stationary AR(1) paths with marginal std `std`, along the last axis."""
    shape = (*np.atleast_1d(size), n) if size != () else (n,)
    innovations = rng.normal(0.0, std * np.sqrt(1 - phi**2), size=shape)
    out = np.empty(shape)
    out[..., 0] = rng.normal(0.0, std, size=shape[:-1])
    for t in range(1, n):
        out[..., t] = phi * out[..., t - 1] + innovations[..., t]
    return out


# ---- demand -------------------------------------------------------------------------------------


def _shock_paths(scenario: Scenario, dates: pd.DatetimeIndex) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per region: additive log-demand effect and disruption indicator weighted by risk effect."""
    regions = sorted({f.region for f in scenario.firms})
    demand = {r: np.zeros(len(dates)) for r in regions}
    risk = {r: np.zeros(len(dates)) for r in regions}
    day = dates.date
    for shock in scenario.shocks:
        start = week_start(shock.start)
        stop = start + dt.timedelta(weeks=shock.periods)
        active = np.array([start <= d < stop for d in day])
        targets = regions if shock.scope == "chain" or shock.region is None else [shock.region]  # validated
        for region in targets:
            demand[region] = demand[region] + active * np.log1p(shock.demand_effect)
            risk[region] = np.maximum(risk[region], active * shock.risk_effect)
    return demand, risk


@dataclass(frozen=True)
class _Catalogue:
    """Chain-wide product properties: every retailer sells a subset; upstream firms see the same items."""

    popularity: np.ndarray  # (items,)
    seasonality: np.ndarray  # (items,) amplitude multiplier of the chain's seasonal shape
    base_price: np.ndarray  # (items,)
    promo_lift: np.ndarray  # (items,) log-demand lift while on promotion
    elasticity: np.ndarray  # (items,)

    @classmethod
    def draw(cls, scenario: Scenario) -> _Catalogue:
        rng = _rng(scenario.seed, "catalogue")
        k = scenario.items
        return cls(
            popularity=rng.lognormal(0.0, 0.5, size=k),
            seasonality=np.clip(rng.normal(1.0, 0.35, size=k), 0.2, None),
            base_price=rng.uniform(2.0, 20.0, size=k),
            promo_lift=rng.normal(0.40, 0.08, size=k),
            elasticity=rng.normal(-1.2, 0.2, size=k),
        )


@dataclass
class _Demand:
    """A firm's demand per item over the whole timeline (rows: the items it sees)."""

    items: np.ndarray  # (k,) item indices into the catalogue
    units: np.ndarray  # (k, T)
    price: np.ndarray  # (k, T)
    promotion: np.ndarray  # (k, T) share of the item's retail outlets on promotion


def _retail_demand(
    scenario: Scenario,
    firm: Firm,
    catalogue: _Catalogue,
    dates: pd.DatetimeIndex,
    holidays: dict[dt.date, float],
    shock: np.ndarray,
) -> _Demand:
    """Consumer demand for the items one retailer sells."""
    rng = _rng(scenario.seed, "retail", firm.id)
    k = min(firm.series_count(), scenario.items)
    weights = catalogue.popularity / catalogue.popularity.sum()
    items = np.sort(rng.choice(scenario.items, size=k, replace=False, p=weights))
    n = len(dates)
    t = np.arange(n) - (n - 1)
    week = dates.isocalendar().week.to_numpy().astype(float)
    holiday_effect = np.array([holidays.get(d, 0.0) for d in dates.date])

    def per_item(values: np.ndarray) -> np.ndarray:
        return values[items][:, None]

    base = 40.0 * firm.size / np.sqrt(k) * per_item(catalogue.popularity) * rng.lognormal(0.0, 0.25, size=(k, 1))
    trend = rng.normal(0.0012, 0.0015, size=(k, 1))
    amplitude = per_item(catalogue.seasonality) * rng.normal(1.0, 0.08)
    holiday_sensitivity = rng.normal(1.0, 0.15, size=(k, 1))
    promo = (rng.random((k, n)) < 0.08).astype(float)
    base_price = per_item(catalogue.base_price) * rng.uniform(0.9, 1.1)
    price = base_price * np.exp(_ar1(rng, n, 0.9, 0.04, k)) * (1 - 0.2 * promo)
    noise = _ar1(rng, n, 0.4, firm.noise_std(), k)
    post_promo = np.concatenate([np.zeros((k, 1)), promo[:, :-1]], axis=1)

    log_mean = (
        np.log(base)
        + trend * t
        + amplitude * seasonal_profile(week)
        + holiday_sensitivity * holiday_effect
        + per_item(catalogue.promo_lift) * promo
        - 0.12 * post_promo
        + per_item(catalogue.elasticity) * np.log(price / base_price)
        + shock
        + noise
    )
    return _Demand(items, np.rint(np.exp(log_mean)), np.round(price, 2), promo)


def order_up_to(
    demand: np.ndarray, lead_time: int, alpha: float = 0.15, z: float = 1.65, alpha_error: float = 0.05
) -> np.ndarray:
    """Orders of a firm that forecasts by exponential smoothing and orders up to a base-stock level.

    O_t = d_t + S_t - S_{t-1} with S_t = (L + 1) F_t + z sigma_t sqrt(L + 1): the textbook policy
    whose orders vary more than the demand they serve (the bullwhip effect). `demand` is (T,) or
    (items, T); each row is ordered independently.
    """
    d = np.atleast_2d(np.asarray(demand, dtype=float))
    warm = d[:, : min(8, d.shape[1])]
    forecast = warm.mean(axis=1)
    abs_error = np.abs(warm - forecast[:, None]).mean(axis=1) + 1e-9
    cover = lead_time + 1
    previous_level = cover * forecast + z * 1.25 * abs_error * np.sqrt(cover)
    orders = np.empty_like(d)
    for t in range(d.shape[1]):
        abs_error = alpha_error * np.abs(d[:, t] - forecast) + (1 - alpha_error) * abs_error
        forecast = alpha * d[:, t] + (1 - alpha) * forecast
        level = cover * forecast + z * 1.25 * abs_error * np.sqrt(cover)
        orders[:, t] = np.maximum(0.0, d[:, t] + level - previous_level)
        previous_level = level
    out = np.rint(orders)
    return out[0] if np.ndim(demand) == 1 else out


# ---- the whole chain ----------------------------------------------------------------------------


def generate_chain(scenario: Scenario) -> ChainData:
    """Simulate the chain over the longest history plus a burn-in and cut each firm's window."""
    check_generatable(scenario)
    n = max(f.periods() for f in scenario.firms) + BURN_IN
    dates = pd.date_range(end=pd.Timestamp(scenario.end), periods=n, freq="7D")
    years = range(dates[0].year - 1, dates[-1].year + 2)
    holidays = holiday_effects(years)
    holiday_flag = np.array([1.0 if d in holidays else 0.0 for d in dates.date])
    demand_shock, risk_shock = _shock_paths(scenario, dates)
    catalogue = _Catalogue.draw(scenario)

    suppliers_of: dict[str, list[Link]] = {f.id: [] for f in scenario.firms}
    customers_of: dict[str, list[Link]] = {f.id: [] for f in scenario.firms}
    for link in scenario.links:
        suppliers_of[link.customer].append(link)
        customers_of[link.supplier].append(link)

    demand: dict[str, _Demand] = {}
    orders: dict[tuple[str, str], np.ndarray] = {}  # (customer, supplier) -> (customer's items, T)

    # Downstream first: a firm's demand is known once all of its customers have ordered.
    order = graphlib.TopologicalSorter({f.id: {l.customer for l in customers_of[f.id]} for f in scenario.firms})
    for firm_id in order.static_order():
        firm = scenario.firm(firm_id)
        if not customers_of[firm_id]:  # a retailer facing consumers
            demand[firm_id] = _retail_demand(scenario, firm, catalogue, dates, holidays, demand_shock[firm.region])
        else:
            demand[firm_id] = _upstream_demand(scenario, firm_id, catalogue, customers_of[firm_id], demand, orders, n)
        links = suppliers_of[firm_id]
        total_share = sum(l.share for l in links)
        for link in links:
            share = link.share / total_share
            orders[(firm_id, link.supplier)] = order_up_to(demand[firm_id].units * share, link.lead_time)

    incoming = {firm_id: d.units.sum(axis=0) for firm_id, d in demand.items()}
    placed_per_link = {pair: item_orders.sum(axis=0) for pair, item_orders in orders.items()}
    placed = {
        firm_id: np.sum([placed_per_link[(firm_id, l.supplier)] for l in links], axis=0)
        for firm_id, links in suppliers_of.items()
        if links
    }

    tables: dict[str, FirmTables] = {}
    patterns = _basket_patterns(catalogue, [demand[f.id].items for f in scenario.firms])
    risk_rows = _risk_rows(scenario, dates, suppliers_of, placed_per_link, incoming, risk_shock)
    for firm in scenario.firms:
        history = firm.periods()
        keep = slice(n - history, n)
        d = demand[firm.id]
        frame = pd.DataFrame(
            {
                "date": np.tile(dates[keep], len(d.items)),
                "series": np.repeat([item_name(i) for i in d.items], history),
                "units": d.units[:, keep].ravel(),
                "price": d.price[:, keep].ravel(),
                "promotion": np.round(d.promotion[:, keep], 3).ravel(),
                "holiday": np.tile(holiday_flag[keep], len(d.items)),
            }
        )
        risk = risk_rows[firm.id]
        risk = risk[risk["date"] >= dates[n - history]].reset_index(drop=True)
        tables[firm.id] = FirmTables(demand=frame, risk=risk, orders=_order_baskets(scenario, firm, d.items, patterns))
    return ChainData(
        scenario=scenario,
        dates=dates,
        tables=tables,
        incoming_demand=incoming,
        orders_placed=placed,
        basket_patterns=tuple(tuple(item_name(i) for i in p) for p in patterns),
    )


def _upstream_demand(
    scenario: Scenario,
    firm_id: str,
    catalogue: _Catalogue,
    customer_links: list[Link],
    demand: dict[str, _Demand],
    orders: dict[tuple[str, str], np.ndarray],
    n: int,
) -> _Demand:
    """An upstream firm's demand per item: the sum of its customers' orders for that item."""
    items = np.unique(np.concatenate([demand[l.customer].items for l in customer_links]))
    units = np.zeros((len(items), n))
    promotion = np.zeros((len(items), n))
    carriers = np.zeros((len(items), 1))
    for link in customer_links:
        customer = demand[link.customer]
        rows = np.searchsorted(items, customer.items)
        units[rows] += orders[(link.customer, firm_id)]
        promotion[rows] += customer.promotion
        carriers[rows] += 1
    rng = _rng(scenario.seed, "upstream", firm_id)
    margin = rng.uniform(0.5, 0.8)
    price = catalogue.base_price[items][:, None] * margin * np.exp(_ar1(rng, n, 0.95, 0.03, len(items)))
    return _Demand(items, units, np.round(price, 2), promotion / np.maximum(carriers, 1))


# ---- order baskets ------------------------------------------------------------------------------


def item_name(index: int) -> str:
    """The public name of catalogue item `index` (0-based): demand series and basket items use it."""
    return f"item{index + 1:03d}"


def catalogue_items(scenario: Scenario) -> tuple[str, ...]:
    """Every item name of the scenario's catalogue: the public vocabulary of its order baskets."""
    return tuple(item_name(i) for i in range(scenario.items))


def _basket_patterns(catalogue: _Catalogue, sold_by: list[np.ndarray]) -> list[np.ndarray]:
    """Disjoint item sets bought together chain-wide: a triple and two pairs of the most widely sold items.

    Items are ranked by how many firms trade them (then by popularity), so the patterns appear in many
    firms' baskets; patterns that do not fit a small catalogue are left out.
    """
    firms_selling = np.zeros(len(catalogue.popularity))
    for items in sold_by:
        firms_selling[items] += 1
    pool = list(np.lexsort((-catalogue.popularity, -firms_selling)))
    patterns = []
    for size in (3, 2, 2)[: len(BASKET_PATTERN_RATES)]:
        if len(pool) < size:
            break
        patterns.append(np.sort(np.array(pool[:size])))
        pool = pool[size:]
    return patterns


def _order_baskets(scenario: Scenario, firm: Firm, items: np.ndarray, patterns: list[np.ndarray]) -> pd.DataFrame:
    """A firm's order baskets over the items it trades: background items drawn uniformly (so only the
    planted patterns co-occur more than chance), plus each planted pattern the firm sells all items
    of, with its own rate. About 60 orders per unit of size, at least 20."""
    rng = _rng(scenario.seed, "orders", firm.id)
    count = max(20, round(60 * firm.size))
    sold = set(items.tolist())
    usable = [(p, rate) for p, rate in zip(patterns, BASKET_PATTERN_RATES, strict=False) if sold.issuperset(p.tolist())]
    order_ids: list[str] = []
    basket_items: list[str] = []
    for number in range(count):
        size = min(len(items), 1 + rng.poisson(1.5))
        basket = set(rng.choice(items, size=size, replace=False).tolist())
        for pattern, rate in usable:
            if rng.random() < rate:
                basket.update(pattern.tolist())
        order_id = f"{firm.id}-{number + 1:05d}"
        for item in sorted(basket):
            order_ids.append(order_id)
            basket_items.append(item_name(item))
    return pd.DataFrame({"order_id": order_ids, "item": basket_items})


# ---- supply risk ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _SupplierState:
    """Paths of one supplier, shared by all its customers: what makes risk learnable across firms."""

    region: str
    stress: np.ndarray  # financial stress in (0, 1)
    lead_cv: np.ndarray  # lead-time coefficient of variation
    utilisation: np.ndarray  # demand over capacity
    incidents: np.ndarray  # quality incidents in the last 8 periods


def _supplier_state(scenario: Scenario, source: str, region: str, volume: np.ndarray | None, n: int) -> _SupplierState:
    rng = _rng(scenario.seed, "supplier-state", source)
    stress = 1 / (1 + np.exp(-(rng.normal(-0.3, 0.8) + _ar1(rng, n, 0.96, 0.9))))
    lead_cv = 0.15 * rng.lognormal(0.0, 0.45) * np.exp(_ar1(rng, n, 0.9, 0.25))
    if volume is not None and volume.mean() > 0:
        capacity = 1.15 * volume.mean() * rng.lognormal(0.0, 0.05)
        utilisation = np.minimum(volume / capacity, 1.6)  # beyond that, orders wait in backlog
    else:  # outside the scenario: only its utilisation path is known
        utilisation = np.clip(0.78 + _ar1(rng, n, 0.9, 0.1), 0.0, None)
    quality = np.exp(rng.normal(-1.5, 0.5) + _ar1(rng, n, 0.95, 0.5))
    weekly = rng.poisson(quality)
    incidents = pd.Series(weekly).rolling(8, min_periods=1).sum().to_numpy()
    return _SupplierState(region, stress, lead_cv, utilisation, incidents)


def _region_positions(scenario: Scenario) -> dict[str, np.ndarray]:
    return {
        r: _rng(scenario.seed, "region-geo", r).uniform(0.0, 1500.0, size=2)
        for r in sorted({f.region for f in scenario.firms})
    }


def _risk_rows(
    scenario: Scenario,
    dates: pd.DatetimeIndex,
    suppliers_of: dict[str, list[Link]],
    placed_per_link: dict[tuple[str, str], np.ndarray],
    incoming: dict[str, np.ndarray],
    risk_shock: dict[str, np.ndarray],
) -> dict[str, pd.DataFrame]:
    """Inbound deliveries of every firm with features observed now and a disruption next period.

    The disruption probability is one function of the features for the whole chain (plus a small
    firm effect), with thresholds and interactions: a large firm's own few hundred disruptions
    leave much of it unlearnt, the chain's pooled thousands do not.
    """
    n = len(dates)
    regions = sorted({f.region for f in scenario.firms})
    position = _region_positions(scenario)
    world = _rng(scenario.seed, "risk-world")
    congestion = {r: _ar1(world, n, 0.85, 1.0) for r in regions}
    states: dict[str, _SupplierState] = {}

    parts: dict[str, dict[str, np.ndarray]] = {}
    logits: dict[str, np.ndarray] = {}
    for firm in scenario.firms:
        rng = _rng(scenario.seed, "risk", firm.id)
        links = suppliers_of[firm.id]
        if links:
            sources = [l.supplier for l in links]
            shares = np.array([l.share for l in links], dtype=float)
            volumes = [placed_per_link[(firm.id, s)] for s in sources]
            src_regions = [scenario.firm(s).region for s in sources]
        else:  # raw-material suppliers outside the scenario
            sources = [f"{firm.id}~ext{i + 1}" for i in range(2)]
            shares = np.array([0.6, 0.4])
            volumes = [incoming[firm.id] * s for s in shares]
            src_regions = [firm.region, regions[(regions.index(firm.region) + 1) % len(regions)]]
        shares = shares / shares.sum()
        for source, region in zip(sources, src_regions, strict=True):
            if source not in states:
                states[source] = _supplier_state(scenario, source, region, incoming.get(source), n)

        per_period = firm.deliveries_per_period()
        src = rng.choice(len(sources), size=(n, per_period), p=shares).ravel()
        t = np.repeat(np.arange(n), per_period)
        m = len(src)
        columns = {
            name: np.empty(m) for name in ("stress", "lead_cv", "util", "incidents", "shock", "cong", "ratio", "dist")
        }
        for k, source in enumerate(sources):
            rows = src == k
            st, tk = states[source], t[rows]
            columns["stress"][rows] = st.stress[tk]
            columns["lead_cv"][rows] = st.lead_cv[tk]
            columns["util"][rows] = st.utilisation[tk]
            columns["incidents"][rows] = st.incidents[tk]
            columns["shock"][rows] = risk_shock[st.region][tk]
            columns["cong"][rows] = congestion[st.region][tk]
            trailing = pd.Series(volumes[k]).shift(1).rolling(8, min_periods=1).mean().to_numpy()
            ratio = np.divide(volumes[k], trailing, out=np.ones(n), where=trailing > 0)
            columns["ratio"][rows] = np.clip(ratio[tk], 0.0, 5.0)
            columns["dist"][rows] = 40.0 + float(np.linalg.norm(position[firm.region] - position[st.region]))
        expedited = (rng.random(m) < 0.05 + 0.1 * (columns["ratio"] > 1.3)).astype(float)

        z_lead = (np.log(columns["lead_cv"]) - np.log(0.15)) / 0.45
        z_stress = (columns["stress"] - 0.45) / 0.2
        over_capacity = np.maximum(columns["util"] - 0.9, 0.0) / 0.1
        conc = shares[src]
        logits[firm.id] = (
            rng.normal(0.0, 0.2)  # firm effect
            + 0.7 * z_lead
            + 0.8 * z_stress
            + 1.0 * (conc - 0.5)
            + columns["shock"] * (1.0 + 0.5 * np.maximum(z_stress, 0.0))
            + 0.6 * np.clip(columns["ratio"] - 1.0, -1.0, 3.0)
            + 0.35 * np.maximum(columns["cong"], 0.0) ** 2
            + 1.2 * np.minimum(over_capacity, 3.0) * (1.0 + 0.4 * np.maximum(z_stress, 0.0))
            + 0.25 * columns["incidents"]
            + 0.6 * expedited
            + 0.35 * (columns["dist"] - 150.0) / 100.0
        )
        parts[firm.id] = {
            "date": dates[t],
            "supplier": np.array([sources[k].split("~")[-1] for k in src]),
            "lead_time_cv": np.round(columns["lead_cv"] * rng.lognormal(0.0, 0.08, size=m), 4),
            "financial_stress": np.round(np.clip(columns["stress"] + rng.normal(0.0, 0.03, size=m), 0.0, 1.0), 4),
            "supplier_concentration": np.round(conc, 4),
            "regional_shock": (columns["shock"] > 0).astype(float),
            "order_volume_ratio": np.round(columns["ratio"], 4),
            "congestion_index": np.round(columns["cong"] + rng.normal(0.0, 0.15, size=m), 4),
            "capacity_utilisation": np.round(columns["util"] * rng.lognormal(0.0, 0.03, size=m), 4),
            "quality_incidents": columns["incidents"],
            "distance_km": np.round(columns["dist"], 1),
            "expedited": expedited,
        }

    intercept = _intercept_for_rate(np.concatenate(list(logits.values())), DISRUPTION_BASE_RATE)
    out: dict[str, pd.DataFrame] = {}
    for firm in scenario.firms:
        rng = _rng(scenario.seed, "disruptions", firm.id)
        probability = 1 / (1 + np.exp(-(logits[firm.id] + intercept)))
        parts[firm.id]["disrupted"] = (rng.random(len(probability)) < probability).astype(int)
        out[firm.id] = pd.DataFrame(parts[firm.id])
    return out


def _intercept_for_rate(logits: np.ndarray, rate: float) -> float:
    """The intercept that makes the mean disruption probability equal `rate` (bisection)."""
    low, high = -30.0, 30.0
    for _ in range(80):
        mid = (low + high) / 2
        if np.mean(1 / (1 + np.exp(-(logits + mid)))) > rate:
            high = mid
        else:
            low = mid
    return (low + high) / 2
