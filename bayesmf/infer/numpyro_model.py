r"""The shared BPMF model written as a NumPyro model (used by ``nuts`` and ``svi``).

Notation as in :mod:`bayesmf.model.spec`. The model works on **centred** ratings
:math:`y_{ui} = r_{ui} - \bar r` (:math:`\bar r` = training mean, stored as ``offset``);
the global mean is :math:`\mu = \bar r + \mu_c` with the latent site ``mu_c``. A flat prior
on :math:`\mu` is shift invariant, and a Gaussian prior :math:`\mu\sim N(m_\mu,
\lambda_\mu^{-1})` becomes :math:`\mu_c \sim N(m_\mu-\bar r, \lambda_\mu^{-1})`, so the
centring is exact (it only helps initialisation and conditioning).

.. math::

    y_{ui} &\sim \mathcal N\!\left(\mu_c + b_u + b_i + U_u^\top V_i,\ \tau^{-1}\right),
        \quad (u,i)\in\Omega \\
    \tau &\sim \mathrm{Gamma}(a_\tau, b_\tau) \quad(\text{or fixed}) \\
    b_u &\sim \mathcal N(0, \lambda_{b_u}^{-1}),\quad
        \lambda_{b_u}\sim\mathrm{Gamma}(a_b, b_b) \quad(\text{same for } b_i) \\
    U_u &\sim \mathcal N(\mu_U, \Lambda_U^{-1}),\quad
        \mu_U \mid \Lambda_U \sim \mathcal N(0, (\beta_0\Lambda_U)^{-1})
        \quad(\text{same for } V_i)

**Factor hyperprior** (``factor_prior``):

* ``"wishart"`` (default) -- the **exact** Normal-Wishart of the Gibbs sampler,
  :math:`\Lambda_U \sim \mathcal W(w_0 I, \nu_0)`, written through the Bartlett
  decomposition so that every latent is unconstrained-friendly for NUTS:
  :math:`\Lambda_U = L L^\top`, :math:`L = \sqrt{w_0}\,A`, :math:`A` lower triangular with
  :math:`A_{jj}^2 = c_j \sim \chi^2_{\nu_0 - j}` (:math:`j = 0..k-1`; site ``U_chi2``) and
  :math:`A_{jl}\sim N(0,1)` for :math:`j>l` (site ``U_offdiag``). Requires
  :math:`\nu_0 > k-1`. The same prior as Gibbs, so posteriors agree in the limit.
* ``"diag"`` -- an ARD-style simplification: :math:`\Lambda_U = \mathrm{diag}(\lambda_{U,j})`
  with independent :math:`\lambda_{U,j}\sim\mathrm{Gamma}(\nu_0/2,\ \mathrm{rate}=1/(2w_0))`,
  which is exactly the *marginal* law of a diagonal entry of :math:`\mathcal W(w_0 I,\nu_0)`
  but drops the prior's off-diagonal (correlation) part: factor dimensions are a-priori
  independent. Cheaper (no triangular solves) and often easier for NUTS; NOT the Gibbs prior.

**Parametrisation** (``centered``): ``centered=False`` (the default of
:func:`build_model` and SVI; the textbook choice for NUTS on hierarchical models with
little data per group: removes the funnel between precisions and effects) samples
standard normals and builds the effects deterministically:
:math:`b_u = z_u/\sqrt{\lambda_{b_u}}`, :math:`\mu_U = L^{-\top} z_\mu/\sqrt{\beta_0}`,
:math:`U_u = \mu_U + L^{-\top} z_u`  (``x = L^{-T} z`` has covariance
:math:`L^{-\top}L^{-1} = \Lambda_U^{-1}`). ``centered=True`` samples ``bu``, ``U``, ...
directly; NUTS defaults to it (on MovieLens-100K it mixed the predictions ~2x better per
second, ``benchmarks/results/nuts_defaults.md``). The centred Wishart rows use a
precision-Cholesky normal whose log density is a matmul (:func:`_precision_mvn`). Either
way the sites ``mu, bu, bi, U, V, tau`` (and hyperparameters
``lambda_bu, lambda_bi, mu_U, Lambda_U, mu_V, Lambda_V``) are recorded (deterministic
sites when non-centred), which is what :func:`draws_from_samples` reads.

**Minibatches** (SVI): ``batch_size`` draws ``B`` observed entries per step uniformly
*with replacement* (``jax.random.randint`` from the model's ``numpyro.prng_key()``) and
scales their log-likelihood by :math:`|\Omega|/B`, so that
:math:`\mathbb E\bigl[\tfrac{|\Omega|}{B}\sum_{b=1}^{B}\log p(r_{j_b}\mid\theta)\bigr]
= \sum_{j\in\Omega}\log p(r_j\mid\theta)` (an unbiased ELBO estimate; the variance
differs from sampling without replacement by the finite-population factor
:math:`1 - B/|\Omega|`, negligible for the small batches this is for).
``numpyro.plate(..., subsample_size=B)`` would sample without replacement by a
Fisher-Yates scan of ``B`` sequential steps over all ``|Omega|`` indices on a CPU: 0.53 s
per step at 9M ratings and ``B = 100,000``, 77% of the step (``_obs_plate``).

Switched-off terms (``user_bias=False``, ``rank=0``, ...) have no sites; their draws are
zero arrays. ``noise="fixed"`` keeps :math:`\tau` = ``spec.noise_precision``.

**Side features** (the Macau prior, ``features={"U": X_U, "V": X_V}`` of
:func:`build_model`, built by :func:`model_features`): the prior of Gibbs
(:mod:`bayesmf.infer.gibbs`, Simm et al. 2015), with the same draw names and layout,

.. math::

    U_u \sim \mathcal N(\mu_U + \beta_U^\top x_u, \Lambda_U^{-1}),\qquad
    \beta_{U,f} \mid \Lambda_U, \lambda_{\beta} \sim
    \mathcal N(0, (\lambda_\beta\Lambda_U)^{-1})\ (f = 1..F),\qquad
    \lambda_\beta \sim \mathrm{Gamma}(a_\beta, b_\beta)

(sites ``beta_U (F, k)``, ``lambda_beta_U``; ``lambda_beta_prior`` :math:`= (a_\beta,
b_\beta) = (1, 1)`; items alike). Non-centred, :math:`\beta_U = L^{-\top}Z_\beta /
\sqrt{\lambda_\beta}` row-wise from standard normals ``beta_U_z`` (diagonal prior:
:math:`Z_\beta\,\mathrm{sd}/\sqrt{\lambda_\beta}`) and :math:`U_u = \mu_U + \beta_U^\top
x_u + L^{-\top}z_u`. ``X`` is a dense constant of the model: a sparse
:class:`~bayesmf.data.features.Features` is densified, and refused
(:class:`~bayesmf.errors.SpecError`) above :data:`MAX_DENSE_FEATURES` features.

**Initial values** (NUTS ``init="map"``): :func:`map_init_values` maps a MAP fit to the
latent sites of either parametrisation, :func:`init_strategy` turns the ``init`` option
into a NumPyro init strategy.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import fitted_spec
from bayesmf.infer.negative_redraw import resample_negatives
from bayesmf.model.spec import ModelSpec

__all__ = ["ModelData", "build_model", "model_data", "draws_from_samples",
           "FACTOR_PRIORS", "effective_nu0", "resolve_factor_prior", "INITS",
           "map_init_values", "init_to_values_or_median", "init_strategy", "model_features",
           "MAX_DENSE_FEATURES"]

FACTOR_PRIORS = ("wishart", "diag")
#: side features are dense constants of the NumPyro model: a sparse Features with more
#: columns than this is refused rather than densified
MAX_DENSE_FEATURES = 5000


def model_features(train: Ratings, spec: ModelSpec, user_features=None, item_features=None,
                   method: str = "numpyro"):
    """Side features for :func:`build_model`: ``(aligned, X)`` with ``aligned`` the
    :class:`~bayesmf.data.features.Features` aligned to the training vocabularies
    (``{"user": ..., "item": ...}``, None where not given; every training id needs a row)
    and ``X`` ``{"U": (N, F) float32, "V": ...}`` (dense; only the sides given). A sparse
    matrix is densified up to :data:`MAX_DENSE_FEATURES` columns."""
    from bayesmf.data.features import align_side_features

    aligned, X = align_side_features(train, spec.rank, user_features, item_features), {}
    for side, S in (("user", "U"), ("item", "V")):
        f = aligned[side]
        if f is None:
            continue
        if f.is_sparse and f.n_features > MAX_DENSE_FEATURES:
            raise SpecError(f"method {method!r} holds the {side} features as a dense matrix; "
                            f"{f.n_features} sparse features exceed {MAX_DENSE_FEATURES} "
                            f"(use method='gibbs' or 'map', which keep X sparse)")
        X[S] = np.asarray(f.dense(), np.float32)
    return aligned, X


def _lambda_beta_prior(v) -> tuple:
    try:
        a, b = (float(x) for x in v)
    except (TypeError, ValueError):
        raise SpecError(f"lambda_beta_prior must be (shape, rate), got {v!r}") from None
    if not (a > 0 and b > 0 and np.isfinite(a) and np.isfinite(b)):
        raise SpecError(f"lambda_beta_prior must be positive (shape, rate), got {v!r}")
    return a, b


@dataclass(frozen=True)
class ModelData:
    """The model's arguments: int32 indices, float32 values, sizes, ``offset`` and the
    fitted ``spec`` (:func:`bayesmf.infer.fitted_spec`). ``y`` is centred (``r - offset``)
    for the Gaussian likelihood and the likelihood's internal coding otherwise
    (``y_offset`` says which offset was subtracted)."""

    users: np.ndarray
    items: np.ndarray
    y: np.ndarray
    n_users: int
    n_items: int
    offset: float
    spec: ModelSpec = None
    y_offset: float = 0.0

    @property
    def nnz(self) -> int:
        return int(self.y.shape[0])

    @property
    def args(self) -> tuple:
        return (self.users, self.items, self.y)


def model_data(train: Ratings, spec: ModelSpec, method: str | None = None) -> ModelData:
    r"""The model's arguments. ``offset`` (the starting point of :math:`\mu`, the training
    mean for the Gaussian) is :meth:`Likelihood.eta_offset` when ``global_mean`` else 0;
    Gaussian ratings are centred by it."""
    spec = fitted_spec(train, spec, method)
    lik = spec.likelihood
    y = np.asarray(train.rating, np.float64)
    offset = float(lik.eta_offset(y)) if spec.global_mean else 0.0
    y_off = offset if lik.mean_is_linear else 0.0
    return ModelData(np.asarray(train.user, np.int32), np.asarray(train.item, np.int32),
                     (lik.encode(y) - y_off).astype(np.float32),
                     train.n_users, train.n_items, offset, spec, y_off)


def resolve_factor_prior(spec: ModelSpec, option):
    """The spec and PPL factor-prior name for a method's ``factor_prior`` option: ``None``
    follows ``spec.prior`` ("normal-wishart" -> "wishart", "normal-gamma" -> "diag");
    an explicit option replaces the spec's prior, so the Posterior says what was fitted."""
    if option is None:
        return spec, spec.prior.ppl_name
    if option != spec.prior.ppl_name:
        spec = spec.replace(prior=option)
    return spec, option


