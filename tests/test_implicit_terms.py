"""SVD++-style implicit terms: the block x_u = |N(u)|^{-1/2} 1_{N(u)} as Macau features.

Hand-computed blocks, the exact eigh solver of the link matrix, planted data where which
items a user rated carries the user's taste, fold-in with the SVD++ prior mean, the
estimator and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from bayesmf import cli
from bayesmf.data.features import (IMPLICIT_COLUMNS, Features, add_implicit_terms,
                                   implicit_features, parse_implicit_terms)
from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import BayesMFError, DataError, SpecError
from bayesmf.estimator import BayesMF
from bayesmf.infer.gibbs import fit_gibbs, streamed_predictions
from bayesmf.model.spec import ModelSpec
from bayesmf.recommend.foldin import _implicit_offset, fold_in


def _toy():
    users, items = Vocabulary(np.array([10, 20, 30])), Vocabulary(np.array([1, 2, 3, 4]))
    u = np.array([0, 0, 0, 0, 1, 1])
    i = np.array([0, 1, 2, 3, 0, 2])
    return Ratings.from_indices(u, i, np.arange(6.0), users, items)


def test_block_is_the_normalised_indicator():
    tr = _toy()
    f = implicit_features(tr, "user")
    want = np.array([[.5, .5, .5, .5], [2 ** -.5, 0, 2 ** -.5, 0], [0, 0, 0, 0]])
    np.testing.assert_allclose(f.dense(), want)
    assert f.is_sparse and f.has_implicit and f.schema[0]["kind"] == "implicit"
    assert f.schema[0]["name"] == IMPLICIT_COLUMNS["user"]
    g = implicit_features(tr, "item")  # flipped: the users who rated each item
    np.testing.assert_allclose(g.dense()[0], [2 ** -.5, 2 ** -.5, 0])
    np.testing.assert_allclose(g.dense()[1], [1, 0, 0])
    # extra pairs (values unknown) count as interactions; duplicates count once
    h = implicit_features(tr, "user", extra_pairs=(np.array([2, 2, 1]), np.array([3, 3, 0])))
    np.testing.assert_allclose(h.dense()[2], [0, 0, 0, 1])
    np.testing.assert_allclose(h.dense()[1], want[1])


def test_frame_encoding_of_an_implicit_column():
    f = implicit_features(_toy(), "user")
    df = pd.DataFrame({"user": [99, 98], IMPLICIT_COLUMNS["user"]: ["1|3|777", ""]})
    g = f.transform(df)  # unknown item 777 ignored, normalised by the 2 known ids
    np.testing.assert_allclose(g.dense(), [[2 ** -.5, 0, 2 ** -.5, 0], [0, 0, 0, 0]])
    g2 = f.transform(pd.DataFrame({"user": [99]}))  # the column may be left out: zeros
    assert g2.dense().sum() == 0


def test_join_and_parse():
    tr = _toy()
    side = Features.from_frame(pd.DataFrame({"user": [30, 10, 20], "age": [1.0, 2.0, 3.0]}))
    uf, itf = add_implicit_terms(tr, "user", side, None)
    assert itf is None and uf.n_features == 1 + 4
    np.testing.assert_allclose(uf.dense()[:, 0], [0, 1.224744871, -1.224744871], atol=1e-8)
    np.testing.assert_allclose(uf.dense()[0, 1:], .5)
    assert [c["kind"] for c in uf.schema] == ["numeric", "implicit"]
    with pytest.raises(DataError, match="already hold an implicit"):
        add_implicit_terms(tr, "user", uf, None)
    assert parse_implicit_terms(" item , user") == ("user", "item")
    assert parse_implicit_terms(None) == ()
    for bad in ("users", "user,user", 3):
        with pytest.raises(SpecError, match="implicit_terms"):
            parse_implicit_terms(bad)
    with pytest.raises(DataError, match="outside"):
        implicit_features(tr, "user", extra_pairs=(np.array([5]), np.array([0])))


@pytest.fixture(scope="module")
def planted():
    """Which items a user rated tells the user's taste: two user groups, two item
    clusters; each user has 3 training ratings and 25 interactions without a value (the
    extra pairs), 80% in the own group's cluster. Ratings: 3 +/- 1 by group x cluster."""
    rng = np.random.default_rng(0)
    N, M = 240, 120
    g_u = rng.integers(0, 2, N)
    g_i = np.arange(M) % 2
    tr_u, tr_i, ex_u, ex_i, te_u, te_i = [], [], [], [], [], []
    for u in range(N):
        own = np.flatnonzero(g_i == g_u[u])
        other = np.flatnonzero(g_i != g_u[u])
        picks = np.concatenate([rng.choice(own, 24, replace=False),
                                rng.choice(other, 7, replace=False)])
        rng.shuffle(picks)
        tr_i += list(picks[:3])
        tr_u += [u] * 3
        ex_i += list(picks[3:28])
        ex_u += [u] * 25
        te_i += list(picks[28:])
        te_u += [u] * 3
    tr_u, tr_i, ex_u, ex_i, te_u, te_i = map(np.asarray, (tr_u, tr_i, ex_u, ex_i, te_u, te_i))

    def rating(u, i):
        return 3.0 + np.where(g_u[u] == g_i[i], 1.0, -1.0) + 0.3 * rng.normal(size=len(u))

    users, items = Vocabulary(np.arange(N)), Vocabulary(np.arange(M))
    train = Ratings.from_indices(tr_u, tr_i, rating(tr_u, tr_i), users, items)
    te_u_all = np.concatenate([te_u, ex_u])
    te_i_all = np.concatenate([te_i, ex_i])
    return dict(train=train, extra=(ex_u, ex_i), test=(te_u_all, te_i_all,
                                                      rating(te_u_all, te_i_all)))


