"""BPMF Gibbs sampler: conditionals vs closed forms, recovery, calibration, chains, seeds,
streaming, NumPyro adapter. Tiny synthetic problems; the compiled driver is shared."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import SpecError
from bayesmf.infer import gibbs as G
from bayesmf.infer._rowblocks import build_row_blocks
from bayesmf.model.spec import BayesPriors, ModelSpec

N_USERS, N_ITEMS, RANK, NOISE_SD = 60, 50, 2, 0.5


def _planted(seed=0, density=0.55, n_test=300):
    """Planted rank-2 + biases + Gaussian noise; returns (train Ratings, test arrays)."""
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(N_USERS, RANK))
    V = rng.normal(size=(N_ITEMS, RANK))
    bu = 0.5 * rng.normal(size=N_USERS)
    bi = 0.5 * rng.normal(size=N_ITEMS)
    mask = rng.random((N_USERS, N_ITEMS)) < density
    uu, ii = np.nonzero(mask)
    r = 3.0 + bu[uu] + bi[ii] + np.sum(U[uu] * V[ii], 1) + NOISE_SD * rng.normal(size=uu.size)
    perm = rng.permutation(uu.size)
    te, tr = perm[:n_test], perm[n_test:]
    users, items = Vocabulary(np.arange(N_USERS)), Vocabulary(np.arange(N_ITEMS))
    train = Ratings.from_indices(uu[tr], ii[tr], r[tr], users, items)
    return train, (uu[te], ii[te], r[te])


@pytest.fixture(scope="module")
def data():
    return _planted()


@pytest.fixture(scope="module")
def fit(data):
    train, (tu, ti, _) = data
    return G.fit_gibbs(train, ModelSpec(rank=RANK), seed=3, num_samples=150, num_warmup=100,
                       num_chains=2, predict_pairs=(tu, ti))


# ----------------------------------------------------------------------------- conditionals
def _mc(f, n=3000, seed=0):
    keys = jax.random.split(jax.random.PRNGKey(seed), n)
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), jax.jit(jax.vmap(f))(keys))


def test_normal_wishart_conditional_matches_closed_form():
    rng = np.random.default_rng(1)
    F = rng.normal(loc=[1.0, -0.5, 0.2], scale=[1.0, 0.5, 2.0], size=(40, 3)).astype(np.float32)
    beta0, nu0, w0 = 2.0, 3.0, 1.5
    mu, Lam = _mc(lambda k: G.sample_normal_wishart(k, jnp.asarray(F), beta0, nu0, w0), 6000)
    n, k = F.shape
    Fd = F.astype(np.float64)
    Fbar = Fd.mean(0)
    S = (Fd - Fbar).T @ (Fd - Fbar)
    bN, nuN = beta0 + n, nu0 + n
    WNinv = np.eye(k) / w0 + S + beta0 * n / bN * np.outer(Fbar, Fbar)
    WN = np.linalg.inv(WNinv)
    # E[Lambda] = nu_N W_N ; Var[Lambda_ij] = nu_N (W_ij^2 + W_ii W_jj)
    se = np.sqrt(nuN * (WN ** 2 + np.outer(np.diag(WN), np.diag(WN))) / Lam.shape[0])
    assert np.all(np.abs(Lam.mean(0) - nuN * WN) < 5 * se)
    # mu: mean mu_N, covariance E[(beta_N Lambda)^-1] = W_N^-1 / (beta_N (nu_N - k - 1))
    cov = WNinv / (bN * (nuN - k - 1))
    assert np.all(np.abs(mu.mean(0) - n * Fbar / bN) < 5 * np.sqrt(np.diag(cov) / len(mu)))
    np.testing.assert_allclose(np.cov(mu.T), cov, rtol=0.1, atol=0.05 * np.abs(cov).max())


def test_bias_precision_mu_and_tau_conditionals():
    rng = np.random.default_rng(2)
    b = rng.normal(scale=0.7, size=30).astype(np.float32)
    lam = _mc(lambda k: G.bias_precision_draw(k, jnp.asarray(b), 1.5, 0.8))
    shape, rate = 1.5 + 15, 0.8 + 0.5 * np.sum(b.astype(np.float64) ** 2)
    np.testing.assert_allclose(lam.mean(), shape / rate, rtol=0.02)
    np.testing.assert_allclose(lam.var(), shape / rate ** 2, rtol=0.1)

    s = (3.0 + rng.normal(size=200)).astype(np.float32)
    tau, lam_mu, m0 = 2.0, 0.5, 1.0
    mu = _mc(lambda k: G.mu_draw(k, jnp.asarray(s), jnp.float32(tau), lam_mu, m0))
    prec = lam_mu + tau * s.size
    np.testing.assert_allclose(mu.mean(), (lam_mu * m0 + tau * s.astype(np.float64).sum()) / prec,
                               atol=4 / np.sqrt(prec * 3000))
    np.testing.assert_allclose(mu.var(), 1 / prec, rtol=0.1)

    t = _mc(lambda k: G.tau_draw(k, jnp.float32(57.0), 200, 1.0, 2.0, jnp.float32))
    np.testing.assert_allclose(t.mean(), 101 / 30.5, rtol=0.02)
    np.testing.assert_allclose(t.var(), 101 / 30.5 ** 2, rtol=0.1)


@pytest.mark.parametrize("with_mu", [True, False])
def test_shift_move_keeps_predictions_and_draws_its_exact_conditional(with_mu):
    """The shift move changes no prediction and leaves N(F_j | mu_F, Lam^-1) unchanged;
    the shift c follows the Gaussian whose log density is the sum of the prior terms that
    do change, written out here directly (Hessian and gradient by exact differences of a
    quadratic, float64)."""
    rng = np.random.default_rng(7)
    n, m, k = 25, 30, 3
    F = rng.normal(0.4, 1.0, (m, k)).astype(np.float32)        # the side that shifts (V)
    Gm = rng.normal(-0.3, 0.8, (n, k)).astype(np.float32)      # the other side (U)
    b = rng.normal(0, 0.5, n).astype(np.float32)               # the other side's biases
    bi = rng.normal(0, 0.5, m).astype(np.float32)
    mu_F = rng.normal(size=k).astype(np.float32)
    A0 = rng.normal(size=(k, k))
    Lam = (A0 @ A0.T / k + np.eye(k)).astype(np.float32)
    mu, lam_b, beta0, lam_mu, m_mu = 3.1, 2.5, 2.0, 0.7, 3.0
    args = dict(beta0=beta0, lambda_mu=lam_mu, mu_mean=m_mu, with_mu=with_mu)

    def move(key):
        return G.shift_move(key, jnp.asarray(F), jnp.asarray(mu_F), jnp.asarray(b),
                            jnp.asarray(Gm), jnp.float32(mu), jnp.asarray(Lam),
                            jnp.float32(lam_b), **args)

    F2, muF2, b2, mu2 = (np.asarray(x, np.float64) for x in move(jax.random.PRNGKey(0)))
    pred = lambda mu_, b_, F_: mu_ + b_[:, None] + bi[None, :] + Gm @ F_.T  # noqa: E731
    np.testing.assert_allclose(pred(mu2, b2, F2), pred(mu, b, F), atol=1e-4)
    np.testing.assert_allclose(F2 - muF2, F - mu_F, atol=1e-5)
    if not with_mu:
        assert mu2 == pytest.approx(mu, abs=1e-6)

    Gd = Gm.astype(np.float64)
    Gbar = Gd.mean(0) if with_mu else np.zeros(k)

    def logp(c):  # the prior terms the move changes, as functions of the shift c
        a = mu_F - c
        out = -0.5 * beta0 * a @ Lam @ a - 0.5 * lam_b * np.sum((b + (Gd - Gbar) @ c) ** 2)
        return out - (0.5 * lam_mu * (mu + Gbar @ c - m_mu) ** 2 if with_mu else 0.0)

    E = np.eye(k)
    H = np.array([[logp(E[i] + E[j]) - logp(E[i]) - logp(E[j]) + logp(np.zeros(k))
                   for j in range(k)] for i in range(k)])
    g = np.array([(logp(E[i]) - logp(-E[i])) / 2 for i in range(k)])
    cov = np.linalg.inv(-H)
    mean = cov @ g
    c = _mc(lambda key: move(key)[1], 4000)
    c = mu_F - c                                   # mu_F - c_drawn
    se = np.sqrt(np.diag(cov) / len(c))
    assert np.all(np.abs(c.mean(0) - mean) < 5 * se), (c.mean(0), mean)
    np.testing.assert_allclose(np.cov(c.T), cov, rtol=0.1, atol=0.05 * np.abs(cov).max())


def test_scale_move_keeps_predictions_and_samples_its_target():
    """The scale move changes neither U V^T nor the standardised rows
    (U_u - mu_U)^T Lam_U (U_u - mu_U); iterated, the log-scale it has travelled follows
    p(x) ~ exp(-(a e^{-2x} + b e^{2x}) / 2) with a = tr(Lam_U)/w0, b = tr(Lam_V)/w0
    (moments checked against numerical integration)."""
    rng = np.random.default_rng(11)
    k, w0 = 3, 1.5
    U = rng.normal(0.2, 1.0, (20, k)).astype(np.float32)
    V = rng.normal(-0.1, 0.5, (15, k)).astype(np.float32)
    mu_U, mu_V = U.mean(0), V.mean(0)
    A1, A2 = rng.normal(size=(k, k)), rng.normal(size=(k, k))
    Lam_U = (A1 @ A1.T / k + 0.5 * np.eye(k)).astype(np.float32)
    Lam_V = (A2 @ A2.T / k + 2.0 * np.eye(k)).astype(np.float32)
    args = tuple(jnp.asarray(x) for x in (U, mu_U, Lam_U, V, mu_V, Lam_V))
    U2, muU2, LU2, V2, muV2, LV2 = (np.asarray(x, np.float64)
                                    for x in G.scale_move(jax.random.PRNGKey(0), *args, w0))
    np.testing.assert_allclose(U2 @ V2.T, U @ V.T, rtol=1e-4, atol=1e-5)
    quad = lambda F, m, L: np.einsum("nk,kl,nl->n", F - m, L, F - m)  # noqa: E731
    np.testing.assert_allclose(quad(U2, muU2, LU2), quad(U, mu_U, Lam_U), rtol=1e-4)
    np.testing.assert_allclose(quad(V2, muV2, LV2), quad(V, mu_V, Lam_V), rtol=1e-4)

    @jax.jit
    def chain(key):
        def body(carry, kk):
            st, x = carry
            new = G.scale_move(kk, *st, w0)
            x = x + jnp.log(new[0][0, 0] / st[0][0, 0])
            return (new, x), x
        return jax.lax.scan(body, (args, jnp.zeros((), jnp.float32)),
                            jax.random.split(key, 20000))[1]

    xs = np.asarray(chain(jax.random.PRNGKey(1)), np.float64)[1000:]
    a, b = np.trace(Lam_U) / w0, np.trace(Lam_V) / w0
    grid = np.linspace(-3, 3, 20001)
    dens = np.exp(-0.5 * (a * np.exp(-2 * grid) + b * np.exp(2 * grid)))
    dens /= dens.sum()
    m = (grid * dens).sum()
    v = ((grid - m) ** 2 * dens).sum()
    # independence sampler, high acceptance: effective sample size well above 1000
    assert abs(xs.mean() - m) < 5 * np.sqrt(v / 1000), (xs.mean(), m)
    assert xs.var() == pytest.approx(v, rel=0.1)


@pytest.mark.parametrize("name", ["bernoulli-probit", "bernoulli-logit", "ordinal"])
def test_latent_scale_move_samples_its_target(name):
    """The latent-scale Metropolis move (step 6b) iterated alone on fixed data: the log-scale
    x it has travelled follows exp(logt(x)) of the start state, logt = the likelihood's
    scale_fgh plus the factor-prior term -k nu0 x - tr(Lam)/(2 w0) (e^{-x} - 1) (moments
    against numerical integration; the move is a group action, so the target seen from the
    moved state is the start's target shifted)."""
    from types import SimpleNamespace

    from bayesmf.infer.gibbs_steps import latent_scale_move
    from bayesmf.model.likelihoods import get_likelihood
    from bayesmf.model.likelihoods.ordinal import OrdinalProbit

    rng = np.random.default_rng(5)
    n, k, w0, nu0 = 20, 1, 1.0, 2.0
    eta0 = jnp.asarray(rng.normal(0.0, 1.0, n), jnp.float32)
    if name == "ordinal":
        lik = OrdinalProbit(levels=(1.0, 2.0, 3.0, 4.0))
        y = jnp.asarray(np.clip(np.round(1.5 + np.asarray(eta0) + rng.normal(0, 1, n)), 0, 3),
                        jnp.float32)
        theta0 = {"cutpoints": jnp.asarray([-0.5, 0.4, 1.3], jnp.float32)}
    else:
        lik = get_likelihood(name)
        y = jnp.asarray(rng.random(n) < 1 / (1 + np.exp(-2.0 * np.asarray(eta0))), jnp.float32)
        theta0 = {}
    spec = ModelSpec(rank=k, likelihood=lik, global_mean=False, user_bias=False,
                     item_bias=False)
    cfg = SimpleNamespace(spec=spec, k=k, global_mean=False, user_bias=False, item_bias=False,
                          w0=w0, nu0=nu0)
    Lam_U0, Lam_V0 = jnp.full((1, 1), 1.3, jnp.float32), jnp.full((1, 1), 0.7, jnp.float32)
    F = jnp.ones((3, k), jnp.float32)
    z1, z0 = jnp.zeros(1, jnp.float32), jnp.zeros((), jnp.float32)

    @jax.jit
    def chain(key):
        def body(carry, kk):
            eta, theta, LU, LV, x = carry
            out = latent_scale_move(kk, cfg, y, eta, z0, z1, z1, F, F, z1, LU, z1, LV,
                                    jnp.ones(()), jnp.ones(()), theta)
            s = out[-1]
            x = x + jnp.log(s)
            return (eta * s, out[-2], out[6], out[8], x), x
        return jax.lax.scan(body, (eta0, theta0, Lam_U0, Lam_V0, z0),
                            jax.random.split(key, 20000))[1]

    xs = np.asarray(chain(jax.random.PRNGKey(2)), np.float64)[1000:]
    grid = np.linspace(-4.0, 4.0, 4001)
    tr = 1.3 + 0.7
    f = np.asarray(jax.vmap(lambda x: lik.scale_fgh(y, eta0, theta0, x, spec)[0])(
        jnp.asarray(grid, jnp.float32)), np.float64)
    logt = f - k * nu0 * grid - tr / (2 * w0) * (np.exp(-grid) - 1.0)
    dens = np.exp(logt - logt.max())
    dens /= dens.sum()
    m = (grid * dens).sum()
    v = ((grid - m) ** 2 * dens).sum()
    assert dens[0] < 1e-8 and dens[-1] < 1e-8  # the grid holds the target
    assert abs(xs.mean() - m) < 5 * np.sqrt(v / 1000), (xs.mean(), m)
    assert xs.var() == pytest.approx(v, rel=0.1)


@pytest.mark.parametrize("with_bias,k", [(True, 2), (False, 2), (True, 0)])
def test_row_conditional_is_bayesian_linear_regression(with_bias, k):
    rng = np.random.default_rng(3)
    n_rows, n_other, nnz = 6, 9, 40
    rows, cols = rng.integers(0, n_rows - 1, nnz), rng.integers(0, n_other, nnz)  # last row empty
    blocks = build_row_blocks(rows, cols, n_rows, n_other=n_other, max_width=4)
    Fo = rng.normal(size=(n_other, k)).astype(np.float32)
    y = rng.normal(size=nnz).astype(np.float32)
    tau, lam_b = 1.3, 2.5
    A = rng.normal(size=(k, k))
    Lam = (A @ A.T + np.eye(k)).astype(np.float32)
    mu_f = rng.normal(size=k).astype(np.float32)
    b, F = _mc(lambda key: G.rows_draw(key, k, blocks, with_bias, jnp.asarray(Fo), jnp.asarray(y),
                                       jnp.float32(tau), jnp.float32(lam_b), jnp.asarray(Lam),
                                       jnp.asarray(mu_f)), 4000)
    Z = np.concatenate([b[..., None]] * with_bias + [F], axis=-1)
    X = np.hstack([np.ones((n_other, 1))] * with_bias + [Fo.astype(np.float64)])
    d = X.shape[1]
    P0 = np.zeros((d, d))
    h0 = np.zeros(d)
    if with_bias:
        P0[0, 0] = lam_b
    P0[int(with_bias):, int(with_bias):] = Lam
    h0[int(with_bias):] = Lam @ mu_f
    if not with_bias:
        assert np.all(b == 0)
    for r in range(n_rows):
        o = rows == r
        P = P0 + tau * X[cols[o]].T @ X[cols[o]]
        mean = np.linalg.solve(P, h0 + tau * X[cols[o]].T @ y[o])
        cov = np.linalg.inv(P)
        sd = np.sqrt(np.diag(cov))
        assert np.all(np.abs(Z[:, r].mean(0) - mean) < 5 * sd / np.sqrt(len(Z)))
        emp = np.atleast_2d(np.cov(Z[:, r].T))
        assert np.abs((emp - cov) / np.outer(sd, sd)).max() < 0.12


# ----------------------------------------------------------------------------- whole sampler
def test_posterior_contract(fit, data):
    train, _ = data
    C, D, k = 2, 150, RANK
    assert fit.method == "gibbs" and fit.n_chains == C and fit.n_draws == D
    assert fit.draws["U"].shape == (C, D, N_USERS, k) and fit.draws["U"].dtype == np.float32
    assert fit.draws["Lambda_V"].shape == (C, D, k, k)
    assert fit.draws["lambda_bu"].shape == (C, D)
    assert fit.sample_stats["train_rmse"].shape == (C, D)
    assert fit.sample_stats["log_likelihood"].shape == (C, D)
    json.dumps(fit.attrs)
    assert fit.attrs["seconds_per_sweep"] > 0 and fit.attrs["compile_seconds"] >= 0
    assert fit.attrs["settings"]["n_sweeps"] == 100 + 150
    assert not np.array_equal(fit.draws["U"][0, 0], fit.draws["U"][0, 1])  # draws move


def test_recovers_planted_truth_with_calibrated_intervals(fit, data):
    _, (tu, ti, ty) = data
    pred = fit.predict(tu, ti, interval=0.9)
    rmse = np.sqrt(np.mean((pred.mean - ty) ** 2))
    assert rmse < 1.25 * NOISE_SD  # ~3 params per row from ~25 ratings: about 1.12x
    tau = fit.draws["tau"].astype(np.float64)
    assert abs(np.mean(1 / tau) - NOISE_SD ** 2) < 0.15 * NOISE_SD ** 2
    cover = np.mean((ty >= pred.lower) & (ty <= pred.upper))
    # 300 held-out entries: binomial sd 0.017; a sampler without parameter uncertainty
    # or with a wrong noise level lands outside this band
    assert 0.84 <= cover <= 0.96, cover
    # the intervals are not trivially wide: noise-only intervals would be ~2*1.645*0.5
    assert np.mean(pred.upper - pred.lower) < 2 * 1.645 * NOISE_SD * 1.3
    # the chains agree with each other on predictions, biases and noise
    a, b = fit.select(chains=[0]), fit.select(chains=[1])
    pa, pb = a.predict(tu, ti).mean, b.predict(tu, ti).mean
    assert np.sqrt(np.mean((pa - pb) ** 2)) < 0.1
    assert np.abs(a.draws["tau"].mean() - b.draws["tau"].mean()) < 0.1 * tau.mean()


def test_streamed_predictions_equal_draw_based(fit, data):
    _, (tu, ti, _) = data
    sp = G.streamed_predictions(fit)
    m, _v = fit.pair_moments(tu, ti)
    np.testing.assert_allclose(sp["mean"], m.mean(0), atol=2e-4)
    np.testing.assert_allclose(sp["var_param"], m.var(0), rtol=2e-3, atol=1e-6)
    np.testing.assert_allclose(sp["noise_var"], fit.noise_var().mean(), rtol=1e-4)
    assert fit.attrs["streamed_predictions"]["n_draws"] == fit.n_samples


def test_seed_determinism_and_chunking(data, fit):
    train, (tu, ti, _) = data
    kw = dict(num_samples=150, num_warmup=100, num_chains=2, predict_pairs=(tu, ti))
    again = G.fit_gibbs(train, ModelSpec(rank=RANK), seed=3, progress_every=37, **kw)
    assert again.attrs["compile_cached"]  # same shapes: no recompilation
    for n in ("U", "V", "bu", "tau", "Lambda_U"):
        assert np.array_equal(again.draws[n], fit.draws[n]), n
    other = G.fit_gibbs(train, ModelSpec(rank=RANK), seed=4, **kw)
    assert not np.allclose(other.draws["tau"], fit.draws["tau"])
    # without factor draws: final state + traces, streamed summaries identical
    small = G.fit_gibbs(train, ModelSpec(rank=RANK), seed=3, store_draws=False, **kw)
    assert small.n_draws == 1 and small.draws["U"].shape == (2, 1, N_USERS, RANK)
    np.testing.assert_array_equal(small.draws["U"][:, 0], fit.draws["U"][:, -1])
    np.testing.assert_array_equal(np.asarray(small.attrs["traces"]["tau"], np.float32),
                                  fit.draws["tau"])
    assert small.attrs["streamed_predictions"] == fit.attrs["streamed_predictions"]
    json.dumps(small.attrs)


def test_row_parts_follow_the_unpartitioned_chain(data):
    """``row_parts`` (rows cut into contiguous ranges solved as separate chains of
    operations) draws the same random numbers: over 5 sweeps the draws equal those of
    one part up to float rounding (chaotic growth is negligible that early)."""
    train, _ = data
    kw = dict(num_samples=5, num_warmup=0, seed=2)
    one = G.fit_gibbs(train, ModelSpec(rank=RANK), row_parts=1, **kw)
    three = G.fit_gibbs(train, ModelSpec(rank=RANK), row_parts=3, **kw)
    assert three.attrs["settings"]["row_parts"] == 3
    assert one.attrs["settings"]["row_parts"] == 1   # "auto" on small data: one part too
    for n in ("U", "V", "bu", "bi", "tau", "mu"):
        np.testing.assert_allclose(three.draws[n], one.draws[n], rtol=1e-3, atol=1e-4,
                                   err_msg=n)
    with pytest.raises(SpecError, match="row_parts"):
        G.fit_gibbs(train, ModelSpec(rank=RANK), row_parts=0, **kw)


def test_chains_started_far_apart_agree(data):
    train, (tu, ti, _) = data
    kern = G.BPMFGibbs(train, ModelSpec(rank=RANK))
    s_near = kern.init(jax.random.PRNGKey(0), init_scale=0.01)
    s_far = kern.init(jax.random.PRNGKey(1), init_scale=3.0, mu=-5.0, tau=100.0)
    start = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), s_near, s_far)

    @jax.jit
    def run(start, keys):
        def chain(s, ks):
            def body(s, k):
                s, info = kern.step(k, s)
                pred = s.mu + s.bu[tu] + s.bi[ti] + jnp.sum(s.U[tu] * s.V[ti], 1)
                return s, (pred, s.bu, s.tau, info["train_rmse"], s.mu)
            return jax.lax.scan(body, s, ks)[1]
        return jax.vmap(chain)(start, keys)

    keys = jax.random.split(jax.random.PRNGKey(7), 2 * 250).reshape(2, 250, -1)
    pred, bu, tau, rmse, mu = (np.asarray(x, np.float64) for x in run(start, keys))
    assert rmse[1, 0] > 2 * rmse[0, -1]  # the far chain really started far away
    keep = slice(100, None)
    p0, p1 = pred[0, keep].mean(0), pred[1, keep].mean(0)
    assert np.sqrt(np.mean((p0 - p1) ** 2)) < 0.1
    b0, b1 = bu[0, keep].mean(0), bu[1, keep].mean(0)
    assert np.sqrt(np.mean((b0 - b1) ** 2)) < 0.15
    assert abs(tau[0, keep].mean() - tau[1, keep].mean()) < 0.1 * tau[0, keep].mean()
    # mu too (the far chain started at -5), within its posterior spread
    assert abs(mu[0, keep].mean() - mu[1, keep].mean()) < 3 * mu[0, keep].std() + 0.02


