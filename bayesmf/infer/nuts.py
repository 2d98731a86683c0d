r"""Full-posterior inference with NumPyro's No-U-Turn sampler (method ``"nuts"``).

Samples the model of :mod:`bayesmf.infer.numpyro_model` (BPMF with biases; exact
Normal-Wishart factor hyperprior by default, centred, started at the MAP fit) with
NumPyro's ``NUTS`` kernel, run by the package's chain driver (below). Because :math:`U` and :math:`V` are identified only up
to rotation/sign, judge convergence on predictions, biases, :math:`\mu`, :math:`\tau`
(``Posterior.sample_stats`` carries the NUTS diagnostics per chain and draw).

Options (``fit_nuts(train, spec, **options)``):

=================  ===========  =====================================================
``num_samples``    500          kept draws per chain (before thinning)
``num_warmup``     500          adaptation steps per chain (discarded)
``num_chains``     2
``thin``           1            keep every ``thin``-th draw (``num_samples // thin``)
``chain_method``   sequential   ``"sequential"`` or ``"vectorized"`` (one process;
                                ``"parallel"`` needs one JAX device per chain)
``centered``       True         centred (True) or non-centred parametrisation
``factor_prior``   wishart      ``"wishart"`` (exact NW, as Gibbs) or ``"diag"``
``target_accept``  0.8          dual-averaging target acceptance probability
``max_tree_depth`` 7            at most 2**7 - 1 = 127 leapfrog steps per draw
``init``           map          ``"map"``: start at the MAP fit (hyperparameters at their
                                conditional mean, see
                                :func:`~bayesmf.infer.numpyro_model.map_init_values`;
                                falls back to the median with a warning); ``"median"``:
                                the prior median
``dense_mass``     False        diagonal (False) or dense mass matrix
``checkpoint``     None         file path: run resumably (see below)
``checkpoint_every`` None       iterations per checkpoint (default: ~10 per run)
``resume``         False        continue a killed run from ``checkpoint``
``memory_limit``   None         limit for the kept draws (:mod:`bayesmf._memory`)
``lambda_beta_prior`` (1, 1)    Gamma (shape, rate) of :math:`\lambda_\beta` (features)
=================  ===========  =====================================================

Side features (``fit_nuts(..., user_features=, item_features=)``): the Macau prior of
:mod:`bayesmf.infer.numpyro_model` (sites ``beta_U``, ``lambda_beta_U``; items alike; the
MAP start fits the features too). The draws ``beta_U (C,D,F,k)``, ``lambda_beta_U`` and
``posterior.features`` have the layout of the Gibbs Macau posterior, so
:meth:`~bayesmf.posterior.Posterior.with_features` gives cold-start predictions; a
checkpoint records the features and is refused for other ones.

Why these defaults (measured on MovieLens-100K u1, rank 5, one chain, 2 shared cores;
``benchmarks/bench_nuts_defaults.py``, ``benchmarks/results/nuts_defaults.md``): trees
saturate at every depth up to 8 and stop at depth 8 (255 steps) when allowed 10, so the
old depth 10 cost ~4x depth 7 per draw without more ESS per second; depth 7 gives the
best ESS/s of the probe predictions (depth 6 is faster per draw but its worst probe
prediction mixes 4x worse). The centred parametrisation gave ~2x the ESS/s of the
non-centred one on predictions and more ESS on ``tau`` (the data are informative enough
per user and item that the funnel the non-centred form removes is mild; for very sparse
data try ``centered=False``). The MAP start removes the long transient from the prior
median (30 of 50 draws divergent, R-hat 2 at 50 + 50 draws). With these defaults
``bayesmf fit u1.base --method nuts --rank 5 --samples 200 --warmup 200 --chains 1``
takes 2.7-3.8 minutes (load 2-4) with split R-hat <= 1.06 and bulk ESS >= 40 on 50 probe
predictions. Weak spot: the global mean :math:`\mu` mixes slowly (ESS 2-11 of 200; the
MAP puts the whole offset in :math:`\mu`, the posterior shares it with
:math:`\mu_U^\top\mu_V`); the Gibbs sampler mixes it 10-50x better per draw (ESS 95).

Driver, checkpoints
-------------------
The chains do not go through ``numpyro.infer.MCMC`` but through the package's one chain
driver, :func:`bayesmf.infer.driver.run_chains` (shared with Gibbs), with NumPyro's
``NUTS`` kernel (``kernel.init`` / ``kernel.sample``; warm-up adaptation lives in the
kernel state, so it checkpoints too): the same progress bar (draws/s and ETA), compile
message and cache, memory check and checkpoints as Gibbs. Iteration ``t`` of chain ``c``
uses ``fold_in(split(PRNGKey(seed), C)[c], t)``, so the draws do not depend on
``checkpoint_every`` or on where a run was interrupted: with ``checkpoint=PATH`` every
``checkpoint_every`` iterations the state of all chains and the draws so far are written
atomically, and ``resume=True`` continues a killed run to exactly the draws of an
uninterrupted one (checkpointed or not). ``attrs["timings"]`` splits init, compile,
warm-up and sampling seconds; ``attrs["seconds_per_draw"]`` is the post-warm-up time per
iteration (all chains).
"""

