"""A likelihood written outside the package (tests/_student_t.py: Student-t with a
learned precision) runs through the seams without package edits: registered for model
files, Gibbs through its augmentation, scores / intervals / ArviZ log-likelihood from its
own predictive and log_prob (not the Gaussian closed forms: ``mean_is_linear`` is not
``gaussian_noise``), the MAP fit learning its parameter from the prior that its
``numpyro_theta`` declares (and a clear error where it declares none), SVI keeping its
parameters, and the SBC simulator drawing from it."""

from __future__ import annotations

import numpy as np
import pytest

from _student_t import StudentT, student_t_data
from bayesmf import BayesMF, load
from bayesmf.errors import SpecError
from bayesmf.model.likelihoods import (LIKELIHOODS, SUPPORTED, get_likelihood,
                                       register_likelihood)


@pytest.fixture(scope="module")
def fitted():
    register_likelihood(StudentT)
    m = BayesMF("gibbs", rank=2, likelihood=StudentT(nu=3.0), num_warmup=30,
                num_samples=30, seed=0).fit(student_t_data())
    yield m
    LIKELIHOODS.pop(StudentT.name, None)
    SUPPORTED.pop(StudentT.name, None)


def test_registry_and_model_files(fitted, tmp_path):
    assert get_likelihood("test-student-t") == StudentT()
    assert SUPPORTED["test-student-t"] == tuple(StudentT.methods)
    with pytest.raises(SpecError, match="is taken"):
        register_likelihood(type("Other", (StudentT,), {"name": "gaussian"}))
    with pytest.raises(SpecError, match="needs a class attribute name"):
        register_likelihood(type("Nameless", (StudentT,), {"name": "base"}))
    fitted.save(tmp_path / "t.nc")
    back = load(tmp_path / "t.nc")
    assert back.posterior_.likelihood == StudentT(nu=3.0)
    users = fitted.posterior_.users.ids[:3]
    items = fitted.posterior_.items.ids[:3]
    np.testing.assert_allclose(back.posterior_.predict(users, items).mean,
                               fitted.posterior_.predict(users, items).mean)


def test_scores_and_intervals_come_from_its_predictive(fitted):
    post = fitted.posterior_
    user = post.users.ids[0]
    rec = fitted.recommend([user], n=5, strategy="prob", threshold=3.5, exclude_seen=False)
    items = rec["item"].to_numpy()
    want = post.prob_at_least(np.repeat(user, len(items)), items, 3.5)
    np.testing.assert_allclose(rec["score"], want, rtol=1e-6)
    ucb = fitted.recommend([user], n=3, strategy="ucb", quantile_method="exact",
                           exclude_seen=False)
    q = post.quantiles(np.repeat(user, 3), ucb["item"].to_numpy(), 0.9)[0]
    np.testing.assert_allclose(ucb["score"], q, rtol=1e-5)
    with pytest.raises(SpecError, match="no Gaussian observation noise"):
        post.noise_var()
    with pytest.raises(SpecError, match="method='gaussian'"):
        post.predict([user], [items[0]], method="gaussian")


def test_arviz_log_likelihood_is_its_log_prob(fitted):
    post = fitted.posterior_
    tr = student_t_data().subset(np.arange(40))
    users, items = tr.users.decode(tr.user), tr.items.decode(tr.item)
    y = np.asarray(tr.rating)
    dt = post.to_datatree(log_likelihood=tr)
    ll = np.asarray(dt["log_likelihood"]["rating"]).reshape(post.n_samples, -1)
    mix = post.predictive(users, items).per_draw()
    want = mix.logpdf(np.broadcast_to(y, (post.n_samples, len(y))))
    np.testing.assert_allclose(ll, want, rtol=1e-4, atol=1e-4)


NU, TAU = 3.0, 4.0  # the planted Student-t noise of the MAP tests


def _planted_t(seed=1, n_users=200, n_items=100, density=0.4):
    """Rank-2 ratings ``3 + 0.6 U V + t_3 / sqrt(TAU)`` (about 8000) and the true eta."""
    from bayesmf.data.ratings import Ratings

    rng = np.random.default_rng(seed)
    U, V = rng.normal(size=(n_users, 2)), rng.normal(size=(n_items, 2))
    u, i = np.nonzero(rng.random((n_users, n_items)) < density)
    eta = 3.0 + 0.6 * np.sum(U[u] * V[i], 1)
    y = eta + rng.standard_t(NU, len(u)) / np.sqrt(TAU)
    return Ratings.from_arrays(u, i, y), eta


