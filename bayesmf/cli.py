"""Command-line interface: ``bayesmf <command> ...``.

Commands
--------
``bayesmf data info SOURCE``
    Counts, sparsity, rating scale and ratings-per-user/item quantiles.
``bayesmf fit TRAIN --method M --rank K --seed S --out MODEL``
    Fit a model; TRAIN is a CSV/TSV/Parquet file with columns ``user,item,rating
    [,timestamp]`` (``--user-col`` etc. rename) or a dataset name such as
    ``movielens:latest-small``. MCMC: ``--samples --warmup --chains --thin``; any method
    option: ``--option key=value``. Checkpoints: ``--checkpoint PATH --checkpoint-every N``;
    ``bayesmf fit --resume PATH`` continues a killed run. ``--chains C --option
    chain_method=parallel`` runs the Gibbs chains one per CPU core (the CLI starts JAX with
    ``min(C, cores)`` host devices unless ``XLA_FLAGS`` sets a count).
``bayesmf predict MODEL PAIRS.csv --out PRED.csv [--interval 0.9]``
    Columns ``user,item,mean,std,lower,upper,known_user,known_item``.
``bayesmf evaluate MODEL TEST [--json]``
    Rating metrics (RMSE, MAE, NLPD, CRPS, coverage) and ranking metrics @k.
``bayesmf recommend MODEL --users ID,ID --n 10 --strategy mean|ucb|lcb|thompson|prob``
    Top-n items per user (``--out recs.csv`` or printed).
``bayesmf similar MODEL --item ID --n 10``
    Items most similar to an item (cosine over factor draws).

Exit status: 0 on success, 2 for bad input (a clear one-line message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from bayesmf.errors import BayesMFError, DataError

__all__ = ["main", "build_parser"]


# ---------------------------------------------------------------------- helpers
def _parse_value(text: str):
    for conv in (int, float):
        try:
            return conv(text)
        except ValueError:
            pass
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    return text


def _options(pairs: list[str] | None) -> dict:
    out = {}
    for p in pairs or []:
        if "=" not in p:
            raise DataError(f"--option expects key=value, got {p!r}")
        k, v = p.split("=", 1)
        out[k.strip().replace("-", "_")] = _parse_value(v.strip())
    return out


def _coerce_ids(values, vocab):
    """Ids read from text (CLI, CSV) take the id type of the model's vocabulary."""
    arr = np.asarray(values)
    if vocab.is_string:
        return np.asarray([str(x) for x in arr], dtype=object)
    if arr.dtype.kind in "iu":
        return arr
    try:
        return np.asarray([int(str(x).strip()) for x in arr], dtype=np.int64)
    except ValueError:
        return arr.astype(object)  # unknown ids; reported by the caller's policy


def _read_table(path: str, user_col: str, item_col: str) -> pd.DataFrame:
    p = Path(path)
    if not p.exists():
        raise DataError(f"file not found: {path}")
    if p.suffix.lower() == ".parquet":
        df = pd.read_parquet(p)
    else:
        sep = "\t" if p.suffix.lower() in (".tsv", ".tab") else ","
        df = pd.read_csv(p, sep=sep)
    missing = [c for c in (user_col, item_col) if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; it has {list(df.columns)}")
    return df


def _load_model(path: str):
    from bayesmf.estimator import load

    return load(path)


def _source_kwargs(a) -> dict:
    return dict(user_col=a.user_col, item_col=a.item_col, rating_col=a.rating_col,
                timestamp_col=a.timestamp_col)


def _progress(a) -> bool:
    if a.progress is not None:
        return a.progress
    return sys.stderr.isatty()


# ---------------------------------------------------------------------- commands
def cmd_data_info(a) -> int:
    from bayesmf.datasets import load_ratings_source

    r = load_ratings_source(a.source, **_source_kwargs(a))
    d = r.describe()
    if a.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"source            {a.source}")
    print(f"ratings           {d['ratings']:,}")
    print(f"users             {d['users']:,}")
    print(f"items             {d['items']:,}")
    print(f"sparsity          {d['sparsity']:.6f}  (density {d['density']:.6f})")
    print(f"rating scale      {d['rating_min']:g} .. {d['rating_max']:g}"
          f"  mean {d['rating_mean']:.4f}")
    if d["rating_levels"] is not None:
        print(f"rating levels     {', '.join(f'{x:g}' for x in d['rating_levels'])}")
    for side in ("user", "item"):
        q = d[f"ratings_per_{side}"]
        print(f"ratings per {side:<5} min {q['min']:g}  q25 {q['q25']:g}  median "
              f"{q['median']:g}  q75 {q['q75']:g}  max {q['max']:g}")
    print(f"timestamps        {'yes' if d['has_timestamp'] else 'no'}")
    return 0


