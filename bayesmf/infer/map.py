r"""PMF by maximum a posteriori (MAP): alternating least squares and full-batch gradient
solvers of one objective.

Objective
---------
With the Gaussian likelihood and fixed zero-mean Gaussian priors of
:class:`~bayesmf.model.spec.ModelSpec` (prior precisions :math:`\tau\lambda`), the negative
log posterior is, up to the factor :math:`\tau/2` and a constant, the ridge objective

.. math::

    J(\theta) = \sum_{(u,i)\in\Omega} \bigl(r_{ui} - \mu - b_u - b_i - U_u^\top V_i\bigr)^2
      + \lambda_f\bigl(\lVert U\rVert_F^2 + \lVert V\rVert_F^2\bigr)
      + \lambda_b\bigl(\lVert b_u\rVert^2 + \lVert b_i\rVert^2\bigr)

with :math:`\lambda_f` = ``spec.reg_factors`` and :math:`\lambda_b` = ``spec.reg_bias``;
:math:`\mu` is not penalised (flat prior). Switched-off terms are fixed at zero, ``rank=0``
is the bias-only baseline. :func:`map_objective` is the one implementation of
:math:`J`; every solver reports it and the gradient solvers differentiate it.

Solvers (option ``solver``)
---------------------------
``"als"`` (default) -- block coordinate descent with exact block minimisers, so :math:`J`
never increases. One sweep is

1. per user, jointly for :math:`z_u = (b_u, U_u)` with the augmented design
   :math:`x_i = (1, V_i)` and targets :math:`y_{ui} = r_{ui} - \mu - b_i`:

   .. math::

       z_u = \Bigl(\Lambda + \sum_{i\in I_u} x_i x_i^\top\Bigr)^{-1}
             \sum_{i\in I_u} y_{ui}\, x_i,\qquad
       \Lambda = \mathrm{diag}(\lambda_b, \lambda_f I_k)

   (the mode of the Gaussian full conditional that the Gibbs sampler draws from, solved
   by the shared :func:`bayesmf.infer._rowblocks.solve_rows` with :math:`\tau = 1`);
2. :math:`\mu \leftarrow \frac1{|\Omega|}\sum_\Omega (r_{ui} - b_u - b_i - U_u^\top V_i)`;
3. the same update per item with :math:`x_u = (1, U_u)`,
   :math:`y_{ui} = r_{ui} - \mu - b_u`;
4. :math:`\mu` again, in the same pass over the residuals as :math:`J`: with
   :math:`e = r - \hat r` and :math:`m = \bar e`, :math:`\mu \leftarrow \mu + m` and
   :math:`J = \sum (e - m)^2 + \text{penalty}` (two passes over the observations per
   sweep besides the solves, not three). :math:`\mu` starts at the mean rating.

Without a bias the leading ``1`` column is dropped. A zero regularisation strength is
floored at ``1e-6`` inside the ALS solves so rows with fewer observations than unknowns
stay solvable.

``"lbfgs"`` -- L-BFGS with a zoom line search (:func:`optax.lbfgs`) on :math:`J` over the
active parameters, full batch. ``"adam"`` -- full-batch Adam on :math:`J / |\Omega|`
(``learning_rate``, default ``0.05``), for comparison and for very large data.

Stopping: ALS stops when the relative decrease of :math:`J` in one sweep falls below
``tol``; the gradient solvers when it falls below ``tol`` over a window of 5 iterations.
With ``validation_fraction > 0`` a random fraction of the training ratings (drawn from
``seed``) is held out, the fit uses the rest, and the iterate with the lowest validation
RMSE is returned once it has not improved for ``patience`` iterations.

Noise: :math:`\tau` does not change the minimiser. With ``spec.noise == "learned"`` the
returned :math:`\tau` is the mode of its posterior given the fitted residuals under the
noise prior :math:`\tau\sim\mathrm{Gamma}(a_\tau, b_\tau)` of ``spec.priors``
(``noise_a``, ``noise_b``; shape, rate) -- the Gamma prior acts as a MAP penalty
:math:`-(a_\tau-1)\log\tau + b_\tau\tau` on :math:`\tau`. With :math:`n=|\Omega|` and
:math:`S=\sum_\Omega (r_{ui}-\hat r_{ui})^2`,

.. math::

    \hat\tau = \arg\max_\tau\; \tau^{n/2} e^{-\tau S/2}\,\tau^{a_\tau-1}e^{-b_\tau\tau}
             = \frac{n + 2a_\tau - 2}{S + 2b_\tau}

(:func:`noise_precision_mode`). The prior floors the noise variance at
:math:`1/\hat\tau \ge 2b_\tau/(n + 2a_\tau - 2)`: a perfect fit (constant ratings, or
more parameters than ratings) gives a finite :math:`\tau` and predictive intervals of a
sensible width instead of zero-width ones, while on real data (:math:`S \gg 2b_\tau`) it
equals the maximum-likelihood :math:`n/S` to a relative :math:`O(1/n)` (MovieLens-100K
u1: 1.6211 either way). With the scale-aware default :math:`b_\tau=s^2` (:math:`s` the
standard deviation of the training ratings, 1 when they are constant) and
:math:`a_\tau=1`, :math:`\hat\tau = n/(S + 2s^2)`. The estimate is still optimistic:
training residuals are smaller than test residuals. With ``spec.noise == "fixed"``,
``spec.noise_precision``.

Defaults: ALS ``max_iter=50, tol=1e-3`` (about 10 sweeps on MovieLens-100K; like
Spark's ``maxIter=10`` this stops well before machine precision, where held-out error no
longer changes -- pass a smaller ``tol`` for the exact minimiser); L-BFGS
``max_iter=500, tol=1e-4``; Adam ``max_iter=2000, tol=1e-6``.

Engines (option ``engine``): ALS runs either as compiled JAX (``"jax"``) or in plain numpy
(``"numpy"``), the *same* sweep code (:func:`_als_sweep` and the shared row solver follow
the array namespace of their inputs), float32 in both. A single fit of a small or medium
problem is compile-bound in JAX: on the 2-core benchmark machine MovieLens-100K at rank 10
takes about 0.15 s in numpy against 1.6 s of compile plus 0.12 s of sweeps in JAX, and
the ML-1M subset at rank 32 3.6 s against 2.3 + 2.8 s. ``"auto"`` (default) therefore picks
numpy for ALS when ``nnz * (rank + 1)**2 <= 1e9`` and the JAX backend is the CPU, and JAX
otherwise (gradient solvers, large problems, GPU). Pass ``engine="jax"`` when refitting
one data shape many times (hyperparameter searches), where the cached compile pays off.

Compilation (JAX engine): every function that touches the device is compiled ahead of
time and cached per process, keyed by the array shapes and the static model layout, so
refitting data of the same size (repeated fits, hyperparameter searches -- the ridge
strengths are traced values -- and same-shape folds) pays the XLA compile only once;
``attrs["timings"]`` reports ``compile_s`` separately. Problems with ``nnz * (rank + 2) < 2**17`` are
compile-bound and are compiled without XLA's backend optimisations (half the compile
time). Initial factors come from numpy (no random-number kernel to compile).
"""

