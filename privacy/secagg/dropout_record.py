"""What one secure-sum round records about its firms: who took part, who dropped at which stage and why,
and what was recovered. The server fills it; run summaries and audits read it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from silobridge.privacy.secagg.stages import Stage


@dataclass(frozen=True)
class DropoutRecord:
    """Who took part in a round, who dropped at which stage and why, and what was recovered."""

    run_id: str
    session: int
    round_number: int | None
    invited: tuple[str, ...]
    roster: tuple[str, ...]  # advertised valid keys
    active: tuple[str, ...]  # asked for a masked input
    contributors: tuple[str, ...]  # inputs in the released sum
    dropped: Mapping[str, Stage]  # firm -> stage at which it vanished or was rejected
    errors: Mapping[str, str]  # firm -> why its message(s) were rejected
    left_out: tuple[str, ...]  # not asked, at the caller's request
    retired: tuple[str, ...]  # not asked: its mask key was reconstructed earlier in the session
    reconstructed_mask_keys: tuple[str, ...]  # dropped before sending input; now retired
    recovered_self_masks: tuple[str, ...]  # sent input, vanished before unmasking
    aborted: str | None

    def to_dict(self) -> dict[str, Any]:
        """Plain types only, for a JSON run summary.

        Field by field rather than `asdict`, which deep-copies and cannot copy the read-only
        mapping proxies that `dropped` and `errors` are.
        """
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["dropped"] = {firm: str(stage) for firm, stage in self.dropped.items()}
        out["errors"] = dict(self.errors)
        return out
