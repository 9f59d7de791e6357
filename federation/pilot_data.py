"""A pilot's data on the way in: generated partner files, a first federation file from the firms'
extracts, and a firm's own check of its files against the federation file (what `generate`, `init`
and `validate` do; `join` checks the same way before it starts a node)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from silobridge.clients.data import FirmData, describe_risk_split
from silobridge.contract.config import FederationSpec
from silobridge.errors import ConfigError
from silobridge.federation.pilot_init import Columns, FirmSurvey, federation_toml, survey_folder
from silobridge.scenarios.schema import Scenario


def federation_as_firm(config: Path) -> tuple[Scenario, FederationSpec]:
    """The federation file as a firm checks it: DP off (no calibration needed to check data), DP's own
    demands on the schema checked still."""
    from silobridge.federation.settings import check_public_ranges, settings_from_run_config

    settings = settings_from_run_config({"scenario": str(config.resolve()), "dp": "off", "data": "nodes"})
    check_public_ranges(settings.spec.data, private=settings.scenario.privacy.enabled)
    return settings.scenario, settings.spec


@dataclass(frozen=True)
class FirmCheck:
    """A firm's files that passed every rule the run applies, and what they hold, in words."""

    data: FirmData
    parts: tuple[str, ...]


def check_firm_folder(data_dir: Path, config: Path, *, firm_id: str | None = None) -> FirmCheck:
    """A firm's folder checked against the federation file (every rule the run applies); sends nothing."""
    from silobridge.federation.firm_source import validate_firm_folder

    scenario, spec = federation_as_firm(config)
    data = validate_firm_folder(data_dir, scenario, spec, firm_id=firm_id)
    parts = []
    if data.demand is not None:
        parts.append(f"demand.csv {len(data.demand)} rows, {data.demand['series'].nunique()} series")
    if data.risk is not None:
        split = describe_risk_split(data.risk_split or "", spec.data)
        parts.append(f"risk.csv {len(data.risk)} rows, train/test split: {split}")
    if data.orders is not None:
        parts.append(f"orders.csv {len(data.orders)} rows")
    return FirmCheck(data, tuple(parts))


def _new_folder(out: Path, option: str) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; name a new folder", source="command line", field=option)
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty; choose a new folder", source="command line", field=option)


def generate_firm_files(scenario: Path, overrides: Sequence[str], out: Path) -> list[str]:
    """Each firm's generated data written as a partner firm's CSV files under `out/<firm>`; the firm ids."""
    from silobridge.clients.data import write_firm_data
    from silobridge.scenarios.generator import generate_chain
    from silobridge.scenarios.schema import check_generatable, load_scenario, parse_override

    loaded = load_scenario(scenario, [parse_override(text) for text in overrides])
    check_generatable(loaded, source=str(scenario))
    _new_folder(out, "--out")
    chain = generate_chain(loaded)
    for firm in loaded.firms:
        tables = chain.tables[firm.id]
        write_firm_data(out / firm.id, tables.demand, tables.risk, tables.orders)
    return [firm.id for firm in loaded.firms]


def write_federation_file(data_dir: Path, out: Path, *, name: str | None, columns: Columns) -> list[FirmSurvey]:
    """A first federation file from the firms' extracts, written to `out` (which must not exist)."""
    if out.exists():
        raise ConfigError(f"{out} already exists; choose another file", source="command line", field="--out")
    if not out.parent.is_dir():
        raise ConfigError(f"{out.parent} is not a folder", source="command line", field="--out")
    title = name or re.sub(r"[^A-Za-z0-9_.-]+", "-", data_dir.resolve().name).strip("-") or "pilot"
    surveys = survey_folder(data_dir, columns)
    text = federation_toml(surveys, name=title, source=data_dir)
    out.write_text(text, encoding="utf-8")
    return surveys
