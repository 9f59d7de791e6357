"""What a person watching a run sees: a rich progress bar with live metrics, or plain log lines.

Runs started from `flwr run` have no terminal of their own (their output is streamed), so the
plain observer is the default there; `silobridge simulate` in a terminal gets the rich one.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from silobridge.federation.summary_schema import GROUP_ORDER, METHODS, METRICS

log = logging.getLogger("silobridge")


def _live_line(record: dict[str, Any]) -> str:
    metrics = record["metrics"]
    if metrics is None:
        return "not measured (DP: firms release no test statistics)"
    if record["model"] == "demand":
        all_ = metrics["all"]["wape"]
        if "small" not in metrics:  # small firms not released on their own (too few firms)
            return f"demand WAPE all {_num(all_)}"
        return f"demand WAPE all {_num(all_)} small {_num(metrics['small']['wape'])}"
    return f"risk ROC-AUC {_num(metrics['all']['roc_auc'])}"


def _epsilon_text(record: dict[str, Any]) -> str:
    """The privacy spent so far, for a private run's round (empty otherwise)."""
    return f"epsilon spent {record['epsilon']:.2f}" if record.get("epsilon") is not None else ""


def _num(value: float | None) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.3f}"


def log_to_stderr() -> None:
    """Our progress lines on stderr at INFO, whatever other libraries did to the root logger."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class LogObserver:
    """One log line per stage and per round."""

    def stage(self, name: str) -> None:
        log.info("stage: %s", name)

    def round_done(self, record: dict[str, Any]) -> None:
        epsilon = _epsilon_text(record)
        loss = record.get("train_loss")
        log.info(
            "round %d %s: %smodel of round %d: %s%s",
            record["round"],
            record["model"],
            # under DP the firms release no training loss: say nothing rather than a column of n/a
            "" if loss is None or (isinstance(loss, float) and math.isnan(loss)) else f"loss {_num(loss)}, ",
            record["evaluated_round"],
            _live_line(record),
            f", {epsilon}" if epsilon else "",
        )


class RichObserver:
    """A progress bar over the rounds whose description carries the latest metrics."""

    def __init__(self, total_rounds: int, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.fields[stage]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[live]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self.task = self.progress.add_task("run", total=total_rounds, stage="starting", live="")
        self.latest: dict[str, str] = {}

    def __enter__(self) -> RichObserver:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def stage(self, name: str) -> None:
        self.progress.update(self.task, stage=name)

    def round_done(self, record: dict[str, Any]) -> None:
        self.latest[record["model"]] = _live_line(record)
        parts = [self.latest[k] for k in sorted(self.latest)]
        if _epsilon_text(record):
            parts.append(_epsilon_text(record))
        live = " | ".join(parts)
        self.progress.update(self.task, completed=record["round"], live=live)


class StageTimer:
    """Seconds spent in each stage (all rounds together under 'rounds'): where a run's time goes."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._current: str | None = None
        self._started = time.monotonic()

    def stage(self, name: str) -> None:
        now = time.monotonic()
        if self._current is not None:
            self.seconds[self._current] = self.seconds.get(self._current, 0.0) + now - self._started
        self._current = "rounds" if name.startswith("round ") else name
        self._started = now

    def round_done(self, record: dict[str, Any]) -> None:
        return None

    def totals(self) -> dict[str, float]:
        """Closes the running stage and returns rounded totals."""
        self.stage("done")
        self.seconds.pop("done", None)
        return {name: round(value, 3) for name, value in self.seconds.items()}


class Fanout:
    """Passes every event to several observers (display and metrics file)."""

    def __init__(self, *observers: Any):
        self.observers = observers

    def stage(self, name: str) -> None:
        for o in self.observers:
            o.stage(name)

    def round_done(self, record: dict[str, Any]) -> None:
        for o in self.observers:
            o.round_done(record)


