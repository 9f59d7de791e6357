"""Run settings, parsed once at the edge from Flower's run config or from the CLI.

Both entry points (`silobridge simulate` and `flwr run .`) produce the same flat run config; this
module turns it into one frozen model, so the ServerApp and the ClientApp agree on the scenario,
the data source and every override.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from silobridge.contract.arrays import flatten
from silobridge.contract.config import DataSchema, FederationSpec, LinearSpec
from silobridge.contract.seeds import MAX_NOISE_SEED, parse_noise_seed
from silobridge.errors import ConfigError
from silobridge.scenarios.generator import DEMAND_COVARIATES, RISK_FEATURES
from silobridge.scenarios.schema import Scenario, check_generatable, load_scenario, parse_override
from silobridge.server.secure_sum import resolve_aggregation

if TYPE_CHECKING:  # DP calibration (dp-accounting, torch) loads only where DP is on: see federation_spec
    from silobridge.server.privacy import PrivacyPlan

APP_DIR = Path(__file__).resolve().parent.parent
"""The project (or installed app) directory; a relative scenario path starts here, a relative
out-dir at the working directory of the process that runs the ServerApp."""

GENERATED_SCHEMA = DataSchema(
    demand_covariates={name: ("log_ratio" if name == "price" else "raw") for name in DEMAND_COVARIATES},
    risk_features=RISK_FEATURES,
    risk_feature_ranges={
        "lead_time_cv": (0.0, 1.0),
        "financial_stress": (0.0, 1.0),
        "supplier_concentration": (0.0, 1.0),
        "regional_shock": (0.0, 1.0),
        "order_volume_ratio": (0.0, 5.0),
        "congestion_index": (-4.0, 4.0),
        "capacity_utilisation": (0.0, 2.0),
        "quality_incidents": (0.0, 20.0),
        "distance_km": (0.0, 2000.0),
        "expedited": (0.0, 1.0),
    },
)
"""The columns the scenario generator writes: the schema of every simulated federation."""

QUERIES_KEY = "queries"
"""Run config `queries`: "" trains; otherwise the JSON of the analytics queries (and their budget) the ServerApp
runs instead (`federation.query_run.QueryJob`). RunSettings does not hold it: only the ServerApp reads it."""

RESUME_KEY = "resume-dir"
"""Run config `resume-dir`: "" starts a run; otherwise the folder of an interrupted run over the real federation
that the ServerApp continues (`silobridge run --resume`). RunSettings does not hold it: only the ServerApp reads it."""

RUN_CONFIG_KEYS = (
    "scenario",
    "out-dir",
    "num-rounds",
    "seed",
    "set",
    "aggregation",
    "dp",
    "run-id",
    "data",
    "noise-seed",
    "ledger-key",
    "state-dir",
    "lifetime-epsilon",
    QUERIES_KEY,
    RESUME_KEY,
)

SIMULATED_SECONDS_PER_TURN = 30.0
"""A simulation's exchange timeout grows by this much per firm a CPU serves in turn (`exchange_timeout_s`)."""

NODES = "nodes"
"""Run config `data = "nodes"`: a real federation, each SuperNode reading its own firm's files."""


