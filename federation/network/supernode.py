"""`flower-supernode`, with the SuperNode's polling shortened (`python -m federation.network.supernode`).

`silobridge join` starts this instead of Flower's console script: it applies the pinned hook of
`flower_hooks` and then runs Flower's own `flower_supernode()` with the remaining arguments, so the
node behaves exactly as `flower-supernode` does apart from how long it sleeps between polls (`--idle-poll` while a
run is active, backing off toward Flower's 3 s when idle) and how soon it pulls again an object the SuperLink does
not hold yet (`apply_object_pull_backoff`). With `SILOBRIDGE_TASK_WAKE` set (by `silobridge join`) it wakes its
warm executor when it creates a task (`task_wake`). With `SILOBRIDGE_NET_TRACE` set it also records its steps (`trace`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from silobridge.errors import FederationError
from silobridge.federation.network.flower_hooks import IDLE_POLL_S, apply_object_pull_backoff, apply_supernode_polling
from silobridge.federation.network.task_wake import hook_supernode
from silobridge.federation.network.trace import trace_supernode


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m federation.network.supernode", add_help=False)
    parser.add_argument("--idle-poll", type=float, default=IDLE_POLL_S)
    ours, flower_args = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    try:
        apply_supernode_polling(idle_s=ours.idle_poll)
        apply_object_pull_backoff()
        hook_supernode()
        trace_supernode()
    except FederationError as err:
        sys.exit(f"error: {err}")
    from flwr.supernode.cli import flower_supernode

    sys.argv = ["flower-supernode", *flower_args]
    flower_supernode()


if __name__ == "__main__":
    main()
