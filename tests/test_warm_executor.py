"""The warm executor: its pinned hook into Flower and its supervision by `silobridge join`. A real loopback run
served warm, with an executor killed mid-run: tests/test_network_federation.py (one federation serves both).

If a pin test fails after a Flower upgrade, re-read `flwr/supercore/superexec/run_superexec.py` and
`flwr/supernode/runtime/run_clientapp.py` and update `federation/network/warm_executor.py`.
"""

from __future__ import annotations

import inspect
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from silobridge.errors import FederationError
from silobridge.federation.network import warm_executor
from silobridge.federation.network.node_supervisor import SupervisedNode, supervise
from silobridge.federation.network.warm_executor import (
    EXIT_CONFIG,
    RUN_CLIENTAPP_PARAMS,
    TaskExecutor,
    check_superexec_loop,
    install_executor,
)

# -- the pinned hook -------------------------------------------------------------------------------


def test_the_installed_flower_still_builds_its_executor_by_the_name_we_replace() -> None:
    module = check_superexec_loop()
    source = inspect.getsource(module.run_superexec)
    assert source.count("get_executor(") == 1 and source.count("plugin.launch_task(") == 1
    from flwr.supernode.runtime.run_clientapp import run_clientapp

    assert tuple(inspect.signature(run_clientapp).parameters) == RUN_CLIENTAPP_PARAMS


def test_our_executor_has_every_method_of_flowers_executor_protocol() -> None:
    from flwr.supercore.superexec.executor.types import Executor

    wanted = {name for name in vars(Executor) if not name.startswith("_")}
    assert wanted == {"get_eligible_capacity", "wait_for_capacity", "launch", "reconcile", "close"}
    for name in wanted:
        ours = inspect.signature(getattr(TaskExecutor, name))
        theirs = inspect.signature(getattr(Executor, name))
        assert list(ours.parameters) == list(theirs.parameters), name


def test_the_preload_covers_every_module_the_client_apps_handlers_import_lazily() -> None:
    """A module a handler imports but the parent did not preload is imported again in every fork."""
    import ast

    from tests.conftest import ROOT

    tree = ast.parse((ROOT / "federation" / "client_app.py").read_text())
    lazy = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for function in ast.walk(tree)
        if isinstance(function, ast.FunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert lazy and lazy <= set(warm_executor.PRELOAD), lazy - set(warm_executor.PRELOAD)


def test_the_preload_covers_what_a_forked_task_imports_to_run() -> None:
    """`serve_one` imports Flower's ClientApp runner (and with it the FAB installer: typer, tomli, ...) in the
    fork; preloaded, a fork pays none of it."""
    import ast

    tree = ast.parse(inspect.getsource(warm_executor.serve_one))
    lazy = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert lazy == {"flwr.supernode.runtime.run_clientapp"} and lazy <= set(warm_executor.PRELOAD)


def test_a_flower_version_not_read_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm_executor, "version", lambda _name: "1.99.0")
    with pytest.raises(FederationError, match=r"flwr 1\.99\.0 is installed.*--executor flower"):
        check_superexec_loop()


def test_a_superexec_loop_that_changed_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(warm_executor, "EXPECTED_SOURCE", ("executor = make_executor(",))
    with pytest.raises(FederationError, match="no longer builds its executor"):
        check_superexec_loop()


def test_install_makes_flowers_loop_launch_through_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    module = check_superexec_loop()
    monkeypatch.setattr(module, "get_executor", module.get_executor)  # restored after the test
    monkeypatch.setattr(module, "time", module.time)
    ours = TaskExecutor(mode="warm")
    install_executor(ours)
    from flwr.supercore.constant import ExecutorType

    assert module.get_executor(ExecutorType.SUBPROCESS) is ours
    assert isinstance(module.time, warm_executor.TaskPollSleeps) and module.time.executor is ours


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def test_an_idle_executor_polls_its_node_less_often_until_it_launches_a_task() -> None:
    clock = _Clock()
    executor = TaskExecutor(mode="warm", active_at=100.0)
    sleeps = warm_executor.TaskPollSleeps(clock, executor)  # type: ignore[arg-type]
    sleeps.sleep(0.05)  # just started: Flower's loop passes FLWR_SUPEREXEC_TASK_POLL_INTERVAL
    clock.now = 105.0
    sleeps.sleep(0.05)  # still within 5 s
    clock.now = 108.0
    sleeps.sleep(0.05)  # idle 8 s: a tenth of it
    clock.now = 200.0
    sleeps.sleep(0.05)  # long idle: Flower's own 1 s
    executor.active_at = 200.0  # a task was launched
    sleeps.sleep(0.05)
    assert clock.slept == [0.05, 0.05, pytest.approx(0.8), 1.0, 0.05]
    assert sleeps.monotonic() == 200.0  # anything else passes through