class RunSettings(BaseModel):
    """Everything one run needs to know, resolved and validated."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    scenario_path: Path
    overrides: tuple[str, ...] = ()
    scenario: Scenario
    out_dir: Path
    run_id: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    aggregation: Literal["secure", "plain"] = "secure"
    dp: bool = True
    baseline_max_epochs: int = Field(default=200, ge=1)
    baseline_patience: int = Field(default=20, ge=1)
    round_timeout_s: float = Field(default=600.0, gt=0)
    node_wait_s: float = Field(default=30.0, gt=0)
    data: Path | Literal["generated", "nodes"] = "generated"
    """Where the firms' data comes from: generated from the scenario, a pilot folder holding one
    sub-folder of CSV files per firm, or (a real federation) each SuperNode's own files."""
    noise_seed: int | None = Field(default=None, ge=0, le=MAX_NOISE_SEED)
    """A simulation's fixed seed for every firm's DP-SGD sampling and noise (reproducible experiments);
    None: each firm draws fresh entropy. Never in a real federation: only a firm may seed its own noise."""
    ledger_key: Path | None = None
    """The coordinator's long-term Ed25519 ledger key (PEM file); None: a key made for this run only."""
    state_dir: Path | None = None
    """Simulations: every firm's lifetime privacy odometer lives in `state_dir/<firm>` (privacy.odometer)."""
    lifetime_epsilon: float | None = Field(default=None, gt=0)
    """Sets (or changes) the simulated firms' lifetime budget; None keeps the one their odometers hold."""

    @property
    def simulated(self) -> bool:
        """Whether this process holds every firm's data (simulation or pilot), so the harness can measure."""
        return self.data != NODES

    @property
    def exchange_timeout_s(self) -> float:
        """How long one exchange waits for its replies. A simulation serves its firms' messages a few at a
        time (one per CPU), so an exchange over n firms takes n / CPUs firm-turns: 200 firms' first message
        (each builds its data) outlasted a flat 600 s on a loaded 2-core machine. Real partners answer in
        parallel: `round_timeout_s` as it is."""
        if not self.simulated:
            return self.round_timeout_s
        turns = math.ceil(len(self.scenario.firms) / max(1, os.cpu_count() or 1))
        return self.round_timeout_s + SIMULATED_SECONDS_PER_TURN * turns

    @property
    def spec(self) -> FederationSpec:
        """What every firm must agree on, resolved for this federation (computed once per settings)."""
        return federation_spec(self)

    @property
    def min_firms(self) -> int:
        """Fewest firms a round may aggregate: the scenario's, or half the firms (at least 2)."""
        n = len(self.scenario.firms)
        return min(n, self.scenario.training.min_firms or max(2, math.ceil(n / 2)))

    def privacy_plan(self) -> PrivacyPlan:
        return privacy_plan(self, self.spec)

    def to_run_config(self) -> dict[str, Any]:
        """The flat form Flower carries (and the run directory records)."""
        return {
            "scenario": str(self.scenario_path),
            "out-dir": str(self.out_dir),
            "num-rounds": self.scenario.training.rounds,
            "seed": self.scenario.seed,
            "set": ";".join(self.overrides),
            "aggregation": self.aggregation,
            "dp": "on" if self.dp else "off",
            "run-id": self.run_id,
            "data": "" if self.data == "generated" else str(self.data),
            "noise-seed": -1 if self.noise_seed is None else self.noise_seed,
            "ledger-key": "" if self.ledger_key is None else str(self.ledger_key),
            "state-dir": "" if self.state_dir is None else str(self.state_dir),
            "lifetime-epsilon": self.lifetime_epsilon or 0.0,
        }


def quiet_accountant() -> None:
    """dp-accounting logs a warning for every RDP order it drops as numerically unstable at small
    noise; that is how it is meant to work, and it floods a run's output."""
    logging.getLogger("absl").setLevel(logging.ERROR)


def privacy_plan(settings: RunSettings, spec: FederationSpec) -> PrivacyPlan:
    """The run's releases as the accountant sees them (model size from the federation's architecture)."""
    from silobridge.clients.models import (  # torch: only where DP is calibrated
        MODEL_KINDS,
        build_model,
        state_to_arrays,
    )
    from silobridge.server.efficiency_release import efficiency_event
    from silobridge.server.privacy import PrivacyPlan

    dim = sum(flatten(state_to_arrays(build_model(kind, spec))).size for kind in MODEL_KINDS)
    training = settings.scenario.training
    return PrivacyPlan(
        spec=spec.privacy,
        rounds=training.rounds,
        local_epochs=spec.privacy.local_epochs if spec.privacy.unit == "record" else training.local_epochs,
        num_firms=len(settings.scenario.firms),
        min_firms=settings.min_firms,
        model_dim=dim,
        reserved=(efficiency_event(spec.privacy.unit, spec.efficiency.dp_noise_multiplier),)
        if spec.efficiency.dp
        else (),
    )


@functools.lru_cache(maxsize=16)
def federation_spec(settings: RunSettings) -> FederationSpec:
    """Secure aggregation resolved for the federation's size, DP's noise calibrated to its budget."""
    s = settings.scenario
    privacy = s.privacy.model_copy(update={"enabled": settings.dp})
    if privacy.enabled and privacy.unit == "record" and s.training.strategy == "fedprox":
        raise ConfigError(
            "FedProx's proximal term is not per-example, so record-level DP-SGD cannot clip it; use fedavg",
            field="training.strategy",
        )
    check_public_ranges(s.data or GENERATED_SCHEMA, private=privacy.enabled)
    base = FederationSpec(
        data=s.data or GENERATED_SCHEMA,
        lags=s.training.lags,
        horizon=s.horizon,
        test_start=s.test_start,
        test_periods=s.test_periods,
        hidden=s.training.hidden,
        aggregation=resolve_aggregation(s.aggregation.model_copy(update={"mode": settings.aggregation}), len(s.firms)),
        privacy=privacy,
        efficiency=s.efficiency,
        linear=LinearSpec(model=s.training.model),
    )
    if not privacy.enabled:
        return base
    if privacy.unit == "firm" and privacy.mechanism == "distributed":
        if settings.aggregation != "secure":
            raise ConfigError("distributed DP needs secure aggregation", field="privacy.mechanism")
        privacy = privacy.model_copy(update={"expected_shares": len(s.firms)})
        base = base.model_copy(update={"privacy": privacy})
    from silobridge.server.efficiency_release import check_room
    from silobridge.server.privacy import resolve_privacy

    quiet_accountant()
    if base.efficiency.dp:
        check_room(privacy, base.efficiency)
    resolved = resolve_privacy(privacy_plan(settings, base))
    spec = base.model_copy(update={"privacy": resolved})
    if resolved.unit == "firm" and resolved.mechanism == "distributed":
        modulus = spec.aggregation.modulus_bits or 64
        privacy_plan(settings, spec).skellam().check_modulus(modulus, len(s.firms))
    return spec