_FIT_FLAGS = {"samples": "num_samples", "warmup": "num_warmup", "chains": "num_chains",
              "thin": "thin", "max_iter": "max_iter", "solver": "solver",
              "checkpoint": "checkpoint", "checkpoint_every": "checkpoint_every"}


def _devices_for_parallel_chains(opts: dict) -> None:
    """``--option chain_method=parallel`` on CPU: start JAX with one host device per chain
    (up to the CPU count) unless XLA_FLAGS already says how many; only possible before
    jax is imported, which in the CLI happens after this point."""
    import os

    if opts.get("chain_method") != "parallel" or "jax" in sys.modules:
        return
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" in flags:
        return
    n = min(int(opts.get("num_chains", 1)), os.cpu_count() or 1)
    if n > 1:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={n}".strip()


def cmd_fit(a) -> int:
    from bayesmf.datasets import load_ratings_source
    from bayesmf.estimator import BayesMF

    if a.resume:
        side = Path(str(a.resume) + ".cli.json")
        if not side.exists():
            raise DataError(f"cannot resume: {side} (written next to the checkpoint by "
                            "'bayesmf fit --checkpoint') is missing")
        saved = json.loads(side.read_text())
        ckpt = a.resume
        for k, v in saved.items():
            setattr(a, k, v)
        a.resume = ckpt
    if not a.train:
        raise DataError("TRAIN is required (a CSV/Parquet file or a dataset name such as "
                        "movielens:latest-small)")
    if not a.out:
        raise DataError("--out MODEL is required")
    opts = _options(a.option)
    for flag, name in _FIT_FLAGS.items():
        v = getattr(a, flag)
        if v is not None:
            opts[name] = v
    _devices_for_parallel_chains(opts)
    if a.resume:
        opts["resume"] = True
        opts.setdefault("checkpoint", a.resume)
    if opts.get("checkpoint"):
        side = Path(str(opts["checkpoint"]) + ".cli.json")
        keep = {k: v for k, v in vars(a).items() if k not in ("func", "resume")}
        side.write_text(json.dumps(keep))
    train = load_ratings_source(a.train, **_source_kwargs(a))
    model = BayesMF(method=a.method, rank=a.rank, likelihood=a.likelihood, prior=a.prior,
                    seed=a.seed,
                    progress=_progress(a), **opts)
    model.fit(train)
    model.save(a.out)
    post = model.posterior_
    print(f"fitted {a.method} rank {a.rank} on {train.nnz:,} ratings "
          f"({train.n_users:,} users x {train.n_items:,} items) in {model.fit_seconds_:.2f} s; "
          f"{post.n_chains} chain(s) x {post.n_draws} draw(s); saved {a.out}")
    return 0


def cmd_predict(a) -> int:
    model = _load_model(a.model)
    post = model.posterior
    df = _read_table(a.pairs, a.user_col, a.item_col)
    users = _coerce_ids(df[a.user_col].to_numpy(), post.users)
    items = _coerce_ids(df[a.item_col].to_numpy(), post.items)
    pred = post.predict(users, items, interval=a.interval, clip=a.clip,
                        unknown="raise" if a.strict else "fallback")
    out = pred.to_frame()[["user", "item", "mean", "std", "lower", "upper",
                           "known_user", "known_item"]]
    if a.out:
        out.to_csv(a.out, index=False)
        print(f"wrote {len(out):,} predictions ({pred.uncertainty}; {a.interval:.0%} "
              f"interval) to {a.out}")
    else:
        out.to_csv(sys.stdout, index=False)
    return 0


