"""Checkpoint/resume of the samplers themselves (fit_gibbs, fit_nuts, the estimator, the CLI):
a run killed mid-way resumes to exactly the draws of an uninterrupted run."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import bayesmf
from bayesmf.data import Ratings
from bayesmf.errors import ModelFileError, SpecError
from bayesmf.infer import checkpoint as ck
from bayesmf.testing.interrupt import killed_after_checkpoint
from bayesmf.infer.gibbs import fit_gibbs
from bayesmf.model.spec import ModelSpec

SETTINGS = dict(num_samples=12, num_warmup=8, num_chains=2, thin=2)  # 31 sweeps


def _frame(seed=0, n_u=30, n_i=20, k=2):
    rng = np.random.default_rng(seed)
    U, V = rng.normal(size=(n_u, k)), rng.normal(size=(n_i, k))
    uu, ii = np.nonzero(rng.random((n_u, n_i)) < 0.5)
    r = 3 + np.sum(U[uu] * V[ii], 1) + rng.normal(0, 0.3, len(uu))
    return pd.DataFrame({"user": uu, "item": ii, "rating": r})


@pytest.fixture(scope="module")
def problem():
    train = Ratings.from_dataframe(_frame())
    spec = ModelSpec(rank=2)
    ref = fit_gibbs(train, spec, seed=5, **SETTINGS)
    return train, spec, ref


def _same_draws(a, b):
    assert set(a.draws) == set(b.draws)
    for n in a.draws:
        np.testing.assert_array_equal(np.asarray(a.draws[n]), np.asarray(b.draws[n]), err_msg=n)


def test_checkpointing_does_not_change_the_draws(problem, tmp_path):
    train, spec, ref = problem
    post = fit_gibbs(train, spec, seed=5, checkpoint=tmp_path / "c.npz", checkpoint_every=4,
                     **SETTINGS)
    _same_draws(ref, post)
    info = ck.load_checkpoint(tmp_path / "c.npz").info
    assert info["iteration"] == info["n_iter"] == 8 + 11 * 2 + 1
    assert post.attrs["checkpoint"]["resumed_at"] is None


def test_interrupted_run_resumes_bit_identical(problem, tmp_path):
    train, spec, ref = problem
    path = tmp_path / "c.npz"
    with killed_after_checkpoint(3) as calls, pytest.raises(KeyboardInterrupt):
        fit_gibbs(train, spec, seed=5, checkpoint=path, checkpoint_every=5, **SETTINGS)
    assert calls == [5, 10, 15]
    post = fit_gibbs(train, spec, seed=5, checkpoint=path, checkpoint_every=5, resume=True,
                     **SETTINGS)
    assert post.attrs["checkpoint"]["resumed_at"] == 15
    _same_draws(ref, post)
    assert post.draws["mu"].shape == ref.draws["mu"].shape == (2, 12)


def test_streamed_predictions_survive_a_resume(problem, tmp_path):
    train, spec, _ = problem
    pairs = (np.array([0, 1, 2, 3]), np.array([3, 2, 1, 0]))
    ref = fit_gibbs(train, spec, seed=1, predict_pairs=pairs, store_draws=False, **SETTINGS)
    path = tmp_path / "s.npz"
    with killed_after_checkpoint(1), pytest.raises(KeyboardInterrupt):
        fit_gibbs(train, spec, seed=1, predict_pairs=pairs, store_draws=False,
                  checkpoint=path, checkpoint_every=7, **SETTINGS)
    post = fit_gibbs(train, spec, seed=1, predict_pairs=pairs, store_draws=False,
                     checkpoint=path, checkpoint_every=7, resume=True, **SETTINGS)
    assert post.attrs["streamed_predictions"] == ref.attrs["streamed_predictions"]
    assert post.attrs["traces"] == ref.attrs["traces"]


def test_resume_refuses_other_data_seed_or_settings(problem, tmp_path):
    train, spec, _ = problem
    path = tmp_path / "c.npz"
    fit_gibbs(train, spec, seed=5, checkpoint=path, checkpoint_every=10, **SETTINGS)
    other = Ratings.from_dataframe(_frame(seed=1))
    with pytest.raises(SpecError, match="fingerprint"):
        fit_gibbs(other, spec, seed=5, checkpoint=path, resume=True, **SETTINGS)
    with pytest.raises(SpecError, match="fingerprint"):
        fit_gibbs(train, spec, seed=6, checkpoint=path, resume=True, **SETTINGS)
    with pytest.raises(SpecError, match="n_iter"):
        fit_gibbs(train, spec, seed=5, checkpoint=path, resume=True,
                  **{**SETTINGS, "num_samples": 13})
    with pytest.raises(SpecError, match="needs checkpoint"):
        fit_gibbs(train, spec, seed=5, resume=True, **SETTINGS)
    with pytest.raises(ModelFileError, match="no checkpoint"):
        fit_gibbs(train, spec, seed=5, checkpoint=tmp_path / "none.npz", resume=True,
                  **SETTINGS)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(ModelFileError):
        fit_gibbs(train, spec, seed=5, checkpoint=path, resume=True, **SETTINGS)


@pytest.mark.parametrize("option,value,recorded", [
    ("low_width", 16, {"user": 16, "item": 16}),
    ("row_block", 1, 1),
])
def test_other_row_draws_resume_bit_identical_and_refuse_the_default(problem, tmp_path,
                                                                      option, value,
                                                                      recorded):
    """Rows drawn another way keep the resume guarantee: through the Woodbury identity
    (``low_width=16``: most rows here, the others by their Cholesky factor in the same
    sweep) or by subspace Gibbs (``row_block=1``: bias and the two factors one after
    another). A resume with the default row draws (other random numbers) is refused by
    the fingerprint."""
    train, spec, ref_default = problem
    kw = dict(SETTINGS, **{option: value})
    ref = fit_gibbs(train, spec, seed=5, **kw)
    assert ref.attrs["settings"][option] == recorded
    assert not np.array_equal(np.asarray(ref.draws["U"]), np.asarray(ref_default.draws["U"]))
    path = tmp_path / "w.npz"
    with killed_after_checkpoint(2), pytest.raises(KeyboardInterrupt):
        fit_gibbs(train, spec, seed=5, checkpoint=path, checkpoint_every=5, **kw)
    with pytest.raises(SpecError, match="fingerprint"):
        fit_gibbs(train, spec, seed=5, checkpoint=path, resume=True, **SETTINGS)
    post = fit_gibbs(train, spec, seed=5, checkpoint=path, checkpoint_every=5, resume=True,
                     **kw)
    assert post.attrs["checkpoint"]["resumed_at"] == 10
    _same_draws(ref, post)


_SLOW_SAVES = """
import sys, time
import bayesmf.infer.checkpoint as c
real = c.save_checkpoint
def slow(*a, **kw):
    real(*a, **kw)
    print("checkpoint", kw["iteration"], flush=True)
    time.sleep(2.0)
