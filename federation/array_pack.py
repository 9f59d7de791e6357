"""Named numeric arrays packed into one byte string, and back: a record's arrays as one Flower object.

flwr 1.41 sends every Array of an ArrayRecord as its own objects (the Array and its chunk), each pushed and
pulled by its own request between the ServerApp, the SuperLink and a SuperNode. A model's weights are a dozen
small arrays, so a training message was mostly request overhead on a network. Packed, a record is one Array
whatever the number of arrays it holds. The bytes are NumPy's `.npz` format (a zip of `.npy` members, what
`np.load` reads), written and read with `zipfile` and `numpy.lib.format`: stored, never compressed (a
compressed member is refused, so a small message cannot inflate), and never pickled.
"""

from __future__ import annotations

import io
import zipfile
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np
from numpy.lib import format as npy_format

PACKED_STYPE = "numpy.npz"
"""The packed Array's serialisation type: Flower's own for one array is 'numpy.ndarray'."""
NUMERIC_KINDS = frozenset("biufc")
"""dtype kinds a packed array may hold (bool, ints, floats, complex): never objects, strings or structured."""
MEMBER_SUFFIX = ".npy"


class PackError(ValueError):
    """The bytes are not a packed record (not a stored zip of `.npy` members, a pickled or non-numeric array)."""


def pack_arrays(arrays: Mapping[str, np.ndarray]) -> bytes:
    """`arrays` (name -> array, in order) as `.npz` bytes; non-numeric dtypes are refused."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, value in arrays.items():
            array = np.asarray(value)
            if array.dtype.kind not in NUMERIC_KINDS:
                raise PackError(f"array '{name}' has dtype {array.dtype}, not a numeric one")
            with archive.open(f"{name}{MEMBER_SUFFIX}", "w") as member:
                npy_format.write_array(member, array, allow_pickle=False)
    return buffer.getvalue()


def unpack_arrays(blob: bytes) -> OrderedDict[str, np.ndarray]:
    """The arrays `pack_arrays` packed, in their order (writable); `PackError` if `blob` is not such bytes."""
    arrays: OrderedDict[str, np.ndarray] = OrderedDict()
    try:
        with zipfile.ZipFile(io.BytesIO(blob)) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(MEMBER_SUFFIX):
                    raise PackError(f"member '{info.filename}' is not an .npy array")
                if info.compress_type != zipfile.ZIP_STORED:
                    raise PackError(f"member '{info.filename}' is compressed; packed arrays are stored")
                name = info.filename[: -len(MEMBER_SUFFIX)]
                if name in arrays:
                    raise PackError(f"array '{name}' appears twice")
                with archive.open(info) as member:
                    array = npy_format.read_array(member, allow_pickle=False)
                if array.dtype.kind not in NUMERIC_KINDS:
                    raise PackError(f"array '{name}': dtype {array.dtype} is not allowed")
                arrays[name] = array
    except PackError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise PackError(f"not packed arrays ({len(blob)} bytes): {err}") from None
    return arrays
