"""Ratings: construction, validation (every bad input with its message), duplicates,
conversions, immutability."""

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesmf.data import Ratings, Vocabulary
from bayesmf.errors import DataError, UnknownIdError


def small():
    return Ratings.from_arrays(["a", "b", "a", "c"], [10, 10, 20, 30], [4.0, 3.0, 5.0, 1.0],
                               timestamps=[100, 200, 300, 400])


# ---------------------------------------------------------------- basics
def test_from_arrays_basic():
    r = small()
    assert (r.nnz, r.n_users, r.n_items, r.shape) == (4, 3, 3, (3, 3))
    assert list(r.users.ids) == ["a", "b", "c"] and list(r.items.ids) == [10, 20, 30]
    assert r.user.dtype == np.int32 and r.item.dtype == np.int32
    assert r.rating.dtype == np.float64 and r.timestamp.dtype == np.int64
    assert r.sparsity == pytest.approx(1 - 4 / 9)
    np.testing.assert_array_equal(r.user_counts(), [2, 1, 1])
    np.testing.assert_array_equal(r.item_counts(), [2, 1, 1])
    assert r.scale.min == 1.0 and r.scale.max == 5.0 and r.scale.levels == (1.0, 3.0, 4.0, 5.0)
    assert r.mean == pytest.approx(13 / 4)
    assert repr(r) == "Ratings(n=4, users=3, items=3, sparsity=0.5556)"


def test_csr_csc_hold_the_ratings():
    r = small()
    csr, csc = r.to_csr(), r.to_csc()
    assert csr.shape == (3, 3) and csr.nnz == 4 and csc.nnz == 4
    assert csr[0, 1] == 5.0 and csc[1, 0] == 3.0
    assert r.to_csr() is csr  # cached


def test_from_dataframe_auto_timestamp_and_renames():
    df = pd.DataFrame({"u": [1, 2], "i": ["x", "y"], "r": [1, 2], "timestamp": [5, 6]})
    r = Ratings.from_dataframe(df, user_col="u", item_col="i", rating_col="r")
    assert list(r.timestamp) == [5, 6]
    r2 = Ratings.from_dataframe(df, user_col="u", item_col="i", rating_col="r",
                                timestamp_col=None)
    assert r2.timestamp is None


def test_datetime_timestamps_become_unix_seconds():
    ts = pd.to_datetime(["1970-01-01 00:00:10", "2000-01-01 00:00:00"]).to_numpy()
    r = Ratings.from_arrays([1, 2], [1, 2], [1, 2], timestamps=ts)
    assert list(r.timestamp) == [10, 946684800]


def test_from_sparse():
    m = sp.coo_matrix(([5.0, 0.0, 2.0], ([0, 1, 1], [1, 0, 2])), shape=(2, 3))
    r = Ratings.from_sparse(m, users=["u0", "u1"])
    assert r.nnz == 3  # explicit zero kept
    assert list(r.users.ids) == ["u0", "u1"] and list(r.items.ids) == [0, 1, 2]
    with pytest.raises(DataError, match="expected a scipy.sparse matrix, got ndarray"):
        Ratings.from_sparse(np.ones((2, 2)))
    with pytest.raises(DataError, match="users/items ids must match the matrix shape"):
        Ratings.from_sparse(m, users=["only-one"])


def test_immutable_and_readonly():
    r = small()
    with pytest.raises(AttributeError, match="Ratings is immutable"):
        r.rating = np.zeros(4)
    with pytest.raises(ValueError, match="read-only"):
        r.rating[0] = 1.0


def test_caller_arrays_are_not_frozen():
    vals = np.array([1.0, 2.0])
    ts = np.array([1, 2])
    df = pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [1.0, 2.0]})
    Ratings.from_arrays([1, 2], [3, 4], vals, timestamps=ts)
    Ratings.from_dataframe(df)
    assert vals.flags.writeable and ts.flags.writeable
    vals[0] = 9.0
    df.loc[0, "rating"] = 7.0  # the frame stays writable
    assert df.loc[0, "rating"] == 7.0


def test_describe():
    d = small().describe()
    assert d["ratings"] == 4 and d["users"] == 3 and d["items"] == 3
    assert d["rating_levels"] == [1.0, 3.0, 4.0, 5.0] and d["has_timestamp"] is True
    assert d["ratings_per_user"]["max"] == 2.0 and d["ratings_per_item"]["min"] == 1.0


