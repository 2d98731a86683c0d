r"""Hierarchical Poisson factorization in NumPyro: stochastic variational inference
(method ``"svi"``) and the No-U-Turn sampler (method ``"nuts"``) of the **same model** as
the conjugate Gibbs sampler and CAVI of :mod:`bayesmf.infer.hpf`, returning the shared
:class:`~bayesmf.posterior.Posterior` in the Gibbs layout.

Model (:class:`~bayesmf.model.likelihoods.Poisson`; Gamma in shape/rate form):

.. math::

    \xi_u &\sim \mathrm{Gamma}(a', a'/b'),\qquad
    \theta_{uk}\mid\xi_u \sim \mathrm{Gamma}(a, \xi_u), \\
    \eta_i &\sim \mathrm{Gamma}(c', c'/d'),\qquad
    \beta_{ik}\mid\eta_i \sim \mathrm{Gamma}(c, \eta_i), \\
    y_{ui} &\sim \mathrm{Poisson}(\theta_u^\top\beta_i)\qquad\text{for all } (u, i).

The zeros enter in closed form: the likelihood is one ``numpyro.factor`` site,

.. math::

    \log p(y\mid\theta,\beta) = \sum_{y_{ui}>0}\bigl[y_{ui}\log(\theta_u^\top\beta_i)
    - \log y_{ui}!\bigr] - \Bigl(\sum_u\theta_u\Bigr)^\top\Bigl(\sum_i\beta_i\Bigr),

:math:`O(\text{nnz}\cdot k + (N+M)k)` per evaluation (and per gradient), never
:math:`O(NM)`. The four latent sites ``theta (N, k)``, ``beta (M, k)``, ``xi (N,)``,
``eta (M,)`` are positive; NumPyro works on :math:`z = \log x` (the Jacobian
:math:`\log|dx/dz| = z` added), where the Gamma densities with shapes below 1 are
bounded: :math:`\log p(z) = a z - \xi e^z + \text{const}`.

SVI
---
The guide (:func:`build_hpf_guide`) is a mean-field **LogNormal**, i.e. a mean-field
Normal on every :math:`z = \log x` (what NumPyro's ``AutoNormal`` builds, written out:
its set-up runs op by op and cost seconds per fit):

.. math::

    q_\phi = \prod_{u,k}\mathrm{LogNormal}(\theta_{uk}; m, s^2)
    \prod_{i,k}\mathrm{LogNormal}(\beta_{ik}; \cdot)
    \prod_u\mathrm{LogNormal}(\xi_u; \cdot)\prod_i\mathrm{LogNormal}(\eta_i; \cdot),

each coordinate with its own :math:`(m, s)`, :math:`s` through a softplus. The ELBO

.. math::

    \mathcal L(\phi) = \mathbb E_{q_\phi}\bigl[\log p(y\mid\theta,\beta) + \log p(\theta,
    \xi, \beta, \eta) - \log q_\phi(\theta, \xi, \beta, \eta)\bigr]

is maximised with Adam (optax) on reparameterised Monte Carlo estimates
(``num_particles`` per step), full data each step; the step size starts at
``learning_rate`` and is multiplied by ``lr_decay`` every 1000 steps (exponential decay:
large early moves in the log space, small late ones against the Monte Carlo noise).
Convergence as in :mod:`bayesmf.infer.svi`: the mean negative ELBO of consecutive
windows of ``window`` steps; stop when the relative change of two window means stays
below ``tol`` for ``patience`` windows, or after ``num_steps`` steps (with one particle
the window means fluctuate by about :math:`10^{-4}` relative on small data, so runs
there usually end at ``num_steps``). The Posterior (method ``"svi"``, one chain) holds
``num_samples`` independent draws from the fitted guide.

Unlike CAVI's Gamma family, the LogNormal family does not contain the exact conditional
posteriors, and a mean field under-states posterior variance; the posterior-mean rates
agree with Gibbs closely (correlation > 0.99 on the planted problem of
``tests/test_hpf_numpyro.py``).

NUTS
----
NumPyro's ``NUTS`` kernel on :math:`(\log\theta, \log\beta, \log\xi, \log\eta)`, run by
the package's chain driver (:func:`bayesmf.infer.driver.run_chains`, with the kernel
program of :mod:`bayesmf.infer.nuts`): progress, compile cache and memory checks as the
other samplers. It samples :math:`(N+M)(k+1)` coordinates jointly, so it is for **small
data**: more than ``max_params`` (default :data:`NUTS_MAX_PARAMS` = 200,000) is a
:class:`~bayesmf.errors.SpecError` (use ``gibbs``, ``cavi`` or ``svi``). The factors are
identified only up to a permutation of the :math:`k` columns (label switching between
chains): judge convergence on the rates :math:`\theta_u^\top\beta_i`, not on single
factors.

**Start** (both methods): :math:`\theta, \beta = s\,U[0.5, 1.5]`,
:math:`s=\sqrt{\bar y/k}` (:math:`\bar y` the mean count over all pairs),
:math:`\xi = b'`, :math:`\eta = d'` (the start of the Gibbs sampler).

**Posterior layout** (as :func:`~bayesmf.infer.hpf.fit_gibbs_hpf`): ``U`` = θ, ``V`` = β,
``xi``, ``eta``, ``bu``/``bi`` (the ``bu``/``bi`` sites with ``user_bias`` /
``item_bias``, else zeros), zeros for ``mu``; ``sample_stats["log_likelihood"]`` (all
pairs, per draw) and ``train_rmse``; computed in float32.
"""

