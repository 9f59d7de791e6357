"""The server's side of a run, over a Flower Grid: who is there, baselines, rounds, final evaluation.

Thin orchestration: the maths lives in `server.strategy` (FedAvg), the sums in
`server.aggregation`, the metrics in `silobridge.stats`. Each step is one exchange of messages;
both models train in the same exchange. Every per-round record passes through the observer.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from flwr.app import ConfigRecord, RecordDict
from flwr.serverapp import Grid

from clients.firm import Normaliser
from clients.models import MODEL_KINDS, ModelKind, build_model, state_to_arrays
from federation.exchange import Replies, exchange, wait_for_nodes
from federation.records import (
    INSTRUCTION,
    NORMALISER,
    REPLY,
    VECTORS,
    WEIGHTS,
    arrays_record,
    record_arrays,
    request_content,
)
from federation.settings import RunSettings
from server.aggregation import PlainSum, SumResult
from server.strategy import FedAvg
from silobridge.arrays import flatten, unflatten
from silobridge.errors import FederationError, ProtocolError
from silobridge.messages import BaselineInstruction, FirmManifest
from silobridge.stats import (
    GROUPS,
    DemandErrorStats,
    Moments,
    RiskStats,
    demand_metrics_by_group,
    risk_metrics_by_group,
)

STAT_SIZE = {"demand": DemandErrorStats.SIZE * len(GROUPS), "risk": RiskStats.SIZE * len(GROUPS)}


def metrics_by_group(kind: str, vector: np.ndarray) -> dict[str, dict[str, float]]:
    return demand_metrics_by_group(vector) if kind == "demand" else risk_metrics_by_group(vector)


class RunObserver(Protocol):
    """Receives progress; the rich display and the run directory's metrics file both implement it."""

    def stage(self, name: str) -> None: ...

    def round_done(self, record: dict[str, Any]) -> None: ...


@dataclass
class FederationOutcome:
    """What the federated part of a run produced; the ServerApp adds centralised baselines and writes it out."""

    manifests: dict[int, FirmManifest]
    normaliser: Normaliser
    weights: dict[str, OrderedDict[str, np.ndarray]]
    federated: dict[str, np.ndarray]  # final group-slotted statistics per model
    baselines: dict[str, np.ndarray]  # "demand/local_only", "demand/naive", "risk/local_only"
    history: list[dict[str, Any]] = field(default_factory=list)
    dropped: list[dict[str, Any]] = field(default_factory=list)


