"""A/B timing of the Gibbs sweep between two source trees, in one run.

Refactors must not slow the sampler down: this script times ``fit_gibbs`` seconds per
sweep (compile excluded, streamed predictions of the test pairs on, one chain) of the
current tree and of another tree (e.g. a ``git worktree`` of the commit before the
change), alternating ``--repeats`` times, each run in its own process so that neither
shares a compile cache or memory with the other. It prints the medians and the ratio
``new / old`` per split and writes a markdown table.

    git worktree add /tmp/bayesmf-old <commit>
    .venv/bin/python benchmarks/ab_gibbs_speed.py --old /tmp/bayesmf-old \
        --splits ml1m-part:10,ml1m-part:32 --repeats 3 --sweeps 40
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
ROOT = HERE.parent

_CHILD = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
import numpy as np
import peers
from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.infer.gibbs import fit_gibbs
from bayesmf.model.spec import ModelSpec
split = peers.load_split(sys.argv[3])
u, i, r = split.train
train = Ratings.from_indices(u, i, r, Vocabulary(np.arange(split.n_users)),
                             Vocabulary(np.arange(split.n_items)))
tu, ti, _ = split.test
post = fit_gibbs(train, ModelSpec(rank=int(sys.argv[4])), seed=1, num_samples=int(sys.argv[5]),
                 num_warmup=0, predict_pairs=(tu, ti))
import bayesmf
print(json.dumps({"s_per_sweep": post.attrs["seconds_per_sweep"],
                  "compile_s": post.attrs["compile_seconds"], "file": bayesmf.__file__}))
"""


def run(tree: Path, split: str, rank: int, sweeps: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    out = subprocess.run([sys.executable, "-c", _CHILD, str(tree), str(ROOT.parent / "shared"
                          / "bench"), split, str(rank), str(sweeps)],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", type=Path, required=True, help="source tree of the baseline")
    p.add_argument("--new", type=Path, default=ROOT, help="source tree to compare (this one)")
    p.add_argument("--splits", default="ml1m-part:10,ml1m-part:32", help="split:rank,...")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sweeps", type=int, default=40)
    p.add_argument("--out", type=Path, default=HERE / "results" / "ab_gibbs_speed")
    a = p.parse_args(argv)
    rows = []
    for item in a.splits.split(","):
        split, rank = item.split(":")
        times = {"old": [], "new": []}
        for rep in range(a.repeats):
            for side in ("old", "new") if rep % 2 == 0 else ("new", "old"):
                res = run(getattr(a, side), split, int(rank), a.sweeps)
                assert str(getattr(a, side).resolve()) in res["file"], res["file"]
                times[side].append(res["s_per_sweep"])
                print(f"{split} r{rank} {side}: {res['s_per_sweep']:.4f} s/sweep "
                      f"(compile {res['compile_s']:.1f} s)", flush=True)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        rows.append({"split": split, "rank": int(rank), "old": times["old"],
                     "new": times["new"], "median_old": med["old"], "median_new": med["new"],
                     "ratio": med["new"] / med["old"]})
    load = os.getloadavg()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(
        {"rows": rows, "old": str(a.old), "loadavg_end": load, "date": time.ctime()}, indent=1))
    lines = ["# Gibbs seconds per sweep, before / after (same run, alternating processes)", "",
             f"Baseline tree `{a.old}`; {a.repeats} runs each of {a.sweeps} sweeps, one chain, "
             f"streamed test-pair predictions; load average at the end {load[0]:.2f}.", "",
             "| split | rank | old median s | new median s | new / old |", "|---|---|---|---|---|"]
    lines += [f"| {r['split']} | {r['rank']} | {r['median_old']:.4f} | {r['median_new']:.4f} | "
              f"{r['ratio']:.3f} |" for r in rows]
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
