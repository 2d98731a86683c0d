"""Post-hoc recalibration of P(relevant) (issue 13): Platt / shift / isotonic maps on the
predictive mean or per posterior draw of the logit, fresh held-out negatives by a rule,
the training carve, persistence and the errors.

Synthetic data only, except one check that the Last.fm evaluation negatives are no longer
biased towards popular items (skipped without /work/shared/data).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesmf
from bayesmf.data import Interactions, Vocabulary
from bayesmf.errors import DataError, SpecError
from bayesmf.evaluate import (Recalibration, fit_platt, fit_recalibration,
                              heldout_negatives, recalibration_carve)
from bayesmf.evaluate.classification import auc, ece


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _miscalibrated(n=40_000, a=0.6, b=-1.2, seed=0):
    """Scores z with reported p = sigma(z) while the truth is sigma(a z + b)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < _sig(a * z + b)).astype(int)
    return z, y


# ------------------------------------------------------------------ Platt recovery
def test_fit_platt_recovers_known_slope_and_intercept():
    z, y = _miscalibrated()
    a, b = fit_platt(y, z)
    assert a == pytest.approx(0.6, abs=0.03)
    assert b == pytest.approx(-1.2, abs=0.05)
    # the same through predictive means p = sigma(z)
    cal = Recalibration.from_probabilities(y, _sig(z), "platt")
    assert (cal.a, cal.b) == pytest.approx((a, b), abs=1e-6)
    assert cal.info["log_loss_after"] < cal.info["log_loss_before"]


def test_shift_fixes_the_slope_and_matches_the_base_rate():
    z, y = _miscalibrated(a=1.0, b=-0.8)
    a, b = fit_platt(y, z, fix_slope=True)
    assert a == 1.0 and b == pytest.approx(-0.8, abs=0.05)
    cal = Recalibration.from_probabilities(y, _sig(z), "shift")
    # the score equation of the intercept: sum(p') = sum(y)
    assert cal.apply(_sig(z)).sum() == pytest.approx(y.sum(), rel=1e-6)


def test_from_draws_recovers_platt_and_the_identity_is_the_predictive_mean():
    z, y = _miscalibrated(n=20_000, a=0.5, b=0.7, seed=3)
    cal = Recalibration.from_draws(y, z[None, :], method="platt")  # one draw: plain Platt
    assert cal.on == "draws"
    assert (cal.a, cal.b) == pytest.approx(fit_platt(y, z), abs=2e-3)
    # identity map per draw = the likelihood's predictive mean, with and without v
    rng = np.random.default_rng(1)
    m = rng.normal(size=(7, 50))
    v = rng.uniform(0, 2, size=(7, 50))
    ident = Recalibration("platt", "draws", 1.0, 0.0)
    np.testing.assert_allclose(ident.apply_eta(m), _sig(m).mean(0), rtol=1e-12)
    np.testing.assert_allclose(ident.apply_eta(m, v),
                               _sig(m / np.sqrt(1 + np.pi * v / 8)).mean(0), rtol=1e-12)
    assert ident.apply_eta(m, draws=True).shape == (7, 50)


@pytest.mark.parametrize("method", ["platt", "beta"])
def test_from_draws_optimum_is_stationary(method):
    """The mixture fit's optimum is a stationary point of the mixture log-likelihood
    (finite differences), and better than the identity."""
    rng = np.random.default_rng(4)
    mu = rng.normal(0, 1.5, 3000)
    m = mu[None, :] + rng.normal(0, 0.7, (20, 3000))
    v = np.where(rng.random(3000) < 0.1, 1.0, 0.0)[None, :] * np.ones((20, 1))
    y = (rng.random(3000) < _sig(0.4 * mu - 0.5)).astype(int)
    cal = Recalibration.from_draws(y, m, v, method=method)
    assert cal.method == method and cal.info["converged"]

    def nll(**kw):
        p = Recalibration(method, "draws", **{"a": cal.a, "b": cal.b, "c": cal.c, **kw}
                          ).apply_eta(m, v)
        return -np.sum(y * np.log(p) + (1 - y) * np.log1p(-p))

    h = 1e-4
    for name in ("a", "b") + (("c",) if method == "beta" else ()):
        x = getattr(cal, name)
        g = (nll(**{name: x + h}) - nll(**{name: x - h})) / (2 * h)
        assert abs(g) < 0.05, (name, g)
    assert nll() < nll(a=1.0, b=0.0, c=1.0)


