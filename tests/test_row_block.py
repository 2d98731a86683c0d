"""Subspace Gibbs row draws (``row_block``, bayesmf.infer._rowblocks.solve_rows_subspace):
each block of a row's coordinates from its closed-form conditional given the rest, the
whole pass against a dense numpy reference, and the sampler option end to end."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmf.errors import SpecError
from test_rowblocks import _problem as _base_problem
from bayesmf.infer._rowblocks import (build_row_blocks, dim_blocks, solve_rows,
                                      solve_rows_subspace)


def _problem(seed=0, n=30, m=25, d=7, nnz=500, empty=3):
    """test_rowblocks' problem in float64, plus current rows and per-observation weights."""
    rows, cols, X, y, P0, s0, rng = _base_problem(seed, n, m, d, nnz, empty,
                                                  dtype=np.float64, with_rng=True)
    Z0 = rng.normal(size=(n, d))
    w = rng.gamma(2.0, size=nnz)
    return rows, cols, X, y, P0, s0, Z0, w


def _reference(rows, cols, X, y, w, P0, s0, Z0, eps, size, dense=None, rhs=None):
    """Row by row, block by block: z_B ~ N(P_BB^-1 (h_B - P_B,notB z_notB), P_BB^-1) with
    the draw P_BB^-1 h' + L^-T eps_B (L L^T = P_BB), in float64 numpy."""
    n, d = Z0.shape
    Z = Z0.copy()
    for r in range(n):
        o = rows == r
        Xo = X[cols[o]]
        P0r = P0[r] if P0.ndim == 3 else P0
        s0r = s0[r] if s0.ndim == 2 else s0
        P = P0r + (Xo * w[o][:, None]).T @ Xo + (0 if dense is None else dense)
        t = w[o] * y[o] if rhs is None else rhs[o]
        h = s0r + Xo.T @ t
        for s, e in dim_blocks(d, size):
            B = np.arange(s, e)
            nB = np.setdiff1d(np.arange(d), B)
            PBB = P[np.ix_(B, B)]
            hc = h[B] - P[np.ix_(B, nB)] @ Z[r, nB]
            L = np.linalg.cholesky(PBB)
            Z[r, B] = np.linalg.solve(PBB, hc) + np.linalg.solve(L.T, eps[r, B])
    return Z


@pytest.fixture(scope="module")
def x64():
    prev = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", prev)


def test_dim_blocks_cover_the_coordinates_once():
    for d in (1, 5, 16, 17, 33, 65):
        for size in (1, 3, 16, 64, 100):
            bl = dim_blocks(d, size)
            assert bl[0][0] == 0 and bl[-1][1] == d
            assert all(a[1] == b[0] for a, b in zip(bl, bl[1:]))
            widths = [e - s for s, e in bl]
            assert max(widths) <= size and min(widths) >= 1
            assert len(set(widths[:-1])) <= 1 and widths[-1] <= widths[0]
            assert len(bl) == -(-d // size)


@pytest.mark.parametrize("size,parts", [
    (2, 1), (3, 1), (3, 3),
    pytest.param(2, 3, marks=pytest.mark.slow),  # 21 s warm; the other three cover both
])
def test_subspace_pass_is_the_sequence_of_block_conditionals(x64, parts, size):
    rows, cols, X, y, P0, s0, Z0, w = _problem()
    b = build_row_blocks(rows, cols, 30, n_other=25, max_width=16, parts=parts)
    key = jax.random.PRNGKey(3)
    eps = np.asarray(jax.random.normal(key, Z0.shape, jnp.float64))
    got = solve_rows_subspace(b, jnp.asarray(X), jnp.asarray(y), jnp.asarray(w),
                              jnp.asarray(P0), jnp.asarray(s0), jnp.asarray(Z0), key, size=size)
    ref = _reference(rows, cols, X, y, w, P0, s0, Z0, eps, size)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-9, atol=1e-9)
    # empty rows (27..29) are drawn from their prior conditionals, not left as they were
    assert np.all(np.abs(np.asarray(got)[27:] - Z0[27:]) > 0)


