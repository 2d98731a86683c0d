r"""Simulation-based calibration (Talts et al. 2018) of the Macau Gibbs step: the BPMF
Gibbs sweep with side features in the factor priors (module docs of
:mod:`bayesmf.infer.gibbs`; machinery in :mod:`bayesmf.testing.sbc_macau`).

Model simulated per replication (the kernel's own prior, ``PRIORS`` below for the
Normal–Wishart and the rest, ``lambda_beta_prior = (1, 1)`` the kernel default):

.. math::

    \Lambda_U &\sim \mathcal W(w_0 I, \nu_0),\ \ \mu_U\mid\Lambda_U \sim
        \mathcal N(0, (\beta_0\Lambda_U)^{-1}),\ \
    \lambda_{\beta,U} \sim \mathrm{Gamma}(a_0, b_0),\ \
    \beta_{U,f} \sim \mathcal N(0, (\lambda_{\beta,U}\Lambda_U)^{-1}), \\
    U_u &\sim \mathcal N(\mu_U + \beta_U^\top x_u, \Lambda_U^{-1})\quad
    (\text{items alike}),\qquad
    r_{ui} \sim \mathcal N(\mu + b_u + b_i + U_u^\top V_i, \tau^{-1}),

on a fixed 10 x 8 pattern (50% observed) with fixed standard-normal features (3 per
user, 2 per item), rank 2. The ranked quantities are invariant under the rotations
:math:`(UQ, VQ, \beta Q, Q^\top\Lambda Q)` that leave prior and likelihood unchanged:
:math:`\mu, \tau`, one bias per side, two pair means, and per side
:math:`\lambda_\beta`, :math:`\operatorname{tr}(\beta\Lambda\beta^\top)`,
:math:`\lVert\beta\rVert_F^2`, :math:`\lVert\beta^\top x_0\rVert^2`,
:math:`\log\det\Lambda`, plus the feature-only pair means
:math:`(\mu_U + \beta_U^\top x_u)^\top(\mu_V + \beta_V^\top x_i)`.

Negative controls: the draws narrowed to half their spread, and a simulator whose
:math:`\lambda_\beta` prior differs from the sampler's (``Gamma(3, 1)`` vs the sampler's
``Gamma(1, 1)``); the slow tests add the reverse (the sampler given the wrong prior) and
two injected bugs of the kind a wrong conditional makes (the coupled-prior term
:math:`\lambda_\beta\beta^\top\beta` left out of :math:`W_N^{-1}`;
:math:`\operatorname{tr}(\beta\beta^\top)` in place of
:math:`\operatorname{tr}(\beta\Lambda\beta^\top)` in the :math:`\lambda_\beta` draw).

Mixing note (probit): with the Macau prior at rank 2, 200 kept sweeps are too
autocorrelated for the probit likelihood -- 300 replications with 100 (or 500) warm-up
+ 200 sweeps give U-shaped ranks of the pair means (chi-square p ~ 2e-16; 2e-7 with 500
warm-up; rank sd up to 0.36 of L vs 0.30 uniform) -- while 100 warm-up + 1000 sweeps
thinned by 5 pass (min p 0.008 over 51 tests), as does rank 1 with the short chain; the
plain probit sampler (no features) passes the short chain at rank 2. The slow probit
case therefore thins by 5; it is mixing (the L kept draws are not near-independent), not
a wrong conditional.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bayesmf import sbc
from bayesmf.errors import SpecError
from bayesmf.model.spec import BayesPriors, ModelSpec
from bayesmf.testing import sbc_macau as sm

#: the Normal-Wishart / bias / noise / mean priors of tests/test_sbc.py (proper mu prior)
PRIORS = BayesPriors(beta0=2.0, w0=1.0, nu0=4.0, bias_a=4.0, bias_b=2.0, noise_a=6.0,
                     noise_b=3.0, mu_mean=3.0, lambda_mu=1.0)
SPEC = ModelSpec(rank=2, priors=PRIORS)
#: one compiled sampler serves every run of the fast test (same pattern, features, shapes)
FAST = dict(n_rep=300, n_users=10, n_items=8, n_user_features=3, n_item_features=2,
            density=0.5, L=19, seed=3)


def _quadform(R, Lam):
    """sum_r R_r^T Lam R_r."""
    return float(np.einsum("rk,kl,rl->", R, Lam, R))


# ----------------------------------------------------------------------------- simulator
def test_simulator_draws_the_macau_prior():
    """Closed-form laws of the simulated Macau prior (4000 draws, KS tests):
    lambda_beta ~ Gamma(a0, rate b0); lambda_beta tr(beta Lambda beta^T) ~ chi2(F k);
    the residual rows U_u - mu_U - beta^T x_u whitened by Lambda_U: sum ~ chi2(N k);
    the featureless side's rows around mu_V: chi2(M k); tau (y - m)^2 ~ chi2(1)."""
    N, M, F, k = 5, 4, 3, 2
    rng = np.random.default_rng(0)
    X = rng.standard_normal((N, F))
    u, i = sbc.observed_pattern(N, M, 0.5, 0)
    lb, q_beta, q_u, q_v, q_y = [], [], [], [], []
    for _ in range(4000):
        t, y = sm.simulate_macau(SPEC, u, i, N, M, {"user": X}, rng, (2.0, 4.0))
        Lu, Lv = t["Lambda_U"], t["Lambda_V"]
        lb.append(t["lambda_beta_U"])
        q_beta.append(t["lambda_beta_U"] * np.trace(t["beta_U"] @ Lu @ t["beta_U"].T))
        q_u.append(_quadform(t["U"] - t["mu_U"] - X @ t["beta_U"], Lu))
        q_v.append(_quadform(t["V"] - t["mu_V"], Lv))
        m = t["mu"] + t["bu"][u] + t["bi"][i] + np.sum(t["U"][u] * t["V"][i], 1)
        q_y.append(t["tau"] * (y[0] - m[0]) ** 2)
        assert t["beta_U"].shape == (F, k) and "beta_V" not in t
    assert stats.kstest(lb, "gamma", args=(2.0, 0, 1 / 4.0)).pvalue > 1e-3
    assert stats.kstest(q_beta, "chi2", args=(F * k,)).pvalue > 1e-3
    assert stats.kstest(q_u, "chi2", args=(N * k,)).pvalue > 1e-3
    assert stats.kstest(q_v, "chi2", args=(M * k,)).pvalue > 1e-3
    assert stats.kstest(q_y, "chi2", args=(1,)).pvalue > 1e-3
    # and the tests can fail: the wrong degrees of freedom are rejected
    assert stats.kstest(q_beta, "chi2", args=(F * k + 1,)).pvalue < 1e-6
    assert stats.kstest(q_u, "chi2", args=(N * k - 1,)).pvalue < 1e-6


