"""A record's arrays packed into one Flower object: the byte format, its refusals, and what it saves a message."""

from __future__ import annotations

import io
import warnings
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Metadata, RecordDict
from flwr.app.message import make_message
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from silobridge.errors import ProtocolError
from silobridge.federation.array_pack import PACKED_STYPE, PackError, pack_arrays, unpack_arrays
from silobridge.federation.records import PACK_ENV, PACKED, arrays_record, record_arrays


def test_numpy_reads_what_we_pack() -> None:
    """The bytes are NumPy's own .npz format: `np.load` (the reference reader) gives back names, order and values."""
    arrays = {"a": np.array([1, 2], dtype="<i4"), "b": np.array([[0.5]], dtype="<f8")}
    with np.load(io.BytesIO(pack_arrays(arrays)), allow_pickle=False) as loaded:
        assert loaded.files == ["a", "b"]
        for name, value in arrays.items():
            assert loaded[name].dtype == value.dtype
            np.testing.assert_array_equal(loaded[name], value)


def test_round_trip_keeps_names_order_dtypes_and_values() -> None:
    rng = np.random.default_rng(3)
    arrays = {
        "w.2": rng.normal(size=(3, 4)).astype(np.float32),
        "b.2": rng.normal(size=3).astype(np.float32),
        "count": np.array(7, dtype=np.int64),  # a 0-d array
        "empty": np.zeros((0, 5)),
        "mask": np.array([True, False]),
        "fortran": np.asfortranarray(rng.normal(size=(2, 3))),
    }
    back = unpack_arrays(pack_arrays(arrays))
    assert list(back) == list(arrays)
    for name, value in arrays.items():
        assert back[name].dtype == value.dtype and back[name].shape == value.shape
        np.testing.assert_array_equal(back[name], value)
    back["w.2"][0, 0] = 1.0  # writable, as the unpacked Arrays were


def _zip(members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate name one case writes
        for name, data in members:
            archive.writestr(name, data)
    return buffer.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("blob", "reason"),
    [
        (b"\0\0\0", "not packed arrays \\(3 bytes\\)"),
        (pack_arrays({"a": np.arange(3)})[:-30], "not packed arrays"),
        (_zip([("a.txt", b"x")]), "member 'a.txt' is not an .npy array"),
        (_zip([("a.npy", _npy(np.arange(3)))], zipfile.ZIP_DEFLATED), "'a.npy' is compressed"),
        (_zip([("a.npy", _npy(np.arange(3))), ("a.npy", _npy(np.arange(2)))]), "'a' appears twice"),
        (_zip([("a.npy", _npy(np.array([{"x": 1}], dtype=object)))]), "not packed arrays.*pickle"),
        (_zip([("a.npy", _npy(np.array(["abcd"])))]), "dtype <U4 is not allowed"),
        (_zip([("a.npy", b"\x93NUMPY garbage")]), "not packed arrays"),
    ],
)
def test_malformed_bytes_are_refused(blob: bytes, reason: str) -> None:
    with pytest.raises(PackError, match=reason):
        unpack_arrays(blob)


def test_object_arrays_are_never_packed() -> None:
    with pytest.raises(PackError, match="'x' has dtype object"):
        pack_arrays({"x": np.array([{"a": 1}], dtype=object)})


def test_records_read_both_forms_and_pack_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PACK_ENV, raising=False)
    arrays = {"mean": np.arange(4.0), "std": np.ones(4)}
    packed = arrays_record(arrays)
    assert list(packed) == [PACKED] and packed[PACKED].stype == PACKED_STYPE
    plain = arrays_record(arrays, pack=False)
    assert list(plain) == ["mean", "std"]
    for record in (packed, plain):
        back = record_arrays(record)
        assert list(back) == ["mean", "std"]
        np.testing.assert_array_equal(back["mean"], arrays["mean"])
    monkeypatch.setenv(PACK_ENV, "0")  # the form before session 10, for the benchmark's side-by-side run
    assert list(arrays_record(arrays)) == ["mean", "std"]


def test_a_packed_record_that_does_not_unpack_is_a_protocol_error() -> None:
    bad = ArrayRecord({PACKED: Array(dtype="uint8", shape=(3,), stype=PACKED_STYPE, data=b"\0\0\0")})
    with pytest.raises(ProtocolError, match="does not unpack: not packed arrays \\(3 bytes\\)"):
        record_arrays(bad)
    mixed = ArrayRecord({PACKED: bad[PACKED], "extra": Array(np.zeros(2))})
    with pytest.raises(ProtocolError, match="holds \\['extra', 'packed'\\]"):
        record_arrays(mixed)


def _objects(content: RecordDict) -> int:
    """How many Flower objects (each pushed and pulled by its own request) a message with `content` becomes."""
    metadata = Metadata(
        run_id=1,
        message_id="",
        src_node_id=0,
        dst_node_id=1,
        reply_to_message_id="",
        group_id="",
        created_at=0.0,
        ttl=100.0,
        message_type="train",
    )
    return len(get_all_nested_objects(make_message(metadata=metadata, content=content)))


def test_a_packed_record_is_three_objects_whatever_its_arrays() -> None:
    """message + RecordDict + per ArrayRecord: the record, and per Array the Array and its chunk (arrays of equal
    content are one object: these differ)."""
    parts = [(i, part) for i in range(3) for part in ("weight", "bias")]
    weights = {f"layer{i}.{part}": np.full((4, 2), 10.0 * i + len(part)) for i, part in parts}
    for pack, expected in ((False, 2 + 1 + 2 * 6), (True, 2 + 3)):
        assert _objects(RecordDict({"w": arrays_record(weights, pack=pack)})) == expected
    config = ConfigRecord({"a": 1})
    assert _objects(RecordDict({"c": config, "w": arrays_record(weights)})) == 2 + 1 + 3


def test_the_same_packed_weights_read_twice_are_equal_and_each_callers_own() -> None:
    # a simulation's worker reads a round's global weights once per firm: decoded once, copied per caller
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([0.5, -1.0], dtype=np.float32)}
    record = arrays_record(weights, pack=True)
    first = record_arrays(record)
    first["w"][0, 0] = 99.0  # one firm writes into its copy
    second = record_arrays(arrays_record(weights, pack=True))
    assert list(second) == ["w", "b"]
    np.testing.assert_array_equal(second["w"], weights["w"])
    np.testing.assert_array_equal(second["b"], weights["b"])
    assert second["w"].flags.writeable
    other = record_arrays(arrays_record({"w": np.zeros(2, dtype=np.float32)}, pack=True))
    np.testing.assert_array_equal(other["w"], np.zeros(2, dtype=np.float32))


def test_a_requests_packed_records_read_in_turn_are_each_decoded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    # a training request holds three packed records (two models' weights, the normaliser); firm after firm reads
    # them in turn, which a cache of the last payload alone would decode every time
    from silobridge.federation import records

    decoded: list[int] = []

    def counting(blob: bytes):  # type: ignore[no-untyped-def]
        decoded.append(len(blob))
        return unpack_arrays(blob)

    monkeypatch.setattr(records, "unpack_arrays", counting)
    monkeypatch.setattr(records, "_recent_unpacked", OrderedDict())  # nothing decoded by earlier tests
    payloads = [
        arrays_record({"w": np.full(3, float(i), dtype=np.float32), f"x{i}": np.ones(i + 1)}, pack=True)
        for i in range(3)
    ]
    for _firm in range(4):
        for i, record in enumerate(payloads):
            arrays = record_arrays(record)
            np.testing.assert_array_equal(arrays["w"], np.full(3, float(i), dtype=np.float32))
    assert len(decoded) == 3
