"""The pinned Flower hook and settings that make a networked round fast: they fail when Flower changes.

If one of these tests fails after a Flower upgrade, re-read `flwr/supernode/start_client_internal.py`
and `flwr/supercore/superexec/run_superexec.py` and update `federation/network/flower_hooks.py`.
"""

from __future__ import annotations

import inspect
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from silobridge.errors import FederationError
from silobridge.federation.network import flower_hooks
from silobridge.federation.network.deploy import TELEMETRY_ENV, process_env, supernode_command
from silobridge.federation.network.flower_hooks import (
    FLOWER_PULL_DEFAULTS,
    HOOKED_MODULE,
    LOCAL_PULL_DEFAULTS,
    OUR_PULL_DEFAULTS,
    PULL_CALLERS,
    PULL_FUNCTIONS,
    SUPEREXEC_POLL_ENV,
    SUPEREXEC_POLL_S,
    SUPERLINK_SUPEREXEC_POLL_S,
    IdleBackoff,
    apply_object_pull_backoff,
    apply_supernode_polling,
    check_supernode_loop,
)
from tests.conftest import ROOT


class _Recorder:
    """A stand-in for the time module that records sleeps instead of sleeping."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def monotonic(self) -> float:
        return 42.0


def test_the_installed_flower_still_has_the_sleeps_the_hook_shortens() -> None:
    module = check_supernode_loop()
    assert module.__name__ == HOOKED_MODULE
    source = inspect.getsource(module)
    assert source.count("time.sleep(3)") == 1 and source.count("time.sleep(0.5)") == 2
    assert "start_client_internal" in dir(module)


def test_the_hook_maps_only_flowers_two_sleeps(monkeypatch: pytest.MonkeyPatch) -> None:
    module = check_supernode_loop()
    monkeypatch.setattr(module, "time", time)  # restored after the test
    recorder = _Recorder()
    monkeypatch.setattr(flower_hooks, "time", recorder)
    sleeps = apply_supernode_polling(idle_s=0.1, reply_s=0.01)
    assert module.time is sleeps
    module.time.sleep(3)
    module.time.sleep(0.5)
    module.time.sleep(2)
    assert recorder.slept == [0.1, 0.01, 2]
    assert module.time.monotonic() == 42.0  # everything else passes through
    apply_supernode_polling(idle_s=0.2)  # applying twice is allowed (the stand-in is recognised)


def test_a_changed_flower_makes_the_hook_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    source = inspect.getsource(check_supernode_loop())
    monkeypatch.setattr(flower_hooks.inspect, "getsource", lambda module: source.replace("time.sleep(3)", "wait()"))
    with pytest.raises(FederationError, match=r"has sleeps .*update federation/network/flower_hooks.py"):
        check_supernode_loop()
    monkeypatch.undo()
    monkeypatch.setattr(flower_hooks, "version", lambda name: "1.99.0")
    with pytest.raises(FederationError, match=r"flwr 1.99.0 is installed.*checked against flwr 1.41.0"):
        check_supernode_loop()


def test_poll_intervals_out_of_range_are_refused() -> None:
    with pytest.raises(FederationError, match="got 0.0 and 0.01"):
        apply_supernode_polling(idle_s=0.0)
    with pytest.raises(FederationError, match="got 0.1 and 1.0"):
        apply_supernode_polling(reply_s=1.0)


def test_the_superexec_reads_our_poll_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.supercore.superexec import run_superexec

    assert run_superexec._TASK_POLL_INTERVAL_ENV == SUPEREXEC_POLL_ENV
    monkeypatch.delenv(SUPEREXEC_POLL_ENV, raising=False)
    env = process_env()
    assert env[SUPEREXEC_POLL_ENV] == SUPEREXEC_POLL_S
    monkeypatch.setenv(SUPEREXEC_POLL_ENV, env[SUPEREXEC_POLL_ENV])
    assert run_superexec._get_task_poll_interval() == float(SUPEREXEC_POLL_S)
    monkeypatch.setenv(SUPEREXEC_POLL_ENV, "0.5")
    assert process_env()[SUPEREXEC_POLL_ENV] == "0.5"  # the operator's own setting wins


def test_the_superlinks_superexec_polls_less_often_than_a_nodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It asks only for ServerApp tasks (one a run) and never backs off: at the nodes' 0.05 s it cost CPU all along."""
    from typer.testing import CliRunner

    from silobridge.federation.cli import app

    monkeypatch.delenv(SUPEREXEC_POLL_ENV, raising=False)
    monkeypatch.setenv("FLWR_HOME", str(tmp_path / "home"))
    assert SUPEREXEC_POLL_ENV not in process_env(superexec_poll_s=None)  # the loopback's: each command sets its own
    runner = CliRunner()
    assert runner.invoke(app, ["certs", "--out", str(tmp_path / "certs"), "--host", "127.0.0.1"]).exit_code == 0
    envs: list[dict[str, str]] = []
    monkeypatch.setattr(subprocess, "call", lambda command, env=None: envs.append(env or {}) or 0)
    result = runner.invoke(app, ["superlink", "--certs", str(tmp_path / "certs"), "--port", "9093"])
    assert result.exit_code == 0, result.output
    assert envs[0][SUPEREXEC_POLL_ENV] == SUPERLINK_SUPEREXEC_POLL_S
    assert float(SUPERLINK_SUPEREXEC_POLL_S) > float(SUPEREXEC_POLL_S)


