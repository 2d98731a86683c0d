"""Planted side-information data shared by the Macau tests (Gibbs, MAP, NumPyro).

Factors are linear in the features plus small noise, ``U = X_u B_u + 0.3 e``,
``V = X_i B_i + 0.3 e``; ratings ``r = 3 + U_u . V_i + 0.5 e`` on a random ``density``
share of the ``n x m`` pairs. The last ``n_cold`` items are the cold ones (each test file
holds their ratings out in its own way)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmf.data.features import Features


def frame(side, ids, X):
    """A feature DataFrame: the id column ``side`` and ``x0..x{F-1}``."""
    return pd.DataFrame({side: ids, **{f"x{j}": X[:, j] for j in range(X.shape[1])}})


def planted_macau(seed: int, n: int, m: int, density: float, k: int = 2, f: int = 3,
                  n_cold: int = 12) -> dict:
    """The planted arrays (``Xu, Xi, Bu, Bi, U, V``, pairs ``uu, ii, r``, the ``cold``
    mask of pairs on the last ``n_cold`` items), the ``Features`` of both sides (``uf``,
    ``itf``) and ``rng`` (the generator after the draws, for further random splits)."""
    rng = np.random.default_rng(seed)
    Xu, Xi = rng.normal(size=(n, f)), rng.normal(size=(m, f))
    Bu, Bi = rng.normal(size=(f, k)), rng.normal(size=(f, k))
    U = Xu @ Bu + 0.3 * rng.normal(size=(n, k))
    V = Xi @ Bi + 0.3 * rng.normal(size=(m, k))
    uu, ii = np.nonzero(rng.random((n, m)) < density)
    r = 3.0 + np.sum(U[uu] * V[ii], 1) + 0.5 * rng.normal(size=uu.size)
    return dict(Xu=Xu, Xi=Xi, Bu=Bu, Bi=Bi, U=U, V=V, uu=uu, ii=ii, r=r,
                cold=ii >= m - n_cold, rng=rng,
                uf=Features.from_frame(frame("user", np.arange(n), Xu)),
                itf=Features.from_frame(frame("item", np.arange(m), Xi)))
