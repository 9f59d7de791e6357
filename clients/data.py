"""A firm's own data: load, validate and hold its demand, risk and order-basket tables.

The same code reads a partner's CSV files and the generator's tables, so a simulated firm and a
real one go through one validation. Every problem is reported with file, row and column, all of
them at once, so a firm can fix its extract in one pass.
"""

from __future__ import annotations

import datetime as dt
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from silobridge.contract.config import RISK_LABEL, RISK_SPLIT, DataSchema, FederationSpec
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
    risk_split: str | None = None
    """How the risk rows split into training and test (`risk_split_rule`); None without risk data."""


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


MAX_ABS_VALUE = 1e12
"""Largest magnitude of any number in a firm's files: models run in float32 (up to about 3e38) on values
scaled by a series' mean and squared in statistics, so larger figures overflow mid-run."""

RISK_SPLIT_COLUMN = "split column"
RISK_SPLIT_DATE = "date"
RISK_SPLIT_HOLDOUT = "holdout"


@dataclass(frozen=True)
class Calendar:
    """The federation's weeks: every demand date falls on `end`'s weekday and none after `end`; training
    windows end before `test_start`. Without one, only the shape of the files is checked."""

    end: dt.date
    test_start: dt.date

    @classmethod
    def of(cls, spec: FederationSpec) -> Calendar:
        return cls(end=spec.test_start + dt.timedelta(weeks=spec.test_periods - 1), test_start=spec.test_start)

    @property
    def weekday(self) -> str:
        return self.end.strftime("%A")

    @property
    def test_periods(self) -> int:
        return (self.end - self.test_start).days // 7 + 1


def _numeric(frame: pd.DataFrame, column: str, problems: _Problems) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce").astype(float)
    bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    problems.add_rows(bad.to_numpy(), column, "expected a finite number")
    huge = (values.abs() > MAX_ABS_VALUE).to_numpy() & ~bad.to_numpy()
    problems.add_rows(huge, column, f"{MAX_ABS_VALUE:g} at most in magnitude (larger figures overflow the models)")
    return values


def _dates(frame: pd.DataFrame, column: str, problems: _Problems) -> pd.Series:
    parsed = pd.to_datetime(frame[column], format="ISO8601", errors="coerce")
    problems.add_rows(parsed.isna().to_numpy(), column, "expected an ISO date such as 2025-01-06")
    return parsed


_SCHEMA_KEYS = {"date": "date_column", "units": "units_column", "disrupted": "label_column"}


def _missing_columns(frame: pd.DataFrame, required: list[str], problems: _Problems) -> bool:
    missing = [c for c in required if c not in frame.columns]
    for column in missing:
        hint = f"; if it has another name, set {_SCHEMA_KEYS[column]} in [data]" if column in _SCHEMA_KEYS else ""
        problems.add(
            f"required column is missing (columns found: {', '.join(map(str, frame.columns))}){hint}", column=column
        )
    return bool(missing)


def _no_rows(frame: pd.DataFrame, problems: _Problems) -> None:
    if len(frame) == 0:
        problems.add("the file has a header but no rows")
        problems.raise_if_any()


def _first_row(mask: np.ndarray) -> int:
    """The CSV line of the first flagged row (the header is line 1)."""
    return int(np.flatnonzero(mask)[0]) + 2


def _check_calendar(dates: pd.Series, calendar: Calendar, column: str, problems: _Problems) -> None:
    """Every week on the federation's weekday, none after its end: one problem each, at the first offending row."""
    valid = dates.notna().to_numpy()
    wrong_day = valid & (dates.dt.day_of_week.to_numpy(na_value=-1) != calendar.end.weekday())
    if wrong_day.any():
        row = _first_row(wrong_day)
        day = dates.iloc[row - 2]
        problems.add(
            f"{day.date()} is a {day.strftime('%A')}; this federation's weeks fall on {calendar.weekday}s (its end, "
            f"{calendar.end}, is a {calendar.weekday}): {int(wrong_day.sum())} rows are on another weekday",
            row=row,
            column=column,
        )
    late = valid & (dates.to_numpy(dtype="datetime64[ns]") > np.datetime64(calendar.end, "ns"))
    if late.any():
        problems.add(
            f"{int(late.sum())} rows lie after the federation's end ({calendar.end}), which the run would leave "
            "out: cut the extract there, or ask the coordinator for a later end",
            row=_first_row(late),
            column=column,
        )


