#!/usr/bin/env python
r"""The IWLS row step of the Gibbs sampler (``row_mh``) on real ratings: effective sample
size per second with and without it (diagnostic; the planted-data version is
``diag_augmented_mixing.py``).

For each likelihood (``bernoulli-probit`` on ``rating >= 4``, ``ordinal`` on the stars)
the Gibbs sampler fits the training part of a peer split (``shared/bench/peers.py``
``load_split``) at ``--rank`` with 2 vectorised chains of ``warmup + samples`` sweeps,
once with ``row_mh=False`` (the augmentation alone) and once with ``row_mh=True`` (one
Newton step per proposal, the library's setting). The ArviZ bulk ESS of the linear
predictor is taken at 200 test pairs whose user and item are in training (seeded
sample); the table reports its median, 10% quantile and minimum, seconds per sweep
(sampling only, the two chains together) and the median and 10%-quantile ESS per
second of sampling.

    .venv/bin/python benchmarks/diag_row_mh_real.py --split ml100k-u3 --rank 10
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent.parent / "shared" / "bench"))
from _report import markdown_table, save_report  # noqa: E402
from diag_augmented_mixing import eta_ess  # noqa: E402

THRESHOLD = 4.0


def run(split, lik: str, row_mh: bool, rank: int, samples: int, warmup: int) -> dict:
    import pandas as pd

    import bayesmf

    u, i, r = split.train
    tu, ti, _ = split.test
    y = (r >= THRESHOLD).astype(float) if lik.startswith("bernoulli") else r
    train = pd.DataFrame({"user": u, "item": i, "rating": y})
    model = bayesmf.BayesMF(method="gibbs", likelihood=lik, rank=rank, num_samples=samples,
                            num_warmup=warmup, num_chains=2, seed=0, row_mh=row_mh)
    model.fit(train)
    post = model.posterior_
    known = np.isin(tu, u) & np.isin(ti, i)
    pick = np.random.default_rng(0).choice(np.flatnonzero(known), 200, replace=False)
    ess = eta_ess(post, tu[pick], ti[pick])
    sps = float(post.attrs["seconds_per_sweep"])
    secs = sps * (samples + warmup)
    acc = post.sample_stats.get("row_mh_accept")
    return {"likelihood": lik, "row_mh": row_mh,
            "ess_median": round(float(np.median(ess)), 1),
            "ess_q10": round(float(np.quantile(ess, 0.1)), 1),
            "ess_min": round(float(ess.min()), 1), "s_per_sweep": round(sps, 4),
            "ess_median_per_s": round(float(np.median(ess)) / secs, 2),
            "ess_q10_per_s": round(float(np.quantile(ess, 0.1)) / secs, 2),
            "accept": "" if acc is None else round(float(np.mean(acc)), 3),
            "load": [round(v, 2) for v in os.getloadavg()]}


def render(doc: dict) -> str:
    cols = ["likelihood", "row_mh", "ess_median", "ess_q10", "ess_min", "accept",
            "s_per_sweep", "ess_median_per_s", "ess_q10_per_s", "load"]
    lines = ["# The IWLS row step on real ratings (diagnostic)", "",
             f"Generated {doc['generated']}; command: `{doc['command']}`. Split "
             f"`{doc['split']}`, rank {doc['rank']}, 2 chains x ({doc['warmup']} + "
             f"{doc['samples']}) sweeps; ESS of eta at 200 known test pairs (module docs "
             "of `diag_row_mh_real.py`); probit on rating >= 4.", ""]
    return "\n".join(lines + markdown_table(doc["rows"], cols)) + "\n"


def main(argv=None) -> int:
    import peers

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", default="ml100k-u3")
    ap.add_argument("--likelihoods", nargs="+", default=["bernoulli-probit", "ordinal"])
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "row_mh_real.md")
    a = ap.parse_args(argv)
    split = peers.load_split(a.split)
    rows = []
    for lik in a.likelihoods:
        for mh in (False, True):
            rows.append(run(split, lik, mh, a.rank, a.samples, a.warmup))
            print(rows[-1], flush=True)
    save_report({"rows": rows}, a.out, render, "diag_row_mh_real.py", argv, split=a.split,
                rank=a.rank, samples=a.samples, warmup=a.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
