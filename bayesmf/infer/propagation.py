r"""Posterior propagation: BPMF fitted as independent block tasks, aggregated into one
:class:`~bayesmf.posterior.Posterior` (Qin, Blomstedt, Leppäaho, Parviainen & Kaski 2019,
*Distributed Bayesian matrix factorization with limited communication*, Machine Learning
108; the propagated-posterior priors of smurff).

**Blocks.** Users are cut into ``I`` groups and items into ``J`` groups at random (seeded,
balanced by observation count), giving blocks :math:`R_{ab}` of the training matrix. Each
block is a BPMF problem of its own; the tasks of one stage share nothing and run on any
executor (module-level function :func:`run_task`, numpy in and out).

**Three stages.** Write :math:`\theta_r = [b_r, F_r]` for a row's bias and factors.

1. *Anchor*: :math:`R_{11}` by the plain BPMF Gibbs sampler (hierarchical prior). Its
   draws fix the factor space's rotation, scale and sign for everything after.
2. :math:`R_{1b}` (:math:`b \ge 2`): the users of group 1 get the **fixed per-row prior**
   :math:`q_{11}(\theta_u)`, the Gaussian approximation of their anchor posterior; the
   items of group ``b`` keep the hierarchical prior. :math:`R_{a1}` (:math:`a \ge 2`) the
   same with the items' priors from the anchor. ``I + J - 2`` independent tasks.
3. :math:`R_{ab}` (:math:`a, b \ge 2`): users' priors :math:`q_{a1}`, items' :math:`q_{1b}`.
   ``(I-1)(J-1)`` independent tasks.

A row absent from the block that would give it a propagated prior (no observation there)
gets the anchor's population prior instead: :math:`\mathcal N(0, \bar\lambda_b^{-1})` for
the bias and :math:`\mathcal N(\bar\mu_F, \bar\Lambda_F^{-1})` for the factors (posterior
means of the anchor's hyperparameters).

**Gaussian summaries.** From ``S`` kept draws of :math:`\theta_r` (dimension ``d``) a task
returns the sample mean :math:`m_r` and the precision
:math:`\hat\Lambda_r = \frac{S-d-2}{S-1}\,\hat C_r^{-1}` (the unbiased estimate of an
inverse covariance from the sample covariance :math:`\hat C_r`, Wishart moments), i.e. the
natural parameters :math:`(\eta_r, \Lambda_r) = (\hat\Lambda_r m_r, \hat\Lambda_r)`.

**Alignment.** A task's free (hierarchical) side can trade scale and rotation with its
propagated side: :math:`U \to UA`, :math:`V \to VA^{-\top}` leaves the block's likelihood
unchanged, and an independent per-row prior only weakly resists a transform shared by all
rows, because the anchor's *marginal* row posteriors have lost the coupling with the other
side that pinned it (the free side's shrinkage then pushes the propagated rows along it).
Measured on planted data (rank 3, 2 x 1 blocks): item factors of the first group grew by
6% in the second task and the anchor block's held-out RMSE went from 0.552 to 0.598. Each
task therefore maps its draws back onto its priors' frame before summarising: a ridge
regression of the prior means :math:`M_U` on the task's posterior means :math:`\bar F_U`
of the propagated user rows, shrunk to the identity (:func:`_alignment`), the analogue for
items, their mean with both sides propagated, and :math:`U\to UA`,
:math:`V\to VA^{-\top}` on every draw (the task's predictions are unchanged).
``align=False`` switches it off. The ridge (:data:`ALIGN_RIDGE` = 1) was chosen among
0.1, 1 and no alignment on the planted set and on the ML-1M subset split of the benchmark
(``benchmarks/bench_propagation.py``, 2 x 2 blocks, held-out RMSE; full Gibbs 0.5326 /
0.8447 / 0.8425): planted 0.5397 / 0.5476 / 0.5630, ML-1M rank 10 0.8609 / 0.8564 /
0.8560, rank 32 0.8676 / 0.8650 / 0.8646 -- on real data the alignment is worth little
and a weak ridge costs accuracy, on planted data it is worth much.

**Aggregation.** Row ``r`` of user group ``a`` is in the tasks :math:`T_a` of block row
``a``. Task ``t`` used the prior :math:`\pi_t(\theta_r)` and returned
:math:`q_t(\theta_r) \approx p(\theta_r \mid R_{\mathrm{base}}, R_t)`, so
:math:`q_t / \pi_t \propto p(R_t \mid \theta_r)` is that block's likelihood and

.. math::

    p(\theta_r \mid R) \propto \pi_{\mathrm{base}}(\theta_r)
        \prod_{t \in T_a} \frac{q_t(\theta_r)}{\pi_t(\theta_r)}
    \;\Rightarrow\;
    \Lambda_r = \Lambda^{\pi}_{\mathrm{base}} + \sum_{t \in T_a}
        (\Lambda_{t} - \Lambda^{\pi}_{t}),\qquad
    \eta_r = \eta^{\pi}_{\mathrm{base}} + \sum_{t \in T_a} (\eta_{t} - \eta^{\pi}_{t}),

where the base is the posterior of the task in which the row had the hierarchical prior
(the anchor for group 1, else the first-row/column task) and :math:`\pi_t` is the
propagated prior task ``t`` was given. That is ``pieces="difference"``: each
:math:`\Lambda_t - \Lambda^\pi_t` is a difference of two Monte Carlo precision
estimates, which for a row with few observations in the block is mostly noise and can
make :math:`\Lambda_r` indefinite (its eigenvalues are then clipped at ``1e-7`` times
the largest, counted in ``attrs["propagation"]["clipped_rows"]``; none were on the ML-1M
subset with 200 kept draws). The default ``pieces="moments"`` estimates the block likelihood
:math:`p(R_t \mid \theta_r)` directly as the posterior mean of the data terms of the
row's Gibbs conditional (:func:`_expected_likelihood`): :math:`\Lambda_r =
\Lambda_{\mathrm{base}} + \sum_t G_{tr}`, :math:`\eta_r = \eta_{\mathrm{base}} +
\sum_t g_{tr}` with :math:`G_{tr} = \mathbb E_t[\tau\sum_{j} x_j x_j^\top]`
positive semi-definite and averaged, not inverted (it leaves out the extra spread that
the other side's uncertainty gives the block likelihood, a second-order term).
The kept draws of the returned posterior are ``S`` independent draws per row from
:math:`\mathcal N(\Lambda_r^{-1}\eta_r, \Lambda_r^{-1})`: posterior correlations *between*
rows are not kept, which is the approximation of the method (the within-row covariance
of bias and factors is).

**Global mean and noise.** The anchor's posterior mean :math:`\hat\mu` of the global mean
is held fixed after stage 1 (stages 2-3 fit :math:`y - \hat\mu` without a global mean),
so every block's biases are on one level; the anchor's per-draw deviation
:math:`\mu_s - \hat\mu` is split evenly into its user and item bias draws before they are
summarised (the anchor's predictions are unchanged), and taken out of them again in the
returned draws (:math:`\mu_s` = the anchor's draw, every bias minus its share of
:math:`\mu_s - \hat\mu`: the predictions are unchanged by this). The noise precision draws are the
observation-weighted mean over the tasks, draw by draw. The population hyperparameters
(``mu_U``, ``Lambda_U``, ...) are the anchor's draws (fold-in of new users uses them).

Only the Gaussian likelihood (explicit ratings) without side features; ``I = J = 1`` is
the plain Gibbs fit.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from bayesmf.errors import SpecError

__all__ = ["fit_propagated", "run_task", "block_groups", "row_gaussians",
           "aggregate_rows", "DEFAULTS"]

DEFAULTS = dict(user_blocks=2, item_blocks=2, executor="serial", max_workers=None,
                num_samples=200, num_warmup=100, dtype="float32", row_parts="auto",
                max_width=128, align=True, pieces="moments")

#: ridge of the alignment (:func:`_alignment`), relative to the mean eigenvalue of the
#: posterior-mean Gram of the propagated rows
ALIGN_RIDGE = 1.0

#: eigenvalues of an aggregated precision below this fraction of its largest one are
#: clipped there (an indefinite or numerically singular sum of Monte Carlo estimates;
#: a well-posed row posterior is left as it is, however wide its eigenvalue range)
CLIP_FRACTION = 1e-7


def block_groups(n: int, degree, n_groups: int, rng: np.random.Generator) -> np.ndarray:
    """Random group (``0..n_groups-1``) of each of ``n`` rows, balanced by ``degree``:
    rows in random order are cut where the cumulative degree crosses ``g / n_groups``."""
    from bayesmf.infer._rowblocks import partition_rows

    perm = rng.permutation(n)
    bnd = partition_rows(np.asarray(degree, np.float64)[perm] + 1.0, n_groups)
    out = np.empty(n, np.int64)
    for g in range(n_groups):
        out[perm[bnd[g]:bnd[g + 1]]] = g
    return out


def row_gaussians(theta_draws: np.ndarray):
    r"""Gaussian summary of per-row draws ``(S, n, d)``: ``(mean (n, d), precision
    (n, d, d))`` with the unbiased inverse-covariance estimate
    :math:`\frac{S-d-2}{S-1}\hat C^{-1}` (module docs). Needs ``S > d + 2``."""
    x = np.asarray(theta_draws, np.float64)
    S, n, d = x.shape
    if S <= d + 2:
        raise SpecError(f"posterior propagation needs more kept draws than the row "
                        f"dimension + 2 (got {S} draws for d = {d}); raise num_samples")
    m = x.mean(0)
    c = x - m
    ct = np.ascontiguousarray(c.transpose(1, 0, 2))           # (n, S, d)
    C = np.matmul(np.swapaxes(ct, 1, 2), ct) / (S - 1)
    tr = np.trace(C, axis1=1, axis2=2) / d
    C = C + (1e-9 * np.maximum(tr, 1e-30))[:, None, None] * np.eye(d)
    P = np.linalg.inv(C) * ((S - d - 2) / (S - 1))
    return m, 0.5 * (P + np.swapaxes(P, 1, 2))


def aggregate_rows(base: tuple, pieces: list):
    r"""Combine Gaussian pieces of the rows of one side (module docs, **Aggregation**).

    ``base = (eta (n, d), Lam (n, d, d))``: the natural parameters of the base posterior
    (or of the population prior where a row had no base posterior); ``pieces``: a list of
    ``(rows (m,), eta_t (m, d), Lam_t (m, d, d), eta_pi (m, d), Lam_pi (m, d, d))`` -- the
    task's posterior and the prior it was given, for the rows it holds (``eta_pi``,
    ``Lam_pi`` of size 0: ``eta_t``, ``Lam_t`` are the block likelihood itself). Returns
    ``(mean (n, d), Lam (n, d, d), n_clipped)``."""
    eta = np.array(base[0], np.float64)
    Lam = np.array(base[1], np.float64)
    for rows, et, Lt, ep, Lp in pieces:
        np.add.at(eta, rows, et - ep if np.size(ep) else et)
        np.add.at(Lam, rows, Lt - Lp if np.size(Lp) else Lt)
    Lam = 0.5 * (Lam + np.swapaxes(Lam, 1, 2))
    w, Q = np.linalg.eigh(Lam)
    floor = CLIP_FRACTION * np.maximum(w.max(1), 1e-300)
    bad = w < floor[:, None]
    n_clipped = int(bad.any(1).sum())
    if n_clipped:
        w = np.maximum(w, floor[:, None])
        Lam = np.matmul(Q * w[:, None, :], np.swapaxes(Q, 1, 2))
    # mean = Lam^-1 eta = Q diag(1/w) Q^T eta
    mean = np.einsum("nij,nj->ni", Q, np.einsum("nji,nj->ni", Q, eta) / w)
    return mean, Lam, n_clipped


# --------------------------------------------------------------------------- one task
def run_task(task: dict) -> dict:
    """Fit one block (a picklable dict in, a dict of numpy arrays out): runs in a worker
    process, a Dask worker or a Spark executor as well as in-process.

    ``task``: ``user``, ``item`` (local indices), ``rating``, ``n_users``, ``n_items``,
    ``spec`` (:meth:`ModelSpec.to_dict`), ``seed``, ``options`` (of
    :func:`~bayesmf.infer.gibbs.fit_gibbs`), ``row_priors`` (``{side: (mean, prec)}`` or
    None). Returns the per-row Gaussian summaries ``user_mean``, ``user_prec``,
    ``item_mean``, ``item_prec`` (rows ``[b, F]``), the draws of ``mu`` and ``tau``, the
    anchor's hyperparameter draws, ``seconds`` and ``seconds_per_sweep``."""
    from bayesmf.data.ratings import Ratings
    from bayesmf.data.vocab import Vocabulary
    from bayesmf.infer.gibbs import fit_gibbs
    from bayesmf.model.spec import ModelSpec

    t0 = time.perf_counter()
    spec = ModelSpec.from_dict(task["spec"])
    tr = Ratings.from_indices(np.asarray(task["user"]), np.asarray(task["item"]),
                              np.asarray(task["rating"], np.float64),
                              Vocabulary(np.arange(task["n_users"])),
                              Vocabulary(np.arange(task["n_items"])))
    post = fit_gibbs(tr, spec, seed=int(task["seed"]), row_priors=task["row_priors"],
                     **task["options"])
    dr = post.draws
    out = {"mu": dr["mu"][0].astype(np.float64), "tau": dr["tau"][0].astype(np.float64)}
    # the anchor (fold_mu): its per-draw deviation from its mean global mean goes into the
    # bias draws (half each with both biases), so mu can be held at that mean afterwards
    dev = out["mu"] - out["mu"].mean()
    split = 0.5 * dev if spec.user_bias and spec.item_bias else dev
    Fd = {"user": np.asarray(dr["U"][0], np.float64), "item": np.asarray(dr["V"][0], np.float64)}
    A = _alignment(task, spec, Fd) if task["align"] else None
    if A is not None:   # U -> U A, V -> V A^-T: the task's predictions are unchanged
        Fd["user"] = Fd["user"] @ A
        Fd["item"] = Fd["item"] @ np.linalg.inv(A).T
    out["alignment"] = A
    for side, b, F, on in (("user", "bu", "U", spec.user_bias),
                           ("item", "bi", "V", spec.item_bias)):
        cols = []
        if on:
            cols.append((dr[b][0] + (split[:, None] if task.get("fold_mu") else 0.0))[..., None])
        cols.append(Fd[side])
        m, P = row_gaussians(np.concatenate(cols, axis=-1))
        out[f"{side}_mean"], out[f"{side}_prec"] = m, P
    if task["pieces"] == "moments":
        bias = {"user": np.asarray(dr["bu"][0], np.float64),
                "item": np.asarray(dr["bi"][0], np.float64)}
        for side in (task["row_priors"] or {}):
            out[f"{side}_lik_eta"], out[f"{side}_lik_prec"] = _expected_likelihood(
                task, spec, side, Fd, bias, out["mu"], out["tau"])
    for n in ("mu_U", "Lambda_U", "mu_V", "Lambda_V", "lambda_bu", "lambda_bi"):
        out[n] = np.asarray(dr[n][0])
    out["seconds"] = time.perf_counter() - t0
    out["seconds_per_sweep"] = float(post.attrs["seconds_per_sweep"])
    out["compile_seconds"] = float(post.attrs["compile_seconds"])
    return out


