"""Confidence-weighted implicit ALS (bayesmf.infer.implicit_als) against dense references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from bayesmf.errors import BayesMFError, DataError, SpecError
from bayesmf.infer.implicit_als import implicit_als, implicit_als_loss, update_factors


def _toy(n_users=12, n_items=9, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    conf = np.where(mask, 1.0 + 40.0 * rng.integers(1, 5, (n_users, n_items)), 0.0)
    return sp.csr_matrix(conf), mask


def _dense_CP(C):
    D = C.toarray()
    obs = D > 0
    return np.where(obs, D, 1.0), obs.astype(float)


def _dense_update(C, Y, reg):
    Cd, P = _dense_CP(C)
    k = Y.shape[1]
    return np.stack([np.linalg.solve(Y.T @ (Cd[u][:, None] * Y) + reg * np.eye(k),
                                     Y.T @ (Cd[u] * P[u])) for u in range(Cd.shape[0])])


def _dense_loss(C, X, Y, reg):
    Cd, P = _dense_CP(C)
    return float(np.sum(Cd * (P - X @ Y.T) ** 2) + reg * (np.sum(X ** 2) + np.sum(Y ** 2)))


@pytest.mark.parametrize("chunk_bytes", [1 << 27, 1])  # one chunk / one row per chunk
def test_half_step_equals_dense_closed_form(chunk_bytes):
    C, _ = _toy()
    rng = np.random.default_rng(1)
    Y = rng.standard_normal((9, 4))
    X = update_factors(C, Y, reg=0.3, chunk_bytes=chunk_bytes)
    np.testing.assert_allclose(X, _dense_update(C, Y, 0.3), rtol=1e-5, atol=1e-7)
    Xd = rng.standard_normal((12, 4))
    Yn = update_factors(C.T, Xd, reg=0.3, chunk_bytes=chunk_bytes)
    np.testing.assert_allclose(Yn, _dense_update(C.T.tocsr(), Xd, 0.3), rtol=1e-5,
                               atol=1e-7)


def test_users_without_observations_get_the_zero_solution_and_loss_matches():
    C, _ = _toy()
    C = C.tolil()
    C[3, :] = 0
    C = C.tocsr()
    C.eliminate_zeros()
    Y = np.random.default_rng(2).standard_normal((9, 3))
    X = update_factors(C, Y, reg=0.1)
    np.testing.assert_allclose(X, _dense_update(C, Y, 0.1), rtol=1e-5, atol=1e-8)
    assert np.allclose(X[3], 0)


def test_loss_is_monotone_and_equals_dense_loss():
    C, _ = _toy(20, 15, seed=3)
    seen = []
    X, Y, info = implicit_als(C, 3, reg=0.5, iterations=8, dtype=np.float64,
                              callback=lambda it, X, Y, loss: seen.append(
                                  (loss, _dense_loss(C, X, Y, 0.5))))
    losses = [info["loss_init"]] + info["loss"]
    assert np.all(np.diff(losses) <= 1e-9 * abs(losses[0]))
    assert losses[-1] < 0.5 * losses[0]
    for loss, dense in seen:
        assert loss == pytest.approx(dense, rel=1e-10)
    assert implicit_als_loss(C, X, Y, 0.5) == pytest.approx(_dense_loss(C, X, Y, 0.5),
                                                            rel=1e-10)
    assert info["iterations"] == 8 and len(info["seconds"]) == 8
    assert X.shape == (20, 3) and Y.shape == (15, 3) and X.dtype == np.float64


def test_cg_with_many_steps_equals_cholesky():
    C, _ = _toy(seed=4)
    rng = np.random.default_rng(5)
    Y = rng.standard_normal((9, 4))
    X0 = rng.standard_normal((12, 4))
    exact = update_factors(C, Y, reg=0.2)
    cg = update_factors(C, Y, reg=0.2, X=X0, solver="cg", cg_steps=40)
    np.testing.assert_allclose(cg, exact, rtol=1e-6, atol=1e-8)
    # few steps: not exact, but better than the start
    cg1 = update_factors(C, Y, reg=0.2, X=X0, solver="cg", cg_steps=1)
    assert np.linalg.norm(cg1 - exact) < np.linalg.norm(X0 - exact)
    # whole fits agree too
    a = implicit_als(C, 4, reg=0.2, iterations=5, dtype=np.float64)
    b = implicit_als(C, 4, reg=0.2, iterations=5, dtype=np.float64, solver="cg",
                     cg_steps=40)
    np.testing.assert_allclose(a[2]["loss"], b[2]["loss"], rtol=1e-6)
    np.testing.assert_allclose(a[0] @ a[1].T, b[0] @ b[1].T, atol=1e-5)


def test_cg_default_steps_decrease_loss():
    C, _ = _toy(30, 25, seed=6)
    _, _, info = implicit_als(C, 4, reg=0.1, iterations=10, solver="cg", cg_steps=3)
    assert info["loss"][-1] < 0.5 * info["loss_init"]


def _auc(pos_scores, neg_scores):
    return float((pos_scores[:, None] > neg_scores[None, :]).mean())


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_planted_low_rank_ranks_held_out_positives_high(solver):
    rng = np.random.default_rng(7)
    nu, ni, k = 300, 200, 3
    U, V = rng.standard_normal((nu, k)), rng.standard_normal((ni, k))
    logits = U @ V.T
    # positives: the ~10% highest-affinity items per user, sampled with noise
    thr = np.quantile(logits, 0.9, axis=1, keepdims=True)
    obs = rng.random((nu, ni)) < 1 / (1 + np.exp(-4 * (logits - thr)))
    held = np.zeros_like(obs)
    for u in range(nu):
        pos = np.flatnonzero(obs[u])
        if len(pos) >= 2:
            held[u, rng.choice(pos)] = True
    train = obs & ~held
    C = sp.csr_matrix(np.where(train, 1.0 + 20.0 * rng.integers(1, 4, train.shape), 0.0))
    X, Y, info = implicit_als(C, 8, reg=1.0, iterations=10, solver=solver, seed=1)
    S = X @ Y.T
    hu, hi = np.nonzero(held)
    pos_scores = S[hu, hi]
    neg_u = rng.integers(0, nu, 5000)
    neg_i = rng.integers(0, ni, 5000)
    keep = ~obs[neg_u, neg_i]
    neg_scores = S[neg_u[keep], neg_i[keep]]
    assert _auc(pos_scores, neg_scores) > 0.8
    assert X.dtype == np.float32


def test_seed_determinism():
    C, _ = _toy()
    a = implicit_als(C, 2, iterations=2, seed=3)
    b = implicit_als(C, 2, iterations=2, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_callback_can_stop_early():
    C, _ = _toy()
    X, Y, info = implicit_als(C, 2, iterations=10, callback=lambda it, *a: it >= 3)
    assert info["iterations"] == 3 and info["stopped_early"] and len(info["loss"]) == 3


def test_dense_input_is_accepted():
    C, _ = _toy()
    a = implicit_als(C, 2, iterations=2)
    b = implicit_als(C.toarray(), 2, iterations=2)
    np.testing.assert_allclose(a[0], b[0])


@pytest.mark.parametrize("C, msg", [
    (sp.csr_matrix(np.array([[0.5, 0.0], [0.0, 2.0]])), "below 1"),
    (sp.csr_matrix(np.array([[np.nan, 0.0], [0.0, 2.0]])), "NaN or infinite"),
    (sp.csr_matrix(np.array([[np.inf, 0.0], [0.0, 2.0]])), "NaN or infinite"),
    (sp.csr_matrix((3, 4)), "no observed"),
    (np.ones(5), "2-D"),
    (np.array([["a", "b"]]), "numbers"),
    ("not a matrix", "2-D"),
    (sp.csr_matrix((0, 4)), "at least one"),
    (sp.csr_matrix(([0.0, 2.0], ([0, 1], [0, 1])), shape=(2, 2)), "below 1"),
])
def test_bad_confidence_matrices_raise_data_error(C, msg):
    with pytest.raises(DataError, match=msg):
        implicit_als(C, 2)


@pytest.mark.parametrize("kw, msg", [
    ({"rank": 0}, "rank"), ({"rank": 2.5}, "rank"), ({"rank": True}, "rank"),
    ({"reg": -1}, "reg"), ({"reg": float("nan")}, "reg"), ({"reg": "x"}, "reg"),
    ({"iterations": 0}, "iterations"), ({"solver": "lu"}, "solver"),
    ({"cg_steps": 0}, "cg_steps"), ({"dtype": np.int32}, "dtype"),
    ({"dtype": "nope"}, "dtype"), ({"init_scale": 0}, "init_scale"),
    ({"callback": 3}, "callback"), ({"seed": "abc"}, "seed"),
    ({"chunk_bytes": 0}, "chunk_bytes"),
])
def test_bad_options_raise_spec_error(kw, msg):
    C, _ = _toy()
    kw = {"rank": 2, **kw}
    with pytest.raises(SpecError, match=msg):
        implicit_als(C, **kw)


def test_update_factors_validates_shapes():
    C, _ = _toy()
    with pytest.raises(SpecError, match="shape"):
        update_factors(C, np.ones((8, 2)))
    with pytest.raises(SpecError, match="shape"):
        update_factors(C, np.ones((9, 2)), X=np.ones((12, 3)), solver="cg")
    with pytest.raises(SpecError, match="finite"):
        update_factors(C, np.full((9, 2), np.nan))
    with pytest.raises(BayesMFError):
        implicit_als_loss(C, np.ones((12, 2)), np.ones((9, 3)))


def test_interactions_confidence_round_trip():
    from bayesmf.data import Interactions

    inter = Interactions.from_arrays([1, 1, 2, 3, 3, 3], [10, 11, 10, 11, 12, 12])
    C = inter.to_csr(inter.confidence(alpha=5.0))
    X, Y, info = implicit_als(C, 2, iterations=3, reg=0.1)
    assert X.shape == (inter.n_users, 2) and Y.shape == (inter.n_items, 2)
    assert info["nnz"] == inter.nnz


# ------------------------------------------------------------------------------ biases
def _dense_loss_biased(C, X, Y, bu, bi, mu, reg, reg_bias):
    Cd, P = _dense_CP(C)
    S = mu + bu[:, None] + bi[None, :] + X @ Y.T
    return float(np.sum(Cd * (P - S) ** 2) + reg * (np.sum(X ** 2) + np.sum(Y ** 2))
                 + reg_bias * (np.sum(bu ** 2) + np.sum(bi ** 2)))


def _dense_grads(C, X, Y, bu, bi, mu, reg, reg_bias):
    """Gradients of the dense biased objective (halved)."""
    Cd, P = _dense_CP(C)
    R = Cd * (mu + bu[:, None] + bi[None, :] + X @ Y.T - P)
    return {"X": R @ Y + reg * X, "Y": R.T @ X + reg * Y, "bu": R.sum(1) + reg_bias * bu,
            "bi": R.sum(0) + reg_bias * bi, "mu": R.sum()}


@pytest.mark.parametrize("solver", ["cholesky", "cg"])
def test_biased_loss_is_the_dense_one_and_never_increases(solver):
    C, _ = _toy(20, 15, seed=5)
    seen = []
    X, Y, info = implicit_als(
        C, 3, reg=0.5, reg_bias=0.2, iterations=10, dtype=np.float64, solver=solver,
        cg_steps=20, user_bias=True, item_bias=True, global_mean=True,
        callback=lambda it, X, Y, loss: seen.append(loss))
    bu, bi, mu = info["user_bias"], info["item_bias"], info["mu"]
    assert bu.shape == (20,) and bi.shape == (15,) and np.abs(bi).max() > 0 and mu != 0
    assert info["loss"][-1] == pytest.approx(
        _dense_loss_biased(C, X, Y, bu, bi, mu, 0.5, 0.2), rel=1e-10)
    losses = [info["loss_init"]] + info["loss"]
    if solver == "cholesky":   # exact block minimisers: monotone
        assert np.all(np.diff(losses) <= 1e-9 * abs(losses[0]))
    assert losses[-1] < 0.5 * losses[0]


def test_biased_blocks_are_exact_minimisers():
    """After a sweep (users, items, then mu) mu has zero gradient; with global_mean off
    the last block is the items': their factors and biases have zero gradient (the user
    step is the same code with the roles swapped)."""
    C, _ = _toy(16, 11, seed=6)
    kw = dict(reg=0.4, reg_bias=0.3, iterations=6, dtype=np.float64, user_bias=True,
              item_bias=True)
    X, Y, info = implicit_als(C, 2, global_mean=True, **kw)
    g = _dense_grads(C, X, Y, info["user_bias"], info["item_bias"], info["mu"], 0.4, 0.3)
    assert abs(g["mu"]) < 1e-8 * np.abs(C.data).sum()
    X, Y, info = implicit_als(C, 2, global_mean=False, **kw)
    g = _dense_grads(C, X, Y, info["user_bias"], info["item_bias"], 0.0, 0.4, 0.3)
    np.testing.assert_allclose(g["Y"], 0, atol=1e-8)
    np.testing.assert_allclose(g["bi"], 0, atol=1e-8)


def test_without_biases_the_info_biases_are_zero_and_the_path_is_unchanged():
    C, _ = _toy()
    X, Y, info = implicit_als(C, 3, reg=0.3, iterations=3, dtype=np.float64)
    assert info["mu"] == 0.0 and not info["user_bias"].any() and not info["item_bias"].any()
    X2, Y2, info2 = implicit_als(C, 3, reg=0.3, iterations=3, dtype=np.float64,
                                 reg_bias=5.0)       # no bias on: reg_bias changes nothing
    np.testing.assert_array_equal(X, X2)
    with pytest.raises(SpecError, match="user_bias must be True or False"):
        implicit_als(C, 2, user_bias=1)
