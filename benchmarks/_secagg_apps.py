"""The three aggregation methods of `bench_secure_aggregation` as Flower apps, and their instrumentation.

Every method runs the same synthetic federation: firm i (its node's `partition-id`) has a fixed
weight and, in round r, a seeded Gaussian update of P float32 values. By default nothing is trained,
so the numbers isolate what aggregation costs. With `Case.train_ms` > 0 every firm first spends that
many milliseconds of process CPU time on a fixed workload (`local_training`: 64x64 float64 matmuls),
a stand-in for local training that is the same in every method and leaves the update unchanged:
once per round per firm, in plain's and our train handler and in the NumPyClient's `fit` that
SecAgg+ calls in its collect-masked-vectors stage. The same firms vanish in all methods
(`dropping`); a vanishing firm has trained first in every method.

- plain: a Message-API ServerApp sends the global weights (one float32 ArrayRecord) to every node
  (`message_type="train"`); each firm answers with its update and weight; the server averages.
- ours: the same round through SiloBridge's secure aggregation, driven as `federation/runner.py`
  drives it: `resolve_aggregation` + `SecureSumServer` on the server, `FirmSecureSum` on the firm
  with its state in `context.state.config_records["secagg"]`; key sessions of
  `rounds_per_session` sums (two exchanges: advertise, share), the masked-input request riding on
  the train message, one `query.secagg_unmask` exchange per sum.
- flower_secaggplus: Flower's legacy SecAgg+ (`SecAggPlusWorkflow` in a `DefaultWorkflow`, legacy
  `FedAvg`, a `ClientApp(client_fn=..., mods=[secaggplus_mod])` whose NumPyClient returns the
  global weights plus the same update), the only way Flower 1.41 offers it.

Instrumentation is identical for all three. Server: a Grid wrapper times every exchange (from the
push of its messages to the pull of its last reply: the round trip including the firms' work; all
three pull replies with `federation.exchange`'s schedule), and each method times its own steps.
Firms: an outermost client mod takes `time.process_time` around everything the ClientApp does for a
message and counts the payload down and up (`payload_bytes`), one JSON line per message in a file
per process, with the CPU seconds of the named steps (`Probe`; the workload is the step `train`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message, MetricRecord, RecordDict
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key, Stage
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp import Grid, ServerApp

from silobridge.clients.secure_sum import FirmSecureSum
from silobridge.contract.config import AggregationSpec
from silobridge.federation.exchange import Replies, exchange, send_and_receive, wait_for_nodes
from silobridge.federation.records import (
    LAYOUT,
    MASKED,
    RUN,
    SECAGG,
    arrays_of,
    arrays_record,
    config_of,
    layout_record,
    read_layout,
    record_arrays,
    secagg_run_id,
)
from silobridge.privacy.secagg.layout import CLIPPED, Segment, VectorLayout
from silobridge.privacy.secagg.messages import MaskedInput
from silobridge.server.secure_sum import SecureSumServer, resolve_aggregation

# The runtime would otherwise try to pip-install app dependencies (offline here), and Ray warns about GPUs.
os.environ.setdefault("FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

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


# -- measuring ----------------------------------------------------------------------------------------


def _value_bytes(value: Any) -> int:
    if isinstance(value, list):
        return sum(_value_bytes(v) for v in value)
    if isinstance(value, bool):
        return 1
    if isinstance(value, (int, float)):
        return 8
    if isinstance(value, (str, bytes)):
        return len(value.encode() if isinstance(value, str) else value)
    raise TypeError(f"unexpected record value of type {type(value).__name__}")


def payload_bytes(content: RecordDict) -> int:
    """Array bytes (each Array's serialised data) plus ConfigRecord and MetricRecord values.

    Keys are not counted, nor the benchmark's own round-number record. (Flower's `count_bytes`
    also counts keys, and fails on an empty list, which SecAgg+ sends when nobody dropped.)
    """
    total = 0
    for record in content.array_records.values():
        total += sum(len(array.data) for array in record.values())
    for name, record in content.config_records.items():
        if name != BENCH:
            total += sum(_value_bytes(v) for v in record.values())
    for record in content.metric_records.values():
        total += sum(_value_bytes(v) for v in record.values())
    return total


class Probe:
    """CPU seconds of named steps of the message a ClientApp process is handling now (one at a time)."""

    def __init__(self) -> None:
        self.sections: dict[str, float] = {}

    def reset(self) -> None:
        self.sections = {}

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        started = time.process_time()
        try:
            yield
        finally:
            self.sections[name] = self.sections.get(name, 0.0) + time.process_time() - started


PROBE = Probe()
"""Per process: each simulation worker process handles one message at a time. Reach it only through
`probe_step`, `probe_reset` and `probe_sections`: the simulation ships the ClientApp's closures to its
workers by value, with a copy of every module global they name, while module-level functions (such
as `train_locally`, or `_SyntheticClient.fit`) go by reference and find the worker's own module; a
closure naming PROBE would time its steps on a copy that the others never see."""


def probe_step(name: str) -> AbstractContextManager[None]:
    """Time a named step of the current message on this process's probe."""
    return PROBE.section(name)


