r"""Top-n recommendation from any :class:`~bayesmf.posterior.Posterior`.

:func:`recommend` scores every candidate item for each requested user with a strategy
(:mod:`bayesmf.scoring.strategies`), removes the items the user rated in training
(``exclude_seen``, from :attr:`TrainInfo.seen_indptr` / ``seen_indices``), and returns the
``n`` best as raw ids with the score and its uncertainty. ``n`` is capped at the number
of candidate items. Users are processed in chunks, so memory stays bounded: the largest
arrays are ``chunk x candidates`` scores (mean, Thompson, and the bounded ``upper``/
``lower``/``prob`` path) or ``draws x chunk x candidates`` components (per-pair
strategies); no users x items matrix is ever built. Chunks adapt to the memory limit
(:mod:`bayesmf._memory`, an eighth of it per chunk) and every work array is checked
against it (:class:`~bayesmf.errors.MemoryLimitError` instead of an out-of-memory kill).

**Per-draw strategies.** ``thompson`` scores each user with its own draw: users are
sorted by draw and each group is one GEMM (the cost of one draw, not ``S``).
``upper``/``lower``/``prob`` (Gaussian likelihood) use the bounded top-n of
:mod:`bayesmf.scoring.bounded` (``quantile_method="bounded"``; the default ``"approx"`` skips its certificate): the same lists
as solving the mixture quantile / probability of every pair, at a fraction of the cost
(MovieLens latest-small, Gibbs rank 10, 300 draws, all 610 users, one core: ~5 s
CPU for ``ucb`` against ~240 s for solving every pair and 0.4-0.6 s for ``mean``; see
``benchmarks/results/recommend_strategies.md``); ``"approx"`` takes about half of
``"bounded"`` and ``"exact"`` solves every pair.

**Posterior-mean scores.** :math:`\mathbb E[r_{ui}] = \bar\mu + \bar b_u + \bar b_i +
\frac1S\sum_s U_{u,s}^\top V_{i,s}` -- note :math:`\frac1S\sum_s U_sV_s^\top \ne \bar U\bar
V^\top`. The factor term is one GEMM with inner dimension :math:`kS`:
:math:`\frac1S[U_{u,1},\dots,U_{u,S}]\,[V_{i,1},\dots,V_{i,S}]^\top`. ``approx`` chooses:

* ``None`` (default): that exact GEMM (cost :math:`O(N M k S)`).
* ``"lowrank"``: the stacked item draws :math:`\tilde V=[V_1..V_S]\in\mathbb R^{M\times kS}`
  are compressed once by a randomized SVD (range finder with 2 power iterations),
  :math:`\tilde V\approx Q W`, :math:`Q\in\mathbb R^{M\times r}` orthonormal, and each
  user's projected row :math:`x_u=\frac1S\tilde U_u W^\top\in\mathbb R^r` is cached, so a
  score is :math:`x_u^\top Q_i` (cost :math:`O(NMr)`). The error is that of projecting
  :math:`\tilde V` on its top-``r`` singular subspace; :func:`approx_error` measures it
  against the exact scores. ``approx_rank`` defaults to ``k * chains + 8`` (each chain may
  sit in its own rotation of the factor space).
* ``"mean-factors"``: :math:`\bar U\bar V^\top` (drops :math:`\mathrm{Cov}(U_u,V_i)` and is
  wrong when chains are rotated against each other); ``O(NMk)``.

Measured (``benchmarks/results/recommend.md``): on a real BPMF Gibbs chain (ML-1M subset,
rank 32, 100 draws) the posterior-mean score matrix is *not* low rank -- the draws wander,
so :math:`\frac1S\sum_s \delta U_s\delta V_s^\top` is full rank: ``"lowrank"`` at rank
40 (400) is off by 4.6% (3.3%) of the score sd with top-10 overlap 0.91 (0.93) against the
exact lists, ``"mean-factors"`` by 6.1% with overlap 0.88, while NDCG@10 / recall@10 / AUC
on held-out ratings are the same to 3 digits. Use the exact mode when the lists themselves
must be the posterior-mean lists; the fast modes when throughput matters.

The caches of ``"lowrank"`` and ``"mean-factors"`` live on the posterior object
(``posterior._recommend_cache``), like its population-moment cache.

**Selection.** Per chunk, exact top-``n`` with ties broken by the lower item index: the
candidates are split in ``J/w`` strided blocks of ``w`` items, the ``n`` blocks with the
largest maxima necessarily contain the top ``n`` (each of them holds an element at least
as large as any element elsewhere), and only those ``n*w`` values are partitioned
(:func:`topn_indices`).
"""

