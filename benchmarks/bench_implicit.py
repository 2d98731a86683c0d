#!/usr/bin/env python
"""bayesmf's confidence-weighted implicit ALS on the implicit-feedback peer splits (issue 13).

Splits, tuning protocol and metrics come from the peer harness
``shared/bench/implicit_peers.py``; nothing is re-implemented here:

* ``make_split(name, data_dir, seed)`` builds ``ml1m-ncf`` / ``ml1m-loo`` / ``lastfm-80-20``;
* bayesmf is wrapped as an ``implicit_peers.Peer`` and tuned by the harness's own
  ``run_peer``: stage 1 over the peers' ``_als_grid`` (the grid their ``implicit-als`` runner
  uses: factors 64; ML-1M: regularization {0.1, 1, 10} x alpha {1, 4, 16}, binary weights;
  Last.fm: regularization {0.1, 1, 10} x {bin: alpha 2/8/32, log: 0.5/2/8, linear:
  0.001/0.01/0.1}; 15 iterations), stage 2 the peers' ALS refinement (factors 32 and 128
  around the stage-1 winner, plus 3x the regularization if the winner sits at the grid's
  largest), fitted on ``split.fit`` and scored on ``split.val``; selection by validation
  sampled NDCG@10 (ML-1M) or NDCG@20 (Last.fm). On the leave-one-out splits the setting
  preferred by validation *full-ranking* NDCG@10, if different, is refit too and reported as
  ``bayesmf-ials[full-tuned]``, exactly as for the peers;
* the chosen setting is refit on the whole ``split.train`` with ``seed = split seed`` and
  scored by ``evaluate(score_fn, ...)`` with ``score_fn(rows) = X[rows] @ Y.T``.

Confidence convention (the peers' ``fit_implicit_als``): ``C = reweight(train, weighting,
alpha)``, i.e. ``c_ui = 1 + alpha * w(r_ui)`` on the observed pairs (w = 1, log1p(count) or
count), passed as the confidence matrix of ``bayesmf.infer.implicit_als.implicit_als``. The
solver is ``"cg"`` with ``--cg-steps`` (default 3) warm-started conjugate-gradient steps per
row, like implicit's default CPU solver; ``--solver cholesky`` runs the exact solve instead.

Timing: one thread (the harness forces BLAS/OpenMP to one thread when it is imported, which
happens before numpy is loaded). ``fit s`` is the wall / CPU time of the final fit as the
harness measures it; it includes the objective that ``implicit_als`` evaluates after every
sweep (``loss s``). ``s/iter`` is the median time of one sweep (users then items) without it.

The peers' figures in the output are *reference figures from an earlier run* (copied from
``shared/bench/README.md``, seed 0, same kind of 2-core machine), not a same-run comparison.
``implicit`` itself is timed in this process only when it is importable (``--same-run-peer``).

    .venv/bin/python benchmarks/bench_implicit.py --splits ml1m-ncf,ml1m-loo,lastfm-80-20
    .venv/bin/python benchmarks/bench_implicit.py --splits lastfm-80-20 --no-save   # print only

Several processes (one split each) may run side by side: each merges its splits into
``results/implicit_first.json`` under a file lock and rebuilds ``implicit_first.md``.
"""

from __future__ import annotations

import sys

sys.path.insert(0, "/work/shared/bench")
import implicit_peers as ip  # noqa: E402  -- first: it pins BLAS/OpenMP to one thread

import argparse  # noqa: E402
import fcntl  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from importlib import metadata  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bayesmf.infer.implicit_als import implicit_als  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
NAME = "bayesmf-ials"

