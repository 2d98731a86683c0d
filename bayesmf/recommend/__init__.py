"""Recommendation from a posterior: strategies, top-n, similar items, fold-in (backend-free)."""

from bayesmf.recommend.factors import top_items_per_factor, user_factor_shares
from bayesmf.recommend.foldin import FoldedItems, FoldedUsers, fold_in, fold_in_item
from bayesmf.recommend.similar import similar_items, similar_users
from bayesmf.scoring.strategies import STRATEGIES, Strategy, make_strategy
from bayesmf.recommend.topk import approx_error, recommend, recommend_indices

__all__ = ["recommend", "recommend_indices", "approx_error", "make_strategy", "Strategy",
           "STRATEGIES", "similar_items", "similar_users", "fold_in", "fold_in_item",
           "FoldedUsers", "FoldedItems", "top_items_per_factor", "user_factor_shares"]
