"""The names coordinator and firms must spell alike: Flower message types and the segments of a sum.

A message type is Flower's "<category>.<action>" (`train`, `evaluate` or `query`, with an optional
custom action); the coordinator sends it and the ClientApp registers a handler under it. A segment
names one released quantity inside a sum's vector layout; the server lays it out, the firm fills
it and the coordinator reads it back. Spelled once here, a typo on one side is an import error
rather than a firm that never answers. (Record keys, which only the Flower glue sees, live in
`silobridge.federation.records`.)
"""

from __future__ import annotations

# -- Flower message types ---------------------------------------------------------------------------

QUERY_MANIFEST = "query.manifest"  # who a firm is and which models it can train
QUERY_MOMENTS = "query.moments"  # the risk features' moments, for the normaliser
TRAIN_BASELINES = "train.baselines"  # local-only and naive baselines' test statistics
TRAIN = "train"  # one FedAvg round
EVALUATE = "evaluate"  # the final global models' test statistics
TRAIN_LINEAR = "train.linear"  # sufficient statistics of a linear-family model (or one Newton step)
EVALUATE_EFFICIENCY = "evaluate.efficiency"  # efficiency sums before and after the federation
QUERY_ANALYTICS = "query.analytics"  # one step of an analytics query
QUERY_SECAGG_ADVERTISE = "query.secagg_advertise"  # secure aggregation: public keys (session set-up)
QUERY_SECAGG_SHARE = "query.secagg_share"  # encrypted key shares (session set-up; the masked input rides
# on the release's own message)
QUERY_SECAGG_UNMASK = "query.secagg_unmask"  # the survivors' shares that recover a sum's masks


def split_message_type(message_type: str) -> tuple[str, str | None]:
    """("query", "manifest") from "query.manifest"; ("train", None) from "train": what ClientApp decorators take."""
    category, _, action = message_type.partition(".")
    return category, action or None


# -- segment names ------------------------------------------------------------------------------------


def update_segment(kind: str) -> str:
    """A model's summed weighted change (FedAvg's numerator)."""
    return f"{kind}/update"


def weight_segment(kind: str) -> str:
    """A model's summed weight (FedAvg's denominator)."""
    return f"{kind}/weight"


def loss_segment(kind: str) -> str:
    """A model's summed weighted training loss (plain runs only)."""
    return f"{kind}/loss"


def eval_segment(kind: str) -> str:
    """A model's test statistics, slotted by group."""
    return f"{kind}/eval"


RISK_MOMENTS = "risk_moments"  # the risk features' count, sums and sums of squares (the normaliser's input)
DEMAND_LOCAL_ONLY = "demand/local_only"  # each firm's own demand model, scored on its own test data
DEMAND_NAIVE = "demand/naive"  # the seasonal naive forecast, scored alike
RISK_LOCAL_ONLY = "risk/local_only"  # each firm's own risk model
