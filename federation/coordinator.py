"""The coordinator's conversation with the firms over a Flower Grid: who is there, and every sum they release.

`Federation` knows the firms (their manifests, from `connect`), the slots that group their test
statistics and efficiency sums, and how to get one sum over any set of firms: in the clear
(`server.aggregation.PlainSum`) or securely (`server.secure_sum`, the protocol driver over a Grid
transport, `federation.secure_transport`), with retry of an aborted secure sum. The stages built on
it are here too (feature moments, local baselines, final evaluation, a DP efficiency release); the
training loop is `federation.training`, the DP round policy `server.dp_rounds`, the linear family
`federation.linear_run`, and `federation.runner` runs them in order. Every step that releases
something is one sum over firms, carried by one message per firm.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp import Grid

from silobridge.clients.models import MODEL_KINDS
from silobridge.clients.normaliser import Normaliser, summed_moments_normaliser
from silobridge.contract.config import BaselineSelection, select_baselines
from silobridge.contract.efficiency_sums import EFFICIENCY_AFTER, EFFICIENCY_BEFORE, EfficiencyGroups
from silobridge.contract.messages import BaselineInstruction, FirmManifest
from silobridge.contract.stats import GROUPS, Moments, demand_metrics_by_group, risk_metrics_by_group
from silobridge.contract.wire_names import (
    EVALUATE,
    EVALUATE_EFFICIENCY,
    QUERY_MANIFEST,
    QUERY_MOMENTS,
    RISK_MOMENTS,
    TRAIN_BASELINES,
    eval_segment,
)
from silobridge.errors import BudgetExhausted, FederationError, ProtocolError
from silobridge.federation.efficiency_resume import commit_efficiency, replayed_efficiency
from silobridge.federation.exchange import Replies, exchange, wait_for_nodes
from silobridge.federation.harness import SimulationHarness
from silobridge.federation.records import (
    EFFICIENCY_GROUPS,
    INSTRUCTION,
    LAYOUT,
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
from silobridge.federation.secure_transport import GridSecureTransport
from silobridge.federation.settings import RunSettings
from silobridge.privacy.ledger import PrivacyRun, Release
from silobridge.privacy.secagg.layout import CLIPPED, VectorLayout
from silobridge.server.aggregation import PlainSum
from silobridge.server.dp_rounds import DpRounds, accounted_parties, dataset_party
from silobridge.server.efficiency import Grouping, group_tiers
from silobridge.server.efficiency_release import RELEASE_ID, efficiency_event, noised
from silobridge.server.layouts import baselines_layout, efficiency_layout, evaluation_layout, moments_layout
from silobridge.server.secure_sum import SecureSumServer
from silobridge.server.stat_groups import StatGrouping, group_statistics_beside
from silobridge.server.strategy import FedAvg

if TYPE_CHECKING:
    from silobridge.federation.resume import Checkpoints


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


Records = dict[str, ArrayRecord | ConfigRecord]
Weights = dict[str, OrderedDict[str, np.ndarray]]

MAX_SECURE_ATTEMPTS = 3
"""A secure sum that aborts (too few survivors) is tried again, each time under a new round number."""


def baseline_instruction(settings: RunSettings) -> BaselineInstruction:
    """How every firm fits its local-only baselines: the run's training settings, with early stopping."""
    training = settings.scenario.training
    return BaselineInstruction(
        max_epochs=settings.baseline_max_epochs,
        patience=settings.baseline_patience,
        batch_size=training.batch_size,
        optimiser=training.optimiser_spec,
        seed=settings.scenario.seed,
    )


