#!/usr/bin/env python
r"""Two published variants of implicit ALS, tried as MAP fits on the ML-1M validation carve
before building either into the Bayesian model (issue 13: full ranking behind EASE).

The base model is Hu-Koren-Volinsky on binary data: every pair :math:`(u, i)` has target
:math:`p_{ui}\in\{0, 1\}` and weight :math:`c_{ui} = 1 + \alpha` for a positive,
:math:`w_i` for a missing pair, minimised over :math:`X, Y` of

.. math::

    \sum_{u,i} c_{ui}(p_{ui} - x_u^\top y_i)^2 + \sum_u \lambda_u\lVert x_u\rVert^2
    + \sum_i \lambda_i\lVert y_i\rVert^2

by exact alternating solves (per row, the Gram trick
:math:`Y^\top W Y + \sum_{i\in O_u}(1 + \alpha - w_i) y_i y_i^\top + \lambda_u I`).
``rank:alpha:reg:beta:nu`` sets the variants:

* ``beta`` -- missing entries weighted by item popularity (He et al. 2016, eALS):
  :math:`w_i = M f_i^\beta / \sum_j f_j^\beta` (:math:`f_i` the item's training count + 1;
  mean weight 1; ``beta = 0`` is the base model, :math:`w_i = 1`);
* ``nu`` -- frequency-scaled regularisation (Rendle et al. 2022, "Revisiting the
  performance of iALS"): :math:`\lambda_r = \text{reg}\,(W_r / \bar W)^\nu` with
  :math:`W_r` row :math:`r`'s total weight (:math:`\sum_i w_i + \alpha n_u` for a user,
  :math:`N + \alpha n_i` for an item) and :math:`\bar W` its mean over the side
  (``nu = 0``: one ``reg`` for every row).

``ease:LAMBDA`` scores EASE (Steck 2019; :math:`B = I - P\,\mathrm{diag}(1/P_{jj})`,
:math:`P = (X^\top X + \lambda I)^{-1}`) on the same carve, the strongest full-ranking
peer. Splits and metrics are the peer harness's (``make_split``, ``evaluate``); scores
on ``split.val`` after fitting ``split.fit`` (``--on val``, the default) or on
``split.test`` after ``split.train``. 10 ALS sweeps from :math:`N(0, 0.01^2)` factors,
seed 0, numpy on one BLAS thread.

    .venv/bin/python benchmarks/diag_ials_variants.py 64:4:20:0:0 64:4:5:0.25:0 \
        128:4:50:0:0 128:4:50:0:1 128:4:50:0.25:0 ease:500
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import save_report  # noqa: E402

HERE = Path(__file__).resolve().parent
METRICS = ["HR@10", "NDCG@10", "sampled_HR@10", "sampled_NDCG@10"]


def half_step(C, Y, w_other, alpha, reg_rows):
    """The exact solve of every row of ``C`` (binary CSR) given the other side ``Y``,
    whose rows have missing weights ``w_other``; ``reg_rows`` the rows' ridge."""
    n, d = C.shape[0], Y.shape[1]
    G = (Y * w_other[:, None]).T @ Y
    X = np.empty((n, d))
    ptr, idx = C.indptr, C.indices
    for s in range(0, n, 256):
        e = min(n, s + 256)
        A = G[None] + reg_rows[s:e, None, None] * np.eye(d)[None]
        b = np.zeros((e - s, d))
        for r in range(s, e):
            it = idx[ptr[r]:ptr[r + 1]]
            if len(it):
                Yi = Y[it]
                A[r - s] += (Yi * (1.0 + alpha - w_other[it])[:, None]).T @ Yi
                b[r - s] = (1.0 + alpha) * Yi.sum(0)
        X[s:e] = np.linalg.solve(A, b[..., None])[..., 0]
    return X


def ials_variant(C, rank, alpha, reg, beta, nu, sweeps=10, seed=0):
    """``(X, Y)`` of the module's objective on the binary CSR ``C``."""
    N, M = C.shape
    pop = np.asarray(C.sum(0)).ravel() + 1.0
    w_item = M * pop ** beta / np.sum(pop ** beta)
    CT = C.T.tocsr()
    W_u = w_item.sum() + alpha * np.diff(C.indptr)
    W_i = w_item * N + alpha * np.diff(CT.indptr)
    reg_u = reg * (W_u / W_u.mean()) ** nu
    reg_i = reg * (W_i / W_i.mean()) ** nu
    Y = np.random.default_rng(seed).normal(0.0, 0.01, (M, rank))
    for _ in range(sweeps):
        X = half_step(C, Y, w_item, alpha, reg_u)
        Y = half_step_items(CT, X, w_item, alpha, reg_i)
    return X, Y


