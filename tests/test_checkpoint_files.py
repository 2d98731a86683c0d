"""Checkpoint file writes leave no temporary files behind: an exception during a write
removes its temporary file, and the temporary files of writes that were killed outright
(no ``finally`` ran) are removed by the next save, also after a resume."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import _ckpt_toy as toy
from bayesmf.infer import checkpoint as ck


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".tmp" in p.name)


def test_failed_write_removes_its_temporary_file(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    ck.atomic_save_npz(path, {"a": np.arange(3)})

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ck.np, "savez", boom)
    with pytest.raises(OSError, match="No space left"):
        ck.atomic_save_npz(path, {"a": np.arange(5)})
    assert _temps(tmp_path) == []
    with np.load(path) as z:  # the previous file is untouched
        assert z["a"].tolist() == [0, 1, 2]


def test_stale_temporaries_of_killed_writes_are_removed_on_the_next_save(tmp_path):
    dead = _dead_pid()
    path = tmp_path / "c.npz"
    stale = tmp_path / f".c.npz.tmp{dead}"
    stale.write_bytes(b"half an archive")
    mine = tmp_path / f".c.npz.tmp{os.getpid()}"  # an earlier run, same pid
    mine.write_bytes(b"half an archive")
    live = tmp_path / f".c.npz.tmp{os.getppid()}"  # a running writer
    live.write_bytes(b"being written")
    other = tmp_path / f".other.npz.tmp{dead}"  # another file's: not ours to judge
    other.write_bytes(b"x")
    ck.atomic_save_npz(path, {"a": np.arange(3)})
    assert not stale.exists() and not mine.exists()
    assert live.exists() and other.exists()


def test_resume_cleans_the_parts_folder(tmp_path):
    """A run killed while writing a draw part leaves ``.part-...npz.tmp<pid>`` in the
    parts folder; the resumed run's first save removes it and the draws are unchanged."""
    path = tmp_path / "c.npz"

    class Stop(Exception):
        pass

    def crash(t, n):
        if t >= 20:
            raise Stop

    with pytest.raises(Stop):
        ck.run_chunked(
            toy.CHUNK, toy.init(), jax.random.PRNGKey(0), toy.N_ITER,
            every=toy.EVERY, checkpoint_path=path, warmup=toy.WARMUP, thin=toy.THIN,
            fingerprint=ck.fingerprint(toy.DATA, {"rho": toy.RHO}), on_chunk=crash)
    pdir = Path(str(path) + ".draws")
    dead = _dead_pid()
    (pdir / f".part-000000020-000000030.npz.tmp{dead}").write_bytes(b"torn")
    (tmp_path / f".c.npz.tmp{dead}").write_bytes(b"torn")
    res = toy.run(path, resume=True)
    assert res.resumed_at == 20
    assert _temps(tmp_path) == []
    assert np.array_equal(res.draws["x"], toy.run(None, every=None).draws["x"])
