"""The firm's ClientApp: thin Flower glue around `clients.firm.FirmClient` and `clients.secure_sum`.

Every request that feeds a sum (feature moments, baselines, a training round, the final
evaluation) is answered the same way: the firm computes its named segments, then releases them --
in the clear under plain aggregation, quantised and masked under secure aggregation. A failure we
expect (bad data, a malformed or out-of-order request) goes back as an error reply naming the firm.
The firm's data never leaves in any reply.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from flwr.app import ConfigRecord, Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp

from silobridge.clients.secure_sum import FirmSecureSum, rounding_seed
from silobridge.contract.efficiency_sums import EfficiencyGroups
from silobridge.contract.messages import BaselineInstruction, TrainInstruction
from silobridge.contract.query_protocol import QUERY_SEGMENT, QueryStep
from silobridge.contract.stats import StatGroups
from silobridge.contract.sufficient import LINEAR_COEF, LINEAR_REQUEST, LINEAR_SEGMENT
from silobridge.contract.wire_names import (
    EVALUATE,
    EVALUATE_EFFICIENCY,
    QUERY_ANALYTICS,
    QUERY_MANIFEST,
    QUERY_MOMENTS,
    QUERY_SECAGG_ADVERTISE,
    QUERY_SECAGG_SHARE,
    QUERY_SECAGG_UNMASK,
    TRAIN,
    TRAIN_BASELINES,
    TRAIN_LINEAR,
    split_message_type,
)
from silobridge.errors import ProtocolError, SiloBridgeError, SimulatedDropout
from silobridge.federation.firm_source import FirmFiles, node_firm, simulated_dropout, simulated_firm
from silobridge.federation.records import (
    ANALYTICS,
    EFFICIENCY_GROUPS,
    INSTRUCTION,
    MASKED,
    NORMALISER,
    REPLY,
    SECAGG,
    SEGMENTS,
    STAT_GROUPS,
    arrays_of,
    arrays_record,
    config_of,
    read_layout,
    read_run_id,
    read_spec,
    record_arrays,
    secagg_run_id,
    weights_key,
)
from silobridge.federation.settings import RunSettings, settings_from_run_config
from silobridge.privacy.secagg.layout import CLIPPED

if TYPE_CHECKING:  # torch and Opacus load only for the stages that train or evaluate (see LIGHT_STAGES)
    from silobridge.clients.firm import FirmClient
    from silobridge.clients.normaliser import Normaliser

FIRM_ERROR_CODE = 4100
"""Error code of replies for failures SiloBridge raised on purpose (bad data, bad request)."""

log = logging.getLogger("silobridge")


@dataclass(frozen=True)
class Request:
    """One message as a firm sees it: who it is, the run's settings, Flower's context and the message."""

    firm: FirmClient | FirmFiles  # FirmFiles: a partner's secure-sum and analytics stages, no model code
    settings: RunSettings | None  # None on a partner's SuperNode: it needs only the spec each request carries
    context: Context
    message: Message


def _request(context: Context, run_config: Mapping[str, Any], message: Message) -> Request:
    """Simulated nodes carry a `partition-id`; a partner's SuperNode names its own files instead."""
    spec = read_spec(message)
    node = context.node_config
    if "partition-id" not in node:
        return Request(node_firm(node, spec, message.metadata.message_type), None, context, message)
    settings = run_settings(run_config)
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)  # simulated firms share the machine's cores
    firm = simulated_firm(settings, spec, int(node["partition-id"]), run_id=context.run_id)
    return Request(firm, settings, context, message)


def run_settings(run_config: Mapping[str, Any]) -> RunSettings:
    """The run's settings, parsed once per process, run config and scenario file: parsing loads the scenario
    file (every firm of it), so parsing it per message cost each message time in proportion to the federation's
    size (at 1,000 firms, more than a firm's training). A scenario file changed since is parsed again. The spec
    is not resolved (no DP calibration in a firm's worker): a firm uses the spec its message carries."""
    global _last_settings
    key = tuple(sorted((str(k), repr(v)) for k, v in run_config.items()))
    if _last_settings is not None:
        last_key, stamp, cached = _last_settings
        if last_key == key and _file_stamp(cached.scenario_path) == stamp:
            return cached
    settings = settings_from_run_config(run_config, resolve_spec=False)  # each message carries the spec
    _last_settings = (key, _file_stamp(settings.scenario_path), settings)  # one run at a time per process
    return settings


def _file_stamp(path: Path) -> tuple[int, int] | None:
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size


