r"""Calibration of the posterior predictive: PIT values, coverage curves, plot data.

The probability integral transform of a held-out rating :math:`y` is
:math:`\mathrm{PIT}=F(y)` under the posterior predictive mixture
(:class:`~bayesmf.predictive.Mixture`; Gaussian: :math:`\frac1S\sum_s\Phi((y-m_s)/sd_s)`,
see :mod:`bayesmf.evaluate.rating`). For a calibrated continuous predictive the PIT values
are uniform, and the central level-:math:`\ell` interval covers a fraction :math:`\ell` of
ratings (``|PIT - 1/2| <= l/2``). Ratings on a discrete scale (1..5 stars) make the PIT
histogram lumpy even for a good model; compare coverage curves between models rather than
with the diagonal alone.

For a discrete predictive (Bernoulli, ordinal) the PIT is the **mid-PIT**
:math:`F(y^-)+\tfrac12p(y)` by default; ``randomized=True`` uses the randomized PIT
:math:`F(y^-)+V\,p(y)`, :math:`V\sim U(0,1)` (seeded), which is exactly uniform for a
calibrated discrete forecast (Czado, Gneiting & Held 2009), so its histogram and coverage
curve can be read against the diagonal.

Functions return plain arrays / DataFrames (data for plots); :func:`plot_pit` and
:func:`plot_coverage` draw them with matplotlib, imported only when called.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from bayesmf.errors import SpecError
from bayesmf.evaluate.rating import coverage_from_pit, predictive_mixture

__all__ = ["pit_values", "coverage_curve", "pit_histogram", "calibration", "plot_pit",
           "plot_coverage", "DEFAULT_LEVELS"]

DEFAULT_LEVELS = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))


def pit_values(posterior, test, chunk_pairs: int | None = None, randomized: bool = False,
               seed: int = 0) -> np.ndarray:
    """PIT :math:`F(y)` of every held-out rating under the posterior predictive mixture
    (discrete predictives: mid-PIT, or the randomized PIT with ``randomized=True``,
    drawn from ``default_rng(seed)``; continuous ones ignore both)."""
    u, i, ku, ki, y = posterior._test_arrays(test)
    y = np.asarray(y, np.float64)
    out = np.empty(len(y))
    rng = np.random.default_rng(seed) if randomized else None
    step = chunk_pairs or max(1, (1 << 20) // max(posterior.n_samples, 1))
    for a in range(0, len(y), step):
        sl = slice(a, min(len(y), a + step))
        mix = predictive_mixture(posterior, u[sl], i[sl], ku[sl], ki[sl])
        out[sl] = mix.pit(y[sl], rng=rng)
    return out


def coverage_curve(pit, levels=DEFAULT_LEVELS) -> pd.DataFrame:
    """Nominal ``level`` vs empirical ``coverage`` of central intervals (from PIT)."""
    pit = np.asarray(pit, np.float64)
    lv = np.asarray(levels, np.float64)
    if np.any((lv <= 0) | (lv >= 1)):
        raise SpecError("levels must lie in (0, 1)")
    cov = np.array([coverage_from_pit(pit, l) for l in lv])
    return pd.DataFrame({"level": lv, "coverage": cov, "gap": cov - lv})


def pit_histogram(pit, bins: int = 10) -> pd.DataFrame:
    """PIT histogram as densities (1.0 everywhere = uniform = calibrated)."""
    pit = np.asarray(pit, np.float64)
    if int(bins) < 1:
        raise SpecError("bins must be >= 1")
    counts, edges = np.histogram(np.clip(pit, 0, 1), bins=int(bins), range=(0.0, 1.0))
    dens = counts / max(len(pit), 1) * int(bins)
    return pd.DataFrame({"lower": edges[:-1], "upper": edges[1:], "count": counts,
                         "density": dens})


def calibration(posterior, test, levels=DEFAULT_LEVELS, bins: int = 10,
                randomized: bool = False, seed: int = 0) -> dict:
    """PIT values, coverage curve and histogram in one call (``dict`` of arrays/frames),
    plus ``calibration_error``: mean absolute gap between nominal and empirical coverage
    (the ``calibration_error`` of :func:`bayesmf.evaluate.evaluate`; not the ``ece`` it
    reports for 0/1 data, the binned gap of predicted probabilities).
    ``randomized``/``seed``: see :func:`pit_values` (discrete predictives)."""
    pit = pit_values(posterior, test, randomized=randomized, seed=seed)
    curve = coverage_curve(pit, levels)
    return {"pit": pit, "coverage": curve, "histogram": pit_histogram(pit, bins),
            "calibration_error": float(np.abs(curve["gap"]).mean())}


def _ax(ax):
    if ax is None:
        import matplotlib.pyplot as plt  # lazy: matplotlib is an optional dependency

        _, ax = plt.subplots(figsize=(4, 3))
    return ax


def plot_pit(pit, bins: int = 10, ax=None):
    """Bar chart of the PIT histogram with the uniform reference line."""
    ax = _ax(ax)
    h = pit_histogram(pit, bins)
    ax.bar(h["lower"], h["density"], width=h["upper"] - h["lower"], align="edge",
           edgecolor="white")
    ax.axhline(1.0, color="k", lw=1, ls="--")
    ax.set_xlabel("PIT")
    ax.set_ylabel("density")
    return ax


def plot_coverage(curve, ax=None, label=None):
    """Empirical vs nominal coverage (a :func:`coverage_curve` frame or PIT values)."""
    if not isinstance(curve, pd.DataFrame):
        curve = coverage_curve(curve)
    ax = _ax(ax)
    ax.plot([0, 1], [0, 1], color="k", lw=1, ls="--")
    ax.plot(curve["level"], curve["coverage"], marker="o", ms=3, label=label)
    ax.set_xlabel("nominal coverage")
    ax.set_ylabel("empirical coverage")
    return ax
