"""The two halves of secure aggregation as the Flower glue drives them, without Flower.

Each firm's protocol state is stored in a Flower ConfigRecord between stages (as context.state
keeps it), so these tests exercise exactly what a firm's ClientApp does per message.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from flwr.app import ConfigRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from silobridge.clients import secure_sum as firm_secure_sum
from silobridge.clients.secure_sum import FirmSecureSum
from silobridge.contract.config import AggregationSpec
from silobridge.errors import ConfigError, ProtocolError
from silobridge.privacy.secagg.layout import Segment, VectorLayout
from silobridge.privacy.secagg.messages import (
    AdvertiseRequest,
    MaskedInput,
    MaskedInputRequest,
    Roster,
    UnmaskRequest,
)
from silobridge.privacy.secagg.ring import to_ring
from silobridge.server.secure_sum import SecureSumResult, SecureSumServer, resolve_aggregation

RUN = "flwr-run-7"


def _firms(n: int) -> list[str]:
    return [f"F{i:02d}" for i in range(n)]


class _StoredStateTransport:
    """Each stage handed to the firms as flat dicts, each firm's state kept only as a stored ConfigRecord.

    A firm in `vanish` sends nothing from its stage on: "before_masking" (no masked input) or
    "after_masking" (no unmask reply).
    """

    def __init__(self, federation: _Federation, layout: VectorLayout, values: dict, vanish: dict[str, str]):
        self.federation, self.layout, self.values, self.vanish = federation, layout, values, vanish

    def advertise(self, request: AdvertiseRequest, firms: list[str]) -> dict:
        return {f: self.federation.call(f, "advertise", request.to_wire()) for f in firms}

    def share_keys(self, roster: Roster) -> dict:
        return {f: self.federation.call(f, "share_keys", roster.to_wire()) for f in roster.firms}

    def masked_inputs(self, requests: dict[str, MaskedInputRequest]) -> list:
        masked = []
        for firm, request in requests.items():
            if self.vanish.get(firm) == "before_masking":
                continue
            wire = request.to_wire()
            release = self.federation.call(firm, "masked_input", wire, self.layout, self.values.get(firm, {}))
            masked.append((firm, MaskedInput.from_wire(release.message, expected_sender=firm, vector=release.vector)))
        return masked

    def unmask(self, request: UnmaskRequest) -> dict:
        wire = request.to_wire()
        return {
            f: self.federation.call(f, "unmask", wire)
            for f in request.survivors
            if self.vanish.get(f) != "after_masking"
        }


class _Federation:
    """Server and firms talking through flat dicts, firm state kept only as stored ConfigRecords; the
    sums are sequenced by the same driver the coordinator uses."""

    def __init__(self, firms: list[str], spec: AggregationSpec, *, fresh_process: bool = False):
        self.firms = firms
        self.spec = spec
        self.server = SecureSumServer(spec, run_id=RUN)
        self.stored: dict[str, ConfigRecord] = {f: ConfigRecord() for f in firms}
        self.fresh_process = fresh_process  # every message in a new process: nothing live, always restored
        firm_secure_sum._live.clear()

    def call(self, firm: str, stage: str, *args: object) -> Any:
        if self.fresh_process:
            firm_secure_sum._live.clear()
        secure = FirmSecureSum(firm, self.spec, run_id=RUN, stored=dict(self.stored[firm]))
        try:
            return getattr(secure, stage)(*args)
        finally:
            self.stored[firm] = ConfigRecord(secure.state())  # what context.state would hold

    def secure_sum(
        self, layout: VectorLayout, values: dict[str, dict[str, np.ndarray]], vanish: dict[str, str]
    ) -> SecureSumResult:
        transport = _StoredStateTransport(self, layout, values, vanish)
        return self.server.sum(transport, layout, self.firms, num_firms=len(self.firms))


LAYOUT = VectorLayout((Segment("update", 50, 1e5), Segment("weight", 1, 1e5), Segment("stats", 8, 2.0**40, "double")))


def _values(firms: list[str], seed: int) -> dict[str, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return {
        f: {
            "update": rng.normal(0, 50, 50),
            "weight": np.array([float(rng.integers(1, 5000))]),
            "stats": rng.uniform(0, 1e7, 8),
        }
        for f in firms
    }


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(5, 12),
    seed=st.integers(0, 2**16),
    rate=st.sampled_from([0.0, 0.2]),
    where=st.sampled_from(["before_masking", "after_masking"]),
    fresh_process=st.booleans(),
)
def test_secure_sums_equal_plain_sums_through_stored_state(
    n: int, seed: int, rate: float, where: str, fresh_process: bool
) -> None:
    firms = _firms(n)
    spec = resolve_aggregation(AggregationSpec(rounds_per_session=2, expected_dropout=0.2), n)
    federation = _Federation(firms, spec, fresh_process=fresh_process)
    rng = np.random.default_rng(seed)
    for sum_index in range(3):  # crosses a session boundary: keys are agreed again
        values = _values(firms, seed + sum_index)
        vanish = {f: where for f in firms if rng.random() < rate}
        try:
            result = federation.secure_sum(LAYOUT, values, vanish)
        except ProtocolError as err:
            assert vanish, f"a sum without dropouts aborted: {err}"
            assert "aborted, nothing released" in str(err)
            continue
        included = [f for f in firms if vanish.get(f) != "before_masking"]
        assert sorted(result.contributors) == included
        bounds = LAYOUT.error_bounds(n)
        for name in ("update", "weight", "stats"):
            expected = sum(values[f][name] for f in included)
            tolerance = bounds[name] + 4 * np.finfo(float).eps * np.abs(expected)
            assert np.all(np.abs(result.segments[name] - expected) <= tolerance)


def _count_restores(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The firms whose SecAgg client is restored from a stored state from now on (not reused live), in order."""
    restored: list[str] = []
    restore = firm_secure_sum.SecAggClient.restore_or_new

    def counting(state: Any, firm_id: str, *args: Any, **kwargs: Any) -> Any:
        if state:
            restored.append(firm_id)
        return restore(state, firm_id, *args, **kwargs)

    monkeypatch.setattr(firm_secure_sum.SecAggClient, "restore_or_new", counting)
    return restored


