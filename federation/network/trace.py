"""Where a networked message's time goes: timestamps at every step, from the ServerApp's push to its pull.

Off unless `SILOBRIDGE_NET_TRACE` names a file (the network benchmark sets it). Each process of a
loopback federation then appends one JSON line per step to that file (O_APPEND, lines well under
4 KiB, so processes do not interleave inside a line): the ServerApp's grid (push, each reply
pulled), the SuperNode (task created, message stored, objects pulled from the SuperLink, reply
sent), the warm executor (task acquired) and each task's process (started, input pulled, FAB
installed, ClientApp loaded, handler entered and left, reply and output pushed). `breakdown` joins
them by message and task id into the steps of one exchange. The wrappers are installed only when
tracing is on, on Flower functions read in flwr 1.41 (a missing name raises `FederationError`).
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from silobridge.errors import FederationError

TRACE_ENV = "SILOBRIDGE_NET_TRACE"


def trace_path() -> Path | None:
    """The trace file, or None when tracing is off."""
    raw = os.environ.get(TRACE_ENV, "")
    return Path(raw) if raw else None


def mark(event: str, **fields: Any) -> None:
    """Append one step, stamped now, to the trace (nothing when tracing is off)."""
    path = trace_path()
    if path is None:
        return
    row = {"event": event, "t": time.time(), "pid": os.getpid(), **fields}
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, (json.dumps(row) + "\n").encode())
    finally:
        os.close(fd)


def _wrap(owner: Any, name: str, before: Callable[..., None] | None, after: Callable[..., None] | None) -> None:
    """Replace `owner.name` with a function that marks before and/or after the original."""
    original = getattr(owner, name, None)
    if original is None:
        raise FederationError(f"{owner!r} has no {name}: the network trace was written for flwr 1.41")
    if getattr(original, "_silobridge_traced", False):
        return

    def traced(*args: Any, **kwargs: Any) -> Any:
        if before is not None:
            before(*args, **kwargs)
        result = original(*args, **kwargs)
        if after is not None:
            after(result, *args, **kwargs)
        return result

    traced._silobridge_traced = True  # type: ignore[attr-defined]
    setattr(owner, name, traced)


def trace_supernode() -> None:
    """In a SuperNode process: task created, message stored (inbound and reply), objects pulled, reply sent."""
    if trace_path() is None:
        return
    import flwr.supernode.start_client_internal as loop
    from flwr.supernode.nodestate.in_memory_nodestate import InMemoryNodeState

    _wrap(
        InMemoryNodeState,
        "create_task",
        None,
        lambda task_id, *a, **k: mark("node.task_created", task_id=task_id),
    )
    _wrap(
        InMemoryNodeState,
        "claim_task",
        None,
        lambda token, self, task_id: mark("node.task_claimed", task_id=task_id) if token else None,
    )

    def stored(result: Any, self: Any, message: Any) -> None:
        meta = message.metadata
        mark("node.stored", message_id=meta.message_id, reply_to=meta.reply_to_message_id, type=meta.message_type)

    _wrap(InMemoryNodeState, "store_message", None, stored)
    _wrap(loop, "pull_objects", lambda *a, **k: mark("node.pull_start"), lambda *a, **k: mark("node.pulled"))
    _wrap(loop, "_push_messages", lambda *a, **k: mark("node.wait_reply"), lambda *a, **k: mark("node.reply_sent"))


def trace_task(task_id: int) -> None:
    """In a task's process (after the fork or in a fresh interpreter): Flower's ClientApp runner, step by step."""
    if trace_path() is None:
        return
    import flwr.supernode.runtime.run_clientapp as runner
    from flwr.clientapp.client_app import ClientApp

    mark("task.start", task_id=task_id)

    def pulled(result: Any, *a: Any, **k: Any) -> None:
        message = result[0]
        mark("task.input", task_id=task_id, message_id=message.metadata.message_id, type=message.metadata.message_type)

    _wrap(runner, "pull_task_input", None, pulled)
    _wrap(runner, "install_from_fab", None, lambda *a, **k: mark("task.fab", task_id=task_id))
    _wrap(ClientApp, "__call__", lambda *a, **k: mark("task.enter", task_id=task_id), None)
    _wrap(
        runner,
        "push_message",
        lambda *a, **k: mark("task.leave", task_id=task_id),
        lambda *a, **k: mark("task.pushed", task_id=task_id),
    )
    _wrap(runner, "push_task_output", None, lambda *a, **k: mark("task.output", task_id=task_id))


def trace_grid() -> None:
    """In the ServerApp's process: each push (its message ids) and each reply pulled."""
    if trace_path() is None:
        return
    from flwr.superlink.grid.http_grid import HttpGrid

    _wrap(
        HttpGrid,
        "push_messages",
        lambda *a, **k: mark("server.push_start"),
        lambda ids, *a, **k: mark("server.pushed", message_ids=list(ids)),
    )

    def replies(result: Any, *a: Any, **k: Any) -> None:
        for reply in result:
            mark("server.pulled", reply_to=reply.metadata.reply_to_message_id, type=reply.metadata.message_type)

    _wrap(HttpGrid, "pull_messages", None, replies)


