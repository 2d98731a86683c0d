r"""PMF by maximum a posteriori (MAP): alternating least squares and full-batch gradient
solvers of one objective.

Objective
---------
With the Gaussian likelihood and fixed zero-mean Gaussian priors of
:class:`~bayesmf.model.spec.ModelSpec` (prior precisions :math:`\tau\lambda`), the negative
log posterior is, up to the factor :math:`\tau/2` and a constant, the ridge objective

.. math::

    J(\theta) = \sum_{(u,i)\in\Omega} \bigl(r_{ui} - \mu - b_u - b_i - U_u^\top V_i\bigr)^2
      + \lambda_f\bigl(\lVert U\rVert_F^2 + \lVert V\rVert_F^2\bigr)
      + \lambda_b\bigl(\lVert b_u\rVert^2 + \lVert b_i\rVert^2\bigr)

with :math:`\lambda_f` = ``spec.reg_factors`` and :math:`\lambda_b` = ``spec.reg_bias``;
:math:`\mu` is not penalised (flat prior). Switched-off terms are fixed at zero, ``rank=0``
is the bias-only baseline. :func:`map_objective` is the one implementation of
:math:`J`; every solver reports it and the gradient solvers differentiate it.

Solvers (option ``solver``)
---------------------------
``"als"`` (default) -- block coordinate descent with exact block minimisers, so :math:`J`
never increases. One sweep is

1. per user, jointly for :math:`z_u = (b_u, U_u)` with the augmented design
   :math:`x_i = (1, V_i)` and targets :math:`y_{ui} = r_{ui} - \mu - b_i`:

   .. math::

       z_u = \Bigl(\Lambda + \sum_{i\in I_u} x_i x_i^\top\Bigr)^{-1}
             \sum_{i\in I_u} y_{ui}\, x_i,\qquad
       \Lambda = \mathrm{diag}(\lambda_b, \lambda_f I_k)

   (the mode of the Gaussian full conditional that the Gibbs sampler draws from, solved
   by the shared :func:`bayesmf.infer._rowblocks.solve_rows` with :math:`\tau = 1`);
2. :math:`\mu \leftarrow \frac1{|\Omega|}\sum_\Omega (r_{ui} - b_u - b_i - U_u^\top V_i)`;
3. the same update per item with :math:`x_u = (1, U_u)`,
   :math:`y_{ui} = r_{ui} - \mu - b_u`;
4. :math:`\mu` again, in the same pass over the residuals as :math:`J`: with
   :math:`e = r - \hat r` and :math:`m = \bar e`, :math:`\mu \leftarrow \mu + m` and
   :math:`J = \sum (e - m)^2 + \text{penalty}` (two passes over the observations per
   sweep besides the solves, not three). :math:`\mu` starts at the mean rating.

Without a bias the leading ``1`` column is dropped. A zero regularisation strength is
floored at ``1e-6`` inside the ALS solves so rows with fewer observations than unknowns
stay solvable.

``"lbfgs"`` -- L-BFGS with a zoom line search (:func:`optax.lbfgs`) on :math:`J` over the
active parameters, full batch. ``"adam"`` -- full-batch Adam on :math:`J / |\Omega|`
(``learning_rate``, default ``0.05``), for comparison and for very large data.

Stopping: ALS stops when the relative decrease of :math:`J` in one sweep falls below
``tol``; the gradient solvers when it falls below ``tol`` over a window of 5 iterations.
With ``validation_fraction > 0`` a random fraction of the training ratings (drawn from
``seed``) is held out, the fit uses the rest, and the iterate with the lowest validation
RMSE is returned once it has not improved for ``patience`` iterations.

Noise: :math:`\tau` does not change the minimiser. With ``spec.noise == "learned"`` the
returned :math:`\tau` is the mode of its posterior given the fitted residuals under the
noise prior :math:`\tau\sim\mathrm{Gamma}(a_\tau, b_\tau)` of ``spec.priors``
(``noise_a``, ``noise_b``; shape, rate) -- the Gamma prior acts as a MAP penalty
:math:`-(a_\tau-1)\log\tau + b_\tau\tau` on :math:`\tau`. With :math:`n=|\Omega|` and
:math:`S=\sum_\Omega (r_{ui}-\hat r_{ui})^2`,

.. math::

    \hat\tau = \arg\max_\tau\; \tau^{n/2} e^{-\tau S/2}\,\tau^{a_\tau-1}e^{-b_\tau\tau}
             = \frac{n + 2a_\tau - 2}{S + 2b_\tau}

(:func:`noise_precision_mode`). The prior floors the noise variance at
:math:`1/\hat\tau \ge 2b_\tau/(n + 2a_\tau - 2)`: a perfect fit (constant ratings, or
more parameters than ratings) gives a finite :math:`\tau` and predictive intervals of a
sensible width instead of zero-width ones, while on real data (:math:`S \gg 2b_\tau`) it
equals the maximum-likelihood :math:`n/S` to a relative :math:`O(1/n)` (MovieLens-100K
u1: 1.6211 either way). With the scale-aware default :math:`b_\tau=s^2` (:math:`s` the
standard deviation of the training ratings, 1 when they are constant) and
:math:`a_\tau=1`, :math:`\hat\tau = n/(S + 2s^2)`. The estimate is still optimistic:
training residuals are smaller than test residuals. With ``spec.noise == "fixed"``,
``spec.noise_precision``.

Side features: the Macau prior as a ridge (``user_features=``, ``item_features=``)
-------------------------------------------------------------------------------------
With a :class:`~bayesmf.data.features.Features` ``X_U (N, F)`` for the users (items
alike, each side independently) the ridge of :math:`U` is centred at a feature-dependent
mean, the MAP counterpart of the Macau prior of :mod:`bayesmf.infer.gibbs` (Simm et al.
2015) with the factor precision fixed at :math:`\Lambda_U = \tau\lambda_f I`:

.. math::

    J = \ldots + \lambda_f \sum_u \lVert U_u - \mu_U - \beta_U^\top x_u\rVert^2
        + \lambda_f\bigl(\beta_0\lVert\mu_U\rVert^2
        + \lambda_\beta\lVert\beta_U\rVert_F^2\bigr)

(:math:`\beta_U\ (F\times k)`, :math:`\beta_0` = ``spec.priors.beta0``,
:math:`\lambda_\beta` = option ``reg_beta``, default 1, the prior mean of the Gibbs
sampler's :math:`\lambda_\beta`). This is :math:`-\tfrac2\tau\log` of the Gibbs model's
density at :math:`\Lambda_U = \tau\lambda_f I`: :math:`\mu_U\mid\Lambda_U \sim
\mathcal N(0, (\beta_0\Lambda_U)^{-1})` and the coupled prior
:math:`\beta_{U,f} \sim \mathcal N(0, (\lambda_\beta\Lambda_U)^{-1})`, so the penalty of
:math:`\beta` is :math:`\lambda_f\lambda_\beta` (the ratio of the two strengths that
enters the ridge regression below is :math:`\lambda_\beta` itself). ALS adds two block
minimisers per side and sweep, after that side's rows (so :math:`J` still never increases):

* the rows solve with the per-row prior shift :math:`\lambda_f m_u`,
  :math:`m_u = \mu_U + \beta_U^\top x_u` (the ``prior_shift`` hook of
  :func:`~bayesmf.infer._rowblocks.solve_rows`);
* :math:`(\mu_U, \beta_U)` jointly by the ridge regression of the rows on
  :math:`\tilde X = [1, X]`:

  .. math::

      \begin{pmatrix}\mu_U^\top\\ \beta_U\end{pmatrix}
      = \bigl(\tilde X^\top\tilde X + \mathrm{diag}(\beta_0, \lambda_\beta I_F)\bigr)^{-1}
        \tilde X^\top U

  by a Cholesky of the :math:`(F+1)^2` system (its Gram formed once on the host in
  float64) up to 1000 features (``beta_solver="auto"``), else by conjugate gradients on
  :math:`B \mapsto \tilde X^\top(\tilde X B) + \mathrm{diag}(\cdot) B`, warm-started at
  the last :math:`\beta` (``cg_tol``, ``cg_maxiter``; a sparse ``X`` is multiplied as
  scipy CSR in the numpy engine and as COO segment sums in JAX, never densified).

The gradient solvers add :math:`\mu_U, \beta_U` to the optimised parameters (also for the
non-Gaussian likelihoods, with :math:`\tau = 1`). The point posterior carries the draws of
the Gibbs Macau posterior in the same layout -- ``beta_U (1,1,F,k)``, ``mu_U``,
``lambda_beta_U`` (= ``reg_beta``), ``Lambda_U`` (:math:`=\tau\lambda_f I`, the prior
precision of a row) and ``lambda_bu`` (:math:`=\tau\lambda_b`) -- and
``posterior.features``, so :meth:`~bayesmf.posterior.Posterior.with_features` adds
cold-start ids at :math:`\mu_U + \beta_U^\top x` with the prior's extra variance.
``lambda_f = 0`` (a flat factor prior, on which features have no effect) is a
:class:`~bayesmf.errors.SpecError`; so are features with ``rank=0`` and with a likelihood
whose MAP is its own fitter (implicit ALS).

Other likelihoods: the GLM MAP
------------------------------
A family without Gaussian noise (``gaussian_noise=False``: Bernoulli, ordinal, a family of
one's own such as a Student-t) and without a MAP fitter of its own is fitted by L-BFGS
(default) or Adam on the deviance of its :meth:`~bayesmf.model.likelihoods.base.Likelihood.log_prob`
plus the same ridge (the factor prior at :math:`\tau = 1`) and its parameters' priors,

.. math::

    J(\eta, \theta) = -2\sum_{(u,i)\in\Omega}\log p(y_{ui}\mid\eta_{ui}, \theta)
      + \text{ridge} - 2\log p(\theta),

jointly over the active parameters and :math:`\theta` (``solver="als"`` is an error).
The ordinal cut-points enter through their unconstrained gaps ``cut_u`` with the prior
of :mod:`bayesmf.model.likelihoods.ordinal`. Every other parameter in ``theta_names`` is
taken from the family's ``numpyro_theta(spec)`` (the prior that NUTS and SVI use): a
``numpyro.sample`` site of its name is learned through an unconstrained copy
:math:`u = T^{-1}(\theta)`, :math:`T` = ``biject_to(site.support)`` (``exp`` for a
positive parameter), started at ``init_theta``, with

.. math::

    -2\log p(\theta) = -2\sum_{\text{sites } s}\log p_s\bigl(T_s(u_s)\bigr),

the site's log density in the constrained parameter *without* the Jacobian
:math:`\log|T'(u)|`: :math:`u` only parametrises the search, the optimum is the
posterior mode in :math:`\theta` (for a precision :math:`\tau\sim\mathrm{Gamma}(a, b)`
the penalty :math:`-2(a-1)\log\tau + 2b\tau`, as for the Gaussian noise above). A
parameter that ``numpyro_theta`` returns as a fixed value or a ``numpyro.deterministic``
site keeps that value (a deterministic one follows the learned sites). The fitted values
are the Posterior's draws of those names, so its predictions use them. A parameter that
``numpyro_theta`` does not declare, or a sample site there that ``theta_names`` does not
list, is a :class:`~bayesmf.errors.SpecError` (declare it, or fit with ``method="gibbs"``
or ``"svi"``).

Defaults: ALS ``max_iter=50, tol=1e-3`` (about 10 sweeps on MovieLens-100K; like
Spark's ``maxIter=10`` this stops well before machine precision, where held-out error no
longer changes -- pass a smaller ``tol`` for the exact minimiser); L-BFGS
``max_iter=500, tol=1e-4``; Adam ``max_iter=2000, tol=1e-6``.

Engines (option ``engine``): ALS runs either as compiled JAX (``"jax"``) or in plain numpy
(``"numpy"``), the *same* sweep code (:func:`_als_sweep` and the shared row solver follow
the array namespace of their inputs), float32 in both. A single fit of a small or medium
problem is compile-bound in JAX: on the 2-core benchmark machine MovieLens-100K at rank 10
takes about 0.15 s in numpy against 1.6 s of compile plus 0.12 s of sweeps in JAX, and
the ML-1M subset at rank 32 3.6 s against 2.3 + 2.8 s. ``"auto"`` (default) therefore picks
numpy for ALS when ``nnz * (rank + 1)**2 <= 1e9`` and the JAX backend is the CPU, and JAX
otherwise (gradient solvers, large problems, GPU). Pass ``engine="jax"`` when refitting
one data shape many times (hyperparameter searches), where the cached compile pays off.
On the JAX engine each side's rows are cut into ``row_parts`` parts (``"auto"``: on a CPU
one per 100k observations, up to 8; :func:`bayesmf.infer._rowblocks.resolve_row_parts`)
whose solves XLA runs concurrently, as in the Gibbs sampler: on the 10M-rating synthetic
problem of ``benchmarks/bench_scale_10m.py`` (rank 32, 2 cores) 3.82 s per ALS sweep with
one part, 3.33 s with 8 (``results/scale_10m_map.md``).

Compilation (JAX engine): every function that touches the device is compiled ahead of
time and cached per process, keyed by the array shapes and the static model layout, so
refitting data of the same size (repeated fits, hyperparameter searches -- the ridge
strengths are traced values -- and same-shape folds) pays the XLA compile only once;
``attrs["timings"]`` reports ``compile_s`` separately. Problems with ``nnz * (rank + 2) < 2**17`` are
compile-bound and are compiled without XLA's backend optimisations (half the compile
time). Initial factors come from numpy (no random-number kernel to compile).
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bayesmf._xp import array_namespace
from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import likelihood_fitter, check_options, fitted_spec
from bayesmf.infer._features import feature_matmul, feature_tmatmul
from bayesmf.infer._rowblocks import build_row_blocks, resolve_row_parts, solve_rows
from bayesmf.infer._xla import compile_lowered
from bayesmf.model.likelihood import Params, predict_mean, sse
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo

__all__ = ["fit_map", "map_objective", "noise_precision_mode", "link_update", "DEFAULTS",
           "SOLVERS", "BETA_SOLVERS"]

SOLVERS = ("als", "lbfgs", "adam")

#: options of :func:`fit_map`; ``None`` means "the solver's own default" (see
#: :data:`_SOLVER_DEFAULTS`).
DEFAULTS = {
    "solver": "als",
    "max_iter": None,
    "tol": None,
    "validation_fraction": 0.0,
    "patience": 5,
    "learning_rate": None,
    "engine": "auto",
    # ALS on the JAX engine: rows of each side in parts (bayesmf.infer._rowblocks, Row parts)
    "row_parts": "auto",
    # side features (module docs): the ridge strength ratio of beta and its solver
    "reg_beta": 1.0,
    "beta_solver": "auto",
    "cg_tol": 1e-6,
    "cg_maxiter": 200,
}

BETA_SOLVERS = ("auto", "cholesky", "cg")
#: ``beta_solver="auto"``: Cholesky of the (F+1) x (F+1) system up to this many features
_CHOLESKY_MAX_FEATURES = 1000

ENGINES = ("auto", "jax", "numpy")

_SOLVER_DEFAULTS = {
    "als": {"max_iter": 50, "tol": 1e-3},
    "lbfgs": {"max_iter": 500, "tol": 1e-4},
    "adam": {"max_iter": 2000, "tol": 1e-6, "learning_rate": 0.05},
}
_GRAD_WINDOW = 5
_REG_FLOOR = 1e-6
_CACHE_MAX = 64
#: problems with nnz * (rank + 2) below this are compile-bound: compile them fast
_SMALL_WORK = 1 << 17
_SMALL_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0}
#: ``engine="auto"`` runs ALS in numpy (on a CPU JAX backend) when
#: ``nnz * (rank + 1)**2`` is at most this: measured on 2 cores, numpy takes 0.15 s on
#: MovieLens-100K at rank 10 and 3.6 s on the ML-1M subset at rank 32 (work 4.8e8), where
#: JAX needs 1.6-2.3 s to compile plus 0.12-2.8 s to run; a single fit is faster in numpy
#: up to about 1e9.
_NUMPY_MAX_WORK = 10**9
_DTYPE = jnp.float32


# ----------------------------------------------------------------------------- objective
def map_objective(p: Params, users, items, ratings, reg_factors, reg_bias, lik=None,
                  theta=None, prior_means=None):
    r"""The MAP (ridge) objective :math:`J(\theta)` of the module docstring:
    ``sse + reg_factors * (|U - M_U|^2 + |V - M_V|^2) + reg_bias * (|bu|^2 + |bi|^2)``.

    ``prior_means=(M_U, M_V)`` (either may be None: zero) are the per-row prior means of
    the factors (side features: :math:`M_U = 1\mu_U^\top + X_U\beta_U`; the penalty
    of :math:`\mu_U, \beta_U` themselves is added by the caller, module docs).
    For a non-Gaussian likelihood ``lik`` (with its parameters ``theta``) the squared
    error is replaced by the deviance :math:`-2\sum\log p(y\mid\eta,\theta)` (which is
    the squared error for a Gaussian of unit precision), ``ratings`` in the likelihood's
    internal coding."""
    MU, MV = prior_means if prior_means is not None else (None, None)
    pen = _penalty(p, reg_factors, reg_bias, MU, MV)
    if lik is None or lik.gaussian_noise:
        return sse(p, users, items, ratings) + pen
    lp = lik.log_prob(ratings, predict_mean(p, users, items), theta)
    return -2.0 * lp.sum() + pen


def noise_precision_mode(sse: float, n: int, a: float = 1.0, b: float = 1.0) -> float:
    r"""MAP estimate of the noise precision :math:`\tau` from ``n`` residuals with sum
    of squares ``sse`` under the prior :math:`\tau\sim\mathrm{Gamma}(a, b)` (shape,
    rate): the mode of the Gamma posterior :math:`\mathrm{Gamma}(a + n/2, b + S/2)`,

    .. math::

        \hat\tau = \frac{n + 2a - 2}{S + 2b}.

    When the posterior shape :math:`a + n/2` is at most 1 (one residual and
    :math:`a \le 1/2`) the density has no interior mode; its mean
    :math:`(n + 2a)/(S + 2b)` is returned instead. Finite and positive for every
    ``sse >= 0`` since ``b > 0``."""
    sse, n, a, b = float(sse), float(n), float(a), float(b)
    if not (b > 0 and a > 0 and sse >= 0 and n >= 0):
        raise SpecError(f"noise prior Gamma(a={a}, b={b}) with n={n}, sse={sse} is invalid")
    shape = n + 2.0 * a - 2.0
    if shape <= 0:
        shape = n + 2.0 * a
    return shape / (sse + 2.0 * b)


def _penalty(p: Params, reg_factors, reg_bias, MU=None, MV=None):
    dU = p.U if MU is None else p.U - MU
    dV = p.V if MV is None else p.V - MV
    penalty_f = (dU * dU).sum() + (dV * dV).sum()
    penalty_b = (p.bu * p.bu).sum() + (p.bi * p.bi).sum()
    return reg_factors * penalty_f + reg_bias * penalty_b


class _Layout(NamedTuple):
    """Static (hashable) shape of the model: which terms are active, and the sizes."""

    use_mu: bool
    use_bu: bool
    use_bi: bool
    rank: int
    n_users: int
    n_items: int
    #: non-Gaussian likelihood (None: the Gaussian least-squares objective)
    lik: object = None
    fix_first: bool = True
    #: side features: ``(("U"|"V", n_features, solver), ...)`` (static), and beta0
    macau: tuple = ()
    beta0: float = 0.0
    cg_tol: float = 1e-6
    cg_maxiter: int = 200
    #: a family's own likelihood parameters besides the ordinal cut-points
    #: (:class:`_ThetaSites`, GLM MAP; None: none)
    theta: Any = None


class _Obs(NamedTuple):
    users: jnp.ndarray
    items: jnp.ndarray
    ratings: jnp.ndarray


def _expand(x: dict, lay: _Layout) -> Params:
    """Active-parameter dict -> full :class:`Params` (switched-off terms are zeros)."""
    z = functools.partial(jnp.zeros, dtype=_DTYPE)
    return Params(
        x["mu"] if lay.use_mu else z(()),
        x["bu"] if lay.use_bu else z((lay.n_users,)),
        x["bi"] if lay.use_bi else z((lay.n_items,)),
        x["U"] if lay.rank else z((lay.n_users, 0)),
        x["V"] if lay.rank else z((lay.n_items, 0)),
        jnp.ones((), _DTYPE),
    )


def _active(p: Params, lay: _Layout) -> dict:
    x = {}
    if lay.use_mu:
        x["mu"] = p.mu
    if lay.use_bu:
        x["bu"] = p.bu
    if lay.use_bi:
        x["bi"] = p.bi
    if lay.rank:
        x["U"], x["V"] = p.U, p.V
    return x


# ----------------------------------------------------------------------------- side features
class _Feat(NamedTuple):
    """One side's features in solver form (a pytree): ``X`` dense ``(n, F)`` (or, numpy
    engine, a scipy CSR matrix), or the COO triplets ``rows, cols, vals`` of a sparse
    ``X`` in JAX (``X`` None); ``G`` the ``(F+1, F+1)`` Gram of :math:`[1, X]` (Cholesky
    solver) or None."""

    X: Any
    rows: Any
    cols: Any
    vals: Any
    G: Any


class _Link(NamedTuple):
    """The features of both sides (``_Feat`` or None) and the traced ``reg_beta``."""

    U: Any
    V: Any
    reg_beta: Any


def _cg(op, b, x0, tol, maxiter):
    """Conjugate gradients for the SPD ``op`` on arrays (all columns as one vector); JAX's
    for JAX arrays, a plain loop for numpy (the compile-free engine)."""
    if not isinstance(b, np.ndarray):
        return jax.scipy.sparse.linalg.cg(op, b, x0=x0, tol=tol, maxiter=maxiter)[0]
    x = np.array(x0, copy=True)
    r = b - op(x)
    d = r.copy()
    rs = float((r * r).sum())
    stop = (tol * math.sqrt(float((b * b).sum()))) ** 2
    for _ in range(int(maxiter)):
        if rs <= stop:
            break
        Ad = op(d)
        a = rs / float((d * Ad).sum())
        x += a * d
        r -= a * Ad
        rs_new = float((r * r).sum())
        d = r + (rs_new / rs) * d
        rs = rs_new
    return x


def link_update(F_rows, fd: _Feat, reg_beta, beta0: float, mu_prev, beta_prev, *,
                solver: str = "cholesky", cg_tol: float = 1e-6, cg_maxiter: int = 200):
    r"""The exact minimiser of the MAP objective over one side's link
    :math:`(\mu_F, \beta_F)` given its rows ``F_rows (n, k)``: the ridge regression

    .. math::

        \begin{pmatrix}\mu_F^\top\\ \beta_F\end{pmatrix} = \bigl(\tilde X^\top\tilde X
        + \mathrm{diag}(\beta_0, \lambda_\beta I_F)\bigr)^{-1}\tilde X^\top F,
        \qquad \tilde X = [1, X]

    (module docs). ``solver="cholesky"`` uses the precomputed Gram ``fd.G``; ``"cg"``
    conjugate gradients from ``(mu_prev, beta_prev)`` (never an ``F x F`` matrix). Runs in
    the array namespace of ``F_rows``. Returns ``(mu (k,), beta (F, k))``."""
    xp = array_namespace(F_rows)
    dt = F_rows.dtype
    n = F_rows.shape[0]
    nf = beta_prev.shape[0]
    rhs = xp.concatenate([F_rows.sum(0)[None], feature_tmatmul(fd, F_rows, nf)], axis=0)
    diag = xp.concatenate([xp.full((1,), beta0, dt),
                           (xp.ones((nf,), dt) * reg_beta).astype(dt)])
    if solver == "cholesky":
        K = fd.G + xp.diag(diag)
        if xp is np:
            import scipy.linalg as sla

            B = sla.cho_solve(sla.cho_factor(K, lower=True), rhs)
        else:
            B = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(K, lower=True), rhs)
    elif solver == "cg":
        def op(B):
            fit = B[0][None] + feature_matmul(fd, B[1:], n)
            return xp.concatenate([fit.sum(0)[None], feature_tmatmul(fd, fit, nf)], axis=0) \
                + diag[:, None] * B

        x0 = xp.concatenate([mu_prev[None], beta_prev], axis=0)
        B = _cg(op, rhs, x0, cg_tol, cg_maxiter)
    else:
        raise ValueError(f"unknown beta solver {solver!r}")
    B = B.astype(dt)
    return B[0], B[1:]


def _n_side(S: str, lay: _Layout) -> int:
    return lay.n_users if S == "U" else lay.n_items


def _prior_mean(mac: dict, link: _Link, S: str, lay: _Layout):
    """The per-row prior mean :math:`1\\mu_S^\\top + X\\beta_S` of side ``S`` (None
    without features on that side)."""
    if not any(m[0] == S for m in lay.macau):
        return None
    return mac[f"mu_{S}"][None] + feature_matmul(getattr(link, S), mac[f"beta_{S}"],
                                                 _n_side(S, lay))


def _link_penalty(mac: dict, link: _Link, reg_f, lay: _Layout):
    r""":math:`\lambda_f\sum_S(\beta_0\lVert\mu_S\rVert^2 + \lambda_\beta
    \lVert\beta_S\rVert^2)` over the sides with features."""
    tot = 0.0
    for S, _, _ in lay.macau:
        mu, beta = mac[f"mu_{S}"], mac[f"beta_{S}"]
        tot = tot + lay.beta0 * (mu * mu).sum() + link.reg_beta * (beta * beta).sum()
    return reg_f * tot


def _full_objective(p: Params, mac: dict, obs, reg_f, reg_b, link: _Link, lay: _Layout,
                    lik=None, theta=None):
    """:func:`map_objective` with the side-feature terms (module docs)."""
    if not lay.macau:
        return map_objective(p, *obs, reg_f, reg_b, lik, theta)
    means = (_prior_mean(mac, link, "U", lay), _prior_mean(mac, link, "V", lay))
    return (map_objective(p, *obs, reg_f, reg_b, lik, theta, prior_means=means)
            + _link_penalty(mac, link, reg_f, lay))


def _link_step(F_rows, mac: dict, link: _Link, S: str, lay: _Layout) -> dict:
    for side, _, solver in lay.macau:
        if side == S:
            mu, beta = link_update(F_rows, getattr(link, S), link.reg_beta, lay.beta0,
                                   mac[f"mu_{S}"], mac[f"beta_{S}"], solver=solver,
                                   cg_tol=lay.cg_tol, cg_maxiter=lay.cg_maxiter)
            mac = {**mac, f"mu_{S}": mu, f"beta_{S}": beta}
    return mac


def _init_mac(lay: _Layout, *, numpy: bool = False) -> dict:
    """Start of the link parameters: :math:`\\mu_S = 0`, :math:`\\beta_S = 0`."""
    z = np.zeros if numpy else (lambda shape, dt: jnp.zeros(shape, dt))
    mac = {}
    for S, nf, _ in lay.macau:
        mac[f"mu_{S}"] = z((lay.rank,), np.float32)
        mac[f"beta_{S}"] = z((nf, lay.rank), np.float32)
    return mac


def _feature_setup(train: Ratings, spec: ModelSpec, user_features, item_features,
                   opts: dict, numpy: bool):
    """Aligned :class:`~bayesmf.data.features.Features` per side, the solver form of each
    (:class:`_Feat`) and the static ``macau`` tuple of :class:`_Layout`."""
    import scipy.sparse as sps

    from bayesmf.data.features import align_side_features

    aligned = align_side_features(train, spec.rank, user_features, item_features)
    feats, macau = {"U": None, "V": None}, []
    for side, S in (("user", "U"), ("item", "V")):
        f = aligned[side]
        if f is None:
            continue
        if not spec.reg_factors > 0:
            raise SpecError(f"{side}_features need reg_factors > 0 (with a flat factor prior "
                            f"the features' prior mean has no effect on the MAP)")
        nf = f.n_features
        solver = opts["beta_solver"]
        if solver == "auto":
            solver = "cholesky" if nf <= _CHOLESKY_MAX_FEATURES else "cg"
        X = f.X
        G = None
        if solver == "cholesky":
            n = X.shape[0]
            colsum = np.asarray(X.sum(0), np.float64).ravel()
            XtX = (X.T @ X).toarray() if sps.issparse(X) else X.T @ X
            G = np.block([[np.full((1, 1), float(n)), colsum[None]],
                          [colsum[:, None], np.asarray(XtX, np.float64)]]).astype(np.float32)
        if numpy:
            Xo = sps.csr_matrix(X, dtype=np.float32) if sps.issparse(X) \
                else np.asarray(X, np.float32)
            fd = _Feat(Xo, None, None, None, G)
        elif sps.issparse(X):
            C = sps.coo_matrix(X)
            fd = _Feat(None, jnp.asarray(C.row, jnp.int32), jnp.asarray(C.col, jnp.int32),
                       jnp.asarray(C.data, _DTYPE), None if G is None else jnp.asarray(G))
        else:
            fd = _Feat(jnp.asarray(X, _DTYPE), None, None, None,
                       None if G is None else jnp.asarray(G))
        feats[S] = fd
        macau.append((S, int(nf), solver))
    return aligned, feats, tuple(macau)


def _macau_draws(mac: dict, lay: _Layout, tau: float, reg_f: float, reg_b: float,
                 reg_beta: float) -> dict:
    """The point posterior's Macau draws in the Gibbs layout (module docs)."""
    out = {}
    for S, _, _ in lay.macau:
        out[f"mu_{S}"] = np.asarray(mac[f"mu_{S}"], np.float32)
        out[f"beta_{S}"] = np.asarray(mac[f"beta_{S}"], np.float32)
        out[f"lambda_beta_{S}"] = np.float32(reg_beta)
        out[f"Lambda_{S}"] = (tau * max(reg_f, _REG_FLOOR)
                              * np.eye(lay.rank)).astype(np.float32)
        out["lambda_bu" if S == "U" else "lambda_bi"] = np.float32(tau * max(reg_b, _REG_FLOOR))
    return out


