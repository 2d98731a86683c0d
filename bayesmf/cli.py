"""Command-line interface: ``bayesmf <command> ...``.

Commands
--------
``bayesmf data info SOURCE``
    Counts, sparsity, rating scale and ratings-per-user/item quantiles.
``bayesmf fit TRAIN --method M --rank K --seed S --out MODEL``
    Fit a model; TRAIN is a CSV/TSV/Parquet file with columns ``user,item,rating
    [,timestamp]`` (``--user-col`` etc. rename) or a dataset name such as
    ``movielens:latest-small``. MCMC: ``--samples --warmup --chains --thin``; any method
    option: ``--option key=value``. Checkpoints: ``--checkpoint PATH --checkpoint-every N``;
    ``bayesmf fit --resume PATH`` continues a killed run. ``--chains C --option
    chain_method=parallel`` runs the Gibbs chains one per CPU core (the CLI starts JAX with
    ``min(C, cores)`` host devices unless ``XLA_FLAGS`` sets a count).
``bayesmf predict MODEL PAIRS.csv --out PRED.csv [--interval 0.9]``
    Columns ``user,item,mean,std,lower,upper,known_user,known_item``.
``bayesmf evaluate MODEL TEST [--json]``
    Rating metrics (RMSE, MAE, NLPD, CRPS, coverage) and ranking metrics @k.
``bayesmf recommend MODEL --users ID,ID --n 10 --strategy mean|ucb|lcb|thompson|prob``
    Top-n items per user (``--out recs.csv`` or printed).
``bayesmf similar MODEL --item ID --n 10``
    Items most similar to an item (cosine over factor draws).
``bayesmf split RATINGS --strategy S --out-train TRAIN.csv --out-test TEST.csv``
    Train/test files from one ratings file or dataset (:mod:`bayesmf.data.split`):
    ``random``, ``per-user``, ``temporal`` (``--test-fraction``, ``--last-k`` or
    ``--cutoff``) or ``leave-one-out``.

Side information (the Macau prior, :mod:`bayesmf.data.features`)
    ``bayesmf fit TRAIN --method gibbs --user-features users.csv --item-features
    items.csv --out MODEL``. A features file (CSV/TSV/Parquet, with a header) has an id
    column -- ``user`` / ``item``, a usual alias (``userId``, ``movieId``, ``item_id``...)
    or the ``--user-col`` / ``--item-col`` name -- and one column per feature: numbers as
    they are (standardised), text one-hot, text with ``|`` multi-valued
    (``Action|Comedy``). Its ids are read as text and matched to the model's ids by the
    same rule as the ratings (``--id-type``). Every training id needs a row; other rows
    are allowed (ignored by the fit). A text column with a different value on every row
    (a title) is refused. Methods gibbs, map, svi and nuts take features; any other
    method: error, exit 2.
    ``--implicit-terms user,item`` adds the SVD++ terms (which items a user rated, not
    how; which users rated an item) as feature blocks built from the training pairs, with
    or without features files; a cold-start row can list its known ids in a column
    ``implicit:items`` / ``implicit:users`` of its features file (``12|50|181``).
    ``predict`` and ``recommend`` take the same two flags to reach **cold-start** ids: ids
    of a features file that the model does not know are appended by
    :meth:`bayesmf.Posterior.with_features` (factors mu + beta' x per draw,
    encoded with the schema stored in the model file). A cold-start id is a row of the
    posterior, not the population fallback: ``known_user`` / ``known_item`` say **True**
    ("the model has a row for this id", as in the Python API); the extra columns
    ``cold_user`` / ``cold_item`` (written only when a features flag is given) say
    whether that row comes from the features alone. Ids in neither the model nor the
    file stay on the population fallback (``known_*=False``). ``recommend`` scores cold
    items for every user and, without ``--users``, lists cold users too.

``bayesmf --version`` prints the version; ``bayesmf COMMAND -h`` the options of a command
with their defaults.

Output paths (``--out``, ``--checkpoint``, ``--out-train``, ``--out-test``) are checked
before any work is done: the folder must exist and be writable, the path must not be a
folder nor one of the command's input files. Predictions, recommendations and similar
items are written with 6 significant digits (:data:`FLOAT_FORMAT`); ``split`` writes the
ratings exactly as read.

Exit status: 0 on success; 2 for bad input, a bad path or a failed file operation (a
one-line message on stderr, also for errors of the argument parser); 1 for an unexpected
internal error (one line; set ``BAYESMF_DEBUG=1`` for the traceback); 130 when
interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmf.errors import BayesMFError, DataError, SpecError, UnknownOptionError
# what ``bayesmf fit`` runs when --method / --rank are left out, per --feedback
from bayesmf.estimator import DEFAULT_METHOD as _DEFAULT_METHOD
from bayesmf.estimator import DEFAULT_RANK as _DEFAULT_RANK

__all__ = ["main", "build_parser", "FLOAT_FORMAT"]

#: ``float_format`` of the CSV files the CLI writes (predictions, recommendations,
#: similar items): 6 significant digits, far below the posterior's own uncertainty.
FLOAT_FORMAT = "%.6g"


# ---------------------------------------------------------------------- helpers
def _parse_value(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    return text


def _options(pairs: list[str] | None) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise DataError(f"--option expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip().replace("-", "_")] = _parse_value(v.strip())
    return out


def _coerce_ids(values, vocab, id_type: str = "auto"):
    """Ids read as text (files, --users, --item) in the id type of the model's vocabulary,
    by the vocabulary's canonical-text rule (:meth:`bayesmf.Vocabulary.coerce`): for an
    integer vocabulary ``"12"`` is ``12`` but ``"012"`` stays text and is reported as an
    unknown id -- unless ``--id-type int`` parses ``"012"`` as ``12`` (``str``: the ids
    are text, e.g. for a model fitted with text ids)."""
    if id_type in ("int", "str"):
        from bayesmf.data.vocab import parse_ids

        values = parse_ids(np.asarray(values, dtype=object), id_type)
    return vocab.coerce(values)


def _read_table(path: str, user_col: str, item_col: str) -> pd.DataFrame:
    """A pairs/ratings file for a fitted model (predict, evaluate), read by the same reader
    as ``fit`` and ``data info`` (:func:`bayesmf.datasets.read_ratings_file`: separator
    sniffing, headerless files, ``userId``/``movieId`` aliases, ``.dat``, compression,
    Parquet). The ratings are optional here; ids are kept as text, for the model's
    vocabulary to match (:func:`_coerce_ids`). A rating column found under an alias
    (``score``...) is also available as ``rating``."""
    from bayesmf.datasets import _ALIASES, read_ratings_file

    df = read_ratings_file(path, user_col=user_col, item_col=item_col, rating_col=None,
                           timestamp_col=None, require_rating=False, id_type="str")
    if "rating" not in df.columns:
        lower = {str(c).lower(): c for c in df.columns}
        alias = next((lower[x] for x in _ALIASES["rating"] if x in lower), None)
        if alias is not None:
            df["rating"] = df[alias]
    return df


#: a text column with a distinct value on every row of a features file of at least this
#: many rows is an identifier or free text (a title), not a feature: refused
_ID_LIKE_MIN_ROWS = 20


def _read_features(path: str, side: str, id_col: str | None = None) -> pd.DataFrame:
    """A side-information file (``--user-features`` / ``--item-features``) as a DataFrame
    with the id column renamed to ``side`` and the ids kept as text (the caller matches
    them to a vocabulary with :func:`_coerce_ids`, the rule of the ratings ids).

    Formats: delimited text with a header (separator sniffed from the first line among
    ``::``, tab, ``,``, ``;``, ``|``, whitespace; ``.gz`` etc. compressed; UTF-8, else
    Latin-1) or Parquet (``.parquet``/``.pq``). The id column is ``id_col`` (the command's
    ``--user-col``/``--item-col``) when the file has it, else ``user``/``item`` or a
    usual alias (``userId``, ``movieId``, ``item_id``... case-insensitive); every other
    column is one feature, encoded by :meth:`bayesmf.data.features.Features.from_frame`:
    numbers as they are (standardised), text one-hot, text containing ``|`` multi-hot.
    Empty fields and the usual NA markers are missing values (a DataError when encoded).
    A text column with a distinct value on every row (an identifier or a title) is
    refused: one-hot it would tell the model nothing about another id."""
    from bayesmf.datasets import (_ALIASES, _NA_VALUES, _decode, _is_number, _open_binary,
                                  _read_parquet, _sniff)

    flag = f"--{side}-features"
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise DataError(f"{flag} {path}: no such file")
    if p.is_dir():
        raise DataError(f"{flag} {path}: is a folder, not a features file")
    low = [s.lower() for s in p.suffixes]
    if low and low[-1] in (".parquet", ".pq"):
        df = _read_parquet(p)
        columns = list(df.columns)
    else:
        try:
            with _open_binary(p) as fh:
                head = _decode(fh.readline(65536)).rstrip("\r\n")
        except (OSError, EOFError) as exc:
            raise DataError(f"{flag} {path}: cannot read it: {exc}") from None
        if not head.strip():
            raise DataError(f"{flag} {path}: the file is empty")
        sep, fields = _sniff(head)
        if all(_is_number(f) for f in fields):
            raise DataError(f"{flag} {path}: the first line is all numbers; a features "
                            f"file needs a header naming the {side} id column and the "
                            "features")
        engine = "python" if sep == "::" else "c"

        def frame(encoding, **kw):
            with _open_binary(p) as fh:
                return pd.read_csv(fh, sep=sep, engine=engine, encoding=encoding, **kw)

        def read(encoding):
            cols = list(frame(encoding, nrows=0).columns)
            idc = _features_id_column(cols, side, id_col)
            return frame(encoding, dtype={idc: str} if idc in cols else None,
                         keep_default_na=False,
                         na_values={c: ([""] if c == idc else _NA_VALUES) for c in cols})

        try:
            try:
                df = read("utf-8")
            except UnicodeDecodeError:
                df = read("latin-1")
        except (ValueError, pd.errors.ParserError, OSError, EOFError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"{flag} {path}: cannot parse it: {msg}") from None
        columns = list(df.columns)
    if len(df) == 0:
        raise DataError(f"{flag} {path}: no data rows")
    idc = _features_id_column(columns, side, id_col)
    if idc not in columns:
        names = f"{id_col!r}, " if id_col and id_col != side else ""
        raise DataError(f"{flag} {path}: no {side} id column ({names}{side!r} or an alias "
                        f"such as {_ALIASES[side][1]!r}); the columns are {columns[:8]}")
    ids = df[idc]
    if ids.isna().any():
        rows = np.flatnonzero(ids.isna().to_numpy())
        raise DataError(f"{flag} {path}: {len(rows)} missing {side} id(s) (first at data "
                        f"row(s) {rows[:5].tolist()})")
    ids = ids.astype(str).str.strip().to_numpy(dtype=object)
    feats = df.drop(columns=[idc])
    if side in feats.columns:
        raise DataError(f"{flag} {path}: the id column is {idc!r} and another column is "
                        f"named {side!r}; rename one of them")
    if feats.shape[1] == 0:
        raise DataError(f"{flag} {path}: no feature columns besides the id column {idc!r}")
    n = len(df)
    for c in feats.columns:
        col = feats[c]
        if (n >= _ID_LIKE_MIN_ROWS and not pd.api.types.is_numeric_dtype(col)
                and not pd.api.types.is_bool_dtype(col) and not col.isna().any()
                and not col.astype(str).str.contains("|", regex=False).any()
                and col.nunique() == n):
            raise DataError(f"{flag} {path}: column {c!r} has a different text value on "
                            f"every row (an identifier or free text such as a title, not "
                            "a feature); drop it from the file")
    return pd.concat([pd.DataFrame({side: ids}, index=df.index), feats], axis=1)


def _features_id_column(columns, side: str, id_col: str | None) -> str:
    """The id column of a features file: ``id_col`` when present, else ``side`` or its
    first alias present (case-insensitive); ``side`` when none is (reported missing)."""
    if id_col and id_col in columns:
        return id_col
    if side in columns:
        return side
    from bayesmf.datasets import _ALIASES

    lower = {str(c).lower(): c for c in columns}
    return next((lower[x] for x in _ALIASES[side] if x in lower), side)


def _feature_files(a) -> dict:
    """``{side: path}`` of the ``--user-features`` / ``--item-features`` given."""
    return {side: getattr(a, f"{side}_features", None) for side in ("user", "item")
            if getattr(a, f"{side}_features", None)}


def _fit_features(a, train) -> dict:
    """``bayesmf fit``: the features files as the ``user_features=`` / ``item_features=``
    DataFrames of :class:`~bayesmf.estimator.BayesMF`, their ids matched to the training
    vocabularies by the rule of ``--id-type``; every training id needs a row (rows of ids
    without ratings are allowed: they set the scaling of numeric features and the
    categories seen, and are ignored by the fit)."""
    out = {}
    for side, path in _feature_files(a).items():
        vocab = train.users if side == "user" else train.items
        df = _read_features(path, side, getattr(a, f"{side}_col", None))
        df[side] = _coerce_ids(df[side].to_numpy(), vocab, a.id_type or "auto")
        idx, known = vocab.encode(df[side].to_numpy(), unknown="mask")
        have = np.zeros(len(vocab), bool)
        have[idx[known]] = True
        if not have.all():
            ex = ", ".join(repr(x.item() if isinstance(x, np.generic) else x)
                           for x in vocab.ids[~have][:3])
            raise DataError(f"--{side}-features {path}: {int((~have).sum())} of "
                            f"{len(vocab)} {side} id(s) of TRAIN have no row, e.g. {ex}")
        out[f"{side}_features"] = df
    return out


def _with_cold_start(a, post):
    """``predict`` / ``recommend`` with ``--user-features`` / ``--item-features``: the
    posterior with the ids of the files that the model does not know appended as
    **cold-start** rows (:meth:`bayesmf.Posterior.with_features`: per draw
    :math:`\\mu + \\beta^\\top x`, encoded with the model's stored feature schema). Ids
    the model knows keep their fitted rows; ids in neither stay on the population
    fallback. Needs a model fitted with features on that side."""
    files = _feature_files(a)
    for side, path in files.items():
        flag = f"--{side}-features"
        feats = getattr(post, "features", None) or {}
        S_ = "U" if side == "user" else "V"
        if feats.get(side) is None or f"beta_{S_}" not in post.draws:
            raise DataError(f"{flag}: the model {a.model} was fitted without {side} "
                            f"features; fit it with e.g. 'bayesmf fit --method gibbs "
                            f"{flag} FILE'")
        vocab = post.users if side == "user" else post.items
        df = _read_features(path, side, getattr(a, f"{side}_col", None))
        df[side] = _coerce_ids(df[side].to_numpy(), vocab, a.id_type)
        try:
            post = post.with_features(**{f"{side}_features": df})
        except DataError as exc:
            raise DataError(f"{flag} {path}: {exc}") from None
    return post


def _cold_flags(post, users, items) -> dict:
    """``cold_user`` / ``cold_item``: whether each id is a cold-start row (built from its
    features alone, :meth:`bayesmf.Posterior.cold_range`)."""
    out = {}
    for side, ids, vocab in (("user", users, post.users), ("item", items, post.items)):
        idx, known = vocab.encode(np.asarray(ids), unknown="mask")
        lo, hi = post.cold_range(side)
        out[f"cold_{side}"] = np.asarray(known & (idx >= lo) & (idx < hi), bool)
    return out


def _load_model(path: str):
    from bayesmf.estimator import load

    return load(path)


def _source_kwargs(a) -> dict:
    return dict(user_col=a.user_col, item_col=a.item_col, rating_col=a.rating_col,
                timestamp_col=a.timestamp_col,
                duplicates=getattr(a, "duplicates", None) or "raise",
                id_type=getattr(a, "id_type", None) or "auto")


def _progress(a) -> bool:
    if a.progress is not None:
        return a.progress
    return sys.stderr.isatty()


#: (attribute, flag) of every output path of the commands
_OUTPUTS = (("out", "--out"), ("checkpoint", "--checkpoint"), ("out_train", "--out-train"),
            ("out_test", "--out-test"))
#: attributes that name input files (compared with the outputs)
_INPUTS = ("train", "test", "pairs", "model", "source", "ratings", "resume",
           "user_features", "item_features")


def _save_draws(text: str):
    """``--save-draws``: a positive number of draws, ``all`` or ``auto``."""
    t = str(text).strip().lower()
    if t in ("all", "auto"):
        return t
    try:
        n = int(t)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"save-draws must be a number >= 1, 'all' or "
                                         f"'auto', got {text!r}")
    return n


def _check_output_path(path, flag: str) -> Path:
    """Fail before any work is done when ``path`` cannot be written: it must not be empty
    or a folder, its folder must exist and be a writable folder, and an existing file
    there must be writable. Raises :class:`DataError` with a one-line reason."""
    text = str(path)
    if not text.strip():
        raise DataError(f"{flag} is an empty path")
    p = Path(text).expanduser()
    if p.is_dir() or text.endswith(("/", os.sep)):
        raise DataError(f"{flag} {text}: is a folder; name a file to write, e.g. "
                        f"{Path(text) / ('model.nc' if flag == '--out' else 'out.csv')}")
    parent = p.parent
    if not parent.exists():
        raise DataError(f"{flag} {text}: the folder {parent} does not exist (create it "
                        "first)")
    if not parent.is_dir():
        raise DataError(f"{flag} {text}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DataError(f"{flag} {text}: the folder {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise DataError(f"{flag} {text}: the file exists and is not writable")
    return p


def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return os.path.abspath(os.path.expanduser(str(a))) == \
            os.path.abspath(os.path.expanduser(str(b)))


def _check_outputs(a) -> None:
    """Check every output path of the parsed arguments ``a`` (see
    :func:`_check_output_path`), that no two outputs are the same file and that no output
    would overwrite an input file of the command."""
    outs = [(getattr(a, attr), flag) for attr, flag in _OUTPUTS if getattr(a, attr, None)]
    for path, flag in outs:
        _check_output_path(path, flag)
    for j, (p1, f1) in enumerate(outs):
        for p2, f2 in outs[j + 1:]:
            if _same_file(p1, p2):
                raise DataError(f"{f1} and {f2} name the same file {p1}")
        for attr in _INPUTS:
            src = getattr(a, attr, None)
            if attr == "resume" and f1 == "--checkpoint":
                continue  # a resumed run rewrites its checkpoint
            if isinstance(src, str) and src and Path(src).expanduser().is_file() \
                    and _same_file(p1, src):
                raise DataError(f"{f1} {p1} is the input file {attr.upper()}; writing it "
                                "would destroy the input")


def _atomic_write(path, write) -> None:
    """``write(tmp)`` to a temporary name next to ``path`` (same suffixes, so pandas
    infers the same format and compression), then move it onto ``path``: a failed or
    interrupted write leaves no partial file and no temporary file."""
    p = Path(path).expanduser()
    suffixes = "".join(p.suffixes[-2:]) if p.suffixes else ""
    stem = p.name[:len(p.name) - len(suffixes)] if suffixes else p.name
    tmp = p.with_name(f".{stem}.tmp{os.getpid()}{suffixes}")
    try:
        write(tmp)
        os.replace(tmp, p)
    finally:
        try:
            tmp.unlink()
        except OSError:
            pass


def _write_table(df: pd.DataFrame, path, float_format: str | None = None) -> None:
    """A table as CSV (``.tsv``/``.tab``: tab-separated; ``.gz`` etc. compressed) or
    Parquet (``.parquet``/``.pq``), written atomically."""
    p = Path(path)
    low = [s.lower() for s in p.suffixes]
    if low and low[-1] in (".parquet", ".pq"):
        import importlib.util

        find = importlib.util.find_spec
        if not (find("pyarrow") or find("fastparquet")):
            raise DataError(f"writing the Parquet file {path} needs pyarrow (pip install "
                            "pyarrow); or name a .csv file")
        _atomic_write(p, lambda t: df.to_parquet(t, index=False))
        return
    sep = "\t" if any(s in (".tsv", ".tab") for s in low) else ","
    _atomic_write(p, lambda t: df.to_csv(t, index=False, sep=sep,
                                         float_format=float_format))


def _int_at_least(minimum: int, name: str):
    """argparse type: an integer ``>= minimum`` (messages name the option, as the
    library's own checks do: ``rank must be >= 0, got -2``)."""
    def conv(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if v < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be >= {minimum}, got {v}")
        return v

    return conv


def _open_fraction(name: str):
    """argparse type: a number strictly between 0 and 1."""
    def conv(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
        if not 0.0 < v < 1.0:
            raise argparse.ArgumentTypeError(f"{name} must be in (0, 1), got {text}")
        return v

    return conv


def _id_list(text: str) -> str:
    """``--users``: comma-separated ids, none of them empty; returned re-joined without
    the blanks around the ids. ``@FILE`` (one id per line) is read by the command."""
    if text.startswith("@"):
        if not text[1:].strip():
            raise argparse.ArgumentTypeError("@FILE needs a file name, e.g. --users @ids.txt")
        return text
    ids = [x.strip() for x in text.split(",")]
    if not any(ids):
        raise argparse.ArgumentTypeError(f"no id in {text!r}; pass comma-separated ids, "
                                         "e.g. --users 1,2,3 (leave it out for all users)")
    if "" in ids:
        raise argparse.ArgumentTypeError(f"empty id at position {ids.index('') + 1} of "
                                         f"{text!r}; pass comma-separated ids, e.g. 1,2,3")
    return ",".join(ids)


def _confidence(text: str) -> dict | str:
    """``--confidence KIND:ALPHA[:EPS]`` -> the implicit likelihood's settings;
    ``--confidence auto`` -> ``"auto"`` (chosen on a carve, :mod:`bayesmf.selection`)."""
    if text == "auto":
        return text
    parts = text.split(":")
    if len(parts) not in (2, 3) or parts[0] not in ("linear", "log"):
        raise argparse.ArgumentTypeError(f"expected KIND:ALPHA[:EPS] with KIND linear or log, "
                                         f"e.g. log:2 or linear:0.01; got {text!r}")
    try:
        nums = [float(x) for x in parts[1:]]
    except ValueError:
        raise argparse.ArgumentTypeError(f"ALPHA and EPS must be numbers, got {text!r}") \
            from None
    if not all(math.isfinite(x) for x in nums) or nums[0] < 0 or (len(nums) > 1
                                                                  and nums[1] <= 0):
        raise argparse.ArgumentTypeError(f"ALPHA must be >= 0 and EPS > 0 (finite), got "
                                         f"{text!r}")
    out = {"transform": parts[0], "alpha": nums[0]}
    if len(nums) > 1:
        out["eps"] = nums[1]
    return out


def _nonempty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text.strip()


_CLI_STRATEGIES = ("mean", "ucb", "lcb", "thompson", "prob")


def _strategy(text: str) -> str:
    t = text.strip().lower()
    if t in ("utility", "expected_utility"):
        raise argparse.ArgumentTypeError(
            "'utility' ranks by the expected value of a Python function u(rating) and is "
            "available from the Python API only: bayesmf.recommend.recommend(posterior, "
            "users, strategy='utility', utility=u); the CLI offers "
            + ", ".join(_CLI_STRATEGIES))
    if t not in _CLI_STRATEGIES:
        raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from "
                                         f"{', '.join(_CLI_STRATEGIES)})")
    return t


def _in_training(post, test) -> int:
    """Number of ``test`` rows whose (user, item) pair is a training pair of ``post``."""
    u, i, ku, ki = post.encode_pairs(test.users.decode(test.user),
                                     test.items.decode(test.item))
    known = np.asarray(ku) & np.asarray(ki)
    t = post.train
    if not known.any() or not len(t.seen_indices):
        return 0
    M = np.int64(len(post.items))
    rows = np.repeat(np.arange(len(t.seen_indptr) - 1, dtype=np.int64),
                     np.diff(t.seen_indptr))
    seen = rows * M + t.seen_indices.astype(np.int64)
    q = np.asarray(u, np.int64)[known] * M + np.asarray(i, np.int64)[known]
    return int(np.isin(q, seen).sum())


# ---------------------------------------------------------------------- commands
def cmd_data_info(a) -> int:
    from bayesmf.datasets import load_ratings_source

    r = load_ratings_source(a.source, **_source_kwargs(a))
    d = r.describe()
    if a.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"source            {a.source}")
    print(f"ratings           {d['ratings']:,}")
    print(f"users             {d['users']:,}")
    print(f"items             {d['items']:,}")
    print(f"sparsity          {d['sparsity']:.6f}  (density {d['density']:.6f})")
    print(f"rating scale      {d['rating_min']:g} .. {d['rating_max']:g}"
          f"  mean {d['rating_mean']:.4f}")
    if d["rating_levels"] is not None:
        print(f"rating levels     {', '.join(f'{x:g}' for x in d['rating_levels'])}")
    for side in ("user", "item"):
        q = d[f"ratings_per_{side}"]
        print(f"ratings per {side:<5} min {q['min']:g}  q25 {q['q25']:g}  median "
              f"{q['median']:g}  q75 {q['q75']:g}  max {q['max']:g}")
    print(f"timestamps        {'yes' if d['has_timestamp'] else 'no'}")
    return 0


_FIT_FLAGS = {"samples": "num_samples", "warmup": "num_warmup", "chains": "num_chains",
              "thin": "thin", "max_iter": "max_iter", "solver": "solver",
              "checkpoint": "checkpoint", "checkpoint_every": "checkpoint_every"}


def _devices_for_parallel_chains(opts: dict) -> None:
    """``--option chain_method=parallel`` (``sharded``) on CPU: start JAX with one host
    device per chain (per shard: ``shard_devices``, default every core), up to the CPU
    count, unless XLA_FLAGS already says how many; only possible before jax is imported,
    which in the CLI happens after this point."""
    import os

    if opts.get("chain_method") not in ("parallel", "sharded") or "jax" in sys.modules:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    want = ((opts.get("shard_devices") or os.cpu_count() or 1)
            if opts.get("chain_method") == "sharded" else opts.get("num_chains", 1))
    n = min(int(want), os.cpu_count() or 1)
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def cmd_fit(a) -> int:
    from bayesmf.datasets import load_ratings_source
    from bayesmf.estimator import FEATURE_METHODS, BayesMF

    if a.resume:
        side = Path(str(a.resume) + ".cli.json")
        if not side.exists():
            raise DataError(f"cannot resume: {side} (written next to the checkpoint by "
                            "'bayesmf fit --checkpoint') is missing")
        try:
            saved = json.loads(side.read_text())
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"cannot resume: {side} is not the settings file 'bayesmf fit "
                            f"--checkpoint' writes ({exc})") from None
        if not isinstance(saved, dict):
            raise DataError(f"cannot resume: {side} is not the settings file 'bayesmf fit "
                            "--checkpoint' writes")
        ckpt = a.resume
        for k in ("train", "out"):
            given, was = getattr(a, k, None), saved.get(k)
            if given and was and str(Path(given).expanduser().resolve()) != str(
                    Path(was).expanduser().resolve()):
                flag = "TRAIN" if k == "train" else "--out"
                raise DataError(f"--resume continues the run with its saved settings "
                                f"({flag} {was}); drop {flag} {given} (a resumed run writes "
                                "where the first one would have)")
        # a flag given with --resume: the saved settings win, so a different sampling
        # setting is refused (it was silently dropped); output settings apply
        defaults = vars(build_parser().parse_args(["fit"]))
        given = {k for k, v in vars(a).items()
                 if k not in ("func", "resume", "train", "out") and k in defaults
                 and v != defaults[k]}
        output = {"save_draws", "save_mode", "progress"}
        for k in sorted(given - output):
            if k in saved and saved[k] != getattr(a, k):
                flag = "--" + k.replace("_", "-")
                raise DataError(f"--resume continues the run with its saved settings "
                                f"({flag} {saved[k]!r}); drop {flag} {getattr(a, k)!r}")
        for k in sorted(given & output - {"progress"}):
            if saved.get(k) != getattr(a, k):   # said, so that a changed model file is no
                flag = "--" + k.replace("_", "-")   # surprise
                print(f"bayesmf fit: {flag} {getattr(a, k)} applies to the resumed run's "
                      f"model file (the first run had {saved.get(k)})", file=sys.stderr)
        for k, v in saved.items():
            if k not in given & output:
                setattr(a, k, v)
        a.resume = ckpt
        a.checkpoint = ckpt  # the file named on the command line (it may have moved)
        _check_outputs(a)  # the saved --out may no longer be writable
    if not a.train:
        raise DataError("TRAIN is required (a CSV/Parquet file or a dataset name such as "
                        "movielens:latest-small)")
    if not a.out:
        raise DataError("--out MODEL is required")
    opts = _options(a.option)
    taken = {"rank": "--rank", "seed": "--seed", "likelihood": "--likelihood",
             "method": "--method", "progress": "--progress/--no-progress",
             "prior": "--prior", "user_features": "--user-features",
             "item_features": "--item-features", "implicit_terms": "--implicit-terms"}
    clash = sorted(set(opts) & set(taken))
    if clash:
        raise DataError(f"--option {clash[0]}=... sets a setting of the model, not of the "
                        f"method: use {taken[clash[0]]}"
                        + (" (the ADVI variant of pymc-advi is --option advi=fullrank)"
                           if clash[0] == "method" else ""))
    for flag, name in _FIT_FLAGS.items():
        v = getattr(a, flag)
        if v is not None:
            opts[name] = v
    if "checkpoint_every" in opts and not opts.get("checkpoint") and not a.resume:
        raise DataError("--checkpoint-every applies with --checkpoint PATH")
    _devices_for_parallel_chains(opts)
    if a.resume:
        # killed before its first checkpoint: only the settings file exists; the run
        # starts from the first sweep (reported below)
        opts["resume"] = Path(str(a.resume)).exists()
        opts.setdefault("checkpoint", a.resume)
    if opts.get("checkpoint"):
        side = Path(str(opts["checkpoint"]) + ".cli.json")
        keep = {k: v for k, v in vars(a).items() if k not in ("func", "resume")}
        # paths absolute, so that --resume works from any folder
        for k in ("train", "out", "checkpoint", "user_features", "item_features"):
            v = keep.get(k)
            if isinstance(v, str) and (k in ("out", "checkpoint") or Path(v).exists()):
                keep[k] = str(Path(v).expanduser().resolve())
        _atomic_write(side, lambda t: Path(t).write_text(json.dumps(keep)))
    feedback = getattr(a, "feedback", None) or "explicit"
    method = a.method or _DEFAULT_METHOD[feedback]
    rank = a.rank if a.rank is not None else _DEFAULT_RANK[feedback]
    likelihood = a.likelihood or ("implicit" if feedback == "implicit" else "gaussian")
    conf = getattr(a, "confidence", None)
    # None: the likelihood's default (normal-wishart; gamma for poisson); a prior whose
    # support does not fit the likelihood is refused by ModelSpec
    prior = getattr(a, "prior", None)
    feature_files = _feature_files(a)
    if (feature_files or a.implicit_terms) and method not in FEATURE_METHODS:
        flags = " and ".join([f"--{side}-features" for side in feature_files]
                             + (["--implicit-terms"] if a.implicit_terms else []))
        verb = "need" if len(flags.split(" and ")) > 1 else "needs"
        given = f"got --method {method}" if a.method else f"the default --method is {method}"
        raise DataError(f"{flags} (side information, the Macau prior) {verb} --method "
                        f"gibbs, map, svi or nuts; {given}")
    # the flag combinations are checked before the data file is read
    negatives = getattr(a, "negatives", None)
    recal = getattr(a, "recalibrate", None)
    if feedback == "implicit" and str(likelihood).startswith("bernoulli") and not negatives:
        raise DataError(f"--likelihood {likelihood} on implicit data sees only positives: "
                        "add --negatives RULE (e.g. --negatives uniform:4)")
    # (a settings file of an older version holds the old default 0.1: not a user's flag)
    if getattr(a, "recalibrate_fraction", None) is not None and not recal and not a.resume:
        raise DataError("--recalibrate-fraction applies with --recalibrate")
    if recal and not negatives:
        raise DataError("--recalibrate maps P(relevant) of a model fitted with sampled "
                        "negatives: add --feedback implicit --likelihood bernoulli-logit "
                        "--negatives RULE")
    if recal and str(likelihood) != "bernoulli-logit":
        raise DataError(f"--recalibrate maps the logit of --likelihood bernoulli-logit, "
                        f"not {likelihood}")
    if feedback == "implicit":
        from bayesmf.datasets import load_interactions_source

        if a.duplicates != "raise":
            raise DataError("--duplicates applies to ratings; with --feedback implicit "
                            "repeated (user, item) rows are events and are summed")
        train = load_interactions_source(
            a.train, user_col=a.user_col, item_col=a.item_col,
            count_col="auto" if a.rating_col == "rating" else a.rating_col,
            timestamp_col=a.timestamp_col, positive_threshold=a.positive_threshold,
            id_type=a.id_type or "auto")
    else:
        for flag, v in (("--confidence", conf), ("--positive-threshold",
                                                 getattr(a, "positive_threshold", None)),
                        ("--negatives", negatives)):
            if v is not None:
                raise DataError(f"{flag} applies to --feedback implicit")
        train = load_ratings_source(a.train, **_source_kwargs(a))
    selection = None
    if conf is not None:
        if likelihood != "implicit":
            raise DataError(f"--confidence sets the implicit likelihood's confidence; it "
                            f"does not apply to --likelihood {likelihood}")
        if conf == "auto":
            if method != "gibbs":
                raise DataError(f"--confidence auto compares Gibbs fits of the candidates; "
                                f"with --method {method} give the confidence "
                                "(KIND:ALPHA[:EPS])")
        else:
            from bayesmf.model.likelihoods import ImplicitGaussian

            likelihood = ImplicitGaussian(**conf)
    feats = _fit_features(a, train) if feature_files else {}
    biases = {f"{side}_bias": v for side in ("user", "item")
              if (v := getattr(a, f"{side}_bias", None)) is not None}
    if conf == "auto":  # the same model on a carve, per candidate confidence
        from bayesmf.selection import select_confidence

        def searched(row):  # one line per candidate as it is scored (a long search)
            if _progress(a):
                print(f"--confidence auto: {row['confidence']} ndcg@20 {row['ndcg@20']:.4f} "
                      f"({row['fit_seconds']:.1f} s)", file=sys.stderr, flush=True)

        selection = select_confidence(train, rank=rank, seed=a.seed, prior=prior,
                                      implicit_terms=a.implicit_terms, callback=searched,
                                      **biases, **feats)
        likelihood = selection.likelihood
        metric = selection.info["metric"]
        print("--confidence auto: " + ", ".join(
            f"{c} {v:.4f}" for c, v in zip(selection.table["confidence"],
                                            selection.table[metric]))
              + f" ({metric} on a {selection.info['fraction']:g} per-user carve, "
                f"{selection.info['seconds']:.1f} s); fitting {selection.to_dict()['chosen']}",
              file=sys.stderr)
    model = BayesMF(method=method, rank=rank, likelihood=likelihood, prior=prior,
                    seed=a.seed, implicit_terms=a.implicit_terms,
                    progress=_progress(a), **biases, **feats, **opts)
    try:
        if negatives:
            model.fit(train, negatives=negatives)
        else:
            model.fit(train)
    except Exception as exc:
        # a fit refused before its first checkpoint leaves no stale settings file behind
        ck = opts.get("checkpoint")
        if ck and not a.resume and not Path(str(ck)).exists():
            Path(str(ck) + ".cli.json").unlink(missing_ok=True)
        flags = {v: f"--{k.replace('_', '-')}" for k, v in _FIT_FLAGS.items()
                 if getattr(a, k, None) is not None}
        bad = [flags[n] for n in getattr(exc, "options", ()) if n in flags]
        if isinstance(exc, UnknownOptionError) and bad:
            raise SpecError(f"{', '.join(bad)} do(es) not apply to --method {method} "
                            f"(--likelihood {likelihood}): {exc}") from None
        raise
    if recal:
        frac = 0.1 if a.recalibrate_fraction is None else a.recalibrate_fraction
        model.recalibrate(train, method=recal, fraction=frac)
    if selection is not None:  # --confidence auto: the search, kept with the model
        model.posterior_.attrs["confidence_selection"] = selection.to_dict()
    model.save(a.out, mode=a.save_mode, draws=a.save_draws)
    post = model.posterior_
    from bayesmf.io import load as _load_saved

    kept = _load_saved(a.out)
    stored = (f"{kept.n_chains} x {kept.n_draws} draw(s) stored"
              + (" (rebuilt from per-row summaries)" if a.save_mode == "summary" else ""))
    if a.resume:
        ck = post.attrs.get("checkpoint") or {}
        unit = "sweep" if method == "gibbs" else "iteration"
        total = (post.attrs.get("settings") or {}).get("n_sweeps")
        of = f" of {total}" if total is not None else ""
        at = ck.get("resumed_at")
        print(f"bayesmf fit: resumed {a.resume} at {unit} {at}{of}" if at is not None else
              f"bayesmf fit: {a.resume} held no completed {unit}; started from the first",
              file=sys.stderr)
    what = "interactions" if feedback == "implicit" else "ratings"
    print(f"fitted {method} rank {rank} on {train.nnz:,} {what} "
          f"({train.n_users:,} users x {train.n_items:,} items) in {model.fit_seconds_:.2f} s; "
          f"{post.n_chains} chain(s) x {post.n_draws} draw(s); saved {a.out} "
          f"({stored}, {Path(a.out).stat().st_size / 1e6:.1f} MB)")
    if recal:
        r = model.recalibration_
        print(f"recalibrated P(relevant): {r.method} map of the logit (a={r.a:.4g}, "
              f"b={r.b:.4g}, c={r.c:.4g}) fitted on {r.info['n']:,} carve pairs; their "
              f"log-loss {r.info['log_loss_before']:.4f} -> {r.info['log_loss_after']:.4f}")
    return 0


def cmd_predict(a) -> int:
    model = _load_model(a.model)
    post = _with_cold_start(a, model.posterior)
    df = _read_table(a.pairs, a.user_col, a.item_col)
    users = _coerce_ids(df[a.user_col].to_numpy(), post.users, a.id_type)
    items = _coerce_ids(df[a.item_col].to_numpy(), post.items, a.id_type)
    # mean and interval bounds on the training rating scale unless --no-clip
    pred = post.predict(users, items, interval=a.interval, clip=a.clip,
                        unknown="raise" if a.strict else "fallback")
    out = pred.to_frame()[["user", "item", "mean", "std", "lower", "upper",
                           "known_user", "known_item"]]
    if _feature_files(a):  # which rows come from the features alone (cold start)
        out = out.assign(**_cold_flags(post, users, items))
    if a.out:
        out.to_csv(a.out, index=False, float_format=FLOAT_FORMAT)
        print(f"wrote {len(out):,} predictions ({pred.uncertainty}; {a.interval:.0%} "
              f"interval) to {a.out}")
    else:
        out.to_csv(sys.stdout, index=False, float_format=FLOAT_FORMAT)
    return 0


def cmd_evaluate(a) -> int:
    from bayesmf import evaluate as ev
    from bayesmf.data.ratings import Ratings

    model = _load_model(a.model)
    post = model.posterior
    source = ":" in a.test and not Path(a.test).exists()
    df = None if source else _read_table(a.test, a.user_col, a.item_col)
    # a Bernoulli model fitted to implicit feedback with sampled negatives: a test file
    # without a rating column lists held-out interactions, as for the implicit model
    held_out = (post.likelihood.full_matrix or (
        "negatives" in post.attrs and df is not None and a.rating_col not in df.columns))
    if held_out:
        # implicit feedback: the test file lists held-out interactions (user,item[,count]);
        # every pair is relevant and there are no ratings to score
        from bayesmf.data.interactions import Interactions

        if df is None:
            raise DataError(f"{a.test}: an implicit-feedback model is evaluated on a file "
                            "of held-out interactions (user,item[,count]), not a dataset")
        counts = None
        for c in (a.rating_col, "count", "weight"):
            if c in df.columns and pd.api.types.is_numeric_dtype(df[c]):
                counts = df[c].to_numpy(np.float64)
                break
        test = Interactions.from_arrays(
            _coerce_ids(df[a.user_col].to_numpy(), post.users, a.id_type),
            _coerce_ids(df[a.item_col].to_numpy(), post.items, a.id_type), counts)
    elif source:
        from bayesmf.datasets import load_ratings_source

        test = load_ratings_source(a.test, **_source_kwargs(a))
    else:
        if a.rating_col not in df.columns:
            raise DataError(f"{a.test}: missing rating column {a.rating_col!r}")
        df = df.assign(**{a.user_col: _coerce_ids(df[a.user_col].to_numpy(), post.users,
                                                  a.id_type),
                          a.item_col: _coerce_ids(df[a.item_col].to_numpy(), post.items,
                                                  a.id_type)})
        test = Ratings.from_dataframe(df, a.user_col, a.item_col, a.rating_col,
                                      timestamp_col=None, duplicates=a.duplicates)
    res = ev.evaluate(post, test, k=a.k, ranking=not a.no_ranking, protocol=a.protocol,
                      relevance_threshold=a.relevance_threshold)
    # test pairs that are training pairs: their rating metrics are in-sample (optimistic)
    # and ranking skips them; counted in the output and warned about
    n_in = _in_training(post, test)
    res = {**{k: v for k, v in res.items() if k != "ranking"}, "n_in_train": n_in,
           **({"ranking": res["ranking"]} if "ranking" in res else {})}
    if n_in:
        print(f"bayesmf evaluate: warning: {n_in:,} of {test.nnz:,} test pairs are training "
              "pairs of the model; their rating metrics are in-sample (optimistic) and "
              "ranking skips them", file=sys.stderr)
    if a.out:
        text = json.dumps(res, indent=2, default=float) + "\n"
        _atomic_write(a.out, lambda t: Path(t).write_text(text))
    if a.json:
        print(json.dumps(res, indent=2, default=float))
    else:
        for key, val in _flatten(res):
            print(f"{key:<28} {val:.5g}" if isinstance(val, float) else f"{key:<28} {val}")
    return 0


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def cmd_recommend(a) -> int:
    from bayesmf import recommend as rec

    if a.master is not None and a.engine != "spark":
        raise DataError("--master applies to --engine spark only")
    # a flag of another strategy would be silently ignored
    qs = ("ucb", "lcb", "prob")
    for flag, v, owners in (("--quantile", a.quantile, ("ucb", "lcb")),
                            ("--threshold", a.threshold, ("prob",)),
                            ("--seed", a.seed, ("thompson",)),
                            ("--quantile-method", a.quantile_method, qs),
                            ("--screen-size", a.screen_size, qs)):
        if v is not None and a.strategy not in owners:
            raise SpecError(f"{flag} applies to --strategy {', '.join(owners)}, not "
                            f"{a.strategy}")
    if a.screen_size is not None and a.quantile_method in ("exact", "gaussian"):
        raise SpecError(f"--screen-size applies to --quantile-method approx or bounded, not "
                        f"{a.quantile_method}")
    model = _load_model(a.model)
    post = _with_cold_start(a, model.posterior)
    if a.users and a.users.startswith("@"):
        users = _coerce_ids(_read_id_file(a.users[1:]), post.users, a.id_type)
    elif a.users:
        users = _coerce_ids([u for u in a.users.split(",") if u.strip()], post.users,
                            a.id_type)
    else:
        users = post.users.ids
    if a.users:
        users = pd.unique(np.asarray(users, dtype=object if np.asarray(users).dtype == object
                                     else None))  # a repeated id: one list
        _, known = post.users.encode(users, unknown="mask")
        if not known.all():
            bad = np.asarray(users)[~known]
            eg = bad[0].item() if isinstance(bad[0], np.generic) else bad[0]
            print(f"bayesmf recommend: warning: {len(bad)} of the --users id(s) are not in "
                  f"the model (e.g. {eg!r}): they get the population fallback "
                  "(known_user=False)", file=sys.stderr)
    kw = {}
    if a.seed is not None:
        kw["seed"] = a.seed
    if a.threshold is not None:
        kw["threshold"] = a.threshold
    if a.quantile is not None:
        kw["quantile"] = a.quantile
    if a.screen_size is not None:
        kw["screen_size"] = a.screen_size
    # columns: user, item, rank, score (the strategy's ranking score), mean (the predicted
    # rating, on the training scale unless --no-clip), std, std_param, known_user
    if a.engine == "spark":
        recs = _recommend_on_spark(a, post, users, kw)
    else:
        recs = rec.recommend(post, users, n=a.n, strategy=a.strategy,
                             exclude_seen=not a.include_seen,
                             quantile_method=a.quantile_method or "approx", clip=a.clip,
                             **kw)
    if _feature_files(a):  # which users / items come from the features alone
        recs = recs.assign(**_cold_flags(post, recs["user"].to_numpy(),
                                         recs["item"].to_numpy()))
    if a.out:
        _write_table(recs, a.out, float_format=FLOAT_FORMAT)
        print(f"wrote {len(recs):,} recommendations for {len(users):,} user(s) to {a.out}")
    else:
        recs.to_csv(sys.stdout, index=False, float_format=FLOAT_FORMAT)
    return 0


def _recommend_on_spark(a, post, users, kw) -> pd.DataFrame:
    """``recommend --engine spark``: score on Spark executors (:mod:`bayesmf.spark`) and
    collect the lists in the order of the local engine (users as requested, then rank),
    so both engines write the same table. Uses the active SparkSession when there is one
    (``--master`` is then ignored), else starts one on ``--master`` (default
    ``local[*]``) and stops it afterwards."""
    from bayesmf.spark import ALL_COLUMNS, _pyspark, recommend_spark

    _pyspark()  # a clear error naming the extra when pyspark is missing
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    own = spark is None
    if own:
        master = a.master or "local[*]"
        builder = (SparkSession.builder.master(master).appName("bayesmf recommend")
                   .config("spark.ui.showConsoleProgress", "false"))
        if master.startswith("local") and not os.environ.get("PYSPARK_PYTHON"):
            # local workers run this interpreter (the one that has bayesmf); pyspark
            # reads only the environment variable
            os.environ["PYSPARK_PYTHON"] = sys.executable
        try:
            spark = builder.getOrCreate()
        except Exception as exc:  # no Java, a bad master URL, an unreachable cluster
            from bayesmf.errors import SpecError

            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SpecError(f"--engine spark: cannot start Spark on {master}: {msg}") from None
    try:
        all_users = not a.users
        uniq = pd.unique(np.asarray(users))
        users_df = None if all_users else spark.createDataFrame(
            pd.DataFrame({"user": pd.Series(uniq, dtype=object if uniq.dtype == object
                                            else np.int64)}))
        recs = recommend_spark(post, users_df, spark=spark, n=a.n, strategy=a.strategy,
                               exclude_seen=not a.include_seen,
                               quantile_method=a.quantile_method or "approx", clip=a.clip,
                               columns="all", **kw).toPandas()
    finally:
        if own:
            spark.stop()
    order = pd.DataFrame({"user": np.asarray(users), "_pos": np.arange(len(users))})
    recs = order.merge(recs, on="user", how="inner", sort=False)
    recs = recs.sort_values(["_pos", "rank"], kind="stable").drop(columns="_pos")
    recs = recs.reset_index(drop=True)[list(ALL_COLUMNS)]
    recs["rank"] = recs["rank"].astype(np.int64)
    recs["known_user"] = recs["known_user"].astype(bool)
    return recs


def _read_id_file(path: str) -> list:
    """Ids of ``--users @FILE``: one per line, blank lines and surrounding spaces ignored."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"--users @{path}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"--users @{path}: is a folder, not a file of ids") from None
    except UnicodeDecodeError:
        raise DataError(f"--users @{path}: not a UTF-8 text file of ids") from None
    ids = [x.strip() for x in text.splitlines() if x.strip()]
    if not ids:
        raise DataError(f"--users @{path}: the file lists no id (one id per line)")
    return ids


def cmd_similar(a) -> int:
    from bayesmf.recommend import similar_items

    model = _load_model(a.model)
    post = model.posterior
    item = _coerce_ids([a.item], post.items, a.id_type)[0]
    out = similar_items(post, item, n=a.n)
    if a.out:
        _write_table(out, a.out, FLOAT_FORMAT)
        print(f"wrote {len(out):,} items similar to {a.item} to {a.out}")
    else:
        out.to_csv(sys.stdout, index=False, float_format=FLOAT_FORMAT)
    return 0


SPLIT_STRATEGIES = ("random", "per-user", "temporal", "leave-one-out")
_SPLIT_FRACTION = 0.2


def _split_settings(a) -> dict:
    """Validate the flag combination of ``bayesmf split`` (before reading any data) and
    return the keyword arguments of the :mod:`bayesmf.data.split` function."""
    s = a.strategy
    given = {"--test-fraction": a.test_fraction, "--min-train": a.min_train,
             "--last-k": a.last_k, "--cutoff": a.cutoff}

    def refuse(flag, why):
        raise DataError(f"{flag} does not apply to --strategy {s} ({why})")

    if s == "temporal" and a.seed is not None:
        refuse("--seed", "the temporal split has no random choice")
    seed = 0 if a.seed is None else a.seed

    if s != "temporal":
        for flag in ("--last-k", "--cutoff"):
            if given[flag] is not None:
                refuse(flag, "it selects the temporal split")
    if s == "random":
        if a.min_train is not None:
            refuse("--min-train", "a random split does not keep rows per user; use "
                   "--strategy per-user")
        return {"test_fraction": a.test_fraction or _SPLIT_FRACTION, "seed": seed}
    if s == "per-user":
        return {"test_fraction": a.test_fraction or _SPLIT_FRACTION,
                "min_train": 1 if a.min_train is None else a.min_train, "seed": seed}
    if s == "leave-one-out":
        if a.test_fraction is not None:
            refuse("--test-fraction", "one rating per user goes to test")
        return {"n_test": 1, "min_train": 1 if a.min_train is None else a.min_train,
                "seed": seed}
    # temporal: exactly one of --last-k, --cutoff, --test-fraction (default the latter)
    modes = [f for f in ("--last-k", "--cutoff", "--test-fraction") if given[f] is not None]
    if len(modes) > 1:
        raise DataError(f"--strategy temporal takes one of --last-k, --cutoff and "
                        f"--test-fraction, got {' and '.join(modes)}")
    if a.min_train is not None and a.last_k is None:
        refuse("--min-train", "only the per-user --last-k temporal split keeps training "
               "rows per user")
    if a.last_k is not None:
        return {"last_k": a.last_k, "min_train": 1 if a.min_train is None else a.min_train}
    if a.cutoff is not None:
        c = _parse_value(a.cutoff)
        return {"cutoff": c if isinstance(c, (int, float)) else a.cutoff}
    return {"test_fraction": a.test_fraction or _SPLIT_FRACTION}


def cmd_split(a) -> int:
    """``bayesmf split``: train/test files from one ratings source.

    Strategies (functions of :mod:`bayesmf.data.split`, same seeds, same splits):

    ``random``         :func:`random_split`: ``round(f n)`` rows chosen uniformly
    ``per-user``       :func:`user_split` with ``test_fraction``: per user
                       ``round(f n_u)`` random rows, keeping ``min_train`` (default 1)
                       training rows, so every test user is in train
    ``leave-one-out``  :func:`user_split` with ``n_test=1``: one random row per user that
                       has more than ``min_train`` rows; every test user is in train
    ``temporal``       :func:`temporal_split`: the latest ``round(f n)`` rows overall
                       (default), the ratings at or after ``--cutoff``, or per user its
                       ``--last-k`` latest rows (every test user then in train)

    Both files have the columns ``user,item,rating[,timestamp]`` with the ids exactly as
    the ratings reader (:func:`bayesmf.datasets.load_ratings_source`) read them and the
    ratings written exactly (no rounding); timestamps as unix seconds.
    """
    from bayesmf.data.split import random_split, temporal_split, user_split
    from bayesmf.datasets import load_ratings_source

    kw = _split_settings(a)
    ratings = load_ratings_source(a.ratings, **_source_kwargs(a))
    fn = {"random": random_split, "per-user": user_split, "leave-one-out": user_split,
          "temporal": temporal_split}[a.strategy]
    split = fn(ratings, **kw)
    _write_table(split.train.to_dataframe(), a.out_train)
    _write_table(split.test.to_dataframe(), a.out_test)
    i = split.info
    seed = "" if a.strategy == "temporal" else f", seed {0 if a.seed is None else a.seed}"
    print(f"split {a.ratings} ({a.strategy}{seed}): {i.n_train:,} train / "
          f"{i.n_test:,} test ratings -> "
          f"{a.out_train}, {a.out_test}; test rows whose user is not in train: "
          f"{i.test_unseen_users:,}, whose item is not in train: {i.test_unseen_items:,}")
    return 0


# ---------------------------------------------------------------------- parser
class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help when it has a meaningful default (not
    ``None``/``False``, and not already stated). Descriptions and epilogs keep their line
    breaks: each line is wrapped to the terminal width on its own, and indented lines
    (tables, examples) are kept as written."""

    def _fill_text(self, text, width, indent):
        import textwrap

        out = []
        for line in text.splitlines():
            if not line.strip() or line.startswith(" "):
                out.append(indent + line)
            else:
                out.append(textwrap.fill(line, width, initial_indent=indent,
                                         subsequent_indent=indent))
        return "\n".join(out)

    def _get_help_string(self, action):
        text = action.help or ""
        d = action.default
        if ("%(default)" in text or "default:" in text or d is None or d is False
                or d is argparse.SUPPRESS or isinstance(d, bool)):
            return text
        if action.option_strings or action.nargs in (argparse.OPTIONAL,
                                                    argparse.ZERO_OR_MORE):
            return f"{text} (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """Parser errors as one line (``bayesmf fit: error: ... (see 'bayesmf fit -h')``),
    exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} -h')\n")


