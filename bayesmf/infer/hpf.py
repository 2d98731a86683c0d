r"""Hierarchical Poisson factorization (Gopalan, Hofman & Blei 2015): the conjugate Gibbs
sampler (JAX, through the shared chain driver) and coordinate-ascent variational inference
(CAVI), both returning the shared :class:`~bayesmf.posterior.Posterior`.

Model (:class:`~bayesmf.model.likelihoods.Poisson`; Gamma in shape/rate form):

.. math::

    y_{ui}\sim\mathrm{Poisson}(\theta_u^\top\beta_i)\ \ \forall(u,i),\quad
    \theta_{uk}\sim\mathrm{Gamma}(a,\xi_u),\quad \xi_u\sim\mathrm{Gamma}(a', a'/b'),\quad
    \beta_{ik}\sim\mathrm{Gamma}(c,\eta_i),\quad \eta_i\sim\mathrm{Gamma}(c', c'/d').

**Auxiliary counts.** :math:`y_{ui} = \sum_k z_{uik}` with independent
:math:`z_{uik}\sim\mathrm{Poisson}(\theta_{uk}\beta_{ik})`; given :math:`y` the split is
multinomial,

.. math::

    z_{ui\cdot}\mid y,\theta,\beta \sim \mathrm{Mult}\bigl(y_{ui},\ \phi_{ui}\bigr),\qquad
    \phi_{uik} = \frac{\theta_{uk}\beta_{ik}}{\sum_j\theta_{uj}\beta_{ij}},

and :math:`z_{ui\cdot} = 0` wherever :math:`y_{ui} = 0`, so only the non-zeros are
visited. With :math:`z` the model is conjugate.

Gibbs sweep
-----------
1. **Split** every non-zero count (:func:`multinomial_split`): a count of 1 goes to one
   factor drawn by inverting the CDF of :math:`\phi_{ui}` with one uniform; larger counts
   by :math:`k-1` conditional binomials
   :math:`z_k\sim\mathrm{Bin}(y - \sum_{j<k}z_j,\ \phi_k/\sum_{j\ge k}\phi_j)`. The
   per-user and per-item totals :math:`\sum_i z_{uik}`, :math:`\sum_u z_{uik}` are
   scatter-adds (segment sums) over the non-zeros.
2. :math:`\theta_{uk}\sim\mathrm{Gamma}\bigl(a + \sum_i z_{uik},\ \xi_u + \sum_i\beta_{ik}\bigr)`
3. :math:`\xi_u\sim\mathrm{Gamma}\bigl(a' + ka,\ a'/b' + \sum_k\theta_{uk}\bigr)`
4. :math:`\beta_{ik}\sim\mathrm{Gamma}\bigl(c + \sum_u z_{uik},\ \eta_i + \sum_u\theta_{uk}\bigr)`
5. :math:`\eta_i\sim\mathrm{Gamma}\bigl(c' + kc,\ c'/d' + \sum_k\beta_{ik}\bigr)`

The sums over **all** pairs are the column sums :math:`\sum_i\beta_i`,
:math:`\sum_u\theta_u`. The Gamma shapes of steps 2-5 are all known after step 1, so one
call of :func:`bayesmf.model.random.standard_gamma` (written out: ``jax.random.gamma``
costs seconds of compile) draws every standard variate of the sweep and steps 2-5 divide
by their rates in turn. Cost per sweep :math:`O(\text{nnz}\cdot k + (N+M)k)`.

**Biases** (spec ``user_bias`` / ``item_bias``; :class:`~bayesmf.model.likelihoods.Poisson`
docs): the split runs over the extended factors :math:`A_u = (\theta_u, b_u, 1)`,
:math:`B_i = (\beta_i, 1, b_i)` (:func:`extended_factors`), and two more Gamma steps
draw :math:`b_u\sim\mathrm{Gamma}(e + \sum_i z_{ui,b_u},\ f + M)` and
:math:`b_i\sim\mathrm{Gamma}(e + \sum_u z_{ui,b_i},\ f + N)` in the same batched call;
the likelihood and the train statistics are those of :math:`A, B`. CAVI alike: its
:math:`\phi` runs over :math:`E\log A, E\log B` (fixed entries 0), the biases get
:math:`q(b_u) = \mathrm{Gamma}(e + \sum_i y_{ui}\phi_{ui,b_u},\ f + M)` and the ELBO
gains :math:`-M\sum_u E b_u - N\sum_i E b_i`, their priors and entropies.

The sweep runs through :func:`bayesmf.infer.driver.run_chains` (chains, warm-up,
thinning, progress, checkpoints/resume, compile cache). Kept draws: ``U`` = θ,
``V`` = β, ``xi``, ``eta`` (item activity), ``bu, bi`` (zeros without biases), zeros
for ``mu``;
``sample_stats``: ``log_likelihood`` (all pairs, of the kept state) and ``train_rmse``
(over all pairs: :math:`\sum_{u,i}(y-r)^2 = \sum_{y>0}(y^2 - 2yr) +
\langle\theta^\top\theta, \beta^\top\beta\rangle`).
``predict_pairs=`` streams the rate of chosen pairs and ``store_draws=False`` keeps the
final state only (:func:`fit_gibbs_hpf`), as the Gaussian-family sampler does.

Initial state: :math:`\theta, \beta` uniform on :math:`s[0.5, 1.5]`,
:math:`s=\sqrt{\bar y/k}` (:math:`\bar y` the mean count over all pairs),
:math:`\xi = b'`, :math:`\eta = d'`.

CAVI
----
Mean field :math:`q(\theta_{uk}) = \mathrm{Gamma}(\gamma^{s}_{uk}, \gamma^{r}_{uk})`,
:math:`q(\beta_{ik}) = \mathrm{Gamma}(\lambda^{s}_{ik}, \lambda^{r}_{ik})`,
:math:`q(\xi_u) = \mathrm{Gamma}(\kappa^s_u, \kappa^r_u)`,
:math:`q(\eta_i) = \mathrm{Gamma}(\tau^s_i, \tau^r_i)`,
:math:`q(z_{ui}) = \mathrm{Mult}(y_{ui}, \phi_{ui})`. One iteration (the paper's
Algorithm 1), with :math:`E\log\theta = \psi(\gamma^s) - \log\gamma^r` and
:math:`E\theta = \gamma^s/\gamma^r`:

.. math::

    \phi_{uik} &\propto \exp\{E\log\theta_{uk} + E\log\beta_{ik}\} \\
    \gamma^s_{uk} &= a + \textstyle\sum_i y_{ui}\phi_{uik},\quad
    \gamma^r_{uk} = E\xi_u + \sum_i E\beta_{ik},\quad
    \kappa^r_u = a'/b' + \textstyle\sum_k E\theta_{uk} \\
    \lambda^s_{ik} &= c + \textstyle\sum_u y_{ui}\phi_{uik},\quad
    \lambda^r_{ik} = E\eta_i + \sum_u E\theta_{uk},\quad
    \tau^r_i = c'/d' + \textstyle\sum_k E\beta_{ik}

(:math:`\kappa^s = a' + ka`, :math:`\tau^s = c' + kc` fixed). :math:`\phi` is never
stored: with :math:`A_{uk} = e^{E\log\theta_{uk}}`, :math:`B_{ik} = e^{E\log\beta_{ik}}`
and :math:`S_{ui} = A_u^\top B_i`,
:math:`\sum_i y_{ui}\phi_{uik} = A_{uk}\sum_i (y_{ui}/S_{ui})B_{ik}` -- a sparse
matrix product, as in KL-NMF (:mod:`bayesmf.infer.nmf`). Every update is the exact
maximiser of the ELBO in its block, so the ELBO never decreases. The tracked ELBO is
the one at the optimal :math:`\phi` for the current Gamma parameters,

.. math::

    \mathcal L = \sum_{y_{ui}>0}\bigl[y_{ui}\log S_{ui} - \log y_{ui}!\bigr]
    - \Bigl(\sum_u E\theta_u\Bigr)^\top\Bigl(\sum_i E\beta_i\Bigr)
    + E_q[\log p(\theta\mid\xi) + \log p(\xi) + \log p(\beta\mid\eta) + \log p(\eta)]
    + \mathbb H[q(\theta)] + \mathbb H[q(\xi)] + \mathbb H[q(\beta)] + \mathbb H[q(\eta)],

with :math:`E_q\log\mathrm{Gamma}(x; \alpha, \rho) = \alpha E\log\rho - \log\Gamma(\alpha) +
(\alpha-1)E\log x - E\rho\,Ex` and the Gamma entropy :math:`\mathbb H = s - \log r +
\log\Gamma(s) + (1-s)\psi(s)`; it is computed from the same :math:`S_{ui}` as the next
:math:`\phi` update. Iterations stop when the relative ELBO change falls below ``tol``
(after ``min_iter``) or at ``max_iter``. Computed in float64 (numpy/scipy, no compile).

**Cost.** Per iteration: the rates :math:`S'_{ui}` at the non-zeros once (shared by the
ELBO and the next :math:`\phi`), two sparse products :math:`QB`, :math:`Q^\top A` with
:math:`Q = y/S'`, and :math:`O((N+M)k)` digammas/logs computed once and shared too. The
rates are taken by blocks of consecutive users: a block whose non-zeros fill at least
1/64 of its pairs reads them off the dense GEMM :math:`A_{\text{block}}B^\top` (BLAS,
about 4x faster than gathering ``(nnz, k)`` rows on ML-1M at 4.4 % density), a sparser
block gathers rows. The likelihood sum needs no per-non-zero shifts:
:math:`\sum y\log S = \sum y\log S' + \sum_u y_{u\cdot}\max_k E\log\theta_{uk} +
\sum_i y_{\cdot i}\max_k E\log\beta_{ik}`. Only the order of float64 additions differs
from the direct formulas.
The returned Posterior (method ``"cavi"``, one chain) holds ``num_samples`` independent
draws from the variational posteriors of :math:`\theta, \beta, \xi, \eta`.
"""

