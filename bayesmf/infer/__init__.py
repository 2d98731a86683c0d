"""Inference methods. Every method has the signature

    fit_<name>(train: Ratings, spec: ModelSpec, *, seed: int = 0,
               progress: bool = False, **options) -> Posterior

and is registered in :data:`METHODS` by import path, so a backend (JAX, NumPyro, PyMC)
is imported only when its method is used. Each method validates its own ``options``
with :func:`check_options` (one place per method).
"""

from __future__ import annotations

import importlib

from bayesmf.errors import SpecError, UnknownOptionError

__all__ = ["METHODS", "get_method", "check_options", "check_fit_inputs", "fitted_spec",
           "check_int", "likelihood_fitter"]

#: method name -> "module:function"
METHODS: dict[str, str] = {
    "map": "bayesmf.infer.map:fit_map",
    "gibbs": "bayesmf.infer.gibbs:fit_gibbs",
    "nuts": "bayesmf.infer.nuts:fit_nuts",
    "svi": "bayesmf.infer.svi:fit_svi",
    "pymc-nuts": "bayesmf.infer.pymc:fit_pymc_nuts",
    "pymc-advi": "bayesmf.infer.pymc:fit_pymc_advi",
    "cavi": "bayesmf.infer.hpf:fit_cavi",
    "nmf": "bayesmf.infer.nmf:fit_nmf",
    "propagation": "bayesmf.infer.propagation:fit_propagated",
}


def get_method(name: str):
    """Return the fit function of a method, with a clear error for unknown names."""
    if not isinstance(name, str) or name not in METHODS:
        raise SpecError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    mod, fn = METHODS[name].split(":")
    return getattr(importlib.import_module(mod), fn)


def likelihood_fitter(method: str, spec):
    """The fit function a likelihood brings for ``method`` (its ``fitters`` mapping of
    method name -> ``"module:function"``), or ``None`` for the method's own.

    A family whose inference is not the shared one (implicit ALS for the MAP of the
    implicit likelihood, a Poisson-Gamma sampler) plugs in here: each ``fit_<method>``
    asks first, so no inference path branches on the family's name."""
    lik = getattr(spec, "likelihood", None)  # not a ModelSpec: the method's checks say so
    target = dict(getattr(lik, "fitters", None) or {}).get(method)
    if target is None:
        return None
    mod, fn = target.split(":")
    return getattr(importlib.import_module(mod), fn)


def check_options(method: str, options: dict, defaults: dict) -> dict:
    """Merge ``options`` over ``defaults``; unknown keys raise :class:`SpecError`."""
    unknown = sorted(set(options) - set(defaults))
    ck = [n for n in unknown if n in ("checkpoint", "checkpoint_every", "resume")]
    if ck:
        raise SpecError(f"this {method!r} fitter writes no checkpoints ({ck} given); "
                        f"checkpoints are written by the Gibbs samplers and the NumPyro "
                        f"NUTS of the Gaussian-factor models")
    if unknown:
        raise UnknownOptionError(f"method {method!r} got unknown option(s) {unknown}; "
                                 f"it accepts {sorted(defaults)}", method, unknown)
    out = dict(defaults)
    out.update(options)
    return out


def check_fit_inputs(train, spec) -> None:
    """The common checks of every ``fit_<name>``: ``train`` is a
    :class:`~bayesmf.data.Ratings` (DataFrames go through :func:`bayesmf.as_ratings` or
    the :class:`~bayesmf.BayesMF` estimator), ``spec`` a ``ModelSpec``, and the rank and
    data fit together (:meth:`ModelSpec.check_data`)."""
    from bayesmf.data.ratings import Ratings
    from bayesmf.model.spec import ModelSpec

    if not isinstance(train, Ratings):
        raise SpecError(f"train must be a Ratings container, got {type(train).__name__} "
                        "(convert a DataFrame with bayesmf.as_ratings(df) or use "
                        "bayesmf.BayesMF(...).fit(df))")
    if not isinstance(spec, ModelSpec):
        raise SpecError(f"spec must be a ModelSpec, got {type(spec).__name__}")
    spec.check_data(train.n_users, train.n_items, train.nnz)


