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

Id types. A vocabulary holds either ``int64`` ids or text ids, never both. Lookups
(:meth:`Vocabulary.encode`, :meth:`~Vocabulary.extend`, :meth:`~Vocabulary.coerce`, ``in``)
accept the other type through the *canonical text of an integer*: the decimal string
``str(n)`` of an int64 ``n`` -- optional ``-``, no ``+``, no leading zeros (``"0"``
itself excepted), no spaces, no ``"-0"``. So an integer vocabulary matches ``"12"`` to
``12`` but not ``"012"``, ``"+12"`` or ``" 12"`` (those are unknown ids, and
``encode`` says why), and a text vocabulary matches the integer ``12`` to ``"12"``.
This is the one place where ids of one type meet the other (the file readers, the
estimator, the posterior and the CLI all go through it).

:func:`parse_ids` applies an id-type policy to raw ids (used by the file readers):

* ``"auto"``: text ids become ``int64`` only when **every** value is the canonical text
  of an int64 (so nothing is lost: ``str(int(s)) == s``); otherwise all stay text exactly
  as written, so ``"007"``, ``"7"`` and ``"0007"`` are three ids and ``"1e3"`` is not
  ``"1000"``. Integer input stays integer.
* ``"str"``: every id is text (integers become their canonical text).
* ``"int"``: every id must be an integer; text matching ``[+-]?[0-9]+`` (surrounding
  spaces ignored) is parsed, so ``"007"`` *is* ``7`` -- asked for explicitly.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterable

import numpy as np
import pandas as pd

from bayesmf.errors import DataError, UnknownIdError

__all__ = ["Vocabulary", "parse_ids", "ID_TYPES"]

ID_TYPES = ("auto", "str", "int")

_CANONICAL_INT = r"0|-?[1-9][0-9]*"
_LOOSE_INT = r"[ \t]*[+-]?[0-9]+[ \t]*"
_INT64_MAX = int(np.iinfo(np.int64).max)
_INT64_MIN = int(np.iinfo(np.int64).min)

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
    if arr.size and (arr.max() >= 2.0 ** 63 or arr.min() < -(2.0 ** 63)):
        raise DataError(f"{name} ids do not fit in int64 (e.g. {float(arr.max()):.3g}); give "
                        "them as integers or strings")
    return arr.astype(np.int64)