def effective_nu0(spec: ModelSpec) -> float:
    """:math:`\\nu_0` (``None`` -> ``k``); the Wishart needs :math:`\\nu_0 > k-1`."""
    return spec.prior.nu0(spec)


def _tril_indices(k):
    r, c = np.tril_indices(k, -1)
    return r, c


_PRECISION_MVN = None


def _precision_mvn():
    r"""``MultivariateNormal`` given the lower Cholesky factor :math:`P` of its precision
    (:math:`\Lambda = PP^\top`), whose ``log_prob`` is
    :math:`\sum_j\log P_{jj} - \tfrac k2\log 2\pi - \tfrac12\lVert (x-m)P\rVert^2`
    for rows :math:`x` -- a matmul instead of numpyro's triangular solve with one
    right-hand side per row (same density; that solve made the centred model's gradient
    ~20x slower on CPU). ``sample`` is the parent's."""
    global _PRECISION_MVN
    if _PRECISION_MVN is None:
        import numpyro.distributions as dist
        from jax.scipy.linalg import solve_triangular
        from numpyro.distributions.util import validate_sample

        class PrecisionMVN(dist.MultivariateNormal):
            pytree_data_fields = ("prec_tril",)

            def __init__(self, loc, prec_tril, *, validate_args=None):
                self.prec_tril = prec_tril
                k = prec_tril.shape[-1]
                p_inv = solve_triangular(prec_tril, jnp.eye(k, dtype=prec_tril.dtype),
                                         lower=True)
                super().__init__(loc, scale_tril=jnp.linalg.cholesky(p_inv.T @ p_inv),
                                 validate_args=validate_args)

            @validate_sample
            def log_prob(self, value):
                d = (value - self.loc) @ self.prec_tril
                k = self.prec_tril.shape[-1]
                return (jnp.sum(jnp.log(jnp.diagonal(self.prec_tril, axis1=-2, axis2=-1)), -1)
                        - 0.5 * k * np.log(2 * np.pi) - 0.5 * jnp.sum(d * d, -1))

        _PRECISION_MVN = PrecisionMVN
    return _PRECISION_MVN


