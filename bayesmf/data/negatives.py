"""Negative sampling for implicit feedback, as an explicit, recorded rule.

Implicit data hold positives only; the unobserved pairs are not "missing at random". A
model either weights all of them (confidence, :meth:`Interactions.confidence`) or is fed
sampled negatives. A :class:`NegativeSampler` is that sampling rule as a frozen value with
its seed, so it can be saved with a model (:meth:`~NegativeSampler.to_dict`) and replayed
exactly (:meth:`~NegativeSampler.from_dict`).

The rule. For every user ``u`` with ``n_u >= 1`` training pairs, draw ``m_u`` items
independently (with replacement) from

    q_u(i) = pi(i) * 1[i not in P_u] / sum_{j not in P_u} pi(j)

where ``P_u`` are the user's positives and

    uniform:     pi(i) = 1
    popularity:  pi(i) = d_i ** beta,   d_i = number of users who interacted with i

(``beta = 0`` is uniform; ``beta = 1`` is proportional to popularity; ``0 < beta < 1``
flattens it, as in word2vec's 0.75). Items with ``d_i = 0`` have ``pi(i) = 0`` when
``beta > 0``. ``m_u = per_positive * n_u`` or ``m_u = per_user``. Users without pairs get
none.

Sampling is rejection sampling from ``pi`` vectorised over all pending draws (draws that
hit a positive are redrawn); draws still pending after a few rounds (users whose positives
hold most of the mass) are drawn exactly from their complement, so it always terminates.
The result never contains a positive of its user. A user whose positives hold all of the
mass (every item, or every item with ``pi > 0``) raises :class:`~bayesmf.errors.DataError`.

Training sets for the Bernoulli likelihoods (:meth:`NegativeSampler.training_ratings`,
:func:`with_negatives`). A 0/1 training set holds each ``(user, item)`` pair once, so the
negatives of a user are drawn **without replacement** (``sample(..., distinct=True)``):
``m_u`` distinct items from ``q_u``, by successive sampling -- the first ``m_u`` distinct
values of an i.i.d. stream from ``q_u`` (draws that repeat an accepted item are rejected
like positives; Gumbel-free, the same law as ``numpy``'s ``choice(replace=False, p=q_u)``).
A user cannot get more distinct negatives than there are candidates, so

    m_u = min(per_positive * n_u  (or per_user),  |A_u|),   A_u = {i not in P_u : pi(i) > 0}

(the cap is reached only by users whose positives cover most of the catalogue; the number
of capped users is reported). The training ratings are then

    y_ui = 1 for (u, i) in P_u,     y_ui = 0 for the sampled (u, i),

on the interactions' vocabularies, sorted by ``(user, item)``.

Fixed per fit or redrawn every sweep (``redraw``). With ``redraw="fit"`` (the default) the
negatives above are drawn once and the model is fitted to that one training set; the
posterior then "knows" its own negatives (on Last.fm 2K they get about half the P(y = 1)
of fresh non-interacted pairs). With ``redraw="sweep"`` (``method="gibbs"`` or ``"svi"``)
the negatives are drawn again at every sweep (every SVI step,
:mod:`bayesmf.infer.negative_redraw`), so no unobserved pair stays a negative for the
whole fit. For Gibbs, to keep the sampler's shapes static (each side's blocks of
observations are laid out once, :mod:`bayesmf.infer._rowblocks`), the redraw keeps every
user's number of negatives ``m_u`` *and* every item's number of negative slots ``k_i`` --
the counts of the fit-time draw above, itself a draw of the rule -- and re-pairs them: at
each sweep a uniformly random permutation ``rho`` of the ``M = sum_u m_u`` negative slots
gives user slot ``s`` the item of slot ``rho(s)`` (the configuration model of the
bipartite negative degree sequence). So each negative of user ``u`` is an item drawn with
probability ``k_i / M`` -- the item's share of the fit-time draw, a realisation of the
rule's ``q_u`` pooled over users -- without replacement over the slots (SVI draws each
slot's item independently with that law). A re-pairing that lands on a positive of its
user (``i in P_u``) is given weight 0 for that sweep (it is neither a negative nor a
positive then: the rule's "never a positive"); the expected share of such slots is ``sum_u
m_u sum_{i in P_u} k_i / M^2`` (``uniform:4``: 0.22% on Last.fm 2K, 8.0% on ML-1M, whose
users hold many of the items; ``benchmarks/results/negative_redraw.md``), so a user gets
that many fewer negatives in a sweep on average. A user may get one item twice in a sweep
(two slots of one item). The chain then targets no single posterior: it averages the
conditional updates over negative sets, the way stochastic optimisers redraw negatives per
epoch (the draws are a mixture over negative sets rather than the posterior given one of
them).

Short rule strings (:meth:`NegativeSampler.from_string`, the ``negatives=`` argument of
:meth:`bayesmf.BayesMF.fit`)::

    rule   := kind ["^" beta] [":" n ["/user"]] ["@" redraw]
    kind   := "uniform" | "popularity"
    beta   := a number >= 0 (popularity only; default 1)
    n      := an integer >= 1 (default 1): negatives per positive, or per user with "/user"
    redraw := "fit" (default) | "sweep"

e.g. ``"uniform:4"`` (4 uniform negatives per positive), ``"popularity:4"``
(``pi(i) = d_i``), ``"popularity^0.75:2"``, ``"uniform:50/user"``, ``"uniform:4@sweep"``
(redrawn every sweep). Spaces are ignored and the kind is case-insensitive. A string
carries no seed: it gets one from the caller (``BayesMF.fit`` uses the estimator's
``seed``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

import re

from bayesmf._records import dataclass_from_record
from bayesmf.data.interactions import Interactions
from bayesmf.data.ratings import Ratings
from bayesmf.errors import DataError, SpecError

__all__ = ["NegativeSampler", "as_sampler", "with_negatives"]

_KINDS = ("uniform", "popularity")
#: when the negatives are drawn: once per fit, or again at every Gibbs sweep
REDRAWS = ("fit", "sweep")
_SCHEMA = 1
_REJECTION_ROUNDS = 16
_RULE = re.compile(r"^(?P<kind>[a-z]+)(?:\^(?P<beta>[^:@]+))?(?::(?P<n>[^/@]+)(?P<per>/user)?)?"
                   r"(?:@(?P<redraw>[a-z]*))?$")


def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


@dataclass(frozen=True)
class NegativeSampler:
    """A negative-sampling rule and its seed (see the module docstring for the math).

    Parameters
    ----------
    kind : {"uniform", "popularity"}
    beta : float, default 1.0
        Exponent of the popularity weights ``d_i ** beta`` (ignored by ``"uniform"``).
    per_positive : int or None
        Negatives per positive pair (``m_u = per_positive * n_u``); 1 when neither this
        nor ``per_user`` is given.
    per_user : int or None
        Negatives per user instead (``m_u = per_user``); give exactly one of the two.
    seed : int, default 0
        Seed of ``numpy.random.default_rng``; :meth:`sample` may override it.
    redraw : {"fit", "sweep"}, default "fit"
        Draw the negatives once per fit, or again at every Gibbs sweep / SVI step (module
        docstring; ``method="gibbs"`` or ``"svi"``). The fit-time draw is the same for
        both.
    """

    kind: str = "uniform"
    beta: float = 1.0
    per_positive: int | None = None
    per_user: int | None = None
    seed: int = 0
    redraw: str = "fit"

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise SpecError(f"kind must be one of {list(_KINDS)}, got {self.kind!r}")
        if isinstance(self.beta, (bool, np.bool_)) or not isinstance(
                self.beta, (int, float, np.integer, np.floating)) or not np.isfinite(self.beta) \
                or self.beta < 0:
            raise SpecError(f"beta must be a finite number >= 0, got {self.beta!r}")
        object.__setattr__(self, "beta", float(self.beta))
        if self.per_positive is None and self.per_user is None:  # neither: 1 per positive
            object.__setattr__(self, "per_positive", 1)
        if self.per_positive is not None and self.per_user is not None:
            raise SpecError("give one of per_positive= or per_user=, not both")
        for name in ("per_positive", "per_user"):
            v = getattr(self, name)
            if v is not None:
                if not _is_int(v) or v < 1:
                    raise SpecError(f"{name} must be an integer >= 1, got {v!r}")
                object.__setattr__(self, name, int(v))
        if not _is_int(self.seed) or self.seed < 0:
            raise SpecError(f"seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        if self.redraw not in REDRAWS:
            raise SpecError(f"redraw must be one of {list(REDRAWS)}, got {self.redraw!r}")

    # ------------------------------------------------------------------ the rule
    def item_weights(self, interactions: Interactions) -> np.ndarray:
        """Unnormalised ``pi(i)`` per item index (see the module docstring)."""
        if self.kind == "uniform":
            return np.ones(interactions.n_items)
        d = interactions.item_counts().astype(np.float64)
        return np.power(d, self.beta)  # 0 ** 0 = 1: beta=0 is uniform

    def n_per_user(self, interactions: Interactions) -> np.ndarray:
        """``m_u`` per user index."""
        n_u = interactions.user_counts().astype(np.int64)
        if self.per_positive is not None:
            return n_u * self.per_positive
        return np.where(n_u > 0, self.per_user, 0).astype(np.int64)

    def sample(self, interactions: Interactions, seed: int | None = None, *,
               distinct: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Draw negatives: ``(user_idx, item_idx)`` int32 arrays (indices into the
        interactions' vocabularies), grouped by user in index order. Deterministic for a
        seed (``seed=None`` uses :attr:`seed`). Never returns a positive of its user.

        ``distinct=False`` draws with replacement (a pair may repeat). ``distinct=True``
        draws each user's negatives without replacement (successive sampling, see the
        module docstring) with ``m_u`` capped at the number of candidate items
        ``|A_u|``; :meth:`training_ratings` uses it. The two modes consume the random
        stream differently: they do not give the same pairs for one seed.

        Raises
        ------
        DataError
            Not an :class:`Interactions`, or a user whose positives cover every item that
            can be sampled.
        """
        if not isinstance(interactions, Interactions):
            raise DataError(f"sample expects an Interactions, got "
                            f"{type(interactions).__name__}")
        if seed is None:
            seed = self.seed
        elif not _is_int(seed) or seed < 0:
            raise SpecError(f"seed must be a non-negative integer, got {seed!r}")
        rng = np.random.default_rng(int(seed))
        n_items = interactions.n_items
        pi = self.item_weights(interactions)
        total = pi.sum()
        p = pi / total
        # mass of each user's positives under p: the rejection probability
        pos_mass = np.bincount(interactions.user, weights=p[interactions.item],
                               minlength=interactions.n_users)
        m_u = self.n_per_user(interactions)
        free = 1.0 - pos_mass
        stuck = (m_u > 0) & (free <= 1e-12)
        if stuck.any():
            u0 = int(np.flatnonzero(stuck)[0])
            what = ("every item" if self.kind == "uniform" or self.beta == 0
                    else "every item with nonzero popularity")
            raise DataError(
                f"{int(stuck.sum())} user(s) have interacted with {what}, so no negative can "
                f"be drawn for them (e.g. user {interactions.users.ids[u0]!r}); drop them "
                "(e.g. with a k-core on items) or sample per_user only for others")
        if distinct:
            m_u = np.minimum(m_u, self.n_candidates(interactions))
        users = np.repeat(np.arange(interactions.n_users, dtype=np.int64), m_u)
        items = np.full(len(users), -1, np.int64)
        pos_keys = (interactions.user.astype(np.int64) * n_items
                    + interactions.item.astype(np.int64))  # sorted: stored order
        acc_keys = np.zeros(0, np.int64)  # accepted (user, item) keys, sorted (distinct)
        cdf = np.cumsum(p)
        pending = np.arange(len(users))
        for _ in range(_REJECTION_ROUNDS):
            if not len(pending):
                break
            if self.kind == "uniform":
                draw = rng.integers(0, n_items, size=len(pending))
            else:
                draw = np.searchsorted(cdf, rng.random(len(pending)) * cdf[-1], side="right")
                draw = np.minimum(draw, n_items - 1)
            keys = users[pending] * n_items + draw
            ok = ~_is_positive(pos_keys, keys)
            if distinct:
                if len(acc_keys):
                    ok &= ~_is_positive(acc_keys, keys)
                # of repeats within this round keep the first (earliest in the stream)
                first = np.zeros(len(keys), bool)
                first[np.unique(keys, return_index=True)[1]] = True
                ok &= first
                acc_keys = np.sort(np.concatenate([acc_keys, keys[ok]]))
            items[pending[ok]] = draw[ok]
            pending = pending[~ok]
        if len(pending):  # exact draws from the complement for the heavy users left
            indptr = interactions.indptr
            slots = np.concatenate([[0], np.cumsum(m_u)])  # user u's slots: a range
            for u in np.unique(users[pending]):
                rows = pending[users[pending] == u]
                w = p.copy()
                w[interactions.item[indptr[u]:indptr[u + 1]]] = 0.0
                if distinct:
                    mine = items[slots[u]:slots[u + 1]]
                    w[mine[mine >= 0]] = 0.0
                items[rows] = rng.choice(n_items, size=len(rows), p=w / w.sum(),
                                         replace=not distinct)
        return users.astype(np.int32), items.astype(np.int32)

    def n_candidates(self, interactions: Interactions) -> np.ndarray:
        """``|A_u|`` per user index: items with ``pi(i) > 0`` that are not positives of
        ``u`` (the most distinct negatives the user can get)."""
        pos = self.item_weights(interactions) > 0
        return (int(pos.sum()) - np.bincount(interactions.user,
                                             weights=pos[interactions.item].astype(np.float64),
                                             minlength=interactions.n_users)
                ).astype(np.int64)

    def training_ratings(self, interactions: Interactions, seed: int | None = None
                         ) -> Ratings:
        """The 0/1 training set of a Bernoulli likelihood: every stored pair of
        ``interactions`` as ``1`` plus, per user, ``m_u`` distinct sampled negatives as
        ``0`` (``sample(..., distinct=True)``; ``m_u`` capped at ``|A_u|``, see the module
        docstring). Same vocabularies as ``interactions``; sorted by ``(user, item)``; no
        timestamps. Deterministic for a seed (``seed=None`` uses :attr:`seed`).

        >>> s = NegativeSampler("uniform", per_positive=4, seed=1)
        >>> r = s.training_ratings(interactions)  # doctest: +SKIP
        """
        nu, ni = self.sample(interactions, seed, distinct=True)
        user = np.concatenate([interactions.user.astype(np.int64), nu.astype(np.int64)])
        item = np.concatenate([interactions.item.astype(np.int64), ni.astype(np.int64)])
        y = np.concatenate([np.ones(interactions.nnz), np.zeros(len(nu))])
        order = np.lexsort((item, user))
        return Ratings.from_indices(user[order].astype(np.int32),
                                    item[order].astype(np.int32), y[order],
                                    interactions.users, interactions.items)

    def to_string(self) -> str:
        """The rule as a short string (the grammar of :meth:`from_string`)."""
        beta = f"^{self.beta!r}" if self.kind == "popularity" and self.beta != 1.0 else ""
        n = (f"{self.per_positive}" if self.per_positive is not None
             else f"{self.per_user}/user")
        return f"{self.kind}{beta}:{n}" + ("@sweep" if self.redraw == "sweep" else "")

    @classmethod
    def from_string(cls, text: str, seed: int = 0) -> "NegativeSampler":
        """Parse a short rule such as ``"uniform:4"`` or ``"popularity^0.75:2"`` (the
        grammar is in the module docstring); ``seed`` becomes the sampler's seed."""
        if not isinstance(text, str):
            raise SpecError(f"a negative-sampling rule must be a string, got {text!r}")
        m = _RULE.match("".join(text.split()).lower())
        if m is None:
            raise SpecError(f"cannot parse the negative-sampling rule {text!r}; write "
                            "kind[^beta][:n[/user]][@redraw], e.g. 'uniform:4', "
                            "'popularity:4', 'popularity^0.75:2', 'uniform:50/user' or "
                            "'uniform:4@sweep'")
        kind = m["kind"]
        if kind not in _KINDS:
            raise SpecError(f"unknown negative-sampling kind {kind!r} in {text!r}; choose "
                            f"one of {list(_KINDS)}")
        kw: dict = {"kind": kind, "seed": seed}
        if m["beta"] is not None:
            if kind != "popularity":
                raise SpecError(f"'^beta' applies to 'popularity' only, got {text!r}")
            try:
                kw["beta"] = float(m["beta"])
            except ValueError:
                raise SpecError(f"beta must be a number, got {m['beta']!r} in {text!r}"
                                ) from None
        if m["n"] is not None:
            if not m["n"].isdigit() or int(m["n"]) < 1:
                raise SpecError(f"the number of negatives must be an integer >= 1, got "
                                f"{m['n']!r} in {text!r}")
            n = int(m["n"])
        else:
            n = 1
        if m["per"]:
            kw.update(per_positive=None, per_user=n)
        else:
            kw["per_positive"] = n
        if m["redraw"] is not None:
            if m["redraw"] not in REDRAWS:
                raise SpecError(f"unknown redraw {m['redraw']!r} in {text!r}; write "
                                f"'@fit' or '@sweep'")
            kw["redraw"] = m["redraw"]
        return cls(**kw)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """A JSON-ready record of the rule and its seed (``schema`` 1)."""
        return {"schema": _SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "NegativeSampler":
        """Rebuild from :meth:`to_dict` output; unknown keys or schema raise SpecError."""
        return dataclass_from_record(cls, d, _SCHEMA)


def _is_positive(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Membership of ``keys`` in the sorted array ``sorted_keys`` (vectorised)."""
    j = np.searchsorted(sorted_keys, keys)
    j = np.minimum(j, len(sorted_keys) - 1)
    return sorted_keys[j] == keys


def as_sampler(negatives, seed: int = 0) -> NegativeSampler:
    """A :class:`NegativeSampler` from one itself (returned unchanged: it keeps its own
    seed), its :meth:`~NegativeSampler.to_dict` record, or a short rule string
    (:meth:`NegativeSampler.from_string`, given ``seed``). Anything else raises
    :class:`~bayesmf.errors.SpecError`."""
    if isinstance(negatives, NegativeSampler):
        return negatives
    if isinstance(negatives, dict):
        return NegativeSampler.from_dict(negatives)
    if isinstance(negatives, str):
        return NegativeSampler.from_string(negatives, seed=seed)
    raise SpecError(f"negatives= must be a NegativeSampler, its dict, or a rule such as "
                    f"'uniform:4'; got {type(negatives).__name__} {negatives!r}")


def with_negatives(interactions: Interactions, negatives, seed: int | None = None
                   ) -> Ratings:
    """The 0/1 training :class:`~bayesmf.data.ratings.Ratings` of ``interactions`` with
    sampled negatives: ``as_sampler(negatives).training_ratings(interactions, seed)``
    (a rule string takes ``seed``, default 0; a sampler uses its own seed unless ``seed``
    is given). Positives are 1, negatives 0; see :meth:`NegativeSampler.training_ratings`.
    """
    s = as_sampler(negatives, seed=0 if seed is None else seed)
    return s.training_ratings(interactions, seed)