# Reference figures from shared/bench/README.md (seed 0, an earlier run on a 2-core machine
# of this kind, one thread); NOT measured in this run.
REFERENCE = {
    "ml1m-ncf": [
        ("implicit-als", 0.7267, 0.4489, 0.0960, 0.0487, 7.0),
        ("cornac-ease", 0.7182, 0.4511, 0.1089, 0.0545, 6.3),
        ("implicit-als[full-tuned]", 0.7129, 0.4423, 0.1031, 0.0515, 7.5),
        ("cornac-ease[full-tuned]", 0.6974, 0.4434, 0.1121, 0.0552, 6.4),
        ("cornac-bpr", 0.7022, 0.4167, 0.0806, 0.0401, 78.8),
        ("mostpop", 0.4535, 0.2543, 0.0414, 0.0204, 0.0),
        ("published: NeuMF with pre-training (He et al. 2017)", 0.726, 0.445, None, None, None),
        ("published: tuned dot-product MF (Rendle et al. 2020)", 0.7294, 0.4523, None, None,
         None),
    ],
    "ml1m-loo": [
        ("implicit-als", 0.8366, 0.6036, 0.2480, 0.1356, 7.3),
        ("cornac-ease", 0.8313, 0.6029, 0.2604, 0.1510, 6.5),
        ("implicit-als[full-tuned]", 0.8268, 0.5975, 0.2464, 0.1385, 6.4),
        ("cornac-ease[full-tuned]", 0.8141, 0.5944, 0.2624, 0.1511, 6.4),
        ("cornac-bpr", 0.8200, 0.5602, 0.1985, 0.1083, 58.7),
        ("mostpop", 0.5507, 0.3243, 0.0786, 0.0424, 0.0),
    ],
    "lastfm-80-20": [  # Recall@20, NDCG@20, Precision@10, fit CPU s
        ("cornac-ease", 0.2734, 0.2784, 0.1902, 16.3),
        ("implicit-als", 0.2687, 0.2748, 0.1899, 2.0),
        ("cornac-bpr", 0.2652, 0.2592, 0.1839, 19.2),
        ("itemknn-cosine", 0.2482, 0.2541, 0.1705, 0.6),
        ("mostpop", 0.1024, 0.0979, 0.0684, 0.0),
    ],
}
LOO_COLS = ["sampled_HR@10", "sampled_NDCG@10", "HR@10", "NDCG@10"]
MULTI_COLS = ["Recall@20", "NDCG@20", "Precision@10"]
# Targets of issue 13 (metric -> minimum).
TARGETS = {
    "ml1m-ncf": {"sampled_HR@10": 0.74, "sampled_NDCG@10": 0.46, "HR@10": 0.1121,
                 "NDCG@10": 0.0552},
    "ml1m-loo": {"sampled_HR@10": 0.8366, "sampled_NDCG@10": 0.6036, "HR@10": 0.2624,
                 "NDCG@10": 0.1511},
    "lastfm-80-20": {"Recall@20": 0.2734, "NDCG@20": 0.2784},
}


class Recorder:
    """Keeps the ``info`` of every fit, so the final fits' timings can be reported."""

    def __init__(self):
        self.fits: list[dict] = []

    def fit_fn(self, solver: str, cg_steps: int):
        def fit(X, p, seed):
            C = ip.reweight(X, p["weighting"], p["alpha"]).tocsr()
            U, V, info = implicit_als(C, p["factors"], reg=p["regularization"],
                                      iterations=p["iterations"], solver=p.get("solver", solver),
                                      cg_steps=p.get("cg_steps", cg_steps), seed=seed,
                                      dtype=np.float32)
            self.fits.append({"params": dict(p), "nnz": int(X.nnz), "info": info})
            return lambda users: U[users] @ V.T
        return fit


def _grid(solver: str, cg_steps: int, iterations: int | None, regs=None, alphas=None):
    """The peers' ``_als_grid`` with the solver added; ``regs`` / ``alphas`` (if given) keep
    only the settings whose regularization / alpha is listed (a smaller grid)."""
    def grid(split_name):
        out = []
        for p in ip._als_grid(split_name):
            if (regs and p["regularization"] not in regs) or (alphas and p["alpha"] not in alphas):
                continue
            p = dict(p, solver=solver, cg_steps=cg_steps)
            if iterations is not None:
                p["iterations"] = iterations
            out.append(p)
        return out
    return grid


