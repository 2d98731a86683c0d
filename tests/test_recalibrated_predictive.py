"""A recalibrated P(relevant) carried by the model: ``BernoulliLogit(recalibration=...)``
maps every posterior draw's logit inside the predictive, ``BayesMF.recalibrate`` fits the
map on a carve of the training positives and attaches it, and predict / recommend / the
model file use it; the ``prob`` strategy ranks by the likelihood's own relevance
threshold (P(y = 1) for 0/1 data)."""

from __future__ import annotations

import numpy as np
import pytest

import bayesmf
from bayesmf.data import Interactions
from bayesmf.errors import DataError, SpecError
from bayesmf.evaluate import Recalibration
from bayesmf.model.likelihoods import get_likelihood, likelihood_from_dict
from bayesmf.model.likelihoods.bernoulli import BernoulliLogit
from bayesmf.scoring.strategies import make_strategy


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("rec", [("beta", 2.3, -0.4, 1.7), ("platt", 1.4, 0.1, 1.0),
                                 ("shift", 1.0, -0.3, 1.0)])
def test_recalibrated_predictive_maps_every_draw_and_nothing_else(rec):
    rng = np.random.default_rng(0)
    m = rng.normal(0, 2, (7, 5))
    v = np.abs(rng.normal(0, 1, (7, 5))) * (rng.random((7, 5)) < 0.5)
    lik = BernoulliLogit(recalibration=rec)
    z = m / np.sqrt(1 + np.pi * v / 8)
    method, a, b, c = rec
    t = a * np.log(_sig(z)) - c * np.log(1 - _sig(z)) + b if method == "beta" else a * z + b
    mix = lik.predictive(m, v, {})
    np.testing.assert_allclose(mix.p, _sig(t), rtol=1e-12)
    # the same numbers as the evaluation-side map
    np.testing.assert_allclose(mix.p, Recalibration(method, "draws", a, b, c).apply_eta(
        m, v, draws=True), rtol=1e-12)
    # the data's likelihood is the logit's: log_prob and the augmentation do not change
    y = (rng.random((7, 5)) < 0.5).astype(float)
    np.testing.assert_array_equal(np.asarray(lik.log_prob(y, m, {})),
                                  np.asarray(BernoulliLogit().log_prob(y, m, {})))
    # saved and rebuilt exactly; a plain logit's record has no such key
    assert likelihood_from_dict(lik.to_dict()) == lik
    assert "recalibration" not in BernoulliLogit().to_dict()
    assert rec[0] in lik.describe()


def test_identity_map_is_the_raw_predictive_and_bad_maps_are_refused():
    rng = np.random.default_rng(1)
    m, v = rng.normal(0, 2, (4, 6)), np.zeros((4, 6))
    np.testing.assert_allclose(
        BernoulliLogit(recalibration=("platt", 1.0, 0.0, 1.0)).predictive(m, v, {}).p,
        get_likelihood("bernoulli-logit").predictive(m, v, {}).p, rtol=1e-12)
    for bad, msg in [(("isotonic", 1, 0, 1), "one of"), (("platt", -1.0, 0, 1), "a > 0"),
                     (("beta", -1.0, 0, 1.0), "a, c >= 0"), (("platt", 1.0, np.nan, 1), "finite"),
                     (("beta", 1.0), "(method, a, b, c)"), (("shift", 2.0, 0, 1), "a = 1")]:
        with pytest.raises(SpecError, match=msg.replace("(", r"\(").replace(")", r"\)")):
            BernoulliLogit(recalibration=bad)
    with pytest.raises(SpecError, match="for prediction only"):
        BernoulliLogit(recalibration=("shift", 1.0, 0.2, 1.0)).fit_data(np.array([0.0, 1.0]))


@pytest.fixture(scope="module")
def fitted():
    """A Bernoulli-logit Gibbs fit on a planted event log with uniform negatives."""
    rng = np.random.default_rng(0)
    N, M = 90, 60
    U, V = rng.normal(size=(N, 2)), rng.normal(size=(M, 2))
    uu, ii = np.nonzero(rng.random((N, M)) < _sig(1.5 * U @ V.T - 2.0))
    data = Interactions.from_arrays(uu, ii)
    model = bayesmf.BayesMF(method="gibbs", likelihood="bernoulli-logit", rank=2,
                            num_samples=30, num_warmup=30, seed=0).fit(
        data, negatives="uniform:2")
    return data, model, model.posterior


