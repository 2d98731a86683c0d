"""The implicit-library API (bayesmf.ImplicitRecommender): same calls and shapes as
``implicit`` 0.7, answers from bayesmf's own ranking, fold-in and similarity."""

import numpy as np
import pytest
import scipy.sparse as sp

import bayesmf
from bayesmf import ImplicitRecommender
from bayesmf.errors import DataError, NotFittedError, SpecError, UnknownIdError
from bayesmf.recommend import fold_in, recommend, similar_items

N_USERS, N_ITEMS = 60, 40


@pytest.fixture(scope="module")
def user_items():
    rng = np.random.default_rng(0)
    U, V = rng.normal(size=(N_USERS, 3)), rng.normal(size=(N_ITEMS, 3))
    liked = U @ V.T + rng.normal(size=(N_USERS, N_ITEMS)) > 1.0
    X = sp.csr_matrix(liked * rng.integers(1, 5, (N_USERS, N_ITEMS)).astype(float))
    assert np.diff(X.indptr).min() > 0 and np.diff(X.tocsc().indptr).min() > 0
    return X


@pytest.fixture(scope="module")
def rec(user_items):
    model = bayesmf.BayesMF(likelihood="implicit", method="gibbs", rank=4, num_samples=40,
                            num_warmup=40, seed=0)
    return ImplicitRecommender(model).fit(user_items, show_progress=False)


def _mean_scores(post):
    """Posterior mean of mu + b_u + b_i + U V^T from the draws, by hand."""
    D = post.draws
    U = D["U"].reshape(-1, *D["U"].shape[2:]).astype(np.float64)
    V = D["V"].reshape(-1, *D["V"].shape[2:]).astype(np.float64)
    s = np.einsum("suk,sik->sui", U, V)
    s += D["mu"].reshape(-1, 1, 1) + D["bu"].reshape(len(U), -1, 1) \
        + D["bi"].reshape(len(U), 1, -1)
    return s.mean(0)


def test_fit_from_csr_indexes_users_and_items_by_row_and_column(rec, user_items):
    post = rec.posterior
    assert np.array_equal(rec.user_ids, np.arange(N_USERS))
    assert np.array_equal(rec.item_ids, np.arange(N_ITEMS))
    assert rec.user_factors.shape == (N_USERS, 4) and rec.item_factors.shape == (N_ITEMS, 4)
    assert (rec.user_items != (user_items > 0)).nnz == 0
    assert post.likelihood.name == "implicit"


def test_recommend_is_the_posterior_mean_top_n_without_liked_items(rec, user_items):
    S = _mean_scores(rec.posterior)
    for u in (0, 7, 31):
        ids, scores = rec.recommend(u, user_items[u], N=5)
        assert ids.shape == scores.shape == (5,) and scores.dtype == np.float32
        s = S[u].copy()
        s[user_items[u].indices] = -np.inf
        assert np.array_equal(ids, np.argsort(-s, kind="stable")[:5])
        np.testing.assert_allclose(scores, s[ids], rtol=1e-4, atol=1e-5)
        assert not set(ids) & set(user_items[u].indices)


def test_batch_rows_equal_single_calls_and_match_bayesmf_recommend(rec, user_items):
    users = np.array([7, 3, 12])
    ids, scores = rec.recommend(users, user_items[users], N=6)
    assert ids.shape == scores.shape == (3, 6)
    for j, u in enumerate(users):
        one, sc = rec.recommend(int(u), user_items[u], N=6)
        assert np.array_equal(ids[j], one)
        np.testing.assert_allclose(scores[j], sc, rtol=1e-6)
    df = recommend(rec.posterior, users, n=6)
    for j, u in enumerate(users):
        assert np.array_equal(df[df["user"] == u].sort_values("rank")["item"], ids[j])


