"""Hierarchical Poisson factorization: the multinomial split, Gibbs / CAVI / KL-NMF
against planted factors and closed forms, the Poisson predictive mixture, the estimator
path (fit, recommend, evaluate) and the refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.special import digamma, gammaln
from scipy.stats import gamma as gamma_dist
from scipy.stats import poisson

import bayesmf
from bayesmf.data.interactions import Interactions
from bayesmf.data.ratings import Ratings
from bayesmf.errors import DataError, SpecError
from bayesmf.infer import get_method
from bayesmf.infer.nmf import SparseCounts, kl_nmf, kl_objective
from bayesmf.model.likelihoods import Poisson, get_likelihood, likelihood_from_dict
from bayesmf.model.spec import ModelSpec
from bayesmf.model.priors import HierarchicalGamma, NormalWishart
from bayesmf.predictive import PoissonMixture

K = 3
SPEC = ModelSpec(rank=K, likelihood="poisson", global_mean=False, user_bias=False,
                 item_bias=False)


def _planted(seed=0, N=60, M=40):
    rng = np.random.default_rng(seed)
    th = rng.gamma(0.5, 1.0, (N, K))
    be = 1.5 * rng.gamma(0.5, 1.0, (M, K))
    R = th @ be.T
    Y = rng.poisson(R)
    Y[np.arange(N), rng.integers(0, M, N)] += 1  # every user and item has a count
    Y[rng.integers(0, N, M), np.arange(M)] += 1
    u, i = np.nonzero(Y)
    return Ratings.from_arrays(u, i, Y[u, i].astype(float)), R, Y


@pytest.fixture(scope="module")
def planted():
    return _planted()


def _mean_rates(post):
    U, V = post.flat("U").astype(np.float64), post.flat("V").astype(np.float64)
    return np.einsum("snk,smk->nm", U, V) / U.shape[0]


def _check_recovery(post, train, R):
    """Posterior-mean rates correlate with the planted ones (> 0.9) and their total is
    the total count (the scale, which a correlation does not see)."""
    Rp = R[np.asarray(post.users.ids)][:, np.asarray(post.items.ids)]
    Rhat = _mean_rates(post)
    assert np.corrcoef(Rhat.ravel(), Rp.ravel())[0, 1] > 0.9
    assert Rhat.sum() == pytest.approx(train.rating.sum(), rel=0.03)


# ----------------------------------------------------------------------------- split
def test_multinomial_split_conditional_moments():
    import jax

    from bayesmf.infer.hpf import multinomial_split

    w1 = np.array([[1.0, 1.0, 2.0], [0.2, 0.0, 0.8], [5.0, 3.0, 2.0]], np.float32)
    y2 = np.array([2.0, 7.0, 40.0, 13.0], np.float32)
    w2 = np.array([[1.0, 2.0, 1.0], [0.5, 0.0, 1.5], [3.0, 1.0, 1.0], [0.0, 0.0, 2.0]],
                  np.float32)
    R = 20000
    f = jax.jit(jax.vmap(lambda k: multinomial_split(k, w1, y2, w2)))
    z1, z2 = (np.asarray(a) for a in f(jax.random.split(jax.random.PRNGKey(0), R)))
    # counts of 1: one factor each, frequencies phi (5 binomial standard errors)
    p1 = w1 / w1.sum(1, keepdims=True)
    freq = np.stack([(z1 == k).mean(0) for k in range(3)], axis=1)
    assert np.all(np.abs(freq - p1) <= 5 * np.sqrt(p1 * (1 - p1) / R) + 1e-12)
    assert np.all(freq[p1 == 0] == 0)  # a zero weight never receives a count
    # larger counts: integers summing to y exactly; E z = y p, Cov z = y (diag p - p p^T)
    assert np.all(z2 == np.round(z2)) and np.all(z2 >= 0)
    np.testing.assert_array_equal(z2.sum(-1), np.broadcast_to(y2, (R, 4)))
    p2 = w2 / w2.sum(1, keepdims=True)
    for r in range(4):
        cov = y2[r] * (np.diag(p2[r]) - np.outer(p2[r], p2[r]))
        se = np.sqrt(np.diag(cov) / R)
        assert np.all(np.abs(z2[:, r].mean(0) - y2[r] * p2[r]) <= 5 * se + 1e-9), r
        emp = np.cov(z2[:, r].T)
        # the variance of a sample covariance entry is about (C_jj C_kk + C_jk^2) / R
        tol = 6 * np.sqrt((np.outer(np.diag(cov), np.diag(cov)) + cov ** 2) / R) + 1e-9
        assert np.all(np.abs(emp - cov) <= tol), r
    np.testing.assert_array_equal(z2[:, 3], np.broadcast_to([0, 0, 13], (R, 3)))


# ----------------------------------------------------------------------------- Gibbs
@pytest.fixture(scope="module")
def gibbs_post(planted):
    train, _, _ = planted
    return get_method("gibbs")(train, SPEC, seed=0, num_samples=60, num_warmup=200,
                               num_chains=2)


def test_gibbs_recovers_planted_rates(gibbs_post, planted):
    train, R, _ = planted
    post = gibbs_post
    assert post.method == "gibbs" and (post.n_chains, post.n_draws) == (2, 60)
    assert np.all(post.draws["U"] > 0) and np.all(post.draws["V"] > 0)
    assert post.draws["xi"].shape == (2, 60, train.n_users)
    assert post.draws["eta"].shape == (2, 60, train.n_items)
    assert post.sample_stats["log_likelihood"].shape == (2, 60)
    assert not np.array_equal(post.draws["U"][0], post.draws["U"][1])  # own chain keys
    assert np.all(post.draws["mu"] == 0) and np.all(post.draws["bu"] == 0)
    _check_recovery(post, train, R)
    # the draws move
    assert np.ptp(post.flat("U")[:, 0, 0]) > 0


def test_summary_files_are_refused_for_non_negative_factors(gibbs_post, tmp_path):
    """A summary file rebuilds Gaussian rows after Procrustes rotations: for Gamma factors
    that would give negative factors and mixed labels, so it is refused (draws mode
    keeps the real non-negative draws)."""
    from bayesmf import io

    with pytest.raises(SpecError, match="non-negative factors.*mode='draws'"):
        io.save(gibbs_post, tmp_path / "s.nc", mode="summary")
    assert not (tmp_path / "s.nc").exists()
    back = io.load(io.save(gibbs_post, tmp_path / "d.nc", draws=20))
    assert back.n_samples == 20 and np.all(back.draws["U"] >= 0)


def test_recommend_std_is_the_predictive_std_with_the_poisson_noise(gibbs_post):
    r"""``recommend``'s ``std`` is parameter + observation noise, as ``predict``'s: for
    Poisson :math:`\sqrt{\mathrm{Var}_s\lambda_s + \bar\lambda}` (not the parameter
    part alone)."""
    from bayesmf.recommend import recommend

    rec = recommend(gibbs_post, gibbs_post.users.ids[:3], n=5)
    pred = gibbs_post.predict(rec["user"].to_numpy(), rec["item"].to_numpy())
    lam = np.einsum("snk,snk->sn",
                    gibbs_post.flat("U")[:, gibbs_post.users.encode(rec["user"].to_numpy())],
                    gibbs_post.flat("V")[:, gibbs_post.items.encode(rec["item"].to_numpy())],
                    dtype=np.float64)
    np.testing.assert_allclose(rec["std_param"], lam.std(0), rtol=1e-4)
    np.testing.assert_allclose(rec["std"], np.sqrt(lam.var(0) + lam.mean(0)), rtol=1e-4)
    np.testing.assert_allclose(rec["std"], pred.std, rtol=1e-4)


def test_gibbs_fit_statistics_are_the_all_pairs_sums(gibbs_post, planted):
    train, _, _ = planted
    post = gibbs_post
    Y = np.zeros((train.n_users, train.n_items))
    Y[train.user, train.item] = train.rating
    U, V = post.draws["U"][1, -1].astype(np.float64), post.draws["V"][1, -1].astype(np.float64)
    Rs = U @ V.T
    ll = np.sum(poisson.logpmf(Y, Rs))  # dense, zeros included
    assert post.sample_stats["log_likelihood"][1, -1] == pytest.approx(ll, rel=2e-4)
    rmse = np.sqrt(np.mean((Y - Rs) ** 2))
    assert post.sample_stats["train_rmse"][1, -1] == pytest.approx(rmse, rel=1e-3)


# ----------------------------------------------------------------------------- CAVI
@pytest.fixture(scope="module")
def cavi_post(planted):
    train, _, _ = planted
    return get_method("cavi")(train, SPEC, seed=0)


def test_cavi_recovers_planted_rates_and_elbo_never_decreases(cavi_post, planted):
    train, R, _ = planted
    post = cavi_post
    assert post.method == "cavi" and post.attrs["converged"]
    e = np.asarray(post.attrs["elbo_trace"])
    assert len(e) > 5
    assert np.all(np.diff(e) >= -1e-10 * np.abs(e[1:]))
    _check_recovery(post, train, R)
    assert np.all(post.draws["U"] > 0)


def test_cavi_elbo_matches_the_explicit_phi_form(planted):
    """The collapsed ELBO equals the ELBO written with the explicit optimal phi and
    scipy's Gamma entropies (at random variational parameters)."""
    from bayesmf.infer.hpf import cavi_elbo

    train, _, _ = planted
    data = SparseCounts(train.user, train.item, train.rating, train.n_users, train.n_items)
    rng = np.random.default_rng(5)
    N, M = train.n_users, train.n_items
    p = {"gs": rng.uniform(0.3, 2, (N, K)), "gr": rng.uniform(0.5, 3, (N, K)),
         "ls": rng.uniform(0.3, 2, (M, K)), "lr": rng.uniform(0.5, 3, (M, K)),
         "ks": rng.uniform(0.5, 2, N), "kr": rng.uniform(0.5, 2, N),
         "ts": rng.uniform(0.5, 2, M), "tr": rng.uniform(0.5, 2, M)}
    a, ap, bp, c, cp, dp = 0.3, 0.3, 1.0, 0.3, 0.3, 1.0
    El = lambda s, r: digamma(s) - np.log(r)  # noqa: E731
    ElT, ElB, ElX, ElE = El(p["gs"], p["gr"]), El(p["ls"], p["lr"]), El(p["ks"], p["kr"]), \
        El(p["ts"], p["tr"])
    ET, EB, EX, EE = p["gs"] / p["gr"], p["ls"] / p["lr"], p["ks"] / p["kr"], p["ts"] / p["tr"]
    e = ElT[data.user] + ElB[data.item]
    phi = np.exp(e - e.max(1, keepdims=True))
    phi /= phi.sum(1, keepdims=True)
    y = data.y
    Ez = y[:, None] * phi
    # E log p(z | theta, beta) - E log q(z), the log z! terms cancelling
    lz = np.sum(Ez * (e - np.log(phi))) - np.sum(gammaln(y + 1)) - np.sum(ET @ EB.T)
    lp = (np.sum(a * ElX[:, None] - gammaln(a) + (a - 1) * ElT - EX[:, None] * ET)
          + np.sum(ap * np.log(ap / bp) - gammaln(ap) + (ap - 1) * ElX - ap / bp * EX)
          + np.sum(c * ElE[:, None] - gammaln(c) + (c - 1) * ElB - EE[:, None] * EB)
          + np.sum(cp * np.log(cp / dp) - gammaln(cp) + (cp - 1) * ElE - cp / dp * EE))
    H = sum(gamma_dist(p[s], scale=1 / p[r]).entropy().sum()
            for s, r in (("gs", "gr"), ("ls", "lr"), ("ks", "kr"), ("ts", "tr")))
    want = lz + lp + H
    assert cavi_elbo(data, (a, ap, bp, c, cp, dp), p) == pytest.approx(want, rel=1e-10)


