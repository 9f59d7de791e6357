"""`silobridge init`: a first federation file written from a folder of partners' extracts.

It reads what the files say about themselves (column names, the weekday the weeks fall on, the last
week, row counts) and leaves to the coordinator what they cannot say: each firm's tier, and the
public ranges DP clips risk features to. Ranges computed here come from the firms' private data, so
they are written only as commented suggestions, with a warning.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from silobridge.clients.data import DEMAND_FILE, ORDERS_FILE, RISK_FILE, read_firm_csv
from silobridge.contract.config import RISK_SPLIT
from silobridge.errors import ConfigError, DataError
from silobridge.scenarios.schema import FIRM_ID_PATTERN, TIER_PLACEHOLDER

DATE_NAMES = ("date", "week_ending", "week_end", "week", "week_start", "period", "ds")
UNITS_NAMES = ("units", "qty", "quantity", "weekly_sales", "sales", "volume", "demand", "y")
SERIES_NAMES = ("series", "item", "sku", "product", "dept", "department", "category", "store")
LABEL_NAMES = ("disrupted", "label", "target", "default", "defaulted", "bad", "outcome", "y")


@dataclass(frozen=True)
class Columns:
    """Column names chosen by the coordinator on the command line; None: detect them."""

    date: str | None = None
    units: str | None = None
    series: str | None = None
    label: str | None = None


@dataclass
class FirmSurvey:
    """What one firm's folder shows: its columns, roles found for them, its weeks and its row counts."""

    firm_id: str
    date: str | None = None
    units: str | None = None
    series: str | None = None
    covariates: dict[str, str] = field(default_factory=dict)
    label: str | None = None
    features: list[str] = field(default_factory=list)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    weekday: int | None = None
    last_week: dt.date | None = None
    weeks: int = 0
    rows: int = 0
    ignored: list[str] = field(default_factory=list)
    risk_split: str = ""


def _numeric(frame: pd.DataFrame, column: str) -> pd.Series | None:
    """The column's numbers if every present cell is a finite number, else None."""
    values = pd.to_numeric(frame[column], errors="coerce").astype(float)
    present = frame[column].notna()
    finite = values[present].abs() < math.inf
    return values if present.any() and bool(finite.all()) else None


def _is_dates(frame: pd.DataFrame, column: str) -> bool:
    present = frame[column].dropna()
    if present.empty or _numeric(frame, column) is not None:
        return False
    return bool(pd.to_datetime(present, format="ISO8601", errors="coerce").notna().all())


def _pick(
    frame: pd.DataFrame, given: str | None, names: tuple[str, ...], fits, *, firm: str, file: str, option: str
) -> str | None:
    """The column playing `role`: the one given, else a well-known name that fits, else the only column that fits."""
    if given is not None:
        if given not in frame.columns:
            raise DataError(
                firm, f"{file}: no column '{given}' ({option}); columns found: {', '.join(map(str, frame.columns))}"
            )
        return given
    lower = {str(c).lower(): str(c) for c in frame.columns}
    for name in names:
        if name in lower and fits(lower[name]):
            return lower[name]
    fitting = [str(c) for c in frame.columns if fits(str(c))]
    return fitting[0] if len(fitting) == 1 else None


def _outward(low: float, high: float) -> tuple[float, float]:
    """A range rounded outwards to two significant digits (a suggestion; never used as is)."""

    def round_to(value: float, up: bool) -> float:
        if value == 0:
            return 0.0
        step = 10.0 ** (math.floor(math.log10(abs(value))) - 1)
        units = round(value / step, 6)  # 1.0 / 0.1 is 10.000000000000002: not a reason to round up
        return round((math.ceil if up else math.floor)(units) * step, 12)

    low, high = round_to(low, False), round_to(high, True)
    return (low, high) if low < high else (low, low + 1.0)


