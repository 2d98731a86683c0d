#!/usr/bin/env python
"""Gibbs at 10M ratings on one machine (issue 16 item 1): the ML-10M-shaped synthetic
problem of ``_synth_ml10m.py``, rank 32, ``--warmup`` + ``--samples`` sweeps, no stored
factor draws, predictions of a held-out 10% streamed.

    /usr/bin/time -v .venv/bin/python benchmarks/bench_scale_10m.py [--ratings 10000000]
        [--warmup 100 --samples 200] [--out benchmarks/results/scale_10m.md]

Reports seconds per sweep, compile, total wall time, test RMSE and 90% coverage of the
moment-matched Gaussian predictive (streamed mean and variance, noise included), and the
process's peak RSS (``resource.getrusage``).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _synth_ml10m import synthetic_ml10m, train_test  # noqa: E402

from bayesmf.infer.gibbs import fit_gibbs, streamed_predictions  # noqa: E402
from bayesmf.model.spec import ModelSpec  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ratings", type=int, default=10_000_000)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "scale_10m.md")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    d = synthetic_ml10m(0, a.ratings)
    n = len(d["rating"])
    train, (tu, ti, y) = train_test(d, 0.1)
    t0 = time.perf_counter()
    post = fit_gibbs(train, ModelSpec(rank=a.rank), seed=0, num_warmup=a.warmup,
                     num_samples=a.samples, store_draws=False, predict_pairs=(tu, ti))
    fit_s = time.perf_counter() - t0
    sp = streamed_predictions(post)
    rmse = float(np.sqrt(np.mean((sp["mean"] - y) ** 2)))
    half = 1.6448536269514722 * np.sqrt(sp["var"])
    cov90 = float(np.mean(np.abs(y - sp["mean"]) <= half))
    total = time.perf_counter() - t_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
    at = post.attrs
    lines = ["# Gibbs at 10M ratings on this 2-core machine (issue 16 item 1)", "",
             f"Command: `python benchmarks/bench_scale_10m.py {' '.join(argv or sys.argv[1:])}`;"
             f" {time.ctime()}; load {load0:.1f} -> {os.getloadavg()[0]:.1f} (2 CPUs, CPU "
             "JAX, no GPU).", "",
             f"Problem: {n:,} ratings of {d['n_users']:,} users x {d['n_items']:,} items "
             f"(`_synth_ml10m.py`: heavy-tailed degrees, planted rank 32 + biases, noise sd "
             f"{d['truth']['noise_std']}), 90% train ({train.nnz:,}), 10% held out; Gibbs "
             f"rank {a.rank}, Gaussian, Normal-Wishart, {a.warmup} warm-up + {a.samples} kept "
             "sweeps, 1 chain, `store_draws=False`, held-out predictions streamed.", "",
             "| quantity | measured | target |", "|---|---|---|",
             f"| seconds per sweep | {at['seconds_per_sweep']:.2f} | <= 2.5 |",
             f"| peak RSS | {peak:.2f} GiB | < 8 GB |",
             f"| end to end (data build {d['seconds']:.0f} s + compile "
             f"{at['compile_seconds']:.1f} s + sampling) | {total / 60:.1f} min | < 20 min |",
             f"| test RMSE (noise floor {d['truth']['noise_std']}) | {rmse:.4f} | - |",
             f"| 90% coverage | {cov90:.3f} | - |",
             f"| fit_gibbs wall | {fit_s:.0f} s | - |",
             f"| row parts per side (`row_parts`) | {at['settings'].get('row_parts', 1)} | - |",
             f"| compile cache hit | {at.get('compile_cached')} | - |"]
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
