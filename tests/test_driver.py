"""The one chain driver (bayesmf.infer.driver): kept draws independent of how the run is
cut into calls, compiled code reused for other run lengths, chain methods agree, the
persistent compilation cache reused by a second process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bayesmf.infer import driver
from bayesmf.infer.driver import Program, run_chains


def _ar1_program(cache_key=("ar1-test",)):
    """x_{t+1} = 0.5 x_t + N(0, 1) per chain (vector of 3); info: the squared norm."""

    def step(data, key, x):
        x = data * x + jax.random.normal(key, x.shape, x.dtype)
        return x, {"sq": jnp.sum(x * x)}

    def extract(data, x, info):
        return {"x": x, "sq": info["sq"]}

    def stream(pairs, x):
        return x[pairs[0]], jnp.sum(x)

    return Program("ar1", step, extract, stream, cache_key, None, "it")


def _truth(seed_keys, x0, n_iter, warmup, thin, n_kept):
    """The same chains by a plain Python loop with the driver's key convention."""
    out = []
    for c in range(seed_keys.shape[0]):
        x, kept = x0[c], []
        for t in range(n_iter):
            x = 0.5 * x + jax.random.normal(jax.random.fold_in(seed_keys[c], t), x.shape,
                                            x.dtype)
            if t >= warmup and (t - warmup) % thin == 0 and len(kept) < n_kept:
                kept.append(np.asarray(x))
        out.append(np.stack(kept))
    return np.stack(out)


def _run(S, W, T, C=2, **kw):
    keys = jax.random.split(jax.random.PRNGKey(3), C)
    x0 = jnp.arange(C * 3, dtype=jnp.float32).reshape(C, 3)
    prog = kw.pop("program", None) or _ar1_program()
    # (the state is donated to the compiled call: pass a copy)
    run = run_chains(prog, jnp.float32(0.5), jnp.array(x0), keys, num_samples=S,
                     num_warmup=W, thin=T, **kw)
    return run, _truth(keys, x0, W + (S - 1) * T + 1, W, T, S)


def test_kept_draws_match_a_plain_loop_and_do_not_depend_on_the_call_cuts(monkeypatch):
    ref, truth = _run(7, 4, 2)
    np.testing.assert_allclose(ref.draws["x"], truth, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ref.draws["sq"], (truth ** 2).sum(-1), rtol=1e-4)
    monkeypatch.setattr(driver, "slots_for", lambda *a, **k: 2)  # at most 2 draws a call
    cut, _ = _run(7, 4, 2, progress_every=3, program=_ar1_program(("ar1-test", "cut")))
    assert cut.slots == 2
    np.testing.assert_array_equal(cut.draws["x"], ref.draws["x"])


def test_other_run_lengths_reuse_the_compiled_code():
    first, _ = _run(5, 3, 1, program=_ar1_program(("ar1-test", "lengths")))
    second, truth = _run(9, 0, 3, program=_ar1_program(("ar1-test", "lengths")))
    assert second.compile_cached and second.slots == first.slots
    np.testing.assert_allclose(second.draws["x"], truth, rtol=1e-5, atol=1e-5)


def test_sequential_and_vectorized_chains_agree_and_stream():
    pairs = (jnp.asarray([0, 2]), jnp.asarray([0, 0]))
    vec, truth = _run(6, 2, 1, pairs=pairs)
    seq, _ = _run(6, 2, 1, pairs=pairs, chain_method="sequential")
    np.testing.assert_allclose(seq.draws["x"], vec.draws["x"], rtol=1e-6)
    n, mean, m2, nv = seq.stream
    np.testing.assert_array_equal(n, [6, 6])
    np.testing.assert_allclose(mean, truth[:, :, [0, 2]].mean(1), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(m2 / n[:, None], truth[:, :, [0, 2]].var(1), rtol=1e-3,
                               atol=1e-5)
    np.testing.assert_allclose(nv, truth.sum(-1).mean(1), rtol=1e-4, atol=1e-4)


_SCRIPT = """
import json, numpy as np, jax, jax.numpy as jnp
import sys; sys.path.insert(0, {here!r})
from test_driver import _run
run, truth = _run(8, 5, 1)
print(json.dumps({{"x": np.asarray(run.draws["x"]).tolist()}}))
"""


def test_persistent_compilation_cache_is_reused_by_a_second_process(tmp_path):
    cache = tmp_path / "jaxcache"
    env = {**os.environ, "BAYESMF_COMPILE_CACHE_DIR": str(cache),
           "BAYESMF_COMPILE_CACHE_MIN_SECONDS": "0", "JAX_PLATFORMS": "cpu"}
    env.pop("BAYESMF_COMPILE_CACHE", None)
    code = _SCRIPT.format(here=os.path.dirname(__file__))

    def once():
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        return json.loads(p.stdout.strip().splitlines()[-1])["x"]

    first = once()
    entries = sorted(os.listdir(cache))
    assert any(e.startswith("jit_advance") for e in entries), entries
    second = once()
    assert sorted(os.listdir(cache)) == entries  # a hit: nothing new was compiled
    assert first == second


def test_cache_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(driver, "_PERSISTENT", {"done": False, "dir": None})
    monkeypatch.setenv("BAYESMF_COMPILE_CACHE", "0")
    assert driver.enable_persistent_cache() is None


def test_streaming_needs_a_program_that_streams():
    from bayesmf.errors import SpecError

    prog = _ar1_program()._replace(stream=None)
    with pytest.raises(SpecError, match="streamed"):
        _run(3, 1, 1, program=prog, pairs=(jnp.asarray([0]), jnp.asarray([0])))
