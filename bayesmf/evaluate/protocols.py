r"""Ranking protocols: which items each test user's relevant items are ranked against.

Relevance (explicit ratings): a held-out rating is **relevant** when
``rating >= relevance_threshold`` (default 4.0). Only known users and items can be ranked;
test pairs that also occur in training are dropped (counted in ``dropped_seen``).

* ``protocol="full"``: every item the user did not rate in training is a candidate; the
  relevant items are ranked among all of them (:math:`C_u = M - |\text{train}_u|`).
* ``protocol="sampled"``: the candidates are the user's relevant items plus
  ``n_negatives`` (default 100) items the user never rated (neither in training nor in the
  test set), drawn without replacement uniformly (``sampling="uniform"``) or with
  probability proportional to the item's training count (``"popularity"``; items never
  rated in training are not drawn), by the Gumbel-top-k trick with
  ``np.random.default_rng(seed)`` -- reproducible from ``seed``. All of a user's relevant
  items are ranked together against the same negatives.

Scores come from a recommendation strategy (:mod:`bayesmf.scoring.strategies`; the
posterior mean by default). With ``draws=True`` every metric is also computed from each
posterior draw's own noise-free scores :math:`m_s` (up to ``max_draws`` evenly spaced
draws) and summarised by its mean and central 90% interval over draws.

Memory: users are processed in chunks; the largest arrays are ``chunk x items`` scores
(full) or ``draws x chunk x candidates x rank`` (sampled).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from bayesmf.errors import DataError, SpecError
from bayesmf.evaluate.ranking import METRICS, mean_metrics, ranking_metrics, ranks_from_scores
from bayesmf.evaluate.rating import summarize_draws
from bayesmf.scoring.strategies import id_keys, make_strategy
from bayesmf.scoring.scorer import Scorer
from bayesmf.scoring.strategies import thompson_draw_index

__all__ = ["RankingTask", "build_task", "rank_task", "ranking_evaluate", "PROTOCOLS"]

PROTOCOLS = ("full", "sampled")


@dataclass
class RankingTask:
    """Fixed-shape description of a ranking evaluation (all arrays padded + masked).

    ``users (U,)`` user indices; ``rel (U, R)`` relevant item indices (``-1`` padding,
    ``rel_mask``); ``negatives (U, L)`` sampled candidates (sampled protocol only).
    """

    protocol: str
    users: np.ndarray
    rel: np.ndarray
    rel_mask: np.ndarray
    negatives: np.ndarray | None = None
    neg_mask: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def _pad_groups(keys, values, n_groups):
    """Group ``values`` by sorted ``keys`` (0..n_groups-1) into a padded array."""
    counts = np.bincount(keys, minlength=n_groups)
    R = int(counts.max()) if len(counts) else 0
    out = np.full((n_groups, max(R, 0)), -1, np.int64)
    starts = np.cumsum(counts) - counts
    col = np.arange(len(keys)) - np.repeat(starts, counts)
    out[keys, col] = values
    return out, out >= 0


def _seen_matrix_rows(train, users):
    """(row, item) of training pairs of ``users`` (indices)."""
    ip, ix = train.seen_indptr, train.seen_indices
    lens = ip[users + 1] - ip[users]
    rr = np.repeat(np.arange(len(users)), lens)
    off = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    return rr, ix[np.repeat(ip[users], lens) + off].astype(np.int64)


def build_task(posterior, test, protocol: str = "full", relevance_threshold: float = 4.0,
               n_negatives: int = 100, sampling: str = "uniform", seed: int = 0) -> RankingTask:
    """Relevant items per test user (and sampled negatives); see the module docs."""
    if protocol not in PROTOCOLS:
        raise SpecError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if sampling not in ("uniform", "popularity"):
        raise SpecError(f"sampling must be 'uniform' or 'popularity', got {sampling!r}")
    u, i, ku, ki, y = posterior._test_arrays(test)
    u = np.asarray(u, np.int64)
    i = np.asarray(i, np.int64)
    known = ku & ki
    M = len(posterior.items)
    t = posterior.train
    # drop test pairs that are in training: membership of key u*M+i in the sorted CSR keys
    in_train = np.zeros(len(u), bool)
    if known.any() and len(t.seen_indices):
        kk = np.flatnonzero(known)
        flat = (np.repeat(np.arange(len(t.seen_indptr) - 1, dtype=np.int64),
                          np.diff(t.seen_indptr)) * M + t.seen_indices.astype(np.int64))
        q = u[kk] * M + i[kk]
        pos = np.searchsorted(flat, q)
        in_train[kk] = (pos < len(flat)) & (flat[np.minimum(pos, len(flat) - 1)] == q)
    rel_rows = known & ~in_train & (np.asarray(y, np.float64) >= relevance_threshold)
    users = np.unique(u[rel_rows])
    grp = np.searchsorted(users, u[rel_rows])
    order = np.lexsort((i[rel_rows], grp))
    rel, rel_mask = _pad_groups(grp[order], i[rel_rows][order], len(users))
    info = {"relevance_threshold": float(relevance_threshold),
            "test_rows": int(len(u)), "unknown_rows": int((~known).sum()),
            "dropped_seen": int((known & in_train).sum()),
            "relevant_pairs": int(rel_mask.sum()), "users": int(len(users))}
    task = RankingTask(protocol, users, rel, rel_mask, info=info)
    if protocol == "sampled" and len(users) == 0:  # nothing to rank (ranking_evaluate says why)
        task.negatives = np.zeros((0, max(int(n_negatives), 1)), np.int64)
        task.neg_mask = task.negatives >= 0
    elif protocol == "sampled":
        n_neg = int(n_negatives)
        if n_neg < 1:
            raise SpecError("n_negatives must be >= 1")
        rng = np.random.default_rng(seed)
        if sampling == "uniform":
            logw = np.zeros(M)
        else:
            with np.errstate(divide="ignore"):
                logw = np.log(t.item_counts.astype(np.float64))
        # every test pair (any rating) counts as rated
        tk = np.flatnonzero(known)
        tu = np.searchsorted(users, u[tk])
        ok = (tu < len(users)) & (users[np.minimum(tu, len(users) - 1)] == u[tk])
        test_rows, test_items = tu[ok], i[tk][ok]
        negs = np.full((len(users), n_neg), -1, np.int64)
        step = max(1, (1 << 22) // max(M, 1))
        for a in range(0, len(users), step):
            rows = np.arange(a, min(len(users), a + step))
            g = logw[None, :] + rng.gumbel(size=(len(rows), M))
            rr, it = _seen_matrix_rows(t, users[rows])
            g[rr, it] = -np.inf
            sel = (test_rows >= a) & (test_rows < a + len(rows))
            g[test_rows[sel] - a, test_items[sel]] = -np.inf
            kth = min(n_neg, M)
            part = np.argpartition(-g, kth - 1, axis=1)[:, :kth]
            vals = np.take_along_axis(g, part, axis=1)
            part = np.where(np.isfinite(vals), part, -1)
            negs[rows, :kth] = np.sort(part, axis=1)
        task.negatives = negs
        task.neg_mask = negs >= 0
        info.update(n_negatives=n_neg, sampling=sampling, seed=int(seed),
                    negatives_short=int((~task.neg_mask).sum()))
    return task


def _per_draw_scores_full(sc: Scorer, block, s: int):
    """Noise-free scores of one draw ``(c, J)``."""
    m = sc.mu[s] + block.b[s][:, None] + sc.bi[s][None, :]
    if sc.k:
        m = m + block.F[s].astype(np.float64) @ sc.V[s].T.astype(np.float64)
    return m


def rank_task(posterior, task: RankingTask, k: int = 10, strategy="mean", *, draws=False,
              max_draws: int | None = 50, approx=None, chunk_size: int | None = None,
              seed: int | None = None, draw_interval: float = 0.9, **strategy_kw) -> dict:
    """Run a :class:`RankingTask`: metrics of the strategy's scores (and per draw)."""
    st = make_strategy(strategy, seed=seed, **strategy_kw)
    sc = Scorer(posterior, st, None, approx if st.name == "mean" else None)
    U = len(task.users)
    M = len(posterior.items)
    S = posterior.n_samples
    sel_draws = np.arange(S) if (max_draws is None or S <= max_draws) else \
        np.unique(np.linspace(0, S - 1, int(max_draws)).round().astype(np.int64))
    Rm = task.rel.shape[1]
    full = task.protocol == "full"
    L = Rm + (0 if full else task.negatives.shape[1])
    ranks = np.zeros((U, Rm), np.int64)
    rmask = np.zeros((U, Rm), bool)
    n_cand = np.zeros(U, np.int64)
    d_ranks = np.zeros((len(sel_draws), U, Rm), np.int64) if draws else None
    d_mask = np.zeros((len(sel_draws), U, Rm), bool) if draws else None
    if chunk_size is None:
        per_user = M if full else S * L * max(sc.k, 1)
        if full and st.name != "mean":
            per_user = S * M
        chunk_size = max(1, min(1024, (1 << 22) // max(per_user, 1)))
    keys_all = posterior.users.ids[task.users] if len(task.users) else task.users

    for a in range(0, U, chunk_size):
        rows = np.arange(a, min(U, a + chunk_size))
        uidx = task.users[rows]
        known = np.ones(len(rows), bool)
        block = sc.block_from_indices(uidx, known)
        keys = id_keys(keys_all[rows]) if st.name == "thompson" else None
        if full:
            s = sc.scores(block, uidx, known, keys)
            rr, it = _seen_matrix_rows(posterior.train, uidx)
            s[rr, it] = -np.inf
            n_cand[rows] = M - np.bincount(rr, minlength=len(rows))
            rel_pos, rel_m = task.rel[rows], task.rel_mask[rows]
            rk, mk = ranks_from_scores(s, rel_pos, rel_m)
            ranks[rows], rmask[rows] = rk, mk
            if draws:
                for j, sd_ in enumerate(sel_draws):
                    s1 = _per_draw_scores_full(sc, block, sd_)
                    s1[rr, it] = -np.inf
                    d_ranks[j][rows], d_mask[j][rows] = ranks_from_scores(s1, rel_pos, rel_m)
        else:
            cand = np.concatenate([task.rel[rows], task.negatives[rows]], axis=1)
            cmask = np.concatenate([task.rel_mask[rows], task.neg_mask[rows]], axis=1)
            is_rel = np.concatenate([task.rel_mask[rows],
                                     np.zeros_like(task.neg_mask[rows])], axis=1)
            order = np.argsort(np.where(cmask, cand, np.iinfo(np.int64).max), axis=1,
                               kind="stable")
            cand = np.take_along_axis(cand, order, axis=1)
            cmask = np.take_along_axis(cmask, order, axis=1)
            is_rel = np.take_along_axis(is_rel, order, axis=1)
            ro = np.argsort(~is_rel, axis=1, kind="stable")[:, :Rm]
            rel_pos = ro
            rel_m = np.take_along_axis(is_rel, ro, axis=1)
            n_cand[rows] = cmask.sum(axis=1)
            draw = None
            blk = block
            if st.name == "thompson":
                draw = thompson_draw_index(keys, st.seed, S)
                blk = sc.thompson_block(block, draw, keys)
            m, v = sc.pair_components(blk, np.maximum(cand, 0))
            rng = np.random.default_rng(st.seed) if st.name == "utility" else None
            s = sc.scores_of_components(m, v, draw_index=draw, rng=rng)
            s = np.where(cmask, s, -np.inf)
            rk, mk = ranks_from_scores(s, rel_pos, rel_m)
            ranks[rows], rmask[rows] = rk, mk
            if draws:
                for j, sd_ in enumerate(sel_draws):
                    s1 = np.where(cmask, m[sd_], -np.inf)
                    d_ranks[j][rows], d_mask[j][rows] = ranks_from_scores(s1, rel_pos, rel_m)
    per_user = ranking_metrics(ranks, rmask, n_cand, k)
    out = {"protocol": task.protocol, "k": int(k), "strategy": st.describe(), **task.info,
           "users_evaluated": int((rmask.sum(axis=1) > 0).sum()),
           "candidates_mean": float(n_cand.mean()) if U else None}
    out.update(mean_metrics(per_user, k))
    if draws:
        vals = {key: [] for key in METRICS}
        for j in range(len(sel_draws)):
            pu = ranking_metrics(d_ranks[j], d_mask[j], n_cand, k)
            mm = mean_metrics(pu, k)
            for key in METRICS:
                name = key if key == "auc" else f"{key}@{k}"
                vals[key].append(np.nan if mm[name] is None else mm[name])
        out["draws"] = {(key if key == "auc" else f"{key}@{k}"):
                        summarize_draws(vals[key], draw_interval) for key in METRICS}
        out["draws"]["n_draws"] = int(len(sel_draws))
    return out


def ranking_evaluate(posterior, test, k: int = 10, protocol: str = "full", *,
                     relevance_threshold: float = 4.0, n_negatives: int = 100,
                     sampling: str = "uniform", seed: int = 0, strategy="mean",
                     draws: bool = False, max_draws: int | None = 50, approx=None,
                     chunk_size: int | None = None, **strategy_kw) -> dict:
    """Build the task for ``protocol`` and rank it (see :func:`build_task`,
    :func:`rank_task`)."""
    task = build_task(posterior, test, protocol, relevance_threshold, n_negatives,
                      sampling, seed)
    if len(task.users) == 0:
        info = task.info
        if info["dropped_seen"] and info["dropped_seen"] + info["unknown_rows"] == \
                info["test_rows"]:
            raise DataError(
                f"all {info['dropped_seen']} test pairs with a known user and item are "
                "training pairs (in-sample): ranking ranks items a user has not rated in "
                "training, so it needs held-out pairs")
        raise DataError(f"no test user has a relevant item (rating >= {relevance_threshold}) "
                        "among known users and items outside the training pairs")
    return rank_task(posterior, task, k, strategy, draws=draws, max_draws=max_draws,
                     approx=approx, chunk_size=chunk_size, seed=seed, **strategy_kw)
