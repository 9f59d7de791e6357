"""Server half of federated anomaly detection: agree leaf masses, then a score cut-off, then count.

Releases: (1) the shared forest's leaf masses, summed over firms; (2) unless a fixed
`score_threshold` is given, a histogram of the records' isolation scores, from which the cut-off
is the lowest bin edge above which at most `contamination` of the records lie; (3) per firm, only
how many of its records score at or above the cut-off, and how many it scored, summed securely.
No record, score or per-firm figure leaves a firm.

Record level: the record is one row of the risk table. It lies in one leaf of each tree (sqrt(trees)
in L2), one histogram bin, and adds at most 1 to each of the two counts; adding it may push the
firm's oldest row out of its `max_records` cap, so every bound is doubled (`CAP_DISPLACEMENT`).
Scores use the released (noisy) masses only, so later steps are functions of each record alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from silobridge.contract.config import DataSchema
from silobridge.contract.iterative_params import AnomalyParams
from silobridge.contract.query_protocol import FIRM_NEIGHBOURS, QueryStep, Unit
from silobridge.errors import ProtocolError
from silobridge.server.query_plans._resolve import risk_query_params

NAME = "anomaly_detection"
CAP_DISPLACEMENT = 2.0
"""A row added to a firm over its cap pushes another out: a release moves by two rows' terms at most."""
NEIGHBOURS = "add or remove one row of the risk table (features clipped to the public ranges)"


def cutoff_from_histogram(counts: np.ndarray, contamination: float) -> float:
    """The lowest bin edge e such that the (noisy) count of scores >= e is at most contamination x total.

    Noisy counts are summed as released, not clamped at 0 first: clamping would bias every tail sum
    upwards (by about 0.4 sigma per empty bin) and push the cut-off up."""
    mass = np.asarray(counts, dtype=np.float64)
    bins = mass.size
    target = contamination * max(float(mass.sum()), 0.0)
    above = 0.0
    for b in range(bins - 1, -1, -1):
        above += mass[b]
        if above > target:
            return (b + 1) / bins
    return 0.0


class AnomalyPlan:
    """Masses, then (optionally) the score histogram, then the flagged counts."""

    name = NAME

    def __init__(self, params: AnomalyParams, *, noise_multiplier: float = 0.0, unit: Unit = "record"):
        self.params = params
        self.noise_multiplier = noise_multiplier
        self.unit = unit
        self.neighbours = FIRM_NEIGHBOURS if unit == "firm" else NEIGHBOURS
        self.phase = "mass"
        self.step = 0
        self.masses: np.ndarray | None = None
        self.cutoff = params.score_threshold
        self.flagged = 0.0
        self.records = 0.0

    @property
    def planned_steps(self) -> int:
        return 2 if self.params.score_threshold is not None else 3

    def _build(self, phase: str) -> QueryStep:
        p = self.params
        m = float(p.max_records)
        leaves = p.trees * 2**p.depth
        shape = {
            "mass": (leaves, m * np.sqrt(p.trees)),  # each tree's leaf counts sum to <= max_records
            "histogram": (p.score_bins, m),
            "flag": (2, m * np.sqrt(2.0)),
        }
        length, l2 = shape[phase]
        params: dict[str, Any] = {"query": p.model_dump(mode="json"), "phase": phase}
        if self.masses is not None:
            params["masses"] = self.masses.tolist()
        if phase == "flag":
            params["cutoff"] = self.cutoff
        self.phase = phase
        return QueryStep.build(
            NAME,
            self.step,
            length=length,
            value_bound=m,
            l2_bound=float(l2),
            record_l2_bound=CAP_DISPLACEMENT * float(l2) / m,
            params=params,
        )

    def first(self) -> QueryStep:
        return self._build("mass")

    def next(self, total: np.ndarray, contributors: int) -> QueryStep | None:
        values = np.asarray(total, dtype=np.float64).reshape(-1)
        expected = {"mass": self.params.trees * 2**self.params.depth, "histogram": self.params.score_bins, "flag": 2}
        if values.size != expected[self.phase]:
            raise ProtocolError(
                f"{NAME}: {self.phase} release has {values.size} entries, expected {expected[self.phase]}"
            )
        self.step += 1
        if self.phase == "mass":
            self.masses = values  # as released: the firms sum leaves into nodes before clamping
            return self._build("flag" if self.cutoff is not None else "histogram")
        if self.phase == "histogram":
            self.cutoff = cutoff_from_histogram(values, self.params.contamination)
            return self._build("flag")
        self.flagged, self.records = float(values[0]), float(values[1])
        return None

    def result(self) -> dict[str, Any]:
        p = self.params
        return {
            "query": NAME,
            "features": list(p.features),
            "score_cutoff": self.cutoff,
            "cutoff_source": "fixed score_threshold"
            if p.score_threshold is not None
            else f"contamination {p.contamination}",
            "flagged": self.flagged,
            "records": self.records,
            "flagged_share": self.flagged / self.records if self.records > 0 else None,
            "noise_std_of_counts": self.noise_multiplier
            * (
                self.params.max_records * float(np.sqrt(2.0))
                if self.unit == "firm"
                else CAP_DISPLACEMENT * float(np.sqrt(2.0))
            ),
            "forest": {"trees": p.trees, "depth": p.depth, "seed": p.seed, "isolation_mass": p.isolation_mass},
        }


def make_plan(
    params: Mapping[str, Any], schema: DataSchema, *, noise_multiplier: float = 0.0, unit: Unit = "record"
) -> AnomalyPlan:
    """An anomaly-detection plan over the risk table; features and ranges default to the schema's."""
    parsed = risk_query_params(AnomalyParams, params, schema=schema, query=NAME)
    return AnomalyPlan(parsed, noise_multiplier=noise_multiplier, unit=unit)
