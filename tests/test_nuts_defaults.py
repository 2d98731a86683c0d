"""NUTS defaults: the MAP initialisation (``init="map"``) and its option.

``map_init_values`` maps the MAP fit to the NumPyro model's latent sites (non-centred
standard normals, Bartlett sites of the Wishart, hyperparameters at their conditional
mean); a chain built by ``fit_nuts`` must start exactly at the MAP point. Toy data,
seconds.
"""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest

from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import fitted_spec
from bayesmf.infer.map import fit_map
from bayesmf.infer.numpyro_model import (build_model, init_strategy, init_to_values_or_median,
                                         map_init_values, model_data, resolve_factor_prior)
from bayesmf.infer.nuts import DEFAULTS, fit_nuts
from bayesmf.model.spec import ModelSpec

EFFECTS = ("mu", "bu", "bi", "U", "V", "tau")
TINY = dict(num_warmup=2, num_samples=2, num_chains=1, max_tree_depth=2)


@pytest.fixture(scope="module")
def train():
    rng = np.random.default_rng(5)
    n_u, n_i, k = 12, 9, 2
    U, V = rng.normal(size=(n_u, k)), rng.normal(size=(n_i, k))
    uu, ii = np.meshgrid(np.arange(n_u), np.arange(n_i), indexing="ij")
    keep = rng.random(uu.size) < 0.7
    uu, ii = uu.ravel()[keep], ii.ravel()[keep]
    r = 3.4 + 0.5 * np.sum(U[uu] * V[ii], 1) + 0.5 * rng.normal(size=uu.size)
    return Ratings.from_arrays(uu, ii, r)


def _start(kernel, args):
    """The constrained sites of the state ``kernel.init`` starts a chain from."""
    st = kernel.init(jax.random.PRNGKey(0), 2, model_args=args)
    return {n: np.asarray(v) for n, v in kernel.postprocess_fn(args, {})(st.z).items()}


@pytest.mark.parametrize("centered", [False, True])
@pytest.mark.parametrize("factor_prior", ["wishart", "diag"])
# rank 1 (the k = 1 edge of the Wishart) runs in ``make test-all``: rank 3 covers every
# (centered, prior) pair in ``make test`` (each pair compiles its own model, ~5-10 s)
@pytest.mark.parametrize("rank", [pytest.param(1, marks=pytest.mark.slow), 3])
def test_map_init_values_reproduce_the_map_point(train, centered, factor_prior, rank):
    from numpyro.infer import NUTS

    spec, fp = resolve_factor_prior(fitted_spec(train, ModelSpec(rank=rank), "nuts"),
                                    factor_prior)
    data = model_data(train, spec)
    vals = map_init_values(train, spec, data, centered=centered, factor_prior=fp, seed=4)
    # the sampled (not deterministic) sites of this parametrisation
    assert ("U" in vals) == centered and ("U_z" in vals) != centered
    assert ("U_chi2" in vals) == (fp == "wishart") and ("lambda_U" in vals) == (fp == "diag")
    model = build_model(spec, data.n_users, data.n_items, offset=data.offset,
                        y_offset=data.y_offset, centered=centered, factor_prior=fp)
    kernel = NUTS(model, init_strategy=init_to_values_or_median(values=vals))
    z = _start(kernel, tuple(data.args))
    ref = fit_map(train, spec, seed=4).draws
    for n in EFFECTS:
        np.testing.assert_allclose(z[n], ref[n][0, 0], rtol=1e-5, atol=1e-5, err_msg=n)
    for n, v in vals.items():  # every latent site starts at its mapped value
        np.testing.assert_allclose(z[n], np.asarray(v), rtol=1e-5, atol=1e-5, err_msg=n)
    # hyperparameters at their conditional posterior mean given the MAP effects
    pri = spec.priors
    b = ref["bu"][0, 0].astype(np.float64)
    lam = (pri.bias_a + b.size / 2) / (pri.bias_b + 0.5 * b @ b)
    np.testing.assert_allclose(z["lambda_bu"], lam, rtol=1e-5)
    F = ref["U"][0, 0].astype(np.float64)
    n_rows = F.shape[0]
    np.testing.assert_allclose(z["mu_U"], n_rows * F.mean(0) / (pri.beta0 + n_rows),
                               rtol=1e-4, atol=1e-6)