c.save_checkpoint = slow
from bayesmf.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow  # 27 s warm; in-process resume: test_interrupted_run_resumes_bit_identical
def test_cli_run_killed_mid_way_resumes_to_the_same_model(tmp_path):
    """A real SIGKILL of ``bayesmf fit --checkpoint`` (slowed down so the kill lands
    mid-run), then ``bayesmf fit --resume``: the model equals an uninterrupted fit's."""
    _frame().to_csv(tmp_path / "train.csv", index=False)
    args = ["fit", str(tmp_path / "train.csv"), "--method", "gibbs", "--rank", "2",
            "--seed", "5", "--samples", "12", "--warmup", "8", "--chains", "2",
            "--thin", "2"]
    ckpt = tmp_path / "run.ckpt"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_SAVES, *args, "--checkpoint",
                             str(ckpt), "--checkpoint-every", "5", "--out",
                             str(tmp_path / "killed.nc")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    deadline = time.time() + 240
    try:
        for line in proc.stdout:
            if line.startswith("checkpoint"):
                seen.append(int(line.split()[1]))
                if len(seen) == 2:
                    proc.kill()
                    break
            if time.time() > deadline:
                break
    finally:
        proc.kill()
        proc.wait()
    assert seen == [5, 10], seen
    assert not (tmp_path / "killed.nc").exists()
    assert 0 < ck.load_checkpoint(ckpt).info["iteration"] < 31

    def run(*a):
        p = subprocess.run([sys.executable, "-m", "bayesmf.cli", *a], capture_output=True,
                           text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return p

    run("fit", "--resume", str(ckpt))
    run(*args, "--out", str(tmp_path / "ref.nc"))
    resumed = bayesmf.load(tmp_path / "killed.nc").posterior
    ref = bayesmf.load(tmp_path / "ref.nc").posterior
    _same_draws(ref, resumed)
    assert resumed.attrs["checkpoint"]["resumed_at"] == 10
    side = json.loads((tmp_path / "run.ckpt.cli.json").read_text())
    assert side["method"] == "gibbs"


# ----------------------------------------------------------------------------- NUTS
NUTS_SETTINGS = dict(num_warmup=20, num_samples=20, num_chains=2, max_tree_depth=4)


# make test-all (~25 s): the shared driver's checkpoint / resume stays in make test through
# the Gibbs and HPF resume tests, NUTS through the driver in the conformance suites
@pytest.mark.slow
def test_nuts_interrupted_run_resumes_bit_identical(tmp_path):
    """fit_nuts runs the NumPyro NUTS kernel through the one chain driver: a run
    interrupted after the warm-up resumes to the draws of the uninterrupted run, and
    checkpointing does not change the draws."""
    from bayesmf.infer.nuts import fit_nuts

    train = Ratings.from_dataframe(_frame(seed=3, n_u=8, n_i=6))
    spec = ModelSpec(rank=1)
    ref = fit_nuts(train, spec, seed=2, checkpoint=tmp_path / "ref.ckpt",
                   checkpoint_every=10, **NUTS_SETTINGS)
    assert "kernel" in ref.native and ref.draws["U"].shape == (2, 20, 8, 1)
    plain = fit_nuts(train, spec, seed=2, **NUTS_SETTINGS)
    for n in ref.draws:
        np.testing.assert_array_equal(plain.draws[n], ref.draws[n], err_msg=n)
    assert ref.sample_stats["diverging"].shape == (2, 20)
    assert float(np.std(ref.draws["mu"])) > 0
    path = tmp_path / "run.ckpt"
    with killed_after_checkpoint(iteration=30), pytest.raises(KeyboardInterrupt):
        fit_nuts(train, spec, seed=2, checkpoint=path, checkpoint_every=10, **NUTS_SETTINGS)
    post = fit_nuts(train, spec, seed=2, checkpoint=path, checkpoint_every=10, resume=True,
                    **NUTS_SETTINGS)
    assert post.attrs["checkpoint"]["resumed_at"] == 30
    _same_draws(ref, post)
    for n in ref.sample_stats:
        np.testing.assert_array_equal(ref.sample_stats[n], post.sample_stats[n], err_msg=n)
    with pytest.raises(SpecError, match="fingerprint"):
        fit_nuts(train, spec, seed=3, checkpoint=path, checkpoint_every=10, resume=True,
                 **NUTS_SETTINGS)


def test_gibbs_refuses_draw_buffers_beyond_the_memory_limit(problem):
    from bayesmf.errors import MemoryLimitError

    train, spec, _ = problem
    with pytest.raises(MemoryLimitError, match="Gibbs draw buffers.*store_draws=False"):
        fit_gibbs(train, spec, seed=0, memory_limit="10KB", **SETTINGS)


def test_memory_limit_is_checked_before_the_sampler_compiles(problem, monkeypatch):
    """The kept draws are checked against the limit before the compile (it came after
    it: seconds of compilation, then the refusal)."""
    from bayesmf.errors import MemoryLimitError
    from bayesmf.infer import driver

    def no_compile(*a, **k):
        raise AssertionError("compiled before the memory check")

    monkeypatch.setattr(driver, "_compile", no_compile)
    train, spec, _ = problem
    with pytest.raises(MemoryLimitError, match="Gibbs draw buffers.*memory_limit="):
        fit_gibbs(train, spec, seed=0, memory_limit="10KB", **SETTINGS)


def test_checkpoint_path_mistakes_are_clear(problem, tmp_path):
    """A folder as checkpoint path, checkpoint_every without a checkpoint (silently
    ignored before) and a fresh run over an existing checkpoint (silently replaced)."""
    train, spec, ref = problem
    with pytest.raises(SpecError, match="is a folder; give a file path in it"):
        fit_gibbs(train, spec, seed=5, checkpoint=tmp_path, **SETTINGS)
    with pytest.raises(SpecError, match="checkpoint_every applies with checkpoint=PATH"):
        fit_gibbs(train, spec, seed=5, checkpoint_every=4, **SETTINGS)
    path = tmp_path / "c.npz"
    fit_gibbs(train, spec, seed=5, checkpoint=path, checkpoint_every=4, **SETTINGS)
    with pytest.warns(UserWarning, match="exists and resume=False: this run starts afresh"):
        again = fit_gibbs(train, spec, seed=5, checkpoint=path, checkpoint_every=4,
                          **SETTINGS)
    _same_draws(ref, again)
