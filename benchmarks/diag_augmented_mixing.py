#!/usr/bin/env python
r"""Mixing of the Gibbs sampler under the augmented likelihoods (diagnostic).

The Bernoulli-probit and ordinal samplers draw a row given the Albert-Chib latent
:math:`z_{ui}\sim N(\eta_{ui}, 1)` truncated to the observed category, and the logit
sampler given the Pólya-Gamma weights :math:`\omega_{ui}` (Polson, Scott & Windle 2013).
Given the augmentation the row's conditional has the *complete-data* precision; its
posterior has the much smaller observed-data precision when most of the latent's
information is missing, which is the case for binary data with large :math:`|\eta|`.
The chain then moves in steps that are small against the posterior width (the fraction
of missing information is the lag-one autocorrelation of a one-row chain), so pairs with
confident predictions mix slowly.

This script measures it on planted data: ``N x M`` users x items, rank-2 factors
:math:`U, V \sim N(0, 1.5^2)`, :math:`\eta = UV^\top`, the latent
:math:`\ell = \eta + \varepsilon` (standard normal; logistic for the logit rows), a
fraction ``density`` of the pairs observed. Each likelihood sees the same pairs:
``gaussian`` the latent itself, ``bernoulli-probit`` / ``bernoulli-logit``
:math:`1[\ell > 0]`, ``ordinal`` the latent cut at ``(-2, -0.7, 0.7, 2)`` (levels 1-5).
Rank 2, no biases, the library's Gibbs sampler, 2 chains of ``warmup + samples`` sweeps;
the effective sample size (ArviZ ``ess``, bulk) of :math:`\eta` at 60 probe pairs
(users 0-59 x items 0-59, diagonal), their median, the median over the probe pairs with
:math:`|\eta| > 1.5` and the minimum; seconds per sweep from the fit's attrs.

With ``--row-mh both`` (the default) each augmented likelihood also runs with the
IWLS Metropolis-Hastings row step (``row_mh=True``,
:func:`bayesmf.infer.gibbs_steps.iwls_mh_rows`).

    .venv/bin/python benchmarks/diag_augmented_mixing.py --density 0.8 0.1
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import markdown_table, save_report  # noqa: E402

HERE = Path(__file__).resolve().parent
LIKELIHOODS = ("gaussian", "bernoulli-probit", "bernoulli-logit", "ordinal")
CUTS = np.array([-2.0, -0.7, 0.7, 2.0])


def planted(N: int, M: int, density: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    U, V = rng.normal(size=(N, 2)) * 1.5, rng.normal(size=(M, 2)) * 1.5
    eta = U @ V.T
    noise = rng.normal(size=eta.shape)
    logistic = rng.logistic(size=eta.shape)
    u, i = np.nonzero(rng.random((N, M)) < density)
    return eta, noise, logistic, u, i


def values(lik: str, eta, noise, logistic, u, i):
    if lik == "gaussian":
        return (eta + noise)[u, i]
    if lik == "bernoulli-probit":
        return ((eta + noise)[u, i] > 0).astype(float)
    if lik == "bernoulli-logit":
        return ((eta + logistic)[u, i] > 0).astype(float)
    return 1.0 + np.searchsorted(CUTS, (eta + noise)[u, i]).astype(float)


def eta_ess(post, users, items) -> np.ndarray:
    """ArviZ bulk ESS of the linear predictor at the pairs ``(users, items)`` (raw ids),
    over all chains of ``post``."""
    import arviz as az

    m, _ = post.pair_moments(post.users.encode(users), post.items.encode(items))
    x = np.asarray(m, np.float64).reshape(post.n_chains, -1, len(users))
    return np.array([float(az.ess(x[:, :, j])) for j in range(len(users))])


def run(lik: str, density: float, N: int, M: int, samples: int, warmup: int,
        row_mh: bool = False) -> dict:
    import bayesmf
    from bayesmf.data.ratings import Ratings

    eta, noise, logistic, u, i = planted(N, M, density)
    train = Ratings.from_arrays(u, i, values(lik, eta, noise, logistic, u, i))
    model = bayesmf.BayesMF(method="gibbs", likelihood=lik, rank=2, num_samples=samples,
                            num_warmup=warmup, num_chains=2, seed=0, global_mean=False,
                            user_bias=False, item_bias=False,
                            **({"row_mh": True} if row_mh else {})).fit(train)
    post = model.posterior
    pu = np.arange(60)
    ess = eta_ess(post, pu, pu)
    big = np.abs(eta[pu, pu]) > 1.5
    acc = post.sample_stats.get("row_mh_accept")
    return {"likelihood": lik, "row_mh": row_mh, "density": density, "n_obs": int(len(u)),
            "accept": "" if acc is None else round(float(np.mean(acc)), 3),
            "obs_per_user": round(len(u) / N, 1), "draws": 2 * samples,
            "ess_median": round(float(np.median(ess)), 1),
            "ess_median_large_eta": round(float(np.median(ess[big])), 1),
            "ess_min": round(float(ess.min()), 1),
            "s_per_sweep": round(float(post.attrs["seconds_per_sweep"]), 4),
            "load": [round(v, 2) for v in os.getloadavg()]}


def render(doc: dict) -> str:
    cols = ["likelihood", "row_mh", "density", "obs_per_user", "draws", "ess_median",
            "ess_median_large_eta", "ess_min", "accept", "s_per_sweep", "ess_per_s", "load"]
    for r in doc["rows"]:
        r.setdefault("row_mh", False)
        r.setdefault("accept", "")
        sweeps = doc["warmup"] + doc["samples"]  # per chain; the chains run together
        r["ess_per_s"] = round(r["ess_median"] / (r["s_per_sweep"] * sweeps), 1)
    lines = ["# Gibbs mixing under the augmented likelihoods (diagnostic)", "",
             f"Generated {doc['generated']}; command: `{doc['command']}`. Planted rank-2 "
             f"data, {doc['N']} users x {doc['M']} items (module docs of "
             "`diag_augmented_mixing.py`); ESS of the linear predictor at 60 probe pairs "
             "(ArviZ bulk ESS over both chains); `large_eta`: the probe pairs with "
             "|eta| > 1.5; `row_mh`: the IWLS Metropolis-Hastings row step on; "
             "`accept`: its mean fraction of rows moved per sweep; `ess_per_s`: median ESS "
             "per second of sampling (`s_per_sweep` x the warm-up and kept sweeps of "
             "the two vectorised chains).", ""] + markdown_table(doc["rows"], cols)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--density", type=float, nargs="+", default=[0.8, 0.1])
    ap.add_argument("--likelihoods", nargs="+", default=list(LIKELIHOODS),
                    choices=LIKELIHOODS)
    ap.add_argument("--row-mh", choices=["off", "on", "both"], default="both",
                    help="the IWLS Metropolis-Hastings row step (augmented likelihoods)")
    ap.add_argument("--users", type=int, default=200)
    ap.add_argument("--items", type=int, default=600)
    ap.add_argument("--samples", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "augmented_mixing.md")
    a = ap.parse_args(argv)
    rows = []
    for d in a.density:
        for lik in a.likelihoods:
            modes = {"off": [False], "on": [True], "both": [False, True]}[a.row_mh]
            for mh in modes if lik != "gaussian" else [False]:
                rows.append(run(lik, d, a.users, a.items, a.samples, a.warmup, mh))
                print(rows[-1], flush=True)
    save_report({"rows": rows}, a.out, render, "diag_augmented_mixing.py", argv,
                N=a.users, M=a.items, samples=a.samples, warmup=a.warmup)
    return 0


if __name__ == "__main__":
    sys.exit(main())
