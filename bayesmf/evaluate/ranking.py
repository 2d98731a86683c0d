r"""Ranking metrics on fixed-shape, masked arrays (pure numpy).

Per user, the relevant held-out items are ranked among that user's **candidates** (all
items not rated in training for the full protocol, or relevant + sampled negatives; see
:mod:`bayesmf.evaluate.protocols`). The metrics only need the 0-based ranks
:math:`r_1 < r_2 < \dots < r_R` of the :math:`R` relevant items among the :math:`C`
candidates (ties broken by the lower item index, i.e. a stable sort by descending score).
Ragged per-user lists are padded: ``ranks (users, R_max)`` with a boolean ``mask``.

With :math:`h_j=\mathbb 1[r_j<k]`, :math:`H=\sum_j h_j`:

* precision@k :math:`=H/k`; recall@k :math:`=H/R`; hit_rate@k :math:`=\mathbb 1[H>0]`
* NDCG@k :math:`=\sum_j h_j/\log_2(r_j+2)\,\big/\sum_{j<\min(R,k)}1/\log_2(j+2)`
* MAP@k (average precision) :math:`=\sum_j h_j\,\frac{j}{r_j+1}\big/\min(R,k)`
  (:math:`j` counted from 1: the precision at the :math:`j`-th hit)
* MRR@k :math:`=h_1/(r_1+1)`
* AUC :math:`=\frac1R\sum_j \frac{C-R-(r_j-(j-1))}{C-R}`: the fraction of (relevant,
  non-relevant candidate) pairs ordered correctly (full list, not truncated at k)

Users with :math:`R=0` get NaN for every metric and are left out of the means; AUC is NaN
when every candidate is relevant (:math:`C=R`). HR@k is ``hit_rate@k``; MRR is truncated
at k (``mrr@k``: 0 when no relevant item reaches the top k).

Catalogue coverage@k (full protocol; :func:`topk_mask`, :func:`catalogue_coverage`): with
:math:`T_u` the top-k list of user :math:`u` among its candidates (same stable order as the
ranks) and :math:`\mathcal U` the evaluated users,
:math:`\mathrm{coverage@k}=|\bigcup_{u\in\mathcal U}T_u|\,/\,M` over all :math:`M`
items of the catalogue: how much of the catalogue the recommender ever shows.
"""

from __future__ import annotations

import numpy as np

from bayesmf.errors import SpecError

__all__ = ["ranking_metrics", "mean_metrics", "ranks_from_scores", "topk_mask",
           "catalogue_coverage", "METRICS"]

METRICS = ("precision", "recall", "hit_rate", "ndcg", "map", "mrr", "auc")


def ranking_metrics(ranks, mask, n_candidates, k: int = 10) -> dict:
    """Per-user metrics (arrays of shape ``(users,)``) from padded relevant-item ranks.

    ``ranks (U, R)``: 0-based ranks among the candidates (any order within a row);
    ``mask (U, R)``: which entries are real; ``n_candidates (U,)``.
    """
    k = int(k)
    if k < 1:
        raise SpecError(f"k must be >= 1, got {k}")
    ranks = np.asarray(ranks, np.float64)
    mask = np.asarray(mask, bool)
    if ranks.ndim != 2 or ranks.shape != mask.shape:
        raise SpecError(f"ranks and mask must be 2-D of equal shape, got {ranks.shape}, {mask.shape}")
    U, R = ranks.shape
    C = np.asarray(n_candidates, np.float64).reshape(U)
    r = np.sort(np.where(mask, ranks, np.inf), axis=1)
    n_rel = mask.sum(axis=1).astype(np.float64)
    valid = np.isfinite(r)
    j = np.arange(1, R + 1, dtype=np.float64)[None, :]
    hit = valid & (r < k)
    H = hit.sum(axis=1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = np.where(hit, 1.0 / np.log2(np.where(hit, r, 0) + 2.0), 0.0)
        ideal_c = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])
        idcg = ideal_c[np.minimum(n_rel, k).astype(np.int64)]
        ap = np.where(hit, j / (np.where(hit, r, 0) + 1.0), 0.0).sum(axis=1) / np.minimum(n_rel, k)
        first = r[:, 0] if R else np.full(U, np.inf)
        mrr = np.where(first < k, 1.0 / (first + 1.0), 0.0)
        n_neg = C - n_rel
        above_neg = np.where(valid, r - (j - 1), 0.0)
        auc = np.where(valid, (n_neg[:, None] - above_neg), 0.0).sum(axis=1) / (n_rel * n_neg)
        out = {
            "precision": H / k,
            "recall": H / n_rel,
            "hit_rate": (H > 0).astype(np.float64),
            "ndcg": disc.sum(axis=1) / idcg,
            "map": ap,
            "mrr": mrr,
            "auc": np.where(n_neg > 0, auc, np.nan),
        }
    none = n_rel == 0
    for key in out:
        out[key] = np.where(none, np.nan, out[key])
    return out