def test_subset_and_with_vocabularies():
    r = small()
    s = r.subset(np.array([True, False, True, False]))
    assert s.nnz == 2 and s.users is r.users and list(s.timestamp) == [100, 300]
    with pytest.raises(DataError, match="the selection is empty"):
        r.subset(np.zeros(4, dtype=bool))
    with pytest.raises(DataError, match="boolean mask length differs"):
        r.subset(np.ones(3, dtype=bool))
    bigger_users = r.users.extend(["z"])
    moved = r.with_vocabularies(bigger_users, r.items)
    assert moved.n_users == 4 and list(moved.to_dataframe()["user"]) == ["a", "b", "a", "c"]


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "ratings, msg",
    [
        ([1.0, np.nan, 3.0], r"1 rating value\(s\) are NaN or infinite \(first at row\(s\) \[1\]\)"),
        ([np.inf, 1.0, -np.inf], r"2 rating value\(s\) are NaN or infinite \(first at row\(s\) \[0, 2\]\)"),
        (["4", "abc", "5"], r"rating values must be numeric; got dtype .* such as \['abc'\]"),
        ([None, 1.0, 2.0], r"non-numeric entries such as \[None\]"),
        ([True, False, True], "rating values must be numeric, got booleans"),
        (np.array([1 + 1j, 2, 3]), "rating values must be real numbers, got dtype complex128"),
    ],
)
def test_bad_rating_values(ratings, msg):
    with pytest.raises(DataError, match=msg):
        Ratings.from_arrays([1, 2, 3], [1, 2, 3], ratings)


def test_numeric_strings_are_accepted():
    assert list(Ratings.from_arrays([1, 2], [1, 2], ["4.5", "3"]).rating) == [4.5, 3.0]


def test_empty_input():
    with pytest.raises(DataError, match="no ratings: the input is empty"):
        Ratings.from_arrays([], [], [])
    with pytest.raises(DataError, match="no ratings: the input is empty"):
        Ratings.from_dataframe(pd.DataFrame({"user": [], "item": [], "rating": []}))


def test_length_mismatch():
    with pytest.raises(DataError, match="length mismatch: 3 users, 2 items, 3 ratings"):
        Ratings.from_arrays([1, 2, 3], [1, 2], [1, 2, 3])
    with pytest.raises(DataError, match="length mismatch: 2 users, 2 items, 2 ratings|one value per rating"):
        Ratings.from_arrays([1, 2], [1, 2], [1, 2], timestamps=[1, 2, 3])


@pytest.mark.parametrize(
    "users, msg",
    [
        ([True, False], "user ids must be all integers or all strings; found True of type bool"),
        (np.array([True, False]), "user ids must be integers or strings, got booleans"),
        ([1.5, 2.0], "user ids are floats that are not whole numbers"),
        (["a", 2], "user ids must be all integers or all strings, not a mix"),
    ],
)
def test_bad_id_dtypes(users, msg):
    with pytest.raises(DataError, match=msg):
        Ratings.from_arrays(users, [1, 2], [1.0, 2.0])


def test_bad_item_dtype_names_items():
    with pytest.raises(DataError, match="item ids are floats that are not whole numbers"):
        Ratings.from_arrays([1, 2], [0.5, 1.0], [1.0, 2.0])


def test_negative_counts():
    with pytest.raises(DataError, match=r"2 negative count\(s\); counts must be >= 0"):
        Ratings.from_arrays([1, 2, 3], [1, 2, 3], [3, -1, -2], counts=True)
    assert Ratings.from_arrays([1], [1], [-1.0]).rating[0] == -1.0  # allowed for ratings


def test_missing_columns_and_missing_ids():
    df = pd.DataFrame({"userId": [1], "item": [2], "score": [3.0]})
    with pytest.raises(DataError, match=r"missing column\(s\) \['user', 'rating'\]; the frame "
                                        r"has \['userId', 'item', 'score'\]"):
        Ratings.from_dataframe(df)
    with pytest.raises(DataError, match="missing timestamp column 'when'"):
        Ratings.from_dataframe(df, user_col="userId", rating_col="score", timestamp_col="when")
    df2 = pd.DataFrame({"user": [1, None], "item": [2, 3], "rating": [3.0, 4.0]})
    with pytest.raises(DataError, match=r"1 missing value\(s\) in column 'user'"):
        Ratings.from_dataframe(df2)
    with pytest.raises(DataError, match="expected a pandas DataFrame, got dict"):
        Ratings.from_dataframe({"user": [1]})