def fitted_spec(train, spec, method: str | None = None):
    """:func:`check_fit_inputs`, then the spec whose likelihood has seen the training
    values (:meth:`~bayesmf.model.likelihoods.Likelihood.fit_data`: values validated for
    the family -- 0/1 for Bernoulli --, ordinal levels learned) and whose scale-aware
    prior defaults are filled in (:meth:`~bayesmf.model.spec.BayesPriors.resolved`). With
    ``method`` the method x likelihood pair is checked too. This is the spec a Posterior
    keeps."""
    check_fit_inputs(train, spec)
    lik = spec.likelihood
    if method is not None:
        lik.check_method(method)
    fitted = lik.fit_data(train.rating)
    changes = {} if fitted == lik else {"likelihood": fitted}
    if not spec.priors.is_resolved:
        changes["priors"] = spec.priors.resolved(fitted.prior_scale(train.rating))
    if spec.prior.support == "real":
        spec.prior.nu0(spec)  # validates nu0 against the rank
    return spec.replace(**changes) if changes else spec


def check_int(name: str, v, minimum: int = 1, allow_none: bool = False):
    """``v`` as an ``int`` if it is an integer (not a bool) ``>= minimum``, else a
    :class:`SpecError` naming the option (``None`` passes through with ``allow_none``)."""
    import numpy as np

    if v is None and allow_none:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise SpecError(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def warn_divergences(diverging, sampler: str) -> int:
    """Warn when NUTS draws ended in a divergent transition (the sampler could not follow
    the posterior's curvature there, so the draws may be biased); returns their number.
    ``diverging`` is the per-draw flag array (any shape)."""
    import warnings

    import numpy as np

    d = np.asarray(diverging, bool)
    n = int(d.sum())
    if n:
        warnings.warn(f"{sampler}: {n} of {d.size} kept draws ({n / d.size:.1%}) ended in a "
                      "divergent transition; the posterior may be biased where the sampler "
                      "could not go. Raise target_accept (e.g. 0.95), try centered=True/False, "
                      "or use the Gibbs sampler (sample_stats['diverging'] marks the draws)",
                      stacklevel=3)
    return n


def check_bool(name: str, v) -> bool:
    """``v`` if it is ``True`` or ``False`` (not 0 / 1 or a string), else a
    :class:`SpecError` naming the option."""
    if not isinstance(v, bool):
        raise SpecError(f"{name} must be True or False, got {v!r}")
    return v


def check_pairs(pairs, n_users: int, n_items: int):
    """A ``predict_pairs=(u_idx, i_idx)`` option as two int32 JAX arrays after checking
    that they are equal-length 1-d integer index arrays inside the training
    vocabularies (``None`` passes through)."""
    import jax.numpy as jnp
    import numpy as np

    if pairs is None:
        return None
    try:
        pu, pi = (np.asarray(a) for a in pairs)
    except (TypeError, ValueError):
        raise SpecError("predict_pairs must be a pair (u_idx, i_idx) of integer index "
                        f"arrays, got {type(pairs).__name__}") from None
    if (pu.ndim != 1 or pu.shape != pi.shape or pu.dtype.kind not in "iu"
            or pi.dtype.kind not in "iu"):
        raise SpecError("predict_pairs must be two equal-length 1-d integer index arrays")
    if pu.size and (pu.min() < 0 or pu.max() >= n_users or pi.min() < 0
                    or pi.max() >= n_items):
        raise SpecError("predict_pairs indices fall outside the training vocabularies")
    return jnp.asarray(pu, jnp.int32), jnp.asarray(pi, jnp.int32)


def check_factor_prior(v):
    """A NumPyro / PyMC ``factor_prior`` option: None (the spec's) or one of
    :data:`~bayesmf.infer.numpyro_model.FACTOR_PRIORS`."""
    from bayesmf.infer.numpyro_model import FACTOR_PRIORS

    if v is not None and v not in FACTOR_PRIORS:
        raise SpecError(f"factor_prior must be one of {FACTOR_PRIORS}, got {v!r}")
    return v
