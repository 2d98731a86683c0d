"""ArviZ DataTree conversion and diagnostics on identifiable quantities."""

from __future__ import annotations

import warnings

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from _synthetic_posterior import make_posterior, synthetic_data  # noqa: E402
from bayesmf.diagnostics import NonIdentifiableWarning, diagnose, to_datatree  # noqa: E402
from bayesmf.errors import MemoryLimitError, SpecError  # noqa: E402

az = pytest.importorskip("arviz")


@pytest.fixture(scope="module")
def data():
    return synthetic_data()


@pytest.fixture(scope="module")
def mixed(data):
    r, t = data
    return make_posterior(r, t, hyper=True, draws=100)


@pytest.fixture(scope="module")
def tree(data, mixed):
    r, _ = data
    return to_datatree(mixed, log_likelihood=r, posterior_predictive=True)


# ------------------------------------------------------------------ to_datatree
def test_groups_dims_and_raw_id_coords(tree, mixed):
    assert {"posterior", "sample_stats", "log_likelihood", "posterior_predictive",
            "observed_data"} <= set(tree.children)
    post = tree["posterior"]
    assert post["U"].dims == ("chain", "draw", "user", "factor")
    assert post["bi"].dims == ("chain", "draw", "item")
    assert post["Lambda_U"].dims == ("chain", "draw", "factor", "factor_")
    np.testing.assert_array_equal(post["user"].values, mixed.users.ids)
    np.testing.assert_array_equal(post["item"].values, mixed.items.ids)
    np.testing.assert_allclose(post["bu"].values, mixed.draws["bu"])
    assert tree["log_likelihood"]["rating"].dtype == np.float32
    assert tree["log_likelihood"]["rating"].dims == ("chain", "draw", "obs")
    assert tree.attrs["bayesmf_method"] == "synthetic"


def test_string_ids_and_factors_false():
    r, t = synthetic_data(str_ids=True, seed=3)
    p = make_posterior(r, t, draws=20, chains=2)
    dt = to_datatree(p, factors=False)
    assert set(dt["posterior"].data_vars) == {"mu", "bu", "bi", "tau"}
    assert list(dt["posterior"]["user"].values[:2]) == ["u0", "u1"]
    assert "log_likelihood" not in dt.children


def test_sample_stats_total_loglik_renamed(tree, mixed):
    ss = tree["sample_stats"]
    # a per-draw total must not sit where arviz.loo would take it for pointwise values
    assert "log_likelihood" not in ss.data_vars
    np.testing.assert_allclose(ss["log_likelihood_total"].values,
                               mixed.sample_stats["log_likelihood"])
    assert ss["diverging"].dtype == bool


def test_pointwise_loglik_matches_gaussian_formula(tree, mixed, data):
    r, _ = data
    ll = tree["log_likelihood"]["rating"].values
    c, d, n = 1, 7, 11
    u, i, y = r.user[n], r.item[n], r.rating[n]
    dr = mixed.draws
    m = (dr["mu"][c, d] + dr["bu"][c, d, u] + dr["bi"][c, d, i]
         + dr["U"][c, d, u] @ dr["V"][c, d, i])
    tau = float(dr["tau"][c, d])
    want = 0.5 * np.log(tau / (2 * np.pi)) - 0.5 * tau * (y - m) ** 2
    assert ll[c, d, n] == pytest.approx(want, rel=1e-4, abs=1e-4)
    obs = tree["observed_data"]
    np.testing.assert_array_equal(obs["rating"].values, r.rating)
    np.testing.assert_array_equal(obs["obs_user"].values, r.users.decode(r.user))


def test_summary_rhat_ess_loo(tree):
    s = az.summary(tree, var_names=["mu", "tau"])
    assert set(s.index) == {"mu", "tau"}
    assert float(s.loc["mu", "r_hat"]) < 1.05
    rh = az.rhat(tree, var_names=["bu"])
    assert rh["bu"].dims == ("user",) and float(rh["bu"].max()) < 1.05
    es = az.ess(tree, var_names=["mu"])
    assert float(es["mu"]) > 100
    loo = az.loo(tree)
    lpd = float(np.sum(np.log(np.mean(np.exp(
        tree["log_likelihood"]["rating"].values.astype(float)), axis=(0, 1)))))
    assert loo.elpd < lpd  # LOO is an out-of-sample estimate: below the in-sample lpd
    assert 0 < loo.p < len(tree["observed_data"]["obs"])


@pytest.mark.filterwarnings("ignore:Estimated shape parameter of Pareto:UserWarning")
def test_compare_ranks(data):
    r, t = data
    good = make_posterior(r, t, draws=60, chains=2)
    bad_t = dict(t, U=t["U"] * 0.0, V=t["V"] * 0.0)  # bias-only model of low-rank data
    bad = make_posterior(r, bad_t, draws=60, chains=2)
    cmp = az.compare({"good": to_datatree(good, log_likelihood=r),
                      "bad": to_datatree(bad, log_likelihood=r)})
    assert cmp.index[0] == "good"