# -- reading a trace --------------------------------------------------------------------------------

STEPS = (
    ("push", "server.push_start", "server.pushed"),
    ("to_node", "server.pushed", "node.task_created"),
    ("node_objects", "node.task_created", "node.pulled"),
    ("to_executor", "node.task_created", "exec.acquired"),
    ("fork", "exec.acquired", "task.start"),
    ("input", "task.start", "task.input"),
    ("fab", "task.input", "task.fab"),
    ("load_app", "task.fab", "task.enter"),
    ("handler", "task.enter", "task.leave"),
    ("push_reply", "task.leave", "task.pushed"),
    ("to_link", "task.pushed", "node.reply_sent"),
    ("to_server", "node.reply_sent", "server.pulled"),
)
"""One exchange's steps for one message: (name, from event, to event). `node_objects` runs beside `to_executor`,
`fork` and `input` (a task pulls objects the SuperNode is still pulling); the others follow one another."""


def load(path: Path) -> list[dict[str, Any]]:
    """A trace's rows (an absent file is an empty trace)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def per_message(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, float]]:
    """Each message's event times, joined by message id (server, SuperNode, task) and task id (node, executor)."""
    rows = sorted(rows, key=lambda r: r["t"])
    pushed_at: dict[str, tuple[float, float]] = {}
    push_start = 0.0
    by_task: dict[int, dict[str, float]] = defaultdict(dict)
    by_message: dict[str, dict[str, float]] = defaultdict(dict)
    node_tasks: dict[int, list[int]] = defaultdict(list)  # SuperNode pid -> its task ids, in order
    task_node: dict[int, int] = {}
    for row in rows:
        event, t = row["event"], row["t"]
        if event == "server.push_start":
            push_start = t
        elif event == "server.pushed":
            for mid in row["message_ids"]:
                pushed_at[mid] = (push_start, t)
        elif event == "node.task_created":
            node_tasks[row["pid"]].append(row["task_id"])
            by_task[row["task_id"]]["node.task_created"] = t
            task_node[row["task_id"]] = row["pid"]
        elif event == "node.stored" and not row["reply_to"]:
            pass  # the inbound message: joined through the task's input below
        elif event in ("node.pulled",):
            tasks = node_tasks.get(row["pid"])
            if tasks:
                by_task[tasks[-1]].setdefault(event, t)
        elif event == "node.reply_sent":
            tasks = node_tasks.get(row["pid"])
            if tasks:
                by_task[tasks[-1]].setdefault(event, t)
        elif event in ("exec.acquired",) or event.startswith("task."):
            by_task[row["task_id"]].setdefault(event, t)
            if event == "task.input":
                by_message[row["message_id"]]["task_id"] = row["task_id"]
        elif event == "server.pulled":
            by_message[row["reply_to"]]["server.pulled"] = t
    messages = []
    for mid, (start, end) in pushed_at.items():
        times = {"server.push_start": start, "server.pushed": end}
        joined = by_message.get(mid, {})
        task_id = joined.get("task_id")
        if task_id is not None:
            times.update(by_task[int(task_id)])
        if "server.pulled" in joined:
            times["server.pulled"] = joined["server.pulled"]
        messages.append(times)
    return messages


SPANS = (
    ("round_trip", "server.push_start", "server.pulled"),
    ("handoff", "exec.acquired", "task.enter"),
    ("handoff_available", "node.pulled", "task.enter"),
)
"""Spans over several steps: the whole trip; the hand-off from the executor's taking the task (the executor's own
record); and from the message being whole at the SuperNode (its objects pulled from the SuperLink: issue 20's
'available at the SuperNode') to our handler. A warm executor takes a task before the node has the message's
objects, so the first hand-off also holds the SuperLink -> SuperNode transfer."""


def breakdown(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Median and max milliseconds of each step over the messages that have both ends, and of each span."""
    messages = per_message(rows)
    out: dict[str, dict[str, float]] = {}
    for name, start, end in (*STEPS, *SPANS):
        spans = [(m[end] - m[start]) * 1000 for m in messages if start in m and end in m]
        if spans:
            out[name] = {
                "median_ms": round(statistics.median(spans), 1),
                "max_ms": round(max(spans), 1),
                "n": len(spans),
            }
    return out
