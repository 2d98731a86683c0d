r"""The one chain driver of bayesmf's samplers (Gibbs, NUTS) and of custom scan kernels.

A sampler is a :class:`Program`: a pure per-chain transition
``step(data, key, state) -> (state, info)`` and ``extract(data, state, info)``, the pytree
of values kept at a kept iteration. :func:`run_chains` runs ``C`` chains of it (vectorised
with ``vmap``, one after the other, or split over devices with ``shard_map``) for
``n_iter = num_warmup + (num_samples - 1) * thin + 1`` iterations and returns the kept
values, the final states and the timings. Everything a run needs beyond one transition
lives here, once:

* **Keys.** Iteration ``t`` (0-based, warm-up included) of chain ``c`` uses
  ``fold_in(split(PRNGKey(seed), C)[c], t)``: the draws depend neither on how the run is
  cut into calls (progress updates, checkpoints) nor on whether it was resumed.
* **Kept iterations** ``t = num_warmup + j * thin``, ``j < num_samples``.
* **Compiled shapes do not depend on num_samples, num_warmup or thin.** One compiled
  call advances the chains over any range ``t0 <= t < t1`` of iterations (a
  ``fori_loop`` with dynamic bounds) and returns the kept values of that range in a
  buffer of ``B`` slots, with ``B`` fixed by the size of one draw only
  (:func:`slots_for`); the host copies them into the ``(C, num_samples, ...)`` arrays and
  cuts the run so that no call keeps more than ``B`` draws. ``warmup``, ``thin`` and
  ``num_samples`` are runtime arguments: a second fit with other MCMC lengths reuses the
  compiled code.
* **Compile cache.** In process, compiled calls are kept per ``(program.cache_key,
  argument shapes)`` (:data:`_COMPILED`); across processes, JAX's persistent compilation
  cache is switched on at the first run (:func:`enable_persistent_cache`; directory
  ``$BAYESMF_COMPILE_CACHE_DIR`` or the user cache folder, ``BAYESMF_COMPILE_CACHE=0``
  turns it off), so a second ``bayesmf fit`` of the same shape in a new process skips
  most of the XLA compile. The compile is announced and timed (``log``).
* **Streamed summaries** (``pairs``): a Welford mean/variance over the kept draws of
  ``program.stream(pairs, state)`` (e.g. the noise-free predictions of chosen pairs).
* **Checkpoints** (:mod:`bayesmf.infer.checkpoint` file format): every
  ``checkpoint_every`` iterations the draws kept since the previous checkpoint are
  appended as a part file and the chain states written atomically; ``resume=True``
  continues a killed run and ends with exactly the draws of an uninterrupted run.
* **Progress** (tqdm): iterations, phase, a program-specific postfix; the rate and ETA
  are tqdm's.
* **Memory**: the kept draws are checked against :mod:`bayesmf._memory` before any work.

:func:`run_loop` is the host loop shared by :func:`run_chains` and
:func:`run_chunked` (the documented recipe for custom kernels written as a
``chunk(state, keys)`` scan).
"""

from __future__ import annotations

import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from bayesmf._memory import check_allocation
from bayesmf.infer._xla import compile_lowered
from bayesmf.errors import ModelFileError, SpecError
from bayesmf.infer import check_int as _check_int
from bayesmf.infer import checkpoint as ck

__all__ = ["Program", "ChainRun", "ChunkedRun", "run_chains", "pooled_stream", "run_loop",
           "run_chunked", "scan_chunk", "slots_for", "enable_persistent_cache", "compile_logger"]


def compile_logger(enabled: bool) -> Callable | None:
    """``log(message)`` writing ``bayesmf: message`` to stderr when ``enabled`` (the
    samplers pass their ``progress`` flag), else None."""
    if not enabled:
        return None

    def log(msg: str) -> None:
        print(f"bayesmf: {msg}", file=sys.stderr, flush=True)

    return log


# ----------------------------------------------------------------------------- compile cache
_PERSISTENT = {"done": False, "dir": None}