def _rmse(train, test, **feats):
    tu, ti, y = test
    post = fit_gibbs(train, ModelSpec(rank=2), seed=0, num_samples=80, num_warmup=80,
                     predict_pairs=(tu, ti), **feats)
    return float(np.sqrt(np.mean((streamed_predictions(post)["mean"] - y) ** 2))), post


def test_implicit_terms_carry_the_taste_of_sparse_users(planted):
    plain, _ = _rmse(planted["train"], planted["test"])
    uf, _ = add_implicit_terms(planted["train"], "user", extra_pairs=planted["extra"])
    svdpp, post = _rmse(planted["train"], planted["test"], user_features=uf)
    # 3 ratings per user barely identify the group; the 25 interactions do
    assert svdpp < plain - 0.15, (svdpp, plain)
    assert svdpp < 0.8
    assert post.draws["beta_U"].shape[-2:] == (120, 2)
    # fold-in of a copy of user 0 (its 3 ratings): the SVD++ prior mean is
    # mu_U + beta^T x per draw, x over its rated items
    tr = planted["train"]
    sel = tr.user == 0
    items = tr.items.ids[tr.item[sel]]
    shift = _implicit_offset(post, "user", tr.item[sel])
    beta = post.flat("beta_U")
    x = np.zeros(beta.shape[1])
    x[np.unique(tr.item[sel])] = 1 / np.sqrt(len(np.unique(tr.item[sel])))
    np.testing.assert_allclose(shift, np.einsum("f,sfk->sk", x, beta), rtol=1e-6)
    assert np.abs(shift).max() > 0
    fu = fold_in(post, dict(zip(items, tr.rating[sel])), user="copy", mode="mean")
    pred_new = fu.predict(tr.items.ids).sort_values("item")["mean"].to_numpy()
    pred_0 = post.predict(np.zeros(len(tr.items), int), tr.items.ids).mean
    assert np.corrcoef(pred_new, pred_0)[0, 1] > 0.5


def test_estimator_cli_and_model_file(planted, tmp_path):
    tr = planted["train"]
    df = pd.DataFrame({"user": tr.users.ids[tr.user], "item": tr.items.ids[tr.item],
                       "rating": tr.rating})
    m = BayesMF(method="gibbs", rank=2, implicit_terms="user,item", num_samples=20,
                num_warmup=20)
    assert m.get_params()["implicit_terms"] == "user,item"
    m.fit(df)
    feats = m.posterior_.features
    assert feats["user"].has_implicit and feats["item"].has_implicit
    assert feats["user"].n_features == len(tr.items)
    path = tmp_path / "m.nc"
    m.save(path)
    from bayesmf import load

    m2 = load(path)
    assert m2.posterior_.features["user"].schema == feats["user"].schema
    pairs = df.iloc[:50][["user", "item"]]
    np.testing.assert_allclose(m2.predict(pairs)["mean"], m.predict(pairs)["mean"])
    # a cold-start user given by the items it interacted with
    cold = m.posterior_.with_features(user_features=pd.DataFrame(
        {"user": [10_000], IMPLICIT_COLUMNS["user"]: ["|".join(map(str, range(0, 40, 2)))]}))
    assert 10_000 in cold.users
    with pytest.raises(SpecError, match="implicit_terms"):
        BayesMF(method="gibbs", implicit_terms="everything").fit(df)
    # CLI
    csv = tmp_path / "train.csv"
    df.to_csv(csv, index=False)
    out = tmp_path / "cli.nc"
    rc = cli.main(["fit", str(csv), "--method", "gibbs", "--rank", "2", "--implicit-terms",
                   "user", "--samples", "10", "--warmup", "5", "--out", str(out),
                   "--no-progress"])
    assert rc == 0
    assert load(out).posterior_.features["user"].has_implicit
    assert load(out).posterior_.features["item"] is None
    with pytest.raises((SystemExit, BayesMFError)):
        r = cli.main(["fit", str(csv), "--method", "gibbs", "--implicit-terms", "items",
                      "--out", str(tmp_path / "x.nc"), "--no-progress"])
        assert r != 0
        raise SystemExit(r)


def test_eigh_block_equals_the_dense_one():
    """The sparse implicit block and its dense copy give the same draws (same solver)."""
    tr = _toy()
    f = implicit_features(tr, "user")
    dense = Features(f.ids, f.dense(), f.schema, "user")
    assert sp.issparse(f.X) and not sp.issparse(dense.X)
    a = fit_gibbs(tr, ModelSpec(rank=1), seed=3, num_samples=5, num_warmup=2,
                  user_features=f, dtype="float32")
    b = fit_gibbs(tr, ModelSpec(rank=1), seed=3, num_samples=5, num_warmup=2,
                  user_features=dense, dtype="float32")
    np.testing.assert_allclose(a.draws["U"], b.draws["U"], rtol=1e-4, atol=1e-5)
