"""Synthetic posteriors for the evaluate/recommend tests (known answers, no sampler)."""

from __future__ import annotations

import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo


def make_posterior(n_users=30, n_items=40, k=3, chains=1, draws=20, density=0.3, seed=0,
                   noise_sd=0.5, draw_sd=0.1, user_ids=None, item_ids=None, method="gibbs",
                   extra_draws=None):
    """Truth U0, V0, biases; draws = truth + N(0, draw_sd^2); training pairs ~ density."""
    rng = np.random.default_rng(seed)
    U0 = rng.normal(0, 1, (n_users, k))
    V0 = rng.normal(0, 1, (n_items, k))
    bu0 = rng.normal(0, 0.3, n_users)
    bi0 = rng.normal(0, 0.3, n_items)
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    mask[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    uu, ii = np.nonzero(mask)
    r = 3.5 + bu0[uu] + bi0[ii] + np.einsum("nk,nk->n", U0[uu], V0[ii]) + \
        rng.normal(0, noise_sd, len(uu))
    users = Vocabulary(np.arange(n_users) if user_ids is None else user_ids, "user")
    items = Vocabulary(np.arange(n_items) if item_ids is None else item_ids, "item")
    ratings = Ratings.from_indices(uu, ii, np.round(np.clip(r, 1, 5) * 2) / 2, users, items)
    C, D = chains, draws
    d = {
        "mu": 3.5 + rng.normal(0, 0.02, (C, D)),
        "bu": bu0 + rng.normal(0, draw_sd, (C, D, n_users)),
        "bi": bi0 + rng.normal(0, draw_sd, (C, D, n_items)),
        "U": (U0 + rng.normal(0, draw_sd, (C, D, n_users, k))).astype(np.float32),
        "V": (V0 + rng.normal(0, draw_sd, (C, D, n_items, k))).astype(np.float32),
        "tau": 1 / noise_sd ** 2 * np.exp(rng.normal(0, 0.05, (C, D))),
    }
    if extra_draws:
        d.update(extra_draws)
    spec = ModelSpec(rank=k)
    post = Posterior(d, spec, users, items, TrainInfo.from_ratings(ratings), method)
    return post, ratings


def heldout(post, ratings, frac=0.3, seed=1, noise_sd=0.5):
    """Test ratings on pairs not in training, simulated from the posterior mean + noise."""
    rng = np.random.default_rng(seed)
    N, M = len(post.users), len(post.items)
    seen = np.zeros((N, M), bool)
    seen[ratings.user, ratings.item] = True
    uu, ii = np.nonzero(~seen & (rng.random((N, M)) < frac))
    m = post.predict(post.users.ids[uu], post.items.ids[ii]).mean
    y = np.round(np.clip(m + rng.normal(0, noise_sd, len(m)), 1, 5) * 2) / 2
    return Ratings.from_indices(uu, ii, y, post.users, post.items)


def posterior_from_arrays(mu, bu, bi, U, V, tau, train: Ratings, method="gibbs", **extra):
    """Posterior from (S, ...) arrays (one chain)."""
    d = {"mu": np.asarray(mu, float)[None], "bu": np.asarray(bu, float)[None],
         "bi": np.asarray(bi, float)[None], "U": np.asarray(U)[None], "V": np.asarray(V)[None],
         "tau": np.asarray(tau, float)[None]}
    d.update({k: np.asarray(v)[None] for k, v in extra.items()})
    spec = ModelSpec(rank=d["U"].shape[-1])
    return Posterior(d, spec, train.users, train.items, TrainInfo.from_ratings(train), method)


def als_map(ratings: Ratings, k=2, reg_factors=0.1, reg_bias=0.1, iters=200, seed=0,
            tau=4.0):
    """A tiny numpy ALS (ridge, with biases, mu = global mean) -> a 1x1 MAP Posterior.

    Each half-step solves the exact ridge problem of one side given the other, i.e. the
    fold-in conditional with prior='ridge', so at convergence every user is a fixed point.
    """
    rng = np.random.default_rng(seed)
    N, M = ratings.n_users, ratings.n_items
    u, i, y = ratings.user.astype(int), ratings.item.astype(int), ratings.rating
    mu = y.mean()
    A = np.concatenate([np.zeros((N, 1)), 0.1 * rng.standard_normal((N, k))], 1)  # [bu, U]
    B = np.concatenate([np.zeros((M, 1)), 0.1 * rng.standard_normal((M, k))], 1)  # [bi, V]
    D = np.diag([reg_bias] + [reg_factors] * k)
    for _ in range(iters):
        for side in (0, 1):
            own, oth = (u, i) if side == 0 else (i, u)
            X, Y = (A, B) if side == 0 else (B, A)
            for r in range(X.shape[0]):
                sel = own == r
                Z = np.concatenate([np.ones((sel.sum(), 1)), Y[oth[sel], 1:]], 1)
                res = y[sel] - mu - Y[oth[sel], 0]
                X[r] = np.linalg.solve(Z.T @ Z + D, Z.T @ res)
    spec = ModelSpec(rank=k, reg_factors=reg_factors, reg_bias=reg_bias)
    d = {"mu": np.full((1, 1), mu), "bu": A[None, None, :, 0], "bi": B[None, None, :, 0],
         "U": A[None, None, :, 1:], "V": B[None, None, :, 1:], "tau": np.full((1, 1), tau)}
    return Posterior(d, spec, ratings.users, ratings.items, TrainInfo.from_ratings(ratings), "map")


def checkerboard(n_per=6, m_per=8, seed=0, withhold=True):
    """Two user groups x two item groups: 5 inside the own group, 1 outside. Each user has
    rated all own-group items but one (withheld: the test set) and half of the other
    group's items, so the withheld item competes with the unrated other-group items."""
    rng = np.random.default_rng(seed)
    N, M = 2 * n_per, 2 * m_per
    gu = np.repeat([0, 1], n_per)
    gi = np.repeat([0, 1], m_per)
    rows, test = [], []
    for uu in range(N):
        own = np.flatnonzero(gi == gu[uu])
        held = own[rng.integers(len(own))] if withhold else -1
        others = np.flatnonzero(gi != gu[uu])
        rated_other = set(rng.choice(others, size=len(others) // 2, replace=False).tolist())
        for ii in range(M):
            r = 5.0 if gi[ii] == gu[uu] else 1.0
            if ii == held:
                test.append((uu, ii, r))
            elif gi[ii] == gu[uu] or ii in rated_other:
                rows.append((uu, ii, r))
    users = Vocabulary(np.arange(N), "user")
    items = Vocabulary(np.arange(M), "item")
    tr = np.array(rows)
    train = Ratings.from_indices(tr[:, 0].astype(int), tr[:, 1].astype(int), tr[:, 2], users, items)
    te = np.array(test) if test else np.zeros((0, 3))
    test_r = Ratings.from_indices(te[:, 0].astype(int), te[:, 1].astype(int), te[:, 2],
                                  users, items) if len(te) else None
    return train, test_r
