"""Empirical privacy auditing: a statistical lower bound on epsilon from a distinguishing test.

An accountant certifies an upper bound on epsilon; an audit measures a lower bound by running the
mechanism many times with and without a canary and counting how often a test tells the two apart.
If a mechanism is (eps, delta)-DP, every test's false positive and false negative rates satisfy
FPR + e^eps FNR >= 1 - delta and FNR + e^eps FPR >= 1 - delta (Kairouz, Oh, Viswanath 2015), so
measured rates imply eps >= log((1 - delta - FNR) / FPR). Clopper-Pearson upper bounds on the rates
turn this into a bound that holds with a stated confidence (Jagielski, Ullman, Oprea 2020, "Auditing
differentially private machine learning"; Nasr, Song, Thakurta, Papernot, Carlini 2021, "Adversary
instantiation"). A lower bound above the accounted epsilon means the mechanism, the accounting or
the code between them is wrong; one far below it says only that this test is weak.

The test's threshold must be chosen on trials other than those counted (`best_threshold` on a
calibration set, `audit` on fresh trials), or the bound loses its confidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import beta

from silobridge.errors import ConfigError


def _check_counts(successes: int, trials: int, field: str) -> None:
    if isinstance(trials, bool) or not isinstance(trials, (int, np.integer)) or trials < 1:
        raise ConfigError(f"must be a positive integer, got {trials!r}", field=f"{field}.trials")
    if isinstance(successes, bool) or not isinstance(successes, (int, np.integer)) or not 0 <= successes <= trials:
        raise ConfigError(f"must be an integer in [0, {trials}], got {successes!r}", field=f"{field}.successes")


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ConfigError(f"must be in (0, 1), got {confidence!r}", field="confidence")


def clopper_pearson(successes: int, trials: int, confidence: float) -> tuple[float, float]:
    """The two-sided exact (Clopper-Pearson 1934) interval for a binomial proportion.

    Each tail has probability at most (1 - confidence) / 2, so the interval covers the true rate
    with probability at least `confidence` whatever it is (the normal approximation does not, near
    0 or 1, which is exactly where an audit's rates sit). Same as scipy's
    `binomtest(...).proportion_ci(method="exact")`.
    """
    _check_counts(successes, trials, "clopper_pearson")
    _check_confidence(confidence)
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if successes == 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    high = 1.0 if successes == trials else float(beta.ppf(1.0 - tail, successes + 1, trials - successes))
    return low, high


def clopper_pearson_upper(successes: int, trials: int, confidence: float) -> float:
    """The one-sided exact upper bound: the true rate is below it with probability >= `confidence`.

    An audit needs only upper bounds on its error rates (larger rates mean a smaller epsilon), so
    all of 1 - confidence goes to the upper tail. For 0 successes it is 1 - (1 - confidence)^(1/trials).
    """
    _check_counts(successes, trials, "clopper_pearson_upper")
    _check_confidence(confidence)
    if successes == trials:
        return 1.0
    return float(beta.ppf(confidence, successes + 1, trials - successes))


def _bound_from_rates(fpr_high: np.ndarray, fnr_high: np.ndarray, delta: float) -> np.ndarray:
    """max(log((1 - delta - FNR) / FPR), log((1 - delta - FPR) / FNR), 0), elementwise."""
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.log(np.maximum(1.0 - delta - fnr_high, 0.0) / fpr_high)
        second = np.log(np.maximum(1.0 - delta - fpr_high, 0.0) / fnr_high)
    bound: np.ndarray = np.maximum(np.maximum(first, second), 0.0)
    return bound


def _check_delta(delta: float) -> None:
    if not 0 <= delta < 1:
        raise ConfigError(f"must be in [0, 1), got {delta!r}", field="delta")


def _rate_confidence(confidence: float) -> float:
    # Bonferroni: both upper bounds hold together with probability >= confidence.
    return 1.0 - (1.0 - confidence) / 2.0


def epsilon_lower_bound(
    false_positives: int,
    negatives: int,
    false_negatives: int,
    positives: int,
    *,
    delta: float,
    confidence: float = 0.95,
) -> float:
    """A lower bound on epsilon at `delta` that holds with probability >= `confidence`.

    `negatives` trials ran without the canary and `false_positives` of them were called "present";
    `positives` ran with it and `false_negatives` were called "absent". With one-sided
    Clopper-Pearson upper bounds FPR_hi and FNR_hi, each at level 1 - (1 - confidence) / 2
    (Bonferroni), the bound is max(log((1 - delta - FNR_hi) / FPR_hi), log((1 - delta - FPR_hi) /
    FNR_hi), 0) (Jagielski et al. 2020; Nasr et al. 2021). With n trials a
    side it cannot exceed about log(n / 3.7) at 95%, however leaky the mechanism: an audit needs
    enough trials to reach the epsilon it checks.
    """
    _check_delta(delta)
    level = _rate_confidence(confidence)
    fpr_high = clopper_pearson_upper(false_positives, negatives, level)
    fnr_high = clopper_pearson_upper(false_negatives, positives, level)
    return float(_bound_from_rates(np.array(fpr_high), np.array(fnr_high), delta))


@dataclass(frozen=True)
class AuditResult:
    """The counts of a threshold test ("present" if score > threshold) and the epsilon bound they give."""

    threshold: float
    false_positives: int
    negatives: int
    false_negatives: int
    positives: int
    epsilon_lower_bound: float


def _as_scores(scores: np.ndarray, field: str) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.all(np.isfinite(values)):
        raise ConfigError("must be a non-empty 1-D array of finite scores", field=field)
    return values


def audit(
    absent_scores: np.ndarray,
    present_scores: np.ndarray,
    threshold: float,
    *,
    delta: float,
    confidence: float = 0.95,
) -> AuditResult:
    """Count the test "score > threshold means the canary is present" and bound epsilon from the counts."""
    absent = _as_scores(absent_scores, "absent_scores")
    present = _as_scores(present_scores, "present_scores")
    false_positives = int(np.count_nonzero(absent > threshold))
    false_negatives = int(np.count_nonzero(present <= threshold))
    bound = epsilon_lower_bound(
        false_positives, absent.size, false_negatives, present.size, delta=delta, confidence=confidence
    )
    return AuditResult(float(threshold), false_positives, absent.size, false_negatives, present.size, bound)


def best_threshold(
    absent_scores: np.ndarray,
    present_scores: np.ndarray,
    *,
    delta: float,
    confidence: float = 0.95,
) -> float:
    """The threshold that maximises the epsilon bound on these (calibration) scores.

    Every observed score is a candidate. The bound, not the accuracy, is maximised: it favours a
    threshold in a tail, where one error rate is tiny, over the midpoint. Count a fresh set of
    trials with it (`audit`); the bound on the calibration set itself is optimistically biased.
    """
    absent = np.sort(_as_scores(absent_scores, "absent_scores"))
    present = np.sort(_as_scores(present_scores, "present_scores"))
    _check_delta(delta)
    _check_confidence(confidence)
    candidates = np.unique(np.concatenate([absent, present]))
    false_positives = absent.size - np.searchsorted(absent, candidates, side="right")
    false_negatives = np.searchsorted(present, candidates, side="right")
    level = _rate_confidence(confidence)
    fpr_high = np.where(
        false_positives == absent.size, 1.0, beta.ppf(level, false_positives + 1, absent.size - false_positives)
    )
    fnr_high = np.where(
        false_negatives == present.size, 1.0, beta.ppf(level, false_negatives + 1, present.size - false_negatives)
    )
    bounds = _bound_from_rates(fpr_high, fnr_high, delta)
    best = int(np.argmax(bounds))
    if best + 1 < candidates.size:  # halfway to the next score: the same counts, less tied to one sample
        return float((candidates[best] + candidates[best + 1]) / 2.0)
    return float(candidates[best])


def max_auditable_epsilon(trials: int, *, delta: float, confidence: float = 0.95) -> float:
    """The largest bound `trials` a side can ever give (no errors at all): what a perfect test reaches."""
    return epsilon_lower_bound(0, trials, 0, trials, delta=delta, confidence=confidence)
