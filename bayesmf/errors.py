"""Exception types raised by bayesmf.

Every error a user can trigger through bad input derives from :class:`BayesMFError`
and also from the matching builtin (``ValueError``, ``KeyError``, ...), so both
``except bayesmf.BayesMFError`` and ``except ValueError`` catch them.
"""

from __future__ import annotations

__all__ = [
    "BayesMFError",
    "DataError",
    "UnknownIdError",
    "SpecError",
    "UnknownOptionError",
    "NotFittedError",
    "ModelFileError",
    "MemoryLimitError",
]


class BayesMFError(Exception):
    """Base class of all errors raised deliberately by bayesmf."""


class DataError(BayesMFError, ValueError):
    """Input ratings are malformed: NaN/inf values, duplicates, wrong dtypes, empty input, ..."""


class UnknownIdError(BayesMFError, KeyError):
    """Raw user or item ids that the vocabulary does not contain (policy ``unknown="raise"``)."""

    def __init__(self, kind: str, ids, n_total: int | None = None):
        ids = list(ids)
        self.kind = kind
        self.ids = ids
        shown = ", ".join(repr(x) for x in ids[:10])
        more = f" (and {len(ids) - 10} more)" if len(ids) > 10 else ""
        n = f"{n_total if n_total is not None else len(ids)} "
        super().__init__(f"{n}unknown {kind} id(s): {shown}{more}")

    def __str__(self) -> str:  # KeyError would repr() the message otherwise
        return self.args[0]


class SpecError(BayesMFError, ValueError):
    """An invalid model or inference configuration (rank <= 0, unknown method, ...)."""


class UnknownOptionError(SpecError):
    """Options a method does not take; ``options`` lists them, ``method`` names it (so
    that a front end can name its own flags for them)."""

    def __init__(self, message: str, method: str = "", options=()):
        super().__init__(message)
        self.method = method
        self.options = list(options)


class NotFittedError(BayesMFError, RuntimeError):
    """A fitted attribute was used before ``fit`` was called."""


class ModelFileError(BayesMFError, ValueError):
    """A saved model file is missing, corrupted, truncated or of an unknown schema version."""


class MemoryLimitError(BayesMFError, MemoryError):
    """An allocation would exceed the configured memory limit."""
