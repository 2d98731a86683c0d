"""Hierarchical Poisson factorization, user-facing side: ``bayesmf fit --likelihood poisson
--prior gamma --method gibbs|cavi|map`` end to end (predict, recommend, evaluate), the
--prior refusals, the factor summaries (top_items_per_factor, user_factor_shares) and the
held-out Poisson log likelihood, each against a hand computation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import poisson

from bayesmf.cli import build_parser, main
from bayesmf.data.interactions import Interactions
from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import DataError, SpecError, UnknownIdError
from bayesmf.evaluate import heldout_poisson_loglik
from bayesmf.io import load
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo
from bayesmf.recommend import top_items_per_factor, user_factor_shares

POISSON = ModelSpec(rank=2, likelihood="poisson", global_mean=False, user_bias=False,
                    item_bias=False)


# ----------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def counts(tmp_path_factory):
    """A count file (user,item,count) from a planted rank-2 HPF, and held-out pairs."""
    rng = np.random.default_rng(0)
    N, M = 30, 20
    th = rng.gamma(0.5, 1.0, (N, 2))
    be = 1.5 * rng.gamma(0.5, 1.0, (M, 2))
    Y = rng.poisson(th @ be.T)
    Y[np.arange(N), rng.integers(0, M, N)] += 1
    Y[rng.integers(0, N, M), np.arange(M)] += 1
    u, i = np.nonzero(Y)
    df = pd.DataFrame({"user": [f"u{x}" for x in u], "item": i + 100, "count": Y[u, i]})
    test = df.sample(25, random_state=1)
    train = df.drop(test.index)
    # every held-out user and item stays in training
    test = test[test["user"].isin(train["user"]) & test["item"].isin(train["item"])]
    d = tmp_path_factory.mktemp("hpf_cli")
    train.to_csv(d / "train.csv", index=False)
    test.to_csv(d / "test.csv", index=False)
    bad = train.astype({"count": float})
    bad.loc[bad.index[3], "count"] = 2.5
    bad.to_csv(d / "bad.csv", index=False)
    return d


FIT = ["--feedback", "implicit", "--likelihood", "poisson", "--rank", "2", "--no-progress"]
METHOD_OPTS = {"gibbs": ["--samples", "30", "--warmup", "30"],
               "cavi": ["--option", "num_samples=30"], "map": []}


@pytest.mark.parametrize("method", ["gibbs", "cavi", "map"])
def test_fit_predict_recommend_evaluate(counts, capsys, method):
    d = counts
    out = d / f"{method}.nc"
    assert main(["fit", str(d / "train.csv"), *FIT, "--prior", "gamma", "--method", method,
                 *METHOD_OPTS[method], "--out", str(out)]) == 0
    assert f"fitted {method} rank 2" in capsys.readouterr().out
    post = load(out)
    assert post.likelihood.name == "poisson" and post.method == method
    assert post.spec.prior.name == "gamma" and post.spec.prior.a == 0.3
    assert np.all(post.draws["U"] >= 0) and np.all(post.draws["V"] >= 0)
    train = pd.read_csv(d / "train.csv")
    seen = set(zip(train["user"], train["item"]))
    assert main(["recommend", str(out), "--users", "u0,u1", "--n", "4",
                 "--out", str(d / "r.csv")]) == 0
    rec = pd.read_csv(d / "r.csv")
    assert len(rec) == 8 and set(rec["user"]) == {"u0", "u1"}
    assert not any((u, i) in seen for u, i in zip(rec["user"], rec["item"]))
    # predict: 'mean' is the posterior-mean rate sum_s theta_u . beta_i / S
    rec[["user", "item"]].to_csv(d / "pairs.csv", index=False)
    assert main(["predict", str(out), str(d / "pairs.csv"), "--out", str(d / "p.csv")]) == 0
    pred = pd.read_csv(d / "p.csv")
    U = post.flat("U").astype(np.float64)
    V = post.flat("V").astype(np.float64)
    uu = post.users.encode(pred["user"].to_numpy())
    ii = post.items.encode(pred["item"].to_numpy())
    want = np.einsum("snk,snk->n", U[:, uu], V[:, ii]) / U.shape[0]
    np.testing.assert_allclose(pred["mean"], want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(rec["score"], want, rtol=1e-4, atol=1e-6)
    capsys.readouterr()
    assert main(["evaluate", str(out), str(d / "test.csv"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["method"] == method and res["rating_metrics"].startswith("skipped")
    # the counts' own score: the held-out log predictive probability per non-zero
    from bayesmf.data.interactions import Interactions
    from bayesmf.evaluate import heldout_poisson_loglik

    te = pd.read_csv(d / "test.csv")
    want = heldout_poisson_loglik(post, Interactions.from_arrays(
        te["user"].to_numpy(), te["item"].to_numpy(), te["count"].to_numpy()),
        unknown="fallback")
    assert res["heldout_loglik_per_nonzero"] == pytest.approx(want, rel=1e-9)
    assert res["ranking"]["relevant_pairs"] == len(pd.read_csv(d / "test.csv"))


def test_poisson_implies_gamma_and_explicit_counts_fit(counts, tmp_path, capsys):
    """No --prior with poisson is --prior gamma; the counts may also come as ratings
    (--feedback explicit --rating-col count)."""
    assert main(["fit", str(counts / "train.csv"), *FIT, "--method", "cavi",
                 "--out", str(tmp_path / "a.nc")]) == 0
    assert load(tmp_path / "a.nc").spec.prior.name == "gamma"
    assert main(["fit", str(counts / "train.csv"), "--likelihood", "poisson", "--method",
                 "map", "--rank", "2", "--rating-col", "count",
                 "--out", str(tmp_path / "b.nc")]) == 0
    assert load(tmp_path / "b.nc").likelihood.name == "poisson"
    # the Gaussian-factor models keep their prior and record nothing
    assert main(["fit", str(counts / "train.csv"), "--feedback", "implicit", "--method",
                 "map", "--rank", "2", "--out", str(tmp_path / "c.nc")]) == 0
    post = load(tmp_path / "c.nc")
    assert post.spec.prior.name == "normal-wishart" and "factor_prior" not in post.attrs


def test_bias_flags_fit_poisson_biases_and_predict_with_them(counts, tmp_path, capsys):
    """``--user-bias --item-bias`` with poisson: the model file keeps positive ``bu``/``bi``
    draws and ``predict`` adds them to the rate; KL-NMF (map) fits them too."""
    out = tmp_path / "b.nc"
    assert main(["fit", str(counts / "train.csv"), *FIT, "--method", "cavi", "--user-bias",
                 "--item-bias", "--option", "num_samples=20", "--out", str(out)]) == 0
    post = load(out)
    assert post.spec.user_bias and post.spec.item_bias and not post.spec.global_mean
    assert np.all(post.draws["bu"] > 0) and np.all(post.draws["bi"] > 0)
    pairs = pd.read_csv(counts / "test.csv")[["user", "item"]]
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    assert main(["predict", str(out), str(tmp_path / "pairs.csv"),
                 "--out", str(tmp_path / "p.csv")]) == 0
    pred = pd.read_csv(tmp_path / "p.csv")
    uu = post.users.encode(pred["user"].to_numpy())
    ii = post.items.encode(pred["item"].to_numpy())
    U, V = post.flat("U").astype(np.float64), post.flat("V").astype(np.float64)
    bu, bi = post.flat("bu").astype(np.float64), post.flat("bi").astype(np.float64)
    want = (np.einsum("snk,snk->sn", U[:, uu], V[:, ii]) + bu[:, uu] + bi[:, ii]).mean(0)
    np.testing.assert_allclose(pred["mean"], want, rtol=1e-4, atol=1e-6)
    capsys.readouterr()
    rc = main(["fit", str(counts / "train.csv"), *FIT, "--method", "map", "--item-bias",
               "--option", "max_iter=20", "--out", str(tmp_path / "m.nc")])
    assert rc == 0 and np.any(load(tmp_path / "m.nc").draws["bi"] > 0)


def test_cli_choices_include_gamma_and_cavi():
    fit = build_parser()._subparsers._group_actions[0].choices["fit"]
    opts = {a.dest: a for a in fit._actions}
    assert "gamma" in opts["prior"].choices and "cavi" in opts["method"].choices
    assert opts["prior"].default is None


@pytest.mark.parametrize("args, msg", [
    (["--likelihood", "poisson", "--prior", "normal-gamma", "--method", "cavi"],
     "the poisson likelihood has non-negative factors: its prior is 'gamma'"),
    (["--likelihood", "poisson", "--prior", "normal-wishart", "--method", "map"],
     "not 'normal-wishart'"),
    (["--prior", "gamma", "--method", "map"],
     "prior 'gamma' (non-negative Gamma factors) goes with likelihood='poisson'; "
     "the implicit likelihood takes"),
    (["--likelihood", "implicit", "--method", "cavi"], "does not support likelihood"),
])
def test_prior_and_method_refusals_are_one_line_exit_2(counts, tmp_path, capsys, args, msg):
    rc = main(["fit", str(counts / "train.csv"), "--feedback", "implicit", "--rank", "2",
               *args, "--out", str(tmp_path / "m.nc")])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and err.count("\n") == 1, err
    assert not (tmp_path / "m.nc").exists()


def test_prior_gamma_with_gaussian_ratings_is_refused(counts, tmp_path, capsys):
    rc = main(["fit", str(counts / "train.csv"), "--rating-col", "count", "--prior", "gamma",
               "--out", str(tmp_path / "m.nc")])
    err = capsys.readouterr().err
    assert rc == 2 and "the gaussian likelihood takes 'normal-wishart'" in err


def test_non_integer_counts_are_the_likelihoods_data_error(counts, tmp_path, capsys):
    rc = main(["fit", str(counts / "bad.csv"), *FIT, "--method", "cavi",
               "--out", str(tmp_path / "m.nc")])
    err = capsys.readouterr().err
    assert rc == 2 and "the Poisson likelihood: 1 count(s) are not integers (e.g. 2.5)" in err
    assert err.count("\n") == 1


# ----------------------------------------------------------------------------- hand-made
def _hand_posterior(likelihood="poisson", chains=1):
    """3 users x 4 items, rank 2, two draws per chain, factors chosen by hand."""
    U = np.array([[[1.0, 3.0], [2.0, 2.0], [0.5, 0.0]],
                  [[2.0, 2.0], [1.0, 4.0], [1.5, 0.5]]])  # (S=2, N=3, k=2)
    V = np.array([[[1.0, 0.0], [1.0, 1.0], [2.0, 3.0], [0.0, 4.0]],
                  [[3.0, 1.0], [1.0, 1.0], [0.0, 2.0], [4.0, 4.0]]])  # (S=2, M=4, k=2)
    users = Vocabulary(np.array(["a", "b", "c"], object), "user")
    items = Vocabulary(np.array([10, 11, 12, 13]), "item")
    train = Ratings.from_indices(np.array([0, 1, 2, 2]), np.array([0, 1, 2, 3]),
                                 np.array([1.0, 2.0, 1.0, 3.0]), users, items)
    C = chains
    draws = {"U": np.stack([U] * C), "V": np.stack([V] * C),
             "mu": np.zeros((C, 2)), "bu": np.zeros((C, 2, 3)), "bi": np.zeros((C, 2, 4))}
    if likelihood == "poisson":
        spec = POISSON
    else:
        spec = ModelSpec(rank=2)
        draws["tau"] = np.ones((C, 2))
    post = Posterior(draws, spec, users, items, TrainInfo.from_ratings(train), "hand")
    return post, U, V


def test_top_items_per_factor_by_hand():
    post, _, V = _hand_posterior()
    # factor 0: column sums 4 (draw 0) and 8 (draw 1); weights per draw
    w0 = np.array([[0.25, 0.25, 0.5, 0.0], [3 / 8, 1 / 8, 0.0, 0.5]])
    w1 = np.array([[0.0, 1 / 8, 3 / 8, 0.5], [1 / 8, 1 / 8, 2 / 8, 4 / 8]])
    df = top_items_per_factor(post, n=2, interval=0.9)
    assert list(df.columns) == ["factor", "rank", "item", "weight", "weight_lower",
                                "weight_upper"]
    assert df["factor"].tolist() == [0, 0, 1, 1] and df["rank"].tolist() == [1, 2, 1, 2]
    # factor 0 means: 0.3125, 0.1875, 0.25, 0.25 -> item 10, then the tie 12/13 -> 12
    # factor 1 means: 0.0625, 0.125, 0.3125, 0.5 -> items 13, 12
    assert df["item"].tolist() == [10, 12, 13, 12]
    np.testing.assert_allclose(df["weight"], [w0[:, 0].mean(), w0[:, 2].mean(),
                                              w1[:, 3].mean(), w1[:, 2].mean()])
    lo = [np.quantile(w[:, j], 0.05) for w, j in ((w0, 0), (w0, 2), (w1, 3), (w1, 2))]
    hi = [np.quantile(w[:, j], 0.95) for w, j in ((w0, 0), (w0, 2), (w1, 3), (w1, 2))]
    np.testing.assert_allclose(df["weight_lower"], lo)
    np.testing.assert_allclose(df["weight_upper"], hi)
    full = top_items_per_factor(post, n=50)
    assert len(full) == 8  # capped at the 4 items
    np.testing.assert_allclose(full.groupby("factor")["weight"].sum(), [1.0, 1.0])


def test_user_factor_shares_by_hand():
    post, U, _ = _hand_posterior()
    df = user_factor_shares(post, ["c", "a"], interval=0.5)
    assert list(df.columns) == ["user", "factor", "share", "lower", "upper"]
    assert df["user"].tolist() == ["c", "c", "a", "a"] and df["factor"].tolist() == [0, 1, 0, 1]
    P = U / U.sum(axis=2, keepdims=True)  # (S, N, k)
    want = P[:, [2, 0]].mean(axis=0).ravel()  # c: (1, 0), (0.75, 0.25); a: (.25,.75), (.5,.5)
    np.testing.assert_allclose(df["share"], want)
    np.testing.assert_allclose(df["share"], [0.875, 0.125, 0.375, 0.625])
    np.testing.assert_allclose(df["lower"], np.quantile(P[:, [2, 0]], 0.25, axis=0).ravel())
    np.testing.assert_allclose(df["upper"], np.quantile(P[:, [2, 0]], 0.75, axis=0).ravel())
    np.testing.assert_allclose(df.groupby("user")["share"].sum(), 1.0)
    with pytest.raises(UnknownIdError):
        user_factor_shares(post, ["zz"])


def test_factor_summaries_refuse_what_they_cannot_mean():
    gauss, _, _ = _hand_posterior("gaussian")
    for fn, args in ((top_items_per_factor, ()), (user_factor_shares, (["a"],))):
        with pytest.raises(SpecError, match="non-negative factors .* likelihood 'gaussian'"):
            fn(gauss, *args)
    two, _, _ = _hand_posterior(chains=2)
    with pytest.raises(SpecError, match="2 chains .* pass chain=j"):
        top_items_per_factor(two)
    one = top_items_per_factor(_hand_posterior()[0], n=2)
    pd.testing.assert_frame_equal(top_items_per_factor(two, n=2, chain=1), one)
    with pytest.raises(SpecError, match="chain must be an integer in 0..1"):
        user_factor_shares(two, ["a"], chain=2)
    single = _hand_posterior()[0]
    with pytest.raises(SpecError, match="interval"):
        top_items_per_factor(single, interval=1.0)
    with pytest.raises(SpecError, match="n must be an integer >= 1"):
        top_items_per_factor(single, n=0)


def test_heldout_poisson_loglik_by_hand():
    post, U, V = _hand_posterior()
    # held out: (a, 13) count 2, (b, 10) count 1, (c, 11) count 0 (not scored)
    test = Ratings.from_arrays(np.array(["a", "b", "c"], object), np.array([13, 10, 11]),
                               np.array([2.0, 1.0, 0.0]))
    lam = np.array([[U[s, u] @ V[s, i] for u, i in ((0, 3), (1, 0), (2, 1))]
                    for s in range(2)])  # draw 0: 12, 2, 0.5; draw 1: 16, 7, 2
    np.testing.assert_allclose(lam, [[12.0, 2.0, 0.5], [16.0, 7.0, 2.0]])
    y = np.array([2.0, 1.0, 0.0])
    per_pair = np.log(0.5 * (poisson.pmf(y, lam[0]) + poisson.pmf(y, lam[1])))
    got = heldout_poisson_loglik(post, test, pointwise=True)
    np.testing.assert_allclose(got, per_pair, rtol=1e-10)
    assert heldout_poisson_loglik(post, test) == pytest.approx(per_pair[:2].mean(), rel=1e-10)
    # an Interactions test set (counts) gives the same number; zeros are dropped there
    inter = Interactions.from_arrays(np.array(["a", "b"], object), np.array([13, 10]),
                                     np.array([2.0, 1.0]))
    assert heldout_poisson_loglik(post, inter) == pytest.approx(per_pair[:2].mean(),
                                                                rel=1e-10)
    # no flooring: a tiny probability stays tiny (the clipped nlpd would stop at 1e-15)
    far = Ratings.from_arrays(np.array(["c"], object), np.array([10]), np.array([60.0]))
    lam_far = np.array([0.5, 5.0])  # c . item 10: 0.5 * 1 and 1.5 * 3 + 0.5 * 1
    want = np.log(np.mean(poisson.pmf(60, lam_far)))
    assert want < np.log(1e-15)
    assert heldout_poisson_loglik(post, far) == pytest.approx(want, rel=1e-10)


def test_heldout_poisson_loglik_refusals():
    post, _, _ = _hand_posterior()
    with pytest.raises(DataError, match="not integers"):
        heldout_poisson_loglik(post, Ratings.from_arrays(np.array(["a"], object),
                                                         np.array([10]), np.array([1.5])))
    with pytest.raises(DataError, match="has none"):
        heldout_poisson_loglik(post, Ratings.from_arrays(np.array(["a"], object),
                                                         np.array([10]), np.array([0.0])))
    unseen = Ratings.from_arrays(np.array(["zz"], object), np.array([10]), np.array([1.0]))
    with pytest.raises(UnknownIdError):
        heldout_poisson_loglik(post, unseen)
    assert np.isfinite(heldout_poisson_loglik(post, unseen, unknown="fallback"))
    with pytest.raises(SpecError, match="needs a Poisson"):
        heldout_poisson_loglik(_hand_posterior("gaussian")[0], unseen)


def test_heldout_loglik_of_a_fit_matches_its_draws(counts):
    """On a real CAVI fit: the same number from the posterior's draws by hand."""
    import bayesmf

    tr = pd.read_csv(counts / "train.csv")
    te = pd.read_csv(counts / "test.csv")
    model = bayesmf.BayesMF(method="cavi", likelihood="poisson", rank=2, num_samples=40)
    model.fit(tr, rating_col="count")
    post = model.posterior
    test = Ratings.from_arrays(te["user"].to_numpy(object), te["item"].to_numpy(),
                               te["count"].to_numpy(float))
    U = post.flat("U").astype(np.float64)
    V = post.flat("V").astype(np.float64)
    uu = post.users.encode(te["user"].to_numpy(object))
    ii = post.items.encode(te["item"].to_numpy())
    lam = np.einsum("snk,snk->sn", U[:, uu], V[:, ii])
    want = np.mean(np.log(poisson.pmf(te["count"].to_numpy(), lam).mean(axis=0)))
    assert heldout_poisson_loglik(post, test) == pytest.approx(want, rel=1e-6)


