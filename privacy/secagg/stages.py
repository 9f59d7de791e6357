"""The four stages of one secure-aggregation round, named once so errors and records agree."""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Protocol stages in the order they run (Bonawitz et al. 2017, rounds 0-3).

    ADVERTISE_KEYS and SHARE_KEYS run once per key session; MASKED_INPUT and UNMASK once per round.
    """

    ADVERTISE_KEYS = "advertise_keys"
    SHARE_KEYS = "share_keys"
    MASKED_INPUT = "masked_input"
    UNMASK = "unmask"


SESSION_STAGES = (Stage.ADVERTISE_KEYS, Stage.SHARE_KEYS)
ROUND_STAGES = (Stage.MASKED_INPUT, Stage.UNMASK)
