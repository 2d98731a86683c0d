"""Datasets: MovieLens loaders and a generic rating-file reader.

MovieLens (GroupLens Research, University of Minnesota; cite F. M. Harper and J. A. Konstan,
"The MovieLens Datasets: History and Context", ACM TiiS 5(4), 2015) comes in the variants
``"100k"``, ``"1m"``, ``"10m"``, ``"20m"``, ``"25m"`` and ``"latest-small"``.

* ``"latest-small"`` (2018-09 snapshot) **ships inside the package**
  (``bayesmf/_data/ml-latest-small.zip``: ``ratings.csv``, ``movies.csv`` and its licence
  ``README.txt``), as its licence allows redistribution under the same terms. It is never
  downloaded, so it works offline.
* The other variants may not be redistributed; :func:`load_movielens` reads them from an
  official GroupLens archive or its extracted folder that you point to with ``path=``, or
  from the cache folder, downloading the official zip there on first use.

Cache folder (first match): the ``data_home=`` argument, the ``BAYESMF_DATA`` environment
variable (read at call time), else the per-user cache folder
(``$XDG_CACHE_HOME/bayesmf`` or ``~/.cache/bayesmf`` on Linux,
``~/Library/Caches/bayesmf`` on macOS, ``%LOCALAPPDATA%\\bayesmf\\Cache`` on Windows;
computed here rather than with ``platformdirs``, which is not a dependency).

Integrity of downloads. GroupLens publishes an MD5 file next to each benchmark archive
(``ml-100k.zip.md5`` and so on); those MD5 values are hard-coded here and checked after
every download (``latest-small`` has none: it changes over time, and it is packaged anyway).
GroupLens publishes no SHA-256, so the SHA-256 of the archive is **recorded on first
download** (``<archive>.sha256`` next to it) and checked on every later load from the cache
(trust on first use). A mismatch raises :class:`~bayesmf.errors.DataError` and leaves the
files for you to inspect or delete. Archives you pass with ``path=`` are read as they are.

The licence text of each dataset is returned as ``MovieLens.license``; read it before use
(research use, citation required, no commercial use, no redistribution of the benchmark
variants).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import hashlib
import importlib.resources
import importlib.util
import io
import logging
import lzma
import os
import sys
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np
import pandas as pd

from bayesmf.data.ratings import Ratings
from bayesmf.data.split import Split
from bayesmf.data.vocab import ID_TYPES, Vocabulary, parse_ids
from bayesmf.errors import DataError

__all__ = [
    "MovieLens",
    "MOVIELENS_VARIANTS",
    "load_movielens",
    "load_movielens_fold",
    "load_ratings_source",
    "load_interactions_source",
    "read_ratings_file",
    "get_data_home",
]

log = logging.getLogger(__name__)

_BASE_URL = "https://files.grouplens.org/datasets/movielens/"

_ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
)

_ML100K_FOLDS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")


@dataclass(frozen=True)
class _Variant:
    key: str
    name: str  # folder name used by GroupLens and in the cache
    archive: str  # zip file name at _BASE_URL
    md5: str | None  # published by GroupLens as <archive>.md5
    ratings: str  # file name inside the archive
    movies: str
    fmt: str  # "tab" (u.data), "dat" ('::'), "csv"


_MOVIELENS: Mapping[str, _Variant] = MappingProxyType({
    "100k": _Variant("100k", "ml-100k", "ml-100k.zip", "0e33842e24a9c977be4e0107933c0723",
                     "u.data", "u.item", "tab"),
    "1m": _Variant("1m", "ml-1m", "ml-1m.zip", "c4d9eecfca2ab87c1945afe126590906",
                   "ratings.dat", "movies.dat", "dat"),
    "10m": _Variant("10m", "ml-10M100K", "ml-10m.zip", "ce571fd55effeba0271552578f2648bd",
                    "ratings.dat", "movies.dat", "dat"),
    "20m": _Variant("20m", "ml-20m", "ml-20m.zip", "cd245b17a1ae2cc31bb14903e1204af3",
                    "ratings.csv", "movies.csv", "csv"),
    "25m": _Variant("25m", "ml-25m", "ml-25m.zip", "6b51fb2759a8657d3bfcbfc42b592ada",
                    "ratings.csv", "movies.csv", "csv"),
    "latest-small": _Variant("latest-small", "ml-latest-small", "ml-latest-small.zip", None,
                             "ratings.csv", "movies.csv", "csv"),
})

MOVIELENS_VARIANTS: tuple[str, ...] = tuple(_MOVIELENS)


# ============================================================================ result type
@dataclass(frozen=True, repr=False)
class MovieLens:
    """A loaded MovieLens dataset.

    Attributes
    ----------
    name : str
        GroupLens name, e.g. ``"ml-100k"``.
    ratings : Ratings
        All ratings, with timestamps (unix seconds); raw ids are the MovieLens ids.
    movies : pandas.DataFrame
        Display metadata indexed by raw item id (index name ``"item"``), columns
        ``title`` and ``genres`` (``|``-separated). It may list movies without ratings.
    license : str
        The dataset's own README (licence and citation terms).
    source : str
        Where it was read from.
    """

    name: str
    ratings: Ratings
    movies: pd.DataFrame
    license: str
    source: str

    def __repr__(self) -> str:
        return f"MovieLens({self.name}, {self.ratings!r}, movies={len(self.movies)})"

    def titles(self, items) -> np.ndarray:
        """Titles of raw item ids (object array; ``None`` where the id is not listed)."""
        ids = pd.Index(np.asarray(items).ravel())
        out = self.movies["title"].reindex(ids).to_numpy(dtype=object)
        return np.where(pd.isna(out), None, out)

    def with_titles(self, frame: pd.DataFrame, item_col: str = "item") -> pd.DataFrame:
        """A copy of ``frame`` with ``title`` and ``genres`` columns looked up from
        ``frame[item_col]`` (raw item ids); unknown ids get missing values."""
        if item_col not in frame.columns:
            raise DataError(f"missing column {item_col!r}; the frame has {list(frame.columns)}")
        meta = self.movies.reindex(pd.Index(frame[item_col].to_numpy()))
        out = frame.copy()
        out["title"] = meta["title"].to_numpy()
        out["genres"] = meta["genres"].to_numpy()
        return out


# ============================================================================ file access
class _Source:
    """Read members of a MovieLens zip archive or folder by base name."""

    def __init__(self, path: Path, fileobj=None):
        """``path``: an extracted dataset folder (its files are read directly) or a zip
        archive (members found by base name in any folder, shallowest first);
        ``fileobj``: the archive's bytes as a file object, ``path`` then only labels it."""
        self.path = path
        if fileobj is None and path.is_dir():
            self._zip = None
            self._names = {p.name: p for p in sorted(path.iterdir()) if p.is_file()}
            return
        try:
            self._zip = zipfile.ZipFile(path if fileobj is None else fileobj)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{path} is not a readable zip archive: {exc}") from exc
        names = sorted((n for n in self._zip.namelist() if not n.endswith("/")),
                       key=lambda n: n.count("/"))
        self._names = {}
        for n in names:
            self._names.setdefault(n.rsplit("/", 1)[-1], n)

    def close(self):
        if self._zip is not None:
            self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def has(self, name: str) -> bool:
        return name in self._names

    def find(self, prefix: str) -> str | None:
        for n in self._names:
            if n.lower().startswith(prefix.lower()):
                return n
        return None

    def open(self, name: str):
        """A binary file object for a member (streamed, not loaded into memory)."""
        if name not in self._names:
            raise DataError(f"{self.path} has no file {name!r} (it has "
                            f"{sorted(self._names)[:20]})")
        if self._zip is None:
            return open(self._names[name], "rb")
        return self._zip.open(self._names[name])

    def read(self, name: str) -> bytes:
        with self.open(name) as fh:
            return fh.read()


