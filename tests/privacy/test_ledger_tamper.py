"""Any change to a ledger is caught at the entry where it was made.

The sample ledger holds every kind of entry (header, releases with and without excluded firms, a
refusal, the end); every field of every entry is altered in turn, as is the whole line structure.
"""

from __future__ import annotations

import copy
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from silobridge.errors import LedgerTampered
from silobridge.privacy.ledger import public_key_hex, verify_ledger
from tests.privacy.ledger_support import KEY, OTHER_KEY, read_entries, reseal, write_entries, write_sample_ledger

Path_ = tuple[str | int, ...]


def _sample_entries() -> list[dict[str, Any]]:
    with tempfile.TemporaryDirectory() as directory:
        return read_entries(write_sample_ledger(Path(directory) / "sample.jsonl"))


SAMPLE = _sample_entries()


def _leaves(value: Any, path: Path_ = ()) -> Iterator[Path_]:
    if isinstance(value, dict):
        for key, child in value.items():
            yield from _leaves(child, (*path, key))
    elif isinstance(value, list) and value:
        for i, child in enumerate(value):
            yield from _leaves(child, (*path, i))
    else:
        yield path


def _altered(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5 + 0.1
    if isinstance(value, str):
        if re.fullmatch(r"[0-9a-f]{64}|[0-9a-f]{128}", value):  # keep hashes, keys and signatures well-formed
            return ("1" if value[0] == "0" else "0") + value[1:]
        return value + "x"
    if value is None:
        return 1.0
    if value == []:
        return ["intruder"]
    raise TypeError(f"no alteration for {value!r}")


def _set(entry: dict[str, Any], path: Path_, value: Any) -> None:
    target: Any = entry
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value


def _get(entry: dict[str, Any], path: Path_) -> Any:
    for key in path:
        entry = entry[key]
    return entry


FIELD_CASES = [
    pytest.param(index, path, id=f"{index}-{SAMPLE[index]['kind']}-{'.'.join(map(str, path))}")
    for index, entry in enumerate(SAMPLE)
    for path in _leaves(entry)
]
KEY_CASES = [
    pytest.param(index, key, id=f"{index}-{SAMPLE[index]['kind']}-{key}")
    for index, entry in enumerate(SAMPLE)
    for key in entry
]


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.jsonl"
    write_entries(path, SAMPLE)
    return path


def assert_tampered_at(path: Path, index: int, **kwargs: Any) -> LedgerTampered:
    with pytest.raises(LedgerTampered) as info:
        verify_ledger(path, **kwargs)
    assert info.value.entry == index, str(info.value)
    return info.value


def test_sample_covers_every_entry_kind_and_verifies(ledger: Path) -> None:
    assert [entry["kind"] for entry in SAMPLE] == ["header", *["release"] * 4, "refusal", "end"]
    assert any(entry.get("excluded_firms") for entry in SAMPLE)
    report = verify_ledger(ledger, public_key=public_key_hex(KEY))
    assert report.ended and report.key_trusted and report.warnings == ()


@pytest.mark.parametrize("index,path", FIELD_CASES)
def test_altering_any_field_is_detected(ledger: Path, index: int, path: Path_) -> None:
    entries = copy.deepcopy(SAMPLE)
    _set(entries[index], path, _altered(_get(entries[index], path)))
    write_entries(ledger, entries)
    assert_tampered_at(ledger, index)


@pytest.mark.parametrize("index,key", KEY_CASES)
def test_removing_any_field_is_detected(ledger: Path, index: int, key: str) -> None:
    entries = copy.deepcopy(SAMPLE)
    del entries[index][key]
    write_entries(ledger, entries)
    assert_tampered_at(ledger, index)


@pytest.mark.parametrize("index", range(len(SAMPLE)))
def test_adding_a_field_is_detected(ledger: Path, index: int) -> None:
    entries = copy.deepcopy(SAMPLE)
    entries[index]["note"] = "harmless?"
    write_entries(ledger, entries)
    assert_tampered_at(ledger, index)


@pytest.mark.parametrize("index", range(1, len(SAMPLE) - 1))
def test_deleting_an_entry_is_detected(ledger: Path, index: int) -> None:
    write_entries(ledger, SAMPLE[:index] + SAMPLE[index + 1 :])
    assert_tampered_at(ledger, index)


def test_deleting_the_end_entry_reads_as_an_unfinished_run(ledger: Path) -> None:
    write_entries(ledger, SAMPLE[:-1])
    report = verify_ledger(ledger)
    assert not report.ended and any("no end-of-run entry" in w for w in report.warnings)


@pytest.mark.parametrize("index", range(len(SAMPLE) - 1))
def test_swapping_neighbours_is_detected(ledger: Path, index: int) -> None:
    entries = list(SAMPLE)
    entries[index], entries[index + 1] = entries[index + 1], entries[index]
    write_entries(ledger, entries)
    assert_tampered_at(ledger, index)


@pytest.mark.parametrize("index", range(1, len(SAMPLE)))
def test_inserting_a_copy_is_detected(ledger: Path, index: int) -> None:
    write_entries(ledger, SAMPLE[:index] + [SAMPLE[index - 1]] + SAMPLE[index:])
    assert_tampered_at(ledger, index)


@pytest.mark.parametrize("index", range(1, len(SAMPLE)))
def test_an_entry_re_signed_with_another_key_is_detected(ledger: Path, index: int) -> None:
    forged = reseal(SAMPLE, OTHER_KEY)
    entries = SAMPLE[:index] + [forged[index]] + SAMPLE[index + 1 :]
    # The forger also fixes the chain after the entry, so only the signature gives it away.
    entries = entries[: index + 1] + reseal(entries, KEY)[index + 1 :]
    write_entries(ledger, entries)
    assert_tampered_at(ledger, index)


def test_whole_ledger_re_signed_with_another_key_fails_against_the_trusted_key(ledger: Path) -> None:
    write_entries(ledger, reseal(SAMPLE, OTHER_KEY))
    verify_ledger(ledger)  # self-consistent on its own key ...
    error = assert_tampered_at(ledger, 0, public_key=public_key_hex(KEY))  # ... but not the run's key
    assert "trusted key" in str(error)


def test_an_entry_appended_after_the_end_is_detected(ledger: Path) -> None:
    extra = {**SAMPLE[-2], "index": len(SAMPLE)}
    write_entries(ledger, reseal([*SAMPLE, extra], KEY))
    assert_tampered_at(ledger, len(SAMPLE))


def test_stored_totals_that_disagree_with_the_events_are_detected_even_if_signed(ledger: Path) -> None:
    entries = copy.deepcopy(SAMPLE)
    entries[3]["epsilon"]["overall"] *= 0.9  # understated, then properly re-signed by the key holder
    write_entries(ledger, reseal(entries, KEY))
    error = assert_tampered_at(ledger, 3)
    assert "recorded events give" in str(error)


def test_an_event_swapped_for_a_cheaper_one_is_detected_even_if_signed(ledger: Path) -> None:
    entries = copy.deepcopy(SAMPLE)
    entries[2]["event"]["event"]["noise_multiplier"] = 30.0
    write_entries(ledger, reseal(entries, KEY))
    assert_tampered_at(ledger, 2)


def test_a_rewritten_but_equivalent_line_is_detected(ledger: Path) -> None:
    lines = ledger.read_bytes().splitlines()
    lines[2] = lines[2].replace(b'"kind":"release"', b'"kind": "release"')
    ledger.write_bytes(b"\n".join(lines) + b"\n")
    assert_tampered_at(ledger, 2)


def test_duplicate_keys_are_refused(ledger: Path) -> None:
    lines = ledger.read_bytes().splitlines()
    lines[1] = lines[1][:-1] + b',"kind":"release"}'
    ledger.write_bytes(b"\n".join(lines) + b"\n")
    assert_tampered_at(ledger, 1)


def test_a_damaged_line_in_the_middle_is_detected(ledger: Path) -> None:
    lines = ledger.read_bytes().splitlines()
    lines[3] = lines[3][: len(lines[3]) // 2]
    ledger.write_bytes(b"\n".join(lines) + b"\n")
    assert_tampered_at(ledger, 3)


def test_an_empty_ledger_has_no_header(tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    assert_tampered_at(path, 0)
