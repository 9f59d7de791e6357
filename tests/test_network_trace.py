"""The network trace: off by default, and its breakdown joins one message's steps across processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from silobridge.federation.network import trace
from silobridge.federation.network.trace import TRACE_ENV, breakdown, load, mark


def test_marks_go_nowhere_unless_the_trace_is_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TRACE_ENV, raising=False)
    mark("server.push_start")
    assert list(tmp_path.iterdir()) == []
    path = tmp_path / "trace.jsonl"
    monkeypatch.setenv(TRACE_ENV, str(path))
    mark("exec.acquired", task_id=7)
    (row,) = load(path)
    assert row["event"] == "exec.acquired" and row["task_id"] == 7 and row["t"] > 0


def _trip(message_id: str, task_id: int, node_pid: int, start: float, steps_ms: list[float]) -> list[dict]:
    """One message's rows, each step `steps_ms[i]` after the one before (in STEPS order, node objects aside)."""
    events = [
        ("server.push_start", {}),
        ("server.pushed", {"message_ids": [message_id]}),
        ("node.task_created", {"task_id": task_id, "pid": node_pid}),
        ("exec.acquired", {"task_id": task_id}),
        ("task.start", {"task_id": task_id}),
        ("task.input", {"task_id": task_id, "message_id": message_id}),
        ("task.fab", {"task_id": task_id}),
        ("task.enter", {"task_id": task_id}),
        ("task.leave", {"task_id": task_id}),
        ("task.pushed", {"task_id": task_id}),
        ("node.reply_sent", {"pid": node_pid}),
        ("server.pulled", {"reply_to": message_id}),
    ]
    rows, t = [], start
    for (event, fields), step in zip(events, [0.0, *steps_ms], strict=True):
        t += step / 1000
        rows.append({"event": event, "t": t, "pid": fields.pop("pid", 1), **fields})
    created = rows[2]["t"]
    rows.append({"event": "node.pulled", "t": created + 0.004, "pid": node_pid})
    return rows


def test_the_breakdown_joins_each_message_by_its_ids(tmp_path: Path) -> None:
    steps = [2.0, 40.0, 30.0, 5.0, 20.0, 3.0, 1.0, 100.0, 6.0, 15.0, 8.0]
    rows = _trip("m1", 1, 100, 10.0, steps) + _trip("m2", 2, 200, 10.5, [s * 3 for s in steps])
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in reversed(rows)))  # order in the file does not matter
    table = breakdown(load(path))
    names = [name for name, _, _ in trace.STEPS if name != "node_objects"]
    for name, ms in zip(names, steps, strict=True):
        assert table[name]["median_ms"] == pytest.approx(2 * ms, abs=0.2), name
        assert table[name]["max_ms"] == pytest.approx(3 * ms, abs=0.2), name
        assert table[name]["n"] == 2
    assert table["node_objects"]["median_ms"] == pytest.approx(4.0, abs=0.2)
    assert table["round_trip"]["max_ms"] == pytest.approx(3 * sum(steps), abs=0.5)
    # hand-offs: the executor took the task -> handler (fork, input, fab, load_app: 29 ms, 87 ms); the node had the
    # message's objects (4 ms after it created the task) -> handler (30 + 29 - 4 = 55 ms; 3 * 59 - 4 = 173 ms)
    assert table["handoff"]["median_ms"] == pytest.approx((29 + 87) / 2, abs=0.2)
    assert table["handoff_available"]["median_ms"] == pytest.approx((55 + 173) / 2, abs=0.2)
    assert table["handoff_available"]["max_ms"] == pytest.approx(173, abs=0.2)


def test_a_message_without_a_reply_counts_only_the_steps_it_reached() -> None:
    rows = _trip("m1", 1, 100, 0.0, [1.0] * 11)
    cut = [r for r in rows if r["event"] not in ("node.reply_sent", "server.pulled")]
    table = breakdown(cut)
    assert "to_link" not in table and "round_trip" not in table
    assert table["handler"]["n"] == 1
