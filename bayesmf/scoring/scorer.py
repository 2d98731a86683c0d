"""Scores of a posterior for blocks of users against candidate items, for every strategy
and likelihood: the machinery that recommendation (:mod:`bayesmf.recommend.topk`) and
ranking evaluation (:mod:`bayesmf.evaluate.protocols`) share. The posterior-mean GEMM fast
path, the low-rank and mean-factor approximations and their error are documented in
:mod:`bayesmf.recommend.topk`."""

from __future__ import annotations

import threading
from dataclasses import replace

import numpy as np

from bayesmf._memory import check_allocation, memory_limit
from bayesmf.errors import SpecError
from bayesmf.model import linear
from bayesmf.scoring.bounded import supports_bounded
from bayesmf.scoring.strategies import (Strategy, key_rng, scores_from_components,
                                        scores_from_mixture, thompson_draw_index)

__all__ = ["Scorer", "UserBlock", "WORK_ELEMS"]

#: elements of one work array (draws x users x items for per-draw strategies)
WORK_ELEMS = 1 << 22
_HINT = ("pass fewer users per call or a smaller chunk_size, restrict the candidate items, "
         "or thin the posterior (Posterior.thin)")
_WORK_ELEMS = WORK_ELEMS


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
        if strategy.name == "prob" and strategy.threshold is None:
            # the family's own notion of "relevant" (Bernoulli/Poisson: y >= 1)
            strategy = replace(strategy,
                               threshold=float(posterior.likelihood.relevance_threshold))
        if strategy.name == "prob":
            posterior.likelihood.check_relevance_threshold(strategy.threshold)
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
        self.nv = posterior.noise_var() if self.lik.gaussian_noise else np.zeros(self.S)
        self.theta = posterior.theta_flat()
        self.work_elems = int(work_elems)
        self._q = None
        self._Vaug = None
        self._moments = None  # screening moments of the bounded top-n (scoring.bounded)
        self.stats = {"rescored": 0, "certified": 0, "solved": 0}
        self._lock = threading.Lock()

    def stats_add(self, **kw):
        """Count pairs of the bounded top-n path: ``rescored`` (screened items scored
        exactly), ``certified`` (proved below the n-th score without solving), ``solved``
        (neither: scored exactly)."""
        with self._lock:
            for key, v in kw.items():
                self.stats[key] += int(v)

    # ---------------------------------------------------------------- user blocks
    def pop_moments(self):
        return self.post._population_moments()["user"]

    def block_from_indices(self, u, known) -> UserBlock:
        u = np.asarray(u, np.int64)
        known = np.asarray(known, bool)
        uu = np.where(known, u, 0)
        Ub = self.post.flat("U")
        if Ub.shape[1] == 0:  # no user row at all (a Spark batch of unknown ids only)
            b = np.zeros((self.S, len(u)))
            F = np.zeros((self.S, len(u)) + Ub.shape[2:], Ub.dtype)
        else:
            b = self.post.flat("bu")[:, uu].astype(np.float64)
            F = Ub[:, uu]
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
            check_allocation(8 * self.S * self.J * (self.k + 3),
                             f"fallback variances of {self.J} items x {self.S} draws",
                             hint=_HINT)
            _, a_cov = self.pop_moments()
            x = np.concatenate([np.ones((self.S, self.J, 1)), self.V.astype(np.float64)],
                               axis=-1)
            self._q = np.einsum("sjk,skl,sjl->sj", x, a_cov, x)
        return self._q

    def components(self, block: UserBlock, cols=None, noise=None):
        """``(m, sd)`` each ``(S, c, J')`` for the block against candidate columns
        ``cols`` (positions in the candidate set; ``None``: all)."""
        noise = self.st.noise if noise is None else noise
        ncol = self.J if cols is None else len(cols)
        check_allocation(8 * 4 * self.S * len(block) * ncol,
                         f"per-draw scores of {len(block)} users x {ncol} items x "
                         f"{self.S} draws", hint=_HINT)
        V = self.V if cols is None else self.V[:, cols]
        bi = self.bi if cols is None else self.bi[:, cols]
        m = linear.block_eta(self.mu, block.b, bi, block.F, V)
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
        check_allocation(8 * 3 * self.S * cols.size,
                         f"components of {cols.size} pairs x {self.S} draws", hint=_HINT)
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
        return self.lik.predictive(m, v, self.theta)

    def pair_summary(self, block: UserBlock, cols):
        r"""``(mean, param_var, var)`` of the predictive of per-row columns ``cols (c, n)``:
        the mean, the parameter variance ``Var_s(m_s) + mean_s(v_s)`` and the predictive
        variance (parameter + the mean observation noise), streaming over draws (no
        ``S x c x n x k`` gather). For a non-Gaussian likelihood: those of its predictive
        mixture on the data scale (``var`` by total variance, e.g. Poisson
        :math:`\mathrm{Var}_s\lambda_s + \bar\lambda`)."""
        if not self.lik.gaussian_noise:
            mix = self.pair_mixture(block, cols)
            return mix.mean(), mix.param_var(), mix.var()
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
        return mean, var, var + float(self.nv.mean())

    # ---------------------------------------------------------------- mean scores
    def _item_aug(self):
        """``[V~, base_i]`` with ``V~ = [V_1..V_S]`` ``(J, kS)`` and the item part of the
        mean ``base_i = mean(mu) + mean_s b_{i,s}`` appended (float32)."""
        if self._Vaug is None:
            check_allocation(4 * self.J * (self.S * self.k + 2),
                             f"the stacked item draws ({self.J} items x {self.S} draws x "
                             f"rank {self.k})", hint=_HINT)
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
        rows = len(block) if block is not None else len(u)
        check_allocation(4 * rows * (self.J + self.S * self.k + 1),
                         f"mean scores of {rows} users x {self.J} items", hint=_HINT)
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
            return self.thompson_scores(block, draw)
        rng = np.random.default_rng(self.st.seed) if self.st.name == "utility" else None
        if self.lik.gaussian_noise:
            m, sd = self.components(block)
            return scores_from_components(m, sd, self.st, draw_index=draw, rng=rng)
        m, sd = self.components(block, noise=False)
        return self.scores_of_components(m, sd * sd, draw_index=draw, rng=rng)

    def thompson_scores(self, block: UserBlock, draw):
        r"""Thompson scores ``(c, J)``: row ``r`` scored by its own draw ``s = draw[r]``
        only, :math:`m_s = \mu_s + b_{u,s} + b_{i,s} + U_{u,s}^\top V_{i,s}` (through the
        likelihood's component mean for non-Gaussian families). Rows sharing a draw are
        one GEMM, so the cost is that of one draw, not ``S`` (``block`` has no fallback
        rows: :meth:`thompson_block` replaced them by population members)."""
        draw = np.asarray(draw, np.int64)
        c = len(block)
        check_allocation(8 * 3 * c * self.J, f"Thompson scores of {c} users x {self.J} "
                         "items", hint=_HINT)
        out = np.empty((c, self.J))
        order = np.argsort(draw, kind="stable")
        ds = draw[order]
        cuts = np.flatnonzero(np.diff(ds)) + 1
        for grp in np.split(order, cuts):
            if not len(grp):
                continue
            s = int(draw[grp[0]])
            m = (self.mu[s] + block.b[s, grp][:, None]) + self.bi[s][None, :]
            if self.k:  # float64 GEMM rounded to float32: the same bits for any grouping
                f = block.F[s, grp].astype(np.float64)
                m = m + (f @ self.V[s].T.astype(np.float64)).astype(np.float32)
            if not self.lik.mean_is_linear:
                th = {name: v[s:s + 1] for name, v in self.theta.items()}
                m = self.lik.predictive(m[None], np.zeros((1,) + m.shape), th) \
                    .component_means()[0]
            out[grp] = m
        return out

    def scores_of_components(self, m, v, draw_index=None, rng=None):
        """Strategy scores from per-draw linear predictors ``m`` and their extra
        (fallback) variance ``v`` (same shapes, leading draw axis): through the
        likelihood's predictive mixture (ranking by E[P(y=1)] or the expected rating is
        not ranking by mean eta); the Gaussian adds its noise when the strategy wants it."""
        if self.lik.gaussian_noise:
            nv = self.nv.reshape((-1,) + (1,) * (m.ndim - 1)) if self.st.noise else 0.0
            return scores_from_components(m, np.sqrt(v + nv), self.st, draw_index=draw_index,
                                          rng=rng)
        mix = self.lik.predictive(m, v, self.theta)
        return scores_from_mixture(mix, self.st, draw_index=draw_index, rng=rng)

    def chunk_rows(self, chunk_size=None) -> int:
        if chunk_size is not None:
            if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) \
                    or int(chunk_size) < 1:
                raise SpecError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
            return int(chunk_size)
        J = max(self.J, 1)
        if self.st.name == "mean" and self.lik.mean_is_linear:  # ~2M float32 scores per chunk
            rows, per_row = max(16, min(1024, (self.work_elems // 2) // J)), 8 * J
        elif supports_bounded(self):  # screening works on ~2M-element (rows x items) arrays
            rows, per_row = max(1, min(512, (self.work_elems // 2) // J)), 64 * J
        elif self.st.name == "thompson":  # one draw per row: (rows x items) arrays
            rows, per_row = max(1, min(1024, (self.work_elems // 2) // J)), 24 * J
        else:
            K = self.lik.K if self.lik.name == "ordinal" else 1  # categorical probs per pair
            rows = max(1, self.work_elems // max(self.S * J * K, 1))
            per_row = 32 * self.S * J * K
        lim, _ = memory_limit()
        if lim:  # a chunk's work arrays stay within 1/8 of the memory limit (threads)
            rows = max(1, min(rows, (lim // 8) // per_row))
        return rows



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
    check_allocation(4 * (2 * M * S * k + (M + N) * (r + oversample)),
                     f"the low-rank factors (rank {r}) of {M} items x {S} draws", hint=_HINT)
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


