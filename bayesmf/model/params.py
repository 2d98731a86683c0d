"""The parameter tuple of the shared model (no backend import: usable by numpy code)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["Params", "zeros_params"]


class Params(NamedTuple):
    """One parameter set. Shapes: ``mu ()``, ``bu (N,)``, ``bi (M,)``, ``U (N,k)``,
    ``V (M,k)``, ``tau ()``. Draw collections add leading ``(chain, draw)`` axes.
    Works as a JAX pytree and with numpy arrays alike."""

    mu: object
    bu: object
    bi: object
    U: object
    V: object
    tau: object


def zeros_params(n_users: int, n_items: int, rank: int, dtype=np.float32,
                 tau: float = 1.0) -> Params:
    return Params(np.zeros((), dtype), np.zeros(n_users, dtype), np.zeros(n_items, dtype),
                  np.zeros((n_users, rank), dtype), np.zeros((n_items, rank), dtype),
                  np.asarray(tau, dtype))
