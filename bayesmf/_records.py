"""Versioned JSON records of frozen dataclasses (the ``to_dict`` / ``from_dict`` pairs of
small saved objects: a negative-sampling rule, a recalibration map)."""

from __future__ import annotations

from bayesmf.errors import SpecError

__all__ = ["dataclass_from_record"]


def dataclass_from_record(cls, d, schema: int):
    """``cls(**fields)`` from a record ``{"schema": schema, **fields}`` (a missing schema
    reads as ``schema``); a non-dict, another schema or an unknown field raise
    :class:`~bayesmf.errors.SpecError` naming ``cls``."""
    name = cls.__name__
    if not isinstance(d, dict):
        raise SpecError(f"expected a dict, got {type(d).__name__}")
    d = dict(d)
    got = d.pop("schema", schema)
    if got != schema:
        raise SpecError(f"unknown {name} schema {got!r} (this version reads {schema})")
    extra = sorted(set(d) - set(cls.__dataclass_fields__))
    if extra:
        raise SpecError(f"unknown {name} field(s) {extra}")
    return cls(**d)