def test_only_clientapp_tasks_are_served() -> None:
    from flwr.supercore.constant import TaskType
    from flwr.supercore.superexec.executor import ExecutionSpec, LaunchResultStatus

    executor = TaskExecutor(mode="warm")
    eligible, fabs = executor.get_eligible_capacity(set(TaskType))
    assert eligible == {TaskType.CLIENT_APP} and fabs == set()
    spec = ExecutionSpec(
        task_type=TaskType.SERVER_APP,
        runtime_api_address="127.0.0.1:1",
        token="t",
        insecure=True,
        root_certificates_path=None,
        runtime_dependency_install=False,
        parent_pid=None,
        suppress_output=False,
        task_id=3,
    )
    result = executor.launch(spec)
    assert result.status == LaunchResultStatus.FAILED and "ClientApp tasks only" in (result.message or "")
    assert executor.children == {}


# -- supervision: the node keeps running, the executor is started again --------------------------

PY = sys.executable


def _listening_node(port: int, *, until: Path | None = None, lines: int = 0, limit_s: float = 120) -> list[str]:
    """A stand-in SuperNode: opens its 'Runtime API' port, then lives until `until` has `lines` lines (or limit_s)."""
    code = (
        "import os, socket, sys, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('127.0.0.1', {port})); s.listen(); end = time.monotonic() + {limit_s}\n"
        "while time.monotonic() < end:\n"
        f"    if {lines} and os.path.exists({str(until)!r}) and len(open({str(until)!r}).read().split()) >= {lines}:\n"
        "        time.sleep(0.5); sys.exit(0)\n"
        "    time.sleep(0.05)\n"
    )
    return [PY, "-c", code]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _plan(executor: Callable[[int], list[str]], *, until: Path | None = None, lines: int = 0) -> SupervisedNode:
    port = _port()
    return SupervisedNode(
        node=_listening_node(port, until=until, lines=lines),
        executor=executor,
        runtime_address=f"127.0.0.1:{port}",
        max_restarts=2,
        window_s=60,
    )


def test_an_executor_that_exits_is_started_again_and_the_node_runs_on(tmp_path: Path) -> None:
    starts = tmp_path / "starts"
    # Each start appends the node's pid it was given; the first two exit at once, the third stays (until stopped).
    executor = [
        PY,
        "-c",
        f"import sys, time; p = open({str(starts)!r}, 'a'); p.write(sys.argv[1] + '\\n'); p.close(); "
        f"n = len(open({str(starts)!r}).read().split()); time.sleep(120 if n >= 3 else 0)",
    ]
    said: list[str] = []
    started = time.monotonic()
    code = supervise(_plan(lambda pid: [*executor, str(pid)], until=starts, lines=3), os.environ, say=said.append)
    assert code == 0  # the node's own exit code: it ran its course, and the third executor was stopped with it
    assert time.monotonic() - started < 100
    pids = starts.read_text().split()
    assert len(pids) == 3 and len(set(pids)) == 1  # three executors, all given the same (one) node
    assert sum("restarting" in line for line in said) == 2


def test_an_executor_that_keeps_dying_stops_the_node(tmp_path: Path) -> None:
    said: list[str] = []
    started = time.monotonic()
    code = supervise(_plan(lambda _pid: [PY, "-c", "raise SystemExit(1)"]), os.environ, say=said.append)
    assert code == 1 and time.monotonic() - started < 100  # the node did not run its 120 s
    assert "exited 3 times within 60 s" in said[-1]


def test_an_executor_that_cannot_run_is_not_restarted() -> None:
    said: list[str] = []
    code = supervise(_plan(lambda _pid: [PY, "-c", f"raise SystemExit({EXIT_CONFIG})"]), os.environ, say=said.append)
    assert code == 1 and not any("restarting" in line for line in said)
    assert "cannot run" in said[-1]


def test_a_node_that_exits_before_opening_its_runtime_api_passes_its_code_on() -> None:
    said: list[str] = []
    plan = SupervisedNode(
        node=[PY, "-c", "raise SystemExit(7)"],
        executor=lambda _pid: [PY, "-c", "raise SystemExit(0)"],
        runtime_address=f"127.0.0.1:{_port()}",
    )
    assert supervise(plan, os.environ, say=said.append) == 7
    assert "exited with 7 before" in said[-1]


