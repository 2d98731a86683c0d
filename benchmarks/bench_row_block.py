#!/usr/bin/env python
"""Subspace Gibbs row draws (``row_block``) against the exact row draws: seconds per
sweep, compile time and mixing (ESS per sweep and per second) of the Bayesian implicit ALS
sampler on ML-1M implicit, one thread.

    .venv/bin/python benchmarks/bench_row_block.py [--ranks 64,128] [--blocks none,32,16]
        [--warmup 100 --samples 150] [--probe 2000] [--out benchmarks/results/row_block]

Data: the training part of the peers' ``ml1m-loo`` split (994,169 pairs), confidence
``c = 1 + 4`` and noise precision 4 (the setting ``bench_implicit_bayes.py`` validated).
Each configuration is one chain of ``--warmup`` + ``--samples`` sweeps (seed 0) that
keeps its factor draws; the identified quantity is the noise-free preference
:math:`b_u + b_i + U_u^\\top V_i` (+ mu) of ``--probe`` (user, item) pairs drawn once
(half training positives, half unobserved pairs). Per pair: bulk ESS of the kept draws
(``arviz_stats.ess``, one chain); reported are the median and 10th percentile over
pairs, ESS per sweep (mixing) and **ESS per second** (ESS / (kept sweeps x seconds per
sweep), compile excluded and reported separately). Also the rms difference of each
configuration's posterior-mean preferences from the exact sampler's (the same posterior:
Monte Carlo error only). One thread (BLAS and XLA pinned before the libraries load).
Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                           "=false intra_op_parallelism_threads=1").strip()
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


def _pairs(X, n, seed=0):
    """``n`` probe pairs: half training positives, half unobserved pairs."""
    rng = np.random.default_rng(seed)
    coo = X.tocoo()
    pos = rng.choice(coo.nnz, n // 2, replace=False)
    u = [coo.row[pos]]
    i = [coo.col[pos]]
    seen = set(zip(coo.row.tolist(), coo.col.tolist()))
    uu, ii = [], []
    while len(uu) < n - n // 2:
        a, b = int(rng.integers(X.shape[0])), int(rng.integers(X.shape[1]))
        if (a, b) not in seen:
            uu.append(a)
            ii.append(b)
            seen.add((a, b))
    return np.concatenate(u + [np.array(uu)]), np.concatenate(i + [np.array(ii)])


def run(rank, row_block, X, pu, pi, warmup, samples) -> dict:
    import arviz_stats

    import bayesmf
    from bayesmf.data.ratings import Ratings
    from bayesmf.data.vocab import Vocabulary
    from bayesmf.model.likelihoods import ImplicitGaussian

    coo = X.tocoo()
    tr = Ratings.from_indices(coo.row, coo.col, coo.data.astype(float),
                              Vocabulary(np.arange(X.shape[0])),
                              Vocabulary(np.arange(X.shape[1])))
    t0 = time.perf_counter()
    post = bayesmf.BayesMF(method="gibbs", rank=rank, likelihood=ImplicitGaussian(alpha=4.0),
                           noise="fixed", noise_precision=4.0, num_samples=samples,
                           num_warmup=warmup, seed=0, row_block=row_block,
                           memory_limit="8GiB").fit(tr).posterior
    wall = time.perf_counter() - t0
    d = post.draws
    pref = (np.asarray(d["mu"])[..., None] + np.asarray(d["bu"])[..., pu]
            + np.asarray(d["bi"])[..., pi]
            + np.einsum("cspk,cspk->csp", np.asarray(d["U"])[..., pu, :],
                        np.asarray(d["V"])[..., pi, :]))[0]            # (samples, probe)
    ess = np.asarray(arviz_stats.ess(pref[None], chain_axis=0, draw_axis=1, method="bulk"),
                     float)
    a = post.attrs
    sps = float(a["seconds_per_sweep"])
    return {"rank": rank, "row_block": row_block or 0, "s_per_sweep": sps,
            "compile_s": float(a["compile_seconds"]), "wall_s": wall,
            "ess_median": float(np.median(ess)), "ess_p10": float(np.percentile(ess, 10)),
            "ess_per_sweep": float(np.median(ess)) / samples,
            "ess_per_s": float(np.median(ess)) / (samples * sps),
            "ess_p10_per_s": float(np.percentile(ess, 10)) / (samples * sps),
            "mean": pref.mean(0).tolist(), "load": os.getloadavg()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="64,128")
    p.add_argument("--blocks", default="none,32,16")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--samples", type=int, default=150)
    p.add_argument("--probe", type=int, default=2000)
    p.add_argument("--out", type=Path, default=HERE / "results" / "row_block")
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "shared" / "bench"))
    import implicit_peers as ip

    split = ip.make_split("ml1m-loo", ip.DEFAULT_DATA, 0)
    X = split.train.tocsr()
    pu, pi = _pairs(X, a.probe)
    rows = []
    for rank in (int(r) for r in a.ranks.split(",")):
        ref = None
        for b in a.blocks.split(","):
            rb = None if b == "none" else int(b)
            r = run(rank, rb, X, pu, pi, a.warmup, a.samples)
            m = np.asarray(r.pop("mean"))
            if ref is None:
                ref = m
            r["rms_vs_first"] = float(np.sqrt(np.mean((m - ref) ** 2)))
            rows.append(r)
            print(json.dumps(r), flush=True)
    cmd = "python benchmarks/bench_row_block.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    doc = {"generated": time.strftime("%Y-%m-%d %H:%M:%S"), "command": cmd, "rows": rows}
    a.out.with_suffix(".json").write_text(json.dumps(doc, indent=1))
    lines = ["# Subspace Gibbs row draws (`row_block`) vs exact row draws: speed and mixing",
             "", f"Generated {doc['generated']} on this project's 2-core machine (one "
             f"thread); command: `{cmd}`. Bayesian implicit ALS on the `ml1m-loo` training "
             f"pairs (c = 1 + 4, tau 4), one chain of {a.warmup} + {a.samples} sweeps, seed "
             f"0; ESS (bulk) of the noise-free preference of {a.probe} probe pairs (half "
             "training positives); `rms vs exact`: the posterior means' rms difference "
             "from the first row of the same rank (Monte Carlo error).", "",
             "| rank | row_block | s/sweep | compile s | ESS median (p10) | ESS/sweep | "
             "ESS/s median | ESS/s p10 | rms vs exact | load |", "|---" * 10 + "|"]
    for r in rows:
        lines.append(f"| {r['rank']} | {r['row_block'] or 'exact'} | {r['s_per_sweep']:.3f} | "
                     f"{r['compile_s']:.0f} | {r['ess_median']:.0f} ({r['ess_p10']:.0f}) | "
                     f"{r['ess_per_sweep']:.2f} | {r['ess_per_s']:.1f} | "
                     f"{r['ess_p10_per_s']:.1f} | {r['rms_vs_first']:.4f} | "
                     f"{r['load'][0]:.1f} |")
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
