r"""Random variates and reductions shared by the samplers of every likelihood (pure JAX).

:func:`standard_gamma` is written out (Marsaglia & Tsang) because ``jax.random.gamma``
costs seconds of XLA compile time in every sampler that uses it; :func:`long_sum` limits
float32 round-off on long vectors.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["standard_gamma", "gamma_draw", "long_sum"]


def long_sum(x):
    """Two-level float sum (rows of 4096) to limit float32 round-off on long vectors."""
    n = x.shape[0]
    b = 4096
    if n <= b:
        return jnp.sum(x)
    pad = (-n) % b
    return jnp.sum(jnp.sum(jnp.pad(x, (0, pad)).reshape(-1, b), axis=1))


def standard_gamma(key, shape, dtype=jnp.float32):
    r"""Exact Gamma(``shape``, rate 1) variates (vector ``shape``) by Marsaglia & Tsang (2000).

    For :math:`a \ge 1`: :math:`d = a - 1/3`, :math:`c = 1/\sqrt{9d}`; propose
    :math:`x\sim\mathcal N(0,1)`, :math:`v=(1+cx)^3`, accept when :math:`v>0` and
    :math:`\log u < x^2/2 + d - dv + d\log v` (:math:`u\sim U(0,1)`); return :math:`dv`.
    The bracket is evaluated as :math:`d\,(3(\log(1+t) - t) - 3t^2 - t^3)`, :math:`t = cx`,
    which stays accurate in float32 for shapes in the hundreds of thousands
    (:math:`\tau`'s shape is about half the number of ratings).
    For :math:`a<1`, :math:`G_a = G_{a+1} U^{1/a}`. A ``while_loop`` repeats the proposal
    for the entries not yet accepted (acceptance > 95% per round). Written out because
    ``jax.random.gamma`` costs seconds of XLA compile time in every sampler that uses it.
    """
    a = jnp.asarray(shape, dtype)
    small = a < 1
    aa = jnp.where(small, a + 1, a)
    d = aa - 1.0 / 3.0
    c = 1.0 / jnp.sqrt(9.0 * d)
    k_loop, k_boost = jax.random.split(key)

    def cond(carry):
        return ~jnp.all(carry[1])

    def body(carry):
        out, done, i = carry
        kx, ku = jax.random.split(jax.random.fold_in(k_loop, i))
        x = jax.random.normal(kx, a.shape, dtype)
        u = jax.random.uniform(ku, a.shape, dtype, minval=jnp.finfo(dtype).tiny)
        t = c * x
        pos = t > -1.0
        tt = jnp.where(pos, t, 0.0)
        # d (1 - v + log v) with v = (1+t)^3, written without cancellation for large d:
        # 1 - v + log v = 3 (log1p(t) - t) - 3 t^2 - t^3
        thr = 0.5 * x * x + d * (3.0 * (jnp.log1p(tt) - tt) - 3.0 * tt * tt - tt * tt * tt)
        ok = pos & (jnp.log(u) < thr)
        out = jnp.where(ok & ~done, d * (1.0 + tt) ** 3, out)
        # "done" is derived from the stored value itself, so the two can never disagree
        # (XLA may evaluate a duplicated comparison with different rounding)
        return out, out > 0, i + 1

    out, _, _ = lax.while_loop(cond, body, (jnp.zeros_like(a), jnp.zeros(a.shape, bool), 0))
    ub = jax.random.uniform(k_boost, a.shape, dtype, minval=jnp.finfo(dtype).tiny)
    return jnp.where(small, out * ub ** (1.0 / jnp.where(small, a, 1.0)), out)


def gamma_draw(key, a, b, dt):
    """One draw from Gamma(shape ``a``, rate ``b``)."""
    return standard_gamma(key, jnp.asarray(a, dt), dt) / b