def _expected_likelihood(task, spec, side, Fd, bias, mu, tau):
    r"""The block likelihood of each row of ``side`` as Gaussian natural parameters: the
    posterior expectation of the Gibbs conditional's data terms (module docs,
    **Aggregation**),

    .. math::

        G_r = \mathbb E\Big[\tau \sum_{j\in O_r} x_j x_j^\top\Big],\qquad
        g_r = \mathbb E\Big[\tau \sum_{j\in O_r} x_j\,(y_j - \mu - b_{c(j)})\Big],

    with :math:`x_j = [1, F_{c(j)}]` the other side's design row (the bias column only if
    this side has a bias) and the expectation the mean over the task's draws. Both are
    linear in per-column moments of the other side, so they are exact averages at
    ``S d^2`` per column plus one sparse product: :math:`G = A\,M_2`,
    :math:`g = (A\circ y)\,m_1 - A\,c` with ``A`` the row x column incidence of the
    block, :math:`M_2 = \mathbb E[\tau x x^\top]`, :math:`m_1 = \mathbb E[\tau x]`,
    :math:`c = \mathbb E[\tau x(\mu + b)]` per column. Positive semi-definite by
    construction."""
    import scipy.sparse as sp

    other = "item" if side == "user" else "user"
    on = spec.user_bias if side == "user" else spec.item_bias
    other_on = spec.item_bias if side == "user" else spec.user_bias
    Fo = Fd[other]                                            # (S, n_other, k)
    S, n_o, k = Fo.shape
    X = np.concatenate([np.ones((S, n_o, 1)), Fo], axis=2) if on else Fo
    d = X.shape[2]
    t = tau[:, None, None]
    Xt = np.ascontiguousarray((X * t).transpose(1, 2, 0))      # (n_o, d, S)
    M2 = np.matmul(Xt, np.ascontiguousarray(X.transpose(1, 0, 2))) / S   # (n_o, d, d)
    m1 = (X * t).mean(0)                                       # (n_o, d)
    off = mu[:, None] + (bias[other] if other_on else 0.0)     # (S, n_o)
    c = (X * (t * off[..., None])).mean(0)                    # (n_o, d)
    r_idx = np.asarray(task["user" if side == "user" else "item"])
    c_idx = np.asarray(task["item" if side == "user" else "user"])
    y = np.asarray(task["rating"], np.float64)
    n_r = int(task["n_users" if side == "user" else "n_items"])
    A = sp.csr_matrix((np.ones_like(y), (r_idx, c_idx)), shape=(n_r, n_o))
    Ay = sp.csr_matrix((y, (r_idx, c_idx)), shape=(n_r, n_o))
    G = np.asarray(A @ M2.reshape(n_o, d * d)).reshape(n_r, d, d)
    g = np.asarray(Ay @ m1) - np.asarray(A @ c)
    return g, 0.5 * (G + np.swapaxes(G, 1, 2))


