r"""Ordered probit for star ratings (integer or half-star scales), with learned cutpoints.

The :math:`K` levels :math:`l_0 < \dots < l_{K-1}` are the distinct training values (up to
:data:`MAX_LEVELS`); internally an observation is its level index :math:`y\in\{0..K-1\}`.

.. math::

    z_{ui} = \eta_{ui} + \varepsilon_{ui},\ \ \varepsilon\sim\mathcal N(0,1),\qquad
    y_{ui} = j \iff c_j < z_{ui} \le c_{j+1},\qquad
    P(y = j\mid\eta, c) = \Phi(c_{j+1}-\eta) - \Phi(c_j - \eta)

with :math:`c_0 = -\infty`, :math:`c_K = +\infty` and the :math:`K-1` cutpoints
:math:`c_1 < \dots < c_{K-1}` (the draw ``cutpoints``). Identification: with a global mean
:math:`\mu` in the model :math:`c_1 = 0` (the location is :math:`\mu`'s); otherwise
:math:`c_1` is free. Unconstrained parameters :math:`u`: the free :math:`c_1` and the
log-gaps :math:`u_j = \log(c_{j+1} - c_j)`, with the prior :math:`c_1 \sim \mathcal N(0,
2^2)`, :math:`u_j \sim \mathcal N(0, 1)` (median gap 1 latent standard deviation; weak
against thousands of ratings, proper for simulation-based calibration).

**Gibbs** (Albert & Chib 1993): :math:`z \mid y, \eta, c` is :math:`\mathcal N(\eta, 1)`
truncated to :math:`(c_y, c_{y+1}]` (weight 1 for the row solver). The cutpoints are not
drawn from :math:`c\mid z` (that uniform step barely moves with many ratings, Cowles 1996):
they are updated with :math:`z` integrated out, by a Metropolis–Hastings step on
:math:`p(u\mid\eta, y)\propto \prod P(y\mid\eta,c(u))\,p(u)` whose proposal is the local
Laplace approximation at the conditional mode: an independence sampler (as myFM's) with
the multivariate :math:`t_5(\hat u, H^{-1})` proposal, :math:`\hat u` found by Newton
iterations (:func:`newton_mode`, analytic derivatives: :meth:`OrdinalProbit.cut_fgh`) from the cutpoints that match the level frequencies
under :math:`\eta + \mathcal N(0,1)` (a function of :math:`\eta, y` only, so the proposal
does not depend on the current :math:`u`), :math:`-H` the Hessian of the log target at
:math:`\hat u`; accepted with :math:`\min(1, \frac{p(u')q(u)}{p(u)q(u')})`. With many ratings
the target is close to Gaussian and nearly every proposal is accepted: the cutpoints
jump to an independent draw of their conditional each sweep. :math:`z` is drawn afresh
at the start of the next sweep, so the scheme is a valid blocked Gibbs sampler.

**MAP** (``working``): :math:`\ell = -\log P(y\mid\eta)` has :math:`\ell' = \eta - E[z]`
and :math:`\ell'' = 1 - \mathrm{Var}[z]` for :math:`z` the truncated normal above.

**Predictive**: per draw the categorical :math:`P(y = l_j) = \Phi((c_{j+1}-m)/s) -
\Phi((c_j-m)/s)` with :math:`s = \sqrt{1 + v}` (exact for Gaussian extra variance
:math:`v` of :math:`\eta`), a :class:`~bayesmf.predictive.CategoricalMixture`: expected
rating, exact log-loss, RPS, :math:`P(r\ge t)`, categorical quantiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bayesmf.errors import DataError, SpecError
from bayesmf.model.likelihoods.base import Likelihood

__all__ = ["OrdinalProbit", "MAX_LEVELS", "log_interval_prob"]

MAX_LEVELS = 50
_C1_SD = 2.0
_GAP_SD = 1.0
#: degrees of freedom of the multivariate-t independence proposal of the cutpoints
_T_DF = 5
#: Newton iterations to the conditional mode (from the current cutpoints)
_NEWTON_STEPS = 4


def log_interval_prob(a, b):
    r""":math:`\log(\Phi(b) - \Phi(a))` for :math:`a < b` (either may be infinite), stable
    in both tails (jnp): on the upper side it is computed as
    :math:`\log(\Phi(-a) - \Phi(-b))`."""
    import jax.numpy as jnp
    from jax.scipy.special import log_ndtr

    return _log_interval(a, b, jnp, log_ndtr)


def _log_interval(a, b, xp, log_ndtr):
    """The computation of :func:`log_interval_prob` in the array namespace ``xp``
    (``jax.numpy`` or ``pytensor.tensor``) with its ``log_ndtr``."""
    upper = a > 0
    hi = xp.where(upper, -a, b)
    lo = xp.where(upper, -b, a)
    # an infinite lower end means log Phi(hi); keep -inf out of log_ndtr (and +inf out of
    # hi: log Phi(40) is 0) so that the gradient stays finite (where differentiates both
    # branches)
    lo_inf = xp.isinf(lo)
    hi = xp.where(xp.isinf(hi), 40.0, hi)
    lo_s = xp.where(lo_inf, hi - 1.0, lo)
    lh = log_ndtr(hi)
    ll = log_ndtr(lo_s)
    d = xp.minimum(ll - lh, -1e-30)
    # log(1 - exp(d)), d < 0
    res = lh + xp.where(d > -0.6931, xp.log(-xp.expm1(xp.maximum(d, -0.6931))),
                        xp.log1p(-xp.exp(xp.minimum(d, -0.6931))))
    return xp.where(lo_inf, lh, res)


def _pt_log_ndtr(x):
    r""":math:`\log\Phi(x)` in PyTensor with finite values and gradients everywhere
    (``x`` may be :math:`\pm\infty`): :math:`\log(\mathrm{erfcx}(-x/\sqrt2)/2) - x^2/2`
    below -1, :math:`\log(1 - \mathrm{erfc}(x/\sqrt2)/2)` above; each branch sees its
    argument clamped to its own side, so the branch that is not taken stays finite and so
    does its gradient (a plain ``switch`` gives NaN gradients in the far tails)."""
    import pytensor.tensor as pt

    lo = pt.minimum(x, -1.0)
    hi = pt.clip(x, -1.0, 40.0)
    left = pt.log(pt.erfcx(-lo / np.sqrt(2.0)) / 2.0) - lo * lo / 2.0
    right = pt.log1p(-pt.erfc(hi / np.sqrt(2.0)) / 2.0)
    return pt.switch(x < -1.0, left, right)


def pt_log_interval_prob(a, b):
    r""":func:`log_interval_prob` in PyTensor (the ordinal observation term of the PyMC
    model): :math:`\log(\Phi(b) - \Phi(a))` for :math:`a < b`, stable in both tails (the
    upper side as :math:`\log(\Phi(-a) - \Phi(-b))`), finite gradients for any finite
    :math:`\eta` (``pm.OrderedProbit`` gives NaN gradients once :math:`\eta - c_1 > 8`,
    which NUTS reaches on real ratings: every draw divergent)."""
    import pytensor.tensor as pt

    return _log_interval(a, b, pt, _pt_log_ndtr)


def interval_derivs(a, b):
    r""":math:`\ell = \log(\Phi(b) - \Phi(a))` and its first and second derivatives in the
    bounds, elementwise (jnp; infinite bounds allowed): with :math:`Z = \Phi(b)-\Phi(a)`,
    :math:`r_a = \varphi(a)/Z`, :math:`r_b = \varphi(b)/Z`,

    .. math::

        \ell_a = -r_a,\quad \ell_b = r_b,\quad \ell_{aa} = a r_a - r_a^2,\quad
        \ell_{bb} = -b r_b - r_b^2,\quad \ell_{ab} = r_a r_b

    (:math:`a r_a = 0` at :math:`a = -\infty`, :math:`b r_b = 0` at :math:`b = \infty`).
    Returns ``(l, l_a, l_b, l_aa, l_bb, l_ab, a0, b0)`` with ``a0``, ``b0`` the bounds with
    infinities replaced by 0 (for the chain rule)."""
    import jax.numpy as jnp

    lz = log_interval_prob(a, b)
    c = 0.5 * math.log(2 * math.pi)
    fa, fb = jnp.isfinite(a), jnp.isfinite(b)
    a0, b0 = jnp.where(fa, a, 0.0), jnp.where(fb, b, 0.0)
    ra = jnp.where(fa, jnp.exp(-0.5 * a0 * a0 - c - lz), 0.0)
    rb = jnp.where(fb, jnp.exp(-0.5 * b0 * b0 - c - lz), 0.0)
    return lz, -ra, rb, a0 * ra - ra * ra, -b0 * rb - rb * rb, ra * rb, a0, b0


def interval_scale_fgh(a, b, x):
    r"""``(f, f', f'')`` of :math:`f(x) = \sum_n \log(\Phi(e^x b_n) - \Phi(e^x a_n))` in
    :math:`x` (the latent scale move): with :math:`\alpha = e^x a`, :math:`\beta = e^x b`,
    :math:`f' = \sum(\alpha\ell_\alpha + \beta\ell_\beta)` and
    :math:`f'' = f' + \sum(\alpha^2\ell_{\alpha\alpha} + 2\alpha\beta\ell_{\alpha\beta}
    + \beta^2\ell_{\beta\beta})`. One pass over the observations."""
    import jax.numpy as jnp

    from bayesmf.model.reduce import reduce

    s = jnp.exp(x)
    lz, la, lb, laa, lbb, lab, a0, b0 = interval_derivs(a * s, b * s)
    al, be = a0, b0
    f, d1, d2 = reduce((jnp.sum(lz), jnp.sum(al * la + be * lb),
                        jnp.sum(al * al * laa + 2 * al * be * lab + be * be * lbb)))
    return f, d1, d1 + d2


def newton_mode(fgh, u0, steps: int = _NEWTON_STEPS, f=None):
    """Mode of a smooth concave-ish log density of a small vector by ``steps`` Newton
    iterations from ``u0`` with step halving; ``fgh(u) -> (f, g, H)`` gives the value,
    gradient and **negative** Hessian (``f(u)``, the value alone, checks the steps when
    given). Returns ``(mode, L)`` with ``L`` the Cholesky factor of the negative Hessian
    at the mode (jnp, fixed cost)."""
    import jax
    import jax.numpy as jnp

    d = u0.shape[0]
    eye = jnp.eye(d, dtype=u0.dtype)
    value = f if f is not None else (lambda u: fgh(u)[0])

    def chol(H):
        return jnp.linalg.cholesky(0.5 * (H + H.T) + 1e-6 * (1.0 + jnp.abs(jnp.diag(H))) * eye)

    def body(_, u):
        f0, g, H = fgh(u)
        step = jax.scipy.linalg.cho_solve((chol(H), True), g)
        step = jnp.where(jnp.all(jnp.isfinite(step)), step, 0.0)

        def halve(carry):
            s, j = carry
            return s * 0.5, j + 1

        def worse(carry):
            s, j = carry
            return (j < 8) & ~(value(u + s) >= f0)

        step, _ = jax.lax.while_loop(worse, halve, (step, 0))
        return u + step

    mode = jax.lax.fori_loop(0, steps, body, u0)
    return mode, chol(fgh(mode)[2])


@dataclass(frozen=True)
class OrdinalProbit(Likelihood):
    """Ordered probit over the rating levels seen in training (``levels`` is set by
    :meth:`fit_data`; pass it explicitly to fix a scale that the training data does not
    fully cover)."""

    levels: tuple | None = None

    name = "ordinal"
    theta_names = ("cutpoints",)
    discrete = True
    mean_is_linear = False
    augmented = True
    latent_scale_fixed = True

    def __post_init__(self):
        if self.levels is not None:
            lv = tuple(float(x) for x in self.levels)
            if len(lv) < 2 or any(b <= a for a, b in zip(lv, lv[1:])):
                raise SpecError(f"ordinal levels must be >= 2 increasing values, got {lv}")
            if not all(math.isfinite(x) for x in lv):
                raise SpecError("ordinal levels must be finite")
            object.__setattr__(self, "levels", lv)

    @property
    def K(self) -> int:
        if self.levels is None:
            raise SpecError("the ordinal likelihood has no levels yet (fit it on data first)")
        return len(self.levels)

    def value_range(self):
        return None if self.levels is None else (self.levels[0], self.levels[-1])

    # ------------------------------------------------------------------ data
    def fit_data(self, y):
        y = np.asarray(y, np.float64)
        if self.levels is not None:
            self.check_values(y, training=True)
            return self
        lv = np.unique(y)
        if len(lv) < 2:
            raise DataError(f"likelihood 'ordinal' needs at least 2 distinct rating levels, "
                            f"got {lv.tolist()}")
        if len(lv) > MAX_LEVELS:
            raise DataError(
                f"likelihood 'ordinal' models a small set of rating levels (at most "
                f"{MAX_LEVELS}); the training data has {len(lv)} distinct values — use "
                "likelihood='gaussian' for continuous ratings, or round them to a scale")
        return OrdinalProbit(levels=tuple(lv.tolist()))

    def check_values(self, y, training=False):
        if self.levels is None:
            return
        y = np.asarray(y, np.float64)
        lv = np.asarray(self.levels)
        ok = np.isin(y, lv)
        if not ok.all():
            bad = np.unique(y[~ok])[:5].tolist()
            raise DataError(
                f"{int((~ok).sum())} value(s) such as {bad} are not rating levels of this "
                f"ordinal model {list(self.levels)} (levels come from the training data; "
                "fix them with likelihood=OrdinalProbit(levels=...) before fitting)")

    def encode(self, y):
        self.check_values(y)
        return np.searchsorted(np.asarray(self.levels), np.asarray(y, np.float64)).astype(
            np.float64)

    def _init_cut(self, y_idx, K):
        counts = np.bincount(np.asarray(y_idx, np.int64), minlength=K).astype(np.float64) + 0.5
        cum = np.cumsum(counts)[:-1] / counts.sum()
        from scipy.special import ndtri

        c = ndtri(cum)
        # keep gaps positive and not tiny
        for j in range(1, len(c)):
            c[j] = max(c[j], c[j - 1] + 0.05)
        return c

    def eta_offset(self, y):
        c = self._init_cut(self.encode(y), self.K)
        return float(-c[0])

    def init_theta(self, y, spec):
        c = self._init_cut(self.encode(y), self.K)
        if spec.global_mean:
            c = c - c[0]
        return {"cutpoints": c.astype(np.float32)}

    # ------------------------------------------------------------------ transforms
    @staticmethod
    def n_free(K: int, fix_first: bool) -> int:
        return K - 2 + (0 if fix_first else 1)

    @staticmethod
    def cut_from_u(u, K: int, fix_first: bool):
        """Unconstrained ``u`` -> cutpoints (jnp or numpy, follows ``u``)."""
        import jax.numpy as jnp

        xp = np if isinstance(u, np.ndarray) else jnp
        c1 = xp.zeros((1,), u.dtype) if fix_first else u[:1]
        gaps = u[(0 if fix_first else 1):]
        return xp.concatenate([c1, c1 + xp.cumsum(xp.exp(gaps))]) if K > 2 else c1

    @staticmethod
    def u_from_cut(c, fix_first: bool):
        import jax.numpy as jnp

        xp = np if isinstance(c, np.ndarray) else jnp
        gaps = xp.log(xp.maximum(c[1:] - c[:-1], 1e-12))
        return gaps if fix_first else xp.concatenate([c[:1], gaps])

    @staticmethod
    def log_prior_u(u, fix_first: bool):
        import jax.numpy as jnp

        z = u / _GAP_SD
        lp = -0.5 * jnp.sum(z * z)
        if not fix_first:
            lp = lp + 0.5 * (u[0] / _GAP_SD) ** 2 - 0.5 * (u[0] / _C1_SD) ** 2
        return lp

    # ------------------------------------------------------------------ math
    def _bounds(self, y, cut):
        import jax.numpy as jnp

        inf = jnp.full((1,), jnp.inf, cut.dtype)
        c = jnp.concatenate([-inf, cut, inf])
        yi = y.astype(jnp.int32)
        return c[yi], c[yi + 1]

    def log_prob(self, y, eta, theta):
        a, b = self._bounds(y, theta["cutpoints"])
        return log_interval_prob(a - eta, b - eta)

    def decode_jnp(self, y):
        import jax.numpy as jnp

        return jnp.asarray(self.levels, jnp.float32)[y.astype(jnp.int32)]

    def point_mean(self, eta, theta):
        r"""Expected rating :math:`l_0 + \sum_j (l_j - l_{j-1})(1 - \Phi(c_j - \eta))`."""
        import jax.numpy as jnp
        from jax.scipy.special import ndtr

        lv = jnp.asarray(self.levels, eta.dtype)
        c = theta["cutpoints"]
        return lv[0] + jnp.sum((lv[1:] - lv[:-1]) * ndtr(eta[..., None] - c), axis=-1)

    # ------------------------------------------------------------------ Gibbs
    def gaussianize(self, key, y, eta, theta):
        import jax.numpy as jnp

        from bayesmf.model.augment import truncated_normal

        a, b = self._bounds(y, theta["cutpoints"])
        return truncated_normal(key, eta, a, b), jnp.ones((), eta.dtype)

    def update_theta(self, key, y, eta, theta, spec):
        import jax
        import jax.numpy as jnp

        K = self.K
        fix = bool(spec.global_mean)
        d = self.n_free(K, fix)
        cut = theta["cutpoints"]
        if d > 0:
            dt = eta.dtype

            from bayesmf.model.reduce import count, reduce, total

            def logp(u):
                c = self.cut_from_u(u, K, fix)
                return total(self.log_prob(y, eta, {"cutpoints": c})) + self.log_prior_u(u, fix)

            u0 = self.u_from_cut(cut, fix)
            # the proposal depends on (eta, y) only -- an independence sampler: Newton from
            # the moment-matched cutpoints of eta + N(0, 1) at the level frequencies
            from jax.scipy.special import ndtri

            counts = reduce(jnp.zeros((K,), dt).at[y.astype(jnp.int32)].add(1.0)) + 0.5
            cum = jnp.cumsum(counts)[:-1] / jnp.sum(counts)
            n_obs = count(eta.shape[0])
            m_eta = total(eta) / n_obs
            c_mm = m_eta + jnp.sqrt(1.0 + total((eta - m_eta) ** 2) / n_obs) * ndtri(cum)
            c_mm = c_mm - c_mm[0] if fix else c_mm
            c_mm = jnp.concatenate([c_mm[:1], c_mm[:1] + jnp.cumsum(
                jnp.maximum(jnp.diff(c_mm), 1e-3))]) if K > 2 else c_mm
            mode, L = newton_mode(lambda uu: self.cut_fgh(uu, y, eta, fix),
                                  self.u_from_cut(c_mm, fix), f=logp)
            k1, k2, k3 = jax.random.split(key, 3)
            eps = jax.random.normal(k1, (d,), dt)
            chi2 = jnp.sum(jax.random.normal(k3, (_T_DF,), dt) ** 2)
            u1 = mode + jax.scipy.linalg.solve_triangular(L.T, eps, lower=False) / jnp.sqrt(
                chi2 / _T_DF)

            def logq(x):  # multivariate t_nu(mode, (L L^T)^{-1}) up to a constant
                r = L.T @ (x - mode)
                return -0.5 * (_T_DF + d) * jnp.log1p(r @ r / _T_DF)

            log_acc = logp(u1) + logq(u0) - logp(u0) - logq(u1)
            ok = jnp.isfinite(log_acc) & jnp.all(jnp.isfinite(L))
            acc = ok & (jnp.log(jax.random.uniform(k2, (), dt, minval=jnp.finfo(dt).tiny))
                        < log_acc)
            cut = jnp.where(acc, self.cut_from_u(u1, K, fix), cut).astype(dt)
        theta = {"cutpoints": cut}
        lp = self.log_prob(y, eta, theta)
        return theta, self._info(y, eta, theta, lp)

    def scale_theta(self, theta, s, spec):
        return {"cutpoints": theta["cutpoints"] * s}

    def scale_log_prior(self, theta, x, spec):
        r"""Cutpoints times :math:`s = e^x`: the log-gaps shift by :math:`x` (Jacobian 1 in
        :math:`u`), a free :math:`c_1` scales (Jacobian :math:`s`)."""
        import jax.numpy as jnp

        fix = bool(spec.global_mean)
        if self.n_free(self.K, fix) == 0:
            return jnp.zeros((), theta["cutpoints"].dtype)
        u = self.u_from_cut(theta["cutpoints"], fix)
        s = jnp.exp(x)
        if fix:
            u1 = u + x
            return self.log_prior_u(u1, fix) - self.log_prior_u(u, fix)
        u1 = jnp.concatenate([u[:1] * s, u[1:] + x])
        return self.log_prior_u(u1, fix) - self.log_prior_u(u, fix) + x

    def _prior_sd(self, d, fix, dt):
        import jax.numpy as jnp

        sd = jnp.full((d,), _GAP_SD, dt)
        return sd if fix else sd.at[0].set(_C1_SD)

    def cut_fgh(self, u, y, eta, fix: bool):
        r"""Value, gradient and negative Hessian of the cutpoints' conditional log density
        :math:`\sum_n \log P(y_n\mid\eta_n, c(u)) + \log p(u)` in the unconstrained
        :math:`u`, analytically in one pass over the observations: per-level sums of the
        bound derivatives (:func:`interval_derivs`) give the gradient :math:`g_c` and the
        tridiagonal Hessian :math:`H_c` in the cutpoints, then the chain rule through
        :math:`c_j = c_1 + \sum_{m<j} e^{u_m}`: :math:`g_u = J^\top g_c`,
        :math:`H_u = J^\top H_c J + \mathrm{diag}(e^{u_m}\sum_{j>m} g_{c,j})`."""
        import jax
        import jax.numpy as jnp

        K = self.K
        dt = eta.dtype
        c = self.cut_from_u(u, K, fix)
        a, b = self._bounds(y, c)
        lz, la, lb, laa, lbb, lab, _, _ = interval_derivs(a - eta, b - eta)
        yi = y.astype(jnp.int32)

        def seg(v):
            return jax.ops.segment_sum(v, yi, num_segments=K)

        from bayesmf.model.reduce import reduce

        Sa, Sb, Saa, Sbb, Sab, slz = reduce((seg(la), seg(lb), seg(laa), seg(lbb), seg(lab),
                                             jnp.sum(lz)))
        g_c = Sb[:-1] + Sa[1:]
        h_diag = Sbb[:-1] + Saa[1:]
        h_off = Sab[1:-1]
        H_c = jnp.diag(h_diag) + jnp.diag(h_off, 1) + jnp.diag(h_off, -1)
        d = u.shape[0]
        gap0 = 0 if fix else 1
        eg = jnp.exp(u[gap0:])
        mask = (jnp.arange(K - 1)[:, None] > jnp.arange(K - 2)[None, :]).astype(dt)
        Jg = mask * eg[None, :]
        J = Jg if fix else jnp.concatenate([jnp.ones((K - 1, 1), dt), Jg], axis=1)
        # d^2 c_j / du_m^2 = e^{u_m} for the gaps m < j
        tail = jnp.flip(jnp.cumsum(jnp.flip(g_c)))          # sum_{j >= i} g_c[j]
        D = eg * tail[1:]                                   # gap m enters c_{m+1..}
        sd = self._prior_sd(d, fix, dt)
        f = slz + self.log_prior_u(u, fix)
        g = J.T @ g_c - u / sd ** 2
        H2 = J.T @ H_c @ J
        H2 = H2.at[gap0:, gap0:].add(jnp.diag(D))
        return f, g, -H2 + jnp.diag(1.0 / sd ** 2)

    def scale_fgh(self, y, eta, theta, x, spec):
        r"""``(f, f', f'')`` in :math:`x = \log s` of the log likelihood at
        :math:`(s\eta, sc)` plus the cutpoint prior term (:meth:`scale_log_prior`),
        analytically (the latent scale move)."""
        import jax.numpy as jnp

        a, b = self._bounds(y, theta["cutpoints"])
        f, f1, f2 = interval_scale_fgh(a - eta, b - eta, x)
        fix = bool(spec.global_mean)
        d = self.n_free(self.K, fix)
        if d == 0:
            return f, f1, f2
        u = self.u_from_cut(theta["cutpoints"], fix)
        gaps = u if fix else u[1:]
        ng = gaps.shape[0]
        g = gaps + x
        f = f - 0.5 * jnp.sum(g * g) / _GAP_SD ** 2 + 0.5 * jnp.sum(gaps * gaps) / _GAP_SD ** 2
        f1 = f1 - jnp.sum(g) / _GAP_SD ** 2
        f2 = f2 - ng / _GAP_SD ** 2
        if not fix:
            c1 = u[0] * jnp.exp(x)
            f = f - 0.5 * (c1 ** 2 - u[0] ** 2) / _C1_SD ** 2 + x
            f1 = f1 - c1 ** 2 / _C1_SD ** 2 + 1.0
            f2 = f2 - 2.0 * c1 ** 2 / _C1_SD ** 2
        return f, f1, f2

    # ------------------------------------------------------------------ MAP
    def truncated_moments(self, y, eta, theta):
        r"""Mean and variance of :math:`z\sim\mathcal N(\eta,1)` truncated to
        :math:`(c_y, c_{y+1}]` (jnp): with :math:`\alpha = c_y-\eta`,
        :math:`\beta = c_{y+1}-\eta`, :math:`Z = \Phi(\beta)-\Phi(\alpha)`,
        :math:`E = \eta + (\varphi(\alpha)-\varphi(\beta))/Z`,
        :math:`\mathrm{Var} = 1 + (\alpha\varphi(\alpha)-\beta\varphi(\beta))/Z
        - ((\varphi(\alpha)-\varphi(\beta))/Z)^2`."""
        import jax.numpy as jnp

        a, b = self._bounds(y, theta["cutpoints"])
        al, be = a - eta, b - eta
        lz = log_interval_prob(al, be)
        c = 0.5 * math.log(2 * math.pi)
        ra = jnp.where(jnp.isfinite(al), jnp.exp(-0.5 * al * al - c - lz), 0.0)
        rb = jnp.where(jnp.isfinite(be), jnp.exp(-0.5 * be * be - c - lz), 0.0)
        d = ra - rb
        aa = jnp.where(jnp.isfinite(al), al * ra, 0.0)
        bb = jnp.where(jnp.isfinite(be), be * rb, 0.0)
        return eta + d, 1.0 + aa - bb - d * d

    def working(self, y, eta, theta):
        import jax.numpy as jnp

        m, var = self.truncated_moments(y, eta, theta)
        w = jnp.clip(1.0 - var, 1e-6, 1.0)
        return eta + (m - eta) / w, w

    # ------------------------------------------------------------------ PPLs
    def numpyro_theta(self, spec):
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist

        fix = bool(spec.global_mean)
        d = self.n_free(self.K, fix)
        if d == 0:  # two levels and a global mean: the one cut-point is 0 (a site all the
            # same, so that every backend's draws carry it)
            return {"cutpoints": numpyro.deterministic("cutpoints",
                                                       jnp.zeros((1,), jnp.float32))}
        scale = np.full(d, _GAP_SD)
        if not fix:
            scale[0] = _C1_SD
        u = numpyro.sample("cut_u", dist.Normal(jnp.zeros(d), jnp.asarray(scale)).to_event(1))
        return {"cutpoints": numpyro.deterministic("cutpoints", self.cut_from_u(u, self.K, fix))}

    def numpyro_obs(self, eta, theta, y):
        import numpyro
        import numpyro.distributions as dist

        if y is None:  # the ordered probit's category probabilities
            import jax.numpy as jnp
            from jax.scipy.special import ndtr

            F = ndtr(theta["cutpoints"] - eta[..., None])
            edge = jnp.ones(F.shape[:-1] + (1,), F.dtype)
            probs = jnp.diff(jnp.concatenate([0.0 * edge, F, edge], axis=-1), axis=-1)
            numpyro.sample("r", dist.Categorical(probs=jnp.clip(probs, 0.0, 1.0)))
        else:
            numpyro.factor("r", self.log_prob(y, eta, theta))

    def pymc_theta(self, spec):
        import pymc as pm
        import pytensor.tensor as pt

        fix = bool(spec.global_mean)
        d = self.n_free(self.K, fix)
        if d == 0:  # two levels and a global mean: the one cut-point is 0
            return {"cutpoints": pm.Deterministic("cutpoints", pt.zeros((1,)))}
        scale = np.full(d, _GAP_SD)
        if not fix:
            scale[0] = _C1_SD
        u = pm.Normal("cut_u", 0.0, scale, shape=d)
        c1 = pt.zeros((1,)) if fix else u[:1]
        gaps = u[(0 if fix else 1):]
        cut = pt.concatenate([c1, c1 + pt.cumsum(pt.exp(gaps))]) if self.K > 2 else c1
        return {"cutpoints": pm.Deterministic("cutpoints", cut)}

    def pymc_obs(self, eta, theta, y, **kwargs):
        r"""The ordered-probit observation of level index ``y`` with the stable
        :func:`pt_log_interval_prob` (a ``pm.CustomDist``, so that a minibatch's
        ``total_size`` scales it)."""
        import pymc as pm
        import pytensor.tensor as pt

        def logp(value, eta_, cut):  # cut (c,) or broadcast to (n, c)
            edge = pt.ones_like(cut[..., :1]) * np.inf
            pad = pt.concatenate([-edge, cut, edge], axis=-1)
            idx = pt.cast(value, "int64")[..., None]
            if pad.ndim == 1:
                lo, hi = pad[idx[..., 0]], pad[idx[..., 0] + 1]
            else:
                lo = pt.take_along_axis(pad, idx, axis=-1)[..., 0]
                hi = pt.take_along_axis(pad, idx + 1, axis=-1)[..., 0]
            return pt_log_interval_prob(lo - eta_, hi - eta_)

        return pm.CustomDist("r", eta, theta["cutpoints"], logp=logp, observed=y,
                             signature="(),(c)->()", **kwargs)

    # ------------------------------------------------------------------ predictive
    def category_probs(self, m, v, cut):
        """Per-draw probabilities ``(S, ..., K)`` (numpy, float64)."""
        from scipy.special import ndtr

        m = np.asarray(m, np.float64)
        s = np.sqrt(1.0 + np.asarray(v, np.float64))
        c = np.asarray(cut, np.float64).reshape((cut.shape[0],) + (1,) * (m.ndim - 1) + (-1,))
        F = ndtr((c - m[..., None]) / s[..., None])       # (S, ..., K-1)
        zeros = np.zeros(F.shape[:-1] + (1,))
        Fx = np.concatenate([zeros, F, zeros + 1.0], axis=-1)
        return np.clip(np.diff(Fx, axis=-1), 0.0, 1.0)

    def predictive(self, m, v, theta):
        from bayesmf.predictive import CategoricalMixture

        m = np.asarray(m, np.float64)
        v = np.broadcast_to(np.asarray(v, np.float64), m.shape)
        mix = CategoricalMixture(self.category_probs(m, v, np.asarray(theta["cutpoints"])),
                                 np.asarray(self.levels))
        if np.any(v > 0):  # unknown ids: their spread of eta, on first use
            mix.extra_param_var = lambda: self.fallback_param_var(m, v, theta)
        return mix

    def prior_simulate(self, rng, eta, theta):
        z = np.asarray(eta) + rng.standard_normal(np.shape(eta))
        idx = np.searchsorted(np.asarray(theta["cutpoints"], np.float64), z, side="left")
        return np.asarray(self.levels)[idx]

    def theta_prior_draw(self, rng, spec, y_hint=None):
        fix = bool(spec.global_mean)
        d = self.n_free(self.K, fix)
        u = rng.standard_normal(d) * _GAP_SD
        if not fix and d:
            u[0] = rng.standard_normal() * _C1_SD
        return {"cutpoints": np.asarray(self.cut_from_u(u, self.K, fix), np.float32)}
