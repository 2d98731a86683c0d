r"""Categorical mixture predictive over ordered numeric rating levels (ordered probit).

Draw ``s`` gives probabilities :math:`p_{s,j}` over the ``K`` ordered levels
:math:`l_1<\dots<l_K` (e.g. 1..5 stars or 0.5..5 in half steps); for the ordered probit
:math:`p_{s,j}=\Phi(c_{s,j}-\eta_s)-\Phi(c_{s,j-1}-\eta_s)`. The mixture is the
categorical distribution with :math:`\bar p_j=\frac1S\sum_s p_{s,j}`:

* mean (the *expected rating*) :math:`\sum_j\bar p_j l_j`, variance
  :math:`\sum_j\bar p_j(l_j-\mathbb E y)^2`, parameter variance
  :math:`\mathrm{Var}_s(\sum_j p_{s,j}l_j)`;
* CDF, quantile, mid-PIT, log probability and the CRPS (= ranked probability score in
  level units :math:`\sum_{j<K}(F(l_j)-\mathbb 1[y\le l_j])^2(l_{j+1}-l_j)`) as in
  :class:`~bayesmf.predictive.base.DiscreteMixture`.

Test values must be levels (DataError otherwise).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from bayesmf.errors import DataError, SpecError
from bayesmf.predictive.base import DiscreteMixture, draw_index, pick_components

__all__ = ["CategoricalMixture", "check_levels"]


def check_levels(levels) -> np.ndarray:
    """Ordered numeric levels: 1-D, finite, strictly increasing, float64."""
    lv = np.asarray(levels, np.float64)
    if lv.ndim != 1 or lv.size < 1:
        raise SpecError(f"levels must be a non-empty 1-D array, got shape {lv.shape}")
    if not np.all(np.isfinite(lv)) or np.any(np.diff(lv) <= 0):
        raise SpecError(f"levels must be finite and strictly increasing, got {lv.tolist()}")
    return lv


class CategoricalMixture(DiscreteMixture):
    """``mean_s Categorical(probs_s)`` over ordered ``levels``.

    Parameters
    ----------
    probs : array ``(S, ..., K)``
        Per-draw probabilities of the ``K`` levels (last axis). Each row must be
        non-negative (``>= -1e-12``) and sum to 1 within ``1e-6``; rows are then clipped
        at 0 and renormalised.
    levels : array ``(K,)``
        The numeric value of each level, strictly increasing.
    """

    def __init__(self, probs, levels):
        P = np.asarray(probs, np.float64)
        lv = check_levels(levels)
        if P.ndim < 2 or P.shape[0] < 1:
            raise DataError(f"probs must be (S, ..., K) with S >= 1, got {P.shape}")
        if P.shape[-1] != len(lv):
            raise DataError(f"probs have {P.shape[-1]} levels on the last axis but "
                            f"{len(lv)} levels were given")
        if P.size:
            if not np.all(np.isfinite(P)) or P.min() < -1e-12:
                raise DataError("categorical probabilities must be finite and >= 0")
            tot = P.sum(axis=-1, keepdims=True)
            if np.abs(tot - 1.0).max() > 1e-6:
                raise DataError("categorical probabilities must sum to 1 over the levels "
                                f"(worst row sums to {float(tot.flat[np.abs(tot - 1).argmax()])})")
            P = np.clip(P, 0.0, None) / tot
        self.probs_draws = P
        self.support = lv
        self.levels = lv

    @property
    def n_components(self) -> int:
        return self.probs_draws.shape[0]

    @property
    def shape(self) -> tuple:
        return self.probs_draws.shape[1:-1]

    @classmethod
    def _validated(cls, P, levels) -> "CategoricalMixture":
        """A mixture of already validated and normalised probabilities (no copy)."""
        out = cls.__new__(cls)
        out.probs_draws, out.support, out.levels = P, levels, levels
        return out

    def take(self, idx) -> "CategoricalMixture":
        return self._validated(self.probs_draws[draw_index(idx, self.n_components)],
                               self.levels)

    def per_draw(self) -> "CategoricalMixture":
        return self._validated(self.probs_draws[None], self.levels)

    @cached_property
    def _pbar(self) -> np.ndarray:
        return self.probs_draws.mean(axis=0)

    def probs(self) -> np.ndarray:
        r""":math:`\bar p`, ``shape + (K,)``."""
        return self._pbar

    @cached_property
    def _comp_means(self) -> np.ndarray:
        return self.probs_draws @ self.levels

    def component_means(self) -> np.ndarray:
        r"""Expected level of each draw :math:`\sum_j p_{s,j}l_j`, ``(S,) + shape``."""
        return self._comp_means

    def sample(self, rng: np.random.Generator, n_draws: int | None = None) -> np.ndarray:
        """Inverse-CDF draws: ``pick ~ U{0..S-1}``, ``U ~ U(0,1)``, the first level whose
        component CDF exceeds ``U`` (``n_draws=None``: one value per component)."""
        pick = pick_components(rng, self.n_components, n_draws)
        u = rng.random((len(pick),) + self.shape)
        cum = np.cumsum(self.probs_draws[pick], axis=-1)
        j = np.minimum((cum <= u[..., None]).sum(axis=-1), self.n_levels - 1)
        return self.levels[j]
