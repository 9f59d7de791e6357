"""The report page: one HTML file with its style inline and every figure a base64 PNG data URI.

Every value from the run goes through `html.escape`; the page loads nothing (its Content-Security-Policy
allows only inline style and data: images), so it opens the same offline, in a mail client or an archive.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Sequence
from string import Template
from typing import Any

from silobridge.federation.report import plots
from silobridge.federation.report.data import Efficiency, EfficiencyBlock, PerFirm, RunData, Summary

METRICS = {"demand": ("wape", "mae"), "risk": ("roc_auc", "pr_auc", "brier")}
METHOD_ORDER = ("deployed", "federated", "federated_linear", "local_only", "centralised", "naive")
GROUPS = ("all", "small", "large")
NOT_COMPUTED = "not computed in this run"

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f3f3f3; }
img { max-width: 100%; height: auto; display: block; margin: .8em 0; }
.verdict { padding: .6em 1em; border-radius: .3em; font-weight: 600; }
.ok { background: #e5f5e5; border: 1px solid #4a4; } .fail { background: #fbe4e4; border: 1px solid #c33; }
.note { color: #555; }
"""
PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="$csp">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>$style</style>
</head>
<body>
$body
</body>
</html>
""")


def e(value: Any) -> str:
    """Escaped text of any value (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A table cell's text: numbers to `digits` decimals, missing or undefined as n/a."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}" if abs(value) < 1e6 else f"{value:.4g}"
    return str(value)


def image(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{e(alt)}">'


def table(headers: Sequence[str] | None, rows: Iterable[Sequence[Any]], *, numeric_from: int = 1) -> str:
    """An HTML table (no header row for None); numbers from column `numeric_from` on are right-aligned."""
    head = "".join(f"<th>{e(h)}</th>" for h in headers or ())
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            numeric = i >= numeric_from and isinstance(cell, int | float) and not isinstance(cell, bool)
            cells.append(f'<td class="num">{e(fmt(cell))}</td>' if numeric else f"<td>{e(fmt(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    thead = f"<thead><tr>{head}</tr></thead>" if head else ""
    return f"<table>{thead}<tbody>{''.join(body)}</tbody></table>"


def paragraph(text: str, css: str | None = None) -> str:
    return f'<p class="{e(css)}">{e(text)}</p>' if css else f"<p>{e(text)}</p>"


def section(title: str, anchor: str, *parts: str) -> str:
    return f'<section id="{e(anchor)}"><h2>{e(title)}</h2>\n' + "\n".join(p for p in parts if p) + "</section>"


# -- sections ---------------------------------------------------------------------------------------


def overview(run: RunData) -> str:
    s = run.summary
    rows: list[tuple[str, Any]] = [("run directory", str(run.path))]
    if s is not None:
        fed, scenario = s.federation, s.scenario
        groups = fed.get("groups", {})
        aggregation = fed.get("aggregation", {})
        rows += [
            ("run id", s.run_id),
            ("created", s.created),
            ("scenario", f"{scenario.get('name')} (seed {scenario.get('seed')})"),
            ("overrides", ", ".join(str(o) for o in scenario.get("overrides", [])) or "none"),
            ("firms", f"{fed.get('firms')} ({groups.get('small')} small, {groups.get('large')} large)"),
            ("training", f"{fed.get('strategy')}, {fed.get('rounds')} rounds, {fed.get('local_epochs')} local epochs"),
            ("aggregation", aggregation.get("mode", "n/a")),
            ("test periods", f"{fed.get('test_periods')} from {fed.get('test_start')}, horizon {fed.get('horizon')}"),
            ("differential privacy", _privacy_line(s)),
            ("training stopped early", s.stopped or "no"),
            ("duration", f"{fmt(s.seconds, 1)} s"),
            ("versions", ", ".join(f"{k} {v}" for k, v in s.versions.items())),
        ]
    if run.failure is not None:
        rows.append(("run failed", run.failure))
    body = table(None, rows, numeric_from=99)
    failed = paragraph(f"This run failed: {run.failure}", "verdict fail") if run.failure is not None else ""
    return section("Run", "run", failed, body)


def _privacy_line(s: Summary) -> str:
    p = s.privacy
    if not p.get("enabled"):
        return "off (the non-private comparison)"
    budget = p.get("budget", {})
    line = (
        f"unit {p.get('unit')} ({p.get('neighbouring')}), mechanism {p.get('mechanism')}, noise multiplier "
        f"{p.get('noise_multiplier')}, budget epsilon {budget.get('epsilon')} at delta {budget.get('delta')}"
    )
    adaptive = p.get("adaptive_clipping")
    if isinstance(adaptive, dict):
        line += (
            f"; adaptive clipping (target quantile {adaptive.get('target_quantile')}): clip norm "
            f"{fmt(adaptive.get('first_clip_norm'))} in the first round, "
            f"{fmt(adaptive.get('last_clip_norm'))} in the last"
        )
    return line


def models(run: RunData) -> str:
    s = run.summary
    parts = []
    for kind in ("demand", "risk"):
        png = plots.training_curves(kind, run.rounds, s)
        if png is not None:
            parts.append(image(png, f"{kind} test metric per round against the baselines"))
        if s is None or not s.models.get(kind):
            continue
        metrics = METRICS[kind]
        headers = ["method"] + [f"{m} ({g})" for m in metrics for g in GROUPS]
        methods = [m for m in METHOD_ORDER if m in s.models[kind]] + sorted(set(s.models[kind]) - set(METHOD_ORDER))
        rows = [
            [method] + [s.models[kind][method].get(g, {}).get(m) for m in metrics for g in GROUPS] for method in methods
        ]
        parts.append(f"<h3>{e(kind)}</h3>" + table(headers, rows))
        if kind in s.per_firm:
            parts.append(_per_firm(kind, s.per_firm[kind]))
        if kind in s.groups_withheld:
            parts.append(paragraph(f"Small and large firms not shown on their own: {s.groups_withheld[kind]}.", "note"))
    loss = plots.training_loss(run.rounds)
    if loss is not None:
        parts.append(image(loss, "weighted training loss per round"))
    if not parts:
        parts.append(
            paragraph(
                "No model metrics were recorded in this run (a real federation under DP: firms release no "
                "test statistics; a pilot on the same files measures them).",
                "note",
            )
        )
    intro = paragraph(
        "Test metrics on the held-out periods. Curves: the federated model after each round; lines: the "
        "baselines' final values (local-only, centralised on pooled data, seasonal naive).",
        "note",
    )
    return section("Models", "models", intro, *parts)


def _per_firm(kind: str, rows: PerFirm) -> str:
    """What joining gave each firm: its deployed model against going alone (simulation only)."""
    if kind == "demand":
        headers = ("firm", "group", "deploys", "WAPE deployed", "WAPE local-only", "ratio", "why")
        body = [(r.firm, r.group, r.choice, r.deployed_wape, r.local_only_wape, r.ratio, r.reason) for r in rows.firms]
        worst = f"worst ratio {fmt(rows.worst_ratio)}"
    else:
        headers = (
            "firm",
            "group",
            "deploys",
            "ROC-AUC deployed",
            "ROC-AUC local-only",
            "difference",
            "test events",
            "why",
        )
        body = [
            (r.firm, r.group, r.choice, r.deployed_roc_auc, r.local_only_roc_auc, r.difference, r.test_events, r.reason)
            for r in rows.firms
        ]
        worst = f"worst difference {fmt(rows.worst_difference)}"
        if rows.min_test_events is not None:
            worst += (
                f" over firms with {rows.min_test_events}+ test events ({len(rows.few_test_events)} with fewer: "
                "their ROC-AUC turns on a row or two, reported but not judged)"
            )
        worst += f", mean {fmt(rows.mean_difference)}"
    note = paragraph(
        f"What joining gave each firm ({worst}). Each firm chose what it deploys on its own most recent training "
        "windows; the figures are the simulation harness's measurements on the test periods (simulation only: a "
        "real federation releases none of them).",
        "note",
    )
    return note + table(headers, body, numeric_from=3)


def acceptance(s: Summary | None) -> str:
    if s is None:
        return section("Acceptance checks", "acceptance", paragraph(NOT_COMPUTED, "note"))
    rows = [(c.name, c.value, c.target, "n/a" if c.passed is None else fmt(c.passed)) for c in s.acceptance]
    return section("Acceptance checks", "acceptance", table(("check", "value", "target", "passed"), rows))


def privacy(run: RunData) -> str:
    audit, s = run.audit, run.summary
    if audit is None:
        return section(
            "Privacy", "privacy", paragraph("Differential privacy was off in this run: there is no privacy ledger.")
        )
    css = "verdict ok" if audit.judgement.verdict.exit_code in (0, 5) else "verdict fail"
    parts = [paragraph(f"Ledger audit: {audit.verdict}", css)]
    parts += [paragraph(note, "note") for note in run.notes]
    report = audit.report
    if report is None:
        parts.append(
            paragraph(
                f"The ledger {audit.ledger.name} did not verify, so no privacy figure of this run can be trusted. "
                "The spend the summary states is shown below, unverified.",
                "note",
            )
        )
        if s is not None:
            parts.append(_stated_privacy_table(s))
        return section("Privacy", "privacy", *parts)
    rows = [
        ("ledger", str(audit.ledger)),
        ("entries", f"{report.entries} (chain and signatures verified)"),
        (
            "signing key",
            f"{report.public_key} ({report.key_kind or 'kind not recorded'}; "
            f"{'the trusted key' if report.key_trusted else 'header key only'})",
        ),
        (
            "accountant",
            f"{report.accountant.kind.value}, {report.accountant.relation.name}, unit {report.accountant.unit.value}",
        ),
        ("budget", f"epsilon {report.budget.epsilon:g} at delta {report.budget.delta:g}"),
        ("epsilon spent (recomputed)", fmt(report.epsilon_overall)),
        (
            "ended",
            report.end_reason
            if report.ended
            else "no end entry: torn by a crash mid-line"
            if report.torn_tail
            else "no end entry: the run was cut off",
        ),
    ] + [("warning", w) for w in report.warnings]
    parts.append(table(None, rows, numeric_from=99))
    png = plots.privacy_spent(audit)
    if png is not None:
        parts.append(image(png, "epsilon spent per round against the budget"))
    stated = (s.privacy.get("firms", {}) if s is not None else {}) or {}
    firm_rows = []
    for party, firm in sorted(report.firms.items()):
        name, _, dataset = party.partition("/")
        extra = stated.get(name, {})
        extra = extra.get("datasets", {}).get(dataset, extra) if dataset else extra
        firm_rows.append(
            (
                name,
                dataset or "all",
                firm.releases,
                firm.epsilon,
                extra.get("epsilon_pld"),
                extra.get("observation_epsilon"),
                firm.budget.epsilon,
                fmt(firm.within_budget),
            )
        )
    charged = {party.partition("/")[0] for party in report.firms}
    for name in sorted(set(stated) - charged):  # admitted to no release: its own budget could not pay for one
        own = [b for party, b in audit.firm_budgets.items() if party.partition("/")[0] == name]
        firm_rows.append((name, "all", 0, 0.0, None, None, min(own, default=report.budget.epsilon), "yes"))
    header = (
        "firm",
        "data set",
        "releases",
        "epsilon (recomputed)",
        "epsilon (PLD, summary)",
        "one observation (group)",
        "budget",
        "within",
    )
    if all(row[5] is None for row in firm_rows):  # no firm's spend bounds one observation: a column of n/a says nothing
        header = header[:5] + header[6:]
        firm_rows = [row[:5] + row[6:] for row in firm_rows]
    parts.append("<h3>Privacy per firm</h3>")
    parts.append(table(header, firm_rows))
    return section("Privacy", "privacy", *parts)


def _stated_privacy_table(s: Summary) -> str:
    rows = [
        (firm, row.get("releases"), row.get("epsilon_rdp"), row.get("epsilon_pld"))
        for firm, row in sorted(s.privacy.get("firms", {}).items())
    ]
    return "<h3>Privacy per firm (as stated, not verified)</h3>" + table(
        ("firm", "releases", "epsilon (RDP)", "epsilon (PLD)"), rows
    )


def efficiency(s: Summary | None) -> str:
    if s is None or s.efficiency is None:
        return section("Efficiency", "efficiency", paragraph(f"Cross-firm efficiency: {NOT_COMPUTED}.", "note"))
    eff: Efficiency = s.efficiency
    policy = ", ".join(f"{k} {fmt(v)}" for k, v in eff.policy.items()) or "n/a"
    dp = (
        f"DP on the sums: epsilon {eff.dp.epsilon:g} at delta {eff.dp.delta:g}, "
        f"noise multiplier {fmt(eff.dp.noise_multiplier)}"
        if eff.dp is not None
        else "no DP noise on the efficiency sums"
    )
    intro = paragraph(
        f"Inventory simulation over {eff.horizon} held-out periods, ordering from local-only forecasts (before) and "
        f"from federated forecasts (after). Policy: {policy}. {dp}. E: units served per unit cost; O: fill rate; "
        "I: 1 - WAPE; TFP = E x O x I; K = after / before.",
        "note",
    )
    blocks: dict[str, EfficiencyBlock] = {"chain": eff.chain, **eff.tiers}
    headers = ["scope"] + [f"{v} {when}" for when in ("before", "after") for v in ("E", "O", "I", "TFP")]
    headers += ["K_E", "K_O", "K_I", "K_TFP"]
    rows = [
        [name]
        + [getattr(getattr(b, when), v) for when in ("before", "after") for v in ("E", "O", "I", "TFP")]
        + [b.K.K_E, b.K.K_O, b.K.K_I, b.K.K_TFP]
        for name, b in blocks.items()
    ]
    return section(
        "Efficiency",
        "efficiency",
        intro,
        table(headers, rows),
        image(plots.efficiency_rates(eff), "improvement rates K per tier"),
        image(plots.efficiency_tfp(eff), "TFP before and after per tier"),
        _grouping(eff),
    )


def _grouping(eff: Efficiency) -> str:
    """Why a tier has no row of its own: groups of fewer than the minimum are never published."""
    if not eff.suppressed_tiers:
        return ""
    reasons = "; ".join(f"{tier}: {why}" for tier, why in eff.suppressed_tiers.items())
    return paragraph(
        f"Only groups of at least {eff.min_firms_per_group} firms are published. Not on their own: {reasons}.", "note"
    )


def events(run: RunData) -> str:
    s = run.summary
    parts = []
    png = plots.participation(run.rounds, s.federation.get("firms") if s is not None else None)
    if png is not None:
        parts.append(image(png, "firms in each round's sum"))
    dropouts = s.dropouts if s is not None else []
    if dropouts:
        rows = [(d.stage, d.firm or "(the whole sum)", d.message or "", d.reason) for d in dropouts]
        parts.append(f"<h3>Dropouts ({len(dropouts)})</h3>" + table(("stage", "firm", "message", "reason"), rows))
    else:
        parts.append(paragraph("No dropouts: every firm answered every stage." if s is not None else NOT_COMPUTED))
    refusals = list(run.audit.report.refusals) if run.audit is not None and run.audit.report is not None else []
    if refusals:
        parts.append(
            f"<h3>Refused releases ({len(refusals)})</h3>"
            + table(("release", "source"), [(r, "privacy ledger (verified)") for r in refusals])
        )
    elif run.audit is not None and run.audit.report is not None:
        parts.append(paragraph("No release was refused by the budget guard."))
    if s is not None and s.stopped:
        parts.append(paragraph(f"Training stopped early: {s.stopped}", "verdict fail"))
    return section("Dropouts and refusals", "events", *parts)


def runtime(s: Summary | None) -> str:
    if s is None:
        return ""
    aggregation = s.federation.get("aggregation", {})
    keys = ("mode", "protocol", "resolved_num_neighbours", "resolved_threshold", "share_holders", "value_bits")
    keys += ("modulus_bits", "rounds_per_session", "clipped_values")
    rows = [(k, aggregation[k]) for k in keys if k in aggregation]
    stages = [(name, seconds) for name, seconds in s.stage_seconds.items()]
    return section(
        "Aggregation and timings",
        "runtime",
        table(("aggregation", "value"), rows, numeric_from=99) if rows else "",
        table(("stage", "seconds"), stages) if stages else "",
    )


def render(run: RunData) -> str:
    """The whole page for one run."""
    title = f"SiloBridge run {run.summary.run_id if run.summary is not None else run.path.name}"
    toc = (
        '<nav><a href="#run">Run</a> · <a href="#models">Models</a> · <a href="#acceptance">Acceptance</a> · '
        '<a href="#privacy">Privacy</a> · <a href="#efficiency">Efficiency</a> · '
        '<a href="#events">Dropouts and refusals</a></nav>'
    )
    body = "\n".join(
        [
            f"<h1>{e(title)}</h1>",
            toc,
            overview(run),
            models(run),
            acceptance(run.summary),
            privacy(run),
            efficiency(run.summary),
            events(run),
            runtime(run.summary),
        ]
    )
    return PAGE.substitute(csp=e(CSP), title=e(title), style=STYLE, body=body)
