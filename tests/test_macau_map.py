"""Side features (the Macau prior as a ridge) in the MAP fit (bayesmf.infer.map).

Planted data whose factors are linear in the features (plus noise); the last N_COLD items
are cold (all their ratings held out), and the last N_EMPTY users are in the vocabulary
without any training rating. Small problems run on the compile-free numpy engine; the JAX
engine (sparse COO features, CG) and L-BFGS are compiled once each."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sps

from bayesmf.data.features import Features
from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import DataError, SpecError
from bayesmf.infer.map import _Feat, fit_map, link_update
from bayesmf.model.spec import ModelSpec
from _macau_planted import frame as _frame, planted_macau

N, M, K, F, N_COLD, N_EMPTY = 150, 120, 2, 3, 12, 3
SPEC = ModelSpec(rank=K, reg_factors=1.0, reg_bias=1.0)


@pytest.fixture(scope="module")
def planted():
    p = planted_macau(0, N, M, 0.25, K, F, N_COLD)
    uu, ii, r, cold = p["uu"], p["ii"], p["r"], p["cold"]
    tr = ~cold & (uu < N - N_EMPTY)
    users, items = Vocabulary(np.arange(N)), Vocabulary(np.arange(M - N_COLD))
    train = Ratings.from_indices(uu[tr], ii[tr], r[tr], users, items)
    c = cold & (uu < N - N_EMPTY)
    return dict(train=train, Xu=p["Xu"], Xi=p["Xi"], Bu=p["Bu"], Bi=p["Bi"], uf=p["uf"],
                itf=p["itf"], cold=(uu[c], ii[c], r[c]))


@pytest.fixture(scope="module")
def als(planted):
    return fit_map(planted["train"], SPEC, user_features=planted["uf"],
                   item_features=planted["itf"], engine="numpy", max_iter=300, tol=1e-8)


def _aligned_corr(est, true):
    """Correlation of ``true`` with its best linear reconstruction from ``est`` (factors
    are identified only up to an invertible k x k map)."""
    A, *_ = np.linalg.lstsq(est, true, rcond=None)
    return float(np.corrcoef((est @ A).ravel(), true.ravel())[0, 1])


def _hand_objective(post, train, Xu, Xi, reg_f, reg_b, reg_beta, beta0):
    """J of the module docs from the draws, in float64 numpy."""
    d = {n: np.asarray(v[0, 0], np.float64) for n, v in post.draws.items()}
    pred = (d["mu"] + d["bu"][train.user] + d["bi"][train.item]
            + np.sum(d["U"][train.user] * d["V"][train.item], 1))
    J = np.sum((train.rating - pred) ** 2)
    J += reg_b * (d["bu"] @ d["bu"] + d["bi"] @ d["bi"])
    for S, X in (("U", Xu[:train.n_users]), ("V", Xi[:train.n_items])):
        mean = d[f"mu_{S}"] + X @ d[f"beta_{S}"]
        J += reg_f * np.sum((d[S] - mean) ** 2)
        J += reg_f * (beta0 * d[f"mu_{S}"] @ d[f"mu_{S}"] + reg_beta * np.sum(d[f"beta_{S}"] ** 2))
    return J


# ----------------------------------------------------------------------------- link solve
def _link_data(rng, n=40, nf=5, density=None):
    X = rng.normal(size=(n, nf))
    if density is not None:
        X = X * (rng.random((n, nf)) < density)
    R = rng.normal(size=(n, K)) + X @ rng.normal(size=(nf, K))
    Xt = np.hstack([np.ones((n, 1)), X])
    return X, R, Xt


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_link_update_closed_form(solver):
    """(mu, beta) = (Xt'Xt + diag(beta0, reg_beta I))^-1 Xt'R, numpy (dense and CSR) and
    JAX (dense and COO), against a float64 solve."""
    import jax.numpy as jnp

    rng = np.random.default_rng(3)
    X, R, Xt = _link_data(rng, density=0.5)
    beta0, reg_beta = 2.0, 0.7
    want = np.linalg.solve(Xt.T @ Xt + np.diag([beta0] + [reg_beta] * X.shape[1]), Xt.T @ R)
    G = (Xt.T @ Xt).astype(np.float32) if solver == "cholesky" else None
    Xs = sps.csr_matrix(X, dtype=np.float32)
    C = sps.coo_matrix(X)
    zeros = (np.zeros(K, np.float32), np.zeros((X.shape[1], K), np.float32))
    forms = [(_Feat(X.astype(np.float32), None, None, None, G), np.float32),
             (_Feat(Xs, None, None, None, G), np.float32),
             (_Feat(jnp.asarray(X, jnp.float32), None, None, None,
                    None if G is None else jnp.asarray(G)), jnp.asarray),
             (_Feat(None, jnp.asarray(C.row, jnp.int32), jnp.asarray(C.col, jnp.int32),
                    jnp.asarray(C.data, jnp.float32), None if G is None else jnp.asarray(G)),
              jnp.asarray)]
    for fd, conv in forms:
        Rc = np.asarray(R, np.float32) if conv is np.float32 else jnp.asarray(R, jnp.float32)
        z = zeros if conv is np.float32 else tuple(jnp.asarray(a) for a in zeros)
        mu, beta = link_update(Rc, fd, np.float32(reg_beta), beta0, *z, solver=solver,
                               cg_tol=1e-7, cg_maxiter=500)
        np.testing.assert_allclose(np.asarray(mu), want[0], rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(np.asarray(beta), want[1:], rtol=2e-3, atol=2e-4)


# ----------------------------------------------------------------------------- objective
def test_objective_is_the_documented_one_and_monotone(planted, als):
    tr = als.sample_stats["objective_trace"][0, 0]
    assert np.all(np.diff(tr) <= 1e-6 * np.abs(tr[:-1])), "ALS objective increased"
    assert tr[-1] < 0.5 * tr[0]
    # (the encoded features: Features.from_frame standardises numeric columns)
    J = _hand_objective(als, planted["train"], planted["uf"].X, planted["itf"].X, 1.0, 1.0, 1.0,
                        float(als.spec.priors.beta0))
    assert als.attrs["objective"] == pytest.approx(J, rel=1e-4)
    # a user without ratings sits at the prior mean mu_U + beta_U' x_u (of the link one
    # half-sweep earlier: equal up to the last sweep's change of beta)
    d = {n: v[0, 0].astype(np.float64) for n, v in als.draws.items()}
    empty = np.arange(N - N_EMPTY, N)
    np.testing.assert_allclose(d["U"][empty], d["mu_U"] + planted["uf"].X[empty] @ d["beta_U"],
                               rtol=3e-3, atol=1e-3)
    # the penalty is active: a larger reg_beta shrinks beta
    stiff = fit_map(planted["train"], SPEC, user_features=planted["uf"],
                    item_features=planted["itf"], engine="numpy", reg_beta=1e3)
    assert np.abs(stiff.draws["beta_U"]).max() < 0.2 * np.abs(als.draws["beta_U"]).max()


def test_lbfgs_reaches_the_als_optimum(planted, als):
    """The gradient solver differentiates the same J: it ends at (or slightly below) the
    value ALS approaches (ALS converges slowly along the factor scale/rotation: 867.2
    after 200 sweeps, 859.8 after 2000, L-BFGS 859.5)."""
    kw = dict(user_features=planted["uf"], item_features=planted["itf"])
    lb = fit_map(planted["train"], SPEC, solver="lbfgs", max_iter=1000, tol=1e-9, **kw)
    al = als.attrs["objective"]
    assert al * 0.98 < lb.attrs["objective"] <= al * (1 + 1e-5)
    J = _hand_objective(lb, planted["train"], planted["uf"].X, planted["itf"].X, 1.0, 1.0, 1.0,
                        float(lb.spec.priors.beta0))
    assert lb.attrs["objective"] == pytest.approx(J, rel=1e-4)
    assert lb.features["user"] is not None and lb.features["item"] is not None
    np.testing.assert_allclose(lb.flat("beta_V") @ np.eye(K), lb.draws["beta_V"][0], rtol=0)


# ----------------------------------------------------------------------------- recovery
def test_beta_recovered_and_cold_start(planted, als):
    assert als.draws["beta_U"].shape == (1, 1, F, K)
    assert als.draws["Lambda_V"].shape == (1, 1, K, K)
    assert als.draws["lambda_beta_V"].shape == (1, 1)
    for X, B, name in ((planted["Xu"], planted["Bu"], "beta_U"),
                       (planted["Xi"], planted["Bi"], "beta_V")):
        assert _aligned_corr(X @ als.draws[name][0, 0], X @ B) > 0.95
    cu, ci, cr = planted["cold"]
    fallback = np.sqrt(np.mean((als.predict(cu, ci, clip=False).mean - cr) ** 2))
    cold = als.with_features(item_features=_frame("item", np.arange(M), planted["Xi"]))
    assert cold.cold_range("item") == (M - N_COLD, M)
    p = cold.predict(cu, ci, clip=False)
    assert p.known_item.all()
    rmse = np.sqrt(np.mean((p.mean - cr) ** 2))
    # noise sd 0.5 plus the unexplained factor part; the fallback is ~3.7
    assert rmse < 0.4 * fallback and rmse < 1.4, (rmse, fallback)
    # the prior's extra variance of a cold row: Lambda_V^-1 = I / (tau reg_f) in c' C c
    d = {n: v[0, 0].astype(np.float64) for n, v in cold.draws.items()}
    extra = (1.0 / d["lambda_bi"]) + np.sum(d["U"][cu] ** 2, 1) / d["Lambda_V"][0, 0]
    np.testing.assert_allclose(p.std_param ** 2, extra, rtol=1e-4)
    assert np.allclose(d["Lambda_V"], d["tau"] * 1.0 * np.eye(K), rtol=1e-6)


def test_engines_and_sparse_solvers_agree(planted, als):
    """numpy + dense Cholesky (the fixture) = numpy + CSR + CG = JAX + COO + CG."""
    csr_u = Features(planted["uf"].ids, sps.csr_matrix(planted["uf"].X), planted["uf"].schema,
                     "user")
    csr_i = Features(planted["itf"].ids, sps.csr_matrix(planted["itf"].X),
                     planted["itf"].schema, "item")
    cu, ci, _ = planted["cold"]
    ref = als.with_features(item_features=planted["itf"]).predict(cu, ci, clip=False).mean
    for engine in ("numpy", "jax"):
        post = fit_map(planted["train"], SPEC, user_features=csr_u, item_features=csr_i,
                       engine=engine, beta_solver="cg", cg_tol=1e-7, max_iter=300, tol=1e-8)
        assert post.attrs["engine"] == engine
        assert post.attrs["macau"]["sides"] == [["user", F, "cg"], ["item", F, "cg"]]
        assert post.features["item"].is_sparse
        assert post.attrs["objective"] == pytest.approx(als.attrs["objective"], rel=1e-3)
        got = post.with_features(item_features=csr_i).predict(cu, ci, clip=False).mean
        np.testing.assert_allclose(got, ref, atol=0.05)


def test_map_and_gibbs_cold_start_agree(planted, als):
    from bayesmf.infer.gibbs import fit_gibbs

    g = fit_gibbs(planted["train"], ModelSpec(rank=K), user_features=planted["uf"],
                  item_features=planted["itf"], num_samples=80, num_warmup=80, seed=1)
    cu, ci, cr = planted["cold"]
    itf = _frame("item", np.arange(M), planted["Xi"])
    pm = als.with_features(item_features=itf).predict(cu, ci, clip=False)
    pg = g.with_features(item_features=itf).predict(cu, ci, clip=False)
    assert np.corrcoef(pm.mean, pg.mean)[0, 1] > 0.95
    assert np.sqrt(np.mean((pm.mean - pg.mean) ** 2)) < 0.5
    rm, rg = (np.sqrt(np.mean((p.mean - cr) ** 2)) for p in (pm, pg))
    assert abs(rm - rg) < 0.2, (rm, rg)
    # same draw names and layout (up to chain/draw counts)
    for n in ("beta_U", "beta_V", "mu_U", "Lambda_V", "lambda_beta_U", "lambda_bi"):
        assert als.draws[n].shape[2:] == g.draws[n].shape[2:], n


# ----------------------------------------------------------------------------- errors
def test_feature_errors(planted):
    tr, uf, itf = planted["train"], planted["uf"], planted["itf"]
    with pytest.raises(SpecError, match="rank >= 1"):
        fit_map(tr, ModelSpec(rank=0), item_features=itf)
    with pytest.raises(SpecError, match="reg_factors > 0"):
        fit_map(tr, ModelSpec(rank=K, reg_factors=0.0), user_features=uf)
    with pytest.raises(SpecError, match="reg_beta"):
        fit_map(tr, SPEC, user_features=uf, reg_beta=-1.0)
    with pytest.raises(SpecError, match="beta_solver"):
        fit_map(tr, SPEC, user_features=uf, beta_solver="lu")
    with pytest.raises(DataError, match="no feature row"):
        fit_map(tr, SPEC, user_features=uf.subset(np.arange(N - 5)))
    with pytest.raises(DataError, match="built for"):
        fit_map(tr, SPEC, user_features=itf)
    ones = Ratings.from_indices(tr.user, tr.item, np.ones(tr.nnz), tr.users, tr.items)
    with pytest.raises(SpecError, match="not supported"):
        fit_map(ones, ModelSpec(rank=K, likelihood="implicit", global_mean=False,
                                user_bias=False, item_bias=False), user_features=uf)
    plain = fit_map(tr, SPEC, engine="numpy")
    assert "beta_U" not in plain.draws and "macau" not in plain.attrs
    with pytest.raises(SpecError, match="no item features"):
        plain.with_features(item_features=itf)
