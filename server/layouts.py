"""The shape of every sum a run releases: which segments, how long, and their public bounds.

Statistics (evaluation, baselines, feature moments) take two words per value, so their sums come
back at float64 precision whatever their wide bound; model updates take one.

The coordinator fixes these from the federation spec and the model sizes, and sends them with each
request; a firm checks that what it computed fits before anything is masked.
"""

from __future__ import annotations

from collections.abc import Mapping

from silobridge.contract.config import AggregationSpec
from silobridge.contract.efficiency_sums import EFFICIENCY_AFTER, EFFICIENCY_BEFORE, EFFICIENCY_LENGTH
from silobridge.contract.query_protocol import QUERY_SEGMENT
from silobridge.contract.stats import STAT_SLOTS, DemandErrorStats, RiskStats
from silobridge.contract.sufficient import LINEAR_SEGMENT
from silobridge.contract.wire_names import (
    DEMAND_LOCAL_ONLY,
    DEMAND_NAIVE,
    RISK_LOCAL_ONLY,
    RISK_MOMENTS,
    eval_segment,
    loss_segment,
    update_segment,
    weight_segment,
)
from silobridge.privacy.dp.clipping import UNCLIPPED_SEGMENT
from silobridge.privacy.secagg.layout import CLIPPED, Segment, VectorLayout

STAT_LENGTH = {"demand": DemandErrorStats.SIZE * len(STAT_SLOTS), "risk": RiskStats.SIZE * len(STAT_SLOTS)}
LOSS_BOUND = 1_000.0
"""Per-example training losses above this are clipped in the released weighted-loss total."""


def _with_clipping(segments: list[Segment], agg: AggregationSpec) -> VectorLayout:
    """Every layout ends with the count of values the firms' quantisation clipped."""
    total = sum(s.length for s in segments)
    return VectorLayout((*segments, Segment(CLIPPED, 1, float(total))), agg.value_bits)


def training_layout(
    param_counts: Mapping[str, int],
    agg: AggregationSpec,
    *,
    statistics: bool = True,
    integer_updates: bool = False,
    unclipped_count: bool = False,
) -> VectorLayout:
    """One round of both models: weighted change and weight, and (without DP) the weighted loss and the
    evaluation of the received model. Distributed DP sends its changes as noised integers; adaptive
    clipping adds each firm's unclipped indicator (0 or 1: exact at any value bits)."""
    segments = []
    for kind, count in param_counts.items():
        update_bound = float(2 ** (agg.value_bits - 1) - 1) if integer_updates else agg.max_examples * agg.update_bound
        segments += [
            Segment(update_segment(kind), count, update_bound, "integer" if integer_updates else "single"),
            Segment(weight_segment(kind), 1, float(agg.max_examples)),
        ]
        if statistics:
            segments += [
                Segment(loss_segment(kind), 1, agg.max_examples * LOSS_BOUND),
                Segment(eval_segment(kind), STAT_LENGTH[kind], agg.stats_bound, "double"),
            ]
    if unclipped_count:
        segments.append(Segment(UNCLIPPED_SEGMENT, 1, 1.0))
    return _with_clipping(segments, agg)


def evaluation_layout(kinds: tuple[str, ...], agg: AggregationSpec) -> VectorLayout:
    """The final models' test statistics and, with a demand model, the efficiency sums of ordering from it."""
    segments = [Segment(eval_segment(k), STAT_LENGTH[k], agg.stats_bound, "double") for k in kinds]
    if "demand" in kinds:
        segments.append(Segment(EFFICIENCY_AFTER, EFFICIENCY_LENGTH, agg.stats_bound, "double"))
    return _with_clipping(segments, agg)


def baselines_layout(agg: AggregationSpec) -> VectorLayout:
    return _with_clipping(
        [
            Segment(DEMAND_LOCAL_ONLY, STAT_LENGTH["demand"], agg.stats_bound, "double"),
            Segment(DEMAND_NAIVE, STAT_LENGTH["demand"], agg.stats_bound, "double"),
            Segment(RISK_LOCAL_ONLY, STAT_LENGTH["risk"], agg.stats_bound, "double"),
            Segment(EFFICIENCY_BEFORE, EFFICIENCY_LENGTH, agg.stats_bound, "double"),
        ],
        agg,
    )


def moments_layout(num_features: int, agg: AggregationSpec) -> VectorLayout:
    return _with_clipping([Segment(RISK_MOMENTS, 1 + 2 * num_features, agg.stats_bound, "double")], agg)


def query_layout(length: int, value_bound: float, agg: AggregationSpec) -> VectorLayout:
    """One analytics query step: `length` values within +/-`value_bound`, at float64 precision."""
    return _with_clipping([Segment(QUERY_SEGMENT, length, value_bound, "double")], agg)


def efficiency_layout(agg: AggregationSpec) -> VectorLayout:
    """The efficiency sums as their own (DP) release: before and after, tier-slotted."""
    return _with_clipping(
        [
            Segment(EFFICIENCY_BEFORE, EFFICIENCY_LENGTH, agg.stats_bound, "double"),
            Segment(EFFICIENCY_AFTER, EFFICIENCY_LENGTH, agg.stats_bound, "double"),
        ],
        agg,
    )


def linear_layout(length: int, agg: AggregationSpec) -> VectorLayout:
    """One firm's sufficient statistics of a linear-family model, at float64 precision."""
    return _with_clipping([Segment(LINEAR_SEGMENT, length, agg.stats_bound, "double")], agg)
