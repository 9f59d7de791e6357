"""What a firm's lifetime odometers say it has spent, per data set, read only after each is verified
(chain, signatures, head): one odometer folder (`join --state`), or a simulation's, one per firm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from silobridge.errors import ConfigError
from silobridge.privacy.odometer import LOG_FILE, Odometer


def open_odometers(state: Path) -> list[Odometer]:
    """Every odometer under `state`, verified (`LedgerTampered` if one was altered)."""
    folders = [state] if (state / LOG_FILE).exists() else sorted(p.parent for p in state.glob(f"*/{LOG_FILE}"))
    if not folders:
        raise ConfigError(f"no odometer here (no {LOG_FILE}, nor one per firm)", source=str(state))
    return [Odometer.open(folder, firm=None) for folder in folders]


def spend_rows(odometers: list[Odometer]) -> list[dict[str, Any]]:
    """One row per firm and data set: releases, runs, epsilon spent, the lifetime budget and what remains."""
    return [
        {
            "firm": odo.firm,
            "dataset": row.dataset,
            "releases": row.releases,
            "runs": list(row.runs),
            "epsilon": row.epsilon,
            "lifetime_epsilon": odo.lifetime.epsilon,
            "delta": odo.lifetime.delta,
            "remaining": max(0.0, odo.lifetime.epsilon - row.epsilon),
        }
        for odo in odometers
        for row in odo.datasets()
    ]
