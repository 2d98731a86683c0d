#!/usr/bin/env python
"""Gibbs, MAP (ALS) and minibatch SVI at 10M ratings on one machine (issue 16 item 1): the
ML-10M-shaped synthetic problem of ``_synth_ml10m.py``, rank 32, a random 10% held out.

    /usr/bin/time -v .venv/bin/python benchmarks/bench_scale_10m.py [--method gibbs]
        [--ratings 10000000] [--warmup 100 --samples 200] [--out benchmarks/results/scale_10m.md]
    .venv/bin/python benchmarks/bench_scale_10m.py --method map     # -> scale_10m_map.md
    .venv/bin/python benchmarks/bench_scale_10m.py --method svi [--svi-steps 6000
        --svi-batch 100000 --svi-lr 0.01 --svi-draws 100]          # -> scale_10m_svi.md

* ``gibbs``: ``--warmup`` + ``--samples`` sweeps, no stored factor draws, predictions of
  the held-out pairs streamed (``predict_pairs``).
* ``map``: ``fit_map(solver="als")`` with the library defaults (ridge ``reg_factors`` 12,
  ``reg_bias`` 3, stops when the relative decrease of the objective per sweep < tol);
  its predictive interval is the noise alone (``tau`` at its posterior mode given the
  residuals): a point estimate has no parameter uncertainty to add.
* ``svi``: ``fit_svi`` with a mean-field Normal guide and minibatches of ``--svi-batch``
  observed ratings per step (the likelihood term scaled by ``|Omega|/|B|``), at most
  ``--svi-steps`` steps (ELBO-window stopping rule of :mod:`bayesmf.infer.svi`), then
  ``--svi-draws`` guide draws.

Reports seconds per sweep / iteration / step, compile, total wall time, test RMSE and 90%
coverage of the moment-matched Gaussian predictive (mean and variance over draws plus the
noise variance), and the process's peak RSS (``resource.getrusage``).
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

Z90 = 1.6448536269514722


def pair_predictive(post, tu, ti, chunk: int = 100_000):
    """Moment-matched Gaussian predictive of index pairs from a Posterior's draws, in chunks:
    mean over draws, variance over draws + mean noise variance."""
    mean = np.empty(len(tu))
    var = np.empty(len(tu))
    noise = float(np.mean(post.noise_var()))
    for a in range(0, len(tu), chunk):
        m, v = post.pair_moments(tu[a:a + chunk], ti[a:a + chunk])
        mean[a:a + chunk] = m.mean(0)
        var[a:a + chunk] = m.var(0) + v.mean(0) + noise
    return mean, var


def run_gibbs(train, tu, ti, a):
    post = fit_gibbs(train, ModelSpec(rank=a.rank), seed=0, num_warmup=a.warmup,
                     num_samples=a.samples, store_draws=False, predict_pairs=(tu, ti))
    sp = streamed_predictions(post)
    at = post.attrs
    desc = (f"Gibbs rank {a.rank}, Gaussian, Normal-Wishart, {a.warmup} warm-up + "
            f"{a.samples} kept sweeps, 1 chain, `store_draws=False`, held-out predictions "
            "streamed.")
    rows = [("seconds per sweep", f"{at['seconds_per_sweep']:.2f}", "<= 2.5"),
            ("row parts per side (`row_parts`)", at["settings"].get("row_parts", 1), "-"),
            ("compile cache hit", at.get("compile_cached"), "-")]
    return sp["mean"], sp["var"], at["compile_seconds"], desc, rows


def run_map(train, tu, ti, a):
    from bayesmf.infer.map import fit_map

    post = fit_map(train, ModelSpec(rank=a.rank), seed=0, solver="als")
    mean, var = pair_predictive(post, tu, ti)
    at = post.attrs
    t = at["timings"]
    n_it = int(at["iterations"])
    desc = (f"MAP by ALS, rank {a.rank}, library defaults (ridge reg_factors "
            f"{post.spec.reg_factors}, reg_bias {post.spec.reg_bias}; engine "
            f"{at['engine']}); interval = noise only (point estimate).")
    rows = [("seconds per ALS sweep", f"{t['iterate_s'] / n_it:.2f}", "-"),
            ("ALS sweeps (converged)", f"{n_it} ({at.get('converged')})", "-"),
            ("stopping reason", at["stop_reason"], "-")]
    return mean, var, t.get("compile_s", 0.0), desc, rows


def run_svi(train, tu, ti, a):
    from bayesmf.infer.svi import fit_svi

    post = fit_svi(train, ModelSpec(rank=a.rank), seed=0, batch_size=a.svi_batch,
                   num_steps=a.svi_steps, learning_rate=a.svi_lr, num_samples=a.svi_draws)
    mean, var = pair_predictive(post, tu, ti)
    at = post.attrs
    t = at["timings"]
    desc = (f"SVI rank {a.rank}, mean-field Normal guide (`AutoNormal`), Adam lr "
            f"{a.svi_lr}, minibatches of {a.svi_batch:,} ratings, at most {a.svi_steps} "
            f"steps, {a.svi_draws} guide draws.")
    rows = [("seconds per step (incl. compile of the first window)",
             f"{t['fit_s'] / at['steps']:.4f}", "-"),
            ("steps (converged by the ELBO rule)", f"{at['steps']} ({at['converged']})", "-"),
            ("epochs (steps x batch / train size)",
             f"{at['steps'] * a.svi_batch / train.nnz:.1f}", "-"),
            ("guide draws", f"{t['draws_s']:.0f} s", "-")]
    return mean, var, 0.0, desc, rows


METHODS = {"gibbs": run_gibbs, "map": run_map, "svi": run_svi}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=sorted(METHODS), default="gibbs")
    ap.add_argument("--ratings", type=int, default=10_000_000)
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--svi-steps", type=int, default=6000)
    ap.add_argument("--svi-batch", type=int, default=100_000)
    ap.add_argument("--svi-lr", type=float, default=0.01)
    ap.add_argument("--svi-draws", type=int, default=100)
    ap.add_argument("--out", type=Path, default=None,
                    help="default results/scale_10m.md (gibbs), scale_10m_<method>.md")
    a = ap.parse_args(argv)
    out = a.out or HERE / "results" / ("scale_10m.md" if a.method == "gibbs"
                                       else f"scale_10m_{a.method}.md")
    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    d = synthetic_ml10m(0, a.ratings)
    n = len(d["rating"])
    train, (tu, ti, y) = train_test(d, 0.1)
    t0 = time.perf_counter()
    mean, var, compile_s, desc, rows = METHODS[a.method](train, tu, ti, a)
    fit_s = time.perf_counter() - t0
    rmse = float(np.sqrt(np.mean((mean - y) ** 2)))
    cov90 = float(np.mean(np.abs(y - mean) <= Z90 * np.sqrt(var)))
    total = time.perf_counter() - t_start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2  # KiB -> GiB
    lines = [f"# {a.method.upper()} at 10M ratings on this 2-core machine (issue 16 item 1)",
             "",
             f"Command: `python benchmarks/bench_scale_10m.py {' '.join(argv or sys.argv[1:])}`;"
             f" {time.ctime()}; load {load0:.1f} -> {os.getloadavg()[0]:.1f} (2 CPUs, CPU "
             "JAX, no GPU).", "",
             f"Problem: {n:,} ratings of {d['n_users']:,} users x {d['n_items']:,} items "
             f"(`_synth_ml10m.py`: heavy-tailed degrees, planted rank 32 + biases, noise sd "
             f"{d['truth']['noise_std']}), 90% train ({train.nnz:,}), 10% held out; " + desc,
             "", "| quantity | measured | target |", "|---|---|---|"]
    lines += [f"| {q} | {m} | {t} |" for q, m, t in rows[:1]]
    lines += [f"| peak RSS | {peak:.2f} GiB | < 8 GB |",
              f"| end to end (data build {d['seconds']:.0f} s + compile "
              f"{compile_s:.1f} s + fit + held-out predictions) | {total / 60:.1f} min | "
              + ("< 20 min |" if a.method == "gibbs" else "- |"),
              f"| test RMSE (noise floor {d['truth']['noise_std']}) | {rmse:.4f} | - |",
              f"| 90% coverage | {cov90:.3f} | - |",
              f"| fit wall (incl. held-out predictions) | {fit_s:.0f} s | - |"]
    lines += [f"| {q} | {m} | {t} |" for q, m, t in rows[1:]]
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
