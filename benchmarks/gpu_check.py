#!/usr/bin/env python
"""GPU path check: bayesmf's JAX Gibbs sampler and top-10 recommendation on an accelerator.

    pip install 'bayesmf[cuda]'          # jax[cuda12]
    python benchmarks/gpu_check.py       # refuses (exit 2) without a GPU backend
    python benchmarks/gpu_check.py --allow-cpu --ratings 200000 --sweeps 3 --ml1m-sweeps 5 \\
        --out /tmp/gpu_check.md          # CPU smoke test

Prints ``jax.devices()`` and the default backend, then:

(a) BPMF Gibbs on the ML-1M subset (``peers.load_split("ml1m-part", 0)`` from
    ``../shared/bench/peers.py``: 487,650 ratings of users 1-2999, 90/10 split) at rank 10
    and 32, ``--ml1m-sweeps`` sweeps (a third warm-up, the rest kept): seconds per sweep
    (``attrs["seconds_per_sweep"]``, compilation excluded), compile seconds, test RMSE of
    the clipped streamed predictive mean (``peers.evaluate``);
(b) top-10 recommendation (``bayesmf.recommend.recommend``, exclude-seen, mean strategy)
    for every user of each of those posteriors, seconds (this step is numpy on the host);
(c) a synthetic ML-10M-shaped problem (``_synth_ml10m.synthetic_ml10m``; ``--ratings``,
    default 10M; 1% of the pairs held out) with Gibbs rank 32, ``store_draws=False``,
    ``--sweeps`` sweeps: build seconds, seconds per sweep, compile seconds, test RMSE
    (floor: the noise sd 0.8) and the device's peak memory from ``device.memory_stats()``
    where JAX exposes it (GPU; "n/a" on CPU).

Writes a markdown table with the device name to ``--out``
(default ``benchmarks/results/gpu_check.md``) and prints it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # the folder that holds shared/ and the project
sys.path.insert(0, str(HERE))


def device_info():
    import jax

    devs = jax.devices()
    backend = jax.default_backend()
    d = devs[0]
    name = getattr(d, "device_kind", str(d))
    return devs, backend, d, name


def peak_memory_mib(device):
    """Peak bytes in use on ``device`` in MiB (``None`` if the backend does not say)."""
    try:
        st = device.memory_stats()
    except Exception:  # noqa: BLE001 - CPU backends may raise or return None
        return None
    if not st:
        return None
    v = st.get("peak_bytes_in_use", st.get("bytes_in_use"))
    return None if v is None else v / 2 ** 20


def fmt(x, nd=4):
    return "n/a" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def ml1m_part(rank, sweeps, log):
    """(a) and (b) for one rank on the ML-1M subset."""
    import numpy as np

    import peers
    from bayesmf.data.ratings import Ratings
    from bayesmf.data.vocab import Vocabulary
    from bayesmf.infer.gibbs import fit_gibbs, streamed_predictions
    from bayesmf.model.spec import ModelSpec
    from bayesmf.recommend import recommend

    split = peers.load_split("ml1m-part", 0)
    u, i, r = split.train
    train = Ratings.from_indices(u, i, r, Vocabulary(np.arange(split.n_users)),
                                 Vocabulary(np.arange(split.n_items)))
    tu, ti, _ = split.test
    warm = sweeps // 3
    t0 = time.perf_counter()
    post = fit_gibbs(train, ModelSpec(rank=rank), seed=0, num_warmup=warm,
                     num_samples=sweeps - warm, predict_pairs=(tu, ti))
    wall = time.perf_counter() - t0
    sp = streamed_predictions(post)
    rmse = peers.evaluate(split, {"mean": sp["mean"]})["rmse"]
    a = post.attrs
    log(f"[ml1m-part r{rank}] {sweeps} sweeps: {a['seconds_per_sweep']:.4f} s/sweep, "
        f"compile {a['compile_seconds']:.2f} s, test RMSE {rmse:.4f}")
    t0 = time.perf_counter()
    rec = recommend(post, n=10)
    rec_s = time.perf_counter() - t0
    n_users = int(rec["user"].nunique()) if "user" in rec.columns else None
    log(f"[ml1m-part r{rank}] top-10 for all users: {rec_s:.2f} s ({len(rec)} rows)")
    return {"what": f"ML-1M subset, rank {rank}", "n": len(r), "sweeps": sweeps,
            "s_per_sweep": a["seconds_per_sweep"], "compile_s": a["compile_seconds"],
            "fit_wall_s": wall, "rmse": rmse, "rec_s": rec_s, "rec_users": n_users,
            "rec_rows": len(rec)}


def synthetic_part(n_ratings, sweeps, device, log):
    """(c): synthetic ML-10M-shaped problem, rank 32, store_draws=False."""
    import numpy as np

    from _synth_ml10m import synthetic_ml10m, train_test
    from bayesmf.infer.gibbs import fit_gibbs, streamed_predictions
    from bayesmf.model.spec import ModelSpec

    d = synthetic_ml10m(0, n_ratings)
    log(f"[synthetic] {n_ratings} ratings, {d['n_users']} x {d['n_items']}: built in "
        f"{d['seconds']:.1f} s")
    train, (tu, ti, y) = train_test(d, 0.01)
    warm = sweeps // 2
    t0 = time.perf_counter()
    post = fit_gibbs(train, ModelSpec(rank=32), seed=0, num_warmup=warm,
                     num_samples=max(1, sweeps - warm), store_draws=False,
                     predict_pairs=(tu, ti))
    wall = time.perf_counter() - t0
    sp = streamed_predictions(post)
    rmse = float(np.sqrt(np.mean((sp["mean"] - y) ** 2)))
    a = post.attrs
    peak = peak_memory_mib(device)
    log(f"[synthetic r32] {a['settings']['n_sweeps']} sweeps: {a['seconds_per_sweep']:.4f} "
        f"s/sweep, compile {a['compile_seconds']:.2f} s, test RMSE {rmse:.4f} "
        f"(noise sd {d['truth']['noise_std']}), peak device memory "
        + (f"{peak:.0f} MiB" if peak is not None else "n/a"))
    return {"what": f"synthetic ML-10M shape ({d['n_users']} x {d['n_items']}), rank 32",
            "n": train.nnz, "sweeps": a["settings"]["n_sweeps"],
            "s_per_sweep": a["seconds_per_sweep"], "compile_s": a["compile_seconds"],
            "fit_wall_s": wall, "rmse": rmse, "build_s": d["seconds"], "peak_mib": peak}


def markdown(args, devs, backend, name, rows, peak_end):
    import jax

    from importlib import metadata

    def ver(p):
        try:
            return metadata.version(p)
        except metadata.PackageNotFoundError:
            return "n/a"

    L = ["# bayesmf GPU path check", "",
         f"Device: **{name}** (default backend `{backend}`; `jax.devices()` = "
         f"`{devs}`); jax {jax.__version__}, jaxlib {ver('jaxlib')}, bayesmf "
         f"{ver('bayesmf')}, Python {platform.python_version()}; date "
         f"{time.strftime('%Y-%m-%d %H:%M')}.", "",
         f"Command: `{' '.join([Path(sys.argv[0]).name] + sys.argv[1:])}`", "",
         "Gibbs: 1 chain, float32; s/sweep excludes compilation. ML-1M subset: a third of "
         "the sweeps warm-up, test RMSE of the clipped streamed predictive mean on the "
         "peers' 10% test split; top-10 = `bayesmf.recommend.recommend(post, n=10)` "
         "(exclude-seen, mean strategy, host numpy) for every user. Synthetic: "
         "`store_draws=False`, half the sweeps warm-up, 1% of pairs held out, RMSE floor "
         "= noise sd 0.8; peak memory = `device.memory_stats()['peak_bytes_in_use']` "
         "after the run (the process's peak so far) (n/a where the backend does not expose it).", "",
         "| problem | train ratings | sweeps | s/sweep | compile s | test RMSE | "
         "top-10 all users s | data build s | peak device MiB |",
         "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        L.append(f"| {r['what']} | {r['n']:,} | {r['sweeps']} | {fmt(r['s_per_sweep'])} | "
                 f"{fmt(r['compile_s'], 2)} | {fmt(r['rmse'])} | {fmt(r.get('rec_s'), 2)} | "
                 f"{fmt(r.get('build_s'), 1)} | {fmt(r.get('peak_mib'), 0)} |")
    L += ["", "Peak device memory over the whole process: "
          + (f"{peak_end:.0f} MiB." if peak_end is not None else "n/a."), ""]
    return "\n".join(L)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--allow-cpu", action="store_true",
                   help="run even when JAX has no GPU backend (smoke test)")
    p.add_argument("--ratings", type=int, default=10_000_000,
                   help="ratings of the synthetic ML-10M-shaped problem (default 10M)")
    p.add_argument("--sweeps", type=int, default=20, help="Gibbs sweeps on the synthetic problem")
    p.add_argument("--ml1m-sweeps", type=int, default=150, help="Gibbs sweeps on ML-1M subset")
    p.add_argument("--ranks", default="10,32", help="ranks for the ML-1M subset")
    p.add_argument("--skip-ml1m", action="store_true")
    p.add_argument("--skip-synthetic", action="store_true")
    p.add_argument("--out", default=str(HERE / "results" / "gpu_check.md"))
    a = p.parse_args(argv)
    if a.sweeps < 2 or a.ml1m_sweeps < 2:
        p.error("--sweeps and --ml1m-sweeps must be at least 2")

    devs, backend, dev, name = device_info()
    print(f"jax.devices(): {devs}")
    print(f"default backend: {backend}; device: {name}")
    if backend not in ("gpu", "cuda", "rocm") and not a.allow_cpu:
        print(f"gpu_check: no GPU backend (JAX default backend is {backend!r}, devices "
              f"{devs}). Install the CUDA build with  pip install 'bayesmf[cuda]'  "
              "(jax[cuda12]; needs an NVIDIA driver >= 525), check  python -c 'import jax; "
              "print(jax.devices())'  lists a CudaDevice, or pass --allow-cpu to run on CPU "
              "anyway.", file=sys.stderr)
        return 2

    def log(msg):
        print(msg, flush=True)

    rows = []
    if not a.skip_ml1m:
        if not (ROOT / "shared" / "bench" / "peers.py").exists():
            print(f"gpu_check: {ROOT / 'shared' / 'bench' / 'peers.py'} not found "
                  "(ML-1M subset part needs the shared/ folder; --skip-ml1m skips it)",
                  file=sys.stderr)
            return 2
        sys.path.insert(0, str(ROOT / "shared" / "bench"))
        for rank in (int(x) for x in a.ranks.split(",")):
            rows.append(ml1m_part(rank, a.ml1m_sweeps, log))
    if not a.skip_synthetic:
        rows.append(synthetic_part(a.ratings, a.sweeps, dev, log))
    md = markdown(a, devs, backend, name, rows, peak_memory_mib(dev))
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print()
    print(md)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
