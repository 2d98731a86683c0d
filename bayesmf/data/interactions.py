"""Implicit feedback: the :class:`Interactions` container.

Implicit data are event logs -- plays, clicks, watches -- given as rows
``(user, item[, count | weight][, timestamp])``. An :class:`Interactions` aggregates the
events of each ``(user, item)`` pair into one stored pair:

* ``count``: the number of events of the pair, or the sum of the ``count`` column when
  one is given (e.g. a play-count log with several rows per pair);
* ``weight``: the sum of the ``weight`` column when one is given (watch time, revenue),
  ``None`` otherwise;
* ``timestamp``: the **latest** timestamp of the pair's events (unix seconds), when
  timestamps are given;
* ``n_events``: the number of raw event rows that formed the pair.

The *value* of a pair (:attr:`Interactions.value`) is its ``weight`` when weights were
given and its ``count`` otherwise; :meth:`~Interactions.confidence`,
:meth:`~Interactions.binarize` and :meth:`~Interactions.to_csr` use it.

Pairs are stored sorted by ``(user index, item index)``, so the stored order *is* the CSR
order: ``to_csr().data`` lines up with :attr:`~Interactions.user`/``item``/``count``, and
arrays returned by :meth:`~Interactions.confidence` can be passed straight back to
:meth:`~Interactions.to_csr`.

Ids go through :class:`~bayesmf.data.vocab.Vocabulary` exactly as for
:class:`~bayesmf.data.ratings.Ratings`: they stay as written (integers stay integers, text
stays text; ``id_type=`` applies :func:`~bayesmf.data.vocab.parse_ids`).

Validation (every failure is a :class:`~bayesmf.errors.DataError` with a one-line message):
empty input, missing columns, missing (NaN/None) ids, non-numeric / NaN / infinite /
negative counts or weights, NaN timestamps, mismatched lengths. Pairs whose aggregated
value is 0 carry no positive signal and are dropped (``drop_zeros=False`` keeps them);
a user or item left with no pair is then not in an inferred vocabulary (no empty users;
a vocabulary passed in is kept whole, and ``describe()`` counts its ids without pairs).

Confidence (Hu, Koren & Volinsky 2008, "Collaborative Filtering for Implicit Feedback
Datasets"): the preference ``p_ui = 1[r_ui > 0]`` is weighted by

    linear:  c_ui = 1 + alpha * r_ui
    log:     c_ui = 1 + alpha * log(1 + r_ui / eps)

for observed pairs, and ``c_ui = 1`` for every unobserved pair.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bayesmf.data.filters import kcore_mask
from bayesmf.data.ratings import (Ratings, _numeric_values, _PairMatrix, datetime_seconds,
                                  whole_or_float_seconds)
from bayesmf.data.split import _check_fraction, _rank_within_user, _rng
from bayesmf.data.vocab import Vocabulary, parse_ids
from bayesmf.errors import DataError

__all__ = ["Interactions", "InteractionSplit"]


def _check_ids(raw, name: str) -> None:
    """Reject missing ids (NaN/None/NaT) with a clear message before encoding."""
    miss = pd.isna(raw.to_numpy() if isinstance(raw, (pd.Series, pd.Index)) else
                   np.asarray(raw, dtype=object))
    if np.ndim(miss) != 1:
        raise DataError(f"{name} ids must be one-dimensional, got shape {np.shape(miss)}")
    if miss.any():
        pos = np.flatnonzero(miss)
        raise DataError(f"{int(miss.sum())} missing (NaN/None) {name} id(s), first at row(s) "
                        f"{pos[:5].tolist()}; drop those events first")


def _nonneg_values(values, name: str, n: int) -> np.ndarray:
    arr = _numeric_values(values, name)
    if len(arr) != n:
        raise DataError(f"length mismatch: {n} events but {len(arr)} {name} values")
    neg = arr < 0
    if neg.any():
        pos = np.flatnonzero(neg)
        raise DataError(f"{int(neg.sum())} negative {name} value(s) (e.g. {arr[pos[0]]:g} at "
                        f"row {int(pos[0])}); implicit {name}s must be >= 0")
    return arr


def _timestamps(ts, n: int) -> np.ndarray:
    """Timestamps as unix seconds (datetimes, tz-aware or naive-UTC, or numbers): int64,
    or float64 when some have sub-second parts
    (:func:`~bayesmf.data.ratings.datetime_seconds`)."""
    if isinstance(ts, pd.Series) and (pd.api.types.is_datetime64_any_dtype(ts.dtype)):
        if ts.isna().any():
            raise DataError(f"{int(ts.isna().sum())} timestamp(s) are missing (NaT)")
        t = pd.to_datetime(ts, utc=True).dt.tz_convert(None)
        return datetime_seconds(t.to_numpy())
    arr = ts.to_numpy() if isinstance(ts, (pd.Series, pd.Index)) else np.asarray(ts)
    if arr.ndim != 1 or len(arr) != n:
        raise DataError(f"timestamp must be a 1-D array with one value per event ({n}), got "
                        f"shape {arr.shape}")
    if arr.dtype.kind == "M":
        if np.isnat(arr).any():
            raise DataError(f"{int(np.isnat(arr).sum())} timestamp(s) are missing (NaT)")
        return datetime_seconds(arr)
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise DataError(f"timestamps must be numbers (unix seconds) or datetimes, got dtype "
                        f"{arr.dtype}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise DataError(f"{int((~np.isfinite(arr)).sum())} timestamp(s) are NaN or infinite")
    if arr.dtype.kind in "fu" and len(arr) and (arr.max() >= 2.0 ** 63
                                                 or arr.min() < -(2.0 ** 63)):
        raise DataError(f"timestamps must fit in int64 (unix seconds); got values up to "
                        f"{float(np.abs(arr).max()):.3g}")
    return whole_or_float_seconds(arr)


class Interactions(_PairMatrix):
    """Aggregated implicit feedback: one stored pair per ``(user, item)`` with its event
    count, optional summed weight and latest timestamp, plus the user/item vocabularies.

    Build with :meth:`from_dataframe`, :meth:`from_arrays` or :meth:`from_ratings`.
    Instances are immutable (arrays are read-only); every transform returns a new one.

    Attributes
    ----------
    user, item : int32 arrays
        Indices into :attr:`users` / :attr:`items`, sorted by ``(user, item)``.
    count : float64 array
        Events per pair (or summed ``count`` column).
    weight : float64 array or None
        Summed ``weight`` column.
    timestamp : int64 (float64 with sub-second times) array or None
        Latest event time per pair (unix seconds).
    n_events : int64 array
        Raw event rows per pair.
    users, items : Vocabulary
    """

    __slots__ = ("user", "item", "count", "weight", "timestamp", "n_events", "users",
                 "items", "_csr")

    def __init__(self, user, item, count, users: Vocabulary, items: Vocabulary, *,
                 weight=None, timestamp=None, n_events=None):
        user = np.asarray(user)
        item = np.asarray(item)
        for name, a, voc in (("user", user, users), ("item", item, items)):
            if a.ndim != 1 or a.dtype.kind not in "iu":
                raise DataError(f"{name} indices must be a 1-D integer array")
            if a.size and (a.min() < 0 or a.max() >= len(voc)):
                raise DataError(f"{name} indices fall outside the vocabulary 0..{len(voc) - 1}")
        n = len(user)
        if n == 0:
            raise DataError("no interactions: the input is empty")
        count = _nonneg_values(count, "count", n)
        if len(item) != n:
            raise DataError(f"length mismatch: {n} users, {len(item)} items")
        weight = None if weight is None else _nonneg_values(weight, "weight", n)
        timestamp = None if timestamp is None else _timestamps(timestamp, n)
        n_events = (np.ones(n, np.int64) if n_events is None
                    else np.asarray(n_events, dtype=np.int64))
        key = user.astype(np.int64) * np.int64(max(len(items), 1)) + item.astype(np.int64)
        if n > 1 and not (np.diff(key) > 0).all():
            raise DataError("Interactions pairs must be distinct and sorted by (user, item); "
                            "use Interactions.from_arrays to aggregate raw events")
        arrays = {"user": user.astype(np.int32), "item": item.astype(np.int32),
                  "count": np.array(count, np.float64), "n_events": n_events.copy(),
                  "weight": None if weight is None else np.array(weight, np.float64),
                  "timestamp": None if timestamp is None else timestamp.copy()}
        for k, a in arrays.items():
            if a is not None:
                a.setflags(write=False)
            object.__setattr__(self, k, a)
        object.__setattr__(self, "users", users)
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "_csr", None)

    def __setattr__(self, key, value):
        raise AttributeError("Interactions is immutable; build a new one")

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_arrays(cls, users, items, counts=None, timestamps=None, *, weights=None,
                    user_vocab: Vocabulary | None = None, item_vocab: Vocabulary | None = None,
                    unknown: str = "raise", id_type: str | None = None,
                    drop_zeros: bool = True) -> "Interactions":
        """Aggregate raw events ``(users[k], items[k][, counts[k]][, weights[k]]
        [, timestamps[k]])``.

        Per ``(user, item)`` pair: ``count = sum(counts)`` over its events (the number of
        events when ``counts`` is ``None``), ``weight = sum(weights)``, ``timestamp =
        max(timestamps)``. ``user_vocab``/``item_vocab`` encode with existing
        vocabularies (``unknown="raise"`` rejects other ids, ``"extend"`` appends them);
        otherwise the vocabularies are the sorted distinct ids. ``id_type`` (``None``: ids
        as written) applies :func:`~bayesmf.data.vocab.parse_ids`. ``drop_zeros`` drops
        pairs whose aggregated value (weight if given, else count) is 0.
        """
        if unknown not in ("raise", "extend"):
            raise DataError(f"unknown= must be 'raise' or 'extend', got {unknown!r}")
        n = len(users)
        if n == 0:
            raise DataError("no interactions: the input is empty")
        if len(items) != n:
            raise DataError(f"length mismatch: {n} users but {len(items)} items")
        _check_ids(users, "user")
        _check_ids(items, "item")
        c = np.ones(n) if counts is None else _nonneg_values(counts, "count", n)
        w = None if weights is None else _nonneg_values(weights, "weight", n)
        ts = None if timestamps is None else _timestamps(timestamps, n)
        if id_type is not None:
            users = parse_ids(users, id_type, "user")
            items = parse_ids(items, id_type, "item")
        uv = _vocab_for(users, user_vocab, "user", unknown)
        iv = _vocab_for(items, item_vocab, "item", unknown)
        u = uv.encode(users).astype(np.int64)
        i = iv.encode(items).astype(np.int64)
        key = u * np.int64(max(len(iv), 1)) + i
        order = np.argsort(key, kind="stable")
        ks = key[order]
        starts = np.concatenate([[True], ks[1:] != ks[:-1]])
        first = np.flatnonzero(starts)
        agg_c = np.add.reduceat(c[order], first)
        agg_w = None if w is None else np.add.reduceat(w[order], first)
        agg_t = None if ts is None else np.maximum.reduceat(ts[order], first)
        n_ev = np.diff(np.append(first, n))
        uu, ii = u[order][first], i[order][first]
        if drop_zeros:
            keep = (agg_w if agg_w is not None else agg_c) > 0
            if not keep.any():
                raise DataError(f"no interactions: all {len(keep)} (user, item) pair(s) have "
                                "value 0, and a pair with value 0 is no interaction (in "
                                "Python, Interactions.from_arrays(..., drop_zeros=False) "
                                "keeps them as listed pairs)")
            if not keep.all():
                uu, ii, agg_c, n_ev = uu[keep], ii[keep], agg_c[keep], n_ev[keep]
                agg_w = None if agg_w is None else agg_w[keep]
                agg_t = None if agg_t is None else agg_t[keep]
        if drop_zeros:  # an inferred vocabulary lists the ids that kept a pair
            uu, uv = _drop_unused(uu, uv, len(uv), user_vocab is None)
            ii, iv = _drop_unused(ii, iv, len(iv), item_vocab is None)
        return cls(uu, ii, agg_c, uv, iv, weight=agg_w, timestamp=agg_t, n_events=n_ev)

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, user_col: str = "user", item_col: str = "item",
                       count_col: str | None = "auto", weight_col: str | None = "auto",
                       timestamp_col: str | None = "auto", **kwargs) -> "Interactions":
        """From an event-log DataFrame. ``"auto"`` columns are used when a column named
        ``count`` / ``weight`` / ``timestamp`` exists; ``None`` ignores them; a named column
        must exist. Other keyword arguments go to :meth:`from_arrays`."""
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
        missing = [c for c in (user_col, item_col) if c not in df.columns]
        cols = {}
        for role, col in (("count", count_col), ("weight", weight_col),
                          ("timestamp", timestamp_col)):
            if col == "auto":
                col = role if role in df.columns else None
            elif col is not None and col not in df.columns:
                missing.append(col)
            cols[role] = col
        if missing:
            raise DataError(f"missing column(s) {missing}; the frame has {list(df.columns)}. "
                            "Pass user_col=/item_col=/count_col=/weight_col=/timestamp_col=")
        if len(df) == 0:
            raise DataError("no interactions: the input is empty")
        get = {r: (df[c] if c is not None else None) for r, c in cols.items()}
        return cls.from_arrays(df[user_col], df[item_col], get["count"], get["timestamp"],
                               weights=get["weight"], **kwargs)

    @classmethod
    def from_ratings(cls, ratings: Ratings, threshold: float) -> "Interactions":
        """Implicit positives from explicit ratings: the pairs with ``rating >= threshold``
        become interactions with ``count = 1`` (timestamps kept). The vocabularies are the
        ratings' (users/items without a positive stay in them with no interactions), so
        indices stay aligned with ``ratings``."""
        if not isinstance(ratings, Ratings):
            raise DataError(f"from_ratings expects a Ratings, got {type(ratings).__name__}")
        t = _finite(threshold, "threshold")
        keep = ratings.rating >= t
        if not keep.any():
            raise DataError(f"no rating is >= threshold {t:g} (ratings range "
                            f"{ratings.rating.min():g}..{ratings.rating.max():g})")
        u, i = ratings.user[keep], ratings.item[keep]
        ts = None if ratings.timestamp is None else ratings.timestamp[keep]
        order = np.lexsort((i, u))
        return cls(u[order], i[order], np.ones(len(order)), ratings.users, ratings.items,
                   timestamp=None if ts is None else ts[order])

    # ----------------------------------------------------------------- basic facts
    @property
    def density(self) -> float:
        """``nnz / (users * items)``."""
        return self.nnz / (float(self.n_users) * float(self.n_items))

    @property
    def value(self) -> np.ndarray:
        """Per pair: ``weight`` when weights were given, else ``count``."""
        return self.weight if self.weight is not None else self.count

    def user_counts(self) -> np.ndarray:
        """Interacted items per user index (length ``n_users``)."""
        return np.bincount(self.user, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        """Interacting users per item index (length ``n_items``)."""
        return np.bincount(self.item, minlength=self.n_items)

    def __repr__(self) -> str:
        return (f"Interactions(pairs={self.nnz}, events={int(self.n_events.sum())}, "
                f"users={self.n_users}, items={self.n_items}, density={self.density:.4g})")

    # ----------------------------------------------------------------- CSR access
    @property
    def indptr(self) -> np.ndarray:
        """CSR row pointer: user ``u``'s pairs are rows ``indptr[u]:indptr[u + 1]``."""
        return np.concatenate([[0], np.cumsum(self.user_counts())]).astype(np.int64)

    def to_csr(self, values=None) -> sp.csr_matrix:
        """users x items CSR. ``values=None`` stores :attr:`value` (cached); an array of
        length ``nnz`` in the stored order (e.g. :meth:`confidence`) is stored instead;
        ``"count"``, ``"weight"``, ``"binary"`` (ones) name a column."""
        if values is None and self._csr is not None:
            return self._csr
        if values is None:
            data = self.value
        elif isinstance(values, str):
            if values not in ("count", "weight", "binary"):
                raise DataError(f"values= must be 'count', 'weight', 'binary' or an array, "
                                f"got {values!r}")
            if values == "weight" and self.weight is None:
                raise DataError("these interactions have no weights")
            data = {"count": self.count, "weight": self.weight,
                    "binary": np.ones(self.nnz)}[values]
        else:
            data = np.asarray(values, dtype=np.float64)
            if data.shape != (self.nnz,):
                raise DataError(f"values must have one entry per pair ({self.nnz}), got "
                                f"shape {data.shape}")
        m = sp.csr_matrix((np.array(data, np.float64), self.item.copy(), self.indptr),
                          shape=self.shape)
        if values is None:
            object.__setattr__(self, "_csr", m)
        return m

    def user_items(self, u: int) -> tuple[np.ndarray, np.ndarray]:
        """``(item indices, counts)`` of user index ``u`` (items ascending)."""
        if isinstance(u, (bool, np.bool_)) or not isinstance(u, (int, np.integer)) \
                or not 0 <= u < self.n_users:
            raise DataError(f"user index must be an integer in 0..{self.n_users - 1}, got {u!r}")
        lo, hi = np.searchsorted(self.user, [u, u + 1])
        return self.item[lo:hi], self.count[lo:hi]

    # ----------------------------------------------------------------- transforms
    def confidence(self, alpha: float = 1.0, kind: str = "linear",
                   eps: float = 1.0) -> np.ndarray:
        """Hu-Koren-Volinsky confidence per stored pair (in stored/CSR order):

        * ``kind="linear"``: ``c_ui = 1 + alpha * r_ui``
        * ``kind="log"``:    ``c_ui = 1 + alpha * log(1 + r_ui / eps)``

        with ``r_ui`` = :attr:`value`. Unobserved pairs have ``c_ui = 1`` implicitly.
        ``alpha >= 0`` and ``eps > 0`` must be finite. ``to_csr(confidence(...))`` gives
        the sparse confidence matrix.
        """
        a = _finite(alpha, "alpha")
        if a < 0:
            raise DataError(f"alpha must be >= 0, got {alpha!r}")
        if kind not in TRANSFORMS:
            raise DataError(f"kind must be 'linear' or 'log', got {kind!r}")
        e = _finite(eps, "eps")
        if e <= 0:
            raise DataError(f"eps must be > 0, got {eps!r}")
        return confidence(self.value, a, kind, e)

    def to_ratings(self) -> Ratings:
        """The stored pairs with their :attr:`value` (count or weight) as a
        :class:`Ratings` (same vocabularies and timestamps): the training input of the
        implicit likelihood (``BayesMF(likelihood="implicit").fit(interactions)`` calls
        it)."""
        return Ratings.from_indices(self.user, self.item, self.value, self.users, self.items,
                                    timestamp=self.timestamp)

    def binarize(self, threshold: float = 1.0) -> Ratings:
        """0/1 labels on the stored pairs as a :class:`Ratings` (for the Bernoulli
        likelihoods): ``y_ui = 1[value_ui >= threshold]``; same vocabularies and
        timestamps. Unobserved pairs are not included (see
        :class:`~bayesmf.data.negatives.NegativeSampler` for sampled negatives)."""
        t = _finite(threshold, "threshold")
        y = (self.value >= t).astype(np.float64)
        return Ratings.from_indices(self.user, self.item, y, self.users, self.items,
                                    timestamp=self.timestamp)

    def to_dataframe(self, raw_ids: bool = True) -> pd.DataFrame:
        """Columns ``user, item, count, n_events[, weight][, timestamp]``."""
        d = {"user": self.users.decode(self.user) if raw_ids else self.user,
             "item": self.items.decode(self.item) if raw_ids else self.item,
             "count": self.count, "n_events": self.n_events}
        if self.weight is not None:
            d["weight"] = self.weight
        if self.timestamp is not None:
            d["timestamp"] = self.timestamp
        return pd.DataFrame(d)

    def subset(self, mask_or_index, users: Vocabulary | None = None,
               items: Vocabulary | None = None) -> "Interactions":
        """Pairs selected by a boolean mask or an index array; vocabularies kept."""
        sel = np.asarray(mask_or_index)
        if sel.dtype == bool and sel.shape != (self.nnz,):
            raise DataError("boolean mask length differs from the number of pairs")
        if sel.dtype != bool:
            sel = np.sort(sel)
        if not np.asarray(self.user[sel]).size:
            raise DataError("the selection is empty")
        return Interactions(self.user[sel], self.item[sel], self.count[sel], self.users,
                            self.items, weight=None if self.weight is None else self.weight[sel],
                            timestamp=None if self.timestamp is None else self.timestamp[sel],
                            n_events=self.n_events[sel])

    def _compact(self) -> "Interactions":
        """Drop vocabulary entries without pairs (relative order kept)."""
        u, uv = _drop_unused(self.user, self.users, self.n_users, True)
        i, iv = _drop_unused(self.item, self.items, self.n_items, True)
        if uv is self.users and iv is self.items:
            return self
        return Interactions(u, i, self.count, uv, iv, weight=self.weight,
                            timestamp=self.timestamp, n_events=self.n_events)

    # ----------------------------------------------------------------- filters
    def kcore(self, min_user: int = 1, min_item: int = 1, *,
              compact: bool = True) -> "Interactions":
        """The ``(min_user, min_item)``-core: the largest subset of pairs in which every
        user has at least ``min_user`` interacted items and every item at least
        ``min_item`` interacting users, found by deleting users/items below the thresholds
        until nothing changes (a fixed point; :func:`bayesmf.data.filters.kcore_mask`).
        ``compact=True`` keeps only the surviving ids in the vocabularies."""
        keep, _ = kcore_mask(self, min_user, min_item)
        if not keep.any():
            raise DataError(f"no interaction survives the k-core with min_user={min_user}, "
                            f"min_item={min_item} (input: {self.nnz} pairs)")
        out = self if keep.all() else self.subset(keep)
        return out._compact() if compact else out

    # ----------------------------------------------------------------- splits
    def leave_one_out(self, *, by: str = "auto", seed=0) -> "InteractionSplit":
        """Per user, one pair goes to test: the latest by timestamp (``by="time"``, ties
        broken at random with ``seed``) or one chosen at random (``by="random"``);
        ``by="auto"`` is ``"time"`` when timestamps exist. Users with a single pair keep
        it in train. See :class:`InteractionSplit` for the vocabularies."""
        if by == "auto":
            by = "time" if self.timestamp is not None else "random"
        if by not in ("time", "random"):
            raise DataError(f"by= must be 'auto', 'time' or 'random', got {by!r}")
        if by == "time" and self.timestamp is None:
            raise DataError("leave_one_out(by='time') needs timestamps, but these "
                            "interactions have none")
        rng, s = _rng(seed)
        perm = rng.permutation(self.nnz)
        secondary = perm if by == "random" else perm[np.argsort(self.timestamp[perm],
                                                                kind="stable")]
        order, pos, counts = _rank_within_user(self.user, secondary, self.n_users)
        u_sorted = self.user[order]
        # the last in the secondary order (latest in time, or a random one)
        pick = (pos == counts[u_sorted] - 1) & (counts[u_sorted] >= 2)
        mask = np.zeros(self.nnz, bool)
        mask[order] = pick
        return self._split(mask, f"leave_one_out_{by}", s)

    def fraction_split(self, test_fraction: float = 0.2, *, seed=0) -> "InteractionSplit":
        """Per user, ``round(test_fraction * n_u)`` random pairs go to test, capped at
        ``n_u - 1`` so every user keeps a training pair (single-pair users stay in train).
        """
        f = _check_fraction(test_fraction)
        rng, s = _rng(seed)
        order, pos, counts = _rank_within_user(self.user, rng.permutation(self.nnz),
                                               self.n_users)
        k_u = np.minimum(np.floor(f * counts + 0.5).astype(np.int64),
                         np.maximum(counts - 1, 0))
        mask = np.zeros(self.nnz, bool)
        mask[order] = pos < k_u[self.user[order]]
        return self._split(mask, "fraction", s)

    def _split(self, test_mask: np.ndarray, method: str, seed) -> "InteractionSplit":
        if not test_mask.any():
            raise DataError(f"the {method} split leaves the test set empty: no user has more "
                            "than one interaction")
        train = self.subset(~test_mask)._compact()
        te = self.subset(test_mask)
        u, ku = train.users.encode(te.users.decode(te.user), unknown="mask")
        i, ki = train.items.encode(te.items.decode(te.item), unknown="mask")
        keep = ku & ki
        if not keep.any():
            raise DataError(f"the {method} split leaves no test pair whose user and item "
                            "both occur in train")
        order = np.lexsort((i[keep], u[keep]))
        test = Interactions(u[keep][order], i[keep][order], te.count[keep][order],
                            train.users, train.items,
                            weight=None if te.weight is None else te.weight[keep][order],
                            timestamp=None if te.timestamp is None else te.timestamp[keep][order],
                            n_events=te.n_events[keep][order])
        return InteractionSplit(train, test, method, seed, int((~keep).sum()))

    # ----------------------------------------------------------------- summary
    def describe(self) -> dict:
        """Counts, density, value statistics and per-user/item quantiles as a dict."""
        uc, ic = self.user_counts(), self.item_counts()
        q = [0.0, 0.25, 0.5, 0.75, 1.0]
        names = ["min", "q25", "median", "q75", "max"]
        return {
            "pairs": self.nnz,
            "events": int(self.n_events.sum()),
            "users": self.n_users,
            "items": self.n_items,
            "users_with_interactions": int((uc > 0).sum()),
            "items_with_interactions": int((ic > 0).sum()),
            "density": self.density,
            "sparsity": 1.0 - self.density,
            "count_total": float(self.count.sum()),
            "count_mean": float(self.count.mean()),
            "count_max": float(self.count.max()),
            "weight_total": None if self.weight is None else float(self.weight.sum()),
            "pairs_per_user": dict(zip(names, map(float, np.quantile(uc[uc > 0], q)))),
            "pairs_per_item": dict(zip(names, map(float, np.quantile(ic[ic > 0], q)))),
            "has_weight": self.weight is not None,
            "has_timestamp": self.timestamp is not None,
        }


