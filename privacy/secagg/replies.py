"""What the server takes as one exchange's replies, and what it reads of a firm's message type.

A batch is keyed by the firm id the transport authenticated (a mapping or (firm, reply) pairs); each
reply is a message object or its wire dict.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, Protocol, Self, TypeVar

from silobridge.privacy.secagg.stages import Stage

Reply = Any  # a message object or its wire dict
Replies = Mapping[str, Reply] | Iterable[tuple[str, Reply]]


class FirmMessage(Protocol):
    """What `SecAggServer._parse` reads of a firm's message type: its name, stage, sender and wire form."""

    MESSAGE: ClassVar[str]
    STAGE: ClassVar[Stage]

    @property
    def sender(self) -> str: ...

    @classmethod
    def from_wire(cls, wire: Mapping[str, object], *, expected_sender: str | None) -> Self: ...


FirmMessageT = TypeVar("FirmMessageT", bound=FirmMessage)

__all__ = ["FirmMessage", "FirmMessageT", "Replies", "Reply"]
