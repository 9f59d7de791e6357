"""`silobridge report`: the page for a private and a non-private run, its sections and values, the
efficiency section present and absent, a tampered ledger shown as failed, and the page in headless Chromium;
the private run's refused round itself (its ledger, metrics and kept model).

Two real simulations of the tiny scenario, shared with test_efficiency_run and test_simulation
(tests/conftest.py); every other case edits a copy of one of them.
"""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from silobridge.errors import ConfigError
from silobridge.federation.cli import EXIT_TAMPERED, app
from silobridge.federation.report import REPORT_FILE, load_run, render, write_report
from silobridge.federation.report.page import NOT_COMPUTED, fmt
from silobridge.federation.server_app import RunResult
from silobridge.privacy.ledger import canonical_bytes, verify_ledger
from tests.browser import page_problems

EFFICIENCY = {
    "horizon": 13,
    "policy": {"review_period": 1, "service_level": 0.95, "holding_cost": 0.2, "lead_time": 2},
    "dp": {"epsilon": 1.5, "delta": 1e-6, "noise_multiplier": 2.25},
    "chain": {
        "before": {"E": 10.0, "O": 0.8, "I": 0.9, "TFP": 7.2},
        "after": {"E": 11.0, "O": 0.96, "I": 1.17, "TFP": 12.3552},
        "K": {"K_E": 1.1, "K_O": 1.2, "K_I": 1.3, "K_TFP": 1.716},
    },
    "tiers": {
        "retailer": {
            "before": {"E": 8.5, "O": 0.75, "I": 0.7, "TFP": 4.4625},
            "after": {"E": 9.1, "O": 0.83, "I": 0.78, "TFP": 5.891346},
            "K": {"K_E": 1.070588, "K_O": 1.106667, "K_I": 1.114286, "K_TFP": 1.320189},
        },
        "supplier": {
            "before": {"E": 4.25, "O": 0.6, "I": 0.5, "TFP": 1.275},
            "after": {"E": 4.0, "O": 0.62, "I": 0.55, "TFP": 1.364},
            "K": {"K_E": 0.941176, "K_O": 1.033333, "K_I": 1.1, "K_TFP": 1.069804},
        },
    },
}


@pytest.fixture(scope="module")
def runs(tiny_refused_run: RunResult, tiny_open_run: RunResult) -> dict[str, RunResult]:
    """conftest's REFUSED_RUN (round 3 refused, S1 out after round 1) and OPEN_RUN (no DP, 2 rounds)."""
    return {"dp": tiny_refused_run, "plain": tiny_open_run}


def test_a_refused_round_ends_training_cleanly(tiny_refused_run: RunResult) -> None:
    """conftest's REFUSED_RUN's own checks (a test_private_runs case: here, with the report's private page that
    reads the run, so that the shared runs' files are one unit of work without test_private_runs' four runs)."""
    run = tiny_refused_run
    assert run.summary["stopped"] and "refused" in run.summary["stopped"]
    report = verify_ledger(run.path / "privacy_ledger.jsonl")
    assert report.refusals and report.within_budget and report.epsilon_overall <= 4.5
    assert report.end_reason.startswith("stopped early")
    trained = {json.loads(line)["round"] for line in (run.path / "metrics.jsonl").read_text().splitlines()}
    assert len(trained) == 2  # rounds 1 and 2 spend 4.22; round 3 would reach 4.85
    assert (run.path / "models" / "demand.pt").exists()  # the model trained so far is kept
    assert run.summary["models"]["demand"]["federated"]["all"]["wape"] is not None


def _copy(run: RunResult, tmp_path: Path) -> Path:
    target = tmp_path / run.path.name
    shutil.copytree(run.path, target)
    (target / REPORT_FILE).unlink(missing_ok=True)
    return target


def _text(page: str) -> str:
    """The page's visible text, tags removed and entities decoded, whitespace collapsed."""
    body = re.sub(r"<style>.*?</style>|<[^>]+>", " ", page, flags=re.DOTALL)
    return " ".join(html.unescape(body).split())


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r'<img src="data:image/png;base64,([^"]+)"', page)]


def _section(page: str, anchor: str) -> str:
    found = re.search(rf'<section id="{anchor}">(.*?)</section>', page, re.DOTALL)
    assert found is not None, f"no section {anchor}"
    return _text(found.group(1))