# ----------------------------------------------------------------------------- KL-NMF
def test_kl_nmf_objective_never_increases_and_is_the_dense_divergence(planted):
    train, R, Y = planted
    data = SparseCounts(train.user, train.item, train.rating, train.n_users, train.n_items)
    W, H, info = kl_nmf(data, K, max_iter=150, tol=0.0, seed=1)
    obj = info["objective"]
    assert len(obj) == 151
    assert np.all(np.diff(obj) <= 1e-10 * np.abs(obj[1:]))
    assert obj[-1] < 0.5 * obj[0]
    Yd = np.zeros((train.n_users, train.n_items))
    Yd[train.user, train.item] = train.rating
    Rw = W @ H.T
    with np.errstate(divide="ignore", invalid="ignore"):
        dense = np.sum(np.where(Yd > 0, Yd * np.log(Yd / Rw), 0.0) - Yd + Rw)
    assert kl_objective(data, W, H) == pytest.approx(dense, rel=1e-10)
    # with an L1 penalty the penalised objective is monotone too
    _, _, info = kl_nmf(data, K, max_iter=50, tol=0.0, l1=0.5, seed=1)
    assert np.all(np.diff(info["objective"]) <= 1e-10 * np.abs(info["objective"][1:]))


def test_map_is_kl_nmf_and_recovers_rates(planted):
    train, R, _ = planted
    post = get_method("map")(train, SPEC, seed=0)
    assert post.method == "map" and post.is_point_estimate
    assert np.all(post.draws["U"] >= 0)
    _check_recovery(post, train, R)