def _text_ints(arr: np.ndarray, pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """For an object array of str: ``(values, ok)`` where ``ok`` marks the entries that
    fully match ``pattern`` and fit in int64, and ``values`` holds their integers (0
    elsewhere). Vectorised with pyarrow compute (RE2 regex, string -> int64 cast); a plain
    Python loop only for matches that overflow the fast path."""
    n = len(arr)
    vals = np.zeros(n, np.int64)
    if n == 0:
        return vals, np.zeros(0, bool)
    try:
        import pyarrow as pa
        import pyarrow.compute as pc
    except ImportError:  # pragma: no cover - pyarrow is a core dependency
        return _text_ints_python(arr, pattern)
    a = pa.array(arr, type=pa.string(), from_pandas=True)
    if isinstance(a, pa.ChunkedArray):
        a = a.combine_chunks()
    ok = np.asarray(pc.fill_null(pc.match_substring_regex(a, f"^(?:{pattern})$"), False)
                    .to_numpy(zero_copy_only=False), dtype=bool).copy()
    if ok.any():
        sub = pc.replace_substring_regex(pc.utf8_trim_whitespace(a.filter(pa.array(ok))),
                                         r"^\+", "")
        try:
            vals[ok] = pc.cast(sub, pa.int64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, OverflowError):  # beyond int64 somewhere: exact loop
            v, k = _text_ints_python(np.asarray(a.filter(pa.array(ok)).to_pylist(),
                                                dtype=object), pattern)
            vals[ok] = v
            ok[np.flatnonzero(ok)[~k]] = False
    return vals, ok


def _text_ints_python(arr: np.ndarray, pattern: str) -> tuple[np.ndarray, np.ndarray]:
    """The pure-Python form of :func:`_text_ints` (exact for any length of digits)."""
    rx = re.compile(pattern)
    vals = np.zeros(len(arr), np.int64)
    ok = np.zeros(len(arr), bool)
    for j, x in enumerate(arr):
        if isinstance(x, str) and rx.fullmatch(x):
            v = int(x)
            if _INT64_MIN <= v <= _INT64_MAX:
                vals[j], ok[j] = v, True
    return vals, ok


def parse_ids(raw, id_type: str = "auto", name: str = "id") -> np.ndarray:
    """Apply an id-type policy to raw ids; returns an int64 array or an object array of str.

    ``"auto"``: integers stay integers; text becomes int64 only when every value is the
    canonical text of an int64 (``str(int(s)) == s``: no sign ``+``, no leading zeros, no
    spaces), otherwise it stays text exactly as given -- so ``"007"``/``"7"`` stay two
    ids and ``"1e3"`` is not ``1000``. ``"str"``: everything becomes text (integers
    their canonical text). ``"int"``: everything must be an integer; text matching
    ``[+-]?[0-9]+`` (surrounding spaces ignored) is parsed, so ``"007"`` becomes ``7``.

    Raises
    ------
    DataError
        An unknown ``id_type``; with ``"int"``, ids that are not integers (or overflow
        int64); ids that are neither integers nor text (see :class:`Vocabulary`).
    """
    if id_type not in ID_TYPES:
        raise DataError(f"id_type must be one of {list(ID_TYPES)}, got {id_type!r}")
    if (isinstance(raw, (pd.Series, pd.Index)) and raw.dtype != object
            and pd.api.types.is_string_dtype(raw.dtype) and id_type != "str"
            and len(raw) and not raw.isna().any()):
        # fast path for text columns read from files: test and cast them in pyarrow,
        # without making Python str objects when they are all integers
        pattern = _CANONICAL_INT if id_type == "auto" else _LOOSE_INT
        if _text_ints(raw.iloc[:256] if isinstance(raw, pd.Series) else raw[:256],
                      pattern)[1].all():
            vals, ok = _text_ints(raw, pattern)
            if ok.all():
                return vals
    arr = _as_id_array(raw, name)
    if arr.dtype != object:  # integers
        return arr.astype(str).astype(object) if id_type == "str" else arr
    if id_type == "str":
        return arr
    if id_type == "auto":
        if not _text_ints(arr[:256], _CANONICAL_INT)[1].all():  # cheap early exit
            return arr
        vals, ok = _text_ints(arr, _CANONICAL_INT)
        return vals if ok.all() else arr
    vals, ok = _text_ints(arr, _LOOSE_INT)
    if not ok.all():
        bad = pd.unique(arr[~ok])
        raise DataError(
            f"{int((~ok).sum())} {name + ' ' if name != 'id' else ''}id(s) are not integers "
            f"in the int64 range (id_type='int'), e.g. "
            f"{bad[:5].tolist()!r}; use id_type='auto' or 'str' to keep text ids"
        )
    return vals


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
        """``raw in vocab``, with the canonical-text rule between int and text ids."""
        try:
            arr = self.coerce([raw])
        except DataError:
            return False
        return bool(self._lookup(arr)[0] >= 0)

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
                # the ids' lengths too: with them the joined text splits one way only
                # (["a\x1fb", "c"] and ["a", "b\x1fc"] join alike)
                h.update(pd.Series(arr, dtype=object).str.len().to_numpy(np.int64)
                         .astype("<i8").tobytes())
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
    def coerce(self, raw) -> np.ndarray:
        """Raw ids converted to this vocabulary's id type where the canonical-text rule
        allows it: integers become their decimal text for a text vocabulary; text becomes
        int64 for an integer vocabulary when *every* value is the canonical text of an
        integer (``"12"``, not ``"012"``/``"+12"``/``" 12"``). Otherwise the ids are
        returned as they are (text that cannot match an integer vocabulary stays text and
        is reported unknown by :meth:`encode`)."""
        arr = _as_id_array(raw, self.name)
        if not len(arr) or not len(self):
            return arr
        if self.is_string:
            return arr if arr.dtype == object else arr.astype(str).astype(object)
        if arr.dtype == object:
            vals, ok = _text_ints(arr, _CANONICAL_INT)
            if ok.all():
                return vals
        return arr

    def _lookup(self, arr: np.ndarray) -> np.ndarray:
        """int32 indices (``-1`` unknown) of ids already passed through :meth:`coerce`;
        text ids in an integer vocabulary match by their canonical integer text only."""
        if arr.dtype == object and not self.is_string and len(self):
            vals, ok = _text_ints(arr, _CANONICAL_INT)
            idx = np.full(len(arr), -1, np.int32)
            if ok.any():
                idx[ok] = self._index.get_indexer(vals[ok])
            return idx
        return self._index.get_indexer(arr).astype(np.int32)

    def _type_hint(self, bad: np.ndarray) -> str | None:
        """Why text ids did not match an integer vocabulary (``None`` when it is not that)."""
        if self.is_string or bad.dtype != object or not len(self):
            return None
        vals, loose = _text_ints(bad, _LOOSE_INT)
        loose &= ~_text_ints(bad, _CANONICAL_INT)[1]  # "99999": merely unknown
        if loose.any():
            ex = bad[loose][:3].tolist()
            held = [str(v) for v in vals[loose][:3] if v in self._index]
            also = (f" (as integers, {', '.join(held)} would match: write them that way, or "
                    "read the file with id_type='int')" if held else "")
            return (f"the {self.name} ids {ex!r} are integers written with leading zeros, a "
                    f"sign or spaces; this {self.name} vocabulary holds integer ids and text "
                    f"matches one only when written as plain integers such as '7'{also}")
        return (f"this {self.name} vocabulary holds integer ids; text ids match only when "
                "written as plain integers such as '7'")

    def encode(self, raw, unknown: str = "raise"):
        """Map raw ids to int32 indices.

        ``unknown="raise"`` raises :class:`UnknownIdError` naming the unknown ids;
        ``unknown="mask"`` returns ``(indices, known_mask)`` with ``-1`` for unknown ids
        (and warns when integer-like text such as ``"007"`` went unmatched in an integer
        vocabulary). Ids of the other type (text for an integer vocabulary, integers for
        a text vocabulary) match through their canonical integer text; see the module
        docstring.
        """
        if unknown not in ("raise", "mask"):
            raise ValueError(f"unknown= must be 'raise' or 'mask', got {unknown!r}")
        arr = self.coerce(raw)
        idx = self._lookup(arr)
        known = idx >= 0
        if unknown == "raise":
            if not known.all():
                bad = pd.unique(arr[~known])
                exc = UnknownIdError(self.name, bad[:10].tolist(), len(bad))
                hint = self._type_hint(bad)
                if hint:
                    exc.args = (f"{exc.args[0]}; {hint}",)
                raise exc
            return idx
        if not known.all() and arr.dtype == object and not self.is_string:
            bad = pd.unique(arr[~known])
            _, loose = _text_ints(bad, _LOOSE_INT)
            loose &= ~_text_ints(bad, _CANONICAL_INT)[1]  # canonical text: merely unknown
            if loose.any():
                warnings.warn(f"{int(loose.sum())} {self.name} id(s) treated as unknown: "
                              f"{self._type_hint(bad)}", UserWarning, stacklevel=2)
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
        if len(self) == 0:  # an empty vocabulary takes the type of its first ids
            arr = np.asarray(raw)
            return Vocabulary(pd.unique(arr.ravel() if arr.ndim else arr.reshape(1)),
                              name=self.name)
        arr = self.coerce(raw)
        if len(arr) and len(self) and (arr.dtype == object) != self.is_string:
            # only text that is not canonical integer text reaches here (coerce converted
            # the rest)
            _, canon = _text_ints(arr, _CANONICAL_INT)
            raise DataError(
                f"cannot extend a {self.name} vocabulary of integers with strings such as "
                f"{arr[~canon][0]!r} (text joins an integer vocabulary only when written as "
                "a plain integer such as '7')"
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
