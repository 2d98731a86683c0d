"""Rating-prediction metrics (pure numpy)."""

from __future__ import annotations

import numpy as np

from bayesmf.errors import DataError

__all__ = ["rmse", "mae"]


def _pair(y, yhat):
    y = np.asarray(y, np.float64)
    yhat = np.asarray(yhat, np.float64)
    if y.shape != yhat.shape or y.ndim != 1:
        raise DataError(f"y and prediction must be 1-D of equal length, got {y.shape} and {yhat.shape}")
    if len(y) == 0:
        raise DataError("cannot compute a metric on zero ratings")
    return y, yhat


def rmse(y, yhat) -> float:
    """Root mean squared error ``sqrt(mean((y - yhat)^2))``."""
    y, yhat = _pair(y, yhat)
    return float(np.sqrt(np.mean((y - yhat) ** 2)))


def mae(y, yhat) -> float:
    """Mean absolute error ``mean(|y - yhat|)``."""
    y, yhat = _pair(y, yhat)
    return float(np.mean(np.abs(y - yhat)))
