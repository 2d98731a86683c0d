#!/usr/bin/env python
"""The README quick start, step by step: fit, predict with intervals, the predictive
distribution, ordinal stars and thumbs, evaluation, recommendations, save/load, ArviZ.

    python examples/quickstart.py                      # ~90 s on 2 CPU cores
    python examples/quickstart.py --out my-folder      # where model.nc goes
    python examples/quickstart.py --fast               # a corner of the data, seconds

Runs offline on the MovieLens latest-small data packaged with bayesmf (100,836 ratings).
Three Gibbs fits at rank 10 (Gaussian with 300 draws after 100 warm-up sweeps, ordinal
stars and Bernoulli thumbs with the sampler's defaults); JAX compiles each sampler once
(a few seconds each). Writes one file, ``<out>/model.nc`` (about 32 MB: the default save
keeps 80 of the 300 draws), and nothing else.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

import bayesmf  # noqa: E402
from _common import small_subset  # noqa: E402
from bayesmf.data import user_split  # noqa: E402
from bayesmf.datasets import load_movielens  # noqa: E402

T0 = time.perf_counter()


def step(text: str) -> None:
    print(f"\n[{time.perf_counter() - T0:5.1f} s] {text}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("quickstart-output"),
                    help="folder for model.nc (created; default ./quickstart-output)")
    ap.add_argument("--fast", action="store_true",
                    help="the first 60 users, rank 2 and tiny sampler settings (for tests)")
    a = ap.parse_args(argv)
    rank = 2 if a.fast else 10
    gibbs = dict(num_samples=40, num_warmup=20) if a.fast else dict(num_samples=300,
                                                                    num_warmup=100)
    small = dict(num_samples=30, num_warmup=30) if a.fast else {}  # sampler defaults
    pd.set_option("display.width", 120)
    out = a.out.resolve()
    print(f"bayesmf {bayesmf.__version__} quick start on MovieLens latest-small"
          f"{' (fast: first 60 users, rank 2)' if a.fast else ''}: 3 Gibbs fits, about "
          f"{'30 s' if a.fast else '90 s'} on 2 CPU cores; writes {out / 'model.nc'}")

    step("load the packaged ratings (offline) and hold out 10% of each user's ratings")
    ml = load_movielens("latest-small")
    ratings = small_subset(ml.ratings, 60) if a.fast else ml.ratings
    split = user_split(ratings, test_fraction=0.1, seed=0)
    print(f"train {split.train.nnz:,} ratings, test {split.test.nnz:,}; "
          f"{ratings.n_users:,} users x {ratings.n_items:,} movies")
    user = 414 if 414 in ratings.users.ids else int(ratings.users.ids[0])
    item = 1  # Toy Story (1995)

    step(f"fit BPMF by Gibbs sampling: rank {rank}, {gibbs['num_samples']} draws after "
         f"{gibbs['num_warmup']} warm-up sweeps")
    model = bayesmf.BayesMF(method="gibbs", rank=rank, **gibbs)
    model.fit(split.train)
    print(model.posterior_, f"in {model.fit_seconds_:.1f} s")

    step("predict held-out ratings: mean, std and a 90% interval per pair")
    pred = model.predict(split.test.to_dataframe())
    print(pred.head(5).to_string(float_format=lambda x: f"{x:.2f}"))

    step(f"the predictive distribution of user {user} on movie {item} "
         f"({ml.titles([item])[0]})")
    mix = model.posterior_.predictive([user], [item])
    print(f"mean {mix.mean()[0]:.2f}, 90% interval [{mix.quantile(0.05)[0]:.2f}, "
          f"{mix.quantile(0.95)[0]:.2f}], P(rating >= 4) = {mix.prob_at_least(4.0)[0]:.2f}")

    step("ordinal stars: a categorical predictive over the half-star levels")
    stars = bayesmf.BayesMF(method="gibbs", likelihood="ordinal", rank=rank, **small)
    stars.fit(split.train)
    pmf = stars.posterior_.predictive([user], [item]).pmf()[0]
    levels = stars.posterior_.likelihood.levels
    top = np.argsort(pmf)[::-1][:3]
    print(f"fitted in {stars.fit_seconds_:.1f} s; most likely ratings of user {user} on "
          f"movie {item}: " + ", ".join(f"{levels[j]:g} ({pmf[j]:.2f})" for j in top))

    step("thumbs: a Bernoulli (probit) model of 'rated 4 stars or more'")
    thumbs = bayesmf.BayesMF(method="gibbs", likelihood="bernoulli-probit", rank=rank,
                             **small)
    thumbs.fit(bayesmf.data.binarize(split.train, 4.0))
    r = thumbs.evaluate(bayesmf.data.binarize(split.test, 4.0), ranking=False)
    print(f"fitted in {thumbs.fit_seconds_:.1f} s; test AUC {r['auc']:.3f}, "
          f"log-loss {r['log_loss']:.3f}")

    step("evaluate the Gaussian model on the held-out ratings")
    m = model.evaluate(split.test)
    print(f"RMSE {m['rmse']:.4f}  MAE {m['mae']:.4f}  NLPD {m['nlpd']:.4f}  CRPS "
          f"{m['crps']:.4f}  90% coverage {m['coverage']['0.9']:.3f}  NDCG@10 "
          f"{m['ranking'].get('ndcg@10', float('nan')):.4f}")

    step(f"recommend 10 movies to user {user} by an upper confidence bound (UCB; seen "
         "movies excluded)")
    recs = model.recommend([user], n=10, strategy="ucb")
    recs["title"] = [str(t)[:50] for t in ml.titles(recs["item"].to_numpy())]
    cols = [c for c in ("rank", "title", "score", "mean", "std") if c in recs.columns]
    print(recs[cols].to_string(index=False, float_format=lambda x: f"{x:.2f}"))

    step(f"save the model to {out / 'model.nc'} and load it back")
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.nc"
    t = time.perf_counter()
    model.save(path)
    t_save = time.perf_counter() - t
    t = time.perf_counter()
    back = bayesmf.load(path)
    t_load = time.perf_counter() - t
    saved = back.posterior_.attrs["saved"]
    kept = model.posterior_.select(saved.get("chain_index"), saved.get("draw_index"))
    same = np.array_equal(back.predict(split.test.to_dataframe())["mean"].to_numpy(),
                          kept.predict(*(split.test.to_dataframe()[c].to_numpy()
                                         for c in ("user", "item"))).mean)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {back.posterior_.n_samples} "
          f"of {model.posterior_.n_samples} draws) in {t_save:.1f} s, loaded in "
          f"{t_load:.1f} s; predictions identical to those draws in memory: {same}")

    step("the posterior as an ArviZ 1.x DataTree")
    tree = model.posterior_.to_datatree(factors=False)
    print("groups:", ", ".join(g.lstrip("/") for g in tree.groups if g != "/"))

    print(f"\ndone in {time.perf_counter() - T0:.0f} s; the model is in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
