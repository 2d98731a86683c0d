#!/usr/bin/env python
"""NUTS defaults: tree depth, parametrisation and initialisation on ML-100K u1.

Fits ``bayesmf.infer.nuts.fit_nuts`` (rank 5, one chain, seed 0, everything else at the
package defaults unless the run names it) on the official MovieLens-100K fold u1 and
reports, per setting:

* wall time of the fit, split into kernel init + compile (with ``init=map`` the MAP fit
  and its check), warm-up and sampling; seconds per kept draw;
* tree depth of the kept draws (mean, max, share at ``max_tree_depth``), leapfrog steps
  per draw, step size, divergences;
* split R-hat (one chain) and bulk ESS from :func:`bayesmf.diagnostics.diagnose` for 50
  probe predictions (seed 0: half training pairs, half random pairs) and for ``mu`` and
  ``tau``; ESS/s = ESS per second of *sampling* (ESS/s of the whole run in the JSON);
* test RMSE of the posterior mean (clipped to 1..5).

Results are merged into ``results/nuts_defaults.json`` (key = run label) and the table
``results/nuts_defaults.md`` is rewritten, so runs can be made one at a time::

  python benchmarks/bench_nuts_defaults.py --draws 50 --runs \
      depth6,depth7,depth8,centered-d6,centered-d7,median-init-d7,depth10
  python benchmarks/bench_nuts_defaults.py --draws 200 --runs centered-d7,centered-d6,depth7,gibbs
  python benchmarks/bench_nuts_defaults.py --draws 200 --runs cli   # the CLI command

A run name is a key of :data:`PLANS` (``gibbs``: the Gibbs sampler on the same model and
draws) or ``cli`` (:func:`run_cli`); ``--draws N`` sets warm-up = samples = N
and is part of the stored label (``depth8@50``). The machine's load average is recorded
before and after every run (2 shared cores).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
DATA = Path(os.environ.get("BAYESMF_DATA", "/work/shared/data")) / "ml-100k"

#: label -> fit_nuts options (on top of the package defaults)
PLANS = {
    # non-centred, the package default when these were measured (now explicit)
    "depth6": dict(max_tree_depth=6, centered=False),
    "depth7": dict(max_tree_depth=7, centered=False),
    "depth8": dict(max_tree_depth=8, centered=False),
    "depth10": dict(max_tree_depth=10, centered=False),
    "centered-d6": dict(max_tree_depth=6, centered=True),
    "centered-d7": dict(max_tree_depth=7, centered=True),
    "centered-d8": dict(max_tree_depth=8, centered=True),
    "median-init-d7": dict(max_tree_depth=7, centered=False, init="median"),
    "median-init-centered-d7": dict(max_tree_depth=7, centered=True, init="median"),
    "diag-d7": dict(max_tree_depth=7, factor_prior="diag"),
    "final": dict(),  # the package defaults
    "gibbs": dict(method="gibbs"),  # the conjugate Gibbs sampler, same model and draws
}


def _load():
    from bayesmf.datasets import load_movielens_fold

    return load_movielens_fold("100k", "u1", path=DATA)


def _load_avg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def split_rhat(x):
    """Rank-normalised split R-hat of draws ``x`` of shape (chains, draws, n), per column.

    The formula of :func:`arviz_stats.rhat` (Vehtari et al. 2021: every chain split in
    halves, max of the bulk and folded/tail R-hat on rank-normalised values), computed
    with its own helpers but without its ``min_chains=2`` guard, so that one chain gives
    the R-hat of its two halves (``diagnose`` and ``arviz_stats.rhat`` return NaN there).
    """
    from arviz_stats.base import array_stats as A

    x = np.asarray(x, np.float64)
    C, D, n = x.shape
    out = np.full(n, np.nan)
    for j in range(n):
        s = A._split_chains(x[:, :, j])
        if np.ptp(s) == 0:
            continue
        out[j] = max(A._rhat(A._z_scale(s)), A._rhat(A._z_scale(np.abs(s - np.median(s)))))
    return out


def run(label, opts, draws, train, test, rank=5, seed=0):
    from bayesmf.infer.nuts import fit_nuts
    from bayesmf.model.spec import ModelSpec

    method = opts.pop("method", "nuts")
    opts = {"num_samples": draws, "num_warmup": draws, "num_chains": 1, **opts}
    load0 = _load_avg()
    t0 = time.perf_counter()
    if method == "nuts":
        post = fit_nuts(train, ModelSpec(rank=rank), seed=seed, **opts)
    else:
        from bayesmf.infer import get_method

        post = get_method(method)(train, ModelSpec(rank=rank), seed=seed, **opts)
    wall = time.perf_counter() - t0
    load1 = _load_avg()
    if method == "nuts":
        tm = post.attrs["timings"]
    else:  # Gibbs: one sweep per draw, no tree
        a = post.attrs
        per = a["seconds_per_sweep"]
        tm = {"compile_s": a["compile_seconds"], "warmup_s": per * opts["num_warmup"],
              "sampling_s": per * opts["num_samples"]}
        post.attrs.setdefault("n_divergent", 0)
    mean, *_ = post.summarize_indices(test.user, test.item)
    rmse = float(np.sqrt(np.mean((np.clip(mean, 1, 5) - test.rating) ** 2)))
    return _summarise(label, method, opts, draws, post, tm, wall, load0, load1, rmse)


def _summarise(label, method, opts, draws, post, tm, wall, load0, load1, rmse):
    from bayesmf.diagnostics import diagnose

    if method == "nuts":
        st = post.sample_stats
        depth = np.asarray(st["tree_depth"]).ravel()
        md = int(post.attrs["settings"]["max_tree_depth"])
    else:
        st = {"num_steps": np.ones(1), "step_size": np.full(1, np.nan),
              "accept_prob": np.ones(1)}
        depth, md = np.zeros(1), 1
    d = diagnose(post, n_probe=50, seed=0, biases="none")
    pred = d[d["kind"] == "prediction"]
    glob = d[d["kind"] == "global"].set_index("quantity")
    # one-chain split R-hat on the same probe pairs as diagnose (seed 0)
    from bayesmf.diagnostics import _probe_pairs

    pu, pi = _probe_pairs(post, 50, np.random.default_rng(0))
    m, _ = post.pair_moments(pu, pi)
    C = post.n_chains
    rh_pred = split_rhat(m.T.reshape(len(pu), C, -1).transpose(1, 2, 0))
    rh_mu = split_rhat(np.asarray(post.draws["mu"])[..., None])[0]
    rh_tau = split_rhat(np.asarray(post.draws["tau"])[..., None])[0]
    S = post.n_draws
    res = {
        "label": label, "draws": draws, "options": opts,
        "method": method,
        "settings": {k: post.attrs["settings"].get(k) for k in
                     ("max_tree_depth", "centered", "init", "factor_prior", "target_accept")},
        "wall_s": wall, "init_s": tm.get("init_s"), "compile_s": tm.get("compile_s"),
        "warmup_s": tm["warmup_s"], "sampling_s": tm["sampling_s"],
        "s_per_draw": tm["sampling_s"] / S,
        "warmup_s_per_iter": tm["warmup_s"] / max(1, draws),
        "tree_depth_mean": float(depth.mean()), "tree_depth_max": int(depth.max()),
        "frac_at_max_depth": float(np.mean(depth >= md)),
        "steps_mean": float(np.asarray(st["num_steps"]).mean()),
        "step_size": float(np.asarray(st["step_size"]).ravel()[-1]),
        "accept_mean": float(np.asarray(st["accept_prob"]).mean()),
        "n_divergent": int(post.attrs["n_divergent"]),
        "rhat_pred_max": float(np.nanmax(rh_pred)),
        "rhat_pred_median": float(np.nanmedian(rh_pred)),
        "n_pred_rhat_gt_1_01": int(np.sum(rh_pred > 1.01)),
        "ess_pred_min": float(pred["ess_bulk"].min()),
        "ess_pred_median": float(pred["ess_bulk"].median()),
        "rhat_mu": float(rh_mu), "ess_mu": float(glob.loc["mu", "ess_bulk"]),
        "rhat_tau": float(rh_tau),
        "ess_tau": float(glob.loc["tau", "ess_bulk"]) if "tau" in glob.index else None,
        "test_rmse": rmse,
        "load_before": load0, "load_after": load1,
    }
    T = tm["sampling_s"]
    res["ess_s_pred_median"] = res["ess_pred_median"] / T
    res["ess_s_pred_min"] = res["ess_pred_min"] / T
    res["ess_s_mu"] = res["ess_mu"] / T
    res["ess_per_total_s_pred_median"] = res["ess_pred_median"] / wall
    return res


def run_cli(label, draws, test, rank=5, seed=0):
    """The CLI command of issue 17 with the package defaults, in process::

        bayesmf fit u1.base --method nuts --rank 5 --samples N --warmup N --chains 1

    ``bayesmf.cli.main`` runs as the shell command does (reads the file, fits, saves the
    model); the fitted posterior is captured before saving (the file keeps 80 evenly
    spaced draws) so that R-hat/ESS use all N draws. ``wall_s`` is the whole ``main``
    call (not the interpreter start, ~3 s)."""
    import tempfile

    from bayesmf import cli
    from bayesmf.estimator import BayesMF

    captured = {}
    orig = BayesMF.save

    def save(self, path):
        captured["post"] = self.posterior_
        return orig(self, path)

    with tempfile.TemporaryDirectory() as tmp:
        argv = ["fit", str(DATA / "u1.base"), "--method", "nuts", "--rank", str(rank),
                "--samples", str(draws), "--warmup", str(draws), "--chains", "1",
                "--seed", str(seed), "--out", str(Path(tmp) / "nuts.nc")]
        BayesMF.save = save
        load0 = _load_avg()
        t0 = time.perf_counter()
        try:
            rc = cli.main(argv)
        finally:
            BayesMF.save = orig
        wall = time.perf_counter() - t0
        load1 = _load_avg()
    if rc != 0:
        raise SystemExit(f"bayesmf {' '.join(argv)} exited with {rc}")
    post = captured["post"]
    u, i, ku, ki = post.encode_pairs(test.users.ids[test.user], test.items.ids[test.item])
    mean, *_ = post.summarize_indices(u, i, ku, ki)
    rmse = float(np.sqrt(np.mean((np.clip(mean, 1, 5) - test.rating) ** 2)))
    res = _summarise(label, "nuts", {"cli": "bayesmf " + " ".join(argv[:-2])}, draws, post,
                     post.attrs["timings"], wall, load0, load1, rmse)
    return res


def _f(x, p=3):
    if x is None:
        return "-"
    if isinstance(x, (bool, np.bool_)):
        return str(bool(x))
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, float) and not np.isfinite(x):
        return "nan"
    return f"{x:.{p}g}"


def write_markdown(store, path):
    rows = store.get("runs", {})
    lines = [
        "# NUTS defaults on MovieLens-100K u1 (bench_nuts_defaults.py)",
        "",
        "NumPyro NUTS (`fit_nuts`), rank 5, one chain, seed 0, exact Normal-Wishart factor",
        "prior unless noted; `draws` = warm-up = kept draws. `wall s` is the whole `fit_nuts`",
        "call; `init+compile s` the kernel initialisation (NumPyro evaluates the model op by",
        "op here; with `init=map` it includes the MAP fit and its check, ~4 s) plus the JAX",
        "compile. Tree depth, steps, step size and divergences are over the kept draws.",
        "R-hat is the rank-normalised split R-hat of the one chain (its two halves, the formula",
        "of `arviz_stats.rhat`, which with `diagnose` returns NaN for one chain); ESS is the",
        "bulk ESS from `bayesmf.diagnostics.diagnose` on 50 probe pairs (seed 0: 25 training",
        "pairs + 25 random pairs), ESS/s per second of sampling (after warm-up).",
        "2 shared CPU cores: `load` is the 1-minute load average before / after the run",
        "(other engineers' jobs); wall times are single noisy runs.",
        "",
        "| run | draws | depth max | centred | init | wall s | init+compile s | warm-up s | s/draw | depth mean (max) | at max | steps | step size | div | R-hat pred max | ESS pred min / med | ESS/s pred med | R-hat mu | ESS mu | ESS/s mu | ESS tau | test RMSE | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = sorted(rows.values(), key=lambda r: (r.get("order", 0)))
    for r in order:
        s = r["settings"]
        fp = "" if s.get("factor_prior") in (None, "wishart") else f" ({s['factor_prior']})"
        if r.get("method", "nuts") != "nuts":
            lines.append(
                f"| {r['label']} ({r['method']}) | {r['draws']} | - | - | - | "
                f"{_f(r['wall_s'])} | {_f(r.get('compile_s'))} | {_f(r['warmup_s'])} | "
                f"{_f(r['s_per_draw'])} | - | - | - | - | - | {_f(r['rhat_pred_max'])} | "
                f"{_f(r['ess_pred_min'])} / {_f(r['ess_pred_median'])} | "
                f"{_f(r['ess_s_pred_median'])} | {_f(r['rhat_mu'])} | {_f(r['ess_mu'])} | "
                f"{_f(r['ess_s_mu'])} | {_f(r['ess_tau'])} | {_f(r['test_rmse'], 4)} | "
                f"{_f((r['load_before'] or [None])[0], 2)} / "
                f"{_f((r['load_after'] or [None])[0], 2)} |")
            continue
        lines.append(
            f"| {r['label']}{fp} | {r['draws']} | {s['max_tree_depth']} | "
            f"{'yes' if s['centered'] else 'no'} | {s['init']} | {_f(r['wall_s'])} | "
            f"{_f((r.get('init_s') or 0) + (r.get('compile_s') or 0))} | "
            f"{_f(r['warmup_s'])} | {_f(r['s_per_draw'])} | {_f(r['tree_depth_mean'])} "
            f"({r['tree_depth_max']}) | {_f(r['frac_at_max_depth'], 2)} | "
            f"{_f(r['steps_mean'])} | {_f(r['step_size'])} | {r['n_divergent']} | "
            f"{_f(r['rhat_pred_max'])} | {_f(r['ess_pred_min'])} / {_f(r['ess_pred_median'])} | "
            f"{_f(r['ess_s_pred_median'])} | {_f(r['rhat_mu'])} | {_f(r['ess_mu'])} | "
            f"{_f(r['ess_s_mu'])} | {_f(r['ess_tau'])} | {_f(r['test_rmse'], 4)} | "
            f"{_f((r['load_before'] or [None])[0], 2)} / {_f((r['load_after'] or [None])[0], 2)} |")
    notes = store.get("notes")
    if notes:
        lines += ["", *notes]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", default="depth6,depth7,depth8,depth10",
                    help=f"comma-separated labels of {sorted(PLANS)}, or 'cli' (the CLI "
                    "command with the package defaults)")
    ap.add_argument("--draws", type=int, default=50, help="warm-up = kept draws")
    ap.add_argument("--rank", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--table-only", action="store_true", help="rewrite the table only")
    args = ap.parse_args(argv)
    RESULTS.mkdir(parents=True, exist_ok=True)
    jpath = RESULTS / "nuts_defaults.json"
    store = json.loads(jpath.read_text()) if jpath.exists() else {"runs": {}}
    store["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                        "note": "2 CPU cores shared with other jobs: wall times are noisy"}
    if not args.table_only:
        train, test = _load()
        for name in [r for r in args.runs.split(",") if r]:
            if name == "cli":
                key = f"cli@{args.draws}"
                print(f"[{key}] bayesmf fit ... (package defaults)  load {_load_avg()}",
                      flush=True)
                res = run_cli(key, args.draws, test, args.rank, args.seed)
                res["order"] = store["runs"].get(key, {}).get("order", len(store["runs"]))
                print(json.dumps(res, default=str), flush=True)
                store["runs"][key] = res
                jpath.write_text(json.dumps(store, indent=1, default=str))
                write_markdown(store, RESULTS / "nuts_defaults.md")
                continue
            if name not in PLANS:
                sys.exit(f"unknown run {name!r}; choose from {sorted(PLANS)}")
            key = f"{name}@{args.draws}"
            print(f"[{key}] {PLANS[name]}  load {_load_avg()}", flush=True)
            res = run(key, dict(PLANS[name]), args.draws, train, test, args.rank, args.seed)
            res["order"] = len(store["runs"]) if key not in store["runs"] else \
                store["runs"][key].get("order", 0)
            print(json.dumps(res, default=str), flush=True)
            store["runs"][key] = res
            jpath.write_text(json.dumps(store, indent=1, default=str))
            write_markdown(store, RESULTS / "nuts_defaults.md")
    write_markdown(store, RESULTS / "nuts_defaults.md")


if __name__ == "__main__":
    main()
