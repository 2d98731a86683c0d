r"""The shared BPMF model in PyMC (methods ``"pymc-nuts"`` and ``"pymc-advi"``).

The same model, parametrisation and hyperpriors as :mod:`bayesmf.infer.numpyro_model`
(read its docstring for the equations): centred ratings :math:`y = r - \bar r` with
:math:`\mu = \bar r + \mu_c`; Gamma precisions on the biases and the noise; for the
factors either the exact Normal-Wishart of the Gibbs sampler through the Bartlett
decomposition (``factor_prior="wishart"``, default) or independent Gamma precisions per
factor dimension (``"diag"``); non-centred by default.

Coordinates come from the vocabularies: dims ``user`` (raw user ids), ``item`` (raw item
ids), ``factor`` (``0..k-1``), ``factor_`` (second factor axis of ``Lambda_*``),
``factor_pair`` (Bartlett off-diagonals) and ``obs`` (observed entries; absent with
minibatches). ``bu, bi, U, V, mu, mu_U, Lambda_U, ...`` are ``pm.Deterministic`` so they
appear in the posterior group under the standard names.

* :func:`fit_pymc_nuts` -- ``pm.sample(nuts_sampler="numpyro")``: the PyMC graph is
  compiled to JAX and run with NumPyro's NUTS (nutpie was not used: see the package
  report; NumPyro keeps the whole run inside JAX and needs no numba compilation).
  Options: ``num_samples`` (500), ``num_warmup`` (500), ``num_chains`` (2), ``thin`` (1:
  keeps ``num_samples // thin`` draws, every ``thin``-th, as :mod:`bayesmf.infer.nuts`),
  ``chain_method`` ("sequential" | "vectorized"), ``target_accept`` (0.8),
  ``max_tree_depth`` (10), ``centered`` (False), ``factor_prior`` ("wishart").
* :func:`fit_pymc_advi` -- ``pm.fit(method="advi" | "fullrank_advi")`` with Adam (option
  ``advi``: ``"meanfield"`` or ``"fullrank"``; not called ``method``, which would clash
  with ``BayesMF(method=...)`` and the CLI's ``--method``); with
  ``batch_size`` the observed entries are subsampled by ``pm.Minibatch`` and the
  likelihood is rescaled with ``total_size=nnz``. Convergence: relative change of the
  window-mean ELBO below ``tol`` for ``patience`` consecutive windows of ``window`` steps
  (same rule as ``svi``); draws (``num_samples``) from the fitted approximation.
  Options: ``advi`` ("meanfield"), ``num_steps`` (20000, maximum), ``learning_rate``
  (0.01), ``batch_size`` (None), ``num_samples`` (500), ``tol`` (1e-4), ``window``
  (100), ``patience`` (2), ``init_scale`` (0.1, initial sd of the mean-field ADVI
  factors in the unconstrained space), ``centered`` (False), ``factor_prior`` ("wishart").

``Posterior.native`` holds ``{"model": pm.Model, "idata": DataTree, ...}``; change priors
with :func:`build_pymc_model` on ``spec.replace(priors=...)`` and sample it yourself.
"""

from __future__ import annotations

import contextlib
import time
import warnings

import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import (check_bool, check_factor_prior, check_options, fitted_spec,
                           warn_divergences)
from bayesmf.infer import check_int as _pos_int
from bayesmf.infer.numpyro_model import (draws_from_samples, effective_nu0,
                                         model_data, resolve_factor_prior)
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo

__all__ = ["fit_pymc_nuts", "fit_pymc_advi", "build_pymc_model", "NUTS_DEFAULTS",
           "ADVI_DEFAULTS"]

NUTS_DEFAULTS = dict(num_samples=500, num_warmup=500, num_chains=2, thin=1,
                     chain_method="sequential", target_accept=0.8, max_tree_depth=10,
                     centered=False, factor_prior=None)
ADVI_DEFAULTS = dict(advi="meanfield", num_steps=20000, learning_rate=0.01, batch_size=None,
                     num_samples=500, tol=1e-4, window=100, patience=2, init_scale=0.1,
                     centered=False, factor_prior=None)
