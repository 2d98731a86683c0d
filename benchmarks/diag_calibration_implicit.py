#!/usr/bin/env python
"""Diagnosis of the mis-calibration of P(relevant) (issue 13): where does Bernoulli-logit
Gibbs with sampled negatives over-predict, and what moves it?

Everything here is fitted and measured on a carve of the TRAINING split only (per user
``--fraction`` of the training positives held out, fresh negatives for them by the same
rule, :func:`bayesmf.evaluate.recalibration.recalibration_carve`); the test split of
``bench_calibration_implicit.py`` is not touched except in the ``--protocol`` check, which
compares the benchmark's former test negatives with correctly drawn ones (no fitting on it).

Per configuration (rank, rule): ECE / mean prediction / base rate on (a) the pairs the
model was fitted to (its positives and its own sampled negatives) and (b) the fresh carve
pairs; the AUC on (b); and how far (b)'s ECE falls under one global logit shift and under
a Platt map fitted on (b) itself (in-sample: an upper bound on what a map can do).

    .venv/bin/python benchmarks/diag_calibration_implicit.py --configs 32:uniform:4 8:uniform:4 \\
        16:uniform:4 32:uniform:1 --json results/calibration_implicit_diagnosis.json \\
        --out results/calibration_implicit_diagnosis.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import bayesmf
from bayesmf.data.negatives import as_sampler
from bayesmf.datasets import load_interactions_source
from bayesmf.evaluate.classification import auc, ece
from bayesmf.evaluate.recalibration import (Recalibration, fit_recalibration,
                                            recalibration_carve)

HERE = Path(__file__).resolve().parent
DATA = {"lastfm": "/work/shared/data/hetrec2011-lastfm-2k/user_artists.dat",
        "latest-small": "movielens:latest-small"}


def _stats(y, p):
    return {"n": int(len(y)), "base_rate": float(np.mean(y)), "mean_pred": float(np.mean(p)),
            "ece": ece(y, p), "auc": auc(y, p)}


def run_config(train, rank, rule, a):
    carve = recalibration_carve(train, negatives=rule, fraction=a.fraction, seed=a.seed)
    t0 = time.perf_counter()
    m = bayesmf.BayesMF(method="gibbs", likelihood="bernoulli-logit", rank=rank,
                        num_samples=a.samples, num_warmup=a.warmup, seed=a.seed).fit(
        carve.fit, negatives=rule)
    fit_s = time.perf_counter() - t0
    rec = m.posterior.attrs["negatives"]
    tr = as_sampler(rule, seed=rec["seed"]).training_ratings(carve.fit).to_dataframe()
    p_tr = m.predict(tr[["user", "item"]])["mean"].to_numpy()
    pairs = carve.pairs
    p_cv = m.predict(pairs[["user", "item"]])["mean"].to_numpy()
    y_cv = pairs["y"].to_numpy()
    pos = y_cv == 1
    out = {"rank": rank, "rule": rule, "fit_s": fit_s,
           "train_pairs": _stats(tr["rating"].to_numpy(), p_tr),
           "train_pos_mean": float(p_tr[tr["rating"].to_numpy() == 1].mean()),
           "train_neg_mean": float(p_tr[tr["rating"].to_numpy() == 0].mean()),
           "carve": _stats(y_cv, p_cv),
           "carve_pos_mean": float(p_cv[pos].mean()), "carve_neg_mean": float(p_cv[~pos].mean())}
    shift = Recalibration.from_probabilities(y_cv, p_cv, "shift")
    platt = Recalibration.from_probabilities(y_cv, p_cv, "platt")
    out["carve_shift"] = {"b": shift.b, "ece": ece(y_cv, shift.apply(p_cv))}
    out["carve_platt_mean"] = {"a": platt.a, "b": platt.b, "ece": ece(y_cv, platt.apply(p_cv))}
    pd_ = fit_recalibration(m, pairs, method="platt", on="draws")
    out["carve_platt_draws"] = {"a": pd_.a, "b": pd_.b,
                                "ece": ece(y_cv, pd_.predict(m, pairs))}
    out["maps"] = cross_fit_maps(m, pairs, a.seed)
    return out


MAPS = [("platt", "draws"), ("platt", "mean"), ("beta", "draws"), ("beta", "mean"),
        ("isotonic", "mean"), ("shift", "draws")]


def cross_fit_maps(m, pairs, seed):
    """Which map: 2-fold cross-fitting within the carve, split by user (fit on one half
    of the users' carve pairs, score the other half), pooled out-of-fold metrics."""
    from bayesmf.evaluate.classification import brier, log_loss

    post = m.posterior
    u, i, ku, ki = post.encode_pairs(pairs["user"].to_numpy(), pairs["item"].to_numpy())
    mm, _ = post.pair_moments(u, i, ku, ki)
    y = pairs["y"].to_numpy()
    p_raw = (1.0 / (1.0 + np.exp(-mm))).mean(axis=0)
    users = pairs["user"].unique()
    rng = np.random.default_rng(seed + 11)
    half = set(rng.permutation(users)[: len(users) // 2].tolist())
    fold = pairs["user"].map(lambda x: x in half).to_numpy()
    res = {"raw": {"ece": ece(y, p_raw), "log_loss": log_loss(y, p_raw),
                   "brier": brier(y, p_raw), "auc": auc(y, p_raw)}}
    for meth, on in MAPS:
        oof = np.empty(len(y))
        for f in (True, False):
            fit, sc = fold == f, fold != f
            if on == "draws":
                cal = Recalibration.from_draws(y[fit], mm[:, fit], method=meth)
                oof[sc] = cal.apply_eta(mm[:, sc])
            else:
                cal = Recalibration.from_probabilities(y[fit], p_raw[fit], meth)
                oof[sc] = cal.apply(p_raw[sc])
        res[f"{meth}/{on}"] = {"ece": ece(y, oof), "log_loss": log_loss(y, oof),
                               "brier": brier(y, oof), "auc": auc(y, oof)}
    return res


def protocol_check(events, a):
    """Popularity of the benchmark's former test negatives vs negatives drawn by the rule."""
    from bayesmf.evaluate.recalibration import heldout_negatives

    train, test = events.fraction_split(0.2, seed=a.seed)
    both = bayesmf.data.Interactions.from_arrays(
        np.concatenate([train.users.decode(train.user), test.users.decode(test.user)]),
        np.concatenate([train.items.decode(train.item), test.items.decode(test.item)]),
        user_vocab=train.users, item_vocab=train.items)
    rule = as_sampler("uniform:4", seed=a.seed + 1)
    neg = rule.training_ratings(both).to_dataframe()
    neg = neg[neg["rating"] == 0]
    tu = pd.Series(test.users.decode(test.user)).value_counts()
    neg = neg[neg["user"].isin(tu.index)]
    old = neg[neg.groupby("user").cumcount().to_numpy() < 4 * neg["user"].map(tu).to_numpy()]
    new = heldout_negatives(both, tu, "uniform:4", seed=a.seed + 1)
    d = train.item_counts()
    ii = lambda df: train.items.encode(df["item"].to_numpy())
    return {"old_mean_item_index": float(ii(old).mean()), "new_mean_item_index":
            float(ii(new).mean()), "n_items": int(train.n_items),
            "old_mean_item_popularity": float(d[ii(old)].mean()),
            "new_mean_item_popularity": float(d[ii(new)].mean()),
            "catalogue_mean_popularity": float(d.mean()),
            "spearman_index_popularity": float(pd.Series(np.arange(len(d))).corr(
                pd.Series(d), method="spearman"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", choices=sorted(DATA), default="lastfm")
    ap.add_argument("--configs", nargs="+", default=["32:uniform:4"],
                    help="rank:rule, e.g. 16:uniform:4")
    ap.add_argument("--fraction", type=float, default=0.2)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=None, help="markdown report")
    ap.add_argument("--render", type=Path, default=None,
                    help="only re-render the markdown of a saved --json run")
    a = ap.parse_args(argv)
    if a.render:
        res = json.loads(a.render.read_text())
        text = render(res, res.get("command", "?"))
        if a.out:
            a.out.write_text(text)
        print(text)
        return 0
    events = load_interactions_source(DATA[a.data])
    train, _ = events.fraction_split(0.2, seed=a.seed)  # the benchmark's training split
    res = {"args": {k: str(v) for k, v in vars(a).items()},
           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "protocol": protocol_check(events, a),
           "configs": []}
    print(json.dumps(res["protocol"], indent=1), flush=True)
    for c in a.configs:
        rank, rule = c.split(":", 1)
        r = run_config(train, int(rank), rule, a)
        res["configs"].append(r)
        print(json.dumps(r, indent=1), flush=True)
    res["load"] = [round(x, 2) for x in os.getloadavg()]
    res["command"] = " ".join(argv if argv is not None else sys.argv[1:])
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    text = render(res, res["command"])
    if a.out:
        a.out.write_text(text)
    print(text)
    return 0


def render(res: dict, cmd: str) -> str:
    """The diagnosis as markdown."""
    pr = res["protocol"]
    lines = ["# Why P(relevant) was mis-calibrated: diagnosis on a training carve", "",
             f"Generated {res['date']}; command: `python benchmarks/diag_calibration_implicit.py "
             f"{cmd}`; load at the end {res['load']} ({os.cpu_count()} CPUs).", "",
             "## 1. The former evaluation negatives were not drawn by the fitting rule", "",
             "`bench_calibration_implicit.py` used to draw `n * n_u` negatives per user "
             "(`training_ratings`, sorted by (user, item)) and keep the first `n * k_u`: the "
             "lowest item indices. On this data item index and popularity are correlated "
             f"(Spearman {pr['spearman_index_popularity']:.2f}), so those negatives had mean "
             f"item index {pr['old_mean_item_index']:.0f} of {pr['n_items']:,} and mean "
             f"training popularity {pr['old_mean_item_popularity']:.2f}, against "
             f"{pr['new_mean_item_index']:.0f} and {pr['new_mean_item_popularity']:.2f} for "
             "negatives drawn by the rule (`heldout_negatives`; catalogue mean "
             f"{pr['catalogue_mean_popularity']:.2f}). A popular unseen item is more "
             "likely to score high, so the evaluation set was harder than the population "
             "the model was fitted to (`calibration_implicit.md` scores one model on both "
             "sets of negatives: most of the former ECE was this).", "",
             "## 2. What remains, per configuration (fit and measure on a training carve)", "",
             f"Model fitted on {1 - float(res['args']['fraction']):.0%} of each user's "
             "training positives + its sampled negatives; *fresh* = the carved positives + "
             "negatives drawn by the same rule. Shift / Platt are fitted on the fresh pairs "
             "and scored on them (in-sample: what a map can reach at best).", "",
             "| rank | rule | ECE own training pairs | ECE fresh | AUC fresh | mean P fresh "
             "(base rate) | P train negatives | P fresh negatives | P train positives | "
             "P fresh positives | ECE after one logit shift | Platt (mean) a, b -> ECE | "
             "Platt (draws) a, b -> ECE |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in res["configs"]:
        t, f = c["train_pairs"], c["carve"]
        pm, pd_ = c["carve_platt_mean"], c["carve_platt_draws"]
        lines.append(
            f"| {c['rank']} | `{c['rule']}` | {t['ece']:.4f} | **{f['ece']:.4f}** | "
            f"{f['auc']:.4f} | {f['mean_pred']:.4f} ({f['base_rate']:.2f}) | "
            f"{c['train_neg_mean']:.4f} | {c['carve_neg_mean']:.4f} | "
            f"{c['train_pos_mean']:.4f} | {c['carve_pos_mean']:.4f} | "
            f"{c['carve_shift']['ece']:.4f} (b {c['carve_shift']['b']:+.3f}) | "
            f"{pm['a']:.2f}, {pm['b']:+.2f} -> {pm['ece']:.4f} | "
            f"{pd_['a']:.2f}, {pd_['b']:+.2f} -> {pd_['ece']:.4f} |")
    c0 = res["configs"][0]
    t, f = c0["train_pairs"], c0["carve"]
    lines += ["", f"Reading (rank {c0['rank']}, `{c0['rule']}`): on fresh pairs the mean "
              f"prediction is {f['mean_pred']:.4f} for a base rate of {f['base_rate']:.2f}; "
              f"fresh negatives score {c0['carve_neg_mean']:.4f} against "
              f"{c0['train_neg_mean']:.4f} for the model's own training negatives, so the "
              "model does learn its fixed negatives a little (more so with fewer negatives "
              "per positive, `uniform:1`), but that is a small level error: one global "
              "logit shift leaves the ECE where it was. The larger error is shape: the "
              "fitted Platt slope is above 1 in every configuration, on the mean and per "
              "posterior draw, i.e. the predicted probabilities are *under*-confident "
              "(too close to the base rate), and they are so on the "
              f"model's own training pairs too (ECE {t['ece']:.4f} with the mean exactly at "
              f"the base rate, {t['mean_pred']:.4f}). Lowering the rank does not help "
              "(8 and 16 are no better than 32 and lose AUC), fewer negatives are worse: "
              "no model setting tried brings the raw ECE near 0.02, a 2-parameter Platt "
              "map gets to about 0.017, and the maps of section 3 further."]
    if any("maps" in c for c in res["configs"]):
        names = ["raw"] + [f"{m}/{o}" for m, o in MAPS]
        lines += ["", "## 3. Which map: 2-fold cross-fitting within the carve", "",
                  "Each map fitted on the carve pairs of half of the users and scored on the "
                  "other half, and vice versa (pooled out-of-fold; a pooled AUC mixes two "
                  "maps, so it can move a little even for monotone maps). `draws`: the map "
                  "acts on every posterior draw of the logit; `mean`: on the predictive "
                  "mean. ECE / log-loss / AUC:", "",
                  "| rank | rule | " + " | ".join(names) + " |",
                  "|---|---|" + "---|" * len(names)]
        for c in res["configs"]:
            if "maps" not in c:
                continue
            cells = [f"{c['maps'][n]['ece']:.4f} / {c['maps'][n]['log_loss']:.4f} / "
                     f"{c['maps'][n]['auc']:.4f}" for n in names]
            lines.append(f"| {c['rank']} | `{c['rule']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