_DESCRIPTION = ("bayesmf: probabilistic and Bayesian matrix factorization for recommender "
                "systems, with the posterior carried into prediction intervals, ranking "
                "and evaluation.")
_EPILOG = """\
examples:
  bayesmf split ratings.csv --strategy per-user --out-train train.csv --out-test test.csv
  bayesmf fit train.csv --method gibbs --rank 10 --out model.nc
  bayesmf predict model.nc pairs.csv --out predictions.csv
  bayesmf evaluate model.nc test.csv --json
  bayesmf recommend model.nc --users 1,2 --n 10 --strategy ucb

Ratings files are CSV/TSV (optionally .gz/.bz2/.xz/.zip) or Parquet with columns \
user, item, rating[, timestamp] (other names: --user-col etc.); dataset names such as \
movielens:latest-small work wherever a ratings file does. 'bayesmf COMMAND -h' lists \
the options of a command.

exit status: 0 success; 2 bad input, bad path or failed file operation (one line on \
stderr); 1 unexpected internal error (BAYESMF_DEBUG=1 shows the traceback); 130 \
interrupted.
"""


def _command(sub, name: str, help: str, description: str | None = None, **kw):
    return sub.add_parser(name, help=help, description=description or help,
                          formatter_class=_HelpFormatter, **kw)