_SITES = ("mu", "bu", "bi", "U", "V", "tau", "cutpoints", "lambda_bu", "lambda_bi", "mu_U",
          "Lambda_U", "mu_V", "Lambda_V")


@contextlib.contextmanager
def _quiet(progress):
    """Without ``progress``, PyMC's own log lines (the sampler's site list, "Finished",
    the short-chain notice: bayesmf reports diagnostics itself) are held back; errors
    still show."""
    import logging

    log = logging.getLogger("pymc")
    level = log.level
    if not progress:
        log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def build_pymc_model(train: Ratings, spec: ModelSpec, *, centered: bool = False,
                     factor_prior: str | None = None, batch_size: int | None = None,
                     rng_seed: int | None = None):
    """Build the ``pm.Model`` of the shared model for ``train`` (see module docs).

    Returns ``(model, offset)``; ``offset`` is the training mean that was subtracted.
    """
    import pymc as pm
    import pytensor.tensor as pt
    try:  # PyTensor >= 2.31 moved it; the old path warns and goes away in PyTensor 3
        from pytensor.tensor.linalg import solve_triangular
    except ImportError:  # pragma: no cover - older PyTensor
        from pytensor.tensor.slinalg import solve_triangular

    check_factor_prior(factor_prior)
    data = model_data(train, spec)
    spec, factor_prior = resolve_factor_prior(data.spec, factor_prior)
    lik = spec.likelihood
    eta_shift = data.offset - data.y_offset
    # int32: pm.Minibatch casts int64 data to int32, which PyMC then refuses as observed
    y_all = data.y.astype(np.int32) if lik.discrete else data.y.astype(np.float64)
    pri = spec.priors
    k = spec.rank
    nu0 = effective_nu0(spec)
    tri_r, tri_c = np.tril_indices(k, -1)
    coords = {"user": train.users.ids, "item": train.items.ids,
              "factor": np.arange(k), "factor_": np.arange(k),
              "factor_pair": np.arange(len(tri_r))}
    if batch_size is None:
        coords["obs"] = np.arange(data.nnz)
    with pm.Model(coords=coords) as model:
        if batch_size is None:
            u, i, y = data.users, data.items, y_all
            obs_kw = {"dims": "obs"}
        else:
            u, i, y = pm.Minibatch(data.users.astype(np.int64), data.items.astype(np.int64),
                                   y_all, batch_size=int(batch_size))
            obs_kw = {"total_size": data.nnz}
        if spec.global_mean:
            if pri.lambda_mu > 0:
                mu_c = pm.Normal("mu_c", pri.mu_mean - data.offset, 1.0 / np.sqrt(pri.lambda_mu))
            else:
                mu_c = pm.Flat("mu_c")
            pm.Deterministic("mu", mu_c + data.offset)
        else:
            mu_c = 0.0
        theta = lik.pymc_theta(spec)

        def bias(name, lam_name, dim):
            lam = pm.Gamma(lam_name, alpha=pri.bias_a, beta=pri.bias_b)
            if centered:
                return pm.Normal(name, 0.0, 1.0 / pt.sqrt(lam), dims=dim)
            z = pm.Normal(name + "_z", 0.0, 1.0, dims=dim)
            return pm.Deterministic(name, z / pt.sqrt(lam), dims=dim)

        def factors(side, dim):
            if factor_prior == "wishart":
                chi_df = nu0 - np.arange(k, dtype=np.float64)
                c = pm.Gamma(side + "_chi2", alpha=chi_df / 2.0, beta=0.5, dims="factor")
                A = pt.zeros((k, k))
                A = pt.set_subtensor(A[np.arange(k), np.arange(k)], pt.sqrt(c))
                if k > 1:
                    off = pm.Normal(side + "_offdiag", 0.0, 1.0, dims="factor_pair")
                    A = pt.set_subtensor(A[tri_r, tri_c], off)
                L = np.sqrt(pri.w0) * A
                Lam = pm.Deterministic("Lambda_" + side, L @ L.T, dims=("factor", "factor_"))
                if centered:
                    mu_f = pm.MvNormal("mu_" + side, mu=np.zeros(k), tau=pri.beta0 * Lam,
                                       dims="factor")
                    return pm.MvNormal(side, mu=mu_f, tau=Lam, dims=(dim, "factor"))
                zm = pm.Normal("mu_" + side + "_z", 0.0, 1.0, dims="factor")
                mu_f = pm.Deterministic(
                    "mu_" + side,
                    solve_triangular(L, zm, lower=True, trans="T") / np.sqrt(pri.beta0),
                    dims="factor")
                Z = pm.Normal(side + "_z", 0.0, 1.0, dims=(dim, "factor"))
                return pm.Deterministic(
                    side, mu_f + solve_triangular(L, Z.T, lower=True, trans="T").T,
                    dims=(dim, "factor"))
            lam = pm.Gamma("lambda_" + side, alpha=nu0 / 2.0, beta=1.0 / (2.0 * pri.w0),
                           dims="factor")
            pm.Deterministic("Lambda_" + side, pt.diag(lam), dims=("factor", "factor_"))
            sd = 1.0 / pt.sqrt(lam)
            if centered:
                mu_f = pm.Normal("mu_" + side, 0.0, sd / np.sqrt(pri.beta0), dims="factor")
                return pm.Normal(side, mu_f, sd, dims=(dim, "factor"))
            zm = pm.Normal("mu_" + side + "_z", 0.0, 1.0, dims="factor")
            mu_f = pm.Deterministic("mu_" + side, zm * sd / np.sqrt(pri.beta0), dims="factor")
            Z = pm.Normal(side + "_z", 0.0, 1.0, dims=(dim, "factor"))
            return pm.Deterministic(side, mu_f + Z * sd, dims=(dim, "factor"))

        pred = mu_c
        if spec.user_bias:
            pred = pred + bias("bu", "lambda_bu", "user")[u]
        if spec.item_bias:
            pred = pred + bias("bi", "lambda_bi", "item")[i]
        if k:
            U = factors("U", "user")
            V = factors("V", "item")
            pred = pred + (U[u] * V[i]).sum(axis=-1)
        lik.pymc_obs(pred + eta_shift, theta, y, **obs_kw)
    return model, data.offset