ML100K = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-100k"


@pytest.mark.slow
@pytest.mark.skipif(not (ML100K / "u1.base").exists(), reason="shared MovieLens-100K absent")
def test_mu_mixes_on_movielens():
    """mu trades off against the factor means (a likelihood-flat direction); without the
    shift moves 4 chains x 400 draws on ML-100K u1 give R-hat(mu) 1.25 and bulk ESS 12,
    with them 1.01 and 419 (measured 2026-12-01)."""
    import arviz as az

    from bayesmf.datasets import load_movielens_fold

    train = load_movielens_fold("100k", "u1", path=ML100K).train
    post = G.fit_gibbs(train, ModelSpec(rank=10), seed=0, num_chains=4, num_warmup=100,
                       num_samples=400)
    mu = np.asarray(post.draws["mu"], np.float64)
    assert float(az.rhat(mu)) < 1.05
    assert float(az.ess(mu)) > 100


def test_switched_off_terms_and_fixed_noise(data):
    train, _ = data
    spec = ModelSpec(rank=0, user_bias=True, item_bias=False, global_mean=False,
                     noise="fixed", noise_precision=2.0,
                     priors=BayesPriors(bias_a=2.0, bias_b=1.0))
    post = G.fit_gibbs(train, spec, seed=0, num_samples=20, num_warmup=5)
    assert np.all(post.draws["bi"] == 0) and np.all(post.draws["mu"] == 0)
    assert np.all(post.draws["tau"] == 2.0)
    assert post.draws["U"].shape == (1, 20, N_USERS, 0)
    # user biases absorb the mean rating (about 3) without a global mean
    assert 2.3 < post.draws["bu"].mean() < 3.7
    assert np.all(post.draws["lambda_bi"] == 1.0)


