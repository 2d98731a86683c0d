"""Fold-in under augmented likelihoods (Bernoulli logit / probit, ordinal): the per-draw
Gibbs chain on (row, augmentation) draws the row's exact conditional (checked against
quadrature), IRLS finds its mode, and a new user of a model fitted to sampled negatives
gets negatives by the fitted rule."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import log_ndtr, log_expit

import bayesmf
from bayesmf.data import Interactions
from bayesmf.model.likelihoods import BernoulliLogit, BernoulliProbit
from bayesmf.recommend import fold_in
from bayesmf.recommend.foldin import _augmented_row, _rule_item_negatives, _rule_negatives

X_J = np.array([1.2, -0.7, 0.4, 2.0, -1.5, 0.9, -0.2, 1.1])
OFF_J = np.array([0.3, -0.2, 0.5, -1.0, 0.1, 0.0, 0.6, -0.4])
Y_J = np.array([1, 0, 1, 0, 0, 1, 1, 1], float)
P0 = 0.8


def _log_target(a, lik):
    eta = OFF_J[None, :] + X_J[None, :] * a[:, None]
    s = 2 * Y_J - 1
    ll = log_expit(s * eta) if lik == "logit" else log_ndtr(s * eta)
    return ll.sum(1) - 0.5 * P0 * a * a


def _quadrature(lik):
    grid = np.linspace(-8, 8, 40001)
    lp = _log_target(grid, lik)
    p = np.exp(lp - lp.max())
    p /= np.trapezoid(p, grid)
    m = np.trapezoid(grid * p, grid)
    v = np.trapezoid((grid - m) ** 2 * p, grid)
    cdf = np.cumsum(p) * (grid[1] - grid[0])
    return grid, m, v, cdf / cdf[-1], grid[np.argmax(lp)]


def _inputs(S):
    Z = np.broadcast_to(X_J[None, :, None], (S, len(X_J), 1)).copy()
    off = np.broadcast_to(OFF_J, (S, len(X_J))).copy()
    return Z, off, np.full((S, 1, 1), P0), np.zeros((S, 1))


@pytest.mark.parametrize("lik_name, lik", [("logit", BernoulliLogit()),
                                           ("probit", BernoulliProbit())])
def test_sampled_row_is_the_exact_conditional(lik_name, lik):
    S = 4000
    Z, off, P0s, m0 = _inputs(S)
    a, _, _, acc = _augmented_row(lik, {}, np.random.default_rng(0), Z, Y_J, off, P0s, m0,
                                  "sample")
    assert 0.2 < acc <= 1.0
    a = a[:, 0]
    grid, m, v, cdf, _ = _quadrature(lik_name)
    assert abs(a.mean() - m) < 4 * np.sqrt(v / S)
    assert a.var() == pytest.approx(v, rel=0.1)
    ks = stats.kstest(a, lambda x: np.interp(x, grid, cdf))
    assert ks.pvalue > 1e-3


@pytest.mark.parametrize("lik_name, lik", [("logit", BernoulliLogit()),
                                           ("probit", BernoulliProbit())])
def test_mean_mode_is_the_rows_map(lik_name, lik):
    Z, off, P0s, m0 = _inputs(1)
    a, mean, L, acc = _augmented_row(lik, {}, np.random.default_rng(0), Z, Y_J, off, P0s,
                                     m0, "mean")
    assert np.isnan(acc)
    *_, mode = _quadrature(lik_name)
    assert a[0, 0] == pytest.approx(mode, abs=1e-3)   # grid step 4e-4
    assert np.array_equal(a, mean)


def _heavy_row(name, n, a_true, seed=1):
    """A one-coordinate row with ``n`` informative observations (a sharp posterior far
    from the prior mean): encoded ``y``, design ``x``, the likelihood and its parameters."""
    from bayesmf.model.likelihoods import OrdinalProbit

    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    latent = a_true * x + rng.normal(size=n)
    if name == "ordinal":
        lik, cut = OrdinalProbit(levels=(1.0, 2.0, 3.0, 4.0)), np.array([-1.0, 0.3, 1.5])
        return np.searchsorted(cut, latent).astype(float), x, lik, {"cutpoints": cut}
    lik = BernoulliProbit() if name == "probit" else BernoulliLogit()
    if name == "logit":
        latent = a_true * x + rng.logistic(size=n)
    return (latent > 0).astype(float), x, lik, {}


@pytest.mark.parametrize("name, n, a_true", [("probit", 1000, 4.0), ("logit", 1000, 4.0),
                                             ("ordinal", 1000, 3.0), ("probit", 30, 1.0)])
def test_a_row_with_many_observations_is_drawn_exactly(name, n, a_true):
    """Many informative observations make the data augmentation alone mix slowly (probit:
    almost all of the latent's information is missing when |eta| is large: with 2000
    observations, 25 sweeps from the prior mean stopped at 2.5 for a posterior at 3.8 +-
    0.19). The chain starts
    at the row's mode and alternates independence Metropolis-Hastings steps (Laplace t
    proposal) with the augmentation sweeps: the draws match quadrature of the exact
    conditional, built from the likelihood's own log_prob."""
    import jax.numpy as jnp

    y, x, lik, theta = _heavy_row(name, n, a_true)
    g = np.linspace(-2.0, 8.0, 4001)
    th = {k: jnp.asarray(v) for k, v in theta.items()}
    ll = np.asarray(lik.log_prob(jnp.asarray(y)[None, :], jnp.asarray(g[:, None] * x), th),
                    np.float64).sum(1)
    lp = ll - 0.5 * P0 * g * g
    p = np.exp(lp - lp.max())
    p /= np.trapezoid(p, g)
    m = np.trapezoid(g * p, g)
    v = np.trapezoid((g - m) ** 2 * p, g)
    cdf = np.cumsum(p) * (g[1] - g[0])
    S = 600
    Z = np.broadcast_to(x[None, :, None], (S, n, 1)).copy()
    th_s = {k: np.broadcast_to(val, (S,) + val.shape).copy() for k, val in theta.items()}
    a, _, _, acc = _augmented_row(lik, th_s, np.random.default_rng(0), Z, y,
                                  np.zeros((S, n)), np.full((S, 1, 1), P0), np.zeros((S, 1)),
                                  "sample")
    a = a[:, 0]
    assert abs(a.mean() - m) < 4 * np.sqrt(v / S), (a.mean(), m, np.sqrt(v))
    assert a.var() == pytest.approx(v, rel=0.1)
    assert stats.kstest(a, lambda q: np.interp(q, g, cdf / cdf[-1])).pvalue > 1e-3
    assert acc > (0.5 if n > 100 else 0.2)  # the Laplace proposal fits a sharp posterior


