"""Posterior predictive distributions as equal-weight mixtures over posterior draws.

Every posterior predictive in bayesmf is a :class:`Mixture` (``mean, var, param_var, cdf,
logpdf, quantile, interval, prob_at_least, crps, pit, sample, expect, take``):

* :class:`GaussianMixture` ``(m, sd, param_var=None)`` -- Gaussian likelihood;
* :class:`BernoulliMixture` ``(p)`` -- 0/1 data (probit / logit);
* :class:`CategoricalMixture` ``(probs, levels)`` -- ordered rating levels (ordered probit);
* :class:`PoissonMixture` ``(rate)`` -- counts (hierarchical Poisson factorization).

``evaluate`` and ``recommend`` ask the mixture, never a formula. :func:`mixture_quantile`
is the one quantile solver of the package. Pure numpy/scipy.
"""

from bayesmf.predictive.base import PROB_EPS, DiscreteMixture, Mixture, clip_prob
from bayesmf.predictive.bernoulli import BernoulliMixture
from bayesmf.predictive.categorical import CategoricalMixture
from bayesmf.predictive.gaussian import (GaussianMixture, gauss_hermite_expectation,
                                         gaussian_crps, mixture_cdf, mixture_crps,
                                         mixture_logpdf, mixture_pit, mixture_quantile,
                                         thin_index)
from bayesmf.predictive.poisson import PoissonMixture

__all__ = ["Mixture", "DiscreteMixture", "GaussianMixture", "BernoulliMixture",
           "CategoricalMixture", "PoissonMixture", "mixture_quantile", "mixture_cdf",
           "mixture_logpdf", "mixture_pit", "mixture_crps", "gaussian_crps",
           "gauss_hermite_expectation", "thin_index", "PROB_EPS", "clip_prob"]