def test_beta_recovers_known_coefficients_and_contains_platt():
    rng = np.random.default_rng(7)
    z = rng.normal(0.0, 2.0, 60_000)
    l1, l0 = -np.logaddexp(0, -z), -np.logaddexp(0, z)  # log p, log(1 - p)
    y = (rng.random(len(z)) < _sig(1.6 * l1 - 0.5 * l0 + 0.3)).astype(int)
    cal = Recalibration.from_probabilities(y, _sig(z), "beta")
    assert (cal.a, cal.c, cal.b) == pytest.approx((1.6, 0.5, 0.3), abs=0.08)
    # per draw, one draw: the same fit through the mixture likelihood
    cald = Recalibration.from_draws(y, z[None, :], method="beta")
    assert (cald.a, cald.c, cald.b) == pytest.approx((cal.a, cal.c, cal.b), abs=5e-3)
    # a = c is Platt: the identity (1, 1, 0) reproduces the input
    p = np.linspace(0.01, 0.99, 50)
    np.testing.assert_allclose(Recalibration("beta", "mean", 1.0, 0.0, 1.0).apply(p), p,
                               rtol=1e-9)
    np.testing.assert_allclose(Recalibration("beta", "mean", 0.7, -0.2, 0.7).apply(p),
                               Recalibration("platt", "mean", 0.7, -0.2).apply(p), rtol=1e-9)
    with pytest.raises(SpecError, match="a, c >= 0"):
        Recalibration("beta", "mean", a=1.0, c=-0.5)


# ------------------------------------------------------------------ monotone, AUC, ECE
@pytest.mark.parametrize("method", ["platt", "shift", "beta", "isotonic"])
def test_map_is_monotone_and_platt_keeps_the_auc(method):
    z, y = _miscalibrated(seed=2)
    p = _sig(z)
    cal = Recalibration.from_probabilities(y, p, method)
    grid = np.linspace(0, 1, 2001)
    assert np.all(np.diff(cal.apply(grid)) >= 0)
    if method != "isotonic":
        assert np.all(np.diff(cal.apply(np.linspace(0.01, 0.99, 999))) > 0)  # strictly
        assert auc(y, cal.apply(p)) == pytest.approx(auc(y, p), abs=1e-12)
    else:  # ties on flat stretches may move the AUC a little, never much
        assert auc(y, cal.apply(p)) == pytest.approx(auc(y, p), abs=5e-3)


@pytest.mark.parametrize("method", ["platt", "beta", "isotonic"])
def test_ece_drops_on_an_over_confident_predictor(method):
    rng = np.random.default_rng(5)
    z = rng.normal(0, 1.5, 60_000)
    y = (rng.random(len(z)) < _sig(z)).astype(int)
    p = _sig(3.0 * z + 1.0)  # over-confident and over-predicting
    fit, held = slice(0, 30_000), slice(30_000, None)
    cal = Recalibration.from_probabilities(y[fit], p[fit], method)
    before = ece(y[held], p[held])
    after = ece(y[held], cal.apply(p[held]))
    assert before > 0.1
    assert after < 0.02
    if method == "platt":
        assert cal.a == pytest.approx(1 / 3, abs=0.03)
        assert cal.b == pytest.approx(-1 / 3, abs=0.05)


