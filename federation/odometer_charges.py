"""What a firm's lifetime odometer charges for each release a node makes besides a DP-SGD round: a linear-family
release, an analytics query step, the DP efficiency release.

Each is charged before the release leaves the firm (refused, charging nothing, past the lifetime budget), per data
set it reads, at the record level (add or remove one record of that data set), with the event the coordinator's
ledger records for the same release. The linear and efficiency events the firm derives itself from the
federation's spec; a query step's noise multiplier is the one the step states (the session's budget is the
coordinator's choice), which is also what the firm's own per-run count uses.
"""

from __future__ import annotations

import functools
import hashlib
import json

import dp_accounting as dpa
import numpy as np

from silobridge.clients.own_budget import charge_release
from silobridge.clients.query_answers import tables_read
from silobridge.contract.config import FederationSpec
from silobridge.contract.query_protocol import QueryStep
from silobridge.errors import ProtocolError
from silobridge.privacy.odometer import Odometer
from silobridge.server.efficiency_release import RELEASE_ID, efficiency_event
from silobridge.server.linear import linear_noise_multipliers, release_event

LINEAR_DATASETS = {"demand": "demand", "risk": "risk"}
"""The data set each linear model's statistics are computed from."""


@functools.lru_cache(maxsize=8)
def _multipliers(spec_json: str) -> dict[str, float]:
    # Calibration searches the accountant; a node answers several releases of one run with the same spec.
    return linear_noise_multipliers(FederationSpec.model_validate_json(spec_json))


def linear_release_event(spec: FederationSpec, model: str) -> dpa.DpEvent:
    """One release of the linear `model`'s statistics: a Gaussian at the multiplier the coordinator calibrates."""
    return release_event(_multipliers(spec.model_dump_json())[model])


def charge_linear(
    odometer: Odometer | None,
    spec: FederationSpec,
    model: str,
    *,
    run_id: str,
    release_id: str,
    firm: str,
    repeatable: bool = False,
) -> None:
    """Charge one release of the linear `model` (one demand release; one risk Newton step) to its data set;
    `repeatable` as for `charge_release` (a release id that names what the statistics are computed from)."""
    if odometer is None or not spec.privacy.enabled:
        return
    if model not in LINEAR_DATASETS:
        raise ProtocolError(f"a linear-family request names model {model!r}, expected 'demand' or 'risk'", firm=firm)
    event = linear_release_event(spec, model)
    datasets = [LINEAR_DATASETS[model]]
    charge_release(
        odometer,
        spec.privacy.unit,
        datasets,
        event,
        run_id=run_id,
        release_id=release_id,
        firm=firm,
        repeatable=repeatable,
    )


def charge_query_step(
    odometer: Odometer | None, step: QueryStep, *, run_id: str, firm: str, repeatable: bool = False
) -> None:
    """Charge one noised query step to every data set its half reads (nothing for a step without noise).
    Repeatable releases are named by the step as sent (its digest), which fixes what the firm computes."""
    if odometer is None or step.noise_multiplier is None:
        return
    if step.unit is None:
        raise ProtocolError(f"query '{step.query}' step {step.step}: a DP step without its unit", firm=firm)
    charge_release(
        odometer,
        step.unit,
        list(tables_read(step, firm=firm)),
        dpa.GaussianDpEvent(step.noise_multiplier),
        run_id=run_id,
        release_id=f"query {step.query} step {step.step}@{_digest(step.model_dump_json().encode())}",
        firm=firm,
        repeatable=repeatable,
    )


def charge_efficiency(
    odometer: Odometer | None,
    spec: FederationSpec,
    *,
    run_id: str,
    firm: str,
    models: str = "",
    repeatable: bool = False,
) -> None:
    """Charge the DP efficiency release (the inventory simulation on the firm's demand data); `models` is the
    digest of the demand model it runs on (`request_digest`), which names the release."""
    if odometer is None or not spec.privacy.enabled or not spec.efficiency.dp:
        return
    event = efficiency_event(spec.privacy.unit, spec.efficiency.dp_noise_multiplier)
    release_id = f"{RELEASE_ID}@{models}" if models else RELEASE_ID
    charge_release(
        odometer,
        spec.privacy.unit,
        ["demand"],
        event,
        run_id=run_id,
        release_id=release_id,
        firm=firm,
        repeatable=repeatable,
    )


def request_digest(arrays: dict[str, dict[str, np.ndarray]], config: dict[str, object]) -> str:
    """A short digest of what a release is computed from (the models received, the instruction): a release id
    that two different requests never share, so that only a true repeat is found in the odometer."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name in sorted(arrays):
        for key in sorted(arrays[name]):
            value = np.ascontiguousarray(arrays[name][key])
            digest.update(f"|{name}/{key}|{value.dtype.str}|{value.shape}|".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()[:16]


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]
