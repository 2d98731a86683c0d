"""The injectable reduce of the Gibbs conditionals (bayesmf.model.reduce): every global
conditional computed on 2 shards of the rows / observations, with its statistics psum-ed
over the shard axis, gives the draw of the unsharded conditional (same key)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmf.infer import gibbs_steps as gs
from bayesmf.model import reduce as R
from bayesmf.model.likelihoods import get_likelihood
from bayesmf.model.likelihoods.ordinal import OrdinalProbit
from bayesmf.model.priors import NormalGamma, sample_normal_wishart
from bayesmf.model.spec import BayesPriors, ModelSpec

KEY = jax.random.PRNGKey(7)
RNG = np.random.default_rng(0)


def _sharded(fn, *arrays, n_shards=2):
    """``fn(*arrays)`` with every array split along axis 0 into ``n_shards`` shards, run
    under vmap with the shard axis as the reduction axis; returns shard 0's result and
    checks all shards agree (they drew the same global parameters)."""

    def body(*parts):
        with R.sharded("shard"):
            return fn(*parts)

    split = [a.reshape((n_shards, a.shape[0] // n_shards) + a.shape[1:]) for a in arrays]
    out = jax.vmap(body, axis_name="shard")(*split)
    for leaf in jax.tree_util.tree_leaves(out):
        np.testing.assert_allclose(leaf[0], leaf[1], rtol=1e-5, atol=1e-6)
    return jax.tree_util.tree_map(lambda a: a[0], out)


def _close(a, b, rtol=2e-4, atol=2e-5):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


F = jnp.asarray(RNG.normal(0.3, 1.0, (40, 3)), jnp.float32)
b = jnp.asarray(RNG.normal(0.0, 0.5, 40), jnp.float32)
Vf = jnp.asarray(RNG.normal(0.0, 1.0, (10, 3)), jnp.float32)


def test_outside_sharded_is_the_plain_sum():
    assert R.axis_name() is None and R.count(5) == 5
    np.testing.assert_array_equal(R.total(F, 0), jnp.sum(F, 0))


def test_factor_prior_hyper_steps():
    nw = lambda F: sample_normal_wishart(KEY, F, 2.0, 3.0, 0.7)  # noqa: E731
    _close(_sharded(nw, F), nw(F))
    g = jnp.asarray([3.1, 2.2, 4.0], jnp.float32)
    ng = lambda F: NormalGamma().hyper_step(KEY, F, 2.0, 1.0, 0.7, g)  # noqa: E731
    _close(_sharded(ng, F), ng(F))


def test_bias_mu_translation_and_shift_moves():
    bp = lambda b: gs.bias_precision_draw(KEY, b, 1.0, 0.5)  # noqa: E731
    _close(_sharded(bp, b), bp(b))
    tm = lambda b: gs.translation_move(KEY, jnp.float32(3.0), b, 4.0, 0.0, 0.0)[0]  # noqa
    _close(_sharded(tm, b), tm(b))
    s_res = jnp.asarray(RNG.normal(0.2, 1.0, 64), jnp.float32)
    w = jnp.asarray(RNG.gamma(2.0, 1.0, 64), jnp.float32)
    for tau in (jnp.float32(1.7), w):
        md = (lambda s: gs.mu_draw(KEY, s, tau, 0.1, 0.0)) if tau.ndim == 0 else (
            lambda s, ww: gs.mu_draw(KEY, s, ww, 0.1, 0.0))
        args = (s_res,) if tau.ndim == 0 else (s_res, w)
        _close(_sharded(md, *args), md(*args))
    Lam = jnp.eye(3) * 2.0

    def shift(G, bb):  # moves V (replicated) given the sharded user rows U and b_u
        V2, muV, _, mu = gs.shift_move(KEY, Vf, jnp.zeros(3), bb, G, jnp.float32(0.5), Lam,
                                       3.0, 2.0, 0.1, 0.0, True)
        return V2, muV, mu

    _close(_sharded(shift, F, b), shift(F, b))


@pytest.mark.parametrize("name", ["gaussian", "ordinal", "bernoulli-probit",
                                  "bernoulli-logit"])
def test_likelihood_updates_and_scale_statistics(name):
    n = 200
    eta = jnp.asarray(RNG.normal(0.0, 1.0, n), jnp.float32)
    if name == "gaussian":
        lik = get_likelihood(name)
        y = eta + jnp.asarray(RNG.normal(0, 0.5, n), jnp.float32)
        theta = {"tau": jnp.float32(2.0)}
    elif name == "ordinal":
        lik = OrdinalProbit(levels=(1.0, 2.0, 3.0, 4.0, 5.0))
        y = jnp.asarray(np.clip(np.round(2 + np.asarray(eta) + RNG.normal(0, 1, n)), 0, 4),
                        jnp.float32)
        theta = {"cutpoints": jnp.asarray([0.0, 0.8, 1.7, 2.5], jnp.float32)}
    else:
        lik = get_likelihood(name)
        y = jnp.asarray(RNG.random(n) < 0.5, jnp.float32)
        theta = {}
    spec = ModelSpec(rank=2, likelihood=lik,
                     priors=BayesPriors(w0=1.0, bias_b=1.0, noise_b=1.0))
    up = lambda y, e: lik.update_theta(KEY, y, e, theta, spec)  # noqa: E731
    _close(_sharded(up, y, eta), up(y, eta), rtol=1e-3, atol=1e-3)
    if lik.latent_scale_fixed:
        sf = lambda y, e: lik.scale_fgh(y, e, theta, jnp.float32(0.1), spec)  # noqa: E731
        _close(_sharded(sf, y, eta), sf(y, eta), rtol=1e-3, atol=1e-3)
