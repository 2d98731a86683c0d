"""Bounded top-n for ucb/lcb/prob: the same lists as solving every pair exactly, with the
certificate doing the work; the approximation and the Thompson grouping."""

import numpy as np
import pytest

from _uq_synth import make_posterior
from bayesmf.errors import SpecError
from bayesmf.recommend import recommend, recommend_indices
from bayesmf.scoring import bounded as bd
from bayesmf.scoring.strategies import make_strategy


def _same(post, users, strategy, n=5, **kw):
    _, ex = recommend_indices(post, users, n, strategy, quantile_method="exact",
                              uncertainty=False, **kw)
    _, bo = recommend_indices(post, users, n, strategy, quantile_method="bounded",
                              uncertainty=False, **kw)
    np.testing.assert_array_equal(bo.items, ex.items)
    np.testing.assert_array_equal(bo.valid, ex.valid)
    np.testing.assert_allclose(bo.scores[bo.valid], ex.scores[ex.valid], rtol=0, atol=2e-6)
    return ex, bo


def _diffuse(seed=0, **kw):
    """Wide posterior (draw sd 0.6, about the noise): the screen misorders items."""
    args = dict(n_users=25, n_items=160, k=3, draws=60, draw_sd=0.6, noise_sd=0.6,
                density=0.2, seed=seed)
    args.update(kw)
    return make_posterior(**args)[0]


@pytest.mark.parametrize("strategy, kw", [
    ("upper", {}), ("upper", {"quantile": 0.97}), ("lower", {}),
    ("lower", {"quantile": 0.3}), ("prob", {"threshold": 4.0}),
    ("prob", {"threshold": 5.5}), ("prob", {"threshold": 2.0}),
])
def test_bounded_equals_exact(strategy, kw):
    for seed in (0, 1):
        _same(_diffuse(seed=seed), None, strategy, n=7, **kw)


def test_bounded_equals_exact_with_minimal_screen_and_solves():
    """screen_size = n: the threshold comes from n rescored items only, so the
    certificate must reject items and the solve path runs."""
    post = _diffuse(seed=3, draw_sd=1.0)
    seen = {}
    orig = bd.bounded_topn

    def spy(sc, *a, **k):
        seen["sc"] = sc
        return orig(sc, *a, **k)

    import bayesmf.recommend.topk as bd_mod

    bd_mod.bounded_topn = spy
    try:
        for st in ("upper", "lower", "prob"):
            _same(post, None, st, n=6, screen_size=6)
            s = seen.pop("sc").stats
            assert s["certified"] > 0
            assert s["rescored"] + s["certified"] + s["solved"] > 0
        _same(post, None, "upper", n=6, screen_size=6, quantile=0.99)
        assert seen.pop("sc").stats["solved"] > 0  # some items were not certifiable
    finally:
        bd_mod.bounded_topn = orig


def test_bounded_fallback_users_candidates_exclusions_and_chains():
    post = _diffuse(seed=5, chains=2, draws=30)
    users = [0, 3, 999, 12, 1000]  # 999 and 1000 are unknown: population fallback
    cand = list(range(10, 150, 3))
    for st in ("upper", "lower", "prob"):
        _same(post, users, st, n=8, candidates=cand, exclude=[13, 16])
        _same(post, users, st, n=8)


def test_bounded_ties_break_by_item_index():
    post, _ = make_posterior(n_users=6, n_items=50, k=2, draws=40, draw_sd=0.4, seed=2)
    V = post.draws["V"]
    bi = post.draws["bi"]
    V[:, :, 30] = V[:, :, 7]  # items 7 and 30 are the same item
    bi[:, :, 30] = bi[:, :, 7]
    V[:, :, 41] = V[:, :, 7]
    bi[:, :, 41] = bi[:, :, 7]
    for st in ("upper", "lower", "prob"):
        ex, _ = _same(post, None, st, n=10, exclude_seen=False)
        for row in ex.items:  # the copies appear in index order when they are listed
            pos = [list(row).index(i) for i in (7, 30, 41) if i in row]
            assert pos == sorted(pos)


def test_approx_mode_scores_are_exact_and_lists_mostly_agree():
    post = _diffuse(seed=7)
    _, ex = recommend_indices(post, None, 5, "upper", quantile_method="exact",
                              uncertainty=False)
    _, ap = recommend_indices(post, None, 5, "upper", quantile_method="approx",
                              uncertainty=False)
    # each reported score is the exact quantile of its item
    q = post.quantiles(np.repeat(post.users.ids, 5), ap.items.ravel(), [0.9])[0]
    np.testing.assert_allclose(ap.scores.ravel(), q, atol=1e-7)
    agree = np.mean([len(np.intersect1d(a, b)) / 5 for a, b in zip(ap.items, ex.items)])
    assert agree > 0.8


def test_recommend_dataframe_matches_exact_and_describes_method():
    post = _diffuse(seed=9)
    a = recommend(post, [1, 2], n=4, strategy="ucb", quantile_method="bounded")
    b = recommend(post, [1, 2], n=4, strategy="ucb", quantile_method="exact")
    assert a["item"].tolist() == b["item"].tolist()
    assert a["score"].to_numpy() == pytest.approx(b["score"].to_numpy(), abs=1e-6)
    assert make_strategy("ucb").quantile_method == "approx"  # the default
    assert make_strategy("ucb", quantile_method="mixture").quantile_method == "exact"
    assert "bounded" in make_strategy("ucb", quantile_method="bounded").describe()
    with pytest.raises(SpecError):
        make_strategy("ucb", quantile_method="fast")
    with pytest.raises(SpecError):
        make_strategy("ucb", screen_size=0)


def test_paths_that_fall_back_to_exact_scoring():
    # noise-free point masses and MAP go pair by pair, and agree with "exact"
    post = _diffuse(seed=11)
    for kw in ({"noise": False},):
        for st in ("upper", "prob"):
            _same(post, None, st, n=5, **kw)
    sc_st = make_strategy("upper", noise=False)
    from bayesmf.scoring.scorer import Scorer

    assert not bd.supports_bounded(Scorer(post, sc_st))
    assert bd.supports_bounded(Scorer(post, make_strategy("upper")))
    assert not bd.supports_bounded(Scorer(post, make_strategy("upper", quantile_method="exact")))


def test_thompson_grouped_scores_equal_per_draw_components():
    post, _ = make_posterior(n_users=30, n_items=25, k=3, draws=7, seed=4)
    res = recommend(post, None, n=25, strategy="thompson", seed=3, exclude_seen=False,
                    uncertainty=False)
    from bayesmf.scoring.strategies import thompson_draw_index

    s = thompson_draw_index(post.users.ids, 3, post.n_samples)
    for u in (0, 7, 29):
        row = res[res.user == u]
        m, _ = post.pair_moments(np.full(len(row), u), post.items.encode(row.item))
        np.testing.assert_allclose(row["score"].to_numpy(), m[s[u]], atol=1e-5)