def test_bad_timestamps():
    with pytest.raises(DataError, match=r"1 timestamp\(s\) are NaN or infinite"):
        Ratings.from_arrays([1, 2], [1, 2], [1, 2], timestamps=[1.0, np.nan])
    with pytest.raises(DataError, match="timestamp must be a numeric 1-D array"):
        Ratings.from_arrays([1, 2], [1, 2], [1, 2], timestamps=["x", "y"])
    with pytest.raises(DataError, match=r"1 timestamp\(s\) are NaT"):
        Ratings.from_arrays([1, 2], [1, 2], [1, 2],
                            timestamps=np.array(["2000-01-01", "NaT"], dtype="datetime64[s]"))


def test_bad_policies():
    with pytest.raises(DataError, match=r"duplicates= must be one of \('raise', 'last', 'first', 'mean'\), got 'sum'"):
        Ratings.from_arrays([1], [1], [1.0], duplicates="sum")
    with pytest.raises(DataError, match="unknown= must be 'raise' or 'extend', got 'mask'"):
        Ratings.from_arrays([1], [1], [1.0], unknown="mask")
    with pytest.raises(DataError, match="unknown= must be 'raise' or 'drop', got 'x'"):
        small().with_vocabularies(small().users, small().items, unknown="x")


# ---------------------------------------------------------------- duplicates
def test_duplicates_raise_by_default():
    with pytest.raises(DataError, match=r"1 duplicate \(user, item\) pair\(s\), e.g. \[\('a', 10\)\]; "
                                        r"pass duplicates='last', 'first' or 'mean'"):
        Ratings.from_arrays(["a", "b", "a"], [10, 10, 10], [1.0, 2.0, 3.0])


def test_duplicates_raise_in_direct_constructor_and_from_indices():
    v = Vocabulary([0, 1])
    with pytest.raises(DataError, match=r"1 duplicate \(user, item\) pair"):
        Ratings(np.array([0, 0]), np.array([1, 1]), np.array([1.0, 2.0]), v, v)
    with pytest.raises(DataError, match=r"1 duplicate \(user, item\) pair"):
        Ratings.from_indices([0, 0], [1, 1], [1.0, 2.0], v, v)


def test_duplicate_policies_values_and_timestamps():
    users = [1, 2, 1, 1]
    items = [5, 5, 5, 6]
    vals = [1.0, 2.0, 4.0, 3.0]
    ts = [30, 10, 20, 40]

    def pairs(r):
        df = r.to_dataframe()
        return {(u, i): (x, t) for u, i, x, t in zip(df.user, df.item, df.rating, df.timestamp)}

    last = pairs(Ratings.from_arrays(users, items, vals, ts, duplicates="last"))
    first = pairs(Ratings.from_arrays(users, items, vals, ts, duplicates="first"))
    mean = pairs(Ratings.from_arrays(users, items, vals, ts, duplicates="mean"))
    # "last"/"first" mean the last/first row in input order, with that row's timestamp
    assert last == {(1, 5): (4.0, 20), (2, 5): (2.0, 10), (1, 6): (3.0, 40)}
    assert first == {(1, 5): (1.0, 30), (2, 5): (2.0, 10), (1, 6): (3.0, 40)}
    # "mean" averages the values and keeps the latest timestamp of the group
    assert mean == {(1, 5): (2.5, 30), (2, 5): (2.0, 10), (1, 6): (3.0, 40)}


rows = st.lists(st.tuples(st.integers(0, 4), st.integers(0, 4),
                          st.integers(1, 10).map(lambda x: x / 2), st.integers(0, 10**6)),
                min_size=1, max_size=40)


@settings(max_examples=50, deadline=None)
@given(rows=rows, policy=st.sampled_from(["last", "first", "mean"]))
def test_duplicate_policies_match_pandas_groupby(rows, policy):
    df = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    r = Ratings.from_dataframe(df, duplicates=policy)
    got = r.to_dataframe().set_index(["user", "item"]).sort_index()
    g = df.groupby(["user", "item"], sort=True)
    if policy == "mean":
        ref = pd.DataFrame({"rating": g["rating"].mean(), "timestamp": g["timestamp"].max()})
    else:
        ref = g[["rating", "timestamp"]].last() if policy == "last" else g[["rating", "timestamp"]].first()
    assert len(got) == len(ref) == r.nnz
    np.testing.assert_allclose(got["rating"].to_numpy(), ref["rating"].to_numpy())
    np.testing.assert_array_equal(got["timestamp"].to_numpy(), ref["timestamp"].to_numpy())
    assert list(got.index) == list(ref.index)


