#!/usr/bin/env python
"""Fit a matrix-factorization model to MovieLens and evaluate it on held-out ratings.

By default it uses the MovieLens latest-small dataset packaged with bayesmf (works
offline). ``--data`` points to a local MovieLens folder or official zip instead, e.g. the
ML-100K fixture::

    python examples/fit_evaluate_movielens.py                          # MAP, latest-small
    python examples/fit_evaluate_movielens.py --method gibbs --samples 200
    python examples/fit_evaluate_movielens.py --data ../shared/data/ml-100k --save ml100k.nc

It prints the rating metrics (RMSE, MAE, NLPD, CRPS, interval coverage) and the ranking
metrics (precision/recall/NDCG@k on the full catalogue), and optionally saves the model
(``--save``, reload it with ``bayesmf.load`` or ``examples/serve_recommendations.py``)
and the metrics (``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bayesmf  # noqa: E402
from _common import load, method_options, small_subset  # noqa: E402
from bayesmf.data import random_split, temporal_split, user_split  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="MovieLens folder or zip (default: packaged latest-small)")
    p.add_argument("--variant", help="MovieLens variant of --data (default: from its name)")
    p.add_argument("--method", default="map", choices=sorted(bayesmf.infer.METHODS))
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--reg", type=float, default=None,
                   help="MAP ridge strength for factors and biases (default: the model's)")
    p.add_argument("--samples", type=int, default=200, help="posterior draws per chain")
    p.add_argument("--warmup", type=int, default=100, help="burn-in / warm-up draws")
    p.add_argument("--chains", type=int, default=1)
    p.add_argument("--steps", type=int, default=None,
                   help="optimisation steps of the variational methods (svi, pymc-advi)")
    p.add_argument("--split", default="random", choices=["random", "user", "temporal"])
    p.add_argument("--test-fraction", type=float, default=0.2)
    p.add_argument("--k", type=int, default=10, help="cut-off of the ranking metrics")
    p.add_argument("--no-ranking", action="store_true", help="rating metrics only")
    p.add_argument("--max-users", type=int, default=None,
                   help="use only the first N users (a quick smoke run)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save", help="write the fitted model to this .nc file")
    p.add_argument("--json", help="write the metrics to this JSON file")
    return p.parse_args(argv)


def split(ratings, how, fraction, seed):
    if how == "random":
        return random_split(ratings, fraction, seed=seed)
    if how == "user":
        return user_split(ratings, fraction, seed=seed)
    return temporal_split(ratings, test_fraction=fraction)


def main(argv=None) -> int:
    a = parse_args(argv)
    ml = load(a.data, a.variant)
    ratings = small_subset(ml.ratings, a.max_users)
    sp = split(ratings, a.split, a.test_fraction, a.seed)
    print(f"{ml.name}: {ratings!r}")
    print(f"split ({a.split}): {sp.train.nnz} train / {sp.test.nnz} test ratings")

    kw = {} if a.reg is None else {"reg_factors": a.reg, "reg_bias": a.reg}
    model = bayesmf.BayesMF(method=a.method, rank=a.rank, seed=a.seed, **kw,
                            **method_options(a.method, a.samples, a.warmup, a.chains, a.steps))
    t0 = time.perf_counter()
    model.fit(sp.train)
    print(f"fitted {model!r} in {time.perf_counter() - t0:.1f} s: {model.posterior!r}")

    m = model.evaluate(sp.test, k=a.k, ranking=not a.no_ranking, seed=a.seed)
    print(f"\nrating metrics ({m['uncertainty']}; {m['n_test']} test ratings)")
    for name in ("rmse", "mae", "nlpd", "crps", "calibration_error"):
        if name in m:
            print(f"  {name:<18} {m[name]:.4f}")
    for level, cov in m.get("coverage", {}).items():
        print(f"  coverage {float(level):.0%} interval: {cov:.3f}")
    r = m.get("ranking", {})
    if r and "skipped" not in r:
        print(f"\nranking metrics (protocol {r['protocol']}, relevant = rating >= "
              f"{r['relevance_threshold']}, {r['users_evaluated']} users)")
        for name in (f"precision@{a.k}", f"recall@{a.k}", f"ndcg@{a.k}", f"hit_rate@{a.k}",
                     "auc"):
            if name in r:
                print(f"  {name:<18} {r[name]:.4f}")
    elif r:
        print(f"\nranking metrics skipped: {r['skipped']}")
    if a.save:
        model.save(a.save)
        print(f"\nmodel saved to {a.save}")
    if a.json:
        Path(a.json).write_text(json.dumps(m, indent=2))
        print(f"metrics written to {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
