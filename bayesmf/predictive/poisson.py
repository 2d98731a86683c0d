r"""Poisson mixture predictive for counts (hierarchical Poisson factorization):
:math:`p(y\mid\mathcal D) = \frac1S\sum_s \mathrm{Poisson}(y;\lambda_s)`.

``rate`` ``(S, ...)`` holds draw ``s``'s Poisson rate :math:`\lambda_s\ge0` of every
entry. The support is the non-negative integers :math:`\{0, 1, 2, \dots\}` (unbounded:
not a :class:`~bayesmf.predictive.base.DiscreteMixture`, whose support is finite), with

* mean :math:`\bar\lambda = \frac1S\sum_s\lambda_s`, variance (law of total variance)
  :math:`\mathrm{Var}_s(\lambda_s) + \bar\lambda`, parameter variance
  :math:`\mathrm{Var}_s(\lambda_s)`;
* pmf :math:`\bar p(k) = \frac1S\sum_s e^{-\lambda_s}\lambda_s^k/k!`, ``logpdf`` its
  log (a log-sum-exp over the draws, clipped below at :math:`\log 10^{-15}` as every
  discrete mixture);
* CDF :math:`F(x) = \frac1S\sum_s P(\mathrm{Poisson}(\lambda_s)\le\lfloor x\rfloor)`
  (0 for :math:`x<0`); ``prob_at_least(t)`` :math:`= \frac1S\sum_s
  P(\mathrm{Poisson}(\lambda_s)\ge\lceil t\rceil)` (1 for :math:`t\le0`), so
  ``prob_at_least(1)`` :math:`= 1 - \frac1S\sum_s e^{-\lambda_s}` is the relevance
  probability of implicit feedback;
* quantile :math:`F^{-1}(q) = \min\{k\in\mathbb N: F(k)\ge q\}` (an integer), found by
  bisection between the smallest and largest component quantiles (which bracket it);
* mid-PIT :math:`F(y-1)+\tfrac12\bar p(y)` (``rng=``: the randomized PIT);
* CRPS :math:`\sum_{k\ge0}(F(k)-\mathbb 1[y\le k])^2` (unit spacing of the integers),
  summed until the upper tail of every used component is below :math:`10^{-12}`;
* ``expect(fn)`` :math:`\sum_k\bar p(k)\,fn(k)` over the same truncated support.

Test values must be non-negative integers (DataError otherwise). Pure numpy/scipy.
"""

from __future__ import annotations

from functools import cached_property

import numpy as np
from scipy.special import gammaln, logsumexp, pdtr, pdtrc

from bayesmf.errors import DataError
from bayesmf.predictive.base import (Mixture, check_q, clip_prob, draw_index,
                                     pick_components)

__all__ = ["PoissonMixture", "TAIL_EPS"]

#: upper-tail mass left out of the truncated sums (CRPS, expect, mode)
TAIL_EPS = 1e-12


def _counts(y) -> np.ndarray:
    """``y`` as float64 non-negative integers, else :class:`DataError`."""
    y = np.asarray(y, np.float64)
    ok = np.isfinite(y) & (y >= 0) & (y == np.floor(y))
    if not np.all(ok):
        bad = np.ravel(y[~ok] if y.ndim else y)[0]
        raise DataError(f"value {bad!r} is not a count (a non-negative integer), the support "
                        "of this PoissonMixture")
    return y


