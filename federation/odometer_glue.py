"""Which lifetime odometer a firm's node keeps, if any: a partner's `join --state`, or a simulation's `--state`.

The node opens (and so re-verifies) it for every request that may release, so an odometer altered
between two rounds stops the node at the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from silobridge.federation.settings import RunSettings
from silobridge.privacy.dp import Budget
from silobridge.privacy.odometer import Odometer

NODE_STATE_DIR = "state-dir"
NODE_LIFETIME_EPSILON = "lifetime-epsilon"
NODE_LIFETIME_DELTA = "lifetime-delta"
LIFETIME_DELTA = 1e-5  # the delta lifetime epsilon is stated at, unless a partner chooses another


def node_odometer(firm: str, settings: RunSettings | None, node_config: Mapping[str, Any]) -> Odometer | None:
    """The firm's odometer: `settings.state_dir/<firm>` in a simulation, the node config's state-dir otherwise."""
    if settings is not None:
        if settings.state_dir is None:
            return None
        folder: Path = settings.state_dir / firm
        epsilon = settings.lifetime_epsilon
        delta = LIFETIME_DELTA
    else:
        text = str(node_config.get(NODE_STATE_DIR) or "")
        if not text:
            return None
        folder = Path(text).expanduser()
        epsilon = float(node_config.get(NODE_LIFETIME_EPSILON) or 0.0) or None
        delta = float(node_config.get(NODE_LIFETIME_DELTA) or LIFETIME_DELTA)
    lifetime = Budget(epsilon, delta) if epsilon is not None else None
    return Odometer.open(folder, firm=firm, lifetime=lifetime)
