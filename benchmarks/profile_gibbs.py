#!/usr/bin/env python
"""Where the time of a Gibbs sweep goes: XLA operations grouped by kind, ms per sweep.

    .venv/bin/python benchmarks/profile_gibbs.py [--split ml1m-part] [--rank 32]
        [--row-parts auto] [--tree PATH] [--out benchmarks/results/profile_gibbs.md]

Runs ``fit_gibbs`` (one chain, streamed test-pair predictions) once to compile and once
under ``jax.profiler.trace`` (``--sweeps`` sweeps), reads the Perfetto trace and sums the
durations of the XLA operations by kind (``dot``, ``cholesky``, gathers, scatters, ...;
the numeric suffix dropped). Op durations add up to more than the wall time when XLA's
CPU runtime runs independent operations concurrently (2 cores here). ``--tree`` imports
bayesmf from another source tree (e.g. a ``git worktree`` of the commit before a change)
for a before/after profile; ``--append`` adds to ``--out`` instead of replacing it.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="ml1m-part")
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--sweeps", type=int, default=20)
    ap.add_argument("--row-parts", default="auto")
    ap.add_argument("--tree", type=Path, default=HERE.parent)
    ap.add_argument("--label", default=None)
    ap.add_argument("--top", type=int, default=14)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "profile_gibbs.md")
    ap.add_argument("--append", action="store_true")
    a = ap.parse_args(argv)
    sys.path.insert(0, str(a.tree.resolve()))
    sys.path.insert(0, str(HERE.parent.parent / "shared" / "bench"))
    import jax
    import numpy as np
    import peers

    import bayesmf
    from bayesmf.data.ratings import Ratings
    from bayesmf.data.vocab import Vocabulary
    from bayesmf.infer.gibbs import DEFAULTS, fit_gibbs
    from bayesmf.model.spec import ModelSpec

    split = peers.load_split(a.split)
    u, i, r = split.train
    train = Ratings.from_indices(u, i, r, Vocabulary(np.arange(split.n_users)),
                                 Vocabulary(np.arange(split.n_items)))
    tu, ti, _ = split.test
    kw = dict(seed=1, num_warmup=0, predict_pairs=(tu, ti))
    if "row_parts" in DEFAULTS:
        kw["row_parts"] = a.row_parts if a.row_parts == "auto" else int(a.row_parts)
    fit_gibbs(train, ModelSpec(rank=a.rank), num_samples=3, **kw)      # compile
    tmp = tempfile.mkdtemp(prefix="bayesmf-profile-")
    try:
        with jax.profiler.trace(tmp, create_perfetto_trace=True):
            post = fit_gibbs(train, ModelSpec(rank=a.rank), num_samples=a.sweeps, **kw)
        f = glob.glob(os.path.join(tmp, "**", "*.trace.json.gz"), recursive=True)[0]
        ev = json.load(gzip.open(f))["traceEvents"]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    kinds = collections.Counter()
    for e in ev:
        name = e.get("name", "")
        if (e.get("ph") == "X" and "dur" in e and not name.startswith("$")
                and "Thunk" not in name and not name.startswith("PjitFunction")):
            kinds[re.sub(r"[._]\d+$", "", name)] += e["dur"]
    n = a.sweeps
    total = sum(kinds.values()) / 1e3 / n
    wall = post.attrs["seconds_per_sweep"] * 1e3
    parts = post.attrs["settings"].get("row_parts", "-")
    label = a.label or f"{Path(bayesmf.__file__).resolve().parent.parent}"
    lines = [f"## {a.split}, rank {a.rank}, row_parts {parts}: {label}", "",
             f"`python benchmarks/profile_gibbs.py {' '.join(argv or sys.argv[1:])}`; "
             f"{time.ctime()}; load {os.getloadavg()[0]:.1f}; {n} sweeps traced.", "",
             f"Wall {wall:.1f} ms per sweep; XLA operations {total:.1f} ms per sweep in "
             f"all (more than the wall time where operations overlap).", "",
             "| operation kind | ms per sweep | share of op time |", "|---|---|---|"]
    for k, v in kinds.most_common(a.top):
        lines.append(f"| `{k}` | {v / 1e3 / n:.2f} | {v / 1e3 / n / total:.0%} |")
    rest = total - sum(v for _, v in kinds.most_common(a.top)) / 1e3 / n
    lines += [f"| (other) | {rest:.2f} | {rest / total:.0%} |", ""]
    text = "\n".join(lines) + "\n"
    if a.append and a.out.exists():
        a.out.write_text(a.out.read_text() + "\n" + text)
    else:
        a.out.write_text("# Where the Gibbs sweep's time goes (XLA operations by kind)\n\n"
                         + text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