# ----------------------------------------------------------------------------- predictive
def test_poisson_mixture_against_hand_computations():
    lam = np.array([[0.5, 2.0, 0.0], [1.5, 3.0, 0.0]])
    mix = PoissonMixture(lam)
    np.testing.assert_allclose(mix.mean(), [1.0, 2.5, 0.0])
    np.testing.assert_allclose(mix.param_var(), [0.25, 0.25, 0.0])
    np.testing.assert_allclose(mix.var(), [1.25, 2.75, 0.0])
    np.testing.assert_allclose(mix.prob_at_least(1),
                               1 - 0.5 * (np.exp(-lam[0]) + np.exp(-lam[1])))
    np.testing.assert_allclose(mix.prob_at_least(0), 1.0)
    np.testing.assert_allclose(mix.prob_at_least(2.5), 1 - mix.cdf(2))
    y = np.array([3.0, 0.0, 0.0])
    pm = 0.5 * (poisson.pmf(y, lam[0]) + poisson.pmf(y, lam[1]))
    np.testing.assert_allclose(mix.pmf(y), pm)
    np.testing.assert_allclose(mix.logpdf(y), np.log(pm))
    assert mix.logpdf([1.0, 1.0, 1.0])[2] == pytest.approx(np.log(1e-15))  # impossible
    # far in the tail the mass is exact (no floor): PSIS-LOO needs the tail values
    far = PoissonMixture(np.array([[0.5], [1.0]]))
    np.testing.assert_allclose(far.logpdf([30.0]), np.log(0.5 * (poisson.pmf(30, 0.5)
                                                                 + poisson.pmf(30, 1.0))))
    assert far.logpdf([30.0])[0] < np.log(1e-15) - 10
    F = lambda x: 0.5 * (poisson.cdf(x, lam[0]) + poisson.cdf(x, lam[1]))  # noqa: E731
    np.testing.assert_allclose(mix.cdf([1.7, -0.5, 4.0]), [F(1)[0], 0.0, F(4)[2]])
    for q in (0.1, 0.5, 0.9, 0.999):
        want = [min(k for k in range(100) if F(k)[j] >= q) for j in range(3)]
        np.testing.assert_array_equal(mix.quantile(q), want)
    np.testing.assert_allclose(mix.pit(y), F(y - 1) + 0.5 * pm)
    ks = np.arange(200)[:, None]
    crps = np.sum((F(ks) - (y <= ks)) ** 2, axis=0)
    np.testing.assert_allclose(mix.crps(y), crps, rtol=1e-9)
    np.testing.assert_allclose(mix.expect(lambda k: k * k), mix.var() + mix.mean() ** 2)
    np.testing.assert_array_equal(mix.mode(), [0.0, 2.0, 0.0])
    s = mix.sample(np.random.default_rng(0), 200000)
    np.testing.assert_allclose(s.mean(0), mix.mean(), atol=0.02)
    np.testing.assert_allclose(s.var(0), mix.var(), atol=0.05)
    np.testing.assert_allclose(mix.take([1]).mean(), lam[1])
    assert mix.per_draw().shape == (2, 3) and mix.discrete
    for bad in (-1.0, 0.5, np.nan):
        with pytest.raises(DataError):
            mix.logpdf([bad, 0.0, 0.0])
    with pytest.raises(DataError):
        PoissonMixture([[-0.1]])


def test_likelihood_builds_the_mixture_and_round_trips():
    lik = get_likelihood("poisson")
    assert isinstance(lik, Poisson) and get_likelihood("hpf") == lik
    assert lik.full_matrix and not lik.default_biases and lik.theta_names == ()
    assert lik.background({}) is None
    mix = lik.predictive(np.array([[0.4], [1.2]]), np.zeros((2, 1)), {})
    assert isinstance(mix, PoissonMixture)
    np.testing.assert_allclose(mix.prob_at_least(1), 1 - np.mean(np.exp(-np.array([0.4, 1.2]))))
    assert likelihood_from_dict(lik.to_dict()) == lik