def _decode(b: bytes) -> str:
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        return b.decode("latin-1")


def _read_ratings(src: _Source, v: _Variant, name: str | None = None) -> pd.DataFrame:
    name = name or v.ratings
    cols = ["user", "item", "rating", "timestamp"]
    dtypes = {"user": np.int64, "item": np.int64, "rating": np.float64, "timestamp": np.int64}
    try:
        if v.fmt == "dat":  # '::' needs the slow python engine; rewrite it as tabs instead
            raw = src.read(name).replace(b"::", b"\t")
            df = pd.read_csv(io.BytesIO(raw), sep="\t", header=None, names=cols, dtype=dtypes,
                             quoting=csv.QUOTE_NONE)
        else:  # streamed from the archive: the 25M csv is never held as one byte string
            with src.open(name) as fh:
                if v.fmt == "csv":
                    df = pd.read_csv(fh, header=0, names=cols, dtype=dtypes)
                else:
                    df = pd.read_csv(fh, sep="\t", header=None, names=cols, dtype=dtypes,
                                     quoting=csv.QUOTE_NONE)
    except (ValueError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot parse {name} in {src.path} as MovieLens {v.key} "
                        f"ratings: {exc}") from exc
    return df


def _read_movies(src: _Source, v: _Variant) -> pd.DataFrame:
    if not src.has(v.movies):
        return pd.DataFrame({"title": pd.Series(dtype=object), "genres": pd.Series(dtype=object)},
                            index=pd.Index([], dtype=np.int64, name="item"))
    text = _decode(src.read(v.movies))
    if v.fmt == "csv":
        m = pd.read_csv(io.StringIO(text), dtype={"movieId": np.int64, "title": str,
                                                  "genres": str})
        m = m.rename(columns={"movieId": "item"})
    elif v.fmt == "dat":
        m = pd.read_csv(io.StringIO(text.replace("::", "\t")), sep="\t", header=None,
                        names=["item", "title", "genres"], quoting=csv.QUOTE_NONE,
                        dtype={"item": np.int64, "title": str, "genres": str})
    else:  # ml-100k u.item: id|title|release|video release|imdb url|19 genre flags
        m = pd.read_csv(io.StringIO(text), sep="|", header=None, quoting=csv.QUOTE_NONE,
                        dtype=str, keep_default_na=False)
        flags = m.iloc[:, 5:5 + len(_ML100K_GENRES)].to_numpy() == "1"
        genres = ["|".join(g for g, f in zip(_ML100K_GENRES, row) if f) for row in flags]
        m = pd.DataFrame({"item": m[0].astype(np.int64), "title": m[1], "genres": genres})
    return m.set_index("item")[["title", "genres"]]


