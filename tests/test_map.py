"""PMF by MAP (bayesmf.infer.map): solvers agree, ALS is monotone and stationary, planted
structure is recovered, every hyperparameter matters, edge models (plain PMF, rank 0) work.

Small synthetic problems with module-scoped fits: each distinct model layout costs one XLA
compile, so the tests share fits wherever they can. Small ALS problems run on the
compile-free numpy engine by default; the JAX engine is tested against it and on the edge
models.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import SpecError
from bayesmf.infer import get_method
from bayesmf.infer.map import (DEFAULTS, _validation_mask, fit_map, map_objective,
                                noise_precision_mode)
from bayesmf.model.likelihood import Params
from bayesmf.model.spec import ModelSpec

N, M, K = 120, 90, 3
SPEC = ModelSpec(rank=K, reg_factors=2.0, reg_bias=2.0)
TIGHT = dict(max_iter=400, tol=1e-7)


class Planted:
    """r = mu + b_u + b_i + U_u.V_i + N(0, 0.1^2) on 40% of the pairs; 10% held out."""

    def __init__(self, seed=42):
        rng = np.random.default_rng(seed)
        self.U = rng.normal(0, 0.8, (N, K))
        self.V = rng.normal(0, 0.8, (M, K))
        self.bu = rng.normal(0, 0.5, N)
        self.bi = rng.normal(0, 0.5, M)
        self.mu = 3.2
        u, i = np.nonzero(rng.random((N, M)) < 0.4)
        truth = self.mu + self.bu[u] + self.bi[i] + np.sum(self.U[u] * self.V[i], 1)
        r = truth + rng.normal(0, 0.1, len(u))
        test = rng.random(len(u)) < 0.1
        uv, iv = Vocabulary(np.arange(N), "user"), Vocabulary(np.arange(M), "item")
        self.train = Ratings.from_indices(u[~test], i[~test], r[~test], uv, iv)
        self.test_u, self.test_i, self.test_truth = u[test], i[test], truth[test]


@pytest.fixture(scope="module")
def data():
    return Planted()


@pytest.fixture(scope="module")
def als(data):
    return fit_map(data.train, SPEC, solver="als", **TIGHT)


@pytest.fixture(scope="module")
def als_jax(data):
    return fit_map(data.train, SPEC, solver="als", engine="jax", **TIGHT)


@pytest.fixture(scope="module")
def lbfgs(data):
    return fit_map(data.train, SPEC, solver="lbfgs", max_iter=3000, tol=1e-9)


@pytest.fixture(scope="module")
def default_fit(data):
    """Default options (loose ALS tolerance): the reference of the hyperparameter tests."""
    return fit_map(data.train, SPEC)


def _pred(post, u, i):
    p = post.params()
    return p.mu + p.bu[u] + p.bi[i] + np.sum(p.U[u] * p.V[i], 1)


def _objective(post, train, spec=SPEC):
    p = Params(*(jnp.asarray(x) for x in post.params()))
    return float(map_objective(p, train.user, train.item, jnp.asarray(train.rating, jnp.float32),
                               spec.reg_factors, spec.reg_bias))


# ----------------------------------------------------------------------------- solvers
def test_registry_points_here():
    assert get_method("map") is fit_map


@pytest.mark.parametrize("fit", ["als", "als_jax"])
def test_als_objective_never_increases(fit, request):
    als = request.getfixturevalue(fit)
    tr = als.sample_stats["objective_trace"][0, 0]
    assert len(tr) == als.attrs["iterations"] + 1
    # float32 sums: allow rounding noise only
    assert np.all(np.diff(tr) <= 1e-6 * tr[:-1])
    assert tr[-1] < 0.2 * tr[0]
    assert als.attrs["converged"] and als.attrs["stop_reason"] == "tol"


def _gradient(post, train, reg_f, reg_b):
    """Gradient of J (float64, numpy) at the posterior's parameters."""
    p = post.params()
    U, V = p.U.astype(float), p.V.astype(float)
    u, i = train.user, train.item
    res = train.rating - (float(p.mu) + p.bu[u] + p.bi[i] + np.sum(U[u] * V[i], 1))
    gU = np.zeros_like(U)
    np.add.at(gU, u, -2 * res[:, None] * V[i])
    gV = np.zeros_like(V)
    np.add.at(gV, i, -2 * res[:, None] * U[u])
    return {"mu": np.array([-2 * res.sum()]),
            "bu": -2 * np.bincount(u, res, len(p.bu)) + 2 * reg_b * p.bu,
            "bi": -2 * np.bincount(i, res, len(p.bi)) + 2 * reg_b * p.bi,
            "U": gU + 2 * reg_f * U, "V": gV + 2 * reg_f * V}


