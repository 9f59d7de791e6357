"""Privacy: `audit` a run's ledger, show a firm's lifetime `budget`, `calibrate` the noise before a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from silobridge.errors import ConfigError, LedgerTampered, SiloBridgeError
from silobridge.federation.cli.common import EXIT_TAMPERED, err_console, fail, option_error, out_console, sub_app

if TYPE_CHECKING:
    from silobridge.federation.ledger_audit import LedgerAudit

app = sub_app()


@app.command()
def audit(
    target: Annotated[Path, typer.Argument(help="A run directory, or a privacy ledger file (privacy_ledger.jsonl).")],
    public_key: Annotated[
        str | None,
        typer.Option(help="The coordinator's Ed25519 ledger public key (hex, any case) to verify the ledger against."),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", help="The federation file: verify against its [privacy] ledger_public_key (the usual way)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the audit report as JSON.")] = False,
) -> None:
    """Verify a run's privacy ledger (chain, signatures, epsilon recomputed by the accountant) and report spend.

    Exit code: 0 verified under a trusted key; 1 over budget; 2 bad input; 3 failed (tampered, wrong key, or
    the run's summary disagrees); 4 incomplete (no end entry: a crash prefix or a truncated ledger); 5 intact
    but checked only against a key found in the run directory (give --config or --public-key).
    """
    from silobridge.federation.ledger_audit import LEDGER_FILE, audit_ledger_file

    path = target / LEDGER_FILE if target.is_dir() else target
    if not path.exists():
        raise fail(ConfigError(f"no privacy ledger at {path} (a run without DP has none)", source=str(target)))
    try:
        result = audit_ledger_file(
            path, run_dir=target if target.is_dir() else None, public_key=public_key, federation=config
        )
    except SiloBridgeError as err:
        raise fail(err) from None
    verdict, report = result.judgement.verdict, result.report
    if as_json:
        out_console.print_json(json.dumps(audit_json(result), default=str))
        raise typer.Exit(verdict.exit_code)
    if report is None:
        err_console.print(f"[bold red]ledger check failed:[/] {result.error}", highlight=False)
        raise typer.Exit(verdict.exit_code)
    print_audit(path, result)
    style = "green" if verdict.exit_code == 0 else "bold red"
    out_console.print(f"verdict: [{style}]{result.judgement.text}[/]", highlight=False)
    raise typer.Exit(verdict.exit_code)


def audit_json(result: LedgerAudit) -> dict[str, Any]:
    """The audit as `--json` prints it: the verdict, the key's source, disagreements, then the report
    (or, for a ledger that failed, its error and the entry it failed at)."""
    report = result.report
    body = report.to_dict() if report is not None else {"error": result.error, "entry": result.entry}
    return {
        "verified": result.verified,
        "verdict": result.judgement.verdict.name.lower(),
        "verdict_text": result.judgement.text,
        "key_source": result.key_source,
        "problems": list(result.problems),
        **body,
    }


def print_audit(path: Path, result: LedgerAudit) -> None:
    """The audit as tables: the ledger's summary, each firm's spend, each release."""
    from rich.table import Table

    report = result.report
    if report is None:  # a ledger that failed has only its error, printed by the caller
        return
    summary = Table(title=f"Privacy ledger of run {report.run_id}", show_header=False)
    summary.add_row("ledger", str(path))
    summary.add_row("entries", f"{report.entries} (chain and signatures checked)")
    trust = (
        f"trusted: matches the key of {result.key_source}"
        if report.key_trusted
        else "NOT trusted: found in the run directory only"
    )
    summary.add_row("signing key", f"{report.public_key} ({report.key_kind or 'kind not recorded'}; {trust})")
    summary.add_row(
        "accountant",
        f"{report.accountant.kind.value}, {report.accountant.relation.name}, unit {report.accountant.unit.value}",
    )
    summary.add_row("budget", f"epsilon {report.budget.epsilon:g} at delta {report.budget.delta:g}")
    summary.add_row("epsilon spent (recomputed)", f"{report.epsilon_overall:.4f}")
    summary.add_row("within budget", "yes" if report.within_budget else "NO")
    summary.add_row(
        "ended",
        report.end_reason
        if report.ended
        else "NO end entry: torn by a crash mid-line"
        if report.torn_tail
        else "NO end entry: the run was cut off",
    )
    for problem in result.problems:
        summary.add_row("disagreement", problem)
    for warning in report.warnings:
        summary.add_row("warning", warning)
    out_console.print(summary)
    firms = Table(title="Per firm")
    for column in ("firm", "releases", "epsilon", "budget", "within"):
        firms.add_column(column)
    for firm, row in sorted(report.firms.items()):
        firms.add_row(
            firm,
            str(row.releases),
            f"{row.epsilon:.4f}",
            f"{row.budget.epsilon:g}",
            "yes" if row.within_budget else "NO",
        )
    out_console.print(firms)
    releases = Table(title="Per release")
    for column in ("entry", "release", "mechanism", "firms", "excluded", "epsilon after"):
        releases.add_column(column)
    for release in report.releases:
        releases.add_row(
            str(release.index),
            release.release_id,
            release.mechanism,
            str(len(release.firms)),
            ", ".join(release.excluded_firms),
            f"{release.epsilon_overall:.4f}",
        )
    out_console.print(releases)
    for refusal in report.refusals:
        out_console.print(f"refused: {refusal}")


@app.command()
def budget(
    state: Annotated[
        Path, typer.Argument(help="An odometer folder (join --state), or a simulation's --state holding one per firm.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print it as JSON.")] = False,
) -> None:
    """Firm: what each data set has spent across runs (the node's lifetime odometer, verified first).

    Exit code 3 if the odometer was altered (the node then refuses to take part), 2 if there is none.
    """
    from rich.table import Table

    from silobridge.federation.lifetime_spend import open_odometers, spend_rows

    try:
        odometers = open_odometers(state)
    except LedgerTampered as err:
        err_console.print(f"[bold red]odometer check failed:[/] {err}", highlight=False)
        raise typer.Exit(EXIT_TAMPERED) from None
    except SiloBridgeError as err:
        raise fail(err) from None
    rows = spend_rows(odometers)
    if as_json:
        out_console.print_json(json.dumps({"verified": True, "datasets": rows}))
        return
    table = Table(title="Lifetime privacy spend (odometer verified: chain, signatures, head)")
    for column in ("firm", "data set", "releases", "runs", "epsilon spent", "lifetime budget", "remaining"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row["firm"],
            row["dataset"],
            str(row["releases"]),
            str(len(row["runs"])),
            f"{row['epsilon']:.4f}",
            f"{row['lifetime_epsilon']:g} at delta {row['delta']:g}",
            f"{row['remaining']:.4f}",
        )
    for odo in odometers:
        if not odo.datasets():
            table.add_row(odo.firm, "-", "0", "0", "0", f"{odo.lifetime.epsilon:g} at delta {odo.lifetime.delta:g}", "")
    out_console.print(table)


CALIBRATE_OPTIONS = {
    "epsilon": "--epsilon",
    "delta": "--delta",
    "sample_rate": "--sample-rate",
    "firm_sample_rate": "--sample-rate",
    "rounds": "--rounds",
    "local_epochs": "--local-epochs",
}
"""PrivacySpec and PrivacyPlan fields as calibrate's options name them."""


@app.command()
def calibrate(
    epsilon: Annotated[float, typer.Option(help="Target epsilon.", min=0.0)],
    delta: Annotated[float, typer.Option(help="Target delta.")] = 1e-5,
    rounds: Annotated[int, typer.Option(help="Federated rounds.", min=1)] = 30,
    unit: Annotated[str, typer.Option(help="'record' (DP-SGD in each firm) or 'firm' (DP-FedAvg).")] = "record",
    local_epochs: Annotated[int, typer.Option(help="DP-SGD epochs per round (record unit).", min=1)] = 1,
    sample_rate: Annotated[
        float | None,
        typer.Option(help="Record unit: examples per step (default 0.1); firm unit: firms per round (default 1)."),
    ] = None,
    accountant: Annotated[str, typer.Option(help="'rdp' or 'pld'.")] = "rdp",
) -> None:
    """The noise multiplier that spends exactly (epsilon, delta) over the planned rounds."""
    from pydantic import ValidationError

    from silobridge.server.calibration import calibrate as calibrated

    try:
        if unit not in ("record", "firm"):
            raise ConfigError(f"unknown unit '{unit}' (record or firm)", source="command line", field="--unit")
        if accountant not in ("rdp", "pld"):
            raise ConfigError(
                f"unknown accountant '{accountant}' (rdp or pld)", source="command line", field="--accountant"
            )
        result = calibrated(
            epsilon=epsilon,
            delta=delta,
            rounds=rounds,
            unit=unit,
            local_epochs=local_epochs,
            sample_rate=sample_rate,
            accountant=accountant,
        )
    except ValidationError as err:
        raise fail(option_error(err, CALIBRATE_OPTIONS)) from None
    except SiloBridgeError as err:
        raise fail(err) from None
    out_console.print(
        f"noise multiplier {result.noise_multiplier:.4f} for epsilon {epsilon:g} at delta {delta:g}: "
        f"{rounds} rounds, unit {unit}, {accountant.upper()} accountant (spends {result.epsilon_spent:.4f})"
    )