def test_macau_quantities_are_rotation_invariant():
    """Every ranked quantity is unchanged by (U Q, V Q, mu Q, beta Q, Q^T Lambda Q) with Q
    orthogonal; tr(beta Lambda beta^T), the pair means and the feature-only pair means are
    unchanged even by (U A, V A^{-T}, beta_U A, beta_V A^{-T}, A^{-1} Lambda_U A^{-T}, ...)
    with A invertible; and they match hand computations."""
    N, M, k = 4, 3, 2
    rng = np.random.default_rng(1)
    feats = {"user": rng.standard_normal((N, 3)), "item": rng.standard_normal((M, 2))}
    u, i = sbc.observed_pattern(N, M, 0.6, 0)
    t, _ = sm.simulate_macau(SPEC, u, i, N, M, feats, rng)
    pairs = [(0, 0), (2, 1)]
    q = sm.macau_quantities(t, SPEC, pairs, 1, feats)
    assert q["tr_bLb_U"] == pytest.approx(np.trace(t["beta_U"] @ t["Lambda_U"]
                                                   @ t["beta_U"].T))
    pu = t["mu_U"] + feats["user"][2] @ t["beta_U"]
    pv = t["mu_V"] + feats["item"][1] @ t["beta_V"]
    assert q["c[2,1]"] == pytest.approx(pu @ pv)
    assert q["|xb[0]|2_V"] == pytest.approx(np.sum((feats["item"][0] @ t["beta_V"]) ** 2))
    assert q["logdet_U"] == pytest.approx(np.log(np.linalg.det(t["Lambda_U"])))

    def moved(A):
        Ai = np.linalg.inv(A)
        s = dict(t)
        s["U"], s["mu_U"], s["beta_U"] = t["U"] @ A, t["mu_U"] @ A, t["beta_U"] @ A
        s["V"], s["mu_V"], s["beta_V"] = t["V"] @ Ai.T, t["mu_V"] @ Ai.T, t["beta_V"] @ Ai.T
        s["Lambda_U"] = Ai @ t["Lambda_U"] @ Ai.T
        s["Lambda_V"] = A.T @ t["Lambda_V"] @ A
        return sm.macau_quantities(s, SPEC, pairs, 1, feats)

    Q, _ = np.linalg.qr(rng.standard_normal((k, k)))
    qr = moved(Q)
    assert set(qr) == set(q)
    for n in q:
        assert qr[n] == pytest.approx(q[n], rel=1e-9, abs=1e-12), n
    qa = moved(np.array([[2.0, 0.3], [-0.1, 0.5]]))
    for n in ("tr_bLb_U", "tr_bLb_V", "lambda_beta_U", "m[0,0]", "c[0,0]", "c[2,1]"):
        assert qa[n] == pytest.approx(q[n], rel=1e-9), n
    assert qa["|beta|2_U"] != pytest.approx(q["|beta|2_U"])  # not invariant under A


