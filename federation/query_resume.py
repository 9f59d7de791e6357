"""Checkpoints of a query session's steps: a resumed session replays each completed step, never redoes it.

After every step the session's checkpoint gains the step's released (noised) vector, its report and the
state of the coordinator's noise generator. Under DP the ledger commits a step as it commits a training
round (`federation.resume`): a pending checkpoint holding the step and its release before the ledger
entry, the checkpoint proper after it. On resume:

- a completed step is replayed from the checkpoint: no firm is asked, nothing is charged again, and the
  query's next steps are planned from the same released values;
- a step whose ledger entry was written but whose checkpoint was not (a crash between the two) is
  finished from its pending checkpoint: the ledger already charged it, and the session continues from
  exactly the vector it charged;
- a step in flight whose release never reached the ledger is redone: the firms are asked again and its
  release is charged once, when it completes. The noise generator continues from its state after the
  last completed step, so with `--noise-seed` the redone step draws the noise the uninterrupted session
  drew, and the final answers and spend equal that session's exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from silobridge.errors import FederationError
from silobridge.federation.checkpoint import Checkpoint
from silobridge.federation.crash_points import crash_point
from silobridge.federation.resume import Checkpoints
from silobridge.privacy.ledger import PrivacyRun, Release
from silobridge.server.query_plans.engine import ReplayedStep, StepReport


class QueryProgress:
    """One session's completed steps (the engine's `StepLog`): those a resumed session replays, and the
    checkpoint after each new one. Build it after the ledger is reopened and reconciled, so that a pending
    step the ledger charged counts as completed."""

    def __init__(
        self,
        checkpoints: Checkpoints,
        rng: np.random.Generator | None,
        ledger: PrivacyRun | None,
        dropped: list[dict[str, Any]],
    ):
        self.checkpoints = checkpoints
        self.rng = rng
        self.ledger = ledger
        self.dropped = dropped  # the federation's dropout log, carried across a resume
        self.released: dict[str, np.ndarray] = {}
        self.reports: dict[str, dict[str, Any]] = {}
        start = checkpoints.start
        if start is None:
            return
        if start.queries is None:
            raise FederationError("the checkpoint holds no query steps: it is not a query session's")
        reports = start.queries["steps"]
        if len(reports) != len(start.released):
            raise FederationError("the checkpoint's released steps and their reports do not match")
        self.released = dict(start.released)
        self.reports = {release_id: dict(report) for release_id, report in zip(start.released, reports, strict=True)}
        if rng is not None and start.queries.get("rng") is not None:
            rng.bit_generator.state = start.queries["rng"]  # replayed steps draw no noise
        dropped[:0] = list(start.dropped)

    @property
    def replayable(self) -> int:
        """How many steps a resumed session replays."""
        return len(self.released)

    def replay(self, release_id: str) -> ReplayedStep | None:
        if release_id not in self.released:
            return None
        return ReplayedStep(self.released[release_id], StepReport(**self.reports[release_id]))

    def started(self, prefix: str) -> bool:
        return any(release_id.startswith(f"{prefix}/") for release_id in self.released)

    def complete(
        self, release_id: str, released: np.ndarray, report: StepReport, release: Release | None
    ) -> float | None:
        """A new step is out: checkpoint it (under DP around its ledger entry, see the module's docstring)."""
        self.released[release_id] = np.array(released, dtype=np.float64, copy=True)
        self.reports[release_id] = {**vars(report), "epsilon_after": None}
        if release is None:
            self.checkpoints.commit(self._checkpoint())
            return None
        if self.ledger is None:
            raise FederationError("no privacy ledger in this session")
        self.checkpoints.pending(self._checkpoint(), [release])
        crash_point(f"pending:{release_id}")
        epsilon_after = float(self.ledger.record(release)["overall"])
        crash_point(f"entry:{release_id}")
        self.reports[release_id]["epsilon_after"] = epsilon_after
        self.checkpoints.commit(self._checkpoint())
        return epsilon_after

    def _checkpoint(self) -> Checkpoint:
        entries, last_hash = self.ledger.pointer if self.ledger is not None else (None, None)
        return Checkpoint(
            round=0,
            config_sha256=self.checkpoints.config_sha256,
            weights={},
            dropped=list(self.dropped),
            ledger_entries=entries,
            ledger_hash=last_hash,
            queries={
                "steps": [dict(self.reports[release_id]) for release_id in self.released],
                "rng": self.rng.bit_generator.state if self.rng is not None else None,
            },
            released=dict(self.released),
        )
