#!/usr/bin/env python
"""Gibbs seconds per sweep with and without the Woodbury draw of rows with few
observations (``low_width``; :mod:`bayesmf.infer._rowblocks`, **Rows of few
observations**), same data, same process, alternating; and the test RMSE of both on one
sparse explicit dataset (the draw is exact: equal up to Monte Carlo error).

Configurations (``--configs``; ``name:rank``):

* ``lastfm-implicit`` -- the training part of the peers' ``lastfm-80-20`` split (74,266
  play counts, 17,632 artists, most with 1-4 listeners), Bayesian implicit ALS
  (``ImplicitGaussian``, ``c = 1 + 0.01 r``);
* ``ml1m-implicit`` -- the training part of ``ml1m-loo`` (994,169 pairs), ``c = 1 + 4``;
* ``lastfm-log`` -- Last.fm play counts as explicit ``log1p(count)``, 90/10 split
  (``bench_priors.py``), the Gaussian model;
* ``ml1m-part``, ``ml100k-u1`` -- the peers' explicit splits (controls: ``"auto"`` leaves
  them to the Cholesky path).

The RMSE check (``--accuracy name:rank:low_width``) fits 100 + 200 sweeps with
``low_width=0`` and with the given width (forced, whatever ``"auto"`` would say).

One thread (``--threads 1``: XLA's CPU backend pinned to one thread, set before JAX
loads) so that the ratio is not the scheduler's. Per configuration ``--repeats`` fits of
``--sweeps`` sweeps each way (no warm-up; compile excluded), medians.

    .venv/bin/python benchmarks/bench_low_rows.py --out benchmarks/results/low_rows.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "bench"
DEFAULT_CONFIGS = ("lastfm-implicit:64,ml1m-implicit:64,lastfm-log:10,lastfm-log:32,"
                   "lastfm-log:64,ml1m-part:32,ml100k-u1:10")


def _train(name: str):
    """``(train Ratings, likelihood, test (u, i, r) or None)``."""
    import numpy as np

    from bayesmf.data.ratings import Ratings
    from bayesmf.data.vocab import Vocabulary
    from bayesmf.model.likelihoods import ImplicitGaussian

    sys.path.insert(0, str(SHARED))
    sys.path.insert(0, str(HERE))
    if name.endswith("-implicit"):
        import implicit_peers as ip

        split = ip.make_split("lastfm-80-20" if name.startswith("lastfm") else "ml1m-loo",
                              ip.DEFAULT_DATA, 0)
        coo = split.train.tocoo()
        tr = Ratings.from_indices(coo.row, coo.col, coo.data.astype(float),
                                  Vocabulary(np.arange(split.n_users)),
                                  Vocabulary(np.arange(split.n_items)))
        alpha = 0.01 if name.startswith("lastfm") else 4.0
        return tr, ImplicitGaussian(alpha=alpha, transform="linear"), None
    import bench_priors

    split = bench_priors.load(name)
    u, i, r = split.train
    tr = Ratings.from_indices(u, i, r, Vocabulary(np.arange(split.n_users)),
                              Vocabulary(np.arange(split.n_items)))
    return tr, "gaussian", split.test


def _fit(tr, lik, rank, seed, sweeps, warmup, low_width, store_draws=False):
    """A Gibbs fit through the estimator (its defaults for the likelihood: the implicit
    model has no biases and a fixed noise precision)."""
    import bayesmf

    return bayesmf.BayesMF(method="gibbs", rank=rank, likelihood=lik, num_samples=sweeps,
                           num_warmup=warmup, seed=seed, store_draws=store_draws,
                           low_width=low_width).fit(tr)


def time_config(name: str, rank: int, repeats: int, sweeps: int) -> dict:
    import numpy as np

    tr, lik, _ = _train(name)
    deg = {"user": np.bincount(tr.user, minlength=tr.n_users),
           "item": np.bincount(tr.item, minlength=tr.n_items)}
    secs = {"off": [], "auto": []}
    for r in range(repeats):
        for lw, key in ((0, "off"), ("auto", "auto")):
            post = _fit(tr, lik, rank, r, sweeps, 0, lw).posterior
            secs[key].append(post.attrs["seconds_per_sweep"])
            low_width = post.attrs["settings"]["low_width"]
    share = {s: (float(np.mean((deg[s] >= 1) & (deg[s] <= w))) if w else 0.0)
             for s, w in low_width.items()}
    off, auto = float(np.median(secs["off"])), float(np.median(secs["auto"]))
    return {"config": name, "rank": rank, "nnz": int(tr.nnz), "n_users": tr.n_users,
            "n_items": tr.n_items, "low_width": low_width, "low_share": share,
            "off_s": off, "auto_s": auto, "ratio": auto / off, "runs": secs}


def accuracy(name: str, rank: int, width: int, seeds, warmup: int, samples: int) -> list:
    import numpy as np
    import pandas as pd

    tr, lik, test = _train(name)
    tu, ti, tr_ = test
    pairs = pd.DataFrame({"user": tu, "item": ti})
    out = []
    for seed in seeds:
        for lw in (0, width):
            m = _fit(tr, lik, rank, seed, samples, warmup, lw, store_draws=True)
            pred = m.predict(pairs)["mean"].to_numpy()
            out.append({"config": name, "rank": rank, "seed": seed, "low_width": str(lw),
                        "rmse": float(np.sqrt(np.mean((pred - tr_) ** 2))),
                        "s_per_sweep": m.posterior.attrs["seconds_per_sweep"]})
            print(json.dumps(out[-1]), flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default=DEFAULT_CONFIGS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sweeps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1, choices=(1, 2))
    ap.add_argument("--accuracy", default="lastfm-log:10:4",
                    help="name:rank:low_width of the RMSE check, against low_width=0 "
                         "('' to skip)")
    ap.add_argument("--accuracy-seeds", default="0,1")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "low_rows.md")
    argv = sys.argv[1:] if argv is None else list(argv)
    a = ap.parse_args(argv)
    if a.threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_"
                                   "eigen=false intra_op_parallelism_threads=1").strip()
    load0 = os.getloadavg()
    t0 = time.strftime("%Y-%m-%d %H:%M:%S")
    rows = []
    for c in a.configs.split(","):
        name, rank = c.rsplit(":", 1)
        rows.append(time_config(name, int(rank), a.repeats, a.sweeps))
        print(json.dumps(rows[-1]), flush=True)
    acc = []
    if a.accuracy:
        name, rank, width = a.accuracy.split(":")
        acc = accuracy(name, int(rank), int(width),
                       [int(s) for s in a.accuracy_seeds.split(",")], 100, 200)
    load1 = os.getloadavg()
    lines = [
        "# Gibbs sweep: rows of few observations drawn through the Woodbury identity",
        "",
        f"Generated {t0} on this project's 2-core machine (`lscpu`: AMD EPYC); command: "
        f"`python benchmarks/bench_low_rows.py{' ' + ' '.join(argv) if argv else ''}`; "
        f"{a.threads} thread(s); load average at start {load0[0]:.2f}, at end "
        f"{load1[0]:.2f}. Median of {a.repeats} fits of {a.sweeps} sweeps each way "
        "(alternating, same process; compile excluded). `off`: every row by its own "
        "Cholesky factor (`low_width=0`, the code before); `auto`: the library default.",
        "",
        "| data | rank | pairs | users x items | low_width (user / item) | rows covered "
        "(user / item) | off s/sweep | auto s/sweep | auto / off |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lw, sh = r["low_width"], r["low_share"]
        lines.append(
            f"| {r['config']} | {r['rank']} | {r['nnz']:,} | {r['n_users']:,} x "
            f"{r['n_items']:,} | {lw['user']} / {lw['item']} | {sh['user']:.0%} / "
            f"{sh['item']:.0%} | {r['off_s']:.4f} | {r['auto_s']:.4f} | "
            f"**{r['ratio']:.2f}** |")
    if acc:
        lines += ["", f"Test RMSE, {acc[0]['config']} rank {acc[0]['rank']}, 100 warm-up + "
                  "200 kept sweeps, posterior predictive mean clipped to the training "
                  "scale (the two paths use other random numbers; equal up to Monte Carlo "
                  "error):", "",
                  "| seed | low_width | RMSE | s/sweep |", "|---|---|---|---|"]
        for r in acc:
            lines.append(f"| {r['seed']} | {r['low_width']} | {r['rmse']:.4f} | "
                         f"{r['s_per_sweep']:.4f} |")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(lines) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps({"timing": rows, "accuracy": acc},
                                                     indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
