r"""Rating-prediction metrics (pure numpy/scipy) for any posterior predictive mixture.

Point metrics take arrays: :func:`rmse`, :func:`mae`. Distributional metrics take the
posterior predictive as an equal-weight mixture over the ``S`` draws, a
:class:`~bayesmf.predictive.Mixture` (:func:`predictive_mixture`; for a Gaussian
likelihood the components ``m, sd`` of ``Posterior.predictive_components``):

.. math::

    p(r) = \frac1S\sum_s p_s(r),\qquad F(r) = \frac1S\sum_s F_s(r)

* **NLPD** :math:`-\log p(y)` of the mixture (Gaussian: log-sum-exp of the densities,
  *not* a Gaussian approximation; discrete families: minus the log probability of the
  observed value, i.e. the log-loss, with probabilities clipped to
  :math:`[10^{-15}, 1-10^{-15}]`).
* **CRPS** :math:`\int (F(x)-\mathbb 1[x\ge y])^2dx`. Gaussian mixture, closed form
  (Grimit et al. 2006):
  :math:`\mathrm{CRPS}=\frac1S\sum_s A(y-m_s,\,sd_s^2)-\frac1{2S^2}\sum_{s,t}A(m_s-m_t,\,
  sd_s^2+sd_t^2)` with :math:`A(\mu,\sigma^2)=\mu(2\Phi(\mu/\sigma)-1)+2\sigma\varphi(\mu/\sigma)`.
  Cost :math:`O(S^2)` per rating; :func:`rating_metrics` evaluates it on at most
  ``crps_max_draws`` (default 100) evenly spaced draws: the exact CRPS of that thinned
  mixture (reported as ``crps_draws_used``).
  For one Gaussian it reduces to
  :math:`sd\,[z(2\Phi(z)-1)+2\varphi(z)-1/\sqrt\pi]`, :math:`z=(y-m)/sd`.
  Bernoulli: the Brier score :math:`(\bar p-y)^2`; categorical over levels :math:`l_j`:
  the ranked probability score in level units
  :math:`\sum_j(F(l_j)-\mathbb 1[y\le l_j])^2(l_{j+1}-l_j)` (both exact, all draws).
* **PIT** :math:`F(y)` (discrete families: the mid-PIT :math:`F(y^-)+\tfrac12p(y)`).
  **Coverage** of the central level-:math:`\ell` interval
  :math:`[F^{-1}(\tfrac{1-\ell}2),F^{-1}(\tfrac{1+\ell}2)]`: for a continuous predictive
  the fraction with :math:`|F(y)-\tfrac12|\le\ell/2` (identical to comparing with the
  mixture quantiles, and needs no root finding); for a discrete one the fraction with
  ``lower <= y <= upper`` from the discrete quantiles -- such intervals hold at least
  :math:`\ell` of the mass and usually more, so discrete predictives **over-cover** (a
  calibrated model reports coverage above nominal). The mean **width** of those intervals
  uses the exact mixture quantiles.

Discrete families add classification metrics (:mod:`bayesmf.evaluate.classification`):
Bernoulli ``log_loss``, ``brier``, ``auc``, ``ece``, ``accuracy`` (of
:math:`\bar p>1/2`); categorical ``log_loss``, ``rps``, ``accuracy`` (of the mode) and
``expected_rating_rmse`` (= ``rmse`` of the expected rating).

**Per-draw distributions** (``draws=True``): ``rmse``, ``mae``, ``nlpd``, ``crps`` and
the interval ``coverage`` are also computed for each posterior draw alone
(:meth:`~bayesmf.predictive.Mixture.per_draw`, the vectorised ``take([s])``) -- RMSE/MAE
of the draw's mean :math:`\mu_s` (Gaussian: the noise-free prediction :math:`m_s`;
Bernoulli: :math:`p_s`; **not** clipped to the training scale, unlike the headline
``rmse``/``mae`` of the clipped predictive mean, so the two can differ where draws fall
outside the scale), and NLPD/CRPS/coverage of its own distribution (e.g.
:math:`\mathcal N(m_s, sd_s^2)`) -- and summarised by the mean and the central 90%
interval over draws. The other metrics (interval width, calibration error, the
classification and categorical metrics) have no per-draw version. These describe
parameter uncertainty of the metric; they are not the metrics of the posterior
predictive.
"""

from __future__ import annotations

import numpy as np

from bayesmf.errors import DataError, SpecError
from bayesmf.evaluate.classification import accuracy as _accuracy
from bayesmf.evaluate.classification import auc as _auc
from bayesmf.evaluate.classification import brier as _brier
from bayesmf.evaluate.classification import ece as _ece
from bayesmf.predictive import (BernoulliMixture, CategoricalMixture, GaussianMixture,
                                Mixture, gaussian_crps, mixture_crps, mixture_logpdf,
                                mixture_pit, thin_index)