@pytest.mark.parametrize("plot", ["plot_trace", "plot_rank", "plot_dist", "plot_ppc_dist",
                                  "plot_ppc_rootogram"])
def test_plots_render(plot, tree, mixed, data):
    import matplotlib.pyplot as plt

    fn = getattr(az, plot)
    if plot == "plot_ppc_rootogram":
        r, _ = data
        pc = fn(to_datatree(mixed, posterior_predictive=r, discretize=True, factors=False))
    elif plot == "plot_ppc_dist":
        pc = fn(tree, num_samples=10)
    else:
        pc = fn(tree, var_names=["mu", "tau"])
    assert pc is not None
    assert plt.get_fignums(), "no matplotlib figure was created"
    plt.close("all")


def test_discretize_codes_half_stars(mixed, data):
    r, _ = data
    dt = to_datatree(mixed, posterior_predictive=r, discretize=True, factors=False)
    obs = dt["observed_data"]["rating"]
    assert obs.dtype.kind == "i"
    np.testing.assert_array_equal(obs.values, np.rint(r.rating / 0.5).astype(int))
    pp = dt["posterior_predictive"]["rating"].values
    assert pp.dtype.kind == "i" and pp.min() >= 1 and pp.max() <= 10
    assert dt["posterior_predictive"]["rating"].attrs["step"] == 0.5


def test_predictive_for_pairs_without_ratings(mixed):
    pairs = pd.DataFrame({"user": mixed.users.ids[:5], "item": mixed.items.ids[:5]})
    dt = to_datatree(mixed, posterior_predictive=pairs, factors=False)
    pp = dt["posterior_predictive"]["rating"]
    assert pp.dims == ("chain", "draw", "pair")
    np.testing.assert_array_equal(pp["pair_user"].values, mixed.users.ids[:5])
    # replicated ratings are centred on the predictive mean
    pred = mixed.predict(pairs["user"], pairs["item"])
    np.testing.assert_allclose(pp.values.mean(axis=(0, 1)), pred.mean, atol=0.1)
    assert "observed_data" not in dt.children


def test_bad_arguments(mixed, data):
    r, _ = data
    with pytest.raises(SpecError, match="training Ratings"):
        to_datatree(mixed, log_likelihood=True)
    from bayesmf.data.split import random_split

    sp = random_split(r, 0.3, seed=0)
    with pytest.raises(SpecError, match="other \\(user, item\\) rows"):
        to_datatree(mixed, log_likelihood=sp.train, posterior_predictive=sp.test)
    with pytest.raises(SpecError, match="needs observations"):
        to_datatree(mixed, posterior_predictive=True)
    with pytest.raises(MemoryLimitError):
        to_datatree(mixed, log_likelihood=r, memory_limit=1000)


# ------------------------------------------------------------------ diagnose
def test_diagnose_well_mixed(mixed):
    with warnings.catch_warnings():
        warnings.simplefilter("error", NonIdentifiableWarning)
        df = diagnose(mixed, n_probe=20)
    assert set(df.kind) == {"prediction", "global", "hyper", "bias", "norm"}
    assert (df.kind == "prediction").sum() == 20
    assert {"mu", "tau", "lambda_bu", "trace(Lambda_U)", "logdet(Lambda_V)",
            "norm(mu_U)"} <= set(df.quantity)
    assert df.rhat.max() < 1.05
    assert df.ess_bulk.min() > 150 and df.ess_tail.min() > 150
    assert df.attrs["chains"] == 4


def test_diagnose_stuck_chains(data):
    r, t = data
    df = diagnose(make_posterior(r, t, mode="stuck", draws=100), n_probe=20)
    assert df.set_index("quantity").loc["mu", "rhat"] > 1.5
    assert df[df.kind == "bias"].rhat.min() > 1.5
    assert df[df.kind == "prediction"].rhat.median() > 1.5
    assert df.flag.mean() > 0.5


def test_diagnose_rotated_factors(data):
    r, t = data
    post = make_posterior(r, t, mode="rotated", draws=100)
    with pytest.warns(NonIdentifiableWarning, match="rotation|R\\^-T"):
        df = diagnose(post, n_probe=20, raw_factors=True)
    raw = df[df.kind == "raw factor"]
    assert raw.rhat.max() > 1.3 and raw.rhat.median() > 1.1
    # the same draws are perfectly fine where it matters
    assert df[df.kind == "prediction"].rhat.max() < 1.05
    assert df[df.kind == "norm"].rhat.max() < 1.05


