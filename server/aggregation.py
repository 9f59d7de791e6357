"""Summing what firms send in the clear: the comparison path to secure aggregation.

Each firm sends named segments; a contribution is checked against the agreed layout (known
segments, right lengths, finite values) and one that fails is named and left out, so one broken
firm cannot poison the aggregate. A segment a firm does not send counts as zeros.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from silobridge.errors import ProtocolError
from silobridge.privacy.secagg.layout import VectorLayout


@dataclass
class SumResult:
    """The sum per segment over the firms whose contributions were valid, and who those were."""

    segments: dict[str, np.ndarray]
    contributors: list[str]
    rejected: dict[str, str] = field(default_factory=dict)


def check_contribution(
    firm: str, segments: Mapping[str, np.ndarray], layout: VectorLayout, *, stage: str
) -> dict[str, np.ndarray]:
    """Known segments of the agreed length holding finite numbers; missing segments become zeros."""
    lengths = {s.name: s.length for s in layout.segments}
    unknown = sorted(set(segments) - set(lengths))
    if unknown:
        raise ProtocolError(f"unknown segments {unknown}", firm=firm, stage=stage)
    out = {}
    for name, length in lengths.items():
        if name not in segments:
            out[name] = np.zeros(length)
            continue
        arr = np.asarray(segments[name])
        if arr.ndim != 1 or arr.shape[0] != length:
            raise ProtocolError(
                f"segment '{name}': expected {length} values, got shape {arr.shape}", firm=firm, stage=stage
            )
        if not np.issubdtype(arr.dtype, np.number):
            raise ProtocolError(f"segment '{name}': expected numbers, got dtype {arr.dtype}", firm=firm, stage=stage)
        arr = arr.astype(np.float64)
        if not np.all(np.isfinite(arr)):
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise ProtocolError(
                f"segment '{name}': {bad} of {length} values are NaN or infinite", firm=firm, stage=stage
            )
        out[name] = arr
    return out


class PlainSum:
    """Adds validated contributions segment by segment."""

    def sum(
        self, contributions: Mapping[str, Mapping[str, np.ndarray]], layout: VectorLayout, *, stage: str
    ) -> SumResult:
        totals = {s.name: np.zeros(s.length) for s in layout.segments}
        contributors: list[str] = []
        rejected: dict[str, str] = {}
        for firm, segments in sorted(contributions.items()):
            try:
                checked = check_contribution(firm, segments, layout, stage=stage)
            except ProtocolError as err:
                rejected[firm] = str(err)
                continue
            for name, value in checked.items():
                totals[name] += value
            contributors.append(firm)
        return SumResult(totals, contributors, rejected)
