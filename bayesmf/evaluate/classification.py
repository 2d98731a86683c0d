r"""Classification metrics for 0/1 and ordered-categorical predictions (pure numpy).

Binary (``y`` in {0, 1}, ``p`` = predicted :math:`P(y=1)`):

* :func:`log_loss` :math:`-\frac1n\sum_n[y_n\log p_n+(1-y_n)\log(1-p_n)]`, ``p`` clipped
  to :math:`[10^{-15}, 1-10^{-15}]`;
* :func:`brier` :math:`\frac1n\sum_n(p_n-y_n)^2` (= the mean CRPS of Bernoulli
  forecasts);
* :func:`auc` the area under the ROC curve by the Mann--Whitney statistic
  :math:`\mathrm{AUC}=\frac{R_1-n_1(n_1+1)/2}{n_1n_0}` with :math:`R_1` the sum of the
  ranks of the positives' scores (ties get their average rank, i.e. a tied
  positive/negative pair counts 1/2);
* :func:`reliability` the reliability diagram in ``bins`` equal-width bins of ``p`` on
  ``[0, 1]`` (bin ``b`` is ``[b/B, (b+1)/B)``, the last one closed), and :func:`ece` the
  expected calibration error :math:`\sum_b\frac{n_b}n|\bar y_b-\bar p_b|` over non-empty
  bins;
* :func:`accuracy` of the decision :math:`p>\text{threshold}` (default 1/2).

Categorical (``y_index`` in ``0..K-1``, ``probs`` ``(n, K)``):

* :func:`multiclass_log_loss` :math:`-\frac1n\sum_n\log p_{n,y_n}` (clipped as above);
* :func:`ranked_probability_score` in level units
  :math:`\frac1n\sum_n\sum_{j=1}^{K-1}(F_{n,j}-\mathbb 1[y_n\le j])^2(l_{j+1}-l_j)`,
  :math:`F_{n,j}=\sum_{i\le j}p_{n,i}` (unit spacing when ``levels`` is omitted, i.e. the
  classic *unnormalised* RPS; divide by ``K-1`` for the normalised one); it equals the
  CRPS of the discrete forecast on the levels;
* :func:`accuracy` of the most probable class when ``p`` is ``(n, K)``.

All functions return floats (``reliability``: a DataFrame) and raise
:class:`~bayesmf.errors.DataError` on malformed input.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmf.errors import DataError, SpecError

__all__ = ["log_loss", "brier", "auc", "reliability", "ece", "accuracy",
           "multiclass_log_loss", "ranked_probability_score"]

_EPS = 1e-15


def _binary(y, p, name="p"):
    y = np.asarray(y)
    p = np.asarray(p, np.float64)
    if y.ndim != 1 or p.shape != y.shape:
        raise DataError(f"y and {name} must be 1-D of equal length, got {y.shape} and {p.shape}")
    if len(y) == 0:
        raise DataError("cannot compute a metric on zero observations")
    yf = y.astype(np.float64)
    if not np.all((yf == 0) | (yf == 1)):
        raise DataError("binary metrics need y in {0, 1}")
    if not np.all(np.isfinite(p)):
        raise DataError(f"{name} must be finite")
    return yf, p


def _probability(p):
    if np.any((p < 0) | (p > 1)):
        raise DataError("predicted probabilities must lie in [0, 1]")
    return p


def log_loss(y, p) -> float:
    r"""Binary log-loss :math:`-\overline{y\log p+(1-y)\log(1-p)}` (``p`` clipped to
    ``[1e-15, 1 - 1e-15]``)."""
    y, p = _binary(y, p)
    p = np.clip(_probability(p), _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def brier(y, p) -> float:
    r"""Brier score :math:`\overline{(p-y)^2}`."""
    y, p = _binary(y, p)
    return float(np.mean((_probability(p) - y) ** 2))


def _average_ranks(x) -> np.ndarray:
    """1-based ranks of ``x`` with ties sharing their average rank."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    start = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    end = np.r_[start[1:], len(xs)]  # exclusive
    avg = (start + end + 1) / 2.0  # mean of the 1-based ranks start+1 .. end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, end - start)
    return ranks


