#!/usr/bin/env python
r"""The library's default implicit model on implicit datasets that chose nothing (issue 13:
"the same default model also wins on a held-out implicit dataset you will not see").

The default implicit model -- what ``bayesmf fit events.csv --feedback implicit`` fits:
Bayesian implicit ALS, ``BayesMF(method="gibbs", rank=64, likelihood="implicit")`` with
the library's defaults (:math:`c = 1 + 2\log(1 + r)`, noise precision fixed at 16,
Normal-Wishart priors learned, 100 warm-up + 200 kept sweeps) -- was settled on Last.fm
and ML-1M. Here it meets two datasets that played no part in any default, **untuned**,
against peers that **are** tuned on each split's validation carve by the peer harness
(``shared/bench/implicit_peers.py``: its grids, its two-stage tuning, its refit on train):

* ``ml100k-loo`` -- MovieLens 100K, every rating a positive (binary), random
  leave-one-out per user, the held-out item ranked among 99 sampled negatives and among
  all items (the protocol of the harness's ``ml1m-loo``);
* ``latest-small-80-20`` -- MovieLens latest-small, implicit data derived from explicit
  ratings (``rating >= 4`` is a positive, the rest dropped), per-user 80/20 split, full
  ranking (the protocol of ``lastfm-80-20``).

Splits, metrics and tie-breaking are the harness's functions (``holdout_one``,
``holdout_fraction``, ``sample_negatives``, ``evaluate``). Peers: MostPop, item-kNN
cosine, implicit ALS, cornac BPR with the harness's grids (the non-ML-1M grids: the larger
ones), and EASE with ``lamb`` in 10-3000 over **all** items (the harness restricts EASE to
items with 2+ users only on Last.fm, for time; not needed at this size). bayesmf ranks by
the posterior-mean preference, as in ``bench_implicit_bayes.py``.

    .venv/bin/python benchmarks/bench_implicit_unseen.py --seeds 0,1
"""

from __future__ import annotations

import sys

sys.path.insert(0, "/work/shared/bench")
import implicit_peers as ip  # noqa: E402  -- first: it pins BLAS/OpenMP to one thread

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import save_report  # noqa: E402
from bench_hpf import interactions  # noqa: E402  (a csr of counts as Interactions)
from bench_implicit_bayes import mean_scorer, to_ratings  # noqa: E402

import bayesmf  # noqa: E402
from bayesmf.selection import select_confidence  # noqa: E402

HERE = Path(__file__).resolve().parent
SPLITS = ("ml100k-loo", "latest-small-80-20")
ip.MAIN_METRIC.update({"ml100k-loo": "sampled_NDCG@10", "latest-small-80-20": "NDCG@20"})
ip.FULL_METRIC.update({"ml100k-loo": "NDCG@10"})
_LOO = ["sampled_HR@10", "sampled_NDCG@10", "HR@10", "NDCG@10"]
_MULTI = ["Recall@20", "NDCG@20", "Precision@10"]
COLS = {"ml100k-loo": _LOO, "latest-small-80-20": _MULTI, "ml1m-loo": _LOO,
        "ml1m-ncf": _LOO, "lastfm-80-20": _MULTI}
PEERS = [ip.PEERS["mostpop"], ip.PEERS["itemknn-cosine"], ip.PEERS["implicit-als"],
         ip.PEERS["cornac-bpr"],
         dataclasses.replace(ip.PEERS["cornac-ease"], grid=lambda s: ip._product(
             lamb=[10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0], posB=[False]))]


def _pairs(name: str, data: Path) -> tuple[np.ndarray, np.ndarray]:
    if name == "ml100k-loo":
        df = pd.read_csv(data / "ml-100k" / "u.data", sep="\t",
                         names=["user", "item", "rating", "ts"])
    else:
        df = pd.read_csv(data / "ml-latest-small" / "ratings.csv")
        df = df.rename(columns={"userId": "user", "movieId": "item"})
        df = df[df["rating"] >= 4.0]
    return df["user"].to_numpy(), df["item"].to_numpy()


def make_split(name: str, data: Path, seed: int) -> ip.Split:
    """The harness's protocol of ``ml1m-loo`` / ``lastfm-80-20`` on another dataset (the
    harness's own splits by name)."""
    if name in ip.SPLITS:
        return ip.make_split(name, data, seed)
    rng = np.random.default_rng(seed)
    ru, ri = _pairs(name, data)
    uids, u = np.unique(ru, return_inverse=True)
    iids, i = np.unique(ri, return_inverse=True)
    full = ip.to_csr(u, i, np.ones(len(u)), (len(uids), len(iids)))
    if name == "ml100k-loo":
        train, tu, ti, _ = ip.holdout_one(full, rng)
        tneg = ip.sample_negatives(full, tu, ip.N_NEG, rng)
        fit, vu, vi, _ = ip.holdout_one(train, rng)
        vneg = ip.sample_negatives(train, vu, ip.N_NEG, rng)
        test, val, kind = ip.EvalSet(tu, ti, tneg), ip.EvalSet(vu, vi, vneg), "loo"
    else:
        train, held = ip.holdout_fraction(full, 0.2, rng)
        fit, vheld = ip.holdout_fraction(train, 0.2, rng)
        test = ip.EvalSet(ip._row_ids(held), held.indices.copy())
        val = ip.EvalSet(ip._row_ids(vheld), vheld.indices.copy())
        kind = "multi"
    priority = rng.permutation(full.shape[1])
    info = {"n_users": int(full.shape[0]), "n_items": int(full.shape[1]),
            "n_interactions": int(full.nnz), "n_train": int(train.nnz),
            "n_test_pairs": int(len(test.users))}
    return ip.Split(name, seed, full.shape[0], full.shape[1], train, test, fit, val,
                    priority, kind, info)