def test_the_gamma_prior_is_an_object_that_round_trips_and_fits_only_poisson():
    """The HPF hyperparameters live on the spec's ``prior`` (HierarchicalGamma): the
    Poisson likelihood's default, refused with a Gaussian likelihood and refusing a
    Gaussian prior with Poisson; round trip through the spec's dict; a file written when
    the hyperparameters sat on the likelihood still loads."""
    spec = ModelSpec(rank=K, likelihood="poisson", global_mean=False)
    assert isinstance(spec.prior, HierarchicalGamma) and spec.prior == HierarchicalGamma()
    custom = HierarchicalGamma(a=0.5, c_prime=2.0)
    assert custom.hyper == (0.5, 0.3, 1.0, 0.3, 2.0, 1.0)
    for p in ("gamma", "hpf", custom, custom.to_dict()):
        s = ModelSpec(rank=K, likelihood="poisson", global_mean=False, prior=p)
        assert ModelSpec.from_dict(s.to_dict()) == s
    assert ModelSpec.from_dict(ModelSpec(rank=K, likelihood="poisson", global_mean=False,
                                         prior=custom).to_dict()).prior.c_prime == 2.0
    with pytest.raises(SpecError, match="a must be"):
        HierarchicalGamma(a=0.0)
    with pytest.raises(SpecError, match="non-negative factors"):
        ModelSpec(rank=K, likelihood="poisson", global_mean=False, prior="normal-wishart")
    with pytest.raises(SpecError, match="goes with likelihood='poisson'"):
        ModelSpec(rank=K, prior="gamma")
    with pytest.raises(SpecError, match="normal-gamma"):
        bayesmf.BayesMF(rank=K, prior="gamma").make_spec()
    assert isinstance(ModelSpec(rank=K).prior, NormalWishart)
    old = ModelSpec(rank=K, likelihood="poisson", global_mean=False).to_dict()
    old["likelihood"] = {"name": "poisson", "a": 0.5, "a_prime": 0.3, "b_prime": 1.0,
                         "c": 0.3, "c_prime": 2.0, "d_prime": 1.0, "bias_shape": 0.3,
                         "bias_rate": 0.3}
    old["prior"] = {"name": "normal-wishart"}
    assert ModelSpec.from_dict(old).prior == custom


# ----------------------------------------------------------------------------- estimator
def _interactions(seed=3, N=40, M=30):
    rng = np.random.default_rng(seed)
    th = rng.gamma(0.5, 1.0, (N, K))
    be = 1.5 * rng.gamma(0.5, 1.0, (M, K))
    Y = rng.poisson(th @ be.T)
    Y[np.arange(N), rng.integers(0, M, N)] += 1
    Y[rng.integers(0, N, M), np.arange(M)] += 1
    u, i = np.nonzero(Y)
    perm = rng.permutation(len(u))
    test, train = perm[:60], perm[60:]
    tr = Interactions.from_arrays(u[train], i[train], Y[u[train], i[train]])
    keep = np.isin(u[test], tr.users.ids) & np.isin(i[test], tr.items.ids)
    te = Interactions.from_arrays(u[test][keep], i[test][keep], Y[u[test], i[test]][keep],
                                  user_vocab=tr.users, item_vocab=tr.items)
    df = pd.DataFrame({"user": u[train], "item": i[train], "count": Y[u[train], i[train]]})
    return tr, te, df


@pytest.mark.parametrize("method, opts", [("map", {"max_iter": 100}),
                                          ("cavi", {"num_samples": 30}),
                                          ("gibbs", {"num_samples": 30, "num_warmup": 50})])
def test_estimator_fit_recommend_evaluate(method, opts):
    tr, te, df = _interactions()
    model = bayesmf.BayesMF(method=method, likelihood="poisson", rank=K, **opts).fit(tr)
    post = model.posterior
    assert post.method == method and post.likelihood.name == "poisson"
    users = list(tr.users.ids[:5])
    rec = model.recommend(users, n=5)
    seen = set(zip(tr.users.decode(tr.user), tr.items.decode(tr.item)))
    assert len(rec) == 25
    assert not any((u, i) in seen for u, i in zip(rec["user"], rec["item"]))
    assert np.all(rec["score"].to_numpy() >= 0)
    for st, kw in (("ucb", {}), ("lcb", {}), ("thompson", {}), ("prob", {"threshold": 1})):
        r = model.recommend(users[:2], n=3, strategy=st, **kw)
        assert len(r) == 6 and not any((u, i) in seen for u, i in zip(r["user"], r["item"]))
    out = model.evaluate(te)
    assert "skipped" in out["rating_metrics"]
    rk = out["ranking"]
    assert isinstance(rk, dict) and rk
    if method == "cavi":  # a DataFrame of counts fits too, to the same model
        m2 = bayesmf.BayesMF(method=method, likelihood="poisson", rank=K, **opts).fit(
            df, rating_col="count")
        np.testing.assert_allclose(m2.posterior.draws["U"], post.draws["U"])


def test_bad_counts_are_data_errors():
    base = pd.DataFrame({"user": [0, 0, 1, 2], "item": [0, 1, 1, 2],
                         "rating": [1.0, 2.0, 3.0, 1.0]})
    for bad, msg in ((-1.0, "negative"), (1.5, "not integers"), (np.nan, "NaN")):
        df = base.copy()
        df.loc[1, "rating"] = bad
        with pytest.raises(DataError, match=msg):
            bayesmf.BayesMF(method="map", likelihood="poisson", rank=1).fit(df)
    # binary data are counts
    df = base.assign(rating=[1.0, 0.0, 1.0, 1.0])
    bayesmf.BayesMF(method="map", likelihood="poisson", rank=1, max_iter=5).fit(df)
    with pytest.raises(DataError, match="not integers"):
        model = bayesmf.BayesMF(method="map", likelihood="poisson", rank=1, max_iter=5).fit(
            base)
        model.posterior.log_predictive_density(Ratings.from_arrays([0], [1], [0.5]))