def _alignment(task, spec, Fd):
    r"""The ``k x k`` matrix :math:`A` that maps the task's factor frame back onto its
    propagated priors' (module docs, **Alignment**), or None without propagated priors.

    Users: :math:`A_U = \arg\min_A \lVert \bar F_U A - M_U\rVert_F^2 + \lambda\lVert A -
    I\rVert_F^2`; items (the inverse transpose acts on them): :math:`A_V^{-\top}` the same
    with :math:`\bar F_V, M_V`; :math:`\bar F` the task's posterior means of the factor
    columns, :math:`M` the prior means, :math:`\lambda` = :data:`ALIGN_RIDGE` times the
    mean eigenvalue of :math:`\bar F^\top\bar F`. The ridge keeps the directions the
    data hardly determine (at rank 32 most factor columns are shrunk to near 0: plain least
    squares gave singular values from 0.004 to 1,600 on the ML-1M subset) at the identity.
    With both sides propagated :math:`A = (A_U + A_V)/2`."""
    rp = task.get("row_priors") or {}
    k = spec.rank
    if k == 0:
        return None
    est = []
    for side in ("user", "item"):
        if side not in rp:
            continue
        on = spec.user_bias if side == "user" else spec.item_bias
        target = np.asarray(rp[side][0], np.float64)[:, int(on):]
        Fbar = Fd[side].mean(0)
        if Fbar.shape[0] < 2 * k:   # too few rows to pin k x k numbers
            continue
        FtF = Fbar.T @ Fbar
        lam = ALIGN_RIDGE * np.trace(FtF) / k
        B = np.linalg.solve(FtF + lam * np.eye(k), Fbar.T @ target + lam * np.eye(k))
        est.append(B if side == "user" else np.linalg.inv(B).T)
    if not est or k == 0:
        return None
    return sum(est) / len(est)


