"""A real federation: certificates and keys, the coordinator's SuperLink, registering firms, a firm joining."""

from __future__ import annotations

import subprocess
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from silobridge.contract.seeds import MAX_NOISE_SEED
from silobridge.errors import LedgerTampered, SiloBridgeError
from silobridge.federation.cli.common import EXIT_TAMPERED, err_console, fail, out_console, sub_app

app = sub_app()

SUPERLINK_PORT = 9093


class ExecutorKind(StrEnum):
    """Who runs a partner's messages (see `silobridge join --help`)."""

    warm = "warm"
    cold = "cold"
    flower = "flower"


@app.command()
def certs(
    out: Annotated[Path, typer.Option("--out", help="Folder for ca.pem, ca.key, server.pem, server.key.")] = Path(
        "certs"
    ),
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="A name or IP address firms dial the SuperLink by (repeat); default 127.0.0.1."),
    ] = None,
    days: Annotated[int, typer.Option(help="Validity of both certificates, in days.", min=1)] = 365,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace existing files.")] = False,
) -> None:
    """Coordinator: create a CA and the SuperLink's TLS certificate (for a small or test federation)."""
    from silobridge.federation.network.certs import make_certificates

    try:
        files = make_certificates(out, host or ["127.0.0.1"], days=days, overwrite=overwrite)
    except SiloBridgeError as err:
        raise fail(err) from None
    out_console.print(f"CA certificate (give it to every firm): [bold]{files.ca_cert}[/]")
    out_console.print(
        f"Server certificate and key (keep on the SuperLink host): {files.server_cert}, {files.server_key}"
    )
    out_console.print(f"CA key (keep offline; signs new server certificates): {files.ca_key}")


@app.command()
def keys(
    out: Annotated[Path, typer.Option("--out", help="Private key file; the public key goes beside it as .pub.")] = Path(
        "firm.key"
    ),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing pair (key rotation).")] = False,
    ledger: Annotated[
        bool,
        typer.Option(
            "--ledger",
            help="Coordinator: make the long-term Ed25519 key that signs every run's privacy ledger instead "
            "(PEM private key, mode 0600; its public key goes into the federation file).",
        ),
    ] = False,
) -> None:
    """Firm: make the SuperNode's authentication key pair (EC P-384, OpenSSH format). Coordinator: --ledger."""
    if ledger:
        from silobridge.privacy.ledger.keys import write_signing_key

        try:
            public_path, public_hex = write_signing_key(out, overwrite=overwrite)
        except SiloBridgeError as err:
            raise fail(err) from None
        out_console.print(f"Ledger private key (keep on the coordinator, mode 0600): [bold]{out}[/]")
        out_console.print(f"Public key: {public_path}; put it in the federation file every partner holds:")
        out_console.print(
            f'[privacy]\nledger_public_key = "{public_hex}"', highlight=False, markup=False, soft_wrap=True
        )
        return
    from silobridge.federation.network.keys import make_node_keys

    try:
        files = make_node_keys(out, overwrite=overwrite, comment=out.stem)
    except SiloBridgeError as err:
        raise fail(err) from None
    out_console.print(f"Private key (never leaves this machine): [bold]{files.private_key}[/]")
    out_console.print(f"Public key (send to the coordinator): [bold]{files.public_key}[/]")
    out_console.print(f"Fingerprint (read it to the coordinator out of band): {files.fingerprint}")


@app.command()
def superlink(
    certs_dir: Annotated[Path, typer.Option("--certs", help="Folder from `silobridge certs`.")] = Path("certs"),
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for all interfaces).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The one HTTPS port of Fleet, Control and Runtime APIs.")] = SUPERLINK_PORT,
    connect_as: Annotated[
        str, typer.Option("--connect-as", help="Address `flwr` uses to reach it (written to $FLWR_HOME/config.toml).")
    ] = "",
    database: Annotated[Path | None, typer.Option(help="State file, so registrations survive a restart.")] = None,
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the flower-superlink command, start nothing.")
    ] = False,
) -> None:
    """Coordinator: start a SuperLink with TLS and SuperNode authentication (registered keys only)."""
    from silobridge.federation.network.deploy import CONNECTION, argv_text, process_env
    from silobridge.federation.network.flower_hooks import SUPERLINK_SUPEREXEC_POLL_S
    from silobridge.federation.network.launch import connect_flwr, plan_superlink

    try:
        launch = plan_superlink(certs_dir, host=host, port=port, connect_as=connect_as, database=database)
    except SiloBridgeError as err:
        raise fail(err) from None
    out_console.print(argv_text(launch.command))
    if print_only:
        return
    written = connect_flwr(launch)
    err_console.print(f"flwr connection '{CONNECTION}' -> {launch.address} written to {written}")
    err_console.print(
        f"register a firm: silobridge register FIRM.key.pub (or flwr supernode register FIRM.key.pub {CONNECTION})"
    )
    raise typer.Exit(subprocess.call(launch.command, env=process_env(superexec_poll_s=SUPERLINK_SUPEREXEC_POLL_S)))


