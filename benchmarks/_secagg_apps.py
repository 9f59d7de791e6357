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
- ours: the same round through SiloBridge's secure aggregation, sequenced by the driver the
  coordinator uses (`privacy.secagg.driver`, over this benchmark's Grid transport):
  `resolve_aggregation` + `SecureSumServer` on the server, `FirmSecureSum` on the firm with its
  state in `context.state.config_records["secagg"]`; key sessions of `rounds_per_session` sums (two
  exchanges: advertise, share), the masked-input request riding on the train message, one
  `query.secagg_unmask` exchange per sum.
- flower_secaggplus (`_secagg_flower`): Flower's legacy SecAgg+ (`SecAggPlusWorkflow` in a
  `DefaultWorkflow`, legacy `FedAvg`, a `ClientApp(client_fn=..., mods=[secaggplus_mod])` whose
  NumPyClient returns the global weights plus the same update), the only way Flower 1.41 offers it.

The synthetic federation is `_secagg_case`; the instrumentation, identical for all three, is
`_secagg_measure`. Server: a Grid wrapper times every exchange (from the push of its messages to
the pull of its last reply: the round trip including the firms' work; all three pull replies with
`federation.exchange`'s schedule), and each method times its own steps. Firms: an outermost client
mod takes `time.process_time` around everything the ClientApp does for a message and counts the
payload down and up (`payload_bytes`), one JSON line per message in a file per process, with the
CPU seconds of the named steps (`Probe`; the workload is the step `train`). Every method runs
through the product's launcher (`federation.launch`).
"""

from __future__ import annotations

import json
import os
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from benchmarks._secagg_case import (
    BENCH,
    EXCHANGE_TIMEOUT_S,
    UPDATE,
    WEIGHT,
    WEIGHTS,
    BenchmarkError,
    Case,
    dropping,
    firm_id,
    firm_update,
    firm_weight,
    ours_layout,
    ours_spec,
)
from benchmarks._secagg_flower import flower_apps
from benchmarks._secagg_measure import (
    ServerOutcome,
    Stopwatch,
    _check_failures,
    _dropout_reply,
    _round_record,
    _server_app,
    _vanishes,
    answer_warmup,
    measure_mod,
    message_round,
    probe_step,
    read_firm_lines,
    train_locally,
    warm_up,
    warmup_mod,
)
from silobridge.clients.secure_sum import FirmSecureSum
from silobridge.contract.config import AggregationSpec
from silobridge.federation.exchange import Replies, exchange
from silobridge.federation.launch import launch
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
from silobridge.privacy.secagg.layout import CLIPPED
from silobridge.privacy.secagg.messages import (
    AdvertiseRequest,
    MaskedInput,
    MaskedInputRequest,
    Roster,
    UnmaskRequest,
)
from silobridge.server.secure_sum import SecureSumServer, resolve_aggregation

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
            content = RecordDict({WEIGHTS: arrays_record({WEIGHTS: weights}, pack=False), BENCH: _round_record(r)})
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
                UPDATE: arrays_record({UPDATE: update}, pack=False),
                WEIGHT: MetricRecord({WEIGHT: firm_weight(case.seed, partition)}),
            }
        )
        return Message(content, reply_to=message)

    return _server_app(case, outcome, run), client


# -- ours --------------------------------------------------------------------------------------------


class _OursTransport:
    """Our protocol's stages over the timed Grid, for the driver: the masked-input request rides on the
    train message with the round's global weights; only the drawn unmask dropouts may fail.

    Replies are parsed lazily (generators), so that parsing counts in the server step that reads them,
    as the step timers expect.
    """

    def __init__(
        self, case: Case, grid: Grid, node_of: dict[str, int], spec_record: ConfigRecord, layout_wire: ConfigRecord
    ):
        self.case, self.grid, self.node_of = case, grid, node_of
        self.spec_record, self.layout_wire = spec_record, layout_wire
        self.round = 0
        self.weights: Any = None  # the round's global weights, as an ArrayRecord

    def _send(self, message_type: str, firms: Iterable[str], records: dict[str, Any]) -> Replies:
        content = {RUN: self.spec_record, BENCH: _round_record(self.round), **records}
        requests = [(self.node_of[f], message_type, RecordDict(content)) for f in firms]
        return exchange(self.grid, requests, timeout_s=EXCHANGE_TIMEOUT_S)

    @staticmethod
    def _require(replies: Replies, what: str) -> None:
        if replies.failed:
            raise BenchmarkError(f"{what} failed: {sorted(replies.failed.values())}")

    @staticmethod
    def _messages(replies: Replies) -> Iterator[tuple[str, dict[str, Any]]]:
        return ((firm_id(n), dict(c.config_records[SECAGG])) for (n, _), c in replies.ok.items())

    def advertise(self, request: AdvertiseRequest, firms: Sequence[str]) -> Iterator[tuple[str, dict[str, Any]]]:
        replies = self._send("query.secagg_advertise", firms, {SECAGG: ConfigRecord(request.to_wire())})
        self._require(replies, "advertise keys")
        return self._messages(replies)

    def share_keys(self, roster: Roster) -> Iterator[tuple[str, dict[str, Any]]]:
        replies = self._send("query.secagg_share", roster.firms, {SECAGG: ConfigRecord(roster.to_wire())})
        self._require(replies, "share keys")
        return self._messages(replies)

    def masked_inputs(self, requests: dict[str, MaskedInputRequest]) -> Iterator[tuple[str, MaskedInput]]:
        messages = []
        for firm, request in requests.items():
            content = {
                RUN: self.spec_record,
                BENCH: _round_record(self.round),
                WEIGHTS: self.weights,
                LAYOUT: self.layout_wire,
                SECAGG: ConfigRecord(request.to_wire()),
            }
            messages.append((self.node_of[firm], "train", RecordDict(content)))
        replies = exchange(self.grid, messages, timeout_s=EXCHANGE_TIMEOUT_S)
        self._require(replies, f"masked input, round {self.round}")
        return (
            (
                firm_id(node),
                MaskedInput.from_wire(
                    dict(content.config_records[SECAGG]),
                    expected_sender=firm_id(node),
                    vector=record_arrays(content.array_records[MASKED])["vector"],
                ),
            )
            for (node, _), content in replies.ok.items()
        )

    def unmask(self, request: UnmaskRequest) -> Iterator[tuple[str, dict[str, Any]]]:
        case, r = self.case, self.round
        replies = self._send("query.secagg_unmask", request.survivors, {SECAGG: ConfigRecord(request.to_wire())})
        _check_failures(replies, len(dropping(case.seed, r, case.firms, case.dropout)), f"unmask, round {r}")
        return self._messages(replies)


def ours_apps(case: Case, log_dir: str, outcome: ServerOutcome) -> tuple[ServerApp, ClientApp]:
    def run(grid: Grid, context: Context, stopwatch: Stopwatch) -> None:
        nodes = warm_up(grid, case.firms)
        stopwatch.take()
        node_of = {firm_id(node): node for node in nodes}
        spec = resolve_aggregation(ours_spec(case), case.firms)
        secure = SecureSumServer(spec, run_id=secagg_run_id(context.run_id))
        driver = secure.driver
        layout = ours_layout(case.params, spec)
        transport = _OursTransport(
            case, grid, node_of, ConfigRecord({"spec": spec.model_dump_json()}), layout_record(layout)
        )
        outcome.protocol = {
            **secure.describe(case.firms),
            "layout": layout.describe(),
            "vector_words": layout.length,
        }
        weights = np.zeros(case.params, dtype=np.float32)
        outcome.first_round_started = time.perf_counter()
        for r in range(1, case.rounds + 1):
            transport.round = r
            setup: dict[str, Any] = {}
            if driver.needs_session():  # key agreement for the next rounds_per_session sums
                with stopwatch.time("setup"):
                    driver.open_session(transport, list(node_of))
                setup = stopwatch.take()
            started = time.perf_counter()
            transport.weights = arrays_record({WEIGHTS: weights}, pack=False)
            ring_sum = driver.run_round(transport, layout.length, timer=stopwatch.time)
            with stopwatch.time("finish"):
                result = secure.decode(ring_sum, layout, case.firms)
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
        content = RecordDict(
            {SECAGG: ConfigRecord(release.message), MASKED: arrays_record({"vector": release.vector}, pack=False)}
        )
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
    """Run `case` on Flower's simulation runtime in this process (Ray backend, one CPU per virtual node, two
    CPUs in all), through the product's launcher."""
    from benchmarks._common import TreeMemorySampler

    log_dir = work_dir / f"{case.method}-firms"
    log_dir.mkdir(parents=True, exist_ok=False)
    outcome = ServerOutcome()
    server_app, client_app = APPS[case.method](case, str(log_dir), outcome)
    started = time.perf_counter()
    with TreeMemorySampler(os.getpid()) as memory:
        launch(server_app, client_app, num_supernodes=case.firms, cpus=2)  # Flower logs warnings and errors only
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
