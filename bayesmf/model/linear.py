r"""The linear predictor, the one copy of it that every other module calls.

.. math::

    \eta_{ui} = \mu + b_u + b_i + U_u^\top V_i

* :func:`eta` -- one parameter set at index pairs, in the array namespace of the
  parameters (JAX inside compiled samplers and solvers, numpy in the compile-free ALS
  engine);
* :func:`eta_draws` -- every draw at index pairs, ``(S, n)`` float64 (numpy);
* :func:`block_eta` -- every draw for a block of users against candidate items,
  ``(S, rows, cols)`` (recommendation);
* :func:`population_moments` / :func:`pair_moments` -- the unknown-id fallback;
* :func:`full_moments` -- :math:`\sum\eta` and :math:`\sum\eta^2` over the whole
  ``N x M`` matrix in closed form (full-matrix likelihoods: implicit feedback).

**Unknown ids.** An unknown user is treated as a random member of the training
population: per draw its augmented vector :math:`a_u = [b_u, U_u]` is replaced by the
population mean and covariance :math:`(\bar a_s, \Sigma_s)`, so :math:`\eta` gets mean
:math:`m_s = \mu_s + b_{i,s} + \bar a_s^\top x_{i,s}` and extra variance
:math:`v_s = x_{i,s}^\top \Sigma_s x_{i,s}` with :math:`x_i = [1, V_i]` (items alike).
Both unknown (independent population members):
:math:`m = \mu + \bar b_u + \bar b_i + \bar U^\top\bar V` and
:math:`v = \mathrm{Var}\,b_u + \mathrm{Var}\,b_i + \mathrm{tr}(C_U C_V) + \bar U^\top C_V \bar U
+ \bar V^\top C_U \bar V + 2\,\mathrm{Cov}(b_u, U)^\top \bar V + 2\,\mathrm{Cov}(b_i, V)^\top \bar U`.
The likelihood turns :math:`(m_s, v_s)` into its predictive
(:meth:`bayesmf.model.likelihoods.Likelihood.predictive`).
"""

from __future__ import annotations

import numpy as np

from bayesmf._xp import array_namespace

__all__ = ["eta", "eta_draws", "block_eta", "population_moments", "pair_moments",
           "full_moments"]


def eta(mu, bu, bi, U, V, users, items):
    """:math:`\\eta = \\mu + b_u + b_i + U_u\\cdot V_i` of one parameter set at index arrays
    ``users``, ``items`` (numpy or JAX, following ``U``)."""
    if array_namespace(U) is np:  # take: 3x faster than fancy indexing; einsum: one pass
        dot = np.einsum("...k,...k->...", np.take(U, users, axis=0), np.take(V, items, axis=0))
    else:
        import jax.numpy as jnp

        dot = jnp.sum(U[users] * V[items], axis=-1)
    return mu + bu[users] + bi[items] + dot


def full_moments(mu, bu, bi, U, V):
    r"""``(sum_eta, sum_eta2)`` over all ``N x M`` pairs without forming them:
    :math:`\sum_{u,i}\eta_{ui} = M\sum_u(\mu + b_u) + N\sum_i b_i + (\sum_u U_u)^\top
    (\sum_i V_i)` and, with :math:`A_u = (\mu + b_u, 1, U_u)` and
    :math:`B_i = (1, b_i, V_i)` (so :math:`\eta_{ui} = A_u^\top B_i`),
    :math:`\sum_{u,i}\eta_{ui}^2 = \langle A^\top A, B^\top B\rangle`
    (elementwise product summed). Cost :math:`O((N + M)k^2)`; numpy or JAX."""
    xp = array_namespace(U)
    N, M = bu.shape[0], bi.shape[0]
    a = mu + bu
    s1 = M * xp.sum(a) + N * xp.sum(bi) + xp.sum(xp.sum(U, axis=0) * xp.sum(V, axis=0))
    A = xp.concatenate([a[:, None], xp.ones((N, 1), U.dtype), U], axis=1)
    B = xp.concatenate([xp.ones((M, 1), V.dtype), bi[:, None], V], axis=1)
    s2 = xp.sum((A.T @ A) * (B.T @ B))
    return s1, s2


