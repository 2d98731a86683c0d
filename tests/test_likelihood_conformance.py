"""Every inference method x every non-Gaussian likelihood: one conformance suite.

Each (method, likelihood) pair is fitted once on a tiny planted problem (string user ids,
integer item ids) with the smallest settings that exercise the code path, and must:
return the shared Posterior with the likelihood's parameter draws (``cutpoints`` for the
ordinal family, none for Bernoulli) and no ``tau``; predict on the data's scale (P(y=1)
in [0, 1], expected ratings inside the levels) by raw id, unknown ids included; give a
discrete predictive whose log-loss is finite and better than a constant model's on the
training pairs (a test that a broken likelihood fails); survive save/load with identical
predictions; and rank with every strategy. Mismatched data is refused clearly."""

from __future__ import annotations

import numpy as np
import pytest

import bayesmf
from bayesmf.data.ratings import Ratings
from bayesmf.errors import DataError, SpecError
from bayesmf.infer import METHODS, get_method
from bayesmf.model.spec import ModelSpec
from bayesmf.recommend import recommend

N_USERS, N_ITEMS, RANK = 40, 30, 2
LIKELIHOODS = ("ordinal", "bernoulli-probit", "bernoulli-logit")
FAST = {
    "map": {},
    "gibbs": dict(num_samples=30, num_warmup=60, num_chains=2),
    "nuts": dict(num_samples=15, num_warmup=15, num_chains=1, max_tree_depth=4),
    "svi": dict(num_steps=300, num_samples=20, window=50),
    "pymc-nuts": dict(num_samples=15, num_warmup=15, num_chains=1, max_tree_depth=4),
    "pymc-advi": dict(num_steps=300, num_samples=20, window=50),
}


def _data(lik: str, seed: int = 0) -> Ratings:
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(N_USERS, RANK))
    V = rng.normal(size=(N_ITEMS, RANK))
    bi = 0.8 * rng.normal(size=N_ITEMS)
    mask = rng.random((N_USERS, N_ITEMS)) < 0.6
    mask[np.arange(N_USERS), rng.integers(0, N_ITEMS, N_USERS)] = True
    mask[rng.integers(0, N_USERS, N_ITEMS), np.arange(N_ITEMS)] = True
    u, i = np.nonzero(mask)
    z = bi[i] + np.sum(U[u] * V[i], 1) + rng.normal(size=len(u))
    y = (np.searchsorted([-1.5, -0.5, 0.5, 1.5], z) + 1.0 if lik == "ordinal"
         else (z > 0).astype(float))
    users = np.array([f"user-{j:03d}" for j in range(N_USERS)], dtype=object)
    return Ratings.from_arrays(users[u], 1000 + 7 * i, y)


@pytest.fixture(scope="module", params=[(m, lk) for lk in LIKELIHOODS for m in sorted(METHODS)],
                ids=lambda p: f"{p[0]}-{p[1]}")
def fitted(request):
    method, lik = request.param
    train = _data(lik)
    post = get_method(method)(train, ModelSpec(rank=RANK, likelihood=lik), seed=0,
                              **FAST[method])
    return method, lik, train, post


def test_draws_are_the_likelihoods(fitted):
    method, lik, train, post = fitted
    assert post.likelihood.name == lik and "tau" not in post.draws
    if lik == "ordinal":
        assert post.likelihood.levels == (1.0, 2.0, 3.0, 4.0, 5.0)
        c = post.draws["cutpoints"]
        assert c.shape == (post.n_chains, post.n_draws, 4)
        assert np.all(np.diff(c, axis=-1) > 0) and np.allclose(c[..., 0], 0.0)
    for v in post.draws.values():
        assert np.all(np.isfinite(v))


def test_predictions_on_the_data_scale_and_better_than_constant(fitted):
    method, lik, train, post = fitted
    raw_u = train.users.decode(train.user)
    raw_i = train.items.decode(train.item)
    pred = post.predict(raw_u, raw_i)
    lo, hi = (1.0, 5.0) if lik == "ordinal" else (0.0, 1.0)
    assert np.all((pred.mean >= lo) & (pred.mean <= hi))
    assert np.all(np.isin(pred.lower, [1, 2, 3, 4, 5] if lik == "ordinal" else [0, 1]))
    lp = post.log_predictive_density(train)
    assert np.all(np.isfinite(lp))
    y = train.rating
    freq = np.array([np.mean(y == v) for v in y])
    assert -lp.mean() < -np.log(freq).mean(), "worse than the marginal frequencies"
    # unknown ids fall back to the population and stay on the scale
    p2 = post.predict(["nobody", raw_u[0]], [raw_i[0], 99999])
    assert not p2.known_user[0] and not p2.known_item[1]
    assert np.all((p2.mean >= lo) & (p2.mean <= hi))


def test_save_load_round_trip(fitted, tmp_path):
    method, lik, train, post = fitted
    path = bayesmf.io.save(post, tmp_path / "m.nc")
    back = bayesmf.io.load(path)
    assert back.likelihood == post.likelihood
    u = train.users.decode(train.user[:20])
    i = train.items.decode(train.item[:20])
    np.testing.assert_allclose(back.predict(u, i).mean, post.predict(u, i).mean, rtol=1e-6)


@pytest.mark.parametrize("strategy", ["mean", "ucb", "thompson", "prob"])
def test_recommend_every_strategy(fitted, strategy):
    method, lik, train, post = fitted
    recs = recommend(post, users=train.users.ids[:5], n=3, strategy=strategy,
                     threshold=0.5 if lik != "ordinal" else 4.0, seed=1)
    assert len(recs) == 15 and recs["score"].notna().all()


def test_mismatched_data_is_refused():
    stars = _data("ordinal")
    for lik in ("bernoulli-probit", "bernoulli-logit"):
        with pytest.raises(DataError, match="0/1"):
            get_method("gibbs")(stars, ModelSpec(rank=1, likelihood=lik))
    post = get_method("map")(stars, ModelSpec(rank=1, likelihood="ordinal"))
    half = Ratings.from_arrays(stars.users.decode(stars.user[:2]),
                               stars.items.decode(stars.item[:2]), [3.5, 4.0])
    with pytest.raises(DataError, match="not rating levels"):
        post.log_predictive_density(half)
    with pytest.raises(SpecError, match="solver='als'"):
        get_method("map")(stars, ModelSpec(rank=1, likelihood="ordinal"), solver="als")
