"""Differential privacy core: mechanisms, DpEvents, accounting, budget guards and calibration.

Pure maths over numpy and dp-accounting; no Flower, no torch. Every mechanism returns (or comes with
a builder for) the dp-accounting `DpEvent` that describes it, and every release goes through a
budget guard before it happens.
"""

from silobridge.privacy.dp.accounting import (
    Account,
    AccountantKind,
    AccountingSpec,
    EpsilonReport,
    PrivacyUnit,
    epsilon,
    epsilon_report,
)
from silobridge.privacy.dp.budget import Budget, BudgetGuard, FirmBudgets
from silobridge.privacy.dp.calibration import calibrate_dpsgd, calibrate_noise_multiplier, calibrate_rounds
from silobridge.privacy.dp.central import add_gaussian_noise, central_release, central_round_event
from silobridge.privacy.dp.clipping import UNCLIPPED_SEGMENT, AdaptiveClipping, ClipResult, clip_l2
from silobridge.privacy.dp.codec import event_from_json, event_to_json
from silobridge.privacy.dp.distributed import DistributedSkellam, rounded_l2_bound, stochastic_round
from silobridge.privacy.dp.events import (
    SkellamDpEvent,
    combine_gaussians,
    dpsgd_event,
    gaussian_event,
    l2_sensitivity,
    remaining_noise_multiplier,
)
from silobridge.privacy.dp.group import GroupPrivacy, group_epsilon
from silobridge.privacy.dp.sampling import Sampling, SamplingMethod, poisson_steps_per_epoch

__all__ = [
    "Account",
    "AccountantKind",
    "AccountingSpec",
    "AdaptiveClipping",
    "Budget",
    "BudgetGuard",
    "ClipResult",
    "DistributedSkellam",
    "EpsilonReport",
    "FirmBudgets",
    "GroupPrivacy",
    "PrivacyUnit",
    "Sampling",
    "SamplingMethod",
    "SkellamDpEvent",
    "UNCLIPPED_SEGMENT",
    "add_gaussian_noise",
    "calibrate_dpsgd",
    "calibrate_noise_multiplier",
    "calibrate_rounds",
    "central_release",
    "central_round_event",
    "clip_l2",
    "combine_gaussians",
    "dpsgd_event",
    "epsilon",
    "epsilon_report",
    "event_from_json",
    "event_to_json",
    "gaussian_event",
    "group_epsilon",
    "l2_sensitivity",
    "poisson_steps_per_epoch",
    "remaining_noise_multiplier",
    "rounded_l2_bound",
    "stochastic_round",
]