def test_subspace_with_dense_gram_rhs_per_row_prior_and_scalar_tau(x64):
    rows, cols, X, y, P0, s0, Z0, w = _problem(seed=1)
    rng = np.random.default_rng(5)
    n, d = Z0.shape
    b = build_row_blocks(rows, cols, n, n_other=25, max_width=16, parts=2)
    key = jax.random.PRNGKey(11)
    eps = np.asarray(jax.random.normal(key, Z0.shape, jnp.float64))
    # full-matrix form: dense Gram, a right-hand side that is not w * y, per-row priors
    dense = X.T @ X * 0.3
    rhs = rng.normal(size=y.shape)
    P0r = np.stack([P0 + np.diag(rng.uniform(0, 1, d)) for _ in range(n)])
    s0r = rng.normal(size=(n, d))
    got = solve_rows_subspace(b, jnp.asarray(X), jnp.asarray(y), jnp.asarray(w),
                              jnp.asarray(P0r), jnp.asarray(s0r), jnp.asarray(Z0), key, size=3,
                              dense_gram=jnp.asarray(dense), rhs=jnp.asarray(rhs))
    ref = _reference(rows, cols, X, y, w, P0r, s0r, Z0, eps, 3, dense=dense, rhs=rhs)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-9, atol=1e-9)
    # one precision for all observations (the Gaussian likelihood)
    got = solve_rows_subspace(b, jnp.asarray(X), jnp.asarray(y), 1.7, jnp.asarray(P0),
                              jnp.asarray(s0), jnp.asarray(Z0), key, size=4)
    ref = _reference(rows, cols, X, y, np.full(y.shape, 1.7), P0, s0, Z0, eps, 4)
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-9, atol=1e-9)


