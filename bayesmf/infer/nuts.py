r"""Full-posterior inference with NumPyro's No-U-Turn sampler (method ``"nuts"``).

Samples the model of :mod:`bayesmf.infer.numpyro_model` (BPMF with biases; exact
Normal-Wishart factor hyperprior by default, non-centred) with
``numpyro.infer.MCMC(NUTS(...))``. Because :math:`U` and :math:`V` are identified only up
to rotation/sign, judge convergence on predictions, biases, :math:`\mu`, :math:`\tau`
(``Posterior.sample_stats`` carries the NUTS diagnostics per chain and draw).

Options (``fit_nuts(train, spec, **options)``):

=================  ===========  =====================================================
``num_samples``    500          kept draws per chain (before thinning)
``num_warmup``     500          adaptation steps per chain (discarded)
``num_chains``     2
``thin``           1            keep every ``thin``-th draw
``chain_method``   sequential   ``"sequential"`` or ``"vectorized"`` (one process;
                                ``"parallel"`` needs one JAX device per chain)
``centered``       False        centred or non-centred parametrisation
``factor_prior``   wishart      ``"wishart"`` (exact NW, as Gibbs) or ``"diag"``
``target_accept``  0.8          dual-averaging target acceptance probability
``max_tree_depth`` 10
``dense_mass``     False        diagonal (False) or dense mass matrix
``checkpoint``     None         file path: run resumably (see below)
``checkpoint_every`` None       iterations per checkpoint (default: ~10 per run)
``resume``         False        continue a killed run from ``checkpoint``
``memory_limit``   None         limit for the kept draws (:mod:`bayesmf._memory`)
=================  ===========  =====================================================

Checkpointed runs
-----------------
With ``checkpoint=PATH`` the chains do not go through ``MCMC.run`` but through
:func:`bayesmf.infer.checkpoint.run_chunked` with the same NumPyro ``NUTS`` kernel
(``kernel.init`` / ``kernel.sample``, chains vectorised with ``vmap``; warm-up adaptation
lives in the kernel state, so it checkpoints too). Every ``checkpoint_every`` iterations
the state of all chains and the draws so far are written atomically; ``resume=True``
continues a killed run and ends with exactly the draws of an uninterrupted checkpointed
run (iteration ``t`` of chain ``c`` uses ``fold_in(split(PRNGKey(seed), C)[c], t)``, so
the draws do not depend on ``checkpoint_every`` or on where the run was interrupted).
They differ from the draws of the un-checkpointed ``MCMC`` path with the same seed
(another key schedule), and ``native["mcmc"]`` is then ``None`` (``native["kernel"]``
holds the NUTS kernel).
"""

from __future__ import annotations

import time

import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import check_options, fitted_spec
from bayesmf.infer import check_int as _pos_int
from bayesmf.infer.numpyro_model import (FACTOR_PRIORS, build_model, draws_from_samples,
                                         model_data, resolve_factor_prior)
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo

__all__ = ["fit_nuts", "DEFAULTS"]

DEFAULTS = dict(num_samples=500, num_warmup=500, num_chains=2, thin=1,
                chain_method="sequential", centered=False, factor_prior=None,
                target_accept=0.8, max_tree_depth=10, dense_mass=False, checkpoint=None,
                checkpoint_every=None, resume=False, memory_limit=None)


