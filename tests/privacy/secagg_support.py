"""Deterministic randomness for the secure-aggregation tests (never for production keys)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np

from silobridge.privacy.secagg.keys import Entropy


def seeded_entropy(seed: int | str) -> Entropy:
    """A reproducible byte source, so key material, shares and nonces repeat from run to run."""
    if isinstance(seed, str):
        seed = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big")
    generator = np.random.default_rng(seed)
    return lambda n: generator.bytes(n)


def entropy_per_firm(base: int | str) -> Callable[[str], Entropy]:
    """One independent reproducible source per firm, derived from `base` and the firm id."""
    return lambda firm: seeded_entropy(f"{base}/{firm}")


def firm_ids(n: int) -> list[str]:
    return [f"firm-{i:03d}" for i in range(n)]