def _map(executor, tasks: list, max_workers) -> list:
    """Run ``run_task`` over ``tasks`` on the executor (module docs of
    :func:`fit_propagated`)."""
    if not tasks:
        return []
    if executor == "serial":
        return [run_task(t) for t in tasks]
    if executor == "processes":
        n = max(1, min(len(tasks), int(max_workers or os.cpu_count() or 1)))
        if n == 1:
            return [run_task(t) for t in tasks]
        with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn")) as ex:
            return list(ex.map(run_task, tasks))
    return list(executor.map(run_task, tasks))


def _population_prior(anchor: dict, side: str, spec, dt=np.float64):
    """Natural parameters ``(eta (d,), Lam (d, d))`` of the anchor's population prior of
    one side's ``[b, F]`` row (posterior means of the hyperparameters)."""
    S_ = "U" if side == "user" else "V"
    on = spec.user_bias if side == "user" else spec.item_bias
    k = spec.rank
    d = int(on) + k
    Lam = np.zeros((d, d), dt)
    eta = np.zeros(d, dt)
    o = 0
    if on:
        Lam[0, 0] = float(np.mean(anchor[f"lambda_b{'u' if side == 'user' else 'i'}"]))
        o = 1
    L = np.mean(anchor[f"Lambda_{S_}"], axis=0)
    L = 0.5 * (L + L.T)
    Lam[o:, o:] = L
    eta[o:] = L @ np.mean(anchor[f"mu_{S_}"], axis=0)
    return eta, Lam