def run(name: str, seed: int, a, log=print) -> dict:
    split = make_split(name, a.data, seed)
    log(f"== {name} seed {seed}: {split.info}")
    out = {"info": split.info, "peers": {}}
    for peer in PEERS if name in SPLITS else []:
        for k, r in ip.run_peer(peer, split, log=lambda *_: None).items():
            out["peers"][k] = {"metrics": r["metrics"], "settings": r["settings"],
                               "fit_s": r["fit_seconds"]}
            log(f"  {k}: " + ", ".join(f"{c} {r['metrics'][c]:.4f}" for c in COLS[name])
                + f" ({r['settings']})")
    for label in ("default", "auto"):
        t0 = time.perf_counter()
        lik, extra = "implicit", {}
        if label == "auto":  # what `bayesmf fit --confidence auto` does
            sel = select_confidence(interactions(split.train, "raw"), rank=a.rank,
                                    seed=seed)
            lik, extra = sel.likelihood, {"selection": sel.to_dict()}
        m = bayesmf.BayesMF(method="gibbs", rank=a.rank, likelihood=lik,
                            seed=seed).fit(to_ratings(split.train))
        fit_s = time.perf_counter() - t0
        met = ip.evaluate(mean_scorer(m.posterior), split.train, split.test, split.priority,
                          split.kind)
        out["bayesmf-" + label] = {"metrics": met, "fit_s": round(fit_s, 1), **extra}
        log(f"  bayesmf {label}: " + ", ".join(f"{c} {met[c]:.4f}" for c in COLS[name])
            + f" ({fit_s:.0f} s)" + (f" chose {extra['selection']['chosen']}" if extra
                                     else ""))
    return out


def _reference(name: str) -> dict:
    """The harness's reference figures of a harness split (``shared/bench/README.md``, as
    ``bench_implicit.REFERENCE``, which ``bench_implicit_bayes.py`` reports too; the
    published rows without full-ranking figures left out): ``{method (reference):
    {metrics}}``."""
    from bench_implicit import REFERENCE

    return {f"{r[0]} (reference)": {"metrics": dict(zip(COLS[name], r[1:])), "fit_s": ""}
            for r in REFERENCE[name] if None not in r[1:1 + len(COLS[name])]}


def render(doc) -> str:
    lines = ["# The default implicit model on datasets that chose nothing", "",
             f"Generated {doc['generated']}; command: `{doc['command']}`; load at the end "
             f"{doc['load_average_end']} (2 CPUs). bayesmf default: untuned "
             "(`bayesmf fit --feedback implicit`: Bayesian implicit ALS, Gibbs, rank "
             f"{doc['rank']}, c = 1 + 2 log(1 + r), tau fixed at 16, 100 + 200 sweeps); "
             "bayesmf auto: the same with `--confidence auto` (the slope chosen among "
             "log:0.5-8 on a 20% per-user carve of the training pairs, 30 + 30 sweeps "
             "each, `bayesmf.selection`; fit s includes the search). Ranking by the "
             "posterior-mean preference. Peers: tuned on each split's validation carve by "
             "`shared/bench/implicit_peers.py` (`run_peer`) and refitted on train, in this "
             "run; on the harness's own splits the peers are its reference figures "
             "(`shared/bench/README.md`). `[full-tuned]`: the setting the validation "
             "full-ranking NDCG@10 prefers, where it differs.", ""]
    for name in COLS:
        runs = {int(s): r for s, r in doc["runs"].get(name, {}).items()}
        if not runs:
            continue
        cols = COLS[name]
        lines += [f"## `{name}`", "", f"Split: {next(iter(runs.values()))['info']}.", "",
                  "| seed | method | " + " | ".join(cols) + " | fit s |",
                  "|---|---|" + "---|" * (len(cols) + 1)]
        for s, r in sorted(runs.items()):
            peers = r["peers"] or _reference(name)
            ours = [(k, r[k]) for k in ("bayesmf-default", "bayesmf-auto") if k in r]
            rows = [(f"**{k}**" + (f" (chose {v['selection']['chosen']})"
                                   if "selection" in v else ""), v) for k, v in ours]
            rows += sorted(peers.items(), key=lambda kv: -kv[1]["metrics"][cols[1]])
            for label, res in rows:
                lines.append(f"| {s} | {label} | " + " | ".join(
                    f"{res['metrics'][c]:.4f}" for c in cols) + f" | {res['fit_s']} |")
            best = {c: max(p["metrics"][c] for p in peers.values()) for c in cols}
            for k, v in ours:
                lines.append(f"| {s} | *{k} vs the best peer* | " + " | ".join(
                    "at or above" if v["metrics"][c] >= best[c]
                    else f"{v['metrics'][c] - best[c]:+.4f}" for c in cols) + " | |")
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--splits", default=",".join(SPLITS),
                    help=f"of {', '.join(COLS)} (the harness's splits: bayesmf rows only, "
                         "against the reference figures)")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--data", type=Path, default=ip.DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "implicit_unseen.md")
    a = ap.parse_args(argv)
    jpath = a.out.with_suffix(".json")
    doc = json.loads(jpath.read_text()) if jpath.exists() else {"runs": {}}
    for name in a.splits.split(","):
        for seed in (int(s) for s in a.seeds.split(",")):
            doc["runs"].setdefault(name, {})[str(seed)] = run(name, seed, a)
            save_report(doc, a.out, render, "bench_implicit_unseen.py", argv, rank=a.rank,
                        load_average_end=[round(x, 2) for x in os.getloadavg()])
    print(a.out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
