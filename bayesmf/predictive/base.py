r"""The :class:`Mixture` protocol: a posterior predictive as an equal-weight mixture.

Every posterior predictive in bayesmf is an equal-weight mixture over the ``S`` posterior
draws,

.. math::

    p(y\mid\mathcal D) = \frac1S\sum_{s=1}^S p_s(y),\qquad
    F(y) = \frac1S\sum_s F_s(y),

with one component :math:`p_s` per draw (a Gaussian, a Bernoulli, a categorical
distribution over ordered rating levels). All arrays carry a leading draw axis ``S`` and
any trailing shape (pairs ``(S, n)``, a user block x items ``(S, rows, cols)``); every
summary has the trailing shape.

Moments (law of total variance):

.. math::

    \mathbb E[y] = \frac1S\sum_s \mu_s,\qquad
    \mathrm{Var}[y] = \underbrace{\mathrm{Var}_s(\mu_s)}_{\text{parameter}}
                    + \underbrace{\frac1S\sum_s\sigma_s^2}_{\text{within draws}}

where :math:`\mu_s, \sigma_s^2` are the mean and variance of component ``s``.

Discrete mixtures (:class:`DiscreteMixture`) live on an ordered finite ``support``
:math:`l_1<\dots<l_K` with averaged probabilities :math:`\bar p_j=\frac1S\sum_s p_{s,j}`:

* ``cdf`` :math:`F(x)=\sum_{l_j\le x}\bar p_j` (right-continuous step function),
* ``quantile`` :math:`F^{-1}(q)=\min\{l_j: F(l_j)\ge q\}`,
* ``logpdf`` the log probability **mass** :math:`\log\bar p_j` of ``y = l_j``;
  probabilities are clipped to ``[PROB_EPS, 1 - PROB_EPS]`` (``1e-15``) before the log so
  that an impossible outcome costs a finite :math:`-\log 10^{-15}\approx 34.5` nats,
* ``pit`` the **mid-PIT** :math:`F(y^-)+\tfrac12\bar p(y)` (its mean is 1/2 under
  calibration; ``rng=`` gives the randomized PIT :math:`F(y^-)+V\bar p(y)`,
  :math:`V\sim U(0,1)`, which is exactly uniform under calibration -- Czado, Gneiting &
  Held 2009),
* ``crps`` :math:`\int(F(x)-\mathbb 1[x\ge y])^2dx=\sum_{j<K}(F(l_j)-\mathbb 1[y\le l_j])^2
  (l_{j+1}-l_j)`, the ranked probability score in level units,
* central intervals ``[F^{-1}((1-\ell)/2), F^{-1}((1+\ell)/2)]`` contain at least a
  fraction :math:`\ell` of the mass and usually more: discrete intervals **over-cover**.

A value outside the support given to ``logpdf``, ``pit`` or ``crps`` raises
:class:`~bayesmf.errors.DataError` (a wrong encoding of the test data is an error, not an
event of probability zero); ``cdf`` and ``prob_at_least`` accept any real value.

This module is pure numpy/scipy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property

import numpy as np
from scipy.special import ndtri

from bayesmf.errors import DataError, SpecError

__all__ = ["Mixture", "DiscreteMixture", "PROB_EPS", "clip_prob"]

#: probabilities are clipped to ``[PROB_EPS, 1 - PROB_EPS]`` before taking logs
PROB_EPS = 1e-15


def clip_prob(p):
    """``clip(p, PROB_EPS, 1 - PROB_EPS)`` in float64 (before any log)."""
    return np.clip(np.asarray(p, np.float64), PROB_EPS, 1.0 - PROB_EPS)


def check_q(q) -> float:
    """A scalar probability level in ``(0, 1)``."""
    if np.ndim(q) != 0:
        raise SpecError(f"quantile level must be a scalar, got shape {np.shape(q)}")
    q = float(q)
    if not 0.0 < q < 1.0:
        raise SpecError(f"quantile level must lie in (0, 1), got {q}")
    return q


def check_level(level) -> float:
    """A central-interval probability in ``(0, 1)``."""
    if np.ndim(level) != 0 or not 0.0 < float(level) < 1.0:
        raise SpecError(f"interval level must be a scalar in (0, 1), got {level!r}")
    return float(level)


def pick_components(rng, S: int, n_draws):
    """Component of each sampled value: ``arange(S)`` for ``n_draws=None``, else
    ``rng.integers(0, S, n_draws)``."""
    if n_draws is None:
        return np.arange(S)
    n_draws = int(n_draws)
    if n_draws < 1:
        raise SpecError("n_draws must be >= 1")
    return rng.integers(0, S, size=n_draws)


def draw_index(idx, S: int) -> np.ndarray:
    """Validated 1-D integer draw indices for :meth:`Mixture.take`."""
    idx = np.atleast_1d(np.asarray(idx))
    if idx.ndim != 1 or idx.size == 0:
        raise SpecError("take() needs a non-empty 1-D array of draw indices")
    if idx.dtype == bool:
        if len(idx) != S:
            raise SpecError(f"boolean draw mask of length {len(idx)} for {S} draws")
        idx = np.flatnonzero(idx)
        if idx.size == 0:
            raise SpecError("take() selected no draw")
    elif idx.dtype.kind not in "iu":
        raise SpecError(f"draw indices must be integers, got dtype {idx.dtype}")
    if idx.min() < -S or idx.max() >= S:
        raise SpecError(f"draw index out of range for {S} draws")
    return idx.astype(np.int64)


class Mixture(ABC):
    """An equal-weight mixture over ``S`` posterior draws (see module docs).

    Class attributes: ``discrete`` (finite support) and ``mean_is_linear`` (ranking by
    the predictive mean equals ranking by the mean linear predictor, which lets top-k use
    a GEMM; true only for the Gaussian).
    """

    discrete: bool = False
    mean_is_linear: bool = False

    # ------------------------------------------------------------------ structure
    @property
    @abstractmethod
    def n_components(self) -> int:
        """Number of mixture components ``S`` (posterior draws)."""

    @property
    @abstractmethod
    def shape(self) -> tuple:
        """Trailing shape of every summary (the components have ``(S,) + shape``)."""

    @abstractmethod
    def take(self, idx) -> "Mixture":
        """The equal-weight mixture of the selected draws ``idx`` (1-D integer indices or
        a boolean mask over the draws)."""

    @abstractmethod
    def per_draw(self) -> "Mixture":
        """Each draw as its own one-component distribution: a mixture with
        ``n_components == 1`` and trailing shape ``(S,) + shape``. Vectorised equivalent
        of ``[self.take([s]) for s in range(S)]`` (per-draw metrics)."""

    # ------------------------------------------------------------------ moments
    @abstractmethod
    def component_means(self) -> np.ndarray:
        r"""Per-draw means :math:`\mu_s`, ``(S,) + shape``."""

    @abstractmethod
    def mean(self) -> np.ndarray:
        r"""Predictive mean :math:`\frac1S\sum_s\mu_s`."""

    @abstractmethod
    def var(self) -> np.ndarray:
        r"""Total predictive variance :math:`\mathrm{Var}_s(\mu_s)+\overline{\sigma_s^2}`."""

    #: ``(S,) + shape`` or None: parameter variance *inside* each component that its mean
    #: does not show -- the population fallback of an unknown id, whose spread of
    #: :math:`\eta` a discrete family folds into each draw's distribution
    #: (:meth:`bayesmf.model.likelihoods.base.Likelihood.fallback_param_var`)
    #: (set as an array, or as a function computed on first use: the quadrature costs a
    #: few evaluations of the family per pair and is only needed by ``param_var``)
    extra_param_var = None

    def param_var(self) -> np.ndarray:
        r"""Parameter variance :math:`\mathrm{Var}_s(\mu_s)` plus the mean of
        :attr:`extra_param_var` when set (the Gaussian adds its ``param_var``)."""
        pv = self.component_means().var(axis=0)
        extra = self.extra_param_var
        if callable(extra):
            extra = self.extra_param_var = extra()
        if extra is not None:
            pv = pv + np.asarray(extra).mean(axis=0)
        return pv

    def std(self) -> np.ndarray:
        """``sqrt(var())``."""
        return np.sqrt(self.var())

    # ------------------------------------------------------------------ distribution
    @abstractmethod
    def cdf(self, x) -> np.ndarray:
        """``F(x) = P(Y <= x)``; ``x`` broadcasts against the trailing shape."""

    @abstractmethod
    def logpdf(self, y) -> np.ndarray:
        """Log density (continuous) or log probability mass (discrete) of ``y``."""

    @abstractmethod
    def quantile(self, q) -> np.ndarray:
        """Quantile ``F^{-1}(q)`` for a scalar ``q`` in ``(0, 1)``."""

    def interval(self, level: float, **kwargs):
        r"""Central interval ``(F^{-1}((1-level)/2), F^{-1}((1+level)/2))``; ``kwargs``
        go to :meth:`quantile`."""
        level = check_level(level)
        return (self.quantile((1.0 - level) / 2.0, **kwargs),
                self.quantile((1.0 + level) / 2.0, **kwargs))

    def bound(self, q, noise: bool = True) -> np.ndarray:
        r"""What an upper / lower confidence strategy (``"ucb"``, ``"lcb"``) scores at
        level ``q``: the predictive :meth:`quantile` (``noise=True``), or the quantile of
        the per-draw expected values :meth:`component_means` over the draws
        (``noise=False``: parameter uncertainty only, linear interpolation). Families
        whose natural bound is on the parameter override it (Poisson: the rate)."""
        if noise:
            return self.quantile(q)
        return np.quantile(self.component_means(), check_q(q), axis=0)

    def gaussian_quantile(self, q) -> np.ndarray:
        r"""Quantile of the moment-matched Gaussian
        :math:`\mathbb E[y]+\Phi^{-1}(q)\sqrt{\mathrm{Var}[y]}` (``quantile_method=
        "gaussian"`` of the scoring strategies)."""
        return self.mean() + ndtri(check_q(q)) * np.sqrt(self.var())

    @abstractmethod
    def prob_at_least(self, t) -> np.ndarray:
        """``P(Y >= t)``."""

    @abstractmethod
    def crps(self, y, max_draws: int | None = 100) -> np.ndarray:
        r"""Continuous ranked probability score :math:`\int(F(x)-\mathbb 1[x\ge y])^2dx`
        (lower is better)."""

    def crps_components(self, max_draws: int | None = 100) -> int:
        """Number of draws :meth:`crps` uses with this ``max_draws`` (all, unless the
        mixture thins them)."""
        return self.n_components

    @abstractmethod
    def pit(self, y, rng=None) -> np.ndarray:
        """Probability integral transform of ``y``."""

    @abstractmethod
    def sample(self, rng: np.random.Generator, n_draws: int | None = None) -> np.ndarray:
        """``n_draws`` independent draws from the mixture, ``(n_draws,) + shape``: pick a
        component uniformly, then draw from it. ``n_draws=None``: one draw from each
        component in order, ``(S,) + shape`` (one future value per posterior draw)."""

    @abstractmethod
    def expect(self, fn, n_nodes: int = 20) -> np.ndarray:
        """``E[fn(Y)]`` for an elementwise ``fn(array) -> array``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_components={self.n_components}, shape={self.shape})"