def probe_reset() -> None:
    PROBE.reset()


def probe_sections() -> dict[str, float]:
    return PROBE.sections


def train_locally(case: Case) -> None:
    """The firm's stand-in for local training (`local_training`), measured as the step `train`; nothing
    (and no step) when the case has no training."""
    if case.train_ms > 0:
        with probe_step("train"):
            local_training(case.train_ms)


def message_round(message: Message) -> int:
    """The benchmark round a message belongs to: our round record, else Flower's group id (its round)."""
    if BENCH in message.content.config_records:
        return int(message.content.config_records[BENCH]["round"])
    return int(message.metadata.group_id)


def message_stage(message: Message) -> str:
    """The message type, or for SecAgg+ (all its stages are `train`) the stage it carries."""
    configs = message.content.config_records.get(RECORD_KEY_CONFIGS)
    if configs is not None and Key.STAGE in configs:
        return str(configs[Key.STAGE])
    return message.metadata.message_type


def measure_mod(method: str, log_dir: str) -> Mod:
    """The outermost measuring mod: CPU time, payload down and up, the size of the firm's stored state;
    one JSON line per message."""

    def mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        # Read before handling: SecAgg+ pops the stage out of the incoming record.
        stage, round_number, down = message_stage(message), message_round(message), payload_bytes(message.content)
        probe_reset()
        started = time.process_time()
        reply = call_next(message, context)
        cpu = time.process_time() - started
        line = {
            "method": method,
            "partition": int(context.node_config["partition-id"]),
            "round": round_number,
            "stage": stage,
            "cpu_s": cpu,
            "bytes_down": down,
            "bytes_up": payload_bytes(reply.content) if reply.has_content() else 0,
            "error": reply.error.reason if reply.has_error() else None,
            "state_bytes": payload_bytes(context.state),  # what the firm keeps between messages
            "sections": probe_sections(),
        }
        with open(Path(log_dir) / f"firms-{os.getpid()}.jsonl", "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
        return reply

    return mod


def answer_warmup(message: Message, context: Context) -> Message:
    return Message(RecordDict(), reply_to=message)


def warmup_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The first mod of every method's ClientApp: answers the warm-up message, unmeasured.

    A Message-API ClientApp routes only the types it registered, so plain and ours also register
    `answer_warmup` as `query.warmup`; this mod answers before the measuring mod sees it.
    """
    if message.metadata.message_type == WARMUP:
        return answer_warmup(message, context)
    return call_next(message, context)


def warm_up(grid: Grid, firms: int) -> list[int]:
    """Wait for the nodes and send each a warm-up message, so that round 1 does not pay for starting
    the simulation's worker processes; returns the node ids."""
    nodes = wait_for_nodes(grid, firms, timeout_s=NODE_WAIT_S)
    replies = exchange(grid, [(node, WARMUP, RecordDict()) for node in nodes], timeout_s=EXCHANGE_TIMEOUT_S)
    if replies.failed:
        raise BenchmarkError(f"warm-up failed: {sorted(replies.failed.values())}")
    return nodes


def read_firm_lines(log_dir: Path) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in sorted(log_dir.glob("firms-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line]
    return lines


class Stopwatch:
    """Wall-clock seconds by name, and the exchanges (send_and_receive calls) of the current round."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.exchange_s = 0.0
        self.exchanges = 0

    @contextmanager
    def time(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - started

    def take(self) -> dict[str, Any]:
        """What this round measured; starts the next round from zero."""
        taken = {"seconds": self.seconds, "exchange_s": self.exchange_s, "exchanges": self.exchanges}
        self.seconds, self.exchange_s, self.exchanges = {}, 0.0, 0
        return taken


class TimedGrid(Grid):
    """Delegates to the simulation's Grid and times every exchange: from a push of messages until the
    pull that brings the last of their replies (what `federation.exchange.send_and_receive` does for
    plain and ours). Flower's SecAgg+ workflow calls `send_and_receive` on this Grid, which runs the
    same polling loop, so all three methods poll for replies alike."""

    def __init__(self, grid: Grid, stopwatch: Stopwatch):
        self._grid = grid
        self._stopwatch = stopwatch
        self._pending: set[str] = set()
        self._pushed_at = 0.0

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return send_and_receive(self, list(messages), timeout_s=EXCHANGE_TIMEOUT_S if timeout is None else timeout)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = list(self._grid.push_messages(messages))
        if not self._pending:
            self._pushed_at = time.perf_counter()
        self._pending.update(ids)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._grid.pull_messages(message_ids))
        if self._pending:
            self._pending.difference_update(reply.metadata.reply_to_message_id for reply in replies)
            if not self._pending:
                self._stopwatch.exchange_s += time.perf_counter() - self._pushed_at
                self._stopwatch.exchanges += 1
        return replies

    def set_run(self, run: Any) -> None:
        self._grid.set_run(run)

    @property
    def run(self) -> Any:
        return self._grid.run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return self._grid.create_message(content, message_type, dst_node_id, group_id, ttl)

    def get_node_ids(self) -> Iterable[int]:
        return self._grid.get_node_ids()


@dataclass
class ServerOutcome:
    """What a ServerApp hands back: per-round measurements, its parameters, the final weights, or its error."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    protocol: dict[str, Any] = field(default_factory=dict)
    first_round_started: float | None = None  # time.perf_counter(), to separate start-up
    final_weights: np.ndarray | None = None
    error: str | None = None


def _server_app(case: Case, outcome: ServerOutcome, run: Callable[[Grid, Context, Stopwatch], None]) -> ServerApp:
    """A ServerApp whose main runs `run` on a timed Grid and keeps any error in `outcome` before re-raising."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        stopwatch = Stopwatch()
        try:
            run(TimedGrid(grid, stopwatch), context, stopwatch)
        except BaseException as err:
            outcome.error = "".join(traceback.format_exception(err))
            raise

    return app


def _check_failures(replies: Replies, expected: int, what: str) -> None:
    """Only the simulated dropouts may fail, and exactly as many as were drawn."""
    reasons = list(replies.failed.values())
    unexpected = [reason for reason in reasons if reason != DROPOUT_REASON]
    if unexpected or len(reasons) != expected:
        raise BenchmarkError(f"{what}: expected {expected} simulated dropouts, got {len(reasons)} failures: {reasons}")


def _round_record(round_number: int) -> ConfigRecord:
    return ConfigRecord({"round": round_number})


def _dropout_reply(message: Message) -> Message:
    return Message(Error(code=DROPOUT_CODE, reason=DROPOUT_REASON), reply_to=message)


def _vanishes(case: Case, context: Context, round_number: int) -> bool:
    return int(context.node_config["partition-id"]) in dropping(case.seed, round_number, case.firms, case.dropout)


# -- plain -------------------------------------------------------------------------------------------


def plain_apps(case: Case, log_dir: str, outcome: ServerOutcome) -> tuple[ServerApp, ClientApp]:
    def run(grid: Grid, context: Context, stopwatch: Stopwatch) -> None:
        nodes = warm_up(grid, case.firms)
        stopwatch.take()
        weights = np.zeros(case.params, dtype=np.float32)
        outcome.protocol = {"exchanges_per_round": 1}
        outcome.first_round_started = time.perf_counter()
        for r in range(1, case.rounds + 1):
            started = time.perf_counter()
            content = RecordDict({WEIGHTS: arrays_record({WEIGHTS: weights}), BENCH: _round_record(r)})
            replies = exchange(grid, [(node, "train", content) for node in nodes], timeout_s=EXCHANGE_TIMEOUT_S)
            _check_failures(replies, len(dropping(case.seed, r, case.firms, case.dropout)), f"plain round {r}")
            with stopwatch.time("aggregate"):
                total = np.zeros(case.params)
                weight_sum = 0.0
                for reply in replies.ok.values():
                    w = float(reply.metric_records[WEIGHT][WEIGHT])
                    total += w * record_arrays(reply.array_records[UPDATE])[UPDATE]
                    weight_sum += w
                weights = (weights + total / weight_sum).astype(np.float32)
            outcome.rounds.append({"round": r, "round_s": time.perf_counter() - started, **stopwatch.take()})
        outcome.final_weights = weights

    client = ClientApp(mods=[warmup_mod, measure_mod(case.method, log_dir)])
    client.query("warmup")(answer_warmup)

    @client.train()
    def train(message: Message, context: Context) -> Message:
        r = message_round(message)
        train_locally(case)  # every firm trains, the vanishing ones too, as under secure aggregation
        if _vanishes(case, context, r):
            return _dropout_reply(message)  # a plain firm that vanishes sends nothing
        partition = int(context.node_config["partition-id"])
        with probe_step("update"):
            arrays_of(message, WEIGHTS)  # deserialise the global weights, as a real firm would
            update = firm_update(case.seed, partition, r, case.params)
        content = RecordDict(
            {
                UPDATE: arrays_record({UPDATE: update}),
                WEIGHT: MetricRecord({WEIGHT: firm_weight(case.seed, partition)}),
            }
        )
        return Message(content, reply_to=message)

    return _server_app(case, outcome, run), client


# -- ours --------------------------------------------------------------------------------------------


def ours_apps(case: Case, log_dir: str, outcome: ServerOutcome) -> tuple[ServerApp, ClientApp]:
    def run(grid: Grid, context: Context, stopwatch: Stopwatch) -> None:
        nodes = warm_up(grid, case.firms)
        stopwatch.take()
        node_of = {firm_id(node): node for node in nodes}
        spec = resolve_aggregation(ours_spec(case), case.firms)
        secure = SecureSumServer(spec, run_id=secagg_run_id(context.run_id))
        layout = ours_layout(case.params, spec)
        spec_record = ConfigRecord({"spec": spec.model_dump_json()})
        layout_wire = layout_record(layout)
        outcome.protocol = {
            **secure.describe(case.firms),
            "layout": layout.describe(),
            "vector_words": layout.length,
        }

        def send(message_type: str, firms: Iterable[str], records: dict[str, Any], r: int) -> Replies:
            content = {RUN: spec_record, BENCH: _round_record(r), **records}
            requests = [(node_of[f], message_type, RecordDict(content)) for f in firms]
            return exchange(grid, requests, timeout_s=EXCHANGE_TIMEOUT_S)

        def require(replies: Replies, what: str) -> None:
            if replies.failed:
                raise BenchmarkError(f"{what} failed: {sorted(replies.failed.values())}")

        weights = np.zeros(case.params, dtype=np.float32)
        outcome.first_round_started = time.perf_counter()
        for r in range(1, case.rounds + 1):
            setup: dict[str, Any] = {}
            if secure.needs_session():  # key agreement for the next rounds_per_session sums
                with stopwatch.time("setup"):
                    advertise = secure.open_session(sorted(node_of))
                    replies = send("query.secagg_advertise", node_of, {SECAGG: ConfigRecord(advertise.to_wire())}, r)
                    require(replies, "advertise keys")
                    roster = secure.receive_advertise(
                        {firm_id(n): dict(c.config_records[SECAGG]) for (n, _), c in replies.ok.items()}
                    )
                    replies = send("query.secagg_share", roster.firms, {SECAGG: ConfigRecord(roster.to_wire())}, r)
                    require(replies, "share keys")
                    secure.receive_shares(
                        {firm_id(n): dict(c.config_records[SECAGG]) for (n, _), c in replies.ok.items()}
                    )
                setup = stopwatch.take()
            started = time.perf_counter()
            with stopwatch.time("start_round"):
                requests = secure.start_round(layout)
            weights_record = arrays_record({WEIGHTS: weights})
            replies = exchange(
                grid,
                [
                    (
                        node_of[firm],
                        "train",
                        RecordDict(
                            {
                                RUN: spec_record,
                                BENCH: _round_record(r),
                                WEIGHTS: weights_record,
                                LAYOUT: layout_wire,
                                SECAGG: ConfigRecord(request.to_wire()),
                            }
                        ),
                    )
                    for firm, request in requests.items()
                ],
                timeout_s=EXCHANGE_TIMEOUT_S,
            )
            require(replies, f"masked input, round {r}")
            with stopwatch.time("receive_masked_inputs"):
                masked = [
                    (
                        firm_id(node),
                        MaskedInput.from_wire(
                            dict(content.config_records[SECAGG]),
                            expected_sender=firm_id(node),
                            vector=record_arrays(content.array_records[MASKED])["vector"],
                        ),
                    )
                    for (node, _), content in replies.ok.items()
                ]
                unmask = secure.receive_masked_inputs(masked)
            replies = send("query.secagg_unmask", unmask.survivors, {SECAGG: ConfigRecord(unmask.to_wire())}, r)
            _check_failures(replies, len(dropping(case.seed, r, case.firms, case.dropout)), f"unmask, round {r}")
            with stopwatch.time("finish"):
                result = secure.finish(
                    {firm_id(n): dict(c.config_records[SECAGG]) for (n, _), c in replies.ok.items()},
                    layout,
                    case.firms,
                )
            if len(result.contributors) != case.firms:
                raise BenchmarkError(f"round {r}: {len(result.contributors)} of {case.firms} firms in the sum")
            with stopwatch.time("aggregate"):
                segments = result.segments
                weights = (weights + segments[UPDATE] / segments[WEIGHT][0]).astype(np.float32)
            measured = stopwatch.take()
            outcome.rounds.append(
                {
                    "round": r,
                    "round_s": time.perf_counter() - started,
                    **measured,
                    "setup_s": setup.get("seconds", {}).get("setup", 0.0),
                    "setup_exchange_s": setup.get("exchange_s", 0.0),
                    "setup_exchanges": setup.get("exchanges", 0),
                    "clipped": int(round(float(segments[CLIPPED][0]))),
                    "recovered_self_masks": len(result.record.recovered_self_masks),
                }
            )
        outcome.final_weights = weights

    client = ClientApp(mods=[warmup_mod, measure_mod(case.method, log_dir)])
    client.query("warmup")(answer_warmup)

    def restore(message: Message, context: Context) -> FirmSecureSum:
        spec = AggregationSpec.model_validate_json(str(config_of(message, RUN)["spec"]))
        stored = context.state.config_records.get(SECAGG)
        return FirmSecureSum(
            firm_id(context.node_id), spec, run_id=secagg_run_id(context.run_id), stored=dict(stored or {})
        )

    def store(secure: FirmSecureSum, context: Context) -> None:
        context.state.config_records[SECAGG] = ConfigRecord(secure.state())

    @client.train()
    def train(message: Message, context: Context) -> Message:
        partition = int(context.node_config["partition-id"])
        train_locally(case)
        with probe_step("update"):
            arrays_of(message, WEIGHTS)
            weight = firm_weight(case.seed, partition)
            update = firm_update(case.seed, partition, message_round(message), case.params)
        with probe_step("restore"):
            layout = read_layout(message)
            secure = restore(message, context)
        try:
            with probe_step("mask"):
                values = {UPDATE: weight * update.astype(np.float64), WEIGHT: np.array([weight], dtype=np.float64)}
                values[CLIPPED] = np.array([layout.count_clipped(values)])
                release = secure.masked_input(config_of(message, SECAGG), layout, values)
        finally:
            with probe_step("store"):
                store(secure, context)
        content = RecordDict({SECAGG: ConfigRecord(release.message), MASKED: arrays_record({"vector": release.vector})})
        return Message(content, reply_to=message)

    def stage(name: str, *, may_vanish: bool = False) -> Callable[[Message, Context], Message]:
        def handle(message: Message, context: Context) -> Message:
            if may_vanish and _vanishes(case, context, message_round(message)):
                return _dropout_reply(message)
            with probe_step("restore"):
                secure = restore(message, context)
            try:
                with probe_step(name):
                    reply = getattr(secure, name)(config_of(message, SECAGG))
            finally:
                with probe_step("store"):
                    store(secure, context)
            return Message(RecordDict({SECAGG: ConfigRecord(reply)}), reply_to=message)

        return handle

    client.query("secagg_advertise")(stage("advertise"))
    client.query("secagg_share")(stage("share_keys"))
    client.query("secagg_unmask")(stage("unmask", may_vanish=True))
    return _server_app(case, outcome, run), client


# -- Flower's SecAgg+ ----------------------------------------------------------------------------------


class _RecordingFedAvg(LegacyFedAvg):
    """Legacy FedAvg that keeps the global weights float32 and records each round's failures.

    SecAgg+ dequantises into float64; without the cast every later round would send 8 bytes per
    parameter down instead of the 4 the other methods send.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.failures: dict[int, list[str]] = {}

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        self.failures[server_round] = [str(f) for f in failures]
        parameters, metrics = super().aggregate_fit(server_round, results, failures)
        if parameters is None:
            return None, metrics
        arrays = [a.astype(np.float32) for a in parameters_to_ndarrays(parameters)]
        return ndarrays_to_parameters(arrays), metrics


class _TimedSecAggPlus(SecAggPlusWorkflow):
    """SecAgg+ with each round and stage timed; a stage that halts the protocol is recorded."""

    def __init__(self, stopwatch: Stopwatch, rounds: list[dict[str, Any]], **kwargs: Any):
        super().__init__(**kwargs)
        self.stopwatch = stopwatch
        self.rounds = rounds
        self.halted: str | None = None

    def __call__(self, grid: Grid, context: Context) -> None:
        self.halted = None
        started = time.perf_counter()
        super().__call__(grid, context)
        self.rounds.append(
            {
                "round": len(self.rounds) + 1,
                "round_s": time.perf_counter() - started,
                **self.stopwatch.take(),
                "halted_at": self.halted,
            }
        )

    def _stage(self, name: str, step: Callable[..., bool], *args: Any) -> bool:
        exchanged = self.stopwatch.exchange_s
        with self.stopwatch.time(name):
            ok = step(*args)
        self.stopwatch.seconds[f"{name}_exchange"] = self.stopwatch.exchange_s - exchanged
        if not ok:
            self.halted = name
        return ok

    def setup_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        return self._stage(Stage.SETUP, super().setup_stage, grid, context, state)

    def share_keys_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        return self._stage(Stage.SHARE_KEYS, super().share_keys_stage, grid, context, state)

    def collect_masked_vectors_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        return self._stage(Stage.COLLECT_MASKED_VECTORS, super().collect_masked_vectors_stage, grid, context, state)

    def unmask_stage(self, grid: Grid, context: LegacyContext, state: Any) -> bool:
        return self._stage(Stage.UNMASK, super().unmask_stage, grid, context, state)


class _FlowerErrors(logging.Handler):
    """Keeps Flower's ERROR log lines (SecAgg+ reports a halted round only there)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class _SyntheticClient(NumPyClient):
    def __init__(self, case: Case, partition: int):
        self.case = case
        self.partition = partition

    def fit(self, parameters: list[np.ndarray], config: dict[str, Scalar]) -> tuple[list[np.ndarray], int, dict]:
        """New local weights = global + this round's update (what the other methods average).

        SecAgg+ calls this once a round, in its collect-masked-vectors stage; the workload runs here.
        """
        train_locally(self.case)
        with probe_step("update"):
            update = firm_update(self.case.seed, self.partition, int(config["server_round"]), self.case.params)
            new = (parameters[0] + update).astype(np.float32)
        return [new], firm_weight(self.case.seed, self.partition), {}


def _flower_dropout_mod(case: Case) -> Mod:
    """Wraps secaggplus_mod: the drawn firms answer the unmask stage with an error (after their masked input)."""

    def mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
        if message_stage(message) == Stage.UNMASK and _vanishes(case, context, message_round(message)):
            return _dropout_reply(message)
        return call_next(message, context)

    return mod


def flower_apps(case: Case, log_dir: str, outcome: ServerOutcome) -> tuple[ServerApp, ClientApp]:
    neighbours, threshold = security_parameters(case)

    def run(grid: Grid, context: Context, stopwatch: Stopwatch) -> None:
        warm_up(grid, case.firms)
        stopwatch.take()
        strategy = _RecordingFedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,
            min_fit_clients=case.firms,
            min_available_clients=case.firms,
            initial_parameters=ndarrays_to_parameters([np.zeros(case.params, dtype=np.float32)]),
            on_fit_config_fn=lambda server_round: {"server_round": server_round},
        )
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=case.rounds), strategy=strategy)
        fit = _TimedSecAggPlus(
            stopwatch,
            outcome.rounds,
            num_shares=neighbours + 1,
            reconstruction_threshold=threshold,
            max_weight=float(MAX_WEIGHT),
            clipping_range=FLOWER_CLIPPING_RANGE,
            quantization_range=FLOWER_QUANTIZATION_RANGE,
        )
        outcome.protocol = {
            "num_shares": neighbours + 1,
            "reconstruction_threshold": threshold,
            "max_weight": MAX_WEIGHT,
            "clipping_range": FLOWER_CLIPPING_RANGE,
            "quantization_range": FLOWER_QUANTIZATION_RANGE,
            "modulus_range": fit.modulus_range,
        }
        errors = _FlowerErrors()
        flwr_log = logging.getLogger("flwr")
        flwr_log.addHandler(errors)
        try:
            outcome.first_round_started = time.perf_counter()
            DefaultWorkflow(fit_workflow=fit)(grid, legacy)
        finally:
            flwr_log.removeHandler(errors)
        for record in outcome.rounds:
            r = record["round"]
            record["failures"] = strategy.failures.get(r)
            expected = len(dropping(case.seed, r, case.firms, case.dropout))
            failures = record["failures"]
            if record["halted_at"] or failures is None:
                raise BenchmarkError(
                    f"SecAgg+ round {r} halted at stage {record['halted_at']!r}; Flower logged: {errors.lines}"
                )
            if len(failures) != expected or any(DROPOUT_REASON not in f for f in failures):
                raise BenchmarkError(f"SecAgg+ round {r}: expected {expected} simulated dropouts, got {failures}")
        outcome.protocol["flower_error_log"] = errors.lines
        final = legacy.state.array_records[MAIN_PARAMS_RECORD]
        outcome.final_weights = np.asarray(next(iter(final.values())).numpy(), dtype=np.float32)

    def client_fn(context: Context) -> Any:
        return _SyntheticClient(case, int(context.node_config["partition-id"])).to_client()

    client = ClientApp(
        client_fn=client_fn,
        mods=[warmup_mod, measure_mod(case.method, log_dir), _flower_dropout_mod(case), secaggplus_mod],
    )
    return _server_app(case, outcome, run), client


APPS: dict[str, Callable[[Case, str, ServerOutcome], tuple[ServerApp, ClientApp]]] = {
    "plain": plain_apps,
    "ours": ours_apps,
    "flower_secaggplus": flower_apps,
}


# -- running one case ------------------------------------------------------------------------------


@dataclass
class CaseRun:
    """One finished (or failed) simulation: the server's measurements and every firm's message lines."""

    case: Case
    outcome: ServerOutcome
    firm_lines: list[dict[str, Any]]
    startup_s: float | None  # simulation start to the first round (Ray, virtual nodes, first contact)
    simulation_s: float
    peak_rss_mib: float


def simulate(case: Case, work_dir: Path) -> CaseRun:
    """Run `case` on Flower's simulation runtime in this process (Ray backend, one CPU per virtual node)."""
    from flwr.simulation import run_simulation

    from benchmarks._common import TreeMemorySampler

    log_dir = work_dir / f"{case.method}-firms"
    log_dir.mkdir(parents=True, exist_ok=False)
    outcome = ServerOutcome()
    server_app, client_app = APPS[case.method](case, str(log_dir), outcome)
    backend_config = {
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
        "init_args": {"num_cpus": 2, "include_dashboard": False, "logging_level": logging.ERROR, "log_to_driver": True},
    }
    for name in ("flwr", "ray"):
        logging.getLogger(name).setLevel(logging.WARNING)  # Flower logs every exchange at INFO
    started = time.perf_counter()
    with TreeMemorySampler(os.getpid()) as memory:
        run_simulation(
            server_app=server_app, client_app=client_app, num_supernodes=case.firms, backend_config=backend_config
        )
    simulation_s = time.perf_counter() - started
    if outcome.error is None and outcome.final_weights is None:
        outcome.error = "the ServerApp ended without a result; see Flower's messages above"
    startup = None if outcome.first_round_started is None else outcome.first_round_started - started
    return CaseRun(case, outcome, read_firm_lines(log_dir), startup, simulation_s, memory.peak_mib)


RESULT_FILE = "result.json"
FINAL_WEIGHTS_FILE = "final_weights.npy"
ERROR_FILE = "error.txt"  # the traceback of a case whose process failed outside the ServerApp


def save_run(run: CaseRun, work_dir: Path) -> None:
    """Write a finished case where the parent process can read it back (`load_run`)."""
    outcome = run.outcome
    payload = {
        "case": run.case.to_dict(),
        "rounds": outcome.rounds,
        "protocol": outcome.protocol,
        "error": outcome.error,
        "firm_lines": run.firm_lines,
        "startup_s": run.startup_s,
        "simulation_s": run.simulation_s,
        "peak_rss_mib": run.peak_rss_mib,
    }
    (work_dir / RESULT_FILE).write_text(json.dumps(payload, default=str))
    if outcome.final_weights is not None:
        np.save(work_dir / FINAL_WEIGHTS_FILE, outcome.final_weights)


def load_run(work_dir: Path) -> CaseRun:
    payload = json.loads((work_dir / RESULT_FILE).read_text())
    weights_path = work_dir / FINAL_WEIGHTS_FILE
    outcome = ServerOutcome(
        rounds=payload["rounds"],
        protocol=payload["protocol"],
        final_weights=np.load(weights_path) if weights_path.exists() else None,
        error=payload["error"],
    )
    return CaseRun(
        Case(**payload["case"]),
        outcome,
        payload["firm_lines"],
        payload["startup_s"],
        payload["simulation_s"],
        payload["peak_rss_mib"],
    )


def run_in_child(case_fields: dict[str, Any], work_dir: str) -> None:
    """Entry point of the process that runs one case, in a session of its own so that the parent can
    stop it, with the Ray processes it started, if it runs past its time."""
    os.setsid()
    directory = Path(work_dir)
    try:
        run = simulate(Case(**case_fields), directory)
    except BaseException as err:
        (directory / ERROR_FILE).write_text("".join(traceback.format_exception(err)))
        raise
    save_run(run, directory)
