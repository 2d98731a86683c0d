#!/usr/bin/env python
"""bayesmf's ordinal / Bernoulli likelihoods vs myFM on MovieLens-100K (same splits, same run).

    .venv/bin/python benchmarks/bench_likelihoods.py [--splits u3 | u1,u2,u3,u4,u5]
        [--tasks ordinal,binary,gaussian] [--binary-splits u3] [--samples 200 --warmup 100]
        [--seed 0] [--peers-only] [--no-doc-rows] [--out benchmarks/results/likelihoods]

Splits come from ``../shared/bench/peers.py`` (``load_split("ml100k-uK")``: the official
uK.base / uK.test files, users and items indexed over train and test together); the peer
features are peers.py's one-hot ``user | item`` matrix, with myFM's grouped priors
(``group_shapes=[n_users, n_items]``). Every model is rank 10 (the myFM classifier also
rank 8, the rank of its example notebook).

Tasks (one block per task and split):

* ``ordinal``: the ratings 1..5 as 5 ordered classes. myFM ``MyFMOrderedProbit`` vs
  ``bayesmf.BayesMF(likelihood="ordinal")``. Metrics: RMSE / MAE of the expected rating
  ``sum_l l P(y=l)`` (never clipped: it lies in [1, 5]), 5-class log-loss
  ``mean -log P(y_true)`` (probabilities clipped at 1e-15, as sklearn and myFM do), accuracy
  of the most probable class. The Gaussian fits of the ``gaussian`` task appear here too,
  discretised at 1.5, 2.5, 3.5, 4.5 (``P(y=l)`` = mass of the posterior-predictive mixture of
  ``N(f_s, 1/tau_s)`` between the cut-points): the baseline that the ordinal likelihood has
  to beat in log-loss.
* ``binary``: ``y = rating >= 4`` on the same split. myFM ``MyFMGibbsClassifier`` (probit,
  rank 8 and 10) vs ``bayesmf.BayesMF(likelihood="bernoulli-probit" | "bernoulli-logit")``
  fitted to the 0/1 labels. Metrics: AUC (rank-based, average ranks for ties), log-loss,
  Brier score of ``P(y=1)`` = the posterior mean of the success probability. The Gaussian
  fits appear as ``P(rating > 3.5)``.
* ``gaussian``: bayesmf's default Gaussian Gibbs model and myFM's ``MyFMRegressor``, with
  the metrics of ``bench_gibbs.py`` (clipped-mean RMSE, 90% coverage and NLPD of the
  moment-matched Gaussian, exact mixture NLPD).

Sampler settings: bayesmf ``--warmup`` + ``--samples`` sweeps, 1 chain; myFM "matched"
rows run ``n_iter = warmup + samples`` and keep the last ``samples`` iterations (myFM keeps
the last ``n_kept_samples`` of its ``n_iter`` iterations, so the rest is its burn-in). On
u3 (where myFM's documentation quotes figures) "doc" rows also rerun myFM with the
documented settings: ordered probit and regressor 300 / 200 iterations keeping all of them
(``n_kept_samples=n_iter``, i.e. no burn-in), random_seed 42; classifier rank 8, 200
iterations, ``n_kept_samples`` default (= n_iter - 5 = 195), random_seed 334.

Timing: ``fit s`` is the wall time of ``fit``; ``s/sweep`` is bayesmf's sampler time per
sweep without JAX compilation (compilation in its own column; falls back to fit s /
sweeps when the posterior does not record it) and myFM's fit s / n_iter. One quality run
per row (no timing repeats: the 2-core machines are shared, compare ratios within one
table). Peak RSS is sampled during each fit and prediction (``bench_gibbs.PeakRSS``: the
process's resident size, which includes what earlier rows left allocated).

``--peers-only`` runs the myFM rows only. Without it, each bayesmf likelihood row runs when
``bayesmf.BayesMF(likelihood=...)`` reaches the model spec and ``Posterior.predictive``
exists; otherwise the row says "not available in this checkout" and is skipped.
Writes ``<out>.md`` and ``<out>.json`` (default ``benchmarks/results/likelihoods``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # myFM's progress bar

import numpy as np
import pandas as pd
from scipy.special import ndtr
from scipy.stats import rankdata

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_gibbs  # noqa: E402  (also puts ../shared/bench on sys.path)
from bench_gibbs import PeakRSS, environment, fmt  # noqa: E402

peers = bench_gibbs.peers

LEVELS = np.arange(1.0, 6.0)           # ML-100K ratings
CUTS = np.array([1.5, 2.5, 3.5, 4.5])  # Gaussian -> 5 classes
THRESHOLD = 4.0                        # binary task: rating >= 4
EPS = 1e-15                            # probability clip of the log-losses (sklearn / myFM)
PREDICT_CHUNK = 2000                   # test pairs per bayesmf predictive mixture
BAYESMF_LIKELIHOODS = ("ordinal", "bernoulli-probit", "bernoulli-logit")

REFERENCES = [
    {"task": "ordinal", "split": "ml100k-u3", "library": "myFM",
     "what": "MyFMOrderedProbit, grouped (group_shapes of the user/movie one-hot), rank 10, "
             "n_iter=300, n_kept_samples=300, random_seed=42",
     "metrics": {"rmse": 0.8906, "mae": 0.6985},
     "source": "myFM documentation, 'Ordinal Regression Tutorial' > 'Movielens ratings as "
               "ordinal outcome' (https://myfm.readthedocs.io/en/stable/ordinal-regression"
               ".html; doc/source/ordinal-regression.rst of github.com/tohtsky/myFM at b9ba70e): "
               "'which gives us RMSE=0.8906 and MAE=0.6985'"},
    {"task": "ordinal", "split": "ml100k-u3", "library": "myFM",
     "what": "MyFMOrderedProbit, grouped, rank 8, n_iter=200 (n_kept_samples default 195), "
             "random_seed=334; RMSE on the 0..4 class scale (same value)",
     "metrics": {"rmse": 0.8927, "mae": 0.7002, "log_loss": 1.2289},
     "source": "myFM examples/ml-100k.ipynb, 'Ordered Probit Regression' cell with "
               "grouping=True: rmse=0.892655978978214, mae=0.700190522012305, "
               "ll=1.2288877377489642"},
    {"task": "binary", "split": "ml100k-u3", "library": "myFM",
     "what": "MyFMClassifier (= MyFMGibbsClassifier), y = rating >= 4, grouped, rank 8, "
             "n_iter=200 (n_kept_samples default 195), random_seed=334",
     "metrics": {"auc": 0.7896, "log_loss": 0.5484},
     "source": "myFM examples/ml-100k.ipynb (github.com/tohtsky/myFM/blob/master/examples/"
               "ml-100k.ipynb, at b9ba70e), 'Classification' cell with grouping=True: "
               "roc=0.789559470948147, ll=0.548396514784051 (sklearn roc_auc_score / log_loss)"},
    {"task": "gaussian", "split": "ml100k-u3", "library": "myFM",
     "what": "MyFMRegressor, grouped, rank 10, n_iter=200, n_kept_samples=200, "
             "random_seed=42",
     "metrics": {"rmse": 0.8925, "mae": 0.7001},
     "source": "myFM documentation, 'A Basic Tutorial with Movielens 100K' > 'Assuming "
               "Separate Variance for movie & user' (https://myfm.readthedocs.io/en/stable/"
               "movielens.html; doc/source/movielens.rst at b9ba70e): 'RMSE=0.8925, MAE=0.7001'"},
]

# Documented myFM settings (used by the "doc" rows on u3): (rank, n_iter, n_kept, seed)
DOC_SETTINGS = {"ordinal": (10, 300, 300, 42), "binary": (8, 200, None, 334),
                "gaussian": (10, 200, 200, 42)}

MYFM_NOTES = [
    "myFM ordered probit (C++ OprobitSampler, Albert & Chib 2001): noise precision fixed "
    "at 1; K-1 free cut-points gamma_0 < ... < gamma_{K-2} with gamma_0 = a_0, gamma_k = "
    "gamma_{k-1} + exp(a_k), prior a_k ~ N(0, 1/reg_0) (reg_0 = 1) on every a_k "
    "(fix_gamma0 = false). Each sweep draws the cut-points with the latent z marginalised "
    "(Metropolis-Hastings: Newton mode of log p(a | scores), multivariate-t proposal with "
    "nu = 5 and scale = inverse negative Hessian), then z | cut-points by truncated "
    "normals, then the FM parameters given z. The global bias w0 ~ N(0, 1/reg_0) is sampled "
    "too, so cut-points and w0 are only identified through gamma - w0 (the docs plot "
    "`cutpoint_samples - w0_samples[:, None]`). Predictive P(y=l) = mean over kept samples "
    "of Phi(gamma_l - f) - Phi(gamma_{l-1} - f). Labels are 0..K-1 with K = y.max()+1 "
    "(the docs fit `y_train - 1`).",
    "myFM classifier: Albert-Chib probit augmentation, latent z ~ N(f, 1) truncated at 0, "
    "noise precision fixed at 1; predict_proba = mean over kept samples of Phi(f_s).",
    "myFM priors (all tasks): w0 ~ N(0, 1/reg_0); per group g, w_j ~ N(mu_w[g], "
    "1/lambda_w[g]), V_jr ~ N(mu_V[g,r], 1/lambda_V[g,r]); lambda ~ Gamma(alpha_0/2, rate "
    "beta_0/2), mu ~ N(mu_0, 1/(gamma_0 lambda)); defaults alpha_0 = beta_0 = gamma_0 = "
    "reg_0 = 1, mu_0 = 0; init V ~ N(0, 0.1^2), lambda initialised at 1e-5.",
    "myFM burn-in: fit(n_iter, n_kept_samples) keeps the LAST n_kept_samples iterations; "
    "the default n_kept_samples is n_iter - 5. The documented ordinal (0.8906) and "
    "regression (0.8925) figures keep every iteration (n_kept_samples = n_iter, no "
    "burn-in); the notebook's classifier keeps 195 of 200.",
    "Encoding: the docs one-hot encode with sklearn OneHotEncoder(handle_unknown='ignore') "
    "fitted on train, so the 36 u3 test rows with an item unseen in training get no item "
    "feature; here (peers.py one-hot over train+test ids) those items have a column that "
    "the sampler draws from its group prior (36 of 20,000 rows, 0.18%; bayesmf's "
    "predictive uses its population fallback for them).",
]


# ------------------------------------------------------------------------ metrics

def _rank_auc(y, p):
    """Rank-based (Mann-Whitney) AUC, average ranks for ties."""
    y = np.asarray(y, bool)
    r = rankdata(p)  # average ranks
    n1, n0 = y.sum(), (~y).sum()
    return float((r[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _log_loss(y, p):
    p = np.clip(np.asarray(p, np.float64), EPS, 1 - EPS)
    y = np.asarray(y, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _brier(y, p):
    return float(np.mean((np.asarray(p, np.float64) - np.asarray(y, np.float64)) ** 2))


LOCAL_CLASSIFICATION = {"auc": _rank_auc, "log_loss": _log_loss, "brier": _brier}


def classification_fns():
    """``bayesmf.evaluate.classification`` when this checkout has it, else local ones."""
    try:
        from bayesmf.evaluate import classification as c  # noqa: F401
        fns = {k: getattr(c, k) for k in LOCAL_CLASSIFICATION}
        return fns, "bayesmf.evaluate.classification"
    except (ImportError, AttributeError):
        return dict(LOCAL_CLASSIFICATION), "local (bench_likelihoods.py)"


CLS_FNS, CLS_SOURCE = classification_fns()


def binary_metrics(y01, p):
    out = {}
    for k, fn in CLS_FNS.items():
        try:
            v = float(fn(y01, p))
        except Exception as exc:  # an API mismatch must not lose the row
            v = LOCAL_CLASSIFICATION[k](y01, p)
            out.setdefault("metric_warnings", []).append(f"{k}: {type(exc).__name__}: {exc}")
        ref = LOCAL_CLASSIFICATION[k](y01, p)
        if abs(v - ref) > 1e-6 * max(1.0, abs(ref)):
            out.setdefault("metric_warnings", []).append(
                f"{k}: {CLS_SOURCE} gives {v:.6f}, local {ref:.6f}")
        out[k] = v
    out["p_mean"] = float(np.mean(p))
    out["base_rate"] = float(np.mean(y01))
    return out


def ordinal_metrics(y, P, support=LEVELS):
    """y on the rating scale; P (n, K) class probabilities over ``support``."""
    P = np.asarray(P, np.float64)
    support = np.asarray(support, np.float64)
    idx = np.searchsorted(support, y)
    assert np.all(support[idx] == y), "test ratings outside the support"
    expected = P @ support
    err = expected - y
    return {"rmse": float(np.sqrt(np.mean(err ** 2))), "mae": float(np.mean(np.abs(err))),
            "log_loss": float(-np.mean(np.log(np.clip(P[np.arange(len(y)), idx], EPS, 1)))),
            "accuracy": float(np.mean(support[P.argmax(1)] == y)),
            "prob_row_sum_max_dev": float(np.max(np.abs(P.sum(1) - 1)))}


def gaussian_derived(y, f, sd, chunk=2000):
    """Class probabilities and P(r > 3.5) of the mixture of N(f_s, sd_s^2) (S, n)."""
    S, n = f.shape
    sd = np.broadcast_to(sd, (S, n))
    P = np.zeros((n, len(LEVELS)))
    p_hi = np.zeros(n)
    edges = np.concatenate([[-np.inf], CUTS, [np.inf]])
    for a in range(0, n, chunk):
        fa, sa = f[:, a:a + chunk], sd[:, a:a + chunk]
        cdf = ndtr((edges[:, None, None] - fa[None]) / sa[None])  # (K+1, S, m)
        P[a:a + chunk] = np.diff(cdf, axis=0).mean(axis=1).T
        p_hi[a:a + chunk] = ndtr((fa - (THRESHOLD - 0.5)) / sa).mean(axis=0)
    return P, p_hi


# ------------------------------------------------------------------------ myFM rows

def _myfm_fit(split, kind, rank, n_iter, n_kept, seed, target):
    import myfm

    u, i, _ = split.train
    X = peers._onehot(u, i, split.n_users, split.n_items)
    cls = {"ordinal": myfm.MyFMOrderedProbit, "binary": myfm.MyFMGibbsClassifier,
           "gaussian": myfm.MyFMGibbsRegressor}[kind]
    model = cls(rank=rank, random_seed=seed)
    with peers.Timer() as tf:
        model.fit(X, target, n_iter=n_iter, n_kept_samples=n_kept,
                  group_shapes=[split.n_users, split.n_items])
    tu, ti, _ = split.test
    Xt = peers._onehot(tu, ti, split.n_users, split.n_items)
    return model, Xt, tf


def _myfm_timing(res, tf, n_iter, n_kept):
    res.update(fit_s=tf.wall, fit_cpu_s=tf.cpu, s_per_iter=tf.wall / n_iter, n_iter=n_iter,
               n_kept=n_kept, compile_s=None)


def myfm_ordinal(split, rank, n_iter, n_kept, seed):
    y = split.test[2]
    model, Xt, tf = _myfm_fit(split, "ordinal", rank, n_iter, n_kept, seed,
                              split.train[2].astype(np.int64) - 1)
    with peers.Timer() as tp:
        P = model.predict_proba(Xt)
    res = ordinal_metrics(y, P)
    _myfm_timing(res, tf, n_iter, len(model.predictor_.samples))
    cp = model.cutpoint_samples - model.w0_samples[:, None]
    res.update(predict_s=tp.wall, cutpoints_minus_w0_mean=cp.mean(0).tolist(),
               cutpoints_minus_w0_sd=cp.std(0).tolist())
    return res


def myfm_binary(split, rank, n_iter, n_kept, seed):
    y01 = (split.test[2] >= THRESHOLD).astype(np.int64)
    model, Xt, tf = _myfm_fit(split, "binary", rank, n_iter, n_kept, seed,
                              (split.train[2] >= THRESHOLD).astype(np.int64))
    with peers.Timer() as tp:
        p = model.predict_proba(Xt)
    res = binary_metrics(y01, p)
    _myfm_timing(res, tf, n_iter, len(model.predictor_.samples))
    res["predict_s"] = tp.wall
    return res


def myfm_gaussian(split, rank, n_iter, n_kept, seed):
    """peers.run_myfm (the bench_gibbs definition), plus the discretised metrics."""
    if n_kept is None:
        n_kept = min(max(n_iter - 5, 5), n_iter)
    out = peers.run_myfm(split, {"myfm_iter": (n_iter, n_kept), "rank": rank, "seed": seed})
    return _gaussian_result(split, out["samples"], out["alpha"], out, out["fit"].wall,
                            out["fit"].wall / n_iter, n_iter, n_kept,
                            predict_s=out["predict"].wall, fit_cpu_s=out["fit"].cpu)


def _gaussian_result(split, f, tau, pred, fit_s, s_per_iter, n_iter, n_kept, extra_var=None,
                     **extra):
    """Gaussian metrics (peers.evaluate definitions) + discretised ordinal/binary ones."""
    y = split.test[2]
    res = peers.evaluate(split, {"mean": pred["mean"], "var": pred["var"]})
    res.update(peers.mixture_metrics(y, f, tau))
    var = (1.0 / np.asarray(tau, np.float64))[:, None]
    if extra_var is not None:
        var = var + extra_var
    P, p_hi = gaussian_derived(y, f, np.sqrt(var))
    res["ordinal_from_gaussian"] = ordinal_metrics(y, P)
    res["binary_from_gaussian"] = binary_metrics((y >= THRESHOLD).astype(np.int64), p_hi)
    res.update(fit_s=fit_s, s_per_iter=s_per_iter, n_iter=n_iter, n_kept=n_kept,
               noise_std=float(np.sqrt(np.mean(1.0 / np.asarray(tau)))), **extra)
    res.setdefault("compile_s", None)
    return res


# ------------------------------------------------------------------------ bayesmf rows

def bayesmf_support(likelihood):
    """(True, "") when this checkout's BayesMF takes ``likelihood=`` into its model spec
    and posteriors have ``predictive``; else (False, reason)."""
    import bayesmf
    from bayesmf.posterior import Posterior

    try:
        spec = bayesmf.BayesMF(method="gibbs", rank=2, likelihood=likelihood).make_spec()
    except Exception as exc:
        return False, f"{type(exc).__name__}: {exc}"
    got = getattr(spec, "likelihood", None)  # a name, or a Likelihood object with .name
    got_name = got if isinstance(got, str) else getattr(got, "name", None)
    try:  # canonical name (aliases) when the checkout has the likelihood registry
        from bayesmf.model.likelihoods import get_likelihood
        want = get_likelihood(likelihood).name
    except Exception:
        want = likelihood
    if got_name != want:
        return False, (f"BayesMF does not pass likelihood= to ModelSpec (spec.likelihood = "
                       f"{got!r}; the keyword would be an unknown method option)")
    if not hasattr(Posterior, "predictive"):
        return False, "Posterior.predictive is missing"
    return True, ""


def _frames(split, binary=False):
    u, i, r = split.train
    tu, ti, ty = split.test
    if binary:
        r = (r >= THRESHOLD).astype(np.float64)
        ty = (ty >= THRESHOLD).astype(np.float64)
    return (pd.DataFrame({"user": u, "item": i, "rating": r}),
            pd.DataFrame({"user": tu, "item": ti, "rating": ty}))


def _bayesmf_timing(model, n_sweeps):
    a = model.posterior_.attrs
    fit_s = float(model.fit_seconds_)
    spi = a.get("seconds_per_sweep")
    return dict(fit_s=fit_s, s_per_iter=float(spi) if spi is not None else fit_s / n_sweeps,
                s_per_iter_source="posterior attrs (no compile)" if spi is not None
                else "fit s / sweeps (includes compile)",
                compile_s=a.get("compile_seconds"), n_iter=n_sweeps)


def _cutpoints(post):
    for name in ("cutpoints", "cut", "thresholds", "kappa"):
        try:
            c = np.asarray(post.flat(name), np.float64)
        except Exception:
            continue
        out = {"cutpoints_name": name, "cutpoints_mean": c.mean(0).tolist()}
        try:
            mu = np.asarray(post.flat("mu"), np.float64)
            out["cutpoints_minus_mu_mean"] = (c - mu[:, None]).mean(0).tolist()
        except Exception:
            pass
        return out
    return {}


def bayesmf_likelihood_row(split, likelihood, rank, warmup, samples, seed):
    import bayesmf

    binary = likelihood.startswith("bernoulli")
    train_df, test_df = _frames(split, binary)
    y = test_df["rating"].to_numpy()
    model = bayesmf.BayesMF(method="gibbs", likelihood=likelihood, rank=rank,
                            num_samples=samples, num_warmup=warmup, seed=seed)
    model.fit(train_df)
    t0 = time.perf_counter()
    means, logpdfs, pmfs, support = [], [], [], LEVELS
    for a in range(0, len(y), PREDICT_CHUNK):  # the mixture holds S x pairs (x K) arrays
        sl = slice(a, a + PREDICT_CHUNK)
        mix = model.posterior_.predictive(test_df["user"].iloc[sl], test_df["item"].iloc[sl])
        means.append(np.asarray(mix.mean(), np.float64))
        logpdfs.append(np.asarray(mix.logpdf(y[sl]), np.float64))
        if not binary:
            support = np.asarray(getattr(mix, "support", LEVELS), np.float64)
            if hasattr(mix, "pmf"):
                pmfs.append(np.asarray(mix.pmf(), np.float64))
            else:  # P(y = l) from the log-pmf at every level
                pmfs.append(np.stack([np.exp(mix.logpdf(np.full(len(y[sl]), lv)))
                                      for lv in support], 1))
    mean, logpdf = np.concatenate(means), np.concatenate(logpdfs)
    if binary:
        res = binary_metrics(y.astype(np.int64), mean)
    else:
        res = ordinal_metrics(y, np.concatenate(pmfs), support)
        res["rmse_of_mix_mean"] = float(np.sqrt(np.mean((mean - y) ** 2)))
        res.update(_cutpoints(model.posterior_))
    res["predict_s"] = time.perf_counter() - t0
    res["log_loss_from_logpdf"] = float(-np.mean(logpdf))  # cross-check (no clipping)
    res.update(_bayesmf_timing(model, warmup + samples), n_kept=samples)
    return res


def bayesmf_gaussian(split, rank, warmup, samples, seed):
    """bayesmf's default (Gaussian) Gibbs model through the BayesMF facade."""
    import bayesmf

    train_df, test_df = _frames(split)
    model = bayesmf.BayesMF(method="gibbs", rank=rank, num_samples=samples,
                            num_warmup=warmup, seed=seed).fit(train_df)
    post = model.posterior_
    t0 = time.perf_counter()
    u, i, ku, ki = post.encode_pairs(test_df["user"], test_df["item"])
    m, v = post.pair_moments(u, i, ku, ki)
    tau = np.asarray(post.flat("tau"), np.float64)
    pred = {"mean": m.mean(0), "var": m.var(0) + v.mean(0) + np.mean(1.0 / tau)}
    predict_s = time.perf_counter() - t0
    t = _bayesmf_timing(model, warmup + samples)
    return _gaussian_result(split, m, tau, pred, t.pop("fit_s"), t.pop("s_per_iter"),
                            t.pop("n_iter"), samples, extra_var=v, predict_s=predict_s, **t)


