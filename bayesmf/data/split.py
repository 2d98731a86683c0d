"""Train/test splits of a :class:`~bayesmf.data.ratings.Ratings`.

Every split partitions the rows exactly (each row is in train or in test, never both) and
both sides keep the **same vocabularies** as the input, so indices mean the same thing in
train and test and a model fitted on train can score test without re-encoding. Users or
items that have test rows but no training rows are "unseen"; :class:`SplitInfo` counts the
test rows that hit them (a model can only fall back to biases/priors there).

Randomness comes from ``numpy.random.default_rng(seed)``: the same ``seed`` gives the same
split on every platform. ``seed`` may also be a ``numpy.random.Generator`` (advanced: the
split then consumes draws from it) or ``None`` (fresh OS entropy, not reproducible).

All functions are vectorized over rows: per-user work is done by sorting (stable argsort
by user of a random permutation or of the time order) and ranking rows within their
user's run.

=================  ==========================================================
:func:`random_split`     a random fraction of all rows goes to test
:func:`user_split`       per user: a fraction of its rows, or ``n_test`` rows
:func:`temporal_split`   per user: its last ``last_k`` rows by time; or a global time
                         cut (``cutoff``) or the globally latest ``test_fraction``
:func:`kfold`            k folds (rows, or rows spread evenly within each user)
=================  ==========================================================
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import DataError

__all__ = ["Split", "SplitInfo", "KFold", "random_split", "user_split", "temporal_split",
           "kfold"]


@dataclass(frozen=True)
class SplitInfo:
    """Facts about a split.

    Attributes
    ----------
    method : str
        ``"random"``, ``"user"``, ``"temporal"``, ``"kfold"`` or ``"official"``.
    n_train, n_test : int
        Rows on each side.
    test_unseen_users : int
        Test rows whose user has no training row.
    test_unseen_items : int
        Test rows whose item has no training row.
    test_unseen_either : int
        Test rows whose user or item (or both) has no training row.
    seed : int or None
        The integer seed used (``None`` for a Generator, no seed, or no randomness).
    fold : int or None
        Fold number for k-fold splits.
    """

    method: str
    n_train: int
    n_test: int
    test_unseen_users: int
    test_unseen_items: int
    test_unseen_either: int
    seed: int | None = None
    fold: int | None = None


@dataclass(frozen=True, repr=False)
class Split:
    """A train/test pair sharing the same vocabularies, plus :class:`SplitInfo`.

    Unpacks like a tuple: ``train, test = split``.
    """

    train: Ratings
    test: Ratings
    info: SplitInfo

    def __post_init__(self):
        Vocabulary.ensure_same(self.train.users, self.test.users, "between train and test")
        Vocabulary.ensure_same(self.train.items, self.test.items, "between train and test")

    def __iter__(self) -> Iterator[Ratings]:
        yield self.train
        yield self.test

    def __repr__(self) -> str:
        i = self.info
        fold = f", fold={i.fold}" if i.fold is not None else ""
        return (f"Split({i.method}{fold}: train={i.n_train}, test={i.n_test}, "
                f"test rows with unseen user={i.test_unseen_users}, "
                f"unseen item={i.test_unseen_items})")

    @classmethod
    def from_pair(cls, train: Ratings, test: Ratings, method: str = "custom",
                  seed: int | None = None, fold: int | None = None) -> "Split":
        """Wrap an existing train/test pair (same vocabularies required), computing the
        unseen-user/item counts of :class:`SplitInfo`."""
        if not isinstance(train, Ratings) or not isinstance(test, Ratings):
            raise DataError("Split.from_pair expects two Ratings")
        Vocabulary.ensure_same(train.users, test.users, "between train and test")
        Vocabulary.ensure_same(train.items, test.items, "between train and test")
        return cls(train, test, _info(train, test, method, seed, fold))

    @classmethod
    def from_mask(cls, ratings: Ratings, test_mask, method: str = "custom",
                  seed: int | None = None, fold: int | None = None) -> "Split":
        """Split ``ratings`` by a boolean mask (``True`` = test row)."""
        test_mask = np.asarray(test_mask)
        if test_mask.dtype != bool or test_mask.shape != (ratings.nnz,):
            raise DataError(f"test_mask must be a boolean array of length {ratings.nnz}")
        n_test = int(test_mask.sum())
        if n_test == 0:
            raise DataError(f"the {method} split leaves the test set empty "
                            f"({ratings.nnz} ratings)")
        if n_test == ratings.nnz:
            raise DataError(f"the {method} split leaves the training set empty "
                            f"({ratings.nnz} ratings)")
        train = ratings.subset(~test_mask)
        test = ratings.subset(test_mask)
        return cls(train, test, _info(train, test, method, seed, fold))


def _info(train: Ratings, test: Ratings, method, seed, fold) -> SplitInfo:
    u_seen = train.user_counts()[test.user] > 0
    i_seen = train.item_counts()[test.item] > 0
    return SplitInfo(method, train.nnz, test.nnz, int((~u_seen).sum()),
                     int((~i_seen).sum()), int((~(u_seen & i_seen)).sum()), seed, fold)


# ---------------------------------------------------------------------------- helpers
def _rng(seed):
    if isinstance(seed, np.random.Generator):
        return seed, None
    if seed is None:
        return np.random.default_rng(), None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise DataError(f"seed must be an int, a numpy Generator or None, got {seed!r}")
    if seed < 0:
        raise DataError(f"seed must be non-negative, got {seed}")
    return np.random.default_rng(int(seed)), int(seed)


def _check_ratings(ratings):
    if not isinstance(ratings, Ratings):
        raise DataError(f"expected a Ratings, got {type(ratings).__name__}")


def _check_fraction(f, name="test_fraction"):
    if isinstance(f, (bool, np.bool_)) or not isinstance(f, (int, float, np.floating, np.integer)):
        raise DataError(f"{name} must be a number strictly between 0 and 1, got {f!r}")
    if not (0.0 < float(f) < 1.0):
        raise DataError(f"{name} must be strictly between 0 and 1, got {f}")
    return float(f)


def _check_count(k, name, minimum=1):
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {k!r}")
    return int(k)


def _rank_within_user(user: np.ndarray, secondary: np.ndarray, n_users: int):
    """Order rows by user, then by the row permutation ``secondary`` (a random permutation
    or a stable time order), and return ``order``, each sorted row's 0-based position
    within its user's run, and the per-user counts.

    Two stable integer argsorts: much faster than ``np.lexsort`` on millions of rows."""
    n = len(user)
    order = secondary[np.argsort(user[secondary], kind="stable")]
    counts = np.bincount(user, minlength=n_users)
    start = np.cumsum(counts) - counts
    pos = np.arange(n) - start[user[order]]
    return order, pos, counts


# ---------------------------------------------------------------------------- splits
def random_split(ratings: Ratings, test_fraction: float = 0.2, *, seed=0) -> Split:
    """Hold out ``round(test_fraction * n)`` rows chosen uniformly at random.

    Users or items whose rows all land in test are unseen in training (counted in
    ``info``); use :func:`user_split` to keep every user in training.
    """
    _check_ratings(ratings)
    f = _check_fraction(test_fraction)
    rng, s = _rng(seed)
    n = ratings.nnz
    if n < 2:
        raise DataError("a split needs at least 2 ratings")
    n_test = min(max(int(round(f * n)), 1), n - 1)
    mask = np.zeros(n, dtype=bool)
    mask[rng.permutation(n)[:n_test]] = True
    return Split.from_mask(ratings, mask, "random", s)


def user_split(ratings: Ratings, test_fraction: float | None = None, *,
               n_test: int | None = None, min_train: int = 1, seed=0) -> Split:
    """Per-user holdout: each user sends ``round(test_fraction * n_u)`` of its rows (or
    ``n_test`` rows, leave-k-out) to test, chosen at random.

    Every user keeps at least ``min_train`` training rows: a user with ``n_u`` rows sends
    at most ``n_u - min_train`` to test (users with ``n_u <= min_train`` send none), so no
    user is unseen in training when ``min_train >= 1``. Items can still be unseen.
    """
    _check_ratings(ratings)
    if (test_fraction is None) == (n_test is None):
        raise DataError("user_split needs exactly one of test_fraction= or n_test=")
    min_train = _check_count(min_train, "min_train", 0)
    rng, s = _rng(seed)
    order, pos, counts = _rank_within_user(ratings.user, rng.permutation(ratings.nnz),
                                           ratings.n_users)
    if test_fraction is not None:
        f = _check_fraction(test_fraction)
        k_u = np.floor(f * counts + 0.5).astype(np.int64)
    else:
        k_u = np.full(ratings.n_users, _check_count(n_test, "n_test"), dtype=np.int64)
    k_u = np.clip(k_u, 0, np.maximum(counts - min_train, 0))
    mask = np.zeros(ratings.nnz, dtype=bool)
    mask[order] = pos < k_u[ratings.user[order]]
    if not mask.any():
        raise DataError(f"the user split leaves the test set empty: no user has more than "
                        f"min_train={min_train} rating(s) to spare")
    return Split.from_mask(ratings, mask, "user", s)


def _to_unix_seconds(cutoff):
    """Unix seconds of a cutoff (an int, or a float with its sub-second part: timestamps
    may carry one)."""
    if isinstance(cutoff, (bool, np.bool_)):
        raise DataError(f"cutoff must be a time, got {cutoff!r}")
    if isinstance(cutoff, (int, np.integer)):
        return int(cutoff)
    if isinstance(cutoff, (float, np.floating)):
        if not np.isfinite(cutoff):
            raise DataError(f"cutoff must be finite, got {cutoff}")
        return int(cutoff) if float(cutoff).is_integer() else float(cutoff)
    try:
        ts = pd.Timestamp(cutoff)
    except (TypeError, ValueError) as exc:
        raise DataError(f"cannot read cutoff {cutoff!r} as a time: {exc}") from exc
    if ts is pd.NaT:
        raise DataError(f"cutoff {cutoff!r} is not a time")
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    ns = int(ts.value)  # nanoseconds since the epoch
    return ns // 10**9 if ns % 10**9 == 0 else ns / 1e9


def temporal_split(ratings: Ratings, *, last_k: int | None = None, cutoff=None,
                   test_fraction: float | None = None, min_train: int = 1) -> Split:
    """Split by time (needs ``ratings.timestamp``, unix seconds; sub-second times keep
    their order). Exactly one of:

    ``last_k``
        Per user, its ``last_k`` latest rows go to test (ties in time broken by row
        order, later rows count as later); each user keeps at least ``min_train``
        training rows, as in :func:`user_split`.
    ``cutoff``
        Global time cut: rows with ``timestamp >= cutoff`` go to test. ``cutoff`` is unix
        seconds or anything ``pandas.Timestamp`` reads (naive times are UTC).
    ``test_fraction``
        Global time cut at the quantile: the latest ``round(test_fraction * n)`` rows go
        to test (ties broken by row order), so every test row is at least as recent as
        every training row.

    Deterministic: no seed. Raises :class:`DataError` when there are no timestamps.
    """
    _check_ratings(ratings)
    if ratings.timestamp is None:
        raise DataError("temporal_split needs timestamps, but these ratings have none; "
                        "read them with their timestamp column (timestamp_col= in Python, "
                        "--timestamp-col in the CLI)")
    given = [x is not None for x in (last_k, cutoff, test_fraction)]
    if sum(given) != 1:
        raise DataError("temporal_split needs exactly one of last_k=, cutoff= or "
                        "test_fraction=")
    ts = ratings.timestamp
    n = ratings.nnz
    if last_k is not None:
        k = _check_count(last_k, "last_k")
        min_train = _check_count(min_train, "min_train", 0)
        order, pos, counts = _rank_within_user(ratings.user, np.argsort(ts, kind="stable"),
                                               ratings.n_users)
        u_sorted = ratings.user[order]
        from_end = counts[u_sorted] - 1 - pos
        k_u = np.clip(np.full(ratings.n_users, k), 0, np.maximum(counts - min_train, 0))
        mask = np.zeros(n, dtype=bool)
        mask[order] = from_end < k_u[u_sorted]
        if not mask.any():
            raise DataError(f"the temporal split leaves the test set empty: no user has "
                            f"more than min_train={min_train} rating(s) to spare")
        return Split.from_mask(ratings, mask, "temporal")
    if cutoff is not None:
        c = _to_unix_seconds(cutoff)
        mask = ts >= c
        if not mask.any() or mask.all():
            lo, hi = pd.Timestamp(int(ts.min()), unit="s"), pd.Timestamp(int(ts.max()), unit="s")
            side = "test" if not mask.any() else "training"
            raise DataError(f"cutoff {cutoff!r} leaves the {side} set empty; the timestamps "
                            f"run from {lo} to {hi} (UTC)")
        return Split.from_mask(ratings, mask, "temporal")
    f = _check_fraction(test_fraction)
    if n < 2:
        raise DataError("a split needs at least 2 ratings")
    n_test = min(max(int(round(f * n)), 1), n - 1)
    order = np.argsort(ts, kind="stable")
    mask = np.zeros(n, dtype=bool)
    mask[order[n - n_test:]] = True
    return Split.from_mask(ratings, mask, "temporal")


class KFold(Sequence):
    """``k`` train/test splits whose test sets partition the rows.

    A lazy sequence: ``len(folds) == k``, ``folds[i]`` builds the :class:`Split` whose test
    set is fold ``i``; iterate it as often as needed. ``assignment`` is the fold number of
    every row.
    """

    def __init__(self, ratings: Ratings, assignment: np.ndarray, k: int, seed: int | None):
        self.ratings = ratings
        assignment.setflags(write=False)
        self.assignment = assignment
        self.k = k
        self.seed = seed

    def __len__(self) -> int:
        return self.k

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self.k))]
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            raise TypeError(f"fold index must be an int, got {type(i).__name__}")
        if i < 0:
            i += self.k
        if not 0 <= i < self.k:
            raise IndexError(f"fold {i} out of range 0..{self.k - 1}")
        return Split.from_mask(self.ratings, self.assignment == i, "kfold", self.seed, int(i))

    def __repr__(self) -> str:
        return f"KFold(k={self.k}, n={self.ratings.nnz}, seed={self.seed})"


def kfold(ratings: Ratings, k: int = 5, *, seed=0, per_user: bool = False) -> KFold:
    """K-fold cross-validation splits.

    ``per_user=False`` assigns a random permutation of the rows to folds round-robin
    (fold sizes differ by at most one). ``per_user=True`` spreads every user's rows evenly
    over the folds (its rows in random order, starting at a random fold), so each user's
    count in any fold is ``floor(n_u / k)`` or ``ceil(n_u / k)``, and a user is unseen in
    the training set of a fold only when it has a single row.
    """
    _check_ratings(ratings)
    k = _check_count(k, "k", 2)
    n = ratings.nnz
    if k > n:
        raise DataError(f"k={k} folds need at least {k} ratings, got {n}")
    rng, s = _rng(seed)
    assignment = np.empty(n, dtype=np.int32)
    if per_user:
        order, pos, _ = _rank_within_user(ratings.user, rng.permutation(n), ratings.n_users)
        offset = rng.integers(0, k, size=ratings.n_users)
        assignment[order] = (pos + offset[ratings.user[order]]) % k
    else:
        assignment[rng.permutation(n)] = np.arange(n) % k
    return KFold(ratings, assignment, k, s)
