r"""What the factors of a hierarchical Poisson factorization mean: the items that carry
each factor and the factor mix of each user, with posterior intervals.

For the Poisson likelihood (HPF, :mod:`bayesmf.model.likelihoods.poisson`) the factors
are non-negative, :math:`U = \theta` (users) and :math:`V = \beta` (items), and the rate
of a pair is :math:`\sum_k\theta_{uk}\beta_{ik}`: a user's expected count is a sum over
factors of "how much the user engages with factor :math:`k`" times "how much item
:math:`i` draws from factor :math:`k`". Two scale-free summaries, computed draw by draw
(:math:`s = 1..S`):

* **item weight** of item :math:`i` in factor :math:`k` (:func:`top_items_per_factor`),
  its share of the factor's item mass,

  .. math:: w_{ik}^{(s)} = \frac{\beta_{ik}^{(s)}}{\sum_{j}\beta_{jk}^{(s)}},
     \qquad \textstyle\sum_i w_{ik}^{(s)} = 1;

  a user with :math:`\theta_{uk}` in factor :math:`k` expects
  :math:`\theta_{uk}\sum_j\beta_{jk}` events from it, a fraction :math:`w_{ik}` of
  them on item :math:`i`;
* **user share** of factor :math:`k` (:func:`user_factor_shares`),

  .. math:: \pi_{uk}^{(s)} = \frac{\theta_{uk}^{(s)}}{\sum_{l}\theta_{ul}^{(s)}},
     \qquad \textstyle\sum_k \pi_{uk}^{(s)} = 1.

Both are invariant to the scaling :math:`\theta_{\cdot k}\to c\,\theta_{\cdot k}`,
:math:`\beta_{\cdot k}\to\beta_{\cdot k}/c` that leaves every rate unchanged (for the
item weight; the user share is invariant to a common scaling of the user's row), and
reported as the posterior mean over draws with a central interval (default 90%) of the
per-draw values. For a MAP fit (one draw) the interval is the point itself.

**Identifiability.** The factors are identified only up to a permutation of their
labels :math:`k`: the likelihood and the exchangeable priors are symmetric in them. A
Gibbs chain (or a CAVI / MAP run) settles on one labelling and keeps it, so the summaries
of one chain are meaningful, but factor :math:`k` of one chain need not be factor
:math:`k` of another -- pooling chains would average different factors. Both functions
therefore use one chain: the only one, or the one named by ``chain=`` (a posterior with
several chains and no ``chain`` is a :class:`~bayesmf.errors.SpecError`).

Only the Poisson likelihood is accepted (:class:`~bayesmf.errors.SpecError` otherwise):
the Gaussian-factor models have factors of either sign and identified only up to a
rotation, so "share of a factor" has no meaning there.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmf.errors import SpecError

__all__ = ["top_items_per_factor", "user_factor_shares"]


def _factor_draws(posterior, name: str, chain) -> np.ndarray:
    """Draws ``(S, rows, k)`` float64 of ``name`` (``"U"``/``"V"``) of one chain, after
    the checks of the module docs."""
    lik = posterior.likelihood
    if lik.name != "poisson":
        raise SpecError(f"factor shares need non-negative factors with labels fixed up to a "
                        f"permutation (the Poisson likelihood, HPF); this posterior's "
                        f"likelihood {lik.name!r} has factors of either sign, identified "
                        "only up to a rotation")
    if posterior.spec.rank < 1:
        raise SpecError("factor shares need latent factors (rank >= 1)")
    C = posterior.n_chains
    if chain is None:
        if C > 1:
            raise SpecError(f"this posterior has {C} chains whose factor labels may be "
                            "permuted against each other; pass chain=j (0.."
                            f"{C - 1}) to summarise one chain")
        chain = 0
    if isinstance(chain, bool) or not isinstance(chain, (int, np.integer)) \
            or not 0 <= chain < C:
        raise SpecError(f"chain must be an integer in 0..{C - 1}, got {chain!r}")
    F = np.asarray(posterior.draws[name][int(chain)], np.float64)
    if F.size and F.min() < 0:
        raise SpecError(f"{name} has negative draws; factor shares need non-negative "
                        "factors")
    return F


def _check_interval(interval: float):
    if isinstance(interval, bool) or not isinstance(interval, (int, float, np.floating)) \
            or not 0 < interval < 1:
        raise SpecError(f"interval must be in (0, 1), got {interval!r}")
    return (1.0 - interval) / 2.0, (1.0 + interval) / 2.0


def _shares(F, axis: int) -> np.ndarray:
    """``F / F.sum(axis)`` (0 where the sum is 0)."""
    tot = F.sum(axis=axis, keepdims=True)
    return F / np.where(tot > 0, tot, 1.0)


def top_items_per_factor(posterior, n: int = 10, *, interval: float = 0.9,
                         chain: int | None = None) -> pd.DataFrame:
    r"""The ``n`` items with the largest posterior-mean weight in each factor.

    Weight (module docs): :math:`w_{ik} = \beta_{ik}/\sum_j\beta_{jk}` per draw, the
    item's share of factor :math:`k`'s item mass; ``weight`` is its posterior mean,
    ``weight_lower``/``weight_upper`` the central ``interval`` (default 90%) of the
    draws. Factor labels are those of one chain, identified up to a permutation (module
    docs); ``chain`` picks the chain of a multi-chain posterior.

    Returns a DataFrame with columns ``factor`` (0-based label), ``rank`` (1 = largest
    weight), ``item`` (raw id), ``weight``, ``weight_lower``, ``weight_upper``; ``n *
    rank`` rows (fewer when there are fewer items), sorted by factor then rank.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SpecError(f"n must be an integer >= 1, got {n!r}")
    lo_q, hi_q = _check_interval(interval)
    V = _factor_draws(posterior, "V", chain)  # (S, M, k)
    S, M, K = V.shape
    W = _shares(V, axis=1)
    mean = W.mean(axis=0)  # (M, k)
    n = min(n, M)
    # top n per factor: descending mean weight, ties broken by item index
    order = np.argsort(-mean, axis=0, kind="stable")[:n]  # (n, k)
    rows = []
    for k in range(K):
        idx = order[:, k]
        w = W[:, idx, k]  # (S, n)
        lo, hi = np.quantile(w, [lo_q, hi_q], axis=0)
        rows.append(pd.DataFrame({
            "factor": np.full(n, k, np.int64), "rank": np.arange(1, n + 1, dtype=np.int64),
            "item": posterior.items.decode(idx), "weight": mean[idx, k],
            "weight_lower": lo, "weight_upper": hi}))
    return pd.concat(rows, ignore_index=True)


