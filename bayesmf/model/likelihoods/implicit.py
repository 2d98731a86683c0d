r"""Confidence-weighted Gaussian preferences over the **whole** matrix: implicit feedback
(Hu, Koren & Volinsky 2008), the model of implicit ALS, made Bayesian.

Data: the observed (user, item) pairs with a count or weight :math:`r_{ui} > 0` (plays,
clicks, purchases). Every pair of the ``n_users x n_items`` matrix is an observation of a
binary preference :math:`p_{ui} = \mathbb 1[r_{ui} > 0]` with a confidence

.. math::

    c_{ui} = 1 + \alpha f(r_{ui}),\qquad f(r) = r\ (\text{``linear''})\ \text{or}\
    \log(1 + r/\epsilon)\ (\text{``log''}),\qquad c_{ui} = 1 \text{ when unobserved,}

and the observation model is

.. math::

    p_{ui} \sim \mathcal N\bigl(\eta_{ui},\ (\tau c_{ui})^{-1}\bigr),\qquad
    \eta_{ui} = \mu + b_u + b_i + U_u^\top V_i,\qquad
    \tau \sim \mathrm{Gamma}(a_\tau, b_\tau)\ (\text{or fixed}).

With the BPMF Normal-Wishart priors this is *Bayesian implicit ALS*: the MAP of the
factor-only model with fixed precisions is the HKV objective
:math:`\sum_{u,i} c_{ui}(p_{ui} - x_u^\top y_i)^2 + \lambda(\lVert X\rVert^2 +
\lVert Y\rVert^2)` with :math:`\lambda = \Lambda/\tau`.

**Never dense.** The unobserved pairs are one *background* pseudo-observation
:math:`(y_0, w_0) = (0, \tau)` shared by all pairs (:meth:`ImplicitGaussian.background`);
the observed pairs enter as corrections to it. For user :math:`u` with design rows
:math:`x_i = (1, V_i)` of all items and targets :math:`t_{ui} = p_{ui} - \mu - b_i`
(the Gibbs row conditional, :func:`bayesmf.infer.gibbs_steps.rows_draw`):

.. math::

    P_u = \Lambda_0 + \tau X^\top X + \sum_{i\in O_u} \tau(c_{ui} - 1)\, x_i x_i^\top,
    \qquad
    h_u = \Lambda_0 m_0 + \tau X^\top t^{(0)} + \sum_{i\in O_u}
          \tau\,\bigl(c_{ui} t_{ui} - t^{(0)}_{i}\bigr)\, x_i,

:math:`t^{(0)}_i = 0 - \mu - b_i` the background target: one :math:`d\times d` Gram
:math:`X^\top X` shared by all rows plus the sparse corrections, at the cost of an
explicit-rating sweep (the Gram trick of implicit ALS). The global statistics are dense
sums done in closed form: :math:`\sum_{u,i}\eta_{ui} = M\sum_u(\mu+b_u) + N\sum_i b_i +
(\sum_u U_u)^\top(\sum_i V_i)` and :math:`\sum_{u,i}\eta_{ui}^2 =
\langle A^\top A, B^\top B\rangle` with :math:`A_u = (\mu + b_u, 1, U_u)`,
:math:`B_i = (1, b_i, V_i)` (:func:`bayesmf.model.linear.full_moments`). The noise
precision's conditional is
:math:`\tau \sim \mathrm{Gamma}\bigl(a_\tau + NM/2,\ b_\tau + \tfrac12 S\bigr)`,
:math:`S = \sum_{u,i}\eta_{ui}^2 + \sum_{O}[c_{ui}(1 - \eta_{ui})^2 - \eta_{ui}^2]`.

**Internal coding.** The stored value of an observed pair is its confidence
:math:`c_{ui}` (:meth:`ImplicitGaussian.encode`); the Gibbs pseudo-observations are
:math:`z = 1` with weight :math:`w = \tau c` (no augmentation draw).

**Predictive.** For a new pair (:math:`c = 1`) the predictive of the preference is
:math:`\frac1S\sum_s\mathcal N(\eta_s, v_s + \tau_s^{-1})` (as the Gaussian family), so
``mean`` ranks by the posterior-mean preference, ``prob`` gives
:math:`P(p_{ui} > t)` and UCB/Thompson explore on the same scale. Point predictions are not clipped: ``mean`` is the score the default ``mean`` strategy ranks by
(``bayesmf predict`` writes it), also where it falls outside :math:`[0, 1]`.

Methods: ``gibbs`` (the sweep above) and ``map`` (implicit ALS,
:func:`bayesmf.infer.implicit_map.fit_map_implicit`, factors only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bayesmf.data.interactions import TRANSFORMS, confidence
from bayesmf.errors import DataError, SpecError
from bayesmf.model.likelihoods.gaussian import Gaussian

__all__ = ["ImplicitGaussian", "TRANSFORMS"]


@dataclass(frozen=True)
class ImplicitGaussian(Gaussian):
    """Confidence-weighted Gaussian preferences over all pairs (module docs).

    Parameters
    ----------
    alpha : float >= 0
        Confidence slope: :math:`c = 1 + \\alpha f(r)`.
    transform : {"linear", "log"}
        :math:`f(r) = r` or :math:`\\log(1 + r/\\epsilon)` (for heavy-tailed play counts).
    eps : float > 0
        The scale of the log transform.
    """

    alpha: float = 2.0
    transform: str = "log"
    eps: float = 1.0

    name = "implicit"
    methods = ("map", "gibbs")
    #: the unobserved pairs are observations too (:meth:`background`)
    full_matrix = True
    #: bias terms are off unless asked for (the implicit-ALS model)
    default_biases = False
    #: ``prob`` ranks by :math:`P(p_{ui} \ge 1/2)`: the preference is coded 0/1
    relevance_threshold = 0.5
    #: the estimator's default noise: fixed at tau = 16. The effective ridge strength of
    #: implicit ALS is Lambda / tau; tau learned from all N x M pairs is pinned by the
    #: unobserved ones and regularises too little for ranking (Last.fm validation NDCG@20
    #: 0.206 learned vs 0.217 at tau = 16; ML-1M within 0.004 of the best fixed tau).
    default_noise = ("fixed", 16.0)
    #: MAP is implicit ALS (:mod:`bayesmf.infer.implicit_map`)
    fitters = {"map": "bayesmf.infer.implicit_map:fit_map_implicit"}

    def __post_init__(self):
        for n in ("alpha", "eps"):
            v = getattr(self, n)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)) \
                    or not math.isfinite(float(v)):
                raise SpecError(f"implicit likelihood: {n} must be a finite number, got {v!r}")
            object.__setattr__(self, n, float(v))
        if self.alpha < 0:
            raise SpecError(f"implicit likelihood: alpha must be >= 0, got {self.alpha}")
        if self.eps <= 0:
            raise SpecError(f"implicit likelihood: eps must be > 0, got {self.eps}")
        if self.transform not in TRANSFORMS:
            raise SpecError(f"implicit likelihood: transform must be one of {TRANSFORMS}, "
                            f"got {self.transform!r}")

    # ------------------------------------------------------------------ data
    def check_values(self, y, training=False):
        y = np.asarray(y)
        if y.dtype.kind not in "iuf":
            raise DataError(f"implicit feedback needs numeric counts or weights, got dtype "
                            f"{y.dtype}")
        bad = ~np.isfinite(y)
        if bad.any():
            raise DataError(f"implicit feedback: {int(bad.sum())} count(s) are NaN or "
                            "infinite")
        neg = y <= 0
        if neg.any():
            raise DataError(
                f"implicit feedback: {int(neg.sum())} count(s) are <= 0 (e.g. "
                f"{float(y[np.flatnonzero(neg)[0]]):g}); list only the pairs a user "
                "interacted with, with a positive count or weight (unobserved pairs are "
                "implicit)")

    def encode(self, y):
        return confidence(y, self.alpha, self.transform, self.eps)

    def eta_offset(self, y):
        return 0.0

    def predictive_target(self, y):
        """A listed pair is the preference ``p = 1`` with confidence ``c`` (its count is
        not on the predictive's scale)."""
        self.check_values(y)
        c = self.encode(y)
        return np.ones_like(c), c

    def prior_scale(self, y) -> float:
        return 1.0

    def clip_range(self, scale):
        # no clipping: the reported mean is the score the default strategy ranks by (a
        # preference below 0 still orders the items; clipping would tie them)
        return -math.inf, math.inf

    def describe(self):
        f = "r" if self.transform == "linear" else f"log(1 + r/{self.eps:g})"
        return f"implicit (c = 1 + {self.alpha:g} * {f})"

    # ------------------------------------------------------------------ math
    def log_prob(self, y, eta, theta):
        """:math:`\\log\\mathcal N(1\\mid\\eta, (\\tau c)^{-1})` of an observed pair
        (internal ``y = c``); the unobserved pairs' terms are not pointwise."""
        import jax.numpy as jnp

        prec = theta["tau"] * y
        r = 1.0 - eta
        return 0.5 * (jnp.log(prec) - math.log(2.0 * math.pi)) - 0.5 * prec * r * r

    def background(self, theta):
        """``(y0, w0)``: every unobserved pair is a pseudo-observation ``0`` with weight
        ``tau`` (module docs)."""
        return 0.0, theta["tau"]

    def gaussianize(self, key, y, eta, theta):
        import jax.numpy as jnp

        return jnp.ones_like(y), theta["tau"] * y

    def update_theta(self, key, y, eta, theta, spec, full=None):
        """:math:`\\tau` from all pairs (module docs); ``full = (n_all, sum_eta,
        sum_eta2)`` are the closed-form sums over the whole matrix."""
        from bayesmf.model.reduce import total

        if full is None:
            raise SpecError("the implicit likelihood needs the full-matrix sums (full=)")
        n_all, _, sum_eta2 = full
        sse = sum_eta2 + total(y * (1.0 - eta) ** 2 - eta * eta, long=True)
        return self.update_theta_sse(key, n_all, sse, theta, spec, y.dtype, y=y)

    def update_theta_sse(self, key, n, sse, theta, spec, dtype, y=None):
        """:meth:`update_theta` from :math:`n = NM` and :math:`S` (module docs), as the
        Gibbs sweep gets them from its row draws' statistics
        (:func:`bayesmf.infer.gibbs_steps.rows_draw`, ``fit_stats``); ``y`` the observed
        confidences, for the log-likelihood's constant :math:`\\tfrac12\\sum_O\\log c`."""
        import jax.numpy as jnp

        from bayesmf.model.reduce import total

        if y is None:
            raise SpecError("the implicit likelihood's update_theta_sse needs the observed "
                            "confidences (y=)")
        theta, info = super().update_theta_sse(key, n, sse, theta, spec, dtype)
        info["log_likelihood"] = info["log_likelihood"] + 0.5 * total(
            jnp.log(jnp.asarray(y, dtype)), long=True)
        return theta, info

    def init_theta(self, y, spec):
        return {"tau": np.asarray(spec.noise_precision, np.float32)}

    def working(self, y, eta, theta):
        raise SpecError("the implicit likelihood is fitted by implicit ALS "
                        "(bayesmf.infer.implicit_map.fit_map_implicit), not IRLS")

    def prior_simulate(self, rng, eta, theta):
        raise SpecError("the implicit likelihood models the whole matrix; simulate "
                        "preferences with eta + N(0, 1/(tau c)) over all pairs yourself")