def test_unsupported_methods_and_specs_are_spec_errors(planted):
    train, _, _ = planted
    with pytest.raises(SpecError, match="does not support likelihood 'poisson'"):
        get_method("pymc-nuts")(train, SPEC)
    with pytest.raises(SpecError, match="does not support likelihood 'gaussian'"):
        get_method("cavi")(train, ModelSpec(rank=2))
    with pytest.raises(SpecError, match="global_mean"):
        get_method("cavi")(train, ModelSpec(rank=2, likelihood="poisson"))
    with pytest.raises(SpecError, match="unknown option"):
        get_method("gibbs")(train, SPEC, num_samples=5, beta_solver="cg")
    with pytest.raises(SpecError, match="outside the training vocabularies"):
        get_method("gibbs")(train, SPEC, num_samples=5, predict_pairs=([0], [train.n_items]))
    with pytest.raises(SpecError, match="equal-length 1-d integer"):
        get_method("gibbs")(train, SPEC, num_samples=5, predict_pairs=([0, 1], [0.0, 1.0]))
    with pytest.raises(SpecError, match="store_draws must be True or False"):
        get_method("gibbs")(train, SPEC, num_samples=5, store_draws=0)


# ----------------------------------------------------------------------------- biases
BIASED = ModelSpec(rank=K, likelihood="poisson", global_mean=False, user_bias=True,
                   item_bias=True)


@pytest.fixture(scope="module")
def planted_biases():
    return _planted_biases()


def _planted_biases():
    """Counts with rate theta_u . beta_i + b_u + b_i: a few very active users and popular
    items on top of the factors."""
    rng = np.random.default_rng(4)
    N, M = 60, 40
    th = rng.gamma(0.5, 1.0, (N, K))
    be = 1.5 * rng.gamma(0.5, 1.0, (M, K))
    bu, bi = rng.gamma(0.4, 1.5, N), rng.gamma(0.4, 1.5, M)
    R = th @ be.T + bu[:, None] + bi[None, :]
    Y = rng.poisson(R)
    Y[np.arange(N), rng.integers(0, M, N)] += 1
    Y[rng.integers(0, N, M), np.arange(M)] += 1
    u, i = np.nonzero(Y)
    return Ratings.from_arrays(u, i, Y[u, i].astype(float)), R, Y, bu, bi


def _mean_rates_biased(post):
    bu = post.flat("bu").astype(np.float64)
    bi = post.flat("bi").astype(np.float64)
    return _mean_rates(post) + bu.mean(0)[:, None] + bi.mean(0)[None, :]


@pytest.mark.parametrize("method, opts", [
    ("gibbs", dict(num_samples=60, num_warmup=200)), ("cavi", {}), ("map", {}),
    ("svi", dict(num_steps=3000, num_samples=60))])
def test_biases_are_fitted_and_enter_every_prediction(planted_biases, method, opts):
    """Gibbs, CAVI, KL-NMF and SVI with ``user_bias`` / ``item_bias``: biases that follow
    the planted ones, rates (factors + biases) that follow the planted rates and add up to
    the total count, and the estimator's predictions are those rates."""
    train, R, Y, bu, bi = planted_biases
    post = get_method(method)(train, BIASED, seed=0, **opts)
    lo = 0.0 if method != "map" else -1e-30  # KL-NMF may drive a bias to 0, as a factor
    assert np.all(post.draws["bu"] > lo) and np.all(post.draws["bi"] > lo)
    if method in ("gibbs", "cavi"):
        assert post.attrs["settings"]["hyper"]["bias_shape"] == 0.3
    elif method == "svi":
        assert post.attrs["hyper"]["bias_rate"] == 0.3
    else:  # the objective never increases with the bias columns either
        obj = post.sample_stats["objective_trace"][0, 0]
        assert np.all(np.diff(obj) <= 1e-10 * np.abs(obj[1:]))
    if method == "cavi":  # both starts run; the fit kept is the one with the higher ELBO
        starts = post.attrs["bias_starts"]
        assert set(starts) == {"0", "50"} and post.attrs["elbo"] == max(starts.values())
        assert starts[str(post.attrs["bias_warmup_used"])] == post.attrs["elbo"]
    uid, iid = np.asarray(post.users.ids), np.asarray(post.items.ids)
    Rhat = _mean_rates_biased(post)
    Rp = R[uid][:, iid]
    assert np.corrcoef(Rhat.ravel(), Rp.ravel())[0, 1] > 0.9
    assert Rhat.sum() == pytest.approx(train.rating.sum(), rel=0.03)
    assert np.corrcoef(post.flat("bi").mean(0), bi[iid])[0, 1] > 0.6
    assert np.corrcoef(post.flat("bu").mean(0), bu[uid])[0, 1] > 0.6
    # the shared linear predictor carries the biases: predict = mean over draws of the rate
    mean = post.predictive(uid[:3], iid[:3]).mean()
    np.testing.assert_allclose(mean, np.diag(Rhat[:3, :3]), rtol=1e-4)


def test_biased_gibbs_fit_statistics_are_the_all_pairs_sums(planted_biases):
    train, _, _, _, _ = planted_biases
    post = get_method("gibbs")(train, BIASED, seed=1, num_samples=5, num_warmup=20)
    Y = np.zeros((train.n_users, train.n_items))
    Y[train.user, train.item] = train.rating
    d = {n: post.draws[n][0, -1].astype(np.float64) for n in ("U", "V", "bu", "bi")}
    Rs = d["U"] @ d["V"].T + d["bu"][:, None] + d["bi"][None, :]
    ll = np.sum(poisson.logpmf(Y, Rs))
    assert post.sample_stats["log_likelihood"][0, -1] == pytest.approx(ll, rel=2e-4)
    rmse = np.sqrt(np.mean((Y - Rs) ** 2))
    assert post.sample_stats["train_rmse"][0, -1] == pytest.approx(rmse, rel=1e-3)