# ----------------------------------------------------------------------------- compile cache
_CACHE: dict = {}


def _compiled(fn, static: dict, *args, small: bool = False, eager: bool = False):
    """AOT-compiled ``fn(*args, **static)``, cached by (function, static values, argument
    tree, shapes and dtypes). Returns ``(executable, compile_seconds)``; the seconds are 0
    on a cache hit. ``small=True`` (tiny problems, where compiling costs far more than
    running) compiles without XLA's backend optimisation passes: about half the compile
    time for about twice the run time per call. ``eager=True`` (the numpy engine) returns
    the plain function: nothing to compile."""
    if eager:
        return functools.partial(fn, **static), 0.0
    leaves, tree = jax.tree_util.tree_flatten(args)
    key = (fn.__qualname__, tuple(sorted(static.items())), tree, small,
           tuple((np.shape(a), jnp.result_type(a), getattr(a, "weak_type", False))
                 for a in leaves))
    hit = _CACHE.get(key)
    if hit is not None:
        return hit, 0.0
    t0 = time.perf_counter()
    exe = compile_lowered(jax.jit(functools.partial(fn, **static)).lower(*args),
                          _SMALL_COMPILE_OPTIONS if small else None)
    dt = time.perf_counter() - t0
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = exe
    return exe, dt


