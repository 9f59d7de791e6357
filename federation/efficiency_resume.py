"""Checkpoint of the DP efficiency release, the run's last: a resumed run replays it, never redoes it.

The release is committed by its ledger entry as a round is (`federation.resume`): a pending checkpoint holding
the noised (before, after) sums, the firms they hold and the release, then the entry, then the checkpoint. A
run resumed after the entry (or after the pending checkpoint, whose entry the resume then writes) takes the
released sums from the checkpoint instead of asking the firms again, so the release is charged once and the
report shows the very figures that were charged; one killed while the firms' sum was in flight left nothing
and is redone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from silobridge.federation.checkpoint import Checkpoint
from silobridge.federation.crash_points import crash_point
from silobridge.federation.resume import Checkpoints
from silobridge.privacy.ledger import PrivacyRun, Release
from silobridge.server.efficiency_release import RELEASE_ID


def replayed_efficiency(
    checkpoints: Checkpoints | None,
) -> tuple[dict[str, np.ndarray], dict[str, list[str]]] | None:
    """The released sums and the firms they hold, if the run being resumed completed the release; else None."""
    start = checkpoints.start if checkpoints is not None else None
    if start is None or start.efficiency is None:
        return None
    firms = {when: list(names) for when, names in start.efficiency["firms"].items()}
    return {when: value.copy() for when, value in start.efficiency_released.items()}, firms


def commit_efficiency(
    checkpoints: Checkpoints | None,
    ledger: PrivacyRun,
    release: Release,
    released: dict[str, np.ndarray],
    firms: dict[str, list[str]],
    dropped: list[dict[str, Any]],
) -> None:
    """Charge the release once: without checkpoints, its entry; with them, pending checkpoint, entry, checkpoint."""
    if checkpoints is None:
        ledger.record(release)
        return
    checkpoints.pending(_checkpoint(checkpoints, ledger, released, firms, dropped), [release])
    crash_point(f"pending:{RELEASE_ID}")
    ledger.record(release)
    crash_point(f"entry:{RELEASE_ID}")
    checkpoints.commit(_checkpoint(checkpoints, ledger, released, firms, dropped))


def _checkpoint(
    checkpoints: Checkpoints,
    ledger: PrivacyRun,
    released: dict[str, np.ndarray],
    firms: dict[str, list[str]],
    dropped: list[dict[str, Any]],
) -> Checkpoint:
    """The latest checkpoint (rounds and linear releases) with the efficiency release."""
    return checkpoints.latest_with(
        ledger,
        dropped,
        efficiency={"firms": {when: list(names) for when, names in firms.items()}},
        efficiency_released={when: np.array(value, copy=True) for when, value in released.items()},
    )