from __future__ import annotations

import time

import numpy as np

from bayesmf.errors import SpecError
from bayesmf.infer import check_int as _pos_int
from bayesmf.infer import check_bool, check_options, fitted_spec, warn_divergences
from bayesmf.infer.hpf import _Cfg, _hyper_dict, _split_data
from bayesmf.infer.nmf import check_poisson_spec, extended_factors, positive_start
from bayesmf.infer.svi import run_windows

__all__ = ["fit_svi_hpf", "fit_nuts_hpf", "build_hpf_model", "build_hpf_guide",
           "hpf_loglik", "all_pairs_stats", "SVI_DEFAULTS", "NUTS_DEFAULTS",
           "NUTS_MAX_PARAMS"]

#: options of :func:`fit_svi_hpf`
SVI_DEFAULTS = dict(num_steps=4000, learning_rate=0.1, lr_decay=0.5, num_samples=200,
                    tol=1e-4, window=100, patience=2, num_particles=1, init_scale=0.05)
#: options of :func:`fit_nuts_hpf`
NUTS_DEFAULTS = dict(num_samples=200, num_warmup=200, num_chains=1, thin=1,
                     chain_method="sequential", target_accept=0.8, max_tree_depth=7,
                     dense_mass=False, max_params=None, memory_limit=None)
#: the most latent coordinates (N + M)(k + 1) :func:`fit_nuts_hpf` samples by default
NUTS_MAX_PARAMS = 200_000

_SITES = ("theta", "beta", "xi", "eta")


# ----------------------------------------------------------------------------- model
def hpf_loglik(data, theta, beta, log_fact: float = 0.0):
    r"""The all-pairs Poisson log likelihood (module docs) of ``theta (N, k)``,
    ``beta (M, k)`` from the non-zeros of :class:`~bayesmf.infer.hpf.HPFData` (jnp)."""
    import jax.numpy as jnp

    tiny = jnp.asarray(1e-30, theta.dtype)
    ll = -jnp.dot(theta.sum(0), beta.sum(0)) - log_fact
    if data.u1.shape[0]:
        r1 = jnp.sum(theta[data.u1] * beta[data.i1], axis=1)
        ll = ll + jnp.sum(jnp.log(jnp.maximum(r1, tiny)))
    if data.u2.shape[0]:
        r2 = jnp.sum(theta[data.u2] * beta[data.i2], axis=1)
        ll = ll + jnp.sum(data.y2 * jnp.log(jnp.maximum(r2, tiny)))
    return ll


