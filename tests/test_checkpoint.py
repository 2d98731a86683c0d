"""Checkpoint/resume: killed runs resume to bit-identical draws; mismatches fail clearly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

import _ckpt_toy as toy
from bayesmf.errors import MemoryLimitError, ModelFileError, SpecError
from bayesmf.infer import checkpoint as ck

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def reference():
    """The uninterrupted run: one chunk, no checkpoint."""
    res = toy.run(None, every=None)
    return res


def _same(a: dict, b: dict):
    assert set(a) == set(b)
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), f"{k} differs"


def test_reference_shape(reference):
    kept = ck.kept_iterations(toy.N_ITER, toy.WARMUP, toy.THIN)
    assert kept.tolist() == list(range(10, 60, 2))
    d = reference.draws
    assert d["x"].shape == (25, 2, 3) and d["x"].dtype == np.float32
    # output row j is the state after iteration kept[j] (counter = t + 1): no gaps/dups
    assert d["i"].tolist() == (kept + 1).tolist()
    assert int(reference.state.i) == toy.N_ITER


@pytest.mark.parametrize("every", [1, 7])
def test_draws_do_not_depend_on_chunking(reference, every, tmp_path):
    res = toy.run(tmp_path / "c.npz", every=every)
    _same(reference.draws, res.draws)
    assert res.chunks_run == -(-toy.N_ITER // every)


def test_killed_subprocess_resumes_bit_identical(reference, tmp_path):
    ckpt = tmp_path / "run.ckpt"
    out = tmp_path / "out.npz"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(HERE)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    script = str(HERE / "_ckpt_toy.py")
    proc = subprocess.Popen([sys.executable, script, str(ckpt), str(out), "--sleep", "1.0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while not ckpt.exists():
            assert proc.poll() is None, proc.stdout.read().decode()
            assert time.time() < deadline, "no checkpoint written within 120 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    assert not out.exists()
    info = ck.load_checkpoint(ckpt).info
    assert 0 < info["iteration"] < toy.N_ITER  # really killed mid-run
    res = toy.run(ckpt, resume=True)  # resume in this process (a fresh one works alike)
    assert res.resumed_at == info["iteration"]
    assert res.chunks_run == (toy.N_ITER - info["iteration"]) // toy.EVERY
    _same(reference.draws, res.draws)


class _Boom(Exception):
    pass


def _crash_after(n_chunks):
    def on_chunk(t, n):
        if t >= n_chunks * toy.EVERY:
            raise _Boom

    return on_chunk


def test_in_process_interrupt_and_resume(reference, tmp_path):
    path = tmp_path / "c.npz"
    with pytest.raises(_Boom):
        ck.run_chunked(toy.CHUNK, toy.init(), jax.random.PRNGKey(0), toy.N_ITER,
                       every=toy.EVERY, checkpoint_path=path, warmup=toy.WARMUP,
                       thin=toy.THIN, fingerprint=ck.fingerprint(toy.DATA, {"rho": toy.RHO}),
                       on_chunk=_crash_after(3))
    res = toy.run(path, resume=True)
    assert res.resumed_at == 30 and res.chunks_run == 3
    _same(reference.draws, res.draws)
    assert np.array_equal(np.asarray(res.state.x), np.asarray(reference.state.x))
    # resuming a finished run computes nothing and returns the same draws
    again = toy.run(path, resume=True)
    assert again.chunks_run == 0 and again.resumed_at == toy.N_ITER
    _same(reference.draws, again.draws)


def test_resume_with_another_checkpoint_interval(reference, tmp_path):
    path = tmp_path / "c.npz"
    with pytest.raises(_Boom):
        ck.run_chunked(toy.CHUNK, toy.init(), jax.random.PRNGKey(0), toy.N_ITER, every=20,
                       checkpoint_path=path, warmup=toy.WARMUP, thin=toy.THIN,
                       fingerprint=ck.fingerprint(toy.DATA, {"rho": toy.RHO}),
                       on_chunk=_crash_after(2))
    res = toy.run(path, resume=True, every=7)
    assert res.resumed_at == 20
    _same(reference.draws, res.draws)


def test_orphan_part_from_a_crash_between_writes_is_recomputed(reference, tmp_path):
    path = tmp_path / "c.npz"
    with pytest.raises(_Boom):
        ck.run_chunked(toy.CHUNK, toy.init(), jax.random.PRNGKey(0), toy.N_ITER,
                       every=toy.EVERY, checkpoint_path=path, warmup=toy.WARMUP,
                       thin=toy.THIN, fingerprint=ck.fingerprint(toy.DATA, {"rho": toy.RHO}),
                       on_chunk=_crash_after(2))
    # a kill after the next part was written but before the checkpoint was committed
    orphan = Path(str(path) + ".draws") / "part-000000020-000000030.npz"
    orphan.write_bytes(b"garbage from a killed write")
    res = toy.run(path, resume=True)
    _same(reference.draws, res.draws)


def _interrupted(path, **kw):
    with pytest.raises(_Boom):
        ck.run_chunked(toy.CHUNK, toy.init(), jax.random.PRNGKey(0), toy.N_ITER,
                       every=toy.EVERY, checkpoint_path=path, warmup=toy.WARMUP,
                       thin=toy.THIN, fingerprint=ck.fingerprint(toy.DATA, {"rho": toy.RHO}),
                       on_chunk=_crash_after(2))


def test_resume_with_different_data_or_settings_fails(tmp_path):
    path = tmp_path / "c.npz"
    _interrupted(path)
    with pytest.raises(SpecError, match="different data, settings or seed"):
        toy.run(path, resume=True, data=toy.DATA + 1)
    with pytest.raises(SpecError, match="different data, settings or seed"):
        toy.run(path, resume=True, seed=1)
    with pytest.raises(SpecError, match="written with n_iter=60, this run has n_iter=80"):
        toy.run(path, resume=True, n_iter=80)
    with pytest.raises(SpecError, match="thin=2, this run has thin=3"):
        toy.run(path, resume=True, thin=3)
    with pytest.raises(ModelFileError, match="state .* is float32\\(2, 3\\), expected "
                                             "float32\\(5, 3\\)"):
        ck.run_chunked(toy.CHUNK, toy.init(chains=5), jax.random.PRNGKey(0), toy.N_ITER,
                       every=toy.EVERY, checkpoint_path=path, resume=True,
                       warmup=toy.WARMUP, thin=toy.THIN,
                       fingerprint=ck.fingerprint(toy.DATA, {"rho": toy.RHO}))


def test_corrupted_or_missing_checkpoints(tmp_path):
    with pytest.raises(ModelFileError, match="no checkpoint to resume from"):
        toy.run(tmp_path / "none.npz", resume=True)
    with pytest.raises(SpecError, match="needs a checkpoint path"):
        toy.run(None, resume=True)
    path = tmp_path / "c.npz"
    _interrupted(path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(ModelFileError, match="not a readable bayesmf checkpoint"):
        toy.run(path, resume=True)
    path.write_bytes(b"")
    with pytest.raises(ModelFileError, match="not a readable bayesmf checkpoint"):
        toy.run(path, resume=True)
    path.write_bytes(good)
    part = sorted(Path(str(path) + ".draws").glob("part-*.npz"))[0]
    raw = bytearray(part.read_bytes())
    raw[-40] ^= 0xFF
    part.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="corrupted \\(checksum mismatch\\)"):
        toy.run(path, resume=True)
    part.unlink()
    with pytest.raises(ModelFileError, match="is missing"):
        toy.run(path, resume=True)
    # another format version
    ck.atomic_save_npz(path, {"__meta__": np.frombuffer(json.dumps(
        {"format": "bayesmf-checkpoint", "version": 99}).encode(), np.uint8),
        "key": np.zeros(2, np.uint32)})
    with pytest.raises(ModelFileError, match="format version 99; this bayesmf reads version 1"):
        toy.run(path, resume=True)


def test_fresh_run_replaces_an_old_checkpoint(reference, tmp_path):
    path = tmp_path / "c.npz"
    _interrupted(path)
    with pytest.warns(UserWarning, match="this run starts afresh and replaces it"):
        res = toy.run(path, every=15)
    assert res.resumed_at is None
    _same(reference.draws, res.draws)
    assert ck.load_checkpoint(path).info["iteration"] == toy.N_ITER
    assert len(list(Path(str(path) + ".draws").glob("part-*"))) == 4


def test_atomic_write_leaves_no_temporary_files(tmp_path):
    toy.run(tmp_path / "c.npz")
    names = sorted(p.name for p in tmp_path.rglob("*"))
    assert not [n for n in names if ".tmp" in n]


def test_memory_limit_on_kept_draws():
    with pytest.raises(MemoryLimitError, match="the 25 kept draws of the sampler"):
        toy.run(None, memory_limit="500B")


def test_typed_key_state_round_trip(tmp_path):
    """A state holding a typed PRNG key (new-style ``jax.random.key``) is restored."""
    def step(key, st):
        k2, sub = jax.random.split(st[0])
        return (k2, st[1] + jax.random.uniform(sub) + jax.random.uniform(key)), None

    chunk = ck.scan_chunk(step, lambda s, i: s[1])
    init = (jax.random.key(3), jax.numpy.zeros(()))
    full = ck.run_chunked(chunk, init, jax.random.key(0), 12)
    path = tmp_path / "k.npz"
    with pytest.raises(_Boom):
        ck.run_chunked(chunk, init, jax.random.key(0), 12, every=5, checkpoint_path=path,
                       on_chunk=lambda t, n: (_ for _ in ()).throw(_Boom()))
    res = ck.run_chunked(chunk, init, jax.random.key(0), 12, every=5, checkpoint_path=path,
                         resume=True)
    assert res.resumed_at == 5
    assert np.array_equal(full.draws, res.draws)


def test_fingerprint_is_canonical_and_sensitive():
    from bayesmf.data.ratings import Ratings
    from bayesmf.model.spec import ModelSpec

    r1 = Ratings.from_arrays([1, 2, 2], ["a", "a", "b"], [3.0, 4.0, 5.0])
    r2 = Ratings.from_arrays([1, 2, 2], ["a", "a", "b"], [3.0, 4.0, 4.5])
    s = ModelSpec(rank=2)
    f = ck.fingerprint(r1, s, {"a": 1, "b": 2.0})
    assert f == ck.fingerprint(r1, ModelSpec(rank=2), {"b": 2.0, "a": 1})
    assert f != ck.fingerprint(r2, s, {"a": 1, "b": 2.0})
    assert f != ck.fingerprint(r1, s.replace(rank=3), {"a": 1, "b": 2.0})
    assert f != ck.fingerprint(r1, s, {"a": 1, "b": 2.5})
    assert ck.fingerprint(np.zeros(3, np.float32)) != ck.fingerprint(np.zeros(3, np.float64))
    assert ck.fingerprint(1) != ck.fingerprint(1.0) != ck.fingerprint("1")
    assert ck.fingerprint(np.zeros(3, np.float32)) != ck.fingerprint(np.zeros(4, np.float32))


@pytest.mark.parametrize("bad, match", [
    (dict(n_iter=0), "n_iter must be an integer >= 1"),
    (dict(every=0), "checkpoint_every must be an integer >= 1"),
    (dict(thin=0), "thin must be an integer >= 1"),
    (dict(warmup=-1), "warmup must be an integer >= 0"),
    (dict(every=2.5), "checkpoint_every must be an integer"),
])
def test_driver_validates_arguments(bad, match):
    kw = dict(n_iter=10, every=5, thin=1, warmup=0) | bad
    with pytest.raises(SpecError, match=match):
        ck.run_chunked(toy.CHUNK, toy.init(), jax.random.PRNGKey(0), kw.pop("n_iter"), **kw)


# ----------------------------------------------------------------------------- Gibbs
@pytest.mark.slow  # two Gibbs compilations (fit_gibbs and the scan chunk)
def test_gibbs_kernel_through_the_driver_matches_fit_gibbs_bit_for_bit(tmp_path):
    """The integration recipe for fit_gibbs: its kernel (BPMFGibbs.init/step, vmapped
    over chains) driven by run_chunked with the chain keys split(PRNGKey(seed), C) gives
    exactly fit_gibbs's draws -- also when the run is interrupted and resumed."""
    gibbs = pytest.importorskip("bayesmf.infer.gibbs")
    from bayesmf.data.ratings import Ratings
    from bayesmf.model.spec import ModelSpec

    rng = np.random.default_rng(0)
    u = np.repeat(np.arange(12), 4)
    i = np.concatenate([rng.choice(9, 4, replace=False) for _ in range(12)])
    r = Ratings.from_arrays(u, i, rng.normal(3, 1, len(u)))
    spec = ModelSpec(rank=2)
    C, S, W, T, seed = 2, 6, 4, 2, 5
    post = gibbs.fit_gibbs(r, spec, seed=seed, num_samples=S, num_warmup=W, num_chains=C,
                           thin=T)
    kern = gibbs.BPMFGibbs(r, spec)
    keys = jax.random.split(jax.random.PRNGKey(seed), C)
    state = jax.vmap(lambda kk: kern.init(jax.random.fold_in(kk, 2**31 - 1)))(keys)
    names = ("mu", "bu", "bi", "U", "V", "tau", "Lambda_U", "lambda_bi")
    chunk = ck.scan_chunk(lambda k, s: jax.vmap(kern.step)(k, s),
                          lambda s, info: {n: getattr(s, n) for n in names})
    n_iter = W + (S - 1) * T + 1
    path = tmp_path / "gibbs.ckpt"
    fp = ck.fingerprint(r, spec, {"num_samples": S, "num_warmup": W, "thin": T})
    with pytest.raises(_Boom):
        ck.run_chunked(chunk, state, keys, n_iter, every=3, checkpoint_path=path,
                       warmup=W, thin=T, fingerprint=fp,
                       on_chunk=lambda t, n: (_ for _ in ()).throw(_Boom()) if t >= 6 else 0)
    res = ck.run_chunked(chunk, state, keys, n_iter, every=3, checkpoint_path=path,
                         resume=True, warmup=W, thin=T, fingerprint=fp)
    assert res.resumed_at == 6
    for n in names:
        got = np.swapaxes(res.draws[n], 0, 1)  # (kept, C, ...) -> (C, kept, ...)
        assert got.shape == post.draws[n].shape
        assert np.array_equal(got, post.draws[n]), n