def test_a_loopback_federation_gives_each_process_one_torch_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its partners share this machine's cores, as the simulation's firms do (one thread each)."""
    from silobridge.federation.network.loopback import THREADS_ENV, LoopbackFederation

    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv(SUPEREXEC_POLL_ENV, raising=False)
    net = LoopbackFederation(tmp_path, tmp_path / "federation.toml", ROOT)
    assert net.env[THREADS_ENV] == "1"
    assert SUPEREXEC_POLL_ENV not in net.env  # `silobridge superlink` and `join` each set their own
    code = "import torch; print(torch.get_num_threads())"
    shown = subprocess.run([sys.executable, "-c", code], env=net.env, capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "1"
    monkeypatch.setenv(THREADS_ENV, "2")
    assert LoopbackFederation(tmp_path, tmp_path / "federation.toml", ROOT).env[THREADS_ENV] == "2"


def test_join_starts_flowers_supernode_through_the_hook(tmp_path: Path) -> None:
    command = supernode_command(
        superlink="10.0.0.5:9093",
        ca_cert=tmp_path / "ca.pem",
        private_key=tmp_path / "R1.key",
        data_dir=tmp_path / "R1",
        federation=tmp_path / "federation.toml",
        firm_id="R1",
        runtime_port=9094,
        idle_poll_s=0.2,
    )
    assert command[:5] == [sys.executable, "-m", "silobridge.federation.network.supernode", "--idle-poll", "0.2"]
    assert command[5:7] == ["--superlink", "10.0.0.5:9093"]


def test_the_wrapper_refuses_a_bad_interval_without_a_traceback() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "silobridge.federation.network.supernode",
            "--idle-poll",
            "5",
            "--superlink",
            "127.0.0.1:1",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "error: SuperNode poll intervals must be" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_serverapp_pulls_replies_itself_never_through_send_and_receive(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower's HTTP Grid.send_and_receive sleeps 3 s between pulls; our exchange pushes and pulls on its own
    short schedule, so a reply that comes on the third pull is collected within milliseconds."""
    from types import SimpleNamespace

    from silobridge.federation import exchange as exchange_module

    def fake_message(*, content: object, dst_node_id: int, message_type: str) -> SimpleNamespace:
        return SimpleNamespace(
            content=content, metadata=SimpleNamespace(dst_node_id=dst_node_id, message_type=message_type)
        )

    class Grid:
        pulls = 0

        def send_and_receive(self, *args: object, **kwargs: object) -> None:
            raise AssertionError("Grid.send_and_receive sleeps 3 s between pulls")

        def push_messages(self, messages: list[SimpleNamespace]) -> list[str]:
            return [f"id-{m.metadata.dst_node_id}" for m in messages]

        def pull_messages(self, ids: set[str]) -> list[SimpleNamespace]:
            self.pulls += 1
            if self.pulls < 3:
                return []
            meta = SimpleNamespace(reply_to_message_id="id-4", src_node_id=4, message_type="query.manifest")
            return [SimpleNamespace(metadata=meta, content="reply", has_error=lambda: False)]

    monkeypatch.setattr(exchange_module, "Message", fake_message)
    grid = Grid()
    started = time.monotonic()
    replies = exchange_module.exchange(grid, [(4, "query.manifest", "request")], timeout_s=30)  # type: ignore[arg-type]
    assert replies.ok == {(4, "query.manifest"): "reply"} and grid.pulls == 3
    assert time.monotonic() - started < 0.5


