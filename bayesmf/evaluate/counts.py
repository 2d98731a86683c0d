r"""Held-out log likelihood of counts under a Poisson factorization (HPF).

The number reported in the hierarchical Poisson factorization literature (Gopalan,
Hofman & Blei 2015 and the comparisons that follow it): the **mean log predictive
probability of the held-out non-zero counts**. For a held-out pair :math:`(u, i)` with
count :math:`y_{ui}\ge1` and posterior draws :math:`s = 1..S` of the rates
:math:`\lambda_{ui}^{(s)} = \theta_u^{(s)\top}\beta_i^{(s)}`, the predictive is the
Poisson mixture (:class:`~bayesmf.predictive.PoissonMixture`)

.. math::

    \log p(y_{ui}\mid\mathcal D) = \log\frac1S\sum_{s=1}^S
        \frac{(\lambda_{ui}^{(s)})^{y_{ui}}\,e^{-\lambda_{ui}^{(s)}}}{y_{ui}!}
    = \operatorname{logsumexp}_s\bigl[y\log\lambda^{(s)} - \lambda^{(s)}\bigr]
      - \log y! - \log S,

and the score is :math:`\frac{1}{|T_+|}\sum_{(u,i)\in T_+}\log p(y_{ui}\mid\mathcal D)`
over the held-out pairs :math:`T_+` with a positive count (higher is better). It is
computed exactly (no clipping of small probabilities, unlike the ``nlpd`` of
:func:`~bayesmf.evaluate.rating.rating_metrics`, which floors the mass at
:math:`10^{-15}`): a pair whose rate is 0 in every draw has :math:`-\infty`. For a MAP
fit (one draw) it is the plug-in Poisson log likelihood.

Zeros listed in the test set are not part of the score (it is a per-non-zero number);
``pointwise=True`` returns the log probability of every listed pair, zeros included.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln, logsumexp

from bayesmf.errors import DataError, SpecError

__all__ = ["heldout_poisson_loglik"]

#: draws x pairs per block of the rate computation
_BLOCK = 1 << 22


def _test_triples(test):
    """Raw ids and counts of a :class:`~bayesmf.data.Ratings` (``rating`` = count) or an
    :class:`~bayesmf.data.interactions.Interactions` (``count``)."""
    from bayesmf.data.interactions import Interactions
    from bayesmf.data.ratings import Ratings

    if isinstance(test, Interactions):
        y = test.count
    elif isinstance(test, Ratings):
        y = test.rating
    else:
        raise DataError(f"test must be Interactions or Ratings holding counts, got "
                        f"{type(test).__name__}")
    return test.users.decode(test.user), test.items.decode(test.item), y


def heldout_poisson_loglik(posterior, test, *, unknown: str = "raise",
                           pointwise: bool = False):
    r"""Mean log predictive probability of the held-out non-zero counts (module docs).

    Parameters
    ----------
    posterior : Posterior
        A fit of the Poisson likelihood (``method`` gibbs, cavi or map); another
        likelihood is a :class:`~bayesmf.errors.SpecError`.
    test : Interactions or Ratings
        Held-out pairs and their counts (non-negative integers, else
        :class:`~bayesmf.errors.DataError`), ids in the posterior's vocabularies.
    unknown : {"raise", "fallback"}
        A user or item the posterior has not seen: an error (default), or the
        population-mean rate per draw (the posterior's fallback).
    pointwise : bool
        Return the ``(n_pairs,)`` array of :math:`\log p(y_{ui}\mid\mathcal D)` of every
        listed pair (zeros included) instead of the mean over the non-zeros.

    Returns
    -------
    float (or ndarray with ``pointwise=True``).
    """
    from bayesmf.model.likelihoods.poisson import check_counts

    if posterior.likelihood.name != "poisson":
        raise SpecError(f"the held-out Poisson log likelihood needs a Poisson (HPF) "
                        f"posterior; this one's likelihood is {posterior.likelihood.name!r} "
                        "(use rating_metrics' nlpd)")
    users, items, y = _test_triples(test)
    y = check_counts(y, "the held-out counts")
    u, i, ku, ki = posterior.encode_pairs(users, items, unknown)
    S = posterior.n_samples
    out = np.empty(len(y))
    step = max(1, _BLOCK // max(S * max(posterior.spec.rank, 1), 1))
    for a in range(0, len(y), step):
        sl = slice(a, min(len(y), a + step))
        lam = np.asarray(posterior.predictive_mixture(u[sl], i[sl], ku[sl], ki[sl]).rate,
                         np.float64)  # (S, n)
        yy = y[sl]
        with np.errstate(divide="ignore"):
            log_lam = np.log(lam)
        # y log(lam) with 0 log 0 = 0; lam = 0 and y > 0 gives -inf
        term = np.where(yy > 0, yy * log_lam, 0.0) - lam
        out[sl] = logsumexp(term, axis=0) - np.log(S) - gammaln(yy + 1.0)
    if pointwise:
        return out
    pos = y > 0
    if not pos.any():
        raise DataError("the held-out Poisson log likelihood is a mean over the non-zero "
                        "counts; the test set has none")
    return float(out[pos].mean())
