r"""Fast top-``n`` for the per-draw strategies ``upper``/``lower`` (mixture quantiles) and
``prob`` (:math:`P(r\ge t)`) of a Gaussian likelihood: *screen, rescore, certify*.

The exact score of one (user, item) pair needs all ``S`` mixture components
:math:`\mathcal N(m_s, \sigma_s^2)` (``S x k`` multiply-adds) and, for a quantile, a
root search on the mixture CDF (``~S x 6`` normal CDFs). Solving every pair costs
``users x items x S x ~6`` CDF evaluations (~240 s CPU for ``ucb`` on MovieLens
latest-small with 300 draws); the posterior mean is one GEMM (~0.5 s). The top ``n`` only
needs the exact score of the items that can be in it:

1. **Screen** every candidate item with a moment-matched Gaussian. Per chain ``c`` the
   exact chain mean :math:`\bar m_c` (the mean GEMM restricted to the chain's draws) and
   the *independence approximation* of the parameter variance of the bilinear form
   :math:`m_s = x_s^\top y_s`, :math:`x=[1, b_u, U_u]`, :math:`y=[\mu+b_i, 1, V_i]`,

   .. math::

       \hat v_c = \bar x^\top\Sigma_y\bar x + \bar y^\top\Sigma_x\bar y
                 + \mathrm{tr}(\Sigma_x\Sigma_y)

   (exact when user and item draws are independent; two GEMMs with inner dimension
   :math:`(k+2)(k+3)/2`), chains combined by the law of total variance
   :math:`\hat v=\overline{\hat v_c}+\mathrm{Var}_c(\bar m_c)`. The screening score is the
   strategy's score under :math:`\mathcal N(\bar m, \hat v+\overline{\sigma^2_s})`:
   :math:`\bar m+\Phi^{-1}(a)\sqrt{\cdot}` or :math:`\Phi((\bar m-t)/\sqrt{\cdot})`.
2. **Rescore** the ``L`` best screened items of each user exactly (``L = screen_size``,
   :func:`screen_size`): the exact mixture quantile
   (:func:`~bayesmf.predictive.mixture_quantile`) or mixture probability from all ``S``
   components. :math:`T_u` = the ``n``-th best exact score.
3. **Certify** (``quantile_method="bounded"``) that no other item can reach
   :math:`T_u`. For a quantile :math:`Q_i(a) < \theta \iff F_i(\theta) > a` with
   :math:`F_i(\theta)=\frac1S\sum_s\Phi((\theta-m_s)/\sigma_s)`; for ``prob`` the score
   itself is :math:`\frac1S\sum_s\Phi((m_s-t)/\sigma_s)`. Both are means over draws of
   :math:`\Phi(w_s)`, bounded from below (above) by a step function: ``w`` on a grid of
   width :math:`h=1/64` over :math:`[-8, 8]`, :math:`\Phi` of the grid point one cell
   below (above) -- plus one more cell of slack for float32 rounding of ``w`` and a
   relative ``1e-4`` on the mean (float32 sums of ``S`` terms). Per draw that is one float32 GEMM
   :math:`[\kappa F_u, \kappa, \rho_u]\,[V_i, b_i, 1]^\top` that yields the grid index
   directly (:math:`\kappa=\pm\sigma_s^{-1}/h`), a clip, a table lookup and a sum. Draws
   are streamed; an item is dropped from the stream as soon as it is certified or can no
   longer be (for ``lower`` and ``prob`` most items are certified after a fraction of
   the draws; ``upper`` needs ~90% of them). The certified items' exact scores are
   strictly below :math:`T_u` (with :math:`\theta=T_u-10^{-8}(1+|T_u|)`).
4. Items neither rescored nor certified are rescored exactly, and the top ``n`` of all
   exactly scored items is returned (ties: the lower item index). Every item of the true
   top ``n`` -- and every item tied with its ``n``-th score -- has an exact score
   :math:`\ge T_u` and is therefore scored exactly: **the result equals scoring every
   pair exactly** (up to the root finder's tolerance ``1e-10``).

Cost: steps 1-2 are about the mean GEMM plus ``users x L`` solves; step 3 streams
``users x items x ~S`` elements (one float32 GEMM, an integer conversion, a table lookup
and an add each, ~3 ns; ``upper`` needs ~90% of the draws before an item can be
certified, ``lower``/``prob`` fewer). Measured (``benchmarks/results/
recommend_strategies.md``): 6-12x the ``mean`` strategy, against 100-1000x for solving
every pair.

``quantile_method="approx"`` stops after step 2: the top ``n`` among the ``L`` rescored
items (exact scores, but an item outside the screened ``L`` is missed when the
independence approximation misorders it by that much). ``"exact"`` scores every pair
(the reference; ``bayesmf.scoring.scorer``).

Scope: Gaussian likelihood, ``noise=True`` and ``S > 1``; other cases (discrete
likelihoods, the noise-free point-mass mixture, MAP) use the per-pair path. Unknown users
(population fallback) add :math:`\bar q_i` to the screening variance and certify with
per-item component variances (two extra passes per draw).

This module is pure numpy/scipy.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

from bayesmf._memory import check_allocation, memory_limit
from bayesmf.predictive import GaussianMixture

__all__ = ["bounded_topn", "supports_bounded", "prepare_bounded", "screen_scores", "exact_pair_scores",
           "GRID_H", "GRID_LO"]

#: grid of the certification step: w in [GRID_LO, -GRID_LO], cells of width GRID_H
GRID_H = 1.0 / 64
GRID_LO = -8.0
_G = int(round(2 * -GRID_LO / GRID_H)) + 3          # table length
_EPS_MEAN = 1e-4                                     # relative slack on the mean
_DRAW_BLOCK = 16                                     # draws between decisions
_TILE = 1 << 15                                      # pairs per item tile (in cache)


def _tables():
    j = np.arange(_G, dtype=np.float64)
    lo = ndtr(GRID_LO + (j - 2) * GRID_H)
    lo[0] = 0.0
    up = ndtr(GRID_LO + (j + 1) * GRID_H)
    up[-1] = 1.0
    lo32 = lo.astype(np.float32)
    lo32 = np.where(lo32.astype(np.float64) > lo, np.nextafter(lo32, np.float32(-1)), lo32)
    up32 = up.astype(np.float32)
    up32 = np.where(up32.astype(np.float64) < up, np.nextafter(up32, np.float32(2)), up32)
    return np.maximum(lo32, 0).astype(np.float32), np.minimum(up32, 1).astype(np.float32)


_LO_TAB, _UP_TAB = _tables()


def supports_bounded(scorer) -> bool:
    """Whether the screen/rescore/certify path applies (Gaussian likelihood, ``upper``,
    ``lower`` or ``prob``, observation noise included, more than one draw, a rank > 0,
    quantile method ``bounded`` or ``approx``)."""
    st = scorer.st
    return (st.name in ("upper", "lower", "prob") and st.noise
            and st.quantile_method in ("bounded", "approx")
            and scorer.lik.gaussian_noise and scorer.S > 1 and scorer.k > 0)


def screen_size(strategy, n: int, J: int) -> int:
    """``L``: items per user rescored exactly after screening. Default: ``"bounded"``
    ``max(n + 5, 3n/2)`` (it only sets the threshold; a certificate costs ~1/50 of a
    solve, so fewer solves are cheaper), ``"approx"`` ``max(3n, 30)`` (its accuracy)."""
    if strategy.screen_size is not None:
        L = strategy.screen_size
    elif strategy.quantile_method == "bounded":
        L = max(n + 5, (3 * n) // 2)
    else:
        L = max(3 * n, 30)
    return int(max(n, min(L, J)))


# =========================================================================== screening
class _Moments:
    """Item-side moments per chain (cached on the scorer; built once per recommend)."""

    def __init__(self, sc):
        post = sc.post
        C = post.n_chains
        S, J, k = sc.S, sc.J, sc.k
        D = S // C
        kp = k + 2
        self.C, self.D, self.kp = C, D, kp
        self.iu = np.triu_indices(kp)
        P = len(self.iu[0])
        step = max(1, (1 << 21) // max(D * kp, 1))      # items per moment block
        check_allocation(4 * J * (2 * P * C + (S * k if C > 1 else 0) + 2 * C)
                         + 8 * min(J, step) * (D * kp + 3 * kp * kp),
                         f"screening moments of {J} items x {C} chain(s)",
                         hint="pass fewer candidate items, thin the posterior or use "
                              "quantile_method='exact'")
        self.w2 = np.where(self.iu[0] == self.iu[1], 1.0, 2.0)
        self.G = []        # per chain (J, 2P) float32: [pack(Sy), pack(yy^T + Sy)]
        self.base = []     # per chain (J,) mean of mu + b_i
        self.Vt = []       # per chain (J, D k) float32 stacked item draws (C > 1)
        for c in range(C):
            sl = slice(c * D, (c + 1) * D)
            e = sc.mu[sl, None] + sc.bi[sl]                      # D, J
            g = np.empty((J, 2 * P), np.float32)
            for a in range(0, J, step):
                js = slice(a, min(J, a + step))
                Y = np.empty((e[:, js].shape[1], D, kp), np.float32)   # items, D, kp
                Y[..., 0] = e[:, js].T
                Y[..., 1] = 1.0
                Y[..., 2:] = sc.V[sl, js].transpose(1, 0, 2)
                yb = Y.mean(axis=1, dtype=np.float64)            # j, kp
                Y -= yb[:, None, :].astype(np.float32)
                Sy = np.matmul(Y.transpose(0, 2, 1), Y).astype(np.float64) / D
                yy = yb[:, :, None] * yb[:, None, :]
                g[js, :P] = Sy[:, self.iu[0], self.iu[1]]
                g[js, P:] = (yy + Sy)[:, self.iu[0], self.iu[1]]
            self.G.append(g)
            self.base.append(e.mean(axis=0))
            if C > 1:
                self.Vt.append(np.ascontiguousarray(
                    sc.V[sl].transpose(1, 0, 2).reshape(J, D * k)))

    def user_features(self, sc, block, c):
        """``(mean_b, H)``: chain-``c`` mean user bias ``(rows,)`` and the packed user
        features ``[x̄x̄ᵀ, Σx]`` ``(rows, 2P)`` float32 (off-diagonals doubled)."""
        sl = slice(c * self.D, (c + 1) * self.D)
        b = block.b[sl]
        F = block.F[sl]
        rows = b.shape[1]
        X = np.empty((self.D, rows, self.kp))
        X[..., 0] = 1.0
        X[..., 1] = b
        X[..., 2:] = F
        xb = X.mean(axis=0)
        X -= xb
        Sx = np.matmul(X.transpose(1, 2, 0), X.transpose(1, 0, 2)) / self.D
        P = len(self.iu[0])
        H = np.empty((rows, 2 * P), np.float32)
        H[:, :P] = (xb[:, :, None] * xb[:, None, :])[:, self.iu[0], self.iu[1]] * self.w2
        H[:, P:] = Sx[:, self.iu[0], self.iu[1]] * self.w2
        return xb[:, 1], H


def _moments(sc) -> _Moments:
    if sc._moments is None:
        sc._moments = _Moments(sc)
    return sc._moments


def prepare_bounded(sc) -> None:
    """Build the scorer's lazy caches used by :func:`bounded_topn` (call once before
    chunks run in parallel threads)."""
    _moments(sc)
    _abs_max(sc)
    if sc.st.quantile_method == "bounded":
        _aug_cache(sc)
    if sc.post.n_chains == 1:
        sc._item_aug()


def screen_moments(sc, block):
    """Posterior mean ``(rows, J)`` (exact) and the screening variance of ``m_s``
    (independence approximation, see module docs) for a block of users."""
    mo = _moments(sc)
    rows = len(block)
    C = mo.C
    means, var = [], np.zeros((rows, sc.J))
    for c in range(C):
        bbar, H = mo.user_features(sc, block, c)
        if C == 1:
            mc = sc.mean_scores(block).astype(np.float64) + sc.user_const(block)[:, None]
        else:
            sl = slice(c * mo.D, (c + 1) * mo.D)
            Ft = block.F[sl].transpose(1, 0, 2).reshape(rows, mo.D * sc.k)
            mc = (Ft * np.float32(1.0 / mo.D)) @ mo.Vt[c].T
            mc = mc.astype(np.float64) + mo.base[c][None, :] + bbar[:, None]
        means.append(mc)
        var += (H @ mo.G[c].T).astype(np.float64)
    mean = sum(means) / C
    var /= C
    if C > 1:
        for mc in means:
            var += (mc - mean) ** 2 / C
    np.maximum(var, 0.0, out=var)
    if block.pop.any():
        var += block.pop[:, None] * sc.q_items().mean(axis=0)[None, :]
    return mean, var


def screen_scores(sc, block):
    """Screening scores ``(rows, J)``: the strategy under the moment-matched Gaussian of
    :func:`screen_moments` plus the mean observation noise."""
    mean, var = screen_moments(sc, block)
    sd = np.sqrt(var + float(sc.nv.mean()))
    st = sc.st
    if st.name == "prob":
        return ndtr((mean - st.threshold) / sd)
    return mean + ndtri(st.quantile) * sd


# =========================================================================== exact
def _pair_m(sc, block, rows, cols):
    """Per-draw ``m (S, P)`` and fallback variance ``v (S, P)`` of flat pairs
    (``rows``: rows of the block, ``cols``: candidate positions), float64."""
    S = sc.S
    m = sc.mu[:, None] + block.b[:, rows] + sc.bi[:, cols]
    for s in range(S):
        m[s] += np.einsum("pk,pk->p", block.F[s][rows], sc.V[s][cols], dtype=np.float64)
    if block.pop[rows].any():
        v = block.pop[rows][None, :] * sc.q_items()[:, cols]
    else:
        v = 0.0
    return m, v


def exact_pair_scores(sc, block, rows, cols):
    """Exact strategy scores of flat pairs (the mixture over all ``S`` components),
    processed in batches of bounded size."""
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    P = len(rows)
    out = np.empty(P)
    step = max(1, sc.work_elems // max(sc.S, 1))
    st = sc.st
    for a in range(0, P, step):
        sl = slice(a, min(P, a + step))
        m, v = _pair_m(sc, block, rows[sl], cols[sl])
        mix = GaussianMixture(m, np.sqrt(v + sc.nv[:, None]))
        out[sl] = (mix.prob_at_least(st.threshold) if st.name == "prob"
                   else mix.quantile(st.quantile))
    return out


# =========================================================================== certify
def _aug_cache(sc):
    """``[V_s, b_{i,s}, 1]`` of every draw ``(S, J, k+2)`` float32, cached on the scorer
    when it takes at most 1/8 of the memory limit and 1 GiB (else built per tile)."""
    if getattr(sc, "_aug", None) is None:
        nbytes = 4 * sc.S * sc.J * (sc.k + 2)
        lim, _ = memory_limit()
        if nbytes <= min(1 << 30, (lim if lim else 1 << 62) // 8):
            A = np.empty((sc.S, sc.J, sc.k + 2), np.float32)
            A[..., :sc.k] = sc.V
            A[..., sc.k] = sc.bi
            A[..., sc.k + 1] = 1.0
            sc._aug = A
        else:
            sc._aug = False
    return sc._aug


def _item_aug(sc, s, cols):
    """``[V_s, b_{i,s}, 1]`` of the candidate positions ``cols`` (None: all), float32."""
    A = _aug_cache(sc)
    if A is not False:
        if cols is None:
            return A[s]
        if len(cols) and cols[-1] - cols[0] == len(cols) - 1:  # a contiguous range
            return A[s, cols[0]:cols[-1] + 1]
        return A[s][cols]
    V = sc.V[s] if cols is None else sc.V[s][cols]
    bi = sc.bi[s] if cols is None else sc.bi[s][cols]
    A = np.empty((V.shape[0], sc.k + 2), np.float32)
    A[:, :sc.k] = V
    A[:, sc.k] = bi
    A[:, sc.k + 1] = 1.0
    return A


class _Bufs:
    """Work arrays of :func:`certify` for ``rows x width`` pairs (reused over draws and
    item tiles)."""

    def __init__(self, r, c):
        self.r = r
        self.g = np.empty(r * c, np.float32)
        self.gi = np.empty(r * c, np.intp)
        self.val = np.empty(r * c, np.float32)
        self.acc = np.empty(r * c, np.float32)

    def view(self, w):
        n = self.r * w
        return tuple(x[:n].reshape(self.r, w) for x in (self.g, self.gi, self.val, self.acc))


def _abs_max(sc):
    """``max_i |[V_{i,s}, b_{i,s}, 1]|`` per draw ``(S, k+2)`` (bounds ``|g|``)."""
    if getattr(sc, "_amax", None) is None:
        am = np.empty((sc.S, sc.k + 2))
        if sc.J:
            am[:, :sc.k] = np.maximum(sc.V.max(axis=1), -sc.V.min(axis=1))
            am[:, sc.k] = np.maximum(sc.bi.max(axis=1), -sc.bi.min(axis=1))
        else:
            am[:, :sc.k + 1] = 0.0
        am[:, sc.k + 1] = 1.0
        sc._amax = am
    return sc._amax


def certify(sc, block, rows, todo, thr):
    """Which of the ``todo (r, J)`` pairs of block rows ``rows`` provably score below
    ``thr (r,)`` (the module docs, step 3). Returns a boolean ``(r, J)`` mask."""
    st = sc.st
    S, k = sc.S, sc.k
    r_n = len(rows)
    cert = np.zeros(todo.shape, bool)
    if not todo.any():
        return cert
    prob = st.name == "prob"
    pop = block.pop[rows]
    if pop.any() and not pop.all():  # known and fallback rows certify separately
        out = np.zeros(todo.shape, bool)
        for mask in (pop, ~pop):
            idx = np.flatnonzero(mask)
            out[idx] = certify(sc, block, rows[idx], todo[idx], thr[idx])
        return out
    per_item = bool(pop.all())
    thr = np.asarray(thr, np.float64)
    if prob:  # w_s = (m_s - t') / sigma_s with t' = t - 1e-8 (1 + |t|); upper bound < thr
        theta = np.full(r_n, st.threshold - 1e-8 * (1 + abs(st.threshold)))
        sgn, tab = 1.0, _UP_TAB
    else:     # w_s = (theta - m_s) / sigma_s with theta = thr - 1e-8 (1 + |thr|); lower > a
        theta = thr - 1e-8 * (1 + np.abs(thr))
        sgn, tab = -1.0, _LO_TAB
    a = st.quantile
    all_cols = np.flatnonzero(todo.any(axis=0))   # streamed candidate positions
    b = block.b[:, rows]
    F = block.F[:, rows]
    rinv = 1.0 / np.sqrt(sc.nv)     # (S,)
    off = -GRID_LO / GRID_H + 1.0
    q = sc.q_items() if per_item else None
    # per draw, the row side of the GEMM: [kappa F, kappa, rho] (known rows: the GEMM
    # yields the grid index directly) or [F, 1, mu + b - theta] (fallback rows: scaled
    # per item afterwards)
    Fa = np.empty((S, r_n, k + 2), np.float32)
    if per_item:
        Fa[:, :, :k] = F
        Fa[:, :, k] = 1.0
        Fa[:, :, k + 1] = sc.mu[:, None] + b - theta[None, :]
        safe = np.zeros(S, bool)
    else:
        kap = (sgn * rinv / GRID_H)[:, None]                       # (S, 1)
        Fa[:, :, :k] = kap[:, :, None] * F
        Fa[:, :, k] = kap
        Fa[:, :, k + 1] = kap * (sc.mu[:, None] + b - theta[None, :]) + off
        # |g| < 2^50 (always, for finite draws of sane size): the integer conversion is
        # exact and take(mode="clip") clips it to the table; else clip the floats first
        amax = _abs_max(sc)             # (S, k+2): max_i |[V_i, b_i, 1]| per draw
        safe = (np.abs(Fa).astype(np.float64) @ amax[:, :, None])[..., 0].max(axis=1) \
            < 2.0 ** 50
    # an item can be decided only once enough draws are in (unseen draws count 0 / 1)
    first = int(np.floor(S * a)) if not prob else int(np.floor(S * (1 - thr.max())))
    eps = max(_EPS_MEAN, S * 2.0 ** -20)
    width = max(64, _TILE // max(r_n, 1))
    bufs = _Bufs(r_n, min(width, len(all_cols)))
    for t0 in range(0, len(all_cols), width):   # item tiles: the work arrays stay in cache
        cols = all_cols[t0:t0 + width]
        w = len(cols)
        active = todo[:, cols]
        g, gi, val, acc = bufs.view(w)
        acc.fill(0.0)
        for s0 in range(0, S, _DRAW_BLOCK):
            s1 = min(S, s0 + _DRAW_BLOCK)
            for s in range(s0, s1):
                np.matmul(Fa[s], _item_aug(sc, s, cols).T, out=g)
                if per_item:   # g = (m - theta) * sgn * r_{s,i} / h + off
                    ri = 1.0 / np.sqrt(sc.nv[s] + q[s][cols])
                    g *= (sgn / GRID_H * ri).astype(np.float32)[None, :]
                    g += np.float32(off)
                if not safe[s]:
                    np.clip(g, -1, _G, out=g)
                np.copyto(gi, g, casting="unsafe")   # truncation; clipped below 0 -> 0
                np.take(tab, gi, out=val, mode="clip")
                acc += val
            seen = s1
            if seen <= first and seen < S:
                continue
            # decisions on the still-active pairs
            mean_now = acc / np.float32(S)
            # float32 sums of S table values are within a relative 2^-24 S < eps
            if prob:   # upper bound: unseen draws count 1
                ub = (mean_now + np.float32((S - seen) / S)) * np.float32(1 + eps)
                newly = active & (ub < thr[:, None])
                hopeless = active & (mean_now >= thr[:, None])
            else:      # lower bound: unseen draws count 0
                newly = active & (mean_now * np.float32(1 - eps) > a)
                hopeless = active & (mean_now + np.float32((S - seen) / S) <= a)
            if newly.any():
                nr, nc = np.nonzero(newly)
                cert[nr, cols[nc]] = True
            active &= ~(newly | hopeless)
            keep = active.any(axis=0)
            if not keep.any():
                break
            if keep.sum() < 0.75 * w:   # stream only the undecided items
                cols, active = cols[keep], active[:, keep]
                acc_k = acc[:, keep]
                w = len(cols)
                g, gi, val, acc = bufs.view(w)
                acc[...] = acc_k
    return cert


# =========================================================================== top-n
def bounded_topn(sc, block, n: int, excluded=None):
    """Top-``n`` ``(idx, vals, valid)`` (positions in the candidate set) of a block for
    :func:`supports_bounded` strategies; ``excluded``: boolean ``(rows, J)`` of pairs that
    must not be recommended (seen / excluded items). See the module docs."""
    from bayesmf.scoring.select import topn_indices

    rows_n, J = len(block), sc.J
    check_allocation(8 * 8 * rows_n * J, f"bounded top-{n} work arrays of {rows_n} users x "
                     f"{J} items", hint="pass a smaller chunk_size or fewer candidate items")
    scr = screen_scores(sc, block)
    if excluded is not None:
        scr[excluded] = -np.inf
    L = screen_size(sc.st, n, J)
    sidx, _, svalid = topn_indices(scr, L)
    exact = np.full((rows_n, J), -np.inf)
    rr, cc = np.nonzero(svalid)
    cols_s = sidx[rr, cc]
    exact[rr, cols_s] = exact_pair_scores(sc, block, rr, cols_s)
    if sc.st.quantile_method == "bounded":
        eligible = np.isfinite(scr)
        scored = np.isfinite(exact)
        todo = eligible & ~scored
        # T_u: n-th best exact score (-inf when fewer than n items were rescored)
        _, tv, tvalid = topn_indices(exact, n)
        thr = np.where(tvalid[:, -1], tv[:, -1], -np.inf)
        can = np.isfinite(thr)
        cert = np.zeros_like(todo)
        if can.any() and todo[can].any():
            ci = np.flatnonzero(can)
            cert[ci] = certify(sc, block, ci, todo[ci], thr[ci])
        left = todo & ~cert
        if left.any():
            lr, lc = np.nonzero(left)
            exact[lr, lc] = exact_pair_scores(sc, block, lr, lc)
        sc.stats_add(rescored=int(len(rr)), certified=int(cert.sum()), solved=int(left.sum()))
    else:
        sc.stats_add(rescored=int(len(rr)))
    return topn_indices(exact, n)