# ----------------------------------------------------------------------------- ALS
def _side_solve(blocks, other, bias_other, y_base, rows_of_obs_other, use_bias, rank,
                reg_f, reg_b, offset=None):
    """Ridge solve of one side: per row ``(b, F)`` given the other side's factors (in the
    array namespace and dtype of ``other``: JAX when compiled, numpy on the
    compile-free path). ``offset (n, k)``: per-row prior means of the factors (side
    features), entering as the per-row prior shift ``reg_f * offset``."""
    xp = array_namespace(other)
    dt = other.dtype
    n_other = other.shape[0]
    cols, diag = [], []
    if use_bias:
        cols.append(xp.ones((n_other, 1), dt))
        diag.append(xp.reshape(reg_b, (1,)))
    if rank:
        cols.append(other)
        diag.append(xp.full((rank,), reg_f, dt))
    X = xp.concatenate(cols, axis=1)
    d = X.shape[1]
    prior = xp.diag(xp.maximum(xp.concatenate(diag).astype(dt), _REG_FLOOR))
    y = y_base - bias_other[rows_of_obs_other]
    shift = xp.zeros((d,), dt)
    if offset is not None:
        rf = xp.maximum(xp.asarray(reg_f, dt), xp.asarray(_REG_FLOOR, dt))
        shift = (rf * offset).astype(dt)
        if use_bias:
            shift = xp.concatenate([xp.zeros((shift.shape[0], 1), dt), shift], axis=1)
    Z = solve_rows(blocks, X, y, xp.ones((), dt), prior, shift, xp=xp)
    b = Z[:, 0] if use_bias else None
    F = Z[:, 1:] if use_bias else Z
    return b, F


