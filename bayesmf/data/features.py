r"""Side information: per-user or per-item feature vectors aligned to a vocabulary.

A :class:`Features` holds one row :math:`x_r \in \mathbb R^F` per id (a dense float64
matrix, or a scipy CSR matrix when wide and sparse) and the **schema** that turned the raw
columns into those numbers, so new rows (cold-start ids) are encoded the same way and a
model file can store it (:meth:`Features.to_dict`).

Encoding of a DataFrame with an id column (``user`` or ``item``) and one column per
feature (:meth:`Features.from_frame`):

* **numeric** columns are standardised, :math:`x = (v - m)/s` with the training mean
  :math:`m` and standard deviation :math:`s` (ddof 0; :math:`s = 1` for a constant
  column), both recorded;
* **categorical** (text) columns are one-hot, one feature ``col=value`` per category seen;
* **multi-valued** text columns (``"Action|Comedy"``, any value containing ``sep``) are
  multi-hot over the categories seen (``genres=Action``...).

NaN in any column, duplicate or unknown ids and ids of the vocabulary without a row are
:class:`~bayesmf.errors.DataError`\ s. When a schema is applied to new rows
(:meth:`Features.transform`), a category not seen at fit time encodes as all zeros in that
column's block (it says nothing the model knows).

**Implicit terms** (SVD++, Koren 2008; the "flipped" item term of myFM's examples):
:func:`implicit_features` builds, from the training pairs, the column block
:math:`x_u = |N(u)|^{-1/2}\,\mathbf 1_{N(u)}` over the item ids (``N(u)``: the items user
``u`` rated; the values are not used), kind ``"implicit"`` in the schema; for items the
block over the user ids who rated the item. Used as Macau features, the prior mean of
:math:`U_u` becomes :math:`\mu_U + \beta^\top x_u = \mu_U + |N(u)|^{-1/2}\sum_{j\in
N(u)} y_j` with :math:`y_j` the rows of the link matrix :math:`\beta` -- exactly SVD++'s
user factor :math:`p_u + |N(u)|^{-1/2}\sum_j y_j` with Gaussian priors on
:math:`p_u = U_u - \mu_U - \beta^\top x_u` and on the :math:`y_j`
(:func:`add_implicit_terms` joins the block to the side features; ``BayesMF(
implicit_terms="user,item")``). In a frame, an implicit column holds the ids joined by
``sep`` (``"12|50|181"``); ids not seen at fit time are ignored and the row is normalised
by the number of known ids.

Loaders: :func:`movielens_100k_user_features` (age, gender, occupation of ``u.user``),
:func:`movielens_100k_item_features` (19 genre flags and release year of ``u.item``),
:func:`movielens_movie_features` (genres and the year in the title of a latest-small
``movies.csv``, or the ``movies`` frame of :func:`bayesmf.datasets.load_movielens`).
A missing release year is replaced by the median year and flagged in a
``year_missing`` column (so the standardised column has no NaN).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import DataError, SpecError

__all__ = ["Features", "as_features", "align_side_features", "implicit_features", "add_implicit_terms",
           "IMPLICIT_COLUMNS", "movielens_100k_user_features",
           "movielens_100k_item_features", "movielens_movie_features"]

_KINDS = ("numeric", "categorical", "multi")
#: the name of the implicit-term column of each side (the other side's ids it ranges over)
IMPLICIT_COLUMNS = {"user": "implicit:items", "item": "implicit:users"}
#: sparse="auto": CSR when there are at least this many features and the density is low
_SPARSE_MIN_FEATURES = 500
_SPARSE_MAX_DENSITY = 0.05


def _example(a) -> str:
    a = list(a)
    return ", ".join(repr(x.item() if isinstance(x, np.generic) else x) for x in a[:3]) + \
        (", ..." if len(a) > 3 else "")


class Features:
    """Feature rows ``X (n, F)`` for the ids of ``ids`` (a :class:`Vocabulary`, rows in
    its index order) with their ``schema`` (a list of column dicts: ``{"name", "kind":
    "numeric", "mean", "scale"}``, ``{"name", "kind": "categorical"|"multi",
    "categories", "sep"}``). Build with :meth:`from_frame`; ``X`` is float64 ndarray or
    ``scipy.sparse.csr_matrix``."""

    def __init__(self, ids: Vocabulary, X, schema: list, side: str = "user"):
        if side not in ("user", "item"):
            raise SpecError(f"side must be 'user' or 'item', got {side!r}")
        if not isinstance(ids, Vocabulary):
            ids = Vocabulary(ids, side)
        if sp.issparse(X):
            X = sp.csr_matrix(X, dtype=np.float64)
            vals = X.data
        else:
            X = np.asarray(X, np.float64)
            if X.ndim != 2:
                raise DataError(f"{side} features must be a 2-d matrix, got shape {X.shape}")
            vals = X
        if X.shape[0] != len(ids):
            raise DataError(f"{side} features have {X.shape[0]} rows for {len(ids)} ids")
        if not np.all(np.isfinite(vals)):
            raise DataError(f"{side} features contain NaN or inf")
        self.ids, self.X, self.schema, self.side = ids, X, list(schema), side
        names = _feature_names(self.schema)
        if len(names) != X.shape[1]:
            raise DataError(f"{side} features: the schema describes {len(names)} features, "
                            f"the matrix has {X.shape[1]} columns")
        self.names = names

    # ------------------------------------------------------------------ basics
    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.X)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        kind = "CSR" if self.is_sparse else "dense"
        return (f"Features({self.side}, rows={len(self)}, features={self.n_features}, "
                f"{kind})")

    def dense(self) -> np.ndarray:
        """``X`` as a dense float64 array."""
        return self.X.toarray() if self.is_sparse else self.X

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_frame(cls, df: pd.DataFrame, id_col: str | None = None, columns=None, *,
                   side: str | None = None, kinds: dict | None = None, sep: str = "|",
                   sparse="auto", schema: list | None = None) -> "Features":
        """Encode a DataFrame: ``id_col`` (default ``"user"`` or ``"item"``, whichever is a
        column) holds the ids, ``columns`` (default: all others) the features. ``kinds``
        forces a column's kind (``"numeric"``, ``"categorical"``, ``"multi"``); by
        default numbers are numeric, text containing ``sep`` anywhere in the column
        multi-valued, other text categorical. ``sparse``: True, False or "auto" (CSR
        when at least 500 features with density <= 5%). ``schema`` applies an existing
        schema instead of learning one (:meth:`transform`)."""
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"features must be a pandas DataFrame, got {type(df).__name__}")
        if id_col is None:
            cand = [c for c in (side, "user", "item") if c is not None and c in df.columns]
            if not cand:
                raise DataError("features need an id column 'user' or 'item' (or id_col=); "
                                f"columns are {list(df.columns)[:8]}")
            id_col = cand[0]
        if id_col not in df.columns:
            raise DataError(f"features: no id column {id_col!r} in {list(df.columns)[:8]}")
        side = side or (id_col if id_col in ("user", "item") else "user")
        raw_ids = df[id_col]
        if raw_ids.isna().any():
            raise DataError(f"features: {int(raw_ids.isna().sum())} missing {side} id(s)")
        dup = raw_ids[raw_ids.duplicated()]
        if len(dup):
            raise DataError(f"features: {dup.nunique()} {side} id(s) appear on several rows, "
                            f"e.g. {_example(dup.unique())}")
        ids = Vocabulary(raw_ids.to_numpy(), side)
        if schema is not None:
            cols = [c["name"] for c in schema]
            # an implicit-term column may be left out: no known interactions (all zeros)
            absent = [c["name"] for c in schema if c.get("kind") == "implicit"
                      and c["name"] not in df.columns]
            if absent:
                df = df.assign(**{c: "" for c in absent})
            miss = [c for c in cols if c not in df.columns]
            if miss:
                raise DataError(f"features: the schema needs column(s) {miss} missing from "
                                f"the frame")
        else:
            cols = [c for c in df.columns if c != id_col] if columns is None else list(columns)
            miss = [c for c in cols if c not in df.columns]
            if miss:
                raise DataError(f"features: no column(s) {miss} in the frame")
            if not cols:
                raise DataError("features: no feature columns")
        kinds = dict(kinds or {})
        bad = {k: v for k, v in kinds.items() if v not in _KINDS}
        if bad:
            raise SpecError(f"features: unknown kind(s) {bad}; choose from {list(_KINDS)}")
        blocks, new_schema = [], []
        for j, c in enumerate(cols):
            col = df[c]
            if col.isna().any():
                n = int(col.isna().sum())
                ex = raw_ids[col.isna()].to_numpy()
                raise DataError(f"features: column {c!r} has {n} missing (NaN) value(s), e.g. "
                                f"for {side} {_example(ex)}")
            spec = schema[j] if schema is not None else _learn(c, col, kinds.get(c), sep)
            blocks.append(_encode(spec, col, side))
            new_schema.append(spec)
        X = sp.hstack(blocks, format="csr", dtype=np.float64)
        nf, nnz = X.shape[1], X.nnz
        density = nnz / max(1, X.shape[0] * nf)
        if sparse == "auto":
            sparse = nf >= _SPARSE_MIN_FEATURES and density <= _SPARSE_MAX_DENSITY
        elif not isinstance(sparse, bool):
            raise SpecError(f"sparse must be True, False or 'auto', got {sparse!r}")
        return cls(ids, X if sparse else X.toarray(), new_schema, side)

    def transform(self, df: pd.DataFrame, id_col: str | None = None) -> "Features":
        """Encode new rows with this schema (same columns, scaling and categories)."""
        return Features.from_frame(df, id_col, side=self.side, schema=self.schema,
                                   sparse=self.is_sparse)

    def align(self, vocabulary: Vocabulary, *, missing: str = "raise") -> "Features":
        """The rows of the ids of ``vocabulary``, in its index order. ``missing="raise"``
        (default) raises a DataError naming how many ids have no row and an example;
        ``"zero"`` gives them all-zero rows (the population mean of numeric features)."""
        if missing not in ("raise", "zero"):
            raise SpecError(f"missing= must be 'raise' or 'zero', got {missing!r}")
        if not isinstance(vocabulary, Vocabulary):
            raise DataError(f"align needs a Vocabulary, got {type(vocabulary).__name__}")
        if vocabulary == self.ids:
            return self
        try:
            idx, known = self.ids.encode(vocabulary.ids, unknown="mask")
        except DataError as exc:
            raise DataError(f"{self.side} features: their ids do not match the model's "
                            f"{self.side} ids ({exc})") from exc
        if not known.all() and missing == "raise":
            ex = vocabulary.ids[~known]
            raise DataError(f"{int((~known).sum())} of {len(vocabulary)} {self.side} id(s) "
                            f"have no feature row, e.g. {_example(ex)}")
        rows = np.where(known, idx, 0)
        if self.is_sparse:
            X = self.X[rows]
            if not known.all():
                X = sp.diags(known.astype(np.float64)) @ X
            X = sp.csr_matrix(X)
        else:
            X = self.X[rows] * known[:, None]
        return Features(vocabulary, X, self.schema, self.side)

    def subset(self, ids) -> "Features":
        """The rows of the raw ``ids`` (all must be present)."""
        try:
            idx = self.ids.encode(ids)
        except KeyError as exc:
            raise DataError(f"{self.side} features: {exc.args[0]}") from None
        return Features(Vocabulary(self.ids.ids[idx], self.side), self.X[idx], self.schema,
                        self.side)

    def concat(self, other: "Features") -> "Features":
        """The rows of ``self`` followed by the rows of ``other`` (same schema, disjoint
        ids)."""
        if other.schema != self.schema:
            raise DataError(f"{self.side} features: cannot join rows encoded with another "
                            f"schema (use Features.transform)")
        ids = Vocabulary(np.concatenate([self.ids.ids, other.ids.ids.astype(
            self.ids.ids.dtype)]), self.side)
        X = (sp.vstack([self.X, sp.csr_matrix(other.X)], format="csr") if self.is_sparse
             else np.vstack([self.X, other.dense()]))
        return Features(ids, X, self.schema, self.side)

    def join(self, other: "Features") -> "Features":
        """The columns of ``self`` followed by those of ``other`` (same side; ``other``'s
        rows aligned to ``self``'s ids, every id needs a row); sparse if either is."""
        if other.side != self.side:
            raise DataError(f"cannot join {other.side} features to {self.side} features")
        other = other.align(self.ids)
        names = set(c["name"] for c in self.schema)
        clash = [c["name"] for c in other.schema if c["name"] in names]
        if clash:
            raise DataError(f"{self.side} features: column(s) {clash} appear in both")
        sparse = self.is_sparse or other.is_sparse
        X = (sp.hstack([sp.csr_matrix(self.X), sp.csr_matrix(other.X)], format="csr")
             if sparse else np.hstack([self.X, other.X]))
        return Features(self.ids, X, list(self.schema) + list(other.schema), self.side)

    @property
    def has_implicit(self) -> bool:
        """Whether a column is an implicit-term block (:func:`implicit_features`)."""
        return any(c.get("kind") == "implicit" for c in self.schema)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self, include_data: bool = True) -> dict:
        """JSON-able: ``side``, ``schema`` and ``names``; with ``include_data`` also
        ``ids`` and the matrix as CSR lists (``indptr``, ``indices``, ``data``, ``shape``)
        and ``sparse``."""
        d = {"side": self.side, "schema": _json(self.schema), "names": list(self.names)}
        if include_data:
            X = sp.csr_matrix(self.X)
            d.update(ids=self.ids.ids.tolist(), sparse=self.is_sparse,
                     shape=list(X.shape), indptr=X.indptr.tolist(),
                     indices=X.indices.tolist(), data=X.data.tolist())
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Features":
        """Inverse of :meth:`to_dict` (with data)."""
        try:
            X = sp.csr_matrix((np.asarray(d["data"], np.float64),
                               np.asarray(d["indices"], np.int64),
                               np.asarray(d["indptr"], np.int64)), shape=tuple(d["shape"]))
            ids = Vocabulary(np.asarray(d["ids"], dtype=object if d["ids"] and isinstance(
                d["ids"][0], str) else np.int64), d["side"])
            return cls(ids, X if d.get("sparse") else X.toarray(), d["schema"], d["side"])
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, DataError):
                raise
            raise DataError(f"not a stored Features record: {type(exc).__name__}: {exc}") \
                from None


