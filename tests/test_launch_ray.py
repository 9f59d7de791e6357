"""One Ray instance for many launches (`federation.launch.one_ray_for_many_launches`, which conftest keeps for
the whole test session): Ray stays up between launches, each launch gets fresh actor processes, and Flower's
own teardown is restored after each launch."""

from __future__ import annotations

import os
import time

from flwr.app import Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from silobridge.federation.exchange import wait_for_nodes
from silobridge.federation.launch import _kill_actors_keep_ray, launch, one_ray_for_many_launches

ACTOR_PIDS: list[int] = []
"""The process id each virtual node's reply came from, in the ServerApp's thread of this process."""


def _apps() -> tuple[ServerApp, ClientApp]:
    """A ServerApp that asks every node once for its process id, and the ClientApp that answers."""
    server, client = ServerApp(), ClientApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        nodes = wait_for_nodes(grid, 2, timeout_s=120)
        asks = [Message(content=RecordDict(), dst_node_id=node, message_type="query") for node in nodes]
        replies = list(grid.send_and_receive(asks, timeout=120))
        assert all(not reply.has_error() for reply in replies), [r.error for r in replies if r.has_error()]
        ACTOR_PIDS.extend(int(reply.content["pid"]["pid"]) for reply in replies)

    @client.query()
    def query(message: Message, context: Context) -> Message:
        return Message(RecordDict({"pid": MetricRecord({"pid": os.getpid()})}), reply_to=message)

    return server, client


def _pids_of_one_launch() -> set[int]:
    ACTOR_PIDS.clear()
    launch(*_apps(), num_supernodes=2, cpus=1)
    assert len(ACTOR_PIDS) == 2
    return set(ACTOR_PIDS)


def _dead(pid: int, within_s: float = 10.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_launches_share_ray_but_never_an_actor() -> None:
    import ray
    from flwr.server.superlink.fleet.vce.backend.raybackend import RayBackend

    original = RayBackend.__dict__["terminate"]
    with one_ray_for_many_launches():  # conftest's block is active too: nested blocks keep Ray up
        first = _pids_of_one_launch()
        assert ray.is_initialized()
        node = ray.get_runtime_context().get_node_id()
        assert ray.available_resources().get("CPU") == ray.cluster_resources().get("CPU") == 1  # actors released
        assert all(_dead(pid) for pid in first)  # the first launch's actor processes are gone
        second = _pids_of_one_launch()
        assert ray.get_runtime_context().get_node_id() == node  # the same Ray, not a restarted one
        assert not first & second  # one actor per CPU, fresh for each launch
        assert RayBackend.__dict__["terminate"] is original  # Flower's teardown is back after each launch
    assert ray.is_initialized()  # an inner block leaves Ray to the outer one (conftest's, for the session)
    assert RayBackend.__dict__["terminate"] is not _kill_actors_keep_ray