@app.command()
def register(
    public_key: Annotated[Path, typer.Argument(help="The firm's public key (.pub from `silobridge keys`).")],
) -> None:
    """Coordinator: register a firm's public key with the running SuperLink (Flower's `flwr supernode register`)."""
    from silobridge.federation.network.deploy import process_env, register_command
    from silobridge.federation.network.keys import fingerprint

    try:
        command = register_command(public_key)
    except SiloBridgeError as err:
        raise fail(err) from None
    err_console.print(f"registering {public_key} ({fingerprint(public_key.read_bytes())}): check it with the firm")
    raise typer.Exit(subprocess.call(command, env=process_env()))


@app.command()
def join(
    superlink: Annotated[str, typer.Option("--superlink", help="The coordinator's SuperLink, HOST:PORT.")],
    ca: Annotated[Path, typer.Option("--ca", help="The federation's CA certificate (ca.pem).")],
    key: Annotated[Path, typer.Option("--key", help="This firm's private key (from `silobridge keys`).")],
    data: Annotated[Path, typer.Option("--data", help="This firm's folder of CSV files (its name is the firm id).")],
    config: Annotated[Path, typer.Option("--config", help="The federation file.")] = Path("federation.toml"),
    firm_id: Annotated[str | None, typer.Option("--firm-id", help="Firm id, if not the folder's name.")] = None,
    budget_epsilon: Annotated[
        float | None, typer.Option("--budget-epsilon", help="This firm's own privacy limit (stricter than the run's).")
    ] = None,
    runtime_port: Annotated[int, typer.Option(help="Local port of the SuperNode's own runtime API.")] = 9094,
    noise_seed: Annotated[
        int | None,
        typer.Option(
            "--noise-seed",
            help="Fix this firm's own DP-SGD sampling and noise, for tests against a coordinator you run yourself: "
            "a coordinator that repeats a round number could then cancel your noise. Default: fresh OS entropy.",
            min=0,
            max=MAX_NOISE_SEED,
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="This firm's lifetime privacy odometer (a folder it owns): what each data set spent across runs, "
            "signed by the node; rounds past --lifetime-epsilon are refused, whichever run asks.",
        ),
    ] = None,
    lifetime_epsilon: Annotated[
        float | None,
        typer.Option(
            "--lifetime-epsilon",
            help="Lifetime epsilon per data set (with --state; needed once, kept after).",
            min=0.0,
        ),
    ] = None,
    lifetime_delta: Annotated[
        float, typer.Option("--lifetime-delta", help="The delta lifetime epsilon is stated at.")
    ] = 1e-5,
    executor: Annotated[
        ExecutorKind,
        typer.Option(
            "--executor",
            help="Who runs each message: 'warm' (one process that imported torch, flwr and the ClientApp once forks "
            "per message; restarted if it dies), 'cold' (the same executor starting a fresh interpreter per "
            "message), or 'flower' (Flower's own per-message flwr-clientapp processes).",
        ),
    ] = ExecutorKind.warm,
    handoff_log: Annotated[
        Path | None,
        typer.Option(
            "--handoff-log",
            help="With warm or cold: append one JSON line per message (when the executor took it, when the "
            "ClientApp's handler started), for benchmarks.",
        ),
    ] = None,
) -> None:
    """Firm: validate its data again, then start a SuperNode that joins the federation's rounds."""
    from silobridge.federation.network.deploy import argv_text, process_env
    from silobridge.federation.network.launch import plan_node, shown_command

    try:
        node = plan_node(
            superlink=superlink,
            ca=ca,
            key=key,
            data=data,
            config=config,
            firm_id=firm_id,
            budget_epsilon=budget_epsilon,
            runtime_port=runtime_port,
            noise_seed=noise_seed,
            state=state,
            lifetime_epsilon=lifetime_epsilon,
            lifetime_delta=lifetime_delta,
        )
    except LedgerTampered as err:
        err_console.print(f"[bold red]odometer check failed, not joining:[/] {err}", highlight=False)
        raise typer.Exit(EXIT_TAMPERED) from None
    except SiloBridgeError as err:
        raise fail(err) from None
    err_console.print(f"firm '{node.firm_id}': data valid; joining {superlink}")
    if noise_seed is not None:  # the seed is the firm's secret: not in a log someone else may read
        err_console.print(
            "[yellow]warning:[/] --noise-seed fixes this node's DP noise: use it only for tests, against a "
            "coordinator you trust (one that repeats a round number could cancel the noise)"
        )
    err_console.print(shown_command(argv_text(node.command), noise_seed))
    if executor is ExecutorKind.flower:
        raise typer.Exit(subprocess.call(node.command, env=process_env()))
    from silobridge.federation.network.node_supervisor import run_supervised

    err_console.print(f"executor: {executor.value} (--isolation process; restarted if it exits)")
    code = run_supervised(
        node.command, f"127.0.0.1:{runtime_port}", process_env(), mode=executor.value, handoff_log=handoff_log
    )
    raise typer.Exit(code)
