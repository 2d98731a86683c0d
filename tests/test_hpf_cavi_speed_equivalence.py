"""The fast HPF CAVI (issue 14: blocked dense-GEMM rates, shared moments, the likelihood
sum without per-non-zero gathers) computes what the original implementation computed:
the rates against an explicit sum, and the whole CAVI run (ELBO trace, iterations,
variational parameters) against a verbatim copy of the original numpy loop."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import digamma, gammaln

from bayesmf.infer import hpf, nmf
from bayesmf.infer.nmf import SparseCounts

HYPER = (0.3, 0.3, 1.0, 0.3, 0.4, 2.0)


def _counts(seed=0, N=37, M=23):
    """Counts with dense users (rows 0-9), sparse users, an empty user (row 12), an
    empty item (column 5) and counts above 1."""
    rng = np.random.default_rng(seed)
    p = np.where(np.arange(N)[:, None] < 10, 0.7, 0.08) * np.ones((N, M))
    Y = (rng.uniform(size=(N, M)) < p) * rng.integers(1, 4, (N, M))
    Y[12] = 0
    Y[:, 5] = 0
    u, i = np.nonzero(Y)
    return SparseCounts(u, i, Y[u, i].astype(float), N, M)


# ---------------------------------------------------------------- the original code
def _ref_log_normalisers(data, ElT, ElB):
    mA = ElT.max(axis=1)
    mB = ElB.max(axis=1)
    A = np.exp(ElT - mA[:, None])
    B = np.exp(ElB - mB[:, None])
    Sp = np.maximum(data.rates(A, B), np.finfo(np.float64).tiny)
    return np.log(Sp) + mA[data.user] + mB[data.item], A, B, Sp


def _ref_entropy(s, r):
    return s - np.log(r) + gammaln(s) + (1.0 - s) * digamma(s)


def _ref_elbo(data, hyper, p, log_S):
    a, ap, bp, c, cp, dp = hyper
    ElT = digamma(p["gs"]) - np.log(p["gr"])
    ElB = digamma(p["ls"]) - np.log(p["lr"])
    ET, EB = p["gs"] / p["gr"], p["ls"] / p["lr"]
    ElX = digamma(p["ks"]) - np.log(p["kr"])
    ElE = digamma(p["ts"]) - np.log(p["tr"])
    EX, EE = p["ks"] / p["kr"], p["ts"] / p["tr"]
    K = ET.shape[1]
    lik = float(data.y @ log_S) - data.log_fact - float(ET.sum(0) @ EB.sum(0))
    pr_t = float(np.sum(a * ElX) * K - ET.shape[0] * K * gammaln(a)
                 + (a - 1.0) * ElT.sum() - np.sum(EX[:, None] * ET))
    pr_x = float(np.sum(ap * np.log(ap / bp) - gammaln(ap) + (ap - 1.0) * ElX
                        - ap / bp * EX))
    pr_b = float(np.sum(c * ElE) * K - EB.shape[0] * K * gammaln(c)
                 + (c - 1.0) * ElB.sum() - np.sum(EE[:, None] * EB))
    pr_e = float(np.sum(cp * np.log(cp / dp) - gammaln(cp) + (cp - 1.0) * ElE
                        - cp / dp * EE))
    ent = float(_ref_entropy(p["gs"], p["gr"]).sum() + _ref_entropy(p["ks"], p["kr"]).sum()
                + _ref_entropy(p["ls"], p["lr"]).sum() + _ref_entropy(p["ts"], p["tr"]).sum())
    return lik + pr_t + pr_x + pr_b + pr_e + ent


def _ref_cavi(data, rank, hyper, *, max_iter=500, min_iter=10, tol=1e-5, seed=0):
    a, ap, bp, c, cp, dp = hyper
    rng = np.random.default_rng(seed)
    N, M, K = data.N, data.M, rank
    s = np.sqrt(max(data.total, 1e-300) / (float(N) * float(M) * K))
    p = {"gs": a + rng.uniform(0.0, 1.0, (N, K)), "ls": c + rng.uniform(0.0, 1.0, (M, K)),
         "ks": np.full(N, ap + K * a), "ts": np.full(M, cp + K * c)}
    p["gr"] = p["gs"] / (s * rng.uniform(0.5, 1.5, (N, K)))
    p["lr"] = p["ls"] / (s * rng.uniform(0.5, 1.5, (M, K)))
    p["kr"] = p["ks"] / bp
    p["tr"] = p["ts"] / dp
    trace, converged, it = [], False, 0
    while True:
        ElT = digamma(p["gs"]) - np.log(p["gr"])
        ElB = digamma(p["ls"]) - np.log(p["lr"])
        log_S, A, B, Sp = _ref_log_normalisers(data, ElT, ElB)
        trace.append(_ref_elbo(data, hyper, p, log_S))
        if it > 0 and it >= min_iter and \
                abs(trace[-1] - trace[-2]) <= tol * max(abs(trace[-1]), 1e-12):
            converged = True
            break
        if it >= max_iter:
            break
        it += 1
        QB, QtA = data.ratio_products(data.y / Sp, A, B)
        gs = a + A * QB
        ls = c + B * QtA
        p["gs"] = gs
        p["gr"] = (p["ks"] / p["kr"])[:, None] + (p["ls"] / p["lr"]).sum(0)[None, :]
        p["kr"] = ap / bp + (p["gs"] / p["gr"]).sum(1)
        p["ls"] = ls
        p["lr"] = (p["ts"] / p["tr"])[:, None] + (p["gs"] / p["gr"]).sum(0)[None, :]
        p["tr"] = cp / dp + (p["ls"] / p["lr"]).sum(1)
    return p, {"elbo": np.asarray(trace), "iterations": it, "converged": converged}


# ---------------------------------------------------------------- tests
@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 2 users (46 entries), so the toy matrix has many blocks of both kinds."""
    monkeypatch.setattr(nmf, "_DENSE_ENTRIES", 46)
    monkeypatch.setattr(nmf, "_DENSE_MIN_FILL", 0.5)
    monkeypatch.setattr(nmf, "_GATHER_CHUNK", 3)


