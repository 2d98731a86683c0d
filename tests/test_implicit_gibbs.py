"""Bayesian implicit ALS: the implicit likelihood's Gibbs sweep over the positives equals
the sweep over the explicit full matrix; closed-form sums; MAP; errors; recovery."""

from dataclasses import dataclass

import jax
import numpy as np
import pandas as pd
import pytest

import bayesmf
from bayesmf.data.ratings import Ratings
from bayesmf.errors import DataError, SpecError
from bayesmf.infer.gibbs_kernel import BPMFGibbs
from bayesmf.model import linear
from bayesmf.model.likelihoods import Gaussian, ImplicitGaussian
from bayesmf.model.spec import ModelSpec


@dataclass(frozen=True)
class _FullWeighted(Gaussian):
    """Test-only family: every pair of the matrix stored explicitly, internal value
    ``c * (2p - 1)`` (p the 0/1 preference, c its confidence): the weighted Gaussian
    model the implicit likelihood represents without the unobserved pairs."""

    name = "test-full-weighted"

    def prior_scale(self, y):
        return 1.0

    def eta_offset(self, y):
        return 0.0

    def gaussianize(self, key, y, eta, theta):
        import jax.numpy as jnp

        return (y > 0).astype(y.dtype), theta["tau"] * jnp.abs(y)

    def update_theta(self, key, y, eta, theta, spec):
        import jax.numpy as jnp

        from bayesmf.model.random import gamma_draw

        p, c = (y > 0).astype(y.dtype), jnp.abs(y)
        sse = jnp.sum(c * (p - eta) ** 2)
        n = y.shape[0]
        tau = gamma_draw(key, spec.priors.noise_a + n / 2, spec.priors.noise_b + 0.5 * sse,
                         y.dtype)
        return {"tau": tau}, {"train_rmse": jnp.sqrt(sse / n), "log_likelihood": -sse}


def _problem(seed=0, N=12, M=9, density=0.3):
    rng = np.random.default_rng(seed)
    P = rng.random((N, M)) < density
    P[np.arange(N), rng.integers(0, M, N)] = True    # no empty user
    P[rng.integers(0, N, M), np.arange(M)] = True    # no empty item
    u, i = np.nonzero(P)
    counts = rng.integers(1, 20, len(u)).astype(float)
    return P, u, i, counts


# with biases in make test-all: the default implicit model has none (ImplicitGaussian
# default_biases = False), and the bias rows are the explicit sweep's, tested there
@pytest.mark.parametrize("biases", [False, pytest.param(True, marks=pytest.mark.slow)])
def test_sweep_equals_the_explicit_full_matrix_sweep(biases):
    P, u, i, counts = _problem()
    N, M = P.shape
    lik = ImplicitGaussian(alpha=3.0, transform="log")
    pos = Ratings.from_arrays(u, i, counts)
    C = np.ones((N, M))
    C[u, i] = lik.encode(counts)
    uu, ii = np.meshgrid(np.arange(N), np.arange(M), indexing="ij")
    full = Ratings.from_indices(uu.ravel(), ii.ravel(), (C * (2 * P - 1)).ravel(),
                                pos.users, pos.items)
    kw = dict(rank=3, global_mean=biases, user_bias=biases, item_bias=biases)
    g_imp = BPMFGibbs(pos, ModelSpec(likelihood=lik, **kw))
    g_full = BPMFGibbs(full, ModelSpec(likelihood=_FullWeighted(), **kw))
    key = jax.random.PRNGKey(3)
    s_imp = g_imp.init(key, init_scale=0.5)
    s_full = g_full.init(key, init_scale=0.5)
    for t in range(3):
        k = jax.random.fold_in(key, t)
        s_imp, info_imp = g_imp.step(k, s_imp)
        s_full, info_full = g_full.step(k, s_full)
        for name in ("mu", "bu", "bi", "U", "V", "mu_U", "Lambda_U", "tau"):
            a, b = np.asarray(getattr(s_imp, name)), np.asarray(getattr(s_full, name))
            np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-3, err_msg=f"{name} sweep {t}")
        np.testing.assert_allclose(float(info_imp["train_rmse"]),
                                   float(info_full["train_rmse"]), rtol=1e-3)
    assert np.ptp(np.asarray(s_imp.U)) > 0.01      # the factors moved: not a trivial match
    if biases:
        assert abs(float(s_imp.mu)) > 1e-4


