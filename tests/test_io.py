"""Save/load of fitted models (bayesmf.io): round trips and broken files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _synthetic_posterior import make_posterior, synthetic_data
from bayesmf import io
from bayesmf.errors import ModelFileError
from bayesmf.estimator import BayesMF, load
from bayesmf.recommend import recommend


@pytest.fixture(scope="module", params=[False, True], ids=["int-ids", "str-ids"])
def post(request):
    r, t = synthetic_data(str_ids=request.param, seed=5)
    return make_posterior(r, t, chains=2, draws=15, hyper=True, method="gibbs")


@pytest.fixture(scope="module")
def saved(post, tmp_path_factory):
    path = tmp_path_factory.mktemp("io") / "model.nc"
    io.save(post, path)
    return path


def _pairs(p):
    rng = np.random.default_rng(0)
    u = p.users.ids[rng.integers(0, len(p.users), 40)]
    i = p.items.ids[rng.integers(0, len(p.items), 40)]
    return u, i


def test_round_trip_identical_draws_and_metadata(post, saved):
    back = io.load(saved)
    assert back.method == post.method and back.spec == post.spec
    assert set(back.draws) == set(post.draws)
    for n, a in post.draws.items():
        np.testing.assert_array_equal(back.draws[n], a)
    np.testing.assert_array_equal(back.users.ids, post.users.ids)
    np.testing.assert_array_equal(back.items.ids, post.items.ids)
    assert back.train.scale == post.train.scale
    np.testing.assert_array_equal(back.train.seen_indices, post.train.seen_indices)
    np.testing.assert_array_equal(back.sample_stats["diverging"],
                                  post.sample_stats["diverging"])
    assert back.attrs["seed"] == post.attrs["seed"]


def test_round_trip_identical_predictions_and_recommendations(post, saved):
    back = io.load(saved)
    u, i = _pairs(post)
    a, b = post.predict(u, i), back.predict(u, i)
    for f in ("mean", "std", "std_param", "lower", "upper"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))
    # unknown ids use population moments: also identical
    a2 = post.predict(np.array([post.users.ids[0]]), np.array([999999]))
    b2 = back.predict(np.array([post.users.ids[0]]), np.array([999999]))
    np.testing.assert_array_equal(a2.mean, b2.mean)
    users = post.users.ids[:6]
    for strategy in ("mean", "upper", "thompson"):
        ra = recommend(post, users, n=5, strategy=strategy, seed=3)
        rb = recommend(back, users, n=5, strategy=strategy, seed=3)
        pd.testing.assert_frame_equal(ra, rb)


def test_estimator_save_and_load(post, tmp_path):
    est = BayesMF.from_posterior(post)
    path = tmp_path / "est.nc"
    est.save(path)
    est2 = load(path)
    u, i = _pairs(post)
    pairs = pd.DataFrame({"user": u, "item": i})
    pd.testing.assert_frame_equal(est.predict(pairs), est2.predict(pairs))
    pd.testing.assert_frame_equal(est.recommend(post.users.ids[:3], n=4),
                                  est2.recommend(post.users.ids[:3], n=4))


def _rewrite(src, dst, fn):
    import xarray as xr

    with xr.open_dataset(src, engine="h5netcdf") as ds:
        ds = fn(ds.load())
    ds.to_netcdf(dst, engine="h5netcdf")


def test_unknown_schema_version_is_rejected_clearly(saved, tmp_path):
    bad = tmp_path / "future.nc"

    def bump(ds):
        ds.attrs["bayesmf_schema"] = io.SCHEMA_VERSION + 41
        return ds

    _rewrite(saved, bad, bump)
    with pytest.raises(ModelFileError, match=f"schema version {io.SCHEMA_VERSION + 41}") as e:
        io.load(bad)
    assert f"reads versions {list(io.READABLE_SCHEMAS)}" in str(e.value)


def test_not_a_model_file(saved, tmp_path):
    other = tmp_path / "other.nc"

    def strip(ds):
        ds.attrs.pop("bayesmf_schema")
        return ds

    _rewrite(saved, other, strip)
    with pytest.raises(ModelFileError, match="not a bayesmf model file"):
        io.load(other)


def test_missing_variable_is_inconsistent(saved, tmp_path):
    bad = tmp_path / "nobias.nc"
    _rewrite(saved, bad, lambda ds: ds.drop_vars("bu"))
    with pytest.raises(ModelFileError, match="inconsistent"):
        io.load(bad)


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_truncated_file(saved, tmp_path, keep):
    raw = saved.read_bytes()
    bad = tmp_path / "truncated.nc"
    bad.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(ModelFileError, match="corrupted or truncated|inconsistent"):
        io.load(bad)


def test_corrupted_and_missing_files(tmp_path):
    junk = tmp_path / "junk.nc"
    junk.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match="corrupted or truncated"):
        io.load(junk)
    empty = tmp_path / "empty.nc"
    empty.write_bytes(b"")
    with pytest.raises(ModelFileError):
        io.load(empty)
    with pytest.raises(ModelFileError, match="not found"):
        io.load(tmp_path / "nope.nc")
    # ModelFileError is also a ValueError for callers catching builtins
    with pytest.raises(ValueError):
        load(tmp_path / "nope.nc")


def test_corrupted_header_bytes(saved, tmp_path):
    raw = bytearray(saved.read_bytes())
    raw[:8] = b"\x00" * 8  # destroy the HDF5 signature
    bad = tmp_path / "badsig.nc"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ModelFileError, match="corrupted or truncated"):
        io.load(bad)


def test_schema_v1_files_still_load(saved, tmp_path):
    """A file written by the Gaussian-only bayesmf (schema 1: likelihood as the string
    "gaussian", no factor prior, fixed-value priors) loads as the same Gaussian model."""
    import json

    old = tmp_path / "v1.nc"

    def to_v1(ds):
        spec = json.loads(ds.attrs["spec"])
        spec["likelihood"] = "gaussian"
        spec.pop("prior", None)
        spec["priors"].update(w0=1.0, bias_b=1.0, noise_b=1.0)
        ds.attrs["spec"] = json.dumps(spec)
        ds.attrs["bayesmf_schema"] = 1
        return ds

    _rewrite(saved, old, to_v1)
    back = io.load(old)
    orig = io.load(saved)
    assert back.likelihood.name == "gaussian" and back.spec.prior.name == "normal-wishart"
    u, i = orig.users.ids[:5], orig.items.ids[:5]
    np.testing.assert_allclose(back.predict(u, i).mean, orig.predict(u, i).mean)
