r"""Blocked per-row Gaussian solves shared by the Gibbs sampler and ALS (MAP).

Both BPMF Gibbs and alternating least squares need, for every row :math:`r` of one side
(every user, or every item) with observation set :math:`O_r`, the Gaussian

.. math::

    P_r = \Lambda_0 + \tau \sum_{j\in O_r} x_{c(j)} x_{c(j)}^\top ,\qquad
    h_r = \eta_0 + \tau \sum_{j\in O_r} y_j\, x_{c(j)} ,\qquad
    z_r \mid \cdot \sim \mathcal N\!\left(P_r^{-1} h_r,\; P_r^{-1}\right)

(:math:`\Lambda_0` = ``prior_prec``, :math:`\eta_0` = ``prior_shift``, :math:`x_c` the rows
of the other side's design ``X``). ALS takes the mean (ridge solution), Gibbs a draw.

Layout (:class:`RowBlocks`, built once per fit with numpy): the observations of each row
are cut into **segments** of at most ``max_width`` observations; segments are bucketed by
length into power-of-two widths and padded. Per bucket the work is one gather
``X[cols] -> (segments, width, d)`` and two batched GEMMs (Gram ``(segments, d, d)`` and
right-hand side ``(segments, d)``), scatter-added into the per-row ``P`` (``n_rows, d, d``)
and ``h``; then one batched Cholesky. Padding points at an all-zero extra row of ``X``, so
it contributes nothing and no mask multiply is needed. Peak memory is
``O(nnz * d + n_rows * d^2)``; an ``nnz x d x d`` tensor is never formed.

A draw uses :math:`P_r = L L^\top` and
:math:`z_r = L^{-\top}(L^{-1} h_r + \varepsilon)`, :math:`\varepsilon\sim\mathcal N(0, I)`,
whose covariance is :math:`L^{-\top}L^{-1} = P_r^{-1}`.

**Conditioning.** In float32 the Cholesky of an ill-conditioned :math:`P_r` can fail
(NaN). Rows whose factor is not finite are refactored with a diagonal jitter of
``1e-4 * mean(diag P_r)``; the retry is computed only when some row failed
(``lax.cond``). For exact work on near-singular problems pass float64 arrays with
``jax.config.update("jax_enable_x64", True)`` set **by the caller** (the library never sets
global config); the computation follows the dtype of ``X``.

**Array namespace.** :func:`row_precisions` and the conditional mean of :func:`solve_rows`
also run in numpy (``xp=numpy``): no XLA compile, which is what a single small fit needs
(ALS on MovieLens-100K runs in about 0.15 s in numpy, while compiling its JAX sweep takes
over a second). The numpy mean is solved by LU (``numpy.linalg.solve``) in
the dtype of ``X``; draws (``key``) need JAX.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

__all__ = ["RowBlocks", "build_row_blocks", "solve_rows", "row_precisions",
           "gaussian_from_precision"]


class RowBlocks(NamedTuple):
    """Static bucket layout of the observations of ONE side (a JAX pytree of int arrays).

    ``seg_row[b] (S_b,)``: the row each segment of bucket ``b`` belongs to
    (non-decreasing: the segments of a split row are adjacent);
    ``seg_cols[b] (S_b, W_b)``: other-side indices (padding = ``n_other``, an all-zero row
    appended to ``X``); ``seg_obs[b] (S_b, W_b)``: observation indices into ``y``
    (padding = 0, harmless because the matching design row is zero);
    ``degree (n_rows,)``: observations per row (its length fixes ``n_rows`` statically);
    ``n_other (1,)`` array whose *shape* is unused and value is the other side's size
    (checked eagerly only).
    """

    seg_row: tuple
    seg_cols: tuple
    seg_obs: tuple
    degree: np.ndarray
    n_other: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.degree.shape[0])

    @property
    def widths(self) -> tuple:
        return tuple(int(c.shape[1]) for c in self.seg_cols)


def build_row_blocks(rows: np.ndarray, cols: np.ndarray, n_rows: int, *,
                     n_other: int | None = None, max_width: int = 128,
                     min_width: int = 4) -> RowBlocks:
    """Group observation ``j`` (row ``rows[j]``, other-side index ``cols[j]``) by row.

    Built once per fit with numpy. ``rows[j]``/``cols[j]`` are in the original observation
    order; ``y`` passed to :func:`solve_rows` must use the same order. Rows with more than
    ``max_width`` observations are split into several segments (summed afterwards); the
    remaining segment lengths are rounded up to a power of two (at least ``min_width``).
    ``n_other`` defaults to ``cols.max() + 1``.
    """
    rows = np.asarray(rows)
    cols = np.asarray(cols)
    if rows.ndim != 1 or rows.shape != cols.shape:
        raise ValueError("rows and cols must be 1-d arrays of equal length")
    n_rows = int(n_rows)
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise ValueError(f"row indices must lie in [0, {n_rows})")
    if n_other is None:
        n_other = int(cols.max()) + 1 if cols.size else 0
    if cols.size and (cols.min() < 0 or cols.max() >= n_other):
        raise ValueError(f"col indices must lie in [0, {n_other})")
    max_width = int(max_width)
    if max_width < 1 or min_width < 1:
        raise ValueError("max_width and min_width must be >= 1")
    order = np.argsort(rows, kind="stable")
    srows = rows[order]
    degree = np.bincount(rows, minlength=n_rows).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(degree)])
    # position of each sorted observation within its row, then its segment / slot
    pos = np.arange(rows.size) - start[srows]
    seg_in_row = pos // max_width
    slot = pos % max_width
    nseg_row = -(-degree // max_width)  # ceil
    seg_base = np.concatenate([[0], np.cumsum(nseg_row)])
    seg_id = seg_base[srows] + seg_in_row  # global segment id per sorted observation
    n_seg = int(seg_base[-1])
    seg_row = np.repeat(np.arange(n_rows), nseg_row)
    seg_len = np.bincount(seg_id, minlength=n_seg)
    width = np.maximum(min_width, 2 ** np.ceil(np.log2(np.maximum(seg_len, 1))).astype(np.int64))
    width = np.minimum(width, max(max_width, 1))
    # a full-width segment keeps max_width even if it is not a power of two
    width = np.where(seg_len == max_width, max_width, width)
    out_row, out_cols, out_obs = [], [], []
    for w in np.unique(width):
        segs = np.flatnonzero(width == w)
        local = np.full(n_seg, -1, np.int64)
        local[segs] = np.arange(segs.size)
        sel = local[seg_id] >= 0
        li = local[seg_id[sel]]
        c = np.full((segs.size, int(w)), n_other, np.int32)
        o = np.zeros((segs.size, int(w)), np.int32)
        c[li, slot[sel]] = cols[order[sel]]
        o[li, slot[sel]] = order[sel]
        out_row.append(seg_row[segs].astype(np.int32))
        out_cols.append(c)
        out_obs.append(o)
    return RowBlocks(tuple(out_row), tuple(out_cols), tuple(out_obs),
                     degree.astype(np.int32), np.asarray([n_other], np.int32))


def _scatter_add(a, idx, vals):
    """``a[idx] += vals`` with repeated indices accumulated (functional for JAX). ``idx``
    is a bucket's ``seg_row``: non-decreasing, so repeats are adjacent."""
    if isinstance(a, np.ndarray):
        if not np.any(idx[1:] == idx[:-1]):   # no repeats: plain fancy-index add, 10x faster
            a[idx] += vals
        else:
            np.add.at(a, idx, vals)
        return a
    return a.at[idx].add(vals)