def test_options_are_validated(data):
    train, _ = data
    with pytest.raises(SpecError, match="unknown option"):
        G.fit_gibbs(train, ModelSpec(rank=1), samples=3)
    with pytest.raises(SpecError):
        G.fit_gibbs(train, ModelSpec(rank=1), num_samples=0)
    with pytest.raises(SpecError):
        G.fit_gibbs(train, ModelSpec(rank=1), predict_pairs=([0, 1], [0, 999]))
    with pytest.raises(SpecError, match="chain_method"):
        G.fit_gibbs(train, ModelSpec(rank=1), chain_method="pmap")
    with pytest.raises(SpecError):
        G.fit_gibbs(train, ModelSpec(rank=1), dtype="float16")


def test_parallel_chains_fall_back_to_vectorized_on_one_device(data):
    if len(jax.local_devices()) > 1:
        pytest.skip("this process has several devices")
    train, _ = data
    kw = dict(seed=2, num_chains=2, num_warmup=5, num_samples=10)
    with pytest.warns(UserWarning, match="xla_force_host_platform_device_count"):
        par = G.fit_gibbs(train, ModelSpec(rank=RANK), chain_method="parallel", **kw)
    vec = G.fit_gibbs(train, ModelSpec(rank=RANK), **kw)
    assert par.attrs["chain_method_used"] == "vectorized" and par.attrs["devices"] == 1
    np.testing.assert_array_equal(par.draws["U"], vec.draws["U"])