# ------------------------------------------------------------------------ driver

def measure(fn, *args):
    """Run one row with PeakRSS; failures become an ``error`` row."""
    with PeakRSS() as mem:
        try:
            res = fn(*args)
        except Exception as exc:
            res = {"error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc(limit=6)}
    res.update(peak_rss_mib=mem.peak_mib, rss_increase_mib=mem.delta_mib)
    return res


def plan_rows(task, split_name, a):
    """(method label, settings text, callable, args) for one task on one split."""
    n_iter, n_kept = a.warmup + a.samples, a.samples
    matched = f"{n_iter} it, keep last {n_kept}, seed {a.seed}"
    rows = []
    if task == "ordinal":
        rows.append(("myfm-oprobit", f"rank 10; {matched}", myfm_ordinal,
                     (10, n_iter, n_kept, a.seed)))
        if a.doc_rows and split_name == "ml100k-u3":
            r, it, kept, seed = DOC_SETTINGS["ordinal"]
            rows.append(("myfm-oprobit [docs]", f"rank {r}; {it} it, keep all {kept}, "
                         f"seed {seed}", myfm_ordinal, (r, it, kept, seed)))
        if not a.peers_only:
            rows.append(("bayesmf-ordinal", f"rank 10; {a.warmup} warm-up + {a.samples}, "
                         f"seed {a.seed}", bayesmf_likelihood_row,
                         ("ordinal", 10, a.warmup, a.samples, a.seed)))
            if a.doc_rows and split_name == "ml100k-u3":
                # myFM's documented protocol applied to bayesmf: the same number of
                # sweeps, every sweep kept from the start (no warm-up), the same seed
                r, it, kept, seed = DOC_SETTINGS["ordinal"]
                rows.append(("bayesmf-ordinal [docs protocol]", f"rank {r}; {it} sweeps, "
                             f"keep all {kept}, seed {seed}", bayesmf_likelihood_row,
                             ("ordinal", r, 0, kept, seed)))
    elif task == "binary":
        for r in (8, 10):
            rows.append((f"myfm-classifier r{r}", f"rank {r}; {matched}", myfm_binary,
                         (r, n_iter, n_kept, a.seed)))
        if a.doc_rows and split_name == "ml100k-u3":
            r, it, kept, seed = DOC_SETTINGS["binary"]
            rows.append((f"myfm-classifier r{r} [notebook]", f"rank {r}; {it} it, keep "
                         f"last {it - 5} (default), seed {seed}", myfm_binary,
                         (r, it, kept, seed)))
        if not a.peers_only:
            for lik in ("bernoulli-probit", "bernoulli-logit"):
                rows.append((f"bayesmf-{lik}", f"rank 10; {a.warmup} warm-up + "
                             f"{a.samples}, seed {a.seed}", bayesmf_likelihood_row,
                             (lik, 10, a.warmup, a.samples, a.seed)))
    elif task == "gaussian":
        rows.append(("myfm-regressor", f"rank 10; {matched}", myfm_gaussian,
                     (10, n_iter, n_kept, a.seed)))
        if a.doc_rows and split_name == "ml100k-u3":
            r, it, kept, seed = DOC_SETTINGS["gaussian"]
            rows.append(("myfm-regressor [docs]", f"rank {r}; {it} it, keep all {kept}, "
                         f"seed {seed}", myfm_gaussian, (r, it, kept, seed)))
        if not a.peers_only:
            rows.append(("bayesmf-gaussian", f"rank 10; {a.warmup} warm-up + {a.samples}, "
                         f"seed {a.seed}", bayesmf_gaussian,
                         (10, a.warmup, a.samples, a.seed)))
    return rows


def run_block(task, split, a, log):
    out = {}
    for label, settings, fn, args in plan_rows(task, split.name, a):
        if fn is bayesmf_likelihood_row:
            ok, why = bayesmf_support(args[0])
            if not ok:
                msg = f"likelihood={args[0]!r} not available in this checkout ({why})"
                log(f"[{split.name} {task}] {label}: SKIPPED - {msg}")
                out[label] = {"settings": settings, "skipped": msg}
                continue
        log(f"[{split.name} {task}] {label} ({settings}) ...")
        res = measure(fn, split, *args)
        res["settings"] = settings
        out[label] = res
        if "error" in res:
            log(f"[{split.name} {task}] {label}: ERROR {res['error']}")
        else:
            log(f"[{split.name} {task}] {label}: " + ", ".join(
                f"{k}={res[k]:.4f}" for k in ("rmse", "log_loss", "auc", "brier", "nlpd")
                if isinstance(res.get(k), float)) + f", fit {res['fit_s']:.1f} s")
    return {"task": task, "dataset": split.name, "split": split.info, "results": out}


# ------------------------------------------------------------------------ report

def _ok(r):
    return "error" not in r and "skipped" not in r


def _status(r):
    return r.get("skipped") or r.get("error")


def _timing_cells(r):
    c = r.get("compile_s")
    return (f"{r['fit_s']:.1f} | {r['s_per_iter']:.4f} | "
            f"{'-' if c is None else f'{c:.1f}'} | {r['peak_rss_mib']:.0f}")


def _rows_for(doc, task):
    """(block, label, result, view) for the task's table; Gaussian fits are added with the
    view of their discretised metrics."""
    out = []
    gauss = {b["dataset"]: b for b in doc["blocks"] if b["task"] == "gaussian"}
    view = {"ordinal": "ordinal_from_gaussian", "binary": "binary_from_gaussian"}.get(task)
    tag = "discretised" if task == "ordinal" else "P(r > 3.5)"
    for b in doc["blocks"]:
        if b["task"] != task:
            continue
        out += [(b, k, r, r) for k, r in b["results"].items()]
        if view and b["dataset"] in gauss:
            for k, r in gauss[b["dataset"]]["results"].items():
                out.append((b, f"{k} (Gaussian, {tag})", r, r.get(view, {})))
    return out


def _fold_means(rows, keys):
    by = {}
    for b, label, r, view in rows:
        if _ok(r) and view:
            by.setdefault(label, []).append((b["dataset"], view, r))
    out = {}
    for label, lst in by.items():
        if len({d for d, _, _ in lst}) > 1:
            out[label] = {"n_splits": len(lst)}
            for k in keys:
                src = [(v if k in v else r).get(k) for _, v, r in lst]
                out[label][k] = (float(np.mean(src)) if all(x is not None for x in src)
                                 else None)
    return out


def markdown(doc):
    cfg, env = doc["config"], doc["environment"]
    L = ["# bayesmf likelihoods (ordinal, Bernoulli) vs myFM on MovieLens-100K (same run)", "",
         f"Date {doc['date']}; command `{doc['command']}`; load average at start "
         f"{env['loadavg_start']}, end {env.get('loadavg_end')} (shared 2-core machine: "
         "timings are noisy, compare ratios within this table).", "",
         "CPU: " + "; ".join(x.strip() for x in env["lscpu"]
                            if x.startswith(("Model name", "CPU(s)", "Thread"))) + "; "
         + ", ".join(f"{k} {v}" for k, v in env["versions"].items()) + ".", "",
         f"Splits: `peers.load_split` (official ML-100K uK.base / uK.test; 80,000 / 20,000 "
         f"ratings, 943 users, 1,682 items). bayesmf: {cfg['warmup']} warm-up + "
         f"{cfg['samples']} kept sweeps, 1 chain"
         + (" (**not run: --peers-only**)" if cfg["peers_only"] else "")
         + f"; myFM matched rows: {cfg['warmup'] + cfg['samples']} iterations keeping the "
         f"last {cfg['samples']}, one-hot user | item, group_shapes=[n_users, n_items]. "
         "[docs]/[notebook] rows: myFM's documented settings (see notes). Classification "
         f"metrics: {doc['classification_metrics']}.", ""]
    ords = _rows_for(doc, "ordinal")
    if ords:
        L += ["## Ordinal: ratings 1..5 as ordered classes", "",
              "RMSE / MAE of the expected rating sum_l l P(y=l); log-loss = mean -log "
              "P(y_true) over the 5 classes; acc = most probable class. Gaussian rows: the "
              "Gaussian fit of the same split discretised at 1.5, ..., 4.5.", "",
              "| split | method | settings | RMSE | MAE | log-loss | acc | fit s | s/sweep "
              "| compile s | peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for b, label, r, v in ords:
            if not _ok(r):
                L.append(f"| {b['dataset']} | {label} | {r.get('settings', '')} | "
                         f"{_status(r)} |||||||| ")
                continue
            L.append(f"| {b['dataset']} | {label} | {r['settings']} | {fmt(v['rmse'])} | "
                     f"{fmt(v['mae'])} | {fmt(v['log_loss'])} | {fmt(v['accuracy'], 3)} | "
                     f"{_timing_cells(r)} |")
        means = _fold_means(ords, ["rmse", "log_loss", "s_per_iter"])
        if means:
            L += ["", "Means over splits:", "", "| method | splits | RMSE | log-loss | "
                  "s/sweep |", "|---|---|---|---|---|"]
            L += [f"| {k} | {m['n_splits']} | {fmt(m['rmse'])} | {fmt(m['log_loss'])} | "
                  f"{fmt(m['s_per_iter'])} |" for k, m in means.items()]
        L.append("")
    bins = _rows_for(doc, "binary")
    if bins:
        L += ["## Binary: y = rating >= 4", "",
              "P(y=1) = posterior mean of the success probability; AUC rank-based (ties "
              "averaged); log-loss clipped at 1e-15; Brier = mean (p - y)^2. Gaussian rows: "
              "P(rating > 3.5) under the Gaussian fit of the ratings.", "",
              "| split | method | settings | AUC | log-loss | Brier | mean p / base rate | "
              "fit s | s/sweep | compile s | peak RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for b, label, r, v in bins:
            if not _ok(r):
                L.append(f"| {b['dataset']} | {label} | {r.get('settings', '')} | "
                         f"{_status(r)} |||||||| ")
                continue
            L.append(f"| {b['dataset']} | {label} | {r['settings']} | {fmt(v['auc'])} | "
                     f"{fmt(v['log_loss'])} | {fmt(v['brier'])} | {v['p_mean']:.3f} / "
                     f"{v['base_rate']:.3f} | {_timing_cells(r)} |")
        L.append("")
    gs = [(b, k, r, r) for b in doc["blocks"] if b["task"] == "gaussian"
          for k, r in b["results"].items()]
    if gs:
        L += ["## Gaussian (context)", "",
              "bench_gibbs.py definitions: RMSE of the clipped predictive mean; cov90 / NLPD "
              "of the moment-matched Gaussian; NLPD mix = exact mixture of N(f_s, 1/tau_s).",
              "", "| split | method | settings | RMSE | MAE | cov90 | NLPD | NLPD mix | fit s "
              "| s/sweep | compile s | peak RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for b, label, r, _ in gs:
            if not _ok(r):
                L.append(f"| {b['dataset']} | {label} | {r.get('settings', '')} | "
                         f"{_status(r)} ||||||||| ")
                continue
            L.append(f"| {b['dataset']} | {label} | {r['settings']} | {fmt(r['rmse'])} | "
                     f"{fmt(r['mae'])} | {fmt(r['coverage90'], 3)} | {fmt(r['nlpd'], 3)} | "
                     f"{fmt(r.get('nlpd_mixture'), 3)} | {_timing_cells(r)} |")
        means = _fold_means(gs, ["rmse", "nlpd", "s_per_iter"])
        if means:
            L += ["", "Means over splits:", "", "| method | splits | RMSE | NLPD | s/sweep |",
                  "|---|---|---|---|---|"]
            L += [f"| {k} | {m['n_splits']} | {fmt(m['rmse'])} | {fmt(m['nlpd'], 3)} | "
                  f"{fmt(m['s_per_iter'])} |" for k, m in means.items()]
        L.append("")
    L += ["## Reference figures published by myFM", "",
          "The [docs] / [notebook] rows above rerun these settings on the same split.", "",
          "| task | split | settings | figures | source |", "|---|---|---|---|---|"]
    L += [f"| {r['task']} | {r['split']} | {r['what']} | "
          + ", ".join(f"{k} {v}" for k, v in r["metrics"].items()) + f" | {r['source']} |"
          for r in doc["references"]]
    cp = [(b["dataset"], k, r["cutpoints_minus_w0_mean"]) for b in doc["blocks"]
          for k, r in b["results"].items() if "cutpoints_minus_w0_mean" in r]
    L += ["", "## Notes", ""] + [f"- {n}" for n in MYFM_NOTES]
    if cp:
        L.append("- myFM posterior-mean cut-points on the latent (unit-noise) scale, gamma - "
                 "w0 (classes 1|2, 2|3, 3|4, 4|5), and their gaps. Only the gaps are "
                 "comparable across models: the location is shared by w0, the cut-points "
                 "and the group means mu_w of the user and item biases: " + "; ".join(
                     f"{d} {k}: " + ", ".join(f"{x:.3f}" for x in c) + " (gaps "
                     + ", ".join(f"{x:.3f}" for x in np.diff(c)) + ")" for d, k, c in cp))
    L.append("- s/sweep: bayesmf excludes JAX compilation (own column); myFM = fit wall "
             "time / iterations (its C++ sampler, single-threaded). One run per row.")
    return "\n".join(L) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--splits", default="u3", help="comma list of u1..u5 (or 'all')")
    p.add_argument("--tasks", default="ordinal,binary,gaussian")
    p.add_argument("--binary-splits", default="u3",
                   help="splits of the binary task (subset of --splits; 'all' = --splits)")
    p.add_argument("--samples", type=int, default=None, help="kept sweeps (default 200)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up sweeps (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--peers-only", action="store_true", help="myFM rows only")
    p.add_argument("--no-doc-rows", dest="doc_rows", action="store_false",
                   help="skip myFM's documented-settings rows on u3")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: u3, 20 + 40 sweeps, no doc rows (for run_all.py)")
    p.add_argument("--out", type=Path, default=HERE / "results" / "likelihoods",
                   help="output stem: writes <out>.md and <out>.json")
    a = p.parse_args(argv)
    if a.quick:
        a.splits, a.binary_splits, a.doc_rows = "u3", "u3", False
    a.warmup = a.warmup if a.warmup is not None else (20 if a.quick else 100)
    a.samples = a.samples if a.samples is not None else (40 if a.quick else 200)
    a.out = a.out.with_suffix("") if a.out.suffix in (".md", ".json") else a.out

    def names(s):
        if s == "all":
            return [f"u{k}" for k in range(1, 6)]
        out = [x.strip() for x in s.split(",") if x.strip()]
        bad = [x for x in out if x not in {f"u{k}" for k in range(1, 6)}]
        if bad:
            p.error(f"unknown split(s) {bad}; use u1..u5")
        return out

    splits = names(a.splits)
    bsplits = splits if a.binary_splits == "all" else [
        s for s in names(a.binary_splits) if s in splits]
    tasks = [t.strip() for t in a.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in ("ordinal", "binary", "gaussian")]
    if bad:
        p.error(f"unknown task(s) {bad}")
    log = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if not a.peers_only:
        for lik in BAYESMF_LIKELIHOODS:
            ok, why = bayesmf_support(lik)
            if not ok:
                log(f"bayesmf likelihood={lik!r}: not available in this checkout ({why}); "
                    "its rows are skipped")
    doc = {"date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "command": "python benchmarks/bench_likelihoods.py " + " ".join(
               sys.argv[1:] if argv is None else argv),
           "config": {"splits": splits, "binary_splits": bsplits, "tasks": tasks,
                      "warmup": a.warmup, "samples": a.samples, "seed": a.seed,
                      "peers_only": a.peers_only, "doc_rows": a.doc_rows, "rank": 10},
           "environment": environment(), "classification_metrics": CLS_SOURCE,
           "references": REFERENCES, "blocks": []}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    for s in splits:
        split = peers.load_split(f"ml100k-{s}", 0)
        for task in ("gaussian", "ordinal", "binary"):
            if task not in tasks or (task == "binary" and s not in bsplits):
                continue
            doc["blocks"].append(run_block(task, split, a, log))
            a.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float)
                                                  + "\n")
    doc["environment"]["loadavg_end"] = os.getloadavg()
    md = markdown(doc)
    print(md)
    a.out.with_suffix(".md").write_text(md)
    a.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    log(f"wrote {a.out.with_suffix('.md')} and .json")


if __name__ == "__main__":
    main()