from __future__ import annotations

import functools
import math
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bayesmf._xp import array_namespace
from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import likelihood_fitter, check_options, fitted_spec
from bayesmf.infer._rowblocks import build_row_blocks, solve_rows
from bayesmf.model.likelihood import Params, predict_mean, sse
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo

__all__ = ["fit_map", "map_objective", "noise_precision_mode", "DEFAULTS", "SOLVERS"]

SOLVERS = ("als", "lbfgs", "adam")

#: options of :func:`fit_map`; ``None`` means "the solver's own default" (see
#: :data:`_SOLVER_DEFAULTS`).
DEFAULTS = {
    "solver": "als",
    "max_iter": None,
    "tol": None,
    "validation_fraction": 0.0,
    "patience": 5,
    "learning_rate": None,
    "engine": "auto",
}

ENGINES = ("auto", "jax", "numpy")

_SOLVER_DEFAULTS = {
    "als": {"max_iter": 50, "tol": 1e-3},
    "lbfgs": {"max_iter": 500, "tol": 1e-4},
    "adam": {"max_iter": 2000, "tol": 1e-6, "learning_rate": 0.05},
}
_GRAD_WINDOW = 5
_REG_FLOOR = 1e-6
_CACHE_MAX = 64
#: problems with nnz * (rank + 2) below this are compile-bound: compile them fast
_SMALL_WORK = 1 << 17
_SMALL_COMPILE_OPTIONS = {"xla_backend_optimization_level": 0}
#: ``engine="auto"`` runs ALS in numpy (on a CPU JAX backend) when
#: ``nnz * (rank + 1)**2`` is at most this: measured on 2 cores, numpy takes 0.15 s on
#: MovieLens-100K at rank 10 and 3.6 s on the ML-1M subset at rank 32 (work 4.8e8), where
#: JAX needs 1.6-2.3 s to compile plus 0.12-2.8 s to run; a single fit is faster in numpy
#: up to about 1e9.
_NUMPY_MAX_WORK = 10**9
_DTYPE = jnp.float32


# ----------------------------------------------------------------------------- objective
def map_objective(p: Params, users, items, ratings, reg_factors, reg_bias, lik=None,
                  theta=None):
    r"""The MAP (ridge) objective :math:`J(\theta)` of the module docstring:
    ``sse + reg_factors * (|U|^2 + |V|^2) + reg_bias * (|bu|^2 + |bi|^2)``.

    For a non-Gaussian likelihood ``lik`` (with its parameters ``theta``) the squared
    error is replaced by the deviance :math:`-2\sum\log p(y\mid\eta,\theta)` (which is
    the squared error for a Gaussian of unit precision), ``ratings`` in the likelihood's
    internal coding."""
    if lik is None or lik.mean_is_linear:
        return sse(p, users, items, ratings) + _penalty(p, reg_factors, reg_bias)
    lp = lik.log_prob(ratings, predict_mean(p, users, items), theta)
    return -2.0 * lp.sum() + _penalty(p, reg_factors, reg_bias)