def _add_columns(p):
    p.add_argument("--user-col", default="user", help="name of the user id column")
    p.add_argument("--item-col", default="item", help="name of the item id column")
    p.add_argument("--rating-col", default="rating", help="name of the rating column")
    p.add_argument("--timestamp-col", default="auto",
                   help="name of the timestamp column; 'auto' uses a column named "
                        "timestamp when there is one")


def _add_duplicates(p):
    p.add_argument("--duplicates", default="raise", choices=["raise", "last", "first", "mean"],
                   help="repeated (user, item) pairs: raise an error, keep the last or first "
                        "row in file order, or average them (default: raise)")


def _add_reading(p):
    """--duplicates and --id-type: how a ratings file becomes Ratings (fit, data info,
    split)."""
    _add_duplicates(p)
    p.add_argument("--id-type", default="auto", choices=["auto", "str", "int"],
                   help="auto: ids are integers only when every id is written as a plain "
                        "integer (no leading zeros or '+'), else text exactly as written "
                        "('007' and '7' differ); str: always text; int: always integers "
                        "('007' is 7) (default: auto)")


_FEATURES_HELP = {
    "fit": ("side information for the Macau prior (--method gibbs, map, svi or nuts): a "
            "CSV/TSV/Parquet file with a header, an id column ({col}; --{side}-col "
            "names another) and one column per feature (numbers as they are, "
            "standardised; text one-hot; text with '|' multi-valued, e.g. "
            "Action|Comedy); every {side} of TRAIN needs a row "
            "(rows of other {side}s are allowed and ignored); ids by the --id-type rule"),
    "predict": ("{side} features (the file format of 'fit --{side}-features'; the model "
                "must have been fitted with {side} features): {side}s of the file that the "
                "model does not know are added as cold-start {side}s, their factors from "
                "their features ({what}); {side}s in neither stay on the population "
                "fallback"),
}
_FEATURES_WHAT = {
    ("predict", "user"): "known_user=True, cold_user=True",
    ("predict", "item"): "known_item=True, cold_item=True",
    ("recommend", "user"): "they get lists; marked cold_user=True",
    ("recommend", "item"): "candidates for every user; marked cold_item=True",
}