def test_diagnose_probe_pairs_and_biases(mixed):
    pairs = pd.DataFrame({"user": mixed.users.ids[[0, 3]], "item": mixed.items.ids[[5, 2]]})
    df = diagnose(mixed, probe_pairs=pairs, biases="all")
    preds = df[df.kind == "prediction"]
    assert list(preds.quantity) == [f"pred[{mixed.users.ids[0]}, {mixed.items.ids[5]}]",
                                    f"pred[{mixed.users.ids[3]}, {mixed.items.ids[2]}]"]
    m = mixed.predict(pairs["user"], pairs["item"]).mean
    np.testing.assert_allclose(preds["mean"].to_numpy(), m, rtol=1e-5)
    assert (df.kind == "bias").sum() == len(mixed.users) + len(mixed.items)
    assert (df.kind == "norm").sum() == 4


def test_diagnose_rejects_point_estimates(data):
    r, t = data
    mapped = make_posterior(r, t, chains=1, draws=1)
    with pytest.raises(SpecError, match="point estimate"):
        diagnose(mapped)
    with pytest.raises(SpecError, match="biases"):
        diagnose(make_posterior(r, t, chains=2, draws=10), biases="some")


def test_posterior_and_estimator_delegate(mixed):
    from bayesmf.estimator import BayesMF

    dt = mixed.to_datatree(factors=False)
    assert set(dt["posterior"].data_vars) >= {"mu", "tau"} and "U" not in dt["posterior"]
    dt2 = BayesMF.from_posterior(mixed).to_datatree()
    assert "U" in dt2["posterior"]


def test_bias_only_model(data):
    from bayesmf.model.spec import ModelSpec
    from bayesmf.posterior import Posterior, TrainInfo

    r, _ = data
    rng = np.random.default_rng(0)
    C, D, N, M = 2, 30, r.n_users, r.n_items
    d = dict(mu=3.5 + 0.01 * rng.standard_normal((C, D)),
             bu=0.1 * rng.standard_normal((C, D, N)), bi=0.1 * rng.standard_normal((C, D, M)),
             U=np.zeros((C, D, N, 0)), V=np.zeros((C, D, M, 0)),
             tau=1 + 0.01 * rng.random((C, D)))
    p = Posterior(d, ModelSpec(rank=0), r.users, r.items, TrainInfo.from_ratings(r), "x")
    dt = to_datatree(p, log_likelihood=r)
    assert "U" not in dt["posterior"] and "bu" in dt["posterior"]
    df = diagnose(p, n_probe=10)
    assert set(df.kind) == {"prediction", "global", "bias"}
    # predictions of a bias-only model are mu + b_u + b_i, draw by draw
    row = df[df.kind == "prediction"].iloc[0]
    assert np.isfinite(row["rhat"]) and row["rhat"] < 1.2


def test_diagnose_one_chain_reports_split_rhat(data):
    """One chain: R-hat of its two halves (split R-hat), not NaN; a chain whose halves
    sit at different offsets is flagged."""
    from bayesmf.posterior import Posterior

    r, t = data

    def one_chain(p):
        d1 = {n: np.asarray(v).reshape((1, -1) + np.shape(v)[2:]) for n, v in p.draws.items()}
        return Posterior(d1, p.spec, p.users, p.items, p.train, "synthetic")

    ok = diagnose(one_chain(make_posterior(r, t, chains=1, draws=200)), n_probe=10)
    assert np.isfinite(ok.rhat).all() and ok.rhat.max() < 1.05
    bad = diagnose(one_chain(make_posterior(r, t, mode="stuck", chains=2, draws=100)),
                   n_probe=10)
    assert bad[bad.kind == "prediction"].rhat.median() > 1.5


def test_implicit_observed_data_and_replicates_are_on_the_preference_scale():
    """An implicit model's listed pair is the preference 1 with confidence c: the
    observed_data group holds 1 (not the count) and the replicates of that pair have the
    noise 1/(tau c) its log likelihood scores (MAP: one draw, so Var = 1/(tau c))."""
    import bayesmf
    from bayesmf.data import Interactions

    rng = np.random.default_rng(0)
    u = np.repeat(np.arange(30), 6)
    i = np.concatenate([rng.permutation(20)[:6] for _ in range(30)])
    counts = rng.integers(1, 40, len(u)).astype(float)
    inter = Interactions.from_arrays(u, i, counts)
    m = bayesmf.BayesMF(method="map", rank=2, likelihood="implicit").fit(inter)
    dt = m.to_datatree(log_likelihood=inter.to_ratings(), posterior_predictive=True)
    assert np.all(dt["observed_data"]["rating"].values == 1.0)
    post = m.posterior
    lik = post.likelihood
    c = lik.encode(inter.to_ratings().rating)
    pp = dt["posterior_predictive"]["rating"].values.reshape(-1)
    mean = post.predict(inter.users.decode(inter.user), inter.items.decode(inter.item),
                        clip=False).mean
    z = (pp - mean) * np.sqrt(float(post.noise_var()[0]) ** -1 * c)
    assert abs(z.std() - 1.0) < 0.15  # standardised by 1/sqrt(tau c): unit spread
