r"""Checkpoint and resume for scan-based samplers.

A sampler written as a pure kernel ``step(key, state) -> (state, info)`` runs through
:func:`run_chunked` in **chunks** of ``every`` iterations; after each chunk the driver
writes a checkpoint. A run that is killed (SIGKILL, OOM, pre-emption) and restarted with
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
import shutil
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from bayesmf._memory import check_allocation
from bayesmf.errors import ModelFileError, SpecError
from bayesmf.infer import check_int as _check_int

__all__ = ["CHECKPOINT_VERSION", "ChunkedRun", "fingerprint", "iteration_keys",
           "scan_chunk", "run_chunked", "save_checkpoint", "load_checkpoint",
           "kept_iterations", "atomic_save_npz", "restore_state"]

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


def scan_chunk(step: Callable, extract: Callable | None = None, *, jit: bool = True):
    """Build a chunk function for :func:`run_chunked` from a pure kernel.

    ``step(key, state) -> (state, info)``; the chunk function
    ``chunk(state, keys) -> (state, outputs)`` runs ``lax.scan`` over ``keys`` and returns
    per-iteration ``outputs = extract(state, info)`` (default: the new state). Compiled
    once per chunk length (the last chunk may be shorter: at most two compilations).
    """
    import jax
    from jax import lax

    def chunk(state, keys):
        def body(s, k):
            s2, info = step(k, s)
            return s2, (s2 if extract is None else extract(s2, info))

        return lax.scan(body, state, keys)

    return jax.jit(chunk) if jit else chunk


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


def atomic_save_npz(path, arrays: dict) -> str:
    """Write ``arrays`` to ``path`` (uncompressed npz) atomically; returns its SHA-256."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        digest = _sha256_file(tmp)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
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
    """Write the checkpoint file ``path`` (see the module docs) atomically."""
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
class ChunkedRun(NamedTuple):
    """Result of :func:`run_chunked`.

    ``state``: the final sampler state; ``draws``: the kept outputs, a pytree shaped like
    one iteration's output with a leading axis of kept iterations; ``kept``: the kept
    iteration numbers; ``resumed_at``: the iteration a resume started from (``None`` for a
    fresh run); ``chunks_run``: chunks computed by this call."""

    state: Any
    draws: Any
    kept: np.ndarray
    resumed_at: int | None
    chunks_run: int


