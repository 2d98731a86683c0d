"""Filters over a :class:`~bayesmf.data.ratings.Ratings`: the k-core.

The ``(min_user, min_item)``-core of a ratings table is the largest subset of its rows in
which every remaining user has at least ``min_user`` ratings and every remaining item at
least ``min_item``. It is unique (the union of two such subsets is again one), and
repeatedly deleting the rows of users or items below the thresholds until nothing changes
reaches exactly it: a row deleted at any step cannot belong to any qualifying subset.

Every pass is a vectorized ``bincount`` over the surviving rows; nothing of size
users x items is ever allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import DataError

__all__ = ["kcore", "kcore_mask", "FilterResult", "binarize"]


@dataclass(frozen=True)
class FilterResult:
    """What a filter kept and what it removed.

    Attributes
    ----------
    ratings : Ratings
        The surviving rows.
    removed_rows : int
        Number of rating rows removed.
    removed_users, removed_items : int
        Users/items that had at least one rating in the input and have none left.
    iterations : int
        Number of peeling passes that removed something (0 when the input already
        satisfied the thresholds).
    """

    ratings: Ratings
    removed_rows: int
    removed_users: int
    removed_items: int
    iterations: int

    def __repr__(self) -> str:
        return (f"FilterResult({self.ratings!r}, removed_rows={self.removed_rows}, "
                f"removed_users={self.removed_users}, removed_items={self.removed_items}, "
                f"iterations={self.iterations})")


def _check_threshold(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be a non-negative integer, got {value!r}")
    if value < 0:
        raise DataError(f"{name} must be a non-negative integer, got {value}")
    return int(value)


def kcore_mask(ratings: Ratings, min_user: int = 1, min_item: int = 1) -> tuple[np.ndarray, int]:
    """Boolean mask of the rows in the ``(min_user, min_item)``-core and the number of
    peeling passes that removed rows. Lower-level helper of :func:`kcore`."""
    min_user = _check_threshold(min_user, "min_user")
    min_item = _check_threshold(min_item, "min_item")
    keep = np.ones(ratings.nnz, dtype=bool)
    user, item = ratings.user, ratings.item
    iterations = 0
    while True:
        u = user[keep]
        i = item[keep]
        uc = np.bincount(u, minlength=ratings.n_users)
        ic = np.bincount(i, minlength=ratings.n_items)
        drop = (uc[u] < min_user) | (ic[i] < min_item)
        if not drop.any():
            return keep, iterations
        iterations += 1
        idx = np.flatnonzero(keep)
        keep[idx[drop]] = False
        if not keep.any():
            return keep, iterations


def kcore(ratings: Ratings, min_user: int = 1, min_item: int = 1, *,
          compact: bool = True) -> FilterResult:
    """The ``(min_user, min_item)``-core of ``ratings``, iterated to a fixed point.

    Parameters
    ----------
    ratings : Ratings
    min_user, min_item : int
        Minimum number of ratings every surviving user / item must have *within the
        result* (so removing an item can push a user below the threshold, and so on,
        until nothing changes).
    compact : bool, default True
        With ``True`` the result's vocabularies hold only the surviving ids, in their
        original relative order (indices are renumbered ``0..n-1``). With ``False`` the
        input vocabularies are kept unchanged (users/items without ratings stay in them),
        which keeps the result aligned with other data encoded with those vocabularies.

    Returns
    -------
    FilterResult
        ``.ratings`` and the numbers of removed rows, users and items.

    Raises
    ------
    DataError
        For negative or non-integer thresholds, or when no rating survives.
    """
    if not isinstance(ratings, Ratings):
        raise DataError(f"kcore expects a Ratings, got {type(ratings).__name__}")
    keep, iterations = kcore_mask(ratings, min_user, min_item)
    if not keep.any():
        raise DataError(
            f"no rating survives the k-core with min_user={min_user}, min_item={min_item} "
            f"(input: {ratings.nnz} ratings, {int((ratings.user_counts() > 0).sum())} users, "
            f"{int((ratings.item_counts() > 0).sum())} items)"
        )
    users_before = int((ratings.user_counts() > 0).sum())
    items_before = int((ratings.item_counts() > 0).sum())
    out = ratings if keep.all() else ratings.subset(keep)
    if compact:
        out = _compact(out)
    users_after = int((out.user_counts() > 0).sum())
    items_after = int((out.item_counts() > 0).sum())
    return FilterResult(out, ratings.nnz - out.nnz, users_before - users_after,
                        items_before - items_after, iterations)


def _compact(r: Ratings) -> Ratings:
    """Drop vocabulary entries without ratings, keeping the relative order of the rest."""
    u_used = r.user_counts() > 0
    i_used = r.item_counts() > 0
    if u_used.all() and i_used.all():
        return r
    u_map = np.cumsum(u_used) - 1
    i_map = np.cumsum(i_used) - 1
    users = Vocabulary(r.users.ids[u_used], name=r.users.name)
    items = Vocabulary(r.items.ids[i_used], name=r.items.name)
    ts = None if r.timestamp is None else r.timestamp.copy()
    return Ratings(u_map[r.user].astype(np.int32), i_map[r.item].astype(np.int32),
                   r.rating.copy(), users, items, ts, _validated=True)


def binarize(ratings: Ratings, threshold: float = 4.0) -> Ratings:
    """Ratings turned into 0/1 labels for the Bernoulli likelihoods: ``1`` where
    ``rating >= threshold`` (e.g. 4 stars and up is a "like"), ``0`` otherwise; same
    pairs, vocabularies and timestamps. The threshold is the caller's modelling choice."""
    if not isinstance(ratings, Ratings):
        raise DataError(f"binarize needs a Ratings container, got {type(ratings).__name__}")
    try:
        t = float(threshold)
    except (TypeError, ValueError):
        raise DataError(f"threshold must be a number, got {threshold!r}") from None
    if not np.isfinite(t):
        raise DataError(f"threshold must be finite, got {threshold!r}")
    y = (ratings.rating >= t).astype(np.float64)
    return Ratings.from_indices(ratings.user, ratings.item, y, ratings.users, ratings.items,
                                timestamp=ratings.timestamp)
