"""Ranking evaluation for implicit feedback: Interactions test sets, relevance of an
implicit posterior, catalogue coverage@k, given negatives (the NCF protocol) and their
validation, per-draw metrics, and one end-to-end fit against a popularity baseline.

The hand-computed cases use posteriors built directly from arrays (rank 1, no biases), so
the score of user u for item i is U_u * V_i and every rank is known.
"""

import numpy as np
import pandas as pd
import pytest

from bayesmf.data.interactions import Interactions
from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import DataError, SpecError
from bayesmf.evaluate import (build_task, catalogue_coverage, evaluate, ranking_evaluate,
                              ranks_from_scores, topk_mask)
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo

LOG2_3 = np.log2(3.0)


def implicit_posterior(U, V, train_u, train_i, user_ids, item_ids):
    """Posterior of the implicit likelihood with draws ``U (S, N)``, ``V (S, M)`` (rank 1,
    no biases) and the training interactions ``(train_u, train_i)`` (indices)."""
    U = np.asarray(U, np.float64)
    V = np.asarray(V, np.float64)
    if U.ndim == 1:
        U, V = U[None], V[None]
    S, N = U.shape
    M = V.shape[1]
    users, items = Vocabulary(user_ids, "user"), Vocabulary(item_ids, "item")
    train = Interactions.from_arrays(users.ids[train_u], items.ids[train_i],
                                     user_vocab=users, item_vocab=items)
    spec = ModelSpec(rank=1, likelihood="implicit", global_mean=False, user_bias=False,
                     item_bias=False)
    d = {"mu": np.zeros((1, S)), "bu": np.zeros((1, S, N)), "bi": np.zeros((1, S, M)),
         "U": U[None, :, :, None].astype(np.float32),
         "V": V[None, :, :, None].astype(np.float32), "tau": np.ones((1, S))}
    post = Posterior(d, spec, users, items, TrainInfo.from_ratings(train.to_ratings()), "map")
    return post, train


# users 10, 11, 12; items 100..105 with V = 6..1: user 10 and 12 (U = +1) prefer low item
# ids, user 11 (U = -1) high ones.
V0 = np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])
U0 = np.array([1.0, -1.0, 1.0])
UIDS, IIDS = np.array([10, 11, 12]), np.arange(100, 106)
TRAIN = ([0, 1, 1, 2], [0, 5, 4, 1])  # 10: {100}; 11: {105, 104}; 12: {101}
TEST = ([10, 10, 11, 12], [102, 105, 100, 100])


def small():
    post, train = implicit_posterior(U0, V0, *TRAIN, UIDS, IIDS)
    test = Interactions.from_arrays(np.array(TEST[0]), np.array(TEST[1]),
                                    user_vocab=train.users, item_vocab=train.items)
    return post, train, test


def test_full_protocol_hand_computed_metrics_and_coverage():
    post, _, test = small()
    assert post.likelihood.full_matrix
    res = ranking_evaluate(post, test, k=2)
    # user 10: candidates 101..105 in score order; relevant 102 at rank 1, 105 at rank 4
    #   top-2 = {101, 102}; P = 1/2, R = 1/2, HR = 1, NDCG = (1/log2 3)/(1 + 1/log2 3),
    #   AP = (1/2)/2, RR = 1/2, AUC = ((3 - 1) + (3 - 3)) / (2 * 3) = 1/3
    # user 11: candidates 100..103 ordered 103, 102, 101, 100; relevant 100 at rank 3
    #   top-2 = {103, 102}; every metric 0, AUC = 0
    # user 12: candidates 100, 102..105; relevant 100 at rank 0; top-2 = {100, 102}
    #   P = 1/2, R = HR = NDCG = AP = RR = AUC = 1
    ndcg0 = (1 / LOG2_3) / (1 + 1 / LOG2_3)
    assert res["hit_rate@2"] == pytest.approx(2 / 3)
    assert res["precision@2"] == pytest.approx(1 / 3)
    assert res["recall@2"] == pytest.approx(0.5)
    assert res["ndcg@2"] == pytest.approx((ndcg0 + 1) / 3)
    assert res["map@2"] == pytest.approx((0.25 + 1) / 3)
    assert res["mrr@2"] == pytest.approx((0.5 + 1) / 3)
    assert res["auc"] == pytest.approx((1 / 3 + 1) / 3)
    # union of the top-2 lists {101, 102} | {103, 102} | {100, 102} = 4 of 6 items
    assert res["catalogue_coverage@2"] == pytest.approx(4 / 6)
    assert res["items_covered"] == 4 and res["n_items"] == 6
    assert res["relevance_threshold"] is None and res["relevant_pairs"] == 4
    assert res["candidates_mean"] == pytest.approx((5 + 4 + 5) / 3)
    # k=1: {101} | {103} | {100} = 3 of 6
    assert ranking_evaluate(post, test, k=1)["catalogue_coverage@1"] == pytest.approx(0.5)
    # the sampled protocol has no coverage (its candidate lists are not recommendations)
    assert "catalogue_coverage@2" not in ranking_evaluate(post, test, k=2,
                                                          protocol="sampled", n_negatives=2)