def run_chunked(chunk_fn: Callable, state, key, n_iter: int, *, every: int | None = None,
                checkpoint_path=None, resume: bool = False, warmup: int = 0, thin: int = 1,
                fingerprint: str = "", meta: dict | None = None,
                on_chunk: Callable | None = None, memory_limit=None) -> ChunkedRun:
    """Run ``n_iter`` iterations of a scan kernel in chunks, checkpointing after each.

    Parameters
    ----------
    chunk_fn : callable
        ``chunk_fn(state, keys) -> (state, outputs)``: runs ``len(keys)`` iterations with
        the given per-iteration keys; ``outputs`` is a pytree with leading axis
        ``len(keys)`` (see :func:`scan_chunk`).
    state : pytree of arrays
        The initial state (also the template a resumed state is restored into).
    key : jax PRNG key
        Base key; iteration ``t`` uses ``fold_in(key, t)``.
    n_iter : int
        Total iterations including warm-up.
    every : int, optional
        Iterations per chunk (= checkpoint interval); default ``n_iter`` (one chunk).
    checkpoint_path : path, optional
        Checkpoint file (draw parts go to ``<path>.draws/``). ``None``: no checkpoints.
    resume : bool
        Continue from ``checkpoint_path`` (which must exist and match ``fingerprint``,
        ``n_iter``, ``warmup``, ``thin``); otherwise any old checkpoint there is replaced.
    warmup, thin : int
        Outputs of iterations ``t >= warmup`` with ``(t - warmup) % thin == 0`` are kept.
    fingerprint : str
        Of the data and settings (:func:`fingerprint`); the base key is added to it.
    on_chunk : callable, optional
        ``on_chunk(iterations_done, n_iter)`` after each chunk (and its checkpoint).
    memory_limit : optional
        Limit for the kept draws (see :func:`bayesmf._memory.check_allocation`).
    """
    import jax

    n_iter = _check_int("n_iter", n_iter, 1)
    warmup = _check_int("warmup", warmup, 0)
    thin = _check_int("thin", thin, 1)
    every = n_iter if every is None else _check_int("checkpoint_every", every, 1)
    if resume and checkpoint_path is None:
        raise SpecError("resume=True needs a checkpoint path")
    kept = kept_iterations(n_iter, warmup, thin)
    fp = _fingerprint(fingerprint, _host(key), n_iter, warmup, thin)

    # output structure and the memory the kept draws will take
    out_shape = jax.eval_shape(chunk_fn, state, iteration_keys(key, 0, 1))[1]
    out_def = jax.tree_util.tree_structure(out_shape)
    out_leaves_shape = jax.tree_util.tree_leaves(out_shape)
    row_bytes = sum(int(np.prod(s.shape[1:])) * np.dtype(s.dtype).itemsize
                    for s in out_leaves_shape)
    check_allocation(row_bytes * len(kept), f"the {len(kept)} kept draws of the sampler "
                     f"({row_bytes:,} bytes each)", memory_limit)

    path = None if checkpoint_path is None else Path(checkpoint_path)
    t = 0
    parts: list = []
    collected: list = []  # per part: list of leaves
    resumed_at = None
    if path is not None and resume:
        ck = load_checkpoint(path, fingerprint=fp, n_iter=n_iter, warmup=warmup, thin=thin)
        info = ck.info
        state = restore_state(ck, state, path)
        t = int(info["iteration"])
        parts = list(info["parts"])
        pdir = _parts_dir(path)
        n_out = out_def.num_leaves
        collected = [_load_part(pdir, p, n_out) for p in parts]
        if sum(p["rows"] for p in parts) != int(np.sum(kept < t)):
            raise ModelFileError(f"{path}: its draw parts do not cover iterations 0..{t}")
        resumed_at = t
    elif path is not None:
        if path.exists():
            path.unlink()
        pdir = _parts_dir(path)
        if pdir.exists():
            shutil.rmtree(pdir)
    if path is not None:
        _parts_dir(path).mkdir(parents=True, exist_ok=True)

    chunks_run = 0
    while t < n_iter:
        n = min(every, n_iter - t)
        state, out = chunk_fn(state, iteration_keys(key, t, n))
        rows = np.flatnonzero((kept >= t) & (kept < t + n))
        sel = kept[rows] - t
        leaves = [np.asarray(a)[sel] for a in jax.tree_util.tree_leaves(out)]
        collected.append(leaves)
        if path is not None:
            fname = f"part-{t:09d}-{t + n:09d}.npz"
            digest = atomic_save_npz(_parts_dir(path) / fname,
                                     {f"d/{j}": a for j, a in enumerate(leaves)})
            parts.append({"file": fname, "start": t, "end": t + n, "rows": len(sel),
                          "sha256": digest})
        t += n
        chunks_run += 1
        if path is not None:
            save_checkpoint(path, state=state, key=key, iteration=t, n_iter=n_iter,
                            fingerprint=fp, parts=parts, warmup=warmup, thin=thin,
                            meta=meta)
        if on_chunk is not None:
            on_chunk(t, n_iter)

    n_out = out_def.num_leaves
    if collected:
        draws_leaves = [np.concatenate([c[j] for c in collected], axis=0)
                        for j in range(n_out)]
    else:  # pragma: no cover - n_iter >= 1 always runs a chunk
        draws_leaves = [np.zeros((0,) + s.shape[1:], s.dtype) for s in out_leaves_shape]
    draws = jax.tree_util.tree_unflatten(out_def, draws_leaves)
    return ChunkedRun(state, draws, kept, resumed_at, chunks_run)
