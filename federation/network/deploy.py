"""The Flower processes of a real federation, as exact command lines, and the checks between them.

One place builds the `flower-superlink` / `flower-supernode` / `flwr` invocations, so the CLI, the
README and the loopback test all start the same thing. Everything is TLS with pinned CA and
SuperNode authentication; there is no insecure option here.
"""

from __future__ import annotations

import os
import shutil
import ssl
import sys
import time
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from silobridge.errors import ConfigError, FederationError
from silobridge.federation.firm_source import NODE_BUDGET, NODE_DATA_DIR, NODE_FEDERATION, NODE_FIRM_ID, NODE_NOISE_SEED
from silobridge.federation.network.flower_hooks import (
    IDLE_POLL_S,
    SUPEREXEC_POLL_ENV,
    SUPEREXEC_POLL_S,
)

CONNECTION = "silobridge"
"""Name of the SuperLink connection in $FLWR_HOME/config.toml that `flwr run` and `flwr supernode` use."""


TELEMETRY_ENV = "FLWR_TELEMETRY_ENABLED"
"""Read once by `flwr.supercore.telemetry` when a Flower process starts: '0' sends nothing."""


def flower_executable(name: str) -> str:
    """Flower's console scripts live beside this interpreter (a venv need not be on PATH)."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if found is None:
        raise FederationError(f"'{name}' not found beside {sys.executable} or on PATH: install flwr[simulation]")
    return found


def process_env(flwr_home: Path | None = None, *, superexec_poll_s: str | None = SUPEREXEC_POLL_S) -> dict[str, str]:
    """Flower starts helper processes by name: put its scripts on PATH, never install at run time.
    `superexec_poll_s`: the task poll of the SuperExecs the started process runs (None: left unset, for a caller
    whose `silobridge` commands each set their own)."""
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    # A SuperExec (the SuperLink's for the ServerApp, a SuperNode's for each message) asks for work
    # every second by default; a task should not wait that long. The caller's own setting wins.
    if superexec_poll_s is not None:
        env.setdefault(SUPEREXEC_POLL_ENV, superexec_poll_s)
    # Flower posts a usage event to telemetry.flower.ai when each of its processes starts and waits up to 4 s for
    # it on exit (offline here: about 0.8 s for the name lookup to fail). A private federation's nodes should not
    # report to a third party by default; the caller's own setting wins.
    env.setdefault(TELEMETRY_ENV, "0")
    if flwr_home is not None:
        env["FLWR_HOME"] = str(flwr_home)
    return env


@dataclass(frozen=True)
class SuperLinkFiles:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def superlink_command(
    files: SuperLinkFiles, *, host: str, port: int, database: Path | None = None, log_file: Path | None = None
) -> list[str]:
    """A SuperLink serving Fleet, Control and Runtime APIs on one HTTPS port, admitting registered nodes only."""
    for path in (files.ca_cert, files.server_cert, files.server_key):
        if not path.is_file():
            raise ConfigError(f"{path} does not exist (make it with `silobridge certs`)", field="--certs")
    command = [
        flower_executable("flower-superlink"),
        "--ssl-ca-certfile",
        str(files.ca_cert),
        "--ssl-certfile",
        str(files.server_cert),
        "--ssl-keyfile",
        str(files.server_key),
        "--enable-supernode-auth",
        "--host",
        host,
        "--port",
        str(port),
        "--disable-runtime-dependency-installation",
    ]
    if database is not None:
        command += ["--database", str(database)]
    if log_file is not None:
        command += ["--log-file", str(log_file)]
    return command


def node_config_text(values: Mapping[str, str | float]) -> str:
    """Flower's `--node-config` syntax: space-separated key=value, strings quoted as TOML strings."""
    parts = []
    for key, value in values.items():
        text = str(value)
        if '"' in text or "\\" in text:
            raise ConfigError(f"node config value {text!r} may not contain quotes or backslashes", field=key)
        parts.append(f'{key}="{text}"' if isinstance(value, str) else f"{key}={value}")
    return " ".join(parts)