# ------------------------------------------------------------------ persistence
@pytest.mark.parametrize("kind", ["platt-mean", "shift-mean", "beta-mean", "isotonic-mean",
                                  "platt-draws", "beta-draws"])
def test_to_dict_from_dict_round_trip(kind):
    method, on = kind.split("-")
    z, y = _miscalibrated(n=5000, seed=6)
    if on == "draws":
        cal = Recalibration.from_draws(y, z[None, :], method=method, fraction=0.1)
    else:
        cal = Recalibration.from_probabilities(y, _sig(z), method, fraction=0.1)
    d = json.loads(json.dumps(cal.to_dict()))
    back = Recalibration.from_dict(d)
    assert back == cal and back.info == cal.info and back.info["fraction"] == 0.1
    p = np.linspace(0.001, 0.999, 101)
    if on == "mean":
        np.testing.assert_array_equal(back.apply(p), cal.apply(p))
    else:
        np.testing.assert_array_equal(back.apply_eta(z[None, :50]), cal.apply_eta(z[None, :50]))


def test_from_dict_rejects_unknown_schema_and_fields():
    d = Recalibration("platt", "mean", 1.2, 0.1).to_dict()
    with pytest.raises(SpecError, match="schema"):
        Recalibration.from_dict({**d, "schema": 99})
    with pytest.raises(SpecError, match="field"):
        Recalibration.from_dict({**d, "slope": 1.0})
    with pytest.raises(SpecError):
        Recalibration.from_dict([1, 2])


# ------------------------------------------------------------------ errors
def test_bad_input_raises_clear_errors():
    p = np.array([0.1, 0.4, 0.7, 0.9])
    y = np.array([0, 0, 1, 1])
    with pytest.raises(DataError, match="0 or 1"):
        Recalibration.from_probabilities([0, 2, 1, 1], p)
    with pytest.raises(DataError, match="NaN"):
        Recalibration.from_probabilities(y, [0.1, np.nan, 0.7, 0.9])
    with pytest.raises(DataError, match="differ in length"):
        Recalibration.from_probabilities(y[:3], p)
    with pytest.raises(DataError, match="both classes"):
        Recalibration.from_probabilities([1, 1, 1, 1], p)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        Recalibration.from_probabilities(y, [0.1, 1.4, 0.7, 0.9])
    with pytest.raises(DataError, match="both classes"):
        fit_platt([0, 0, 0, 0], p)
    with pytest.raises(DataError, match="slope"):  # scores anti-correlated with labels
        Recalibration.from_probabilities(y, p[::-1])
    with pytest.raises(DataError, match="isotonic fit is one constant"):  # likewise
        Recalibration.from_probabilities(y, p[::-1], "isotonic")
    with pytest.raises(SpecError, match="method"):
        Recalibration.from_probabilities(y, p, "spline")
    with pytest.raises(SpecError, match="on="):
        Recalibration("isotonic", "draws")
    with pytest.raises(SpecError, match="slope a > 0"):
        Recalibration("platt", "mean", a=-1.0)
    with pytest.raises(SpecError, match="predict"):  # a per-draw map needs the draws
        Recalibration("platt", "draws", 1.1, 0.0).apply(p)
    with pytest.raises(DataError, match="NaN"):
        Recalibration("platt", "mean", 1.1, 0.0).apply([0.2, np.nan])


# ------------------------------------------------------------------ fresh negatives
def _interactions(seed=0, n_users=80, n_items=400, n_events=2400):
    rng = np.random.default_rng(seed)
    # popular items have low indices (as in Last.fm): a biased truncation would show
    i = np.minimum(rng.geometric(0.02, n_events) - 1, n_items - 1)
    u = rng.integers(0, n_users, n_events)
    return Interactions.from_arrays(u, i, item_vocab=Vocabulary(np.arange(n_items), "item"))


