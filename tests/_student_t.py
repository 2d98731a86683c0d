r"""A Student-t observation family written from outside the package, as a user would
(tests/test_custom_likelihood.py): :math:`y \sim t_\nu(\eta, \tau^{-1/2})` with fixed
:math:`\nu`, :math:`\tau\sim\mathrm{Gamma}(a, b)`. Gibbs by the scale mixture of normals:
:math:`\lambda_j\mid y,\eta,\tau\sim\mathrm{Gamma}((\nu+1)/2, (\nu+\tau r_j^2)/2)`,
pseudo-data :math:`z = y`, :math:`w = \tau\lambda_j`; :math:`\tau\mid\lambda\sim
\mathrm{Gamma}(a + n/2, b + \sum\lambda_j r_j^2/2)`. Its predictive is a t mixture."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.special import logsumexp

from bayesmf.model.likelihoods import Gaussian
from bayesmf.model.likelihoods.base import Likelihood
from bayesmf.predictive.base import Mixture, check_q, draw_index, pick_components


class StudentTMixture(Mixture):
    r""":math:`\frac1S\sum_s t_\nu(m_s, sc_s)`."""

    discrete = False
    mean_is_linear = True

    def __init__(self, m, sc, nu, param_var=None):
        self.m = np.asarray(m, np.float64)
        self.sc = np.broadcast_to(np.asarray(sc, np.float64), self.m.shape)
        self.nu = float(nu)
        self._pv = None if param_var is None else np.broadcast_to(
            np.asarray(param_var, np.float64), self.m.shape)

    n_components = property(lambda self: self.m.shape[0])
    shape = property(lambda self: self.m.shape[1:])

    def take(self, idx):
        idx = draw_index(idx, self.n_components)
        return StudentTMixture(self.m[idx], self.sc[idx], self.nu,
                               None if self._pv is None else self._pv[idx])

    def per_draw(self):
        return StudentTMixture(self.m[None], self.sc[None], self.nu,
                               None if self._pv is None else self._pv[None])

    def component_means(self):
        return self.m

    def mean(self):
        return self.m.mean(0)

    def var(self):
        return self.m.var(0) + (self.sc ** 2 * self.nu / (self.nu - 2.0)).mean(0)

    def param_var(self):
        pv = self.m.var(0)
        return pv if self._pv is None else pv + self._pv.mean(0)

    def cdf(self, x):
        return stats.t.cdf((np.asarray(x, np.float64) - self.m) / self.sc, self.nu).mean(0)

    def pit(self, y, rng=None):
        return self.cdf(y)

    def prob_at_least(self, t):
        return stats.t.sf((np.asarray(t, np.float64) - self.m) / self.sc, self.nu).mean(0)

    def logpdf(self, y):
        z = (np.asarray(y, np.float64) - self.m) / self.sc
        lp = stats.t.logpdf(z, self.nu) - np.log(self.sc)
        return logsumexp(lp, axis=0) - np.log(self.n_components)

    def quantile(self, q, tol=1e-10, max_iter=200):
        q = check_q(q)
        comp = self.m + self.sc * stats.t.ppf(q, self.nu)
        lo, hi = comp.min(0), comp.max(0)
        for _ in range(max_iter):  # bisection on the mixture cdf
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid) < q
            lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
            if np.all(hi - lo < tol * (1 + np.abs(mid))):
                break
        return 0.5 * (lo + hi)

    def crps(self, y, max_draws=100):
        rng = np.random.default_rng(0)
        a, b = self.sample(rng, 400), self.sample(rng, 400)
        return np.abs(a - np.asarray(y, np.float64)).mean(0) - 0.5 * np.abs(a - b).mean(0)

    def sample(self, rng, n_draws=None):
        if n_draws is None:
            return self.m + self.sc * rng.standard_t(self.nu, self.m.shape)
        pick = pick_components(rng, self.n_components, n_draws)
        return self.m[pick] + self.sc[pick] * rng.standard_t(self.nu,
                                                               (len(pick),) + self.shape)

    def expect(self, fn, n_nodes=20):
        return np.asarray(fn(self.sample(np.random.default_rng(0), 2000)), np.float64).mean(0)


@dataclass(frozen=True)
class StudentT(Likelihood):
    """Student-t observations, fixed degrees of freedom ``nu``, learned precision tau."""

    nu: float = 4.0

    name = "test-student-t"
    theta_names = ("tau",)
    mean_is_linear = True   # E[y | eta] = eta: the mean strategy is one GEMM
    augmented = True        # Gibbs needs eta to draw lambda

    # the data scale and the start of tau as the Gaussian family's
    eta_offset = Gaussian.eta_offset
    prior_scale = Gaussian.prior_scale
    init_theta = Gaussian.init_theta

    def log_prob(self, y, eta, theta):
        import jax.numpy as jnp

        nu, r = self.nu, y - eta
        c = math.lgamma((nu + 1) / 2) - math.lgamma(nu / 2) - 0.5 * math.log(nu * math.pi)
        return c + 0.5 * jnp.log(theta["tau"]) - 0.5 * (nu + 1) * jnp.log1p(
            theta["tau"] * r * r / nu)

    def point_mean(self, eta, theta):
        return eta

    def _lam(self, key, y, eta, tau):
        import jax
        import jax.numpy as jnp

        r = y - eta
        a = jnp.asarray(0.5 * (self.nu + 1), y.dtype)
        return jax.random.gamma(key, a, y.shape, y.dtype) / (0.5 * (self.nu + tau * r * r))

    def gaussianize(self, key, y, eta, theta):
        return y, theta["tau"] * self._lam(key, y, eta, theta["tau"])

    def update_theta(self, key, y, eta, theta, spec):
        import jax

        from bayesmf.model.random import gamma_draw
        from bayesmf.model.reduce import count, total

        k1, k2 = jax.random.split(key)
        lam = self._lam(k1, y, eta, theta["tau"])
        r = y - eta
        pri = spec.priors
        tau = gamma_draw(k2, pri.noise_a + count(y.shape[0]) / 2,
                         pri.noise_b + 0.5 * total(lam * r * r, long=True), y.dtype)
        th = {"tau": tau}
        return th, self._info(y, eta, th, self.log_prob(y, eta, th))

    def working(self, y, eta, theta):
        tau, r = theta["tau"], y - eta
        return y, tau * (self.nu + 1) / (self.nu + tau * r * r)

    def numpyro_theta(self, spec):
        import numpyro
        import numpyro.distributions as dist

        return {"tau": numpyro.sample("tau", dist.Gamma(spec.priors.noise_a,
                                                        spec.priors.noise_b))}

    def numpyro_obs(self, eta, theta, y):
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist

        numpyro.sample("r", dist.StudentT(self.nu, eta, 1.0 / jnp.sqrt(theta["tau"])), obs=y)

    def predictive(self, m, v, theta):
        tau = np.asarray(theta["tau"], np.float64).reshape((-1,) + (1,) * (np.ndim(m) - 1))
        return StudentTMixture(m, np.sqrt(v + 1.0 / tau), self.nu, param_var=v)

    def prior_simulate(self, rng, eta, theta):
        return eta + rng.standard_t(self.nu, np.shape(eta)) / np.sqrt(float(theta["tau"]))

    def theta_prior_draw(self, rng, spec, y_hint=None):
        return {"tau": np.float32(rng.gamma(spec.priors.noise_a, 1 / spec.priors.noise_b))}


def student_t_data(n_users=30, n_items=20, density=0.5, seed=0, nu=3.0):
    """Small planted Student-t ratings (a Ratings)."""
    from bayesmf.data.ratings import Ratings

    rng = np.random.default_rng(seed)
    U, V = rng.normal(size=(n_users, 2)), rng.normal(size=(n_items, 2))
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    mask[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    u, i = np.nonzero(mask)
    y = 3.0 + 0.6 * np.sum(U[u] * V[i], 1) + 0.3 * rng.standard_t(nu, len(u))
    return Ratings.from_arrays(np.array([f"u{j}" for j in u]), i + 100, y)
