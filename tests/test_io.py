"""Save/load of fitted models (bayesmf.io): round trips and broken files."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from _synthetic_posterior import make_posterior, synthetic_data
from bayesmf import io
from bayesmf.data.ratings import Ratings
from bayesmf.errors import ModelFileError, SpecError
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


def test_loaded_estimator_keeps_its_settings_and_refits_like_the_original(tmp_path):
    """``load`` returns the estimator as it was constructed (``priors=None``: scaled to
    the data), so a refit on new data on another scale resolves its priors again, as a
    fresh estimator does (it used to keep the first data's resolved priors); a model file
    without that record (or with a setting not stored) takes the fitted spec's values."""
    from bayesmf.testing.conformance import planted

    df = planted("gaussian")
    kw = dict(method="map", rank=2, max_iter=20)
    BayesMF(**kw).fit(df).save(tmp_path / "m.nc")
    est = load(tmp_path / "m.nc")
    assert est.get_params()["priors"] is None and est.reg_factors is None
    assert est.likelihood == "gaussian" and est.options["max_iter"] == 20
    df20 = Ratings.from_indices(df.user, df.item, np.asarray(df.rating) * 20.0, df.users,
                                df.items)
    est.fit(df20)
    fresh = BayesMF(**kw).fit(df20)
    assert est.posterior_.spec.priors == fresh.posterior_.spec.priors
    assert est.posterior_.spec.priors.w0 < 0.5 * load(tmp_path / "m.nc").posterior_.spec.priors.w0
    # no record (an older file): the fitted spec's resolved settings
    post = load(tmp_path / "m.nc").posterior_
    post.attrs.pop("estimator")
    old = BayesMF.from_posterior(post)
    assert old.priors == post.spec.priors and old.reg_factors == post.spec.reg_factors
    # data in the settings (features) is named in the record, not stored as text
    from bayesmf.estimator import _jsonable_params

    rec = _jsonable_params({"rank": 2, "user_features": pd.DataFrame({"a": [1]})})
    assert rec == {"rank": 2, "_not_stored": ["user_features"]}


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


# ----------------------------------------------------------------------------- draws kept
def _float32(post):
    """The posterior with float32 draws (what every sampler returns)."""
    from bayesmf.posterior import Posterior

    d = {n: np.asarray(a, np.float32) for n, a in post.draws.items()}
    return Posterior(d, post.spec, post.users, post.items, post.train, post.method,
                     post.sample_stats, None, post.attrs)


@pytest.fixture(scope="module")
def long_post():
    r, t = synthetic_data(seed=7)
    return _float32(make_posterior(r, t, chains=2, draws=150, hyper=True, method="gibbs"))


def test_default_keeps_evenly_spaced_draws_and_predicts_identically(long_post, tmp_path):
    path = io.save(long_post, tmp_path / "m.nc")
    back = io.load(path)
    per_chain = io.DEFAULT_DRAWS // 2
    assert (back.n_chains, back.n_draws) == (2, per_chain)
    saved = back.attrs["saved"]
    want = np.linspace(0, 149, per_chain).round().astype(int)
    np.testing.assert_array_equal(saved["draw_index"], want)
    assert saved["from_draws"] == 150 and saved["mode"] == "draws"
    kept = long_post.select(draws=want)
    for n, a in kept.draws.items():
        np.testing.assert_array_equal(back.draws[n], a)
    np.testing.assert_array_equal(back.sample_stats["diverging"],
                                  kept.sample_stats["diverging"])
    u, i = _pairs(long_post)
    a, b = kept.predict(u, i), back.predict(u, i)
    for f in ("mean", "std", "std_param", "lower", "upper"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f))  # bit for bit


def test_draws_none_thin_and_counts(long_post, tmp_path):
    p = tmp_path / "m.nc"
    assert io.load(io.save(long_post, p, draws=None)).n_draws == 150
    back = io.load(io.save(long_post, p, thin=7))  # thin alone keeps every thinned draw
    assert back.n_draws == len(range(0, 150, 7))
    np.testing.assert_array_equal(back.draws["U"], long_post.draws["U"][:, ::7])
    back = io.load(io.save(long_post, p, thin=3, draws=10))  # 5 per chain of draws[::3]
    np.testing.assert_array_equal(back.attrs["saved"]["draw_index"],
                                  np.arange(0, 150, 3)[[0, 12, 24, 37, 49]])
    back = io.load(io.save(long_post, p, draws=1))  # fewer than chains: last draw, chain 0
    assert (back.n_chains, back.n_draws) == (1, 1)
    np.testing.assert_array_equal(back.draws["V"][0, 0], long_post.draws["V"][0, -1])
    assert io.load(io.save(long_post, p, draws="all")).n_samples == 300


