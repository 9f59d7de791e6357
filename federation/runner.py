"""The server's side of a run, over a Flower Grid: who is there, baselines, rounds, final evaluation.

Thin orchestration: FedAvg lives in `server.strategy`, the shapes of the sums in `server.layouts`,
secure aggregation's server half in `server.secure_sum`, metrics in `silobridge.stats`. Every step
that releases something is one sum over firms, carried by one message per firm (both models train
in the same message); under secure aggregation each sum adds one unmask exchange, and every
`rounds_per_session` sums two key-agreement exchanges.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp import Grid

from clients.firm import Normaliser
from clients.models import MODEL_KINDS, build_model, state_to_arrays
from federation.exchange import Replies, exchange, wait_for_nodes
from federation.records import (
    INSTRUCTION,
    LAYOUT,
    MASKED,
    NORMALISER,
    REPLY,
    SECAGG,
    SEGMENTS,
    arrays_record,
    layout_record,
    record_arrays,
    request_content,
    secagg_run_id,
    weights_key,
)
from federation.settings import RunSettings
from privacy.secagg.layout import CLIPPED, VectorLayout
from privacy.secagg.messages import MaskedInput
from server.aggregation import PlainSum
from server.layouts import baselines_layout, evaluation_layout, moments_layout, training_layout
from server.secure_sum import SecureSumServer
from server.strategy import FedAvg
from silobridge.arrays import flatten, unflatten
from silobridge.errors import FederationError, ProtocolError
from silobridge.messages import BaselineInstruction, FirmManifest
from silobridge.stats import Moments, demand_metrics_by_group, risk_metrics_by_group


def metrics_by_group(kind: str, vector: np.ndarray) -> dict[str, dict[str, float]]:
    return demand_metrics_by_group(vector) if kind == "demand" else risk_metrics_by_group(vector)


class RunObserver(Protocol):
    """Receives progress; the rich display and the run directory's metrics file both implement it."""

    def stage(self, name: str) -> None: ...

    def round_done(self, record: dict[str, Any]) -> None: ...


@dataclass
class SumOutcome:
    """One released sum: segments, the firms in it, and how many values quantisation clipped."""

    segments: dict[str, np.ndarray]
    contributors: list[str]
    clipped: int


@dataclass
class FederationOutcome:
    """What the federated part of a run produced; the ServerApp adds centralised baselines and writes it out."""

    manifests: dict[int, FirmManifest]
    normaliser: Normaliser
    weights: dict[str, OrderedDict[str, np.ndarray]]
    federated: dict[str, np.ndarray]  # final group-slotted statistics per model
    baselines: dict[str, np.ndarray]  # "demand/local_only", "demand/naive", "risk/local_only"
    aggregation: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)


Records = dict[str, ArrayRecord | ConfigRecord]

MAX_SECURE_ATTEMPTS = 3
"""A secure sum that aborts (too few survivors) is tried again, each time under a new round number."""


