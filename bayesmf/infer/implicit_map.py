r"""MAP of the implicit likelihood: implicit ALS as a ``fit_map`` backend returning the
shared :class:`~bayesmf.posterior.Posterior`.

The implicit family (:class:`~bayesmf.model.likelihoods.ImplicitGaussian`) with fixed
factor precisions :math:`\tau\lambda` has the negative log posterior (up to
:math:`\tau/2`)

.. math::

    \sum_{u,i} c_{ui}(p_{ui} - U_u^\top V_i)^2 + \lambda(\lVert U\rVert^2 + \lVert V\rVert^2),

the Hu-Koren-Volinsky objective, minimised by :func:`bayesmf.infer.implicit_als.implicit_als`
with :math:`\lambda` = ``spec.reg_factors`` and the confidences of the likelihood
(:meth:`~bayesmf.model.likelihoods.ImplicitGaussian.encode`). Optional biases (``spec``'s
``global_mean``, ``user_bias``, ``item_bias``; off by default for this likelihood): the
score is :math:`\mu + b_u + b_i + U_u^\top V_i` and the objective gains
:math:`\lambda_b(\lVert b_u\rVert^2 + \lVert b_i\rVert^2)`, :math:`\lambda_b` =
``spec.reg_bias`` (:mod:`bayesmf.infer.implicit_als`, **Biases**: the same Gram trick with
the targets shifted by the other side's bias). With
``spec.noise == "learned"`` the reported :math:`\tau` is the mode of its Gamma posterior
given the weighted residual sum over all pairs,
:math:`S = \sum_{u,i}\eta_{ui}^2 + \sum_O[c(1-\eta)^2 - \eta^2]`
(:func:`bayesmf.model.linear.full_moments`), so the predictive has a noise scale.

Options: ``max_iter`` (sweeps, 15), ``solver`` (``"cg"`` default, or ``"cholesky"``),
``cg_steps`` (3).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from bayesmf.errors import SpecError
from bayesmf.infer import check_int, check_options
from bayesmf.infer._progress import iteration_bar

__all__ = ["fit_map_implicit", "DEFAULTS"]

DEFAULTS = {"max_iter": 15, "solver": "cg", "cg_steps": 3}


def fit_map_implicit(train, spec, *, seed: int = 0, progress: bool = False, **options):
    """Implicit ALS on ``train`` (counts/weights of the observed pairs) under ``spec``
    (a fitted spec whose likelihood is full-matrix); see the module docs."""
    from bayesmf.infer.implicit_als import implicit_als
    from bayesmf.infer.map import noise_precision_mode
    from bayesmf.model import linear
    from bayesmf.posterior import Posterior, TrainInfo

    t0 = time.perf_counter()
    opts = check_options("map", options, DEFAULTS)
    if spec.rank < 1:
        raise SpecError("implicit ALS (map) needs rank >= 1")
    lik = spec.likelihood
    c = lik.encode(train.rating)
    C = sp.csr_matrix((c, (train.user, train.item)), shape=(train.n_users, train.n_items))
    with iteration_bar(progress, check_int("max_iter", opts["max_iter"]), "implicit ALS",
                       "loss") as tick:
        X, Y, info = implicit_als(C, spec.rank, reg=spec.reg_factors,
                                  iterations=opts["max_iter"], solver=opts["solver"],
                                  cg_steps=opts["cg_steps"], seed=seed,
                                  init_scale=spec.init_scale, user_bias=spec.user_bias,
                                  item_bias=spec.item_bias, global_mean=spec.global_mean,
                                  reg_bias=spec.reg_bias,
                                  callback=lambda it, X, Y, loss: tick(loss))
    N, M = train.n_users, train.n_items
    mu = np.float64(info["mu"])
    bu, bi = (info["user_bias"].astype(np.float64), info["item_bias"].astype(np.float64))
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    _, s2 = linear.full_moments(mu, bu, bi, X64, Y64)
    eta = linear.eta(mu, bu, bi, X64, Y64, train.user, train.item)
    sse = float(s2 + np.sum(c * (1 - eta) ** 2 - eta * eta))
    n_all = float(N) * float(M)
    tau = (noise_precision_mode(sse, n_all, spec.priors.noise_a, spec.priors.noise_b)
           if spec.noise == "learned" else spec.noise_precision)
    f32 = np.float32
    draws = {"mu": np.full((1, 1), mu, f32), "bu": bu.astype(f32)[None, None],
             "bi": bi.astype(f32)[None, None],
             "U": X.astype(f32)[None, None], "V": Y.astype(f32)[None, None],
             "tau": np.full((1, 1), tau, f32)}
    loss = np.asarray(info["loss"], np.float64)
    stats = {"objective": np.array([[loss[-1]]]), "objective_trace": loss[None, None],
             "n_iter": np.array([[info["iterations"]]], np.int64),
             "train_rmse": np.array([[np.sqrt(sse / n_all)]])}
    attrs = {"seed": int(seed), "solver": f"implicit-als/{info['solver']}",
             "options": dict(opts), "iterations": int(info["iterations"]),
             "objective": float(loss[-1]), "objective_initial": float(info["loss_init"]),
             "timings": {"iterate_s": float(np.sum(info["seconds"])),
                         "total_s": time.perf_counter() - t0}}
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "map", stats, None, attrs)
