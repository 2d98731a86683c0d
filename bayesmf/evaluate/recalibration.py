r"""Post-hoc recalibration of P(relevant) for implicit feedback fitted with sampled
negatives (Bernoulli likelihoods), and the fresh negatives to measure it on.

What is wrong with the raw P(relevant). A Bernoulli-logit model fitted to the positives
plus one fixed draw of sampled negatives (``BayesMF.fit(interactions,
negatives="uniform:4")``) predicts ``P(y = 1)`` for the population it was fitted to:
positives against negatives drawn by the same rule. Measured on that population (held-out
positives + fresh negatives by the rule, :func:`heldout_negatives`) on Last.fm at rank 32
its ECE is about 0.03, and the reliability diagram is S-shaped: too high below 0.2, too
low between 0.3 and 0.8 (a fitted Platt slope of about 1.3, on the mean and per posterior
draw: the probabilities are under-confident, too close to the base rate) -- and fresh
pairs score slightly higher than the model's own training negatives (mean 0.21 against a
base rate of 0.20).
``benchmarks/results/calibration_implicit_diagnosis.md`` has the numbers per rank and
rule; a single logit shift does not fix it, a monotone map of the right shape does, and
it changes no ranking of the predictive mean (``on="mean"``) or of any draw
(``on="draws"``).

The protocol (:func:`recalibration_carve`, :func:`fit_recalibration`):

1. hold out a fraction of each user's *training* positives (``Interactions.fraction_split``;
   never the test split);
2. fit the model on the rest with the sampling rule ``R`` (``negatives=``);
3. draw fresh negatives for the carve by the same rule ``R`` (:func:`heldout_negatives`),
   ``|N_u| = n k_u`` for a user with ``k_u`` carved positives and ``n`` negatives per
   positive, so that the carve has the class balance and the item law the model was
   fitted to;
4. fit the map on the carve's predictions, then apply it to every later prediction of
   the model fitted in step 2 (:meth:`Recalibration.predict`).

Maps (``method=``), with :math:`z` a logit (what :math:`z` is: ``on=`` below) and
:math:`\sigma(x) = 1/(1+e^{-x})`:

* ``"beta"`` (default; beta calibration, Kull, Silva Filho & Flach 2017):
  :math:`p' = \sigma\big(a\log\sigma(z) - c\log(1-\sigma(z)) + b\big)`, three parameters
  with :math:`a, c \ge 0` (increasing; a coefficient fitted negative is fixed at 0 and
  the rest refitted). :math:`a = c` is Platt's map, :math:`a=c=1, b=0` the identity;
  :math:`a \ne c` bends the low and the high end separately, which the S-shaped
  reliability curve above needs.
* ``"platt"`` (Platt 1999): :math:`p' = \sigma(a z + b)`, :math:`a > 0`.
* ``"shift"``: :math:`p' = \sigma(z + b)` (one global logit shift: a prior-shift
  correction for a class balance that differs between fit and use).
* ``"isotonic"`` (``on="mean"`` only): the non-decreasing step function of :math:`\bar p`
  that minimises the squared error on the carve (pool-adjacent-violators), evaluated by
  linear interpolation between its block centres (constant beyond the end ones).
  Non-decreasing, not strictly: flat stretches tie pairs, so the AUC can move a little.

``platt``/``shift``/``beta`` are fitted by maximum likelihood,
:math:`\min -\sum_n y_n\log p'_n + (1-y_n)\log(1-p'_n)` (Newton with a backtracking line
search on the convex ``on="mean"`` problem; L-BFGS-B with the analytic gradient for
``on="draws"``, started from the ``on="mean"`` fit). A fitted map that is not increasing
(the scores do not rank the carve better than chance) raises
:class:`~bayesmf.errors.DataError`.

What is mapped (``on=``):

* ``"draws"`` (default; Bernoulli-logit posteriors): every posterior draw :math:`s` of the
  pair's linear predictor :math:`\eta_s`,

  .. math::

      P'(y=1) = \frac1S\sum_s \sigma\big(t(\tilde\eta_s)\big),\qquad
      \tilde\eta_s = m_s/\sqrt{1+\pi v_s/8},

  with :math:`t` the map's logit transform above (:math:`t(z) = az + b` for Platt).
  The map is a change of the link inside the posterior average, so each draw keeps its
  ranking and the posterior spread is kept: a pair whose :math:`\eta` is uncertain is
  still pulled towards 1/2, and the per-draw probabilities (``predict(...,
  draws=True)``) give credible intervals on the recalibrated scale. :math:`v_s` is the
  extra variance of the population fallback of an unknown id (0 for known pairs), folded
  in by the likelihood's own probit approximation, so the identity map reproduces
  ``BayesMF.predict``'s ``mean`` exactly. Fitted by maximising the mixture likelihood
  :math:`\prod_n p'_n{}^{y_n}(1-p'_n)^{1-y_n}`. The recalibrated mean is not a
  function of the raw mean alone (two pairs with the same mean but different spreads
  move differently), so the AUC of the mean can change slightly (by about 1e-3 on
  Last.fm).
* ``"mean"``: the predictive mean :math:`\bar p` (``predict``'s ``mean``, any Bernoulli
  link), :math:`z = \operatorname{logit}\bar p`. A function of :math:`\bar p` alone:
  rankings by the mean and the AUC are unchanged (strictly increasing maps), it works
  from probabilities alone (:meth:`Recalibration.apply`), but the draws are not
  recalibrated.

A fitted :class:`Recalibration` is a small frozen record: :meth:`~Recalibration.to_dict`
/ :meth:`~Recalibration.from_dict` (JSON-ready) let it travel with a saved model.

>>> carve = recalibration_carve(train, negatives="uniform:4", fraction=0.1, seed=0)
>>> m = BayesMF(method="gibbs", likelihood="bernoulli-logit").fit(
...     carve.fit, negatives="uniform:4")                            # doctest: +SKIP
>>> cal = fit_recalibration(m, carve.pairs)                          # doctest: +SKIP
>>> p = cal.predict(m, test_pairs)         # recalibrated P(relevant) # doctest: +SKIP
>>> json.dump(cal.to_dict(), f)                                      # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesmf._records import dataclass_from_record
from bayesmf.data.ratings import raw_pairs
from bayesmf.errors import DataError, SpecError
from bayesmf.predictive.links import (LINK_MAPS, check_link_map, finite_params, map_logit,
                                      moderated_logit)
from bayesmf.predictive.links import beta_features as _beta_features
from bayesmf.predictive.links import log_sigmoid as _log_sigmoid
from bayesmf.predictive.links import sigmoid as _sigmoid

__all__ = ["Recalibration", "fit_recalibration", "recalibration_carve", "CarveSplit",
           "heldout_negatives", "fit_platt"]

_SCHEMA = 1
_METHODS = ("platt", "shift", "beta", "isotonic")
_ONS = ("draws", "mean")
_PCLIP = 1e-12  # probabilities are clipped to [_PCLIP, 1 - _PCLIP] before the logit


# ---------------------------------------------------------------------- input checks
def _labels(y, n=None) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"labels must be 1-D, got shape {y.shape}")
    if n is not None and len(y) != n:
        raise DataError(f"labels and predictions differ in length: {len(y)} vs {n}")
    if len(y) == 0:
        raise DataError("cannot fit a recalibration map on zero pairs")
    try:
        yf = y.astype(np.float64)
    except (TypeError, ValueError):
        raise DataError("labels must be 0/1 numbers") from None
    if not np.all((yf == 0) | (yf == 1)):
        bad = np.unique(y[~((yf == 0) | (yf == 1))])[:5].tolist()
        raise DataError(f"labels must be 0 or 1, got values such as {bad}")
    if yf.min() == yf.max():
        raise DataError(f"a recalibration map needs both classes; every label is "
                        f"{int(yf[0])}")
    return yf


def _probs(p) -> np.ndarray:
    p = np.asarray(p, np.float64)
    if p.ndim != 1:
        raise DataError(f"probabilities must be 1-D, got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise DataError(f"probabilities must be finite; {int((~np.isfinite(p)).sum())} "
                        "are NaN or infinite")
    if np.any((p < 0) | (p > 1)):
        raise DataError("probabilities must lie in [0, 1]")
    return p


def _logit(p) -> np.ndarray:
    p = np.clip(p, _PCLIP, 1 - _PCLIP)
    return np.log(p) - np.log1p(-p)


# ---------------------------------------------------------------------- logistic fits
def _newton(y, X, offset=None, max_iter: int = 100, tol: float = 1e-12) -> np.ndarray:
    """Maximum-likelihood logistic regression ``y ~ sigma(X w + offset)`` (convex; Newton
    with a backtracking line search), started at the base rate."""
    n, k = X.shape
    o = np.zeros(n) if offset is None else offset
    w = np.zeros(k)

    def nll(w):
        t = X @ w + o
        return float(np.sum(np.logaddexp(0.0, t) - y * t))

    f = nll(w)
    for _ in range(max_iter):
        q = _sigmoid(X @ w + o)
        g = X.T @ (q - y)
        h = (X * (q * (1 - q))[:, None]).T @ X
        step = np.linalg.solve(h + 1e-10 * np.trace(h) / k * np.eye(k), g)
        lam = 1.0
        while True:
            w_new = w - lam * step
            f_new = nll(w_new)
            if f_new <= f - 1e-4 * lam * (g @ step) or lam < 1e-12:
                break
            lam *= 0.5
        done = abs(f - f_new) <= tol * max(1.0, abs(f))
        w, f = w_new, f_new
        if done:
            break
    return w


def fit_platt(y, z, *, fix_slope: bool = False) -> tuple[float, float]:
    r"""Maximum-likelihood logistic regression of ``y`` on the scores ``z``:
    :math:`\min_{a,b}\sum_n \log(1+e^{a z_n+b}) - y_n(a z_n+b)` (convex; Newton with a
    backtracking line search). ``fix_slope=True`` fixes :math:`a=1` (the ``"shift"``
    map). Returns ``(a, b)``. DataError for malformed ``y``/``z``."""
    z = np.asarray(z, np.float64)
    if z.ndim != 1 or not np.all(np.isfinite(z)):
        raise DataError("scores must be 1-D and finite")
    y = _labels(y, len(z))
    one = np.ones((len(z), 1))
    if fix_slope:
        return 1.0, float(_newton(y, one, z)[0])
    a, b = _newton(y, np.column_stack([z, one]))
    return float(a), float(b)


def _fit_beta_scores(y, z) -> tuple[float, float, float]:
    """Beta calibration on logits ``z`` with ``a, c >= 0`` (a coefficient fitted negative
    is fixed at 0 and the rest refitted, as Kull et al. 2017 do)."""
    l1, l0m = _beta_features(z)
    one = np.ones(len(z))
    a, c, b = _newton(y, np.column_stack([l1, l0m, one]))
    if a < 0 and c < 0:
        return -1.0, -1.0, 0.0  # no signal: _check_slope raises
    if a < 0:
        c, b = _newton(y, np.column_stack([l0m, one]))
        a = 0.0
    elif c < 0:
        a, b = _newton(y, np.column_stack([l1, one]))
        c = 0.0
    return float(a), float(b), float(c)


# ---------------------------------------------------------------------- isotonic (PAV)
def _pav(x, y):
    """Pool-adjacent-violators: block centres ``(x_b, y_b)`` of the non-decreasing least
    squares fit of ``y`` on ``x`` (ties in ``x`` pooled first)."""
    order = np.argsort(x, kind="mergesort")
    xs, ys = x[order], y[order]
    ux, start = np.unique(xs, return_index=True)
    cnt = np.diff(np.r_[start, len(xs)]).astype(np.float64)
    sy = np.add.reduceat(ys, start)
    sx = np.add.reduceat(xs, start)
    by, bx, bn = [], [], []  # a stack of blocks: sums of y and x, counts
    for k in range(len(ux)):
        by.append(sy[k])
        bx.append(sx[k])
        bn.append(cnt[k])
        while len(by) > 1 and by[-2] / bn[-2] >= by[-1] / bn[-1]:
            yl, xl, nl = by.pop(), bx.pop(), bn.pop()
            by[-1] += yl
            bx[-1] += xl
            bn[-1] += nl
    bn = np.asarray(bn)
    return np.asarray(bx) / bn, np.asarray(by) / bn


def _draw_logits(m, v=None):
    r"""Per-draw logits with the fallback variance folded in:
    :math:`\tilde\eta_s = m_s/\sqrt{1+\pi v_s/8}` (the likelihood's own probit
    approximation; :math:`\tilde\eta_s = m_s` for known pairs)."""
    m = np.asarray(m, np.float64)
    if m.ndim == 1:
        m = m[None, :]
    if v is None:
        return m
    return moderated_logit(m, np.broadcast_to(np.asarray(v, np.float64), m.shape))


# ---------------------------------------------------------------------- the map
@dataclass(frozen=True)
class Recalibration:
    r"""A fitted monotone map of P(relevant) (see the module docstring for the maths).

    Attributes
    ----------
    method : {"platt", "shift", "beta", "isotonic"}
    on : {"draws", "mean"}
        ``"draws"``: :math:`P' = \frac1S\sum_s g(\tilde\eta_s)` over the posterior draws
        (use :meth:`predict`); ``"mean"``: the map of the predictive mean (use
        :meth:`apply` or :meth:`predict`).
    a, b, c : float
        ``platt``: :math:`t = a z + b`; ``shift``: ``a = 1``; ``beta``:
        :math:`t = a\log\sigma(z) - c\log(1-\sigma(z)) + b` with :math:`a, c \ge 0`
        (``c`` is unused by the others). :math:`a=c=1, b=0` is the identity.
    x, y : tuple of float
        Knots of the isotonic map (``isotonic``): block centres, interpolated linearly.
    info : dict
        How it was fitted: ``n``, ``n_positive``, ``log_loss_before``/``after`` on the
        fitting pairs, and anything the caller adds (``negatives`` rule, ``fraction``).
    """

    method: str = "beta"
    on: str = "draws"
    a: float = 1.0
    b: float = 0.0
    c: float = 1.0
    x: tuple = ()
    y: tuple = ()
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        if self.method not in _METHODS:
            raise SpecError(f"method= must be one of {list(_METHODS)}, got {self.method!r}")
        if self.on not in _ONS:
            raise SpecError(f"on= must be one of {list(_ONS)}, got {self.on!r}")
        if self.method == "isotonic" and self.on != "mean":
            raise SpecError("the isotonic map is fitted on predictive means: use on='mean'")
        if self.method in LINK_MAPS:
            _, a, b, c = check_link_map(self.method, self.a, self.b, self.c)
        else:  # isotonic: a, b, c unused but recorded
            a, b, c = finite_params(self.a, self.b, self.c)
        for n, v in (("a", a), ("b", b), ("c", c)):
            object.__setattr__(self, n, v)
        x = tuple(float(v) for v in self.x)
        y = tuple(float(v) for v in self.y)
        if self.method == "isotonic":
            if len(x) == 0 or len(x) != len(y) or np.any(np.diff(x) <= 0) \
                    or np.any(np.diff(y) < 0) or min(y) < 0 or max(y) > 1:
                raise SpecError("isotonic knots must be non-empty, of equal length, x "
                                "strictly increasing and y non-decreasing in [0, 1]")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)
        object.__setattr__(self, "info", dict(self.info))

    # ------------------------------------------------------------------ applying
    def _t(self, z):
        """The linear predictor of the map at logits ``z``."""
        return map_logit(z, self.method, self.a, self.b, self.c)

    def apply(self, p) -> np.ndarray:
        r"""Recalibrate predictive means ``p`` (an ``on="mean"`` map):
        :math:`\sigma(t(\operatorname{logit}p))` or the isotonic interpolation. An
        ``on="draws"`` map needs the draws: use :meth:`predict` (SpecError here)."""
        if self.on != "mean":
            raise SpecError("this map was fitted per posterior draw (on='draws'); apply it "
                            "with .predict(model_or_posterior, pairs), or fit one with "
                            "on='mean' to map predictive means")
        p = _probs(p)
        if self.method == "isotonic":
            return np.interp(p, np.asarray(self.x), np.asarray(self.y))
        return _sigmoid(self._t(_logit(p)))

    def apply_eta(self, m, v=None, draws: bool = False) -> np.ndarray:
        r"""Recalibrated probabilities from per-draw linear predictors ``m`` ``(S, n)``
        (and their fallback variance ``v``): ``(n,)`` means over the draws, or the
        ``(S, n)`` per-draw probabilities with ``draws=True``. An ``on="mean"`` map first
        averages :math:`\sigma(\tilde\eta_s)` over the draws and maps the mean."""
        z = _draw_logits(m, v)
        if self.on == "mean":
            if draws:
                raise SpecError("an on='mean' map has no per-draw probabilities")
            return self.apply(_sigmoid(z).mean(axis=0))
        ps = _sigmoid(self._t(z))
        return ps if draws else ps.mean(axis=0)

    def predict(self, model, pairs, *, unknown: str = "fallback", draws: bool = False,
                user_col: str = "user", item_col: str = "item") -> np.ndarray:
        """Recalibrated P(relevant) of ``pairs`` (a DataFrame with user/item columns,
        Ratings, or a ``(users, items)`` tuple of raw ids) under a fitted ``BayesMF`` or
        a :class:`~bayesmf.posterior.Posterior` of a Bernoulli model: ``(n,)``, or the
        ``(S, n)`` per-draw probabilities with ``draws=True`` (``on="draws"``)."""
        post = _posterior(model)
        _check_logit(post, self.on)
        users, items = raw_pairs(pairs, user_col, item_col)
        u, i, ku, ki = post.encode_pairs(users, items, unknown)
        n = len(u)
        out = np.empty((post.n_samples, n)) if draws else np.empty(n)
        if self.on == "mean" and draws:
            raise SpecError("an on='mean' map has no per-draw probabilities")
        for sl in post._chunks(n):
            if self.on == "mean":  # predict's mean, any Bernoulli link
                mean = post.predictive_mixture(u[sl], i[sl], ku[sl], ki[sl]).mean()
                out[sl] = self.apply(np.clip(mean, 0.0, 1.0))
            else:
                m, v = post.pair_moments(u[sl], i[sl], ku[sl], ki[sl])
                out[..., sl] = self.apply_eta(m, _nonzero(v), draws=draws)
        return out

    def attach(self, model):
        """The posterior of ``model`` (a fitted ``BayesMF`` or a Bernoulli-logit
        ``Posterior``) with this map inside its predictive: a new
        :class:`~bayesmf.posterior.Posterior` whose likelihood is
        ``BernoulliLogit(recalibration=(method, a, b, c))``, so ``predict``'s ``mean``,
        every recommendation strategy, the metrics and the saved model file all use the
        recalibrated P(y=1) -- equal to :meth:`predict` of the raw model. The map acts on
        the raw logit (a map attached to an already recalibrated posterior replaces its
        map). The record is kept in ``attrs["recalibration"]``. Needs a parametric map on
        the draws (``platt``, ``shift`` or ``beta`` with ``on="draws"``): an ``on="mean"``
        map has no per-draw form (SpecError)."""
        from bayesmf.model.likelihoods.bernoulli import BernoulliLogit

        post = _posterior(model)
        _check_logit(post, "draws")
        if self.on != "draws" or self.method not in LINK_MAPS:
            raise SpecError(f"only a map of the draws (on='draws', method in "
                            f"{list(LINK_MAPS)}) can be attached to a posterior, got "
                            f"method={self.method!r}, on={self.on!r}; apply an on='mean' "
                            "map with .apply(p) or .predict(model, pairs)")
        lik = BernoulliLogit(recalibration=(self.method, self.a, self.b, self.c))
        return post.with_likelihood(lik, recalibration=self.to_dict())

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict:
        """JSON-ready record (``schema`` 1)."""
        return {"schema": _SCHEMA, "method": self.method, "on": self.on, "a": self.a,
                "b": self.b, "c": self.c, "x": list(self.x), "y": list(self.y),
                "info": _jsonable(self.info)}

    @classmethod
    def from_dict(cls, d: dict) -> "Recalibration":
        """Rebuild from :meth:`to_dict`; SpecError for an unknown schema or field."""
        return dataclass_from_record(cls, d, _SCHEMA)

    # ------------------------------------------------------------------ fitting
    @classmethod
    def from_probabilities(cls, y, p, method: str = "beta", **info) -> "Recalibration":
        """Fit an ``on="mean"`` map on labels ``y`` and predictive means ``p``
        (maximum likelihood for platt/shift/beta, least squares for isotonic)."""
        if method not in _METHODS:
            raise SpecError(f"method= must be one of {list(_METHODS)}, got {method!r}")
        p = _probs(p)
        y = _labels(y, len(p))
        if method == "isotonic":
            x, yy = _pav(p, y)
            if len(x) == 1:  # one block: a constant map, the scores carry no ranking
                raise DataError("the isotonic fit is one constant (the base rate "
                                f"{float(yy[0]):.3g}): the scores do not rank the fitting "
                                "pairs better than chance, so no increasing map fits; "
                                "check the labels and the pairs")
            kw = {"x": tuple(x), "y": tuple(yy)}
        else:
            kw = _fit_scores(y, _logit(p), method)
        cal = cls(method, "mean", **kw)
        return cls(method, "mean", **kw, info={
            "n": int(len(y)), "n_positive": int(y.sum()), "log_loss_before": _ll(y, p),
            "log_loss_after": _ll(y, cal.apply(p)), **info})

    @classmethod
    def from_draws(cls, y, m, v=None, method: str = "beta", **info) -> "Recalibration":
        r"""Fit an ``on="draws"`` map on labels ``y`` and per-draw linear predictors ``m``
        ``(S, n)`` (fallback variance ``v``) by maximum likelihood of the mixture
        :math:`p'_n=\frac1S\sum_s\sigma(t_{sn})`, :math:`t_{sn} = \sum_k w_k F_{k,sn}`
        linear in the map's parameters :math:`w` (features :math:`F`: ``platt``
        :math:`(\tilde\eta, 1)`, ``shift`` :math:`1` plus the offset :math:`\tilde\eta`,
        ``beta`` :math:`(\log\sigma(\tilde\eta), -\log\sigma(-\tilde\eta), 1)`):

        .. math::

            -\frac{\partial \log L}{\partial w_k} = -\sum_{n,s}
            \frac{\sigma_{sn}(1-\sigma_{sn})}{S}\Big(\frac{y_n}{p'_n}
            - \frac{1-y_n}{1-p'_n}\Big) F_{k,sn}

        (L-BFGS-B; ``a > 0`` for platt, ``a, c >= 0`` for beta), started from the same
        map fitted on the predictive means."""
        from scipy.optimize import minimize

        if method not in ("platt", "shift", "beta"):
            raise SpecError(f"on='draws' supports method 'platt', 'shift' or 'beta', got "
                            f"{method!r} (isotonic maps the mean: on='mean')")
        m = np.asarray(m, np.float64)
        if m.ndim == 1:
            m = m[None, :]
        if m.ndim != 2 or not np.all(np.isfinite(m)):
            raise DataError("linear predictors must be a finite (S, n) array")
        y = _labels(y, m.shape[1])
        z = _draw_logits(m, v)
        S = z.shape[0]
        p0 = _sigmoid(z).mean(axis=0)
        start = _fit_scores(y, _logit(p0), method)
        one = np.ones_like(z)
        if method == "platt":
            F, off, names = [z, one], 0.0, ("a", "b")
            bounds = [(1e-6, None), (None, None)]
        elif method == "shift":
            F, off, names = [one], z, ("b",)
            bounds = [(None, None)]
        else:
            l1, l0m = _beta_features(z)
            F, off, names = [l1, l0m, one], 0.0, ("a", "c", "b")
            bounds = [(0.0, None), (0.0, None), (None, None)]
        x0 = np.array([max(start[k], 1e-3) if k in ("a", "c") and method == "platt"
                       else start[k] for k in names])

        def fg(w):
            t = off + sum(wk * Fk for wk, Fk in zip(w, F))
            l1_, l0_ = _log_sigmoid(t), _log_sigmoid(-t)
            L1 = np.logaddexp.reduce(l1_, axis=0) - np.log(S)
            L0 = np.logaddexp.reduce(l0_, axis=0) - np.log(S)
            f = -np.sum(y * L1 + (1 - y) * L0)
            r = np.exp(l1_ + l0_) * (y * np.exp(-L1) - (1 - y) * np.exp(-L0)) / S
            return f, np.array([-np.sum(r * Fk) for Fk in F])

        res = minimize(fg, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"maxiter": 500, "gtol": 1e-7})
        kw = dict(zip(names, (float(v) for v in res.x)))
        _check_slope(kw.get("a", 1.0) + (kw.get("c", 0.0) if method == "beta" else 0.0))
        cal = cls(method, "draws", **kw)
        return cls(method, "draws", **kw, info={
            "n": int(len(y)), "n_positive": int(y.sum()), "n_draws": int(S),
            "log_loss_before": _ll(y, p0), "log_loss_after": _ll(y, cal.apply_eta(z)),
            "converged": bool(res.success), **info})


def _fit_scores(y, z, method) -> dict:
    """Parameters of a platt/shift/beta map fitted on logits ``z`` (checked monotone)."""
    if method == "beta":
        a, b, c = _fit_beta_scores(y, z)
        _check_slope(a + c)
        return {"a": a, "b": b, "c": c}
    a, b = fit_platt(y, z, fix_slope=method == "shift")
    _check_slope(a)
    return {"a": a, "b": b}


def _check_slope(a):
    if not a > 1e-4:
        raise DataError(f"the fitted slope is a = {a:.3g} <= 0: the scores do not rank "
                        "the fitting pairs better than chance, so no increasing map fits; "
                        "check the labels and the pairs")


def _ll(y, p) -> float:
    p = np.clip(p, 1e-15, 1 - 1e-15)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _jsonable(d):
    if isinstance(d, dict):
        return {str(k): _jsonable(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_jsonable(v) for v in d]
    if isinstance(d, np.generic):
        return d.item()
    return d


def _nonzero(v):
    v = np.asarray(v, np.float64)
    return v if np.any(v > 0) else None


def _posterior(model):
    post = getattr(model, "posterior", model)  # a BayesMF or a Posterior
    if not hasattr(post, "pair_moments"):
        raise SpecError(f"expected a fitted BayesMF or a Posterior, got {type(model).__name__}")
    return post


def _check_logit(post, on):
    name = getattr(post.likelihood, "name", "")
    if on == "draws" and name != "bernoulli-logit":
        raise SpecError(f"on='draws' maps the logit link of a 'bernoulli-logit' model, not "
                        f"{name!r}; use on='mean' (a map of the predictive mean)")
    if on == "mean" and not name.startswith("bernoulli"):
        raise SpecError(f"recalibration of P(y=1) needs a Bernoulli model, not {name!r}")


# ---------------------------------------------------------------------- fitting from a model
def fit_recalibration(model, pairs, y=None, *, method: str = "beta", on: str = "draws",
                      unknown: str = "fallback", label_col: str = "y",
                      user_col: str = "user", item_col: str = "item",
                      allow_seen: bool = False, **info) -> Recalibration:
    """Fit a :class:`Recalibration` of ``model`` (a fitted ``BayesMF`` or its
    ``Posterior``, Bernoulli likelihood) on labelled pairs it was **not** fitted to.

    ``pairs``: a DataFrame with user/item columns (and the 0/1 labels in ``label_col``
    when ``y`` is omitted -- :attr:`CarveSplit.pairs` is one), Ratings, or a
    ``(users, items)`` tuple with ``y``. ``on="draws"`` (Bernoulli-logit) maps every
    posterior draw of the logit, ``on="mean"`` the predictive mean (see the module
    docstring). ``info`` is stored in the map's ``info``.

    On a posterior that already carries a map (:meth:`BayesMF.recalibrate
    <bayesmf.estimator.BayesMF.recalibrate>`, :meth:`Recalibration.attach`):
    ``on="draws"`` is fitted on the raw logits (the carried map is ignored, and attaching
    the result replaces it), ``on="mean"`` on the carried, recalibrated predictive mean
    (the new map is applied on top of it by :meth:`Recalibration.apply` /
    :meth:`Recalibration.predict`).

    A map fitted on the model's own training positives learns nothing about new pairs;
    such pairs raise :class:`~bayesmf.errors.DataError` unless ``allow_seen=True``.
    """
    if method not in _METHODS:
        raise SpecError(f"method= must be one of {list(_METHODS)}, got {method!r}")
    if on not in _ONS:
        raise SpecError(f"on= must be one of {list(_ONS)}, got {on!r}")
    if method == "isotonic" and on != "mean":
        raise SpecError("the isotonic map is fitted on predictive means: use on='mean'")
    post = _posterior(model)
    _check_logit(post, on)
    if y is None:
        if not isinstance(pairs, pd.DataFrame) or label_col not in pairs.columns:
            raise DataError(f"give the labels y=, or a DataFrame with a {label_col!r} column")
        y = pairs[label_col].to_numpy()
    users, items = raw_pairs(pairs, user_col, item_col)
    y = _labels(y, len(users))
    u, i, ku, ki = post.encode_pairs(users, items, unknown)
    n = len(u)
    if not allow_seen:
        seen = _seen_count(post, u, i, ku & ki)
        if seen:
            raise DataError(f"{seen} of the {n} pairs are training positives of the model; "
                            "fit the map on pairs it was not fitted to (recalibration_carve"
                            "), or pass allow_seen=True")
    if on == "mean":
        p = np.empty(n)
        for sl in post._chunks(n):  # predict's mean, any Bernoulli link
            p[sl] = post.predictive_mixture(u[sl], i[sl], ku[sl], ki[sl]).mean()
        return Recalibration.from_probabilities(y, np.clip(p, 0.0, 1.0), method, **info)
    from bayesmf._memory import check_allocation

    check_allocation(10 * 8 * post.n_samples * n,  # m, v, features, working arrays
                     f"a per-draw recalibration fit on {n} pairs x {post.n_samples} draws",
                     hint="carve fewer pairs, thin the posterior (Posterior.thin) or fit "
                          "on='mean'")
    m, v = post.pair_moments(u, i, ku, ki)
    return Recalibration.from_draws(y, m, _nonzero(v), method, **info)


def _seen_count(post, u, i, known) -> int:
    """How many of the known index pairs are seen (training) pairs of the posterior."""
    tr = getattr(post, "train", None)
    if tr is None or not hasattr(tr, "seen_indptr") or not known.any():
        return 0
    M = np.int64(len(post.items))
    rows = np.repeat(np.arange(len(tr.seen_indptr) - 1, dtype=np.int64),
                     np.diff(tr.seen_indptr))
    keys = np.sort(rows * M + tr.seen_indices.astype(np.int64))
    if not len(keys):
        return 0
    q = u[known].astype(np.int64) * M + i[known].astype(np.int64)
    j = np.minimum(np.searchsorted(keys, q), len(keys) - 1)
    return int((keys[j] == q).sum())


# ---------------------------------------------------------------------- the carve
def heldout_negatives(positives, counts, negatives="uniform:4", seed: int = 0) -> pd.DataFrame:
    r"""Fresh negatives for held-out positives, drawn by a sampling rule.

    ``positives``: an :class:`~bayesmf.data.interactions.Interactions` with **every**
    known positive (training and held out; none of them is ever drawn). ``counts``: the
    number :math:`k_u` of held-out positives per user, a Series indexed by raw user id
    (e.g. ``pd.Series(test_users).value_counts()``). Per user, :math:`n k_u` distinct
    negatives are drawn for a rule with ``n`` negatives per positive (for a ``/user``
    rule, :math:`\operatorname{round}(n\,k_u/n_u)` with :math:`n_u` the user's positives:
    the training ratio), from the rule's :math:`q_u` (:mod:`bayesmf.data.negatives`) without
    replacement by successive sampling: the first distinct values of the i.i.d. stream
    ``NegativeSampler.sample(..., distinct=False)``. A user whose stream holds fewer
    distinct items keeps them all (``attrs["capped_users"]`` counts them).

    Returns a DataFrame ``user, item`` (raw ids) grouped by user.
    """
    from bayesmf.data.interactions import Interactions
    from bayesmf.data.negatives import as_sampler

    if not isinstance(positives, Interactions):
        raise DataError(f"positives must be an Interactions, got {type(positives).__name__}")
    rule = as_sampler(negatives, seed=seed)
    counts = pd.Series(counts)
    c = counts.to_numpy(np.float64) if pd.api.types.is_numeric_dtype(counts) else None
    if counts.empty or c is None or not np.all(np.isfinite(c)) or (c < 0).any() \
            or not np.all(c == np.round(c)):
        raise DataError("counts must be a non-empty Series of non-negative whole numbers "
                        "per user")
    if counts.index.has_duplicates:  # one count per user: a repeated user is summed
        counts = counts.groupby(level=0, sort=False).sum()
    uidx, known = positives.users.encode(counts.index.to_numpy(), unknown="mask")
    if not known.all():
        raise DataError(f"{int((~known).sum())} user(s) of counts have no positive in "
                        "positives; give every known positive")
    k = np.zeros(positives.n_users, np.int64)
    k[uidx] = counts.to_numpy().astype(np.int64)
    n_u = positives.user_counts().astype(np.int64)
    if rule.per_positive is not None:
        need = rule.per_positive * k
    else:
        need = np.floor(rule.per_user * k / np.maximum(n_u, 1) + 0.5).astype(np.int64)
    nu, ni = rule.sample(positives, seed, distinct=False)
    # slots are i.i.d. draws from q_u, grouped by user in draw order; m_u >= need_u
    df = pd.DataFrame({"u": nu.astype(np.int64), "i": ni.astype(np.int64)})
    df = df[need[df["u"].to_numpy()] > 0]
    df = df.drop_duplicates(["u", "i"], keep="first")
    rank = df.groupby("u").cumcount().to_numpy()
    df = df[rank < need[df["u"].to_numpy()]]
    got = np.bincount(df["u"].to_numpy(), minlength=positives.n_users)
    out = pd.DataFrame({"user": positives.users.decode(df["u"].to_numpy().astype(np.int32)),
                        "item": positives.items.decode(df["i"].to_numpy().astype(np.int32))})
    out.attrs["capped_users"] = int((got < need).sum())
    out.attrs["rule"] = rule.to_string()
    return out


@dataclass(frozen=True)
class CarveSplit:
    """A recalibration carve of training positives (:func:`recalibration_carve`).

    ``fit``: the positives to fit the model on; ``pairs``: the carved positives
    (``y = 1``) and fresh negatives by the rule (``y = 0``), DataFrame ``user, item, y``;
    ``negatives``: the rule as a string; ``fraction``, ``seed``."""

    fit: object
    pairs: pd.DataFrame
    negatives: str
    fraction: float
    seed: int


def recalibration_carve(interactions, negatives="uniform:4", fraction: float = 0.1,
                        seed: int = 0) -> CarveSplit:
    """Carve a recalibration set out of **training** positives: per user
    ``round(fraction * n_u)`` positives are held out (``Interactions.fraction_split``,
    every user keeps one), and :func:`heldout_negatives` draws fresh negatives for them
    by the rule ``negatives`` among the items the remaining positives know (so the model
    fitted on ``fit`` scores every pair with fitted factors), excluding every positive.
    Fit the model on ``.fit`` with the same rule, then :func:`fit_recalibration` on
    ``.pairs``."""
    from bayesmf.data.interactions import Interactions
    from bayesmf.data.negatives import as_sampler

    if not isinstance(interactions, Interactions):
        raise DataError(f"interactions must be an Interactions, got "
                        f"{type(interactions).__name__}")
    rule = as_sampler(negatives, seed=seed)
    fit, carve = interactions.fraction_split(fraction, seed=seed)
    both = Interactions.from_arrays(
        np.concatenate([fit.users.decode(fit.user), carve.users.decode(carve.user)]),
        np.concatenate([fit.items.decode(fit.item), carve.items.decode(carve.item)]),
        user_vocab=fit.users, item_vocab=fit.items)
    cu = carve.users.decode(carve.user)
    neg = heldout_negatives(both, pd.Series(cu).value_counts(), rule,
                            seed=int(seed) + 7919)
    pos = pd.DataFrame({"user": cu, "item": carve.items.decode(carve.item)})
    pairs = pd.concat([pos.assign(y=1), neg.assign(y=0)], ignore_index=True)
    return CarveSplit(fit, pairs, rule.to_string(), float(fraction), int(seed))