def cmd_evaluate(a) -> int:
    from bayesmf import evaluate as ev
    from bayesmf.data.ratings import Ratings

    model = _load_model(a.model)
    post = model.posterior
    if ":" in a.test and not Path(a.test).exists():
        from bayesmf.datasets import load_ratings_source

        test = load_ratings_source(a.test, **_source_kwargs(a))
    else:
        df = _read_table(a.test, a.user_col, a.item_col)
        if a.rating_col not in df.columns:
            raise DataError(f"{a.test}: missing rating column {a.rating_col!r}")
        df = df.assign(**{a.user_col: _coerce_ids(df[a.user_col].to_numpy(), post.users),
                          a.item_col: _coerce_ids(df[a.item_col].to_numpy(), post.items)})
        test = Ratings.from_dataframe(df, a.user_col, a.item_col, a.rating_col,
                                      timestamp_col=None)
    res = ev.evaluate(post, test, k=a.k, ranking=not a.no_ranking)
    if a.json:
        print(json.dumps(res, indent=2, default=float))
    else:
        for key, val in _flatten(res):
            print(f"{key:<28} {val:.5g}" if isinstance(val, float) else f"{key:<28} {val}")
    return 0


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def cmd_recommend(a) -> int:
    from bayesmf import recommend as rec

    model = _load_model(a.model)
    post = model.posterior
    if a.users:
        users = _coerce_ids([u for u in a.users.split(",") if u.strip()], post.users)
    else:
        users = post.users.ids
    kw = {}
    if a.seed is not None:
        kw["seed"] = a.seed
    if a.threshold is not None:
        kw["threshold"] = a.threshold
    if a.quantile is not None:
        kw["quantile"] = a.quantile
    recs = rec.recommend(post, users, n=a.n, strategy=a.strategy,
                         exclude_seen=not a.include_seen, **kw)
    if a.out:
        recs.to_csv(a.out, index=False)
        print(f"wrote {len(recs):,} recommendations for {len(users):,} user(s) to {a.out}")
    else:
        recs.to_csv(sys.stdout, index=False)
    return 0


def cmd_similar(a) -> int:
    from bayesmf.recommend import similar_items

    model = _load_model(a.model)
    post = model.posterior
    item = _coerce_ids([a.item], post.items)[0]
    out = similar_items(post, item, n=a.n)
    out.to_csv(a.out if a.out else sys.stdout, index=False)
    return 0


# ---------------------------------------------------------------------- parser
def _add_columns(p):
    p.add_argument("--user-col", default="user", help="user id column (default: user)")
    p.add_argument("--item-col", default="item", help="item id column (default: item)")
    p.add_argument("--rating-col", default="rating", help="rating column (default: rating)")
    p.add_argument("--timestamp-col", default="auto",
                   help="timestamp column (default: 'timestamp' when present)")


