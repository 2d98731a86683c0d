"""Predictive mixtures (bayesmf.predictive) against closed forms, scipy and brute force."""

import numpy as np
import pytest
from scipy import integrate, optimize, stats

from bayesmf.errors import DataError, SpecError
from bayesmf.predictive import (BernoulliMixture, CategoricalMixture, GaussianMixture,
                                Mixture, mixture_crps, mixture_quantile)
from bayesmf.recommend.strategies import (make_strategy, scores_from_components,
                                          scores_from_mixture)

LEVELS5 = np.arange(1.0, 6.0)
HALF = np.arange(1, 11) * 0.5  # 0.5 .. 5 in half steps


def _gauss(S=5, shape=(3, 4), seed=0):
    rng = np.random.default_rng(seed)
    m = rng.normal(3, 1, (S,) + shape)
    pv = rng.uniform(0.0, 0.2, (S,) + shape)
    sd = np.sqrt(pv + rng.uniform(0.1, 0.6, (S,) + shape))
    return GaussianMixture(m, sd, param_var=pv)


def _bern(S=6, shape=(2, 3), seed=1):
    rng = np.random.default_rng(seed)
    return BernoulliMixture(rng.uniform(0, 1, (S,) + shape))


def _cat(S=4, shape=(3, 2), levels=LEVELS5, seed=2):
    rng = np.random.default_rng(seed)
    return CategoricalMixture(rng.dirichlet(np.ones(len(levels)), (S,) + shape), levels)


ALL = [_gauss, _bern, _cat, lambda: _cat(levels=HALF)]


def _cells(shape):
    return list(np.ndindex(*shape))


# ----------------------------------------------------------------------- normalisation
def test_discrete_pmf_sums_to_one_and_gaussian_density_integrates_to_one():
    for mix in (_cat(), _cat(levels=HALF)):
        assert mix.pmf().shape == mix.shape + (len(mix.support),)
        np.testing.assert_allclose(mix.pmf().sum(-1), 1.0, atol=1e-12)
    b = _bern()
    np.testing.assert_allclose(b.probs().sum(-1), 1.0)
    assert b.pmf() == pytest.approx(b.p.mean(0))
    g = _gauss(shape=(2,))
    for c in range(2):
        one = g.take(np.arange(g.n_components))
        f = lambda x: np.exp(one.logpdf(np.array([x, x]))[c])  # noqa: E731,B023
        val = integrate.quad(f, -20, 25, limit=400)[0]
        assert val == pytest.approx(1.0, abs=1e-8)


@pytest.mark.parametrize("make", ALL)
def test_cdf_monotone_with_limits(make):
    mix = make()
    xs = np.linspace(-20, 25, 451)
    F = np.stack([mix.cdf(np.full(mix.shape, x)) for x in xs])
    assert np.all(np.diff(F, axis=0) >= -1e-15)
    assert F[0] == pytest.approx(0.0, abs=1e-12) and F[-1] == pytest.approx(1.0, abs=1e-12)
    assert np.all((F >= 0) & (F <= 1))
    # a scalar x broadcasts
    np.testing.assert_array_equal(mix.cdf(2.0), mix.cdf(np.full(mix.shape, 2.0)))


@pytest.mark.parametrize("make", ALL)
def test_quantile_consistent_with_cdf(make):
    mix = make()
    for q in (0.01, 0.1, 0.25, 0.5, 0.73, 0.9, 0.999):
        x = mix.quantile(q)
        assert x.shape == mix.shape
        if mix.discrete:
            assert np.all(mix.cdf(x) >= q)
            j = mix.level_index(x)
            prev = np.where(j > 0, mix.support[np.maximum(j - 1, 0)], -np.inf)
            assert np.all(np.where(j > 0, mix.cdf(prev), 0.0) < q)
            assert np.all(np.isin(x, mix.support))
        else:
            np.testing.assert_allclose(mix.cdf(x), q, atol=1e-9)
    with pytest.raises(SpecError):
        mix.quantile(1.0)
    with pytest.raises(SpecError):
        mix.interval(0.0)


