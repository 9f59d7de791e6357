"""The Flower processes a real federation's members start, prepared and checked before they start:
the coordinator's SuperLink (and the `flwr` connection to it) and a firm's SuperNode (its data, keys
and lifetime odometer verified first). The CLI prints and starts what these return."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from silobridge.errors import ConfigError
from silobridge.federation.network.deploy import SuperLinkFiles, split_address, superlink_command, supernode_command


@dataclass(frozen=True)
class SuperLinkLaunch:
    """The `flower-superlink` command, its certificates, and the address `flwr` reaches it by."""

    command: list[str]
    files: SuperLinkFiles
    address: str


def plan_superlink(
    certs_dir: Path, *, host: str, port: int, connect_as: str = "", database: Path | None = None
) -> SuperLinkLaunch:
    """A SuperLink with TLS and SuperNode authentication from the folder `silobridge certs` wrote."""
    from silobridge.federation.network.certs import CA_CERT, SERVER_CERT, SERVER_KEY

    files = SuperLinkFiles(certs_dir / CA_CERT, certs_dir / SERVER_CERT, certs_dir / SERVER_KEY)
    command = superlink_command(files, host=host, port=port, database=database)
    address = connect_as or f"{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    return SuperLinkLaunch(command, files, address)


def connect_flwr(launch: SuperLinkLaunch) -> Path:
    """Write the 'silobridge' connection to the SuperLink into $FLWR_HOME/config.toml; the file written."""
    from flwr.supercore.utils import get_flwr_home

    from silobridge.federation.network.deploy import write_connection

    home = Path(os.environ.get("FLWR_HOME") or get_flwr_home())
    return write_connection(home, address=launch.address, ca_cert=launch.files.ca_cert)


@dataclass(frozen=True)
class NodeLaunch:
    """A firm's `flower-supernode` command, for the firm whose files were validated."""

    firm_id: str
    command: list[str]


def plan_node(
    *,
    superlink: str,
    ca: Path,
    key: Path,
    data: Path,
    config: Path,
    firm_id: str | None = None,
    budget_epsilon: float | None = None,
    runtime_port: int = 9094,
    noise_seed: int | None = None,
    state: Path | None = None,
    lifetime_epsilon: float | None = None,
    lifetime_delta: float = 1e-5,
) -> NodeLaunch:
    """Check everything a node needs before it joins: the address, the CA and key files, the firm's data
    against the federation file, and its lifetime odometer (verified, or made): a tampered odometer is
    `LedgerTampered`, and the node does not join."""
    from silobridge.federation.firm_source import validate_firm_folder
    from silobridge.federation.odometer_glue import NODE_LIFETIME_DELTA, NODE_LIFETIME_EPSILON, NODE_STATE_DIR
    from silobridge.federation.pilot_data import federation_as_firm

    if lifetime_epsilon is not None and state is None:
        raise ConfigError("a lifetime budget needs --state DIR", source="command line", field="--lifetime-epsilon")
    split_address(superlink)
    for path, option in ((ca, "--ca"), (key, "--key")):
        if not path.is_file():
            raise ConfigError(f"{path} does not exist", source="command line", field=option)
    scenario, spec = federation_as_firm(config)
    firm = validate_firm_folder(data, scenario, spec, firm_id=firm_id)
    extra: dict[str, str | float] = {}
    if state is not None:
        from silobridge.privacy.dp import Budget
        from silobridge.privacy.odometer import Odometer

        lifetime = Budget(lifetime_epsilon, lifetime_delta) if lifetime_epsilon else None
        Odometer.open(state.resolve(), firm=firm.firm_id, lifetime=lifetime)  # verified (or made) before joining
        extra = {NODE_STATE_DIR: str(state.resolve()), NODE_LIFETIME_DELTA: lifetime_delta}
        if lifetime_epsilon:
            extra[NODE_LIFETIME_EPSILON] = lifetime_epsilon
    command = supernode_command(
        superlink=superlink,
        ca_cert=ca,
        private_key=key,
        data_dir=data,
        federation=config,
        firm_id=firm.firm_id,
        runtime_port=runtime_port,
        budget_epsilon=budget_epsilon,
        noise_seed=noise_seed,
        extra_config=extra,
    )
    return NodeLaunch(firm.firm_id, command)


def shown_command(text: str, noise_seed: int | None) -> str:
    """A node's command line for a log: the firm's own noise seed is its secret, hidden."""
    if noise_seed is None:
        return text
    return text.replace(f"noise-seed={noise_seed}", "noise-seed=<hidden>")
