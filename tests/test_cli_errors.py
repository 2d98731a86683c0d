"""Bad input to the CLI: every user-facing error is one line on stderr and exit status 2,
never a traceback, and no work is done before a bad output path is reported. In-process
through ``bayesmf.cli.main`` (one MAP model fitted for the module)."""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest

from bayesmf.cli import build_parser, main


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("clierr")
    rng = np.random.default_rng(1)
    u, i = np.nonzero(rng.random((25, 20)) < 0.5)
    df = pd.DataFrame({"user": u + 1, "item": i + 100,
                       "rating": np.clip(np.round(3 + rng.normal(0, 1, len(u))), 1, 5)})
    df.to_csv(d / "train.csv", index=False)
    df.iloc[:30].to_csv(d / "test.csv", index=False)
    df.iloc[:30][["user", "item"]].to_csv(d / "pairs.csv", index=False)
    pd.DataFrame({"user": [999999], "item": [100]}).to_csv(d / "unknown.csv", index=False)
    (d / "empty.csv").write_text("")
    (d / "header_only.csv").write_text("user,item,rating\n")
    pd.DataFrame({"a": [1, 2], "b": [3, 4], "c": ["x", "y"]}).to_csv(d / "wrong_cols.csv",
                                                                      index=False)
    bad = df.iloc[:20].astype({"rating": object})
    bad.loc[bad.index[3], "rating"] = "five"
    bad.to_csv(d / "text_rating.csv", index=False)
    (d / "two_cols.csv").write_text("1,2\n3,4\n")
    (d / "garbage.nc").write_bytes(b"this is not a model file")
    (d / "a_folder").mkdir()
    assert main(["fit", str(d / "train.csv"), "--rank", "2", "--out", str(d / "m.nc")]) == 0
    return d


def _cases(d):
    tr, te, m = str(d / "train.csv"), str(d / "test.csv"), str(d / "m.nc")
    pairs = str(d / "pairs.csv")
    out = str(d / "new.nc")
    split_out = ["--out-train", str(d / "s_tr.csv"), "--out-test", str(d / "s_te.csv")]
    return [
        # fit: inputs
        (["fit", str(d / "missing.csv"), "--out", out], "no such file"),
        (["fit", str(d / "empty.csv"), "--out", out], "empty"),
        (["fit", str(d / "header_only.csv"), "--out", out], "header_only.csv"),
        (["fit", str(d / "wrong_cols.csv"), "--out", out], "column"),
        (["fit", str(d / "text_rating.csv"), "--out", out], "rating"),
        (["fit", str(d / "two_cols.csv"), "--out", out], "column"),
        (["fit", str(d / "a_folder"), "--out", out], "folder"),
        (["fit", "--out", out], "TRAIN is required"),
        (["fit", tr], "--out MODEL is required"),
        (["fit", tr, "--method", "map", "--samples", "15", "--out", out],
         "--samples do(es) not apply to --method map"),
        (["fit", "--resume", str(d / "no_checkpoint")], "cannot resume"),
        # fit: output paths, checked before the fit
        (["fit", tr, "--out", str(d / "nodir" / "m.nc")], "does not exist"),
        (["fit", tr, "--method", "gibbs", "--checkpoint-every", "5", "--out", out],
         "--checkpoint-every applies with --checkpoint PATH"),
        (["fit", tr, "--out", str(d)], "is a folder"),
        (["fit", tr, "--out", tr], "destroy the input"),
        (["fit", tr, "--method", "gibbs", "--checkpoint", str(d / "nodir" / "ck"),
          "--out", out], "does not exist"),
        # fit: flag values
        (["fit", tr, "--rank", "-1", "--out", out], "--rank"),
        (["fit", tr, "--rank", "two", "--out", out], "--rank"),
        (["fit", tr, "--method", "bogus", "--out", out], "invalid choice"),
        (["fit", tr, "--samples", "0", "--method", "gibbs", "--out", out], "--samples"),
        (["fit", tr, "--option", "nokeyvalue", "--out", out], "key=value"),
        (["fit", tr, "--option", "no_such_option=1", "--out", out], "no_such_option"),
        (["fit", tr, "--rank", "500", "--out", out], "rank 500"),
        # predict
        (["predict", str(d / "missing.nc"), pairs], "missing.nc"),
        (["predict", str(d / "garbage.nc"), pairs], "not a readable bayesmf model"),
        (["predict", m, str(d / "missing.csv")], "missing.csv"),
        (["predict", m, str(d / "wrong_cols.csv")], "missing column"),
        (["predict", m, str(d / "empty.csv")], "empty"),
        (["predict", m, pairs, "--interval", "1.5"], "--interval"),
        (["predict", m, pairs, "--out", str(d / "nodir" / "p.csv")], "does not exist"),
        (["predict", m, pairs, "--out", m], "destroy the input"),
        (["predict", m, str(d / "unknown.csv"), "--strict"], "unknown user"),
        # evaluate
        (["evaluate", m, pairs], "rating"),
        (["evaluate", m, te, "--k", "0"], "--k"),
        (["evaluate", m, str(d / "text_rating.csv")], "rating"),
        (["evaluate", m, te, "--out", str(d / "a_folder")], "is a folder"),
        # recommend / similar
        (["recommend", m, "--users", ",,,"], "no id"),
        (["recommend", m, "--users", "1,,2"], "empty id"),
        (["recommend", m, "--strategy", "utility"], "API only"),
        (["recommend", m, "--strategy", "bogus"], "invalid choice"),
        (["recommend", m, "--n", "0"], "--n"),
        (["recommend", m, "--strategy", "ucb", "--quantile", "0.2"], "needs a quantile > 0.5"),
        # a flag of another strategy was silently ignored
        (["recommend", m, "--quantile", "0.8"], "--quantile applies to --strategy ucb, lcb"),
        (["recommend", m, "--strategy", "ucb", "--threshold", "4"],
         "--threshold applies to --strategy prob, not ucb"),
        (["recommend", m, "--seed", "3"], "--seed applies to --strategy thompson"),
        (["recommend", m, "--quantile-method", "exact"], "--quantile-method applies"),
        (["recommend", m, "--strategy", "thompson", "--screen-size", "5"],
         "--screen-size applies"),
        (["recommend", m, "--strategy", "ucb", "--quantile-method", "exact",
          "--screen-size", "5"], "approx or bounded"),
        (["recommend", m, "--out", str(d / "nodir" / "r.csv")], "does not exist"),
        (["similar", m, "--item", "424242"], "unknown item"),
        (["similar", m, "--item", " "], "--item"),
        # data info / split
        (["data", "info", str(d / "missing.csv")], "no such file"),
        (["split", tr, "--strategy", "temporal", *split_out], "timestamps"),
        (["split", tr, "--strategy", "leave-one-out", "--test-fraction", "0.3", *split_out],
         "does not apply"),
        (["split", tr, "--last-k", "1", *split_out], "does not apply"),
        # a seed the temporal split ignored
        (["split", tr, "--strategy", "temporal", "--seed", "5", *split_out],
         "--seed does not apply to --strategy temporal"),
        (["split", tr, "--test-fraction", "1.5", *split_out], "--test-fraction"),
        (["split", tr, "--out-train", str(d / "same.csv"), "--out-test",
          str(d / "same.csv")], "same file"),
        (["split", tr, "--out-train", tr, "--out-test", str(d / "x.csv")],
         "destroy the input"),
        (["split", tr, "--out-train", str(d / "s_tr.csv")], "--out-test"),
        (["bogus-command"], "invalid choice"),
    ]


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("bayesmf") and "error:" in lines[0], err
    return lines[0]


