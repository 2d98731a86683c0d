"""The conformance mixin over the full-matrix count families: the implicit likelihood
(Bayesian implicit ALS; methods gibbs, map) and the Poisson likelihood (HPF; gibbs, cavi,
svi, nuts, and KL-NMF as map), each fitted once on planted HPF counts
(:func:`bayesmf.testing.conformance.planted`), plus the contract specific to counts:

* Poisson draws are non-negative (``U = theta``, ``V = beta``, ``xi``, ``eta``) and the
  predictive mean is the posterior-mean rate :math:`\\frac1S\\sum_s U_{u,s}^\\top V_{i,s}`;
* recommendations never repeat a training pair, follow the score order, and the top
  item equals the hand-computed argmax of the predictive mean;
* the full ranking protocol on an :class:`~bayesmf.data.interactions.Interactions` test
  set gives the hand-computed recall@k / hit rate@k (every held-out pair relevant, no
  threshold accepted, rating metrics skipped);
* the pointwise log likelihood (ArviZ group) and the log predictive density are the
  family's own: Poisson log pmf of the counts; for the implicit family the preference
  :math:`p = 1` of a listed pair (with precision :math:`\\tau c` in the likelihood, the
  new-pair predictive with :math:`c = 1` in the log predictive density).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import norm, poisson

from bayesmf.data.interactions import Interactions
from bayesmf.errors import BayesMFError, SpecError
from bayesmf.model.likelihoods import LIKELIHOODS
from bayesmf.testing.conformance import (COUNT_LIKELIHOODS, ConformanceTests, fit_fast,
                                         full_matrix_targets, planted)

#: methods whose rows run only with ``-m slow`` (none: NUTS fits the 40 x 30 problem in ~8 s)
_SLOW: set = set()


def _row(method, lik):
    marks = [pytest.mark.slow] if method in _SLOW else []
    return pytest.param((method, lik), id=f"{method}-{lik}", marks=marks)


ROWS = [_row(m, lk) for lk in COUNT_LIKELIHOODS for m in LIKELIHOODS[lk].methods]
POISSON_ROWS = [_row(m, "poisson") for m in LIKELIHOODS["poisson"].methods]
IMPLICIT_ROWS = [_row(m, "implicit") for m in LIKELIHOODS["implicit"].methods]


@lru_cache(maxsize=None)
def _fit(method, lik):
    train = planted(lik)
    return method, lik, train, fit_fast(method, lik, train)


@pytest.fixture(scope="module", params=ROWS)
def fitted(request):
    return _fit(*request.param)


def _rates(post):
    """Per-draw rates / preferences ``U_s V_s^T`` over all pairs, ``(S, N, M)``."""
    U = post.flat("U").astype(np.float64)
    V = post.flat("V").astype(np.float64)
    return np.einsum("snk,smk->snm", U, V)


def test_rows_cover_every_method_of_both_families():
    assert {p.values[0] for p in ROWS} == {
        (m, lk) for lk in ("implicit", "poisson") for m in LIKELIHOODS[lk].methods}
    assert {m for (m, _), in (p.values for p in POISSON_ROWS)} == {
        "gibbs", "cavi", "map", "svi", "nuts"}
    assert {m for (m, _), in (p.values for p in IMPLICIT_ROWS)} == {"gibbs", "map"}


def test_planted_counts_are_positive_integers_with_everyone_observed():
    for lik in COUNT_LIKELIHOODS:
        r = planted(lik)
        assert np.all(r.rating >= 1) and np.all(r.rating == np.round(r.rating))
        assert r.n_users == 40 and r.n_items == 30
        assert np.all(np.bincount(r.user, minlength=40) > 0)
        assert np.all(np.bincount(r.item, minlength=30) > 0)
        assert 0.05 < r.nnz / (40 * 30) < 0.6 and r.rating.max() > 1


class TestCountConformance(ConformanceTests):
    @pytest.mark.parametrize("fitted", POISSON_ROWS, indirect=True)
    def test_poisson_draws_non_negative_and_mean_is_the_rate(self, fitted):
        method, lik, train, post = fitted
        for n in ("U", "V"):
            assert np.all(post.draws[n] >= 0), n
        for n in ("xi", "eta"):  # user activity, item popularity (not for KL-NMF)
            if n in post.draws:
                assert np.all(post.draws[n] > 0), n
        if method != "map":
            assert "xi" in post.draws and "eta" in post.draws
        users, items, y, listed = full_matrix_targets(post, train)
        want = _rates(post).mean(0).ravel()
        np.testing.assert_allclose(post.predict(users, items).mean, want, rtol=2e-4,
                                   atol=1e-6)

    @pytest.mark.parametrize("strategy", ["mean", "ucb", "thompson", "prob"])
    def test_recommend_excludes_seen_and_follows_the_scores(self, fitted, strategy):
        from bayesmf.recommend import recommend

        method, lik, train, post = fitted
        users = train.users.ids[:10]
        recs = recommend(post, users=users, n=5, strategy=strategy, seed=1,
                         **({"threshold": 0.5} if strategy == "prob" else {}))
        seen = set(zip(train.users.decode(train.user), train.items.decode(train.item)))
        assert len(recs) == 50
        assert not any((u, i) in seen for u, i in zip(recs["user"], recs["item"]))
        for _, g in recs.groupby("user", sort=False):
            assert g["item"].is_unique
            assert np.all(np.diff(g["score"].to_numpy()) <= 1e-9), strategy
        if strategy == "mean":
            # the top unseen item is the argmax of the predictive mean (by hand)
            for u in users[:5]:
                pred = post.predict(np.full(len(post.items), u, dtype=object),
                                    post.items.ids).mean
                mask = np.array([(u, i) in seen for i in post.items.ids])
                pred[mask] = -np.inf
                top = recs.loc[recs["user"] == u, "item"].iloc[0]
                assert top == post.items.ids[int(np.argmax(pred))]
            all_ = recommend(post, users=users[:3], n=len(post.items), exclude_seen=False)
            assert len(all_) == 3 * len(post.items)  # seen items come back when asked

    def test_full_ranking_on_an_interactions_test_set(self, fitted):
        from bayesmf.evaluate import evaluate

        method, lik, train, post = fitted
        rng = np.random.default_rng(7)
        csr = train.to_csr()
        tu, ti, tc = [], [], []
        for u in range(15):
            free = np.setdiff1d(np.arange(train.n_items), csr.indices[csr.indptr[u]:
                                                                      csr.indptr[u + 1]])
            for i in rng.choice(free, size=min(3, len(free)), replace=False):
                tu.append(u)
                ti.append(i)
                tc.append(rng.integers(1, 5))
        test = Interactions.from_arrays(train.users.decode(np.array(tu)),
                                        train.items.decode(np.array(ti)), tc,
                                        user_vocab=train.users, item_vocab=train.items)
        k = 5
        out = evaluate(post, test, k=k, protocol="full", widths=False)
        assert "skipped" in out["rating_metrics"]
        r = out["ranking"]
        # by hand: each test user's unseen items ranked by the predictive mean
        recall, hit = [], []
        for u in np.unique(tu):
            rel = {i for uu, i in zip(tu, ti) if uu == u}
            free = np.setdiff1d(np.arange(train.n_items), csr.indices[csr.indptr[u]:
                                                                      csr.indptr[u + 1]])
            raw_u = np.full(len(free), train.users.decode(np.array([u]))[0], dtype=object)
            s = post.predict(raw_u, train.items.decode(free)).mean
            top = free[np.argsort(-s, kind="stable")[:k]]
            h = len(rel & set(top.tolist()))
            recall.append(h / len(rel))
            hit.append(float(h > 0))
        assert r["recall@5"] == pytest.approx(np.mean(recall), abs=1e-9)
        assert r["hit_rate@5"] == pytest.approx(np.mean(hit), abs=1e-9)
        assert 0 <= r["ndcg@5"] <= 1 and 0 <= r["auc"] <= 1
        with pytest.raises(SpecError, match="relevance_threshold"):
            evaluate(post, test, k=k, relevance_threshold=2.0, widths=False)

    def test_pointwise_log_likelihood_is_the_familys(self, fitted):
        method, lik, train, post = fitted
        dt = post.to_datatree(log_likelihood=train)
        ll = dt["log_likelihood"]["rating"].values.reshape(post.n_samples, train.nnz)
        R = _rates(post)[:, train.user, train.item]
        if post.likelihood.discrete:
            want = poisson.logpmf(train.rating, R)
            np.testing.assert_allclose(ll, want, rtol=1e-4, atol=1e-4)
            if "log_likelihood" in post.sample_stats:
                # listed terms + the closed-form zeros = the fit's all-pairs total
                tot = (want.sum(1) - (_rates(post).sum((1, 2)) - R.sum(1)))
                np.testing.assert_allclose(
                    post.sample_stats["log_likelihood"].reshape(-1), tot, rtol=1e-4)
        else:
            c = post.likelihood.encode(train.rating)
            tau = post.flat("tau").astype(np.float64)[:, None]
            want = norm.logpdf(1.0, R, 1.0 / np.sqrt(tau * c))
            np.testing.assert_allclose(ll, want, rtol=1e-4, atol=1e-4)

    def test_log_predictive_density_is_on_the_familys_scale(self, fitted):
        method, lik, train, post = fitted
        R = _rates(post)[:, train.user, train.item]
        if post.likelihood.discrete:
            lp = post.log_predictive_density(train)
            want = logsumexp(poisson.logpmf(train.rating, R), axis=0) - np.log(len(R))
            np.testing.assert_allclose(lp, want, rtol=1e-5, atol=1e-6)
            return
        # implicit: a listed pair is the preference p = 1 (its count is a confidence, not
        # an observation on the predictive's scale); a refusal is acceptable too
        try:
            lp = post.log_predictive_density(train)
        except BayesMFError:
            return
        users, items = train.users.decode(train.user), train.items.decode(train.item)
        want = post.predictive(users, items).logpdf(np.ones(train.nnz))
        np.testing.assert_allclose(lp, want, rtol=1e-6)