@pytest.fixture(scope="module")
def clicks():
    rng = np.random.default_rng(0)
    U, V = rng.normal(size=(80, 2)), rng.normal(size=(50, 2))
    Y = rng.random((80, 50)) < 0.3 / (1 + np.exp(-(U @ V.T)))
    Y[np.arange(80), np.arange(80) % 50] = True
    u, i = np.nonzero(Y)
    it = Interactions.from_arrays(u, i)
    m = bayesmf.BayesMF(method="gibbs", likelihood="bernoulli-logit", rank=2,
                        num_samples=30, num_warmup=30, seed=0).fit(it, negatives="uniform:3")
    return m, u, i


def test_new_user_gets_negatives_by_the_fitted_rule(clicks):
    m, u, i = clicks
    post = m.posterior
    liked = [int(x) for x in i[u == 3][:5]]
    f = fold_in(post, {x: 1.0 for x in liked}, user="new")
    assert f.info["negatives"] == {"rule": "uniform:3", "drawn": 15}
    assert len(f.info["acceptance"]) == 1 and 0 < f.info["acceptance"][0] <= 1
    items, y = f.rated[0]          # its own data only: the negatives stay recommendable
    assert len(items) == 5 and y.sum() == 5
    rec = f.recommend(n=5)
    assert len(rec) == 5 and not set(rec["item"]) & set(liked)
    again = fold_in(post, {x: 1.0 for x in liked}, user="new")
    np.testing.assert_array_equal(again.F, f.F)          # seeded per user id
    # data with zeros are used as given: no negatives drawn
    g = fold_in(post, pd.DataFrame({"user": "a", "item": liked[:2] + [liked[2]],
                                    "rating": [1.0, 1.0, 0.0]}))
    assert g.info["negatives"]["drawn"] == 0 and len(g.rated[0][0]) == 3


