"""Classification metrics against worked examples and brute-force formulas."""

import numpy as np
import pytest

from bayesmf.errors import DataError, SpecError
from bayesmf.evaluate.classification import (accuracy, auc, brier, ece, log_loss,
                                             multiclass_log_loss, ranked_probability_score,
                                             reliability)
from bayesmf.predictive import BernoulliMixture, CategoricalMixture


def _auc_pairs(y, s):
    pos, neg = s[y == 1], s[y == 0]
    d = pos[:, None] - neg[None, :]
    return ((d > 0) + 0.5 * (d == 0)).mean()


def test_auc_worked_example_with_ties():
    y = np.array([0, 0, 1, 1, 0, 1])
    s = np.array([0.1, 0.4, 0.4, 0.8, 0.4, 0.9])
    # positive 0.4: beats 0.1, ties two 0.4s -> 2; 0.8 and 0.9 beat all three -> 3 + 3
    assert auc(y, s) == pytest.approx(8 / 9)
    assert auc(y, -s) == pytest.approx(1 / 9)
    assert auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert auc([0, 0, 1], [0.1, 0.2, 0.3]) == pytest.approx(1.0)


def test_auc_against_pairwise_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(5):
        n = 200
        y = (rng.random(n) < 0.3).astype(int)
        s = np.round(rng.normal(y * 0.8, 1.0), 1)  # many ties
        assert auc(y, s) == pytest.approx(_auc_pairs(y, s), abs=1e-12)
    with pytest.raises(DataError):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(DataError):
        auc([0, 0], [0.1, 0.2])
    with pytest.raises(DataError):
        auc([0, 2], [0.1, 0.2])


def test_log_loss_and_brier_worked_examples():
    y, p = np.array([1, 0]), np.array([0.8, 0.3])
    assert log_loss(y, p) == pytest.approx(-(np.log(0.8) + np.log(0.7)) / 2)
    assert brier(y, p) == pytest.approx((0.04 + 0.09) / 2)
    # clipping keeps the certain-and-wrong forecast finite
    assert log_loss([1], [0.0]) == pytest.approx(-np.log(1e-15))
    assert log_loss([1], [1.0]) == pytest.approx(-np.log1p(-1e-15))
    rng = np.random.default_rng(1)
    y = (rng.random(50) < 0.5).astype(float)
    p = rng.uniform(0.01, 0.99, 50)
    ref = -np.mean([np.log(pi) if yi else np.log(1 - pi) for yi, pi in zip(y, p)])
    assert log_loss(y, p) == pytest.approx(ref)
    assert brier(y, p) == pytest.approx(np.mean([(pi - yi) ** 2 for yi, pi in zip(y, p)]))
    with pytest.raises(DataError):
        brier([1, 0], [1.2, 0.3])
    with pytest.raises(DataError):
        log_loss([1, 0], [0.5])
    with pytest.raises(DataError):
        log_loss([], [])


def test_brier_and_log_loss_match_the_bernoulli_mixture():
    rng = np.random.default_rng(2)
    p = rng.uniform(0, 1, (7, 40))
    y = (rng.random(40) < 0.4).astype(float)
    mix = BernoulliMixture(p)
    assert brier(y, mix.mean()) == pytest.approx(mix.crps(y).mean())
    assert log_loss(y, mix.mean()) == pytest.approx(-mix.logpdf(y).mean())


def test_reliability_and_ece_worked_example():
    p = np.array([0.05, 0.15, 0.12, 0.95, 0.91])
    y = np.array([0, 0, 1, 1, 1])
    r = reliability(y, p, bins=10)
    assert list(r.columns) == ["lower", "upper", "count", "mean_predicted",
                               "observed_frequency"]
    assert r["count"].tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert r["mean_predicted"][1] == pytest.approx(0.135)
    assert r["observed_frequency"][1] == pytest.approx(0.5)
    assert np.isnan(r["mean_predicted"][4])
    # (1 * .05 + 2 * .365 + 2 * .07) / 5
    assert ece(y, p, bins=10) == pytest.approx(0.184)
    # p = 1 falls in the last bin; a perfectly calibrated constant forecast has ECE 0
    assert reliability([1], [1.0], bins=4)["count"].tolist() == [0, 0, 0, 1]
    assert ece([0, 1, 0, 1], [0.5] * 4) == pytest.approx(0.0)
    with pytest.raises(SpecError):
        ece([0, 1], [0.2, 0.3], bins=0)


def test_ece_against_brute_force():
    rng = np.random.default_rng(3)
    p = rng.random(500)
    y = (rng.random(500) < p ** 2).astype(int)
    B = 7
    ref = 0.0
    for b in range(B):
        lo, hi = b / B, (b + 1) / B
        k = (p >= lo) & ((p < hi) if b < B - 1 else (p <= hi))
        if k.any():
            ref += k.sum() / len(p) * abs(y[k].mean() - p[k].mean())
    assert ece(y, p, bins=B) == pytest.approx(ref)


def test_multiclass_log_loss_rps_and_accuracy():
    P = np.array([[0.7, 0.2, 0.1], [0.2, 0.3, 0.5]])
    y = np.array([0, 2])
    assert multiclass_log_loss(y, P) == pytest.approx(-(np.log(0.7) + np.log(0.5)) / 2)
    # RPS: row 0 F = [.7 .9], 1[y<=j] = [1 1] -> .09 + .01; row 1 F = [.2 .5], [0 0] -> .04 + .25
    assert ranked_probability_score(y, P) == pytest.approx((0.10 + 0.29) / 2)
    assert ranked_probability_score(y, P, levels=[1, 2, 4]) == pytest.approx(
        ((0.09 * 1 + 0.01 * 2) + (0.04 * 1 + 0.25 * 2)) / 2)
    assert accuracy(y, P) == pytest.approx(1.0)
    assert accuracy([1, 0, 1, 1], [0.9, 0.2, 0.4, 0.5]) == pytest.approx(0.5)
    assert accuracy([1, 0], [0.6, 0.6], threshold=0.7) == pytest.approx(0.5)
    with pytest.raises(DataError):
        multiclass_log_loss([3], [[0.5, 0.5]])
    with pytest.raises(SpecError):
        ranked_probability_score([0], [[0.5, 0.5]], levels=[2, 1])


def test_rps_against_brute_force_and_the_categorical_mixture():
    rng = np.random.default_rng(4)
    levels = np.arange(1, 11) * 0.5
    P = rng.dirichlet(np.ones(10), (3, 30))
    y = rng.integers(0, 10, 30)
    mix = CategoricalMixture(P, levels)
    Pbar = mix.pmf()
    ref = 0.0
    for n in range(30):
        F = np.cumsum(Pbar[n])
        ref += sum((F[j] - (y[n] <= j)) ** 2 * (levels[j + 1] - levels[j]) for j in range(9))
    ref /= 30
    assert ranked_probability_score(y, Pbar, levels) == pytest.approx(ref)
    assert mix.crps(levels[y]).mean() == pytest.approx(ref)
    assert multiclass_log_loss(y, Pbar) == pytest.approx(-mix.logpdf(levels[y]).mean())
    assert accuracy(y, Pbar) == pytest.approx(np.mean(mix.mode() == levels[y]))
