"""Checkpoints of the linear family's releases: a resumed run replays each completed one, never redoes it.

The linear family (the default under DP) releases a few noised sums: the demand statistics, then one
sum per Newton step of the risk model. After each, the run's checkpoint gains the released vector, the
release's history record and the state of the coordinator's noise generator; under DP the ledger commits
the release as it commits a FedAvg round (`federation.resume`): a pending checkpoint before the entry, the
checkpoint after it. A resumed run takes a completed release's vector from the checkpoint instead of
asking the firms again (it is neither summed nor charged twice), and continues the noise generator from
its saved state, so that with `--noise-seed` its models equal an uninterrupted run's to the last bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from silobridge.clients.linear import DESIGN
from silobridge.errors import ConfigError, FederationError
from silobridge.federation.checkpoint import CHECKPOINT_FILE, Checkpoint
from silobridge.federation.crash_points import crash_point
from silobridge.federation.resume import Checkpoints
from silobridge.privacy.ledger import PrivacyRun, Release


class LinearProgress:
    """One run's linear-family releases: those a resumed run replays, and the checkpoint after each new one."""

    def __init__(self, checkpoints: Checkpoints | None, rng: np.random.Generator):
        self.checkpoints = checkpoints
        self.rng = rng
        self.released: dict[str, np.ndarray] = {}
        self.history: list[dict[str, Any]] = []
        start = checkpoints.start if checkpoints is not None else None
        if checkpoints is not None and start is not None and start.linear is not None:
            recorded = start.linear.get("design")
            if recorded != DESIGN:
                raise ConfigError(
                    f"the checkpoint's linear releases were made by another design of the linear family (recorded "
                    f"{recorded or 'none: a build before designs were recorded'}, this build {DESIGN}): replaying "
                    "them would mix two designs in one model; start the run afresh",
                    source=str(checkpoints.rundir.partial / CHECKPOINT_FILE),
                )
            self.released = dict(start.released)
            self.history = [dict(record) for record in start.linear["history"]]
            if len(self.history) != len(self.released):
                raise FederationError("the checkpoint's linear releases and their records do not match")
            # replayed releases draw no noise: the generator continues where the last completed one left it
            rng.bit_generator.state = start.linear["rng"]
            # metrics.jsonl as of the checkpoint's rounds: the replayed releases' records follow as they replay
            checkpoints.rundir.rewrite_metrics(list(start.history))

    def replay(self, release_id: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        """A release the checkpoint holds: its released vector and history record; None if it is new."""
        if release_id not in self.released:
            return None
        index = list(self.released).index(release_id)
        return self.released[release_id], dict(self.history[index])

    def complete(
        self,
        release_id: str,
        released: np.ndarray,
        record: dict[str, Any],
        ledger: PrivacyRun | None,
        release: Release | None,
        dropped: list[dict[str, Any]],
    ) -> None:
        """A new release is out: checkpoint it (under DP around its ledger entry) and charge it once."""
        self.released[release_id] = np.array(released, copy=True)
        self.history.append(record)
        checkpoints = self.checkpoints
        if release is not None and ledger is None:
            raise FederationError("no privacy ledger in this run")
        if checkpoints is None:
            if release is not None and ledger is not None:
                ledger.record(release)
                record["epsilon"] = ledger.overall_epsilon
            return
        if release is not None and ledger is not None:
            record["epsilon"] = None  # the overall spend once the entry is written
            checkpoints.pending(self._checkpoint(checkpoints, ledger, dropped), [release])
            crash_point(f"pending:{release_id}")
            ledger.record(release)
            crash_point(f"entry:{release_id}")
            record["epsilon"] = ledger.overall_epsilon
        checkpoints.commit(self._checkpoint(checkpoints, ledger, dropped))

    def _checkpoint(
        self, checkpoints: Checkpoints, ledger: PrivacyRun | None, dropped: list[dict[str, Any]]
    ) -> Checkpoint:
        """The latest checkpoint (the FedAvg rounds', if any) with the linear releases so far."""
        return checkpoints.latest_with(
            ledger,
            dropped,
            linear={
                "design": DESIGN,
                "history": [dict(record) for record in self.history],
                "rng": self.rng.bit_generator.state,
            },
            released=dict(self.released),
        )
