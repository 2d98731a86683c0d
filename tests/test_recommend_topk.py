"""Top-n recommendation: checkerboard, exclusion, candidates, batching, fast modes."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hst

from _uq_synth import als_map, checkerboard, make_posterior
from bayesmf.errors import SpecError, UnknownIdError
from bayesmf.recommend import approx_error, recommend
from bayesmf.recommend.topk import topn_indices


@settings(max_examples=40, deadline=None)
@given(hst.integers(1, 12), hst.integers(1, 400), hst.integers(0, 3), hst.integers(0, 10**6))
def test_topn_indices_equals_stable_argsort(n, J, ties, seed):
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((5, J))
    if ties:
        s = np.round(s * ties)  # many exact ties
    s[rng.random((5, J)) < 0.2] = -np.inf
    idx, vals, valid = topn_indices(s, n)
    order = np.argsort(-s, axis=1, kind="stable")[:, :n]
    ref_vals = np.take_along_axis(s, order, axis=1)
    fin = np.isfinite(ref_vals)
    m = min(n, J)
    assert (valid[:, :m] == fin).all() and not valid[:, m:].any()
    assert (idx[:, :m][fin] == order[fin]).all()
    assert (idx[~valid] == -1).all()


def test_checkerboard_withheld_item_ranks_first():
    train, test = checkerboard()
    post = als_map(train, k=2, reg_factors=1.0, reg_bias=1.0, iters=60)
    rec = recommend(post, None, n=1)
    assert rec["item"].tolist() == test.item.tolist()
    assert (rec["rank"] == 1).all() and np.isclose(rec["score"], rec["mean"]).all()


def test_exclude_seen_candidates_exclude():
    post, ratings = make_posterior(n_users=20, n_items=60, k=3, draws=5, seed=1)
    rec = recommend(post, None, n=10)
    seen = set(zip(ratings.user.tolist(), ratings.item.tolist()))
    assert not any((u, i) in seen for u, i in zip(rec.user, rec.item))
    rec_all = recommend(post, None, n=10, exclude_seen=False)
    assert any((u, i) in seen for u, i in zip(rec_all.user, rec_all.item))
    cand = [3, 5, 7, 11, 13, 17]
    rc = recommend(post, [0, 1, 2], n=10, candidates=cand, exclude=[5], exclude_seen=False)
    assert set(rc.item) <= set(cand) - {5}
    assert rc.groupby("user").size().tolist() == [5, 5, 5]  # fewer than n left: fewer rows
    from bayesmf.errors import SpecError

    with pytest.raises(SpecError, match="candidates is empty"):
        recommend(post, [0], n=3, candidates=[])
    # scores are the predictive means, sorted, and match Posterior.predict
    pred = post.predict(rc.user, rc.item)
    assert rc["score"].to_numpy() == pytest.approx(pred.mean, abs=1e-5)
    assert rc["std"].to_numpy() == pytest.approx(pred.std, rel=1e-6)
    assert rc["std_param"].to_numpy() == pytest.approx(pred.std_param, rel=1e-5, abs=1e-7)
    for _, g in rc.groupby("user"):
        assert (np.diff(g["score"].to_numpy()) <= 1e-12).all()
    with pytest.raises(UnknownIdError):
        recommend(post, [0], candidates=[999])
    with pytest.raises(SpecError):
        recommend(post, [0], n=0)


@pytest.mark.parametrize("strategy", ["mean", "upper", "thompson", "prob"])
def test_batched_equals_one_at_a_time(strategy):
    post, _ = make_posterior(n_users=12, n_items=70, k=2, draws=6, seed=2)
    users = [0, 5, 11, 3]
    full = recommend(post, users, n=4, strategy=strategy, seed=3, chunk_size=3)
    one = [recommend(post, [u], n=4, strategy=strategy, seed=3) for u in users]
    for u, df in zip(users, one):
        g = full[full.user == u]
        assert g["item"].tolist() == df["item"].tolist()
        assert g["score"].to_numpy() == pytest.approx(df["score"].to_numpy(), rel=1e-6)


def test_unknown_user_gets_flagged_population_fallback():
    post, _ = make_posterior(n_users=15, n_items=30, k=2, draws=5, seed=4)
    rec = recommend(post, [0, 12345], n=30)
    cold = rec[rec.user == 12345]
    assert (~cold["known_user"]).all() and rec[rec.user == 0]["known_user"].all()
    assert len(cold) == 30  # nothing is seen for an unknown user
    pred = post.predict(cold["user"], cold["item"])
    assert cold["mean"].to_numpy() == pytest.approx(pred.mean, abs=1e-5)
    assert cold["std"].to_numpy() == pytest.approx(pred.std, rel=1e-5)
    # wide: the fallback is as uncertain as "some user"
    assert cold["std_param"].mean() > 3 * rec[rec.user == 0]["std_param"].mean()
    with pytest.raises(UnknownIdError):
        recommend(post, [12345], unknown="raise")


def test_exact_mean_differs_from_mean_factors_when_chains_rotate():
    """Two chains whose factors are sign-flipped: E[U.V] is intact, mean factors cancel."""
    post, _ = make_posterior(n_users=20, n_items=50, k=2, chains=2, draws=4, seed=5,
                             draw_sd=0.05)
    post.draws["U"][1] *= -1
    post.draws["V"][1] *= -1
    exact = recommend(post, None, n=5, exclude_seen=False)
    pred = post.predict(exact.user, exact.item, clip=False).mean
    assert exact["score"].to_numpy() == pytest.approx(pred, abs=1e-5)
    mf = approx_error(post, "mean-factors", n=5)
    lr = approx_error(post, "lowrank", n=5)  # rank k*chains + 8 keeps both rotations
    assert lr["relative_rmse"] < 1e-2 and lr["top5_overlap"] == 1.0
    assert mf["relative_rmse"] > 0.3


def test_fast_modes_close_to_exact_for_one_chain():
    post, _ = make_posterior(n_users=40, n_items=80, k=3, draws=10, seed=6)
    for approx in ("lowrank", "mean-factors"):
        err = approx_error(post, approx, n=5)
        assert err["relative_rmse"] < 0.05 and err["top5_overlap"] > 0.9
        fast = recommend(post, None, n=5, approx=approx, uncertainty=False)
        assert fast["mean"].isna().all() and len(fast) == 40 * 5
    lr = approx_error(post, "lowrank", approx_rank=3 * 10)  # full rank -> exact
    assert lr["relative_rmse"] < 1e-5
    with pytest.raises(SpecError):
        recommend(post, [0], strategy="upper", approx="lowrank")
    with pytest.raises(SpecError):
        recommend(post, [0], approx="svd")


def test_bias_only_model():
    """rank 0: scores are mu + b_u + b_i; the fast modes fall back to the exact mean."""
    from bayesmf.posterior import Posterior

    post, _ = make_posterior(n_users=8, n_items=12, k=2, draws=3, seed=9)
    d = dict(post.draws, U=post.draws["U"][..., :0], V=post.draws["V"][..., :0])
    p0 = Posterior(d, post.spec.replace(rank=0), post.users, post.items, post.train, "gibbs")
    rec = recommend(p0, [0, 1], n=4, exclude_seen=False)
    bi = p0.flat("bi").mean(0)
    assert rec[rec.user == 0]["item"].tolist() == list(np.argsort(-bi, kind="stable")[:4])
    fast = recommend(p0, [0, 1], n=4, exclude_seen=False, approx="lowrank", uncertainty=False)
    assert fast["item"].tolist() == rec["item"].tolist()


def test_n_is_capped_at_the_catalogue(monkeypatch):
    """n=10**9 on a 40-item model used to allocate users x 10**9 results (21 GB)."""
    from bayesmf import _memory as mem
    from bayesmf.recommend import recommend_indices

    post, _ = make_posterior(n_users=20, n_items=40, k=2, draws=5, seed=3)
    monkeypatch.setenv(mem.ENV_VAR, "20MB")
    for st in ("mean", "ucb", "thompson"):
        rec = recommend(post, [0, 1], n=10**9, strategy=st, exclude_seen=False)
        assert rec.groupby("user").size().tolist() == [40, 40]
        assert sorted(rec[rec.user == 0].item) == list(range(40))
    _, res = recommend_indices(post, None, 10**9, candidates=[1, 2, 3])
    assert res.items.shape == (20, 3)
    for bad in (0, -1, 2.5, "3", True):
        with pytest.raises(SpecError):
            recommend(post, [0], n=bad)
    with pytest.raises(SpecError):
        recommend(post, [0], chunk_size="big")


def test_work_arrays_go_through_the_memory_guard(monkeypatch):
    from bayesmf import _memory as mem
    from bayesmf.errors import MemoryLimitError

    post, _ = make_posterior(n_users=50, n_items=300, k=3, draws=40, seed=4)
    monkeypatch.setenv(mem.ENV_VAR, "1MB")
    # one chunk of all users x items x draws: 50 x 300 x 40 x 32 B = 19 MB
    with pytest.raises(MemoryLimitError, match="per-draw scores of 50 users x 300 items"):
        recommend(post, None, n=5, strategy="ucb", quantile_method="exact", chunk_size=50)
    big, _ = make_posterior(n_users=400, n_items=300, k=3, draws=40, seed=4)
    with pytest.raises(MemoryLimitError, match="bounded top-5 work arrays of 400 users"):
        recommend(big, None, n=5, strategy="ucb", chunk_size=10**6)
    assert len(recommend(big, None, n=5, strategy="ucb")) == 2000  # default chunks fit
    monkeypatch.setenv(mem.ENV_VAR, "2GB")
    assert len(recommend(post, None, n=5, strategy="ucb", chunk_size=50)) == 250


def test_mean_column_is_clipped_score_is_not():
    post, _ = make_posterior(n_users=10, n_items=30, k=2, draws=8, seed=8)
    post.draws["mu"] = post.draws["mu"] + 3.0  # predictions far above the 5-star scale
    hi = post.train.scale.max
    for st in ("mean", "ucb"):
        rec = recommend(post, None, n=3, strategy=st)
        raw = recommend(post, None, n=3, strategy=st, clip=False)
        assert rec["score"].max() > hi and (rec["mean"] <= hi).all()
        assert rec["item"].tolist() == raw["item"].tolist()
        np.testing.assert_allclose(rec["mean"], np.minimum(raw["mean"], hi))
        np.testing.assert_allclose(rec["score"], raw["score"])


def test_bernoulli_mean_strategy_ranks_by_probability_not_by_mean_eta():
    """Issue 12: top-k of a Bernoulli model ranks by the posterior mean of P(y=1) (the
    mixture mean), which is not the order of the mean linear predictor; the score column
    is that probability."""
    import pandas as pd

    import bayesmf

    rng = np.random.default_rng(0)
    U, V = rng.normal(size=(40, 2)), rng.normal(size=(30, 2))
    uu, ii = np.nonzero(rng.random((40, 30)) < 0.5)
    y = ((U[uu] * V[ii]).sum(1) + rng.normal(0, 1, len(uu)) > 0).astype(float)
    m = bayesmf.BayesMF(method="gibbs", likelihood="bernoulli-probit", rank=2,
                        num_samples=50, num_warmup=50).fit(
        pd.DataFrame({"user": uu, "item": ii, "rating": y}))
    post = m.posterior_
    recs = recommend(post, [0, 1], n=5, exclude_seen=False)
    for u, g in recs.groupby("user"):
        p = np.asarray(post.predictive(np.full(30, u), post.items.ids).mean())
        np.testing.assert_allclose(g["score"].to_numpy(), np.sort(p)[::-1][:5], rtol=1e-5)
        np.testing.assert_allclose(g["score"].to_numpy(), g["mean"].to_numpy(), rtol=1e-6)
        assert (g["score"] <= 1).all() and (g["score"] >= 0).all()
