r"""MAP of the Poisson likelihood: KL-NMF by multiplicative updates (Lee & Seung 2001),
returning the shared :class:`~bayesmf.posterior.Posterior` (one draw, method ``"map"``).

The Poisson log likelihood of non-negative factors :math:`W\in\mathbb R_+^{N\times k}`
(users), :math:`H\in\mathbb R_+^{M\times k}` (items), rate :math:`r_{ui} = W_u^\top H_i`,
over **all** pairs is, up to a constant, minus the generalised KL divergence

.. math::

    D(Y\,\|\,WH^\top) = \sum_{u,i}\Bigl[y_{ui}\log\frac{y_{ui}}{r_{ui}} - y_{ui} + r_{ui}\Bigr]
    = \sum_{y_{ui}>0}\Bigl[y_{ui}\log\frac{y_{ui}}{r_{ui}} - y_{ui}\Bigr]
      + \Bigl(\sum_u W_u\Bigr)^\top\Bigl(\sum_i H_i\Bigr),

so the zeros enter through the column sums only and one evaluation costs
:math:`O(\text{nnz}\cdot k)`. With the sparse ratio matrix :math:`Q_{ui} = y_{ui}/r_{ui}`
on the non-zeros, the multiplicative updates are

.. math::

    W_{uk} \leftarrow W_{uk}\,\frac{(QH)_{uk}}{\sum_i H_{ik} + \lambda},\qquad
    H_{ik} \leftarrow H_{ik}\,\frac{(Q^\top W)_{ik}}{\sum_u W_{uk} + \lambda}

(:math:`Q` recomputed between the two). Each is the minimiser of Lee & Seung's auxiliary
function (Jensen's inequality on :math:`\log\sum_k`), so the objective
:math:`D + \lambda(\lVert W\rVert_1 + \lVert H\rVert_1)` **never increases**;
:math:`\lambda` (option ``l1``, default 0) is the MAP under exponential
(:math:`\mathrm{Gamma}(1, \lambda)`) priors on the factors. The HPF priors of
:class:`~bayesmf.model.likelihoods.Poisson` (shapes 0.3 < 1) have no mode, so the
default is the maximum-likelihood factorisation. Computed in float64 (numpy/scipy, no
compile); entries that start positive stay positive.

Initialisation: :math:`W, H` uniform on :math:`s\,[0.5, 1.5]` with
:math:`s = \sqrt{\bar y/k}`, :math:`\bar y = \sum y/(NM)` (so the initial mean rate is
about the mean count). Stopping: the relative decrease of the objective in one iteration
below ``tol`` (``1e-6``) or ``max_iter`` (``300``) iterations.

Options: ``max_iter``, ``tol``, ``l1``.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from scipy.special import gammaln

from bayesmf.errors import SpecError
from bayesmf.infer import check_int, check_options, fitted_spec, require_factors_only
from bayesmf.infer._progress import iteration_bar

__all__ = ["fit_map_nmf", "kl_nmf", "kl_objective", "SparseCounts", "check_poisson_spec",
           "DEFAULTS"]

DEFAULTS = {"max_iter": 300, "tol": 1e-6, "l1": 0.0}

#: rows of the (nnz x k) gathers per block (bounds the work memory)
_BLOCK = 1 << 17


class SparseCounts:
    """The non-zero counts of an ``N x M`` matrix in CSR order, with the operations the
    Poisson fitters need: :meth:`rates` (the row-wise products :math:`A_u^\\top B_i` at
    the non-zeros, in blocks) and :meth:`ratio_products` (:math:`QB` and
    :math:`Q^\\top A` for :math:`Q = y / \\text{rates}` on the non-zeros)."""

    def __init__(self, user, item, y, n_users: int, n_items: int):
        csr = sp.csr_matrix((np.asarray(y, np.float64), (user, item)),
                            shape=(n_users, n_items))
        csr.sum_duplicates()
        csr.eliminate_zeros()
        csr.sort_indices()
        self.csr = csr
        self.N, self.M = n_users, n_items
        self.y = csr.data.copy()
        self.user = np.repeat(np.arange(n_users, dtype=np.int64), np.diff(csr.indptr))
        self.item = csr.indices.astype(np.int64)
        self.log_fact = float(gammaln(self.y + 1.0).sum())
        self.total = float(self.y.sum())

    @property
    def nnz(self) -> int:
        return int(self.y.shape[0])

    def rates(self, A, B) -> np.ndarray:
        """:math:`A_u^\\top B_i` at every non-zero ``(u, i)`` (float64)."""
        out = np.empty(self.nnz)
        for a in range(0, self.nnz, _BLOCK):
            b = min(self.nnz, a + _BLOCK)
            out[a:b] = np.einsum("nk,nk->n", A[self.user[a:b]], B[self.item[a:b]])
        return out

    def ratio_products(self, q, A, B):
        """``(Q @ B, Q.T @ A)`` for the sparse matrix ``Q`` with values ``q`` on the
        non-zeros."""
        Q = sp.csr_matrix((q, self.csr.indices, self.csr.indptr), shape=(self.N, self.M))
        return Q @ B, Q.T @ A


def check_poisson_spec(spec, method: str) -> None:
    """The Poisson fitters model the rate :math:`\\theta_u^\\top\\beta_i` only: a spec with
    a global mean or biases, or rank 0, is refused (:class:`SpecError`)."""
    require_factors_only(spec, "the Poisson likelihood", method, "poisson")


def kl_objective(data: SparseCounts, W, H, l1: float = 0.0) -> float:
    r""":math:`D(Y\|WH^\top) + \lambda(\lVert W\rVert_1 + \lVert H\rVert_1)` (module
    docs)."""
    return _objective(data, data.rates(W, H), W, H, l1)


def _objective(data: SparseCounts, r, W, H, l1: float) -> float:
    """:func:`kl_objective` from the rates ``r`` at the non-zeros."""
    with np.errstate(divide="ignore"):
        d = float(np.sum(data.y * (np.log(data.y) - np.log(r))) - data.total
                  + W.sum(0) @ H.sum(0))
    return d + l1 * float(W.sum() + H.sum())


def kl_nmf(data: SparseCounts, rank: int, *, max_iter: int = 300, tol: float = 1e-6,
           l1: float = 0.0, seed: int = 0, callback=None):
    """KL-NMF by multiplicative updates (module docs). Returns ``(W, H, info)`` with
    ``info = {"objective": trace (initial value first), "iterations", "converged",
    "seconds"}``; ``callback(it, objective)`` after each iteration."""
    rng = np.random.default_rng(seed)
    N, M = data.N, data.M
    s = np.sqrt(max(data.total, 1e-300) / (float(N) * float(M) * rank))
    W = s * rng.uniform(0.5, 1.5, (N, rank))
    H = s * rng.uniform(0.5, 1.5, (M, rank))
    tiny = np.finfo(np.float64).tiny
    r = np.maximum(data.rates(W, H), tiny)
    trace = [_objective(data, r, W, H, l1)]
    converged = False
    t0 = time.perf_counter()
    it = 0
    for it in range(1, max_iter + 1):
        QH, _ = data.ratio_products(data.y / r, W, H)
        W = np.maximum(W * QH / (H.sum(0) + l1), tiny)
        q = data.y / np.maximum(data.rates(W, H), tiny)
        _, QtW = data.ratio_products(q, W, H)
        H = np.maximum(H * QtW / (W.sum(0) + l1), tiny)
        # the rates of the new (W, H): the objective and the next W update share them
        r = np.maximum(data.rates(W, H), tiny)
        trace.append(_objective(data, r, W, H, l1))
        if callback is not None:
            callback(it, trace[-1])
        if abs(trace[-2] - trace[-1]) <= tol * max(abs(trace[-1]), 1e-12):
            converged = True
            break
    return W, H, {"objective": np.asarray(trace), "iterations": it, "converged": converged,
                  "seconds": time.perf_counter() - t0}


def fit_map_nmf(train, spec, *, seed: int = 0, progress: bool = False, **options):
    """KL-NMF of the counts ``train`` under a Poisson ``spec`` (module docs); the
    Posterior's ``U = W``, ``V = H``, zeros for ``mu, bu, bi``. ``sample_stats``:
    ``objective``, ``objective_trace``, ``n_iter``, ``log_likelihood`` (all pairs)."""
    from bayesmf.posterior import Posterior, TrainInfo

    t0 = time.perf_counter()
    spec = fitted_spec(train, spec, "map")
    opts = check_options("map", options, DEFAULTS)
    max_iter = check_int("max_iter", opts["max_iter"], 1)
    tol, l1 = (float(opts[n]) if _is_num(opts[n]) else None for n in ("tol", "l1"))
    if tol is None or not tol >= 0:
        raise SpecError(f"tol must be a number >= 0, got {opts['tol']!r}")
    if l1 is None or not l1 >= 0 or not np.isfinite(l1):
        raise SpecError(f"l1 must be a finite number >= 0, got {opts['l1']!r}")
    check_poisson_spec(spec, "map")
    y = spec.likelihood.encode(train.rating)
    data = SparseCounts(train.user, train.item, y, train.n_users, train.n_items)
    with iteration_bar(progress, max_iter, "KL-NMF", "objective") as tick:
        W, H, info = kl_nmf(data, spec.rank, max_iter=max_iter, tol=tol, l1=l1,
                            seed=int(seed), callback=lambda it, obj: tick(obj))
    N, M = train.n_users, train.n_items
    ll = poisson_loglik(data, W, H)
    f32 = np.float32
    z = np.zeros
    draws = {"mu": z((1, 1), f32), "bu": z((1, 1, N), f32), "bi": z((1, 1, M), f32),
             "U": W.astype(f32)[None, None], "V": H.astype(f32)[None, None]}
    obj = info["objective"]
    stats = {"objective": np.array([[obj[-1]]]), "objective_trace": obj[None, None],
             "n_iter": np.array([[info["iterations"]]], np.int64),
             "log_likelihood": np.array([[ll]])}
    attrs = {"seed": int(seed), "solver": "kl-nmf (multiplicative updates)",
             "options": {"max_iter": max_iter, "tol": tol, "l1": l1},
             "iterations": int(info["iterations"]), "converged": bool(info["converged"]),
             "objective": float(obj[-1]), "objective_initial": float(obj[0]),
             "timings": {"iterate_s": float(info["seconds"]),
                         "total_s": time.perf_counter() - t0}}
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "map", stats, None, attrs)


def poisson_loglik(data: SparseCounts, A, B) -> float:
    r""":math:`\sum_{y>0}[y\log r - \log y!] - (\sum_u A_u)^\top(\sum_i B_i)` (all pairs)."""
    r = np.maximum(data.rates(A, B), np.finfo(np.float64).tiny)
    return float(data.y @ np.log(r) - data.log_fact - A.sum(0) @ B.sum(0))


def _is_num(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))
