"""Implicit-feedback data layer: Interactions (aggregation, confidence, binarize,
from_ratings, k-core, splits) and NegativeSampler."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from bayesmf.data import Interactions, InteractionSplit, NegativeSampler, Ratings, Vocabulary
from bayesmf.errors import BayesMFError, DataError, SpecError


def _log():
    return pd.DataFrame({
        "user": ["a", "a", "b", "a", "c", "b", "b"],
        "item": [10, 10, 20, 30, 10, 20, 30],
        "count": [2, 3, 1, 4, 1, 5, 0],
        "timestamp": [5, 9, 3, 2, 7, 1, 8],
    })


def _random_interactions(seed=0, n_users=60, n_items=40, n_events=900, ts=True):
    rng = np.random.default_rng(seed)
    pop = rng.zipf(1.6, n_items).astype(float)
    items = rng.choice(n_items, n_events, p=pop / pop.sum())
    users = rng.integers(0, n_users, n_events)
    t = rng.integers(0, 10_000, n_events) if ts else None
    return Interactions.from_arrays(users, items, timestamps=t)


# ------------------------------------------------------------------------ aggregation
def test_aggregation_by_hand():
    x = Interactions.from_dataframe(_log())
    df = x.to_dataframe()
    # (b, 30) has total count 0 -> dropped; (a,10): 2+3, latest ts 9; (b,20): 1+5, ts 3
    assert df[["user", "item"]].values.tolist() == [["a", 10], ["a", 30], ["b", 20], ["c", 10]]
    assert df["count"].tolist() == [5.0, 4.0, 6.0, 1.0]
    assert df["n_events"].tolist() == [2, 1, 2, 1]
    assert df["timestamp"].tolist() == [9, 2, 3, 7]
    # ids stay as written: text users, integer items
    assert x.users.ids.tolist() == ["a", "b", "c"] and x.items.ids.dtype == np.int64
    csr = x.to_csr()
    assert csr.shape == (3, 3)
    assert csr.toarray().tolist() == [[5, 0, 4], [0, 6, 0], [1, 0, 0]]
    items, counts = x.user_items(0)
    assert items.tolist() == [0, 2] and counts.tolist() == [5.0, 4.0]
    kept = Interactions.from_dataframe(_log(), drop_zeros=False)
    assert kept.nnz == 5 and kept.to_csr(values="binary").sum() == 5


def test_counts_default_to_events_and_weights_sum():
    x = Interactions.from_arrays([1, 1, 1, 2], ["p", "p", "q", "p"], weights=[0.5, 1.5, 2, 1])
    assert x.count.tolist() == [2.0, 1.0, 1.0]
    assert x.weight.tolist() == [2.0, 2.0, 1.0]
    assert x.value is x.weight
    assert x.users.ids.tolist() == [1, 2]
    d = x.describe()
    assert d["pairs"] == 3 and d["events"] == 4 and d["density"] == pytest.approx(3 / 4)
    assert d["weight_total"] == 5.0 and d["has_weight"] and not d["has_timestamp"]


def test_datetime_timestamps_and_vocab_reuse():
    t = pd.to_datetime(["2020-01-01", "2020-01-02", "2020-01-03"])
    x = Interactions.from_arrays(["u", "u", "v"], ["i", "i", "j"], timestamps=pd.Series(t))
    assert x.timestamp.tolist() == [int(t[1].timestamp()), int(t[2].timestamp())]
    y = Interactions.from_arrays(["v"], ["i"], user_vocab=x.users, item_vocab=x.items)
    assert y.users == x.users and y.user.tolist() == [1]


# ------------------------------------------------------------------------ transforms
def test_confidence_formulas():
    x = Interactions.from_dataframe(_log())
    r = x.count
    np.testing.assert_allclose(x.confidence(2.0), 1 + 2.0 * r)
    np.testing.assert_allclose(x.confidence(3.0, kind="log", eps=0.5), 1 + 3.0 * np.log(1 + r / 0.5))
    c = x.to_csr(x.confidence(40.0))
    assert c[1, 1] == pytest.approx(1 + 40 * 6)
    for bad in (dict(alpha=-1), dict(alpha=np.nan), dict(kind="sqrt"),
                dict(kind="log", eps=0), dict(alpha="x")):
        with pytest.raises(DataError):
            x.confidence(**bad)


def test_binarize():
    x = Interactions.from_dataframe(_log())
    b = x.binarize(5)
    assert isinstance(b, Ratings)
    assert b.rating.tolist() == [1.0, 0.0, 1.0, 0.0]
    assert b.users == x.users and b.timestamp.tolist() == x.timestamp.tolist()


def test_from_ratings():
    r = Ratings.from_arrays([1, 1, 2, 3], [7, 8, 7, 9], [5, 2, 4, 3.5], timestamps=[1, 2, 3, 4])
    x = Interactions.from_ratings(r, 3.5)
    assert list(zip(x.users.decode(x.user), x.items.decode(x.item))) == [(1, 7), (2, 7), (3, 9)]
    assert x.count.tolist() == [1, 1, 1] and x.timestamp.tolist() == [1, 3, 4]
    assert x.users == r.users and x.items == r.items
    with pytest.raises(DataError, match="no rating is >= threshold"):
        Interactions.from_ratings(r, 6)


# ------------------------------------------------------------------------ k-core
def test_kcore_fixed_point():
    # chain: removing item z (1 user) drops user c below 2, which drops item y ...
    users = ["a", "a", "a", "b", "b", "b", "c", "c", "d", "d"]
    items = ["x", "w", "v", "x", "w", "v", "y", "z", "y", "x"]
    x = Interactions.from_arrays(users, items)
    k = x.kcore(2, 2)
    assert sorted(k.users.ids.tolist()) == ["a", "b"]
    assert sorted(k.items.ids.tolist()) == ["v", "w", "x"]
    assert (k.user_counts() >= 2).all() and (k.item_counts() >= 2).all()
    assert k.kcore(2, 2).nnz == k.nnz  # fixed point
    big = _random_interactions(3)
    c = big.kcore(5, 5)
    assert (c.user_counts() >= 5).all() and (c.item_counts() >= 5).all()
    assert big.kcore(5, 5, compact=False).users == big.users
    with pytest.raises(DataError, match="no interaction survives"):
        x.kcore(10, 10)


# ------------------------------------------------------------------------ splits
def _pairs(x):
    return set(zip(x.users.decode(x.user).tolist(), x.items.decode(x.item).tolist()))


def test_leave_one_out_random_reproducible_and_single_users_in_train():
    base = _random_interactions(1, ts=False)
    extra_u = np.array([1000, 1001, 1002])  # three users with a single interaction each
    x = Interactions.from_arrays(np.concatenate([base.users.decode(base.user), extra_u]),
                                 np.concatenate([base.items.decode(base.item), [0, 1, 2]]))
    s1, s2 = x.leave_one_out(seed=7), x.leave_one_out(seed=7)
    assert isinstance(s1, InteractionSplit) and s1.method == "leave_one_out_random"
    assert _pairs(s1.test) == _pairs(s2.test)
    assert _pairs(x.leave_one_out(seed=8).test) != _pairs(s1.test)
    train, test = s1
    assert test.users == train.users and test.items == train.items
    assert not (_pairs(train) & _pairs(test))
    assert len(_pairs(train)) + len(_pairs(test)) + s1.test_dropped_unseen == x.nnz
    assert (test.user_counts() <= 1).all()
    assert (train.user_counts() >= 1).all() and (train.item_counts() >= 1).all()
    single = x.users.ids[x.user_counts() == 1]
    assert len(single) and set(single) <= set(train.users.ids)
    assert not set(single) & set(test.users.decode(test.user))


def test_leave_one_out_latest_by_timestamp():
    x = _random_interactions(2)
    train, test = x.leave_one_out()  # auto -> time
    df = x.to_dataframe()
    latest = df.loc[df.groupby("user")["timestamp"].idxmax()]
    tdf = test.to_dataframe()
    for _, row in tdf.iterrows():
        assert row["timestamp"] == latest.loc[latest.user == row["user"], "timestamp"].item()
    multi = set(df.user[df.groupby("user")["item"].transform("size") >= 2])
    assert set(tdf.user) <= multi
    with pytest.raises(DataError, match="needs timestamps"):
        _random_interactions(2, ts=False).leave_one_out(by="time")


def test_leave_one_out_drops_items_unseen_in_train():
    # latest: a -> j (j stays in train through c), b -> k (k only in b: dropped), c -> i
    x = Interactions.from_arrays(["a", "a", "b", "b", "c", "c"], ["i", "j", "i", "k", "j", "i"],
                                 timestamps=[1, 2, 1, 2, 1, 2])
    s = x.leave_one_out()
    assert _pairs(s.test) == {("a", "j"), ("c", "i")}
    assert s.test_dropped_unseen == 1
    assert "k" not in s.train.items


def test_fraction_split_sizes():
    x = _random_interactions(4, ts=False)
    train, test = x.fraction_split(0.25, seed=1)
    s2 = x.fraction_split(0.25, seed=1)
    n_u = x.user_counts()
    expected = np.minimum(np.floor(0.25 * n_u + 0.5), np.maximum(n_u - 1, 0)).sum()
    split = x.fraction_split(0.25, seed=1)
    assert test.nnz + split.test_dropped_unseen == expected
    assert train.nnz == x.nnz - expected
    assert _pairs(s2.test) == _pairs(test)
    assert set(test.users.decode(test.user)) <= set(train.users.ids)
    with pytest.raises(DataError):
        x.fraction_split(1.5)


# ------------------------------------------------------------------------ negatives
@pytest.mark.parametrize("kind, beta", [("uniform", 1.0), ("popularity", 0.75),
                                        ("popularity", 1.0)])
def test_negatives_never_positive(kind, beta):
    x = _random_interactions(5, n_users=80, n_items=30, n_events=1200)
    s = NegativeSampler(kind=kind, beta=beta, per_positive=3, seed=11)
    u, i = s.sample(x)
    assert len(u) == 3 * x.nnz
    pos = set(zip(x.user.tolist(), x.item.tolist()))
    assert not any((a, b) in pos for a, b in zip(u.tolist(), i.tolist()))
    u2, i2 = s.sample(x)
    assert np.array_equal(u, u2) and np.array_equal(i, i2)
    u3, i3 = s.sample(x, seed=12)
    assert not np.array_equal(i, i3)
    pu = NegativeSampler(kind=kind, beta=beta, per_positive=None, per_user=4).sample(x)[0]
    assert (np.bincount(pu) == np.where(x.user_counts() > 0, 4, 0)).all()


def test_heavy_user_reaches_exact_fallback():
    # user 0 has 99 of 100 items: rejection mostly fails, the complement draw finishes it
    users = [0] * 99 + [1]
    items = list(range(99)) + [99]
    x = Interactions.from_arrays(users, items)
    u, i = NegativeSampler(per_user=50, per_positive=None).sample(x)
    assert set(i[u == 0].tolist()) == {99}


def test_popularity_frequencies_follow_beta():
    x = _random_interactions(6, n_users=50, n_items=25, n_events=400)
    beta = 0.5
    s = NegativeSampler(kind="popularity", beta=beta, per_user=2000, per_positive=None)
    u, i = s.sample(x)
    p = x.item_counts().astype(float) ** beta
    p /= p.sum()
    expected = np.zeros(x.n_items)
    for uu in range(x.n_users):
        items, _ = x.user_items(uu)
        if not len(items):
            continue
        q = p.copy()
        q[items] = 0
        expected += 2000 * q / q.sum()
    observed = np.bincount(i, minlength=x.n_items)
    live = expected > 0
    assert observed[~live].sum() == 0
    chi = stats.chisquare(observed[live], expected[live] * observed.sum() / expected[live].sum())
    assert chi.pvalue > 1e-4


def test_sampler_roundtrip_and_errors():
    s = NegativeSampler(kind="popularity", beta=0.75, per_positive=2, seed=3)
    d = json.loads(json.dumps(s.to_dict()))
    assert NegativeSampler.from_dict(d) == s
    for bad in (dict(kind="hard"), dict(beta=-1), dict(beta=np.inf), dict(per_positive=0),
                dict(per_positive=1, per_user=1), dict(per_user=0),
                dict(seed=-1), dict(per_positive=1.5)):
        with pytest.raises(SpecError):
            NegativeSampler(**bad)
    # per_user alone (it needed per_positive=None too); neither: one per positive
    assert NegativeSampler(per_user=50).per_positive is None
    assert NegativeSampler(per_positive=None).per_positive == 1
    assert NegativeSampler().to_string() == NegativeSampler(per_positive=1).to_string()
    with pytest.raises(SpecError, match="unknown NegativeSampler field"):
        NegativeSampler.from_dict({**d, "bogus": 1})
    with pytest.raises(SpecError, match="schema"):
        NegativeSampler.from_dict({**d, "schema": 99})
    full = Interactions.from_arrays(["a", "a", "b"], ["i", "j", "i"])
    with pytest.raises(DataError, match="interacted with every item"):
        NegativeSampler().sample(full)
    # item j has no interactions: popularity gives it weight 0, so a and b have nothing
    x = Interactions.from_arrays(["a", "b"], ["i", "i"], item_vocab=Vocabulary(["i", "j"]))
    assert set(NegativeSampler().sample(x)[1].tolist()) == {1}
    with pytest.raises(DataError, match="nonzero popularity"):
        NegativeSampler(kind="popularity").sample(x)
    assert set(NegativeSampler(kind="popularity", beta=0).sample(x)[1].tolist()) == {1}
    with pytest.raises(DataError, match="expects an Interactions"):
        NegativeSampler().sample(pd.DataFrame())


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("kwargs, match", [
    (dict(users=[], items=[]), "empty"),
    (dict(users=["a", "b"], items=["i"]), "length mismatch"),
    (dict(users=["a", None], items=["i", "j"]), "missing .* user id"),
    (dict(users=[1.0, np.nan], items=["i", "j"]), "missing .* user id"),
    (dict(users=["a", "b"], items=["i", np.nan]), "missing .* item id"),
    (dict(users=["a", "b"], items=["i", "j"], counts=[1, np.nan]), "NaN or infinite"),
    (dict(users=["a", "b"], items=["i", "j"], counts=[1, np.inf]), "NaN or infinite"),
    (dict(users=["a", "b"], items=["i", "j"], counts=[1, -2]), "negative count"),
    (dict(users=["a", "b"], items=["i", "j"], counts=["1", "many"]), "numeric"),
    (dict(users=["a", "b"], items=["i", "j"], counts=[True, False]), "numeric"),
    (dict(users=["a", "b"], items=["i", "j"], weights=[1, -0.5]), "negative weight"),
    (dict(users=["a", "b"], items=["i", "j"], counts=[0, 0]), "value 0"),
    (dict(users=["a", "b"], items=["i", "j"], timestamps=[1, np.nan]), "timestamp"),
    (dict(users=["a", "b"], items=["i", "j"], timestamps=["x", "y"]), "timestamp"),
])
def test_bad_arrays_raise_data_error(kwargs, match):
    with pytest.raises(DataError, match=match) as ei:
        Interactions.from_arrays(**kwargs)
    assert "\n" not in str(ei.value)


def test_bad_frames_raise_data_error():
    with pytest.raises(DataError, match="missing column"):
        Interactions.from_dataframe(pd.DataFrame({"user": [1], "itm": [2]}))
    with pytest.raises(DataError, match="missing column"):
        Interactions.from_dataframe(_log(), count_col="plays")
    with pytest.raises(DataError, match="empty"):
        Interactions.from_dataframe(_log().iloc[:0])
    with pytest.raises(DataError, match="missing .* user id"):
        Interactions.from_dataframe(pd.DataFrame({"user": [1, None], "item": [1, 2]}))
    with pytest.raises(DataError, match="DataFrame"):
        Interactions.from_dataframe([(1, 2)])
    with pytest.raises(DataError, match="NaT"):
        Interactions.from_dataframe(pd.DataFrame({
            "user": [1, 2], "item": [1, 2],
            "timestamp": pd.to_datetime(["2020-01-01", None])}))
    with pytest.raises(BayesMFError):
        Interactions.from_ratings("not ratings", 3)


def test_ids_left_without_a_pair_are_not_in_an_inferred_vocabulary():
    """Zero-valued events carry no interaction: a user (or item) whose every event is 0
    is not an (empty) user of the data; a vocabulary passed in is kept whole."""
    it = Interactions.from_arrays(["a", "b", "a", "c"], ["i", "j", "j", "k"], [1, 0, 2, 0])
    assert list(it.users.ids) == ["a"] and list(it.items.ids) == ["i", "j"]
    assert (it.user_counts() > 0).all() and (it.item_counts() > 0).all()
    assert it.to_dataframe()["count"].tolist() == [1.0, 2.0]
    kept = Interactions.from_arrays(["a", "b"], ["i", "j"], [1, 0], drop_zeros=False)
    assert list(kept.users.ids) == ["a", "b"] and kept.nnz == 2
    given = Interactions.from_arrays(["a", "b"], ["i", "j"], [1, 0],
                                     user_vocab=Vocabulary(np.array(["a", "b", "z"])))
    assert list(given.users.ids) == ["a", "b", "z"] and list(given.items.ids) == ["i"]
    d = given.describe()
    assert (d["users"], d["users_with_interactions"]) == (3, 1)