def row_precisions(blocks: RowBlocks, X, y, tau, prior_prec, prior_shift, *, xp=jnp,
                   dense_gram=None, rhs=None):
    r"""``(P, h)`` of every row: ``P (n_rows, d, d)``, ``h (n_rows, d)`` (see module docs),
    computed in the array namespace ``xp`` (``jax.numpy`` or ``numpy``).

    ``tau`` is one precision for every observation (a scalar: the Gaussian likelihood,
    the fast path) or one weight per observation ``(nnz,)`` (Pólya-Gamma and other
    augmentations, confidence weights): then :math:`P_r = \Lambda_0 + \sum_j w_j x x^\top`,
    :math:`h_r = \eta_0 + \sum_j w_j y_j x`. ``prior_prec`` ``(d, d)`` or per row
    ``(n_rows, d, d)``, ``prior_shift`` ``(d,)`` or per row ``(n_rows, d)`` (a per-row
    prior mean, e.g. from side information); ``dense_gram (d, d)`` is added to every
    :math:`P_r` (e.g. the all-items Gram :math:`Y^\top Y` of implicit ALS).

    ``rhs (nnz,)`` (with per-observation weights only) replaces the products
    :math:`w_j y_j` in :math:`h_r` by given values: :math:`h_r = \eta_0 + \sum_j
    \mathrm{rhs}_j x_{c(j)}` while :math:`P_r` keeps the weights :math:`w_j`. A
    full-matrix model whose unobserved pairs are pseudo-observations needs it: its
    observed pairs enter as corrections to the dense terms, with a Gram weight
    :math:`w_j - w_0` and a right-hand side :math:`w_j y_j - w_0 y_{0j}` that is not a
    product of the two (``y`` is then ignored)."""
    X = xp.asarray(X)
    dt = X.dtype
    n, d = blocks.degree.shape[0], X.shape[1]
    Xp = xp.concatenate([X, xp.zeros((1, d), dt)], axis=0)
    y = xp.asarray(y, dt)
    weighted = xp.ndim(tau) > 0
    if weighted:
        w = xp.asarray(tau, dt)
        y = xp.asarray(rhs, dt) if rhs is not None else y * w
    elif rhs is not None:
        raise ValueError("row_precisions: rhs= needs per-observation weights")
    G = xp.zeros((n, d, d), dt)
    h = xp.zeros((n, d), dt)
    for r, c, o in zip(blocks.seg_row, blocks.seg_cols, blocks.seg_obs):
        if xp is np:                    # take + batched BLAS: 3x faster than [] + einsum
            Xg, yg = np.take(Xp, c, axis=0), np.take(y, o)
            Xw = Xg * np.take(w, o)[..., None] if weighted else Xg
            Gs = np.matmul(Xw.transpose(0, 2, 1), Xg)
            hs = np.matmul(yg[:, None, :], Xg)[:, 0]
        else:
            Xg, yg = Xp[c], y[o]        # (S, W, d), (S, W)
            Xw = Xg * w[o][..., None] if weighted else Xg
            Gs = jnp.einsum("swd,swe->sde", Xw, Xg)
            hs = jnp.einsum("sw,swd->sd", yg, Xg)
        G = _scatter_add(G, r, Gs)
        h = _scatter_add(h, r, hs)
    if weighted:
        P = xp.asarray(prior_prec, dt) + G
        h = xp.asarray(prior_shift, dt) + h
    else:
        tau = xp.asarray(tau, dt)
        P = xp.asarray(prior_prec, dt) + tau * G
        h = xp.asarray(prior_shift, dt) + tau * h
    if dense_gram is not None:
        P = P + xp.asarray(dense_gram, dt)
    return P, h