def _mu_update(p: Params, obs: _Obs, lay: _Layout) -> Params:
    if not lay.use_mu:
        return p
    rest = predict_mean(p._replace(mu=p.mu * 0), obs.users, obs.items)
    return p._replace(mu=(obs.ratings - rest).mean())


def _recenter(p: Params, name: str, lay: _Layout) -> Params:
    """Move the mean of one bias vector into mu: predictions are unchanged and the
    penalty ``reg_bias * |b - c|^2`` is minimised at ``c = mean(b)``, so J cannot increase.
    This exact step along the direction (mu + c, b - c) removes the slowest mode of
    plain ALS (trading the mean between mu and the biases)."""
    if not lay.use_mu:
        return p
    b = getattr(p, name)
    c = b.mean()
    return p._replace(mu=p.mu + c, **{name: b - c})


def _als_sweep(p: Params, obs: _Obs, ublocks, iblocks, reg_f, reg_b, mac=None, link=None, *,
               lay: _Layout):
    """One ALS sweep (users, mu, items, mu; bias re-centring after each side; with side
    features each side's link ``(mu_S, beta_S)`` after its rows); returns the new params,
    the new link parameters ``mac`` and J after it."""
    mac = dict(mac or {})
    if lay.use_bu or lay.rank:
        b, F = _side_solve(ublocks, p.V, p.bi, obs.ratings - p.mu, obs.items,
                           lay.use_bu, lay.rank, reg_f, reg_b, _prior_mean(mac, link, "U", lay))
        p = p._replace(bu=b if lay.use_bu else p.bu, U=F)
        if lay.use_bu:
            p = _recenter(p, "bu", lay)
    p = _mu_update(p, obs, lay)
    mac = _link_step(p.U, mac, link, "U", lay)
    if lay.use_bi or lay.rank:
        b, F = _side_solve(iblocks, p.U, p.bu, obs.ratings - p.mu, obs.users,
                           lay.use_bi, lay.rank, reg_f, reg_b, _prior_mean(mac, link, "V", lay))
        p = p._replace(bi=b if lay.use_bi else p.bi, V=F)
        if lay.use_bi:
            p = _recenter(p, "bi", lay)
    mac = _link_step(p.V, mac, link, "V", lay)
    e = obs.ratings - predict_mean(p, obs.users, obs.items)
    if lay.use_mu:
        m = e.mean()
        p = p._replace(mu=p.mu + m)
        e = e - m
    if not lay.macau:
        return p, mac, (e * e).sum() + _penalty(p, reg_f, reg_b)
    means = (_prior_mean(mac, link, "U", lay), _prior_mean(mac, link, "V", lay))
    return p, mac, ((e * e).sum() + _penalty(p, reg_f, reg_b, *means)
                    + _link_penalty(mac, link, reg_f, lay))


