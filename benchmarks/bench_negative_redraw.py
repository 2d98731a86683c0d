#!/usr/bin/env python
r"""Sampled negatives fixed per fit or redrawn every sweep (issue 13, item 2).

On one of the peer harness's splits (``--split``: ``lastfm-80-20``, the default, or
``ml1m-loo``; seed 0 or ``--split-seed``): Bernoulli-logit Gibbs, rank 32, 100 + 100
sweeps, ``init_scale=1.0`` (``bernoulli_start.md``), every training positive plus
``uniform:4`` negatives, fixed (``"uniform:4"``) or re-paired at every sweep
(``"uniform:4@sweep"``, :mod:`bayesmf.infer.negative_redraw`). Per rule:

* the harness's ranking metrics (``evaluate``) by the posterior-mean P(y = 1): full
  Recall@20 / NDCG@20 on Last.fm; full and sampled HR@10 / NDCG@10 on ML-1M;
* P(relevant) on the held-out positives + fresh negatives drawn by the rule
  (``heldout_negatives``): ECE (10 bins), log-loss, Brier, AUC, and the mean P on the
  model's own training negatives against fresh ones (how much the fit "knows" its
  negatives);
* seconds per sweep and fit time (one process, the rules one after the other; each rule
  compiles its own sweep);
* the expected share of re-paired slots that hit a positive,
  :math:`\sum_u m_u \sum_{i\in P_u} k_i / M^2`, and the measured share still switched
  off after the swap rounds, also for ``--share-splits`` (no fit).

    .venv/bin/python benchmarks/bench_negative_redraw.py --share-splits ml1m-loo
    .venv/bin/python benchmarks/bench_negative_redraw.py --split ml1m-loo

Prints one JSON line per rule and writes ``--out`` (markdown; default
``results/negative_redraw.md`` for Last.fm, ``results/negative_redraw_<split>.md``
otherwise) and its ``.json``; a hand-written reading below the marker of
``_report.READINGS`` is kept on rerun.
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
import pandas as pd  # noqa: E402

import bayesmf  # noqa: E402
from bayesmf.data.negatives import as_sampler  # noqa: E402
from bayesmf.evaluate.classification import auc, brier, ece, log_loss  # noqa: E402
from bayesmf.evaluate.recalibration import heldout_negatives  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import save_report  # noqa: E402
from bench_hpf import interactions  # noqa: E402  (a CSR matrix as Interactions)
from diag_bernoulli_start import prob_scorer  # noqa: E402  (posterior-mean P(y = 1))

HERE = Path(__file__).resolve().parent


def masked_share(train, rule: str) -> float:
    """Expected share of re-paired negative slots that land on a positive of their user."""
    tr = as_sampler(rule).training_ratings(train)
    y = np.asarray(tr.rating)
    u, i = np.asarray(tr.user), np.asarray(tr.item)
    neg = y == 0
    k = np.bincount(i[neg], minlength=tr.n_items).astype(np.float64)
    M = float(neg.sum())
    m_u = np.bincount(u[neg], minlength=tr.n_users).astype(np.float64)
    pos_mass = np.bincount(u[~neg], weights=k[i[~neg]], minlength=tr.n_users)
    return float((m_u * pos_mass).sum() / (M * M))


def measured_share(train, rule: str, rounds: int, draws: int = 5) -> float:
    """Share of negative slots still switched off after the re-pairing and ``rounds`` swap
    rounds (:mod:`bayesmf.infer.negative_redraw`, **Swaps**), mean over ``draws`` sweeps'
    redraws (no fit)."""
    import jax

    from bayesmf.infer.gibbs_kernel import BPMFGibbs
    from bayesmf.infer.negative_redraw import redraw_negatives
    from bayesmf.model.spec import ModelSpec

    tr = as_sampler(rule).training_ratings(train)
    kern = BPMFGibbs(tr, ModelSpec(rank=2, likelihood="bernoulli-logit"),
                     redraw_negatives=True)
    d, cfg = kern.data, kern.cfg
    neg = np.asarray(tr.rating) == 0
    fn = jax.jit(lambda key: redraw_negatives(key, d, cfg.n_users, cfg.n_items,
                                              cfg.redraw_steps, rounds=rounds).obs_mask)
    return float(np.mean([1.0 - np.asarray(fn(jax.random.PRNGKey(s)))[neg].mean()
                          for s in range(draws)]))


def run(split, rule: str, a) -> dict:
    train = interactions(split.train)
    t0 = time.perf_counter()
    m = bayesmf.BayesMF(method="gibbs", likelihood="bernoulli-logit", rank=a.rank,
                        num_samples=a.samples, num_warmup=a.warmup, seed=a.seed,
                        init_scale=a.init_scale).fit(train, negatives=rule)
    fit_s = time.perf_counter() - t0
    post = m.posterior
    met = ip.evaluate(prob_scorer(post), split.train, split.test, split.priority, split.kind)
    tu_ids = np.asarray(split.test.users)  # ids = indices (bench_hpf.interactions)
    ti_ids = np.asarray(split.test.items)
    both = bayesmf.data.Interactions.from_arrays(
        np.concatenate([train.users.decode(train.user), tu_ids]),
        np.concatenate([train.items.decode(train.item), ti_ids]),
        user_vocab=train.users, item_vocab=train.items)
    tu = pd.Series(tu_ids).value_counts()
    neg_df = heldout_negatives(both, tu, rule.split("@")[0], seed=a.seed + 1)
    pos_df = pd.DataFrame({"user": tu_ids, "item": ti_ids})
    pairs = pd.concat([pos_df.assign(y=1), neg_df.assign(y=0)], ignore_index=True)
    y = pairs["y"].to_numpy()
    p = m.predict(pairs[["user", "item"]])["mean"].to_numpy()
    rec = post.attrs["negatives"]
    tr = as_sampler(rule, seed=rec["seed"]).training_ratings(train).to_dataframe()
    tr = tr[tr["rating"] == 0]
    p_tr = m.predict(tr[["user", "item"]])["mean"].to_numpy()
    return {"rule": rule, "metrics": met,
            "ece": ece(y, p), "log_loss": log_loss(y, p), "brier": brier(y, p),
            "auc": auc(y, p), "mean_p_fresh_negatives": float(p[y == 0].mean()),
            "mean_p_own_negatives": float(p_tr.mean()),
            "s_per_sweep": float(post.attrs["seconds_per_sweep"]), "fit_s": fit_s,
            "load": [round(x, 2) for x in os.getloadavg()]}


#: the metric columns of the table: leave-one-out splits (``evaluate`` returns HR@10)
#: and per-user fraction splits.
MAIN_METRICS = {"loo": ["HR@10", "NDCG@10", "sampled_HR@10", "sampled_NDCG@10"],
                "frac": ["Recall@20", "NDCG@20", "Precision@10"]}


def render(doc: dict) -> str:
    rows = doc["rows"]
    met = rows[0]["metrics"]
    names = [k for k in MAIN_METRICS["loo" if "HR@10" in met else "frac"] if k in met]
    lines = ["# Sampled negatives: fixed per fit or redrawn every sweep", "",
             f"Generated {doc['generated']}; command: `{doc['command']}`. Split "
             f"`{doc['split']}` seed {doc['split_seed']}; Bernoulli-logit Gibbs, rank "
             f"{doc['rank']}, {doc['warmup']} + {doc['samples']} sweeps, init_scale "
             f"{doc['init_scale']}, seed {doc['seed']}; ranking by the posterior-mean "
             "P(y = 1); calibration on the held-out positives + fresh negatives by the rule "
             "(4 per positive).", "",
             "| rule | " + " | ".join(names) + " | ECE | log-loss | Brier | AUC | mean P own "
             "training negatives | mean P fresh negatives | s/sweep | fit s | load |",
             "|---|" + "---|" * (len(names) + 10)]
    for r in rows:
        lines.append(f"| `{r['rule']}` | " + " | ".join(
            f"{r['metrics'][k]:.4f}" for k in names) + " | "
            f"{r['ece']:.4f} | {r['log_loss']:.4f} | {r['brier']:.4f} | "
            f"{r['auc']:.4f} | {r['mean_p_own_negatives']:.4f} | "
            f"{r['mean_p_fresh_negatives']:.4f} | {r['s_per_sweep']:.3f} | "
            f"{r['fit_s']:.0f} | {r['load']} |")
    share, swapped = doc["masked_share"], doc["masked_share_after_swaps"]
    lines += ["", "Share of re-paired negative slots that hit a positive of their user, rule "
              f"`{doc['base_rule']}`: expected after the re-pairing alone " + ", ".join(
                  f"{k} {v:.2%}" for k, v in share.items()) + f"; measured after the "
              f"{doc['swap_rounds']} swap rounds (switched off for the sweep; mean of 5 "
              "redraws) " + ", ".join(f"{k} {v:.2%}" for k, v in swapped.items()) + "."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--split", choices=["lastfm-80-20", "ml1m-loo"], default="lastfm-80-20")
    ap.add_argument("--rules", nargs="+", default=["uniform:4", "uniform:4@sweep"])
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--init-scale", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=0, help="seed of the harness split")
    ap.add_argument("--share-splits", nargs="*", default=[],
                    help="other harness splits to report the switched-off share for")
    ap.add_argument("--out", type=Path, default=None,
                    help="markdown result (its .json beside it); default by --split")
    a = ap.parse_args(argv)
    out = a.out or HERE / "results" / ("negative_redraw.md" if a.split == "lastfm-80-20"
                                       else f"negative_redraw_{a.split}.md")
    split = ip.make_split(a.split, ip.DEFAULT_DATA, a.split_seed)
    rows = []
    for rule in a.rules:
        rows.append(run(split, rule, a))
        print(json.dumps(rows[-1]), flush=True)
    from bayesmf.infer.negative_redraw import SWAP_ROUNDS

    base = a.rules[0].split("@")[0]
    share, swapped = {}, {}
    for name in dict.fromkeys([a.split] + list(a.share_splits)):
        sp = split if name == a.split else ip.make_split(name, ip.DEFAULT_DATA, a.split_seed)
        share[name] = masked_share(interactions(sp.train), base)
        swapped[name] = measured_share(interactions(sp.train), base, SWAP_ROUNDS)
    doc = {"rows": rows, "masked_share": share, "masked_share_after_swaps": swapped}
    save_report(doc, out, render, "bench_negative_redraw.py", argv, swap_rounds=SWAP_ROUNDS,
                base_rule=base, split=a.split, split_seed=a.split_seed, rank=a.rank,
                warmup=a.warmup, samples=a.samples, init_scale=a.init_scale, seed=a.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