def _timing(info: dict) -> dict:
    sec = info["seconds"]
    return {"seconds_per_iteration_median": round(float(np.median(sec)), 4),
            "seconds_sweeps_total": round(float(np.sum(sec)), 3),
            "seconds_loss_total": round(float(info["seconds_loss"]), 3),
            "seconds_total": round(float(info["seconds_total"]), 3),
            "iterations": info["iterations"],
            "loss_first": info["loss"][0], "loss_last": info["loss"][-1],
            "loss_monotone": bool(np.all(np.diff(info["loss"]) <= 1e-6 * abs(info["loss"][0])))}


def run_split(name: str, args, log=print) -> dict:
    t0 = time.perf_counter()
    split = ip.make_split(name, args.data, args.seed)
    log(f"== {name} seed {args.seed}: {split.info} (built in {time.perf_counter() - t0:.1f}s)")
    rec = Recorder()
    peer = ip.Peer(NAME, "bayesmf", "implicit_als", rec.fit_fn(args.solver, args.cg_steps),
                   _grid(args.solver, args.cg_steps, args.iterations, args.regs, args.alphas),
                   (lambda b, s: []) if args.no_refine else ip.PEERS["implicit-als"].refine,
                   note=f"bayesmf.infer.implicit_als, solver={args.solver}"
                        + (f" ({args.cg_steps} CG steps)" if args.solver == "cg" else "")
                        + ", c = 1 + alpha*w(r)")
    t_all = time.perf_counter()
    res = ip.run_peer(peer, split, log=lambda s: log(s))
    finals = [f for f in rec.fits if f["nnz"] == split.train.nnz]
    for key, r in res.items():
        match = [f for f in finals if f["params"] == r["settings"]]
        if match:
            r["als_timing"] = _timing(match[-1]["info"])
        for t in r["tuning"].get("trials", []):
            t["val"] = {k: v for k, v in t["val"].items()}
    out = {"split_info": split.info, "results": res,
           "wall_seconds_split_total": round(time.perf_counter() - t_all, 1),
           "load_average_end": [round(x, 2) for x in os.getloadavg()]}
    if args.same_run_peer:
        out["same_run_peer"] = same_run_implicit(split, res[NAME]["settings"], log)
    return out


def same_run_implicit(split, p, log) -> dict:
    """implicit's ALS (the peers' runner) and bayesmf on the same setting, same process."""
    try:
        import implicit  # noqa: F401
    except ImportError:
        log("  implicit is not importable here: same-run comparison skipped")
        return {"skipped": "implicit not installed in this environment"}
    out = {}
    for lib, fn in (("implicit", ip.fit_implicit_als),
                    ("bayesmf", Recorder().fit_fn(p["solver"], p["cg_steps"]))):
        t0, c0 = time.perf_counter(), time.process_time()
        scorer = fn(split.train, p, split.seed)
        out[lib] = {"fit_seconds": round(time.perf_counter() - t0, 3),
                    "fit_cpu_seconds": round(time.process_time() - c0, 3),
                    "metrics": ip.evaluate(scorer, split.train, split.test, split.priority,
                                           split.kind)}
        log(f"  same-run {lib}: {out[lib]}")
    return out


def environment() -> dict:
    env = {"python": platform.python_version(), "platform": platform.platform(),
           "threads": 1, "cpu_count": os.cpu_count(), "libraries": {}}
    for k in ("bayesmf", "numpy", "scipy", "implicit"):
        try:
            env["libraries"][k] = metadata.version(k)
        except metadata.PackageNotFoundError:
            pass
    return env


def _f(v, nd=4):
    return "—" if v is None else f"{v:.{nd}f}"