def test_gaussian_quantile_is_the_one_solver_and_matches_root_finding():
    g = _gauss(shape=(4,))
    for q in (0.05, 0.5, 0.95):
        x = g.quantile(q)
        np.testing.assert_array_equal(x, mixture_quantile(g.m, g.sd, q))
        for c in range(4):
            F = lambda t: np.mean(stats.norm.cdf(t, g.m[:, c], g.sd[:, c])) - q  # noqa: E731,B023
            ref = optimize.brentq(F, -50, 50, xtol=1e-13)
            assert x[c] == pytest.approx(ref, abs=1e-8)
    import bayesmf.posterior as post
    import bayesmf.recommend.strategies as strat

    assert post.mixture_quantile is mixture_quantile is strat.mixture_quantile


# ----------------------------------------------------------------------- log density / mass
def test_logpdf_single_components_against_scipy():
    rng = np.random.default_rng(3)
    m, sd, y = rng.normal(size=7), rng.uniform(0.2, 2, 7), rng.normal(size=7)
    np.testing.assert_allclose(GaussianMixture(m[None], sd[None]).logpdf(y),
                               stats.norm.logpdf(y, m, sd), rtol=1e-12)
    p = rng.uniform(0.01, 0.99, 7)
    yb = (rng.random(7) < 0.5).astype(float)
    np.testing.assert_allclose(BernoulliMixture(p[None]).logpdf(yb),
                               stats.bernoulli.logpmf(yb, p), rtol=1e-12)
    P = rng.dirichlet(np.ones(5), 7)
    yi = rng.integers(0, 5, 7)
    ref = np.array([stats.multinomial.logpmf(np.eye(5)[k], 1, P[n]) for n, k in enumerate(yi)])
    np.testing.assert_allclose(CategoricalMixture(P[None], LEVELS5).logpdf(LEVELS5[yi]), ref,
                               rtol=1e-10)


def test_logpdf_mixtures_against_brute_force():
    g = _gauss()
    y = np.full(g.shape, 3.1)
    ref = np.log(np.mean(stats.norm.pdf(y, g.m, g.sd), axis=0))
    np.testing.assert_allclose(g.logpdf(y), ref, rtol=1e-12)
    b = _bern()
    yb = np.indices(b.shape).sum(0) % 2
    ref = np.log(np.mean(np.where(yb == 1, b.p, 1 - b.p), axis=0))
    np.testing.assert_allclose(b.logpdf(yb), ref, rtol=1e-12)
    c = _cat(levels=HALF)
    rng = np.random.default_rng(0)
    j = rng.integers(0, len(HALF), c.shape)
    ref = np.log(np.mean(np.take_along_axis(c.probs_draws, np.broadcast_to(
        j[None, ..., None], (c.n_components,) + c.shape + (1,)), -1)[..., 0], axis=0))
    np.testing.assert_allclose(c.logpdf(HALF[j]), ref, rtol=1e-12)


def test_probabilities_clipped_before_logs_and_out_of_support_values_raise():
    b = BernoulliMixture(np.array([[0.0, 1.0]]))
    assert np.all(np.isfinite(b.logpdf(np.array([1.0, 0.0]))))
    assert b.logpdf(np.array([1.0, 0.0])) == pytest.approx(np.log(1e-15))
    c = CategoricalMixture(np.array([[[1.0, 0.0, 0.0]]]), [1, 2, 3])
    assert c.logpdf(np.array([3.0]))[0] == pytest.approx(np.log(1e-15))
    for mix, bad in ((_bern(), 0.5), (_cat(), 2.5), (_cat(levels=HALF), 0.0), (_cat(), np.nan)):
        for fn in (mix.logpdf, mix.pit, mix.crps):
            with pytest.raises(DataError):
                fn(np.full(mix.shape, bad))
    with pytest.raises(DataError):
        BernoulliMixture([[1.2]])
    with pytest.raises(DataError):
        CategoricalMixture(np.array([[[0.5, 0.4, 0.0]]]), [1, 2, 3])  # sums to 0.9
    with pytest.raises(SpecError):
        CategoricalMixture(np.array([[[0.5, 0.5]]]), [2, 1])
    with pytest.raises(DataError):
        GaussianMixture(np.zeros((2, 3)), -np.ones((2, 3)))