__all__ = ["rmse", "mae", "gaussian_crps", "mixture_crps", "mixture_logpdf", "mixture_pit",
           "coverage_from_pit", "summarize_draws", "rating_metrics", "predictive_mixture"]


def predictive_mixture(posterior, u, i, known_user=None, known_item=None) -> Mixture:
    """The posterior predictive of index pairs as a :class:`~bayesmf.predictive.Mixture`:
    ``posterior.predictive_mixture(u, i, known_user, known_item)``, or for a posterior
    without that method ``GaussianMixture(*posterior.predictive_components(...))``."""
    fn = getattr(posterior, "predictive_mixture", None)
    if fn is not None:
        return fn(u, i, known_user, known_item)
    return GaussianMixture(*posterior.predictive_components(u, i, known_user, known_item))


def _pair(y, yhat):
    y = np.asarray(y, np.float64)
    yhat = np.asarray(yhat, np.float64)
    if y.shape != yhat.shape or y.ndim != 1:
        raise DataError(f"y and prediction must be 1-D of equal length, got {y.shape} and {yhat.shape}")
    if len(y) == 0:
        raise DataError("cannot compute a metric on zero ratings")
    return y, yhat


def rmse(y, yhat) -> float:
    """Root mean squared error ``sqrt(mean((y - yhat)^2))``."""
    y, yhat = _pair(y, yhat)
    return float(np.sqrt(np.mean((y - yhat) ** 2)))


def mae(y, yhat) -> float:
    """Mean absolute error ``mean(|y - yhat|)``."""
    y, yhat = _pair(y, yhat)
    return float(np.mean(np.abs(y - yhat)))


def coverage_from_pit(pit, level: float) -> float:
    """Fraction of ratings inside the central ``level`` interval: ``|PIT - 1/2| <= level/2``."""
    pit = np.asarray(pit, np.float64)
    return float(np.mean(np.abs(pit - 0.5) <= level / 2 + 1e-12))