def eta_draws(draws: dict, u, i) -> np.ndarray:
    """Every draw's :math:`\\eta` at known index pairs, ``(S, n)`` float64; ``draws`` maps
    ``mu, bu, bi, U, V`` to flat ``(S, ...)`` arrays."""
    m = (draws["mu"].astype(np.float64)[:, None] + draws["bu"][:, u] + draws["bi"][:, i])
    if draws["U"].shape[-1]:
        m = m + np.einsum("snk,snk->sn", draws["U"][:, u], draws["V"][:, i], dtype=np.float64)
    return m


def block_eta(mu, b_rows, bi, F_rows, V):
    """``(S, rows, cols)`` :math:`\\eta` of a block of rows (per-draw biases ``b_rows (S,
    rows)`` and factors ``F_rows (S, rows, k)``) against items ``bi (S, cols)``,
    ``V (S, cols, k)``."""
    m = mu[:, None, None] + b_rows[:, :, None] + bi[:, None, :]
    if F_rows.shape[-1]:
        m = m + np.matmul(F_rows, V.transpose(0, 2, 1))
    return m


def population_moments(bu, bi, U, V) -> dict:
    """Per draw, the mean ``(S, k+1)`` and covariance ``(S, k+1, k+1)`` of the augmented
    user vectors :math:`[b_u, U_u]` and item vectors :math:`[b_i, V_i]` (flat draws)."""
    out = {}
    for side, b, F in (("user", bu, U), ("item", bi, V)):
        A = np.concatenate([b[..., None], F], axis=-1).astype(np.float64)  # S, n, k+1
        mean = A.mean(axis=1)
        Ac = A - mean[:, None, :]
        cov = np.einsum("snk,snl->skl", Ac, Ac) / max(A.shape[1], 1)
        out[side] = (mean, cov)
    return out


def pair_moments(draws: dict, u, i, ku, ki, pop: dict | None = None):
    """Per-draw mean ``m (S, n)`` and extra variance ``v (S, n)`` of :math:`\\eta` for index
    pairs (module docs); rows with ``ku``/``ki`` False use the population fallback
    ``pop`` (:func:`population_moments`). Materialises ``S x n`` float64 arrays."""
    S, n = draws["mu"].shape[0], len(u)
    m = np.broadcast_to(draws["mu"].astype(np.float64)[:, None], (S, n)).copy()
    v = np.zeros((S, n))
    uu = np.where(ku, u, 0)
    ii = np.where(ki, i, 0)
    both = ku & ki
    if both.any():
        m[:, both] = eta_draws(draws, uu[both], ii[both])
    if both.all():
        return m, v
    pop_u_mean, pop_u_cov = pop["user"]
    pop_i_mean, pop_i_cov = pop["item"]
    for sel, kidx, pmean, pcov, b_name, F_name in (
            (~ku & ki, ii, pop_u_mean, pop_u_cov, "bi", "V"),
            (ku & ~ki, uu, pop_i_mean, pop_i_cov, "bu", "U")):
        if not sel.any():
            continue
        idx = kidx[sel]
        x = np.concatenate([np.ones((S, len(idx), 1)),
                            draws[F_name][:, idx].astype(np.float64)], axis=-1)
        m[:, sel] += draws[b_name][:, idx].astype(np.float64)
        m[:, sel] += np.einsum("sk,snk->sn", pmean, x)
        v[:, sel] += np.einsum("snk,skl,snl->sn", x, pcov, x)
    cb = ~ku & ~ki
    if cb.any():
        bu_m, U_m = pop_u_mean[:, 0], pop_u_mean[:, 1:]
        bi_m, V_m = pop_i_mean[:, 0], pop_i_mean[:, 1:]
        CU, CV = pop_u_cov[:, 1:, 1:], pop_i_cov[:, 1:, 1:]
        mean = bu_m + bi_m + np.einsum("sk,sk->s", U_m, V_m)
        var = (pop_u_cov[:, 0, 0] + pop_i_cov[:, 0, 0]
               + np.einsum("skl,slk->s", CU, CV)
               + np.einsum("sk,skl,sl->s", U_m, CV, U_m)
               + np.einsum("sk,skl,sl->s", V_m, CU, V_m)
               + 2 * np.einsum("sk,sk->s", pop_u_cov[:, 0, 1:], V_m)
               + 2 * np.einsum("sk,sk->s", pop_i_cov[:, 0, 1:], U_m))
        m[:, cb] += mean[:, None]
        v[:, cb] += var[:, None]
    return m, v