def test_ratings_test_on_implicit_posterior_relevance():
    post, train, _ = small()
    # the same pairs as a Ratings with counts: every pair relevant by default
    counts = Ratings.from_indices(np.array([0, 0, 1, 2]), np.array([2, 5, 0, 0]),
                                  np.array([1.0, 3.0, 1.0, 5.0]), train.users, train.items)
    res = ranking_evaluate(post, counts, k=2)
    assert res["relevant_pairs"] == 4 and res["hit_rate@2"] == pytest.approx(2 / 3)
    # an explicit threshold still applies: user 10 keeps 105 (rank 4), user 11 loses 100
    thr = ranking_evaluate(post, counts, k=2, relevance_threshold=2.0)
    assert thr["relevant_pairs"] == 2 and thr["users"] == 2
    assert thr["hit_rate@2"] == pytest.approx(0.5)  # user 10 misses, user 12 hits
    assert thr["mrr@2"] == pytest.approx(0.5)
    # 0/1 labels (not valid training counts) work with a threshold
    labels = Ratings.from_indices(np.array([0, 0, 1, 2]), np.array([2, 5, 0, 0]),
                                  np.array([1.0, 0.0, 0.0, 1.0]), train.users, train.items)
    lab = ranking_evaluate(post, labels, k=2, relevance_threshold=0.5)
    assert lab["relevant_pairs"] == 2 and lab["hit_rate@2"] == 1.0  # 102 and 100: hits
    # an Interactions test set takes no threshold
    with pytest.raises(SpecError, match="relevance_threshold"):
        ranking_evaluate(post, small()[2], k=2, relevance_threshold=1.0)
    with pytest.raises(DataError, match="Ratings or Interactions"):
        ranking_evaluate(post, pd.DataFrame({"user": [10], "item": [102]}), k=2)


def test_unknown_ids_are_counted_and_dropped():
    post, _, test = small()
    # own vocabularies: user 99 and item 999 are unknown to the model
    other = Interactions.from_arrays(np.array(TEST[0] + [99, 99, 10]),
                                     np.array(TEST[1] + [100, 999, 999]))
    res = ranking_evaluate(post, other, k=2)
    base = ranking_evaluate(post, test, k=2)
    assert res["unknown_rows"] == 3 and res["unknown_user_rows"] == 2
    assert res["unknown_item_rows"] == 2
    assert res["unknown_users"] == 1 and res["unknown_items"] == 1
    for key in ("hit_rate@2", "ndcg@2", "auc", "catalogue_coverage@2"):
        assert res[key] == pytest.approx(base[key])
    only_unknown = Interactions.from_arrays(np.array([99]), np.array([999]))
    with pytest.raises(DataError, match="knows"):
        ranking_evaluate(post, only_unknown)


def test_per_draw_distribution_of_an_implicit_posterior():
    # two draws: draw 0 is the small problem; draw 1 reverses user 12's taste
    U = np.stack([U0, np.array([1.0, -1.0, -1.0])])
    V = np.stack([V0, V0])
    post, train = implicit_posterior(U, V, *TRAIN, UIDS, IIDS)
    test = Interactions.from_arrays(np.array(TEST[0]), np.array(TEST[1]),
                                    user_vocab=train.users, item_vocab=train.items)
    res = ranking_evaluate(post, test, k=2, draws=True)
    d = res["draws"]
    assert d["n_draws"] == 2
    single = [ranking_evaluate(post.select(draws=slice(s, s + 1)), test, k=2)
              for s in range(2)]
    for key in ("precision@2", "recall@2", "hit_rate@2", "ndcg@2", "map@2", "mrr@2", "auc",
                "catalogue_coverage@2"):
        vals = [r[key] for r in single]
        assert d[key]["mean"] == pytest.approx(np.mean(vals)), key
        assert d[key]["lower"] == pytest.approx(np.quantile(vals, 0.05)), key
        assert d[key]["upper"] == pytest.approx(np.quantile(vals, 0.95)), key
    # draw 1: user 12 ranks 100 last among its 5 candidates -> HR 1/3 (user 10 only);
    # top-2 lists {101, 102} | {103, 102} | {105, 104} -> 5 of 6 items
    assert single[1]["hit_rate@2"] == pytest.approx(1 / 3)
    assert single[1]["catalogue_coverage@2"] == pytest.approx(5 / 6)
    assert d["hit_rate@2"]["lower"] < d["hit_rate@2"]["upper"]
    # sampled protocol with given negatives: per-draw AUC too
    neg = {10: [103, 104], 11: [101, 102], 12: [104, 105]}
    rs = ranking_evaluate(post, test, k=1, protocol="sampled", negatives=neg, draws=True)
    assert set(rs["draws"]) >= {"auc", "hit_rate@1", "ndcg@1"}
    # user 12 in draw 1 ranks 100 below 104 and 105: AUC 0 (draw 0: 1)
    assert rs["draws"]["auc"]["upper"] > rs["draws"]["auc"]["lower"]


