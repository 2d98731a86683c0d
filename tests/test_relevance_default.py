"""The default relevance of the ranking metrics is the likelihood's own (1 for 0/1 data,
4 on a star scale), in Python and on the CLI (``--relevance-threshold`` overrides it)."""

import json

import numpy as np
import pandas as pd
import pytest

import bayesmf
from bayesmf.cli import main


@pytest.fixture(scope="module")
def thumbs(tmp_path_factory):
    rng = np.random.default_rng(0)
    n_u, n_i, k = 40, 30, 2
    U, V = rng.normal(size=(n_u, k)), rng.normal(size=(n_i, k))
    rows = [(u, i) for u in range(n_u) for i in rng.permutation(n_i)[:12]]
    df = pd.DataFrame(rows, columns=["user", "item"])
    eta = np.einsum("nk,nk->n", 2 * U[df.user], V[df.item])
    df["rating"] = (rng.random(len(df)) < 1 / (1 + np.exp(-eta))).astype(float)
    test = df.groupby("user").tail(3)
    train = df.drop(test.index)
    d = tmp_path_factory.mktemp("thumbs")
    train.to_csv(d / "train.csv", index=False)
    test.to_csv(d / "test.csv", index=False)
    return d, train, test


def test_bernoulli_evaluate_ranks_the_positives_by_default(thumbs):
    d, train, test = thumbs
    m = bayesmf.BayesMF(method="map", rank=2, likelihood="bernoulli-logit").fit(train)
    rk = m.evaluate(test)["ranking"]
    assert "skipped" not in rk, rk
    assert rk["relevance"] == "rating >= 1" and rk["relevant_pairs"] == int(test.rating.sum())
    # an explicit threshold still applies (0.5: the same positives)
    assert m.evaluate(test, relevance_threshold=0.5)["ranking"]["ndcg@10"] == rk["ndcg@10"]


def test_cli_evaluate_takes_the_family_default_and_a_threshold(thumbs, capsys):
    d, train, test = thumbs
    out = d / "m.nc"
    assert main(["fit", str(d / "train.csv"), "--likelihood", "bernoulli-logit", "--method",
                 "map", "--rank", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), str(d / "test.csv"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["ranking"]["relevant_pairs"] == int(test.rating.sum())
    assert main(["evaluate", str(out), str(d / "test.csv"), "--json",
                 "--relevance-threshold", "0.5"]) == 0
    res5 = json.loads(capsys.readouterr().out)
    assert res5["ranking"]["relevance"] == "rating >= 0.5"
    assert res5["ranking"]["relevant_pairs"] == int(test.rating.sum())
    # a threshold every 0/1 value passes is refused: one line, exit 2
    assert main(["evaluate", str(out), str(d / "test.csv"), "--relevance-threshold",
                 "0"]) == 2
    err = capsys.readouterr().err
    assert "same for every pair" in err and err.count("\n") == 1


def test_evaluate_raises_bad_inputs_and_skips_only_when_nothing_is_ranked(thumbs):
    """evaluate reports ranking as skipped only when no test user has a relevant held-out
    item; bad given negatives raise (they were swallowed as 'skipped'), a threshold
    outside the family's values and a non-integer k are refused."""
    from bayesmf.errors import DataError, SpecError

    d, train, test = thumbs
    m = bayesmf.BayesMF(method="map", rank=2, likelihood="bernoulli-logit").fit(train)
    u0 = int(test.user.iloc[0])
    with pytest.raises(DataError, match="unknown item"):
        m.evaluate(test, protocol="sampled", negatives={u0: [999_999]})
    for t in (0.0, 2.0):
        with pytest.raises(SpecError, match="same for every pair"):
            m.evaluate(test, relevance_threshold=t)
    for k in (2.5, 0, True):
        with pytest.raises(SpecError, match="k must be an integer"):
            m.evaluate(test, k=k)
    none = test.assign(rating=0.0)  # no relevant pair at all: skipped, not an error
    assert "skipped" in m.evaluate(none)["ranking"]


def test_a_default_threshold_outside_a_short_scale_skips_ranking():
    """An ordinal model on a 1..3 scale: the default relevance threshold (4, stars) is
    outside its levels -- ranking is reported as skipped (nothing relevant), not an
    error; a threshold given inside the levels ranks."""
    rng = np.random.default_rng(0)
    rows = [(u, i) for u in range(20) for i in rng.permutation(12)[:6]]
    df = pd.DataFrame(rows, columns=["user", "item"])
    df["rating"] = rng.integers(1, 4, len(df)).astype(float)
    test = df.groupby("user").tail(2)
    train = df.drop(test.index)
    m = bayesmf.BayesMF(method="map", rank=2, likelihood="ordinal").fit(train)
    assert "skipped" in m.evaluate(test)["ranking"]
    assert "ndcg@10" in m.evaluate(test, relevance_threshold=3)["ranking"]