_PARALLEL_SCRIPT = """
import json, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_gibbs import _planted
from bayesmf.infer import gibbs as G
from bayesmf.model.spec import ModelSpec
train, (tu, ti, _) = _planted()
kw = dict(seed=2, num_chains=4, num_warmup=20, num_samples=30, predict_pairs=(tu, ti))
par = G.fit_gibbs(train, ModelSpec(rank=2), chain_method="parallel", **kw)
vec = G.fit_gibbs(train, ModelSpec(rank=2), **kw)
print(json.dumps({{
    "used": par.attrs["chain_method_used"], "devices": par.attrs["devices"],
    "max_draw_diff": float(max(np.abs(par.draws[n] - vec.draws[n]).max()
                               for n in ("mu", "bu", "U", "V", "tau"))),
    "max_pred_diff": float(np.abs(np.subtract(
        par.attrs["streamed_predictions"]["mean"],
        vec.attrs["streamed_predictions"]["mean"])).max())}}))
"""


def test_parallel_chains_on_two_cpu_devices_match_vectorized(tmp_path):
    """chain_method="parallel" splits the chains over CPU devices (here 2, from XLA_FLAGS
    in a subprocess): same chains as the vectorized run up to float rounding."""
    import os
    import subprocess
    import sys

    script = tmp_path / "par.py"
    script.write_text(_PARALLEL_SCRIPT.format(tests=str(Path(__file__).resolve().parent)))
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
               JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["used"] == "parallel" and res["devices"] == 2
    assert res["max_draw_diff"] < 1e-3 and res["max_pred_diff"] < 1e-3, res