@pytest.mark.parametrize("route", ["mixed", "all-dense", "all-gather"])
def test_rates_equal_the_explicit_sum_on_both_routes(small_blocks, monkeypatch, route):
    data = _counts()
    if route == "all-dense":
        monkeypatch.setattr(nmf, "_DENSE_MIN_FILL", 0.0)
    elif route == "all-gather":
        monkeypatch.setattr(nmf, "_DENSE_MIN_FILL", 2.0)
    R = nmf._Rates(data)
    want_dense = {"mixed": (0, data.nnz), "all-dense": (data.nnz, data.nnz),
                  "all-gather": (0, 0)}[route]
    if route == "mixed":
        assert 0 < R.dense_nnz < data.nnz  # both routes really run
    else:
        assert R.dense_nnz == want_dense[0]
    rng = np.random.default_rng(1)
    A, B = rng.gamma(1.0, 1.0, (data.N, 4)), rng.gamma(1.0, 1.0, (data.M, 4))
    want = np.array([sum(A[u, k] * B[i, k] for k in range(4))
                     for u, i in zip(data.user, data.item)])
    np.testing.assert_allclose(R(A, B), want, rtol=1e-13)


def test_likelihood_sum_equals_the_unshifted_form():
    """sum y log S with S = sum_k exp(ElT_uk + ElB_ik), without the max shift."""
    data = _counts(2)
    rng = np.random.default_rng(3)
    ElT, ElB = rng.normal(-1, 2, (data.N, 3)), rng.normal(-1, 2, (data.M, 3))
    want = sum(y * np.log(np.exp(ElT[u] + ElB[i]).sum())
               for u, i, y in zip(data.user, data.item, data.y))
    got, A, B, Sp = hpf._log_normalisers(data, ElT, ElB)
    assert got == pytest.approx(want, rel=1e-12)
    np.testing.assert_allclose(data.y / Sp, data.y / data.rates(A, B), rtol=1e-13)


@pytest.mark.parametrize("route", ["mixed", "default"])
def test_cavi_equals_the_original_implementation(monkeypatch, route):
    if route == "mixed":
        monkeypatch.setattr(nmf, "_DENSE_ENTRIES", 46)
        monkeypatch.setattr(nmf, "_DENSE_MIN_FILL", 0.5)
    data = _counts(4)
    p_ref, i_ref = _ref_cavi(data, 3, HYPER, tol=1e-7, seed=5)
    p, info = hpf.cavi(data, 3, HYPER, tol=1e-7, seed=5)
    assert info["iterations"] == i_ref["iterations"] > 20
    assert info["converged"] and i_ref["converged"]
    np.testing.assert_allclose(info["elbo"], i_ref["elbo"], rtol=1e-11)
    assert np.diff(info["elbo"]).min() >= -1e-9 * abs(info["elbo"][-1])  # never decreases
    for name in p_ref:
        np.testing.assert_allclose(p[name], p_ref[name], rtol=1e-9, err_msg=name)


def test_public_cavi_elbo_equals_the_original_formula():
    data = _counts(6)
    p, _ = hpf.cavi(data, 2, HYPER, max_iter=3, min_iter=0, seed=1)
    ElT = digamma(p["gs"]) - np.log(p["gr"])
    ElB = digamma(p["ls"]) - np.log(p["lr"])
    log_S = _ref_log_normalisers(data, ElT, ElB)[0]
    want = _ref_elbo(data, HYPER, p, log_S)
    assert hpf.cavi_elbo(data, HYPER, p) == pytest.approx(want, rel=1e-12)
    assert hpf.cavi_elbo(data, HYPER, p, log_S) == pytest.approx(want, rel=1e-12)
