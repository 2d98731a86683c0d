"""Conformance over inference method x likelihood: planted data, fast settings and a
pytest mixin.

Every (method, likelihood) pair must honour one contract, whatever computes it:
the shared :class:`~bayesmf.posterior.Posterior` carries the likelihood's parameter draws
(``tau`` for the Gaussian, ``cutpoints`` for the ordinal family, none for Bernoulli),
predicts on the data's scale by raw id (unknown ids through the population fallback),
beats a constant model on its training data (a broken likelihood fails this), survives
save/load with identical predictions, and ranks with every strategy.

Use it from a test module::

    import pytest
    from bayesmf.testing.conformance import ConformanceTests, fit_fast, planted

    @pytest.fixture(scope="module", params=[("gibbs", "ordinal"), ("map", "bernoulli-logit")])
    def fitted(request):
        method, lik = request.param
        train = planted(lik)
        return method, lik, train, fit_fast(method, lik, train)

    class TestMine(ConformanceTests):
        pass
"""

from __future__ import annotations

import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.infer import get_method
from bayesmf.model.spec import ModelSpec

__all__ = ["FAST", "planted", "fit_fast", "ConformanceTests"]

#: the smallest settings per method that still exercise every code path (plumbing, not
#: statistics)
FAST = {
    "map": {},
    "gibbs": dict(num_samples=30, num_warmup=60, num_chains=2),
    "nuts": dict(num_samples=15, num_warmup=15, num_chains=1, max_tree_depth=4),
    "svi": dict(num_steps=300, num_samples=20, window=50),
    "pymc-nuts": dict(num_samples=15, num_warmup=15, num_chains=1, max_tree_depth=4),
    "pymc-advi": dict(num_steps=300, num_samples=20, window=50),
}


