#!/usr/bin/env python
"""Seconds to convergence of HPF CAVI (issue 14 target: under 60 s on ML-1M implicit).

    .venv/bin/python benchmarks/bench_hpf_cavi.py [--splits ml1m-loo,lastfm-80-20]
        [--rank 32] [--out benchmarks/results/hpf_cavi_speed.md]

For each split of ``shared/bench/implicit_peers.py`` (training part, counts binarised as in
``bench_hpf.py``): ``BayesMF(method="cavi", likelihood="poisson", rank=...)`` fitted end
to end (CAVI to the default tolerance, then the 100 posterior draws), with the CAVI
seconds, iterations, convergence flag and final ELBO from the posterior's attrs, and the
machine load.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent / "shared" / "bench"))

import implicit_peers as ip  # noqa: E402
from bench_hpf import interactions  # noqa: E402

import bayesmf  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--splits", default="ml1m-loo,lastfm-80-20")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "hpf_cavi_speed.md")
    a = ap.parse_args(argv)
    rows = []
    for name in a.splits.split(","):
        split = ip.make_split(name, ip.DEFAULT_DATA, a.seed)
        train = interactions(split.train.tocoo())
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        m = bayesmf.BayesMF(method="cavi", likelihood="poisson", rank=a.rank,
                            seed=a.seed).fit(train)
        wall = time.perf_counter() - t0
        at = m.posterior.attrs
        rows.append((name, train.nnz, wall, at["timings"]["fit_s"], at["iterations"],
                     at["converged"], at["elbo"], load0, os.getloadavg()[0]))
        print(rows[-1], flush=True)
    lines = ["# HPF CAVI: seconds to convergence", "",
             f"Command: `python benchmarks/bench_hpf_cavi.py {' '.join(argv or sys.argv[1:])}`"
             f"; rank {a.rank}, seed {a.seed}, {time.ctime()}, 2-core machine (load "
             "average at start and end of each fit in the table). Target (issue 14): CAVI "
             "converged in under 60 s on ML-1M.", "",
             "| split | non-zeros | fit s (CAVI + 100 draws) | CAVI s | iterations | "
             "converged | final ELBO | load |", "|---|---|---|---|---|---|---|---|"]
    for n, nnz, wall, sec, it, conv, elbo, l0, l1 in rows:
        f = (lambda x, fmt: fmt.format(x) if x is not None else "-")  # noqa: E731
        lines.append(f"| {n} | {nnz:,} | {wall:.1f} | {f(sec, '{:.1f}')} | {f(it, '{}')} | "
                     f"{f(conv, '{}')} | {f(elbo, '{:.1f}')} | {l0:.1f} -> {l1:.1f} |")
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
