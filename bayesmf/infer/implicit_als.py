r"""Confidence-weighted implicit ALS (Hu, Koren & Volinsky 2008), the MAP point estimate.

Data: ``C`` is the users x items sparse matrix of confidences on the *observed* pairs
(``c_ui >= 1``; e.g. ``Interactions.to_csr(Interactions.confidence(alpha))``). Every
unobserved pair has preference ``p_ui = 0`` and confidence ``c_ui = 1``; every observed
pair has ``p_ui = 1``. The objective over **all** ``n_users * n_items`` pairs is

    L(X, Y) = sum_{u,i} c_ui (p_ui - x_u . y_i)^2 + reg (sum_u |x_u|^2 + sum_i |y_i|^2).

Alternating least squares minimises ``L`` exactly in ``X`` with ``Y`` fixed, then in ``Y``
with ``X`` fixed. The user update never forms the dense matrix:

    x_u = (Y^T Y + Y^T (C_u - I) Y + reg I)^{-1} Y^T C_u p(u)
        = (G + sum_{i in O(u)} (c_ui - 1) y_i y_i^T + reg I)^{-1} sum_{i in O(u)} c_ui y_i

with ``G = Y^T Y`` shared by all users and ``O(u)`` the user's observed items; the item
update is the same with ``C^T`` and the roles of ``X``/``Y`` swapped.

Solvers (both vectorised over rows; rows are processed in chunks so that the per-chunk
buffers -- ``(rows + entries) x k x k`` floats -- stay under ``chunk_bytes``):

* ``"cholesky"``: the exact solve. The per-row corrections ``sum (c-1) y_i y_i^T`` are a
  sparse (rows x entries) times dense (entries x k*k outer products) product, ``G + reg I``
  is added, and all rows of a chunk are solved by one batched ``np.linalg.solve`` (the
  systems are symmetric positive definite for ``reg > 0``; numpy has no batched
  triangular solve, so a batched LU is as fast as Cholesky here). Each half-step is the
  exact block minimiser, so ``L`` never increases.
* ``"cg"``: the conjugate-gradient update of the ``implicit`` library (Takacs, Pilaszy &
  Tikk 2011): ``cg_steps`` CG iterations per row on ``A_u x = b_u``, warm-started at the
  current ``x_u``, using only products ``A_u v = (G + reg I) v + Y^T (C_u - I)(Y v)``
  (the second term: per observed entry ``(c_ui - 1)(y_i . v_u)``, scattered back by one
  sparse product). Cost per half-step ``O(nnz k cg_steps + n k^2)`` instead of
  ``O(nnz k^2 + n k^3)``; with enough steps it converges to the Cholesky solution.

Loss without the dense matrix (``s_ui = x_u . y_i``):

    sum_{u,i} c_ui (p_ui - s_ui)^2 = sum_{obs} [c_ui (1 - s_ui)^2 - s_ui^2] + sum_{all} s_ui^2,
    sum_{all} s_ui^2 = trace(X^T X Y^T Y) = sum(X^T X * Y^T Y)    (elementwise).

Initialisation: ``X, Y ~ Normal(0, init_scale^2)`` from ``seed`` (users first, then items).

**Biases** (``user_bias``, ``item_bias``, ``global_mean`` of :func:`implicit_als`): the score
is ``s_ui = mu + b_u + b_i + x_u . y_i`` and the objective gains ``reg_bias (|b_u|^2 +
|b_i|^2)`` (``mu`` is not penalised). The user step solves for ``[x_u, b_u]`` with the
design ``[y_i, 1]`` and every target shifted by ``t_i = mu + b_i``; over all pairs

    A_u = Y'^T Y' + sum_{i in O(u)} (c_ui - 1) y'_i y'_i^T + R,
    rhs_u = sum_{all i} c_ui (p_ui - t_i) y'_i
          = -Y'^T t + sum_{i in O(u)} (c_ui - (c_ui - 1) t_i) y'_i

(``R`` the diagonal of ridges), still one shared Gram and a sum over the observed pairs;
the item step is the same with the roles swapped (``t_u = mu + b_u``). ``mu`` is the
weighted mean residual ``sum_all c (p - r) / sum_all c`` (``r = b_u + b_i + x.y``), whose
sums over all pairs are closed-form: ``sum_all c = N M + sum_obs (c - 1)``,
``sum_all r = M sum b_u + N sum b_i + (sum_u x_u).(sum_i y_i)``. The loss is the one above
with ``x''_u = [x_u, b_u, 1]``, ``y''_i = [y_i, 1, mu + b_i]`` (``s = x''.y''``). Each
step is an exact block minimiser with the Cholesky solver, so ``L`` never increases.
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.sparse as sp

from bayesmf.errors import DataError, SpecError
from bayesmf.infer import check_int

__all__ = ["implicit_als", "implicit_als_loss", "update_factors", "SOLVERS"]

#: solver names accepted by :func:`implicit_als` and :func:`update_factors`
SOLVERS = ("cholesky", "cg")

_DEFAULT_CHUNK_BYTES = 1 << 27  # 128 MiB of per-chunk buffers


# --------------------------------------------------------------------------- validation
def _check_confidence(C) -> sp.csr_matrix:
    """``C`` as a canonical CSR matrix (sorted indices, no duplicates), or a DataError."""
    if isinstance(C, (sp.spmatrix, sp.sparray)):
        M = sp.csr_matrix(C, copy=True)
    else:
        try:
            arr = np.asarray(C)
        except Exception:  # noqa: BLE001 -- anything numpy cannot read is bad input
            raise DataError(f"C must be a scipy sparse matrix or a 2-D array, got "
                            f"{type(C).__name__}") from None
        if arr.ndim != 2:
            raise DataError(f"C must be 2-D (users x items), got shape {arr.shape}")
        if arr.dtype.kind not in "iuf" or arr.dtype.kind == "b":
            raise DataError(f"C must hold numbers, got dtype {arr.dtype}")
        M = sp.csr_matrix(arr.astype(np.float64))
    if M.ndim != 2 or M.shape[0] < 1 or M.shape[1] < 1:
        raise DataError(f"C must have at least one user and one item, got shape {M.shape}")
    if M.dtype.kind not in "iuf":
        raise DataError(f"C must hold real numbers, got dtype {M.dtype}")
    M = M.astype(np.float64)
    M.sum_duplicates()
    M.sort_indices()
    if M.nnz == 0:
        raise DataError("C has no observed (stored) pairs: nothing to fit")
    bad = ~np.isfinite(M.data)
    if bad.any():
        raise DataError(f"C has {int(bad.sum())} NaN or infinite confidence(s)")
    low = M.data < 1
    if low.any():
        raise DataError(f"C has {int(low.sum())} stored confidence(s) below 1 (e.g. "
                        f"{M.data[np.flatnonzero(low)[0]]:g}); observed pairs need c_ui >= 1 "
                        "(c = 1 + alpha * r) and unobserved pairs must not be stored")
    return M


def _check_float(name: str, v, *, positive: bool) -> float:
    if isinstance(v, (bool, np.bool_)):
        raise SpecError(f"{name} must be a number, got {v!r}")
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(f) or (f <= 0 if positive else f < 0):
        raise SpecError(f"{name} must be a finite number {'>' if positive else '>='} 0, "
                        f"got {v!r}")
    return f


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise SpecError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise SpecError(f"dtype must be float32 or float64, got {dtype!r}")
    return dt


def _check_solver(solver) -> str:
    if solver not in SOLVERS:
        raise SpecError(f"solver must be one of {list(SOLVERS)}, got {solver!r}")
    return solver


def _check_factors(name: str, F, n: int, k: int | None) -> np.ndarray:
    arr = np.asarray(F)
    if arr.ndim != 2 or arr.shape[0] != n or (k is not None and arr.shape[1] != k) \
            or arr.shape[1] < 1:
        want = f"({n}, {k if k is not None else 'rank'})"
        raise SpecError(f"{name} must have shape {want}, got {arr.shape}")
    if arr.dtype.kind not in "iuf" or not np.isfinite(arr).all():
        raise SpecError(f"{name} must hold finite real numbers")
    return arr


# --------------------------------------------------------------------------- kernels
def _chunks(indptr: np.ndarray, k: int, itemsize: int, budget: int):
    """Row ranges ``[r0, r1)`` whose buffers ``(rows + entries) * k * k * itemsize`` stay
    under ``budget`` (a single row above it forms its own chunk)."""
    n = len(indptr) - 1
    cost = (np.diff(indptr) + 1).astype(np.int64) * (k * k * itemsize)
    cum = np.concatenate([[0], np.cumsum(cost)])
    r0 = 0
    while r0 < n:
        r1 = int(np.searchsorted(cum, cum[r0] + budget, side="right")) - 1
        r1 = min(max(r1, r0 + 1), n)
        yield r0, r1
        r0 = r1


def _half_step(Cm: sp.csr_matrix, X: np.ndarray | None, Y: np.ndarray, reg,
               solver: str, cg_steps: int, budget: int, offset=None) -> np.ndarray:
    """New row factors for the rows of ``Cm`` given the column factors ``Y``; ``reg`` a
    scalar or one ridge per factor column; ``offset`` (None or one value per column of
    ``Cm``): every pair's target is ``p - offset[col]`` (module docs, **Biases**)."""
    n, k = Cm.shape[0], Y.shape[1]
    dt = Y.dtype
    G = Y.T @ Y
    Greg = G + (np.diag(np.asarray(reg, dt)) if np.ndim(reg) else reg * np.eye(k, dtype=dt))
    out = np.empty((n, k), dt)
    indptr, indices, conf = Cm.indptr, Cm.indices, Cm.data.astype(dt, copy=False)
    base = None if offset is None else -(Y.T @ np.asarray(offset, dt))   # -Y^T t, all rows
    budget = budget if solver == "cholesky" else budget * k  # CG buffers are entries x k
    for r0, r1 in _chunks(indptr, k, dt.itemsize, budget):
        lo, hi = int(indptr[r0]), int(indptr[r1])
        m, rows = hi - lo, r1 - r0
        lptr = (indptr[r0:r1 + 1] - lo).astype(np.int64)
        Yi = Y[indices[lo:hi]]                                   # entries x k
        c = conf[lo:hi]
        w = c - 1
        # right-hand side sum_all c (p - t) y = -Y^T t + sum_obs (c - (c - 1) t) y
        cb = c if offset is None else c - w * np.asarray(offset, dt)[indices[lo:hi]]
        Sc = sp.csr_matrix((cb, np.arange(m), lptr), shape=(rows, m))
        b = np.asarray(Sc @ Yi, dtype=dt)                        # rows x k: sum c y_i
        if base is not None:
            b += base
        if solver == "cholesky":
            outer = (Yi[:, :, None] * Yi[:, None, :]).reshape(m, k * k)
            Sw = sp.csr_matrix((w, np.arange(m), lptr), shape=(rows, m))
            A = np.asarray(Sw @ outer, dtype=dt).reshape(rows, k, k)
            A += Greg
            try:
                out[r0:r1] = np.linalg.solve(A, b[:, :, None])[:, :, 0]
            except np.linalg.LinAlgError:
                raise SpecError("the ALS normal equations are singular; use reg > 0") from None
        else:
            row_of = np.repeat(np.arange(rows), np.diff(lptr))

            def matvec(V):
                s = np.einsum("ek,ek->e", Yi, V[row_of]) * w
                return V @ Greg + np.asarray(
                    sp.csr_matrix((s, np.arange(m), lptr), shape=(rows, m)) @ Yi, dtype=dt)

            x = (np.zeros((rows, k), dt) if X is None else np.array(X[r0:r1], dt))
            r = b - matvec(x)
            p = r.copy()
            rs = np.einsum("rk,rk->r", r, r)
            for _ in range(cg_steps):
                Ap = matvec(p)
                pAp = np.einsum("rk,rk->r", p, Ap)
                ok = pAp > 0
                a = np.where(ok, rs / np.where(ok, pAp, 1), 0).astype(dt)
                x += a[:, None] * p
                r -= a[:, None] * Ap
                rs_new = np.einsum("rk,rk->r", r, r)
                beta = np.where(rs > 0, rs_new / np.where(rs > 0, rs, 1), 0).astype(dt)
                p = r + beta[:, None] * p
                rs = rs_new
            out[r0:r1] = x
    return out