def noise_precision_mode(sse: float, n: int, a: float = 1.0, b: float = 1.0) -> float:
    r"""MAP estimate of the noise precision :math:`\tau` from ``n`` residuals with sum
    of squares ``sse`` under the prior :math:`\tau\sim\mathrm{Gamma}(a, b)` (shape,
    rate): the mode of the Gamma posterior :math:`\mathrm{Gamma}(a + n/2, b + S/2)`,

    .. math::

        \hat\tau = \frac{n + 2a - 2}{S + 2b}.

    When the posterior shape :math:`a + n/2` is at most 1 (one residual and
    :math:`a \le 1/2`) the density has no interior mode; its mean
    :math:`(n + 2a)/(S + 2b)` is returned instead. Finite and positive for every
    ``sse >= 0`` since ``b > 0``."""
    sse, n, a, b = float(sse), float(n), float(a), float(b)
    if not (b > 0 and a > 0 and sse >= 0 and n >= 0):
        raise SpecError(f"noise prior Gamma(a={a}, b={b}) with n={n}, sse={sse} is invalid")
    shape = n + 2.0 * a - 2.0
    if shape <= 0:
        shape = n + 2.0 * a
    return shape / (sse + 2.0 * b)


def _penalty(p: Params, reg_factors, reg_bias):
    penalty_f = (p.U * p.U).sum() + (p.V * p.V).sum()
    penalty_b = (p.bu * p.bu).sum() + (p.bi * p.bi).sum()
    return reg_factors * penalty_f + reg_bias * penalty_b


class _Layout(NamedTuple):
    """Static (hashable) shape of the model: which terms are active, and the sizes."""

    use_mu: bool
    use_bu: bool
    use_bi: bool
    rank: int
    n_users: int
    n_items: int
    #: non-Gaussian likelihood (None: the Gaussian least-squares objective)
    lik: object = None
    fix_first: bool = True


class _Obs(NamedTuple):
    users: jnp.ndarray
    items: jnp.ndarray
    ratings: jnp.ndarray


def _expand(x: dict, lay: _Layout) -> Params:
    """Active-parameter dict -> full :class:`Params` (switched-off terms are zeros)."""
    z = functools.partial(jnp.zeros, dtype=_DTYPE)
    return Params(
        x["mu"] if lay.use_mu else z(()),
        x["bu"] if lay.use_bu else z((lay.n_users,)),
        x["bi"] if lay.use_bi else z((lay.n_items,)),
        x["U"] if lay.rank else z((lay.n_users, 0)),
        x["V"] if lay.rank else z((lay.n_items, 0)),
        jnp.ones((), _DTYPE),
    )


def _active(p: Params, lay: _Layout) -> dict:
    x = {}
    if lay.use_mu:
        x["mu"] = p.mu
    if lay.use_bu:
        x["bu"] = p.bu
    if lay.use_bi:
        x["bi"] = p.bi
    if lay.rank:
        x["U"], x["V"] = p.U, p.V
    return x


# ----------------------------------------------------------------------------- compile cache
_CACHE: dict = {}


def _compiled(fn, static: dict, *args, small: bool = False, eager: bool = False):
    """AOT-compiled ``fn(*args, **static)``, cached by (function, static values, argument
    tree, shapes and dtypes). Returns ``(executable, compile_seconds)``; the seconds are 0
    on a cache hit. ``small=True`` (tiny problems, where compiling costs far more than
    running) compiles without XLA's backend optimisation passes: about half the compile
    time for about twice the run time per call. ``eager=True`` (the numpy engine) returns
    the plain function: nothing to compile."""
    if eager:
        return functools.partial(fn, **static), 0.0
    leaves, tree = jax.tree_util.tree_flatten(args)
    key = (fn.__qualname__, tuple(sorted(static.items())), tree, small,
           tuple((np.shape(a), jnp.result_type(a), getattr(a, "weak_type", False))
                 for a in leaves))
    hit = _CACHE.get(key)
    if hit is not None:
        return hit, 0.0
    t0 = time.perf_counter()
    opts = _SMALL_COMPILE_OPTIONS if small else None
    exe = jax.jit(functools.partial(fn, **static)).lower(*args).compile(compiler_options=opts)
    dt = time.perf_counter() - t0
    if len(_CACHE) >= _CACHE_MAX:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = exe
    return exe, dt