def render(doc: dict) -> str:
    L = ["# bayesmf implicit ALS on the implicit-feedback peer splits (first run)", "",
         "bayesmf's `implicit_als` (Hu-Koren-Volinsky confidence-weighted ALS) on the fixed "
         "splits of `shared/bench/implicit_peers.py`, tuned, refit and scored by that "
         "harness's own `run_peer` / `evaluate` (same validation carve, same metric code; the "
         "grid and refinement of its `implicit-als` runner, or the subset named by `--regs` / "
         "`--alphas` / `--no-refine` in a split's command). "
         f"Seed {doc['seed']}; one thread per process; generated {doc['generated']}.", "",
         "**The peer rows are reference figures copied from `shared/bench/README.md` (an "
         "earlier run, seed 0, same kind of 2-core machine, one thread), not measured in this "
         "run**; their time column is that run's fit CPU seconds. Only the bayesmf rows were "
         "measured here.", ""]
    for name in ("ml1m-ncf", "ml1m-loo", "lastfm-80-20"):
        if name not in doc["splits"]:
            continue
        s = doc["splits"][name]
        loo = name != "lastfm-80-20"
        cols = LOO_COLS if loo else MULTI_COLS
        L += [f"## `{name}`", "",
              "Split: " + ", ".join(f"{k}={v:,}" for k, v in s["split_info"].items()), "",
              f"Command: `{s.get('command', '?')}`", "",
              "| method | " + " | ".join(cols) + " | fit s (wall / cpu) | s/iter | setting |",
              "|---|" + "---|" * len(cols) + "---|---|---|"]
        for key, r in s["results"].items():
            m = r["metrics"]
            t = r.get("als_timing", {})
            st = r["settings"]
            setting = (f"factors={st['factors']}, reg={st['regularization']}, "
                       f"alpha={st['alpha']}, w={st['weighting']}, it={st['iterations']}, "
                       f"{st['solver']}" + (f"/{st['cg_steps']}" if st["solver"] == "cg" else "")
                       + f" ({r['tuning']['selected_by'] if 'selected_by' in r['tuning'] else ''}"
                       f", {r['tuning']['n_settings']} settings)")
            L.append(f"| **{key}** (this run) | " + " | ".join(_f(m.get(c)) for c in cols)
                     + f" | {r['fit_seconds']:.1f} / {r['fit_cpu_seconds']:.1f} | "
                     f"{_f(t.get('seconds_per_iteration_median'), 3)} | {setting} |")
        for row in REFERENCE[name]:
            vals, sec = row[1:-1], row[-1]
            L.append(f"| {row[0]} (reference) | " + " | ".join(_f(v) for v in vals)
                     + f" | cpu {_f(sec, 1)} | — | — |")
        main = s["results"].get(NAME, {}).get("metrics", {})
        checks = []
        for metric, goal in TARGETS[name].items():
            got = main.get(metric)
            ok = got is not None and got >= goal
            checks.append(f"{metric} {_f(got)} vs >= {goal} {'met' if ok else 'NOT met'}")
        ft = s["results"].get(NAME + ip.FULL_SUFFIX)
        L += ["", f"Issue 13 targets ({NAME}, the row selected by validation "
              f"{ip.MAIN_METRIC[name]}): " + "; ".join(checks)
              + "."]
        if ft is not None:
            fm = ft["metrics"]
            L.append(f"Full-ranking tuned row: HR@10 {_f(fm['HR@10'])}, NDCG@10 "
                     f"{_f(fm['NDCG@10'])} (targets {TARGETS[name]['HR@10']} / "
                     f"{TARGETS[name]['NDCG@10']}).")
        tm = s["results"].get(NAME, {}).get("als_timing")
        if tm:
            L.append(f"Final fit: {tm['iterations']} sweeps, {tm['seconds_sweeps_total']:.1f} s "
                     f"in sweeps + {tm['seconds_loss_total']:.1f} s computing the objective "
                     f"after each sweep; objective {tm['loss_first']:.6g} -> "
                     f"{tm['loss_last']:.6g} (monotone: {tm['loss_monotone']}). Whole split "
                     f"(tuning + refits + evaluation): {s['wall_seconds_split_total']:.0f} s "
                     f"wall; load average at the end {s['load_average_end']}.")
        sr = s.get("same_run_peer")
        if sr:
            if "skipped" in sr:
                L.append(f"Same-run comparison with `implicit`: skipped ({sr['skipped']}).")
            else:
                L.append("Same-run, same setting: " + "; ".join(
                    f"{k} fit {v['fit_seconds']:.1f} s wall / {v['fit_cpu_seconds']:.1f} s cpu"
                    for k, v in sr.items()) + ".")
        L.append("")
    L += ["fit s = wall / CPU time of the final fit on the whole training part, measured by the "
          "harness (includes the objective that `implicit_als` computes after every sweep); "
          "s/iter = median seconds of one sweep (users, then items) without it. Every "
          "validation score of the tuning is in `implicit_first.json`.", ""]
    return "\n".join(L)