def test_run_sbc_macau_rejects_bad_settings():
    with pytest.raises(SpecError, match="features on at least one side"):
        sm.run_sbc_macau(SPEC, n_user_features=0, n_item_features=0)
    with pytest.raises(SpecError, match="lambda_beta_prior must be positive"):
        sm.MacauGibbsBatch(lambda_beta_prior=(1.0, 0.0))
    with pytest.raises(SpecError, match="shape, rate"):
        sm.simulate_macau(SPEC, [0], [0], 1, 1, {}, np.random.default_rng(0), "x")
    with pytest.raises(SpecError, match="rank >= 1"):
        sm.simulate_macau(ModelSpec(rank=0, priors=PRIORS), [0], [0], 1, 1, {},
                          np.random.default_rng(0))


# ----------------------------------------------------------------------------- SBC
@pytest.fixture(scope="module")
def fast_sampler():
    """Gibbs with features, 100 warm-up + 200 kept sweeps, the kernel's default
    lambda_beta prior Gamma(1, 1); compiled once for the module."""
    return sm.MacauGibbsBatch(num_samples=200, num_warmup=100)


def test_sbc_macau_gibbs_fast(fast_sampler):
    """300 replications vmapped, ranks among L = 19 thinned draws: all 18 quantities pass
    the chi-square, KS and ECDF tests at a Bonferroni-corrected alpha = 0.001. Negative
    controls (no refit for the first, the same compiled sampler for the second): draws
    narrowed to half their spread fail; data simulated with lambda_beta ~ Gamma(3, 1)
    (prior mean 3) fitted with the sampler's Gamma(1, 1) fail, lambda_beta ranked too
    high and tr(beta Lambda beta^T) too low, while mu and the pair means stay
    calibrated."""
    res = sm.run_sbc_macau(SPEC, method=fast_sampler, **FAST)
    assert len(res.ranks) == 18
    assert res.settings["lambda_beta_prior_fit"] == (1.0, 1.0)
    assert res.passes(0.001), "\n" + res.table().to_string() + "\n" + res.histograms()
    bad = res.transformed(sbc.narrowed(0.5))
    assert not bad.passes(0.001) and bad.min_p < 1e-8, bad.table().to_string()

    wrong = sm.run_sbc_macau(SPEC, method=fast_sampler, lambda_beta_prior=(3.0, 1.0),
                             **FAST)
    assert wrong.settings["timings"]["compile_s"] == 0.0  # the compiled sampler reused
    assert not wrong.passes(0.001), wrong.table().to_string()
    tab = wrong.table().set_index("quantity")
    for S in ("U", "V"):
        assert tab.loc[f"lambda_beta_{S}", "p_chi2"] < 1e-10, tab.to_string()
        assert tab.loc[f"lambda_beta_{S}", "mean_rank"] > 0.7, tab.to_string()
        assert tab.loc[f"tr_bLb_{S}", "mean_rank"] < 0.4, tab.to_string()
    for n in ("mu", "m[0,0]"):
        assert tab.loc[n, ["p_chi2", "p_ks", "p_ecdf"]].min() > 1e-3, tab.to_string()


