"""Validation at every public entry point: error type AND message.

Data-layer constructors (Ratings/Vocabulary) have their own property tests; here the
facade, the method registry and options, the fit functions, the posterior's index-level
API, model files and the CLI are checked.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import bayesmf
from bayesmf import BayesMF
from bayesmf.cli import main as cli_main
from bayesmf.data.ratings import Ratings
from bayesmf.errors import (BayesMFError, DataError, ModelFileError, NotFittedError,
                            SpecError, UnknownIdError)
from bayesmf.infer import check_options, get_method
from bayesmf.model.spec import ModelSpec


@pytest.fixture(scope="module")
def df():
    rng = np.random.default_rng(0)
    u = np.repeat(np.arange(15), 4)
    i = np.concatenate([rng.choice(10, 4, replace=False) for _ in range(15)])
    return pd.DataFrame({"user": u, "item": i,
                         "rating": rng.integers(1, 6, len(u)).astype(float)})


@pytest.fixture(scope="module")
def fitted(df):
    return BayesMF("map", rank=2).fit(df)


@pytest.fixture(scope="module")
def model_file(fitted, tmp_path_factory):
    p = tmp_path_factory.mktemp("m") / "model.nc"
    fitted.save(p)
    return p


# ----------------------------------------------------------------------------- rank
@pytest.mark.parametrize("rank, match", [
    (-1, "rank must be >= 0, got -1"),
    (2.5, "rank must be an integer, got 2.5"),
    ("3", "rank must be an integer, got '3'"),
    (True, "rank must be an integer, got True"),
])
def test_bad_rank(df, rank, match):
    with pytest.raises(SpecError, match=match):
        BayesMF("map", rank=rank).fit(df)


def test_rank_larger_than_the_data_supports(df):
    with pytest.raises(SpecError, match=r"rank 11 is larger than the data supports: "
                                        r"min\(users=15, items=10\) = 10"):
        BayesMF("map", rank=11).fit(df)
    BayesMF("map", rank=10).fit(df)  # the bound itself is allowed


@pytest.mark.parametrize("method", ["map", "gibbs", "nuts", "svi"])
def test_rank_too_large_in_every_fit_function(df, method):
    pytest.importorskip(f"bayesmf.infer.{method}")
    r = Ratings.from_dataframe(df)
    with pytest.raises(SpecError, match="rank 11 is larger than the data supports"):
        get_method(method)(r, ModelSpec(rank=11))


def test_rank_zero_is_the_bias_only_model(df, fitted):
    m = BayesMF("map", rank=0).fit(df)
    assert m.posterior_.draws["U"].shape == (1, 1, 15, 0)
    p = m.predict(df[["user", "item"]])
    assert np.all(np.isfinite(p["mean"]))
    with pytest.raises(SpecError, match="rank=0 with no mean and no biases"):
        BayesMF("map", rank=0, global_mean=False, user_bias=False, item_bias=False).fit(df)


# ----------------------------------------------------------------------------- methods
@pytest.mark.parametrize("name", ["bogus", "MAP", "", None, 3])
def test_unknown_method(df, name):
    with pytest.raises(SpecError, match=r"unknown method .*; choose one of \['cavi', 'gibbs', 'map'"):
        BayesMF(name, rank=2).fit(df)
    with pytest.raises(SpecError, match="unknown method"):
        get_method(name)


@pytest.mark.parametrize("method", ["map", "gibbs", "nuts", "svi"])
def test_unknown_option_names_the_accepted_ones(df, method):
    pytest.importorskip(f"bayesmf.infer.{method}")
    with pytest.raises(SpecError, match=rf"method '{method}' got unknown option\(s\) "
                                        r"\['bogus', 'num_sample'\]; it accepts \["):
        BayesMF(method, rank=2, bogus=1, num_sample=5).fit(df)


@pytest.mark.parametrize("method, opts, match", [
    ("map", dict(solver="sgd"), "solver"),
    ("map", dict(max_iter=0), "max_iter"),
    ("gibbs", dict(num_samples=0), "num_samples must be an integer >= 1, got 0"),
    ("gibbs", dict(thin=1.5), "thin must be an integer >= 1, got 1.5"),
    ("gibbs", dict(num_chains=True), "num_chains must be an integer >= 1, got True"),
    ("gibbs", dict(chain_method="pmap"), "chain_method must be 'vectorized', "),
    ("nuts", dict(num_warmup=-1), "num_warmup must be an integer >= 0, got -1"),
    ("nuts", dict(target_accept=1.0), r"target_accept must be in \(0, 1\), got 1.0"),
    ("nuts", dict(thin=10, num_samples=5), "thin=10 exceeds num_samples=5"),
    ("svi", dict(guide="full"), "guide"),
    ("svi", dict(guide_rank=3), "guide_rank sets the rank of the low-rank guide"),
    ("svi", dict(num_steps=0), "num_steps"),
])
def test_bad_option_values(df, method, opts, match):
    pytest.importorskip(f"bayesmf.infer.{method}")
    with pytest.raises(SpecError, match=match):
        BayesMF(method, rank=2, **opts).fit(df)


def test_check_options_contract():
    assert check_options("m", {"a": 2}, {"a": 1, "b": 3}) == {"a": 2, "b": 3}
    with pytest.raises(SpecError, match=r"method 'm' got unknown option\(s\) \['c'\]; "
                                        r"it accepts \['a', 'b'\]"):
        check_options("m", {"c": 0}, {"a": 1, "b": 3})


@pytest.mark.parametrize("seed", ["1", 1.0, None, True])
def test_bad_seed(df, seed):
    with pytest.raises(SpecError, match="seed must be an integer"):
        BayesMF("map", rank=2, seed=seed).fit(df)


# ----------------------------------------------------------------------------- inputs
def test_fit_input_types_and_columns(df):
    with pytest.raises(DataError, match="expected a Ratings container or a pandas DataFrame"
                                        ".*got ndarray"):
        BayesMF("map", rank=2).fit(df.to_numpy())
    with pytest.raises(DataError, match=r"missing column\(s\) \['rating'\]"):
        BayesMF("map", rank=2).fit(df.drop(columns="rating"))
    with pytest.raises(DataError, match="rating values must be numeric"):
        BayesMF("map", rank=2).fit(df.assign(rating="x"))
    with pytest.raises(DataError, match="NaN or infinite"):
        BayesMF("map", rank=2).fit(df.assign(rating=np.inf))
    with pytest.raises(DataError, match="no ratings: the input is empty"):
        BayesMF("map", rank=2).fit(df.iloc[:0])
    m = BayesMF("map", rank=2).fit(df.rename(columns={"user": "uid"}), user_col="uid")
    assert m.is_fitted


@pytest.mark.parametrize("method", ["map", "gibbs"])
def test_fit_functions_reject_non_ratings(df, method):
    pytest.importorskip(f"bayesmf.infer.{method}")
    with pytest.raises(SpecError, match="train must be a Ratings"):
        get_method(method)(df, ModelSpec(rank=2))
    with pytest.raises(SpecError, match="spec must be a ModelSpec"):
        get_method(method)(Ratings.from_dataframe(df), {"rank": 2})


@pytest.mark.parametrize("method", ["nuts", "svi", "pymc-nuts", "pymc-advi"])
def test_probabilistic_fit_functions_reject_non_ratings(df, method):
    with pytest.raises(SpecError, match="Ratings container"):
        get_method(method)(df, ModelSpec(rank=2))


def test_predict_input_shapes(fitted, df):
    with pytest.raises(DataError, match="pairs must be a DataFrame with user/item columns, "
                                        "a Ratings container or a .users, items. tuple; got list"):
        fitted.predict([1, 2])
    with pytest.raises(DataError, match="users and items differ in length: 2 vs 1"):
        fitted.predict(([1, 2], [1]))
    with pytest.raises(DataError, match=r"user ids must be one-dimensional, got shape \(2, 2\)"):
        fitted.predict((np.zeros((2, 2), int), np.zeros((2, 2), int)))
    with pytest.raises(DataError, match=r"missing column\(s\) \['user'\]"):
        fitted.predict(df.rename(columns={"user": "u"}))
    with pytest.raises(SpecError, match=r"interval must be in \(0, 1\), got 1.5"):
        fitted.predict(df, interval=1.5)
    with pytest.raises(SpecError, match="unknown= must be 'fallback' or 'raise', got 'x'"):
        fitted.predict(df, unknown="x")
    with pytest.raises(UnknownIdError, match="1 unknown user id.s.: 999"):
        fitted.predict(pd.DataFrame({"user": [999], "item": [0]}), unknown="raise")


def test_recommend_arguments(fitted):
    with pytest.raises(SpecError, match="n must be an integer >= 1, got 0"):
        fitted.recommend([0], n=0)
    with pytest.raises(SpecError, match="unknown strategy 'bogus'"):
        fitted.recommend([0], strategy="bogus")
    # a typo in a strategy option: named, with the options there are
    with pytest.raises(SpecError, match=r"unknown argument\(s\) \['quantlie'\]; the strategy "
                                        "options are quantile"):
        fitted.recommend([0], strategy="ucb", quantlie=0.95)
    with pytest.raises(SpecError, match="exclude_seen must be True or False, got 'no'"):
        fitted.recommend([0], exclude_seen="no")


def test_posterior_entry_points_check_their_arguments(fitted):
    post = fitted.posterior_
    # one id is one pair (it was "len() of unsized object")
    one = post.predict(0, 1)
    assert len(one.mean) == 1
    np.testing.assert_allclose(one.mean, post.predict([0], [1]).mean)
    assert post.quantiles(0, 1, 0.9).shape == (1, 1)
    with pytest.raises(SpecError, match="threshold must be a finite number .or one per "
                                        "pair., got .4."):
        post.prob_at_least([0], [1], "4")
    for n in (-1, 0, 2.5):
        with pytest.raises(SpecError, match="n .predictive draws. must be an integer >= 1"):
            post.predictive_draws([0], [1], n=n)
    with pytest.raises(SpecError, match="thin needs an integer >= 1, got 2.5"):
        post.thin(2.5)


def test_posterior_select_checks_the_selection():
    from _uq_synth import make_posterior

    post, _ = make_posterior(n_users=6, n_items=5, k=2, draws=8, seed=0)
    assert post.select(chains=0).n_chains == 1
    assert post.select(draws=[-1]).n_draws == 1
    np.testing.assert_array_equal(post.select(draws=[-1]).draws["mu"],
                                  np.asarray(post.draws["mu"])[:, -1:])
    mask = np.zeros(post.n_draws, bool)
    mask[[1, 3]] = True
    assert post.select(draws=mask).n_draws == 2
    with pytest.raises(SpecError, match="selects none of the 8 draws"):
        post.select(draws=[])
    with pytest.raises(SpecError, match="selects none"):
        post.select(draws=slice(8, None))
    with pytest.raises(SpecError, match=r"chains positions must lie in \[-1, 0\]"):
        post.select(chains=[3])
    with pytest.raises(SpecError, match="boolean mask of draws needs 8 values"):
        post.select(draws=[True, False])
    with pytest.raises(SpecError, match="integer positions or a boolean mask"):
        post.select(draws=[0.5])


def test_gaussian_intervals_of_a_discrete_family_are_refused():
    from bayesmf.testing.conformance import planted

    m = BayesMF("map", rank=2, likelihood="ordinal", max_iter=10).fit(planted("ordinal"))
    u, i = m.posterior_.users.ids[:1], m.posterior_.items.ids[:1]
    with pytest.raises(SpecError, match="method='gaussian' .* applies to the Gaussian-noise"):
        m.posterior_.predict(u, i, method="gaussian")


# ----------------------------------------------------------------------------- not fitted
@pytest.mark.parametrize("call", [
    lambda m, df: m.predict(df), lambda m, df: m.recommend([0]),
    lambda m, df: m.evaluate(df), lambda m, df: m.save("never.nc"),
    lambda m, df: m.posterior,
])
def test_not_fitted(df, call, tmp_path):
    m = BayesMF("map", rank=2)
    with pytest.raises(NotFittedError, match="this BayesMF instance is not fitted yet; "
                                             "call fit\\(\\) first"):
        call(m, df)
    assert not (tmp_path / "never.nc").exists()
    assert not m.is_fitted


# ----------------------------------------------------------------------------- vocabularies
def test_foreign_vocabulary_is_re_encoded_by_raw_id(fitted, df):
    """A test set encoded with ANOTHER dataset's vocabularies is decoded to raw ids and
    re-encoded with the model's: metrics equal those of the same ratings encoded with the
    model's own vocabularies (never a silent index mix-up)."""
    post = fitted.posterior
    test = df.iloc[::3]
    own = Ratings.from_dataframe(test).with_vocabularies(post.users, post.items)
    # a foreign dataset with extra and reordered ids
    foreign_df = pd.concat([test, pd.DataFrame({"user": [500, -7], "item": [900, 3],
                                                "rating": [3.0, 4.0]})])
    foreign = Ratings.from_dataframe(foreign_df.iloc[::-1])
    assert foreign.users != post.users
    lp_own = post.log_predictive_density(own)
    lp_foreign = post.log_predictive_density(foreign)
    by_pair = dict(zip(zip(foreign.users.decode(foreign.user).tolist(),
                           foreign.items.decode(foreign.item).tolist()), lp_foreign))
    want = [by_pair[(u, i)] for u, i in zip(own.users.decode(own.user).tolist(),
                                            own.items.decode(own.item).tolist())]
    np.testing.assert_allclose(lp_own, want, rtol=1e-12)
    # and through evaluate(): the two foreign-only pairs are cold, the rest are the same
    res = bayesmf.evaluate.evaluate(post, foreign, ranking=False)
    assert res["n_test"] == len(own) + 2 and res["n_cold"] == 2
    assert np.isfinite(res["rmse"]) and np.isfinite(res["nlpd"])


