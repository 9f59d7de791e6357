"""Firm half of federated logistic regression: this firm's gradient and Hessian at the given coefficients.

The firm maps its risk features onto [-1, 1] by the public ranges, keeps at most `max_records` rows
(its most recent), and sends sum (y - p) x, the upper triangle of sum p (1 - p) x x^T and its row
count; p is the model's probability of a disruption at the step's coefficients.
"""

from __future__ import annotations

import numpy as np

from silobridge.clients.data import FirmData
from silobridge.contract.iterative_params import LogisticStep
from silobridge.contract.query_params import step_params
from silobridge.contract.query_protocol import QueryStep
from silobridge.contract.ranges import to_symmetric
from silobridge.errors import ProtocolError


def design(data: FirmData, step: LogisticStep, *, firm: str) -> tuple[np.ndarray, np.ndarray]:
    """(X with an intercept column, y) from the firm's risk table, scaled and capped as the query says."""
    query = step.query
    if data.risk is None:
        return np.zeros((0, len(query.features) + 1)), np.zeros(0)
    missing = [name for name in query.features if name not in data.risk.columns]
    if missing:
        raise ProtocolError(f"query asks for risk features {missing} this firm's table lacks", firm=firm)
    rows = data.risk.tail(query.max_records)  # the table is sorted by date: the most recent rows
    features = to_symmetric(rows[list(query.features)].to_numpy(dtype=np.float64), query.feature_ranges())
    x = np.column_stack([np.ones(len(rows)), features])
    return x, rows["disrupted"].to_numpy(dtype=np.float64)


def newton_terms(x: np.ndarray, y: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Gradient of the log-likelihood, upper triangle of the (negated) Hessian, and the count."""
    p = 1.0 / (1.0 + np.exp(-(x @ beta)))
    gradient = x.T @ (y - p)
    hessian = (x * (p * (1.0 - p))[:, None]).T @ x
    return np.concatenate([gradient, hessian[np.triu_indices(x.shape[1])], [float(len(y))]])


def local(step: QueryStep, data: FirmData) -> np.ndarray:
    """The vector this firm contributes to one Newton step (zeros if it holds no risk table)."""
    parsed = step_params(LogisticStep, step, firm=data.firm_id)
    x, y = design(data, parsed, firm=data.firm_id)
    return newton_terms(x, y, np.asarray(parsed.coefficients, dtype=np.float64))