def summarize_draws(values, interval: float = 0.9) -> dict:
    """``{"mean", "lower", "upper"}`` of per-draw metric values (central interval)."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"mean": None, "lower": None, "upper": None}
    a = (1 - interval) / 2
    return {"mean": float(v.mean()), "lower": float(np.quantile(v, a)),
            "upper": float(np.quantile(v, 1 - a))}


def _check_levels(levels):
    lv = tuple(float(x) for x in np.atleast_1d(levels))
    if any(not 0 < x < 1 for x in lv):
        raise SpecError(f"coverage levels must lie in (0, 1), got {lv}")
    return lv


def _interval_hits(mix: Mixture, y, level: float, tol=None):
    """``(lower <= y <= upper, upper - lower)`` of the central ``level`` interval."""
    kw = {} if tol is None or mix.discrete else {"tol": tol}
    lo, hi = mix.interval(level, **kw)
    return (lo <= y) & (y <= hi), hi - lo


def rating_metrics(posterior, test, *, levels=(0.5, 0.8, 0.9, 0.95), clip: bool = True,
                   draws: bool = False, widths: bool = True, crps_max_draws: int = 100,
                   draw_interval: float = 0.9, return_pit: bool = False,
                   chunk_pairs: int | None = None) -> dict:
    """Point and distributional metrics of a posterior on held-out ratings.

    ``rmse``/``mae`` use the predictive mean clipped to the training rating scale
    (``clip=True``; ``rmse_unclipped`` is reported too); ``nlpd``, ``crps``, PIT,
    ``coverage`` and ``interval_width`` use the unclipped mixture (see module docs).
    Unknown users/items use the posterior's population fallback (counted in
    ``n_cold``). ``return_pit`` adds the PIT array under ``"pit"`` (not JSON).

    Works for every predictive :class:`~bayesmf.predictive.Mixture`: for a Bernoulli
    predictive ``rmse``/``mae`` compare :math:`\\bar p = P(y=1)` with the 0/1 values,
    ``nlpd`` is the log-loss, ``crps`` the Brier score, and ``log_loss``, ``brier``,
    ``auc`` (``None`` when the test set holds one class only), ``ece`` and ``accuracy``
    are added; for a categorical (ordinal) predictive ``crps`` is the ranked probability
    score and ``log_loss``, ``rps``, ``accuracy`` (of the mode) and
    ``expected_rating_rmse`` are added. Discrete coverage comes from the discrete
    quantiles and over-covers (module docs).
    """
    lv = _check_levels(levels)
    u, i, ku, ki, y = posterior._test_arrays(test)
    y = np.asarray(y, np.float64)
    n = len(y)
    if n == 0:
        raise DataError("cannot evaluate on zero ratings")
    S = posterior.n_samples
    Sc = len(thin_index(S, crps_max_draws))
    if chunk_pairs is None:
        chunk_pairs = max(1, min((1 << 20) // max(S, 1), (1 << 23) // max(Sc * Sc, 1)))
    mean = np.empty(n)
    lpd = np.empty(n)
    crps = np.empty(n)
    pit = np.empty(n)
    mode = np.empty(n)
    inside = {l: np.zeros(n, bool) for l in lv}
    wid = {l: np.empty(n) for l in lv} if widths else {}
    if draws:
        d_se = np.zeros(S)
        d_ae = np.zeros(S)
        d_nlp = np.zeros(S)
        d_crps = np.zeros(S)
        d_cov = {l: np.zeros(S) for l in lv}
    mix = None
    for a in range(0, n, chunk_pairs):
        sl = slice(a, min(n, a + chunk_pairs))
        mix = predictive_mixture(posterior, u[sl], i[sl], ku[sl], ki[sl])
        yy = y[sl]
        mean[sl] = mix.mean()
        lpd[sl] = mix.logpdf(yy)
        crps[sl] = mix.crps(yy, max_draws=crps_max_draws)
        pit[sl] = mix.pit(yy)
        if mix.discrete:
            mode[sl] = mix.mode()
            for l in lv:
                inside[l][sl], w = _interval_hits(mix, yy, l)
                if widths:
                    wid[l][sl] = w
        else:
            for l in wid:
                lo = mix.quantile((1 - l) / 2, tol=1e-7)
                hi = mix.quantile((1 + l) / 2, tol=1e-7)
                wid[l][sl] = hi - lo
        if draws:
            one = mix.per_draw()  # each draw alone, trailing shape (S, chunk)
            e = yy - one.mean()
            d_se += (e * e).sum(axis=1)
            d_ae += np.abs(e).sum(axis=1)
            d_nlp += (-one.logpdf(yy)).sum(axis=1)
            d_crps += one.crps(yy).sum(axis=1)
            for l in lv:
                d_cov[l] += _interval_hits(one, yy, l)[0].sum(axis=1)
    discrete = bool(mix.discrete)
    pred = posterior.clip_to_scale(mean) if clip else mean
    if discrete:
        coverage = {f"{l:g}": float(np.mean(inside[l])) for l in lv}
    else:
        coverage = {f"{l:g}": coverage_from_pit(pit, l) for l in lv}
    out = {
        "n_test": int(n),
        "n_cold": int((~(ku & ki)).sum()),
        "uncertainty": posterior.uncertainty,
        "rmse": rmse(y, pred),
        "mae": mae(y, pred),
        "rmse_unclipped": rmse(y, mean),
        "nlpd": float(-lpd.mean()),
        "crps": float(crps.mean()),
        "crps_draws_used": int(mix.crps_components(crps_max_draws)),
        "coverage": coverage,
    }
    if widths:
        out["interval_width"] = {f"{l:g}": float(wid[l].mean()) for l in lv}
    out["calibration_error"] = float(np.mean([abs(out["coverage"][f"{l:g}"] - l) for l in lv]))
    if isinstance(mix, BernoulliMixture):
        out["log_loss"] = out["nlpd"]
        out["brier"] = _brier(y, mean)
        try:
            out["auc"] = _auc(y, mean)
        except DataError:  # one class only
            out["auc"] = None
        out["ece"] = _ece(y, mean)
        out["accuracy"] = _accuracy(y, mean)
    elif isinstance(mix, CategoricalMixture):
        out["log_loss"] = out["nlpd"]
        out["rps"] = out["crps"]
        out["accuracy"] = float(np.mean(np.abs(mode - y) <= 1e-9 * np.maximum(1.0, np.abs(y))))
        out["expected_rating_rmse"] = out["rmse"]
    if draws:
        out["draws"] = {
            "rmse": summarize_draws(np.sqrt(d_se / n), draw_interval),
            "mae": summarize_draws(d_ae / n, draw_interval),
            "nlpd": summarize_draws(d_nlp / n, draw_interval),
            "crps": summarize_draws(d_crps / n, draw_interval),
            "coverage": {f"{l:g}": summarize_draws(d_cov[l] / n, draw_interval) for l in lv},
            "n_draws": int(S),
        }
    if return_pit:
        out["pit"] = pit
    return out
