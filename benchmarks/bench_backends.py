#!/usr/bin/env python
"""Backends benchmark: the same BPMF model by Gibbs, NumPyro NUTS/SVI and PyMC NUTS/ADVI.

Part 1 -- MovieLens-100K official fold u1 (80k train / 20k test), rank 10. For every method:
test RMSE (clipped to 1..5, as ``shared/bench/peers.py``), 90% predictive coverage and
Gaussian NLPD (``peers.evaluate``: var = Var_s(m_s) + mean_s 1/tau_s), wall time, and for
MCMC methods max R-hat / min bulk ESS (``arviz_stats``) over *identifiable* quantities:
noise-free predictions of a fixed probe set of 50 test pairs, the mean user bias, the mean
item bias, mu and tau (raw factors are rotation-invariant: R-hat on them is meaningless).

Part 2 -- SVI with minibatches on ``ml1m-part`` (users 1-2999 of ML-1M, random 90/10
split of peers.py): time to ELBO convergence, steps, test RMSE/coverage/NLPD.

Writes ``benchmarks/results/backends.md`` and ``backends.json`` (merged with earlier runs
of other methods, so methods can be run one at a time). Settings are printed in the table.

  python benchmarks/bench_backends.py                         # all, default settings
  python benchmarks/bench_backends.py --methods gibbs,svi      # a subset
  python benchmarks/bench_backends.py --nuts-samples 200 --nuts-warmup 200
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # folder holding shared/
sys.path.insert(0, str(ROOT / "shared" / "bench"))

RESULTS = HERE / "results"
N_PROBE = 50


def _split(name):
    from peers import load_split

    from bayesmf.data.ratings import Ratings
    from bayesmf.data.vocab import Vocabulary

    sp = load_split(name)
    uv = Vocabulary(np.arange(sp.n_users), "user")
    iv = Vocabulary(np.arange(sp.n_items), "item")
    tr = Ratings.from_indices(sp.train[0], sp.train[1], sp.train[2], uv, iv)
    return sp, tr


def _diagnostics(post, probe):
    """Max R-hat and min bulk ESS over identifiable quantities (MCMC only)."""
    from arviz_stats import ess, rhat

    if post.n_chains < 2 or post.method in ("svi", "pymc-advi", "map"):
        return {}
    u, i = probe
    m, _ = post.pair_moments(u, i)
    C, D = post.n_chains, post.n_draws
    q = {"pred": m.reshape(C, D, -1),
         "mean_bu": post.draws["bu"].mean(-1), "mean_bi": post.draws["bi"].mean(-1),
         "mu": post.draws["mu"], "tau": post.draws["tau"]}
    out = {}
    for n, a in q.items():
        a = np.asarray(a, np.float64)
        if np.ptp(a) == 0:
            continue
        out[f"rhat_{n}"] = float(np.nanmax(np.asarray(rhat(a))))
        out[f"ess_{n}"] = float(np.nanmin(np.asarray(ess(a, method="bulk"))))
    return out


def _evaluate(sp, post):
    from peers import evaluate

    mean, std, *_ = post.summarize_indices(sp.test[0], sp.test[1])
    return evaluate(sp, {"mean": mean, "var": std ** 2})


def run_method(name, opts, sp, tr, spec, probe, seed=0):
    from bayesmf.infer import get_method

    t0 = time.perf_counter()
    post = get_method(name)(tr, spec, seed=seed, **opts)
    wall = time.perf_counter() - t0
    res = {"method": name, "settings": opts, "wall_s": wall}
    res.update(_evaluate(sp, post))
    res.update(_diagnostics(post, probe))
    for key in ("converged", "steps", "n_divergent", "mean_tree_depth"):
        if key in post.attrs:
            res[key] = post.attrs[key]
    if "timings" in post.attrs:
        res["timings"] = post.attrs["timings"]
    res["tau_mean"] = float(post.draws["tau"].mean())
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default="gibbs,nuts,pymc-nuts,svi,svi-lowrank,pymc-advi,svi-ml1m")
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--nuts-samples", type=int, default=150)
    ap.add_argument("--nuts-warmup", type=int, default=150)
    ap.add_argument("--nuts-depth", type=int, default=7)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--gibbs-samples", type=int, default=400)
    ap.add_argument("--gibbs-warmup", type=int, default=100)
    ap.add_argument("--vi-steps", type=int, default=5000)
    ap.add_argument("--ml1m-batch", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mark-not-run", action="append", default=[], metavar="KEY=REASON",
                    help="record a method as not run (with the reason) and rewrite the table")
    ap.add_argument("--quick", action="store_true", help="smoke run: gibbs, svi and "
                    "pymc-advi with few iterations; tables go to results/quick/")
    args = ap.parse_args(argv)
    global RESULTS
    if args.quick:
        RESULTS = RESULTS / "quick"
        args.methods, args.vi_steps = "gibbs,svi,pymc-advi", 300
        args.gibbs_samples, args.gibbs_warmup = 50, 50
    if args.mark_not_run:
        jpath = RESULTS / "backends.json"
        store = json.loads(jpath.read_text()) if jpath.exists() else {"ml100k-u1": {}}
        for kv in args.mark_not_run:
            key, reason = kv.split("=", 1)
            ds = "ml1m-part" if key == "svi-ml1m" else "ml100k-u1"
            store.setdefault(ds, {})[key] = {"method": key, "not_run": reason}
        jpath.write_text(json.dumps(store, indent=1, default=str))
        write_markdown(store, RESULTS / "backends.md")
        return

    from bayesmf.model.spec import ModelSpec

    spec = ModelSpec(rank=args.rank)
    methods = [m for m in args.methods.split(",") if m]
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / "backends.json"
    store = json.loads(jpath.read_text()) if jpath.exists() else {"ml100k-u1": {}, "ml1m-part": {}}
    store["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "note": "2 CPU cores shared with other jobs: wall times are noisy"}

    mcmc = dict(num_samples=args.nuts_samples, num_warmup=args.nuts_warmup,
                num_chains=args.chains, max_tree_depth=args.nuts_depth)
    plan = {
        "gibbs": ("gibbs", dict(num_samples=args.gibbs_samples, num_warmup=args.gibbs_warmup,
                                num_chains=args.chains)),
        "nuts": ("nuts", dict(mcmc)),
        "pymc-nuts": ("pymc-nuts", dict(mcmc)),
        "svi": ("svi", dict(num_steps=args.vi_steps, num_samples=400, guide="normal")),
        "svi-lowrank": ("svi", dict(num_steps=args.vi_steps, num_samples=400, guide="lowrank")),
        "pymc-advi": ("pymc-advi", dict(num_steps=args.vi_steps, num_samples=400)),
    }
    sp = tr = probe = None
    for key in methods:
        if key == "svi-ml1m":
            continue
        method, opts = plan[key]
        if sp is None:
            sp, tr = _split("ml100k-u1")
            rng = np.random.default_rng(0)
            known = ~sp.cold_mask
            pick = rng.choice(np.flatnonzero(known), N_PROBE, replace=False)
            probe = (sp.test[0][pick], sp.test[1][pick])
        if method == "gibbs" and importlib.util.find_spec("bayesmf.infer.gibbs") is None:
            store["ml100k-u1"][key] = {"method": key, "not_run": "bayesmf.infer.gibbs missing"}
            continue
        print(f"[ml100k-u1] {key} {opts}", flush=True)
        try:
            res = run_method(method, opts, sp, tr, spec, probe, args.seed)
        except Exception as exc:  # record and continue with the other methods
            res = {"method": key, "not_run": f"{type(exc).__name__}: {exc}"}
        res["label"] = key
        print(json.dumps(res, default=str), flush=True)
        store["ml100k-u1"][key] = res
        jpath.write_text(json.dumps(store, indent=1, default=str))
    if "svi-ml1m" in methods:
        sp1, tr1 = _split("ml1m-part")
        opts = dict(num_steps=args.vi_steps * 4, num_samples=200, batch_size=args.ml1m_batch,
                    learning_rate=0.01, tol=1e-4, window=200)
        print(f"[ml1m-part] svi {opts}", flush=True)
        res = run_method("svi", opts, sp1, tr1, spec, None, args.seed)
        res["label"] = "svi-minibatch"
        print(json.dumps(res, default=str), flush=True)
        store["ml1m-part"]["svi-minibatch"] = res
        jpath.write_text(json.dumps(store, indent=1, default=str))
    write_markdown(store, RESULTS / "backends.md")


def _fmt(x, p=4):
    if x is None:
        return "-"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, float):
        return f"{x:.{p}g}"
    return str(x)


def write_markdown(store, path):
    lines = ["# Backends benchmark (bench_backends.py)", "",
             "Same BPMF model (biases, Normal-Wishart factor prior via Bartlett for NUTS/PyMC,",
             "Gibbs conjugate), rank 10. RMSE clipped to 1..5; cov90 / NLPD from a Gaussian",
             "with the posterior predictive mean and variance (parameter + noise).",
             "R-hat (max) and bulk ESS (min) over identifiable quantities: 50 probe-pair",
             "predictions, mean user/item bias, mu, tau. 2 shared CPU cores: wall times are",
             "noisy single runs.", ""]
    for ds, title in (("ml100k-u1", "MovieLens-100K u1"), ("ml1m-part", "ML-1M users 1-2999 (minibatch SVI)")):
        rows = store.get(ds, {})
        if not rows:
            continue
        lines += [f"## {title}", "",
                  "| method | settings | RMSE | cov90 | NLPD | wall s | R-hat pred | ESS pred | R-hat tau | ESS tau | converged / steps | note |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for key, r in rows.items():
            if "not_run" in r:
                lines.append(f"| {key} | - | - | - | - | - | - | - | - | - | - | not run: {r['not_run']} |")
                continue
            st = r.get("settings", {})
            sset = ", ".join(f"{k}={v}" for k, v in st.items())
            conv = (f"{r.get('converged')} / {r.get('steps')}" if "steps" in r else "-")
            note = ""
            if "n_divergent" in r and r["n_divergent"] is not None:
                note = f"divergent {r['n_divergent']}"
            if "mean_tree_depth" in r:
                note += f", tree depth {r['mean_tree_depth']:.1f}"
            lines.append(
                f"| {key} | {sset} | {_fmt(r.get('rmse'))} | {_fmt(r.get('coverage90'), 3)} | "
                f"{_fmt(r.get('nlpd'))} | {_fmt(r.get('wall_s'), 3)} | {_fmt(r.get('rhat_pred'), 3)} | "
                f"{_fmt(r.get('ess_pred'), 3)} | {_fmt(r.get('rhat_tau'), 3)} | "
                f"{_fmt(r.get('ess_tau'), 3)} | {conv} | {note} |")
        lines.append("")
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