def test_als_reaches_a_stationary_point(als, data):
    """At a minimiser every partial derivative of J vanishes. After one sweep the
    largest one is O(10); float32 ALS at tol=1e-7 gets it below 0.05."""
    g = _gradient(als, data.train, SPEC.reg_factors, SPEC.reg_bias)
    gmax = {k: float(np.max(np.abs(v))) for k, v in g.items()}
    assert max(gmax.values()) < 0.05, gmax
    first = fit_map(data.train, SPEC, max_iter=1)
    g1 = _gradient(first, data.train, SPEC.reg_factors, SPEC.reg_bias)
    assert max(float(np.max(np.abs(v))) for v in g1.values()) > 5.0


def test_als_and_lbfgs_reach_the_same_objective(als, lbfgs, data):
    ja, jl = als.attrs["objective"], lbfgs.attrs["objective"]
    assert abs(ja - jl) <= 2e-4 * ja, (ja, jl)
    # the reported objective is map_objective of the returned parameters
    assert _objective(als, data.train) == pytest.approx(ja, rel=1e-5)
    assert _objective(lbfgs, data.train) == pytest.approx(jl, rel=1e-5)
    # same minimum up to rotation -> same predictions
    d = _pred(als, data.test_u, data.test_i) - _pred(lbfgs, data.test_u, data.test_i)
    assert np.sqrt(np.mean(d ** 2)) < 0.01


def test_numpy_and_jax_engines_agree(als, als_jax, data):
    """Small problems default to the numpy engine; it runs the same sweep as the compiled
    JAX one, so both reach the same objective and predictions (float32 rounding apart)."""
    assert als.attrs["engine"] == "numpy" and als_jax.attrs["engine"] == "jax"
    assert als.attrs["timings"]["compile_s"] == 0.0
    ja, jj = als.attrs["objective"], als_jax.attrs["objective"]
    assert abs(ja - jj) <= 1e-5 * ja, (ja, jj)
    # where a relative decrease of 1e-7 is crossed is float32 rounding (37 vs 34 sweeps
    # measured once XLA's CPU options changed, 1.00 vs 1.00 objective)
    assert abs(als.attrs["iterations"] - als_jax.attrs["iterations"]) <= 5
    d = _pred(als, data.test_u, data.test_i) - _pred(als_jax, data.test_u, data.test_i)
    assert np.max(np.abs(d)) < 1e-3
    # the first sweeps match closely too (same initial draws)
    ta = als.sample_stats["objective_trace"][0, 0][:5]
    tj = als_jax.sample_stats["objective_trace"][0, 0][:5]
    np.testing.assert_allclose(ta, tj, rtol=1e-5)


def test_auto_engine_picks_numpy_for_small_cpu_problems_only():
    from bayesmf.infer.map import _NUMPY_MAX_WORK, _check, _use_numpy

    opts = _check(dict(DEFAULTS))
    assert _use_numpy(opts, 100_000, 10)
    big = _NUMPY_MAX_WORK // 11 ** 2 + 1
    assert not _use_numpy(opts, big, 10)
    assert not _use_numpy(_check(dict(DEFAULTS, solver="lbfgs")), 100, 2)
    assert _use_numpy(_check(dict(DEFAULTS, engine="numpy")), big, 10)
    assert not _use_numpy(_check(dict(DEFAULTS, engine="jax")), 100, 2)


def test_adam_approaches_the_same_objective(als, data):
    post = fit_map(data.train, SPEC, solver="adam", max_iter=1500, tol=1e-7,
                   learning_rate=0.05)
    assert post.attrs["objective"] <= 1.01 * als.attrs["objective"]
    assert post.attrs["objective"] < post.attrs["objective_initial"]


# ----------------------------------------------------------------------------- recovery
def test_recovers_planted_structure(als, data):
    pred = _pred(als, data.test_u, data.test_i)
    err = np.sqrt(np.mean((pred - data.test_truth) ** 2))
    spread = np.std(data.test_truth)
    assert err < 0.25 * spread, (err, spread)
    p = als.params()
    assert np.corrcoef(p.bu, data.bu)[0, 1] > 0.85
    assert np.corrcoef(p.bi, data.bi)[0, 1] > 0.85
    # the low-rank part spans the planted one: regress true U V^T on the fitted one
    fitted = np.asarray(p.U) @ np.asarray(p.V).T
    true = data.U @ data.V.T
    assert np.corrcoef(fitted.ravel(), true.ravel())[0, 1] > 0.9


