"""Seconds per minibatch SVI step with sampled negatives fixed (``uniform:4``) or redrawn
at every step (``uniform:4@sweep``), on a synthetic implicit data set of ML-1M's size
class: 6,000 users x 3,700 items, Zipf(1.3) item popularity, 449,525 positives, 1.8M
sampled negatives; Bernoulli-logit, rank 32, mean-field guide, 100,000 observations per
step.

Per-step seconds = (fit seconds at 400 steps - at 100 steps) / 300, each after a first
100-step fit that pays the compile. Run it on the code to compare (e.g. a worktree of an
older commit with ``PYTHONPATH``); it prints one line per rule and a JSON line.

Usage: ``python benchmarks/bench_svi_redraw.py [RULE,RULE,...]`` (default
``uniform:4@sweep,uniform:4``).
"""

from __future__ import annotations

import json
import sys

import numpy as np

import bayesmf
from bayesmf.data import Interactions


def main(rules: str = "uniform:4@sweep,uniform:4") -> dict:
    rng = np.random.default_rng(0)
    n_users, n_items, n = 6000, 3700, 1_000_000
    u = rng.integers(0, n_users, int(n * 1.1))
    i = rng.zipf(1.3, u.size) % n_items
    pairs = np.unique(np.stack([u, i], 1), axis=0)[:n]
    x = Interactions.from_arrays(pairs[:, 0].astype(str), pairs[:, 1].astype(str))
    print("positives", len(pairs), flush=True)
    out = {}
    for rule in rules.split(","):
        ts = {}
        for steps in (100, 100, 400):  # the first 100-step fit pays the compile
            m = bayesmf.BayesMF(method="svi", likelihood="bernoulli-logit", rank=32, seed=0,
                                num_steps=steps, batch_size=100_000, num_samples=5,
                                tol=1e-12, window=100)
            m.fit(x, negatives=rule)
            ts[steps] = m.posterior.attrs["timings"]["fit_s"]
        out[rule] = (ts[400] - ts[100]) / 300
        print(rule, {k: round(v, 2) for k, v in ts.items()}, "s/step", round(out[rule], 4),
              flush=True)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main(*sys.argv[1:2])