def _model_key(what: str):
    """The model's ``numpyro.prng_key()``; SpecError naming ``what`` needs it when the
    model runs outside a seed handler (no inference runs it like that)."""
    import numpyro

    key = numpyro.prng_key()
    if key is None:
        raise SpecError(f"{what} needs a random key: run the model under "
                        "numpyro.handlers.seed")
    return key


@contextlib.contextmanager
def _obs_plate(nnz: int, batch_size: int | None):
    """The likelihood plate: all ``nnz`` observations, or ``batch_size`` of them drawn
    uniformly with replacement and scaled by ``nnz / batch_size`` (module docs,
    **Minibatches**). Yields the observation indices."""
    import jax
    import numpyro
    from numpyro import handlers

    if batch_size is None or batch_size >= nnz:
        with numpyro.plate("obs", nnz) as idx:
            yield idx
        return
    idx = jax.random.randint(_model_key("a minibatch likelihood"), (batch_size,), 0, nnz)
    with handlers.scale(scale=nnz / batch_size), numpyro.plate("obs", batch_size):
        yield idx


def build_model(spec: ModelSpec, n_users: int, n_items: int, *, offset: float = 0.0,
                centered: bool = False, factor_prior: str | None = None,
                batch_size: int | None = None, y_offset: float | None = None,
                features: dict | None = None, lambda_beta_prior=(1.0, 1.0),
                redraw_steps: int | None = None):
    r"""Return ``model(users, items, y=None, obs_mask=None, redraw=None)`` for NumPyro
    (see the module docs).

    ``users``/``items`` are int index arrays of the observed entries, ``y`` the values
    as in :class:`ModelData` (``None`` to simulate). The observation line and the prior
    of the likelihood parameters come from ``spec.likelihood`` (``numpyro_theta``,
    ``numpyro_obs``); it sees :math:`\eta` on the scale of ``y``, i.e. shifted by
    ``y_offset`` (default: ``offset`` for the Gaussian, 0 otherwise). Change priors by
    building a new model from ``spec.replace(priors=...)``. ``features`` ``{"U": X_U,
    "V": X_V}`` (dense ``(n, F)``, :func:`model_features`) adds the Macau prior of that
    side (module docs) with :math:`\lambda_\beta \sim` ``Gamma(*lambda_beta_prior)``.

    ``obs_mask`` (bool per observation) drops the False terms from the likelihood.
    ``redraw`` (a :class:`~bayesmf.infer.negative_redraw.NegativeRedraw` of the training
    set; the model must be built with its ``redraw_steps``) gives every sampled negative
    (``y == 0``) that the call uses (all, or the minibatch) a fresh item from the model's
    ``numpyro.prng_key()`` and masks those that hit a positive
    (:func:`~bayesmf.infer.negative_redraw.resample_negatives`; SVI's
    ``redraw_negatives``).
    """
    import numpyro
    import numpyro.distributions as dist
    from jax.scipy.linalg import solve_triangular
    from numpyro import handlers

    spec, factor_prior = resolve_factor_prior(spec, factor_prior)
    if factor_prior not in FACTOR_PRIORS:
        raise SpecError(f"factor_prior must be one of {FACTOR_PRIORS}, got {factor_prior!r}")
    if not spec.priors.is_resolved:  # a model built outside a fit: unit data scale
        spec = spec.replace(priors=spec.priors.resolved(1.0))
    pri = spec.priors
    lik = spec.likelihood
    if y_offset is None:
        y_offset = offset if lik.mean_is_linear else 0.0
    eta_shift = float(offset - y_offset)
    k = spec.rank
    nu0 = effective_nu0(spec)
    w0, beta0 = float(pri.w0), float(pri.beta0)
    tri_r, tri_c = _tril_indices(k)
    # chi-square degrees of freedom of the Bartlett diagonal: nu0 - j, j = 0..k-1
    chi_df = nu0 - np.arange(k, dtype=np.float64)
    feats = {S: jnp.asarray(X, jnp.float32) for S, X in (features or {}).items()
             if X is not None}
    for S, X in feats.items():
        if S not in ("U", "V") or X.ndim != 2:
            raise SpecError(f"features must map 'U'/'V' to (n, F) matrices, got {S!r}")
        if X.shape[0] != (n_users if S == "U" else n_items):
            raise SpecError(f"features[{S!r}] has {X.shape[0]} rows for "
                            f"{n_users if S == 'U' else n_items} {S} rows")
        if not k:
            raise SpecError("side features (the Macau prior) need rank >= 1")
    lb_a, lb_b = _lambda_beta_prior(lambda_beta_prior)

    def bias(name, lam_name, n, plate_name):
        lam = numpyro.sample(lam_name, dist.Gamma(pri.bias_a, pri.bias_b))
        sd = 1.0 / jnp.sqrt(lam)
        with numpyro.plate(plate_name, n):
            if centered:
                b = numpyro.sample(name, dist.Normal(0.0, sd))
            else:
                z = numpyro.sample(name + "_z", dist.Normal(0.0, 1.0))
                b = numpyro.deterministic(name, z * sd)
        return b

    def link(side, plate_name, mu_f, centred_dist, inv_t):
        r"""The rows' prior mean: ``mu_f`` without features on ``side``; else
        :math:`\mu_F + X\beta` with the coupled prior of :math:`\beta` (module docs),
        ``centred_dist(lambda_beta)`` the law of a row of :math:`\beta` (centred) or
        ``inv_t`` the map of standard normal rows to covariance :math:`\Lambda^{-1}`."""
        X = feats.get(side)
        if X is None:
            return mu_f
        lb = numpyro.sample("lambda_beta_" + side, dist.Gamma(lb_a, lb_b))
        with numpyro.plate(plate_name + "_feature", X.shape[1]):
            if centered:
                beta = numpyro.sample("beta_" + side, centred_dist(lb))
            else:
                zb = numpyro.sample("beta_" + side + "_z",
                                    dist.Normal(jnp.zeros(k), 1.0).to_event(1))
        if not centered:
            beta = numpyro.deterministic("beta_" + side, inv_t(zb) / jnp.sqrt(lb))
        return mu_f + X @ beta

    def factors(side, n, plate_name):
        if factor_prior == "wishart":
            c = numpyro.sample(side + "_chi2", dist.Gamma(chi_df / 2.0, 0.5).to_event(1))
            if k > 1:
                off = numpyro.sample(side + "_offdiag",
                                     dist.Normal(jnp.zeros(len(tri_r)), 1.0).to_event(1))
            A = jnp.diag(jnp.sqrt(c))
            if k > 1:
                A = A.at[tri_r, tri_c].set(off)
            L = np.sqrt(w0) * A                      # Lambda = L L^T  (Cholesky factor)
            numpyro.deterministic("Lambda_" + side, L @ L.T)

            # rows z -> L^{-T} z (covariance Lambda^{-1}), i.e. z @ L^{-1}: one k x k
            # triangular inverse and a matmul. (A triangular solve with n right-hand
            # sides made the whole gradient 5-30x slower on a loaded 2-core CPU.)
            L_inv = solve_triangular(L, jnp.eye(k, dtype=L.dtype), lower=True)

            def inv_t(z):
                return z @ L_inv

            if centered:
                mu_f = numpyro.sample("mu_" + side, _precision_mvn()(
                    jnp.zeros(k), np.sqrt(beta0) * L))
                loc = link(side, plate_name, mu_f,
                           lambda lb: _precision_mvn()(jnp.zeros(k), jnp.sqrt(lb) * L), inv_t)
                with numpyro.plate(plate_name, n):
                    F = numpyro.sample(side, _precision_mvn()(loc, L))
            else:
                zm = numpyro.sample("mu_" + side + "_z", dist.Normal(jnp.zeros(k), 1.0).to_event(1))
                mu_f = numpyro.deterministic("mu_" + side, inv_t(zm) / np.sqrt(beta0))
                loc = link(side, plate_name, mu_f, None, inv_t)
                with numpyro.plate(plate_name, n):
                    Z = numpyro.sample(side + "_z", dist.Normal(jnp.zeros(k), 1.0).to_event(1))
                F = numpyro.deterministic(side, loc + inv_t(Z))
        else:  # diagonal precision (ARD)
            lam = numpyro.sample("lambda_" + side, dist.Gamma(
                jnp.full(k, nu0 / 2.0), 1.0 / (2.0 * w0)).to_event(1))
            numpyro.deterministic("Lambda_" + side, jnp.diag(lam))
            sd = 1.0 / jnp.sqrt(lam)
            if centered:
                mu_f = numpyro.sample("mu_" + side,
                                      dist.Normal(0.0, sd / np.sqrt(beta0)).to_event(1))
                loc = link(side, plate_name, mu_f,
                           lambda lb: dist.Normal(0.0, sd / jnp.sqrt(lb)).to_event(1),
                           lambda z: z * sd)
                with numpyro.plate(plate_name, n):
                    F = numpyro.sample(side, dist.Normal(loc, sd).to_event(1))
            else:
                zm = numpyro.sample("mu_" + side + "_z", dist.Normal(jnp.zeros(k), 1.0).to_event(1))
                mu_f = numpyro.deterministic("mu_" + side, zm * sd / np.sqrt(beta0))
                loc = link(side, plate_name, mu_f, None, lambda z: z * sd)
                with numpyro.plate(plate_name, n):
                    Z = numpyro.sample(side + "_z", dist.Normal(jnp.zeros(k), 1.0).to_event(1))
                F = numpyro.deterministic(side, loc + Z * sd)
        return F

    def _redrawn(redraw, u, i, negative):
        if redraw_steps is None:
            raise SpecError("a model given redraw= must be built with redraw_steps "
                            "(bayesmf.infer.negative_redraw.redraw_layout)")
        return resample_negatives(_model_key("redrawing negatives"), redraw, u, i, negative,
                                  int(redraw_steps))

    def model(users, items, y=None, obs_mask=None, redraw=None):
        users = jnp.asarray(users)
        items = jnp.asarray(items)
        y = None if y is None else jnp.asarray(y)
        nnz = users.shape[0]
        if spec.global_mean:
            if pri.lambda_mu > 0:
                mu_c = numpyro.sample("mu_c", dist.Normal(pri.mu_mean - offset,
                                                          1.0 / np.sqrt(pri.lambda_mu)))
            else:
                mu_c = numpyro.sample("mu_c", dist.ImproperUniform(dist.constraints.real, (), ()))
            numpyro.deterministic("mu", mu_c + offset)
        else:
            mu_c = 0.0
        theta = lik.numpyro_theta(spec)
        bu = bias("bu", "lambda_bu", n_users, "user") if spec.user_bias else None
        bi = bias("bi", "lambda_bi", n_items, "item") if spec.item_bias else None
        U = factors("U", n_users, "user") if k else None
        V = factors("V", n_items, "item") if k else None
        with _obs_plate(nnz, batch_size) as idx:
            u = users[idx]
            i = items[idx]
            mask = None if obs_mask is None else jnp.asarray(obs_mask)[idx]
            if redraw is not None and y is not None:  # fresh negatives for this call
                i, keep = _redrawn(redraw, u, i, y[idx] == 0)
                mask = keep if mask is None else mask & keep
            pred = mu_c
            if bu is not None:
                pred = pred + bu[u]
            if bi is not None:
                pred = pred + bi[i]
            if k:
                pred = pred + jnp.sum(U[u] * V[i], axis=-1)
            pred = jnp.broadcast_to(pred + eta_shift, u.shape)
            # mask (bool, per observation): False drops the term from the likelihood
            # (obs_mask; a redrawn sampled negative that hit a positive)
            with (contextlib.nullcontext() if mask is None else handlers.mask(mask=mask)):
                lik.numpyro_obs(pred, theta, None if y is None else y[idx])

    model.spec = spec
    model.offset = offset
    model.centered = centered
    model.factor_prior = factor_prior
    model.batch_size = batch_size
    model.redraw_steps = redraw_steps
    model.features = tuple(sorted(feats))
    return model


