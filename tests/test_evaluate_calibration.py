"""Calibration data: PIT values, coverage curves, histograms, plots."""

import numpy as np
import pytest
from scipy import stats

from _uq_synth import heldout, make_posterior
from bayesmf.errors import SpecError
from bayesmf.evaluate import calibration, coverage_curve, pit_histogram, pit_values


def test_coverage_curve_and_histogram_of_uniform_pit():
    pit = (np.arange(1000) + 0.5) / 1000  # perfectly uniform
    cur = coverage_curve(pit, [0.1, 0.5, 0.9])
    assert cur["coverage"].to_numpy() == pytest.approx([0.1, 0.5, 0.9], abs=1e-3)
    h = pit_histogram(pit, bins=4)
    assert h["count"].tolist() == [250] * 4 and h["density"].to_numpy() == pytest.approx(1.0)
    # an overconfident forecast: PIT piles up at the ends, coverage below nominal
    over = np.concatenate([np.full(500, 0.01), np.full(500, 0.99)])
    assert coverage_curve(over, [0.9])["coverage"][0] == 0.0
    with pytest.raises(SpecError):
        coverage_curve(pit, [1.0])
    with pytest.raises(SpecError):
        pit_histogram(pit, 0)


def test_pit_values_match_mixture_cdf():
    post, ratings = make_posterior(n_users=15, n_items=20, k=2, draws=4, seed=1)
    test = heldout(post, ratings, seed=2)
    pit = pit_values(post, test, chunk_pairs=7)
    m, sd = post.predictive_components(test.user, test.item)
    ref = stats.norm.cdf(test.rating, m, sd).mean(0)
    assert pit == pytest.approx(ref)
    cal = calibration(post, test, levels=[0.5, 0.9], bins=5)
    assert cal["calibration_error"] == pytest.approx(np.abs(cal["coverage"]["gap"]).mean())
    assert "ece" not in cal  # evaluate's ece is another quantity (0/1 data)


def test_plots_draw_with_agg():
    mpl = pytest.importorskip("matplotlib")
    mpl.use("Agg")
    from bayesmf.evaluate.calibration import plot_coverage, plot_pit

    pit = np.random.default_rng(0).random(200)
    ax = plot_pit(pit, bins=5)
    assert len(ax.patches) == 5
    ax2 = plot_coverage(pit)
    assert len(ax2.lines) == 2
