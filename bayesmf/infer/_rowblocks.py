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

**Row parts.** ``build_row_blocks(..., parts=P)`` also cuts the rows into ``P``
contiguous ranges balanced by work (observations plus a Cholesky per row,
:func:`partition_rows`), each with its own buckets (local rows, global observation
indices). :func:`solve_rows` then runs gather -> Gram -> Cholesky -> solve once per part:
``P`` independent chains of operations that XLA's CPU runtime runs concurrently (a batched
product of small matrices is single-threaded there). The noise of a draw is drawn for all
rows at once and sliced per part, so the draws are those of the unpartitioned layout up to
float rounding. Measured on the ML-1M subset (2-core CPU, rank 32, one side's draw): 0.091 ->
0.067 s with 4 parts. :func:`row_precisions` concatenates the parts.

**Rows of few observations.** A row's Cholesky factor costs :math:`d^3/3` however few
observations it has, and XLA's batched small-matrix Cholesky is slow on CPU (about 35 us
for ``d = 65``, 10 us for ``d = 33``): on a long-tail catalogue (Last.fm: 84% of 17,632
artists have at most 4 listeners) the factors of the tail rows were most of the sweep.
When the prior precision is shared by the rows (``prior_prec (d, d)``; plus
``dense_gram``), :math:`B = \Lambda_0 + G_{dense} = LL^\top` is factored **once** and a
row with :math:`m \le` ``low_width`` observations, :math:`P_r = B + \tilde W_r^\top\tilde
W_r` (:math:`\tilde W_r` the rows :math:`\sqrt{w_j}x_j`), is solved and drawn through the
Woodbury identity with an :math:`m \times m` system (:func:`_woodbury_rows`): exactly the
same conditional distribution, other random numbers. ``build_row_blocks(...,
low_width=W)`` lays such rows out separately (:class:`LowRows`; the other rows keep the
layout above, parts included); the Gibbs sampler chooses ``W`` per side
(:func:`low_width_for`; ``low_width=0`` turns it off). Needs the weights :math:`w_j \ge 0`
(every family's are: precisions, Pólya-Gamma draws, confidence excesses
:math:`\tau(c - 1)` with :math:`c \ge 1`). Measured in ``benchmarks/results/low_rows.md``.

**Subspace draws** (:func:`solve_rows_subspace`, the Gibbs option ``row_block``). A
row's coordinates are cut into blocks of width ``w`` and each block is drawn from its
exact conditional given the others, with a running prediction per observation; the
Gram work falls from :math:`\mathrm{nnz}\,d^2` to :math:`\mathrm{nnz}\,d\,w` and the
Cholesky factors from one :math:`d\times d` to :math:`d/w` of :math:`w\times w` per
row, at the price of a few extra memory-bound passes over the observations (gather,
running prediction) and slower mixing per sweep where a row's coordinates are
correlated. It pays at high rank (measured in ``benchmarks/results/row_block.md``).
With rows of few observations (``low_width``) those are drawn whole by the Woodbury
path and the others by blocks.

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

from bayesmf.errors import SpecError

