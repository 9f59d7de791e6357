"""One warm executor process serving many loopback SuperNodes: the many-partner benchmark's partners.

A partner of `silobridge join` is three processes (join's supervisor, the SuperNode, its warm executor: about
0.5 GiB), so 50 do not fit one shared machine. Here the SuperNodes are real (`flower-supernode --isolation
process`, each with its own key, registration and Runtime API), but their tasks are served by one process that
imported torch, Opacus, flwr and the ClientApp once (`warm_executor.preload`) and then forks one poller per node;
each poller runs Flower's SuperExec loop against its node with the warm executor's `TaskExecutor`, which forks per
task exactly as a partner's own executor does. The pollers share the parent's pages copy-on-write.

`python -m benchmarks._shared_executor --nodes FILE --secret FILE [--handoff-dir DIR] [--max-tasks N]`; FILE is
JSON: a list of {"firm", "runtime_address", "node_pid", "node_config"}. Prints "serving FIRM" per poller ready.
SIGTERM stops the
pollers (tasks in flight finish: they answer to their node).
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from silobridge.federation.network.flower_hooks import apply_object_pull_backoff
from silobridge.federation.network.warm_executor import (
    TaskExecutor,
    install_executor,
    preload,
    warm_node_caches,
)


class GatedExecutor(TaskExecutor):
    """The warm executor's forks, at most `slots`' size running at once across all pollers: on 2 cores 50 tasks
    forked together would only queue for the CPU, each holding its memory (torch, the firm's data) meanwhile. A poller
    asks its node for a task only while a slot is free; a slot is taken at launch and given back when the task's
    process is reaped (between polls), however it ended. Two pollers may both see the last slot free: the second
    waits for a slot at launch (its task waits, as it would for a CPU)."""

    def __init__(self, slots: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.slots = slots

    def get_eligible_capacity(self, supported_task_types: set[Any], **kwargs: Any) -> tuple[set[Any], set[str]]:
        if self.slots.get_value() <= 0:
            return set(), set()
        return super().get_eligible_capacity(supported_task_types, **kwargs)

    def launch(self, spec: Any) -> Any:
        self.slots.acquire()
        running = len(self.children)
        result = super().launch(spec)
        if len(self.children) == running:  # refused, nothing forked: the slot goes back
            self.slots.release()
        return result

    def reconcile(self) -> None:
        running = len(self.children)
        super().reconcile()
        for _ in range(running - len(self.children)):
            self.slots.release()


def poll_node(node: dict, secret: bytes, handoff_dir: Path | None, parent: int, slots: Any) -> None:
    """In a forked poller: the node's firm's caches, then Flower's SuperExec loop for this node (never returns)."""
    log = handoff_dir / f"handoff-{node['firm']}.jsonl" if handoff_dir else None
    executor = GatedExecutor(slots, mode="warm", handoff_log=log, node_pid=int(node["node_pid"]))
    module = install_executor(executor)
    warm_node_caches(node["node_config"])
    gc.collect()
    gc.freeze()
    print(f"serving {node['firm']}", flush=True)
    module.run_superexec(
        runtime_api_address=node["runtime_address"],
        insecure=True,
        superexec_auth_secret=secret,
        parent_pid=parent,
        runtime_dependency_install=False,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._shared_executor")
    parser.add_argument("--nodes", type=Path, required=True)
    parser.add_argument("--secret", type=Path, required=True)
    parser.add_argument("--handoff-dir", type=Path, default=None)
    parser.add_argument("--max-tasks", type=int, default=4, help="Tasks running at once, over all nodes.")
    args = parser.parse_args()
    slots = multiprocessing.Semaphore(args.max_tasks)  # shared by the forks below
    nodes = json.loads(args.nodes.read_text())
    secret = args.secret.read_bytes()
    seconds = preload()
    apply_object_pull_backoff(local=True)
    gc.collect()
    gc.freeze()
    print(f"shared executor: imported in {seconds:.2f} s; forking {len(nodes)} pollers", flush=True)
    me = os.getpid()
    pollers: dict[int, str] = {}
    for node in nodes:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                poll_node(node, secret, args.handoff_dir, me, slots)
                code = 0
            except BaseException as err:  # the benchmark reads the log: a poller that died says why
                print(f"poller {node['firm']} failed: {err!r}", file=sys.stderr, flush=True)
            finally:
                os._exit(code)
        pollers[pid] = node["firm"]

    def stop(signum: int, frame: FrameType | None) -> None:
        for pid in pollers:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    while pollers:
        pid, status = os.wait()
        if pid in pollers:
            print(f"poller {pollers.pop(pid)} exited with {os.waitstatus_to_exitcode(status)}", flush=True)
        time.sleep(0)


if __name__ == "__main__":
    main()
