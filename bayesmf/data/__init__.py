"""Data layer: vocabularies, the ratings container, filters and splits."""

from bayesmf.data.ratings import RatingScale, Ratings
from bayesmf.data.vocab import Vocabulary

__all__ = ["Vocabulary", "Ratings", "RatingScale"]
