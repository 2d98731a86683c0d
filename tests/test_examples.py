"""The example scripts run end to end with tiny arguments (as subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
ML100K = ROOT.parent / "shared" / "data" / "ml-100k"
TINY = ["--max-users", "25", "--rank", "2"]


def run(script, *args, stdin=None, check=True, timeout=300):
    env = dict(os.environ, MPLBACKEND="Agg", JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *map(str, args)],
                          input=stdin, capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} failed ({proc.returncode}):\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    d = tmp_path_factory.mktemp("examples")
    model, metrics = d / "model.nc", d / "metrics.json"
    proc = run("fit_evaluate_movielens.py", *TINY, "--save", model, "--json", metrics)
    return model, metrics, proc.stdout


def test_fit_evaluate_prints_and_saves(fitted):
    model, metrics, out = fitted
    assert "ml-latest-small" in out and "rmse" in out and "ndcg@10" in out
    m = json.loads(metrics.read_text())
    assert m["method"] == "map" and m["n_test"] > 0
    assert 0.3 < m["rmse"] < 3.0 and np.isfinite(m["nlpd"])
    assert set(m["coverage"]) == {"0.5", "0.8", "0.9", "0.95"}
    assert model.stat().st_size > 0


def test_serve_from_args_with_titles(fitted):
    model = fitted[0]
    out = run("serve_recommendations.py", model, "--users", "1", "424242", "--n", "3").stdout
    blocks = out.strip().split("user ")[1:]
    assert len(blocks) == 2
    assert blocks[0].startswith("1 -- top 3 by mean")
    assert "(1995)" in out or "(19" in out  # MovieLens titles carry the year
    assert "new user: population fallback" in blocks[1]
    assert len([ln for ln in blocks[0].splitlines() if ln.strip()[:2].rstrip(".").isdigit()]) == 3


def test_serve_from_stdin_json(fitted):
    model = fitted[0]
    out = run("serve_recommendations.py", model, "--format", "json", "--strategy", "upper",
              stdin="1 2\nnot-an-id\n1 x\n2\nquit\n1\n", check=False)
    assert out.returncode == 1  # the bad requests are reported, the others answered
    assert "integers" in out.stderr and "N must be an integer, got 'x'" in out.stderr
    lines = [json.loads(x) for x in out.stdout.splitlines()]
    assert [x["user"] for x in lines] == [1, 2]  # stops at "quit"
    assert len(lines[0]["items"]) == 2 and lines[0]["items"][0]["rank"] == 1
    scores = [it["score"] for it in lines[1]["items"]]
    assert scores == sorted(scores, reverse=True)


def test_serve_rejects_broken_model(tmp_path):
    bad = tmp_path / "bad.nc"
    bad.write_bytes(b"not a model")
    out = run("serve_recommendations.py", bad, "--users", "1", check=False)
    assert out.returncode == 2 and "corrupted or truncated" in out.stderr


def test_fold_in_new_user(fitted):
    model = fitted[0]
    out = run("fold_in_new_user.py", model, "--rate", "toy story (1995)=5", "--rate",
              "260=4.5", "--rate", "296=1", "--n", "4").stdout
    assert "Toy Story (1995)" in out and "Star Wars: Episode IV" in out
    assert "before (population fallback" in out and "after fold-in" in out
    after = out.split("after fold-in, by predicted mean:")[1].split("\n\n")[0]
    assert "Toy Story (1995)" not in after  # rated items are not recommended again
    assert len([ln for ln in after.splitlines() if ln.strip()]) == 4


def _example_module(name):
    sys.path.insert(0, str(EXAMPLES))
    try:
        import importlib

        return importlib.import_module(name)
    finally:
        sys.path.remove(str(EXAMPLES))


def test_fold_in_title_resolution():
    fi = _example_module("fold_in_new_user")
    ml = fi.load(None, None)
    items = ml.ratings.items.ids
    assert fi.resolve_item("260", items, ml) == 260
    assert fi.resolve_item("toy story (1995)", items, ml) == 1  # exact title wins
    assert fi.resolve_item("Shawshank", items, ml) == 318  # unique substring
    with pytest.raises(SystemExit, match="matches .* movies"):
        fi.resolve_item("Star Wars", items, ml)
    with pytest.raises(SystemExit, match="no movie"):
        fi.resolve_item("no such film title", items, ml)


@pytest.mark.data
def test_loader_reads_shared_ml100k():
    if not ML100K.exists():
        pytest.skip("../shared/data/ml-100k is not available")
    common = _example_module("_common")
    guess_variant, load, small_subset = common.guess_variant, common.load, common.small_subset
    assert guess_variant(str(ML100K)) == "100k"
    ml = load(str(ML100K), None)
    assert ml.ratings.nnz == 100_000 and ml.ratings.n_users == 943
    sub = small_subset(ml.ratings, 30)
    assert sub.n_users <= 30 and sub.nnz > 100


@pytest.mark.slow
@pytest.mark.data
def test_fit_evaluate_on_shared_ml100k(tmp_path):
    if not ML100K.exists():
        pytest.skip("../shared/data/ml-100k is not available")
    out = run("fit_evaluate_movielens.py", "--data", ML100K, *TINY, "--json",
              tmp_path / "m.json").stdout
    assert "ml-100k" in out
    assert json.loads((tmp_path / "m.json").read_text())["rmse"] < 3


@pytest.mark.slow
def test_fit_evaluate_gibbs(tmp_path):
    out = run("fit_evaluate_movielens.py", *TINY, "--method", "gibbs", "--samples", "30",
              "--warmup", "10", "--chains", "2", "--no-ranking", "--json",
              tmp_path / "m.json").stdout
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["method"] == "gibbs" and m["n_samples"] == 60
    assert "parameter + noise" in out and "ranking" not in m
