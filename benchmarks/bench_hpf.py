#!/usr/bin/env python
"""Hierarchical Poisson factorization (``likelihood="poisson"``: Gibbs and CAVI) on the
implicit-feedback peer splits (issue 14).

Splits and metric code are the peer harness's (``shared/bench/implicit_peers.py``). Per
split: the rank is chosen on the harness's validation carve by CAVI (fast) among
``--ranks``; then Gibbs (``--warmup`` + ``--samples`` sweeps) and CAVI are refitted on
``split.train`` at that rank and scored on ``split.test`` by the posterior-mean rate
:math:`\\frac1S\\sum_s \\theta_s\\beta_s^\\top` (the ``mean`` strategy). The model's
hyperparameters are the paper's (a = a' = c = c' = 0.3, b' = d' = 1) unless ``--grid``
gives other sets, which are then chosen with the rank on the validation carve. The model
sees 1 per pair by default (``--weighting bin``; the peers' HPF runners pick binary or
log weights on Last.fm, and Poisson needs integers: raw play counts, up to 352,698, are
``--weighting raw``); ML-1M pairs are 1. Also the held-out
Poisson log-likelihood per test non-zero (``bayesmf.evaluate.heldout_poisson_loglik``).

The peer rows (hpfrec / cornac HPF, implicit ALS, EASE) are reference figures from
``shared/bench/README.md``, not measured in this run.

    .venv/bin/python benchmarks/bench_hpf.py --splits lastfm-80-20,ml1m-loo,ml1m-ncf
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
from bayesmf.data.interactions import Interactions  # noqa: E402
from bayesmf.data.vocab import Vocabulary  # noqa: E402
from bayesmf.evaluate import heldout_poisson_loglik  # noqa: E402
from bayesmf.model.priors import HierarchicalGamma  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import save_report  # noqa: E402
from bench_implicit import REFERENCE as IMPLICIT_REFERENCE  # noqa: E402
from bench_implicit_bayes import mean_scorer  # noqa: E402  (E[U V^T] over the draws)

HERE = Path(__file__).resolve().parent
#: the HPF peers' reference figures (shared/bench/README.md); the ALS and EASE rows are
#: bench_implicit.REFERENCE's (the one copy of the other peers' figures)
_HPF_REFERENCE = {
    "ml1m-ncf": [("hpfrec-hpf", 0.6409, 0.3720, 0.0707, 0.0347)],
    "ml1m-loo": [("hpfrec-hpf", 0.7727, 0.5140, 0.1637, 0.0919)],
    "lastfm-80-20": [("hpfrec-hpf", 0.2067, 0.2100, 0.1420),
                     ("cornac-hpf", 0.1946, 0.1964, 0.1346)],
}
_OTHER_PEERS = {"ml1m-ncf": ("implicit-als", "cornac-ease[full-tuned]"),
                "ml1m-loo": ("implicit-als", "cornac-ease[full-tuned]"),
                "lastfm-80-20": ("implicit-als", "cornac-ease")}
REFERENCE = {name: rows + [r for r in IMPLICIT_REFERENCE[name] if r[0] in _OTHER_PEERS[name]]
             for name, rows in _HPF_REFERENCE.items()}


WEIGHTING = {"raw": np.rint, "bin": np.ones_like}


def interactions(X, weighting="bin") -> Interactions:
    X = X.tocoo()
    return Interactions.from_arrays(X.row, X.col, WEIGHTING[weighting](X.data),
                                    user_vocab=Vocabulary(np.arange(X.shape[0])),
                                    item_vocab=Vocabulary(np.arange(X.shape[1])))


def fit(X, method, rank, args, seed, hyper=None):
    opts = (dict(num_samples=args.samples, num_warmup=args.warmup) if method == "gibbs"
            else {})
    t0 = time.perf_counter()
    m = bayesmf.BayesMF(method=method, rank=rank, likelihood="poisson",
                        prior=HierarchicalGamma(**(hyper or {})),
                        seed=seed, user_bias=args.biases, item_bias=args.biases,
                        **opts).fit(interactions(X, args.weighting))
    return m.posterior, time.perf_counter() - t0


def _cand_key(rank, hyper) -> str:
    """A validation candidate's label: the rank, then any hyperparameter that differs from
    the paper's (``HierarchicalGamma()``'s defaults)."""
    return " ".join([str(rank)] + [f"{k}={v:g}" for k, v in sorted(hyper.items())])


def run_split(name, args, log=print) -> dict:
    split = ip.make_split(name, args.data, args.seed)
    log(f"== {name}: {split.info}")
    main = ip.MAIN_METRIC[name]
    tune, cands = {}, {}
    for r in args.ranks:
        for h in args.grid:
            key = _cand_key(r, h)
            cands[key] = (r, h)
            post, s = fit(split.fit, "cavi", r, args, args.seed, h)
            tune[key] = ip.evaluate(mean_scorer(post), split.fit, split.val,
                                    split.priority, split.kind)[main]
            log(f"  tune cavi {key}: val {main} {tune[key]:.4f} ({s:.1f} s)")
    rank, hyper = cands[max(tune, key=tune.get)]
    out = {"split_info": split.info, "rank": rank, "hyper": hyper, "tune": tune,
           "results": {}}
    if name.startswith("lastfm") and args.weighting == "raw":  # held-out play counts
        ru, ri, cnt = ip.load_lastfm(args.data)
        uids, u = np.unique(ru, return_inverse=True)
        iids, i = np.unique(ri, return_inverse=True)
        full = ip.to_csr(u, i, cnt, (len(uids), len(iids)))
        y = np.asarray(full[split.test.users, split.test.items]).ravel()
    else:
        y = np.ones(len(split.test.users))
    test_inter = Interactions.from_arrays(
        split.test.users, split.test.items, np.rint(y),
        user_vocab=Vocabulary(np.arange(split.n_users)),
        item_vocab=Vocabulary(np.arange(split.n_items)))
    for method in ("cavi", "gibbs"):
        post, s = fit(split.train, method, rank, args, args.seed, hyper)
        met = ip.evaluate(mean_scorer(post), split.train, split.test, split.priority, split.kind)
        res = {"metrics": met, "fit_s": round(s, 1)}
        if method == "gibbs":
            res["s_per_sweep"] = round(post.attrs.get("seconds_per_sweep", float("nan")), 4)
        res["heldout_loglik_per_nonzero"] = float(heldout_poisson_loglik(post, test_inter))
        out["results"][method] = res
        log(f"  {method} rank {rank}: {met} ({res})")
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return out


def render(doc) -> str:
    lines = ["# Hierarchical Poisson factorization on the implicit-feedback peer splits", "",
             "bayesmf `likelihood=\"poisson\"` (HPF), rank and hyperparameters (the paper's "
             "unless named) chosen by CAVI on the validation carve, refitted on train; "
             "ranking by the posterior-mean rate"
             + (" (with the non-negative user and item biases)" if doc.get("biases") else "")
             + f"; counts weighted `{doc.get('weighting', 'bin')}`. Splits and metrics from "
             "`shared/bench/implicit_peers.py`. **Peer rows are "
             "reference figures from `shared/bench/README.md`, not measured in this run.**",
             "", f"Generated {doc['generated']}; command: `{doc['command']}`.", ""]
    for name, r in doc["splits"].items():
        cols = (["sampled_HR@10", "sampled_NDCG@10", "HR@10", "NDCG@10"]
                if name.startswith("ml1m") else ["Recall@20", "NDCG@20", "Precision@10"])
        chosen = _cand_key(r["rank"], r.get("hyper", {}))
        lines += [f"## `{name}` (chosen: {chosen}; validation {ip.MAIN_METRIC[name]} by "
                  "CAVI: " + ", ".join(f"{k}: {v:.4f}" for k, v in r["tune"].items())
                  + ")", "",
                  "| method | " + " | ".join(cols) + " | fit s |", "|---" * (len(cols) + 2) + "|"]
        for m, res in r["results"].items():
            extra = f" ({res['s_per_sweep']} s/sweep)" if "s_per_sweep" in res else ""
            lines.append(f"| **bayesmf hpf-{m}** | "
                         + " | ".join(f"{res['metrics'][c]:.4f}" for c in cols)
                         + f" | {res['fit_s']}{extra}; held-out log-lik per non-zero "
                           f"{res['heldout_loglik_per_nonzero']:.4f} |")
        for ref in REFERENCE[name]:
            lines.append(f"| {ref[0]} (reference) | "
                         + " | ".join(f"{v:.4f}" for v in ref[1:1 + len(cols)]) + " | |")
        lines += ["", f"Load average at the end: {r['load_average_end']}.", ""]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", default="lastfm-80-20,ml1m-loo,ml1m-ncf")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", type=Path, default=ip.DEFAULT_DATA)
    ap.add_argument("--ranks", type=lambda v: [int(x) for x in v.split(",")],
                    default=[32, 64])
    ap.add_argument("--weighting", choices=sorted(WEIGHTING), default="bin",
                    help="counts the model sees: bin (1 per listened pair, as the peers' "
                         "HPF grids choose on Last.fm) or raw play counts")
    ap.add_argument("--grid", type=json.loads, default=[{}],
                    help="JSON list of Poisson hyperparameter sets tried on the validation "
                         "carve with each rank (default [{}]: the paper's a = a' = c = c' "
                         "= 0.3, b' = d' = 1), e.g. '[{}, {\"a\": 1}, {\"c\": 1}]'")
    ap.add_argument("--biases", action="store_true",
                    help="fit the optional non-negative user and item biases b_u + b_i")
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "hpf.md")
    a = ap.parse_args(argv)
    jpath = a.out.with_suffix(".json")
    doc = json.loads(jpath.read_text()) if jpath.exists() else {"splits": {}}
    for name in a.splits.split(","):
        doc["splits"][name] = run_split(name, a)
        save_report(doc, a.out, render, "bench_hpf.py", argv, weighting=a.weighting,
                    biases=a.biases)
    print(a.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
