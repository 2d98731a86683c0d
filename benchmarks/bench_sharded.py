#!/usr/bin/env python
"""One Gibbs chain sharded over 2 CPU devices vs one device (issue 16 target: >= 1.6x the
throughput of one device on this 2-core machine).

Runs in one process started with ``XLA_FLAGS=--xla_force_host_platform_device_count=2``
(set here before JAX is imported): the ML-1M subset split of ``../shared/bench/peers.py``,
rank ``--rank``, ``--sweeps`` timed sweeps per configuration after a compile run,
configurations interleaved ``--repeats`` times: one device with one row part, one device
with its default row parts, and ``chain_method="sharded"`` over 2 devices. Reports the
median seconds per sweep and the throughput ratios.

    .venv/bin/python benchmarks/bench_sharded.py --rank 32 --sweeps 60 --repeats 3
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=2").strip()

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "shared" / "bench"))

import jax  # noqa: E402
import peers  # noqa: E402

from bayesmf.data.ratings import Ratings  # noqa: E402
from bayesmf.data.vocab import Vocabulary  # noqa: E402
from bayesmf.infer.gibbs import fit_gibbs  # noqa: E402
from bayesmf.model.spec import ModelSpec  # noqa: E402

CONFIGS = {
    "1 device, 1 row part": dict(row_parts=1),
    "1 device, default row parts": dict(row_parts="auto"),
    "sharded, 2 devices": dict(chain_method="sharded", shard_devices=2),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rank", type=int, default=32)
    ap.add_argument("--sweeps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "sharded")
    a = ap.parse_args(argv)
    split = peers.load_split("ml1m-part")
    u, i, r = split.train
    train = Ratings.from_indices(u, i, r, Vocabulary(np.arange(split.n_users)),
                                 Vocabulary(np.arange(split.n_items)))
    spec = ModelSpec(rank=a.rank)
    load0 = os.getloadavg()
    times = {c: [] for c in CONFIGS}
    cores = {c: [] for c in CONFIGS}
    compile_s = {}
    for name, kw in CONFIGS.items():   # compile run (the compiled program is reused)
        post = fit_gibbs(train, spec, seed=0, num_samples=a.sweeps, num_warmup=0,
                         store_draws=False, **kw)
        compile_s[name] = post.attrs["compile_seconds"]
    for rep in range(a.repeats):
        for name, kw in CONFIGS.items():
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            post = fit_gibbs(train, spec, seed=rep + 1, num_samples=a.sweeps, num_warmup=0,
                             store_draws=False, **kw)
            r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            cores[name].append(cpu / (t1 - t0))   # CPU seconds per wall second of the fit
            times[name].append(post.attrs["seconds_per_sweep"])
            print(rep, name, round(times[name][-1], 4), flush=True)
    load1 = os.getloadavg()
    med = {c: float(np.median(t)) for c, t in times.items()}
    base1 = med["1 device, 1 row part"]
    lines = [f"# One chain sharded over 2 CPU devices (ML-1M subset, rank {a.rank})", "",
             f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')}; command: `python "
             f"benchmarks/bench_sharded.py {' '.join(argv or sys.argv[1:])}`; "
             f"{os.cpu_count()} CPUs, {len(jax.devices())} JAX devices; load "
             f"{[round(x, 2) for x in load0]} at the start, {[round(x, 2) for x in load1]} "
             "at the end.", "",
             f"{train.nnz:,} ratings; {a.sweeps} timed sweeps per run, {a.repeats} runs per "
             "configuration, interleaved, after one compile run each; median seconds per "
             "sweep (all runs in brackets). *cores busy*: CPU seconds of the process per wall "
             "second of the fit (getrusage), median over the runs.", "",
             "| configuration | s/sweep | runs | cores busy | throughput vs 1 device, 1 part | "
             "throughput vs 1 device, default parts | compile s |",
             "|---|---|---|---|---|---|---|"]
    for c in CONFIGS:
        lines.append(f"| {c} | {med[c]:.4f} | {', '.join(f'{t:.4f}' for t in times[c])} | "
                     f"{float(np.median(cores[c])):.2f} | "
                     f"{base1 / med[c]:.2f}x | "
                     f"{med['1 device, default row parts'] / med[c]:.2f}x | "
                     f"{compile_s[c]:.1f} |")
    busy = float(np.median(cores["1 device, 1 row part"]))
    lines += ["", f"One device with one row part already keeps {busy:.2f} of the "
              f"{os.cpu_count()} cores busy (XLA's CPU runtime runs independent operations "
              "of one program on its thread pool), so two devices can at most give "
              f"{os.cpu_count() / busy:.2f}x on this machine; the sharded sweep also does "
              "more work in all (replicated statistics, all-gathers)."]
    a.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    a.out.with_suffix(".json").write_text(json.dumps(
        {"times": times, "cores_busy": cores, "median": med, "compile_s": compile_s,
         "rank": a.rank}, indent=1))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
