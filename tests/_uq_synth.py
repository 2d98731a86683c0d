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


def posterior_from_arrays(mu, bu, bi, U, V, tau, train: Ratings, method="gibbs", **extra):
    """Posterior from (S, ...) arrays (one chain)."""
    d = {"mu": np.asarray(mu, float)[None], "bu": np.asarray(bu, float)[None],
         "bi": np.asarray(bi, float)[None], "U": np.asarray(U)[None], "V": np.asarray(V)[None],
         "tau": np.asarray(tau, float)[None]}
    d.update({k: np.asarray(v)[None] for k, v in extra.items()})
    spec = ModelSpec(rank=d["U"].shape[-1])
    return Posterior(d, spec, train.users, train.items, TrainInfo.from_ratings(train), method)