def _tau_objective(tau, resid, a, b):
    """The tau-dependent part of the MAP objective: ``-2 sum log t_nu(r; 0, tau^-1/2)
    - 2 log Gamma(tau; a, b)`` (float64, scipy)."""
    from scipy import stats

    s = 1.0 / np.sqrt(tau)
    return (-2.0 * np.sum(stats.t.logpdf(resid / s, NU) - np.log(s))
            - 2.0 * stats.gamma.logpdf(tau, a, scale=1.0 / b))


def test_map_learns_the_families_parameter_on_planted_data():
    """The MAP fit learns tau jointly with the factors (it refused the family before):
    near the truth, moved from its start, a minimum of the reported objective in tau, and
    the tau of the Posterior's predictive."""
    from scipy import optimize

    tr, eta_true = _planted_t()
    m = BayesMF("map", rank=2, likelihood=StudentT(nu=NU), seed=0).fit(tr)
    post = m.posterior_
    tau = float(post.draws["tau"].squeeze())
    tau0 = float(StudentT(nu=NU).init_theta(np.asarray(tr.rating), post.spec)["tau"])
    a, b = post.spec.priors.noise_a, post.spec.priors.noise_b
    # what to expect: the MAP of tau given the true eta (4.13 here); the fit's residuals
    # are smaller by its ~900 free parameters against ~8000 ratings, so tau comes out a
    # little higher (4.56)
    y = np.asarray(tr.rating, np.float64)
    best = optimize.minimize_scalar(lambda lt: _tau_objective(np.exp(lt), y - eta_true, a, b),
                                    bounds=(-5, 5), method="bounded")
    tau_true_eta = float(np.exp(best.x))
    assert abs(tau_true_eta / TAU - 1) < 0.1
    assert np.isfinite(tau) and tau > 0
    assert abs(tau / TAU - 1) < 0.2 and abs(tau / tau_true_eta - 1) < 0.2
    assert tau0 == 1.0 and abs(tau - TAU) < 0.25 * abs(tau0 - TAU)  # moved to the truth
    # the reported objective is the deviance + ridge + tau's Gamma prior at the fitted
    # values, and tau minimises it given the fitted factors (tau at its start is worse)
    P = {k: np.asarray(post.draws[k], np.float64).squeeze((0, 1))
         for k in ("mu", "bu", "bi", "U", "V")}
    u, i = tr.user, tr.item
    r = y - (P["mu"] + P["bu"][u] + P["bi"][i] + np.sum(P["U"][u] * P["V"][i], 1))
    ridge = (post.spec.reg_factors * (np.sum(P["U"] ** 2) + np.sum(P["V"] ** 2))
             + post.spec.reg_bias * (np.sum(P["bu"] ** 2) + np.sum(P["bi"] ** 2)))
    J = post.attrs["objective"]
    np.testing.assert_allclose(_tau_objective(tau, r, a, b) + ridge, J, rtol=1e-4)
    assert _tau_objective(tau0, r, a, b) + ridge > J + 1000.0
    for f in (0.98, 1.02):
        assert _tau_objective(f * tau, r, a, b) > _tau_objective(tau, r, a, b)
    # the Posterior's predictive uses the learned tau
    mix = post.predictive(tr.users.decode(tr.user[:5]), tr.items.decode(tr.item[:5]))
    np.testing.assert_allclose(mix.sc, 1.0 / np.sqrt(tau), rtol=1e-5)


def test_map_of_the_parameter_is_the_known_mode():
    """A known answer: with eta = mu alone (rank 0, no biases, a flat prior on mu) the MAP
    of (mu, tau) under tau ~ Gamma(2, 0.5) is the 2-D minimiser of the same objective,
    found here by scipy in float64."""
    from scipy import optimize

    from bayesmf.data.ratings import Ratings
    from bayesmf.infer import get_method
    from bayesmf.model.spec import BayesPriors, ModelSpec

    rng = np.random.default_rng(3)
    n = 400
    y = 1.5 + rng.standard_t(NU, n) / np.sqrt(TAU)
    tr = Ratings.from_arrays(np.arange(n) % 40, np.arange(n), y)
    a, b = 2.0, 0.5
    spec = ModelSpec(rank=0, user_bias=False, item_bias=False, likelihood=StudentT(nu=NU),
                     priors=BayesPriors(noise_a=a, noise_b=b))
    post = get_method("map")(tr, spec, tol=1e-9, max_iter=500)
    mu, tau = float(post.draws["mu"].squeeze()), float(post.draws["tau"].squeeze())

    def f(z):
        return _tau_objective(np.exp(z[1]), y - z[0], a, b)

    ref = optimize.minimize(f, np.array([np.median(y), 0.0]), method="Nelder-Mead",
                            options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 10000})
    mu_ref, tau_ref = float(ref.x[0]), float(np.exp(ref.x[1]))
    assert abs(tau_ref - 1.0) > 1.0  # far from the start tau = 1
    np.testing.assert_allclose(tau, tau_ref, rtol=1e-3)
    np.testing.assert_allclose(mu, mu_ref, rtol=1e-3)
    np.testing.assert_allclose(post.attrs["objective"], ref.fun, rtol=1e-5)