def _deactivating_node(port: int, out: Path) -> str:
    """A stand-in SuperNode that, on SIGTERM, takes 1 s to 'deactivate at the SuperLink' and writes so; a second
    SIGTERM meanwhile cuts that short (as Flower's node then exits still registered)."""
    return (
        "import os, signal, socket, sys, time\n"
        f"s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('127.0.0.1', {port}))\n"
        "s.listen(); terms = []\n"
        "def on_term(signum, frame):\n"
        "    terms.append(signum)\n"
        f"    if len(terms) > 1: open({str(out)!r}, 'a').write('cut short\\n'); os._exit(1)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "end = time.monotonic() + 120\n"
        "while not terms and time.monotonic() < end: time.sleep(0.05)\n"
        "time.sleep(1.0)\n"
        f"open({str(out)!r}, 'a').write('deactivated\\n')\n"
    )


def test_a_signal_to_joins_process_group_lets_the_node_deactivate_itself(tmp_path: Path) -> None:
    """SIGTERM to `join`'s process group reaches the SuperNode too: join must not send it a second one while it
    deactivates itself at the SuperLink (a node cut short stayed 'online' there for up to a minute)."""
    import signal
    import subprocess

    port, out = _port(), tmp_path / "node.log"
    node = [PY, "-c", _deactivating_node(port, out)]
    joiner = (
        "import os, sys\n"
        "from silobridge.federation.network.node_supervisor import SupervisedNode, supervise\n"
        f"plan = SupervisedNode(node={node!r}, executor=lambda pid: [{PY!r}, '-c', 'import time; time.sleep(120)'], "
        f"runtime_address='127.0.0.1:{port}')\n"
        "sys.exit(supervise(plan, os.environ))\n"
    )
    process = subprocess.Popen([PY, "-c", joiner], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:  # the node's port open: supervise has started both
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline and process.poll() is None, "the stand-in node never listened"
            time.sleep(0.1)
        time.sleep(0.5)  # the executor started after the port opened
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert out.read_text().split("\n")[0] == "deactivated"


# -- the firm's caches, built once before any fork ---------------------------------------------------


def test_the_executor_builds_the_firm_a_coordinators_training_request_asks_for(tmp_path: Path) -> None:
    """The noise calibration of the federation file's spec took seconds in every training message's fork; the
    warm parent builds it (and the firm's data and client) once, from the node's own --node-config text, and a
    request carrying the coordinator's spec then finds them built."""
    from silobridge.clients.data import write_firm_data
    from silobridge.federation import firm_source
    from silobridge.federation.firm_source import NODE_DATA_DIR, NODE_FEDERATION, node_firm
    from silobridge.federation.network.deploy import node_config_text
    from silobridge.federation.settings import settings_from_run_config
    from silobridge.scenarios.generator import generate_chain
    from silobridge.scenarios.schema import load_scenario
    from tests.conftest import ROOT

    trio = ROOT / "tests" / "scenarios" / "trio.toml"
    tables = generate_chain(load_scenario(trio)).tables["R1"]
    write_firm_data(tmp_path / "R1", tables.demand, tables.risk)
    node = {NODE_DATA_DIR: str(tmp_path / "R1"), NODE_FEDERATION: str(trio)}
    firm_source._nodes.clear()
    firm_source._stamped_spec.cache_clear()
    assert warm_executor.warm_node_caches(node_config_text(node)) >= 0
    (built,) = firm_source._nodes.values()
    calibrations = firm_source._stamped_spec.cache_info().misses
    coordinator = settings_from_run_config({"scenario": str(trio), "data": "nodes"}).spec
    assert node_firm(node, coordinator, "train") is built
    assert node_firm(node, coordinator, "query.secagg.unmask").firm_id == "R1"  # a light stage: its spec cached too
    assert firm_source._stamped_spec.cache_info().misses == calibrations
    # A partner who updates its files while `join` runs is served from the new ones, not the warm copies.
    demand = tmp_path / "R1" / "demand.csv"
    os.utime(demand, ns=(demand.stat().st_atime_ns, demand.stat().st_mtime_ns + 10**9))
    assert node_firm(node, coordinator, "train") is not built


def test_join_gives_the_executor_the_nodes_config(tmp_path: Path) -> None:
    from silobridge.federation.network.node_supervisor import executor_command

    command = executor_command("127.0.0.1:9094", mode="warm", secret_file=tmp_path / "s", node_pid=5)
    assert "--node-config" not in command
    command = executor_command(
        "127.0.0.1:9094", mode="warm", secret_file=tmp_path / "s", node_pid=5, node_config='firm-id="R1"'
    )
    assert command[-2:] == ["--node-config", 'firm-id="R1"']
