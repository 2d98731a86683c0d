r"""Choosing the implicit model's confidence on a carve of the training data.

The confidence-weighted implicit model (:class:`~bayesmf.model.likelihoods.ImplicitGaussian`,
Hu, Koren & Volinsky 2008) weighs an observed pair by :math:`c_{ui} = 1 + \alpha f(r_{ui})`
and every unobserved pair by 1. Its slope :math:`\alpha` sets how much more a listed pair
counts than an unlisted one, and no single value suits every dataset: on the validation
carves of ``benchmarks/bench_implicit_unseen.py`` MovieLens 100K (every rating a
positive) prefers :math:`\alpha = 0.5`, MovieLens latest-small (``rating >= 4``)
:math:`\alpha = 4`, Last.fm play counts the default :math:`\alpha = 2`
(``results/implicit_unseen.md``). The noise precision and the factor priors need no
such choice (fixed at 16, and learned; :class:`ImplicitGaussian` docs).

:func:`select_confidence` chooses :math:`\alpha` the way the peers are tuned: per user,
a ``fraction`` of the training pairs is held out
(:meth:`~bayesmf.data.interactions.Interactions.fraction_split`); a short Gibbs chain
(``num_warmup`` + ``num_samples`` sweeps) of the same model is fitted to the rest for
each candidate, and each is scored by full-ranking NDCG@k of the held-out pairs among
every item outside the user's carve-training pairs, ranked by the posterior-mean
preference (:func:`~bayesmf.evaluate.protocols.ranking_evaluate`, the ``mean``
strategy). The candidates differ only in the confidence values, not in any shape, so the
carve's sweep compiles once. The held-out pairs are then fitted with everything else:
the caller fits the chosen likelihood on all training pairs (the CLI's
``--confidence auto`` does both).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayesmf.data.interactions import Interactions
from bayesmf.errors import DataError, SpecError
from bayesmf.estimator import BayesMF
from bayesmf.evaluate.protocols import ranking_evaluate
from bayesmf.model.likelihoods import ImplicitGaussian

__all__ = ["select_confidence", "ConfidenceSelection", "CONFIDENCE_CANDIDATES"]

#: the slopes tried by default, with the log transform :math:`f(r) = \log(1 + r)` (the
#: default's; on 0/1 data it is the constant :math:`\log 2`)
CONFIDENCE_CANDIDATES = tuple(ImplicitGaussian(alpha=a) for a in (0.5, 1.0, 2.0, 4.0, 8.0))


@dataclass
class ConfidenceSelection:
    """What :func:`select_confidence` found: the chosen ``likelihood``, the carve score of
    every candidate (``table``: one row per candidate, in the order tried) and the
    settings of the search (``info``)."""

    likelihood: ImplicitGaussian
    table: pd.DataFrame
    info: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-able record (the CLI stores it in the model file's attributes)."""
        return {"chosen": _label(self.likelihood),
                "candidates": [{k: (float(v) if isinstance(v, float) else v)
                                for k, v in row.items()}
                               for row in self.table.to_dict("records")],
                **self.info}


def _label(lik: ImplicitGaussian) -> str:
    return f"{lik.transform}:{lik.alpha:g}" + (f":{lik.eps:g}" if lik.eps != 1.0 else "")


def select_confidence(interactions: Interactions, candidates=CONFIDENCE_CANDIDATES, *,
                      rank: int = 64, fraction: float = 0.2, k: int = 20,
                      num_warmup: int = 30, num_samples: int = 30, seed: int = 0,
                      callback=None, **model_options) -> ConfidenceSelection:
    """Choose the implicit likelihood's confidence among ``candidates`` on a per-user
    carve of ``interactions`` (module docs). ``candidates``: ImplicitGaussian objects (at
    least two; the default :data:`CONFIDENCE_CANDIDATES` are :math:`\\alpha` in 0.5 -
    8 with the log transform). ``rank``, ``seed`` and ``model_options`` (e.g.
    ``noise_precision``, ``prior``) go to every carve fit (``BayesMF(method="gibbs",
    ...)``), as they should to the final fit. ``callback(row)``, if given, is called with
    each candidate's table row (a dict) as soon as it is scored (progress of a long
    search). Returns a :class:`ConfidenceSelection`; the winner is the highest
    ``ndcg@k`` (the first of equal ones)."""
    if not isinstance(interactions, Interactions):
        raise DataError("select_confidence needs implicit-feedback Interactions (events of "
                        f"user, item[, count]), got {type(interactions).__name__}")
    cands = list(candidates)
    if len(cands) < 2 or not all(isinstance(c, ImplicitGaussian) for c in cands):
        raise SpecError("select_confidence needs at least two ImplicitGaussian candidates, "
                        f"got {cands!r}")
    for n, v in (("num_warmup", num_warmup), ("num_samples", num_samples), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) \
                or v < (0 if n == "num_warmup" else 1):
            raise SpecError(f"select_confidence: {n} must be a "
                            f"{'non-negative' if n == 'num_warmup' else 'positive'} "
                            f"integer, got {v!r}")
    for n in ("method", "likelihood", "num_chains"):
        if n in model_options:
            raise SpecError(f"select_confidence fits one Gibbs chain of each candidate; "
                            f"{n}= is not an option here")
    t0 = time.perf_counter()
    train, test = interactions.fraction_split(fraction, seed=seed)
    if test.nnz == 0:
        raise DataError(f"select_confidence: holding out {fraction:g} of each user's pairs "
                        "leaves no held-out pair (every user has one pair, or the fraction "
                        "is too small); choose the confidence by hand")
    rows = []
    for lik in cands:
        m = BayesMF(method="gibbs", rank=rank, likelihood=lik, num_warmup=num_warmup,
                    num_samples=num_samples, seed=seed, **model_options).fit(train)
        r = ranking_evaluate(m.posterior_, test, k, "full")
        rows.append({"confidence": _label(lik), "transform": lik.transform,
                     "alpha": lik.alpha, "eps": lik.eps, f"ndcg@{k}": r[f"ndcg@{k}"],
                     f"recall@{k}": r[f"recall@{k}"], "fit_seconds": m.fit_seconds_})
        if callback is not None:
            callback(dict(rows[-1]))
    table = pd.DataFrame(rows)
    best = int(table[f"ndcg@{k}"].to_numpy().argmax())
    info = {"metric": f"ndcg@{k}", "fraction": float(fraction), "rank": int(rank),
            "num_warmup": num_warmup, "num_samples": num_samples, "seed": seed,
            "carve_train_pairs": int(train.nnz), "carve_test_pairs": int(test.nnz),
            "seconds": time.perf_counter() - t0}
    return ConfidenceSelection(cands[best], table, info)
