"""Data layer: vocabularies, the ratings container, filters and splits.

Datasets (MovieLens loaders, the packaged ``ml-latest-small``) live in
:mod:`bayesmf.datasets`.
"""

from bayesmf.data.features import Features
from bayesmf.data.filters import FilterResult, binarize, kcore
from bayesmf.data.interactions import Interactions, InteractionSplit
from bayesmf.data.negatives import NegativeSampler, as_sampler, with_negatives
from bayesmf.data.ratings import RatingScale, Ratings
from bayesmf.data.split import (
    KFold,
    Split,
    SplitInfo,
    kfold,
    random_split,
    temporal_split,
    user_split,
)
from bayesmf.data.vocab import Vocabulary

__all__ = [
    "Vocabulary",
    "Ratings",
    "RatingScale",
    "kcore",
    "binarize",
    "FilterResult",
    "Split",
    "SplitInfo",
    "KFold",
    "random_split",
    "user_split",
    "temporal_split",
    "kfold",
    "Interactions",
    "InteractionSplit",
    "NegativeSampler",
    "as_sampler",
    "with_negatives",
    "Features",
]
