#!/usr/bin/env python
"""Calibration of P(relevant) on implicit feedback (issue 13 target: ECE <= 0.02 on held-out
positives + sampled negatives).

Bernoulli-logit Gibbs (Pólya-Gamma) on the positives plus ``--negatives`` sampled
negatives per positive (``BayesMF.fit(interactions, negatives=...)``); P(relevant) of a
pair is its posterior predictive ``P(y = 1)`` (``predict``'s ``mean``). Evaluation set:
every held-out positive of a per-user 80/20 split plus, for each, the same number of
negatives drawn by the **same rule** from the pairs the user never interacted with (train
or test), so that the class balance of the evaluation set is the one the model was fitted
to (calibration is only defined against a reference population). Reported: ECE (10 equal
bins), log-loss, Brier, AUC, and the reliability table.

The Bayesian implicit ALS model (``likelihood="implicit"``) is not in this table: its
predictive is a Gaussian over a 0/1 preference, so ``P(p > 0.5)`` is a ranking score,
not a calibrated probability.

    .venv/bin/python benchmarks/bench_calibration_implicit.py --data lastfm
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import bayesmf
from bayesmf.data.negatives import as_sampler
from bayesmf.datasets import load_interactions_source
from bayesmf.evaluate.classification import auc, brier, ece, log_loss, reliability

HERE = Path(__file__).resolve().parent
DATA = {"lastfm": "/work/shared/data/hetrec2011-lastfm-2k/user_artists.dat",
        "latest-small": "movielens:latest-small"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=sorted(DATA), default="lastfm")
    ap.add_argument("--negatives", default="uniform:4")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--samples", type=int, default=150)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "calibration_implicit.md")
    a = ap.parse_args(argv)
    events = load_interactions_source(DATA[a.data])
    train, test = events.fraction_split(0.2, seed=a.seed)
    t0 = time.perf_counter()
    m = bayesmf.BayesMF(method="gibbs", likelihood="bernoulli-logit", rank=a.rank,
                        num_samples=a.samples, num_warmup=a.warmup, seed=a.seed).fit(
        train, negatives=a.negatives)
    fit_s = time.perf_counter() - t0
    # held-out positives + negatives by the same rule, never a train or test positive
    both = bayesmf.data.Interactions.from_arrays(
        np.concatenate([train.users.decode(train.user), test.users.decode(test.user)]),
        np.concatenate([train.items.decode(train.item), test.items.decode(test.item)]),
        user_vocab=train.users, item_vocab=train.items)
    rule = as_sampler(a.negatives, seed=a.seed + 1)
    neg = rule.training_ratings(both)            # positives (all) = 1, negatives = 0
    neg_df = neg.to_dataframe()
    neg_df = neg_df[neg_df["rating"] == 0]
    # keep, per test user, as many negatives per held-out positive as the rule says
    per = rule.per_positive or 4
    tu = pd.Series(test.users.decode(test.user)).value_counts()
    neg_df = neg_df[neg_df["user"].isin(tu.index)]
    rank_in_user = neg_df.groupby("user").cumcount().to_numpy()
    neg_df = neg_df[rank_in_user < per * neg_df["user"].map(tu).to_numpy()]
    pos_df = pd.DataFrame({"user": test.users.decode(test.user),
                           "item": test.items.decode(test.item)})
    pairs = pd.concat([pos_df.assign(y=1), neg_df[["user", "item"]].assign(y=0)],
                      ignore_index=True)
    p = m.predict(pairs[["user", "item"]])["mean"].to_numpy()
    y = pairs["y"].to_numpy()
    rel = reliability(y, p, bins=10)
    res = {"ece": ece(y, p), "log_loss": log_loss(y, p), "brier": brier(y, p), "auc": auc(y, p)}
    lines = ["# Calibration of P(relevant) on implicit feedback", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}; command: `python "
             f"benchmarks/bench_calibration_implicit.py {' '.join(argv or sys.argv[1:])}`; "
             f"load at the end {[round(x, 2) for x in os.getloadavg()]}.", "",
             f"Data {a.data}: {train.nnz:,} training pairs, {len(pos_df):,} held-out positives "
             f"+ {len(neg_df):,} negatives drawn by the fitting rule `{a.negatives}`. "
             f"Bernoulli-logit Gibbs, rank {a.rank}, {a.warmup} + {a.samples} sweeps, fit "
             f"{fit_s:.0f} s.", "",
             "| ECE (10 bins) | log-loss | Brier | AUC | target ECE |", "|---|---|---|---|---|",
             f"| **{res['ece']:.4f}** | {res['log_loss']:.4f} | {res['brier']:.4f} | "
             f"{res['auc']:.4f} | <= 0.02 ({'met' if res['ece'] <= 0.02 else 'NOT met'}) |",
             "", "Reliability (mean predicted vs observed rate per bin):", "",
             "```", rel.to_string(index=False, float_format=lambda v: f"{v:.4f}"), "```", ""]
    a.out.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
