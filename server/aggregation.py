"""Summing what firms send: the one place a secure sum later replaces.

The server never needs a firm's vector for anything but a sum over firms. `PlainSum` validates each
contribution (shape, finiteness) and adds them; a contribution that fails is named and left out,
so one broken firm cannot poison the aggregate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from silobridge.errors import ProtocolError


@dataclass
class SumResult:
    """The sum over the firms whose contributions were valid, and who those firms were."""

    total: np.ndarray
    contributors: list[str]
    rejected: dict[str, str] = field(default_factory=dict)


def check_contribution(firm: str, vector: np.ndarray, length: int, *, stage: str) -> np.ndarray:
    """A contribution must be a finite 1-D float vector of the agreed length."""
    arr = np.asarray(vector)
    if arr.ndim != 1 or arr.shape[0] != length:
        raise ProtocolError(f"expected a vector of {length} values, got shape {arr.shape}", firm=firm, stage=stage)
    if not np.issubdtype(arr.dtype, np.number):
        raise ProtocolError(f"expected numbers, got dtype {arr.dtype}", firm=firm, stage=stage)
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ProtocolError(f"{bad} of {length} values are NaN or infinite", firm=firm, stage=stage)
    return arr


class PlainSum:
    """Sums validated contributions in the clear (the comparison path; secure aggregation is the default later)."""

    name = "plain"

    def sum(self, contributions: Mapping[str, np.ndarray], *, length: int, stage: str) -> SumResult:
        total = np.zeros(length, dtype=np.float64)
        contributors: list[str] = []
        rejected: dict[str, str] = {}
        for firm, vector in sorted(contributions.items()):
            try:
                total += check_contribution(firm, vector, length, stage=stage)
            except ProtocolError as err:
                rejected[firm] = str(err)
                continue
            contributors.append(firm)
        return SumResult(total, contributors, rejected)
