"""Array-namespace dispatch for code that runs on numpy or JAX arrays alike."""

from __future__ import annotations

import numpy as np

__all__ = ["array_namespace"]


def array_namespace(x):
    """``numpy`` for numpy arrays and scalars, ``jax.numpy`` for anything else (JAX
    arrays and tracers)."""
    if isinstance(x, (np.ndarray, np.generic)):
        return np
    import jax.numpy as jnp

    return jnp
