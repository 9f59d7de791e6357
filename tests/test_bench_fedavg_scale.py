"""benchmarks.bench_fedavg_scale's like-for-like round figures and benchmarks.flower_fedavg's yardstick: the
later rounds of each side, every Flower round checked for failed replies, and a Flower ClientApp that does not
carry the run's settings with every message."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ray import cloudpickle

from benchmarks.bench_fedavg_scale import our_round_seconds, steady_rounds
from benchmarks.flower_fedavg import _settings, build_apps, reply_failure

TINY = Path(__file__).parent / "scenarios" / "tiny.toml"


def test_steady_rounds_are_the_later_half() -> None:
    assert steady_rounds([9.0, 5.0, 2.0, 1.0, 1.5, 1.25]) == [1.0, 1.5, 1.25]
    assert steady_rounds([9.0, 5.0, 2.0, 1.0, 1.5]) == [2.0, 1.0, 1.5]
    assert steady_rounds([4.0]) == [4.0]


def test_our_round_seconds_come_from_the_mlp_records_only(tmp_path: Path) -> None:
    records = [
        {"round": 1, "model": "demand", "seconds": 3.5},
        {"round": 1, "model": "risk", "seconds": 3.5},
        {"round": 1, "model": "demand_linear", "release": "demand stats", "seconds": 40.0},
        {"round": 2, "model": "demand", "seconds": 1.25},
        {"round": 2, "model": "risk", "seconds": 1.25},
        {"round": 3, "model": "demand", "seconds": 1.5},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert our_round_seconds(tmp_path) == [3.5, 1.25, 1.5]


@dataclass
class _Error:
    reason: str


@dataclass
class _Reply:
    error: _Error | None = None
    content: dict[str, object] = field(default_factory=dict)

    def has_error(self) -> bool:
        return self.error is not None


def test_a_flower_round_without_a_good_reply_from_every_node_is_a_failure() -> None:
    assert reply_failure(2, [_Reply(), _Reply(), _Reply()], expected=3) is None
    failed = reply_failure(2, [_Reply(), _Reply(_Error("Traceback ...\nAttributeError: no such name"))], expected=2)
    assert failed == "round 2: 1 of 2 good replies (AttributeError: no such name)"
    assert reply_failure(4, [_Reply()], expected=3) == "round 4: 1 of 3 good replies (missing replies)"


def test_flowers_client_app_does_not_carry_the_settings_with_every_message(tmp_path: Path) -> None:
    # Flower's Ray backend pickles the ClientApp with every message: a settings object in its closure
    # (63 KB at 200 firms) is paid per message and made Flower's column slower than Flower is.
    settings = _settings(TINY, 2, tmp_path)
    assert b"RunSettings" in cloudpickle.dumps(lambda: settings)  # what the check below would find
    _, client_app = build_apps(TINY, 2, tmp_path, [])
    assert b"RunSettings" not in cloudpickle.dumps(lambda: client_app)
