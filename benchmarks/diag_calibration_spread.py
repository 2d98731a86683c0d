#!/usr/bin/env python
"""Why the raw P(relevant) of Bernoulli-logit Gibbs is under-confident (issue 13): the
posterior average over a wide spread of the logit, not a chain that has not mixed.

On a carve of the Last.fm TRAINING split (20% of each user's training positives held out,
fresh negatives by the rule ``uniform:4``; the test split is not touched) one model per
configuration (rank 32, 100 + 100 sweeps unless changed) and, on the carve pairs:

* the ECE / fitted Platt slope / AUC of the posterior predictive
  :math:`\\frac1S\\sum_s g(\\eta_s)` (``mean_sigma``, what ``predict`` returns; ``g`` the
  link: :math:`\\sigma` for logit, :math:`\\Phi` for probit) and of the plug-in
  :math:`g(\\frac1S\\sum_s\\eta_s)` (``sigma_mean``);
* the median posterior sd of a pair's logit, its median lag-1 autocorrelation over the
  kept draws, and the median ratio of the within-half to the total variance of the draws
  (near 1: no drift between the two halves of the chain);
* the spread over rows of the posterior-mean user and item biases, and
  :math:`\\operatorname{tr}\\Lambda_V^{-1}` (the item factors' prior variance).

Each configuration is one JSON argument of ``BayesMF`` settings over the defaults::

    .venv/bin/python benchmarks/diag_calibration_spread.py '{}' '{"prior": "normal-gamma"}' \\
        '{"likelihood": "bernoulli-probit"}' '{"priors": {"bias_a": 1000, "bias_b": 1000}}' \\
        '{"priors": {"bias_a": 1000, "bias_b": 4000}}' '{"num_warmup": 400}'

Prints one JSON line per configuration.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np

import bayesmf
from bayesmf.datasets import load_interactions_source
from bayesmf.evaluate.classification import auc, ece
from bayesmf.evaluate.recalibration import Recalibration, recalibration_carve

LASTFM = "/work/shared/data/hetrec2011-lastfm-2k/user_artists.dat"
RULE = "uniform:4"


def run(train, carve, extra: dict) -> dict:
    kw = dict(method="gibbs", likelihood="bernoulli-logit", rank=32, num_samples=100,
              num_warmup=100, seed=0)
    kw.update(extra)
    t0 = time.perf_counter()
    post = bayesmf.BayesMF(**kw).fit(carve.fit, negatives=RULE).posterior
    pairs, y = carve.pairs, carve.pairs["y"].to_numpy()
    u, i, ku, ki = post.encode_pairs(pairs["user"].to_numpy(), pairs["item"].to_numpy())
    eta = np.asarray(post.pair_moments(u, i, ku, ki)[0]).reshape(-1, len(y))
    e0 = eta - eta.mean(0)
    h = eta.shape[0] // 2
    res = {"settings": extra, "fit_s": round(time.perf_counter() - t0, 1),
           "ac1_median": float(np.median((e0[1:] * e0[:-1]).mean(0) / (e0 ** 2).mean(0))),
           "within_over_total": float(np.median(
               0.5 * (eta[:h].var(0) + eta[h:].var(0)) / eta.var(0))),
           "eta_sd_median": float(np.median(eta.std(0)))}
    # the model's own link g (sigma for logit, Phi for probit), per draw and at the mean
    g = lambda x: post.likelihood.predictive(x, np.zeros_like(x), {}).p  # noqa: E731
    for name, p in (("mean_sigma", g(eta).mean(0)), ("sigma_mean", g(eta.mean(0)[None])[0])):
        pl = Recalibration.from_probabilities(y, p, "platt")
        res[name] = {"ece": round(ece(y, p), 4), "platt": round(pl.a, 3),
                     "auc": round(auc(y, p), 4)}
    for n in ("bu", "bi"):
        if n in post.draws:
            res[n + "_sd"] = float(np.asarray(post.draws[n]).mean(axis=(0, 1)).std())
    if "Lambda_V" in post.draws:
        k = post.spec.rank
        L = np.asarray(post.draws["Lambda_V"]).reshape(-1, k, k)[::10]
        res["trace_inv_Lambda_V"] = float(np.mean([np.trace(np.linalg.inv(x)) for x in L]))
    return res


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    events = load_interactions_source(LASTFM)
    train, _ = events.fraction_split(0.2, seed=0)  # the benchmark's training split
    carve = recalibration_carve(train, negatives=RULE, fraction=0.2, seed=0)
    for a in args or ["{}"]:
        print(json.dumps(run(train, carve, json.loads(a))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
