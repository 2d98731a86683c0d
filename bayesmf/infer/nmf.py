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

Explicit ratings
----------------
:func:`fit_nmf` (method ``"nmf"``, Gaussian likelihood) is the Frobenius counterpart for
explicit ratings on the **observed** entries only,
:math:`\min_{W,H\ge0}\sum_{(u,i)\in\Omega}(r_{ui} - W_u^\top H_i)^2
+ \lambda(\lVert W\rVert_F^2 + \lVert H\rVert_F^2)`, by masked multiplicative updates
that never increase the objective (the math is in its docstring).
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from scipy.special import gammaln

from bayesmf.errors import SpecError
from bayesmf.infer import check_int, check_options, fitted_spec
from bayesmf.infer._progress import iteration_bar

__all__ = ["fit_map_nmf", "kl_nmf", "kl_objective", "SparseCounts", "check_poisson_spec",
           "extended_factors",
           "DEFAULTS", "fit_nmf", "masked_nmf", "nmf_step", "frobenius_objective",
           "ObservedEntries", "EXPLICIT_DEFAULTS"]

DEFAULTS = {"max_iter": 300, "tol": 1e-6, "l1": 0.0}

#: a block of user rows whose non-zeros fill at least this fraction of its ``rows x M``
#: pairs gets its rates from a dense GEMM (:mod:`bayesmf.infer.hpf` docs, "Cost")
_DENSE_MIN_FILL = 1.0 / 64
#: entries of one dense ``rows x M`` block of the GEMM route (8 MB of float64)
_DENSE_ENTRIES = 1 << 20
#: non-zeros per chunk of the gather route (bounds its ``(chunk, k)`` temporaries)
_GATHER_CHUNK = 1 << 17


