"""Side features (the Macau prior) in the NumPyro model, SVI and NUTS.

The model's log density against a hand computation of the coupled prior, the MAP start
of NUTS, and small planted fits (factors linear in the features; the last N_COLD items
are cold) whose cold-start predictions beat the population fallback and agree with
Gibbs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sps
from scipy import stats

from bayesmf.data.features import Features
from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import SpecError
from bayesmf.infer.numpyro_model import (MAX_DENSE_FEATURES, build_model, map_init_values,
                                         model_data, model_features)
from bayesmf.model.spec import ModelSpec
from _macau_planted import frame as _frame, planted_macau

N, M, K, F, N_COLD = 60, 50, 2, 3, 8


@pytest.fixture(scope="module")
def planted():
    p = planted_macau(1, N, M, 0.4, K, F, N_COLD)
    uu, ii, r, cold = p["uu"], p["ii"], p["r"], p["cold"]
    train = Ratings.from_indices(uu[~cold], ii[~cold], r[~cold], Vocabulary(np.arange(N)),
                                 Vocabulary(np.arange(M - N_COLD)))
    return dict(train=train, uf=p["uf"], itf=p["itf"],
                items_df=_frame("item", np.arange(M), p["Xi"]),
                cold=(uu[cold], ii[cold], r[cold]))


def _cold_rmse(post, planted):
    cu, ci, cr = planted["cold"]
    fb = post.predict(cu, ci, clip=False).mean
    cs = post.with_features(item_features=planted["items_df"]).predict(cu, ci, clip=False)
    assert cs.known_item.all()
    return (float(np.sqrt(np.mean((cs.mean - cr) ** 2))),
            float(np.sqrt(np.mean((fb - cr) ** 2))), cs.mean)


# ----------------------------------------------------------------------------- the model
def test_log_density_is_the_coupled_prior(planted):
    """Centred Wishart model, item features only: the joint log density at a point minus
    the same model without features equals the Macau terms, computed by hand:
    log N(V_i | mu_V + beta' x_i, Lam^-1) - log N(V_i | mu_V, Lam^-1)
    + sum_f log N(beta_f | 0, (lb Lam)^-1) + log Gamma(lb | 1, 1)."""
    from numpyro.infer.util import log_density

    train = planted["train"]
    spec = ModelSpec(rank=K, global_mean=False)  # no improper site to trace
    data = model_data(train, spec)
    _, X = model_features(train, data.spec, item_features=planted["itf"])
    rng = np.random.default_rng(0)
    kw = dict(offset=data.offset, y_offset=data.y_offset, centered=True)
    m1 = build_model(data.spec, data.n_users, data.n_items, features=X, **kw)
    m0 = build_model(data.spec, data.n_users, data.n_items, **kw)
    args = tuple(jnp.asarray(a) for a in data.args)
    from numpyro import handlers

    tr = handlers.trace(handlers.seed(m1, jax.random.PRNGKey(3))).get_trace(*args)
    vals = {n: s["value"] for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}
    vals["beta_V"] = jnp.asarray(rng.normal(size=(F, K)), jnp.float32)
    vals["lambda_beta_V"] = jnp.asarray(0.7, jnp.float32)
    def lp(model, v):  # one compiled call each (eager dispatch is slower)
        return float(jax.jit(lambda v: log_density(model, args, {}, v)[0])(v))

    lp1 = lp(m1, vals)
    lp0 = lp(m0, {n: v for n, v in vals.items() if "beta" not in n})
    L = np.linalg.cholesky(np.asarray(tr["Lambda_V"]["value"], np.float64))
    Lam = L @ L.T
    cov = np.linalg.inv(Lam)
    V = np.asarray(vals["V"], np.float64)
    muV = np.asarray(vals["mu_V"], np.float64)
    B = np.asarray(vals["beta_V"], np.float64)
    lb = 0.7
    want = (stats.multivariate_normal(np.zeros(K), cov).logpdf(V - muV - X["V"] @ B).sum()
            - stats.multivariate_normal(np.zeros(K), cov).logpdf(V - muV).sum()
            + stats.multivariate_normal(np.zeros(K), cov / lb).logpdf(B).sum()
            + stats.gamma(1.0, scale=1.0).logpdf(lb))
    assert lp1 - lp0 == pytest.approx(want, abs=2e-2 + 1e-5 * abs(lp1))


@pytest.mark.parametrize("centered", [False, True])
def test_map_init_reproduces_the_map_point_with_features(planted, centered):
    """The MAP start maps beta, the residual hyperparameters and the rows so that the
    model's deterministic sites give the MAP factors and link back."""
    from numpyro import handlers

    from bayesmf.infer.map import fit_map

    train, spec = planted["train"], ModelSpec(rank=K)
    data = model_data(train, spec)
    vals = map_init_values(train, spec, data, centered=centered, seed=0,
                           user_features=planted["uf"], item_features=planted["itf"])
    assert "lambda_beta_U" in vals and ("beta_V" if centered else "beta_V_z") in vals
    _, X = model_features(train, data.spec, planted["uf"], planted["itf"])
    model = build_model(data.spec, data.n_users, data.n_items, offset=data.offset,
                        y_offset=data.y_offset, centered=centered, features=X)
    tr = handlers.trace(handlers.substitute(handlers.seed(model, jax.random.PRNGKey(0)),
                                            data=vals)).get_trace(*data.args)
    mp = fit_map(train, data.spec, seed=0, user_features=planted["uf"],
                 item_features=planted["itf"])
    for n in ("U", "V", "beta_U", "beta_V"):
        np.testing.assert_allclose(np.asarray(tr[n]["value"]), mp.draws[n][0, 0], atol=2e-3)


def test_feature_errors(planted):
    train = planted["train"]
    wide = Features(planted["uf"].ids, sps.random(N, MAX_DENSE_FEATURES + 1, density=1e-3,
                                                  format="csr", random_state=0),
                    [{"name": f"f{j}", "kind": "numeric", "mean": 0.0, "scale": 1.0}
                     for j in range(MAX_DENSE_FEATURES + 1)], "user")
    with pytest.raises(SpecError, match="dense"):
        model_features(train, ModelSpec(rank=K), user_features=wide, method="svi")
    with pytest.raises(SpecError, match="rank >= 1"):
        model_features(train, ModelSpec(rank=0), item_features=planted["itf"])
    from bayesmf.infer.svi import fit_svi

    with pytest.raises(SpecError, match="lambda_beta_prior"):
        fit_svi(train, ModelSpec(rank=K), item_features=planted["itf"],
                lambda_beta_prior=(0.0, 1.0))


# ----------------------------------------------------------------------------- fits
@pytest.fixture(scope="module")
def gibbs(planted):
    from bayesmf.infer.gibbs import fit_gibbs

    return fit_gibbs(planted["train"], ModelSpec(rank=K), user_features=planted["uf"],
                     item_features=planted["itf"], num_samples=100, num_warmup=100, seed=2)


@pytest.mark.slow  # 29 s warm; the model is checked by test_nuts_runs_and_agrees_with_gibbs
def test_svi_recovers_feature_structure(planted):
    from bayesmf.infer.svi import fit_svi

    post = fit_svi(planted["train"], ModelSpec(rank=K), user_features=planted["uf"],
                   item_features=planted["itf"], centered=True, num_steps=300,
                   learning_rate=0.05, num_samples=50, seed=0)
    assert post.draws["beta_V"].shape == (1, 50, F, K)
    assert post.draws["lambda_beta_U"].shape == (1, 50)
    assert post.features["item"] is not None and post.attrs["macau"]["sides"]
    rmse, fallback, mean = _cold_rmse(post, planted)
    assert rmse < 0.5 * fallback and rmse < 1.5, (rmse, fallback)


def test_nuts_runs_and_agrees_with_gibbs(planted, gibbs):
    from bayesmf.infer.nuts import fit_nuts

    post = fit_nuts(planted["train"], ModelSpec(rank=K), user_features=planted["uf"],
                    item_features=planted["itf"], num_samples=50, num_warmup=50,
                    num_chains=1, max_tree_depth=5, seed=0)
    for n in ("beta_U", "beta_V", "lambda_beta_U", "mu_V", "Lambda_V", "lambda_bi"):
        assert post.draws[n].shape[2:] == gibbs.draws[n].shape[2:], n
    rmse, fallback, mean = _cold_rmse(post, planted)
    rg, _, g = _cold_rmse(gibbs, planted)
    assert rmse < 0.5 * fallback, (rmse, fallback)
    assert np.sqrt(np.mean((mean - g) ** 2)) < 0.35 and abs(rmse - rg) < 0.2, (rmse, rg)
    cu, ci, _ = planted["cold"]
    pn = post.with_features(item_features=planted["items_df"]).predict(cu, ci, clip=False)
    pg = gibbs.with_features(item_features=planted["items_df"]).predict(cu, ci, clip=False)
    # the predictive spread of cold pairs is of the same size under both samplers
    assert 0.6 < np.median(pn.std) / np.median(pg.std) < 1.6