def build_hpf_model(N: int, M: int, K: int, hyper: tuple, log_fact: float = 0.0,
                    user_bias: bool = False, item_bias: bool = False,
                    bias: tuple = (0.3, 0.3)):
    """The NumPyro model ``model(data)`` of HPF (module docs) for an
    :class:`~bayesmf.infer.hpf.HPFData` ``data``; ``hyper = (a, a', b', c, c', d')``; with
    ``user_bias`` / ``item_bias`` the sites ``bu ~ Gamma(e, f)`` / ``bi`` (``bias = (e,
    f)``) and the rate of the extended factors (:func:`~bayesmf.infer.nmf.extended_factors`)."""
    import numpyro
    import numpyro.distributions as dist

    a, ap, bp, c, cp, dp = (float(h) for h in hyper)
    e, f = (float(h) for h in bias)

    def model(data):
        bu = bi = None
        with numpyro.plate("users", N, dim=-1):
            xi = numpyro.sample("xi", dist.Gamma(ap, ap / bp))
            if user_bias:
                bu = numpyro.sample("bu", dist.Gamma(e, f))
        with numpyro.plate("items", M, dim=-1):
            eta = numpyro.sample("eta", dist.Gamma(cp, cp / dp))
            if item_bias:
                bi = numpyro.sample("bi", dist.Gamma(e, f))
        with numpyro.plate("factors", K, dim=-1):
            with numpyro.plate("users_k", N, dim=-2):
                theta = numpyro.sample("theta", dist.Gamma(a, xi[:, None]))
            with numpyro.plate("items_k", M, dim=-2):
                beta = numpyro.sample("beta", dist.Gamma(c, eta[:, None]))
        numpyro.factor("loglik", hpf_loglik(data, *extended_factors(theta, beta, bu, bi),
                                            log_fact))

    return model


def _float():
    """JAX's default float dtype (float32; float64 when ``jax_enable_x64`` is on -- e.g.
    after an import of ``pymc.sampling.jax``): the start values and guide parameters must
    match the model's arrays, or NumPyro's tree building mixes dtypes."""
    import jax

    return np.dtype(jax.dtypes.canonicalize_dtype(np.float64))


def _start(sc, cfg, seed):
    """The Gibbs start (module docs) as arrays of JAX's default float dtype keyed by
    site (the biases, when on, at one factor's rate :math:`s^2`)."""
    N, M, K = cfg.N, cfg.M, cfg.K
    rng = np.random.default_rng([int(seed), 7])
    s = float(np.sqrt(max(sc.total, 1e-30) / (float(N) * float(M) * K)))
    f = _float()
    th, be, bu, bi = positive_start(rng, s, N, M, K, cfg.ub, cfg.ib)
    out = {"theta": th.astype(f), "beta": be.astype(f),
           "xi": np.full(N, cfg.hyper[2], f), "eta": np.full(M, cfg.hyper[5], f)}
    out.update({n: b.astype(f) for n, b in (("bu", bu), ("bi", bi)) if b is not None})
    return out


def _n_params(N: int, M: int, spec) -> int:
    """Latent coordinates of the NUTS model: (N + M)(k + 1), plus N and M with the biases."""
    return (N + M) * (spec.rank + 1) + N * bool(spec.user_bias) + M * bool(spec.item_bias)


def _sites(cfg) -> tuple:
    return _SITES + (("bu",) if cfg.ub else ()) + (("bi",) if cfg.ib else ())


def _model(cfg):
    return build_hpf_model(cfg.N, cfg.M, cfg.K, cfg.hyper, cfg.log_fact, cfg.ub, cfg.ib,
                           cfg.bias)