def test_one_block_is_the_exact_draw_and_fit_stats_match(x64):
    rows, cols, X, y, P0, s0, Z0, w = _problem(seed=2)
    b = build_row_blocks(rows, cols, 30, n_other=25, max_width=16)
    key = jax.random.PRNGKey(0)
    args = (b, jnp.asarray(X), jnp.asarray(y), 0.8, jnp.asarray(P0), jnp.asarray(s0))
    Z1, (q1, g1) = solve_rows_subspace(*args, jnp.asarray(Z0), key, size=7, fit_stats=True)
    Z2, (q2, g2) = solve_rows(*args, key=key, fit_stats=True)
    np.testing.assert_allclose(np.asarray(Z1), np.asarray(Z2), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose([float(q1), float(g1)], [float(q2), float(g2)], rtol=1e-9)
    # with blocks, the statistics are those of the final rows
    Z3, (q3, g3) = solve_rows_subspace(*args, jnp.asarray(Z0), key, size=2, fit_stats=True)
    pred = np.sum(X[cols] * np.asarray(Z3)[rows], axis=1)
    np.testing.assert_allclose(float(q3), 0.8 * np.sum(pred ** 2 - 2 * y * pred), rtol=1e-9)
    np.testing.assert_allclose(float(g3), 0.8 * np.sum(pred * X[cols, 0]), rtol=1e-9)


def test_rows_of_few_observations_stay_whole_draws_the_others_go_by_blocks(x64):
    """A layout with rows of few observations (``low_width=4``): those rows get exactly
    solve_rows' Woodbury draws (same key), the others the block sequence from their
    current values (the float64 reference on the high-row layout, with its key), and the
    residual statistics add up over both kinds of rows."""
    import jax.random as jr

    rows, cols, X, y, P0, s0, Z0, w = _problem(seed=6, nnz=300)
    n, d = Z0.shape
    dense = X.T @ X * 0.2
    b = build_row_blocks(rows, cols, n, n_other=25, max_width=16, low_width=4)
    assert b.low and 0 < len(b.low.high_rows) < n - 3
    key = jr.PRNGKey(7)
    args = (b, jnp.asarray(X), jnp.asarray(y), jnp.asarray(w), jnp.asarray(P0),
            jnp.asarray(s0))
    got = np.asarray(solve_rows_subspace(*args, jnp.asarray(Z0), key, size=3,
                                         dense_gram=jnp.asarray(dense)))
    whole = np.asarray(solve_rows(*args, key=key, dense_gram=jnp.asarray(dense)))
    high = np.asarray(b.low.high_rows)
    low = np.setdiff1d(np.arange(n), high)
    np.testing.assert_allclose(got[low], whole[low], rtol=1e-12, atol=1e-12)
    # the high rows: the block conditionals of those rows, with the key of the high part
    k_high = jr.split(key)[0]
    eps = np.asarray(jr.normal(k_high, (len(high), d), jnp.float64))
    sel = np.isin(rows, high)
    remap = np.full(n, -1)
    remap[high] = np.arange(len(high))
    ref = _reference(remap[rows[sel]], cols[sel], X, y[sel], w[sel], P0, s0, Z0[high], eps,
                     3, dense=dense)
    np.testing.assert_allclose(got[high], ref, rtol=1e-9, atol=1e-9)
    assert not np.allclose(got[high], whole[high])
    # fit statistics (no dense Gram): those of the final rows, low and high together
    Zs, (q, g) = solve_rows_subspace(*args, jnp.asarray(Z0), key, size=3, fit_stats=True)
    pred = np.sum(X[cols] * np.asarray(Zs)[rows], axis=1)
    np.testing.assert_allclose(float(q), np.sum(w * pred ** 2 - 2 * w * y * pred), rtol=1e-9)
    np.testing.assert_allclose(float(g), np.sum(w * pred * X[cols, 0]), rtol=1e-9)
    # with a dense Gram and a right-hand side (a full-matrix likelihood): the observations'
    # terms only, q = sum w p^2 - 2 sum rhs p -- the draw is the one without statistics
    rhs = np.random.default_rng(8).normal(size=y.shape)
    kw = dict(dense_gram=jnp.asarray(dense), rhs=jnp.asarray(rhs))
    Zs, (q, g) = solve_rows_subspace(*args, jnp.asarray(Z0), key, size=3, fit_stats=True,
                                     **kw)
    np.testing.assert_array_equal(np.asarray(Zs), np.asarray(
        solve_rows_subspace(*args, jnp.asarray(Z0), key, size=3, **kw)))
    pred = np.sum(X[cols] * np.asarray(Zs)[rows], axis=1)
    np.testing.assert_allclose(float(q), np.sum(w * pred ** 2 - 2 * rhs * pred), rtol=1e-9)
    np.testing.assert_allclose(float(g), np.sum(w * pred * X[cols, 0]), rtol=1e-9)


def test_repeated_block_passes_reach_the_exact_conditional_law(x64):
    """Many subspace passes on one row (fixed everything else) is a Gibbs chain on the
    row's Gaussian: its draws have the exact mean P^-1 h and covariance P^-1."""
    rows, cols, X, y, P0, s0, Z0, w = _problem(seed=4, n=3, empty=0, nnz=60)
    b = build_row_blocks(rows, cols, 3, n_other=25, max_width=16)
    args = (b, jnp.asarray(X), jnp.asarray(y), jnp.asarray(w), jnp.asarray(P0),
            jnp.asarray(s0))

    @jax.jit
    def run(key):
        def body(z, k):
            z = solve_rows_subspace(*args, z, k, size=2)
            return z, z
        return jax.lax.scan(body, jnp.asarray(Z0), jax.random.split(key, 20000))[1]

    draws = np.asarray(run(jax.random.PRNGKey(1)))[1000:]
    o = rows == 0
    Xo = X[cols[o]]
    P = P0 + (Xo * w[o][:, None]).T @ Xo
    h = s0 + Xo.T @ (w[o] * y[o])
    mean, cov = np.linalg.solve(P, h), np.linalg.inv(P)
    sd = np.sqrt(np.diag(cov))
    # autocorrelated draws: a generous but failing-if-wrong tolerance (0.1 sd)
    np.testing.assert_allclose(draws[:, 0].mean(0), mean, atol=0.1 * sd.max())
    np.testing.assert_allclose(np.cov(draws[:, 0].T), cov, atol=0.1 * np.abs(cov).max())


@pytest.mark.parametrize("layout", [dict(parts=1), dict(parts=3), dict(low_width=4)])
def test_predictions_in_and_out_of_a_pass(x64, layout):
    """return_pred=True gives the new rows' prediction at every observation (brute force,
    padding dropped); starting from given predictions (pred0) is the pass that computes
    them -- on plain, partitioned and Woodbury (rows of few observations) layouts."""
    rows, cols, X, y, P0, s0, Z0, w = _problem(seed=9, nnz=400)
    n, d = Z0.shape
    b = build_row_blocks(rows, cols, n, n_other=25, max_width=8, **layout)
    if "low_width" in layout:
        assert b.low
    key = jax.random.PRNGKey(3)
    args = (b, jnp.asarray(X), jnp.asarray(y), jnp.asarray(w), jnp.asarray(P0),
            jnp.asarray(s0))
    kw = dict(dense_gram=jnp.asarray(X.T @ X * 0.1), fit_stats=True)
    ref = solve_rows_subspace(*args, jnp.asarray(Z0), key, size=3, **kw)
    got, p = solve_rows_subspace(*args, jnp.asarray(Z0), key, size=3, return_pred=True, **kw)
    np.testing.assert_array_equal(np.asarray(got[0]), np.asarray(ref[0]))
    np.testing.assert_allclose(np.asarray(p), np.sum(X[cols] * np.asarray(got[0])[rows], 1),
                               rtol=1e-9, atol=1e-9)
    p0 = np.sum(X[cols] * Z0[rows], axis=1)
    (Z2, st2) = solve_rows_subspace(*args, jnp.asarray(Z0), key, size=3,
                                    pred0=jnp.asarray(p0), **kw)
    np.testing.assert_allclose(np.asarray(Z2), np.asarray(ref[0]), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose([float(x) for x in st2], [float(x) for x in ref[1]],
                               rtol=1e-8)
    # a wrong start changes the draw: the given predictions are used
    bad = solve_rows_subspace(*args, jnp.asarray(Z0), key, size=3,
                              pred0=jnp.asarray(p0 + 1.0), **kw)
    assert not np.allclose(np.asarray(bad[0]), np.asarray(ref[0]))


# one case in make test (the Woodbury rows and biases: every branch of the hand-off), the
# others in make test-all (each compiles two sweeps)
@pytest.mark.parametrize("case", [pytest.param("gaussian-biases", marks=pytest.mark.slow),
                                  pytest.param("implicit", marks=pytest.mark.slow),
                                  "implicit-low-rows"])
def test_sweep_hands_the_user_steps_predictions_to_the_item_step(case):
    """With subspace draws on both sides the plain sweep starts the item step from the
    user step's predictions (b_u + U.V -> b_i + U.V); the same sweep without the hand-off
    (the rows_fn hook, the sharded sampler's) draws the same chain up to float rounding."""
    from bayesmf.data.ratings import Ratings
    from bayesmf.infer.gibbs_kernel import BPMFGibbs
    from bayesmf.infer.gibbs_steps import rows_draw
    from test_gibbs import twin_sweeps
    from bayesmf.model.likelihoods import ImplicitGaussian
    from bayesmf.model.spec import ModelSpec

    rng = np.random.default_rng(1)
    u = rng.integers(0, 40, 700)
    i = rng.integers(0, 30, 700)
    keep = np.unique(u * 100 + i, return_index=True)[1]
    if case == "gaussian-biases":
        tr = Ratings.from_arrays(u[keep], i[keep], rng.normal(3, 1, keep.size))
        spec, kw = ModelSpec(rank=5), {}
    else:
        tr = Ratings.from_arrays(u[keep], i[keep], rng.integers(1, 9, keep.size) * 1.0)
        spec = ModelSpec(rank=5, likelihood=ImplicitGaussian(alpha=2.0), user_bias=True,
                         item_bias=True, global_mean=False)
        kw = {"low_width": 16} if case == "implicit-low-rows" else {}
    model = BPMFGibbs(tr, spec, row_block=2, **kw)
    if kw:
        assert model.data.iblocks.low
    a, _, b, _ = twin_sweeps(model, 8, init_scale=0.5, rows_fn=rows_draw)
    for name in ("bu", "bi", "U", "V"):
        np.testing.assert_allclose(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)),
                                   rtol=2e-3, atol=2e-3, err_msg=name)
    assert np.ptp(np.asarray(a.bi)) > 0.01