def test_folding_a_trained_user_in_ranks_like_the_trained_user(clicks):
    m, u, i = clicks
    post = m.posterior
    user = 5
    own = post.train.seen_items(post.users.encode(np.array([user]))[0])
    f = fold_in(post, {int(post.items.ids[x]): 1.0 for x in own}, user="again", seed=3)
    scores_f = f.predict(post.items.ids)["mean"].to_numpy()
    scores_t = post.predict(np.full(len(post.items), user), post.items.ids).mean
    assert stats.spearmanr(scores_f, scores_t)[0] > 0.8


def test_new_item_gets_the_negatives_the_users_draws_would_give_it(clicks):
    """fold_in_item of a model fitted to sampled negatives: the users whose fitted draws
    would have picked the new item (uniform:3: user u with d_u positives about
    3 d_u / (M - d_u + 1)), never a positive; a trained item refolded from its positives
    gets about its trained P(y = 1)."""
    from bayesmf.data.negatives import NegativeSampler
    from bayesmf.recommend import fold_in_item

    m, u, i = clicks
    post = m.posterior
    rule = NegativeSampler(kind="uniform", per_positive=3, seed=0)
    pos = np.array([0, 1, 2])
    d = post.train.user_counts.astype(float)
    M = len(post.items)
    p = np.minimum(1.0, 3 * d / (M - d + 1))
    p[pos] = 0
    hits = np.zeros(len(d))
    for key in range(300):
        neg = _rule_item_negatives(post, rule, pos, 0, key)
        assert not set(neg) & set(pos)
        hits[neg] += 1
    assert abs(hits.sum() / 300 - p.sum()) < 4 * np.sqrt((p * (1 - p)).sum() / 300)
    item = 7
    users = [int(x) for x in u[i == item]]  # its training positives
    f = fold_in_item(post, {x: 1.0 for x in users}, item=1000)
    assert f.info["negatives"]["drawn"] > 0
    refold = f.predict(post.users.ids)["mean"].to_numpy().mean()
    trained = post.predict(post.users.ids, np.full(len(post.users), item)).mean.mean()
    assert abs(refold - trained) < 0.08, (refold, trained)


def test_rule_negatives_follow_training_popularity(clicks):
    m, *_ = clicks
    post = m.posterior
    from bayesmf.data.negatives import NegativeSampler

    rule = NegativeSampler(kind="popularity", beta=1.0, per_positive=2, seed=4)
    pos = np.array([0, 1, 2])
    neg = _rule_negatives(post, rule, pos, 0, 11)
    assert len(neg) == 6 and len(set(neg)) == 6 and not set(neg) & set(pos)
    counts = post.train.item_counts.astype(float)
    draws = np.concatenate([_rule_negatives(post, rule, pos, 0, key) for key in range(400)])
    freq = np.bincount(draws, minlength=len(counts))[3:]
    assert stats.spearmanr(freq, counts[3:])[0] > 0.5


def test_point_estimate_and_ordinal_fold_in():
    rng = np.random.default_rng(2)
    u = rng.integers(0, 40, 600)
    i = rng.integers(0, 30, 600)
    df = pd.DataFrame({"user": u, "item": i, "rating": rng.integers(1, 6, 600).astype(float)})
    df = df.drop_duplicates(["user", "item"])
    ordinal = bayesmf.BayesMF(method="gibbs", likelihood="ordinal", rank=2, num_samples=20,
                              num_warmup=20, seed=0).fit(df)
    f = fold_in(ordinal.posterior, {0: 5.0, 1: 4.0, 2: 1.0}, user="new")
    pred = f.predict([0, 1, 2])
    assert np.all((pred["mean"] >= 1) & (pred["mean"] <= 5))
    assert "negatives" not in f.info
    thumbs = df.assign(rating=(df["rating"] >= 4).astype(float))
    mp = bayesmf.BayesMF(method="map", likelihood="bernoulli-logit", rank=2,
                         reg_factors=0.1).fit(thumbs)
    g = fold_in(mp.posterior, {0: 1.0, 1: 0.0, 2: 1.0}, user="new")
    assert g.info["mode"] == "mean" and g.info["prior"] == "ridge"
    assert np.all(np.isfinite(g.F)) and np.all(np.isfinite(g.b))
