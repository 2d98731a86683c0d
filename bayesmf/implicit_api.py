r"""The ``implicit`` library's recommender API over a bayesmf posterior.

People coming from `implicit <https://github.com/benfred/implicit>`_ write::

    model.fit(user_items)                                   # CSR, users x items
    ids, scores = model.recommend(userid, user_items[userid], N=10)
    ids, scores = model.similar_items(itemid, N=10)

:class:`ImplicitRecommender` gives the same calls, with the same argument names,
defaults and return shapes (``implicit`` 0.7), as a thin layer over bayesmf's own
machinery: :func:`~bayesmf.recommend.topk.recommend_indices` ranks (any strategy of
:mod:`bayesmf.scoring.strategies`, the posterior-mean score by default),
:func:`~bayesmf.recommend.foldin.fold_in` / :func:`~bayesmf.recommend.foldin.fold_in_item`
recompute a user or item from its row of interactions (``recalculate_user=True``: the
Gibbs / ALS row step given the other side's draws, no refit) and
:func:`~bayesmf.recommend.similar.similar_items` gives the posterior-mean cosine.

Conventions (as in ``implicit``):

* users and items are **indices** ``0..n-1``: the rows and columns of the ``user_items``
  matrix the model was fitted to (:meth:`ImplicitRecommender.fit` builds the model from a
  CSR matrix, so raw ids are those indices). For a model fitted to raw ids,
  :attr:`~ImplicitRecommender.user_ids` / :attr:`~ImplicitRecommender.item_ids` decode
  an index and :attr:`~ImplicitRecommender.user_items` is the training matrix in index
  space;
* ``recommend(userid, ...)`` returns ``(ids, scores)``: 1-d arrays of length ``N`` for a
  scalar ``userid``, ``(len(userid), N)`` arrays for an array of users; ``N`` is capped
  at the number of candidate items. A user with fewer than ``N`` items left after the
  filters gets fewer: trimmed for a scalar ``userid``, padded with id ``-1`` and score
  ``-inf`` in a batch;
* ``user_items`` has one row per requested user (``user_items[userid]``); its items are
  the ones ``filter_already_liked_items`` removes and the ones a recalculated user is
  folded in from (their values: counts or confidences, as fitted). ``implicit`` requires
  it; here ``None`` means the user's training items (and cannot be combined with
  ``recalculate_user=True``);
* ``similar_items(itemid)`` returns the item itself first (its cosine with itself is 1),
  as ``implicit`` does, unless ``filter_items`` removes it or ``items`` leaves it out.

What is added: ``strategy=`` (and its options, e.g. ``quantile=``, ``seed=``) on
:meth:`~ImplicitRecommender.recommend`, so ``"ucb"``, ``"thompson"`` or ``"prob"`` rank
through the same call, and :attr:`~ImplicitRecommender.posterior` for everything else
(intervals, P(relevant), evaluation, ArviZ).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bayesmf.errors import DataError, NotFittedError, SpecError, UnknownIdError
from bayesmf.posterior import Posterior
from bayesmf.recommend.foldin import fold_in, fold_in_item
from bayesmf.recommend.similar import similar_items as _similar_items
from bayesmf.recommend.similar import similar_users as _similar_users
from bayesmf.recommend.topk import _PosteriorUsers, recommend_indices

__all__ = ["ImplicitRecommender"]


class _RowsSeen(_PosteriorUsers):
    """Trained users whose "seen" items are the rows of a given CSR matrix (row ``r`` for
    the ``r``-th requested user) instead of their training items."""

    def __init__(self, post, users, rows: sp.csr_matrix):
        super().__init__(post, users, "raise")
        self.rows = rows

    def seen(self, rows):
        ptr, ind = self.rows.indptr, self.rows.indices
        lens = ptr[rows + 1] - ptr[rows]
        rr = np.repeat(np.arange(len(rows)), lens)
        it = np.concatenate([ind[ptr[r]:ptr[r + 1]] for r in rows] + [np.zeros(0, np.int64)])
        return rr, it.astype(np.int64)


def _ids(x, n: int, what: str) -> tuple[np.ndarray, bool]:
    """``(indices as int64 1-d, was_scalar)``; every index must be in ``0..n-1``."""
    scalar = np.ndim(x) == 0
    a = np.atleast_1d(np.asarray(x))
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise DataError(f"{what} must be an integer index or a 1-d array of them, "
                        f"got {x!r}")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= n):
        bad = a[(a < 0) | (a >= n)]
        raise UnknownIdError(f"{what} (indices run 0..{n - 1})", bad.tolist(), len(bad))
    return a, scalar


def _check_rows(m, n_rows: int, n_cols: int, what: str, per: str) -> sp.csr_matrix:
    if not sp.issparse(m):
        raise DataError(f"{what} must be a scipy sparse matrix (CSR), got {type(m).__name__}")
    m = sp.csr_matrix(m, copy=True)
    if m.shape != (n_rows, n_cols):
        raise DataError(f"{what} must have one row for every {per} requested and one column "
                        f"per {'item' if per == 'user' else 'user'}: expected shape "
                        f"{(n_rows, n_cols)}, got {m.shape}")
    if m.nnz and not np.all(np.isfinite(m.data)):
        raise DataError(f"{what} contains NaN or inf")
    m.eliminate_zeros()  # as fit: a stored 0 is no interaction
    return m


def _id_list(v, n: int, what: str):
    return None if v is None else _ids(v, n, what)[0]


class ImplicitRecommender:
    """The ``implicit`` recommender API (``fit``, ``recommend``, ``similar_items``,
    ``similar_users``, ``user_factors``, ``item_factors``) over a bayesmf model; see the
    module docs for the conventions.

    Parameters
    ----------
    model : BayesMF, Posterior or None
        A fitted :class:`~bayesmf.estimator.BayesMF` or its
        :class:`~bayesmf.posterior.Posterior`; an unfitted ``BayesMF`` is fitted by
        :meth:`fit`; ``None`` fits the library's default implicit model there (the one
        ``bayesmf fit --feedback implicit`` fits: Bayesian implicit ALS by Gibbs, rank 64,
        confidence ``1 + 2 log(1 + count)``).
    strategy : str
        The default ranking strategy of :meth:`recommend` (``"mean"``: posterior-mean score).
    """

    def __init__(self, model=None, strategy: str = "mean"):
        from bayesmf.estimator import BayesMF

        if model is not None and not isinstance(model, (BayesMF, Posterior)):
            raise SpecError("ImplicitRecommender takes a BayesMF, a Posterior or None, "
                            f"got {type(model).__name__}")
        self.model = model
        self.strategy = strategy

    # ------------------------------------------------------------------ fit / state
    def fit(self, user_items, show_progress: bool = True, **fit_kwargs) -> "ImplicitRecommender":
        """Fit to ``user_items`` (users x items, sparse; values are counts or weights, as
        ``implicit.fit`` takes them): user ``u`` / item ``i`` get index ``u`` / ``i``.
        ``show_progress`` shows the fit's progress bar (for this fit only);
        ``fit_kwargs`` go to :meth:`BayesMF.fit` (e.g. ``negatives="uniform:4"`` for a
        Bernoulli model). Empty rows or columns are refused (a user or item with no
        interaction has nothing to be fitted from; keep it out of the matrix)."""
        from bayesmf.data.interactions import Interactions
        from bayesmf.data.vocab import Vocabulary
        from bayesmf.estimator import DEFAULT_METHOD, DEFAULT_RANK, BayesMF

        if isinstance(self.model, Posterior):
            raise SpecError("this ImplicitRecommender wraps a fitted posterior; build one "
                            "from a BayesMF (or None) to fit")
        if not sp.issparse(user_items):
            raise DataError("user_items must be a scipy sparse matrix (users x items), got "
                            f"{type(user_items).__name__}")
        X = sp.csr_matrix(user_items, dtype=np.float64)
        X.sum_duplicates()
        X.eliminate_zeros()
        for bad, what in ((~np.isfinite(X.data), "NaN or infinite"),
                          (X.data < 0, "negative")):
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                u = int(np.searchsorted(X.indptr, j, side="right") - 1)
                raise DataError(f"user_items has {int(bad.sum())} {what} value(s) (first: "
                                f"{X.data[j]:g} at user {u}, item {int(X.indices[j])}); "
                                "counts and weights must be finite and >= 0")
        for counts, what in ((np.diff(X.indptr), "rows (users)"),
                             (np.diff(X.tocsc().indptr), "columns (items)")):
            empty = np.flatnonzero(counts == 0)
            if len(empty):
                raise DataError(f"user_items has {len(empty)} empty {what} (first: "
                                f"{empty[:5].tolist()}); every user and item needs an "
                                "interaction")
        X = X.tocoo()
        whole = bool(np.all(X.data == np.round(X.data)))  # counts; else weights
        data = Interactions.from_arrays(X.row, X.col, X.data if whole else None,
                                        weights=None if whole else X.data,
                                        user_vocab=Vocabulary(np.arange(X.shape[0])),
                                        item_vocab=Vocabulary(np.arange(X.shape[1])))
        model = self.model if self.model is not None else BayesMF(
            method=DEFAULT_METHOD["implicit"], rank=DEFAULT_RANK["implicit"],
            likelihood="implicit")
        before = model.progress
        model.progress = bool(show_progress)
        try:
            self.model = model.fit(data, **fit_kwargs)
        finally:
            model.progress = before
        return self

    @property
    def posterior(self) -> Posterior:
        """The wrapped posterior (everything bayesmf does with it stays available)."""
        if self.model is None:
            raise NotFittedError("ImplicitRecommender is not fitted: call fit(user_items)")
        if isinstance(self.model, Posterior):
            return self.model
        return self.model.posterior

    def _factors(self, name: str) -> np.ndarray:
        d = self.posterior.draws[name]
        return np.asarray(d, np.float64).reshape(-1, *d.shape[2:]).mean(0)

    @property
    def user_factors(self) -> np.ndarray:
        """Posterior mean of the user factors ``(n_users, rank)``. Scores of
        :meth:`recommend` are the posterior mean of ``mu + b_u + b_i + U_u . V_i`` (mean
        strategy), not ``user_factors @ item_factors.T`` (a product of means)."""
        return self._factors("U")

    @property
    def item_factors(self) -> np.ndarray:
        """Posterior mean of the item factors ``(n_items, rank)``."""
        return self._factors("V")

    @property
    def user_ids(self) -> np.ndarray:
        """Raw user id of each index."""
        return self.posterior.users.ids

    @property
    def item_ids(self) -> np.ndarray:
        """Raw item id of each index."""
        return self.posterior.items.ids

    @property
    def user_items(self) -> sp.csr_matrix:
        """The training interactions as a CSR matrix in index space (values 1: the
        posterior keeps which pairs were seen, not their counts)."""
        t = self.posterior.train
        n, m = len(self.posterior.users), len(self.posterior.items)
        return sp.csr_matrix((np.ones(len(t.seen_indices)), t.seen_indices, t.seen_indptr),
                             shape=(n, m))

    # ------------------------------------------------------------------ recommend
    def recommend(self, userid, user_items=None, N: int = 10,
                  filter_already_liked_items: bool = True, filter_items=None,
                  recalculate_user: bool = False, items=None, *, strategy: str | None = None,
                  **strategy_kw):
        """Top ``N`` items for a user index or an array of them: ``(ids, scores)``.

        ``user_items``: one row per requested user (``user_items[userid]``), whose items
        ``filter_already_liked_items`` removes and, with ``recalculate_user=True``, the
        user is folded in from (:func:`~bayesmf.recommend.foldin.fold_in`: the user's
        posterior given the items' draws, no refit); None: the users' training items.
        ``filter_items``: item indices never returned; ``items``: rank only these (not
        both). ``strategy`` (default: the constructor's) and ``strategy_kw`` as in
        :func:`bayesmf.recommend.recommend`."""
        post = self.posterior
        n_users, n_items = len(post.users), len(post.items)
        uidx, scalar = _ids(userid, n_users, "userid")
        if items is not None and filter_items is not None and len(np.atleast_1d(filter_items)):
            raise SpecError("recommend: set items or filter_items, not both")
        cand = _id_list(items, n_items, "items")
        excl = _id_list(filter_items, n_items, "filter_items")
        rows = None
        if user_items is not None:
            rows = _check_rows(user_items, len(uidx), n_items, "user_items", "user")
        elif recalculate_user:
            raise DataError("recalculate_user=True needs user_items: the interactions to "
                            "fold the users in from")
        if cand is not None and len(cand) == 0:
            shape = (0,) if scalar else (len(uidx), 0)
            return np.zeros(shape, np.int64), np.zeros(shape, np.float32)
        raw_users = post.users.decode(uidx)
        if recalculate_user:
            src = _fold_rows(post, uidx, rows)
        elif rows is not None:
            src = _RowsSeen(post, raw_users, rows)
        else:
            src = _PosteriorUsers(post, raw_users, "raise")
        _, top = recommend_indices(
            post, src, N, strategy or self.strategy,
            exclude_seen=bool(filter_already_liked_items),
            candidates=None if cand is None else post.items.decode(cand),
            exclude=None if excl is None else post.items.decode(excl),
            uncertainty=False, **strategy_kw)
        ids = np.where(top.valid, top.items, -1).astype(np.int64)
        scores = np.where(top.valid, top.scores, -np.inf).astype(np.float32)
        if scalar:
            ok = top.valid[0]
            return ids[0][ok], scores[0][ok]
        return ids, scores

    # ------------------------------------------------------------------ similar
    def similar_items(self, itemid, N: int = 10, recalculate_item: bool = False,
                      item_users=None, filter_items=None, items=None):
        """The ``N`` items most similar to an item index (or each of an array of them):
        ``(ids, scores)`` by posterior-mean cosine of the item factors, the item itself
        first (module docs). ``recalculate_item=True`` folds the item in from
        ``item_users`` (one row per requested item, users x their values) first
        (:func:`~bayesmf.recommend.foldin.fold_in_item`)."""
        post = self.posterior
        n_items, n_users = len(post.items), len(post.users)
        iidx, scalar = _ids(itemid, n_items, "itemid")
        if recalculate_item:
            if item_users is None:
                raise DataError("recalculate_item=True needs item_users: the interactions "
                                "to fold the items in from")
            R = _check_rows(item_users, len(iidx), n_users, "item_users", "item").tocoo()
            tmp = _new_ids(post.items.ids, len(iidx))
            df = pd.DataFrame({"item": tmp[R.row], "user": post.users.decode(R.col),
                               "rating": _fold_values(post, R.data)})
            parts = [fold_in_item(post, df, unknown="raise")] if R.nnz else []
            parts += [fold_in_item(post, {}, item=tmp[j])
                      for j in np.flatnonzero(np.diff(R.tocsr().indptr) == 0)]
            for f in parts:
                post = f.append_to(post)
            queries = tmp
        else:
            queries = post.items.decode(iidx)
        return self._similar(post, "item", queries, iidx, N, filter_items, items, n_items,
                             scalar, refolded=recalculate_item)

    def similar_users(self, userid, N: int = 10, filter_users=None, users=None):
        """The ``N`` users most similar to a user index (or each of an array of them):
        ``(ids, scores)`` by posterior-mean cosine of the user factors, the user first."""
        post = self.posterior
        n_users = len(post.users)
        uidx, scalar = _ids(userid, n_users, "userid")
        return self._similar(post, "user", post.users.decode(uidx), uidx, N, filter_users,
                             users, n_users, scalar)

    def _similar(self, post, side, queries, qidx, N, filt, only, n_side, scalar,
                 refolded=False):
        """``(ids, scores)`` of the ``N`` nearest ``side`` rows of each query (raw ids of
        ``post``; ``qidx`` their indices). A query ranks first itself (cosine 1) unless
        filtered out or ``refolded`` (then it is a new row of ``post``, and only the
        original rows are candidates)."""
        what, wonly = ("filter_items", "items") if side == "item" else ("filter_users",
                                                                         "users")
        if only is not None and filt is not None and len(np.atleast_1d(filt)):
            raise SpecError(f"similar_{side}s: set {wonly} or {what}, not both")
        if isinstance(N, bool) or not isinstance(N, (int, np.integer)) or N < 1:
            raise SpecError(f"N must be an integer >= 1, got {N!r}")
        excl = _id_list(filt, n_side, what)
        cand = _id_list(only, n_side, wonly)
        if refolded and cand is None:
            cand = np.arange(n_side)
        vocab = self.posterior.items if side == "item" else self.posterior.users
        N = int(min(N, n_side if cand is None else len(cand)))
        out_ids = np.full((len(qidx), N), -1, np.int64)
        out_sc = np.full((len(qidx), N), -np.inf, np.float32)
        count = np.zeros(len(qidx), np.int64)
        if N:
            fn = _similar_items if side == "item" else _similar_users
            df = fn(post, queries, n=N,
                    candidates=None if cand is None else vocab.decode(cand),
                    exclude=None if excl is None else vocab.decode(excl))
            key = df.columns[0]  # "item" / "user": the query column
            df = df.sort_values([key, "rank"], kind="stable")
            rows_of = df.groupby(key, sort=False).indices  # query -> its rows, by rank
            sim = vocab.encode(df["similar"].to_numpy()).astype(np.int64)
            scores = df["score"].to_numpy(np.float32)
            no_rows = np.zeros(0, np.int64)
            excl_set = set() if excl is None else set(np.asarray(excl).tolist())
            cand_set = None if cand is None else set(np.asarray(cand).tolist())
            for j, q in enumerate(queries):
                r = rows_of.get(q, no_rows)
                ids, sc = sim[r], scores[r]
                if not refolded and int(qidx[j]) not in excl_set \
                        and (cand_set is None or int(qidx[j]) in cand_set):
                    ids = np.concatenate([[qidx[j]], ids])
                    sc = np.concatenate([[np.float32(1.0)], sc])
                ids, sc = ids[:N], sc[:N]
                out_ids[j, :len(ids)], out_sc[j, :len(ids)] = ids, sc
                count[j] = len(ids)
        if scalar:
            return out_ids[0][:count[0]], out_sc[0][:count[0]]
        return out_ids, out_sc


def _fold_values(post, values: np.ndarray) -> np.ndarray:
    """The values a row folds in with: as they are, or 1 for every listed pair of a model
    fitted to positives with sampled negatives (its fit saw each stored pair as
    :math:`y = 1`, whatever its count; :meth:`BayesMF.fit <bayesmf.BayesMF.fit>`)."""
    if post.attrs.get("negatives"):
        if np.any(values < 0):
            raise DataError("the interactions to fold in hold negative values; give counts "
                            "or weights >= 0 (every listed pair is a positive)")
        return np.ones_like(values, dtype=np.float64)
    return values


def _new_ids(ids: np.ndarray, n: int) -> np.ndarray:
    """``n`` ids of the vocabulary's type that are not in ``ids`` (temporary rows)."""
    if np.issubdtype(ids.dtype, np.integer):
        return int(ids.max(initial=-1)) + 1 + np.arange(n, dtype=ids.dtype)
    taken = set(ids.tolist())
    out, j = [], 0
    while len(out) < n:
        c = f"__refolded_{j}"
        if c not in taken:
            out.append(c)
        j += 1
    return np.asarray(out, dtype=object)


def _fold_rows(post, uidx, rows: sp.csr_matrix):
    """:class:`~bayesmf.recommend.foldin.FoldedUsers`, one per requested user in request
    order, folded in from its row of ``rows`` (an empty row folds to the prior). The
    fold-in id (which seeds a sampled fold-in) is the user index, or the position in the
    request when the request repeats a user."""
    from bayesmf.recommend.foldin import FoldedUsers

    fold_ids = uidx if len(np.unique(uidx)) == len(uidx) else np.arange(len(uidx))
    r = rows.tocoo()
    parts = []
    if r.nnz:
        df = pd.DataFrame({"user": fold_ids[r.row], "item": post.items.decode(r.col),
                           "rating": _fold_values(post, r.data)})
        parts.append(fold_in(post, df, unknown="raise"))
    for j in np.flatnonzero(np.diff(rows.indptr) == 0):
        parts.append(fold_in(post, {}, user=fold_ids[j]))
    raw = np.concatenate([f.raw for f in parts])
    at = pd.Index(raw).get_indexer(fold_ids)
    cat = lambda name, axis: np.concatenate([getattr(f, name) for f in parts],  # noqa: E731
                                            axis=axis)[(slice(None),) * axis + (at,)]
    rated = [x for f in parts for x in f.rated]
    return FoldedUsers(post, raw[at], cat("b", 1), cat("F", 1), cat("cond_mean", 1),
                       cat("cond_chol", 1), [rated[i] for i in at], parts[0].info)