def test_bias_flags_switch_the_biases_of_any_likelihood(counts, tmp_path):
    """The flags are the spec's ``user_bias`` / ``item_bias`` for every family: here a
    Gaussian MAP fit without user biases (its draws of ``bu`` stay zero)."""
    out = tmp_path / "g.nc"
    assert main(["fit", str(counts / "train.csv"), "--rating-col", "count", "--method", "map",
                 "--rank", "2", "--no-user-bias", "--no-progress", "--out", str(out)]) == 0
    post = load(out)
    assert not post.spec.user_bias and post.spec.item_bias and post.spec.global_mean
    assert np.all(post.draws["bu"] == 0) and np.any(post.draws["bi"] != 0)


def test_checkpoint_with_a_fitter_without_checkpoints_is_refused_cleanly(counts, tmp_path,
                                                                         capsys):
    """HPF NUTS writes no checkpoints: a one-line refusal that says so, and no stale
    settings file next to the checkpoint path."""
    ck = tmp_path / "n.ckpt"
    rc = main(["fit", str(counts / "train.csv"), *FIT, "--method", "nuts", "--samples", "5",
               "--warmup", "5", "--checkpoint", str(ck), "--out", str(tmp_path / "m.nc")])
    err = capsys.readouterr().err
    assert rc == 2 and "writes no checkpoints" in err and err.count("\n") == 1, err
    assert not ck.exists() and not (tmp_path / "n.ckpt.cli.json").exists()
