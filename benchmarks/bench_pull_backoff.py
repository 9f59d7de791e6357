"""How late a SuperNode has a message's objects that reach the SuperLink after it began to pull, per backoff cap.

Run from the repository root: `python -m benchmarks.bench_pull_backoff [--draws 40] [--caps 1.0 0.1]`.
Writes benchmarks/results/pull_backoff.{json,md}.

A SuperNode creates a task as soon as it has a message and then pulls the message's objects from the
SuperLink, which the ServerApp may still be pushing (traced in bench_network: the push took 0.1-1.5 s).
Flower's own `pull_objects` retries a missing object after a wait that starts at 10 ms (our hook) and
doubles up to a cap. Here the real `pull_objects` pulls one object from a stand-in SuperLink that holds
it from a drawn moment on (uniform 0.05-1.5 s, the range of the traced pushes); the lag is when the
pull returned minus that moment. Each draw runs once per cap, side by side; means over the draws. The
wait between tries is a sleep, so the lag hardly depends on the machine's load (the load is recorded).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError, pull_objects

from benchmarks._common import write_results
from silobridge.federation.network.flower_hooks import OUR_PULL_DEFAULTS


def lag_s(ready_after_s: float, cap_s: float) -> float:
    """Seconds from the object's arrival at the stand-in SuperLink to `pull_objects` returning it."""
    started = time.monotonic()
    ready_at = started + ready_after_s

    def pull(object_id: str) -> bytes:
        if time.monotonic() < ready_at:
            raise ObjectUnavailableError(object_id)
        return b"content"

    pull_objects(
        ["object"],
        pull,
        initial_backoff=OUR_PULL_DEFAULTS["initial_backoff"],
        backoff_cap=cap_s,
        max_tries_per_object=round(5000 / cap_s),
    )
    return time.monotonic() - ready_at


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=40)
    parser.add_argument("--caps", type=float, nargs="+", default=[1.0, 0.1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default="pull_backoff")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rng = random.Random(args.seed)
    draws = [rng.uniform(0.05, 1.5) for _ in range(args.draws)]
    lags: dict[float, list[float]] = {cap: [] for cap in args.caps}
    for ready in draws:
        for cap in args.caps:
            lags[cap].append(lag_s(ready, cap))
    rows = [
        {
            "cap_s": cap,
            "draws": len(values),
            "lag_mean_ms": round(1000 * statistics.mean(values), 1),
            "lag_median_ms": round(1000 * statistics.median(values), 1),
            "lag_max_ms": round(1000 * max(values), 1),
        }
        for cap, values in lags.items()
    ]
    parameters = {
        "draws": args.draws,
        "caps_s": args.caps,
        "seed": args.seed,
        "ready_after_s": "uniform 0.05-1.5",
        "load_average_1m_before": round(load_before, 1),
        "load_average_1m": round(os.getloadavg()[0], 1),
    }
    notes = (
        "lag: the object's arrival at the stand-in SuperLink -> Flower's pull_objects returned it (10 ms first wait, "
        "doubling up to the cap, +-20% jitter: Flower's own loop). cap 1.0 s: the object-pull hook until session 9; "
        "0.1 s: since (REMOTE_PULL_CAP_S, federation/network/flower_hooks.py). A SuperNode's task cannot start "
        "before this; each exchange pays it once at the SuperNode and once at the ServerApp's pull of a reply."
    )
    _, md_path = write_results(
        args.results,
        parameters=parameters,
        rows=rows,
        columns=["cap_s", "draws", "lag_mean_ms", "lag_median_ms", "lag_max_ms"],
        notes=notes,
    )
    print(md_path.read_text())


if __name__ == "__main__":
    main()
