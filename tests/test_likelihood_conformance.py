"""Every inference method x every non-Gaussian likelihood through the conformance mixin
of :mod:`bayesmf.testing.conformance` (the Gaussian family has its own, older suite in
test_conformance.py), plus the refusals of data a family cannot model."""

from __future__ import annotations

import numpy as np
import pytest

from bayesmf.data.ratings import Ratings
from bayesmf.errors import DataError, SpecError
from bayesmf.infer import METHODS, get_method
from bayesmf.model.likelihoods import SUPPORTED
from bayesmf.model.spec import ModelSpec
from bayesmf.testing.conformance import ConformanceTests, fit_fast, planted

LIKELIHOODS = ("ordinal", "bernoulli-probit", "bernoulli-logit")
#: the slowest pairs (35-50 s of compiling each on 2 cores) run in ``make test-all``; their
#: model code still runs in ``make test`` through a sibling pair: the NumPyro ordinal model
#: by ``nuts-ordinal``, the PyMC ordinal model by ``pymc-advi-ordinal``, and the SVI and
#: PyMC NUTS drivers by the Bernoulli pairs
SLOW = {("svi", "ordinal"), ("pymc-nuts", "ordinal")}


@pytest.fixture(scope="module",
                params=[pytest.param((m, lk), marks=[pytest.mark.slow] if (m, lk) in SLOW
                                     else []) for lk in LIKELIHOODS for m in sorted(METHODS)
                        if m in SUPPORTED[lk]],
                ids=lambda p: f"{p[0]}-{p[1]}")
def fitted(request):
    method, lik = request.param
    train = planted(lik)
    return method, lik, train, fit_fast(method, lik, train)


class TestMethodByLikelihood(ConformanceTests):
    pass


def test_ordinal_levels_are_the_training_levels(fitted):
    method, lik, train, post = fitted
    if lik == "ordinal":
        assert post.likelihood.levels == (1.0, 2.0, 3.0, 4.0, 5.0)


def test_mismatched_data_is_refused():
    stars = planted("ordinal")
    for lik in ("bernoulli-probit", "bernoulli-logit"):
        with pytest.raises(DataError, match="0/1"):
            get_method("gibbs")(stars, ModelSpec(rank=1, likelihood=lik))
    post = get_method("map")(stars, ModelSpec(rank=1, likelihood="ordinal"))
    half = Ratings.from_arrays(stars.users.decode(stars.user[:2]),
                               stars.items.decode(stars.item[:2]), [3.5, 4.0])
    with pytest.raises(DataError, match="not rating levels"):
        post.log_predictive_density(half)
    with pytest.raises(SpecError, match="solver='als'"):
        get_method("map")(stars, ModelSpec(rank=1, likelihood="ordinal"), solver="als")


def test_fold_in_works_for_the_augmented_families():
    """A point (MAP) posterior of each augmented family folds a new user in by IRLS: the
    folded user's P(y=1) moves with their data (fold-in of sampled posteriors:
    tests/test_foldin_augmented.py)."""
    from bayesmf.recommend import fold_in

    for lik in ("bernoulli-logit", "bernoulli-probit"):
        post = get_method("map")(planted(lik), ModelSpec(rank=1, likelihood=lik))
        likes = fold_in(post, {1000: 1.0, 1007: 1.0, 1003: 0.0}, user="a")
        hates = fold_in(post, {1000: 0.0, 1007: 0.0, 1003: 1.0}, user="b")
        assert likes.info["mode"] == "mean"
        pl = likes.predict([1000, 1007])["mean"].to_numpy()
        ph = hates.predict([1000, 1007])["mean"].to_numpy()
        assert np.all(pl > ph) and np.all((pl > 0) & (pl < 1))


@pytest.mark.parametrize("lik", ["ordinal", "bernoulli-logit", "bernoulli-probit"])
def test_pymc_advi_minibatches_of_the_discrete_families(lik):
    """pymc-advi with batch_size for the discrete families (PyMC refused their int64
    targets once pm.Minibatch had cast them: a raw TypeError)."""
    post = get_method("pymc-advi")(planted(lik), ModelSpec(rank=2, likelihood=lik),
                                   batch_size=64, num_steps=200, num_samples=10, seed=0)
    assert post.n_samples == 10 and np.isfinite(post.draws["mu"]).all()