def test_filters_items_and_n_cap(rec, user_items):
    u = 5
    liked = set(user_items[u].indices)
    ids, _ = rec.recommend(u, user_items[u], N=5)
    no_top, _ = rec.recommend(u, user_items[u], N=5, filter_items=ids[:2])
    assert not set(ids[:2]) & set(no_top) and np.array_equal(no_top[:3], ids[2:])
    only = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    within, _ = rec.recommend(u, user_items[u], N=20, items=only)
    assert set(within) == set(only) - liked      # capped at the candidates left
    kept, _ = rec.recommend(u, user_items[u], N=N_ITEMS, filter_already_liked_items=False)
    assert len(kept) == N_ITEMS
    # a batch pads the users with fewer items left with id -1 and score -inf
    users = np.array([u, 6])
    b_ids, b_sc = rec.recommend(users, user_items[users], N=8, items=only)
    for j, uu in enumerate(users):
        n_left = len(set(only) - set(user_items[uu].indices))
        assert np.all(b_ids[j, n_left:] == -1) and np.all(np.isinf(b_sc[j, n_left:]))
        assert np.all(b_ids[j, :n_left] >= 0)


def test_user_items_none_means_training_items(rec, user_items):
    a, _ = rec.recommend(9, None, N=5)
    b, _ = rec.recommend(9, user_items[9], N=5)
    assert np.array_equal(a, b)


def test_liked_items_come_from_the_passed_rows_not_training(rec, user_items):
    u = 4
    ids, _ = rec.recommend(u, user_items[u], N=3)
    row = sp.csr_matrix(([1.0], ([0], [ids[0]])), shape=(1, N_ITEMS))
    other, _ = rec.recommend(u, row, N=3)      # only ids[0] filtered: training items return
    assert ids[0] not in other and set(other) & set(user_items[u].indices)


def test_recalculate_user_folds_in_from_the_rows(rec, user_items):
    post = rec.posterior
    u = 11
    ids, scores = rec.recommend(u, user_items[u], N=5, recalculate_user=True)
    r = user_items[u].tocoo()
    folded = fold_in(post, {int(i): float(v) for i, v in zip(r.col, r.data)}, user=u)
    df = folded.recommend(n=5)
    assert np.array_equal(df.sort_values("rank")["item"].to_numpy(), ids)
    # order of a batch is the request's; an empty row folds to the prior
    users = np.array([u, 2])
    rows = sp.vstack([user_items[u], sp.csr_matrix((1, N_ITEMS))]).tocsr()
    b_ids, _ = rec.recommend(users, rows, N=5, recalculate_user=True)
    assert np.array_equal(b_ids[0], ids)
    prior, _ = rec.recommend(2, sp.csr_matrix((1, N_ITEMS)), N=5, recalculate_user=True)
    assert np.array_equal(b_ids[1], prior)
    # refolding a trained user from its own training row ranks like the trained user
    stored, _ = rec.recommend(u, user_items[u], N=5)
    assert len(set(stored) & set(ids)) >= 4


def test_strategy_passes_through(rec, user_items):
    a, _ = rec.recommend(3, user_items[3], N=5, strategy="thompson", seed=1)
    b, _ = rec.recommend(3, user_items[3], N=5, strategy="thompson", seed=1)
    assert np.array_equal(a, b)
    df = recommend(rec.posterior, [3], n=5, strategy="ucb", quantile=0.9)
    u, _ = rec.recommend(3, user_items[3], N=5, strategy="ucb", quantile=0.9)
    assert np.array_equal(df.sort_values("rank")["item"].to_numpy(), u)


def test_similar_items_self_first_then_bayesmf_similarity(rec):
    ids, scores = rec.similar_items(2, N=5)
    assert ids[0] == 2 and scores[0] == 1.0 and len(ids) == 5
    df = similar_items(rec.posterior, [2], n=4).sort_values("rank")
    assert np.array_equal(ids[1:], df["similar"].to_numpy())
    np.testing.assert_allclose(scores[1:], df["score"].to_numpy(), rtol=1e-6)
    no_self, _ = rec.similar_items(2, N=4, filter_items=[2])
    assert np.array_equal(no_self, ids[1:])
    b_ids, b_sc = rec.similar_items([2, 5], N=5)
    assert b_ids.shape == b_sc.shape == (2, 5) and np.array_equal(b_ids[0], ids)
    within, _ = rec.similar_items(2, N=10, items=[1, 3, 4])
    assert set(within) == {1, 3, 4}