from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from bayesmf.errors import SpecError
from bayesmf.infer import check_int as _pos_int
from bayesmf.infer import check_bool, check_options, check_pairs, fitted_spec
from bayesmf.infer._progress import iteration_bar
from bayesmf.infer.nmf import (SparseCounts, check_poisson_spec, extended_factors,
                               poisson_loglik)

__all__ = ["fit_gibbs_hpf", "fit_cavi", "multinomial_split", "cavi", "cavi_elbo",
           "HPFData", "HPFState", "GIBBS_DEFAULTS", "CAVI_DEFAULTS", "DEFAULTS"]

#: options of :func:`fit_gibbs_hpf`
GIBBS_DEFAULTS = dict(num_samples=200, num_warmup=100, num_chains=1, thin=1,
                      store_draws=True, predict_pairs=None, chain_method="vectorized",
                      progress_every=None, checkpoint=None, checkpoint_every=None,
                      resume=False, memory_limit=None)
#: options of :func:`fit_cavi`
CAVI_DEFAULTS = dict(max_iter=500, min_iter=10, tol=1e-5, num_samples=100,
                     bias_warmup="auto")
#: the options of the method registered in :data:`bayesmf.infer.METHODS` (``cavi``)
DEFAULTS = CAVI_DEFAULTS
#: ranks up to which the inverse-CDF split of the counts of 1 is unrolled over the factors
_UNROLL = 64


# ----------------------------------------------------------------------------- data
class HPFData(NamedTuple):
    """The non-zero counts, split into counts of 1 (``u1, i1``) and larger counts
    (``u2, i2, y2``); int32 indices, ``y2`` float."""

    u1: object
    i1: object
    u2: object
    i2: object
    y2: object


class HPFState(NamedTuple):
    """One chain's state: ``theta (N, k)``, ``beta (M, k)``, ``xi (N,)``, ``eta (M,)`` and
    the optional biases ``bu (N,)``, ``bi (M,)`` (zeros when off)."""

    theta: object
    beta: object
    xi: object
    eta: object
    bu: object
    bi: object


