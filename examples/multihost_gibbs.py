#!/usr/bin/env python
"""One Gibbs chain sharded over the devices of several processes or hosts (JAX multi-process
SPMD, ``fit_gibbs(..., chain_method="sharded")``; how it splits the work:
:mod:`bayesmf.infer.sharded`).

Run the same command on every host, the same data on each (the packaged latest-small by
default, or ``--data`` a CSV/Parquet of ``user,item,rating`` visible to every host), with
three environment variables -- the coordinator is process 0's ``host:port``, reachable by
all the others::

    # host 0
    BAYESMF_COORDINATOR=10.0.0.1:12345 BAYESMF_NUM_PROCESSES=2 BAYESMF_PROCESS_ID=0 \\
        python examples/multihost_gibbs.py --out model.nc
    # host 1
    BAYESMF_COORDINATOR=10.0.0.1:12345 BAYESMF_NUM_PROCESSES=2 BAYESMF_PROCESS_ID=1 \\
        python examples/multihost_gibbs.py

On one machine, two processes (what ``tests/test_sharded.py`` runs): the same two lines
with ``localhost:12345``, each in its own shell (or the second with ``&``). Several devices
per host: on CPU ``XLA_FLAGS=--xla_force_host_platform_device_count=D`` per process (one
per core you give it); on GPUs each process sees its own. Without the variables the script
runs in one process over its local devices.

Every process builds the same numpy layout and holds the replicated result (draws,
posterior); process 0 evaluates on the held-out 10% and writes ``--out``. The printed last
line is a JSON summary (devices, processes, seconds per sweep, RMSE, 90% coverage).

``--feedback implicit``: the default implicit-feedback model instead (``BayesMF(method=
"gibbs", likelihood="implicit")``, confidence-weighted over all pairs), on an event log
(``--data``: ``user,item[,count]`` rows, repeats summed; default: the rated pairs of
latest-small with 4 stars or more), split 80/20 per user; process 0 reports full-ranking
Recall@20 / NDCG@20 of the held-out interactions instead of RMSE.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def _distributed() -> tuple[int, int]:
    """Initialise JAX's multi-process runtime from the environment (before any other JAX
    call); returns ``(process_id, num_processes)``."""
    coord = os.environ.get("BAYESMF_COORDINATOR")
    if not coord:
        return 0, 1
    try:
        n = int(os.environ["BAYESMF_NUM_PROCESSES"])
        pid = int(os.environ["BAYESMF_PROCESS_ID"])
    except (KeyError, ValueError):
        raise SystemExit("BAYESMF_COORDINATOR is set: also set BAYESMF_NUM_PROCESSES and "
                         "BAYESMF_PROCESS_ID (integers)") from None
    if not (n >= 1 and 0 <= pid < n):
        raise SystemExit(f"need 0 <= BAYESMF_PROCESS_ID < BAYESMF_NUM_PROCESSES, got {pid} "
                         f"and {n}")
    import jax

    if os.environ.get("JAX_PLATFORMS", "cpu").startswith("cpu"):
        # cross-process collectives of the CPU backend
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coord, num_processes=n, process_id=pid)
    return pid, n


def _load(path: str | None):
    from bayesmf.data.ratings import Ratings
    from bayesmf.datasets import load_movielens

    if path is None:
        return load_movielens("latest-small").ratings
    import pandas as pd

    df = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_csv(path)
    missing = {"user", "item", "rating"} - set(df.columns)
    if missing:
        raise SystemExit(f"{path}: needs the columns user, item, rating (missing "
                         f"{', '.join(sorted(missing))})")
    return Ratings.from_dataframe(df, user_col="user", item_col="item",
                                  rating_col="rating")


def _load_events(path: str | None):
    from bayesmf.data import Interactions
    from bayesmf.datasets import load_interactions_source, load_movielens

    if path is None:
        return Interactions.from_ratings(load_movielens("latest-small").ratings, 4.0)
    return load_interactions_source(path, download=False)


def _fit_implicit(a):
    """The default implicit model over the sharded chain: ``(posterior, fit seconds,
    evaluate)``; ``evaluate()`` (process 0) gives full-ranking Recall@20 / NDCG@20 of the
    held-out 20% of each user's interactions."""
    import bayesmf

    split = _load_events(a.data).fraction_split(0.2, seed=a.seed)
    t0 = time.perf_counter()
    m = bayesmf.BayesMF(method="gibbs", likelihood="implicit", rank=a.rank, seed=a.seed,
                        num_warmup=a.warmup, num_samples=a.samples, chain_method="sharded",
                        progress=False).fit(split.train)
    wall = time.perf_counter() - t0

    def evaluate():
        ev = m.evaluate(split.test, k=20)["ranking"]
        return {"recall@20": float(ev["recall@20"]), "ndcg@20": float(ev["ndcg@20"])}

    return m.posterior, wall, evaluate


def _fit_explicit(a):
    """Gaussian BPMF over the sharded chain: ``(posterior, fit seconds, evaluate)``;
    ``evaluate()`` (process 0) gives the RMSE and 90% coverage of the held-out 10%."""
    import numpy as np

    from bayesmf.data import user_split
    from bayesmf.infer.gibbs import fit_gibbs
    from bayesmf.model.spec import ModelSpec

    split = user_split(_load(a.data), test_fraction=0.1, seed=a.seed)
    t0 = time.perf_counter()
    post = fit_gibbs(split.train, ModelSpec(rank=a.rank), seed=a.seed,
                     num_warmup=a.warmup, num_samples=a.samples, chain_method="sharded")
    wall = time.perf_counter() - t0

    def evaluate():
        test = split.test.to_dataframe()
        pred = post.predict(test["user"], test["item"], interval=0.9)
        y = test["rating"].to_numpy()
        return {"rmse": float(np.sqrt(np.mean((pred.mean - y) ** 2))),
                "coverage90": float(np.mean((pred.lower <= y) & (y <= pred.upper)))}

    return post, wall, evaluate


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="CSV/Parquet with user,item,rating "
                    "(default: the packaged MovieLens latest-small)")
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="model file written by process 0")
    ap.add_argument("--feedback", choices=["explicit", "implicit"], default="explicit",
                    help="star ratings (Gaussian BPMF; RMSE) or an event log (the default "
                         "implicit model; Recall@20 / NDCG@20)")
    a = ap.parse_args(argv)
    pid, n_proc = _distributed()

    import jax

    fit = _fit_implicit if a.feedback == "implicit" else _fit_explicit
    post, wall, evaluate = fit(a)
    out = {"process": pid, "processes": n_proc, "devices": post.attrs["devices"],
           "local_devices": len(jax.local_devices()),
           "seconds_per_sweep": post.attrs["seconds_per_sweep"], "fit_s": wall}
    if pid == 0:
        out.update(evaluate())
        if a.out:
            from bayesmf.io import save

            save(post, a.out)
            out["saved"] = a.out
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