# ----------------------------------------------------------------------------- ALS
def _side_solve(blocks, other, bias_other, y_base, rows_of_obs_other, use_bias, rank,
                reg_f, reg_b):
    """Ridge solve of one side: per row ``(b, F)`` given the other side's factors (in the
    array namespace and dtype of ``other``: JAX when compiled, numpy on the
    compile-free path)."""
    xp = array_namespace(other)
    dt = other.dtype
    n_other = other.shape[0]
    cols, diag = [], []
    if use_bias:
        cols.append(xp.ones((n_other, 1), dt))
        diag.append(xp.reshape(reg_b, (1,)))
    if rank:
        cols.append(other)
        diag.append(xp.full((rank,), reg_f, dt))
    X = xp.concatenate(cols, axis=1)
    d = X.shape[1]
    prior = xp.diag(xp.maximum(xp.concatenate(diag).astype(dt), _REG_FLOOR))
    y = y_base - bias_other[rows_of_obs_other]
    Z = solve_rows(blocks, X, y, xp.ones((), dt), prior, xp.zeros((d,), dt), xp=xp)
    b = Z[:, 0] if use_bias else None
    F = Z[:, 1:] if use_bias else Z
    return b, F


def _mu_update(p: Params, obs: _Obs, lay: _Layout) -> Params:
    if not lay.use_mu:
        return p
    rest = predict_mean(p._replace(mu=p.mu * 0), obs.users, obs.items)
    return p._replace(mu=(obs.ratings - rest).mean())


def _recenter(p: Params, name: str, lay: _Layout) -> Params:
    """Move the mean of one bias vector into mu: predictions are unchanged and the
    penalty ``reg_bias * |b - c|^2`` is minimised at ``c = mean(b)``, so J cannot increase.
    This exact step along the direction (mu + c, b - c) removes the slowest mode of
    plain ALS (trading the mean between mu and the biases)."""
    if not lay.use_mu:
        return p
    b = getattr(p, name)
    c = b.mean()
    return p._replace(mu=p.mu + c, **{name: b - c})


def _als_sweep(p: Params, obs: _Obs, ublocks, iblocks, reg_f, reg_b, *, lay: _Layout):
    """One ALS sweep (users, mu, items, mu; bias re-centring after each side); returns
    the new params and J after it."""
    if lay.use_bu or lay.rank:
        b, F = _side_solve(ublocks, p.V, p.bi, obs.ratings - p.mu, obs.items,
                           lay.use_bu, lay.rank, reg_f, reg_b)
        p = p._replace(bu=b if lay.use_bu else p.bu, U=F)
        if lay.use_bu:
            p = _recenter(p, "bu", lay)
    p = _mu_update(p, obs, lay)
    if lay.use_bi or lay.rank:
        b, F = _side_solve(iblocks, p.U, p.bu, obs.ratings - p.mu, obs.users,
                           lay.use_bi, lay.rank, reg_f, reg_b)
        p = p._replace(bi=b if lay.use_bi else p.bi, V=F)
        if lay.use_bi:
            p = _recenter(p, "bi", lay)
    e = obs.ratings - predict_mean(p, obs.users, obs.items)
    if lay.use_mu:
        m = e.mean()
        p = p._replace(mu=p.mu + m)
        e = e - m
    return p, (e * e).sum() + _penalty(p, reg_f, reg_b)


# ----------------------------------------------------------------------------- gradient
_LBFGS = optax.lbfgs()


def _adam(learning_rate):
    return optax.adam(learning_rate)


_ADAM = optax.inject_hyperparams(_adam)


def _grad_init(x: dict, lr, *, solver: str):
    if solver == "lbfgs":
        return _LBFGS.init(x)
    return _ADAM(learning_rate=lr).init(x)


def _theta_of(x: dict, lay: _Layout) -> dict:
    """Likelihood parameters from the active-parameter dict (ordinal: cutpoints from the
    unconstrained ``cut_u``)."""
    if lay.lik is None or "cut_u" not in x:
        return {"cutpoints": jnp.zeros((1,), _DTYPE)} if lay.lik is not None else {}
    return {"cutpoints": lay.lik.cut_from_u(x["cut_u"], lay.lik.K, lay.fix_first)}


def _x_objective(z: dict, obs: _Obs, reg_f, reg_b, lay: _Layout):
    J = map_objective(_expand(z, lay), *obs, reg_f, reg_b, lay.lik, _theta_of(z, lay))
    if "cut_u" in z:  # the cutpoints' prior (module docs of the ordinal likelihood)
        J = J - 2.0 * lay.lik.log_prior_u(z["cut_u"], lay.fix_first)
    return J


def _grad_step(x: dict, state, obs: _Obs, reg_f, reg_b, *, solver: str, lay: _Layout):
    """One full-batch step; returns (x_new, state_new, J(x_new) if known else J(x_old))."""
    def fun(z):
        return _x_objective(z, obs, reg_f, reg_b, lay)

    if solver == "lbfgs":
        value, grad = optax.value_and_grad_from_state(fun)(x, state=state)
        updates, state = _LBFGS.update(grad, state, x, value=value, grad=grad, value_fn=fun)
        x = optax.apply_updates(x, updates)
        return x, state, optax.tree_utils.tree_get(state, "value")
    n = obs.ratings.shape[0]
    value, grad = jax.value_and_grad(lambda z: fun(z) / n)(x)
    # inject_hyperparams: update() reads the learning rate from ``state`` (set by init),
    # so the placeholder below is never used and lr changes need no recompile
    updates, state = _ADAM(learning_rate=0.0).update(grad, state, x)
    x = optax.apply_updates(x, updates)
    return x, state, value * n


