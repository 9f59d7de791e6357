"""The simulation harness's per-firm fits, spread over a process pool sized to the simulation's CPUs.

Why a pool in the coordinator's process rather than the ClientApps: what the harness fits per firm
(each firm's local-only baselines under DP, what each firm deploys and its test figures) is
simulation-only by design. A real federation under DP releases none of it, and deployment's per-firm
rows ("what joining gave me") are never sent by any firm; computing them in the ClientApps would make
each firm send the coordinator figures it does not send today. While the harness fits, the
simulation's Ray workers sit idle, so the pool uses their CPUs.

Each job is deterministic given its firm: the fits' seeds come from the firm and the instruction, and
every process fits with one torch thread, as the harness does, so a firm's figures are the same bit for
bit in a worker as in the coordinator. Results come back in firm order, so sums fold in the same order.
"""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

import numpy as np
import torch

from silobridge.clients.firm import FirmClient
from silobridge.clients.normaliser import Normaliser
from silobridge.contract.efficiency_sums import EfficiencyGroups
from silobridge.contract.messages import BaselineInstruction
from silobridge.errors import FederationError, SiloBridgeError
from silobridge.federation.deployment import DeployedOutcome, deploy_firm

T = TypeVar("T")
R = TypeVar("R")


def _init_worker() -> None:
    """One torch thread per worker, as the harness has (threads that wait on each other slow small fits)."""
    torch.set_num_threads(1)


def _portable(err: SiloBridgeError) -> SiloBridgeError:
    """The error itself if it survives the trip back to the coordinator, else its message as a
    FederationError (an error whose constructor needs more than its message cannot be unpickled)."""
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:
        return FederationError(str(err))
    return err


def _guarded(job: Callable[..., R], *args: Any) -> R:
    try:
        return job(*args)
    except SiloBridgeError as err:
        raise _portable(err) from None


def map_in_order(job: Callable[..., R], items: Sequence[T], *args: Any, workers: int) -> list[R]:
    """`job(item, *args)` for every item, results in the items' order: in this process with one worker
    (or one item), else in a pool of up to `workers` spawned processes (never forked: the coordinator
    runs Ray's driver and Flower's threads). The first failure cancels the jobs not yet started."""
    if workers <= 1 or len(items) <= 1:
        return [job(item, *args) for item in items]
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context, initializer=_init_worker)
    try:
        futures: list[Future[R]] = [pool.submit(_guarded, job, item, *args) for item in items]
        return [future.result() for future in futures]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def baseline_job(
    firm: FirmClient, instruction: BaselineInstruction, groups: EfficiencyGroups
) -> tuple[dict[str, np.ndarray], FirmClient]:
    """The firm's local-only baselines, and the firm itself, which now holds its fitted local-only models
    (deployment uses them again rather than fitting them twice)."""
    return firm.local_baselines(instruction, groups), firm


def deploy_job(
    firm_and_baselines: tuple[FirmClient, dict[str, np.ndarray]],
    instruction: BaselineInstruction,
    groups: EfficiencyGroups | None,
    norm: Normaliser,
    linear: dict[str, np.ndarray | None],
    mlp: dict[str, dict[str, np.ndarray]] | None,
) -> DeployedOutcome:
    """What the firm deploys, scored beside its own baselines (`federation.deployment.deploy_firm`)."""
    firm, baselines = firm_and_baselines
    return deploy_firm(firm, baselines, instruction, groups, norm, linear, mlp)