def test_compressed_float32_storage(long_post, tmp_path):
    import h5py

    plain = io.save(long_post, tmp_path / "plain.nc", draws=None, compression=0)
    packed = io.save(long_post, tmp_path / "packed.nc", draws=None)
    with h5py.File(packed) as f:
        assert f["V"].dtype == np.float32 and f["U"].dtype == np.float32
        assert f["V"].compression == "gzip" and f["V"].shuffle
    with h5py.File(plain) as f:
        assert f["V"].compression is None
    np.testing.assert_array_equal(io.load(packed).draws["V"], io.load(plain).draws["V"])
    # draws with few distinct values (low-entropy mantissas) shrink a lot
    coarse = _float32(long_post)
    for n in ("U", "V", "bu", "bi"):
        coarse.draws[n] = np.round(coarse.draws[n] * 8) / 8
    small = io.save(coarse, tmp_path / "coarse.nc", draws=None)
    big = io.save(coarse, tmp_path / "coarse0.nc", draws=None, compression=0)
    assert small.stat().st_size < 0.5 * big.stat().st_size
    with h5py.File(io.save(long_post, tmp_path / "f64.nc", dtype=np.float64)) as f:
        assert f["V"].dtype == np.float64


def test_files_with_draws_stay_schema_2_and_old_v2_files_load(post, tmp_path):
    """Files with draws are written as schema 2 (older bayesmf reads them); a file of the
    previous writer (no mode/saved attributes, uncompressed) still loads."""
    import h5py

    path = io.save(post, tmp_path / "m.nc")
    with h5py.File(path) as f:
        assert np.asarray(f.attrs["bayesmf_schema"]).item() == 2
    old = tmp_path / "old.nc"

    def strip_new(ds):
        for a in ("mode", "saved"):
            ds.attrs.pop(a)
        for v in ds.variables.values():
            v.encoding = {}
        return ds

    _rewrite(path, old, strip_new)
    back = io.load(old)
    assert "saved" not in back.attrs
    u, i = _pairs(post)
    np.testing.assert_array_equal(back.predict(u, i).mean, io.load(path).predict(u, i).mean)


# ----------------------------------------------------------------------------- summary
def _rows(p, R=None):
    """Per-draw [b, U R] and [b, V R] rows, (S, n, k+1)."""
    U, V = p.flat("U"), p.flat("V")
    if R is not None:
        U, V = U @ R, V @ R
    return (np.concatenate([p.flat("bu")[..., None], U], -1),
            np.concatenate([p.flat("bi")[..., None], V], -1))


def test_summary_rebuilds_draws_with_the_stored_moments(long_post, tmp_path):
    import xarray as xr

    path = io.save(long_post, tmp_path / "s.nc", mode="summary", draws=40)
    full = io.save(long_post, tmp_path / "f.nc", draws=None)
    assert path.stat().st_size < 0.5 * full.stat().st_size
    back = io.load(path)
    assert (back.n_chains, back.n_draws) == (1, 40)
    assert back.attrs["saved"]["mode"] == "summary"
    with xr.open_dataset(path, engine="h5netcdf") as ds:
        assert int(ds.attrs["bayesmf_schema"]) == io.SCHEMA_VERSION == 3
        m_u = ds["summary__user_mean"].values
        packed = ds["summary__user_cov"].values
    au, _ = _rows(back)  # rebuilt rows (already in the aligned frame)
    np.testing.assert_allclose(au.mean(0), m_u, atol=2e-5)
    k1 = au.shape[-1]
    r, c = np.tril_indices(k1)
    cov = np.einsum("snd,sne->nde", au - au.mean(0), au - au.mean(0)) / 39
    np.testing.assert_allclose(cov[:, r, c], packed, atol=2e-5)
    # the stored moments are those of the aligned real draws
    R = io._procrustes_rotations(long_post.flat("U"), long_post.flat("V"))
    real = np.concatenate([long_post.flat("bu")[..., None],
                           np.einsum("snk,skj->snj", long_post.flat("U"), R)], -1)
    np.testing.assert_allclose(m_u, real.mean(0), atol=1e-5)
    # the same draws on every load
    np.testing.assert_array_equal(io.load(path).draws["V"], back.draws["V"])


def test_summary_predicts_like_the_full_posterior(tmp_path):
    """Chains in rotated copies of the solution (identical predictions): without the
    Procrustes alignment the per-row means would average the rotations away."""
    r, t = synthetic_data(seed=3)
    post = _float32(make_posterior(r, t, chains=3, draws=60, noise=0.05, mode="rotated",
                                   method="gibbs"))
    back = io.load(io.save(post, tmp_path / "s.nc", mode="summary"))
    assert back.n_samples == io.DEFAULT_DRAWS
    u, i = _pairs(post)
    a, b = post.predict(u, i), back.predict(u, i)
    assert np.abs(a.mean - b.mean).max() < 0.05
    assert np.abs(a.std - b.std).max() < 0.02
    assert np.abs(a.upper - b.upper).max() < 0.06
    recs = recommend(back, post.users.ids[:3], n=5)  # everything downstream works
    assert len(recs) == 15