__all__ = ["RowBlocks", "LowRows", "build_row_blocks", "remap_blocks", "partition_rows",
           "resolve_row_parts", "resolve_low_width", "low_width_for",
           "solve_rows", "solve_rows_subspace", "dim_blocks", "check_row_block", "row_precisions",
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
    #: ``()`` or the :class:`RowBlocks` of contiguous row ranges (local rows, global
    #: observation indices) that replace the buckets above (then empty); each part's row
    #: count is its ``degree`` length, so the ranges are static (module docs, **Row parts**)
    parts: tuple = ()
    #: ``()`` or a :class:`LowRows`: the rows of few observations drawn through the
    #: Woodbury identity, the others in its ``high`` blocks (the buckets above are then
    #: empty; module docs, **Rows of few observations**)
    low: tuple = ()

    @property
    def n_rows(self) -> int:
        return int(self.degree.shape[0])

    @property
    def widths(self) -> tuple:
        return tuple(int(c.shape[1]) for c in self.seg_cols)

    def part_ranges(self) -> tuple:
        """``((start, stop), ...)`` of the parts' rows (one range for all rows without
        parts); static (from shapes)."""
        if not self.parts:
            return ((0, self.n_rows),)
        out, s = [], 0
        for b in self.parts:
            out.append((s, s + b.n_rows))
            s += b.n_rows
        return tuple(out)


class LowRows(NamedTuple):
    """The split layout of :func:`build_row_blocks` with ``low_width``: ``high`` the
    :class:`RowBlocks` of the rows drawn by Cholesky (compact row indices ``0..n_high-1``,
    global observation indices, possibly with parts), ``high_rows (n_high,)`` the global
    row of each of them, and ``rows`` a :class:`RowBlocks` over the global rows whose
    buckets hold the low rows only (one segment each, global observation indices)."""

    high: RowBlocks
    high_rows: np.ndarray
    rows: RowBlocks


#: ``low_width="auto"`` takes the Woodbury path for a side only when its rows of at most
#: ``low_width`` observations are worth it: ``n_low * (1 + (d / 32)^3) >=`` this (the
#: per-row saving grows with the ``d x d`` Cholesky it avoids; a fixed cost of the second
#: path is paid per sweep) ...
LOW_ROWS_MIN_WORK = 2000.0
#: ... and they are at least this share of the side's non-empty rows (a long tail): on
#: ML-1M (16% of users, 25% of items with at most 32 positives, rank 64) the split layout
#: was no faster. Measured in ``benchmarks/results/low_rows.md``.
LOW_ROWS_MIN_SHARE = 0.5


def low_width_for(d: int, degree=None) -> int:
    """The ``low_width`` of ``low_width="auto"`` for a width-``d`` design: the largest
    power of two ``<= d / 2`` (a ``W x W`` system per row instead of ``d x d``), 0 (off)
    for ``d < 16``; with ``degree`` (observations per row of the side) also 0 unless the
    rows it would cover are enough work (:data:`LOW_ROWS_MIN_WORK`) and most of the side
    (:data:`LOW_ROWS_MIN_SHARE`). Below ``d = 16`` a row's own factor is cheap: on
    Last.fm's log counts at rank 10 (``d = 11``) the split layout took 0.80x the seconds
    per sweep but 1-4 s more compile time, about what it saves over a few hundred
    sweeps."""
    if d < 16:
        return 0
    w = int(2 ** int(np.floor(np.log2(d / 2))))
    if degree is not None:
        deg = np.asarray(degree)
        n_low = int(np.count_nonzero((deg >= 1) & (deg <= w)))
        if (n_low * (1.0 + (d / 32.0) ** 3) < LOW_ROWS_MIN_WORK
                or n_low < LOW_ROWS_MIN_SHARE * np.count_nonzero(deg)):
            return 0
    return w


def resolve_low_width(low_width, d: int, max_width: int = 128, degree=None) -> int:
    """``low_width`` of :func:`build_row_blocks` for a width-``d`` design: ``"auto"``
    (:func:`low_width_for` with the side's ``degree``, at most ``max_width``) or an int
    >= 0 (0: off), used as given."""
    if isinstance(low_width, str) and low_width == "auto":
        return min(low_width_for(d, degree), int(max_width))
    if isinstance(low_width, bool) or not isinstance(low_width, (int, np.integer)) \
            or not 0 <= low_width <= max_width:
        raise SpecError(f"low_width must be 'auto' or an integer in [0, max_width="
                        f"{max_width}], got {low_width!r}")
    return int(low_width)


def check_row_block(row_block) -> int:
    """The ``row_block`` option of the Gibbs sampler as an int (``None`` -> 0: each row
    drawn at once; otherwise the widest block of a row's coordinates drawn together,
    :func:`solve_rows_subspace`)."""
    if row_block is None:
        return 0
    if isinstance(row_block, bool) or not isinstance(row_block, (int, np.integer)) \
            or row_block < 0:
        raise SpecError("row_block must be None or a non-negative int (the number of a "
                        "row's coordinates drawn together; 0 or None: all at once), got "
                        f"{row_block!r}")
    return int(row_block)


def partition_rows(degree, n_parts: int, row_cost: float = 0.0) -> np.ndarray:
    """Boundaries ``b (P+1,)`` of ``P`` contiguous row ranges ``[b[p], b[p+1])`` balanced
    by the weight ``degree_r + row_cost`` (cumulative weight cut at ``p/P`` of the total,
    to the nearest row)."""
    deg = np.asarray(degree, np.float64)
    D = int(n_parts)
    if D < 1:
        raise ValueError(f"the number of parts must be >= 1, got {n_parts!r}")
    n = deg.size
    cum = np.concatenate([[0.0], np.cumsum(deg + float(row_cost))])
    targets = cum[-1] * np.arange(1, D) / D
    hi = np.searchsorted(cum, targets, side="left").clip(0, n)
    lo = (hi - 1).clip(0, n)
    cut = np.where(np.abs(cum[lo] - targets) <= np.abs(cum[hi] - targets), lo, hi)
    cut = np.maximum.accumulate(cut)
    return np.concatenate([[0], cut, [n]]).astype(np.int64)


#: ``row_parts="auto"``: one row part per this many training observations (up to
#: :data:`ROW_PARTS_MAX`); fewer than this many observations: no parts (the extra compile
#: time of the per-part buckets would not be paid back)
ROW_PARTS_NNZ = 100_000
ROW_PARTS_MAX = 8


def resolve_row_parts(row_parts, nnz: int) -> int:
    """The number of row parts of each side's blocks (:mod:`bayesmf.infer._rowblocks`,
    **Row parts**): an int >= 1 as given, or ``"auto"``: on a CPU backend
    ``min(8, nnz // 100_000)`` (at least 1), on an accelerator 1 (it runs a part's batched
    products in parallel already). Used by the Gibbs sampler and ALS. Measured (Gibbs) on
    the ML-1M subset (438,885 ratings, rank 32, 2-core CPU, seconds per sweep, compile
    seconds): 1 part 0.179 / 6, 2 parts 0.166 / 8, 4 parts 0.163 / 8, 8 parts 0.144 /
    22, 16 parts 0.164 / 39: the gain is partly
    the two cores, partly smaller working sets; compile time grows with the parts."""
    if row_parts == "auto":
        if jax.default_backend() != "cpu":
            return 1
        return int(max(1, min(ROW_PARTS_MAX, nnz // ROW_PARTS_NNZ)))
    if isinstance(row_parts, bool) or not isinstance(row_parts, (int, np.integer)) \
            or row_parts < 1:
        raise SpecError(f"row_parts must be 'auto' or an integer >= 1, got {row_parts!r}")
    return int(row_parts)


def build_row_blocks(rows: np.ndarray, cols: np.ndarray, n_rows: int, *,
                     n_other: int | None = None, max_width: int = 128,
                     min_width: int = 4, parts: int = 1, row_cost: float = 0.0,
                     low_width: int = 0) -> RowBlocks:
    """Group observation ``j`` (row ``rows[j]``, other-side index ``cols[j]``) by row.

    Built once per fit with numpy. ``rows[j]``/``cols[j]`` are in the original observation
    order; ``y`` passed to :func:`solve_rows` must use the same order. Rows with more than
    ``max_width`` observations are split into several segments (summed afterwards); the
    remaining segment lengths are rounded up to a power of two (at least ``min_width``).
    ``n_other`` defaults to ``cols.max() + 1``. ``parts > 1`` (at most ``n_rows``) cuts
    the rows into that many contiguous ranges balanced by ``degree + row_cost``, each with
    its own buckets (module docs, **Row parts**).

    ``low_width > 0`` (at most ``max_width``): the rows with 1 to ``low_width``
    observations go to separate buckets drawn through the Woodbury identity by
    :func:`solve_rows` (:class:`LowRows`; module docs, **Rows of few observations**);
    ``parts`` then cuts the other rows. Only :func:`solve_rows` (JAX) takes such blocks.
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
    parts = int(parts)
    if parts < 1:
        raise ValueError(f"parts must be >= 1, got {parts}")
    low_width = int(low_width)
    if low_width > 0:
        if low_width > max_width:
            raise ValueError(f"low_width ({low_width}) must be <= max_width ({max_width})")
        return _build_split(rows, cols, n_rows, n_other, max_width, min_width, parts,
                            row_cost, low_width)
    parts = min(parts, max(n_rows, 1))
    if parts > 1:
        degree = np.bincount(rows, minlength=n_rows).astype(np.int32)
        bnd = partition_rows(degree, parts, row_cost)
        subs = []
        for p in range(parts):
            s, e = int(bnd[p]), int(bnd[p + 1])
            obs = np.flatnonzero((rows >= s) & (rows < e))
            b = build_row_blocks(rows[obs] - s, cols[obs], e - s, n_other=n_other,
                                 max_width=max_width, min_width=min_width)
            # local observation positions -> global ones (padding 0 -> a valid index whose
            # design row is the zero row)
            subs.append(_map_obs(b, obs))
        return RowBlocks((), (), (), degree, np.asarray([n_other], np.int32), tuple(subs))
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


def _map_obs(b: RowBlocks, obs: np.ndarray) -> RowBlocks:
    """``b`` with its observation indices (local to the subset ``obs``) made global."""
    return b._replace(seg_obs=tuple(obs[o].astype(np.int32) if obs.size else o
                                    for o in b.seg_obs),
                      parts=tuple(_map_obs(p, obs) for p in b.parts))


def remap_blocks(b, other_of_obs, n_other: int, obs_map=None):
    """A layout (:class:`RowBlocks`, with its parts or :class:`LowRows`) with the same
    rows, segments and shapes but other observations in its slots: each observation index
    ``o`` becomes ``obs_map[o]`` (None: unchanged) and each other-side index the new
    observation's ``other_of_obs[obs_map[o]]``; padding slots (other index ``n_other``)
    stay padding. Works on device arrays inside ``jit`` (the per-sweep redraw of sampled
    negatives, :mod:`bayesmf.infer.negative_redraw`): a row keeps its number of
    observations, so every static shape and the Woodbury / Cholesky split stay valid."""
    if isinstance(b, LowRows):
        return b._replace(high=remap_blocks(b.high, other_of_obs, n_other, obs_map),
                          rows=remap_blocks(b.rows, other_of_obs, n_other, obs_map))
    obs = b.seg_obs if obs_map is None else tuple(obs_map[o] for o in b.seg_obs)
    cols = tuple(jnp.where(c >= n_other, c, other_of_obs[o].astype(c.dtype))
                 for c, o in zip(b.seg_cols, obs))
    return b._replace(seg_cols=cols, seg_obs=obs,
                      parts=tuple(remap_blocks(p, other_of_obs, n_other, obs_map)
                                  for p in b.parts),
                      low=(remap_blocks(b.low, other_of_obs, n_other, obs_map)
                           if isinstance(b.low, LowRows) else b.low))


def _build_split(rows, cols, n_rows, n_other, max_width, min_width, parts, row_cost,
                 low_width) -> RowBlocks:
    """:func:`build_row_blocks` with ``low_width > 0`` (the :class:`LowRows` layout), on
    arguments it has already checked."""
    degree = np.bincount(rows, minlength=n_rows).astype(np.int32)
    is_low = (degree >= 1) & (degree <= low_width)
    lay = dict(n_other=n_other, max_width=max_width, min_width=min_width)
    if not is_low.any():
        return build_row_blocks(rows, cols, n_rows, parts=parts, row_cost=row_cost, **lay)
    high_rows = np.flatnonzero(~is_low).astype(np.int32)
    compact = np.full(n_rows, -1, np.int64)
    compact[high_rows] = np.arange(high_rows.size)
    obs_h = np.flatnonzero(~is_low[rows])
    obs_l = np.flatnonzero(is_low[rows])
    high = _map_obs(build_row_blocks(compact[rows[obs_h]], cols[obs_h], high_rows.size,
                                     parts=min(parts, max(high_rows.size, 1)),
                                     row_cost=row_cost, **lay), obs_h)
    low = _map_obs(build_row_blocks(rows[obs_l], cols[obs_l], n_rows, **lay), obs_l)
    return RowBlocks((), (), (), degree, np.asarray([n_other], np.int32),
                     low=LowRows(high, high_rows, low))


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
    if blocks.low:
        raise ValueError("row_precisions: blocks with rows of few observations (low_width) "
                         "are drawn by solve_rows in JAX only")
    if blocks.parts:
        Ps, hs = zip(*(row_precisions(b, X, y, tau, *_prior_slice(prior_prec, prior_shift,
                                                                    s, e), xp=xp,
                                      dense_gram=dense_gram, rhs=rhs)
                       for b, (s, e) in zip(blocks.parts, blocks.part_ranges())))
        return xp.concatenate(Ps, axis=0), xp.concatenate(hs, axis=0)
    X = xp.asarray(X)
    dt = X.dtype
    d = X.shape[1]
    if xp is not np and _split_pays(d):
        a, b, C, h = _split_terms(blocks, X, y, tau, prior_prec, prior_shift, dense_gram, rhs)
        P = jnp.concatenate([jnp.concatenate([a[:, None], b], axis=-1)[:, None, :],
                             jnp.concatenate([b[:, :, None], C], axis=-1)], axis=1)
        return P, h
    Xp = xp.concatenate([X, xp.zeros((1, d), dt)], axis=0)
    y, w = _targets(y, tau, rhs, dt, xp)
    weighted = w is not None
    G, h = _gram(blocks, Xp, y, w, xp)
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


def _targets(y, tau, rhs, dt, xp):
    """``(y, w)``: the targets as the Gram's right-hand side wants them -- multiplied by the
    per-observation weights ``w = tau`` (or replaced by ``rhs``) when ``tau`` is an array,
    as given (``w = None``) when it is one precision for all."""
    y = xp.asarray(y, dt)
    if xp.ndim(tau) > 0:
        w = xp.asarray(tau, dt)
        return (xp.asarray(rhs, dt) if rhs is not None else y * w), w
    if rhs is not None:
        raise ValueError("row_precisions: rhs= needs per-observation weights")
    return y, None


def _prior_slice(prior_prec, prior_shift, s, e):
    """The rows ``[s, e)`` of a per-row prior (shared ``(d, d)`` / ``(d,)`` pass through)."""
    P0 = prior_prec[s:e] if getattr(prior_prec, "ndim", 0) == 3 else prior_prec
    h0 = prior_shift[s:e] if getattr(prior_shift, "ndim", 0) == 2 else prior_shift
    return P0, h0


def _split_pays(d: int) -> bool:
    """Whether the JAX Gram of a width-``d`` design is faster with its first column split
    off (:func:`_gram_split_parts`): measured on the ML-1M subset's item blocks (2-core
    x86 CPU, float32), the split is 10-16% faster for ``d = 17, 33, 41`` (``d - 1`` a
    multiple of the 8-lane vector width, ``d`` not) and no faster or slower for
    ``d <= 11`` and ``d = 65`` (the thin extra product no longer pays)."""
    return d % 8 == 1 and 16 < d < 64


def _gram(blocks, Xp, y, w, xp):
    """Unscaled ``G_r = sum_j w_j x x^T`` and ``h_r = sum_j y_j x`` (``y`` already
    multiplied by ``w`` when weighted) of every row: one batched product per bucket."""
    n, d = blocks.degree.shape[0], Xp.shape[1]
    dt = Xp.dtype
    weighted = w is not None
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
    return G, h


def _gram_split_parts(blocks, Xp, y, w):
    r""":func:`_gram` in JAX with the first design column ``a = X[:, 0]`` taken out
    of the batched product: with ``X = [a, F]``,

    .. math::

        \sum_j w_j x_j x_j^\top = \begin{pmatrix} \sum w a^2 & \sum w a F^\top \\
        \sum w a F & \sum w F F^\top \end{pmatrix},\qquad
        \sum_j y_j x_j = \begin{pmatrix} \sum y a \\ \sum y F \end{pmatrix}.

    The Gibbs design is ``[1, F]`` (bias column, ``d = k + 1``), and a batched product of
    width ``k + 1`` is much slower than one of width ``k`` on CPU (``k = 32``: 0.022 vs
    0.016 s for the 128-wide bucket of the ML-1M subset, 33 is not a multiple of the
    vector width); the first row/column and ``h`` come from one thin product with the
    two columns ``[w a, y]``. Same sums as :func:`_gram` in another order (equal up to
    float rounding). Returns the first row ``G0 (n, d)`` of every row's Gram, ``h (n,
    d)`` and the lower-right block ``GF (n, d-1, d-1)``, unassembled."""
    n, d = blocks.degree.shape[0], Xp.shape[1]
    dt = Xp.dtype
    a_all, F_all = Xp[:, 0], Xp[:, 1:]
    G0 = jnp.zeros((n, d), dt)       # first row of G
    H = jnp.zeros((n, d), dt)        # h
    GF = jnp.zeros((n, d - 1, d - 1), dt)
    for r, c, o in zip(blocks.seg_row, blocks.seg_cols, blocks.seg_obs):
        F, a, yg = F_all[c], a_all[c], y[o]              # (S, W, d-1), (S, W), (S, W)
        wa = a * w[o] if w is not None else a
        C = jnp.einsum("swk,swd->skd", jnp.stack([wa, yg], -1), F)   # (S, 2, d-1)
        g0 = jnp.concatenate([jnp.sum(wa * a, -1)[:, None], C[:, 0]], -1)
        hs = jnp.concatenate([jnp.sum(yg * a, -1)[:, None], C[:, 1]], -1)
        Fw = F * w[o][..., None] if w is not None else F
        G0 = _scatter_add(G0, r, g0)
        H = _scatter_add(H, r, hs)
        GF = _scatter_add(GF, r, jnp.einsum("swd,swe->sde", Fw, F))
    return G0, H, GF


def _split_terms(blocks, X, y, tau, prior_prec, prior_shift, dense_gram=None, rhs=None):
    r"""The blocks of every row's precision :math:`P_r = \begin{pmatrix} a_r & b_r^\top \\
    b_r & C_r\end{pmatrix}` (first design column split off, :func:`_gram_split_parts`) and
    ``h (n, d)``, in JAX -- the terms of :func:`row_precisions` without assembling the
    ``(n, d, d)`` array. Returns ``(a (n,), b (n, d-1), C (n, d-1, d-1), h)``."""
    X = jnp.asarray(X)
    dt = X.dtype
    Xp = jnp.concatenate([X, jnp.zeros((1, X.shape[1]), dt)], axis=0)
    y, w = _targets(y, tau, rhs, dt, jnp)
    G0, H, GF = _gram_split_parts(blocks, Xp, y, w)
    if w is None:
        t = jnp.asarray(tau, dt)
        G0, H, GF = t * G0, t * H, t * GF
    P0 = jnp.asarray(prior_prec, dt)
    if dense_gram is not None:
        P0 = P0 + jnp.asarray(dense_gram, dt)
    return (P0[..., 0, 0] + G0[:, 0], P0[..., 1:, 0] + G0[:, 1:], P0[..., 1:, 1:] + GF,
            jnp.asarray(prior_shift, dt) + H)


def _gaussian_from_split(a, b, C, h, noise):
    r""":func:`gaussian_from_precision` by the block Cholesky factor of
    :math:`P = \begin{pmatrix} a & b^\top \\ b & C\end{pmatrix}`:

    .. math::

        L = \begin{pmatrix} l & 0 \\ m & L_2\end{pmatrix},\quad l = \sqrt a,\quad
        m = b / l,\quad L_2 L_2^\top = S = C - m m^\top ,

    then :math:`w_1 = h_1 / l`, :math:`w_2 = L_2^{-1}(h_2 - m w_1)` (:math:`w = L^{-1}h`),
    plus the noise :math:`\varepsilon`, and back: :math:`z_2 = L_2^{-\top} w_2`,
    :math:`z_1 = (w_1 - m^\top z_2)/l` (:math:`z = L^{-\top} w`). The same arithmetic as
    the full factor in another order, without assembling the ``(n, d, d)`` precision and
    with a width-``d - 1`` Cholesky (``d - 1 = 32`` vectorises, ``33`` does not). A row whose
    Schur complement :math:`S` fails to factor is refactored with a jitter of
    ``1e-4 * mean(diag P)`` on :math:`S` (the full version puts it on all of :math:`P`).
    ``noise (n, d, 1)`` or None (the mean)."""
    l = jnp.sqrt(a)
    m = b / l[:, None]
    # the retry's jitter on the scale of the whole P (S can be ~0 where P is not)
    scale = (a + jnp.trace(C, axis1=-2, axis2=-1)) / (C.shape[-1] + 1)
    L2 = _safe_cholesky(C - m[:, :, None] * m[:, None, :], scale)
    w1 = h[:, 0] / l
    w2 = lax.linalg.triangular_solve(L2, (h[:, 1:] - m * w1[:, None])[..., None],
                                     left_side=True, lower=True)
    if noise is not None:
        noise = jnp.asarray(noise, w2.dtype)
        w1 = w1 + noise[:, 0, 0]
        w2 = w2 + noise[:, 1:]
    z2 = lax.linalg.triangular_solve(L2, w2, left_side=True, lower=True,
                                     transpose_a=True)[..., 0]
    z1 = (w1 - jnp.sum(m * z2, axis=-1)) / l
    return jnp.concatenate([z1[:, None], z2], axis=-1)


def _safe_cholesky(P, scale=None):
    """Batched Cholesky with a jittered retry for rows whose factor is not finite: ``P +
    1e-4 * scale * I`` with ``scale = mean(diag P)`` (or as given, one per matrix)."""
    if scale is None:
        scale = jnp.trace(P, axis1=-2, axis2=-1) / P.shape[-1]
    return _retry_bad_factors(P, jnp.linalg.cholesky(P), scale)


@jax.custom_batching.custom_vmap
def _retry_bad_factors(P, L, scale):
    """Refactor ``P + 1e-4 * scale * I`` where ``L`` is not finite; the retry runs only when
    some factor failed (``lax.cond``)."""
    d = P.shape[-1]
    eye = jnp.eye(d, dtype=P.dtype)
    scale = jnp.asarray(scale, P.dtype)[..., None, None]
    # the diagonal suffices: a failed factorisation is all NaN, and a non-finite L[i, k]
    # (k < i) reaches L[i, i] = sqrt(P_ii - sum_k L_ik^2) -- n d reads instead of n d^2
    bad = ~jnp.all(jnp.isfinite(jnp.diagonal(L, axis1=-2, axis2=-1)), axis=-1)

    def fix(L):
        L2 = jnp.linalg.cholesky(P + 1e-4 * scale * eye)
        return jnp.where(bad[..., None, None], L2, L)

    return lax.cond(jnp.any(bad), fix, lambda L: L, L)


@_retry_bad_factors.def_vmap
def _retry_bad_factors_vmap(axis_size, in_batched, P, L, scale):
    # Under vmap (vectorised chains) a lax.cond with a batched predicate becomes a select
    # that computes the retry every time; the function works on any leading batch axes,
    # so call it on the stacked arrays with one predicate for the whole batch instead.
    P, L, scale = (x if b else jnp.broadcast_to(x, (axis_size,) + jnp.shape(x))
                   for x, b in zip((P, L, scale), in_batched))
    return _retry_bad_factors(P, L, scale), True


def solve_rows(blocks: RowBlocks, X, y, tau, prior_prec, prior_shift, key=None, *, xp=jnp,
               dense_gram=None, rhs=None, fit_stats=False):
    r"""Conditional mean (``key=None``) or a draw of every row's Gaussian.

    For every row ``r`` with observation set ``O_r``::

        P_r = prior_prec + tau * sum_{j in O_r} x_{c(j)} x_{c(j)}^T        (d x d)
        h_r = prior_shift + tau * sum_{j in O_r} y_j x_{c(j)}               (d,)

    returns ``Z (n_rows, d)`` with ``Z_r = P_r^{-1} h_r`` when ``key`` is None (the
    conditional mean, i.e. the ALS ridge solution) or ``Z_r ~ N(P_r^{-1} h_r, P_r^{-1})``.
    ``X (n_other, d)``, ``y (nnz,)`` in the original observation order, ``tau`` scalar or
    per-observation weights ``(nnz,)`` (then ``tau * ...`` reads ``sum_j w_j ...``),
    ``prior_prec (d, d)`` or ``(n_rows, d, d)``, ``prior_shift (d,)`` or ``(n_rows, d)``,
    ``dense_gram (d, d)`` added to every ``P_r``, ``rhs`` (:func:`row_precisions`). Rows
    without observations get the prior ``N(prior_prec^{-1} prior_shift,
    prior_prec^{-1})``. jit-compatible (``blocks`` may be
    a traced argument or a closed-over constant); dtype follows ``X``. ``xp=numpy``
    computes the mean in numpy (no compile); draws need ``xp=jax.numpy``.

    ``fit_stats=True`` (JAX) also returns the data-fit statistics of the solution,
    ``(Z, (q, g))``, with :math:`D_r = P_r - \Lambda_{0r} - G_{dense}` (the observations'
    part of the precision) and :math:`d_r = h_r - \eta_{0r}`:

    .. math::

        q = \sum_r z_r^\top D_r z_r - 2 z_r^\top d_r ,\qquad
        g = \sum_r z_r^\top D_r e_1 ,

    so that :math:`\sum_j \tau (y_j - x_{c(j)}^\top z_{r(j)})^2 = \tau\sum_j y_j^2 + q`
    and, when the first design column is all ones (the bias column),
    :math:`\sum_j \tau (y_j - x_{c(j)}^\top z_{r(j)}) = \tau\sum_j y_j - g`: the
    residual sums of the new rows from the Grams already built, without evaluating any
    observation's prediction (:func:`bayesmf.infer.gibbs_steps.rows_draw`). With
    per-observation weights and ``rhs`` the same reads :math:`q = \sum_j w_j p_j^2 -
    2\sum_j \mathrm{rhs}_j\, p_j` and :math:`g = \sum_j w_j p_j x_{c(j),1}`
    (:math:`p_j = x_{c(j)}^\top z_{r(j)}`; the ``dense_gram`` is not an observation's).
    """
    if blocks.low:
        if xp is np:
            raise ValueError("solve_rows: blocks with rows of few observations (low_width) "
                             "need xp=jax.numpy")
        return _solve_split(blocks, X, y, tau, prior_prec, prior_shift, key,
                            dense_gram=dense_gram, rhs=rhs, fit_stats=fit_stats)
    if xp is np:
        if key is not None:
            raise ValueError("solve_rows: draws (key=...) need xp=jax.numpy")
        P, h = row_precisions(blocks, X, y, tau, prior_prec, prior_shift, xp=np,
                              dense_gram=dense_gram, rhs=rhs)
        return np.linalg.solve(P, h[..., None])[..., 0]
    d = X.shape[1]
    split = _split_pays(d)

    def chain(b, P0, h0, noise):
        return solve_part(b, X, y, tau, P0, h0, noise, dense_gram=dense_gram, rhs=rhs,
                          fit_stats=fit_stats, split=split)

    # the noise of all rows drawn at once (the same with and without parts)
    eps = None if key is None else jax.random.normal(
        key, (blocks.n_rows, d, 1), jnp.asarray(X).dtype)
    if not blocks.parts:
        return chain(blocks, prior_prec, prior_shift, eps)
    # one chain per part, which XLA's CPU runtime runs concurrently
    out = []
    for b, (s, e) in zip(blocks.parts, blocks.part_ranges()):
        out.append(chain(b, *_prior_slice(prior_prec, prior_shift, s, e),
                         None if eps is None else eps[s:e]))
    if not fit_stats:
        return jnp.concatenate(out, axis=0)
    return (jnp.concatenate([z for z, _ in out], axis=0),
            tuple(sum(st[j] for _, st in out) for j in range(2)))


def solve_part(b: RowBlocks, X, y, tau, P0, h0, noise, *, dense_gram=None, rhs=None,
               fit_stats=False, split=None):
    """Gather -> Gram -> Cholesky -> solve of the rows of one layout without parts (one
    part of :func:`solve_rows`, or a device's rows in the sharded sampler,
    :mod:`bayesmf.infer.sharded`): the mean (``noise=None``) or the draw with the standard
    normals ``noise (n_rows, d, 1)``; by the split-off first column where it pays
    (``split``; None: :func:`_split_pays` of the design width). ``fit_stats`` as in
    :func:`solve_rows`."""
    if split is None:
        split = _split_pays(X.shape[1])
    # the statistics take the prior's and the dense Gram's terms out of the quadratic forms
    Pd = P0 if dense_gram is None else jnp.asarray(P0, X.dtype) + jnp.asarray(dense_gram,
                                                                              X.dtype)
    if split:
        terms = _split_terms(b, X, y, tau, P0, h0, dense_gram, rhs)
        Z = _gaussian_from_split(*terms, noise)
        return (Z, _fit_stats_split(Z, *terms, Pd, h0)) if fit_stats else Z
    P, h = row_precisions(b, X, y, tau, P0, h0, dense_gram=dense_gram, rhs=rhs)
    Z = gaussian_from_precision(P, h, noise=noise)
    return (Z, _fit_stats(Z, P, h, Pd, h0)) if fit_stats else Z


def _solve_split(blocks: RowBlocks, X, y, tau, prior_prec, prior_shift, key, *,
                 dense_gram=None, rhs=None, fit_stats=False, subspace=None, pred0=None,
                 return_pred=False):
    r""":func:`solve_rows` of the :class:`LowRows` layout: the high rows by the Cholesky
    path, each bucket of low rows by :func:`_woodbury_rows` (module docs, **Rows of few
    observations**). ``subspace=(Z, size)`` draws the high rows by subspace Gibbs from
    their current values ``Z[high_rows]`` (:func:`solve_rows_subspace`) and the low rows
    whole, as above: each row's update leaves its conditional invariant, so mixing the two
    kinds across rows is a valid Gibbs sweep. ``pred0``, ``return_pred``: those of
    :func:`solve_rows_subspace` (``subspace`` only)."""
    if subspace is None and (pred0 is not None or return_pred):
        raise ValueError("solve_rows: pred0/return_pred are the subspace draws' options")
    lr = blocks.low
    X = jnp.asarray(X)
    dt = X.dtype
    n, d = blocks.n_rows, X.shape[1]
    P0 = jnp.asarray(prior_prec, dt)
    if P0.ndim != 2:
        raise ValueError("solve_rows: rows of few observations (low_width) need one prior "
                         "precision shared by all rows, not one per row")
    h0 = jnp.asarray(prior_shift, dt)
    k_high = k_low = None
    if key is not None:
        k_high, k_low = jax.random.split(key)
    h0_high = h0[lr.high_rows] if h0.ndim == 2 else h0
    if subspace is None:
        out = solve_rows(lr.high, X, y, tau, P0, h0_high, k_high, dense_gram=dense_gram,
                         rhs=rhs, fit_stats=fit_stats)
    else:
        Zc, size = subspace
        out = solve_rows_subspace(lr.high, X, y, tau, P0, h0_high,
                                  jnp.asarray(Zc, dt)[lr.high_rows], k_high, size=size,
                                  dense_gram=dense_gram, rhs=rhs, fit_stats=fit_stats,
                                  pred0=pred0, return_pred=return_pred)
    if return_pred:
        out, p_obs = out
    Z_high, st = out if fit_stats else (out, None)
    B = P0 if dense_gram is None else P0 + jnp.asarray(dense_gram, dt)
    L = _safe_cholesky(B)
    yw, w = _targets(y, tau, rhs, dt, jnp)
    Xp = jnp.concatenate([X, jnp.zeros((1, d), dt)], axis=0)
    Z = jnp.zeros((n, d), dt).at[lr.high_rows].set(Z_high)
    q_low = g_low = jnp.zeros((), dt)
    for j, (r, c, o) in enumerate(zip(lr.rows.seg_row, lr.rows.seg_cols, lr.rows.seg_obs)):
        Xg = Xp[c]                                               # (S, W, d), padding 0
        if w is None:
            t = jnp.asarray(tau, dt)
            wg, rg = jnp.broadcast_to(t, c.shape), t * yw[o]
        else:
            wg, rg = w[o], yw[o]
        h = (h0[r] if h0.ndim == 2 else h0) + jnp.einsum("sw,swd->sd", rg, Xg)
        z = _woodbury_rows(L, Xg, wg, h, None if k_low is None
                           else jax.random.fold_in(k_low, j))
        Z = Z.at[r].set(z)
        if fit_stats or return_pred:
            pred = jnp.einsum("swd,sd->sw", Xg, z)
        if fit_stats:
            q_low = q_low + jnp.sum(wg * pred * pred) - 2.0 * jnp.sum(rg * pred)
            g_low = g_low + jnp.sum(wg * pred * Xg[..., 0])
        if return_pred:
            p_obs = _obs_predictions(p_obs, [(c, o, pred)], X.shape[0])
    out = (Z, (st[0] + q_low, st[1] + g_low)) if fit_stats else Z
    return (out, p_obs) if return_pred else out


def _woodbury_rows(L, Xg, wg, h, key=None):
    r"""Mean (``key=None``) or a draw of :math:`\mathcal N(P_r^{-1}h_r, P_r^{-1})` for a
    bucket of rows with few observations each, :math:`P_r = B + \tilde W_r^\top\tilde W_r`,
    :math:`B = LL^\top` shared by the rows and :math:`\tilde W_r` the ``W`` rows
    :math:`\sqrt{w_j}\,x_j` (``Xg (S, W, d)``, weights ``wg (S, W)`` >= 0; padding rows
    zero). With :math:`H_r = L^{-1}\tilde W_r^\top` (``d x W``; all rows' columns in one
    triangular solve against the shared ``L``):

    .. math::

        P_r^{-1} = L^{-\top}(I + H_rH_r^\top)^{-1}L^{-1},\qquad
        (I + HH^\top)^{-1} = I - H(I_W + H^\top H)^{-1}H^\top

    (Woodbury), so with :math:`q = L^{-1}h_r` the mean is
    :math:`L^{-\top}(q - H t)`, :math:`t = (I_W + H^\top H)^{-1}H^\top q`: one ``W x W``
    Cholesky per row instead of a ``d x d`` one. A draw perturbs the right-hand side
    (Papandreou & Yuille 2010): :math:`\tilde h = h_r + L\varepsilon_1 + \tilde
    W_r^\top\varepsilon_2` with :math:`\varepsilon_1\sim\mathcal N(0, I_d)`,
    :math:`\varepsilon_2\sim\mathcal N(0, I_W)` has covariance :math:`B + \tilde
    W_r^\top\tilde W_r = P_r`, so :math:`P_r^{-1}\tilde h\sim\mathcal N(P_r^{-1}h_r,
    P_r^{-1})` exactly; in the whitened form :math:`q = L^{-1}h_r + \varepsilon_1 +
    H\varepsilon_2`."""
    S, W, d = Xg.shape
    Wt = jnp.sqrt(wg)[..., None] * Xg                                  # (S, W, d)
    Ht = lax.linalg.triangular_solve(L, Wt.reshape(S * W, d).T, left_side=True,
                                     lower=True).T.reshape(S, W, d)  # rows: (L^-1 w_j)^T
    q = lax.linalg.triangular_solve(L, h.T, left_side=True, lower=True).T    # (S, d)
    if key is not None:
        k1, k2 = jax.random.split(key)
        q = q + jax.random.normal(k1, (S, d), q.dtype) + jnp.einsum(
            "swd,sw->sd", Ht, jax.random.normal(k2, (S, W), q.dtype))
    M = jnp.eye(W, dtype=q.dtype) + jnp.einsum("swd,svd->swv", Ht, Ht)
    # eigenvalues >= 1, but 1 + |H|^2 can exceed float32's range of condition numbers
    # under extreme weights: the jittered retry of the Cholesky path
    Lm = _safe_cholesky(M)
    a = jnp.einsum("swd,sd->sw", Ht, q)[..., None]
    a = lax.linalg.triangular_solve(Lm, a, left_side=True, lower=True)
    t = lax.linalg.triangular_solve(Lm, a, left_side=True, lower=True, transpose_a=True)
    v = q - jnp.einsum("swd,sw->sd", Ht, t[..., 0])
    return lax.linalg.triangular_solve(L, v.T, left_side=True, lower=True,
                                       transpose_a=True).T


def _fit_stats(Z, P, h, P0, h0):
    """``(q, g)`` of :func:`solve_rows` (``fit_stats=True``) from the assembled ``P``, ``h``:
    the prior's terms are subtracted from the quadratic forms (``P0 (d, d)`` or ``(n, d,
    d)``), not from the matrices."""
    P0 = jnp.asarray(P0, Z.dtype)
    zP = jnp.einsum("nd,nde->ne", Z, P)
    z0 = Z @ P0 if P0.ndim == 2 else jnp.einsum("nd,nde->ne", Z, P0)
    q = jnp.sum((zP - z0) * Z) - 2.0 * jnp.sum(Z * (h - h0))
    return q, jnp.sum(zP[:, 0] - z0[:, 0])


def _fit_stats_split(Z, a, b, C, h, P0, h0):
    """:func:`_fit_stats` from the split blocks ``(a, b, C)`` of :func:`_split_terms`
    (``P = [[a, b^T], [b, C]]``; ``P`` symmetric, so ``z^T P e_1 = a z_1 + b^T z_2``)."""
    z1, z2 = Z[:, 0], Z[:, 1:]
    col0 = a * z1 + jnp.sum(b * z2, axis=-1)                        # (P z)_1
    zPz = z1 * col0 + jnp.sum(z2 * (b * z1[:, None] + jnp.einsum("nde,ne->nd", C, z2)), -1)
    P0 = jnp.asarray(P0, Z.dtype)
    z0 = Z @ P0 if P0.ndim == 2 else jnp.einsum("nd,nde->ne", Z, P0)
    q = jnp.sum(zPz) - jnp.sum(z0 * Z) - 2.0 * jnp.sum(Z * (h - h0))
    return q, jnp.sum(col0 - z0[:, 0])


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


def dim_blocks(d: int, size: int) -> tuple:
    """``((start, stop), ...)``: the ``d`` coordinates of a row cut into contiguous
    blocks of one width ``w = ceil(d / ceil(d / size)) <= size`` (the last one possibly
    narrower): the blocks of :func:`solve_rows_subspace`."""
    d, size = int(d), int(size)
    w = -(-d // -(-d // size))
    return tuple((s, min(s + w, d)) for s in range(0, d, w))


def solve_rows_subspace(blocks: RowBlocks, X, y, tau, prior_prec, prior_shift, Z, key, *,
                        size: int, dense_gram=None, rhs=None, fit_stats=False, pred0=None,
                        return_pred=False):
    r"""One **subspace Gibbs** pass over every row: the coordinates of each row are cut
    into blocks of at most ``size`` (:func:`dim_blocks`), and each block is drawn from
    its exact conditional given the row's other coordinates (current values ``Z (n_rows,
    d)``) -- the Bayesian counterpart of iALS++'s subspace updates (Rendle et al. 2021).

    With the full row Gaussian :math:`(P_r, h_r)` of :func:`solve_rows` and a block
    :math:`B` (complement :math:`\bar B`), the conditional of :math:`z_{rB}` is

    .. math::

        z_{rB}\mid z_{r\bar B} \sim \mathcal N\!\left(P_{BB}^{-1}
        (h_B - P_{B\bar B}\, z_{\bar B}),\; P_{BB}^{-1}\right),\qquad
        P_{BB} = \Lambda_{0,BB} + G_{BB} + \sum_{j\in O_r} w_j x_{jB} x_{jB}^\top ,

    .. math::

        P_{B\bar B}\, z_{\bar B} = (\Lambda_0 + G)_{B\bar B}\, z_{\bar B}
        + \sum_{j\in O_r} w_j\, x_{jB}\, (x_{j\bar B}^\top z_{\bar B}) ,

    (:math:`G` the ``dense_gram``). The products :math:`x_{j\bar B}^\top z_{\bar B}` come
    from a running prediction per observation, updated after each block. Each block
    step leaves the row's conditional (and so the posterior) invariant, so a pass over
    the blocks is a valid Gibbs update of the row; with one block (``size >= d``) it is
    the exact draw of :func:`solve_rows` (other float rounding). Cost: a Gram of
    ``nnz x size^2`` and ``d / size`` Cholesky factors of ``size x size`` per row,
    instead of ``nnz x d^2`` and one of ``d x d`` -- at the price of slower mixing when
    a row's coordinates are strongly correlated under :math:`P_r`.

    Draws only (``key`` required), JAX only; parts are drawn one after another, with the
    normals of all rows drawn at once as in :func:`solve_rows`. On a layout with rows of
    few observations (``low_width``, :class:`LowRows`) those rows are drawn whole through
    the Woodbury identity, as in :func:`solve_rows` with the same key, and the others by
    blocks (:func:`_solve_split`). ``fit_stats`` as in :func:`solve_rows` (from the final
    predictions). Returns the new ``Z`` (and the statistics).

    **Running predictions in and out.** The pass starts from every observation's
    prediction :math:`p_j = x_{c(j)}^\top z_{r(j)}` under the current rows, one gather of
    ``nnz x d`` design entries (about a sixth of a rank-64 sweep on ML-1M with
    ``size=16``). ``pred0 (nnz,)`` supplies them instead, in observation order (the Gibbs
    sweep passes the user step's final predictions to the item step: the same
    :math:`U_u^\top V_i` plus the bias terms). ``return_pred=True`` returns ``(out,
    p)`` with ``out`` as above and ``p (nnz,)`` the final rows' predictions, from the
    last block's running prediction (and the Woodbury rows' own product)."""
    if key is None:
        raise ValueError("solve_rows_subspace: draws only (key=None given)")
    if blocks.low:
        return _solve_split(blocks, X, y, tau, prior_prec, prior_shift, key,
                            dense_gram=dense_gram, rhs=rhs, fit_stats=fit_stats,
                            subspace=(Z, size), pred0=pred0, return_pred=return_pred)
    X = jnp.asarray(X)
    Z = jnp.asarray(Z, X.dtype)
    eps = jax.random.normal(key, (blocks.n_rows, X.shape[1]), X.dtype)
    layouts = blocks.parts or (blocks,)
    ranges = blocks.part_ranges()
    res, preds = [], []
    for b, (s, e) in zip(layouts, ranges):
        r = subspace_part(b, X, y, tau, *_prior_slice(prior_prec, prior_shift, s, e),
                          Z[s:e], eps[s:e], size, dense_gram, rhs, fit_stats, pred0=pred0,
                          want_pred=return_pred)
        if return_pred:
            r, pb = r
            preds.append((b, pb))
        res.append(r)
    if not fit_stats:
        out = jnp.concatenate(res, axis=0)
    else:
        out = (jnp.concatenate([z for z, _ in res], axis=0),
               tuple(sum(st[j] for _, st in res) for j in range(2)))
    if not return_pred:
        return out
    slots = [t for b, pb in preds for t in zip(b.seg_cols, b.seg_obs, pb)]
    return out, _obs_predictions(jnp.zeros((jnp.shape(y)[0],), X.dtype), slots, X.shape[0])


def _obs_predictions(p, slots, n_other: int):
    """``p (nnz,)`` with the predictions of bucket slots ``[(seg_cols, seg_obs, values (S,
    W)), ...]`` written in observation order (padding slots, ``seg_cols == n_other``,
    dropped)."""
    nnz = p.shape[0]
    for c, o, v in slots:
        p = p.at[jnp.where(c == n_other, nnz, o)].set(v, mode="drop")
    return p


def subspace_part(b: RowBlocks, X, y, tau, P0, h0, Z, eps, size, dense_gram, rhs,
                  fit_stats, pred0=None, want_pred=False):
    """:func:`solve_rows_subspace` on one layout without parts (one part of it, or a
    device's rows in the sharded sampler, :mod:`bayesmf.infer.sharded`), with the standard
    normals ``eps (n_rows, d)`` of its rows; ``pred0`` as there, ``want_pred=True`` also
    returns the final predictions per bucket (``(out, [(S, W), ...])``). The blocks are
    unrolled with static slices: a ``lax.scan`` over them compiles in about half the time but ran
    1.3-1.5x slower per sweep (rank 128 on ML-1M implicit, one thread: 1.15-1.30 against
    0.87 s)."""
    dt = X.dtype
    n, d = b.n_rows, X.shape[1]
    Xp = jnp.concatenate([X, jnp.zeros((1, d), dt)], axis=0)   # + the all-zero padding row
    yw, w = _targets(y, tau, rhs, dt, jnp)
    t = jnp.asarray(tau, dt) if w is None else None
    A = jnp.asarray(P0, dt)
    if dense_gram is not None:
        A = A + jnp.asarray(dense_gram, dt)
    h0 = jnp.asarray(h0, dt)
    buckets = list(zip(b.seg_row, b.seg_cols, b.seg_obs))
    # per slot: weight, weighted target (padding slots have an all-zero design row)
    ws = [None if w is None else w[o] for _, _, o in buckets]
    ys = [yw[o] for _, _, o in buckets]
    if pred0 is None:
        pred = [jnp.einsum("swd,sd->sw", Xp[c], Z[r]) for r, c, _ in buckets]
    else:  # the given predictions; padding slots 0 like their all-zero design row
        pred0 = jnp.asarray(pred0, dt)
        pred = [jnp.where(c == X.shape[0], jnp.zeros((), dt), pred0[o]) for _, c, o in buckets]
    for s, e in dim_blocks(d, size):
        XB, zB = Xp[:, s:e], Z[:, s:e]
        G = jnp.zeros((n, e - s, e - s), dt)
        hB = jnp.zeros((n, e - s), dt)           # sum_j x_jB (w_j y_j - w_j rest_j)
        rests, XBs = [], []
        for j, (r, c, _) in enumerate(buckets):
            Xg = XB[c]                                        # (S, W, e - s)
            rest = pred[j] - jnp.einsum("swi,si->sw", Xg, zB[r])   # x_j,notB . z_notB
            rests.append(rest)
            XBs.append(Xg)
            Xw = Xg if ws[j] is None else Xg * ws[j][..., None]
            G = _scatter_add(G, r, jnp.einsum("swi,swk->sik", Xw, Xg))
            wr = rest if ws[j] is None else ws[j] * rest
            hB = _scatter_add(hB, r, jnp.einsum("sw,swi->si", ys[j] - wr, Xg))
        if t is not None:
            G, hB = t * G, t * hB
        Zr = Z.at[:, s:e].set(0)                      # z with the block's coordinates 0
        AZ = Zr @ A[s:e, :].T if A.ndim == 2 else jnp.einsum("nij,nj->ni", A[:, s:e, :], Zr)
        h = (h0[s:e] if h0.ndim == 1 else h0[:, s:e]) + hB - AZ
        z_new = gaussian_from_precision(A[..., s:e, s:e] + G, h, noise=eps[:, s:e, None])
        Z = Z.at[:, s:e].set(z_new)
        pred = [rests[j] + jnp.einsum("swi,si->sw", XBs[j], z_new[r])
                for j, (r, _, _) in enumerate(buckets)]
    if not fit_stats:
        return (Z, pred) if want_pred else Z
    # solve_rows' data-fit statistics of the final rows, q = sum_j w_j p_j^2 - 2 sum_j
    # ytilde_j p_j (ytilde = w y or rhs), g = sum_j w_j p_j x_j0. With p = rest + a,
    # a_j = x_jB . z_B of the last block B, q = sum_j (w rest^2 - 2 ytilde rest)
    # + sum_r (z_B^T G_B z_B - 2 z_B^T hB_r): the last block's Gram and shift, no
    # further product over the observations (g, only with a bias column, takes one)
    q_obs = g = jnp.zeros((), dt)
    x0 = Xp[:, 0]                    # only the first design column: no (S, W, d) gather
    for j, (r, c, _) in enumerate(buckets):
        wr = rests[j] if ws[j] is None else ws[j] * rests[j]
        q_obs = q_obs + jnp.sum(wr * rests[j]) - 2.0 * jnp.sum(ys[j] * rests[j])
        wp = pred[j] if ws[j] is None else ws[j] * pred[j]
        g = g + jnp.sum(wp * x0[c])
    q = jnp.sum(jnp.einsum("ni,nik->nk", z_new, G) * z_new) - 2.0 * jnp.sum(z_new * hB)
    if t is not None:
        q_obs, g = t * q_obs, t * g
    out = Z, (q + q_obs, g)
    return (out, pred) if want_pred else out
