"""Profile a simulation without Ray: the ServerApp and every firm's ClientApp in one process, under cProfile.

`python -m benchmarks.profile_simulation --firms 50 --rounds 2 [--secure] [--dp] --out prof.txt` builds the
same chain as `bench_fedavg_scale` and runs `run_server` over an in-process Grid (`InlineGrid`) whose pull
calls each pending message's ClientApp directly, one firm after another, in this process. What Ray adds
(actor start, pickling messages to the workers, two firms at once) is not in it: the point is where the
coordinator's and a firm's own CPU time goes, per stage, which Ray's workers hide from a profiler.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import shutil
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from uuid import uuid4

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.superlink.grid.inmemory_grid import InMemoryGrid

from silobridge.scenarios.builder import chain_scenario, to_toml


class InlineGrid(InMemoryGrid):
    """A Grid whose nodes are ClientApp calls in this process: push stores, pull answers every pending message.

    It subclasses InMemoryGrid only so the ServerApp treats it as a simulation's grid (no network hooks)."""

    def __init__(self, client_app: ClientApp, num_nodes: int, run_config: dict[str, Any]):  # no LinkState
        self.client_app = client_app
        self.contexts = {
            node: Context(
                run_id=1,
                node_id=node,
                node_config={"partition-id": node - 1, "num-partitions": num_nodes},
                state=RecordDict(),
                run_config=run_config,
            )
            for node in range(1, num_nodes + 1)
        }
        from flwr.supercore.task_identity import TaskIdentity

        TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0  # what Flower's runtime sets
        self.pending: dict[str, Message] = {}
        self.seconds: dict[str, float] = {}

    def get_node_ids(self) -> Iterable[int]:
        return list(self.contexts)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            message.metadata.__dict__["_src_node_id"] = 0
            self.pending[message.metadata.message_id] = message
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = []
        for message_id in list(message_ids):
            message = self.pending.pop(message_id, None)
            if message is None:
                continue
            node = message.metadata.dst_node_id
            started = time.perf_counter()
            reply = self.client_app(message, self.contexts[node])
            kind = message.metadata.message_type
            self.seconds[kind] = self.seconds.get(kind, 0.0) + time.perf_counter() - started
            reply.metadata.__dict__["_src_node_id"] = node
            reply.metadata.__dict__["_reply_to_message_id"] = message_id
            replies.append(reply)
        return replies


class Stages:
    """The run's stages with their wall time (the observer's callbacks)."""

    def __init__(self) -> None:
        self.times: list[tuple[str, float, float]] = []

    def stage(self, name: str) -> None:
        self.times.append((name, time.perf_counter(), time.process_time()))

    def round_done(self, record: dict[str, Any]) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--firms", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--secure", action="store_true")
    parser.add_argument("--dp", action="store_true")
    parser.add_argument("--baselines", default="none")
    parser.add_argument("--scenario", type=Path, default=None, help="a scenario file instead of the builder's chain")
    parser.add_argument("--noise-seed", type=int, default=None, help="the firms' DP noise seed (a bit-equal check)")
    parser.add_argument("--keep", type=Path, default=None, help="copy the run's folder here (its models)")
    parser.add_argument("--out", type=Path, default=None, help="cProfile's table (default: stdout)")
    parser.add_argument("--top", type=int, default=60)
    parser.add_argument("--no-profile", action="store_true", help="no cProfile: CPU seconds without its overhead")
    parser.add_argument("--dump", type=Path, default=None, help="also write cProfile's raw stats (pstats) here")
    parser.add_argument(
        "--secagg-restore-always",
        action="store_true",
        help="every message restores its firm's SecAgg client from the stored state, as a fresh process does "
        "(the cost before the live client was kept: a side-by-side measure)",
    )
    args = parser.parse_args()
    if args.secagg_restore_always:
        from silobridge.clients import secure_sum

        secure_sum._live = secure_sum.LiveClients(capacity=0)  # keeps nothing: every message restores

    from silobridge.federation.client_app import build_client_app
    from silobridge.federation.server_app import run_server
    from silobridge.federation.settings import settings_from_run_config

    with tempfile.TemporaryDirectory() as tmp:
        scenario = args.scenario.resolve() if args.scenario is not None else Path(tmp) / "chain.toml"
        if args.scenario is None:
            scenario.write_text(
                to_toml(chain_scenario(args.firms, seed=20251230, name=f"chain{args.firms}", rounds=args.rounds))
            )
        run_config = {
            "scenario": str(scenario),
            "set": f"training.model=mlp;training.baselines={args.baselines}",
            "aggregation": "secure" if args.secure else "plain",
            "dp": "on" if args.dp else "off",
            "out-dir": str(Path(tmp) / "runs"),
            "run-id": "profile",
            "num-rounds": args.rounds,
            **({"noise-seed": args.noise_seed} if args.noise_seed is not None else {}),
        }
        settings = settings_from_run_config(run_config)
        config = settings.to_run_config()
        grid = InlineGrid(build_client_app(config), len(settings.scenario.firms), config)
        stages = Stages()
        profiler = cProfile.Profile()
        started, cpu_started = time.perf_counter(), time.process_time()
        if not args.no_profile:
            profiler.enable()
        result = run_server(grid, settings, stages, flower_run_id=1, cpus=1)  # type: ignore[arg-type]
        profiler.disable()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        if args.keep is not None:
            shutil.copytree(result.path, args.keep, dirs_exist_ok=True)
        if args.dump is not None:
            profiler.dump_stats(args.dump)
    stream = io.StringIO()
    if not args.no_profile:
        stats = pstats.Stats(profiler, stream=stream).sort_stats("cumulative")
        stats.print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
    ends = [(t, c) for _, t, c in stages.times[1:]] + [(started + wall, cpu_started + cpu)]
    lines = [
        f"wall {wall:.1f} s, CPU {cpu:.1f} s (this process: every firm and the server), {len(grid.contexts)} firms, "
        f"{args.rounds} rounds, secure={args.secure}, dp={args.dp}, profiled={not args.no_profile}"
    ]
    lines += [
        f"  stage {name}: {end - start:.2f} s wall, {cpu_end - cpu_start:.2f} s CPU"
        for (name, start, cpu_start), (end, cpu_end) in zip(stages.times, ends, strict=True)
    ]
    lines += [f"  ClientApp {kind}: {seconds:.2f} s wall" for kind, seconds in sorted(grid.seconds.items())]
    text = "\n".join(lines) + "\n\n" + stream.getvalue()
    if args.out is not None:
        args.out.write_text(text)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