_last_settings: tuple[tuple[tuple[str, str], ...], tuple[int, int] | None, RunSettings] | None = None
"""The last run's settings in this process: (run config, its scenario file's stamp, settings)."""


OWN_SPEND = "silobridge.own_spend"
"""Node state (per run): the rounds each of the firm's data sets has released, for its own budget check."""


def _secure(req: Request) -> FirmSecureSum:
    stored = req.context.state.config_records.get(SECAGG)
    return FirmSecureSum(
        req.firm.firm_id, req.firm.spec.aggregation, run_id=secagg_run_id(req.context.run_id), stored=dict(stored or {})
    )


def _store(secure: FirmSecureSum, req: Request) -> None:
    req.context.state.config_records[SECAGG] = ConfigRecord(secure.state())


def _maybe_vanish(req: Request, round_number: int, stage: str) -> None:
    """Simulation only: vanish as the scenario's [dropout] says, before or after masking."""
    if req.settings is not None and simulated_dropout(req.settings.scenario, req.firm.firm_id, round_number, stage):
        raise SimulatedDropout(
            f"firm '{req.firm.firm_id}' vanished {stage.replace('_', ' ')} (secure sum {round_number})"
        )


def _release(
    req: Request, segments: dict[str, np.ndarray], *, clipped: int | None = None, release: str | None = None
) -> RecordDict:
    """Send the firm's segments into the sum the request asks for: in the clear, or masked.

    `clipped` is how many values the firm already clipped to public bounds (an analytics answer);
    it is summed with the values quantisation clips, never sent on its own. `release` names a release
    that a resumed run repeats (a training round, a linear-family sum, a query step): with the firm's own noise seed
    its rounding is then seeded (`rounding_seed`), so the repeat is exact.
    """
    layout = read_layout(req.message)
    if req.firm.spec.aggregation.mode == "plain":
        layout.count_clipped(segments)  # validates the names; plain values are never clipped
        if clipped is not None:
            segments = {**segments, CLIPPED: np.array([float(clipped)])}
        return RecordDict({SEGMENTS: arrays_record(segments)})
    wire = config_of(req.message, SECAGG)
    _maybe_vanish(req, int(wire.get("round_number", 0)), "before_masking")
    secure = _secure(req)
    count = layout.count_clipped(segments) + (clipped or 0)
    try:
        own_seed = getattr(req.firm, "noise_seed", None)  # a FirmClient's own seed; FirmFiles hold none
        rounding = rounding_seed(own_seed, req.firm.firm_id, release) if release is not None else None
        masked = secure.masked_input(wire, layout, {**segments, CLIPPED: np.array([count])}, rounding=rounding)
    finally:
        _store(secure, req)
    return RecordDict({SECAGG: ConfigRecord(masked.message), MASKED: arrays_record({"vector": masked.vector})})


def _normaliser(content: RecordDict, firm: str) -> Normaliser | None:
    """The risk features' scaling as the coordinator scores with it: under DP with the public range."""
    from silobridge.clients.normaliser import Normaliser

    if NORMALISER not in content.array_records:
        return None
    return Normaliser.from_arrays(record_arrays(content.array_records[NORMALISER]), firm=firm)


def _groups(req: Request) -> EfficiencyGroups:
    """The server's efficiency slot assignment; every request that releases efficiency sums carries one."""
    return EfficiencyGroups.from_config(config_of(req.message, EFFICIENCY_GROUPS), firm=req.firm.firm_id)


def _stat_groups(req: Request) -> dict[str, StatGroups]:
    """The server's test-statistics slots per model; every request that releases test statistics carries them."""
    from silobridge.clients.models import MODEL_KINDS

    values = config_of(req.message, STAT_GROUPS)
    return {kind: StatGroups.from_config(values, kind, firm=req.firm.firm_id) for kind in MODEL_KINDS}


def _weights(message: Message) -> dict[str, dict[str, np.ndarray]]:
    from silobridge.clients.models import MODEL_KINDS

    records = message.content.array_records
    return {kind: arrays_of(message, weights_key(kind)) for kind in MODEL_KINDS if weights_key(kind) in records}


# -- handlers ---------------------------------------------------------------------------------------

Handler = Callable[[Request], RecordDict]


def _odometer_run_id(req: Request) -> str:
    """The run a release is charged to: ours (the ledger's run id, which a resumed run keeps), or Flower's run
    where the request names none (a coordinator older than the run id in requests)."""
    if req.settings is not None:
        return req.settings.run_id
    return read_run_id(req.message) or f"flower-run-{req.context.run_id}"