def build_parser() -> argparse.ArgumentParser:
    from bayesmf.infer import METHODS
    from bayesmf.model.likelihoods import LIKELIHOODS
    from bayesmf.model.priors import FACTOR_PRIORS

    ap = argparse.ArgumentParser(prog="bayesmf", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="dataset utilities")
    dsub = data.add_subparsers(dest="data_command", required=True)
    info = dsub.add_parser("info", help="summary of a dataset or ratings file")
    info.add_argument("source", help="file path or dataset name (movielens:latest-small)")
    info.add_argument("--json", action="store_true")
    _add_columns(info)
    info.set_defaults(func=cmd_data_info)

    fit = sub.add_parser("fit", help="fit a model and save it")
    fit.add_argument("train", nargs="?", help="CSV/TSV/Parquet file or dataset name")
    fit.add_argument("--method", default="map", choices=sorted(METHODS))
    fit.add_argument("--rank", type=int, default=10)
    fit.add_argument("--likelihood", default="gaussian", choices=sorted(LIKELIHOODS),
                     help="observation family: gaussian (ratings as continuous), ordinal "
                          "(ordered probit over the star levels), bernoulli-probit / "
                          "bernoulli-logit (0/1 data); predict writes the expected rating "
                          "or P(y=1) in 'mean' (default: gaussian)")
    fit.add_argument("--prior", default="normal-wishart", choices=sorted(FACTOR_PRIORS),
                     help="factor prior of the Bayesian methods: normal-wishart (BPMF) or "
                          "normal-gamma (per-dimension, libFM/myFM style) (default: "
                          "normal-wishart)")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--out", help="model file to write (netCDF)")
    fit.add_argument("--samples", type=int, help="MCMC draws kept per chain (num_samples)")
    fit.add_argument("--warmup", type=int, help="MCMC warm-up sweeps (num_warmup)")
    fit.add_argument("--chains", type=int, help="number of chains (num_chains)")
    fit.add_argument("--thin", type=int, help="keep every T-th draw")
    fit.add_argument("--max-iter", type=int, help="MAP iterations")
    fit.add_argument("--solver", help="MAP solver (als, lbfgs, adam)")
    fit.add_argument("--checkpoint", help="write resumable checkpoints to this path")
    fit.add_argument("--checkpoint-every", type=int, help="iterations between checkpoints")
    fit.add_argument("--resume", help="resume the run that checkpointed to this path")
    fit.add_argument("--option", action="append", metavar="KEY=VALUE",
                     help="any method option, e.g. --option guide=lowrank (repeatable)")
    pg = fit.add_mutually_exclusive_group()
    pg.add_argument("--progress", dest="progress", action="store_true", default=None)
    pg.add_argument("--no-progress", dest="progress", action="store_false")
    _add_columns(fit)
    fit.set_defaults(func=cmd_fit)

    pr = sub.add_parser("predict", help="predict ratings with intervals for pairs")
    pr.add_argument("model")
    pr.add_argument("pairs", help="CSV with user,item columns")
    pr.add_argument("--out", help="CSV to write (default: stdout)")
    pr.add_argument("--interval", type=float, default=0.9)
    pr.add_argument("--clip", action="store_true", help="clip to the training rating scale")
    pr.add_argument("--strict", action="store_true", help="error on unknown ids")
    _add_columns(pr)
    pr.set_defaults(func=cmd_predict)

    ev = sub.add_parser("evaluate", help="metrics on held-out ratings")
    ev.add_argument("model")
    ev.add_argument("test", help="CSV with user,item,rating columns or a dataset name")
    ev.add_argument("--json", action="store_true")
    ev.add_argument("--k", type=int, default=10, help="cut-off for ranking metrics")
    ev.add_argument("--no-ranking", action="store_true", help="rating metrics only")
    _add_columns(ev)
    ev.set_defaults(func=cmd_evaluate)

    rc = sub.add_parser("recommend", help="top-n recommendations")
    rc.add_argument("model")
    rc.add_argument("--users", help="comma-separated raw user ids (default: all users)")
    rc.add_argument("--n", type=int, default=10)
    rc.add_argument("--strategy", default="mean",
                    choices=["mean", "ucb", "lcb", "thompson", "prob"])
    rc.add_argument("--seed", type=int)
    rc.add_argument("--threshold", type=float, help="relevance threshold for 'prob'")
    rc.add_argument("--quantile", type=float, help="quantile for ucb/lcb")
    rc.add_argument("--include-seen", action="store_true",
                    help="do not exclude items the user rated in training")
    rc.add_argument("--out", help="CSV to write (default: stdout)")
    rc.set_defaults(func=cmd_recommend)

    si = sub.add_parser("similar", help="items similar to an item")
    si.add_argument("model")
    si.add_argument("--item", required=True)
    si.add_argument("--n", type=int, default=10)
    si.add_argument("--out")
    si.set_defaults(func=cmd_similar)
    return ap


def main(argv=None) -> int:
    ap = build_parser()
    a = ap.parse_args(argv)
    try:
        return int(a.func(a) or 0)
    except BayesMFError as exc:
        print(f"bayesmf {a.command}: error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError) as exc:
        print(f"bayesmf {a.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
