r"""Bernoulli mixture predictive for 0/1 data:
:math:`P(y=1\mid\mathcal D)=\bar p=\frac1S\sum_s p_s`.

``p_s`` is draw ``s``'s success probability (probit :math:`\Phi(\eta_s)`, logit
:math:`\sigma(\eta_s)`). An equal-weight mixture of Bernoullis is itself Bernoulli with
:math:`\bar p`, so

* mean :math:`\bar p`, variance :math:`\bar p(1-\bar p)`, parameter variance
  :math:`\mathrm{Var}_s(p_s)`;
* CDF :math:`F(x)=0\ (x<0),\ 1-\bar p\ (0\le x<1),\ 1\ (x\ge1)`; quantile
  :math:`F^{-1}(q)=\mathbb 1[1-\bar p<q]`;
* log probability (= minus the log-loss) :math:`y\log\bar p+(1-y)\log(1-\bar p)` with
  :math:`\bar p` clipped to :math:`[10^{-15}, 1-10^{-15}]`;
* CRPS = Brier score :math:`(\bar p-y)^2` (the CRPS integral is non-zero only on
  :math:`[0,1)`, where it equals :math:`(1-\bar p-(1-y))^2`);
* mid-PIT :math:`F(y^-)+\tfrac12 P(y)`: :math:`(1-\bar p)/2` for ``y = 0`` and
  :math:`1-\bar p/2` for ``y = 1``.

The support is ``{0, 1}``; other values raise :class:`~bayesmf.errors.DataError` in
``logpdf``, ``pit`` and ``crps`` (see :mod:`bayesmf.predictive.base`).
"""

from __future__ import annotations

from functools import cached_property

import numpy as np

from bayesmf.errors import DataError
from bayesmf.predictive.base import DiscreteMixture, draw_index, pick_components

__all__ = ["BernoulliMixture"]


class BernoulliMixture(DiscreteMixture):
    """``mean_s Bernoulli(p_s)``; ``p`` is ``(S, ...)`` with values in ``[0, 1]``."""

    def __init__(self, p):
        p = np.asarray(p, np.float64)
        if p.ndim < 1 or p.shape[0] < 1:
            raise DataError(f"p must have a leading draw axis of length >= 1, got {p.shape}")
        if p.size and not (np.all(p >= 0.0) and np.all(p <= 1.0)):  # NaN fails both
            raise DataError("Bernoulli probabilities must lie in [0, 1] (no NaN)")
        self.p = p
        self.support = np.array([0.0, 1.0])

    @property
    def n_components(self) -> int:
        return self.p.shape[0]

    @property
    def shape(self) -> tuple:
        return self.p.shape[1:]

    def take(self, idx) -> "BernoulliMixture":
        return BernoulliMixture(self.p[draw_index(idx, self.n_components)])

    def per_draw(self) -> "BernoulliMixture":
        return BernoulliMixture(self.p[None])

    # ------------------------------------------------------------------ probabilities
    @cached_property
    def _pbar(self) -> np.ndarray:
        return self.p.mean(axis=0)

    def pmf(self) -> np.ndarray:
        r""":math:`P(y=1)=\bar p` (trailing shape)."""
        return self._pbar

    def probs(self) -> np.ndarray:
        r""":math:`[1-\bar p,\ \bar p]`, ``shape + (2,)``."""
        return np.stack([1.0 - self._pbar, self._pbar], axis=-1)

    def component_means(self) -> np.ndarray:
        return self.p

    def mean(self) -> np.ndarray:
        r""":math:`\bar p`."""
        return self._pbar

    def var(self) -> np.ndarray:
        r""":math:`\bar p(1-\bar p)`."""
        return self._pbar * (1.0 - self._pbar)

    def mode(self) -> np.ndarray:
        r""":math:`\mathbb 1[\bar p>1/2]`."""
        return (self._pbar > 0.5).astype(np.float64)

    def crps(self, y, max_draws: int | None = 100) -> np.ndarray:
        r"""Brier score :math:`(\bar p-y)^2` (= the CRPS; ``max_draws`` is ignored)."""
        y = self.support[self.level_index(y)]
        return (self._pbar - y) ** 2

    def sample(self, rng: np.random.Generator, n_draws: int | None = None) -> np.ndarray:
        """``1[U < p[pick]]`` as float64 with ``pick ~ U{0..S-1}`` (``n_draws=None``: one
        value per component)."""
        pick = pick_components(rng, self.n_components, n_draws)
        u = rng.random((len(pick),) + self.shape)
        return (u < self.p[pick]).astype(np.float64)
