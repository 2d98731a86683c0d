#!/usr/bin/env python
"""bayesmf BPMF Gibbs vs smurff (BPMF) and myFM (Gibbs FM) on the same splits, same run.

    .venv-bench/bin/python benchmarks/bench_gibbs.py [--quick] [--splits ml100k,ml1m10,ml1m32]

Splits and metrics come from ``../shared/bench/peers.py`` (``load_split``, ``evaluate``,
``mixture_metrics``, ``run_smurff``, ``run_myfm``), so the numbers are defined exactly as
for the peers: RMSE of clipped means, 90% coverage and NLPD of the Gaussian
``N(mean, var_over_draws + mean(1/tau))``; the exact mixture versions are in the JSON.

Per split and method: quality run (peers with their harness settings: smurff 200 burn-in
+ 300 samples, myFM 300 iterations keeping 250; bayesmf ``--warmup`` + ``--samples``
sweeps), then ``--repeats`` short **timing** runs, interleaved between the methods, whose
median seconds per sweep/iteration is reported (bayesmf excludes compilation, reported
separately; the peers' figure is fit wall time / iterations). Peak RSS is sampled with
psutil during each quality run (the process's resident size; it includes what earlier
methods left allocated). Writes ``benchmarks/results/gibbs.md`` and ``gibbs.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # the folder that holds shared/
sys.path.insert(0, str(ROOT / "shared" / "bench"))

import peers  # noqa: E402

from bayesmf.data.ratings import Ratings  # noqa: E402
from bayesmf.data.vocab import Vocabulary  # noqa: E402
from bayesmf.infer.gibbs import fit_gibbs, streamed_predictions  # noqa: E402
from bayesmf.model.spec import ModelSpec  # noqa: E402


class PeakRSS:
    """Polls the process RSS in a thread; ``peak`` in MiB."""

    def __enter__(self):
        import psutil

        self.proc = psutil.Process()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = False
        self.t = threading.Thread(target=self._poll, daemon=True)
        self.t.start()
        return self

    def _poll(self):
        while not self._stop:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def __exit__(self, *exc):
        self._stop = True
        self.t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def peak_mib(self):
        return self.peak / 2 ** 20

    @property
    def delta_mib(self):
        return (self.peak - self.base) / 2 ** 20


def to_ratings(split):
    u, i, r = split.train
    return Ratings.from_indices(u, i, r, Vocabulary(np.arange(split.n_users)),
                                Vocabulary(np.arange(split.n_items)))


def run_bayesmf(split, rank, warmup, samples, seed=0, chains=1):
    train = to_ratings(split)
    tu, ti, _ = split.test
    t0 = time.perf_counter()
    post = fit_gibbs(train, ModelSpec(rank=rank), seed=seed, num_samples=samples,
                     num_warmup=warmup, num_chains=chains, predict_pairs=(tu, ti))
    wall = time.perf_counter() - t0
    sp = streamed_predictions(post)
    out = {"mean": sp["mean"], "var": sp["var"]}
    m, _ = post.pair_moments(tu, ti)
    res = peers.evaluate(split, out)
    res.update(peers.mixture_metrics(split.test[2], m, post.flat("tau")))
    a = post.attrs
    res.update(fit_s=wall, compile_s=a["compile_seconds"], s_per_iter=a["seconds_per_sweep"],
               n_iter_total=a["settings"]["n_sweeps"], noise_std=float(np.sqrt(sp["noise_var"])))
    return res


def time_bayesmf(split, rank, samples):
    """A timing run with the quality run's shapes (same kept-draw buffers and pairs), so
    the compiled driver is reused: ``samples`` sweeps, no warm-up."""
    train = to_ratings(split)
    tu, ti, _ = split.test
    post = fit_gibbs(train, ModelSpec(rank=rank), seed=1, num_samples=samples, num_warmup=0,
                     predict_pairs=(tu, ti))
    return post.attrs["seconds_per_sweep"], post.attrs["compile_seconds"]


PEERS = {"smurff": peers.run_smurff, "myfm": peers.run_myfm}


def run_peer(name, split, cfg):
    out = PEERS[name](split, cfg)
    res = peers.evaluate(split, out)
    res.update(fit_s=out["fit"].wall, s_per_iter=out["fit"].wall / out["n_iter"],
               n_iter_total=out["n_iter"], noise_std=out.get("extra", {}).get("noise_std"))
    return res


def bench_split(name, rank, args, log):
    split = peers.load_split(name, 0)
    cfg = {"seed": 0, "rank": rank, "threads": os.cpu_count(), "quick": args.quick,
           "myfm_iter": (60, 40) if args.quick else (300, 250),
           "smurff_iter": (20, 40) if args.quick else (200, 300)}
    rows = {}
    for meth in ["bayesmf"] + args.peers:
        log(f"[{name} r{rank}] {meth} quality run ...")
        with PeakRSS() as mem:
            if meth == "bayesmf":
                res = run_bayesmf(split, rank, args.warmup, args.samples)
            else:
                res = run_peer(meth, split, cfg)
        res.update(peak_rss_mib=mem.peak_mib, rss_increase_mib=mem.delta_mib)
        rows[meth] = res
        log(f"[{name} r{rank}] {meth}: rmse={res['rmse']:.4f} cov90={res['coverage90']:.3f} "
            f"nlpd={res['nlpd']:.3f} s/it={res['s_per_iter']:.4f}")
    # timing repeats, interleaved (short runs)
    tcfg = dict(cfg, myfm_iter=(args.timing_iters, args.timing_iters // 2),
                smurff_iter=(args.timing_iters // 2, args.timing_iters - args.timing_iters // 2))
    times = {m: [rows[m]["s_per_iter"]] for m in rows}  # the quality run is one sample
    compiles = []
    for rep in range(args.repeats):
        for meth in rows:
            if meth == "bayesmf":
                s, c = time_bayesmf(split, rank, args.samples)
                compiles.append(c)
            else:
                out = PEERS[meth](split, tcfg)
                s = out["fit"].wall / out["n_iter"]
            times[meth].append(s)
        log(f"[{name} r{rank}] timing repeat {rep + 1}: "
            + ", ".join(f"{m}={times[m][-1]:.4f}" for m in times))
    for m in rows:
        rows[m]["s_per_iter_repeats"] = times[m]
        rows[m]["s_per_iter_median"] = float(np.median(times[m]))
    rows["bayesmf"]["compile_s_repeats"] = compiles
    return {"dataset": name, "rank": rank, "split": split.info, "results": rows}


def environment():
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:15]
    except OSError:
        lscpu = []
    from importlib import metadata

    vers = {}
    for lib in ("bayesmf", "jax", "jaxlib", "numpy", "myfm", "smurff"):
        try:
            vers[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            vers[lib] = None
    return {"python": platform.python_version(), "cpus": os.cpu_count(), "lscpu": lscpu,
            "loadavg_start": os.getloadavg(), "versions": vers}


def fmt(x, nd=4):
    return "n/a" if x is None else f"{x:.{nd}f}"


def markdown(doc):
    L = ["# bayesmf Gibbs vs smurff / myFM (same run)", "",
         f"Date {doc['date']}; command `{doc['command']}`; load average at start "
         f"{doc['environment']['loadavg_start']} (shared 2-core machine: timings are noisy, "
         "compare the ratios and medians of one run).", "",
         "CPU: " + "; ".join(x.strip() for x in doc["environment"]["lscpu"]
                            if x.startswith(("Model name", "CPU(s)", "Thread"))), "",
         f"bayesmf: {doc['config']['warmup']} warm-up + {doc['config']['samples']} kept sweeps, "
         "1 chain, float32; smurff 200+300, myFM 300 (keep 250) (harness settings; "
         "--quick: smurff 20+40, myFM 60/40). s/it median = median over the quality run and "
         f"{doc['config']['repeats']} interleaved timing runs (peers: "
         f"{doc['config']['timing_iters']} iterations; bayesmf: as many sweeps as kept "
         "samples, same compiled driver; bayesmf always without compilation).", "",
         "| split | rank | method | RMSE | cov90 | NLPD | NLPD mix | s/it median | ratio to "
         "faster peer | compile s | peak RSS MiB |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
    for blk in doc["blocks"]:
        res = blk["results"]
        peer_t = [res[m]["s_per_iter_median"] for m in res if m != "bayesmf"]
        fastest = min(peer_t) if peer_t else None
        for m, r in res.items():
            ratio = r["s_per_iter_median"] / fastest if fastest else None
            L.append(f"| {blk['dataset']} | {blk['rank']} | {m} | {fmt(r['rmse'])} | "
                     f"{fmt(r['coverage90'], 3)} | {fmt(r['nlpd'], 3)} | "
                     f"{fmt(r.get('nlpd_mixture'), 3)} | {fmt(r['s_per_iter_median'])} | "
                     f"{fmt(ratio, 2)} | "
                     f"{fmt(r.get('compile_s'), 1) if m == 'bayesmf' else '-'} | "
                     f"{r['peak_rss_mib']:.0f} |")
    if doc.get("summary"):
        L += ["", "## ML-100K u1..u5 means", "", "| method | RMSE | cov90 | NLPD | s/it median |",
              "|---|---|---|---|---|"]
        for m, s in doc["summary"].items():
            L.append(f"| {m} | {fmt(s['rmse'])} | {fmt(s['coverage90'], 3)} | "
                     f"{fmt(s['nlpd'], 3)} | {fmt(s['s_per_iter_median'])} |")
    return "\n".join(L) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="u1 only, short runs")
    p.add_argument("--splits", default="ml100k,ml1m10,ml1m32")
    p.add_argument("--peers", default="smurff,myfm")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--timing-iters", type=int, default=None)
    p.add_argument("--out", type=Path, default=HERE / "results" / "gibbs")
    a = p.parse_args(argv)
    a.peers = [x for x in a.peers.split(",") if x]
    a.warmup = a.warmup if a.warmup is not None else (20 if a.quick else 200)
    a.samples = a.samples if a.samples is not None else (40 if a.quick else 300)
    a.timing_iters = a.timing_iters or (20 if a.quick else 60)
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    todo = []
    for s in a.splits.split(","):
        if s == "ml100k":
            todo += [(f"ml100k-u{k}", 10) for k in ((1,) if a.quick else range(1, 6))]
        elif s == "ml1m10":
            todo.append(("ml1m-part", 10))
        elif s == "ml1m32":
            todo.append(("ml1m-part", 32))
        else:
            p.error(f"unknown split group {s!r}")
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "command": "python benchmarks/bench_gibbs.py " + " ".join(sys.argv[1:] if argv is None
                                                                    else argv),
           "config": {"warmup": a.warmup, "samples": a.samples, "repeats": a.repeats,
                      "timing_iters": a.timing_iters, "quick": a.quick, "peers": a.peers},
           "environment": environment(), "blocks": []}
    for name, rank in todo:
        doc["blocks"].append(bench_split(name, rank, a, log))
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    folds = [b for b in doc["blocks"] if b["dataset"].startswith("ml100k")]
    if len(folds) > 1:
        doc["summary"] = {m: {key: float(np.mean([b["results"][m][key] for b in folds]))
                              for key in ("rmse", "coverage90", "nlpd", "s_per_iter_median")}
                          for m in folds[0]["results"]}
    doc["environment"]["loadavg_end"] = os.getloadavg()
    md = markdown(doc)
    print(md)
    a.out.with_suffix(".md").write_text(md)
    a.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    log(f"wrote {a.out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
