"""The synthetic federation of `bench_secure_aggregation`: one case, the firms' data, the expected result.

Firm i (its node's `partition-id`) has a fixed weight and, in round r, a seeded Gaussian update of
P float32 values; the same firms vanish in every method (`dropping`). `reference_weights` is what
every method must arrive at, `error_bound` how far each may be from it (quantisation and float32
rounding). `local_training` is the optional stand-in for a firm's local training.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from silobridge.contract.config import AggregationSpec
from silobridge.privacy.secagg.layout import CLIPPED, Segment, VectorLayout
from silobridge.server.secure_sum import resolve_aggregation

METHODS = ("plain", "ours", "flower_secaggplus")

MAX_WEIGHT = 1000
"""A firm's weight is at most this: Flower's `max_weight` default, our `max_examples`."""
WEIGHT_RANGE = (50, 500)
UPDATE_STD = 0.01
UPDATE_BOUND = 1.0
"""Our bound per coordinate of a firm's change (the `update` segment's bound is this times MAX_WEIGHT)."""
FLOWER_CLIPPING_RANGE = 8.0
FLOWER_QUANTIZATION_RANGE = 1 << 22
"""Flower's SecAgg+ defaults, kept: parameters clipped to +-8 and quantised to 22 bits in a 32-bit ring."""

WEIGHTS = "weights"  # ArrayRecord: the global weights (plain and ours)
UPDATE = "update"  # ArrayRecord: a firm's update (plain)
WEIGHT = "weight"  # MetricRecord key: a firm's weight (plain)
BENCH = "bench"  # ConfigRecord: the round number; instrumentation, not counted in the payload

OURS_SETUP = ("query.secagg_advertise", "query.secagg_share")
"""Message types of our key session's two exchanges (reported as setup, amortised over the session)."""

DROPOUT_CODE = 4199
DROPOUT_REASON = "simulated dropout"
WARMUP = "query.warmup"
"""Answered by `warmup_mod` before anything else: starts the simulation's workers before round 1."""
EXCHANGE_TIMEOUT_S = 3600.0
NODE_WAIT_S = 120.0

_UPDATE_STREAM, _WEIGHT_STREAM, _DROP_STREAM = 1, 2, 3


class BenchmarkError(RuntimeError):
    """A run did something the benchmark did not ask for (a failure other than the simulated dropouts)."""


@dataclass(frozen=True)
class Case:
    """One simulation: a method on a federation of `firms` firms and `params` parameters."""

    method: str
    firms: int
    params: int
    dropout: float
    rounds: int
    seed: int = 20260101
    train_ms: float = 0.0
    """Process CPU milliseconds each firm spends on `local_training` per round before making its update."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.firms < 3 or self.params < 1 or self.rounds < 2 or not 0 <= self.dropout < 0.5:
            raise ValueError(f"not a valid benchmark case: {self}")
        if not (math.isfinite(self.train_ms) and self.train_ms >= 0):
            raise ValueError(f"train_ms must be a finite number >= 0, got {self.train_ms!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- the synthetic federation -----------------------------------------------------------------------


def firm_weight(seed: int, partition: int) -> int:
    """Firm `partition`'s weight (its number of examples), the same in every round and method."""
    low, high = WEIGHT_RANGE
    return int(np.random.default_rng([seed, _WEIGHT_STREAM, partition]).integers(low, high + 1))


def firm_update(seed: int, partition: int, round_number: int, params: int) -> np.ndarray:
    """Firm `partition`'s update in `round_number`: small Gaussian noise, float32."""
    rng = np.random.default_rng([seed, _UPDATE_STREAM, partition, round_number])
    return rng.normal(0.0, UPDATE_STD, params).astype(np.float32)


TRAINING_MATRIX = 64
"""Side of the workload's float64 matrices: OpenBLAS keeps a product this small on one thread."""


def local_training(train_ms: float) -> int:
    """Stand-in for a firm's local training: multiply fixed 64x64 float64 matrices until `train_ms`
    milliseconds of this process's CPU time (`time.process_time`) are used; returns how many products.

    Deterministic work on its own arrays (no random state), so the firm's update is the same with or
    without it; 0 does nothing. One product takes some 10 microseconds, the most it overshoots.
    """
    if train_ms <= 0:
        return 0
    side = TRAINING_MATRIX
    a = np.linspace(-1.0, 1.0, side * side).reshape(side, side) / 8
    b = np.ascontiguousarray(a.T)
    out = np.empty_like(a)
    budget = train_ms / 1000.0
    started = time.process_time()
    products = 0
    while time.process_time() - started < budget:
        np.matmul(a, b, out=out)
        products += 1
    return products