def test_biased_cavi_elbo_never_decreases_and_matches_the_explicit_phi_form(planted_biases):
    from bayesmf.infer.hpf import cavi, cavi_elbo

    train, _, _, _, _ = planted_biases
    data = SparseCounts(train.user, train.item, train.rating, train.n_users, train.n_items)
    hyper, bias = (0.3, 0.3, 1.0, 0.3, 0.3, 1.0), (0.7, 2.0)
    p, info = cavi(data, K, hyper, max_iter=60, tol=0.0, user_bias=True, item_bias=True,
                   bias=bias)
    e = info["elbo"]
    assert len(e) == 61 and np.all(np.diff(e) >= -1e-10 * np.abs(e[1:]))
    # the collapsed ELBO against phi over the extended factors (theta, b_u, 1).(beta, 1, b_i)
    rng = np.random.default_rng(6)
    N, M = train.n_users, train.n_items
    q = {n: rng.uniform(0.3, 2, v.shape) for n, v in p.items()}
    El = lambda s, r: digamma(s) - np.log(r)  # noqa: E731
    zN, zM = np.zeros((N, 1)), np.zeros((M, 1))
    ElA = np.hstack([El(q["gs"], q["gr"]), El(q["bu_s"], q["bu_r"])[:, None], zN])
    ElB = np.hstack([El(q["ls"], q["lr"]), zM, El(q["bi_s"], q["bi_r"])[:, None]])
    ex = ElA[data.user] + ElB[data.item]
    phi = np.exp(ex - ex.max(1, keepdims=True))
    phi /= phi.sum(1, keepdims=True)
    y = data.y
    EA = np.hstack([q["gs"] / q["gr"], (q["bu_s"] / q["bu_r"])[:, None], np.ones((N, 1))])
    EB = np.hstack([q["ls"] / q["lr"], np.ones((M, 1)), (q["bi_s"] / q["bi_r"])[:, None]])
    lz = (np.sum(y[:, None] * phi * (ex - np.log(phi))) - np.sum(gammaln(y + 1))
          - EA.sum(0) @ EB.sum(0))
    a, ap, bp, c, cp, dp = hyper
    ElX, ElE = El(q["ks"], q["kr"]), El(q["ts"], q["tr"])
    EX, EE = q["ks"] / q["kr"], q["ts"] / q["tr"]
    lp = (np.sum(a * ElX[:, None] - gammaln(a) + (a - 1) * ElA[:, :K] - EX[:, None] * EA[:, :K])
          + np.sum(ap * np.log(ap / bp) - gammaln(ap) + (ap - 1) * ElX - ap / bp * EX)
          + np.sum(c * ElE[:, None] - gammaln(c) + (c - 1) * ElB[:, :K] - EE[:, None] * EB[:, :K])
          + np.sum(cp * np.log(cp / dp) - gammaln(cp) + (cp - 1) * ElE - cp / dp * EE))
    for s_, r_ in (("bu_s", "bu_r"), ("bi_s", "bi_r")):
        lp += np.sum(bias[0] * np.log(bias[1]) - gammaln(bias[0])
                     + (bias[0] - 1) * El(q[s_], q[r_]) - bias[1] * q[s_] / q[r_])
    H = sum(gamma_dist(q[s_], scale=1 / q[r_]).entropy().sum()
            for s_, r_ in (("gs", "gr"), ("ls", "lr"), ("ks", "kr"), ("ts", "tr"),
                           ("bu_s", "bu_r"), ("bi_s", "bi_r")))
    assert cavi_elbo(data, hyper, q, bias=bias) == pytest.approx(lz + lp + H, rel=1e-10)


def test_a_global_mean_is_refused_and_the_bias_prior_round_trips(planted_biases):
    train = planted_biases[0]
    for method in ("gibbs", "cavi", "map", "svi", "nuts"):
        with pytest.raises(SpecError, match="has no global mean"):
            get_method(method)(train, ModelSpec(rank=K, likelihood="poisson",
                                                global_mean=True, item_bias=True))
    custom = HierarchicalGamma(bias_shape=0.5, bias_rate=2.0)
    spec = ModelSpec(rank=K, likelihood="poisson", global_mean=False, prior=custom)
    assert ModelSpec.from_dict(spec.to_dict()).prior == custom
    with pytest.raises(SpecError, match="bias_rate must be"):
        HierarchicalGamma(bias_rate=-1.0)


def test_biased_gibbs_interrupted_run_resumes_bit_identical(planted_biases, tmp_path):
    """The HPF chain state with the biases (six arrays) goes through checkpoint/resume: a
    run killed after its second checkpoint resumes to the draws of an uninterrupted run."""
    from bayesmf.testing.interrupt import killed_after_checkpoint

    train = planted_biases[0]
    opts = dict(num_samples=6, num_warmup=6, num_chains=2, seed=3)
    ref = get_method("gibbs")(train, BIASED, **opts)
    path = tmp_path / "hpf.npz"
    with killed_after_checkpoint(2), pytest.raises(KeyboardInterrupt):
        get_method("gibbs")(train, BIASED, checkpoint=path, checkpoint_every=4, **opts)
    post = get_method("gibbs")(train, BIASED, checkpoint=path, checkpoint_every=4,
                               resume=True, **opts)
    assert post.attrs["checkpoint"]["resumed_at"] == 8
    for n in ("U", "V", "bu", "bi", "xi", "eta"):
        np.testing.assert_array_equal(post.draws[n], ref.draws[n], err_msg=n)


_STREAM = dict(seed=5, num_samples=25, num_warmup=25, num_chains=2)


def _stream_pairs(train):
    rng = np.random.default_rng(1)  # observed and unobserved pairs, a repeated one
    u = np.concatenate([train.user[:20], rng.integers(0, train.n_users, 20), [3, 3]])
    i = np.concatenate([train.item[:20], rng.integers(0, train.n_items, 20), [7, 7]])
    return u.astype(np.int64), i.astype(np.int32)


