"""One conformance suite that every registered inference method passes.

Each method in :data:`bayesmf.infer.METHODS` is fitted once (module-scoped fixture) on a
tiny synthetic problem with string user ids and integer item ids, with the smallest
settings that still exercise the code path (FAST). The checks: draw names, shapes and
dtypes; raw ids as coordinates; predictions by raw id; unknown-id policy; seed
reproducibility; save/load round trip; finiteness; option validation (SpecError).

Methods that are not importable yet fail here on purpose (no skip): the registry promises
them.
"""

from __future__ import annotations

import numpy as np
import pytest

from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError, UnknownIdError
from bayesmf.infer import METHODS, get_method
from bayesmf.model.likelihoods import SUPPORTED
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import PARAM_NAMES, Posterior

#: the methods of the explicit-rating (Gaussian) model; family-specific methods such as
#: "cavi" (Poisson factorization) have their own tests
GAUSSIAN_METHODS = sorted(m for m in METHODS if m in SUPPORTED["gaussian"] and m != "nmf")
#: "nmf" is another model on the Gaussian likelihood (non-negative W H, no mean or
#: biases, non-negative ratings): tests/test_nmf_explicit.py

N_USERS, N_ITEMS, RANK = 30, 20, 2

#: smallest settings per method (these tests check plumbing, not statistics)
FAST = {
    "map": {},
    "gibbs": dict(num_samples=20, num_warmup=10, num_chains=2),
    "nuts": dict(num_samples=20, num_warmup=20, num_chains=2, max_tree_depth=4),
    "svi": dict(num_steps=200, num_samples=20, window=50),
    "pymc-nuts": dict(num_samples=20, num_warmup=20, num_chains=2, max_tree_depth=4),
    "pymc-advi": dict(num_steps=200, num_samples=20, window=50),
    "propagation": dict(num_samples=20, num_warmup=10),
}
#: one invalid *value* of a known option per method (unknown keys are tested for all)
BAD_VALUE = {
    "map": {"solver": "no-such-solver"},
    "gibbs": {"num_samples": 0},
    "nuts": {"num_samples": 0},
    "svi": {"guide": "no-such-guide"},
    "pymc-nuts": {"target_accept": 1.5},
    "pymc-advi": {"method": "svgd-please"},
    "propagation": {"user_blocks": 0},
}
#: methods whose posterior has a single draw (no parameter uncertainty)
POINT = {"map"}


def _synthetic(seed=0):
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(N_USERS, RANK))
    V = rng.normal(size=(N_ITEMS, RANK))
    bu = 0.3 * rng.normal(size=N_USERS)
    bi = 0.3 * rng.normal(size=N_ITEMS)
    mask = rng.random((N_USERS, N_ITEMS)) < 0.5
    mask[np.arange(N_USERS), rng.integers(0, N_ITEMS, N_USERS)] = True  # every user rated
    mask[rng.integers(0, N_USERS, N_ITEMS), np.arange(N_ITEMS)] = True  # every item rated
    u, i = np.nonzero(mask)
    r = 3.0 + bu[u] + bi[i] + 0.7 * np.sum(U[u] * V[i], 1) + 0.5 * rng.normal(size=len(u))
    users = np.array([f"user-{j:03d}" for j in range(N_USERS)], dtype=object)
    items = 1000 + 7 * np.arange(N_ITEMS)
    return Ratings.from_arrays(users[u], items[i], np.clip(r, 1, 5))


@pytest.fixture(scope="module")
def train():
    return _synthetic()


@pytest.fixture(scope="module")
def spec():
    return ModelSpec(rank=RANK)


@pytest.fixture(scope="module", params=GAUSSIAN_METHODS)
def fitted(request, train, spec):
    import jax

    name = request.param
    x64 = bool(jax.config.jax_enable_x64)
    post = get_method(name)(train, spec, seed=0, **FAST[name])
    # no method leaves JAX's global precision changed (PyTensor's JAX backend sets it on
    # import; bayesmf.infer.pymc switches it back)
    assert bool(jax.config.jax_enable_x64) == x64, name
    return name, post


def test_registry_covers_the_methods_of_this_suite():
    assert set(FAST) == set(GAUSSIAN_METHODS) == set(BAD_VALUE)


