"""How `bench_secure_aggregation` measures every method alike, on the server and on the firms.

Server: a Grid wrapper (`TimedGrid`) times every exchange (from the push of its messages to the
pull of its last reply: the round trip including the firms' work; all three methods pull replies
with `federation.exchange`'s schedule), and each method times its own steps (`Stopwatch`). Firms:
an outermost client mod (`measure_mod`) takes `time.process_time` around everything the ClientApp
does for a message and counts the payload down and up (`payload_bytes`), one JSON line per message
in a file per process, with the CPU seconds of the named steps (`probe_step`).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.serverapp import Grid, ServerApp

from benchmarks._secagg_case import (
    BENCH,
    DROPOUT_CODE,
    DROPOUT_REASON,
    EXCHANGE_TIMEOUT_S,
    NODE_WAIT_S,
    WARMUP,
    BenchmarkError,
    Case,
    dropping,
    local_training,
)
from silobridge.federation.exchange import Replies, exchange, send_and_receive, wait_for_nodes

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
        replies = send_and_receive(self, list(messages), timeout_s=EXCHANGE_TIMEOUT_S if timeout is None else timeout)
        return [replies[i] for i in sorted(replies)]  # by the request each answers

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