_HYPER = ("lambda_bu", "lambda_bi", "mu_U", "Lambda_U", "mu_V", "Lambda_V",
          "beta_U", "lambda_beta_U", "beta_V", "lambda_beta_V")


def draws_from_samples(samples: dict, spec: ModelSpec, n_users: int, n_items: int,
                       offset: float, dtype=np.float32) -> dict:
    """Turn backend samples (NumPyro or PyMC site names, leading ``(chain, draw)`` axes)
    into the standard Posterior draws dict.

    Switched-off terms become zero arrays; a fixed noise gives a constant ``tau``.
    """
    def get(name):
        return np.asarray(samples[name])

    C, D = np.asarray(next(iter(samples.values()))).shape[:2]
    k = spec.rank
    out = {}
    out["mu"] = (get("mu") if spec.global_mean and "mu" in samples
                 else np.full((C, D), 0.0 if not spec.global_mean else offset))
    out["bu"] = get("bu") if spec.user_bias else np.zeros((C, D, n_users))
    out["bi"] = get("bi") if spec.item_bias else np.zeros((C, D, n_items))
    out["U"] = get("U") if k else np.zeros((C, D, n_users, 0))
    out["V"] = get("V") if k else np.zeros((C, D, n_items, 0))
    lik = spec.likelihood
    if "tau" in lik.theta_names:
        out["tau"] = (get("tau") if spec.noise == "learned"
                      else np.full((C, D), spec.noise_precision))
    for n in lik.theta_names:
        if n != "tau":
            if n not in samples:
                raise SpecError(f"the backend samples miss the likelihood parameter {n!r}")
            out[n] = get(n)
    for h in _HYPER:
        if h in samples:
            out[h] = get(h)
    return {n: np.ascontiguousarray(a, dtype=dtype) for n, a in out.items()}