# ---------------------------------------------------------------- round trip
@settings(max_examples=40, deadline=None)
@given(
    data=st.data(),
    kind=st.sampled_from(["int", "str"]),
    n=st.integers(1, 40),
)
def test_from_arrays_to_dataframe_round_trip(data, kind, n):
    pairs = data.draw(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)),
                               min_size=n, max_size=n, unique=True))
    vals = data.draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=n, max_size=n))
    ts = data.draw(st.lists(st.integers(0, 2**40), min_size=n, max_size=n))
    conv = (lambda x: x) if kind == "int" else (lambda x: f"id{x}")
    users = [conv(p[0]) for p in pairs]
    items = [conv(p[1]) for p in pairs]
    r = Ratings.from_arrays(users, items, vals, ts)
    df = r.to_dataframe()
    assert list(df.columns) == ["user", "item", "rating", "timestamp"]
    assert list(df["user"]) == users and list(df["item"]) == items
    np.testing.assert_array_equal(df["rating"].to_numpy(), np.asarray(vals, dtype=float))
    assert list(df["timestamp"]) == ts
    # and back again, with the same vocabularies
    r2 = Ratings.from_dataframe(df, user_vocab=r.users, item_vocab=r.items)
    np.testing.assert_array_equal(r2.user, r.user)
    np.testing.assert_array_equal(r2.item, r.item)
    idx = r.to_dataframe(raw_ids=False)
    np.testing.assert_array_equal(idx["user"].to_numpy(), r.user)


# ---------------------------------------------------------------- vocabularies
def test_unknown_ids_against_given_vocabularies():
    r = small()
    with pytest.raises(UnknownIdError, match=r"1 unknown user id\(s\): 'zz'"):
        Ratings.from_arrays(["a", "zz"], [10, 20], [1.0, 2.0], user_vocab=r.users,
                            item_vocab=r.items)
    ext = Ratings.from_arrays(["a", "zz"], [10, 99], [1.0, 2.0], user_vocab=r.users,
                              item_vocab=r.items, unknown="extend")
    assert list(ext.users.ids) == ["a", "b", "c", "zz"]
    assert list(ext.items.ids) == [10, 20, 30, 99]
    assert ext.users.encode(["a"])[0] == r.users.encode(["a"])[0]


def test_mixing_vocabularies():
    r = small()
    other = Ratings.from_arrays(["a", "q"], [10, 77], [1.0, 2.0])
    with pytest.raises(UnknownIdError, match=r"1 unknown user id\(s\): 'q'"):
        other.with_vocabularies(r.users, r.items)
    dropped = other.with_vocabularies(r.users, r.items, unknown="drop")
    assert dropped.nnz == 1 and dropped.users == r.users
    with pytest.raises(DataError, match="user vocabularies differ"):
        Vocabulary.ensure_same(r.users, other.users)
    with pytest.raises(DataError, match=r"item indices fall outside the vocabulary 0..2"):
        Ratings.from_indices([0], [3], [1.0], r.users, r.items)
    with pytest.raises(DataError, match="user indices must be a 1-D integer array, got float64"):
        Ratings.from_indices(np.array([0.0]), [0], [1.0], r.users, r.items)


# ---------------------------------------------------------------- issue 17: overflow, id types
@pytest.mark.parametrize("scale", [1e300, 1e20, 1e15])
def test_ratings_too_large_for_the_model_statistics_are_a_data_error(scale):
    # ratings x 1e300 used to reach inference and end in a FloatingPointError / SpecError
    vals = np.array([1.0, -2.0, 3.0]) * scale
    with pytest.raises(DataError, match=r"rating value\(s\) are too large .*\|r\| < 1e\+15.*"
                                        r"rescale them"):
        Ratings.from_arrays([1, 2, 3], [1, 1, 2], vals)
    with pytest.raises(DataError, match="too large"):
        Ratings.from_indices([0, 1], [0, 0], [1.0, scale], Vocabulary([1, 2]), Vocabulary([1]))