def validate_demand(
    frame: pd.DataFrame,
    schema: DataSchema,
    *,
    firm: str,
    min_periods: int,
    file: str = DEMAND_FILE,
    calendar: Calendar | None = None,
) -> pd.DataFrame:
    """Check a demand table and return it normalised (date, series, units and covariates, sorted).

    Columns are read under the extract's own names (`schema.date_column`...) and renamed; a missing
    week inside a series is refused rather than filled: lags assume consecutive weeks, and any value
    we filled in would be made up.
    """
    problems = _Problems(firm, file)
    date_col, units_col, series_col = schema.date_column, schema.units_column, schema.series_column
    if _missing_columns(frame, [date_col, units_col, *schema.demand_covariates], problems):
        problems.raise_if_any()
    _no_rows(frame, problems)
    out = pd.DataFrame({"date": _dates(frame, date_col, problems)})
    if series_col in frame.columns:
        series = frame[series_col].astype("string").str.strip()
        problems.add_rows((series.fillna("") == "").to_numpy(dtype=bool), series_col, "expected a series name")
        out["series"] = series.astype(object)
    else:
        out["series"] = "all"
    units = _numeric(frame, units_col, problems)
    problems.add_rows((units < 0).to_numpy(), units_col, "demand cannot be negative")
    out["units"] = units
    for column, transform in schema.demand_covariates.items():
        values = _numeric(frame, column, problems)
        if transform == "log_ratio":
            problems.add_rows((values <= 0).to_numpy(), column, "must be positive (it enters as a log ratio)")
        out[column] = values
    if calendar is not None:
        _check_calendar(out["date"], calendar, date_col, problems)
    problems.raise_if_any()

    duplicated = out.duplicated(["series", "date"], keep="first").to_numpy()
    for index in np.flatnonzero(duplicated)[:MAX_PROBLEMS]:
        problems.add(
            f"a second row for the same series and date (series '{out['series'].iloc[index]}', "
            f"{out['date'].iloc[index].date()}): one row per series and week",
            row=int(index) + 2,
            column=date_col,
        )
    problems.raise_if_any()

    out["_row"] = np.arange(len(out)) + 2
    out = out.sort_values(["series", "date"], kind="stable").reset_index(drop=True)
    for series, rows in out.groupby("series", sort=True):
        steps = rows["date"].diff().dropna().dt.days.to_numpy()
        if np.any(steps != 7):
            at = int(np.flatnonzero(steps != 7)[0]) + 1
            before, after = rows["date"].iloc[at - 1].date(), rows["date"].iloc[at].date()
            what = (
                f"{int(steps[at - 1]) // 7 - 1} missing weeks between {before} and {after}"
                if steps[at - 1] % 7 == 0
                else f"{before} and {after} are not whole weeks apart"
            )
            problems.add(
                f"series '{series}': dates must be consecutive weeks; {what} (the step before {after} is not 7 days). "
                "Lags assume consecutive weeks: write the missing weeks (0 if nothing sold) or start the series after",
                row=int(rows["_row"].iloc[at]),
                column=date_col,
            )
        if calendar is None:
            if len(rows) < min_periods:
                problems.add(
                    f"series '{series}' has {len(rows)} periods; at least {min_periods} are needed "
                    "(lags + horizon + training windows + test periods)",
                    column=date_col,
                )
            continue
        need = min_periods - calendar.test_periods
        before_test = int((rows["date"] < pd.Timestamp(calendar.test_start)).sum())
        if before_test < need:
            problems.add(
                f"series '{series}' has {before_test} periods before the test start ({calendar.test_start}); at least "
                f"{need} are needed (lags + horizon + training windows), or the run would leave it out",
                column=date_col,
            )
    problems.raise_if_any()
    return out.drop(columns="_row")


def risk_split_rule(columns: list[str] | pd.Index, schema: DataSchema) -> str:
    """How a firm's risk rows split into training and test: its split column, its dates, or a holdout."""
    if RISK_SPLIT in columns:
        return RISK_SPLIT_COLUMN
    if schema.date_column in columns:
        return RISK_SPLIT_DATE
    return RISK_SPLIT_HOLDOUT


def describe_risk_split(rule: str, schema: DataSchema) -> str:
    """The rule in words, for `validate` and the run's summary."""
    if rule == RISK_SPLIT_COLUMN:
        return f"the file's '{RISK_SPLIT}' column"
    if rule == RISK_SPLIT_DATE:
        return f"by date (rows from the test start on are held out; column '{schema.date_column}')"
    return (
        f"no date or '{RISK_SPLIT}' column: a seeded holdout of {schema.risk_holdout:.0%} of the rows, stratified "
        "by label (seed: CRC-32 of the firm id)"
    )


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True for held-out rows: `fraction` of each label's rows (rounded), drawn by a seeded generator."""
    rng = np.random.default_rng(seed)
    test = np.zeros(len(labels), dtype=bool)
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        take = int(round(fraction * len(rows)))
        test[rng.permutation(rows)[:take]] = True
    return test