def test_index_level_api_rejects_indices_of_another_vocabulary(fitted):
    post = fitted.posterior
    with pytest.raises(DataError, match=r"user index 15 is outside this model's user "
                                        r"vocabulary \(0..14\); index arrays must be "
                                        r"encoded with Posterior.users"):
        post.summarize_indices(np.array([0, 15]), np.array([0, 1]))
    with pytest.raises(DataError, match=r"item index 10 is outside this model's item "
                                        r"vocabulary \(0..9\)"):
        post.predictive_components(np.array([0]), np.array([10]))
    # -1 marks an unknown id (fallback) and stays allowed
    m, sd = post.predictive_components(np.array([-1]), np.array([0]))
    assert np.all(np.isfinite(m)) and np.all(sd > 0)


# ----------------------------------------------------------------------------- model files
def test_corrupted_and_truncated_model_files(model_file, tmp_path):
    data = model_file.read_bytes()
    cases = {"truncated.nc": data[: len(data) // 2], "empty.nc": b"",
             "garbage.nc": b"\x89HDF\r\n\x1a\n" + b"\x00" * 64}
    for name, content in cases.items():
        p = tmp_path / name
        p.write_bytes(content)
        with pytest.raises(ModelFileError, match="is not a readable bayesmf model file "
                                                 r"\(corrupted or truncated\?\)"):
            bayesmf.load(p)
    with pytest.raises(ModelFileError, match="model file not found"):
        bayesmf.load(tmp_path / "missing.nc")


def test_model_file_with_wrong_schema_or_missing_parts(model_file, tmp_path):
    import xarray as xr

    with xr.open_dataset(model_file, engine="h5netcdf") as ds:
        ds = ds.load()
    v = ds.copy()
    v.attrs["bayesmf_schema"] = 99
    v.to_netcdf(tmp_path / "v99.nc", engine="h5netcdf")
    with pytest.raises(ModelFileError, match="has model schema version 99; this bayesmf "
                                             r"reads versions \[1, 2, 3\]"):
        bayesmf.load(tmp_path / "v99.nc")
    n = ds.copy()
    del n.attrs["bayesmf_schema"]
    n.to_netcdf(tmp_path / "foreign.nc", engine="h5netcdf")
    with pytest.raises(ModelFileError, match="is not a bayesmf model file"):
        bayesmf.load(tmp_path / "foreign.nc")
    d = ds.drop_vars("V")
    d.to_netcdf(tmp_path / "noV.nc", engine="h5netcdf")
    with pytest.raises(ModelFileError, match="inconsistent bayesmf model file.*miss"):
        bayesmf.load(tmp_path / "noV.nc")
    s = ds.copy()
    s.attrs["spec"] = json.dumps({"rank": -3})
    s.to_netcdf(tmp_path / "badspec.nc", engine="h5netcdf")
    with pytest.raises(ModelFileError, match="inconsistent bayesmf model file.*rank"):
        bayesmf.load(tmp_path / "badspec.nc")


# ----------------------------------------------------------------------------- CLI
def _cli(capsys, *args):
    try:
        rc = cli_main([str(a) for a in args])
    except SystemExit as exc:  # argparse usage errors
        rc = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    return rc, err


@pytest.fixture(scope="module")
def train_csv(df, tmp_path_factory):
    p = tmp_path_factory.mktemp("cli") / "train.csv"
    df.to_csv(p, index=False)
    return p


@pytest.mark.parametrize("args, message", [
    (["fit", "{train}", "--out", "{tmp}/m.nc", "--rank", "-2"], "rank must be >= 0, got -2"),
    (["fit", "{train}", "--out", "{tmp}/m.nc", "--rank", "11"],
     "rank 11 is larger than the data supports"),
    (["fit", "{train}", "--out", "{tmp}/m.nc", "--option", "bogus=1"],
     "unknown option(s) ['bogus']"),
    (["fit", "{train}", "--out", "{tmp}/m.nc", "--option", "novalue"],
     "--option expects key=value, got 'novalue'"),
    (["fit", "{tmp}/missing.csv", "--out", "{tmp}/m.nc"], "no such file"),
    (["fit", "{train}"], "--out MODEL is required"),
    (["fit", "{train}", "--out", "{tmp}/m.nc", "--resume", "{tmp}/nothing.ckpt"],
     "cannot resume"),
    (["predict", "{tmp}/missing.nc", "{train}"], "model file not found"),
    (["predict", "{model}", "{train}", "--interval", "2"], "interval must be in (0, 1)"),
    (["predict", "{model}", "{train}", "--user-col", "uid"], "missing column(s) ['uid']"),
    (["recommend", "{model}", "--n", "0"], "n must be >= 1, got 0"),
])
def test_cli_bad_arguments_exit_2_with_one_line(capsys, tmp_path, train_csv, model_file,
                                                args, message):
    args = [a.format(train=train_csv, tmp=tmp_path, model=model_file) for a in args]
    rc, err = _cli(capsys, *args)
    assert rc == 2
    assert len(err) == 1, err
    assert err[0].startswith(f"bayesmf {args[0]}: error: ") and message in err[0], err


@pytest.mark.parametrize("args, message", [
    (["fit", "{train}", "--method", "bogus"], "argument --method: invalid choice: 'bogus'"),
    (["fit", "{train}", "--rank", "abc"], "argument --rank: invalid int value: 'abc'"),
    (["recommend", "{train}", "--strategy", "x"], "argument --strategy: invalid choice"),
    (["nonsense"], "invalid choice: 'nonsense'"),
])
def test_cli_usage_errors_exit_2(capsys, train_csv, args, message):
    rc, err = _cli(capsys, *[a.format(train=train_csv) for a in args])
    assert rc == 2
    assert err[-1].startswith("bayesmf") and "error: " in err[-1] and message in err[-1], err


def test_cli_corrupted_model_file(capsys, tmp_path, train_csv, model_file):
    p = tmp_path / "cut.nc"
    p.write_bytes(model_file.read_bytes()[:1000])
    rc, err = _cli(capsys, "predict", p, train_csv)
    assert rc == 2 and len(err) == 1
    assert "is not a readable bayesmf model file (corrupted or truncated?)" in err[0]


def test_every_error_is_a_bayesmf_error_and_a_builtin():
    for cls, builtin in ((DataError, ValueError), (SpecError, ValueError),
                         (UnknownIdError, KeyError), (NotFittedError, RuntimeError),
                         (ModelFileError, ValueError)):
        assert issubclass(cls, BayesMFError) and issubclass(cls, builtin)


@pytest.mark.parametrize("field, value", [("rank", None), ("noise", None),
                                          ("global_mean", "yes")])
def test_estimator_none_settings_are_errors_not_silent_defaults(df, field, value):
    with pytest.raises(SpecError, match=field):
        BayesMF(method="map", **{field: value}).fit(df)


def test_estimator_bias_switches_none_means_the_likelihoods_default(df):
    # None is documented for the three bias switches only: the likelihood's default
    spec = BayesMF(method="map", global_mean=None, user_bias=None).make_spec()
    assert spec.global_mean is True and spec.user_bias is True
    spec = BayesMF(method="map", likelihood="implicit", global_mean=None).make_spec()
    assert spec.global_mean is False


# ----------------------------------------------------------------------------- issue 17
def test_fit_accepts_duplicates_and_as_ratings_is_exported(df):
    dup = pd.concat([df, df.iloc[:3].assign(rating=5.0)], ignore_index=True)
    with pytest.raises(DataError, match=r"3 duplicate \(user, item\) pair\(s\).*"
                                        r"bayesmf.BayesMF.fit"):
        BayesMF("map", rank=1).fit(dup)
    m = BayesMF("map", rank=1).fit(dup, duplicates="last")
    assert m.posterior.users.ids.tolist() == sorted(df["user"].unique().tolist())
    assert bayesmf.as_ratings(dup, duplicates="mean").nnz == len(df)
    assert "as_ratings" in bayesmf.__all__
    with pytest.raises(DataError, match="duplicates= must be one of"):
        BayesMF("map", rank=1).fit(dup, duplicates="max")


def test_fit_on_int_ids_predicts_string_ids(fitted, df):
    # a CSV read with dtype=str, or JSON: "12" is the integer id 12 (used to be silently
    # unknown, every row the cold-start fallback)
    pairs = df.iloc[:5]
    as_int = fitted.predict(pairs)
    as_str = fitted.predict(pairs.astype({"user": str, "item": str}))
    assert as_str["known_user"].all() and as_str["known_item"].all()
    np.testing.assert_allclose(as_str["mean"], as_int["mean"])
    with pytest.warns(UserWarning, match="treated as unknown: .*leading zeros"):
        padded = fitted.predict((["01"], ["1"]))
    assert not padded["known_user"].iloc[0] and padded["known_item"].iloc[0]
    with pytest.raises(UnknownIdError, match=r"unknown user id\(s\): '01'; .*plain integers"):
        fitted.predict((["01"], ["1"]), unknown="raise")


def test_huge_ratings_are_a_data_error_not_a_floating_point_error(df):
    with pytest.raises(DataError, match=r"too large .*rescale them"):
        BayesMF("map", rank=1).fit(df.assign(rating=df["rating"] * 1e300))


def _message_texts(node):
    """The string literals of an expression, f-string fields replaced by NUL."""
    import ast

    out = []
    for n in ast.walk(node):
        if isinstance(n, ast.JoinedStr):
            out.append("".join(v.value if isinstance(v, ast.Constant) else "\0"
                               for v in n.values))
        elif isinstance(n, ast.Constant) and isinstance(n.value, str):
            out.append(n.value)
    return "\0".join(out)


def test_every_api_named_in_an_error_message_exists():
    """Error and warning messages that name an API (``bayesmf.as_ratings``,
    ``Ratings.with_vocabularies``) name something importable (issue 17 item 7)."""
    import ast
    import importlib
    import pathlib
    import re

    qualified = re.compile(r"\bbayesmf(?:\.[A-Za-z_]\w*)+")
    bare = re.compile(r"(?<![\w.])([A-Z]\w*)\.([a-z_]\w*)")
    homes = [importlib.import_module(m) for m in
             ("bayesmf", "bayesmf.data", "bayesmf.datasets", "bayesmf.posterior",
              "bayesmf.model.spec", "bayesmf.errors")]

    def resolve_qualified(name):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ImportError:
                continue
            for p in parts[cut:]:
                obj = getattr(obj, p)
            return obj
        raise ImportError(name)

    root = pathlib.Path(bayesmf.__file__).parent
    refs = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for n in ast.walk(tree):
            if isinstance(n, ast.Raise) and n.exc is not None:
                node = n.exc
            elif isinstance(n, ast.Call) and (
                    getattr(n.func, "attr", getattr(n.func, "id", "")).endswith(
                        ("Error", "Warning")) or getattr(n.func, "attr", "") == "warn"):
                node = n
            else:
                continue
            text = _message_texts(node)
            refs += [(m.group(0).rstrip("."), None, path.name) for m in qualified.finditer(text)]
            refs += [(m.group(1), m.group(2), path.name) for m in bare.finditer(text)]
    assert any(r[0] == "bayesmf.as_ratings" for r in refs)  # the scan sees messages
    bad = []
    for name, attr, where in refs:
        try:
            if attr is None:
                resolve_qualified(name)
            else:
                owner = next(getattr(h, name) for h in homes if hasattr(h, name))
                getattr(owner, attr)
        except (ImportError, AttributeError, StopIteration):
            bad.append(f"{where}: {name}{'.' + attr if attr else ''}")
    assert not bad, f"error messages name APIs that do not exist: {bad}"


def test_unknown_prior_keys_and_noise_settings_without_noise_are_spec_errors():
    """``priors={"w_0": ...}`` names the known keys (not a raw TypeError); noise settings
    given to a family without Gaussian observation noise are refused (they did nothing)."""
    import bayesmf
    from bayesmf.errors import SpecError

    with pytest.raises(SpecError, match=r"unknown prior setting\(s\) \['w_0'\].*'w0'"):
        bayesmf.BayesMF(method="gibbs", priors={"w_0": 1.0}).make_spec()
    for lik in ("ordinal", "bernoulli-logit", "poisson"):
        for kw in ({"noise": "fixed"}, {"noise_precision": 100.0}):
            with pytest.raises(SpecError, match="has none"):
                bayesmf.BayesMF(likelihood=lik, **kw).make_spec()
        bayesmf.BayesMF(likelihood=lik).make_spec()  # the defaults pass
    assert bayesmf.BayesMF(noise="fixed", noise_precision=4.0).make_spec().noise == "fixed"


def test_gibbs_option_values_and_seed_are_checked():
    """Gibbs options that were passed through unchecked (cg_tol, cg_maxiter, max_width,
    dtype, a checkpoint that is not a path) and a negative seed are SpecErrors naming
    them."""
    from bayesmf.errors import SpecError

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user": rng.integers(0, 15, 120), "item": rng.integers(0, 10, 120),
                       "rating": rng.integers(1, 6, 120).astype(float)})
    df = df.drop_duplicates(["user", "item"])
    for kw, msg in ((dict(checkpoint=5), "checkpoint must be a file path"),
                    (dict(cg_tol="abc"), "cg_tol"), (dict(max_width=2.5), "max_width"),
                    (dict(dtype="abc"), "dtype"), (dict(cg_maxiter=-1), "cg_maxiter"),
                    (dict(seed=-1), "seed must be an integer in"),
                    # an int32 overflow inside JAX before
                    (dict(num_warmup=2**40), "sweeps is more than the sampler counts"),
                    (dict(thin=2**40), "sweeps is more than the sampler counts")):
        with pytest.raises(SpecError, match=msg):
            BayesMF(method="gibbs", rank=2, **{"num_samples": 3, "num_warmup": 2, **kw}
                    ).fit(df)


def test_propagation_and_cavi_option_values_are_checked():
    from bayesmf.errors import SpecError

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"user": rng.integers(0, 15, 120), "item": rng.integers(0, 10, 120),
                       "rating": rng.integers(1, 6, 120).astype(float)})
    df = df.drop_duplicates(["user", "item"])
    for kw, msg in ((dict(num_samples="abc"), "num_samples"), (dict(align="no"), "align"),
                    (dict(max_workers="x"), "max_workers must be an integer >= 1"),
                    (dict(max_workers=0), "max_workers must be an integer >= 1"),
                    (dict(max_workers=2.7), "max_workers must be an integer >= 1")):
        with pytest.raises(SpecError, match=msg):
            BayesMF(method="propagation", rank=2, **kw).fit(df)
    counts = df.assign(rating=df["rating"].astype(int))
    for kw, msg in ((dict(min_iter=50, max_iter=10), "min_iter"),
                    (dict(tol=float("inf")), "tol must be a finite")):
        with pytest.raises(SpecError, match=msg):
            BayesMF(method="cavi", rank=2, likelihood="poisson", **kw).fit(counts)