# ----------------------------------------------------------------------------- gradient
_LBFGS = optax.lbfgs()


def _adam(learning_rate):
    return optax.adam(learning_rate)


_ADAM = optax.inject_hyperparams(_adam)


def _grad_init(x: dict, lr, *, solver: str):
    if solver == "lbfgs":
        return _LBFGS.init(x)
    return _ADAM(learning_rate=lr).init(x)


def _theta_of(x: dict, lay: _Layout) -> dict:
    """Likelihood parameters from the active-parameter dict (ordinal: cutpoints from the
    unconstrained ``cut_u``; a family's own parameters from their unconstrained copies,
    :func:`_site_theta`)."""
    if lay.lik is None or "cut_u" not in x:
        th = {"cutpoints": jnp.zeros((1,), _DTYPE)} if lay.lik is not None else {}
    else:
        th = {"cutpoints": lay.lik.cut_from_u(x["cut_u"], lay.lik.K, lay.fix_first)}
    if lay.theta is not None:
        th = {**th, **_site_theta(x, lay)[0]}
    return th


def _mac_of(z: dict, lay: _Layout) -> dict:
    return {n: z[n] for S, _, _ in lay.macau for n in (f"mu_{S}", f"beta_{S}")}


def _x_objective(z: dict, obs: _Obs, reg_f, reg_b, link=None, *, lay: _Layout):
    J = _full_objective(_expand(z, lay), _mac_of(z, lay), obs, reg_f, reg_b, link, lay,
                        lay.lik, _theta_of(z, lay))
    if "cut_u" in z:  # the cutpoints' prior (module docs of the ordinal likelihood)
        J = J - 2.0 * lay.lik.log_prior_u(z["cut_u"], lay.fix_first)
    if lay.theta is not None:  # a family's own parameters: their numpyro_theta priors
        J = J - 2.0 * _site_theta(z, lay)[1]
    return J


def _grad_step(x: dict, state, obs: _Obs, reg_f, reg_b, link=None, *, solver: str,
               lay: _Layout):
    """One full-batch step; returns (x_new, state_new, J(x_new) if known else J(x_old))."""
    def fun(z):
        return _x_objective(z, obs, reg_f, reg_b, link, lay=lay)

    if solver == "lbfgs":
        value, grad = optax.value_and_grad_from_state(fun)(x, state=state)
        updates, state = _LBFGS.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        x = optax.apply_updates(x, updates)
        return x, state, optax.tree_utils.tree_get(state, "value")
    n = obs.ratings.shape[0]
    value, grad = jax.value_and_grad(lambda z: fun(z) / n)(x)
    # inject_hyperparams: update() reads the learning rate from ``state`` (set by init),
    # so the placeholder below is never used and lr changes need no recompile
    updates, state = _ADAM(learning_rate=0.0).update(grad, state, x)
    x = optax.apply_updates(x, updates)
    return x, state, value * n


# ----------------------------------------------------------------------------- helpers
def _rmse(p: Params, obs: _Obs):
    r = obs.ratings - predict_mean(p, obs.users, obs.items)
    return (r * r).mean() ** 0.5


def _rmse_x(x: dict, obs: _Obs, *, lay: _Layout):
    """RMSE of the predictive mean E[y | eta] on the data scale (non-Gaussian MAP)."""
    eta = predict_mean(_expand(x, lay), obs.users, obs.items)
    th = _theta_of(x, lay)
    r = lay.lik.decode_jnp(obs.ratings) - lay.lik.point_mean(eta, th)
    return (r * r).mean() ** 0.5


def _objective_only(p: Params, obs: _Obs, reg_f, reg_b, mac=None, link=None, *,
                    lay: _Layout):
    return _full_objective(p, mac or {}, obs, reg_f, reg_b, link, lay)


def _init_params(seed: int, lay: _Layout, mu0: float, init_scale: float, *,
                 numpy: bool = False) -> Params:
    """U, V ~ N(0, init_scale^2) drawn by numpy from ``seed`` (no XLA compile: JAX's
    threefry generator costs seconds to compile on CPU); biases 0; mu at ``mu0``.
    float32 JAX arrays, or float32 numpy arrays for the compile-free engine (the same
    values either way)."""
    rng = np.random.default_rng(seed)
    U = init_scale * rng.standard_normal((lay.n_users, lay.rank))
    V = init_scale * rng.standard_normal((lay.n_items, lay.rank))
    mu = mu0 if lay.use_mu else 0.0
    ft = np.float32
    arrays = (np.asarray(mu, ft), np.zeros(lay.n_users, ft), np.zeros(lay.n_items, ft),
              U.astype(ft), V.astype(ft), np.asarray(1.0, ft))
    return Params(*(arrays if numpy else (jnp.asarray(a) for a in arrays)))


def _check(opts: dict) -> dict:
    solver = opts["solver"]
    if solver not in SOLVERS:
        raise SpecError(f"solver must be one of {SOLVERS}, got {solver!r}")
    out = dict(opts)
    for name, val in _SOLVER_DEFAULTS[solver].items():
        if out.get(name) is None:
            out[name] = val
    mi = out["max_iter"]
    if isinstance(mi, bool) or not isinstance(mi, (int, np.integer)) or mi < 1:
        raise SpecError(f"max_iter must be a positive integer, got {mi!r}")
    out["max_iter"] = int(mi)
    tol = out["tol"]
    if not isinstance(tol, (int, float, np.floating)) or isinstance(tol, bool) \
            or not (tol >= 0) or not math.isfinite(tol):
        raise SpecError(f"tol must be a finite number >= 0, got {tol!r}")
    vf = out["validation_fraction"]
    if not isinstance(vf, (int, float, np.floating)) or isinstance(vf, bool) \
            or not (0.0 <= vf < 1.0):
        raise SpecError(f"validation_fraction must be in [0, 1), got {vf!r}")
    pat = out["patience"]
    if isinstance(pat, bool) or not isinstance(pat, (int, np.integer)) or pat < 1:
        raise SpecError(f"patience must be a positive integer, got {pat!r}")
    lr = out["learning_rate"]
    if solver == "adam":
        if not isinstance(lr, (int, float, np.floating)) or isinstance(lr, bool) \
                or not (lr > 0) or not math.isfinite(lr):
            raise SpecError(f"learning_rate must be a finite number > 0, got {lr!r}")
    elif lr is not None:
        raise SpecError(f"learning_rate applies to solver='adam' only (got solver={solver!r})")
    rb = out["reg_beta"]
    if not isinstance(rb, (int, float, np.floating)) or isinstance(rb, bool) \
            or not (rb > 0) or not math.isfinite(rb):
        raise SpecError(f"reg_beta must be a finite number > 0, got {rb!r}")
    if out["beta_solver"] not in BETA_SOLVERS:
        raise SpecError(f"beta_solver must be one of {BETA_SOLVERS}, got {out['beta_solver']!r}")
    ct = out["cg_tol"]
    if not isinstance(ct, (int, float, np.floating)) or isinstance(ct, bool) \
            or not (ct > 0) or not math.isfinite(ct):
        raise SpecError(f"cg_tol must be a finite number > 0, got {ct!r}")
    cm = out["cg_maxiter"]
    if isinstance(cm, bool) or not isinstance(cm, (int, np.integer)) or cm < 1:
        raise SpecError(f"cg_maxiter must be a positive integer, got {cm!r}")
    engine = out["engine"]
    if engine not in ENGINES:
        raise SpecError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "numpy" and solver != "als":
        raise SpecError(f"engine='numpy' runs solver='als' only (got solver={solver!r})")
    resolve_row_parts(out["row_parts"], 0)  # validates
    return out


