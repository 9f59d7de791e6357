"""Strict reading and writing of the flat dictionaries that messages travel as.

Flower's ConfigRecord holds only int, float, str, bytes, bool and homogeneous lists of these (no
nesting), so every message flattens to such a dict. Reading is strict: exactly the expected keys,
exact Python types (a bool is not an int), sizes checked; any deviation is a ProtocolError naming
the firm and the stage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NoReturn

from privacy.secagg.params import PROTOCOL_VERSION
from silobridge.errors import ProtocolError

WireScalar = int | float | str | bytes | bool
WireValue = WireScalar | list[int] | list[float] | list[str] | list[bytes] | list[bool]
WireDict = dict[str, WireValue]

MAX_FIRM_ID_CHARS = 200
_HEADER = ("protocol", "message")


def header(message: str) -> WireDict:
    """The two keys every message starts with: protocol version and message kind."""
    return {"protocol": PROTOCOL_VERSION, "message": message}


def wire_size(wire: Mapping[str, WireValue]) -> int:
    """Payload bytes of a wire dict: keys and values, 8 per number, 1 per bool.

    Transport framing (protobuf, gRPC, TLS) comes on top; this is what the protocol itself costs.
    """

    def size(value: WireValue) -> int:
        if isinstance(value, bool):
            return 1
        if isinstance(value, (int, float)):
            return 8
        if isinstance(value, str):
            return len(value.encode("utf-8"))
        if isinstance(value, bytes):
            return len(value)
        return sum(size(item) for item in value)

    return sum(len(key.encode("utf-8")) + size(value) for key, value in wire.items())


class WireReader:
    """Reads one message's fields, raising ProtocolError(firm, stage) on the first problem."""

    def __init__(self, wire: object, *, message: str, fields: tuple[str, ...], firm: str | None, stage: str):
        self.message = message
        self.firm = firm
        self.stage = stage
        if not isinstance(wire, Mapping):
            self.fail(f"expected a {message} dict, got {type(wire).__name__}")
        self._wire = wire
        kind = wire.get("message")
        if kind != message:
            self.fail(f"expected a {message} message, got {kind!r} (out of order or misrouted)")
        if wire.get("protocol") != PROTOCOL_VERSION:
            self.fail(f"protocol {wire.get('protocol')!r} is not {PROTOCOL_VERSION!r}")
        expected = set(_HEADER) | set(fields)
        missing, extra = expected - set(wire), set(wire) - expected
        if missing or extra:
            self.fail(f"fields missing {sorted(missing)}, unexpected {sorted(map(str, extra))}")

    def fail(self, problem: str) -> NoReturn:
        raise ProtocolError(f"{self.message}: {problem}", firm=self.firm, stage=self.stage)

    def _typed(self, key: str, kind: type) -> object:
        value = self._wire[key]
        if type(value) is not kind:
            self.fail(f"field '{key}' must be {kind.__name__}, got {type(value).__name__}")
        return value

    def integer(self, key: str, *, minimum: int = 0) -> int:
        value = self._typed(key, int)
        if value < minimum:
            self.fail(f"field '{key}' must be >= {minimum}, got {value}")
        return value

    def text(self, key: str) -> str:
        return self._typed(key, str)

    def firm_id(self, key: str) -> str:
        return check_firm_id(self.text(key), reader=self, key=key)

    def blob(self, key: str, *, size: int | None = None) -> bytes:
        value = self._typed(key, bytes)
        if size is not None and len(value) != size:
            self.fail(f"field '{key}' must be {size} bytes, got {len(value)}")
        return value

    def _list(self, key: str, kind: type) -> list:
        value = self._wire[key]
        if type(value) is not list or any(type(item) is not kind for item in value):
            self.fail(f"field '{key}' must be a list of {kind.__name__}")
        return value

    def firm_ids(self, key: str) -> tuple[str, ...]:
        return tuple(check_firm_id(item, reader=self, key=key) for item in self._list(key, str))

    def blobs(self, key: str, *, size: int | None = None, count: int | None = None) -> tuple[bytes, ...]:
        items = self._list(key, bytes)
        if count is not None and len(items) != count:
            self.fail(f"field '{key}' must hold {count} items, got {len(items)}")
        if size is not None and any(len(item) != size for item in items):
            self.fail(f"every item of field '{key}' must be {size} bytes")
        return tuple(items)


def check_firm_id(value: str, *, reader: WireReader, key: str) -> str:
    """A firm id is a non-empty printable string of at most MAX_FIRM_ID_CHARS characters."""
    if not value or len(value) > MAX_FIRM_ID_CHARS or not value.isprintable():
        reader.fail(f"field '{key}' holds an invalid firm id {value[:40]!r}")
    return value
