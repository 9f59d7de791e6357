"""Run settings, parsed once at the edge from Flower's run config or from the CLI.

Both entry points (`silobridge simulate` and `flwr run .`) produce the same flat run config; this
module turns it into one frozen model, so the ServerApp and the ClientApp agree on the scenario,
the data source and every override.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from scenarios.generator import DEMAND_COVARIATES, RISK_FEATURES
from scenarios.schema import Scenario, load_scenario, parse_override
from server.secure_sum import resolve_aggregation
from silobridge.config import DataSchema, FederationSpec
from silobridge.errors import ConfigError

APP_DIR = Path(__file__).resolve().parent.parent
"""The project (or installed app) directory; a relative scenario path starts here, a relative
out-dir at the working directory of the process that runs the ServerApp."""

GENERATED_SCHEMA = DataSchema(
    demand_covariates={name: ("log_ratio" if name == "price" else "raw") for name in DEMAND_COVARIATES},
    risk_features=RISK_FEATURES,
)
"""The columns the scenario generator writes: the schema of every simulated federation."""

RUN_CONFIG_KEYS = ("scenario", "out-dir", "num-rounds", "seed", "set", "aggregation", "run-id")


class RunSettings(BaseModel):
    """Everything one run needs to know, resolved and validated."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    scenario_path: Path
    overrides: tuple[str, ...] = ()
    scenario: Scenario
    out_dir: Path
    run_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    aggregation: Literal["secure", "plain"] = "secure"
    baseline_max_epochs: int = Field(default=200, ge=1)
    baseline_patience: int = Field(default=20, ge=1)
    round_timeout_s: float = Field(default=600.0, gt=0)
    node_wait_s: float = Field(default=30.0, gt=0)

    @property
    def spec(self) -> FederationSpec:
        """What every firm must agree on, with secure aggregation resolved for this federation's size."""
        s = self.scenario
        aggregation = s.aggregation.model_copy(update={"mode": self.aggregation})
        return FederationSpec(
            data=GENERATED_SCHEMA,
            lags=s.training.lags,
            horizon=s.horizon,
            test_start=s.test_start,
            test_periods=s.test_periods,
            hidden=s.training.hidden,
            aggregation=resolve_aggregation(aggregation, len(s.firms)),
        )

    def to_run_config(self) -> dict[str, Any]:
        """The flat form Flower carries (and the run directory records)."""
        return {
            "scenario": str(self.scenario_path),
            "out-dir": str(self.out_dir),
            "num-rounds": self.scenario.training.rounds,
            "seed": self.scenario.seed,
            "set": ";".join(self.overrides),
            "aggregation": self.aggregation,
            "run-id": self.run_id,
        }


def _resolve(path: str, base: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p)


def new_run_id(scenario_name: str, seed: int) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{scenario_name}-s{seed}"


def settings_from_run_config(run_config: Mapping[str, Any], *, base_dir: Path = APP_DIR) -> RunSettings:
    """Parse Flower's run config (pyproject [tool.flwr.app.config] plus overrides) into RunSettings."""
    unknown = sorted(set(run_config) - set(RUN_CONFIG_KEYS))
    if unknown:
        raise ConfigError(
            f"unknown run-config keys {unknown}; known: {', '.join(RUN_CONFIG_KEYS)}", source="run config"
        )
    scenario_path = _resolve(str(run_config.get("scenario") or "scenarios/default.toml"), base_dir)
    overrides = tuple(part.strip() for part in str(run_config.get("set") or "").split(";") if part.strip())
    parsed = [parse_override(text) for text in overrides]
    rounds = int(run_config.get("num-rounds") or 0)
    if rounds < 0:
        raise ConfigError(
            f"must be >= 0 (0 keeps the scenario's), got {rounds}", source="run config", field="num-rounds"
        )
    if rounds:
        parsed.append(("training.rounds", rounds))
    seed = int(run_config.get("seed", -1))
    if seed < -1:
        raise ConfigError(f"must be >= 0 (-1 keeps the scenario's), got {seed}", source="run config", field="seed")
    if seed >= 0:
        parsed.append(("seed", seed))
    scenario = load_scenario(scenario_path, parsed)
    all_overrides = overrides + (f"training.rounds={rounds}",) * bool(rounds) + (f"seed={seed}",) * (seed >= 0)
    run_id = str(run_config.get("run-id") or new_run_id(scenario.name, scenario.seed))
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", run_id):
        raise ConfigError(
            f"'{run_id}' may hold only letters, digits, '.', '_' and '-'", source="run config", field="run-id"
        )
    aggregation = str(run_config.get("aggregation") or scenario.aggregation.mode)
    if aggregation not in ("secure", "plain"):
        raise ConfigError(
            f"unknown aggregation '{aggregation}' (known: secure, plain)", source="run config", field="aggregation"
        )
    settings = RunSettings(
        scenario_path=scenario_path,
        overrides=all_overrides,
        scenario=scenario,
        out_dir=_resolve(str(run_config.get("out-dir") or "runs"), Path.cwd()),
        run_id=run_id,
        aggregation=aggregation,  # type: ignore[arg-type]
    )
    _ = settings.spec  # resolves secure aggregation for the federation's size: its errors surface here
    return settings