def _validate(o: dict) -> dict:
    o["num_samples"] = _pos_int("num_samples", o["num_samples"])
    o["num_warmup"] = _pos_int("num_warmup", o["num_warmup"], 0)
    o["num_chains"] = _pos_int("num_chains", o["num_chains"])
    o["thin"] = _pos_int("thin", o["thin"])
    o["max_tree_depth"] = _pos_int("max_tree_depth", o["max_tree_depth"])
    if o["thin"] > o["num_samples"]:
        raise SpecError(f"thin={o['thin']} exceeds num_samples={o['num_samples']}")
    if o["chain_method"] not in ("sequential", "vectorized", "parallel"):
        raise SpecError(f"chain_method must be 'sequential', 'vectorized' or 'parallel', "
                        f"got {o['chain_method']!r}")
    if o["factor_prior"] is not None and o["factor_prior"] not in FACTOR_PRIORS:
        raise SpecError(f"factor_prior must be one of {FACTOR_PRIORS}, got {o['factor_prior']!r}")
    for b in ("centered", "dense_mass"):
        if not isinstance(o[b], bool):
            raise SpecError(f"{b} must be True or False, got {o[b]!r}")
    if not isinstance(o["resume"], bool):
        raise SpecError(f"resume must be True or False, got {o['resume']!r}")
    if o["resume"] and o["checkpoint"] is None:
        raise SpecError("resume=True needs checkpoint=PATH (the file the run wrote)")
    if o["checkpoint_every"] is not None:
        o["checkpoint_every"] = _pos_int("checkpoint_every", o["checkpoint_every"])
    ta = o["target_accept"]
    if isinstance(ta, bool) or not isinstance(ta, (int, float)) or not 0 < ta < 1:
        raise SpecError(f"target_accept must be in (0, 1), got {ta!r}")
    return o


def fit_nuts(train: Ratings, spec: ModelSpec, *, seed: int = 0, progress: bool = False,
             **options) -> Posterior:
    """Sample the BPMF posterior with NumPyro NUTS; returns a :class:`Posterior`.

    ``native`` holds ``{"model", "model_args", "mcmc", "offset"}``: the NumPyro model
    function (``model(users, items, y)``, centred ratings ``y = r - offset``), its
    arguments, and the ``MCMC`` object (``mcmc.get_samples()``, ``print_summary()``...).
    """
    spec = fitted_spec(train, spec, "nuts")
    o = _validate(check_options("nuts", options, DEFAULTS))
    spec, o["factor_prior"] = resolve_factor_prior(spec, o["factor_prior"])
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS, init_to_median

    data = model_data(train, spec)
    model = build_model(spec, data.n_users, data.n_items, offset=data.offset, y_offset=data.y_offset,
                        centered=o["centered"], factor_prior=o["factor_prior"])
    kernel = NUTS(model, target_accept_prob=float(o["target_accept"]),
                  max_tree_depth=o["max_tree_depth"], dense_mass=o["dense_mass"],
                  init_strategy=init_to_median(num_samples=15))
    mcmc = MCMC(kernel, num_warmup=o["num_warmup"], num_samples=o["num_samples"],
                num_chains=o["num_chains"], thinning=o["thin"],
                chain_method=o["chain_method"], progress_bar=bool(progress))
    args = tuple(jnp.asarray(a) for a in data.args)
    extra = ("diverging", "num_steps", "accept_prob", "energy", "adapt_state.step_size",
             "potential_energy")
    key = jax.random.PRNGKey(int(seed))
    ckpt = None
    if o["checkpoint"] is not None:
        samples, ex, t0, t1, t2, ckpt = _run_checkpointed(kernel, args, train, spec, o,
                                                           int(seed), progress)
        mcmc = None
    else:
        t0 = time.perf_counter()
        if o["num_warmup"] > 0:
            mcmc.warmup(key, *args, extra_fields=extra, collect_warmup=False)
            key = mcmc.post_warmup_state.rng_key
        t1 = time.perf_counter()
        mcmc.run(key, *args, extra_fields=extra)
        t2 = time.perf_counter()
        samples = mcmc.get_samples(group_by_chain=True)
        ex = mcmc.get_extra_fields(group_by_chain=True)

    draws = draws_from_samples(samples, spec, data.n_users, data.n_items, data.offset)
    num_steps = np.asarray(ex["num_steps"]).astype(np.int64)
    stats = {
        "diverging": np.asarray(ex["diverging"], bool),
        "num_steps": num_steps,
        "tree_depth": np.ceil(np.log2(num_steps + 1)).astype(np.int64),
        "accept_prob": np.asarray(ex["accept_prob"], np.float32),
        "energy": np.asarray(ex["energy"], np.float32),
        "step_size": np.asarray(ex["adapt_state.step_size"], np.float32),
        "lp": -np.asarray(ex["potential_energy"], np.float32),
    }
    attrs = {
        "seed": int(seed),
        "settings": dict(o),
        "backend": "numpyro",
        "offset": data.offset,
        "timings": {"warmup_s": t1 - t0, "sampling_s": t2 - t1, "total_s": t2 - t0},
        "n_divergent": int(stats["diverging"].sum()),
        "mean_tree_depth": float(stats["tree_depth"].mean()),
    }
    if ckpt is not None:
        attrs["checkpoint"] = ckpt
    native = {"model": model, "model_args": args, "mcmc": mcmc, "kernel": kernel,
              "offset": data.offset}
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "nuts", stats, native, attrs)


