r"""Checkpoint and resume for scan-based samplers.

A sampler written as a pure kernel ``step(key, state) -> (state, info)`` runs through the
driver (:mod:`bayesmf.infer.driver`: :func:`~bayesmf.infer.driver.run_chains` for the
package's samplers, :func:`~bayesmf.infer.driver.run_chunked` for custom scan kernels;
both still importable from here) in **chunks** of iterations; at every
``checkpoint_every`` iterations the driver writes a checkpoint with this module's file
functions. A run that is killed (SIGKILL, OOM, pre-emption) and restarted with
``resume=True`` continues from the last checkpoint and ends with exactly the draws of an
uninterrupted run: the same number, no duplicates or gaps, **bit-identical** values.

Determinism
-----------
Iteration ``t`` (0-based, counting warm-up) always uses the key
``jax.random.fold_in(key, t)`` (:func:`iteration_keys`), never a key that depends on when
or how often the run was interrupted. The draws therefore depend only on the initial
state, the base key and ``n_iter`` -- not on ``every``, nor on whether or where the run
was checkpointed. (A kernel with several chains splits its per-iteration key itself.)

File format (version :data:`CHECKPOINT_VERSION`)
------------------------------------------------
``PATH`` is an ``.npz`` archive holding

* ``__meta__``: JSON -- ``format="bayesmf-checkpoint"``, ``version``, ``iteration`` (the
  number of completed iterations), ``n_iter``, ``warmup``, ``thin``, ``fingerprint`` (of
  data and settings), ``parts`` (the draw files, in order, with their row counts and
  SHA-256), the state's leaf names, and free ``meta``;
* ``key``: the base PRNG key (raw ``uint32`` key data);
* ``state/<j>``: the leaves of the sampler state (any pytree of arrays, restored into the
  structure of the initial ``state`` passed to :func:`run_chunked`).

The kept draws are **appended per chunk** as separate files
``PATH.draws/part-<first>-<end>.npz`` (one row per kept iteration, leaves ``d/<j>``), so a
checkpoint never rewrites earlier draws. Every file is written to a temporary name in the
same folder, flushed and fsync'ed, then moved into place with :func:`os.replace` (atomic
on POSIX and Windows): a kill at any moment leaves either the previous checkpoint or the
new one, never a torn file. The draw part is written before ``PATH``, and ``PATH`` lists
the parts it covers; a part written by a run killed before it could commit ``PATH`` is
simply recomputed (identically) on resume.

Resuming checks the format version, the fingerprint (data + settings + key; a resume
with different data, a different seed or different settings fails with a
:class:`~bayesmf.errors.SpecError` naming the mismatch), ``n_iter``/``warmup``/``thin``,
the state's structure, shapes and dtypes, and each part's checksum (a corrupted or
truncated checkpoint raises :class:`~bayesmf.errors.ModelFileError`).
"""

# Using it in a sampler (both recipes are tested in tests/test_checkpoint.py):
#
# * Gibbs: ``keys = split(PRNGKey(seed), C)``; ``state = vmap(lambda k:
#   kern.init(fold_in(k, 2**31 - 1)))(keys)``; ``chunk = scan_chunk(lambda k, s:
#   vmap(kern.step)(k, s), extract)``; ``run_chunked(chunk, state, keys, n_iter,
#   warmup=W, thin=T, ...)`` returns draws ``(kept, C, ...)`` identical to fit_gibbs's.
# * NUTS: NumPyro's functional API, ``init_kernel, sample_kernel = hmc(potential_fn,
#   algo="NUTS")``; ``step = lambda key, st: (sample_kernel(st._replace(rng_key=key)),
#   None)`` (warm-up adaptation lives in the state, so it checkpoints too).

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from bayesmf.errors import ModelFileError, SpecError

__all__ = ["CHECKPOINT_VERSION", "fingerprint", "iteration_keys", "save_checkpoint",
           "load_checkpoint", "kept_iterations", "atomic_save_npz", "restore_state"]

CHECKPOINT_VERSION = 1
_FORMAT = "bayesmf-checkpoint"


