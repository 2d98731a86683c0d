r"""Simulation-based calibration (Talts et al. 2018; machinery in
:mod:`bayesmf.testing.sbc`) of the HPF Gibbs sweep (:func:`bayesmf.infer.hpf._sweep`,
the kernel :func:`~bayesmf.infer.hpf.fit_gibbs_hpf` runs).

Each replication draws :math:`\xi_u\sim\mathrm{Gamma}(a', a'/b')`,
:math:`\theta_{uk}\sim\mathrm{Gamma}(a, \xi_u)`, :math:`\eta_i\sim\mathrm{Gamma}(c',
c'/d')`, :math:`\beta_{ik}\sim\mathrm{Gamma}(c, \eta_i)` and the full ``8 x 6`` count
matrix :math:`y_{ui}\sim\mathrm{Poisson}(\theta_u^\top\beta_i)`, then runs one chain of
the sweep from the fitter's initial state. The ranks of the truth among ``L = 19``
thinned draws are tested for uniformity for quantities that do not depend on the
(arbitrary) labelling of the factors: the total rate
:math:`(\sum_u\theta_u)^\top(\sum_i\beta_i)` (the expected total count), the summed
activities :math:`\sum_u\xi_u` and :math:`\sum_i\eta_i`, one user's and one item's
activity, one user's total :math:`\sum_k\theta_{uk}`, and the rates of two fixed pairs.

All replications run in one ``jit(vmap(...))``: the data of every replication has the
same shapes. The counts equal to 1 (the sweep's inverse-CDF split) are padded with
**out-of-range** indices ``(N, M)``: their gathers are clamped and their scatter-adds
dropped by JAX, so they add no counts (checked exactly at rank 1, where the split is
deterministic, by :func:`test_padding_is_inert`); every other pair of the matrix,
zeros included, goes to the binomial split (a zero splits into zeros) padded with
zero counts.

Negative controls: the same fits with draws narrowed to half their spread, and a sampler
whose conditionals use a wrong prior shape (``a = c = 2`` in the Gamma shapes of
:math:`\theta, \beta` while the data come from ``a = c = 1``) -- the kind of error a
wrong conditional makes -- both fail.

**With the non-negative biases** (:func:`test_sbc_hpf_gibbs_with_biases`) the data are
:math:`y_{ui}\sim\mathrm{Poisson}(\theta_u^\top\beta_i + b_u + b_i)`,
:math:`b_u, b_i\sim\mathrm{Gamma}(e, f)`; the rates of the probe pairs include the
biases, and :math:`\sum_u b_u` and one item's :math:`b_i` are tested too. Its negative
control fits with a wrong bias prior rate.
"""

from __future__ import annotations

import time

import numpy as np

from bayesmf import sbc
from bayesmf.model.spec import ModelSpec

N, M, K = 8, 6, 2
#: (a, a', b', c, c', d'): proper and moderately informative, mean rate ~ 1 per pair
HYPER = (1.0, 3.0, 2.0, 1.0, 3.0, 2.0)
N_REP, L = 120, 19
W, S, T = 100, 100, 2
PAIRS = ((0, 0), (3, 4))
#: (e, f) of the bias prior Gamma(e, f): mean 0.25 per bias
BIAS = (2.0, 8.0)


def _simulate(rng, hyper, biases=False):
    a, ap, bp, c, cp, dp = hyper
    xi = rng.gamma(ap, bp / ap, N)
    eta = rng.gamma(cp, dp / cp, M)
    th = rng.gamma(a, 1.0 / xi[:, None], (N, K))
    be = rng.gamma(c, 1.0 / eta[:, None], (M, K))
    p = {"theta": th, "beta": be, "xi": xi, "eta": eta}
    rate = th @ be.T
    if biases:
        p["bu"] = rng.gamma(BIAS[0], 1.0 / BIAS[1], N)
        p["bi"] = rng.gamma(BIAS[0], 1.0 / BIAS[1], M)
        rate = rate + p["bu"][:, None] + p["bi"][None, :]
    return p, rng.poisson(rate).astype(np.float64)


def _padded(Y):
    """``(R, N, M)`` counts -> the padded ``HPFData`` arrays ``(R, N*M)`` each (module
    docs)."""
    R = Y.shape[0]
    P = N * M
    uu, ii = np.divmod(np.arange(P), M)
    out = {n: np.zeros((R, P), np.int32) for n in ("u1", "i1", "u2", "i2")}
    out["u1"][:], out["i1"][:] = N, M  # out of range: inert
    y2 = np.zeros((R, P), np.float32)
    for r in range(R):
        y = Y[r].ravel()
        one = y == 1
        n1 = int(one.sum())
        out["u1"][r, :n1], out["i1"][r, :n1] = uu[one], ii[one]
        n2 = P - n1
        out["u2"][r, :n2], out["i2"][r, :n2] = uu[~one], ii[~one]
        y2[r, :n2] = y[~one]  # the rest stays pair (0, 0) with count 0
    out["y2"] = y2
    return out


