"""Kill a private simulation at many points, resume each, and check it against an uninterrupted run.

    python -m benchmarks.bench_resume_kill                 # 20 points on tests/scenarios/trio.toml, 2 rounds
    python -m benchmarks.bench_resume_kill --points 4 --jobs 1 --name resume_kill_quick
    python -m benchmarks.bench_resume_kill --only 1,4 --jobs 1 --name resume_kill_again   # points 1 and 4 of the 20
    python -m benchmarks.bench_resume_kill --scenario scenarios/default.toml --rounds 3 --name resume_kill_default

Issue 19's test at full size (the test suite does two points, tests/test_resume_run.py). Two model families,
each with its uninterrupted reference run: the MLP (FedAvg rounds of DP-SGD) and the linear family (one
noised sum of sufficient statistics, then the risk model's Newton steps). The points are drawn with a seed
from every named crash point of `federation.crash_points` (in a secure sum with the masked inputs in hand,
before the unmasking; with a round's or release's models pending before its ledger entry; after that entry,
the ledger's last line then torn in half as a crash during the write leaves it) and SIGKILLs of the process
group at seeded delays after the first release reached the ledger. Each killed run's ledger is audited
(a torn line must be reported as a crash prefix, never as tampering), then it is resumed (again after any
further kill) until it completes; its models must equal the uninterrupted run's bit for bit (the firms'
DP-SGD noise and secure-sum rounding, and the linear family's central noise, are seeded), its ledger must
verify with every release charged once, and its spend equal the uninterrupted run's.
Writes benchmarks/results/<name>.json|md after every point.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from benchmarks._common import write_results
from silobridge.federation.crash_points import CRASH_AT
from silobridge.privacy.ledger import verify_ledger

ROOT = Path(__file__).resolve().parents[1]
TRIO = ROOT / "tests" / "scenarios" / "trio.toml"
LEDGER = "privacy_ledger.jsonl"
ROUNDS = 2
NEWTON_STEPS = 3  # the linear family's default risk Newton steps
SIMULATION_TIMEOUT_S = 900
TIMED_OUT = 124
FAMILIES = {"mlp": ["--set", "training.model=mlp"], "linear": ["--set", "training.model=linear"]}
COLUMNS = [
    "point",
    "family",
    "crash_at",
    "kill_after",
    "tear",
    "killed",
    "first_exit",
    "killed_audit",
    "resumes",
    "completed",
    "releases_once",
    "same_spend",
    "bit_for_bit",
    "max_model_difference",
    "torn_recovered",
    "seconds",
]


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
    try:
        return process.wait(timeout=SIMULATION_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # a run that hangs (seen after Ray failed to start under load)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return TIMED_OUT


def _tear(ledger: Path) -> None:
    data = ledger.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    ledger.write_bytes(data[: last + (len(data) - last) // 2])


def _models(run: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {path.name: torch.load(path) for path in sorted((run / "models").glob("*.pt"))}


def model_difference(a: Path, b: Path) -> tuple[bool, float]:
    """Whether two runs' models are equal bit for bit, and their largest absolute coordinate difference
    (inf if the models do not match in names or shapes)."""
    left, right = _models(a), _models(b)
    if not left or sorted(left) != sorted(right) or any(sorted(left[n]) != sorted(right[n]) for n in left):
        return False, float("inf")
    if any(left[n][k].shape != right[n][k].shape for n in left for k in left[n]):
        return False, float("inf")
    equal = all(torch.equal(left[n][k], right[n][k]) for n in left for k in left[n])
    return equal, max(float((left[n][k].double() - right[n][k].double()).abs().max()) for n in left for k in left[n])


def named_points(rounds: int = ROUNDS) -> list[dict[str, Any]]:
    """Every named crash point of both families (the 'entry' ones also tear the ledger's last line)."""
    mlp = [
        {"family": "mlp", "crash_at": f"{point}:{'round ' if point == 'unmask' else ''}{round_number}"}
        for round_number in range(1, rounds + 1)
        for point in ("unmask", "pending", "entry")
    ]
    releases = ["linear/demand", *(f"linear/risk-{step}" for step in range(1, NEWTON_STEPS + 1))]
    linear = [
        {"family": "linear", "crash_at": f"{point}:{release}"}
        for release in releases
        for point in ("unmask", "pending", "entry")
    ]
    return [{**p, "tear": p["crash_at"].startswith("entry:")} for p in mlp + linear]


def points(count: int, seed: int, rounds: int = ROUNDS) -> list[dict[str, Any]]:
    """`count` kill points drawn with `seed`: named ones first (at least one secure-sum and one torn ledger
    write per family, the rest in a seeded order), then SIGKILLs at seeded delays."""
    draw = random.Random(seed)
    named = named_points(rounds)
    first = [
        p
        for p in named
        if p["crash_at"] in ("unmask:round 2", "entry:1", "unmask:linear/risk-1", "entry:linear/demand")
    ]
    rest = [p for p in named if p not in first]
    draw.shuffle(rest)
    timed = [
        {"family": draw.choice(list(FAMILIES)), "kill_after": round(draw.uniform(0.0, 10.0), 2), "tear": False}
        for _ in range(max(0, count - len(named)))
    ]
    return (first + rest + timed)[:count]


def run_point(number: int, point: dict[str, Any], common: list[str], out: Path, reference: Path) -> dict[str, Any]:
    """Kill one run at `point`, audit what it left, resume it until it completes, compare with `reference`."""
    run_id = f"kill-{number:02d}"
    partial, final = out / f".{run_id}.partial", out / run_id
    t0 = time.monotonic()
    status = _run(
        [*common, *FAMILIES[point["family"]], "--run-id", run_id],
        crash_at=point.get("crash_at"),
        kill_after=point.get("kill_after"),
        ledger=partial / LEDGER,
    )
    killed = status == -9
    # the first run's exit status: -9 killed (at its crash point or timed kill), 124 hung past the limit
    row: dict[str, Any] = {"point": number, **point, "killed": killed, "first_exit": status}
    folder = partial if partial.exists() else final
    if killed and point.get("tear") and (folder / LEDGER).exists():
        _tear(folder / LEDGER)
    if (folder / LEDGER).exists():
        try:
            cut = verify_ledger(folder / LEDGER)  # a crash prefix: verified, a torn tail reported, not tampering
            row["killed_audit"] = "torn tail" if cut.torn_tail else ("ended" if cut.ended else "prefix")
        except Exception as err:  # noqa: BLE001 - a failed audit is a result, with its error
            row["killed_audit"] = f"failed: {type(err).__name__}: {err}"
    resumes = 0
    while not (final / "summary.json").exists() and resumes < 3:
        folder = partial if partial.exists() else final
        resumes += 1
        status = _run(["--resume", str(folder)])
    row.update(resumes=resumes, exit=status)
    try:
        audit, expected = verify_ledger(final / LEDGER), verify_ledger(reference / LEDGER)
        equal, difference = model_difference(final, reference)
        row.update(
            completed=audit.end_reason == "completed",
            releases_once=sorted(r.release_id for r in audit.releases)
            == sorted(r.release_id for r in expected.releases)
            and len({r.release_id for r in audit.releases}) == len(audit.releases),
            same_spend=audit.epsilon_overall == expected.epsilon_overall,
            bit_for_bit=equal,
            max_model_difference=difference,
            torn_recovered=any(r.get("torn_tail") for r in audit.resumes),
        )
    except Exception as err:  # noqa: BLE001 - a failed point is a result row, with its error
        row.update(completed=False, error=f"{type(err).__name__}: {err}")
    row["seconds"] = round(time.monotonic() - t0, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=20)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--jobs", type=int, default=2, help="points run side by side")
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_resume_kill"))
    parser.add_argument("--name", default="resume_kill")
    parser.add_argument(
        "--scenario", type=Path, default=TRIO, help="the scenario simulated (default tests/scenarios/trio.toml)"
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="the MLP family's rounds (default 2)")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated point numbers of the --points drawn with --seed (e.g. 1,4): run only those",
    )
    options = parser.parse_args()
    only = {int(number) for number in options.only.split(",") if number.strip()}
    out = options.out.resolve()
    scenario = options.scenario.resolve()
    common = [
        str(scenario),
        "--rounds",
        str(options.rounds),
        "--noise-seed",
        "5",
        "--baselines",
        "none",
        "--out",
        str(out),
    ]
    started = time.monotonic()
    missing = [f for f in FAMILIES if not (out / f"straight-{f}" / "summary.json").exists()]  # kept from before
    with ThreadPoolExecutor(options.jobs) as pool:
        status = dict(
            zip(
                missing,
                pool.map(lambda f: _run([*common, *FAMILIES[f], "--run-id", f"straight-{f}"]), missing),
                strict=True,
            )
        )
    if any(code != 0 for code in status.values()):
        raise SystemExit(f"an uninterrupted run failed: {status}")
    chosen = list(enumerate(points(options.points, options.seed, options.rounds), start=1))
    if only:
        unknown = sorted(only - {number for number, _ in chosen})
        if unknown:
            raise SystemExit(f"--only names points {unknown}, not among the {options.points} drawn")
        chosen = [(number, point) for number, point in chosen if number in only]
    rows: list[dict[str, Any]] = []
    lock = threading.Lock()
    parameters = {
        "scenario": scenario.relative_to(ROOT).as_posix() if scenario.is_relative_to(ROOT) else str(scenario),
        "rounds": options.rounds,
        "families": {f: " ".join(extra) or "scenario's model (mlp)" for f, extra in FAMILIES.items()},
        "points": options.points,
        "seed": options.seed,
        "noise_seed": 5,
        "baselines": "none",
        "jobs": options.jobs,
        "only": sorted(only) or "all",
    }

    def one(item: tuple[int, dict[str, Any]]) -> dict[str, Any]:
        number, point = item
        row = run_point(number, point, common, out, out / f"straight-{point['family']}")
        with lock:
            rows.append(row)
            rows.sort(key=lambda r: r["point"])
            print(row, flush=True)
            write_results(options.name, parameters=parameters, rows=rows, columns=COLUMNS, notes=_notes(rows, started))
        return row

    with ThreadPoolExecutor(options.jobs) as pool:
        list(pool.map(one, chosen))
    write_results(options.name, parameters=parameters, rows=rows, columns=COLUMNS, notes=_notes(rows, started))
    if not all(_ok(r) for r in rows):
        raise SystemExit(1)


def _ok(row: dict[str, Any]) -> bool:
    return bool(
        row.get("completed") and row.get("releases_once") and row.get("same_spend") and row.get("bit_for_bit")
    ) and not str(row.get("killed_audit", "")).startswith("failed")


def _notes(rows: list[dict[str, Any]], started: float) -> str:
    good = sum(_ok(r) for r in rows)
    return (
        f"{good} of {len(rows)} points resumed to the uninterrupted run's models (bit for bit), releases (each "
        f"charged once) and spend, with the killed run's ledger verified. Total {time.monotonic() - started:.0f} s."
    )


if __name__ == "__main__":
    main()