# ----------------------------------------------------------------------------- fingerprint
def _feed(h, obj) -> None:
    """Canonical, type-tagged serialisation of ``obj`` into the hash ``h``."""
    if obj is None:
        h.update(b"N")
    elif isinstance(obj, bool):
        h.update(b"B1" if obj else b"B0")
    elif isinstance(obj, (int, np.integer)):
        h.update(b"I" + str(int(obj)).encode())
    elif isinstance(obj, (float, np.floating)):
        h.update(b"F" + float(obj).hex().encode())
    elif isinstance(obj, str):
        b = obj.encode()
        h.update(b"S%d:" % len(b) + b)
    elif isinstance(obj, bytes):
        h.update(b"Y%d:" % len(obj) + obj)
    elif isinstance(obj, dict):
        h.update(b"D%d" % len(obj))
        for k in sorted(obj, key=str):
            _feed(h, str(k))
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        h.update(b"L%d" % len(obj))
        for v in obj:
            _feed(h, v)
    elif hasattr(obj, "_fields"):  # NamedTuple
        _feed(h, {"__type__": type(obj).__name__, **obj._asdict()})
    elif is_dataclass(obj) and not isinstance(obj, type):
        _feed(h, {"__type__": type(obj).__name__, **asdict(obj)})
    elif hasattr(obj, "user") and hasattr(obj, "rating") and hasattr(obj, "users"):
        # a Ratings container: indices, values and both vocabularies
        _feed(h, {"user": obj.user, "item": obj.item, "rating": obj.rating,
                  "users": obj.users.ids, "items": obj.items.ids})
    else:
        a = _host(obj)
        if a.dtype == object:
            _feed(h, [str(x) for x in a.ravel()])
            return
        a = np.ascontiguousarray(a)
        h.update(b"A" + a.dtype.str.encode() + repr(a.shape).encode())
        h.update(a.tobytes())


def fingerprint(*objs) -> str:
    """SHA-256 (hex) of data and settings: arrays (dtype, shape, bytes), ``Ratings``,
    dicts, NamedTuples, dataclasses (``ModelSpec``), numbers and strings. Equal inputs
    give equal fingerprints across processes and platforms."""
    h = hashlib.sha256()
    _feed(h, list(objs))
    return h.hexdigest()


_fingerprint = fingerprint  # run_chunked has an argument of the same name


# ----------------------------------------------------------------------------- keys
def _is_typed_key(x) -> bool:
    import jax

    dt = getattr(x, "dtype", None)
    return dt is not None and jax.dtypes.issubdtype(dt, jax.dtypes.prng_key)


def _host(x) -> np.ndarray:
    """A leaf as a numpy array (typed PRNG keys become their raw uint32 data)."""
    if _is_typed_key(x):
        import jax

        return np.asarray(jax.random.key_data(x))
    return np.asarray(x)


def iteration_keys(key, start: int, n: int):
    """Keys of iterations ``start .. start+n-1``: ``fold_in(key, t)`` stacked on axis 0.

    ``key`` may also be a batch of keys, one per chain (raw ``(C, 2)`` or typed
    ``(C,)``, e.g. ``split(PRNGKey(seed), C)``): the result is then ``(n, C, ...)`` with
    ``keys[t - start, c] = fold_in(key[c], t)``, the convention of
    :func:`bayesmf.infer.gibbs.fit_gibbs`."""
    import jax
    import jax.numpy as jnp

    ts = jnp.arange(int(start), int(start) + int(n), dtype=jnp.uint32)
    batched = key.ndim >= (1 if _is_typed_key(key) else 2)
    if batched:
        return jax.vmap(lambda t: jax.vmap(lambda k: jax.random.fold_in(k, t))(key))(ts)
    return jax.vmap(lambda t: jax.random.fold_in(key, t))(ts)


def kept_iterations(n_iter: int, warmup: int = 0, thin: int = 1) -> np.ndarray:
    """Iterations whose output is kept: ``t >= warmup`` and ``(t - warmup) % thin == 0``."""
    t = np.arange(int(n_iter))
    return t[(t >= warmup) & ((t - warmup) % thin == 0)]


# ----------------------------------------------------------------------------- file io
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