@pytest.mark.parametrize("options", [
    pytest.param(dict(noise="learned"), marks=pytest.mark.slow),  # the row_block case's
    dict(noise="fixed", noise_precision=4.0, user_bias=True, item_bias=True),
    dict(noise="learned", row_block=2),
])
def test_tau_from_the_row_statistics_equals_the_per_observation_sweep(options):
    """Without a global mean the implicit sweep takes S = sum_all c (p - eta)^2 from the
    item draw's statistics plus the closed-form background sums (no prediction at the
    observed pairs); forcing the per-observation route (an obs_fn hook) must give the
    same sweep up to float rounding: tau, train_rmse, log-likelihood over 10 sweeps."""
    from test_gibbs import per_observation, twin_sweeps

    P, u, i, counts = _problem(4, N=40, M=30, density=0.2)
    opts = dict(options)
    row_block = opts.pop("row_block", 0)
    model = BPMFGibbs(Ratings.from_arrays(u, i, counts),
                      ModelSpec(rank=4, likelihood=ImplicitGaussian(alpha=3.0), **opts),
                      row_block=row_block)

    def same_info(ia, ib):
        for n in ("train_rmse", "log_likelihood"):
            np.testing.assert_allclose(float(ia[n]), float(ib[n]), rtol=1e-4, err_msg=n)

    a, _, b, _ = twin_sweeps(model, 10, same_info, 0.5, obs_fn=per_observation(model))
    state = model.init(jax.random.key(0), init_scale=0.5)
    for name in ("bu", "bi", "U", "V"):
        np.testing.assert_allclose(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)),
                                   rtol=2e-3, atol=2e-3, err_msg=name)
    np.testing.assert_allclose(float(a.theta["tau"]), float(b.theta["tau"]), rtol=1e-3)
    if opts["noise"] == "learned":
        assert abs(float(a.theta["tau"]) - float(state.theta["tau"])) > 1e-3


@pytest.mark.parametrize("row_block", [0, 2])
def test_row_draw_statistics_are_the_observed_corrections_of_the_background(row_block):
    """rows_draw(background=..., fit_stats=True): the observed pairs' weighted squared
    and plain residuals minus the background's at the same pairs, brute-forced in float64
    from the drawn rows (with the bias column)."""
    import jax.numpy as jnp

    from bayesmf.infer.gibbs_steps import rows_draw

    P, u, i, counts = _problem(5, N=40, M=30, density=0.2)
    model = BPMFGibbs(Ratings.from_arrays(u, i, counts),
                      ModelSpec(rank=4, likelihood=ImplicitGaussian(alpha=3.0),
                                user_bias=True, item_bias=True))
    s = model.init(jax.random.key(0), init_scale=0.5)
    d = model.data
    rng = np.random.default_rng(6)
    w = jnp.asarray(4.0 * (1 + rng.random(len(u))), jnp.float32)   # tau * c
    y = jnp.asarray(1.0 - s.bu[d.user])                               # targets z - mu - b_u
    w0, t0_other = 4.0, -s.bu                                          # background (0, tau)
    bg = (w0, t0_other[d.user], t0_other)
    kw = dict(current=(s.bi, s.V), row_block=row_block) if row_block else {}
    bi, V, (sq, lin) = rows_draw(jax.random.key(2), 4, d.iblocks, True, s.U, y, w,
                                 s.lambda_bi, s.Lambda_V, s.mu_V, bg, fit_stats=True, **kw)
    b2, V2 = rows_draw(jax.random.key(2), 4, d.iblocks, True, s.U, y, w, s.lambda_bi,
                       s.Lambda_V, s.mu_V, bg, **kw)
    np.testing.assert_array_equal(np.asarray(V), np.asarray(V2))
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    uu, ii = np.asarray(d.user), np.asarray(d.item)
    p = f64(bi)[ii] + np.sum(f64(s.U)[uu] * f64(V)[ii], axis=1)
    yy, ww, t0 = f64(y), f64(w), f64(bg[1])
    want_sq = np.sum(ww * (yy - p) ** 2 - w0 * (t0 - p) ** 2)
    want_lin = np.sum(ww * (yy - p) - w0 * (t0 - p))
    scale = np.sum(ww * yy * yy)
    np.testing.assert_allclose(float(sq), want_sq, atol=1e-5 * scale)
    np.testing.assert_allclose(float(lin), want_lin, atol=1e-5 * scale)