def _setup(train, spec, method, max_params=None):
    # the likelihood is checked here (not by ``check_method``): these fitters are the
    # Poisson family's own, reached through ``Poisson.fitters``
    lik = getattr(spec, "likelihood", None)
    if getattr(lik, "name", None) not in (None, "poisson"):
        raise SpecError(f"the HPF {method} fitter models counts with the Poisson "
                        f"likelihood, got likelihood {lik.name!r} (the {method} of the "
                        f"other likelihoods is bayesmf.infer.get_method({method!r}))")
    spec = fitted_spec(train, spec)
    check_poisson_spec(spec, method)
    if max_params is not None:
        n_par = _n_params(train.n_users, train.n_items, spec)
        if n_par > max_params:
            raise SpecError(
                f"nuts on the Poisson likelihood samples (n_users + n_items) x (rank + 1) "
                f"(+ the biases) = {n_par:,} parameters, above the size limit of {max_params:,} "
                "(max_params); use method='gibbs', 'cavi' or 'svi' for data this size (or "
                "raise max_params)")
    sc, data = _split_data(train, spec)
    N, M, K = train.n_users, train.n_items, spec.rank
    prior = spec.prior
    cfg = _Cfg(N, M, K, prior.hyper, float(sc.log_fact), bool(spec.user_bias),
               bool(spec.item_bias), (prior.bias_shape, prior.bias_rate))
    return spec, sc, data, cfg


def _posterior(samples, cfg, sc, spec, train, method, stats, native, attrs):
    """The Gibbs-layout Posterior from constrained samples ``(C, S, ...)`` per site;
    ``sc`` the :class:`~bayesmf.infer.nmf.SparseCounts` of the training counts."""
    from bayesmf.posterior import Posterior, TrainInfo

    f32 = np.float32
    C, S = np.asarray(samples["xi"]).shape[:2]
    N, M = cfg.N, cfg.M
    tiny = f32(1e-30)
    draws = {"U": np.maximum(np.asarray(samples["theta"], f32), tiny),
             "V": np.maximum(np.asarray(samples["beta"], f32), tiny),
             "xi": np.asarray(samples["xi"], f32), "eta": np.asarray(samples["eta"], f32),
             "mu": np.zeros((C, S), f32)}
    for name, n in (("bu", N), ("bi", M)):
        draws[name] = (np.maximum(np.asarray(samples[name], f32), tiny) if name in samples
                       else np.zeros((C, S, n), f32))
    ll, rmse = np.empty((C, S)), np.empty((C, S))
    for c in range(C):
        for s in range(S):
            ll[c, s], rmse[c, s] = all_pairs_stats(sc, *extended_factors(
                draws["U"][c, s], draws["V"][c, s], draws["bu"][c, s] if cfg.ub else None,
                draws["bi"][c, s] if cfg.ib else None))
    stats = {"log_likelihood": ll, "train_rmse": rmse, **stats}
    attrs["hyper"] = _hyper_dict(spec)
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     method, stats, native, attrs)


def all_pairs_stats(sc, theta, beta) -> tuple:
    r"""``(log_likelihood, train_rmse)`` over **all** pairs of one draw (numpy, float64),
    from the non-zeros of ``sc`` (:class:`~bayesmf.infer.nmf.SparseCounts`): the log
    likelihood of the module docs and :math:`\sqrt{\sum_{u,i}(y-r)^2/(NM)}` with
    :math:`\sum_{u,i}(y-r)^2 = \sum_{y>0}(y^2 - 2yr) + \langle\theta^\top\theta,
    \beta^\top\beta\rangle` (as the Gibbs sampler's ``sample_stats``)."""
    th = np.asarray(theta, np.float64)
    be = np.asarray(beta, np.float64)
    r = sc.rates(th, be)
    ll = float(sc.y @ np.log(np.maximum(r, 1e-30)) - sc.log_fact - th.sum(0) @ be.sum(0))
    sq = float(np.sum(sc.y * (sc.y - 2.0 * r)) + np.sum((th.T @ th) * (be.T @ be)))
    return ll, float(np.sqrt(max(sq, 0.0) / (float(sc.N) * float(sc.M))))