class PoissonMixture(Mixture):
    """``mean_s Poisson(rate_s)``; ``rate`` is ``(S, ...)`` with finite values ``>= 0``."""

    discrete = True
    mean_is_linear = False

    def __init__(self, rate):
        lam = np.asarray(rate, np.float64)
        if lam.ndim < 1 or lam.shape[0] < 1:
            raise DataError(f"rate must have a leading draw axis of length >= 1, got "
                            f"{lam.shape}")
        if lam.size and not (np.all(np.isfinite(lam)) and lam.min() >= 0.0):
            raise DataError("Poisson rates must be finite and >= 0")
        self.rate = lam

    # ------------------------------------------------------------------ structure
    @property
    def n_components(self) -> int:
        return self.rate.shape[0]

    @property
    def shape(self) -> tuple:
        return self.rate.shape[1:]

    def take(self, idx) -> "PoissonMixture":
        return PoissonMixture(self.rate[draw_index(idx, self.n_components)])

    def per_draw(self) -> "PoissonMixture":
        return PoissonMixture(self.rate[None])

    # ------------------------------------------------------------------ moments
    def component_means(self) -> np.ndarray:
        return self.rate

    @cached_property
    def _mean(self) -> np.ndarray:
        return self.rate.mean(axis=0)

    def mean(self) -> np.ndarray:
        r""":math:`\bar\lambda`."""
        return self._mean

    def var(self) -> np.ndarray:
        r""":math:`\mathrm{Var}_s(\lambda_s) + \bar\lambda`."""
        return self.rate.var(axis=0) + self._mean

    # ------------------------------------------------------------------ distribution
    def pmf(self, y) -> np.ndarray:
        r""":math:`\bar p(y) = \frac1S\sum_s e^{-\lambda_s}\lambda_s^y/y!` (``y`` counts,
        broadcast against the trailing shape)."""
        return np.exp(self._log_pmf(_counts(y)))

    def _log_pmf(self, y) -> np.ndarray:
        lam = self.rate
        with np.errstate(divide="ignore", invalid="ignore"):
            lp = np.where(lam > 0, y * np.log(np.where(lam > 0, lam, 1.0)), 0.0)
        lp = np.where((lam == 0) & (y > 0), -np.inf, lp) - lam - gammaln(y + 1.0)
        return logsumexp(lp, axis=0) - np.log(self.n_components)

    def logpdf(self, y) -> np.ndarray:
        r"""Log probability mass :math:`\log\bar p(y)`, exact (log-sum-exp over the
        components, so a large count far in the tail keeps its value: the unbounded
        support has no natural floor, and ArviZ's PSIS-LOO needs the exact tail). Only an
        impossible count (every rate 0 and ``y > 0``) is floored at
        :math:`\log 10^{-15}`, the discrete mixtures' cost of an impossible outcome.
        ``y`` must be a count (else DataError)."""
        lp = self._log_pmf(_counts(y))
        return np.where(np.isneginf(lp), np.log(clip_prob(0.0)), lp)

    def _cdf_k(self, k) -> np.ndarray:
        """:math:`F(k)` for integer-valued ``k`` (any sign), broadcast."""
        k = np.asarray(k, np.float64)
        kk = np.maximum(k, 0.0)
        out = pdtr(kk, self.rate).mean(axis=0)
        return np.where(k < 0, 0.0, out)

    def cdf(self, x) -> np.ndarray:
        r""":math:`F(x)=\frac1S\sum_s P(\mathrm{Poisson}(\lambda_s)\le\lfloor x\rfloor)`
        for any real ``x``."""
        return self._cdf_k(np.floor(np.asarray(x, np.float64)))

    def prob_at_least(self, t) -> np.ndarray:
        r""":math:`P(Y\ge t) = \frac1S\sum_s P(\mathrm{Poisson}(\lambda_s) >
        \lceil t\rceil - 1)` (1 for :math:`t\le0`); ``t = 1``: :math:`1-\frac1S\sum_s
        e^{-\lambda_s}`."""
        k = np.ceil(np.asarray(t, np.float64)) - 1.0
        out = pdtrc(np.maximum(k, 0.0), self.rate).mean(axis=0)
        return np.where(k < 0, 1.0, out)

    def bound(self, q, noise: bool = True) -> np.ndarray:
        r"""UCB / LCB **on the rate**: the quantile of :math:`\lambda_s` over the draws
        (linear interpolation), whatever ``noise`` says. A count quantile is an integer,
        so most items would tie at the same bound; the rate is what exploration is
        uncertain about (Gopalan et al.'s model; issue 14)."""
        return np.quantile(self.rate, check_q(q), axis=0)

    def quantile(self, q) -> np.ndarray:
        r"""Smallest count :math:`k` with :math:`F(k)\ge q` (float64 array of integers):
        bisection on the integers between the smallest and the largest component
        quantile."""
        from scipy.stats import poisson

        q = check_q(q)
        comp = poisson.ppf(q, self.rate)
        lo = comp.min(axis=0)
        hi = comp.max(axis=0)
        while np.any(hi > lo):
            mid = np.floor((lo + hi) / 2.0)
            ok = self._cdf_k(mid) >= q
            hi = np.where(ok, mid, hi)
            lo = np.where(ok, lo, mid + 1.0)
        return np.asarray(lo, np.float64)

    def mode(self) -> np.ndarray:
        """The most probable count (the lowest on ties)."""
        ks = self._grid()
        best = np.full(self.shape, -np.inf)
        arg = np.zeros(self.shape)
        for k in ks:
            lp = self._log_pmf(np.full(self.shape, k))
            better = lp > best
            best = np.where(better, lp, best)
            arg = np.where(better, k, arg)
        return arg

    def _grid(self, y=None) -> np.ndarray:
        """``0..K``: ``K`` the count above which every component's tail is below
        :data:`TAIL_EPS` (and at least ``max(y)``)."""
        from scipy.stats import poisson

        top = float(poisson.isf(TAIL_EPS, self.rate.max())) if self.rate.size else 0.0
        if y is not None and np.size(y):
            top = max(top, float(np.max(y)))
        return np.arange(0.0, top + 1.0)

    def pit(self, y, rng=None) -> np.ndarray:
        r"""Mid-PIT :math:`F(y-1)+\tfrac12\bar p(y)`; with a generator ``rng`` the
        randomized PIT :math:`F(y-1)+V\bar p(y)`."""
        y = _counts(y)
        below = self._cdf_k(y - 1.0)
        p = np.exp(self._log_pmf(y))
        if rng is None:
            return below + 0.5 * p
        return below + rng.random(np.shape(p)) * p

    def crps(self, y, max_draws: int | None = 100) -> np.ndarray:
        r""":math:`\sum_{k\ge0}(F(k)-\mathbb 1[y\le k])^2` over the truncated support
        (module docs); ``max_draws`` evenly spaced draws (all when None)."""
        from bayesmf.predictive.gaussian import thin_index

        y = _counts(y)
        mix = self.take(thin_index(self.n_components, max_draws)) \
            if max_draws is not None and self.n_components > max_draws else self
        out = np.zeros(np.broadcast_shapes(np.shape(y), self.shape))
        for k in mix._grid(y):
            out = out + (mix._cdf_k(np.full(self.shape, k)) - (y <= k)) ** 2
        return out

    def crps_components(self, max_draws: int | None = 100) -> int:
        if max_draws is None:
            return self.n_components
        return min(self.n_components, int(max_draws))

    def sample(self, rng: np.random.Generator, n_draws: int | None = None) -> np.ndarray:
        """``Poisson(rate[pick])`` as float64 with ``pick ~ U{0..S-1}`` (``n_draws=None``:
        one value per component)."""
        pick = pick_components(rng, self.n_components, n_draws)
        return rng.poisson(self.rate[pick]).astype(np.float64)

    def expect(self, fn, n_nodes: int = 20) -> np.ndarray:
        r""":math:`\sum_k\bar p(k)\,fn(k)` over the truncated support (``n_nodes`` is
        ignored); ``fn`` is called with arrays of the trailing shape filled with one
        count."""
        acc = np.zeros(self.shape)
        for k in self._grid():
            kk = np.full(self.shape, k)
            acc = acc + np.exp(self._log_pmf(kk)) * np.asarray(fn(kk), np.float64)
        return acc