def test_bad_input_gives_one_line_and_exit_2(files, capsys):
    cases = _cases(files)
    assert len(cases) >= 30
    failures = []
    for args, expect in cases:
        rc = main(args)
        err = capsys.readouterr().err
        if rc != 2 or "Traceback" in err or expect.lower() not in err.lower() or \
                len([ln for ln in err.splitlines() if ln.strip()]) != 1:
            failures.append(f"{args} -> exit {rc}: {err!r} (expected {expect!r})")
    assert not failures, "\n".join(failures)
    assert not (files / "new.nc").exists()  # nothing half-done was written
    assert not (files / "s_tr.csv").exists()


def test_no_output_path_problem_is_found_after_the_fit(files, capsys, monkeypatch):
    """A bad --out fails before the data is even read (it used to fail after the fit)."""
    import bayesmf.datasets

    def forbidden(*a, **k):
        raise AssertionError("the data was read before the output path was checked")

    monkeypatch.setattr(bayesmf.datasets, "load_ratings_source", forbidden)
    for out in (files / "nodir" / "m.nc", files):
        assert main(["fit", str(files / "train.csv"), "--out", str(out)]) == 2
        _one_line_error(capsys.readouterr().err)


def test_os_errors_while_writing_are_one_line(files, capsys, monkeypatch):
    from bayesmf.estimator import BayesMF

    def denied(self, path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(BayesMF, "save", denied)
    rc = main(["fit", str(files / "train.csv"), "--rank", "1", "--out",
               str(files / "denied.nc")])
    line = _one_line_error(capsys.readouterr().err)
    assert rc == 2 and line.endswith("denied.nc: Permission denied")


def test_internal_errors_are_one_line_with_status_1(files, capsys, monkeypatch):
    import bayesmf.cli as cli

    def bug(a):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "cmd_data_info", bug)
    assert main(["data", "info", str(files / "train.csv")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error: ZeroDivisionError" in err
    assert len(err.strip().splitlines()) == 1
    monkeypatch.setenv("BAYESMF_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main(["data", "info", str(files / "train.csv")])


def test_version_and_help(capsys):
    from bayesmf import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"bayesmf {__version__}"
    ap = build_parser()
    subs = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    parsers = dict(subs.choices)
    parsers["data info"] = next(
        a for a in parsers.pop("data")._actions
        if isinstance(a, argparse._SubParsersAction)).choices["info"]
    for name, p in [("bayesmf", ap), *parsers.items()]:
        text = p.format_help()
        assert "``" not in text and ":func:" not in text and ":mod:" not in text, name
        fmt = p._get_formatter()
        for act in p._actions:
            if isinstance(act, (argparse._HelpAction, argparse._SubParsersAction,
                                argparse._VersionAction)):
                continue
            assert act.help, f"{name} {act.option_strings or act.dest} has no help"
            d = act.default
            if act.option_strings and d is not None and not isinstance(d, bool):
                shown = fmt._get_help_string(act) % {"default": d}
                assert f"default: {d}" in shown, (name, act.option_strings, shown)
    fit_help = " ".join(parsers["fit"].format_help().split())
    assert "(default: map for explicit, gibbs for implicit feedback)" in fit_help
    assert "default 10 for explicit, 64 for implicit feedback" in fit_help


def test_an_unknown_flag_points_to_the_subcommand_help(capsys):
    assert main(["fit", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == ("bayesmf fit: error: unrecognized arguments: --bogus "
                           "(see 'bayesmf fit -h')")
