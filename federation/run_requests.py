"""A run's request as Flower's `run_config` holds it, built from what a user asked for (command-line
options or an embedding program's arguments). Pure: the settings themselves are parsed and checked
from this dict by `settings.settings_from_run_config`, once, wherever the run starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _optional(**values: object) -> dict[str, object]:
    return {key: value for key, value in values.items() if value is not None}


def simulation_config(
    scenario: Path,
    out: Path,
    *,
    seed: int | None = None,
    rounds: int | None = None,
    overrides: Sequence[str] = (),
    run_id: str | None = None,
    aggregation: str | None = None,
    no_dp: bool = False,
    noise_seed: int | None = None,
    data: Path | None = None,
    ledger_key: Path | None = None,
    state: Path | None = None,
    lifetime_epsilon: float | None = None,
) -> dict[str, object]:
    """A simulation's run config: the scenario, where it writes, and every override asked for."""
    config: dict[str, object] = {
        "scenario": str(scenario.resolve()),
        "out-dir": str(out.resolve()),
        "num-rounds": rounds or 0,
        "seed": -1 if seed is None else seed,
        "set": ";".join(overrides),
        "aggregation": aggregation or "",
    }
    if no_dp:
        config["dp"] = "off"
    config.update(_optional(**{"noise-seed": noise_seed}))
    if run_id:
        config["run-id"] = run_id
    config.update(
        _optional(
            **{
                "data": str(data.resolve()) if data is not None else None,
                "ledger-key": str(ledger_key.resolve()) if ledger_key is not None else None,
                "state-dir": str(state.resolve()) if state is not None else None,
                "lifetime-epsilon": lifetime_epsilon,
            }
        )
    )
    return config


def query_config(
    scenario: Path,
    out: Path,
    *,
    overrides: Sequence[str] = (),
    run_id: str | None = None,
    aggregation: str | None = None,
    data: Path | None = None,
    ledger_key: Path | None = None,
    noise_seed: int | None = None,
) -> dict[str, object]:
    """An analytics session's run config (its queries and budget travel beside it)."""
    config: dict[str, object] = {
        "scenario": str(scenario.resolve()),
        "out-dir": str(out.resolve()),
        "set": ";".join(overrides),
        "aggregation": aggregation or "",
    }
    if run_id:
        config["run-id"] = run_id
    if data is not None:
        config["data"] = str(data.resolve())
    if ledger_key is not None:
        config["ledger-key"] = str(ledger_key.resolve())
    if noise_seed is not None:
        config["noise-seed"] = noise_seed
    return config


def network_run_config(
    federation: Path, out: Path, *, run_id: str | None = None, ledger_key: Path | None = None
) -> dict[str, str | int]:
    """A run over the real federation: the federation file as every partner holds it, no overrides."""
    return {
        "scenario": str(federation.resolve()),
        "out-dir": str(out.resolve()),
        "data": "nodes",
        "run-id": run_id or "",
        "ledger-key": str(ledger_key.resolve()) if ledger_key is not None else "",
    }