class _Rates:
    r"""The rates :math:`S'_{ui} = A_u^\top B_i` at the non-zeros of ``data`` (float64),
    by blocks of consecutive user rows (CSR order, so each block is a contiguous run of
    non-zeros). A block of ``rows`` users is filled ``fill = nnz_block / (rows M)``; if
    ``fill >= _DENSE_MIN_FILL`` its rates are read off the dense GEMM
    :math:`A_{a:b}B^\top` (``rows x M``, one BLAS call, ``rows = _DENSE_ENTRIES // M``),
    otherwise gathered row by row (:math:`\sum_k A_{uk}B_{ik}` over ``(chunk, k)``
    gathers). Both give the same sums up to the order of
    the ``k`` additions (float64 round-off)."""

    def __init__(self, data: SparseCounts):
        N, M = data.N, data.M
        self.nnz, self.M = data.nnz, M
        self.user, self.item = data.user, data.item
        rows = max(1, _DENSE_ENTRIES // max(M, 1))
        self.rows = rows
        starts = np.arange(0, N, rows)
        ends = np.minimum(starts + rows, N)
        ip = data.csr.indptr
        nz = ip[ends] - ip[starts]
        dense = nz >= _DENSE_MIN_FILL * (ends - starts) * float(M)
        segs = []  # (s, e, a, b, flat or None); runs of sparse blocks are merged
        for a, b, d in zip(starts.tolist(), ends.tolist(), dense.tolist()):
            s, e = int(ip[a]), int(ip[b])
            if e == s:
                continue
            if d:
                flat = (self.user[s:e] - a) * M + self.item[s:e]
                segs.append((s, e, a, b, flat))
            elif segs and segs[-1][4] is None and segs[-1][1] == s:
                segs[-1] = (segs[-1][0], e, None, None, None)
            else:
                segs.append((s, e, None, None, None))
        self.segs = segs
        self.dense_nnz = int(sum(e - s for s, e, *_, f in segs if f is not None))

    def __call__(self, A, B) -> np.ndarray:
        out = np.empty(self.nnz)
        buf = np.empty(self.rows * self.M) if self.dense_nnz else None
        Bt = B.T
        for s, e, a, b, flat in self.segs:
            if flat is not None:
                D = buf[:(b - a) * self.M].reshape(b - a, self.M)
                np.matmul(A[a:b], Bt, out=D)
                np.take(buf, flat, out=out[s:e])
                continue
            for c in range(s, e, _GATHER_CHUNK):
                d = min(e, c + _GATHER_CHUNK)
                out[c:d] = np.einsum("nk,nk->n", A[self.user[c:d]], B[self.item[c:d]])
        return out


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
        """:math:`A_u^\\top B_i` at every non-zero ``(u, i)`` (float64; dense GEMM blocks
        where the rows are full enough, gathers elsewhere: :class:`_Rates`, planned once)."""
        plan = getattr(self, "_plan", None)
        if plan is None:
            plan = self._plan = _Rates(self)
        return plan(A, B)

    def ratio_products(self, q, A, B):
        """``(Q @ B, Q.T @ A)`` for the sparse matrix ``Q`` with values ``q`` on the
        non-zeros."""
        Q = sp.csr_matrix((q, self.csr.indices, self.csr.indptr), shape=(self.N, self.M))
        return Q @ B, Q.T @ A


def extended_factors(th, be, bu=None, bi=None, one: float = 1.0):
    r"""``(A, B)``: the factors with the bias columns, :math:`A_u = (\theta_u, b_u, 1)`,
    :math:`B_i = (\beta_i, 1, b_i)` (each pair of columns only when that bias is given), so
    that the rate is :math:`A_u^\top B_i` (numpy or JAX, following ``th``). ``one``: the
    value of the fixed entries (0 for the :math:`E\log` of the factors)."""
    from bayesmf._xp import array_namespace

    xp = array_namespace(th)
    A, B = [th], [be]
    if bu is not None:
        A.append(bu[:, None])
        B.append(xp.full((be.shape[0], 1), one, be.dtype))
    if bi is not None:
        A.append(xp.full((th.shape[0], 1), one, th.dtype))
        B.append(bi[:, None])
    if len(A) == 1:
        return th, be
    return xp.concatenate(A, axis=1), xp.concatenate(B, axis=1)


def positive_start(rng, s: float, N: int, M: int, K: int, user_bias: bool = False,
                   item_bias: bool = False):
    """The start of the non-negative factorisations: ``(W (N, K), H (M, K), b_u, b_i)``
    uniform on :math:`s[0.5, 1.5]`, the biases (None when off) on :math:`s^2[0.5, 1.5]`
    (level with one factor's contribution), drawn from ``rng`` in that order (KL-NMF,
    Frobenius NMF and the NumPyro HPF start, :mod:`bayesmf.infer.hpf_numpyro`)."""
    W = s * rng.uniform(0.5, 1.5, (N, K))
    H = s * rng.uniform(0.5, 1.5, (M, K))
    bu = s * s * rng.uniform(0.5, 1.5, N) if user_bias else None
    bi = s * s * rng.uniform(0.5, 1.5, M) if item_bias else None
    return W, H, bu, bi


def check_poisson_spec(spec, method: str) -> None:
    """The Poisson fitters model the rate :math:`\\theta_u^\\top\\beta_i`, plus the
    optional non-negative biases :math:`b_u + b_i` (every Poisson method fits them): a spec
    with a global mean, or rank 0, is refused (:class:`SpecError`)."""
    if spec.global_mean:
        raise SpecError(f"the Poisson likelihood ({method}) has no global mean: the rate is "
                        "theta_u . beta_i (+ b_u + b_i with user_bias / item_bias); switch "
                        "it off (global_mean=False, the default of BayesMF(likelihood="
                        "'poisson'))")
    if spec.rank < 1:
        raise SpecError(f"the Poisson likelihood ({method}) needs rank >= 1")


def kl_objective(data: SparseCounts, W, H, l1: float = 0.0) -> float:
    r""":math:`D(Y\|WH^\top) + \lambda(\lVert W\rVert_1 + \lVert H\rVert_1)` (module
    docs)."""
    return _objective(data, data.rates(W, H), W, H, l1)


def _objective(data: SparseCounts, r, W, H, l1: float, rank: int | None = None) -> float:
    """:func:`kl_objective` from the rates ``r`` at the non-zeros (the penalty on the
    first ``rank`` columns: the factors of extended ``W, H``)."""
    with np.errstate(divide="ignore"):
        d = float(np.sum(data.y * (np.log(data.y) - np.log(r))) - data.total
                  + W.sum(0) @ H.sum(0))
    return d + l1 * float(W[:, :rank].sum() + H[:, :rank].sum())


def _iterate(step, state, objective0: float, max_iter: int, tol: float, callback=None):
    """Run ``state, J = step(state)`` until the relative change of the objective ``J`` in
    one iteration is at most ``tol`` (converged) or ``max_iter`` iterations; ``callback(it,
    J)`` after each. Returns ``(state, info)``, ``info = {"objective": trace (initial value
    first), "iterations", "converged", "seconds"}``. The loop of both multiplicative-update
    NMFs (KL and Frobenius)."""
    trace = [float(objective0)]
    converged = False
    t0 = time.perf_counter()
    it = 0
    for it in range(1, max_iter + 1):
        state, J = step(state)
        trace.append(float(J))
        if callback is not None:
            callback(it, trace[-1])
        if abs(trace[-2] - trace[-1]) <= tol * max(abs(trace[-1]), 1e-12):
            converged = True
            break
    return state, {"objective": np.asarray(trace), "iterations": it, "converged": converged,
                   "seconds": time.perf_counter() - t0}


def kl_nmf(data: SparseCounts, rank: int, *, max_iter: int = 300, tol: float = 1e-6,
           l1: float = 0.0, seed: int = 0, callback=None, user_bias: bool = False,
           item_bias: bool = False):
    """KL-NMF by multiplicative updates (module docs). Returns ``(W, H, info)`` with
    ``info = {"objective": trace (initial value first), "iterations", "converged",
    "seconds"}``; ``callback(it, objective)`` after each iteration.

    With ``user_bias`` / ``item_bias`` the rate is :math:`W_u^\\top H_i + b_u + b_i` and
    ``W, H`` are the extended factors :func:`extended_factors` (``(W, b_u, 1)``,
    ``(H, 1, b_i)``): the bias columns take the same multiplicative update as a factor
    column whose other side is fixed at 1 (:math:`b_u \\leftarrow b_u\\sum_i (y_{ui}/r_{ui})
    / M`), which is the majorise-minimise step of the objective in those coordinates, so
    the objective still never increases; the fixed columns stay 1 and ``l1`` penalises the
    ``rank`` factor columns only."""
    rng = np.random.default_rng(seed)
    N, M = data.N, data.M
    s = np.sqrt(max(data.total, 1e-300) / (float(N) * float(M) * rank))
    W, H = extended_factors(*positive_start(rng, s, N, M, rank, user_bias, item_bias))
    KX = W.shape[1]
    pen = np.where(np.arange(KX) < rank, l1, 0.0)  # l1 on the factor columns
    fixed_w = [KX - 1] if item_bias else []  # W's column of ones (paired with b_i)
    fixed_h = [rank] if user_bias else []  # H's column of ones (paired with b_u)
    tiny = np.finfo(np.float64).tiny
    r = np.maximum(data.rates(W, H), tiny)

    def step(state):
        W, H, r = state
        QH, _ = data.ratio_products(data.y / r, W, H)
        W = np.maximum(W * QH / (H.sum(0) + pen), tiny)
        W[:, fixed_w] = 1.0
        q = data.y / np.maximum(data.rates(W, H), tiny)
        _, QtW = data.ratio_products(q, W, H)
        H = np.maximum(H * QtW / (W.sum(0) + pen), tiny)
        H[:, fixed_h] = 1.0
        # the rates of the new (W, H): the objective and the next W update share them
        r = np.maximum(data.rates(W, H), tiny)
        return (W, H, r), _objective(data, r, W, H, l1, rank)

    (W, H, _), info = _iterate(step, (W, H, r), _objective(data, r, W, H, l1, rank),
                               max_iter, tol, callback)
    return W, H, info


def fit_map_nmf(train, spec, *, seed: int = 0, progress: bool = False, **options):
    """KL-NMF of the counts ``train`` under a Poisson ``spec`` (module docs); the
    Posterior's ``U = W``, ``V = H``, ``bu``/``bi`` the biases with ``user_bias`` /
    ``item_bias`` (else zeros, :func:`kl_nmf`), zeros for ``mu``. ``sample_stats``:
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
                            seed=int(seed), callback=lambda it, obj: tick(obj),
                            user_bias=bool(spec.user_bias), item_bias=bool(spec.item_bias))
    N, M, K = train.n_users, train.n_items, spec.rank
    ll = poisson_loglik(data, W, H)
    f32 = np.float32
    z = np.zeros
    draws = {"mu": z((1, 1), f32),
             "bu": (W[:, K] if spec.user_bias else z(N)).astype(f32)[None, None],
             "bi": (H[:, -1] if spec.item_bias else z(M)).astype(f32)[None, None],
             "U": W[:, :K].astype(f32)[None, None], "V": H[:, :K].astype(f32)[None, None]}
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


# ============================================================================ explicit
# Frobenius NMF of explicit ratings on the observed entries: the math is in fit_nmf.

#: options of :func:`fit_nmf` (``l2=None``: ``spec.reg_factors``)
EXPLICIT_DEFAULTS = {"max_iter": 500, "tol": 1e-6, "l2": None, "eps": 1e-12}


class ObservedEntries(SparseCounts):
    """The observed entries of an ``N x M`` rating matrix in CSR order, **zeros kept** (an
    observed 0 is data, unlike the unlisted zeros of :class:`SparseCounts`); the same
    :meth:`rates` and :meth:`ratio_products` (sparse products on the observed pattern).
    Duplicate pairs are a :class:`~bayesmf.errors.DataError`."""

    def __init__(self, user, item, r, n_users: int, n_items: int):
        user = np.asarray(user, np.int64)
        item = np.asarray(item, np.int64)
        r = np.asarray(r, np.float64)
        order = np.lexsort((item, user))
        user, item, r = user[order], item[order], r[order]
        if len(user) > 1:
            dup = (np.diff(user) == 0) & (np.diff(item) == 0)
            if dup.any():
                from bayesmf.errors import DataError

                raise DataError(f"{int(dup.sum())} duplicate (user, item) pair(s) among the "
                                "observed ratings")
        indptr = np.zeros(n_users + 1, np.int64)
        np.cumsum(np.bincount(user, minlength=n_users), out=indptr[1:])
        self.csr = sp.csr_matrix((r, item, indptr), shape=(n_users, n_items))
        self.N, self.M = n_users, n_items
        self.y = r
        self.user, self.item = user, item
        self.total = float(r.sum())
        self.log_fact = float("nan")  # not a count matrix


def frobenius_objective(data: ObservedEntries, W, H, l2: float = 0.0) -> float:
    r""":math:`J(W, H) = \sum_{(u,i)\in\Omega}(r_{ui} - W_u^\top H_i)^2
    + \lambda(\lVert W\rVert_F^2 + \lVert H\rVert_F^2)` over the observed entries
    :math:`\Omega` (:func:`fit_nmf`)."""
    e = data.y - data.rates(W, H)
    return float(e @ e) + l2 * float(np.sum(W * W) + np.sum(H * H))


def nmf_step(data: ObservedEntries, W, H, l2: float = 0.0, eps: float = 1e-12):
    r"""One iteration of the masked multiplicative updates (:func:`fit_nmf`): ``W`` with
    ``H`` fixed, then ``H`` with the new ``W``; returns ``(W, H)``."""
    RH, _ = data.ratio_products(data.y, W, H)
    PH, _ = data.ratio_products(data.rates(W, H), W, H)
    W = W * (RH + eps) / (PH + l2 * W + eps)
    _, RtW = data.ratio_products(data.y, W, H)
    _, PtW = data.ratio_products(data.rates(W, H), W, H)
    H = H * (RtW + eps) / (PtW + l2 * H + eps)
    return W, H


def masked_nmf(data: ObservedEntries, rank: int, *, max_iter: int = 500, tol: float = 1e-6,
               l2: float = 0.0, eps: float = 1e-12, seed: int = 0, W0=None, H0=None,
               callback=None):
    """Frobenius NMF on the observed entries by masked multiplicative updates
    (:func:`fit_nmf`). Returns ``(W, H, info)``, ``info = {"objective": trace (initial
    value first, one value per iteration), "iterations", "converged", "seconds"}``;
    ``W0, H0``: a start (default: uniform on :math:`s[0.5, 1.5]`,
    :math:`s = \\sqrt{\\bar r/k}`); ``callback(it, objective)`` after each iteration."""
    N, M = data.N, data.M
    if W0 is None or H0 is None:
        rng = np.random.default_rng(seed)
        s = np.sqrt(max(data.total / max(data.nnz, 1), 1e-12) / rank)
        W, H = positive_start(rng, s, N, M, rank)[:2]
    else:
        W, H = np.array(W0, np.float64), np.array(H0, np.float64)

    def step(state):
        W, H = nmf_step(data, *state, l2, eps)
        return (W, H), frobenius_objective(data, W, H, l2)

    (W, H), info = _iterate(step, (W, H), frobenius_objective(data, W, H, l2), max_iter,
                            tol, callback)
    return W, H, info


def fit_nmf(train, spec, *, seed: int = 0, progress: bool = False, **options):
    r"""Non-negative matrix factorisation of **explicit ratings on the observed entries**
    (Frobenius loss), the ``nmf`` method of the Gaussian likelihood; returns a point
    :class:`~bayesmf.posterior.Posterior` (one draw, method ``"nmf"``).

    Objective, over the observed pairs :math:`\Omega` only (an unrated pair is missing,
    not a zero), with :math:`W\in\mathbb R_+^{N\times k}`, :math:`H\in\mathbb
    R_+^{M\times k}`:

    .. math::

        J(W, H) = \sum_{(u,i)\in\Omega}\bigl(r_{ui} - W_u^\top H_i\bigr)^2
        + \lambda\bigl(\lVert W\rVert_F^2 + \lVert H\rVert_F^2\bigr),

    i.e. the MAP objective of :mod:`bayesmf.infer.map` without mean and biases, restricted
    to :math:`W, H \ge 0`. With the mask :math:`M_{ui} = [(u,i)\in\Omega]`, :math:`R` the
    ratings on :math:`\Omega` (0 elsewhere) and :math:`P = M\circ(WH^\top)` the
    predictions on :math:`\Omega`, the masked Lee & Seung updates are

    .. math::

        W \leftarrow W\circ\frac{RH + \epsilon}{PH + \lambda W + \epsilon},\qquad
        H \leftarrow H\circ\frac{R^\top W + \epsilon}{P^\top W + \lambda H + \epsilon}

    (:math:`P` recomputed between the two; element-wise products and ratios). **The
    objective never increases**: for one row, :math:`J_u(w) = w^\top A w - 2b^\top w +
    \text{const}` with :math:`A = \sum_{i\in\Omega_u}H_iH_i^\top + \lambda I` (non-negative
    entries) and :math:`b = \sum_{i\in\Omega_u} r_{ui}H_i \ge 0`; the diagonal
    :math:`K = \mathrm{diag}\bigl((Aw + \epsilon)/w\bigr)` satisfies :math:`K \succeq A`
    (Lee & Seung's lemma, plus :math:`\mathrm{diag}(\epsilon/w)\succeq 0`), so the quadratic
    with Hessian :math:`2K` touching :math:`J_u` at :math:`w` majorises it, and its minimiser
    is exactly :math:`w\circ(b+\epsilon)/(Aw+\epsilon)` -- the update above. The rows of
    :math:`W` are independent given :math:`H` (and vice versa), so each half step does not
    increase :math:`J`. :math:`\epsilon` (option ``eps``, default ``1e-12``) guards the
    division; it appears in numerator and denominator so the update stays the exact
    majoriser minimiser and the fixed points are those of :math:`\epsilon = 0`
    (:math:`b = Aw`, or :math:`w = 0`). Entries that start positive stay positive;
    the updates need :math:`r_{ui}\ge 0` (star ratings), so a negative rating is a
    :class:`~bayesmf.errors.DataError`. Cost per iteration: four sparse products on
    :math:`\Omega` and two :math:`|\Omega|\times k` gathers, :math:`O(|\Omega| k)`.

    Start: :math:`W, H` uniform on :math:`s[0.5, 1.5]`, :math:`s = \sqrt{\bar r/k}`
    (:math:`\bar r` the mean rating: the initial predictions are about :math:`\bar r`).
    Stop: the relative decrease of :math:`J` in one iteration below ``tol`` or
    ``max_iter`` iterations. Float64 (numpy/scipy, no compile).

    The model has **no global mean or biases** (they would have to be non-negative too):
    the spec must switch them off (``global_mean=False, user_bias=False,
    item_bias=False``), else :class:`~bayesmf.errors.SpecError`. Gaussian likelihood
    only.

    Options: ``max_iter`` (500), ``tol`` (1e-6), ``l2`` (None: ``spec.reg_factors``, the
    :math:`\lambda` of the MAP objective), ``eps`` (1e-12).

    The Posterior: ``U = W``, ``V = H``, zeros for ``mu, bu, bi``, ``tau`` the mode of the
    noise precision given the residuals (as :func:`bayesmf.infer.map.fit_map`; the fixed
    ``spec.noise_precision`` with ``noise="fixed"``). ``sample_stats``: ``objective``,
    ``objective_trace`` (per iteration, initial value first), ``n_iter``, ``converged``,
    ``train_rmse``.
    """
    from bayesmf.errors import DataError
    from bayesmf.infer.map import noise_precision_mode
    from bayesmf.posterior import Posterior, TrainInfo

    t0 = time.perf_counter()
    lik = getattr(spec, "likelihood", None)
    if getattr(lik, "name", "gaussian") != "gaussian":
        raise SpecError(f"method 'nmf' (Frobenius NMF of explicit ratings) needs the "
                        f"Gaussian likelihood, got {lik.name!r}"
                        + (" (counts: method='map' is KL-NMF)" if lik.name == "poisson"
                           else ""))
    spec = fitted_spec(train, spec)
    opts = check_options("nmf", options, EXPLICIT_DEFAULTS)
    max_iter = check_int("max_iter", opts["max_iter"], 1)
    tol = float(opts["tol"]) if _is_num(opts["tol"]) else None
    if tol is None or not tol >= 0 or not np.isfinite(tol):
        raise SpecError(f"tol must be a finite number >= 0, got {opts['tol']!r}")
    l2 = spec.reg_factors if opts["l2"] is None else opts["l2"]
    if not _is_num(l2) or not np.isfinite(l2) or not l2 >= 0:
        raise SpecError(f"l2 must be a finite number >= 0 (or None: spec.reg_factors), got "
                        f"{opts['l2']!r}")
    eps = opts["eps"]
    if not _is_num(eps) or not np.isfinite(eps) or not eps > 0:
        raise SpecError(f"eps must be a finite number > 0, got {eps!r}")
    l2, eps = float(l2), float(eps)
    on = [n for n in ("global_mean", "user_bias", "item_bias") if getattr(spec, n)]
    if on:
        raise SpecError(f"method 'nmf' models r_ui = W_u . H_i with W, H >= 0 (no mean or "
                        f"biases); switch off {', '.join(on)} (global_mean=False, "
                        "user_bias=False, item_bias=False)")
    if spec.rank < 1:
        raise SpecError("method 'nmf' needs rank >= 1")
    r = np.asarray(train.rating, np.float64)
    if (r < 0).any():
        raise DataError(f"method 'nmf' needs non-negative ratings (the multiplicative "
                        f"updates keep W, H >= 0); {int((r < 0).sum())} rating(s) are "
                        f"negative (e.g. {r[np.flatnonzero(r < 0)[0]]:g}); shift the scale")
    data = ObservedEntries(train.user, train.item, r, train.n_users, train.n_items)
    with iteration_bar(progress, max_iter, "NMF", "objective") as tick:
        W, H, info = masked_nmf(data, spec.rank, max_iter=max_iter, tol=tol, l2=l2, eps=eps,
                                seed=int(seed), callback=lambda it, obj: tick(obj))
    N, M, n = train.n_users, train.n_items, data.nnz
    e = data.y - data.rates(W, H)
    sse = float(e @ e)
    if spec.noise == "learned":
        tau = noise_precision_mode(sse, n, spec.priors.noise_a, spec.priors.noise_b)
    else:
        tau = spec.noise_precision
    f32 = np.float32
    z = np.zeros
    draws = {"mu": z((1, 1), f32), "bu": z((1, 1, N), f32), "bi": z((1, 1, M), f32),
             "U": W.astype(f32)[None, None], "V": H.astype(f32)[None, None],
             "tau": np.full((1, 1), tau, f32)}
    obj = info["objective"]
    stats = {"objective": np.array([[obj[-1]]]), "objective_trace": obj[None, None],
             "n_iter": np.array([[info["iterations"]]], np.int64),
             "converged": np.array([[info["converged"]]]),
             "train_rmse": np.array([[np.sqrt(sse / max(n, 1))]])}
    attrs = {"seed": int(seed), "solver": "frobenius-nmf (masked multiplicative updates)",
             "options": {"max_iter": max_iter, "tol": tol, "l2": l2, "eps": eps},
             "iterations": int(info["iterations"]), "converged": bool(info["converged"]),
             "objective": float(obj[-1]), "objective_initial": float(obj[0]),
             "timings": {"iterate_s": float(info["seconds"]),
                         "total_s": time.perf_counter() - t0}}
    return Posterior(draws, spec, train.users, train.items, TrainInfo.from_ratings(train),
                     "nmf", stats, None, attrs)
