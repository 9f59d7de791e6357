"""Which firm a simulated node plays, and its data: the one place a node meets its data.

In a simulation node `partition-id` i plays the i-th firm of the scenario; its tables come from
the generator (run once per process) and pass the same validation as a partner's CSV files.
"""

from __future__ import annotations

import zlib
from functools import lru_cache

import numpy as np

from clients.data import firm_data_from_tables
from clients.firm import FirmClient
from clients.training import resolve_device
from federation.settings import RunSettings
from scenarios.generator import ChainData, generate_chain
from scenarios.schema import Scenario
from silobridge.config import FederationSpec
from silobridge.errors import ConfigError


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
    return generate_chain(scenario)


_firms: dict[tuple[int, int, str], FirmClient] = {}


def simulated_firm(settings: RunSettings, spec: FederationSpec, partition_id: int, *, run_id: int) -> FirmClient:
    """The firm that simulated node `partition_id` plays, built once per process, run and spec."""
    key = (run_id, partition_id, spec.digest())
    if key not in _firms:
        scenario = settings.scenario
        if not 0 <= partition_id < len(scenario.firms):
            raise ConfigError(
                f"node partition {partition_id} has no firm: the scenario has {len(scenario.firms)} firms, so the "
                f"simulation needs exactly {len(scenario.firms)} SuperNodes",
                source=str(settings.scenario_path),
            )
        firm = scenario.firms[partition_id]
        tables = _chain(scenario).tables[firm.id]
        data = firm_data_from_tables(
            firm.id, tables.demand, tables.risk, spec.data, min_periods=spec.min_periods, orders=tables.orders
        )
        device = str(resolve_device(scenario.training.device))
        for stale in [k for k in _firms if k[0] != run_id]:  # keep only this run's firms
            del _firms[stale]
        _firms[key] = FirmClient(
            data,
            group=scenario.group_of(firm.id),
            spec=spec,
            tier=firm.tier,
            device=device,
            public_weight=firm.size,
            budget_epsilon=firm.budget_epsilon,
        )
    return _firms[key]
