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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from bayesmf.data.interactions import Interactions
from bayesmf.errors import DataError, SpecError

__all__ = ["NegativeSampler"]

_KINDS = ("uniform", "popularity")
_SCHEMA = 1
_REJECTION_ROUNDS = 16


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
    per_positive : int or None, default 1
        Negatives per positive pair (``m_u = per_positive * n_u``).
    per_user : int or None
        Negatives per user instead (``m_u = per_user``); give exactly one of the two.
    seed : int, default 0
        Seed of ``numpy.random.default_rng``; :meth:`sample` may override it.
    """

    kind: str = "uniform"
    beta: float = 1.0
    per_positive: int | None = 1
    per_user: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.kind not in _KINDS:
            raise SpecError(f"kind must be one of {list(_KINDS)}, got {self.kind!r}")
        if isinstance(self.beta, (bool, np.bool_)) or not isinstance(
                self.beta, (int, float, np.integer, np.floating)) or not np.isfinite(self.beta) \
                or self.beta < 0:
            raise SpecError(f"beta must be a finite number >= 0, got {self.beta!r}")
        object.__setattr__(self, "beta", float(self.beta))
        if (self.per_positive is None) == (self.per_user is None):
            raise SpecError("give exactly one of per_positive= or per_user= (set the other "
                            "to None)")
        for name in ("per_positive", "per_user"):
            v = getattr(self, name)
            if v is not None:
                if not _is_int(v) or v < 1:
                    raise SpecError(f"{name} must be an integer >= 1, got {v!r}")
                object.__setattr__(self, name, int(v))
        if not _is_int(self.seed) or self.seed < 0:
            raise SpecError(f"seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))

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

    def sample(self, interactions: Interactions, seed: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Draw negatives: ``(user_idx, item_idx)`` int32 arrays (indices into the
        interactions' vocabularies), grouped by user in index order. Deterministic for a
        seed (``seed=None`` uses :attr:`seed`). Never returns a positive of its user.

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
        users = np.repeat(np.arange(interactions.n_users, dtype=np.int64), m_u)
        items = np.full(len(users), -1, np.int64)
        pos_keys = (interactions.user.astype(np.int64) * n_items
                    + interactions.item.astype(np.int64))  # sorted: stored order
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
            ok = ~_is_positive(pos_keys, users[pending] * n_items + draw)
            items[pending[ok]] = draw[ok]
            pending = pending[~ok]
        if len(pending):  # exact draws from the complement for the heavy users left
            indptr = interactions.indptr
            for u in np.unique(users[pending]):
                rows = pending[users[pending] == u]
                w = p.copy()
                w[interactions.item[indptr[u]:indptr[u + 1]]] = 0.0
                items[rows] = rng.choice(n_items, size=len(rows), p=w / w.sum())
        return users.astype(np.int32), items.astype(np.int32)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """A JSON-ready record of the rule and its seed (``schema`` 1)."""
        return {"schema": _SCHEMA, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "NegativeSampler":
        """Rebuild from :meth:`to_dict` output; unknown keys or schema raise SpecError."""
        if not isinstance(d, dict):
            raise SpecError(f"expected a dict, got {type(d).__name__}")
        d = dict(d)
        schema = d.pop("schema", _SCHEMA)
        if schema != _SCHEMA:
            raise SpecError(f"unknown NegativeSampler schema {schema!r} (this version reads "
                            f"{_SCHEMA})")
        extra = sorted(set(d) - set(cls.__dataclass_fields__))
        if extra:
            raise SpecError(f"unknown NegativeSampler field(s) {extra}")
        return cls(**d)


def _is_positive(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Membership of ``keys`` in the sorted array ``sorted_keys`` (vectorised)."""
    j = np.searchsorted(sorted_keys, keys)
    j = np.minimum(j, len(sorted_keys) - 1)
    return sorted_keys[j] == keys
