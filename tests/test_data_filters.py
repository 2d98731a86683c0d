"""k-core filter: fixed point, maximality (brute force on tiny inputs), report, errors."""

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bayesmf.data import FilterResult, Ratings, kcore
from bayesmf.errors import DataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def satisfies(cells, mu, mi):
    uc, ic = {}, {}
    for u, i in cells:
        uc[u] = uc.get(u, 0) + 1
        ic[i] = ic.get(i, 0) + 1
    return all(uc[u] >= mu and ic[i] >= mi for u, i in cells)


def naive_kcore(cells, mu, mi):
    """Independent reference: remove one offending row at a time (pure Python)."""
    cells = list(cells)
    while cells:
        uc, ic = {}, {}
        for u, i in cells:
            uc[u] = uc.get(u, 0) + 1
            ic[i] = ic.get(i, 0) + 1
        bad = next((c for c in cells if uc[c[0]] < mu or ic[c[1]] < mi), None)
        if bad is None:
            break
        cells.remove(bad)
    return set(cells)


cells_st = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=1, max_size=10,
                    unique=True)


@settings(max_examples=40, deadline=None)
@given(cells=cells_st, mu=st.integers(0, 3), mi=st.integers(0, 3))
def test_kcore_is_the_maximal_qualifying_subset(cells, mu, mi):
    # brute force over all subsets (<= 2^10): the largest one meeting the thresholds
    best = set()
    for size in range(len(cells), 0, -1):
        found = [set(c) for c in combinations(cells, size) if satisfies(c, mu, mi)]
        if found:
            best = found[0]
            # the k-core is unique: any other qualifying subset is contained in it
            assert all(f <= best for f in found) and len(found) == 1
            break
    assert naive_kcore(cells, mu, mi) == best
    r = Ratings.from_arrays([c[0] for c in cells], [c[1] for c in cells], np.ones(len(cells)))
    if not best:
        with pytest.raises(DataError, match="no rating survives the k-core"):
            kcore(r, mu, mi)
        return
    res = kcore(r, mu, mi)
    out = res.ratings
    got = set(zip(out.users.decode(out.user).tolist(), out.items.decode(out.item).tolist()))
    assert got == best
    assert (out.user_counts() >= mu).all() and (out.item_counts() >= mi).all()
    assert res.removed_rows == len(cells) - len(best)
    assert res.removed_users == len({u for u, _ in cells}) - len({u for u, _ in best})
    assert res.removed_items == len({i for _, i in cells}) - len({i for _, i in best})


@settings(max_examples=40, deadline=None)
@given(cells=st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), min_size=1,
                      max_size=120, unique=True),
       mu=st.integers(1, 4), mi=st.integers(1, 4))
def test_kcore_matches_naive_reference(cells, mu, mi):
    ref = naive_kcore(cells, mu, mi)
    r = Ratings.from_arrays([c[0] for c in cells], [c[1] for c in cells], np.ones(len(cells)))
    if not ref:
        with pytest.raises(DataError):
            kcore(r, mu, mi)
        return
    out = kcore(r, mu, mi).ratings
    assert set(zip(out.users.decode(out.user).tolist(), out.items.decode(out.item).tolist())) == ref


def test_kcore_cascades_and_reports():
    # user 3 has 1 rating -> removed; that drops item "c" to 1 rating -> removed;
    # which drops user 2 to 1 rating -> removed.
    r = Ratings.from_arrays([1, 1, 2, 2, 3, 4, 4], ["a", "b", "a", "c", "c", "a", "b"],
                            [1, 2, 3, 4, 5, 1, 2], timestamps=[1, 2, 3, 4, 5, 6, 7])
    res = kcore(r, min_user=2, min_item=2)
    assert isinstance(res, FilterResult)
    out = res.ratings
    assert list(out.users.ids) == [1, 4] and list(out.items.ids) == ["a", "b"]
    assert (res.removed_rows, res.removed_users, res.removed_items) == (3, 2, 1)
    assert res.iterations == 3
    assert list(out.timestamp) == [1, 2, 6, 7] and list(out.rating) == [1, 2, 1, 2]
    assert repr(res).startswith("FilterResult(Ratings(n=4, users=2, items=2")


def test_kcore_keep_vocabularies():
    r = Ratings.from_arrays([1, 1, 2], ["a", "b", "a"], [1, 2, 3])
    res = kcore(r, min_user=2, compact=False)
    assert res.ratings.users is r.users and res.ratings.nnz == 2
    assert res.removed_users == 1 and res.removed_items == 0


def test_kcore_nothing_to_do_returns_same_data():
    r = Ratings.from_arrays([1, 2], [1, 2], [1, 2])
    res = kcore(r)
    assert res.ratings is r and res.iterations == 0 and res.removed_rows == 0


def test_kcore_errors():
    r = Ratings.from_arrays([1, 2], [1, 2], [1, 2])
    with pytest.raises(DataError, match=r"no rating survives the k-core with min_user=2, "
                                        r"min_item=1 \(input: 2 ratings, 2 users, 2 items\)"):
        kcore(r, min_user=2)
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(DataError, match="min_user must be a non-negative integer"):
            kcore(r, min_user=bad)
    with pytest.raises(DataError, match="kcore expects a Ratings, got DataFrame"):
        kcore(pd.DataFrame(), 1, 1)


@pytest.mark.data
@pytest.mark.skipif(not (DATA / "ml-100k" / "u.data").exists(), reason="shared data absent")
def test_kcore_ml100k():
    from bayesmf.datasets import load_movielens

    r = load_movielens("100k", path=DATA / "ml-100k").ratings
    assert kcore(r, min_user=20).removed_rows == 0  # every ML-100K user has >= 20 ratings
    res = kcore(r, min_user=20, min_item=20)
    out = res.ratings
    assert out.user_counts().min() >= 20 and out.item_counts().min() >= 20
    assert res.removed_rows == r.nnz - out.nnz > 0
    assert out.n_users == r.n_users - res.removed_users