def _implicit_block(rows, cols, n_rows: int, n_cols: int) -> sp.csr_matrix:
    """``A (n_rows, n_cols)`` with ``A[r, c] = |N(r)|^{-1/2}`` for the distinct pairs
    (rows without pairs stay zero)."""
    A = sp.csr_matrix((np.ones(len(rows)), (np.asarray(rows, np.int64),
                                             np.asarray(cols, np.int64))),
                      shape=(n_rows, n_cols))
    A.sum_duplicates()
    A.data[:] = 1.0
    deg = np.diff(A.indptr)
    A.data /= np.sqrt(np.repeat(np.maximum(deg, 1), deg))
    return A


def implicit_features(train, side: str, extra_pairs=None) -> Features:
    """The implicit-term block of ``side`` (module docs) from the pairs of ``train`` (a
    :class:`~bayesmf.data.ratings.Ratings` or anything with ``user``/``item`` index arrays
    and ``users``/``items`` vocabularies; its values are not used), plus ``extra_pairs``
    ``(user_idx, item_idx)``: pairs whose value is unknown but whose existence may be
    used (e.g. the test pairs, where the protocol allows). Rows: the ``side``
    vocabulary; columns: the other side's ids."""
    if side not in ("user", "item"):
        raise SpecError(f"side must be 'user' or 'item', got {side!r}")
    u, i = np.asarray(train.user, np.int64), np.asarray(train.item, np.int64)
    if extra_pairs is not None:
        try:
            eu, ei = (np.asarray(a) for a in extra_pairs)
        except (TypeError, ValueError):
            raise DataError("implicit extra pairs must be (user_idx, item_idx)") from None
        if (eu.ndim != 1 or eu.shape != ei.shape or eu.dtype.kind not in "iu"
                or ei.dtype.kind not in "iu"):
            raise DataError("implicit extra pairs must be two equal-length 1-d integer "
                            "index arrays")
        if eu.size and (eu.min() < 0 or eu.max() >= len(train.users) or ei.min() < 0
                        or ei.max() >= len(train.items)):
            raise DataError("implicit extra pairs fall outside the training vocabularies")
        u, i = np.concatenate([u, eu]), np.concatenate([i, ei])
    rows_v, cols_v = (train.users, train.items) if side == "user" else \
        (train.items, train.users)
    r, c = (u, i) if side == "user" else (i, u)
    X = _implicit_block(r, c, len(rows_v), len(cols_v))
    schema = [{"name": IMPLICIT_COLUMNS[side], "kind": "implicit", "sep": "|",
               "categories": [str(x) for x in cols_v.ids.tolist()]}]
    return Features(rows_v, X, schema, side)