def test_sampler_option_checks_and_records():
    from bayesmf.data.ratings import Ratings
    from bayesmf.infer.gibbs import fit_gibbs
    from bayesmf.model.spec import ModelSpec

    rng = np.random.default_rng(0)
    u = rng.integers(0, 40, 600)
    i = rng.integers(0, 30, 600)
    key = np.unique(u * 100 + i, return_index=True)[1]
    tr = Ratings.from_arrays(u[key], i[key], rng.normal(3, 1, key.size))
    spec = ModelSpec(rank=6)
    for bad in (True, -1, 2.5, "4"):
        with pytest.raises(SpecError, match="row_block"):
            fit_gibbs(tr, spec, num_samples=2, num_warmup=1, row_block=bad)
    # rows of few observations drawn whole (Woodbury), the others by blocks
    low = fit_gibbs(tr, spec, num_samples=2, num_warmup=1, row_block=3, low_width=16)
    assert low.attrs["settings"]["row_block"] == 3
    assert any(low.attrs["settings"]["low_width"].values())
    post = fit_gibbs(tr, spec, num_samples=20, num_warmup=20, row_block=3, seed=0)
    assert post.attrs["settings"]["row_block"] == 3
    full = fit_gibbs(tr, spec, num_samples=20, num_warmup=20, seed=0)
    assert full.attrs["settings"]["row_block"] == 0
    # another sampler of the same posterior: close predictions, not the same draws
    a = post.predict(tr.user[:50], tr.item[:50]).mean
    f = full.predict(tr.user[:50], tr.item[:50]).mean
    assert not np.allclose(a, f)
    assert np.sqrt(np.mean((a - f) ** 2)) < 0.15
