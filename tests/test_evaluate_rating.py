"""Rating metrics and predictive quantities against closed forms and hand computations."""

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from _uq_synth import heldout, make_posterior, posterior_from_arrays
from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import DataError, SpecError
from bayesmf.evaluate import (coverage_from_pit, evaluate, gaussian_crps, mixture_crps,
                              mixture_logpdf, mixture_pit, rating_metrics, rmse)
from bayesmf.recommend.strategies import mixture_quantile


def _tiny(S=1, seed=0):
    """2 users x 2 items, k=1, S draws; train = the diagonal."""
    rng = np.random.default_rng(seed)
    users, items = Vocabulary([10, 20], "user"), Vocabulary([7, 8], "item")
    train = Ratings.from_indices([0, 1], [0, 1], [4.0, 2.0], users, items)
    post = posterior_from_arrays(
        mu=3.0 + 0.1 * rng.standard_normal(S), bu=0.2 * rng.standard_normal((S, 2)),
        bi=0.2 * rng.standard_normal((S, 2)), U=rng.standard_normal((S, 2, 1)),
        V=rng.standard_normal((S, 2, 1)), tau=rng.uniform(1, 4, S), train=train)
    return post, train


def _components(post, u, i):
    mu, bu, bi = post.flat("mu"), post.flat("bu"), post.flat("bi")
    U, V, tau = post.flat("U"), post.flat("V"), post.flat("tau")
    m = mu + bu[:, u] + bi[:, i] + (U[:, u] * V[:, i]).sum(-1)
    return m, 1 / np.sqrt(tau)


def test_one_draw_posterior_is_gaussian():
    post, _ = _tiny(S=1)
    m, sd = _components(post, 0, 1)
    pred = post.predict([10], [8], interval=0.9, clip=False)
    assert pred.mean[0] == pytest.approx(m[0])
    assert pred.std[0] == pytest.approx(sd[0])
    assert pred.std_param[0] == pytest.approx(0.0)
    assert pred.lower[0] == pytest.approx(stats.norm(m[0], sd[0]).ppf(0.05))
    q = post.quantiles([10], [8], [0.25, 0.75])[:, 0]
    assert q == pytest.approx(stats.norm(m[0], sd[0]).ppf([0.25, 0.75]))
    assert post.prob_at_least([10], [8], 3.5)[0] == pytest.approx(stats.norm(m[0], sd[0]).sf(3.5))
    test = Ratings.from_indices([0], [1], [3.0], post.users, post.items)
    assert post.log_predictive_density(test)[0] == pytest.approx(stats.norm(m[0], sd[0]).logpdf(3.0))


def test_two_draw_mixture_quantiles_match_root_finding():
    post, _ = _tiny(S=2, seed=3)
    m, sd = _components(post, 1, 0)
    F = lambda x, q: np.mean(stats.norm.cdf(x, m, sd)) - q  # noqa: E731
    for q in (0.05, 0.3, 0.5, 0.9, 0.99):
        ref = optimize.brentq(F, -50, 50, args=(q,), xtol=1e-12)
        assert post.quantiles([20], [7], [q])[0, 0] == pytest.approx(ref, abs=1e-7)
        assert mixture_quantile(m[:, None], sd[:, None], q)[0] == pytest.approx(ref, abs=1e-8)
    # predictive mean/std of the mixture: total variance = Var(m) + mean(sd^2)
    pred = post.predict([20], [7])
    assert pred.mean[0] == pytest.approx(m.mean())
    assert pred.std[0] == pytest.approx(np.sqrt(m.var() + (sd ** 2).mean()))
    assert pred.std_param[0] == pytest.approx(m.std())
    assert post.prob_at_least([20], [7], 3.0)[0] == pytest.approx(np.mean(stats.norm.sf(3.0, m, sd)))
    draws = post.predictive_draws([20], [7], n=40000, seed=1)[:, 0]
    assert draws.mean() == pytest.approx(m.mean(), abs=4 * pred.std[0] / 200)


def test_mixture_quantile_many_components_and_point_masses():
    rng = np.random.default_rng(0)
    m = rng.normal(0, 2, (30, 5))
    sd = rng.uniform(0.1, 1, (30, 5))
    for q in (0.01, 0.5, 0.97):
        got = mixture_quantile(m, sd, q)
        for c in range(5):
            ref = optimize.brentq(lambda x: np.mean(stats.norm.cdf(x, m[:, c], sd[:, c])) - q,
                                  -50, 50, xtol=1e-12)
            assert got[c] == pytest.approx(ref, abs=1e-8)
    # tiny sd -> empirical quantile of the component means
    pts = np.array([[0.0], [1.0], [2.0], [3.0]])
    assert mixture_quantile(pts, np.full_like(pts, 1e-9), 0.6)[0] == pytest.approx(2.0, abs=1e-6)


def test_crps_closed_forms_against_numerical_integration():
    y = 1.3
    assert gaussian_crps(y, 0.5, 0.7) == pytest.approx(
        integrate.quad(lambda x: (stats.norm.cdf(x, 0.5, 0.7) - (x >= y)) ** 2, -20, 20,
                       points=[y], limit=200)[0], abs=1e-7)
    m = np.array([[0.0], [2.0], [1.0]])
    sd = np.array([[0.5], [1.0], [0.3]])
    F = lambda x: np.mean(stats.norm.cdf(x, m[:, 0], sd[:, 0]))  # noqa: E731
    ref = integrate.quad(lambda x: (F(x) - (x >= y)) ** 2, -30, 30, points=[y], limit=400)[0]
    assert mixture_crps([y], m, sd)[0] == pytest.approx(ref, abs=1e-7)
    # one component -> Gaussian form; deterministic forecast -> absolute error
    assert mixture_crps([y], m[:1], sd[:1])[0] == pytest.approx(gaussian_crps(y, 0.0, 0.5))
    assert gaussian_crps(3.0, 1.0, 1e-9) == pytest.approx(2.0, abs=1e-6)


