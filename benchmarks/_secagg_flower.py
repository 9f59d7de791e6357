"""Flower's legacy SecAgg+ as `bench_secure_aggregation`'s baseline method, instrumented like ours.

`SecAggPlusWorkflow` in a `DefaultWorkflow` with legacy `FedAvg`, and a `ClientApp(client_fn=...,
mods=[secaggplus_mod])` whose NumPyClient returns the global weights plus the same update as the
other methods: the only way Flower 1.41 offers it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from flwr.app import Context, Message
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import ClientAppCallable, Mod
from flwr.common import FitRes, Parameters, Scalar, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.common.secure_aggregation.secaggplus_constants import Stage
from flwr.server import LegacyContext, ServerConfig
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg as LegacyFedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.serverapp import Grid, ServerApp

from benchmarks._secagg_case import (
    DROPOUT_REASON,
    FLOWER_CLIPPING_RANGE,
    FLOWER_QUANTIZATION_RANGE,
    MAX_WEIGHT,
    BenchmarkError,
    Case,
    dropping,
    firm_update,
    firm_weight,
    security_parameters,
)
from benchmarks._secagg_measure import (
    ServerOutcome,
    Stopwatch,
    _dropout_reply,
    _server_app,
    _vanishes,
    measure_mod,
    message_round,
    message_stage,
    probe_step,
    train_locally,
    warm_up,
    warmup_mod,
)


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
