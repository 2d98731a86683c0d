"""Splits: exact partitions, shared vocabularies, per-method guarantees, errors."""

import dataclasses
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesmf.data import (
    KFold,
    Ratings,
    Split,
    Vocabulary,
    kfold,
    random_split,
    temporal_split,
    user_split,
)
from bayesmf.errors import DataError


def make(n_users=30, n_items=40, n=400, seed=0, ts=True):
    rng = np.random.default_rng(seed)
    key = rng.choice(n_users * n_items, size=n, replace=False)
    u, i = key // n_items, key % n_items
    return Ratings.from_arrays(u * 7 + 1, [f"m{x}" for x in i], rng.integers(1, 6, n),
                               rng.integers(0, 50, n) if ts else None)


def keys(r):
    return set(zip(r.users.decode(r.user).tolist(), r.items.decode(r.item).tolist()))


def check_partition(r, s):
    assert isinstance(s, Split)
    tr, te = s
    assert tr.users is r.users and te.users is r.users
    assert tr.items is r.items and te.items is r.items
    assert tr.nnz + te.nnz == r.nnz
    assert keys(tr) | keys(te) == keys(r) and not (keys(tr) & keys(te))
    # rows carry their values and timestamps along
    full = r.to_dataframe().set_index(["user", "item"]).sort_index()
    both = pd.concat([tr.to_dataframe(), te.to_dataframe()]).set_index(["user", "item"]).sort_index()
    pd.testing.assert_frame_equal(full, both)
    assert s.info.n_train == tr.nnz and s.info.n_test == te.nnz
    # unseen counts
    seen_u = set(tr.user.tolist())
    seen_i = set(tr.item.tolist())
    uu = [u not in seen_u for u in te.user.tolist()]
    ii = [i not in seen_i for i in te.item.tolist()]
    assert s.info.test_unseen_users == sum(uu)
    assert s.info.test_unseen_items == sum(ii)
    assert s.info.test_unseen_either == sum(a or b for a, b in zip(uu, ii))


@st.composite
def ratings_st(draw):
    n_users = draw(st.integers(2, 8))
    n_items = draw(st.integers(2, 8))
    cells = draw(st.lists(st.tuples(st.integers(0, n_users - 1), st.integers(0, n_items - 1)),
                          min_size=3, max_size=n_users * n_items, unique=True))
    ts = draw(st.lists(st.integers(0, 5), min_size=len(cells), max_size=len(cells)))
    u, i = zip(*cells)
    return Ratings.from_arrays(list(u), list(i), np.ones(len(cells)), ts)


method = st.sampled_from(["random", "user_frac", "user_k", "last_k", "time_frac", "cutoff",
                          "kfold", "kfold_user"])


@settings(max_examples=60, deadline=None)
@given(r=ratings_st(), m=method, seed=st.integers(0, 2**32))
def test_every_split_partitions_exactly_and_shares_vocabularies(r, m, seed):
    try:
        if m == "random":
            splits = [random_split(r, 0.3, seed=seed)]
        elif m == "user_frac":
            splits = [user_split(r, 0.5, seed=seed)]
        elif m == "user_k":
            splits = [user_split(r, n_test=1, seed=seed)]
        elif m == "last_k":
            splits = [temporal_split(r, last_k=1)]
        elif m == "time_frac":
            splits = [temporal_split(r, test_fraction=0.3)]
        elif m == "cutoff":
            splits = [temporal_split(r, cutoff=3)]
        else:
            splits = list(kfold(r, 3, seed=seed, per_user=m == "kfold_user"))
    except DataError as e:  # legitimately impossible (e.g. every user has one rating)
        assert "empty" in str(e)
        return
    for s in splits:
        check_partition(r, s)
    if m.startswith("kfold"):
        tests = [keys(s.test) for s in splits]
        assert set().union(*tests) == keys(r) and sum(map(len, tests)) == r.nnz