def _pos_float(name, v, upper=None):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0) \
            or v == float("inf") or (upper is not None and v >= upper):
        rng = f"in (0, {upper})" if upper is not None else "a positive number"
        raise SpecError(f"{name} must be {rng}, got {v!r}")
    return float(v)


def _common(o):
    check_factor_prior(o["factor_prior"])
    check_bool("centered", o["centered"])
    o["num_samples"] = _pos_int("num_samples", o["num_samples"])


def _posterior_dict(idata, names) -> dict:
    post = idata["posterior"] if "posterior" in idata else idata.posterior
    return {n: np.asarray(post[n].values) for n in names if n in post}


def _stats(idata) -> dict:
    if "sample_stats" not in idata:
        return {}
    ss = idata["sample_stats"]
    ren = {"diverging": "diverging", "tree_depth": "tree_depth", "n_steps": "num_steps",
           "step_size": "step_size", "acceptance_rate": "accept_prob", "energy": "energy",
           "lp": "lp"}
    out = {}
    for src, dst in ren.items():
        if src in ss:
            a = np.asarray(ss[src].values)
            out[dst] = a.astype(bool) if dst == "diverging" else (
                a.astype(np.int64) if a.dtype.kind in "iu" else a.astype(np.float32))
    return out


@contextlib.contextmanager
def _pytensor_jax_precision():
    """JAX's ``jax_enable_x64`` as PyTensor's JAX backend needs it for the sampling, and as
    it was afterwards. PyTensor's JAX dispatch module sets the *global* flag from
    ``pytensor.config.floatX`` when it is first imported (x64 on for the default
    float64), which would change the default dtype of every later JAX computation of
    the process -- the caller's and bayesmf's; it is switched back here."""
    import jax
    import pytensor

    before = bool(jax.config.jax_enable_x64)
    jax.config.update("jax_enable_x64", pytensor.config.floatX == "float64")
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", before)


