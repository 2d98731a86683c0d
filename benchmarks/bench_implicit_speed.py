#!/usr/bin/env python
"""Seconds per Bayesian implicit ALS Gibbs sweep vs implicit's ALS seconds per iteration,
same data, same factors, same threads (issue 13 target: within 2x).

Data: the training part of the peers' ``ml1m-loo`` split (994,169 ML-1M pairs, binary,
confidence ``c = 1 + 4``) and of ``lastfm-80-20`` (74,266 play counts, ``c = 1 +
0.01 r``), the settings the validation of ``bench_implicit_bayes.py`` chose. Rank 64.

Threads: ``--threads 1`` pins BLAS/OpenMP (implicit, numpy) and XLA's CPU backend
(``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1``) to one thread;
``--threads 2`` gives both cores to both. Each configuration runs in its own process
(``--child``) so the thread settings take effect before the libraries load.

Timed: implicit ``AlternatingLeastSquares(factors=64, iterations=N)`` (conjugate gradient,
its default; training loss off) -- wall seconds / N; bayesmf's Gibbs sampler
(``seconds_per_sweep``, compile excluded) and ``implicit_als`` (CG, 3 steps) per iteration.
Medians of ``--repeats``.

    .venv/bin/python benchmarks/bench_implicit_speed.py --out benchmarks/results/implicit_speed.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def tr_of(X):
    """The training pairs of a scipy sparse matrix as bayesmf ``Ratings``."""
    import numpy as np

    from bayesmf.data.ratings import Ratings
    from bayesmf.data.vocab import Vocabulary
    coo = X.tocoo()
    return Ratings.from_indices(coo.row, coo.col, coo.data.astype(float),
                                Vocabulary(np.arange(X.shape[0])),
                                Vocabulary(np.arange(X.shape[1])))


def implicit_s_per_iter(C, threads: int, iters: int, seed: int) -> float:
    """Wall seconds per iteration of implicit's ALS (64 factors, conjugate gradient, its
    default; training loss off) fitted for ``iters`` iterations on the confidences ``C``."""
    import implicit

    m = implicit.cpu.als.AlternatingLeastSquares(
        factors=64, regularization=1.0, iterations=iters, num_threads=threads,
        calculate_training_loss=False, random_state=seed)
    t0 = time.perf_counter()
    m.fit(C, show_progress=False)
    return (time.perf_counter() - t0) / iters


def _interleaved(C, tr, lik, threads, rounds, iters, row_block) -> dict:
    """``rounds`` rounds, each timing ``iters`` implicit ALS iterations and, right after,
    ``iters`` Gibbs sweeps (exact, and with ``row_block`` when given) in this process:
    the ratio of each round compares the two under the same machine load, so the VM's
    drift between rounds (implicit's iteration has ranged 0.16-0.34 s here) cancels.
    The first Gibbs fit of each kind is a warm-up (compile) and is not counted."""
    import numpy as np

    import bayesmf

    kinds = [("exact", None)] + ([(f"row_block {row_block}", row_block)] if row_block else [])

    def gibbs(rb, seed):
        post = bayesmf.BayesMF(method="gibbs", rank=64, likelihood=lik, num_samples=iters,
                               num_warmup=0, seed=seed, store_draws=False,
                               **({"row_block": rb} if rb else {})).fit(tr).posterior
        return post.attrs["seconds_per_sweep"]

    for _, rb in kinds:
        gibbs(rb, 99)                                   # compile, not counted
    rec = {"implicit": [], **{k: [] for k, _ in kinds}}
    for r in range(rounds):
        rec["implicit"].append(implicit_s_per_iter(C, threads, iters, r))
        for k, rb in kinds:
            rec[k].append(gibbs(rb, r))
    imp = np.asarray(rec["implicit"])
    out = {"rounds": rounds, "per_round": rec, "implicit_als_s_per_iter": float(np.median(imp))}
    for k, _ in kinds:
        ratio = np.asarray(rec[k]) / imp
        out[k] = {"s_per_sweep": float(np.median(rec[k])), "ratio_median": float(np.median(ratio)),
                  "ratio_min": float(ratio.min()), "ratio_max": float(ratio.max())}
    out["load_end"] = os.getloadavg()
    return out


def child(threads: int, split_name: str, repeats: int, iters: int, row_block=None,
          interleave=False) -> dict:
    sys.path.insert(0, "/work/shared/bench")
    import implicit_peers as ip  # noqa: F401  (pins BLAS to 1 thread; re-set below)
    import numpy as np
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    import implicit  # noqa: F401  (loaded after the thread limits are set)

    import bayesmf
    from bayesmf.infer.implicit_als import implicit_als
    from bayesmf.model.likelihoods import ImplicitGaussian

    split = ip.make_split(split_name, ip.DEFAULT_DATA, 0)
    X = split.train.tocsr()
    kind, alpha = ("linear", 4.0) if split_name.startswith("ml1m") else ("linear", 0.01)
    C = ip.reweight(X, kind, alpha).tocsr()
    out = {"split": split_name, "threads": threads, "nnz": int(X.nnz), "shape": X.shape,
           "load_start": os.getloadavg()}
    if interleave:
        return out | _interleaved(C, tr_of(X), ImplicitGaussian(alpha=alpha, transform=kind),
                                  threads, repeats, iters, row_block)
    t_imp = []
    for r in range(repeats):
        t_imp.append(implicit_s_per_iter(C, threads, iters, r))
    out["implicit_als_s_per_iter"] = float(np.median(t_imp))
    _, _, info = implicit_als(C, 64, reg=1.0, iterations=iters, solver="cg", seed=0)
    out["bayesmf_implicit_als_cg_s_per_iter"] = float(np.median(info["seconds"]))
    tr = tr_of(X)
    lik = ImplicitGaussian(alpha=alpha, transform=kind)
    t_g = []
    for r in range(repeats):
        post = bayesmf.BayesMF(method="gibbs", rank=64, likelihood=lik, num_samples=iters,
                               num_warmup=0, seed=r, store_draws=False).fit(tr).posterior
        t_g.append(post.attrs["seconds_per_sweep"])
    out["gibbs_s_per_sweep"] = float(np.median(t_g))
    if row_block:  # subspace row draws (fit_gibbs row_block), same data, same process
        t_b = []
        for r in range(repeats):
            post = bayesmf.BayesMF(method="gibbs", rank=64, likelihood=lik, num_samples=iters,
                                   num_warmup=0, seed=r, store_draws=False,
                                   row_block=row_block).fit(tr).posterior
            t_b.append(post.attrs["seconds_per_sweep"])
        out["row_block"] = row_block
        out["gibbs_row_block_s_per_sweep"] = float(np.median(t_b))
        out["ratio_row_block_vs_implicit"] = (out["gibbs_row_block_s_per_sweep"]
                                              / out["implicit_als_s_per_iter"])
    out["ratio_gibbs_vs_implicit"] = out["gibbs_s_per_sweep"] / out["implicit_als_s_per_iter"]
    out["load_end"] = os.getloadavg()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", default="ml1m-loo,lastfm-80-20")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--row-block", type=int, default=None,
                    help="also time the Gibbs sweep with subspace row draws of this width")
    ap.add_argument("--interleave", action="store_true",
                    help="alternate implicit's fit and the Gibbs fits in rounds (--repeats "
                         "of them) in one process, and report the median per-round ratio")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "implicit_speed.md")
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(child(int(a.threads), a.splits, a.repeats, a.iterations,
                               a.row_block, a.interleave)))
        return 0
    rows = []
    for split in a.splits.split(","):
        for t in (int(x) for x in a.threads.split(",")):
            env = dict(os.environ)
            for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
                env[v] = str(t)
            if t == 1:
                env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen"
                                    "=false intra_op_parallelism_threads=1").strip()
            res = subprocess.run([sys.executable, __file__, "--child", "--splits", split,
                                  "--threads", str(t), "--repeats", str(a.repeats),
                                  "--iterations", str(a.iterations),
                                  *(["--row-block", str(a.row_block)] if a.row_block else []),
                                  *(["--interleave"] if a.interleave else [])],
                                 capture_output=True, text=True, env=env, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)
    if a.interleave:
        return _write_interleaved(a, rows)
    lines = ["# Bayesian implicit ALS: seconds per Gibbs sweep vs implicit's ALS per iteration",
             "", f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} on this project's 2-core "
             "machine; command: `python benchmarks/bench_implicit_speed.py`. Rank 64, "
             f"median of {a.repeats} runs of {a.iterations} iterations/sweeps. implicit "
             "uses its default conjugate-gradient solver; the Gibbs sweep draws every row "
             "exactly (Cholesky).", "",
             "| split | threads | implicit ALS s/iter | bayesmf Gibbs s/sweep | ratio | "
             "bayesmf implicit_als (CG) s/iter | load start -> end |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['split']} ({r['nnz']:,} pairs) | {r['threads']} | "
                     f"{r['implicit_als_s_per_iter']:.3f} | {r['gibbs_s_per_sweep']:.3f} | "
                     f"**{r['ratio_gibbs_vs_implicit']:.2f}x** | "
                     f"{r['bayesmf_implicit_als_cg_s_per_iter']:.3f} | "
                     f"{r['load_start'][0]:.1f} -> {r['load_end'][0]:.1f} |")
    if a.row_block:
        lines += ["", f"With `row_block={a.row_block}` (subspace row draws, "
                  "`results/row_block.md`), same processes:", "",
                  "| split | threads | implicit ALS s/iter | Gibbs row_block s/sweep | ratio |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['split']} | {r['threads']} | {r['implicit_als_s_per_iter']:.3f} | "
                  f"{r['gibbs_row_block_s_per_sweep']:.3f} | "
                  f"**{r['ratio_row_block_vs_implicit']:.2f}x** |" for r in rows]
        lines.append("")
    a.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _write_interleaved(a, rows) -> int:
    cmd = "python benchmarks/bench_implicit_speed.py " + " ".join(sys.argv[1:])
    lines = ["# Bayesian implicit ALS: seconds per Gibbs sweep vs implicit's ALS per iteration "
             "(interleaved rounds)", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} on this project's 2-core "
             f"machine; command: `{cmd}`. Rank 64. Each of {a.repeats} rounds times "
             f"{a.iterations} implicit ALS iterations (conjugate gradient, its default) and "
             f"right after {a.iterations} Gibbs sweeps of each kind, in one process; the "
             "ratio is taken per round, so the machine's drift between rounds cancels. "
             "Compile excluded (a warm-up fit of each kind first).", "",
             "| split | threads | rounds | implicit ALS s/iter (median) | Gibbs kind | "
             "s/sweep (median) | ratio per round: median (min-max) | load start -> end |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for k in [k for k in r if k == "exact" or k.startswith("row_block ")]:
            v = r[k]
            lines.append(f"| {r['split']} ({r['nnz']:,} pairs) | {r['threads']} | "
                         f"{r['rounds']} | {r['implicit_als_s_per_iter']:.3f} | {k} | "
                         f"{v['s_per_sweep']:.3f} | **{v['ratio_median']:.2f}x** "
                         f"({v['ratio_min']:.2f}-{v['ratio_max']:.2f}) | "
                         f"{r['load_start'][0]:.1f} -> {r['load_end'][0]:.1f} |")
    lines += ["", "Per round (s per implicit iteration; s per sweep of each kind):", ""]
    for r in rows:
        pr = r["per_round"]
        lines.append(f"- {r['split']}, {r['threads']} thread(s): " + "; ".join(
            f"{k} " + ", ".join(f"{x:.3f}" for x in v) for k, v in pr.items()))
    lines += ["", "<!-- readings: written by hand -->", ""]
    keep = ""
    if a.out.exists():
        old = a.out.read_text()
        if "<!-- readings: written by hand -->" in old:
            keep = old.split("<!-- readings: written by hand -->", 1)[1].lstrip("\n")
    a.out.write_text("\n".join(lines) + keep)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
