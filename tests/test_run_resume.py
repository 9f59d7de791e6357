"""`silobridge run --resume`: the networked coordinator continues an interrupted run in a new Flower run.

Fast tests: the resumed run's config and its refusals (before Flower starts), the run id every request
names, and a partner's own per-run budget counted by that run id across a new Flower run. The slow network
test (a loopback federation) kills the coordinator's ServerApp after round 1's ledger entry and resumes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from flwr.app import ConfigRecord, Context, RecordDict

from silobridge.clients.firm import FirmClient
from silobridge.clients.own_budget import own_epsilon
from silobridge.contract.arrays import flatten
from silobridge.errors import ConfigError, ProtocolError
from silobridge.federation.checkpoint import CHECKPOINT_FILE
from silobridge.federation.client_app import Request, _train
from silobridge.federation.odometer_glue import NODE_LIFETIME_EPSILON, NODE_STATE_DIR
from silobridge.federation.records import (
    INSTRUCTION,
    LAYOUT,
    NORMALISER,
    RUN,
    arrays_record,
    layout_record,
    read_run_id,
    request_content,
    weights_key,
)
from silobridge.federation.resume import network_resume_config, resume_command
from silobridge.federation.run_requests import network_run_config
from silobridge.federation.rundir import CONFIG_FILE
from silobridge.federation.settings import settings_from_run_config
from silobridge.privacy.odometer import Odometer
from silobridge.server.layouts import training_layout
from tests.conftest import ROOT
from tests.firm_support import tiny_firm
from tests.flwr_run_stand_in import ctrl_c_once_started, flwr_run_stand_in
from tests.test_cli import silobridge_in_process

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"
RECORD = "privacy.unit=record;privacy.epsilon=6"


def _interrupted_network_run(tmp_path: Path, federation: Path, run_id: str = "net") -> Path:
    """The folder a killed `silobridge run` leaves: its config.json as the ServerApp records it, a checkpoint."""
    out = tmp_path / "runs"
    # what the ServerApp parses under `flwr run`: our keys over pyproject's defaults (rounds 0, seed -1, ...)
    settings = settings_from_run_config(network_run_config(federation, out, run_id=run_id))
    folder = out / f".{run_id}.partial"
    folder.mkdir(parents=True)
    config = {"run_config": settings.to_run_config(), "scenario": settings.scenario.model_dump(mode="json")}
    (folder / CONFIG_FILE).write_text(json.dumps(config))
    (folder / CHECKPOINT_FILE).write_bytes(b"")
    return folder


def test_a_network_run_resumes_with_its_recorded_config_which_parses_to_itself(tmp_path: Path) -> None:
    federation = tmp_path / "federation.toml"
    federation.write_text(TRIO.read_text())
    folder = _interrupted_network_run(tmp_path, federation)
    recorded = json.loads((folder / CONFIG_FILE).read_text())["run_config"]
    config = network_resume_config(folder, {"run-id": "net"})
    assert config["data"] == "nodes" and config["run-id"] == "net"
    # parsed again, the settings record the same run config: the checkpoint's and ledger's hash still match
    assert settings_from_run_config(config).to_run_config() == recorded
    assert resume_command(folder) == f"silobridge run --resume {folder}"
    with pytest.raises(ConfigError, match="run-id") as refused:
        network_resume_config(folder, {"run-id": "other"})
    assert refused.value.field == "run-id"


def test_a_simulation_folder_is_not_resumed_by_run(tmp_path: Path) -> None:
    folder = tmp_path / "runs" / ".sim.partial"
    folder.mkdir(parents=True)
    settings = settings_from_run_config({"scenario": str(TRIO), "run-id": "sim"})
    (folder / CONFIG_FILE).write_text(json.dumps({"run_config": settings.to_run_config()}))
    with pytest.raises(ConfigError, match="simulate --resume"):
        network_resume_config(folder, {})


@pytest.mark.slow  # in-process CLI runs, DP-SGD rounds or processes: over 5 s on 2 cores
def test_run_resume_refuses_a_changed_federation_file_or_option_naming_it(tmp_path: Path) -> None:
    """Refused before `flwr run` starts (no SuperLink here: reaching it would fail otherwise)."""
    federation = tmp_path / "federation.toml"
    federation.write_text(TRIO.read_text())
    folder = _interrupted_network_run(tmp_path, federation)
    federation.write_text(TRIO.read_text().replace("rounds = 2", "rounds = 3"))
    changed = silobridge_in_process("run", "--resume", str(folder), cwd=tmp_path)
    assert changed.returncode == 2 and "training.rounds" in changed.stderr, changed.stderr[-2000:]
    federation.write_text(TRIO.read_text())
    other_out = silobridge_in_process("run", "--resume", str(folder), "--out", str(tmp_path / "x"), cwd=tmp_path)
    assert other_out.returncode == 2 and "out-dir" in other_out.stderr, other_out.stderr[-2000:]
    (folder.parent / "net").mkdir()  # both folders of the run: which one is the run?
    both = silobridge_in_process("run", "--resume", str(folder), cwd=tmp_path)
    assert both.returncode == 2 and "move one away" in both.stderr, both.stderr[-2000:]


def test_every_request_names_our_run_id() -> None:
    spec = settings_from_run_config({"scenario": str(TRIO)}).spec
    content = request_content(spec, run_id="net")
    message = SimpleNamespace(content=content)
    assert read_run_id(message) == "net"  # type: ignore[arg-type]
    assert read_run_id(SimpleNamespace(content=request_content(spec))) is None  # type: ignore[arg-type]


@pytest.mark.slow  # in-process CLI runs, DP-SGD rounds or processes: over 5 s on 2 cores
def test_a_partners_own_budget_is_counted_by_our_run_id_across_flower_runs(tmp_path: Path) -> None:
    """A resumed run is a new Flower run (a fresh node state): with a lifetime odometer the partner's node still
    counts the rounds it released to our run, and refuses the one past its own per-run budget; another run of
    ours starts its own count."""
    shared, weights, instruction, norm = tiny_firm(f"{RECORD};aggregation.mode=plain", noise_seed=5)
    spec = shared.spec
    budget = (own_epsilon(spec.privacy, 2) + own_epsilon(spec.privacy, 3)) / 2  # two rounds per run, not three
    firm = FirmClient(shared.data, group=shared.group, spec=spec, tier=shared.tier, budget_epsilon=budget)
    kinds = [kind for kind in weights if firm.trains(kind)]
    layout = training_layout({kind: flatten(weights[kind]).size for kind in kinds}, spec.aggregation, statistics=False)
    arrays = {weights_key(kind): arrays_record(weights[kind]) for kind in kinds}
    arrays[NORMALISER] = arrays_record({"mean": norm.mean, "std": norm.std})
    node = {NODE_STATE_DIR: str(tmp_path / "state"), NODE_LIFETIME_EPSILON: 1000.0}

    def flower_run(number: int) -> Context:
        return Context(run_id=number, node_id=1, node_config=node, state=RecordDict(), run_config={})

    def ask(context: Context, run_id: str, round_number: int) -> RecordDict:
        configs = {
            RUN: ConfigRecord({"run_id": run_id}),
            INSTRUCTION: ConfigRecord(instruction.model_copy(update={"round": round_number}).to_config()),
            LAYOUT: layout_record(layout),
        }
        content = SimpleNamespace(config_records=configs, array_records=arrays)
        message = SimpleNamespace(content=content, metadata=SimpleNamespace(message_type="train"))
        return _train(Request(firm, None, context, message))  # type: ignore[arg-type]

    assert ask(flower_run(1), "net", 1).array_records  # round 1, then the coordinator is killed
    resumed = flower_run(2)  # `run --resume`: Flower's run 2, our run 'net'
    assert ask(resumed, "net", 2).array_records
    with pytest.raises(ProtocolError, match=r"firm 'R1'.*train round 3.*over its own budget"):
        ask(resumed, "net", 3)
    odometer = Odometer.open(tmp_path / "state", firm="R1")
    assert [odometer.releases_in_run(kind, "net") for kind in kinds] == [2] * len(kinds)  # the refusal charged none
    assert ask(flower_run(3), "another", 1).array_records  # another run of ours: its own per-run budget


@pytest.mark.slow  # in-process CLI runs, DP-SGD rounds or processes: over 5 s on 2 cores
def test_ctrl_c_stops_the_flower_run_and_prints_the_resume_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`flwr run --stream` alone would stop streaming and leave the ServerApp running: Ctrl-C stops the Flower run
    by its id (`flwr stop`), waits for the ServerApp to leave the run's folder, and says how to resume it.
    Stand-ins: a `flwr run` that prints its run id and waits; a `flwr stop` that records its arguments and does
    what a stopped ServerApp does (keeps the folder under its final name, with failure.json)."""
    from silobridge.federation.network import deploy, runs

    federation = tmp_path / "federation.toml"
    federation.write_text(TRIO.read_text())
    folder = _interrupted_network_run(tmp_path, federation)
    stopped = tmp_path / "stopped.txt"
    flwr_stop = (
        "import os, sys; from pathlib import Path; "
        f"Path({str(stopped)!r}).write_text(' '.join(sys.argv[1:])); "
        f"os.rename({str(folder)!r}, {str(folder.parent / 'net')!r}); "
        f"Path({str(folder.parent / 'net' / 'failure.json')!r}).write_text('{{}}')"
    )
    monkeypatch.setattr(deploy, "run_command", lambda app_dir, config: flwr_run_stand_in(4242))
    monkeypatch.setattr(deploy, "stop_command", lambda run_id: [sys.executable, "-c", flwr_stop, str(run_id)])
    ctrl_c_once_started(monkeypatch)
    config = network_resume_config(folder, {})
    with pytest.raises(KeyboardInterrupt):
        runs.run_federation(config, resume=folder)
    assert stopped.read_text() == "4242"  # `flwr stop 4242`
    kept = folder.parent / "net"
    err = capsys.readouterr().err
    assert f"silobridge run --resume {kept}" in err and f"silobridge audit {kept}" in err, err