def planted(likelihood: str, n_users: int = 40, n_items: int = 30, rank: int = 2,
            density: float = 0.6, seed: int = 0) -> Ratings:
    """Planted data for a likelihood: a rank-``rank`` latent ``z = b_i + U_u.V_i + N(0,1)``
    observed as stars 1-5 (``"ordinal"``, cut at -1.5, -0.5, 0.5, 1.5), as ``z > 0``
    (Bernoulli) or as ``3 + 0.5 z`` (Gaussian); string user ids, integer item ids; every
    user and item observed at least once."""
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(n_users, rank))
    V = rng.normal(size=(n_items, rank))
    bi = 0.8 * rng.normal(size=n_items)
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    mask[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    u, i = np.nonzero(mask)
    z = bi[i] + np.sum(U[u] * V[i], 1) + rng.normal(size=len(u))
    if likelihood == "ordinal":
        y = np.searchsorted([-1.5, -0.5, 0.5, 1.5], z) + 1.0
    elif likelihood.startswith("bernoulli"):
        y = (z > 0).astype(float)
    else:
        y = 3.0 + 0.5 * z
    users = np.array([f"user-{j:03d}" for j in range(n_users)], dtype=object)
    return Ratings.from_arrays(users[u], 1000 + 7 * i, y)


def fit_fast(method: str, likelihood, train: Ratings, rank: int = 2, seed: int = 0, **spec_kw):
    """Fit ``method`` with its :data:`FAST` settings."""
    spec = ModelSpec(rank=rank, likelihood=likelihood, **spec_kw)
    return get_method(method)(train, spec, seed=seed, **FAST[method])


class ConformanceTests:
    """Pytest mixin: the contract of every fitted (method, likelihood) pair. The test
    module provides a ``fitted`` fixture returning ``(method, likelihood_name, train,
    posterior)``."""

    def test_draws_are_the_likelihoods(self, fitted):
        method, lik, train, post = fitted
        assert post.likelihood.name == lik
        for n in post.likelihood.theta_names:
            assert n in post.draws
        if "tau" not in post.likelihood.theta_names:
            assert "tau" not in post.draws
        if lik == "ordinal":
            c = post.draws["cutpoints"]
            assert c.shape == (post.n_chains, post.n_draws, post.likelihood.K - 1)
            assert np.all(np.diff(c, axis=-1) > 0)
            if post.spec.global_mean:
                assert np.allclose(c[..., 0], 0.0)
        for v in post.draws.values():
            assert np.all(np.isfinite(v))

    def test_predictions_on_the_data_scale_and_better_than_constant(self, fitted):
        method, lik, train, post = fitted
        raw_u = train.users.decode(train.user)
        raw_i = train.items.decode(train.item)
        pred = post.predict(raw_u, raw_i)
        if post.likelihood.discrete:
            support = np.asarray(getattr(post.likelihood, "levels", None) or (0.0, 1.0))
            assert np.all((pred.mean >= support.min()) & (pred.mean <= support.max()))
            assert np.all(np.isin(pred.lower, support)) and np.all(np.isin(pred.upper, support))
            lp = post.log_predictive_density(train)
            assert np.all(np.isfinite(lp))
            y = train.rating
            freq = np.array([np.mean(y == v) for v in y])
            assert -lp.mean() < -np.log(freq).mean(), "worse than the marginal frequencies"
        else:
            y = train.rating
            assert np.mean((pred.mean - y) ** 2) < np.var(y), "worse than the mean"
        p2 = post.predict(["nobody", raw_u[0]], [raw_i[0], 99999])
        assert not p2.known_user[0] and not p2.known_item[1]
        assert np.all(np.isfinite(p2.mean)) and np.all(p2.std > 0)

    def test_save_load_round_trip(self, fitted, tmp_path):
        from bayesmf import io

        method, lik, train, post = fitted
        back = io.load(io.save(post, tmp_path / "m.nc"))
        assert back.likelihood == post.likelihood and back.spec == post.spec
        u = train.users.decode(train.user[:20])
        i = train.items.decode(train.item[:20])
        np.testing.assert_allclose(back.predict(u, i).mean, post.predict(u, i).mean,
                                   rtol=1e-6)

    def test_recommend_every_strategy(self, fitted):
        from bayesmf.recommend import recommend

        method, lik, train, post = fitted
        thr = 4.0 if lik in ("ordinal", "gaussian") else 0.5
        for strategy in ("mean", "ucb", "thompson", "prob"):
            recs = recommend(post, users=train.users.ids[:5], n=3, strategy=strategy,
                             threshold=thr, seed=1)
            assert len(recs) == 15 and recs["score"].notna().all(), strategy

    def test_ranking_evaluation_full_and_sampled(self, fitted):
        from bayesmf.evaluate import evaluate

        method, lik, train, post = fitted
        thr = 4.0 if lik in ("ordinal", "gaussian") else 0.5
        # held-out pairs: unobserved items of the first users, labelled alternately with
        # the top and bottom value (the metrics' values are not the point here)
        csr = train.to_csr()
        users, items, vals = [], [], []
        top, low = train.rating.max(), train.rating.min()
        for u in range(min(10, train.n_users)):
            free = np.setdiff1d(np.arange(train.n_items), csr.indices[csr.indptr[u]:
                                                                      csr.indptr[u + 1]])
            for j, i in enumerate(free[:4]):
                users.append(u)
                items.append(i)
                vals.append(top if j % 2 == 0 else low)
        test = Ratings.from_indices(np.array(users), np.array(items), np.array(vals),
                                    train.users, train.items)
        for protocol in ("full", "sampled"):
            out = evaluate(post, test, k=5, protocol=protocol, relevance_threshold=thr,
                           n_negatives=10, widths=False)
            r = out["ranking"]
            assert 0.0 <= r["ndcg@5"] <= 1.0 and np.isfinite(r["ndcg@5"]), (protocol, r)

    def test_arviz_groups(self, fitted):
        method, lik, train, post = fitted
        dt = post.to_datatree(log_likelihood=train, posterior_predictive=train)
        ll = dt["log_likelihood"]["rating"].values
        assert ll.shape[-1] == train.nnz and np.all(np.isfinite(ll)) and np.all(
            ll <= (0 if post.likelihood.discrete else np.inf))
        pp = dt["posterior_predictive"]["rating"].values
        if post.likelihood.discrete:
            support = getattr(post.likelihood, "levels", None) or (0.0, 1.0)
            assert np.all(np.isin(pp, np.asarray(support, np.float32)))