def add_implicit_terms(train, terms, user_features=None, item_features=None,
                       extra_pairs=None):
    """``(user_features, item_features)`` with the implicit-term blocks of ``terms``
    (``"user"``, ``"item"``, ``"user,item"``, a tuple of them, or None/empty for none)
    joined after the given side features (module docs)."""
    sides = parse_implicit_terms(terms)
    out = {"user": as_features(user_features, "user"), "item": as_features(item_features,
                                                                        "item")}
    for side in sides:
        vocab = train.users if side == "user" else train.items
        block = implicit_features(train, side, extra_pairs)
        base = out[side]
        if base is not None and base.has_implicit:
            raise DataError(f"{side}_features already hold an implicit-term block")
        out[side] = block if base is None else base.align(vocab).join(block)
    return out["user"], out["item"]


def parse_implicit_terms(terms) -> tuple:
    """``None``/``""``/``()`` -> ``()``; ``"user,item"`` / ``("item",)`` -> the sides,
    validated."""
    if terms is None or terms is False:
        return ()
    if isinstance(terms, str):
        terms = [t.strip() for t in terms.split(",") if t.strip()]
    try:
        sides = tuple(terms)
    except TypeError:
        raise SpecError(f"implicit_terms must be 'user', 'item', 'user,item' or None, got "
                        f"{terms!r}") from None
    bad = [t for t in sides if t not in ("user", "item")]
    if bad or len(set(sides)) != len(sides):
        raise SpecError(f"implicit_terms must name 'user' and/or 'item' once each, got "
                        f"{terms!r}")
    return tuple(t for t in ("user", "item") if t in sides)