def test_ratings_just_below_the_bound_are_accepted():
    from bayesmf.data.ratings import MAX_ABS_RATING

    r = Ratings.from_arrays([1, 2], [1, 1], [-0.99 * MAX_ABS_RATING, 0.99 * MAX_ABS_RATING])
    assert r.nnz == 2


def test_from_arrays_id_type():
    r = Ratings.from_arrays(["007", "7"], ["1", "2"], [1.0, 2.0], id_type="auto")
    assert r.users.ids.tolist() == ["007", "7"] and r.items.ids.tolist() == [1, 2]
    with pytest.raises(DataError, match=r"1 duplicate \(user, item\) pair\(s\).*CLI: --duplicates"):
        Ratings.from_arrays(["007", "7"], ["1", "1"], [1.0, 2.0], id_type="int")
    r = Ratings.from_arrays(["007", "7"], ["1", "1"], [1.0, 2.0], id_type="int",
                            duplicates="mean")
    assert r.users.ids.tolist() == [7] and r.rating.tolist() == [1.5]
    assert Ratings.from_arrays([3], [4], [1.0], id_type="str").users.ids.tolist() == ["3"]
    # a test set read as text encodes onto integer training vocabularies
    train = Ratings.from_arrays([1, 2], [10, 20], [1.0, 2.0])
    test = Ratings.from_arrays(["2", "1"], ["10", "20"], [3.0, 4.0], user_vocab=train.users,
                               item_vocab=train.items)
    assert test.users == train.users and test.user.tolist() == [1, 0]


def test_data_edge_cases_from_the_audit():
    """tz-aware timestamps convert to UTC seconds; duplicate COO entries, ids or
    timestamps beyond int64, and user_col == item_col are DataErrors (they were summed,
    wrapped, or a diagonal matrix); an empty vocabulary extends with text; vocabularies
    that join to the same text are not equal."""
    import scipy.sparse as sp

    from bayesmf.data.vocab import Vocabulary

    df = pd.DataFrame({"user": [1, 2], "item": [1, 1], "rating": [4.0, 5.0],
                       "timestamp": pd.to_datetime(["2020-01-01", "2020-01-02"], utc=True)})
    r = Ratings.from_dataframe(df)
    assert r.timestamp.tolist() == [1577836800, 1577923200]
    m = sp.coo_matrix((np.array([4.0, 5.0]), (np.array([0, 0]), np.array([1, 1]))),
                      shape=(1, 2))
    with pytest.raises(DataError, match="duplicate"):
        Ratings.from_sparse(m)
    with pytest.raises(DataError, match="do not fit in int64"):
        Ratings.from_arrays(np.array([1e20, 5.0]), np.array([1, 1]), np.array([3.0, 4.0]))
    with pytest.raises(DataError, match="timestamps must fit in int64"):
        Ratings.from_arrays([1, 2], [1, 1], [3.0, 4.0], np.array([1e30, 0.0]))
    with pytest.raises(DataError, match="same column"):
        Ratings.from_dataframe(df, user_col="user", item_col="user")
    assert Vocabulary([], "user").extend(["a", "b", "a"]).ids.tolist() == ["a", "b"]
    assert Vocabulary(["a\x1fb", "c"]) != Vocabulary(["a", "b\x1fc"])
    assert Vocabulary(["a", "b"]) == Vocabulary(["a", "b"])


def test_subset_refuses_repeated_or_out_of_range_positions():
    """A repeated position built a Ratings with a duplicated pair (which fit accepted); a
    0/1 integer array was read as positions (rows 1, 0, 1, 0)."""
    import numpy as np
    import pytest

    from bayesmf.data.ratings import Ratings
    from bayesmf.errors import DataError

    r = Ratings.from_arrays(["a", "b", "c", "d"], ["x", "y", "x", "y"], [1.0, 2.0, 3.0, 4.0])
    assert r.subset(np.array([2, 0])).rating.tolist() == [3.0, 1.0]
    assert r.subset(np.array([-1])).rating.tolist() == [4.0]
    with pytest.raises(DataError, match="repeat.*pass it as .astype.bool."):
        r.subset(np.array([1, 0, 1, 0]))
    with pytest.raises(DataError, match="row positions repeat"):
        r.subset([0, 0])
    with pytest.raises(DataError, match=r"row positions must lie in \[-4, 3\]"):
        r.subset([7])
    with pytest.raises(DataError, match="boolean mask or integer row positions"):
        r.subset([0.5])
    with pytest.raises(DataError, match="the selection is empty"):
        r.subset([])
