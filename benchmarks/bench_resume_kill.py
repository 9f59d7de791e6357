"""Kill a private simulation at many points, resume each, and check it against an uninterrupted run.

    python -m benchmarks.bench_resume_kill                 # 20 points on tests/scenarios/trio.toml, 3 rounds
    python -m benchmarks.bench_resume_kill --points 4 --name resume_kill_quick

Issue 19's test at full size (the test suite does two points, tests/test_resume_run.py). The points are
chosen deterministically (seeded): every named crash point of `federation.crash_points` for each round
(in a round's secure sum before the unmasking, with the round's models pending before its ledger
entries, after its first ledger entry), the last of which also tears the ledger's last line as a crash
in mid-write would, then SIGKILLs of the process group at seeded delays after the first release reached
the ledger. Each killed run is resumed (again after any further kill) until it completes; then its models
must equal the uninterrupted run's within about a float32 ulp (DP-SGD noise seeded; not yet bit for bit,
see the README; `max_model_difference` reports it), its ledger must verify with every
release charged once, and its spend equal the uninterrupted run's. Writes benchmarks/results/<name>.json|md.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import write_results
from silobridge.federation.crash_points import CRASH_AT
from silobridge.privacy.ledger import verify_ledger

ROOT = Path(__file__).resolve().parents[1]
TRIO = ROOT / "tests" / "scenarios" / "trio.toml"
LEDGER = "privacy_ledger.jsonl"
ROUNDS = 3
TOLERANCE = 1e-6  # about a float32 ulp of the weights: resumed runs are not yet bit for bit (README)


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "silobridge.federation.cli", "simulate", *args, "--plain"]


def _env(crash_at: str | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop(CRASH_AT, None)
    if crash_at is not None:
        env[CRASH_AT] = crash_at
    return env


def _run(
    args: list[str], crash_at: str | None = None, kill_after: float | None = None, ledger: Path | None = None
) -> int:
    """One simulation in its own process group; killed at `crash_at`, or `kill_after` seconds after `ledger`
    holds its first release. Returns its exit status (-9: killed)."""
    process = subprocess.Popen(
        _command(*args),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=_env(crash_at),
        start_new_session=True,
    )
    if kill_after is not None and ledger is not None:
        while process.poll() is None:
            if ledger.exists() and b'"kind":"release"' in ledger.read_bytes():
                time.sleep(kill_after)
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
    return process.wait(timeout=1800)


def _tear(ledger: Path) -> None:
    data = ledger.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    ledger.write_bytes(data[: last + (len(data) - last) // 2])


def _models(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {path.name: torch.load(path) for path in sorted((run / "models").glob("*.pt"))}


def _model_difference(a: Path, b: Path) -> float:
    """The largest absolute difference of any model coordinate (inf if the models do not match in shape)."""
    left, right = _models(a), _models(b)
    if sorted(left) != sorted(right) or any(sorted(left[n]) != sorted(right[n]) for n in left):
        return float("inf")
    return max(float((left[n][k] - right[n][k]).abs().max()) for n in left for k in left[n])


def points(count: int, seed: int) -> list[dict[str, Any]]:
    """The kill points: every named crash point per round first, then seeded delays."""
    named = [
        {"crash_at": f"{point}:{'round ' if point == 'unmask' else ''}{round_number}", "tear": point == "entry"}
        for round_number in range(1, ROUNDS + 1)
        for point in ("unmask", "pending", "entry")
    ]
    draw = random.Random(seed)
    timed = [{"kill_after": round(draw.uniform(0.0, 12.0), 2)} for _ in range(max(0, count - len(named)))]
    return (named + timed)[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_resume_kill"))
    parser.add_argument("--name", default="resume_kill")
    options = parser.parse_args()
    out = options.out.resolve()
    common = [str(TRIO), "--rounds", str(ROUNDS), "--noise-seed", "5", "--out", str(out)]
    started = time.monotonic()
    if _run([*common, "--run-id", "straight"]) != 0:
        raise SystemExit("the uninterrupted run failed")
    reference = verify_ledger(out / "straight" / LEDGER)
    rows = []
    for number, point in enumerate(points(options.points, options.seed), start=1):
        run_id = f"kill-{number:02d}"
        partial, final = out / f".{run_id}.partial", out / run_id
        t0 = time.monotonic()
        status = _run(
            [*common, "--run-id", run_id],
            crash_at=point.get("crash_at"),
            kill_after=point.get("kill_after"),
            ledger=partial / LEDGER,
        )
        killed = status == -9
        if killed and point.get("tear") and (partial / LEDGER).exists():
            _tear(partial / LEDGER)
        resumes = 0
        while not (final / "summary.json").exists() and resumes < 3:
            folder = partial if partial.exists() else final
            resumes += 1
            status = _run(["--resume", str(folder)])
        row: dict[str, Any] = {"point": number, **point, "killed": killed, "resumes": resumes, "exit": status}
        try:
            audit = verify_ledger(final / LEDGER)
            row.update(
                completed=audit.end_reason == "completed",
                releases_once=sorted(r.release_id for r in audit.releases)
                == sorted(r.release_id for r in reference.releases),
                same_spend=audit.epsilon_overall == reference.epsilon_overall,
                max_model_difference=_model_difference(final, out / "straight"),
                torn_recovered=any(r.get("torn_tail") for r in audit.resumes),
            )
        except Exception as err:  # noqa: BLE001 - a failed point is a result row, with its error
            row.update(completed=False, error=f"{type(err).__name__}: {err}")
        row["seconds"] = round(time.monotonic() - t0, 1)
        rows.append(row)
        print(row, flush=True)
    ok = all(
        r.get("completed")
        and r.get("releases_once")
        and r.get("same_spend")
        and r.get("max_model_difference", 1.0) < TOLERANCE
        for r in rows
    )
    write_results(
        options.name,
        parameters={
            "scenario": "tests/scenarios/trio.toml",
            "rounds": ROUNDS,
            "points": options.points,
            "seed": options.seed,
            "noise_seed": 5,
        },
        rows=rows,
        columns=[
            "point",
            "crash_at",
            "kill_after",
            "tear",
            "killed",
            "resumes",
            "completed",
            "releases_once",
            "same_spend",
            "max_model_difference",
            "torn_recovered",
            "seconds",
        ],
        notes=f"All points resumed to the uninterrupted run's models and spend: {ok}. "
        f"Total {time.monotonic() - started:.0f} s.",
    )
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
