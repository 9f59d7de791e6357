"""Which firm a node plays, and its data: the one place a node meets its data.

In a simulation node `partition-id` i plays the i-th firm of the scenario; its tables come from
the generator (run once per process) or, in a pilot, from that firm's folder of CSV files, and pass
the same validation as a partner's files. In a real federation a SuperNode's node config names
its firm's data folder and the federation file; its public profile (tier, size) comes from there.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from silobridge.clients.data import RISK_FILE, Calendar, FirmData, firm_data_from_tables, load_for_spec, risk_split_rule
from silobridge.contract.config import FederationSpec
from silobridge.contract.seeds import parse_noise_seed
from silobridge.contract.wire_names import (
    EVALUATE,
    EVALUATE_EFFICIENCY,
    QUERY_ANALYTICS,
    QUERY_MANIFEST,
    QUERY_MOMENTS,
    QUERY_SECAGG_ADVERTISE,
    QUERY_SECAGG_SHARE,
    QUERY_SECAGG_UNMASK,
    TRAIN,
    TRAIN_BASELINES,
)
from silobridge.errors import ConfigError, DataError, DataProblem, ProtocolError
from silobridge.federation.settings import RunSettings, settings_from_run_config
from silobridge.scenarios.generator import ChainData, generate_chain
from silobridge.scenarios.schema import Scenario, load_scenario

if TYPE_CHECKING:  # the model code (torch, Opacus) is imported only where a firm trains or evaluates
    from silobridge.clients.firm import FirmClient

NODE_DATA_DIR = "data-dir"
NODE_FEDERATION = "federation"
NODE_FIRM_ID = "firm-id"
NODE_BUDGET = "budget-epsilon"
NODE_NOISE_SEED = "noise-seed"
"""Node config keys of a partner's SuperNode (`silobridge join` sets them)."""


def simulated_dropout(scenario: Scenario, firm_id: str, round_number: int, stage: str) -> bool:
    """Whether this firm vanishes at `stage` of secure sum `round_number` (scenario [dropout])."""
    dropout = scenario.dropout
    if dropout.rate <= 0 or dropout.stage != stage:
        return False
    draw = np.random.default_rng(
        [scenario.seed, zlib.crc32(firm_id.encode()), round_number, zlib.crc32(stage.encode())]
    )
    return bool(draw.random() < dropout.rate)


@lru_cache(maxsize=4)
def _chain(scenario: Scenario) -> ChainData:
    """The generated chain, once per process and scenario (hashable: every spec it holds is frozen)."""
    return generate_chain(scenario)


_firms: dict[tuple[int, int, str, int | None], FirmClient] = {}


def simulated_firm(settings: RunSettings, spec: FederationSpec, partition_id: int, *, run_id: int) -> FirmClient:
    """The firm that simulated node `partition_id` plays, built once per process, run and spec."""
    key = (run_id, partition_id, spec.digest(), settings.noise_seed)
    if key not in _firms:
        scenario = settings.scenario
        if not 0 <= partition_id < len(scenario.firms):
            raise ConfigError(
                f"node partition {partition_id} has no firm: the scenario has {len(scenario.firms)} firms, so the "
                f"simulation needs exactly {len(scenario.firms)} SuperNodes",
                source=str(settings.scenario_path),
            )
        firm = scenario.firms[partition_id]
        if isinstance(settings.data, Path):  # a pilot on the firms' own extracts
            data = load_for_spec(settings.data / firm.id, spec, firm_id=firm.id)
        else:
            tables = _chain(scenario).tables[firm.id]
            data = firm_data_from_tables(
                firm.id,
                tables.demand,
                tables.risk,
                spec.data,
                min_periods=spec.min_periods,
                orders=tables.orders,
                calendar=Calendar.of(spec),
            )
        for stale in [k for k in _firms if k[0] != run_id]:  # keep only this run's firms
            del _firms[stale]
        _firms[key] = _client(scenario, spec, data, budget_epsilon=None, noise_seed=settings.noise_seed)
    return _firms[key]


def _client(
    scenario: Scenario,
    spec: FederationSpec,
    data: FirmData,
    *,
    budget_epsilon: float | None,
    noise_seed: int | None = None,
) -> FirmClient:
    """A firm with its declared public profile; its own budget is the stricter of the declared and `budget_epsilon`."""
    from silobridge.clients.firm import FirmClient
    from silobridge.clients.training import resolve_device

    firm = scenario.firm(data.firm_id)
    budgets = [b for b in (firm.budget_epsilon, budget_epsilon) if b is not None]
    return FirmClient(
        data,
        group=scenario.group_of(firm.id),
        spec=spec,
        tier=firm.tier,
        device=str(resolve_device(scenario.training.device)),
        public_weight=firm.size,
        budget_epsilon=min(budgets) if budgets else None,
        noise_seed=noise_seed,
    )


