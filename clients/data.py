"""A firm's own data: load, validate and hold its demand, risk and order-basket tables.

The same code reads a partner's CSV files and the generator's tables, so a simulated firm and a
real one go through one validation. Every problem is reported with file, row and column, all of
them at once, so a firm can fix its extract in one pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from silobridge.config import DataSchema
from silobridge.errors import DataError, DataProblem

DEMAND_FILE = "demand.csv"
RISK_FILE = "risk.csv"
ORDERS_FILE = "orders.csv"
MAX_PROBLEMS = 50
"""Report at most this many problems per file; a broken export would otherwise flood the screen."""


@dataclass(frozen=True)
class FirmData:
    """A firm's validated tables; any may be absent (a firm holds demand, risk, orders or several)."""

    firm_id: str
    demand: pd.DataFrame | None
    risk: pd.DataFrame | None
    orders: pd.DataFrame | None = None
    """Order baskets, one row per (order_id, item); only analytics queries read them."""


class _Problems:
    """Collects problems for one file, capped, and raises them together."""

    def __init__(self, firm: str, file: str):
        self.firm = firm
        self.file = file
        self.items: list[DataProblem] = []
        self.dropped = 0

    def add(self, message: str, *, row: int | None = None, column: str | None = None) -> None:
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(DataProblem(self.file, row, column, message))
        else:
            self.dropped += 1

    def add_rows(self, mask: np.ndarray, column: str, message: str) -> None:
        """One problem per offending row (CSV line numbers: the header is line 1)."""
        for index in np.flatnonzero(mask):
            self.add(message, row=int(index) + 2, column=column)

    def raise_if_any(self) -> None:
        if self.dropped:
            self.items.append(DataProblem(self.file, None, None, f"... and {self.dropped} more problems"))
        if self.items:
            raise DataError(self.firm, self.items)


def _numeric(frame: pd.DataFrame, column: str, problems: _Problems) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    problems.add_rows(bad.to_numpy(), column, "expected a finite number")
    return values.astype(float)


def _dates(frame: pd.DataFrame, problems: _Problems) -> pd.Series:
    parsed = pd.to_datetime(frame["date"], format="ISO8601", errors="coerce")
    problems.add_rows(parsed.isna().to_numpy(), "date", "expected an ISO date such as 2025-01-06")
    return parsed


def _missing_columns(frame: pd.DataFrame, required: list[str], problems: _Problems) -> bool:
    missing = [c for c in required if c not in frame.columns]
    for column in missing:
        problems.add(f"required column is missing (columns found: {', '.join(map(str, frame.columns))})", column=column)
    return bool(missing)


def validate_demand(
    frame: pd.DataFrame, schema: DataSchema, *, firm: str, min_periods: int, file: str = DEMAND_FILE
) -> pd.DataFrame:
    """Check a demand table and return it normalised (dates, series as text, floats), sorted."""
    problems = _Problems(firm, file)
    required = ["date", "units", *schema.demand_covariates]
    if _missing_columns(frame, required, problems):
        problems.raise_if_any()
    out = pd.DataFrame({"date": _dates(frame, problems)})
    out["series"] = frame["series"].astype(str) if "series" in frame.columns else "all"
    units = _numeric(frame, "units", problems)
    problems.add_rows((units < 0).to_numpy(), "units", "demand cannot be negative")
    out["units"] = units
    for column, transform in schema.demand_covariates.items():
        values = _numeric(frame, column, problems)
        if transform == "log_ratio":
            problems.add_rows((values <= 0).to_numpy(), column, "must be positive (it enters as a log ratio)")
        out[column] = values
    problems.raise_if_any()

    duplicated = out.duplicated(["series", "date"], keep="first").to_numpy()
    problems.add_rows(duplicated, "date", "a second row for the same series and date")
    problems.raise_if_any()

    out = out.sort_values(["series", "date"], kind="stable").reset_index(drop=True)
    for series, rows in out.groupby("series", sort=True):
        steps = rows["date"].diff().dropna().dt.days.to_numpy()
        if np.any(steps != 7):
            gap = rows["date"].iloc[int(np.flatnonzero(steps != 7)[0]) + 1]
            problems.add(
                f"series '{series}': dates must be consecutive weeks; the step before {gap.date()} is not 7 days",
                column="date",
            )
        if len(rows) < min_periods:
            problems.add(
                f"series '{series}' has {len(rows)} periods; at least {min_periods} are needed "
                "(lags + horizon + training windows + test periods)",
                column="date",
            )
    problems.raise_if_any()
    return out