class DiscreteMixture(Mixture):
    """Common machinery of mixtures on an ordered finite ``support`` (see module docs).

    Subclasses set ``self.support`` (``(K,)`` float64, strictly increasing) and implement
    :meth:`probs` (the averaged probabilities ``(..., K)``), :meth:`component_means`,
    :meth:`take`, :meth:`per_draw` and :meth:`sample`.
    """

    discrete = True
    mean_is_linear = False
    support: np.ndarray

    @abstractmethod
    def probs(self) -> np.ndarray:
        r"""Averaged probabilities :math:`\bar p_j = \frac1S\sum_s p_{s,j}`, ``shape + (K,)``."""

    def pmf(self) -> np.ndarray:
        """The mixture's probabilities (``shape + (K,)``; Bernoulli: ``P(y = 1)``)."""
        return self.probs()

    @property
    def n_levels(self) -> int:
        return len(self.support)

    # ------------------------------------------------------------------ cached tables
    @cached_property
    def _cumz(self) -> np.ndarray:
        """``[0, F(l_1), ..., F(l_K)]`` with ``F(l_K) = 1`` exactly, ``shape + (K+1,)``:
        ``_cumz[..., j] = P(Y < l_{j+1}) = sum_{i<j} p_i``."""
        P = self.probs()
        cz = np.zeros(P.shape[:-1] + (P.shape[-1] + 1,))
        np.cumsum(P, axis=-1, out=cz[..., 1:])
        np.clip(cz, 0.0, 1.0, out=cz)
        cz[..., -1] = 1.0
        return cz

    @cached_property
    def _tailz(self) -> np.ndarray:
        """``_tailz[..., j] = P(Y >= l_{j+1}) = sum_{i>=j} p_i`` (``_tailz[..., K] = 0``,
        ``_tailz[..., 0] = 1``), summed from the top to avoid ``1 - F`` cancellation."""
        P = self.probs()
        tz = np.zeros(P.shape[:-1] + (P.shape[-1] + 1,))
        np.cumsum(P[..., ::-1], axis=-1, out=tz[..., -2::-1])
        np.clip(tz, 0.0, 1.0, out=tz)
        tz[..., 0] = 1.0
        return tz

    def _gather(self, table, j):
        """``table[..., j]`` with ``j`` broadcast against the trailing shape."""
        j = np.asarray(j, np.int64)
        B = np.broadcast_shapes(j.shape, table.shape[:-1])
        t = np.broadcast_to(table, B + table.shape[-1:])
        return np.take_along_axis(t, np.broadcast_to(j, B)[..., None], axis=-1)[..., 0]

    def level_index(self, y) -> np.ndarray:
        """Index ``j`` of each ``y`` in the support (``|y - l_j| <= 1e-9 max(1, |l_j|)``);
        :class:`~bayesmf.errors.DataError` for any other value (NaN included)."""
        y = np.asarray(y, np.float64)
        lv = self.support
        K = len(lv)
        j = np.clip(np.searchsorted(lv, y, side="left"), 0, K - 1)
        jm = np.maximum(j - 1, 0)
        j = np.where(np.abs(lv[jm] - y) < np.abs(lv[j] - y), jm, j)
        ok = np.abs(lv[j] - y) <= 1e-9 * np.maximum(1.0, np.abs(lv[j]))
        if not np.all(ok):
            bad = np.asarray(y)[~ok] if y.ndim else y
            raise DataError(
                f"value {np.ravel(bad)[0]!r} is not in the support {lv.tolist()} of this "
                f"{type(self).__name__} (encode the test values on the model's levels)")
        return j

    # ------------------------------------------------------------------ moments
    def mean(self) -> np.ndarray:
        r""":math:`\sum_j \bar p_j l_j`."""
        return self.probs() @ self.support

    def var(self) -> np.ndarray:
        r""":math:`\sum_j \bar p_j (l_j - \mathbb E[y])^2` (equals the law of total
        variance over draws)."""
        d = self.support - self.mean()[..., None]
        return (self.probs() * d * d).sum(axis=-1)

    def mode(self) -> np.ndarray:
        """Most probable support point (the lowest on ties)."""
        return self.support[np.argmax(self.probs(), axis=-1)]

    # ------------------------------------------------------------------ distribution
    def cdf(self, x) -> np.ndarray:
        r""":math:`F(x)=\sum_{l_j\le x}\bar p_j` for any real ``x``."""
        j = np.searchsorted(self.support, np.asarray(x, np.float64), side="right")
        return self._gather(self._cumz, j)

    def prob_at_least(self, t) -> np.ndarray:
        r""":math:`P(Y\ge t)=\sum_{l_j\ge t}\bar p_j` for any real ``t``."""
        j = np.searchsorted(self.support, np.asarray(t, np.float64), side="left")
        return self._gather(self._tailz, j)

    def logpdf(self, y) -> np.ndarray:
        r"""Log probability mass :math:`\log\mathrm{clip}(\bar p(y), 10^{-15},
        1-10^{-15})`; ``y`` must be a support point (else DataError)."""
        return np.log(clip_prob(self._gather(self.probs(), self.level_index(y))))

    def bound(self, q, noise: bool = True) -> np.ndarray:
        r"""UCB / LCB **on the expected value**: the quantile over the draws of the
        per-draw expected values :meth:`component_means` (:math:`P(y = 1)` for 0/1
        data, the expected level for ordinal data; linear interpolation), whatever
        ``noise`` says. The predictive quantile of a discrete family is a support point,
        so almost every item would tie at the same bound (all at 1 for a Bernoulli UCB)
        and the ranking would follow the item order; exploration is uncertain about the
        expected value (as Poisson's bound is on the rate)."""
        return np.quantile(self.component_means(), check_q(q), axis=0)

    def quantile(self, q) -> np.ndarray:
        r"""Smallest support point with :math:`F(l_j)\ge q`."""
        q = check_q(q)
        cum = self._cumz[..., 1:]
        j = np.minimum((cum < q).sum(axis=-1), self.n_levels - 1)
        return self.support[j]

    def pit(self, y, rng=None) -> np.ndarray:
        r"""Mid-PIT :math:`F(y^-)+\tfrac12\bar p(y)`; with a generator ``rng`` the
        randomized PIT :math:`F(y^-)+V\bar p(y)`, :math:`V\sim U(0,1)`."""
        j = self.level_index(y)
        below = self._gather(self._cumz, j)
        p = self._gather(self._cumz, j + 1) - below
        if rng is None:
            return below + 0.5 * p
        return below + rng.random(p.shape) * p

    def crps(self, y, max_draws: int | None = 100) -> np.ndarray:
        r"""Ranked probability score in level units
        :math:`\sum_{j=1}^{K-1}(F(l_j)-\mathbb 1[y\le l_j])^2\,(l_{j+1}-l_j)`, which is the
        CRPS :math:`\int(F(x)-\mathbb 1[x\ge y])^2dx` of the discrete predictive (both
        step functions are constant on :math:`[l_j, l_{j+1})` when ``y`` is a level).
        Exact, from the averaged probabilities; ``max_draws`` is ignored."""
        j = self.level_index(y)
        K = self.n_levels
        F = self._cumz[..., 1:K]  # F(l_1) .. F(l_{K-1})
        ind = np.arange(K - 1) >= j[..., None]  # 1[y <= l_i]  <=>  j <= i
        return ((F - ind) ** 2 * np.diff(self.support)).sum(axis=-1)

    def expect(self, fn, n_nodes: int = 20) -> np.ndarray:
        r"""Exact :math:`\sum_j \bar p_j\, fn(l_j)` (``n_nodes`` is ignored); ``fn`` is
        called with arrays of the trailing shape filled with one level."""
        P = self.probs()
        acc = 0.0
        for j, lv in enumerate(self.support):
            acc = acc + P[..., j] * np.asarray(fn(np.full(self.shape, lv)), np.float64)
        return np.asarray(acc, np.float64)