# ---------------------------------------------------------------- reproducibility
@pytest.mark.parametrize("fn", [
    lambda r, s: random_split(r, 0.25, seed=s),
    lambda r, s: user_split(r, 0.25, seed=s),
    lambda r, s: kfold(r, 4, seed=s)[1],
    lambda r, s: kfold(r, 4, seed=s, per_user=True)[2],
])
def test_same_seed_same_split(fn):
    r = make()
    a, b, c = fn(r, 3), fn(r, 3), fn(r, 4)
    assert keys(a.test) == keys(b.test)
    assert keys(a.test) != keys(c.test)
    assert a.info.seed == 3


def test_seed_values():
    r = make()
    g = np.random.default_rng(1)
    s = random_split(r, 0.2, seed=g)
    assert s.info.seed is None
    assert random_split(r, 0.2, seed=None).info.n_test == 80
    for bad in (1.5, "1", True, -1):
        with pytest.raises(DataError, match="seed must be"):
            random_split(r, 0.2, seed=bad)


# ---------------------------------------------------------------- per method
def test_random_split_size():
    r = make()
    s = random_split(r, 0.2, seed=0)
    assert s.info.n_test == 80 and s.info.method == "random"
    assert random_split(r, 0.0001, seed=0).info.n_test == 1  # at least one
    assert random_split(r, 0.9999, seed=0).info.n_train == 1  # at least one


def test_user_split_fraction_and_min_train():
    r = make()
    s = user_split(r, 0.5, min_train=2, seed=0)
    c = r.user_counts()
    ct = s.test.user_counts()
    expected = np.minimum(np.floor(0.5 * c + 0.5), np.maximum(c - 2, 0))
    np.testing.assert_array_equal(ct, expected)
    assert s.info.test_unseen_users == 0
    assert (s.train.user_counts() >= np.minimum(c, 2)).all()


def test_user_split_leave_k_out():
    r = make()
    s = user_split(r, n_test=3, seed=5)
    c = r.user_counts()
    np.testing.assert_array_equal(s.test.user_counts(), np.clip(c - 1, 0, 3))


def test_user_split_errors():
    r = make()
    with pytest.raises(DataError, match="exactly one of test_fraction= or n_test="):
        user_split(r)
    with pytest.raises(DataError, match="exactly one of test_fraction= or n_test="):
        user_split(r, 0.2, n_test=1)
    with pytest.raises(DataError, match=r"n_test must be an integer >= 1, got 0"):
        user_split(r, n_test=0)
    one_each = Ratings.from_arrays([1, 2, 3], [1, 1, 1], [1, 2, 3])
    with pytest.raises(DataError, match="the user split leaves the test set empty: no user "
                                        r"has more than min_train=1 rating\(s\) to spare"):
        user_split(one_each, n_test=1)


@pytest.mark.parametrize("bad", [0, 1, 1.5, -0.1, "0.2", None, True])
def test_bad_fraction(bad):
    with pytest.raises(DataError, match="test_fraction must be"):
        random_split(make(), bad)


def test_temporal_last_k_takes_latest_per_user():
    r = make()
    s = temporal_split(r, last_k=2)
    tr = s.train.to_dataframe(raw_ids=False)
    te = s.test.to_dataframe(raw_ids=False)
    latest_train = tr.groupby("user")["timestamp"].max()
    earliest_test = te.groupby("user")["timestamp"].min()
    assert (latest_train.reindex(earliest_test.index) <= earliest_test).all()
    np.testing.assert_array_equal(s.test.user_counts(), np.clip(r.user_counts() - 1, 0, 2))
    assert s.info.method == "temporal" and s.info.seed is None


def test_temporal_last_k_breaks_ties_by_row_order():
    r = Ratings.from_arrays([1, 1, 1], [1, 2, 3], [1, 2, 3], timestamps=[5, 5, 5])
    s = temporal_split(r, last_k=1)
    assert list(s.test.to_dataframe()["item"]) == [3]


