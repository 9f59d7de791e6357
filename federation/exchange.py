"""One request/reply exchange between the server and a set of firms over a Flower Grid.

A reply that carries an error, or never comes, marks that firm as failed for this exchange, with
the reason; the caller decides whether the run can go on without it.

Replies are pulled on a schedule that starts fast and backs off (`poll_interval`) rather than at
Grid.send_and_receive's fixed 0.1 s: a short exchange, such as unmasking a secure sum, would
otherwise wait up to 0.1 s after its last reply has arrived.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from flwr.app import Message, RecordDict
from flwr.common.constant import SUPERLINK_NODE_ID as FLOWER_SUPERLINK_NODE_ID
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


MIN_POLL_S = 0.002
MAX_POLL_S = 0.1
POLL_FRACTION = 0.125


def poll_interval(elapsed_s: float) -> float:
    """Seconds to wait before the next pull: an eighth of the time the exchange has taken so far,
    between 2 ms and 0.1 s, so a reply waits at most about 12% of the exchange's length (and never
    more than Flower's own 0.1 s) while a long exchange polls no more often than Flower does."""
    return min(MAX_POLL_S, max(MIN_POLL_S, POLL_FRACTION * elapsed_s))


SUPERLINK_NODE_ID = FLOWER_SUPERLINK_NODE_ID
"""The source of a reply the SuperLink writes itself (node 1 in flwr 1.41): it answers a message whose destination
node stopped sending heartbeats (a partner's machine or process gone) with an error reply, 'Node Unavailable'."""


def send_and_receive(grid: Grid, messages: list[Message], *, timeout_s: float) -> dict[int, Message]:
    """Push `messages` and pull their replies until all have come or `timeout_s` has passed: each reply by the
    index of the message it answers (matched by the message's id: the SuperLink's own error replies come from
    SUPERLINK_NODE_ID, not from the node asked). A message the SuperLink did not take (its id None) gets no reply."""
    started = time.monotonic()
    index_of = {message_id: i for i, message_id in enumerate(grid.push_messages(messages)) if message_id}
    pending = set(index_of)
    replies: dict[int, Message] = {}
    while pending:
        for reply in grid.pull_messages(pending):
            answered = reply.metadata.reply_to_message_id
            if answered in pending:
                replies[index_of[answered]] = reply
                pending.discard(answered)
        elapsed = time.monotonic() - started
        if not pending or elapsed >= timeout_s:
            break
        time.sleep(min(poll_interval(elapsed), timeout_s - elapsed))
    return replies


def exchange(grid: Grid, requests: Iterable[tuple[int, str, RecordDict]], *, timeout_s: float) -> Replies:
    """Send every request at once and collect the replies (one server-to-firms exchange). A reply from another
    node than the one asked (nor the SuperLink) is not an answer; the SuperLink's error reply (the node is gone:
    no heartbeat within 2 intervals) fails the node with Flower's reason, so a killed partner costs the exchange
    about a minute, not its whole timeout."""
    messages = [
        Message(content=content, dst_node_id=node, message_type=message_type)
        for node, message_type, content in requests
    ]
    replies = Replies()
    if not messages:
        return replies
    answers = send_and_receive(grid, messages, timeout_s=timeout_s)
    for i, message in enumerate(messages):
        key = (message.metadata.dst_node_id, message.metadata.message_type)
        reply = answers.get(i)
        if reply is None or reply.metadata.src_node_id not in (key[0], SUPERLINK_NODE_ID):
            replies.failed[key] = f"no reply within {timeout_s:.0f} s"
        elif reply.has_error():
            replies.failed[key] = reply.error.reason or f"error code {reply.error.code}"
        else:
            replies.ok[key] = reply.content
    return replies