# ------------------------------------------------------------------ given negatives
def ten_items():
    """One user (id 'a') scoring item i by 10 - i; trained on item 0; held out item 5;
    user 'b' trained on 9, held out 1; scores of 'b' are i - 10 (prefers high ids)."""
    V = 10.0 - np.arange(10)
    post, train = implicit_posterior(np.array([1.0, -1.0]), V, [0, 1], [0, 9],
                                     np.array(["a", "b"], object), np.arange(10))
    test = Interactions.from_arrays(np.array(["a", "b"], object), np.array([5, 1]),
                                    user_vocab=train.users, item_vocab=train.items)
    return post, train, test


def test_given_negatives_hand_computed_rank():
    post, _, test = ten_items()
    # user a: held-out 5 (score 5) among negatives 9 (1), 8 (2), 3 (7), 7 (3): only 3 is
    # above it -> rank 1; user b: held-out 1 (score -9) among 2 (-8), 4 (-6): rank 2
    neg = {"a": [9, 8, 3, 7], "b": [2, 4]}
    r2 = ranking_evaluate(post, test, k=2, protocol="sampled", negatives=neg)
    assert r2["sampling"] == "given" and r2["negatives_min"] == 2
    assert r2["negatives_max"] == 4
    assert r2["candidates_mean"] == pytest.approx((5 + 3) / 2)
    assert r2["hit_rate@2"] == pytest.approx(0.5)
    assert r2["ndcg@2"] == pytest.approx((1 / LOG2_3 + 0) / 2)
    assert r2["mrr@2"] == pytest.approx(0.25)
    assert r2["auc"] == pytest.approx((3 / 4 + 0 / 2) / 2)
    r3 = ranking_evaluate(post, test, k=3, protocol="sampled", negatives=neg)
    assert r3["hit_rate@3"] == 1.0 and r3["mrr@3"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    # the same negatives as a user/item frame (any row order) give the same numbers
    frame = pd.DataFrame({"user": ["b", "a", "a", "a", "b", "a"],
                          "item": [4, 7, 3, 9, 2, 8]})
    rf = ranking_evaluate(post, test, k=2, protocol="sampled", negatives=frame)
    for key in ("hit_rate@2", "ndcg@2", "mrr@2", "auc"):
        assert rf[key] == pytest.approx(r2[key])
    # negatives of a user who is not evaluated are ignored (and counted)
    test_a = test.subset(np.array([True, False]))  # sorted by user index: a first
    ra = ranking_evaluate(post, test_a, k=2, protocol="sampled", negatives=neg)
    assert ra["negative_users_unused"] == 1 and ra["hit_rate@2"] == 1.0


def test_given_negatives_equal_full_protocol_when_they_are_all_candidates():
    post, _, test = ten_items()
    neg = {"a": [j for j in range(10) if j not in (0, 5)],
           "b": [j for j in range(10) if j not in (9, 1)]}
    full = ranking_evaluate(post, test, k=3)
    given = ranking_evaluate(post, test, k=3, protocol="sampled", negatives=neg)
    for key in ("precision@3", "recall@3", "hit_rate@3", "ndcg@3", "map@3", "mrr@3", "auc"):
        assert given[key] == pytest.approx(full[key]), key
    assert given["candidates_mean"] == full["candidates_mean"] == 9


@pytest.mark.parametrize("neg, match", [
    ({"a": [9, 8], "zz": [3]}, r"1 given negative\(s\) name an unknown user id .*'zz'"),
    ({"a": [9, 42], "b": [2]}, r"1 given negative\(s\) name an unknown item id .*42"),
    ({"a": [9, 0, 8], "b": [2, 9]}, r"2 given negative\(s\) are training .*user 'a', item 0"),
    ({"a": [9, 5], "b": [2]}, r"1 given negative\(s\) are relevant test pairs .*item 5"),
    ({"a": [9, 8]}, r"1 evaluated user\(s\) have no given negatives .*'b'"),
    ({"a": [9, 8], "b": []}, r"have no given negatives"),
    ({"a": [9, 8, 9], "b": [2]}, r"1 given negative\(s\) repeat .*item 9"),
    ({"a": 9, "b": [2]}, r"must be a list of item ids"),
    ({"a": "9", "b": [2]}, r"must be a list of item ids"),
    ({}, r"holds no item"),
    ([("a", 9)], r"mapping user id -> item ids or a DataFrame"),
    (pd.DataFrame({"user": ["a"], "product": [9]}), r"misses column\(s\) \['item'\]"),
])
def test_given_negatives_validation(neg, match):
    post, _, test = ten_items()
    with pytest.raises(DataError, match=match):
        ranking_evaluate(post, test, k=2, protocol="sampled", negatives=neg)


def test_given_negatives_spec_errors():
    post, _, test = ten_items()
    neg = {"a": [9], "b": [2]}
    with pytest.raises(SpecError, match="protocol='sampled'"):
        ranking_evaluate(post, test, k=2, negatives=neg)
    with pytest.raises(SpecError, match="go together"):
        ranking_evaluate(post, test, k=2, protocol="sampled", negatives=neg,
                         sampling="uniform")
    with pytest.raises(SpecError, match="go together"):
        build_task(post, test, "sampled", sampling="given")
    with pytest.raises(SpecError, match="sampling must be one of"):
        build_task(post, test, "sampled", sampling="zipf")


# ------------------------------------------------------------------ top-k and coverage
def test_topk_mask_matches_stable_ranks_with_ties_and_exclusions():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 4, (8, 15)).astype(float)  # many ties
    s[rng.random(s.shape) < 0.3] = -np.inf  # non-candidates
    s[0] = -np.inf
    s[0, [2, 7, 11]] = [1.0, 1.0, 0.0]  # a row with fewer candidates (3) than k
    for k in (1, 3, 5, 20):
        top = topk_mask(s, k)
        cols = np.tile(np.arange(15), (8, 1))
        r, m = ranks_from_scores(s, cols, np.ones_like(cols, bool))
        assert (top == (m & (r < k))).all(), k
    assert topk_mask(s, 5)[0].sum() == 3
    assert catalogue_coverage(topk_mask(s, 1), 15) == pytest.approx(
        len(set(np.argmax(np.where(np.isfinite(s), s, -9), axis=1).tolist())) / 15)
    with pytest.raises(SpecError):
        topk_mask(s, 0)


