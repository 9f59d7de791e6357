"""The layout of released sufficient statistics, shared by the firms (who build them) and the coordinator.

A symmetric matrix travels as its upper triangle with the diagonal, row by row; a linear model's
release is [triu(X^T X), X^T Y row-major] and a Newton step's is [gradient, triu(Hessian)].
"""

from __future__ import annotations

import numpy as np

from silobridge.errors import ConfigError


def triu_size(dim: int) -> int:
    return dim * (dim + 1) // 2


def triu_vector(matrix: np.ndarray) -> np.ndarray:
    """The upper triangle (with the diagonal) of a symmetric matrix, row by row: d(d+1)/2 values."""
    return matrix[np.triu_indices(matrix.shape[0])]


def symmetric_from_triu(vector: np.ndarray, dim: int) -> np.ndarray:
    """The symmetric matrix whose upper triangle `triu_vector` gave."""
    if vector.size != triu_size(dim):
        raise ConfigError(f"an upper triangle of a {dim}x{dim} matrix has {triu_size(dim)} values, got {vector.size}")
    out = np.zeros((dim, dim))
    out[np.triu_indices(dim)] = vector
    return out + np.triu(out, 1).T


def regression_size(dim: int, outputs: int) -> int:
    return triu_size(dim) + dim * outputs


def split_regression(vector: np.ndarray, dim: int, outputs: int) -> tuple[np.ndarray, np.ndarray]:
    """(X^T X, X^T Y) back from [triu(X^T X), X^T Y] (or a noised sum of such vectors)."""
    if vector.size != regression_size(dim, outputs):
        raise ConfigError(f"expected {regression_size(dim, outputs)} sufficient statistics, got {vector.size}")
    tri = triu_size(dim)
    return symmetric_from_triu(vector[:tri], dim), vector[tri:].reshape(dim, outputs)


def newton_size(dim: int) -> int:
    return dim + triu_size(dim)


def split_newton(vector: np.ndarray, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(gradient, Hessian) back from [gradient, triu(Hessian)] (or a noised sum of such vectors)."""
    if vector.size != newton_size(dim):
        raise ConfigError(f"expected {newton_size(dim)} Newton statistics, got {vector.size}")
    return vector[:dim], symmetric_from_triu(vector[dim:], dim)


LINEAR_SEGMENT = "linear/statistics"
"""The segment a firm's sufficient statistics travel in (one model per sum)."""
LINEAR_REQUEST = "linear"
"""The ConfigRecord of a linear-family request: which model ('demand' or 'risk')."""
LINEAR_COEF = "linear_coef"
"""The ArrayRecord carrying the current risk coefficients of a Newton step."""
