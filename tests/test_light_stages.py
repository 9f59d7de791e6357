"""A partner's stages that neither train nor evaluate run without torch, Opacus or dp-accounting.

A SuperNode starts a fresh ClientApp process per message, so importing the model code costs every
secure-sum key and unmask stage and every analytics step seconds. These tests run the ClientApp in a
fresh interpreter, as Flower does, and check what it imported.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from silobridge.clients.data import write_firm_data
from silobridge.errors import ProtocolError
from silobridge.federation.firm_source import NODE_DATA_DIR, NODE_FEDERATION, FirmFiles, _file_spec, node_firm
from silobridge.federation.settings import settings_from_run_config
from silobridge.scenarios.generator import generate_chain
from silobridge.scenarios.schema import load_scenario
from tests.conftest import ROOT

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"

CHILD = """
import json, sys
from pathlib import Path
from types import SimpleNamespace

import silobridge.federation.client_app as client_app

HEAVY = ("torch", "opacus", "dp_accounting")
imported_on_load = sorted(m for m in HEAVY if m in sys.modules)
from flwr.app import ConfigRecord, Context, RecordDict

from silobridge.federation.records import SECAGG, request_content, secagg_run_id
from silobridge.server.secure_sum import SecureSumServer
from silobridge.contract.config import FederationSpec

spec = FederationSpec.model_validate_json(Path(sys.argv[1]).read_text())
node = json.loads(sys.argv[2])
server = SecureSumServer(spec.aggregation, run_id=secagg_run_id(7))
advertise = server.protocol.start_session(1, ["R1", "D1", "M1"])
content = request_content(spec, **{SECAGG: ConfigRecord(advertise.to_wire())})
message = SimpleNamespace(content=content, metadata=SimpleNamespace(message_type="query.secagg_advertise"))
context = Context(run_id=7, node_id=1, node_config=node, state=RecordDict(), run_config={})
request = client_app._request(context, {}, message)
reply = client_app._secagg_stage("advertise")(request)
print(json.dumps({
    "on_load": imported_on_load,
    "after_advertise": sorted(m for m in HEAVY if m in sys.modules),
    "firm": type(request.firm).__name__,
    "reply_keys": sorted(dict(reply.config_records[SECAGG])),
    "stored": SECAGG in context.state.config_records,
}))
"""


@pytest.fixture(scope="module")
def r1_node(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("light")
    tables = generate_chain(load_scenario(TRIO)).tables["R1"]
    write_firm_data(root / "R1", tables.demand, tables.risk)
    return {NODE_DATA_DIR: str(root / "R1"), NODE_FEDERATION: str(TRIO)}


def test_a_secagg_stage_in_a_fresh_clientapp_process_imports_no_torch(r1_node: dict[str, str], tmp_path: Path) -> None:
    spec = settings_from_run_config({"scenario": str(TRIO), "data": "nodes"}).spec  # the coordinator's, DP calibrated
    assert spec.privacy.enabled and spec.aggregation.mode == "secure"
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(spec.model_dump_json())
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(spec_file), json.dumps(r1_node)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["on_load"] == [] and seen["after_advertise"] == []
    assert seen["firm"] == "FirmFiles" and seen["stored"]
    assert seen["reply_keys"]  # the firm's advertised public keys went back


def test_light_stages_still_hold_the_partner_to_its_federation_file(r1_node: dict[str, str]) -> None:
    """Without the model code the contract is still checked: a coordinator asking for plain aggregation is refused."""
    spec = settings_from_run_config({"scenario": str(TRIO), "data": "nodes"}).spec
    assert isinstance(node_firm(r1_node, spec, "query.secagg_unmask"), FirmFiles)
    assert not isinstance(node_firm(r1_node, spec, "train"), FirmFiles)
    plain = spec.model_copy(update={"aggregation": spec.aggregation.model_copy(update={"mode": "plain"})})
    with pytest.raises(ProtocolError, match=r"firm 'R1', stage 'query.secagg_unmask'.*aggregation differ"):
        node_firm(r1_node, plain, "query.secagg_unmask")


def test_the_uncalibrated_file_spec_differs_only_in_privacy() -> None:
    full, light = _file_spec(TRIO.resolve()), _file_spec(TRIO.resolve(), calibrated=False)
    assert full.privacy != light.privacy
    assert full.model_copy(update={"privacy": light.privacy}) == light
