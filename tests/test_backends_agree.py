"""The same model through different backends gives the same answers.

On one small synthetic problem (25 users x 15 items, rank 2):

* NumPyro NUTS, PyMC NUTS (and the Gibbs sampler, whose Normal-Wishart prior the NUTS
  models reproduce exactly through the Bartlett decomposition) agree on the posterior
  predictive means of a fixed probe set of pairs within Monte Carlo error:
  ``|m_a - m_b| <= Z * sqrt(mcse_a^2 + mcse_b^2)`` with MCSE from ``arviz_stats.mcse``
  (Z = 4.5, about a Bonferroni 1e-3 level over the probe pairs). R-hat on the same
  (identifiable) predictions is checked first so the MCSE means something.
* Variational fits (NumPyro SVI ``AutoNormal``, PyMC ADVI) have predictive means close to
  NUTS, and their interval coverage is *measured*: the fraction of NUTS posterior draws
  of the noise-free prediction that fall in the VI's central 90% interval (mean-field VI
  is expected to be over-confident, i.e. < 0.9) and the held-out 90% predictive coverage.
  Only finiteness and a loose sanity bound are asserted; the numbers are printed and
  recorded with ``record_property``.

These fits take minutes on 2 shared CPU cores, so the module is ``slow``
(``make test-all``).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from bayesmf.data.ratings import Ratings
from bayesmf.infer import get_method
from bayesmf.model.spec import ModelSpec

pytestmark = pytest.mark.slow

Z = 4.5
MCMC = dict(num_samples=300, num_warmup=300, num_chains=2)


def _problem(seed=3, n_users=25, n_items=15, k=2):
    rng = np.random.default_rng(seed)
    U = rng.normal(size=(n_users, k))
    V = rng.normal(size=(n_items, k))
    bu = 0.4 * rng.normal(size=n_users)
    bi = 0.4 * rng.normal(size=n_items)
    uu, ii = np.meshgrid(np.arange(n_users), np.arange(n_items), indexing="ij")
    uu, ii = uu.ravel(), ii.ravel()
    r = 3.2 + bu[uu] + bi[ii] + 0.6 * np.sum(U[uu] * V[ii], 1) + 0.6 * rng.normal(size=len(uu))
    perm = rng.permutation(len(uu))
    n_train = int(0.6 * len(uu))
    tr, te = np.sort(perm[:n_train]), np.sort(perm[n_train:])
    train = Ratings.from_arrays(uu[tr], ii[tr], r[tr])
    # every user and item must be in train for the probe pairs to be "known"
    assert train.n_users == n_users and train.n_items == n_items
    probe_u = np.concatenate([uu[tr][:15], uu[te][:15]])
    probe_i = np.concatenate([ii[tr][:15], ii[te][:15]])
    return train, (uu[te], ii[te], r[te]), (probe_u, probe_i)


@pytest.fixture(scope="module")
def problem():
    return _problem()


@pytest.fixture(scope="module")
def spec():
    return ModelSpec(rank=2)


_FITS: dict = {}


def _fit(name, problem, spec, **opts):
    if name not in _FITS:
        _FITS[name] = get_method(name)(problem[0], spec, seed=11, **opts)
    return _FITS[name]


def _pred_draws(post, probe):
    """Per-draw noise-free predictions ``(C, D, P)`` for the probe pairs (raw ids)."""
    u, i, ku, ki = post.encode_pairs(*probe)
    m, _ = post.pair_moments(u, i, ku, ki)
    return m.reshape(post.n_chains, post.n_draws, -1)


def _summ(post, probe):
    from arviz_stats import mcse, rhat

    m = _pred_draws(post, probe)
    return m.mean(axis=(0, 1)), np.asarray(mcse(m)), np.asarray(rhat(m))


def _mcmc(name, problem, spec):
    if name == "gibbs":
        if importlib.util.find_spec("bayesmf.infer.gibbs") is None:
            pytest.skip("bayesmf.infer.gibbs is not in this checkout yet")
        return _fit(name, problem, spec, num_samples=600, num_warmup=200, num_chains=2)
    return _fit(name, problem, spec, **MCMC)


@pytest.mark.parametrize("other", ["pymc-nuts", "gibbs"])
def test_mcmc_backends_agree_within_mcse(problem, spec, other):
    probe = problem[2]
    a = _mcmc("nuts", problem, spec)
    b = _mcmc(other, problem, spec)
    ma, sa, ra = _summ(a, probe)
    mb, sb, rb = _summ(b, probe)
    assert np.all(ra < 1.1), f"nuts R-hat on predictions: {ra.max():.3f}"
    assert np.all(rb < 1.1), f"{other} R-hat on predictions: {rb.max():.3f}"
    z = np.abs(ma - mb) / np.sqrt(sa ** 2 + sb ** 2)
    print(f"nuts vs {other}: max |diff| {np.abs(ma - mb).max():.4f}, max z {z.max():.2f}, "
          f"median mcse {np.median(np.sqrt(sa ** 2 + sb ** 2)):.4f}")
    assert np.all(z < Z), (np.abs(ma - mb), np.sqrt(sa ** 2 + sb ** 2))
    # the noise precision is identifiable too
    ta, tb = a.flat("tau"), b.flat("tau")
    assert abs(ta.mean() - tb.mean()) < Z * np.hypot(
        ta.std() / np.sqrt(len(ta) / 10), tb.std() / np.sqrt(len(tb) / 10))


@pytest.mark.parametrize("vi, opts", [("svi", dict(num_steps=6000, num_samples=1000)),
                                      ("pymc-advi", dict(num_steps=6000, num_samples=1000))])
def test_vi_means_close_and_coverage_measured(problem, spec, vi, opts, record_property):
    probe = problem[2]
    ref = _mcmc("nuts", problem, spec)
    q = _fit(vi, problem, spec, **opts)
    m_ref = _pred_draws(ref, probe).reshape(-1, len(probe[0]))
    m_vi = _pred_draws(q, probe).reshape(-1, len(probe[0]))
    diff = np.abs(m_vi.mean(0) - m_ref.mean(0))
    sd_ref = m_ref.std(0)
    z = diff / np.maximum(sd_ref, 0.05)
    # means: close to NUTS in posterior-sd units. Mean-field VI is biased here, and the
    # bias is measured, not hidden: on this problem NumPyro AutoNormal shrinks the factors
    # (mean |U| 0.45 vs 0.75) and explains the data with more noise (tau 1.2 vs 2.5),
    # giving median z ~0.6 and max z ~1.6 over the probe pairs; PyMC ADVI median ~0.3,
    # max ~0.9. The bounds catch a broken fit, not that known bias.
    assert np.median(z) < 1.0 and np.all(z < 2.5), (diff, sd_ref)
    record_property(f"{vi}_mean_z_median", float(np.median(z)))
    record_property(f"{vi}_mean_z_max", float(z.max()))
    # parameter-interval coverage: NUTS draws inside the VI's central 90% interval
    lo, hi = np.quantile(m_vi, [0.05, 0.95], axis=0)
    cov_param = float(np.mean((m_ref >= lo) & (m_ref <= hi)))
    width_ratio = float(np.median((hi - lo) / np.subtract(*np.quantile(m_ref, [0.95, 0.05], 0))))
    # held-out predictive coverage (noise included) for VI and NUTS
    tu, ti, ty = problem[1]
    cov_vi = float(np.mean((ty >= q.predict(tu, ti).lower) & (ty <= q.predict(tu, ti).upper)))
    pr = ref.predict(tu, ti)
    cov_nuts = float(np.mean((ty >= pr.lower) & (ty <= pr.upper)))
    print(f"{vi}: param-interval coverage of NUTS draws {cov_param:.3f} (nominal 0.90), "
          f"interval width ratio vs NUTS {width_ratio:.2f}; held-out 90% coverage "
          f"{vi} {cov_vi:.3f} vs nuts {cov_nuts:.3f}; max |mean diff| {diff.max():.4f}, "
          f"z median {np.median(z):.2f} max {z.max():.2f}; tau {q.flat('tau').mean():.2f} vs "
          f"nuts {ref.flat('tau').mean():.2f}")
    record_property(f"{vi}_param_coverage90", cov_param)
    record_property(f"{vi}_width_ratio", width_ratio)
    record_property(f"{vi}_heldout_coverage90", cov_vi)
    assert np.isfinite(cov_param) and np.isfinite(cov_vi)
    assert 0.2 <= cov_param <= 1.0
    assert 0.5 <= cov_vi <= 1.0
    assert q.attrs["steps"] > 0 and np.isfinite(q.attrs["final_elbo"])