def as_features(f, side: str) -> Features | None:
    """``None``, a :class:`Features` or a DataFrame (encoded with
    :meth:`Features.from_frame`) -> Features (or None)."""
    if f is None or isinstance(f, Features):
        if f is not None and f.side != side:
            raise DataError(f"{side}_features were built for {f.side}s")
        return f
    if isinstance(f, pd.DataFrame):
        return Features.from_frame(f, side=side, id_col=side if side in f.columns else None)
    raise DataError(f"{side}_features must be a Features or a DataFrame, got "
                    f"{type(f).__name__}")


def align_side_features(train, rank: int, user_features=None, item_features=None) -> dict:
    """The side features of a fit, checked and aligned to the training vocabularies:
    ``{"user": Features | None, "item": Features | None}`` (None where not given).

    Each given side goes through :func:`as_features` (a DataFrame is encoded), then
    :meth:`Features.align` to ``train.users`` / ``train.items`` (every training id needs a
    row); the Macau prior needs ``rank >= 1`` (:class:`~bayesmf.errors.SpecError`) and at
    least one feature column (:class:`~bayesmf.errors.DataError`). Shared by every
    inference method that takes features (Gibbs, MAP, NumPyro)."""
    out = {"user": None, "item": None}
    for side, f, vocab in (("user", user_features, train.users),
                           ("item", item_features, train.items)):
        f = as_features(f, side)
        if f is None:
            continue
        if rank == 0:
            raise SpecError(f"{side}_features (the Macau prior) need rank >= 1")
        f = f.align(vocab)
        if f.n_features == 0:
            raise DataError(f"{side}_features have no feature columns")
        out[side] = f
    return out


