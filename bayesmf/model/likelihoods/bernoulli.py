r"""Binary observations (thumbs up/down, clicks, any 0/1 column; ratings binarised at a
threshold): Bernoulli with a probit or a logit link.

.. math::

    y_{ui} \in \{0, 1\},\qquad P(y_{ui} = 1 \mid \eta_{ui}) = g(\eta_{ui}),\qquad
    g = \Phi \ (\text{probit}) \ \text{ or }\ \sigma(x) = 1/(1+e^{-x})\ (\text{logit})

No likelihood parameter (the scale of :math:`\eta` is fixed by the link).

**Gibbs augmentation** (``gaussianize``):

* probit (Albert & Chib 1993): :math:`z = \eta + \varepsilon`, :math:`\varepsilon\sim\mathcal
  N(0,1)`, :math:`y = 1[z > 0]`; given :math:`y` and :math:`\eta`, :math:`z` is
  :math:`\mathcal N(\eta, 1)` truncated to :math:`(0,\infty)` when :math:`y=1` and to
  :math:`(-\infty, 0]` when :math:`y=0`; the rows then see Gaussian pseudo-data :math:`z`
  with weight :math:`w = 1`.
* logit (Polson, Scott & Windle 2013): with :math:`\kappa = y - \tfrac12` and
  :math:`\omega\sim\mathrm{PG}(1, \eta)`,
  :math:`p(y\mid\eta) \propto e^{\kappa\eta}\,\mathbb E_\omega[e^{-\omega\eta^2/2}]`, so
  given :math:`\omega` the likelihood of :math:`\eta` is that of the Gaussian observation
  :math:`z = \kappa/\omega \sim \mathcal N(\eta, 1/\omega)`: :math:`w = \omega` per
  observation (the weighted row solver).

**MAP** by IRLS (``working``): :math:`\ell = -\log p(y\mid\eta)`; logit
:math:`\ell' = \sigma(\eta) - y`, :math:`\ell'' = \sigma(\eta)(1-\sigma(\eta))`; probit with
:math:`s = 2y-1`, :math:`x = s\eta`, :math:`\lambda(x) = \varphi(x)/\Phi(x)`:
:math:`\ell' = -s\lambda(x)`, :math:`\ell'' = \lambda(x)(x + \lambda(x))`.

**Predictive**: a :class:`~bayesmf.predictive.BernoulliMixture` of the per-draw
probabilities. For a known pair :math:`p_s = g(m_s)`; with extra Gaussian variance
:math:`v_s` of :math:`\eta` (population fallback of an unknown id) the probit integral is
exact, :math:`p_s = \Phi(m_s/\sqrt{1+v_s})`, and the logit uses the probit approximation
:math:`p_s \approx \sigma(m_s/\sqrt{1+\pi v_s/8})` (MacKay 1992). Ranking by
:math:`E[P(y=1)]` is not ranking by the mean of :math:`\eta` (``mean_is_linear=False``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bayesmf.errors import DataError, SpecError
from bayesmf.model.likelihoods.base import Likelihood
from bayesmf.predictive.links import check_link_map, map_logit, moderated_logit, sigmoid

__all__ = ["BernoulliProbit", "BernoulliLogit"]


def _check_binary(y, name, training):
    y = np.asarray(y, np.float64)
    bad = (y != 0) & (y != 1)
    if bad.any():
        vals = np.unique(y[bad])[:5].tolist()
        raise DataError(
            f"likelihood {name!r} models 0/1 values, got {int(bad.sum())} other value(s) "
            f"such as {vals}; binarise the data first (e.g. "
            "bayesmf.data.binarize(ratings, threshold=4): rating >= 4 -> 1) or choose "
            "likelihood='gaussian' or 'ordinal' for star ratings")
    if training and len(y) and (y.min() == y.max()):
        raise DataError(f"likelihood {name!r}: the training values are all {int(y[0])}; "
                        "a binary model needs both 0s and 1s (for positives-only implicit "
                        "data, sample negatives first)")


@dataclass(frozen=True)
class _Bernoulli(Likelihood):
    discrete = True
    mean_is_linear = False
    augmented = True
    latent_scale_fixed = True
    sampled_negatives = True
    #: ``prob`` ranks by :math:`P(y \ge 1) = P(y = 1)`, the predictive mean
    relevance_threshold = 1.0

    def check_values(self, y, training=False):
        _check_binary(y, self.name, training)

    def value_range(self):
        return 0.0, 1.0

    def prior_simulate(self, rng, eta, theta):
        return (rng.uniform(size=np.shape(eta)) < self._p_np(np.asarray(eta))).astype(np.float64)

    def predictive(self, m, v, theta):
        from bayesmf.predictive import BernoulliMixture

        mix = BernoulliMixture(self._p_np(np.asarray(m, np.float64),
                                          np.asarray(v, np.float64)))
        if np.any(np.asarray(v) > 0):  # unknown ids: their spread of eta, on first use
            mix.extra_param_var = lambda: self.fallback_param_var(m, v, theta)
        return mix

    def pymc_obs(self, eta, theta, y, **kwargs):
        import pymc as pm

        return pm.Bernoulli("r", logit_p=eta, observed=y, **kwargs) if self.name.endswith(
            "logit") else pm.Bernoulli("r", p=self._pymc_p(eta), observed=y, **kwargs)


@dataclass(frozen=True)
class BernoulliProbit(_Bernoulli):
    """Bernoulli with the probit link :math:`P(y=1) = \\Phi(\\eta)` (Albert–Chib Gibbs)."""

    name = "bernoulli-probit"
    row_mh_default = True  # the truncated-normal augmentation alone mixes slowly

    def eta_offset(self, y):
        from scipy.special import ndtri

        p = float(np.clip(np.mean(y), 1e-3, 1 - 1e-3)) if len(y) else 0.5
        return float(ndtri(p))

    def log_prob(self, y, eta, theta):
        from jax.scipy.special import log_ndtr

        return y * log_ndtr(eta) + (1.0 - y) * log_ndtr(-eta)

    def point_mean(self, eta, theta):
        from jax.scipy.special import ndtr

        return ndtr(eta)

    def gaussianize(self, key, y, eta, theta):
        import jax.numpy as jnp

        from bayesmf.model.augment import truncated_normal

        inf = jnp.asarray(jnp.inf, eta.dtype)
        pos = y > 0.5
        lo = jnp.where(pos, 0.0, -inf).astype(eta.dtype)
        hi = jnp.where(pos, inf, 0.0).astype(eta.dtype)
        return truncated_normal(key, eta, lo, hi), jnp.ones((), eta.dtype)

    def scale_fgh(self, y, eta, theta, x, spec):
        r"""Analytic: :math:`y=1` is the interval :math:`(-\eta, \infty)` of the unit latent
        noise, :math:`y=0` is :math:`(-\infty, -\eta)`; both bounds scale with
        :math:`e^x` (:func:`~bayesmf.model.likelihoods.ordinal.interval_scale_fgh`)."""
        import jax.numpy as jnp

        from bayesmf.model.likelihoods.ordinal import interval_scale_fgh

        inf = jnp.asarray(jnp.inf, eta.dtype)
        pos = y > 0.5
        return interval_scale_fgh(jnp.where(pos, -eta, -inf), jnp.where(pos, inf, -eta), x)

    def working(self, y, eta, theta):
        import jax.numpy as jnp
        from jax.scipy.special import log_ndtr

        s = 2.0 * y - 1.0
        x = s * eta
        lam = jnp.exp(-0.5 * x * x - 0.5 * math.log(2 * math.pi) - log_ndtr(x))
        w = jnp.clip(lam * (x + lam), 1e-6, 1.0)
        return eta + s * lam / w, w

    def _p_np(self, m, v=None):
        from scipy.special import ndtr

        return ndtr(m if v is None else m / np.sqrt(1.0 + v))

    def numpyro_obs(self, eta, theta, y):
        import numpyro
        import numpyro.distributions as dist
        from jax.scipy.special import ndtr

        if y is None:
            numpyro.sample("r", dist.Bernoulli(probs=ndtr(eta)))
        else:
            numpyro.factor("r", self.log_prob(y, eta, theta))

    def _pymc_p(self, eta):
        import pytensor.tensor as pt

        return pt.clip(0.5 * pt.erfc(-eta / np.sqrt(2.0)), 1e-12, 1 - 1e-12)


@dataclass(frozen=True)
class BernoulliLogit(_Bernoulli):
    r"""Bernoulli with the logit link :math:`P(y=1) = \sigma(\eta)` (Pólya-Gamma Gibbs).

    Parameters
    ----------
    recalibration : tuple, optional
        ``()`` (default): the predictive is the model's, :math:`p_s = \sigma(\tilde\eta_s)`.
        ``(method, a, b, c)``: a monotone map of the logit fitted on held-out data
        (:mod:`bayesmf.predictive.links`; :meth:`bayesmf.BayesMF.recalibrate`,
        :meth:`bayesmf.evaluate.Recalibration.attach`) applied inside the posterior
        average, :math:`p_s = \sigma(t(\tilde\eta_s))`, so every consumer of the
        predictive (``predict``, the ``mean``/``prob``/``upper``/``thompson`` strategies,
        the metrics) sees the recalibrated P(y=1); per-draw rankings are unchanged. It
        changes prediction only: the likelihood of the data (``log_prob``, the
        augmentation, the log-likelihood draws) stays the logit's, and a recalibrated
        likelihood cannot be fitted (fit with ``"bernoulli-logit"``, then recalibrate).
    """

    name = "bernoulli-logit"
    recalibration: tuple = ()

    def __post_init__(self):
        r = self.recalibration
        if r is None or (isinstance(r, (tuple, list)) and len(r) == 0):
            object.__setattr__(self, "recalibration", ())
            return
        if not isinstance(r, (tuple, list)) or len(r) != 4:
            raise SpecError(f"recalibration must be () or (method, a, b, c), got {r!r}")
        object.__setattr__(self, "recalibration", check_link_map(*r))

    def fit_data(self, y):
        if self.recalibration:
            raise SpecError("a recalibrated bernoulli-logit likelihood is for prediction "
                            "only: fit with likelihood='bernoulli-logit', then recalibrate "
                            "(BayesMF.recalibrate)")
        return super().fit_data(y)

    def to_dict(self):
        d = super().to_dict()
        if not self.recalibration:  # files of models without a map are unchanged
            d.pop("recalibration")
        return d

    def describe(self):
        r = self.recalibration
        return self.name if not r else (f"{self.name} (recalibrated: {r[0]} a={r[1]:.4g} "
                                         f"b={r[2]:.4g} c={r[3]:.4g})")

    def predictive(self, m, v, theta):
        from bayesmf.predictive import BernoulliMixture

        m = np.asarray(m, np.float64)
        if not self.recalibration:
            mix = BernoulliMixture(self._p_np(m, np.asarray(v, np.float64)))
        else:
            z = moderated_logit(m, np.asarray(v, np.float64))
            mix = BernoulliMixture(sigmoid(map_logit(z, *self.recalibration)))
        if np.any(np.asarray(v) > 0):  # unknown ids: their spread of eta, on first use
            mix.extra_param_var = lambda: self.fallback_param_var(m, v, theta)
        return mix

    def eta_offset(self, y):
        p = float(np.clip(np.mean(y), 1e-3, 1 - 1e-3)) if len(y) else 0.5
        return float(np.log(p / (1 - p)))

    def log_prob(self, y, eta, theta):
        import jax

        return -jax.nn.softplus(-eta) * y - jax.nn.softplus(eta) * (1.0 - y)

    def point_mean(self, eta, theta):
        import jax

        return jax.nn.sigmoid(eta)

    def gaussianize(self, key, y, eta, theta):
        from bayesmf.model.augment import polya_gamma

        omega = polya_gamma(key, eta)
        return (y - 0.5) / omega, omega

    def scale_fgh(self, y, eta, theta, x, spec):
        r"""Analytic: with :math:`t = e^x\eta`, :math:`f = \sum yt - \log(1+e^t)`,
        :math:`f' = \sum t(y - \sigma(t))`, :math:`f'' = f' - \sum t^2\sigma(t)(1-\sigma(t))`."""
        import jax
        import jax.numpy as jnp

        from bayesmf.model.reduce import reduce

        t = jnp.exp(x) * eta
        p = jax.nn.sigmoid(t)
        f, f1, f2 = reduce((jnp.sum(y * t - jax.nn.softplus(t)), jnp.sum(t * (y - p)),
                            jnp.sum(t * t * p * (1.0 - p))))
        return f, f1, f1 - f2

    def working(self, y, eta, theta):
        import jax
        import jax.numpy as jnp

        p = jax.nn.sigmoid(eta)
        w = jnp.maximum(p * (1.0 - p), 1e-6)
        return eta - (p - y) / w, w

    def _p_np(self, m, v=None):
        from scipy.special import expit

        return expit(moderated_logit(m, v))

    def numpyro_obs(self, eta, theta, y):
        import numpyro
        import numpyro.distributions as dist

        numpyro.sample("r", dist.Bernoulli(logits=eta), obs=y)
