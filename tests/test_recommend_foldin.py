"""Fold-in: exact Gaussian conditionals, agreement with a converged refit, fallbacks."""

import numpy as np
import pandas as pd
import pytest

from _uq_synth import als_map, checkerboard, make_posterior
from bayesmf.errors import DataError, SpecError
from bayesmf.recommend import fold_in, fold_in_item, recommend


def _hyper_posterior(S=6, k=2, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((S, k, k))
    extra = {"mu_U": rng.normal(0, 0.3, (1, S, k)),
             "Lambda_U": (np.einsum("sij,skj->sik", A, A) + np.eye(k))[None],
             "lambda_bu": rng.uniform(1, 5, (1, S))}
    return make_posterior(n_users=10, n_items=15, k=k, draws=S, seed=seed, extra_draws=extra)


def test_fold_in_equals_closed_form_conditional():
    post, _ = _hyper_posterior()
    ratings = {2: 5.0, 7: 3.0, 11: 1.5}
    f = fold_in(post, ratings, user=77, mode="mean")
    assert f.info["prior"] == "hyper"
    S, k = post.n_samples, 2
    items = np.array(list(ratings))
    y = np.array(list(ratings.values()))
    for s in range(S):
        tau = post.flat("tau")[s]
        Z = np.column_stack([np.ones(3), post.flat("V")[s, items].astype(float)])
        res = y - post.flat("mu")[s] - post.flat("bi")[s, items]
        P0 = np.zeros((k + 1, k + 1))
        P0[0, 0] = post.flat("lambda_bu")[s]
        P0[1:, 1:] = post.flat("Lambda_U")[s]
        m0 = np.concatenate([[0.0], post.flat("mu_U")[s]])
        # independent route: the stacked least-squares problem of the Gaussian posterior
        L0 = np.linalg.cholesky(P0)
        Xa = np.vstack([np.sqrt(tau) * Z, L0.T])
        ya = np.concatenate([np.sqrt(tau) * res, L0.T @ m0])
        ref = np.linalg.lstsq(Xa, ya, rcond=None)[0]
        assert f.cond_mean[s, 0] == pytest.approx(ref, abs=1e-8)
        assert f.b[s, 0] == pytest.approx(ref[0]) and f.F[s, 0] == pytest.approx(ref[1:])
        assert f.cond_cov[s, 0] == pytest.approx(np.linalg.inv(Xa.T @ Xa), abs=1e-10)


def test_sampled_fold_in_has_the_conditional_distribution():
    post, _ = _hyper_posterior(S=1)
    # replicate the single draw so each fold-in sample comes from the same conditional
    big = post.select(draws=np.zeros(4000, int))
    f = fold_in(big, {1: 4.0, 3: 2.0}, user=5, mode="sample", seed=2)
    a = np.column_stack([f.b[:, 0], f.F[:, 0]])
    assert a.mean(0) == pytest.approx(f.cond_mean[0, 0], abs=4 * np.sqrt(f.cond_cov[0, 0].diagonal().max() / 4000))
    assert np.cov(a.T) == pytest.approx(f.cond_cov[0, 0], abs=0.1 * f.cond_cov[0, 0].diagonal().max())
    g = fold_in(big, {1: 4.0, 3: 2.0}, user=5, mode="sample", seed=2)
    assert np.array_equal(f.b, g.b)


def test_fold_in_agrees_with_converged_refit():
    """At an ALS (MAP) fixed point each user is its own ridge fold-in given the items."""
    train, _ = checkerboard(n_per=4, m_per=5, seed=3)
    post = als_map(train, k=2, reg_factors=1.0, reg_bias=1.0, iters=150)
    df = train.to_dataframe()
    f = fold_in(post, df, mode="mean")  # every user at once
    assert f.info["prior"] == "ridge" and f.info["mode"] == "mean"
    idx = post.users.encode(f.raw)
    assert f.b[0] == pytest.approx(post.flat("bu")[0, idx], abs=1e-6)
    assert f.F[0] == pytest.approx(post.flat("U")[0, idx], abs=1e-6)
    # predictions of the folded users equal those of the trained ones
    p = f.predict([0, 3, 7])
    ref = post.predict(np.repeat(f.raw, 3), np.tile([0, 3, 7], len(f.raw)))
    assert p["mean"].to_numpy() == pytest.approx(ref.mean, abs=1e-5)
    # and the new users' recommendations exclude what they rated, like the trained users'
    r_new = f.recommend(n=2)
    r_old = recommend(post, f.raw, n=2)
    assert r_new["item"].tolist() == r_old["item"].tolist()


def test_empty_fold_in_is_the_population_fallback_and_batching():
    post, _ = make_posterior(n_users=12, n_items=20, k=2, draws=5, seed=7)
    f = fold_in(post, {}, user=500, mode="mean")
    assert f.info["prior"] == "population"
    assert f.predict([3, 4])["mean"].to_numpy() == pytest.approx(post.predict([500, 500], [3, 4]).mean)
    two = pd.DataFrame({"user": [900, 900, 901], "item": [1, 2, 3], "rating": [5.0, 4.0, 2.0]})
    both = fold_in(post, two, seed=4)
    one = fold_in(post, {3: 2.0}, user=901, seed=4)
    assert both.b[:, 1] == pytest.approx(one.b[:, 0]) and both.F[:, 1] == pytest.approx(one.F[:, 0])
    f2 = fold_in(post, pd.Series({1: 5.0, 999: 3.0}), user=902)
    assert f2.info["dropped_unknown"] == 1
    with pytest.raises(Exception):
        fold_in(post, {999: 3.0}, user=903, unknown="raise")
    with pytest.raises(DataError):
        fold_in(post, {1: float("nan")})
    with pytest.raises(SpecError):
        fold_in(post, {1: 3.0}, prior="hyper")  # no hyper draws in this posterior


def test_append_to_and_fold_in_item():
    post, ratings = make_posterior(n_users=12, n_items=20, k=2, draws=4, seed=8)
    f = fold_in(post, {1: 5.0, 2: 1.0}, user=100, seed=1)
    p2 = f.append_to()
    assert len(p2.users) == 13 and p2.train.user_counts[-1] == 2
    pred = p2.predict([100, 100], [5, 6], clip=False)
    assert pred.mean == pytest.approx(f.predict([5, 6], clip=False)["mean"].to_numpy(), abs=1e-5)
    rec = recommend(p2, [100], n=20)
    assert not ({1, 2} & set(rec.item)) and len(rec) == 18
    with pytest.raises(DataError):
        fold_in(post, {1: 5.0}, user=3).append_to()  # id clash
    fi = fold_in_item(post, {0: 5.0, 1: 4.5, 2: 5.0}, item=555, mode="mean")
    assert fi.info["prior"] == "population" and fi.cond_mean.shape == (4, 1, 3)
    pm, pc = post._population_moments()["item"]
    for s in range(4):  # the item conditional, written out
        Z = np.column_stack([np.ones(3), post.flat("U")[s, [0, 1, 2]].astype(float)])
        res = np.array([5.0, 4.5, 5.0]) - post.flat("mu")[s] - post.flat("bu")[s, [0, 1, 2]]
        P0 = np.linalg.inv(pc[s] + 1e-9 * np.eye(3))
        P = P0 + post.flat("tau")[s] * Z.T @ Z
        ref = np.linalg.solve(P, P0 @ pm[s] + post.flat("tau")[s] * Z.T @ res)
        assert fi.cond_mean[s, 0] == pytest.approx(ref, rel=1e-6, abs=1e-8)
    p3 = fi.append_to()
    r = recommend(p3, [0, 5], n=21, exclude_seen=True)
    assert 555 not in set(r[r.user == 0].item) and 555 in set(r[r.user == 5].item)
    pr = fi.predict([5])
    assert pr["mean"].to_numpy() == pytest.approx(p3.predict([5], [555]).mean, abs=1e-5)


def test_folded_predictions_are_clipped_to_the_rating_scale_by_default():
    post, _ = _hyper_posterior()
    lo, hi = float(post.train.scale.min), float(post.train.scale.max)
    f = fold_in(post, {2: hi, 7: hi, 11: hi}, user=77, mode="mean")
    p = f.predict(post.items.ids)
    assert p["mean"].between(lo, hi).all() and p["upper"].le(hi).all()
    assert p["lower"].ge(lo).all()
    raw = f.predict(post.items.ids, clip=False)
    np.testing.assert_allclose(np.clip(raw["mean"], lo, hi), p["mean"])


def test_default_text_id_on_an_integer_model_says_how_to_append():
    """fold_in's default id "new_user" cannot join integer ids: the error names the
    argument that gives the new user an integer id."""
    import pandas as pd

    import bayesmf
    from bayesmf.errors import DataError
    from bayesmf.recommend import fold_in

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user": np.repeat(np.arange(10), 5),
                       "item": np.concatenate([rng.permutation(12)[:5] for _ in range(10)]),
                       "rating": rng.integers(1, 6, 50).astype(float)})
    post = bayesmf.BayesMF(method="map", rank=2).fit(df).posterior
    with pytest.raises(DataError, match=r"fold_in\(posterior, ratings, user=<an unused"):
        fold_in(post, {1: 5.0}).append_to()
    assert len(fold_in(post, {1: 5.0}, user=100).append_to().users) == 11