def _run_checkpointed(kernel, args, train, spec, o, seed, progress):
    """The chains of ``kernel`` (a NumPyro ``NUTS``) through
    :func:`~bayesmf.infer.checkpoint.run_chunked`: returns ``(samples, extra_fields, t0,
    t1, t2, info)`` shaped like ``MCMC.get_samples/get_extra_fields(group_by_chain=True)``
    (see the module docs, *Checkpointed runs*)."""
    import jax
    import jax.numpy as jnp

    from bayesmf.infer import checkpoint as ck

    C, W, S, T = o["num_chains"], o["num_warmup"], o["num_samples"], o["thin"]
    n_iter = W + (S // T - 1) * T + 1  # keeps S // T draws, as MCMC(thinning=T)
    keys = jax.random.split(jax.random.PRNGKey(seed), C)
    t0 = time.perf_counter()
    state = kernel.init(jax.vmap(lambda k: jax.random.fold_in(k, 2**31 - 1))(keys), W,
                        model_args=args)
    constrain = kernel.postprocess_fn(args, {})

    def step(kc, st):
        # the kernel vectorises itself over a batch of chain keys (as MCMC "vectorized")
        return kernel.sample(st._replace(rng_key=kc), args, {}), None

    def extract(st, _):
        return {"z": jax.vmap(constrain)(st.z), "diverging": st.diverging,
                "num_steps": st.num_steps, "accept_prob": st.accept_prob,
                "energy": st.energy, "adapt_state.step_size": st.adapt_state.step_size,
                "potential_energy": st.potential_energy}

    every = o["checkpoint_every"] or max(1, -(-n_iter // 10))
    fp = ck.fingerprint(train, spec, seed, {k: v for k, v in o.items()
                                            if k not in ("checkpoint", "checkpoint_every",
                                                         "resume", "memory_limit")})
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_iter, desc=f"nuts x{C} (checkpointed)", unit="it")

    def on_chunk(t, n):
        if bar is not None:
            bar.update(t - bar.n)

    t1 = time.perf_counter()
    res = ck.run_chunked(ck.scan_chunk(step, extract), state, keys, n_iter, every=every,
                         checkpoint_path=o["checkpoint"], resume=o["resume"], warmup=W,
                         thin=T, fingerprint=fp, meta={"sampler": "numpyro-nuts"},
                         on_chunk=on_chunk, memory_limit=o["memory_limit"])
    t2 = time.perf_counter()
    if bar is not None:
        bar.close()
    # (kept, C, ...) -> (C, kept, ...)
    sw = lambda a: jnp.swapaxes(jnp.asarray(a), 0, 1)  # noqa: E731
    samples = {n: sw(v) for n, v in res.draws["z"].items()}
    extra = {n: sw(v) for n, v in res.draws.items() if n != "z"}
    info = {"path": str(o["checkpoint"]), "every": every, "resumed_at": res.resumed_at}
    return samples, extra, t0, t1, t2, info