# ----------------------------------------------------------------------------- NUTS
@pytest.mark.slow  # a NumPyro NUTS compilation (~10-20 s on 2 cores)
def test_numpyro_nuts_through_the_driver_resumes_bit_identical(tmp_path):
    """The integration recipe for NUTS: NumPyro's functional HMC API gives a pure kernel
    (``init_kernel`` / ``sample_kernel``; warm-up adaptation happens inside
    ``sample_kernel`` while ``state.i < num_warmup``). Feeding the driver's per-iteration
    key in as ``state.rng_key`` makes it a ``step(key, state)`` for run_chunked: a run
    interrupted after warm-up and resumed equals the uninterrupted run bit for bit."""
    numpyro = pytest.importorskip("numpyro")
    import jax.numpy as jnp
    import numpyro.distributions as dist
    from numpyro.infer.hmc import hmc
    from numpyro.infer.util import initialize_model

    def model(y):
        m = numpyro.sample("m", dist.Normal(0, 10))
        s = numpyro.sample("s", dist.HalfNormal(2))
        numpyro.sample("y", dist.Normal(m, s), obs=y)

    y = jnp.asarray([1.2, 0.4, 2.2, 1.7, 0.9])
    info = initialize_model(jax.random.PRNGKey(0), model, model_args=(y,))
    init_kernel, sample_kernel = hmc(info.potential_fn, algo="NUTS")
    W, S = 20, 30
    st0 = init_kernel(info.param_info, num_warmup=W, rng_key=jax.random.PRNGKey(1))

    def step(key, st):
        return sample_kernel(st._replace(rng_key=key)), None

    chunk = ck.scan_chunk(step, lambda st, _: st.z)
    full = ck.run_chunked(chunk, st0, jax.random.PRNGKey(2), W + S, warmup=W)
    path = tmp_path / "nuts.ckpt"
    with pytest.raises(_Boom):
        ck.run_chunked(chunk, st0, jax.random.PRNGKey(2), W + S, every=10, warmup=W,
                       checkpoint_path=path,
                       on_chunk=lambda t, n: (_ for _ in ()).throw(_Boom()) if t >= 30 else 0)
    res = ck.run_chunked(chunk, st0, jax.random.PRNGKey(2), W + S, every=10, warmup=W,
                         checkpoint_path=path, resume=True)
    assert res.resumed_at == 30 and len(res.kept) == S
    for k in ("m", "s"):
        assert np.array_equal(full.draws[k], res.draws[k]), k
    assert float(np.std(full.draws["m"])) > 0  # it really moved