from __future__ import annotations

import inspect

import numpy as np
import pandas as pd

from bayesmf._memory import check_allocation
from bayesmf.errors import SpecError
from bayesmf.scoring.bounded import bounded_topn, prepare_bounded, supports_bounded
from bayesmf.scoring.scorer import Scorer, _run_parallel
from bayesmf.scoring.select import topn_indices
from bayesmf.scoring.strategies import id_keys, make_strategy, thompson_draw_index

__all__ = ["recommend", "recommend_indices", "TopN", "approx_error", "Scorer", "topn_indices"]

#: the strategy options (make_strategy's keywords, read from its signature)
_STRATEGY_OPTIONS = tuple(p for p in inspect.signature(make_strategy).parameters
                          if p != "strategy")

#: elements of one work array (draws x users x items for per-draw strategies)
_WORK_ELEMS = 1 << 22


# =========================================================================== users
class _PosteriorUsers:
    """Users given as raw ids of the posterior's vocabulary (unknown: fallback)."""

    def __init__(self, post, users, unknown):
        self.post = post
        if users is None:
            self.idx = np.arange(len(post.users), dtype=np.int64)
            self.known = np.ones(len(self.idx), bool)
            self.raw = post.users.ids
        else:
            raw = np.asarray(users) if not isinstance(users, (pd.Series, pd.Index)) \
                else users.to_numpy()
            if raw.ndim == 0:
                raw = raw.reshape(1)
            if unknown == "raise":
                self.idx = post.users.encode(raw).astype(np.int64)
                self.known = np.ones(len(raw), bool)
            elif unknown == "fallback":
                idx, known = post.users.encode(raw, unknown="mask")
                self.idx, self.known = idx.astype(np.int64), known
            else:
                raise SpecError(f"unknown= must be 'fallback' or 'raise', got {unknown!r}")
            self.raw = raw
        self._keys = None

    def __len__(self):
        return len(self.idx)

    def keys(self, rows):
        if self._keys is None:
            # a known user is keyed by the model's own id: "12" and 12 are the same user
            # of an integer vocabulary and get the same Thompson draw
            keys = np.zeros(len(self.idx), np.uint64)
            kn = self.known
            if kn.any():
                keys[kn] = id_keys(self.post.users.ids[self.idx[kn]])
            if not kn.all():
                keys[~kn] = id_keys(np.asarray(self.raw)[~kn])
            self._keys = keys
        return self._keys[rows]

    def block(self, scorer: Scorer, rows):
        return scorer.block_from_indices(self.idx[rows], self.known[rows])

    def index_known(self, rows):
        return self.idx[rows], self.known[rows]

    def seen(self, rows):
        """``(row_of_entry, item_index)`` of training items of the chunk's users."""
        t = self.post.train
        u, kn = self.idx[rows], self.known[rows]
        uu = np.where(kn, u, 0)  # unknown rows (possibly the only rows: no user at all)
        last = len(t.seen_indptr) - 1
        starts = np.where(kn, t.seen_indptr[np.minimum(uu, last)], 0)
        ends = np.where(kn, t.seen_indptr[np.minimum(uu + 1, last)], 0)
        lens = ends - starts
        rr = np.repeat(np.arange(len(u)), lens)
        off = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        return rr, t.seen_indices[np.repeat(starts, lens) + off].astype(np.int64)


# =========================================================================== entry
class TopN:
    """Index-level result of :func:`recommend_indices`: ``items (n_users, n)`` item
    indices (``-1`` padding), ``scores``, ``valid`` mask, optional ``mean``, ``std``,
    ``std_param`` (NaN where not computed)."""

    def __init__(self, items, scores, valid, mean=None, std=None, std_param=None):
        self.items, self.scores, self.valid = items, scores, valid
        nan = np.full(items.shape, np.nan)
        self.mean = nan if mean is None else mean
        self.std = nan.copy() if std is None else std
        self.std_param = nan.copy() if std_param is None else std_param


def _candidate_positions(post, candidates, exclude):
    items_idx = None
    if candidates is not None:
        raw = np.atleast_1d(np.asarray(candidates))
        if raw.size == 0:
            raise SpecError("candidates is empty: pass the item ids to rank among, or None "
                            "for every item")
        items_idx = np.unique(post.items.encode(raw).astype(np.int64))
    excl_pos = None
    if exclude is not None:
        raw = np.atleast_1d(np.asarray(exclude))
        ex, known = post.items.encode(raw, unknown="mask")
        ex = ex[known].astype(np.int64)
        if items_idx is None:
            excl_pos = np.unique(ex)
        else:
            excl_pos = np.flatnonzero(np.isin(items_idx, ex))
    return items_idx, excl_pos