_TMP_TAG = ".tmp"


def _tmp_name(path: Path) -> Path:
    """The temporary name a write of ``path`` goes through: ``.<name>.tmp<pid>`` in the
    same folder (so :func:`os.replace` never crosses a file system)."""
    return path.with_name(f".{path.name}{_TMP_TAG}{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own earlier write of this name has finished or died: stale
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, ValueError, OverflowError):
        return True  # exists (another user's process) or cannot tell: leave it alone
    return True


def _remove_stale_temps(folder: Path, name: str | None = None) -> int:
    """Delete the temporary files ``.<name>.tmp<pid>`` in ``folder`` whose writer no
    longer runs: leftovers of a write killed (SIGKILL, OOM, power loss) between creating
    the temporary file and moving it into place, which no ``finally`` could remove.
    A temporary file of a live process (another run writing there now) is kept; one
    carrying this process's own pid is stale (this process is not writing it: its
    writes are sequential). ``name=None`` sweeps every file name (the draw-parts folder,
    which only bayesmf writes). Returns the number of files removed; never raises."""
    import glob

    removed = 0
    try:
        stem = "*" if name is None else glob.escape(name)
        candidates = list(folder.glob(f".{stem}{_TMP_TAG}*"))
    except OSError:
        return 0
    for f in candidates:
        pid = f.name.rpartition(_TMP_TAG)[2]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        try:
            f.unlink()
            removed += 1
        except OSError:
            pass
    return removed


def atomic_save_npz(path, arrays: dict) -> str:
    """Write ``arrays`` to ``path`` (uncompressed npz) atomically; returns its SHA-256.

    The archive is written to the temporary name ``.<name>.tmp<pid>`` in the same folder,
    flushed and fsync'ed, then moved onto ``path`` with :func:`os.replace`. Any exception
    (disk full, permission, interrupt) removes the temporary file and leaves ``path`` as
    it was. A write killed outright cannot clean up after itself; its temporary file is
    removed by the next save of the same name (:func:`_remove_stale_temps`)."""
    path = Path(path)
    _remove_stale_temps(path.parent, path.name)
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        digest = _sha256_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        except OSError:  # pragma: no cover - never mask the original error
            pass
    return digest


def _sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _parts_dir(path: Path) -> Path:
    return path.with_name(path.name + ".draws")


def _leaf_names(tree) -> list[str]:
    import jax

    paths, _ = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(p) or "<root>" for p, _ in paths]


def save_checkpoint(path, *, state, key, iteration: int, n_iter: int, fingerprint: str,
                    parts: list, warmup: int = 0, thin: int = 1,
                    meta: dict | None = None) -> None:
    """Write the checkpoint file ``path`` (see the module docs) atomically, then remove
    the temporary files that killed writes of earlier draw parts left in
    ``<path>.draws/`` (a resumed run's first save cleans up after the run it resumes)."""
    import jax

    leaves = jax.tree_util.tree_leaves(state)
    info = {
        "format": _FORMAT, "version": CHECKPOINT_VERSION, "iteration": int(iteration),
        "n_iter": int(n_iter), "warmup": int(warmup), "thin": int(thin),
        "fingerprint": fingerprint, "parts": parts, "state_leaves": _leaf_names(state),
        "key_typed": bool(_is_typed_key(key)), "written_at": time.time(),
        "meta": meta or {},
    }
    arrays = {"__meta__": np.frombuffer(json.dumps(info).encode(), np.uint8),
              "key": _host(key)}
    for j, leaf in enumerate(leaves):
        arrays[f"state/{j}"] = _host(leaf)
    atomic_save_npz(path, arrays)
    # draw parts whose write was killed (the next save after a resume gets here too)
    pdir = _parts_dir(Path(path))
    if pdir.is_dir():
        _remove_stale_temps(pdir)


class _Loaded(NamedTuple):
    info: dict
    key: np.ndarray
    state_leaves: list