# ----------------------------------------------------------------------------- MAP init
#: ``init`` options of the NUTS sampler (:func:`init_strategy`)
INITS = ("map", "median")


def _gamma_mean(a, b):
    return np.asarray(a, np.float64) / np.asarray(b, np.float64)


def _factor_hyper(F: np.ndarray, pri, nu0: float, factor_prior: str):
    r"""Conditional posterior mean of the factor hyperparameters given the rows ``F``
    (n, k): :math:`\mu_n = n\bar F/(\beta_0+n)` and, for the Wishart,
    :math:`E\Lambda = \nu_n W_n` with :math:`\nu_n = \nu_0 + n`,
    :math:`W_n^{-1} = (w_0 I)^{-1} + S + \frac{\beta_0 n}{\beta_0+n}\bar F\bar F^\top`
    (:math:`S` the scatter matrix); for the diagonal prior
    :math:`E\lambda_j = \frac{\nu_0/2 + (n+1)/2}{1/(2w_0) + \frac12(\sum_u (F_{uj}-\mu_j)^2
    + \beta_0\mu_j^2)}`."""
    n, k = F.shape
    w0, beta0 = float(pri.w0), float(pri.beta0)
    Fbar = F.mean(0) if n else np.zeros(k)
    mu = n * Fbar / (beta0 + n)
    if factor_prior == "wishart":
        D = F - Fbar
        Winv = np.eye(k) / w0 + D.T @ D + (beta0 * n / (beta0 + n)) * np.outer(Fbar, Fbar)
        Lam = (nu0 + n) * np.linalg.inv(Winv)
        return mu, 0.5 * (Lam + Lam.T)
    ss = ((F - mu) ** 2).sum(0) + beta0 * mu ** 2
    return mu, _gamma_mean(nu0 / 2 + (n + 1) / 2, 1 / (2 * w0) + 0.5 * ss)