def _use_numpy(opts: dict, nnz: int, rank: int) -> bool:
    """The compile-free numpy engine: on request, or (``engine="auto"``) for ALS problems
    whose estimated numpy run time is below the JAX compile time (see
    :data:`_NUMPY_MAX_WORK`)."""
    if opts["engine"] != "auto":
        return opts["engine"] == "numpy"
    return (opts["solver"] == "als" and nnz * (rank + 1) ** 2 <= _NUMPY_MAX_WORK
            and jax.default_backend() == "cpu")


def _validation_mask(nnz: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the ``round(fraction * nnz)`` held-out ratings (drawn from ``seed``)."""
    is_val = np.zeros(nnz, bool)
    n_val = int(round(fraction * nnz))
    is_val[np.random.default_rng(seed).choice(nnz, n_val, replace=False)] = True
    return is_val


def _obs(user, item, rating, *, numpy: bool = False) -> _Obs:
    if numpy:
        return _Obs(np.asarray(user, np.intp), np.asarray(item, np.intp),
                    np.asarray(rating, np.float32))
    return _Obs(jnp.asarray(user, jnp.int32), jnp.asarray(item, jnp.int32),
                jnp.asarray(rating, _DTYPE))


def _iterate(advance, carry, J0: float, opts: dict, solver: str, val_rmse=None,
             progress: bool = False) -> dict:
    """The iteration loop of every MAP solver: ``carry, J = advance(carry)`` up to
    ``max_iter`` times; stops when the objective stalls (ALS is monotone: a relative
    decrease below ``tol`` in one sweep; the gradient solvers: a change below ``tol`` over
    a window of :data:`_GRAD_WINDOW` iterations) or, with ``val_rmse(carry)``, when the
    validation RMSE has not improved for ``patience`` iterations (the best carry is kept)."""
    trace = [J0]
    val_trace, best, best_val, since_best = [], None, np.inf, 0
    converged, reason, n_iter = False, "max_iter", 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=opts["max_iter"], desc=f"map/{solver}", leave=False)
    try:
        for n_iter in range(1, opts["max_iter"] + 1):
            carry, J = advance(carry)
            J = float(J)
            if not math.isfinite(J):
                raise FloatingPointError(
                    f"map/{solver}: the objective became {J} at iteration {n_iter}; "
                    "lower learning_rate / init_scale or raise the regularisation")
            trace.append(J)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(objective=f"{J:.6g}")
            if val_rmse is not None:
                v = val_rmse(carry)
                val_trace.append(v)
                if v < best_val:
                    best, best_val, since_best = carry, v, 0
                else:
                    since_best += 1
                    if since_best >= opts["patience"]:
                        reason = "early_stopping"
                        break
            # ALS is monotone (a rounding-level increase means converged); the gradient
            # solvers must have stalled in either direction over the window
            w = 1 if solver == "als" else _GRAD_WINDOW
            if len(trace) > w:
                ref = trace[-1 - w]
                change = ref - trace[-1] if solver == "als" else abs(ref - trace[-1])
                if change <= opts["tol"] * abs(ref):
                    converged, reason = True, "tol"
                    break
    finally:
        if bar is not None:
            bar.close()
    return {"carry": carry, "best": best, "best_val": best_val, "trace": trace,
            "val_trace": val_trace, "n_iter": n_iter, "converged": converged, "reason": reason}


# ----------------------------------------------------------------------------- main
def fit_map(train: Ratings, spec: ModelSpec, *, seed: int = 0, progress: bool = False,
            user_features=None, item_features=None, **options) -> Posterior:
    """Fit PMF (with the biases and mean of ``spec``) by MAP.

    Parameters
    ----------
    train : Ratings
    spec : ModelSpec
        ``rank``, switches, ``reg_factors``, ``reg_bias``, ``init_scale``, ``noise``.
    seed : int
        Seeds the initial factors (:math:`U, V \\sim N(0, \\text{init\\_scale}^2)`,
        biases start at 0 and :math:`\\mu` at the training mean) and the validation split.
    progress : bool
        Show a tqdm progress bar with the objective.
    user_features, item_features : Features or DataFrame, optional
        Side features (the Macau prior as a ridge, module docs): every training id needs
        a row. Options ``reg_beta`` (1.0), ``beta_solver`` (``"auto"`` | ``"cholesky"``
        | ``"cg"``), ``cg_tol`` (1e-6), ``cg_maxiter`` (200).
    **options
        ``solver`` (``"als"`` | ``"lbfgs"`` | ``"adam"``), ``max_iter``, ``tol``,
        ``validation_fraction``, ``patience``, ``learning_rate`` (adam), ``engine``
        (``"auto"`` | ``"jax"`` | ``"numpy"``, ALS only), ``row_parts`` (``"auto"`` or an
        int, the JAX ALS); see :data:`DEFAULTS` and the
        module docstring.

    Returns
    -------
    Posterior
        One draw (``chain=1, draw=1``) of ``mu, bu, bi, U, V, tau``. ``sample_stats``:
        ``objective``, ``objective_trace`` (per iteration), ``n_iter``, ``converged``,
        ``train_rmse`` (and ``val_rmse_trace`` with validation). ``attrs``: solver, engine,
        settings, iterations, convergence, stopping reason and timings (``setup_s``,
        ``compile_s``, ``iterate_s``, ``total_s``). With features also the draws
        ``mu_S, beta_S, lambda_beta_S, Lambda_S`` and ``lambda_bu``/``lambda_bi`` of those
        sides (the Gibbs Macau layout), ``posterior.features`` and ``attrs["macau"]``.
    """
    t_start = time.perf_counter()
    spec = fitted_spec(train, spec, "map")
    has_features = user_features is not None or item_features is not None
    own = likelihood_fitter("map", spec)  # e.g. implicit ALS for the implicit likelihood
    if own is not None:
        if has_features:
            raise SpecError(f"user_features/item_features are not supported by the MAP of "
                            f"likelihood {spec.likelihood.name!r} (its own fitter)")
        return own(train, spec, seed=seed, progress=progress, **options)
    feature_args = (user_features, item_features)
    lik = spec.likelihood
    if not lik.gaussian_noise:  # the deviance of the family's log_prob (module docs)
        return _fit_map_glm(train, spec, seed, progress, options, t_start, feature_args)
    opts = _check(check_options("map", options, DEFAULTS))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SpecError(f"seed must be a non-negative integer, got {seed!r}")
    solver = opts["solver"]
    use_numpy = _use_numpy(opts, train.nnz, spec.rank)
    aligned, feats, macau = _feature_setup(train, spec, *feature_args, opts, use_numpy)
    lay = _Layout(spec.global_mean, spec.user_bias, spec.item_bias, spec.rank,
                  train.n_users, train.n_items, macau=macau,
                  beta0=float(spec.priors.beta0) if macau else 0.0,
                  cg_tol=float(opts["cg_tol"]), cg_maxiter=int(opts["cg_maxiter"]))

    # --- data (and the validation split)
    user, item, rating = train.user, train.item, train.rating
    val = None
    if opts["validation_fraction"] > 0:
        n_val = int(round(opts["validation_fraction"] * train.nnz))
        if n_val < 1 or n_val >= train.nnz:
            raise SpecError(f"validation_fraction={opts['validation_fraction']} leaves "
                            f"{n_val} of {train.nnz} ratings for validation")
        is_val = _validation_mask(train.nnz, opts["validation_fraction"], seed)
        val = _obs(user[is_val], item[is_val], rating[is_val], numpy=use_numpy)
        user, item, rating = user[~is_val], item[~is_val], rating[~is_val]
    obs = _obs(user, item, rating, numpy=use_numpy)
    scalar = np.float32 if use_numpy else (lambda v: jnp.asarray(v, _DTYPE))
    reg_f, reg_b = scalar(spec.reg_factors), scalar(spec.reg_bias)
    link = _Link(feats["U"], feats["V"], scalar(opts["reg_beta"])) if macau else None
    compile_s = 0.0
    compiled = functools.partial(_compiled, small=train.nnz * (spec.rank + 2) < _SMALL_WORK,
                                 eager=use_numpy)
    p = _init_params(int(seed), lay, float(np.mean(rating)), spec.init_scale, numpy=use_numpy)
    mac0 = _init_mac(lay, numpy=use_numpy)
    row_parts = 1
    if solver == "als":
        # the numpy engine runs the parts one after another: no gain there
        row_parts = 1 if use_numpy else resolve_row_parts(opts["row_parts"], len(rating))
        parts = dict(parts=row_parts, row_cost=(spec.rank + 1) / 3)
        ublocks = build_row_blocks(np.asarray(user), np.asarray(item), lay.n_users,
                                   n_other=lay.n_items, **parts)
        iblocks = build_row_blocks(np.asarray(item), np.asarray(user), lay.n_items,
                                   n_other=lay.n_users, **parts)
        step, dt = compiled(_als_sweep, {"lay": lay}, p, obs, ublocks, iblocks, reg_f, reg_b,
                            mac0, link)
        compile_s += dt
        state = None
    else:
        lr = jnp.asarray(opts["learning_rate"] or 0.0, _DTYPE)
        x = {**_active(p, lay), **mac0}
        init, dt = compiled(_grad_init, {"solver": solver}, x, lr)
        compile_s += dt
        state = init(x, lr)
        step, dt = compiled(_grad_step, {"solver": solver, "lay": lay}, x, state, obs,
                            reg_f, reg_b, link)
        expand, dt2 = compiled(_expand, {"lay": lay}, x)
        compile_s += dt2
        compile_s += dt
    objective_fn, dt = compiled(_objective_only, {"lay": lay}, p, obs, reg_f, reg_b, mac0,
                                link)
    compile_s += dt
    rmse_fn = None                      # validation RMSE
    if val is not None:
        rmse_fn, dt = compiled(_rmse, {}, p, val)
        compile_s += dt
    train_rmse_fn, dt = compiled(_rmse, {}, p, obs)
    compile_s += dt
    t_iter = time.perf_counter()

    # --- iterate
    if solver == "als":
        advance = _als_advance(step, obs, ublocks, iblocks, reg_f, reg_b, link)
        carry, params, links = (p, mac0), (lambda c: c[0]), (lambda c: c[1])
    else:
        def advance(c):
            x, st, J = step(*c, obs, reg_f, reg_b, link)
            return (x, st), J

        carry, params = (x, state), (lambda c: expand(c[0]))
        links = (lambda c: _mac_of(c[0], lay))
    J0 = float(objective_fn(p, obs, reg_f, reg_b, mac0, link))
    it = _iterate(advance, carry, J0, opts, solver,
                  None if rmse_fn is None else (lambda c: float(rmse_fn(params(c), val))),
                  progress)
    final = it["best"] if it["best"] is not None else it["carry"]
    p, mac = params(final), links(final)
    trace, val_trace, best_val = it["trace"], it["val_trace"], it["best_val"]
    n_iter, converged, reason = it["n_iter"], it["converged"], it["reason"]
    final_obj = float(objective_fn(p, obs, reg_f, reg_b, mac, link))
    t_done = time.perf_counter()

    # --- result
    n_fit = len(rating)
    sse_train = float(train_rmse_fn(p, obs)) ** 2 * n_fit
    if spec.noise == "learned":  # the mode under the Gamma noise prior (module docs)
        tau = noise_precision_mode(sse_train, n_fit, spec.priors.noise_a,
                                   spec.priors.noise_b)
    else:
        tau = spec.noise_precision
    P = {k: np.asarray(v, np.float32) for k, v in p._asdict().items()}
    P["tau"] = np.float32(tau)
    P.update(_macau_draws(mac, lay, float(tau), float(spec.reg_factors), float(spec.reg_bias),
                          float(opts["reg_beta"])))
    draws = {k: np.asarray(v)[None, None] for k, v in P.items()}
    trace_arr = np.asarray(trace, np.float64)
    stats = {
        "objective": np.array([[final_obj]]),
        "objective_trace": trace_arr[None, None],
        "n_iter": np.array([[n_iter]], np.int64),
        "converged": np.array([[converged]]),
        "train_rmse": np.array([[math.sqrt(sse_train / n_fit)]]),
    }
    if val is not None:
        stats["val_rmse_trace"] = np.asarray(val_trace, np.float64)[None, None]
    t_end = time.perf_counter()
    attrs = {
        "seed": int(seed),
        "solver": solver,
        "engine": "numpy" if use_numpy else "jax",
        "options": {k: v for k, v in opts.items()},
        "row_parts": int(row_parts),
        "iterations": int(n_iter),
        "converged": bool(converged),
        "stop_reason": reason,
        "objective": final_obj,
        "objective_initial": float(trace_arr[0]),
        "timings": {"setup_s": t_iter - t_start - compile_s, "compile_s": compile_s,
                    "iterate_s": t_done - t_iter, "total_s": t_end - t_start},
    }
    if val is not None:
        attrs["validation"] = {"n_val": int(val.ratings.shape[0]), "n_fit": int(n_fit),
                               "best_rmse": float(best_val),
                               "best_iteration": int(np.argmin(val_trace)) + 1}
    if macau:
        attrs["macau"] = _macau_attrs(macau, opts)
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "map", stats, None, attrs, aligned if macau else None)


def _als_advance(step, obs, ublocks, iblocks, reg_f, reg_b, link):
    def advance(c):
        pp, mm, J = step(c[0], obs, ublocks, iblocks, reg_f, reg_b, c[1], link)
        return (pp, mm), J

    return advance


def _macau_attrs(macau: tuple, opts: dict) -> dict:
    return {"sides": [["user" if S == "U" else "item", nf, solver] for S, nf, solver in macau],
            "reg_beta": float(opts["reg_beta"])}


# ----------------------------------------------------------------------------- GLM MAP
class _ThetaSites(NamedTuple):
    """Static (hashable) description of a family's own likelihood parameters (all of
    ``theta_names`` but the ordinal ``cutpoints``): the fitted spec that its
    ``numpyro_theta`` is called with, their names, and those of them that are learned
    (``numpyro.sample`` sites of ``numpyro_theta``; the others are fixed values or
    ``numpyro.deterministic`` sites of it)."""

    spec: Any
    names: tuple
    learned: tuple


#: key prefix of the unconstrained copy of a learned likelihood parameter in ``x``
_THETA_U = "theta_u:"


def _biject_to(support):
    """numpyro's ``biject_to(support)``. The numpyro package is imported before its
    submodule: ``import arviz`` registers numpyro as a lazy module, and importing
    ``numpyro.distributions.transforms`` first would leave ``numpyro.distributions``
    without its ``distribution`` attribute (``numpyro.factor`` then fails in SVI)."""
    import numpyro  # noqa: F401
    from numpyro.distributions.transforms import biject_to

    return biject_to(support)


def _run_numpyro_theta(lik, spec, sub=None):
    """``(trace, returned dict)`` of ``lik.numpyro_theta(spec)``, seeded (key 0), with
    the sample sites' values set by ``sub(site)`` where it returns a value."""
    from numpyro import handlers

    with handlers.trace() as tr, handlers.substitute(substitute_fn=sub or (lambda m: None)), \
            handlers.seed(rng_seed=0):
        ret = lik.numpyro_theta(spec)
    return tr, dict(ret or {})


