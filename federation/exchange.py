"""One request/reply exchange between the server and a set of firms over a Flower Grid.

A reply that carries an error, or never comes, marks that firm as failed for this exchange, with
the reason; the caller decides whether the run can go on without it.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from silobridge.errors import FederationError


@dataclass
class Replies:
    """Replies by (node id, message type), and failures by (node id, message type) with their reason."""

    ok: dict[tuple[int, str], RecordDict] = field(default_factory=dict)
    failed: dict[tuple[int, str], str] = field(default_factory=dict)


def wait_for_nodes(grid: Grid, expected: int, *, timeout_s: float, poll_s: float = 0.1) -> list[int]:
    """Block until exactly `expected` nodes are connected; fail clearly if they do not come."""
    deadline = time.monotonic() + timeout_s
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) > expected:
            raise FederationError(
                f"{len(nodes)} SuperNodes are connected but the scenario has {expected} firms; "
                f'in a local simulation run: flwr run . --federation-config "num-supernodes={expected}"'
            )
        if len(nodes) == expected:
            return nodes
        if time.monotonic() > deadline:
            raise FederationError(
                f"only {len(nodes)} of {expected} firms connected within {timeout_s:.0f} s; "
                f'in a local simulation run: flwr run . --federation-config "num-supernodes={expected}"'
            )
        time.sleep(poll_s)


def exchange(grid: Grid, requests: Iterable[tuple[int, str, RecordDict]], *, timeout_s: float) -> Replies:
    """Send every request at once and collect the replies (one server-to-firms exchange)."""
    messages = [
        Message(content=content, dst_node_id=node, message_type=message_type)
        for node, message_type, content in requests
    ]
    expected = {(m.metadata.dst_node_id, m.metadata.message_type) for m in messages}
    replies = Replies()
    if not messages:
        return replies
    for reply in grid.send_and_receive(messages, timeout=timeout_s):
        key = (reply.metadata.src_node_id, reply.metadata.message_type)
        if key not in expected:
            continue  # not an answer to this exchange
        if reply.has_error():
            replies.failed[key] = reply.error.reason or f"error code {reply.error.code}"
        else:
            replies.ok[key] = reply.content
    for key in expected - replies.ok.keys() - replies.failed.keys():
        replies.failed[key] = f"no reply within {timeout_s:.0f} s"
    return replies
