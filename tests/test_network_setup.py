"""The pieces a coordinator and a partner use before any process starts: certificates, keys, data checks."""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import pandas as pd
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from silobridge.clients.data import write_firm_data
from silobridge.errors import ConfigError, DataError, ProtocolError
from silobridge.federation.cli import app
from silobridge.federation.firm_source import NODE_DATA_DIR, NODE_FEDERATION, node_firm, validate_pilot
from silobridge.federation.network.certs import make_certificates
from silobridge.federation.network.deploy import node_config_text, supernode_command
from silobridge.federation.network.keys import fingerprint, make_node_keys
from silobridge.federation.settings import settings_from_run_config
from silobridge.scenarios.generator import generate_chain
from silobridge.scenarios.schema import load_scenario
from tests.conftest import ROOT

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"
runner = CliRunner()


@pytest.fixture(scope="module")
def trio_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trio-data")
    chain = generate_chain(load_scenario(TRIO))
    for firm, tables in chain.tables.items():
        write_firm_data(root / firm, tables.demand, tables.risk)
    return root


def _copy(src: Path, dst: Path) -> Path:
    for firm in src.iterdir():
        (dst / firm.name).mkdir(parents=True)
        for file in firm.iterdir():
            (dst / firm.name / file.name).write_bytes(file.read_bytes())
    return dst


# -- certificates -----------------------------------------------------------------------------------


def test_certificates_chain_to_the_ca_and_name_the_hosts(tmp_path: Path) -> None:
    files = make_certificates(tmp_path, ["127.0.0.1", "link.example.org"], days=30)
    ca = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)  # raises if the CA did not sign it
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["link.example.org"]
    assert (server.not_valid_after_utc - server.not_valid_before_utc).days == 30
    for key in (files.ca_key, files.server_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    server_key = serialization.load_pem_private_key(files.server_key.read_bytes(), None)
    assert server_key.public_key().public_numbers() == server.public_key().public_numbers()  # type: ignore[union-attr]


def test_certificates_refuse_to_overwrite_and_need_a_host(tmp_path: Path) -> None:
    make_certificates(tmp_path, ["127.0.0.1"])
    with pytest.raises(ConfigError, match="--overwrite"):
        make_certificates(tmp_path, ["127.0.0.1"])
    with pytest.raises(ConfigError, match="at least one host"):
        make_certificates(tmp_path / "other", [])


# -- node keys --------------------------------------------------------------------------------------


def test_node_keys_are_p384_openssh_with_an_ssh_keygen_fingerprint(tmp_path: Path) -> None:
    files = make_node_keys(tmp_path / "R1.key", comment="R1")
    private = serialization.load_ssh_private_key(files.private_key.read_bytes(), None)
    public = serialization.load_ssh_public_key(files.public_key.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey) and isinstance(private.curve, ec.SECP384R1)
    assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]
    assert stat.S_IMODE(files.private_key.stat().st_mode) == 0o600
    line = files.public_key.read_bytes()
    assert line.startswith(b"ecdsa-sha2-nistp384 ") and line.rstrip().endswith(b" R1")
    digest = hashlib.sha256(base64.b64decode(line.split()[1])).digest()
    assert files.fingerprint == "SHA256:" + base64.b64encode(digest).decode().rstrip("=") == fingerprint(line)
    with pytest.raises(ConfigError, match="key rotation"):
        make_node_keys(tmp_path / "R1.key")
    rotated = make_node_keys(tmp_path / "R1.key", overwrite=True)
    assert rotated.fingerprint != files.fingerprint


# -- a partner's data -------------------------------------------------------------------------------