def test_temporal_cutoff_and_fraction():
    r = make()
    s = temporal_split(r, cutoff=40)
    assert (s.test.timestamp >= 40).all() and (s.train.timestamp < 40).all()
    f = temporal_split(r, test_fraction=0.25)
    assert f.info.n_test == 100 and f.train.timestamp.max() <= f.test.timestamp.min()
    day = 86400
    rd = Ratings.from_arrays([1, 2, 3], [1, 2, 3], [1, 2, 3], timestamps=[0, day, 2 * day])
    sd = temporal_split(rd, cutoff="1970-01-02")
    assert list(sd.test.timestamp) == [day, 2 * day]
    assert temporal_split(rd, cutoff=pd.Timestamp("1970-01-02 00:00:01")).info.n_test == 1
    assert temporal_split(rd, cutoff=np.datetime64("1970-01-02")).info.n_test == 2


def test_temporal_errors():
    r = make()
    with pytest.raises(DataError, match="temporal_split needs timestamps, but these ratings "
                                        "have none"):
        temporal_split(make(ts=False), last_k=1)
    with pytest.raises(DataError, match="exactly one of last_k=, cutoff= or test_fraction="):
        temporal_split(r)
    with pytest.raises(DataError, match="exactly one of last_k=, cutoff= or test_fraction="):
        temporal_split(r, last_k=1, cutoff=3)
    with pytest.raises(DataError, match=r"cutoff 1000 leaves the test set empty; the "
                                        r"timestamps run from 1970-01-01 00:00:00 to"):
        temporal_split(r, cutoff=1000)
    with pytest.raises(DataError, match="cutoff -5 leaves the training set empty"):
        temporal_split(r, cutoff=-5)
    with pytest.raises(DataError, match="cannot read cutoff 'not a date' as a time"):
        temporal_split(r, cutoff="not a date")
    with pytest.raises(DataError, match=r"last_k must be an integer >= 1, got 0"):
        temporal_split(r, last_k=0)


def test_kfold_sequence():
    r = make()
    folds = kfold(r, 4, seed=2)
    assert isinstance(folds, KFold) and len(folds) == 4
    sizes = [s.info.n_test for s in folds]
    assert sum(sizes) == r.nnz and max(sizes) - min(sizes) <= 1
    assert [s.info.fold for s in folds] == [0, 1, 2, 3]
    assert keys(folds[-1].test) == keys(folds[3].test)
    assert len(folds[1:3]) == 2
    assert list(map(lambda s: s.info.n_test, folds)) == sizes  # re-iterable
    np.testing.assert_array_equal(np.bincount(folds.assignment), sizes)
    with pytest.raises(IndexError, match="fold 4 out of range 0..3"):
        folds[4]
    with pytest.raises(TypeError, match="fold index must be an int"):
        folds["a"]