def fit_pymc_nuts(train: Ratings, spec: ModelSpec, *, seed: int = 0, progress: bool = False,
                  **options) -> Posterior:
    """NUTS on the PyMC model via ``pm.sample(nuts_sampler="numpyro")``."""
    spec = fitted_spec(train, spec, "pymc-nuts")
    o = check_options("pymc-nuts", options, NUTS_DEFAULTS)
    _common(o)
    spec, o["factor_prior"] = resolve_factor_prior(spec, o["factor_prior"])
    o["num_warmup"] = _pos_int("num_warmup", o["num_warmup"], 0)
    o["num_chains"] = _pos_int("num_chains", o["num_chains"])
    o["thin"] = _pos_int("thin", o["thin"])
    o["max_tree_depth"] = _pos_int("max_tree_depth", o["max_tree_depth"])
    o["target_accept"] = _pos_float("target_accept", o["target_accept"], upper=1.0)
    if o["thin"] > o["num_samples"]:
        raise SpecError(f"thin={o['thin']} exceeds num_samples={o['num_samples']}")
    if o["chain_method"] not in ("sequential", "vectorized"):
        raise SpecError(f"chain_method must be 'sequential' or 'vectorized', "
                        f"got {o['chain_method']!r}")
    import pymc as pm

    model, offset = build_pymc_model(train, spec, centered=o["centered"],
                                     factor_prior=o["factor_prior"])
    names = [n for n in _SITES + tuple(spec.likelihood.theta_names)
             if n in model.named_vars]
    t0 = time.perf_counter()
    with model, warnings.catch_warnings(), _pytensor_jax_precision(), _quiet(progress):
        # numpyro warns that "parallel" chains fall back to sequential on one device
        warnings.filterwarnings("ignore", message=".*There are not enough devices.*")
        idata = pm.sample(
            draws=o["num_samples"], tune=o["num_warmup"], chains=o["num_chains"],
            nuts_sampler="numpyro", random_seed=int(seed), progressbar=bool(progress),
            var_names=names, compute_convergence_checks=False,
            nuts={"target_accept": o["target_accept"],
                  "max_tree_depth": o["max_tree_depth"],
                  "chain_method": ("parallel" if o["chain_method"] == "sequential"
                                   else "vectorized")})
    t1 = time.perf_counter()
    samples = _posterior_dict(idata, names)
    stats = _stats(idata)
    if o["thin"] > 1:  # num_samples // thin draws, as NumPyro NUTS keeps
        keep = o["num_samples"] // o["thin"]
        samples = {n: a[:, ::o["thin"]][:, :keep] for n, a in samples.items()}
        stats = {n: a[:, ::o["thin"]][:, :keep] for n, a in stats.items()}
    draws = draws_from_samples(samples, spec, train.n_users, train.n_items, offset)
    attrs = {"seed": int(seed), "settings": dict(o), "backend": "pymc+numpyro",
             "offset": offset, "timings": {"total_s": t1 - t0},
             "n_divergent": (warn_divergences(stats["diverging"], "pymc-nuts")
                             if "diverging" in stats else None)}
    native = {"model": model, "idata": idata, "offset": offset}
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "pymc-nuts", stats, native, attrs)