def mean_metrics(per_user: dict, k: int) -> dict:
    """Means over users with at least one relevant item, keyed ``"ndcg@10"`` etc.
    (``"auc"`` has no cut-off)."""
    res = {}
    for key in METRICS:
        v = np.asarray(per_user[key], np.float64)
        v = v[np.isfinite(v)]
        name = key if key == "auc" else f"{key}@{k}"
        res[name] = float(v.mean()) if v.size else None
    return res


def ranks_from_scores(scores, rel_pos, rel_mask, max_elems: int = 1 << 24):
    """0-based rank of each relevant column among the finite entries of its row.

    ``scores (c, J)`` (``-inf`` = not a candidate), ``rel_pos (c, R)`` column positions.
    ``rank = #{j: s_j > s_rel} + #{j < rel: s_j == s_rel}`` -- the position in a stable
    sort by descending score. Relevant entries with a non-finite score get
    ``mask=False``. Returns ``(ranks (c, R) int64, mask (c, R))``.
    """
    scores = np.asarray(scores)
    rel_pos = np.asarray(rel_pos, np.int64)
    rel_mask = np.asarray(rel_mask, bool)
    c, J = scores.shape
    R = rel_pos.shape[1]
    ranks = np.zeros((c, R), np.int64)
    if R == 0 or c == 0:
        return ranks, rel_mask.copy()
    pos = np.where(rel_mask, rel_pos, 0)
    rs = np.take_along_axis(scores, pos, axis=1)
    mask = rel_mask & np.isfinite(rs)
    cols = np.arange(J)
    step = max(1, max_elems // max(R * J, 1))
    for a in range(0, c, step):
        sl = slice(a, min(c, a + step))
        s = scores[sl][:, None, :]
        v = rs[sl][:, :, None]
        gt = (s > v).sum(axis=2)
        eq = ((s == v) & (cols[None, None, :] < pos[sl][:, :, None])).sum(axis=2)
        ranks[sl] = gt + eq
    return ranks, mask


def topk_mask(scores, k: int) -> np.ndarray:
    """``(c, J)`` boolean: the top-``k`` entries of each row among its finite scores
    (``-inf``/NaN = not a candidate), in the stable descending order of
    :func:`ranks_from_scores` (ties go to the lower column), i.e. exactly the columns
    whose rank is ``< k``. Rows with fewer than ``k`` candidates keep all of them.
    Cost: one ``np.partition`` per row (no full sort)."""
    k = int(k)
    if k < 1:
        raise SpecError(f"k must be >= 1, got {k}")
    s = np.asarray(scores, np.float64)
    if s.ndim != 2:
        raise SpecError(f"scores must be 2-D, got shape {s.shape}")
    fin = np.isfinite(s)
    c, J = s.shape
    if k >= J or c == 0:
        return fin.copy()
    x = np.where(fin, s, -np.inf)
    t = -np.partition(-x, k - 1, axis=1)[:, k - 1:k]  # k-th largest per row
    gt = fin & (x > t)
    eq = fin & (x == t)
    need = k - gt.sum(axis=1, keepdims=True)
    return gt | (eq & (np.cumsum(eq, axis=1) <= need))


def catalogue_coverage(top_lists, n_items: int) -> float:
    """Fraction of the ``n_items`` catalogue items in at least one top-k list:
    ``top_lists`` is a ``(users, n_items)`` boolean mask (:func:`topk_mask`) or an
    ``(n_items,)`` mask already OR-ed over users."""
    m = np.asarray(top_lists, bool)
    if m.ndim == 2:
        m = m.any(axis=0)
    if m.shape != (int(n_items),):
        raise SpecError(f"top-k mask has {m.shape[-1]} columns, expected {n_items} items")
    return float(m.sum()) / float(n_items) if n_items else float("nan")