# ----------------------------------------------------------------------------- schema
def _json(x):
    if isinstance(x, dict):
        return {str(k): _json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _feature_names(schema) -> list:
    names = []
    for c in schema:
        if c["kind"] == "numeric":
            names.append(str(c["name"]))
        else:
            names.extend(f"{c['name']}={v}" for v in c["categories"])
    return names


def _learn(name, col: pd.Series, kind, sep) -> dict:
    is_num = pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)
    if kind is None:
        if is_num:
            kind = "numeric"
        else:
            kind = "multi" if col.astype(str).str.contains(sep, regex=False).any() \
                else "categorical"
    if kind == "numeric":
        if not is_num:
            try:
                col = pd.to_numeric(col)
            except (TypeError, ValueError):
                raise DataError(f"features: column {name!r} is not numeric") from None
        v = col.to_numpy(np.float64)
        if not np.all(np.isfinite(v)):
            raise DataError(f"features: column {name!r} has inf values")
        m, s = float(v.mean()), float(v.std())
        return {"name": name, "kind": "numeric", "mean": m, "scale": s if s > 0 else 1.0}
    vals = col.astype(str)
    if kind == "multi":
        cats = sorted({t for x in vals for t in x.split(sep) if t != ""})
        return {"name": name, "kind": "multi", "categories": cats, "sep": sep}
    return {"name": name, "kind": "categorical", "categories": sorted(vals.unique().tolist())}


