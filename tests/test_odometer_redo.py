"""A redone round (a resumed run whose sum never completed) is charged once to a partner's odometer when it is the
very release already charged: same run, same models and instruction, the firm's own noise seed fixing its noise.
Anything else (other models, fresh noise) is a new release and is charged."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from flwr.app import ConfigRecord, Context, RecordDict

from silobridge.clients.firm import FirmClient
from silobridge.clients.own_budget import own_epsilon
from silobridge.contract.arrays import flatten
from silobridge.errors import ProtocolError
from silobridge.federation.client_app import Request, _train
from silobridge.federation.odometer_glue import NODE_LIFETIME_EPSILON, NODE_STATE_DIR
from silobridge.federation.records import (
    INSTRUCTION,
    LAYOUT,
    NORMALISER,
    RUN,
    arrays_record,
    layout_record,
    record_arrays,
    weights_key,
)
from silobridge.privacy.odometer import Odometer
from silobridge.server.layouts import training_layout
from tests.firm_support import tiny_firm

RECORD = "privacy.unit=record;privacy.epsilon=6;aggregation.mode=plain"


def _node(tmp_path: Path, noise_seed: int | None):
    shared, weights, instruction, norm = tiny_firm(RECORD, noise_seed=5)
    spec = shared.spec
    budget = (own_epsilon(spec.privacy, 2) + own_epsilon(spec.privacy, 3)) / 2  # two rounds per run, not three
    firm = FirmClient(
        shared.data, group=shared.group, spec=spec, tier=shared.tier, budget_epsilon=budget, noise_seed=noise_seed
    )
    kinds = [kind for kind in weights if firm.trains(kind)]
    layout = training_layout({kind: flatten(weights[kind]).size for kind in kinds}, spec.aggregation, statistics=False)
    node = {NODE_STATE_DIR: str(tmp_path / "state"), NODE_LIFETIME_EPSILON: 1000.0}

    def ask(flower_run: int, round_number: int, shift: float = 0.0) -> RecordDict:
        arrays = {weights_key(k): arrays_record({n: v + shift for n, v in weights[k].items()}) for k in kinds}
        arrays[NORMALISER] = arrays_record({"mean": norm.mean, "std": norm.std})
        configs = {
            RUN: ConfigRecord({"run_id": "net"}),
            INSTRUCTION: ConfigRecord(instruction.model_copy(update={"round": round_number}).to_config()),
            LAYOUT: layout_record(layout),
        }
        context = contexts.setdefault(
            flower_run, Context(run_id=flower_run, node_id=1, node_config=node, state=RecordDict(), run_config={})
        )
        message = SimpleNamespace(
            content=SimpleNamespace(config_records=configs, array_records=arrays),
            metadata=SimpleNamespace(message_type="train"),
        )
        return _train(Request(firm, None, context, message))  # type: ignore[arg-type]

    contexts: dict[int, Context] = {}
    return ask, kinds


def _charged(tmp_path: Path, kinds: list[str]) -> list[int]:
    odometer = Odometer.open(tmp_path / "state", firm="R1")
    return [odometer.releases_in_run(kind, "net") for kind in kinds]


def _update(reply: RecordDict) -> list[np.ndarray]:
    return [value for _, record in sorted(reply.array_records.items()) for value in record_arrays(record).values()]


@pytest.mark.slow  # DP-SGD rounds: over 5 s on 2 cores
def test_a_redone_round_with_the_firms_own_seed_is_charged_once(tmp_path: Path) -> None:
    ask, kinds = _node(tmp_path, noise_seed=5)
    first = ask(1, 1)  # round 1 released, then the coordinator is killed before the sum completes
    again = ask(2, 1)  # `run --resume` (a new Flower run) redoes round 1 on the same models
    assert _update(first) and all(np.array_equal(a, b) for a, b in zip(_update(first), _update(again), strict=True))
    assert _charged(tmp_path, kinds) == [1] * len(kinds)  # the same bits: charged once
    assert ask(2, 2).array_records  # the firm's own budget still holds round 2 (it counted round 1 once)
    with pytest.raises(ProtocolError, match=r"train round 3.*over its own budget"):
        ask(2, 3)
    assert _charged(tmp_path, kinds) == [2] * len(kinds)


@pytest.mark.slow  # DP-SGD rounds: over 5 s on 2 cores
def test_a_round_on_other_models_or_with_fresh_noise_is_a_new_release_and_charged(tmp_path: Path) -> None:
    ask, kinds = _node(tmp_path / "seeded", noise_seed=5)
    ask(1, 1)
    ask(2, 1, shift=1e-3)  # round 1 again, but other models: another release
    assert _charged(tmp_path / "seeded", kinds) == [2] * len(kinds)
    fresh, kinds = _node(tmp_path / "fresh", noise_seed=None)
    fresh(1, 1)
    fresh(2, 1)  # fresh OS entropy: the redone round is another draw, charged again (over-counts, never under)
    assert _charged(tmp_path / "fresh", kinds) == [2] * len(kinds)
