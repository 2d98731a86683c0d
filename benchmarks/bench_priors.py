#!/usr/bin/env python
"""Which factor prior should be the default? Gibbs rank 10 with each prior vs myFM, on
explicit datasets of different scales and sparsity (same splits, same run).

    .venv/bin/python benchmarks/bench_priors.py [--datasets ...] [--samples 200 --warmup 100]

Datasets (``../shared/data``; splits from ``../shared/bench/peers.py`` where it has them):

* ``ml100k-u1`` .. ``ml100k-u5`` -- the official folds (1-5 stars, 6.3% dense);
* ``ml1m-part`` -- the ML-1M subset (users 1-2999), random 90/10;
* ``mlsmall`` -- MovieLens latest-small, half stars 0.5-5, random 90/10;
* ``ml1m-x20-sparse`` -- the ML-1M subset's training rows thinned to 30% (seed 0) and
  every rating times 20 (a 20-100 scale, sparser): the same test rows;
* ``lastfm-log`` -- Last.fm 2K play counts as explicit values ``log1p(count)`` (scale
  0.7-12.8, 0.28% dense), random 90/10 (seed 0).

Models (rank 10, 1 chain, ``--warmup`` + ``--samples`` sweeps, seed 0):

* ``nw`` -- the Normal-Wishart prior with the scale-aware defaults (the default);
* ``ng`` -- the per-dimension Normal-Gamma prior (libFM/myFM style), scale-aware;
* ``nw-fixed`` -- Normal-Wishart with the old fixed hyperparameters
  (``w0 = bias_b = noise_b = 1`` whatever the data scale);
* ``myfm`` -- myFM ``MyFMRegressor`` on the one-hot user|item features with grouped
  priors, ``warmup + samples`` iterations keeping the last ``samples``.

Metrics: RMSE of the predictive mean clipped to the training scale (all test pairs and
warm pairs: user and item seen in training), 90% coverage and NLPD of the moment-matched
Gaussian (``peers.evaluate``). Writes ``results/priors.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent / "shared" / "bench"))

import peers  # noqa: E402
from bench_gibbs import to_ratings  # noqa: E402

from bayesmf.infer.gibbs import fit_gibbs, streamed_predictions  # noqa: E402
from bayesmf.model.spec import BayesPriors, ModelSpec  # noqa: E402

DATA = HERE.parent.parent / "shared" / "data"
DEFAULT_DATASETS = ("ml100k-u1,ml100k-u2,ml100k-u3,ml100k-u4,ml100k-u5,ml1m-part,mlsmall,"
                    "ml1m-x20-sparse,lastfm-log")
MODELS = {
    "nw": dict(prior="normal-wishart"),
    "ng": dict(prior="normal-gamma"),
    "nw-fixed": dict(prior="normal-wishart", priors=BayesPriors(w0=1.0, bias_b=1.0,
                                                                 noise_b=1.0)),
}


def _random_split(name, u, i, r, seed=0, test_frac=0.1):
    ui = np.unique(u, return_inverse=True)[1]
    ii = np.unique(i, return_inverse=True)[1]
    perm = np.random.default_rng(seed).permutation(len(r))
    n_test = int(round(test_frac * len(r)))
    te, tr = np.sort(perm[:n_test]), np.sort(perm[n_test:])
    return peers.Split(name, (ui[tr], ii[tr], r[tr]), (ui[te], ii[te], r[te]),
                       int(ui.max()) + 1, int(ii.max()) + 1, (float(r.min()), float(r.max())),
                       {"split": f"random 90/10, seed {seed}"})


def load(name: str) -> "peers.Split":
    if name == "lastfm-log":
        import pandas as pd

        df = pd.read_csv(DATA / "hetrec2011-lastfm-2k" / "user_artists.dat", sep="\t")
        return _random_split(name, df["userID"].to_numpy(), df["artistID"].to_numpy(),
                             np.log1p(df["weight"].to_numpy(np.float64)))
    if name == "ml1m-x20-sparse":
        s = peers.load_split("ml1m-part")
        u, i, r = s.train
        keep = np.random.default_rng(0).random(len(r)) < 0.3
        tu, ti, tr = s.test
        return peers.Split(name, (u[keep], i[keep], 20.0 * r[keep]), (tu, ti, 20.0 * tr),
                           s.n_users, s.n_items, (20.0, 100.0),
                           {"split": "ml1m-part, 30% of the training rows (seed 0), x20"})
    return peers.load_split(name)


def run_model(split, model, warmup, samples, seed):
    spec = ModelSpec(rank=10, **MODELS[model])
    tu, ti, _ = split.test
    t0 = time.perf_counter()
    post = fit_gibbs(to_ratings(split), spec, seed=seed, num_samples=samples,
                     num_warmup=warmup, predict_pairs=(tu, ti))
    wall = time.perf_counter() - t0
    sp = streamed_predictions(post)
    res = peers.evaluate(split, {"mean": sp["mean"], "var": sp["var"]})
    res.update(fit_s=wall, s_per_sweep=post.attrs["seconds_per_sweep"])
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=DEFAULT_DATASETS)
    p.add_argument("--models", default="nw,ng,nw-fixed,myfm")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--samples", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", default=None,
                   help="comma list of chain seeds (the split stays seed 0); the table shows "
                        "mean +- sd over them")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--quick", action="store_true", help="smoke run: u1 only, short chains")
    a = p.parse_args(argv)
    if a.quick:
        a.datasets, a.warmup, a.samples = "ml100k-u1", 20, 40
    if a.out is None:
        a.out = HERE / "results" / ("quick/priors" if a.quick else "priors")
    rows = []
    t_start = time.time()
    seeds = [int(x) for x in a.seeds.split(",")] if a.seeds else [a.seed]
    for name in a.datasets.split(","):
        split = load(name)
        density = len(split.train[2]) / (split.n_users * split.n_items)
        for model in a.models.split(","):
            for seed in seeds:
                if model == "myfm":
                    cfg = dict(rank=10, seed=seed, myfm_iter=(a.warmup + a.samples, a.samples))
                    out = peers.run_myfm(split, cfg)
                    res = peers.evaluate(split, out)
                    res.update(fit_s=float(out["fit"].seconds)
                               if hasattr(out["fit"], "seconds") else None)
                else:
                    res = run_model(split, model, a.warmup, a.samples, seed)
                res.update(dataset=name, model=model, density=density, seed=seed,
                           scale=list(split.scale), n_train=len(split.train[2]))
                rows.append(res)
                print(f"{name:16s} {model:9s} seed {seed} rmse {res['rmse']:.4f} warm "
                      f"{res['rmse_warm']:.4f} cov90 {res['coverage90']:.3f}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(
        {"rows": rows, "settings": vars(a) | {"out": str(a.out)},
         "loadavg_end": os.getloadavg(), "date": time.ctime(), "wall_s": time.time() - t_start},
        indent=1, default=str))
    models = a.models.split(",")
    seed_txt = (f"chain seeds {a.seeds} (split seed 0), cells are means over them with the "
                "sd of RMSE" if len(seeds) > 1 else f"seed {seeds[0]}")
    lines = ["# Factor prior evidence: Gibbs rank 10 by prior vs myFM (same splits, same run)",
             "", f"{a.warmup} warm-up + {a.samples} kept sweeps (myFM: {a.warmup + a.samples} "
             f"iterations keeping the last {a.samples}), {seed_txt}, 1 chain; RMSE of the "
             "clipped predictive mean on all test pairs / warm pairs; cov90 of the "
             "moment-matched Gaussian. Command: `" + " ".join(["python"] + sys.argv) + "`.",
             "", "| dataset | scale | density | " + " | ".join(
                 f"{m} RMSE (warm) / cov90" for m in models) + " | best bayesmf - myFM |",
             "|---|---|---|" + "---|" * len(models) + "---|"]
    for name in a.datasets.split(","):
        rs = {m: [r for r in rows if r["dataset"] == name and r["model"] == m] for m in models}
        avg = {m: {k: float(np.mean([r[k] for r in v])) for k in ("rmse", "rmse_warm",
                                                                  "coverage90")}
               for m, v in rs.items()}
        r0 = rs[models[0]][0]

        def cell(m):
            sd = (f" ± {np.std([r['rmse'] for r in rs[m]], ddof=1):.4f}"
                  if len(rs[m]) > 1 else "")
            return (f"{avg[m]['rmse']:.4f}{sd} ({avg[m]['rmse_warm']:.4f}) / "
                    f"{avg[m]['coverage90']:.3f}")

        gap = ""
        if "myfm" in avg and len(models) > 1:
            ours = min(avg[m]["rmse"] for m in models if m != "myfm")
            gap = f"{ours - avg['myfm']['rmse']:+.4f}"
        lines.append(f"| {name} | {r0['scale'][0]:g}-{r0['scale'][1]:g} | "
                     f"{r0['density']:.2%} | " + " | ".join(cell(m) for m in models)
                     + f" | {gap} |")
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