def test_pit_coverage_equivalence_with_quantiles():
    rng = np.random.default_rng(1)
    m = rng.normal(0, 1, (7, 200))
    sd = rng.uniform(0.3, 1.2, (7, 200))
    y = rng.normal(0, 1.5, 200)
    pit = mixture_pit(y, m, sd)
    for level in (0.5, 0.9):
        lo = mixture_quantile(m, sd, (1 - level) / 2)
        hi = mixture_quantile(m, sd, (1 + level) / 2)
        assert coverage_from_pit(pit, level) == pytest.approx(np.mean((y >= lo) & (y <= hi)))
    lp = mixture_logpdf(y, m, sd)
    ref = np.log(np.mean(stats.norm.pdf(y, m, sd), axis=0))
    assert lp == pytest.approx(ref)


def test_rating_metrics_hand_case_and_nlpd_is_mixture():
    post, train = _tiny(S=3, seed=5)
    test = Ratings.from_indices([0, 1, 1], [1, 0, 1], [5.0, 1.0, 2.5], post.users, post.items)
    res = rating_metrics(post, test, levels=(0.5, 0.9), draws=True, clip=False)
    M = np.stack([_components(post, u, i)[0] for u, i in [(0, 1), (1, 0), (1, 1)]], 1)
    sd = _components(post, 0, 0)[1][:, None] * np.ones((1, 3))
    y = np.array([5.0, 1.0, 2.5])
    assert res["rmse"] == pytest.approx(rmse(y, M.mean(0)))
    assert res["nlpd"] == pytest.approx(-post.log_predictive_density(test).mean())
    assert res["crps"] == pytest.approx(mixture_crps(y, M, sd).mean())
    per_draw_rmse = np.sqrt(((M - y) ** 2).mean(1))
    assert res["draws"]["rmse"]["mean"] == pytest.approx(per_draw_rmse.mean())
    assert res["draws"]["rmse"]["lower"] == pytest.approx(np.quantile(per_draw_rmse, 0.05))
    nl = -stats.norm.logpdf(y, M, sd).mean(1)
    assert res["draws"]["nlpd"]["upper"] == pytest.approx(np.quantile(nl, 0.95))
    cov = (np.abs(y - M) <= stats.norm.ppf(0.95) * sd).mean(1)
    assert res["draws"]["coverage"]["0.9"]["mean"] == pytest.approx(cov.mean())
    pit = mixture_pit(y, M, sd)
    assert res["coverage"]["0.5"] == pytest.approx(np.mean(np.abs(pit - 0.5) <= 0.25))
    assert res["interval_width"]["0.9"] == pytest.approx(
        np.mean(mixture_quantile(M, sd, 0.95) - mixture_quantile(M, sd, 0.05)), abs=1e-6)


def test_clipping_and_cold_rows():
    post, train = _tiny(S=2)
    users = post.users.extend([30])
    test = Ratings.from_indices([0, 2], [1, 0], [5.0, 3.0], users, post.items)
    res = rating_metrics(post, test, clip=True)
    assert res["n_cold"] == 1
    mean = post.predict([10, 30], [8, 7]).mean
    assert res["rmse"] == pytest.approx(rmse([5.0, 3.0], np.clip(mean, 2.0, 4.0)))
    assert res["rmse_unclipped"] == pytest.approx(rmse([5.0, 3.0], mean))


def test_calibrated_posterior_has_nominal_coverage():
    """Ratings simulated from the posterior predictive itself are calibrated."""
    post, ratings = make_posterior(n_users=40, n_items=50, k=2, draws=10, density=0.5, seed=2)
    rng = np.random.default_rng(0)
    u, i = ratings.user, ratings.item
    s = rng.integers(0, post.n_samples, len(u))
    m, sd = post.predictive_components(u, i)
    y = m[s, np.arange(len(u))] + sd[s, np.arange(len(u))] * rng.standard_normal(len(u))
    test = Ratings.from_indices(u, i, y, post.users, post.items)
    res = rating_metrics(post, test, levels=(0.5, 0.9), widths=False)
    assert res["coverage"]["0.5"] == pytest.approx(0.5, abs=0.05)
    assert res["coverage"]["0.9"] == pytest.approx(0.9, abs=0.03)


def test_evaluate_is_json_able_and_validates():
    import json

    post, ratings = make_posterior(n_users=20, n_items=30, k=2, draws=5, seed=4)
    res = evaluate(post, heldout(post, ratings), k=5, draws=True)
    json.dumps(res)
    assert set(res["coverage"]) == {"0.5", "0.8", "0.9", "0.95"}
    assert "ndcg@5" in res["ranking"] and "ndcg@5" in res["ranking"]["draws"]
    with pytest.raises(SpecError):
        rating_metrics(post, ratings, levels=(0.0, 0.9))
    with pytest.raises(DataError):
        rmse([], [])


def test_evaluate_without_relevant_items_skips_ranking():
    post, ratings = make_posterior(n_users=10, n_items=12, k=2, draws=3, seed=8)
    low = Ratings.from_indices([0, 1], [0, 1], [1.0, 2.0], post.users, post.items)
    res = evaluate(post, low, k=5)
    assert "skipped" in res["ranking"] and np.isfinite(res["rmse"])