def declared_firm(scenario: Scenario, firm_id: str, *, source: str) -> None:
    """A firm must be one the federation file declares: its tier and public weight come from there."""
    if firm_id not in scenario.firm_ids:
        raise ConfigError(
            f"firm '{firm_id}' is not declared in the federation file (declared: {', '.join(scenario.firm_ids)})",
            source=source,
            field="firms",
        )


def pilot_folders(settings: RunSettings) -> dict[str, Path]:
    """A pilot's folder must hold exactly one sub-folder per declared firm."""
    if not isinstance(settings.data, Path):
        return {}
    root = settings.data
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder", source="command line", field="--data")
    present = {p.name for p in root.iterdir() if p.is_dir()}
    declared = set(settings.scenario.firm_ids)
    if present != declared:
        problems = []
        if declared - present:
            problems.append(f"no folder for declared firms {sorted(declared - present)}")
        if present - declared:
            problems.append(f"folders of undeclared firms {sorted(present - declared)}")
        raise ConfigError(
            f"{root}: {'; '.join(problems)} (one sub-folder per firm of {settings.scenario_path.name})",
            source="command line",
            field="--data",
        )
    return {firm: root / firm for firm in settings.scenario.firm_ids}


def validate_firm_folder(
    folder: Path, scenario: Scenario, spec: FederationSpec, *, firm_id: str | None = None
) -> FirmData:
    """What `silobridge validate` and `join` check before anything is sent: a declared firm, valid files."""
    firm = firm_id or folder.name
    declared_firm(scenario, firm, source="federation file")
    return load_for_spec(folder, spec, firm_id=firm)


def validate_pilot(settings: RunSettings) -> None:
    """Every firm's folder of a pilot, all checked before the simulation starts; every problem reported."""
    problems: list[DataProblem] = []
    failing: list[str] = []
    for firm, folder in pilot_folders(settings).items():
        try:
            validate_firm_folder(folder, settings.scenario, settings.spec, firm_id=firm)
        except DataError as err:
            failing.append(firm)
            problems += [
                DataProblem(f"{firm}/{p.file}" if p.file else firm, p.row, p.column, p.message) for p in err.problems
            ]
    if problems:
        raise DataError(", ".join(failing), problems)


def pilot_risk_splits(settings: RunSettings) -> dict[str, str]:
    """How each pilot firm's risk rows split into training and test (`risk_split_rule`), read from the
    files' headers, so the run's summary can say where a holdout stands in for the federation's test date."""
    if not isinstance(settings.data, Path):
        return {}
    splits = {}
    for firm in settings.scenario.firm_ids:
        path = settings.data / firm / RISK_FILE
        if path.is_file():
            header = pd.read_csv(path, nrows=0, dtype=str, encoding="utf-8-sig").columns
            splits[firm] = risk_split_rule(header, settings.spec.data)
    return splits


PRIVATE_RELEASES = frozenset({TRAIN, TRAIN_BASELINES, EVALUATE, EVALUATE_EFFICIENCY, QUERY_MOMENTS})
"""Messages whose answer is a model update or test statistics: their privacy settings must be the file's."""


def check_contract(spec: FederationSpec, local: FederationSpec, message_type: str, *, firm: str) -> None:
    """A partner obeys only the federation file it holds: a request whose settings differ is refused.

    Every request carries the coordinator's spec; a dishonest coordinator could otherwise ask for plain
    aggregation, a lower SecAgg threshold or weaker DP noise. Analytics steps and protocol stages are
    compared without the training privacy settings (a query's DP noise is the coordinator's to add).
    """
    fields = set(FederationSpec.model_fields)
    if message_type not in PRIVATE_RELEASES:
        fields.discard("privacy")
    differing = sorted(name for name in fields if getattr(spec, name) != getattr(local, name))
    if differing:
        raise ProtocolError(
            f"the coordinator's settings for {', '.join(differing)} differ from this firm's federation file; "
            "refused (both sides must hold the same federation file)",
            firm=firm,
            stage=message_type,
        )


LIGHT_STAGES = frozenset({QUERY_SECAGG_ADVERTISE, QUERY_SECAGG_SHARE, QUERY_SECAGG_UNMASK, QUERY_ANALYTICS})
"""Messages a partner answers without its models: secure-sum key and unmask stages, analytics steps."""


@dataclass(frozen=True)
class FirmFiles:
    """A partner's firm for the stages that neither train nor evaluate: its validated files and the
    federation's spec, without the model code, so a fresh ClientApp process imports no torch or Opacus."""

    data: FirmData
    spec: FederationSpec
    budget_epsilon: float | None = None  # the partner's own budget: an analytics step counts its own spend

    @property
    def firm_id(self) -> str:
        return self.data.firm_id


