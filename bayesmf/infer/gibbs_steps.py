r"""The conditional draws and group moves of the Gibbs sweep (pure JAX functions).

Equations in the module docs of :mod:`bayesmf.infer.gibbs` (steps 1-7) and in each
function's docstring; the sweep that strings them together is
:func:`bayesmf.infer.gibbs_kernel.step`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.sparse.linalg  # noqa: F401 (macau_beta_draw, solver="cg")
from jax import lax

from bayesmf.infer._features import feature_matmul, feature_tmatmul
from bayesmf.infer._rowblocks import (gaussian_from_precision, row_precisions, solve_rows,
                                      solve_rows_subspace)
from bayesmf.model.priors import sample_normal_wishart  # noqa: F401 (re-export)
from bayesmf.model.reduce import count, reduce, total
from bayesmf.model.random import standard_gamma

__all__ = ["sample_normal_wishart", "bias_precision_draw", "rows_draw", "subspace_rows",
           "row_prior_terms",
           "iwls_mh_rows", "mu_draw", "mu_draw_sums",
           "tau_draw", "translation_move", "shift_move", "scale_move", "latent_scale_move",
           "standard_gamma", "MacauData", "macau_data", "feature_matmul", "feature_tmatmul",
           "macau_beta_draw", "macau_lambda_draw"]


def _gamma_precision(key, a, b, dt):
    """Draw from Gamma(shape a, rate b)."""
    return standard_gamma(key, jnp.asarray(a, dt), dt) / b


def _side_prior(k, with_bias, lam_b, Lam, mu_f, dt):
    """``blockdiag(lambda_b, Lambda)`` and ``[0, Lambda mu]`` for the joint bias+factor row."""
    blocks, shift = [], []
    if with_bias:
        blocks.append(jnp.reshape(lam_b, (1, 1)).astype(dt))
        shift.append(jnp.zeros((1,), dt))
    if k:
        blocks.append(Lam)
        shift.append(Lam @ mu_f)
    d = sum(b.shape[0] for b in blocks)
    P = jnp.zeros((d, d), dt)
    o = 0
    for b in blocks:
        P = lax.dynamic_update_slice(P, b, (o, o))
        o += b.shape[0]
    return P, jnp.concatenate(shift)


def bias_precision_draw(key, b, a0, b0):
    r"""Step 2: :math:`\lambda_b \sim \mathrm{Gamma}(a_0 + n/2,\ b_0 + \tfrac12\sum b^2)`."""
    return _gamma_precision(key, a0 + count(b.shape[0]) / 2, b0 + 0.5 * total(b * b), b.dtype)


def rows_draw(key, k, blocks, with_bias, other_F, y, tau, lam_b, Lam, mu_f, background=None,
              offset=None, row_prior=None, fit_stats=False, current=None, row_block=0,
              pred0=None, return_pred=False):
    r"""Steps 3/4: joint draw of ``(b, F)`` for every row of one side given the other side's
    factors ``other_F`` and targets ``y = r - mu - b_other`` (design :math:`[1, F_{other}]`,
    prior ``blockdiag(lam_b, Lam)``, shift ``[0, Lam mu_f]``). Returns ``(b, F)``;
    ``b`` is zeros without the bias column, ``F`` has ``k`` columns.

    ``background = (w0, t0_obs, t0_other)`` (a full-matrix likelihood,
    :meth:`~bayesmf.model.likelihoods.Likelihood.background`): every pair of the row with
    every other-side row is an observation, the unobserved ones with weight ``w0`` and
    target ``t0 = y0 - mu - b_other`` (``t0_other (n_other,)``; ``t0_obs (nnz,)`` the same
    at the observed pairs). The dense part enters once per side (Gram
    :math:`w_0 X^\top X`, shift :math:`w_0 X^\top t_0`) and each observed pair as the
    correction of its background term (weight :math:`w_j - w_0`, right-hand side
    :math:`w_j y_j - w_0 t_{0j}`); see :mod:`bayesmf.model.likelihoods.implicit`.

    ``offset (n_rows, k)`` (the Macau prior, :func:`macau_beta_draw`): row ``r``'s factor
    prior mean is :math:`\mu_f + o_r` (:math:`o_r = \beta^\top x_r`), so the prior shift
    becomes per row, :math:`[0, \Lambda(\mu_f + o_r)]`.

    ``row_prior = (P0 (n_rows, d, d), h0 (n_rows, d))`` (a propagated posterior,
    :mod:`bayesmf.infer.propagation`): row ``r``'s joint ``[b_r, F_r]`` has the fixed
    Gaussian prior :math:`\mathcal N(P_{0r}^{-1} h_{0r}, P_{0r}^{-1})` in place of
    ``blockdiag(lam_b, Lam)`` (``lam_b``, ``Lam``, ``mu_f`` and ``offset`` are then unused),
    so :math:`P_r = P_{0r} + \tau\sum_{j\in O_r} x_j x_j^\top`,
    :math:`h_r = h_{0r} + \tau\sum_{j\in O_r} y_j x_j`.

    ``fit_stats=True`` returns ``(b, F, (sse_w, res_w))``: the weighted residual sums of
    the new rows, :math:`\sum_j \tau_j (y_j - p_j)^2` and (with the bias column)
    :math:`\sum_j \tau_j (y_j - p_j)`, :math:`p_j = x_j^\top z_{r(j)}`, from the Grams
    of the draw (:func:`~bayesmf.infer._rowblocks.solve_rows`), not from per-observation
    predictions. ``res_w`` is None without the bias column. With a ``background`` the
    sums are the observed pairs' corrections of the background's terms,
    :math:`\sum_j [\tau_j (y_j - p_j)^2 - w_0 (t_{0j} - p_j)^2]` and
    :math:`\sum_j [\tau_j (y_j - p_j) - w_0 (t_{0j} - p_j)]`: expanded,
    :math:`\sum_j (\tau_j y_j^2 - w_0 t_{0j}^2) + q` and
    :math:`\sum_j (\tau_j y_j - w_0 t_{0j}) - g` with the solver's
    :math:`q = \sum_j (\tau_j - w_0) p_j^2 - 2\sum_j (\tau_j y_j - w_0 t_{0j}) p_j`,
    :math:`g = \sum_j (\tau_j - w_0) p_j`; the sums over the unobserved pairs follow in
    closed form (:func:`bayesmf.model.linear.full_moments`).

    ``row_block > 0`` (with ``current = (b, F)``, the side's current rows) draws each row
    by subspace Gibbs, blocks of at most ``row_block`` of its coordinates one after
    another given the others (:func:`~bayesmf.infer._rowblocks.solve_rows_subspace`)
    instead of all at once (a row of at most ``row_block`` coordinates is drawn at once).
    Subspace draws only (:func:`subspace_rows`): ``pred0 (nnz,)`` the observations'
    current predictions :math:`x_j^\top z_{r(j)}` and ``return_pred=True`` (the new
    rows' predictions appended to the result) as in
    :func:`~bayesmf.infer._rowblocks.solve_rows_subspace`."""
    dt = y.dtype
    n_rows = blocks.degree.shape[0]
    X = _design(k, with_bias, other_F, dt)
    P0, h0 = row_prior_terms(k, with_bias, lam_b, Lam, mu_f, dt, offset, row_prior)
    if subspace_rows(k, with_bias, row_block):
        Z0 = _joint_rows(k, with_bias, current)

        def solve(blocks, X, y, tau, P0, h0, key, **kw):
            return solve_rows_subspace(blocks, X, y, tau, P0, h0, Z0, key, size=row_block,
                                       pred0=pred0, return_pred=return_pred, **kw)
    elif pred0 is not None or return_pred:
        raise ValueError("rows_draw: pred0/return_pred need subspace row draws")
    else:
        solve = solve_rows
    kw = {"fit_stats": True} if fit_stats else {}
    if background is None:
        out = solve(blocks, X, y, tau, P0, h0, key=key, **kw)
    else:
        wb, h0, dense, rhs = background_terms(background, X, y, tau, h0)
        out = solve(blocks, X, y, wb, P0, h0, key=key, dense_gram=dense, rhs=rhs, **kw)
    if return_pred:
        out, p_obs = out
    Z = out[0] if fit_stats else out
    b = Z[:, 0] if with_bias else jnp.zeros((n_rows,), dt)
    tail = (p_obs,) if return_pred else ()
    if not fit_stats:
        return (b, Z[:, int(with_bias):]) + tail
    q, g = reduce(out[1])
    w = jnp.broadcast_to(jnp.asarray(tau, dt), y.shape)
    sq, lin = w * y * y, w * y
    if background is not None:  # the observed pairs as corrections of the background
        w0, t0 = background[0], background[1]
        sq, lin = sq - w0 * t0 * t0, lin - w0 * t0
    stats = (total(sq, long=True) + q, total(lin, long=True) - g if with_bias else None)
    return (b, Z[:, int(with_bias):], stats) + tail


def subspace_rows(k, with_bias, row_block) -> bool:
    """Whether :func:`rows_draw` draws a side's rows by subspace Gibbs: ``row_block`` set
    and narrower than the joint row ``[b, F]``."""
    return bool(row_block) and row_block < k + int(bool(with_bias))


def _design(k, with_bias, other_F, dt):
    """The design ``[1, F_other]`` of one side's rows (the ones column with the bias)."""
    cols = ([jnp.ones((other_F.shape[0], 1), dt)] if with_bias else []) + ([other_F] if k else [])
    return jnp.concatenate(cols, axis=1)


def _joint_rows(k, with_bias, current):
    """A side's current rows as the joint ``[b, F]`` of the row draws (``current = (b,
    F)``; the bias column only with the bias, ``F`` only for ``k > 0``)."""
    b0, F0 = current
    return jnp.concatenate(([b0[:, None]] if with_bias else []) + ([F0] if k else []), 1)


def row_prior_terms(k, with_bias, lam_b, Lam, mu_f, dt, offset=None, row_prior=None):
    """``(P0, h0)``: the Gaussian prior precision and shift of one side's joint ``[b, F]``
    rows as :func:`rows_draw` uses them (the hierarchical ``blockdiag(lam_b, Lam)`` with the
    Macau ``offset``, or the fixed per-row ``row_prior``)."""
    if row_prior is not None:
        return row_prior
    P0, h0 = _side_prior(k, with_bias, lam_b, Lam, mu_f, dt)
    if offset is not None and k:
        h0 = offset_shift(offset, Lam, with_bias, h0)
    return P0, h0


def iwls_mh_rows(key, lik, theta, blocks, k, with_bias, other_F, b, F, y, off, rows, cols,
                 P0, h0, mask=None, newton_steps: int = 1, local=None):
    r"""A Metropolis-Hastings step on every row of one side, with the iteratively
    weighted least squares proposal of Gamerman (1997), for a likelihood whose rows are
    drawn through an augmentation (Bernoulli logit / probit, ordinal).

    Row :math:`r`'s coefficients :math:`a_r = [b_r, F_r]` have the exact conditional
    (the augmentation integrated out)

    .. math::

        \pi(a_r) \propto \prod_{j\in O_r} p(y_j\mid\eta_j)\;
        \exp(-\tfrac12 a_r^\top P_0 a_r + h_0^\top a_r),\qquad
        \eta_j = o_j + x_{c(j)}^\top a_r ,

    with :math:`o_j` the rest of the linear predictor (``off``: :math:`\mu` plus the other
    side's bias) and :math:`x = [1, F_{other}]`. At the current :math:`a_r` the likelihood's
    ``working`` response and weights :math:`(\tilde z_j, w_j)` (one Newton step of
    :math:`-\log p`) give the Gaussian proposal

    .. math::

        q(\cdot\mid a_r) = \mathcal N(m_r, P_r^{-1}),\quad P_r = P_0 + \sum_j w_j
        x_jx_j^\top,\quad m_r = P_r^{-1}\Big(h_0 + \sum_j w_j(\tilde z_j - o_j)x_j\Big),

    the IRLS step from :math:`a_r` (the posterior's Laplace approximation near its mode);
    with ``newton_steps = T > 1`` the proposal is the Gaussian of the :math:`T`-th IRLS
    iterate from :math:`a_r` (still a deterministic function of :math:`a_r`, so the
    ratio below stays exact), which reaches the mode from further away. The sampler uses
    :math:`T = 1`: its augmentation sweeps keep the rows near their modes, and on ML-100K
    at rank 10 a second Newton step cost more time than it gained in effective sample
    size (``benchmarks/results/augmented_mixing.md``). A proposal
    :math:`a'_r` is accepted with probability :math:`\min\{1, \pi(a'_r)q(a_r\mid a'_r)
    /(\pi(a_r)q(a'_r\mid a_r))\}`, which needs the same Gaussian at :math:`a'_r`:
    :math:`2T` weighted Grams per side. Rows are independent given the other side, so
    each row accepts or rejects on its own. The step leaves
    :math:`\pi` invariant; it moves a row across its posterior in one step where the
    augmentation moves it by the complete-data width only (slow for informative rows;
    ``benchmarks/results/augmented_mixing.md``). Rows without observations get an exact
    prior draw. ``mask`` (per observation, False = switched off) drops observations.

    ``local = (rows_idx, gather)`` (the sharded chain, :mod:`bayesmf.infer.sharded`):
    ``blocks`` hold only the rows ``rows_idx (R,)`` (global indices) of this device;
    ``gather`` maps this device's ``(R, ...)`` values to the full ``(n_rows, ...)`` array
    of every device's rows (an all-gather). The per-observation terms are evaluated at the
    full (replicated) rows, each device builds and factors its own rows' Gaussians, and the
    random numbers are the unsharded ones sliced, so the step is the unsharded one.

    Returns ``(b, F, accepted)``: the new rows (``b`` zeros without the bias column) and
    the number of rows that moved."""
    dt = y.dtype
    X = _design(k, with_bias, other_F, dt)
    A = jnp.concatenate(([b[:, None]] if with_bias else []) + ([F] if k else []), axis=1)
    n_rows = A.shape[0]
    per_row = getattr(P0, "ndim", 2) == 3
    if local is None:
        sel, gather = (lambda x: x), (lambda x: x)
    else:
        idx, gather = local
        sel = lambda x: x[idx]  # noqa: E731
        if per_row:  # this device's rows' priors
            P0 = P0[idx]
        if getattr(h0, "ndim", 1) == 2:
            h0 = h0[idx]

    def log_prior(a):  # a: this device's rows
        Pa = jnp.einsum("rde,re->rd", P0, a) if per_row else a @ P0.T
        return jnp.sum(a * (h0 - 0.5 * Pa), axis=1)

    def newton(a):  # one IRLS step from a (all rows): (m, L) with P = L L^T; and log pi(a)
        eta = off + jnp.sum(X[cols] * a[rows], axis=1)
        zw, w = lik.working(y, eta, theta)
        lp = lik.log_prob(y, eta, theta)
        w = jnp.broadcast_to(jnp.asarray(w, dt), eta.shape)
        if mask is not None:
            w = jnp.where(mask, w, jnp.zeros((), dt))
            lp = jnp.where(mask, lp, jnp.zeros((), dt))
        P, h = row_precisions(blocks, X, zw - off, w, P0, h0)
        L = jnp.linalg.cholesky(P)
        m = jax.scipy.linalg.cho_solve((L, True), h[..., None])[..., 0]
        ll = jax.ops.segment_sum(lp.astype(dt), rows, num_segments=n_rows)
        return m, L, sel(ll) + log_prior(sel(a))

    def gaussian_at(a):  # the proposal from a: newton_steps IRLS steps, a deterministic map
        m, L, lt = newton(a)
        for _ in range(newton_steps - 1):
            m = gather(jnp.where(jnp.isfinite(m), m, sel(a)))
            m, L, _ = newton(m)
        return m, L, lt

    def log_q(x, m, L):  # log N(x | m, (L L^T)^-1) up to the shared constant
        r = jnp.einsum("rdk,rd->rk", L, x - m)  # L^T (x - m)
        return (jnp.sum(jnp.log(jnp.diagonal(L, axis1=1, axis2=2)), axis=1)
                - 0.5 * jnp.sum(r * r, axis=1))

    k1, k2 = jax.random.split(key)
    m, L, lt = gaussian_at(A)
    e = sel(jax.random.normal(k1, A.shape, dt))
    prop = m + jax.scipy.linalg.solve_triangular(L, e[..., None], lower=True,
                                                 trans="T")[..., 0]
    prop_all = gather(prop)
    m2, L2, lt2 = gaussian_at(prop_all)
    A_own = sel(A)
    log_r = lt2 - lt + log_q(A_own, m2, L2) - log_q(prop, m, L)
    acc = jnp.log(sel(jax.random.uniform(k2, (n_rows,), dt))) < log_r  # NaN: rejected
    A = gather(jnp.where(acc[:, None], prop, A_own))
    b_new = A[:, 0] if with_bias else jnp.zeros((n_rows,), dt)
    return b_new, A[:, int(with_bias):], jnp.sum(gather(acc))


def offset_shift(offset, Lam, with_bias, h0):
    r"""The per-row prior shift :math:`[0, \Lambda(\mu_f + o_r)]` of the Macau prior
    (:func:`rows_draw`): ``h0 (d,)`` (the shared part, :math:`[0, \Lambda\mu_f]`) plus
    :math:`\Lambda o_r` for every row of ``offset (n_rows, k)``; returns ``(n_rows, d)``."""
    sh = offset @ Lam  # Lam symmetric: (Lam o_r)^T
    if with_bias:
        sh = jnp.concatenate([jnp.zeros((offset.shape[0], 1), sh.dtype), sh], axis=1)
    return h0[None, :] + sh


def background_terms(background, X, y, tau, h0):
    r"""``(weights, shift, dense_gram, rhs)`` of the row solve of a full-matrix likelihood
    (``background = (w0, t0_obs, t0_other)``, :func:`rows_draw`): each observed pair
    weighs ``tau_j - w0`` in the Gram, the dense part is :math:`w_0 X^\top X`, the prior
    shift gains :math:`w_0 X^\top t_0` and the right-hand side of pair ``j`` is
    :math:`\tau_j y_j - w_0 t_{0j}`."""
    w0, t0_obs, t0_other = background
    w = jnp.broadcast_to(jnp.asarray(tau, y.dtype), y.shape)
    return w - w0, h0 + w0 * (t0_other @ X), w0 * (X.T @ X), w * y - w0 * t0_obs


def mu_draw(key, s_res, tau, lambda_mu, mu_mean, background=None):
    r"""Step 6: :math:`\mu \sim \mathcal N((\lambda_\mu m_\mu + \sum w s)/(\lambda_\mu
    + \sum w),\ 1/(\lambda_\mu + \sum w))` with ``s_res = z - b_u - b_i - U.V`` and the
    weights ``w = tau`` (a scalar: :math:`\sum w = \tau n`) or per observation (the
    pseudo-observation precisions of an augmented likelihood).

    ``background = (w0, n_all, sum_t0, t0_obs)`` (full-matrix likelihood): the sums run
    over all ``n_all`` pairs, the unobserved ones with weight ``w0`` and residual
    ``t0 = y0 - b_u - b_i - U.V`` (``sum_t0`` over all pairs in closed form, ``t0_obs``
    at the observed ones): :math:`\sum w = w_0 n_{all} + \sum_O (w - w_0)`,
    :math:`\sum w s = w_0\sum_{all} t_0 + \sum_O (w s - w_0 t_0)`."""
    if background is not None:
        w0, n_all, sum_t0, t0_obs = background
        w = jnp.broadcast_to(jnp.asarray(tau, s_res.dtype), s_res.shape)
        return mu_draw_sums(key, w0 * n_all + total(w - w0, long=True),
                            w0 * sum_t0 + total(w * s_res - w0 * t0_obs, long=True),
                            lambda_mu, mu_mean, s_res.dtype)
    if jnp.ndim(tau) == 0:
        return mu_draw_sums(key, tau * count(s_res.shape[0]), tau * total(s_res, long=True),
                            lambda_mu, mu_mean, s_res.dtype)
    return mu_draw_sums(key, total(tau, long=True), total(tau * s_res, long=True),
                        lambda_mu, mu_mean, s_res.dtype)


def mu_draw_sums(key, sum_w, sum_ws, lambda_mu, mu_mean, dt):
    r""":func:`mu_draw` from the weighted sums :math:`\sum w` and :math:`\sum w s`."""
    prec = lambda_mu + sum_w
    mean = (lambda_mu * mu_mean + sum_ws) / prec
    return (mean + jax.random.normal(key, (), dt) / jnp.sqrt(prec)).astype(dt)


def tau_draw(key, sse, n, a0, b0, dt):
    r"""Step 7: :math:`\tau \sim \mathrm{Gamma}(a_\tau + n/2,\ b_\tau + \mathrm{SSE}/2)`."""
    return _gamma_precision(key, a0 + n / 2, b0 + 0.5 * sse, dt)


def translation_move(key, mu, b, lam_b, lambda_mu, mu_mean):
    r"""Step 5: exact group move along the likelihood-flat ridge
    :math:`(\mu, b) \to (\mu + c, b - c)`.

    The likelihood does not change, the Jacobian is 1 (a translation, Liu & Sabatti 2000),
    so :math:`c` is drawn from the prior terms alone:

    .. math::

        c \sim \mathcal N\!\left(\frac{\lambda_b\sum_j b_j - \lambda_\mu(\mu - m_\mu)}
        {\lambda_\mu + n_b\lambda_b},\ \frac{1}{\lambda_\mu + n_b\lambda_b}\right)

    Without it, :math:`\mu` and the biases trade off only through their weak priors and a
    chain started far away drifts back very slowly."""
    dt = b.dtype
    prec = lambda_mu + count(b.shape[0]) * lam_b
    mean = (lam_b * total(b) - lambda_mu * (mu - mu_mean)) / prec
    c = (mean + jax.random.normal(key, (), dt) / jnp.sqrt(prec)).astype(dt)
    return mu + c, b - c


def shift_move(key, F, mu_F, b, G, mu, Lam_F, lam_b, beta0, lambda_mu, mu_mean,
               with_mu: bool):
    r"""Step 5a: exact group move along a likelihood-flat direction of the factors.

    For :math:`c\in\mathbb R^k`, with ``F`` one side's factors (e.g. ``V``), ``G`` the
    other side's (``U``) and ``b`` the other side's biases (:math:`b_u`):

    .. math::

        F_j \to F_j - c,\quad \mu_F \to \mu_F - c,\quad
        b_r \to b_r + (G_r - \bar G)^\top c,\quad \mu \to \mu + \bar G^\top c

    leaves every prediction unchanged
    (:math:`\mu + b_u + U_u^\top V_i = (\mu + \bar U^\top c) + (b_u + (U_u-\bar U)^\top c)
    + U_u^\top(V_i - c)`) and the prior :math:`\mathcal N(F_j\mid\mu_F,\Lambda_F^{-1})`
    too; it is a translation (Jacobian 1), so :math:`c` is drawn from the prior terms that
    do change (Liu & Sabatti 2000): :math:`\mathcal N(\mu_F\mid 0, (\beta_0\Lambda_F)^{-1})`,
    the bias prior and the prior of :math:`\mu`:

    .. math::

        c \sim \mathcal N(A^{-1}h, A^{-1}),\quad
        A = \beta_0\Lambda_F + \lambda_b \tilde G^\top\tilde G + \lambda_\mu \bar G\bar G^\top,
        \quad h = \beta_0\Lambda_F\mu_F - \lambda_b\tilde G^\top b
        - \lambda_\mu\bar G(\mu - m_\mu)

    (:math:`\tilde G = G - \bar G`). Without a global mean (``with_mu=False``)
    :math:`\bar G` is taken as 0. The factors' mean acts as a second offset that the
    row-wise updates can only move through the priors; this move lets it travel, and with
    it :math:`\mu` (through the biases and the translation moves)."""
    dt = F.dtype
    Gbar = total(G, axis=0) / count(G.shape[0]) if with_mu else jnp.zeros((G.shape[1],), dt)
    Gc = G - Gbar
    GcGc, Gcb = reduce((Gc.T @ Gc, Gc.T @ b))
    A = beta0 * Lam_F + lam_b * GcGc + lambda_mu * jnp.outer(Gbar, Gbar)
    h = beta0 * (Lam_F @ mu_F) - lam_b * Gcb - lambda_mu * Gbar * (mu - mu_mean)
    c = gaussian_from_precision(0.5 * (A + A.T), h, key)
    return F - c, mu_F - c, b + Gc @ c, mu + Gbar @ c


def scale_move(key, U, mu_U, Lam_U, V, mu_V, Lam_V, w0, beta_U=None, beta_V=None):
    r"""Step 5b: Metropolis group move along the likelihood-flat scale direction

    .. math::

        (U, \mu_U, \Lambda_U, V, \mu_V, \Lambda_V) \to
        (sU,\ s\mu_U,\ s^{-2}\Lambda_U,\ V/s,\ \mu_V/s,\ s^2\Lambda_V).

    :math:`UV^\top` is unchanged and so are the row priors and the
    :math:`\mathcal N(\mu\mid 0,(\beta_0\Lambda)^{-1})` terms once the Jacobian
    :math:`s^{(N-M)k}` is counted; only the Wishart kernels
    :math:`\exp(-\tfrac12\operatorname{tr}W_0^{-1}\Lambda)` change. With Haar measure
    :math:`ds/s` (Liu & Sabatti 2000) the target of :math:`x=\log s` is

    .. math::

        p(x) \propto \exp\!\bigl(-\tfrac12(a e^{-2x} + b e^{2x})\bigr),\quad
        a = \operatorname{tr}\Lambda_U / w_0,\ b = \operatorname{tr}\Lambda_V / w_0,

    log-concave with mode :math:`x^* = \tfrac14\log(a/b)` and curvature
    :math:`4\sqrt{ab}`; one independence Metropolis step with the Laplace proposal
    :math:`\mathcal N(x^*, 1.2^2/(4\sqrt{ab}))` from :math:`x = 0` (the current state)
    keeps the posterior invariant. Without it the factor scale (row norms,
    :math:`\operatorname{tr}\Lambda`) drifts along this ridge only through the row
    updates. Returns the moved ``(U, mu_U, Lam_U, V, mu_V, Lam_V)``.

    With the Macau prior (``beta_U``/``beta_V`` given) the link matrices move with their
    factors, :math:`\beta_U \to s\beta_U`, :math:`\beta_V \to \beta_V/s`: the
    residuals :math:`U - X\beta_U` scale like :math:`U`, and the coupled prior
    :math:`\mathcal N(\beta_f \mid 0, (\lambda_\beta\Lambda)^{-1})` is invariant once
    its Jacobian :math:`s^{Fk}` is counted (:math:`\det(s^{-2}\Lambda)^{F/2}
    s^{Fk} = \det\Lambda^{F/2}`), so the target of :math:`\log s` is unchanged; the
    moved pair is then appended to the returned tuple."""
    dt = U.dtype
    a = jnp.trace(Lam_U) / w0
    b = jnp.trace(Lam_V) / w0
    mode = 0.25 * (jnp.log(a) - jnp.log(b))
    sd = 1.2 / jnp.sqrt(4.0 * jnp.sqrt(a * b))
    kx, ku = jax.random.split(key)
    x = mode + sd * jax.random.normal(kx, (), dt)

    def logp(x):
        return -0.5 * (a * jnp.exp(-2.0 * x) + b * jnp.exp(2.0 * x))

    def logq(x):
        return -0.5 * ((x - mode) / sd) ** 2

    log_acc = logp(x) - logp(jnp.zeros((), dt)) + logq(jnp.zeros((), dt)) - logq(x)
    accept = jnp.log(jax.random.uniform(ku, (), dt, minval=jnp.finfo(dt).tiny)) < log_acc
    s = jnp.where(accept, jnp.exp(x), jnp.ones((), dt)).astype(dt)
    out = (U * s, mu_U * s, Lam_U / (s * s), V / s, mu_V / s, Lam_V * (s * s))
    if beta_U is None and beta_V is None:
        return out
    return out + (None if beta_U is None else beta_U * s,
                  None if beta_V is None else beta_V / s)


def latent_scale_move(key, cfg, y, eta, mu, bu, bi, U, V, mu_U, Lam_U, mu_V, Lam_V,
                      lam_bu, lam_bi, theta):
    r"""Step 6b (likelihoods whose latent noise scale is fixed: probit, logit, ordinal):
    Metropolis group move along the scale of :math:`\eta`, with the augmentation
    integrated out (the likelihood is :math:`p(y\mid\eta,\theta)` itself).

    .. math::

        (\mu, b, U, V, \mu_U, \mu_V, \Lambda_U, \Lambda_V, \lambda_b, c) \to
        (s\mu,\ sb,\ \sqrt s U,\ \sqrt s V,\ \sqrt s\mu_U,\ \sqrt s\mu_V,\ \Lambda_U/s,
        \Lambda_V/s,\ \lambda_b/s^2,\ s c)

    maps :math:`\eta \to s\eta` and the cutpoints :math:`c \to sc`. With Haar measure
    :math:`ds/s` the target of :math:`x = \log s` is :math:`\log p(y\mid e^x\eta, e^x c)`
    plus the log prior ratio and log Jacobian of the transformed coordinates:
    :math:`x` for :math:`\mu` (flat prior; a Gaussian one adds its ratio),
    :math:`-2a_b x - b_b\lambda_b(e^{-2x}-1)` per bias side,
    :math:`-\tfrac{k\nu_0}2 x - \tfrac{\operatorname{tr}\Lambda}{2w_0}(e^{-x}-1)` per factor
    side (the row and :math:`\mu_F` priors are invariant once their Jacobians are
    counted), and the likelihood's own term (:meth:`Likelihood.scale_log_prior`). The
    proposal is the Laplace approximation by one Newton step from the current point,
    :math:`x' \sim \mathcal N(\hat x_0, 1/h(\hat x_0))` with :math:`\hat x_0` two
    (clipped) Newton steps towards the mode from the current point, and the reverse
    proposal is built the same way from :math:`x'` (MH with the state-dependent proposal
    corrected, exact whether or not Newton converged). Without it, the
    scale of the factors and cutpoints drifts only through the truncated-normal
    pseudo-data, the slow direction of every unit-noise augmentation (the ordinal
    cutpoints of MovieLens-100K u3 need ~1000 sweeps to expand from their start)."""
    lik, spec = cfg.spec.likelihood, cfg.spec
    dt = eta.dtype
    k = cfg.k
    tr = (jnp.trace(Lam_U) + jnp.trace(Lam_V)) if k else jnp.zeros((), dt)

    def fgh(x):
        """logt and its first two derivatives: the likelihood's (analytic where the
        family provides it, one pass over the data) plus the closed-form prior terms."""
        s = jnp.exp(x)
        f, f1, f2 = lik.scale_fgh(y, eta, theta, x, spec)
        if cfg.global_mean:
            sm = s * mu
            f = f + x - 0.5 * cfg.lambda_mu * ((sm - cfg.mu_mean) ** 2 - (mu - cfg.mu_mean) ** 2)
            f1 = f1 + 1.0 - cfg.lambda_mu * (sm - cfg.mu_mean) * sm
            f2 = f2 - cfg.lambda_mu * (sm * sm + (sm - cfg.mu_mean) * sm)
        e2 = jnp.exp(-2.0 * x)
        for on, lam in ((cfg.user_bias, lam_bu), (cfg.item_bias, lam_bi)):
            if on:
                f = f - 2.0 * cfg.bias_a * x - cfg.bias_b * lam * (e2 - 1.0)
                f1 = f1 - 2.0 * cfg.bias_a + 2.0 * cfg.bias_b * lam * e2
                f2 = f2 - 4.0 * cfg.bias_b * lam * e2
        if k:
            e1 = jnp.exp(-x) * tr / (2.0 * cfg.w0)
            f = f - k * cfg.nu0 * x - (e1 - tr / (2.0 * cfg.w0))
            f1 = f1 - k * cfg.nu0 + e1
            f2 = f2 - e1
        return f, f1, f2

    def logt(x):
        return fgh(x)[0]

    def newton(x):
        # proposal mean and precision from a point: 2 Newton steps to the mode of logt,
        # the same map from the current (0) and the proposed point (MH correction exact)
        def it(_, xx):
            _, g, h2 = fgh(xx)
            return xx + jnp.clip(g / jnp.maximum(-h2, 1e-6), -0.5, 0.5)

        m = lax.fori_loop(0, 2, it, x)
        return m, jnp.maximum(-fgh(m)[2], 1e-6)

    def logq(x, mean, h):
        return 0.5 * jnp.log(h) - 0.5 * h * (x - mean) ** 2

    kx, ku = jax.random.split(key)
    zero = jnp.zeros((), dt)
    m0, h0 = newton(zero)
    x1 = m0 + jax.random.normal(kx, (), dt) / jnp.sqrt(h0)
    m1, h1 = newton(x1)
    log_acc = logt(x1) - logt(zero) + logq(zero, m1, h1) - logq(x1, m0, h0)
    acc = jnp.isfinite(log_acc) & (
        jnp.log(jax.random.uniform(ku, (), dt, minval=jnp.finfo(dt).tiny)) < log_acc)
    s = jnp.where(acc, jnp.exp(x1), jnp.ones((), dt)).astype(dt)
    r = jnp.sqrt(s)
    theta = {n: jnp.where(acc, v, theta[n]).astype(dt)
             for n, v in lik.scale_theta(theta, s, spec).items()}
    return (mu * s, bu * s, bi * s, U * r, V * r, mu_U * r, Lam_U / s, mu_V * r, Lam_V / s,
            lam_bu / (s * s), lam_bi / (s * s), theta, s)




# ----------------------------------------------------------------------------- Macau
class MacauData(NamedTuple):
    r"""Side features of one side in device form (a pytree): dense ``X (n, F)``, or the
    COO triplets ``rows, cols, vals`` of a sparse one (``X`` None); ``XtX (F, F)``
    (Cholesky solver only, else None); ``Q (F, F)``, ``evals (F,)`` the eigenvectors and
    eigenvalues of :math:`X^\top X` (eigh solver only, else None)."""

    X: Any
    rows: Any
    cols: Any
    vals: Any
    XtX: Any
    Q: Any = None
    evals: Any = None


def macau_data(X, dtype, solver: str) -> MacauData:
    """:class:`MacauData` from a dense array or a scipy sparse matrix (host, once per
    fit). ``X^T X`` is formed on the host in float64 for the Cholesky solver, and
    eigendecomposed there (``numpy.linalg.eigh``, float64) for the eigh solver."""
    import numpy as np
    import scipy.sparse as sps

    XtX = Q = evals = None
    if solver in ("cholesky", "eigh"):
        G = (X.T @ X).toarray() if sps.issparse(X) else \
            np.asarray(X, np.float64).T @ np.asarray(X, np.float64)
        G = np.asarray(G, np.float64)
        if solver == "cholesky":
            XtX = jnp.asarray(G, dtype)
        else:
            d, Qh = np.linalg.eigh(0.5 * (G + G.T))
            Q, evals = jnp.asarray(Qh, dtype), jnp.asarray(np.maximum(d, 0.0), dtype)
    if sps.issparse(X):
        C = sps.coo_matrix(X)
        return MacauData(None, jnp.asarray(C.row, jnp.int32), jnp.asarray(C.col, jnp.int32),
                         jnp.asarray(C.data, dtype), XtX, Q, evals)
    X = np.asarray(X, np.float64)
    return MacauData(jnp.asarray(X, dtype), None, None, None, XtX, Q, evals)


def _tri(L, B, transpose):
    return lax.linalg.triangular_solve(L, B, left_side=True, lower=True, transpose_a=transpose)


def macau_beta_draw(key, F_rows, mu_F, Lam, lam_beta, f: MacauData, n_features: int,
                    solver: str = "cholesky", beta_prev=None, cg_tol: float = 1e-6,
                    cg_maxiter: int = 200):
    r"""The link matrix of the Macau prior (Simm et al. 2015) from its conditional.

    Model of one side's rows: :math:`F_r = \mu_F + \beta^\top x_r + e_r`,
    :math:`e_r \sim \mathcal N(0, \Lambda^{-1})`, and the coupled prior of the rows
    :math:`\beta_f` of :math:`\beta\ (F\times k)`:
    :math:`\beta_f \sim \mathcal N(0, (\lambda_\beta\Lambda)^{-1})`, i.e. the matrix normal
    :math:`\beta \sim \mathcal{MN}(0, \lambda_\beta^{-1} I_F, \Lambda^{-1})`. With
    :math:`R = F - 1\mu_F^\top` and :math:`K = X^\top X + \lambda_\beta I_F`:

    .. math::

        \beta \mid \cdot \sim \mathcal{MN}(K^{-1}X^\top R,\ K^{-1},\ \Lambda^{-1})

    (:math:`\Lambda` cancels from the mean because the prior is coupled to it).

    ``solver="cholesky"``: :math:`K = LL^\top`,
    :math:`\Lambda = CC^\top`, :math:`\beta = K^{-1}X^\top R + L^{-\top} Z C^{-1}` with
    :math:`Z` standard normal ``(F, k)`` -- triangular solves only, no explicit inverse.
    ``solver="eigh"`` (default up to 4096 features): with the eigendecomposition
    :math:`X^\top X = Q D Q^\top` computed once per fit on the host,
    :math:`K^{-1} = Q (D + \lambda_\beta I)^{-1} Q^\top` for every
    :math:`\lambda_\beta`, so :math:`\beta = Q (D+\lambda_\beta)^{-1} Q^\top X^\top R +
    Q (D+\lambda_\beta)^{-1/2} Z C^{-1}` is exact and costs two :math:`F\times F` by
    :math:`F\times k` products per sweep (no factorisation per sweep).
    ``solver="cg"`` (more features, or a sparse ``X`` too wide for an ``F x F`` matrix):
    the noise trick of Macau, solve :math:`K\beta = X^\top(R + E_1) + \sqrt{\lambda_\beta}
    E_2` with the rows of :math:`E_1 (n\times k)` and :math:`E_2 (F\times k)` drawn from
    :math:`\mathcal N(0, \Lambda^{-1})` (then :math:`\beta` has exactly the law above) by
    conjugate gradients on :math:`v \mapsto X^\top X v + \lambda_\beta v` (never forming
    :math:`X^\top X`), warm-started at ``beta_prev``, to relative residual ``cg_tol`` or
    ``cg_maxiter`` iterations (an inexact solve shifts the draw by the CG error)."""
    dt = F_rows.dtype
    n, k = F_rows.shape
    kz, k2 = jax.random.split(key)
    C = jnp.linalg.cholesky(0.5 * (Lam + Lam.T))
    R = F_rows - mu_F
    eye = jnp.eye(n_features, dtype=dt)
    if solver == "cholesky":
        K = f.XtX + lam_beta * eye
        L = jnp.linalg.cholesky(K)
        mean = _tri(L, _tri(L, feature_tmatmul(f, R, n_features), False), True)
        A = _tri(L, jax.random.normal(kz, (n_features, k), dt), True)   # L^{-T} Z
        noise = _tri(C, A.T, True).T                                     # A C^{-1}
        return mean + noise
    if solver == "eigh":  # one product by Q for mean and noise together
        inv = 1.0 / (f.evals + lam_beta)
        ZC = _tri(C, jax.random.normal(kz, (n_features, k), dt).T, True).T   # Z C^{-1}
        return f.Q @ (inv[:, None] * (f.Q.T @ feature_tmatmul(f, R, n_features))
                      + jnp.sqrt(inv)[:, None] * ZC)
    if solver != "cg":
        raise ValueError(f"unknown beta solver {solver!r}")
    E1 = _tri(C, jax.random.normal(kz, (n, k), dt).T, True).T
    E2 = _tri(C, jax.random.normal(k2, (n_features, k), dt).T, True).T
    rhs = feature_tmatmul(f, R + E1, n_features) + jnp.sqrt(lam_beta) * E2

    def op(B):
        return feature_tmatmul(f, feature_matmul(f, B, n), n_features) + lam_beta * B

    x0 = jnp.zeros_like(rhs) if beta_prev is None else beta_prev
    beta, _ = jax.scipy.sparse.linalg.cg(op, rhs, x0=x0, tol=cg_tol, maxiter=cg_maxiter)
    return beta


def macau_lambda_draw(g, b0, beta, Lam):
    r""":math:`\lambda_\beta \sim \mathrm{Gamma}(a_0 + Fk/2,\ b_0 +
    \tfrac12\operatorname{tr}(\beta\Lambda\beta^\top))` from the standard Gamma variate
    ``g`` of shape :math:`a_0 + Fk/2`."""
    return g / (b0 + 0.5 * jnp.sum((beta @ Lam) * beta))
