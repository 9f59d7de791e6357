"""Named weight arrays <-> one flat vector: what aggregation, masking and noise operate on."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import numpy as np


def flatten(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays.values()])


def unflatten(vector: np.ndarray, like: Mapping[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
    """Inverse of `flatten` for the layout of `like`."""
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    offset = 0
    for name, template in like.items():
        size = int(np.prod(template.shape))
        out[name] = np.asarray(vector[offset : offset + size], dtype=np.float32).reshape(template.shape)
        offset += size
    if offset != vector.size:
        raise ValueError(f"vector has {vector.size} values, the model {offset}")
    return out
