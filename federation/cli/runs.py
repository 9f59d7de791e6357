"""Runs: `simulate` a scenario's federation, `run` the real one on its SuperLink, `report` on either."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from silobridge.contract.seeds import MAX_NOISE_SEED
from silobridge.errors import ConfigError, SiloBridgeError
from silobridge.federation.cli.common import (
    EXIT_SELF_SIGNED,
    PilotData,
    err_console,
    fail,
    out_console,
    print_summary,
    sub_app,
)

app = sub_app()


class BaselineChoice(StrEnum):
    """`simulate --baselines`: the scenario's `[training] baselines`, set from the command line."""

    all = "all"
    sample = "sample"
    none = "none"


@app.command()
def simulate(
    scenario: Annotated[
        Path | None, typer.Argument(help="Scenario file (TOML); default scenarios/default.toml.", show_default=False)
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder that receives the run directory (default: runs).")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Override the scenario's seed.", min=0)] = None,
    rounds: Annotated[int | None, typer.Option(help="Override the number of federated rounds.", min=1)] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a scenario field: --set horizon=8, --set training.local_epochs=2, --set firms.R3.history=40",
        ),
    ] = None,
    run_id: Annotated[
        str | None, typer.Option(help="Name of the run directory (default: time, scenario and seed).")
    ] = None,
    aggregation: Annotated[
        str | None,
        typer.Option(help="'secure' (the scenario's default) or 'plain' to compare with aggregation in the clear."),
    ] = None,
    no_dp: Annotated[
        bool,
        typer.Option("--no-dp", help="Turn differential privacy off: the non-private comparison (no ledger)."),
    ] = False,
    plain: Annotated[bool, typer.Option("--plain", help="Log lines instead of the live progress display.")] = False,
    data: PilotData = None,
    noise_seed: Annotated[
        int | None,
        typer.Option(
            "--noise-seed",
            help="Fix every firm's DP-SGD sampling and noise (reproducible experiments); default: fresh OS entropy.",
            min=0,
            max=MAX_NOISE_SEED,
        ),
    ] = None,
    ledger_key: Annotated[
        Path | None,
        typer.Option(
            "--ledger-key",
            help="Sign the privacy ledger with this long-term key (`silobridge keys --ledger`); default: a key made "
            "for this run only, which an audit reports as such.",
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            help="Give every simulated firm its own lifetime privacy odometer in STATE/<firm>: repeated simulations "
            "of the same firms compose, and a firm refuses a round past its lifetime budget.",
        ),
    ] = None,
    lifetime_epsilon: Annotated[
        float | None,
        typer.Option("--lifetime-epsilon", help="With --state: each firm's lifetime epsilon per data set.", min=0.0),
    ] = None,
    baselines: Annotated[
        BaselineChoice | None,
        typer.Option(
            "--baselines",
            help="Whose local-only baselines to fit: all, a seeded sample (\\[training] baseline_sample firms), none; "
            "default: the scenario's \\[training] baselines (auto: all up to 200 firms, a sample above). "
            "Comparisons with local-only are then over those firms only, and the summary says so.",
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue the run in this folder (left by a crash or Ctrl-C) after its last completed round, with "
            "the settings it started with (any other setting given is refused).",
        ),
    ] = None,
) -> None:
    """Simulate every firm of a scenario as a Flower client and compare federated, local-only, centralised and naive."""
    from silobridge.federation.progress import LogObserver, RichObserver, log_to_stderr
    from silobridge.federation.resume import resume_run_config
    from silobridge.federation.run_requests import simulation_config
    from silobridge.federation.settings import settings_from_run_config

    overrides = [*(set_ or []), *([f"training.baselines={baselines.value}"] if baselines is not None else [])]
    run_config = simulation_config(
        scenario or Path("scenarios/default.toml"),
        out or Path("runs"),
        seed=seed,
        rounds=rounds,
        overrides=overrides,
        run_id=run_id,
        aggregation=aggregation,
        no_dp=no_dp,
        noise_seed=noise_seed,
        data=data,
        ledger_key=ledger_key,
        state=state,
        lifetime_epsilon=lifetime_epsilon,
    )
    given = {  # the settings asked for on the command line, as run-config keys
        "scenario": scenario,
        "out-dir": out,
        "seed": seed,
        "num-rounds": rounds,
        "set": overrides or None,
        "run-id": run_id,
        "aggregation": aggregation,
        "dp": no_dp or None,
        "noise-seed": noise_seed,
        "data": data,
        "ledger-key": ledger_key,
        "state-dir": state,
        "lifetime-epsilon": lifetime_epsilon,
    }
    try:
        if resume is not None:
            run_config = resume_run_config(resume, {key: run_config[key] for key, v in given.items() if v is not None})
        settings = settings_from_run_config(run_config)
        run_config["run-id"] = settings.run_id
        # torch, Opacus, Flower and Ray (seconds to import) only once the scenario and options are valid:
        # a bad scenario's error comes at once.
        from silobridge.federation.simulation import simulate as run

        if plain or not err_console.is_terminal:
            log_to_stderr()
            result = run(run_config, observer=LogObserver(), resume=resume)
        else:
            with RichObserver(settings.scenario.training.rounds, console=err_console) as observer:
                result = run(run_config, observer=observer, resume=resume)
    except SiloBridgeError as err:
        raise fail(err) from None
    print_summary(result.summary)
    out_console.print(f"Run directory: [bold]{result.path}[/]")


