"""Ranking metrics (hand-computed), rank computation, and the full / sampled protocols."""

import numpy as np
import pytest

from _uq_synth import als_map, checkerboard, heldout, make_posterior
from bayesmf.data.ratings import Ratings
from bayesmf.errors import DataError, SpecError
from bayesmf.evaluate import build_task, mean_metrics, ranking_evaluate, ranking_metrics
from bayesmf.evaluate.ranking import ranks_from_scores


def test_metrics_hand_computed():
    # user 0: relevant at ranks 0 and 3 among 10 candidates, k=3
    # user 1: relevant at rank 4 only (no hit in top-3), 5 candidates
    ranks = np.array([[3, 0], [4, -1]])
    mask = np.array([[True, True], [True, False]])
    pu = ranking_metrics(ranks, mask, [10, 5], k=3)
    assert pu["precision"] == pytest.approx([1 / 3, 0.0])
    assert pu["recall"] == pytest.approx([0.5, 0.0])
    assert pu["hit_rate"] == pytest.approx([1.0, 0.0])
    idcg = 1 + 1 / np.log2(3)
    assert pu["ndcg"] == pytest.approx([1 / idcg, 0.0])
    assert pu["map"] == pytest.approx([(1 / 1) / 2, 0.0])
    assert pu["mrr"] == pytest.approx([1.0, 0.0])
    # AUC user 0: 8 negatives; relevant@0 beats all 8, relevant@3 has negatives at ranks
    # 1, 2 above it and beats 6 -> (8 + 6) / 16; cross-checked by enumerating pairs
    order = np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 0])  # 1 = relevant, by rank
    pairs = [(p, q) for p in np.flatnonzero(order) for q in np.flatnonzero(order == 0)]
    auc0 = np.mean([p < q for p, q in pairs])
    assert auc0 == pytest.approx(14 / 16)
    assert pu["auc"][0] == pytest.approx(auc0)
    assert pu["auc"][1] == pytest.approx(0.0)  # the only relevant item is ranked last of 5
    mm = mean_metrics(pu, 3)
    assert mm["precision@3"] == pytest.approx(1 / 6) and mm["auc"] == pytest.approx(auc0 / 2)


def test_metrics_empty_and_all_relevant():
    ranks = np.array([[0, 1, 2], [0, 0, 0]])
    mask = np.array([[True, True, True], [False, False, False]])
    pu = ranking_metrics(ranks, mask, [3, 7], k=5)
    # all 3 candidates relevant: recall, ndcg, map, mrr = 1; precision = 3/5; AUC undefined
    assert pu["recall"][0] == 1 and pu["ndcg"][0] == pytest.approx(1) and pu["map"][0] == 1
    assert pu["precision"][0] == pytest.approx(0.6) and pu["mrr"][0] == 1
    assert np.isnan(pu["auc"][0])
    # user without relevant items: every metric NaN, left out of the mean
    assert all(np.isnan(pu[key][1]) for key in pu)
    assert mean_metrics(pu, 5)["recall@5"] == 1.0 and mean_metrics(pu, 5)["auc"] is None
    with pytest.raises(SpecError):
        ranking_metrics(ranks, mask, [3, 7], k=0)


def test_ranks_from_scores_ties_and_exclusions():
    s = np.array([[0.5, 0.9, 0.5, -np.inf, 0.1]])
    ranks, mask = ranks_from_scores(s, np.array([[2, 0, 3]]), np.array([[True, True, True]]))
    # stable order by descending score: 1 (0.9), 0 (0.5), 2 (0.5), 4 (0.1); item 3 excluded
    assert ranks[0, :2].tolist() == [2, 1]
    assert mask[0].tolist() == [True, True, False]
    rng = np.random.default_rng(0)
    sc = rng.integers(0, 4, (6, 30)).astype(float)  # many ties
    rel = np.stack([rng.choice(30, 5, replace=False) for _ in range(6)])
    r, _ = ranks_from_scores(sc, rel, np.ones_like(rel, bool), max_elems=50)
    order = np.argsort(-sc, axis=1, kind="stable")
    inv = np.argsort(order, axis=1)
    assert (r == np.take_along_axis(inv, rel, axis=1)).all()


def test_checkerboard_full_protocol_withheld_item_ranks_first():
    train, test = checkerboard()
    post = als_map(train, k=2, reg_factors=1.0, reg_bias=1.0, iters=60)
    res = ranking_evaluate(post, test, k=1)
    assert res["hit_rate@1"] == 1.0 and res["mrr@1"] == 1.0 and res["auc"] == 1.0
    assert res["candidates_mean"] == pytest.approx(5.0)  # withheld + 4 unrated out-group


