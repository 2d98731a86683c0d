r"""Counts over the **whole** matrix: hierarchical Poisson factorization (HPF; Gopalan,
Hofman & Blei 2015, "Scalable Recommendation with Hierarchical Poisson Factorization").

Data: the observed (user, item) pairs with a non-negative integer count :math:`y_{ui}`
(plays, clicks, purchases; 0/1 implicit feedback is the special case of counts 1). Every
pair of the ``n_users x n_items`` matrix is an observation; an unlisted pair has
:math:`y_{ui} = 0`. So is every pair of an id that the vocabulary lists without a
training pair: such an item is fitted as a column of observed zeros, and its prior rate
mass (about :math:`c\,k` per item) enters every user's :math:`\sum_i\beta_i`, which
lowers all other fitted rates (on Last.fm 2K 80/20, 2,207 such items cost CAVI 0.047 nats
of held-out log-likelihood per non-zero, ``benchmarks/results/hpf_loglik.md``). Build the
vocabularies from the training pairs (the default of
:meth:`~bayesmf.data.interactions.Interactions.from_arrays`) unless those zeros are real.

.. math::

    y_{ui} &\sim \mathrm{Poisson}(\theta_u^\top\beta_i)\qquad\text{for all } (u, i), \\
    \theta_{uk} &\sim \mathrm{Gamma}(a, \xi_u),\qquad
        \xi_u \sim \mathrm{Gamma}(a', a'/b')\qquad(\text{user activity}), \\
    \beta_{ik} &\sim \mathrm{Gamma}(c, \eta_i),\qquad
        \eta_i \sim \mathrm{Gamma}(c', c'/d')\qquad(\text{item popularity}),

Gamma in shape/rate form; the paper's defaults :math:`a = a' = c = c' = 0.3`,
:math:`b' = d' = 1`. The likelihood is the first line; the rest is the factor prior, an
object of its own: :class:`~bayesmf.model.priors.HierarchicalGamma` (``prior="gamma"``,
the default of a spec with this likelihood; a Gaussian factor prior is refused).
The zeros enter only through sums: the log likelihood is

.. math::

    \log p(y\mid\theta,\beta) = \sum_{y_{ui} > 0}\bigl[y_{ui}\log(\theta_u^\top\beta_i)
    - \log y_{ui}!\bigr] - \Bigl(\sum_u\theta_u\Bigr)^\top\Bigl(\sum_i\beta_i\Bigr),

so every fit costs :math:`O(\text{nnz}\cdot k + (N + M)k)`, never :math:`O(NM)`.

**In the shared linear predictor.** :math:`\eta_{ui} = \mu + b_u + b_i + U_u^\top V_i` with
:math:`\mu = b_u = b_i = 0`, :math:`U = \theta`, :math:`V = \beta` (non-negative): the
Poisson rate is :math:`\eta_{ui}` itself (identity link). The posterior also keeps the
draws ``xi`` (``(C, D, N)``) and ``eta`` (``(C, D, M)``, the *item activity*
:math:`\eta_i` of the paper, not the linear predictor). No likelihood parameter
(``theta_names = ()``).

**Inference** (the family's own fitters; it does not use the Gaussian row sweep,
:meth:`Poisson.background` is None):

* ``gibbs`` -- the conjugate Gibbs sampler with the auxiliary multinomial split of each
  count over the factors (:func:`bayesmf.infer.hpf.fit_gibbs_hpf`);
* ``cavi`` -- the paper's coordinate-ascent variational inference
  (:func:`bayesmf.infer.hpf.fit_cavi`); the Posterior holds draws from the variational
  Gamma posteriors;
* ``svi`` / ``nuts`` -- NumPyro SVI (mean-field LogNormal guide) and NUTS (small data) of
  the same model (:mod:`bayesmf.infer.hpf_numpyro`);
* ``map`` -- KL-NMF by the multiplicative updates of Lee & Seung
  (:func:`bayesmf.infer.nmf.fit_map_nmf`): the maximum-likelihood factors (the HPF
  priors with shapes below 1 have no mode).

**Optional non-negative biases** (``user_bias=True`` / ``item_bias=True`` in the spec;
off by default, ``default_biases = False``): the rate gains a user activity and an item
popularity term,

.. math::

    y_{ui} \sim \mathrm{Poisson}(\theta_u^\top\beta_i + b_u + b_i),\qquad
    b_u \sim \mathrm{Gamma}(e, f),\quad b_i \sim \mathrm{Gamma}(e, f)

(the prior's ``bias_shape`` :math:`e`, ``bias_rate`` :math:`f`; default 0.3 and 0.3). They are two
more factors whose other side is fixed at 1: :math:`A_u = (\theta_u, b_u, 1)`,
:math:`B_i = (\beta_i, 1, b_i)`, rate :math:`A_u^\top B_i`, so the auxiliary split,
CAVI's :math:`\phi` and every all-pairs sum run on :math:`A, B` unchanged, and the
conditionals are :math:`b_u\mid z \sim \mathrm{Gamma}(e + \sum_i z_{ui,b_u},\ f + M)`,
:math:`b_i\mid z \sim \mathrm{Gamma}(e + \sum_u z_{ui,b_i},\ f + N)`. They land in the
posterior's ``bu`` and ``bi`` draws, i.e. in the shared linear predictor, so prediction,
ranking and evaluation include them as they are. Every method fits them (``gibbs``,
``cavi``, ``svi``/``nuts`` with ``bu``/``bi`` sites, ``map``: KL-NMF with the same
multiplicative update for the bias columns); a global mean is refused.

**Predictive.** For a new pair the predictive is the Poisson mixture
:math:`\frac1S\sum_s\mathrm{Poisson}(\lambda_s)`, :math:`\lambda_s = \theta_{u,s}^\top
\beta_{i,s}` (:class:`~bayesmf.predictive.PoissonMixture`): ``mean`` ranks by the
posterior-mean rate, ``prob`` (default threshold 1) gives the relevance probability
:math:`P(y\ge1) = 1 - \frac1S\sum_s e^{-\lambda_s}`, UCB/LCB bound the rate: the
quantile of :math:`\lambda_s` over the draws (:meth:`PoissonMixture.bound
<bayesmf.predictive.PoissonMixture.bound>`; an integer count quantile would tie most
items).
An unknown id (population fallback) uses the population-mean rate per draw; the fallback
variance of :math:`\eta` is not added (the mixture stays Poisson). Point predictions are
not clipped (:meth:`Poisson.clip_range`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bayesmf.errors import DataError, SpecError
from bayesmf.model.likelihoods.base import Likelihood

__all__ = ["Poisson", "check_counts"]

def check_counts(y, what: str = "the Poisson likelihood") -> np.ndarray:
    """``y`` as float64 after checking that every value is a finite non-negative integer
    (:class:`~bayesmf.errors.DataError` otherwise); 0/1 data pass."""
    y = np.asarray(y)
    if y.dtype.kind == "b":
        return y.astype(np.float64)
    if y.dtype.kind not in "iuf":
        raise DataError(f"{what} models counts; got values of dtype {y.dtype}")
    y = y.astype(np.float64)
    bad = ~np.isfinite(y)
    if bad.any():
        raise DataError(f"{what}: {int(bad.sum())} count(s) are NaN or infinite")
    neg = y < 0
    if neg.any():
        raise DataError(f"{what}: {int(neg.sum())} count(s) are negative (e.g. "
                        f"{y[np.flatnonzero(neg)[0]]:g}); counts must be >= 0")
    frac = y != np.floor(y)
    if frac.any():
        raise DataError(f"{what}: {int(frac.sum())} count(s) are not integers (e.g. "
                        f"{y[np.flatnonzero(frac)[0]]:g}); give event counts, or use "
                        "likelihood='implicit' for real-valued weights")
    return y


@dataclass(frozen=True)
class Poisson(Likelihood):
    r"""Poisson counts over the whole matrix, rate :math:`A_u\cdot B_i` (module docs). No
    parameters: the factors' hierarchical Gamma prior (:math:`a, a', b', c, c', d'` and
    the biases' :math:`e, f`) is the spec's ``prior``,
    :class:`~bayesmf.model.priors.HierarchicalGamma` (``prior="gamma"``, the default
    with this likelihood)."""

    name = "poisson"
    theta_names = ()
    discrete = True
    mean_is_linear = False
    augmented = False
    row_fold = "gamma"
    methods = ("map", "gibbs", "cavi", "svi", "nuts")
    #: every pair is an observation (the zeros enter through closed-form sums)
    full_matrix = True
    #: no global mean or biases by default: the rate is theta_u . beta_i (non-negative
    #: user/item biases are optional)
    #: ``prob`` ranks by :math:`P(y \ge 1) = 1 - \frac1S\sum_s e^{-\lambda_s}` (relevance)
    relevance_threshold = 1.0
    default_biases = False
    #: non-negative factors with the HPF prior (:class:`~bayesmf.model.priors.HierarchicalGamma`)
    default_prior = "gamma"
    factor_support = "nonnegative"
    #: Gibbs: the HPF sampler; MAP: KL-NMF (``cavi`` is its own method, HPF only)
    fitters = {"gibbs": "bayesmf.infer.hpf:fit_gibbs_hpf",
               "map": "bayesmf.infer.nmf:fit_map_nmf",
               "svi": "bayesmf.infer.hpf_numpyro:fit_svi_hpf",
               "nuts": "bayesmf.infer.hpf_numpyro:fit_nuts_hpf"}

    # ------------------------------------------------------------------ data
    def check_values(self, y, training=False):
        y = check_counts(y, "the Poisson likelihood")
        if training and len(y) and not (y > 0).any():
            raise DataError("the Poisson likelihood: every training count is 0; list the "
                            "pairs with a positive count (unlisted pairs are zeros)")

    def encode(self, y):
        return check_counts(y)

    def value_range(self):
        return 0.0, math.inf

    def clip_range(self, scale):
        # no clipping: the mean is the expected count (the score the mean strategy ranks
        # by); the training scale (often all 1s) says nothing about its range
        return -math.inf, math.inf

    def background(self, theta):
        """None: the family has its own samplers, not the Gaussian background sweep."""
        return None

    # ------------------------------------------------------------------ math
    def log_prob(self, y, eta, theta):
        r""":math:`y\log\eta - \eta - \log y!` of a listed pair (jnp); the unlisted pairs
        add :math:`-\sum\eta` over the rest of the matrix, which is not pointwise."""
        import jax.numpy as jnp
        from jax.scipy.special import gammaln

        lam = jnp.maximum(eta, jnp.finfo(jnp.result_type(eta)).tiny)
        return y * jnp.log(lam) - lam - gammaln(y + 1.0)

    def point_mean(self, eta, theta):
        return eta

    def gaussianize(self, key, y, eta, theta):
        raise SpecError("the Poisson likelihood has its own Gibbs sampler "
                        "(bayesmf.infer.hpf.fit_gibbs_hpf), not the Gaussian row sweep")

    def update_theta(self, key, y, eta, theta, spec, full=None):
        raise SpecError("the Poisson likelihood has no likelihood parameter to sample")

    def working(self, y, eta, theta):
        raise SpecError("the Poisson likelihood is fitted by KL-NMF "
                        "(bayesmf.infer.nmf.fit_map_nmf), not IRLS")

    # ------------------------------------------------------------------ predictive
    def predictive(self, m, v, theta):
        """:class:`~bayesmf.predictive.PoissonMixture` of the rates ``max(m, 0)`` (the
        fallback variance ``v`` is not used: module docs)."""
        from bayesmf.predictive import PoissonMixture

        return PoissonMixture(np.maximum(np.asarray(m, np.float64), 0.0))

    def prior_simulate(self, rng, eta, theta):
        return rng.poisson(np.maximum(np.asarray(eta, np.float64), 0.0)).astype(np.float64)
