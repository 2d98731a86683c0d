"""Per-executable XLA options (bayesmf.infer._xla): applied on CPU, never global, a refused
option falls back to XLA's defaults, and the options change speed only (a Gibbs chain with
and without them agrees up to float rounding)."""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmf.data.ratings import Ratings
from bayesmf.infer import _xla, driver
from bayesmf.infer.gibbs import fit_gibbs
from bayesmf.model.spec import ModelSpec


def _lowered():
    return jax.jit(lambda x: jnp.sum(x * x, axis=0)).lower(jnp.ones((64, 8), jnp.float32))


def test_options_reach_the_compiler_and_stay_local(monkeypatch):
    seen = []

    class Spy:
        def __init__(self, low):
            self.low = low

        def compile(self, compiler_options=None):
            seen.append(compiler_options)
            return self.low.compile(compiler_options=compiler_options)

    exe = _xla.compile_lowered(Spy(_lowered()), {"xla_backend_optimization_level": 0})
    np.testing.assert_allclose(np.asarray(exe(jnp.ones((64, 8), jnp.float32))), 64.0)
    assert jax.default_backend() == "cpu"
    assert seen == [{**_xla.CPU_COMPILER_OPTIONS, "xla_backend_optimization_level": 0}]
    assert "ynn" not in os.environ.get("XLA_FLAGS", "")  # nothing global


def test_a_refused_option_falls_back_to_the_defaults(monkeypatch):
    monkeypatch.setattr(_xla, "CPU_COMPILER_OPTIONS", {"xla_no_such_option_at_all": True})
    with pytest.raises(Exception):
        _lowered().compile(compiler_options={"xla_no_such_option_at_all": True})
    exe = _xla.compile_lowered(_lowered())
    np.testing.assert_allclose(np.asarray(exe(jnp.full((64, 8), 2.0, jnp.float32))), 256.0)


def test_gibbs_chain_with_and_without_the_options_agree(monkeypatch):
    rng = np.random.default_rng(0)
    u, i = np.nonzero(rng.random((40, 30)) < 0.4)
    r = 3 + rng.normal(size=len(u))
    train = Ratings.from_arrays(u, i, r)
    kw = dict(seed=3, num_warmup=0, num_samples=4)
    a = fit_gibbs(train, ModelSpec(rank=3), **kw)
    monkeypatch.setattr(_xla, "CPU_COMPILER_OPTIONS", {})
    driver._COMPILED.clear()
    b = fit_gibbs(train, ModelSpec(rank=3), **kw)
    for n in ("mu", "bu", "bi", "U", "V", "tau"):
        np.testing.assert_allclose(a.draws[n], b.draws[n], rtol=2e-3, atol=2e-4, err_msg=n)