def test_full_moments_equal_the_dense_sums():
    rng = np.random.default_rng(1)
    N, M, k = 7, 5, 3
    mu, bu, bi = 0.3, rng.normal(size=N), rng.normal(size=M)
    U, V = rng.normal(size=(N, k)), rng.normal(size=(M, k))
    E = mu + bu[:, None] + bi[None, :] + U @ V.T
    s1, s2 = linear.full_moments(np.float64(mu), bu, bi, U, V)
    assert s1 == pytest.approx(E.sum(), rel=1e-12)
    assert s2 == pytest.approx((E * E).sum(), rel=1e-12)


def test_map_is_implicit_als_and_tau_is_the_mode_of_the_dense_residual():
    P, u, i, counts = _problem(2, N=30, M=20)
    df = pd.DataFrame({"user": u, "item": i, "count": counts})
    m = bayesmf.BayesMF(method="map", rank=4, likelihood="implicit", reg_factors=0.5,
                        noise="learned", max_iter=30, solver="cholesky").fit(
                            df, rating_col="count")
    post = m.posterior
    U, V = post.draws["U"][0, 0].astype(float), post.draws["V"][0, 0].astype(float)
    lik = post.likelihood
    C = np.ones(P.shape)
    C[u, i] = lik.encode(counts)
    E = U @ V.T
    sse = (C * (P - E) ** 2).sum()
    # the last half-step is the exact minimiser in V: the HKV gradient in V vanishes
    grad_V = -2 * ((C * (P - E)).T @ U) + 2 * 0.5 * V
    assert np.abs(grad_V).max() < 1e-3 * np.abs(V).max()
    a, b = post.spec.priors.noise_a, post.spec.priors.noise_b
    n = P.size
    tau_mode = (a + n / 2 - 1) / (b + sse / 2)
    assert float(post.draws["tau"][0, 0]) == pytest.approx(tau_mode, rel=2e-3)
    assert np.all(post.draws["bu"] == 0) and np.all(post.draws["mu"] == 0)


def test_gibbs_recovers_a_planted_ranking():
    rng = np.random.default_rng(0)
    N, M, k = 150, 100, 3
    U, V = rng.normal(size=(N, k)), rng.normal(size=(M, k))
    prob = 1 / (1 + np.exp(-(1.5 * U @ V.T - 2.5)))
    P = rng.random((N, M)) < prob
    u, i = np.nonzero(P)
    inter = bayesmf.data.Interactions.from_arrays(u, i, rng.poisson(2, len(u)) + 1)
    m = bayesmf.BayesMF(method="gibbs", rank=6, likelihood="implicit", num_samples=60,
                        num_warmup=60).fit(inter)
    post = m.posterior
    E = np.einsum("cdnk,cdmk->nm", post.draws["U"], post.draws["V"]) / post.n_samples
    # AUC of the posterior-mean preference against the planted probability's ranking
    from scipy.stats import rankdata

    truth = (prob > 0.5).ravel()
    r = rankdata(E.ravel())
    n1, n0 = truth.sum(), (~truth).sum()
    auc = (r[truth].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)
    assert auc > 0.93
    rec = m.recommend([0, 1, 2], n=5)
    seen = set(zip(u.tolist(), i.tolist()))
    assert not any((int(a), int(b)) in seen for a, b in zip(rec["user"], rec["item"]))
    np.testing.assert_allclose(rec["mean"], rec["score"], rtol=1e-6)   # mean = the score


@pytest.mark.parametrize("bad", [0.0, -1.0, np.nan])
def test_bad_counts_are_data_errors(bad):
    df = pd.DataFrame({"user": [0, 0, 1], "item": [0, 1, 1], "rating": [1.0, bad, 2.0]})
    with pytest.raises(DataError):
        bayesmf.BayesMF(method="map", rank=1, likelihood="implicit").fit(df)


def test_unsupported_method_and_bad_options_are_spec_errors():
    df = pd.DataFrame({"user": [0, 0, 1, 2], "item": [0, 1, 1, 2], "rating": [1.0, 3, 2, 1]})
    for method in ("nuts", "svi", "pymc-advi"):
        with pytest.raises(SpecError, match="does not support likelihood 'implicit'"):
            bayesmf.BayesMF(method=method, rank=1, likelihood="implicit").fit(df)
    with pytest.raises(SpecError, match="alpha"):
        ImplicitGaussian(alpha=-1.0)
    with pytest.raises(SpecError, match="transform"):
        ImplicitGaussian(transform="sqrt")