def _manifest(req: Request) -> RecordDict:
    from silobridge.federation.odometer_glue import node_odometer

    node_odometer(req.firm.firm_id, req.settings, req.context.node_config)  # a tampered odometer: refuse at once
    return RecordDict({REPLY: ConfigRecord(req.firm.manifest().to_config())})


def _moments(req: Request) -> RecordDict:
    return _release(req, req.firm.risk_moments(), release="moments")  # the normaliser a resumed run recomputes


def _baselines(req: Request) -> RecordDict:
    instruction = BaselineInstruction.from_config(config_of(req.message, INSTRUCTION), firm=req.firm.firm_id)
    return _release(req, req.firm.local_baselines(instruction, _groups(req), _stat_groups(req)))


def _train(req: Request) -> RecordDict:
    from silobridge.clients.own_budget import (  # dp-accounting: only where a firm trains
        already_charged,
        charge_lifetime,
        check_round,
    )
    from silobridge.federation.odometer_glue import node_odometer

    firm = req.firm
    instruction = TrainInstruction.from_config(config_of(req.message, INSTRUCTION), firm=firm.firm_id)
    weights = _weights(req.message)
    # The firm's own budget, counted by the firm itself (record level): in this Flower run's node state, and,
    # where the node keeps a lifetime odometer, by our run id in it, so that a resumed run (a new Flower run,
    # a fresh node state) is counted against the same per-run budget.
    kinds = [kind for kind in weights if firm.trains(kind)]
    stored = req.context.state.config_records.get(OWN_SPEND)
    trained = {kind: int(count) for kind, count in (stored or {}).items()}  # type: ignore[call-overload]
    odometer = node_odometer(firm.firm_id, req.settings, req.context.node_config)
    run_id = _odometer_run_id(req)
    # A redone round (a resumed run whose sum never completed) on the same models, with the firm's own noise
    # seed, is the very release already charged: admitted and charged once (`Odometer.charge(repeatable=...)`).
    release, repeat = f"round-{instruction.round}", False
    if odometer is not None:
        release = f"{release}@{_inputs_digest(req, INSTRUCTION)}"
        trained = {kind: max(trained.get(kind, 0), odometer.releases_in_run(kind, run_id)) for kind in kinds}
        repeat = _repeatable(req) and already_charged(odometer, firm.spec.privacy, kinds, run_id, release)
    stage = f"train round {instruction.round}"
    if not repeat:
        check_round(firm.spec.privacy, firm.budget_epsilon, trained, kinds, firm=firm.firm_id, stage=stage)
    # Across runs: the firm's lifetime odometer, charged before anything is released.
    if odometer is not None:
        charge_lifetime(
            odometer,
            firm.spec.privacy,
            kinds,
            run_id=run_id,
            release_id=release,
            firm=firm.firm_id,
            repeatable=_repeatable(req),
        )
    # Without DP the round carries test statistics of the received models: in the slots the server assigned.
    groups = None if firm.spec.privacy.enabled else _stat_groups(req)
    segments = firm.train_round(weights, instruction, _normaliser(req.message.content, req.firm.firm_id), groups)
    reply = _release(req, segments, release=f"round-{instruction.round}")
    # Counted once the release has left (a firm that vanished before masking released nothing).
    req.context.state.config_records[OWN_SPEND] = ConfigRecord(
        {kind: trained.get(kind, 0) + (kind in kinds and not repeat) for kind in sorted({*trained, *kinds})}
    )
    return reply


def _repeatable(req: Request) -> bool:
    """Whether the firm's releases repeat bit for bit when asked again on the same inputs: its own noise seed
    fixes its DP-SGD noise and its rounding into the secure sum (`clients.secure_sum.rounding_seed`)."""
    return getattr(req.firm, "noise_seed", None) is not None  # a FirmClient's own seed; FirmFiles hold none


def _inputs_digest(req: Request, config_key: str) -> str:
    """What a release is computed from (every array the request carries, its instruction): names the release
    in the odometer, so that only a true repeat is found there."""
    from silobridge.federation.odometer_charges import request_digest

    content = req.message.content
    arrays = {name: record_arrays(content.array_records[name]) for name in content.array_records}
    config = dict(content.config_records[config_key]) if config_key in content.config_records else {}
    return request_digest(arrays, config)


def _evaluate(req: Request) -> RecordDict:
    weights, norm = _weights(req.message), _normaliser(req.message.content, req.firm.firm_id)
    return _release(req, req.firm.evaluate_all(weights, norm, _groups(req), _stat_groups(req)))