def _safe_cholesky(P):
    """Batched Cholesky with a jittered retry for rows whose factor is not finite."""
    return _retry_bad_factors(P, jnp.linalg.cholesky(P))


@jax.custom_batching.custom_vmap
def _retry_bad_factors(P, L):
    """Refactor ``P + 1e-4 * mean(diag P) * I`` where ``L`` is not finite; the retry runs
    only when some factor failed (``lax.cond``)."""
    d = P.shape[-1]
    eye = jnp.eye(d, dtype=P.dtype)
    scale = jnp.trace(P, axis1=-2, axis2=-1)[..., None, None] / d
    bad = ~jnp.all(jnp.isfinite(L), axis=(-2, -1))

    def fix(L):
        L2 = jnp.linalg.cholesky(P + 1e-4 * scale * eye)
        return jnp.where(bad[..., None, None], L2, L)

    return lax.cond(jnp.any(bad), fix, lambda L: L, L)


@_retry_bad_factors.def_vmap
def _retry_bad_factors_vmap(axis_size, in_batched, P, L):
    # Under vmap (vectorised chains) a lax.cond with a batched predicate becomes a select
    # that computes the retry every time; the function works on any leading batch axes,
    # so call it on the stacked arrays with one predicate for the whole batch instead.
    P, L = (x if b else jnp.broadcast_to(x, (axis_size,) + x.shape)
            for x, b in zip((P, L), in_batched))
    return _retry_bad_factors(P, L), True