def test_posterior_contract(als, data):
    assert als.method == "map" and als.n_chains == 1 and als.n_draws == 1
    assert als.draws["U"].shape == (1, 1, N, K) and als.draws["V"].shape == (1, 1, M, K)
    assert als.draws["U"].dtype == np.float32
    # tau: the mode under the Gamma(noise_a, noise_b) prior, from the training residuals
    r = data.train.rating - _pred(als, data.train.user, data.train.item)
    a, b = als.spec.priors.noise_a, als.spec.priors.noise_b
    assert b == pytest.approx(np.var(data.train.rating), rel=1e-6)  # scale-aware default
    assert float(als.draws["tau"][0, 0]) == pytest.approx(
        (len(r) + 2 * a - 2) / (np.sum(r ** 2) + 2 * b), rel=1e-3)
    assert als.sample_stats["train_rmse"][0, 0] == pytest.approx(np.sqrt(np.mean(r ** 2)),
                                                                  rel=1e-3)
    t = als.attrs["timings"]
    assert set(t) == {"setup_s", "compile_s", "iterate_s", "total_s"}
    assert all(v >= 0 for v in t.values())
    pr = als.predict(data.test_u, data.test_i)
    np.testing.assert_allclose(pr.mean, _pred(als, data.test_u, data.test_i), atol=1e-4)
    assert pr.uncertainty == "noise only"


def test_fixed_noise_is_reported_as_given(data, default_fit):
    post = fit_map(data.train, SPEC.replace(noise="fixed", noise_precision=7.5))
    assert float(post.draws["tau"][0, 0]) == pytest.approx(7.5)
    np.testing.assert_array_equal(post.draws["U"], default_fit.draws["U"])


def test_save_load_roundtrip(als, tmp_path):
    from bayesmf.io import load, save

    back = load(save(als, tmp_path / "m.nc"))
    np.testing.assert_allclose(back.sample_stats["objective_trace"],
                               als.sample_stats["objective_trace"])
    assert back.attrs["solver"] == "als" and back.attrs["converged"] is True


# ----------------------------------------------------------------------------- hyperparameters
CHANGES = {
    "rank": dict(spec=dict(rank=2)),
    "reg_factors": dict(spec=dict(reg_factors=8.0)),
    "reg_bias": dict(spec=dict(reg_bias=20.0)),
    "user_bias": dict(spec=dict(user_bias=False)),
    "item_bias": dict(spec=dict(item_bias=False)),
    "global_mean": dict(spec=dict(global_mean=False)),
    "init_scale": dict(spec=dict(init_scale=0.5)),
    "seed": dict(seed=1),
}


@pytest.mark.parametrize("name", list(CHANGES))
def test_each_hyperparameter_changes_the_result(name, data, default_fit):
    ch = CHANGES[name]
    post = fit_map(data.train, SPEC.replace(**ch.get("spec", {})), seed=ch.get("seed", 0))
    a = _pred(default_fit, data.test_u, data.test_i)
    b = _pred(post, data.test_u, data.test_i)
    assert np.max(np.abs(a - b)) > 1e-3, name
    p = post.params()
    if name == "user_bias":
        assert not np.any(p.bu) and np.any(p.bi)
    if name == "item_bias":
        assert not np.any(p.bi) and np.any(p.bu)
    if name == "global_mean":
        assert float(p.mu) == 0.0


def test_same_seed_same_result_and_no_recompile(data, default_fit, als_jax):
    again = fit_map(data.train, SPEC)
    for n in ("mu", "bu", "bi", "U", "V", "tau"):
        np.testing.assert_array_equal(again.draws[n], default_fit.draws[n])
    # the compiled JAX sweep is cached by shape: a refit (also with other ridge strengths)
    # pays no compile
    first = fit_map(data.train, SPEC, engine="jax")
    second = fit_map(data.train, SPEC, engine="jax")
    assert second.attrs["timings"]["compile_s"] == 0.0
    for n in ("mu", "bu", "bi", "U", "V", "tau"):
        np.testing.assert_array_equal(first.draws[n], second.draws[n])
    other = fit_map(data.train, SPEC.replace(reg_factors=3.0, reg_bias=0.5), seed=3,
                    engine="jax")
    assert other.attrs["timings"]["compile_s"] == 0.0


def test_default_run_is_close_to_the_tight_optimum(default_fit, als, data):
    """The loose default tolerance stops early but predicts like the converged MAP."""
    assert default_fit.attrs["iterations"] < als.attrs["iterations"]
    d = _pred(default_fit, data.test_u, data.test_i) - _pred(als, data.test_u, data.test_i)
    assert np.sqrt(np.mean(d ** 2)) < 0.05