def test_private_run_report(runs: dict[str, RunResult], tmp_path: Path) -> None:
    run = runs["dp"]
    path, data = write_report(_copy(run, tmp_path), public_key=run.summary["privacy"]["ledger_public_key"])
    assert path == tmp_path / "dp" / REPORT_FILE
    page = path.read_text(encoding="utf-8")
    text = _text(page)
    for heading in ("Run", "Models", "Acceptance checks", "Privacy", "Efficiency", "Dropouts and refusals"):
        assert f"<h2>{heading}</h2>" in page
    summary = run.summary
    for kind, metric in (("demand", "wape"), ("risk", "roc_auc")):
        for method in ("federated", "local_only", "centralised"):
            assert fmt(summary["models"][kind][method]["small"][metric]) in _section(page, "models")
    assert fmt(summary["models"]["demand"]["naive"]["all"]["wape"]) in text
    for check in summary["acceptance"]:
        assert check["name"] in _section(page, "acceptance")

    # The privacy figures are the auditor's, recomputed from the ledger, not the summary's.
    report = verify_ledger(run.path / "privacy_ledger.jsonl", public_key=summary["privacy"]["ledger_public_key"])
    privacy = _section(page, "privacy")
    assert data.audit is not None and data.audit.verified and report.refusals == ("round-3/demand",)
    assert (
        f"verified: chain and signatures intact under the trusted key, epsilon {report.epsilon_overall:.4f} of 4.5"
        in (privacy)
    )
    assert "per-run; the trusted key" in privacy
    for party, firm in report.firms.items():
        name, _, dataset = party.partition("/")
        assert f"{name} {dataset} {firm.releases} {fmt(firm.epsilon)}" in privacy
    assert {p: f.releases for p, f in report.firms.items() if p.startswith("S1/")} == {"S1/demand": 1, "S1/risk": 1}
    steps = data.audit.steps
    assert [s.label for s in steps] == ["round-1", "round-2"]
    assert steps[-1].epsilon_overall == pytest.approx(report.epsilon_overall)
    assert steps[1].epsilon_min < steps[1].epsilon_max  # S1 stopped after round 1

    events = _section(page, "events")
    assert "Refused releases (1)" in events and "round-3/demand" in events
    assert "Training stopped early: round 3 refused" in events
    assert events.count("its own privacy budget is spent") == 1  # S1 in round 2
    # The run's own efficiency (measured by the harness under DP) as the summary states it.
    chain = summary["efficiency"]["chain"]
    efficiency = _section(page, "efficiency")
    assert NOT_COMPUTED not in efficiency
    assert f"chain {fmt(chain['before']['E'])}" in efficiency and fmt(chain["K"]["K_TFP"]) in efficiency
    # demand and risk curves, privacy spent, participation, K per tier, TFP; no training loss under DP
    assert len(_images(page)) == 6 and all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in _images(page))


