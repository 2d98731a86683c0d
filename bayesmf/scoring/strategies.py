r"""Scoring strategies: how a posterior predictive distribution becomes a ranking score.

For a user ``u`` and item ``i`` the posterior predictive is the equal-weight mixture over
the ``S`` posterior draws (see :mod:`bayesmf.posterior`):

.. math::

    p(r_{ui}\mid\mathcal D) = \frac1S\sum_{s=1}^S \mathcal N(r;\, m_s,\, \sigma_s^2),\qquad
    m_s = \mu_s + b_{u,s} + b_{i,s} + U_{u,s}^\top V_{i,s},\quad
    \sigma_s^2 = v_s + \tau_s^{-1}

(``v_s = 0`` for known users and items; the population fallback of an unknown user adds
:math:`v_s = x_{i,s}^\top\mathrm{Cov}_u([b_u, U_u])_s\,x_{i,s}`, :math:`x_i=[1, V_i]`). With
``noise=False`` the observation noise :math:`\tau_s^{-1}` is left out, i.e. the strategy
scores the *expected* rating :math:`m` (parameter uncertainty only).

========================  ================================================================
strategy                  score
========================  ================================================================
``"mean"``                :math:`\mathbb E[r] = \frac1S\sum_s m_s` (exact; see
                          :func:`bayesmf.recommend.topk.recommend` for the fast modes)
``"upper"`` (``"ucb"``)   predictive ``quantile`` (default 0.9) -- optimistic, favours
                          uncertain items
``"lower"`` (``"lcb"``)   predictive ``quantile`` (default 0.1) -- risk averse, avoids them
``"thompson"``            :math:`m_{s(u)}`: one posterior draw per user, ``s(u)`` a hash of
                          ``(seed, raw user id)``, so a call is reproducible and does not
                          depend on batching
``"prob"``                :math:`P(r\ge t) = \frac1S\sum_s\Phi((m_s-t)/\sigma_s)` (Gaussian;
                          the mixture's own for other families); ``t`` defaults to the
                          likelihood's ``relevance_threshold`` (4 on a star scale, 1 for
                          Bernoulli -- P(y = 1) -- and Poisson -- P(y >= 1))
``"utility"``             :math:`\mathbb E[u(r)] = \frac1S\sum_s \frac1{\sqrt\pi}\sum_j w_j\,
                          u(m_s+\sqrt2\,\sigma_s x_j)` (Gauss-Hermite nodes ``x_j``, weights
                          ``w_j`` per mixture component; or Monte Carlo from predictive draws)
========================  ================================================================

On the discrete families (Bernoulli, ordinal, Poisson) ``"upper"``/``"lower"`` are the
posterior quantiles of the expected value :math:`g(\eta_s)` over the draws (P(y = 1), the
expected star, the rate), not of the outcome (a 0/1 outcome's quantile is 0 or 1 for every
item). They are credible bounds of that parameter, not shifted means: for a pair whose
draws are strongly right-skewed (most near 0, a few high) the 0.9 quantile can lie below
the posterior mean that ``"mean"`` reports, and the 0.1 quantile above it.

``quantile_method`` (``upper``, ``lower`` and the top-n search of ``prob``):

* ``"approx"`` (default): screen with a moment-matched Gaussian, then the exact scores
  of the ``screen_size`` best screened items per user (no certificate: an item the screen
  misorders by more than that would be missed; measured on latest-small, Gibbs rank 10,
  300 draws, all 610 users, and on 2,000 users of the 70k x 10k synthetic model: the
  same top-10 lists as ``"exact"``/``"bounded"`` for 100% of them,
  ``benchmarks/results/recommend_strategies.md``), within ~5x of the mean strategy.
* ``"bounded"``: the scores are exact (the mixture quantile by safeguarded
  Newton on the mixture CDF, the mixture probability), and top-n recommendation finds the
  same items as scoring every pair but solves only a few per user: screen with a
  moment-matched Gaussian, rescore the best exactly, *certify* all others below the
  ``n``-th exact score with cheap per-draw bounds (:mod:`bayesmf.scoring.bounded`).
* ``"exact"`` (alias ``"mixture"``): every candidate pair is scored exactly (the
  reference; on MovieLens latest-small, Gibbs rank 10 with 300 draws, 50-100x slower
  than ``"bounded"`` for ``upper``/``lower`` and ~10x for ``prob``).
* ``"gaussian"`` (``upper``/``lower`` only): the quantile of the moment-matched Gaussian
  :math:`\bar m + z_q\sqrt{\mathrm{Var}_s(m_s)+\overline{\sigma_s^2}}` as the score.

``bounded``/``approx`` apply to the Gaussian likelihood with ``noise=True`` and more than
one draw; otherwise (discrete likelihoods, noise-free point masses, MAP) the pairs are
scored exactly one by one. With one draw (MAP) and ``noise=True`` every strategy
except ``"prob"``/``"utility"`` ranks like ``"mean"`` (the noise is the same for all items).

The formulas live in the predictive :class:`~bayesmf.predictive.Mixture`
(:func:`scores_from_mixture` works for every likelihood); :func:`scores_from_components`
is the Gaussian special case. ``mixture_quantile``, ``mixture_cdf`` and
``gauss_hermite_expectation`` are re-exported from :mod:`bayesmf.predictive`.

This module is pure numpy/scipy.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bayesmf.errors import SpecError
from bayesmf.predictive import (GaussianMixture, Mixture, gauss_hermite_expectation,
                                mixture_cdf, mixture_quantile)

__all__ = ["Strategy", "make_strategy", "STRATEGIES", "QUANTILE_METHODS", "scores_from_components",
           "scores_from_mixture", "mixture_quantile", "mixture_cdf", "thompson_draw_index",
           "id_keys", "gauss_hermite_expectation"]

STRATEGIES = ("mean", "upper", "lower", "thompson", "prob", "utility")
_ALIASES = {"ucb": "upper", "optimistic": "upper", "lcb": "lower", "pessimistic": "lower",
            "risk-averse": "lower", "probability": "prob", "p_relevant": "prob",
            "expected_utility": "utility", "ts": "thompson"}


@dataclass(frozen=True)
class Strategy:
    """A validated scoring strategy (build with :func:`make_strategy`)."""

    name: str
    quantile: float | None = None
    threshold: float | None = None
    utility: Callable | None = None
    noise: bool = True
    quantile_method: str = "approx"
    utility_method: str = "gauss-hermite"
    n_nodes: int = 20
    n_draws: int = 200
    seed: int = 0
    screen_size: int | None = None

    @property
    def per_draw(self) -> bool:
        """True when the score needs the per-draw components (not just their mean)."""
        return self.name != "mean"

    def describe(self) -> str:
        if self.name in ("upper", "lower"):
            return f"{self.name} q={self.quantile} ({self.quantile_method})"
        if self.name == "prob":
            t = "the likelihood's threshold" if self.threshold is None else self.threshold
            return f"P(r >= {t})"
        return self.name


QUANTILE_METHODS = ("bounded", "exact", "approx", "gaussian")
_QM_ALIASES = {"mixture": "exact", "moment": "gaussian", "screened": "approx"}


def make_strategy(strategy="mean", *, quantile=None, threshold=None, utility=None,
                  seed=None, noise=True, quantile_method="approx",
                  utility_method="gauss-hermite", n_nodes=20, n_draws=200,
                  screen_size=None) -> Strategy:
    """Validate the options of a strategy once. ``strategy`` may already be a
    :class:`Strategy` (returned unchanged).

    ``quantile_method``: ``"approx"`` (default), ``"bounded"``, ``"exact"`` (alias ``"mixture"``),
    ``"approx"`` or ``"gaussian"`` (module docs). ``screen_size``: items per user rescored
    exactly after screening (default ``max(5 n, 50)``)."""
    if isinstance(strategy, Strategy):
        return strategy
    if not isinstance(strategy, str):
        raise SpecError(f"strategy must be a string, got {strategy!r}")
    name = _ALIASES.get(strategy.lower(), strategy.lower())
    if name not in STRATEGIES:
        raise SpecError(f"unknown strategy {strategy!r}; choose from {STRATEGIES} "
                        f"(aliases {sorted(_ALIASES)})")
    # an option of another strategy would be silently ignored: refused
    for opt, val, owner in (("quantile", quantile, ("upper", "lower")),
                            ("threshold", threshold, ("prob",)),
                            ("utility", utility, ("utility",))):
        if val is not None and name not in owner:
            names = " and ".join(repr(o) for o in owner)
            raise SpecError(f"{opt}= applies to the {names} strateg"
                            f"{'ies' if len(owner) > 1 else 'y'}, not {name!r}")
    if name in ("upper", "lower"):
        if quantile is None:
            quantile = 0.9 if name == "upper" else 0.1
        quantile = float(quantile)
        if not 0 < quantile < 1:
            raise SpecError(f"quantile must lie in (0, 1), got {quantile}")
        if name == "upper" and quantile < 0.5 or name == "lower" and quantile > 0.5:
            alias, other = ("ucb", "lcb") if name == "upper" else ("lcb", "ucb")
            want = "> 0.5" if name == "upper" else "< 0.5"
            raise SpecError(f"strategy {name!r} ({alias}) needs a quantile {want}, got "
                            f"{quantile}: it is {'an upper' if name == 'upper' else 'a lower'} "
                            f"bound; for the other side use strategy {other!r}")
    else:
        quantile = None
    qm = _QM_ALIASES.get(str(quantile_method).lower(), str(quantile_method).lower()) \
        if isinstance(quantile_method, str) else quantile_method
    if qm not in QUANTILE_METHODS:
        raise SpecError(f"quantile_method must be one of {QUANTILE_METHODS} (or 'mixture' = "
                        f"'exact'), got {quantile_method!r}")
    if screen_size is not None:
        if isinstance(screen_size, bool) or not isinstance(screen_size, (int, np.integer)) \
                or int(screen_size) < 1:
            raise SpecError(f"screen_size must be a positive integer, got {screen_size!r}")
        screen_size = int(screen_size)
    if name == "prob":
        # None: the likelihood's relevance threshold, resolved by the Scorer
        # (Likelihood.relevance_threshold: 4 on a star scale, 1 for 0/1 data and counts)
        if threshold is not None:
            if isinstance(threshold, bool) or not isinstance(
                    threshold, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(float(threshold)):
                raise SpecError(f"strategy 'prob' needs a finite threshold, got "
                                f"{threshold!r}")
            threshold = float(threshold)
    else:
        threshold = None
    if name == "utility":
        if not callable(utility):
            raise SpecError("strategy 'utility' needs utility=callable(r_array) -> array")
        if utility_method not in ("gauss-hermite", "draws"):
            raise SpecError("utility_method must be 'gauss-hermite' or 'draws'")
        if int(n_nodes) < 1 or int(n_draws) < 1:
            raise SpecError("n_nodes and n_draws must be >= 1")
    else:
        utility = None
    return Strategy(name, quantile, threshold, utility, bool(noise), qm,
                    utility_method, int(n_nodes), int(n_draws), 0 if seed is None else int(seed),
                    screen_size)


# --------------------------------------------------------------------------- thompson
def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.uint64)
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def id_keys(raw_ids) -> np.ndarray:
    """A stable 64-bit key per raw id (the integer itself, or CRC32 of a string id with
    bit 40 set), independent of vocabulary order and of batching."""
    arr = np.asarray(raw_ids)
    if arr.dtype.kind in "iu":
        return arr.astype(np.int64).astype(np.uint64)
    return np.array([(zlib.crc32(str(x).encode("utf-8")) | (1 << 40)) for x in arr],
                    dtype=np.uint64)


def thompson_draw_index(keys, seed: int, n_samples: int, salt: int = 0) -> np.ndarray:
    """Posterior draw used for each user in Thompson sampling:
    ``splitmix64(splitmix64(seed ^ salt) ^ key) mod S``."""
    base = _splitmix64(np.uint64(np.int64(seed) & 0x7FFFFFFFFFFFFFFF) ^ np.uint64(salt))
    h = _splitmix64(np.asarray(keys, np.uint64) ^ base)
    return (h % np.uint64(n_samples)).astype(np.int64)


def key_rng(seed: int, key: int) -> np.random.Generator:
    """A generator determined by ``(seed, key)`` only (Thompson draws of fallback users)."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(key) & 0xFFFFFFFFFFFFFFFF])


