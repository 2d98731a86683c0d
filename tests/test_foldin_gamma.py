"""Fold-in of Poisson factorisation (HPF): the per-draw Gibbs row chain draws the row's
exact conditional (one factor: against quadrature of the Gamma-Gamma hierarchy), the
KL-NMF row update reaches the row's maximum likelihood, and fitted models fold users and
items in."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.special import gammaln

import bayesmf
from bayesmf.model.priors import HierarchicalGamma
from bayesmf.recommend import fold_in, fold_in_item
from bayesmf.recommend.foldin import _gamma_row

BETA = np.array([0.8, 1.5, 0.3, 2.0, 0.6])      # the row's items' factors (k = 1)
Y = np.array([2.0, 3.0, 0.0, 4.0, 1.0])
COLSUM = 9.0                                    # sum of every item's factor
N_OTHER = 12


def _inputs(S):
    return (np.broadcast_to(BETA[None, :, None], (S, len(BETA), 1)).copy(),
            np.full((S, 1), COLSUM))


def _quadrature(prior):
    """theta | y, beta with xi integrated out: Gamma(a, xi), xi ~ Gamma(a', a'/b') gives
    p(theta) ~ theta^(a-1) (theta + a'/b')^-(a+a'); times theta^sum(y) e^(-theta B)."""
    a, a2, r2 = prior.a, prior.a_prime, prior.a_prime / prior.b_prime
    grid = np.linspace(1e-6, 6.0, 200001)
    lp = ((a - 1 + Y.sum()) * np.log(grid) - (a + a2) * np.log(grid + r2)
          - grid * COLSUM)
    p = np.exp(lp - lp.max())
    p /= np.trapezoid(p, grid)
    m = np.trapezoid(grid * p, grid)
    v = np.trapezoid((grid - m) ** 2 * p, grid)
    cdf = np.cumsum(p) * (grid[1] - grid[0])
    return grid, m, v, cdf / cdf[-1]


def test_sampled_row_is_the_exact_conditional():
    lik = HierarchicalGamma()
    S = 4000
    OFo, colsum = _inputs(S)
    a, mean, sd = _gamma_row(lik, "user", np.random.default_rng(0), Y, OFo, colsum, None,
                             N_OTHER, False, "sample", 0.0)
    theta = a[:, 0]
    grid, m, v, cdf = _quadrature(lik)
    assert abs(theta.mean() - m) < 4 * np.sqrt(v / S)
    assert theta.var() == pytest.approx(v, rel=0.1)
    assert stats.kstest(theta, lambda x: np.interp(x, grid, cdf)).pvalue > 1e-3
    assert np.all(sd > 0) and mean.shape == (S, 1)


def test_kl_nmf_row_is_the_rows_maximum_likelihood():
    OFo, colsum = _inputs(1)
    for l1 in (0.0, 2.0):
        a, mean, sd = _gamma_row(HierarchicalGamma(), "user", np.random.default_rng(0), Y, OFo,
                                 colsum, None, N_OTHER, False, "mean", l1)
        # sum_i y_i log(theta b_i) - theta (B + l1) is maximised at sum(y) / (B + l1)
        assert a[0, 0] == pytest.approx(Y.sum() / (COLSUM + l1), rel=1e-8)
        assert np.all(np.isnan(sd))


def test_kl_nmf_row_with_a_bias_does_not_lower_the_likelihood():
    OFo, colsum = _inputs(1)
    obo = np.full((1, len(BETA)), 0.2)

    def loglik(theta, b):
        r = theta * BETA + b + 0.2
        return float(np.sum(Y * np.log(r) - gammaln(Y + 1)) - theta * COLSUM
                     - b * N_OTHER - 0.2 * N_OTHER)

    a, *_ = _gamma_row(HierarchicalGamma(), "user", np.random.default_rng(0), Y, OFo, colsum, obo,
                       N_OTHER, True, "mean", 0.0)
    best = loglik(a[0, 1], a[0, 0])
    for t, b in [(a[0, 1] * 1.05, a[0, 0]), (a[0, 1] * 0.95, a[0, 0]),
                 (a[0, 1], a[0, 0] * 1.5 + 1e-3), (a[0, 1], a[0, 0] * 0.5)]:
        assert loglik(t, b) <= best + 1e-9


@pytest.fixture(scope="module")
def counts():
    rng = np.random.default_rng(0)
    th, be = rng.gamma(0.5, 1.0, (60, 3)), rng.gamma(0.5, 1.0, (40, 3))
    Ym = rng.poisson(th @ be.T)
    Ym[np.arange(60), np.arange(60) % 40] += 1
    u, i = np.nonzero(Ym)
    return pd.DataFrame({"user": u, "item": i, "rating": Ym[u, i].astype(float)})


@pytest.mark.parametrize("biases", [False, True])
def test_folding_a_trained_user_in_ranks_like_the_trained_user(counts, biases):
    m = bayesmf.BayesMF(method="gibbs", likelihood="poisson", rank=3, num_samples=40,
                        num_warmup=40, seed=0, user_bias=biases, item_bias=biases).fit(counts)
    post = m.posterior
    own = counts[counts["user"] == 4]
    f = fold_in(post, dict(zip(own["item"], own["rating"])), user="again")
    assert f.info["prior"] == "gamma" and f.info["mode"] == "sample"
    assert np.all(f.F >= 0) and np.all(f.b >= 0)
    assert (f.b > 0).any() == biases
    rates = f.predict(post.items.ids)["mean"].to_numpy()
    trained = post.predict(np.full(len(post.items), 4), post.items.ids).mean
    assert stats.spearmanr(rates, trained)[0] > 0.85
    rec = f.recommend(n=3)
    assert not set(rec["item"]) & set(own["item"])
    again = fold_in(post, dict(zip(own["item"], own["rating"])), user="again")
    np.testing.assert_array_equal(again.F, f.F)          # seeded per user id
    g = fold_in_item(post, {0: 2.0, 1: 1.0, 5: 3.0}, item="new_item")
    assert g.F.shape == (post.n_samples, 1, 3) and np.all(g.F >= 0)


def test_kl_nmf_fold_in_reproduces_a_trained_row(counts):
    m = bayesmf.BayesMF(method="map", likelihood="poisson", rank=3, seed=0).fit(counts)
    post = m.posterior
    own = counts[counts["user"] == 4]
    f = fold_in(post, dict(zip(own["item"], own["rating"])), user="again")
    trained = post.draws["U"][0, 0, post.users.encode(np.array([4]))[0]]
    np.testing.assert_allclose(f.F[0, 0], trained, rtol=0.02, atol=1e-3)


def test_bad_counts_are_refused(counts):
    m = bayesmf.BayesMF(method="map", likelihood="poisson", rank=2).fit(counts)
    with pytest.raises(bayesmf.DataError):
        fold_in(m.posterior, {0: -1.0, 1: 2.0})
