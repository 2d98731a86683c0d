r"""Products with a side-feature matrix :math:`X` ``(n, F)``, shared by the Macau Gibbs
steps (:mod:`bayesmf.infer.gibbs_steps`) and the MAP link update (:mod:`bayesmf.infer.map`).

A feature holder is any object with the fields ``X, rows, cols, vals``: ``X`` dense (a JAX
or numpy array, or a scipy sparse matrix on the numpy engine), or ``X`` None and the COO
triplets ``rows, cols, vals`` of a sparse :math:`X` in JAX, whose products are segment sums
over the non-zeros (``O(nnz k)``; :math:`X` is never densified).
"""

from __future__ import annotations

import jax

__all__ = ["feature_matmul", "feature_tmatmul"]


def feature_matmul(f, B, n: int):
    """:math:`XB` ``(n, k)`` for ``B (F, k)``."""
    if f.X is not None:
        return f.X @ B
    return jax.ops.segment_sum(f.vals[:, None] * B[f.cols], f.rows, num_segments=n)


def feature_tmatmul(f, R, n_features: int):
    r""":math:`X^\top R` ``(F, k)`` for ``R (n, k)``."""
    if f.X is not None:
        return f.X.T @ R
    return jax.ops.segment_sum(f.vals[:, None] * R[f.rows], f.cols, num_segments=n_features)