def test_full_protocol_matches_brute_force():
    post, ratings = make_posterior(n_users=25, n_items=40, k=2, draws=6, seed=3)
    test = heldout(post, ratings, seed=2)
    res = ranking_evaluate(post, test, k=5, chunk_size=7)
    # brute force with posterior.predict over all pairs
    N, M = len(post.users), len(post.items)
    uu, ii = np.meshgrid(np.arange(N), np.arange(M), indexing="ij")
    mean = post.predict(uu.ravel(), ii.ravel(), clip=False).mean.reshape(N, M)
    mean[ratings.user, ratings.item] = -np.inf
    rel = test.rating >= 4
    ndcg, recall = [], []
    for u in np.unique(test.user[rel]):
        items = test.item[rel & (test.user == u)]
        order = np.argsort(-mean[u], kind="stable")
        top = order[:5]
        hits = np.isin(top, items)
        ndcg.append(np.sum(hits / np.log2(np.arange(2, 7))) /
                    np.sum(1 / np.log2(np.arange(2, 2 + min(len(items), 5)))))
        recall.append(hits.sum() / len(items))
    assert res["ndcg@5"] == pytest.approx(np.mean(ndcg))
    assert res["recall@5"] == pytest.approx(np.mean(recall))
    # chunking does not change anything
    assert ranking_evaluate(post, test, k=5, chunk_size=100)["ndcg@5"] == pytest.approx(res["ndcg@5"])


def test_sampled_protocol_negatives_are_unrated_and_seeded():
    post, ratings = make_posterior(n_users=30, n_items=300, k=2, draws=4, density=0.1, seed=5)
    test = heldout(post, ratings, frac=0.05, seed=3)
    t1 = build_task(post, test, "sampled", n_negatives=20, seed=7)
    t2 = build_task(post, test, "sampled", n_negatives=20, seed=7)
    t3 = build_task(post, test, "sampled", n_negatives=20, seed=8)
    assert (t1.negatives == t2.negatives).all() and not (t1.negatives == t3.negatives).all()
    train_pairs = set(zip(ratings.user.tolist(), ratings.item.tolist()))
    test_pairs = set(zip(test.user.tolist(), test.item.tolist()))
    for row, u in enumerate(t1.users):
        negs = t1.negatives[row][t1.neg_mask[row]]
        assert len(negs) == 20 and len(np.unique(negs)) == 20
        assert not any((u, j) in train_pairs or (u, j) in test_pairs for j in negs.tolist())
    res = ranking_evaluate(post, test, k=5, protocol="sampled", n_negatives=20, seed=7)
    rel_counts = t1.rel_mask.sum(1)
    assert res["candidates_mean"] == pytest.approx(np.mean(rel_counts + 20))


def test_popularity_sampling_follows_counts():
    post, ratings = make_posterior(n_users=40, n_items=60, k=2, draws=2, density=0.15, seed=1)
    test = heldout(post, ratings, frac=0.1, seed=4)
    counts = post.train.item_counts.copy()
    t = build_task(post, test, "sampled", n_negatives=5, sampling="popularity", seed=0)
    drawn = t.negatives[t.neg_mask]
    assert counts[drawn].min() > 0
    # popular items are drawn more often than rare ones (rank correlation over items)
    freq = np.bincount(drawn, minlength=len(counts))
    assert np.corrcoef(freq, counts)[0, 1] > 0.3


def test_no_relevant_items_raises_and_per_draw_metrics():
    post, ratings = make_posterior(n_users=20, n_items=30, k=2, draws=8, seed=6)
    low = Ratings.from_indices([0, 1], [0, 1], [1.0, 2.0], post.users, post.items)
    with pytest.raises(DataError):
        ranking_evaluate(post, low)
    test = heldout(post, ratings, seed=6)
    res = ranking_evaluate(post, test, k=5, draws=True, max_draws=4)
    d = res["draws"]["ndcg@5"]
    assert d["lower"] <= d["mean"] <= d["upper"] and res["draws"]["n_draws"] == 4
    # a one-draw posterior: the per-draw distribution collapses onto the metric
    one = post.select(draws=slice(0, 1))
    r1 = ranking_evaluate(one, test, k=5, draws=True)
    assert r1["draws"]["ndcg@5"]["mean"] == pytest.approx(r1["ndcg@5"])
    rs = ranking_evaluate(one, test, k=5, draws=True, protocol="sampled", n_negatives=10)
    assert rs["draws"]["auc"]["mean"] == pytest.approx(rs["auc"])


@pytest.mark.parametrize("protocol", ["full", "sampled"])
def test_in_sample_test_pairs_skip_ranking_with_the_right_reason(protocol):
    """Test pairs that are all training pairs: the ranking metrics are skipped (both
    protocols; the sampled one used to crash with an IndexError) and the reason says so."""
    import numpy as np

    from bayesmf.evaluate import evaluate
    from bayesmf.testing.conformance import fit_fast, planted

    train = planted("gaussian")
    post = fit_fast("map", "gaussian", train)
    test = train.subset(np.arange(train.nnz) % 3 == 0)
    out = evaluate(post, test, k=5, protocol=protocol, n_negatives=10, widths=False)
    assert "in-sample" in out["ranking"]["skipped"]
