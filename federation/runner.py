"""The server's side of a run, over a Flower Grid: who is there, baselines, rounds, final evaluation.

Thin orchestration: FedAvg lives in `server.strategy`, the shapes of the sums in `server.layouts`,
secure aggregation's server half in `server.secure_sum`, metrics in `silobridge.stats`. Every step
that releases something is one sum over firms, carried by one message per firm (both models train
in the same message); under secure aggregation each sum adds one unmask exchange, and every
`rounds_per_session` sums two key-agreement exchanges.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp import Grid

from silobridge.clients.firm import Normaliser
from silobridge.clients.models import MODEL_KINDS, build_model, state_to_arrays
from silobridge.contract.arrays import flatten, unflatten
from silobridge.contract.efficiency_sums import EFFICIENCY_AFTER, EFFICIENCY_BEFORE, EfficiencyGroups
from silobridge.contract.messages import BaselineInstruction, FirmManifest
from silobridge.contract.stats import GROUPS, Moments, demand_metrics_by_group, risk_metrics_by_group
from silobridge.errors import BudgetExhausted, FederationError, ProtocolError
from silobridge.federation.deployment import DeployedOutcome, measure_deployment
from silobridge.federation.exchange import Replies, exchange, wait_for_nodes
from silobridge.federation.harness import SimulationHarness
from silobridge.federation.linear_run import LinearModels, model_families, train_linear
from silobridge.federation.records import (
    EFFICIENCY_GROUPS,
    INSTRUCTION,
    LAYOUT,
    MASKED,
    NORMALISER,
    REPLY,
    SECAGG,
    SEGMENTS,
    STAT_GROUPS,
    arrays_record,
    layout_record,
    record_arrays,
    request_content,
    secagg_run_id,
    weights_key,
)
from silobridge.federation.settings import RunSettings
from silobridge.privacy.dp import UNCLIPPED_SEGMENT, Sampling
from silobridge.privacy.ledger import PrivacyRun, Release
from silobridge.privacy.secagg.layout import CLIPPED, VectorLayout
from silobridge.privacy.secagg.messages import MaskedInput
from silobridge.server.aggregation import PlainSum
from silobridge.server.efficiency import Grouping, group_tiers
from silobridge.server.efficiency_release import RELEASE_ID, efficiency_event, noised, release_epsilon
from silobridge.server.layouts import (
    baselines_layout,
    efficiency_layout,
    evaluation_layout,
    moments_layout,
    training_layout,
)
from silobridge.server.secure_sum import SecureSumServer
from silobridge.server.stat_groups import StatGrouping, group_statistics
from silobridge.server.strategy import FedAvg


def dataset_party(firm: str, kind: str) -> str:
    """The ledger's name for one data set of one firm (record-level accounting)."""
    return f"{firm}/{kind}"


def metrics_by_group(kind: str, vector: np.ndarray, groups: tuple[str, ...] = GROUPS) -> dict[str, dict[str, float]]:
    """'all' and the named groups' metrics (only those released: see server/stat_groups.py)."""
    if kind == "demand":
        return demand_metrics_by_group(vector, groups)
    return risk_metrics_by_group(vector, groups)


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
    stopped: str | None = None  # why training ended early (a refused round), if it did
    efficiency: dict[str, np.ndarray] = field(default_factory=dict)  # "before"/"after" slotted sums
    efficiency_grouping: Grouping | None = None  # the slots the firms were assigned (from the manifests)
    efficiency_firms: dict[str, list[str]] = field(default_factory=dict)  # "before"/"after": firms in each sum
    efficiency_dp: dict[str, float] | None = None  # epsilon, delta, noise multiplier of a DP efficiency release
    released_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per model: groups shown besides 'all'
    groups_withheld: dict[str, str] = field(default_factory=dict)  # per model: why small/large are not shown
    families: tuple[str, ...] = ("mlp",)  # the global model families trained ("mlp", "linear")
    linear: LinearModels | None = None  # the global linear models, where trained
    deployed: DeployedOutcome | None = None  # simulation only: what each firm deployed, scored by the harness


Records = dict[str, ArrayRecord | ConfigRecord]

