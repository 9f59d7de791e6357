"""Strict reading and writing of the flat dictionaries that messages travel as.

Flower's ConfigRecord holds only int, float, str, bytes, bool and homogeneous lists of these (no
nesting), so every message, and a firm's stored state (see `state`), flattens to such a dict.
Reading is strict: exactly the expected keys, exact Python types (a bool is not an int), sizes
checked; any deviation is a ProtocolError naming the firm and the stage.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Mapping
from typing import NoReturn, TypeVar

from silobridge.errors import ProtocolError
from silobridge.privacy.secagg.params import PROTOCOL_VERSION

WireScalar = int | float | str | bytes | bool
WireValue = WireScalar | list[int] | list[float] | list[str] | list[bytes] | list[bool]
WireDict = dict[str, WireValue]

MAX_FIRM_ID_CHARS = 200
_HEADER = ("protocol", "message")
_T = TypeVar("_T")


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


class FlatReader:
    """Typed, size-checked reads from one flat dict; the first problem raises ProtocolError(firm, stage).

    Shared by messages (`WireReader`) and a firm's stored state (`privacy.secagg.state`), so both
    refuse the same things: missing or unexpected keys, wrong Python types (a bool is not an int),
    wrong sizes and counts. `label` starts every error message.
    """

    def __init__(self, flat: object, *, label: str, firm: str | None, stage: str):
        self.label = label
        self.firm = firm
        self.stage = stage
        if not isinstance(flat, Mapping):
            self.fail(f"expected a {label} dict, got {type(flat).__name__}")
        self._flat = flat

    def fail(self, problem: str) -> NoReturn:
        raise ProtocolError(f"{self.label}: {problem}", firm=self.firm, stage=self.stage)

    def has(self, key: str) -> bool:
        return key in self._flat

    def check_keys(self, required: Collection[str], optional: Collection[str] = ()) -> None:
        """Every required key present and nothing outside required and optional."""
        present = set(self._flat)
        missing, extra = set(required) - present, present - set(required) - set(optional)
        if missing or extra:
            self.fail(f"fields missing {sorted(missing)}, unexpected {sorted(map(str, extra))}")

    def _typed(self, key: str, kind: type[_T]) -> _T:
        if key not in self._flat:
            self.fail(f"field '{key}' is missing")
        value = self._flat[key]
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

    def _list(self, key: str, kind: type[_T]) -> list[_T]:
        value = self._typed(key, list)
        if any(type(item) is not kind for item in value):
            self.fail(f"field '{key}' must be a list of {kind.__name__}")
        return value

    def integers(self, key: str, *, count: int | None = None) -> tuple[int, ...]:
        items = self._list(key, int)
        if count is not None and len(items) != count:
            self.fail(f"field '{key}' must hold {count} items, got {len(items)}")
        return tuple(items)

    def firm_ids(self, key: str) -> tuple[str, ...]:
        return tuple(check_firm_id(item, reader=self, key=key) for item in self._list(key, str))

    def sorted_firm_ids(self, key: str) -> tuple[str, ...]:
        """Firm ids that must be distinct and in sorted order (the canonical form of a set)."""
        firms = self.firm_ids(key)
        if any(a >= b for a, b in itertools.pairwise(firms)):
            self.fail(f"field '{key}' must list distinct firm ids in sorted order")
        return firms

    def blobs(self, key: str, *, size: int | None = None, count: int | None = None) -> tuple[bytes, ...]:
        items = self._list(key, bytes)
        if count is not None and len(items) != count:
            self.fail(f"field '{key}' must hold {count} items, got {len(items)}")
        if size is not None and any(len(item) != size for item in items):
            self.fail(f"every item of field '{key}' must be {size} bytes")
        return tuple(items)


class WireReader(FlatReader):
    """Reads one message: the header must name the protocol and `message`, the keys be exactly `fields`."""

    def __init__(self, wire: object, *, message: str, fields: tuple[str, ...], firm: str | None, stage: str):
        super().__init__(wire, label=message, firm=firm, stage=stage)
        kind = self._flat.get("message")
        if kind != message:
            self.fail(f"expected a {message} message, got {kind!r} (out of order or misrouted)")
        if self._flat.get("protocol") != PROTOCOL_VERSION:
            self.fail(f"protocol {self._flat.get('protocol')!r} is not {PROTOCOL_VERSION!r}")
        self.check_keys(set(_HEADER) | set(fields))


def check_firm_id(value: str, *, reader: FlatReader, key: str) -> str:
    """A firm id is a non-empty printable string of at most MAX_FIRM_ID_CHARS characters."""
    if not value or len(value) > MAX_FIRM_ID_CHARS or not value.isprintable():
        reader.fail(f"field '{key}' holds an invalid firm id {value[:40]!r}")
    return value