def test_a_live_client_is_reused_only_for_the_state_it_stored(monkeypatch: pytest.MonkeyPatch) -> None:
    """In one process a firm's next message reuses its live client when the stored state is the one it last
    stored; any other state (here an older one, replayed) is restored from what was given, as a new process
    would, and the sums stay exact."""
    firms = _firms(6)
    spec = resolve_aggregation(AggregationSpec(rounds_per_session=3), len(firms))
    federation = _Federation(firms, spec)
    restored = _count_restores(monkeypatch)
    values = _values(firms, 1)
    federation.secure_sum(LAYOUT, values, {})
    assert restored == []  # keys agreed, masked, unmasked: every stage on the live client
    older = dict(federation.stored["F03"])
    result = federation.secure_sum(LAYOUT, _values(firms, 2), {})
    assert restored == []
    live = firm_secure_sum._live.digest_of(("F03", RUN, spec.secagg_params().fingerprint()))
    assert live is not None and live != firm_secure_sum.state_digest(older)
    assert live == firm_secure_sum.state_digest(dict(federation.stored["F03"]))
    federation.stored["F03"] = ConfigRecord(older)  # an older state, replayed: not the live client's
    third = federation.secure_sum(LAYOUT, _values(firms, 3), {})
    assert restored == ["F03"]  # restored from what was given, once; the others' live clients served on
    bound = LAYOUT.error_bounds(len(firms))["update"]
    for summed, draw in ((result, 2), (third, 3)):
        assert sorted(summed.contributors) == firms
        expected = sum(_values(firms, draw)[f]["update"] for f in firms)
        assert np.all(np.abs(summed.segments["update"] - expected) <= bound)


