#!/usr/bin/env python
r"""Bernoulli-logit Gibbs on sampled negatives: how far the default chain is from
stationary, and what the start does (issue 13).

Last.fm 2K 80/20 (the peer harness's ``lastfm-80-20`` split, seed 0 or ``--split-seed``),
every training positive plus ``uniform:4`` negatives, ``BayesMF(method="gibbs",
likelihood="bernoulli-logit", rank=32, num_samples=100, num_warmup=100, init_scale=0.1,
seed=0)`` with the settings of each JSON argument over those (``init_scale`` 0.1 was the
library's default for these fits until commit ad48548; ``BayesMF(init_scale=None)`` now
starts them at 1.0). Per configuration: full-ranking Recall@20 / NDCG@20 on the test
split by the posterior-mean probability :math:`\frac1S\sum_s\sigma(\eta_s)` (the harness's
``evaluate``), the fit time, and :math:`\operatorname{tr}\Lambda_V^{-1}` averaged over the
kept draws -- the item factors' prior variance, the scale that drifts when the chain
starts from factors much smaller than the posterior's.

    .venv/bin/python benchmarks/diag_bernoulli_start.py '{}' '{"init_scale": 1.0}' \
        '{"num_warmup": 400}'

Prints one JSON line per configuration and writes ``--out`` (markdown).
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

import bayesmf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hpf import interactions  # noqa: E402  (a CSR matrix as Interactions)

HERE = Path(__file__).resolve().parent


def prob_scorer(post):
    """Posterior-mean P(y = 1) of a block of users against every item."""
    D, S = post.draws, post.n_samples
    U = D["U"].reshape(S, *D["U"].shape[2:])
    V = D["V"].reshape(S, *D["V"].shape[2:])
    mu, bu, bi = D["mu"].reshape(S), D["bu"].reshape(S, -1), D["bi"].reshape(S, -1)

    def score(rows):
        out = np.zeros((len(rows), V.shape[1]))
        for s in range(S):
            eta = U[s][rows] @ V[s].T + mu[s] + bu[s][rows, None] + bi[s][None, :]
            out += 1.0 / (1.0 + np.exp(-eta))
        return out / S
    return score


def run(split, extra: dict) -> dict:
    kw = dict(method="gibbs", likelihood="bernoulli-logit", rank=32, num_samples=100,
              num_warmup=100, init_scale=0.1, seed=0)
    kw.update(extra)
    negatives = kw.pop("negatives", "uniform:4")
    t0 = time.perf_counter()
    post = bayesmf.BayesMF(**kw).fit(interactions(split.train),
                                     negatives=negatives).posterior
    fit_s = time.perf_counter() - t0
    met = ip.evaluate(prob_scorer(post), split.train, split.test, split.priority, split.kind)
    k = kw["rank"]
    lam = np.asarray(post.draws["Lambda_V"]).reshape(-1, k, k)
    return {"settings": extra, "metrics": {m: round(v, 4) for m, v in met.items()},
            "fit_s": round(fit_s, 1),
            "s_per_sweep": round(float(post.attrs["seconds_per_sweep"]), 4),
            "tr_Lambda_V_inv": round(float(np.mean(np.trace(np.linalg.inv(lam), axis1=1,
                                                            axis2=2))), 3),
            "load": [round(x, 2) for x in os.getloadavg()]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="*", type=json.loads, default=[{}])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bernoulli_start.md")
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the harness split")
    ap.add_argument("--split", default="lastfm-80-20",
                    help="the harness split (lastfm-80-20, ml1m-loo, ml1m-ncf)")
    a = ap.parse_args(argv)
    split = ip.make_split(a.split, ip.DEFAULT_DATA, a.split_seed)
    rows = []
    for cfg in a.configs:
        rows.append(run(split, cfg))
        print(json.dumps(rows[-1]), flush=True)
    cmd = "python benchmarks/diag_bernoulli_start.py " + " ".join(
        f"'{json.dumps(c)}'" for c in a.configs) + (
        f" --split-seed {a.split_seed}" if a.split_seed else "") + (
        f" --split {a.split}" if a.split != "lastfm-80-20" else "")
    metrics = (["Recall@20", "NDCG@20"] if a.split == "lastfm-80-20" else
               ["sampled_HR@10", "sampled_NDCG@10", "HR@10", "NDCG@10"])
    peers = ("; peers: implicit ALS 0.2687 / 0.2748, EASE 0.2734 / 0.2784 (reference "
             "figures of `shared/bench/README.md`)" if a.split == "lastfm-80-20" else "")
    lines = ["# Bernoulli-logit Gibbs on sampled negatives: the start and the warm-up", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}; command: `{cmd}`. Split "
             f"`{a.split}` seed {a.split_seed}, rank 32, `uniform:4` negatives, 100 kept "
             f"draws; ranking by the posterior-mean P(y = 1){peers}.", "",
             "| settings over the defaults | " + " | ".join(metrics) + " | fit s | s/sweep | "
             "tr Lambda_V^-1 | load at the end |",
             "|---|" + "---|" * len(metrics) + "---|---|---|---|"]
    for r in rows:
        lines.append(f"| `{json.dumps(r['settings'])}` | "
                     + " | ".join(f"{r['metrics'][m]:.4f}" for m in metrics)
                     + f" | {r['fit_s']} | {r['s_per_sweep']} | {r['tr_Lambda_V_inv']} | "
                     f"{r['load']} |")
    a.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
