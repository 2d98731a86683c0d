"""Minibatch SVI (``fit_svi(..., batch_size=B)``, bayesmf.infer.numpyro_model, **Minibatches**).

* The minibatch log-likelihood is an unbiased estimate of the full one: at fixed parameters
  the average over many random keys of the scaled batch term equals the full-data term
  within Monte Carlo error (indices uniform with replacement, scale ``nnz / B``), and the
  prior terms are untouched.
* A minibatch fit on planted data predicts held-out pairs about as well as the full-batch
  fit of the same model does (its figure measured once, in the test's docstring).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer.numpyro_model import build_model, model_data
from bayesmf.infer.svi import fit_svi
from bayesmf.model.spec import ModelSpec

SPEC = ModelSpec(rank=2)


def _planted(seed=0, n_users=60, n_items=40, k=2, density=0.5):
    rng = np.random.default_rng(seed)
    U, V = rng.normal(0, 0.8, (n_users, k)), rng.normal(0, 0.8, (n_items, k))
    bu, bi = rng.normal(0, 0.4, n_users), rng.normal(0, 0.4, n_items)
    u, i = np.nonzero(rng.random((n_users, n_items)) < density)
    truth = 3.0 + bu[u] + bi[i] + np.sum(U[u] * V[i], 1)
    r = truth + rng.normal(0, 0.3, len(u))
    test = rng.random(len(u)) < 0.15
    train = Ratings.from_arrays(u[~test], i[~test], r[~test])
    return train, (u[test], i[test], truth[test])


@pytest.fixture(scope="module")
def planted():
    return _planted()


def _log_terms(train, batch_size, keys, params):
    """Per key: (log joint, its observed-likelihood term) of the model at ``params``
    (``numpyro.infer.util.log_density``, scales applied), vectorised over ``keys``."""
    from numpyro import handlers
    from numpyro.infer.util import log_density

    data = model_data(train, SPEC)
    model = build_model(data.spec, data.n_users, data.n_items, offset=data.offset,
                        y_offset=data.y_offset, batch_size=batch_size)
    args = tuple(np.asarray(a) for a in data.args)

    def one(key):
        joint, tr = log_density(handlers.seed(model, key), args, {}, params)
        lik = sum(jax.numpy.sum(s["fn"].log_prob(s["value"])) * (s.get("scale") or 1.0)
                  for s in tr.values() if s["type"] == "sample" and s["is_observed"])
        return joint, lik

    joint, lik = jax.jit(jax.vmap(one))(keys)
    return np.stack([np.asarray(joint, np.float64), np.asarray(lik, np.float64)], axis=1)


def test_minibatch_likelihood_is_unbiased_and_prior_untouched(planted):
    train, _ = planted
    nnz = train.nnz
    # one parameter point: a full-data trace drawn from the prior
    from numpyro import handlers

    data = model_data(train, SPEC)
    full_model = build_model(data.spec, data.n_users, data.n_items, offset=data.offset,
                             y_offset=data.y_offset)
    # (mu has a flat prior: fix it, draw the rest from the prior)
    tr = handlers.trace(handlers.seed(handlers.substitute(full_model, {"mu_c": 0.1}),
                                      jax.random.PRNGKey(1))).get_trace(
        *(np.asarray(a) for a in data.args))
    params = {n: s["value"] for n, s in tr.items()
              if s["type"] == "sample" and not s["is_observed"]}
    full_prior, full_lik = _log_terms(train, None, jax.random.split(jax.random.PRNGKey(0), 1),
                                      params)[0]
    B = 50
    est = _log_terms(train, B, jax.random.split(jax.random.PRNGKey(2), 2000), params)
    # the prior terms (joint minus likelihood) are the same in every batch
    assert np.allclose(est[:, 0] - est[:, 1], full_prior - full_lik, rtol=1e-4)
    m, se = est[:, 1].mean(), est[:, 1].std(ddof=1) / np.sqrt(len(est))
    assert se > 0  # the batches differ
    assert abs(m - full_lik) < 4 * se, (m, full_lik, se)
    # and it is not the full term for a single batch (the scale nnz/B is applied)
    assert B < nnz and np.std(est[:, 1]) > 1e-3 * abs(full_lik)
    # a minibatch model run outside a seed handler: a clear error, not a JAX one
    mb_model = build_model(data.spec, data.n_users, data.n_items, offset=data.offset,
                           y_offset=data.y_offset, batch_size=B)
    with pytest.raises(SpecError, match="minibatch likelihood needs a random key"):
        handlers.trace(handlers.substitute(mb_model, params)).get_trace(
            *(np.asarray(a) for a in data.args))


# make test-all (800 SVI steps, ~20 s): make test keeps the minibatch path through the
# unbiasedness test above
@pytest.mark.slow
def test_minibatch_fit_recovers_planted_structure(planted):
    """A quarter of the ratings per step: held-out RMSE against the noise-free truth close
    to what the full-batch fit of the same settings reaches (0.199 measured, 600 steps)."""
    train, (tu, ti, truth) = planted
    mb = fit_svi(train, SPEC, batch_size=256, num_steps=800, num_samples=200,
                 learning_rate=0.02, seed=0)
    assert mb.attrs["settings"]["batch_size"] == 256
    m, _ = mb.pair_moments(tu, ti)
    r_mb = float(np.sqrt(np.mean((m.mean(0) - truth) ** 2)))
    base = float(np.sqrt(np.mean((train.rating.mean() - truth) ** 2)))
    assert r_mb < 0.25 < 0.5 * base, (r_mb, base)


@pytest.mark.parametrize("bad", [0, -5, 2.5, "all"])
def test_bad_batch_size_is_refused(planted, bad):
    with pytest.raises(SpecError, match="batch_size"):
        fit_svi(planted[0], SPEC, batch_size=bad, num_steps=10)


@pytest.mark.slow  # 17 s warm
def test_num_steps_below_the_window_runs_num_steps():
    """num_steps=30 with the default window of 100 ran 100 steps: the window is capped at
    num_steps."""
    import pandas as pd

    import bayesmf

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user": rng.integers(0, 15, 120), "item": rng.integers(0, 10, 120),
                       "rating": rng.integers(1, 6, 120).astype(float)})
    df = df.drop_duplicates(["user", "item"])
    m = bayesmf.BayesMF(method="svi", rank=2, num_steps=30, num_samples=5).fit(df)
    assert m.posterior.attrs["steps"] == 30
