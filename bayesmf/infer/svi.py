r"""Variational inference with NumPyro SVI (method ``"svi"``).

Fits a guide :math:`q_\phi(\theta)` to the model of :mod:`bayesmf.infer.numpyro_model` by
maximising the ELBO

.. math::

    \mathcal L(\phi) = \mathbb E_{q_\phi}\!\left[\tfrac{|\Omega|}{|B|}\sum_{(u,i)\in B}
    \log p(r_{ui}\mid\theta) + \log p(\theta) - \log q_\phi(\theta)\right]

with Adam (optax), where :math:`B` is a minibatch of observed entries
(``batch_size``; all entries when ``None``). Guides: ``"normal"`` -- ``AutoNormal``
(mean-field Gaussian in the unconstrained space; known to under-state posterior variance,
so predictive intervals are typically too narrow) and ``"lowrank"`` --
``AutoLowRankMultivariateNormal`` (Gaussian with covariance
:math:`D + W W^\top`, ``W`` of rank ``guide_rank``).

**Convergence**: the ELBO is averaged over consecutive windows of ``window`` steps
(smoothing the stochastic estimates); the run stops when the relative change between two
consecutive window means, :math:`|\bar{\mathcal L}_t - \bar{\mathcal L}_{t-1}| /
|\bar{\mathcal L}_t|`, stays below ``tol`` for ``patience`` windows in a row, or after
``num_steps`` steps. ``attrs["converged"]``, ``attrs["steps"]`` and the window-mean ELBO
trace ``attrs["elbo_trace"]`` record what happened.

The returned :class:`~bayesmf.posterior.Posterior` holds ``num_samples`` draws from the
fitted guide (one "chain"), pushed through the model's deterministic sites.

Options: ``guide`` ("normal"), ``guide_rank`` (None: NumPyro's default), ``num_steps``
(20000, the maximum, rounded up to whole windows: the steps run compiled ``window`` at a
time, ``window`` capped at ``num_steps``; ``attrs["steps"]`` is the count run),
``learning_rate`` (0.01), ``batch_size`` (None), ``num_samples``
(500), ``tol`` (1e-4), ``window`` (100), ``patience`` (2), ``num_particles`` (1),
``init_scale`` (0.1, initial guide scale), ``centered`` (False), ``factor_prior``
("wishart"), ``lambda_beta_prior`` ((1, 1)), ``redraw_negatives`` (False; True for a 0/1
training set of positives and sampled negatives with a Bernoulli likelihood: every step
gives each negative it uses (all, or the minibatch) a fresh item, drawn like the slots of
:func:`~bayesmf.infer.negative_redraw.resample_negatives`, and leaves out of the ELBO the
ones that hit a positive; ``BayesMF.fit(..., negatives="uniform:4@sweep")`` sets it).

Side features (``fit_svi(..., user_features=, item_features=)``): the Macau prior of
:mod:`bayesmf.infer.numpyro_model` (sites ``beta_U``, ``lambda_beta_U``; items alike),
the guide covering :math:`\beta` like every other latent; the draws ``beta_U (1,D,F,k)``,
``lambda_beta_U`` and ``posterior.features`` have the layout of the Gibbs Macau posterior,
so :meth:`~bayesmf.posterior.Posterior.with_features` gives cold-start predictions.
"""

from __future__ import annotations

import time

import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import check_bool, check_factor_prior, check_options, fitted_spec
from bayesmf.infer import check_int as _pos_int
from bayesmf.infer.negative_redraw import check_redraw_likelihood, redraw_layout
from bayesmf.infer.numpyro_model import (_lambda_beta_prior, build_model,
                                         draws_from_samples, model_data, model_features,
                                         resolve_factor_prior)
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo

__all__ = ["fit_svi", "run_windows", "DEFAULTS", "GUIDES"]

GUIDES = ("normal", "lowrank")
DEFAULTS = dict(guide="normal", guide_rank=None, num_steps=20000, learning_rate=0.01,
                batch_size=None, num_samples=500, tol=1e-4, window=100, patience=2,
                num_particles=1, init_scale=0.1, centered=False, factor_prior=None,
                lambda_beta_prior=(1.0, 1.0), redraw_negatives=False)