# --------------------------------------------------------------------------- scores
def scores_from_mixture(mixture: Mixture, strategy, draw_index=None, rng=None):
    r"""Score of every entry of a predictive :class:`~bayesmf.predictive.Mixture`.

    ==============  ==============================================================
    ``mean``        ``mixture.mean()``
    ``upper/lower`` ``mixture.quantile(q)`` (``quantile_method="gaussian"``: the
                    moment-matched ``mixture.gaussian_quantile(q)``; ``bounded``,
                    ``exact`` and ``approx`` all score exactly here). Gaussian
                    mixtures keep two shortcuts: one draw -> the Gaussian formula;
                    no component with ``sd > 0`` (noise-free known pairs) -> the
                    empirical quantile ``np.quantile`` of the draws ``m_s``
                    (linear interpolation). Other families: ``mixture.bound(q,
                    noise)``: the discrete families (Bernoulli, ordinal, Poisson)
                    bound the per-draw expected value -- :math:`P(y=1)`, the
                    expected level, the rate -- over the draws, whatever ``noise``
                    says (a predictive quantile is a support point: items would tie).
    ``thompson``    ``component_means()[draw_index[row]]``: one draw per row
                    (``draw_index`` ``(rows,)``, the first trailing axis)
    ``prob``        ``mixture.prob_at_least(threshold)``
    ``utility``     ``mixture.expect(utility, n_nodes)`` (Gauss-Hermite per Gaussian
                    component, exact sum for discrete ones), or with
                    ``utility_method="draws"`` the Monte Carlo mean of ``utility`` over
                    ``mixture.sample(rng, n_draws)`` (``rng`` default
                    ``default_rng(seed)``)
    ==============  ==============================================================

    ``strategy``: a :class:`Strategy` or a name for :func:`make_strategy`. Returns
    ``mixture.shape``.
    """
    st = make_strategy(strategy)
    if st.name == "mean":
        return mixture.mean()
    if st.name in ("upper", "lower"):
        q = st.quantile
        if isinstance(mixture, GaussianMixture):
            if st.quantile_method == "gaussian" or mixture.n_components == 1:
                return mixture.gaussian_quantile(q)
            if not np.any(mixture.sd > 0):  # noise-free known pairs: quantile of the draws
                return np.quantile(mixture.m, q, axis=0)
            return mixture.quantile(q)
        if st.quantile_method == "gaussian":
            return mixture.gaussian_quantile(q)
        return mixture.bound(q, st.noise)
    if st.name == "thompson":
        if draw_index is None:
            raise SpecError("thompson scoring needs draw_index")
        m = mixture.component_means()
        idx = np.asarray(draw_index).reshape((1,) + (-1,) + (1,) * (m.ndim - 2))
        return np.take_along_axis(m, idx, axis=0)[0]
    if st.name == "prob":
        if st.threshold is None:
            raise SpecError("scoring a mixture with 'prob' needs threshold= (recommend "
                            "and the Scorer use the likelihood's relevance_threshold)")
        return mixture.prob_at_least(st.threshold)
    if st.name == "utility":
        if st.utility_method == "gauss-hermite":
            return mixture.expect(st.utility, st.n_nodes)
        rng = np.random.default_rng(st.seed) if rng is None else rng
        r = mixture.sample(rng, st.n_draws)
        return np.asarray(st.utility(r), np.float64).mean(axis=0)
    raise SpecError(f"unhandled strategy {st.name!r}")  # pragma: no cover


def scores_from_components(m, sd, strategy: Strategy, draw_index=None, rng=None):
    """Score of every column of Gaussian per-draw components:
    ``scores_from_mixture(GaussianMixture(m, sd), ...)``.

    ``m``, ``sd``: ``(S, rows, cols)`` (or ``(S, n)``) mixture components (``sd`` already
    with or without the noise as the strategy wants). ``draw_index``: ``(rows,)`` draw per
    row for Thompson sampling. Returns ``m.shape[1:]``.
    """
    return scores_from_mixture(GaussianMixture(m, sd), strategy, draw_index=draw_index,
                               rng=rng)