def map_init_values(train: Ratings, spec: ModelSpec, data: ModelData | None = None, *,
                    centered: bool = False, factor_prior: str | None = None,
                    seed: int = 0, map_options: dict | None = None,
                    user_features=None, item_features=None,
                    lambda_beta_prior=(1.0, 1.0)) -> dict:
    r"""Initial values of the latent sites of :func:`build_model` at the MAP fit.

    Runs :func:`bayesmf.infer.map.fit_map` (``map_options``, default ALS) on ``train`` and
    maps its single draw to the model's sample sites:

    * ``mu_c`` :math:`= \hat\mu - \text{offset}`; ``tau`` = the MAP :math:`\hat\tau`
      (learned Gaussian noise); ``cut_u`` from the MAP cutpoints (ordinal);
    * hyperparameters, which MAP does not estimate, at their conditional posterior mean
      given the MAP effects (one "expected Gibbs step"):
      :math:`\lambda_{b} = (a_b + n/2)/(b_b + \tfrac12\sum b^2)`, and
      :math:`\mu_U, \Lambda_U` (or :math:`\lambda_U`) as in :func:`_factor_hyper`;
    * Wishart sites through the Bartlett decomposition of :math:`\Lambda_U = L L^\top`
      (:math:`A = L/\sqrt{w_0}`, ``U_chi2`` :math:`= \mathrm{diag}(A)^2`, ``U_offdiag`` the
      strict lower triangle of :math:`A`);
    * effects directly when ``centered``, else their standard-normal pre-images, the
      inverse of the model's maps: ``bu_z`` :math:`= b_u\sqrt{\lambda_{b_u}}`,
      ``mu_U_z`` :math:`= \sqrt{\beta_0} L^\top\mu_U`, ``U_z`` rows
      :math:`L^\top(U_u - \mu_U)` (diagonal prior: :math:`L = \mathrm{diag}\sqrt{\lambda_U}`).

    With side features (``user_features``/``item_features``, the Macau prior) the MAP
    fit has them too (:func:`bayesmf.infer.map.fit_map`), the factor hyperparameters
    are the conditional means given the residual rows :math:`R = F - X\hat\beta`,
    ``beta_U`` is the MAP :math:`\hat\beta` (non-centred ``beta_U_z`` :math:`=
    \sqrt{\lambda_\beta}\,\hat\beta L`, the rows ``U_z`` :math:`= (R_u - \mu_U)^\top L`)
    and ``lambda_beta_U`` its conditional mean :math:`(a_\beta + Fk/2)/(b_\beta +
    \tfrac12\operatorname{tr}(\hat\beta\Lambda_U\hat\beta^\top))`.

    So the model's deterministic sites ``mu, bu, bi, U, V`` reproduce the MAP point
    exactly (up to float32 rounding). The values are checked against a trace of the model
    (site names and shapes) and the joint log density at them must be finite; otherwise a
    :class:`~bayesmf.errors.SpecError` says why (:func:`init_strategy` then falls back to
    the prior median). Sites the MAP fit does not give (likelihood parameters of other
    families) are left out and start at their prior median.
    """
    from bayesmf.errors import BayesMFError
    from bayesmf.infer.map import fit_map

    spec = fitted_spec(train, spec)
    spec, factor_prior = resolve_factor_prior(spec, factor_prior)
    if factor_prior not in FACTOR_PRIORS:
        raise SpecError(f"factor_prior must be one of {FACTOR_PRIORS}, got {factor_prior!r}")
    if data is None:
        data = model_data(train, spec)
    aligned, X = model_features(train, spec, user_features, item_features)
    lb_a, lb_b = _lambda_beta_prior(lambda_beta_prior)
    try:
        post = fit_map(train, spec, seed=int(seed), user_features=aligned["user"],
                       item_features=aligned["item"], **(map_options or {}))
    except (BayesMFError, ArithmeticError, np.linalg.LinAlgError, RuntimeError) as e:
        raise SpecError(f"MAP initialisation: the MAP fit failed "
                        f"({type(e).__name__}: {e})") from e
    P = {n: np.asarray(a[0, 0], np.float64) for n, a in post.draws.items()}
    for n, a in P.items():
        if not np.all(np.isfinite(a)):
            raise SpecError(f"MAP initialisation: the MAP fit gave non-finite {n!r}")
    pri = spec.priors
    k = spec.rank
    nu0 = float(effective_nu0(spec))
    vals: dict = {}
    if spec.global_mean:
        vals["mu_c"] = P["mu"] - data.offset
    lik = spec.likelihood
    if "tau" in lik.theta_names and spec.noise == "learned" and "tau" in P:
        vals["tau"] = P["tau"]
    if "cutpoints" in P and hasattr(lik, "u_from_cut"):
        fix = bool(spec.global_mean)
        if lik.n_free(lik.K, fix) > 0:
            vals["cut_u"] = np.asarray(lik.u_from_cut(P["cutpoints"], fix), np.float64)
    for name, use in (("bu", spec.user_bias), ("bi", spec.item_bias)):
        if not use:
            continue
        b = P[name]
        lam = float(_gamma_mean(pri.bias_a + b.size / 2, pri.bias_b + 0.5 * (b @ b)))
        vals["lambda_" + name] = lam
        vals[name if centered else name + "_z"] = b if centered else b * np.sqrt(lam)
    if k:
        r, c = _tril_indices(k)
        for side in ("U", "V"):
            F = P[side]
            XB = X[side].astype(np.float64) @ P[f"beta_{side}"] if side in X else 0.0
            mu, lam = _factor_hyper(F - XB, pri, nu0, factor_prior)
            if factor_prior == "wishart":
                try:
                    L = np.linalg.cholesky(lam)
                except np.linalg.LinAlgError as e:
                    raise SpecError(f"MAP initialisation: Lambda_{side} is not positive "
                                    "definite") from e
                A = L / np.sqrt(float(pri.w0))
                vals[side + "_chi2"] = np.diag(A) ** 2
                if k > 1:
                    vals[side + "_offdiag"] = A[r, c]
            else:
                vals["lambda_" + side] = lam
                L = np.diag(np.sqrt(lam))
            if side in X:
                beta = P[f"beta_{side}"]
                Lam = L @ L.T
                lb = (lb_a + beta.size / 2.0) / (lb_b + 0.5 * np.sum((beta @ Lam) * beta))
                vals["lambda_beta_" + side] = lb
                if centered:
                    vals["beta_" + side] = beta
                else:
                    vals["beta_" + side + "_z"] = np.sqrt(lb) * (beta @ L)
            if centered:
                vals["mu_" + side] = mu
                vals[side] = F
            else:
                vals["mu_" + side + "_z"] = np.sqrt(float(pri.beta0)) * (L.T @ mu)
                vals[side + "_z"] = (F - XB - mu) @ L
    out = {n: jnp.asarray(v, jnp.float32) for n, v in vals.items()}
    _check_init(out, spec, data, centered, factor_prior, X, (lb_a, lb_b))
    return out


