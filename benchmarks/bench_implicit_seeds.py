#!/usr/bin/env python
r"""The library's default implicit model on other seeds: how much of a ranking result is
the chain, how much the split (issue 13: "the same default model also wins ... on another
seed of the splits").

For each ``--split-seeds`` value the harness's split (``shared/bench/implicit_peers.py``,
``make_split(name, data, seed)``) is built; the default Bayesian implicit ALS --
``BayesMF(method="gibbs", likelihood=ImplicitGaussian(), rank=--rank)``, i.e.
:math:`c = 1 + 2\log(1 + r)`, noise precision fixed at 16, Normal-Wishart priors learned,
no tuning -- is fitted on ``split.train`` once per ``--chain-seeds`` value and scored on
``split.test`` with the posterior-mean preference (the scorer of
``bench_implicit_bayes.py``). Peer figures for a split seed other than 0 are not in
``shared/bench/README.md``: run the harness for them (``python ../shared/bench/
implicit_peers.py --seed 1 --split lastfm-80-20 --methods cornac-ease,implicit-als``) and
pass its result folder as ``--peers``; their test metrics are then put next to ours.

    .venv/bin/python benchmarks/bench_implicit_seeds.py --split lastfm-80-20 \
        --split-seeds 0,1 --chain-seeds 0,1,2 --peers /tmp/peers_s1
"""

from __future__ import annotations

import sys

sys.path.insert(0, "/work/shared/bench")
import implicit_peers as ip  # noqa: E402  -- first: it pins BLAS/OpenMP to one thread

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_implicit_bayes import mean_scorer, to_ratings  # noqa: E402

import bayesmf  # noqa: E402
from bayesmf.model.likelihoods import ImplicitGaussian  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def peer_rows(folder: Path | None, name: str, seed: int) -> list:
    """``(method, test metrics)`` from the harness's result file of this split and seed
    (``implicit-{split}-seed{seed}.json``, written by ``implicit_peers.write_results``)."""
    path = None if folder is None else folder / f"implicit-{name}-seed{seed}.json"
    if path is None or not path.exists():
        return []
    doc = json.loads(path.read_text())
    return [(m, r["metrics"]) for m, r in doc.get("methods", {}).items()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="lastfm-80-20")
    ap.add_argument("--split-seeds", default="0,1")
    ap.add_argument("--chain-seeds", default="0,1,2")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--samples", type=int, default=80)
    ap.add_argument("--warmup", type=int, default=60)
    ap.add_argument("--data", type=Path, default=ip.DEFAULT_DATA)
    ap.add_argument("--peers", type=Path, default=None,
                    help="result folder of implicit_peers.py runs (other split seeds)")
    ap.add_argument("--out", type=Path, default=RESULTS / "implicit_seeds")
    a = ap.parse_args(argv)
    main_metric = ip.MAIN_METRIC[a.split]
    cols = (["Recall@20", "NDCG@20", "Precision@10"] if a.split.startswith("lastfm")
            else ["sampled_HR@10", "sampled_NDCG@10", "HR@10", "NDCG@10"])
    rows = []
    for ss in (int(x) for x in a.split_seeds.split(",")):
        split = ip.make_split(a.split, a.data, ss)
        for cs in (int(x) for x in a.chain_seeds.split(",")):
            t0 = time.perf_counter()
            m = bayesmf.BayesMF(method="gibbs", rank=a.rank, likelihood=ImplicitGaussian(),
                                num_samples=a.samples, num_warmup=a.warmup,
                                seed=cs).fit(to_ratings(split.train))
            met = ip.evaluate(mean_scorer(m.posterior), split.train, split.test,
                              split.priority, split.kind)
            rows.append({"split_seed": ss, "chain_seed": cs, "test": met,
                         "fit_s": round(time.perf_counter() - t0, 1)})
            print(f"split seed {ss} chain seed {cs}: " + ", ".join(
                f"{c} {met[c]:.4f}" for c in cols), flush=True)
    doc = {"split": a.split, "rows": rows, "settings": {k: str(v) for k, v in vars(a).items()},
           "generated": time.strftime("%Y-%m-%d %H:%M:%S"),
           "load_average_end": [round(x, 2) for x in os.getloadavg()],
           "command": "python benchmarks/bench_implicit_seeds.py " + " ".join(
               argv if argv is not None else sys.argv[1:])}
    a.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float))
    lines = [f"# Default Bayesian implicit ALS on other seeds: `{a.split}`", "",
             f"Generated {doc['generated']}; command: `{doc['command']}`. The library default "
             f"`ImplicitGaussian()` (c = 1 + 2 log(1 + r), tau fixed at 16), rank {a.rank}, "
             f"{a.warmup} + {a.samples} sweeps, no tuning; ranking by the posterior-mean "
             "preference; split and metric code from `shared/bench/implicit_peers.py`.", "",
             "| split seed | model | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    for ss in sorted({r["split_seed"] for r in rows}):
        rs = [r for r in rows if r["split_seed"] == ss]
        for r in rs:
            lines.append(f"| {ss} | bayesmf, chain seed {r['chain_seed']} | " + " | ".join(
                f"{r['test'][c]:.4f}" for c in cols) + " |")
        vals = {c: np.array([r["test"][c] for r in rs]) for c in cols}
        lines.append(f"| {ss} | **bayesmf mean ± sd** | " + " | ".join(
            f"**{v.mean():.4f}** ± {v.std(ddof=1) if len(v) > 1 else 0:.4f}"
            for v in vals.values()) + " |")
        for method, met in peer_rows(a.peers, a.split, ss):
            lines.append(f"| {ss} | {method} (harness, same split) | " + " | ".join(
                f"{met[c]:.4f}" if c in met else "—" for c in cols) + " |")
    lines += ["", f"Selection metric of the harness: {main_metric}."]
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