def test_the_live_table_keeps_at_most_its_capacity_and_the_sums_stay_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    """A table of 3 firms' live clients for 6 firms: the least recently used are dropped and restored from their
    stored state on their next message; the sums stay exact (within the rounding bound, as with every firm kept)."""
    firms = _firms(6)
    spec = resolve_aggregation(AggregationSpec(rounds_per_session=3), len(firms))
    restored = _count_restores(monkeypatch)
    sums = {}
    for capacity in (3, 64):
        monkeypatch.setattr(firm_secure_sum, "_live", firm_secure_sum.LiveClients(capacity=capacity))
        restored.clear()
        federation = _Federation(firms, spec)
        sums[capacity] = [federation.secure_sum(LAYOUT, _values(firms, draw), {}) for draw in (1, 2)]
        assert len(firm_secure_sum._live) == min(capacity, len(firms))
        assert (restored != []) == (capacity < len(firms))
    bounds = LAYOUT.error_bounds(len(firms))
    for capacity, results in sums.items():
        for result, draw in zip(results, (1, 2), strict=True):
            assert sorted(result.contributors) == firms, capacity
            for name in ("update", "weight"):  # the float64 segment's own test checks it against an exact sum
                expected = sum(_values(firms, draw)[f][name] for f in firms)
                assert np.all(np.abs(result.segments[name] - expected) <= bounds[name]), (capacity, name)


def test_a_state_digest_tells_types_and_values_apart() -> None:
    state: dict[str, object] = {"a": 1, "b": [b"x", b"y"], "c": "z"}
    digest = firm_secure_sum.state_digest(state)
    assert digest is not None and digest == firm_secure_sum.state_digest(dict(reversed(state.items())))
    for other in ({**state, "a": True}, {**state, "a": 1.0}, {**state, "b": [b"x", b"z"]}, {**state, "c": b"z"}):
        assert firm_secure_sum.state_digest(other) != digest
    assert firm_secure_sum.state_digest({**state, "d": object()}) is None  # not a state's type: nothing reused


def test_a_firm_refuses_a_threshold_below_a_majority() -> None:
    spec = AggregationSpec(num_neighbours=6, threshold=3, modulus_bits=52)
    with pytest.raises(ProtocolError, match="below a majority"):
        FirmSecureSum("F01", spec, run_id=RUN, stored=None)


def test_resolution_for_a_federation_size() -> None:
    spec = resolve_aggregation(AggregationSpec(), 100)
    assert 2 <= spec.num_neighbours < 99
    assert spec.threshold > (spec.num_neighbours + 1) / 2  # a strict majority of the share holders
    assert spec.modulus_bits == 48 + 7
    small = resolve_aggregation(AggregationSpec(), 5)
    assert small.num_neighbours == 4 and small.threshold == 3
    assert resolve_aggregation(AggregationSpec(mode="plain"), 2).mode == "plain"
    with pytest.raises(ConfigError, match="at least 3 firms"):
        resolve_aggregation(AggregationSpec(), 2)
    with pytest.raises(ConfigError, match="must be a majority"):
        resolve_aggregation(AggregationSpec(num_neighbours=10, threshold=4), 50)
    with pytest.raises(ConfigError, match="cannot hold the sum"):
        resolve_aggregation(AggregationSpec(modulus_bits=40), 50)


def test_double_precision_segments_are_exact_to_float64() -> None:
    layout = VectorLayout((Segment("stats", 4, 2.0**40, "double"), Segment("coarse", 4, 2.0**40)))
    rng = np.random.default_rng(1)
    values = [{"stats": v, "coarse": v} for v in rng.uniform(0, 1e6, (9, 4))]
    bits = layout.modulus_bits(9)
    total = np.zeros(layout.length, dtype=np.uint64)
    for v in values:
        total += to_ring(layout.encode(v, rng)[0], bits).astype(np.uint64)
    decoded = layout.decode(total, 9)
    expected = sum(v["stats"] for v in values)
    np.testing.assert_allclose(decoded["stats"], expected, rtol=1e-14)
    # One word per value leaves the bound's coarse step (2^40 / 2^47 = 1/128 per firm).
    assert np.max(np.abs(decoded["coarse"] - expected)) > 1e-6
    assert layout.count_clipped({"stats": np.array([0.0, 2.0**41, -(2.0**41), 1.0])}) == 2
