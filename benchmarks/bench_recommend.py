#!/usr/bin/env python
"""Top-10 recommendation for every user: bayesmf vs implicit, time and peak memory.

Two models:

* **ml1m-part**: the train split of ``peers.load_split("ml1m-part")`` (487,650 ratings,
  90/10 split, seed 0), fitted here by bayesmf's BPMF Gibbs sampler (rank 32, 40 warm-up
  sweeps, 100 kept draws; cached in ``--cache``) -- or ``--fit map`` for MAP.
* **synthetic**: 70,000 users x 10,000 items, rank 32, 100 draws (float32), ~50 seen
  items per user (Zipf popularity); see ``benchmarks/_synth_model.py``.

For each, every user gets a top-10 list with exclude-seen:

* ``bayesmf exact``: the exact posterior mean ``(1/S) sum_s U_s V_s^T`` (GEMM of inner
  dimension ``k*S``). On the synthetic model this is timed on a user subset and
  extrapolated linearly (marked ``extrapolated``).
* ``bayesmf lowrank``: randomized-SVD compression of the stacked item draws (rank
  ``k*chains + 8``), one-off preparation timed separately, cached on the posterior.
* ``bayesmf mean-factors``: ``Ubar Vbar^T`` (+ biases).
* ``implicit``: ``implicit.cpu.als.AlternatingLeastSquares.recommend(userids,
  user_items, N=10, filter_already_liked_items=True)`` with ``user_factors = [Ubar, 1]``
  and ``item_factors = [Vbar, mean(mu) + mean(b_i)]`` -- the same scores as
  ``mean-factors`` (the user constant does not change a ranking); the lists are compared.
  implicit runs under ``threadpool_limits(1, "blas")`` as its docs advise.

Timings: median of ``--repeats`` runs, each method interleaved in the same loop (the
machine is shared). Memory: peak RSS above the pre-call RSS, sampled every 5 ms by a
thread (psutil), and in a separate run the tracemalloc peak (Python + numpy heap).
``recommend_indices`` (index arrays) is the timed call; building the raw-id DataFrame
(``recommend``) is timed once on top.

    python benchmarks/bench_recommend.py            # both models, 3 repeats
    python benchmarks/bench_recommend.py --quick    # 7,000 x 1,000 synthetic only
    python benchmarks/bench_recommend.py --strategies --repeats 1
        # mean / thompson / ucb / lcb / prob on MovieLens latest-small (Gibbs rank 10,
        # 300 draws) and the synthetic model: bounded vs approx vs per-pair exact,
        # -> results/recommend_strategies.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # the folder that holds shared/ and the project
sys.path.insert(0, str(HERE))

from bayesmf.recommend import approx_error, recommend, recommend_indices  # noqa: E402
from bayesmf.scoring.scorer import _cache  # noqa: E402


class PeakRSS:
    """Peak resident set size above the value at ``__enter__`` (bytes), 5 ms sampling."""

    def __init__(self, interval=0.005):
        import psutil

        self.proc = psutil.Process()
        self.interval = interval

    def __enter__(self):
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()

        def run():
            while not self._stop.is_set():
                self.peak = max(self.peak, self.proc.memory_info().rss)
                time.sleep(self.interval)

        self._t = threading.Thread(target=run, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)
        self.delta = self.peak - self.base


def tracemalloc_peak(fn):
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def implicit_model(post):
    from implicit.cpu.als import AlternatingLeastSquares

    Ubar = _cache(post, ("meanU",), lambda: post.flat("U").mean(axis=0, dtype=np.float64).astype(np.float32))
    Vbar = _cache(post, ("meanV",), lambda: post.flat("V").mean(axis=0, dtype=np.float64).astype(np.float32))
    base = (post.flat("mu").mean() + post.flat("bi").mean(axis=0)).astype(np.float32)
    N = len(post.users)
    m = AlternatingLeastSquares(factors=Ubar.shape[1] + 1, random_state=0)
    m.user_factors = np.ascontiguousarray(np.hstack([Ubar, np.ones((N, 1), np.float32)]))
    m.item_factors = np.ascontiguousarray(np.hstack([Vbar, base[:, None]]))
    t = post.train
    ui = sp.csr_matrix((np.ones(len(t.seen_indices), np.float32), t.seen_indices,
                        t.seen_indptr), shape=(N, len(post.items)))
    return m, ui


def run_implicit(m, ui, users):
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        return m.recommend(users, ui[users], N=10, filter_already_liked_items=True)


def bench_model(name, post, repeats, exact_users=None, n_jobs=None):
    N = len(post.users)
    users = np.arange(N)
    res = {"model": name, "users": N, "items": len(post.items), "rank": post.spec.rank,
           "draws": post.n_samples, "chains": post.n_chains,
           "train_pairs": int(post.train.n_train), "posterior_GB": post.nbytes() / 1e9}
    # one-off preparations (timed, then cached)
    t0 = time.perf_counter()
    recommend_indices(post, users[:1], 10, approx="lowrank", uncertainty=False)
    res["lowrank_prepare_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    recommend_indices(post, users[:1], 10, approx="mean-factors", uncertainty=False)
    res["mean_factors_prepare_s"] = time.perf_counter() - t0
    model, ui = implicit_model(post)
    run_implicit(model, ui, users[:10])
    methods = {
        "bayesmf mean-factors": lambda: recommend_indices(post, None, 10, approx="mean-factors",
                                                          uncertainty=False, n_jobs=n_jobs),
        "bayesmf lowrank": lambda: recommend_indices(post, None, 10, approx="lowrank",
                                                     uncertainty=False, n_jobs=n_jobs),
        "implicit (same factors as mean-factors)": lambda: run_implicit(model, ui, users),
    }
    ex_users = None if exact_users is None or exact_users >= N else \
        np.sort(np.random.default_rng(0).choice(N, exact_users, replace=False))
    methods["bayesmf exact"] = (lambda: recommend_indices(
        post, None if ex_users is None else post.users.ids[ex_users], 10,
        uncertainty=False, n_jobs=n_jobs))
    times = {k: [] for k in methods}
    cpu = {k: [] for k in methods}
    mem = {k: 0 for k in methods}
    outs = {}
    for _ in range(repeats):
        for k, fn in methods.items():
            with PeakRSS() as pr:
                t0, c0 = time.perf_counter(), time.process_time()
                outs[k] = fn()
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
            mem[k] = max(mem[k], pr.delta)
    table = []
    for k in methods:
        med = float(np.median(times[k]))
        scale = 1.0
        if k == "bayesmf exact" and ex_users is not None:
            scale = N / len(ex_users)
        table.append({"method": k, "median_s": med * scale, "all_s": [t * scale for t in times[k]],
                      "cpu_s": float(np.median(cpu[k])) * scale,
                      "extrapolated": scale != 1.0, "users_timed": N if scale == 1 else len(ex_users),
                      "peak_rss_delta_MB": mem[k] / 2**20})
    # tracemalloc peak (separate, untimed)
    for row in table:
        k = row["method"]
        if k.startswith("bayesmf"):
            row["tracemalloc_peak_MB"] = tracemalloc_peak(methods[k]) / 2**20
    # the DataFrame on top (raw ids)
    t0 = time.perf_counter()
    df = recommend(post, None, 10, approx="mean-factors", uncertainty=False, n_jobs=n_jobs)
    res["dataframe_mean_factors_s"] = time.perf_counter() - t0
    res["dataframe_rows"] = len(df)
    # uncertainty columns (exact predictive mean/std of the 10 chosen pairs) on a subset
    sub = users[: min(N, 5000)]
    t0 = time.perf_counter()
    recommend_indices(post, post.users.ids[sub], 10, approx="mean-factors", uncertainty=True,
                      n_jobs=n_jobs)
    res["uncertainty_columns_s_per_1000_users"] = (time.perf_counter() - t0) / len(sub) * 1000
    # agreement
    ids_impl = outs["implicit (same factors as mean-factors)"][0]
    mf = outs["bayesmf mean-factors"][1].items
    res["implicit_vs_mean_factors_same_item_fraction"] = float((ids_impl == mf).mean())
    res["implicit_vs_mean_factors_same_set_fraction"] = float(np.mean(
        [len(np.intersect1d(a, b)) / 10 for a, b in zip(ids_impl, mf)]))
    res["approx_error"] = {a: approx_error(post, a, n_users=500, n=10)
                           for a in ("lowrank", "mean-factors")}
    res["table"] = table
    return res


STRATEGIES = ("mean", "thompson", "ucb", "lcb", "prob")


def _call(post, users, st, qm, n_jobs):
    t0, c0 = time.perf_counter(), time.process_time()
    out = recommend_indices(post, users, 10, st, quantile_method=qm, uncertainty=False,
                            n_jobs=n_jobs)[1]
    return out, time.perf_counter() - t0, time.process_time() - c0


def bench_strategies(name, post, n_users=None, exact_users=16, n_jobs=None, repeats=1,
                     seed=0):
    """Top-10 for every strategy: ``bounded`` (default, exact lists), ``approx`` and the
    per-pair ``exact`` reference (on ``exact_users`` users, extrapolated); agreement of
    the lists and the work counters of the bounded path."""
    import bayesmf.recommend.topk as tk

    N = len(post.users)
    rng = np.random.default_rng(seed)
    users = None if n_users is None or n_users >= N else \
        post.users.ids[np.sort(rng.choice(N, n_users, replace=False))]
    nU = N if users is None else len(users)
    ex_users = post.users.ids[np.sort(rng.choice(N, min(exact_users, N), replace=False))]
    stats = {}
    orig = tk.bounded_topn

    def spy(sc, *a, **k):
        stats["sc"] = sc
        return orig(sc, *a, **k)

    rows = []
    tk.bounded_topn = spy
    try:
        recommend_indices(post, post.users.ids[:2], 10, "ucb", uncertainty=False)  # warm
        stats.pop("sc", None)
        for st in STRATEGIES:
            qms = ("bounded", "approx") if st in ("ucb", "lcb", "prob") else ("default",)
            for qm in qms:
                best = None
                for _ in range(repeats):
                    out, wall, cpu = _call(post, users, st, "bounded" if qm == "default"
                                           else qm, n_jobs)
                    if best is None or wall < best[1]:
                        best = (out, wall, cpu)
                out, wall, cpu = best
                sc = stats.pop("sc", None)
                row = {"strategy": st, "method": qm, "users_timed": nU, "wall_s": wall,
                       "cpu_s": cpu, "wall_s_all_users": wall * N / nU,
                       "cpu_s_all_users": cpu * N / nU}
                if sc is not None:
                    row["work"] = dict(sc.stats)
                if qm == "approx":
                    ref = [r for r in rows if r["strategy"] == st][0]["_out"]
                    row["approx_same_list"] = float((out.items == ref.items).all(1).mean())
                    row["approx_set_overlap"] = float(np.mean(
                        [len(np.intersect1d(a, b)) / 10 for a, b in zip(out.items, ref.items)]))
                row["_out"] = out
                rows.append(row)
                print(name, st, qm, f"{wall:.2f} s wall, {cpu:.2f} s CPU ({nU} users)",
                      flush=True)
            if st in ("ucb", "lcb", "prob"):  # the per-pair reference on a few users
                ex, wall, cpu = _call(post, ex_users, st, "exact", n_jobs)
                bo, _, _ = _call(post, ex_users, st, "bounded", n_jobs)
                stats.pop("sc", None)
                rows.append({"strategy": st, "method": "exact", "users_timed": len(ex_users),
                             "wall_s": wall, "cpu_s": cpu,
                             "wall_s_all_users": wall * N / len(ex_users),
                             "cpu_s_all_users": cpu * N / len(ex_users),
                             "bounded_same_list": float((bo.items == ex.items).all(1).mean()),
                             "bounded_max_score_diff": float(np.nanmax(np.abs(
                                 np.where(ex.valid, bo.scores - ex.scores, 0.0))))})
                print(name, st, "exact", f"{wall:.2f} s wall on {len(ex_users)} users",
                      flush=True)
    finally:
        tk.bounded_topn = orig
    for r in rows:
        r.pop("_out", None)
    mean_row = [r for r in rows if r["strategy"] == "mean"][0]
    for r in rows:
        r["x_mean_wall"] = r["wall_s_all_users"] / mean_row["wall_s_all_users"]
        r["x_mean_cpu"] = r["cpu_s_all_users"] / mean_row["cpu_s_all_users"]
    return {"model": name, "users": N, "items": len(post.items), "rank": post.spec.rank,
            "draws": post.n_samples, "chains": post.n_chains, "rows": rows}


def load_latest_small(cache: Path):
    from bayesmf import io

    if cache.exists():
        return io.load(cache), f"loaded {cache.name}"
    import bayesmf
    from bayesmf.datasets import load_movielens

    r = load_movielens("latest-small").ratings
    t0 = time.perf_counter()
    m = bayesmf.BayesMF(method="gibbs", rank=10, num_samples=300, seed=0).fit(r)
    io.save(m.posterior_, cache)
    return m.posterior_, f"fitted by Gibbs in {time.perf_counter() - t0:.0f} s"


def write_strategies_md(results, path: Path, env: dict):
    lines = ["# Top-10 by strategy: bounded (exact lists) vs approx vs per-pair exact", "",
             f"Machine: {env['cpu']}, {env['cores']} cores, shared: load average "
             f"before/after {env['load_before']} / {env['load_after']} -- wall times are "
             "inflated by other jobs; CPU s (process time, all threads) is the steadier "
             "number. Command: `" + env["command"] + "`.", "",
             "`bounded` returns exactly the lists of `exact` (every pair's "
             "mixture quantile / probability solved): it screens with a moment-matched "
             "Gaussian, solves the best few per user and certifies all other items below "
             "the 10th exact score with per-draw bounds (bayesmf/scoring/bounded.py). "
             "`approx` (the default) skips the certificate. `exact` is timed on a few users and "
             "extrapolated. `x mean` = time / time of the `mean` strategy (all users).", ""]
    for r in results:
        lines += [f"## {r['model']}", "",
                  f"{r['users']:,} users x {r['items']:,} items, rank {r['rank']}, "
                  f"{r['draws']} draws ({r['chains']} chain(s)). {r.get('source', '')}", "",
                  "| strategy | method | users timed | wall s (all users) | CPU s (all users) "
                  "| x mean (wall) | x mean (CPU) | pairs solved / certified | agreement |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for x in r["rows"]:
            w = x.get("work")
            work = "" if not w else (f"{w['rescored'] + w['solved']:,} / {w['certified']:,}")
            agree = ""
            if "approx_same_list" in x:
                agree = (f"same list as bounded {x['approx_same_list']:.4f}, set overlap "
                         f"{x['approx_set_overlap']:.4f}")
            if "bounded_same_list" in x:
                agree = (f"bounded = exact on {x['bounded_same_list']:.0%} of users, max "
                         f"score diff {x['bounded_max_score_diff']:.1e}")
            ext = " (extrapolated)" if x["users_timed"] < r["users"] else ""
            lines.append(f"| {x['strategy']} | {x['method']} | {x['users_timed']:,} | "
                         f"{x['wall_s_all_users']:.2f}{ext} | {x['cpu_s_all_users']:.2f} | "
                         f"{x['x_mean_wall']:.1f} | {x['x_mean_cpu']:.1f} | {work} | {agree} |")
        lines.append("")
    path.write_text("\n".join(lines))


def load_ml1m(cache: Path, fit: str):
    from bayesmf import io
    from bayesmf.data.ratings import Ratings
    from bayesmf.data.vocab import Vocabulary
    from bayesmf.model.spec import ModelSpec

    if cache.exists():
        post = io.load(cache)
        return post, f"loaded {cache.name}"
    sys.path.insert(0, str(ROOT / "shared" / "bench"))
    from peers import load_split

    spl = load_split("ml1m-part")
    users = Vocabulary(np.arange(spl.n_users), "user")
    items = Vocabulary(np.arange(spl.n_items), "item")
    tr = Ratings.from_indices(spl.train[0], spl.train[1], spl.train[2], users, items)
    t0 = time.perf_counter()
    if fit == "gibbs":
        from bayesmf.infer.gibbs import fit_gibbs

        post = fit_gibbs(tr, ModelSpec(rank=32), seed=0, num_warmup=40, num_samples=100)
    else:
        from bayesmf.infer.map import fit_map

        post = fit_map(tr, ModelSpec(rank=32), seed=0)
    how = f"fitted by {fit} in {time.perf_counter() - t0:.0f} s"
    io.save(post, cache)
    return post, how


def write_md(results, path: Path, env: dict):
    lines = ["# Top-10 recommendation for every user (exclude seen)", "",
             f"Machine: {env['cpu']}, {env['cores']} cores; load average before/after: "
             f"{env['load_before']} / {env['load_after']} (shared machine: compare ratios "
             "within one run). Command: `" + env["command"] + "`.", "",
             "Time: median over repeats of `recommend_indices` (index arrays); CPU s is the "
             "process CPU time of the call summed over threads (divided by the cores it is "
             "roughly the wall time on an idle machine). Memory: peak RSS above the pre-call "
             "RSS (psutil, 5 ms sampling) and the tracemalloc peak (separate run).", ""]
    for r in results:
        lines += [f"## {r['model']}", "",
                  f"{r['users']:,} users x {r['items']:,} items, rank {r['rank']}, "
                  f"{r['draws']} draws ({r['chains']} chain(s)), {r['train_pairs']:,} seen "
                  f"pairs, posterior {r['posterior_GB']:.2f} GB. {r.get('source', '')}", "",
                  "| method | time (s) | CPU s, all threads | peak RSS delta (MB) | tracemalloc peak (MB) | note |",
                  "|---|---|---|---|---|---|"]
        for row in r["table"]:
            note = f"extrapolated from {row['users_timed']:,} users" if row["extrapolated"] else ""
            tm = row.get("tracemalloc_peak_MB")
            lines.append(f"| {row['method']} | {row['median_s']:.2f} | {row['cpu_s']:.2f} | "
                         f"{row['peak_rss_delta_MB']:.0f} | {'' if tm is None else f'{tm:.0f}'} | {note} |")
        ae = r["approx_error"]
        lines += ["",
                  f"- one-off preparation: lowrank {r['lowrank_prepare_s']:.2f} s (randomized SVD, "
                  f"cached), mean-factors {r['mean_factors_prepare_s']:.2f} s",
                  f"- raw-id DataFrame (`recommend`, mean-factors): {r['dataframe_mean_factors_s']:.2f} s "
                  f"for {r['dataframe_rows']:,} rows",
                  f"- exact predictive mean/std columns (`uncertainty=True`): "
                  f"{r['uncertainty_columns_s_per_1000_users']:.3f} s per 1,000 users",
                  f"- implicit vs bayesmf mean-factors (same factors): same item at the same rank "
                  f"{r['implicit_vs_mean_factors_same_item_fraction']:.4f}, same top-10 set "
                  f"{r['implicit_vs_mean_factors_same_set_fraction']:.4f}",
                  "- error against the exact posterior mean (500 random users): "
                  + "; ".join(f"{a}: score RMSE {e['score_rmse']:.2e} "
                              f"({e['relative_rmse']:.2e} of the score sd), top-10 overlap "
                              f"{e['top10_overlap']:.3f}" for a, e in ae.items()), ""]
    path.write_text("\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small synthetic model only")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-ml1m", action="store_true")
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--fit", choices=["gibbs", "map"], default="gibbs")
    ap.add_argument("--cache", default="/tmp/bayesmf_bench_ml1m_gibbs32.nc")
    ap.add_argument("--exact-users", type=int, default=2000,
                    help="users timed for the exact mode on the synthetic model")
    ap.add_argument("--n-jobs", type=int, default=None)
    ap.add_argument("--out", default=str(HERE / "results"))
    ap.add_argument("--strategies", action="store_true",
                    help="only the strategy table (mean, thompson, ucb, lcb, prob) on "
                         "MovieLens latest-small (Gibbs rank 10, 300 draws) and the synthetic "
                         "model -> results/recommend_strategies.md")
    ap.add_argument("--latest-small-cache", default="/tmp/h1_model.nc")
    ap.add_argument("--synthetic-users", type=int, default=2000,
                    help="users timed per strategy on the synthetic model (extrapolated)")
    a = ap.parse_args(argv)
    if a.strategies:
        return main_strategies(a, argv)
    env = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "load_before": [round(x, 1) for x in os.getloadavg()],
           "command": "python benchmarks/bench_recommend.py " + " ".join(argv or sys.argv[1:]),
           "python": platform.python_version(), "numpy": np.__version__}
    try:
        import implicit

        env["implicit"] = implicit.__version__
    except ImportError:
        sys.exit("install implicit (pip install implicit) to run this benchmark")
    try:
        with open("/proc/cpuinfo") as fh:
            env["cpu"] = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    results = []
    if not a.skip_ml1m and not a.quick:
        if (ROOT / "shared" / "data" / "ml-1m").exists():
            post, how = load_ml1m(Path(a.cache), a.fit)
            r = bench_model("ml1m-part train split", post, a.repeats, None, a.n_jobs)
            r["source"] = f"Posterior: bayesmf {post.method} ({how})."
            results.append(r)
            print(json.dumps(r["table"], indent=1), flush=True)
        else:
            print("shared/data/ml-1m not found: skipping ml1m-part")
    if not a.skip_synthetic:
        from _synth_model import synthetic_posterior

        kw = dict(n_users=7000, n_items=1000) if a.quick else {}
        t0 = time.perf_counter()
        post = synthetic_posterior(**kw)
        r = bench_model("synthetic", post, a.repeats, a.exact_users, a.n_jobs)
        r["source"] = f"Synthetic draws built in {time.perf_counter() - t0:.0f} s."
        results.append(r)
        print(json.dumps(r["table"], indent=1), flush=True)
    env["load_after"] = [round(x, 1) for x in os.getloadavg()]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "recommend_quick" if a.quick else "recommend"
    (out / f"{name}.json").write_text(json.dumps({"env": env, "results": results}, indent=1,
                                                 default=float))
    write_md(results, out / f"{name}.md", env)
    print(f"wrote {out / name}.md/.json")


def main_strategies(a, argv):
    env = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
           "load_before": [round(x, 1) for x in os.getloadavg()],
           "command": "python benchmarks/bench_recommend.py " + " ".join(argv or sys.argv[1:]),
           "python": platform.python_version(), "numpy": np.__version__}
    try:
        with open("/proc/cpuinfo") as fh:
            env["cpu"] = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    results = []
    post, how = load_latest_small(Path(a.latest_small_cache))
    r = bench_strategies("MovieLens latest-small, Gibbs", post, None, 16, a.n_jobs,
                         a.repeats)
    r["source"] = f"Posterior {how}."
    results.append(r)
    if not a.skip_synthetic:
        from _synth_model import synthetic_posterior

        kw = dict(n_users=7000, n_items=1000) if a.quick else {}
        post = synthetic_posterior(**kw)
        r = bench_strategies("synthetic", post, a.synthetic_users, 8, a.n_jobs, 1)
        r["source"] = (f"Synthetic draws (benchmarks/_synth_model.py); every strategy timed "
                       f"on {a.synthetic_users:,} random users and extrapolated.")
        results.append(r)
    env["load_after"] = [round(x, 1) for x in os.getloadavg()]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recommend_strategies.json").write_text(json.dumps(
        {"env": env, "results": results}, indent=1, default=float))
    write_strategies_md(results, out / "recommend_strategies.md", env)
    print(f"wrote {out / 'recommend_strategies'}.md/.json")


if __name__ == "__main__":
    main()