def results_tables(summary: dict[str, Any]) -> list[Table]:
    """The end-of-run comparison of methods: one table per model, a row per method and firm group."""
    tables = []
    for kind in ("demand", "risk"):
        methods = summary["models"].get(kind, {})
        table = Table(title=f"{kind} model, held-out periods")
        table.add_column("method")
        table.add_column("firms")
        for metric in METRICS[kind]:
            table.add_column(metric, justify="right")
        for method in METHODS[kind]:
            if method not in methods:
                continue
            for group in [g for g in GROUP_ORDER if g in methods[method]]:  # groups not released have no row
                row = methods[method][group]
                table.add_row(method if group == GROUP_ORDER[0] else "", group, *(_num(row[m]) for m in METRICS[kind]))
            table.add_section()
        withheld = (summary.get("groups_withheld") or {}).get(kind)
        if withheld:
            table.caption = f"Small and large firms not shown on their own: {withheld}."
        tables.append(table)
    return tables


def privacy_table(summary: dict[str, Any]) -> Table | None:
    """What the run spent of its budget, per firm, as the verified ledger says (None without DP)."""
    privacy = summary.get("privacy") or {}
    if not privacy.get("enabled"):
        return None
    budget = privacy["budget"]
    table = Table(
        title=(
            f"Privacy ({privacy['unit']} level, {privacy['mechanism']}): epsilon spent "
            f"{_num(privacy['epsilon_overall'])} of {budget['epsilon']:g} at delta {budget['delta']:g}"
        )
    )
    table.add_column("firm")
    table.add_column("releases", justify="right")
    table.add_column("epsilon (RDP)", justify="right")
    table.add_column("epsilon (PLD)", justify="right")
    observation = shows_observation_epsilon(privacy)
    if observation:
        table.add_column("one observation", justify="right")
        table.caption = OBSERVATION_NOTE
    absent = set(privacy.get("firms_in_no_round") or ())
    for firm, row in privacy["firms"].items():
        releases = f"{row['releases']} (took part in no round)" if firm in absent else str(row["releases"])
        cells = [firm, releases, _num(row["epsilon_rdp"]), _num(row["epsilon_pld"])]
        if observation:
            value = row.get("observation_epsilon")
            cells.append("no bound" if value is None else _num(value))
        table.add_row(*cells)
    return table


OBSERVATION_NOTE = (
    "one observation: epsilon of one week's demand figure, which sits in several training windows (group "
    "privacy); 'no bound' where the spend is too large for group privacy to bound it"
)


def shows_observation_epsilon(privacy: dict[str, Any]) -> bool:
    """The per-observation column only where some firm has a finite value: a column of n/a says nothing."""
    return privacy.get("unit") == "record" and any(
        row.get("observation_epsilon") is not None for row in privacy.get("firms", {}).values()
    )


def acceptance_table(summary: dict[str, Any]) -> Table:
    table = Table(title="Acceptance checks")
    table.add_column("check")
    table.add_column("value", justify="right")
    table.add_column("target")
    table.add_column("passed")
    for check in summary["acceptance"]:
        passed = {True: "[green]yes", False: "[red]no", None: "n/a"}[check["passed"]]
        table.add_row(check["name"], _num(check["value"]), check["target"], passed)
    return table


def efficiency_table(summary: dict[str, Any]) -> Table | None:
    """Cross-firm efficiency before (local-only forecasts) and after (federated), chain and tiers:
    per group a row before, a row after and a row of the rates K = after / before."""
    section = summary.get("efficiency")
    if not section:
        return None
    dp = section.get("dp")
    noise = f"; DP release, epsilon {dp['epsilon']:.3g}" if dp else ""
    table = Table(
        title=f"Cross-firm efficiency, inventory simulation over {section['horizon']} held-out periods{noise}"
    )
    table.add_column("group")
    table.add_column("")
    for name in ("E", "O", "I", "TFP"):
        table.add_column(name, justify="right")
    for group, row in (("chain", section["chain"]), *section["tiers"].items()):
        for label, values, names in (
            ("before", row["before"], ("E", "O", "I", "TFP")),
            ("after", row["after"], ("E", "O", "I", "TFP")),
            ("K", row["K"], ("K_E", "K_O", "K_I", "K_TFP")),
        ):
            table.add_row(group if label == "before" else "", label, *(_num(values[n]) for n in names))
        table.add_section()
    suppressed = section.get("suppressed_tiers") or {}
    if suppressed:
        minimum = section.get("min_firms_per_group")
        table.caption = f"Published: groups of at least {minimum} firms. Not on their own: " + "; ".join(
            f"{tier} ({why})" for tier, why in suppressed.items()
        )
    return table