def test_draw_shapes_and_dtypes(fitted, train):
    name, post = fitted
    assert isinstance(post, Posterior)
    assert post.method == name
    C, D = post.n_chains, post.n_draws
    if name in POINT:
        assert (C, D) == (1, 1)
    else:
        assert C * D > 1
    want = {"mu": (C, D), "bu": (C, D, N_USERS), "bi": (C, D, N_ITEMS),
            "U": (C, D, N_USERS, RANK), "V": (C, D, N_ITEMS, RANK), "tau": (C, D)}
    for n in PARAM_NAMES:
        a = post.draws[n]
        assert a.shape == want[n], (n, a.shape)
        assert a.dtype == np.float32, (n, a.dtype)
        assert np.all(np.isfinite(a)), n
    assert np.all(post.draws["tau"] > 0)
    for n, a in post.sample_stats.items():
        assert a.shape[:2] == (C, D), (n, a.shape)
    # hyper draws, when present, keep the standard shapes
    hyper = {"lambda_bu": (C, D), "lambda_bi": (C, D), "mu_U": (C, D, RANK),
             "mu_V": (C, D, RANK), "Lambda_U": (C, D, RANK, RANK),
             "Lambda_V": (C, D, RANK, RANK)}
    for n, shp in hyper.items():
        if n in post.draws:
            assert post.draws[n].shape == shp, (n, post.draws[n].shape)
    # the draws are not all identical (a sampler that never moves would pass shapes)
    if name not in POINT:
        assert np.ptp(post.draws["mu"]) > 0
        assert np.ptp(post.flat("U")[:, 0, 0]) > 0


def test_raw_ids_are_the_coordinates(fitted, train):
    _, post = fitted
    np.testing.assert_array_equal(post.users.ids, train.users.ids)
    np.testing.assert_array_equal(post.items.ids, train.items.ids)
    assert post.users == train.users and post.items == train.items
    # predictions by raw id equal the index-level summary of the same pairs
    u_raw = train.users.decode(train.user[:15])
    i_raw = train.items.decode(train.item[:15])
    pr = post.predict(u_raw, i_raw)
    mean, std, *_ = post.summarize_indices(train.user[:15], train.item[:15])
    np.testing.assert_allclose(pr.mean, mean)
    np.testing.assert_allclose(pr.std, std)
    assert pr.known_user.all() and pr.known_item.all()
    np.testing.assert_array_equal(pr.user, u_raw)


def test_predictions_finite_and_sensible(fitted, train):
    _, post = fitted
    pr = post.predict(train.users.decode(train.user), train.items.decode(train.item))
    assert np.all(np.isfinite(pr.mean)) and np.all(np.isfinite(pr.std))
    assert np.all(pr.std > 0) and np.all(pr.lower < pr.upper)
    # even the tiniest fit must beat predicting the global mean on the training data
    rmse = np.sqrt(np.mean((pr.mean - train.rating) ** 2))
    assert rmse < np.std(train.rating)


def test_unknown_ids(fitted, train):
    _, post = fitted
    users = np.array(["user-000", "nobody", "nobody"], dtype=object)
    items = np.array([train.items.ids[0], train.items.ids[1], -5])
    pr = post.predict(users, items)
    np.testing.assert_array_equal(pr.known_user, [True, False, False])
    np.testing.assert_array_equal(pr.known_item, [True, True, False])
    assert np.all(np.isfinite(pr.mean)) and np.all(np.isfinite(pr.std))
    # an unknown user is less certain than a known one for the same item
    known = post.predict(["user-001"], [train.items.ids[1]])
    assert pr.std[1] >= known.std[0] * 0.999
    with pytest.raises(UnknownIdError):
        post.predict(users, items, unknown="raise")


def test_seed_reproducibility(fitted, train, spec):
    name, post = fitted
    fit = get_method(name)
    again = fit(train, spec, seed=0, **FAST[name])
    other = fit(train, spec, seed=1, **FAST[name])
    for n in PARAM_NAMES:
        np.testing.assert_array_equal(again.draws[n], post.draws[n], err_msg=n)
    assert not np.array_equal(other.draws["U"], post.draws["U"])


def test_save_load_round_trip(fitted, train, tmp_path):
    from bayesmf.io import load, save

    _, post = fitted
    path = save(post, tmp_path / "model.nc")
    back = load(path)
    assert back.method == post.method
    assert back.spec == post.spec
    for n in PARAM_NAMES:
        np.testing.assert_array_equal(back.draws[n], post.draws[n].astype(np.float32))
    u_raw = list(train.users.ids[:5]) + ["nobody"]
    i_raw = list(train.items.ids[:6])
    a, b = post.predict(u_raw, i_raw), back.predict(u_raw, i_raw)
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.std, b.std)
    np.testing.assert_array_equal(a.lower, b.lower)


@pytest.mark.parametrize("name", GAUSSIAN_METHODS)
def test_bad_options_raise_spec_error(name, train, spec):
    fit = get_method(name)
    with pytest.raises(SpecError):
        fit(train, spec, no_such_option=1)
    with pytest.raises(SpecError):
        fit(train, spec, **BAD_VALUE[name])
