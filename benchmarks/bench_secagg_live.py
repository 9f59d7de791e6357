"""A firm's secure-sum CPU with its SecAgg client restored for every message, against the live client kept.

A ClientApp stores each firm's SecAgg state in `context.state` after every stage; a process that handles
the firm's next message too now reuses its live client when the stored state is the one it stored
(`clients.secure_sum`), instead of restoring it (which derives every pairwise key again). This drives
`sums` secure sums (the first agrees the keys) of `n` firms through `FirmSecureSum` exactly as the
ClientApp's glue does (state in a ConfigRecord between stages), once with every message restoring and
once with the live client, alternating, `repeats` times each, and reports the firms' CPU seconds per
firm and secure sum (the server's side is not counted) and whether the sums agree.

Run from the repository root:
  python -m benchmarks.bench_secagg_live [--firms 50 200] [--sums 5] [--repeats 3]
Writes benchmarks/results/secagg_live.{json,md}.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import time
import tracemalloc
from typing import Any

import numpy as np
from flwr.app import ConfigRecord

from benchmarks._common import write_results
from silobridge.clients import secure_sum
from silobridge.clients.secure_sum import FirmSecureSum
from silobridge.contract.config import AggregationSpec
from silobridge.privacy.secagg.layout import Segment, VectorLayout
from silobridge.privacy.secagg.messages import AdvertiseRequest, MaskedInput, MaskedInputRequest, Roster, UnmaskRequest
from silobridge.server.secure_sum import SecureSumServer, resolve_aggregation

RUN = "bench-live"
LAYOUT = VectorLayout((Segment("update", 2_000, 1e5),))


class _Firms:
    """Every firm's stages through `FirmSecureSum`, its state only in a stored ConfigRecord; CPU counted."""

    def __init__(self, firms: list[str], spec: AggregationSpec, values: dict[str, dict[str, np.ndarray]]):
        self.spec, self.values = spec, values
        self.stored = {f: ConfigRecord() for f in firms}
        self.cpu = 0.0

    def call(self, firm: str, stage: str, *args: object, **kwargs: object) -> Any:
        started = time.process_time()
        secure = FirmSecureSum(firm, self.spec, run_id=RUN, stored=dict(self.stored[firm]))
        try:
            return getattr(secure, stage)(*args, **kwargs)
        finally:
            self.stored[firm] = ConfigRecord(secure.state())
            self.cpu += time.process_time() - started

    def advertise(self, request: AdvertiseRequest, firms: list[str]) -> dict:
        return {f: self.call(f, "advertise", request.to_wire()) for f in firms}

    def share_keys(self, roster: Roster) -> dict:
        return {f: self.call(f, "share_keys", roster.to_wire()) for f in roster.firms}

    def masked_inputs(self, requests: dict[str, MaskedInputRequest]) -> list:
        masked = []
        for firm, request in requests.items():
            wire, segments = request.to_wire(), self.values[firm]
            release = self.call(firm, "masked_input", wire, LAYOUT, segments, rounding=request.round_number)
            masked.append((firm, MaskedInput.from_wire(release.message, expected_sender=firm, vector=release.vector)))
        return masked

    def unmask(self, request: UnmaskRequest) -> dict:
        return {f: self.call(f, "unmask", request.to_wire()) for f in request.survivors}


def run(n: int, sums: int, *, live: bool) -> tuple[float, list[np.ndarray]]:
    """The firms' CPU seconds over `sums` secure sums of `n` firms, and the sums."""
    return run_sums(n, sums, secure_sum.LiveClients(capacity=secure_sum.LIVE_FIRMS if live else 0))


def run_sums(n: int, sums: int, table: secure_sum.LiveClients) -> tuple[float, list[np.ndarray]]:
    secure_sum._live = table
    firms = [f"firm-{i:04d}" for i in range(n)]
    spec = resolve_aggregation(AggregationSpec(rounds_per_session=sums), n)
    rng = np.random.default_rng(n)
    values = {f: {"update": rng.normal(0, 50, LAYOUT.length)} for f in firms}
    server, transport = SecureSumServer(spec, run_id=RUN), _Firms(firms, spec, values)
    results = [server.sum(transport, LAYOUT, firms, num_firms=n).segments["update"] for _ in range(sums)]
    return transport.cpu, results


def live_memory(n: int, sums: int) -> float:
    """KiB a firm that this process's live-client table holds after `sums` secure sums of `n` firms (tracemalloc:
    what clearing the table frees)."""
    secure_sum._live = secure_sum.LiveClients()
    tracemalloc.start()
    try:
        run_sums(n, sums, secure_sum._live)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
        secure_sum._live.clear()
        gc.collect()
        freed = held - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return freed / 1024 / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--firms", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--sums", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="secagg_live")
    args = parser.parse_args()
    rows = []
    for n in args.firms:
        load_before = " ".join(f"{v:.2f}" for v in os.getloadavg())
        cpu: dict[bool, list[float]] = {False: [], True: []}
        equal = True
        for _ in range(args.repeats):
            before, sums_before = run(n, args.sums, live=False)
            after, sums_after = run(n, args.sums, live=True)
            cpu[False].append(before)
            cpu[True].append(after)
            equal &= all(np.array_equal(a, b) for a, b in zip(sums_before, sums_after, strict=True))
        per = {k: 1000 * statistics.mean(v) / (n * args.sums) for k, v in cpu.items()}
        row = {
            "firms": n,
            "sums": args.sums,
            "repeats": args.repeats,
            "restored_ms_per_firm_sum": round(per[False], 2),
            "live_ms_per_firm_sum": round(per[True], 2),
            "live_vs_restored": round(per[True] / per[False], 3),
            "sums_equal": equal,
            "live_kib_per_firm": round(live_memory(n, args.sums), 1),
            "load_before": load_before,
            "load_after": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        }
        print(row, flush=True)
        rows.append(row)
    json_path, md_path = write_results(
        args.name,
        parameters={"firms": args.firms, "sums": args.sums, "repeats": args.repeats, "vector": LAYOUT.length},
        rows=rows,
        columns=list(rows[0]),
        notes=(
            "CPU seconds (process time) of the firms' side only: restoring or reusing the client, the stage, "
            "storing the state; the first sum of each run agrees the keys. Means over `repeats` alternating runs "
            "of each mode; sums_equal: the two modes' sums equal bit for bit (the masks cancel to the same "
            "integers). Process time holds on a loaded machine better than wall time, but not exactly. "
            "live_kib_per_firm: what the live-client table holds per firm after the sums (tracemalloc, one more "
            "live run: the memory that clearing the table frees)."
        ),
    )
    print(f"wrote {json_path} and {md_path}")


if __name__ == "__main__":
    main()