def _check_init(values: dict, spec, data: ModelData, centered: bool, factor_prior: str,
                features: dict | None = None, lambda_beta_prior=(1.0, 1.0)):
    """Names and shapes of ``values`` against an abstract trace of the model
    (``jax.eval_shape``, nothing compiled); then, in one compiled call, every value inside
    its site's support and a finite joint log density."""
    import jax
    from numpyro import handlers
    from numpyro.infer.util import log_density

    model = build_model(spec, data.n_users, data.n_items, offset=data.offset,
                        y_offset=data.y_offset, centered=centered, factor_prior=factor_prior,
                        features=features, lambda_beta_prior=lambda_beta_prior)
    args = tuple(jnp.asarray(a) for a in data.args)

    def run(vals):
        # the pattern of numpyro's initialize_model: sites not in ``vals`` (and improper
        # ones) get the median/uniform init, so the trace never samples an improper prior
        tr = handlers.trace(handlers.substitute(
            handlers.seed(model, jax.random.PRNGKey(0)),
            substitute_fn=init_to_values_or_median(values=vals))).get_trace(*args)
        latent = {n: s for n, s in tr.items()
                  if s["type"] == "sample" and not s["is_observed"]}
        ok = {n: jnp.all(latent[n]["fn"].support(latent[n]["value"]))
              for n in vals if n in latent}
        full = {n: s["value"] for n, s in latent.items()}
        return full, ok, log_density(model, args, {}, full)[0]

    shapes = jax.eval_shape(lambda v: run(v)[0], values)
    for n, v in values.items():
        if n not in shapes:
            raise SpecError(f"MAP initialisation: the model has no latent site {n!r}")
        if tuple(v.shape) != tuple(shapes[n].shape):
            raise SpecError(f"MAP initialisation: site {n!r} has shape {tuple(v.shape)}, the "
                            f"model expects {tuple(shapes[n].shape)}")
    _, ok, lp = jax.jit(run)(values)
    for n, good in ok.items():
        if not bool(good):
            raise SpecError(f"MAP initialisation: site {n!r} is outside its support")
    if not np.isfinite(float(lp)):
        raise SpecError("MAP initialisation: the log density at the MAP point is not finite")