def _num(name, v, lo=0.0, hi=None, hi_closed=False):
    """``v`` as a float in ``(lo, hi)`` (``(lo, hi]`` with ``hi_closed``; ``hi=None``: no
    upper bound), else a :class:`SpecError` naming the option."""
    ok = not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating)) \
        and bool(np.isfinite(v)) and v > lo \
        and (hi is None or v < hi or (hi_closed and v == hi))
    if not ok:
        rng = (f"a finite number > {lo:g}" if hi is None else
               f"in ({lo:g}, {hi:g}{']' if hi_closed else ')'}")
        raise SpecError(f"{name} must be {rng}, got {v!r}")
    return float(v)


# ----------------------------------------------------------------------------- SVI
def build_hpf_guide(start: dict, init_scale: float = 0.05):
    r"""The mean-field LogNormal guide ``guide(data)`` of :func:`build_hpf_model`:
    :math:`q(x) = \mathrm{LogNormal}(m_x, s_x^2)` for every coordinate of ``theta, beta,
    xi, eta``, parameters ``<site>_loc`` (:math:`m`, started at :math:`\log` of
    ``start[site]``) and ``<site>_scale`` (:math:`s > 0` through a softplus, started at
    ``init_scale``)."""
    import numpyro
    import numpyro.distributions as dist

    N, K = start["theta"].shape
    M = start["beta"].shape[0]

    def site(name):
        x0 = np.asarray(start[name], _float())
        loc = numpyro.param(name + "_loc", np.log(x0))
        scale = numpyro.param(name + "_scale", np.full(x0.shape, init_scale, x0.dtype),
                              constraint=dist.constraints.softplus_positive)
        return dist.LogNormal(loc, scale)

    def guide(data):
        with numpyro.plate("users", N, dim=-1):
            numpyro.sample("xi", site("xi"))
            if "bu" in start:
                numpyro.sample("bu", site("bu"))
        with numpyro.plate("items", M, dim=-1):
            numpyro.sample("eta", site("eta"))
            if "bi" in start:
                numpyro.sample("bi", site("bi"))
        with numpyro.plate("factors", K, dim=-1):
            with numpyro.plate("users_k", N, dim=-2):
                numpyro.sample("theta", site("theta"))
            with numpyro.plate("items_k", M, dim=-2):
                numpyro.sample("beta", site("beta"))

    return guide