def test_heldout_negatives_follow_the_rule_and_never_hit_a_positive():
    x = _interactions()
    users = x.users.decode(np.arange(x.n_users))
    k = pd.Series(np.random.default_rng(1).integers(1, 4, len(users)), index=users)
    neg = heldout_negatives(x, k, "uniform:4", seed=3)
    got = neg.groupby("user").size().reindex(users, fill_value=0)
    np.testing.assert_array_equal(got.to_numpy(), 4 * k.to_numpy())
    assert neg.attrs["capped_users"] == 0
    assert not neg.duplicated().any()
    pos = set(zip(x.users.decode(x.user).tolist(), x.items.decode(x.item).tolist()))
    assert not pos & set(zip(neg["user"].tolist(), neg["item"].tolist()))
    # uniform over the non-positives: the mean item index is about half the catalogue,
    # not skewed to the low (popular) indices as a sorted truncation would be
    idx = x.items.encode(neg["item"].to_numpy())
    assert abs(idx.mean() - x.n_items / 2) < 0.06 * x.n_items
    # a popularity rule draws popular items
    negp = heldout_negatives(x, k, "popularity:4", seed=3)
    assert x.item_counts()[x.items.encode(negp["item"].to_numpy())].mean() > \
        2 * x.item_counts()[idx].mean()
    # seeded
    pd.testing.assert_frame_equal(neg, heldout_negatives(x, k, "uniform:4", seed=3))
    with pytest.raises(DataError, match="no positive"):
        heldout_negatives(x, pd.Series([1], index=["nobody"]), "uniform:4")
    # fractional counts were truncated (1.7 -> 1, 0.4 -> 0); a repeated user kept its last
    u0, u1 = users[0], users[1]
    for bad in (pd.Series([1.7], index=[u0]), pd.Series(["2"], index=[u0])):
        with pytest.raises(DataError, match="non-negative whole numbers"):
            heldout_negatives(x, bad, "uniform:4")
    twice = heldout_negatives(x, pd.Series([2, 3, 1], index=[u0, u0, u1]), "uniform:1")
    assert twice.groupby("user").size().to_dict() == {u0: 5, u1: 1}


def test_recalibration_carve_holds_out_training_positives_with_fresh_negatives():
    x = _interactions(seed=2)
    c = recalibration_carve(x, negatives="uniform:3", fraction=0.25, seed=1)
    pos = c.pairs[c.pairs["y"] == 1]
    neg = c.pairs[c.pairs["y"] == 0]
    assert c.fit.nnz + len(pos) <= x.nnz and len(pos) > 0.15 * x.nnz
    assert len(neg) == 3 * len(pos)
    fit_pairs = set(zip(c.fit.users.decode(c.fit.user).tolist(),
                        c.fit.items.decode(c.fit.item).tolist()))
    all_pos = set(zip(x.users.decode(x.user).tolist(), x.items.decode(x.item).tolist()))
    carved = set(zip(pos["user"].tolist(), pos["item"].tolist()))
    assert not carved & fit_pairs and carved <= all_pos
    assert not set(zip(neg["user"].tolist(), neg["item"].tolist())) & all_pos
    # every carve item is known to the model fitted on c.fit
    c.fit.items.encode(c.pairs["item"].to_numpy())
    assert c.negatives == "uniform:3"


# ------------------------------------------------------------------ with a model
def _planted(seed=0, n_users=60, n_items=50, k=2):
    rng = np.random.default_rng(seed)
    U = rng.normal(0, 1.2, (n_users, k))
    V = rng.normal(0, 1.2, (n_items, k))
    p = _sig(U @ V.T - 2.0)
    uu, ii = np.nonzero(rng.random(p.shape) < p)
    return Interactions.from_arrays(uu, ii)


@pytest.fixture(scope="module")
def fitted():
    x = _planted()
    c = recalibration_carve(x, negatives="uniform:2", fraction=0.2, seed=0)
    m = bayesmf.BayesMF(method="map", likelihood="bernoulli-logit", rank=2,
                        seed=0).fit(c.fit, negatives="uniform:2")
    return m, c


