"""Moved to :mod:`bayesmf.scoring.strategies` (shared by recommendation and evaluation);
this alias keeps ``bayesmf.recommend.strategies`` importable as the same module."""

import sys

from bayesmf.scoring import strategies as _strategies

sys.modules[__name__] = _strategies
