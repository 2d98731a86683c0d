r"""Factor priors as objects: the hierarchical prior of the rows of ``U`` (and of ``V``).

Both families share the hyperparameters of :class:`~bayesmf.model.spec.BayesPriors`
(:math:`\beta_0, w_0, \nu_0`) and the row prior :math:`F_r \sim \mathcal N(\mu_F,
\Lambda_F^{-1})`, :math:`\mu_F \mid \Lambda_F \sim \mathcal N(0, (\beta_0\Lambda_F)^{-1})`:

* :class:`NormalWishart` (``"normal-wishart"``, BPMF, Salakhutdinov & Mnih 2008):
  :math:`\Lambda_F \sim \mathcal W(w_0 I, \nu_0)`, a full precision matrix (correlated
  factor dimensions); :math:`\nu_0 = k` by default.
* :class:`NormalGamma` (``"normal-gamma"``, the per-dimension prior of libFM / myFM):
  :math:`\Lambda_F = \mathrm{diag}(\lambda_j)`, :math:`\lambda_j \sim \mathrm{Gamma}(\nu_0/2,
  \text{rate } 1/(2w_0))` independently -- the marginal law of a diagonal entry of the
  Wishart above, without its correlations; :math:`\nu_0 = 1` by default (myFM's
  :math:`\mathrm{Gamma}(1/2, 1/2)` at :math:`w_0 = 1`). Gibbs conditional per dimension
  :math:`j` from the :math:`n` rows (:math:`\bar F_j`, :math:`S_j = \sum_r (F_{rj} -
  \bar F_j)^2`): :math:`\lambda_j \sim \mathrm{Gamma}(\nu_0/2 + n/2,\ 1/(2w_0) +
  \tfrac12(S_j + \beta_0 n \bar F_j^2/(\beta_0 + n)))`,
  :math:`\mu_j \mid \lambda_j \sim \mathcal N(n\bar F_j/(\beta_0+n), 1/((\beta_0+n)\lambda_j))`.

Because the diagonal prior is the marginal of the Wishart's diagonal with the same
:math:`(w_0, \nu_0)`, the group moves of the Gibbs sampler (shift, scale, latent scale)
have the same form for both: they only involve :math:`\beta_0\Lambda` and
:math:`\operatorname{tr}\Lambda / w_0` (see :mod:`bayesmf.infer.gibbs`).

**Macau** (side features, :mod:`bayesmf.infer.gibbs`): the rows have prior mean
:math:`\mu_F + \beta^\top x_r` and the link matrix the coupled prior
:math:`\beta_f \sim \mathcal N(0, (\lambda_\beta\Lambda_F)^{-1})`, so the hyper step
takes the residual rows :math:`F_r - \beta^\top x_r`, :math:`\nu_0 + F` (``F``
features) in place of :math:`\nu_0`, and ``extra`` :math:`= \lambda_\beta\beta^\top\beta`
added to :math:`W_N^{-1}` (Normal-Gamma: half its diagonal added to the rates):
:math:`p(\Lambda\mid\cdot) \propto p(\Lambda)\prod_r\mathcal N(\cdot)
\det\Lambda^{F/2}\exp(-\tfrac12\lambda_\beta\operatorname{tr}\Lambda\beta^\top\beta)`.

Each Gaussian prior gives the Gibbs hyper step (:meth:`FactorPrior.gamma_shapes` +
:meth:`hyper_step`: the sweep draws all its Gamma variates in one batched call), a numpy
prior draw (SBC) and its name in the NumPyro/PyMC models
(``factor_prior="wishart"|"diag"``).

* :class:`HierarchicalGamma` (``"gamma"``, Gopalan, Hofman & Blei 2015): **non-negative**
  factors for Poisson factorization,

  .. math::

      \theta_{uk}\sim\mathrm{Gamma}(a, \xi_u),\quad \xi_u\sim\mathrm{Gamma}(a', a'/b'),
      \qquad \beta_{ik}\sim\mathrm{Gamma}(c, \eta_i),\quad
      \eta_i\sim\mathrm{Gamma}(c', c'/d')

  (shape/rate; :math:`\xi_u` the user's activity, :math:`\eta_i` the item's
  popularity), and :math:`b_u, b_i\sim\mathrm{Gamma}(e, f)` for the optional
  non-negative biases. Its conditionals are conjugate only through the Poisson
  likelihood's auxiliary counts, so the Poisson family's own fitters
  (:mod:`bayesmf.infer.hpf`, :mod:`bayesmf.infer.hpf_numpyro`, fold-in) read its
  hyperparameters; it has none of the Gaussian hyper-step methods.

**Support.** :attr:`FactorPrior.support` is ``"real"`` for the Gaussian priors and
``"nonnegative"`` for the Gamma one; a likelihood names the support its fitters need
(:attr:`~bayesmf.model.likelihoods.base.Likelihood.factor_support`) and its default
prior (:attr:`~bayesmf.model.likelihoods.base.Likelihood.default_prior`), and
:class:`~bayesmf.model.spec.ModelSpec` refuses a pair that does not fit.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from bayesmf.errors import SpecError

__all__ = ["FactorPrior", "NormalWishart", "NormalGamma", "HierarchicalGamma",
           "FACTOR_PRIORS", "get_prior", "sample_normal_wishart"]


@dataclass(frozen=True)
class FactorPrior:
    """Base class: the Gaussian row priors' interface (module docs); the Gamma prior of
    non-negative factors overrides :attr:`support` and only describes itself."""

    name: ClassVar[str] = "base"
    #: the NumPyro / PyMC model's name of this prior
    ppl_name: ClassVar[str] = "wishart"
    #: the factors' support: ``"real"`` (Gaussian rows) or ``"nonnegative"`` (Gamma)
    support: ClassVar[str] = "real"

    def default_nu0(self, k: int) -> float:
        return float(k)

    def nu0(self, spec) -> float:
        k = spec.rank
        nu0 = self.default_nu0(k) if spec.priors.nu0 is None else float(spec.priors.nu0)
        self.check_nu0(nu0, k)
        return nu0

    def check_nu0(self, nu0: float, k: int) -> None:
        if nu0 <= 0:
            raise SpecError(f"priors.nu0 must be > 0, got {nu0}")

    def gamma_shapes(self, n: int, k: int, nu0: float) -> np.ndarray:
        """Shapes of the ``k`` standard Gamma variates the hyper step needs."""
        raise NotImplementedError

    def hyper_step(self, key, F, beta0: float, nu0: float, w0: float, g, extra=None):
        r"""``(mu_F, Lambda_F)`` from their conditional given the rows ``F (n, k)``; ``g``
        holds the ``k`` standard Gamma variates of :meth:`gamma_shapes`; ``extra (k, k)``
        an additional scatter term (Macau: :math:`\lambda_\beta\beta^\top\beta`, with
        ``nu0`` raised by the number of features; module docs)."""
        raise NotImplementedError

    def prior_draw(self, rng, k: int, nu0: float, w0: float) -> np.ndarray:
        """One :math:`\\Lambda` from the prior (numpy)."""
        raise NotImplementedError

    def to_dict(self) -> dict:
        """``{"name": ..., **fields}`` (:func:`get_prior` takes it back)."""
        return {"name": self.name, **asdict(self)}

    def describe(self) -> str:
        return self.name


@dataclass(frozen=True)
class NormalWishart(FactorPrior):
    """The Normal–Wishart of BPMF (module docs)."""

    name: ClassVar[str] = "normal-wishart"
    ppl_name: ClassVar[str] = "wishart"

    def check_nu0(self, nu0, k):
        if k and nu0 <= k - 1:
            raise SpecError(f"nu0 must exceed rank - 1 = {k - 1} for a proper Wishart, "
                            f"got {nu0}")

    def gamma_shapes(self, n, k, nu0):
        return (nu0 + n - np.arange(k)) / 2.0

    def hyper_step(self, key, F, beta0, nu0, w0, g, extra=None):
        return sample_normal_wishart(key, F, beta0, nu0, w0, chi2=2.0 * g, extra=extra)

    def prior_draw(self, rng, k, nu0, w0):
        A = np.zeros((k, k))
        r, c = np.tril_indices(k, -1)
        A[r, c] = rng.standard_normal(len(r))
        A[np.diag_indices(k)] = np.sqrt(rng.chisquare(nu0 - np.arange(k)))
        return w0 * A @ A.T


@dataclass(frozen=True)
class NormalGamma(FactorPrior):
    """Independent Normal–Gamma per factor dimension (module docs)."""

    name: ClassVar[str] = "normal-gamma"
    ppl_name: ClassVar[str] = "diag"

    def default_nu0(self, k):
        return 1.0

    def gamma_shapes(self, n, k, nu0):
        return np.full(k, nu0 / 2.0 + n / 2.0)

    def hyper_step(self, key, F, beta0, nu0, w0, g, extra=None):
        import jax
        import jax.numpy as jnp

        from bayesmf.model.reduce import count, total

        k = F.shape[1]
        n = count(F.shape[0])
        dt = F.dtype
        Fbar = total(F, axis=0) / n
        S = total((F - Fbar) ** 2, axis=0)
        bn = beta0 + n
        rate = 1.0 / (2.0 * w0) + 0.5 * (S + beta0 * n * Fbar * Fbar / bn)
        if extra is not None:
            rate = rate + 0.5 * jnp.diagonal(extra)
        lam = g / rate
        mu = n * Fbar / bn + jax.random.normal(key, (k,), dt) / jnp.sqrt(bn * lam)
        return mu, jnp.diag(lam)

    def prior_draw(self, rng, k, nu0, w0):
        return np.diag(rng.gamma(nu0 / 2.0, 2.0 * w0, k))


_GAMMA_FIELDS = ("a", "a_prime", "b_prime", "c", "c_prime", "d_prime", "bias_shape",
                 "bias_rate")


@dataclass(frozen=True)
class HierarchicalGamma(FactorPrior):
    r"""The hierarchical Gamma prior of Poisson factorization (module docs; the paper's
    defaults :math:`a = a' = c = c' = 0.3`, :math:`b' = d' = 1`).

    Parameters
    ----------
    a, a_prime, b_prime : float > 0
        :math:`\theta_{uk}\sim\mathrm{Gamma}(a, \xi_u)`,
        :math:`\xi_u\sim\mathrm{Gamma}(a', a'/b')` (so :math:`E\xi_u = b'`).
    c, c_prime, d_prime : float > 0
        :math:`\beta_{ik}\sim\mathrm{Gamma}(c, \eta_i)`,
        :math:`\eta_i\sim\mathrm{Gamma}(c', c'/d')`.
    bias_shape, bias_rate : float > 0
        :math:`b_u, b_i\sim\mathrm{Gamma}(e, f)`, the optional non-negative biases
        (used when the spec switches ``user_bias`` / ``item_bias`` on).
    """

    a: float = 0.3
    a_prime: float = 0.3
    b_prime: float = 1.0
    c: float = 0.3
    c_prime: float = 0.3
    d_prime: float = 1.0
    bias_shape: float = 0.3
    bias_rate: float = 0.3

    name: ClassVar[str] = "gamma"
    ppl_name: ClassVar[str] = "gamma"
    support: ClassVar[str] = "nonnegative"

    def __post_init__(self):
        for n in _GAMMA_FIELDS:
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(float(v)) or float(v) <= 0:
                raise SpecError(f"gamma prior: {n} must be a finite number > 0, got {v!r}")
            object.__setattr__(self, n, float(v))

    @property
    def hyper(self) -> tuple:
        """``(a, a', b', c, c', d')``."""
        return tuple(getattr(self, n) for n in _GAMMA_FIELDS[:6])

    def nu0(self, spec) -> float:
        raise SpecError("the gamma prior has no Wishart degrees of freedom (nu0)")

    def describe(self) -> str:
        return (f"gamma (HPF: a={self.a:g}, a'={self.a_prime:g}, b'={self.b_prime:g}, "
                f"c={self.c:g}, c'={self.c_prime:g}, d'={self.d_prime:g}; biases "
                f"Gamma({self.bias_shape:g}, {self.bias_rate:g}) when on)")


def sample_normal_wishart(key, F, beta0, nu0, w0, chi2=None, extra=None):
    r"""Draw :math:`(\mu, \Lambda)` from the Normal-Wishart conditional given rows ``F (n, k)``
    (prior :math:`\mu_0 = 0`, :math:`W_0 = w_0 I`); see step 1 of the module docs.

    Bartlett: with :math:`W_N^{-1} = CC^\top` and :math:`A` lower triangular,
    :math:`A_{jj}^2 \sim \chi^2_{\nu_N - j}`, :math:`A_{jl}\sim\mathcal N(0,1)` (:math:`j>l`),
    :math:`\Lambda = BB^\top` with :math:`B = C^{-\top}A`; then
    :math:`\mu = \mu_N + \beta_N^{-1/2} C A^{-\top}\varepsilon`.
    ``chi2`` optionally supplies the ``k`` draws :math:`\chi^2_{\nu_N - j}` (the sweep
    draws all its Gamma variates in one batched call); ``extra (k, k)`` is added to
    :math:`W_N^{-1}` (the Macau prior's :math:`\lambda_\beta\beta^\top\beta`, with
    ``nu0`` already raised by the number of features).
    """
    import jax
    import jax.numpy as jnp
    from jax import lax

    from bayesmf.model.random import standard_gamma
    from bayesmf.model.reduce import count, reduce, total

    k = F.shape[1]
    n = count(F.shape[0])  # global rows (bayesmf.model.reduce: sharded rows are summed)
    dt = F.dtype
    kw, kd, km = jax.random.split(key, 3)
    Fbar = total(F, axis=0) / n
    Fc = F - Fbar
    S = reduce(Fc.T @ Fc)
    beta_n = beta0 + n
    nu_n = nu0 + n
    mu_n = (n * Fbar) / beta_n
    Winv = jnp.eye(k, dtype=dt) / w0 + S + (beta0 * n / beta_n) * jnp.outer(Fbar, Fbar)
    if extra is not None:
        Winv = Winv + extra
    Winv = 0.5 * (Winv + Winv.T)
    C = jnp.linalg.cholesky(Winv)
    if chi2 is None:
        chi2 = 2.0 * standard_gamma(kd, (nu_n - jnp.arange(k, dtype=dt)) / 2.0, dt)
    diag = jnp.sqrt(chi2)
    A = jnp.tril(jax.random.normal(kw, (k, k), dt), -1) + jnp.diag(diag)
    B = lax.linalg.triangular_solve(C, A, left_side=True, lower=True, transpose_a=True)
    Lam = B @ B.T
    eps = jax.random.normal(km, (k,), dt)
    w = lax.linalg.triangular_solve(A, eps[:, None], left_side=True, lower=True,
                                    transpose_a=True)[:, 0]
    mu = mu_n + (C @ w) / jnp.sqrt(jnp.asarray(beta_n, dt))
    return mu, 0.5 * (Lam + Lam.T)


#: registry: name -> class
FACTOR_PRIORS = {c.name: c for c in (NormalWishart, NormalGamma, HierarchicalGamma)}
_ALIASES = {"wishart": "normal-wishart", "nw": "normal-wishart", "bpmf": "normal-wishart",
            "diag": "normal-gamma", "ng": "normal-gamma", "myfm": "normal-gamma",
            "hpf": "gamma"}


def get_prior(prior) -> FactorPrior:
    """A :class:`FactorPrior` from a name (``"normal-wishart"``, ``"normal-gamma"``,
    ``"gamma"``), a ``{"name": ..., **fields}`` dict (:meth:`FactorPrior.to_dict`) or an
    instance."""
    if isinstance(prior, FactorPrior):
        return prior
    fields = {}
    if isinstance(prior, dict):
        fields = dict(prior)
        prior = fields.pop("name", None)
    if not isinstance(prior, str):
        raise SpecError(f"prior must be a name or a FactorPrior, got {prior!r}")
    name = _ALIASES.get(prior.lower(), prior.lower())
    if name not in FACTOR_PRIORS:
        raise SpecError(f"unknown factor prior {prior!r}; choose one of {sorted(FACTOR_PRIORS)}")
    try:
        return FACTOR_PRIORS[name](**fields)
    except TypeError as e:
        raise SpecError(f"bad parameters for factor prior {name!r}: {e}") from None
