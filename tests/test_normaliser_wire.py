"""Issue 17 item 6: under DP firms receive the features' public range and clip as the coordinator scores."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import RecordDict

from silobridge.clients.normaliser import Normaliser
from silobridge.errors import ProtocolError
from silobridge.federation.client_app import _normaliser
from silobridge.federation.records import NORMALISER, arrays_record


def _message(arrays: dict[str, np.ndarray]) -> RecordDict:
    """What the coordinator's request carries (federation.runner: `_model_records`)."""
    return RecordDict({NORMALISER: arrays_record(arrays)})


def test_a_ranged_normaliser_reaches_the_firm_with_its_range() -> None:
    sent = Normaliser.from_ranges({"a": (0.0, 10.0), "b": (-1.0, 1.0)}, ("a", "b"))
    received = _normaliser(_message(sent.to_arrays()), "F1")
    assert received is not None and received.low is not None and received.high is not None
    outlier = np.array([[50.0, -9.0]])
    # the firm clips as the harness and the saved model do: 50 -> 10 -> +1, -9 -> -1 -> -1
    assert np.allclose(received.apply(outlier), sent.apply(outlier)) and np.allclose(received.apply(outlier), [[1, -1]])


def test_a_moments_normaliser_has_no_range_and_half_a_range_is_refused() -> None:
    plain = Normaliser(np.array([1.0]), np.array([2.0]))
    received = _normaliser(_message(plain.to_arrays()), "F1")
    assert received is not None and received.low is None and received.high is None
    with pytest.raises(ProtocolError, match="one end"):
        Normaliser.from_arrays({"mean": np.zeros(1), "std": np.ones(1), "low": np.zeros(1)}, firm="F1")
