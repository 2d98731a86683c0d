"""Hierarchical Poisson factorization in NumPyro (bayesmf.infer.hpf_numpyro): SVI and NUTS
of the Gibbs model recover planted rates, agree with the Gibbs posterior mean rates, keep
the Gibbs Posterior layout and all-pairs statistics, refuse bad options and large NUTS
problems, and fit through ``BayesMF(likelihood="poisson", prior="gamma", method="svi")``
on an Interactions container."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from scipy.stats import poisson
from test_hpf import SPEC, _mean_rates, _planted

import bayesmf
from bayesmf.data.interactions import Interactions
from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import get_method
from bayesmf.infer.hpf_numpyro import (NUTS_MAX_PARAMS, all_pairs_stats, fit_nuts_hpf,
                                       fit_svi_hpf)
from bayesmf.infer.nmf import SparseCounts
from bayesmf.model.likelihoods import Poisson
from bayesmf.model.spec import ModelSpec

N, M = 40, 30


@contextlib.contextmanager
def _routed():
    """``method="svi"``/``"nuts"`` on the Poisson likelihood reach the fitters of
    ``Poisson.fitters`` (no patching: the wiring must be in place)."""
    assert {"svi", "nuts"} <= set(Poisson.methods)
    yield


@pytest.fixture(scope="module")
def data():
    train, R, Y = _planted(N=N, M=M)
    u, i = np.nonzero(Y)
    inter = Interactions.from_arrays(u, i, Y[u, i])
    return train, R, Y, inter


@pytest.fixture(scope="module")
def svi_model(data):
    """SVI through the estimator on the Interactions of the planted counts."""
    _, _, _, inter = data
    with _routed():
        return bayesmf.BayesMF(method="svi", likelihood="poisson", prior="gamma", rank=3,
                               num_steps=1500, num_samples=100).fit(inter)


@pytest.fixture(scope="module")
def gibbs_post(data):
    train = data[0]
    return get_method("gibbs")(train, SPEC, seed=0, num_samples=100, num_warmup=200)


@pytest.fixture(scope="module")
def nuts_post(data):
    train = data[0]
    return fit_nuts_hpf(train, SPEC, seed=0, num_samples=100, num_warmup=150,
                        max_tree_depth=6)


def _aligned_truth(post, R):
    return R[np.asarray(post.users.ids)][:, np.asarray(post.items.ids)]


def test_registered_in_the_poisson_fitters():
    assert Poisson.fitters["svi"] == "bayesmf.infer.hpf_numpyro:fit_svi_hpf"
    assert Poisson.fitters["nuts"] == "bayesmf.infer.hpf_numpyro:fit_nuts_hpf"


def test_svi_posterior_layout_and_all_pairs_stats(svi_model, data):
    train, _, Y, _ = data
    post = svi_model.posterior
    assert post.method == "svi" and post.likelihood.name == "poisson"
    assert (post.n_chains, post.n_draws) == (1, 100)
    for n, shp in (("U", (N, 3)), ("V", (M, 3)), ("xi", (N,)), ("eta", (M,))):
        assert post.draws[n].shape == (1, 100) + shp and np.all(post.draws[n] > 0), n
    assert np.all(post.draws["mu"] == 0) and np.all(post.draws["bu"] == 0)
    assert np.all(post.draws["bi"] == 0)
    assert np.ptp(post.flat("U")[:, 0, 0]) > 0  # draws, not a point
    # the statistics are the dense all-pairs sums, zeros included
    U = post.draws["U"][0, 7].astype(np.float64)
    V = post.draws["V"][0, 7].astype(np.float64)
    Yp = Y[np.asarray(post.users.ids)][:, np.asarray(post.items.ids)]
    Rs = U @ V.T
    assert post.sample_stats["log_likelihood"][0, 7] == pytest.approx(
        np.sum(poisson.logpmf(Yp, Rs)), rel=1e-6)
    assert post.sample_stats["train_rmse"][0, 7] == pytest.approx(
        np.sqrt(np.mean((Yp - Rs) ** 2)), rel=1e-6)
    # the ELBO went up (window means, first vs last)
    e = post.attrs["elbo_trace"]
    assert e[-1] > e[0] and post.attrs["steps"] <= 1500


def test_svi_recovers_planted_rates(svi_model, data):
    train, R, _, _ = data
    post = svi_model.posterior
    Rhat = _mean_rates(post)
    assert np.corrcoef(Rhat.ravel(), _aligned_truth(post, R).ravel())[0, 1] > 0.9
    assert Rhat.sum() == pytest.approx(train.rating.sum(), rel=0.05)


def test_svi_and_nuts_agree_with_gibbs_on_probe_pairs(svi_model, nuts_post, gibbs_post):
    rng = np.random.default_rng(5)
    pu, pi = rng.integers(0, N, 200), rng.integers(0, M, 200)
    g = _mean_rates(gibbs_post)[pu, pi]
    s = _mean_rates(svi_model.posterior)[pu, pi]
    n = _mean_rates(nuts_post)[pu, pi]
    assert np.asarray(svi_model.posterior.users.ids).tolist() == \
        np.asarray(gibbs_post.users.ids).tolist()
    assert np.corrcoef(s, g)[0, 1] > 0.95
    assert np.corrcoef(n, g)[0, 1] > 0.95
    # and they are not the same numbers by construction
    assert not np.allclose(s, g)


def test_nuts_posterior(nuts_post, data):
    train, R, _, _ = data
    post = nuts_post
    assert post.method == "nuts" and (post.n_chains, post.n_draws) == (1, 100)
    assert np.all(post.draws["U"] > 0) and post.draws["eta"].shape == (1, 100, M)
    assert post.sample_stats["diverging"].shape == (1, 100)
    assert post.attrs["n_params"] == (N + M) * 4
    assert post.attrs["n_divergent"] <= 5
    Rhat = _mean_rates(post)
    assert np.corrcoef(Rhat.ravel(), _aligned_truth(post, R).ravel())[0, 1] > 0.9
    assert Rhat.sum() == pytest.approx(train.rating.sum(), rel=0.05)
    sc = SparseCounts(train.user, train.item, train.rating, N, M)
    ll, _ = all_pairs_stats(sc, post.draws["U"][0, -1], post.draws["V"][0, -1])
    assert post.sample_stats["log_likelihood"][0, -1] == ll


def test_nuts_size_limit_is_a_clear_spec_error(data):
    train = data[0]
    with pytest.raises(SpecError, match=r"280 parameters, above the size limit of 100 "
                                        r"\(max_params\).*gibbs"):
        fit_nuts_hpf(train, SPEC, max_params=100)
    assert NUTS_MAX_PARAMS == 200_000
    # the default limit: 50,000 users + 10 items at rank 3 is 200,040 coordinates
    big = Ratings.from_arrays(np.arange(50_000), np.arange(50_000) % 10,
                              np.ones(50_000))
    with pytest.raises(SpecError, match=r"200,040 parameters, above the size limit of "
                                        r"200,000"):
        fit_nuts_hpf(big, SPEC)


@pytest.mark.parametrize("fit, opts, msg", [
    (fit_svi_hpf, {"learning_rte": 0.1}, "unknown option"),
    (fit_svi_hpf, {"learning_rate": -0.1}, "learning_rate must be"),
    (fit_svi_hpf, {"lr_decay": 1.5}, r"lr_decay must be in \(0, 1\]"),
    (fit_svi_hpf, {"num_steps": 0}, "num_steps must be an integer >= 1"),
    (fit_svi_hpf, {"num_samples": 2.5}, "num_samples must be an integer"),
    (fit_svi_hpf, {"init_scale": float("nan")}, "init_scale must be"),
    (fit_nuts_hpf, {"target_accept": 1.5}, r"target_accept must be in \(0, 1\)"),
    (fit_nuts_hpf, {"thin": 5, "num_samples": 2}, "thin=5 exceeds num_samples=2"),
    (fit_nuts_hpf, {"chain_method": "threads"}, "chain_method must be"),
    (fit_nuts_hpf, {"max_params": 0}, "max_params must be an integer >= 1"),
    (fit_nuts_hpf, {"dense_mass": "yes"}, "dense_mass must be True or False"),
])
def test_bad_options_are_spec_errors(data, fit, opts, msg):
    with pytest.raises(SpecError, match=msg):
        fit(data[0], SPEC, **opts)


def test_bad_specs_are_spec_errors(data):
    train = data[0]
    for fit in (fit_svi_hpf, fit_nuts_hpf):
        with pytest.raises(SpecError, match="Poisson likelihood, got likelihood 'gaussian'"):
            fit(train, ModelSpec(rank=3))
        with pytest.raises(SpecError, match="global_mean"):
            fit(train, ModelSpec(rank=3, likelihood="poisson"))


def test_estimator_recommend_and_evaluate(svi_model, data):
    _, _, _, inter = data
    users = list(inter.users.ids[:4])
    rec = svi_model.recommend(users, n=3)
    seen = set(zip(inter.users.decode(inter.user), inter.items.decode(inter.item)))
    assert len(rec) == 12 and not any((u, i) in seen for u, i in zip(rec["user"], rec["item"]))
    assert np.all(rec["score"].to_numpy() >= 0)
    r = svi_model.recommend(users[:2], n=2, strategy="prob", threshold=1)
    assert len(r) == 4


def test_nuts_with_biases():
    """NUTS of the biased model (``bu``, ``bi`` sites): positive bias draws, the parameter
    count with the biases, and the all-pairs log likelihood of the extended factors."""
    from test_hpf import BIASED, _planted_biases

    from bayesmf.infer.nmf import extended_factors

    train = _planted_biases()[0]
    post = fit_nuts_hpf(train, BIASED, seed=0, num_samples=20, num_warmup=30)
    Nb, Mb = train.n_users, train.n_items
    assert post.attrs["n_params"] == (Nb + Mb) * (3 + 1) + Nb + Mb
    assert np.all(post.draws["bu"] > 0) and np.all(post.draws["bi"] > 0)
    assert np.ptp(post.draws["bi"][0, :, 0]) > 0  # the biases move
    sc = SparseCounts(train.user, train.item, train.rating, Nb, Mb)
    d = {n: post.draws[n][0, -1] for n in ("U", "V", "bu", "bi")}
    ll, _ = all_pairs_stats(sc, *extended_factors(d["U"], d["V"], d["bu"], d["bi"]))
    assert post.sample_stats["log_likelihood"][0, -1] == ll
