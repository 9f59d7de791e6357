"""The FedAvg training loop over a Federation: one message per firm and round trains both models.

Without DP the firms also score the models they received (their test statistics ride in the same
sum); under DP the round policy (`server.dp_rounds`) admits the firms before any is contacted (a
refused round ends training, keeping the model so far), applies the noised update and records the
release in the ledger, and the simulation harness scores the models.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np
from flwr.app import ConfigRecord

from silobridge.clients.models import MODEL_KINDS, build_model, state_to_arrays
from silobridge.clients.normaliser import Normaliser
from silobridge.contract.arrays import flatten, unflatten
from silobridge.contract.wire_names import TRAIN, eval_segment, loss_segment, update_segment, weight_segment
from silobridge.errors import BudgetExhausted, FederationError
from silobridge.federation.checkpoint import Checkpoint
from silobridge.federation.coordinator import Federation, SumOutcome, Weights, metrics_by_group
from silobridge.federation.crash_points import crash_point
from silobridge.federation.records import INSTRUCTION
from silobridge.federation.resume import Checkpoints
from silobridge.server.layouts import training_layout


def train(
    federation: Federation, norm: Normaliser, checkpoints: Checkpoints | None = None
) -> tuple[Weights, list[dict[str, Any]]]:
    """FedAvg rounds; each trains both models in one message per firm. Returns the final weights and one
    history record per model and round. With `checkpoints`, every completed round is checkpointed (under
    DP around its ledger entries, see `federation.resume`) and a resumed run starts after its checkpoint."""
    settings, spec, dp = federation.settings, federation.spec, federation.dp
    seed = settings.scenario.seed
    kinds = [kind for kind in MODEL_KINDS if federation._holders(kind)]
    weights = {kind: state_to_arrays(build_model(kind, spec, seed=seed)) for kind in kinds}
    history: list[dict[str, Any]] = []
    first = 1
    if checkpoints is not None and checkpoints.start is not None:
        # a resumed run: the models, records and counters after its last completed round
        start = checkpoints.start
        if sorted(start.weights) != sorted(kinds):
            raise FederationError(f"the checkpoint holds models {sorted(start.weights)}, this run trains {kinds}")
        weights, history, first = start.weights, list(start.history), start.round + 1
        federation.dropped = list(start.dropped)
        federation.clipped_total = start.clipped_total
        if dp is not None and dp.clipping is not None and start.clip_norm is not None:
            dp.clipping = replace(dp.clipping, clip_norm=start.clip_norm)
        checkpoints.rundir.rewrite_metrics(history)
        federation.observer.stage(f"resumed after round {start.round}")
    elif checkpoints is not None:
        checkpoints.commit(_checkpoint(federation, checkpoints, 0, weights, history))
    private = federation.private
    distributed = private and spec.privacy.unit == "firm" and spec.privacy.mechanism == "distributed"
    clipping = dp.clipping if dp is not None else None
    layout = training_layout(
        {kind: flatten(weights[kind]).size for kind in kinds},
        spec.aggregation,
        statistics=not private,
        integer_updates=distributed,
        unclipped_count=clipping is not None,
    )
    rounds = settings.scenario.training.rounds
    for server_round in range(first, rounds + 1):
        federation.observer.stage(f"round {server_round}/{rounds}")
        started = time.monotonic()
        try:
            participants = _admit(federation, server_round) if private else list(federation.node_of)
        except BudgetExhausted as err:
            federation.stopped = f"round {server_round} refused: {err}"
            federation.observer.stage("stopped: privacy budget")
            break
        instruction = federation.strategy.configure_train(server_round)
        clipping = dp.clipping if dp is not None else None
        if clipping is not None:
            instruction = instruction.model_copy(update={"clip_norm": clipping.clip_norm})
        records = {
            **federation._model_records(weights, norm),
            INSTRUCTION: ConfigRecord(instruction.to_config()),
            **({} if private else federation._stat_groups_record()),
        }
        nodes = [federation.node_of[firm] for firm in participants]
        outcome = federation._sum(TRAIN, records, layout, nodes, f"round {server_round}")
        needed = min(federation.min_firms, len(federation.manifests))
        if len(outcome.contributors) < needed:
            raise FederationError(
                f"round {server_round}: only {len(outcome.contributors)} of {len(federation.manifests)} firms "
                f"contributed (at least {needed} needed); see the dropout log"
            )
        releases = []
        if private:
            policy, ledger = federation.private_rounds()
            releases = policy.release(
                ledger, server_round, weights, outcome.segments, outcome.contributors, federation.accounted_parties()
            )
            harness = federation.harness
            evaluation = harness.evaluate(weights, norm) if harness is not None else {}
        seconds = round(time.monotonic() - started, 3)
        records = []
        for kind in kinds:
            if private:
                record = _round_record(federation, kind, server_round, server_round, outcome, evaluation.get(kind))
                record["epsilon"] = None  # the overall spend once the round's entries are written (below)
                if instruction.clip_norm is not None:
                    record["clip_norm"] = instruction.clip_norm
            else:
                record = _aggregate(federation, kind, server_round, weights, outcome)
            record["seconds"] = seconds
            records.append(record)
        if private:
            # the ledger commits the round: its models are on disk before its first entry (federation.resume)
            if checkpoints is not None:
                state = _checkpoint(federation, checkpoints, server_round, weights, history + records)
                checkpoints.pending(state, releases)
                crash_point(f"pending:{server_round}")
            for release in releases:
                ledger.record(release)
                crash_point(f"entry:{server_round}")
            for record in records:
                record["epsilon"] = ledger.overall_epsilon
        for record in records:
            history.append(record)
            federation.observer.round_done(record)
        if checkpoints is not None:
            checkpoints.commit(_checkpoint(federation, checkpoints, server_round, weights, history))
    return weights, history


def _checkpoint(
    federation: Federation,
    checkpoints: Checkpoints,
    server_round: int,
    weights: Weights,
    history: list[dict[str, Any]],
) -> Checkpoint:
    """The coordinator's state after `server_round` (under DP, with its pointer into the ledger)."""
    dp, ledger = federation.dp, federation.ledger
    entries, last_hash = ledger.pointer if ledger is not None else (None, None)
    return Checkpoint(
        round=server_round,
        config_sha256=checkpoints.config_sha256,
        weights=weights,
        history=list(history),
        dropped=list(federation.dropped),
        clipped_total=federation.clipped_total,
        clip_norm=dp.clipping.clip_norm if dp is not None and dp.clipping is not None else None,
        ledger_entries=entries,
        ledger_hash=last_hash,
    )


