"""Named numeric arrays packed into one byte string, and back: a record's arrays as one Flower object.

flwr 1.41 sends every Array of an ArrayRecord as its own objects (the Array and its chunk), each pushed and
pulled by its own request between the ServerApp, the SuperLink and a SuperNode. A model's weights are a dozen
small arrays, so a training message was mostly request overhead on a network. Packed, a record is one Array
whatever the number of arrays it holds. The format is ours and holds no pickle: a 4-byte big-endian header
length, a JSON header (name, dtype, shape of each array, in order), then each array's C-order bytes.
"""

from __future__ import annotations

import json
import struct
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

PACKED_STYPE = "silobridge.packed.v1"
"""The packed Array's serialisation type: Flower's own is 'numpy.ndarray'."""
NUMERIC_KINDS = frozenset("biufc")
"""dtype kinds a packed array may hold (bool, ints, floats, complex): never objects, strings or structured."""
_HEAD = struct.Struct(">I")


class PackError(ValueError):
    """The bytes are not a packed record (truncated, a bad header, a dtype that is not numeric)."""


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """`arrays` (name -> array, in order) as one byte string; non-numeric dtypes are refused."""
    header = []
    parts = []
    for name, value in arrays.items():
        array = np.asarray(value)
        if array.dtype.kind not in NUMERIC_KINDS:
            raise PackError(f"array '{name}' has dtype {array.dtype}, not a numeric one")
        header.append([str(name), array.dtype.str, list(array.shape)])
        parts.append(array.tobytes(order="C"))
    head = json.dumps(header, separators=(",", ":")).encode()
    return b"".join([_HEAD.pack(len(head)), head, *parts])


def unpack_arrays(blob: bytes) -> OrderedDict[str, np.ndarray]:
    """The arrays `pack_arrays` packed, in their order (writable copies); `PackError` if `blob` is not one."""
    if len(blob) < _HEAD.size:
        raise PackError(f"{len(blob)} bytes: shorter than the header length")
    (size,) = _HEAD.unpack_from(blob)
    end = _HEAD.size + size
    if end > len(blob):
        raise PackError(f"header of {size} bytes runs past the {len(blob)} bytes")
    try:
        header = json.loads(blob[_HEAD.size : end])
        if not isinstance(header, list):
            raise TypeError(f"a list of arrays expected, got {type(header).__name__}")
        entries = [(str(name), np.dtype(dtype), tuple(int(n) for n in shape)) for name, dtype, shape in header]
    except (ValueError, TypeError) as err:
        raise PackError(f"malformed header: {err}") from None
    arrays: OrderedDict[str, np.ndarray] = OrderedDict()
    offset = end
    for name, dtype, shape in entries:
        if dtype.kind not in NUMERIC_KINDS or any(n < 0 for n in shape):
            raise PackError(f"array '{name}': dtype {dtype} or shape {shape} is not allowed")
        if name in arrays:
            raise PackError(f"array '{name}' appears twice")
        count = int(np.prod(shape, dtype=np.int64))
        nbytes = count * dtype.itemsize
        if offset + nbytes > len(blob):
            raise PackError(f"array '{name}' ({nbytes} bytes) runs past the {len(blob)} bytes")
        arrays[name] = np.frombuffer(blob, dtype=dtype, count=count, offset=offset).reshape(shape).copy()
        offset += nbytes
    if offset != len(blob):
        raise PackError(f"{len(blob) - offset} bytes left after the last array")
    return arrays
