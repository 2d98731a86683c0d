"""Strategies: direction of the uncertainty-aware ones, closed forms, reproducibility."""

import numpy as np
import pytest
from scipy import stats

from _uq_synth import make_posterior, posterior_from_arrays
from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import SpecError
from bayesmf.recommend import make_strategy, recommend
from bayesmf.recommend.strategies import (gauss_hermite_expectation, scores_from_components,
                                          thompson_draw_index)


def _certain_vs_uncertain(S=40):
    """One user, items 0 (certain) and 1 (uncertain) with the same posterior mean 4.0,
    item 2 clearly worse. Antithetic draws make the means equal exactly."""
    users, items = Vocabulary([1, 2], "user"), Vocabulary([100, 101, 102], "item")
    train = Ratings.from_indices([1], [2], [1.0], users, items)
    z = np.random.default_rng(0).standard_normal(S // 2)
    z = np.concatenate([z, -z])
    V = np.zeros((S, 3, 1), np.float32)
    V[:, 0, 0] = 1.0
    V[:, 1, 0] = 1.0 + 1.5 * z
    V[:, 2, 0] = 0.2
    post = posterior_from_arrays(mu=np.full(S, 3.0), bu=np.zeros((S, 2)), bi=np.zeros((S, 3)),
                                 U=np.ones((S, 2, 1), np.float32), V=V, tau=np.full(S, 4.0),
                                 train=train)
    return post


def test_ucb_favours_and_lcb_avoids_uncertain_items():
    post = _certain_vs_uncertain()
    mean = recommend(post, [1], n=3)
    assert mean["score"].iloc[0] == pytest.approx(mean["score"].iloc[1], abs=1e-5)
    ucb = recommend(post, [1], n=1, strategy="ucb")
    lcb = recommend(post, [1], n=1, strategy="lcb")
    assert ucb["item"].tolist() == [101] and lcb["item"].tolist() == [100]
    # the same holds for the parameter-only predictive and the Gaussian approximation
    assert recommend(post, [1], n=1, strategy="upper", noise=False)["item"].tolist() == [101]
    assert recommend(post, [1], n=1, strategy="lower", quantile_method="gaussian")["item"].tolist() == [100]
    # P(r >= 4.5) favours the wide item, P(r >= 3.5) the narrow one
    assert recommend(post, [1], n=1, strategy="prob", threshold=4.5)["item"].tolist() == [101]
    assert recommend(post, [1], n=1, strategy="prob", threshold=3.5)["item"].tolist() == [100]


def test_quantile_and_prob_scores_equal_posterior_quantities():
    post, _ = make_posterior(n_users=6, n_items=25, k=2, draws=7, seed=1)
    rec = recommend(post, [0, 1], n=5, strategy="upper", quantile=0.8)
    q = post.quantiles(rec.user, rec.item, [0.8])[0]
    assert rec["score"].to_numpy() == pytest.approx(q, abs=1e-7)
    rec = recommend(post, [2], n=5, strategy="prob", threshold=4.0)
    assert rec["score"].to_numpy() == pytest.approx(post.prob_at_least(rec.user, rec.item, 4.0))
    # noise-free quantile = empirical quantile of the draws of the expected rating
    rec = recommend(post, [3], n=3, strategy="lower", quantile=0.25, noise=False)
    m, _ = post.pair_moments(post.users.encode(rec.user), post.items.encode(rec.item))
    assert rec["score"].to_numpy() == pytest.approx(np.quantile(m, 0.25, axis=0))
    g = recommend(post, [3], n=3, strategy="upper", quantile=0.9, quantile_method="gaussian")
    p = post.predict(g.user, g.item)
    assert g["score"].to_numpy() == pytest.approx(p.mean + stats.norm.ppf(0.9) * p.std, abs=1e-6)


def test_thompson_reproducible_and_uses_one_draw_per_user():
    post, _ = make_posterior(n_users=40, n_items=30, k=2, draws=9, seed=2)
    a = recommend(post, None, n=3, strategy="thompson", seed=11)
    b = recommend(post, None, n=3, strategy="thompson", seed=11, chunk_size=7)
    c = recommend(post, None, n=3, strategy="thompson", seed=12)
    assert a.equals(b)
    assert not a["item"].equals(c["item"])
    s = thompson_draw_index(post.users.ids, 11, post.n_samples)
    assert len(np.unique(s)) > 4  # spread over draws
    u = 5
    row = a[a.user == u]
    m, _ = post.pair_moments(np.full(3, u), post.items.encode(row.item))
    assert row["score"].to_numpy() == pytest.approx(m[s[u]], abs=1e-6)
    # unknown users draw a concrete population member, reproducibly
    x = recommend(post, [999], n=3, strategy="thompson", seed=1)
    y = recommend(post, [999], n=3, strategy="thompson", seed=1)
    assert x.equals(y) and (~x["known_user"]).all()
    # the text of an integer id is the same user and gets the same draw
    t = recommend(post, ["3", str(u)], n=3, strategy="thompson", seed=11)
    ref = a[a.user.isin([u, 3])].reset_index(drop=True)
    assert t["item"].tolist() == ref["item"].tolist()
    np.testing.assert_allclose(t["score"], ref["score"])


def test_expected_utility_gauss_hermite_and_draws():
    rng = np.random.default_rng(3)
    m = rng.normal(3, 1, (5, 4))
    sd = rng.uniform(0.3, 1, (5, 4))
    # E[r^2] of the mixture = mean_s (m_s^2 + sd_s^2), exact for polynomials
    gh = gauss_hermite_expectation(lambda r: r ** 2, m, sd, n_nodes=5)
    assert gh == pytest.approx((m ** 2 + sd ** 2).mean(0))
    st = make_strategy("utility", utility=lambda r: np.maximum(r - 3.5, 0.0))
    exact = scores_from_components(m, sd, st)
    z = (m - 3.5) / sd  # E[max(r - t, 0)] of a Gaussian
    ref = ((m - 3.5) * stats.norm.cdf(z) + sd * stats.norm.pdf(z)).mean(0)
    assert exact == pytest.approx(ref, abs=5e-3)  # kinked utility: GH converges slowly
    fine = scores_from_components(m, sd, make_strategy(
        "utility", utility=lambda r: np.maximum(r - 3.5, 0.0), n_nodes=100))
    assert np.abs(fine - ref).max() < np.abs(exact - ref).max()
    mc = scores_from_components(m, sd, make_strategy(
        "utility", utility=lambda r: np.maximum(r - 3.5, 0.0), utility_method="draws",
        n_draws=20000, seed=0))
    assert mc == pytest.approx(ref, abs=0.03)
    post, _ = make_posterior(n_users=5, n_items=20, k=2, draws=4, seed=4)
    lin = recommend(post, [0], n=5, strategy="utility", utility=lambda r: 2 * r - 1)
    mean = recommend(post, [0], n=5)
    assert lin["item"].tolist() == mean["item"].tolist()
    assert lin["score"].to_numpy() == pytest.approx(2 * mean["score"].to_numpy() - 1, abs=1e-5)


def test_strategy_validation():
    with pytest.raises(SpecError):
        make_strategy("bogus")
    with pytest.raises(SpecError):
        make_strategy("upper", quantile=0.2)
    with pytest.raises(SpecError):
        make_strategy("utility")
    with pytest.raises(SpecError):
        make_strategy("prob", threshold=float("nan"))
    # None: the likelihood's relevance threshold, resolved when a posterior scores it
    assert make_strategy("prob", threshold=None).threshold is None
    # an option of another strategy is refused, not silently ignored
    with pytest.raises(SpecError, match="quantile= applies to the 'upper' and 'lower'"):
        make_strategy("mean", quantile=0.9)
    with pytest.raises(SpecError, match="threshold= applies to the 'prob' strategy, not "
                                        "'upper'"):
        make_strategy("ucb", threshold=4.0)
    with pytest.raises(SpecError, match="utility= applies"):
        make_strategy("thompson", utility=lambda r: r)
    assert make_strategy("UCB").name == "upper" and make_strategy("lcb").quantile == 0.1


def test_bound_without_noise_is_the_quantile_of_the_expected_values():
    """``noise=False`` on a non-Gaussian family: UCB / LCB bound the per-draw expected
    value (P(y=1) for Bernoulli), as they bound m_s for the Gaussian."""
    from bayesmf.model.likelihoods import BernoulliLogit
    from bayesmf.scoring.strategies import scores_from_mixture

    m = np.random.default_rng(1).normal(0.0, 1.5, (40, 6))
    mix = BernoulliLogit().predictive(m, np.zeros_like(m), {})
    p = 1.0 / (1.0 + np.exp(-m))
    for q, name in ((0.9, "upper"), (0.1, "lower")):
        st = make_strategy(name, quantile=q, noise=False)
        np.testing.assert_allclose(scores_from_mixture(mix, st), np.quantile(p, q, axis=0),
                                   rtol=1e-6)
    # with the noise too: a Bernoulli predictive quantile is 0 or 1 (every item would tie),
    # so the discrete families bound the expected value whatever noise says
    for q, name in ((0.9, "upper"), (0.1, "lower")):
        np.testing.assert_allclose(scores_from_mixture(mix, make_strategy(name, quantile=q)),
                                   np.quantile(p, q, axis=0), rtol=1e-6)
    assert set(np.unique(mix.quantile(0.9))) <= {0.0, 1.0}


def test_prob_threshold_outside_a_discrete_range_is_refused():
    """P(y >= t) of a 0/1 family is 1 for every pair at t <= 0 and 0 at t > 1: ranking by
    it would rank by item order, so such a threshold is refused; inside the range (and
    for a continuous family, any finite t) it scores."""
    import pandas as pd

    import bayesmf
    from bayesmf.model.likelihoods import OrdinalProbit, Poisson, get_likelihood

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user": np.repeat(np.arange(12), 4),
                       "item": np.concatenate([rng.permutation(8)[:4] for _ in range(12)])})
    df["rating"] = (rng.random(len(df)) < 0.5).astype(float)
    m = bayesmf.BayesMF(method="map", rank=2, likelihood="bernoulli-logit").fit(df)
    for t in (2.0, 0.0, -1.0):
        with pytest.raises(SpecError, match="same for every pair.*0 < t <= 1"):
            m.recommend([0], n=3, strategy="prob", threshold=t)
    ok = m.recommend([0], n=3, strategy="prob", threshold=0.5)
    assert len(ok) == 3 and np.all((ok["score"] > 0) & (ok["score"] < 1))
    assert get_likelihood("gaussian").check_relevance_threshold(-7.0) == -7.0
    with pytest.raises(SpecError, match="takes values 0..inf"):
        Poisson().check_relevance_threshold(0.0)
    assert Poisson().check_relevance_threshold(3.0) == 3.0
    with pytest.raises(SpecError, match="takes values 1..5"):
        OrdinalProbit(levels=(1, 2, 3, 4, 5)).check_relevance_threshold(5.5)
