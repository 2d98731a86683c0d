"""Synthetic explicit-rating problem with MovieLens-10M's shape (for the GPU check).

ML-10M has 10,000,054 ratings of 69,878 users on 10,677 items (density 1.34%), with
heavy-tailed degrees (users: min 20, median ~69, mean ~143, max 7,359; items: median
~135, mean ~937, max ~34,900). :func:`synthetic_ml10m` builds a problem of that shape with
a planted BPMF structure, vectorised numpy only (a few seconds at 10M ratings).

Model. Activity weights :math:`a_u \\sim \\mathrm{LogNormal}(0, 1.2^2)` and popularity
:math:`p_i \\sim \\mathrm{LogNormal}(0, 2^2)` (sigmas chosen so mean/median of the degrees
is about ML-10M's, 2.1 and 6.9). Pairs: one per user (item drawn :math:`\\propto p_i`),
one per item (user :math:`\\propto a_u`) so every row and column is observed, then pairs
drawn from :math:`a_u p_i` (normalised), duplicates dropped and re-drawn until exactly
``n_ratings`` distinct pairs remain. Ratings

.. math:: r_{ui} = \\mu + b_u + c_i + U_u^\\top V_i + \\varepsilon_{ui},\\quad
          U_u, V_i \\sim N(0, k^{-1/2} s^2 I_k),\\ b_u \\sim N(0, 0.4^2),\\
          c_i \\sim N(0, 0.5^2),\\ \\varepsilon \\sim N(0, \\sigma^2)

with :math:`\\mu = 3.5`, :math:`s = 0.8` (so :math:`\\mathrm{Var}(U^\\top V) = s^4 = 0.41`)
and :math:`\\sigma` = ``noise_std`` (0.8). Ratings are continuous (not rounded); the best
achievable test RMSE is about ``noise_std``.

Scaling down (``n_ratings < 10M``): unless given, ``n_users`` and ``n_items`` are ML-10M's
times :math:`\\sqrt{n/10^7}`, which keeps the density (and so the mean degrees' ratio).
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["synthetic_ml10m", "train_test", "ML10M_RATINGS", "ML10M_USERS", "ML10M_ITEMS"]

ML10M_RATINGS, ML10M_USERS, ML10M_ITEMS = 10_000_054, 69_878, 10_677


def _pairs(rng, n, a, p, n_users, n_items):
    """Exactly ``n`` distinct (user, item) pairs covering every user and item; see module."""
    cu, cp = np.cumsum(a), np.cumsum(p)
    cu /= cu[-1]
    cp /= cp[-1]

    def draw(m, cdf, size):  # inverse-CDF sampling, clipped against float round-off
        return np.minimum(np.searchsorted(cdf, rng.random(m)), size - 1)

    keys = np.concatenate([
        np.arange(n_users, dtype=np.int64) * n_items + draw(n_users, cp, n_items),
        draw(n_items, cu, n_users).astype(np.int64) * n_items + np.arange(n_items)])
    keys = np.unique(keys)
    acc = 1.0  # fraction of the last round's draws that were new pairs
    for _ in range(200):
        short = n - keys.size
        if short <= 0:
            break
        m = int(short / acc * 1.1) + 1000
        new = np.unique(draw(m, cu, n_users).astype(np.int64) * n_items + draw(m, cp, n_items))
        new = new[~np.isin(new, keys, assume_unique=True)]
        acc = max(new.size / m, 0.02)
        if new.size > short:  # a uniform subset keeps the a_u p_i law of the new pairs
            new = rng.choice(new, short, replace=False)
        keys = np.concatenate([keys, new])
        keys.sort()
    else:  # pragma: no cover - only for absurd densities
        raise ValueError(f"could not draw {n} distinct pairs in a {n_users}x{n_items} matrix")
    keys = rng.permutation(keys)
    return (keys // n_items).astype(np.int32), (keys % n_items).astype(np.int32)


def synthetic_ml10m(seed: int, n_ratings: int = 10_000_000, *, n_users: int | None = None,
                    n_items: int | None = None, rank: int = 32, noise_std: float = 0.8,
                    user_sigma: float = 1.2, item_sigma: float = 2.0,
                    chunk: int = 1_000_000) -> dict:
    """An ML-10M-shaped rating problem with a planted rank-``rank`` structure (module docs).

    Returns a dict: ``user``, ``item`` (int32 indices, every index in ``range(n_users)`` /
    ``range(n_items)`` occurs at least once), ``rating`` (float32), ``n_users``,
    ``n_items``, ``truth`` (``mu``, ``bu``, ``bi``, ``U``, ``V``, ``noise_std``, and
    ``mean``: the noise-free :math:`\\mu + b_u + c_i + U_u^\\top V_i` of each pair) and
    ``seconds`` (build time). Deterministic in ``seed``.
    """
    t0 = time.perf_counter()
    n = int(n_ratings)
    f = np.sqrt(n / 1e7)
    N = int(n_users) if n_users is not None else max(2, int(round(ML10M_USERS * f)))
    M = int(n_items) if n_items is not None else max(2, int(round(ML10M_ITEMS * f)))
    if n < N + M:
        raise ValueError(f"n_ratings={n} must be at least n_users + n_items = {N + M}")
    if n > 0.5 * N * M:
        raise ValueError(f"n_ratings={n} is over half of the {N}x{M} matrix")
    rng = np.random.default_rng(seed)
    a = rng.lognormal(0.0, user_sigma, N)
    p = rng.lognormal(0.0, item_sigma, M)
    u, i = _pairs(rng, n, a, p, N, M)
    s = 0.8 / rank ** 0.25
    U = (s * rng.standard_normal((N, rank))).astype(np.float32)
    V = (s * rng.standard_normal((M, rank))).astype(np.float32)
    bu = rng.normal(0.0, 0.4, N).astype(np.float32)
    bi = rng.normal(0.0, 0.5, M).astype(np.float32)
    mu = np.float32(3.5)
    mean = np.empty(n, np.float32)
    for lo in range(0, n, chunk):  # bounded memory: chunk x rank floats at a time
        uu, ii = u[lo:lo + chunk], i[lo:lo + chunk]
        mean[lo:lo + chunk] = np.einsum("nk,nk->n", U[uu], V[ii]) + bu[uu] + bi[ii] + mu
    rating = mean + rng.standard_normal(n, dtype=np.float32) * np.float32(noise_std)
    return {"user": u, "item": i, "rating": rating, "n_users": N, "n_items": M,
            "truth": {"mu": float(mu), "bu": bu, "bi": bi, "U": U, "V": V,
                      "noise_std": float(noise_std), "mean": mean},
            "seconds": time.perf_counter() - t0}


def train_test(d: dict, test_share: float, seed: int = 1):
    """Split a :func:`synthetic_ml10m` problem at random: ``(train, test)`` with ``train``
    a :class:`~bayesmf.data.ratings.Ratings` over all users and items (ids = indices) and
    ``test = (user, item, rating)`` arrays of about ``test_share`` of the pairs."""
    from bayesmf.data.ratings import Ratings
    from bayesmf.data.vocab import Vocabulary

    test = np.random.default_rng(seed).random(len(d["rating"])) < test_share
    tr = ~test
    train = Ratings.from_indices(d["user"][tr], d["item"][tr],
                                 d["rating"][tr].astype(np.float64),
                                 Vocabulary(np.arange(d["n_users"])),
                                 Vocabulary(np.arange(d["n_items"])))
    return train, (d["user"][test], d["item"][test], d["rating"][test])
