r"""Gaussian observations (explicit ratings on a continuous scale).

.. math::

    y_{ui} \sim \mathcal N(\eta_{ui}, \tau^{-1}),\qquad
    \tau \sim \mathrm{Gamma}(a_\tau, b_\tau)\ \ (\text{or fixed at } \tau_0)

with the noise settings of the :class:`~bayesmf.model.spec.ModelSpec` (``noise``,
``noise_precision``) and its hyperprior (``priors.noise_a``, ``priors.noise_b``).

* Gibbs: no augmentation, :math:`z = y`, :math:`w = \tau`; after the rows
  :math:`\tau \sim \mathrm{Gamma}(a_\tau + n/2,\ b_\tau + \tfrac12\sum(y-\eta)^2)`.
* MAP: the working response is :math:`y` with weight 1 (least squares; :math:`\tau` does
  not change the minimiser).
* Predictive: :math:`\frac1S\sum_s \mathcal N(m_s, v_s + \tau_s^{-1})` (a
  :class:`~bayesmf.predictive.GaussianMixture`; ``mean_is_linear``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bayesmf.model.likelihoods.base import METHODS_ALL, Likelihood

__all__ = ["Gaussian"]


@dataclass(frozen=True)
class Gaussian(Likelihood):
    """Gaussian likelihood with noise precision ``tau`` (learned or fixed by the spec)."""

    name = "gaussian"
    theta_names = ("tau",)
    #: every method, and posterior propagation over blocks (bayesmf.infer.propagation)
    #: ``nmf``: Frobenius NMF of the ratings (non-negative ``W H``, no mean or biases;
    #: :func:`bayesmf.infer.nmf.fit_nmf`) -- another model on the same likelihood
    methods = METHODS_ALL + ("propagation", "nmf")
    mean_is_linear = True
    gaussian_noise = True
    discrete = False
    augmented = False
    sse_sufficient = True

    def eta_offset(self, y):
        return float(np.mean(y)) if len(y) else 0.0

    def prior_scale(self, y):
        return float(np.std(y)) if len(y) else 1.0

    def init_theta(self, y, spec):
        return {"tau": np.asarray(spec.noise_precision, np.float32)}

    def log_prob(self, y, eta, theta):
        import jax.numpy as jnp

        tau = theta["tau"]
        r = y - eta
        return 0.5 * (jnp.log(tau) - math.log(2.0 * math.pi)) - 0.5 * tau * r * r

    def point_mean(self, eta, theta):
        return eta

    # Gibbs
    def gaussianize(self, key, y, eta, theta):
        return y, theta["tau"]

    def update_theta(self, key, y, eta, theta, spec):
        from bayesmf.model.reduce import count, total

        e = y - eta
        return self.update_theta_sse(key, count(y.shape[0]), total(e * e, long=True), theta,
                                     spec, y.dtype)

    def update_theta_sse(self, key, n, sse, theta, spec, dtype, y=None):
        r""":meth:`update_theta` from ``n`` and :math:`\mathrm{SSE}=\sum(y-\eta)^2`."""
        import jax.numpy as jnp

        from bayesmf.model.random import gamma_draw

        tau = theta["tau"]
        if spec.noise == "learned":
            pri = spec.priors
            tau = gamma_draw(key, pri.noise_a + n / 2, pri.noise_b + 0.5 * sse, dtype)
        info = {"train_rmse": jnp.sqrt(sse / n),
                "log_likelihood": 0.5 * n * (jnp.log(tau) - math.log(2 * math.pi))
                - 0.5 * tau * sse}
        return {"tau": tau}, info

    # MAP
    def working(self, y, eta, theta):
        return y, 1.0

    # PPLs
    def numpyro_theta(self, spec):
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist

        if spec.noise == "learned":
            return {"tau": numpyro.sample("tau", dist.Gamma(spec.priors.noise_a,
                                                            spec.priors.noise_b))}
        return {"tau": jnp.asarray(spec.noise_precision, jnp.float32)}

    def numpyro_obs(self, eta, theta, y):
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist

        numpyro.sample("r", dist.Normal(eta, 1.0 / jnp.sqrt(theta["tau"])), obs=y)

    def pymc_theta(self, spec):
        import pymc as pm

        if spec.noise == "learned":
            return {"tau": pm.Gamma("tau", alpha=spec.priors.noise_a, beta=spec.priors.noise_b)}
        return {"tau": float(spec.noise_precision)}

    def pymc_obs(self, eta, theta, y, **kwargs):
        import pymc as pm

        return pm.Normal("r", mu=eta, tau=theta["tau"], observed=y, **kwargs)

    # predictive
    def predictive(self, m, v, theta):
        from bayesmf.predictive import GaussianMixture

        tau = np.asarray(theta["tau"], np.float64)
        nv = (1.0 / tau).reshape((-1,) + (1,) * (np.ndim(m) - 1))
        return GaussianMixture(m, np.sqrt(v + nv), param_var=v)

    def noise_var(self, theta):
        """Per-draw observation-noise variance ``1/tau`` (shape ``(S,)``)."""
        return 1.0 / np.asarray(theta["tau"], np.float64)

    def prior_simulate(self, rng, eta, theta):
        return eta + rng.standard_normal(np.shape(eta)) / np.sqrt(float(theta["tau"]))

    def theta_prior_draw(self, rng, spec, y_hint=None):
        if spec.noise == "learned":
            return {"tau": np.float32(rng.gamma(spec.priors.noise_a, 1 / spec.priors.noise_b))}
        return {"tau": np.float32(spec.noise_precision)}
