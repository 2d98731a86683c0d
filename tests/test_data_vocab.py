"""Vocabulary: raw ids <-> int32 indices, unknown-id policies, bad ids."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesmf.data import Vocabulary
from bayesmf.errors import DataError, UnknownIdError

int_ids = st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=40, unique=True)
str_ids = st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=40, unique=True)
any_ids = st.one_of(int_ids, str_ids)


# ---------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(ids=any_ids, data=st.data())
def test_encode_decode_round_trip(ids, data):
    v = Vocabulary(ids, "user")
    sample = data.draw(st.lists(st.sampled_from(ids), min_size=1, max_size=30))
    idx = v.encode(sample)
    assert idx.dtype == np.int32
    assert idx.min() >= 0 and idx.max() < len(v)
    assert list(v.decode(idx)) == sample
    # index i is the i-th id
    assert list(v.decode(np.arange(len(v)))) == list(ids)


@settings(max_examples=60, deadline=None)
@given(ids=int_ids, more=st.lists(st.integers(-(2**40), 2**40), max_size=30))
def test_extend_keeps_existing_indices_and_appends_in_first_appearance_order(ids, more):
    v = Vocabulary(ids, "item")
    w = v.extend(more)
    assert list(w.ids[: len(v)]) == list(ids)
    np.testing.assert_array_equal(w.encode(ids), v.encode(ids))
    new = list(dict.fromkeys(x for x in more if x not in set(ids)))
    assert list(w.ids[len(v):]) == new
    assert v.extend(ids) is v  # nothing new: same object
    assert len(v) == len(ids)  # the original is unchanged


@settings(max_examples=40, deadline=None)
@given(raw=st.lists(st.integers(0, 50), min_size=1, max_size=60))
def test_from_raw_sorted_and_first_appearance(raw):
    assert list(Vocabulary.from_raw(raw).ids) == sorted(set(raw))
    assert list(Vocabulary.from_raw(raw, sort=False).ids) == list(dict.fromkeys(raw))


# ---------------------------------------------------------------- unknown ids
def test_unknown_raise_lists_the_ids():
    v = Vocabulary([1, 2, 3], "user")
    with pytest.raises(UnknownIdError, match=r"2 unknown user id\(s\): 7, 9") as ei:
        v.encode([1, 7, 9, 7])
    assert ei.value.ids == [7, 9] and ei.value.kind == "user"
    assert isinstance(ei.value, KeyError)  # and it stays catchable as KeyError


def test_unknown_raise_truncates_long_lists():
    v = Vocabulary([0], "item")
    with pytest.raises(UnknownIdError, match=r"^25 unknown item id\(s\): 1, 2, 3, 4, 5, 6, 7, 8, 9, 10$"):
        v.encode(np.arange(1, 26))


def test_unknown_mask_returns_minus_one():
    v = Vocabulary(["a", "b"], "item")
    idx, known = v.encode(["b", "zz", "a"], unknown="mask")
    np.testing.assert_array_equal(idx, [1, -1, 0])
    np.testing.assert_array_equal(known, [True, False, True])


def test_wrong_kind_of_id_is_unknown():
    # text ids meet an integer vocabulary through their canonical integer text only
    # (issue 17 item 2: "1" used to be unknown here)
    v = Vocabulary([1, 2], "user")
    with pytest.raises(UnknownIdError, match=r"^1 unknown user id\(s\): '01'; "):
        v.encode(["01", "1"])
    idx, known = v.encode(["1", "2", "x"], unknown="mask")
    np.testing.assert_array_equal(idx, [0, 1, -1])
    np.testing.assert_array_equal(known, [True, True, False])


def test_bad_policy():
    with pytest.raises(ValueError, match="unknown= must be 'raise' or 'mask'"):
        Vocabulary([1]).encode([1], unknown="drop")


# ---------------------------------------------------------------- bad ids
@pytest.mark.parametrize(
    "ids, msg",
    [
        (["a", 1], r"all integers or all strings, not a mix \(found the string 'a'"),
        (np.array(["a", 1], dtype=object), "not a mix"),
        ([True, 2], "found True of type bool"),
        (np.array([True, False]), "got booleans"),
        (pd.Series([True, False]), "got booleans"),
        ([1.5, 2.5], "floats that are not whole numbers"),
        (np.array([1.0, np.nan]), "floats that are not whole numbers"),
        ([1.5, 2], "found 1.5 of type float"),
        ([None, 1], "found None of type NoneType"),
        (np.zeros((2, 2), dtype=int), r"one-dimensional, got shape \(2, 2\)"),
        (np.array([1 + 2j]), "got dtype complex128"),
    ],
)
def test_bad_ids(ids, msg):
    with pytest.raises(DataError, match=msg):
        Vocabulary.from_raw(ids, "user")


def test_whole_floats_are_ints():
    v = Vocabulary.from_raw([3.0, 1.0, 3.0])
    assert v.ids.dtype == np.int64 and list(v.ids) == [1, 3]


def test_pandas_string_and_nullable_int_inputs():
    assert list(Vocabulary.from_raw(pd.Series(["b", "a"], dtype="string")).ids) == ["a", "b"]
    assert list(Vocabulary.from_raw(pd.Series([5, 4], dtype="Int64")).ids) == [4, 5]


def test_repeated_ids_rejected():
    with pytest.raises(DataError, match=r"user vocabulary ids must be distinct; repeated: \[2\]"):
        Vocabulary([1, 2, 2], "user")


def test_extend_with_other_kind_rejected():
    with pytest.raises(DataError, match="cannot extend a item vocabulary of integers with strings"):
        Vocabulary([1], "item").extend(["x"])


def test_decode_errors():
    v = Vocabulary([10, 20], "user")
    with pytest.raises(IndexError, match=r"user index out of range 0..1"):
        v.decode([2])
    with pytest.raises(IndexError, match="out of range"):
        v.decode([-1])
    with pytest.raises(DataError, match="indices must be integers, got dtype float64"):
        v.decode(np.array([0.0]))


# ---------------------------------------------------------------- identity
def test_fingerprint_and_mixing_vocabularies():
    a = Vocabulary([1, 2, 3], "item")
    assert a == Vocabulary(np.array([1, 2, 3]), "item")
    assert a != Vocabulary([1, 3, 2], "item")  # order matters
    assert Vocabulary(["1"], "item") != Vocabulary([1], "item")  # kind matters
    assert hash(a) == hash(Vocabulary([1, 2, 3], "item"))
    Vocabulary.ensure_same(a, Vocabulary([1, 2, 3], "item"))
    with pytest.raises(DataError, match=r"item vocabularies differ in the test: 3 vs 4 ids"):
        Vocabulary.ensure_same(a, a.extend([4]), "in the test")


def test_contains_len_iter_repr():
    v = Vocabulary(["x", "y", "z", "w"], "user")
    assert "x" in v and "q" not in v and len(v) == 4 and list(v) == ["x", "y", "z", "w"]
    assert repr(v) == "Vocabulary(user, n=4, ids=['x', 'y', 'z', ...])"
    assert v.is_string and not Vocabulary([1]).is_string


# ---------------------------------------------------------------- id types (issue 17 item 2)
def test_parse_ids_auto_keeps_text_unless_every_id_is_canonical_int():
    from bayesmf.data.vocab import parse_ids

    out = parse_ids(["007", "7", "0007"], "auto", "user")
    assert out.dtype == object and out.tolist() == ["007", "7", "0007"]
    assert parse_ids(["1e3", "1000"]).tolist() == ["1e3", "1000"]
    for not_plain in (["+7", "8"], [" 7", "8"], ["-0", "8"], ["99999999999999999999", "1"]):
        assert parse_ids(not_plain).dtype == object, not_plain
    ints = parse_ids(["12", "-3", "0", "9223372036854775807"])
    assert ints.dtype == np.int64 and ints.tolist() == [12, -3, 0, 9223372036854775807]
    assert parse_ids(np.array([5, 6])).dtype == np.int64  # integer input stays integer


def test_parse_ids_str_and_int():
    from bayesmf.data.vocab import parse_ids

    assert parse_ids([12, -3], "str").tolist() == ["12", "-3"]
    assert parse_ids(["007", " +7 ", "-01"], "int").tolist() == [7, 7, -1]
    with pytest.raises(DataError, match=r"1 user id\(s\) are not integers in the int64 range "
                                        r"\(id_type='int'\), e.g. \['1e3'\]"):
        parse_ids(["1e3", "5"], "int", "user")
    with pytest.raises(DataError, match="not integers in the int64 range"):
        parse_ids(["99999999999999999999"], "int")
    with pytest.raises(DataError, match=r"id_type must be one of \['auto', 'str', 'int'\]"):
        parse_ids(["1"], "float")


def test_text_ids_match_an_integer_vocabulary_by_canonical_text():
    v = Vocabulary([7, 12, 1000], "user")
    np.testing.assert_array_equal(v.encode(["12", "7"]), [1, 0])
    assert v.coerce(["12", "1000"]).dtype == np.int64
    assert "12" in v and "012" not in v and 12 in v and "x" not in v
    with pytest.raises(UnknownIdError, match=r"^1 unknown user id\(s\): '007'; .*leading zeros"
                                             r".*as integers, 7 would match"):
        v.encode(["007", "12"])
    with pytest.raises(UnknownIdError, match=r"'u1'; this user vocabulary holds integer ids"):
        v.encode(["u1"])
    with pytest.warns(UserWarning, match=r"1 user id\(s\) treated as unknown: .*'\+7'"):
        idx, known = v.encode(["+7", "12", "newcomer"], unknown="mask")
    np.testing.assert_array_equal(idx, [-1, 1, -1])
    assert v.extend(["13"]).ids.tolist() == [7, 12, 1000, 13]


def test_integer_ids_match_a_text_vocabulary_by_canonical_text():
    s = Vocabulary(["7", "007", "12"], "item")
    np.testing.assert_array_equal(s.encode([12, 7]), [2, 0])
    assert 7 in s and s.coerce([7]).tolist() == ["7"]
    with pytest.raises(UnknownIdError, match=r"1 unknown item id\(s\): '8'"):
        s.encode([8])
    assert s.extend([5]).ids.tolist() == ["7", "007", "12", "5"]


def test_a_plain_unknown_integer_is_not_called_badly_written():
    """Among text ids for an integer vocabulary, '99999' (canonical, just unknown) gets
    no "leading zeros, a sign or spaces" warning; '007' does."""
    import warnings

    v = Vocabulary(np.arange(1, 20))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        idx, known = v.encode(np.array(["3", "99999", "abc"], dtype=object), unknown="mask")
    assert idx.tolist() == [2, -1, -1] and known.tolist() == [True, False, False]
    with pytest.warns(UserWarning, match=r"\['007'\] are integers written with leading"):
        v.encode(np.array(["007"], dtype=object), unknown="mask")