def test_procrustes_alignment_keeps_each_draws_predictions(long_post):
    U, V = long_post.flat("U"), long_post.flat("V")
    R = io._procrustes_rotations(U, V)
    np.testing.assert_allclose(np.einsum("sij,skj->sik", R, R), np.broadcast_to(
        np.eye(R.shape[-1]), R.shape), atol=1e-10)
    s = 17
    np.testing.assert_allclose((U[s] @ R[s]) @ (V[s] @ R[s]).T, U[s] @ V[s].T, atol=1e-5)


def test_summary_refuses_point_estimates_and_too_few_draws(long_post, tmp_path):
    one = long_post.select(chains=[0], draws=[0])
    with pytest.raises(SpecError, match="point estimate"):
        io.save(one, tmp_path / "s.nc", mode="summary")
    with pytest.raises(SpecError, match="rank \\+ 2"):
        io.save(long_post, tmp_path / "s.nc", mode="summary", draws=3)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, match", [
    (dict(mode="pickle"), "mode must be one of"), (dict(draws=0), "draws must be"),
    (dict(draws="some"), "draws must be"), (dict(thin=0), "thin must be"),
    (dict(thin=1.5), "thin must be"), (dict(compression=12), "gzip level"),
    (dict(dtype=np.int16), "float type"), (dict(dtype="no-such-type"), "float type")])
def test_bad_save_options(post, tmp_path, kw, match):
    with pytest.raises(SpecError, match=match) as e:
        io.save(post, tmp_path / "m.nc", **kw)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "m.nc").exists()


def test_save_to_a_missing_folder_or_onto_a_folder(post, tmp_path):
    with pytest.raises(ModelFileError, match="folder .*nope does not exist") as e:
        io.save(post, tmp_path / "nope" / "m.nc")
    assert "\n" not in str(e.value)
    (tmp_path / "dir.nc").mkdir()
    with pytest.raises(ModelFileError, match="it is a folder"):
        io.save(post, tmp_path / "dir.nc")
    with pytest.raises(ModelFileError, match="is a folder"):
        io.load(tmp_path / "dir.nc")
    est = BayesMF.from_posterior(post)
    with pytest.raises(ModelFileError, match="does not exist"):
        est.save(tmp_path / "nope" / "m.nc")


@pytest.mark.skipif(not hasattr(__import__("os"), "geteuid") or __import__("os").geteuid() == 0,
                    reason="root ignores file permissions")
def test_save_to_a_read_only_folder(post, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(ModelFileError, match="cannot write the model file"):
            io.save(post, ro / "m.nc")
    finally:
        ro.chmod(0o700)


@pytest.mark.parametrize("value", ["two", "2.5", 2.5, float("inf"), float("nan"),
                                   np.array([2, 3]), "", "\u00b2"])
def test_non_numeric_schema_version(saved, tmp_path, value):
    bad = tmp_path / "bad.nc"

    def put(ds):
        ds.attrs["bayesmf_schema"] = value
        return ds

    _rewrite(saved, bad, put)
    with pytest.raises(ModelFileError, match="model schema version that is not an integer") \
            as e:
        io.load(bad)
    assert "\n" not in str(e.value) and "reads versions" in str(e.value)


@pytest.mark.parametrize("value", [2, "2", 2.0, np.int64(2)])
def test_integral_schema_versions_are_accepted(saved, tmp_path, value):
    ok = tmp_path / "ok.nc"

    def put(ds):
        ds.attrs["bayesmf_schema"] = value
        return ds

    _rewrite(saved, ok, put)
    assert io.load(ok).n_draws == io.load(saved).n_draws


def test_unknown_mode_is_rejected(saved, tmp_path):
    bad = tmp_path / "mode.nc"

    def put(ds):
        ds.attrs["mode"] = "deltas"
        return ds

    _rewrite(saved, bad, put)
    with pytest.raises(ModelFileError, match="unknown model file mode 'deltas'"):
        io.load(bad)


def test_fold_in_works_on_a_summary_file(tmp_path):
    """Summary files keep the (rotated) hyperparameter draws fold-in uses as its prior."""
    from bayesmf.recommend import fold_in

    r, t = synthetic_data(seed=4)
    post = _float32(make_posterior(r, t, chains=2, draws=60, hyper=True, method="gibbs"))
    back = io.load(io.save(post, tmp_path / "s.nc", mode="summary"))
    rated = {int(i): 4.5 for i in post.items.ids[:6]}
    items = post.items.ids[6:20]
    a = fold_in(post, rated).predict(items)
    b = fold_in(back, rated).predict(items)
    assert np.abs(a["mean"].to_numpy() - b["mean"].to_numpy()).max() < 0.1  # MC: ~0.04
