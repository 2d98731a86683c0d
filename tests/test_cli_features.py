"""Side information on the command line: ``fit --user-features/--item-features`` (the Macau
prior) and cold start in ``predict`` / ``recommend`` (issue 15).

Planted data: item factors are set by the item's genre, user factors by the user's group,
so a cold-start item (all its ratings held out) and a cold-start user (likewise) are
predictable from their features alone. One Gibbs fit per module (in-process, so the
compiled sweep is reused); the CLI's answers are checked against the Python API
(``Posterior.with_features``) and against the population fallback."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesmf.cli import main as _cli_main
from bayesmf.estimator import load
from bayesmf.recommend import recommend

N, M, K = 80, 60, 2
COLD_ITEMS = list(range(100 + M - 6, 100 + M))  # item ids 154..159
COLD_USER = f"u{N - 1}"
GIBBS = ["--method", "gibbs", "--rank", str(K), "--warmup", "60", "--samples", "60",
         "--seed", "1", "--no-progress"]


def main(args):
    return _cli_main([str(x) for x in args])


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli_features")
    rng = np.random.default_rng(0)
    genres = np.array(["Action", "Comedy", "Drama"])
    g = rng.integers(0, 3, M)
    G = np.array([[1.5, 0.0], [-1.5, 0.5], [0.0, -1.5]])
    V = G[g] + 0.2 * rng.normal(size=(M, K))
    grp = rng.integers(0, 2, N)
    U = np.array([[1.0, 0.5], [-1.0, -0.5]])[grp] + 0.2 * rng.normal(size=(N, K))
    uu, ii = np.nonzero(rng.random((N, M)) < 0.4)
    r = 3 + np.sum(U[uu] * V[ii], 1) + 0.3 * rng.normal(size=len(uu))
    uid = np.array([f"u{u}" for u in range(N)])
    users, items = uid[uu], 100 + ii
    test = np.isin(items, COLD_ITEMS) | (users == COLD_USER)
    pd.DataFrame({"user": users[~test], "item": items[~test], "rating": r[~test]}).to_csv(
        d / "train.csv", index=False)
    cold = pd.DataFrame({"user": users[test], "item": items[test], "rating": r[test]})
    cold.to_csv(d / "cold.csv", index=False)
    # features: a user file with the alias 'userId', an item file with 'movieId' and a
    # multi-valued genre column ('Action|Drama' on some Action films)
    uf = pd.DataFrame({"userId": uid, "group": np.where(grp == 1, "x", "y"),
                       "age": rng.normal(30, 10, N).round(1)})
    uf.to_csv(d / "users.csv", index=False)
    itf = pd.DataFrame({"movieId": 100 + np.arange(M),
                        "genres": [genres[j] + ("|Drama" if j == 0 and q % 2 else "")
                                   for q, j in enumerate(g)]})
    itf.to_csv(d / "items.csv", index=False)
    itf.to_parquet(d / "items.parquet", index=False)
    assert main(["fit", d / "train.csv", *GIBBS, "--user-features", d / "users.csv",
                 "--item-features", d / "items.csv", "--out", d / "m.nc"]) == 0
    return dict(d=d, cold=cold, uf=uf, itf=itf)


def _predict(d, pairs, *flags, out="pred.csv"):
    pairs.to_csv(d / "pairs.csv", index=False)
    assert main(["predict", d / "m.nc", d / "pairs.csv", "--out", d / out, *flags]) == 0
    return pd.read_csv(d / out)


def _rmse(p, y):
    return float(np.sqrt(np.mean((np.asarray(p) - np.asarray(y)) ** 2)))


# ----------------------------------------------------------------------------- predict
def test_predict_cold_item_matches_api_and_beats_fallback(data):
    d, cold = data["d"], data["cold"]
    ci = cold[cold["item"].isin(COLD_ITEMS) & (cold["user"] != COLD_USER)]
    pairs = ci[["user", "item"]].reset_index(drop=True)
    pairs.loc[len(pairs)] = ["u0", 999]  # an item in neither the model nor the file
    fall = _predict(d, pairs, out="fallback.csv")
    feat = _predict(d, pairs, "--item-features", d / "items.csv")
    assert list(fall.columns) == ["user", "item", "mean", "std", "lower", "upper",
                                  "known_user", "known_item"]
    assert list(feat.columns) == list(fall.columns) + ["cold_user", "cold_item"]
    c = feat.iloc[:-1]
    # a cold-start item has its own row (not the fallback): known_item True, cold_item True
    assert c["known_item"].all() and c["cold_item"].all() and not c["cold_user"].any()
    assert not fall["known_item"].iloc[:-1].any()
    # the same numbers as the Python API (6 significant digits in the file)
    post = load(d / "m.nc").posterior.with_features(
        item_features=data["itf"].rename(columns={"movieId": "item"}))
    api = post.predict(ci["user"].to_numpy(), ci["item"].to_numpy())
    np.testing.assert_allclose(c["mean"], api.mean, rtol=1e-5)
    np.testing.assert_allclose(c["std"], api.std, rtol=1e-5)
    # features predict the held-out ratings of cold items far better than the fallback
    r_feat, r_fall = _rmse(c["mean"], ci["rating"]), _rmse(fall["mean"].iloc[:-1],
                                                             ci["rating"])
    assert r_feat < 0.7 * r_fall, (r_feat, r_fall)
    # and are narrower: the features pin the item's factors down
    assert np.median(c["std"]) < np.median(fall["std"].iloc[:-1])
    # an id in neither stays on the population fallback, unchanged by the features
    last = feat.iloc[-1]
    assert not last["known_item"] and not last["cold_item"]
    assert last["mean"] == pytest.approx(fall["mean"].iloc[-1], rel=1e-6)
    assert last["std"] == pytest.approx(fall["std"].iloc[-1], rel=1e-6)


def test_predict_parquet_features_and_known_ids_unchanged(data):
    d = data["d"]
    pairs = pd.DataFrame({"user": ["u0", "u1", "u2", "u3"], "item": [100, 101, 155, 157]})
    a = _predict(d, pairs, "--item-features", d / "items.csv", out="a.csv")
    b = _predict(d, pairs, "--item-features", d / "items.parquet", out="b.csv")
    pd.testing.assert_frame_equal(a, b)
    plain = _predict(d, pairs, out="plain.csv")
    # fitted items keep their predictions; only the cold ones change
    np.testing.assert_array_equal(a["mean"].iloc[:2], plain["mean"].iloc[:2])
    assert a["cold_item"].tolist() == [False, False, True, True]
    assert not np.allclose(a["mean"].iloc[2:], plain["mean"].iloc[2:])


def test_predict_cold_user_and_item_together(data):
    d, cold = data["d"], data["cold"]
    cu = cold[cold["user"] == COLD_USER]
    both = _predict(d, cu[["user", "item"]], "--user-features", d / "users.csv",
                    "--item-features", d / "items.csv")
    assert both["cold_user"].all() and both["known_user"].all()
    assert (both["cold_item"] == cu["item"].isin(COLD_ITEMS).to_numpy()).all()
    fall = _predict(d, cu[["user", "item"]], out="fallback.csv")
    assert _rmse(both["mean"], cu["rating"]) < _rmse(fall["mean"], cu["rating"])


# ----------------------------------------------------------------------------- recommend
def test_recommend_cold_user(data, capsys):
    d = data["d"]
    capsys.readouterr()
    assert main(["recommend", d / "m.nc", "--users", f"{COLD_USER},u0", "--n", "5",
                 "--user-features", d / "users.csv", "--item-features", d / "items.csv",
                 "--out", d / "recs.csv"]) == 0
    recs = pd.read_csv(d / "recs.csv")
    assert list(recs.columns[-3:]) == ["known_user", "cold_user", "cold_item"]
    mine = recs[recs["user"] == COLD_USER]
    assert len(mine) == 5 and mine["known_user"].all() and mine["cold_user"].all()
    assert not recs.loc[recs["user"] == "u0", "cold_user"].any()
    # the lists of the Python API on the same cold-start posterior
    post = load(d / "m.nc").posterior
    post = post.with_features(user_features=data["uf"].rename(columns={"userId": "user"}))
    post = post.with_features(item_features=data["itf"].rename(columns={"movieId": "item"}))
    api = recommend(post, [COLD_USER], n=5)
    assert mine["item"].tolist() == api["item"].tolist()
    np.testing.assert_allclose(mine["score"], api["score"], rtol=1e-5)
    assert (mine["cold_item"] == mine["item"].isin(COLD_ITEMS)).all()
    # without the features the cold user is unknown: the population list, known_user False
    assert main(["recommend", d / "m.nc", "--users", COLD_USER, "--n", "5",
                 "--out", d / "recs0.csv"]) == 0
    pop = pd.read_csv(d / "recs0.csv")
    assert not pop["known_user"].any()
    assert "cold_user" not in pop.columns
    assert not np.allclose(pop["score"], mine["score"])


def test_recommend_cold_items_are_candidates(data):
    d = data["d"]
    assert main(["recommend", d / "m.nc", "--users", "u0", "--n", str(M),
                 "--include-seen", "--item-features", d / "items.csv",
                 "--out", d / "all.csv"]) == 0
    recs = pd.read_csv(d / "all.csv")
    assert set(COLD_ITEMS) <= set(recs["item"])
    assert recs["cold_item"].sum() == len(COLD_ITEMS)


# ----------------------------------------------------------------------------- errors
def _err(capsys, *args):
    capsys.readouterr()
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1, err
    return err


def test_features_need_a_feature_method(data, capsys):
    d = data["d"]
    err = _err(capsys, "fit", d / "train.csv", "--method", "pymc-advi", "--item-features",
               d / "items.csv", "--out", d / "x.nc")
    assert "--item-features" in err and "--method gibbs, map, svi or nuts" in err
    assert "pymc-advi" in err
    err = _err(capsys, "fit", d / "train.csv", "--method", "pymc-advi", "--implicit-terms",
               "user", "--out", d / "x.nc")
    assert "--implicit-terms" in err and "needs --method gibbs" in err
    assert not (d / "x.nc").exists()
    # the default method (map) takes them: the MAP Macau prior
    assert main(["fit", str(d / "train.csv"), "--user-features", str(d / "users.csv"),
                 "--out", str(d / "x.nc")]) == 0
    capsys.readouterr()
    assert (d / "x.nc").exists()


def test_fit_feature_file_errors(data, capsys):
    d, itf = data["d"], data["itf"]
    itf.iloc[:-1].to_csv(d / "short.csv", index=False)  # drops item 159 (cold: fine)
    itf.iloc[1:].to_csv(d / "missing.csv", index=False)  # drops item 100 (in TRAIN)
    err = _err(capsys, "fit", d / "train.csv", *GIBBS, "--item-features",
               d / "missing.csv", "--out", d / "x.nc")
    assert "--item-features" in err and "1 of 54 item id(s) of TRAIN have no row" in err
    assert "100" in err
    itf.assign(title=[f"Film {j}" for j in range(M)]).to_csv(d / "titled.csv", index=False)
    err = _err(capsys, "fit", d / "train.csv", *GIBBS, "--item-features",
               d / "titled.csv", "--out", d / "x.nc")
    assert "'title'" in err and "every row" in err
    itf.rename(columns={"movieId": "film"}).to_csv(d / "noid.csv", index=False)
    err = _err(capsys, "fit", d / "train.csv", *GIBBS, "--item-features", d / "noid.csv",
               "--out", d / "x.nc")
    assert "no item id column" in err
    itf.to_csv(d / "headerless.csv", index=False, header=False)
    pd.DataFrame({"movieId": [100, 101], "year": [1990, 2000]}).to_csv(
        d / "nums.csv", index=False, header=False)
    err = _err(capsys, "fit", d / "train.csv", *GIBBS, "--item-features", d / "nums.csv",
               "--out", d / "x.nc")
    assert "header" in err
    err = _err(capsys, "fit", d / "train.csv", *GIBBS, "--item-features",
               d / "nope.csv", "--out", d / "x.nc")
    assert "--item-features" in err and "no such file" in err
    err = _err(capsys, "fit", d / "train.csv", *GIBBS, "--item-features", d / "items.csv",
               "--out", d / "items.csv")
    assert "input file" in err


def test_predict_feature_errors(data, capsys):
    d = data["d"]
    pd.DataFrame({"user": ["u0"], "item": [155]}).to_csv(d / "one.csv", index=False)
    # a model without features on that side
    assert main(["fit", d / "train.csv", "--method", "map", "--rank", "1", "--max-iter",
                 "5", "--out", d / "map.nc"]) == 0
    err = _err(capsys, "predict", d / "map.nc", d / "one.csv", "--item-features",
               d / "items.csv")
    assert "fitted without item features" in err and "--method gibbs" in err
    # a features file without the model's feature columns
    pd.DataFrame({"item": [155], "year": [1999]}).to_csv(d / "wrong.csv", index=False)
    err = _err(capsys, "predict", d / "m.nc", d / "one.csv", "--item-features",
               d / "wrong.csv")
    assert "--item-features" in err and "genres" in err
    # a missing value in a feature column
    pd.DataFrame({"item": [155, 156], "genres": ["Drama", ""]}).to_csv(d / "na.csv",
                                                                     index=False)
    err = _err(capsys, "predict", d / "m.nc", d / "one.csv", "--item-features", d / "na.csv")
    assert "missing" in err and "genres" in err
    err = _err(capsys, "recommend", d / "m.nc", "--users", "u0", "--user-features",
               d / "nope.csv")
    assert "--user-features" in err and "no such file" in err


def test_feature_ids_follow_the_ratings_rule(data, capsys):
    """'0155' is not the integer item 155 (the canonical-text rule of --id-type auto, as
    for the ratings): it would be a new text id, which an integer vocabulary refuses."""
    d = data["d"]
    pd.DataFrame({"user": ["u0"], "item": [155]}).to_csv(d / "one.csv", index=False)
    (d / "padded.csv").write_text("item,genres\n0155,Drama\n")
    capsys.readouterr()
    rc = main(["predict", str(d / "m.nc"), str(d / "one.csv"), "--item-features",
               str(d / "padded.csv")])
    lines = capsys.readouterr().err.strip().splitlines()
    # the unknown-id warning, then the error: one line each
    assert rc == 2 and len(lines) == 2 and "warning" in lines[0], lines
    err = lines[1]
    assert "--item-features" in err and "'0155'" in err
    (d / "plain.csv").write_text("item,genres\n155,Drama\n")
    p = _predict(d, pd.DataFrame({"user": ["u0"], "item": [155]}), "--item-features",
                 d / "plain.csv", out="p.csv")
    assert p["cold_item"].all() and p["known_item"].all()
