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
=================  ===========  =====================================================
"""

from __future__ import annotations

import time

import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import check_fit_inputs, check_options
from bayesmf.infer.numpyro_model import FACTOR_PRIORS, build_model, draws_from_samples, model_data
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo

__all__ = ["fit_nuts", "DEFAULTS"]

DEFAULTS = dict(num_samples=500, num_warmup=500, num_chains=2, thin=1,
                chain_method="sequential", centered=False, factor_prior="wishart",
                target_accept=0.8, max_tree_depth=10, dense_mass=False)


def _pos_int(name, v, minimum=1):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise SpecError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


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
    if o["factor_prior"] not in FACTOR_PRIORS:
        raise SpecError(f"factor_prior must be one of {FACTOR_PRIORS}, got {o['factor_prior']!r}")
    for b in ("centered", "dense_mass"):
        if not isinstance(o[b], bool):
            raise SpecError(f"{b} must be True or False, got {o[b]!r}")
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
    check_fit_inputs(train, spec)
    o = _validate(check_options("nuts", options, DEFAULTS))
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, NUTS, init_to_median

    data = model_data(train, spec)
    model = build_model(spec, data.n_users, data.n_items, offset=data.offset,
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
    t0 = time.perf_counter()
    if o["num_warmup"] > 0:
        mcmc.warmup(key, *args, extra_fields=extra, collect_warmup=False)
        key = mcmc.post_warmup_state.rng_key
    t1 = time.perf_counter()
    mcmc.run(key, *args, extra_fields=extra)
    t2 = time.perf_counter()

    samples = mcmc.get_samples(group_by_chain=True)
    draws = draws_from_samples(samples, spec, data.n_users, data.n_items, data.offset)
    ex = mcmc.get_extra_fields(group_by_chain=True)
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
    native = {"model": model, "model_args": args, "mcmc": mcmc, "offset": data.offset}
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "nuts", stats, native, attrs)