def test_evaluate_with_interactions_skips_rating_metrics():
    post, _, test = small()
    out = evaluate(post, test, k=2)
    assert "skipped" in out["rating_metrics"] and "rmse" not in out
    assert out["ranking"]["hit_rate@2"] == pytest.approx(2 / 3)
    assert out["ranking"]["catalogue_coverage@2"] == pytest.approx(4 / 6)


# ------------------------------------------------------------------ end to end
def test_end_to_end_map_beats_popularity_on_planted_clusters():
    import bayesmf

    rng = np.random.default_rng(0)
    N, M, C = 80, 60, 4
    cu, ci = rng.integers(0, C, N), np.arange(M) % C
    # popularity that ignores the clusters: item i is picked outside its cluster by a
    # few users, with a weight that favours low item ids
    w_out = 1.0 / (1.0 + np.arange(M))
    us, its = [], []
    for u in range(N):
        inside = rng.choice(np.flatnonzero(ci == cu[u]), 10, replace=False)
        out = np.flatnonzero(ci != cu[u])
        outside = rng.choice(out, 3, replace=False, p=w_out[out] / w_out[out].sum())
        us += [u] * 13
        its += inside.tolist() + outside.tolist()
    data = Interactions.from_arrays(np.array(us), np.array(its))
    train, test = data.leave_one_out(by="random", seed=1)
    est = bayesmf.BayesMF(method="map", rank=8, likelihood="implicit",
                          reg_factors=1.0).fit(train)
    res = ranking_evaluate(est.posterior_, test, k=10)
    # popularity by hand: training counts, seen items excluded, ties to the lower index
    pop = np.bincount(train.item, minlength=train.n_items).astype(float)
    hits = []
    for u, i in zip(test.user, test.item):
        s = pop.copy()
        s[train.item[train.user == u]] = -np.inf
        hits.append(i in np.argsort(-s, kind="stable")[:10])
    hr_pop = float(np.mean(hits))
    assert res["users"] == len(test.user) == N
    assert res["hit_rate@10"] > max(0.6, hr_pop + 0.3), (res["hit_rate@10"], hr_pop)
    assert 0 < res["catalogue_coverage@10"] <= 1
