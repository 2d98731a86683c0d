#!/usr/bin/env python
"""Posterior propagation vs full Gibbs on the same split (issue 16, item 6).

Full-data BPMF Gibbs and :func:`bayesmf.infer.propagation.fit_propagated` over ``I x J``
blocks, same rank, warm-up and kept draws, on the ML-1M subset split of
``../shared/bench/peers.py`` (``ml1m-part``): held-out RMSE (clipped to the scale, as the
peer tables), coverage of the 90% predictive interval, NLPD of the predictive mixture,
wall seconds of the whole fit (compiles included: each block has its own shapes), and for
propagation the seconds of each stage, the task seconds summed (the work) and the
**critical path** -- the sum over the three stages of the slowest task, i.e. the wall
time with one worker per task (a cluster with at least ``max(I, J) - 1 + ...`` free
workers) -- from which the speed-up over full Gibbs on such a cluster is estimated.
On this 2-core machine ``executor="processes"`` runs two tasks at a time.

    .venv/bin/python benchmarks/bench_propagation.py --rank 10 --configs 2x2:serial,2x2:processes,3x3:processes
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "shared" / "bench"))

import peers  # noqa: E402

from bayesmf.data.ratings import Ratings  # noqa: E402
from bayesmf.data.vocab import Vocabulary  # noqa: E402
from bayesmf.infer.gibbs import fit_gibbs  # noqa: E402
from bayesmf.infer.propagation import fit_propagated  # noqa: E402
from bayesmf.model.spec import ModelSpec  # noqa: E402


def _metrics(split, post):
    tu, ti, y = split.test
    m, v = post.pair_moments(tu, ti)
    tau = post.flat("tau")
    var = m.var(0) + (v.mean(0) if v is not None else 0.0) + np.mean(1.0 / tau)
    res = peers.evaluate(split, {"mean": m.mean(0), "var": var})
    res.update(peers.mixture_metrics(y, m, tau))
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="ml1m-part")
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--configs", default="2x2:serial,2x2:processes,3x3:processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pieces", default="moments", choices=("moments", "difference"))
    ap.add_argument("--no-align", action="store_true")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "propagation")
    a = ap.parse_args(argv)
    split = peers.load_split(a.split)
    u, i, r = split.train
    train = Ratings.from_indices(u, i, r, Vocabulary(np.arange(split.n_users)),
                                 Vocabulary(np.arange(split.n_items)))
    spec = ModelSpec(rank=a.rank)
    load0 = os.getloadavg()
    rows = []
    t0 = time.perf_counter()
    full = fit_gibbs(train, spec, seed=a.seed, num_samples=a.samples, num_warmup=a.warmup)
    wall = time.perf_counter() - t0
    res = _metrics(split, full)
    rows.append(dict(method="full Gibbs", blocks="1x1", executor="-", wall_s=wall,
                     critical_s=wall, work_s=wall, **res))
    print(rows[-1]["method"], round(wall, 1), round(res["rmse"], 4), flush=True)
    for cfg in a.configs.split(","):
        blocks, ex = cfg.split(":")
        I_, J_ = (int(x) for x in blocks.split("x"))
        t0 = time.perf_counter()
        post = fit_propagated(train, spec, seed=a.seed, num_samples=a.samples,
                              num_warmup=a.warmup, user_blocks=I_, item_blocks=J_,
                              executor=ex, max_workers=2, pieces=a.pieces,
                              align=not a.no_align)
        wall = time.perf_counter() - t0
        pa = post.attrs["propagation"]
        ts = pa["task_seconds"]
        crit = (ts["0,0"] + max([ts[k] for k in ts if (k.startswith("0,") or k.endswith(",0"))
                                 and k != "0,0"], default=0.0)
                + max([ts[k] for k in ts if not (k.startswith("0,") or k.endswith(",0"))],
                      default=0.0))
        res = _metrics(split, post)
        rows.append(dict(method="propagation", blocks=blocks, executor=ex, wall_s=wall,
                         critical_s=crit, work_s=pa["task_seconds_total"],
                         stage_s=pa["stage_seconds"], clipped=pa["clipped_rows"], **res))
        print(cfg, round(wall, 1), round(res["rmse"], 4), flush=True)
    load1 = os.getloadavg()
    f = rows[0]
    lines = [f"# Posterior propagation vs full Gibbs ({a.split}, rank {a.rank})", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}; command: `python "
             f"benchmarks/bench_propagation.py {' '.join(argv or sys.argv[1:])}`; load "
             f"{[round(x, 2) for x in load0]} at the start, {[round(x, 2) for x in load1]} "
             f"at the end; {os.cpu_count()} CPUs.", "",
             f"{train.nnz:,} training and {len(split.test[2]):,} test ratings; every fit "
             f"{a.warmup} warm-up + {a.samples} kept sweeps (per block for propagation), "
             "seed 0. Seconds include every compile (each block has its own shapes). "
             "*critical path*: per stage the slowest task, summed (the wall time with one "
             "worker per task); *work*: all task seconds summed. Compiled programs come from "
             "the persistent compile cache where an earlier run had the same shapes. "
             f"Propagation: pieces={a.pieces!r}, align={not a.no_align}.", "",
             "| method | blocks | executor | RMSE | cov90 | NLPD | wall s | critical path s "
             "| work s | wall vs full | critical path vs full |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['blocks']} | {row['executor']} | {row['rmse']:.4f} | "
            f"{row['coverage90']:.3f} | {row['nlpd_mixture']:.4f} | {row['wall_s']:.1f} | "
            f"{row['critical_s']:.1f} | {row['work_s']:.1f} | "
            f"{row['wall_s'] / f['wall_s']:.2f}x | {row['critical_s'] / f['wall_s']:.2f}x |")
    lines += ["", "Stage seconds (anchor, first row/column, the rest) and aggregated rows "
              "whose precision needed clipping:", ""]
    for row in rows[1:]:
        lines.append(f"- {row['blocks']} {row['executor']}: {row['stage_s']}, clipped "
                     f"{row['clipped']}")
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps(rows, indent=1, default=float))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