def fit_svi_hpf(train, spec, *, seed: int = 0, progress: bool = False, **options):
    """SVI of HPF (module docs), the ``svi`` method of the Poisson likelihood; returns a
    :class:`~bayesmf.posterior.Posterior` (method ``"svi"``, one chain of
    ``num_samples`` independent draws from the fitted LogNormal guide).

    Options: ``num_steps`` (4000, the most), ``learning_rate`` (0.1, Adam's initial step),
    ``lr_decay`` (0.5: the step is multiplied by this every 1000 steps; 1 keeps it
    constant), ``num_samples`` (200), ``tol`` (1e-4), ``window`` (100), ``patience`` (2),
    ``num_particles`` (1), ``init_scale`` (0.05, the guide's initial log-space standard
    deviation). ``attrs``: ``converged``, ``steps``, ``final_elbo``, ``elbo_trace``
    (window means), timings; ``native``: ``model``, ``guide``, ``params`` (``<site>_loc``,
    ``<site>_scale``), ``losses`` (per-step negative ELBO)."""
    spec, sc, data, cfg = _setup(train, spec, "svi")
    o = check_options("svi", options, SVI_DEFAULTS)
    for n in ("num_steps", "num_samples", "window", "patience", "num_particles"):
        o[n] = _pos_int(n, o[n])
    for n in ("learning_rate", "tol", "init_scale"):
        o[n] = _num(n, o[n])
    o["lr_decay"] = _num("lr_decay", o["lr_decay"], 0.0, 1.0, hi_closed=True)
    import jax
    import optax
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.optim import optax_to_numpyro

    from bayesmf.infer.driver import enable_persistent_cache

    enable_persistent_cache()  # the samplers' on-disk compile cache (repeat fits)
    model = _model(cfg)
    guide = build_hpf_guide(_start(sc, cfg, seed), o["init_scale"])
    lr = o["learning_rate"] if o["lr_decay"] == 1.0 else \
        optax.exponential_decay(o["learning_rate"], 1000, o["lr_decay"])
    svi = SVI(model, guide, optax_to_numpyro(optax.adam(lr)),
              loss=Trace_ELBO(num_particles=o["num_particles"]))
    t0 = time.perf_counter()
    # jitted: NumPyro's init runs model and guide op by op otherwise (seconds)
    state = jax.jit(svi.init)(jax.random.PRNGKey(int(seed)), data)
    W = min(o["window"], o["num_steps"])  # a window never runs past a smaller num_steps

    @jax.jit
    def run_window(state):
        return jax.lax.scan(lambda s, _: svi.update(s, data), state, None, length=W)

    state, losses, means, converged = run_windows(
        run_window, state, o["num_steps"], W, o["tol"], o["patience"], progress, "HPF svi")
    t1 = time.perf_counter()
    if not np.all(np.isfinite(losses[-W:])):
        raise FloatingPointError("HPF SVI diverged (non-finite ELBO); lower learning_rate "
                                 "or init_scale")
    params = {n: np.asarray(v, np.float64) for n, v in svi.get_params(state).items()}
    rng = np.random.default_rng([int(seed), 1])
    S = o["num_samples"]
    samples = {n: np.exp(params[n + "_loc"] + params[n + "_scale"]
                         * rng.standard_normal((S,) + params[n + "_loc"].shape))[None]
               for n in _sites(cfg)}
    attrs = {"seed": int(seed), "backend": "numpyro", "solver": "hpf-svi",
             "guide": "mean-field lognormal", "settings": dict(o),
             "converged": bool(converged), "steps": int(len(losses)),
             "final_elbo": float(-means[-1]), "elbo_trace": [float(-m) for m in means],
             "elbo_trace_window": W, "timings": {"fit_s": t1 - t0}}
    native = {"model": model, "guide": guide, "params": params, "losses": losses}
    post = _posterior(samples, cfg, sc, spec, train, "svi", {}, native, attrs)
    post.attrs["timings"]["total_s"] = time.perf_counter() - t0
    return post