def _loss(Cm: sp.csr_matrix, X: np.ndarray, Y: np.ndarray, reg: float,
          budget: int) -> float:
    """``L(X, Y)`` from the observed entries only (see the module docstring)."""
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    total = float(np.sum((X64.T @ X64) * (Y64.T @ Y64)))
    rows = np.repeat(np.arange(Cm.shape[0]), np.diff(Cm.indptr))
    step = max(1, budget // (8 * X.shape[1]))
    for lo in range(0, Cm.nnz, step):
        hi = min(lo + step, Cm.nnz)
        s = np.einsum("ek,ek->e", X64[rows[lo:hi]], Y64[Cm.indices[lo:hi]])
        c = Cm.data[lo:hi]
        total += float(np.sum(c * (1 - s) ** 2 - s * s))
    return total + reg * float(np.sum(X64 * X64) + np.sum(Y64 * Y64))


# --------------------------------------------------------------------------- public API
def update_factors(C, Y, reg: float = 0.01, *, X=None, solver: str = "cholesky",
                   cg_steps: int = 3, chunk_bytes: int = _DEFAULT_CHUNK_BYTES) -> np.ndarray:
    """One ALS half-step: the row factors of ``C`` (rows x cols confidences on observed
    pairs) given the column factors ``Y`` (cols x k).

    ``solver="cholesky"`` returns the exact minimiser ``x_u = (Y^T C_u Y + reg I)^{-1}
    Y^T C_u p(u)``; ``"cg"`` runs ``cg_steps`` conjugate-gradient steps from ``X`` (zeros
    when ``X`` is None). Pass ``C.T`` and ``X`` to update the column factors. Useful on
    its own to fold in new users against fixed item factors. Returned in ``Y``'s dtype
    (float32 or float64).
    """
    Cm = _check_confidence(C)
    Y = _check_factors("Y", Y, Cm.shape[1], None)
    dt = Y.dtype if Y.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    Y = np.ascontiguousarray(Y, dt)
    if X is not None:
        X = _check_factors("X", X, Cm.shape[0], Y.shape[1]).astype(dt)
    return _half_step(Cm, X, Y, _check_float("reg", reg, positive=False),
                      _check_solver(solver), check_int("cg_steps", cg_steps),
                      check_int("chunk_bytes", chunk_bytes))


def implicit_als_loss(C, X, Y, reg: float = 0.01) -> float:
    """The full objective ``sum_{all u,i} c_ui (p_ui - x_u.y_i)^2 + reg(|X|^2 + |Y|^2)``,
    computed from the observed pairs only (never forms the dense matrix)."""
    Cm = _check_confidence(C)
    X = _check_factors("X", X, Cm.shape[0], None)
    Y = _check_factors("Y", Y, Cm.shape[1], X.shape[1])
    return _loss(Cm, X, Y, _check_float("reg", reg, positive=False), _DEFAULT_CHUNK_BYTES)


def implicit_als(C, rank: int, *, reg: float = 0.01, iterations: int = 15,
                 solver: str = "cholesky", cg_steps: int = 3, seed=0, dtype=np.float32,
                 init_scale: float = 0.01, callback=None,
                 chunk_bytes: int = _DEFAULT_CHUNK_BYTES, user_bias: bool = False,
                 item_bias: bool = False, global_mean: bool = False,
                 reg_bias: float | None = None):
    """Fit confidence-weighted implicit ALS; returns ``(X, Y, info)``.

    Parameters
    ----------
    C : scipy sparse (or dense) users x items
        Confidences ``c_ui >= 1`` on the observed pairs; nothing stored elsewhere (a dense
        array's zeros are the unobserved pairs).
    rank : int >= 1
    reg : float >= 0
        L2 penalty ``reg (|X|^2 + |Y|^2)`` (``reg = 0`` may make the systems singular).
    iterations : int >= 1
        Full sweeps (users, then items).
    solver : ``"cholesky"`` (exact, loss never increases) or ``"cg"`` (``cg_steps``
        warm-started conjugate-gradient steps per row).
    seed : int or numpy Generator; dtype : float32 (default) or float64;
    init_scale : std of the Normal initialisation.
    callback : ``callback(iteration, X, Y, loss)`` after every sweep (iteration counted
        from 1); returning ``True`` stops the fit early.
    chunk_bytes : bound on the per-chunk buffers (see the module docstring).
    user_bias, item_bias, global_mean : bool
        Fit ``b_u``, ``b_i``, ``mu`` too (module docs, **Biases**); start at 0.
    reg_bias : float >= 0, optional
        Ridge of the biases (default ``reg``).

    Returns
    -------
    X : (n_users, rank), Y : (n_items, rank) arrays of ``dtype``; ``info`` a dict with
    ``loss`` (objective after each sweep), ``loss_init``, ``seconds`` (per sweep, without
    the loss), ``seconds_loss``, ``seconds_total``, ``iterations`` (completed), ``solver``,
    ``cg_steps``, ``rank``, ``reg``, ``nnz``, ``shape``, ``stopped_early``, and ``mu``
    (float), ``user_bias`` (``n_users``), ``item_bias`` (``n_items``): zeros where not
    fitted.
    """
    t_start = time.perf_counter()
    Cm = _check_confidence(C)
    rank = check_int("rank", rank)
    iterations = check_int("iterations", iterations)
    cg_steps = check_int("cg_steps", cg_steps)
    chunk_bytes = check_int("chunk_bytes", chunk_bytes)
    reg = _check_float("reg", reg, positive=False)
    init_scale = _check_float("init_scale", init_scale, positive=True)
    solver = _check_solver(solver)
    dt = _check_dtype(dtype)
    if callback is not None and not callable(callback):
        raise SpecError(f"callback must be callable, got {type(callback).__name__}")
    if isinstance(seed, np.random.Generator):
        rng = seed
    else:
        try:
            rng = np.random.default_rng(seed)
        except (TypeError, ValueError):
            raise SpecError(f"seed must be an integer or a numpy Generator, got {seed!r}") \
                from None
    reg_bias = reg if reg_bias is None else _check_float("reg_bias", reg_bias, positive=False)
    for name, v in (("user_bias", user_bias), ("item_bias", item_bias),
                    ("global_mean", global_mean)):
        if not isinstance(v, bool):
            raise SpecError(f"{name} must be True or False, got {v!r}")
    n_users, n_items = Cm.shape
    CmT = Cm.T.tocsr()
    CmT.sort_indices()
    X = (rng.standard_normal((n_users, rank)) * init_scale).astype(dt)
    Y = (rng.standard_normal((n_items, rank)) * init_scale).astype(dt)
    bias = _Biases(Cm, user_bias, item_bias, global_mean, reg, reg_bias, dt)
    info = {"loss": [], "loss_init": bias.loss(Cm, X, Y, chunk_bytes), "seconds": [],
            "seconds_loss": 0.0, "solver": solver, "cg_steps": cg_steps if solver == "cg"
            else None, "rank": rank, "reg": reg, "nnz": int(Cm.nnz), "shape": Cm.shape,
            "stopped_early": False, "iterations": 0}
    for it in range(1, iterations + 1):
        t0 = time.perf_counter()
        if bias.any:
            X, Y = bias.sweep(Cm, CmT, X, Y, solver, cg_steps, chunk_bytes)
        else:
            X = _half_step(Cm, X, Y, reg, solver, cg_steps, chunk_bytes)
            Y = _half_step(CmT, Y, X, reg, solver, cg_steps, chunk_bytes)
        t1 = time.perf_counter()
        loss = bias.loss(Cm, X, Y, chunk_bytes)
        info["seconds"].append(t1 - t0)
        info["seconds_loss"] += time.perf_counter() - t1
        info["loss"].append(loss)
        info["iterations"] = it
        if not (np.isfinite(X).all() and np.isfinite(Y).all()):
            raise SpecError(f"implicit ALS diverged (non-finite factors at iteration {it}); "
                            "increase reg or use dtype=float64")
        if callback is not None and callback(it, X, Y, loss) is True:
            info["stopped_early"] = it < iterations
            break
    info["seconds_total"] = time.perf_counter() - t_start
    info.update(mu=float(bias.mu), user_bias=bias.bu, item_bias=bias.bi)
    return X, Y, info


class _Biases:
    """The bias terms of :func:`implicit_als` (module docs, **Biases**): their values, one
    sweep of users, items and ``mu``, and the loss with them."""

    def __init__(self, Cm, user_bias, item_bias, global_mean, reg, reg_bias, dt):
        self.on_u, self.on_i, self.on_mu = user_bias, item_bias, global_mean
        self.any = user_bias or item_bias or global_mean
        self.reg, self.reg_bias = reg, reg_bias
        self.bu = np.zeros(Cm.shape[0], dt)
        self.bi = np.zeros(Cm.shape[1], dt)
        self.mu = 0.0

    def _side(self, Cm, Z, F, b_own, on_own, offset, solver, cg_steps, budget):
        """New ``[factors, own bias]`` of the rows of ``Cm`` given the other side's
        factors ``F`` and the targets' shift ``offset``."""
        k = F.shape[1]
        if on_own:
            F = np.hstack([F, np.ones((F.shape[0], 1), F.dtype)])
            Z = np.hstack([Z, b_own[:, None]])
            reg = np.concatenate([np.full(k, self.reg), [self.reg_bias]])
        else:
            reg = self.reg
        Z = _half_step(Cm, Z, F, reg, solver, cg_steps, budget, offset=offset)
        return (Z[:, :k], Z[:, k].copy()) if on_own else (Z, b_own)

    def sweep(self, Cm, CmT, X, Y, solver, cg_steps, budget):
        t_i = (self.mu + self.bi).astype(Y.dtype)
        X, self.bu = self._side(Cm, X, Y, self.bu, self.on_u, t_i, solver, cg_steps, budget)
        t_u = (self.mu + self.bu).astype(Y.dtype)
        Y, self.bi = self._side(CmT, Y, X, self.bi, self.on_i, t_u, solver, cg_steps, budget)
        if self.on_mu:
            self.mu = self._mu(Cm, X, Y)
        return X, Y

    def _mu(self, Cm, X, Y) -> float:
        """``sum_all c (p - r) / sum_all c`` (module docs)."""
        N, M = Cm.shape
        X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
        bu, bi = self.bu.astype(np.float64), self.bi.astype(np.float64)
        rows = np.repeat(np.arange(N), np.diff(Cm.indptr))
        r_obs = bu[rows] + bi[Cm.indices] + np.einsum("ek,ek->e", X64[rows],
                                                     Y64[Cm.indices])
        w = Cm.data.astype(np.float64) - 1.0
        sum_r = M * bu.sum() + N * bi.sum() + float(X64.sum(0) @ Y64.sum(0))
        num = (Cm.nnz - sum_r) + float(np.sum(w * (1.0 - r_obs)))
        return num / (float(N) * float(M) + float(w.sum()))

    def loss(self, Cm, X, Y, budget) -> float:
        if not self.any:
            return _loss(Cm, X, Y, self.reg, budget)
        one_u = np.ones((X.shape[0], 1), X.dtype)
        one_i = np.ones((Y.shape[0], 1), Y.dtype)
        Xa = np.hstack([X, self.bu[:, None], one_u])
        Ya = np.hstack([Y, one_i, (self.mu + self.bi)[:, None].astype(Y.dtype)])
        X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
        pen = self.reg * float(np.sum(X64 * X64) + np.sum(Y64 * Y64)) + self.reg_bias * float(
            np.sum(self.bu.astype(np.float64) ** 2) + np.sum(self.bi.astype(np.float64) ** 2))
        return _loss(Cm, Xa, Ya, 0.0, budget) + pen