def half_step_items(CT, X, w_item, alpha, reg_rows):
    """The exact solve of every item (row of ``CT``) given the user factors ``X``: item
    ``i``'s missing pairs all weigh ``w_item[i]``, so its Gram is ``w_i X^T X`` plus the
    positives' correction."""
    n, d = CT.shape[0], X.shape[1]
    G = X.T @ X
    Y = np.empty((n, d))
    ptr, idx = CT.indptr, CT.indices
    for s in range(0, n, 256):
        e = min(n, s + 256)
        A = w_item[s:e, None, None] * G[None] + reg_rows[s:e, None, None] * np.eye(d)[None]
        b = np.zeros((e - s, d))
        for r in range(s, e):
            us = idx[ptr[r]:ptr[r + 1]]
            if len(us):
                Xi = X[us]
                A[r - s] += (1.0 + alpha - w_item[r]) * Xi.T @ Xi
                b[r - s] = (1.0 + alpha) * Xi.sum(0)
        Y[s:e] = np.linalg.solve(A, b[..., None])[..., 0]
    return Y


def ease_scorer(C, lam):
    G = (C.T @ C).toarray()
    P = np.linalg.inv(G + lam * np.eye(G.shape[0]))
    B = -P / np.diag(P)[None]
    np.fill_diagonal(B, 0.0)
    return lambda users: np.asarray(C[users] @ B)


def run(config: str, split, on: str) -> dict:
    tr = split.fit if on == "val" else split.train
    ev = split.val if on == "val" else split.test
    C = (tr > 0).astype(np.float64).tocsr()
    t0 = time.perf_counter()
    if config.startswith("ease:"):
        score = ease_scorer(C, float(config.split(":")[1]))
    else:
        rank, alpha, reg, beta, nu = config.split(":")
        X, Y = ials_variant(C, int(rank), float(alpha), float(reg), float(beta), float(nu))
        score = lambda users: X[users] @ Y.T  # noqa: E731
    fit_s = time.perf_counter() - t0
    met = ip.evaluate(score, tr, ev, split.priority, split.kind)
    return {"config": config, **{k: met[k] for k in METRICS}, "fit_s": round(fit_s, 1),
            "load": [round(x, 2) for x in os.getloadavg()]}


def render(doc: dict) -> str:
    lines = ["# Implicit ALS variants on the ML-1M carve (MAP diagnostic)", "",
             f"Generated {doc['generated']}; command: `{doc['command']}`. Split "
             f"`{doc['split']}` seed 0, scored on `{doc['on']}`; `rank:alpha:reg:beta:nu` "
             "(module docs of `diag_ials_variants.py`: `beta` popularity-weighted missing "
             "entries, `nu` frequency-scaled regularisation; `0` = off).", "",
             "| config | " + " | ".join(METRICS) + " | fit s | load |",
             "|---|" + "---|" * (len(METRICS) + 2)]
    for r in doc["rows"]:
        lines.append(f"| `{r['config']}` | " + " | ".join(f"{r[k]:.4f}" for k in METRICS)
                     + f" | {r['fit_s']} | {r['load']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--split", default="ml1m-loo", choices=["ml1m-loo", "ml1m-ncf"])
    ap.add_argument("--on", default="val", choices=["val", "test"])
    ap.add_argument("--out", type=Path, default=HERE / "results" / "ials_variants.md")
    a = ap.parse_args(argv)
    split = ip.make_split(a.split, ip.DEFAULT_DATA, 0)
    rows = []
    for c in a.configs:
        rows.append(run(c, split, a.on))
        print(json.dumps(rows[-1]), flush=True)
    save_report({"rows": rows}, a.out, render, "diag_ials_variants.py", argv, split=a.split,
                on=a.on)
    return 0


if __name__ == "__main__":
    sys.exit(main())