def _read_license(src: _Source) -> str:
    name = src.find("README")
    return _decode(src.read(name)) if name else ""


def _ratings_from_frame(df: pd.DataFrame, user_vocab=None, item_vocab=None) -> Ratings:
    return Ratings.from_arrays(df["user"].to_numpy(), df["item"].to_numpy(),
                               df["rating"].to_numpy(), df["timestamp"].to_numpy(),
                               user_vocab=user_vocab, item_vocab=item_vocab)


# ============================================================================ cache
def get_data_home(data_home: str | os.PathLike | None = None) -> Path:
    """The cache folder for downloaded datasets (see the module docstring); not created."""
    if data_home is not None:
        return Path(data_home).expanduser()
    env = os.environ.get("BAYESMF_DATA")
    if env:
        return Path(env).expanduser()
    if sys.platform.startswith("win"):
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "bayesmf" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "bayesmf"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg if xdg else Path.home() / ".cache") / "bayesmf"


def _file_digests(path: Path) -> tuple[str, str]:
    md5, sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            md5.update(chunk)
            sha.update(chunk)
    return md5.hexdigest(), sha.hexdigest()


def _download(url: str, dest: Path, md5: str | None) -> None:
    """Stream ``url`` to ``dest`` (atomically), check the published MD5 and record the
    SHA-256 next to it."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    log.info("downloading %s to %s", url, dest)
    h_md5, h_sha = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as fh:
            for chunk in iter(lambda: resp.read(1 << 20), b""):
                fh.write(chunk)
                h_md5.update(chunk)
                h_sha.update(chunk)
    except OSError as exc:  # URLError, HTTPError, timeouts and disk errors are OSErrors
        tmp.unlink(missing_ok=True)
        raise DataError(f"downloading {url} failed: {exc}. Download it yourself and pass "
                        f"path= (CLI: 'movielens:VARIANT@PATH'), or put it at {dest}") from exc
    if md5 is not None and h_md5.hexdigest() != md5:
        tmp.unlink(missing_ok=True)
        raise DataError(f"checksum mismatch for {url}: md5 {h_md5.hexdigest()}, expected the "
                        f"published {md5}; the download was discarded")
    os.replace(tmp, dest)
    dest.with_name(dest.name + ".sha256").write_text(h_sha.hexdigest() + "\n")


def _verify_cached(zip_path: Path, v: _Variant) -> None:
    sidecar = zip_path.with_name(zip_path.name + ".sha256")
    md5, sha = _file_digests(zip_path)
    if sidecar.exists():
        expected = sidecar.read_text().strip()
        if sha != expected:
            raise DataError(f"the cached archive {zip_path} is corrupted or was replaced: "
                            f"sha256 {sha}, recorded {expected} at download; delete both "
                            f"files to download it again")
        return
    if v.md5 is not None and md5 != v.md5:
        raise DataError(f"the cached archive {zip_path} does not match the published "
                        f"checksum (md5 {md5}, expected {v.md5}); delete it to download "
                        f"it again")
    sidecar.write_text(sha + "\n")


def _locate(v: _Variant, path: Path) -> Path:
    """A zip archive, a dataset folder, or a folder holding either (e.g. a cache)."""
    if not path.exists():
        raise DataError(f"{path} does not exist (expected the MovieLens {v.key} zip archive "
                        f"{v.archive} or its extracted folder {v.name}/)")
    if path.is_file():
        return path
    if (path / v.ratings).is_file():
        return path
    for cand in (path / v.name, path / v.name.lower(), path / v.archive):
        if cand.exists() and (cand.is_file() or (cand / v.ratings).is_file()):
            return cand
    raise DataError(f"{path} holds neither {v.ratings} nor {v.name}/ nor {v.archive} "
                    f"(MovieLens {v.key})")


def _variant(variant: str) -> _Variant:
    if not isinstance(variant, str):
        raise DataError(f"variant must be a string, got {type(variant).__name__}")
    key = variant.strip().lower()
    key = key[3:] if key.startswith("ml-") else key
    key = {"10m100k": "10m"}.get(key, key)
    if key not in _MOVIELENS:
        raise DataError(f"unknown MovieLens variant {variant!r}; choose one of "
                        f"{list(MOVIELENS_VARIANTS)}")
    return _MOVIELENS[key]


def _open_variant(v: _Variant, data_home, path, download) -> _Source:
    if path is not None:
        return _Source(_locate(v, Path(path).expanduser()))
    if v.key == "latest-small":
        return _packaged_source()
    home = get_data_home(data_home)
    folder = home / v.name
    if (folder / v.ratings).is_file():
        return _Source(folder)
    zip_path = home / v.archive
    if zip_path.is_file():
        _verify_cached(zip_path, v)
        return _Source(zip_path)
    if not download:
        raise DataError(f"MovieLens {v.key} is not in the cache folder {home} and "
                        f"download=False; pass path= to a local copy of {v.archive}")
    _download(_BASE_URL + v.archive, zip_path, v.md5)
    return _Source(zip_path)


def _packaged_source() -> _Source:
    res = importlib.resources.files("bayesmf").joinpath("_data/ml-latest-small.zip")
    if not res.is_file():  # pragma: no cover - broken installation
        raise DataError("the packaged ml-latest-small.zip is missing from this installation")
    # read into memory: works for ordinary installs and zipped/importer-based ones alike
    data = res.read_bytes()
    return _Source(Path("bayesmf/_data/ml-latest-small.zip"), fileobj=io.BytesIO(data))


# ============================================================================ loaders
def load_movielens(variant: str = "latest-small", *, data_home=None, path=None,
                   download: bool = True) -> MovieLens:
    """Load a MovieLens dataset as :class:`MovieLens` (ratings with timestamps, movie
    titles and genres, licence text).

    Parameters
    ----------
    variant : {"100k", "1m", "10m", "20m", "25m", "latest-small"}
        ``"ml-100k"`` style names are accepted too.
    data_home : path, optional
        Cache folder (default: ``BAYESMF_DATA`` or the per-user cache, see module doc).
        It may hold the official zip (``ml-100k.zip``) or its extracted folder.
    path : path, optional
        A local official zip archive, its extracted folder, or a folder holding either.
        Read as is (no checksum), never downloads.
    download : bool, default True
        Download the official archive into the cache when it is not there.
        ``"latest-small"`` is packaged and never downloaded.

    Raises
    ------
    DataError
        Unknown variant, missing files with ``download=False``, a failed download, a
        checksum mismatch, or unparsable files.
    """
    v = _variant(variant)
    with _open_variant(v, data_home, path, download) as src:
        df = _read_ratings(src, v)
        movies = _read_movies(src, v)
        lic = _read_license(src)
        where = str(src.path)
    return MovieLens(v.name, _ratings_from_frame(df), movies, lic, where)


def load_movielens_fold(variant: str = "100k", fold: str = "u1", *, path=None,
                        data_home=None, download: bool = True) -> Split:
    """One of the official ML-100K train/test splits as a :class:`Split`.

    ``fold`` is ``"u1"`` .. ``"u5"`` (the five 80/20 folds whose test sets partition
    ``u.data``) or ``"ua"`` / ``"ub"`` (exactly 10 test ratings per user). Train and test
    share vocabularies built from both files (all 943 users and 1,682 items).
    Unpacks as ``train, test = load_movielens_fold("100k", "u1", path=...)``.
    """
    v = _variant(variant)
    if v.key != "100k":
        raise DataError(f"official train/test folds exist only for MovieLens 100k, not "
                        f"{variant!r}")
    if fold not in _ML100K_FOLDS:
        raise DataError(f"unknown ML-100K fold {fold!r}; choose one of {list(_ML100K_FOLDS)}")
    with _open_variant(v, data_home, path, download) as src:
        base = _read_ratings(src, v, f"{fold}.base")
        test = _read_ratings(src, v, f"{fold}.test")
    uv = Vocabulary.from_raw(np.concatenate([base["user"].to_numpy(), test["user"].to_numpy()]),
                             "user")
    iv = Vocabulary.from_raw(np.concatenate([base["item"].to_numpy(), test["item"].to_numpy()]),
                             "item")
    tr = _ratings_from_frame(base, uv, iv)
    te = _ratings_from_frame(test, uv, iv)
    return Split.from_pair(tr, te, "official")


# ============================================================================ generic source
_ALIASES = {
    "user": ("user", "userid", "user_id", "uid", "customer", "customer_id"),
    "item": ("item", "movieid", "item_id", "itemid", "movie_id", "iid", "artistid",
             "product", "product_id"),
    "rating": ("rating", "score", "weight", "value", "stars"),
    "timestamp": ("timestamp", "time", "ts", "datetime", "date"),
}

_COMPRESSED = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}

# pandas' default missing-value markers, used for every column except the id columns
# (where only an empty field is missing: an id such as "NA" or "null" stays an id)
_NA_VALUES = ["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan",
              "1.#IND", "1.#QNAN", "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan",
              "null"]


def _resolve_col(columns, wanted: str, default: str) -> str:
    """``wanted`` if present; for the default name, a case-insensitive known alias."""
    if wanted in columns or wanted != default:
        return wanted
    lower = {str(c).lower(): c for c in columns}
    for alias in _ALIASES[default]:
        if alias in lower:
            return lower[alias]
    return wanted


def _open_binary(path: Path):
    """The file's bytes as a binary file object, decompressing ``.gz``/``.bz2``/``.xz``
    and single-file ``.zip``."""
    suffix = path.suffix.lower()
    if suffix in _COMPRESSED:
        return _COMPRESSED[suffix](path, "rb")
    if suffix == ".zip":
        try:
            z = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"{path} is not a readable zip archive: {exc}") from exc
        names = [n for n in z.namelist() if not n.endswith("/")]
        if len(names) != 1:
            z.close()
            raise DataError(f"{path} must hold exactly one file, it holds {len(names)}")
        return z.open(names[0])
    return open(path, "rb")


def _head_line(path: Path) -> str:
    try:
        with _open_binary(path) as fh:
            line = fh.readline(65536)
    except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError) as exc:
        raise DataError(f"cannot read {path}: {exc}") from exc
    return _decode(line).rstrip("\r\n")


def _sniff(head: str) -> tuple[str, list[str]]:
    """Separator and first-line fields: ``::``, else the first of tab, ``,``, ``;``,
    ``|`` present, else runs of whitespace (or ``,`` for a single field)."""
    if "::" in head:
        sep = "::"
    else:
        sep = next((s for s in ("\t", ",", ";", "|") if s in head), None)
        if sep is None:
            sep = r"\s+" if len(head.split()) > 1 else ","
    fields = head.split(sep) if sep != r"\s+" else head.split()
    return sep, [f.strip().strip('"').strip("'").strip() for f in fields]


def _read_delimited(path: Path, user_col: str, item_col: str, rating_col: str,
                    require_rating: bool) -> pd.DataFrame:
    head = _head_line(path)
    if not head.strip():
        raise DataError(f"{path} is empty")
    sep, fields = _sniff(head)
    headerless = all(_is_number(f) for f in fields)
    need = 3 if require_rating else 2
    if headerless and len(fields) < need:
        raise DataError(f"{path} has {len(fields)} column(s) and no header; need user, "
                        f"item{' and rating' if require_rating else ''} columns")
    raw = None
    if sep == "::":  # '::' needs the slow python engine; rewrite it as tabs instead
        try:
            with _open_binary(path) as fh:
                raw = fh.read().replace(b"::", b"\t")
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise DataError(f"cannot read {path}: {exc}") from exc

    def csv_(encoding, **kw):
        if raw is not None:
            return pd.read_csv(io.BytesIO(raw), sep="\t", quoting=csv.QUOTE_NONE,
                               encoding=encoding, index_col=False, **kw)
        with _open_binary(path) as fh:
            return pd.read_csv(fh, sep=sep, engine="c", encoding=encoding, index_col=False,
                               **kw)

    def frame(encoding, **kw):
        # index_col=False: a row with more fields than the header must not turn its first
        # field into the index (every column shifted by one); an empty trailing field is
        # dropped, a non-empty one is refused
        import warnings

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", pd.errors.ParserWarning)
            out = csv_(encoding, **kw)
        for w in caught:
            if issubclass(w.category, pd.errors.ParserWarning) \
                    and "does not match length of data" in str(w.message):
                every = csv_(encoding, header=None, skiprows=1, dtype=str,
                             keep_default_na=False)
                extra = every.iloc[:, out.shape[1]:]
                if (extra != "").to_numpy().any():
                    row = int(np.flatnonzero((extra != "").to_numpy().any(axis=1))[0]) + 2
                    raise DataError(f"{path}: line {row} has more fields than the header "
                                    f"{list(out.columns)}; name every column in the header")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        return out

    def read(encoding):
        if headerless:
            names = [user_col, item_col, rating_col, "timestamp"][:len(fields)]
            names += [f"column{j}" for j in range(len(names), len(fields))]
            columns, header = names, None
        else:  # the header exactly as pandas reads it (quotes, repeated names)
            names, header = None, 0
            columns = list(frame(encoding, header=0, nrows=0).columns)
        # the id columns are read as text, exactly as written (no number parsing)
        ids = {_resolve_col(columns, user_col, "user"), _resolve_col(columns, item_col, "item")}
        ids &= set(columns)
        return frame(encoding, header=header, names=names, dtype={c: str for c in ids},
                     keep_default_na=False,
                     na_values={c: ([""] if c in ids else _NA_VALUES) for c in columns})

    try:
        try:
            return read("utf-8")
        except UnicodeDecodeError:
            return read("latin-1")
    except DataError:
        raise
    except (ValueError, pd.errors.ParserError, OSError, EOFError, lzma.LZMAError,
            zipfile.BadZipFile) as exc:
        raise DataError(f"cannot parse {path}: {exc}") from exc


def _read_parquet(path: Path) -> pd.DataFrame:
    if not (importlib.util.find_spec("pyarrow") or importlib.util.find_spec("fastparquet")):
        raise DataError(f"reading the Parquet file {path} needs pyarrow "
                        "(pip install pyarrow) or fastparquet")
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid / OSError types
        raise DataError(f"cannot read the Parquet file {path}: {exc}") from exc


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _existing_file(source) -> Path:
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(f"source must be 'movielens:VARIANT' or a file path, got "
                        f"{type(source).__name__}")
    path = Path(source).expanduser()
    if not path.exists():
        hint = (" (dataset names look like 'movielens:100k')"
                if ":" in str(source) or not path.suffix else "")
        raise DataError(f"no such file: {str(source)!r}{hint}")
    if path.is_dir():
        raise DataError(f"{path} is a folder; pass a ratings file (CSV/TSV/Parquet) or "
                        "'movielens:VARIANT@FOLDER'")
    return path


def read_ratings_file(source, *, user_col: str = "user", item_col: str = "item",
                      rating_col: str | None = "rating", timestamp_col: str | None = "auto",
                      require_rating: bool = True, id_type: str = "auto") -> pd.DataFrame:
    """Read a ratings (or user-item pairs) file into a DataFrame: the one file reader of
    :func:`load_ratings_source` and of every CLI command (``fit``, ``data info``,
    ``predict``, ``evaluate``).

    Formats: delimited text (``.csv``, ``.tsv``, ``.dat``, ``u.data`` style; optionally
    ``.gz``/``.bz2``/``.xz``/single-file ``.zip``; separator sniffed from the first line
    among ``::``, tab, ``,``, ``;``, ``|``, whitespace; UTF-8, else Latin-1) and Parquet
    (``.parquet``/``.pq``; pyarrow is a core dependency). A text file whose first line is
    all numbers has no header: its columns are user, item[, rating[, timestamp]].

    Columns. With the default names, common spellings are recognised case-insensitively
    (``userId``/``user_id``, ``movieId``/``item_id``, ``score``/``weight``,
    ``time``...). The resolved user, item and rating columns are **renamed** to
    ``user_col``, ``item_col`` and ``rating_col`` (a timestamp found by ``"auto"`` to
    ``"timestamp"``); other columns are kept. ``require_rating=False`` reads pair files
    (``predict``: ``user,item`` without ratings); the rating column is then optional,
    and ``rating_col=None`` leaves every other column as it is (no alias renaming;
    a headerless third column is named ``rating``).
    A text timestamp column is parsed as dates (UTC, as naive datetimes).

    Ids (``id_type``, see :func:`bayesmf.data.vocab.parse_ids`). Text files: the id
    columns are read as text, exactly as written (surrounding spaces dropped; only an
    empty field is missing, so ``"NA"`` is an id), then with ``"auto"`` they become
    int64 only when every value is the canonical text of an integer -- ``"007"`` and
    ``"7"`` stay two ids, ``"1e3"`` is not ``1000``; ``"str"`` keeps text, ``"int"``
    parses ``[+-]?[0-9]+`` (so ``"007"`` is ``7``). Parquet columns are typed by their
    writer: ``"auto"`` keeps their type, ``"str"``/``"int"`` convert.

    Raises
    ------
    DataError
        Missing file, a folder, an empty file, a header without rows, unparsable text,
        missing columns, missing ids, ids that are not integers with ``id_type="int"``,
        a Parquet file without pyarrow.
    """
    if id_type not in ID_TYPES:
        raise DataError(f"id_type must be one of {list(ID_TYPES)}, got {id_type!r}")
    if rating_col is None and require_rating:
        raise DataError("rating_col=None reads pair files; it needs require_rating=False")
    path = _existing_file(source)
    typed = path.suffix.lower() in (".parquet", ".pq")
    if typed:
        df = _read_parquet(path)
    else:
        df = _read_delimited(path, user_col, item_col, rating_col or "rating", require_rating)
        # 'user, item, rating': header names without the spaces around the separators
        if all(isinstance(c, str) for c in df.columns):
            stripped = [c.strip() for c in df.columns]
            if len(set(stripped)) == len(stripped):
                df.columns = stripped
    if len(df) == 0:
        raise DataError(f"{path} has no data rows (only a header)")
    cols = {"user": _resolve_col(df.columns, user_col, "user"),
            "item": _resolve_col(df.columns, item_col, "item")}
    wanted = {"user": user_col, "item": item_col}
    if rating_col is not None:
        cols["rating"] = _resolve_col(df.columns, rating_col, "rating")
        wanted["rating"] = rating_col
    required = ["user", "item"] + (["rating"] if require_rating else [])
    missing = [wanted[k] for k in required if cols[k] not in df.columns]
    if missing:
        raise DataError(f"{path.name}: missing column(s) {missing}; the frame has "
                        f"{list(df.columns)}. Name them with user_col=/item_col=/rating_col= "
                        "(CLI: --user-col/--item-col/--rating-col)")
    if cols["user"] == cols["item"]:
        raise DataError(f"{path.name}: the user and item ids are the same column "
                        f"{cols['user']!r}")
    rename = {cols[k]: wanted[k] for k in cols if cols[k] in df.columns and cols[k] != wanted[k]}
    if timestamp_col == "auto":
        t = _resolve_col(df.columns, "timestamp", "timestamp")
        if t in df.columns and t != "timestamp":
            rename[t] = "timestamp"
    df = df.rename(columns=rename)
    for key in ("user", "item"):
        c = wanted[key]
        col = df[c]
        if col.isna().any():
            rows = np.flatnonzero(col.isna().to_numpy())
            raise DataError(f"{path.name}: {len(rows)} missing {key} id(s) in column {c!r} "
                            f"(first at data row(s) {rows[:5].tolist()})")
        if not typed:
            text = col if pd.api.types.is_string_dtype(col.dtype) else col.astype(str)
            ids = parse_ids(text.str.strip(), id_type, key)
            # object stays object (pandas >= 3 would turn it back into an Arrow string
            # column, and the Ratings constructor into Python objects again)
            df[c] = pd.Series(ids, index=df.index, dtype=ids.dtype)
        elif id_type != "auto":
            df[c] = parse_ids(col.to_numpy(), id_type, key)
    tcol = "timestamp" if timestamp_col == "auto" else timestamp_col
    if tcol is not None and tcol in df.columns:
        col = df[tcol]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_datetime64_any_dtype(col)):
            import warnings

            try:
                with warnings.catch_warnings():  # pandas' format-inference note: the
                    warnings.simplefilter("ignore", UserWarning)  # error below says it
                    try:
                        parsed = pd.to_datetime(col, utc=True)
                    except (ValueError, TypeError):  # mixed ISO forms (date / datetime)
                        parsed = pd.to_datetime(col, utc=True, format="ISO8601")
            except (ValueError, TypeError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise DataError(f"timestamp column {tcol!r} is neither numbers nor "
                                f"dates: {first}") from exc
            df[tcol] = parsed.dt.tz_convert(None)
    return df


def _retype(r: Ratings, id_type: str) -> Ratings:
    """``r`` with its ids re-typed by ``id_type`` (a no-op for ``"auto"``)."""
    if id_type == "auto":
        return r
    return Ratings.from_arrays(r.users.decode(r.user), r.items.decode(r.item), r.rating,
                               r.timestamp, id_type=id_type)


def load_ratings_source(source, *, user_col: str = "user", item_col: str = "item",
                        rating_col: str = "rating", timestamp_col: str | None = "auto",
                        duplicates: str = "raise", id_type: str = "auto", data_home=None,
                        download: bool = True) -> Ratings:
    """Ratings from a dataset name or a rating file (used by ``bayesmf fit`` and
    ``bayesmf data info``).

    ``source`` is either

    * ``"movielens:VARIANT"`` (e.g. ``"movielens:latest-small"``, ``"movielens:100k"``),
      optionally ``"movielens:100k@PATH"`` where ``PATH`` is the official zip, its
      extracted folder, or a folder holding either (a cache folder); without ``@PATH`` the
      cache (``data_home``) is used and downloads follow ``download``; the column
      arguments do not apply (MovieLens ids are integers; ``id_type="str"`` makes them
      text);
    * a path to a rating file, read by :func:`read_ratings_file` (delimited text,
      compressed or not, or Parquet; separator sniffing, headerless files, column
      aliases such as ``userId``/``movieId``, ids read as text unless they are all plain
      integers -- see there for the ``id_type`` rule).

    ``duplicates`` resolves repeated ``(user, item)`` pairs: ``"raise"`` (default),
    ``"last"``, ``"first"`` (by file order) or ``"mean"`` (average, latest timestamp).

    Raises
    ------
    DataError
        Unknown dataset, missing file, unsupported format, missing columns or invalid
        ratings (duplicates raise unless ``duplicates="last"|"first"|"mean"``).
    """
    if id_type not in ID_TYPES:
        raise DataError(f"id_type must be one of {list(ID_TYPES)}, got {id_type!r}")
    if isinstance(source, str) and source.lower().startswith("movielens:"):
        spec = source.split(":", 1)[1]
        variant, _, at = spec.partition("@")
        if not variant:
            raise DataError(f"{source!r}: name a MovieLens variant, one of "
                            f"{list(MOVIELENS_VARIANTS)}")
        ml = load_movielens(variant, data_home=data_home, path=at or None, download=download)
        return _retype(ml.ratings, id_type)
    df = read_ratings_file(source, user_col=user_col, item_col=item_col,
                           rating_col=rating_col, timestamp_col=timestamp_col,
                           require_rating=True, id_type=id_type)
    tcol = "timestamp" if timestamp_col == "auto" else timestamp_col
    if tcol is not None and tcol not in df.columns:
        if timestamp_col != "auto":
            raise DataError(f"missing timestamp column {tcol!r}; the frame has "
                            f"{list(df.columns)}")
        tcol = None
    return Ratings.from_dataframe(df, user_col=user_col, item_col=item_col,
                                  rating_col=rating_col, timestamp_col=tcol,
                                  duplicates=duplicates)


#: column names read as the count / weight of an event file, in order of preference
COUNT_COLUMNS = ("count", "counts", "plays", "playcount", "play_count", "clicks", "weight",
                 "rating")


def load_interactions_source(source, *, user_col: str = "user", item_col: str = "item",
                             count_col: str | None = "auto",
                             timestamp_col: str | None = "auto", positive_threshold=None,
                             id_type: str = "auto", data_home=None,
                             download: bool = True):
    """Implicit feedback (:class:`~bayesmf.data.Interactions`) from an event file or a
    dataset name (``bayesmf fit --feedback implicit``).

    * an event file (``user,item[,count][,timestamp]`` rows, any format of
      :func:`read_ratings_file`): repeated ``(user, item)`` rows are aggregated (counts
      summed, latest timestamp kept). ``count_col="auto"`` takes the first column named
      one of :data:`COUNT_COLUMNS` (case-insensitive; a headerless third column counts),
      and without one every row is one event; a named ``count_col`` must exist.
      Counts must be finite and >= 0; pairs whose total is 0 are dropped;
    * ``"movielens:VARIANT"``: the rated pairs as positives, those with ``rating >=
      positive_threshold`` when it is given (every rated pair otherwise), with count 1.
    """
    from bayesmf.data.interactions import Interactions

    if isinstance(source, str) and source.lower().startswith("movielens:"):
        r = load_ratings_source(source, id_type=id_type, data_home=data_home,
                                download=download)
        t = float(np.min(r.rating)) if positive_threshold is None else positive_threshold
        return Interactions.from_ratings(r, t)
    if positive_threshold is not None:
        raise DataError("positive_threshold applies to rating datasets (movielens:...); an "
                        "event file lists the positives themselves")
    df = read_ratings_file(source, user_col=user_col, item_col=item_col, rating_col=None,
                           timestamp_col=timestamp_col, require_rating=False,
                           id_type=id_type)
    lower = {str(c).lower(): c for c in df.columns}
    if count_col == "auto":
        found = next((lower[c] for c in COUNT_COLUMNS if c in lower), None)
    elif count_col is None:
        found = None
    else:
        if count_col not in df.columns:
            raise DataError(f"missing count column {count_col!r}; the file has "
                            f"{list(df.columns)}")
        found = count_col
    tcol = None
    if timestamp_col is not None:
        want = "timestamp" if timestamp_col == "auto" else timestamp_col
        if want in df.columns:
            tcol = want
        elif timestamp_col != "auto":
            raise DataError(f"missing timestamp column {want!r}; the file has "
                            f"{list(df.columns)}")
    counts = None
    if found is not None:
        col = df[found]
        if not pd.api.types.is_numeric_dtype(col):
            bad = np.flatnonzero((pd.to_numeric(col, errors="coerce").isna()
                                  & col.notna()).to_numpy())
            j = int(bad[0]) if len(bad) else 0
            raise DataError(f"count column {found!r} holds non-numbers (e.g. "
                            f"{col.iloc[j]!r} in data row {j + 1}); counts and weights "
                            "must be numbers")
        counts = col.to_numpy(np.float64)
    return Interactions.from_arrays(df[user_col].to_numpy(), df[item_col].to_numpy(), counts,
                                    None if tcol is None else df[tcol])
