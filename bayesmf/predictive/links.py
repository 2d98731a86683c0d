r"""Monotone maps of a logit: the parametric recalibration links of P(relevant).

With :math:`z` a logit and :math:`\sigma(x) = 1/(1+e^{-x})`, a map replaces
:math:`\sigma(z)` by :math:`\sigma(t(z))`:

* ``"platt"`` (Platt 1999): :math:`t(z) = a z + b`, :math:`a > 0`;
* ``"shift"``: :math:`t(z) = z + b` (``a = 1``);
* ``"beta"`` (beta calibration, Kull, Silva Filho & Flach 2017):
  :math:`t(z) = a\log\sigma(z) - c\log(1-\sigma(z)) + b`, :math:`a, c \ge 0`,
  :math:`a + c > 0` (:math:`a = c` is Platt's map; :math:`a = c = 1, b = 0` the identity).

All three are strictly increasing in :math:`z`, so a map changes no ranking of a logit.
They are fitted in :mod:`bayesmf.evaluate.recalibration` and applied there and by the
recalibrated Bernoulli-logit predictive (:class:`~bayesmf.model.likelihoods.BernoulliLogit`
with ``recalibration=``), both through :func:`map_logit`. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from bayesmf.errors import SpecError

__all__ = ["LINK_MAPS", "sigmoid", "log_sigmoid", "beta_features", "map_logit",
           "check_link_map", "finite_params", "moderated_logit"]

#: the parametric maps (the isotonic map of :mod:`bayesmf.evaluate.recalibration` is not
#: a function of a logit's parameters, so it has no per-draw form)
LINK_MAPS = ("platt", "shift", "beta")


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free


def moderated_logit(m, v=None):
    r""":math:`\tilde\eta = m/\sqrt{1+\pi v/8}`: the logit whose sigmoid approximates
    :math:`E[\sigma(\eta)]` for :math:`\eta \sim \mathcal N(m, v)` (MacKay's probit
    approximation; ``m`` itself when ``v`` is None)."""
    return m if v is None else m / np.sqrt(1.0 + np.pi * v / 8.0)


def log_sigmoid(x):
    return -np.logaddexp(0.0, -x)


def beta_features(z):
    """``(log sigma(z), -log(1 - sigma(z)))``: beta calibration's features of a logit."""
    return log_sigmoid(z), -log_sigmoid(-z)


def map_logit(z, method: str, a: float, b: float, c: float):
    """:math:`t(z)` of the map (module docs); ``c`` is used by ``"beta"`` only."""
    if method == "beta":
        l1, l0m = beta_features(z)
        return a * l1 + c * l0m + b
    return a * z + b


def finite_params(a, b, c) -> tuple:
    """``(a, b, c)`` as floats; SpecError naming the first that is not a finite number."""
    vals = []
    for n, v in (("a", a), ("b", b), ("c", c)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(
                v, (int, float, np.integer, np.floating)) or not np.isfinite(v):
            raise SpecError(f"{n} must be a finite number, got {v!r}")
        vals.append(float(v))
    return tuple(vals)


def check_link_map(method: str, a: float, b: float, c: float) -> tuple:
    """``(method, a, b, c)`` as ``(str, float, float, float)`` after checking that the map
    is one of :data:`LINK_MAPS` with finite, monotone-increasing parameters; SpecError
    otherwise."""
    if method not in LINK_MAPS:
        raise SpecError(f"a link map is one of {list(LINK_MAPS)}, got {method!r}")
    a, b, c = finite_params(a, b, c)
    if method in ("platt", "shift") and a <= 0:
        raise SpecError(f"a Platt map needs a slope a > 0 (monotone increasing), got {a}")
    if method == "beta" and (a < 0 or c < 0 or a + c <= 0):
        raise SpecError(f"a beta map needs a, c >= 0 and a + c > 0 (monotone increasing), "
                        f"got a={a}, c={c}")
    if method == "shift" and a != 1.0:
        raise SpecError("the shift map has a = 1")
    return (method, a, b, c)