@app.command("run")
def run_federation_command(
    config: Annotated[
        Path | None,
        typer.Argument(help="The federation file (firms, schema, training, privacy); default federation.toml."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder that receives the run directory (default: runs).")
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="Name of the run directory.")] = None,
    ledger_key: Annotated[
        Path | None,
        typer.Option(
            "--ledger-key", help="The long-term ledger key whose public key the federation file names (keys --ledger)."
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue the run in this folder (left by a crash or an interrupt) after its last completed round, "
            "in a new Flower run on the same nodes, with the settings it started with (any other is refused).",
        ),
    ] = None,
) -> None:
    """Coordinator: run the federation on the SuperLink (`flwr run`); same log, summary and ledger as a simulation.

    No overrides: every partner's node refuses settings that differ from the federation file it holds,
    so a change (rounds, privacy, aggregation) is a new federation file shared with every partner.
    """
    from silobridge.federation.network.runs import run_federation
    from silobridge.federation.run_requests import network_run_config

    try:
        if resume is None:
            run_config = network_run_config(
                config or Path("federation.toml"), out or Path("runs"), run_id=run_id, ledger_key=ledger_key
            )
        else:
            from silobridge.federation.resume import network_resume_config

            asked = network_run_config(config or Path("federation.toml"), out or Path("runs"), run_id=run_id)
            given = {  # the settings named on the command line, as run-config keys
                "scenario": asked["scenario"] if config is not None else None,
                "out-dir": asked["out-dir"] if out is not None else None,
                "run-id": run_id,
                "ledger-key": str(ledger_key.resolve()) if ledger_key is not None else None,
            }
            run_config = network_resume_config(resume, {k: v for k, v in given.items() if v is not None})
        result = run_federation(run_config, resume=resume)
    except SiloBridgeError as err:
        raise fail(err) from None
    print_summary(result.summary)
    out_console.print(f"Run directory: [bold]{result.path}[/]")


@app.command()
def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (runs/<run-id>).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write the HTML file (default RUN_DIR/report.html).")
    ] = None,
    public_key: Annotated[
        str | None, typer.Option(help="The coordinator's ledger public key (hex) to audit the ledger against.")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="The federation file whose [privacy] ledger_public_key to use.")
    ] = None,
) -> None:
    """Write a self-contained HTML report of a run: training curves, privacy spent (ledger audited), efficiency, events.

    Exit code as for audit (3 failed, 1 over budget, 4 incomplete), except that a ledger checked only against
    the key in its own run directory is reported as such in the page and exits 0.
    """
    from silobridge.federation.report import write_report

    try:
        if public_key is not None and config is not None:
            raise ConfigError("give --public-key or --config, not both", source="command line", field="--public-key")
        path, run = write_report(run_dir, out, public_key=public_key, federation=config)
    except SiloBridgeError as err:
        raise fail(err) from None
    code = 0
    if run.audit is not None:
        judgement = run.audit.judgement
        code = 0 if judgement.verdict.exit_code == EXIT_SELF_SIGNED else judgement.verdict.exit_code
        style = "green" if judgement.verdict.exit_code == 0 else "yellow" if code == 0 else "bold red"
        out_console.print(f"privacy ledger: [{style}]{judgement.text}[/]", highlight=False)
    out_console.print(f"Report written to [bold]{path}[/]")
    raise typer.Exit(code)  # the report is written either way; the exit code carries the verdict