def test_ordinal_with_two_levels_in_the_ppl_backends():
    """Two levels and a global mean leave no free cut-point: the NumPyro (NUTS, SVI) and
    PyMC models record the fixed one (they ran the whole fit, then said the draws missed
    'cutpoints')."""
    from numpyro import handlers

    from bayesmf.infer.numpyro_model import build_model, model_data

    tr = planted("ordinal")
    y = np.asarray(tr.rating)
    two = Ratings.from_indices(np.asarray(tr.user), np.asarray(tr.item),
                               np.where(y >= 4, 5.0, 4.0), tr.users, tr.items)
    data = model_data(two, ModelSpec(rank=2, likelihood="ordinal"))
    model = build_model(data.spec, two.n_users, two.n_items, offset=data.offset,
                        y_offset=data.y_offset)
    from numpyro.infer import init_to_uniform

    run = handlers.substitute(handlers.seed(model, 0), substitute_fn=init_to_uniform)
    trace = handlers.trace(run).get_trace(data.users, data.items, data.y)
    assert np.asarray(trace["cutpoints"]["value"]).tolist() == [0.0]
    post = get_method("pymc-advi")(two, ModelSpec(rank=2, likelihood="ordinal"),
                                   num_steps=200, num_samples=10, seed=0)
    assert post.draws["cutpoints"].shape == (1, 10, 1)
    assert np.all(post.draws["cutpoints"] == 0)
    p = post.predict(two.users.decode(two.user[:5]), two.items.decode(two.item[:5]))
    assert np.all((p.mean >= 4.0) & (p.mean <= 5.0))


def test_pymc_advi_variant_is_reachable_from_the_estimator():
    """The full-rank variant is the option advi='fullrank' (as 'method' it clashed with
    BayesMF(method=...): a raw TypeError); a bad value and init_scale with it are named."""
    from bayesmf import BayesMF

    tr = planted("gaussian")
    m = BayesMF("pymc-advi", rank=1, advi="fullrank", num_steps=100, num_samples=5).fit(tr)
    assert m.posterior_.attrs["settings"]["advi"] == "fullrank"
    with pytest.raises(SpecError, match="advi must be 'meanfield' or 'fullrank'"):
        BayesMF("pymc-advi", rank=1, advi="full").fit(tr)
    with pytest.raises(SpecError, match="advi='fullrank' does not take it"):
        get_method("pymc-advi")(tr, ModelSpec(rank=1), advi="fullrank", init_scale=0.2)


def test_pymc_logs_are_quiet_without_progress_and_divergences_warn(capfd):
    """progress=False: PyMC's own log lines ("NUTS[numpyro]: [...]", "Only N samples")
    stay out of stderr; divergent NUTS draws are a warning, not only attrs['n_divergent']."""
    import warnings

    tr = planted("gaussian")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        post = get_method("pymc-nuts")(tr, ModelSpec(rank=1), num_samples=10, num_warmup=10,
                                       num_chains=1, target_accept=0.05, seed=0)
    err = capfd.readouterr().err
    assert "NUTS[numpyro]" not in err and "Only 10 samples" not in err, err
    n = post.attrs["n_divergent"]
    div = [x for x in w if "divergent transition" in str(x.message)]
    assert (len(div) == 1) == (n > 0), (n, [str(x.message) for x in w])


def test_warn_divergences_counts_the_divergent_draws():
    import warnings

    from bayesmf.infer import warn_divergences

    with pytest.warns(UserWarning, match=r"nuts: 2 of 4 kept draws \(50.0%\) ended in a "
                                         r"divergent transition"):
        assert warn_divergences([[True, False], [True, False]], "nuts") == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert warn_divergences(np.zeros(5, bool), "nuts") == 0
