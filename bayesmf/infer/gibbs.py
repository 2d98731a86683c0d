r"""BPMF by blocked Gibbs sampling (Salakhutdinov & Mnih 2008, with biases), on JAX.

Model (the shared :class:`~bayesmf.model.spec.ModelSpec`, hyperpriors from
:class:`~bayesmf.model.spec.BayesPriors`; :math:`\Omega` the observed pairs, :math:`n=|\Omega|`,
``N`` users, ``M`` items, rank ``k``):

.. math::

    r_{ui} &\sim \mathcal N(\mu + b_u + b_i + U_u^\top V_i,\ \tau^{-1}),
        \qquad (u,i)\in\Omega \\
    U_u &\sim \mathcal N(\mu_U, \Lambda_U^{-1}),\quad
    (\mu_U, \Lambda_U) \sim \mathcal{NW}(\mu_0 = 0, \beta_0, W_0 = w_0 I, \nu_0)
    \quad(\text{same for } V_i) \\
    b_u &\sim \mathcal N(0, \lambda_{b_u}^{-1}),\quad
    \lambda_{b_u} \sim \mathrm{Gamma}(a_b, b_b) \quad(\text{same for } b_i) \\
    \tau &\sim \mathrm{Gamma}(a_\tau, b_\tau),\qquad
    \mu \sim \mathcal N(m_\mu, \lambda_\mu^{-1})\ (\lambda_\mu = 0:\ \text{flat})

(Gamma in shape/rate form; :math:`\nu_0 = k` when ``nu0`` is None.) Switched-off terms
(``user_bias=False``...) are held at zero; ``noise="fixed"`` holds
:math:`\tau` at ``noise_precision``.

Full conditionals, in the order of one sweep
---------------------------------------------
1. **Normal-Wishart hyperparameters** of the users (items alike), with
   :math:`\bar U = \frac1N\sum_u U_u`, :math:`S = \sum_u (U_u-\bar U)(U_u-\bar U)^\top`:

   .. math::

       \beta_N = \beta_0 + N,\ \ \nu_N = \nu_0 + N,\ \
       \mu_N = \frac{\beta_0\mu_0 + N\bar U}{\beta_N},\ \
       W_N^{-1} = W_0^{-1} + S + \frac{\beta_0 N}{\beta_N}(\bar U-\mu_0)(\bar U-\mu_0)^\top

   :math:`\Lambda_U \sim \mathcal W(W_N, \nu_N)` (Bartlett decomposition) and
   :math:`\mu_U \mid \Lambda_U \sim \mathcal N(\mu_N, (\beta_N\Lambda_U)^{-1})`.
2. **Bias precisions**:
   :math:`\lambda_{b_u} \sim \mathrm{Gamma}(a_b + N/2,\ b_b + \tfrac12\sum_u b_u^2)`
   (items alike).
2m. **Row Metropolis-Hastings** (``row_mh``; on by default for probit): for
   the augmented likelihoods, before the augmentation of step 3, each user row and then
   each item row takes an IWLS Metropolis-Hastings step on its exact conditional, the
   augmentation integrated out (:func:`~bayesmf.infer.gibbs_steps.iwls_mh_rows`; Gamerman
   1997); it leaves the posterior invariant and moves rows whose augmented conditional is
   much narrower than their posterior (``benchmarks/results/augmented_mixing.md``).
3. **User rows** (bias and factors jointly, a Bayesian linear regression on the design
   :math:`x_i = [1, V_i]`): with :math:`z_u = [b_u, U_u]`,
   :math:`y_{ui} = r_{ui} - \mu - b_i`,

   .. math::

       P_u = \begin{pmatrix}\lambda_{b_u} & 0\\ 0 & \Lambda_U\end{pmatrix}
             + \tau\sum_{i\in\Omega_u} x_i x_i^\top,\qquad
       h_u = \begin{pmatrix}0\\ \Lambda_U\mu_U\end{pmatrix}
             + \tau\sum_{i\in\Omega_u} y_{ui}\, x_i,\qquad
       z_u \sim \mathcal N(P_u^{-1}h_u,\ P_u^{-1})

   (the constant column is dropped without user biases, the ``V`` block at rank 0),
   solved for all users at once by :func:`bayesmf.infer._rowblocks.solve_rows`.
4. **Item rows**: the same with the roles swapped (:math:`x_u = [1, U_u]`,
   :math:`y_{ui} = r_{ui} - \mu - b_u`, the new :math:`b_u, U`).
5. **Shift moves** (rank > 0, with the other side's biases): for :math:`c\in\mathbb R^k`,
   :math:`(V_i, \mu_V, b_u, \mu) \to (V_i - c, \mu_V - c, b_u + (U_u-\bar U)^\top c,
   \mu + \bar U^\top c)`, which changes no prediction, with :math:`c` from its Gaussian
   conditional (:func:`shift_move`); then the same with users and items swapped.
   **Scale move** (rank > 0): :math:`(U, \mu_U, \Lambda_U, V, \mu_V, \Lambda_V) \to
   (sU, s\mu_U, s^{-2}\Lambda_U, V/s, \mu_V/s, s^2\Lambda_V)`, one independence
   Metropolis step on :math:`\log s` (:func:`scale_move`).
   **Translation moves** (with a global mean and biases):
   :math:`(\mu, b_u) \to (\mu + c, b_u - c)` with :math:`c` from its Gaussian
   conditional (:func:`translation_move`), then the same for the item biases.
   All are group moves (Liu & Sabatti 2000; the scale move Metropolised) along directions
   that change no prediction and that the row updates
   traverse only slowly: on MovieLens-100K u1 (rank 10, 4 chains x 400 draws) the shift
   moves take the R-hat of :math:`\mu` from 1.25 to 1.01 and its bulk ESS from 12 to 419;
   the scale move takes :math:`\log\det\Lambda_U` from R-hat 1.40 / ESS 9 to 1.03 / 114
   (:math:`\Lambda_V`: 1.42 / 8 to 1.03 / 83, :math:`\operatorname{tr}\Lambda_U`: 1.51 / 8
   to 1.14 / 20), all at no measurable cost per sweep. The remaining slow directions are
   the other likelihood-flat reparametrisations :math:`(UA, VA^{-\top})` (row norms,
   :math:`\lVert\mu_U\rVert`: ESS 6-40); predictions, biases and :math:`\mu` mix well.
6. **Global mean**: with :math:`s_{ui} = r_{ui} - b_u - b_i - U_u^\top V_i`,

   .. math::

       \mu \sim \mathcal N\!\left(\frac{\lambda_\mu m_\mu + \tau\sum s_{ui}}
       {\lambda_\mu + \tau n},\ \frac{1}{\lambda_\mu + \tau n}\right)

7. **Noise precision**:
   :math:`\tau \sim \mathrm{Gamma}(a_\tau + n/2,\ b_\tau + \tfrac12\sum(r_{ui}-\hat r_{ui})^2)`.

Each sweep also records the train RMSE and the log likelihood of the new state.

**Residual sums.** Steps 6-7 need the residuals only through
:math:`E_1 = \sum\tau e_{ui}` and :math:`E_2 = \sum\tau e_{ui}^2`. The moves of step 5 do
not change any prediction, so both are those of the item step (4), where every item's
data precision :math:`D_i = \tau\sum_u x_u x_u^\top` and shift
:math:`d_i = \tau\sum_u t_{ui} x_u` (:math:`t_{ui} = r_{ui} - \mu - b_u`,
:math:`x_u = [1, U_u]`) are already built: with :math:`z_i = [b_i, V_i]`,

.. math::

    E_2 = \tau\sum t_{ui}^2 + \sum_i \left(z_i^\top D_i z_i - 2 z_i^\top d_i\right),\qquad
    E_1 = \tau\sum t_{ui} - \sum_i z_i^\top D_i e_1 .

After :math:`\mu \to \mu + \delta` (step 6, whose :math:`\tau\sum s_{ui} = E_1 +
\tau n\mu`) the SSE of step 7 is :math:`(E_2 - 2\delta E_1 + \delta^2\tau n)/\tau`. No
observation's prediction is evaluated (two ``nnz x k`` gathers saved per sweep); the
draws are those of the per-observation sums up to float rounding. This path serves the
likelihoods whose :math:`\theta` update needs only the SSE
(:attr:`~bayesmf.model.likelihoods.Likelihood.sse_sufficient`: the Gaussian) with item
biases on. A full-matrix likelihood (implicit feedback, background :math:`(y_0, w_0)`)
without a global mean takes it the same way: the item step returns the observed pairs'
corrections :math:`\sum_O [w (t - p)^2 - w_0 (t_0 - p)^2]`
(:func:`~bayesmf.infer.gibbs_steps.rows_draw` ``fit_stats``, its :math:`q` from the
last block's Gram under ``row_block``) and the
unobserved pairs add :math:`w_0\sum_{all}(y_0 - \eta)^2` from
:func:`~bayesmf.model.linear.full_moments`; measured 3-6% off the ``row_block=16``
sweep on ML-1M implicit, rank 64 (interleaved in one process). The augmented
likelihoods, the full-matrix ones with a global mean and the sharded sweep evaluate
:math:`\eta` at every observation.

Side features: the Macau prior (Simm et al. 2015)
-------------------------------------------------
With ``user_features=`` (a :class:`~bayesmf.data.features.Features` ``X_U (N, F)``,
aligned to the training users; items alike) the user rows get a feature-dependent mean
and the link matrix :math:`\beta_U\ (F\times k)` the prior of the paper, **coupled to**
:math:`\Lambda_U` (not an independent Gaussian):

.. math::

    U_u &\sim \mathcal N(\mu_U + \beta_U^\top x_u,\ \Lambda_U^{-1}),\qquad
    \beta_{U,f} \sim \mathcal N(0, (\lambda_\beta\Lambda_U)^{-1})\ \ (f = 1..F),
    \ \text{i.e.}\ \beta_U \sim \mathcal{MN}(0, \lambda_\beta^{-1}I_F, \Lambda_U^{-1}) \\
    \lambda_\beta &\sim \mathrm{Gamma}(a_\beta, b_\beta)\quad
    (\texttt{lambda\_beta\_prior} = (a_\beta, b_\beta) = (1, 1))

Step 1 then becomes, per side with features (:math:`R = U - X\beta`):

* 1a. :math:`(\mu_U, \Lambda_U)` from the Normal-Wishart (Normal-Gamma) step on the
  residual rows :math:`R`, with :math:`\nu_0 \to \nu_0 + F` and
  :math:`W_N^{-1} \mathrel{+}= \lambda_\beta\beta^\top\beta` (the coupled prior of
  :math:`\beta` is a likelihood term of :math:`\Lambda`; :mod:`bayesmf.model.priors`);
* 1b. :math:`\beta_U \sim \mathcal{MN}(K^{-1}X^\top(U - 1\mu_U^\top), K^{-1},
  \Lambda_U^{-1})`, :math:`K = X^\top X + \lambda_\beta I_F`
  (:func:`~bayesmf.infer.gibbs_steps.macau_beta_draw`): up to 4096 features
  (``beta_solver="auto"``) exactly by the eigendecomposition :math:`X^\top X = QDQ^\top`
  computed once on the host (:math:`K^{-1} = Q(D+\lambda_\beta)^{-1}Q^\top` for any
  :math:`\lambda_\beta`: matrix products only each sweep); ``beta_solver="cholesky"``
  factorises :math:`K` each sweep instead; beyond 4096 features, or with
  ``beta_solver="cg"``, Macau's noise trick solved by conjugate gradients on
  :math:`v\mapsto X^\top(Xv) + \lambda_\beta v` (sparse ``X`` as COO triplets, never an
  :math:`F\times F` matrix; ``cg_tol``, ``cg_maxiter``, warm start at the last
  :math:`\beta`);
* 1c. :math:`\lambda_\beta \sim \mathrm{Gamma}(a_\beta + Fk/2,\ b_\beta +
  \tfrac12\operatorname{tr}(\beta\Lambda_U\beta^\top))`;

and in steps 3/4 each row's prior shift is :math:`\Lambda_U(\mu_U + \beta_U^\top x_u)`
(the per-row shift of :func:`~bayesmf.infer._rowblocks.solve_rows`), for every
likelihood the sweep serves (Gaussian, ordinal, Bernoulli share that step). The group
moves stay exact with :math:`\beta` carried along: the shift moves change
:math:`U` and :math:`\mu_U` together (residuals unchanged), the scale move maps
:math:`\beta_U \to s\beta_U`, :math:`\beta_V \to \beta_V/s` and the latent scale move
:math:`\beta \to \sqrt s\,\beta` (the coupled prior is invariant under
:math:`(\beta, \Lambda) \to (c\beta, c^{-2}\Lambda)` once the Jacobian is counted).
The draws ``beta_U (C,D,F_U,k)``, ``lambda_beta_U`` (``_V`` alike) are kept, the
aligned features go to ``posterior.features``; cold-start prediction in
:mod:`bayesmf.posterior` (:meth:`~bayesmf.posterior.Posterior.with_features`). Without
features the sweep, its random stream and its draws are bit-identical to the plain
model (the Macau draws use their own key, ``fold_in(key, 0x4D41)``). The sharded chain
(``chain_method="sharded"``) takes features (:mod:`bayesmf.infer.sharded`); the psum
seam for data sharded over devices (``axis_name``) does not.

Kernel, drivers, determinism
----------------------------
:class:`BPMFGibbs` is a pure functional kernel: ``init(key) -> GibbsState`` and
``step(key, state) -> (state, info)``. :func:`fit_gibbs` runs sweep ``t`` (0-based,
warm-up included) of chain ``c`` with ``fold_in(chain_key_c, t)``, where the chain keys
are ``split(PRNGKey(seed), num_chains)`` (the convention of
:mod:`bayesmf.infer.checkpoint`). The chains run through the package's one driver,
:func:`bayesmf.infer.driver.run_chains` (shared with NUTS): one compiled ``fori_loop``
advances them over any range of sweeps and returns the kept draws of that range in a
buffer whose size depends on the size of one draw only, so chunking for the progress bar
or checkpoints never changes the result, and other ``num_samples``, ``num_warmup`` or
``thin`` reuse the compiled code (in process; across processes through JAX's persistent
compilation cache). Kept sweeps are ``t = num_warmup + j * thin`` for
``j < num_samples``. Identical seeds give bit-identical
draws on CPU.

Streaming predictions (option ``predict_pairs=(u_idx, i_idx)``): at every kept draw
the noise-free prediction :math:`m_s` of each pair is folded into a Welford mean /
variance and :math:`1/\tau_s` into a running mean; the result (predictive mean,
parameter variance, mean noise variance) is in ``posterior.attrs["streamed_predictions"]``
(JSON lists; :func:`streamed_predictions` returns arrays). With ``store_draws=False``
the factor draws are not kept: the returned :class:`~bayesmf.posterior.Posterior`
holds only the **final state of each chain** (``D = 1``) and the kept traces of the
scalar and hyper quantities go to ``posterior.attrs["traces"]``; use the streamed
summaries for predictions of the requested pairs.

One chain over several devices (``chain_method="sharded"``): the row solves are split over
the devices, everything else is computed on replicated arrays; see
:mod:`bayesmf.infer.sharded` (layout, what is bit-identical, the multi-host recipe).

Layout: the conditional draws and moves are in :mod:`bayesmf.infer.gibbs_steps`, the
kernel (state, data, one sweep) in :mod:`bayesmf.infer.gibbs_kernel`, the chain driver in
:mod:`bayesmf.infer.driver`, and this module is the method (:func:`fit_gibbs`: options,
the sweep as a driver program, the posterior); it re-exports the kernel and step names.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.data.ratings import Ratings
from bayesmf.errors import SpecError
from bayesmf.infer import check_int as _pos_int
from bayesmf.infer import check_bool, check_options, check_pairs
from bayesmf.infer.driver import Program, compile_logger, pooled_stream, run_chains
from bayesmf.infer.gibbs_kernel import BPMFGibbs, GibbsData, GibbsState, _Cfg, _step
from bayesmf.infer.gibbs_steps import (bias_precision_draw, latent_scale_move,  # noqa: F401
                                       mu_draw, rows_draw, sample_normal_wishart,
                                       scale_move, shift_move, standard_gamma, tau_draw,
                                       translation_move)
from bayesmf.model import linear
from bayesmf.model.spec import ModelSpec

__all__ = ["GibbsState", "GibbsData", "BPMFGibbs", "BPMFGibbsKernel", "fit_gibbs",
           "streamed_predictions", "sample_normal_wishart", "bias_precision_draw", "rows_draw",
           "mu_draw", "tau_draw", "translation_move", "shift_move", "scale_move",
           "latent_scale_move", "standard_gamma", "DEFAULTS"]


def __getattr__(name):
    # the NumPyro adapter is built lazily so importing this module never imports numpyro
    if name == "BPMFGibbsKernel":
        from bayesmf.infer import gibbs_kernel

        return gibbs_kernel.BPMFGibbsKernel
    raise AttributeError(name)


#: options of :func:`fit_gibbs` and their defaults
DEFAULTS = dict(num_samples=200, num_warmup=100, num_chains=1, thin=1, store_draws=True,
                predict_pairs=None, dtype="float32", chain_method="vectorized",
                progress_every=None, max_width=128, checkpoint=None, checkpoint_every=None,
                resume=False, memory_limit=None, user_features=None, item_features=None,
                beta_solver="auto", lambda_beta_prior=(1.0, 1.0), cg_tol=1e-6,
                cg_maxiter=200, shard_devices=None, row_parts="auto", row_priors=None,
                low_width="auto", redraw_negatives=False, row_mh="auto", row_block=None)


# ----------------------------------------------------------------------------- driver
_DRAW_NAMES_FULL = ("mu", "bu", "bi", "U", "V", "mu_U", "Lambda_U", "mu_V", "Lambda_V",
                    "lambda_bu", "lambda_bi")
_DRAW_NAMES_SMALL = ("mu", "mu_U", "Lambda_U", "mu_V", "Lambda_V", "lambda_bu", "lambda_bi")


def _draw_names(lik, store_draws: bool, macau: tuple = ()) -> tuple:
    """Kept draw names: the model's (all, or the small ones without per-row arrays) plus
    the likelihood's parameters, plus ``beta_U, lambda_beta_U`` (``_V``) of the sides with
    features (Macau)."""
    mc = tuple(n for side, _, _ in macau for n in
               ((f"beta_{'U' if side == 'user' else 'V'}",
                 f"lambda_beta_{'U' if side == 'user' else 'V'}")))
    return (_DRAW_NAMES_FULL if store_draws else _DRAW_NAMES_SMALL) + tuple(lik.theta_names) \
        + mc


def _program(cfg: _Cfg, names: tuple) -> Program:
    """The Gibbs sweep as a :class:`~bayesmf.infer.driver.Program`: one sweep per
    iteration, the draws ``names`` kept, the pair predictions ``E[y | eta]`` (``eta``
    for the Gaussian, ``P(y=1)`` / the expected rating otherwise) and ``1/tau`` streamed."""
    lik = cfg.spec.likelihood

    def step(data, key, state):
        return _step(cfg, data, key, state)

    def extract(data, state, info):
        vals = {**state.flat(), **info}
        return {n: vals[n] for n in names}

    def stream(pairs, state):
        pu, pi = pairs
        m = linear.eta(state.mu, state.bu, state.bi, state.U, state.V, pu, pi)
        if not lik.mean_is_linear:  # stream E[y | eta] (P(y=1), E[rating])
            m = lik.point_mean(m, state.theta)
        nv = 1.0 / state.tau if "tau" in state.theta else jnp.zeros((), m.dtype)
        return m, nv

    def postfix(info):
        return {"train_rmse": f"{float(np.mean(info['train_rmse'])):.4f}"}

    return Program("gibbs", step, extract, stream, ("bpmf-gibbs", cfg, names), postfix,
                   "sweep")


def fit_gibbs(train: Ratings, spec: ModelSpec, *, seed: int = 0, progress: bool = False,
              **options):
    """Fit BPMF by Gibbs sampling; returns a :class:`~bayesmf.posterior.Posterior`.

    Options (validated by :func:`bayesmf.infer.check_options`):

    ``num_samples`` (200) kept draws per chain; ``num_warmup`` (100) discarded sweeps;
    ``num_chains`` (1); ``thin`` (1) sweeps per kept draw; ``store_draws`` (True) keep
    all parameter draws (False: only final state + scalar/hyper traces, see module docs);
    ``predict_pairs`` (None) ``(u_idx, i_idx)`` integer index arrays whose predictive
    mean/variance is streamed; ``dtype`` ("float32"); ``chain_method`` ("vectorized":
    vmap over chains | "sequential" | "parallel": the vectorized chains split over the
    local devices with ``shard_map``, e.g. one chain per CPU core when JAX was started with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=N``; with fewer than 2 usable
    devices it warns and runs vectorized; measured on 2 cores, 2 chains on ML-100K: 1.7x
    the throughput of "vectorized" at rank 10, 1.8x at rank 32 | "sharded": ONE chain
    split over the devices, :mod:`bayesmf.infer.sharded` -- each device solves the rows of
    a contiguous, observation-balanced range of users and of items and the new rows are
    all-gathered each half-sweep; the random draws are those of the unsharded chain for
    any number of devices, so the draws equal the "sequential" chain's (with
    ``low_width=0``) up to float summation order; several chains run one after another,
    each over all devices; not with side features or full-matrix likelihoods
    (SpecError); ``attrs`` record
    ``chain_method_used`` and ``devices``); ``shard_devices`` (None: all of
    ``jax.devices()``; only with "sharded") the number of devices of the sharded chain;
    ``progress_every`` (None: about 50 progress updates)
    sweeps per compiled call; ``max_width`` (128) segment width of the row blocks;
    ``row_parts`` ("auto": on CPU one per 100k observations, up to 8; or an int)
    the contiguous row ranges each side's row solves are cut into, run concurrently on a
    CPU (:mod:`bayesmf.infer._rowblocks`, **Row parts**; draws equal up to rounding);
    ``low_width`` ("auto": :func:`~bayesmf.infer._rowblocks.low_width_for`, by the
    design width and the side's degrees; or an int, 0 = off) rows with at most this many
    observations are drawn exactly through the Woodbury identity, without their own
    Cholesky factor (:mod:`bayesmf.infer._rowblocks`, **Rows of few observations**; other
    random numbers, the same conditional distribution);
    ``redraw_negatives`` (False; True for a 0/1 training set of positives and sampled
    negatives with a Bernoulli likelihood) re-pairs the negatives at every sweep, keeping
    each user's and each item's number of them (:mod:`bayesmf.infer.negative_redraw`;
    ``BayesMF.fit(..., negatives="uniform:4@sweep")`` sets it; also with "sharded");
    ``row_mh`` ("auto": on for the likelihoods whose ``row_mh_default`` is set --
    bernoulli-probit -- unless ``low_width > 0``; True /
    False for any augmented likelihood: bernoulli-logit / -probit, ordinal)
    adds to every sweep a Metropolis-Hastings step on each row with the IWLS proposal
    (Gamerman 1997; :func:`~bayesmf.infer.gibbs_steps.iwls_mh_rows`), the augmentation
    integrated out: the augmentation alone moves a row with informative observations by
    the complete-data width only and mixes slowly (probit ESS 25 of 800 draws on planted
    data, ``benchmarks/results/augmented_mixing.md``); costs two more weighted Grams per
    side and sweep; ``sample_stats["row_mh_accept"]`` is the fraction of rows that moved;
    needs ``low_width=0`` ("auto" becomes 0); also with "sharded" (each device proposes
    and accepts its own rows, :func:`~bayesmf.infer.sharded.sharded_mh_rows`);
    ``row_block`` (None: each row drawn at once) draws every row by **subspace Gibbs**:
    blocks of at most ``row_block`` of its coordinates (bias column included) one after
    another, each from its exact conditional given the rest
    (:func:`~bayesmf.infer._rowblocks.solve_rows_subspace`; the Bayesian counterpart of
    iALS++). A valid Gibbs sweep at a fraction of the cost at high rank (Gram ``nnz x b
    x d`` and ``d / b`` Cholesky factors of ``b x b`` per row, instead of ``nnz x d^2``
    and one of ``d x d``), mixing more slowly per sweep where a row's coordinates are
    correlated (``benchmarks/results/row_block.md``); the rows of few observations of a
    ``low_width`` layout are still drawn whole through the Woodbury identity; also with
    "sharded" (each device draws its own rows' blocks from its
    slice of the unsharded noise, so the chain does not depend on the device count);
    ``memory_limit`` (None: the default of :mod:`bayesmf._memory`) for the draw buffers.

    Macau (module docs): ``user_features``, ``item_features`` (None) a
    :class:`~bayesmf.data.features.Features` or DataFrame per side; ``beta_solver``
    ("auto": "eigh" up to 4096 features, else "cg"; or "cholesky");
    ``lambda_beta_prior`` ((1, 1): the Gamma shape and rate of ``lambda_beta``);
    ``cg_tol`` (1e-6), ``cg_maxiter`` (200) of the CG solver.

    Propagated priors: ``row_priors`` (None) ``{"user": (mean (N, d), precision (N, d,
    d)), "item": ...}`` fixes each listed row's joint ``[b, F]`` prior to that Gaussian
    (``d`` = the side's bias column + rank) in place of the hierarchical one
    (:func:`~bayesmf.infer.gibbs_kernel.check_row_priors`; used by
    :mod:`bayesmf.infer.propagation`); the group moves that assume the hierarchical prior
    are then skipped. Also with ``chain_method="sharded"``.

    Checkpoints: ``checkpoint`` (None) a file path; every ``checkpoint_every`` sweeps
    (default: about 10 checkpoints per run) the sampler state, the kept draws so far and
    the streamed accumulators are written there atomically
    (:func:`bayesmf.infer.checkpoint.save_checkpoint`). ``resume=True`` continues a killed
    run from that file. Sweep ``t`` of chain ``c`` always uses the key
    ``fold_in(split(PRNGKey(seed), C)[c], t)``, so a resumed run ends with exactly the
    draws of an uninterrupted one (bit-identical on CPU): same number, no gaps or
    duplicates. A checkpoint written for other data, settings or seed is refused.

    ``attrs`` record the seed, settings, ``compile_seconds`` (tracing + XLA compile, not
    in the sweep time), ``sampling_seconds`` and ``seconds_per_sweep`` (sampling wall
    time / sweeps, all chains together).
    """
    from bayesmf.infer import likelihood_fitter
    from bayesmf.posterior import Posterior, TrainInfo

    own = likelihood_fitter("gibbs", spec)  # a family with its own sampler
    if own is not None:
        return own(train, spec, seed=seed, progress=progress, **options)
    opts = check_options("gibbs", options, DEFAULTS)
    S = _pos_int("num_samples", opts["num_samples"], 1)
    W = _pos_int("num_warmup", opts["num_warmup"], 0)
    C = _pos_int("num_chains", opts["num_chains"], 1)
    T = _pos_int("thin", opts["thin"], 1)
    if opts["chain_method"] not in ("vectorized", "sequential", "parallel", "sharded"):
        raise SpecError("chain_method must be 'vectorized', 'sequential', 'parallel' or "
                        f"'sharded', got {opts['chain_method']!r}")
    sharded = opts["chain_method"] == "sharded"
    if opts["shard_devices"] is not None and not sharded:
        raise SpecError("shard_devices applies to chain_method='sharded', got chain_method="
                        f"{opts['chain_method']!r}")
    check_bool("store_draws", opts["store_draws"])
    _pos_int("max_width", opts["max_width"], 1)
    _pos_int("cg_maxiter", opts["cg_maxiter"], 1)
    tol = opts["cg_tol"]
    if isinstance(tol, bool) or not isinstance(tol, (int, float, np.integer, np.floating)) \
            or not (np.isfinite(tol) and tol > 0):
        raise SpecError(f"cg_tol must be a finite number > 0, got {tol!r}")
    if opts["dtype"] not in ("float32", "float64", np.float32, np.float64) \
            and not (isinstance(opts["dtype"], np.dtype)
                     and opts["dtype"] in (np.float32, np.float64)):
        raise SpecError(f"dtype must be 'float32' or 'float64', got {opts['dtype']!r}")
    n_iter = W + (S - 1) * T + 1
    if n_iter >= 2**31:  # the sweep counter of the compiled loop is a 32-bit integer
        raise SpecError(f"num_warmup + (num_samples - 1) * thin + 1 = {n_iter:,} sweeps is "
                        f"more than the sampler counts ({2**31 - 1:,})")
    ckpt_path = opts["checkpoint"]
    check_bool("resume", opts["resume"])
    if opts["resume"] and ckpt_path is None:
        raise SpecError("resume=True needs checkpoint=PATH (the file the run wrote)")
    ck_every = opts["checkpoint_every"]
    if ck_every is not None and ckpt_path is None:
        raise SpecError("checkpoint_every applies with checkpoint=PATH (the file the run "
                        "writes)")
    if ck_every is None:
        ck_every = max(1, -(-n_iter // 10)) if ckpt_path is not None else n_iter
    ck_every = _pos_int("checkpoint_every", ck_every, 1)
    row_mh = opts["row_mh"]
    if isinstance(row_mh, str) and row_mh == "auto":  # the likelihood's default, where it runs
        # (a spec that is not a ModelSpec is refused by the kernel just below)
        lik_default = getattr(getattr(spec, "likelihood", None), "row_mh_default", False)
        row_mh = bool(lik_default
                      and (opts["low_width"] == "auto" or opts["low_width"] == 0)
                      and not isinstance(opts["low_width"], bool))
    kern = BPMFGibbs(train, spec, dtype=opts["dtype"], max_width=opts["max_width"],
                     user_features=opts["user_features"], item_features=opts["item_features"],
                     beta_solver=opts["beta_solver"],
                     lambda_beta_prior=opts["lambda_beta_prior"], cg_tol=opts["cg_tol"],
                     cg_maxiter=opts["cg_maxiter"], row_parts=opts["row_parts"],
                     row_priors=opts["row_priors"], low_width=opts["low_width"],
                     redraw_negatives=opts["redraw_negatives"], row_mh=row_mh,
                     row_block=opts["row_block"])
    cfg, dt = kern.cfg, kern.dtype
    pairs = check_pairs(opts["predict_pairs"], cfg.n_users, cfg.n_items)
    names = _draw_names(cfg.spec.likelihood, opts["store_draws"], cfg.macau)
    names = names + ("train_rmse", "log_likelihood") + (("row_mh_accept",) if cfg.row_mh
                                                         else ())

    keys = jax.random.split(jax.random.PRNGKey(int(seed)), C)
    # one compiled start; the per-row prior means are its arguments, not constants
    state = jax.jit(lambda ks, means: jax.vmap(lambda kk: kern.init(
        jax.random.fold_in(kk, 2**31 - 1), row_prior_means=means))(ks))(
            keys, kern.row_prior_means)
    fp = ""
    if ckpt_path is not None:
        from bayesmf.infer import checkpoint as _ck

        pp = None if pairs is None else tuple(np.asarray(a) for a in pairs)
        fp = _ck.fingerprint(train, spec, int(seed), S, W, C, T, opts["store_draws"], str(dt),
                             opts["chain_method"], int(opts["max_width"]), pp,
                             *((("row_parts", kern.row_parts),) if kern.row_parts > 1 else ()),
                             *((("low_width", tuple(kern.low_width.values())),)
                               if any(kern.low_width.values()) else ()),
                             *((("redraw_negatives", True),) if cfg.redraw_steps else ()),
                             *((("row_mh", True),) if cfg.row_mh else ()),
                             *((("row_block", cfg.row_block),) if cfg.row_block else ()))
        if cfg.macau or cfg.row_prior_sides:  # never resume a run with other priors
            import hashlib

            h = hashlib.sha256(fp.encode())
            for side in cfg.row_prior_sides:
                h.update(side.encode())
                for a in kern.data.row_priors[side]:
                    h.update(np.ascontiguousarray(np.asarray(a)).tobytes())
            for side in ("user", "item") if cfg.macau else ():
                f = kern.features[side]
                if f is not None:
                    h.update(side.encode())
                    h.update(repr(f.schema).encode())
                    h.update(np.ascontiguousarray(f.dense(), np.float64).tobytes())
            h.update(repr((cfg.macau, cfg.lambda_beta_a, cfg.lambda_beta_b)).encode())
            fp = h.hexdigest()
    log = compile_logger(progress)
    program, data, method = _program(cfg, names), kern.data, opts["chain_method"]
    if sharded:  # one chain over all devices; several chains one after another
        from bayesmf.infer import sharded as _sh

        mesh = _sh.shard_mesh(opts["shard_devices"])
        data = _sh.sharded_data(kern, train, mesh, max_width=int(opts["max_width"]))
        n_dev = int(mesh.devices.size)
        program = program._replace(
            step=_sh.sharded_step(cfg, mesh), cache_key=(
                "bpmf-gibbs-sharded", cfg, names, tuple(d.id for d in mesh.devices.flat)))
        method = "sequential"
    run = run_chains(program, data, state, keys, num_samples=S,
                     num_warmup=W, thin=T, chain_method=method, pairs=pairs,
                     checkpoint=ckpt_path, checkpoint_every=ck_every, resume=opts["resume"],
                     fingerprint=fp, meta={"sampler": "bpmf-gibbs", "seed": int(seed)},
                     progress=progress, progress_every=opts["progress_every"],
                     memory_limit=opts["memory_limit"], log=log,
                     what=f"the Gibbs draw buffers ({C} chain(s) x {S} draws)",
                     hint="keep fewer draws (num_samples, thin), fewer chains, or "
                     "store_draws=False with predict_pairs= to stream predictions without "
                     "storing the factor draws")
    state = run.state
    host = dict(run.draws)
    resumed_at = run.resumed_at
    attrs = {
        "seed": int(seed), "sampler": "bpmf-gibbs",
        "settings": {"num_samples": S, "num_warmup": W, "num_chains": C, "thin": T,
                     "store_draws": opts["store_draws"], "dtype": str(dt),
                     "chain_method": opts["chain_method"], "max_width": int(opts["max_width"]),
                     "row_parts": kern.row_parts, "low_width": dict(kern.low_width),
                     "redraw_negatives": bool(cfg.redraw_steps), "row_mh": cfg.row_mh,
                     "row_block": cfg.row_block, "n_sweeps": n_iter},
        **({"row_priors": list(cfg.row_prior_sides)} if cfg.row_prior_sides else {}),
        **({"macau": {"sides": [list(m) for m in cfg.macau],
                      "lambda_beta_prior": [cfg.lambda_beta_a, cfg.lambda_beta_b]}}
           if cfg.macau else {}),
        "chain_method_used": "sharded" if sharded else run.chain_method_used,
        "devices": n_dev if sharded else run.devices,
        "compile_seconds": run.compile_seconds, "compile_cached": run.compile_cached,
        "sampling_seconds": run.sampling_seconds,
        "seconds_per_sweep": run.sampling_seconds / max(1, run.n_run),
        "draws_per_call": run.slots,
        "kept_sweeps": "num_warmup + j * thin, j < num_samples",
    }
    if ckpt_path is not None:
        attrs["checkpoint"] = {"path": str(ckpt_path), "every": ck_every,
                               "resumed_at": resumed_at}
    if pairs is not None:
        attrs["streamed_predictions"] = pooled_stream(pairs, run.stream)
    stats = {n: host.pop(n) for n in ("train_rmse", "log_likelihood", "row_mh_accept")
             if n in host}
    if opts["store_draws"]:
        draws = host
    else:
        attrs["traces"] = {n: v.tolist() for n, v in host.items()}
        attrs["traces"].update({n: v.tolist() for n, v in stats.items()})
        attrs["draws_kept"] = "final state of each chain only (store_draws=False)"
        draws = {n: np.asarray(v)[:, None] for n, v in state.flat().items()}
        stats = {n: v[:, -1:] for n, v in stats.items()}
    draws = {n: np.asarray(v, np.float32) for n, v in draws.items()}
    post = Posterior(draws, cfg.spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "gibbs", sample_stats=stats, attrs=attrs)
    if cfg.macau:
        post.features = dict(kern.features)
    return post


def streamed_predictions(posterior) -> dict:
    """The streamed pair summaries of a Gibbs fit as arrays: ``user, item`` (indices),
    ``mean``, ``var_param`` (variance over draws of the noise-free prediction),
    ``noise_var`` (mean of ``1/tau``, a float; for the Poisson sampler of
    :mod:`bayesmf.infer.hpf` the per-pair array :math:`E[r_{ui}]`), ``var`` (= var_param
    + noise_var), ``std``."""
    sp = posterior.attrs.get("streamed_predictions")
    if sp is None:
        raise SpecError("this posterior has no streamed predictions (fit with predict_pairs=)")
    out = {n: np.asarray(sp[n]) for n in ("user", "item", "mean", "var_param")}
    nv = sp["noise_var"]
    out["noise_var"] = np.asarray(nv, np.float64) if isinstance(nv, list) else float(nv)
    out["var"] = out["var_param"] + out["noise_var"]
    out["std"] = np.sqrt(out["var"])
    return out
