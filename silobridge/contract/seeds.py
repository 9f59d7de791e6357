"""What a firm's DP noise seed may be: one parser for the run config, a node config and the CLI.

A fixed seed exists for reproducible experiments only (see `clients.dpsgd`); -1 or nothing means
fresh operating-system entropy. Light on imports, so the CLI can use it at start-up.
"""

from __future__ import annotations

from typing import Any

from silobridge.errors import ConfigError

MAX_NOISE_SEED = 2**63 - 1
"""The largest noise seed a firm may fix (torch's generators take 64-bit seeds; Flower's config ints are signed)."""


def parse_noise_seed(value: Any, *, source: str, field: str = "noise-seed") -> int | None:
    """A whole number in 0..MAX_NOISE_SEED, or None for absent, empty or -1 (fresh entropy)."""
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError
        seed = int(value)
    except ValueError:
        raise ConfigError(f"must be a whole number, got {value!r}", source=source, field=field) from None
    if not -1 <= seed <= MAX_NOISE_SEED:
        raise ConfigError(
            f"must lie in 0..{MAX_NOISE_SEED} (-1: fresh entropy), got {seed}", source=source, field=field
        )
    return None if seed == -1 else seed
