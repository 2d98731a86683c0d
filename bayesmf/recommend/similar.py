r"""Similar items (and users) by cosine similarity of the latent factors, draw by draw.

For items :math:`i, j` and posterior draw :math:`s`,
:math:`c_s(i,j)=V_{i,s}^\top V_{j,s}/(\lVert V_{i,s}\rVert\,\lVert V_{j,s}\rVert)`. A
rotation or sign flip of a draw's factor space leaves :math:`c_s` unchanged, so the
posterior of :math:`c(i,j)` is well defined even though the factors themselves are not
identified (cosines of the *mean* factors are not: chains rotated against each other
average to meaningless vectors). Items are ranked by the posterior mean
:math:`\bar c(i,j)=\frac1S\sum_s c_s(i,j)` -- one GEMM with inner dimension :math:`kS`
of the row-normalised stacked draws -- and each result carries the central interval and
standard deviation of :math:`c_s` over draws. Biases play no part.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmf.errors import SpecError
from bayesmf.recommend.topk import topn_indices

__all__ = ["similar_items", "similar_users"]


def _normalised(F):
    F = np.asarray(F, np.float32)
    nrm = np.linalg.norm(F, axis=-1, keepdims=True)
    return F / np.where(nrm > 0, nrm, 1.0)


def _similar(post, side, query, n, interval, candidates, exclude, chunk_size):
    if post.spec.rank == 0:
        raise SpecError("similarity needs latent factors (rank > 0)")
    if not 0 < interval < 1:
        raise SpecError(f"interval must be in (0, 1), got {interval}")
    vocab = post.items if side == "item" else post.users
    Fn = _normalised(post.flat("V" if side == "item" else "U"))  # S, M, k
    S, M, k = Fn.shape
    q_raw = np.atleast_1d(np.asarray(query))
    q_idx = vocab.encode(q_raw).astype(np.int64)
    cand = np.arange(M) if candidates is None else \
        np.unique(vocab.encode(np.atleast_1d(np.asarray(candidates))).astype(np.int64))
    stacked = Fn[:, cand].transpose(1, 0, 2).reshape(len(cand), S * k)
    excl = None
    if exclude is not None:
        ex, kn = vocab.encode(np.atleast_1d(np.asarray(exclude)), unknown="mask")
        excl = np.flatnonzero(np.isin(cand, ex[kn]))
    step = chunk_size or max(1, (1 << 22) // max(len(cand), 1))
    rows = []
    a_lo = (1 - interval) / 2
    for a in range(0, len(q_idx), step):
        qi = q_idx[a:a + step]
        Q = Fn[:, qi].transpose(1, 0, 2).reshape(len(qi), S * k)
        sc = (Q @ stacked.T) / S
        self_pos = np.searchsorted(cand, qi)
        hit = (self_pos < len(cand)) & (cand[np.minimum(self_pos, len(cand) - 1)] == qi)
        sc[np.flatnonzero(hit), self_pos[hit]] = -np.inf
        if excl is not None and len(excl):
            sc[:, excl] = -np.inf
        idx, vals, valid = topn_indices(sc, n)
        j = cand[np.maximum(idx, 0)]  # c, n
        per = np.einsum("sck,scnk->scn", Fn[:, qi], Fn[:, j])  # S, c, n
        lo = np.quantile(per, a_lo, axis=0)
        hi = np.quantile(per, 1 - a_lo, axis=0)
        sd = per.std(axis=0)
        r, c = np.nonzero(valid)
        rows.append(pd.DataFrame({
            side: q_raw[a:a + step][r], "similar": vocab.decode(j[r, c]), "rank": c + 1,
            "score": vals[r, c].astype(np.float64), "lower": lo[r, c], "upper": hi[r, c],
            "std": sd[r, c]}))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=[side, "similar", "rank", "score", "lower", "upper", "std"])


def similar_items(posterior, items, n: int = 10, *, interval: float = 0.9, candidates=None,
                  exclude=None, chunk_size: int | None = None) -> pd.DataFrame:
    """The ``n`` items most similar to each item in ``items`` (raw id or ids).

    Returns columns ``item, similar, rank, score, lower, upper, std``: ``score`` is the
    posterior-mean cosine, ``lower``/``upper`` the central ``interval`` of the per-draw
    cosines, ``std`` their standard deviation. The item itself is never returned.
    """
    if int(n) < 1:
        raise SpecError(f"n must be >= 1, got {n}")
    return _similar(posterior, "item", items, int(n), interval, candidates, exclude, chunk_size)


def similar_users(posterior, users, n: int = 10, *, interval: float = 0.9, candidates=None,
                  exclude=None, chunk_size: int | None = None) -> pd.DataFrame:
    """Like :func:`similar_items` for users (columns ``user, similar, ...``)."""
    if int(n) < 1:
        raise SpecError(f"n must be >= 1, got {n}")
    return _similar(posterior, "user", users, int(n), interval, candidates, exclude, chunk_size)