def test_numpyro_mcmc_runs_the_gibbs_kernel(data):
    from numpyro.infer import MCMC

    train, (tu, ti, ty) = data
    kernel = G.BPMFGibbsKernel(train, ModelSpec(rank=RANK))
    mcmc = MCMC(kernel, num_warmup=60, num_samples=60, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(0))
    s = mcmc.get_samples()
    assert s["U"].shape == (60, N_USERS, RANK) and s["tau"].shape == (60,)
    assert s["Lambda_U"].shape == (60, RANK, RANK)
    pred = (s["mu"][:, None] + s["bu"][:, tu] + s["bi"][:, ti]
            + jnp.sum(s["U"][:, tu] * s["V"][:, ti], -1)).mean(0)
    assert np.sqrt(np.mean((np.asarray(pred) - ty) ** 2)) < 1.2 * NOISE_SD
    assert abs(float(jnp.mean(1 / s["tau"])) - NOISE_SD ** 2) < 0.2 * NOISE_SD ** 2


def test_standard_gamma_moments_including_huge_shapes():
    # tau's shape is ~ nnz/2: float32 cancellation once produced zeros here
    shapes = np.array([0.4, 1.0, 3.5, 250.0, 2.2e5], np.float32)
    g = _mc(lambda k: G.standard_gamma(k, jnp.asarray(shapes), jnp.float32), 8000)
    assert np.all(g > 0)
    assert np.all(np.abs(g.mean(0) / shapes - 1) < 4 / np.sqrt(shapes * 8000) + 1e-5)
    assert np.all(np.abs(g.std(0) / np.sqrt(shapes) - 1) < 0.05)


