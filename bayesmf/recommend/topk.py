r"""Top-n recommendation from any :class:`~bayesmf.posterior.Posterior`.

:func:`recommend` scores every candidate item for each requested user with a strategy
(:mod:`bayesmf.recommend.strategies`), removes the items the user rated in training
(``exclude_seen``, from :attr:`TrainInfo.seen_indptr` / ``seen_indices``), and returns the
``n`` best as raw ids with the score and its uncertainty. Users are processed in chunks,
so memory stays bounded: the largest arrays are ``chunk x candidates`` scores (mean
strategy) or ``draws x chunk x candidates`` components (other strategies); no users x
items matrix is ever built.

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

import numpy as np
import pandas as pd

from bayesmf.errors import SpecError
from bayesmf.recommend.strategies import (Strategy, id_keys, key_rng, make_strategy,
                                          scores_from_components, scores_from_mixture,
                                          thompson_draw_index)

__all__ = ["recommend", "recommend_indices", "TopN", "approx_error", "Scorer", "topn_indices"]

#: elements of one work array (draws x users x items for per-draw strategies)
_WORK_ELEMS = 1 << 22
_BLOCK_W = 32


# =========================================================================== selection
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


# =========================================================================== scoring
class UserBlock:
    """Per-draw user side of a chunk of users: bias ``b (S, c)``, factors ``F (S, c, k)``
    and ``pop (c,)`` (rows that are the population fallback: ``[b, F]`` is the population
    mean of ``a_u = [b_u, U_u]`` and the components get the extra variance
    :math:`x_i^\\top\\mathrm{Cov}(a_u)x_i`, :math:`x_i=[1, V_i]`)."""

    __slots__ = ("b", "F", "pop")

    def __init__(self, b, F, pop):
        self.b, self.F, self.pop = b, F, np.asarray(pop, bool)

    def __len__(self):
        return self.b.shape[1]


class Scorer:
    """Scores for a fixed posterior, strategy and candidate item set ``items_idx``
    (``None``: all items). Built once per :func:`recommend` call."""

    def __init__(self, posterior, strategy: Strategy, items_idx=None, approx=None,
                 approx_rank=None, work_elems: int = _WORK_ELEMS):
        if approx not in (None, "exact", "lowrank", "mean-factors"):
            raise SpecError(f"approx must be None, 'lowrank' or 'mean-factors', got {approx!r}")
        self.post = posterior
        self.st = strategy
        self.approx = None if approx == "exact" else approx
        self.approx_rank = approx_rank
        self.S = posterior.n_samples
        self.k = posterior.spec.rank
        if self.k == 0:  # bias-only model: the exact mean is already cheap
            self.approx = None
        self.items_idx = None if items_idx is None else np.asarray(items_idx, np.int64)
        Vf, bif = posterior.flat("V"), posterior.flat("bi")
        if self.items_idx is None:
            self.V, self.bi = Vf, bif.astype(np.float64)
        else:
            self.V, self.bi = Vf[:, self.items_idx], bif[:, self.items_idx].astype(np.float64)
        self.J = self.bi.shape[1]
        self.mu = posterior.flat("mu").astype(np.float64)
        self.lik = posterior.likelihood
        # Gaussian observation noise per draw (other families: their predictive mixture)
        self.nv = posterior.noise_var() if self.lik.mean_is_linear else np.zeros(self.S)
        self.theta = posterior.theta_flat()
        self.work_elems = int(work_elems)
        self._q = None
        self._Vaug = None

    # ---------------------------------------------------------------- user blocks
    def pop_moments(self):
        return self.post._population_moments()["user"]

    def block_from_indices(self, u, known) -> UserBlock:
        u = np.asarray(u, np.int64)
        known = np.asarray(known, bool)
        uu = np.where(known, u, 0)
        b = self.post.flat("bu")[:, uu].astype(np.float64)
        F = self.post.flat("U")[:, uu]
        if not known.all():
            a_mean, _ = self.pop_moments()
            F = F.copy()
            b[:, ~known] = a_mean[:, :1]
            F[:, ~known] = a_mean[:, None, 1:].astype(F.dtype)
        return UserBlock(b, F, ~known)

    def thompson_block(self, block: UserBlock, draw, keys) -> UserBlock:
        """For fallback rows draw one population member (from the user prior moments
        of draw ``s(u)``), so Thompson scores a concrete random user."""
        if not block.pop.any():
            return block
        a_mean, a_cov = self.pop_moments()
        b, F = block.b.copy(), block.F.copy()
        for r in np.flatnonzero(block.pop):
            s = draw[r]
            rng = key_rng(self.st.seed, int(keys[r]))
            L = np.linalg.cholesky(a_cov[s] + 1e-10 * np.eye(self.k + 1))
            a = a_mean[s] + L @ rng.standard_normal(self.k + 1)
            b[s, r] = a[0]
            F[s, r] = a[1:]
        return UserBlock(b, F, np.zeros(len(block), bool))

    # ---------------------------------------------------------------- components
    def q_items(self):
        """``x_{i,s}^T Cov_s([b_u, U_u]) x_{i,s}`` with ``x_i = [1, V_i]`` for the
        candidate items ``(S, J)``: the fallback user's extra variance."""
        if self._q is None:
            _, a_cov = self.pop_moments()
            x = np.concatenate([np.ones((self.S, self.J, 1)), self.V.astype(np.float64)],
                               axis=-1)
            self._q = np.einsum("sjk,skl,sjl->sj", x, a_cov, x)
        return self._q

    def components(self, block: UserBlock, cols=None, noise=None):
        """``(m, sd)`` each ``(S, c, J')`` for the block against candidate columns
        ``cols`` (positions in the candidate set; ``None``: all)."""
        noise = self.st.noise if noise is None else noise
        V = self.V if cols is None else self.V[:, cols]
        bi = self.bi if cols is None else self.bi[:, cols]
        m = self.mu[:, None, None] + block.b[:, :, None] + bi[:, None, :]
        if self.k:
            m = m + np.matmul(block.F, V.transpose(0, 2, 1))
        var = np.broadcast_to(self.nv[:, None, None] if noise else np.zeros((self.S, 1, 1)),
                              m.shape)
        if block.pop.any():
            q = self.q_items() if cols is None else self.q_items()[:, cols]
            var = var + block.pop[None, :, None] * q[:, None, :]
        return m, np.sqrt(var)

    def pair_components(self, block: UserBlock, cols, noise=True):
        """``(m, v)`` each ``(S, c, n)`` for per-row columns ``cols (c, n)`` (>= 0);
        ``v`` is the extra (fallback) variance without the noise."""
        cols = np.asarray(cols, np.int64)
        m = self.mu[:, None, None] + block.b[:, :, None] + self.bi[:, cols]  # S, c, n
        if self.k:
            for s in range(self.S):  # per draw: gathers from one cache-sized item matrix
                m[s] += np.einsum("ck,cnk->cn", block.F[s], self.V[s][cols], dtype=np.float64)
        v = np.zeros_like(m)
        if block.pop.any():
            v = v + block.pop[None, :, None] * self.q_items()[:, cols]
        return m, v

    def pair_mixture(self, block: UserBlock, cols):
        """The likelihood's predictive mixture of per-row columns ``cols (c, n)``."""
        m, v = self.pair_components(block, cols)
        return self.lik.predictive(m, v, self._theta_nd(m.ndim))

    def _theta_nd(self, ndim):
        return {n: np.asarray(t).reshape((self.S,) + (1,) * (ndim - 1) + np.shape(t)[1:])
                if n != "cutpoints" else np.asarray(t) for n, t in self.theta.items()}

    def pair_summary(self, block: UserBlock, cols):
        """Predictive mean, parameter variance ``Var_s(m_s) + mean_s(v_s)`` of per-row
        columns ``cols (c, n)``, streaming over draws (no ``S x c x n x k`` gather).
        For a non-Gaussian likelihood: the mean and parameter variance of its predictive
        mixture (on the data scale)."""
        if not self.lik.mean_is_linear:
            mix = self.pair_mixture(block, cols)
            return mix.mean(), mix.param_var()
        cols = np.asarray(cols, np.int64)
        c, n = cols.shape
        acc = np.zeros((c, n))
        acc2 = np.zeros((c, n))
        rows = np.arange(c)[:, None]
        for s in range(self.S):
            m = self.mu[s] + block.b[s][:, None] + self.bi[s][cols]
            if self.k:
                Vg = self.V[s][cols]  # c, n, k (gather from one draw's item matrix)
                m = m + np.einsum("ck,cnk->cn", block.F[s], Vg, dtype=np.float64)
            acc += m
            acc2 += m * m
        mean = acc / self.S
        var = np.maximum(acc2 / self.S - mean * mean, 0.0)
        if block.pop.any():
            var = var + block.pop[:, None] * self.q_items()[:, cols].mean(axis=0)
        del rows
        return mean, var

    # ---------------------------------------------------------------- mean scores
    def _item_aug(self):
        """``[V~, base_i]`` with ``V~ = [V_1..V_S]`` ``(J, kS)`` and the item part of the
        mean ``base_i = mean(mu) + mean_s b_{i,s}`` appended (float32)."""
        if self._Vaug is None:
            base = (self.mu.mean() + self.bi.mean(axis=0)).astype(np.float32)
            if self.approx is None:
                Vt = self.V.transpose(1, 0, 2).reshape(self.J, self.S * self.k)
            elif self.approx == "mean-factors":
                Vt = _cache(self.post, ("meanV",), lambda: self.post.flat("V").mean(
                    axis=0, dtype=np.float64).astype(np.float32))
                if self.items_idx is not None:
                    Vt = Vt[self.items_idx]
            else:
                Q = self._lowrank()["Q"]
                Vt = Q if self.items_idx is None else Q[self.items_idx]
            aug = np.empty((self.J, Vt.shape[1] + 1), np.float32)
            aug[:, :-1] = Vt
            aug[:, -1] = base
            self._Vaug = aug
        return self._Vaug

    def _lowrank(self):
        r = self.approx_rank or (self.k * self.post.n_chains + 8)
        return _cache(self.post, ("lowrank", int(r)), lambda: _lowrank_factors(self.post, int(r)))

    def _user_rows(self, block: UserBlock, u=None, known=None):
        """User side matching :meth:`_item_aug` (without the appended 1)."""
        if self.approx is None:
            S, c = self.S, len(block)
            return block.F.transpose(1, 0, 2).reshape(c, S * self.k) * np.float32(1.0 / S)
        if self.approx == "mean-factors":
            if u is not None and known is not None and known.all():
                Ubar = _cache(self.post, ("meanU",), lambda: self.post.flat("U").mean(
                    axis=0, dtype=np.float64).astype(np.float32))
                return Ubar[u]
            return block.F.mean(axis=0, dtype=np.float64).astype(np.float32)
        lr = self._lowrank()
        if u is not None and known is not None and known.all():
            return lr["X"][u]
        S, c = self.S, len(block)
        Ft = block.F.transpose(1, 0, 2).reshape(c, S * self.k).astype(np.float32)
        return (Ft @ lr["W"].T) * np.float32(1.0 / S)

    def mean_scores(self, block: UserBlock, u=None, known=None):
        """Posterior-mean scores ``(c, J)`` (float32) without the user constant
        ``mean_s b_{u,s}`` (added by :meth:`user_const`; it does not change a ranking)."""
        A = self._item_aug()
        X = self._user_rows(block, u, known)
        Xa = np.empty((X.shape[0], X.shape[1] + 1), np.float32)
        Xa[:, :-1] = X
        Xa[:, -1] = 1.0
        return Xa @ A.T

    def user_const(self, block: UserBlock):
        return block.b.mean(axis=0)

    def user_const_known(self, u):
        bbar = _cache(self.post, ("meanbu",), lambda: self.post.flat("bu").mean(
            axis=0, dtype=np.float64))
        return bbar[u]

    # ---------------------------------------------------------------- generic
    def scores(self, block: UserBlock, u=None, known=None, keys=None):
        """Strategy scores ``(c, J)`` for a block (full values, user constant included)."""
        if self.st.name == "mean" and self.lik.mean_is_linear:
            return self.mean_scores(block, u, known).astype(np.float64) + \
                self.user_const(block)[:, None]
        draw = None
        if self.st.name == "thompson":
            draw = thompson_draw_index(keys, self.st.seed, self.S)
            block = self.thompson_block(block, draw, keys)
        rng = np.random.default_rng(self.st.seed) if self.st.name == "utility" else None
        if not self.lik.mean_is_linear:
            # ranking by E[P(y=1)] or the expected rating is not ranking by mean eta:
            # score the likelihood's predictive mixture
            m, sd = self.components(block, noise=False)
            mix = self.lik.predictive(m, sd * sd, self._theta_nd(m.ndim))
            return scores_from_mixture(mix, self.st, draw_index=draw, rng=rng)
        m, sd = self.components(block)
        return scores_from_components(m, sd, self.st, draw_index=draw, rng=rng)

    def chunk_rows(self, chunk_size=None) -> int:
        if chunk_size is not None:
            if int(chunk_size) < 1:
                raise SpecError("chunk_size must be >= 1")
            return int(chunk_size)
        if self.st.name == "mean" and self.lik.mean_is_linear:  # ~2M float32 scores per chunk
            return max(16, min(1024, (self.work_elems // 2) // max(self.J, 1)))
        K = self.lik.K if self.lik.name == "ordinal" else 1  # categorical probs per pair
        return max(1, self.work_elems // max(self.S * self.J * K, 1))


def _run_parallel(fn, starts, n_jobs):
    """``fn(a)`` for every chunk start, in ``n_jobs`` threads (numpy releases the GIL in
    the GEMM and the selection). Output slices are disjoint, so no locking is needed."""
    import os

    if n_jobs is None:
        n_jobs = min(os.cpu_count() or 1, 8)
    n_jobs = max(1, min(int(n_jobs), len(starts)))
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: without it BLAS keeps its own threads
        threadpool_limits = None
    ctx = threadpool_limits(1, "blas") if (threadpool_limits and n_jobs > 1) else None
    try:
        if n_jobs == 1:
            for a in starts:
                fn(a)
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(n_jobs) as ex:
                for _ in ex.map(fn, starts):
                    pass
    finally:
        if ctx is not None:
            ctx.restore_original_limits()


def _cache(post, key, fn):
    c = post.__dict__.setdefault("_recommend_cache", {})
    if key not in c:
        c[key] = fn()
    return c[key]


def _lowrank_factors(post, r: int, oversample: int = 16, power_iters: int = 2, seed: int = 0,
                     chunk: int = 1024, n_jobs=None):
    """Randomized SVD ``V~ ~= Q W`` of the stacked item draws and the users' projected
    rows ``X = (1/S) U~ W^T`` (all float32). Returns dict(Q, W, X, rank, sv)."""
    S, k = post.n_samples, post.spec.rank
    M, N = len(post.items), len(post.users)
    Vt = post.flat("V").transpose(1, 0, 2).reshape(M, S * k).astype(np.float32)
    r = int(min(r, M, S * k))
    l = int(min(r + oversample, M, S * k))
    rng = np.random.default_rng(seed)
    Y = Vt @ rng.standard_normal((S * k, l)).astype(np.float32)
    for _ in range(power_iters):
        Y, _ = np.linalg.qr(Y)
        Y = Vt @ (Vt.T @ Y)
    Q, _ = np.linalg.qr(Y.astype(np.float64))
    B = Q.T @ Vt.astype(np.float64)  # l x kS
    Ub, sv, Wt = np.linalg.svd(B, full_matrices=False)
    Qr = (Q @ Ub[:, :r]).astype(np.float32)
    W = (sv[:r, None] * Wt[:r]).astype(np.float32)  # r x kS
    del Vt
    Uf = post.flat("U")
    X = np.empty((N, r), np.float32)
    WT = np.ascontiguousarray(W.T)

    def proj(a):
        Ut = Uf[:, a:a + chunk].transpose(1, 0, 2).reshape(-1, S * k).astype(np.float32)
        X[a:a + chunk] = (Ut @ WT) * np.float32(1.0 / S)

    _run_parallel(proj, list(range(0, N, chunk)), n_jobs)
    return {"Q": Qr, "W": W, "X": X, "rank": r, "sv": sv}


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
            self._keys = id_keys(self.raw)
        return self._keys[rows]

    def block(self, scorer: Scorer, rows):
        return scorer.block_from_indices(self.idx[rows], self.known[rows])

    def index_known(self, rows):
        return self.idx[rows], self.known[rows]

    def seen(self, rows):
        """``(row_of_entry, item_index)`` of training items of the chunk's users."""
        t = self.post.train
        u, kn = self.idx[rows], self.known[rows]
        starts = np.where(kn, t.seen_indptr[np.maximum(u, 0)], 0)
        ends = np.where(kn, t.seen_indptr[np.maximum(u, 0) + 1], 0)
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
                      threshold=4.0, utility=None, chunk_size=None, approx=None,
                      approx_rank=None, noise=True, quantile_method="mixture",
                      unknown="fallback", uncertainty=True, n_jobs=None, **strategy_kw):
    """Like :func:`recommend` but returns ``(source, TopN)`` with item *indices*."""
    if int(n) < 1:
        raise SpecError(f"n must be >= 1, got {n}")
    n = int(n)
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
    out_items = np.full((nU, n), -1, np.int64)
    out_scores = np.full((nU, n), -np.inf)
    out_valid = np.zeros((nU, n), bool)
    mean = std = stdp = None
    if uncertainty:
        mean, std, stdp = (np.full((nU, n), np.nan) for _ in range(3))
    step = sc.chunk_rows(chunk_size)
    nv_mean = float(sc.nv.mean())
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

    def run_chunk(a):
        rows = np.arange(a, min(nU, a + step))
        light = (st.name == "mean" and sc.approx is not None and not uncertainty
                 and isinstance(src, _PosteriorUsers) and src.known[rows].all())
        block = None if light else src.block(sc, rows)
        if st.name == "mean":
            uk = src.index_known(rows) if hasattr(src, "index_known") else (None, None)
            s = sc.mean_scores(block, *uk)
            const = sc.user_const(block) if block is not None else sc.user_const_known(uk[0])
        else:
            keys = src.keys(rows) if st.name == "thompson" else None
            s = sc.scores(block, keys=keys)
            const = None
        if exclude_seen:
            rr, it = src.seen(rows)
            if pos_of is not None:
                it = pos_of[it]
                keep = it >= 0
                rr, it = rr[keep], it[keep]
            s[rr, it] = -np.inf
        if excl_pos is not None and len(excl_pos):
            s[:, excl_pos] = -np.inf
        idx, vals, valid = topn_indices(s, n)
        del s
        vals = vals.astype(np.float64)
        if const is not None:
            vals = vals + const[:, None]
        out_scores[rows] = np.where(valid, vals, -np.inf)
        out_valid[rows] = valid
        item_idx = idx if items_idx is None else np.where(valid, items_idx[np.maximum(idx, 0)], -1)
        out_items[rows] = item_idx
        if uncertainty:
            mm, pv = sc.pair_summary(block, np.maximum(idx, 0))
            mean[rows] = np.where(valid, mm, np.nan)
            stdp[rows] = np.where(valid, np.sqrt(pv), np.nan)
            std[rows] = np.where(valid, np.sqrt(pv + nv_mean), np.nan)

    starts = list(range(0, nU, step))
    _run_parallel(run_chunk, starts, n_jobs)
    return src, TopN(out_items, out_scores, out_valid, mean, std, stdp)


def recommend(posterior, users=None, n=10, strategy="mean", *, exclude_seen=True,
              candidates=None, exclude=None, seed=None, quantile=None, threshold=4.0,
              utility=None, chunk_size=None, approx=None, approx_rank=None, noise=True,
              quantile_method="mixture", unknown="fallback", uncertainty=True,
              n_jobs=None, **strategy_kw) -> pd.DataFrame:
    """Top-``n`` items for each user, as raw ids, with the score and its uncertainty.

    Parameters
    ----------
    posterior : Posterior
    users : array-like of raw user ids, a :class:`~bayesmf.recommend.foldin.FoldedUsers`,
        or ``None`` (all users of the posterior). Unknown ids get the population fallback
        (``known_user=False``; ``unknown="raise"`` rejects them) -- see the module docs of
        :mod:`bayesmf.posterior`.
    n : int
        Items per user (fewer when a user has fewer candidates left).
    strategy : str
        ``"mean"``, ``"upper"``/``"ucb"``, ``"lower"``/``"lcb"``, ``"thompson"``,
        ``"prob"``, ``"utility"`` (see :mod:`bayesmf.recommend.strategies`).
    exclude_seen : bool
        Drop the items the user rated in training.
    candidates, exclude : array-like of raw item ids, optional
        Rank only ``candidates``; never recommend ``exclude``.
    seed : int, optional
        Thompson sampling / Monte-Carlo utility seed (same seed, same output).
    quantile, threshold, utility, noise, quantile_method
        Strategy options (``threshold`` default 4.0 for ``"prob"``).
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

    Returns
    -------
    DataFrame with columns ``user, item, rank, score, mean, std, std_param, known_user``
    (rank 1 = best), in the order of ``users`` then rank.
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
        "mean": res.mean[urow, rank0],
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
