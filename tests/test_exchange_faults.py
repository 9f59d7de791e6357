"""A networked exchange with faulty partners: one answers late, one answers with an error (its task died).

The exchange (federation/exchange.py) is what the ServerApp runs over the SuperLink; the coordinator
decides from its `failed` entries whether the round goes on without those firms (dropout recovery) or
aborts below threshold (tests/test_simulation.py runs that decision). Here a stand-in grid plays the
SuperLink: each partner's reply becomes pullable on a given pull, or never.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from silobridge.federation import exchange as exchange_module


def _message(*, content: object, dst_node_id: int, message_type: str) -> SimpleNamespace:
    return SimpleNamespace(
        content=content, metadata=SimpleNamespace(dst_node_id=dst_node_id, message_type=message_type)
    )


class Grid:
    """Replies by node: (the pull on which the reply is first there, or None for never; its error reason or None)."""

    def __init__(
        self, replies: dict[int, tuple[int | None, str | None]], *, sources: dict[int, int] | None = None
    ) -> None:
        self.replies = replies
        self.sources = sources or {}
        """Who a node's reply comes from, where not the node itself (the SuperLink's id: its own error reply)."""
        self.pulls = 0
        self.asked: list[set[str]] = []

    def push_messages(self, messages: list[SimpleNamespace]) -> list[str]:
        return [f"id-{m.metadata.dst_node_id}" for m in messages]

    def pull_messages(self, ids: set[str]) -> list[SimpleNamespace]:
        self.pulls += 1
        self.asked.append(set(ids))
        out = []
        for node, (on_pull, error) in self.replies.items():
            if f"id-{node}" in ids and on_pull is not None and self.pulls >= on_pull:
                source = self.sources.get(node, node)
                meta = SimpleNamespace(reply_to_message_id=f"id-{node}", src_node_id=source, message_type="train")
                out.append(
                    SimpleNamespace(
                        metadata=meta,
                        content=f"update-{node}",
                        has_error=lambda error=error: error is not None,
                        error=SimpleNamespace(reason=error, code=0),
                    )
                )
        return out


@pytest.fixture(autouse=True)
def _plain_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exchange_module, "Message", _message)


def test_a_partner_that_answers_after_the_timeout_is_failed_and_the_others_kept() -> None:
    grid = Grid({1: (1, None), 2: (2, None), 3: (None, None)})  # node 3 answers after the exchange closed
    replies = exchange_module.exchange(grid, [(n, "train", "request") for n in (1, 2, 3)], timeout_s=0.2)  # type: ignore[arg-type]
    assert replies.ok == {(1, "train"): "update-1", (2, "train"): "update-2"}
    assert replies.failed == {(3, "train"): "no reply within 0 s"}
    assert grid.asked[0] == {"id-1", "id-2", "id-3"} and grid.asked[-1] == {"id-3"}  # answered ones not asked again


def test_a_partner_whose_task_died_is_failed_with_its_reason_and_not_waited_for() -> None:
    reason = "ClientApp task failed: the process exited with -9"
    grid = Grid({1: (1, None), 2: (1, reason)})
    replies = exchange_module.exchange(grid, [(1, "train", "request"), (2, "train", "request")], timeout_s=30)  # type: ignore[arg-type]
    assert replies.ok == {(1, "train"): "update-1"}
    assert replies.failed == {(2, "train"): reason}
    assert grid.pulls == 1  # an error reply is an answer: the exchange ends at once, not at its 30 s timeout


def test_a_partner_gone_is_failed_with_the_superlinks_reason_when_the_superlink_answers_for_it() -> None:
    """flwr's SuperLink answers a message whose node stopped its heartbeats (killed) with an error from itself,
    not from the node: it is that node's answer, so the node is failed with that reason (before, a reply from the
    SuperLink's node id was dropped as no answer and the node failed as "no reply within 600 s")."""
    assert exchange_module.SUPERLINK_NODE_ID == 1  # flwr 1.41's (flwr.common.constant): what its error replies carry
    reason = "Error: Node Unavailable - The destination node failed to report a heartbeat"
    grid = Grid({1: (1, None), 2: (2, reason)}, sources={2: exchange_module.SUPERLINK_NODE_ID})
    replies = exchange_module.exchange(grid, [(1, "train", "request"), (2, "train", "request")], timeout_s=30)  # type: ignore[arg-type]
    assert replies.ok == {(1, "train"): "update-1"}
    assert replies.failed == {(2, "train"): reason}
    assert grid.pulls == 2


def test_a_reply_from_another_node_than_the_one_asked_is_no_answer() -> None:
    grid = Grid({1: (1, None), 2: (1, None)}, sources={2: 7})
    replies = exchange_module.exchange(grid, [(1, "train", "request"), (2, "train", "request")], timeout_s=0.1)  # type: ignore[arg-type]
    assert replies.ok == {(1, "train"): "update-1"}
    assert replies.failed == {(2, "train"): "no reply within 0 s"}