def _add_features(p, command: str):
    """--user-features / --item-features (fit; predict and recommend: cold start)."""
    for side in ("user", "item"):
        col = "user, userId, user_id..." if side == "user" else "item, movieId, item_id..."
        text = _FEATURES_HELP["fit" if command == "fit" else "predict"]
        p.add_argument(f"--{side}-features", metavar="FILE",
                       help=text.format(side=side, col=col,
                                        what=_FEATURES_WHAT.get((command, side), "")))


def _add_model_id_type(p):
    """--id-type of the commands that read ids for a fitted model."""
    p.add_argument("--id-type", default="auto", choices=["auto", "str", "int"],
                   help="how ids read from files or flags meet the model's ids: auto: the "
                        "model's rule (for integer ids '12' is 12, '012' is unknown); int: "
                        "parse every id as an integer ('012' is 12); str: ids are text "
                        "(default: auto)")


def build_parser() -> argparse.ArgumentParser:
    from bayesmf import __version__
    from bayesmf.infer import METHODS
    from bayesmf.model.likelihoods import LIKELIHOODS
    from bayesmf.model.priors import FACTOR_PRIORS
    from bayesmf.predictive.links import LINK_MAPS

    ap = _Parser(prog="bayesmf", description=_DESCRIPTION, epilog=_EPILOG,
                 formatter_class=_HelpFormatter)
    ap.add_argument("--version", action="version", version=f"bayesmf {__version__}",
                    help="print the version and exit")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND",
                            title="commands")

    def nonneg(name):
        return _int_at_least(0, name)

    def positive(name):
        return _int_at_least(1, name)

    data = _command(sub, "data", "dataset utilities (data info)")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND",
                               title="subcommands")
    info = _command(dsub, "info", "summary of a ratings file or dataset: counts, sparsity, "
                    "rating scale, ratings per user and item")
    info.add_argument("source", help="ratings file (CSV/TSV/Parquet) or dataset name, e.g. "
                                     "movielens:latest-small")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_columns(info)
    _add_reading(info)
    info.set_defaults(func=cmd_data_info)

    fit = _command(sub, "fit", "fit a model and save it",
                   "Fit a matrix factorization model to a ratings file and save it (netCDF). "
                   "MCMC settings left out take the method's defaults.")
    fit.add_argument("train", nargs="?", metavar="TRAIN",
                     help="ratings file (CSV/TSV/Parquet) or dataset name, e.g. "
                          "movielens:latest-small (not needed with --resume)")
    fit.add_argument("--feedback", default="explicit", choices=["explicit", "implicit"],
                     help="explicit: TRAIN holds ratings (user,item,rating); implicit: "
                          "TRAIN holds events or counts (user,item[,count]; repeated rows "
                          "are summed; a column named count/plays/clicks/weight/rating is "
                          "the count, else each row is one event) and the model is the "
                          "confidence-weighted implicit model over all pairs")
    fit.add_argument("--method", default=None, choices=sorted(METHODS),
                     help="inference: map (point estimate), gibbs (BPMF Gibbs sampler), "
                          "nuts (NumPyro NUTS), svi (variational), cavi (HPF variational, "
                          "--likelihood poisson), pymc-nuts / pymc-advi, propagation "
                          "(BPMF over user x item blocks fitted as independent tasks; "
                          "--option user_blocks=3 --option executor=processes) "
                          f"(default: {_DEFAULT_METHOD['explicit']} for explicit, "
                          f"{_DEFAULT_METHOD['implicit']} for implicit feedback)")
    fit.add_argument("--rank", type=nonneg("rank"), default=None,
                     help="number of latent factors (0: biases only; default "
                          f"{_DEFAULT_RANK['explicit']} for explicit, "
                          f"{_DEFAULT_RANK['implicit']} for implicit feedback)")
    fit.add_argument("--likelihood", default=None, choices=sorted(LIKELIHOODS),
                     help="observation family: gaussian (ratings as continuous, the "
                          "default), ordinal (ordered probit over the star levels), "
                          "bernoulli-probit / bernoulli-logit (0/1 data), implicit (the "
                          "default of --feedback implicit), poisson (HPF on counts, with "
                          "--prior gamma); predict writes the expected rating, P(y=1), the "
                          "preference score or the expected count in 'mean'")
    fit.add_argument("--confidence", type=_confidence, metavar="KIND:ALPHA[:EPS]",
                     help="--feedback implicit: confidence of an observed pair c = 1 + "
                          "ALPHA*f(count) with f = linear (count) or log (log(1 + "
                          "count/EPS)), e.g. log:2 or linear:0.01 (default: "
                          "the implicit likelihood's log:2:1); auto: ALPHA chosen among "
                          "log:0.5, 1, 2, 4, 8 by NDCG@20 of short Gibbs fits on a 20%% "
                          "per-user carve of TRAIN (bayesmf.selection; measured 0.5 to 2 "
                          "fits' time more)")
    fit.add_argument("--positive-threshold", type=float, metavar="T",
                     help="--feedback implicit with a rating dataset (movielens:...): the "
                          "pairs rated >= T are the positives (default: every rated pair)")
    fit.add_argument("--negatives", metavar="RULE",
                     help="--feedback implicit with --likelihood bernoulli-logit or "
                          "bernoulli-probit: the negative-sampling rule, e.g. uniform:4 (4 "
                          "uniform negatives per positive), popularity^0.75:2, "
                          "uniform:50/user (grammar: bayesmf.data.negatives); drawn once "
                          "with --seed and saved with the model; a suffix @sweep "
                          "(uniform:4@sweep, --method gibbs or svi) redraws them every sweep")
    fit.add_argument("--recalibrate", choices=list(LINK_MAPS), default=None,
                     help="with --negatives and --likelihood bernoulli-logit: fit a "
                          "monotone map of P(relevant) on a carve of the training positives "
                          "+ fresh negatives (one more fit on the rest) and keep it in the "
                          "model, so that predict/recommend/evaluate use the recalibrated "
                          "probability (BayesMF.recalibrate)")
    fit.add_argument("--recalibrate-fraction", type=float, default=None, metavar="F",
                     help="the share of each user's positives carved out by --recalibrate "
                          "(default 0.1)")
    fit.add_argument("--prior", default=None, choices=sorted(FACTOR_PRIORS),
                     help="factor prior: normal-wishart (BPMF, the default) or normal-gamma "
                          "(per-dimension, libFM/myFM style) for the Gaussian-factor "
                          "models; gamma: the hierarchical Gamma prior of non-negative "
                          "factors (HPF), the default and only choice of --likelihood "
                          "poisson")
    for side in ("user", "item"):
        fit.add_argument(f"--{side}-bias", action=argparse.BooleanOptionalAction, default=None,
                         help=f"the {side} bias b_{side[0]} in the model (default: the "
                              "likelihood's: on for ratings and 0/1 data, off for implicit "
                              "and poisson; with --likelihood poisson they are non-negative "
                              "Gamma biases)")
    fit.add_argument("--seed", type=nonneg("seed"), default=0, help="random seed")
    fit.add_argument("--out", metavar="MODEL", help="model file to write (netCDF, e.g. "
                                                    "model.nc); required")
    fit.add_argument("--save-draws", metavar="N", default="auto", type=_save_draws,
                     help="posterior draws stored in the model file: a number (evenly "
                          "spaced over each chain), 'all', or 'auto' (80 draws: a 300-draw "
                          "latest-small model in ~32 MB instead of 137 MB)")
    fit.add_argument("--save-mode", choices=["draws", "summary"], default="draws",
                     help="draws: real posterior draws; summary: per-row means and "
                          "covariances, ~3 MB, still predicts with intervals (see README, "
                          "Model files)")
    fit.add_argument("--samples", type=positive("samples"),
                     help="MCMC draws kept per chain (num_samples)")
    fit.add_argument("--warmup", type=nonneg("warmup"),
                     help="MCMC warm-up iterations (num_warmup)")
    fit.add_argument("--chains", type=positive("chains"),
                     help="number of chains (num_chains)")
    fit.add_argument("--thin", type=positive("thin"), help="keep every T-th draw")
    fit.add_argument("--max-iter", type=positive("max_iter"),
                     help="MAP: maximum iterations")
    fit.add_argument("--solver", choices=["als", "lbfgs", "adam"],
                     help="MAP solver (als for the Gaussian likelihood, lbfgs otherwise)")
    fit.add_argument("--checkpoint", metavar="PATH",
                     help="gibbs/nuts: write resumable checkpoints to PATH (plus "
                          "PATH.cli.json with these settings)")
    fit.add_argument("--checkpoint-every", type=positive("checkpoint_every"), metavar="N",
                     help="iterations between checkpoints")
    fit.add_argument("--resume", metavar="PATH",
                     help="continue the killed run that checkpointed to PATH, with its "
                          "saved settings")
    fit.add_argument("--option", action="append", metavar="KEY=VALUE",
                     help="any option of the method, e.g. --option guide=lowrank "
                          "(repeatable)")
    pg = fit.add_mutually_exclusive_group()
    pg.add_argument("--progress", dest="progress", action="store_true", default=None,
                    help="show a progress bar (default: when stderr is a terminal)")
    pg.add_argument("--no-progress", dest="progress", action="store_false",
                    help="no progress bar")
    _add_features(fit, "fit")
    fit.add_argument("--implicit-terms", default=None, metavar="SIDES",
                     help="SVD++-style implicit terms: 'user' (the items each user rated "
                          "inform the user factor), 'item' (the users who rated an item "
                          "inform the item factor) or 'user,item'; built from the training "
                          "pairs as features of the Macau prior (--method gibbs, map, svi or nuts)")
    _add_columns(fit)
    _add_reading(fit)
    fit.set_defaults(func=cmd_fit)

    pr = _command(sub, "predict", "predict ratings with intervals for user-item pairs",
                  "Predictive mean, standard deviation and central interval for every "
                  "(user, item) pair of a file; unknown users/items get the population "
                  "fallback (flagged in known_user/known_item) unless --strict.")
    pr.add_argument("model", help="model file written by 'bayesmf fit'")
    pr.add_argument("pairs", help="CSV/TSV/Parquet file with user and item columns")
    pr.add_argument("--out", help="CSV file to write (default: standard output)")
    pr.add_argument("--interval", type=_open_fraction("interval"), default=0.9,
                    help="probability of the central predictive interval")
    pcl = pr.add_mutually_exclusive_group()
    pcl.add_argument("--no-clip", dest="clip", action="store_false",
                     help="report the raw mixture mean and quantiles, which may leave the "
                          "rating scale (default: mean and bounds clipped to the training "
                          "scale; std is never clipped)")
    pcl.add_argument("--clip", dest="clip", action="store_true",
                     help="clip to the training rating scale (the default; accepted for "
                          "compatibility)")
    pr.set_defaults(clip=True)
    pr.add_argument("--strict", action="store_true",
                    help="error on unknown user or item ids")
    _add_features(pr, "predict")
    _add_columns(pr)
    _add_model_id_type(pr)
    pr.set_defaults(func=cmd_predict)

    ev = _command(sub, "evaluate", "metrics on held-out ratings",
                  "Rating metrics (RMSE, MAE, NLPD, CRPS, interval coverage and width) and "
                  "ranking metrics at k on held-out ratings. Test pairs that are training "
                  "pairs are counted (n_in_train) and warned about.")
    ev.add_argument("model", help="model file written by 'bayesmf fit'")
    ev.add_argument("test", help="CSV/TSV/Parquet file with user, item and rating columns, "
                                 "or a dataset name; for an implicit-feedback model (or a "
                                 "Bernoulli model fitted with --negatives, when the file "
                                 "has no rating column) the held-out interactions "
                                 "(user,item[,count]), all relevant")
    ev.add_argument("--json", action="store_true", help="print the metrics as JSON")
    ev.add_argument("--out", metavar="FILE", help="also write the metrics as JSON to FILE")
    ev.add_argument("--k", type=positive("k"), default=10,
                    help="cut-off of the ranking metrics")
    ev.add_argument("--no-ranking", action="store_true", help="rating metrics only")
    ev.add_argument("--relevance-threshold", type=float, default=None, metavar="T",
                    help="a held-out pair is relevant for the ranking metrics when its "
                         "rating >= T (default: the likelihood's: 4 on a star scale, 1 for "
                         "0/1 data; every held-out interaction of an implicit model)")
    ev.add_argument("--protocol", default="full", choices=["full", "sampled"],
                    help="ranking protocol: full (every item the user did not interact with "
                         "in training is a candidate) or sampled (the relevant items among "
                         "100 uniformly sampled never-seen items); sampled metrics are "
                         "inflated and can order models differently (Krichene & Rendle "
                         "2020): report full ranking")
    _add_columns(ev)
    _add_duplicates(ev)
    _add_model_id_type(ev)
    ev.set_defaults(func=cmd_evaluate)

    rc = _command(sub, "recommend", "top-n recommendations",
                  "Top-n items per user, ranked by a strategy over the posterior predictive. "
                  "Items a user rated in training are excluded unless --include-seen. "
                  "(The 'utility' strategy takes a Python function and is API-only.)")
    rc.add_argument("model", help="model file written by 'bayesmf fit'")
    who = rc.add_mutually_exclusive_group()
    who.add_argument("--users", type=_id_list, metavar="ID,ID,...|@FILE",
                     help="comma-separated user ids, or @FILE with one id per line "
                          "(default: all users)")
    who.add_argument("--all-users", action="store_true",
                     help="every user of the model (the default without --users)")
    rc.add_argument("--n", type=positive("n"), default=10, help="items per user")
    rc.add_argument("--strategy", type=_strategy, default="mean",
                    metavar="{" + ",".join(_CLI_STRATEGIES) + "}",
                    help="mean: predictive mean; ucb / lcb: upper / lower predictive "
                         "quantile (--quantile); thompson: one posterior draw per user "
                         "(--seed); prob: P(rating >= --threshold)")
    rc.add_argument("--seed", type=nonneg("seed"), help="seed of thompson (default: 0)")
    rc.add_argument("--threshold", type=float,
                    help="relevance threshold of 'prob' (default: the likelihood's: 4.0 "
                         "for star ratings, 1 for 0/1 data and counts -- P(y = 1), P(y >= "
                         "1) -- and 0.5 for the implicit preference)")
    rc.add_argument("--quantile", type=_open_fraction("quantile"),
                    help="quantile of ucb / lcb (default: 0.9 / 0.1)")
    rc.add_argument("--quantile-method", default=None,
                    choices=["bounded", "exact", "approx", "gaussian"],
                    help="top-n search of ucb / lcb / prob: approx (default; screen, then "
                         "solve the best few exactly; matched 'exact' on every user "
                         "measured), bounded (also certify the rest: guaranteed the lists "
                         "of 'exact'), exact (solve every pair; slow), gaussian "
                         "(moment-matched quantile)")
    rc.add_argument("--screen-size", type=positive("screen-size"),
                    help="items per user scored exactly after screening (bounded, approx)")
    rc.add_argument("--no-clip", dest="clip", action="store_false",
                    help="report the raw predicted mean (default: clipped to the training "
                         "rating scale; the ranking score is never clipped)")
    rc.add_argument("--include-seen", action="store_true",
                    help="do not exclude items the user rated in training")
    rc.add_argument("--engine", choices=["local", "spark"], default="local",
                    help="local: this process (default); spark: Spark executors (needs "
                         "pip install 'bayesmf[spark]'; the same lists and columns)")
    rc.add_argument("--master", metavar="URL",
                    help="Spark master of --engine spark, e.g. local[2] or spark://host:7077 "
                         "(default: local[*]; ignored inside an active Spark session)")
    rc.add_argument("--out", help="file to write: CSV, .tsv, or Parquet for .parquet/.pq "
                                  "(default: CSV on standard output)")
    _add_features(rc, "recommend")
    _add_model_id_type(rc)
    rc.set_defaults(func=cmd_recommend)

    si = _command(sub, "similar", "items similar to an item",
                  "Items most similar to an item: cosine similarity of the item factors, "
                  "averaged over the posterior draws.")
    si.add_argument("model", help="model file written by 'bayesmf fit'")
    si.add_argument("--item", required=True, type=_nonempty, metavar="ID",
                    help="item id (required)")
    si.add_argument("--n", type=positive("n"), default=10, help="number of similar items")
    si.add_argument("--out", help="CSV file to write (default: standard output)")
    _add_model_id_type(si)
    si.set_defaults(func=cmd_similar)

    sp = _command(sub, "split", "split a ratings file into train and test files",
                  "Split one ratings file or dataset into train and test files "
                  "(bayesmf.data.split). Strategies:\n\n"
                  "  random         a random --test-fraction of all ratings\n"
                  "  per-user       per user a random --test-fraction of its ratings; every\n"
                  "                 user keeps --min-train training ratings\n"
                  "  leave-one-out  per user one random rating (users with more than\n"
                  "                 --min-train ratings)\n"
                  "  temporal       the latest --test-fraction of all ratings by time, or the\n"
                  "                 ratings at or after --cutoff, or per user its --last-k\n"
                  "                 latest (needs timestamps)\n\n"
                  "The files have the columns user,item,rating[,timestamp] with the ids as "
                  "read and the ratings unrounded; they feed 'bayesmf fit' and "
                  "'bayesmf evaluate' directly.")
    sp.add_argument("ratings", metavar="RATINGS",
                    help="ratings file (CSV/TSV/Parquet) or dataset name")
    sp.add_argument("--strategy", default="random", choices=SPLIT_STRATEGIES,
                    help="how test ratings are chosen (see above)")
    sp.add_argument("--test-fraction", type=_open_fraction("test_fraction"), metavar="F",
                    help="fraction of ratings (per user for per-user) that goes to test; "
                         "random, per-user, temporal (default: 0.2)")
    sp.add_argument("--seed", type=nonneg("seed"), default=None,
                    help="seed of the random choices (random, per-user, leave-one-out; "
                         "default: 0)")
    sp.add_argument("--min-train", type=nonneg("min_train"), metavar="K",
                    help="per-user, leave-one-out, temporal --last-k: training ratings "
                         "every user keeps (default: 1, so every test user is in train)")
    sp.add_argument("--last-k", type=positive("last_k"), metavar="K",
                    help="temporal: per user its K latest ratings go to test")
    sp.add_argument("--cutoff", metavar="TIME",
                    help="temporal: ratings at or after TIME (unix seconds or a date such "
                         "as 2015-01-01, UTC) go to test")
    sp.add_argument("--out-train", required=True, metavar="FILE",
                    help="training ratings file to write (.csv, .tsv, .parquet; .gz etc. "
                         "compress); required")
    sp.add_argument("--out-test", required=True, metavar="FILE",
                    help="test ratings file to write; required")
    _add_columns(sp)
    _add_reading(sp)
    sp.set_defaults(func=cmd_split)
    return ap


