"""Synthetic posteriors with known convergence behaviour (no inference backend needed).

Used by test_diagnostics.py and test_io.py: the draws are constructed directly, so the
expected R-hat / predictions are known by construction.
"""

from __future__ import annotations

import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo


def synthetic_data(n_users=30, n_items=40, k=3, density=0.3, seed=0, str_ids=False):
    """Ratings from a true low-rank model plus the true parameters."""
    rng = np.random.default_rng(seed)
    U = rng.normal(0, 0.7, (n_users, k))
    V = rng.normal(0, 0.7, (n_items, k))
    bu = rng.normal(0, 0.3, n_users)
    bi = rng.normal(0, 0.3, n_items)
    mu = 3.5
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), np.arange(n_users) % n_items] = True  # every user rates
    mask[np.arange(n_items) % n_users, np.arange(n_items)] = True  # every item rated
    u, i = np.nonzero(mask)
    y = mu + bu[u] + bi[i] + np.sum(U[u] * V[i], 1) + rng.normal(0, 0.5, len(u))
    y = np.clip(np.rint(y * 2) / 2, 0.5, 5.0)
    uids = np.array([f"u{j}" for j in range(n_users)], object) if str_ids \
        else np.arange(100, 100 + n_users)
    iids = np.arange(1000, 1000 + n_items)
    r = Ratings.from_arrays(uids[u], iids[i], y)
    return r, dict(mu=mu, bu=bu, bi=bi, U=U, V=V, tau=4.0)


def make_posterior(ratings, truth, *, chains=4, draws=200, noise=0.05, seed=1,
                   mode="mixed", hyper=False, method="synthetic"):
    """Draws scattered around ``truth`` in the ratings' vocabularies.

    mode:
      * ``"mixed"``: i.i.d. draws around the truth in every chain (R-hat ~ 1);
      * ``"stuck"``: each chain sits at its own offset of mu, biases and factors
        (R-hat >> 1 everywhere);
      * ``"rotated"``: like mixed, but each chain's factors are rotated by its own
        random orthogonal R (U R, V R): identical predictions, raw-factor R-hat >> 1.
    """
    rng = np.random.default_rng(seed)
    users, items = ratings.users, ratings.items
    # truth is indexed by the synthetic integer order; the ratings vocab preserves first
    # appearance order, which for np.nonzero output is the sorted user order
    N, M = len(users), len(items)
    k = truth["U"].shape[1]
    C, D = chains, draws

    def around(x, scale=noise):
        x = np.asarray(x, float)
        return x + scale * rng.standard_normal((C, D) + x.shape)

    mu = around(truth["mu"])
    bu = around(truth["bu"][:N])
    bi = around(truth["bi"][:M])
    U = around(truth["U"][:N])
    V = around(truth["V"][:M])
    tau = np.abs(around(truth["tau"], 0.1))
    if mode == "stuck":
        off = np.linspace(-1.0, 1.0, C)[:, None]
        mu = mu + off
        bu = bu + off[:, :, None]
        bi = bi - off[:, :, None]
        U = U + off[:, :, None, None]
        tau = tau + 0.5 * (off + 1.0)
    elif mode == "rotated":
        for c in range(C):
            q, _ = np.linalg.qr(rng.standard_normal((k, k)))
            U[c] = U[c] @ q
            V[c] = V[c] @ q
    elif mode != "mixed":
        raise ValueError(mode)
    d = dict(mu=mu, bu=bu, bi=bi, U=U, V=V, tau=tau)
    if hyper:
        d["lambda_bu"] = np.abs(around(10.0, 0.5))
        d["lambda_bi"] = np.abs(around(8.0, 0.5))
        d["mu_U"] = around(np.zeros(k))
        A = around(np.zeros((k, k)), 0.1)
        d["Lambda_U"] = 2.0 * np.eye(k) + np.einsum("cdkl,cdml->cdkm", A, A)
        d["mu_V"] = around(np.zeros(k))
        d["Lambda_V"] = d["Lambda_U"] + 0.5 * np.eye(k)
    d = {n: v.astype(np.float32) for n, v in d.items()}
    stats = {"log_likelihood": rng.normal(-100, 1, (C, D)),
             "diverging": np.zeros((C, D), bool)}
    return Posterior(d, ModelSpec(rank=k), users, items, TrainInfo.from_ratings(ratings),
                     method, stats, attrs={"seed": seed})