from __future__ import annotations

import time

import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import (check_bool, check_factor_prior, check_options, fitted_spec,
                           warn_divergences)
from bayesmf.infer import check_int as _pos_int
from bayesmf.infer.driver import Program, compile_logger, run_chains
from bayesmf.infer.numpyro_model import (INITS, _lambda_beta_prior, build_model,
                                         draws_from_samples, init_strategy, model_data,
                                         model_features, resolve_factor_prior)
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo

__all__ = ["fit_nuts", "DEFAULTS"]

DEFAULTS = dict(num_samples=500, num_warmup=500, num_chains=2, thin=1,
                chain_method="sequential", centered=True, factor_prior=None,
                target_accept=0.8, max_tree_depth=7, dense_mass=False, checkpoint=None,
                checkpoint_every=None, resume=False, memory_limit=None, init="map",
                lambda_beta_prior=(1.0, 1.0))


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
    if o["init"] not in INITS:
        raise SpecError(f"init must be one of {INITS}, got {o['init']!r}")
    check_factor_prior(o["factor_prior"])
    for b in ("centered", "dense_mass", "resume"):
        check_bool(b, o[b])
    if o["resume"] and o["checkpoint"] is None:
        raise SpecError("resume=True needs checkpoint=PATH (the file the run wrote)")
    if o["checkpoint_every"] is not None:
        if o["checkpoint"] is None:
            raise SpecError("checkpoint_every applies with checkpoint=PATH (the file the run "
                            "writes)")
        o["checkpoint_every"] = _pos_int("checkpoint_every", o["checkpoint_every"])
    ta = o["target_accept"]
    if isinstance(ta, bool) or not isinstance(ta, (int, float)) or not 0 < ta < 1:
        raise SpecError(f"target_accept must be in (0, 1), got {ta!r}")
    o["lambda_beta_prior"] = list(_lambda_beta_prior(o["lambda_beta_prior"]))
    return o


