r"""Spark integration: batch recommendation and prediction on a cluster, and data prep.

``pip install 'bayesmf[spark]'`` (pyspark >= 3.5). pyspark is imported inside the
functions, so ``import bayesmf`` never needs it. The executors need ``bayesmf`` itself
(numpy/scipy/pandas only: no JAX is imported or run there).

Batch scoring
-------------
The posterior lives on the driver. :func:`recommend_spark` and :func:`predict_spark` split
it in two:

* the **item side** -- every draw of :math:`\mu_s, b_{i,s}, V_{i,s}` and the likelihood
  parameters (``tau``/``cutpoints``), the item vocabulary and, when unknown ids are
  possible, the population moments of the fallback -- travels in the ``mapInPandas``
  closure (pickled with the function; not ``sparkContext.broadcast``, which Spark
  Connect lacks). Classic PySpark broadcasts a pickled command above 1 MB by itself, so
  each executor receives it once per stage.
* the **user side** -- per user the draws :math:`b_{u,s}, U_{u,s}` and its training
  items -- is a Spark DataFrame (one row per user, binary columns), built once from the
  driver and joined to the requested users, so it is partitioned, not replicated.

Payload (bytes; ``S`` draws, ``M`` items, rank ``k``; the draws are float32 for every
backend, 4 bytes each; :func:`payload_bytes` computes it for a posterior)::

    item side, per task   S*M*(k+1)*4 (V, b_i) + S*4*(1 + theta) + M*(8 + id)
                          [+ 2*S*((k+1) + (k+1)^2)*8 population moments, for unknown ids]
    user side, per user   S*(k+1)*4 (U, b_u) + 4 * (training items of the user)

e.g. MovieLens latest-small (9,724 items, rank 10, 300 draws): ~128 MB item side and
~13 KB per user; a MAP model (``S = 1``): ~0.5 MB. The item side is checked against
``max_payload`` (default 512 MB) before anything runs; above it a :class:`SpecError`
suggests ``posterior.thin(every)`` (the payload is linear in ``S``) or a larger limit.

**Why every draw, for every strategy.** Each executor rebuilds a slim
:class:`~bayesmf.posterior.Posterior` -- all item draws, the draws of its own users -- and
calls :func:`bayesmf.recommend.recommend` / :meth:`Posterior.predict` on it, so the lists
and numbers are those of the in-process functions by construction (each user's list
depends on its own draws and the item side only). No strategy can do with less: the
posterior-mean score is :math:`\bar\mu + \bar b_u + \bar b_i + \frac1S\sum_s
U_{u,s}^\top V_{i,s}` and :math:`\frac1S\sum_s U_sV_s^\top \ne \bar U\bar V^\top`
(:mod:`bayesmf.recommend.topk`), so the posterior-mean factors would give other lists;
Thompson sampling scores user :math:`u` with its own draw
``s(u) = thompson_draw_index(id_keys([u]), seed, S)`` -- any of the ``S`` draws of the
item side -- and the ``std`` column (the predictive sd of each recommended pair,
:math:`\sqrt{\mathrm{Var}_s(m_s) + \overline{\sigma^2_s}}`) needs all draws of the pair.
``ucb``/``lcb``/``prob`` need the per-draw mixture by definition.

Results equal ``recommend(posterior, users, ...)`` on the same users (same items in the
same order, scores equal to float32 rounding of the mean GEMM, identical otherwise).

Data preparation
----------------
:func:`interactions_from_spark` / :func:`ratings_from_spark` aggregate and filter in
Spark (per-pair aggregation, the ``(min_user, min_item)``-core by repeated per-user and
per-item counts, at most ``max_iter`` rounds) and collect the surviving pairs into an
:class:`~bayesmf.data.interactions.Interactions` / :class:`~bayesmf.data.ratings.Ratings`.
The k-core is unique, so peeling users and items in turns reaches the same fixed point as
:func:`bayesmf.data.kcore`; a final in-memory pass of :func:`~bayesmf.data.kcore` (a no-op
when Spark converged) makes the result exact even when ``max_iter`` stopped early.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bayesmf.errors import DataError, SpecError

__all__ = ["recommend_spark", "predict_spark", "interactions_from_spark",
           "ratings_from_spark", "payload_bytes", "SparkMissingError",
           "DEFAULT_MAX_PAYLOAD", "task_executor", "SparkTaskExecutor"]

#: default limit of the item-side payload shipped with every task (bytes)
DEFAULT_MAX_PAYLOAD = 512 * 1024 * 1024

#: output columns of :func:`recommend_spark` (``columns="short"``) and the full set of
#: :func:`bayesmf.recommend.recommend` (``columns="all"``, its order)
SHORT_COLUMNS = ("user", "rank", "item", "score", "std")
ALL_COLUMNS = ("user", "item", "rank", "score", "mean", "std", "std_param", "known_user")


class SparkMissingError(SpecError, ImportError):
    """pyspark is not installed (``pip install 'bayesmf[spark]'``)."""


def _pyspark():
    try:
        import pyspark  # noqa: F401
        from pyspark.sql import functions as F
        from pyspark.sql import types as T
    except ImportError:
        raise SparkMissingError("bayesmf.spark needs pyspark >= 3.5: "
                                "pip install 'bayesmf[spark]'") from None
    return F, T


# =========================================================================== payload
def _item_payload(post, with_pop: bool) -> dict:
    """What every task needs: the item-side draws (leading ``(chain, draw)`` axes kept,
    the bounded top-n screens per chain), the item vocabulary, the training facts of the
    items and, for unknown ids, the population moments of the full posterior."""
    lik = post.likelihood
    names = ("mu", "bi", "V") + tuple(lik.theta_names)
    pl = {
        "draws": {n: np.ascontiguousarray(post.draws[n]) for n in names},
        "spec": post.spec, "items": post.items, "user_name": post.users.name,
        "user_is_string": bool(post.users.is_string),
        "method": post.method, "C": post.n_chains, "D": post.n_draws,
        "bu_dtype": post.draws["bu"].dtype.str, "U_dtype": post.draws["U"].dtype.str,
        "scale": post.train.scale, "global_mean": post.train.global_mean,
        "item_counts": np.asarray(post.train.item_counts),
        "pop": post._population_moments() if with_pop else None,
    }
    return pl


def payload_bytes(posterior, with_pop: bool = True) -> dict:
    """Sizes in bytes of what :func:`recommend_spark` / :func:`predict_spark` ship:
    ``item_side`` (with every task), ``per_user`` (one row of the user table, without its
    training items) and ``user_table`` (all users, training items included)."""
    S, M, k = posterior.n_samples, len(posterior.items), posterior.spec.rank
    lik = posterior.likelihood
    item = sum(posterior.draws[n].nbytes for n in ("mu", "bi", "V") + tuple(lik.theta_names))
    ids = posterior.items.ids
    item += 8 * M if ids.dtype != object else sum(len(str(x)) + 49 for x in ids)
    item += 8 * M  # item counts
    if with_pop:
        item += 2 * (S * (k + 1) + S * (k + 1) ** 2) * 8
    per_user = S * (posterior.draws["bu"].dtype.itemsize + k * posterior.draws["U"].dtype.itemsize)
    seen = 4 * len(posterior.train.seen_indices)
    return {"item_side": int(item), "per_user": int(per_user),
            "user_table": int(per_user * len(posterior.users) + seen)}


def _check_payload(post, with_pop, max_payload):
    if max_payload is None:
        max_payload = DEFAULT_MAX_PAYLOAD
    if isinstance(max_payload, bool) or not isinstance(max_payload, (int, np.integer, float)) \
            or max_payload <= 0:
        raise SpecError(f"max_payload must be a positive number of bytes, got {max_payload!r}")
    b = payload_bytes(post, with_pop)["item_side"]
    if b > max_payload:
        S, M, k = post.n_samples, len(post.items), post.spec.rank
        every = math.ceil(b / max_payload)
        raise SpecError(
            f"the item side shipped with every Spark task is {b / 2**20:,.0f} MB ({S} draws "
            f"x {M} items x rank {k}), above max_payload={max_payload / 2**20:,.0f} MB; "
            f"thin the posterior (posterior.thin({every}) keeps every {every}th draw) or "
            "raise max_payload= if the executors have the memory")


# =========================================================================== user table
def _key_strings(ids: np.ndarray) -> np.ndarray:
    """Join key of a vocabulary id: its text (an integer's canonical decimal text, the
    rule by which :class:`~bayesmf.Vocabulary` matches text to integer ids)."""
    return ids.astype(str).astype(object) if ids.dtype != object else ids


def _user_table(spark, post, with_seen: bool):
    """One row per model user: ``_key`` (text id), ``_mid`` (the id), ``_uidx``,
    ``_bu`` (``S`` values), ``_U`` (``S x k`` values, draw-major) and ``_seen`` (int32
    training item indices), binary columns."""
    F, T = _pyspark()
    N, S, k = len(post.users), post.n_samples, post.spec.rank
    bu = np.ascontiguousarray(post.flat("bu").T)                         # N, S
    U = np.ascontiguousarray(post.flat("U").transpose(1, 0, 2)).reshape(N, S * k)
    ids = post.users.ids
    if with_seen:
        ip, ix = post.train.seen_indptr, np.asarray(post.train.seen_indices, np.int32)
        seen = [ix[ip[u]:ip[u + 1]].tobytes() for u in range(N)]
    else:
        seen = [b""] * N
    pdf = pd.DataFrame({
        "_key": pd.Series(_key_strings(ids), dtype=object),
        "_mid": pd.Series(ids, dtype=object if ids.dtype == object else np.int64),
        "_uidx": np.arange(N, dtype=np.int64),
        "_bu": [r.tobytes() for r in bu], "_U": [r.tobytes() for r in U], "_seen": seen,
    })
    schema = T.StructType([
        T.StructField("_key", T.StringType(), False),
        T.StructField("_mid", _id_type(T, ids), False),
        T.StructField("_uidx", T.LongType(), False),
        T.StructField("_bu", T.BinaryType(), False),
        T.StructField("_U", T.BinaryType(), False),
        T.StructField("_seen", T.BinaryType(), False),
    ])
    return spark.createDataFrame(pdf, schema=schema)


def _id_type(T, ids):
    return T.StringType() if ids.dtype == object else T.LongType()


def _id_key(F, T, df, col: str, what: str):
    """``(value column, text key column)`` of an id column of a Spark DataFrame
    (integers or text; integers joined by their decimal text)."""
    if col not in df.columns:
        raise DataError(f"{what} has no column {col!r}; its columns are {df.columns}")
    dt = df.schema[col].dataType
    if isinstance(dt, T.StringType):
        return F.col(col), F.col(col), T.StringType()
    if isinstance(dt, (T.LongType, T.IntegerType, T.ShortType, T.ByteType)):
        c = F.col(col).cast("long")
        return c, c.cast("string"), T.LongType()
    raise DataError(f"{what} column {col!r} has type {dt.simpleString()}; ids must be "
                    "integers or strings")


# =========================================================================== executors
def _slim_posterior(pl, pdf):
    """A :class:`Posterior` with every item draw and the draws of the known users of a
    batch (rows with a ``_uidx``), built on an executor."""
    from bayesmf.data.vocab import Vocabulary
    from bayesmf.posterior import Posterior, TrainInfo

    C, D = pl["C"], pl["D"]
    S, k = C * D, pl["spec"].rank
    known = pdf["_uidx"].notna().to_numpy()
    rows = np.flatnonzero(known)
    uidx = pdf["_uidx"].to_numpy()[rows].astype(np.int64)
    _, first = np.unique(uidx, return_index=True)
    sel = rows[np.sort(first)]
    n = len(sel)
    bu_dt, U_dt = np.dtype(pl["bu_dtype"]), np.dtype(pl["U_dtype"])
    bcol, ucol, scol = pdf["_bu"].to_numpy(), pdf["_U"].to_numpy(), pdf["_seen"].to_numpy()
    bu = np.empty((S, n), bu_dt)
    U = np.empty((S, n, k), U_dt)
    seen = []
    for j, r in enumerate(sel):
        bu[:, j] = np.frombuffer(bcol[r], bu_dt)
        U[:, j] = np.frombuffer(ucol[r], U_dt).reshape(S, k)
        seen.append(np.frombuffer(scol[r], np.int32))
    lens = np.array([len(s) for s in seen], np.int64)
    draws = dict(pl["draws"])
    draws["bu"] = bu.reshape(C, D, n)
    draws["U"] = U.reshape(C, D, n, k)
    keys = [str(x) for x in pdf["_key"].to_numpy()[sel]]  # text: exact for any int64
    mids = np.asarray(keys, dtype=object) if pl["user_is_string"] else \
        np.array([int(x) for x in keys], dtype=np.int64)
    users = Vocabulary(mids, name=pl["user_name"])
    train = TrainInfo(scale=pl["scale"], global_mean=pl["global_mean"], n_train=int(lens.sum()),
                      user_counts=lens, item_counts=pl["item_counts"],
                      seen_indptr=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
                      seen_indices=(np.concatenate(seen) if n else np.zeros(0, np.int32)))
    post = Posterior(draws, pl["spec"], users, pl["items"], train, pl["method"])
    if pl["pop"] is not None:
        post._pop_cache = pl["pop"]  # the fallback of the full population, not the batch's
    return post


def _raw_ids(series: pd.Series):
    """Ids of a batch column as numpy (int64 or an object array of str)."""
    a = series.to_numpy()
    if a.dtype.kind in "iu":
        return a.astype(np.int64)
    return np.asarray(a, dtype=object)


def _recommend_udf(pl, opts, columns):
    def run(batches):
        from bayesmf.recommend.topk import recommend

        for pdf in batches:
            if not len(pdf):
                continue
            post = _slim_posterior(pl, pdf)
            recs = recommend(post, _raw_ids(pdf["user"]), n_jobs=1, **opts)
            recs["rank"] = recs["rank"].astype(np.int64)
            recs["known_user"] = recs["known_user"].astype(bool)
            yield recs[list(columns)]
    return run


def _predict_udf(pl, opts):
    def run(batches):
        for pdf in batches:
            if not len(pdf):
                continue
            post = _slim_posterior(pl, pdf)
            p = post.predict(_raw_ids(pdf["user"]), _raw_ids(pdf["item"]), **opts)
            yield pd.DataFrame({"user": pdf["user"].to_numpy(), "item": pdf["item"].to_numpy(),
                                "mean": p.mean, "std": p.std, "lower": p.lower,
                                "upper": p.upper})
    return run


def _schema(T, fields):
    return T.StructType([T.StructField(n, t, True) for n, t in fields])


# =========================================================================== recommend
def recommend_spark(posterior, users_df=None, *, spark, n=10, strategy="mean",
                    exclude_seen=True, seed=0, columns="short", max_payload=None,
                    num_partitions=None, **strategy_kwargs):
    """Top-``n`` items per user on Spark executors: the lists of
    :func:`bayesmf.recommend.recommend` (same items, same order, same scores).

    Parameters
    ----------
    posterior : Posterior
    users_df : pyspark DataFrame with a ``user`` column, optional
        The users to score (integer or text ids; matched to the model's ids by the
        vocabulary's canonical-text rule; unknown ids get the population fallback with
        ``known_user=False``, as in-process; rows with a null user are skipped). ``None``:
        every user of the model.
    spark : SparkSession
    n, strategy, exclude_seen, seed, **strategy_kwargs
        As :func:`bayesmf.recommend.recommend` (``quantile``, ``threshold``,
        ``quantile_method``, ``screen_size``, ``clip``, ...).
    columns : {"short", "all"}
        ``"short"``: ``user, rank, item, score, std``; ``"all"``: the columns of
        :func:`~bayesmf.recommend.recommend` in its order (``user, item, rank, score, mean,
        std, std_param, known_user``).
    max_payload : int, optional
        Bytes of the item side shipped with every task (default
        :data:`DEFAULT_MAX_PAYLOAD`, 512 MB; module docs for the sizes). Above it: a
        :class:`SpecError` suggesting ``posterior.thin``.
    num_partitions : int, optional
        Repartition the users before scoring (default: as Spark made them).

    Returns
    -------
    pyspark DataFrame (lazy; no order: sort by user and ``rank`` when it matters).

    All arguments are checked on the driver first (an in-process call for zero users),
    so a bad option fails at once, not inside a task.
    """
    F, T = _pyspark()
    from bayesmf.recommend.topk import recommend

    if columns not in ("short", "all"):
        raise SpecError(f"columns must be 'short' or 'all', got {columns!r}")
    if num_partitions is not None and (isinstance(num_partitions, bool) or not isinstance(
            num_partitions, (int, np.integer)) or num_partitions < 1):
        raise SpecError(f"num_partitions must be an integer >= 1, got {num_partitions!r}")
    for bad in ("users", "n_jobs", "posterior"):
        if bad in strategy_kwargs:
            raise SpecError(f"recommend_spark sets {bad}= itself")
    opts = dict(n=n, strategy=strategy, exclude_seen=bool(exclude_seen), seed=seed,
                **strategy_kwargs)
    recommend(posterior, np.zeros(0, posterior.users.ids.dtype), **opts)  # validate options
    with_pop = users_df is not None
    _check_payload(posterior, with_pop, max_payload)
    pl = _item_payload(posterior, with_pop)
    ut = _user_table(spark, posterior, with_seen=bool(exclude_seen))
    item_t = _id_type(T, posterior.items.ids)
    if users_df is None:
        df = ut.withColumn("user", F.col("_mid"))
        user_t = _id_type(T, posterior.users.ids)
    else:
        val, key, user_t = _id_key(F, T, users_df, "user", "users_df")
        df = (users_df.where(F.col("user").isNotNull())
              .select(val.alias("user"), key.alias("_key"))
              .join(ut, on="_key", how="left"))
    df = df.select("user", "_key", "_uidx", "_bu", "_U", "_seen")
    if num_partitions is not None:
        df = df.repartition(int(num_partitions))
    types = {"user": user_t, "item": item_t, "rank": T.LongType(), "score": T.DoubleType(),
             "mean": T.DoubleType(), "std": T.DoubleType(), "std_param": T.DoubleType(),
             "known_user": T.BooleanType()}
    cols = SHORT_COLUMNS if columns == "short" else ALL_COLUMNS
    schema = _schema(T, [(c, types[c]) for c in cols])
    return df.mapInPandas(_recommend_udf(pl, opts, cols), schema)


# =========================================================================== predict
def predict_spark(posterior, pairs_df, *, spark, interval=0.9, clip=True,
                  unknown="fallback", method="mixture", user_col="user", item_col="item",
                  max_payload=None, num_partitions=None):
    """:meth:`Posterior.predict` for a Spark DataFrame of pairs: columns ``user, item,
    mean, std, lower, upper`` (the ids as given).

    Each pair row is joined with its user's row of the user table (the user's draws; so
    a user's draws travel with each of its pairs -- repartition ``pairs_df`` by user for
    users with many pairs) and each task rebuilds a slim posterior of its batch's users
    plus the item side (module docs; the same ``max_payload`` limit) and calls
    ``predict`` on it: every pair's numbers are those of ``posterior.predict``. Unknown
    users and items use the population fallback of the full posterior (``unknown=
    "raise"`` fails the task instead)."""
    F, T = _pyspark()
    if not 0 < float(interval) < 1:
        raise SpecError(f"interval must be in (0, 1), got {interval}")
    if unknown not in ("fallback", "raise"):
        raise SpecError(f"unknown= must be 'fallback' or 'raise', got {unknown!r}")
    if method not in ("mixture", "gaussian"):
        raise SpecError(f"method must be 'mixture' or 'gaussian', got {method!r}")
    _check_payload(posterior, True, max_payload)
    pl = _item_payload(posterior, True)
    uval, ukey, user_t = _id_key(F, T, pairs_df, user_col, "pairs_df")
    ival, _, item_t = _id_key(F, T, pairs_df, item_col, "pairs_df")
    ut = _user_table(spark, posterior, with_seen=False)
    df = (pairs_df.where(F.col(user_col).isNotNull() & F.col(item_col).isNotNull())
          .select(uval.alias("user"), ival.alias("item"), ukey.alias("_key"))
          .join(ut, on="_key", how="left")
          .select("user", "item", "_key", "_uidx", "_bu", "_U", "_seen"))
    if num_partitions is not None:
        df = df.repartition(int(num_partitions))
    opts = dict(interval=float(interval), clip=bool(clip), unknown=unknown, method=method)
    schema = _schema(T, [("user", user_t), ("item", item_t), ("mean", T.DoubleType()),
                         ("std", T.DoubleType()), ("lower", T.DoubleType()),
                         ("upper", T.DoubleType())])
    return df.mapInPandas(_predict_udf(pl, opts), schema)


# =========================================================================== data prep
def _check_threshold(v, name):
    from bayesmf.data.filters import _check_threshold as chk

    return chk(v, name)


def _kcore_spark(pairs, min_user: int, min_item: int, max_iter: int):
    """Peel users below ``min_user`` pairs and items below ``min_item`` in turns until
    no row goes (or ``max_iter`` rounds). Returns ``(DataFrame, rounds, converged)``."""
    F, _ = _pyspark()
    if min_user <= 1 and min_item <= 1:  # every stored pair already counts 1 for both
        return pairs, 0, True
    cur = _materialize(pairs)
    n = cur.count()
    for it in range(1, max_iter + 1):
        if min_user > 1:
            keep = cur.groupBy("u").count().where(F.col("count") >= min_user).select("u")
            cur = cur.join(keep, on="u", how="left_semi")
        if min_item > 1:
            keep = cur.groupBy("i").count().where(F.col("count") >= min_item).select("i")
            cur = cur.join(keep, on="i", how="left_semi")
        cur = _materialize(cur)
        m = cur.count()
        if m == n or m == 0:
            return cur, it, True
        n = m
    return cur, max_iter, False


def _materialize(df):
    """Cut the lineage of an iterated DataFrame (local checkpoint; cache where the
    session does not support it)."""
    try:
        return df.localCheckpoint(eager=True)
    except Exception:  # pragma: no cover - sessions without local checkpoints
        return df.cache()


def _source(df, cols: dict, what: str):
    F, T = _pyspark()
    for c in cols.values():
        if c is not None and c not in df.columns:
            raise DataError(f"{what}: no column {c!r}; the frame has {df.columns}")
    sel = []
    for role, c in cols.items():
        if c is None:
            continue
        if role in ("u", "i"):
            val, _, _ = _id_key(F, T, df, c, what)
            sel.append(val.alias(role))
        else:
            sel.append(F.col(c).alias(role))
    ev = df.select(*sel)
    need = [F.col(r).isNull() for r in ("u", "i", "r") if r in ev.columns]
    cond = need[0]
    for x in need[1:]:
        cond = cond | x
    if ev.where(cond).limit(1).count():
        raise DataError(f"{what}: null values in the id or value columns; drop or fill them "
                        "first (df.dropna(subset=[...]))")
    return ev


def _check_iter(max_iter):
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise SpecError(f"max_iter must be an integer >= 1, got {max_iter!r}")
    return int(max_iter)


def interactions_from_spark(df, user_col="user", item_col="item", count_col=None,
                            min_user=1, min_item=1, *, max_iter=50):
    """An :class:`~bayesmf.data.interactions.Interactions` from a Spark event log, the
    ``(min_user, min_item)``-core taken in Spark.

    Events are aggregated per ``(user, item)`` pair in Spark (``count`` = the sum of
    ``count_col``, or the number of events; ``n_events`` = the number of rows), pairs
    with ``count`` 0 are dropped, then users with fewer than ``min_user`` pairs and items
    with fewer than ``min_item`` pairs are removed in turns until nothing changes (at
    most ``max_iter`` rounds; each round is two group-bys and semi-joins and one count).
    Only the surviving pairs reach the driver. The result equals
    ``Interactions.from_arrays(users, items, counts).kcore(min_user, min_item)`` (the
    vocabularies hold the surviving ids, sorted)."""
    F, _ = _pyspark()
    from bayesmf.data.interactions import Interactions
    from bayesmf.data.vocab import Vocabulary

    min_user = _check_threshold(min_user, "min_user")
    min_item = _check_threshold(min_item, "min_item")
    max_iter = _check_iter(max_iter)
    ev = _source(df, {"u": user_col, "i": item_col, "r": count_col}, "interactions_from_spark")
    if count_col is not None:
        if not _is_numeric(df.schema[count_col].dataType):
            raise DataError(f"count column {count_col!r} must be numeric")
        if ev.where(F.col("r") < 0).limit(1).count():
            raise DataError(f"count column {count_col!r} has negative values; counts must "
                            "be >= 0")
        agg = F.sum(F.col("r").cast("double")).alias("count")
    else:
        agg = F.count(F.lit(1)).cast("double").alias("count")
    pairs = (ev.groupBy("u", "i").agg(agg, F.count(F.lit(1)).alias("n_events"))
             .where(F.col("count") > 0))
    core, _, _ = _kcore_spark(pairs, min_user, min_item, max_iter)
    pdf = core.toPandas()
    if not len(pdf):
        raise DataError(f"no interaction survives the k-core with min_user={min_user}, "
                        f"min_item={min_item} (or the input is empty)")
    uv = Vocabulary.from_raw(_raw_ids(pdf["u"]), "user")
    iv = Vocabulary.from_raw(_raw_ids(pdf["i"]), "item")
    u = uv.encode(_raw_ids(pdf["u"])).astype(np.int64)
    i = iv.encode(_raw_ids(pdf["i"])).astype(np.int64)
    o = np.lexsort((i, u))
    out = Interactions(u[o], i[o], pdf["count"].to_numpy(np.float64)[o], uv, iv,
                       n_events=pdf["n_events"].to_numpy(np.int64)[o])
    return out.kcore(min_user, min_item)  # exact even when max_iter stopped early


def _is_numeric(dt):
    _, T = _pyspark()
    return isinstance(dt, T.NumericType)


def ratings_from_spark(df, user_col="user", item_col="item", rating_col="rating",
                       timestamp_col=None, min_user=1, min_item=1, *, duplicates="raise",
                       max_iter=50):
    """A :class:`~bayesmf.data.ratings.Ratings` from a Spark DataFrame of ratings, the
    ``(min_user, min_item)``-core taken in Spark (see :func:`interactions_from_spark`).

    ``duplicates``: ``"raise"`` (a :class:`DataError` naming one repeated pair) or
    ``"mean"`` (the mean rating and latest timestamp per pair, as
    :meth:`Ratings.from_arrays`); ``"first"``/``"last"`` need an input order Spark does
    not keep and are refused. The result equals
    ``kcore(Ratings.from_arrays(users, items, ratings, timestamps), min_user,
    min_item).ratings`` (rows sorted by user and item)."""
    F, _ = _pyspark()
    from bayesmf.data.filters import kcore
    from bayesmf.data.ratings import Ratings

    if duplicates not in ("raise", "mean"):
        raise SpecError(f"ratings_from_spark: duplicates must be 'raise' or 'mean' (Spark "
                        f"keeps no input order for 'first'/'last'), got {duplicates!r}")
    min_user = _check_threshold(min_user, "min_user")
    min_item = _check_threshold(min_item, "min_item")
    max_iter = _check_iter(max_iter)
    ev = _source(df, {"u": user_col, "i": item_col, "r": rating_col, "t": timestamp_col},
                 "ratings_from_spark")
    if not _is_numeric(df.schema[rating_col].dataType):
        raise DataError(f"rating column {rating_col!r} must be numeric")
    if duplicates == "raise":
        dup = ev.groupBy("u", "i").count().where(F.col("count") > 1).limit(1).collect()
        if dup:
            d = dup[0]
            raise DataError(f"duplicate (user, item) pair ({d['u']!r}, {d['i']!r}) rated "
                            f"{d['count']} times; pass duplicates='mean' or deduplicate")
        pairs = ev.withColumn("r", F.col("r").cast("double"))
    else:
        aggs = [F.avg(F.col("r").cast("double")).alias("r")]
        if timestamp_col is not None:
            aggs.append(F.max("t").alias("t"))
        pairs = ev.groupBy("u", "i").agg(*aggs)
    core, _, _ = _kcore_spark(pairs, min_user, min_item, max_iter)
    pdf = core.toPandas()
    if not len(pdf):
        raise DataError(f"no rating survives the k-core with min_user={min_user}, "
                        f"min_item={min_item} (or the input is empty)")
    users, items = _raw_ids(pdf["u"]), _raw_ids(pdf["i"])
    ts = pdf["t"].to_numpy() if timestamp_col is not None else None
    r = Ratings.from_arrays(users, items, pdf["r"].to_numpy(np.float64), ts)
    r = kcore(r, min_user, min_item).ratings  # exact even when max_iter stopped early
    o = np.lexsort((r.item, r.user))
    return r if (np.diff(o) == 1).all() else r.subset(o)


# =========================================================================== tasks
class SparkTaskExecutor:
    """``map(fn, tasks)`` on a Spark cluster: one partition per task
    (``sparkContext.parallelize``), the results collected to the driver in task order.

    The executor of :func:`bayesmf.infer.propagation.fit_propagated`
    (``executor=task_executor(spark)``): each block task runs the JAX Gibbs sampler on a
    Spark executor, so, unlike batch scoring, the executors need ``bayesmf`` **with JAX**
    installed (the same environment as the driver: set ``PYSPARK_PYTHON``). ``fn`` and
    the tasks travel pickled with the job. Classic Spark only (Spark Connect has no
    ``sparkContext``: a :class:`~bayesmf.errors.SpecError` says so)."""

    def __init__(self, spark):
        _pyspark()
        try:
            self.sc = spark.sparkContext
        except Exception as e:  # Spark Connect: no RDD API
            raise SpecError("task_executor needs a classic SparkSession with a "
                            f"sparkContext (Spark Connect has none): {e}") from None

    def map(self, fn, tasks):
        tasks = list(tasks)
        if not tasks:
            return []
        out = (self.sc.parallelize(list(enumerate(tasks)), len(tasks))
               .map(lambda it: (it[0], fn(it[1]))).collect())
        return [r for _, r in sorted(out, key=lambda x: x[0])]


def task_executor(spark) -> SparkTaskExecutor:
    """A :class:`SparkTaskExecutor` over ``spark`` (a classic ``SparkSession``)."""
    return SparkTaskExecutor(spark)
