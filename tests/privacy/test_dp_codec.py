"""DpEvents round-trip through JSON exactly, and anything unexpected is refused."""

from __future__ import annotations

import json

import dp_accounting as dpa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from silobridge.errors import ConfigError
from silobridge.privacy.dp import SkellamDpEvent, event_from_json, event_to_json

positive = st.floats(min_value=1e-3, max_value=1e3, allow_nan=False)
leaves = st.one_of(
    st.just(dpa.NoOpDpEvent()),
    st.just(dpa.NonPrivateDpEvent()),
    st.builds(dpa.GaussianDpEvent, positive),
    st.builds(dpa.LaplaceDpEvent, positive),
    st.builds(SkellamDpEvent, positive, positive, positive),
)


def extend(children: st.SearchStrategy[dpa.DpEvent]) -> st.SearchStrategy[dpa.DpEvent]:
    return st.one_of(
        st.builds(dpa.PoissonSampledDpEvent, st.floats(0.001, 1.0), children),
        st.builds(
            lambda n, m, e: dpa.SampledWithoutReplacementDpEvent(n, min(m, n), e),
            st.integers(1, 10_000),
            st.integers(1, 10_000),
            children,
        ),
        st.builds(lambda e, c: dpa.SelfComposedDpEvent(e, c), children, st.integers(1, 10_000)),
        st.builds(dpa.ComposedDpEvent, st.lists(children, max_size=3)),
    )


event_trees = st.recursive(leaves, extend, max_leaves=8)


@settings(max_examples=80, deadline=None)
@given(event=event_trees)
def test_round_trip_is_exact(event: dpa.DpEvent) -> None:
    text = json.dumps(event_to_json(event))
    assert event_from_json(json.loads(text)) == event


@pytest.mark.parametrize(
    "data,match",
    [
        ({"type": "MixtureOfGaussiansDpEvent"}, "unknown event type"),
        ({"type": "GaussianDpEvent"}, "takes fields"),
        ({"type": "GaussianDpEvent", "noise_multiplier": 1.0, "extra": 1}, "takes fields"),
        ({"type": "GaussianDpEvent", "noise_multiplier": "1.0"}, "finite number"),
        ({"type": "GaussianDpEvent", "noise_multiplier": True}, "finite number"),
        ({"type": "SelfComposedDpEvent", "event": {"type": "NoOpDpEvent"}, "count": 2.0}, "integer"),
        ({"type": "SelfComposedDpEvent", "event": {"type": "NoOpDpEvent"}, "count": True}, "integer"),
        ({"type": "ComposedDpEvent", "events": {"type": "NoOpDpEvent"}}, "list of events"),
        (["GaussianDpEvent"], "expected an object"),
    ],
)
def test_malformed_events_are_refused(data: object, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        event_from_json(data)


def test_nested_errors_name_the_path() -> None:
    bad = {"type": "PoissonSampledDpEvent", "sampling_probability": 0.1, "event": {"type": "Nope"}}
    with pytest.raises(ConfigError, match=r"event\.event\.type"):
        event_from_json(bad)


def test_unsupported_event_types_are_not_serialised() -> None:
    with pytest.raises(ConfigError, match="cannot serialise"):
        event_to_json(dpa.ZCDpEvent(rho=0.1))
