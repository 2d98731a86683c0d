"""The synthetic ML-10M-shaped generator of the GPU check (benchmarks/_synth_ml10m.py)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _synth_ml10m import ML10M_ITEMS, ML10M_USERS, synthetic_ml10m  # noqa: E402

N = 100_000


@pytest.fixture(scope="module")
def data():
    return synthetic_ml10m(3, N)


def test_shape_and_distinct_pairs(data):
    f = np.sqrt(N / 1e7)  # sqrt scaling keeps ML-10M's density
    assert data["n_users"] == round(ML10M_USERS * f) == 6988
    assert data["n_items"] == round(ML10M_ITEMS * f) == 1068
    u, i, r = data["user"], data["item"], data["rating"]
    assert len(u) == len(i) == len(r) == N
    keys = u.astype(np.int64) * data["n_items"] + i
    assert np.unique(keys).size == N
    # every user and item observed
    assert np.bincount(u, minlength=data["n_users"]).min() >= 1
    assert np.bincount(i, minlength=data["n_items"]).min() >= 1


def test_degrees_heavy_tailed(data):
    du = np.bincount(data["user"])
    di = np.bincount(data["item"])
    # mean well above median and max far above mean (ML-10M: users 2.1x, items 6.9x)
    assert du.mean() > 1.4 * np.median(du) and du.max() > 8 * du.mean()
    assert di.mean() > 2.5 * np.median(di) and di.max() > 15 * di.mean()


def test_planted_structure(data):
    t = data["truth"]
    u, i = data["user"], data["item"]
    m = t["mu"] + t["bu"][u] + t["bi"][i] + np.sum(t["U"][u] * t["V"][i], 1)
    np.testing.assert_allclose(t["mean"], m, rtol=1e-5, atol=1e-5)
    resid = data["rating"] - t["mean"]
    assert abs(resid.std() - t["noise_std"]) < 0.01  # sd of 1e5 normals: +-0.002
    assert abs(resid.mean()) < 0.01
    assert t["U"].shape == (data["n_users"], 32)
    # interaction variance s^4 = 0.8^4
    assert abs(np.var(np.sum(t["U"][u] * t["V"][i], 1)) - 0.8 ** 4) < 0.05


def test_deterministic_in_seed(data):
    again = synthetic_ml10m(3, N)
    other = synthetic_ml10m(4, N)
    for k in ("user", "item", "rating"):
        np.testing.assert_array_equal(data[k], again[k])
    assert not np.array_equal(data["rating"], other["rating"])


def test_rejects_too_few_ratings():
    with pytest.raises(ValueError, match="at least n_users"):
        synthetic_ml10m(0, 100, n_users=80, n_items=30)
