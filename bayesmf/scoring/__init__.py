"""Scoring: how a posterior's predictive becomes a ranking score (strategies) and the
block scorer that recommendation and ranking evaluation share. Depends on the posterior
and the predictive mixtures only; ``evaluate`` and ``recommend`` both build on it."""

from bayesmf.scoring.bounded import bounded_topn, supports_bounded
from bayesmf.scoring.scorer import Scorer, UserBlock
from bayesmf.scoring.select import topn_indices
from bayesmf.scoring.strategies import (QUANTILE_METHODS, STRATEGIES, Strategy, id_keys,
                                        make_strategy, scores_from_components,
                                        scores_from_mixture, thompson_draw_index)

__all__ = ["Scorer", "UserBlock", "Strategy", "STRATEGIES", "QUANTILE_METHODS",
           "make_strategy", "id_keys", "scores_from_components", "scores_from_mixture",
           "thompson_draw_index", "topn_indices", "bounded_topn", "supports_bounded"]
