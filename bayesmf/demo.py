"""The demo run behind ``make demo`` (offline, on the packaged MovieLens latest-small).

packaged data -> per-user holdout split -> PMF (MAP) and BPMF (Gibbs) -> test metrics
-> predictions with intervals for a real user (titles shown) -> recommendations with
their uncertainty (posterior mean vs. optimistic UCB).

Run: ``python -m bayesmf.demo [--samples 200] [--rank 10] [--user 414]``. It takes under a
minute on 2 CPU cores (JAX compiles the Gibbs sweep once, a few seconds), prints everything
and writes no file. ``examples/quickstart.py`` walks through the README quick start (and
saves a model file).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

__all__ = ["main"]


def _title(movies: pd.DataFrame, ids) -> list[str]:
    return [str(movies["title"].get(i, f"item {i}")) if movies is not None else str(i)
            for i in ids]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bayesmf.demo", description=__doc__)
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--samples", type=int, default=200, help="Gibbs draws kept")
    ap.add_argument("--warmup", type=int, default=100, help="Gibbs warm-up sweeps")
    ap.add_argument("--user", default=None, help="raw user id to show (default: a typical user)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)

    from bayesmf import BayesMF
    from bayesmf.data import user_split
    from bayesmf.datasets import load_movielens
    from bayesmf.evaluate import evaluate

    pd.set_option("display.width", 140)
    pd.set_option("display.max_colwidth", 48)
    t_start = time.perf_counter()
    print(f"bayesmf demo: PMF (MAP) and BPMF (Gibbs, rank {a.rank}, {a.samples} draws after "
          f"{a.warmup} warm-up sweeps); under a minute on 2 CPU cores; writes no file\n")
    ml = load_movielens("latest-small")
    r = ml.ratings
    print(f"MovieLens latest-small (packaged): {r.nnz:,} ratings, {r.n_users:,} users, "
          f"{r.n_items:,} movies, sparsity {r.sparsity:.4f}")
    split = user_split(r, test_fraction=0.1, seed=a.seed)
    train, test = split.train, split.test
    print(f"per-user 90/10 holdout (seed {a.seed}): train {train.nnz:,}, test {test.nnz:,} "
          f"ratings\n")

    results = {}
    models = {}
    for method, opts in (("map", {}),
                         ("gibbs", {"num_samples": a.samples, "num_warmup": a.warmup})):
        t0 = time.perf_counter()
        model = BayesMF(method=method, rank=a.rank, seed=a.seed, **opts).fit(train)
        secs = time.perf_counter() - t0
        res = evaluate(model.posterior_, test, ranking=False)
        results[method] = {"fit s": secs, "RMSE": res["rmse"], "MAE": res["mae"],
                           "NLPD": res.get("nlpd"), "cov90": res.get("coverage", {}).get("0.9")}
        models[method] = model
    table = pd.DataFrame(results).T
    print("test-set metrics (RMSE/MAE on clipped means; NLPD and 90% coverage of the "
          "predictive distribution):")
    print(table.to_string(float_format=lambda x: f"{x:.4f}"), "\n")

    gibbs = models["gibbs"]
    post = gibbs.posterior_
    if a.user is None:
        counts = test.user_counts()
        user_idx = int(np.argsort(counts)[len(counts) // 2])
        user = test.users.decode(np.array([user_idx]))[0]
    else:
        user = type(post.users.ids[0])(a.user)
    sel = test.users.decode(test.user) == user
    items = test.items.decode(test.item[sel])
    truth = test.rating[sel]
    pred = gibbs.predict((np.full(len(items), user, dtype=object if post.users.is_string
                                  else np.int64), items), interval=0.9, clip=True)
    show = pd.DataFrame({"title": _title(ml.movies, items), "rating": truth,
                         "mean": pred["mean"].to_numpy(), "std": pred["std"].to_numpy(),
                         "90% interval": [f"[{lo:.2f}, {hi:.2f}]" for lo, hi in
                                          zip(pred["lower"], pred["upper"])]})
    print(f"held-out ratings of user {user} with BPMF predictions (std includes noise):")
    print(show.head(10).to_string(index=False, float_format=lambda x: f"{x:.2f}"), "\n")

    for strategy in ("mean", "ucb"):
        recs = gibbs.recommend([user], n=5, strategy=strategy)
        recs = recs.assign(title=_title(ml.movies, recs["item"]))
        cols = [c for c in ("rank", "title", "score", "mean", "std") if c in recs.columns]
        print(f"top-5 for user {user}, strategy={strategy!r} (seen items excluded):")
        print(recs[cols].to_string(index=False, float_format=lambda x: f"{x:.2f}"), "\n")
    print(f"done in {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
