"""Simulation-based calibration: the machinery on an exact posterior, negative controls,
and the samplers (Gibbs fast here; NUTS/SVI in benchmarks/sbc.py)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from bayesmf import sbc
from bayesmf.errors import SpecError
from bayesmf.model.spec import BayesPriors, ModelSpec
from bayesmf.posterior import Posterior, TrainInfo

#: proper priors (SBC cannot simulate from a flat prior on mu), moderately informative so
#: that short chains mix on the tiny model
PRIORS = BayesPriors(beta0=2.0, w0=1.0, nu0=4.0, bias_a=4.0, bias_b=2.0, noise_a=6.0,
                     noise_b=3.0, mu_mean=3.0, lambda_mu=1.0)


# ----------------------------------------------------------------------------- units
def test_observed_pattern_is_fixed_and_covers_everything():
    u, i = sbc.observed_pattern(8, 6, 0.3, seed=4)
    u2, i2 = sbc.observed_pattern(8, 6, 0.3, seed=4)
    assert np.array_equal(u, u2) and np.array_equal(i, i2)
    assert set(u.tolist()) == set(range(8)) and set(i.tolist()) == set(range(6))
    assert len(set(zip(u.tolist(), i.tolist()))) == len(u)
    with pytest.raises(SpecError, match="density"):
        sbc.observed_pattern(3, 3, 0.0)


def test_rank_of_counts_below_and_breaks_ties():
    rng = np.random.default_rng(0)
    assert sbc.rank_of(0.5, np.array([0.1, 0.2, 0.9]), rng) == 2
    assert sbc.rank_of(-1.0, np.array([0.1, 0.2]), rng) == 0
    ties = [sbc.rank_of(1.0, np.ones(4), rng) for _ in range(2000)]
    assert set(ties) == {0, 1, 2, 3, 4}  # a point mass gives uniform random ranks


def test_uniformity_tests_accept_uniform_and_reject_u_shape():
    rng = np.random.default_rng(1)
    L = 19
    t = sbc.uniformity_tests(rng.integers(0, L + 1, 200), L)
    assert min(t["chi2"], t["ks"], t["ecdf"]) > 0.01
    u_shaped = np.where(rng.random(200) < 0.5, rng.integers(0, 3, 200),
                        rng.integers(L - 2, L + 1, 200))
    t = sbc.uniformity_tests(u_shaped, L)
    assert max(t["chi2"], t["ks"], t["ecdf"]) < 1e-3
    with pytest.raises(SpecError, match="ranks must lie in 0..19"):
        sbc.uniformity_tests([0, 20], L)


def test_ecdf_envelope_has_its_nominal_simultaneous_level():
    n, L = 100, 19
    z, lo, hi, _ = sbc.ecdf_envelope(n, L, alpha=0.05, n_sim=2000, seed=0)
    rng = np.random.default_rng(7)
    r = rng.integers(0, L + 1, size=(2000, n))
    frac = (r[..., None] < np.arange(1, L + 1)).mean(axis=1)
    outside = ((frac < lo) | (frac > hi)).any(axis=1).mean()
    assert 0.02 < outside <= 0.07  # simultaneous, not pointwise (which would be ~0.5)
    assert np.all(lo <= z) and np.all(z <= hi)


def test_simulation_matches_the_prior_moments():
    """The simulator's draws have the prior's known moments (Gamma, Wishart, normal)."""
    spec = ModelSpec(rank=2, priors=PRIORS)
    rng = np.random.default_rng(3)
    u, i = sbc.observed_pattern(4, 3, 0.5, 0)
    draws = [sbc.simulate(spec, u, i, 4, 3, rng)[0] for _ in range(4000)]
    tau = np.array([d["tau"] for d in draws])
    lam = np.array([d["lambda_bu"] for d in draws])
    Lam = np.array([d["Lambda_U"] for d in draws])
    mu = np.array([d["mu"] for d in draws])
    def close(x, want, se):
        assert abs(x - want) < 4 * se, (x, want)
    close(tau.mean(), 6 / 3, np.sqrt(6) / 3 / np.sqrt(4000))
    close(lam.mean(), 4 / 2, 1 / np.sqrt(4000))
    close(mu.mean(), 3.0, 1 / np.sqrt(4000))
    # Wishart(w0 I, nu0): E = nu0 w0 I, Var(Lambda_jj) = 2 nu0 w0^2
    close(Lam[:, 0, 0].mean(), 4.0, np.sqrt(8 / 4000))
    close(Lam[:, 0, 1].mean(), 0.0, np.sqrt(4 / 4000))
    close(Lam[:, 1, 1].var(), 8.0, 8.0 * 0.1)
    diag = [sbc.simulate(spec, u, i, 4, 3, rng, "diag")[0]["Lambda_U"] for _ in range(2000)]
    assert np.all(np.array(diag)[:, 0, 1] == 0)


def test_simulation_requires_a_proper_mu_prior():
    with pytest.raises(SpecError, match="lambda_mu > 0"):
        sbc.simulate(ModelSpec(rank=1), [0], [0], 1, 1, np.random.default_rng(0))


# ----------------------------------------------------------------------------- exact case
def _exact_mean_only(ratings, spec, seed, S=40):
    """Exact conjugate posterior of the mean-only model (fixed noise):
    mu | y ~ N((l m + tau sum y) / (l + n tau), 1 / (l + n tau))."""
    pri, tau, y = spec.priors, spec.noise_precision, ratings.rating
    prec = pri.lambda_mu + tau * len(y)
    mean = (pri.lambda_mu * pri.mu_mean + tau * y.sum()) / prec
    mu = np.random.default_rng(seed).normal(mean, 1 / np.sqrt(prec), (1, S))
    N, M = ratings.n_users, ratings.n_items
    draws = {"mu": mu, "bu": np.zeros((1, S, N)), "bi": np.zeros((1, S, M)),
             "U": np.zeros((1, S, N, 0)), "V": np.zeros((1, S, M, 0)),
             "tau": np.full((1, S), tau)}
    return Posterior(draws, spec, ratings.users, ratings.items,
                     TrainInfo.from_ratings(ratings), "exact")


MEAN_ONLY = ModelSpec(rank=0, user_bias=False, item_bias=False, noise="fixed",
                      noise_precision=2.0, priors=PRIORS)


def test_sbc_passes_for_the_exact_posterior_and_fails_negative_controls():
    kw = dict(n_rep=150, n_users=4, n_items=3, L=19, seed=11)
    good = sbc.run_sbc(_exact_mean_only, MEAN_ONLY, **kw)
    names = sorted(good.ranks)
    assert names[-1] == "mu" and len(names) == 4 and all(n.startswith("m[") for n in names[:3])
    assert good.n_rep == 150 and good.passes(0.01), good.table()
    narrow = sbc.run_sbc(_exact_mean_only, MEAN_ONLY, transform=sbc.narrowed(0.5), **kw)
    assert not narrow.passes(0.01) and narrow.min_p < 1e-6, narrow.table()
    assert narrow.transform == "narrowed(0.5)"
    wide = sbc.run_sbc(_exact_mean_only, MEAN_ONLY, transform=sbc.narrowed(2.5), **kw)
    assert not wide.passes(0.01)
    # a biased posterior: shifted by one posterior sd
    def shifted(q):
        return {n: v + v.std() for n, v in q.items()}
    assert not sbc.run_sbc(_exact_mean_only, MEAN_ONLY, transform=shifted, **kw).passes(0.01)


def test_sbc_needs_enough_draws():
    with pytest.raises(SpecError, match="needs at least 19 posterior draws"):
        sbc.run_sbc(lambda r, s, sd: _exact_mean_only(r, s, sd, S=5), MEAN_ONLY, n_rep=1)


# ----------------------------------------------------------------------------- samplers
def _has(mod):
    try:
        return importlib.util.find_spec(mod) is not None
    except ImportError:
        return False


GIBBS_SPEC = ModelSpec(rank=1, priors=PRIORS)


@pytest.mark.skipif(not _has("bayesmf.infer.gibbs"), reason="Gibbs sampler not present")
def test_sbc_gibbs_fast():
    """Fixed-seed SBC of the Gibbs kernel on a tiny BPMF (8 users x 6 items, 50% observed,
    rank 1; 100 replications vmapped, 50 warm-up + 100 kept sweeps thinned to L = 19):
    the ranks of mu, tau, biases and pair means pass all uniformity tests at a
    Bonferroni-corrected alpha = 0.001; the same fits with draws narrowed to half their
    spread (negative control) fail. ``low_width=4``: every row with 1-4 ratings (most of
    them here) is drawn through the Woodbury identity (the Cholesky path is the one of the
    augmented likelihoods' SBC below)."""
    res = sbc.run_sbc(sbc.GibbsBatch(num_samples=100, num_warmup=50, low_width=4),
                      GIBBS_SPEC, n_rep=100, n_users=8, n_items=6, density=0.5, L=19, seed=3)
    assert len(res.ranks) == 9  # mu, tau, 2+2 biases, 3 pairs
    assert res.passes(0.001), "\n" + res.table().to_string() + "\n" + res.histograms()
    bad = res.transformed(sbc.narrowed(0.5))
    assert not bad.passes(0.001) and bad.min_p < 1e-8, bad.table().to_string()
    # too narrow -> U shape: too many extreme ranks
    r = np.concatenate(list(bad.ranks.values()))
    assert np.mean((r <= 1) | (r >= 18)) > 2 * 4 / 20


@pytest.mark.slow  # ~30 s of CPU: NumPyro compiles its Gamma samplers
@pytest.mark.parametrize("factor_prior", ["wishart", "diag"])
def test_simulation_is_the_numpyro_models_prior(factor_prior):
    """SBC simulates each method's OWN prior: the simulator and the NumPyro model's prior
    predictive agree in distribution (two-sample KS on every hyperparameter and a rating)."""
    pytest.importorskip("numpyro")
    import jax
    from numpyro.infer import Predictive

    from bayesmf.infer.numpyro_model import build_model

    spec = ModelSpec(rank=2, priors=PRIORS)
    u, i = sbc.observed_pattern(4, 3, 0.5, 0)
    n = 2000
    model = build_model(spec, 4, 3, offset=0.0, factor_prior=factor_prior)
    pp = Predictive(model, num_samples=n)(jax.random.PRNGKey(0), jax.numpy.asarray(u),
                                          jax.numpy.asarray(i))
    rng = np.random.default_rng(5)
    sims = [sbc.simulate(spec, u, i, 4, 3, rng, factor_prior) for _ in range(n)]
    ours = {
        "mu": [t["mu"] for t, _ in sims], "tau": [t["tau"] for t, _ in sims],
        "lambda_bi": [t["lambda_bi"] for t, _ in sims],
        "Lambda_U00": [t["Lambda_U"][0, 0] for t, _ in sims],
        "Lambda_V01": [t["Lambda_V"][0, 1] for t, _ in sims],
        "mu_U0": [t["mu_U"][0] for t, _ in sims], "U10": [t["U"][1, 0] for t, _ in sims],
        "bu2": [t["bu"][2] for t, _ in sims], "r0": [y[0] for _, y in sims],
    }
    theirs = {
        "mu": pp["mu"], "tau": pp["tau"], "lambda_bi": pp["lambda_bi"],
        "Lambda_U00": pp["Lambda_U"][:, 0, 0], "Lambda_V01": pp["Lambda_V"][:, 0, 1],
        "mu_U0": pp["mu_U"][:, 0], "U10": pp["U"][:, 1, 0], "bu2": pp["bu"][:, 2],
        "r0": pp["r"][:, 0],
    }
    from scipy import stats

    for name in ours:
        p = stats.ks_2samp(np.asarray(ours[name]), np.asarray(theirs[name])).pvalue
        assert p > 1e-4, (name, p)


@pytest.mark.slow  # one NUTS compilation for all replications: ~2-4 min on 2 cores
def test_sbc_nuts_batched():
    """SBC of NumPyro NUTS on the NumPyro model (fit_nuts's model and prior), vmapped over
    100 replications; the narrowed negative control fails."""
    pytest.importorskip("numpyro")
    nb = sbc.NutsBatch(num_samples=100, num_warmup=100)
    res = sbc.run_sbc(nb, GIBBS_SPEC, n_rep=100, n_users=8, n_items=6, density=0.5, L=19,
                      seed=3)
    assert res.passes(0.001), "\n" + res.table().to_string() + "\n" + res.histograms()
    assert not res.transformed(sbc.narrowed(0.5)).passes(0.001)


#: priors of the augmented-likelihood SBC: a proper mu prior around 0 (the latent scale)
#: and Wishart nu0 = 4 (rank 1) so that eta stays in the range real data produce
AUG_PRIORS = BayesPriors(beta0=2.0, w0=1.0, nu0=4.0, bias_a=4.0, bias_b=2.0, mu_mean=0.0,
                         lambda_mu=1.0)


@pytest.mark.skipif(not _has("bayesmf.infer.gibbs"), reason="Gibbs sampler not present")
@pytest.mark.parametrize("likelihood", ["ordinal", "bernoulli-probit", "bernoulli-logit"])
def test_sbc_gibbs_augmented_likelihoods_fast(likelihood):
    """Fixed-seed SBC of the Gibbs sampler for each augmented likelihood (Albert–Chib
    truncated normals, the ordinal cutpoint MH step, Pólya-Gamma, the latent scale move):
    8 users x 6 items, 60% observed, rank 1, 150 replications vmapped, 100 warm-up + 100
    kept sweeps thinned to L = 19. mu, biases, the free cutpoints and pair means pass at a
    Bonferroni-corrected alpha = 0.001 (the run with 400 replications is in
    benchmarks/results/sbc.md); draws narrowed to half their spread fail. The logit
    chains draw the rows of 1-4 observations through the Woodbury identity
    (``low_width=4``, Pólya-Gamma weights), the others by Cholesky."""
    from bayesmf.model.likelihoods import OrdinalProbit

    lik = OrdinalProbit(levels=(1.0, 2.0, 3.0, 4.0)) if likelihood == "ordinal" else likelihood
    spec = ModelSpec(rank=1, priors=AUG_PRIORS, likelihood=lik)
    low = 4 if likelihood == "bernoulli-logit" else 0
    res = sbc.run_sbc(sbc.GibbsBatch(num_samples=100, num_warmup=100, low_width=low), spec,
                      n_rep=150, n_users=8, n_items=6, density=0.6, L=19, seed=3)
    n_cut = 2 if likelihood == "ordinal" else 0
    assert len(res.ranks) == 8 + n_cut  # mu, 2+2 biases, 3 pairs (+ free cutpoints)
    assert res.passes(0.001), "\n" + res.table().to_string() + "\n" + res.histograms()
    bad = res.transformed(sbc.narrowed(0.5))
    assert not bad.passes(0.001), bad.table().to_string()


@pytest.mark.skipif(not _has("bayesmf.infer.gibbs"), reason="Gibbs sampler not present")
@pytest.mark.parametrize("likelihood", ["gaussian", "bernoulli-logit"])
def test_sbc_gibbs_row_block_fast(likelihood):
    """SBC of subspace Gibbs row draws (``row_block=1``: the bias and each factor
    coordinate of a row drawn one after another from their conditionals) at rank 2, the
    Gaussian model (residual sums from the final predictions) and the Polya-Gamma one.
    A wrong conditional shift (e.g. the block's own coordinates left in the cross term)
    pulls the rows off the posterior, which the ranks see."""
    spec = (ModelSpec(rank=2, priors=PRIORS) if likelihood == "gaussian"
            else ModelSpec(rank=2, priors=AUG_PRIORS, likelihood=likelihood))
    res = sbc.run_sbc(sbc.GibbsBatch(num_samples=100, num_warmup=100, row_block=1), spec,
                      n_rep=150, n_users=8, n_items=6, density=0.6, L=19, seed=5)
    assert res.passes(0.001), "\n" + res.table().to_string() + "\n" + res.histograms()
    assert not res.transformed(sbc.narrowed(0.5)).passes(0.001)


@pytest.mark.skipif(not _has("bayesmf.infer.gibbs"), reason="Gibbs sampler not present")
@pytest.mark.parametrize("likelihood", ["ordinal", "bernoulli-probit", "bernoulli-logit"])
def test_sbc_gibbs_row_mh_fast(likelihood):
    """SBC of the Gibbs sampler with the IWLS Metropolis-Hastings row step
    (``row_mh=True``: Gamerman's proposal, the augmentation integrated out) before each
    augmentation sweep; the setting of :func:`test_sbc_gibbs_augmented_likelihoods_fast`.
    A wrong acceptance ratio (e.g. a missing reverse-proposal term) shifts the rows and
    the pair means away from the posterior, which the ranks see."""
    from bayesmf.model.likelihoods import OrdinalProbit

    lik = OrdinalProbit(levels=(1.0, 2.0, 3.0, 4.0)) if likelihood == "ordinal" else likelihood
    spec = ModelSpec(rank=1, priors=AUG_PRIORS, likelihood=lik)
    res = sbc.run_sbc(sbc.GibbsBatch(num_samples=100, num_warmup=100, low_width=0,
                                     row_mh=True), spec,
                      n_rep=150, n_users=8, n_items=6, density=0.6, L=19, seed=4)
    assert res.passes(0.001), "\n" + res.table().to_string() + "\n" + res.histograms()
    assert not res.transformed(sbc.narrowed(0.5)).passes(0.001)
