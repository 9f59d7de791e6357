"""Cost of keeping a firm's SecAggClient in Flower's context.state: to_state and from_state per stage.

A Flower ClientApp may run every message in a fresh process, so the glue restores each firm's client
from `context.state` before a stage and stores it after. This measures, for one firm of n = 50 with
the default neighbourhood, after each stage of a session's first round: the time of `to_state` and
of `from_state` (and how much of the latter is re-deriving the pairwise keys), and the state's size.

Run from the repository root:

    python -m benchmarks.bench_secagg_state            # full run (well under a minute on 2 cores)
    python -m benchmarks.bench_secagg_state --quick    # smoke run

Writes benchmarks/results/secagg_state.{json,md}. Timings are medians after one warm-up.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import numpy as np
from flwr.app import ConfigRecord
from flwr.common.serde import config_record_to_proto

from benchmarks._common import write_results
from benchmarks.bench_secagg_primitives import firm_ids, timed
from silobridge.privacy.secagg import InMemoryFederation, SecAggClient, SecAggParams, wire_size

RUN = "bench-state"
FIRM = "firm-000"  # the firm whose state is measured
LENGTH = 1_000  # the update length does not enter the state; only the round's bookkeeping does


def stages(n: int, params: SecAggParams) -> Iterator[tuple[str, SecAggClient]]:
    """Drive one session's first round stage by stage; yield (stage just done, the measured client).

    One neighbour of the measured firm drops before its masked input, so the firm also records a
    revealed mask-key share, as in a round with a recovery.
    """
    federation = InMemoryFederation(firm_ids(n), params, run_id=RUN)
    server, clients = federation.server, federation.clients
    client = clients[FIRM]
    yield "none (first message)", client
    request = server.start_session(1, clients)
    adverts = {f: c.advertise(request).to_wire() for f, c in clients.items()}
    yield "advertise_keys", client
    roster = server.receive_advertise(adverts)
    server.receive_shares({f: clients[f].share_keys(roster).to_wire() for f in roster.firms})
    yield "share_keys", client
    dropper = client.neighbours[0]
    requests = server.start_round(1, LENGTH)
    zeros = np.zeros(LENGTH, dtype=np.int64)
    masked = {f: clients[f].masked_input(r, zeros).to_wire() for f, r in requests.items() if f != dropper}
    yield "masked_input", client
    unmask = server.receive_masked_inputs(masked)
    server.finish({f: clients[f].unmask(unmask).to_wire() for f in unmask.survivors})
    yield "unmask", client


def derive_time(client: SecAggClient, repeats: int) -> float:
    """Median seconds of re-deriving the neighbour graph and pairwise keys (part of from_state)."""
    session = client._session
    if session is None or session.roster is None:
        return 0.0
    derive = partial(
        session.derive_links, session.roster, session.neighbourhood, run_id=RUN, firm_id=client.firm_id, stage="state"
    )
    return timed(derive, repeats)[0]


def measure(n: int, params: SecAggParams, repeats: int) -> list[dict[str, Any]]:
    rows = []
    hood = params.neighbourhood(n)
    for stage, client in stages(n, params):
        state = client.to_state()
        to_s, _ = timed(client.to_state, repeats)
        from_s, from_min = timed(partial(SecAggClient.from_state, state, params, run_id=RUN), repeats)
        rows.append(
            {
                "n": n,
                "neighbours": hood.num_neighbours,
                "rounds_per_session": params.rounds_per_session,
                "mask_keys": params.num_mask_keys,
                "after_stage": stage,
                "state_keys": len(state),
                "state_B": wire_size(state),
                "protobuf_B": config_record_to_proto(ConfigRecord(dict(state))).ByteSize(),
                "to_state_ms": to_s * 1e3,
                "from_state_ms": from_s * 1e3,
                "from_state_min_ms": from_min * 1e3,
                "of_which_derive_ms": derive_time(client, repeats) * 1e3,
                "round_trip_ms": (to_s + from_s) * 1e3,
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n = 10, fewer repeats (smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 25, quick 3)")
    args = parser.parse_args(argv)
    repeats = args.repeats or (3 if args.quick else 25)
    n = 10 if args.quick else 50
    load_before = os.getloadavg()
    configs = [
        SecAggParams(modulus_bits=24),
        SecAggParams(modulus_bits=24, rounds_per_session=4),
        SecAggParams(modulus_bits=24, rounds_per_session=4, rounds_per_mask_key=4),
    ]
    rows = [row for params in configs for row in measure(n, params, repeats)]
    parameters = {
        "quick": args.quick,
        "repeats": repeats,
        "measured_firm": FIRM,
        "dropouts": "one neighbour of the measured firm, before its masked input",
        "load_average_1_5_15_min_at_start": [round(x, 2) for x in load_before],
        "load_average_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    notes = (
        "state_B: payload of the flat dict (keys + values, 8 B per int), as `wire_size` counts messages; "
        "protobuf_B: the serialised Flower ConfigRecord. from_state validates every field and re-derives the "
        "neighbour graph, share channel keys and pairwise mask agreements from the stored roster and private keys "
        "(of_which_derive_ms: 1 + mask_keys X25519 agreements per neighbour) rather than storing them. "
        "round_trip_ms = to_state_ms + from_state_ms, paid once per message a firm handles."
    )
    paths = write_results(
        f"secagg_state{'_quick' if args.quick else ''}",
        parameters=parameters,
        rows=rows,
        columns=[
            "n",
            "neighbours",
            "rounds_per_session",
            "mask_keys",
            "after_stage",
            "state_keys",
            "state_B",
            "protobuf_B",
            "to_state_ms",
            "from_state_ms",
            "from_state_min_ms",
            "of_which_derive_ms",
            "round_trip_ms",
        ],
        notes=notes,
    )
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