def fit_pymc_advi(train: Ratings, spec: ModelSpec, *, seed: int = 0, progress: bool = False,
                  **options) -> Posterior:
    """Mean-field (``advi="meanfield"``) or full-rank (``advi="fullrank"``) ADVI with PyMC;
    draws from the fit. ``init_scale`` applies to the mean-field variant."""
    spec = fitted_spec(train, spec, "pymc-advi")
    o = check_options("pymc-advi", options, ADVI_DEFAULTS)
    _common(o)
    spec, o["factor_prior"] = resolve_factor_prior(spec, o["factor_prior"])
    pm_method = {"meanfield": "advi", "fullrank": "fullrank_advi"}.get(o["advi"])
    if pm_method is None:
        raise SpecError(f"advi must be 'meanfield' or 'fullrank', got {o['advi']!r}")
    if "init_scale" in options and pm_method != "advi":
        raise SpecError("init_scale sets the initial sd of the mean-field ADVI factors; "
                        "advi='fullrank' does not take it")
    o["num_steps"] = _pos_int("num_steps", o["num_steps"])
    o["window"] = _pos_int("window", o["window"])
    o["patience"] = _pos_int("patience", o["patience"])
    o["batch_size"] = _pos_int("batch_size", o["batch_size"], allow_none=True)
    if o["batch_size"] is not None and o["batch_size"] >= train.nnz:
        o["batch_size"] = None
    o["learning_rate"] = _pos_float("learning_rate", o["learning_rate"])
    o["tol"] = _pos_float("tol", o["tol"])
    o["init_scale"] = _pos_float("init_scale", o["init_scale"])
    import pymc as pm

    model, offset = build_pymc_model(train, spec, centered=o["centered"],
                                     factor_prior=o["factor_prior"],
                                     batch_size=o["batch_size"])
    names = [n for n in _SITES + tuple(spec.likelihood.theta_names)
             if n in model.named_vars]
    W, tol, patience = o["window"], o["tol"], o["patience"]
    state = {"converged": False, "streak": 0}

    def check(approx, losses, i):
        # losses are -ELBO per step; compare consecutive window means
        if i % W or i < 2 * W:
            return
        a = float(np.mean(losses[i - W:i]))
        b = float(np.mean(losses[i - 2 * W:i - W]))
        rel = abs(a - b) / max(abs(a), 1e-12)
        state["streak"] = state["streak"] + 1 if rel < tol else 0
        if state["streak"] >= patience:
            state["converged"] = True
            raise StopIteration

    t0 = time.perf_counter()
    with model, _quiet(progress):
        # mean-field: start every unconstrained sd at init_scale (as the NumPyro guides);
        # PyMC's own default (softplus(0) = 0.69) makes early ELBO estimates very noisy
        extra = ({"start_sigma": {v.name: o["init_scale"] for v in model.value_vars}}
                 if pm_method == "advi" else {})
        approx = pm.fit(n=o["num_steps"], method=pm_method, random_seed=int(seed), **extra,
                        progressbar=bool(progress), callbacks=[check],
                        obj_optimizer=pm.adam(learning_rate=o["learning_rate"]))
    t1 = time.perf_counter()
    hist = np.asarray(approx.hist, np.float64)
    if hist.size and not np.all(np.isfinite(hist[-W:])):
        raise FloatingPointError("ADVI diverged (non-finite ELBO); lower learning_rate")
    with model:
        idata = approx.sample(o["num_samples"], random_seed=int(seed) + 1)
    samples = _posterior_dict(idata, names)
    draws = draws_from_samples(samples, spec, train.n_users, train.n_items, offset)
    t2 = time.perf_counter()
    n_win = len(hist) // W
    means = [float(-hist[j * W:(j + 1) * W].mean()) for j in range(n_win)]
    attrs = {"seed": int(seed), "settings": dict(o), "backend": "pymc",
             "offset": offset, "converged": bool(state["converged"]),
             "steps": int(len(hist)), "final_elbo": means[-1] if means else None,
             "elbo_trace": means, "elbo_trace_window": W,
             "timings": {"fit_s": t1 - t0, "draws_s": t2 - t1, "total_s": t2 - t0}}
    native = {"model": model, "approx": approx, "idata": idata, "offset": offset}
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "pymc-advi", {}, native, attrs)


# the options each fitter starts from (read by the estimator's memory check)
fit_pymc_nuts.defaults = NUTS_DEFAULTS
fit_pymc_advi.defaults = ADVI_DEFAULTS