# ----------------------------------------------------------------------------- edge models
@pytest.mark.parametrize("engine", ["numpy", "jax"])
def test_plain_pmf_without_mean_or_biases(data, engine):
    spec = SPEC.replace(global_mean=False, user_bias=False, item_bias=False, rank=K + 1)
    post = fit_map(data.train, spec, solver="als", engine=engine, **TIGHT)
    assert post.attrs["engine"] == engine
    p = post.params()
    assert float(p.mu) == 0.0 and not np.any(p.bu) and not np.any(p.bi)
    tr = post.sample_stats["objective_trace"][0, 0]
    assert np.all(np.diff(tr) <= 1e-6 * tr[:-1])
    # the factors must carry the mean themselves and still fit far better than zero
    rmse = post.sample_stats["train_rmse"][0, 0]
    assert rmse < 0.2 * np.sqrt(np.mean(data.train.rating ** 2))


@pytest.mark.parametrize("engine", ["numpy", "jax"])
def test_rank_zero_is_the_exact_ridge_bias_model(data, engine):
    """Biases only: J is a convex quadratic in (mu, b_u, b_i) and ALS must reach its
    exact minimiser, here solved directly from the dense normal equations (float64)."""
    spec = SPEC.replace(rank=0)
    post = fit_map(data.train, spec, solver="als", max_iter=400, tol=1e-8, engine=engine)
    assert post.draws["U"].shape == (1, 1, N, 0) and post.draws["V"].shape == (1, 1, M, 0)
    tr = data.train
    X = np.zeros((tr.nnz, 1 + N + M))
    rows = np.arange(tr.nnz)
    X[:, 0] = 1.0
    X[rows, 1 + tr.user] = 1.0
    X[rows, 1 + N + tr.item] = 1.0
    pen = np.full(1 + N + M, spec.reg_bias)
    pen[0] = 0.0
    theta = np.linalg.solve(X.T @ X + np.diag(pen), X.T @ tr.rating)
    p = post.params()
    assert float(p.mu) == pytest.approx(theta[0], abs=2e-3)
    np.testing.assert_allclose(p.bu, theta[1:1 + N], atol=2e-3)
    np.testing.assert_allclose(p.bi, theta[1 + N:], atol=2e-3)
    # and it is worse than the rank-3 model on this rank-3 data
    assert post.sample_stats["train_rmse"][0, 0] > 0.3


def test_rank_larger_than_the_data_supports_raises():
    tiny = Ratings.from_arrays([1, 2, 3, 1], ["a", "b", "a", "c"], [1.0, 2.0, 3.0, 4.0])
    with pytest.raises(SpecError, match="larger than the data supports"):
        fit_map(tiny, ModelSpec(rank=4))


# ----------------------------------------------------------------------------- options
@pytest.mark.parametrize("opts, match", [
    (dict(solver="sgd"), "solver"),
    (dict(max_iter=0), "max_iter"),
    (dict(tol=-1.0), "tol"),
    (dict(validation_fraction=1.0), "validation_fraction"),
    (dict(patience=0), "patience"),
    (dict(learning_rate=0.1), "learning_rate"),
    (dict(solver="adam", learning_rate=-1.0), "learning_rate"),
    (dict(epochs=3), "unknown option"),
    (dict(engine="gpu"), "engine"),
    (dict(engine="numpy", solver="lbfgs"), "engine"),
])
def test_bad_options_raise(data, opts, match):
    with pytest.raises(SpecError, match=match):
        fit_map(data.train, SPEC, **opts)


@pytest.mark.parametrize("seed", [-1, 1.5, True])
def test_bad_seed_raises(data, seed):
    with pytest.raises(SpecError, match="seed"):
        fit_map(data.train, SPEC, seed=seed)


@pytest.mark.parametrize("engine", ["numpy", "jax"])
def test_early_stopping_returns_the_best_validation_iterate(data, engine):
    # weak regularisation + high rank overfits: validation RMSE turns up and stops the run
    spec = SPEC.replace(rank=8, reg_factors=0.05, reg_bias=0.05)
    post = fit_map(data.train, spec, validation_fraction=0.2, patience=3, max_iter=200,
                   tol=0.0, seed=5, engine=engine)
    v = post.attrs["validation"]
    trace = post.sample_stats["val_rmse_trace"][0, 0]
    assert post.attrs["stop_reason"] == "early_stopping"
    assert v["best_iteration"] == int(np.argmin(trace)) + 1
    assert len(trace) == v["best_iteration"] + 3
    is_val = _validation_mask(data.train.nnz, 0.2, 5)
    assert v["n_val"] == is_val.sum()
    tr = data.train
    r = tr.rating[is_val] - _pred(post, tr.user[is_val], tr.item[is_val])
    assert np.sqrt(np.mean(r ** 2)) == pytest.approx(v["best_rmse"], rel=1e-4)