def _site_value(n: str, tr, ret):
    """A likelihood parameter's value: its site (sample or deterministic) in the trace of
    ``numpyro_theta``, else the value it returns under that name."""
    return tr[n]["value"] if n in tr else ret[n]


def _site_theta(z: dict, lay: _Layout):
    r"""``(theta, log_prior)`` of a family's own likelihood parameters at the unconstrained
    copies ``z["theta_u:<name>"]``: ``numpyro_theta(spec)`` run with each learned sample
    site set to :math:`\theta = T(u)`, :math:`T` = ``biject_to(site.support)`` (evaluated
    in site order, so a prior or support that depends on an earlier parameter sees its
    current value); ``log_prior`` is :math:`\sum\log p(\theta)` of those sites in the
    constrained parameter, without the Jacobian of :math:`T` (module docs)."""
    ts = lay.theta

    def sub(site):
        key = _THETA_U + str(site.get("name"))
        if site["type"] == "sample" and key in z:
            return _biject_to(site["fn"].support)(z[key])
        return None

    tr, ret = _run_numpyro_theta(lay.lik, ts.spec, sub)
    theta = {n: jnp.asarray(_site_value(n, tr, ret), _DTYPE) for n in ts.names}
    lp = jnp.zeros((), _DTYPE)
    for n in ts.learned:
        site = tr[n]
        term = site["fn"].log_prob(site["value"])
        if site.get("scale") is not None:
            term = term * site["scale"]
        lp = lp + jnp.sum(term)
    return theta, lp


