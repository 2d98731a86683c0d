#!/usr/bin/env python
"""Effective sample size per second of held-out predictions: bayesmf Gibbs vs smurff (issue 16
item 5), same split, same run.

    .venv/bin/python benchmarks/bench_ess.py [--ranks 10,32] [--seeds 0,1] [--probe 2000]
        [--warmup 200 --samples 300] [--out benchmarks/results/ess]

Users pay for draws that mix, not for sweeps. Both samplers run one chain of ``--warmup``
burn-in + ``--samples`` kept sweeps (smurff's harness settings, ``../shared/bench/peers.py``
``run_smurff``: BPMF with Normal-Wishart priors, adaptive noise) on the ML-1M subset
(``ml1m-part``), and both keep their per-sample predictions of the same ``--probe`` held-out
pairs (drawn once with seed 0 from the test split): smurff's stored ``pred_all`` of each
kept sample, bayesmf's noise-free mean :math:`\\mu + b_u + b_i + U_u^\\top V_i` of each kept
draw (``Posterior.pair_moments``). These are identified quantities (rotation-invariant).

Per pair: bulk and tail ESS of the kept draws (``arviz_stats.ess``, one chain). Reported:
the median and the 10th percentile over pairs, ESS per sweep (the sampler's mixing,
independent of speed) and **ESS per second** = ESS / (kept sweeps x seconds per sweep of the
same run; bayesmf without compilation, reported separately; smurff: fit wall time / all
iterations, which includes its per-iteration predictions of the probe pairs). Also the ESS of
the noise precision (smurff's printed 2-digit ``Prec``, so only indicative there) and the
RMSE of the posterior-mean predictions of the probe pairs.
Writes ``<out>.md`` and ``<out>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # the folder that holds shared/
sys.path.insert(0, str(ROOT / "shared" / "bench"))
sys.path.insert(0, str(HERE))

import peers  # noqa: E402
from bench_gibbs import environment, to_ratings  # noqa: E402

from bayesmf.infer.gibbs import fit_gibbs  # noqa: E402
from bayesmf.model.spec import ModelSpec  # noqa: E402


def ess_summary(f: np.ndarray) -> dict:
    """``f (S, n)`` kept draws of n scalar quantities (one chain): bulk/tail ESS per column."""
    import arviz_stats as azs

    X = np.asarray(f, np.float64)[None]  # (1, S, n)
    bulk = np.asarray(azs.ess(X, chain_axis=0, draw_axis=1, method="bulk"), float)
    tail = np.asarray(azs.ess(X, chain_axis=0, draw_axis=1, method="tail",
                              prob=(0.05, 0.95)), float)
    return {"bulk": bulk, "tail": tail}


def probe_split(split: "peers.Split", n_probe: int) -> "peers.Split":
    tu, ti, ty = split.test
    pick = np.sort(np.random.default_rng(0).choice(len(ty), size=min(n_probe, len(ty)),
                                                   replace=False))
    return peers.Split(split.name, split.train, (tu[pick], ti[pick], ty[pick]),
                       split.n_users, split.n_items, split.scale,
                       dict(split.info, probe=f"{len(pick)} test pairs, seed 0"))


def run_bayesmf(split, rank, warmup, samples, seed):
    tu, ti, ty = split.test
    post = fit_gibbs(to_ratings(split), ModelSpec(rank=rank), seed=seed, num_warmup=warmup,
                     num_samples=samples)
    f, _ = post.pair_moments(tu, ti)  # (S, n) noise-free means of the kept draws
    a = post.attrs
    return {"f": f, "tau": post.flat("tau"), "s_per_sweep": a["seconds_per_sweep"],
            "compile_s": a["compile_seconds"], "row_parts": a["settings"].get("row_parts", 1)}


def run_smurff(split, rank, warmup, samples, seed):
    cfg = {"seed": seed, "rank": rank, "threads": os.cpu_count(),
           "smurff_iter": (warmup, samples)}
    out = peers.run_smurff(split, cfg)
    return {"f": out["samples"], "tau": out["alpha"],
            "s_per_sweep": out["fit"].wall / out["n_iter"], "compile_s": None}


RUNNERS = {"bayesmf": run_bayesmf, "smurff": run_smurff}


def measure(split, rank, seed, a, log) -> dict:
    rows = {}
    y = split.test[2]
    for meth, run in RUNNERS.items():
        r = run(split, rank, a.warmup, a.samples, seed)
        e = ess_summary(r["f"])
        et = ess_summary(np.asarray(r["tau"])[:, None])
        kept_s = a.samples * r["s_per_sweep"]
        rmse = float(np.sqrt(np.mean((np.clip(r["f"].mean(0), *split.scale) - y) ** 2)))
        rows[meth] = {
            "s_per_sweep": float(r["s_per_sweep"]), "compile_s": r["compile_s"],
            "ess_bulk_median": float(np.median(e["bulk"])),
            "ess_bulk_p10": float(np.percentile(e["bulk"], 10)),
            "ess_tail_median": float(np.median(e["tail"])),
            "ess_bulk_per_sweep": float(np.median(e["bulk"]) / a.samples),
            "ess_bulk_per_s": float(np.median(e["bulk"]) / kept_s),
            "ess_bulk_p10_per_s": float(np.percentile(e["bulk"], 10) / kept_s),
            "ess_tail_per_s": float(np.median(e["tail"]) / kept_s),
            "ess_tau": float(et["bulk"][0]), "rmse_probe": rmse}
        if "row_parts" in r:
            rows[meth]["row_parts"] = r["row_parts"]
        log(f"[r{rank} seed {seed}] {meth}: s/sweep {r['s_per_sweep']:.4f}, median bulk ESS "
            f"{rows[meth]['ess_bulk_median']:.0f}, ESS/s {rows[meth]['ess_bulk_per_s']:.0f}")
    return rows


def markdown(doc) -> str:
    cfg = doc["config"]
    L = ["# ESS per second of held-out predictions: bayesmf Gibbs vs smurff (same run)", "",
         f"Date {doc['date']}; command `{doc['command']}`; load average at start "
         f"{doc['environment']['loadavg_start']}, end {doc['environment'].get('loadavg_end')}.",
         "",
         "CPU: " + "; ".join(x.strip() for x in doc["environment"]["lscpu"]
                            if x.startswith(("Model name", "CPU(s)"))), "",
         f"ML-1M subset (`ml1m-part`), one chain of {cfg['warmup']} burn-in + {cfg['samples']}"
         f" kept sweeps per method and seed; {cfg['probe']} held-out probe pairs (seed 0); "
         "bulk/tail ESS per pair over the kept draws of the noise-free prediction "
         "(`arviz_stats.ess`); ESS/s = ESS / (kept sweeps x s/sweep of that run; bayesmf "
         "without compilation; smurff fit wall / iterations, smurff threads = CPUs).", "",
         "| rank | seed | method | s/sweep | median bulk ESS | p10 bulk ESS | median tail ESS "
         "| bulk ESS / sweep | **median bulk ESS/s** | p10 ESS/s | tail ESS/s | ESS(tau) | "
         "probe RMSE |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for blk in doc["blocks"]:
        for m, r in blk["results"].items():
            L.append(f"| {blk['rank']} | {blk['seed']} | {m} | {r['s_per_sweep']:.4f} | "
                     f"{r['ess_bulk_median']:.0f} | {r['ess_bulk_p10']:.0f} | "
                     f"{r['ess_tail_median']:.0f} | {r['ess_bulk_per_sweep']:.2f} | "
                     f"**{r['ess_bulk_per_s']:.1f}** | {r['ess_bulk_p10_per_s']:.1f} | "
                     f"{r['ess_tail_per_s']:.1f} | {r['ess_tau']:.0f} | "
                     f"{r['rmse_probe']:.4f} |")
    L += ["", "Ratios bayesmf / smurff (median over seeds):", "",
          "| rank | median bulk ESS/s | p10 ESS/s | tail ESS/s | bulk ESS per sweep | s/sweep |",
          "|---|---|---|---|---|---|"]
    for rank in sorted({b["rank"] for b in doc["blocks"]}):
        bl = [b["results"] for b in doc["blocks"] if b["rank"] == rank]

        def ratio(key):
            return float(np.median([r["bayesmf"][key] / r["smurff"][key] for r in bl]))
        L.append(f"| {rank} | {ratio('ess_bulk_per_s'):.2f} | {ratio('ess_bulk_p10_per_s'):.2f}"
                 f" | {ratio('ess_tail_per_s'):.2f} | {ratio('ess_bulk_per_sweep'):.2f} | "
                 f"{ratio('s_per_sweep'):.2f} |")
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", default="10,32")
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--probe", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--samples", type=int, default=300)
    p.add_argument("--out", type=Path, default=HERE / "results" / "ess")
    p.add_argument("--render", type=Path, default=None,
                   help="only re-write <out>.md from this JSON of an earlier run")
    a = p.parse_args(argv)
    if a.render is not None:
        a.out.with_suffix(".md").write_text(markdown(json.loads(a.render.read_text())))
        return 0
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    split = probe_split(peers.load_split("ml1m-part", 0), a.probe)
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "command": "python benchmarks/bench_ess.py " + " ".join(
               sys.argv[1:] if argv is None else argv),
           "config": {"warmup": a.warmup, "samples": a.samples, "probe": len(split.test[2])},
           "environment": environment(), "blocks": []}
    for rank in [int(x) for x in a.ranks.split(",")]:
        for seed in [int(x) for x in a.seeds.split(",")]:
            doc["blocks"].append({"rank": rank, "seed": seed,
                                  "results": measure(split, rank, seed, a, log)})
    doc["environment"]["loadavg_end"] = os.getloadavg()
    md = markdown(doc)
    print(md)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".md").write_text(md)
    a.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