@dataclass(frozen=True, repr=False)
class InteractionSplit:
    """A train/test pair of :class:`Interactions` on the **train** vocabularies.

    The train vocabularies hold exactly the users/items with a training pair; test pairs
    whose user or item has no training pair cannot be scored and are dropped (counted in
    ``test_dropped_unseen``), so every test user and item is in the train vocabularies.
    Unpacks like a tuple: ``train, test = split``.
    """

    train: Interactions
    test: Interactions
    method: str
    seed: int | None
    test_dropped_unseen: int

    def __iter__(self) -> Iterator[Interactions]:
        yield self.train
        yield self.test

    def __repr__(self) -> str:
        return (f"InteractionSplit({self.method}: train={self.train.nnz}, "
                f"test={self.test.nnz}, dropped unseen={self.test_dropped_unseen})")


#: confidence transforms ``f`` of ``c = 1 + alpha * f(r)``
TRANSFORMS = ("linear", "log")


def confidence(r, alpha: float, transform: str, eps: float) -> np.ndarray:
    """Hu-Koren-Volinsky confidence ``c = 1 + alpha * f(r)`` with ``f(r) = r`` (``"linear"``)
    or ``log(1 + r/eps)`` (``"log"``): the one implementation, used by
    :meth:`Interactions.confidence` and the implicit likelihood
    (:class:`~bayesmf.model.likelihoods.ImplicitGaussian`). Arguments are not checked."""
    r = np.asarray(r, np.float64)
    if transform == "linear":
        return 1.0 + alpha * r
    return 1.0 + alpha * np.log1p(r / eps)


def _finite(x, name: str) -> float:
    if isinstance(x, (bool, np.bool_)):
        raise DataError(f"{name} must be a number, got {x!r}")
    try:
        v = float(x)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a number, got {x!r}") from None
    if not np.isfinite(v):
        raise DataError(f"{name} must be finite, got {x!r}")
    return v


def _drop_unused(idx, vocab, n, inferred):
    """``(idx, vocab)`` without the ids no pair uses, when the vocabulary was inferred from
    the events (an id all of whose events have value 0 has no interaction: it is not a
    user or item of the data); a given vocabulary is kept as it is."""
    used = np.bincount(idx, minlength=n) > 0
    if not inferred or used.all():
        return idx, vocab
    return (np.cumsum(used) - 1)[idx], Vocabulary(vocab.ids[used], vocab.name)


def _vocab_for(raw, vocab, name, unknown):
    if vocab is None:
        return Vocabulary.from_raw(raw, name)
    return vocab.extend(raw) if unknown == "extend" else vocab