# ----------------------------------------------------------------------------- helpers
def _rmse(p: Params, obs: _Obs):
    r = obs.ratings - predict_mean(p, obs.users, obs.items)
    return (r * r).mean() ** 0.5


def _rmse_x(x: dict, obs: _Obs, *, lay: _Layout):
    """RMSE of the predictive mean E[y | eta] on the data scale (non-Gaussian MAP)."""
    eta = predict_mean(_expand(x, lay), obs.users, obs.items)
    th = _theta_of(x, lay)
    r = lay.lik.decode_jnp(obs.ratings) - lay.lik.point_mean(eta, th)
    return (r * r).mean() ** 0.5


def _objective_only(p: Params, obs: _Obs, reg_f, reg_b):
    return map_objective(p, *obs, reg_f, reg_b)


def _init_params(seed: int, lay: _Layout, mu0: float, init_scale: float, *,
                 numpy: bool = False) -> Params:
    """U, V ~ N(0, init_scale^2) drawn by numpy from ``seed`` (no XLA compile: JAX's
    threefry generator costs seconds to compile on CPU); biases 0; mu at ``mu0``.
    float32 JAX arrays, or float32 numpy arrays for the compile-free engine (the same
    values either way)."""
    rng = np.random.default_rng(seed)
    U = init_scale * rng.standard_normal((lay.n_users, lay.rank))
    V = init_scale * rng.standard_normal((lay.n_items, lay.rank))
    mu = mu0 if lay.use_mu else 0.0
    ft = np.float32
    arrays = (np.asarray(mu, ft), np.zeros(lay.n_users, ft), np.zeros(lay.n_items, ft),
              U.astype(ft), V.astype(ft), np.asarray(1.0, ft))
    return Params(*(arrays if numpy else (jnp.asarray(a) for a in arrays)))


def _check(opts: dict) -> dict:
    solver = opts["solver"]
    if solver not in SOLVERS:
        raise SpecError(f"solver must be one of {SOLVERS}, got {solver!r}")
    out = dict(opts)
    for name, val in _SOLVER_DEFAULTS[solver].items():
        if out.get(name) is None:
            out[name] = val
    mi = out["max_iter"]
    if isinstance(mi, bool) or not isinstance(mi, (int, np.integer)) or mi < 1:
        raise SpecError(f"max_iter must be a positive integer, got {mi!r}")
    out["max_iter"] = int(mi)
    tol = out["tol"]
    if not isinstance(tol, (int, float, np.floating)) or isinstance(tol, bool) \
            or not (tol >= 0) or not math.isfinite(tol):
        raise SpecError(f"tol must be a finite number >= 0, got {tol!r}")
    vf = out["validation_fraction"]
    if not isinstance(vf, (int, float, np.floating)) or isinstance(vf, bool) \
            or not (0.0 <= vf < 1.0):
        raise SpecError(f"validation_fraction must be in [0, 1), got {vf!r}")
    pat = out["patience"]
    if isinstance(pat, bool) or not isinstance(pat, (int, np.integer)) or pat < 1:
        raise SpecError(f"patience must be a positive integer, got {pat!r}")
    lr = out["learning_rate"]
    if solver == "adam":
        if not isinstance(lr, (int, float, np.floating)) or isinstance(lr, bool) \
                or not (lr > 0) or not math.isfinite(lr):
            raise SpecError(f"learning_rate must be a finite number > 0, got {lr!r}")
    elif lr is not None:
        raise SpecError(f"learning_rate applies to solver='adam' only (got solver={solver!r})")
    engine = out["engine"]
    if engine not in ENGINES:
        raise SpecError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "numpy" and solver != "als":
        raise SpecError(f"engine='numpy' runs solver='als' only (got solver={solver!r})")
    return out


def _use_numpy(opts: dict, nnz: int, rank: int) -> bool:
    """The compile-free numpy engine: on request, or (``engine="auto"``) for ALS problems
    whose estimated numpy run time is below the JAX compile time (see
    :data:`_NUMPY_MAX_WORK`)."""
    if opts["engine"] != "auto":
        return opts["engine"] == "numpy"
    return (opts["solver"] == "als" and nnz * (rank + 1) ** 2 <= _NUMPY_MAX_WORK
            and jax.default_backend() == "cpu")


