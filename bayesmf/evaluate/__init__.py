"""Evaluation: rating metrics, ranking metrics and calibration (backend-free)."""

from bayesmf.evaluate.rating import mae, rmse

__all__ = ["rmse", "mae"]