def node_firm(
    node_config: Mapping[str, Any], spec: FederationSpec, message_type: str = QUERY_MANIFEST
) -> FirmClient | FirmFiles:
    """The firm a partner's SuperNode plays: its own files, under the federation file it holds.

    For the stages in `LIGHT_STAGES` only its files and the spec (`FirmFiles`), else a `FirmClient`.
    """
    missing = [k for k in (NODE_DATA_DIR, NODE_FEDERATION) if not str(node_config.get(k) or "")]
    if missing:
        raise ConfigError(
            f"this SuperNode's node config lacks {missing}: start it with `silobridge join` (or --node-config "
            f'\'{NODE_DATA_DIR}="/path/FIRM" {NODE_FEDERATION}="/path/federation.toml"\')',
            source="node config",
        )
    folder = Path(str(node_config[NODE_DATA_DIR])).expanduser()
    federation = Path(str(node_config[NODE_FEDERATION])).expanduser()
    firm_id = str(node_config.get(NODE_FIRM_ID) or folder.name)
    light = message_type in LIGHT_STAGES
    check_contract(spec, _file_spec(federation, calibrated=not light), message_type, firm=firm_id)
    budget = node_config.get(NODE_BUDGET)
    budget_epsilon = float(budget) if budget not in (None, "") else None
    keys = (NODE_DATA_DIR, NODE_FEDERATION, NODE_FIRM_ID, NODE_BUDGET, NODE_NOISE_SEED)
    key = tuple(str(node_config.get(k, "")) for k in keys)
    key += (spec.digest(), repr(_stamp(federation, folder)))  # a file changed since: built again
    if light:
        declared_firm(_federation_file(federation), firm_id, source=str(federation))
        built = _nodes.get(key)  # the same files under the same spec, already loaded and validated
        data = built.data if built is not None else load_for_spec(folder, spec, firm_id=firm_id)
        return FirmFiles(data, spec, budget_epsilon)
    if key not in _nodes:
        scenario = _federation_file(federation)
        declared_firm(scenario, firm_id, source=str(federation))
        data = load_for_spec(folder, spec, firm_id=firm_id)
        _nodes[key] = _client(
            scenario,
            spec,
            data,
            budget_epsilon=budget_epsilon,
            noise_seed=parse_noise_seed(node_config.get(NODE_NOISE_SEED), source="node config"),
        )
    return _nodes[key]


_nodes: dict[tuple[str, ...], FirmClient] = {}


def _stamp(*paths: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, modification time and size of each file (a folder: of its files). What is cached from files is keyed
    by it: a long-lived process (the warm executor) reads a partner's federation file or data again once changed."""
    stamps = []
    for path in paths:
        for file in sorted(path.iterdir()) if path.is_dir() else [path]:
            try:
                found = file.stat()
            except OSError:  # gone: whoever reads it reports it
                continue
            stamps.append((str(file), found.st_mtime_ns, found.st_size))
    return tuple(stamps)


def _federation_file(path: Path) -> Scenario:
    return _stamped_scenario(path, _stamp(path))


@lru_cache(maxsize=4)
def _stamped_scenario(path: Path, stamp: tuple[tuple[str, int, int], ...]) -> Scenario:
    return load_scenario(path)


def _file_spec(path: Path, *, calibrated: bool = True) -> FederationSpec:
    """The spec the federation file defines, resolved as the coordinator's `silobridge run` resolves it.

    `calibrated=False` leaves DP off: every field but `privacy` is the same, and calibrating the noise
    needs the model's size (torch), which a stage compared without `privacy` does not.
    """
    return _stamped_spec(path, _stamp(path), calibrated)


@lru_cache(maxsize=8)
def _stamped_spec(path: Path, stamp: tuple[tuple[str, int, int], ...], calibrated: bool) -> FederationSpec:
    run_config = {"scenario": str(path.resolve()), "data": "nodes"}
    return settings_from_run_config(run_config if calibrated else {**run_config, "dp": "off"}).spec


def warm_node(node_config: Mapping[str, Any]) -> None:
    """Build in this process what a partner's messages build on first use: the federation file's spec (with
    and without the DP calibration, seconds of accounting), the firm's data and its client. The warm executor
    calls it once before it forks, so every task inherits them instead of rebuilding them per message."""
    federation = Path(str(node_config[NODE_FEDERATION])).expanduser()
    _file_spec(federation, calibrated=False)
    firm = node_firm(node_config, _file_spec(federation, calibrated=True), TRAIN)
    from silobridge.federation.odometer_glue import NODE_STATE_DIR

    if str(node_config.get(NODE_STATE_DIR) or "") and firm.spec.privacy.enabled:
        from silobridge.federation.odometer_charges import linear_release_event

        for model in ("demand", "risk"):  # what a lifetime odometer charges a linear release: one more calibration
            linear_release_event(firm.spec, model)