def test_map_with_biases_minimises_the_dense_biased_objective():
    """Implicit ALS with mu, b_u, b_i (MAP): the posterior's point values give the
    objective the fit reports, computed densely, and predictions include the biases."""
    P, u, i, counts = _problem(5, N=25, M=15)
    df = pd.DataFrame({"user": u, "item": i, "rating": counts})
    m = bayesmf.BayesMF(method="map", rank=3, likelihood="implicit", reg_factors=0.7,
                        reg_bias=0.2, global_mean=True, user_bias=True, item_bias=True,
                        max_iter=30, solver="cholesky").fit(df)
    post = m.posterior
    d = {k: post.draws[k][0, 0].astype(np.float64) for k in ("mu", "bu", "bi", "U", "V")}
    assert np.abs(d["bi"]).max() > 0 and np.abs(d["bu"]).max() > 0
    C = np.ones((25, 15))
    Pm = np.zeros((25, 15))
    uu, ii = post.users.encode(u), post.items.encode(i)
    C[uu, ii] = post.likelihood.encode(counts)
    Pm[uu, ii] = 1.0
    S = d["mu"] + d["bu"][:, None] + d["bi"][None, :] + d["U"] @ d["V"].T
    dense = float(np.sum(C * (Pm - S) ** 2) + 0.7 * (np.sum(d["U"] ** 2) + np.sum(d["V"] ** 2))
                  + 0.2 * (np.sum(d["bu"] ** 2) + np.sum(d["bi"] ** 2)))
    assert post.attrs["objective"] == pytest.approx(dense, rel=1e-4)
    trace = post.sample_stats["objective_trace"][0, 0]
    assert np.all(np.diff(trace) <= 1e-6 * abs(trace[0]))
    pred = m.predict(pd.DataFrame({"user": [u[0]], "item": [i[0]]}))["mean"].iloc[0]
    assert pred == pytest.approx(S[uu[0], ii[0]], rel=1e-4)


def test_bias_and_noise_defaults_follow_the_likelihood():
    spec = bayesmf.BayesMF(likelihood="implicit").make_spec()
    assert spec.user_bias is False and (spec.noise, spec.noise_precision) == ("fixed", 16.0)
    spec = bayesmf.BayesMF(likelihood="implicit", noise="learned").make_spec()
    assert (spec.noise, spec.noise_precision) == ("learned", 16.0)
    assert (bayesmf.BayesMF().make_spec().noise, bayesmf.BayesMF().make_spec().noise_precision
            ) == ("learned", 1.0)
    assert bayesmf.BayesMF(likelihood="implicit").make_spec().user_bias is False
    assert bayesmf.BayesMF().make_spec().user_bias is True
    assert bayesmf.BayesMF(likelihood="wmf", item_bias=True).make_spec().item_bias is True


def test_fold_in_is_the_dense_weighted_ridge_update():
    P, u, i, counts = _problem(4, N=25, M=15)
    df = pd.DataFrame({"user": u, "item": i, "rating": counts})
    m = bayesmf.BayesMF(method="map", rank=3, likelihood="implicit", reg_factors=0.7,
                        max_iter=5).fit(df)
    post = m.posterior
    V = post.draws["V"][0, 0].astype(float)
    tau = float(post.draws["tau"][0, 0])
    new = pd.DataFrame({"user": "x", "item": [1, 4, 7], "rating": [3.0, 1.0, 10.0]})
    folded = bayesmf.recommend.fold_in(post, new, user="x")
    c = np.ones(V.shape[0])
    c[[1, 4, 7]] = post.likelihood.encode(np.array([3.0, 1.0, 10.0]))
    p = np.zeros(V.shape[0])
    p[[1, 4, 7]] = 1.0
    A = tau * (V.T @ (c[:, None] * V) + 0.7 * np.eye(3))
    x = np.linalg.solve(A, tau * V.T @ (c * p))
    np.testing.assert_allclose(folded.F[0, 0], x, rtol=1e-4, atol=1e-6)
    rec = folded.recommend(n=3)
    assert not set(rec["item"]) & {1, 4, 7}
    with pytest.raises(DataError):
        bayesmf.recommend.fold_in(post, new.assign(rating=[1.0, 0.0, 2.0]), user="x")
