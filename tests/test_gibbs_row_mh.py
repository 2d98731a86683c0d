"""The IWLS Metropolis-Hastings row step of the Gibbs sampler (``row_mh=True``): the step
alone leaves each row's exact conditional invariant and reaches it from far away
(quadrature, rows of 0 to 1,000 observations, with and without the bias column's prior
shift), the sampler runs with it (biases, global mean, several chains) and agrees with
the augmentation-only sampler, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import log_expit, log_ndtr

from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer.gibbs import fit_gibbs
from bayesmf.model.likelihoods import BernoulliLogit, BernoulliProbit
from bayesmf.model.spec import ModelSpec

DEGREES = (6, 200, 1000, 0)
P0, H0 = 0.8, 0.2  # the row prior N(H0 / P0, 1 / P0)


def _rows(name, seed=0, n_other=1200):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n_other)
    rows, cols = [], []
    for r, deg in enumerate(DEGREES):
        rows += [r] * deg
        cols += list(rng.choice(n_other, deg, replace=False))
    rows, cols = np.array(rows, np.int32), np.array(cols, np.int32)
    a_true = np.array([1.0, 3.0, 4.0, 0.0])
    noise = rng.normal(size=len(rows)) if name == "probit" else rng.logistic(size=len(rows))
    y = (a_true[rows] * x[cols] + noise > 0).astype(np.float32)
    return x, rows, cols, y


def _quadrature(name, x, rows, cols, y, r):
    g = np.linspace(-4.0, 9.0, 5201)
    m = rows == r
    s = (2.0 * y[m] - 1.0)[None, :] * g[:, None] * x[cols[m]][None, :]
    ll = (log_ndtr(s) if name == "probit" else log_expit(s)).sum(1)
    lp = ll - 0.5 * P0 * g * g + H0 * g
    p = np.exp(lp - lp.max())
    p /= p.sum()
    mean = (g * p).sum()
    return mean, np.sqrt(((g - mean) ** 2 * p).sum())


@pytest.mark.parametrize("name, newton_steps", [("probit", 2), ("logit", 2), ("probit", 1)])
def test_the_step_alone_draws_each_rows_exact_conditional(name, newton_steps):
    """2,000 independent chains of 30 steps of the row step only (no augmentation): each
    row's draws have the quadrature mean (4 standard errors) and sd (10%). With two
    Newton steps per proposal the chains start at 0, far from the posterior of the
    1,000-observation row (3.7 +- 0.24); with one (the sampler's default, where the
    augmentation sweeps bring the rows near their mode) at the quadrature means, so the
    test checks the invariance of the exact posterior."""
    import jax
    import jax.numpy as jnp

    from bayesmf.infer._rowblocks import build_row_blocks
    from bayesmf.infer.gibbs_kernel import _to_device
    from bayesmf.infer.gibbs_steps import iwls_mh_rows

    x, rows, cols, y = _rows(name)
    blocks = _to_device(build_row_blocks(rows, cols, len(DEGREES), n_other=len(x)))
    lik = BernoulliProbit() if name == "probit" else BernoulliLogit()
    f32 = jnp.float32
    args = (jnp.asarray(x[:, None], f32), jnp.zeros(len(DEGREES), f32))

    def step(key, F):
        _, F, moved = iwls_mh_rows(key, lik, {}, blocks, 1, False, args[0], args[1], F,
                                   jnp.asarray(y), jnp.zeros(len(rows), f32),
                                   jnp.asarray(rows), jnp.asarray(cols),
                                   jnp.full((1, 1), P0, f32), jnp.full((1,), H0, f32),
                                   newton_steps=newton_steps)
        return F, moved

    C = 2000
    quad = [_quadrature(name, x, rows, cols, y, r) for r in range(len(DEGREES))]
    start = np.zeros((C, len(DEGREES), 1), np.float32)
    if newton_steps == 1:
        start[:] = np.array([m for m, _ in quad], np.float32)[None, :, None]

    @jax.jit
    def run(keys, F0):
        def body(F, k):
            return jax.vmap(step)(jax.random.split(k, C), F)
        return jax.lax.scan(body, F0, keys)

    F, moved = run(jax.random.split(jax.random.PRNGKey(1), 30), jnp.asarray(start))
    F = np.asarray(F)[:, :, 0]
    assert np.asarray(moved).mean() / len(DEGREES) > 0.75
    for r in range(len(DEGREES)):
        m, sd = quad[r]
        assert abs(F[:, r].mean() - m) < 4 * sd / np.sqrt(C), (r, F[:, r].mean(), m, sd)
        assert F[:, r].std() == pytest.approx(sd, rel=0.1), r


@pytest.fixture(scope="module")
def clicks():
    rng = np.random.default_rng(2)
    N, M = 40, 60
    U, V = rng.normal(size=(N, 2)) * 1.5, rng.normal(size=(M, 2)) * 1.5
    eta = U @ V.T + 0.5
    u, i = np.nonzero(rng.random((N, M)) < 0.5)
    y = (eta[u, i] + rng.normal(size=len(u)) > 0).astype(float)
    return Ratings.from_arrays(u, i, y), eta


def test_the_sampler_with_the_row_step_agrees_with_the_augmentation_only_one(clicks):
    train, eta = clicks
    spec = ModelSpec(rank=2, likelihood="bernoulli-probit")
    kw = dict(seed=0, num_samples=300, num_warmup=150, num_chains=2)
    mh = fit_gibbs(train, spec, **kw)  # row_mh="auto": on for probit
    da = fit_gibbs(train, spec, thin=4, row_mh=False, **kw)  # the slow chain, thinned
    acc = mh.sample_stats["row_mh_accept"]
    assert acc.shape == (2, 300) and 0.5 < acc.mean() <= 1.0
    assert mh.attrs["settings"]["row_mh"] is True and "row_mh_accept" not in da.sample_stats
    for n in ("U", "V", "bu", "bi", "mu"):
        assert np.isfinite(mh.draws[n]).all(), n
    pu, pi = np.meshgrid(np.arange(train.n_users), np.arange(train.n_items), indexing="ij")
    p_mh = mh.predict(pu.ravel(), pi.ravel()).mean
    p_da = da.predict(pu.ravel(), pi.ravel()).mean
    assert np.corrcoef(p_mh, p_da)[0, 1] > 0.97
    assert np.mean(np.abs(p_mh - p_da)) < 0.03


def test_auto_follows_the_likelihood_and_where_the_step_runs(clicks):
    train, _ = clicks
    kw = dict(num_samples=3, num_warmup=2)
    on = fit_gibbs(train, ModelSpec(rank=2, likelihood="bernoulli-probit"), **kw)
    off = fit_gibbs(train, ModelSpec(rank=2, likelihood="ordinal"), **kw)
    woodbury = fit_gibbs(train, ModelSpec(rank=2, likelihood="bernoulli-probit"),
                         low_width=4, **kw)
    forced = fit_gibbs(train, ModelSpec(rank=2, likelihood="ordinal"), row_mh=True, **kw)
    assert [p.attrs["settings"]["row_mh"] for p in (on, off, woodbury, forced)] == [
        True, False, False, True]


def test_refusals(clicks):
    train, _ = clicks
    probit = ModelSpec(rank=2, likelihood="bernoulli-probit")
    with pytest.raises(SpecError, match="augmented likelihoods"):
        fit_gibbs(Ratings.from_arrays([0, 1], [0, 1], [3.0, 4.0]), ModelSpec(rank=1),
                  row_mh=True, num_samples=2)
    with pytest.raises(SpecError, match="low_width=0"):
        fit_gibbs(train, probit, row_mh=True, low_width=4, num_samples=2)
    with pytest.raises(SpecError, match="row_mh must be True or False"):
        fit_gibbs(train, probit, row_mh=1, num_samples=2)


def test_diagnose_points_a_flagged_augmented_fit_to_the_row_step(clicks):
    """A short chain is flagged (ESS below 100 per chain); ``diagnose`` adds the remedy
    to ``attrs["hint"]`` when the fit ran without the row step, not when it ran with it."""
    from bayesmf.diagnostics import diagnose

    train, _ = clicks
    kw = dict(num_samples=20, num_warmup=10, num_chains=2)
    spec = ModelSpec(rank=2, likelihood="bernoulli-probit")
    without = diagnose(fit_gibbs(train, spec, row_mh=False, **kw), n_probe=5)
    assert without["flag"].any() and "row_mh=True" in without.attrs["hint"]
    with_step = diagnose(fit_gibbs(train, spec, **kw), n_probe=5)
    assert with_step["flag"].any() and "hint" not in with_step.attrs
