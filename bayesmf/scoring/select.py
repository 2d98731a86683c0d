"""Exact top-``n`` selection per row of a score matrix (ties broken by the lower column
index), shared by recommendation and the bounded per-draw strategies. Pure numpy."""

from __future__ import annotations

import numpy as np

__all__ = ["topn_indices", "BLOCK_W"]

_BLOCK_W = 32
BLOCK_W = _BLOCK_W


def topn_indices(scores: np.ndarray, n: int):
    """Exact top-``n`` per row of ``scores (c, J)``, ties broken by lower column index.

    ``-inf`` marks excluded entries. Returns ``(idx, vals, valid)``, each ``(c, n)``;
    ``idx`` is ``-1`` and ``valid`` False where a row has fewer than ``n`` finite entries.

    Blocks are strided (block ``b`` holds columns ``b, b+nb, b+2nb, ...``) so that the
    block maxima are one vectorised ``maximum`` over contiguous rows; the ``n`` blocks with
    the largest maxima contain the top ``n`` (each of them holds an element at least as
    large as any element outside them). Rows whose block maxima tie at the threshold, or
    whose candidates tie at the ``n``-th value, are sorted in full (stable).
    """
    scores = np.asarray(scores)
    c, J = scores.shape
    n = int(n)
    fdt = scores.dtype if scores.dtype.kind == "f" else np.float64
    out_idx = np.full((c, n), -1, np.int64)
    out_val = np.full((c, n), -np.inf, fdt)
    if c == 0 or J == 0 or n == 0:
        return out_idx, out_val, np.zeros((c, n), bool)
    w = _BLOCK_W
    nb = J // w
    if nb <= 2 * n:
        order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        m = order.shape[1]
        out_idx[:, :m] = order
        out_val[:, :m] = np.take_along_axis(scores, order, axis=1)
    else:
        main = scores[:, :nb * w].reshape(c, w, nb)
        bm = main.max(axis=1)  # (c, nb): max over the strided block b
        tail = J - nb * w
        if tail:
            bm = np.concatenate([bm, scores[:, nb * w:].max(axis=1, keepdims=True)], axis=1)
        nbt = bm.shape[1]
        part = np.argpartition(bm, nbt - n, axis=1)[:, nbt - n:]  # n best blocks
        th = np.take_along_axis(bm, part, axis=1).min(axis=1)
        tied = ((bm >= th[:, None]).sum(axis=1) > n) & np.isfinite(th)
        # columns of the chosen blocks (the tail block nb holds nb*w .. J-1)
        cols = part[:, :, None] + nb * np.arange(w)[None, None, :]
        if tail:
            is_tail = part == nb
            tcols = nb * w + np.minimum(np.arange(w), tail - 1)
            cols = np.where(is_tail[:, :, None], tcols[None, None, :], cols)
        cols = cols.reshape(c, n * w)
        flat = scores.reshape(-1) if scores.flags.c_contiguous else np.ascontiguousarray(scores).reshape(-1)
        vals = flat[cols + (np.arange(c, dtype=np.int64) * J)[:, None]]  # faster than take_along_axis
        if tail:  # duplicated tail columns (tail < w) must not count twice
            dup = np.repeat(is_tail, w, axis=1) & (np.tile(np.arange(w), n)[None, :] >= tail)
            vals = np.where(dup, -np.inf, vals)
        sel = np.argpartition(-vals, n - 1, axis=1)[:, :n]
        sv = np.take_along_axis(vals, sel, axis=1)
        sc = np.take_along_axis(cols, sel, axis=1)
        o = np.lexsort((sc, -sv), axis=1)
        out_idx = np.take_along_axis(sc, o, axis=1)
        out_val = np.take_along_axis(sv, o, axis=1)
        # a tie at the n-th value may hide a lower column index among the candidates
        vn = out_val[:, -1]
        tie_n = (vals == vn[:, None]).sum(axis=1) > (out_val == vn[:, None]).sum(axis=1)
        redo = np.flatnonzero(tied | (tie_n & np.isfinite(vn)))
        if redo.size:
            o = np.argsort(-scores[redo], axis=1, kind="stable")[:, :n]
            out_idx[redo] = o
            out_val[redo] = np.take_along_axis(scores[redo], o, axis=1)
    valid = np.isfinite(out_val) & (out_val > -np.inf)
    out_idx = np.where(valid, out_idx, -1)
    return out_idx, out_val, valid
