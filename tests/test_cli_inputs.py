"""Bad command-line input and bugs: one formatted line each, a non-zero exit, no traceback and no locals dump."""

from __future__ import annotations

import logging
import sys
import tomllib
from pathlib import Path

import pytest
import tomli_w
from typer.testing import CliRunner

from silobridge.federation import cli
from silobridge.federation.cli import app
from tests.conftest import ROOT
from tests.test_pilot_extracts import extract_federation, generated, reshape_as_extract

__all__ = ["generated"]  # the module-scoped fixture of generated trio files, shared

TRIO = ROOT / "tests" / "scenarios" / "trio.toml"


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, " ".join(result.output.split())


def _scenario(tmp_path: Path, change) -> Path:
    raw = tomllib.loads(TRIO.read_text())
    change(raw)
    path = tmp_path / "scenario.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--epsilon", "0"), "field '--epsilon': Input should be greater than 0 (got 0.0)"),
        (("--epsilon", "1", "--sample-rate", "2"), "field '--sample-rate': Input should be less than or equal to 1"),
        (("--epsilon", "nan"), "field '--epsilon': Input should be a finite number"),
    ],
)
def test_calibrate_formats_bad_values_like_every_other_error(args: tuple[str, ...], expected: str) -> None:
    code, output = invoke("calibrate", *args)
    assert code == 2
    assert output.startswith("configuration error: command line,") and expected in output
    assert "pydantic" not in output and "validation error" not in output


def test_out_naming_an_existing_file(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("mine")
    code, output = invoke("generate", str(TRIO), "--out", str(taken))
    assert code == 2 and f"field '--out': {taken} is a file" in output
    code, output = invoke("simulate", str(TRIO), "--no-dp", "--out", str(taken))
    assert code == 2 and f"{taken} is a file; name a folder" in output
    assert taken.read_text() == "mine"


def test_a_huge_history_is_refused_before_anything_is_allocated(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, lambda raw: raw["firms"][0].update(history=1_000_000_000))
    code, output = invoke("generate", str(scenario), "--out", str(tmp_path / "data"))
    assert code == 2
    assert "field 'firms[R1].history': Input should be less than or equal to 5200" in output
    assert not (tmp_path / "data").exists()


def test_a_nan_epsilon_is_not_a_number(tmp_path: Path) -> None:
    scenario = _scenario(tmp_path, lambda raw: raw.update(privacy={"epsilon": float("nan")}))
    code, output = invoke("simulate", str(scenario), "--out", str(tmp_path / "runs"))
    assert code == 2 and "field 'privacy.epsilon': Input should be a finite number" in output
    assert "less than or equal to 1000" not in output


def test_an_unexpected_error_is_one_line_and_a_traceback_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug prints the command and the error class; the traceback (no locals: a firm's rows) goes to a file."""

    import silobridge.federation.firm_source as firm_source

    def broken(*args: object, **kwargs: object) -> None:
        secret_rows = ["row of a firm's private data"]  # a locals dump would print this
        raise RuntimeError(f"failed after {len(secret_rows)} rows")

    monkeypatch.setattr(firm_source, "validate_firm_folder", broken)
    monkeypatch.setattr(sys, "argv", ["silobridge", "validate", str(tmp_path), "--config", str(TRIO)])
    monkeypatch.setattr(cli.err_console, "width", 400)
    with pytest.raises(SystemExit) as info:
        cli.main()
    assert info.value.code == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "`silobridge validate` stopped on an unexpected RuntimeError; this is a bug" in err
    path = Path(err.strip().rsplit(" ", 1)[-1])
    try:
        report = path.read_text()
        assert "Traceback" in report and "RuntimeError: failed after 1 rows" in report and "def broken" not in report
        assert "private data" not in report and "private data" not in err
        assert path.stat().st_mode & 0o077 == 0  # a private temp file
    finally:
        path.unlink()


def test_typer_never_shows_locals() -> None:
    assert app.pretty_exceptions_show_locals is False


def test_only_the_run_simulation_deprecation_is_silenced() -> None:
    from silobridge.federation.launch import RUN_SIMULATION_DEPRECATION

    def record(message: str, *args: object) -> logging.LogRecord:
        return logging.LogRecord("flwr", logging.WARNING, __file__, 1, message, args, None)

    ours = record("DEPRECATED FEATURE: %s", "The `run_simulation` function is deprecated and will be removed")
    other = record("DEPRECATED FEATURE: %s", "Passing `enable_tf_gpu_growth=True` is deprecated.")
    assert not RUN_SIMULATION_DEPRECATION.filter(ours)
    assert RUN_SIMULATION_DEPRECATION.filter(other)
    assert RUN_SIMULATION_DEPRECATION.filter(record("something else"))


def test_progress_says_nothing_of_a_loss_dp_does_not_release(caplog: pytest.LogCaptureFixture) -> None:
    from silobridge.federation.progress import LogObserver, privacy_table

    record = {"round": 2, "model": "risk", "train_loss": None, "evaluated_round": 2, "metrics": None}
    with caplog.at_level(logging.INFO, logger="silobridge"):
        LogObserver().round_done({**record, "epsilon": 1.5})
        LogObserver().round_done({**record, "train_loss": 0.25})
    assert "round 2 risk: model of round 2" in caplog.messages[0] and "loss" not in caplog.messages[0]
    assert "round 2 risk: loss 0.250, model of round 2" in caplog.messages[1]

    privacy = {
        "enabled": True,
        "unit": "record",
        "mechanism": "dpsgd",
        "epsilon_overall": 8.0,
        "budget": {"epsilon": 8.0, "delta": 1e-5},
        "firms": {"R1": {"releases": 2, "epsilon_rdp": 8.0, "epsilon_pld": 7.0, "observation_epsilon": None}},
    }
    table = privacy_table({"privacy": privacy})
    assert table is not None and [c.header for c in table.columns][-1] == "epsilon (PLD)"
    privacy["firms"]["D1"] = {"releases": 2, "epsilon_rdp": 1.0, "epsilon_pld": 0.9, "observation_epsilon": 4.0}
    table = privacy_table({"privacy": privacy})
    assert table is not None and [c.header for c in table.columns][-1] == "one observation"
    assert list(table.columns[-1].cells) == ["no bound", "4.000"]


def test_simulate_refuses_a_pilot_file_validate_refuses(generated: Path, tmp_path: Path) -> None:
    """One validation path: a header-only demand.csv stops `simulate --data` before anything runs."""
    extracts = tmp_path / "extracts"
    for firm in ("R1", "D1", "M1"):
        reshape_as_extract(generated / firm, extracts / firm)
    demand = extracts / "D1" / "demand.csv"
    demand.write_text(demand.read_text().splitlines()[0] + "\n")
    federation = extract_federation(tmp_path / "federation.toml")
    code, output = invoke(
        "simulate", str(federation), "--no-dp", "--data", str(extracts), "--out", str(tmp_path / "runs")
    )
    assert code == 2 and "firm 'D1'" in output and "D1/demand.csv: the file has a header but no rows" in output
    assert not (tmp_path / "runs").exists()
