"""bayesmf.selection.select_confidence: every candidate is scored by the carve metric it
reports (an independent fit of the same carve gives the same number), the best one is
chosen, and bad requests are clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesmf import BayesMF
from bayesmf.data.interactions import Interactions
from bayesmf.errors import DataError, SpecError
from bayesmf.evaluate.protocols import ranking_evaluate
from bayesmf.model.likelihoods import ImplicitGaussian
from bayesmf.selection import CONFIDENCE_CANDIDATES, select_confidence

SHORT = dict(rank=3, num_warmup=10, num_samples=10, k=5)


@pytest.fixture(scope="module")
def events():
    """A planted rank-3 taste with repeat counts."""
    rng = np.random.default_rng(0)
    n_u, n_i = 50, 30
    U, V = rng.normal(size=(n_u, 3)), rng.normal(size=(n_i, 3))
    p = 1 / (1 + np.exp(-(2 * U @ V.T - 1.5)))
    u, i = np.nonzero(rng.random((n_u, n_i)) < p)
    return Interactions.from_arrays(u, i, rng.integers(1, 6, len(u)).astype(float))


def test_candidates_are_scored_by_their_carve_fit_and_the_best_is_chosen(events):
    cands = [ImplicitGaussian(alpha=0.5), ImplicitGaussian(alpha=8.0),
             ImplicitGaussian(transform="linear", alpha=1.0)]
    seen = []
    sel = select_confidence(events, cands, seed=1, callback=seen.append, **SHORT)
    t = sel.table
    assert seen == t.to_dict("records")          # each row reported as it was scored
    assert list(t["confidence"]) == ["log:0.5", "log:8", "linear:1"]
    assert sel.likelihood == cands[int(np.argmax(t["ndcg@5"]))]
    assert t["ndcg@5"].nunique() > 1            # the candidates do differ
    # the reported score is the carve's: refit one candidate on the same carve by hand
    train, test = events.fraction_split(0.2, seed=1)
    assert sel.info["carve_train_pairs"] == train.nnz
    assert sel.info["carve_test_pairs"] == test.nnz
    m = BayesMF(method="gibbs", rank=3, likelihood=cands[1], num_warmup=10,
                num_samples=10, seed=1).fit(train)
    r = ranking_evaluate(m.posterior_, test, 5, "full")
    np.testing.assert_allclose(t["ndcg@5"][1], r["ndcg@5"], rtol=1e-6)
    np.testing.assert_allclose(t["recall@5"][1], r["recall@5"], rtol=1e-6)
    rec = sel.to_dict()
    assert rec["chosen"] == t["confidence"][int(np.argmax(t["ndcg@5"]))]
    assert [c["confidence"] for c in rec["candidates"]] == list(t["confidence"])


def test_default_candidates_are_log_slopes():
    assert [(c.transform, c.alpha) for c in CONFIDENCE_CANDIDATES] == [
        ("log", 0.5), ("log", 1.0), ("log", 2.0), ("log", 4.0), ("log", 8.0)]


@pytest.mark.parametrize("kwargs, err, msg", [
    (dict(candidates=[ImplicitGaussian()]), SpecError, "at least two"),
    (dict(candidates=[ImplicitGaussian(), "bernoulli-logit"]), SpecError, "at least two"),
    (dict(num_samples=0), SpecError, "num_samples must be a positive integer"),
    (dict(k=2.5), SpecError, "k must be a positive integer"),
    (dict(method="map"), SpecError, "method= is not an option"),
    (dict(fraction=1.5), DataError, "fraction"),
    # numpy integers pass the integer checks (they were refused) and reach the next one
    (dict(num_warmup=np.int64(2), num_samples=np.int64(1), k=np.int64(3), fraction=1.5),
     DataError, "fraction"),
])
def test_bad_requests_are_clear_errors(events, kwargs, err, msg):
    with pytest.raises(err, match=msg):
        select_confidence(events, **kwargs)


def test_ratings_are_refused():
    df = pd.DataFrame({"user": [1, 2], "item": [1, 2], "rating": [4.0, 5.0]})
    from bayesmf import as_ratings

    with pytest.raises(DataError, match="implicit-feedback Interactions"):
        select_confidence(as_ratings(df))