def twin_sweeps(model, n, each=None, init_scale=None, **hook):
    """``n`` plain sweeps of a ``BPMFGibbs`` model and ``n`` with a hook of the sweep
    (``obs_fn=`` / ``rows_fn=``, which turn its shortcuts off), from the same state and
    keys (``model.init``'s ``init_scale``); ``each(info_plain, info_hooked)`` after every
    sweep. Returns the final states and infos ``(a, ia, b, ib)``."""
    from bayesmf.infer.gibbs_kernel import _sweep

    fast = jax.jit(lambda k, s: _sweep(model.cfg, model.data, k, s))
    slow = jax.jit(lambda k, s: _sweep(model.cfg, model.data, k, s, **hook))
    a = b = model.init(jax.random.key(0), init_scale=init_scale)
    for t in range(n):
        key = jax.random.fold_in(jax.random.key(1), t)
        (a, ia), (b, ib) = fast(key, a), slow(key, b)
        if each is not None:
            each(ia, ib)
    return a, ia, b, ib


def per_observation(model):
    """The ``obs_fn`` hook that evaluates every observation's prediction (the sweep's
    default computation, but it disables the residual sums from the Grams)."""
    return lambda f: f(model.data.user, model.data.item)


@pytest.mark.parametrize("options", [dict(), dict(global_mean=False),
                                     dict(noise="fixed", noise_precision=4.0)])
def test_residual_sums_from_the_item_grams_equal_the_per_observation_sweep(data, options):
    """The Gaussian sweep takes the SSE of tau and the residual sum of mu from the item
    step's Grams (module docs, "Residual sums") instead of evaluating every prediction;
    forcing the per-observation route (an obs_fn hook) must give the same sweep up to
    float rounding, over 20 sweeps from the same state and keys."""
    from bayesmf.infer.gibbs_kernel import BPMFGibbs

    train, _ = data
    model = BPMFGibbs(train, ModelSpec(rank=3, **options))
    a, ia, b, ib = twin_sweeps(model, 20, obs_fn=per_observation(model))
    for name in ("mu", "bu", "bi", "U", "V"):
        np.testing.assert_allclose(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)),
                                   rtol=2e-3, atol=2e-3, err_msg=name)
    np.testing.assert_allclose(float(a.theta["tau"]), float(b.theta["tau"]), rtol=1e-3)
    np.testing.assert_allclose(float(ia["train_rmse"]), float(ib["train_rmse"]), rtol=1e-4)
    np.testing.assert_allclose(float(ia["log_likelihood"]), float(ib["log_likelihood"]),
                               rtol=1e-4)