def solve_rows(blocks: RowBlocks, X, y, tau, prior_prec, prior_shift, key=None, *, xp=jnp,
               dense_gram=None, rhs=None):
    """Conditional mean (``key=None``) or a draw of every row's Gaussian.

    For every row ``r`` with observation set ``O_r``::

        P_r = prior_prec + tau * sum_{j in O_r} x_{c(j)} x_{c(j)}^T        (d x d)
        h_r = prior_shift + tau * sum_{j in O_r} y_j x_{c(j)}               (d,)

    returns ``Z (n_rows, d)`` with ``Z_r = P_r^{-1} h_r`` when ``key`` is None (the
    conditional mean, i.e. the ALS ridge solution) or ``Z_r ~ N(P_r^{-1} h_r, P_r^{-1})``.
    ``X (n_other, d)``, ``y (nnz,)`` in the original observation order, ``tau`` scalar or
    per-observation weights ``(nnz,)`` (then ``tau * ...`` reads ``sum_j w_j ...``),
    ``prior_prec (d, d)`` or ``(n_rows, d, d)``, ``prior_shift (d,)`` or ``(n_rows, d)``,
    ``dense_gram (d, d)`` added to every ``P_r``, ``rhs`` (:func:`row_precisions`). Rows without observations get the prior
    ``N(prior_prec^{-1} prior_shift, prior_prec^{-1})``. jit-compatible (``blocks`` may be
    a traced argument or a closed-over constant); dtype follows ``X``. ``xp=numpy``
    computes the mean in numpy (no compile); draws need ``xp=jax.numpy``.
    """
    if xp is np:
        if key is not None:
            raise ValueError("solve_rows: draws (key=...) need xp=jax.numpy")
        P, h = row_precisions(blocks, X, y, tau, prior_prec, prior_shift, xp=np,
                              dense_gram=dense_gram, rhs=rhs)
        return np.linalg.solve(P, h[..., None])[..., 0]
    P, h = row_precisions(blocks, X, y, tau, prior_prec, prior_shift, dense_gram=dense_gram,
                          rhs=rhs)
    return gaussian_from_precision(P, h, key)


def gaussian_from_precision(P, h, key=None, noise=None):
    """Mean ``P^{-1} h`` (``key=None``) or a draw of ``N(P^{-1} h, P^{-1})`` for one or a
    batch of precisions ``P (..., d, d)`` and shifts ``h (..., d)``: with ``P = L L^T``,
    ``z = L^{-T}(L^{-1} h + eps)``, ``eps ~ N(0, I)`` (jittered Cholesky retry as above).

    ``noise (..., d, 1)``: the standard normal ``eps`` given by the caller instead of drawn
    from ``key`` (the sharded sampler, :mod:`bayesmf.infer.sharded`, slices it out of the
    draw of all rows so that the draws do not depend on the number of devices)."""
    L = _safe_cholesky(P)
    w = lax.linalg.triangular_solve(L, h[..., None], left_side=True, lower=True)
    if noise is not None:
        w = w + jnp.asarray(noise, w.dtype)
    elif key is not None:
        w = w + jax.random.normal(key, w.shape, w.dtype)
    z = lax.linalg.triangular_solve(L, w, left_side=True, lower=True, transpose_a=True)
    return z[..., 0]
