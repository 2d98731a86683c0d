"""The Posterior's predictive math against closed forms and brute force."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize, stats

from bayesmf import ModelSpec, Ratings, Vocabulary
from bayesmf.errors import DataError, SpecError, UnknownIdError
from bayesmf.posterior import Posterior, TrainInfo, mixture_quantile


def _train(n_users=6, n_items=5, seed=0):
    rng = np.random.default_rng(seed)
    u, i = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    keep = rng.random(u.shape) < 0.7
    keep[:, 0] = True
    keep[0, :] = True
    users = np.array([f"u{j}" for j in range(n_users)], dtype=object)
    items = np.arange(100, 100 + n_items)
    return Ratings.from_arrays(users[u[keep]], items[i[keep]],
                               rng.integers(1, 6, keep.sum()).astype(float))


def _posterior(train, C=2, D=50, k=3, seed=1):
    rng = np.random.default_rng(seed)
    N, M = train.n_users, train.n_items
    draws = {
        "mu": 3.5 + 0.05 * rng.standard_normal((C, D)),
        "bu": 0.3 * rng.standard_normal((C, D, N)) + rng.standard_normal(N) * 0.5,
        "bi": 0.3 * rng.standard_normal((C, D, M)) + rng.standard_normal(M) * 0.5,
        "U": rng.standard_normal((C, D, N, k)) * 0.3 + rng.standard_normal((N, k)),
        "V": rng.standard_normal((C, D, M, k)) * 0.3 + rng.standard_normal((M, k)),
        "tau": rng.gamma(20, 1 / 10, (C, D)),
    }
    draws = {n: a.astype(np.float32) for n, a in draws.items()}
    return Posterior(draws, ModelSpec(rank=k), train.users, train.items,
                     TrainInfo.from_ratings(train), "synthetic")


@pytest.fixture(scope="module")
def post():
    return _posterior(_train())


def _brute_components(p, u, i):
    """Per-draw means by explicit loops over draws (reference)."""
    S = p.n_samples
    m = np.empty((S, len(u)))
    for s in range(S):
        c, d = divmod(s, p.n_draws)
        prm = p.params(c, d)
        m[s] = prm.mu + prm.bu[u] + prm.bi[i] + np.sum(prm.U[u] * prm.V[i], axis=1)
    return m


def test_mean_and_std_match_brute_force(post):
    u = np.array([0, 1, 2, 5, 3])
    i = np.array([0, 4, 2, 1, 3])
    m = _brute_components(post, u, i)
    mean, std, std_p, lo, hi = post.summarize_indices(u, i)
    noise = np.mean(1.0 / post.flat("tau").astype(float))
    np.testing.assert_allclose(mean, m.mean(0), rtol=1e-5)
    np.testing.assert_allclose(std_p, m.std(0), rtol=1e-4)
    np.testing.assert_allclose(std, np.sqrt(m.var(0) + noise), rtol=1e-4)
    assert np.all(lo < mean) and np.all(mean < hi)


def test_interval_is_mixture_quantile(post):
    u, i = np.array([0, 3]), np.array([1, 2])
    m = _brute_components(post, u, i)
    sd = np.sqrt(1.0 / post.flat("tau").astype(float))
    _, _, _, lo, hi = post.summarize_indices(u, i, interval=0.8)
    for j in range(2):
        cdf = lambda x, q: stats.norm.cdf(x, m[:, j], sd).mean() - q  # noqa: E731
        ref_lo = optimize.brentq(cdf, -50, 50, args=(0.1,), xtol=1e-12)
        ref_hi = optimize.brentq(cdf, -50, 50, args=(0.9,), xtol=1e-12)
        assert lo[j] == pytest.approx(ref_lo, abs=1e-6)
        assert hi[j] == pytest.approx(ref_hi, abs=1e-6)


def test_mixture_quantile_single_component_is_gaussian():
    m = np.array([[1.0, -2.0]])
    sd = np.array([[0.5, 2.0]])
    np.testing.assert_allclose(mixture_quantile(m, sd, 0.95),
                               stats.norm.ppf(0.95, m[0], sd[0]), rtol=1e-12)


def test_raw_id_predict_matches_index_predict(post):
    pred = post.predict(["u1", "u4"], [101, 103], clip=False)
    ref = post.summarize_indices(np.array([1, 4]), np.array([1, 3]))
    np.testing.assert_allclose(pred.mean, ref[0])
    clipped = post.predict(["u1", "u4"], [101, 103])  # default: on the rating scale
    lo, hi = post.train.scale.min, post.train.scale.max
    for a, b in ((clipped.mean, ref[0]), (clipped.lower, ref[3]), (clipped.upper, ref[4])):
        np.testing.assert_allclose(a, np.clip(b, lo, hi))
    np.testing.assert_allclose(clipped.std, ref[1])  # the spread is not clipped
    assert pred.known_user.all() and pred.known_item.all()
    assert pred.uncertainty == "parameter + noise"
    df = pred.to_frame()
    assert list(df.columns[:4]) == ["user", "item", "mean", "std"]


def test_unknown_user_population_fallback(post):
    """Unknown user = random member of the training population: the mixture over
    (draw, user) of the known-user predictions has the same first two moments."""
    item = 2
    pred = post.predict(["stranger"], [100 + item])
    assert not pred.known_user[0] and pred.known_item[0]
    N = len(post.users)
    m = np.stack([_brute_components(post, np.array([uu]), np.array([item]))[:, 0]
                  for uu in range(N)], axis=1)  # S x N
    noise = np.mean(1.0 / post.flat("tau").astype(float))
    assert pred.mean[0] == pytest.approx(m.mean(), rel=1e-5)
    assert pred.std[0] ** 2 == pytest.approx(m.var() + noise, rel=1e-4)


def test_unknown_both_fallback_moments(post):
    pred = post.predict(["nobody"], [999])
    N, M = len(post.users), len(post.items)
    uu, ii = np.meshgrid(np.arange(N), np.arange(M), indexing="ij")
    m = _brute_components(post, uu.ravel(), ii.ravel())
    noise = np.mean(1.0 / post.flat("tau").astype(float))
    assert pred.mean[0] == pytest.approx(m.mean(), rel=1e-5)
    assert pred.std[0] ** 2 == pytest.approx(m.var() + noise, rel=1e-3)
    assert not pred.known_user[0] and not pred.known_item[0]


def test_unknown_raise_policy(post):
    with pytest.raises(UnknownIdError, match="stranger"):
        post.predict(["stranger"], [100], unknown="raise")


def test_prob_at_least_and_quantiles_consistent(post):
    q = post.quantiles(["u0", "u2"], [100, 104], [0.25, 0.5, 0.75])
    assert np.all(np.diff(q, axis=0) > 0)
    p = post.prob_at_least(["u0", "u2"], [100, 104], q[1])
    np.testing.assert_allclose(p, 0.5, atol=1e-6)


def test_log_predictive_density_mixture(post):
    train = _train()
    test = train.subset(np.arange(4))
    lpd = post.log_predictive_density(test)
    m = _brute_components(post, test.user, test.item)
    sd = np.sqrt(1.0 / post.flat("tau").astype(float))[:, None]
    ref = np.log(stats.norm.pdf(test.rating, m, sd).mean(0))
    np.testing.assert_allclose(lpd, ref, rtol=1e-6)


def test_point_estimate_is_noise_only():
    train = _train()
    p = _posterior(train, C=1, D=1)
    pred = p.predict(["u0"], [100], interval=0.9)
    assert p.is_point_estimate and pred.uncertainty == "noise only"
    assert pred.std_param[0] == 0.0
    sd = np.sqrt(1.0 / p.draws["tau"][0, 0])
    assert pred.upper[0] - pred.mean[0] == pytest.approx(1.6448536 * sd, rel=1e-5)


def test_clip_to_training_scale():
    train = _train()
    p = _posterior(train)
    pred = p.predict(["u0", "u1"], [100, 101], clip=True)
    assert pred.lower.min() >= 1.0 and pred.upper.max() <= 5.0


def test_chunking_is_invisible(post, monkeypatch):
    import bayesmf.posterior as mod

    u = np.repeat(np.arange(6), 5)
    i = np.tile(np.arange(5), 6)
    full = post.summarize_indices(u, i)
    monkeypatch.setattr(mod, "_BLOCK_ELEMS", 7)
    chunked = post.summarize_indices(u, i)
    for a, b in zip(full, chunked):
        np.testing.assert_allclose(a, b)


def test_shape_validation():
    train = _train()
    p = _posterior(train)
    bad = dict(p.draws)
    bad["U"] = bad["U"][..., :2]
    with pytest.raises(SpecError, match="'U' has shape"):
        Posterior(bad, p.spec, p.users, p.items, p.train, "x")
    bad = dict(p.draws)
    bad["tau"] = bad["tau"].copy()
    bad["tau"][0, 0] = np.nan
    with pytest.raises(SpecError, match="NaN"):
        Posterior(bad, p.spec, p.users, p.items, p.train, "x")
    with pytest.raises(DataError, match="differ in length"):
        p.predict(["u0", "u1"], [100])


def test_select_and_thin(post):
    sub = post.thin(5)
    assert sub.n_draws == 10 and sub.n_chains == 2
    one = post.select(chains=[1])
    np.testing.assert_array_equal(one.draws["U"][0], post.draws["U"][1])


def test_vocabulary_mismatch_reencodes(post):
    train = _train()
    other = Ratings.from_arrays(np.array(["u1", "zz"], dtype=object), np.array([101, 100]),
                                np.array([4.0, 2.0]))
    lpd = post.log_predictive_density(other)
    assert np.isfinite(lpd).all() and len(lpd) == 2
    assert Vocabulary(["a"], "user") != train.users


def test_predict_clips_to_the_scale_by_default_and_keeps_the_mixture():
    """Means and interval bounds are reported on the rating scale by default; the
    predictive distribution (quantiles, density, std) is not clipped."""
    train = _train()
    p = _posterior(train)
    p.draws["mu"] = p.draws["mu"] + np.float32(2.0)  # push predictions above 5 stars
    u, i = ["u0", "u1", "u2"], [100, 101, 102]
    raw = p.predict(u, i, clip=False)
    assert raw.mean.max() > 5.0 and raw.upper.max() > 5.0  # it leaves the scale
    d = p.predict(u, i)
    lo, hi = train.scale.min, train.scale.max
    np.testing.assert_allclose(d.mean, np.clip(raw.mean, lo, hi))
    np.testing.assert_allclose(d.lower, np.clip(raw.lower, lo, hi))
    np.testing.assert_allclose(d.upper, np.clip(raw.upper, lo, hi))
    np.testing.assert_allclose(d.std, raw.std)
    assert d.upper.max() <= hi and d.mean.max() <= hi
    np.testing.assert_allclose(p.quantiles(u, i, [0.95])[0], raw.upper)  # unclipped


@pytest.mark.parametrize("likelihood", ["ordinal", "bernoulli-probit"])
def test_clipping_leaves_discrete_predictions_unchanged(likelihood):
    from bayesmf.model.likelihoods import get_likelihood

    rng = np.random.default_rng(3)
    ordinal = likelihood == "ordinal"
    users, items = np.repeat(np.arange(8), 6), np.tile(np.arange(6), 8)
    y = rng.integers(1, 6, len(users)).astype(float) if ordinal else \
        rng.integers(0, 2, len(users)).astype(float)
    train = Ratings.from_arrays(users, items, y)
    lik = get_likelihood(likelihood).fit_data(y) if ordinal else get_likelihood(likelihood)
    C, D, k = 1, 20, 2
    draws = {"mu": np.zeros((C, D)), "bu": rng.normal(0, 1, (C, D, 8)),
             "bi": rng.normal(0, 1, (C, D, 6)),
             "U": rng.normal(0, 1, (C, D, 8, k)).astype(np.float32),
             "V": rng.normal(0, 1, (C, D, 6, k)).astype(np.float32)}
    if ordinal:
        draws["cutpoints"] = np.tile(np.array([-1.5, -0.5, 0.5, 1.5]), (C, D, 1))
    p = Posterior(draws, ModelSpec(rank=k, likelihood=lik), train.users, train.items,
                  TrainInfo.from_ratings(train), "synthetic")
    a = p.predict(users[:10], items[:10])
    b = p.predict(users[:10], items[:10], clip=False)
    for x, z in ((a.mean, b.mean), (a.lower, b.lower), (a.upper, b.upper)):
        np.testing.assert_array_equal(x, z)
    assert a.mean.min() >= train.scale.min and a.mean.max() <= train.scale.max


def test_degenerate_scale_is_not_clipped_to_a_point():
    """All training ratings equal: the 'scale' [4, 4] says nothing about the range, so
    intervals keep their width."""
    rng = np.random.default_rng(0)
    u, i = np.repeat(np.arange(5), 4), np.tile(np.arange(4), 5)
    train = Ratings.from_arrays(u, i, np.full(len(u), 4.0))
    p = _posterior(train, C=1, D=20)
    pred = p.predict(u[:3], i[:3])
    raw = p.predict(u[:3], i[:3], clip=False)
    np.testing.assert_array_equal(pred.lower, raw.lower)
    assert np.all(pred.upper - pred.lower > 0.1)
