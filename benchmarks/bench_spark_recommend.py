#!/usr/bin/env python
"""Top-10 for every user on Spark: bayesmf ``recommend_spark`` vs pyspark ALS's
``recommendForAllUsers`` on the same factors, same ``local[N]`` session (issue 16 item 3).

    .venv/bin/python benchmarks/bench_spark_recommend.py [--users 1000000] [--items 10000]
        [--rank 32] [--master local[2]] [--check-users 2000]

Problem: a synthetic posterior (``_synth_model.synthetic_posterior``, one draw: a point
model, the mean strategy) of ``--users`` x ``--items`` at rank ``--rank`` with about
``--mean-seen`` training items per user. bayesmf scores ``mu + b_u + b_i + U_u . V_i``,
excludes each user's training items and keeps the top 10 (``recommend_spark(post,
spark=spark, n=10)``; the user table is built from the driver inside the timed call). ALS
gets the same scores as a rank ``k + 2`` model, ``[U_u, 1, mu + b_u] . [V_i, b_i, 1]``:
the factors are written into a saved ``ALSModel`` (fitted for the metadata on a few
ratings, factor files replaced) and loaded back; ``recommendForAllUsers(10)`` does not
exclude seen items (its lists differ by design; the timing compares the scoring jobs).
Both outputs are written to Parquet (the timed action). The bayesmf lists are checked
against the in-process :func:`bayesmf.recommend.recommend` on ``--check-users`` random
users (same items in the same order). Writes ``benchmarks/results/spark_recommend.md``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def session(master: str, memory: str):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = (SparkSession.builder.master(master).appName("bayesmf-bench-spark")
             .config("spark.ui.enabled", "false")
             .config("spark.driver.memory", memory)
             .config("spark.sql.shuffle.partitions", "8")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .getOrCreate())
    s.sparkContext.setLogLevel("ERROR")
    return s


def als_model(spark, post, tmp: Path):
    """An ALSModel whose factors give ALS the bayesmf point scores (module docs)."""
    from pyspark.ml.recommendation import ALS, ALSModel
    from pyspark.sql import types as T

    d = post.draws
    U = np.asarray(d["U"][0, 0], np.float32)
    V = np.asarray(d["V"][0, 0], np.float32)
    bu = np.asarray(d["bu"][0, 0], np.float32)
    bi = np.asarray(d["bi"][0, 0], np.float32)
    mu = np.float32(np.asarray(d["mu"]).ravel()[0])
    Uf = np.hstack([U, np.ones((len(U), 1), np.float32), (mu + bu)[:, None]])
    Vf = np.hstack([V, bi[:, None], np.ones((len(V), 1), np.float32)])
    k2 = Uf.shape[1]
    tiny = spark.createDataFrame(pd.DataFrame({"user": [0, 1, 1], "item": [0, 0, 1],
                                               "rating": [1.0, 2.0, 3.0]}))
    m = ALS(rank=k2, maxIter=1, userCol="user", itemCol="item", ratingCol="rating",
            seed=0).fit(tiny)
    path = tmp / "als"
    m.write().overwrite().save(str(path))
    schema = T.StructType([T.StructField("id", T.IntegerType(), False),
                           T.StructField("features", T.ArrayType(T.FloatType()), True)])
    for name, F in (("userFactors", Uf), ("itemFactors", Vf)):
        shutil.rmtree(path / name)
        step = 200_000
        parts = [pd.DataFrame({"id": np.arange(s, min(s + step, len(F)), dtype=np.int32),
                               "features": list(F[s:s + step])})
                 for s in range(0, len(F), step)]
        df = None
        for p in parts:
            q = spark.createDataFrame(p, schema=schema)
            df = q if df is None else df.unionByName(q)
        df.write.parquet(str(path / name))
    return ALSModel.load(str(path)), (Uf, Vf)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--items", type=int, default=10_000)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--mean-seen", type=int, default=20)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--memory", default="10g")
    ap.add_argument("--partitions", type=int, default=None)
    ap.add_argument("--check-users", type=int, default=2000)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "spark_recommend.md")
    a = ap.parse_args(argv)
    from _synth_model import synthetic_posterior

    from bayesmf.recommend import recommend
    from bayesmf.spark import recommend_spark

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    post = synthetic_posterior(n_users=a.users, n_items=a.items, k=a.rank, draws=1,
                               mean_seen=a.mean_seen)
    t_build = time.perf_counter() - t0
    spark = session(a.master, a.memory)
    tmp = Path(tempfile.mkdtemp(prefix="bayesmf-spark-bench-"))
    rows = []
    try:
        t0 = time.perf_counter()
        model, _ = als_model(spark, post, tmp)
        t_als_setup = time.perf_counter() - t0
        # bayesmf: recommend_spark, written to Parquet
        t0 = time.perf_counter()
        recs = recommend_spark(post, spark=spark, n=10, strategy="mean",
                               num_partitions=a.partitions)
        recs.write.mode("overwrite").parquet(str(tmp / "bayesmf"))
        t_bmf = time.perf_counter() - t0
        # ALS recommendForAllUsers, written to Parquet
        t0 = time.perf_counter()
        model.recommendForAllUsers(10).write.mode("overwrite").parquet(str(tmp / "als_out"))
        t_als = time.perf_counter() - t0
        # identical lists on a random sample of users
        out = pd.read_parquet(tmp / "bayesmf")
        n_out_users = out["user"].nunique()
        rng = np.random.default_rng(0)
        check = np.sort(rng.choice(a.users, size=min(a.check_users, a.users),
                                   replace=False))
        mine = out[out["user"].isin(check)].sort_values(["user", "rank"])
        ref = recommend(post, check, n=10, strategy="mean")
        ref = ref.sort_values(["user", "rank"])
        same_items = bool(np.array_equal(mine["item"].to_numpy(), ref["item"].to_numpy()))
        max_score = float(np.max(np.abs(mine["score"].to_numpy()
                                        - ref["score"].to_numpy())))
        als_out = pd.read_parquet(tmp / "als_out")
        # ALS really scores with the bayesmf factors: its scores vs numpy on 200 users
        d = post.draws
        mu = float(np.asarray(d["mu"]).ravel()[0])
        als_err = 0.0
        for _, row in als_out.head(200).iterrows():
            u = int(row["user"])
            its = np.array([r["item"] for r in row["recommendations"]])
            sc = np.array([r["rating"] for r in row["recommendations"]])
            ref_sc = (mu + d["bu"][0, 0][u] + d["bi"][0, 0][its]
                      + d["V"][0, 0][its] @ d["U"][0, 0][u])
            als_err = max(als_err, float(np.max(np.abs(sc - ref_sc))))
        rows = [("bayesmf `recommend_spark` (mean, exclude seen) -> Parquet", t_bmf,
                 f"{n_out_users:,} users x 10"),
                ("pyspark ALS `recommendForAllUsers(10)` -> Parquet", t_als,
                 f"{len(als_out):,} users x 10 (seen items not excluded)")]
    finally:
        spark.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    lines = ["# Top-10 for all users on Spark: bayesmf vs pyspark ALS recommendForAllUsers",
             "", f"Command: `python benchmarks/bench_spark_recommend.py "
             f"{' '.join(argv or sys.argv[1:])}`; {time.ctime()}; master `{a.master}`, driver "
             f"memory {a.memory}; load {load0:.1f} -> {os.getloadavg()[0]:.1f} "
             f"({os.cpu_count()} CPUs).", "",
             f"Problem: {a.users:,} users x {a.items:,} items, rank {a.rank}, one draw (mean "
             f"strategy), about {a.mean_seen} training items per user "
             f"({int(post.train.n_train):,} training pairs); synthetic posterior built in {t_build:.0f} s, the ALS "
             f"model with the same scores (rank {a.rank + 2}) written and loaded in "
             f"{t_als_setup:.0f} s (not timed below).", "",
             "| job | seconds | output |", "|---|---|---|"]
    lines += [f"| {n} | {t:.1f} | {o} |" for n, t, o in rows]
    lines += ["", f"bayesmf / ALS time: **{rows[0][1] / rows[1][1]:.2f}x**.", "",
              f"Check against the in-process `recommend` on {len(check):,} random users: "
              f"identical items in the same order: **{same_items}**; largest score "
              f"difference {max_score:.2e}. ALS scores vs `mu + b_u + b_i + U.V` in numpy "
              f"(200 users): largest difference {als_err:.2e} (float32).", ""]
    text = "\n".join(lines)
    a.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