def enable_persistent_cache() -> str | None:
    """Switch on JAX's persistent compilation cache (once per process); returns its folder
    or None when it is off.

    Folder: ``$BAYESMF_COMPILE_CACHE_DIR``, else ``$XDG_CACHE_HOME/bayesmf/jax`` (default
    ``~/.cache/bayesmf/jax``). ``BAYESMF_COMPILE_CACHE=0`` switches it off; programs that
    compile in less than ``$BAYESMF_COMPILE_CACHE_MIN_SECONDS`` (0.5) are not stored; a
    cache folder
    the user set in JAX's own config (``jax_compilation_cache_dir``) is kept; an unwritable
    folder switches it off with a warning. Entries are keyed by JAX on the compiled program
    and the backend, so a stale entry is never used for another program."""
    if _PERSISTENT["done"]:
        return _PERSISTENT["dir"]
    _PERSISTENT["done"] = True
    if os.environ.get("BAYESMF_COMPILE_CACHE", "1").strip().lower() in ("0", "false", "no",
                                                                       "off"):
        return None
    import jax

    current = jax.config.jax_compilation_cache_dir
    if current:
        _PERSISTENT["dir"] = current
        return current
    d = os.environ.get("BAYESMF_COMPILE_CACHE_DIR")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                ".cache")
        d = os.path.join(base, "bayesmf", "jax")
    try:
        os.makedirs(d, exist_ok=True)
        probe = Path(d) / f".probe{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        warnings.warn(f"JAX compilation cache off: cannot write to {d} ({exc}); set "
                      "BAYESMF_COMPILE_CACHE_DIR to a writable folder", stacklevel=3)
        return None
    jax.config.update("jax_compilation_cache_dir", d)
    jax.config.update("jax_persistent_cache_min_compile_time_secs",
                      float(os.environ.get("BAYESMF_COMPILE_CACHE_MIN_SECONDS", "0.5")))
    _PERSISTENT["dir"] = d
    return d


#: compiled chain calls, keyed by the program's static key, the buffer slots, the chain
#: method and the argument shapes (no recompilation when the same problem is fitted again,
#: e.g. with another seed or other num_samples / num_warmup / thin)
_COMPILED: dict = {}


def _signature(tree):
    import jax

    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return (treedef, tuple((np.shape(x), str(x.dtype) if hasattr(x, "dtype")
                            else str(np.asarray(x).dtype)) for x in leaves))


# ----------------------------------------------------------------------------- programs
class Program(NamedTuple):
    """A sampler for :func:`run_chains`.

    ``step(data, key, state) -> (state, info)``: one iteration of one chain (pure);
    ``extract(data, state, info)``: the pytree kept at a kept iteration;
    ``stream(pairs, state) -> (m, nv)``: optional, the values ``m`` (P,) whose mean and
    variance over the kept draws are streamed, and a scalar ``nv`` whose mean is streamed;
    ``cache_key``: hashable static settings that, with the argument shapes, fully determine
    the compiled code (None: no in-process cache);
    ``postfix(info) -> dict``: optional progress-bar fields from the last ``info``
    (host arrays, leading chain axis);
    ``name`` and ``unit`` label the progress bar and the compile message."""

    name: str
    step: Callable
    extract: Callable
    stream: Callable | None = None
    cache_key: Any = None
    postfix: Callable | None = None
    unit: str = "it"


class ChainRun(NamedTuple):
    """Result of :func:`run_chains`: ``draws`` (pytree of host arrays ``(C, S, ...)``),
    ``state`` (final states, leading chain axis), ``stream`` (``(n, mean, m2, nv)`` host
    arrays per chain, or None), ``compile_seconds``, ``compile_cached``,
    ``sampling_seconds`` (warm-up included), ``warmup_seconds`` (of it; 0 when resumed
    after the warm-up), ``n_run`` (iterations computed by this call), ``resumed_at``,
    ``chain_method_used``, ``devices``, ``slots`` (kept draws per compiled call) and
    ``n_iter``."""

    draws: Any
    state: Any
    stream: Any
    compile_seconds: float
    compile_cached: bool
    sampling_seconds: float
    warmup_seconds: float
    n_run: int
    resumed_at: int | None
    chain_method_used: str
    devices: int
    slots: int
    n_iter: int


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