def test_validate_accepts_a_declared_firms_files_and_sends_nothing(trio_data: Path) -> None:
    result = runner.invoke(app, ["validate", str(trio_data / "D1"), "--config", str(TRIO)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "firm 'D1': valid" in text and "nothing was sent" in text


def test_validate_reports_every_problem_with_file_row_and_column(trio_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "R1"
    _copy(trio_data, tmp_path)
    demand = pd.read_csv(folder / "demand.csv")
    demand.loc[3, "units"] = -5
    demand.loc[7, "date"] = "not-a-date"
    demand.to_csv(folder / "demand.csv", index=False)
    risk = pd.read_csv(folder / "risk.csv").drop(columns=["financial_stress"])
    risk.to_csv(folder / "risk.csv", index=False)
    result = runner.invoke(app, ["validate", str(folder), "--config", str(TRIO)])
    assert result.exit_code == 2
    text = " ".join(result.output.split())
    assert "demand.csv, row 5, column 'units'" in text  # CSV line numbers: the header is line 1
    assert "demand.csv, row 9, column 'date'" in text
    assert "risk.csv" in text and "financial_stress" in text


def test_validate_refuses_a_firm_the_federation_does_not_declare(trio_data: Path, tmp_path: Path) -> None:
    _copy(trio_data, tmp_path)
    (tmp_path / "R1").rename(tmp_path / "Z7")
    result = runner.invoke(app, ["validate", str(tmp_path / "Z7"), "--config", str(TRIO)])
    assert result.exit_code == 2
    assert "firm 'Z7' is not declared" in " ".join(result.output.split())


def test_a_pilot_needs_one_valid_folder_per_declared_firm(trio_data: Path, tmp_path: Path) -> None:
    pilot = _copy(trio_data, tmp_path / "pilot")

    def settings():  # noqa: ANN202
        return settings_from_run_config({"scenario": str(TRIO), "data": str(pilot), "dp": "off"})

    validate_pilot(settings())  # all good
    (pilot / "M1").rename(pilot / "M9")
    with pytest.raises(ConfigError, match=r"no folder for declared firms \['M1'\].*undeclared firms \['M9'\]"):
        validate_pilot(settings())
    (pilot / "M9").rename(pilot / "M1")
    for firm in ("R1", "D1"):  # two broken firms: both reported at once
        frame = pd.read_csv(pilot / firm / "demand.csv").drop(columns=["units"])
        frame.to_csv(pilot / firm / "demand.csv", index=False)
    with pytest.raises(DataError) as caught:
        validate_pilot(settings())
    text = str(caught.value)
    assert "R1/demand.csv" in text and "D1/demand.csv" in text and "'units'" in text


def test_a_supernode_without_its_node_config_says_what_to_set(trio_data: Path) -> None:
    spec = settings_from_run_config({"scenario": str(TRIO), "dp": "off"}).spec
    with pytest.raises(ConfigError, match="silobridge join"):
        node_firm({}, spec)
    firm = node_firm({NODE_DATA_DIR: str(trio_data / "D1"), NODE_FEDERATION: str(TRIO)}, spec)
    assert firm.firm_id == "D1" and firm.manifest().tier == "distributor" and firm.manifest().group == "small"
    with pytest.raises(ConfigError, match="not declared"):
        node_firm({NODE_DATA_DIR: str(trio_data / "D1"), NODE_FEDERATION: str(TRIO), "firm-id": "Q1"}, spec)


def test_a_firms_own_budget_is_the_stricter_of_node_and_federation(trio_data: Path) -> None:
    spec = settings_from_run_config({"scenario": str(TRIO), "dp": "off"}).spec
    config = {NODE_DATA_DIR: str(trio_data / "R1"), NODE_FEDERATION: str(TRIO), "budget-epsilon": 2.5}
    assert node_firm(config, spec).manifest().budget_epsilon == 2.5


def test_only_the_partner_can_seed_its_own_dp_noise(trio_data: Path) -> None:
    """The coordinator knows every public number of a run; a DP-SGD seed it sets (or could derive) would let it
    replay a firm's noise. So a real federation's run config may not carry one; a partner's node config may."""
    with pytest.raises(ConfigError, match="noise-seed") as refused:
        settings_from_run_config({"scenario": str(TRIO), "data": "nodes", "noise-seed": 3})
    assert "silobridge join --noise-seed" in str(refused.value)
    with pytest.raises(ConfigError, match="noise-seed"):
        settings_from_run_config({"scenario": str(TRIO), "noise-seed": -2})
    assert settings_from_run_config({"scenario": str(TRIO), "noise-seed": 3}).noise_seed == 3  # a simulation may
    assert settings_from_run_config({"scenario": str(TRIO)}).noise_seed is None
    spec = settings_from_run_config({"scenario": str(TRIO), "data": "nodes"}).spec
    node = {NODE_DATA_DIR: str(trio_data / "R1"), NODE_FEDERATION: str(TRIO)}
    assert node_firm(node, spec).noise_seed is None
    assert node_firm({**node, "noise-seed": 17}, spec).noise_seed == 17
    assert node_firm({**node, "noise-seed": -1}, spec).noise_seed is None
    for bad in ("x", "--5", 2**63, -2, True):
        with pytest.raises(ConfigError, match="noise-seed"):
            node_firm({**node, "noise-seed": bad}, spec)


def test_a_partners_node_builds_its_firm_from_its_own_node_config_never_the_run_config(trio_data: Path) -> None:
    """The coordinator writes the run config; the refusal above is only its own check. What protects a partner
    is that its ClientApp (no `partition-id`) never reads a seed from the run config, whatever it holds."""
    from types import SimpleNamespace

    from flwr.app import Context, RecordDict

    from silobridge.federation.client_app import _request
    from silobridge.federation.records import request_content

    spec = settings_from_run_config({"scenario": str(TRIO), "data": "nodes"}).spec
    # Flower builds a Message only inside a run; the request reads just its content and type.
    message = SimpleNamespace(content=request_content(spec), metadata=SimpleNamespace(message_type="train"))
    hostile = {"scenario": str(TRIO), "data": "", "noise-seed": 3}
    node = {NODE_DATA_DIR: str(trio_data / "R1"), NODE_FEDERATION: str(TRIO)}

    def firm_of(node_config: dict, run_id: int) -> object:
        context = Context(run_id=run_id, node_id=1, node_config=node_config, state=RecordDict(), run_config=hostile)
        return _request(context, hostile, message).firm

    assert firm_of(node, 1).noise_seed is None
    assert firm_of({**node, "noise-seed": 17}, 1).noise_seed == 17
    # A simulated node (the analyst's own machine holds every firm) does take the run's seed.
    assert firm_of({"partition-id": 0, "num-partitions": 3}, 2).noise_seed == 3


def test_supernode_command_pins_the_ca_and_quotes_the_node_config(tmp_path: Path) -> None:
    command = supernode_command(
        superlink="10.0.0.5:9093",
        ca_cert=tmp_path / "ca.pem",
        private_key=tmp_path / "R1.key",
        data_dir=tmp_path / "R1",
        federation=tmp_path / "federation.toml",
        firm_id="R1",
        runtime_port=9094,
        budget_epsilon=3.0,
        noise_seed=17,
    )
    assert "--insecure" not in command
    assert command[command.index("--root-certificates") + 1] == str((tmp_path / "ca.pem").resolve())
    config = command[command.index("--node-config") + 1]
    assert f'data-dir="{(tmp_path / "R1").resolve()}"' in config and "budget-epsilon=3.0" in config
    assert "noise-seed=17" in config
    with pytest.raises(ConfigError, match="quotes"):
        node_config_text({"data-dir": 'a"b'})


def test_a_partner_refuses_settings_that_differ_from_its_federation_file(trio_data: Path) -> None:
    """A dishonest coordinator cannot ask a partner for plain aggregation, a lower threshold or no DP."""
    node = {NODE_DATA_DIR: str(trio_data / "R1"), NODE_FEDERATION: str(TRIO)}
    honest = settings_from_run_config({"scenario": str(TRIO), "data": "nodes"}).spec
    assert node_firm(node, honest, "train").firm_id == "R1"
    plain = honest.model_copy(update={"aggregation": honest.aggregation.model_copy(update={"mode": "plain"})})
    with pytest.raises(ProtocolError, match=r"firm 'R1', stage 'train'.*aggregation differ"):
        node_firm(node, plain, "train")
    with pytest.raises(ProtocolError, match="aggregation differ"):
        node_firm(node, plain, "query.analytics")  # no statistic leaves in the clear, whatever the message
    weaker = honest.model_copy(update={"privacy": honest.privacy.model_copy(update={"noise_multiplier": 0.01})})
    no_dp = honest.model_copy(update={"privacy": honest.privacy.model_copy(update={"enabled": False})})
    for spec in (weaker, no_dp):
        for releasing in ("train", "evaluate", "train.baselines"):
            with pytest.raises(ProtocolError, match="privacy differ"):
                node_firm(node, spec, releasing)
    # An analytics step's DP is the coordinator's central noise (accounted in its ledger), not DP-SGD's.
    assert node_firm(node, no_dp, "query.analytics").firm_id == "R1"


def test_queries_reach_the_server_app_through_flwr_run_config_intact() -> None:
    """The `queries` run-config value survives `flwr run --run-config` (Flower's own parser), quotes included."""
    from flwr.common.config import parse_config_args

    from silobridge.federation.network.deploy import run_command
    from silobridge.federation.query_run import QueryBudget, QueryJob, QueryRequest

    job = QueryJob(
        (QueryRequest("histogram", {"column": "it's units", "edges": [0, 1.5, 10]}), QueryRequest("count", {})),
        QueryBudget(2.0, 1e-6, "pld", None),
    )
    command = run_command(ROOT, {"scenario": "a b.toml", "num-rounds": 0, "queries": job.to_run_config()})
    parsed = parse_config_args([command[command.index("--run-config") + 1]])
    assert parsed["scenario"] == "a b.toml" and parsed["num-rounds"] == 0
    assert QueryJob.from_run_config(parsed["queries"]) == job
    assert QueryJob.from_run_config(QueryJob((QueryRequest("count", {}),), None).to_run_config()).budget is None
    settings_from_run_config({"scenario": str(TRIO), "queries": job.to_run_config()})  # a known key
    for bad, field in (
        ("[]", "queries"),
        ('{"queries": [], "privacy": null}', "queries"),
        ('{"queries": [{"query": "sum"}], "privacy": null}', "queries.0"),
        ('{"queries": [{"query": "sum", "params": {}}], "privacy": {"epsilon": 1}}', "queries.privacy"),
    ):
        with pytest.raises(ConfigError) as err:
            QueryJob.from_run_config(bad)
        assert err.value.field == field
