"""A partner killed mid-exchange in a real loopback federation: the round goes on with the rest.

Four partners (SuperLink with TLS and node authentication, one `silobridge join` each, secure aggregation and
record-level DP, 2 rounds). As soon as R2's ClientApp has entered its first training handler, R2's whole partner
(`silobridge join`, its SuperNode, its warm executor and the task's fork: one process group) is SIGKILLed, as a
machine that disappears. R2 never replies; its SuperLink stops seeing its heartbeats and answers its messages
itself ('Node Unavailable', flwr 1.41); the exchange fails R2 with that reason, the secure sum recovers R2's masks
from the three others' shares (threshold 3 of 4), and both rounds complete over R1, D1 and M1. The summary names
R2's dropout, its stage and the reason. Every process is stopped by the test, also on failure.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from silobridge.clients.data import write_firm_data
from silobridge.federation.network.loopback import CLI, LoopbackFederation
from silobridge.scenarios.generator import generate_chain
from silobridge.scenarios.schema import load_scenario
from tests.conftest import ROOT

pytestmark = [pytest.mark.network, pytest.mark.slow]

QUARTET = """# Four firms: a distributor's two retailers, the distributor, its manufacturer.
name = "quartet"
seed = 11
end = 2025-12-29
horizon = 4
test_periods = 13
large_size = 5.0
items = 4
firms = [
  { id = "R1", tier = "retailer", size = 6.0, history = 90, region = "north" },
  { id = "R2", tier = "retailer", size = 2.0, history = 60, region = "south" },
  { id = "D1", tier = "distributor", size = 1.5, history = 45, region = "north" },
  { id = "M1", tier = "manufacturer", size = 1.0, history = 40, region = "south" },
]
links = [
  { supplier = "D1", customer = "R1" },
  { supplier = "D1", customer = "R2" },
  { supplier = "M1", customer = "D1" },
]
[training]
model = "mlp"
rounds = 2
local_epochs = 1
hidden = 8
min_firms = 2
"""
FIRMS = ("R1", "R2", "D1", "M1")
VICTIM = "R2"


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []


@pytest.mark.timeout(1500)
def test_a_partner_killed_mid_exchange_drops_out_and_the_rounds_go_on(tmp_path: Path) -> None:
    scenario_file = tmp_path / "quartet.toml"
    scenario_file.write_text(QUARTET)
    chain = generate_chain(load_scenario(scenario_file))
    with LoopbackFederation(tmp_path, scenario_file, ROOT) as net:
        for firm in FIRMS:
            write_firm_data(tmp_path / "data" / firm, chain.tables[firm].demand, chain.tables[firm].risk)
        net.make_credentials(FIRMS)
        net.start_superlink()
        logs = {firm: tmp_path / f"handoff-{firm}.jsonl" for firm in FIRMS}
        joins = {}
        for firm in FIRMS:
            net.register(firm)
            joins[firm] = net.join(firm, tmp_path / "data" / firm, "--handoff-log", str(logs[firm]))
        out = ("--out", str(tmp_path / "runs"), "--run-id", "net")
        run = net.start("run", [*CLI, "run", str(scenario_file), *out])
        deadline = time.monotonic() + 900
        while not any(row["message_type"] == "train" for row in _rows(logs[VICTIM])):
            assert run.poll() is None, net.log("run")[-4000:]
            assert time.monotonic() < deadline, net.log("run")[-4000:] + net.log(f"node-{VICTIM}")[-4000:]
            time.sleep(0.05)
        os.killpg(joins[VICTIM].pid, signal.SIGKILL)  # the partner's join, SuperNode, executor and its task's fork
        killed_at = time.monotonic()
        joins[VICTIM].wait(timeout=30)
        code = run.wait(timeout=900)
        waited = time.monotonic() - killed_at
        logs_text = net.log("run")[-4000:] + net.log("superlink")[-2000:]
        assert code == 0, logs_text
        summary = json.loads((tmp_path / "runs" / "net" / "summary.json").read_text())

    assert summary["federation"]["rounds"] == 2, logs_text
    dropouts = summary["dropouts"]
    victim = [d for d in dropouts if d["firm"] == VICTIM]
    assert victim, dropouts
    assert any("Node Unavailable" in d["reason"] for d in victim), victim  # the SuperLink's reason, named
    assert all(d["firm"] in (VICTIM, None) for d in dropouts), dropouts  # nobody else dropped
    assert {row["message_type"] for row in _rows(logs[VICTIM])} >= {"train"}
    for firm in ("R1", "D1", "M1"):  # the others served both rounds' training
        assert sum(row["message_type"] == "train" for row in _rows(logs[firm])) >= 2, firm
    print(f"the run finished {waited:.0f} s after {VICTIM} was killed; dropouts: {dropouts}")