def save(splits: dict, args, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    jpath = out.with_suffix(".json")
    with open(Path(tempfile.gettempdir()) / "bayesmf_implicit_first.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = json.loads(jpath.read_text()) if jpath.exists() else {"splits": {}}
        cmd = (".venv/bin/python benchmarks/bench_implicit.py --splits " + ",".join(splits)
               + (f" --seed {args.seed}" if args.seed else "")
               + (f" --solver {args.solver}" if args.solver != "cg" else "")
               + (f" --cg-steps {args.cg_steps}" if args.cg_steps != 3 else "")
               + (f" --iterations {args.iterations}" if args.iterations else "")
               + (" --regs " + ",".join(f"{v:g}" for v in args.regs) if args.regs else "")
               + (" --alphas " + ",".join(f"{v:g}" for v in args.alphas) if args.alphas else "")
               + (" --no-refine" if args.no_refine else "")
               + (" --same-run-peer" if args.same_run_peer else ""))
        for v in splits.values():
            v["command"] = cmd
        doc["splits"].update(splits)
        doc.update(seed=args.seed, environment=environment(),
                   generated=time.strftime("%Y-%m-%d %H:%M:%S"))
        jpath.write_text(json.dumps(doc, indent=1, default=float) + "\n")
        out.with_suffix(".md").write_text(render(doc))
    print(f"wrote {jpath} and {out.with_suffix('.md')}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", default="ml1m-ncf,ml1m-loo,lastfm-80-20",
                    help=f"comma list from {ip.SPLITS}")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=ip.DEFAULT_DATA)
    ap.add_argument("--solver", choices=["cg", "cholesky"], default="cg")
    ap.add_argument("--cg-steps", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=None,
                    help="override the grid's 15 iterations (smoke runs)")
    ap.add_argument("--regs", type=lambda v: [float(x) for x in v.split(",")], default=None,
                    help="keep only these regularization values of the peers' grid, e.g. 1,10")
    ap.add_argument("--alphas", type=lambda v: [float(x) for x in v.split(",")], default=None,
                    help="keep only these alpha values of the peers' grid, e.g. 1,4")
    ap.add_argument("--no-refine", action="store_true",
                    help="skip the peers' stage-2 refinement (factors 32/128, 3x reg)")
    ap.add_argument("--same-run-peer", action="store_true",
                    help="also fit implicit's ALS at the chosen setting in this process")
    ap.add_argument("--out", type=Path, default=RESULTS / "implicit_first.md")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--render-only", action="store_true",
                    help="rebuild the Markdown table from the JSON next to it, fit nothing")
    args = ap.parse_args(argv)
    if args.render_only:
        args.out.with_suffix(".md").write_text(
            render(json.loads(args.out.with_suffix(".json").read_text())))
        return 0
    names = [s for s in args.splits.split(",") if s]
    bad = set(names) - set(ip.SPLITS)
    if bad:
        ap.error(f"unknown splits {sorted(bad)}; choose from {list(ip.SPLITS)}")
    for name in names:
        res = run_split(name, args, log=lambda s: print(s, flush=True))
        if not args.no_save:
            save({name: res}, args, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
