"""The firm's ClientApp: thin Flower glue around `clients.firm.FirmClient`.

Each handler parses the request, asks the firm object, and packs the answer. A firm-side failure
that we expect (bad data, malformed request) goes back as an error reply naming the firm, so the
server can report it; the firm's data never leaves in any reply, only updates and statistics.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.error import Error
from flwr.clientapp import ClientApp

from clients.firm import FirmClient, Normaliser
from clients.models import ModelKind
from federation.firm_source import simulated_firm
from federation.records import (
    INSTRUCTION,
    NORMALISER,
    REPLY,
    VECTORS,
    WEIGHTS,
    arrays_of,
    arrays_record,
    config_of,
    read_spec,
)
from federation.settings import settings_from_run_config
from silobridge.errors import SiloBridgeError
from silobridge.messages import BaselineInstruction, TrainInstruction

FIRM_ERROR_CODE = 4100
"""Error code of replies for failures SiloBridge raised on purpose (bad data, bad request)."""

log = logging.getLogger(__name__)

Handler = Callable[[FirmClient, Message], RecordDict]


def _firm(context: Context, run_config: Mapping[str, Any], message: Message) -> FirmClient:
    settings = settings_from_run_config(run_config)
    spec = read_spec(message)
    node = context.node_config
    if "partition-id" not in node:
        raise SiloBridgeError("this node has no 'partition-id': only simulated nodes are supported so far")
    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)  # simulated firms share the machine's cores
    return simulated_firm(settings, spec, int(node["partition-id"]), run_id=context.run_id)


def _normaliser(message: Message) -> Normaliser:
    arrays = arrays_of(message, NORMALISER)
    return Normaliser(np.asarray(arrays["mean"], dtype=float), np.asarray(arrays["std"], dtype=float))


def _manifest(firm: FirmClient, message: Message) -> RecordDict:
    return RecordDict({REPLY: ConfigRecord(firm.manifest().to_config())})


def _moments(firm: FirmClient, message: Message) -> RecordDict:
    return RecordDict({VECTORS: arrays_record({"risk_moments": firm.risk_moments()})})


def _baselines(firm: FirmClient, message: Message) -> RecordDict:
    instruction = BaselineInstruction.from_config(config_of(message, INSTRUCTION), firm=firm.firm_id)
    return RecordDict({VECTORS: arrays_record(firm.local_baselines(instruction))})


def _train(kind: ModelKind) -> Handler:
    def handle(firm: FirmClient, message: Message) -> RecordDict:
        instruction = TrainInstruction.from_config(config_of(message, INSTRUCTION), firm=firm.firm_id)
        norm = _normaliser(message) if kind == "risk" else None
        outcome = firm.train(kind, arrays_of(message, WEIGHTS), instruction, norm)
        return RecordDict(
            {
                VECTORS: arrays_record({"weighted_delta": outcome.weighted_delta, "evaluation": outcome.evaluation}),
                REPLY: ConfigRecord({"weight": outcome.weight, "loss": outcome.loss}),
            }
        )

    return handle


def _evaluate(kind: ModelKind) -> Handler:
    def handle(firm: FirmClient, message: Message) -> RecordDict:
        norm = _normaliser(message) if kind == "risk" else None
        return RecordDict(
            {VECTORS: arrays_record({"evaluation": firm.evaluate(kind, arrays_of(message, WEIGHTS), norm)})}
        )

    return handle


def build_client_app(run_config: Mapping[str, Any] | None = None) -> ClientApp:
    """The ClientApp; `run_config` stands in for Flower's when the simulation runs in-process."""
    app = ClientApp()

    def register(decorator: Callable[[Callable[[Message, Context], Message]], Any], handler: Handler) -> None:
        @functools.wraps(handler)
        def wrapped(message: Message, context: Context) -> Message:
            config = run_config if run_config is not None else context.run_config
            try:
                firm = _firm(context, config, message)
                return Message(handler(firm, message), reply_to=message)
            except SiloBridgeError as err:
                log.warning("firm request %s failed: %s", message.metadata.message_type, err)
                return Message(Error(code=FIRM_ERROR_CODE, reason=str(err)), reply_to=message)

        decorator(wrapped)

    register(app.query("manifest"), _manifest)
    register(app.query("moments"), _moments)
    register(app.train("baselines"), _baselines)
    for kind in ("demand", "risk"):
        register(app.train(kind), _train(kind))
        register(app.evaluate(kind), _evaluate(kind))
    return app


app = build_client_app()
"""The ClientApp `flwr run .` loads (pyproject [tool.flwr.app.components])."""