# -- the object-pull hook ------------------------------------------------------------------------


@pytest.fixture()
def pull_defaults() -> Iterator[list]:
    """Flower's two pull functions, their keyword defaults restored after the test."""
    functions = flower_hooks.check_object_pulls(callers=())
    saved = [dict(f.__kwdefaults__) for f in functions]
    try:
        yield functions
    finally:
        for function, defaults in zip(functions, saved, strict=True):
            function.__kwdefaults__.clear()
            function.__kwdefaults__.update(defaults)


def test_the_installed_flower_pulls_objects_as_the_hook_expects() -> None:
    """Flower's constants are the defaults the hook replaces, and no caller in a networked run passes them."""
    from flwr.supercore import constant

    assert FLOWER_PULL_DEFAULTS == {
        "initial_backoff": constant.PULL_INITIAL_BACKOFF,
        "backoff_cap": constant.PULL_BACKOFF_CAP,
        "max_tries_per_object": constant.PULL_MAX_TRIES_PER_OBJECT,
    }
    functions = flower_hooks.check_object_pulls(callers=PULL_CALLERS)
    assert [f.__name__ for f in functions] == list(PULL_FUNCTIONS)


def test_the_hook_makes_a_missing_object_wait_milliseconds_not_a_second(pull_defaults: list) -> None:
    """An object that is missing on the first two pulls: Flower's defaults wait 1 s + 2 s (+-20%) for it, ours
    10 ms + 20 ms."""
    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError, pull_objects

    apply_object_pull_backoff()
    apply_object_pull_backoff()  # applying twice is allowed
    for function in pull_defaults:
        assert {k: function.__kwdefaults__[k] for k in OUR_PULL_DEFAULTS} == OUR_PULL_DEFAULTS
    tries = []

    def pull(object_id: str) -> bytes:
        tries.append(time.monotonic())
        if len(tries) < 3:
            raise ObjectUnavailableError(object_id)
        return b"content"

    started = time.monotonic()
    assert pull_objects(["abc"], pull) == {"abc": b"content"}
    assert len(tries) == 3
    waits = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert 0.008 <= waits[0] < 0.5 and 0.016 <= waits[1] < 0.5, waits
    assert time.monotonic() - started < 1.0  # Flower's own first wait alone is 0.8-1.2 s


def test_giving_up_on_an_object_takes_about_as_long_as_with_flowers_defaults() -> None:
    def give_up_s(d: dict) -> float:
        delay, total = d["initial_backoff"], 0.0
        for _ in range(d["max_tries_per_object"] - 1):
            total += delay
            delay = min(delay * 2, d["backoff_cap"])
        return total

    assert give_up_s(FLOWER_PULL_DEFAULTS) == pytest.approx(4965, abs=1)
    assert give_up_s(OUR_PULL_DEFAULTS) == pytest.approx(give_up_s(FLOWER_PULL_DEFAULTS), rel=0.01)
    assert give_up_s(LOCAL_PULL_DEFAULTS) == pytest.approx(give_up_s(FLOWER_PULL_DEFAULTS), rel=0.01)


def _first_try_at_or_after(defaults: dict, ready_s: float) -> float:
    """When Flower's pull loop (10 ms doubling up to the cap, jitter left out) next tries after `ready_s`."""
    delay, at = defaults["initial_backoff"], 0.0
    while at < ready_s:
        at += delay
        delay = min(delay * 2, defaults["backoff_cap"])
    return at


