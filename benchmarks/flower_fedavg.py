"""Flower's own plain FedAvg over the same firms and MLPs as `silobridge simulate`: the yardstick of issue 20.

`python -m benchmarks.flower_fedavg SCENARIO --rounds R --out times.json` runs flwr's Message-API
`FedAvg` strategy in `run_simulation` (Ray, one CPU per virtual node, as our launcher does) with a
minimal ClientApp: node i plays the scenario's i-th firm, builds the same data (`simulated_firm`), and
trains the same demand and risk MLPs (`build_model`, `fit`, the run's local epochs, batch size and
optimiser) from the global weights. No secure aggregation, no DP, no baselines, no evaluation: the
plain round is what is measured. The round times come from the strategy's `evaluate_fn`, which Flower
calls on the server after every round.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

ARRAYS = "arrays"


def _run_config(scenario: Path, rounds: int, out: Path) -> dict[str, Any]:
    return {
        "scenario": str(scenario),
        "out-dir": str(out),
        "run-id": "flower-fedavg",
        "num-rounds": rounds,
        "dp": "off",
        "aggregation": "plain",
    }


def _settings(scenario: Path, rounds: int, out: Path) -> Any:
    from silobridge.federation.settings import settings_from_run_config

    return settings_from_run_config(_run_config(scenario, rounds, out))


def reply_failure(server_round: int, replies: list[Any], expected: int) -> str | None:
    """What went wrong with a round's replies (error replies, or fewer than `expected`), or None."""
    bad = [reply for reply in replies if reply.has_error()]
    if not bad and len(replies) == expected:
        return None
    reason = bad[0].error.reason.strip().splitlines()[-1] if bad else "missing replies"
    return f"round {server_round}: {len(replies) - len(bad)} of {expected} good replies ({reason})"


def checked_fedavg(num_firms: int, failures: list[str]) -> Any:
    """flwr's FedAvg over every node that notes each round without a good reply from every node in `failures`:
    FedAvg itself logs failed replies and aggregates the rest, and a round of failures is fast."""
    from flwr.app import ArrayRecord, Message, MetricRecord
    from flwr.serverapp.strategy import FedAvg

    class CheckedFedAvg(FedAvg):  # type: ignore[misc]
        def aggregate_train(
            self, server_round: int, replies: Iterable[Message]
        ) -> tuple[ArrayRecord | None, MetricRecord | None]:
            replies = list(replies)
            failure = reply_failure(server_round, replies, num_firms)
            if failure is not None:
                failures.append(failure)
            return super().aggregate_train(server_round, replies)

    return CheckedFedAvg(
        fraction_evaluate=0.0, min_train_nodes=num_firms, min_available_nodes=num_firms, min_evaluate_nodes=0
    )


def build_apps(
    scenario: Path, rounds: int, out: Path, times: list[float], failures: list[str] | None = None
) -> tuple[Any, Any]:
    """Flower's ServerApp (FedAvg over every node, `rounds` rounds) and the minimal ClientApp. Every round
    that does not get a good reply from every node adds a line to `failures`: FedAvg itself only logs
    them and goes on, and a round of failed replies is fast, so it would pass for a fast round."""
    import numpy as np
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp
    from flwr.serverapp import Grid, ServerApp

    from silobridge.clients.models import MODEL_KINDS, build_model, load_arrays, state_to_arrays
    from silobridge.federation.records import arrays_record, record_arrays

    settings = _settings(scenario, rounds, out)
    num_firms = len(settings.scenario.firms)
    # Flower's Ray backend pickles the ClientApp (its closures included) with every message: like ours, the
    # client carries only its small run config and parses it once per process (`run_settings`), never the
    # settings object (63 KB pickled), which inflated Flower's column before session 11.
    run_config = _run_config(scenario, rounds, out)
    server_app, client_app = ServerApp(), ClientApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        spec = settings.spec
        initial = {}
        for kind in MODEL_KINDS:
            for name, value in state_to_arrays(build_model(kind, spec, seed=settings.scenario.seed)).items():
                initial[f"{kind}.{name}"] = value

        strategy = checked_fedavg(num_firms, failures if failures is not None else [])

        def stamp(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
            times.append(time.monotonic())
            return None

        strategy.start(
            grid=grid, initial_arrays=arrays_record(initial, pack=False), num_rounds=rounds, evaluate_fn=stamp
        )

    @client_app.train()
    def train(msg: Message, context: Context) -> Message:
        import torch

        from silobridge.clients.normaliser import Normaliser
        from silobridge.clients.round_update import train_settings
        from silobridge.clients.training import fit
        from silobridge.contract.messages import TrainInstruction
        from silobridge.federation.client_app import run_settings
        from silobridge.federation.firm_source import simulated_firm

        torch.set_num_threads(1)  # as every simulated firm of ours
        settings = run_settings(run_config)
        spec = settings.spec
        firm = simulated_firm(settings, spec, int(context.node_config["partition-id"]), run_id=-2)
        weights = record_arrays(msg.content[ARRAYS])
        training = settings.scenario.training
        instruction = TrainInstruction(
            round=int(msg.content["config"]["server-round"]),
            epochs=training.local_epochs,
            batch_size=training.batch_size,
            proximal_mu=0.0,
            seed=settings.scenario.seed,
            optimiser=training.optimiser_spec,
        )
        norm = Normaliser.from_ranges(spec.data.risk_feature_ranges, spec.data.risk_features)
        out: dict[str, np.ndarray] = {}
        examples = 0
        for kind in MODEL_KINDS:
            arrays = {k.split(".", 1)[1]: v for k, v in weights.items() if k.startswith(f"{kind}.")}
            if not firm.trains(kind):
                out.update({f"{kind}.{k}": v for k, v in arrays.items()})  # unchanged: the firm holds no such data
                continue
            model = build_model(kind, spec)
            load_arrays(model, arrays)
            x, y = firm.holdings.xy(kind, 0, norm)
            loss = "l1" if kind == "demand" else "bce"
            fit(model, x, y, loss=loss, settings=train_settings(firm.holdings, instruction), device=firm.device)
            out.update({f"{kind}.{k}": v for k, v in state_to_arrays(model).items()})
            examples += len(x)
        content = RecordDict(
            {ARRAYS: arrays_record(out, pack=False), "metrics": MetricRecord({"num-examples": max(examples, 1)})}
        )
        return Message(content=content, reply_to=msg)

    return server_app, client_app


def run(scenario: Path, rounds: int, cpus: int | None = None) -> dict[str, Any]:
    """Run Flower's FedAvg over the scenario's firms; wall time and per-round seconds (round 1 included)."""
    from silobridge.federation.launch import launch

    times: list[float] = []
    failures: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        server_app, client_app = build_apps(scenario, rounds, Path(tmp), times, failures)
        started = time.monotonic()
        num_firms = len(_settings(scenario, rounds, Path(tmp)).scenario.firms)
        launch(server_app, client_app, num_supernodes=num_firms, cpus=cpus)
        wall = time.monotonic() - started
    if failures:
        raise RuntimeError("Flower's FedAvg had failed replies: " + "; ".join(failures))
    if len(times) != rounds + 1:
        raise RuntimeError(f"Flower's FedAvg finished {len(times) - 1} of {rounds} rounds")
    per_round = [b - a for a, b in zip(times, times[1:], strict=False)]
    return {"firms": num_firms, "rounds": rounds, "wall_s": wall, "round_s": per_round}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", type=Path)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    args.out.write_text(json.dumps(run(args.scenario, args.rounds)))


if __name__ == "__main__":
    main()