def _encode(spec: dict, col: pd.Series, side: str) -> sp.csr_matrix:
    n = len(col)
    kind = spec.get("kind")
    if kind == "numeric":
        try:
            v = pd.to_numeric(col).to_numpy(np.float64)
        except (TypeError, ValueError):
            raise DataError(f"features: column {spec['name']!r} is not numeric") from None
        if not np.all(np.isfinite(v)):
            raise DataError(f"features: column {spec['name']!r} has inf values")
        return sp.csr_matrix(((v - spec["mean"]) / spec["scale"])[:, None])
    if kind not in ("categorical", "multi", "implicit"):
        raise DataError(f"features: unknown column kind {kind!r} in the schema")
    cats = {str(c): j for j, c in enumerate(spec["categories"])}
    vals = col.astype(str).tolist()
    rows, cols_ = [], []
    for r, x in enumerate(vals):
        toks = x.split(spec["sep"]) if kind in ("multi", "implicit") else [x]
        for t in toks:
            j = cats.get(t)
            if j is not None:
                rows.append(r)
                cols_.append(j)
    if kind == "implicit":
        return _implicit_block(rows, cols_, n, len(cats))
    data = np.ones(len(rows))
    X = sp.csr_matrix((data, (rows, cols_)), shape=(n, len(cats)))
    X.sum_duplicates()
    X.data[:] = 1.0
    return X