def test_recalibrate_attaches_the_carve_map_to_every_prediction(fitted, tmp_path):
    data, model, raw = fitted
    users = np.repeat(np.arange(6), 5)
    items = np.tile([1, 7, 13, 29, 44], 6)
    before = raw.predict(users, items).mean
    model.recalibrate(data, method="beta", fraction=0.2)
    rec, post = model.recalibration_, model.posterior
    assert post is not raw and post.likelihood.recalibration == (rec.method, rec.a, rec.b,
                                                                 rec.c)
    assert rec.info["fraction"] == 0.2 and rec.info["negatives"] == "uniform:2"
    assert post.attrs["recalibration"]["a"] == rec.a
    # predict's mean is the map applied to the raw model's draws; the raw model is kept
    after = post.predict(users, items).mean
    np.testing.assert_allclose(after, rec.predict(raw, (users, items)), rtol=1e-10)
    assert np.max(np.abs(after - before)) > 1e-3
    np.testing.assert_array_equal(post.with_likelihood("bernoulli-logit").predict(
        users, items).mean, before)
    for u in post.draws:
        assert post.draws[u] is raw.draws[u]  # the draws are shared, not refitted
    # recommend: 'prob' is P(y = 1) under the map, the same numbers as predict
    top = model.recommend([0, 1, 2], n=5, strategy="prob")
    p = post.predict(top["user"].to_numpy(), top["item"].to_numpy()).mean
    np.testing.assert_allclose(top["score"], p, rtol=1e-6)
    np.testing.assert_allclose(top["mean"], p, rtol=1e-6)
    # the model file keeps it
    model.save(tmp_path / "m.nc")
    back = bayesmf.load(tmp_path / "m.nc")
    assert back.posterior.likelihood == post.likelihood
    np.testing.assert_allclose(back.predict((users, items))["mean"], after, rtol=1e-5)
    # a second call maps the raw logits again (it replaces the map, never composes)
    model.recalibrate(data, method="platt", fraction=0.2)
    assert model.posterior.likelihood.recalibration[0] == "platt"
    np.testing.assert_allclose(model.posterior.predict(users, items).mean,
                               model.recalibration_.predict(raw, (users, items)), rtol=1e-10)
    # refitting a recalibrated likelihood is refused in one line
    with pytest.raises(SpecError, match="for prediction only"):
        bayesmf.BayesMF(method="map", likelihood=post.likelihood, rank=2).fit(
            data, negatives="uniform:2")


def test_maps_fitted_on_a_recalibrated_posterior(fitted):
    """on='draws' maps the raw logits whatever map the posterior carries; on='mean' maps
    the carried (recalibrated) predictive mean, so it composes with it."""
    from bayesmf.evaluate import fit_recalibration

    _, _, raw = fitted
    carried = Recalibration("platt", "draws", a=0.6, b=0.3).attach(raw)
    rng = np.random.default_rng(3)
    users, items = rng.integers(0, 90, 400), rng.integers(0, 60, 400)
    y = (rng.random(400) < raw.predict(users, items).mean ** 1.5).astype(float)
    kw = dict(method="platt", allow_seen=True)
    d_raw = fit_recalibration(raw, (users, items), y, on="draws", **kw)
    d_car = fit_recalibration(carried, (users, items), y, on="draws", **kw)
    np.testing.assert_allclose([d_car.a, d_car.b], [d_raw.a, d_raw.b], rtol=1e-8)
    m_raw = fit_recalibration(raw, (users, items), y, on="mean", **kw)
    m_car = fit_recalibration(carried, (users, items), y, on="mean", **kw)
    assert abs(m_car.a - m_raw.a) > 1e-3
    np.testing.assert_allclose(m_car.predict(carried, (users, items)),
                               m_car.apply(carried.predict(users, items).mean), rtol=1e-10)


def test_recalibrate_refusals(fitted):
    data, model, raw = fitted
    with pytest.raises(DataError, match="the interactions the model was fitted on"):
        model.recalibrate(Interactions.from_arrays(np.array([0, 1]), np.array([0, 1])))
    with pytest.raises(SpecError, match=r"one of \['platt', 'shift', 'beta'\]"):
        model.recalibrate(data, method="isotonic")
    with pytest.raises(SpecError, match="fraction"):
        model.recalibrate(data, fraction=1.5)
    gauss = bayesmf.BayesMF(method="map", rank=2).fit(
        bayesmf.as_ratings(raw.predict(np.arange(5), np.arange(5)).to_frame()
                           .assign(rating=np.arange(5.0))[["user", "item", "rating"]]))
    with pytest.raises(SpecError, match="needs a bernoulli-logit model"):
        gauss.recalibrate(data)
    with pytest.raises(SpecError, match="on='draws'"):
        Recalibration("isotonic", "mean", x=(0.1, 0.9), y=(0.0, 1.0)).attach(raw)
    with pytest.raises(SpecError, match="keeps the family"):
        raw.with_likelihood("bernoulli-probit")


def test_prob_strategy_uses_the_likelihoods_relevance_threshold(fitted):
    _, _, raw = fitted
    from bayesmf.recommend import recommend

    assert get_likelihood("bernoulli-logit").relevance_threshold == 1.0
    assert get_likelihood("gaussian").relevance_threshold == 4.0
    assert get_likelihood("poisson").relevance_threshold == 1.0
    prob = recommend(raw, [0, 3], n=6, strategy="prob")
    mean = recommend(raw, [0, 3], n=6, strategy="mean")
    np.testing.assert_array_equal(prob["item"], mean["item"])
    np.testing.assert_allclose(prob["score"], mean["score"], rtol=1e-6)
    # an explicit threshold still wins inside (0, 1]; P(y >= 2) of 0/1 data is 0 for every
    # item (a ranking by item order), so it is refused
    half = recommend(raw, [0, 3], n=6, strategy="prob", threshold=0.5)
    np.testing.assert_allclose(half["score"], prob["score"], rtol=1e-6)
    with pytest.raises(SpecError, match="same for every pair"):
        recommend(raw, [0], n=3, strategy="prob", threshold=2.0)
    assert make_strategy("prob").threshold is None
    for bad in (np.nan, np.inf, "4", True):
        with pytest.raises(SpecError, match="finite threshold"):
            make_strategy("prob", threshold=bad)