def auc(y, score) -> float:
    r"""ROC AUC by Mann--Whitney with average ranks for ties:
    :math:`(R_1-n_1(n_1+1)/2)/(n_1n_0)` = P(score of a random positive > that of a random
    negative) + 1/2 P(tie). DataError when a class is absent."""
    y, s = _binary(y, score, "score")
    n1 = int(y.sum())
    n0 = len(y) - n1
    if n1 == 0 or n0 == 0:
        raise DataError("AUC needs both classes in y (got only "
                        f"{'positives' if n0 == 0 else 'negatives'})")
    r = _average_ranks(s)
    return float((r[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def reliability(y, p, bins: int = 10) -> pd.DataFrame:
    """Reliability diagram data: per equal-width bin of ``p`` its ``lower``, ``upper``,
    ``count``, ``mean_predicted`` and ``observed_frequency`` (NaN for empty bins)."""
    y, p = _binary(y, p)
    _probability(p)
    B = int(bins)
    if B < 1:
        raise SpecError("bins must be >= 1")
    b = np.minimum((p * B).astype(np.int64), B - 1)
    cnt = np.bincount(b, minlength=B)
    sp = np.bincount(b, weights=p, minlength=B)
    sy = np.bincount(b, weights=y, minlength=B)
    with np.errstate(invalid="ignore", divide="ignore"):
        mp = np.where(cnt > 0, sp / cnt, np.nan)
        oy = np.where(cnt > 0, sy / cnt, np.nan)
    edges = np.arange(B + 1) / B
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "count": cnt,
                         "mean_predicted": mp, "observed_frequency": oy})


def ece(y, p, bins: int = 10) -> float:
    r"""Expected calibration error :math:`\sum_b\frac{n_b}n|\bar y_b-\bar p_b|`
    (equal-width bins, empty bins skipped)."""
    r = reliability(y, p, bins)
    k = r["count"].to_numpy() > 0
    w = r["count"].to_numpy()[k] / r["count"].sum()
    gap = np.abs(r["observed_frequency"].to_numpy()[k] - r["mean_predicted"].to_numpy()[k])
    return float((w * gap).sum())


def _categorical(y_index, probs):
    y = np.asarray(y_index)
    P = np.asarray(probs, np.float64)
    if y.ndim != 1 or P.ndim != 2 or P.shape[0] != len(y):
        raise DataError(f"y_index must be (n,) and probs (n, K), got {y.shape} and {P.shape}")
    if len(y) == 0:
        raise DataError("cannot compute a metric on zero observations")
    if y.dtype.kind not in "iu":
        if not np.all(np.asarray(y, np.float64) == np.round(np.asarray(y, np.float64))):
            raise DataError("y_index must hold integer class indices")
        y = np.asarray(y, np.float64).astype(np.int64)
    K = P.shape[1]
    if y.min() < 0 or y.max() >= K:
        raise DataError(f"class indices must lie in 0..{K - 1}")
    if not np.all(np.isfinite(P)) or P.min() < 0:
        raise DataError("class probabilities must be finite and >= 0")
    return y.astype(np.int64), P


def multiclass_log_loss(y_index, probs) -> float:
    r""":math:`-\overline{\log p_{n,y_n}}` (clipped to ``[1e-15, 1 - 1e-15]``)."""
    y, P = _categorical(y_index, probs)
    p = np.clip(P[np.arange(len(y)), y], _EPS, 1 - _EPS)
    return float(-np.mean(np.log(p)))


def ranked_probability_score(y_index, probs, levels=None) -> float:
    r"""Mean ranked probability score in level units
    :math:`\sum_{j<K}(F_j-\mathbb 1[y\le j])^2(l_{j+1}-l_j)` (``levels`` default
    ``0..K-1``: the unnormalised RPS)."""
    y, P = _categorical(y_index, probs)
    K = P.shape[1]
    if levels is None:
        gaps = np.ones(K - 1)
    else:
        lv = np.asarray(levels, np.float64)
        if lv.shape != (K,) or np.any(np.diff(lv) <= 0):
            raise SpecError(f"levels must be {K} strictly increasing values")
        gaps = np.diff(lv)
    F = np.cumsum(P, axis=1)[:, :K - 1]
    ind = np.arange(K - 1)[None, :] >= y[:, None]
    return float(np.mean(((F - ind) ** 2 * gaps).sum(axis=1)))


def accuracy(y, p, threshold: float = 0.5) -> float:
    """Fraction of correct decisions. ``p`` 1-D: binary probabilities, decision
    ``p > threshold`` against ``y`` in {0, 1}; ``p`` ``(n, K)``: class probabilities,
    decision ``argmax`` (lowest class on ties) against class indices ``y``."""
    if np.ndim(p) == 2:
        y, P = _categorical(y, p)
        return float(np.mean(np.argmax(P, axis=1) == y))
    y, p = _binary(y, p)
    return float(np.mean((p > threshold) == (y == 1)))