def fit_propagated(train, spec, *, seed: int = 0, progress: bool = False, **options):
    """Fit BPMF by posterior propagation over ``user_blocks x item_blocks`` blocks (module
    docs); returns one :class:`~bayesmf.posterior.Posterior` (method ``"propagation"``).

    Options: ``user_blocks`` (2), ``item_blocks`` (2); ``executor``: ``"serial"``
    (in this process), ``"processes"`` (a pool of ``max_workers`` spawned local processes,
    default one per CPU), or any object with a ``map(fn, iterable)`` method returning the
    results in order -- a :class:`concurrent.futures.Executor`, Dask's
    ``client.get_executor()``, or :func:`bayesmf.spark.task_executor` (Spark); the
    tasks of one stage run concurrently there (a script that uses ``"processes"`` needs
    the usual ``if __name__ == "__main__":`` guard: the workers are spawned).
    ``num_samples`` (200), ``num_warmup`` (100), ``dtype``, ``row_parts``, ``max_width``
    go to each block's Gibbs sampler (:func:`~bayesmf.infer.gibbs.fit_gibbs`); ``align``
    (True) maps each task's draws onto its priors' frame, ``pieces`` ("moments" or
    "difference") chooses how a block's likelihood is estimated (module docs).
    ``attrs["propagation"]`` records the blocks, each task's seconds, the seconds of each
    stage (wall) and of the tasks summed. ``progress`` is accepted for the common
    signature and ignored (the tasks may run elsewhere)."""
    from bayesmf.infer import check_fit_inputs, check_options, fitted_spec
    from bayesmf.posterior import Posterior, TrainInfo

    check_fit_inputs(train, spec)
    opts = check_options("propagation", options, DEFAULTS)
    if spec.likelihood.name != "gaussian":
        raise SpecError(f"posterior propagation supports the Gaussian likelihood only, got "
                        f"{spec.likelihood.name!r} (use method='gibbs')")
    spec = fitted_spec(train, spec)
    I_, J_ = (opts["user_blocks"], opts["item_blocks"])
    for name, v in (("user_blocks", I_), ("item_blocks", J_)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise SpecError(f"{name} must be an integer >= 1, got {v!r}")
    if I_ > train.n_users or J_ > train.n_items:
        raise SpecError(f"{I_} x {J_} blocks need at least {I_} users and {J_} items")
    if opts["pieces"] not in ("moments", "difference"):
        raise SpecError(f"pieces must be 'moments' or 'difference', got {opts['pieces']!r}")
    ex = opts["executor"]
    if not (ex in ("serial", "processes") or callable(getattr(ex, "map", None))):
        raise SpecError("executor must be 'serial', 'processes' or an object with a "
                        f"map(fn, iterable) method, got {ex!r}")
    from bayesmf.infer import check_bool, check_int

    S = check_int("num_samples", opts["num_samples"], 1)
    opts["max_workers"] = check_int("max_workers", opts["max_workers"], 1, allow_none=True)
    check_bool("align", opts["align"])
    k = spec.rank
    du, di = int(spec.user_bias) + k, int(spec.item_bias) + k
    if S <= max(du, di) + 2:
        raise SpecError(f"posterior propagation needs num_samples > {max(du, di) + 2} "
                        f"(the row dimension + 2) to summarise each row, got {S}")
    rng = np.random.default_rng(seed)
    u = np.asarray(train.user, np.int64)
    i = np.asarray(train.item, np.int64)
    y = np.asarray(train.rating, np.float64)
    ug = block_groups(train.n_users, np.bincount(u, minlength=train.n_users), I_, rng)
    ig = block_groups(train.n_items, np.bincount(i, minlength=train.n_items), J_, rng)
    gibbs_opts = {n: opts[n] for n in ("num_samples", "num_warmup", "dtype", "row_parts",
                                       "max_width")}
    blocks = {}
    for a in range(I_):
        for b in range(J_):
            sel = np.flatnonzero((ug[u] == a) & (ig[i] == b))
            if sel.size == 0:
                raise SpecError(f"block ({a}, {b}) of the {I_} x {J_} partition holds no "
                                "ratings; use fewer blocks")
            ru, li = np.unique(u[sel], return_inverse=True)
            ri, lj = np.unique(i[sel], return_inverse=True)
            blocks[a, b] = dict(sel=sel, users=ru, items=ri, lu=li, li=lj)
    # the rows of each group, and each row's position within its group
    members = {"user": [np.flatnonzero(ug == g) for g in range(I_)],
               "item": [np.flatnonzero(ig == g) for g in range(J_)]}
    local = {}
    for side, grp in (("user", ug), ("item", ig)):
        local[side] = np.empty(grp.size, np.int64)
        for m in members[side]:
            local[side][m] = np.arange(m.size)
    # natural parameters of each group's rows (group-local order): the base posterior,
    # filled after stage 1/2
    base = {"user": {}, "item": {}}   # group -> (eta (n_g, d), Lam (n_g, d, d))
    given = {}                         # (a, b) -> {side: (mean, prec)} priors given
    results = {}
    stage_seconds = []
    mu_level = 0.0

    def task_of(a, b, stage):
        blk = blocks[a, b]
        sp = spec if stage == 1 else dataclasses.replace(spec, global_mean=False)
        rp = {}
        if stage > 1:
            for side, g, rows in (("user", a, blk["users"]), ("item", b, blk["items"])):
                if g in base[side]:
                    eta, Lam = base[side][g]
                    lr = local[side][rows]
                    L = Lam[lr]
                    rp[side] = (np.linalg.solve(L, eta[lr][..., None])[..., 0], L)
        given[a, b] = rp
        r = y[blk["sel"]] - (mu_level if stage > 1 else 0.0)
        return dict(user=blk["lu"], item=blk["li"], rating=r, n_users=blk["users"].size,
                    n_items=blk["items"].size, spec=sp.to_dict(),
                    seed=int(seed) * 7919 + 1000 * a + b, options=gibbs_opts,
                    row_priors=rp or None, fold_mu=stage == 1 and spec.global_mean,
                    align=bool(opts["align"]), pieces=opts["pieces"])

    def base_from(res, key, side, g, pop):
        """The base natural parameters of the rows of group ``g`` (group-local order): the
        task's posterior where the row is in it, the population prior elsewhere."""
        eta0, Lam0 = pop
        d, n_g = eta0.size, members[side][g].size
        eta = np.broadcast_to(eta0, (n_g, d)).copy()
        Lam = np.broadcast_to(Lam0, (n_g, d, d)).copy()
        lr = local[side][blocks[key]["users" if side == "user" else "items"]]
        m, P = res[f"{side}_mean"], res[f"{side}_prec"]
        eta[lr] = np.einsum("nij,nj->ni", P, m)
        Lam[lr] = P
        return eta, Lam

    def run_stage(keys, stage):
        """The tasks of one stage on the executor; their results by block, timed."""
        t0 = time.perf_counter()
        out = _map(ex, [task_of(a, b, stage) for a, b in keys], opts["max_workers"])
        stage_seconds.append(time.perf_counter() - t0)
        results.update(zip(keys, out))
        return out

    n_users, n_items = train.n_users, train.n_items
    # stage 1: the anchor
    anchor = run_stage([(0, 0)], 1)[0]
    if spec.global_mean:
        mu_level = float(np.mean(anchor["mu"]))
    pop = {s: _population_prior(anchor, s, spec) for s in ("user", "item")}
    base["user"][0] = base_from(anchor, (0, 0), "user", 0, pop["user"])
    base["item"][0] = base_from(anchor, (0, 0), "item", 0, pop["item"])
    # stage 2: first block row and column
    keys2 = [(0, b) for b in range(1, J_)] + [(a, 0) for a in range(1, I_)]
    for key, res in zip(keys2, run_stage(keys2, 2)):
        a, b = key
        if a == 0:   # items of group b had the hierarchical prior here
            base["item"][b] = base_from(res, key, "item", b, pop["item"])
        else:
            base["user"][a] = base_from(res, key, "user", a, pop["user"])
    # stage 3: the rest
    run_stage([(a, b) for a in range(1, I_) for b in range(1, J_)], 3)
    # aggregation: per side and group, base + sum over the group's propagated tasks
    final = {}
    clipped = 0
    for side, n_all, G in (("user", n_users, I_), ("item", n_items, J_)):
        d = du if side == "user" else di
        mean = np.zeros((n_all, d))
        Lam_all = np.zeros((n_all, d, d))
        for g in range(G):
            pieces = []
            for (a, b), res in results.items():
                if (a if side == "user" else b) != g or side not in given[a, b]:
                    continue
                rows = local[side][blocks[a, b]["users" if side == "user" else "items"]]
                if opts["pieces"] == "moments":
                    z = np.zeros((0,))
                    pieces.append((rows, res[f"{side}_lik_eta"], res[f"{side}_lik_prec"],
                                   z, z))
                    continue
                pm, pP = given[a, b][side]
                P = res[f"{side}_prec"]
                pieces.append((rows, np.einsum("nij,nj->ni", P, res[f"{side}_mean"]), P,
                               np.einsum("nij,nj->ni", pP, pm), pP))
            m, L, c = aggregate_rows(base[side][g], pieces)
            mean[members[side][g]], Lam_all[members[side][g]] = m, L
            clipped += c
        final[side] = (mean, Lam_all)
    # draws: S independent draws per row from N(mean, Lam^-1)
    drng = np.random.default_rng([int(seed), 0x50524F50])
    draws = {}
    for side, b, F, on in (("user", "bu", "U", spec.user_bias),
                           ("item", "bi", "V", spec.item_bias)):
        mean, Lam = final[side]
        # x = mean + L^-T eps with Lam = L L^T: covariance L^-T L^-1 = Lam^-1
        Linv = np.linalg.inv(np.linalg.cholesky(Lam))
        x = np.empty((S,) + mean.shape, np.float32)
        for s0 in range(0, S, 32):
            eps = drng.standard_normal((min(S, s0 + 32) - s0,) + mean.shape)
            z = np.matmul(eps.transpose(1, 0, 2), Linv).transpose(1, 0, 2)  # L^-T eps
            x[s0:s0 + eps.shape[0]] = mean[None] + z
        draws[b] = (x[..., 0] if on else np.zeros(x.shape[:2], np.float32))[None]
        draws[F] = x[..., int(on):][None]
    nnz = np.array([blocks[key]["sel"].size for key in results], np.float64)
    taus = np.stack([results[key]["tau"] for key in results])
    draws["tau"] = ((nnz[:, None] * taus).sum(0) / nnz.sum()).astype(np.float32)[None]
    draws["mu"] = np.full((1, S), mu_level, np.float32)
    if spec.global_mean:  # undo the anchor's fold draw by draw (predictions unchanged)
        dev = anchor["mu"] - mu_level
        nb = int(spec.user_bias) + int(spec.item_bias)
        draws["mu"] = (mu_level + dev).astype(np.float32)[None]
        for b, on in (("bu", spec.user_bias), ("bi", spec.item_bias)):
            if on:
                draws[b] = draws[b] - (dev / nb).astype(np.float32)[None, :, None]
    for n in ("mu_U", "Lambda_U", "mu_V", "Lambda_V", "lambda_bu", "lambda_bi"):
        draws[n] = np.asarray(anchor[n], np.float32)[None]
    task_s = {f"{a},{b}": round(float(r["seconds"]), 3) for (a, b), r in results.items()}
    attrs = {
        "seed": int(seed), "sampler": "bpmf-gibbs-propagation",
        "settings": {**{n: opts[n] for n in ("user_blocks", "item_blocks", "num_samples",
                                             "num_warmup", "dtype", "max_width", "align",
                                             "pieces")},
                     "executor": ex if isinstance(ex, str) else type(ex).__name__},
        "propagation": {
            "user_blocks": I_, "item_blocks": J_,
            "block_ratings": {f"{a},{b}": int(blocks[a, b]["sel"].size)
                              for a, b in blocks},
            "task_seconds": task_s,
            "stage_seconds": [round(s, 3) for s in stage_seconds],
            "task_seconds_total": round(sum(task_s.values()), 3),
            "clipped_rows": clipped, "mu_level": mu_level},
        "sampling_seconds": float(sum(stage_seconds)),
    }
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "propagation", attrs=attrs)