def test_streamed_predictions_are_the_draw_moments_and_need_no_draws(planted_biases):
    """``predict_pairs=`` streams the rate of each pair (biases included): its mean and
    pooled variance over both chains are those of the kept draws, the noise variance is
    the Poisson one (the mean rate), and ``store_draws=False`` keeps the final state only,
    with the same summaries and the statistics' traces."""
    from bayesmf.infer.gibbs import streamed_predictions

    train = planted_biases[0]
    pu, pi = _stream_pairs(train)
    full = get_method("gibbs")(train, BIASED, predict_pairs=(pu, pi), **_STREAM)
    sp = streamed_predictions(full)
    U = full.flat("U").astype(np.float64)[:, pu]
    V = full.flat("V").astype(np.float64)[:, pi]
    r = (np.sum(U * V, -1) + full.flat("bu").astype(np.float64)[:, pu]
         + full.flat("bi").astype(np.float64)[:, pi])  # (C*S, P)
    np.testing.assert_allclose(sp["mean"], r.mean(0), rtol=2e-5)
    np.testing.assert_allclose(sp["var_param"], r.var(0), rtol=2e-3, atol=1e-9)
    np.testing.assert_allclose(sp["noise_var"], sp["mean"])
    np.testing.assert_allclose(sp["var"], r.var(0) + r.mean(0), rtol=2e-4)
    assert full.attrs["streamed_predictions"]["n_draws"] == 50
    np.testing.assert_array_equal(sp["user"], pu)
    # the posterior's own predictive agrees (mean of the Poisson mixture)
    np.testing.assert_allclose(full.predict(pu, pi).mean, sp["mean"], rtol=1e-4)

    small = get_method("gibbs")(train, BIASED, predict_pairs=(pu, pi), store_draws=False,
                                **_STREAM)
    assert small.n_draws == 1 and small.draws["U"].shape == (2, 1, train.n_users, K)
    for n in ("U", "V", "bu", "bi", "xi", "eta"):
        np.testing.assert_array_equal(small.draws[n][:, 0], full.draws[n][:, -1], err_msg=n)
    np.testing.assert_array_equal(
        np.asarray(small.attrs["traces"]["log_likelihood"], np.float32),
        full.sample_stats["log_likelihood"].astype(np.float32))
    assert small.attrs["streamed_predictions"] == full.attrs["streamed_predictions"]
    assert small.attrs["settings"]["store_draws"] is False
    json.dumps(small.attrs)
    # a one-draw posterior still scores and recommends
    assert np.isfinite(small.predict(pu, pi).mean).all()


def test_streamed_run_resumes_to_the_same_summaries(planted_biases, tmp_path):
    from bayesmf.testing.interrupt import killed_after_checkpoint

    train = planted_biases[0]
    pairs = _stream_pairs(train)
    opts = dict(_STREAM, num_samples=8, num_warmup=8, predict_pairs=pairs,
                store_draws=False)
    ref = get_method("gibbs")(train, BIASED, **opts)
    path = tmp_path / "hpf.npz"
    with killed_after_checkpoint(2), pytest.raises(KeyboardInterrupt):
        get_method("gibbs")(train, BIASED, checkpoint=path, checkpoint_every=5, **opts)
    with pytest.raises(SpecError, match="cannot resume"):
        get_method("gibbs")(train, BIASED, checkpoint=path, checkpoint_every=5, resume=True,
                            **{**opts, "predict_pairs": (pairs[0][:5], pairs[1][:5])})
    post = get_method("gibbs")(train, BIASED, checkpoint=path, checkpoint_every=5,
                               resume=True, **opts)
    assert post.attrs["checkpoint"]["resumed_at"] == 10
    assert post.attrs["streamed_predictions"] == ref.attrs["streamed_predictions"]
    np.testing.assert_array_equal(post.draws["U"], ref.draws["U"])


def _matched_factor_correlations(planted_F, fitted_F):
    """Correlation of each planted factor column with the fitted column it is matched to
    (the permutation that maximises the total correlation; the scale of a factor is not
    identified, so correlation, not equality)."""
    from scipy.optimize import linear_sum_assignment

    k = planted_F.shape[1]
    C = np.corrcoef(planted_F.T, fitted_F.T)[:k, k:]
    rows, cols = linear_sum_assignment(-C)
    return C[rows, cols], cols


@pytest.mark.parametrize("method", ["gibbs", "cavi"])
def test_planted_factors_are_recovered_up_to_permutation(method):
    """The item factors themselves (not only the rates) come back, matched by a
    permutation: well-separated planted factors (each item loads on one factor mostly)."""
    rng = np.random.default_rng(5)
    N, M = 150, 60
    be = rng.gamma(0.3, 1.0, (M, K)) + 3.0 * np.eye(K)[np.arange(M) % K]
    th = rng.gamma(1.0, 0.5, (N, K))
    Y = rng.poisson(th @ be.T)
    Y[np.arange(N), rng.integers(0, M, N)] += 1
    u, i = np.nonzero(Y)
    train = Ratings.from_arrays(u, i, Y[u, i].astype(float))
    opts = dict(num_samples=60, num_warmup=300) if method == "gibbs" else {}
    post = get_method(method)(train, SPEC, seed=0, **opts)
    V = post.draws["V"][0].astype(np.float64).mean(0)      # chain 0: one labelling
    planted = be[np.asarray(post.items.ids)]
    corr, perm = _matched_factor_correlations(planted, V)
    assert np.all(corr > 0.9), corr
    assert sorted(perm) == list(range(K))
    Uf = post.draws["U"][0].astype(np.float64).mean(0)[:, perm]
    corr_u, _ = _matched_factor_correlations(th[np.asarray(post.users.ids)], Uf)
    assert np.all(corr_u > 0.7), corr_u
    # similar items on the non-negative factors: an item's nearest items load on its
    # planted factor; cosines of non-negative vectors lie in [0, 1]
    from bayesmf.recommend import similar_items

    dominant = np.argmax(planted, axis=1)
    sim = similar_items(post, post.items.ids[:6], n=5)
    assert sim["score"].between(0, 1 + 1e-6).all()
    for q, grp in sim.groupby("item"):
        j = post.items.encode(np.array([q]))[0]
        others = post.items.encode(grp["similar"].to_numpy())
        assert np.mean(dominant[others] == dominant[j]) >= 0.6