def validate_risk(frame: pd.DataFrame, schema: DataSchema, *, firm: str, file: str = RISK_FILE) -> pd.DataFrame:
    """Check a risk table (features and a binary `disrupted` label) and return it normalised."""
    problems = _Problems(firm, file)
    required = ["date", *schema.risk_features, "disrupted"]
    if _missing_columns(frame, required, problems):
        problems.raise_if_any()
    out = pd.DataFrame({"date": _dates(frame, problems)})
    for column in schema.risk_features:
        out[column] = _numeric(frame, column, problems)
    label = pd.to_numeric(frame["disrupted"], errors="coerce")
    problems.add_rows((~label.isin([0, 1])).to_numpy(), "disrupted", "expected 0 or 1")
    out["disrupted"] = label
    problems.raise_if_any()
    if len(out) == 0:
        problems.add("the file has no rows")
        problems.raise_if_any()
    out["disrupted"] = out["disrupted"].astype(int)
    return out.sort_values("date", kind="stable").reset_index(drop=True)


def validate_orders(frame: pd.DataFrame, *, firm: str, file: str = ORDERS_FILE) -> pd.DataFrame:
    """Check an order-basket table (`order_id`, `item`, one row per item of an order) and return it sorted."""
    problems = _Problems(firm, file)
    if _missing_columns(frame, ["order_id", "item"], problems):
        problems.raise_if_any()
    out = pd.DataFrame()
    for column, what in (("order_id", "an order id"), ("item", "an item name")):
        text = frame[column].astype("string").str.strip()
        blank = text.fillna("") == ""
        problems.add_rows(blank.to_numpy(dtype=bool), column, f"expected {what}")
        out[column] = text.astype(object)
    problems.raise_if_any()
    if len(out) == 0:
        problems.add("the file has no rows")
    problems.add_rows(
        out.duplicated(["order_id", "item"], keep="first").to_numpy(), "item", "the same item twice in one order"
    )
    problems.raise_if_any()
    return out.sort_values(["order_id", "item"], kind="stable").reset_index(drop=True)


def _read_csv(path: Path, firm: str) -> pd.DataFrame:
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise DataError(firm, [DataProblem(path.name, None, None, "the file is empty")]) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise DataError(firm, [DataProblem(path.name, None, None, f"not a readable CSV file: {err}")]) from None


def load_firm_data(folder: str | Path, schema: DataSchema, *, min_periods: int, firm_id: str | None = None) -> FirmData:
    """Read `<folder>/demand.csv`, `risk.csv` and/or `orders.csv`; the folder's name is the firm id."""
    path = Path(folder)
    firm = firm_id or path.name
    if not path.is_dir():
        raise DataError(firm, f"data folder {path} does not exist")
    demand_path, risk_path, orders_path = path / DEMAND_FILE, path / RISK_FILE, path / ORDERS_FILE
    if not demand_path.exists() and not risk_path.exists() and not orders_path.exists():
        raise DataError(firm, f"{path} holds neither {DEMAND_FILE} nor {RISK_FILE} nor {ORDERS_FILE}")
    errors: list[DataProblem] = []
    demand = risk = orders = None
    if demand_path.exists():
        try:
            demand = validate_demand(_read_csv(demand_path, firm), schema, firm=firm, min_periods=min_periods)
        except DataError as err:
            errors += err.problems
    if risk_path.exists():
        try:
            risk = validate_risk(_read_csv(risk_path, firm), schema, firm=firm)
        except DataError as err:
            errors += err.problems
    if orders_path.exists():
        try:
            orders = validate_orders(_read_csv(orders_path, firm), firm=firm)
        except DataError as err:
            errors += err.problems
    if errors:
        raise DataError(firm, errors)
    return FirmData(firm_id=firm, demand=demand, risk=risk, orders=orders)


def firm_data_from_tables(
    firm_id: str,
    demand: pd.DataFrame | None,
    risk: pd.DataFrame | None,
    schema: DataSchema,
    *,
    min_periods: int,
    orders: pd.DataFrame | None = None,
) -> FirmData:
    """Validate in-memory tables (the generator's) exactly as a partner's CSV files are validated."""
    return FirmData(
        firm_id=firm_id,
        demand=None if demand is None else validate_demand(demand, schema, firm=firm_id, min_periods=min_periods),
        risk=None if risk is None else validate_risk(risk, schema, firm=firm_id),
        orders=None if orders is None else validate_orders(orders, firm=firm_id),
    )


def write_firm_data(
    folder: str | Path, demand: pd.DataFrame | None, risk: pd.DataFrame | None, orders: pd.DataFrame | None = None
) -> None:
    """Write tables in the partner CSV format (ISO dates)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for table, name in ((demand, DEMAND_FILE), (risk, RISK_FILE)):
        if table is None:
            continue
        out = table.copy()
        out["date"] = pd.to_datetime(out["date"]).dt.strftime("%Y-%m-%d")
        out.to_csv(path / name, index=False)
    if orders is not None:
        orders.to_csv(path / ORDERS_FILE, index=False)