def load_checkpoint(path, *, fingerprint: str | None = None, **expected) -> _Loaded:
    """Read and sanity-check a checkpoint file; raises :class:`ModelFileError` if it is
    missing, unreadable, truncated or of another format/version. With ``fingerprint``
    and/or ``expected`` settings (e.g. ``n_iter=``, ``warmup=``, ``thin=``), a checkpoint
    written for other data, settings or seed raises :class:`SpecError` naming the
    mismatch."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"no checkpoint to resume from at {path}")
    try:
        with np.load(path, allow_pickle=False) as z:
            info = json.loads(bytes(z["__meta__"]).decode())
            key = z["key"]
            n_state = sum(1 for f in z.files if f.startswith("state/"))
            leaves = [z[f"state/{j}"] for j in range(n_state)]
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{path} is not a readable bayesmf checkpoint (corrupted or "
                             f"truncated?): {type(exc).__name__}: {exc}") from exc
    if not isinstance(info, dict) or info.get("format") != _FORMAT:
        raise ModelFileError(f"{path} is not a bayesmf checkpoint")
    if info.get("version") != CHECKPOINT_VERSION:
        raise ModelFileError(f"{path} has checkpoint format version {info.get('version')}; "
                             f"this bayesmf reads version {CHECKPOINT_VERSION}")
    for name, want in expected.items():
        if info.get(name) != want:
            raise SpecError(f"cannot resume {path}: it was written with {name}="
                            f"{info.get(name)}, this run has {name}={want}")
    if fingerprint is not None and info.get("fingerprint") != fingerprint:
        raise SpecError(f"cannot resume {path}: it was written for different data, "
                        "settings or seed (fingerprint mismatch); start a fresh run "
                        "without resume or pass the original data and settings")
    return _Loaded(info, key, leaves)


def restore_state(ck: _Loaded, template, path=None):
    """The sampler state saved in checkpoint ``ck``, restored into the pytree structure of
    ``template`` (typed PRNG keys included); every leaf's shape and dtype must match the
    template's, otherwise :class:`ModelFileError` says which one differs."""
    import jax

    state_def = jax.tree_util.tree_structure(template)
    leaves = jax.tree_util.tree_leaves(template)
    if len(ck.state_leaves) != len(leaves):
        raise ModelFileError(f"{path}: the saved sampler state has "
                             f"{len(ck.state_leaves)} arrays, expected {len(leaves)}")
    restored = []
    for name, saved, tmpl in zip(ck.info["state_leaves"], ck.state_leaves, leaves):
        if _is_typed_key(tmpl):
            want_shape = np.shape(jax.random.key_data(tmpl))
            if saved.shape != want_shape:
                raise ModelFileError(f"{path}: state {name} has shape {saved.shape}")
            restored.append(jax.random.wrap_key_data(saved, impl=jax.random.key_impl(tmpl)))
            continue
        tm = np.asarray(tmpl)
        if saved.shape != tm.shape or saved.dtype != tm.dtype:
            raise ModelFileError(f"{path}: state {name} is {saved.dtype}{saved.shape}, "
                                 f"expected {tm.dtype}{tm.shape}")
        restored.append(saved)
    return jax.tree_util.tree_unflatten(state_def, restored)


def _load_part(pdir: Path, part: dict, n_leaves: int) -> list:
    f = pdir / part["file"]
    if not f.exists():
        raise ModelFileError(f"checkpoint draw file {f} is missing")
    if _sha256_file(f) != part["sha256"]:
        raise ModelFileError(f"checkpoint draw file {f} is corrupted (checksum mismatch)")
    try:
        with np.load(f, allow_pickle=False) as z:
            leaves = [z[f"d/{j}"] for j in range(n_leaves)]
    except Exception as exc:
        raise ModelFileError(f"checkpoint draw file {f} is unreadable: {exc}") from exc
    if any(len(a) != part["rows"] for a in leaves):
        raise ModelFileError(f"checkpoint draw file {f} has the wrong number of rows")
    return leaves


# ----------------------------------------------------------------------------- driver
def __getattr__(name):
    # the host loop lives in bayesmf.infer.driver (the one driver of every sampler);
    # these names stay importable from here for custom kernels written against them
    if name in ("run_chunked", "scan_chunk", "ChunkedRun"):
        from bayesmf.infer import driver

        return getattr(driver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
