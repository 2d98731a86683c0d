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

**Parametrisation** (``centered``): ``centered=False`` (default, best for NUTS on
hierarchical models: removes the funnel between precisions and effects) samples standard
normals and builds the effects deterministically:
:math:`b_u = z_u/\sqrt{\lambda_{b_u}}`, :math:`\mu_U = L^{-\top} z_\mu/\sqrt{\beta_0}`,
:math:`U_u = \mu_U + L^{-\top} z_u`  (``x = L^{-T} z`` has covariance
:math:`L^{-\top}L^{-1} = \Lambda_U^{-1}`). ``centered=True`` samples ``bu``, ``U``, ...
directly. Either way the sites ``mu, bu, bi, U, V, tau`` (and hyperparameters
``lambda_bu, lambda_bi, mu_U, Lambda_U, mu_V, Lambda_V``) are recorded (deterministic
sites when non-centred), which is what :func:`draws_from_samples` reads.

**Minibatches** (SVI): ``batch_size`` subsamples the observed entries with
``numpyro.plate("obs", nnz, subsample_size=batch_size)``; NumPyro rescales the likelihood
by ``nnz / batch_size`` (unbiased ELBO estimate).

Switched-off terms (``user_bias=False``, ``rank=0``, ...) have no sites; their draws are
zero arrays. ``noise="fixed"`` keeps :math:`\tau` = ``spec.noise_precision``.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import fitted_spec
from bayesmf.model.spec import ModelSpec

__all__ = ["ModelData", "build_model", "model_data", "draws_from_samples",
           "FACTOR_PRIORS", "effective_nu0", "resolve_factor_prior"]

FACTOR_PRIORS = ("wishart", "diag")


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


def build_model(spec: ModelSpec, n_users: int, n_items: int, *, offset: float = 0.0,
                centered: bool = False, factor_prior: str | None = None,
                batch_size: int | None = None, y_offset: float | None = None):
    r"""Return ``model(users, items, y=None)`` for NumPyro (see the module docs).

    ``users``/``items`` are int index arrays of the observed entries, ``y`` the values
    as in :class:`ModelData` (``None`` to simulate). The observation line and the prior
    of the likelihood parameters come from ``spec.likelihood`` (``numpyro_theta``,
    ``numpyro_obs``); it sees :math:`\eta` on the scale of ``y``, i.e. shifted by
    ``y_offset`` (default: ``offset`` for the Gaussian, 0 otherwise). Change priors by
    building a new model from ``spec.replace(priors=...)``.
    """
    import numpyro
    import numpyro.distributions as dist
    from jax.scipy.linalg import solve_triangular

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
            Lam = numpyro.deterministic("Lambda_" + side, L @ L.T)

            def inv_t(z):  # rows z -> L^{-T} z  (covariance Lambda^{-1})
                zz = z if z.ndim == 2 else z[None, :]
                out = solve_triangular(L, zz.T, lower=True, trans="T").T
                return out if z.ndim == 2 else out[0]

            if centered:
                mu_f = numpyro.sample("mu_" + side, dist.MultivariateNormal(
                    jnp.zeros(k), precision_matrix=beta0 * Lam))
                with numpyro.plate(plate_name, n):
                    F = numpyro.sample(side, dist.MultivariateNormal(mu_f, precision_matrix=Lam))
            else:
                zm = numpyro.sample("mu_" + side + "_z", dist.Normal(jnp.zeros(k), 1.0).to_event(1))
                mu_f = numpyro.deterministic("mu_" + side, inv_t(zm) / np.sqrt(beta0))
                with numpyro.plate(plate_name, n):
                    Z = numpyro.sample(side + "_z", dist.Normal(jnp.zeros(k), 1.0).to_event(1))
                F = numpyro.deterministic(side, mu_f + inv_t(Z))
        else:  # diagonal precision (ARD)
            lam = numpyro.sample("lambda_" + side, dist.Gamma(
                jnp.full(k, nu0 / 2.0), 1.0 / (2.0 * w0)).to_event(1))
            numpyro.deterministic("Lambda_" + side, jnp.diag(lam))
            sd = 1.0 / jnp.sqrt(lam)
            if centered:
                mu_f = numpyro.sample("mu_" + side, dist.Normal(0.0, sd / np.sqrt(beta0)).to_event(1))
                with numpyro.plate(plate_name, n):
                    F = numpyro.sample(side, dist.Normal(mu_f, sd).to_event(1))
            else:
                zm = numpyro.sample("mu_" + side + "_z", dist.Normal(jnp.zeros(k), 1.0).to_event(1))
                mu_f = numpyro.deterministic("mu_" + side, zm * sd / np.sqrt(beta0))
                with numpyro.plate(plate_name, n):
                    Z = numpyro.sample(side + "_z", dist.Normal(jnp.zeros(k), 1.0).to_event(1))
                F = numpyro.deterministic(side, mu_f + Z * sd)
        return F

    def model(users, items, y=None):
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
        with numpyro.plate("obs", nnz, subsample_size=batch_size) as idx:
            u = users[idx]
            i = items[idx]
            pred = mu_c
            if bu is not None:
                pred = pred + bu[u]
            if bi is not None:
                pred = pred + bi[i]
            if k:
                pred = pred + jnp.sum(U[u] * V[i], axis=-1)
            pred = jnp.broadcast_to(pred + eta_shift, u.shape)
            lik.numpyro_obs(pred, theta, None if y is None else y[idx])

    model.spec = spec
    model.offset = offset
    model.centered = centered
    model.factor_prior = factor_prior
    model.batch_size = batch_size
    return model


_HYPER = ("lambda_bu", "lambda_bi", "mu_U", "Lambda_U", "mu_V", "Lambda_V")


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