class _Undeclared(StudentT):
    """tau in theta_names, but numpyro_theta declares no site for it."""

    name = "test-student-t-undeclared"

    def numpyro_theta(self, spec):
        return {}


class _Unlisted(StudentT):
    """numpyro_theta samples log_tau, which theta_names does not list."""

    name = "test-student-t-unlisted"

    def numpyro_theta(self, spec):
        import jax.numpy as jnp
        import numpyro
        import numpyro.distributions as dist

        return {"tau": jnp.exp(numpyro.sample("log_tau", dist.Normal(0.0, 1.0)))}


def test_map_of_an_undeclared_parameter_is_a_clear_spec_error():
    tr = student_t_data()
    with pytest.raises(SpecError, match=r"parameter\(s\) \['tau'\] but its numpyro_theta"
                                        r"\(spec\) declares no sample site.*"
                                        r"numpyro.sample\('tau'.*method='gibbs' or 'svi'"):
        BayesMF("map", rank=2, likelihood=_Undeclared()).fit(tr)
    with pytest.raises(SpecError, match=r"sample site\(s\) \['log_tau'\], which are not "
                                        r"among its theta_names"):
        BayesMF("map", rank=2, likelihood=_Unlisted()).fit(tr)


@pytest.mark.slow  # 20 s warm
def test_svi_keeps_its_parameters():
    from bayesmf.infer import get_method
    from bayesmf.model.spec import ModelSpec

    tr = student_t_data()
    post = get_method("svi")(tr, ModelSpec(rank=1, likelihood=StudentT()), num_steps=100,
                             num_samples=5, seed=0)
    assert post.draws["tau"].shape == (1, 5) and np.all(post.draws["tau"] > 0)


def test_sbc_simulates_from_the_family():
    from bayesmf.model.spec import ModelSpec
    from bayesmf.testing.sbc import simulate_observations

    spec = ModelSpec(rank=1, likelihood=StudentT(nu=2.5))
    rng = np.random.default_rng(0)
    n = 20000
    t = {"mu": 0.0, "bu": np.zeros(1), "bi": np.zeros(1), "U": np.zeros((1, 1)),
         "V": np.zeros((1, 1)), "tau": 1.0}
    y = simulate_observations(rng, spec, t, np.zeros(n, int), np.zeros(n, int))
    # a t_2.5 has heavy tails (the Gaussian simulator gave excess kurtosis 0)
    assert np.mean(np.abs(y) > 4.0) > 10 * 2 * (1 - 0.99997)


def test_conformance_planted_data_come_from_the_family_itself():
    """``bayesmf.testing.conformance.planted`` simulates a family of one's own through its
    own ``prior_simulate`` (it gave every unknown family the Gaussian stars ``3 + 0.5 z``):
    Student-t data sit around ``eta`` (mean near 0, not 3) with heavy tails."""
    from bayesmf.testing.conformance import planted

    tr = planted(StudentT(nu=3.0), n_users=60, n_items=50, seed=1)
    g = planted("gaussian", n_users=60, n_items=50, seed=1)
    y, yg = np.asarray(tr.rating), np.asarray(g.rating)
    assert abs(np.mean(y)) < 1.0 and abs(np.mean(yg) - 3.0) < 0.5
    # excess kurtosis: t_3 noise is heavy-tailed, the Gaussian branch's is not
    def kurt(x):
        x = x - x.mean()
        return np.mean(x ** 4) / np.mean(x ** 2) ** 2 - 3.0
    assert kurt(y) > 5.0 > kurt(yg)
    assert tr.nnz == g.nnz  # the same observed pattern
