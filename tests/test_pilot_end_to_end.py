"""A pilot as a coordinator runs it on real extracts: generated files reshaped as a retailer exports them
(weeks ending on Fridays, `week_ending`, `unit_price`, volumes x100) plus a lender's cross-sectional risk
file, `silobridge init`, the tiers filled in, `validate` for every firm, `simulate --data`, `report`."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from silobridge.clients.data import write_firm_data
from silobridge.scenarios.generator import generate_chain
from silobridge.scenarios.schema import load_scenario
from tests.test_cli import silobridge, silobridge_in_process
from tests.test_pilot_extracts import TRIO, reshape_as_extract
from tests.test_pilot_init import TIERS, fill_in


@pytest.mark.timeout(900)
def test_a_pilot_from_init_to_report(tmp_path: Path) -> None:
    generated, extracts = tmp_path / "generated", tmp_path / "extracts"
    chain = generate_chain(load_scenario(TRIO))
    for firm, tables in chain.tables.items():
        write_firm_data(generated / firm, tables.demand, tables.risk)
        reshape_as_extract(generated / firm, extracts / firm)
    lender = extracts / "L1"  # risk only, no dates, its own label name, no supply links
    lender.mkdir()
    risk = pd.read_csv(generated / "D1" / "risk.csv").drop(columns=["date", "supplier"])
    risk.rename(columns={"disrupted": "default_flag"}).to_csv(lender / "risk.csv", index=False)
    (extracts / "D1" / "risk.csv").write_text(
        pd.read_csv(extracts / "D1" / "risk.csv").rename(columns={"disrupted": "default_flag"}).to_csv(index=False)
    )
    (extracts / "M1" / "risk.csv").unlink()
    (extracts / "R1" / "risk.csv").unlink()

    federation = tmp_path / "federation.toml"
    result = silobridge_in_process("init", str(extracts), "--out", str(federation), cwd=tmp_path)
    assert result.returncode == 2 and "cannot tell which 0/1 column is the label" in result.stderr
    assert not federation.exists()
    result = silobridge_in_process(
        "init", str(extracts), "--out", str(federation), "--label-column", "default_flag", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    text = fill_in(federation.read_text(), {**TIERS, "L1": "supplier"})
    federation.write_text(text.replace("[data]", "[training]\nhidden = 8\nmin_firms = 2\n\n[data]", 1))
    for firm in ("R1", "D1", "M1", "L1"):
        result = silobridge_in_process("validate", str(extracts / firm), "--config", str(federation), cwd=tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr

    result = silobridge(
        "simulate", str(federation), "--data", str(extracts), "--rounds", "2", "--run-id", "pilot",
        "--out", str(tmp_path / "runs"), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DEPRECATED" not in result.stderr and "loss n/a" not in result.stderr
    assert "Traceback" not in result.stderr
    run = tmp_path / "runs" / "pilot"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["data"]["risk_split"] == {"D1": "date", "L1": "holdout"}
    assert "Risk train/test split of L1: no date or 'split' column: a seeded holdout of 20%" in " ".join(
        result.stdout.split()
    )
    # a pilot measures accuracy: what each firm deploys (under DP `auto` trains the linear family)
    assert isinstance(summary["models"]["demand"]["deployed"]["all"]["wape"], float)
    assert isinstance(summary["models"]["risk"]["local_only"]["all"]["roc_auc"], float)
    # two firms hold risk data, fewer than a secure sum's 3: no global risk model is released, and the run says so
    assert "fewer than the 3 a secure sum needs: no global linear risk model" in " ".join(result.stderr.split())
    # each of them still deploys a risk model of its own, and its row says why
    risk_rows = summary["models"]["risk"]["per_firm"]["firms"]
    assert {row["firm"] for row in risk_rows} == {"D1", "L1"}
    assert all(row["reason"].startswith("no global linear risk model") for row in risk_rows)
    assert isinstance(summary["models"]["risk"]["deployed"]["all"]["roc_auc"], float)

    result = silobridge_in_process("report", str(run), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (run / "report.html").stat().st_size > 10_000