def test_fit_recalibration_on_a_model(fitted):
    m, c = fitted
    cal = fit_recalibration(m, c.pairs, negatives=c.negatives)
    assert cal.on == "draws" and cal.a > 0 and cal.info["negatives"] == "uniform:2"
    assert cal.info["log_loss_after"] <= cal.info["log_loss_before"] + 1e-12
    p = cal.predict(m, c.pairs)
    ps = cal.predict(m.posterior, c.pairs, draws=True)
    assert ps.shape == (m.posterior.n_samples, len(c.pairs))
    np.testing.assert_allclose(ps.mean(0), p, rtol=1e-12)
    raw = m.predict(c.pairs[["user", "item"]])["mean"].to_numpy()
    assert auc(c.pairs["y"], p) == pytest.approx(auc(c.pairs["y"], raw), abs=2e-3)
    # the identity map reproduces predict's mean (unknown ids included: fallback)
    odd = pd.DataFrame({"user": [c.fit.users.ids[0], -5], "item": [-7, c.fit.items.ids[0]]})
    both = pd.concat([c.pairs[["user", "item"]].head(20), odd], ignore_index=True)
    ident = Recalibration("platt", "draws", 1.0, 0.0)
    np.testing.assert_allclose(ident.predict(m, both), m.predict(both)["mean"].to_numpy(),
                               rtol=1e-9, atol=1e-12)
    # on="mean" maps agree with apply() on predict's mean
    calm = fit_recalibration(m, c.pairs, method="isotonic", on="mean")
    np.testing.assert_allclose(calm.predict(m, c.pairs), calm.apply(raw), rtol=1e-9)


def test_fit_recalibration_errors(fitted):
    m, c = fitted
    with pytest.raises(DataError, match="labels"):
        fit_recalibration(m, c.pairs[["user", "item"]])
    with pytest.raises(DataError, match="differ in length"):
        fit_recalibration(m, c.pairs, y=c.pairs["y"].to_numpy()[:-1])
    with pytest.raises(SpecError, match="on="):
        fit_recalibration(m, c.pairs, on="median")
    with pytest.raises(SpecError, match="BayesMF or a Posterior"):
        fit_recalibration(object(), c.pairs)
    # the model's own training positives are refused (unless allowed)
    own = pd.DataFrame({"user": c.fit.users.decode(c.fit.user[:40]),
                        "item": c.fit.items.decode(c.fit.item[:40])})
    mixed = pd.concat([c.pairs, own.assign(y=1)], ignore_index=True)
    with pytest.raises(DataError, match="40 of the .* training positives"):
        fit_recalibration(m, mixed)
    assert fit_recalibration(m, mixed, allow_seen=True).info["n"] == len(mixed)


LASTFM = Path("/work/shared/data/hetrec2011-lastfm-2k/user_artists.dat")


@pytest.mark.skipif(not LASTFM.exists(), reason="Last.fm 2K not available")
def test_lastfm_heldout_negatives_are_not_popularity_biased():
    from bayesmf.datasets import load_interactions_source

    ev = load_interactions_source(str(LASTFM))
    train, test = ev.fraction_split(0.2, seed=0)
    both = Interactions.from_arrays(
        np.concatenate([train.users.decode(train.user), test.users.decode(test.user)]),
        np.concatenate([train.items.decode(train.item), test.items.decode(test.item)]),
        user_vocab=train.users, item_vocab=train.items)
    tu = pd.Series(test.users.decode(test.user)).value_counts()
    neg = heldout_negatives(both, tu, "uniform:4", seed=1)
    assert len(neg) == 4 * test.nnz
    d = train.item_counts()
    assert d[train.items.encode(neg["item"].to_numpy())].mean() == pytest.approx(
        d.mean(), rel=0.1)
