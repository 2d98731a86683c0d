"""The ratings container: immutable COO arrays plus the user and item vocabularies.

A :class:`Ratings` holds the observed entries only -- ``(user[n], item[n], rating[n])``
with optional ``timestamp[n]`` -- never a dense users x items matrix. Indices are
``int32`` positions in :attr:`Ratings.users` / :attr:`Ratings.items`; ratings are
``float64`` (cast to float32 by the inference code).

Validation happens once, in the constructors: NaN/inf, non-numeric or too large
(``|r| >= 1e15``, see :data:`MAX_ABS_RATING`) ratings, duplicate
``(user, item)`` pairs (error by default; ``duplicates="last"|"first"|"mean"`` resolve
them), empty input, mismatched lengths, indices outside the vocabularies, negative values
where counts are expected (``counts=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bayesmf.data.vocab import Vocabulary, parse_ids
from bayesmf.errors import DataError

__all__ = ["Ratings", "RatingScale", "MAX_ABS_RATING", "raw_pairs"]

_DUP_POLICIES = ("raise", "last", "first", "mean")

#: Largest accepted rating magnitude (exclusive). The inference code works in float32 and
#: forms sums of squared ratings and residuals over all ratings: with ``|r| < 1e15`` and up
#: to 1e8 ratings, ``sum r^2 < 1e38`` stays below float32's maximum (3.4e38), and every
#: float64 statistic is far from overflow. Larger values (e.g. ratings x 1e300) are
#: rejected at validation with a message to rescale, instead of overflowing later.
MAX_ABS_RATING = 1e15


@dataclass(frozen=True)
class RatingScale:
    """Observed rating range: ``min``, ``max`` and the distinct levels when there are few
    (``levels is None`` for continuous-valued data with more than 50 distinct values)."""

    min: float
    max: float
    levels: tuple | None = None

    @property
    def step(self) -> float | None:
        if self.levels is None or len(self.levels) < 2:
            return None
        d = np.diff(np.asarray(self.levels, float))
        return float(d.min())

    def clip(self, x):
        return np.clip(x, self.min, self.max)


def _numeric_values(values, name: str = "rating") -> np.ndarray:
    arr = values.to_numpy() if isinstance(values, (pd.Series, pd.Index)) else np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name} values must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "b":
        raise DataError(f"{name} values must be numeric, got booleans; for thumbs / clicks "
                        f"give them as 0/1 numbers (e.g. df[{name!r}].astype(int)) with "
                        "likelihood='bernoulli-logit' or 'bernoulli-probit'")
    if arr.dtype.kind == "c":
        raise DataError(f"{name} values must be real numbers, got dtype {arr.dtype}")
    if arr.dtype.kind not in "iuf":
        try:
            conv = pd.to_numeric(pd.Series(arr), errors="coerce").to_numpy(np.float64)
        except (TypeError, ValueError):
            conv = None
        if conv is None or np.isnan(conv).any():
            bad = arr[:0] if conv is None else arr[np.isnan(conv)][:5]
            raise DataError(
                f"{name} values must be numeric; got dtype {arr.dtype} with non-numeric "
                f"entries such as {bad.tolist()!r}"
            )
        arr = conv
    arr = arr.astype(np.float64, copy=False)
    bad = ~np.isfinite(arr)
    if bad.any():
        pos = np.flatnonzero(bad)
        raise DataError(
            f"{int(bad.sum())} {name} value(s) are NaN or infinite (first at row(s) "
            f"{pos[:5].tolist()}); drop or impute them before fitting"
        )
    big = np.abs(arr) >= MAX_ABS_RATING
    if big.any():
        pos = np.flatnonzero(big)
        raise DataError(
            f"{int(big.sum())} {name} value(s) are too large (e.g. {arr[pos[0]]:g} at row "
            f"{int(pos[0])}): {name}s must be finite with |r| < {MAX_ABS_RATING:g}, or the "
            f"model's sums of squares overflow float32/float64; rescale them (e.g. divide "
            f"by {10.0 ** np.ceil(np.log10(np.abs(arr).max())):g} or take logs)"
        )
    return arr


class _PairMatrix:
    """Shape facts of a users x items container of stored pairs (``user``, ``users``,
    ``items``): shared by :class:`Ratings` and
    :class:`~bayesmf.data.interactions.Interactions`."""

    __slots__ = ()

    @property
    def nnz(self) -> int:
        """Number of stored (user, item) pairs."""
        return len(self.user)

    def __len__(self) -> int:
        return self.nnz

    @property
    def n_users(self) -> int:
        return len(self.users)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_users, self.n_items)



def datetime_seconds(t) -> np.ndarray:
    """Unix seconds of a ``datetime64`` array: int64 when every time is a whole second,
    else float64 (sub-second times keep their order: a temporal split or leave-last-out
    must not see two events of one second as a tie)."""
    t = np.asarray(t)
    sec = t.astype("datetime64[s]").astype(np.int64)
    if len(sec) and np.abs(sec).max() >= 9_000_000_000:  # beyond datetime64[ns] (2262)
        return sec
    ns = t.astype("datetime64[ns]").astype(np.int64)
    if np.all(ns % 1_000_000_000 == 0):
        return ns // 1_000_000_000
    return ns / 1e9


def whole_or_float_seconds(t) -> np.ndarray:
    """Numeric unix seconds as int64 when they are whole, else float64 (a copy)."""
    t = np.asarray(t)
    if t.dtype.kind == "f" and not np.all(t == np.floor(t)):
        return t.astype(np.float64, copy=True)
    return t.astype(np.int64, copy=True)

class Ratings(_PairMatrix):
    """Observed (user, item, rating[, timestamp]) entries with their vocabularies.

    Build with :meth:`from_dataframe`, :meth:`from_arrays`, :meth:`from_sparse` or
    :meth:`from_indices`. Instances are immutable (arrays are read-only).
    """

    __slots__ = ("user", "item", "rating", "timestamp", "users", "items", "_csr", "_csc")

    def __init__(self, user, item, rating, users: Vocabulary, items: Vocabulary,
                 timestamp=None, *, _validated: bool = False):
        if not _validated:
            user, item, rating, timestamp = self._check_arrays(
                user, item, rating, timestamp, users, items)
            _resolve_duplicates(user, item, rating, timestamp, "raise", users, items)
        for a in (user, item, rating) + ((timestamp,) if timestamp is not None else ()):
            a.setflags(write=False)
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "item", item)
        object.__setattr__(self, "rating", rating)
        object.__setattr__(self, "timestamp", timestamp)
        object.__setattr__(self, "users", users)
        object.__setattr__(self, "items", items)
        object.__setattr__(self, "_csr", None)
        object.__setattr__(self, "_csc", None)

    def __setattr__(self, key, value):
        raise AttributeError("Ratings is immutable; build a new one")

    @staticmethod
    def _check_arrays(user, item, rating, timestamp, users, items):
        user = np.asarray(user)
        item = np.asarray(item)
        for name, a, voc in (("user", user, users), ("item", item, items)):
            if a.ndim != 1 or a.dtype.kind not in "iu":
                raise DataError(f"{name} indices must be a 1-D integer array, got "
                                f"{a.dtype} with shape {a.shape}")
            if a.size and (a.min() < 0 or a.max() >= len(voc)):
                raise DataError(f"{name} indices fall outside the vocabulary 0..{len(voc) - 1}")
        rating = _numeric_values(rating)
        n = len(rating)
        if n == 0:
            raise DataError("no ratings: the input is empty")
        if len(user) != n or len(item) != n:
            raise DataError(f"length mismatch: {len(user)} users, {len(item)} items, {n} ratings")
        if timestamp is not None:
            timestamp = np.asarray(timestamp)
            if timestamp.dtype.kind == "M":
                if np.isnat(timestamp).any():
                    raise DataError(f"{int(np.isnat(timestamp).sum())} timestamp(s) are NaT")
                timestamp = datetime_seconds(timestamp)
            if timestamp.ndim != 1 or len(timestamp) != n or timestamp.dtype.kind not in "iuf":
                raise DataError("timestamp must be a numeric 1-D array with one value per rating")
            if timestamp.dtype.kind == "f" and not np.isfinite(timestamp).all():
                raise DataError(f"{int((~np.isfinite(timestamp)).sum())} timestamp(s) are "
                                "NaN or infinite")
            if timestamp.dtype.kind in "fu" and len(timestamp) and (
                    timestamp.max() >= 2.0 ** 63 or timestamp.min() < -(2.0 ** 63)):
                raise DataError("timestamps must fit in int64 (unix seconds); got values "
                                f"up to {float(np.abs(timestamp).max()):.3g}")
            timestamp = whole_or_float_seconds(timestamp)  # a copy: never freeze caller data
        # copies, so that freezing them (setflags) never touches the caller's arrays
        return (user.astype(np.int32), item.astype(np.int32),
                np.array(rating, dtype=np.float64, copy=True), timestamp)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def from_indices(cls, user, item, rating, users: Vocabulary, items: Vocabulary,
                     timestamp=None, duplicates: str = "raise") -> "Ratings":
        """From integer indices into existing vocabularies (checked)."""
        user, item, rating, timestamp = cls._check_arrays(user, item, rating, timestamp,
                                                          users, items)
        user, item, rating, timestamp = _resolve_duplicates(
            user, item, rating, timestamp, duplicates, users, items)
        return cls(user, item, rating, users, items, timestamp, _validated=True)

    @classmethod
    def from_arrays(cls, users, items, ratings, timestamps=None, *,
                    user_vocab: Vocabulary | None = None, item_vocab: Vocabulary | None = None,
                    duplicates: str = "raise", unknown: str = "raise",
                    counts: bool = False, id_type: str | None = None) -> "Ratings":
        """From raw id arrays and rating values.

        ``user_vocab``/``item_vocab`` encode with existing vocabularies (e.g. a test set
        sharing the training vocabularies). ``unknown="raise"`` rejects ids outside them,
        ``unknown="extend"`` appends new ids. ``counts=True`` additionally requires
        non-negative values (play counts). ``duplicates`` resolves repeated
        ``(user, item)`` pairs: ``"raise"`` (default), ``"last"``/``"first"`` (keep the
        last/first row in input order) or ``"mean"`` (average; latest timestamp).
        ``id_type`` (``None``: keep the ids' types) applies
        :func:`bayesmf.data.vocab.parse_ids` (``"auto"``, ``"str"`` or ``"int"``) to both
        id arrays first.
        """
        if duplicates not in _DUP_POLICIES:
            raise DataError(f"duplicates= must be one of {_DUP_POLICIES}, got {duplicates!r}")
        if unknown not in ("raise", "extend"):
            raise DataError(f"unknown= must be 'raise' or 'extend', got {unknown!r}")
        values = _numeric_values(ratings)
        if len(values) == 0:
            raise DataError("no ratings: the input is empty")
        if counts and (values < 0).any():
            raise DataError(f"{int((values < 0).sum())} negative count(s); counts must be >= 0")
        n = len(values)
        if len(users) != n or len(items) != n:
            raise DataError(f"length mismatch: {len(users)} users, {len(items)} items, {n} ratings")
        if id_type is not None:
            users = parse_ids(users, id_type, "user")
            items = parse_ids(items, id_type, "item")
        uv = _vocab_for(users, user_vocab, "user", unknown)
        iv = _vocab_for(items, item_vocab, "item", unknown)
        u = uv.encode(users)
        i = iv.encode(items)
        return cls.from_indices(u, i, values, uv, iv, timestamps, duplicates)

    @classmethod
    def from_dataframe(cls, df: pd.DataFrame, user_col: str = "user", item_col: str = "item",
                       rating_col: str = "rating", timestamp_col: str | None = "auto",
                       **kwargs) -> "Ratings":
        """From a DataFrame. ``timestamp_col="auto"`` uses a ``timestamp`` column when present.

        Other keyword arguments go to :meth:`from_arrays`.
        """
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
        missing = [c for c in (user_col, item_col, rating_col) if c not in df.columns]
        if missing:
            raise DataError(f"missing column(s) {missing}; the frame has {list(df.columns)}. "
                            "Pass user_col=/item_col=/rating_col= to rename.")
        if timestamp_col == "auto":
            timestamp_col = "timestamp" if "timestamp" in df.columns else None
        elif timestamp_col is not None and timestamp_col not in df.columns:
            raise DataError(f"missing timestamp column {timestamp_col!r}")
        for c in (user_col, item_col):
            if df[c].isna().any():
                raise DataError(f"{int(df[c].isna().sum())} missing value(s) in column {c!r}")
        if user_col == item_col:
            raise DataError(f"user_col and item_col are the same column ({user_col!r})")
        ts = None
        if timestamp_col:
            col = df[timestamp_col]
            if isinstance(col.dtype, pd.DatetimeTZDtype):  # tz-aware: as UTC
                col = col.dt.tz_convert("UTC").dt.tz_localize(None)
            ts = col.to_numpy()
        return cls.from_arrays(df[user_col].to_numpy(), df[item_col].to_numpy(),
                               df[rating_col], ts, **kwargs)

    @classmethod
    def from_sparse(cls, matrix, users=None, items=None) -> "Ratings":
        """From a scipy.sparse matrix (rows users, columns items); stored entries are the
        observations (explicit zeros included). ``users``/``items`` are raw ids per row/col."""
        if not sp.issparse(matrix):
            raise DataError(f"expected a scipy.sparse matrix, got {type(matrix).__name__}")
        coo = sp.coo_matrix(matrix)
        n_stored = coo.nnz
        coo.sum_duplicates()
        if coo.nnz != n_stored:  # two entries of one (user, item): never add ratings up
            raise DataError(f"the matrix stores {n_stored - coo.nnz} duplicate (user, item) "
                            "entr(ies); keep one rating per pair (e.g. build it from a "
                            "DataFrame with duplicates='last' / 'mean')")
        n_u, n_i = coo.shape
        uv = Vocabulary(np.arange(n_u) if users is None else users, "user")
        iv = Vocabulary(np.arange(n_i) if items is None else items, "item")
        if len(uv) != n_u or len(iv) != n_i:
            raise DataError("users/items ids must match the matrix shape")
        return cls.from_indices(coo.row, coo.col, coo.data, uv, iv)

    # ----------------------------------------------------------------- basic facts
    @property
    def sparsity(self) -> float:
        """``1 - nnz / (users * items)``."""
        return 1.0 - self.nnz / (float(self.n_users) * float(self.n_items))

    def user_counts(self) -> np.ndarray:
        """Ratings per user index (length ``n_users``; zero for users with none here)."""
        return np.bincount(self.user, minlength=self.n_users)

    def item_counts(self) -> np.ndarray:
        return np.bincount(self.item, minlength=self.n_items)

    @property
    def scale(self) -> RatingScale:
        levels = np.unique(self.rating)
        return RatingScale(float(levels[0]), float(levels[-1]),
                           tuple(levels.tolist()) if len(levels) <= 50 else None)

    @property
    def mean(self) -> float:
        return float(self.rating.mean())

    def __repr__(self) -> str:
        return (f"Ratings(n={self.nnz}, users={self.n_users}, items={self.n_items}, "
                f"sparsity={self.sparsity:.4f})")

    # ----------------------------------------------------------------- conversions
    def to_csr(self) -> sp.csr_matrix:
        """users x items CSR of the ratings (cached)."""
        if self._csr is None:
            m = sp.csr_matrix((self.rating, (self.user, self.item)), shape=self.shape)
            m.sort_indices()
            object.__setattr__(self, "_csr", m)
        return self._csr

    def to_csc(self) -> sp.csc_matrix:
        if self._csc is None:
            m = sp.csc_matrix((self.rating, (self.user, self.item)), shape=self.shape)
            m.sort_indices()
            object.__setattr__(self, "_csc", m)
        return self._csc

    def to_dataframe(self, raw_ids: bool = True) -> pd.DataFrame:
        """Columns ``user, item, rating[, timestamp]`` with raw ids (or indices)."""
        d = {
            "user": self.users.decode(self.user) if raw_ids else self.user,
            "item": self.items.decode(self.item) if raw_ids else self.item,
            "rating": self.rating,
        }
        if self.timestamp is not None:
            d["timestamp"] = self.timestamp
        return pd.DataFrame(d)

    def subset(self, mask_or_index) -> "Ratings":
        """Rows selected by a boolean mask or an array of distinct row positions (negative
        ones count from the end); vocabularies are kept. A position given twice would be
        a duplicated (user, item) pair, which no Ratings holds: refused."""
        sel = np.asarray(mask_or_index)
        if sel.dtype == bool:
            if sel.shape != (self.nnz,):
                raise DataError("boolean mask length differs from the number of ratings")
        else:
            if sel.dtype.kind not in "iu" or sel.ndim != 1:
                if sel.size == 0:
                    raise DataError("the selection is empty")
                raise DataError(f"subset takes a boolean mask or integer row positions, got "
                                f"dtype {sel.dtype} shape {sel.shape}")
            if sel.size and (sel.min() < -self.nnz or sel.max() >= self.nnz):
                raise DataError(f"row positions must lie in [-{self.nnz}, {self.nnz - 1}]")
            pos = np.where(sel < 0, sel + self.nnz, sel)
            if np.unique(pos).size != pos.size:
                hint = (" (a 0/1 mask? pass it as .astype(bool))"
                        if pos.size == self.nnz and np.isin(sel, (0, 1)).all() else "")
                raise DataError(f"row positions repeat: the subset would hold a (user, item) "
                                f"pair twice{hint}")
        ts = None if self.timestamp is None else self.timestamp[sel]
        out = Ratings(self.user[sel].copy(), self.item[sel].copy(), self.rating[sel].copy(),
                      self.users, self.items, None if ts is None else ts.copy(),
                      _validated=True)
        if out.nnz == 0:
            raise DataError("the selection is empty")
        return out

    def with_vocabularies(self, users: Vocabulary, items: Vocabulary,
                          unknown: str = "raise") -> "Ratings":
        """Re-encode onto other vocabularies (e.g. to align a test set with a model).
        ``unknown="drop"`` drops rows with ids outside them."""
        if unknown not in ("raise", "drop"):
            raise DataError(f"unknown= must be 'raise' or 'drop', got {unknown!r}")
        u, ku = users.encode(self.users.decode(self.user), unknown="mask")
        i, ki = items.encode(self.items.decode(self.item), unknown="mask")
        keep = ku & ki
        if not keep.all():
            if unknown == "raise":
                users.encode(self.users.decode(self.user))
                items.encode(self.items.decode(self.item))
            if not keep.any():
                raise DataError("no rating remains after dropping unknown ids")
        ts = None if self.timestamp is None else self.timestamp[keep]
        return Ratings(u[keep], i[keep], self.rating[keep].copy(), users, items, ts,
                       _validated=True)

    def describe(self) -> dict:
        """Counts, sparsity, scale and ratings-per-user/item quantiles as a plain dict."""
        uc = self.user_counts()
        ic = self.item_counts()
        q = [0.0, 0.25, 0.5, 0.75, 1.0]
        uq = np.quantile(uc[uc > 0], q)
        iq = np.quantile(ic[ic > 0], q)
        sc = self.scale
        return {
            "ratings": self.nnz,
            "users": self.n_users,
            "items": self.n_items,
            "users_with_ratings": int((uc > 0).sum()),
            "items_with_ratings": int((ic > 0).sum()),
            "sparsity": self.sparsity,
            "density": 1.0 - self.sparsity,
            "rating_min": sc.min,
            "rating_max": sc.max,
            "rating_mean": self.mean,
            "rating_levels": list(sc.levels) if sc.levels is not None else None,
            "ratings_per_user": dict(zip(["min", "q25", "median", "q75", "max"],
                                         [float(x) for x in uq])),
            "ratings_per_item": dict(zip(["min", "q25", "median", "q75", "max"],
                                         [float(x) for x in iq])),
            "has_timestamp": self.timestamp is not None,
        }


def _vocab_for(raw, vocab, name, unknown):
    if vocab is None:
        return Vocabulary.from_raw(raw, name)
    if unknown == "extend":
        return vocab.extend(raw)
    return vocab


def _resolve_duplicates(user, item, rating, timestamp, policy, users, items):
    if policy not in _DUP_POLICIES:
        raise DataError(f"duplicates= must be one of {_DUP_POLICIES}, got {policy!r}")
    key = user.astype(np.int64) * np.int64(max(len(items), 1)) + item.astype(np.int64)
    order = np.argsort(key, kind="stable")
    ks = key[order]
    dup_next = ks[1:] == ks[:-1]
    if not dup_next.any():
        return user, item, rating, timestamp
    if policy == "raise":
        first = order[1:][dup_next][:5]
        pairs = [(users.ids[user[j]], items.ids[item[j]]) for j in first]
        pairs = [tuple(x.item() if isinstance(x, np.generic) else x for x in p) for p in pairs]
        raise DataError(
            f"{int(dup_next.sum())} duplicate (user, item) pair(s), e.g. {pairs}; "
            "pass duplicates='last', 'first' or 'mean' to resolve them (Ratings.from_arrays, "
            "Ratings.from_dataframe, bayesmf.BayesMF.fit, bayesmf.as_ratings, "
            "bayesmf.datasets.load_ratings_source; CLI: --duplicates)"
        )
    starts = np.concatenate([[True], ~dup_next])
    group = np.cumsum(starts) - 1
    if policy == "mean":
        sums = np.bincount(group, weights=rating[order])
        cnt = np.bincount(group)
        sel = order[starts]  # first row of each group, in key order
        new_rating = sums / cnt
        # keep the latest timestamp of each group
        ts = None
        if timestamp is not None:
            ts = np.full(len(cnt), np.iinfo(np.int64).min)
            np.maximum.at(ts, group, timestamp[order])
        keep_rows = np.sort(sel)
        pos = np.argsort(sel)
        return (user[keep_rows], item[keep_rows], new_rating[pos],
                None if ts is None else ts[pos])
    if policy == "first":
        sel = order[starts]
    else:  # last
        ends = np.concatenate([~dup_next, [True]])
        sel = order[ends]
    keep_rows = np.sort(sel)
    return (user[keep_rows], item[keep_rows], rating[keep_rows],
            None if timestamp is None else timestamp[keep_rows])


def raw_pairs(pairs, user_col: str = "user", item_col: str = "item"):
    """Raw ``(users, items)`` id arrays of ``pairs``: a DataFrame with the two columns, a
    :class:`Ratings` (its decoded ids) or a ``(users, items)`` tuple -- the forms
    ``BayesMF.predict`` and the recalibration maps take; anything else is a
    :class:`~bayesmf.errors.DataError`."""
    if isinstance(pairs, Ratings):
        return pairs.users.decode(pairs.user), pairs.items.decode(pairs.item)
    if isinstance(pairs, pd.DataFrame):
        missing = [c for c in (user_col, item_col) if c not in pairs.columns]
        if missing:
            raise DataError(f"missing column(s) {missing}; the frame has {list(pairs.columns)}")
        return pairs[user_col].to_numpy(), pairs[item_col].to_numpy()
    if isinstance(pairs, tuple) and len(pairs) == 2:
        return np.asarray(pairs[0]), np.asarray(pairs[1])
    raise DataError("pairs must be a DataFrame with user/item columns, a Ratings container "
                    f"or a (users, items) tuple; got {type(pairs).__name__}")