def _theta_setup(lik, spec: ModelSpec, theta0: dict):
    """``(_ThetaSites or None, {"theta_u:<name>": u0})`` for the likelihood parameters of
    ``lik`` other than the ordinal cut-points, from one seeded trace of its
    ``numpyro_theta(spec)``; :class:`~bayesmf.errors.SpecError` for a parameter that it
    does not declare, or for a sample site that is no parameter. The learned ones start
    at ``init_theta`` (else at the trace's prior draw), mapped to the unconstrained
    space by the inverse of ``biject_to(support)``."""
    names = tuple(n for n in lik.theta_names if n != "cutpoints")
    if not names:
        return None, {}
    how = ("the MAP fit learns a likelihood's parameters as the numpyro.sample sites of "
           "its numpyro_theta(spec) (under their theta_names, with their priors)")
    try:
        tr, ret = _run_numpyro_theta(lik, spec)
    except Exception as e:  # noqa: BLE001 -- any failure of the family's own code
        raise SpecError(f"{how}; likelihood {lik.name!r}: numpyro_theta(spec) failed "
                        f"({type(e).__name__}: {e}); fix it, or fit with method='gibbs' "
                        f"or 'svi'") from e
    latent = [k for k, m in tr.items() if m["type"] == "sample" and not m["is_observed"]]
    missing = [n for n in names if n not in tr and n not in ret]
    if missing:
        raise SpecError(
            f"{how}; likelihood {lik.name!r} has the parameter(s) {missing} but its "
            f"numpyro_theta(spec) declares no sample site of that name: declare each in "
            f"numpyro_theta, e.g. numpyro.sample({missing[0]!r}, <prior>), or fit with "
            f"method='gibbs' or 'svi'")
    extra = [k for k in latent if k not in names
             and not (k == "cut_u" and "cutpoints" in lik.theta_names)]
    if extra:
        raise SpecError(
            f"{how}; likelihood {lik.name!r}: numpyro_theta(spec) has the sample site(s) "
            f"{extra}, which are not among its theta_names {list(lik.theta_names)}: name "
            f"every sampled parameter in theta_names (a transformed one as a "
            f"numpyro.deterministic site of a listed parameter), or fit with "
            f"method='gibbs' or 'svi'")
    learned = tuple(n for n in names if n in latent)
    u0 = {}
    for n in learned:
        site = tr[n]
        shape = np.shape(site["value"])
        start = theta0[n] if n in theta0 else site["value"]
        c = jnp.broadcast_to(jnp.asarray(np.asarray(start, np.float32), _DTYPE), shape)
        u = jnp.asarray(_biject_to(site["fn"].support).inv(c), _DTYPE)
        if not bool(jnp.all(jnp.isfinite(u))):
            raise SpecError(f"likelihood {lik.name!r}: the start of its parameter {n!r} "
                            f"(init_theta: {np.asarray(start).tolist()}) is outside the "
                            f"support of its prior {site['fn']!r}")
        u0[_THETA_U + n] = u
    return _ThetaSites(spec, names, learned), u0


def _fit_map_glm(train: Ratings, spec: ModelSpec, seed, progress, options, t_start,
                 feature_args=(None, None)):
    r"""MAP for a non-Gaussian likelihood (Bernoulli, ordinal, a family of one's own):
    L-BFGS (or Adam) on :math:`-2\sum\log p(y\mid\eta,\theta) + \text{ridge} -
    2\log p(\theta)` over the active parameters, for the ordinal family the
    unconstrained cutpoints, and for a family's other parameters their unconstrained
    copies :math:`u = T^{-1}(\theta)` (:math:`T` = ``biject_to`` of the support of their
    ``numpyro_theta`` sample site; :math:`\log p(\theta)` is that site's prior at
    :math:`\theta = T(u)`, without the Jacobian of :math:`T`: the mode in
    :math:`\theta`; module docs). The least-squares ALS solver does not apply
    (``solver="als"`` is an error; the default becomes ``"lbfgs"``)."""
    lik = spec.likelihood
    if options.get("solver", "lbfgs") == "als":
        raise SpecError(f"solver='als' is the least-squares solver of the Gaussian "
                        f"likelihood; likelihood {lik.name!r} runs solver='lbfgs' or 'adam'")
    if options.get("engine", "auto") == "numpy":
        raise SpecError(f"engine='numpy' runs the Gaussian ALS only (likelihood {lik.name!r})")
    opts = _check(check_options("map", {**options, "solver": options.get("solver", "lbfgs")},
                                DEFAULTS))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SpecError(f"seed must be a non-negative integer, got {seed!r}")
    solver = opts["solver"]
    y_raw = np.asarray(train.rating, np.float64)
    theta0 = lik.init_theta(y_raw, spec)
    theta_sites, theta_u0 = _theta_setup(lik, spec, theta0)
    aligned, feats, macau = _feature_setup(train, spec, *feature_args, opts, False)
    lay = _Layout(spec.global_mean, spec.user_bias, spec.item_bias, spec.rank,
                  train.n_users, train.n_items, lik, bool(spec.global_mean), macau=macau,
                  beta0=float(spec.priors.beta0) if macau else 0.0,
                  cg_tol=float(opts["cg_tol"]), cg_maxiter=int(opts["cg_maxiter"]),
                  theta=theta_sites)
    user, item, y = train.user, train.item, lik.encode(y_raw)
    val = None
    if opts["validation_fraction"] > 0:
        is_val = _validation_mask(train.nnz, opts["validation_fraction"], seed)
        if not 0 < is_val.sum() < train.nnz:
            raise SpecError(f"validation_fraction={opts['validation_fraction']} leaves no "
                            "ratings on one side")
        val = _obs(user[is_val], item[is_val], y[is_val])
        user, item, y = user[~is_val], item[~is_val], y[~is_val]
    obs = _obs(user, item, y)
    reg_f, reg_b = (jnp.asarray(v, _DTYPE) for v in (spec.reg_factors, spec.reg_bias))
    link = _Link(feats["U"], feats["V"], jnp.asarray(opts["reg_beta"], _DTYPE)) \
        if macau else None
    p = _init_params(int(seed), lay, lik.eta_offset(y_raw), spec.init_scale)
    x = {**_active(p, lay), **_init_mac(lay), **theta_u0}
    if "cutpoints" in theta0 and lik.n_free(lik.K, lay.fix_first) > 0:
        x["cut_u"] = jnp.asarray(lik.u_from_cut(np.asarray(theta0["cutpoints"], np.float64),
                                                lay.fix_first), _DTYPE)
    compiled = functools.partial(_compiled, small=train.nnz * (spec.rank + 2) < _SMALL_WORK)
    lr = jnp.asarray(opts["learning_rate"] or 0.0, _DTYPE)
    init, c1 = compiled(_grad_init, {"solver": solver}, x, lr)
    state = init(x, lr)
    step, c2 = compiled(_grad_step, {"solver": solver, "lay": lay}, x, state, obs, reg_f, reg_b,
                        link)
    objective_fn, c3 = compiled(_x_objective, {"lay": lay}, x, obs, reg_f, reg_b, link)
    rmse_fn, c4 = compiled(_rmse_x, {"lay": lay}, x, obs)
    compile_s = c1 + c2 + c3 + c4
    t_iter = time.perf_counter()

    def advance(c):
        xx, st, J = step(*c, obs, reg_f, reg_b, link)
        return (xx, st), J

    it = _iterate(advance, (x, state), float(objective_fn(x, obs, reg_f, reg_b, link)), opts,
                  solver,
                  None if val is None else (lambda c: float(rmse_fn(c[0], val))), progress)
    x = (it["best"] if it["best"] is not None else it["carry"])[0]
    trace, val_trace, best_val = it["trace"], it["val_trace"], it["best_val"]
    n_iter, converged, reason = it["n_iter"], it["converged"], it["reason"]
    final_obj = float(objective_fn(x, obs, reg_f, reg_b, link))
    t_done = time.perf_counter()
    p = _expand(x, lay)
    draws = {n: np.asarray(getattr(p, n), np.float32)[None, None]
             for n in ("mu", "bu", "bi", "U", "V")}
    for n, v in _theta_of(x, lay).items():
        if n in lik.theta_names:
            fitted = "cut_u" in x or (theta_sites is not None and n in theta_sites.names)
            draws[n] = np.asarray(v if fitted else theta0[n], np.float32)[None, None]
    for n, v in _macau_draws(_mac_of(x, lay), lay, 1.0, float(spec.reg_factors),
                             float(spec.reg_bias), float(opts["reg_beta"])).items():
        draws[n] = np.asarray(v)[None, None]
    stats = {"objective": np.array([[final_obj]]),
             "objective_trace": np.asarray(trace)[None, None],
             "n_iter": np.array([[n_iter]], np.int64),
             "converged": np.array([[converged]]),
             "train_rmse": np.array([[float(rmse_fn(x, obs))]])}
    attrs = {"seed": int(seed), "solver": solver, "engine": "jax",
             "options": {k: v for k, v in opts.items()}, "iterations": int(n_iter),
             "converged": bool(converged), "stop_reason": reason, "objective": final_obj,
             "objective_initial": float(trace[0]),
             "timings": {"compile_s": compile_s, "iterate_s": t_done - t_iter,
                         "total_s": time.perf_counter() - t_start}}
    if val is not None:
        attrs["validation"] = {"best_rmse": float(best_val),
                               "best_iteration": int(np.argmin(val_trace)) + 1}
    if macau:
        attrs["macau"] = _macau_attrs(macau, opts)
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "map", stats, None, attrs, aligned if macau else None)