def test_kfold_per_user_spreads_each_user():
    r = make(n=600)
    folds = kfold(r, 3, seed=0, per_user=True)
    per_fold = np.stack([s.test.user_counts() for s in folds])
    c = r.user_counts()
    assert (per_fold >= (c // 3)[None]).all() and (per_fold <= -(-c // 3)[None]).all()


def test_kfold_errors():
    r = Ratings.from_arrays([1, 2], [1, 2], [1.0, 2.0])
    with pytest.raises(DataError, match=r"k=3 folds need at least 3 ratings, got 2"):
        kfold(r, 3)
    with pytest.raises(DataError, match=r"k must be an integer >= 2, got 1"):
        kfold(r, 1)
    with pytest.raises(DataError, match="expected a Ratings, got list"):
        kfold([1, 2], 2)


def test_split_checks_vocabularies_and_masks():
    r = make()
    s = random_split(r, 0.2)
    other = Vocabulary(r.users.ids[::-1], "user")
    with pytest.raises(DataError, match="user vocabularies differ between train and test"):
        Split(s.train, s.test.with_vocabularies(other, r.items), s.info)
    with pytest.raises(DataError, match=r"test_mask must be a boolean array of length 400"):
        Split.from_mask(r, np.ones(3, bool))
    with pytest.raises(DataError, match="the custom split leaves the training set empty"):
        Split.from_mask(r, np.ones(400, bool))
    assert repr(s).startswith("Split(random: train=320, test=80")
    again = Split.from_pair(s.train, s.test, "mine")
    assert again.info == dataclasses.replace(s.info, method="mine", seed=None)
    odd = Ratings.from_indices([0], [0], [1.0], r.users, Vocabulary(["other"], "item"))
    with pytest.raises(DataError, match="item vocabularies differ between train and test"):
        Split.from_pair(s.train, odd, "x")
    with pytest.raises(DataError, match="Split.from_pair expects two Ratings"):
        Split.from_pair(s.train, None)


def test_no_dense_matrix_on_huge_vocabularies():
    # 1M x 1M would need 8 TB dense; everything here must stay O(nnz + users + items)
    big = 1_000_000
    rng = np.random.default_rng(0)
    n = 20_000
    u = rng.integers(0, 2000, n)
    i = rng.integers(0, 2000, n)
    key = np.unique(u * 2000 + i)
    users = Vocabulary(np.arange(big), "user")
    items = Vocabulary(np.arange(big), "item")
    r = Ratings.from_indices(key // 2000, key % 2000, np.ones(len(key)), users, items,
                             timestamp=np.arange(len(key)))
    from bayesmf.data import kcore

    assert kcore(r, 5, 5).ratings.n_users <= 2000
    for s in (random_split(r), user_split(r, 0.2), temporal_split(r, last_k=1),
              temporal_split(r, test_fraction=0.1), kfold(r, 3, per_user=True)[0]):
        assert s.train.shape == (big, big)
    assert r.describe()["users_with_ratings"] <= 2000
    assert r.to_csr().nnz == len(key)


def test_sub_second_timestamps_keep_their_order():
    """Times with sub-second parts were cut to whole seconds: two events of one second
    tied and the later one could stay in train (a temporal leak); a cutoff of 100.5 put
    t = 100.7 in train. They are kept (float64 seconds); whole seconds stay int64."""
    from bayesmf.data.interactions import Interactions

    r = Ratings.from_arrays(["u", "u", "u"], ["a", "b", "c"], [4.0, 3.0, 5.0],
                            timestamps=[10.9, 10.1, 5.0])
    assert r.timestamp.dtype == np.float64 and r.timestamp.tolist() == [10.9, 10.1, 5.0]
    test = temporal_split(r, last_k=1).test
    assert test.items.decode(test.item).tolist() == ["a"]
    cut = temporal_split(r, cutoff=10.5).test
    assert cut.items.decode(cut.item).tolist() == ["a"]
    when = pd.to_datetime(["2020-01-01 10:00:00.900", "2020-01-01 10:00:00.100",
                           "2020-01-01 09:00:00.000"])
    d = Ratings.from_arrays(["u"] * 3, ["a", "b", "c"], [4.0, 3.0, 5.0],
                            timestamps=when.to_numpy())
    test = temporal_split(d, last_k=1).test
    assert test.items.decode(test.item).tolist() == ["a"]
    cut = temporal_split(d, cutoff="2020-01-01 10:00:00.500").test
    assert cut.items.decode(cut.item).tolist() == ["a"]
    whole = Ratings.from_arrays(["u", "u"], ["a", "b"], [4.0, 3.0], timestamps=[10.0, 11.0])
    assert whole.timestamp.dtype == np.int64
    # beyond the nanosecond range (year 2262): whole seconds, not a wrapped value
    far = Ratings.from_arrays(["u", "u"], ["a", "b"], [4.0, 3.0], timestamps=np.array(
        ["3000-01-01", "2020-01-01"], dtype="datetime64[s]"))
    assert far.timestamp.tolist() == [32503680000, 1577836800]
    ev = Interactions.from_dataframe(pd.DataFrame({"user": ["u"] * 3 + ["v"] * 2,
                                                   "item": ["a", "b", "c", "a", "b"],
                                                   "timestamp": [10.9, 10.1, 5.0, 1.0, 2.0]}))
    for seed in range(4):
        sp = ev.leave_one_out(by="time", seed=seed)
        t = sp.test
        held = dict(zip(t.users.decode(t.user), t.items.decode(t.item)))
        assert held == {"u": "a", "v": "b"}, (seed, held)
