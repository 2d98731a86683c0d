"""Same data, settings and seed give bit-identical draws on CPU; different seeds differ.

MAP and Gibbs run in the fast suite; NUTS, SVI and PyMC compile for tens of seconds per
fit on a 2-core machine, so they are marked slow (``make test-all`` / ``make bench``).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from bayesmf.data.ratings import Ratings
from bayesmf.model.spec import ModelSpec


def _has(mod):
    try:
        return importlib.util.find_spec(mod) is not None
    except ImportError:
        return False


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    u = np.repeat(np.arange(15), 4)
    i = np.concatenate([rng.choice(10, 4, replace=False) for _ in range(15)])
    return Ratings.from_arrays(u, i, rng.integers(1, 6, len(u)).astype(float))


OPTIONS = {
    "map": {},
    "gibbs": dict(num_samples=6, num_warmup=4, num_chains=2),
    "nuts": dict(num_samples=6, num_warmup=6, num_chains=1),
    "svi": dict(num_steps=60, num_samples=6),
    "pymc-advi": dict(),
}
MODULE = {"map": "bayesmf.infer.map", "gibbs": "bayesmf.infer.gibbs",
          "nuts": "bayesmf.infer.nuts", "svi": "bayesmf.infer.svi",
          "pymc-advi": "bayesmf.infer.pymc"}


def _check(method, data, other_seed=True, **extra):
    if not _has(MODULE[method]):
        pytest.skip(f"{method} has not landed")
    from bayesmf.infer import get_method

    fit = get_method(method)
    spec = ModelSpec(rank=2)
    opts = {**OPTIONS[method], **extra}
    a = fit(data, spec, seed=7, **opts)
    b = fit(data, spec, seed=7, **opts)
    c = fit(data, spec, seed=8, **opts) if other_seed else None
    for name in ("mu", "bu", "bi", "U", "V", "tau"):
        x, y = a.draws[name], b.draws[name]
        assert x.dtype == y.dtype and x.shape == y.shape
        assert np.array_equal(x, y), f"{method}: {name} differs between identical runs"
    if c is not None:
        assert not np.array_equal(a.draws["U"], c.draws["U"]), f"{method}: seed ignored"
        assert np.all(np.isfinite(c.draws["U"]))
    # predictions (the identifiable quantity) are identical too
    users, items = data.users.ids[:5], data.items.ids[:5]
    pa, pb = a.predict(users, items), b.predict(users, items)
    assert np.array_equal(pa.mean, pb.mean) and np.array_equal(pa.upper, pb.upper)
    return a, c


def test_map_deterministic(data):
    a, c = _check("map", data)
    assert a.n_samples == 1


@pytest.mark.parametrize("solver", ["lbfgs", "adam"])
def test_map_gradient_solvers_deterministic(data, solver):
    _check("map", data, solver=solver, max_iter=30)


def test_gibbs_deterministic(data):
    """Two fits with one seed are identical; the two chains (keys split from the seed)
    differ. (A third fit with another seed costs one more compilation: slow test.)"""
    a, _ = _check("gibbs", data, other_seed=False)
    assert not np.array_equal(a.draws["mu"][0], a.draws["mu"][1])


@pytest.mark.slow
def test_gibbs_other_seed_differs(data):
    _check("gibbs", data)


@pytest.mark.slow
def test_nuts_deterministic(data):
    _check("nuts", data)


@pytest.mark.slow
def test_svi_deterministic(data):
    _check("svi", data)


@pytest.mark.slow
def test_pymc_advi_deterministic(data):
    _check("pymc-advi", data)


def test_estimator_seed_is_the_only_randomness(data):
    """Through the facade: same seed -> identical predictions, another seed differs."""
    import bayesmf

    df = data.to_dataframe()
    fit = lambda s: bayesmf.BayesMF("map", rank=2, seed=s).fit(df)  # noqa: E731
    p1, p2, p3 = (fit(s).predict(df[["user", "item"]]) for s in (3, 3, 4))
    assert p1.equals(p2)
    assert not np.array_equal(p1["mean"].to_numpy(), p3["mean"].to_numpy())
