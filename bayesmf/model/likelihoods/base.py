r"""The :class:`Likelihood` protocol: one object per observation family.

Every family defines the observation model :math:`y_{ui} \sim p(y \mid \eta_{ui}, \theta)`
on the linear predictor :math:`\eta_{ui} = \mu + b_u + b_i + U_u^\top V_i`
(:mod:`bayesmf.model.linear`) and its likelihood parameters :math:`\theta` (the Gaussian
noise precision, the ordinal cutpoints, nothing for Bernoulli), and supplies every piece
that an inference method, evaluation or recommendation needs, so that none of them ever
branches on the family:

=======================  =================================================================
``log_prob``             pointwise :math:`\log p(y\mid\eta,\theta)` (jnp): NUTS/SVI (through
                         the PPL lines), the MAP objective, ArviZ ``log_likelihood``, SBC
``gaussianize``          the Gibbs augmentation: given :math:`\eta` draw (or set) a Gaussian
                         pseudo-observation :math:`z` with precision weight :math:`w` so that
                         :math:`z \mid \eta \sim \mathcal N(\eta, w^{-1})` given the
                         auxiliary variables, and the conjugate row solver serves all
                         families
``update_theta``         the Gibbs step of :math:`\theta` (after the rows), returning also
                         the per-sweep train statistics
``working``              MAP by iteratively reweighted least squares: the Newton working
                         response and weights of :math:`-\log p` at :math:`\eta`
``numpyro_*``/``pymc_*`` the observation line (and :math:`\theta`'s prior) of each PPL
``predictive``           the posterior predictive of new pairs as a
                         :class:`~bayesmf.predictive.Mixture`
=======================  =================================================================

Values on the data's own scale (stars, 0/1) are mapped once per fit to the *internal*
coding that the kernels use (:meth:`Likelihood.encode`: the identity except for the
ordinal family, whose internal value is the level index).

Likelihood objects are small frozen dataclasses; :meth:`to_dict`/:func:`from_dict` (in
:mod:`bayesmf.model.likelihoods`) round-trip them through the model file. A family that
learns something from the training values (the ordinal levels) returns a configured copy
from :meth:`fit_data`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import numpy as np

from bayesmf.errors import SpecError

__all__ = ["Likelihood", "METHODS_ALL"]

#: inference methods of :data:`bayesmf.infer.METHODS`
METHODS_ALL = ("map", "gibbs", "nuts", "svi", "pymc-nuts", "pymc-advi")


@dataclass(frozen=True)
class Likelihood:
    """Base class (see the module docs). Subclasses set the class attributes and
    implement the methods."""

    #: registry name (what ``--likelihood`` and the model file say)
    name = "base"
    #: draw names of the likelihood parameters in the Posterior (e.g. ``("tau",)``)
    theta_names: ClassVar[tuple] = ()
    #: ranking by the predictive mean equals ranking by the mean of eta (E[y] = eta: the
    #: mean strategy is one GEMM of the posterior-mean factors)
    mean_is_linear = False
    #: the predictive of one draw is Gaussian, ``N(eta, noise_var(theta))`` (the Gaussian
    #: and implicit families): scores, intervals of a point fit, the least-squares MAP and
    #: ArviZ's pointwise log-likelihood then take their closed forms. Every other family
    #: -- also one with ``mean_is_linear`` but other noise (e.g. Student-t) -- goes through
    #: :meth:`log_prob` and :meth:`predictive`
    gaussian_noise: ClassVar[bool] = False
    #: observations take values in a finite set
    discrete = False
    #: Gibbs needs eta to build the pseudo-observations (False: z = y, w = tau)
    augmented = True
    #: how fold-in draws a new row given the other side's draws
    #: (:mod:`bayesmf.recommend.foldin`): ``"gaussian"`` -- the conjugate Gaussian row
    #: (directly, or through the augmentation for ``augmented`` families); ``"gamma"`` --
    #: the Gamma rows of Poisson factorisation (auxiliary multinomial split)
    row_fold: ClassVar[str] = "gaussian"
    #: inference methods that support this family
    methods = METHODS_ALL
    #: the scale of eta is fixed by the likelihood (unit latent noise: probit, ordinal,
    #: logit): Gibbs adds the latent scale move (:func:`bayesmf.infer.gibbs.latent_scale_move`)
    latent_scale_fixed = False
    #: Gibbs adds the row-wise IWLS Metropolis-Hastings step by default (``row_mh="auto"``;
    #: :func:`bayesmf.infer.gibbs_steps.iwls_mh_rows`): the families whose augmentation
    #: alone mixes slowly enough that the step pays per second (the binary probit;
    #: ``benchmarks/results/augmented_mixing.md``; ordinal and logit take ``row_mh=True``)
    row_mh_default: ClassVar[bool] = False
    #: every pair of the matrix is an observation; the unobserved ones are the shared
    #: pseudo-observation of :meth:`background` (implicit feedback); the sweep adds the
    #: dense terms in closed form
    full_matrix = False
    #: :meth:`update_theta` needs the residuals only through their number and sum of
    #: squares (:meth:`update_theta_sse`): the Gibbs sweep then takes them from the rows'
    #: Grams (:func:`bayesmf.infer.gibbs_steps.rows_draw`, ``fit_stats``) instead of
    #: evaluating every observation's prediction
    sse_sufficient = False
    #: 0/1 data that implicit positives plus sampled negatives can be fitted as
    #: (``BayesMF.fit(interactions, negatives=...)``, :mod:`bayesmf.data.negatives`)
    sampled_negatives = False
    #: the estimator's default for ``global_mean``/``user_bias``/``item_bias``
    default_biases = True
    #: the factor prior a spec gets when it names none (:mod:`bayesmf.model.priors`)
    default_prior: ClassVar[str] = "normal-wishart"
    #: the support of the factors this family's fitters work with
    #: (:attr:`bayesmf.model.priors.FactorPrior.support`): ``"real"`` (Gaussian rows) or
    #: ``"nonnegative"`` (Gamma factors)
    factor_support: ClassVar[str] = "real"
    #: the default ``t`` of the ``prob`` strategy, :math:`P(y \ge t)` ("relevant"): 4 on a
    #: star scale (ratings 4 and 5 of MovieLens)
    relevance_threshold = 4.0
    #: the estimator's default ``(noise, noise_precision)`` (``noise="auto"``)
    default_noise = ("learned", 1.0)
    #: method name -> ``"module:function"`` of a family-specific fit function that the
    #: method's ``fit_<method>`` hands over to (:func:`bayesmf.infer.likelihood_fitter`)
    fitters: ClassVar[dict] = {}

    def noise_var(self, theta):
        """Per-draw variance of the Gaussian observation noise (``gaussian_noise``
        families only; ``theta`` as in the Posterior's draws, each ``(S, ...)``)."""
        raise SpecError(f"likelihood {self.name!r} has no Gaussian observation noise "
                        "(gaussian_noise=False): use Posterior.predictive(...) for its "
                        "predictive distribution")

    # ------------------------------------------------------------------ data
    def fit_data(self, y: np.ndarray) -> "Likelihood":
        """Validate training values (data scale) and return the configured likelihood."""
        self.check_values(y, training=True)
        return self

    def check_values(self, y: np.ndarray, training: bool = False) -> None:
        """Raise :class:`~bayesmf.errors.DataError` for values this family cannot model."""

    def encode(self, y: np.ndarray) -> np.ndarray:
        """Data-scale values -> internal coding (float array)."""
        return np.asarray(y, np.float64)

    def predictive_target(self, y: np.ndarray) -> tuple:
        """``(t, c)`` of data-scale values ``y``: the value ``t`` the posterior predictive
        (:meth:`predictive`) is a distribution of, and the factor ``c`` of the noise
        precision in a listed pair's likelihood term. The identity ``(y, 1)`` except for a
        family whose data are not on its predictive's scale (implicit feedback: the
        preference ``1`` of a listed pair, with confidence ``c``)."""
        y = np.asarray(y, np.float64)
        return y, np.ones_like(y)

    def eta_offset(self, y: np.ndarray) -> float:
        """A good starting value of :math:`\\mu` (also the centring offset of the PPL
        models) from the training values (data scale)."""
        return 0.0

    def prior_scale(self, y: np.ndarray) -> float:
        """The data scale of the scale-aware prior defaults
        (:meth:`~bayesmf.model.spec.BayesPriors.resolved`): 1 (a fixed latent scale)."""
        return 1.0

    def clip_range(self, scale) -> tuple:
        """``(lo, hi)`` that reported point predictions are clipped to, from the training
        :class:`~bayesmf.data.ratings.RatingScale` (default: its min and max)."""
        return float(scale.min), float(scale.max)

    def background(self, theta: dict):
        """``(y0, w0)`` of a :attr:`full_matrix` family: every unobserved pair is a
        Gaussian pseudo-observation ``y0`` with precision weight ``w0``; ``None`` for a
        family of the observed pairs only."""
        return None

    def init_theta(self, y: np.ndarray, spec) -> dict:
        """Initial :math:`\\theta` (numpy scalars/arrays, float32) from the training values."""
        return {}

    def check_method(self, method: str) -> None:
        if method not in self.methods:
            raise SpecError(
                f"method {method!r} does not support likelihood {self.name!r}; the "
                f"{self.name} likelihood runs with the methods {sorted(self.methods)} (see "
                f"bayesmf.model.likelihoods.SUPPORTED)")

    # ------------------------------------------------------------------ math (jnp)
    def log_prob(self, y, eta, theta: dict):
        """Pointwise :math:`\\log p(y \\mid \\eta, \\theta)` for internal ``y``."""
        raise NotImplementedError

    def point_mean(self, eta, theta: dict):
        """:math:`E[y \\mid \\eta, \\theta]` on the data scale (jnp or numpy)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ Gibbs
    def gaussianize(self, key, y, eta, theta: dict):
        """``(z, w)``: Gaussian pseudo-observations and their precision weights."""
        raise NotImplementedError

    def update_theta(self, key, y, eta, theta: dict, spec):
        """Gibbs step of :math:`\\theta` given the new :math:`\\eta`; returns
        ``(theta, info)`` with ``info = {"train_rmse", "log_likelihood"}``."""
        lp = self.log_prob(y, eta, theta)
        return theta, self._info(y, eta, theta, lp)

    def update_theta_sse(self, key, n, sse, theta: dict, spec, dtype, y=None):
        """:meth:`update_theta` from ``n`` residuals and their sum of squares (families with
        ``sse_sufficient``); ``y`` the observed values, for a family whose likelihood has a
        constant that depends on them (a :attr:`full_matrix` family: ``n`` counts all
        pairs and ``sse`` is weighted in units of the background weight)."""
        raise NotImplementedError(f"{type(self).__name__} needs the residuals themselves")

    def _info(self, y, eta, theta, lp):
        import jax.numpy as jnp

        from bayesmf.model.reduce import count, total

        e = self.decode_jnp(y) - self.point_mean(eta, theta)
        return {"train_rmse": jnp.sqrt(total(e * e, long=True) / count(e.shape[0])),
                "log_likelihood": total(lp, long=True)}

    def decode_jnp(self, y):
        """Internal values -> data scale (jnp)."""
        return y

    def scale_theta(self, theta: dict, s, spec) -> dict:
        r""":math:`\theta` under the scaling :math:`\eta \to s\eta` of the latent scale
        move (ordinal: cutpoints times ``s``)."""
        return theta

    def scale_log_prior(self, theta: dict, x, spec):
        r"""Log prior ratio plus log Jacobian of :math:`\theta \to` ``scale_theta(theta,
        e^x)`` in the coordinates its prior is defined on (jnp scalar)."""
        return 0.0

    def scale_fgh(self, y, eta, theta: dict, x, spec):
        r"""``(f, f', f'')`` in :math:`x` of :math:`\sum\log p(y\mid e^x\eta,
        \theta_{e^x}) +` :meth:`scale_log_prior` (the latent scale move). Default: JAX
        autodiff (several passes over the data); families override it analytically."""
        import jax
        import jax.numpy as jnp

        from bayesmf.model.reduce import total

        def f(xx):
            s = jnp.exp(xx)
            return (total(self.log_prob(y, s * eta, self.scale_theta(theta, s, spec)))
                    + self.scale_log_prior(theta, xx, spec))

        d1 = jax.grad(f)
        return f(x), d1(x), jax.grad(d1)(x)

    # ------------------------------------------------------------------ MAP
    def working(self, y, eta, theta: dict):
        """IRLS working response and weights ``(z, w)``: with
        :math:`\\ell(\\eta) = -\\log p(y\\mid\\eta)`, :math:`w = \\ell''(\\eta)` and
        :math:`z = \\eta - \\ell'(\\eta)/w`, so that the weighted least-squares step
        :math:`\\tfrac12\\sum w(z - \\eta')^2` is the Newton step of :math:`\\ell`."""
        raise NotImplementedError

    def map_theta(self, y, eta, theta: dict, spec) -> dict:
        """Improve :math:`\\theta` at fixed :math:`\\eta` (MAP); default: unchanged."""
        return theta

    # ------------------------------------------------------------------ PPLs
    def numpyro_theta(self, spec) -> dict:
        return {}

    def numpyro_obs(self, eta, theta: dict, y):
        raise NotImplementedError

    def pymc_theta(self, spec) -> dict:
        return {}

    def pymc_obs(self, eta, theta: dict, y, **kwargs):
        raise NotImplementedError

    # ------------------------------------------------------------------ predictive
    def predictive(self, m, v, theta: dict):
        """Posterior predictive mixture of new pairs from the per-draw linear predictor
        ``m (S, ...)``, its extra variance ``v (S, ...)`` (population fallback of
        unknown ids; 0 for known pairs) and the flat :math:`\\theta` draws ``(S, ...)``."""
        raise NotImplementedError

    def prior_simulate(self, rng: np.random.Generator, eta: np.ndarray, theta: dict):
        """Draw data-scale observations given eta and theta (numpy; SBC, checks)."""
        raise NotImplementedError

    def theta_prior_draw(self, rng: np.random.Generator, spec, y_hint=None) -> dict:
        """One draw of :math:`\\theta` from its prior (numpy)."""
        return {}

    # ------------------------------------------------------------------ serialisation
    def fallback_param_var(self, m, v, theta, n_nodes: int = 16):
        r"""``(S,) + shape`` or None: for the pairs with a population-fallback variance
        ``v > 0`` (an unknown id), :math:`\mathrm{Var}_{\eta\sim\mathcal N(m_s, v_s)}
        g(\eta)` of each draw's expected value :math:`g(\eta)` (P(y = 1), the expected
        level), by Gauss-Hermite quadrature (``n_nodes``); 0 elsewhere. A discrete
        family's predictive folds that spread of :math:`\eta` into each draw's
        distribution, where its component mean no longer shows it; added to the mixture's
        :meth:`~bayesmf.predictive.Mixture.param_var`, it keeps an unknown id's parameter
        uncertainty above a fitted one's, as the Gaussian family's is."""
        m = np.asarray(m, np.float64)
        v = np.broadcast_to(np.asarray(v, np.float64), m.shape)
        if m.ndim < 1 or not np.any(v > 0):
            return None
        S = m.shape[0]
        mf, vf = m.reshape(S, -1), v.reshape(S, -1)
        cols = np.flatnonzero((vf > 0).any(axis=0))
        x, w = np.polynomial.hermite.hermgauss(int(n_nodes))
        w = w / np.sqrt(np.pi)
        mc, sc = mf[:, cols], np.sqrt(2.0 * np.maximum(vf[:, cols], 0.0))
        g = np.stack([self.predictive(mc + sc * xj, np.zeros_like(mc), theta)
                      .component_means() for xj in x])  # (J, S, c)
        e1 = np.tensordot(w, g, axes=1)
        e2 = np.tensordot(w, g * g, axes=1)
        out = np.zeros_like(mf)
        out[:, cols] = np.maximum(e2 - e1 * e1, 0.0)
        return out.reshape(m.shape)

    def value_range(self) -> tuple[float, float] | None:
        """``(lowest, highest)`` value a discrete family's observations take, ``None`` for
        a continuous one (no threshold is constant there)."""
        return None

    def check_relevance_threshold(self, t: float) -> float:
        r"""``t`` if :math:`P(y \ge t)` can differ between pairs, else a
        :class:`~bayesmf.errors.SpecError`: a discrete family's :math:`P(y \ge t)` is 1
        for every pair when ``t`` is at or below its lowest value and 0 above its
        highest, so ranking by it would be ranking by item order."""
        rng = self.value_range()
        if rng is not None and not (rng[0] < t <= rng[1]):
            lo, hi = rng
            raise SpecError(f"relevance threshold {t:g} makes P(y >= t) the same for every "
                            f"pair: likelihood {self.name!r} takes values {lo:g}..{hi:g}; "
                            f"choose {lo:g} < t <= {hi:g} (default "
                            f"{self.relevance_threshold:g})")
        return t

    def to_dict(self) -> dict:
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}
        d["name"] = self.name
        return d

    def describe(self) -> str:
        return self.name
