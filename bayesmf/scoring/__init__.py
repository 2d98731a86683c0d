"""Scoring: how a posterior's predictive becomes a ranking score (strategies) and the
block scorer that recommendation and ranking evaluation share. Depends on the posterior
and the predictive mixtures only; ``evaluate`` and ``recommend`` both build on it."""

from bayesmf.scoring.scorer import Scorer, UserBlock
from bayesmf.scoring.strategies import (STRATEGIES, Strategy, id_keys, make_strategy,
                                        scores_from_components, scores_from_mixture,
                                        thompson_draw_index)

__all__ = ["Scorer", "UserBlock", "Strategy", "STRATEGIES", "make_strategy", "id_keys",
           "scores_from_components", "scores_from_mixture", "thompson_draw_index"]
