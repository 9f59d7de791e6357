"""`silobridge run --resume` on a real (loopback) federation whose coordinator dies mid-run: its ServerApp is
killed right after round 1's first ledger entry, then its SuperLink too; the SuperLink restarts on its database,
the partners' nodes reconnect by themselves, and the run resumes in a new Flower run.

One loopback federation (trio, 2 rounds, secure aggregation, record-level DP-SGD seeded by each partner's own
`--noise-seed`, each node keeping a lifetime odometer). The resumed run completes; its ledger audits clean with
the resume recorded and every release charged once; its models equal a pilot simulation's on the same files
with the same seeds (the uninterrupted run) bit for bit; each partner's odometer charged both rounds to our run
id, across the two Flower runs. Every process the test starts is stopped by it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
import torch

from silobridge.clients.data import write_firm_data
from silobridge.federation.crash_points import CRASH_AT, CRASH_SCOPE
from silobridge.federation.network.deploy import wait_healthy
from silobridge.federation.network.loopback import CLI, LoopbackFederation
from silobridge.federation.privacy_report import LEDGER_FILE
from silobridge.federation.simulation import simulate
from silobridge.privacy.odometer import Odometer
from silobridge.scenarios.generator import generate_chain
from silobridge.scenarios.schema import load_scenario
from tests.conftest import ROOT

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"
FIRMS = ("R1", "D1", "M1")
NOISE_SEED = 17


def _releases(ledger: Path) -> list[dict]:
    if not ledger.exists():
        return []
    entries = []
    for line in ledger.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            continue  # a line being written
    return [entry for entry in entries if entry.get("kind") == "release"]


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.timeout(1800)
def test_a_network_run_resumes_after_its_coordinator_and_superlink_died(tmp_path: Path) -> None:
    root = tmp_path
    with LoopbackFederation(root, TRIO, ROOT) as net:
        chain = generate_chain(load_scenario(TRIO))
        for firm in FIRMS:
            write_firm_data(root / "data" / firm, chain.tables[firm].demand, chain.tables[firm].risk)
        net.make_credentials(FIRMS)
        # every ServerApp this SuperLink starts dies (alone) at round 1's first ledger entry
        net.env[CRASH_AT], net.env[CRASH_SCOPE] = "entry:1", "process"
        superlink = [*CLI, "superlink", "--certs", str(root / "certs"), "--port", str(net.port)]
        superlink += ["--database", str(root / "superlink.db")]  # registrations (and runs) survive a restart
        first_link = net.start("superlink", superlink)
        wait_healthy(net.address, net.ca_cert, timeout_s=120)
        for firm in FIRMS:
            net.register(firm)
        for firm in FIRMS:
            state = ("--state", str(root / "state" / firm), "--lifetime-epsilon", "1000")
            net.join(firm, root / "data" / firm, "--noise-seed", str(NOISE_SEED), *state)

        out = root / "runs"
        first = net.start("run-killed", [*CLI, "run", str(TRIO), "--out", str(out), "--run-id", "net"])
        partial = out / ".net.partial"
        deadline = time.monotonic() + 900
        while not _releases(partial / LEDGER_FILE):
            assert first.poll() is None, net.log("run-killed")[-3000:] + net.log("superlink")[-3000:]
            assert time.monotonic() < deadline, net.log("run-killed")[-3000:] + net.log("superlink")[-3000:]
            time.sleep(0.5)
        time.sleep(3)  # had the ServerApp lived on, round 1's other entries (or round 2) would follow
        cut = _releases(partial / LEDGER_FILE)
        assert len(cut) == 1 and cut[0]["release_id"].startswith("round-1/"), cut
        os.killpg(first.pid, signal.SIGTERM)  # the operator's `silobridge run` goes too (a lost SSH session)
        first.wait(timeout=30)
        os.killpg(first_link.pid, signal.SIGKILL)  # ... and the SuperLink (the coordinator's machine lost)
        first_link.wait(timeout=30)
        assert not (out / "net").exists()
        del net.env[CRASH_AT]
        net.start("superlink-restarted", superlink)  # same port, same database; the nodes were left running
        wait_healthy(net.address, net.ca_cert, timeout_s=120)

        resumed = net.cli("run", "--resume", str(partial), timeout=900)
        logs = resumed.stdout[-3000:] + resumed.stderr[-3000:] + net.log("superlink-restarted")[-3000:]
        logs += "".join(net.log(f"node-{firm}")[-1500:] for firm in FIRMS)
        assert resumed.returncode == 0, logs
        run_dir = out / "net"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["federation"]["rounds"] == 2 and not partial.exists()

        key = summary["privacy"]["ledger_public_key"]
        audit = net.cli("audit", str(run_dir), "--json", "--public-key", key)
        assert audit.returncode == 0, audit.stdout + audit.stderr
        report = json.loads(audit.stdout)
        assert report["verified"] and report["within_budget"]
        assert [r["checkpoint_round"] for r in report["resumes"]] == [0]  # round 1 finished from its pending state
        released = [(r["release_id"], tuple(sorted(r["firms"]))) for r in report["releases"]]
        assert len(released) == len(set(released))  # no release charged twice
        assert {firm: row["releases"] for firm, row in summary["privacy"]["firms"].items()} == dict.fromkeys(FIRMS, 2)

        pilot = simulate(
            {
                "scenario": str(TRIO),
                "out-dir": str(root / "pilot"),
                "run-id": "pilot",
                "data": str(root / "data"),
                "noise-seed": NOISE_SEED,
            },
            cpus=2,
        )
        uninterrupted = pilot.summary["privacy"]
        assert report["epsilon_overall"] == pytest.approx(uninterrupted["epsilon_overall"], rel=1e-6)  # 6 digits
        for kind in ("demand", "risk"):
            ours = torch.load(run_dir / "models" / f"{kind}.pt")
            theirs = torch.load(pilot.path / "models" / f"{kind}.pt")
            assert ours.keys() == theirs.keys()
            for name in ours:  # bit for bit: the partners' DP-SGD noise and their rounding are seeded by their own
                assert torch.equal(ours[name], theirs[name]), f"{kind} {name} differs"

        for firm in FIRMS:  # the partner's own count: both rounds charged to our run, across two Flower runs
            odometer = Odometer.open(root / "state" / firm, firm=firm)
            for spend in odometer.datasets():
                assert spend.runs == ("net",) and odometer.releases_in_run(spend.dataset, "net") == 2, spend
