"""Factor priors as objects: the Normal-Gamma hyper step against its closed-form
conditional, scale-aware defaults, the spec round trip, and SBC of Gibbs with the
diagonal prior."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmf import sbc
from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import fitted_spec
from bayesmf.model.priors import NormalGamma, NormalWishart, get_prior
from bayesmf.model.random import standard_gamma
from bayesmf.model.spec import BayesPriors, ModelSpec


def test_normal_gamma_hyper_step_matches_its_conditional():
    rng = np.random.default_rng(0)
    F = rng.normal([0.5, -1.0, 0.0], [0.3, 1.0, 2.0], size=(40, 3)).astype(np.float32)
    beta0, nu0, w0 = 2.0, 1.0, 0.8
    prior = NormalGamma()
    shapes = prior.gamma_shapes(40, 3, nu0)

    @jax.jit
    def draw(key):
        k1, k2 = jax.random.split(key)
        g = standard_gamma(k1, jnp.asarray(shapes, jnp.float32))
        return prior.hyper_step(k2, jnp.asarray(F), beta0, nu0, w0, g)

    mus, lams = jax.vmap(draw)(jax.random.split(jax.random.PRNGKey(1), 20000))
    lam = np.asarray(jax.vmap(jnp.diag)(lams), np.float64)
    assert np.all(np.asarray(lams)[:, 0, 1] == 0)  # diagonal
    n, Fb = 40, F.mean(0).astype(np.float64)
    S = ((F - Fb) ** 2).sum(0)
    a_n = nu0 / 2 + n / 2
    b_n = 1 / (2 * w0) + 0.5 * (S + beta0 * n * Fb ** 2 / (beta0 + n))
    np.testing.assert_allclose(lam.mean(0), a_n / b_n, rtol=0.01)
    np.testing.assert_allclose(lam.var(0), a_n / b_n ** 2, rtol=0.05)
    mu = np.asarray(mus, np.float64)
    np.testing.assert_allclose(mu.mean(0), n * Fb / (beta0 + n), atol=0.01)
    # Var(mu) = E[1 / ((beta0 + n) lambda)] = b_n / ((beta0 + n) (a_n - 1))
    np.testing.assert_allclose(mu.var(0), b_n / ((beta0 + n) * (a_n - 1)), rtol=0.05)


def test_prior_registry_and_defaults():
    assert isinstance(get_prior("diag"), NormalGamma)
    assert isinstance(get_prior("normal-wishart"), NormalWishart)
    with pytest.raises(SpecError, match="unknown factor prior"):
        ModelSpec(prior="laplace")
    spec = ModelSpec(rank=5, prior="normal-gamma")
    assert spec.prior.nu0(spec) == 1.0 and ModelSpec(rank=5).prior.nu0(ModelSpec(rank=5)) == 5
    with pytest.raises(SpecError, match="nu0 must exceed"):
        ModelSpec(rank=5, priors=BayesPriors(nu0=2.0)).prior.nu0(
            ModelSpec(rank=5, priors=BayesPriors(nu0=2.0)))
    assert ModelSpec.from_dict(spec.to_dict()) == spec


def test_scale_aware_defaults_follow_the_data_scale():
    rng = np.random.default_rng(0)
    u, i = rng.integers(0, 30, 400), rng.integers(0, 20, 400)
    y = rng.normal(3.0, 1.0, 400)
    base = Ratings.from_arrays(u, i, y, duplicates="last")
    big = Ratings.from_arrays(u, i, 20 * y, duplicates="last")
    p1 = fitted_spec(base, ModelSpec(rank=2)).priors
    p20 = fitted_spec(big, ModelSpec(rank=2)).priors
    np.testing.assert_allclose(p20.w0, p1.w0 / 20, rtol=1e-9)
    np.testing.assert_allclose(p20.noise_b, p1.noise_b * 400, rtol=1e-9)
    np.testing.assert_allclose(p20.bias_b, p1.bias_b * 400, rtol=1e-9)
    # explicit values are kept, unit-noise likelihoods use scale 1
    assert fitted_spec(big, ModelSpec(rank=2, priors=BayesPriors(w0=3.0))).priors.w0 == 3.0
    binary = Ratings.from_arrays(u, i, (y > 3).astype(float), duplicates="last")
    pb = fitted_spec(binary, ModelSpec(rank=2, likelihood="bernoulli-probit")).priors
    assert pb.w0 == 1.0 and pb.bias_b == 1.0


def test_sbc_gibbs_normal_gamma_fast():
    """Fixed-seed SBC of Gibbs with the diagonal Normal-Gamma prior (Gaussian likelihood,
    rank 2, 100 replications): mu, tau, biases and pair means uniform; narrowed fails."""
    pri = BayesPriors(beta0=2.0, w0=1.0, nu0=3.0, bias_a=4.0, bias_b=2.0, noise_a=6.0,
                      noise_b=3.0, mu_mean=3.0, lambda_mu=1.0)
    spec = ModelSpec(rank=2, priors=pri, prior="normal-gamma")
    res = sbc.run_sbc(sbc.GibbsBatch(num_samples=100, num_warmup=50), spec, n_rep=120,
                      n_users=8, n_items=6, density=0.5, L=19, seed=5)
    assert res.passes(0.001), "\n" + res.table().to_string()
    assert not res.transformed(sbc.narrowed(0.5)).passes(0.001)


def test_estimator_params_round_trip_with_likelihood_and_prior():
    from bayesmf import BayesMF
    from bayesmf.testing.conformance import planted

    est = BayesMF(method="map", rank=2, likelihood="ordinal", prior="normal-gamma",
                  max_iter=30)
    p = est.get_params()
    assert p["likelihood"] == "ordinal" and p["prior"] == "normal-gamma" and p["max_iter"] == 30
    clone = BayesMF(**p)
    assert clone.get_params() == p
    assert est.set_params(likelihood="bernoulli-logit", max_iter=40) is est
    assert est.likelihood == "bernoulli-logit" and est.options["max_iter"] == 40
    spec = est.make_spec()
    assert spec.likelihood.name == "bernoulli-logit" and spec.prior.name == "normal-gamma"
    est.fit(planted("bernoulli-logit"))
    assert est.posterior_.likelihood.name == "bernoulli-logit"
    assert est.posterior_.attrs["estimator"]["likelihood"] == "bernoulli-logit"
    # scikit-learn's clone protocol: get_params(deep=...) and an unfitted copy
    assert est.get_params(deep=False) == est.get_params(deep=True)
    try:
        from sklearn.base import clone
    except ImportError:  # not a dependency: the protocol itself is checked above
        clone = None
    if clone is not None:
        c = clone(est)
        assert c.get_params() == est.get_params() and not hasattr(c, "posterior_")