def _pos_float(name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v > 0) or v == float("inf"):
        raise SpecError(f"{name} must be a positive number, got {v!r}")
    return float(v)


def _validate(o: dict, nnz: int) -> dict:
    if o["guide"] not in GUIDES:
        raise SpecError(f"guide must be one of {GUIDES}, got {o['guide']!r}")
    check_factor_prior(o["factor_prior"])
    for name in ("centered", "redraw_negatives"):
        check_bool(name, o[name])
    o["guide_rank"] = _pos_int("guide_rank", o["guide_rank"], allow_none=True)
    if o["guide_rank"] is not None and o["guide"] == "normal":
        raise SpecError("guide_rank sets the rank of the low-rank guide (guide='lowrank'); "
                        "the mean-field guide='normal' has none")
    o["num_steps"] = _pos_int("num_steps", o["num_steps"])
    o["num_samples"] = _pos_int("num_samples", o["num_samples"])
    o["window"] = _pos_int("window", o["window"])
    o["patience"] = _pos_int("patience", o["patience"])
    o["num_particles"] = _pos_int("num_particles", o["num_particles"])
    o["batch_size"] = _pos_int("batch_size", o["batch_size"], allow_none=True)
    if o["batch_size"] is not None and o["batch_size"] >= nnz:
        o["batch_size"] = None  # a batch as large as the data is the full data
    o["learning_rate"] = _pos_float("learning_rate", o["learning_rate"])
    o["tol"] = _pos_float("tol", o["tol"])
    o["init_scale"] = _pos_float("init_scale", o["init_scale"])
    o["lambda_beta_prior"] = list(_lambda_beta_prior(o["lambda_beta_prior"]))
    return o


def run_windows(run_window, state, num_steps: int, window: int, tol: float, patience: int,
                progress: bool = False, desc: str = "svi"):
    """The windowed optimisation loop of the SVI fitters: ``run_window(state) -> (state,
    losses (window,))`` compiled steps at a time until ``num_steps`` or until the
    relative change of consecutive window means stays below ``tol`` for ``patience``
    windows (module docs); a non-finite window mean stops early. Returns ``(state,
    losses (steps,), means (one per window), converged)``."""
    n_windows = -(-int(num_steps) // window)
    losses, means = [], []
    converged, streak = False, 0
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=n_windows * window, desc=desc, unit="step")
    for w in range(n_windows):
        state, ls = run_window(state)
        ls = np.asarray(ls, np.float64)
        losses.append(ls)
        means.append(float(np.mean(ls)))
        if bar is not None:
            bar.update(window)
            bar.set_postfix(elbo=f"{-means[-1]:.6g}")
        if not np.isfinite(means[-1]):
            break
        if w > 0:
            rel = abs(means[-1] - means[-2]) / max(abs(means[-1]), 1e-12)
            streak = streak + 1 if rel < tol else 0
            if streak >= patience:
                converged = True
                break
    if bar is not None:
        bar.close()
    return state, np.concatenate(losses), means, converged