def user_factor_shares(posterior, users, *, interval: float = 0.9,
                       chain: int | None = None) -> pd.DataFrame:
    r"""Each user's mix over the factors: :math:`\pi_{uk} = \theta_{uk}/\sum_l\theta_{ul}`
    per draw (module docs), its posterior mean ``share`` and central ``interval``
    (``lower``, ``upper``; default 90%).

    ``users`` are raw ids of this posterior (an unknown id is an
    :class:`~bayesmf.errors.UnknownIdError`). Factor labels are those of one chain, fixed up
    to a permutation (module docs), the same labels as :func:`top_items_per_factor` of
    the same chain. Returns a DataFrame with columns ``user``, ``factor``, ``share``,
    ``lower``, ``upper``: ``k`` rows per user in the order given, factors ascending;
    the shares of a user sum to 1.
    """
    lo_q, hi_q = _check_interval(interval)
    U = _factor_draws(posterior, "U", chain)  # (S, N, k)
    raw = np.atleast_1d(np.asarray(users))
    if raw.ndim != 1:
        raise SpecError(f"users must be a 1-D list of ids, got shape {raw.shape}")
    idx = np.asarray(posterior.users.encode(raw), np.int64)
    P = _shares(U[:, idx, :], axis=2)  # (S, n, k)
    K = P.shape[2]
    lo, hi = np.quantile(P, [lo_q, hi_q], axis=0)
    return pd.DataFrame({
        "user": np.repeat(posterior.users.decode(idx), K),
        "factor": np.tile(np.arange(K, dtype=np.int64), len(idx)),
        "share": P.mean(axis=0).ravel(), "lower": lo.ravel(), "upper": hi.ravel()})