def test_fit_nuts_starts_at_the_map_point_by_default(train):
    assert DEFAULTS["init"] == "map"
    spec = ModelSpec(rank=2)
    post = fit_nuts(train, spec, seed=3, **TINY)
    assert post.attrs["settings"]["init"] == "map"
    z = _start(post.native["kernel"], post.native["model_args"])
    ref = fit_map(train, post.spec, seed=3).draws
    for n in EFFECTS:
        np.testing.assert_allclose(z[n], ref[n][0, 0], rtol=1e-5, atol=1e-5, err_msg=n)
    # and the old prior-median start is still there, and is not the MAP point
    med = fit_nuts(train, spec, seed=3, init="median", **TINY)
    zm = _start(med.native["kernel"], med.native["model_args"])
    assert np.abs(zm["bu"] - ref["bu"][0, 0]).max() > 1e-2


def test_map_init_falls_back_to_the_median_with_a_warning(train, monkeypatch):
    from bayesmf.errors import DataError

    def broken(*a, **k):
        raise DataError("boom")

    monkeypatch.setattr("bayesmf.infer.map.fit_map", broken)
    spec = fitted_spec(train, ModelSpec(rank=2), "nuts")
    data = model_data(train, spec)
    with pytest.warns(UserWarning, match="MAP fit failed .*boom.*prior median"):
        strat = init_strategy("map", train, spec, data)
    assert strat.func.__name__ == "init_to_median"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert init_strategy("median", train, spec, data).func.__name__ == "init_to_median"


@pytest.mark.parametrize("bad", ["MAP", "random", None, 1])
def test_init_option_validates(train, bad):
    with pytest.raises(SpecError, match=r"init must be one of \('map', 'median'\), got "):
        fit_nuts(train, ModelSpec(rank=2), init=bad, **TINY)
    spec = fitted_spec(train, ModelSpec(rank=2), "nuts")
    with pytest.raises(SpecError, match="init must be one of"):
        init_strategy(bad, train, spec, model_data(train, spec))


def test_precision_mvn_matches_numpyro_mvn():
    """The centred Wishart model's row density (a matmul) is numpyro's MVN density."""
    import jax.numpy as jnp
    import numpyro.distributions as dist

    from bayesmf.infer.numpyro_model import _precision_mvn

    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 4))
    lam = A @ A.T + 4 * np.eye(4)
    x, m = rng.normal(size=(7, 4)), rng.normal(size=4)
    d = _precision_mvn()(jnp.asarray(m), jnp.asarray(np.linalg.cholesky(lam)))
    ref = dist.MultivariateNormal(jnp.asarray(m), precision_matrix=jnp.asarray(lam))
    np.testing.assert_allclose(d.log_prob(jnp.asarray(x)), ref.log_prob(jnp.asarray(x)),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d.covariance_matrix, np.linalg.inv(lam), rtol=1e-4, atol=1e-6)


# ordinal (22 s of compiling here) runs in ``make test-all``; ``make test`` keeps the
# Bernoulli case, and the NUTS ordinal model with its MAP start through the conformance
# pair ``nuts-ordinal``
@pytest.mark.parametrize("likelihood", [pytest.param("ordinal", marks=pytest.mark.slow),
                                        "bernoulli-logit"])
def test_map_init_for_other_likelihoods(likelihood):
    """The GLM MAP (L-BFGS) maps too: the ordinal cut-points go to ``cut_u``."""
    from numpyro.infer import NUTS

    from bayesmf.testing.conformance import planted

    tr = planted(likelihood, n_users=15, n_items=10)
    spec = fitted_spec(tr, ModelSpec(rank=2, likelihood=likelihood), "nuts")
    data = model_data(tr, spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        strat = init_strategy("map", tr, spec, data, seed=2)
    assert ("cut_u" in strat.keywords["values"]) == (likelihood == "ordinal")
    model = build_model(spec, data.n_users, data.n_items, offset=data.offset,
                        y_offset=data.y_offset)
    z = _start(NUTS(model, init_strategy=strat), tuple(data.args))
    ref = fit_map(tr, spec, seed=2).draws
    for n in ("mu", "bu", "bi", "U", "V") + (("cutpoints",) if likelihood == "ordinal" else ()):
        np.testing.assert_allclose(z[n], ref[n][0, 0], rtol=1e-4, atol=1e-4, err_msg=n)