MAX_SECURE_ATTEMPTS = 3
"""A secure sum that aborts (too few survivors) is tried again, each time under a new round number."""


def baseline_instruction(settings: RunSettings) -> BaselineInstruction:
    """How every firm fits its local-only baselines: the run's training settings, with early stopping."""
    training = settings.scenario.training
    return BaselineInstruction(
        max_epochs=settings.baseline_max_epochs,
        patience=settings.baseline_patience,
        batch_size=training.batch_size,
        optimiser=training.optimiser,
        learning_rate=training.learning_rate,
        momentum=training.momentum,
        weight_decay=training.weight_decay,
        seed=settings.scenario.seed,
    )


class Federation:
    """One run's conversation with the firms over a Grid."""

    def __init__(
        self,
        grid: Grid,
        settings: RunSettings,
        observer: RunObserver,
        *,
        flower_run_id: int,
        harness: SimulationHarness | None = None,
    ):
        self.grid = grid
        self.settings = settings
        self.spec = settings.spec
        self.observer = observer
        self.harness = harness
        self.private = self.spec.privacy.enabled
        self.ledger: PrivacyRun | None = None  # opened once the firms are known (see run_federation)
        self.plan = settings.privacy_plan() if self.private else None
        # adaptive clipping's state: the clip norm the next round sends (firm-level central DP only)
        self.clipping = self.plan.clipping_state() if self.plan is not None and self.plan.adaptive else None
        self.stopped: str | None = None
        self.plain = PlainSum()
        self.secure = (
            SecureSumServer(self.spec.aggregation, run_id=secagg_run_id(flower_run_id))
            if self.spec.aggregation.mode == "secure"
            else None
        )
        self.manifests: dict[int, FirmManifest] = {}
        self.node_of: dict[str, int] = {}
        self.grouping: Grouping | None = None  # efficiency slots, fixed from the manifests at connect
        self.stat_grouping: dict[str, StatGrouping] = {}  # test-statistics slots per model, fixed at connect
        self.efficiency_firms: dict[str, list[str]] = {}
        self.dropped: list[dict[str, Any]] = []
        self.clipped_total = 0
        training = settings.scenario.training
        privacy = self.spec.privacy
        dpsgd = privacy.enabled and privacy.unit == "record"  # DP-SGD has its own epochs and step size
        self.strategy = FedAvg(
            local_epochs=privacy.local_epochs if dpsgd else training.local_epochs,
            batch_size=training.batch_size,
            optimiser=training.optimiser,
            learning_rate=privacy.learning_rate if dpsgd else training.learning_rate,
            momentum=training.momentum,
            weight_decay=training.weight_decay,
            proximal_mu=training.proximal_mu if training.strategy == "fedprox" else 0.0,
            seed=settings.scenario.seed,
        )
        self.min_firms = settings.min_firms

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

    def release_sum(
        self, message_type: str, records: Records, layout: VectorLayout, nodes: Iterable[int], stage: str
    ) -> SumOutcome:
        """One sum over `nodes` for a protocol beyond training (an analytics query step), as `_sum` does."""
        return self._sum(message_type, records, layout, nodes, stage)

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
        self.grouping = group_tiers(
            [m.tier for m in self.manifests.values() if m.has_demand], self.spec.inventory.min_firms_per_group
        )
        self.stat_grouping = {
            kind: group_statistics(
                [m.group for m in self.manifests.values() if m.trains(kind)], self.spec.inventory.min_firms_per_group
            )
            for kind in MODEL_KINDS
        }
        return self.manifests

    def released_groups(self, kind: str) -> tuple[str, ...]:
        """The groups whose metrics are shown besides 'all': under DP every group (the harness measures, no
        firm releases anything); without DP those the statistics slots release on their own."""
        if self.private:
            return GROUPS
        grouping = self.stat_grouping.get(kind)
        return grouping.assignment.released if grouping is not None else ()

    def groups_withheld(self) -> dict[str, str]:
        """Per model, why small and large are not released separately (runs without DP only)."""
        if self.private:
            return {}
        return {kind: g.withheld for kind, g in self.stat_grouping.items() if g.withheld is not None}

    def _stat_groups_record(self) -> dict[str, ConfigRecord]:
        """The test-statistics slots every request that releases test statistics carries."""
        if not self.stat_grouping:
            raise FederationError("statistics slots are assigned when the firms connect")
        values: dict[str, int | str] = {}
        for kind, grouping in self.stat_grouping.items():
            values.update(grouping.assignment.to_config(kind))
        return {STAT_GROUPS: ConfigRecord(values)}

    def _groups_record(self) -> dict[str, ConfigRecord]:
        """The efficiency slot assignment every request that releases efficiency sums carries."""
        return {EFFICIENCY_GROUPS: ConfigRecord(self._assignment().to_config())}

    def _assignment(self) -> EfficiencyGroups:
        if self.grouping is None:
            raise FederationError("efficiency slots are assigned when the firms connect")
        return self.grouping.assignment

    def _efficiency_holders(self, firms: list[str]) -> list[str]:
        """Of a sum's contributors, the firms whose efficiency totals are in it."""
        slots = self.grouping.assignment.slots if self.grouping is not None else {}
        manifests = [self.manifests[self.node_of[f]] for f in firms]
        return sorted(m.firm_id for m in manifests if m.has_demand and m.tier in slots)

    def _holders(self, kind: str) -> list[int]:
        return [n for n, m in self.manifests.items() if m.trains(kind)]

    def feature_normaliser(self) -> Normaliser:
        """Federation-wide mean and std of the risk features, from summed moments.

        Under DP the public ranges of the federation's schema scale the features instead: moments of
        the firms' data would be one more release to account.
        """
        if self.private:
            return Normaliser.from_ranges(self.spec.data.risk_feature_ranges, self.spec.data.risk_features)
        self.observer.stage("feature moments")
        layout = moments_layout(len(self.spec.data.risk_features), self.spec.aggregation)
        outcome = self._sum("query.moments", {}, layout, self.manifests, "moments")
        moments = Moments.from_vector(outcome.segments["risk_moments"])
        return Normaliser(moments.mean(), moments.std())

    def baseline_instruction(self) -> BaselineInstruction:
        return baseline_instruction(self.settings)

    def local_baselines(self) -> dict[str, np.ndarray]:
        """Each firm fits local-only models on its own data; only their summed test statistics come back.

        Under DP no firm releases test statistics: the simulation harness measures the baselines.
        """
        self.observer.stage("local-only baselines")
        instruction = self.baseline_instruction()
        if self.private:
            if self.harness is None:
                return {}  # a real federation under DP: firms release no test statistics, nothing is measured
            self.efficiency_firms["before"] = self._efficiency_holders(list(self.node_of))
            return self.harness.local_baselines(instruction, self._assignment())
        layout = baselines_layout(self.spec.aggregation)
        records = {
            INSTRUCTION: ConfigRecord(instruction.to_config()),
            **self._groups_record(),
            **self._stat_groups_record(),
        }
        outcome = self._sum("train.baselines", records, layout, self.manifests, "baselines")
        self.efficiency_firms["before"] = self._efficiency_holders(outcome.contributors)
        return {name: value for name, value in outcome.segments.items() if name != CLIPPED}

    def _model_records(
        self, weights: dict[str, OrderedDict[str, np.ndarray]], norm: Normaliser
    ) -> dict[str, ArrayRecord]:
        records: dict[str, ArrayRecord] = {weights_key(kind): arrays_record(w) for kind, w in weights.items()}
        records[NORMALISER] = arrays_record(norm.to_arrays())
        return records

    def train(self, norm: Normaliser) -> tuple[dict[str, OrderedDict[str, np.ndarray]], list[dict[str, Any]]]:
        """FedAvg rounds; each trains both models in one message per firm.

        Without DP the firms also score the models they received; under DP a budget check comes before
        every round (a refused round ends training, keeping the model so far), the round is recorded
        in the ledger after it, and the harness scores the models.
        """
        seed = self.settings.scenario.seed
        kinds = [kind for kind in MODEL_KINDS if self._holders(kind)]
        weights = {kind: state_to_arrays(build_model(kind, self.spec, seed=seed)) for kind in kinds}
        distributed = self.private and self.spec.privacy.unit == "firm" and self.spec.privacy.mechanism == "distributed"
        layout = training_layout(
            {kind: flatten(weights[kind]).size for kind in kinds},
            self.spec.aggregation,
            statistics=not self.private,
            integer_updates=distributed,
            unclipped_count=self.clipping is not None,
        )
        rounds = self.settings.scenario.training.rounds
        history: list[dict[str, Any]] = []
        for server_round in range(1, rounds + 1):
            self.observer.stage(f"round {server_round}/{rounds}")
            started = time.monotonic()
            try:
                participants = self._admit(server_round) if self.private else list(self.node_of)
            except BudgetExhausted as err:
                self.stopped = f"round {server_round} refused: {err}"
                self.observer.stage("stopped: privacy budget")
                break
            instruction = self.strategy.configure_train(server_round)
            if self.clipping is not None:
                instruction = instruction.model_copy(update={"clip_norm": self.clipping.clip_norm})
            records = {
                **self._model_records(weights, norm),
                INSTRUCTION: ConfigRecord(instruction.to_config()),
                **({} if self.private else self._stat_groups_record()),
            }
            nodes = [self.node_of[firm] for firm in participants]
            outcome = self._sum("train", records, layout, nodes, f"round {server_round}")
            needed = min(self.min_firms, len(self.manifests))
            if len(outcome.contributors) < needed:
                raise FederationError(
                    f"round {server_round}: only {len(outcome.contributors)} of {len(self.manifests)} firms "
                    f"contributed (at least {needed} needed); see the dropout log"
                )
            if self.private:
                spent = self._private_update(server_round, weights, outcome, participants)
                evaluation = self.harness.evaluate(weights, norm) if self.harness is not None else {}
            seconds = round(time.monotonic() - started, 3)
            for kind in kinds:
                if self.private:
                    record = self._round_record(kind, server_round, server_round, outcome, evaluation.get(kind))
                    record["epsilon"] = spent
                    if instruction.clip_norm is not None:
                        record["clip_norm"] = instruction.clip_norm
                else:
                    record = self._aggregate(kind, server_round, weights, outcome)
                record["seconds"] = seconds
                history.append(record)
                self.observer.round_done(record)
        return weights, history

    def _aggregate(
        self, kind: str, server_round: int, weights: dict[str, OrderedDict[str, np.ndarray]], outcome: SumOutcome
    ) -> dict[str, Any]:
        """FedAvg on the round's sums; the firms' statistics are of the model they received (round - 1)."""
        segments = outcome.segments
        weight_sum = float(segments[f"{kind}/weight"][0])
        flat = flatten(weights[kind])
        weights[kind] = unflatten(
            self.strategy.aggregate_train(flat, segments[f"{kind}/update"], weight_sum), weights[kind]
        )
        record = self._round_record(kind, server_round, server_round - 1, outcome, segments[f"{kind}/eval"])
        record["train_loss"] = float(segments[f"{kind}/loss"][0] / weight_sum) if weight_sum > 0 else None
        return record

    def _round_record(
        self, kind: str, server_round: int, evaluated: int, outcome: SumOutcome, evaluation: np.ndarray | None
    ) -> dict[str, Any]:
        """Under DP a real federation measures nothing on test data: its rounds carry no metrics."""
        return {
            "round": server_round,
            "model": kind,
            "firms": len(outcome.contributors),
            "train_loss": None,  # a private run does not release training losses
            "clipped_values": outcome.clipped,
            "evaluated_round": evaluated,
            "metrics": None if evaluation is None else metrics_by_group(kind, evaluation, self.released_groups(kind)),
        }

    # -- differential privacy ---------------------------------------------------------------------

    def accounted_parties(self) -> dict[str, str]:
        """What the ledger accounts, each with its firm: the firms, or (record unit) each firm's data sets.

        Under record-level DP a record sits in one data set only (a demand window or a delivery row),
        so a firm's two data sets compose in parallel: each is accounted on its own, and the firm has
        spent what its most-spent data set has.
        """
        if self.spec.privacy.unit == "firm":
            return {firm: firm for firm in self.node_of}
        return {
            dataset_party(firm, kind): firm
            for firm, node in self.node_of.items()
            for kind in MODEL_KINDS
            if self.manifests[node].trains(kind)
        }

    def _admit(self, server_round: int) -> list[str]:
        """Before contacting any firm: which firms' budgets can pay for this round (BudgetExhausted if none)."""
        ledger, plan = self.ledger, self.plan
        if ledger is None or plan is None:
            raise FederationError("no privacy ledger in this run")
        release = f"round-{server_round}"
        if plan.spec.unit == "record":
            parties = self.accounted_parties()
            refused: set[str] = set()
            for kind in MODEL_KINDS:
                candidates = sorted(p for p in parties if p.endswith(f"/{kind}"))
                if candidates:
                    admission = ledger.admit(f"{release}/{kind}", plan.record_event(), candidates)
                    refused |= {parties[p] for p in admission.excluded}
            for firm in sorted(refused):  # a firm takes part only while every data set it trains can pay
                self._drop(firm, f"round {server_round}", "its own privacy budget is spent")
            return sorted(set(self.node_of) - refused)
        admission = ledger.admit(release, plan.firm_event(), sorted(self.node_of))
        for firm in admission.excluded:
            self._drop(firm, f"round {server_round}", "its own privacy budget is spent")
        self._eligible = list(admission.participants)
        if plan.spec.mechanism == "central" and plan.spec.firm_sample_rate < 1:
            draw = np.random.default_rng()  # fresh OS entropy: the sample must stay secret to amplify
            sample = [firm for firm in self._eligible if draw.random() < plan.spec.firm_sample_rate]
            return sample
        return self._eligible

    def _private_update(
        self, server_round: int, weights: dict[str, OrderedDict[str, np.ndarray]], outcome: SumOutcome, asked: list[str]
    ) -> float:
        """Apply the round's noised sum and record the release; returns overall epsilon spent so far."""
        ledger, plan = self.ledger, self.plan
        if ledger is None or plan is None:
            raise FederationError("no privacy ledger in this run")
        spec = plan.spec
        segments = outcome.segments
        kinds = list(weights)
        release = f"round-{server_round}"
        if spec.unit == "record":
            for kind in kinds:  # FedAvg with the firms' public weights
                weight_sum = float(segments[f"{kind}/weight"][0])
                if weight_sum > 0:
                    flat = flatten(weights[kind])
                    weights[kind] = unflatten(
                        self.strategy.aggregate_train(flat, segments[f"{kind}/update"], weight_sum), weights[kind]
                    )
            contributors = set(outcome.contributors)
            parties = self.accounted_parties()
            for kind in kinds:
                paid = sorted(p for p, firm in parties.items() if firm in contributors and p.endswith(f"/{kind}"))
                if paid:
                    ledger.record(
                        Release(
                            release_id=f"{release}/{kind}",
                            mechanism="dpsgd",
                            event=plan.record_event(),
                            firms=paid,
                            sampling=Sampling.poisson(spec.sample_rate),
                            noise_multiplier=spec.noise_multiplier,
                            clip_norm=spec.max_grad_norm(kind),
                            parameters={"steps": plan.dpsgd_steps, "local_epochs": plan.local_epochs},
                        )
                    )
            return ledger.overall_epsilon
        sizes = {kind: flatten(weights[kind]).size for kind in kinds}
        joint = np.concatenate([segments[f"{kind}/update"] for kind in kinds])
        clip_norm, parameters = spec.clip_norm, {}
        if spec.mechanism == "central":
            rng = np.random.default_rng()  # fresh OS entropy: noise the firms cannot predict
            expected = plan.expected_participants(len(self._eligible))
            if self.clipping is not None:
                clip_norm, parameters = self._adaptive_step(outcome, expected, rng)
            noised = plan.add_central_noise(joint, rng, clip_norm)
            change = noised / expected
            event, accounted, shares = plan.firm_event(), self._eligible, None
        else:
            shares = len(outcome.contributors)
            change = plan.skellam().dequantise(joint) / shares
            event, accounted = plan.firm_event(noise_shares=shares), list(outcome.contributors)
        offset = 0
        for kind in kinds:
            flat = flatten(weights[kind])
            weights[kind] = unflatten(flat + change[offset : offset + sizes[kind]], weights[kind])
            offset += sizes[kind]
        ledger.record(
            Release(
                release_id=release,
                mechanism="gaussian" if spec.mechanism == "central" else "skellam",
                event=event,
                firms=sorted(accounted),
                sampling=plan.firm_sampling if spec.mechanism == "central" else Sampling.none(),
                noise_multiplier=spec.noise_multiplier,
                clip_norm=clip_norm,
                parameters={"noise_shares": shares} if shares is not None else parameters,
            )
        )
        return ledger.overall_epsilon

    def _adaptive_step(
        self, outcome: SumOutcome, expected: float, rng: np.random.Generator
    ) -> tuple[float, dict[str, float | bool]]:
        """Release the noised unclipped count and move the clip norm; the norm this round used, and what the
        ledger records of the two queries (the update's multiplier and the count's noise)."""
        plan, clipping = self.plan, self.clipping
        if plan is None or clipping is None:
            raise FederationError("adaptive clipping is off in this run")
        unclipped = float(outcome.segments[UNCLIPPED_SEGMENT][0])
        centred = unclipped - len(outcome.contributors) / 2  # the sum of (b - 1/2) over the firms in the sum
        noised = clipping.noised_count(centred, rng)
        self.clipping = clipping.step(noised, expected)
        parameters: dict[str, float | bool] = {
            "adaptive_clipping": True,
            "update_noise_multiplier": plan.update_noise_multiplier(),
            "count_noise_std": clipping.count_noise_std,
            "target_quantile": clipping.target_quantile,
            "clip_learning_rate": clipping.learning_rate,
            "next_clip_norm": self.clipping.clip_norm,
        }
        return clipping.clip_norm, parameters

    def evaluate(self, weights: dict[str, OrderedDict[str, np.ndarray]], norm: Normaliser) -> dict[str, np.ndarray]:
        """Test statistics of the final models and the efficiency sums of ordering from the demand model
        (under DP, measured by the harness like every other test statistic; nothing without one)."""
        self.observer.stage("final evaluation")
        if self.private:
            if self.harness is None:
                return {}  # a real federation under DP releases no test statistics
            self.efficiency_firms["after"] = self._efficiency_holders(list(self.node_of))
            return {**self.harness.evaluate(weights, norm), **self.harness.efficiency(weights, self._assignment())}
        layout = evaluation_layout(tuple(weights), self.spec.aggregation)
        records = {**self._model_records(weights, norm), **self._groups_record(), **self._stat_groups_record()}
        outcome = self._sum("evaluate", records, layout, self.manifests, "evaluate")
        self.efficiency_firms["after"] = self._efficiency_holders(outcome.contributors)
        final = {kind: outcome.segments[f"{kind}/eval"] for kind in weights}
        if EFFICIENCY_AFTER in outcome.segments:
            final[EFFICIENCY_AFTER] = outcome.segments[EFFICIENCY_AFTER]
        return final

    def release_efficiency(self, demand: OrderedDict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
        """Under DP with `efficiency.dp`: the firms' clipped efficiency sums, securely summed, Gaussian noise
        added here, charged to every contributing firm's demand data (or the firm) and recorded in the ledger.

        None if the budget refuses the release (a refusal entry is written); the harness's figures stand.
        """
        ledger, plan = self.ledger, self.plan
        if ledger is None or plan is None:
            raise FederationError("no privacy ledger in this run")
        self.observer.stage("efficiency release")
        policy, unit = self.spec.inventory, plan.spec.unit
        holders = sorted(f for f, n in self.node_of.items() if self.manifests[n].trains("demand"))
        firm_of = {dataset_party(f, "demand") if unit == "record" else f: f for f in holders}
        event = efficiency_event(unit, policy.dp_noise_multiplier)
        try:
            admission = ledger.admit(RELEASE_ID, event, sorted(firm_of))
        except BudgetExhausted as err:
            self.dropped.append({"stage": "efficiency release", "firm": None, "reason": str(err)})
            return None
        for party in admission.excluded:
            self._drop(firm_of[party], "efficiency release", "its own privacy budget is spent")
        records = {
            weights_key("demand"): arrays_record(demand),
            INSTRUCTION: ConfigRecord(self.baseline_instruction().to_config()),
            **self._groups_record(),
        }
        nodes = [self.node_of[firm_of[party]] for party in admission.participants]
        outcome = self._sum("evaluate.efficiency", records, efficiency_layout(self.spec.aggregation), nodes, RELEASE_ID)
        contributing = self._efficiency_holders(outcome.contributors)
        self.efficiency_firms = {"before": contributing, "after": contributing}
        summed = {name: outcome.segments[name] for name in (EFFICIENCY_BEFORE, EFFICIENCY_AFTER)}
        released = noised(summed, policy, np.random.default_rng())  # fresh OS entropy, as for training noise
        contributors = set(outcome.contributors)
        ledger.record(
            Release(
                release_id=RELEASE_ID,
                mechanism="gaussian",
                event=event,
                firms=sorted(party for party, firm in firm_of.items() if firm in contributors),
                noise_multiplier=policy.dp_noise_multiplier,
                clip_norm=policy.dp_clip_norm,
                excluded_firms=sorted(admission.excluded),
                parameters={"query": "efficiency sums (before, after) by tier"},
            )
        )
        return {"before": released[EFFICIENCY_BEFORE], "after": released[EFFICIENCY_AFTER]}

    def describe_aggregation(self) -> dict[str, Any]:
        if self.secure is None:
            return {"mode": "plain"}
        return {**self.secure.describe(len(self.manifests)), "clipped_values": self.clipped_total}


def run_federation(
    grid: Grid,
    settings: RunSettings,
    observer: RunObserver,
    *,
    flower_run_id: int,
    open_ledger: Callable[[Mapping[str, float | None]], PrivacyRun] | None = None,
    harness: SimulationHarness | None = None,
) -> FederationOutcome:
    """Connect, (without DP) release feature moments, baselines, train, evaluate.

    Under DP the privacy ledger opens once the firms have declared their own budgets (`open_ledger`).
    """
    federation = Federation(grid, settings, observer, flower_run_id=flower_run_id, harness=harness)
    manifests = federation.connect()
    if federation.private:
        if open_ledger is None:
            raise FederationError("a differentially private run needs its privacy ledger")
        own = {m.firm_id: m.budget_epsilon for m in manifests.values()}
        federation.ledger = open_ledger({party: own[firm] for party, firm in federation.accounted_parties().items()})
    norm = federation.feature_normaliser()
    baselines = federation.local_baselines()
    families = model_families(settings.spec)
    weights: dict[str, OrderedDict[str, np.ndarray]] = {}
    history: list[dict[str, Any]] = []
    final: dict[str, np.ndarray] = {}
    if "mlp" in families:
        weights, history = federation.train(norm)
        final = federation.evaluate(weights, norm)
    linear = None
    if "linear" in families:
        linear, linear_history = train_linear(federation, norm)
        history += linear_history
    deployed = measure_deployment(federation, harness, norm, linear, weights, final) if harness is not None else None
    efficiency = {"before": baselines.pop(EFFICIENCY_BEFORE, None), "after": final.pop(EFFICIENCY_AFTER, None)}
    efficiency_dp = None
    if federation.private and settings.spec.inventory.dp and "demand" in weights:
        released = federation.release_efficiency(weights["demand"])
        if released is not None:
            efficiency, privacy = released, settings.spec.privacy
            efficiency_dp = {
                "epsilon": release_epsilon(privacy, settings.spec.inventory),
                "delta": privacy.delta,
                "noise_multiplier": settings.spec.inventory.dp_noise_multiplier,
            }
    return FederationOutcome(
        manifests=manifests,
        normaliser=norm,
        weights=weights,
        federated=final,
        baselines=baselines,
        aggregation=federation.describe_aggregation(),
        history=history,
        dropped=federation.dropped,
        stopped=federation.stopped,
        efficiency={when: vector for when, vector in efficiency.items() if vector is not None},
        efficiency_grouping=federation.grouping,
        efficiency_firms=federation.efficiency_firms,
        efficiency_dp=efficiency_dp,
        released_groups={kind: federation.released_groups(kind) for kind in MODEL_KINDS},
        groups_withheld=federation.groups_withheld(),
        families=families,
        linear=linear,
        deployed=deployed,
    )
