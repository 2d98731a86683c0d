"""bayesmf.spark: batch recommendation / prediction on Spark executors equal the
in-process functions, the Spark k-core equals bayesmf.data.kcore, and the CLI's
``--engine spark`` writes the table of ``--engine local``. One local[2] session for the
module (its start takes ~10-30 s)."""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pandas as pd
import pytest

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed "
                              "(pip install 'bayesmf[spark]')")

import bayesmf  # noqa: E402
from bayesmf.data import Interactions, Ratings, kcore  # noqa: E402
from bayesmf.errors import DataError, SpecError  # noqa: E402
from bayesmf.recommend import recommend  # noqa: E402
from bayesmf.spark import (SparkMissingError, interactions_from_spark,  # noqa: E402
                           payload_bytes, predict_spark, ratings_from_spark,
                           recommend_spark)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning",
                                        "ignore::DeprecationWarning",
                                        "ignore::UserWarning")


@pytest.fixture(scope="module")
def spark():
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = (SparkSession.builder.master("local[2]").appName("bayesmf-tests")
             .config("spark.ui.enabled", "false")
             .config("spark.sql.shuffle.partitions", "4")
             .config("spark.driver.memory", "1g").getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def _data(string_ids=False, seed=0):
    rng = np.random.default_rng(seed)
    N, M = 30, 45
    pairs = [(u, i) for u in range(N) for i in range(M) if rng.random() < 0.3]
    df = pd.DataFrame(pairs, columns=["user", "item"])
    df["rating"] = np.clip(np.round(3 + 1.2 * rng.normal(size=len(df))), 1, 5)
    if string_ids:
        df["user"] = "u" + df["user"].astype(str)
        df["item"] = "i" + df["item"].astype(str)
    return df


@pytest.fixture(scope="module")
def gibbs():
    return bayesmf.BayesMF(method="gibbs", rank=3, num_samples=20, num_warmup=20,
                           seed=0).fit(_data()).posterior


@pytest.fixture(scope="module")
def map_post():
    return bayesmf.BayesMF(method="map", rank=3, seed=0).fit(_data(string_ids=True)).posterior


def _sorted(df, cols=("user", "rank")):
    return df.sort_values(list(cols), kind="stable").reset_index(drop=True)


def _same_lists(sdf, loc, score_rtol):
    sdf, loc = _sorted(sdf), _sorted(loc)
    assert len(sdf) == len(loc) > 0
    assert (sdf["user"].to_numpy() == loc["user"].to_numpy()).all()
    assert (sdf["rank"].to_numpy() == loc["rank"].to_numpy()).all()
    assert (sdf["item"].to_numpy() == loc["item"].to_numpy()).all()
    np.testing.assert_allclose(sdf["score"], loc["score"], rtol=score_rtol, atol=1e-6)
    np.testing.assert_allclose(sdf["std"], loc["std"], rtol=1e-12)


@pytest.mark.parametrize("strategy", ["mean", "thompson", "ucb"])
def test_recommend_spark_equals_local_gibbs(spark, gibbs, strategy):
    sdf = recommend_spark(gibbs, spark=spark, n=7, strategy=strategy, seed=5).toPandas()
    assert list(sdf.columns) == ["user", "rank", "item", "score", "std"]
    loc = recommend(gibbs, None, n=7, strategy=strategy, seed=5)
    assert sdf["user"].nunique() == len(gibbs.users)
    # mean: float32 GEMM rounding may differ with the batch's row count; else identical
    _same_lists(sdf, loc, 1e-6 if strategy == "mean" else 1e-12)


@pytest.mark.parametrize("strategy", ["mean", "ucb"])
def test_recommend_spark_equals_local_map_string_ids(spark, map_post, strategy):
    sdf = recommend_spark(map_post, spark=spark, n=5, strategy=strategy,
                          columns="all").toPandas()
    loc = recommend(map_post, None, n=5, strategy=strategy)
    assert list(sdf.columns) == list(loc.columns)
    assert sdf["user"].map(type).eq(str).all() and sdf["item"].map(type).eq(str).all()
    _same_lists(sdf, loc, 1e-6)
    np.testing.assert_allclose(_sorted(sdf)["mean"], _sorted(loc)["mean"], rtol=1e-12)


def test_exclude_seen(spark, gibbs):
    M = len(gibbs.items)
    ex = recommend_spark(gibbs, spark=spark, n=M, columns="all").toPandas()
    seen = {(u, i) for u in range(len(gibbs.users))
            for i in gibbs.train.seen_items(u)}
    enc = set(zip(gibbs.users.encode(ex["user"].to_numpy()),
                  gibbs.items.encode(ex["item"].to_numpy())))
    assert not enc & seen
    counts = ex.groupby("user").size()
    expect = M - gibbs.train.user_counts[gibbs.users.encode(counts.index.to_numpy())]
    assert (counts.to_numpy() == expect).all()
    inc = recommend_spark(gibbs, spark=spark, n=M, exclude_seen=False).toPandas()
    assert (inc.groupby("user").size() == M).all()
    _same_lists(inc, recommend(gibbs, None, n=M, exclude_seen=False), 1e-6)


def test_users_df_subset_with_unknown_and_text_ids(spark, gibbs):
    ids = gibbs.users.ids
    want = [str(ids[3]), str(ids[0]), "999999", str(ids[17])]   # text ids, one unknown
    udf = spark.createDataFrame(pd.DataFrame({"user": want, "other": range(4)}))
    for strategy in ("thompson", "mean"):
        sdf = recommend_spark(gibbs, udf, spark=spark, n=4, strategy=strategy, seed=2,
                              columns="all").toPandas()
        loc = recommend(gibbs, np.array(want, dtype=object), n=4, strategy=strategy, seed=2)
        assert set(sdf["user"]) == set(want)
        assert not sdf.loc[sdf["user"] == "999999", "known_user"].any()
        assert sdf.loc[sdf["user"] != "999999", "known_user"].all()
        _same_lists(sdf, loc, 1e-6)
    ints = spark.createDataFrame(pd.DataFrame({"user": [int(ids[5]), int(ids[5]), 424242]}))
    sdf = recommend_spark(gibbs, ints, spark=spark, n=3).toPandas()
    assert len(sdf) == 9  # a repeated user gets its list twice, as in-process
    _same_lists(sdf, recommend(gibbs, [ids[5], ids[5], 424242], n=3), 1e-6)
    # a batch of unknown users only (the executor's posterior then has no user row)
    only = spark.createDataFrame(pd.DataFrame({"user": [424242, 515151]}))
    sdf = recommend_spark(gibbs, only, spark=spark, n=3, columns="all").toPandas()
    assert len(sdf) == 6 and not sdf["known_user"].any()
    _same_lists(sdf, recommend(gibbs, [424242, 515151], n=3), 1e-6)


def test_predict_spark_equals_predict(spark, gibbs):
    ids_u, ids_i = gibbs.users.ids, gibbs.items.ids
    rng = np.random.default_rng(1)
    pairs = pd.DataFrame({"user": rng.choice(ids_u, 60), "item": rng.choice(ids_i, 60)})
    pairs.loc[0, "user"] = 777777   # unknown user, unknown item: population fallback
    pairs.loc[1, "item"] = 888888
    sdf = predict_spark(gibbs, spark.createDataFrame(pairs), spark=spark,
                        interval=0.8).toPandas()
    assert list(sdf.columns) == ["user", "item", "mean", "std", "lower", "upper"]
    ref = gibbs.predict(pairs["user"].to_numpy(), pairs["item"].to_numpy(),
                        interval=0.8).to_frame()
    got = sdf.merge(pairs.assign(_k=range(60)), on=["user", "item"]).sort_values("_k")
    got = got.drop_duplicates("_k")
    assert len(got) == 60
    for c in ("mean", "std", "lower", "upper"):
        np.testing.assert_allclose(got[c].to_numpy(), ref[c].to_numpy(), rtol=1e-10)
    assert np.isfinite(got[["mean", "std"]].to_numpy()).all()


def _events():
    rng = np.random.default_rng(3)
    n = 400
    ev = pd.DataFrame({"user": rng.zipf(1.6, n) % 40, "item": rng.zipf(1.4, n) % 50,
                       "count": rng.integers(0, 4, n).astype(float)})
    return ev


# (4, 3) in make test-all; the multi-round cascade stays in make test through
# test_kcore_cascade_by_hand and test_ratings_kcore_equals_local
@pytest.mark.parametrize("mu, mi", [(1, 1), pytest.param(4, 3, marks=pytest.mark.slow)])
def test_interactions_kcore_equals_local(spark, mu, mi):
    ev = _events()
    got = interactions_from_spark(spark.createDataFrame(ev), "user", "item", "count",
                                  min_user=mu, min_item=mi)
    ref = Interactions.from_arrays(ev["user"], ev["item"], ev["count"]).kcore(mu, mi)
    assert (got.users.ids == ref.users.ids).all() and (got.items.ids == ref.items.ids).all()
    for a in ("user", "item", "count", "n_events"):
        assert (getattr(got, a) == getattr(ref, a)).all(), a
    assert (got.user_counts() >= mu).all() and (got.item_counts() >= mi).all()


def test_kcore_cascade_by_hand(spark):
    # (2,2)-core: d has one item -> goes; then z has one user -> goes; then c has one item
    # -> goes; what is left is the 2x2 block {a, b} x {x, y}.
    rows = [("a", "x"), ("a", "y"), ("b", "x"), ("b", "y"), ("c", "y"), ("c", "z"),
            ("d", "z")]
    df = spark.createDataFrame(pd.DataFrame(rows, columns=["u", "i"]))
    got = interactions_from_spark(df, "u", "i", min_user=2, min_item=2)
    assert list(got.users.ids) == ["a", "b"] and list(got.items.ids) == ["x", "y"]
    assert got.nnz == 4
    r = ratings_from_spark(df.withColumn("r", pyspark.sql.functions.lit(4.0)), "u", "i", "r",
                           min_user=2, min_item=2)
    assert r.nnz == 4 and list(r.users.ids) == ["a", "b"]


def test_ratings_kcore_equals_local(spark):
    df = _data(seed=4)
    df["ts"] = np.arange(len(df), dtype=np.int64)
    res = kcore(Ratings.from_arrays(df["user"], df["item"], df["rating"], df["ts"]), 10, 6)
    ref = res.ratings
    assert res.iterations == 7 and 0 < ref.nnz < len(df)  # a real cascade
    o = np.lexsort((ref.item, ref.user))
    sdf = spark.createDataFrame(df)
    for max_iter in (50, 2):  # stopped early, the final in-memory pass makes it exact
        got = ratings_from_spark(sdf, "user", "item", "rating", "ts", min_user=10,
                                 min_item=6, max_iter=max_iter)
        assert (got.users.ids == ref.users.ids).all()
        assert (got.items.ids == ref.items.ids).all()
        for a in ("user", "item", "rating", "timestamp"):
            assert (getattr(got, a) == getattr(ref, a)[o]).all(), a
    dup = pd.concat([df, df.iloc[:1].assign(rating=1.0)])
    with pytest.raises(DataError, match="duplicate"):
        ratings_from_spark(spark.createDataFrame(dup), "user", "item", "rating")
    mean = ratings_from_spark(spark.createDataFrame(dup), "user", "item", "rating",
                              duplicates="mean")
    ref = Ratings.from_arrays(dup["user"], dup["item"], dup["rating"], duplicates="mean")
    o = np.lexsort((ref.item, ref.user))
    assert np.allclose(mean.rating, ref.rating[o])


def test_cli_engine_spark_writes_the_local_file(spark, gibbs, tmp_path, capsys):
    from bayesmf.cli import main

    model = tmp_path / "m.nc"
    bayesmf.BayesMF.from_posterior(gibbs).save(model)
    outs = {}
    for engine in ("local", "spark"):
        out = tmp_path / f"{engine}.parquet"
        assert main(["recommend", str(model), "--all-users", "--n", "4", "--engine", engine,
                     "--out", str(out)]) == 0
        outs[engine] = pd.read_parquet(out)
    loc, spk = outs["local"], outs["spark"]
    assert list(spk.columns) == list(loc.columns) and len(loc) == 4 * len(gibbs.users)
    assert spk.dtypes.equals(loc.dtypes)
    pd.testing.assert_frame_equal(spk, loc, check_exact=False, rtol=1e-6, atol=1e-6)
    capsys.readouterr()
    # CSV on stdout, some users (one unknown), thompson: byte-identical
    args = ["recommend", str(model), "--users", f"{gibbs.users.ids[2]},31337,"
            f"{gibbs.users.ids[1]}", "--n", "3", "--strategy", "thompson", "--seed", "9"]
    assert main(args) == 0
    text_local = capsys.readouterr().out
    assert main(args + ["--engine", "spark", "--master", "local[2]"]) == 0
    assert capsys.readouterr().out == text_local
    assert text_local.count("\n") == 10


def test_payload_limit_and_errors(spark, gibbs):
    b = payload_bytes(gibbs)
    S, M, k = gibbs.n_samples, len(gibbs.items), gibbs.spec.rank
    assert b["item_side"] >= S * M * k * gibbs.draws["V"].dtype.itemsize
    assert b["per_user"] == S * (gibbs.draws["bu"].dtype.itemsize
                                 + k * gibbs.draws["U"].dtype.itemsize)
    with pytest.raises(SpecError, match=r"posterior\.thin"):
        recommend_spark(gibbs, spark=spark, max_payload=1000)
    with pytest.raises(SpecError, match="strategy"):
        recommend_spark(gibbs, spark=spark, strategy="nope")
    with pytest.raises(SpecError, match="n must"):
        recommend_spark(gibbs, spark=spark, n=0)
    bad = spark.createDataFrame(pd.DataFrame({"uid": [1]}))
    with pytest.raises(DataError, match="no column 'user'"):
        recommend_spark(gibbs, bad, spark=spark)


def test_missing_pyspark_is_a_clear_error(monkeypatch, gibbs):
    monkeypatch.setitem(sys.modules, "pyspark", None)
    with pytest.raises(SparkMissingError, match=r"bayesmf\[spark\]") as e:
        recommend_spark(gibbs, spark=None)
    assert isinstance(e.value, ImportError) and isinstance(e.value, SpecError)


def test_propagation_tasks_run_on_spark_executors(spark):
    """Posterior propagation with the Spark task executor: the block tasks run in Spark's
    Python workers and the aggregated posterior equals the in-process (serial) one."""
    from bayesmf.infer.propagation import fit_propagated
    from bayesmf.spark import task_executor

    tr = bayesmf.as_ratings(_data(seed=3))
    spec = bayesmf.ModelSpec(rank=2)
    kw = dict(num_samples=12, num_warmup=10, seed=0)
    local = fit_propagated(tr, spec, **kw)
    on_spark = fit_propagated(tr, spec, executor=task_executor(spark), **kw)
    for n in ("U", "V", "bu", "bi", "tau"):
        np.testing.assert_allclose(on_spark.draws[n], local.draws[n], rtol=1e-5, atol=1e-5)
    assert on_spark.attrs["settings"]["executor"] == "SparkTaskExecutor"