def test_similar_items_recalculated_from_item_users(rec, user_items):
    item_users = user_items.T.tocsr()
    ids, scores = rec.similar_items(2, N=4, recalculate_item=True,
                                    item_users=item_users[[2]])
    assert len(ids) == 4 and ids.max() < N_ITEMS and scores[0] <= 1.0 + 1e-6
    assert ids[0] == 2       # refolded from its own users, item 2 is its nearest


def test_similar_users(rec):
    ids, scores = rec.similar_users(0, N=3)
    assert ids[0] == 0 and scores[0] == 1.0 and len(ids) == 3
    ids2, _ = rec.similar_users(0, N=3, filter_users=[0])
    assert 0 not in ids2


def test_bad_input_is_a_clear_error(rec, user_items):
    with pytest.raises(UnknownIdError, match=r"unknown userid \(indices run 0..59\)"):
        rec.recommend(N_USERS, None)
    with pytest.raises(DataError, match="integer index"):
        rec.recommend("u1", None)
    with pytest.raises(DataError, match="one row for every user"):
        rec.recommend(np.array([1, 2]), user_items[1])
    with pytest.raises(DataError, match="sparse"):
        rec.recommend(1, user_items[1].toarray())
    with pytest.raises(SpecError, match="not both"):
        rec.recommend(1, user_items[1], items=[1, 2], filter_items=[3])
    with pytest.raises(UnknownIdError, match="unknown items"):
        rec.recommend(1, user_items[1], items=[N_ITEMS])
    with pytest.raises(DataError, match="needs user_items"):
        rec.recommend(1, None, recalculate_user=True)
    with pytest.raises(DataError, match="needs item_users"):
        rec.similar_items(1, recalculate_item=True)
    with pytest.raises(NotFittedError):
        ImplicitRecommender().recommend(0, None)
    with pytest.raises(DataError, match=r"1 empty rows \(users\)"):
        ImplicitRecommender(bayesmf.BayesMF(likelihood="implicit")).fit(
            sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 0.0]])))
    with pytest.raises(DataError, match="negative"):
        ImplicitRecommender(bayesmf.BayesMF(likelihood="implicit")).fit(
            sp.csr_matrix(np.array([[1.0, -1.0], [2.0, 1.0]])))
    with pytest.raises(DataError, match="sparse"):
        ImplicitRecommender().fit(np.ones((2, 2)))
    with pytest.raises(SpecError, match="BayesMF, a Posterior or None"):
        ImplicitRecommender("als")


def test_wraps_a_posterior_and_non_integer_weights(user_items):
    W = user_items.copy()
    W.data = np.log1p(W.data) + 0.5          # confidences, not counts
    m = bayesmf.BayesMF(likelihood="implicit", method="map", rank=3, seed=0)
    rec = ImplicitRecommender(m).fit(W, show_progress=False)
    assert m.progress is False               # the fit's bar did not stick to the model
    post = rec.posterior
    again = ImplicitRecommender(post)
    a, _ = again.recommend(0, W[0], N=5)
    b, _ = rec.recommend(0, W[0], N=5)
    assert np.array_equal(a, b)
    with pytest.raises(SpecError, match="wraps a fitted posterior"):
        again.fit(W)