def init_to_values_or_median(site=None, values=None, num_samples: int = 15):
    """NumPyro init strategy: ``values[name]`` for the latent sites in ``values``, the
    prior median (``init_to_median``) for the others."""
    from functools import partial

    from numpyro.infer import init_to_median

    if site is None:
        return partial(init_to_values_or_median, values=values or {}, num_samples=num_samples)
    if site["type"] == "sample" and not site["is_observed"] and site["name"] in values:
        import jax
        import jax.numpy as jnp

        # JAX's default float (float64 under jax_enable_x64): NUTS needs the start to have
        # the dtype the model computes in
        return jnp.asarray(values[site["name"]],
                           jax.dtypes.canonicalize_dtype(jnp.float64))
    return init_to_median(site, num_samples=num_samples)


def init_strategy(init: str, train: Ratings, spec: ModelSpec, data: ModelData, *,
                  centered: bool = False, factor_prior: str | None = None, seed: int = 0,
                  user_features=None, item_features=None, lambda_beta_prior=(1.0, 1.0)):
    """The NumPyro ``init_strategy`` for the NUTS ``init`` option: ``"median"`` ->
    ``init_to_median(num_samples=15)``; ``"map"`` -> :func:`init_to_values_or_median` at
    :func:`map_init_values`, falling back to the median (with a ``UserWarning`` naming the
    reason) when the MAP fit or its mapping fails. Every chain starts at the same MAP point
    (the warm-up then moves them apart; with several chains, R-hat is less sensitive to
    multimodality than with dispersed starts)."""
    import warnings

    from numpyro.infer import init_to_median

    if init not in INITS:
        raise SpecError(f"init must be one of {INITS}, got {init!r}")
    if init == "map":
        try:
            values = map_init_values(train, spec, data, centered=centered,
                                     factor_prior=factor_prior, seed=seed,
                                     user_features=user_features,
                                     item_features=item_features,
                                     lambda_beta_prior=lambda_beta_prior)
            return init_to_values_or_median(values=values)
        except SpecError as e:
            warnings.warn(f"{e}; starting NUTS at the prior median instead",
                          UserWarning, stacklevel=3)
    return init_to_median(num_samples=15)