# ----------------------------------------------------------------------------- loaders
_ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy",
                  "Crime", "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror",
                  "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")


def _ml100k_path(path, name) -> Path:
    p = Path(path)
    if p.is_dir():
        p = p / name
    if not p.exists():
        raise DataError(f"MovieLens 100K file not found: {p}")
    return p


def movielens_100k_user_features(path) -> Features:
    """User features of MovieLens 100K from ``u.user`` (``path``: the file or its folder):
    age (standardised), gender and occupation (one-hot); the zip code is not used."""
    df = pd.read_csv(_ml100k_path(path, "u.user"), sep="|", header=None,
                     names=["user", "age", "gender", "occupation", "zip"],
                     dtype={"user": np.int64, "age": np.float64, "gender": str,
                            "occupation": str, "zip": str})
    return Features.from_frame(df[["user", "age", "gender", "occupation"]], "user",
                               kinds={"gender": "categorical", "occupation": "categorical"})


def _year_columns(years: pd.Series) -> pd.DataFrame:
    miss = years.isna()
    fill = float(years.median()) if (~miss).any() else 0.0
    return pd.DataFrame({"year": years.fillna(fill).astype(np.float64),
                         "year_missing": miss.astype(np.float64)})


def movielens_100k_item_features(path) -> Features:
    """Item features of MovieLens 100K from ``u.item`` (latin-1): the 19 genre flags (as
    the multi-hot column ``genres``) and the release year (standardised; missing years
    at the median, flagged by ``year_missing``)."""
    df = pd.read_csv(_ml100k_path(path, "u.item"), sep="|", header=None, encoding="latin-1",
                     dtype=str, keep_default_na=False)
    flags = df.iloc[:, 5:24].to_numpy() == "1"
    genres = ["|".join(g for g, f in zip(_ML100K_GENRES, row) if f) or "(none)"
              for row in flags]
    years = pd.to_datetime(df[2], format="%d-%b-%Y", errors="coerce").dt.year
    out = pd.concat([pd.DataFrame({"item": df[0].astype(np.int64), "genres": genres}),
                     _year_columns(years)], axis=1)
    return Features.from_frame(out, "item", kinds={"genres": "multi"})


def movielens_movie_features(movies) -> Features:
    """Item features of a MovieLens ``movies.csv`` (latest-small/ml-25m layout: ``movieId,
    title, genres``; a path, or the ``movies`` frame of
    :func:`bayesmf.datasets.load_movielens`, indexed by item): ``genres`` multi-hot and
    the year in the title ``"... (1995)"`` (standardised; missing at the median, flagged
    by ``year_missing``)."""
    if isinstance(movies, (str, Path)):
        df = pd.read_csv(movies, dtype={"movieId": np.int64, "title": str, "genres": str})
        df = df.rename(columns={"movieId": "item"})
    elif isinstance(movies, pd.DataFrame):
        df = movies.reset_index() if "item" not in movies.columns else movies.copy()
        if "item" not in df.columns and "movieId" in df.columns:
            df = df.rename(columns={"movieId": "item"})
    else:
        raise DataError(f"movies must be a path or a DataFrame, got {type(movies).__name__}")
    if not {"item", "title", "genres"} <= set(df.columns):
        raise DataError("movies need item (movieId), title and genres columns")
    years = df["title"].astype(str).map(
        lambda t: (lambda m: float(m.group(1)) if m else np.nan)(
            re.search(r"\((\d{4})\)\s*$", t.strip())))
    out = pd.concat([pd.DataFrame({"item": df["item"].to_numpy(),
                                   "genres": df["genres"].fillna("(no genres listed)")
                                   .to_numpy()}),
                     _year_columns(pd.Series(years.to_numpy()))], axis=1)
    return Features.from_frame(out, "item", kinds={"genres": "multi"})