def survey_firm(folder: Path, columns: Columns) -> FirmSurvey:
    """Read one firm's files and find the role of each column; raise DataError where a role is not found."""
    firm = folder.name
    survey = FirmSurvey(firm_id=firm)
    demand_path, risk_path = folder / DEMAND_FILE, folder / RISK_FILE
    if demand_path.exists():
        frame = read_firm_csv(demand_path, firm)
        survey.rows += len(frame)
        survey.date = _pick(
            frame, columns.date, DATE_NAMES, lambda c: _is_dates(frame, c), firm=firm,
            file=DEMAND_FILE, option="--date-column",
        )  # fmt: skip
        if survey.date is None:
            raise DataError(
                firm,
                f"{DEMAND_FILE}: no single column of ISO dates (YYYY-MM-DD) found among "
                f"{', '.join(map(str, frame.columns))}; name it with --date-column",
            )
        survey.units = _pick(
            frame, columns.units, UNITS_NAMES, lambda c: _numeric(frame, c) is not None, firm=firm,
            file=DEMAND_FILE, option="--units-column",
        )  # fmt: skip
        if survey.units is None or survey.units not in {str(c) for c in frame.columns}:
            raise DataError(
                firm,
                f"{DEMAND_FILE}: cannot tell which column holds the weekly units among "
                f"{', '.join(map(str, frame.columns))}; name it with --units-column",
            )
        text_columns = lambda c: c not in (survey.date, survey.units) and _numeric(frame, c) is None  # noqa: E731
        survey.series = _pick(
            frame, columns.series, SERIES_NAMES, text_columns, firm=firm, file=DEMAND_FILE,
            option="--series-column",
        )  # fmt: skip
        dates = pd.to_datetime(frame[survey.date], format="ISO8601", errors="coerce").dropna()
        if not dates.empty:
            survey.weekday = int(Counter(dates.dt.day_of_week).most_common(1)[0][0])
            survey.last_week = dates.max().date()
            survey.weeks = int(dates.nunique())
        for column in map(str, frame.columns):
            if column in (survey.date, survey.units, survey.series):
                continue
            values = _numeric(frame, column)
            if values is None:
                survey.ignored.append(f"{DEMAND_FILE}:{column}")
            else:
                survey.covariates[column] = "log_ratio" if "price" in column.lower() and (values > 0).all() else "raw"
    if risk_path.exists():
        frame = read_firm_csv(risk_path, firm)
        survey.rows += len(frame)
        zero_one = lambda c: (v := _numeric(frame, c)) is not None and bool(v.dropna().isin([0, 1]).all())  # noqa: E731
        survey.label = _pick(
            frame, columns.label, LABEL_NAMES, zero_one, firm=firm, file=RISK_FILE,
            option="--label-column",
        )  # fmt: skip
        if survey.label is None:
            raise DataError(
                firm,
                f"{RISK_FILE}: cannot tell which 0/1 column is the label among {', '.join(map(str, frame.columns))}; "
                "name it with --label-column",
            )
        risk_date = survey.date or columns.date or _pick(
            frame, None, DATE_NAMES, lambda c: _is_dates(frame, c), firm=firm, file=RISK_FILE,
            option="--date-column",
        )  # fmt: skip
        has_date = risk_date is not None and risk_date in frame.columns
        survey.risk_split = RISK_SPLIT if RISK_SPLIT in frame.columns else "date" if has_date else "holdout"
        if survey.date is None and has_date:
            survey.date = risk_date
        for column in map(str, frame.columns):
            if column in (survey.label, risk_date, RISK_SPLIT):
                continue
            values = _numeric(frame, column)
            if values is None:
                survey.ignored.append(f"{RISK_FILE}:{column}")
            else:
                survey.features.append(column)
                survey.ranges[column] = _outward(float(values.min()), float(values.max()))
    if not demand_path.exists() and not risk_path.exists() and not (folder / ORDERS_FILE).exists():
        raise DataError(firm, f"{folder} holds neither {DEMAND_FILE} nor {RISK_FILE} nor {ORDERS_FILE}")
    return survey


def survey_folder(root: Path, columns: Columns) -> list[FirmSurvey]:
    """One survey per sub-folder (its name is the firm id), every firm's problems reported together."""
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder", source="command line", field="DATA_DIR")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ConfigError(f"{root} holds no sub-folders: one per firm is expected", source="command line")
    bad = [p.name for p in folders if not re.fullmatch(FIRM_ID_PATTERN, p.name)]
    if bad:
        raise ConfigError(
            f"folder names {bad} are not firm ids (letters, digits, '.', '_', '-'; at most 64)", source=str(root)
        )
    surveys, problems = [], []
    for folder in folders:
        try:
            surveys.append(survey_firm(folder, columns))
        except DataError as err:
            problems.append(str(err))
    if problems:
        raise ConfigError("\n  ".join(["cannot write a federation file:", *problems]), source=str(root))
    return surveys


def _agree(surveys: list[FirmSurvey], attribute: str, option: str) -> str | None:
    """A column role the firms must name alike (one [data] table for all)."""
    names = {s.firm_id: getattr(s, attribute) for s in surveys if getattr(s, attribute) is not None}
    if len(set(names.values())) > 1:
        raise ConfigError(
            f"firms name their {attribute} column differently ({', '.join(f'{f}: {n}' for f, n in names.items())}); "
            f"rename the columns in the extracts or pass {option}",
            source="command line",
        )
    return next(iter(names.values()), None)


def _common(parts: list[list[str]]) -> tuple[list[str], list[str]]:
    """(names every firm holding the file has, in the first firm's order; names only some have)."""
    if not parts:
        return [], []
    every = [name for name in parts[0] if all(name in part for part in parts)]
    some = sorted({name for part in parts for name in part} - set(every))
    return every, some