# ----------------------------------------------------------------------------- NUTS
def fit_nuts_hpf(train, spec, *, seed: int = 0, progress: bool = False, **options):
    """NUTS of HPF (module docs), the ``nuts`` method of the Poisson likelihood, for
    small data; returns a :class:`~bayesmf.posterior.Posterior` (method ``"nuts"``).

    Options: ``num_samples`` (200 per chain, before thinning), ``num_warmup`` (200),
    ``num_chains`` (1), ``thin`` (1), ``chain_method`` (``"sequential"`` |
    ``"vectorized"`` | ``"parallel"``), ``target_accept`` (0.8), ``max_tree_depth`` (7),
    ``dense_mass`` (False), ``max_params`` (None: :data:`NUTS_MAX_PARAMS`), the most
    latent coordinates :math:`(N+M)(k+1)` allowed, ``memory_limit``.
    ``sample_stats`` add the NUTS diagnostics (``diverging``, ``num_steps``,
    ``accept_prob``, ``step_size``, ``lp``)."""
    o = check_options("nuts", options, NUTS_DEFAULTS)
    for n in ("num_samples", "num_chains", "thin", "max_tree_depth"):
        o[n] = _pos_int(n, o[n])
    o["num_warmup"] = _pos_int("num_warmup", o["num_warmup"], 0)
    if o["thin"] > o["num_samples"]:
        raise SpecError(f"thin={o['thin']} exceeds num_samples={o['num_samples']}")
    if o["chain_method"] not in ("sequential", "vectorized", "parallel"):
        raise SpecError("chain_method must be 'sequential', 'vectorized' or 'parallel', "
                        f"got {o['chain_method']!r}")
    o["target_accept"] = _num("target_accept", o["target_accept"], 0.0, 1.0)
    check_bool("dense_mass", o["dense_mass"])
    limit = _pos_int("max_params", o["max_params"], allow_none=True) or NUTS_MAX_PARAMS
    spec, sc, data, cfg = _setup(train, spec, "nuts", limit)
    N, M = cfg.N, cfg.M
    n_par = _n_params(N, M, spec)
    import jax
    import jax.numpy as jnp
    from numpyro.infer import NUTS, init_to_value

    from bayesmf.infer.driver import compile_logger, run_chains
    from bayesmf.infer.nuts import _program

    model = _model(cfg)
    kernel = NUTS(model, target_accept_prob=o["target_accept"],
                  max_tree_depth=o["max_tree_depth"], dense_mass=o["dense_mass"],
                  init_strategy=init_to_value(values=_start(sc, cfg, seed)))
    C, W, S, T = o["num_chains"], o["num_warmup"], o["num_samples"], o["thin"]
    keys = jax.random.split(jax.random.PRNGKey(int(seed)), C)
    t0 = time.perf_counter()
    # jitted: the kernel's init (model setup, step-size search) runs op by op otherwise
    init1 = jax.jit(lambda k: kernel.init(k, W, model_args=(data,)))
    states = [init1(jax.random.fold_in(k, 2**31 - 1)) for k in keys]
    state = jax.tree_util.tree_map(lambda *a: jnp.stack([jnp.asarray(x) for x in a]),
                                   *states)
    t_init = time.perf_counter() - t0
    run = run_chains(_program(kernel), (data,), state, keys, num_samples=S // T,
                     num_warmup=W, thin=T, chain_method=o["chain_method"],
                     meta={"sampler": "hpf-nuts"}, progress=progress,
                     memory_limit=o["memory_limit"], log=compile_logger(progress),
                     what=f"the HPF NUTS draws ({C} chain(s) x {S // T} draws)")
    t1 = time.perf_counter()
    ex = run.draws
    num_steps = np.asarray(ex["num_steps"]).astype(np.int64)
    stats = {"diverging": np.asarray(ex["diverging"], bool), "num_steps": num_steps,
             "accept_prob": np.asarray(ex["accept_prob"], np.float32),
             "step_size": np.asarray(ex["adapt_state.step_size"], np.float32),
             "lp": -np.asarray(ex["potential_energy"], np.float32)}
    o["max_params"] = limit
    attrs = {"seed": int(seed), "backend": "numpyro", "sampler": "hpf-nuts",
             "settings": dict(o), "n_params": n_par,
             "n_divergent": warn_divergences(stats["diverging"], "nuts (poisson)"),
             "compile_seconds": run.compile_seconds,
             "timings": {"init_s": t_init, "warmup_s": run.warmup_seconds,
                         "sampling_s": run.sampling_seconds - run.warmup_seconds,
                         "total_s": t1 - t0}}
    native = {"model": model, "kernel": kernel}
    return _posterior({n: ex["z"][n] for n in _sites(cfg)}, cfg, sc, spec, train, "nuts",
                      stats, native, attrs)


# the options each fitter starts from (read by the estimator's memory check)
fit_svi_hpf.defaults = SVI_DEFAULTS
fit_nuts_hpf.defaults = NUTS_DEFAULTS
