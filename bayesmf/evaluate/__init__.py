"""Evaluation of a posterior on held-out ratings: rating, calibration and ranking metrics
(backend-free: numpy/scipy only).

:func:`evaluate` is the one-call entry used by the estimator and the CLI.
"""

from __future__ import annotations

from bayesmf.data.interactions import Interactions
from bayesmf.evaluate.calibration import (calibration, coverage_curve, pit_histogram,
                                          pit_values)
from bayesmf.evaluate.counts import heldout_poisson_loglik
from bayesmf.evaluate.protocols import NothingToRank, build_task, rank_task, ranking_evaluate
from bayesmf.evaluate.ranking import (catalogue_coverage, mean_metrics, ranking_metrics,
                                      ranks_from_scores, topk_mask)
from bayesmf.evaluate.recalibration import (CarveSplit, Recalibration, fit_platt,
                                            fit_recalibration, heldout_negatives,
                                            recalibration_carve)
from bayesmf.evaluate.rating import (coverage_from_pit, gaussian_crps, mae, mixture_crps,
                                     mixture_logpdf, mixture_pit, rating_metrics, rmse)

__all__ = ["evaluate", "rmse", "mae", "gaussian_crps", "mixture_crps", "mixture_logpdf",
           "mixture_pit", "coverage_from_pit", "rating_metrics", "pit_values",
           "coverage_curve", "pit_histogram", "calibration", "ranking_metrics",
           "mean_metrics", "ranks_from_scores", "topk_mask", "catalogue_coverage",
           "build_task", "rank_task", "ranking_evaluate", "heldout_poisson_loglik",
           "Recalibration", "fit_recalibration", "recalibration_carve", "CarveSplit",
           "heldout_negatives", "fit_platt"]


def evaluate(posterior, test, *, k: int = 10, levels=(0.5, 0.8, 0.9, 0.95),
             relevance_threshold: float | None = None, ranking: bool = True,
             protocol: str = "full", draws: bool = False, seed: int = 0,
             strategy: str = "mean", n_negatives: int = 100, sampling: str | None = None,
             negatives=None, clip: bool = True, max_draws: int | None = 50, approx=None,
             widths: bool = True) -> dict:
    """All metrics of ``posterior`` on the held-out ``test`` ratings, as a JSON-able dict.

    Rating metrics (:func:`~bayesmf.evaluate.rating.rating_metrics`): ``rmse``, ``mae``
    (clipped predictive mean), ``nlpd`` (mixture log density), ``crps`` (closed form for
    the Gaussian mixture), ``coverage`` and ``interval_width`` per central-interval level,
    ``calibration_error``. Ranking metrics (``ranking=True``; protocol ``"full"`` or
    ``"sampled"``; see :func:`~bayesmf.evaluate.protocols.ranking_evaluate`) under
    ``"ranking"``: ``precision@k``, ``recall@k``, ``hit_rate@k``, ``ndcg@k``, ``map@k``,
    ``mrr@k``, ``auc`` (and ``catalogue_coverage@k`` for the full protocol). Relevance:
    ``rating >= relevance_threshold`` (default: the likelihood's relevance threshold,
    4.0 for ratings and 1 for 0/1 data; every test pair with a positive value for an
    implicit-feedback posterior unless a threshold is given). ``draws=True`` adds, for
    the rating metrics ``rmse``, ``mae``, ``nlpd``, ``crps``, ``coverage`` (per draw,
    unclipped: :mod:`bayesmf.evaluate.rating`) and every ranking metric, its
    distribution over posterior draws (``{"mean", "lower", "upper"}``, 90% interval)
    under ``"draws"``.

    An :class:`~bayesmf.data.interactions.Interactions` test set (implicit feedback) has
    no ratings to score, and an implicit-feedback posterior (a full-matrix likelihood)
    predicts preferences, not counts: the rating metrics are skipped
    (``"rating_metrics"`` says so) and every test interaction is relevant. For a
    Poisson (HPF) posterior the output also has ``heldout_loglik_per_nonzero``, the mean
    log predictive probability of the held-out non-zero counts
    (:func:`~bayesmf.evaluate.counts.heldout_poisson_loglik`, unknown ids by the
    population fallback).
    """
    out = {"method": posterior.method, "n_samples": int(posterior.n_samples)}
    if isinstance(test, Interactions):
        out["rating_metrics"] = "skipped: an Interactions test set has no ratings"
    elif posterior.likelihood.full_matrix:
        out["rating_metrics"] = ("skipped: this model covers all user-item pairs; a list of "
                                 "held-out interactions has no zeros, so rating metrics on "
                                 "it would be biased (ranking metrics are the measure)")
    else:
        out.update(rating_metrics(posterior, test, levels=levels, clip=clip, draws=draws,
                                  widths=widths))
    if posterior.likelihood.name == "poisson":  # the counts' own score (non-zeros listed)
        out["heldout_loglik_per_nonzero"] = float(
            heldout_poisson_loglik(posterior, test, unknown="fallback"))
    if ranking:
        try:
            out["ranking"] = ranking_evaluate(
                posterior, test, k, protocol, relevance_threshold=relevance_threshold,
                n_negatives=n_negatives, sampling=sampling, negatives=negatives, seed=seed,
                strategy=strategy, draws=draws, max_draws=max_draws, approx=approx)
        except NothingToRank as exc:  # no test user has a relevant known item
            out["ranking"] = {"protocol": protocol, "k": int(k), "skipped": str(exc)}
    return out
