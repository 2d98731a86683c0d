"""Per-likelihood tests against answers known in closed form: log densities against
scipy, exact augmentations (the pseudo-data marginalise back to the likelihood), IRLS
working responses equal to a Newton step, predictive distributions that sum to one, and
clear errors for data a family cannot model."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import expit, ndtr

from bayesmf.errors import DataError, SpecError
from bayesmf.model.likelihoods import (BernoulliLogit, BernoulliProbit, Gaussian, OrdinalProbit,
                                       get_likelihood, likelihood_from_dict)
from bayesmf.model.spec import ModelSpec

ETA = np.array([-3.0, -1.2, -0.3, 0.0, 0.4, 1.1, 2.5], np.float32)
CUT = np.array([-0.5, 0.3, 1.0, 2.2], np.float32)
ORD = OrdinalProbit(levels=(1.0, 2.0, 3.0, 4.0, 5.0))


def _lp(lik, y, eta, theta):
    return np.asarray(lik.log_prob(jnp.asarray(y, jnp.float32), jnp.asarray(eta), theta))


def test_log_prob_against_scipy():
    y = np.array([1, 0, 1, 1, 0, 0, 1], np.float32)
    np.testing.assert_allclose(_lp(Gaussian(), y, ETA, {"tau": 2.5}),
                               stats.norm.logpdf(y, ETA, 1 / np.sqrt(2.5)), rtol=1e-5)
    np.testing.assert_allclose(_lp(BernoulliProbit(), y, ETA, {}),
                               np.log(np.where(y == 1, ndtr(ETA), ndtr(-ETA))), rtol=1e-5)
    np.testing.assert_allclose(_lp(BernoulliLogit(), y, ETA, {}),
                               np.log(np.where(y == 1, expit(ETA), expit(-ETA))), rtol=1e-5)
    yo = np.array([0, 1, 2, 3, 4, 4, 0], np.float32)
    c = np.concatenate([[-np.inf], CUT, [np.inf]])
    want = np.log(ndtr(c[yo.astype(int) + 1] - ETA) - ndtr(c[yo.astype(int)] - ETA))
    np.testing.assert_allclose(_lp(ORD, yo, ETA, {"cutpoints": jnp.asarray(CUT)}), want,
                               rtol=1e-4)


def test_ordinal_log_prob_is_finite_far_in_the_tails():
    eta = jnp.asarray([-40.0, 40.0, -40.0, 40.0], jnp.float32)
    y = jnp.asarray([4, 0, 2, 2], jnp.float32)
    lp = _lp(ORD, y, eta, {"cutpoints": jnp.asarray(CUT)})
    assert np.all(np.isfinite(lp)) and np.all(lp < -100)
    g = jax.grad(lambda e: ORD.log_prob(y, e, {"cutpoints": jnp.asarray(CUT)}).sum())(eta)
    assert np.all(np.isfinite(np.asarray(g)))


def test_pymc_ordinal_term_equals_the_jax_one_with_finite_gradients():
    """The PyMC observation term (a CustomDist over pt_log_interval_prob) is the JAX
    log_prob, also far in the tails, and its gradient in eta is finite and equals finite
    differences there (pm.OrderedProbit's was NaN once eta - c_1 > 8: every NUTS draw
    divergent on real ratings)."""
    import pytensor
    import pytensor.tensor as pt

    from bayesmf.model.likelihoods.ordinal import pt_log_interval_prob

    pad = np.concatenate([[-np.inf], CUT.astype(np.float64), [np.inf]])
    eta = np.array([-45.0, -12.0, -8.5, -0.4, 0.0, 0.9, 8.4, 11.8, 20.0, 45.0])
    e, y = pt.dvector("e"), pt.lvector("y")
    lp = pt_log_interval_prob(pt.as_tensor_variable(pad)[y] - e,
                              pt.as_tensor_variable(pad)[y + 1] - e)
    f = pytensor.function([e, y], [lp, pt.grad(lp.sum(), e)])
    for level in range(5):
        yy = np.full(eta.size, level)
        v, g = f(eta, yy)
        want = np.asarray(ORD.log_prob(jnp.asarray(yy, jnp.float32), jnp.asarray(eta),
                                       {"cutpoints": jnp.asarray(CUT)}))
        np.testing.assert_allclose(v, want, rtol=2e-4, atol=1e-30)
        assert np.all(np.isfinite(g)), (level, g)
        h = 1e-5
        fd = (f(eta + h, yy)[0] - f(eta - h, yy)[0]) / (2 * h)
        np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("lik, theta", [
    (BernoulliProbit(), {}), (ORD, {"cutpoints": jnp.asarray(CUT)})])
def test_truncated_normal_augmentation_marginalises_to_the_latent_gaussian(lik, theta):
    """y ~ p(y | eta), z ~ gaussianize(y, eta): marginally z ~ N(eta, 1) exactly."""
    rng = np.random.default_rng(0)
    n = 40_000
    for eta0 in (-1.3, 0.2, 1.7):
        eta = np.full(n, eta0, np.float32)
        th = {k: np.asarray(v) for k, v in theta.items()}
        y = lik.prior_simulate(rng, eta, th)
        yi = lik.encode(y) if lik.name == "ordinal" else y
        z, w = lik.gaussianize(jax.random.PRNGKey(1), jnp.asarray(yi, jnp.float32),
                               jnp.asarray(eta), theta)
        z = np.asarray(z, np.float64)
        assert float(w) == 1.0
        assert stats.kstest(z - eta0, "norm").pvalue > 1e-3
        # and each z lies in the region its y allows
        if lik.name == "ordinal":
            c = np.concatenate([[-np.inf], CUT, [np.inf]])
            assert np.all((z >= c[yi.astype(int)] - 1e-5) & (z <= c[yi.astype(int) + 1] + 1e-5))
        else:
            assert np.all((z > -1e-6) == (y == 1))


def test_polya_gamma_augmentation_has_the_logistic_score():
    """With omega ~ PG(1, eta) and kappa = y - 1/2, E[kappa - omega eta] = 0 (the score of
    the Gaussian pseudo-likelihood N(kappa/omega; eta, 1/omega) averages to zero exactly
    when the augmentation is exact) and p(y|eta) = e^{kappa eta} E_PG(1,0)[e^{-omega
    eta^2/2}] / 2."""
    from bayesmf.model.augment import polya_gamma

    lik = BernoulliLogit()
    rng = np.random.default_rng(0)
    n = 60_000
    om0 = np.asarray(polya_gamma(jax.random.PRNGKey(3), jnp.zeros(n, jnp.float32)), np.float64)
    for eta0 in (-2.0, 0.5, 1.5):
        eta = np.full(n, eta0, np.float32)
        y = lik.prior_simulate(rng, eta, {})
        z, w = lik.gaussianize(jax.random.PRNGKey(2), jnp.asarray(y, jnp.float32),
                               jnp.asarray(eta), {})
        z, w = np.asarray(z, np.float64), np.asarray(w, np.float64)
        score = w * (z - eta0)                     # = kappa - omega eta
        assert abs(score.mean()) < 5 * score.std() / np.sqrt(n)
        lhs = expit(eta0)
        rhs = np.exp(0.5 * eta0) * np.mean(np.exp(-om0 * eta0 ** 2 / 2)) / 2
        assert abs(lhs - rhs) < 0.01


@pytest.mark.parametrize("lik, y, theta", [
    (BernoulliProbit(), np.array([1, 0, 1, 0, 1, 0, 1]), {}),
    (BernoulliLogit(), np.array([1, 0, 1, 0, 1, 0, 1]), {}),
    (ORD, np.array([0, 1, 2, 3, 4, 2, 1]), {"cutpoints": jnp.asarray(CUT)}),
])
def test_working_response_is_a_newton_step(lik, y, theta):
    y = jnp.asarray(y, jnp.float32)
    eta = jnp.asarray(ETA)

    def nll(e):
        return -lik.log_prob(y, e, theta)

    g = jax.vmap(jax.grad(lambda e, yy: -lik.log_prob(yy, e, theta)))(eta, y)
    h = jax.vmap(jax.grad(jax.grad(lambda e, yy: -lik.log_prob(yy, e, theta))))(eta, y)
    z, w = lik.working(y, eta, theta)
    np.testing.assert_allclose(np.asarray(w), np.asarray(h), rtol=2e-3, atol=1e-5)
    np.testing.assert_allclose(np.asarray(z), np.asarray(eta - g / h), rtol=2e-3, atol=1e-3)
    del nll


def test_predictives_are_distributions():
    rng = np.random.default_rng(0)
    S, n = 30, 12
    m = rng.normal(size=(S, n))
    v = rng.uniform(0, 0.5, size=(S, n))
    cut = np.sort(rng.normal(size=(S, 4)), axis=1)
    mix = ORD.predictive(m, v, {"cutpoints": cut})
    probs = ORD.category_probs(m, v, cut)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-12)
    # exact integral over eta ~ N(m, v): Monte Carlo agrees
    e = m[0, 0] + np.sqrt(v[0, 0]) * rng.standard_normal(200_000)
    c = np.concatenate([[-np.inf], cut[0], [np.inf]])
    mc = np.array([np.mean(ndtr(c[j + 1] - e) - ndtr(c[j] - e)) for j in range(5)])
    np.testing.assert_allclose(probs[0, 0], mc, atol=3e-3)
    assert np.all((mix.mean() >= 1) & (mix.mean() <= 5))
    for lik in (BernoulliProbit(), BernoulliLogit()):
        b = lik.predictive(m, v, {})
        assert np.all((b.mean() > 0) & (b.mean() < 1))
        p_mc = np.mean(lik._p_np(e))
        assert abs(lik._p_np(np.array(m[0, 0]), np.array(v[0, 0])) - p_mc) < (
            3e-3 if lik.name.endswith("probit") else 2e-2)
    g = Gaussian().predictive(m, v, {"tau": np.full(S, 4.0)})
    np.testing.assert_allclose(g.var(), m.var(0) + (v + 0.25).mean(0), rtol=1e-10)


def test_data_that_does_not_fit_the_family_is_refused():
    with pytest.raises(DataError, match="0/1 values"):
        BernoulliProbit().fit_data(np.array([1.0, 4.0, 5.0]))
    with pytest.raises(DataError, match="both 0s and 1s"):
        BernoulliLogit().fit_data(np.array([1.0, 1.0]))
    lik = OrdinalProbit().fit_data(np.array([1, 2, 2, 3, 5.0]))
    assert lik.levels == (1.0, 2.0, 3.0, 5.0)
    with pytest.raises(DataError, match="not rating levels"):
        lik.encode(np.array([4.0]))
    with pytest.raises(DataError, match="at most 50"):
        OrdinalProbit().fit_data(np.linspace(0, 1, 80))
    with pytest.raises(SpecError, match="unknown likelihood"):
        ModelSpec(likelihood="poisson-ish")


def test_half_star_levels_and_registry_round_trip():
    lik = get_likelihood("ordinal").fit_data(np.array([0.5, 1.0, 1.5, 4.5, 5.0]))
    assert lik.K == 5 and lik.encode(np.array([1.5]))[0] == 2
    spec = ModelSpec(rank=2, likelihood=lik)
    back = ModelSpec.from_dict(spec.to_dict())
    assert back == spec and back.likelihood.levels == lik.levels
    for name in ("gaussian", "bernoulli-probit", "bernoulli-logit"):
        assert likelihood_from_dict(get_likelihood(name).to_dict()).name == name
    assert ModelSpec.from_dict({**ModelSpec().to_dict(), "likelihood": "gaussian"}) == ModelSpec()


def test_cutpoint_transform_round_trip():
    for fix in (True, False):
        c = CUT.astype(np.float64) - (CUT[0] if fix else 0.0)
        u = OrdinalProbit.u_from_cut(c, fix)
        assert len(u) == OrdinalProbit.n_free(5, fix)
        np.testing.assert_allclose(OrdinalProbit.cut_from_u(u, 5, fix), c, atol=1e-12)


@pytest.mark.parametrize("fix", [True, False])
def test_ordinal_cutpoint_derivatives_match_autodiff(fix):
    rng = np.random.default_rng(1)
    y = jnp.asarray(rng.integers(0, 5, 300), jnp.float32)
    eta = jnp.asarray(rng.normal(0.8, 1.2, 300), jnp.float32)
    c = np.array([0.0, 0.7, 1.5, 2.6]) + (0.0 if fix else -0.4)
    u = jnp.asarray(ORD.u_from_cut(c, fix), jnp.float32)

    def logp(uu):
        cc = ORD.cut_from_u(uu, 5, fix)
        return jnp.sum(ORD.log_prob(y, eta, {"cutpoints": cc})) + ORD.log_prior_u(uu, fix)

    # each side compiled once (op-by-op dispatch of the Hessian takes seconds)
    f, g, H = jax.jit(lambda uu: ORD.cut_fgh(uu, y, eta, fix))(u)
    np.testing.assert_allclose(float(f), float(jax.jit(logp)(u)), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(g), np.asarray(jax.jit(jax.grad(logp))(u)),
                               rtol=2e-3, atol=2e-2)
    np.testing.assert_allclose(np.asarray(H), -np.asarray(jax.jit(jax.hessian(logp))(u)),
                               rtol=2e-3, atol=2e-2)


@pytest.mark.parametrize("lik", [ORD, BernoulliProbit(), BernoulliLogit()],
                         ids=lambda x: x.name)
def test_latent_scale_derivatives_match_autodiff(lik):
    """The analytic (f, f', f'') of the latent scale move equal the autodiff default."""
    from bayesmf.model.likelihoods.base import Likelihood

    rng = np.random.default_rng(2)
    eta = jnp.asarray(rng.normal(0.5, 1.0, 400), jnp.float32)
    if lik.name == "ordinal":
        y = jnp.asarray(rng.integers(0, 5, 400), jnp.float32)
        theta = {"cutpoints": jnp.asarray([0.0, 0.8, 1.7, 2.9], jnp.float32)}
    else:
        y = jnp.asarray(rng.integers(0, 2, 400), jnp.float32)
        theta = {}
    spec = ModelSpec(rank=2, likelihood=lik)
    # each side compiled once (op-by-op dispatch of the autodiff takes seconds)
    auto = jax.jit(lambda x: Likelihood.scale_fgh(lik, y, eta, theta, x, spec)[:2])
    analytic = jax.jit(lambda x: lik.scale_fgh(y, eta, theta, x, spec))

    def ref(x):  # autodiff value and slope (its second derivative can be NaN through
        # the where-branches of the stable interval formula: use a central difference)
        f, f1 = auto(jnp.float32(x))
        return float(f), float(f1)

    h = 1e-2
    for x in (0.0, 0.3, -0.2):
        got = [float(v) for v in analytic(jnp.float32(x))]
        f, f1 = ref(x)
        f2 = (ref(x + h)[1] - ref(x - h)[1]) / (2 * h)
        np.testing.assert_allclose(got, [f, f1, f2], rtol=3e-3, atol=2e-2)


def test_fallback_spread_counts_as_parameter_variance_for_discrete_families():
    """An unknown id's population spread of eta (v > 0) is parameter uncertainty: a
    discrete family folds it into each draw's distribution, and its param_var adds
    Var_{eta ~ N(m, v)} g(eta) (g: P(y=1), the expected level) -- checked against a fine
    grid; known pairs (v = 0) are unchanged."""
    from scipy import stats

    from bayesmf.model.likelihoods import BernoulliProbit, OrdinalProbit

    m = np.array([[0.3, -0.5], [0.1, -0.2]])
    v = np.array([[0.0, 1.5], [0.0, 1.5]])
    grid = np.linspace(-12, 12, 200001)

    def var_of(g, mu, var):
        dens = stats.norm.pdf(grid, mu, np.sqrt(var))
        dens /= np.trapezoid(dens, grid)
        e1 = np.trapezoid(g(grid) * dens, grid)
        return np.trapezoid(g(grid) ** 2 * dens, grid) - e1 ** 2

    mix = BernoulliProbit().predictive(m, v, {})
    p = stats.norm.cdf(m / np.sqrt(1 + v))
    want = p.var(axis=0) + np.array([0.0, np.mean([var_of(stats.norm.cdf, mu, 1.5)
                                                   for mu in m[:, 1]])])
    np.testing.assert_allclose(mix.param_var(), want, rtol=1e-4)  # 16-node Gauss-Hermite
    cut = np.array([[-1.0, 0.0, 1.2], [-0.8, 0.1, 1.0]])
    lik = OrdinalProbit(levels=(1, 2, 3, 4))
    mo = lik.predictive(m, v, {"cutpoints": cut})

    def level(eta, c):
        cdf = stats.norm.cdf(c[None, :] - eta[:, None])
        P = np.diff(np.concatenate([np.zeros((len(eta), 1)), cdf, np.ones((len(eta), 1))],
                                   axis=1), axis=1)
        return P @ np.array([1.0, 2.0, 3.0, 4.0])

    extra = np.mean([var_of(lambda e, c=cut[s]: level(e, c), m[s, 1], 1.5) for s in range(2)])
    base = mo.component_means().var(axis=0)
    np.testing.assert_allclose(mo.param_var(), base + np.array([0.0, extra]), rtol=1e-4)
    assert mo.param_var()[1] > 10 * mo.param_var()[0]