def check_public_ranges(data: DataSchema, *, private: bool) -> None:
    """Under DP every risk feature is clipped to a public range, which the federation file must give:
    refused here rather than when the first round asks for the firms' features."""
    missing = [name for name in data.risk_features if name not in data.risk_feature_ranges]
    if private and missing:
        raise ConfigError(
            f"under differential privacy every risk feature needs a public range; none for {missing}. Write each "
            "as name = [low, high] from public knowledge (a range computed from a firm's data leaks it)",
            field="data.risk_feature_ranges",
        )


def _resolve(path: str, base: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else (base / p)


def new_run_id(scenario_name: str, seed: int) -> str:
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{scenario_name}-s{seed}"


def _in_effect(override: str, overrides: tuple[str, ...]) -> bool:
    """Whether `override` is already the last override of its field: the recorded run config then parses to
    itself (a resumed run's configuration hashes as the run's did)."""
    field = override.split("=", 1)[0].strip()
    last = [text for text in overrides if text.split("=", 1)[0].strip() == field][-1:]
    return last == [override]


def settings_from_run_config(
    run_config: Mapping[str, Any], *, base_dir: Path = APP_DIR, resolve_spec: bool = True
) -> RunSettings:
    """Parse Flower's run config (pyproject [tool.flwr.app.config] plus overrides) into RunSettings.

    `resolve_spec=False` leaves the spec unresolved until asked for: a simulated firm's worker takes the spec
    from each message, and resolving it here (under DP the noise calibration, 14-20 s) cost every worker that.
    """
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
    extras = (f"training.rounds={rounds}",) * bool(rounds) + (f"seed={seed}",) * (seed >= 0)
    all_overrides = overrides + tuple(extra for extra in extras if not _in_effect(extra, overrides))
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
    dp = str(run_config.get("dp") or ("on" if scenario.privacy.enabled else "off"))
    if dp not in ("on", "off"):
        raise ConfigError(f"must be 'on' or 'off', got '{dp}'", source="run config", field="dp")
    data_text = str(run_config.get("data") or "")
    data: Path | str = (
        "generated" if not data_text else NODES if data_text == NODES else _resolve(data_text, Path.cwd())
    )
    if data == "generated":
        check_generatable(scenario, source=str(scenario_path))
    out_dir = _resolve(str(run_config.get("out-dir") or "runs"), Path.cwd())
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(
            f"{out_dir} is a file; name a folder for the run directories", source="run config", field="out-dir"
        )
    noise_seed = parse_noise_seed(run_config.get("noise-seed"), source="run config")
    if noise_seed is not None and data == NODES:
        raise ConfigError(
            "the coordinator may not seed the firms' DP noise in a real federation (it could replay and subtract "
            "it); a firm fixes its own with `silobridge join --noise-seed`",
            source="run config",
            field="noise-seed",
        )
    ledger_key = str(run_config.get("ledger-key") or "")
    state_dir = str(run_config.get("state-dir") or "")
    lifetime = float(run_config.get("lifetime-epsilon") or 0.0)
    if state_dir and data == NODES:
        raise ConfigError(
            "in a real federation each firm keeps its own odometer: `silobridge join --state DIR`",
            source="run config",
            field="state-dir",
        )
    if lifetime and not state_dir:
        raise ConfigError("a lifetime budget needs --state DIR", source="run config", field="lifetime-epsilon")
    settings = RunSettings(
        state_dir=_resolve(state_dir, Path.cwd()) if state_dir else None,
        lifetime_epsilon=lifetime or None,
        ledger_key=_resolve(ledger_key, Path.cwd()) if ledger_key else None,
        noise_seed=noise_seed,
        node_wait_s=600.0 if data == NODES else 30.0,  # partners join when they join: wait up to ten minutes
        data=data,  # type: ignore[arg-type]
        scenario_path=scenario_path,
        overrides=all_overrides,
        scenario=scenario,
        out_dir=out_dir,
        run_id=run_id,
        aggregation=aggregation,  # type: ignore[arg-type]
        dp=dp == "on",
    )
    if resolve_spec:
        _ = settings.spec  # resolves secure aggregation for the federation's size: its errors surface here
    return settings
