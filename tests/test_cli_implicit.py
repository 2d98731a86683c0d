"""The implicit-feedback CLI: fit --feedback implicit on an event log, predict writes the
ranking score, recommend excludes the training interactions (--users @FILE, --all-users),
evaluate ranks held-out interactions; bad input is one line, exit 2."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bayesmf.cli import main


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    """An event log (repeated rows = repeated plays) with a planted rank-2 taste."""
    rng = np.random.default_rng(0)
    n_u, n_i = 40, 25
    U, V = rng.normal(size=(n_u, 2)), rng.normal(size=(n_i, 2))
    p = 1 / (1 + np.exp(-(2 * U @ V.T - 1.5)))
    uu, ii = np.nonzero(rng.random((n_u, n_i)) < p)
    reps = rng.integers(1, 4, len(uu))
    df = pd.DataFrame({"user": np.repeat([f"u{u}" for u in uu], reps),
                       "item": np.repeat(ii + 100, reps)})
    d = tmp_path_factory.mktemp("cli_implicit")
    test_rows = rng.choice(len(uu), 30, replace=False)
    test = pd.DataFrame({"user": [f"u{uu[j]}" for j in test_rows], "item": ii[test_rows] + 100})
    keep = ~pd.MultiIndex.from_frame(df).isin(pd.MultiIndex.from_frame(test))
    df[keep].sample(frac=1, random_state=0).to_csv(d / "events.csv", index=False)
    test.to_csv(d / "test.csv", index=False)
    return d


def test_fit_recommend_predict_evaluate(events, capsys):
    d = events
    assert main(["fit", str(d / "events.csv"), "--feedback", "implicit", "--rank", "3",
                 "--samples", "30", "--warmup", "30", "--confidence", "log:4",
                 "--out", str(d / "m.nc"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "fitted gibbs rank 3" in out and "interactions" in out
    ev = pd.read_csv(d / "events.csv")
    seen = set(zip(ev["user"], ev["item"]))
    (d / "ids.txt").write_text("u0\n\nu1\n")
    assert main(["recommend", str(d / "m.nc"), "--users", f"@{d / 'ids.txt'}", "--n", "5",
                 "--out", str(d / "r.csv")]) == 0
    rec = pd.read_csv(d / "r.csv")
    assert set(rec["user"]) == {"u0", "u1"} and len(rec) == 10
    assert not any((u, i) in seen for u, i in zip(rec["user"], rec["item"]))
    np.testing.assert_allclose(rec["mean"], rec["score"], rtol=1e-5)
    assert main(["recommend", str(d / "m.nc"), "--all-users", "--n", "2",
                 "--out", str(d / "all.csv")]) == 0
    assert pd.read_csv(d / "all.csv")["user"].nunique() == ev["user"].nunique()
    # predict: 'mean' is the score the default strategy ranks by (no clipping to [0, 1])
    pairs = rec[["user", "item"]]
    pairs.to_csv(d / "pairs.csv", index=False)
    assert main(["predict", str(d / "m.nc"), str(d / "pairs.csv"),
                 "--out", str(d / "p.csv")]) == 0
    np.testing.assert_allclose(pd.read_csv(d / "p.csv")["mean"], rec["score"], rtol=1e-4,
                               atol=1e-6)
    capsys.readouterr()
    assert main(["evaluate", str(d / "m.nc"), str(d / "test.csv"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["rating_metrics"].startswith("skipped")
    assert res["ranking"]["relevant_pairs"] == 30
    assert 0 < res["ranking"]["hit_rate@10"] <= 1


def test_confidence_auto_fits_the_carve_winner_and_keeps_the_search(events, capsys,
                                                                   tmp_path):
    """--confidence auto: the slope is chosen on a carve of TRAIN (bayesmf.selection), the
    model is fitted with it, and the search is stored with the model."""
    from bayesmf import load

    assert main(["fit", str(events / "events.csv"), "--feedback", "implicit", "--rank", "2",
                 "--samples", "10", "--warmup", "10", "--confidence", "auto",
                 "--out", str(tmp_path / "m.nc"), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "--confidence auto: log:0.5 " in err and "ndcg@20" in err
    assert err.count("--confidence auto: log:8 ndcg@20") == 1   # per-candidate progress
    post = load(tmp_path / "m.nc").posterior
    rec = post.attrs["confidence_selection"]
    scores = {c["confidence"]: c["ndcg@20"] for c in rec["candidates"]}
    assert list(scores) == ["log:0.5", "log:1", "log:2", "log:4", "log:8"]
    assert rec["chosen"] == max(scores, key=scores.get)
    assert f"fitting {rec['chosen']}" in err
    assert f"log:{post.likelihood.alpha:g}" == rec["chosen"]


def test_map_implicit_and_rating_dataset(events, capsys, tmp_path):
    assert main(["fit", str(events / "events.csv"), "--feedback", "implicit", "--method",
                 "map", "--rank", "2", "--out", str(tmp_path / "m.nc")]) == 0
    assert "fitted map rank 2" in capsys.readouterr().out


@pytest.mark.parametrize("args, msg", [
    (["--confidence", "log:1"], "--confidence applies to --feedback implicit"),
    (["--positive-threshold", "4"], "--positive-threshold applies to --feedback implicit"),
    (["--feedback", "implicit", "--confidence", "cubic:1"], "KIND linear or log"),
    (["--feedback", "implicit", "--confidence", "log:-1"], "ALPHA must be >= 0"),
    (["--feedback", "implicit", "--duplicates", "mean"], "repeated (user, item) rows"),
    (["--feedback", "implicit", "--likelihood", "gaussian", "--confidence", "log:1"],
     "does not apply to --likelihood gaussian"),
    (["--negatives", "uniform:4"], "--negatives applies to --feedback implicit"),
    (["--feedback", "implicit", "--method", "map", "--confidence", "auto"],
     "--confidence auto compares Gibbs fits"),
    (["--feedback", "implicit", "--likelihood", "bernoulli-logit"],
     "add --negatives RULE"),
    (["--feedback", "implicit", "--recalibrate", "beta"], "add --feedback implicit "
     "--likelihood bernoulli-logit --negatives RULE"),
    (["--feedback", "implicit", "--likelihood", "bernoulli-logit", "--negatives",
      "sideways:4"], "negative"),
    (["--feedback", "implicit", "--likelihood", "bernoulli-probit", "--negatives",
      "uniform:2", "--recalibrate", "platt"], "--recalibrate maps the logit"),
    (["--feedback", "implicit", "--likelihood", "bernoulli-logit", "--method", "map",
      "--rank", "4", "--negatives", "uniform:2@sweep"], "need method='gibbs'"),
    # a likelihood of the listed values only would never see a pair without interaction
    (["--feedback", "implicit", "--likelihood", "gaussian", "--method", "map", "--rank", "2"],
     "likelihood 'gaussian' fitted to an Interactions would model the listed values"),
    (["--feedback", "implicit", "--likelihood", "ordinal", "--method", "map", "--rank", "2"],
     "use likelihood='implicit'"),
])
def test_bad_implicit_fits_are_one_line_errors(events, capsys, tmp_path, args, msg):
    code = main(["fit", str(events / "events.csv"), "--out", str(tmp_path / "m.nc"), *args])
    err = capsys.readouterr().err
    assert code == 2 and msg in err and err.count("\n") == 1


@pytest.mark.parametrize("args, msg", [
    (["--feedback", "implicit", "--likelihood", "bernoulli-logit"], "add --negatives RULE"),
    (["--feedback", "implicit", "--recalibrate", "beta"], "--negatives RULE"),
    (["--feedback", "implicit", "--likelihood", "bernoulli-probit", "--negatives",
      "uniform:2", "--recalibrate", "platt"], "--recalibrate maps the logit"),
    # a carve fraction without the recalibration it sets was silently ignored
    (["--feedback", "implicit", "--likelihood", "bernoulli-logit", "--negatives",
      "uniform:2", "--recalibrate-fraction", "0.3"], "applies with --recalibrate"),
])
def test_flag_combinations_are_checked_before_reading_the_data(capsys, tmp_path, args, msg):
    """A wrong --negatives / --recalibrate combination is refused without reading TRAIN
    (here a file that does not exist: its error would be a different one)."""
    code = main(["fit", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "m.nc"),
                 *args])
    err = capsys.readouterr().err
    assert code == 2 and msg in err and "missing.csv" not in err


def test_negative_counts_are_refused(capsys, tmp_path):
    (tmp_path / "e.csv").write_text("user,item,count\na,x,2\nb,x,-1\n")
    code = main(["fit", str(tmp_path / "e.csv"), "--feedback", "implicit",
                 "--out", str(tmp_path / "m.nc")])
    err = capsys.readouterr().err
    assert code == 2 and "count" in err and err.count("\n") == 1


def test_a_text_count_is_named_in_the_error(capsys, tmp_path):
    (tmp_path / "e.csv").write_text("user,item,count\n1,a,3\n1,b,lots\n2,a,1\n")
    code = main(["fit", str(tmp_path / "e.csv"), "--feedback", "implicit", "--method", "map",
                 "--rank", "1", "--out", str(tmp_path / "m.nc")])
    err = capsys.readouterr().err
    assert code == 2 and "'lots' in data row 2" in err and err.count("\n") == 1, err


def test_sampled_negatives_and_recalibrated_relevance(events, capsys):
    """--negatives fits a Bernoulli-logit model to the event log; --recalibrate keeps a
    map of P(relevant) in the model file, and predict / recommend --strategy prob use it
    (prob ranks by P(y = 1), the likelihood's relevance threshold)."""
    from bayesmf import load

    d = events
    assert main(["fit", str(d / "events.csv"), "--feedback", "implicit", "--likelihood",
                 "bernoulli-logit", "--negatives", "uniform:2", "--recalibrate", "platt",
                 "--method", "gibbs", "--rank", "2", "--samples", "20", "--warmup", "20",
                 "--out", str(d / "b.nc"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "recalibrated P(relevant): platt map" in out
    model = load(d / "b.nc")
    post = model.posterior
    assert post.likelihood.recalibration[0] == "platt"
    assert post.attrs["negatives"]["rule"] == "uniform:2"
    assert post.attrs["recalibration"]["info"]["negatives"] == "uniform:2"
    assert main(["recommend", str(d / "b.nc"), "--users", "u0,u1", "--n", "4", "--strategy",
                 "prob", "--out", str(d / "rb.csv")]) == 0
    rec = pd.read_csv(d / "rb.csv")
    assert len(rec) == 8 and rec["score"].between(0, 1).all() and rec["score"].max() > 0.05
    np.testing.assert_allclose(rec["score"], rec["mean"], rtol=1e-5)
    rec[["user", "item"]].to_csv(d / "pb.csv", index=False)
    assert main(["predict", str(d / "b.nc"), str(d / "pb.csv"), "--out",
                 str(d / "qb.csv")]) == 0
    pred = pd.read_csv(d / "qb.csv")["mean"].to_numpy()
    raw = post.with_likelihood("bernoulli-logit")
    from bayesmf.evaluate import Recalibration

    m = Recalibration.from_dict(post.attrs["recalibration"])
    np.testing.assert_allclose(pred, m.predict(raw, rec[["user", "item"]]), rtol=1e-5,
                               atol=1e-6)


def test_bernoulli_probit_with_sampled_negatives(events, capsys):
    """``--likelihood bernoulli-probit --negatives uniform:2`` fits the Albert-Chib model
    to the event log: predict writes P(y = 1) = E_s[Phi(eta_s)] (the Python posterior's
    predictive mean), recommend excludes the training pairs and evaluate ranks the
    held-out interactions."""
    from bayesmf import load

    d = events
    assert main(["fit", str(d / "events.csv"), "--feedback", "implicit", "--likelihood",
                 "bernoulli-probit", "--negatives", "uniform:2", "--rank", "2",
                 "--samples", "20", "--warmup", "20", "--out", str(d / "pr.nc"),
                 "--no-progress"]) == 0
    capsys.readouterr()
    post = load(d / "pr.nc").posterior
    assert post.likelihood.name == "bernoulli-probit" and post.method == "gibbs"
    assert post.attrs["negatives"]["rule"] == "uniform:2"
    assert main(["recommend", str(d / "pr.nc"), "--users", "u0,u3", "--n", "3",
                 "--out", str(d / "rp.csv")]) == 0
    rec = pd.read_csv(d / "rp.csv")
    ev = pd.read_csv(d / "events.csv")
    seen = set(zip(ev["user"], ev["item"]))
    assert len(rec) == 6 and not any((u, i) in seen for u, i in zip(rec["user"], rec["item"]))
    rec[["user", "item"]].to_csv(d / "pp.csv", index=False)
    assert main(["predict", str(d / "pr.nc"), str(d / "pp.csv"), "--out",
                 str(d / "qp.csv")]) == 0
    pred = pd.read_csv(d / "qp.csv")["mean"].to_numpy()
    from scipy.stats import norm

    u = post.users.encode(rec["user"])
    i = post.items.encode(rec["item"])
    m, _ = post.pair_moments(u, i)
    np.testing.assert_allclose(pred, norm.cdf(m).mean(0), rtol=1e-4, atol=1e-6)
    capsys.readouterr()
    assert main(["evaluate", str(d / "pr.nc"), str(d / "test.csv"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)  # the held-out interactions, all relevant
    assert res["rating_metrics"].startswith("skipped")
    assert res["ranking"]["relevant_pairs"] == 30 and 0 < res["ranking"]["hit_rate@10"] <= 1


@pytest.mark.parametrize("args", [
    ["--likelihood", "ordinal"],
    ["--feedback", "implicit", "--likelihood", "bernoulli-logit", "--negatives", "uniform:2"],
    ["--feedback", "implicit"],
])
def test_propagation_refuses_non_gaussian_likelihoods(events, capsys, tmp_path, args):
    """``--method propagation`` (block-wise posterior propagation) has the Gaussian
    likelihood only: ordinal stars, Bernoulli and the implicit model are one-line
    errors that name the method to use instead."""
    if args[1] == "ordinal":
        (tmp_path / "stars.csv").write_text(
            "user,item,rating\n" + "".join(f"u{u},i{i},{1 + (u * i) % 5}\n"
                                           for u in range(12) for i in range(9)))
        src = tmp_path / "stars.csv"
    else:
        src = events / "events.csv"
    code = main(["fit", str(src), "--method", "propagation", "--rank", "2", *args,
                 "--out", str(tmp_path / "m.nc"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Gaussian likelihood only" in err and "method='gibbs'" in err
    assert err.count("\n") == 1


def test_sharded_implicit_fit_on_two_cpu_devices(events):
    """``--option chain_method=sharded`` on the default implicit model: the CLI (a fresh
    process without XLA_FLAGS) starts JAX with one CPU device per core and the chain of
    the full-matrix likelihood runs over 2 of them; the model then recommends as usual."""
    import io
    import os
    import subprocess
    import sys

    from bayesmf import load

    if (os.cpu_count() or 1) < 2:
        pytest.skip("one CPU: a single device, nothing to shard over")
    d = events
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, "-m", "bayesmf.cli"]
    proc = subprocess.run(cmd + ["fit", str(d / "events.csv"), "--feedback", "implicit",
                                 "--rank", "3", "--samples", "5", "--warmup", "3",
                                 "--option", "chain_method=sharded", "--option",
                                 "shard_devices=2", "--out", str(d / "sh.nc"),
                                 "--no-progress"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    post = load(d / "sh.nc").posterior_
    assert post.attrs["chain_method_used"] == "sharded" and post.attrs["devices"] == 2
    assert post.spec.likelihood.name == "implicit"
    proc = subprocess.run(cmd + ["recommend", str(d / "sh.nc"), "--users", "u0", "--n", "3"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(pd.read_csv(io.StringIO(proc.stdout))) == 3