# ----------------------------------------------------------------------- moments
@pytest.mark.parametrize("make", ALL)
def test_mean_and_var_against_monte_carlo(make):
    mix = make()
    n = 200_000
    draws = mix.sample(np.random.default_rng(5), n)
    assert draws.shape == (n,) + mix.shape
    sd = np.sqrt(mix.var())
    np.testing.assert_allclose(draws.mean(0), mix.mean(), atol=float(5 * sd.max() / np.sqrt(n)))
    np.testing.assert_allclose(draws.var(0), mix.var(), rtol=0.03)
    if mix.discrete:
        assert np.all(np.isin(draws, mix.support))
    # one value per component
    one = mix.sample(np.random.default_rng(0), None)
    assert one.shape == (mix.n_components,) + mix.shape


def test_variance_decomposition():
    g = _gauss()
    np.testing.assert_allclose(g.var(), g.m.var(0) + (g.sd ** 2).mean(0))
    np.testing.assert_allclose(g.param_var(), g.m.var(0) + g._pv.mean(0))
    assert np.all(g.param_var() <= g.var())
    np.testing.assert_allclose(GaussianMixture(g.m, g.sd).param_var(), g.m.var(0))
    b = _bern()
    np.testing.assert_allclose(b.var(), b.mean() * (1 - b.mean()))
    np.testing.assert_allclose(b.param_var(), b.p.var(0))
    c = _cat()
    mu_s = c.component_means()
    np.testing.assert_allclose(mu_s, (c.probs_draws * LEVELS5).sum(-1))
    within = (c.probs_draws * (LEVELS5 - mu_s[..., None]) ** 2).sum(-1).mean(0)
    np.testing.assert_allclose(c.var(), mu_s.var(0) + within, rtol=1e-12)
    np.testing.assert_allclose(c.param_var(), mu_s.var(0))


@pytest.mark.parametrize("make", ALL)
def test_expect_exact_for_polynomials(make):
    mix = make()
    got2 = mix.expect(lambda r: r ** 2 - 2 * r + 1)
    got3 = mix.expect(lambda r: r ** 3, n_nodes=3)
    if isinstance(mix, GaussianMixture):
        m, s2 = mix.m, mix.sd ** 2
        ref2 = (m ** 2 + s2 - 2 * m + 1).mean(0)
        ref3 = (m ** 3 + 3 * m * s2).mean(0)
    else:
        P, lv = mix.probs(), mix.support
        ref2 = (P * (lv ** 2 - 2 * lv + 1)).sum(-1)
        ref3 = (P * lv ** 3).sum(-1)
    np.testing.assert_allclose(got2, ref2, rtol=1e-12)
    np.testing.assert_allclose(got3, ref3, rtol=1e-12)
    np.testing.assert_allclose(mix.expect(lambda r: r), mix.mean(), rtol=1e-12)


# ----------------------------------------------------------------------- scores
def _crps_numeric(cdf, y, lo, hi, points):
    f = lambda x: (cdf(x) - (x >= y)) ** 2  # noqa: E731
    pts = sorted(set([y] + list(points)))
    pts = [p for p in pts if lo < p < hi]
    return integrate.quad(f, lo, hi, points=pts, limit=500, epsabs=1e-11)[0]