class _Cfg(NamedTuple):
    N: int
    M: int
    K: int
    hyper: tuple  # (a, a', b', c, c', d')
    log_fact: float  # sum log y! over the non-zeros
    ub: bool = False  # user biases b_u
    ib: bool = False  # item biases b_i
    bias: tuple = (0.3, 0.3)  # their Gamma(e, f) prior


def _state_factors(cfg: _Cfg, state: HPFState):
    return extended_factors(state.theta, state.beta, state.bu if cfg.ub else None,
                            state.bi if cfg.ib else None)


def multinomial_split(key, w1, y2=None, w2=None):
    r"""The auxiliary split of the Gibbs sweep (module docs).

    ``w1 (n1, k)``: non-negative weights :math:`\theta_{uk}\beta_{ik}` of the counts equal
    to 1; returns the factor index of each ``(n1,)`` (inverse CDF of the normalised
    weights, one uniform each: the number of partial sums below :math:`U\sum_k w_k`,
    capped at :math:`k-1` against round-off). ``y2 (n2,)``, ``w2 (n2, k)``: larger
    counts and their weights; returns ``z (n2, k)`` with ``z ~ Mult(y2, w2 / sum w2)``
    row-wise (conditional binomials in a ``lax.scan`` over the factors). Rows whose
    weights are all zero go to the first factor / are split by ``Bin(., 0)`` up to the
    last factor, which takes the rest (they cannot occur with positive factors). Either
    part may be ``None`` (returned as ``None``)."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    k1, k2 = jax.random.split(key)
    out1 = out2 = None
    if w1 is not None:
        K = w1.shape[1]
        if K <= _UNROLL:
            # k = #{j : w_1 + ... + w_j < t}, the running sum unrolled over the columns:
            # one fused pass, no (n1, k) cumsum (1.4x faster on CPU at k = 32)
            t = jax.random.uniform(k1, w1.shape[:1], w1.dtype) * w1.sum(axis=1)
            run = jnp.zeros_like(t)
            cnt = jnp.zeros(t.shape, jnp.int32)
            for j in range(K):
                run = run + w1[:, j]
                cnt = cnt + (run < t)
        else:
            cum = jnp.cumsum(w1, axis=1)
            t = jax.random.uniform(k1, w1.shape[:1], w1.dtype) * cum[:, -1]
            cnt = jnp.sum(cum < t[:, None], axis=1)
        out1 = jnp.minimum(cnt, K - 1).astype(jnp.int32)
    if y2 is not None:
        K = w2.shape[1]
        wt = w2.T  # (K, n2)
        tail = jnp.cumsum(wt[::-1], axis=0)[::-1]  # sum_{j >= k} w_j
        p = jnp.where(tail > 0, wt / jnp.where(tail > 0, tail, 1.0), 0.0)
        p = jnp.clip(p, 0.0, 1.0)

        def body(rem, xs):
            kk, pk = xs
            z = jax.random.binomial(kk, rem, pk).astype(rem.dtype)
            z = jnp.minimum(z, rem)
            return rem - z, z

        rem, Z = lax.scan(body, y2.astype(w2.dtype), (jax.random.split(k2, K - 1), p[:-1]))
        out2 = jnp.concatenate([Z, rem[None]], axis=0).T
    return out1, out2


def _sweep(cfg: _Cfg, data: HPFData, key, state: HPFState):
    """One Gibbs sweep (module docs); returns ``(state, info)``."""
    import jax
    import jax.numpy as jnp

    from bayesmf.model.random import standard_gamma

    a, ap, bp, c, cp, dp = cfg.hyper
    e, f = cfg.bias
    N, M, K = cfg.N, cfg.M, cfg.K
    th, be, xi, et, bu, bi = state
    A, B = _state_factors(cfg, state)  # the split runs over the bias columns too
    KX = A.shape[1]
    dt = th.dtype
    k_split, k_gamma = jax.random.split(key)
    has1, has2 = data.u1.shape[0] > 0, data.u2.shape[0] > 0
    w1 = A[data.u1] * B[data.i1] if has1 else None
    w2 = A[data.u2] * B[data.i2] if has2 else None
    z1, z2 = multinomial_split(k_split, w1, data.y2 if has2 else None, w2)
    cu = jnp.zeros((N * KX,), dt)
    ci = jnp.zeros((M * KX,), dt)
    if has1:
        cu = cu.at[data.u1 * KX + z1].add(1.0)
        ci = ci.at[data.i1 * KX + z1].add(1.0)
    cu = cu.reshape(N, KX)
    ci = ci.reshape(M, KX)
    if has2:
        cu = cu + jax.ops.segment_sum(z2, data.u2, N)
        ci = ci + jax.ops.segment_sum(z2, data.i2, M)
    # every standard Gamma variate of the sweep in one call (the shapes are known now)
    parts = [a + cu[:, :K].ravel(), c + ci[:, :K].ravel(),
             jnp.full((N,), ap + K * a, dt), jnp.full((M,), cp + K * c, dt)]
    if cfg.ub:  # b_u | z ~ Gamma(e + sum_i z_{ui,b_u}, f + M)
        parts.append(e + cu[:, K])
    if cfg.ib:  # b_i | z ~ Gamma(e + sum_u z_{ui,b_i}, f + N)
        parts.append(e + ci[:, KX - 1])
    g = standard_gamma(k_gamma, jnp.concatenate(parts), dt)
    tiny = jnp.asarray(1e-30, dt)
    g_th = g[:N * K].reshape(N, K)
    g_be = g[N * K:(N + M) * K].reshape(M, K)
    o = (N + M) * K
    g_xi = g[o:o + N]
    g_et = g[o + N:o + N + M]
    o += N + M
    if cfg.ub:
        bu = jnp.maximum(g[o:o + N] / (f + M), tiny)
        o += N
    if cfg.ib:
        bi = jnp.maximum(g[o:o + M] / (f + N), tiny)
    th = jnp.maximum(g_th / (xi[:, None] + be.sum(0)[None, :]), tiny)
    xi = jnp.maximum(g_xi / (ap / bp + th.sum(1)), tiny)
    be = jnp.maximum(g_be / (et[:, None] + th.sum(0)[None, :]), tiny)
    et = jnp.maximum(g_et / (cp / dp + be.sum(1)), tiny)
    # the log likelihood of the state that entered the sweep (free: from the weights)
    ll_in = -jnp.dot(A.sum(0), B.sum(0))
    if has1:
        ll_in = ll_in + jnp.sum(jnp.log(jnp.maximum(w1.sum(1), tiny)))
    if has2:
        ll_in = ll_in + jnp.sum(data.y2 * jnp.log(jnp.maximum(w2.sum(1), tiny)))
    return HPFState(th, be, xi, et, bu, bi), {"log_likelihood_in": ll_in - cfg.log_fact}


def _fit_stats(cfg: _Cfg, data: HPFData, state: HPFState):
    """``(log_likelihood, train_rmse)`` of a state over all pairs (module docs)."""
    import jax.numpy as jnp

    th, be = _state_factors(cfg, state)  # rate A_u . B_i (with the bias columns)
    tiny = jnp.asarray(1e-30, th.dtype)
    ll = -jnp.dot(th.sum(0), be.sum(0)) - cfg.log_fact
    sq = jnp.sum((th.T @ th) * (be.T @ be))  # sum over all pairs of r^2
    if data.u1.shape[0]:
        r1 = jnp.sum(th[data.u1] * be[data.i1], axis=1)
        ll = ll + jnp.sum(jnp.log(jnp.maximum(r1, tiny)))
        sq = sq + jnp.sum(1.0 - 2.0 * r1)
    if data.u2.shape[0]:
        y2 = data.y2
        r2 = jnp.sum(th[data.u2] * be[data.i2], axis=1)
        ll = ll + jnp.sum(y2 * jnp.log(jnp.maximum(r2, tiny)))
        sq = sq + jnp.sum(y2 * y2 - 2.0 * y2 * r2)
    rmse = jnp.sqrt(jnp.maximum(sq, 0.0) / (float(cfg.N) * float(cfg.M)))
    return ll, rmse


_STAT_NAMES = ("log_likelihood", "train_rmse")


def _program(cfg: _Cfg, store_draws: bool = True):
    r"""The sweep as a :class:`~bayesmf.infer.driver.Program`: the factor draws and the
    fit statistics kept (only the statistics with ``store_draws=False``), the rate
    :math:`r_{ui} = A_u\cdot B_i` of the requested pairs streamed."""
    import jax.numpy as jnp

    from bayesmf.infer.driver import Program

    def step(data, key, state):
        return _sweep(cfg, data, key, state)

    def extract(data, state, info):
        ll, rmse = _fit_stats(cfg, data, state)
        out = {"log_likelihood": ll, "train_rmse": rmse}
        if store_draws:
            out.update(U=state.theta, V=state.beta, xi=state.xi, eta=state.eta)
            if cfg.ub:
                out["bu"] = state.bu
            if cfg.ib:
                out["bi"] = state.bi
        return out

    def stream(pairs, state):
        th, be = _state_factors(cfg, state)
        m = jnp.sum(th[pairs[0]] * be[pairs[1]], axis=1)
        return m, jnp.zeros((), m.dtype)  # the Poisson noise variance is the rate itself

    def postfix(info):
        return {"loglik": f"{float(np.mean(info['log_likelihood_in'])):.6g}"}

    return Program("hpf-gibbs", step, extract, stream, ("hpf-gibbs", cfg, store_draws),
                   postfix, "sweep")


def _split_data(train, spec):
    """``(SparseCounts, HPFData)`` of the training counts."""
    import jax.numpy as jnp

    y = spec.likelihood.encode(train.rating)
    sc = SparseCounts(train.user, train.item, y, train.n_users, train.n_items)
    one = sc.y == 1
    i32 = lambda x: jnp.asarray(x, jnp.int32)  # noqa: E731
    data = HPFData(i32(sc.user[one]), i32(sc.item[one]), i32(sc.user[~one]),
                   i32(sc.item[~one]), jnp.asarray(sc.y[~one], jnp.float32))
    return sc, data


_HYPER_NAMES = ("a", "a_prime", "b_prime", "c", "c_prime", "d_prime")


def _hyper_dict(spec) -> dict:
    """The hyperparameters a fit used (``attrs["settings"]["hyper"]``, from the spec's
    :class:`~bayesmf.model.priors.HierarchicalGamma`): the factors', and the biases' when
    the spec has them."""
    prior = spec.prior
    out = dict(zip(_HYPER_NAMES, prior.hyper))
    if spec.user_bias or spec.item_bias:
        out.update(bias_shape=prior.bias_shape, bias_rate=prior.bias_rate)
    return out


def fit_gibbs_hpf(train, spec, *, seed: int = 0, progress: bool = False, **options):
    r"""The HPF Gibbs sampler (module docs) as the ``gibbs`` method of the Poisson
    likelihood; returns a :class:`~bayesmf.posterior.Posterior` (method ``"gibbs"``).

    Options: ``num_samples`` (200), ``num_warmup`` (100), ``num_chains`` (1), ``thin``
    (1), ``chain_method`` (``"vectorized"`` | ``"sequential"`` | ``"parallel"``),
    ``progress_every``, ``checkpoint``/``checkpoint_every``/``resume`` (as
    :func:`bayesmf.infer.gibbs.fit_gibbs`) and ``memory_limit``. ``attrs`` record the
    seed, settings, ``compile_seconds``, ``sampling_seconds`` and ``seconds_per_sweep``
    (sampling wall time / sweeps, all chains together).

    Streaming (as the Gaussian-family sampler's): ``predict_pairs=(u_idx, i_idx)``
    folds the rate :math:`r_{ui,s} = A_u\cdot B_i` of each pair at every kept draw into
    a running mean and variance; ``attrs["streamed_predictions"]`` has ``mean``
    (:math:`E[y_{ui}] = E[r_{ui}]`), ``var_param`` (:math:`\mathrm{Var}[r_{ui}]`) and
    the per-pair ``noise_var`` :math:`E[\mathrm{Var}(y\mid r)] = E[r_{ui}]` (Poisson),
    so ``var`` of :func:`bayesmf.infer.gibbs.streamed_predictions` is the predictive
    variance :math:`\mathrm{Var}[y_{ui}]` by the law of total variance. With
    ``store_draws=False`` the factor draws are not kept: the posterior holds the final
    state of each chain (one draw) and the kept traces of ``log_likelihood`` and
    ``train_rmse`` go to ``attrs["traces"]``, so a run over a large catalogue costs the
    memory of one state."""
    import jax
    import jax.numpy as jnp

    from bayesmf.infer.driver import compile_logger, pooled_stream, run_chains
    from bayesmf.posterior import Posterior, TrainInfo

    spec = fitted_spec(train, spec, "gibbs")
    check_poisson_spec(spec, "gibbs")
    opts = check_options("gibbs", options, GIBBS_DEFAULTS)
    S = _pos_int("num_samples", opts["num_samples"], 1)
    W = _pos_int("num_warmup", opts["num_warmup"], 0)
    C = _pos_int("num_chains", opts["num_chains"], 1)
    T = _pos_int("thin", opts["thin"], 1)
    check_bool("resume", opts["resume"])
    store = check_bool("store_draws", opts["store_draws"])
    if opts["checkpoint_every"] is not None and opts["checkpoint"] is None:
        raise SpecError("checkpoint_every applies with checkpoint=PATH (the file the run "
                        "writes)")
    if opts["resume"] and opts["checkpoint"] is None:
        raise SpecError("resume=True needs checkpoint=PATH (the file the run wrote)")
    pairs = check_pairs(opts["predict_pairs"], train.n_users, train.n_items)
    n_iter = W + (S - 1) * T + 1
    prior = spec.prior
    sc, data = _split_data(train, spec)
    N, M, K = train.n_users, train.n_items, spec.rank
    cfg = _Cfg(N, M, K, prior.hyper, float(sc.log_fact), bool(spec.user_bias),
               bool(spec.item_bias), (prior.bias_shape, prior.bias_rate))
    a, ap, bp, c, cp, dp = cfg.hyper
    s = float(np.sqrt(max(sc.total, 1e-30) / (float(N) * float(M) * K)))

    def init(key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        # biases start at the rate of one more factor (s^2), zeros when off
        return HPFState(s * jax.random.uniform(k1, (N, K), jnp.float32, 0.5, 1.5),
                        s * jax.random.uniform(k2, (M, K), jnp.float32, 0.5, 1.5),
                        jnp.full((N,), bp, jnp.float32), jnp.full((M,), dp, jnp.float32),
                        (s * s * float(cfg.ub))
                        * jax.random.uniform(k3, (N,), jnp.float32, 0.5, 1.5),
                        (s * s * float(cfg.ib))
                        * jax.random.uniform(k4, (M,), jnp.float32, 0.5, 1.5))

    keys = jax.random.split(jax.random.PRNGKey(int(seed)), C)
    state = jax.jit(jax.vmap(lambda kk: init(jax.random.fold_in(kk, 2**31 - 1))))(keys)
    fp = ""
    if opts["checkpoint"] is not None:
        from bayesmf.infer import checkpoint as _ck

        fp = _ck.fingerprint("hpf-gibbs", train, spec, int(seed), S, W, C, T,
                             opts["chain_method"],
                             *(() if store and pairs is None else
                               (store, None if pairs is None
                                else tuple(np.asarray(a) for a in pairs))))
    run = run_chains(_program(cfg, store), data, state, keys, num_samples=S, num_warmup=W,
                     thin=T, chain_method=opts["chain_method"], pairs=pairs,
                     checkpoint=opts["checkpoint"],
                     checkpoint_every=opts["checkpoint_every"], resume=opts["resume"],
                     fingerprint=fp, meta={"sampler": "hpf-gibbs", "seed": int(seed)},
                     progress=progress, progress_every=opts["progress_every"],
                     memory_limit=opts["memory_limit"], log=compile_logger(progress),
                     what=f"the HPF Gibbs draw buffers ({C} chain(s) x {S} draws)",
                     hint="keep fewer draws (num_samples, thin), fewer chains, or "
                     "store_draws=False with predict_pairs= to stream predictions without "
                     "storing the factor draws")
    host = dict(run.draws)
    stats = {n: host.pop(n) for n in _STAT_NAMES}
    f32 = np.float32
    if not store:  # the final state of each chain as its one draw
        fin = run.state
        host = {"U": fin.theta, "V": fin.beta, "xi": fin.xi, "eta": fin.eta,
                **({"bu": fin.bu} if cfg.ub else {}), **({"bi": fin.bi} if cfg.ib else {})}
        host = {n: np.asarray(v)[:, None] for n, v in host.items()}
    D = S if store else 1
    draws = {"mu": np.zeros((C, D), f32), "bu": np.zeros((C, D, N), f32),
             "bi": np.zeros((C, D, M), f32)}
    draws.update({n: np.asarray(v, f32) for n, v in host.items()})
    attrs = {
        "seed": int(seed), "sampler": "hpf-gibbs",
        "settings": {"num_samples": S, "num_warmup": W, "num_chains": C, "thin": T,
                     "store_draws": store, "chain_method": opts["chain_method"],
                     "n_sweeps": n_iter, "hyper": _hyper_dict(spec)},
        "chain_method_used": run.chain_method_used, "devices": run.devices,
        "compile_seconds": run.compile_seconds, "compile_cached": run.compile_cached,
        "sampling_seconds": run.sampling_seconds,
        "seconds_per_sweep": run.sampling_seconds / max(1, run.n_run),
        "draws_per_call": run.slots,
        "kept_sweeps": "num_warmup + j * thin, j < num_samples",
        "n_ones": int(data.u1.shape[0]), "n_larger": int(data.u2.shape[0]),
    }
    if opts["checkpoint"] is not None:
        attrs["checkpoint"] = {"path": str(opts["checkpoint"]),
                               "resumed_at": run.resumed_at}
    if pairs is not None:
        sp = pooled_stream(pairs, run.stream)
        sp["noise_var"] = list(sp["mean"])  # Poisson: E[Var(y | r)] = E[r], per pair
        attrs["streamed_predictions"] = sp
    if not store:
        attrs["traces"] = {n: np.asarray(v).tolist() for n, v in stats.items()}
        attrs["draws_kept"] = "final state of each chain only (store_draws=False)"
        stats = {n: np.asarray(v)[:, -1:] for n, v in stats.items()}
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "gibbs", sample_stats=stats, attrs=attrs)


# ----------------------------------------------------------------------------- CAVI
class _Moments(NamedTuple):
    """Of :math:`x\\sim\\mathrm{Gamma}(s, r)`: ``E`` = :math:`s/r`, ``El`` =
    :math:`\\psi(s) - \\log r`, ``psi`` = :math:`\\psi(s)`, ``log_r``."""

    E: np.ndarray
    El: np.ndarray
    psi: np.ndarray
    log_r: np.ndarray


def _moments(s, r) -> _Moments:
    from scipy.special import digamma

    psi, log_r = digamma(s), np.log(r)
    return _Moments(s / r, psi - log_r, psi, log_r)


def _gamma_entropy(s, r, m: _Moments | None = None):
    """:math:`\\mathbb H[\\mathrm{Gamma}(s, r)] = s - \\log r + \\log\\Gamma(s) +
    (1 - s)\\psi(s)` elementwise (``m``: the moments of ``(s, r)`` when at hand)."""
    from scipy.special import digamma, gammaln

    if m is None:
        return s - np.log(r) + gammaln(s) + (1.0 - s) * digamma(s)
    return s - m.log_r + gammaln(s) + (1.0 - s) * m.psi


def _elbo(data: SparseCounts, hyper: tuple, p: dict, mom: dict, y_log_S: float,
          bias: tuple = (0.3, 0.3)) -> float:
    """The ELBO (module docs) from the moments ``mom`` (keys ``t, x, b, e``: θ, ξ, β, η;
    ``bu``, ``bi``: the biases when on, with their ``Gamma(e, f)`` prior ``bias``) of
    ``p`` and :math:`\\sum_{y_{ui}>0} y_{ui}\\log S_{ui}`."""
    from scipy.special import gammaln

    a, ap, bp, c, cp, dp = hyper
    ET, ElT = mom["t"].E, mom["t"].El
    EB, ElB = mom["b"].E, mom["b"].El
    EX, ElX = mom["x"].E, mom["x"].El
    EE, ElE = mom["e"].E, mom["e"].El
    K = ET.shape[1]
    lik = y_log_S - data.log_fact - float(ET.sum(0) @ EB.sum(0))
    pr_t = float(np.sum(a * ElX) * K - ET.shape[0] * K * gammaln(a)
                 + (a - 1.0) * ElT.sum() - np.sum(EX[:, None] * ET))
    pr_x = float(np.sum(ap * np.log(ap / bp) - gammaln(ap) + (ap - 1.0) * ElX
                        - ap / bp * EX))
    pr_b = float(np.sum(c * ElE) * K - EB.shape[0] * K * gammaln(c)
                 + (c - 1.0) * ElB.sum() - np.sum(EE[:, None] * EB))
    pr_e = float(np.sum(cp * np.log(cp / dp) - gammaln(cp) + (cp - 1.0) * ElE
                        - cp / dp * EE))
    ent = float(_gamma_entropy(p["gs"], p["gr"], mom["t"]).sum()
                + _gamma_entropy(p["ks"], p["kr"], mom["x"]).sum()
                + _gamma_entropy(p["ls"], p["lr"], mom["b"]).sum()
                + _gamma_entropy(p["ts"], p["tr"], mom["e"]).sum())
    # the biases: -sum over all pairs of E b_u + E b_i, their Gamma(e, f) prior, entropy
    e, f = bias
    pr_bias = 0.0
    for name, n_other in (("bu", EB.shape[0]), ("bi", ET.shape[0])):
        if name in mom:
            m = mom[name]
            lik -= n_other * float(m.E.sum())
            pr_bias += float(np.sum(e * np.log(f) - gammaln(e) + (e - 1.0) * m.El - f * m.E))
            ent += float(_gamma_entropy(p[name + "_s"], p[name + "_r"], m).sum())
    return lik + pr_t + pr_x + pr_b + pr_e + pr_bias + ent


def _all_moments(p: dict) -> dict:
    mom = {"t": _moments(p["gs"], p["gr"]), "x": _moments(p["ks"], p["kr"]),
           "b": _moments(p["ls"], p["lr"]), "e": _moments(p["ts"], p["tr"])}
    for name in ("bu", "bi"):
        if name + "_s" in p:
            mom[name] = _moments(p[name + "_s"], p[name + "_r"])
    return mom


def _extended_El(mom: dict):
    r""":math:`E\log` of the extended factors :math:`A = (\theta, b_u, 1)`,
    :math:`B = (\beta, 1, b_i)` (Poisson module docs; :math:`E\log 1 = 0`)."""
    bu, bi = mom.get("bu"), mom.get("bi")
    return extended_factors(mom["t"].El, mom["b"].El, None if bu is None else bu.El,
                            None if bi is None else bi.El, one=0.0)


def cavi_elbo(data: SparseCounts, hyper: tuple, p: dict, log_S=None,
              bias: tuple = (0.3, 0.3)) -> float:
    """The ELBO at the optimal :math:`\\phi` for the Gamma parameters ``p`` (keys ``gs,
    gr, ks, kr, ls, lr, ts, tr``, and ``bu_s, bu_r`` / ``bi_s, bi_r`` for the biases with
    prior ``bias = (e, f)``; module docs). ``log_S`` (the log normalisers
    :math:`\\log S_{ui}` at the non-zeros) is computed when not given."""
    mom = _all_moments(p)
    if log_S is None:
        y_log_S = _log_normalisers(data, *_extended_El(mom))[0]
    else:
        y_log_S = float(data.y @ log_S)
    return _elbo(data, hyper, p, mom, y_log_S, bias)


def _log_normalisers(data: SparseCounts, ElT, ElB, rates=None, y_rows=None, y_cols=None):
    r"""``(sum y log S, A', B', S')``: ``A' = exp(ElT - max_k)``, ``B'`` alike,
    ``S' = A'_u . B'_i`` at the non-zeros (by ``rates``, :meth:`SparseCounts.rates <bayesmf.infer.nmf.SparseCounts.rates>` of ``data``)
    and :math:`\log S_{ui} = \log S'_{ui} + m^A_u + m^B_i`, so
    :math:`\sum y\log S = \sum y\log S' + (\sum_i y_{ui})^\top m^A + (\sum_u y_{ui})^\top
    m^B` (``y_rows``, ``y_cols``: the row and column sums of the counts)."""
    if rates is None:
        rates = data.rates
    if y_rows is None:
        y_rows = np.asarray(data.csr.sum(axis=1)).ravel()
        y_cols = np.asarray(data.csr.sum(axis=0)).ravel()
    mA = ElT.max(axis=1)
    mB = ElB.max(axis=1)
    A = np.exp(ElT - mA[:, None])
    B = np.exp(ElB - mB[:, None])
    Sp = np.maximum(rates(A, B), np.finfo(np.float64).tiny)
    y_log_S = float(data.y @ np.log(Sp)) + float(y_rows @ mA) + float(y_cols @ mB)
    return y_log_S, A, B, Sp


def cavi(data: SparseCounts, rank: int, hyper: tuple, *, max_iter: int = 500,
         min_iter: int = 10, tol: float = 1e-5, seed: int = 0, callback=None,
         user_bias: bool = False, item_bias: bool = False, bias: tuple = (0.3, 0.3),
         bias_warmup: int = 0):
    """CAVI for HPF (module docs). Returns ``(params, info)``: the variational Gamma
    parameters (``gs, gr`` of θ, ``ks, kr`` of ξ, ``ls, lr`` of β, ``ts, tr`` of η;
    ``bu_s, bu_r`` and ``bi_s, bi_r`` of the optional biases, prior ``bias = (e, f)``:
    their shapes :math:`e + \\sum_i y_{ui}\\phi_{ui,b_u}` and rates :math:`f + M`, items
    alike, from the same :math:`\\phi` over the extended factors. The biases start level
    with one factor (rate :math:`s^2`); with ``bias_warmup > 0`` they start near 0
    (:math:`10^{-3}s^2`) and are first updated after that many iterations, so that the
    factors take the counts first -- which optimum is better depends on the data, and
    :func:`fit_cavi` runs both starts and keeps the higher ELBO) and
    ``info = {"elbo": trace, "iterations", "converged", "seconds"}``; ``elbo[t]`` is the
    ELBO after ``t`` iterations (``elbo[0]`` at the initial values).
    ``callback(it, elbo)`` after each iteration.

    Each iteration computes the rates :math:`S'` once (:meth:`bayesmf.infer.nmf.SparseCounts.rates`: dense GEMM blocks
    where the counts are dense enough) and the digammas, logs and means of the Gamma
    parameters once (:func:`_moments`); the ELBO and the next updates share them."""
    a, ap, bp, c, cp, dp = hyper
    rng = np.random.default_rng(seed)
    N, M, K = data.N, data.M, rank
    s = np.sqrt(max(data.total, 1e-300) / (float(N) * float(M) * K))
    p = {"gs": a + rng.uniform(0.0, 1.0, (N, K)), "ls": c + rng.uniform(0.0, 1.0, (M, K)),
         "ks": np.full(N, ap + K * a), "ts": np.full(M, cp + K * c)}
    p["gr"] = p["gs"] / (s * rng.uniform(0.5, 1.5, (N, K)))
    p["lr"] = p["ls"] / (s * rng.uniform(0.5, 1.5, (M, K)))
    p["kr"] = p["ks"] / bp
    p["tr"] = p["ts"] / dp
    e, f = bias
    for name, n, on in (("bu", N, user_bias), ("bi", M, item_bias)):
        if on:  # level with one factor's rate s^2, or near 0 when the factors come first
            p[name + "_s"] = e + rng.uniform(0.0, 1.0, n)
            p[name + "_r"] = p[name + "_s"] / ((1e-3 if bias_warmup else 1.0) * s * s
                                               * rng.uniform(0.5, 1.5, n))
    if user_bias or item_bias:  # converged only once the biases have moved
        min_iter = max(min_iter, bias_warmup + 1)
    rates = data.rates
    y_rows = np.asarray(data.csr.sum(axis=1)).ravel()
    y_cols = np.asarray(data.csr.sum(axis=0)).ravel()
    trace = []
    converged = False
    t0 = time.perf_counter()
    it = 0
    while True:
        mom = _all_moments(p)
        y_log_S, A, B, Sp = _log_normalisers(data, *_extended_El(mom), rates, y_rows, y_cols)
        trace.append(_elbo(data, hyper, p, mom, y_log_S, bias))
        if callback is not None and it > 0:
            callback(it, trace[-1])
        if it > 0 and it >= min_iter and \
                abs(trace[-1] - trace[-2]) <= tol * max(abs(trace[-1]), 1e-12):
            converged = True
            break
        if it >= max_iter:
            break
        it += 1
        # phi (implicit) -> the shapes of theta and beta (same phi for both)
        QB, QtA = data.ratio_products(data.y / Sp, A, B)
        gs = a + A[:, :K] * QB[:, :K]
        ls = c + B[:, :K] * QtA[:, :K]
        if user_bias and it > bias_warmup:  # column K of A is b_u (its B column is 1)
            p["bu_s"] = e + A[:, K] * QB[:, K]
            p["bu_r"] = np.full(N, f + M)
        if item_bias and it > bias_warmup:  # the last column of B: b_i (its A column: 1)
            p["bi_s"] = e + B[:, -1] * QtA[:, -1]
            p["bi_r"] = np.full(M, f + N)
        # theta's rate with the current E[xi], E[beta]; then xi
        p["gs"] = gs
        p["gr"] = mom["x"].E[:, None] + mom["b"].E.sum(0)[None, :]
        ET = p["gs"] / p["gr"]
        p["kr"] = ap / bp + ET.sum(1)
        # beta with the new E[theta]; then eta
        p["ls"] = ls
        p["lr"] = mom["e"].E[:, None] + ET.sum(0)[None, :]
        p["tr"] = cp / dp + (p["ls"] / p["lr"]).sum(1)
    return p, {"elbo": np.asarray(trace), "iterations": it, "converged": converged,
               "seconds": time.perf_counter() - t0}


def fit_cavi(train, spec, *, seed: int = 0, progress: bool = False, **options):
    """Coordinate-ascent VI of HPF (module docs), the ``cavi`` method; returns a
    :class:`~bayesmf.posterior.Posterior` (method ``"cavi"``, one chain of
    ``num_samples`` draws from the variational posteriors).

    Options: ``max_iter`` (500), ``min_iter`` (10), ``tol`` (1e-5, relative ELBO change),
    ``num_samples`` (100), ``bias_warmup`` (with the optional biases: the iterations before
    they are first updated, :func:`cavi`; ``"auto"`` runs CAVI twice, biases level with
    the factors from the start and biases after 50 iterations, and keeps the fit with the
    higher ELBO -- the same model, so the ELBOs compare: on Last.fm 2K the level start
    ends in a popularity optimum, validation Recall@20 0.10 against 0.19 after the
    warm-up, ``benchmarks/results/hpf_biases.md``; on small planted data the warm-up start
    is the worse one). ``attrs``: ``converged``, ``iterations``, ``elbo``,
    ``elbo_trace`` and timings; ``native``: the variational parameters."""
    from bayesmf.posterior import Posterior, TrainInfo

    t0 = time.perf_counter()
    spec = fitted_spec(train, spec, "cavi")
    check_poisson_spec(spec, "cavi")
    opts = check_options("cavi", options, CAVI_DEFAULTS)
    max_iter = _pos_int("max_iter", opts["max_iter"], 1)
    min_iter = _pos_int("min_iter", opts["min_iter"], 0)
    biased = bool(spec.user_bias or spec.item_bias)
    warm = opts["bias_warmup"]
    starts = (0, 50) if warm == "auto" else (_pos_int("bias_warmup", warm, 0),)
    if not biased:
        starts = (0,)
    S = _pos_int("num_samples", opts["num_samples"], 1)
    tol = opts["tol"]
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.integer, np.floating)) \
            or not (tol >= 0 and np.isfinite(tol)):
        raise SpecError(f"tol must be a finite number >= 0, got {tol!r}")
    if min_iter > max_iter:
        raise SpecError(f"min_iter ({min_iter}) must not exceed max_iter ({max_iter})")
    hyper = spec.prior.hyper
    y = spec.likelihood.encode(train.rating)
    data = SparseCounts(train.user, train.item, y, train.n_users, train.n_items)
    prior = spec.prior
    runs = {}
    with iteration_bar(progress, max_iter * len(starts), "HPF CAVI", "elbo") as tick:
        for w in starts:
            runs[w] = cavi(data, spec.rank, hyper, max_iter=max_iter, min_iter=min_iter,
                           tol=float(tol), seed=int(seed),
                           callback=lambda it, elbo: tick(elbo),
                           user_bias=bool(spec.user_bias), item_bias=bool(spec.item_bias),
                           bias=(prior.bias_shape, prior.bias_rate), bias_warmup=w)
    bias_warmup = max(runs, key=lambda w: runs[w][1]["elbo"][-1])
    p, info = runs[bias_warmup]
    t1 = time.perf_counter()
    rng = np.random.default_rng([int(seed), 1])
    N, M = train.n_users, train.n_items
    f32 = np.float32
    tiny = 1e-30
    draws = {
        "U": np.maximum(rng.gamma(p["gs"], 1.0 / p["gr"], (S,) + p["gs"].shape), tiny),
        "V": np.maximum(rng.gamma(p["ls"], 1.0 / p["lr"], (S,) + p["ls"].shape), tiny),
        "xi": rng.gamma(p["ks"], 1.0 / p["kr"], (S, N)),
        "eta": rng.gamma(p["ts"], 1.0 / p["tr"], (S, M)),
    }
    for name, n in (("bu", N), ("bi", M)):
        draws[name] = (np.maximum(rng.gamma(p[name + "_s"], 1.0 / p[name + "_r"], (S, n)),
                                  tiny) if name + "_s" in p else np.zeros((S, n)))
    draws = {n: v.astype(f32)[None] for n, v in draws.items()}
    draws["mu"] = np.zeros((1, S), f32)
    elbo = info["elbo"]
    mean = {n: p[n + "_s"] / p[n + "_r"] if n + "_s" in p else None for n in ("bu", "bi")}
    mean_ll = poisson_loglik(data, *extended_factors(p["gs"] / p["gr"], p["ls"] / p["lr"],
                                                     mean["bu"], mean["bi"]))
    attrs = {"seed": int(seed), "solver": "hpf-cavi",
             "settings": {"max_iter": max_iter, "min_iter": min_iter, "tol": float(tol),
                          "bias_warmup": warm if biased else None,
                          "num_samples": S, "hyper": _hyper_dict(spec)},
             "converged": bool(info["converged"]), "iterations": int(info["iterations"]),
             "elbo": float(elbo[-1]), "elbo_trace": [float(e) for e in elbo],
             "bias_starts": ({str(w): float(r[1]["elbo"][-1]) for w, r in runs.items()}
                             if biased else None),
             "bias_warmup_used": bias_warmup if biased else None,
             "log_likelihood_at_mean": mean_ll,
             "timings": {"fit_s": float(info["seconds"]), "draws_s": time.perf_counter() - t1,
                         "total_s": time.perf_counter() - t0}}
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "cavi", {}, p, attrs)


# the options each fitter starts from (read by the estimator's memory check)
fit_gibbs_hpf.defaults = GIBBS_DEFAULTS
fit_cavi.defaults = CAVI_DEFAULTS