def _analytics(req: Request) -> RecordDict:
    """One step of an analytics query: the firm's half on its own tables, clipped, into the secure sum.

    Under record-level DP the firm counts its own spend over the run's query steps and refuses past its budget."""
    from silobridge.clients.query_answers import answer_step
    from silobridge.clients.query_answers.own_spend import (  # dp-accounting: only for its own spend
        OWN_QUERY_SPEND,
        check_step,
    )
    from silobridge.federation.odometer_charges import charge_query_step
    from silobridge.federation.odometer_glue import node_odometer

    step = QueryStep.from_config(config_of(req.message, ANALYTICS), firm=req.firm.firm_id)
    stored = req.context.state.config_records.get(OWN_QUERY_SPEND)
    answered = [float(z) for z in (stored or {}).get("multipliers", [])]  # type: ignore[union-attr]
    check_step(step, req.firm.budget_epsilon, answered, firm=req.firm.firm_id)
    odometer = node_odometer(req.firm.firm_id, req.settings, req.context.node_config)
    charge_query_step(odometer, step, run_id=_odometer_run_id(req), firm=req.firm.firm_id, repeatable=_repeatable(req))
    answer = answer_step(step, req.firm.data)
    # the step as sent names the release: a resumed session that redoes it rounds it as it was rounded
    reply = _release(
        req, {QUERY_SEGMENT: answer.vector}, clipped=answer.clipped, release=f"query {step.model_dump_json()}"
    )
    if step.noise_multiplier is not None:  # counted once the release has left
        req.context.state.config_records[OWN_QUERY_SPEND] = ConfigRecord(
            {"multipliers": [*answered, step.noise_multiplier]}
        )
    return reply


def _efficiency(req: Request) -> RecordDict:
    from silobridge.federation.odometer_charges import charge_efficiency
    from silobridge.federation.odometer_glue import node_odometer

    instruction = BaselineInstruction.from_config(config_of(req.message, INSTRUCTION), firm=req.firm.firm_id)
    weights = _weights(req.message)
    if "demand" not in weights:
        raise ProtocolError("the efficiency release needs the federated demand model", firm=req.firm.firm_id)
    odometer = node_odometer(req.firm.firm_id, req.settings, req.context.node_config)
    charge_efficiency(
        odometer,
        req.firm.spec,
        run_id=_odometer_run_id(req),
        firm=req.firm.firm_id,
        models=_inputs_digest(req, INSTRUCTION) if odometer is not None else "",
        repeatable=_repeatable(req),
    )
    return _release(req, req.firm.efficiency_release(weights["demand"], instruction, _groups(req)))


def _linear(req: Request) -> RecordDict:
    """The firm's clipped sufficient statistics of one linear-family model, into the secure sum.

    Under record-level DP the firm counts the release against its own per-run budget (with the run's rounds and
    earlier releases on the same data set) and refuses past it, as it does a round or a query step."""
    from silobridge.clients.deploy import demand_statistics, risk_statistics

    firm = req.firm
    model = str(config_of(req.message, LINEAR_REQUEST).get("model"))
    if model == "demand":
        release = "linear/demand"  # computed from the firm's data alone
        repeat = _linear_admitted(req, model, release)
        reply = _release(req, {LINEAR_SEGMENT: demand_statistics(firm)}, release=release)
        _count_linear(req, model, repeat)
        return reply
    if model != "risk":
        raise ProtocolError(
            f"a linear-family request names model {model!r}, expected 'demand' or 'risk'", firm=firm.firm_id
        )
    norm = _normaliser(req.message.content, firm.firm_id)
    if norm is None:
        raise ProtocolError("the risk Newton step carries no normaliser", firm=firm.firm_id)
    coef = np.asarray(arrays_of(req.message, LINEAR_COEF)["coef"], dtype=float)
    at = hashlib.sha256(coef.tobytes()).hexdigest()[:16]  # a Newton step is named by where it stands
    release = f"linear/risk@{at}"
    repeat = _linear_admitted(req, model, release)
    reply = _release(req, {LINEAR_SEGMENT: risk_statistics(firm, norm, coef)}, release=release)
    _count_linear(req, model, repeat)
    return reply