def test_progress_bar(data, capsys):
    fit_map(data.train, SPEC, progress=True, max_iter=3)
    assert "map/als" in capsys.readouterr().err


# ----------------------------------------------------------------------------- noise floor
def test_noise_precision_mode_is_the_gamma_posterior_mode():
    from scipy import stats

    sse, n, a, b = 3.7, 11, 1.5, 0.4
    tau = noise_precision_mode(sse, n, a, b)
    grid = np.linspace(0.01, 20, 200001)
    logp = stats.gamma.logpdf(grid, a + n / 2, scale=1 / (b + sse / 2))
    assert tau == pytest.approx(grid[np.argmax(logp)], abs=2e-4)
    assert tau == pytest.approx((n + 2 * a - 2) / (sse + 2 * b))
    # no interior mode (one residual, a <= 1/2): the posterior mean
    assert noise_precision_mode(0.0, 1, 0.5, 2.0) == pytest.approx(2 / 4)
    with pytest.raises(SpecError):
        noise_precision_mode(1.0, 10, 1.0, 0.0)


def test_constant_ratings_give_a_finite_noise_and_real_intervals():
    """A perfect fit (every rating 4) used to give tau = n / (1e-12 n): 90% intervals of
    width 3e-6, also for unknown pairs. The Gamma(1, s^2 = 1) prior floors the noise
    variance at 2/n."""
    rng = np.random.default_rng(0)
    u, i = np.nonzero(rng.random((30, 20)) < 0.5)
    r = Ratings.from_indices(u, i, np.full(len(u), 4.0), Vocabulary(np.arange(30), "user"),
                             Vocabulary(np.arange(20), "item"))
    post = fit_map(r, ModelSpec(rank=2))
    tau = float(post.draws["tau"][0, 0])
    assert tau == pytest.approx(len(u) / 2.0, rel=1e-3)  # n / (0 + 2 * 1)
    pr = post.predict(np.array([0, 5]), np.array([0, 3]), interval=0.9)
    width = pr.upper - pr.lower
    assert np.all(width == pytest.approx(2 * 1.6449 / np.sqrt(tau), rel=1e-3))
    assert np.all(width > 0.1)
    np.testing.assert_allclose(pr.mean, 4.0, atol=1e-4)


def test_noise_prior_strength_moves_tau_and_fixed_noise_ignores_it(data, default_fit):
    from bayesmf.model.spec import BayesPriors

    strong = fit_map(data.train, SPEC.replace(priors=BayesPriors(noise_a=1.0, noise_b=1e4)))
    assert float(strong.draws["tau"][0, 0]) < 0.1 * float(default_fit.draws["tau"][0, 0])
    np.testing.assert_array_equal(strong.draws["U"], default_fit.draws["U"])  # same mode
    fixed = fit_map(data.train, SPEC.replace(noise="fixed", noise_precision=3.0,
                                             priors=BayesPriors(noise_b=1e4)))
    assert float(fixed.draws["tau"][0, 0]) == pytest.approx(3.0)


def test_als_row_parts_give_the_one_part_minimiser(data, als_jax):
    """ALS on the JAX engine with each side's rows in 3 parts (solved as independent chains
    of operations) reaches the same minimiser as one part, up to float32 rounding; bad
    values are refused."""
    parts = fit_map(data.train, SPEC, solver="als", engine="jax", row_parts=3, **TIGHT)
    assert parts.attrs["row_parts"] == 3 and als_jax.attrs["row_parts"] == 1
    assert parts.attrs["iterations"] == pytest.approx(als_jax.attrs["iterations"], abs=3)
    for n in ("mu", "bu", "bi", "U", "V"):
        np.testing.assert_allclose(parts.draws[n], als_jax.draws[n], atol=2e-4, rtol=1e-4)
    np.testing.assert_allclose(parts.attrs["objective"], als_jax.attrs["objective"], rtol=1e-5)
    # the compile-free numpy engine runs the parts one after another: it keeps one
    assert fit_map(data.train, SPEC, engine="numpy", row_parts=3).attrs["row_parts"] == 1
    for bad in (0, -1, 2.5, "many", True):
        with pytest.raises(SpecError, match="row_parts"):
            fit_map(data.train, SPEC, row_parts=bad)
