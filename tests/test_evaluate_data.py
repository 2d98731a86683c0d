"""Real data (ML-100K u1 fold): evaluate + recommend end to end on a quick MAP fit."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
pytestmark = [pytest.mark.data, pytest.mark.slow]  # JAX compile of the MAP fit


@pytest.fixture(scope="module")
def fitted():
    if not (DATA / "ml-100k" / "u1.base").exists():
        pytest.skip("shared/data/ml-100k not available")
    from bayesmf.data.ratings import Ratings
    from bayesmf.infer.map import fit_map
    from bayesmf.model.spec import ModelSpec

    cols = ["user", "item", "rating", "timestamp"]
    tr = pd.read_csv(DATA / "ml-100k" / "u1.base", sep="\t", names=cols)
    te = pd.read_csv(DATA / "ml-100k" / "u1.test", sep="\t", names=cols)
    train = Ratings.from_dataframe(tr)
    keep = te["user"].isin(train.users.ids) & te["item"].isin(train.items.ids)
    test = Ratings.from_dataframe(te[keep], user_vocab=train.users, item_vocab=train.items)
    post = fit_map(train, ModelSpec(rank=5, reg_factors=5.0, reg_bias=5.0), seed=0,
                   solver="als", max_iter=15)
    return post, train, test


def test_evaluate_map_on_ml100k(fitted):
    from bayesmf.evaluate import evaluate

    post, train, test = fitted
    res = evaluate(post, test, k=10, levels=(0.5, 0.9), widths=False)
    assert 0.85 < res["rmse"] < 1.05 and res["uncertainty"] == "noise only"
    assert 0.7 < res["coverage"]["0.9"] < 1.0 and 0.3 < res["coverage"]["0.5"] < 0.7
    assert res["crps"] < res["mae"]  # CRPS <= MAE of the median for any predictive
    r = res["ranking"]
    assert r["users_evaluated"] > 400 and 0.5 < r["auc"] < 1.0
    assert 0 <= r["precision@10"] <= r["hit_rate@10"] <= 1


def test_recommend_all_users_on_ml100k(fitted):
    from bayesmf.recommend import recommend, similar_items

    post, train, test = fitted
    rec = recommend(post, None, n=10, uncertainty=False)
    assert len(rec) == 10 * len(post.users)
    seen = pd.MultiIndex.from_arrays([train.users.decode(train.user), train.items.decode(train.item)])
    got = pd.MultiIndex.from_arrays([rec["user"].to_numpy(), rec["item"].to_numpy()])
    assert not got.isin(seen).any()
    fast = recommend(post, None, n=10, approx="mean-factors", uncertainty=False)
    assert (fast["item"].to_numpy() == rec["item"].to_numpy()).mean() > 0.999  # 1 draw: same
    sim = similar_items(post, int(train.items.ids[0]), n=5)
    assert len(sim) == 5 and (sim["score"] <= 1 + 1e-6).all()
    assert np.isfinite(rec["score"]).all()
