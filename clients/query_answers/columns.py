"""Reading a query's column from a firm's validated tables."""

from __future__ import annotations

import numpy as np

from silobridge.clients.data import FirmData
from silobridge.errors import DataError


def column_values(data: FirmData, table: str, column: str) -> np.ndarray:
    """The column as float64; a firm that holds no such table has no rows (it contributes zeros)."""
    frame = data.demand if table == "demand" else data.risk if table == "risk" else None
    if frame is None:
        return np.zeros(0)
    if column not in frame.columns:
        raise DataError(data.firm_id, f"the {table} table has no column '{column}'")
    return frame[column].to_numpy(dtype=np.float64)


def row_count(data: FirmData, table: str) -> int:
    frame = data.demand if table == "demand" else data.risk if table == "risk" else None
    return 0 if frame is None else len(frame)