def _run_gibbs(Y, seeds, hyper, k=K, n_keep=S, warmup=W, thin=T, bias=None):
    """One chain of the HPF sweep per replication, vmapped; returns the kept draws
    ``theta (R, S, N, k)``, ``beta``, ``xi (R, S, N)``, ``eta`` and, with ``bias = (e,
    f)`` (user and item biases on), ``bu``, ``bi``."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from bayesmf.infer.hpf import HPFData, HPFState, _Cfg, _sweep

    on = bias is not None
    cfg = _Cfg(N, M, k, tuple(float(h) for h in hyper), 0.0, on, on,
               tuple(bias) if on else (0.3, 0.3))
    bp, dp = hyper[2], hyper[5]
    pad = _padded(Y)
    # the fitter's initial scale sqrt(mean count / k)
    scale = np.sqrt(np.maximum(Y.sum(axis=(1, 2)), 1e-30) / (N * M * k)).astype(np.float32)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))
    n_iter = warmup + n_keep * thin

    def one(key, u1, i1, u2, i2, y2, s):
        data = HPFData(u1, i1, u2, i2, y2)
        k1, k2, k3, k4 = jax.random.split(jax.random.fold_in(key, 2**31 - 1), 4)
        b0 = s * s * float(on)  # the fitter's start of the biases
        st = HPFState(s * jax.random.uniform(k1, (N, k), jnp.float32, 0.5, 1.5),
                      s * jax.random.uniform(k2, (M, k), jnp.float32, 0.5, 1.5),
                      jnp.full((N,), bp, jnp.float32), jnp.full((M,), dp, jnp.float32),
                      b0 * jax.random.uniform(k3, (N,), jnp.float32, 0.5, 1.5),
                      b0 * jax.random.uniform(k4, (M,), jnp.float32, 0.5, 1.5))

        def body(st, t):
            st, _ = _sweep(cfg, data, jax.random.fold_in(key, t), st)
            return st, tuple(st)

        _, out = lax.scan(body, st, jnp.arange(n_iter, dtype=jnp.uint32))
        return tuple(o[warmup::thin][:n_keep] for o in out)

    args = [jnp.asarray(pad[n]) for n in ("u1", "i1", "u2", "i2", "y2")]
    out = jax.jit(jax.vmap(one))(keys, *args, jnp.asarray(scale))
    names = ("theta", "beta", "xi", "eta") + (("bu", "bi") if on else ())
    return dict(zip(names, (np.asarray(o, np.float64) for o in out)))


def _quantities(p):
    """Labelling-invariant scalars of a parameter set (leading draw axes allowed)."""
    th, be = p["theta"], p["beta"]
    q = {"total_rate": np.sum(th.sum(-2) * be.sum(-2), axis=-1),
         "sum_xi": p["xi"].sum(-1), "sum_eta": p["eta"].sum(-1),
         "xi[0]": p["xi"][..., 0], "eta[1]": p["eta"][..., 1],
         "theta_total[2]": th[..., 2, :].sum(-1)}
    for u, i in PAIRS:
        q[f"rate[{u},{i}]"] = np.sum(th[..., u, :] * be[..., i, :], axis=-1)
    if "bu" in p:
        bu, bi = p["bu"], p["bi"]
        q["sum_bu"], q["bi[1]"] = bu.sum(-1), bi[..., 1]
        for u, i in PAIRS:
            q[f"rate[{u},{i}]"] = q[f"rate[{u},{i}]"] + bu[..., u] + bi[..., i]
    return q


def _sbc(hyper_fit, seed=5, bias_fit=None):
    biases = bias_fit is not None
    rng = np.random.default_rng(seed)
    sims = [_simulate(rng, HYPER, biases) for _ in range(N_REP)]
    Y = np.stack([y for _, y in sims])
    seeds = rng.integers(0, 2**31 - 1, N_REP)
    t0 = time.perf_counter()
    draws = _run_gibbs(Y, seeds, hyper_fit, bias=bias_fit)
    if not biases:
        draws = {n: v for n, v in draws.items() if n not in ("bu", "bi")}
    pick = np.round(np.linspace(0, S - 1, L)).astype(int)
    ranks, kept, truths = {}, {}, {}
    for r in range(N_REP):
        qd = _quantities({n: v[r][pick] for n, v in draws.items()})
        qt = _quantities(sims[r][0])
        for n, v in qd.items():
            ranks.setdefault(n, []).append(sbc.rank_of(float(qt[n]), v, rng))
            kept.setdefault(n, []).append(v)
            truths.setdefault(n, []).append(float(qt[n]))
    spec = ModelSpec(rank=K, likelihood="poisson", global_mean=False, user_bias=biases,
                     item_bias=biases)
    return sbc.SBCResult("hpf-gibbs", L, {n: np.asarray(v) for n, v in ranks.items()},
                         spec, {"n_rep": N_REP, "hyper_fit": hyper_fit, "bias_fit": bias_fit,
                                "hyper_sim": HYPER, "mean_count": float(Y.mean())},
                         time.perf_counter() - t0,
                         draws={n: np.asarray(v) for n, v in kept.items()},
                         truths={n: np.asarray(v) for n, v in truths.items()})


def test_padding_is_inert():
    """At rank 1 the split is deterministic, so one sweep from the same state and key
    gives the same state with padded and with unpadded data (the fitter's layout)."""
    import jax
    import jax.numpy as jnp

    from bayesmf.infer.hpf import HPFData, HPFState, _Cfg, _sweep

    rng = np.random.default_rng(0)
    Y = rng.poisson(0.9, (1, N, M)).astype(np.float64)
    Y[0, 0, :3] = [1.0, 3.0, 0.0]
    cfg = _Cfg(N, M, 1, HYPER, 0.0)
    st = HPFState(jnp.asarray(rng.uniform(0.5, 1.5, (N, 1)), jnp.float32),
                  jnp.asarray(rng.uniform(0.5, 1.5, (M, 1)), jnp.float32),
                  jnp.full((N,), 2.0, jnp.float32), jnp.full((M,), 2.0, jnp.float32),
                  jnp.zeros((N,), jnp.float32), jnp.zeros((M,), jnp.float32))
    pad = _padded(Y)
    padded = HPFData(*(jnp.asarray(pad[n][0]) for n in ("u1", "i1", "u2", "i2", "y2")))
    u, i = np.nonzero(Y[0])
    y = Y[0][u, i]
    one = y == 1
    i32 = lambda x: jnp.asarray(x, jnp.int32)  # noqa: E731
    plain = HPFData(i32(u[one]), i32(i[one]), i32(u[~one]), i32(i[~one]),
                    jnp.asarray(y[~one], jnp.float32))
    key = jax.random.PRNGKey(3)
    a, _ = _sweep(cfg, padded, key, st)
    b, _ = _sweep(cfg, plain, key, st)
    for x, z in zip(a, b):
        np.testing.assert_allclose(np.asarray(x), np.asarray(z), rtol=1e-6)
    # and the padding did reach the sweep: more pairs than the non-zeros
    assert padded.u1.shape[0] == N * M > len(u)


def test_sbc_hpf_gibbs():
    """120 replications, 100 warm-up + 200 sweeps thinned to 100 kept, L = 19: every
    quantity passes the chi-square, KS and ECDF tests at a Bonferroni-corrected
    alpha = 0.001; narrowed draws and a sampler with a wrong conditional fail."""
    res = _sbc(HYPER)
    assert len(res.ranks) == 8
    assert 0.3 < res.settings["mean_count"] < 3.0  # counts of 0, 1 and more all occur
    assert res.passes(0.001), "\n" + res.table().to_string() + "\n" + res.histograms()
    bad = res.transformed(sbc.narrowed(0.5))
    assert not bad.passes(0.001) and bad.min_p < 1e-8, bad.table().to_string()
    wrong = _sbc((2.0,) + HYPER[1:3] + (2.0,) + HYPER[4:])
    assert not wrong.passes(0.001), "\n" + wrong.table().to_string()
    assert wrong.min_p < 1e-6, wrong.table().to_string()


def test_sbc_hpf_gibbs_with_biases():
    """The sweep with the user and item biases on (module docs): 10 quantities pass; draws
    narrowed to half their spread and a fit with the wrong bias prior (rate f = 1 instead
    of 8: biases pulled up) fail."""
    res = _sbc(HYPER, seed=7, bias_fit=BIAS)
    assert len(res.ranks) == 10
    assert res.passes(0.001), "\n" + res.table().to_string() + "\n" + res.histograms()
    bad = res.transformed(sbc.narrowed(0.5))
    assert not bad.passes(0.001) and bad.min_p < 1e-8, bad.table().to_string()
    wrong = _sbc(HYPER, seed=7, bias_fit=(BIAS[0], 1.0))
    assert not wrong.passes(0.001), "\n" + wrong.table().to_string()