def test_default_model_is_the_cli_default_for_implicit_feedback():
    from bayesmf.estimator import DEFAULT_METHOD, DEFAULT_RANK

    rng = np.random.default_rng(1)
    dense = (rng.random((90, 70)) < 0.2) * 1.0
    dense[np.arange(90), np.arange(90) % 70] = 1.0           # no empty row or column
    X = sp.csr_matrix(dense)
    rec = ImplicitRecommender().fit(X.tocsr(), show_progress=False)
    post = rec.posterior
    assert (DEFAULT_METHOD["implicit"], DEFAULT_RANK["implicit"]) == ("gibbs", 64)
    assert post.spec.rank == 64 and post.likelihood.name == "implicit"
    assert post.n_samples > 1 and post.attrs["sampler"] == "bpmf-gibbs"


def test_recalculate_user_on_a_bernoulli_model_folds_in_with_the_fitted_negatives(user_items):
    m = bayesmf.BayesMF(likelihood="bernoulli-logit", method="gibbs", rank=3, num_samples=20,
                        num_warmup=20, seed=0)
    clicks = (user_items > 0).astype(float)
    rec = ImplicitRecommender(m).fit(clicks, show_progress=False, negatives="uniform:2")
    ids, scores = rec.recommend(4, clicks[4], N=5, recalculate_user=True)
    assert len(ids) == 5 and not set(ids) & set(user_items[4].indices)
    assert np.all((scores > 0) & (scores < 1))          # P(y = 1)
    # the counts of the row fold in as its positives, as fit took them (every listed pair
    # is y = 1): the same recommendations as from the 0/1 row; stored zeros are no pairs
    ids2, scores2 = rec.recommend(4, user_items[4], N=5, recalculate_user=True)
    np.testing.assert_array_equal(ids2, ids)
    np.testing.assert_allclose(scores2, scores)
    row0 = sp.csr_matrix(clicks[4], copy=True)
    row0.data[0] = 0.0
    row0b = sp.csr_matrix(clicks[4], copy=True)
    row0b.eliminate_zeros()
    row0b = row0b.tolil()
    row0b[0, row0.indices[0]] = 0
    ids3, _ = rec.recommend(4, row0, N=5, recalculate_user=True)
    ids4, _ = rec.recommend(4, sp.csr_matrix(row0b), N=5, recalculate_user=True)
    np.testing.assert_array_equal(ids3, ids4)
    with pytest.raises(DataError, match="negative values"):
        rec.recommend(4, -clicks[4], N=5, recalculate_user=True)


@pytest.mark.parametrize("value, what", [(np.nan, "NaN or infinite"), (-2.0, "negative")])
def test_bad_counts_name_the_user_and_item(user_items, value, what):
    X = sp.csr_matrix(user_items, dtype=float, copy=True)
    u = 3
    j = X.indptr[u]  # the first stored pair of user 3
    X.data[j] = value
    with pytest.raises(DataError, match=f"1 {what} value.*at user 3, item {X.indices[j]}"):
        ImplicitRecommender(bayesmf.BayesMF(method="map", likelihood="implicit",
                                            rank=2)).fit(X, show_progress=False)


def test_estimator_evaluate_takes_held_out_interactions_as_a_frame(user_items):
    """``BayesMF.evaluate`` of an implicit model accepts a user/item frame without a
    rating column (every pair relevant): the same metrics as the Interactions."""
    import pandas as pd

    from bayesmf.data.interactions import Interactions

    X = sp.csr_matrix(user_items).tocoo()
    hold = np.arange(X.nnz) % 5 == 0
    frame = pd.DataFrame({"user": X.row[~hold], "item": X.col[~hold],
                          "count": X.data[~hold]})
    m = bayesmf.BayesMF(method="map", likelihood="implicit", rank=2).fit(
        Interactions.from_arrays(frame.user, frame.item, frame["count"]))
    test = pd.DataFrame({"user": X.row[hold], "item": X.col[hold]})
    a = m.evaluate(test, k=5)["ranking"]
    b = m.evaluate(Interactions.from_arrays(test.user, test.item), k=5)["ranking"]
    assert a["relevant_pairs"] == b["relevant_pairs"] > 0 and a["ndcg@5"] == b["ndcg@5"]
