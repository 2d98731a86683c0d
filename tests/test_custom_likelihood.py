"""A likelihood written outside the package (tests/_student_t.py: Student-t with a
learned precision) runs through the seams without package edits: registered for model
files, Gibbs through its augmentation, scores / intervals / ArviZ log-likelihood from its
own predictive and log_prob (not the Gaussian closed forms: ``mean_is_linear`` is not
``gaussian_noise``), SVI keeping its parameters, the SBC simulator drawing from it, and a
clear refusal of the MAP fit that cannot learn its parameter."""

from __future__ import annotations

import numpy as np
import pytest

from _student_t import StudentT, student_t_data
from bayesmf import BayesMF, load
from bayesmf.errors import SpecError
from bayesmf.model.likelihoods import (LIKELIHOODS, SUPPORTED, get_likelihood,
                                       register_likelihood)


@pytest.fixture(scope="module")
def fitted():
    register_likelihood(StudentT)
    m = BayesMF("gibbs", rank=2, likelihood=StudentT(nu=3.0), num_warmup=30,
                num_samples=30, seed=0).fit(student_t_data())
    yield m
    LIKELIHOODS.pop(StudentT.name, None)
    SUPPORTED.pop(StudentT.name, None)


def test_registry_and_model_files(fitted, tmp_path):
    assert get_likelihood("test-student-t") == StudentT()
    assert SUPPORTED["test-student-t"] == tuple(StudentT.methods)
    with pytest.raises(SpecError, match="is taken"):
        register_likelihood(type("Other", (StudentT,), {"name": "gaussian"}))
    with pytest.raises(SpecError, match="needs a class attribute name"):
        register_likelihood(type("Nameless", (StudentT,), {"name": "base"}))
    fitted.save(tmp_path / "t.nc")
    back = load(tmp_path / "t.nc")
    assert back.posterior_.likelihood == StudentT(nu=3.0)
    users = fitted.posterior_.users.ids[:3]
    items = fitted.posterior_.items.ids[:3]
    np.testing.assert_allclose(back.posterior_.predict(users, items).mean,
                               fitted.posterior_.predict(users, items).mean)


def test_scores_and_intervals_come_from_its_predictive(fitted):
    post = fitted.posterior_
    user = post.users.ids[0]
    rec = fitted.recommend([user], n=5, strategy="prob", threshold=3.5, exclude_seen=False)
    items = rec["item"].to_numpy()
    want = post.prob_at_least(np.repeat(user, len(items)), items, 3.5)
    np.testing.assert_allclose(rec["score"], want, rtol=1e-6)
    ucb = fitted.recommend([user], n=3, strategy="ucb", quantile_method="exact",
                           exclude_seen=False)
    q = post.quantiles(np.repeat(user, 3), ucb["item"].to_numpy(), 0.9)[0]
    np.testing.assert_allclose(ucb["score"], q, rtol=1e-5)
    with pytest.raises(SpecError, match="no Gaussian observation noise"):
        post.noise_var()
    with pytest.raises(SpecError, match="method='gaussian'"):
        post.predict([user], [items[0]], method="gaussian")


def test_arviz_log_likelihood_is_its_log_prob(fitted):
    post = fitted.posterior_
    tr = student_t_data().subset(np.arange(40))
    users, items = tr.users.decode(tr.user), tr.items.decode(tr.item)
    y = np.asarray(tr.rating)
    dt = post.to_datatree(log_likelihood=tr)
    ll = np.asarray(dt["log_likelihood"]["rating"]).reshape(post.n_samples, -1)
    mix = post.predictive(users, items).per_draw()
    want = mix.logpdf(np.broadcast_to(y, (post.n_samples, len(y))))
    np.testing.assert_allclose(ll, want, rtol=1e-4, atol=1e-4)


def test_map_is_refused_and_svi_keeps_its_parameters():
    tr = student_t_data()
    with pytest.raises(SpecError, match="MAP fit learns a likelihood's cut-points only"):
        BayesMF("map", rank=2, likelihood=StudentT()).fit(tr)
    from bayesmf.infer import get_method
    from bayesmf.model.spec import ModelSpec

    post = get_method("svi")(tr, ModelSpec(rank=1, likelihood=StudentT()), num_steps=100,
                             num_samples=5, seed=0)
    assert post.draws["tau"].shape == (1, 5) and np.all(post.draws["tau"] > 0)


def test_sbc_simulates_from_the_family():
    from bayesmf.model.spec import ModelSpec
    from bayesmf.testing.sbc import simulate_observations

    spec = ModelSpec(rank=1, likelihood=StudentT(nu=2.5))
    rng = np.random.default_rng(0)
    n = 20000
    t = {"mu": 0.0, "bu": np.zeros(1), "bi": np.zeros(1), "U": np.zeros((1, 1)),
         "V": np.zeros((1, 1)), "tau": 1.0}
    y = simulate_observations(rng, spec, t, np.zeros(n, int), np.zeros(n, int))
    # a t_2.5 has heavy tails (the Gaussian simulator gave excess kurtosis 0)
    assert np.mean(np.abs(y) > 4.0) > 10 * 2 * (1 - 0.99997)


def test_conformance_planted_data_come_from_the_family_itself():
    """``bayesmf.testing.conformance.planted`` simulates a family of one's own through its
    own ``prior_simulate`` (it gave every unknown family the Gaussian stars ``3 + 0.5 z``):
    Student-t data sit around ``eta`` (mean near 0, not 3) with heavy tails."""
    from bayesmf.testing.conformance import planted

    tr = planted(StudentT(nu=3.0), n_users=60, n_items=50, seed=1)
    g = planted("gaussian", n_users=60, n_items=50, seed=1)
    y, yg = np.asarray(tr.rating), np.asarray(g.rating)
    assert abs(np.mean(y)) < 1.0 and abs(np.mean(yg) - 3.0) < 0.5
    # excess kurtosis: t_3 noise is heavy-tailed, the Gaussian branch's is not
    def kurt(x):
        x = x - x.mean()
        return np.mean(x ** 4) / np.mean(x ** 2) ** 2 - 3.0
    assert kurt(y) > 5.0 > kurt(yg)
    assert tr.nnz == g.nnz  # the same observed pattern