def dropping(seed: int, round_number: int, firms: int, rate: float) -> frozenset[int]:
    """The partitions that vanish in `round_number`: round(rate * firms) of them, drawn by seed and round."""
    count = round(rate * firms)
    rng = np.random.default_rng([seed, _DROP_STREAM, round_number])
    return frozenset(int(i) for i in rng.choice(firms, size=count, replace=False))


def reference_weights(case: Case, *, include_dropped: bool) -> np.ndarray:
    """The global weights after `case.rounds` rounds, averaged in float64 and kept in float32 like the apps.

    Secure methods sum every firm that sent its masked input (the late dropouts are recovered);
    plain sums only the firms that answered (`include_dropped=False`).
    """
    weights = np.zeros(case.params, dtype=np.float32)
    for r in range(1, case.rounds + 1):
        gone = set() if include_dropped else dropping(case.seed, r, case.firms, case.dropout)
        total = np.zeros(case.params)
        weight_sum = 0
        for i in range(case.firms):
            if i in gone:
                continue
            w = firm_weight(case.seed, i)
            total += w * firm_update(case.seed, i, r, case.params).astype(np.float64)
            weight_sum += w
        weights = (weights + total / weight_sum).astype(np.float32)
    return weights


def error_bound(case: Case, layout: VectorLayout | None, final: np.ndarray) -> float:
    """Worst-case distance of a method's final weights from its reference (quantisation + float32 rounding).

    Each round the global is rounded to float32, so a difference of d before rounding is at most
    d + one float32 spacing after it.
    """
    spacing = float(np.spacing(np.float32(np.abs(final).max() + 8 * UPDATE_STD)))
    per_round = spacing
    weights = [firm_weight(case.seed, i) for i in range(case.firms)]
    if case.method == "ours":
        if layout is None:
            raise ValueError("our bound needs the layout")
        bounds = layout.error_bounds(case.firms)
        weight_sum = sum(weights)
        max_mean = 8 * UPDATE_STD  # |weighted mean update| stays below 8 standard deviations
        per_round += (bounds[UPDATE] + max_mean * bounds[WEIGHT]) / weight_sum
    elif case.method == "flower_secaggplus":
        # Flower quantises dq_i * p_i (dq_i = round(w_i / max_weight * 2^22) / 2^22, p_i = global + update)
        # with stochastic rounding, step 2 * clip / 2^22, then divides the sum by sum(dq_i).
        step = 2 * FLOWER_CLIPPING_RANGE / FLOWER_QUANTIZATION_RANGE
        dq = [round(w / MAX_WEIGHT * FLOWER_QUANTIZATION_RANGE) / FLOWER_QUANTIZATION_RANGE for w in weights]
        relative = max(abs(d - w / MAX_WEIGHT) / (w / MAX_WEIGHT) for d, w in zip(dq, weights, strict=True))
        per_round += case.firms * step / sum(dq) + relative * 2 * 8 * UPDATE_STD
    return case.rounds * per_round


def firm_id(node_id: int) -> str:
    """The firm a node plays in our protocol (both halves derive it from the Flower node id)."""
    return f"node-{node_id}"


def ours_spec(case: Case) -> AggregationSpec:
    """Our default aggregation spec with this benchmark's bounds; sized for 30% dropout when the case has it."""
    overrides: dict[str, Any] = {"max_examples": MAX_WEIGHT, "update_bound": UPDATE_BOUND}
    if case.dropout > 0:
        overrides["expected_dropout"] = case.dropout
    return AggregationSpec(**overrides)


def ours_layout(params: int, spec: AggregationSpec) -> VectorLayout:
    """The weighted update, the weight, and the count of clipped values (as every layout of the app ends)."""
    return VectorLayout(
        (
            Segment(UPDATE, params, spec.max_examples * spec.update_bound),
            Segment(WEIGHT, 1, float(spec.max_examples)),
            Segment(CLIPPED, 1, float(params + 1)),
        ),
        spec.value_bits,
    )


def security_parameters(case: Case) -> tuple[int, int]:
    """(neighbours k, threshold t) of our protocol for this case; Flower gets num_shares = k + 1 (the firm
    and its neighbours hold shares) and reconstruction_threshold = t."""
    spec = resolve_aggregation(ours_spec(case), case.firms)
    if spec.num_neighbours is None or spec.threshold is None:
        raise BenchmarkError("resolve_aggregation left neighbours or threshold unset")
    return spec.num_neighbours, spec.threshold
