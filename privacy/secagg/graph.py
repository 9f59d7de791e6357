"""The SecAgg+ neighbour graph: who masks with whom, derived only from public data.

Firms sit on a ring in an order given by SHA-256 of (run id, session, the sorted roster, firm id);
each is linked to the k/2 firms on either side (a Harary graph, Bell et al. CCS 2020). Every firm and
the server compute the same graph with no extra message. k = n - 1 is the complete graph, i.e.
classic SecAgg.
"""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping, Sequence

from silobridge.errors import ConfigError
from silobridge.privacy.secagg.kdf import digest

Graph = Mapping[str, tuple[str, ...]]


def neighbour_graph(run_id: str, session: int, firms: Sequence[str], num_neighbours: int) -> dict[str, tuple[str, ...]]:
    """Each firm's neighbours (sorted), for a k-regular graph over `firms`.

    Memoised (a firm restored for every message would hash the whole roster each time); the
    caller gets its own dict.
    """
    return dict(_graph(run_id, session, tuple(sorted(firms)), num_neighbours))


@functools.lru_cache(maxsize=256)
def _graph(run_id: str, session: int, roster: tuple[str, ...], num_neighbours: int) -> dict[str, tuple[str, ...]]:
    n = len(roster)
    if len(set(roster)) != n:
        raise ConfigError("firm ids in a roster must be unique", field="firms")
    if not 1 <= num_neighbours <= n - 1:
        raise ConfigError(
            f"num_neighbours must lie in [1, {n - 1}] for {n} firms, got {num_neighbours}", field="num_neighbours"
        )
    if num_neighbours == n - 1:
        return {firm: tuple(f for f in roster if f != firm) for firm in roster}
    if num_neighbours % 2:
        raise ConfigError(f"num_neighbours must be even below n - 1, got {num_neighbours}", field="num_neighbours")
    roster_digest = digest("roster", *roster)
    ring = sorted(roster, key=lambda firm: digest("neighbour-ring", run_id, session, roster_digest, firm))
    half = num_neighbours // 2
    graph: dict[str, tuple[str, ...]] = {}
    for position, firm in enumerate(ring):
        around = {ring[(position + step) % n] for step in range(-half, half + 1) if step}
        graph[firm] = tuple(sorted(around))
    return graph


def is_connected(nodes: Collection[str], graph: Graph) -> bool:
    """Whether `nodes` form one connected component of the subgraph of `graph` they induce."""
    remaining = set(nodes)
    if not remaining:
        return False
    frontier = [next(iter(remaining))]
    remaining.discard(frontier[0])
    while frontier:
        firm = frontier.pop()
        for other in graph[firm]:
            if other in remaining:
                remaining.discard(other)
                frontier.append(other)
    return not remaining