def fit_nuts(train: Ratings, spec: ModelSpec, *, seed: int = 0, progress: bool = False,
             user_features=None, item_features=None, **options) -> Posterior:
    """Sample the BPMF posterior with NumPyro NUTS; returns a :class:`Posterior`.

    ``native`` holds ``{"model", "model_args", "kernel", "offset"}``: the NumPyro model
    function (``model(users, items, y)``, centred ratings ``y = r - offset``), its
    arguments and the ``NUTS`` kernel. The chains run through the package's one driver
    (:func:`bayesmf.infer.driver.run_chains`), as the Gibbs sweeps do.
    """
    from bayesmf.infer import likelihood_fitter

    own = likelihood_fitter("nuts", spec)  # a family with its own fitter (e.g. HPF)
    if own is not None:
        if user_features is not None or item_features is not None:
            raise SpecError(f"side features are not supported by the "
                            f"{spec.likelihood.name!r} likelihood's nuts fitter")
        return own(train, spec, seed=seed, progress=progress, **options)
    spec = fitted_spec(train, spec, "nuts")
    o = _validate(check_options("nuts", options, DEFAULTS))
    spec, o["factor_prior"] = resolve_factor_prior(spec, o["factor_prior"])
    import jax
    import jax.numpy as jnp
    from numpyro.infer import NUTS

    data = model_data(train, spec)
    aligned, X = model_features(train, spec, user_features, item_features, "nuts")
    model = build_model(spec, data.n_users, data.n_items, offset=data.offset, y_offset=data.y_offset,
                        centered=o["centered"], factor_prior=o["factor_prior"], features=X,
                        lambda_beta_prior=o["lambda_beta_prior"])
    kernel = NUTS(model, target_accept_prob=float(o["target_accept"]),
                  max_tree_depth=o["max_tree_depth"], dense_mass=o["dense_mass"],
                  init_strategy=init_strategy(o["init"], train, spec, data,
                                              centered=o["centered"],
                                              factor_prior=o["factor_prior"], seed=int(seed),
                                              user_features=aligned["user"],
                                              item_features=aligned["item"],
                                              lambda_beta_prior=o["lambda_beta_prior"]))
    args = tuple(jnp.asarray(a) for a in data.args)
    C, W, S, T = o["num_chains"], o["num_warmup"], o["num_samples"], o["thin"]
    keys = jax.random.split(jax.random.PRNGKey(int(seed)), C)
    t0 = time.perf_counter()
    # warm-up adaptation lives in the kernel state (NumPyro's functional HMC), so it
    # runs, checkpoints and resumes through the driver like the Gibbs sweep
    # one unbatched init per chain: the kernel's sample function stays per-chain (the
    # driver vectorises it itself)
    states = [kernel.init(jax.random.fold_in(k, 2**31 - 1), W, model_args=args)
              for k in keys]
    state = jax.tree_util.tree_map(lambda *a: jnp.stack([jnp.asarray(x) for x in a]),
                                   *states)
    fp = ""
    if o["checkpoint"] is not None:
        from bayesmf.infer import checkpoint as ck

        fp = ck.fingerprint(train, spec, int(seed), {k: v for k, v in o.items()
                                                     if k not in ("checkpoint",
                                                                  "checkpoint_every",
                                                                  "resume", "memory_limit")})
        if X:  # a run with features never resumes one without (or other ones)
            import hashlib

            h = hashlib.sha256(fp.encode())
            for side, f in aligned.items():
                if f is not None:
                    h.update(side.encode())
                    h.update(repr(f.schema).encode())
                    h.update(np.ascontiguousarray(f.dense(), np.float64).tobytes())
            fp = h.hexdigest()
    t1 = time.perf_counter()
    run = run_chains(_program(kernel), args, state, keys, num_samples=S // T, num_warmup=W,
                     thin=T, chain_method=o["chain_method"], checkpoint=o["checkpoint"],
                     checkpoint_every=o["checkpoint_every"], resume=o["resume"],
                     fingerprint=fp, meta={"sampler": "numpyro-nuts"}, progress=progress,
                     memory_limit=o["memory_limit"], log=compile_logger(progress),
                     what=f"the NUTS draws ({C} chain(s) x {S // T} draws)")
    t2 = time.perf_counter()
    samples, ex = run.draws["z"], {n: v for n, v in run.draws.items() if n != "z"}
    ckpt = None
    if o["checkpoint"] is not None:
        ckpt = {"path": str(o["checkpoint"]),
                "every": o["checkpoint_every"] or max(1, -(-run.n_iter // 10)),
                "resumed_at": run.resumed_at}
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
        "timings": {"init_s": t1 - t0, "compile_s": run.compile_seconds,
                    "warmup_s": run.warmup_seconds,
                    "sampling_s": run.sampling_seconds - run.warmup_seconds,
                    "total_s": t2 - t0},
        "compile_seconds": run.compile_seconds,
        "seconds_per_draw": (run.sampling_seconds - run.warmup_seconds)
        / max(1, run.n_iter - W),
        "n_divergent": warn_divergences(stats["diverging"], "nuts"),
        "mean_tree_depth": float(stats["tree_depth"].mean()),
    }
    if ckpt is not None:
        attrs["checkpoint"] = ckpt
    if X:
        attrs["macau"] = {"sides": [[side, f.n_features] for side, f in aligned.items()
                                    if f is not None],
                          "lambda_beta_prior": o["lambda_beta_prior"]}
    native = {"model": model, "model_args": args, "kernel": kernel, "offset": data.offset}
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "nuts", stats, native, attrs, aligned if X else None)


def _program(kernel) -> Program:
    """NumPyro's NUTS kernel as a :class:`~bayesmf.infer.driver.Program`: one NUTS
    transition (with its warm-up adaptation while ``state.i < num_warmup``) per iteration;
    kept: the constrained sample ``z`` and the sampler statistics."""

    def step(args, key, st):
        return kernel.sample(st._replace(rng_key=key), args, {}), {}

    def extract(args, st, info):
        return {"z": kernel.postprocess_fn(args, {})(st.z), "diverging": st.diverging,
                "num_steps": st.num_steps, "accept_prob": st.accept_prob,
                "energy": st.energy, "adapt_state.step_size": st.adapt_state.step_size,
                "potential_energy": st.potential_energy}

    return Program("nuts", step, extract, None, None, None, "draw")