def _linear_admitted(req: Request, model: str, release: str) -> bool:
    """Check a linear release against the firm's own per-run budget, then charge its lifetime odometer; True if
    it repeats one already charged (a resumed run redoing it), which is neither checked nor charged again."""
    from silobridge.clients.own_budget import OWN_LINEAR_SPEND, check_release, run_events
    from silobridge.federation.odometer_charges import LINEAR_DATASETS, charge_linear, linear_release_event
    from silobridge.federation.odometer_glue import node_odometer

    firm = req.firm
    if model not in LINEAR_DATASETS:
        raise ProtocolError(
            f"a linear-family request names model {model!r}, expected 'demand' or 'risk'", firm=firm.firm_id
        )
    odometer = node_odometer(firm.firm_id, req.settings, req.context.node_config)
    privacy, dataset, run_id = firm.spec.privacy, LINEAR_DATASETS[model], _odometer_run_id(req)
    if not privacy.enabled:
        return False
    event = linear_release_event(firm.spec, model)
    repeat = (
        odometer is not None
        and _repeatable(req)
        and odometer.holds([dataset], event, run_id=run_id, release_id=release)
    )
    if not repeat and firm.budget_epsilon is not None:
        if odometer is not None:  # every release of this run on the data set, across Flower runs of it
            spent = odometer.events_in_run(dataset, run_id)
        else:  # this Flower run's own counts
            state = req.context.state.config_records
            rounds = int((state.get(OWN_SPEND) or {}).get(model, 0))  # type: ignore[call-overload]
            releases = int((state.get(OWN_LINEAR_SPEND) or {}).get(model, 0))  # type: ignore[call-overload]
            spent = run_events(privacy, rounds, releases, event)
        check_release(
            privacy, firm.budget_epsilon, spent, event, dataset=dataset, firm=firm.firm_id, stage=f"release {release}"
        )
    charge_linear(
        odometer, firm.spec, model, run_id=run_id, release_id=release, firm=firm.firm_id, repeatable=_repeatable(req)
    )
    return repeat


def _count_linear(req: Request, model: str, repeat: bool) -> None:
    """Counted in this Flower run's node state once the release has left (a repeat counts once)."""
    from silobridge.clients.own_budget import OWN_LINEAR_SPEND

    state = req.context.state.config_records
    counts = {key: int(value) for key, value in (state.get(OWN_LINEAR_SPEND) or {}).items()}  # type: ignore[call-overload]
    counts[model] = counts.get(model, 0) + (not repeat)
    state[OWN_LINEAR_SPEND] = ConfigRecord(counts)


def _secagg_stage(stage: str) -> Handler:
    def handle(req: Request) -> RecordDict:
        wire = config_of(req.message, SECAGG)
        if stage == "unmask":
            _maybe_vanish(req, int(wire.get("round_number", 0)), "after_masking")
        secure = _secure(req)
        try:
            reply = getattr(secure, stage)(wire)
        finally:
            _store(secure, req)
        return RecordDict({SECAGG: ConfigRecord(reply)})

    return handle


def build_client_app(run_config: Mapping[str, Any] | None = None) -> ClientApp:
    """The ClientApp; `run_config` stands in for Flower's when the simulation runs in-process."""
    app = ClientApp()

    def register(decorator: Callable[[Callable[[Message, Context], Message]], Any], handler: Handler) -> None:
        @functools.wraps(handler)
        def wrapped(message: Message, context: Context) -> Message:
            config = run_config if run_config is not None else context.run_config
            try:
                return Message(handler(_request(context, config, message)), reply_to=message)
            except SiloBridgeError as err:
                if not isinstance(err, SimulatedDropout):
                    log.warning("firm request %s failed: %s", message.metadata.message_type, err)
                return Message(Error(code=FIRM_ERROR_CODE, reason=str(err)), reply_to=message)

        decorator(wrapped)

    def on(message_type: str, handler: Handler) -> None:
        """Register `handler` under the message type the coordinator sends (Flower's "<category>.<action>")."""
        category, action = split_message_type(message_type)
        decorate = getattr(app, category)
        register(decorate(action) if action else decorate(), handler)

    on(QUERY_MANIFEST, _manifest)
    on(QUERY_MOMENTS, _moments)
    on(TRAIN_BASELINES, _baselines)
    on(TRAIN, _train)
    on(EVALUATE, _evaluate)
    on(TRAIN_LINEAR, _linear)
    on(QUERY_ANALYTICS, _analytics)
    on(EVALUATE_EFFICIENCY, _efficiency)
    on(QUERY_SECAGG_ADVERTISE, _secagg_stage("advertise"))
    on(QUERY_SECAGG_SHARE, _secagg_stage("share_keys"))
    on(QUERY_SECAGG_UNMASK, _secagg_stage("unmask"))
    return app


app = build_client_app()
"""The ClientApp `flwr run .` loads (pyproject [tool.flwr.app.components])."""