def _os_error_line(exc: OSError) -> str:
    """``OSError`` as one line: ``<file>: <reason>`` (both files for a rename)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    names = [n for n in (exc.filename, getattr(exc, "filename2", None)) if n]
    return f"{' -> '.join(map(str, names))}: {reason}" if names else reason


def main(argv=None) -> int:
    """Run the CLI with ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    Every user-facing error -- a :class:`~bayesmf.errors.BayesMFError`, a failed file
    operation (:class:`OSError`, e.g. a permission error while writing), an unreadable
    table, an argument the parser rejects -- is printed as one line on stderr and gives
    exit status 2. Output paths are checked before any work. Anything else is a bug:
    one line and status 1 (``BAYESMF_DEBUG=1`` re-raises it with its traceback)."""
    ap = build_parser()
    try:
        a, extra = ap.parse_known_args(argv)
        if extra:  # reported by the subcommand's parser: 'bayesmf fit: error: ...'
            sub = ap
            for attr in ("command", "data_command"):
                name_ = getattr(a, attr, None)
                acts = [x for x in getattr(sub, "_actions", [])
                        if isinstance(x, argparse._SubParsersAction)]
                if name_ and acts and name_ in acts[0].choices:
                    sub = acts[0].choices[name_]
            sub.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help/--version (0) or a parser error (2, printed)
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    name = a.command if a.command != "data" else f"data {a.data_command}"
    import warnings

    def _one_line(message, category, filename, lineno, file=None, line=None):
        # bayesmf's warnings (unknown ids, ...) as one line, without Python's source line
        msg = str(message).strip().replace("\n", " ")
        print(f"bayesmf {name}: warning: {msg}", file=sys.stderr)

    try:
        _check_outputs(a)
        with warnings.catch_warnings():
            warnings.showwarning = _one_line
            return int(a.func(a) or 0)
    except BayesMFError as exc:
        msg = str(exc).strip().replace("\n", " ")
        print(f"bayesmf {name}: error: {msg}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"bayesmf {name}: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        msg = str(exc).strip().replace("\n", " ")
        print(f"bayesmf {name}: error: cannot read the input table: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bayesmf {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("BAYESMF_DEBUG"):
            raise
        msg = str(exc).strip().replace("\n", " ")
        print(f"bayesmf {name}: internal error: {type(exc).__name__}: {msg} (a bug; "
              "BAYESMF_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