class Federation:
    """One run's conversation with the firms over a Grid."""

    def __init__(self, grid: Grid, settings: RunSettings, observer: RunObserver):
        self.grid = grid
        self.settings = settings
        self.spec = settings.spec
        self.observer = observer
        self.aggregator = PlainSum()
        self.manifests: dict[int, FirmManifest] = {}
        self.dropped: list[dict[str, Any]] = []
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
        self.min_firms = training.min_firms or len(settings.scenario.firms)

    # -- plumbing ---------------------------------------------------------------------------------

    def _firm(self, node: int) -> str:
        return self.manifests[node].firm_id if node in self.manifests else f"node {node}"

    def _send(self, requests: list[tuple[int, str, RecordDict]], stage: str, *, round_: int | None = None) -> Replies:
        replies = exchange(self.grid, requests, timeout_s=self.settings.round_timeout_s)
        for (node, message_type), reason in sorted(replies.failed.items()):
            self.dropped.append(
                {"stage": stage, "round": round_, "firm": self._firm(node), "message": message_type, "reason": reason}
            )
        return replies

    def _require(self, replies: Replies, stage: str) -> None:
        """Setup stages need every firm: a failure there is a misconfigured federation, not a dropout."""
        if replies.failed:
            lines = [
                f"  - firm '{self._firm(node)}' ({mt}): {reason}"
                for (node, mt), reason in sorted(replies.failed.items())
            ]
            raise FederationError(f"{stage} failed for {len(lines)} firm(s):\n" + "\n".join(lines))

    def _sum(self, contributions: dict[str, np.ndarray], *, length: int, stage: str) -> SumResult:
        result = self.aggregator.sum(contributions, length=length, stage=stage)
        for firm, reason in result.rejected.items():
            self.dropped.append({"stage": stage, "firm": firm, "reason": reason})
        return result

    def _vector(self, content: RecordDict, name: str, node: int, stage: str) -> np.ndarray:
        try:
            return np.asarray(record_arrays(content.array_records[VECTORS])[name])
        except KeyError:
            raise ProtocolError(f"reply lacks vector '{name}'", firm=self._firm(node), stage=stage) from None

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
        return self.manifests

    def feature_normaliser(self) -> Normaliser:
        """Federation-wide mean and std of the risk features, from summed moments."""
        self.observer.stage("feature moments")
        replies = self._send([(n, "query.moments", request_content(self.spec)) for n in self.manifests], "moments")
        self._require(replies, "moments")
        d = len(self.spec.data.risk_features)
        vectors = {self._firm(n): self._vector(c, "risk_moments", n, "moments") for (n, _), c in replies.ok.items()}
        total = self._sum(vectors, length=1 + 2 * d, stage="moments").total
        moments = Moments.from_vector(total)
        return Normaliser(moments.mean(), moments.std())

    def local_baselines(self) -> dict[str, np.ndarray]:
        """Each firm fits local-only models on its own data; only their group-slotted test statistics come back."""
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
        content = request_content(self.spec, **{INSTRUCTION: ConfigRecord(instruction.to_config())})
        replies = self._send([(n, "train.baselines", content) for n in self.manifests], "baselines")
        self._require(replies, "baselines")
        out: dict[str, np.ndarray] = {}
        for key in ("demand/local_only", "demand/naive", "risk/local_only"):
            kind = key.split("/")[0]
            vectors = {}
            for (node, _), content_ in replies.ok.items():
                arrays = record_arrays(content_.array_records[VECTORS])
                if key in arrays:
                    vectors[self._firm(node)] = arrays[key]
            if vectors:
                out[key] = self._sum(vectors, length=STAT_SIZE[kind], stage="baselines").total
        return out

    def _model_request(
        self, kind: ModelKind, weights: dict[str, np.ndarray], norm: Normaliser, **extra: Any
    ) -> RecordDict:
        records: dict[str, Any] = {WEIGHTS: arrays_record(weights), **extra}
        if kind == "risk":
            records[NORMALISER] = arrays_record({"mean": norm.mean, "std": norm.std})
        return request_content(self.spec, **records)

    def train(self, norm: Normaliser) -> tuple[dict[str, OrderedDict[str, np.ndarray]], list[dict[str, Any]]]:
        """FedAvg rounds; each round trains both models in one exchange and evaluates the models it received."""
        seed = self.settings.scenario.seed
        weights = {kind: state_to_arrays(build_model(kind, self.spec, seed=seed)) for kind in MODEL_KINDS}
        trains = {kind: [n for n, m in self.manifests.items() if m.trains(kind)] for kind in MODEL_KINDS}
        rounds = self.settings.scenario.training.rounds
        history: list[dict[str, Any]] = []
        for server_round in range(1, rounds + 1):
            self.observer.stage(f"round {server_round}/{rounds}")
            started = time.monotonic()
            instruction = ConfigRecord(self.strategy.configure_train(server_round).to_config())
            requests = [
                (node, f"train.{kind}", self._model_request(kind, weights[kind], norm, **{INSTRUCTION: instruction}))
                for kind in MODEL_KINDS
                for node in trains[kind]
            ]
            replies = self._send(requests, "train", round_=server_round)
            for kind in MODEL_KINDS:
                ok = {node: c for (node, mt), c in replies.ok.items() if mt == f"train.{kind}"}
                if not trains[kind]:
                    continue
                if len(ok) < min(self.min_firms, len(trains[kind])):
                    raise FederationError(
                        f"round {server_round}, {kind}: only {len(ok)} of {len(trains[kind])} firms answered "
                        f"(at least {min(self.min_firms, len(trains[kind]))} needed); see the dropout log"
                    )
                record = self._aggregate(kind, server_round, weights, ok)
                record["seconds"] = round(time.monotonic() - started, 3)
                history.append(record)
                self.observer.round_done(record)
        return weights, history

    def _aggregate(
        self,
        kind: ModelKind,
        server_round: int,
        weights: dict[str, OrderedDict[str, np.ndarray]],
        ok: dict[int, RecordDict],
    ) -> dict[str, Any]:
        stage = f"train.{kind}"
        flat = flatten(weights[kind])
        updates, evaluations, loss_terms = {}, {}, {}
        for node, content in ok.items():
            firm = self._firm(node)
            reply = content.config_records[REPLY]
            weight = float(reply["weight"])
            updates[firm] = np.concatenate([self._vector(content, "weighted_delta", node, stage), [weight]])
            evaluations[firm] = self._vector(content, "evaluation", node, stage)
            loss_terms[firm] = np.array([weight * float(reply["loss"]), weight])
        summed = self._sum(updates, length=flat.size + 1, stage=stage)
        weight_sum = summed.total[-1]
        weights[kind] = unflatten(self.strategy.aggregate_train(flat, summed.total[:-1], weight_sum), weights[kind])
        evaluation = self._sum(evaluations, length=STAT_SIZE[kind], stage=stage).total
        loss = self._sum(loss_terms, length=2, stage=stage).total
        return {
            "round": server_round,
            "model": kind,
            "firms": len(summed.contributors),
            "train_loss": float(loss[0] / loss[1]) if loss[1] > 0 else None,
            # Statistics the firms computed on the model they received: the model after round - 1.
            "evaluated_round": server_round - 1,
            "metrics": metrics_by_group(kind, evaluation),
        }

    def evaluate(self, weights: dict[str, OrderedDict[str, np.ndarray]], norm: Normaliser) -> dict[str, np.ndarray]:
        """Test statistics of the final models."""
        self.observer.stage("final evaluation")
        requests = [
            (node, f"evaluate.{kind}", self._model_request(kind, weights[kind], norm))
            for kind in MODEL_KINDS
            for node, m in self.manifests.items()
            if m.trains(kind)
        ]
        replies = self._send(requests, "evaluate")
        out: dict[str, np.ndarray] = {}
        for kind in MODEL_KINDS:
            vectors = {
                self._firm(node): self._vector(c, "evaluation", node, "evaluate")
                for (node, mt), c in replies.ok.items()
                if mt == f"evaluate.{kind}"
            }
            if vectors:
                out[kind] = self._sum(vectors, length=STAT_SIZE[kind], stage=f"evaluate.{kind}").total
        return out


def run_federation(grid: Grid, settings: RunSettings, observer: RunObserver) -> FederationOutcome:
    federation = Federation(grid, settings, observer)
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
        history=history,
        dropped=federation.dropped,
    )
