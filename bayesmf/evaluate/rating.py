r"""Rating-prediction metrics (pure numpy/scipy).

Point metrics take arrays: :func:`rmse`, :func:`mae`. Distributional metrics take the
posterior predictive as an equal-weight Gaussian mixture over the ``S`` draws, given by its
components ``m, sd`` of shape ``(S, n)`` (``Posterior.predictive_components``):

.. math::

    p(r) = \frac1S\sum_s \mathcal N(r;\, m_s, sd_s^2),\qquad
    F(r) = \frac1S\sum_s \Phi\!\left(\frac{r-m_s}{sd_s}\right)

* **NLPD** :math:`-\log p(y)` of the mixture (log-sum-exp), *not* a Gaussian
  approximation.
* **CRPS** :math:`\int (F(x)-\mathbb 1[x\ge y])^2dx`, closed form for a Gaussian mixture
  (Grimit et al. 2006):
  :math:`\mathrm{CRPS}=\frac1S\sum_s A(y-m_s,\,sd_s^2)-\frac1{2S^2}\sum_{s,t}A(m_s-m_t,\,
  sd_s^2+sd_t^2)` with :math:`A(\mu,\sigma^2)=\mu(2\Phi(\mu/\sigma)-1)+2\sigma\varphi(\mu/\sigma)`.
  Cost :math:`O(S^2)` per rating; :func:`rating_metrics` evaluates it on at most
  ``crps_max_draws`` (default 100) evenly spaced draws: the exact CRPS of that thinned
  mixture (reported as ``crps_draws_used``).
  For one Gaussian it reduces to
  :math:`sd\,[z(2\Phi(z)-1)+2\varphi(z)-1/\sqrt\pi]`, :math:`z=(y-m)/sd`.
* **PIT** :math:`F(y)`; **coverage** of the central level-:math:`\ell` interval
  :math:`[F^{-1}(\tfrac{1-\ell}2),F^{-1}(\tfrac{1+\ell}2)]` is the fraction with
  :math:`|F(y)-\tfrac12|\le\ell/2` (identical to comparing with the mixture quantiles, and
  needs no root finding); the mean **width** of those intervals uses the exact mixture
  quantiles.

**Per-draw distributions** (``draws=True``): every metric is also computed for each
posterior draw alone -- RMSE/MAE of the draw's noise-free prediction :math:`m_s`, and
NLPD/CRPS/coverage of its Gaussian :math:`\mathcal N(m_s, sd_s^2)` -- and summarised by the
mean and the central 90% interval over draws. These describe parameter uncertainty of the
metric; they are not the metrics of the posterior predictive.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp, ndtr, ndtri

from bayesmf.errors import DataError, SpecError
from bayesmf.recommend.strategies import mixture_quantile

__all__ = ["rmse", "mae", "gaussian_crps", "mixture_crps", "mixture_logpdf", "mixture_pit",
           "coverage_from_pit", "summarize_draws", "rating_metrics"]

_SQRT_PI = np.sqrt(np.pi)
_LOG2PI = np.log(2 * np.pi)


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


def _phi(z):
    return np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)


def gaussian_crps(y, m, sd):
    """CRPS of ``N(m, sd^2)`` at ``y``: ``sd [z(2Phi(z)-1) + 2phi(z) - 1/sqrt(pi)]``."""
    y, m, sd = (np.asarray(a, np.float64) for a in (y, m, sd))
    z = (y - m) / sd
    return sd * (z * (2 * ndtr(z) - 1) + 2 * _phi(z) - 1 / _SQRT_PI)


def _A(mu, var):
    s = np.sqrt(var)
    return mu * (2 * ndtr(mu / s) - 1) + 2 * s * _phi(mu / s)


def mixture_crps(y, m, sd, max_elems: int = 1 << 22):
    """Exact CRPS of the mixture ``mean_s N(m[s], sd[s]^2)`` at each ``y`` (columns).

    ``m, sd``: ``(S, n)``; ``y``: ``(n,)``. Works in column blocks of ``S^2`` elements.
    """
    m = np.asarray(m, np.float64)
    sd = np.broadcast_to(np.asarray(sd, np.float64), m.shape)
    y = np.asarray(y, np.float64)
    S, n = m.shape
    out = np.empty(n)
    var = sd * sd
    iu, ju = np.triu_indices(S, k=1)  # the double sum is symmetric: off-diagonal pairs once
    step = max(1, max_elems // max(len(iu), 1))
    for a in range(0, n, step):
        sl = slice(a, min(n, a + step))
        t1 = _A(y[sl] - m[:, sl], var[:, sl]).mean(axis=0)
        # diagonal: A(0, 2 var) = 2 sqrt(2 var) phi(0)
        diag = (2.0 * np.sqrt(2.0 * var[:, sl]) * _phi(0.0)).sum(axis=0)
        off = _A(m[iu, sl] - m[ju, sl], var[iu, sl] + var[ju, sl]).sum(axis=0) if len(iu) else 0.0
        t2 = (diag + 2.0 * off) / (S * S)
        out[sl] = t1 - 0.5 * t2
    return out


def mixture_logpdf(y, m, sd):
    """``log mean_s N(y; m[s], sd[s]^2)`` per column (log-sum-exp)."""
    m = np.asarray(m, np.float64)
    z = (np.asarray(y, np.float64) - m) / sd
    lp = -0.5 * z * z - np.log(sd) - 0.5 * _LOG2PI
    return logsumexp(lp, axis=0) - np.log(m.shape[0])


def mixture_pit(y, m, sd):
    """Probability integral transform ``F(y) = mean_s Phi((y - m[s]) / sd[s])``."""
    return ndtr((np.asarray(y, np.float64) - m) / sd).mean(axis=0)


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


def _thin_index(S: int, max_draws: int | None):
    if max_draws is None or S <= max_draws:
        return np.arange(S)
    return np.unique(np.linspace(0, S - 1, int(max_draws)).round().astype(np.int64))


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
    """
    lv = _check_levels(levels)
    u, i, ku, ki, y = posterior._test_arrays(test)
    y = np.asarray(y, np.float64)
    n = len(y)
    if n == 0:
        raise DataError("cannot evaluate on zero ratings")
    S = posterior.n_samples
    crps_idx = _thin_index(S, crps_max_draws)
    Sc = len(crps_idx)
    if chunk_pairs is None:
        chunk_pairs = max(1, min((1 << 20) // max(S, 1), (1 << 23) // max(Sc * Sc, 1)))
    mean = np.empty(n)
    lpd = np.empty(n)
    crps = np.empty(n)
    pit = np.empty(n)
    wid = {l: np.empty(n) for l in lv} if widths else {}
    if draws:
        d_se = np.zeros(S)
        d_ae = np.zeros(S)
        d_nlp = np.zeros(S)
        d_crps = np.zeros(S)
        d_cov = {l: np.zeros(S) for l in lv}
    for a in range(0, n, chunk_pairs):
        sl = slice(a, min(n, a + chunk_pairs))
        m, sd = posterior.predictive_components(u[sl], i[sl], ku[sl], ki[sl])
        yy = y[sl]
        mean[sl] = m.mean(axis=0)
        lpd[sl] = mixture_logpdf(yy, m, sd)
        crps[sl] = mixture_crps(yy, m[crps_idx], sd[crps_idx]) if Sc > 1 else \
            gaussian_crps(yy, m[0], sd[0])
        pit[sl] = mixture_pit(yy, m, sd)
        for l in wid:
            lo = mixture_quantile(m, sd, (1 - l) / 2, tol=1e-7)
            hi = mixture_quantile(m, sd, (1 + l) / 2, tol=1e-7)
            wid[l][sl] = hi - lo
        if draws:
            e = yy - m
            d_se += (e * e).sum(axis=1)
            d_ae += np.abs(e).sum(axis=1)
            z = e / sd
            d_nlp += (0.5 * z * z + np.log(sd) + 0.5 * _LOG2PI).sum(axis=1)
            d_crps += gaussian_crps(yy, m, sd).sum(axis=1)
            for l in lv:
                d_cov[l] += (np.abs(z) <= ndtri(0.5 + l / 2)).sum(axis=1)
    pred = posterior.train.scale.clip(mean) if clip else mean
    out = {
        "n_test": int(n),
        "n_cold": int((~(ku & ki)).sum()),
        "uncertainty": posterior.uncertainty,
        "rmse": rmse(y, pred),
        "mae": mae(y, pred),
        "rmse_unclipped": rmse(y, mean),
        "nlpd": float(-lpd.mean()),
        "crps": float(crps.mean()),
        "crps_draws_used": int(Sc),
        "coverage": {f"{l:g}": coverage_from_pit(pit, l) for l in lv},
    }
    if widths:
        out["interval_width"] = {f"{l:g}": float(wid[l].mean()) for l in lv}
    out["calibration_error"] = float(np.mean([abs(out["coverage"][f"{l:g}"] - l) for l in lv]))
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
