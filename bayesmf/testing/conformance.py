r"""Conformance over inference method x likelihood: planted data, fast settings and a
pytest mixin.

Every (method, likelihood) pair must honour one contract, whatever computes it:
the shared :class:`~bayesmf.posterior.Posterior` carries the likelihood's parameter draws
(``tau`` for the Gaussian and the implicit family, ``cutpoints`` for the ordinal family,
none for Bernoulli and Poisson), predicts on the data's scale by raw id (unknown ids
through the population fallback), beats a constant model on its training data (a broken
likelihood fails this), survives save/load with identical predictions, and ranks with
every strategy.

**Full-matrix families** (:attr:`~bayesmf.model.likelihoods.base.Likelihood.full_matrix`:
``"implicit"``, ``"poisson"``) model every pair of the ``N x M`` matrix, the unlisted ones
included. Their training data list only the pairs with a positive count, so "beats a
constant model on its training data" is checked over the **whole** matrix, on the scale
the family predicts:

* a discrete full-matrix family (Poisson) predicts the count :math:`y_{ui}` (0 where
  unlisted): the predictive mean beats the constant mean count in squared error, and the
  predictive log probability of all :math:`NM` counts beats the marginal count
  frequencies;
* a continuous full-matrix family (implicit) predicts the binary preference
  :math:`p_{ui} = 1[r_{ui} > 0]` (not the count): the predictive mean beats the constant
  :math:`\bar p` in squared error and is the posterior mean of
  :math:`\eta_{ui} = \mu + b_u + b_i + U_u^\top V_i` (``mean_is_linear``), and the
  predictive spread includes the noise (:math:`\mathrm{sd} \ge \tau^{-1/2}`). Its log
  density is *not* required to beat a constant Gaussian: the implicit family's default
  noise is fixed at :math:`\tau = 16` for ranking, which is overconfident as a density
  of :math:`p` over all pairs by design.

In both cases the listed pairs score above the unlisted ones (the AUC of the predictive
mean exceeds 0.7; a constant scores 0.5), and the posterior-predictive draws of a
discrete full-matrix family are non-negative integers (it has no finite level set).

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
from bayesmf.model.spec import BayesPriors, ModelSpec

__all__ = ["FAST", "COUNT_LIKELIHOODS", "planted", "fit_fast", "full_matrix_targets",
           "ConformanceTests"]

#: the smallest settings per method that still exercise every code path (plumbing, not
#: statistics)
FAST = {
    "map": {},
    "gibbs": dict(num_samples=30, num_warmup=60, num_chains=2),
    "nuts": dict(num_samples=15, num_warmup=15, num_chains=1, max_tree_depth=4),
    "svi": dict(num_steps=300, num_samples=20, window=50),
    "pymc-nuts": dict(num_samples=15, num_warmup=15, num_chains=1, max_tree_depth=4),
    "pymc-advi": dict(num_steps=300, num_samples=20, window=50),
    # Poisson factorization's own method (bayesmf.infer.hpf.fit_cavi)
    "cavi": dict(max_iter=100, num_samples=20),
}


#: the likelihoods whose planted data are counts over the whole matrix
COUNT_LIKELIHOODS = ("implicit", "poisson")


def planted(likelihood, n_users: int = 40, n_items: int = 30, rank: int = 2,
            density: float = 0.6, seed: int = 0) -> Ratings:
    r"""Planted data for a likelihood (a name or a :class:`~bayesmf.model.likelihoods.
    base.Likelihood`): a rank-``rank`` latent ``z = b_i + U_u.V_i + N(0,1)`` observed as
    stars 1-5 (``"ordinal"``, cut at -1.5, -0.5, 0.5, 1.5), as ``z > 0`` (Bernoulli) or as
    ``3 + 0.5 z`` (Gaussian); any other family (one of your own) observes ``eta = b_i +
    U_u.V_i`` through its own ``prior_simulate`` with its parameters drawn by
    ``theta_prior_draw`` (default priors at unit scale). String user ids, integer item
    ids; every user and item observed at least once.

    For the full-matrix count families (``"implicit"``, ``"poisson"``:
    :data:`COUNT_LIKELIHOODS`) the data are HPF counts over the whole matrix,
    :math:`y_{ui}\sim\mathrm{Poisson}(s\,\theta_u^\top\beta_i)` with
    :math:`\theta_{uk}, \beta_{ik}\sim\mathrm{Gamma}(0.5, 1)` and :math:`s` such that the
    mean rate is :math:`-\log(1 - \text{density})` (a homogeneous matrix would then have
    a fraction ``density`` of non-zeros; the Gamma factors make it sparser). Only the
    pairs with :math:`y_{ui} > 0` are listed; one extra count on a random pair per user
    and per item keeps everyone observed."""
    from bayesmf.model.likelihoods import get_likelihood

    lik = get_likelihood(likelihood)
    name = lik.name
    rng = np.random.default_rng(seed)
    if name in COUNT_LIKELIHOODS:
        th = rng.gamma(0.5, 1.0, (n_users, rank))
        be = rng.gamma(0.5, 1.0, (n_items, rank))
        R = th @ be.T
        R *= -np.log1p(-density) / R.mean()
        Y = rng.poisson(R)
        Y[np.arange(n_users), rng.integers(0, n_items, n_users)] += 1
        Y[rng.integers(0, n_users, n_items), np.arange(n_items)] += 1
        u, i = np.nonzero(Y)
        users = np.array([f"user-{j:03d}" for j in range(n_users)], dtype=object)
        return Ratings.from_arrays(users[u], 1000 + 7 * i, Y[u, i].astype(float))
    U = rng.normal(size=(n_users, rank))
    V = rng.normal(size=(n_items, rank))
    bi = 0.8 * rng.normal(size=n_items)
    mask = rng.random((n_users, n_items)) < density
    mask[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    mask[rng.integers(0, n_users, n_items), np.arange(n_items)] = True
    u, i = np.nonzero(mask)
    eta = bi[i] + np.sum(U[u] * V[i], 1)
    z = eta + rng.normal(size=len(u))
    if name == "ordinal":
        y = np.searchsorted([-1.5, -0.5, 0.5, 1.5], z) + 1.0
    elif name.startswith("bernoulli"):
        y = (z > 0).astype(float)
    elif name == "gaussian":
        y = 3.0 + 0.5 * z
    else:  # a family of one's own: its own observation model
        spec = ModelSpec(rank=rank, likelihood=lik, priors=BayesPriors().resolved(1.0))
        theta = lik.theta_prior_draw(rng, spec)
        y = np.asarray(lik.prior_simulate(rng, eta, theta), float)
    users = np.array([f"user-{j:03d}" for j in range(n_users)], dtype=object)
    return Ratings.from_arrays(users[u], 1000 + 7 * i, y)


def fit_fast(method: str, likelihood, train: Ratings, rank: int = 2, seed: int = 0, **spec_kw):
    """Fit ``method`` with its :data:`FAST` settings. Biases and noise default to the
    likelihood's own defaults, as in :class:`~bayesmf.BayesMF`
    (:attr:`~bayesmf.model.likelihoods.base.Likelihood.default_biases`,
    ``default_noise``: the full-matrix families fit ``U_u . V_i`` alone); ``spec_kw``
    overrides them."""
    from bayesmf.model.likelihoods import get_likelihood

    lik = get_likelihood(likelihood)
    for n in ("global_mean", "user_bias", "item_bias"):
        spec_kw.setdefault(n, bool(lik.default_biases))
    spec_kw.setdefault("noise", lik.default_noise[0])
    spec_kw.setdefault("noise_precision", lik.default_noise[1])
    spec = ModelSpec(rank=rank, likelihood=likelihood, **spec_kw)
    return get_method(method)(train, spec, seed=seed, **FAST[method])


def full_matrix_targets(post, train: Ratings):
    """Every pair of ``post``'s ``N x M`` matrix in row-major order: ``(raw users, raw
    items, target, listed)`` with ``listed`` the training pairs and ``target`` what a
    full-matrix family predicts (module docs): the count (0 where unlisted) for a
    discrete family, the preference ``1[listed]`` for a continuous one."""
    N, M = len(post.users), len(post.items)
    uu, ii = np.meshgrid(np.arange(N), np.arange(M), indexing="ij")
    uu, ii = uu.ravel(), ii.ravel()
    Y = np.zeros((N, M))
    tu = post.users.encode(train.users.decode(train.user))
    ti = post.items.encode(train.items.decode(train.item))
    Y[tu, ti] = train.rating
    listed = (Y > 0).ravel()
    target = Y.ravel() if post.likelihood.discrete else listed.astype(np.float64)
    return post.users.decode(uu), post.items.decode(ii), target, listed


def _auc(score, positive) -> float:
    """Mann-Whitney AUC of ``score`` for ``positive`` vs the rest (ties count half)."""
    from scipy.stats import rankdata

    r = rankdata(score)
    n1 = int(positive.sum())
    n0 = len(score) - n1
    return float((r[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _check_full_matrix(post, train: Ratings) -> None:
    """The full-matrix contract of the module docs (support, squared error, log score
    and AUC over all ``N x M`` pairs)."""
    users, items, y, listed = full_matrix_targets(post, train)
    assert 0 < listed.sum() < len(listed)
    pred = post.predict(users, items)
    # a Poisson rate may be exactly 0 (KL-NMF's multiplicative updates keep exact zeros)
    # and Poisson(0) has no spread: the spread is positive wherever the mean is
    assert np.all(np.isfinite(pred.mean)) and np.all(pred.std >= 0)
    assert np.all(pred.std[pred.mean > 0] > 0)
    assert np.mean((pred.mean - y) ** 2) < np.var(y), "worse than the constant mean"
    if post.likelihood.discrete:
        # counts: non-negative expected counts, integer interval bounds, and the
        # predictive log probability of every count (zeros included) beats the marginal
        # count frequencies
        assert np.all(pred.mean >= 0)
        for b in (pred.lower, pred.upper):
            assert np.all((b >= 0) & (b == np.round(b)))
        test = Ratings.from_arrays(users, items, y, user_vocab=post.users,
                                   item_vocab=post.items)
        lp = post.log_predictive_density(test)
        assert np.all(np.isfinite(lp)) and np.all(lp <= 1e-12)
        freq = np.array([np.mean(y == v) for v in y])
        assert -lp.mean() < -np.log(freq).mean(), "worse than the marginal frequencies"
    else:
        # preferences: instead of a log score (the fixed default noise tau = 16 of the
        # implicit family is overconfident as a density of p by design, module docs):
        # finite log densities, the noise in the spread, and the mean is E[eta]
        lp = post.predictive(users, items).logpdf(y)
        assert np.all(np.isfinite(lp))
        if "tau" in post.likelihood.theta_names:
            assert np.all(pred.std >= (1 - 1e-5) / np.sqrt(post.draws["tau"].max()))
        if post.likelihood.mean_is_linear:
            d = {n: post.flat(n).astype(np.float64) for n in ("mu", "bu", "bi", "U", "V")}
            eta = (d["mu"][:, None, None] + d["bu"][:, :, None] + d["bi"][:, None, :]
                   + np.einsum("snk,smk->snm", d["U"], d["V"]))
            np.testing.assert_allclose(pred.mean, eta.mean(0).ravel(), rtol=1e-4,
                                       atol=1e-5)
    assert _auc(pred.mean, listed) > 0.7, "the listed pairs do not score above the rest"


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
        # a switched-off term is exactly zero in every draw (the full-matrix families fit
        # U_u . V_i alone), and a fixed noise precision stays the spec's value
        for name, on in (("mu", post.spec.global_mean), ("bu", post.spec.user_bias),
                         ("bi", post.spec.item_bias)):
            if not on and name in post.draws:
                assert np.all(post.draws[name] == 0), name
        if "tau" in post.draws and post.spec.noise == "fixed":
            np.testing.assert_allclose(post.draws["tau"], post.spec.noise_precision,
                                       rtol=1e-6)

    def test_predictions_on_the_data_scale_and_better_than_constant(self, fitted):
        method, lik, train, post = fitted
        raw_u = train.users.decode(train.user)
        raw_i = train.items.decode(train.item)
        pred = post.predict(raw_u, raw_i)
        if post.likelihood.full_matrix:
            # the listed pairs alone are not the data of a full-matrix family (they are
            # all positive); what holds instead: beating a constant over all N x M pairs
            # on the predicted scale (module docs), checked in _check_full_matrix
            _check_full_matrix(post, train)
        elif post.likelihood.discrete:
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
                             seed=1, **({"threshold": thr} if strategy == "prob" else {}))
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
        assert pp.shape == ll.shape and np.all(np.isfinite(pp))
        if post.likelihood.discrete and post.likelihood.full_matrix:
            # a discrete full-matrix family has no finite level set: its support is the
            # counts 0, 1, 2, ... (no levels attribute, not {0, 1})
            assert np.all((pp >= 0) & (pp == np.round(pp)))
        elif post.likelihood.discrete:
            support = getattr(post.likelihood, "levels", None) or (0.0, 1.0)
            assert np.all(np.isin(pp, np.asarray(support, np.float32)))
