"""The BPMF Gibbs kernel: its state, its data, one sweep (``step``) and its ``init``; the
NumPyro ``MCMCKernel`` adapter. The equations are in :mod:`bayesmf.infer.gibbs`; the
conditional draws and moves in :mod:`bayesmf.infer.gibbs_steps`."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import check_bool, fitted_spec
from bayesmf.infer._rowblocks import (RowBlocks, build_row_blocks, check_row_block,
                                      resolve_low_width,
                                      resolve_row_parts)
from bayesmf.infer.gibbs_steps import (feature_matmul, iwls_mh_rows, latent_scale_move,
                                       row_prior_terms,
                                       macau_beta_draw, macau_data, macau_lambda_draw,
                                       mu_draw, mu_draw_sums, rows_draw, scale_move,
                                       shift_move, subspace_rows, translation_move)
from bayesmf.infer.negative_redraw import (REDRAW_STREAM, check_redraw_likelihood,
                                          redraw_layout, redraw_negatives)
from bayesmf.model import linear
from bayesmf.model.random import standard_gamma
from bayesmf.model.reduce import count, sharded, total
from bayesmf.model.spec import ModelSpec

__all__ = ["GibbsState", "GibbsData", "BPMFGibbs", "BPMFGibbsKernel", "BPMFKernelState"]


class GibbsState(NamedTuple):
    """State of one chain (everything the next sweep needs). Switched-off terms are 0."""

    mu: jnp.ndarray         # ()
    bu: jnp.ndarray         # (N,)
    bi: jnp.ndarray         # (M,)
    U: jnp.ndarray          # (N, k)
    V: jnp.ndarray          # (M, k)
    theta: dict             # the likelihood's parameters ({"tau": ()} for the Gaussian)
    mu_U: jnp.ndarray       # (k,)
    Lambda_U: jnp.ndarray   # (k, k)
    mu_V: jnp.ndarray       # (k,)
    Lambda_V: jnp.ndarray   # (k, k)
    lambda_bu: jnp.ndarray  # ()
    lambda_bi: jnp.ndarray  # ()
    #: the Macau prior's link matrices and their precisions (only the sides with features):
    #: ``beta_U (F_U, k)``, ``lambda_beta_U ()``, ``beta_V``, ``lambda_beta_V``
    macau: dict = {}

    @property
    def tau(self):
        """The Gaussian noise precision (1 for likelihoods without one)."""
        return self.theta.get("tau", jnp.ones((), self.U.dtype))

    def flat(self) -> dict:
        """The state as draw names -> arrays (the likelihood's parameters at top level)."""
        d = self._asdict()
        return {**{n: v for n, v in d.items() if n not in ("theta", "macau")}, **d["theta"],
                **d["macau"]}


class GibbsData(NamedTuple):
    """Training data in device form (a pytree, passed as a jit argument)."""

    user: jnp.ndarray     # (n,) int32
    item: jnp.ndarray     # (n,) int32
    rating: jnp.ndarray   # (n,) float: the likelihood's internal coding of the values
    ublocks: RowBlocks    # rows = users, cols = items
    iblocks: RowBlocks    # rows = items, cols = users
    #: side features of the Macau prior: ``{"user": MacauData, "item": MacauData}`` (the
    #: sides that have them; None without)
    feats: dict | None = None
    #: fixed per-row Gaussian priors of the joint ``[b, F]`` rows (posterior propagation,
    #: :mod:`bayesmf.infer.propagation`): ``{"user": (P0 (N, d, d), h0 (N, d)), ...}`` for
    #: the sides in ``_Cfg.row_prior_sides`` (None without)
    row_priors: dict | None = None
    #: per-observation weights switched off (False) for this sweep: the re-paired sampled
    #: negatives that hit a positive (:mod:`bayesmf.infer.negative_redraw`; None: all on)
    obs_mask: jnp.ndarray | None = None
    #: the per-sweep redraw of sampled negatives (a
    #: :class:`~bayesmf.infer.negative_redraw.NegativeRedraw`; None: fixed negatives)
    redraw: object = None


class _Cfg(NamedTuple):
    """Static (hashable) settings of the kernel."""

    n_users: int
    n_items: int
    nnz: int
    k: int
    global_mean: bool
    user_bias: bool
    item_bias: bool
    learn_noise: bool
    noise_precision: float
    beta0: float
    w0: float
    nu0: float
    bias_a: float
    bias_b: float
    noise_a: float
    noise_b: float
    mu_mean: float
    lambda_mu: float
    init_scale: float
    data_mean: float
    spec: ModelSpec
    #: the shard axis the global statistics are psum-ed over when the sweep is traced under
    #: shard_map/pmap with each shard holding a slice of the data (None: unsharded); see
    #: :mod:`bayesmf.model.reduce`
    axis_name: str | None = None
    #: the Macau prior: ``(side, n_features, solver)`` per side with features (static)
    macau: tuple = ()
    #: Gamma(a, b) prior of each side's lambda_beta
    lambda_beta_a: float = 1.0
    lambda_beta_b: float = 1.0
    cg_tol: float = 1e-6
    cg_maxiter: int = 200
    #: the sides whose rows have fixed per-row Gaussian priors (``GibbsData.row_priors``):
    #: their hyperparameters no longer enter the row draws, and the group moves that assume
    #: the exchangeable hierarchical prior (shift, scale; translation of that side's bias)
    #: are skipped (the sweep stays a valid Gibbs sampler without them)
    row_prior_sides: tuple = ()
    #: binary-search halvings of the negatives' redraw (0: no redraw; static)
    redraw_steps: int = 0
    #: the row-wise IWLS Metropolis-Hastings step before the augmentation (augmented
    #: likelihoods; :func:`~bayesmf.infer.gibbs_steps.iwls_mh_rows`)
    row_mh: bool = False
    #: subspace Gibbs row draws: blocks of at most this many coordinates of a row drawn one
    #: after another (0: each row drawn at once; :func:`~bayesmf.infer._rowblocks.
    #: solve_rows_subspace`)
    row_block: int = 0


def _step(cfg: _Cfg, data: GibbsData, key, s: GibbsState):
    """One full Gibbs sweep (module docs, steps 0-7); its global statistics go through
    :mod:`bayesmf.model.reduce` (``cfg.axis_name``)."""
    if cfg.axis_name is not None and cfg.macau:
        raise SpecError("side features (Macau) are not supported with data sharded over "
                        "devices")
    if cfg.axis_name is not None and cfg.row_prior_sides:
        raise SpecError("per-row priors are not supported with data sharded over devices")
    if data.redraw is not None:  # sampled negatives re-paired for this sweep
        if cfg.axis_name is not None:
            raise SpecError("redrawing negatives every sweep is not supported with data "
                            "sharded over devices")
        data = redraw_negatives(jax.random.fold_in(key, REDRAW_STREAM), data, cfg.n_users,
                                cfg.n_items, cfg.redraw_steps)
    with sharded(cfg.axis_name):
        return _sweep(cfg, data, key, s)


def _sweep(cfg: _Cfg, data: GibbsData, key, s: GibbsState, rows_fn=None, obs_fn=None,
           mh_fn=None):
    """One sweep. Hooks of the sharded sampler (:mod:`bayesmf.infer.sharded`; None: the
    plain computation): ``rows_fn`` draws one side's rows, with the signature of
    :func:`~bayesmf.infer.gibbs_steps.rows_draw`; ``obs_fn(f)`` evaluates a
    per-observation function ``f(users, items) -> (n,)`` at all observations (default
    ``f(data.user, data.item)``); ``mh_fn`` is the row Metropolis-Hastings step, with the
    signature of :func:`~bayesmf.infer.gibbs_steps.iwls_mh_rows`."""
    rows_draw_ = rows_draw if rows_fn is None else rows_fn
    mh_rows_ = iwls_mh_rows if mh_fn is None else mh_fn
    per_obs = (lambda f: f(data.user, data.item)) if obs_fn is None else obs_fn
    dt = s.U.dtype
    k = cfg.k
    lik = cfg.spec.likelihood
    kUh, kVh, kg, kU, kV, kmu, ktau, kc = jax.random.split(key, 8)
    # every Gamma variate of the sweep in one batched call (their shapes are static):
    # lambda_bu, lambda_bi, then the Bartlett chi-squares of Lambda_U and Lambda_V
    prior = cfg.spec.prior
    mc = {side: nf for side, nf, _ in cfg.macau} if k else {}
    nu_u = cfg.nu0 + mc.get("user", 0)  # Macau: nu0 + F (priors module docs)
    nu_i = cfg.nu0 + mc.get("item", 0)
    shapes = np.concatenate([[cfg.bias_a + cfg.n_users / 2, cfg.bias_a + cfg.n_items / 2],
                             prior.gamma_shapes(cfg.n_users, k, nu_u),
                             prior.gamma_shapes(cfg.n_items, k, nu_i)])
    g = standard_gamma(kg, shapes, dt)
    mu_U, Lam_U, mu_V, Lam_V = s.mu_U, s.Lambda_U, s.mu_V, s.Lambda_V
    macau = dict(s.macau)
    off = {}  # Macau: the per-row prior offsets X beta of the rows step
    if mc:  # step 1m: (mu, Lambda) | residuals, then beta, then lambda_beta (module docs)
        km = jax.random.fold_in(key, 0x4D41)  # own stream: no change to the plain sweep
        gb = standard_gamma(jax.random.fold_in(km, 0), np.asarray(
            [cfg.lambda_beta_a + nf * k / 2.0 for _, nf, _ in cfg.macau]), dt)
    if k:  # step 1: the factor prior's hyperparameters (Normal-Wishart or Normal-Gamma)
        for j, (side, nf, solver) in enumerate(cfg.macau):
            F_rows, kh = (s.U, kUh) if side == "user" else (s.V, kVh)
            S_, n = ("U", cfg.n_users) if side == "user" else ("V", cfg.n_items)
            f = data.feats[side]
            beta, lb = macau[f"beta_{S_}"], macau[f"lambda_beta_{S_}"]
            gh = g[2:2 + k] if side == "user" else g[2 + k:]
            m_, L_ = prior.hyper_step(kh, F_rows - feature_matmul(f, beta, n), cfg.beta0,
                                      nu_u if side == "user" else nu_i, cfg.w0, gh,
                                      extra=lb * (beta.T @ beta))
            beta = macau_beta_draw(jax.random.fold_in(km, 1 + j), F_rows, m_, L_, lb, f, nf,
                                   solver, beta, cfg.cg_tol, cfg.cg_maxiter).astype(dt)
            lb = macau_lambda_draw(gb[j], cfg.lambda_beta_b, beta, L_).astype(dt)
            macau[f"beta_{S_}"], macau[f"lambda_beta_{S_}"] = beta, lb
            off[side] = feature_matmul(f, beta, n)
            if side == "user":
                mu_U, Lam_U = m_, L_
            else:
                mu_V, Lam_V = m_, L_
        if "user" not in mc:
            mu_U, Lam_U = prior.hyper_step(kUh, s.U, cfg.beta0, cfg.nu0, cfg.w0, g[2:2 + k])
        if "item" not in mc:
            mu_V, Lam_V = prior.hyper_step(kVh, s.V, cfg.beta0, cfg.nu0, cfg.w0, g[2 + k:])
    lam_bu, lam_bi = s.lambda_bu, s.lambda_bi
    if cfg.user_bias:
        lam_bu = g[0] / (cfg.bias_b + 0.5 * total(s.bu * s.bu))
    if cfg.item_bias:
        lam_bi = g[1] / (cfg.bias_b + 0.5 * total(s.bi * s.bi))
    y, u, i = data.rating, data.user, data.item
    bu, bi, U, V, mu = s.bu, s.bi, s.U, s.V, s.mu
    if cfg.row_mh:  # step 0m: IWLS Metropolis-Hastings on every row, augmentation integrated
        kmh = jax.random.split(jax.random.fold_in(key, 0x4D48))  # own stream
        rp = data.row_priors or {}
        moved = jnp.zeros((), dt)
        for j, side in enumerate(("user", "item")):
            on = cfg.user_bias if side == "user" else cfg.item_bias
            if not (on or k):
                continue
            if side == "user":  # rows, their biases and factors, the other side, indices
                args = (data.ublocks, V, bu, U, mu + bi[i], u, i, lam_bu, Lam_U, mu_U)
            else:
                args = (data.iblocks, U, bi, V, mu + bu[u], i, u, lam_bi, Lam_V, mu_V)
            blocks, other, b_, F_, o_, r_, c_, lam, Lam, mu_f = args
            b_, F_, n_moved = mh_rows_(
                kmh[j], lik, s.theta, blocks, k, on, other, b_, F_, y, o_, r_, c_,
                *row_prior_terms(k, on, lam, Lam, mu_f, dt, off.get(side), rp.get(side)),
                data.obs_mask)
            moved = moved + n_moved
            if side == "user":
                bu, U = b_, (F_ if k else U)
            else:
                bi, V = b_, (F_ if k else V)
        row_mh_accept = moved / float(cfg.n_users + cfg.n_items)
    # step 0: Gaussian pseudo-observations z with precision weights w (z = y, w = tau
    # for the Gaussian likelihood; an augmentation draw for the others)
    eta0 = per_obs(lambda uu, ii: linear.eta(mu, bu, bi, U, V, uu, ii)) \
        if lik.augmented else None
    kz, ktheta = jax.random.split(ktau)
    z, w = lik.gaussianize(kz, y, eta0, s.theta)
    if data.obs_mask is not None:  # observations switched off this sweep weigh nothing
        w = jnp.where(data.obs_mask, w, jnp.zeros((), w.dtype))
    # a full-matrix likelihood (implicit feedback): the unobserved pairs are the
    # pseudo-observation (y0, w0); its dense terms enter in closed form
    bg = lik.background(s.theta)
    if bg is not None:
        y0, w0 = bg
        n_all = float(cfg.n_users) * float(cfg.n_items)

    def side_bg(b_other, idx):
        return None if bg is None else (w0, y0 - mu - b_other[idx], y0 - mu - b_other)

    fixed = cfg.row_prior_sides

    def row_prior(side):
        return {"row_prior": data.row_priors[side]} if side in fixed else {}

    def sub(b_, F_):  # subspace row draws start from the side's current rows
        return {"current": (b_, F_), "row_block": cfg.row_block} if cfg.row_block else {}

    # both sides by subspace draws (plain sweep): the user step's final predictions
    # b_u + U_u.V_i start the item step's running predictions, as b_i + U_u.V_i (saves
    # one nnz x d gather; "Running predictions" in solve_rows_subspace's docs)
    pass_pred = (rows_fn is None and subspace_rows(k, cfg.user_bias, cfg.row_block)
                 and subspace_rows(k, cfg.item_bias, cfg.row_block))
    item_pred = {}
    if cfg.user_bias or k:
        drawn_u = rows_draw_(kU, k, data.ublocks, cfg.user_bias, V, z - mu - bi[i], w,
                             lam_bu, Lam_U, mu_U, side_bg(bi, i), off.get("user"),
                             **row_prior("user"), **sub(bu, U),
                             **({"return_pred": True} if pass_pred else {}))
        bu, U_new = drawn_u[:2]
        U = U_new if k else U
        if pass_pred:
            p = drawn_u[2]
            p = p - bu[u] if cfg.user_bias else p
            item_pred["pred0"] = p + bi[i] if cfg.item_bias else p
    # the residual sums of the item step's rows stand in for every observation's
    # prediction: the moves below leave eta unchanged ("Residual sums" in the module docs of
    # bayesmf.infer.gibbs)
    # (a full-matrix likelihood: from the row draws' corrections plus the closed-form
    # background sums, without the observations' predictions; not with mu, whose draw needs
    # the residual sum that only the bias column gives, nor with masked observations)
    fit_stats = lik.sse_sufficient and rows_fn is None and obs_fn is None and (
        (bg is None and jnp.ndim(w) == 0 and (cfg.item_bias or (k and not cfg.global_mean)))
        or (bg is not None and bool(cfg.item_bias or k) and not cfg.global_mean
            and data.obs_mask is None and not lik.latent_scale_fixed))
    if cfg.item_bias or k:
        drawn = rows_draw_(kV, k, data.iblocks, cfg.item_bias, U, z - mu - bu[u], w,
                           lam_bi, Lam_V, mu_V, side_bg(bu, u), off.get("item"),
                           **row_prior("item"), **({"fit_stats": True} if fit_stats else {}),
                           **sub(bi, V), **item_pred)
        bi, V_new = drawn[:2]
        V = V_new if k else V
    if k and not fixed:
        ksv, ksu, kc = jax.random.split(kc, 3)
        sh = dict(beta0=cfg.beta0, lambda_mu=cfg.lambda_mu, mu_mean=cfg.mu_mean,
                  with_mu=cfg.global_mean)
        if cfg.user_bias:
            V, mu_V, bu, mu = shift_move(ksv, V, mu_V, bu, U, mu, Lam_V, lam_bu, **sh)
        if cfg.item_bias:
            U, mu_U, bi, mu = shift_move(ksu, U, mu_U, bi, V, mu, Lam_U, lam_bi, **sh)
        ksc, kc = jax.random.split(kc)
        if mc:
            U, mu_U, Lam_U, V, mu_V, Lam_V, bU, bV = scale_move(
                ksc, U, mu_U, Lam_U, V, mu_V, Lam_V, cfg.w0, macau.get("beta_U"),
                macau.get("beta_V"))
            macau.update({n: b for n, b in (("beta_U", bU), ("beta_V", bV)) if b is not None})
        else:
            U, mu_U, Lam_U, V, mu_V, Lam_V = scale_move(ksc, U, mu_U, Lam_U, V, mu_V, Lam_V,
                                                        cfg.w0)
    if cfg.global_mean:
        kcu, kci = jax.random.split(kc)
        if cfg.user_bias and "user" not in fixed:
            mu, bu = translation_move(kcu, mu, bu, lam_bu, cfg.lambda_mu, cfg.mu_mean)
        if cfg.item_bias and "item" not in fixed:
            mu, bi = translation_move(kci, mu, bi, lam_bi, cfg.lambda_mu, cfg.mu_mean)

    if fit_stats and bg is not None:  # step 7 from sum_all w (z - eta)^2, in units of w0
        s1, s2 = linear.full_moments(mu, bu, bi, U, V)
        sse_w = w0 * (n_all * y0 * y0 - 2.0 * y0 * s1 + s2) + drawn[2][0]
        theta, info = lik.update_theta_sse(ktheta, n_all, sse_w / w0, s.theta, cfg.spec, dt,
                                           y=y)
        return _new_state(mu, bu, bi, U, V, theta, mu_U, Lam_U, mu_V, Lam_V, lam_bu, lam_bi,
                          macau, info, dt)
    if fit_stats:  # steps 6-7 from (n, sum w e, sum w e^2) at the item step's eta
        sse_w, res_w = drawn[2]
        n = count(y.shape[0])
        sum_w = w * n                                   # w = tau, one for all
        if cfg.global_mean:
            mu_new = mu_draw_sums(kmu, sum_w, res_w + mu * sum_w, cfg.lambda_mu,
                                  cfg.mu_mean, dt)
            dmu = mu_new - mu                           # every residual moves by -dmu
            sse_w = sse_w - 2.0 * dmu * res_w + dmu * dmu * sum_w
            mu = mu_new
        theta, info = lik.update_theta_sse(ktheta, n, sse_w / w, s.theta, cfg.spec, dt)
        return _new_state(mu, bu, bi, U, V, theta, mu_U, Lam_U, mu_V, Lam_V, lam_bu, lam_bi,
                          macau, info, dt)

    def lin_at(uu, ii):
        lin = bu[uu] + bi[ii]
        if k:
            lin = lin + jnp.sum(U[uu] * V[ii], axis=1)
        return lin

    lin = per_obs(lin_at)
    if cfg.global_mean:
        mbg = None
        if bg is not None:
            sum_lin = linear.full_moments(jnp.zeros((), dt), bu, bi, U, V)[0]
            mbg = (w0, n_all, y0 * n_all - sum_lin, y0 - lin)
        mu = mu_draw(kmu, z - lin, w, cfg.lambda_mu, cfg.mu_mean, mbg)
    eta = mu + lin
    if data.obs_mask is not None:  # eta = 0: a term constant in the latent scale
        eta = jnp.where(data.obs_mask, eta, jnp.zeros((), eta.dtype))
    theta = s.theta
    # step 6b: the scale of eta against the unit latent noise (not with fixed row priors)
    if lik.latent_scale_fixed and not fixed:
        ksc2, ktheta = jax.random.split(ktheta)
        (mu, bu, bi, U, V, mu_U, Lam_U, mu_V, Lam_V, lam_bu, lam_bi, theta,
         sc) = latent_scale_move(ksc2, cfg, y, eta, mu, bu, bi, U, V, mu_U, Lam_U, mu_V,
                                 Lam_V, lam_bu, lam_bi, theta)
        eta = eta * sc
        macau = {n: (v * jnp.sqrt(sc) if n.startswith("beta_") else v)
                 for n, v in macau.items()}  # beta moves with its factors (latent scale)
    # step 7: the likelihood's parameters (tau, cutpoints) given the new eta
    if bg is None:
        theta, info = lik.update_theta(ktheta, y, eta, theta, cfg.spec)
    else:
        s1, s2 = linear.full_moments(mu, bu, bi, U, V)
        theta, info = lik.update_theta(ktheta, y, eta, theta, cfg.spec, full=(n_all, s1, s2))
    if cfg.row_mh:
        info = {**info, "row_mh_accept": row_mh_accept}
    return _new_state(mu, bu, bi, U, V, theta, mu_U, Lam_U, mu_V, Lam_V, lam_bu, lam_bi,
                      macau, info, dt)


def _new_state(mu, bu, bi, U, V, theta, mu_U, Lam_U, mu_V, Lam_V, lam_bu, lam_bi, macau, info,
               dt):
    """The sweep's result ``(GibbsState, info)`` in the chain's dtype."""
    new = GibbsState(mu, bu, bi, U, V, {n: jnp.asarray(v, dt) for n, v in theta.items()},
                     mu_U, Lam_U, mu_V, Lam_V, lam_bu, lam_bi,
                     {n: jnp.asarray(v, dt) for n, v in macau.items()})
    return new, {n: jnp.asarray(v, dt) for n, v in info.items()}


def _init(cfg: _Cfg, key, dt, theta0: dict, init_scale=None, mu=None, tau=None) -> GibbsState:
    k = cfg.k
    sc = cfg.init_scale if init_scale is None else float(init_scale)
    k1, k2 = jax.random.split(key)
    U = sc * jax.random.normal(k1, (cfg.n_users, k), dt)
    V = sc * jax.random.normal(k2, (cfg.n_items, k), dt)
    m = (cfg.data_mean if cfg.global_mean else 0.0) if mu is None else float(mu)
    theta = {n: jnp.asarray(v, dt) for n, v in theta0.items()}
    if tau is not None:
        if "tau" not in theta:
            raise SpecError(f"tau= applies to the Gaussian likelihood, not "
                            f"{cfg.spec.likelihood.name!r}")
        theta["tau"] = jnp.asarray(float(tau), dt)
    z = lambda *shape: jnp.zeros(shape, dt)  # noqa: E731
    macau = {}
    for side, nf, _ in (cfg.macau if k else ()):  # beta = 0, lambda_beta = 1
        S_ = "U" if side == "user" else "V"
        macau[f"beta_{S_}"] = z(nf, k)
        macau[f"lambda_beta_{S_}"] = jnp.ones((), dt)
    return GibbsState(jnp.asarray(m, dt), z(cfg.n_users), z(cfg.n_items), U, V,
                      theta, z(k), jnp.eye(k, dtype=dt), z(k), jnp.eye(k, dtype=dt),
                      jnp.ones((), dt), jnp.ones((), dt), macau)


class BPMFGibbs:
    """The pure BPMF Gibbs kernel bound to one training set and spec.

    ``init(key, *, init_scale=None, mu=None, tau=None) -> GibbsState`` draws random
    factors ``N(0, init_scale^2)`` (default ``spec.init_scale``), zero biases, ``mu`` at
    the likelihood's offset (the training mean for the Gaussian) and the likelihood's
    initial parameters (``tau`` at ``spec.noise_precision`` for the Gaussian);
    ``spec`` is the fitted spec (:func:`bayesmf.infer.fitted_spec`: e.g. the ordinal
    levels of the training data);
    ``step(key, state) -> (state, info)`` is one sweep (jit/vmap/scan-able; ``info`` has
    ``train_rmse`` and ``log_likelihood``).
    ``redraw_negatives=True`` (a 0/1 ``train`` of positives and sampled negatives, a
    Bernoulli likelihood) re-pairs the negatives at every sweep
    (:mod:`bayesmf.infer.negative_redraw`).
    """

    def __init__(self, train: Ratings, spec: ModelSpec, *, dtype="float32", max_width=128,
                 user_features=None, item_features=None, beta_solver="auto",
                 lambda_beta_prior=(1.0, 1.0), cg_tol=1e-6, cg_maxiter=200,
                 row_parts="auto", row_priors=None, low_width="auto",
                 redraw_negatives=False, row_mh=False, row_block=None):
        spec = fitted_spec(train, spec)
        lik = spec.likelihood
        check_bool("redraw_negatives", redraw_negatives)
        check_bool("row_mh", row_mh)
        row_block = check_row_block(row_block)  # rows of few observations stay whole
        if row_mh and not lik.augmented:
            raise SpecError("row_mh (the IWLS Metropolis-Hastings row step) applies to the "
                            "augmented likelihoods (bernoulli-logit, bernoulli-probit, "
                            f"ordinal), not {lik.name!r}")
        if row_mh:
            if low_width == "auto":
                low_width = 0  # the step builds each row's Gram: no Woodbury rows
            elif low_width != 0:
                raise SpecError("row_mh=True needs low_width=0 (rows of few observations "
                                f"drawn through the Woodbury identity), got {low_width!r}")
        if redraw_negatives:
            check_redraw_likelihood(lik)
        y_data = np.asarray(train.rating, np.float64)
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise SpecError(f"dtype must be float32 or float64, got {dtype!r}")
        if dt == np.float64 and not jax.config.jax_enable_x64:
            raise SpecError("dtype='float64' needs jax_enable_x64 (set it yourself: "
                            "jax.config.update('jax_enable_x64', True))")
        self.spec, self.dtype = spec, dt
        pri = spec.priors
        k = spec.rank
        self.cfg = _Cfg(
            n_users=train.n_users, n_items=train.n_items, nnz=train.nnz, k=k,
            global_mean=spec.global_mean, user_bias=spec.user_bias, item_bias=spec.item_bias,
            learn_noise=spec.noise == "learned", noise_precision=float(spec.noise_precision),
            beta0=float(pri.beta0), w0=float(pri.w0),
            nu0=spec.prior.nu0(spec),
            bias_a=float(pri.bias_a), bias_b=float(pri.bias_b), noise_a=float(pri.noise_a),
            noise_b=float(pri.noise_b), mu_mean=float(pri.mu_mean),
            lambda_mu=float(pri.lambda_mu), init_scale=float(spec.init_scale),
            data_mean=lik.eta_offset(y_data), spec=spec)
        feats, macau, aligned = _macau_setup(train, spec, dt, user_features, item_features,
                                             beta_solver, lambda_beta_prior)
        if macau:
            self.cfg = self.cfg._replace(
                macau=macau, lambda_beta_a=float(lambda_beta_prior[0]),
                lambda_beta_b=float(lambda_beta_prior[1]), cg_tol=float(cg_tol),
                cg_maxiter=int(cg_maxiter))
        #: the features aligned to the training vocabularies (None where not given)
        self.features = aligned
        self.theta0 = lik.init_theta(y_data, spec)
        u = np.asarray(train.user, np.int32)
        i = np.asarray(train.item, np.int32)
        #: row parts of each side's blocks (``row_parts``, :func:`resolve_row_parts`)
        self.row_parts = resolve_row_parts(row_parts, u.size)
        lay = dict(max_width=max_width, parts=self.row_parts, row_cost=(spec.rank + 1) / 3)
        rp = check_row_priors(row_priors, spec, train.n_users, train.n_items, dt)
        if rp and macau and {m[0] for m in macau} & set(rp):
            raise SpecError("a side cannot have both side features (Macau) and per-row priors")
        if rp:
            self.cfg = self.cfg._replace(row_prior_sides=tuple(s for s in ("user", "item")
                                                               if s in rp))
        #: the prior means of the rows with fixed per-row priors: ``init`` starts them there
        self.row_prior_means = {side: jnp.asarray(np.asarray(row_priors[side][0]), dt)
                                for side in rp}
        #: rows of at most this many observations are drawn through the Woodbury identity
        #: (``{"user": w, "item": w}``, 0 = off; :mod:`bayesmf.infer._rowblocks`, **Rows of
        #: few observations**); off for a side with per-row priors
        self.low_width = {
            side: 0 if side in rp else resolve_low_width(
                low_width, k + int(bias), max_width, np.bincount(rows, minlength=n))
            for side, bias, rows, n in (("user", spec.user_bias, u, train.n_users),
                                        ("item", spec.item_bias, i, train.n_items))}
        self.data = GibbsData(
            jnp.asarray(u), jnp.asarray(i), jnp.asarray(lik.encode(y_data).astype(dt)),
            _to_device(build_row_blocks(u, i, train.n_users, n_other=train.n_items,
                                        low_width=self.low_width["user"], **lay)),
            _to_device(build_row_blocks(i, u, train.n_items, n_other=train.n_users,
                                        low_width=self.low_width["item"], **lay)),
            feats or None, rp or None)
        if row_mh:
            self.cfg = self.cfg._replace(row_mh=True)
        if row_block:
            self.cfg = self.cfg._replace(row_block=row_block)
        if redraw_negatives:
            rd, steps = redraw_layout(u, i, y_data)
            self.cfg = self.cfg._replace(redraw_steps=steps)
            self.data = self.data._replace(redraw=rd)

    def init(self, key, *, init_scale=None, mu=None, tau=None,
             row_prior_means=None) -> GibbsState:
        s = _init(self.cfg, key, self.dtype, self.theta0, init_scale, mu, tau)
        # rows with fixed per-row priors start at their prior means: a random start lets
        # the first sweeps (the free side random, the likelihood strong) pull them into
        # another rotation or sign of the factor space, where the chain then stays
        # (``row_prior_means``: those means as arguments of a jitted start, so that they
        # are not compiled in as constants; default ``self.row_prior_means``)
        means = self.row_prior_means if row_prior_means is None else row_prior_means
        for side, m in means.items():
            on = self.cfg.user_bias if side == "user" else self.cfg.item_bias
            b = m[:, 0] if on else jnp.zeros((m.shape[0],), m.dtype)
            F = m[:, int(on):]
            s = s._replace(bu=b, U=F) if side == "user" else s._replace(bi=b, V=F)
        return s

    def step(self, key, state: GibbsState):
        return _step(self.cfg, self.data, key, state)


def check_row_priors(row_priors, spec: ModelSpec, n_users: int, n_items: int, dt) -> dict:
    r"""Validate ``row_priors = {"user": (mean (N, d), prec (N, d, d)), "item": ...}`` (any
    subset of the sides) and return them in the kernel's form ``{side: (P0, h0)}`` with
    :math:`h_0 = P_0\,m` (device arrays of dtype ``dt``). ``d`` is the side's bias column
    (if the spec has that bias) plus the rank: row ``r``'s prior is
    :math:`[b_r, F_r] \sim \mathcal N(m_r, P_{0r}^{-1})`. Each ``P_0r`` must be symmetric
    positive definite (checked by a float64 Cholesky). Not with a full-matrix likelihood
    (implicit feedback). With per-row priors the sweep skips the group moves that assume
    the hierarchical prior (shift, scale, the latent-scale move; the translation of a fixed
    side's bias)."""
    if row_priors is None:
        return {}
    if not isinstance(row_priors, dict) or not set(row_priors) <= {"user", "item"}:
        raise SpecError("row_priors must be a dict with keys 'user' and/or 'item', got "
                        f"{row_priors!r:.80}")
    if spec.likelihood.full_matrix:
        raise SpecError(f"per-row priors are not supported for the full-matrix likelihood "
                        f"{spec.likelihood.name!r}")
    out = {}
    for side, pr in row_priors.items():
        n = n_users if side == "user" else n_items
        d = int(spec.user_bias if side == "user" else spec.item_bias) + spec.rank
        try:
            m, P = pr
        except (TypeError, ValueError):
            raise SpecError(f"row_priors[{side!r}] must be a (mean, precision) pair") from None
        m = np.asarray(m, np.float64)
        P = np.asarray(P, np.float64)
        if m.shape != (n, d) or P.shape != (n, d, d):
            raise SpecError(f"row_priors[{side!r}]: expected mean ({n}, {d}) and precision "
                            f"({n}, {d}, {d}) (the {side}s of the training data; d = bias "
                            f"column + rank), got {m.shape} and {P.shape}")
        if not (np.isfinite(m).all() and np.isfinite(P).all()):
            raise SpecError(f"row_priors[{side!r}] has NaN or infinite values")
        if not np.allclose(P, np.swapaxes(P, 1, 2), rtol=1e-6, atol=1e-8 * np.abs(P).max()):
            raise SpecError(f"row_priors[{side!r}]: the precisions must be symmetric")
        try:
            np.linalg.cholesky(P)
        except np.linalg.LinAlgError:
            raise SpecError(f"row_priors[{side!r}]: every precision must be positive "
                            "definite") from None
        out[side] = (jnp.asarray(P, dt), jnp.asarray(np.einsum("nij,nj->ni", P, m), dt))
    return out


#: beta_solver="auto": the eigh solver (one host eigendecomposition of the F x F Gram, then
#: exact draws by matrix products) up to this many features, CG beyond
EIGH_MAX_FEATURES = 4096


def _macau_setup(train, spec, dt, user_features, item_features, solver, lb_prior):
    """Device features and the static Macau settings ``((side, F, solver), ...)``; the
    features must be :class:`~bayesmf.data.features.Features` (aligned here to the
    training vocabularies: every id needs a row)."""
    from bayesmf.data.features import align_side_features

    if solver not in ("auto", "eigh", "cholesky", "cg"):
        raise SpecError(f"beta_solver must be 'auto', 'eigh', 'cholesky' or 'cg', got "
                        f"{solver!r}")
    try:
        a, b = (float(x) for x in lb_prior)
    except (TypeError, ValueError):
        raise SpecError(f"lambda_beta_prior must be (shape, rate), got {lb_prior!r}") from None
    if not (a > 0 and b > 0):
        raise SpecError(f"lambda_beta_prior must be positive (shape, rate), got {lb_prior!r}")
    feats, macau = {}, []
    aligned = align_side_features(train, spec.rank, user_features, item_features)
    for side in ("user", "item"):
        f = aligned[side]
        if f is None:
            continue
        s = solver if solver != "auto" else (
            "eigh" if f.n_features <= EIGH_MAX_FEATURES else "cg")
        feats[side] = macau_data(f.X, dt, s)
        macau.append((side, int(f.n_features), s))
    return feats, tuple(macau), aligned


def _to_device(b: RowBlocks) -> RowBlocks:
    return jax.tree_util.tree_map(jnp.asarray, b)


# ----------------------------------------------------------------------------- NumPyro
def _numpyro_kernel_base():
    from numpyro.infer.mcmc import MCMCKernel

    return MCMCKernel


class BPMFKernelState(NamedTuple):
    """State of :class:`BPMFGibbsKernel`: ``z`` the parameter dict (the sample field)."""

    i: jnp.ndarray
    z: dict
    gibbs: GibbsState
    rng_key: jnp.ndarray


def _make_numpyro_kernel():
    MCMCKernel = _numpyro_kernel_base()

    class BPMFGibbsKernel(MCMCKernel):
        """NumPyro :class:`~numpyro.infer.mcmc.MCMCKernel` running the BPMF Gibbs sweep::

            mcmc = numpyro.infer.MCMC(BPMFGibbsKernel(train, spec), num_warmup=100,
                                      num_samples=200)
            mcmc.run(jax.random.PRNGKey(0))
            mcmc.get_samples()["U"]   # (200, N, k)

        Samples: ``mu, bu, bi, U, V, tau, mu_U, Lambda_U, mu_V, Lambda_V, lambda_bu,
        lambda_bi`` (already constrained, so ``postprocess_fn`` is the identity).
        """

        sample_field = "z"

        def __init__(self, train: Ratings, spec: ModelSpec, *, dtype="float32",
                     max_width=128):
            self.gibbs = BPMFGibbs(train, spec, dtype=dtype, max_width=max_width)

        @property
        def model(self):
            return None

        def init(self, rng_key, num_warmup, init_params, model_args, model_kwargs):
            k_init, k_run = jax.random.split(rng_key)
            gs = self.gibbs.init(k_init)
            if init_params is not None:
                ip = {n: jnp.asarray(v, self.gibbs.dtype) for n, v in dict(init_params).items()}
                th = {n: ip.pop(n) for n in list(ip) if n in gs.theta}
                gs = gs._replace(**ip, theta={**gs.theta, **th})
            return BPMFKernelState(jnp.zeros((), jnp.int32), gs.flat(), gs, k_run)

        def sample(self, state, model_args, model_kwargs):
            k_next, k_step = jax.random.split(state.rng_key)
            gs, _ = self.gibbs.step(k_step, state.gibbs)
            return BPMFKernelState(state.i + 1, gs.flat(), gs, k_next)

        def postprocess_fn(self, model_args, model_kwargs):
            return lambda z: z

    return BPMFGibbsKernel


def __getattr__(name):
    # the NumPyro adapter is built lazily so importing this module never imports numpyro
    if name == "BPMFGibbsKernel":
        cls = _make_numpyro_kernel()
        globals()["BPMFGibbsKernel"] = cls
        return cls
    raise AttributeError(name)


