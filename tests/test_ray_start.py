"""Ray's start is retried before Flower's runtime begins (`federation.launch.start_with_retries`): a start that
fails once (Ray's raylet missing its fixed 30 s window on a loaded machine) is retried after a clean-up, and
one that keeps failing ends in a FederationError naming the last failure, not a run waiting forever."""

from __future__ import annotations

import pytest

from silobridge.errors import FederationError, SiloBridgeError
from silobridge.federation.launch import start_with_retries


class FlakyStart:
    """Fails its first `failures` calls as Ray does on a start timeout, then starts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0
        self.clean_ups = 0

    def start(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise Exception("The current node timed out during startup.")

    def clean_up(self) -> None:
        self.clean_ups += 1


def test_a_start_that_fails_once_is_cleaned_up_and_retried() -> None:
    ray = FlakyStart(failures=1)
    start_with_retries(ray.start, ray.clean_up, attempts=3, pause_s=0)
    assert (ray.calls, ray.clean_ups) == (2, 1)


def test_a_start_that_succeeds_at_once_is_called_once_and_never_cleaned_up() -> None:
    ray = FlakyStart(failures=0)
    start_with_retries(ray.start, ray.clean_up, attempts=3, pause_s=0)
    assert (ray.calls, ray.clean_ups) == (1, 0)


def test_a_start_that_keeps_failing_ends_in_a_federation_error_after_the_attempts() -> None:
    ray = FlakyStart(failures=5)
    with pytest.raises(FederationError, match=r"did not start in 3 attempts; last error: Exception: The current node"):
        start_with_retries(ray.start, ray.clean_up, attempts=3, pause_s=0)
    assert (ray.calls, ray.clean_ups) == (3, 3)
    assert issubclass(FederationError, SiloBridgeError)  # the CLI reports it without a traceback