def fit_svi(train: Ratings, spec: ModelSpec, *, seed: int = 0, progress: bool = False,
            user_features=None, item_features=None, **options) -> Posterior:
    """Fit a NumPyro autoguide by stochastic VI and return guide draws as a Posterior.

    ``user_features``/``item_features`` (a :class:`~bayesmf.data.features.Features` or
    DataFrame per side) add the Macau prior (module docs).

    ``native`` holds ``{"model", "guide", "params", "svi", "losses", "model_args",
    "model_kwargs", "offset"}`` (``losses``: the per-step loss = negative ELBO estimate;
    ``model_kwargs``: ``{"redraw": ...}`` with redrawn negatives, else empty).
    """
    from bayesmf.infer import likelihood_fitter

    own = likelihood_fitter("svi", spec)  # a family with its own fitter (e.g. HPF)
    if own is not None:
        if user_features is not None or item_features is not None:
            raise SpecError(f"side features are not supported by the "
                            f"{spec.likelihood.name!r} likelihood's svi fitter")
        return own(train, spec, seed=seed, progress=progress, **options)
    spec = fitted_spec(train, spec, "svi")
    o = _validate(check_options("svi", options, DEFAULTS), train.nnz)
    spec, o["factor_prior"] = resolve_factor_prior(spec, o["factor_prior"])
    if o["redraw_negatives"]:
        check_redraw_likelihood(spec.likelihood)
    import jax
    import jax.numpy as jnp
    import optax
    from numpyro.infer import SVI, Predictive, Trace_ELBO, init_to_median
    from numpyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
    from numpyro.optim import optax_to_numpyro

    data = model_data(train, spec)
    aligned, X = model_features(train, spec, user_features, item_features, "svi")
    # fresh negatives at every step, drawn by the model for the observations it uses
    # (negative_redraw module docs)
    rd, r_steps = (redraw_layout(train.user, train.item, train.rating)
                   if o["redraw_negatives"] else (None, None))
    model = build_model(spec, data.n_users, data.n_items, offset=data.offset,
                        y_offset=data.y_offset, centered=o["centered"],
                        factor_prior=o["factor_prior"], batch_size=o["batch_size"], features=X,
                        lambda_beta_prior=o["lambda_beta_prior"], redraw_steps=r_steps)
    init = init_to_median(num_samples=15)
    if o["guide"] == "normal":
        guide = AutoNormal(model, init_loc_fn=init, init_scale=o["init_scale"])
    else:
        kw = {} if o["guide_rank"] is None else {"rank": o["guide_rank"]}
        guide = AutoLowRankMultivariateNormal(model, init_loc_fn=init,
                                              init_scale=o["init_scale"], **kw)
    optim = optax_to_numpyro(optax.adam(o["learning_rate"]))
    svi = SVI(model, guide, optim, loss=Trace_ELBO(num_particles=o["num_particles"]))
    args = tuple(jnp.asarray(a) for a in data.args)
    kwargs = {} if rd is None else {"redraw": rd}
    key = jax.random.PRNGKey(int(seed))
    k_init, k_draw = jax.random.split(key)

    t0 = time.perf_counter()
    state = svi.init(k_init, *args, **kwargs)
    W = min(o["window"], o["num_steps"])  # a window never runs past a smaller num_steps

    @jax.jit
    def run_window(state):
        def body(s, _):
            return svi.update(s, *args, **kwargs)
        return jax.lax.scan(body, state, None, length=W)

    state, losses, means, converged = run_windows(
        run_window, state, o["num_steps"], W, o["tol"], o["patience"], progress, "svi")
    t1 = time.perf_counter()
    if not np.all(np.isfinite(losses[-W:])):
        raise FloatingPointError(
            "SVI diverged (non-finite ELBO); lower learning_rate or init_scale")
    params = svi.get_params(state)

    sites = ["mu", "bu", "bi", "U", "V", "tau", "cutpoints", "lambda_bu", "lambda_bi",
             "mu_U", "Lambda_U", "mu_V", "Lambda_V"]
    sites += [n for S in X for n in (f"beta_{S}", f"lambda_beta_{S}")]
    sites += [n for n in spec.likelihood.theta_names if n not in sites]  # a family's own
    pred = Predictive(model, guide=guide, params=params, num_samples=o["num_samples"],
                      return_sites=sites, parallel=False)
    samples = pred(k_draw, *args, **kwargs)
    samples = {n: np.asarray(v)[None] for n, v in samples.items()}  # (1, D, ...)
    draws = draws_from_samples(samples, spec, data.n_users, data.n_items, data.offset)
    t2 = time.perf_counter()
    attrs = {
        "seed": int(seed),
        "settings": dict(o),
        "backend": "numpyro",
        "offset": data.offset,
        "converged": bool(converged),
        "steps": int(len(losses)),
        "final_elbo": float(-means[-1]),
        "elbo_trace": [float(-m) for m in means],
        "elbo_trace_window": W,
        "timings": {"fit_s": t1 - t0, "draws_s": t2 - t1, "total_s": t2 - t0},
    }
    if X:
        attrs["macau"] = {"sides": [[side, f.n_features] for side, f in aligned.items()
                                    if f is not None],
                          "lambda_beta_prior": o["lambda_beta_prior"]}
    native = {"model": model, "guide": guide, "params": params, "svi": svi,
              "losses": losses, "model_args": args, "model_kwargs": kwargs,
              "offset": data.offset}
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "svi", {}, native, attrs, aligned if X else None)