def supernode_command(
    *,
    superlink: str,
    ca_cert: Path,
    private_key: Path,
    data_dir: Path,
    federation: Path,
    firm_id: str,
    runtime_port: int,
    budget_epsilon: float | None = None,
    noise_seed: int | None = None,
    idle_poll_s: float = IDLE_POLL_S,
    extra_config: Mapping[str, str | float] | None = None,
) -> list[str]:
    """A partner's SuperNode: TLS pinned to the federation's CA, authenticated by the firm's key.

    `noise_seed` fixes the firm's own DP-SGD noise (the coordinator never sees it); None: OS entropy.
    It is Flower's `flower-supernode` run through `federation.network.supernode`, which shortens the
    node's fixed 3 s idle sleep to `idle_poll_s` (a pinned hook, see `flower_hooks`). `extra_config` adds
    node-config values (the lifetime odometer's folder and budget).
    """
    values: dict[str, str | float] = {
        NODE_DATA_DIR: str(data_dir.resolve()),
        NODE_FEDERATION: str(federation.resolve()),
        NODE_FIRM_ID: firm_id,
    }
    if budget_epsilon is not None:
        values[NODE_BUDGET] = float(budget_epsilon)
    if noise_seed is not None:
        values[NODE_NOISE_SEED] = int(noise_seed)
    values.update(extra_config or {})
    return [
        sys.executable,
        "-m",
        "silobridge.federation.network.supernode",
        "--idle-poll",
        str(idle_poll_s),
        "--superlink",
        superlink,
        "--root-certificates",
        str(ca_cert.resolve()),
        "--auth-supernode-private-key",
        str(private_key.resolve()),
        "--node-config",
        node_config_text(values),
        "--port",
        str(runtime_port),
    ]


def write_connection(flwr_home: Path, *, address: str, ca_cert: Path, name: str = CONNECTION) -> Path:
    """Add (or replace) the named SuperLink connection in $FLWR_HOME/config.toml, keeping the others."""
    import tomli_w

    path = flwr_home / "config.toml"
    config = tomllib.loads(path.read_text()) if path.exists() else {}
    superlink = config.setdefault("superlink", {})
    superlink.setdefault("default", name)
    superlink[name] = {"address": address, "root-certificates": str(ca_cert.resolve())}
    flwr_home.mkdir(parents=True, exist_ok=True)
    path.write_text(tomli_w.dumps(config))
    return path


def register_command(public_key: Path, *, name: str = CONNECTION) -> list[str]:
    """Flower's own registration of a firm's public key with the SuperLink (over the Control API)."""
    if not public_key.is_file():
        raise ConfigError(f"{public_key} does not exist", field="PUBLIC_KEY")
    return [flower_executable("flwr"), "supernode", "register", str(public_key), name]


def run_command(app_dir: Path, run_config: Mapping[str, str | int], *, name: str = CONNECTION) -> list[str]:
    """`flwr run` of this app on the named SuperLink, streaming the ServerApp's log."""
    overrides = " ".join(f"{k}={_toml_value(k, v)}" for k, v in run_config.items())
    return [flower_executable("flwr"), "run", str(app_dir), name, "--run-config", overrides, "--stream"]


def stop_command(flower_run_id: int, *, name: str = CONNECTION) -> list[str]:
    """`flwr stop` of a Flower run on the named SuperLink: its ServerApp is told to stop (at its next heartbeat)."""
    return [flower_executable("flwr"), "stop", str(flower_run_id), name]


def _toml_value(key: str, value: str | int) -> str:
    """A run-config value as Flower's `--run-config` parser reads it: quoted strings allow no escapes, so a
    string holding double quotes (the JSON of `queries`) goes in a TOML literal string ('...')."""
    if not isinstance(value, str):
        return str(value)
    if '"' not in value:
        return f'"{value}"'
    if "'" in value or "\n" in value:
        raise ConfigError(f"run config value {value!r} may not hold both kinds of quotes or a newline", field=key)
    return f"'{value}'"


def wait_healthy(address: str, ca_cert: Path, *, timeout_s: float = 60.0) -> None:
    """Block until the SuperLink answers its HTTPS health endpoint, verified against the CA."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            context = ssl.create_default_context(cafile=str(ca_cert))
            if httpx.get(f"https://{address}/health", verify=context, timeout=2.0).is_success:
                return
        except httpx.HTTPError as err:
            last = err
        time.sleep(0.3)
    raise FederationError(f"SuperLink at {address} not healthy after {timeout_s:.0f} s: {last}")


def split_address(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"expected HOST:PORT, got '{address}'", field="--superlink")
    return host, int(port)


def argv_text(command: Sequence[str]) -> str:
    """A command line to print for the user (quoted where needed)."""
    import shlex

    return " ".join(shlex.quote(part) for part in command)
