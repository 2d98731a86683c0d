#!/usr/bin/env python
"""Fold a new user's ratings into a saved model and recommend -- no refitting.

The new user's factor vector and bias are computed per posterior draw from their few
ratings, given the trained item factors (the BPMF/ALS user update, see
``bayesmf.recommend.foldin``); this takes milliseconds, whereas refitting takes minutes::

    python examples/fit_evaluate_movielens.py --save model.nc
    python examples/fold_in_new_user.py model.nc --rate 1=5 --rate 260=4.5 --rate 296=1
    python examples/fold_in_new_user.py model.nc --rate "Toy Story (1995)=5" --n 5
    python examples/fold_in_new_user.py model.nc --csv my_ratings.csv   # item,rating

``ITEM`` is a movie id or (part of) its title. The output compares the recommendations
before (the population fallback every unknown user gets) and after folding in, by
predicted mean and by an optimistic upper quantile, with the predictive uncertainty.
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
from _common import load  # noqa: E402
from bayesmf.recommend.foldin import fold_in  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="model file written by BayesMF.save (.nc)")
    p.add_argument("--rate", action="append", default=[], metavar="ITEM=RATING",
                   help="one rating of the new user (repeatable); ITEM is an id or a title")
    p.add_argument("--csv", help="CSV file with columns item,rating")
    p.add_argument("--user", default="new_user", help="id to give the new user")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--quantile", type=float, default=0.9,
                   help="quantile of the optimistic ('upper') strategy")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--movies", default=None, help="MovieLens folder/zip for titles")
    p.add_argument("--variant", default=None)
    return p.parse_args(argv)


def resolve_item(token: str, model_items, movies):
    """An item id from an id string or a (unique) title match."""
    try:
        iid = int(token)
    except ValueError:
        iid = None
    if iid is not None:
        return iid
    if movies is None:
        raise SystemExit(f"error: {token!r} is not an item id (no titles loaded)")
    titles = movies.movies["title"]
    exact = titles[titles.str.lower() == token.lower()]
    hits = exact if len(exact) else titles[titles.str.contains(token, case=False, regex=False)]
    hits = hits[hits.index.isin(model_items)]
    if len(hits) == 1:
        return hits.index[0]
    if not len(hits):
        raise SystemExit(f"error: no movie of the model matches {token!r}")
    shown = "; ".join(f"{i}: {t}" for i, t in hits.head(8).items())
    raise SystemExit(f"error: {token!r} matches {len(hits)} movies ({shown}); use an id")


def read_ratings(a, model_items, movies) -> pd.DataFrame:
    rows = []
    for spec in a.rate:
        if "=" not in spec:
            raise SystemExit(f"error: --rate expects ITEM=RATING, got {spec!r}")
        item, value = spec.rsplit("=", 1)
        rows.append((resolve_item(item.strip(), model_items, movies), float(value)))
    df = pd.DataFrame(rows, columns=["item", "rating"])
    if a.csv:
        df = pd.concat([df, pd.read_csv(a.csv)[["item", "rating"]]], ignore_index=True)
    if df.empty:
        raise SystemExit("error: give the new user's ratings with --rate or --csv")
    return df


def show(title, recs, movies):
    print(f"\n{title}")
    if movies is not None:
        recs = movies.with_titles(recs)
    for row in recs.itertuples(index=False):
        label = row.title if isinstance(getattr(row, "title", None), str) else f"item {row.item}"
        print(f"  {row.rank:>3}. {label:<55.55} {row.mean:4.2f} +- {row.std:4.2f}")


def main(argv=None) -> int:
    a = parse_args(argv)
    model = bayesmf.load(a.model)
    post = model.posterior
    movies = load(a.movies, a.variant)
    ratings = read_ratings(a, post.items.ids, movies)
    shown = movies.with_titles(ratings) if movies is not None else ratings
    print(f"new user {a.user!r} rated {len(ratings)} item(s):")
    for row in shown.itertuples(index=False):
        print(f"  {row.rating:3.1f}  {getattr(row, 'title', None) or row.item}")

    before = model.recommend(np.array([a.user]), n=a.n, strategy="mean")
    t0 = time.perf_counter()
    folded = fold_in(post, ratings, user=a.user, seed=a.seed)
    dt = time.perf_counter() - t0
    dropped = folded.info.get("dropped_unknown", 0)
    print(f"\nfolded in with {post.n_samples} posterior draw(s) in {1000 * dt:.1f} ms "
          f"(prior {folded.info['prior']!r}; {dropped} rating(s) of unknown items ignored)")
    show("before (population fallback, by predicted mean):", before, movies)
    show("after fold-in, by predicted mean:", folded.recommend(n=a.n, strategy="mean"), movies)
    if not post.is_point_estimate:
        show(f"after fold-in, optimistic ({a.quantile:.0%} predictive quantile):",
             folded.recommend(n=a.n, strategy="upper", quantile=a.quantile), movies)
    rated = ratings["item"].to_numpy()
    pred = folded.predict(rated[np.isin(rated, post.items.ids)])
    print("\nfit to the user's own ratings (predictive mean vs given):")
    for (_, p), y in zip(pred.iterrows(), ratings.set_index("item").loc[pred["item"], "rating"]):
        print(f"  item {p['item']}: {p['mean']:4.2f} +- {p['std']:4.2f} (rated {y:3.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
