"""The CLI contract, end to end in subprocesses (a later process loads the model file)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bayesmf.cli import main
from bayesmf.estimator import load


def _run(*args, check=True, env=None):
    proc = subprocess.run([sys.executable, "-m", "bayesmf.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=300, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory):
    """A small planted low-rank-plus-bias data set with string user ids."""
    rng = np.random.default_rng(0)
    n_u, n_i, k = 40, 30, 2
    U, V = rng.normal(size=(n_u, k)), rng.normal(size=(n_i, k))
    bu, bi = rng.normal(0, 0.3, n_u), rng.normal(0, 0.3, n_i)
    mask = rng.random((n_u, n_i)) < 0.5
    uu, ii = np.nonzero(mask)
    r = 3 + bu[uu] + bi[ii] + np.sum(U[uu] * V[ii], 1) + rng.normal(0, 0.3, len(uu))
    df = pd.DataFrame({"uid": [f"user{u}" for u in uu], "movie": ii + 1000,
                       "stars": np.round(np.clip(r, 1, 5), 1)})
    d = tmp_path_factory.mktemp("cli")
    perm = rng.permutation(len(df))
    train, test = df.iloc[perm[60:]], df.iloc[perm[:60]]
    train.to_csv(d / "train.csv", index=False)
    test.to_csv(d / "test.csv", index=False)
    return d


def test_data_info_packaged_json(capsys):
    assert main(["data", "info", "movielens:latest-small", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["ratings"], info["users"], info["items"]) == (100836, 610, 9724)


def test_fit_predict_evaluate_round_trip(small_csv):
    d = small_csv
    cols = ["--user-col", "uid", "--item-col", "movie", "--rating-col", "stars"]
    out = _run("fit", d / "train.csv", "--method", "map", "--rank", 2, "--seed", 3,
               "--out", d / "m.nc", *cols)
    assert "saved" in out.stdout
    pairs = pd.read_csv(d / "test.csv")[["uid", "movie"]]
    pairs.loc[len(pairs)] = ["newcomer", 1000]
    pairs.to_csv(d / "pairs.csv", index=False)
    _run("predict", d / "m.nc", d / "pairs.csv", "--out", d / "pred.csv",
         "--interval", 0.8, "--user-col", "uid", "--item-col", "movie")
    pred = pd.read_csv(d / "pred.csv")
    assert list(pred.columns) == ["user", "item", "mean", "std", "lower", "upper",
                                  "known_user", "known_item"]
    assert len(pred) == len(pairs)
    assert np.isfinite(pred[["mean", "std", "lower", "upper"]].to_numpy()).all()
    assert (pred["lower"] < pred["mean"]).all() and (pred["mean"] < pred["upper"]).all()
    assert not pred["known_user"].iloc[-1] and pred["known_user"].iloc[:-1].all()
    # the same predictions from the Python API on the reloaded file
    import bayesmf

    model = bayesmf.load(d / "m.nc")
    api = model.predict(pairs, user_col="uid", item_col="movie", interval=0.8)
    # the CSV holds 6 significant digits (FLOAT_FORMAT): relative error <= 5e-6
    np.testing.assert_allclose(api["mean"].to_numpy(), pred["mean"].to_numpy(), rtol=6e-6)
    ev = _run("evaluate", d / "m.nc", d / "test.csv", "--json", "--no-ranking", *cols)
    metrics = json.loads(ev.stdout)
    test = pd.read_csv(d / "test.csv")
    direct = model.predict(test, user_col="uid", item_col="movie")
    rmse = np.sqrt(np.mean((np.clip(direct["mean"], 1, 5) - test["stars"]) ** 2))
    assert metrics["rmse"] == pytest.approx(rmse, rel=1e-3)


def test_recommend_cli(small_csv):
    d = small_csv
    if not (d / "m.nc").exists():
        pytest.skip("needs the model from the round-trip test")
    _run("recommend", d / "m.nc", "--users", "user1,user2", "--n", 3, "--out", d / "recs.csv")
    recs = pd.read_csv(d / "recs.csv")
    assert set(recs["user"]) == {"user1", "user2"}
    assert recs.groupby("user").size().tolist() == [3, 3]
    train = pd.read_csv(d / "train.csv")
    seen = set(zip(train["uid"], train["movie"]))
    assert not any((u, i) in seen for u, i in zip(recs["user"], recs["item"]))


def test_bad_input_exit_code_2(small_csv, tmp_path):
    proc = _run("fit", tmp_path / "missing.csv", "--out", tmp_path / "x.nc", check=False)
    assert proc.returncode == 2 and "error" in proc.stderr
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"not a model")
    proc = _run("predict", bad, small_csv / "test.csv", "--user-col", "uid",
                "--item-col", "movie", check=False)
    assert proc.returncode == 2 and "not a readable bayesmf model" in proc.stderr
    proc = _run("fit", small_csv / "train.csv", "--user-col", "uid", "--item-col", "movie",
                "--rating-col", "stars", "--rank", 1000, "--out", tmp_path / "y.nc",
                check=False)
    assert proc.returncode == 2 and "rank 1000 is larger than the data supports" in proc.stderr


def test_fit_gibbs_parallel_chains_uses_one_device_per_chain(small_csv):
    """--option chain_method=parallel: the CLI starts JAX with one CPU device per chain
    (the subprocess gets no XLA_FLAGS; note that importing pymc.sampling.jax sets a device
    count of 100 in os.environ, which subprocesses of this test process would inherit)."""
    import os

    from bayesmf import load

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: nothing to run in parallel")
    d = small_csv
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    _run("fit", d / "train.csv", "--user-col", "uid", "--item-col", "movie",
         "--rating-col", "stars", "--method", "gibbs", "--rank", 2, "--chains", 2,
         "--samples", 5, "--warmup", 2, "--option", "chain_method=parallel",
         "--out", d / "par.nc", env=env)
    post = load(d / "par.nc").posterior_
    assert post.attrs["chain_method_used"] == "parallel" and post.attrs["devices"] == 2
    assert post.n_chains == 2


# bernoulli-logit in make test-all: the CLI's Bernoulli fit / predict / recommend stay in
# make test through tests/test_cli_implicit.py (sampled negatives, recalibration)
@pytest.mark.parametrize("likelihood", [pytest.param("bernoulli-logit",
                                                     marks=pytest.mark.slow), "ordinal"])
def test_cli_likelihoods_end_to_end(small_csv, tmp_path, likelihood):
    """``--likelihood`` through fit, predict (mean = P(y=1) or the expected rating) and
    evaluate --json (nlpd = log-loss of the test values); stars given to a Bernoulli
    model are refused with a one-line error."""
    train = pd.read_csv(small_csv / "train.csv")
    test = pd.read_csv(small_csv / "test.csv")
    if likelihood == "ordinal":
        train["stars"], test["stars"] = np.round(train["stars"]), np.round(test["stars"])
        test = test[test["stars"].isin(train["stars"].unique())]
    else:
        train["stars"], test["stars"] = (train["stars"] >= 3.5) * 1, (test["stars"] >= 3.5) * 1
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    model = tmp_path / "m.nc"
    _run("fit", tmp_path / "train.csv", "--user-col", "uid", "--item-col", "movie",
         "--rating-col", "stars", "--likelihood", likelihood, "--method", "gibbs",
         "--rank", 2, "--samples", 40, "--warmup", 40, "--no-progress", "--out", model)
    test[["uid", "movie"]].rename(columns={"uid": "user", "movie": "item"}).to_csv(
        tmp_path / "pairs.csv", index=False)
    _run("predict", model, tmp_path / "pairs.csv", "--out", tmp_path / "pred.csv")
    pred = pd.read_csv(tmp_path / "pred.csv")
    lo, hi = (0, 1) if likelihood != "ordinal" else (train["stars"].min(), train["stars"].max())
    assert pred["mean"].between(lo, hi).all() and len(pred) == len(test)
    test.rename(columns={"uid": "user", "movie": "item", "stars": "rating"}).to_csv(
        tmp_path / "test_std.csv", index=False)
    out = json.loads(_run("evaluate", model, tmp_path / "test_std.csv", "--json",
                          "--no-ranking").stdout)
    assert 0 < out["nlpd"] < np.log(5 if likelihood == "ordinal" else 2) + 0.5
    if likelihood != "ordinal":
        assert 0.5 <= out["auc"] <= 1 and "brier" in out
        stars = _run("fit", small_csv / "train.csv", "--user-col", "uid", "--item-col",
                     "movie", "--rating-col", "stars", "--likelihood", likelihood,
                     "--rank", 2, "--out", tmp_path / "x.nc", check=False)
        assert stars.returncode != 0 and "0/1" in stars.stderr
        assert "Traceback" not in stars.stderr


# ----------------------------------------------------------------------------- split
@pytest.fixture(scope="module")
def stamped_csv(tmp_path_factory):
    """Ratings with string user ids, integer item ids and timestamps."""
    rng = np.random.default_rng(7)
    uu, ii = np.nonzero(rng.random((30, 25)) < 0.45)
    df = pd.DataFrame({"user": [f"u{u:02d}" for u in uu], "item": ii + 500,
                       "rating": rng.choice([1.0, 2.5, 3.0, 4.5, 5.0], len(uu)),
                       "timestamp": 10**9 + rng.permutation(len(uu)) * 60})
    d = tmp_path_factory.mktemp("split")
    df.to_csv(d / "all.csv", index=False)
    return d


@pytest.mark.parametrize("strategy,extra", [
    ("random", []), ("per-user", ["--test-fraction", "0.3"]), ("leave-one-out", []),
    ("temporal", []), ("temporal", ["--last-k", "2"])])
def test_split_command(stamped_csv, tmp_path, capsys, strategy, extra):
    """``bayesmf split`` partitions the rows exactly, writes the ids and ratings as read,
    keeps every test user in train where the strategy promises it, matches the
    bayesmf.data.split function, and its files go straight into fit and evaluate."""
    from bayesmf.data.split import random_split, temporal_split, user_split
    from bayesmf.datasets import load_ratings_source

    src = stamped_csv / "all.csv"
    tr, te = tmp_path / "train.csv", tmp_path / "test.csv"
    seed = [] if strategy == "temporal" else ["--seed", "3"]  # temporal refuses a seed
    assert main(["split", str(src), "--strategy", strategy, *seed, *extra,
                 "--out-train", str(tr), "--out-test", str(te)]) == 0
    assert "test rows whose user is not in train" in capsys.readouterr().out
    full = pd.read_csv(src)
    a, b = pd.read_csv(tr), pd.read_csv(te)
    assert list(a.columns) == list(b.columns) == ["user", "item", "rating", "timestamp"]
    key = ["user", "item"]
    both = pd.concat([a, b]).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(both, full.sort_values(key).reset_index(drop=True))
    assert not set(map(tuple, a[key].values)) & set(map(tuple, b[key].values))
    # the same split as the library function with the same seed
    r = load_ratings_source(src)
    ref = {"random": lambda: random_split(r, 0.2, seed=3),
           "per-user": lambda: user_split(r, 0.3, seed=3),
           "leave-one-out": lambda: user_split(r, n_test=1, seed=3),
           "temporal": lambda: (temporal_split(r, last_k=2) if extra
                                else temporal_split(r, test_fraction=0.2))}[strategy]()
    got = set(map(tuple, b[key].values))
    want = set(map(tuple, ref.test.to_dataframe()[key].values))
    assert got == want
    if strategy in ("per-user", "leave-one-out") or extra == ["--last-k", "2"]:
        assert set(b["user"]) <= set(a["user"])  # promised: every test user is in train
    if strategy == "leave-one-out":
        assert b.groupby("user").size().eq(1).all()
        assert set(b["user"]) == set(full["user"][full.groupby("user")["user"].transform(
            "size") > 1])
    if strategy == "temporal" and not extra:
        assert b["timestamp"].min() >= a["timestamp"].max()
    if extra == ["--last-k", "2"]:
        last = full.sort_values("timestamp").groupby("user").tail(2)
        assert set(map(tuple, last[key].values)) == got
    # round trip through fit and evaluate
    model = tmp_path / "m.nc"
    assert main(["fit", str(tr), "--rank", "2", "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(model), str(te), "--json", "--no-ranking"]) == 0
    cap = capsys.readouterr()
    res = json.loads(cap.out)
    assert res["n_test"] == len(b) and res["n_in_train"] == 0 and "warning" not in cap.err
    if strategy in ("per-user", "leave-one-out"):
        assert res["n_cold"] == int((~b["item"].isin(a["item"])).sum())


def test_split_writes_ids_and_ratings_exactly(tmp_path, capsys):
    """String ids that look like numbers stay as read by the ratings reader, and
    ratings are not rounded (predictions are; see FLOAT_FORMAT)."""
    from bayesmf.datasets import load_ratings_source

    df = pd.DataFrame({"user": ["a", "b", "a", "b", "c", "c"],
                       "item": [10, 10, 11, 12, 11, 12],
                       "rating": [0.1 + 0.2, 1 / 3, 4.0, 2.5, 1e-7, 123456.789]})
    df.to_csv(tmp_path / "r.csv", index=False)
    assert main(["split", str(tmp_path / "r.csv"), "--strategy", "per-user",
                 "--test-fraction", "0.5", "--out-train", str(tmp_path / "a.tsv"),
                 "--out-test", str(tmp_path / "b.csv.gz")]) == 0
    back = pd.concat([pd.read_csv(tmp_path / "a.tsv", sep="\t"),
                      pd.read_csv(tmp_path / "b.csv.gz")]).sort_values(["user", "item"])
    src = load_ratings_source(tmp_path / "r.csv").to_dataframe().sort_values(["user", "item"])
    assert back["user"].tolist() == src["user"].tolist()
    assert back["item"].tolist() == src["item"].tolist()
    assert back["rating"].tolist() == src["rating"].tolist()  # bit-exact
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_split_and_evaluate_take_duplicates(tmp_path, capsys):
    """A file with a repeated pair: the error says --duplicates, and split / evaluate take
    it (only fit and data info did: 'unrecognized arguments')."""
    rows = "user,item,rating\n" + "".join(f"u{u},i{i},{1 + (u + i) % 5}\n"
                                         for u in range(6) for i in range(5))
    (tmp_path / "r.csv").write_text(rows + "u0,i0,2\n")
    out = ["--out-train", str(tmp_path / "tr.csv"), "--out-test", str(tmp_path / "te.csv")]
    assert main(["split", str(tmp_path / "r.csv"), *out]) == 2
    assert "--duplicates" in capsys.readouterr().err
    assert main(["split", str(tmp_path / "r.csv"), "--duplicates", "last", *out]) == 0
    assert main(["fit", str(tmp_path / "tr.csv"), "--rank", "1", "--out",
                 str(tmp_path / "m.nc")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "m.nc"), str(tmp_path / "r.csv"), "--json"]) == 2
    assert main(["evaluate", str(tmp_path / "m.nc"), str(tmp_path / "r.csv"), "--json",
                 "--duplicates", "mean"]) == 0
    capsys.readouterr()


def test_evaluate_on_training_pairs_warns_and_counts(small_csv, tmp_path, capsys):
    d = small_csv
    cols = ["--user-col", "uid", "--item-col", "movie", "--rating-col", "stars"]
    model = tmp_path / "m.nc"
    assert main(["fit", str(d / "train.csv"), "--rank", "2", "--out", str(model), *cols]) == 0
    capsys.readouterr()
    out = tmp_path / "metrics.json"
    assert main(["evaluate", str(model), str(d / "train.csv"), "--json", "--out", str(out),
                 *cols]) == 0
    cap = capsys.readouterr()
    n = len(pd.read_csv(d / "train.csv"))
    assert f"warning: {n:,} of {n:,} test pairs are training pairs" in cap.err
    res = json.loads(cap.out)
    assert res["n_in_train"] == n and "in-sample" in res["ranking"]["skipped"]
    assert json.loads(out.read_text()) == res
    # mixed: half held-out, half training pairs
    mix = pd.concat([pd.read_csv(d / "test.csv"), pd.read_csv(d / "train.csv").iloc[:25]])
    mix.to_csv(tmp_path / "mix.csv", index=False)
    assert main(["evaluate", str(model), str(tmp_path / "mix.csv"), "--json", *cols]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["n_in_train"] == 25 and "25 of 85" in cap.err


def test_csv_floats_have_six_significant_digits(small_csv, tmp_path, capsys):
    d = small_csv
    cols = ["--user-col", "uid", "--item-col", "movie", "--rating-col", "stars"]
    model = tmp_path / "m.nc"
    assert main(["fit", str(d / "train.csv"), "--rank", "2", "--out", str(model), *cols]) == 0
    pd.read_csv(d / "test.csv")[["uid", "movie"]].to_csv(tmp_path / "p.csv", index=False)
    assert main(["predict", str(model), str(tmp_path / "p.csv"), "--out",
                 str(tmp_path / "pred.csv"), "--user-col", "uid", "--item-col", "movie"]) == 0
    assert main(["similar", str(model), "--item", "1000", "--n", "3"]) == 0
    assert main(["recommend", str(model), "--users", "user1", "--n", "3"]) == 0
    capsys.readouterr()
    text = (tmp_path / "pred.csv").read_text()
    numbers = [x for line in text.splitlines()[1:] for x in line.split(",")[2:6]]
    assert numbers and max(len(x.lstrip("-").replace(".", "").lstrip("0").split("e")[0])
                           for x in numbers) <= 6


def test_fit_resume_reports_the_sweep(small_csv, tmp_path, capsys):
    d = small_csv
    cols = ["--user-col", "uid", "--item-col", "movie", "--rating-col", "stars"]
    ck = tmp_path / "ck.npz"
    args = ["fit", str(d / "train.csv"), "--method", "gibbs", "--rank", "2", "--samples",
            "6", "--warmup", "4", "--checkpoint", str(ck), "--checkpoint-every", "5",
            "--no-progress", "--out", str(tmp_path / "g.nc"), *cols]
    assert main(args) == 0
    assert "resumed" not in capsys.readouterr().err
    assert main(["fit", "--resume", str(ck)]) == 0
    err = capsys.readouterr().err
    assert f"resumed {ck} at sweep 10 of 10" in err


def test_fit_resume_reads_the_named_checkpoint_from_any_folder(small_csv, tmp_path, capsys,
                                                               monkeypatch):
    """--resume PATH resumes PATH (also when the checkpoint was moved) and the relative
    paths of the first run are stored absolute, so the resume works from another folder."""
    run, moved, elsewhere = (tmp_path / n for n in ("run", "moved", "elsewhere"))
    for p in (run, moved, elsewhere):
        p.mkdir()
    shutil.copy(small_csv / "train.csv", run / "train.csv")
    monkeypatch.chdir(run)
    assert main(["fit", "train.csv", "--method", "gibbs", "--rank", "2", "--samples", "6",
                 "--warmup", "4", "--checkpoint", "ck.npz", "--checkpoint-every", "5",
                 "--no-progress", "--out", "g.nc", "--user-col", "uid", "--item-col", "movie",
                 "--rating-col", "stars"]) == 0
    capsys.readouterr()
    for f in run.iterdir():
        if f.name.startswith("ck.npz"):
            (shutil.copytree if f.is_dir() else shutil.move)(str(f), str(moved / f.name))
    monkeypatch.chdir(elsewhere)
    assert main(["fit", "--resume", str(moved / "ck.npz")]) == 0
    err = capsys.readouterr().err
    assert f"resumed {moved / 'ck.npz'} at sweep 10 of 10" in err, err
    assert (run / "g.nc").exists() and not (run / "ck.npz.cli.json").exists()


# ----------------------------------------------------------------------------- issue 17
@pytest.fixture(scope="module")
def int_model(tmp_path_factory):
    """A MAP model on integer ids 1..20 x 101..115 (written as plain integers)."""
    rng = np.random.default_rng(3)
    uu, ii = np.nonzero(rng.random((20, 15)) < 0.6)
    df = pd.DataFrame({"user": uu + 1, "item": ii + 101,
                       "rating": rng.integers(1, 6, len(uu)).astype(float)})
    d = tmp_path_factory.mktemp("ids")
    df.to_csv(d / "train.csv", index=False)
    assert main(["fit", str(d / "train.csv"), "--method", "map", "--rank", "2",
                 "--out", str(d / "m.nc"), "--no-progress"]) == 0
    return d, df


def test_predict_and_evaluate_read_files_like_fit(int_model, capsys):
    """predict/evaluate use the reader of fit (issue 17 item 3): sniffed separators,
    headerless files, userId/movieId and score aliases, .dat, .gz, Parquet."""
    import gzip
    import io

    d, df = int_model
    pairs = df.iloc[:6]
    variants = {
        "alias.csv": pairs.rename(columns={"user": "userId", "item": "movieId"})[
            ["userId", "movieId"]].to_csv(index=False),
        "headerless.tsv": pairs[["user", "item"]].to_csv(sep="\t", index=False, header=False),
        "pairs.dat": "".join(f"{u}::{i}\n" for u, i in zip(pairs["user"], pairs["item"])),
    }
    for name, text in variants.items():
        (d / name).write_text(text)
    with gzip.open(d / "semi.csv.gz", "wt") as fh:
        fh.write(pairs[["user", "item"]].to_csv(sep=";", index=False))
    pairs[["user", "item"]].to_parquet(d / "pairs.parquet")
    outs = []
    for name in (*variants, "semi.csv.gz", "pairs.parquet"):
        capsys.readouterr()
        assert main(["predict", str(d / "m.nc"), str(d / name)]) == 0, name
        outs.append(pd.read_csv(io.StringIO(capsys.readouterr().out)))
    for out in outs:
        assert out["known_user"].all() and out["known_item"].all()
        np.testing.assert_allclose(out["mean"], outs[0]["mean"])
        assert out["user"].tolist() == pairs["user"].tolist()
    # evaluate: a score alias and a headerless .dat file with ratings
    df.iloc[:30].rename(columns={"rating": "score"}).to_csv(d / "test_score.csv", index=False)
    (d / "test.dat").write_text("".join(f"{u}::{i}::{r:g}\n" for u, i, r in
                                        df.iloc[:30].itertuples(index=False)))
    res = []
    for name in ("test_score.csv", "test.dat"):
        capsys.readouterr()
        assert main(["evaluate", str(d / "m.nc"), str(d / name), "--json", "--no-ranking"]) == 0
        res.append(json.loads(capsys.readouterr().out))
    assert res[0]["rmse"] == pytest.approx(res[1]["rmse"])


def test_empty_and_header_only_pair_files_are_one_line_errors(int_model, capsys, tmp_path):
    d, _ = int_model
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "header.csv").write_text("user,item\n")
    (tmp_path / "norating.csv").write_text("user,item\n1,101\n")
    for args, msg in [(["predict", "empty.csv"], "empty.csv is empty"),
                      (["predict", "header.csv"], "has no data rows"),
                      (["evaluate", "empty.csv"], "empty.csv is empty"),
                      (["evaluate", "norating.csv"], "missing rating column 'rating'")]:
        capsys.readouterr()
        rc = main([args[0], str(d / "m.nc"), str(tmp_path / args[1])])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and msg in err[0], (args, err)


def test_predict_matches_text_ids_by_canonical_integer_text(int_model, capsys, tmp_path):
    """A pairs file with "007" for an integer-id model: that row is unknown, and said so;
    "7" is user 7 (issue 17 item 2)."""
    import io

    d, _ = int_model
    (tmp_path / "p.csv").write_text("user,item\n7,101\n007,101\n")
    assert main(["predict", str(d / "m.nc"), str(tmp_path / "p.csv")]) == 0
    cap = capsys.readouterr()
    # the warning is one line of the CLI's, without Python's source line
    warn = [x for x in cap.err.splitlines() if "warning" in x]
    assert len(warn) == 1 and warn[0].startswith("bayesmf predict: warning: ")
    assert "leading zeros" in warn[0] and "encode(" not in cap.err
    out = pd.read_csv(io.StringIO(cap.out), dtype={"user": str})
    assert out["user"].tolist() == ["7", "007"]
    assert out["known_user"].tolist() == [True, False]
    rc = main(["predict", str(d / "m.nc"), str(tmp_path / "p.csv"), "--strict"])
    err = capsys.readouterr().err
    assert rc == 2 and "unknown user id(s): '007'" in err and "plain integers" in err


def test_fit_and_data_info_duplicates_and_id_type_flags(capsys, tmp_path):
    """--duplicates and --id-type on fit and data info (issue 17 items 2 and 7)."""
    p = tmp_path / "r.csv"
    p.write_text("user,item,rating\n007,1,4\n7,1,2\n7,2,5\n8,2,1\n8,1,3\n")
    assert main(["data", "info", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["users"] == 3  # 007 and 7 differ
    rc = main(["data", "info", str(p), "--id-type", "int"])
    err = capsys.readouterr().err
    assert rc == 2 and "duplicate (user, item) pair(s)" in err and "--duplicates" in err
    assert main(["data", "info", str(p), "--id-type", "int", "--duplicates", "mean",
                 "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["users"], info["ratings"]) == (2, 4)
    assert main(["fit", str(p), "--id-type", "int", "--duplicates", "first", "--rank", "1",
                 "--out", str(tmp_path / "m.nc")]) == 0
    import bayesmf

    post = bayesmf.load(tmp_path / "m.nc").posterior
    assert post.users.ids.tolist() == [7, 8]
    assert main(["fit", str(p), "--id-type", "str", "--duplicates", "last", "--rank", "1",
                 "--out", str(tmp_path / "s.nc")]) == 0
    assert bayesmf.load(tmp_path / "s.nc").posterior.users.ids.tolist() == ["007", "7", "8"]


@pytest.fixture(scope="module")
def high_model(tmp_path_factory):
    """A saved Gaussian posterior whose predictions leave the 1..5 scale (mu + 2)."""
    from _uq_synth import make_posterior
    from bayesmf import io

    post, _ = make_posterior(n_users=12, n_items=40, k=2, draws=30, draw_sd=0.3, seed=2)
    post.draws["mu"] = post.draws["mu"] + 2.0
    d = tmp_path_factory.mktemp("clip")
    io.save(post, d / "high.nc")
    pd.DataFrame({"user": [0, 1, 2, 3], "item": [0, 1, 2, 3]}).to_csv(d / "pairs.csv",
                                                                    index=False)
    return d


def test_predict_cli_clips_by_default_no_clip_gives_raw(high_model, capsys):
    d = high_model
    outs = {}
    for flag in ([], ["--clip"], ["--no-clip"]):
        assert main(["predict", str(d / "high.nc"), str(d / "pairs.csv"),
                     "--out", str(d / "p.csv"), *flag]) == 0
        outs[tuple(flag)] = pd.read_csv(d / "p.csv")
    capsys.readouterr()
    raw, clipped = outs[("--no-clip",)], outs[()]
    assert raw["upper"].max() > 5.0 and raw["mean"].max() > 5.0
    assert clipped["upper"].max() <= 5.0 and clipped["mean"].max() <= 5.0
    np.testing.assert_allclose(clipped["mean"], np.clip(raw["mean"], 1, 5), rtol=1e-5)
    np.testing.assert_allclose(clipped["std"], raw["std"])  # the spread is not clipped
    pd.testing.assert_frame_equal(outs[("--clip",)], clipped)  # --clip: accepted no-op


def test_recommend_cli_quantile_method_and_clipped_mean(high_model, capsys):
    d = high_model
    tabs = {}
    for qm in ("bounded", "exact", "approx"):
        assert main(["recommend", str(d / "high.nc"), "--strategy", "ucb", "--n", "4",
                     "--quantile-method", qm, "--out", str(d / f"r_{qm}.csv")]) == 0
        tabs[qm] = pd.read_csv(d / f"r_{qm}.csv")
    assert main(["recommend", str(d / "high.nc"), "--strategy", "prob", "--threshold", "5",
                 "--n", "4", "--screen-size", "4", "--no-clip",
                 "--out", str(d / "r_raw.csv")]) == 0
    capsys.readouterr()
    assert tabs["bounded"]["item"].tolist() == tabs["exact"]["item"].tolist()
    np.testing.assert_allclose(tabs["bounded"]["score"], tabs["exact"]["score"], rtol=1e-5)
    rec = tabs["bounded"]
    assert list(rec.columns[:5]) == ["user", "item", "rank", "score", "mean"]
    assert rec["score"].max() > 5.0 and rec["mean"].max() <= 5.0  # score is not clipped
    assert pd.read_csv(d / "r_raw.csv")["mean"].max() > 5.0
    assert main(["recommend", str(d / "high.nc"), "--quantile-method", "fast"]) == 2
    assert "--quantile-method" in capsys.readouterr().err


def test_id_type_int_lets_zero_padded_ids_meet_an_integer_model(tmp_path, capsys):
    """Issue 17 item 2: a model fitted on integer ids; a pairs file writes '007'. By
    default '007' is not user 7 (unknown: fallback, known_user False); --id-type int
    parses it as 7."""
    import numpy as np
    import pandas as pd

    from bayesmf.cli import main

    rng = np.random.default_rng(0)
    uu, ii = np.nonzero(rng.random((12, 10)) < 0.6)
    pd.DataFrame({"user": uu, "item": ii, "rating": rng.integers(1, 6, len(uu))}).to_csv(
        tmp_path / "train.csv", index=False)
    model = tmp_path / "m.nc"
    assert main(["fit", str(tmp_path / "train.csv"), "--method", "map", "--rank", "2",
                 "--out", str(model)]) == 0
    (tmp_path / "pairs.csv").write_text("user,item\n007,3\n7,3\n")
    out = tmp_path / "p.csv"
    assert main(["predict", str(model), str(tmp_path / "pairs.csv"), "--out", str(out)]) == 0
    df = pd.read_csv(out, dtype={"user": str})
    assert df["known_user"].tolist() == [False, True]
    assert main(["predict", str(model), str(tmp_path / "pairs.csv"), "--out", str(out),
                 "--id-type", "int"]) == 0
    df = pd.read_csv(out)
    assert df["known_user"].tolist() == [True, True]
    assert df["mean"].iloc[0] == df["mean"].iloc[1]
    assert main(["recommend", str(model), "--users", "007", "--n", "2", "--id-type",
                 "int"]) == 0
    assert "7," in capsys.readouterr().out


def test_option_for_a_model_setting_and_resume_with_other_paths_are_refused(small_csv,
                                                                            tmp_path, capsys):
    """--option rank=5 (a model setting, not a method option) and --resume with another
    --out are one-line refusals (an internal error, and a silent overwrite of the first
    run's model, before)."""
    d = small_csv
    cols = ["--user-col", "uid", "--item-col", "movie", "--rating-col", "stars"]
    rc = main(["fit", str(d / "train.csv"), "--method", "map", "--rank", "2", "--option",
               "rank=5", "--out", str(tmp_path / "o.nc"), *cols])
    err = capsys.readouterr().err
    assert rc == 2 and "use --rank" in err and err.count("\n") == 1, err
    ck = tmp_path / "ck.npz"
    assert main(["fit", str(d / "train.csv"), "--method", "gibbs", "--rank", "2",
                 "--samples", "4", "--warmup", "2", "--checkpoint", str(ck),
                 "--no-progress", "--out", str(tmp_path / "g.nc"), *cols]) == 0
    capsys.readouterr()
    rc = main(["fit", "--resume", str(ck), "--out", str(tmp_path / "other.nc")])
    err = capsys.readouterr().err
    assert rc == 2 and "drop --out" in err and not (tmp_path / "other.nc").exists(), err
    # another sampling setting with --resume was silently dropped: refused
    for extra, flag in ((["--seed", "99"], "--seed"), (["--rank", "4"], "--rank"),
                        (["--samples", "50"], "--samples"),
                        (["--option", "row_parts=2"], "--option")):
        rc = main(["fit", "--resume", str(ck), *extra])
        err = capsys.readouterr().err
        assert rc == 2 and f"drop {flag}" in err and err.count("\n") == 1, (extra, err)
    # output settings apply to the resumed run's model file; the same value is no clash
    assert main(["fit", "--resume", str(ck), "--save-draws", "2", "--rank", "2"]) == 0
    err = capsys.readouterr().err
    assert load(tmp_path / "g.nc").posterior_.n_draws == 2
    # and the override is said (it was silent)
    assert "--save-draws 2 applies to the resumed run's model file (the first run had auto)" \
        in err, err


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it(small_csv, tmp_path,
                                                                      capsys):
    """Only the settings file exists (the run died while compiling): --resume starts the
    run from the first sweep and says so (it was 'no checkpoint to resume from')."""
    d = small_csv
    ck = tmp_path / "ck.npz"
    assert main(["fit", str(d / "train.csv"), "--method", "gibbs", "--rank", "2",
                 "--samples", "4", "--warmup", "2", "--checkpoint", str(ck),
                 "--no-progress", "--out", str(tmp_path / "g.nc"), "--user-col", "uid",
                 "--item-col", "movie", "--rating-col", "stars"]) == 0
    capsys.readouterr()
    ref = load(tmp_path / "g.nc").posterior_.draws["U"]
    for f in tmp_path.iterdir():  # keep the settings file only
        if f.name.startswith("ck.npz") and not f.name.endswith(".cli.json"):
            shutil.rmtree(f) if f.is_dir() else f.unlink()
    (tmp_path / "g.nc").unlink()
    assert main(["fit", "--resume", str(ck)]) == 0
    err = capsys.readouterr().err
    assert "held no completed sweep; started from the first" in err, err
    np.testing.assert_array_equal(load(tmp_path / "g.nc").posterior_.draws["U"], ref)


def test_recommend_users_are_deduplicated_and_unknown_ones_warned(small_csv, tmp_path,
                                                                  capsys):
    d = small_csv
    m = tmp_path / "m.nc"
    assert main(["fit", str(d / "train.csv"), "--method", "map", "--rank", "2", "--out",
                 str(m), "--user-col", "uid", "--item-col", "movie", "--rating-col",
                 "stars"]) == 0
    capsys.readouterr()
    known = str(pd.read_csv(d / "train.csv")["uid"].iloc[0])
    assert main(["recommend", str(m), "--users", f"{known},{known},nobody", "--n", "2"]) == 0
    cap = capsys.readouterr()
    import io

    out = pd.read_csv(io.StringIO(cap.out), dtype={"user": str})
    assert out.groupby("user").size().to_dict() == {known: 2, "nobody": 2}
    assert "1 of the --users id(s) are not in the model (e.g. 'nobody')" in cap.err