def _validation_mask(nnz: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the ``round(fraction * nnz)`` held-out ratings (drawn from ``seed``)."""
    is_val = np.zeros(nnz, bool)
    n_val = int(round(fraction * nnz))
    is_val[np.random.default_rng(seed).choice(nnz, n_val, replace=False)] = True
    return is_val


def _obs(user, item, rating, *, numpy: bool = False) -> _Obs:
    if numpy:
        return _Obs(np.asarray(user, np.intp), np.asarray(item, np.intp),
                    np.asarray(rating, np.float32))
    return _Obs(jnp.asarray(user, jnp.int32), jnp.asarray(item, jnp.int32),
                jnp.asarray(rating, _DTYPE))


def _iterate(advance, carry, J0: float, opts: dict, solver: str, val_rmse=None,
             progress: bool = False) -> dict:
    """The iteration loop of every MAP solver: ``carry, J = advance(carry)`` up to
    ``max_iter`` times; stops when the objective stalls (ALS is monotone: a relative
    decrease below ``tol`` in one sweep; the gradient solvers: a change below ``tol`` over
    a window of :data:`_GRAD_WINDOW` iterations) or, with ``val_rmse(carry)``, when the
    validation RMSE has not improved for ``patience`` iterations (the best carry is kept)."""
    trace = [J0]
    val_trace, best, best_val, since_best = [], None, np.inf, 0
    converged, reason, n_iter = False, "max_iter", 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=opts["max_iter"], desc=f"map/{solver}", leave=False)
    try:
        for n_iter in range(1, opts["max_iter"] + 1):
            carry, J = advance(carry)
            J = float(J)
            if not math.isfinite(J):
                raise FloatingPointError(
                    f"map/{solver}: the objective became {J} at iteration {n_iter}; "
                    "lower learning_rate / init_scale or raise the regularisation")
            trace.append(J)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(objective=f"{J:.6g}")
            if val_rmse is not None:
                v = val_rmse(carry)
                val_trace.append(v)
                if v < best_val:
                    best, best_val, since_best = carry, v, 0
                else:
                    since_best += 1
                    if since_best >= opts["patience"]:
                        reason = "early_stopping"
                        break
            # ALS is monotone (a rounding-level increase means converged); the gradient
            # solvers must have stalled in either direction over the window
            w = 1 if solver == "als" else _GRAD_WINDOW
            if len(trace) > w:
                ref = trace[-1 - w]
                change = ref - trace[-1] if solver == "als" else abs(ref - trace[-1])
                if change <= opts["tol"] * abs(ref):
                    converged, reason = True, "tol"
                    break
    finally:
        if bar is not None:
            bar.close()
    return {"carry": carry, "best": best, "best_val": best_val, "trace": trace,
            "val_trace": val_trace, "n_iter": n_iter, "converged": converged, "reason": reason}


# ----------------------------------------------------------------------------- main
def fit_map(train: Ratings, spec: ModelSpec, *, seed: int = 0, progress: bool = False,
            **options) -> Posterior:
    """Fit PMF (with the biases and mean of ``spec``) by MAP.

    Parameters
    ----------
    train : Ratings
    spec : ModelSpec
        ``rank``, switches, ``reg_factors``, ``reg_bias``, ``init_scale``, ``noise``.
    seed : int
        Seeds the initial factors (:math:`U, V \\sim N(0, \\text{init\\_scale}^2)`,
        biases start at 0 and :math:`\\mu` at the training mean) and the validation split.
    progress : bool
        Show a tqdm progress bar with the objective.
    **options
        ``solver`` (``"als"`` | ``"lbfgs"`` | ``"adam"``), ``max_iter``, ``tol``,
        ``validation_fraction``, ``patience``, ``learning_rate`` (adam), ``engine``
        (``"auto"`` | ``"jax"`` | ``"numpy"``, ALS only); see :data:`DEFAULTS` and the
        module docstring.

    Returns
    -------
    Posterior
        One draw (``chain=1, draw=1``) of ``mu, bu, bi, U, V, tau``. ``sample_stats``:
        ``objective``, ``objective_trace`` (per iteration), ``n_iter``, ``converged``,
        ``train_rmse`` (and ``val_rmse_trace`` with validation). ``attrs``: solver, engine,
        settings, iterations, convergence, stopping reason and timings (``setup_s``,
        ``compile_s``, ``iterate_s``, ``total_s``).
    """
    t_start = time.perf_counter()
    spec = fitted_spec(train, spec, "map")
    own = likelihood_fitter("map", spec)  # e.g. implicit ALS for the implicit likelihood
    if own is not None:
        return own(train, spec, seed=seed, progress=progress, **options)
    if not spec.likelihood.mean_is_linear:
        return _fit_map_glm(train, spec, seed, progress, options, t_start)
    opts = _check(check_options("map", options, DEFAULTS))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SpecError(f"seed must be a non-negative integer, got {seed!r}")
    solver = opts["solver"]
    lay = _Layout(spec.global_mean, spec.user_bias, spec.item_bias, spec.rank,
                  train.n_users, train.n_items)

    # --- data (and the validation split)
    user, item, rating = train.user, train.item, train.rating
    use_numpy = _use_numpy(opts, train.nnz, spec.rank)
    val = None
    if opts["validation_fraction"] > 0:
        n_val = int(round(opts["validation_fraction"] * train.nnz))
        if n_val < 1 or n_val >= train.nnz:
            raise SpecError(f"validation_fraction={opts['validation_fraction']} leaves "
                            f"{n_val} of {train.nnz} ratings for validation")
        is_val = _validation_mask(train.nnz, opts["validation_fraction"], seed)
        val = _obs(user[is_val], item[is_val], rating[is_val], numpy=use_numpy)
        user, item, rating = user[~is_val], item[~is_val], rating[~is_val]
    obs = _obs(user, item, rating, numpy=use_numpy)
    scalar = np.float32 if use_numpy else (lambda v: jnp.asarray(v, _DTYPE))
    reg_f, reg_b = scalar(spec.reg_factors), scalar(spec.reg_bias)
    compile_s = 0.0
    compiled = functools.partial(_compiled, small=train.nnz * (spec.rank + 2) < _SMALL_WORK,
                                 eager=use_numpy)
    p = _init_params(int(seed), lay, float(np.mean(rating)), spec.init_scale, numpy=use_numpy)
    if solver == "als":
        ublocks = build_row_blocks(np.asarray(user), np.asarray(item), lay.n_users,
                                   n_other=lay.n_items)
        iblocks = build_row_blocks(np.asarray(item), np.asarray(user), lay.n_items,
                                   n_other=lay.n_users)
        step, dt = compiled(_als_sweep, {"lay": lay}, p, obs, ublocks, iblocks, reg_f, reg_b)
        compile_s += dt
        state = None
    else:
        lr = jnp.asarray(opts["learning_rate"] or 0.0, _DTYPE)
        x = _active(p, lay)
        init, dt = compiled(_grad_init, {"solver": solver}, x, lr)
        compile_s += dt
        state = init(x, lr)
        step, dt = compiled(_grad_step, {"solver": solver, "lay": lay}, x, state, obs,
                            reg_f, reg_b)
        expand, dt2 = compiled(_expand, {"lay": lay}, x)
        compile_s += dt2
        compile_s += dt
    objective_fn, dt = compiled(_objective_only, {}, p, obs, reg_f, reg_b)
    compile_s += dt
    rmse_fn = None                      # validation RMSE
    if val is not None:
        rmse_fn, dt = compiled(_rmse, {}, p, val)
        compile_s += dt
    train_rmse_fn, dt = compiled(_rmse, {}, p, obs)
    compile_s += dt
    t_iter = time.perf_counter()

    # --- iterate
    if solver == "als":
        def advance(p):
            return step(p, obs, ublocks, iblocks, reg_f, reg_b)

        carry, params = p, (lambda c: c)
    else:
        def advance(c):
            x, st, J = step(*c, obs, reg_f, reg_b)
            return (x, st), J

        carry, params = (x, state), (lambda c: expand(c[0]))
    it = _iterate(advance, carry, float(objective_fn(p, obs, reg_f, reg_b)), opts, solver,
                  None if rmse_fn is None else (lambda c: float(rmse_fn(params(c), val))),
                  progress)
    p = params(it["best"] if it["best"] is not None else it["carry"])
    trace, val_trace, best_val = it["trace"], it["val_trace"], it["best_val"]
    n_iter, converged, reason = it["n_iter"], it["converged"], it["reason"]
    final_obj = float(objective_fn(p, obs, reg_f, reg_b))
    t_done = time.perf_counter()

    # --- result
    n_fit = len(rating)
    sse_train = float(train_rmse_fn(p, obs)) ** 2 * n_fit
    if spec.noise == "learned":  # the mode under the Gamma noise prior (module docs)
        tau = noise_precision_mode(sse_train, n_fit, spec.priors.noise_a,
                                   spec.priors.noise_b)
    else:
        tau = spec.noise_precision
    P = {k: np.asarray(v, np.float32) for k, v in p._asdict().items()}
    P["tau"] = np.float32(tau)
    draws = {k: np.asarray(v)[None, None] for k, v in P.items()}
    trace_arr = np.asarray(trace, np.float64)
    stats = {
        "objective": np.array([[final_obj]]),
        "objective_trace": trace_arr[None, None],
        "n_iter": np.array([[n_iter]], np.int64),
        "converged": np.array([[converged]]),
        "train_rmse": np.array([[math.sqrt(sse_train / n_fit)]]),
    }
    if val is not None:
        stats["val_rmse_trace"] = np.asarray(val_trace, np.float64)[None, None]
    t_end = time.perf_counter()
    attrs = {
        "seed": int(seed),
        "solver": solver,
        "engine": "numpy" if use_numpy else "jax",
        "options": {k: v for k, v in opts.items()},
        "iterations": int(n_iter),
        "converged": bool(converged),
        "stop_reason": reason,
        "objective": final_obj,
        "objective_initial": float(trace_arr[0]),
        "timings": {"setup_s": t_iter - t_start - compile_s, "compile_s": compile_s,
                    "iterate_s": t_done - t_iter, "total_s": t_end - t_start},
    }
    if val is not None:
        attrs["validation"] = {"n_val": int(val.ratings.shape[0]), "n_fit": int(n_fit),
                               "best_rmse": float(best_val),
                               "best_iteration": int(np.argmin(val_trace)) + 1}
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "map", stats, None, attrs)


# ----------------------------------------------------------------------------- GLM MAP
def _fit_map_glm(train: Ratings, spec: ModelSpec, seed, progress, options, t_start):
    r"""MAP for a non-Gaussian likelihood (Bernoulli, ordinal): L-BFGS (or Adam) on
    :math:`-2\sum\log p(y\mid\eta,\theta) + \text{ridge} - 2\log p(\theta)` over the
    active parameters and, for the ordinal family, the unconstrained cutpoints. The
    least-squares ALS solver does not apply (``solver="als"`` is an error; the default
    becomes ``"lbfgs"``)."""
    lik = spec.likelihood
    if options.get("solver", "lbfgs") == "als":
        raise SpecError(f"solver='als' is the least-squares solver of the Gaussian "
                        f"likelihood; likelihood {lik.name!r} runs solver='lbfgs' or 'adam'")
    if options.get("engine", "auto") == "numpy":
        raise SpecError(f"engine='numpy' runs the Gaussian ALS only (likelihood {lik.name!r})")
    opts = _check(check_options("map", {**options, "solver": options.get("solver", "lbfgs")},
                                DEFAULTS))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise SpecError(f"seed must be a non-negative integer, got {seed!r}")
    solver = opts["solver"]
    y_raw = np.asarray(train.rating, np.float64)
    lay = _Layout(spec.global_mean, spec.user_bias, spec.item_bias, spec.rank,
                  train.n_users, train.n_items, lik, bool(spec.global_mean))
    user, item, y = train.user, train.item, lik.encode(y_raw)
    val = None
    if opts["validation_fraction"] > 0:
        is_val = _validation_mask(train.nnz, opts["validation_fraction"], seed)
        if not 0 < is_val.sum() < train.nnz:
            raise SpecError(f"validation_fraction={opts['validation_fraction']} leaves no "
                            "ratings on one side")
        val = _obs(user[is_val], item[is_val], y[is_val])
        user, item, y = user[~is_val], item[~is_val], y[~is_val]
    obs = _obs(user, item, y)
    reg_f, reg_b = (jnp.asarray(v, _DTYPE) for v in (spec.reg_factors, spec.reg_bias))
    p = _init_params(int(seed), lay, lik.eta_offset(y_raw), spec.init_scale)
    x = _active(p, lay)
    theta0 = lik.init_theta(y_raw, spec)
    if "cutpoints" in theta0 and lik.n_free(lik.K, lay.fix_first) > 0:
        x["cut_u"] = jnp.asarray(lik.u_from_cut(np.asarray(theta0["cutpoints"], np.float64),
                                                lay.fix_first), _DTYPE)
    compiled = functools.partial(_compiled, small=train.nnz * (spec.rank + 2) < _SMALL_WORK)
    lr = jnp.asarray(opts["learning_rate"] or 0.0, _DTYPE)
    init, c1 = compiled(_grad_init, {"solver": solver}, x, lr)
    state = init(x, lr)
    step, c2 = compiled(_grad_step, {"solver": solver, "lay": lay}, x, state, obs, reg_f, reg_b)
    objective_fn, c3 = compiled(_x_objective, {"lay": lay}, x, obs, reg_f, reg_b)
    rmse_fn, c4 = compiled(_rmse_x, {"lay": lay}, x, obs)
    compile_s = c1 + c2 + c3 + c4
    t_iter = time.perf_counter()

    def advance(c):
        xx, st, J = step(*c, obs, reg_f, reg_b)
        return (xx, st), J

    it = _iterate(advance, (x, state), float(objective_fn(x, obs, reg_f, reg_b)), opts, solver,
                  None if val is None else (lambda c: float(rmse_fn(c[0], val))), progress)
    x = (it["best"] if it["best"] is not None else it["carry"])[0]
    trace, val_trace, best_val = it["trace"], it["val_trace"], it["best_val"]
    n_iter, converged, reason = it["n_iter"], it["converged"], it["reason"]
    final_obj = float(objective_fn(x, obs, reg_f, reg_b))
    t_done = time.perf_counter()
    p = _expand(x, lay)
    draws = {n: np.asarray(getattr(p, n), np.float32)[None, None]
             for n in ("mu", "bu", "bi", "U", "V")}
    for n, v in _theta_of(x, lay).items():
        if n in lik.theta_names:
            draws[n] = np.asarray(v if "cut_u" in x else theta0[n], np.float32)[None, None]
    stats = {"objective": np.array([[final_obj]]),
             "objective_trace": np.asarray(trace)[None, None],
             "n_iter": np.array([[n_iter]], np.int64),
             "converged": np.array([[converged]]),
             "train_rmse": np.array([[float(rmse_fn(x, obs))]])}
    attrs = {"seed": int(seed), "solver": solver, "engine": "jax",
             "options": {k: v for k, v in opts.items()}, "iterations": int(n_iter),
             "converged": bool(converged), "stop_reason": reason, "objective": final_obj,
             "objective_initial": float(trace[0]),
             "timings": {"compile_s": compile_s, "iterate_s": t_done - t_iter,
                         "total_s": time.perf_counter() - t_start}}
    if val is not None:
        attrs["validation"] = {"best_rmse": float(best_val),
                               "best_iteration": int(np.argmin(val_trace)) + 1}
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "map", stats, None, attrs)