def _admit(federation: Federation, server_round: int) -> list[str]:
    """Before contacting any firm: which firms' budgets can pay for this round (BudgetExhausted if none)."""
    policy, ledger = federation.private_rounds()
    admission = policy.admit(ledger, server_round, federation.node_of, federation.accounted_parties(), MODEL_KINDS)
    for firm in admission.refused:
        federation._drop(firm, f"round {server_round}", "its own privacy budget is spent")
    return admission.participants


def _aggregate(
    federation: Federation, kind: str, server_round: int, weights: Weights, outcome: SumOutcome
) -> dict[str, Any]:
    """FedAvg on the round's sums; the firms' statistics are of the model they received (round - 1)."""
    segments = outcome.segments
    weight_sum = float(segments[weight_segment(kind)][0])
    flat = flatten(weights[kind])
    weights[kind] = unflatten(
        federation.strategy.aggregate_train(flat, segments[update_segment(kind)], weight_sum), weights[kind]
    )
    record = _round_record(federation, kind, server_round, server_round - 1, outcome, segments[eval_segment(kind)])
    record["train_loss"] = float(segments[loss_segment(kind)][0] / weight_sum) if weight_sum > 0 else None
    return record


def _round_record(
    federation: Federation,
    kind: str,
    server_round: int,
    evaluated: int,
    outcome: SumOutcome,
    evaluation: np.ndarray | None,
) -> dict[str, Any]:
    """Under DP a real federation measures nothing on test data: its rounds carry no metrics."""
    return {
        "round": server_round,
        "model": kind,
        "firms": len(outcome.contributors),
        "train_loss": None,  # a private run does not release training losses
        "clipped_values": outcome.clipped,
        "evaluated_round": evaluated,
        "metrics": None if evaluation is None else metrics_by_group(kind, evaluation, federation.released_groups(kind)),
    }
