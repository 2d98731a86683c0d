"""The CLI contract, end to end in subprocesses (a later process loads the model file)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from bayesmf.cli import main


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
    np.testing.assert_allclose(api["mean"].to_numpy(), pred["mean"].to_numpy(), rtol=1e-6)
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


@pytest.mark.parametrize("likelihood", ["bernoulli-logit", "ordinal"])
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
