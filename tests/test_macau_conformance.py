"""The conformance mixin over (method, likelihood) for models with side features AND the
SVD++ implicit terms (the Macau prior): every contract of a plain fit holds with features,
and the fitted posterior carries its features and link-matrix draws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesmf.data.features import Features, add_implicit_terms
from bayesmf.infer import get_method
from bayesmf.model.spec import ModelSpec
from bayesmf.testing.conformance import FAST, ConformanceTests, planted

#: (method, likelihood) pairs that take side features (the ordinal and Bernoulli rows
#: and SVI/NUTS, which have their own feature tests in test_macau_numpyro.py, run with
#: ``-m slow``)
_slow = pytest.mark.slow
PAIRS = [("gibbs", "gaussian"), ("map", "gaussian"),
         pytest.param(("gibbs", "ordinal"), marks=_slow),
         pytest.param(("gibbs", "bernoulli-probit"), marks=_slow),
         pytest.param(("gibbs", "bernoulli-logit"), marks=_slow),
         pytest.param(("map", "bernoulli-logit"), marks=_slow),
         pytest.param(("svi", "gaussian"), marks=_slow),
         pytest.param(("nuts", "gaussian"), marks=_slow)]


def _features(train):
    rng = np.random.default_rng(0)
    side = Features.from_frame(pd.DataFrame({"user": train.users.ids,
                                             "age": rng.normal(size=len(train.users))}))
    return add_implicit_terms(train, "user,item", side, None)


@pytest.fixture(scope="module", params=PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def fitted(request):
    method, lik = request.param
    train = planted(lik)
    uf, itf = _features(train)
    post = get_method(method)(train, ModelSpec(rank=2, likelihood=lik), seed=0,
                              user_features=uf, item_features=itf, **FAST[method])
    return method, lik, train, post


class TestMacauByLikelihood(ConformanceTests):
    def test_features_and_link_draws(self, fitted):
        method, lik, train, post = fitted
        uf, itf = post.features["user"], post.features["item"]
        assert uf.has_implicit and itf.has_implicit
        assert uf.n_features == 1 + len(train.items) and itf.n_features == len(train.users)
        b = post.draws["beta_U"]
        assert b.shape[-2:] == (uf.n_features, 2) and np.all(np.isfinite(b))
        assert np.all(post.draws["lambda_beta_V"] > 0)
