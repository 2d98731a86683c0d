"""Vocabulary: raw user/item ids <-> contiguous ``int32`` indices.

Ids live at the boundary of the package; everything inside works with the indices
``0 .. len(vocab) - 1``. A vocabulary is immutable: :meth:`Vocabulary.extend` returns a
new vocabulary whose existing ids keep their indices and whose new ids are appended in
order of first appearance (stable, incremental growth).

Unknown-id policy of :meth:`Vocabulary.encode`:

* ``unknown="raise"`` (default): raise :class:`~bayesmf.errors.UnknownIdError` listing
  the offending ids;
* ``unknown="mask"``: return ``(index, known)`` where unknown entries have index ``-1``
  and ``known`` is a boolean mask.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import pandas as pd

from bayesmf.errors import DataError, UnknownIdError

__all__ = ["Vocabulary"]

_MISSING = object()


def _as_id_array(ids, name: str) -> np.ndarray:
    """Coerce raw ids to a 1-D numpy array of int64 or str (object), rejecting junk.

    Python sequences (lists, tuples) are inspected element-wise through an object array,
    so ``["a", 1]`` is rejected as mixed instead of silently becoming ``["a", "1"]``
    and ``[True, 2]`` is rejected instead of becoming ``[1, 2]``.
    """
    if isinstance(ids, (pd.Series, pd.Index)):
        arr = ids.to_numpy()
    elif isinstance(ids, np.ndarray):
        arr = ids
    elif isinstance(ids, (str, bytes)):
        arr = np.asarray([ids], dtype=object)
    else:
        try:
            arr = np.asarray(ids, dtype=object)
        except ValueError as exc:  # ragged nested sequences
            raise DataError(f"{name} ids must be a flat sequence of integers or strings") from exc
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise DataError(f"{name} ids must be one-dimensional, got shape {arr.shape}")
    if arr.dtype.kind == "b":
        raise DataError(f"{name} ids must be integers or strings, got booleans")
    if arr.dtype.kind in "iu":
        if arr.dtype.kind == "u" and arr.size and arr.max() > np.iinfo(np.int64).max:
            raise DataError(f"{name} ids do not fit in int64")
        return arr.astype(np.int64, copy=False)
    if arr.dtype.kind == "f":
        return _whole_floats(arr, name)
    if arr.dtype.kind in "US":
        return arr.astype(str).astype(object)
    if arr.dtype.kind == "O":
        if arr.size == 0:
            return arr.astype(np.int64)
        kind = pd.api.types.infer_dtype(arr, skipna=False)
        if kind == "integer":
            try:
                return arr.astype(np.int64)
            except OverflowError as exc:
                raise DataError(f"{name} ids do not fit in int64") from exc
        if kind == "string":
            return arr
        if kind == "floating":
            return _whole_floats(arr.astype(np.float64), name)
        bad = next(
            (x for x in arr
             if not isinstance(x, (str, int, np.integer)) or isinstance(x, (bool, np.bool_))),
            _MISSING,
        )
        if bad is _MISSING:  # only ints and strs, mixed
            bad = next(x for x in arr if isinstance(x, str))
            raise DataError(
                f"{name} ids must be all integers or all strings, not a mix (found the "
                f"string {bad!r} among integers)"
            )
        raise DataError(
            f"{name} ids must be all integers or all strings; found {bad!r} of type "
            f"{type(bad).__name__}"
        )
    raise DataError(f"{name} ids must be integers or strings, got dtype {arr.dtype}")


def _whole_floats(arr: np.ndarray, name: str) -> np.ndarray:
    if arr.size and (not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr))):
        raise DataError(
            f"{name} ids are floats that are not whole numbers (or NaN); "
            "ids must be integers or strings"
        )
    return arr.astype(np.int64)


class Vocabulary:
    """An immutable, ordered mapping of raw ids to indices ``0..n-1``.

    Parameters
    ----------
    ids : array-like of int or str
        Distinct raw ids in index order.
    name : str
        ``"user"`` or ``"item"`` (used in error messages).
    """

    __slots__ = ("_index", "name", "_fingerprint")

    def __init__(self, ids, name: str = "id"):
        arr = _as_id_array(ids, name)
        index = pd.Index(arr)
        if not index.is_unique:
            dup = index[index.duplicated()].unique()[:10].tolist()
            raise DataError(f"{name} vocabulary ids must be distinct; repeated: {dup}")
        if len(index) > np.iinfo(np.int32).max:
            raise DataError(f"too many {name} ids for int32 indices")
        self._index = index
        self.name = name
        self._fingerprint = None

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_raw(cls, raw, name: str = "id", sort: bool = True) -> "Vocabulary":
        """Build a vocabulary from raw ids with repeats (sorted unique by default,
        first-appearance order with ``sort=False``)."""
        arr = _as_id_array(raw, name)
        if sort:
            uniq = pd.unique(arr)
            try:
                uniq = np.sort(uniq)
            except TypeError as exc:  # pragma: no cover - mixed types rejected earlier
                raise DataError(f"{name} ids cannot be sorted: {exc}") from exc
        else:
            uniq = pd.unique(arr)
        return cls(uniq, name=name)

    # ------------------------------------------------------------------ queries
    @property
    def ids(self) -> np.ndarray:
        """Raw ids in index order (int64 or object array of str)."""
        return self._index.to_numpy()

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, raw) -> bool:
        return raw in self._index

    def __iter__(self):
        return iter(self._index)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Vocabulary):
            return NotImplemented
        return self.fingerprint == other.fingerprint

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in self._index[:3].tolist())
        return f"Vocabulary({self.name}, n={len(self)}, ids=[{head}{', ...' if len(self) > 3 else ''}])"

    @property
    def fingerprint(self) -> str:
        """A sha256 over the ids in order; equal fingerprints mean identical vocabularies."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            arr = self.ids
            if arr.dtype == object:
                h.update(b"str")
                h.update("\x1f".join(arr.tolist()).encode("utf-8"))
            else:
                h.update(b"int")
                h.update(np.ascontiguousarray(arr, dtype="<i8").tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    @property
    def is_string(self) -> bool:
        return self.ids.dtype == object

    # ------------------------------------------------------------------ encode / decode
    def encode(self, raw, unknown: str = "raise"):
        """Map raw ids to int32 indices.

        ``unknown="raise"`` raises :class:`UnknownIdError` naming the unknown ids;
        ``unknown="mask"`` returns ``(indices, known_mask)`` with ``-1`` for unknown ids.
        """
        if unknown not in ("raise", "mask"):
            raise ValueError(f"unknown= must be 'raise' or 'mask', got {unknown!r}")
        arr = _as_id_array(raw, self.name)
        if len(arr) and len(self) and (arr.dtype == object) != self.is_string:
            # int ids looked up in a str vocabulary (or the reverse): nothing can match,
            # which is almost always a caller mistake (e.g. ids read as text)
            kind_v = "strings" if self.is_string else "integers"
            kind_a = "strings" if arr.dtype == object else "integers"
            if unknown == "raise":
                bad = pd.unique(arr)
                raise UnknownIdError(
                    self.name, bad[:10].tolist(), len(bad)
                ) from DataError(f"{self.name} vocabulary holds {kind_v}, got {kind_a}")
        idx = self._index.get_indexer(arr).astype(np.int32)
        known = idx >= 0
        if unknown == "raise":
            if not known.all():
                bad = pd.unique(arr[~known])
                raise UnknownIdError(self.name, bad[:10].tolist(), len(bad))
            return idx
        return idx, known

    def decode(self, index) -> np.ndarray:
        """Map indices back to raw ids; raises ``IndexError`` for out-of-range indices."""
        idx = np.asarray(index)
        if idx.dtype.kind not in "iu":
            raise DataError(f"indices must be integers, got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"{self.name} index out of range 0..{len(self) - 1}")
        return self.ids[idx]

    def extend(self, raw) -> "Vocabulary":
        """Return a new vocabulary with the unseen ids of ``raw`` appended in order of
        first appearance. Existing ids keep their indices."""
        arr = _as_id_array(raw, self.name)
        if len(arr) and len(self) and (arr.dtype == object) != self.is_string:
            raise DataError(
                f"cannot extend a {self.name} vocabulary of "
                f"{'strings' if self.is_string else 'integers'} with "
                f"{'strings' if arr.dtype == object else 'integers'}"
            )
        new = pd.unique(arr[self._index.get_indexer(arr) < 0])
        if len(new) == 0:
            return self
        return Vocabulary(np.concatenate([self.ids, new.astype(self.ids.dtype)]), name=self.name)

    @staticmethod
    def ensure_same(a: "Vocabulary", b: "Vocabulary", what: str = "") -> None:
        """Raise :class:`DataError` if two vocabularies differ (mixing datasets)."""
        if a != b:
            raise DataError(
                f"{a.name} vocabularies differ{(' ' + what) if what else ''}: "
                f"{len(a)} vs {len(b)} ids (fingerprints {a.fingerprint[:8]} / "
                f"{b.fingerprint[:8]}); the data were encoded with different vocabularies"
            )

    def union(self, other: "Vocabulary" | Iterable) -> "Vocabulary":
        """Alias of :meth:`extend` accepting a vocabulary."""
        return self.extend(other.ids if isinstance(other, Vocabulary) else other)
