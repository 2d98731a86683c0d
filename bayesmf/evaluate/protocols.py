r"""Ranking protocols: which items each test user's relevant items are ranked against.

Relevance -- which held-out pairs count as relevant:

* an :class:`~bayesmf.data.interactions.Interactions` test set (implicit feedback): every
  test pair is relevant (there is no threshold; a ``relevance_threshold`` is refused --
  pass ``test.to_ratings()`` to threshold the counts);
* a :class:`~bayesmf.data.ratings.Ratings` test set: a pair is relevant when
  ``rating >= relevance_threshold``. The default (``None``) is the likelihood's
  :attr:`~bayesmf.model.likelihoods.base.Likelihood.relevance_threshold` for an explicit
  likelihood (4.0 on a star scale, 1 for 0/1 data: the positives) and "every pair with
  a positive value" when the posterior's likelihood is
  :attr:`~bayesmf.model.likelihoods.base.Likelihood.full_matrix` (implicit feedback,
  Poisson counts: a listed count of 0 is no interaction); a threshold passed explicitly
  always applies.

Ids are mapped through the posterior's vocabularies; test pairs whose user or item the
model does not know are dropped and counted (``unknown_rows``, ``unknown_user_rows``,
``unknown_item_rows``, ``unknown_users``, ``unknown_items`` in the result); test pairs
that also occur in training are dropped (``dropped_seen``).

* ``protocol="full"``: every item the user did not interact with in training is a
  candidate; the relevant items are ranked among all of them
  (:math:`C_u = M - |\text{train}_u|`). Also reports **catalogue coverage@k**
  (:func:`~bayesmf.evaluate.ranking.catalogue_coverage`): the fraction of all :math:`M`
  items that appear in at least one evaluated user's top-k list.
* ``protocol="sampled"``: the candidates are the user's relevant items plus negatives:

  - ``sampling="uniform"`` / ``"popularity"``: ``n_negatives`` (default 100) items the
    user never interacted with (neither in training nor in the test set), drawn without
    replacement uniformly or with probability proportional to the item's training count
    (items never seen in training are not drawn), by the Gumbel-top-k trick with
    ``np.random.default_rng(seed)`` -- reproducible from ``seed``;
  - **given negatives** (``negatives=``, ``sampling="given"``): a mapping
    ``user id -> item ids`` or a DataFrame with ``user``/``item`` columns -- e.g. the
    published NCF protocol (He et al. 2017), which ranks each user's held-out item among
    99 fixed negatives. Refused (:class:`~bayesmf.errors.DataError`, with a count and an
    example): ids the model does not know, a negative repeated for its user, a negative
    that is a training pair or a relevant test pair of its user, and an evaluated user
    without negatives. Negatives of users that are not evaluated are ignored (counted in
    ``negative_users_unused``); lists may differ in length.

  All of a user's relevant items are ranked together against the same negatives.

Scores come from a recommendation strategy (:mod:`bayesmf.scoring.strategies`; the
posterior mean by default -- for implicit feedback the posterior-mean preference). With
``draws=True`` every metric (catalogue coverage included, full protocol) is also computed
from each posterior draw's own noise-free scores :math:`m_s` (up to ``max_draws`` evenly
spaced draws) and summarised by its mean and central 90% interval over draws.

Memory: users are processed in chunks; the largest arrays are ``chunk x items`` scores
(full) or ``draws x chunk x candidates x rank`` (sampled).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesmf.data.interactions import Interactions
from bayesmf.data.ratings import Ratings
from bayesmf.errors import DataError, SpecError
from bayesmf.evaluate.ranking import (METRICS, mean_metrics, ranking_metrics,
                                      ranks_from_scores, topk_mask)
from bayesmf.evaluate.rating import summarize_draws
from bayesmf.scoring.strategies import id_keys, make_strategy
from bayesmf.scoring.scorer import Scorer
from bayesmf.scoring.strategies import thompson_draw_index

__all__ = ["RankingTask", "build_task", "rank_task", "ranking_evaluate", "PROTOCOLS",
           "SAMPLING", "DEFAULT_RELEVANCE_THRESHOLD"]

PROTOCOLS = ("full", "sampled")
#: negatives of the sampled protocol: drawn uniformly, by training popularity, or given
SAMPLING = ("uniform", "popularity", "given")
#: relevance threshold of explicit ratings when none is given
DEFAULT_RELEVANCE_THRESHOLD = 4.0


class NothingToRank(DataError):
    """The test set leaves no user with a relevant, known, held-out item: ranking metrics
    have nothing to measure (:func:`bayesmf.evaluate.evaluate` reports them as skipped;
    every other :class:`~bayesmf.errors.DataError` of the ranking step is raised)."""


@dataclass
class RankingTask:
    """Fixed-shape description of a ranking evaluation (all arrays padded + masked).

    ``users (U,)`` user indices; ``rel (U, R)`` relevant item indices (``-1`` padding,
    ``rel_mask``); ``negatives (U, L)`` sampled candidates (sampled protocol only).
    """

    protocol: str
    users: np.ndarray
    rel: np.ndarray
    rel_mask: np.ndarray
    negatives: np.ndarray | None = None
    neg_mask: np.ndarray | None = None
    info: dict = field(default_factory=dict)


def _pad_groups(keys, values, n_groups):
    """Group ``values`` by sorted ``keys`` (0..n_groups-1) into a padded array."""
    counts = np.bincount(keys, minlength=n_groups)
    R = int(counts.max()) if len(counts) else 0
    out = np.full((n_groups, max(R, 0)), -1, np.int64)
    starts = np.cumsum(counts) - counts
    col = np.arange(len(keys)) - np.repeat(starts, counts)
    out[keys, col] = values
    return out, out >= 0


def _seen_matrix_rows(train, users):
    """(row, item) of training pairs of ``users`` (indices)."""
    ip, ix = train.seen_indptr, train.seen_indices
    lens = ip[users + 1] - ip[users]
    rr = np.repeat(np.arange(len(users)), lens)
    off = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
    return rr, ix[np.repeat(ip[users], lens) + off].astype(np.int64)


def _pair_keys_in(indptr, indices, M, u, i):
    """Whether each pair ``(u[j], i[j])`` is in the CSR structure ``indptr/indices``
    (sorted columns per row): membership of ``u*M+i`` in the sorted flat keys."""
    out = np.zeros(len(u), bool)
    if not len(u) or not len(indices):
        return out
    flat = (np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr)) * M
            + np.asarray(indices, np.int64))
    q = np.asarray(u, np.int64) * M + np.asarray(i, np.int64)
    pos = np.searchsorted(flat, q)
    return (pos < len(flat)) & (flat[np.minimum(pos, len(flat) - 1)] == q)


def _encode(vocab, test_vocab, idx):
    """Indices of a test container in ``vocab`` (``-1`` + mask for unknown ids)."""
    idx = np.asarray(idx, np.int64)
    if test_vocab == vocab:
        return idx, np.ones(len(idx), bool)
    e, known = vocab.encode(test_vocab.decode(idx), unknown="mask")
    return np.asarray(e, np.int64), np.asarray(known, bool)


def _test_pairs(posterior, test, relevance_threshold):
    """``(u, i, known_user, known_item, relevant, threshold, relevance)`` of a test set
    (module docs: relevance)."""
    full_matrix = bool(getattr(posterior.likelihood, "full_matrix", False))
    given = relevance_threshold is not None
    if isinstance(test, Interactions):
        if relevance_threshold is not None:
            raise SpecError(
                "relevance_threshold does not apply to an Interactions test set (every "
                "interaction is relevant); to threshold the counts pass "
                "test.to_ratings() with relevance_threshold=")
        u, ku = _encode(posterior.users, test.users, test.user)
        i, ki = _encode(posterior.items, test.items, test.item)
        return u, i, ku, ki, np.ones(len(u), bool), None, "every test interaction"
    if not isinstance(test, Ratings):
        raise DataError(f"expected a Ratings or Interactions test set, got "
                        f"{type(test).__name__}")
    if full_matrix:
        # implicit posterior: only ids (and a threshold, if given) matter; the counts
        # need not be valid training counts (e.g. 0/1 labels with a threshold)
        u, ku = _encode(posterior.users, test.users, test.user)
        i, ki = _encode(posterior.items, test.items, test.item)
        y = np.asarray(test.rating, np.float64)
    else:
        u, i, ku, ki, y = posterior._test_arrays(test)
        u, i = np.asarray(u, np.int64), np.asarray(i, np.int64)
        ku, ki = np.asarray(ku, bool), np.asarray(ki, bool)
        y = np.asarray(y, np.float64)
        if relevance_threshold is None:  # the family's: 4 on a star scale, 1 for 0/1
            relevance_threshold = float(getattr(posterior.likelihood, "relevance_threshold",
                                                DEFAULT_RELEVANCE_THRESHOLD))
    if relevance_threshold is None:
        # implicit posterior: a listed pair with a count (weight, label) of 0 is no
        # interaction, so every pair with a positive value is relevant
        return u, i, ku, ki, y > 0, None, "every test pair with a positive value"
    thr = float(relevance_threshold)
    if not np.isfinite(thr):
        raise SpecError(f"relevance_threshold must be a finite number, got "
                        f"{relevance_threshold!r}")
    # a threshold every value passes (or none does) would make every pair relevant (or
    # none) -- refused for a discrete family when given (a default outside a family's
    # levels, 4 for a 3-level scale, leaves nothing relevant: ranking is skipped)
    if given:
        posterior.likelihood.check_relevance_threshold(thr)
    return u, i, ku, ki, y >= thr, thr, f"rating >= {thr:g}"


def _show(x):
    """An id for a message: numpy scalars as plain Python values."""
    return repr(x.item() if isinstance(x, np.generic) else x)


def _parse_negatives(negatives):
    """Raw ``(user ids, item ids)`` of given negatives (a mapping or a DataFrame)."""
    if isinstance(negatives, pd.DataFrame):
        miss = [c for c in ("user", "item") if c not in negatives.columns]
        if miss:
            raise DataError(f"negatives frame misses column(s) {miss}; it has "
                            f"{list(negatives.columns)} (expected 'user', 'item')")
        return negatives["user"].to_numpy(), negatives["item"].to_numpy()
    if isinstance(negatives, Mapping):
        us, its = [], []
        for key, vals in negatives.items():
            if isinstance(vals, (str, bytes)) or np.ndim(vals) != 1:
                raise DataError(f"negatives of user {key!r} must be a list of item ids, got "
                                f"{type(vals).__name__}")
            vals = list(vals)
            us.extend([key] * len(vals))
            its.extend(vals)
        if not us:
            raise DataError("negatives= holds no item at all")
        return pd.Series(us).to_numpy(), pd.Series(its).to_numpy()
    raise DataError(f"negatives= must be a mapping user id -> item ids or a DataFrame with "
                    f"'user', 'item' columns, got {type(negatives).__name__}")


def _given_negatives(posterior, negatives, users, rel_u, rel_i):
    """Padded given negatives per task user (validated, module docs); ``users`` sorted
    task user indices, ``(rel_u, rel_i)`` the relevant test pairs (indices)."""
    raw_u, raw_i = _parse_negatives(negatives)
    if not len(raw_u):
        raise DataError("negatives= holds no item at all")

    def example(j):
        return f"e.g. user {_show(raw_u[j])}, item {_show(raw_i[j])}"

    pu, ku = posterior.users.encode(raw_u, unknown="mask")
    pi, ki = posterior.items.encode(raw_i, unknown="mask")
    for name, known, raw in (("user", ku, raw_u), ("item", ki, raw_i)):
        if not known.all():
            bad = np.flatnonzero(~known)
            raise DataError(f"{len(bad)} given negative(s) name an unknown {name} id (e.g. "
                            f"{_show(raw[bad[0]])}): the model has no such {name}; drop "
                            "them or refit with them")
    pu, pi = np.asarray(pu, np.int64), np.asarray(pi, np.int64)
    M = len(posterior.items)
    key = pu * M + pi
    _, first, cnt = np.unique(key, return_index=True, return_counts=True)
    if (cnt > 1).any():
        raise DataError(f"{int((cnt - 1).sum())} given negative(s) repeat an item already "
                        f"listed for the same user ({example(first[np.argmax(cnt > 1)])})")
    t = posterior.train
    bad = _pair_keys_in(t.seen_indptr, t.seen_indices, M, pu, pi)
    if bad.any():
        raise DataError(f"{int(bad.sum())} given negative(s) are training interactions of "
                        f"their user ({example(np.argmax(bad))}); negatives must be items "
                        "the user did not interact with")
    bad = np.isin(key, rel_u * M + rel_i)
    if bad.any():
        raise DataError(f"{int(bad.sum())} given negative(s) are relevant test pairs of their "
                        f"user ({example(np.argmax(bad))}); a negative cannot be a held-out "
                        "positive")
    has = np.isin(users, pu)
    if not has.all():
        miss = users[~has]
        raise DataError(f"{len(miss)} evaluated user(s) have no given negatives (e.g. user "
                        f"{_show(posterior.users.ids[miss[0]])}); give negatives for every "
                        "test user, or drop those users from the test set")
    used = np.isin(pu, users)
    row = np.searchsorted(users, pu[used])
    order = np.lexsort((pi[used], row))
    negs, mask = _pad_groups(row[order], pi[used][order], len(users))
    per = mask.sum(axis=1)
    return negs, mask, {"negatives_min": int(per.min()), "negatives_max": int(per.max()),
                        "negative_users_unused": int(len(np.unique(pu[~used])))}


def build_task(posterior, test, protocol: str = "full", relevance_threshold: float | None = None,
               n_negatives: int = 100, sampling: str | None = None, seed: int = 0, *,
               negatives=None) -> RankingTask:
    """Relevant items per test user (and the negatives of the sampled protocol); see the
    module docs. ``test``: :class:`~bayesmf.data.ratings.Ratings` or
    :class:`~bayesmf.data.interactions.Interactions`. ``sampling=None`` is
    ``"given"`` when ``negatives`` are given and ``"uniform"`` otherwise."""
    if protocol not in PROTOCOLS:
        raise SpecError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
    if sampling is None:
        sampling = "uniform" if negatives is None else "given"
    if sampling not in SAMPLING:
        raise SpecError(f"sampling must be one of {SAMPLING}, got {sampling!r}")
    if negatives is not None and protocol != "sampled":
        raise SpecError("given negatives (negatives=) belong to protocol='sampled'; the "
                        "full protocol ranks against every item")
    if (sampling == "given") != (negatives is not None):
        raise SpecError("sampling='given' and negatives= go together: pass the negatives "
                        "(user id -> item ids) with sampling='given' or left as None")
    u, i, ku, ki, relevant, thr, relevance = _test_pairs(posterior, test, relevance_threshold)
    known = ku & ki
    M = len(posterior.items)
    t = posterior.train
    # drop test pairs that are in training: membership of key u*M+i in the sorted CSR keys
    in_train = np.zeros(len(u), bool)
    kk = np.flatnonzero(known)
    in_train[kk] = _pair_keys_in(t.seen_indptr, t.seen_indices, M, u[kk], i[kk])
    rel_rows = known & ~in_train & relevant
    users = np.unique(u[rel_rows])
    grp = np.searchsorted(users, u[rel_rows])
    order = np.lexsort((i[rel_rows], grp))
    rel, rel_mask = _pad_groups(grp[order], i[rel_rows][order], len(users))
    info = {"relevance": relevance, "relevance_threshold": thr,
            "test_rows": int(len(u)), "unknown_rows": int((~known).sum()),
            "unknown_user_rows": int((~ku).sum()), "unknown_item_rows": int((~ki).sum()),
            "unknown_users": int(len(np.unique(np.asarray(test.user)[~ku]))),
            "unknown_items": int(len(np.unique(np.asarray(test.item)[~ki]))),
            "dropped_seen": int((known & in_train).sum()),
            "relevant_pairs": int(rel_mask.sum()), "users": int(len(users))}
    task = RankingTask(protocol, users, rel, rel_mask, info=info)
    if protocol != "sampled":
        return task
    if sampling == "given":
        if len(users) == 0:  # nothing to rank (ranking_evaluate says why)
            task.negatives = np.zeros((0, 1), np.int64)
        else:
            task.negatives, task.neg_mask, extra = _given_negatives(
                posterior, negatives, users, u[rel_rows], i[rel_rows])
            info.update(extra)
            info.update(n_negatives=int(task.negatives.shape[1]), sampling="given",
                        negatives_short=int((~task.neg_mask).sum()))
        task.neg_mask = task.negatives >= 0
        return task
    if len(users) == 0:  # nothing to rank (ranking_evaluate says why)
        task.negatives = np.zeros((0, max(int(n_negatives), 1)), np.int64)
        task.neg_mask = task.negatives >= 0
        return task
    n_neg = int(n_negatives)
    if n_neg < 1:
        raise SpecError("n_negatives must be >= 1")
    rng = np.random.default_rng(seed)
    if sampling == "uniform":
        logw = np.zeros(M)
    else:
        with np.errstate(divide="ignore"):
            logw = np.log(t.item_counts.astype(np.float64))
    # every test pair (any rating) counts as rated
    tk = np.flatnonzero(known)
    tu = np.searchsorted(users, u[tk])
    ok = (tu < len(users)) & (users[np.minimum(tu, len(users) - 1)] == u[tk])
    test_rows, test_items = tu[ok], i[tk][ok]
    negs = np.full((len(users), n_neg), -1, np.int64)
    step = max(1, (1 << 22) // max(M, 1))
    for a in range(0, len(users), step):
        rows = np.arange(a, min(len(users), a + step))
        g = logw[None, :] + rng.gumbel(size=(len(rows), M))
        rr, it = _seen_matrix_rows(t, users[rows])
        g[rr, it] = -np.inf
        sel = (test_rows >= a) & (test_rows < a + len(rows))
        g[test_rows[sel] - a, test_items[sel]] = -np.inf
        kth = min(n_neg, M)
        part = np.argpartition(-g, kth - 1, axis=1)[:, :kth]
        vals = np.take_along_axis(g, part, axis=1)
        part = np.where(np.isfinite(vals), part, -1)
        negs[rows, :kth] = np.sort(part, axis=1)
    task.negatives = negs
    task.neg_mask = negs >= 0
    info.update(n_negatives=n_neg, sampling=sampling, seed=int(seed),
                negatives_short=int((~task.neg_mask).sum()))
    return task


def _per_draw_scores_full(sc: Scorer, block, s: int):
    """Noise-free scores of one draw ``(c, J)``."""
    m = sc.mu[s] + block.b[s][:, None] + sc.bi[s][None, :]
    if sc.k:
        m = m + block.F[s].astype(np.float64) @ sc.V[s].T.astype(np.float64)
    return m


def rank_task(posterior, task: RankingTask, k: int = 10, strategy="mean", *, draws=False,
              max_draws: int | None = 50, approx=None, chunk_size: int | None = None,
              seed: int | None = None, draw_interval: float = 0.9, **strategy_kw) -> dict:
    """Run a :class:`RankingTask`: metrics of the strategy's scores (and per draw).

    Full protocol: also ``catalogue_coverage@k`` -- the fraction of all items in at
    least one evaluated user's top-k list (:func:`~bayesmf.evaluate.ranking.topk_mask`,
    the same stable order as the ranks) -- and, with ``draws``, its distribution over
    draws (each draw's own top-k lists)."""
    st = make_strategy(strategy, seed=seed, **strategy_kw)
    sc = Scorer(posterior, st, None, approx if st.name == "mean" else None)
    U = len(task.users)
    M = len(posterior.items)
    S = posterior.n_samples
    sel_draws = np.arange(S) if (max_draws is None or S <= max_draws) else \
        np.unique(np.linspace(0, S - 1, int(max_draws)).round().astype(np.int64))
    Rm = task.rel.shape[1]
    full = task.protocol == "full"
    L = Rm + (0 if full else task.negatives.shape[1])
    ranks = np.zeros((U, Rm), np.int64)
    rmask = np.zeros((U, Rm), bool)
    n_cand = np.zeros(U, np.int64)
    d_ranks = np.zeros((len(sel_draws), U, Rm), np.int64) if draws else None
    d_mask = np.zeros((len(sel_draws), U, Rm), bool) if draws else None
    covered = np.zeros(M, bool) if full else None
    d_covered = np.zeros((len(sel_draws), M), bool) if (full and draws) else None
    if chunk_size is None:
        per_user = M if full else S * L * max(sc.k, 1)
        if full and (st.name != "mean" or not sc.lik.mean_is_linear):
            per_user = S * M  # per-draw scores (a non-linear mean: E[P(y=1)], E[rating])
        chunk_size = max(1, min(1024, (1 << 22) // max(per_user, 1)))
    keys_all = posterior.users.ids[task.users] if len(task.users) else task.users

    for a in range(0, U, chunk_size):
        rows = np.arange(a, min(U, a + chunk_size))
        uidx = task.users[rows]
        known = np.ones(len(rows), bool)
        block = sc.block_from_indices(uidx, known)
        keys = id_keys(keys_all[rows]) if st.name == "thompson" else None
        if full:
            s = sc.scores(block, uidx, known, keys)
            rr, it = _seen_matrix_rows(posterior.train, uidx)
            s[rr, it] = -np.inf
            n_cand[rows] = M - np.bincount(rr, minlength=len(rows))
            rel_pos, rel_m = task.rel[rows], task.rel_mask[rows]
            rk, mk = ranks_from_scores(s, rel_pos, rel_m)
            ranks[rows], rmask[rows] = rk, mk
            ev = mk.any(axis=1)  # evaluated users of the chunk
            covered |= topk_mask(s[ev], k).any(axis=0)
            if draws:
                for j, sd_ in enumerate(sel_draws):
                    s1 = _per_draw_scores_full(sc, block, sd_)
                    s1[rr, it] = -np.inf
                    rk1, mk1 = ranks_from_scores(s1, rel_pos, rel_m)
                    d_ranks[j][rows], d_mask[j][rows] = rk1, mk1
                    d_covered[j] |= topk_mask(s1[mk1.any(axis=1)], k).any(axis=0)
        else:
            cand = np.concatenate([task.rel[rows], task.negatives[rows]], axis=1)
            cmask = np.concatenate([task.rel_mask[rows], task.neg_mask[rows]], axis=1)
            is_rel = np.concatenate([task.rel_mask[rows],
                                     np.zeros_like(task.neg_mask[rows])], axis=1)
            order = np.argsort(np.where(cmask, cand, np.iinfo(np.int64).max), axis=1,
                               kind="stable")
            cand = np.take_along_axis(cand, order, axis=1)
            cmask = np.take_along_axis(cmask, order, axis=1)
            is_rel = np.take_along_axis(is_rel, order, axis=1)
            ro = np.argsort(~is_rel, axis=1, kind="stable")[:, :Rm]
            rel_pos = ro
            rel_m = np.take_along_axis(is_rel, ro, axis=1)
            n_cand[rows] = cmask.sum(axis=1)
            draw = None
            blk = block
            if st.name == "thompson":
                draw = thompson_draw_index(keys, st.seed, S)
                blk = sc.thompson_block(block, draw, keys)
            m, v = sc.pair_components(blk, np.maximum(cand, 0))
            rng = np.random.default_rng(st.seed) if st.name == "utility" else None
            s = sc.scores_of_components(m, v, draw_index=draw, rng=rng)
            s = np.where(cmask, s, -np.inf)
            rk, mk = ranks_from_scores(s, rel_pos, rel_m)
            ranks[rows], rmask[rows] = rk, mk
            if draws:
                for j, sd_ in enumerate(sel_draws):
                    s1 = np.where(cmask, m[sd_], -np.inf)
                    d_ranks[j][rows], d_mask[j][rows] = ranks_from_scores(s1, rel_pos, rel_m)
    per_user = ranking_metrics(ranks, rmask, n_cand, k)
    out = {"protocol": task.protocol, "k": int(k), "strategy": st.describe(), **task.info,
           "users_evaluated": int((rmask.sum(axis=1) > 0).sum()),
           "candidates_mean": float(n_cand.mean()) if U else None}
    out.update(mean_metrics(per_user, k))
    cov_name = f"catalogue_coverage@{k}"
    if full:
        out[cov_name] = float(covered.sum()) / M if M else None
        out["items_covered"] = int(covered.sum())
        out["n_items"] = int(M)
    if draws:
        vals = {key: [] for key in METRICS}
        for j in range(len(sel_draws)):
            pu = ranking_metrics(d_ranks[j], d_mask[j], n_cand, k)
            mm = mean_metrics(pu, k)
            for key in METRICS:
                name = key if key == "auc" else f"{key}@{k}"
                vals[key].append(np.nan if mm[name] is None else mm[name])
        out["draws"] = {(key if key == "auc" else f"{key}@{k}"):
                        summarize_draws(vals[key], draw_interval) for key in METRICS}
        if full:
            out["draws"][cov_name] = summarize_draws(d_covered.sum(axis=1) / max(M, 1),
                                                     draw_interval)
        out["draws"]["n_draws"] = int(len(sel_draws))
    return out


def ranking_evaluate(posterior, test, k: int = 10, protocol: str = "full", *,
                     relevance_threshold: float | None = None, n_negatives: int = 100,
                     sampling: str | None = None, negatives=None, seed: int = 0,
                     strategy="mean", draws: bool = False, max_draws: int | None = 50,
                     approx=None, chunk_size: int | None = None, **strategy_kw) -> dict:
    """Ranking metrics of ``posterior`` on the held-out ``test`` set (module docs).

    ``test``: :class:`~bayesmf.data.ratings.Ratings` (relevant: ``rating >=
    relevance_threshold``; default 4.0, or every pair for an implicit-feedback posterior)
    or :class:`~bayesmf.data.interactions.Interactions` (every pair relevant).
    ``protocol="full"`` ranks against every item outside the user's training pairs;
    ``"sampled"`` against ``n_negatives`` sampled negatives (``sampling="uniform"`` or
    ``"popularity"``) or the given ``negatives`` (user id -> item ids, or a user/item
    DataFrame). Returns a JSON-able dict: ``precision@k``, ``recall@k``, ``hit_rate@k``
    (HR@k), ``ndcg@k``, ``map@k``, ``mrr@k``, ``auc``, ``catalogue_coverage@k`` (full),
    the counts of :func:`build_task` and, with ``draws=True``, ``"draws"``: each metric's
    mean and 90% interval over posterior draws (see :func:`build_task`,
    :func:`rank_task`)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise SpecError(f"k must be an integer >= 1, got {k!r}")
    task = build_task(posterior, test, protocol, relevance_threshold, n_negatives,
                      sampling, seed, negatives=negatives)
    if len(task.users) == 0:
        info = task.info
        if info["dropped_seen"] and info["dropped_seen"] + info["unknown_rows"] == \
                info["test_rows"]:
            raise NothingToRank(
                f"all {info['dropped_seen']} test pairs with a known user and item are "
                "training pairs (in-sample): ranking ranks items a user has not rated in "
                "training, so it needs held-out pairs")
        if info["unknown_rows"] == info["test_rows"]:
            raise NothingToRank(
                f"none of the {info['test_rows']} test pairs has a user and an item the "
                f"model knows ({info['unknown_users']} unknown user(s), "
                f"{info['unknown_items']} unknown item(s))")
        raise NothingToRank(f"no test user has a relevant item ({info['relevance']}) "
                            "among known users and items outside the training pairs")
    return rank_task(posterior, task, k, strategy, draws=draws, max_draws=max_draws,
                     approx=approx, chunk_size=chunk_size, seed=seed, **strategy_kw)
