"""Synthetic large posterior for the recommendation benchmark (no sampler needed)."""

from __future__ import annotations

import numpy as np

from bayesmf.data.ratings import RatingScale
from bayesmf.data.vocab import Vocabulary
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo


def synthetic_posterior(n_users=70_000, n_items=10_000, k=32, draws=100, chains=1,
                        mean_seen=50, draw_sd=0.15, seed=0) -> Posterior:
    """Draws = truth + N(0, draw_sd^2) per draw (float32 factors); seen pairs: per user
    ~ mean_seen items drawn by a Zipf-like item popularity."""
    rng = np.random.default_rng(seed)
    N, M, S = n_users, n_items, chains * draws
    U0 = (rng.standard_normal((N, k), dtype=np.float32) / np.float32(k ** 0.25))
    V0 = (rng.standard_normal((M, k), dtype=np.float32) / np.float32(k ** 0.25))
    U = np.empty((chains, draws, N, k), np.float32)
    V = np.empty((chains, draws, M, k), np.float32)
    for c in range(chains):
        for d in range(draws):
            U[c, d] = U0 + draw_sd * rng.standard_normal((N, k), dtype=np.float32)
            V[c, d] = V0 + draw_sd * rng.standard_normal((M, k), dtype=np.float32)
    bu0 = rng.normal(0, 0.3, N)
    bi0 = rng.normal(0, 0.3, M)
    dr = {"mu": 3.6 + rng.normal(0, 0.01, (chains, draws)),
          "bu": (bu0 + rng.normal(0, 0.05, (chains, draws, N))).astype(np.float32),
          "bi": (bi0 + rng.normal(0, 0.05, (chains, draws, M))).astype(np.float32),
          "U": U, "V": V, "tau": rng.uniform(1.2, 1.3, (chains, draws))}
    pop = 1.0 / np.arange(1, M + 1) ** 0.8
    pop /= pop.sum()
    perm = rng.permutation(M)
    cnt = np.maximum(5, rng.geometric(1.0 / mean_seen, N))
    uu = np.repeat(np.arange(N), cnt)
    ii = perm[rng.choice(M, size=len(uu), p=pop)]
    key = np.unique(uu.astype(np.int64) * M + ii)
    uu, ii = key // M, key % M
    indptr = np.concatenate([[0], np.cumsum(np.bincount(uu, minlength=N))]).astype(np.int64)
    train = TrainInfo(RatingScale(1.0, 5.0, (1.0, 2.0, 3.0, 4.0, 5.0)), 3.6, len(key),
                      np.bincount(uu, minlength=N).astype(np.int64),
                      np.bincount(ii, minlength=M).astype(np.int64), indptr,
                      ii.astype(np.int32), {"synthetic": True})
    return Posterior(dr, ModelSpec(rank=k), Vocabulary(np.arange(N), "user"),
                     Vocabulary(np.arange(M), "item"), train, "synthetic")