def recommend_indices(posterior, users=None, n=10, strategy="mean", *, exclude_seen=True,
                      candidates=None, exclude=None, seed=None, quantile=None,
                      threshold=None, utility=None, chunk_size=None, approx=None,
                      approx_rank=None, noise=True, quantile_method="approx",
                      unknown="fallback", uncertainty=True, n_jobs=None, **strategy_kw):
    """Like :func:`recommend` but returns ``(source, TopN)`` with item *indices*
    (``n`` is capped at the number of candidate items, so the arrays are
    ``(users, min(n, candidates))``)."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or int(n) < 1:
        raise SpecError(f"n must be an integer >= 1, got {n!r}")
    n = int(n)
    if not isinstance(exclude_seen, (bool, np.bool_)):
        raise SpecError(f"exclude_seen must be True or False, got {exclude_seen!r}")
    bad = sorted(set(strategy_kw) - set(_STRATEGY_OPTIONS))
    if bad:
        raise SpecError(f"recommend() got unknown argument(s) {bad}; the strategy options "
                        f"are {', '.join(_STRATEGY_OPTIONS)}")
    st = make_strategy(strategy, quantile=quantile, threshold=threshold, utility=utility,
                       seed=seed, noise=noise, quantile_method=quantile_method, **strategy_kw)
    if approx not in (None, "exact") and st.name != "mean":
        raise SpecError("approx= applies to the 'mean' strategy only")
    src = users if hasattr(users, "block") and hasattr(users, "seen") else \
        _PosteriorUsers(posterior, users, unknown)
    items_idx, excl_pos = _candidate_positions(posterior, candidates, exclude)
    sc = Scorer(posterior, st, items_idx, approx, approx_rank)
    J = sc.J
    pos_of = None
    if items_idx is not None:
        pos_of = np.full(len(posterior.items), -1, np.int64)
        pos_of[items_idx] = np.arange(J)
    nU = len(src)
    n = max(1, min(n, J))  # no user can get more items than there are candidates
    check_allocation(nU * n * (8 * 2 + 1 + (24 if uncertainty else 0)),
                     f"top-{n} results for {nU} users",
                     hint="ask for fewer items (n=...) or fewer users per call")
    out_items = np.full((nU, n), -1, np.int64)
    out_scores = np.full((nU, n), -np.inf)
    out_valid = np.zeros((nU, n), bool)
    mean = std = stdp = None
    if uncertainty:
        mean, std, stdp = (np.full((nU, n), np.nan) for _ in range(3))
    step = sc.chunk_rows(chunk_size)
    # warm every lazy cache before chunks may run in parallel threads
    if st.name == "mean":
        sc._item_aug()
        if sc.approx is not None and isinstance(src, _PosteriorUsers) and src.known.any():
            sc._user_rows(None, src.idx[:1], np.ones(1, bool))
            sc.user_const_known(src.idx[:1])
    if isinstance(src, _PosteriorUsers) and not src.known.all():
        sc.q_items()
    if st.name == "thompson":
        src.keys(np.arange(0))
    bounded = supports_bounded(sc)
    if bounded:
        prepare_bounded(sc)  # item moments, before chunks run in threads

    def excluded_mask(rows):
        ex = np.zeros((len(rows), J), bool)
        if exclude_seen:
            rr, it = src.seen(rows)
            if pos_of is not None:
                it = pos_of[it]
                keep = it >= 0
                rr, it = rr[keep], it[keep]
            ex[rr, it] = True
        if excl_pos is not None and len(excl_pos):
            ex[:, excl_pos] = True
        return ex

    def run_chunk(a, perm=None):
        rows = np.arange(a, min(nU, a + step))
        if perm is not None:
            rows = perm[rows]
        linear_mean = st.name == "mean" and sc.lik.mean_is_linear
        light = (linear_mean and sc.approx is not None and not uncertainty
                 and isinstance(src, _PosteriorUsers) and src.known[rows].all())
        block = None if light else src.block(sc, rows)
        if bounded:
            idx, vals, valid = bounded_topn(sc, block, n, excluded_mask(rows))
            return _store(rows, block, idx, vals, valid, None)
        if linear_mean:  # the GEMM fast path: E[y] is the mean linear predictor
            uk = src.index_known(rows) if hasattr(src, "index_known") else (None, None)
            s = sc.mean_scores(block, *uk)
            const = sc.user_const(block) if block is not None else sc.user_const_known(uk[0])
        else:
            keys = src.keys(rows) if st.name == "thompson" else None
            s = sc.scores(block, keys=keys)
            const = None
        if exclude_seen or (excl_pos is not None and len(excl_pos)):
            s[excluded_mask(rows)] = -np.inf
        idx, vals, valid = topn_indices(s, n)
        del s
        _store(rows, block, idx, vals, valid, const)

    def _store(rows, block, idx, vals, valid, const):
        vals = vals.astype(np.float64)
        if const is not None:
            vals = vals + const[:, None]
        out_scores[rows] = np.where(valid, vals, -np.inf)
        out_valid[rows] = valid
        item_idx = idx if items_idx is None else np.where(valid, items_idx[np.maximum(idx, 0)], -1)
        out_items[rows] = item_idx
        if uncertainty:
            mm, pv, tv = sc.pair_summary(block, np.maximum(idx, 0))
            mean[rows] = np.where(valid, mm, np.nan)
            stdp[rows] = np.where(valid, np.sqrt(pv), np.nan)
            std[rows] = np.where(valid, np.sqrt(tv), np.nan)

    starts = list(range(0, nU, step))
    if st.name == "thompson" and nU:
        # users sorted by their draw: a chunk then needs few distinct draws (one GEMM each)
        perm = np.argsort(thompson_draw_index(src.keys(np.arange(nU)), st.seed, sc.S),
                          kind="stable")
        _run_parallel(lambda a: run_chunk(a, perm), starts, n_jobs)
    else:
        _run_parallel(run_chunk, starts, n_jobs)
    return src, TopN(out_items, out_scores, out_valid, mean, std, stdp)


def recommend(posterior, users=None, n=10, strategy="mean", *, exclude_seen=True,
              candidates=None, exclude=None, seed=None, quantile=None, threshold=None,
              utility=None, chunk_size=None, approx=None, approx_rank=None, noise=True,
              quantile_method="approx", unknown="fallback", uncertainty=True,
              n_jobs=None, clip=True, **strategy_kw) -> pd.DataFrame:
    """Top-``n`` items for each user, as raw ids, with the score and its uncertainty.

    Parameters
    ----------
    posterior : Posterior
    users : array-like of raw user ids, a :class:`~bayesmf.recommend.foldin.FoldedUsers`,
        or ``None`` (all users of the posterior). Unknown ids get the population fallback
        (``known_user=False``; ``unknown="raise"`` rejects them) -- see the module docs of
        :mod:`bayesmf.posterior`.
    n : int
        Items per user (fewer when a user has fewer candidates left). Capped at the number
        of candidate items, so ``n=10**9`` means "rank every item" and allocates only
        ``users x items`` results.
    strategy : str
        ``"mean"``, ``"upper"``/``"ucb"``, ``"lower"``/``"lcb"``, ``"thompson"``,
        ``"prob"``, ``"utility"`` (see :mod:`bayesmf.scoring.strategies`).
    exclude_seen : bool
        Drop the items the user rated in training.
    candidates, exclude : array-like of raw item ids, optional
        Rank only ``candidates``; never recommend ``exclude``.
    seed : int, optional
        Thompson sampling / Monte-Carlo utility seed (same seed, same output). None is
        seed 0: every call without a seed returns the same Thompson lists, so a service
        that should explore across requests passes a fresh seed per request (e.g. a
        request counter); each user's draw depends on ``(seed, user id)`` only.
    quantile, threshold, utility, noise
        Strategy options (``threshold`` of ``"prob"``: default the likelihood's
        ``relevance_threshold`` -- 4.0 on a star scale, 1 for Bernoulli and Poisson).
    quantile_method : {"bounded", "exact", "approx", "gaussian"}
        How ``upper``/``lower``/``prob`` find the top ``n`` (Gaussian likelihood):
        ``"approx"`` (default) scores exactly the best ``screen_size`` items of a
        moment-matched screen (no certificate); ``"bounded"`` returns exactly the lists
        of ``"exact"`` (every pair's mixture quantile / probability solved) but solves
        only a few pairs per user and *certifies* the rest below the ``n``-th score with
        per-draw bounds (:mod:`bayesmf.scoring.bounded`);
        ``"gaussian"`` scores by the moment-matched Gaussian quantile. ``screen_size=``
        (keyword) sets how many screened items per user are solved.
    chunk_size : int, optional
        Users per chunk (default: bounded work arrays of ~4M elements).
    approx : {None, "lowrank", "mean-factors"}
        Mean strategy only: exact posterior mean (default) or a documented fast mode.
    uncertainty : bool
        Add the predictive ``mean``, ``std`` (parameter + noise) and ``std_param``
        (parameter only) of each recommended pair, computed exactly from the draws
        (costs a gather of ``draws x users x n x rank``; ``False`` fills NaN).
    n_jobs : int, optional
        Worker threads over user chunks (default: the number of CPUs, at most 8). Each
        thread runs single-threaded BLAS (via ``threadpoolctl`` when installed), which
        avoids BLAS threads competing with the selection work.

    clip : bool
        Report ``mean`` on the training rating scale (default; the ranking ``score`` is
        never clipped -- an upper quantile of 5.3 outranks one of 5.1 -- and ``std`` is
        that of the unclipped predictive, see :meth:`Posterior.predict`).

    Returns
    -------
    DataFrame with columns ``user, item, rank, score, mean, std, std_param, known_user``
    (rank 1 = best), in the order of ``users`` then rank: ``score`` is the strategy's
    ranking score, ``mean`` the predicted rating (expected rating, P(y=1) for Bernoulli)
    of the pair.
    """
    src, res = recommend_indices(
        posterior, users, n, strategy, exclude_seen=exclude_seen, candidates=candidates,
        exclude=exclude, seed=seed, quantile=quantile, threshold=threshold, utility=utility,
        chunk_size=chunk_size, approx=approx, approx_rank=approx_rank, noise=noise,
        quantile_method=quantile_method, unknown=unknown, uncertainty=uncertainty,
        n_jobs=n_jobs, **strategy_kw)
    nU, nn = res.items.shape
    urow, rank0 = np.nonzero(res.valid)
    items_raw = posterior.items.decode(res.items[urow, rank0])
    return pd.DataFrame({
        "user": np.asarray(src.raw)[urow],
        "item": items_raw,
        "rank": rank0 + 1,
        "score": res.scores[urow, rank0],
        "mean": posterior.clip_to_scale(res.mean[urow, rank0]) if clip
        else res.mean[urow, rank0],
        "std": res.std[urow, rank0],
        "std_param": res.std_param[urow, rank0],
        "known_user": np.asarray(src.known)[urow],
    })


def approx_error(posterior, approx="lowrank", approx_rank=None, n_users=500, n=10,
                 seed=0, exclude_seen=True) -> dict:
    """Error of a fast mean mode against the exact posterior-mean scores on a random
    subset of users: RMSE and max abs error of the scores (relative to the std of the
    exact scores), and the overlap of the top-``n`` lists."""
    rng = np.random.default_rng(seed)
    N = len(posterior.users)
    pick = np.sort(rng.choice(N, size=min(n_users, N), replace=False))
    raw = posterior.users.ids[pick]
    st = make_strategy("mean")
    ex = Scorer(posterior, st, None, None)
    ap = Scorer(posterior, st, None, approx, approx_rank)
    src = _PosteriorUsers(posterior, raw, "raise")
    errs, overlap, scale = [], [], []
    for a in range(0, len(pick), 256):
        rows = np.arange(a, min(len(pick), a + 256))
        block = src.block(ex, rows)
        u, k = src.index_known(rows)
        se = ex.mean_scores(block, u, k).astype(np.float64)
        sa = ap.mean_scores(block, u, k).astype(np.float64)
        errs.append((sa - se).ravel())
        scale.append(se.ravel().copy())
        if exclude_seen:
            rr, it = src.seen(rows)
            se[rr, it] = -np.inf
            sa[rr, it] = -np.inf
        ie, _, _ = topn_indices(se, n)
        ia, _, _ = topn_indices(sa, n)
        overlap.extend(len(np.intersect1d(x, y)) / n for x, y in zip(ie, ia))
    e = np.concatenate(errs)
    sd = float(np.concatenate(scale).std())
    return {"approx": approx, "rank": approx_rank, "users": int(len(pick)),
            "score_rmse": float(np.sqrt(np.mean(e ** 2))), "score_max_abs": float(np.abs(e).max()),
            "score_std": sd, "relative_rmse": float(np.sqrt(np.mean(e ** 2)) / sd) if sd else 0.0,
            f"top{n}_overlap": float(np.mean(overlap))}