# ----------------------------------------------------------------------------- slow
SLOW = dict(n_rep=1000, n_users=10, n_items=8, n_user_features=3, n_item_features=2,
            density=0.5, L=39)
AUG_PRIORS = BayesPriors(beta0=2.0, w0=1.0, nu0=4.0, bias_a=4.0, bias_b=2.0, mu_mean=0.0,
                         lambda_mu=1.0)


@pytest.mark.slow  # ~40 s per case on 2 cores (one compilation each), probit ~100 s
@pytest.mark.parametrize("case", ["normal-wishart", "user-only", "cg", "normal-gamma",
                                  "probit"])
def test_sbc_macau_gibbs_large(case):
    """1000 replications, 100 warm-up + 400 sweeps thinned by 2, L = 39, per variant of
    the Macau step: both sides (Cholesky solver), features on the users only (the item
    side takes the plain hyper step), the CG solver with the noise trick, the
    Normal-Gamma factor prior (the diagonal of lambda_beta beta^T beta in the rates), and
    the probit likelihood (the latent scale move carries beta; 500 replications, 500
    warm-up + 1000 sweeps thinned by 5). All pass at a Bonferroni-corrected
    alpha = 0.001."""
    spec, kw, sampler = SPEC, dict(SLOW, seed=11), dict(num_samples=200, num_warmup=100,
                                                        thin=2)
    if case == "user-only":
        kw["n_item_features"] = 0
    elif case == "cg":
        sampler["beta_solver"] = "cg"
    elif case == "normal-gamma":
        spec = ModelSpec(rank=2, priors=PRIORS, prior="normal-gamma")
    elif case == "probit":  # slower mixing: 500 warm-up, thin 5 (module docs)
        spec = ModelSpec(rank=2, priors=AUG_PRIORS, likelihood="bernoulli-probit")
        kw.update(density=0.6, n_rep=500)
        sampler.update(num_warmup=500, thin=5)
    res = sm.run_sbc_macau(spec, method=sm.MacauGibbsBatch(**sampler), **kw)
    assert res.passes(0.001), "\n" + res.table().to_string() + "\n" + res.histograms()


def _drop_extra(orig):
    def hyper_step(self, key, F, beta0, nu0, w0, g, extra=None):
        return orig(self, key, F, beta0, nu0, w0, g)  # lambda_beta beta^T beta left out
    return hyper_step


def _lambda_without_Lambda(orig):
    import jax.numpy as jnp

    def draw(g, b0, beta, Lam):
        return orig(g, b0, beta, jnp.eye(Lam.shape[0], dtype=Lam.dtype))
    return draw


@pytest.mark.slow  # ~40 s per case on 2 cores
@pytest.mark.parametrize("control", ["sampler-prior", "no-coupling-term", "lambda-no-Lambda"])
def test_sbc_macau_negative_controls_large(control, monkeypatch):
    """The SBC detects real sampler errors, not only narrowed draws: the sampler given a
    wrong lambda_beta prior (Gamma(1, 0.2), the simulator Gamma(1, 1)), and two injected
    bugs -- the hyper step without the coupled prior's term in W_N^{-1}, and the
    lambda_beta draw with tr(beta beta^T) for tr(beta Lambda beta^T) -- all fail."""
    from bayesmf.infer import gibbs_kernel
    from bayesmf.model.priors import NormalWishart

    lbp = (1.0, 1.0)
    if control == "sampler-prior":
        lbp = (1.0, 0.2)
    elif control == "no-coupling-term":
        monkeypatch.setattr(NormalWishart, "hyper_step", _drop_extra(NormalWishart.hyper_step))
    else:
        monkeypatch.setattr(gibbs_kernel, "macau_lambda_draw",
                            _lambda_without_Lambda(gibbs_kernel.macau_lambda_draw))
    res = sm.run_sbc_macau(SPEC, method=sm.MacauGibbsBatch(200, 100, 2, lambda_beta_prior=lbp),
                           **dict(SLOW, n_rep=500, seed=12))
    assert not res.passes(0.001), res.table().to_string()
    assert res.min_p < 1e-6, res.table().to_string()
