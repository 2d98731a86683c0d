"""Numerical robustness through the public API: near-singular float32 precisions, users
with a single rating, items only in the test set, rating scales far from 1-5.

MAP runs every case; Gibbs runs the near-singular case and the 0-100 scale in the fast
suite (each Gibbs fit compiles for several seconds), the rest is marked slow.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

import bayesmf


def _has(mod):
    try:
        return importlib.util.find_spec(mod) is not None
    except ImportError:
        return False


def make_split(lo, hi, seed=0, N=60, M=40, k=2, density=0.3, noise=0.3):
    """Synthetic low-rank ratings mapped linearly onto ``[lo, hi]``; test = 15% of the
    pairs, all ratings of the last two items (items only in test) and all but one rating
    of users 0..4 (users with a single training rating)."""
    rng = np.random.default_rng(seed)
    U, V = rng.normal(0, 1, (N, k)), rng.normal(0, 1, (M, k))
    bu, bi = rng.normal(0, .5, N), rng.normal(0, .5, M)
    u, i = np.nonzero(rng.random((N, M)) < density)
    z = bu[u] + bi[i] + (U[u] * V[i]).sum(1) + noise * rng.standard_normal(len(u))
    z = (z - z.min()) / (z.max() - z.min())
    df = pd.DataFrame({"user": u, "item": i, "rating": lo + (hi - lo) * z})
    test = rng.random(len(df)) < 0.15
    test |= df.item.isin([M - 1, M - 2]).to_numpy()
    for uu in range(5):
        rows = np.flatnonzero((df.user == uu).to_numpy())
        test[rows] = True
        test[rows[0]] = False
    return df[~test].reset_index(drop=True), df[test].reset_index(drop=True)


def _check(method, lo, hi, max_rel_rmse, min_coverage, **opts):
    train, test = make_split(lo, hi)
    assert (train.groupby("user").size().loc[:4] == 1).all()
    assert set(test.item) - set(train.item)  # some items only in test
    m = bayesmf.BayesMF(method, rank=2, **opts).fit(train)
    p = m.predict(test)
    vals = p[["mean", "std", "std_param", "lower", "upper"]].to_numpy()
    assert np.all(np.isfinite(vals))
    assert np.all(p["std"] > 0) and np.all(p["lower"] <= p["upper"])
    y = test["rating"].to_numpy()
    sd = y.std()
    known = p["known_item"].to_numpy()
    assert (~known).sum() >= 5 and known.sum() >= 50
    rel = np.sqrt(np.mean((p["mean"].to_numpy() - y) ** 2)) / sd
    cold = np.sqrt(np.mean((p["mean"].to_numpy()[~known] - y[~known]) ** 2)) / sd
    single = test["user"].to_numpy() < 5
    rel_single = np.sqrt(np.mean((p["mean"].to_numpy()[single] - y[single]) ** 2)) / sd
    cover = np.mean((y >= p["lower"]) & (y <= p["upper"]))
    # predictions stay on the data's scale (no blow-up far from 1-5)
    span = hi - lo
    assert p["mean"].between(lo - span, hi + span).all()
    assert rel < max_rel_rmse, (method, lo, hi, rel)
    assert cold < 1.0 and rel_single < 1.0, (cold, rel_single)  # fallback ~ "some user"
    assert cover >= min_coverage, (method, lo, hi, cover)
    # the cold items' intervals are wider than those of known items (more uncertainty)
    assert p["std"][~known].mean() > p["std"][known].mean()
    return rel, cover


# MAP: the ridge strengths are not scale-aware (see the report), so its relative RMSE
# differs between scales of the same data; its intervals are noise-only (over-confident).
@pytest.mark.parametrize("lo, hi", [(1, 5), (0, 100), (-10, 10)])
def test_map_scales_single_raters_cold_items(lo, hi):
    _check("map", lo, hi, max_rel_rmse=1.05, min_coverage=0.5)


@pytest.mark.skipif(not _has("bayesmf.infer.gibbs"), reason="Gibbs not present")
def test_gibbs_scale_0_100_single_raters_cold_items():
    _check("gibbs", 0, 100, max_rel_rmse=0.9, min_coverage=0.85,
           num_samples=100, num_warmup=100)


@pytest.mark.slow
@pytest.mark.skipif(not _has("bayesmf.infer.gibbs"), reason="Gibbs not present")
@pytest.mark.parametrize("lo, hi", [(1, 5), (-10, 10)])
def test_gibbs_other_scales(lo, hi):
    _check("gibbs", lo, hi, max_rel_rmse=0.6, min_coverage=0.85,
           num_samples=100, num_warmup=100)


@pytest.mark.slow
@pytest.mark.parametrize("method, opts", [
    ("nuts", dict(num_samples=100, num_warmup=100, num_chains=1)),
    ("svi", dict(num_steps=3000, num_samples=100)),
])
def test_numpyro_methods_scale_0_100(method, opts):
    pytest.importorskip(f"bayesmf.infer.{method}")
    _check(method, 0, 100, max_rel_rmse=0.9, min_coverage=0.6, **opts)


@pytest.mark.skipif(not _has("bayesmf.infer.gibbs"), reason="Gibbs not present")
def test_gibbs_near_singular_float32_precisions():
    """Noise precision fixed at 1e10 on exactly rank-1 data with single-rating users: the
    per-user precisions Lambda_U + tau * sum x x^T have condition numbers ~1e9, beyond
    float32 (a plain float32 Cholesky fails on some of them); the sampler's jittered retry
    keeps every draw finite and the fit exact."""
    jnp = pytest.importorskip("jax.numpy")
    rng = np.random.default_rng(1)
    N, M = 30, 20
    u_f, v_f = rng.normal(0, 1, N), rng.normal(0, 1, M)
    mask = rng.random((N, M)) < 0.4
    mask[:5] = False
    mask[np.arange(5), rng.integers(0, M, 5)] = True
    u, i = np.nonzero(mask)
    df = pd.DataFrame({"user": u, "item": i, "rating": 3 + u_f[u] * v_f[i]})
    m = bayesmf.BayesMF("gibbs", rank=3, noise="fixed", noise_precision=1e10,
                        num_samples=30, num_warmup=30).fit(df)
    post = m.posterior
    for name in ("mu", "bu", "bi", "U", "V", "Lambda_U", "Lambda_V"):
        assert np.all(np.isfinite(post.draws[name])), name
    p = m.predict(df)
    assert np.all(np.isfinite(p[["mean", "std", "lower", "upper"]].to_numpy()))
    assert np.sqrt(np.mean((p["mean"] - df["rating"]) ** 2)) < 0.05
    # the case really is near-singular in float32: rebuild the users' (bias, factor)
    # precisions from the draws (float64) and factor them in float32
    tau, V, bi = post.flat("tau"), post.flat("V"), post.flat("bi")
    Lam, lam_b = post.flat("Lambda_U"), post.flat("lambda_bu")
    Ps, conds = [], []
    for s in range(0, post.n_samples, 10):
        prior = np.zeros((4, 4))
        prior[0, 0], prior[1:, 1:] = lam_b[s], Lam[s]
        for uu in range(N):
            X = np.concatenate([np.ones((mask[uu].sum(), 1)), V[s, mask[uu]]], axis=1)
            P = prior + tau[s] * X.T.astype(np.float64) @ X
            Ps.append(P)
            conds.append(np.linalg.cond(P))
    assert np.max(conds) > 1e8
    L = np.asarray(jnp.linalg.cholesky(jnp.asarray(np.array(Ps), jnp.float32)))
    assert (~np.isfinite(L).all(axis=(1, 2))).sum() > 0
