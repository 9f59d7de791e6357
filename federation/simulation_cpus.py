"""How many CPUs a simulation may use: its Ray runtime's size and the harness pool's workers.

Why a setting beside the `cpus` argument: a machine shared with other work (two test workers on two cores, an
analyst's other jobs) should be able to cap a run without every caller passing a number.
"""

from __future__ import annotations

import os

from silobridge.errors import ConfigError

CPUS_ENV = "SILOBRIDGE_SIMULATION_CPUS"
"""A whole number of CPUs (1 or more) every simulation on this process uses when its caller names none; unset:
the machine's CPUs."""


def simulation_cpus(cpus: int | None = None) -> int:
    """`cpus` if given, else CPUS_ENV if set, else the machine's CPUs; a bad CPUS_ENV is refused by name."""
    if cpus is not None:
        if cpus < 1:
            raise ConfigError(f"a simulation needs at least 1 CPU, got {cpus}")
        return cpus
    raw = os.environ.get(CPUS_ENV, "").strip()
    if not raw:
        return os.cpu_count() or 1
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{CPUS_ENV}={raw!r} is not a whole number of CPUs") from None
    if value < 1:
        raise ConfigError(f"{CPUS_ENV}={raw} must be at least 1")
    return value