def fedavg_strategy(settings: RunSettings) -> FedAvg:
    """The run's FedAvg (FedProx where chosen); DP-SGD has its own epochs and step size."""
    training = settings.scenario.training
    privacy = settings.spec.privacy
    dpsgd = privacy.enabled and privacy.unit == "record"
    return FedAvg(
        local_epochs=privacy.local_epochs if dpsgd else training.local_epochs,
        batch_size=training.batch_size,
        optimiser=(
            training.optimiser_spec.model_copy(update={"learning_rate": privacy.learning_rate})
            if dpsgd
            else training.optimiser_spec
        ),
        proximal_mu=training.proximal_mu if training.strategy == "fedprox" else 0.0,
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
        self.strategy = fedavg_strategy(settings)
        self.dp = DpRounds(self.plan, self.strategy) if self.plan is not None else None
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
        self.min_firms = settings.min_firms
        self.baselined: BaselineSelection | None = None  # whose local-only baselines were fitted (local_baselines)

    # -- plumbing ---------------------------------------------------------------------------------

    def _firm(self, node: int) -> str:
        return self.manifests[node].firm_id if node in self.manifests else f"node {node}"

    def _send(self, requests: list[tuple[int, str, RecordDict]], stage: str) -> Replies:
        replies = exchange(self.grid, requests, timeout_s=self.settings.exchange_timeout_s)
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

    def _content(self, records: Records, layout: VectorLayout) -> RecordDict:
        return request_content(self.spec, run_id=self.settings.run_id, **records, **{LAYOUT: layout_record(layout)})

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
        transport = GridSecureTransport(
            spec=self.spec,
            node_of=self.node_of,
            firm_of=self._firm,
            send=self._send,
            drop=self._drop,
            message_type=message_type,
            content=lambda request: self._content({**records, SECAGG: request}, layout),
            stage=stage,
        )
        wanted = {self._firm(n) for n in nodes}

        def aborted(attempt: int, err: ProtocolError) -> None:
            self.dropped.append(
                {"stage": stage, "firm": None, "reason": f"secure sum aborted (attempt {attempt}): {err}"}
            )

        try:
            result = secure.sum(
                transport,
                layout,
                [self._firm(n) for n in self.manifests],
                num_firms=len(self.manifests),
                leave_out=[f for f in self.node_of if f not in wanted],
                attempts=MAX_SECURE_ATTEMPTS,
                on_abort=aborted,
            )
        except ProtocolError as last:
            raise FederationError(
                f"{stage}: the secure sum aborted {MAX_SECURE_ATTEMPTS} times; last: {last}"
            ) from last
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
        manifest = request_content(self.spec, run_id=self.settings.run_id)
        replies = self._send([(n, QUERY_MANIFEST, manifest) for n in nodes], "manifest")
        self._require(replies, "manifest")
        for (node, _), content in replies.ok.items():
            self.manifests[node] = FirmManifest.from_config(content.config_records[REPLY], firm=f"node {node}")
        ids = [m.firm_id for m in self.manifests.values()]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise FederationError(f"several nodes claim the same firm: {', '.join(duplicates)}")
        self.node_of = {m.firm_id: n for n, m in self.manifests.items()}
        self.grouping = group_tiers(
            [m.tier for m in self.manifests.values() if m.has_demand], self.spec.efficiency.min_firms_per_group
        )
        # the demand statistics carry the forecast-error totals the efficiency sums by tier carry too
        slots = self.grouping.assignment.slots
        efficiency = {m.firm_id: slots.get(m.tier) for m in self.manifests.values() if m.has_demand}
        self.stat_grouping = {
            kind: group_statistics_beside(
                {m.firm_id: m.group for m in self.manifests.values() if m.trains(kind)},
                [efficiency] if kind == "demand" else [],
                self.spec.efficiency.min_firms_per_group,
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
        """Federation-wide mean and std of the risk features, from summed moments (range-scaled where the
        schema gives public ranges: raw sums of squared dollar amounts pass the sum's statistics bound).

        Under DP the public ranges of the federation's schema scale the features instead: moments of
        the firms' data would be one more release to account.
        """
        if self.private:
            return Normaliser.from_ranges(self.spec.data.risk_feature_ranges, self.spec.data.risk_features)
        self.observer.stage("feature moments")
        layout = moments_layout(len(self.spec.data.risk_features), self.spec.aggregation)
        outcome = self._sum(QUERY_MOMENTS, {}, layout, self.manifests, "moments")
        moments = Moments.from_vector(outcome.segments[RISK_MOMENTS])
        data = self.spec.data
        return summed_moments_normaliser(
            moments,
            data.risk_feature_ranges,
            data.risk_features,
            clipped=outcome.clipped,
            bound=self.spec.aggregation.stats_bound,
        )

    def baseline_instruction(self) -> BaselineInstruction:
        return baseline_instruction(self.settings)

    def baseline_selection(self) -> BaselineSelection:
        """The firms whose local-only baselines this run fits (the scenario's `[training] baselines`), drawn
        with the scenario's seed from the connected firms."""
        training = self.settings.scenario.training
        return select_baselines(training.baselines_spec, list(self.node_of), self.settings.scenario.seed)

    def local_baselines(self) -> dict[str, np.ndarray]:
        """Each firm fits local-only models on its own data; only their summed test statistics come back.

        Only the selected firms are asked (`baseline_selection`: all, a seeded sample, or none), so the
        local-only figures, and every comparison with them, are over those firms. Under DP no firm releases
        test statistics: the simulation harness measures the baselines.
        """
        self.observer.stage("local-only baselines")
        instruction = self.baseline_instruction()
        selection = self.baseline_selection()
        self.baselined = selection
        if not selection.firms:
            self.efficiency_firms["before"] = []
            return {}  # `--baselines none`: no local-only figures, and no comparison claims them
        if self.private:
            if self.harness is None:
                return {}  # a real federation under DP: firms release no test statistics, nothing is measured
            self.efficiency_firms["before"] = self._efficiency_holders(list(selection.firms))
            return self.harness.local_baselines(instruction, self._assignment(), selection.firms)
        layout = baselines_layout(self.spec.aggregation)
        records = {
            INSTRUCTION: ConfigRecord(instruction.to_config()),
            **self._groups_record(),
            **self._stat_groups_record(),
        }
        nodes = [self.node_of[firm] for firm in selection.firms]
        outcome = self._sum(TRAIN_BASELINES, records, layout, nodes, "baselines")
        self.efficiency_firms["before"] = self._efficiency_holders(outcome.contributors)
        return {name: value for name, value in outcome.segments.items() if name != CLIPPED}

    def _model_records(
        self, weights: dict[str, OrderedDict[str, np.ndarray]], norm: Normaliser
    ) -> dict[str, ArrayRecord]:
        records: dict[str, ArrayRecord] = {weights_key(kind): arrays_record(w) for kind, w in weights.items()}
        records[NORMALISER] = arrays_record(norm.to_arrays())
        return records

    # -- differential privacy ---------------------------------------------------------------------

    def accounted_parties(self) -> dict[str, str]:
        """What the ledger accounts, each with its firm: the firms, or (record unit) each firm's data sets."""
        trains = {
            firm: [kind for kind in MODEL_KINDS if self.manifests[node].trains(kind)]
            for firm, node in self.node_of.items()
        }
        return accounted_parties(self.spec.privacy.unit, trains)

    def private_rounds(self) -> tuple[DpRounds, PrivacyRun]:
        """The DP round policy and the ledger it spends from (FederationError outside a private run)."""
        if self.dp is None or self.ledger is None:
            raise FederationError("no privacy ledger in this run")
        return self.dp, self.ledger

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
        outcome = self._sum(EVALUATE, records, layout, self.manifests, "evaluate")
        self.efficiency_firms["after"] = self._efficiency_holders(outcome.contributors)
        final = {kind: outcome.segments[eval_segment(kind)] for kind in weights}
        if EFFICIENCY_AFTER in outcome.segments:
            final[EFFICIENCY_AFTER] = outcome.segments[EFFICIENCY_AFTER]
        return final

    def release_efficiency(
        self, demand: OrderedDict[str, np.ndarray], checkpoints: Checkpoints | None = None
    ) -> dict[str, np.ndarray] | None:
        """Under DP with `efficiency.dp`: the firms' clipped efficiency sums, securely summed, Gaussian noise
        added here, charged to every contributing firm's demand data (or the firm) and recorded in the ledger.
        With `checkpoints` the release is checkpointed around its entry, and a resumed run that completed it
        replays it (`federation.efficiency_resume`): charged once.

        None if the budget refuses the release (a refusal entry is written); the harness's figures stand.
        """
        ledger, plan = self.ledger, self.plan
        if ledger is None or plan is None:
            raise FederationError("no privacy ledger in this run")
        replayed = replayed_efficiency(checkpoints)
        if replayed is not None:
            released, self.efficiency_firms = replayed
            return {"before": released[EFFICIENCY_BEFORE], "after": released[EFFICIENCY_AFTER]}
        self.observer.stage("efficiency release")
        policy, unit = self.spec.efficiency, plan.spec.unit
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
        outcome = self._sum(EVALUATE_EFFICIENCY, records, efficiency_layout(self.spec.aggregation), nodes, RELEASE_ID)
        contributing = self._efficiency_holders(outcome.contributors)
        self.efficiency_firms = {"before": contributing, "after": contributing}
        summed = {name: outcome.segments[name] for name in (EFFICIENCY_BEFORE, EFFICIENCY_AFTER)}
        released = noised(summed, policy, np.random.default_rng())  # fresh OS entropy, as for training noise
        contributors = set(outcome.contributors)
        release = Release(
            release_id=RELEASE_ID,
            mechanism="gaussian",
            event=event,
            firms=sorted(party for party, firm in firm_of.items() if firm in contributors),
            noise_multiplier=policy.dp_noise_multiplier,
            clip_norm=policy.dp_clip_norm,
            excluded_firms=sorted(admission.excluded),
            parameters={"query": "efficiency sums (before, after) by tier"},
        )
        commit_efficiency(checkpoints, ledger, release, released, self.efficiency_firms, self.dropped)
        return {"before": released[EFFICIENCY_BEFORE], "after": released[EFFICIENCY_AFTER]}

    def describe_aggregation(self) -> dict[str, Any]:
        if self.secure is None:
            return {"mode": "plain"}
        return {**self.secure.describe(len(self.manifests)), "clipped_values": self.clipped_total}