def validate_risk(
    frame: pd.DataFrame,
    schema: DataSchema,
    *,
    firm: str,
    file: str = RISK_FILE,
    calendar: Calendar | None = None,
) -> pd.DataFrame:
    """Check a risk table (features and a binary label) and return it normalised, label named `disrupted`.

    Dates are optional (a lender's or a supplier-scoring file is often cross-sectional): with a `split`
    column the firm chooses its test rows, with dates the federation's test date does, and otherwise
    a seeded, stratified holdout (`describe_risk_split`). A `split` column is kept in the result.
    """
    problems = _Problems(firm, file)
    label_col, date_col = schema.label_column, schema.date_column
    if _missing_columns(frame, [*schema.risk_features, label_col], problems):
        problems.raise_if_any()
    _no_rows(frame, problems)
    rule = risk_split_rule(frame.columns, schema)
    out = pd.DataFrame(
        {"date": _dates(frame, date_col, problems) if date_col in frame.columns else pd.NaT}, index=frame.index
    )
    out["date"] = pd.to_datetime(out["date"])
    for column in schema.risk_features:
        out[column] = _numeric(frame, column, problems)
    label = pd.to_numeric(frame[label_col], errors="coerce")
    problems.add_rows((~label.isin([0, 1])).to_numpy(), label_col, "expected 0 or 1")
    out[RISK_LABEL] = label
    if rule == RISK_SPLIT_COLUMN:
        split = frame[RISK_SPLIT].astype("string").str.strip().str.lower()
        problems.add_rows((~split.isin(["train", "test"])).to_numpy(dtype=bool), RISK_SPLIT, "expected train or test")
        out[RISK_SPLIT] = split.astype(object)
    problems.raise_if_any()
    out[RISK_LABEL] = out[RISK_LABEL].astype(int)
    if rule == RISK_SPLIT_HOLDOUT:
        held = stratified_holdout(out[RISK_LABEL].to_numpy(), schema.risk_holdout, zlib.crc32(firm.encode()))
        out[RISK_SPLIT] = np.where(held, "test", "train")
    if rule == RISK_SPLIT_DATE and calendar is not None:
        training = int((out["date"] < pd.Timestamp(calendar.test_start)).sum())
    else:
        training = int((out[RISK_SPLIT] == "train").sum()) if RISK_SPLIT in out else len(out)
    if training == 0:
        problems.add(
            f"no row trains the risk model (split: {describe_risk_split(rule, schema)}"
            + (f"; test start {calendar.test_start}" if calendar is not None and rule == RISK_SPLIT_DATE else "")
            + "), so the run would leave this file out"
        )
        problems.raise_if_any()
    if rule == RISK_SPLIT_DATE:
        out = out.sort_values("date", kind="stable")
    return out.reset_index(drop=True)


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


def read_firm_csv(path: Path, firm: str) -> pd.DataFrame:
    """Every cell as text (validation parses it), a spreadsheet's byte-order mark dropped from the header."""

    def refused(message: str) -> DataError:
        return DataError(firm, [DataProblem(path.name, None, None, message)])

    if path.is_dir():
        raise refused(f"{path} is a folder; expected a CSV file")
    try:
        return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8-sig")
    except pd.errors.EmptyDataError:
        raise refused("the file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        raise refused(f"not a readable CSV file: {err}") from None
    except OSError as err:
        raise refused(f"cannot read {path}: {err.strerror or err}") from None


def load_firm_data(
    folder: str | Path,
    schema: DataSchema,
    *,
    min_periods: int,
    firm_id: str | None = None,
    calendar: Calendar | None = None,
) -> FirmData:
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
    rule = None
    if demand_path.exists():
        try:
            frame = read_firm_csv(demand_path, firm)
            demand = validate_demand(frame, schema, firm=firm, min_periods=min_periods, calendar=calendar)
        except DataError as err:
            errors += err.problems
    if risk_path.exists():
        try:
            frame = read_firm_csv(risk_path, firm)
            rule = risk_split_rule(frame.columns, schema)
            risk = validate_risk(frame, schema, firm=firm, calendar=calendar)
        except DataError as err:
            errors += err.problems
    if orders_path.exists():
        try:
            orders = validate_orders(read_firm_csv(orders_path, firm), firm=firm)
        except DataError as err:
            errors += err.problems
    if errors:
        raise DataError(firm, errors)
    return FirmData(firm_id=firm, demand=demand, risk=risk, orders=orders, risk_split=rule)


def load_for_spec(folder: str | Path, spec: FederationSpec, *, firm_id: str | None = None) -> FirmData:
    """A firm's files checked against everything the run will apply: schema, weeks, end and test start."""
    return load_firm_data(folder, spec.data, min_periods=spec.min_periods, firm_id=firm_id, calendar=Calendar.of(spec))


def firm_data_from_tables(
    firm_id: str,
    demand: pd.DataFrame | None,
    risk: pd.DataFrame | None,
    schema: DataSchema,
    *,
    min_periods: int,
    orders: pd.DataFrame | None = None,
    calendar: Calendar | None = None,
) -> FirmData:
    """Validate in-memory tables (the generator's) exactly as a partner's CSV files are validated.

    The generator names its columns as SiloBridge does inside (`date`, `units`, ...), whatever the
    federation's [data] says an extract calls them.
    """
    own = schema.model_copy(
        update={"date_column": "date", "units_column": "units", "series_column": "series", "label_column": RISK_LABEL}
    )
    return FirmData(
        firm_id=firm_id,
        demand=None
        if demand is None
        else validate_demand(demand, own, firm=firm_id, min_periods=min_periods, calendar=calendar),
        risk=None if risk is None else validate_risk(risk, own, firm=firm_id, calendar=calendar),
        orders=None if orders is None else validate_orders(orders, firm=firm_id),
        risk_split=None if risk is None else risk_split_rule(risk.columns, own),
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
