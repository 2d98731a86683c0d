"""Frobenius NMF of explicit ratings on the observed entries (bayesmf.infer.nmf.fit_nmf):
one update checked by hand on a 3x3 example, the objective never increases, the factors
stay non-negative, a planted non-negative low-rank matrix is recovered on held-out
observed entries, the point Posterior, the refusals and the estimator path
``BayesMF(method="nmf")``."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

import bayesmf
from bayesmf.data.ratings import Ratings
from bayesmf.errors import DataError, SpecError
from bayesmf.infer import METHODS
from bayesmf.infer.nmf import (ObservedEntries, fit_nmf, frobenius_objective, masked_nmf,
                               nmf_step)
from bayesmf.model.spec import ModelSpec

NO_BIAS = dict(global_mean=False, user_bias=False, item_bias=False)
TARGET = "bayesmf.infer.nmf:fit_nmf"


@contextlib.contextmanager
def _registered():
    """``method="nmf"`` resolves through :data:`bayesmf.infer.METHODS`."""
    assert METHODS.get("nmf") == TARGET
    yield


# 3x3 example, rank 1; nan = not observed
R3 = np.array([[1.0, 2.0, np.nan], [np.nan, 4.0, 1.0], [3.0, np.nan, 2.0]])
W3 = np.array([[1.0], [2.0], [1.0]])
H3 = np.array([[1.0], [1.0], [2.0]])


def _entries(R):
    u, i = np.nonzero(~np.isnan(R))
    return ObservedEntries(u, i, R[u, i], *R.shape)


def test_one_update_by_hand_on_3x3():
    lam = 0.5
    W, H = nmf_step(_entries(R3), W3, H3, l2=lam, eps=1e-300)
    # W_u <- W_u * sum_{i in O_u} r_ui H_i / (sum_{i in O_u} (W_u H_i) H_i + lam W_u)
    # u=0, O={0,1}: 1 * (1 + 2) / (1 + 1 + 0.5)          = 6/5
    # u=1, O={1,2}: 2 * (4 + 2) / (2 + 4 * 2 + 0.5 * 2)   = 12/11
    # u=2, O={0,2}: 1 * (3 + 4) / (1 + 2 * 2 + 0.5)      = 14/11
    w = np.array([6 / 5, 12 / 11, 14 / 11])
    np.testing.assert_allclose(W[:, 0], w, rtol=1e-12)
    # H_i <- H_i * sum_{u in O_i} r_ui W'_u / (sum_{u in O_i} (W'_u H_i) W'_u + lam H_i)
    h0 = 1 * (1 * w[0] + 3 * w[2]) / (w[0] ** 2 + w[2] ** 2 + 0.5)
    h1 = 1 * (2 * w[0] + 4 * w[1]) / (w[0] ** 2 + w[1] ** 2 + 0.5)
    h2 = 2 * (1 * w[1] + 2 * w[2]) / (2 * w[1] ** 2 + 2 * w[2] ** 2 + 0.5 * 2)
    np.testing.assert_allclose(H[:, 0], [h0, h1, h2], rtol=1e-12)
    # the objective went down: J = sum over the 6 observed (r - w h)^2 + lam (|W|^2 + |H|^2)
    def J(W, H):
        E = np.where(np.isnan(R3), 0.0, np.nan_to_num(R3) - W @ H.T)
        return np.sum(E ** 2) + lam * (np.sum(W ** 2) + np.sum(H ** 2))
    assert frobenius_objective(_entries(R3), W3, H3, lam) == pytest.approx(J(W3, H3))
    assert J(W, H) < J(W3, H3)


def test_observed_zeros_are_data():
    R = np.array([[0.0, 2.0], [3.0, np.nan]])
    d = _entries(R)
    assert d.nnz == 3  # the observed 0 is kept (unlike the count containers)
    assert frobenius_objective(d, np.ones((2, 1)), np.ones((2, 1))) == pytest.approx(
        1.0 + 1.0 + 4.0)


def _planted(seed=0, N=60, M=50, K=3, frac=0.5):
    rng = np.random.default_rng(seed)
    W = rng.gamma(2.0, 0.5, (N, K))
    H = rng.gamma(2.0, 0.5, (M, K))
    R = W @ H.T
    mask = rng.random((N, M)) < frac
    mask[np.arange(N), rng.integers(0, M, N)] = True
    mask[rng.integers(0, N, M), np.arange(M)] = True
    u, i = np.nonzero(mask)
    perm = rng.permutation(len(u))
    return R, u, i, perm


@pytest.fixture(scope="module")
def planted_fit():
    R, u, i, perm = _planted()
    test, tr = perm[:200], perm[200:]
    train = Ratings.from_arrays(u[tr], i[tr], R[u[tr], i[tr]])
    post = fit_nmf(train, ModelSpec(rank=3, **NO_BIAS), l2=0.0, max_iter=1500, tol=1e-12)
    keep = np.isin(u[test], train.users.ids) & np.isin(i[test], train.items.ids)
    return post, R, u[test][keep], i[test][keep], train


def test_objective_never_increases_and_factors_stay_non_negative(planted_fit):
    post, _, _, _, train = planted_fit
    tr = post.sample_stats["objective_trace"][0, 0]
    assert len(tr) == post.attrs["iterations"] + 1 == 1501
    d = np.diff(tr)
    assert np.all(d <= 1e-9 * np.abs(tr[1:])), d.max()
    assert tr[-1] < 1e-3 * tr[0]
    assert np.all(post.draws["U"] >= 0) and np.all(post.draws["V"] >= 0)
    # the reported objective is the objective of the returned factors
    data = ObservedEntries(train.user, train.item, train.rating, train.n_users,
                           train.n_items)
    J = frobenius_objective(data, post.draws["U"][0, 0].astype(np.float64),
                            post.draws["V"][0, 0].astype(np.float64))
    assert J == pytest.approx(post.attrs["objective"], rel=1e-3, abs=1e-4)


@pytest.mark.parametrize("eps", [1e-12, 5.0])  # any eps > 0 keeps the majoriser exact
def test_monotone_with_regularisation_and_zero_ratings(eps):
    rng = np.random.default_rng(1)
    R = rng.integers(0, 6, (20, 15)).astype(float)  # 0..5 stars, many observed 0s
    R[rng.random(R.shape) < 0.4] = np.nan
    W, H, info = masked_nmf(_entries(R), 4, max_iter=300, tol=0.0, l2=2.0, eps=eps,
                            seed=3)
    d = np.diff(info["objective"])
    assert len(d) == 300 and np.all(d <= 1e-9 * info["objective"][1:])
    assert np.all(W > 0) and np.all(H > 0)


def test_recovers_planted_matrix_on_held_out_entries(planted_fit):
    post, R, uu, ii, _ = planted_fit
    pred = post.predict(uu, ii, clip=False)  # point posterior: the mean is W_u . H_i
    rmse = np.sqrt(np.mean((pred.mean - R[uu, ii]) ** 2))
    assert len(uu) > 150
    assert rmse < 0.05 * R.std(), (rmse, R.std())


def test_point_posterior(planted_fit):
    post, _, _, _, train = planted_fit
    assert post.method == "nmf" and (post.n_chains, post.n_draws) == (1, 1)
    assert np.all(post.draws["mu"] == 0) and np.all(post.draws["bu"] == 0)
    rmse = post.sample_stats["train_rmse"][0, 0]
    assert rmse < 0.02
    # tau: the mode of its Gamma(a, b) posterior given the n residuals, (n + 2a - 2) /
    # (SSE + 2b), as the MAP fitter reports it
    n, pr = train.nnz, post.spec.priors
    tau = (n + 2 * pr.noise_a - 2) / (rmse ** 2 * n + 2 * pr.noise_b)
    assert post.draws["tau"].shape == (1, 1)
    assert post.draws["tau"][0, 0] == pytest.approx(tau, rel=1e-5)


def test_refusals():
    R, u, i, perm = _planted()
    train = Ratings.from_arrays(u, i, R[u, i])
    spec = ModelSpec(rank=2, **NO_BIAS)
    with pytest.raises(SpecError, match="switch off global_mean, user_bias, item_bias"):
        fit_nmf(train, ModelSpec(rank=2))
    with pytest.raises(SpecError, match="needs the Gaussian likelihood"):
        fit_nmf(train, ModelSpec(rank=2, likelihood="ordinal", **NO_BIAS))
    for opts, msg in (({"l2": -1.0}, "l2 must be"), ({"eps": 0.0}, "eps must be"),
                      ({"max_iter": 0}, "max_iter must be"), ({"tol": "x"}, "tol must be"),
                      ({"rank": 3}, "unknown option")):
        with pytest.raises(SpecError, match=msg):
            fit_nmf(train, spec, **opts)
    neg = Ratings.from_arrays(u, i, R[u, i] - 1.0)
    with pytest.raises(DataError, match="non-negative ratings"):
        fit_nmf(neg, spec)


def test_l2_defaults_to_spec_reg_factors_and_shrinks():
    R, u, i, _ = _planted(N=30, M=20)
    train = Ratings.from_arrays(u, i, R[u, i])
    a = fit_nmf(train, ModelSpec(rank=2, reg_factors=5.0, **NO_BIAS), max_iter=50)
    b = fit_nmf(train, ModelSpec(rank=2, reg_factors=5.0, **NO_BIAS), max_iter=50, l2=5.0)
    c = fit_nmf(train, ModelSpec(rank=2, **NO_BIAS), max_iter=50, l2=0.0)
    assert a.attrs["options"]["l2"] == 5.0
    np.testing.assert_array_equal(a.draws["U"], b.draws["U"])
    assert np.sum(a.draws["U"] ** 2) < np.sum(c.draws["U"] ** 2)


def test_estimator_path_on_star_ratings():
    rng = np.random.default_rng(4)
    R, u, i, _ = _planted(N=30, M=20)
    stars = np.clip(np.round(R[u, i] * 5 / R.max() + 0.5 * rng.normal(size=len(u))), 1, 5)
    import pandas as pd

    df = pd.DataFrame({"user": u, "item": i, "rating": stars})
    with _registered():
        model = bayesmf.BayesMF(method="nmf", rank=2, **NO_BIAS, l2=1.0,
                                max_iter=200).fit(df)
    post = model.posterior
    assert post.method == "nmf" and post.attrs["options"]["l2"] == 1.0
    assert post.attrs["iterations"] <= 200 and post.attrs["options"]["max_iter"] == 200
    assert post.attrs["estimator"]["method"] == "nmf"
    rec = model.recommend(list(df.user.unique()[:3]), n=2)
    assert len(rec) == 6
    pred = model.predict(df.iloc[:5], clip=False)
    U, V = post.draws["U"][0, 0], post.draws["V"][0, 0]
    uu, ii = post.users.encode(df.user[:5]), post.items.encode(df.item[:5])
    np.testing.assert_allclose(pred["mean"], np.sum(U[uu] * V[ii], 1), rtol=1e-5)
