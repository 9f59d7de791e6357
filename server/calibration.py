"""The noise multiplier that spends exactly a target (epsilon, delta) over a planned training run,
and what the accountant then says it spends: `silobridge calibrate`'s answer, before any run."""

from __future__ import annotations

from dataclasses import dataclass

from silobridge.contract.config import PrivacySpec
from silobridge.privacy.dp import epsilon as spent
from silobridge.server.privacy import PrivacyPlan, accounting_spec, resolve_privacy


@dataclass(frozen=True)
class Calibration:
    noise_multiplier: float
    epsilon_spent: float  # the accountant's epsilon of the planned run at that multiplier


def calibrate(
    *,
    epsilon: float,
    delta: float,
    rounds: int,
    unit: str,
    local_epochs: int = 1,
    sample_rate: float | None = None,
    accountant: str = "rdp",
) -> Calibration:
    """`sample_rate` is the record unit's examples per step, or the firm unit's firms per round.

    Bad values are refused as the spec refuses them (pydantic's `ValidationError`, which the caller maps
    to its own names), or as `resolve_privacy` refuses a plan it cannot calibrate.
    """
    fields: dict[str, float] = {}
    if sample_rate is not None:
        fields = {"sample_rate": sample_rate} if unit == "record" else {"firm_sample_rate": sample_rate}
    spec = PrivacySpec(unit=unit, epsilon=epsilon, delta=delta, accountant=accountant, **fields)  # type: ignore[arg-type]
    plan = PrivacyPlan(spec=spec, rounds=rounds, local_epochs=local_epochs, num_firms=1, min_firms=1, model_dim=1)
    resolved = resolve_privacy(plan)
    noise_multiplier = resolved.noise_multiplier
    if noise_multiplier is None:  # resolve_privacy sets it or refuses; a None here is a bug, never a user error
        raise RuntimeError("resolve_privacy returned no noise multiplier")
    plan = PrivacyPlan(spec=resolved, rounds=rounds, local_epochs=local_epochs, num_firms=1, min_firms=1, model_dim=1)
    achieved = spent([plan.planned_run_event(noise_multiplier)], delta, accounting_spec(resolved))
    return Calibration(noise_multiplier, achieved)