def test_non_private_run_report(runs: dict[str, RunResult], tmp_path: Path) -> None:
    run = runs["plain"]
    result = CliRunner().invoke(app, ["report", str(run.path), "--out", str(tmp_path / "plain.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "plain.html").read_text(encoding="utf-8")
    assert not (run.path / REPORT_FILE).exists()  # --out was honoured
    text = _text(page)
    assert fmt(run.summary["models"]["demand"]["federated"]["all"]["wape"]) in _section(page, "models")
    assert "Differential privacy was off in this run: there is no privacy ledger." in _section(page, "privacy")
    assert "No dropouts: every firm answered every stage." in _section(page, "events")
    assert "off (the non-private comparison)" in text
    # Tiny has 2 large firms: without DP only 'all' is released, the small and large columns read n/a.
    models = _section(page, "models")
    assert set(run.summary["models"]["demand"]["federated"]) == {"all"}
    wape = fmt(run.summary["models"]["demand"]["federated"]["all"]["wape"])
    assert f"federated {wape} n/a n/a" in models
    assert "Small and large firms not shown on their own: groups of fewer than 3 firms" in models
    assert len(_images(page)) == 6  # demand and risk curves, training loss, participation, K per tier, TFP


def test_efficiency_section_when_present(runs: dict[str, RunResult], tmp_path: Path) -> None:
    run_dir = _copy(runs["plain"], tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    measured = render(load_run(run_dir))  # the tiny run publishes the chain only: no tier has 3 firms
    shown = _section(measured, "efficiency")
    assert NOT_COMPUTED not in shown
    assert "Only groups of at least 3 firms are published. Not on their own:" in shown
    assert "retailer: 2 firm(s), fewer than the minimum 3; counted in the chain only" in shown
    summary.pop("efficiency")
    (run_dir / "summary.json").write_text(json.dumps(summary))
    without = render(load_run(run_dir))
    assert len(_images(measured)) == len(_images(without)) + 2
    assert f"Cross-firm efficiency: {NOT_COMPUTED}." in _section(without, "efficiency")
    summary["efficiency"] = EFFICIENCY
    (run_dir / "summary.json").write_text(json.dumps(summary))
    page = render(load_run(run_dir))
    efficiency = _section(page, "efficiency")
    assert NOT_COMPUTED not in efficiency
    assert "chain 10.0000 0.8000 0.9000 7.2000 11.0000 0.9600 1.1700 12.3552 1.1000 1.2000 1.3000 1.7160" in efficiency
    assert "supplier 4.2500" in efficiency and "0.9412" in efficiency and "retailer" in efficiency
    assert "over 13 held-out periods" in efficiency and "epsilon 1.5 at delta 1e-06" in efficiency
    assert len(_images(page)) == len(_images(without)) + 2  # K per tier, TFP before and after


def test_malformed_efficiency_names_the_field(runs: dict[str, RunResult], tmp_path: Path) -> None:
    run_dir = _copy(runs["plain"], tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["efficiency"] = {**EFFICIENCY, "chain": {**EFFICIENCY["chain"], "K": {"K_E": 1.1}}}
    (run_dir / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(ConfigError, match=r"summary\.json, field 'efficiency\.chain\.K\.K_O'"):
        load_run(run_dir)


def test_tampered_ledger_shows_a_failed_audit(runs: dict[str, RunResult], tmp_path: Path) -> None:
    run_dir = _copy(runs["dp"], tmp_path)
    ledger = run_dir / "privacy_ledger.jsonl"
    lines = ledger.read_bytes().split(b"\n")
    entry = json.loads(lines[2])
    assert entry["kind"] == "release"
    entry["event"]["event"]["event"]["noise_multiplier"] = 5.0  # claim more noise than was added
    lines[2] = canonical_bytes(entry)
    ledger.write_bytes(b"\n".join(lines))
    result = CliRunner().invoke(app, ["report", str(run_dir)])
    assert result.exit_code == EXIT_TAMPERED, result.output
    privacy = _section((run_dir / REPORT_FILE).read_text(encoding="utf-8"), "privacy")
    assert "Ledger audit: FAILED: entry 2: the Ed25519 signature does not match the entry" in privacy
    assert "Privacy per firm (as stated, not verified)" in privacy
    assert "chain and signatures intact" not in privacy


def test_every_value_is_escaped(runs: dict[str, RunResult], tmp_path: Path) -> None:
    run_dir = _copy(runs["plain"], tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    hostile = '<img src=x onerror="alert(1)">'
    summary["dropouts"] = [{"stage": "round 1", "firm": hostile, "reason": "</table><script>alert(2)</script>"}]
    summary["scenario"]["name"] = hostile
    (run_dir / "summary.json").write_text(json.dumps(summary))
    page = render(load_run(run_dir))
    assert "<script" not in page and "onerror=" not in page.replace("onerror=&quot;", "")
    assert html.escape(hostile) in page
    assert hostile in _section(page, "events") and "</table><script>alert(2)</script>" in _section(page, "events")


def test_out_may_name_a_folder(runs: dict[str, RunResult], tmp_path: Path) -> None:
    path, _ = write_report(runs["plain"].path, tmp_path)
    assert path == tmp_path / REPORT_FILE and path.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_missing_run_directory_is_a_config_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "nope: not a run directory" in " ".join(result.output.split())


def test_failed_private_run_still_reports_its_ledger(runs: dict[str, RunResult], tmp_path: Path) -> None:
    run_dir = _copy(runs["dp"], tmp_path)
    (run_dir / "summary.json").unlink()  # what a private run that failed part-way keeps: its ledger
    (run_dir / "failure.json").write_text(json.dumps({"error": "FederationError: round 3: only 1 of 5 firms"}))
    page = render(load_run(run_dir))
    assert "This run failed: FederationError: round 3: only 1 of 5 firms" in _section(page, "run")
    privacy = _section(page, "privacy")
    # No trusted key given: intact, and said to be checked against the per-run key in its own folder only.
    assert "Ledger audit: intact but signed by a per-run key found only in the run directory" in privacy
    assert "no trusted key given (--config or --public-key)" in privacy
    assert "header key only" in privacy
    assert len(_images(page)) == 4  # curves from metrics.jsonl (no baselines), privacy, participation


def test_report_in_headless_chromium(runs: dict[str, RunResult], tmp_path: Path) -> None:
    path, _ = write_report(_copy(runs["dp"], tmp_path))
    assert page_problems(path) == []
    page = path.read_text(encoding="utf-8")
    assert 'http-equiv="Content-Security-Policy"' in page and "img-src data:" in page  # the page's own policy

    # The check can fail: a corrupt image, an external image and stylesheet, a hidden image.
    start = page.index("base64,") + len("base64,")
    corrupt = tmp_path / "corrupt.html"
    corrupt.write_text(page[:start] + "AAAA" + page[start + 4 :], encoding="utf-8")
    assert page_problems(corrupt) == [
        "image 0 ('data:image/png;base64,AAAARw0KGgoAAAANSU') did not decode (naturalWidth 0)"
    ]
    external = tmp_path / "external.html"
    external.write_text(
        page.replace(
            "</body>",
            '<img src="https://example.org/plot.png" alt="x"><link rel="stylesheet" href="https://example.org/s.css">'
            "</body>",
        ),
        encoding="utf-8",
    )
    problems = page_problems(external)
    appended = len(_images(page))  # the new image comes after the report's own
    assert f"image {appended} ('https://example.org/plot.png') is not an embedded PNG data URI" in problems
    assert "tried to load 'https://example.org/s.css' (style-src-elem)" in problems
    hidden = tmp_path / "hidden.html"
    hidden.write_text(page.replace("<img ", '<img style="display:none" ', 1), encoding="utf-8")
    assert any(p.startswith("image 0") and "is not drawn" in p for p in page_problems(hidden))