def federation_toml(surveys: list[FirmSurvey], *, name: str, source: Path) -> str:
    """The federation file's text: detected settings, the tiers to fill in, ranges as commented suggestions."""
    date = _agree(surveys, "date", "--date-column")
    units = _agree(surveys, "units", "--units-column")
    series = _agree(surveys, "series", "--series-column")
    label = _agree(surveys, "label", "--label-column")
    dated = [s for s in surveys if s.weekday is not None and s.last_week is not None]
    weekdays = {s.firm_id: s.weekday for s in dated}
    if len(set(weekdays.values())) > 1:
        days = ", ".join(f"{f}: {dt.date(2024, 1, 1 + int(d)).strftime('%A')}s" for f, d in weekdays.items())  # type: ignore[arg-type]
        raise ConfigError(
            f"firms' weeks fall on different weekdays ({days}); one federation needs one weekly anchor: shift the "
            "extracts to one weekday",
            source=str(source),
        )
    end = max((s.last_week for s in dated), default=None)  # type: ignore[type-var]
    covariate_firms = [s for s in surveys if s.units is not None]
    covariates, partial_covariates = _common([list(s.covariates) for s in covariate_firms])
    risk_firms = [s for s in surveys if s.label is not None]
    features, partial_features = _common([s.features for s in risk_firms])
    smallest = min((s.rows for s in surveys if s.rows), default=1)

    def value(key: str, item: object) -> str:
        return f"{_key(key)} = {_inline(item)}"

    lines = [
        f"# Federation file written by `silobridge init {source}`: check every line before sharing it with the firms.",
        value("name", name),
        "seed = 1",
    ]
    if end is None:
        lines.append("# no firm has dated demand: set end to the last week of the pilot")
        lines.append("end = 2025-12-29")
    else:
        weekday = end.strftime("%A")
        lines.append(f"# the last week found; every firm's weeks must fall on a {weekday}, as this date does")
        lines.append(f"end = {end.isoformat()}")
    lines += [
        "horizon = 4  # weeks forecast at once",
        "test_periods = 13  # final weeks held out for evaluation, the same for every firm",
        "",
        f"# size: rows in the firm's files over the smallest firm's ({smallest}); firms at or above large_size are "
        "'large'",
        "# tier: replace TODO with supplier, manufacturer, distributor or retailer (goods flow in that order)",
        "# history: weeks of demand found (informative: each firm's files are checked as they are)",
        "firms = [",
    ]
    for s in surveys:
        entry: dict[str, object] = {
            "id": s.firm_id,
            "tier": TIER_PLACEHOLDER,
            "size": round(max(s.rows, 1) / smallest, 2),
        }
        if s.weeks:
            entry["history"] = s.weeks
        entry["region"] = "all"
        body = ", ".join(value(k, v) for k, v in entry.items())
        lines.append(f"  {{ {body} }},")
    lines += ["]", "", "[data]"]
    for key, found, default in (
        ("date_column", date, "date"),
        ("units_column", units, "units"),
        ("series_column", series, "series"),
        ("label_column", label, "disrupted"),
    ):
        if found is not None and found != default:
            lines.append(value(key, found))
    if series is None and covariate_firms:
        lines.append("# no series column found: each firm's demand is one series")
    lines.append(value("demand_covariates", {c: covariate_firms[0].covariates[c] for c in covariates}))
    if partial_covariates:
        lines.append(f"# left out, not in every firm's {DEMAND_FILE}: {', '.join(partial_covariates)}")
    lines.append(value("risk_features", features))
    if partial_features:
        lines.append(f"# left out, not in every firm's {RISK_FILE}: {', '.join(partial_features)}")
    ignored = sorted({i for s in surveys for i in s.ignored})
    if ignored:
        lines.append(f"# not numeric, so not used: {', '.join(ignored)}")
    for s in risk_firms:
        if s.risk_split == "holdout":
            lines.append(
                f"# {s.firm_id}'s {RISK_FILE} has no date and no '{RISK_SPLIT}' column: a seeded holdout tests on "
                "risk_holdout (default 0.2) of its rows"
            )
    if features:
        suggested = {
            f: (min(s.ranges[f][0] for s in risk_firms), max(s.ranges[f][1] for s in risk_firms)) for f in features
        }
        lines += [
            "",
            "# Under differential privacy every risk feature is clipped to a public range, and the run is refused",
            "# until each has one. WARNING: the values below were computed from the firms' own files, so they leak",
            "# each feature's minimum and maximum. Replace them with public knowledge (a contract's limits, a",
            "# regulator's caps, a physical bound) before you uncomment them.",
            "# [data.risk_feature_ranges]",
            *(f"# {value(f, [low, high])}" for f, (low, high) in suggested.items()),
        ]
    return "\n".join(lines) + "\n"


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _inline(item: object) -> str:
    """A TOML value on one line (tables inline), so comments can sit between the lines of the file."""
    if isinstance(item, dict):
        return "{ " + ", ".join(f"{_key(str(k))} = {_inline(v)}" for k, v in item.items()) + " }" if item else "{}"
    if isinstance(item, list | tuple):
        return "[" + ", ".join(_inline(v) for v in item) + "]"
    if isinstance(item, bool):
        return "true" if item else "false"
    if isinstance(item, int | float):
        return repr(item)
    return json.dumps(str(item))  # a JSON string is a valid TOML basic string


def tiers_to_fill(text: str) -> bool:
    """Whether a written federation file still holds tier placeholders."""
    return f'tier = "{TIER_PLACEHOLDER}"' in text