def test_ucb_and_lcb_bound_the_rate(planted):
    """UCB / LCB of a Poisson model rank by the quantile of the rate over the draws, not
    by an integer count quantile (which ties most items)."""
    from bayesmf.predictive import PoissonMixture
    from bayesmf.recommend import recommend
    from bayesmf.scoring.strategies import scores_from_mixture

    rate = np.random.default_rng(0).gamma(2.0, 0.3, (50, 7))
    mix = PoissonMixture(rate)
    np.testing.assert_allclose(scores_from_mixture(mix, "ucb"), np.quantile(rate, 0.9, 0))
    np.testing.assert_allclose(scores_from_mixture(mix, "lcb"), np.quantile(rate, 0.1, 0))
    assert len(np.unique(scores_from_mixture(mix, "ucb"))) == 7
    train, _, _ = planted
    post = get_method("gibbs")(train, SPEC, seed=0, num_samples=30, num_warmup=30)
    u0 = post.users.ids[0]
    rec = recommend(post, [u0], n=5, strategy="ucb", exclude_seen=False)
    U, V = post.flat("U").astype(np.float64), post.flat("V").astype(np.float64)
    bound = np.quantile(np.einsum("sk,smk->sm", U[:, 0], V), 0.9, axis=0)
    top = np.argsort(-bound, kind="stable")[:5]
    np.testing.assert_array_equal(post.items.encode(rec["item"].to_numpy()), top)
    np.testing.assert_allclose(rec["score"].to_numpy(), bound[top], rtol=1e-5)


def test_diagnose_reports_identified_activity_and_popularity(planted):
    """Full-matrix models get the expected total of each probe user over all items
    (activity) and of each probe item over all users (popularity): invariant under the
    scale trade-off theta_k c, beta_k / c that leaves xi, eta and factor sums
    unidentified."""
    from bayesmf.diagnostics import diagnose

    train, _, _ = planted
    post = get_method("gibbs")(train, SPEC, seed=0, num_samples=20, num_warmup=20,
                               num_chains=2)
    df = diagnose(post, n_probe=6)
    act = df[df["kind"] == "activity"]
    pop = df[df["kind"] == "popularity"]
    assert len(act) and len(pop) and act["rhat"].notna().all()
    U, V = post.draws["U"].astype(np.float64), post.draws["V"].astype(np.float64)
    u0 = act["quantity"].iloc[0][len("sum_i m["):-len(", i]")]
    j = post.users.encode(np.array([int(u0)]))[0]
    by_hand = np.einsum("cdk,cdk->cd", U[:, :, j], V.sum(2))        # theta_u . sum beta
    assert act["mean"].iloc[0] == pytest.approx(by_hand.mean(), rel=1e-6)
    # the same totals after rescaling factor 0 (theta * 3, beta / 3): identified
    post.draws["U"] = post.draws["U"] * np.array([3.0, 1, 1], np.float32)
    post.draws["V"] = post.draws["V"] / np.array([3.0, 1, 1], np.float32)
    again = diagnose(post, n_probe=6)
    np.testing.assert_allclose(again[again["kind"] == "activity"]["mean"], act["mean"],
                               rtol=1e-5)


def test_a_held_out_count_of_zero_is_not_a_relevant_pair(gibbs_post):
    """Ranking evaluation of a model over all pairs: a listed test count of 0 is no
    interaction (not relevant), every positive count is."""
    from bayesmf.evaluate import ranking_evaluate

    top = gibbs_post.users.ids[0]
    ranked = bayesmf.recommend.recommend(gibbs_post, [top], n=2)
    test = Ratings.from_arrays([top, top], ranked["item"].to_numpy(), [0.0, 2.0],
                               user_vocab=gibbs_post.users, item_vocab=gibbs_post.items)
    res = ranking_evaluate(gibbs_post, test, k=1)
    assert res["relevant_pairs"] == 1 and res["relevance"].endswith("positive value")
    assert res["hit_rate@1"] == 0.0  # the top item is the zero: not a hit


def test_side_features_are_refused_with_non_negative_factors():
    train = _interactions()[0]
    feats = pd.DataFrame({"user": train.users.ids,
                          "age": np.arange(len(train.users.ids), dtype=float)})
    with pytest.raises(SpecError, match="need real factors.*non-negative"):
        bayesmf.BayesMF(method="gibbs", likelihood="poisson", rank=2,
                        user_features=feats).fit(train)


def test_datatree_labels_activity_and_popularity_by_user_and_item(gibbs_post, planted):
    """ArviZ: ``xi`` is indexed by user and ``eta`` by item (not ``*_dim_0``), and the
    pointwise log likelihood is the exact per-draw Poisson log pmf."""
    from bayesmf.diagnostics import to_datatree

    train = planted[0]
    dt = to_datatree(gibbs_post, log_likelihood=train)
    post = dt["posterior"]
    assert post["xi"].dims[-1] == "user" and post["eta"].dims[-1] == "item"
    np.testing.assert_array_equal(post["eta"].coords["item"].values, gibbs_post.items.ids)
    ll = dt["log_likelihood"]["rating"].values.reshape(-1, train.nnz)
    U, V = gibbs_post.flat("U").astype(np.float64), gibbs_post.flat("V").astype(np.float64)
    lam = np.einsum("snk,snk->sn", U[:, train.user], V[:, train.item])
    np.testing.assert_allclose(ll, poisson.logpmf(train.rating, lam), rtol=2e-5, atol=1e-4)
