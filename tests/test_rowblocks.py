"""Blocked row solver (bayesmf.infer._rowblocks) against dense numpy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmf.infer._rowblocks import build_row_blocks, row_precisions, solve_rows


def _problem(seed=0, n=30, m=25, d=4, nnz=500, empty=3, dtype=np.float32, with_rng=False):
    """Skewed-degree rows (the last ``empty`` rows without observations), random design,
    targets and prior, in ``dtype``; ``with_rng`` also returns the generator for further
    draws (``tests/test_row_block.py``)."""
    rng = np.random.default_rng(seed)
    # skewed degrees: some rows far above max_width so they are split into segments
    p = rng.gamma(0.5, size=n - empty)
    p /= p.sum()
    rows = rng.choice(n - empty, size=nnz, p=p)
    cols = rng.integers(0, m, nnz)
    X = rng.normal(size=(m, d)).astype(dtype)
    y = rng.normal(size=nnz).astype(dtype)
    A = rng.normal(size=(d, d))
    P0 = (A @ A.T / d + np.eye(d)).astype(dtype)
    s0 = rng.normal(size=d).astype(dtype)
    return (rows, cols, X, y, P0, s0) + ((rng,) if with_rng else ())


def _dense_reference(rows, cols, X, y, tau, P0, s0, n):
    d = X.shape[1]
    Ps, hs = np.zeros((n, d, d)), np.zeros((n, d))
    for r in range(n):
        o = rows == r
        Xo = X[cols[o]].astype(np.float64)
        Ps[r] = P0 + tau * Xo.T @ Xo
        hs[r] = s0 + tau * Xo.T @ y[o]
    return Ps, hs


@pytest.fixture(scope="module")
def prob():
    rows, cols, X, y, P0, s0 = _problem()
    blocks = build_row_blocks(rows, cols, 30, n_other=25, max_width=16)
    Ps, hs = _dense_reference(rows, cols, X, y, 1.7, P0, s0, 30)
    return dict(rows=rows, cols=cols, X=X, y=y, P0=P0, s0=s0, blocks=blocks, Ps=Ps, hs=hs)


def test_layout_covers_every_observation_once(prob):
    b = prob["blocks"]
    assert b.n_rows == 30
    assert max(b.widths) <= 16
    obs = np.concatenate([o[c < 25] for o, c in zip(b.seg_obs, b.seg_cols)])
    assert np.array_equal(np.sort(obs), np.arange(len(prob["rows"])))
    # row of each real slot matches the observation's row, col matches too
    for r, c, o in zip(b.seg_row, b.seg_cols, b.seg_obs):
        real = c < 25
        assert np.array_equal(np.broadcast_to(r[:, None], c.shape)[real], prob["rows"][o[real]])
        assert np.array_equal(c[real], prob["cols"][o[real]])
    assert np.array_equal(b.degree, np.bincount(prob["rows"], minlength=30))
    # heavy rows were split into several segments, adjacent within their bucket
    assert any(np.bincount(r).max() > 1 for r in b.seg_row)
    assert all(np.all(np.diff(r) >= 0) for r in b.seg_row)


def test_precisions_and_mean_match_dense(prob):
    p = prob
    P, h = row_precisions(p["blocks"], p["X"], p["y"], 1.7, p["P0"], p["s0"])
    np.testing.assert_allclose(P, p["Ps"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(h, p["hs"], rtol=1e-4, atol=1e-3)
    Z = jax.jit(solve_rows)(p["blocks"], p["X"], p["y"], 1.7, p["P0"], p["s0"])
    ref = np.linalg.solve(p["Ps"], p["hs"][..., None])[..., 0]
    np.testing.assert_allclose(Z, ref, rtol=1e-4, atol=1e-4)


def test_numpy_namespace_matches_dense_and_jax(prob):
    """xp=numpy (the compile-free ALS engine) computes the same P, h and mean in numpy,
    split rows (repeated segment rows, np.add.at) included."""
    p = prob
    P, h = row_precisions(p["blocks"], p["X"], p["y"], 1.7, p["P0"], p["s0"], xp=np)
    assert isinstance(P, np.ndarray) and isinstance(h, np.ndarray) and P.dtype == np.float32
    np.testing.assert_allclose(P, p["Ps"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(h, p["hs"], rtol=1e-4, atol=1e-3)
    Z = solve_rows(p["blocks"], p["X"], p["y"], 1.7, p["P0"], p["s0"], xp=np)
    assert isinstance(Z, np.ndarray)
    Zj = solve_rows(p["blocks"], p["X"], p["y"], 1.7, p["P0"], p["s0"])
    np.testing.assert_allclose(Z, np.asarray(Zj), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="xp=jax.numpy"):
        solve_rows(p["blocks"], p["X"], p["y"], 1.7, p["P0"], p["s0"], key=jax.random.key(0),
                   xp=np)
    # rows without observations get the prior mean
    np.testing.assert_allclose(Z[-3:], np.tile(np.linalg.solve(p["P0"], p["s0"]), (3, 1)),
                               rtol=1e-4, atol=1e-5)


def test_draws_have_mean_and_covariance_inverse_precision(prob):
    p = prob
    n_draws = 4000
    keys = jax.random.split(jax.random.key(1), n_draws)
    f = jax.jit(jax.vmap(lambda k: solve_rows(p["blocks"], p["X"], p["y"], 1.7, p["P0"],
                                              p["s0"], key=k)))
    Zs = np.asarray(f(keys), np.float64)
    mean = np.linalg.solve(p["Ps"], p["hs"][..., None])[..., 0]
    cov = np.linalg.inv(p["Ps"])
    se = np.sqrt(np.einsum("nii->ni", cov) / n_draws)
    assert np.all(np.abs(Zs.mean(0) - mean) < 5 * se)
    for r in (0, 5, 29):  # a heavy row, a light row, an empty row
        emp = np.cov(Zs[:, r].T)
        sd = np.sqrt(np.diag(cov[r]))
        # entries of the covariance agree to ~5 standard errors (corr scale, n=4000)
        assert np.abs((emp - cov[r]) / np.outer(sd, sd)).max() < 0.1
    # different keys give different draws, same key the same draw
    a = solve_rows(p["blocks"], p["X"], p["y"], 1.7, p["P0"], p["s0"], key=jax.random.key(3))
    b = solve_rows(p["blocks"], p["X"], p["y"], 1.7, p["P0"], p["s0"], key=jax.random.key(3))
    c = solve_rows(p["blocks"], p["X"], p["y"], 1.7, p["P0"], p["s0"], key=jax.random.key(4))
    assert np.array_equal(a, b) and not np.allclose(a, c)


def test_near_singular_precision_stays_finite():
    rng = np.random.default_rng(2)
    m, d, nnz = 20, 3, 400
    base = rng.normal(size=(m, 1))
    X = np.hstack([base, base * (1 + 1e-7), rng.normal(size=(m, 1))]).astype(np.float32)
    rows = rng.integers(0, 4, nnz)
    cols = rng.integers(0, m, nnz)
    y = rng.normal(size=nnz).astype(np.float32)
    P0 = np.eye(d, dtype=np.float32) * 1e-8
    s0 = np.zeros(d, np.float32)
    blocks = build_row_blocks(rows, cols, 4, n_other=m)
    # the plain float32 Cholesky of these precisions fails (the reason for the retry)
    P, _ = row_precisions(blocks, X, y, 1e3, P0, s0)
    assert not np.all(np.isfinite(np.asarray(jnp.linalg.cholesky(P))))
    Z = np.asarray(solve_rows(blocks, X, y, 1e3, P0, s0))
    assert np.all(np.isfinite(Z))
    Zd = np.asarray(solve_rows(blocks, X, y, 1e3, P0, s0, key=jax.random.key(0)))
    assert np.all(np.isfinite(Zd))
    # identified directions (z1 + z2 for the duplicated column, and z3) match the float64
    # least-squares fit on the merged design; the split between z1 and z2 is prior-driven
    for r in range(4):
        o = rows == r
        Xo = X[cols[o]][:, [0, 2]].astype(np.float64)
        zl, *_ = np.linalg.lstsq(Xo, y[o].astype(np.float64), rcond=None)
        np.testing.assert_allclose([Z[r, 0] + Z[r, 1], Z[r, 2]], zl, atol=1e-3)


def test_jitter_retry_repairs_a_failed_factor():
    from bayesmf.infer._rowblocks import _safe_cholesky

    P = np.array([[[1.0, 1.0], [1.0, 1.0 - 1e-9]], [[2.0, 0.0], [0.0, 3.0]]], np.float32)
    raw = np.asarray(jnp.linalg.cholesky(P))
    assert not np.all(np.isfinite(raw[0]))
    L = np.asarray(_safe_cholesky(jnp.asarray(P)))
    assert np.all(np.isfinite(L))
    np.testing.assert_allclose(L[1], raw[1])          # healthy rows untouched
    np.testing.assert_allclose(L[0] @ L[0].T, P[0], atol=1e-4)


def test_no_nnz_by_d_by_d_intermediate():
    rng = np.random.default_rng(5)
    n, m, d, nnz = 40, 30, 8, 3000
    rows, cols = rng.integers(0, n, nnz), rng.integers(0, m, nnz)
    blocks = build_row_blocks(rows, cols, n, n_other=m)
    X = np.ones((m, d), np.float32)
    y = np.ones(nnz, np.float32)
    jaxpr = jax.make_jaxpr(lambda X, y: solve_rows(blocks, X, y, 1.0, np.eye(d, dtype=np.float32),
                                                   np.zeros(d, np.float32)))(X, y)
    sizes = [int(np.prod(v.aval.shape)) for e in jaxpr.jaxpr.eqns for v in e.outvars
             if hasattr(v.aval, "shape")]
    assert max(sizes) < nnz * d * d / 4


def test_bad_indices_raise():
    with pytest.raises(ValueError):
        build_row_blocks(np.array([0, 5]), np.array([0, 1]), 3)
    with pytest.raises(ValueError):
        build_row_blocks(np.array([0, 1]), np.array([0, 4]), 3, n_other=2)
    with pytest.raises(ValueError):
        build_row_blocks(np.array([0, 1]), np.array([0]), 3)


# ----------------------------------------------------------------------------- split Gram
@pytest.mark.parametrize("d", [17, 33])
@pytest.mark.parametrize("weighted", [False, True])
def test_split_first_column_gram_matches_the_dense_reference(d, weighted):
    """The Gram with the first design column split off (used for d = 17, 33, ...) is the
    same matrix as the dense sum (float64 reference), weighted or not."""
    from bayesmf.infer._rowblocks import _split_pays

    assert _split_pays(d) and not _split_pays(11) and not _split_pays(65)
    rows, cols, X, y, _, _ = _problem(seed=3, d=d, nnz=900)
    X[:, 0] = 1.0                                 # the Gibbs design [1, F]
    n = 30
    rng = np.random.default_rng(4)
    w = rng.uniform(0.2, 3.0, rows.size).astype(np.float32)
    P0 = np.eye(d, dtype=np.float32)
    s0 = rng.normal(size=d).astype(np.float32)
    blocks = build_row_blocks(rows, cols, n, n_other=X.shape[0], max_width=16)
    P, h = row_precisions(blocks, X, y, w if weighted else 2.0, P0, s0)
    Pr, hr = np.zeros((n, d, d)), np.zeros((n, d))
    for r in range(n):
        o = rows == r
        Xo = X[cols[o]].astype(np.float64)
        wo = w[o] if weighted else np.full(o.sum(), 2.0)
        Pr[r] = P0 + (Xo * wo[:, None]).T @ Xo
        hr[r] = s0 + Xo.T @ (wo * y[o])
    np.testing.assert_allclose(np.asarray(P), Pr, rtol=2e-5, atol=2e-4)
    np.testing.assert_allclose(np.asarray(h), hr, rtol=2e-5, atol=2e-4)


# ----------------------------------------------------------------------------- row parts
@pytest.mark.parametrize("parts", [2, pytest.param(3, marks=pytest.mark.slow), 7])
def test_row_parts_give_the_unpartitioned_precisions_and_draws(parts):
    """Cutting the rows into contiguous parts changes only the grouping: the precisions,
    the conditional means (JAX and numpy) and the draws (same noise, sliced per part)
    equal those of one part, weighted or not, with a per-row prior shift."""
    rows, cols, X, y, P0, _ = _problem(seed=6, nnz=800)
    n, m = 30, X.shape[0]
    rng = np.random.default_rng(7)
    w = rng.uniform(0.2, 3.0, rows.size).astype(np.float32)
    S0 = rng.normal(size=(n, X.shape[1])).astype(np.float32)      # per-row prior shift
    one = build_row_blocks(rows, cols, n, n_other=m, max_width=16)
    cut = build_row_blocks(rows, cols, n, n_other=m, max_width=16, parts=parts, row_cost=2)
    rng_ = cut.part_ranges()
    assert len(cut.parts) == parts and rng_[0][0] == 0 and rng_[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(rng_, rng_[1:]))
    assert cut.n_rows == n and not cut.seg_row
    for tau in (1.5, w):
        Pa, ha = row_precisions(one, X, y, tau, P0, S0)
        Pb, hb = row_precisions(cut, X, y, tau, P0, S0)
        np.testing.assert_allclose(np.asarray(Pb), np.asarray(Pa), rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(np.asarray(hb), np.asarray(ha), rtol=1e-6, atol=1e-5)
        key = jax.random.key(11)
        np.testing.assert_allclose(np.asarray(solve_rows(cut, X, y, tau, P0, S0, key=key)),
                                   np.asarray(solve_rows(one, X, y, tau, P0, S0, key=key)),
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(solve_rows(cut, X, y, np.asarray(tau), P0, S0, xp=np),
                                   solve_rows(one, X, y, np.asarray(tau), P0, S0, xp=np),
                                   rtol=1e-4, atol=1e-5)


def test_row_parts_validation_and_auto_rule():
    from bayesmf.errors import SpecError
    from bayesmf.infer._rowblocks import resolve_row_parts

    with pytest.raises(ValueError, match="parts must be >= 1"):
        build_row_blocks(np.array([0, 1]), np.array([0, 1]), 2, parts=0)
    # more parts than rows: one part per row
    b = build_row_blocks(np.array([0, 1]), np.array([0, 1]), 2, parts=5)
    assert len(b.parts) == 2
    for bad in (0, -1, 1.5, True, "four"):
        with pytest.raises(SpecError, match="row_parts"):
            resolve_row_parts(bad, 10)
    assert resolve_row_parts(3, 10) == 3
    if jax.default_backend() == "cpu":
        assert resolve_row_parts("auto", 99_999) == 1
        assert resolve_row_parts("auto", 438_885) == 4
        assert resolve_row_parts("auto", 10_000_000) == 8


def test_a_non_finite_factor_shows_on_its_diagonal():
    """The retry checks only diag(L): a failed factorisation (not positive definite, or
    an infinite entry) is NaN there, and so is a NaN that enters off the diagonal."""
    P = np.array([[[1.0, 2.0, 0.0], [2.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
                  [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, np.nan]],
                  [[1.0, np.inf, 0.0], [np.inf, 2.0, 0.0], [0.0, 0.0, 1.0]],
                  [[4.0, 0.0, 0.0], [np.nan, 4.0, 0.0], [0.0, 0.0, 4.0]]], np.float32)
    L = np.asarray(jnp.linalg.cholesky(P))
    full = ~np.all(np.isfinite(L), axis=(-2, -1))
    diag = ~np.all(np.isfinite(np.diagonal(L, axis1=-2, axis2=-1)), axis=-1)
    np.testing.assert_array_equal(diag, full)
    assert full.tolist() == [True, True, True, True]


# ----------------------------------------------------------------------------- block solve
@pytest.mark.parametrize("d", [17, 33])
@pytest.mark.parametrize("weighted", [False, True])
def test_block_cholesky_solve_matches_the_full_factor(d, weighted):
    """Where the first column is split off (d = 17, 33, ...), solve_rows factors the
    precision by blocks (never assembling it): its means and draws (same noise) equal those
    of the assembled precision through gaussian_from_precision, with a per-row prior and a
    per-row prior shift, and the draws have covariance P^-1 (checked against float64)."""
    from bayesmf.infer._rowblocks import _gaussian_from_split, _split_terms, \
        gaussian_from_precision

    rows, cols, X, y, _, _ = _problem(seed=11, d=d, nnz=1200)
    X[:, 0] = 1.0
    n = 30
    rng = np.random.default_rng(12)
    w = rng.uniform(0.2, 3.0, rows.size).astype(np.float32)
    A = rng.normal(size=(n, d, d)) / np.sqrt(d)
    P0 = (A @ A.transpose(0, 2, 1) + np.eye(d)).astype(np.float32)       # per-row prior
    s0 = rng.normal(size=(n, d)).astype(np.float32)
    blocks = build_row_blocks(rows, cols, n, n_other=X.shape[0], max_width=16)
    tau = w if weighted else 2.0
    P, h = row_precisions(blocks, X, y, tau, P0, s0)
    a, b, C, h2 = _split_terms(blocks, X, y, tau, P0, s0)
    np.testing.assert_allclose(np.asarray(a), np.asarray(P)[:, 0, 0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(b), np.asarray(P)[:, 1:, 0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(C), np.asarray(P)[:, 1:, 1:], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(np.asarray(h2), np.asarray(h), rtol=1e-5, atol=1e-4)
    # float32 like the solver draws it (another test module may have switched x64 on)
    eps = jax.random.normal(jax.random.key(3), (n, d, 1), jnp.float32)
    for noise in (None, eps):
        full = np.asarray(gaussian_from_precision(P, h, noise=noise))
        blk = np.asarray(_gaussian_from_split(a, b, C, h2, noise))
        np.testing.assert_allclose(blk, full, rtol=2e-4, atol=2e-4)
    # solve_rows takes the block route for this d; its mean is P^-1 h in float64
    Pd, hd = np.asarray(P, np.float64), np.asarray(h, np.float64)
    mean = np.linalg.solve(Pd, hd[..., None])[..., 0]
    np.testing.assert_allclose(np.asarray(solve_rows(blocks, X, y, tau, P0, s0)), mean,
                               rtol=2e-3, atol=2e-3)
    # and z = mean + L^-T eps has covariance P^-1: z - mean = L^-T eps exactly
    z = np.asarray(solve_rows(blocks, X, y, tau, P0, s0, key=jax.random.key(3)))
    L = np.linalg.cholesky(Pd)
    expect = mean + np.linalg.solve(L.transpose(0, 2, 1), np.asarray(eps, np.float64))[..., 0]
    np.testing.assert_allclose(z, expect, rtol=3e-3, atol=3e-3)


def test_block_solve_rescues_a_singular_schur_complement():
    """A row whose lower block is singular given the first (S = C - b b^T / a = 0 in one
    direction) gets a finite draw through the jittered retry; other rows are untouched."""
    from bayesmf.infer._rowblocks import _gaussian_from_split

    k = 16
    rng = np.random.default_rng(5)
    a = np.array([2.0, 3.0], np.float32)
    b = rng.normal(size=(2, k)).astype(np.float32)
    B = rng.normal(size=(k, k))
    C = np.stack([np.outer(b[0], b[0]) / a[0],                       # S = 0: singular
                  np.outer(b[1], b[1]) / a[1] + B @ B.T / k + np.eye(k)]).astype(np.float32)
    h = rng.normal(size=(2, k + 1)).astype(np.float32)
    z = np.asarray(_gaussian_from_split(jnp.asarray(a), jnp.asarray(b), jnp.asarray(C),
                                        jnp.asarray(h), None))
    assert np.all(np.isfinite(z))
    P1 = np.block([[a[1:, None], b[1:]], [b[1][:, None], C[1]]]).astype(np.float64)
    np.testing.assert_allclose(z[1], np.linalg.solve(P1, h[1]), rtol=1e-3, atol=1e-3)


# ----------------------------------------------------------------------------- fit stats
@pytest.mark.parametrize("d", [4, 33])
@pytest.mark.parametrize("parts", [1, 3])
@pytest.mark.parametrize("weighted", [False, True])
def test_fit_stats_are_the_residual_sums_of_the_draw(d, parts, weighted):
    """solve_rows(fit_stats=True) returns, besides the draw Z, q and g such that
    sum_j w_j (y_j - x_j.z_r(j))^2 = sum_j w_j y_j^2 + q and (first column all ones)
    sum_j w_j (y_j - x_j.z_r(j)) = sum_j w_j y_j - g, brute-forced in float64 -- on the
    assembled (d = 4) and the split (d = 33) precision, with row parts, a per-row prior
    and per-observation weights; the draw is the one without fit_stats."""
    rows, cols, X, y, _, _ = _problem(seed=21, d=d, nnz=1500)
    X[:, 0] = 1.0
    n = 30
    rng = np.random.default_rng(22)
    A = rng.normal(size=(n, d, d)) / np.sqrt(d)
    P0 = (A @ A.transpose(0, 2, 1) + np.eye(d)).astype(np.float32)
    s0 = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.uniform(0.2, 3.0, rows.size).astype(np.float32) if weighted else 1.7
    blocks = build_row_blocks(rows, cols, n, n_other=X.shape[0], max_width=16, parts=parts)
    key = jax.random.key(5)
    Z, (q, g) = solve_rows(blocks, X, y, w, P0, s0, key=key, fit_stats=True)
    np.testing.assert_array_equal(np.asarray(Z), np.asarray(solve_rows(blocks, X, y, w, P0,
                                                                        s0, key=key)))
    Zd = np.asarray(Z, np.float64)
    ww = np.broadcast_to(np.asarray(w, np.float64), y.shape)
    e = y.astype(np.float64) - np.sum(X[cols].astype(np.float64) * Zd[rows], axis=1)
    sse, yy = np.sum(ww * e * e), np.sum(ww * y.astype(np.float64) ** 2)
    np.testing.assert_allclose(yy + float(q), sse, rtol=1e-4)
    np.testing.assert_allclose(np.sum(ww * y) - float(g), np.sum(ww * e), rtol=1e-4,
                               atol=1e-3 * np.sqrt(sse))
    # a dense Gram and a right-hand side of their own (a full-matrix likelihood): the
    # statistics are the observations' only, q = sum w p^2 - 2 sum rhs p, g = sum w p x_1
    rhs = rng.normal(size=y.shape).astype(np.float32)
    dense = (X.T @ X / X.shape[0]).astype(np.float32)
    wv = ww.astype(np.float32)
    Z, (q, g) = solve_rows(blocks, X, y, wv, P0, s0, key=key, fit_stats=True, rhs=rhs,
                           dense_gram=dense)
    np.testing.assert_array_equal(np.asarray(Z), np.asarray(solve_rows(
        blocks, X, y, wv, P0, s0, key=key, rhs=rhs, dense_gram=dense)))
    p = np.sum(X[cols].astype(np.float64) * np.asarray(Z, np.float64)[rows], axis=1)
    scale = np.sum(ww * p * p) + np.abs(np.sum(rhs * p))
    np.testing.assert_allclose(float(q), np.sum(ww * p * p) - 2 * np.sum(rhs * p),
                               atol=1e-4 * scale)
    np.testing.assert_allclose(float(g), np.sum(ww * p), atol=1e-4 * scale)


# ----------------------------------------------------------------- rows of few observations
def _low_problem(d=12, seed=0):
    """Rows of 0..29 observations (some far below d, some above), weights > 0."""
    rng = np.random.default_rng(seed)
    n, m = 60, 40
    deg = rng.integers(0, 30, n)
    deg[:4] = 0
    rows = np.repeat(np.arange(n), deg)
    cols = np.concatenate([rng.choice(m, k, replace=False) for k in deg])
    perm = rng.permutation(rows.size)
    rows, cols = rows[perm], cols[perm]
    X = rng.normal(size=(m, d))
    y = rng.normal(size=rows.size)
    w = rng.gamma(2.0, 1.0, rows.size)
    A = rng.normal(size=(d, d))
    P0 = A @ A.T / d + np.eye(d)
    s0 = rng.normal(size=d)
    return rows, cols, X, y, w, P0, s0, n, m


def _dense_weighted(rows, cols, X, w, rhs, P0, h0, n, dense=None):
    d = X.shape[1]
    P = np.zeros((n, d, d))
    h = np.zeros((n, d))
    for r in range(n):
        o = rows == r
        Xo = X[cols[o]]
        P[r] = P0 + (Xo * w[o][:, None]).T @ Xo + (0 if dense is None else dense)
        h[r] = (h0[r] if h0.ndim == 2 else h0) + Xo.T @ rhs[o]
    return P, h


def test_low_layout_covers_every_observation_once():
    rows, cols, *_, n, m = _low_problem()
    b = build_row_blocks(rows, cols, n, n_other=m, low_width=8, parts=3, max_width=16)
    lr = b.low
    deg = np.bincount(rows, minlength=n)
    low = np.flatnonzero((deg >= 1) & (deg <= 8))
    assert not b.seg_row and b.n_rows == n
    assert np.array_equal(np.sort(np.concatenate(lr.rows.seg_row)), low)  # one segment each
    assert np.array_equal(lr.high_rows, np.setdiff1d(np.arange(n), low))
    seen = []
    for blk, to_global in [(lr.rows, None)] + [(p, lr.high_rows[s:e]) for p, (s, e) in
                                               zip(lr.high.parts, lr.high.part_ranges())]:
        for r, c, o in zip(blk.seg_row, blk.seg_cols, blk.seg_obs):
            real = c < m
            g = r if to_global is None else to_global[r]
            assert np.array_equal(np.broadcast_to(g[:, None], c.shape)[real], rows[o[real]])
            assert np.array_equal(c[real], cols[o[real]])
            seen.append(o[real])
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(rows.size))
    # no row qualifies: the plain layout
    plain = build_row_blocks(rows, cols, n, n_other=m, low_width=0)
    assert plain.low == () and plain.seg_row
    with pytest.raises(ValueError, match="low_width"):
        build_row_blocks(rows, cols, n, n_other=m, low_width=32, max_width=16)


@pytest.mark.parametrize("case", ["scalar", "weighted", "dense+rhs", "per-row shift"])
def test_low_rows_mean_and_fit_stats_match_the_dense_solve(case):
    """The Woodbury path gives the dense reference's conditional mean for every row (the
    low rows, the high ones and the empty ones), in float32, and the residual sums of
    fit_stats (the Gaussian sweep's, scalar tau)."""
    rows, cols, X, y, w, P0, s0, n, m = _low_problem()
    f32 = np.float32
    tau, rhs, dense, h0 = 1.7, None, None, s0
    if case == "weighted":
        tau = w
    if case == "dense+rhs":
        tau, rhs, dense = w, w * y + 0.3, 0.5 * X.T @ X
    if case == "per-row shift":
        h0 = np.random.default_rng(1).normal(size=(n, X.shape[1]))
    wv = np.broadcast_to(tau, y.shape)
    P, h = _dense_weighted(rows, cols, X, wv, wv * y if rhs is None else rhs, P0, h0, n,
                           dense)
    ref = np.linalg.solve(P, h[..., None])[..., 0]
    b = build_row_blocks(rows, cols, n, n_other=m, low_width=8,
                         parts=2 if case == "dense+rhs" else 1)
    args = [jnp.asarray(a, f32) if isinstance(a, np.ndarray) else a
            for a in (X, y, tau, P0, h0)]
    kw = {} if dense is None else dict(dense_gram=jnp.asarray(dense, f32),
                                       rhs=jnp.asarray(rhs, f32))
    Z = jax.jit(lambda *a: solve_rows(b, *a, **kw))(*args)
    np.testing.assert_allclose(Z, ref, rtol=2e-3, atol=2e-4)
    if case == "scalar":         # the Gaussian sweep's residual sums (scalar tau)
        Zd, (q, g) = jax.jit(lambda *a: solve_rows(b, *a, key=jax.random.key(0),
                                                    fit_stats=True))(*args)
        Zd = np.asarray(Zd, np.float64)
        pred = np.sum(X[cols] * Zd[rows], axis=1)
        np.testing.assert_allclose(q, np.sum(wv * pred ** 2) - 2 * np.sum(wv * y * pred),
                                   rtol=1e-3)
        np.testing.assert_allclose(g, np.sum(wv * pred * X[cols, 0]), rtol=1e-3, atol=1e-3)


def test_low_rows_draws_have_the_conditional_mean_and_covariance():
    rows, cols, X, y, w, P0, s0, n, m = _low_problem(d=10)
    dense = 0.3 * X.T @ X
    b = build_row_blocks(rows, cols, n, n_other=m, low_width=8)
    P, h = _dense_weighted(rows, cols, X, w, w * y, P0, s0, n, dense)
    args = [jnp.asarray(a, jnp.float32) for a in (X, y, w, P0, s0)]
    n_draws = 4000
    f = jax.jit(jax.vmap(lambda k: solve_rows(b, *args, key=k,
                                              dense_gram=jnp.asarray(dense, jnp.float32))))
    Zs = np.asarray(f(jax.random.split(jax.random.key(2), n_draws)), np.float64)
    mean = np.linalg.solve(P, h[..., None])[..., 0]
    cov = np.linalg.inv(P)
    se = np.sqrt(np.einsum("nii->ni", cov) / n_draws)
    assert np.all(np.abs(Zs.mean(0) - mean) < 5 * se)
    deg = np.bincount(rows, minlength=n)
    low = np.flatnonzero((deg >= 1) & (deg <= 8))
    for r in list(low[:3]) + [0, int(np.argmax(deg))]:   # low rows, an empty row, the heaviest
        emp = np.cov(Zs[:, r].T)
        sd = np.sqrt(np.diag(cov[r]))
        assert np.abs((emp - cov[r]) / np.outer(sd, sd)).max() < 0.1


def test_low_rows_refuse_what_they_cannot_do():
    rows, cols, X, y, w, P0, s0, n, m = _low_problem()
    b = build_row_blocks(rows, cols, n, n_other=m, low_width=8)
    with pytest.raises(ValueError, match="shared by all rows"):
        solve_rows(b, X, y, 1.0, np.broadcast_to(P0, (n,) + P0.shape), s0)
    with pytest.raises(ValueError, match="jax.numpy"):
        solve_rows(b, X, y, 1.0, P0, s0, xp=np)
    with pytest.raises(ValueError, match="solve_rows"):
        row_precisions(b, X, y, 1.0, P0, s0)


def test_low_width_auto_rule():
    from bayesmf.errors import SpecError
    from bayesmf.infer._rowblocks import low_width_for, resolve_low_width

    assert low_width_for(65) == 32 and low_width_for(33) == 16 and low_width_for(17) == 8
    assert low_width_for(11) == 0                                   # a d x d factor is cheap
    long_tail = np.r_[np.ones(15000, int), np.full(1900, 40)]      # Last.fm's artists
    few = np.r_[np.ones(300, int), np.full(1400, 40)]              # ML-100K-like
    assert low_width_for(33, long_tail) == 16 and low_width_for(11, long_tail) == 0
    assert low_width_for(17, np.r_[np.ones(1200, int), np.full(900, 40)]) == 0  # too little
    assert low_width_for(65, np.r_[np.ones(300, int), np.full(200, 40)]) == 32
    assert low_width_for(65, few) == 0                              # not a long tail
    assert resolve_low_width("auto", 65, 16) == 16
    assert resolve_low_width(0, 65) == 0 and resolve_low_width(8, 11) == 8
    for bad in (-1, 200, 2.5, True, "yes"):
        with pytest.raises(SpecError, match="low_width"):
            resolve_low_width(bad, 11)