def test_crps_against_numerical_integration_for_all_three():
    g = _gauss(S=4, shape=(2,))
    y = np.array([2.2, 4.0])
    got = g.crps(y)
    for c in range(2):
        cdf = lambda x: np.mean(stats.norm.cdf(x, g.m[:, c], g.sd[:, c]))  # noqa: E731,B023
        assert got[c] == pytest.approx(_crps_numeric(cdf, y[c], -20, 25, []), abs=1e-7)
    b = _bern(shape=(2,))
    yb = np.array([0.0, 1.0])
    got = b.crps(yb)
    for c in range(2):
        cdf = lambda x: b.cdf(np.full(2, x))[c]  # noqa: E731,B023
        assert got[c] == pytest.approx(_crps_numeric(cdf, yb[c], -2, 3, [0.0, 1.0]), abs=1e-9)
    for lv in (LEVELS5, HALF, np.array([0.0, 1.0, 4.0, 4.5])):
        cm = _cat(shape=(3,), levels=lv)
        yc = lv[[0, len(lv) // 2, len(lv) - 1]]
        got = cm.crps(yc)
        for c in range(3):
            cdf = lambda x: cm.cdf(np.full(3, x))[c]  # noqa: E731,B023
            ref = _crps_numeric(cdf, yc[c], lv[0] - 2, lv[-1] + 2, lv)
            assert got[c] == pytest.approx(ref, abs=1e-9)


def test_brier_equals_crps_for_bernoulli_and_rps_hand_example():
    b = _bern()
    y = (np.indices(b.shape).sum(0) % 2).astype(float)
    np.testing.assert_allclose(b.crps(y), (b.p.mean(0) - y) ** 2, rtol=1e-14)
    # levels 1..5, pmf [.1 .2 .3 .3 .1], y = 4: F = [.1 .3 .6 .9], 1[y<=l] = [0 0 0 1]
    P = np.array([[[0.1, 0.2, 0.3, 0.3, 0.1]]])
    c = CategoricalMixture(P, LEVELS5)
    assert c.crps(np.array([4.0]))[0] == pytest.approx(0.01 + 0.09 + 0.36 + 0.01)
    assert CategoricalMixture(P, [0.5, 1, 1.5, 2, 2.5]).crps(np.array([2.0]))[0] == \
        pytest.approx(0.47 * 0.5)
    # y = 1: 1[y<=l] = 1 everywhere -> .81 + .49 + .16 + .01
    assert c.crps(np.array([1.0]))[0] == pytest.approx(0.81 + 0.49 + 0.16 + 0.01)


def test_gaussian_crps_thinning_rule():
    g = _gauss(S=9, shape=(5,))
    y = np.linspace(1, 5, 5)
    np.testing.assert_array_equal(g.crps(y, max_draws=None), mixture_crps(y, g.m, g.sd))
    idx = np.unique(np.linspace(0, 8, 3).round().astype(int))
    np.testing.assert_array_equal(g.crps(y, max_draws=3), mixture_crps(y, g.m[idx], g.sd[idx]))
    assert g.crps_components(3) == 3 and g.crps_components(100) == 9
    assert _bern().crps_components(3) == 6


def test_pit_mid_and_randomized():
    b = BernoulliMixture(np.array([[0.2], [0.4]]))  # pbar = 0.3
    assert b.pit(np.array([0.0]))[0] == pytest.approx(0.35)
    assert b.pit(np.array([1.0]))[0] == pytest.approx(0.7 + 0.15)
    c = CategoricalMixture(np.array([[[0.1, 0.2, 0.3, 0.3, 0.1]]]), LEVELS5)
    assert c.pit(np.array([3.0]))[0] == pytest.approx(0.3 + 0.15)
    r = c.pit(np.full(1, 3.0), rng=np.random.default_rng(0))
    assert 0.3 <= r[0] <= 0.6
    # randomized PIT of values drawn from the forecast itself is uniform
    cc = CategoricalMixture(np.broadcast_to(c.probs_draws, (1, 20000, 5)), LEVELS5)
    y = cc.sample(np.random.default_rng(1), None)[0]
    pit = cc.pit(y, rng=np.random.default_rng(2))
    assert stats.kstest(pit, "uniform").pvalue > 1e-3
    g = _gauss()
    np.testing.assert_array_equal(g.pit(np.full(g.shape, 3.0)), g.cdf(np.full(g.shape, 3.0)))


@pytest.mark.parametrize("make", ALL)
def test_prob_at_least_and_intervals(make):
    mix = make()
    for t in (0.0, 0.5, 1.0, 2.5, 3.0, 4.5, 5.0, 9.0):
        p = mix.prob_at_least(t)
        if mix.discrete:
            ref = (mix.probs() * (mix.support >= t)).sum(-1)
            np.testing.assert_allclose(p, ref, atol=1e-12)
        else:
            np.testing.assert_allclose(p, 1 - mix.cdf(np.full(mix.shape, t)), atol=1e-12)
    for level in (0.5, 0.9):
        lo, hi = mix.interval(level)
        assert np.all(lo <= hi)
        if mix.discrete:  # discrete intervals hold at least `level` of the mass
            mass = (mix.probs() * ((mix.support >= lo[..., None]) &
                                   (mix.support <= hi[..., None]))).sum(-1)
            assert np.all(mass >= level - 1e-12)
        else:
            np.testing.assert_allclose(mix.cdf(hi) - mix.cdf(lo), level, atol=1e-8)


# ----------------------------------------------------------------------- take / shapes
@pytest.mark.parametrize("make", ALL)
def test_take_and_per_draw_consistent(make):
    mix = make()
    S = mix.n_components
    full = mix.take(np.arange(S))
    np.testing.assert_array_equal(full.mean(), mix.mean())
    np.testing.assert_array_equal(mix.take(np.ones(S, bool)).var(), mix.var())
    sel = mix.take([0, S - 1])
    np.testing.assert_allclose(sel.mean(), mix.component_means()[[0, S - 1]].mean(0))
    assert sel.n_components == 2
    one = mix.per_draw()
    assert one.n_components == 1 and one.shape == (S,) + mix.shape
    y = np.full(mix.shape, 1.0)
    for s in range(S):
        ts = mix.take([s])
        np.testing.assert_allclose(one.mean()[s], ts.mean(), rtol=1e-15)
        np.testing.assert_allclose(one.logpdf(y)[s], ts.logpdf(y), rtol=1e-14)
        np.testing.assert_allclose(one.crps(y)[s], ts.crps(y), rtol=1e-14)
        np.testing.assert_allclose(one.quantile(0.8)[s], ts.quantile(0.8), rtol=1e-14)
    with pytest.raises(SpecError):
        mix.take([S])
    with pytest.raises(SpecError):
        mix.take([])


@pytest.mark.parametrize("kind", ["gauss", "bern", "cat"])
def test_arbitrary_trailing_shapes_agree_with_flat(kind):
    shape = (2, 3, 2)
    mix = {"gauss": _gauss, "bern": _bern, "cat": _cat}[kind](shape=shape)
    S = mix.n_components
    if kind == "gauss":
        m2, sd2, pv2 = (a.reshape(S, -1) for a in (mix.m, mix.sd, mix._pv))
        flat = GaussianMixture(m2, sd2, param_var=pv2)
        vec = GaussianMixture(m2[:, 5], sd2[:, 5], param_var=pv2[:, 5])
        y = np.full(shape, 3.3)
    elif kind == "bern":
        flat = BernoulliMixture(mix.p.reshape(S, -1))
        vec = BernoulliMixture(mix.p.reshape(S, -1)[:, 5])
        y = np.ones(shape)
    else:
        P = mix.probs_draws.reshape(S, -1, 5)
        flat, vec = CategoricalMixture(P, LEVELS5), CategoricalMixture(P[:, 5], LEVELS5)
        y = np.full(shape, 2.0)
    yf = y.reshape(-1)
    for name, args in (("mean", ()), ("var", ()), ("param_var", ()), ("quantile", (0.3,)),
                       ("cdf", (y,)), ("logpdf", (y,)), ("crps", (y,)), ("pit", (y,)),
                       ("prob_at_least", (2.5,))):
        a = getattr(mix, name)(*args)
        fargs = tuple(yf if x is y else x for x in args)
        assert a.shape == shape, name
        np.testing.assert_allclose(a.reshape(-1), getattr(flat, name)(*fargs), rtol=1e-12,
                                   err_msg=name)
        vargs = tuple(yf[5] if x is y else x for x in args)
        np.testing.assert_allclose(getattr(vec, name)(*vargs), a.reshape(-1)[5], rtol=1e-12,
                                   err_msg=name)
    assert vec.shape == () and isinstance(vec, Mixture)


def test_gaussian_point_masses():
    g = GaussianMixture(np.array([[1.0], [2.0], [3.0], [4.0]]), np.zeros((4, 1)))
    assert g.cdf(np.array([2.0]))[0] == pytest.approx(0.5)
    assert g.cdf(np.array([1.999]))[0] == pytest.approx(0.25)
    assert g.prob_at_least(2.0)[0] == pytest.approx(0.75)
    assert g.logpdf(np.array([2.5]))[0] == -np.inf and g.logpdf(np.array([2.0]))[0] == np.inf
    assert g.quantile(0.6)[0] == pytest.approx(3.0, abs=1e-8)


# ----------------------------------------------------------------------- strategies
def test_scores_from_mixture_on_every_family():
    g = _gauss(shape=(3, 4))
    for name, kw in (("mean", {}), ("upper", {}), ("lower", {"quantile_method": "gaussian"}),
                     ("prob", {"threshold": 3.5}),
                     ("utility", {"utility": lambda r: np.maximum(r - 3, 0)})):
        st = make_strategy(name, **kw)
        np.testing.assert_array_equal(scores_from_mixture(g, st),
                                      scores_from_components(g.m, g.sd, st))
    draw = np.array([0, 3, 1])
    for mix in (_bern(shape=(3, 4)), _cat(shape=(3, 4))):
        assert scores_from_mixture(mix, "mean") == pytest.approx(mix.mean())
        th = scores_from_mixture(mix, make_strategy("thompson"), draw_index=draw)
        np.testing.assert_array_equal(th, mix.component_means()[draw, np.arange(3)])
        p = scores_from_mixture(mix, make_strategy("prob", threshold=1.0))
        np.testing.assert_allclose(p, mix.prob_at_least(1.0))
        up = scores_from_mixture(mix, make_strategy("upper", quantile=0.9))
        # discrete families bound the per-draw expected value (a predictive quantile is a
        # support point: items would tie)
        np.testing.assert_allclose(up, np.quantile(mix.component_means(), 0.9, axis=0))
        gq = scores_from_mixture(mix, make_strategy("upper", quantile_method="gaussian"))
        np.testing.assert_allclose(gq, mix.mean() + stats.norm.ppf(0.9) * np.sqrt(mix.var()))
        u = lambda r: (r - 0.5) ** 2  # noqa: E731
        ex = scores_from_mixture(mix, make_strategy("utility", utility=u))
        np.testing.assert_allclose(ex, mix.expect(u))
        mc = scores_from_mixture(mix, make_strategy("utility", utility=u, utility_method="draws",
                                                    n_draws=40000, seed=1))
        np.testing.assert_allclose(mc, ex, atol=0.1)
    with pytest.raises(SpecError):
        scores_from_mixture(_bern(), make_strategy("thompson"))


# ----------------------------------------------------------------------- rating metrics
class _Scale:
    def clip(self, x):
        return x


class _Train:
    scale = _Scale()


class _StubPosterior:
    """Just what rating_metrics / pit_values use: pairs ``n`` map to mixture columns."""

    uncertainty = "parameter + noise"
    train = _Train()

    def __init__(self, mix, y):
        self.mix, self.y = mix, np.asarray(y, float)
        self.n_samples = mix.n_components

    def clip_to_scale(self, x):
        return self.train.scale.clip(x)

    def _test_arrays(self, test):
        n = len(self.y)
        ones = np.ones(n, bool)
        return np.arange(n), np.arange(n), ones, ones, self.y

    def predictive_mixture(self, u, i, known_user, known_item):
        m = self.mix
        if isinstance(m, BernoulliMixture):
            return BernoulliMixture(m.p[:, u])
        return CategoricalMixture(m.probs_draws[:, u], m.levels)


def test_rating_metrics_for_a_bernoulli_predictive():
    from bayesmf.evaluate.classification import auc, brier, ece, log_loss
    from bayesmf.evaluate.rating import rating_metrics

    rng = np.random.default_rng(7)
    S, n = 6, 300
    p = np.clip(rng.beta(2, 2, n) + rng.normal(0, 0.05, (S, n)), 0, 1)
    mix = BernoulliMixture(p)
    y = mix.sample(rng, 1)[0]
    post = _StubPosterior(mix, y)
    res = rating_metrics(post, None, levels=(0.5, 0.9), draws=True, chunk_pairs=70)
    pbar = p.mean(0)
    assert res["rmse"] == pytest.approx(np.sqrt(np.mean((pbar - y) ** 2)))
    assert res["mae"] == pytest.approx(np.mean(np.abs(pbar - y)))
    assert res["nlpd"] == pytest.approx(log_loss(y, pbar)) and res["log_loss"] == res["nlpd"]
    assert res["crps"] == pytest.approx(brier(y, pbar))
    assert res["brier"] == pytest.approx(res["crps"])
    assert res["auc"] == pytest.approx(auc(y, pbar)) and res["ece"] == pytest.approx(ece(y, pbar))
    assert res["accuracy"] == pytest.approx(np.mean((pbar > 0.5) == (y == 1)))
    assert res["crps_draws_used"] == S
    lo, hi = mix.interval(0.5)
    assert res["coverage"]["0.5"] == pytest.approx(np.mean((lo <= y) & (y <= hi)))
    assert res["coverage"]["0.9"] >= 0.9 - 0.05  # discrete intervals over-cover
    per_draw = np.sqrt(((p - y) ** 2).mean(1))
    assert res["draws"]["rmse"]["mean"] == pytest.approx(per_draw.mean())
    nl = -np.log(np.clip(np.where(y == 1, p, 1 - p), 1e-15, 1 - 1e-15)).mean(1)
    assert res["draws"]["nlpd"]["mean"] == pytest.approx(nl.mean())
    assert res["draws"]["crps"]["mean"] == pytest.approx(((p - y) ** 2).mean(1).mean())
    # one class only: AUC is reported as None, the rest still works
    one = _StubPosterior(BernoulliMixture(p[:, :5]), np.ones(5))
    assert rating_metrics(one, None)["auc"] is None


def test_rating_metrics_and_pit_for_a_categorical_predictive():
    from bayesmf.evaluate.calibration import pit_values
    from bayesmf.evaluate.classification import multiclass_log_loss, ranked_probability_score
    from bayesmf.evaluate.rating import rating_metrics

    rng = np.random.default_rng(8)
    S, n = 5, 400
    base = rng.dirichlet(np.full(10, 2.0), n)
    P = np.stack([0.8 * base + 0.2 * rng.dirichlet(np.ones(10), n) for _ in range(S)])
    mix = CategoricalMixture(P, HALF)
    y = mix.sample(rng, 1)[0]
    post = _StubPosterior(mix, y)
    res = rating_metrics(post, None, levels=(0.5, 0.8), draws=True, chunk_pairs=97)
    j = mix.level_index(y)
    assert res["rmse"] == pytest.approx(np.sqrt(np.mean((mix.mean() - y) ** 2)))
    assert res["expected_rating_rmse"] == res["rmse"]
    assert res["nlpd"] == pytest.approx(multiclass_log_loss(j, mix.pmf()))
    assert res["log_loss"] == res["nlpd"]
    assert res["crps"] == pytest.approx(ranked_probability_score(j, mix.pmf(), HALF))
    assert res["rps"] == res["crps"]
    assert res["accuracy"] == pytest.approx(np.mean(mix.mode() == y))
    for l in (0.5, 0.8):
        lo, hi = mix.interval(l)
        assert res["coverage"][f"{l:g}"] == pytest.approx(np.mean((lo <= y) & (y <= hi)))
        assert res["interval_width"][f"{l:g}"] == pytest.approx(np.mean(hi - lo))
        assert res["coverage"][f"{l:g}"] >= l - 0.05  # over-coverage of discrete intervals
    cm = (P @ HALF)
    assert res["draws"]["rmse"]["mean"] == pytest.approx(np.sqrt(((cm - y) ** 2).mean(1)).mean())
    assert res["draws"]["n_draws"] == S
    pit = pit_values(post, None, chunk_pairs=33)
    np.testing.assert_allclose(pit, mix.pit(y))
    rpit = pit_values(post, None, randomized=True, seed=3)
    below = mix.cdf(y) - mix.probs()[np.arange(n), j]
    assert np.all((rpit >= below - 1e-12) & (rpit <= mix.cdf(y) + 1e-12))


def test_predictive_mixture_helper_falls_back_to_gaussian_components():
    from bayesmf.evaluate.rating import predictive_mixture

    g = _gauss(shape=(4,))

    class Old:
        def predictive_components(self, u, i, ku, ki):
            return g.m[:, u], g.sd[:, u]

    mix = predictive_mixture(Old(), np.array([1, 3]), np.array([0, 0]))
    assert isinstance(mix, GaussianMixture)
    np.testing.assert_array_equal(mix.mean(), g.m[:, [1, 3]].mean(0))