def slots_for(draw_bytes: int, n_chains: int = 1, budget: int = 256 << 20,
              most: int = 64) -> int:
    """Kept draws per compiled call: as many as fit ``budget`` bytes over all chains, at
    most ``most``, at least 1 -- a function of the size of one draw only, so that the
    compiled shapes do not depend on the run's length."""
    per = max(1, int(draw_bytes) * max(1, int(n_chains)))
    return int(max(1, min(most, budget // per)))


# ----------------------------------------------------------------------------- host loop
def _spec_bytes(tree) -> int:
    """Bytes of the arrays a pytree of ``jax.ShapeDtypeStruct`` describes."""
    import jax

    return sum(int(np.prod(s.shape, dtype=np.int64)) * np.dtype(s.dtype).itemsize
               for s in jax.tree_util.tree_leaves(tree))


def _check_kept(out_spec, n_kept: int, memory_limit, what=None, hint=None) -> None:
    """The kept-draw buffers ``out_spec`` against the memory limit."""
    check_allocation(_spec_bytes(out_spec), what or f"the {n_kept} kept draws", memory_limit,
                     hint=hint or "keep fewer draws (num_samples, thin) or fewer chains")


def run_loop(advance: Callable, carry, n_iter: int, *, warmup: int, thin: int,
             n_kept: int | None = None, out_spec, kept_axis: int = 0,
             every: int | None = None, max_kept: int | None = None,
             checkpoint_path=None, checkpoint_every: int | None = None,
             resume: bool = False, fingerprint: str = "", ckpt_key=None,
             meta: dict | None = None, on_call: Callable | None = None,
             memory_limit=None, what: str | None = None, hint: str | None = None,
             cut_at_warmup: bool = False):
    """The host loop of every sampler run: cut ``n_iter`` iterations into calls of
    ``advance``, copy their kept outputs into preallocated host arrays, checkpoint and
    resume.

    ``advance(carry, t0, t1, j0) -> (carry, outs, info)`` runs iterations ``t0 <= t < t1``
    and returns their kept outputs as a list of arrays (the leaves of ``out_spec``) whose
    ``kept_axis`` has at least the number of kept iterations in the range (the first ones
    are used); ``j0`` is the index of the first of them among all kept draws. ``out_spec``
    is a pytree of ``jax.ShapeDtypeStruct`` of the whole result (``kept_axis`` of length
    ``n_kept``). Calls end at multiples of ``every`` and of ``checkpoint_every`` and keep at
    most ``max_kept`` draws (and at the end of the warm-up with ``cut_at_warmup``).
    ``on_call(t, info)`` after each call. With
    ``checkpoint_path``, at each multiple of ``checkpoint_every`` (and at the end) the
    draws kept since the previous checkpoint go to a part file and ``carry`` to the
    checkpoint file; ``resume=True`` restores them (``fingerprint`` -- extended with
    ``ckpt_key``, ``n_iter``, ``warmup``, ``thin`` -- must match).

    Returns ``(carry, draws, resumed_at, calls)`` with ``draws`` a pytree like
    ``out_spec`` of numpy arrays."""
    import jax

    n_iter = _check_int("n_iter", n_iter, 1)
    warmup = _check_int("warmup", warmup, 0)
    thin = _check_int("thin", thin, 1)
    kept = ck.kept_iterations(n_iter, warmup, thin)
    if n_kept is not None:
        kept = kept[:n_kept]
    every = n_iter if every is None else _check_int("every", every, 1)
    if resume and checkpoint_path is None:
        raise SpecError("resume=True needs checkpoint=PATH (the file the run wrote)")
    path = None if checkpoint_path is None else Path(checkpoint_path)
    ck_every = n_iter if checkpoint_every is None else _check_int("checkpoint_every",
                                                                  checkpoint_every, 1)
    leaves_spec, out_def = jax.tree_util.tree_flatten(out_spec)
    _check_kept(out_spec, len(kept), memory_limit, what, hint)
    bufs = [np.zeros(s.shape, s.dtype) for s in leaves_spec]

    def put(j0, outs, nk, axis=kept_axis):
        for b, o in zip(bufs, outs):
            o = np.moveaxis(np.asarray(o), axis, kept_axis)
            idx = [slice(None)] * b.ndim
            idx[kept_axis] = slice(j0, j0 + nk)
            src = [slice(None)] * o.ndim
            src[kept_axis] = slice(0, nk)
            b[tuple(idx)] = o[tuple(src)]

    def take(j0, j1):
        # a checkpoint part: the kept draws j0 <= j < j1, kept axis first
        return [np.moveaxis(b, kept_axis, 0)[j0:j1] for b in bufs]

    fp = ""
    if path is not None:
        fp = ck._fingerprint(fingerprint, None if ckpt_key is None else ck._host(ckpt_key),
                             n_iter, warmup, thin)
    t, parts, resumed_at = 0, [], None
    if path is not None and resume:
        loaded = ck.load_checkpoint(path, fingerprint=fp, n_iter=n_iter, warmup=warmup,
                                    thin=thin)
        carry = jax.tree_util.tree_map(
            lambda a: a, ck.restore_state(loaded, carry, path))
        t = int(loaded.info["iteration"])
        parts = list(loaded.info["parts"])
        pdir = ck._parts_dir(path)
        j = 0
        for p in parts:
            leaves = ck._load_part(pdir, p, len(bufs))
            put(j, leaves, p["rows"], axis=0)
            j += p["rows"]
        if j != int(np.sum(kept < t)):
            raise ModelFileError(f"{path}: its draw parts do not cover iterations 0..{t}")
        resumed_at = t
    elif path is not None:
        if path.exists():
            warnings.warn(f"checkpoint {str(path)!r} exists and resume=False: this run starts "
                          f"afresh and replaces it (resume=True continues that run)",
                          stacklevel=3)
            path.unlink()
        pdir = ck._parts_dir(path)
        if pdir.exists():
            shutil.rmtree(pdir)
    if path is not None:
        ck._parts_dir(path).mkdir(parents=True, exist_ok=True)

    last_t, last_j = t, int(np.sum(kept < t))
    calls = 0
    while t < n_iter:
        t1 = min(n_iter, (t // every + 1) * every, (t // ck_every + 1) * ck_every)
        if cut_at_warmup and t < warmup:  # the end of the warm-up is timed apart
            t1 = min(t1, warmup)
        j0 = int(np.searchsorted(kept, t))
        if max_kept is not None and j0 + max_kept < len(kept):
            t1 = min(t1, int(kept[j0 + max_kept]))
        carry, outs, info = advance(carry, t, t1, j0)
        nk = int(np.searchsorted(kept, t1)) - j0
        if nk:
            put(j0, outs, nk)
        calls += 1
        t = t1
        if path is not None and (t % ck_every == 0 or t == n_iter):
            j1 = j0 + nk
            fname = f"part-{last_t:09d}-{t:09d}.npz"
            digest = ck.atomic_save_npz(ck._parts_dir(path) / fname,
                                        {f"d/{i}": a for i, a in enumerate(take(last_j, j1))})
            parts.append({"file": fname, "start": last_t, "end": t, "rows": j1 - last_j,
                          "sha256": digest})
            ck.save_checkpoint(path, state=carry, key=ckpt_key, iteration=t, n_iter=n_iter,
                               fingerprint=fp, parts=parts, warmup=warmup, thin=thin,
                               meta=meta)
            last_t, last_j = t, j1
        if on_call is not None:
            on_call(t, info)
    return carry, jax.tree_util.tree_unflatten(out_def, bufs), resumed_at, calls


# ----------------------------------------------------------------------------- chains
def _chain_mesh(n_chains: int):
    """A 1-d mesh ``("chain",)`` over the largest number of local devices that divides
    ``n_chains``, or None when that is below 2."""
    import jax
    from jax.sharding import Mesh

    devs = jax.local_devices()
    n = max(d for d in range(1, min(n_chains, len(devs)) + 1) if n_chains % d == 0)
    return Mesh(np.array(devs[:n]), ("chain",)) if n >= 2 else None


#: which arguments of the compiled call carry a leading chain axis (vmapped over when the
#: chains are vectorised, split over the devices when they run in parallel):
#: (data, pairs, state, acc, key, t0, t1, warmup, thin, n_kept)
_CHAIN_ARGS = (False, False, True, True, True, False, False, False, False, False)


def _place(args, mesh):
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as Ps

    return tuple(a if a is None else jax.device_put(
        a, NamedSharding(mesh, Ps("chain") if split else Ps()))
        for a, split in zip(args, _CHAIN_ARGS))


def _make_advance(program: Program, slots: int, out_shape, info_shape):
    """The compiled call of one chain: ``advance(data, pairs, state, acc, key, t0, t1,
    warmup, thin, n_kept) -> (state, acc, buf, info)``; kept iteration ``t`` (``t =
    warmup + j*thin``, ``j < n_kept``) writes ``extract`` into slot ``j - j0`` of ``buf``,
    ``j0`` the first kept index at or after ``t0``."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    def advance(data, pairs, state, acc, key, t0, t1, warmup, thin, n_kept):
        j0 = jnp.maximum(0, -((warmup - t0) // thin))  # ceil((t0 - warmup) / thin), >= 0
        buf = jax.tree_util.tree_map(lambda s: jnp.zeros((slots,) + s.shape, s.dtype),
                                     out_shape)
        info0 = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), info_shape)

        def body(t, carry):
            state, buf, acc, info = carry
            state, info = program.step(data, jax.random.fold_in(key, t), state)
            rel = t - warmup
            keep = (rel >= 0) & (rel % thin == 0) & (rel // thin < n_kept)

            def write(args):
                buf, acc = args
                vals = program.extract(data, state, info)
                slot = rel // thin - j0
                buf = jax.tree_util.tree_map(
                    lambda b, v: lax.dynamic_update_index_in_dim(b, v.astype(b.dtype), slot,
                                                                 0), buf, vals)
                if pairs is not None:
                    m, nv = program.stream(pairs, state)
                    n1 = acc[0] + 1
                    d = m - acc[1]
                    mean = acc[1] + d / n1
                    acc = (n1, mean, acc[2] + d * (m - mean), acc[3] + (nv - acc[3]) / n1)
                return buf, acc

            buf, acc = lax.cond(keep, write, lambda a: a, (buf, acc))
            return state, buf, acc, info

        state, buf, acc, info = lax.fori_loop(t0, t1, body, (state, buf, acc, info0))
        return state, acc, buf, info

    return advance


def _compile(program, slots, out_shape, info_shape, vectorized, args, mesh=None):
    import jax

    key = None
    if program.cache_key is not None:
        key = (program.cache_key, slots, vectorized,
               None if mesh is None else tuple(mesh.devices.flat), _signature(args))
        if key in _COMPILED:
            return _COMPILED[key], True
    adv = _make_advance(program, slots, out_shape, info_shape)
    if vectorized:
        adv = jax.vmap(adv, in_axes=tuple(0 if c else None for c in _CHAIN_ARGS))
    if mesh is not None:
        from jax import shard_map
        from jax.sharding import PartitionSpec as Ps

        specs = tuple(Ps("chain") if split else Ps() for split in _CHAIN_ARGS)
        adv = shard_map(adv, mesh=mesh, in_specs=specs, out_specs=Ps("chain"),
                        check_vma=False)
        args = _place(args, mesh)
    compiled = compile_lowered(jax.jit(adv, donate_argnums=(2, 3)).lower(*args))
    if key is not None:
        _COMPILED[key] = compiled
        if len(_COMPILED) > 16:
            _COMPILED.pop(next(iter(_COMPILED)))
    return compiled, False


def run_chains(program: Program, data, state, keys, *, num_samples: int, num_warmup: int,
               thin: int = 1, chain_method: str = "vectorized", pairs=None,
               checkpoint=None, checkpoint_every=None, resume: bool = False,
               fingerprint: str = "", meta: dict | None = None, progress: bool = False,
               progress_every=None, memory_limit=None, log: Callable | None = None,
               what: str | None = None, hint: str | None = None) -> ChainRun:
    """Run ``C = len(keys)`` chains of ``program`` from ``state`` (leading chain axis);
    see the module docs. ``chain_method``: ``"vectorized"`` (vmap), ``"sequential"`` (one
    chain after the other) or ``"parallel"`` (the vectorised chains split over the local
    devices with ``shard_map``; with fewer than 2 usable devices it warns and runs
    vectorised). ``log(message)`` receives the compile announcement and its time. The
    arrays of ``state`` are donated to the compiled call (do not use them afterwards)."""
    import os

    if checkpoint is not None and (isinstance(checkpoint, bool)
                                   or not isinstance(checkpoint, (str, os.PathLike))):
        raise SpecError(f"checkpoint must be a file path (a str or os.PathLike), got "
                        f"{checkpoint!r}")
    if checkpoint is not None and Path(checkpoint).is_dir():
        raise SpecError(f"checkpoint={str(checkpoint)!r} is a folder; give a file path in "
                        f"it (e.g. {str(Path(checkpoint) / 'run.ckpt')!r})")
    import jax
    import jax.numpy as jnp

    S = _check_int("num_samples", num_samples, 1)
    W = _check_int("num_warmup", num_warmup, 0)
    T = _check_int("thin", thin, 1)
    C = int(keys.shape[0])
    n_iter = W + (S - 1) * T + 1
    if chain_method not in ("vectorized", "sequential", "parallel"):
        raise SpecError("chain_method must be 'vectorized', 'sequential' or 'parallel', "
                        f"got {chain_method!r}")
    if pairs is not None and program.stream is None:
        raise SpecError(f"{program.name}: streamed predictions (predict_pairs=) are not "
                        "supported by this sampler")
    enable_persistent_cache()
    one = lambda x: jax.tree_util.tree_map(lambda a: a[0], x)  # noqa: E731
    info_shape = jax.eval_shape(lambda d, k, s: program.step(d, k, s)[1], data, keys[0],
                                one(state))
    out_shape = jax.eval_shape(program.extract, data, one(state), info_shape)
    draw_bytes = _spec_bytes(out_shape)
    slots = slots_for(draw_bytes, C)
    out_spec = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct((C, S) + s.shape, s.dtype), out_shape)
    # the kept draws against the memory limit before anything is compiled (run_loop
    # checks the same buffers again)
    _check_kept(out_spec, S, memory_limit, what, hint)
    dt = jax.tree_util.tree_leaves(out_shape)[0].dtype if out_shape else jnp.float32
    P = 0 if pairs is None else int(pairs[0].shape[0])
    acc = (jnp.zeros((C,), dt), jnp.zeros((C, P), dt), jnp.zeros((C, P), dt),
           jnp.zeros((C,), dt))
    i32 = lambda v: jnp.asarray(v, jnp.int32)  # noqa: E731
    Wj, Tj, Sj = i32(W), i32(T), i32(S)

    method, mesh = chain_method, None
    if method == "parallel":
        mesh = _chain_mesh(C)
        if mesh is None:
            warnings.warn(
                f"chain_method='parallel': {len(jax.local_devices())} device(s) for {C} "
                "chain(s); running them vectorized on one device. On CPU, make JAX start "
                "with N devices: XLA_FLAGS=--xla_force_host_platform_device_count=N (or "
                "numpyro.set_host_device_count(N)) before jax is imported.", stacklevel=3)
            method = "vectorized"
    if log is not None:
        log(f"compiling the {program.name} sampler ({C} chain(s), {method})...")
    t_c = time.perf_counter()
    if method in ("vectorized", "parallel"):
        compiled, cached = _compile(program, slots, out_shape, info_shape, True,
                                    (data, pairs, state, acc, keys, i32(0), i32(1), Wj, Tj,
                                     Sj), mesh)

        def call(carry, t0, t1):
            st, ac = carry
            args = (data, pairs, st, ac, keys, i32(t0), i32(t1), Wj, Tj, Sj)
            st, ac, buf, info = compiled(*(args if mesh is None else _place(args, mesh)))
            return (st, ac), buf, info
    else:
        compiled, cached = _compile(program, slots, out_shape, info_shape, False,
                                    (data, pairs, one(state), one(acc), keys[0], i32(0),
                                     i32(1), Wj, Tj, Sj))

        def call(carry, t0, t1):
            st, ac = carry
            outs = []
            for c in range(C):
                pick = lambda x: jax.tree_util.tree_map(lambda a: a[c], x)  # noqa: E731,B023
                outs.append(compiled(data, pairs, pick(st), pick(ac), keys[c], i32(t0),
                                     i32(t1), Wj, Tj, Sj))
            st, ac, buf, info = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *outs)
            return (st, ac), buf, info
    compile_s = time.perf_counter() - t_c
    if log is not None:
        log(f"compiled in {compile_s:.1f} s" + (" (in-process cache)" if cached else ""))

    every = progress_every
    if every is None:
        every = max(1, -(-n_iter // 50)) if progress else n_iter
    every = _check_int("progress_every", every, 1)
    ck_every = checkpoint_every
    if ck_every is None:
        ck_every = max(1, -(-n_iter // 10)) if checkpoint is not None else n_iter

    def advance(carry, t0, t1, j0):
        carry, buf, info = call(carry, t0, t1)
        return carry, [np.asarray(b) for b in jax.tree_util.tree_leaves(buf)], info

    bar = None
    t_warm = [None]
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_iter, desc=f"{program.name} x{C}", unit=program.unit,
                   file=sys.stderr)

    def on_call(t, info):
        if t == W:
            t_warm[0] = time.perf_counter()
        if bar is None:
            return
        post = {} if program.postfix is None else dict(
            program.postfix(jax.tree_util.tree_map(np.asarray, info)))
        post["phase"] = "warmup" if t <= W else "sampling"
        bar.set_postfix(post)
        bar.update(t - bar.n)

    t_s = time.perf_counter()
    try:
        (state, acc), draws, resumed_at, _ = run_loop(
            advance, (state, acc), n_iter, warmup=W, thin=T, n_kept=S, out_spec=out_spec,
            kept_axis=1, every=every, max_kept=slots, checkpoint_path=checkpoint,
            checkpoint_every=ck_every, resume=resume, fingerprint=fingerprint, ckpt_key=keys,
            meta=meta, on_call=on_call, memory_limit=memory_limit, what=what, hint=hint,
            cut_at_warmup=True)
        jax.block_until_ready(state)
    finally:  # a refused or interrupted run leaves no open bar behind
        if bar is not None:
            bar.close()
    sample_s = time.perf_counter() - t_s
    warm_s = 0.0 if W == 0 or t_warm[0] is None else t_warm[0] - t_s
    stream = None
    if pairs is not None:
        stream = tuple(np.asarray(a) for a in acc)
    return ChainRun(draws, state, stream, compile_s, bool(cached), sample_s, warm_s,
                    n_iter - (resumed_at or 0), resumed_at, method,
                    1 if mesh is None else int(mesh.devices.size), slots, n_iter)


def pooled_stream(pairs, stream) -> dict:
    r"""The streamed pair summaries of :func:`run_chains` (``stream = (n, mean, m2, nv)``
    per chain) pooled over the chains, as the JSON-able ``attrs["streamed_predictions"]``:
    ``user, item`` (indices), ``mean`` (over all kept draws), ``var_param`` (the pooled
    variance :math:`(\sum_c M_{2,c} + \sum_c n_c(\bar m_c - \bar m)^2)/\sum_c n_c`,
    within- plus between-chain parts), ``noise_var`` (the draw-weighted mean of the
    streamed scalar) and ``n_draws``."""
    n, cm, m2, nv = (np.asarray(a, np.float64) for a in stream)
    n = n[:, None]  # (C, 1)
    tot = n.sum()
    mean = (n * cm).sum(0) / tot
    var = (m2.sum(0) + (n * (cm - mean) ** 2).sum(0)) / tot
    return {"user": np.asarray(pairs[0]).tolist(), "item": np.asarray(pairs[1]).tolist(),
            "mean": mean.tolist(), "var_param": var.tolist(),
            "noise_var": float((nv * n[:, 0]).sum() / tot), "n_draws": int(tot)}


# ----------------------------------------------------------------------------- scan kernels
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


def run_chunked(chunk_fn: Callable, state, key, n_iter: int, *, every: int | None = None,
                checkpoint_path=None, resume: bool = False, warmup: int = 0, thin: int = 1,
                fingerprint: str = "", meta: dict | None = None,
                on_chunk: Callable | None = None, memory_limit=None) -> ChunkedRun:
    """Run ``n_iter`` iterations of a scan kernel in chunks, checkpointing after each
    (the recipe for custom kernels; the package's samplers use :func:`run_chains`; both go
    through :func:`run_loop`).

    ``chunk_fn(state, keys) -> (state, outputs)`` runs ``len(keys)`` iterations with the
    given per-iteration keys (:func:`scan_chunk`); iteration ``t`` uses ``fold_in(key,
    t)`` (:func:`bayesmf.infer.checkpoint.iteration_keys`; ``key`` may be a batch of chain
    keys). ``every`` iterations per chunk (= checkpoint interval; default one chunk);
    ``checkpoint_path``/``resume``: see :func:`run_loop`; outputs of iterations ``t >=
    warmup`` with ``(t - warmup) % thin == 0`` are kept; ``on_chunk(t, n_iter)`` after
    each chunk; ``memory_limit`` for the kept draws."""
    import jax

    n_iter = _check_int("n_iter", n_iter, 1)
    warmup = _check_int("warmup", warmup, 0)
    thin = _check_int("thin", thin, 1)
    every = n_iter if every is None else _check_int("checkpoint_every", every, 1)
    if resume and checkpoint_path is None:
        raise SpecError("resume=True needs a checkpoint path")
    kept = ck.kept_iterations(n_iter, warmup, thin)
    one_out = jax.eval_shape(chunk_fn, state, ck.iteration_keys(key, 0, 1))[1]
    out_spec = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct((len(kept),) + s.shape[1:], s.dtype), one_out)

    def advance(st, t0, t1, j0):
        st, out = chunk_fn(st, ck.iteration_keys(key, t0, t1 - t0))
        sel = kept[(kept >= t0) & (kept < t1)] - t0
        return st, [np.asarray(a)[sel] for a in jax.tree_util.tree_leaves(out)], None

    n_chunks = [0]

    def on_call(t, info):
        n_chunks[0] += 1
        if on_chunk is not None:
            on_chunk(t, n_iter)

    state, draws, resumed_at, _ = run_loop(
        advance, state, n_iter, warmup=warmup, thin=thin, out_spec=out_spec, kept_axis=0,
        every=every, checkpoint_path=checkpoint_path, checkpoint_every=every,
        resume=resume, fingerprint=fingerprint, ckpt_key=key, meta=meta, on_call=on_call,
        memory_limit=memory_limit, what=f"the {len(kept)} kept draws of the sampler")
    return ChunkedRun(state, draws, kept, resumed_at, n_chunks[0])
