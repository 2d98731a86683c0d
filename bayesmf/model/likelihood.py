r"""Pure JAX likelihood of the shared model, over observed entries only.

.. math::

    \hat r_{ui} = \mu + b_u + b_i + U_u^\top V_i, \qquad
    \log p(r \mid \theta) = \sum_{(u,i)\in\Omega}
        \tfrac12\log\tfrac{\tau}{2\pi} - \tfrac{\tau}{2}(r_{ui}-\hat r_{ui})^2

Switched-off terms of the :class:`~bayesmf.model.spec.ModelSpec` are simply zero arrays
in :class:`Params`, so plain PMF (no biases) runs through the same code.
These functions work on one parameter set; ``jax.vmap`` them over draws.
:func:`predict_mean` and :func:`sse` follow the array namespace of the parameters, so they
also evaluate numpy parameters in numpy (the compile-free ALS engine of
:mod:`bayesmf.infer.map`).
"""

from __future__ import annotations

import jax.numpy as jnp

from bayesmf.model.linear import eta
from bayesmf.model.params import Params, zeros_params

__all__ = ["Params", "predict_mean", "log_likelihood", "pointwise_log_likelihood",
           "sse", "zeros_params"]


def predict_mean(p: Params, users, items):
    r""":math:`\hat r = \mu + b_u + b_i + U_u \cdot V_i` for index arrays ``users``, ``items``
    (:func:`bayesmf.model.linear.eta`)."""
    return eta(p.mu, p.bu, p.bi, p.U, p.V, users, items)


def sse(p: Params, users, items, ratings):
    """Sum of squared residuals over the given observed entries."""
    r = ratings - predict_mean(p, users, items)
    return (r * r).sum()


def pointwise_log_likelihood(p: Params, users, items, ratings):
    """Per-observation Gaussian log density ``log N(r | r_hat, 1/tau)``."""
    r = ratings - predict_mean(p, users, items)
    return 0.5 * (jnp.log(p.tau) - jnp.log(2.0 * jnp.pi)) - 0.5 * p.tau * r * r


def log_likelihood(p: Params, users, items, ratings):
    """Total log likelihood over the observed entries."""
    return jnp.sum(pointwise_log_likelihood(p, users, items, ratings))