class Federation:
    """One run's conversation with the firms over a Grid."""

    def __init__(self, grid: Grid, settings: RunSettings, observer: RunObserver, *, flower_run_id: int):
        self.grid = grid
        self.settings = settings
        self.spec = settings.spec
        self.observer = observer
        self.plain = PlainSum()
        self.secure = (
            SecureSumServer(self.spec.aggregation, run_id=secagg_run_id(flower_run_id))
            if self.spec.aggregation.mode == "secure"
            else None
        )
        self.manifests: dict[int, FirmManifest] = {}
        self.node_of: dict[str, int] = {}
        self.dropped: list[dict[str, Any]] = []
        self.clipped_total = 0
        training = settings.scenario.training
        self.strategy = FedAvg(
            local_epochs=training.local_epochs,
            batch_size=training.batch_size,
            optimiser=training.optimiser,
            learning_rate=training.learning_rate,
            momentum=training.momentum,
            weight_decay=training.weight_decay,
            proximal_mu=training.proximal_mu if training.strategy == "fedprox" else 0.0,
            seed=settings.scenario.seed,
        )
        num_firms = len(settings.scenario.firms)
        self.min_firms = training.min_firms or max(2, math.ceil(num_firms / 2))

    # -- plumbing ---------------------------------------------------------------------------------

    def _firm(self, node: int) -> str:
        return self.manifests[node].firm_id if node in self.manifests else f"node {node}"

    def _send(self, requests: list[tuple[int, str, RecordDict]], stage: str) -> Replies:
        replies = exchange(self.grid, requests, timeout_s=self.settings.round_timeout_s)
        for (node, message_type), reason in sorted(replies.failed.items()):
            self.dropped.append({"stage": stage, "firm": self._firm(node), "message": message_type, "reason": reason})
        return replies

    def _require(self, replies: Replies, stage: str) -> None:
        """Setup stages need every firm: a failure there is a misconfigured federation, not a dropout."""
        if replies.failed:
            lines = [
                f"  - firm '{self._firm(n)}' ({mt}): {reason}" for (n, mt), reason in sorted(replies.failed.items())
            ]
            raise FederationError(f"{stage} failed for {len(lines)} firm(s):\n" + "\n".join(lines))

    def _drop(self, firm: str, stage: str, reason: str) -> None:
        self.dropped.append({"stage": stage, "firm": firm, "reason": reason})

    # -- sums -------------------------------------------------------------------------------------

    def _sum(
        self, message_type: str, records: Records, layout: VectorLayout, nodes: Iterable[int], stage: str
    ) -> SumOutcome:
        """One sum over `nodes`' answers to `message_type`, in the clear or securely."""
        nodes = list(nodes)
        if self.secure is None:
            requests = [(n, message_type, self._content(records, layout)) for n in nodes]
            replies = self._send(requests, stage)
            contributions = {}
            for (node, _), content in replies.ok.items():
                if SEGMENTS in content.array_records:
                    contributions[self._firm(node)] = record_arrays(content.array_records[SEGMENTS])
                else:
                    self._drop(self._firm(node), stage, "reply carries no segments")
            result = self.plain.sum(contributions, layout, stage=stage)
            for firm, reason in result.rejected.items():
                self._drop(firm, stage, reason)
            return SumOutcome(result.segments, result.contributors, 0)
        return self._secure_sum(self.secure, message_type, records, layout, nodes, stage)

    def _content(self, records: dict[str, ArrayRecord | ConfigRecord], layout: VectorLayout) -> RecordDict:
        return request_content(self.spec, **records, **{LAYOUT: layout_record(layout)})

    def _secagg_replies(self, replies: Replies, stage: str) -> dict[str, dict[str, Any]]:
        """The protocol message in each reply, by firm; a reply without one counts as a dropout."""
        out = {}
        for (node, _), content in replies.ok.items():
            if SECAGG in content.config_records:
                out[self._firm(node)] = dict(content.config_records[SECAGG])
            else:
                self._drop(self._firm(node), stage, "reply carries no secure-aggregation message")
        return out

    def _open_session(self, secure: SecureSumServer, nodes: list[int]) -> None:
        """Key agreement for the next `rounds_per_session` sums: advertise keys, then share them."""
        firms = [self._firm(n) for n in nodes]
        advertise = secure.open_session(firms)
        replies = self._send(
            [
                (n, "query.secagg_advertise", request_content(self.spec, **{SECAGG: ConfigRecord(advertise.to_wire())}))
                for n in nodes
            ],
            "secagg: advertise keys",
        )
        roster = secure.receive_advertise(self._secagg_replies(replies, "secagg: advertise keys"))
        roster_wire = ConfigRecord(roster.to_wire())
        replies = self._send(
            [
                (self.node_of[f], "query.secagg_share", request_content(self.spec, **{SECAGG: roster_wire}))
                for f in roster.firms
            ],
            "secagg: share keys",
        )
        secure.receive_shares(self._secagg_replies(replies, "secagg: share keys"))

    def _secure_sum(
        self,
        secure: SecureSumServer,
        message_type: str,
        records: Records,
        layout: VectorLayout,
        nodes: list[int],
        stage: str,
    ) -> SumOutcome:
        """A secure sum; an aborted one (too few survivors somewhere) is retried under a new round number."""
        last: ProtocolError | None = None
        for attempt in range(1, MAX_SECURE_ATTEMPTS + 1):
            try:
                return self._secure_sum_once(secure, message_type, records, layout, nodes, stage)
            except ProtocolError as err:
                last = err
                self.dropped.append(
                    {"stage": stage, "firm": None, "reason": f"secure sum aborted (attempt {attempt}): {err}"}
                )
        raise FederationError(f"{stage}: the secure sum aborted {MAX_SECURE_ATTEMPTS} times; last: {last}")

    def _secure_sum_once(
        self,
        secure: SecureSumServer,
        message_type: str,
        records: Records,
        layout: VectorLayout,
        nodes: list[int],
        stage: str,
    ) -> SumOutcome:
        if secure.needs_session():
            self._open_session(secure, list(self.manifests))
        wanted = {self._firm(n) for n in nodes}
        requests = secure.start_round(layout, leave_out=[f for f in self.node_of if f not in wanted])
        messages = [
            (
                self.node_of[firm],
                message_type,
                self._content({**records, SECAGG: ConfigRecord(request.to_wire())}, layout),
            )
            for firm, request in requests.items()
        ]
        replies = self._send(messages, stage)
        masked: list[tuple[str, MaskedInput]] = []
        for (node, _), content in replies.ok.items():
            firm = self._firm(node)
            try:
                vector = record_arrays(content.array_records[MASKED])["vector"]
                masked.append(
                    (
                        firm,
                        MaskedInput.from_wire(
                            dict(content.config_records[SECAGG]), expected_sender=firm, vector=vector
                        ),
                    )
                )
            except (KeyError, ProtocolError) as err:
                self._drop(firm, stage, f"malformed masked input: {err}")
        unmask = secure.receive_masked_inputs(masked)
        unmask_wire = ConfigRecord(unmask.to_wire())
        replies = self._send(
            [
                (self.node_of[f], "query.secagg_unmask", request_content(self.spec, **{SECAGG: unmask_wire}))
                for f in unmask.survivors
            ],
            f"{stage}: unmask",
        )
        result = secure.finish(
            self._secagg_replies(replies, f"{stage}: unmask"),
            layout,
            len(self.manifests),
        )
        for firm, error in sorted(result.record.errors.items()):  # silent dropouts are logged by the exchange
            self._drop(firm, f"{stage}: secure aggregation", str(error))
        clipped = int(round(float(result.segments[CLIPPED][0])))
        self.clipped_total += clipped
        return SumOutcome(result.segments, list(result.contributors), clipped)

    # -- stages -----------------------------------------------------------------------------------

    def connect(self) -> dict[int, FirmManifest]:
        expected = len(self.settings.scenario.firms)
        self.observer.stage(f"waiting for {expected} firms")
        nodes = wait_for_nodes(self.grid, expected, timeout_s=self.settings.node_wait_s)
        replies = self._send([(n, "query.manifest", request_content(self.spec)) for n in nodes], "manifest")
        self._require(replies, "manifest")
        for (node, _), content in replies.ok.items():
            self.manifests[node] = FirmManifest.from_config(content.config_records[REPLY], firm=f"node {node}")
        ids = [m.firm_id for m in self.manifests.values()]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise FederationError(f"several nodes claim the same firm: {', '.join(duplicates)}")
        self.node_of = {m.firm_id: n for n, m in self.manifests.items()}
        return self.manifests

    def _holders(self, kind: str) -> list[int]:
        return [n for n, m in self.manifests.items() if m.trains(kind)]

    def feature_normaliser(self) -> Normaliser:
        """Federation-wide mean and std of the risk features, from summed moments."""
        self.observer.stage("feature moments")
        layout = moments_layout(len(self.spec.data.risk_features), self.spec.aggregation)
        outcome = self._sum("query.moments", {}, layout, self.manifests, "moments")
        moments = Moments.from_vector(outcome.segments["risk_moments"])
        return Normaliser(moments.mean(), moments.std())

    def local_baselines(self) -> dict[str, np.ndarray]:
        """Each firm fits local-only models on its own data; only their summed test statistics come back."""
        self.observer.stage("local-only baselines")
        training = self.settings.scenario.training
        instruction = BaselineInstruction(
            max_epochs=self.settings.baseline_max_epochs,
            patience=self.settings.baseline_patience,
            batch_size=training.batch_size,
            optimiser=training.optimiser,
            learning_rate=training.learning_rate,
            momentum=training.momentum,
            weight_decay=training.weight_decay,
            seed=self.settings.scenario.seed,
        )
        layout = baselines_layout(self.spec.aggregation)
        records = {INSTRUCTION: ConfigRecord(instruction.to_config())}
        outcome = self._sum("train.baselines", records, layout, self.manifests, "baselines")
        return {name: value for name, value in outcome.segments.items() if name != CLIPPED}

    def _model_records(
        self, weights: dict[str, OrderedDict[str, np.ndarray]], norm: Normaliser
    ) -> dict[str, ArrayRecord]:
        records: dict[str, ArrayRecord] = {weights_key(kind): arrays_record(w) for kind, w in weights.items()}
        records[NORMALISER] = arrays_record({"mean": norm.mean, "std": norm.std})
        return records

    def train(self, norm: Normaliser) -> tuple[dict[str, OrderedDict[str, np.ndarray]], list[dict[str, Any]]]:
        """FedAvg rounds; each trains both models in one message per firm and evaluates the models it received."""
        seed = self.settings.scenario.seed
        kinds = [kind for kind in MODEL_KINDS if self._holders(kind)]
        weights = {kind: state_to_arrays(build_model(kind, self.spec, seed=seed)) for kind in kinds}
        layout = training_layout({kind: flatten(weights[kind]).size for kind in kinds}, self.spec.aggregation)
        rounds = self.settings.scenario.training.rounds
        history: list[dict[str, Any]] = []
        for server_round in range(1, rounds + 1):
            self.observer.stage(f"round {server_round}/{rounds}")
            started = time.monotonic()
            records = {
                **self._model_records(weights, norm),
                INSTRUCTION: ConfigRecord(self.strategy.configure_train(server_round).to_config()),
            }
            outcome = self._sum("train", records, layout, self.manifests, f"round {server_round}")
            if len(outcome.contributors) < min(self.min_firms, len(self.manifests)):
                needed = min(self.min_firms, len(self.manifests))
                raise FederationError(
                    f"round {server_round}: only {len(outcome.contributors)} of {len(self.manifests)} firms "
                    f"contributed (at least {needed} needed); see the dropout log"
                )
            seconds = round(time.monotonic() - started, 3)
            for kind in kinds:
                record = self._aggregate(kind, server_round, weights, outcome)
                record["seconds"] = seconds
                history.append(record)
                self.observer.round_done(record)
        return weights, history

    def _aggregate(
        self, kind: str, server_round: int, weights: dict[str, OrderedDict[str, np.ndarray]], outcome: SumOutcome
    ) -> dict[str, Any]:
        segments = outcome.segments
        weight_sum = float(segments[f"{kind}/weight"][0])
        flat = flatten(weights[kind])
        weights[kind] = unflatten(
            self.strategy.aggregate_train(flat, segments[f"{kind}/update"], weight_sum), weights[kind]
        )
        return {
            "round": server_round,
            "model": kind,
            "firms": len(outcome.contributors),
            "train_loss": float(segments[f"{kind}/loss"][0] / weight_sum) if weight_sum > 0 else None,
            "clipped_values": outcome.clipped,
            # Statistics the firms computed on the model they received: the model after round - 1.
            "evaluated_round": server_round - 1,
            "metrics": metrics_by_group(kind, segments[f"{kind}/eval"]),
        }

    def evaluate(self, weights: dict[str, OrderedDict[str, np.ndarray]], norm: Normaliser) -> dict[str, np.ndarray]:
        """Test statistics of the final models."""
        self.observer.stage("final evaluation")
        layout = evaluation_layout(tuple(weights), self.spec.aggregation)
        records = self._model_records(weights, norm)
        outcome = self._sum("evaluate", records, layout, self.manifests, "evaluate")
        return {kind: outcome.segments[f"{kind}/eval"] for kind in weights}

    def describe_aggregation(self) -> dict[str, Any]:
        if self.secure is None:
            return {"mode": "plain"}
        return {**self.secure.describe(len(self.manifests)), "clipped_values": self.clipped_total}


def run_federation(
    grid: Grid, settings: RunSettings, observer: RunObserver, *, flower_run_id: int
) -> FederationOutcome:
    federation = Federation(grid, settings, observer, flower_run_id=flower_run_id)
    manifests = federation.connect()
    norm = federation.feature_normaliser()
    baselines = federation.local_baselines()
    weights, history = federation.train(norm)
    final = federation.evaluate(weights, norm)
    return FederationOutcome(
        manifests=manifests,
        normaliser=norm,
        weights=weights,
        federated=final,
        baselines=baselines,
        aggregation=federation.describe_aggregation(),
        history=history,
        dropped=federation.dropped,
    )
