"""Firm halves of the analytics queries, by name: each computes a firm's raw vector for one step.

The caller clips it with `silobridge.analytics.clip_answer` before it enters a secure sum.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from clients.analytics import anomaly, apriori, kmeans, logistic
from clients.data import FirmData
from silobridge.analytics import QueryStep

LocalHalf = Callable[[QueryStep, FirmData], np.ndarray]

LOCAL_HALVES: dict[str, LocalHalf] = {
    "logistic_regression": logistic.local,
    "kmeans": kmeans.local,
    "frequent_itemsets": apriori.local,
    "anomaly_detection": anomaly.local,
}
