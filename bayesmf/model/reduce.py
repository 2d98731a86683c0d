r"""Global reductions of the samplers' sufficient statistics, with an injectable reduce.

Every conditional of the Gibbs sweep that needs a statistic over *all* observations or
*all* rows of a side -- :math:`\sum_u b_u^2` for a bias precision, :math:`\bar F` and
:math:`\sum_r (F_r-\bar F)(F_r-\bar F)^\top` for the factor prior's hyper-step, the
weighted residual sums of :math:`\mu`, the SSE of :math:`\tau`, the per-level sums of the
ordinal cutpoint update, the log likelihood and its scale derivatives of the latent scale
move, the train RMSE -- computes it with the functions of this module instead of a bare
``jnp.sum``:

* :func:`total` ``(x, axis)``: the sum of a local array (the shard's observations or rows);
* :func:`count` ``(n)``: a number of local observations or rows;
* :func:`reduce` ``(stat)``: a pytree of already-summed local statistics.

Outside :func:`sharded` they are the plain local sums (the statistics of the whole data,
bit for bit what ``jnp.sum`` gives). Inside ``with sharded("shard"):`` -- a context active
while a kernel is *traced* under ``shard_map`` / ``pmap`` / ``vmap`` with that axis name,
each shard holding a slice of the observations or rows -- every local sum is followed by
``lax.psum`` over the axis, so that each shard's conditional sees the statistics of all
shards and (with the same key on every shard) draws the same global parameters. Means are
formed from global sums and global counts, and centred second moments in two passes
(global mean first), so the sharded statistics are the unsharded ones up to float
round-off. This is the seam the sharded sampler (one chain over devices and hosts) plugs
into; ``tests/test_reduce.py`` checks every global conditional against its sharded form.
"""

from __future__ import annotations

from contextlib import contextmanager

__all__ = ["sharded", "axis_name", "reduce", "total", "count", "mean"]

_AXES: list = []


@contextmanager
def sharded(axis_name_: str | None):
    """Within the block (while tracing), global statistics are ``psum``-ed over
    ``axis_name_`` (None: no-op)."""
    _AXES.append(axis_name_)
    try:
        yield
    finally:
        _AXES.pop()


def axis_name() -> str | None:
    """The axis the statistics are reduced over now (None: unsharded)."""
    return _AXES[-1] if _AXES else None


def reduce(stat):
    """The injectable reduce: a pytree of local statistics -> global ones."""
    ax = axis_name()
    if ax is None:
        return stat
    from jax import lax

    return lax.psum(stat, ax)


def total(x, axis=None, long: bool = False):
    """Global sum of ``x`` over ``axis`` (all axes by default); ``long=True`` sums a long
    1-d vector in two levels (:func:`bayesmf.model.random.long_sum`)."""
    import jax.numpy as jnp

    if long and axis is None and x.ndim == 1:
        from bayesmf.model.random import long_sum

        s = long_sum(x)
    else:
        s = jnp.sum(x, axis=axis)
    return reduce(s)


def count(n):
    """Global count from a local one (a Python int when unsharded)."""
    if axis_name() is None:
        return n
    import jax.numpy as jnp

    return reduce(jnp.asarray(n))


def mean(x, axis=0):
    """Global mean over ``axis`` (the rows or observations)."""
    return total(x, axis) / count(x.shape[axis])