def test_a_node_has_objects_the_superlink_got_late_within_a_tenth_of_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Objects the ServerApp finished pushing 0.55 s after the node began to pull (traced: 0.08-0.55 s): with the
    1 s cap of session 8 the node tried again only at 0.63 s, then 1.27 s; with 0.1 s at most 0.1 s later."""
    monkeypatch.delenv(flower_hooks.PULL_CAP_ENV, raising=False)
    assert flower_hooks.remote_pull_defaults() == OUR_PULL_DEFAULTS
    assert OUR_PULL_DEFAULTS["backoff_cap"] == 0.1
    before = {**OUR_PULL_DEFAULTS, "backoff_cap": 1.0}
    assert _first_try_at_or_after(before, 0.65) == pytest.approx(1.27)
    for ready in (0.05, 0.3, 0.55, 0.65, 2.0):
        assert _first_try_at_or_after(OUR_PULL_DEFAULTS, ready) - ready <= 0.1 + 1e-9


def test_the_pull_cap_can_be_set_and_a_bad_one_is_refused(monkeypatch: pytest.MonkeyPatch, pull_defaults: list) -> None:
    monkeypatch.setenv(flower_hooks.PULL_CAP_ENV, "1.0")  # session 8's cap, as the benchmark's 'before' run sets it
    apply_object_pull_backoff()
    expected = {"initial_backoff": 0.01, "backoff_cap": 1.0, "max_tries_per_object": 5000}
    assert {k: pull_defaults[0].__kwdefaults__[k] for k in expected} == expected
    for bad in ("soon", "0", "60"):
        monkeypatch.setenv(flower_hooks.PULL_CAP_ENV, bad)
        with pytest.raises(FederationError, match=flower_hooks.PULL_CAP_ENV):
            flower_hooks.remote_pull_defaults()


def test_a_task_pulling_from_its_own_node_waits_at_most_50_ms_more_than_it_must(pull_defaults: list) -> None:
    """An object the node holds only after 0.3 s: with a 1 s cap the pull would sleep on to about 0.31 s + the
    next doubling (0.32 s); with the local cap it has the object within about 50 ms (+20% jitter)."""
    from flwr.supercore.inflatable.inflatable_utils import ObjectUnavailableError, pull_objects

    apply_object_pull_backoff(local=True)
    for function in pull_defaults:
        assert {k: function.__kwdefaults__[k] for k in LOCAL_PULL_DEFAULTS} == LOCAL_PULL_DEFAULTS
    started = time.monotonic()
    tries = []

    def pull(object_id: str) -> bytes:
        tries.append(time.monotonic() - started)
        if tries[-1] < 0.3:
            raise ObjectUnavailableError(object_id)
        return b"content"

    assert pull_objects(["abc"], pull) == {"abc": b"content"}
    waits = [b - a for a, b in zip(tries, tries[1:], strict=False)]
    assert max(waits) < 0.2, waits  # 0.06 s and scheduling; a 1 s cap would have slept 0.32 s here
    assert len(tries) >= 6


def test_pull_defaults_that_changed_are_refused(pull_defaults: list) -> None:
    pull_defaults[0].__kwdefaults__["initial_backoff"] = 3
    with pytest.raises(FederationError, match=r"pull_objects .*keyword defaults.*update federation/network"):
        apply_object_pull_backoff()


def test_a_caller_that_passes_its_own_backoff_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = inspect.getsource
    monkeypatch.setattr(
        flower_hooks.inspect,
        "getsource",
        lambda module: real(module) + "\npull_objects(ids, fn, initial_backoff=2)\n",
    )
    with pytest.raises(FederationError, match=r"passes \['initial_backoff'\].*cannot shorten"):
        flower_hooks.check_object_pulls(callers=PULL_CALLERS[:1])


def test_the_supernode_wrapper_applies_both_hooks_before_flower_starts(
    monkeypatch: pytest.MonkeyPatch, pull_defaults: list
) -> None:
    import flwr.supernode.cli

    from silobridge.federation.network import supernode

    module = check_supernode_loop()
    monkeypatch.setattr(module, "time", time)  # restored after the test
    seen = {}

    def flower_supernode() -> None:
        seen["argv"] = list(sys.argv)
        seen["idle_s"] = module.time.idle_s
        seen["pull"] = {k: pull_defaults[0].__kwdefaults__[k] for k in OUR_PULL_DEFAULTS}

    monkeypatch.setattr(flwr.supernode.cli, "flower_supernode", flower_supernode)
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    supernode.main(["--idle-poll", "0.2", "--superlink", "127.0.0.1:1"])
    assert seen["argv"] == ["flower-supernode", "--superlink", "127.0.0.1:1"]
    assert seen["idle_s"] == 0.2 and seen["pull"] == OUR_PULL_DEFAULTS


def test_a_networked_serverapp_shortens_its_pulls_and_a_simulated_one_leaves_flower_alone(
    pull_defaults: list,
) -> None:
    """The ServerApp applies the pull hook only on a grid that pulls objects from a SuperLink (not the
    simulation's in-memory grid); here it then stops at a scenario file that does not exist."""
    from flwr.app import Context, RecordDict
    from flwr.superlink.grid.inmemory_grid import InMemoryGrid

    from silobridge.errors import ConfigError
    from silobridge.federation.progress import LogObserver
    from silobridge.federation.server_app import build_server_app

    main = build_server_app(observer=LogObserver())._main
    assert main is not None
    run_config = {"scenario": "/nonexistent/federation.toml"}
    context = Context(run_id=1, node_id=0, node_config={}, state=RecordDict(), run_config=run_config)

    class NetworkGrid:
        """Stands in for Flower's HttpGrid: any grid that is not the in-memory one."""

    simulated = InMemoryGrid.__new__(InMemoryGrid)
    with pytest.raises(ConfigError, match="file not found"):
        main(simulated, context)
    assert {k: pull_defaults[0].__kwdefaults__[k] for k in FLOWER_PULL_DEFAULTS} == FLOWER_PULL_DEFAULTS
    with pytest.raises(ConfigError, match="file not found"):
        main(NetworkGrid(), context)
    assert {k: pull_defaults[0].__kwdefaults__[k] for k in OUR_PULL_DEFAULTS} == OUR_PULL_DEFAULTS


def test_flower_processes_send_no_telemetry_unless_the_operator_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    import flwr.supercore.telemetry as telemetry

    assert 'os.getenv("FLWR_TELEMETRY_ENABLED", "1")' in inspect.getsource(telemetry)  # read once, at import
    assert TELEMETRY_ENV == "FLWR_TELEMETRY_ENABLED"
    monkeypatch.delenv(TELEMETRY_ENV, raising=False)
    assert process_env()[TELEMETRY_ENV] == "0"
    monkeypatch.setenv(TELEMETRY_ENV, "1")
    assert process_env()[TELEMETRY_ENV] == "1"  # the operator's own setting wins


def test_the_idle_backoff_polls_fast_after_activity_then_backs_off_to_flowers_three_seconds() -> None:
    backoff = IdleBackoff(fast_s=0.1, hot_s=5.0, slow_s=3.0, fraction=0.1)
    assert [backoff.interval(t) for t in (0.0, 2.0, 5.0)] == [0.1, 0.1, 0.1]
    assert backoff.interval(5.5) == pytest.approx(0.55)
    assert backoff.interval(10.0) == pytest.approx(1.0)
    assert backoff.interval(30.0) == 3.0
    assert backoff.interval(3600.0) == 3.0
    assert IdleBackoff(fast_s=2.0, hot_s=1.0).interval(5.0) == 2.0  # never below the fast interval
    # It only grows with idle time: a message arriving after T idle seconds waits at most interval(T).
    times = [t / 10 for t in range(0, 600)]
    intervals = [backoff.interval(t) for t in times]
    assert intervals == sorted(intervals)
    assert all(i <= max(0.1, 0.1 * t) + 1e-12 for t, i in zip(times, intervals, strict=True))


def test_a_bad_idle_backoff_is_refused() -> None:
    with pytest.raises(FederationError, match="fast"):
        IdleBackoff(fast_s=4.0, slow_s=3.0)
    with pytest.raises(FederationError, match="fraction"):
        IdleBackoff(fraction=0.0)


class _Clock(_Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def test_the_supernode_idles_slower_until_it_serves_a_message(monkeypatch: pytest.MonkeyPatch) -> None:
    module = check_supernode_loop()
    monkeypatch.setattr(module, "time", time)  # restored after the test
    clock = _Clock()
    monkeypatch.setattr(flower_hooks, "time", clock)
    apply_supernode_polling(idle_s=0.1, reply_s=0.01)
    module.time.sleep(3)  # just started: fast
    clock.now = 20.0
    module.time.sleep(3)  # idle 20 s: a tenth of it
    clock.now = 100.0
    module.time.sleep(3)  # idle long: Flower's 3 s
    module.time.sleep(0.5)  # serving a message: waits for its reply
    clock.now = 101.0
    module.time.sleep(3)  # fast again
    assert clock.slept == [0.1, pytest.approx(2.0), 3.0, 0.01, 0.1]
