"""Pólya-Gamma and truncated-normal augmentation samplers (bayesmf.model.augment).

Distributional checks are Monte Carlo with fixed keys: moments within 5 Monte Carlo
standard errors of the closed forms, Kolmogorov-Smirnov tests against independent
references (a float64 numpy series sampler for PG, scipy.stats.truncnorm), each paired
with a check that the same test rejects a slightly wrong distribution.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from bayesmf.model.augment import (polya_gamma, polya_gamma_mean, polya_gamma_var,
                                   truncated_normal)

N_MOM = 200_000  # draws per c for the moment tests
N_KS = 20_000  # draws per case for the KS tests

_pg = jax.jit(polya_gamma, static_argnums=2)
_tn = jax.jit(truncated_normal)
_pg_vmap = jax.jit(jax.vmap(polya_gamma, (0, None)))
_tn_vmap = jax.jit(jax.vmap(truncated_normal, (0, None, None, None, None)))


# ----------------------------------------------------------------------------- references
def _pg_series_moments(c, terms=200_000):
    """Mean and variance of PG(1, c) from its series representation (float64):
    PG = 1/(2 pi^2) sum_k g_k / d_k, d_k = (k-1/2)^2 + c^2/(4 pi^2), g_k ~ Exp(1)."""
    k = np.arange(1, terms + 1, dtype=np.float64)
    a = c / (2 * np.pi)
    d = (k - 0.5) ** 2 + a * a
    tail = 1.0 / terms if a == 0 else (np.pi / 2 - np.arctan(terms / a)) / a  # sum_{k>K} 1/d_k
    mean = (np.sum(1.0 / d) + tail) / (2 * np.pi ** 2)
    var = np.sum(1.0 / d ** 2) / (4 * np.pi ** 4)  # tail < 1/(3 K^3): negligible
    return mean, var


def _pg_reference_draws(rng, c, n, terms=2000, chunk=2000):
    """PG(1, c) draws from the series truncated at ``terms`` terms, with the truncated
    tail replaced by its mean (its standard deviation is ~1e-7)."""
    k = np.arange(1, terms + 1, dtype=np.float64)
    a = c / (2 * np.pi)
    inv_d = 1.0 / ((k - 0.5) ** 2 + a * a)
    tail = 1.0 / terms if a == 0 else (np.pi / 2 - np.arctan(terms / a)) / a
    out = np.empty(n)
    for s in range(0, n, chunk):
        g = rng.standard_exponential((min(chunk, n - s), terms))
        out[s:s + chunk] = g @ inv_d
    return (out + tail) / (2 * np.pi ** 2)


def _moments_z(x, mean, var):
    """z-scores of the sample mean and variance against the given values."""
    x = np.asarray(x, np.float64)
    n = x.size
    m = x.mean()
    v = x.var()
    m4 = np.mean((x - m) ** 4)
    return (m - mean) / math.sqrt(v / n), (v - var) / math.sqrt((m4 - v * v) / n)


# ----------------------------------------------------------------------------- PG moments
@pytest.mark.parametrize("c", [0.0, 1e-4, 0.01, 0.1, 0.5, 0.999, 1.001, 2.0, 5.0, 20.0, 50.0])
def test_pg_closed_form_moments_match_series(c):
    m_ref, v_ref = _pg_series_moments(c)
    np.testing.assert_allclose(float(polya_gamma_mean(np.float32(c))), m_ref, rtol=2e-6)
    np.testing.assert_allclose(float(polya_gamma_var(np.float32(c))), v_ref, rtol=2e-6)
    with jax.enable_x64(True):
        np.testing.assert_allclose(float(polya_gamma_mean(np.float64(c))), m_ref, rtol=1e-9)
        np.testing.assert_allclose(float(polya_gamma_var(np.float64(c))), v_ref, rtol=1e-9)
        # the textbook closed form, where it does not cancel or overflow
        if c >= 0.1:
            closed = (math.sinh(c) - c) / (4 * c ** 3 * math.cosh(c / 2) ** 2)
            np.testing.assert_allclose(float(polya_gamma_var(np.float64(c))), closed, rtol=1e-9)
            np.testing.assert_allclose(float(polya_gamma_mean(np.float64(c))),
                                       math.tanh(c / 2) / (2 * c), rtol=1e-12)


def test_pg_moment_functions_limits_symmetry_and_h():
    assert float(polya_gamma_mean(0.0)) == 0.25
    assert float(polya_gamma_var(0.0)) == pytest.approx(1 / 24, rel=1e-7)
    c = jnp.array([0.0, 0.3, 3.0, 40.0, 1e4], jnp.float32)
    np.testing.assert_array_equal(polya_gamma_mean(-c), polya_gamma_mean(c))
    np.testing.assert_array_equal(polya_gamma_var(-c), polya_gamma_var(c))
    np.testing.assert_allclose(polya_gamma_mean(c, 3), 3 * polya_gamma_mean(c), rtol=1e-6)
    np.testing.assert_allclose(polya_gamma_var(c, 3), 3 * polya_gamma_var(c), rtol=1e-6)
    # large c: var -> 1/(2 c^3), mean -> 1/(2c), finite in float32
    big = jnp.array([200.0, 1e4], jnp.float32)
    np.testing.assert_allclose(polya_gamma_var(big), 1 / (2 * np.float64(big) ** 3), rtol=1e-5)
    np.testing.assert_allclose(polya_gamma_mean(big), 1 / (2 * np.float64(big)), rtol=1e-6)
    assert polya_gamma_mean(c).dtype == jnp.float32
    # continuity across the series switch points (|c| = 0.02 and 1)
    for c0 in (0.02, 1.0):
        lo_, hi_ = np.float32(c0) * (1 - 1e-6), np.float32(c0) * (1 + 1e-6)
        assert abs(float(polya_gamma_var(hi_)) / float(polya_gamma_var(lo_)) - 1) < 1e-5
        assert abs(float(polya_gamma_mean(hi_)) / float(polya_gamma_mean(lo_)) - 1) < 1e-5


@pytest.mark.parametrize("c", [0.0, 0.1, 1.0, 3.1, 5.0, 20.0, 50.0])
def test_pg_draw_moments(c):
    x = _pg(jax.random.key(11), jnp.full(N_MOM, c, jnp.float32), 1)
    assert x.dtype == jnp.float32 and bool(jnp.all(x > 0))
    zm, zv = _moments_z(x, float(polya_gamma_mean(np.float64(c))),
                        float(polya_gamma_var(np.float64(c))))
    assert abs(zm) < 5 and abs(zv) < 5, (zm, zv)
    # the same check rejects the mean of a nearby c (it can fail)
    c_off = np.float64(c * 1.2 + 0.5)
    zm_off, _ = _moments_z(x, float(polya_gamma_mean(c_off)), float(polya_gamma_var(c_off)))
    assert abs(zm_off) > 5


@pytest.mark.parametrize("c", [0.0, 1.0, 5.0])
def test_pg_h3_moments(c):
    x = _pg(jax.random.key(12), jnp.full(N_MOM // 2, c, jnp.float32), 3)
    zm, zv = _moments_z(x, 3 * float(polya_gamma_mean(np.float64(c))),
                        3 * float(polya_gamma_var(np.float64(c))))
    assert abs(zm) < 5 and abs(zv) < 5, (zm, zv)
    zm1, _ = _moments_z(x, float(polya_gamma_mean(np.float64(c), 2)),
                        float(polya_gamma_var(np.float64(c), 2)))
    assert abs(zm1) > 5  # the mean of PG(2, c) is rejected


# ----------------------------------------------------------------------------- PG KS
@pytest.mark.parametrize("c", [0.0, 2.0, 5.0])
def test_pg_ks_against_series_reference(c):
    rng = np.random.default_rng(int(10 * c) + 1)
    ref = _pg_reference_draws(rng, c, N_KS)
    # staged path (one long array) and plain-loop path (vmap over short arrays)
    x_long = np.asarray(_pg(jax.random.key(21), jnp.full(N_KS, c, jnp.float32), 1))
    keys = jax.random.split(jax.random.key(22), 10)
    x_short = np.asarray(jax.vmap(lambda k: _pg(k, jnp.full(N_KS // 10, c, jnp.float32), 1))(keys))
    for x in (x_long, x_short.ravel()):
        assert stats.ks_2samp(x, ref).pvalue > 1e-3
    # the KS test has the power to see c + 1 (a mean 8% to 20% lower)
    ref_off = _pg_reference_draws(np.random.default_rng(99), c + 1.0, N_KS)
    assert stats.ks_2samp(x_long, ref_off).pvalue < 1e-6


def _a_n(n, x, left):
    """Devroye's coefficients a_n(x) of the J*(1, 0) density, float64 (paper, Section 4)."""
    h = np.pi * (n + 0.5)
    if left:
        return h * (2 / (np.pi * x)) ** 1.5 * np.exp(-2 * (n + 0.5) ** 2 / x)
    return h * np.exp(-((n + 0.5) ** 2) * np.pi ** 2 * x / 2)


def test_pg_alternating_series_test():
    from bayesmf.model.augment import _T, _series_accept

    x = np.linspace(0.05, 3.0, 400)
    # the two expansions are the same density where both converge
    mid = x[(x > 0.3) & (x < 1.5)]
    left = sum((-1) ** n * _a_n(n, mid, True) for n in range(60))
    right = sum((-1) ** n * _a_n(n, mid, False) for n in range(60))
    np.testing.assert_allclose(left, right, rtol=1e-12)
    # the unrolled test decides y < S(x) = sum_n (-1)^n a_n/a_0 on the piece of x
    is_left = x <= _T
    S = np.where(is_left,
                 sum((-1) ** n * _a_n(n, x, True) for n in range(60)) / _a_n(0, x, True),
                 sum((-1) ** n * _a_n(n, x, False) for n in range(60)) / _a_n(0, x, False))
    assert S.min() < 0.995  # the test is not trivially "accept"
    X, Y = np.meshgrid(x, np.linspace(0.99, 1.0, 301))
    SS = np.broadcast_to(S, X.shape)
    acc = np.asarray(_series_accept(jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32),
                                    jnp.asarray(X > _T)))
    clear = np.abs(Y - SS) > 1e-6  # away from float32 ties
    np.testing.assert_array_equal(acc[clear], (Y < SS)[clear])


@pytest.mark.parametrize("z", [0.0, 0.5, 1.5, 1.6, 2.5, 10.0])
def test_pg_round_acceptance_rate(z):
    """A proposal round accepts with probability (target mass)/(envelope mass) =
    (1/cosh z)/(p + q): this checks the piece weights, the envelopes and the whole accept
    step (series included: at z = 0 it rejects only 0.06% of the proposals)."""
    from bayesmf.model.augment import _T, _jstar1_args, _jstar1_draw

    n = 1_000_000
    K = np.pi ** 2 / 8 + z * z / 2
    p = np.pi / (2 * K) * np.exp(-K * _T)
    q = 4 * stats.norm.cdf(-1 / np.sqrt(_T)) if z < 1 / _T else 2 * np.exp(-z)
    rate = 1 / np.cosh(z) / (p + q)
    draw = jax.jit(lambda k, zz: _jstar1_draw(k, _jstar1_args(zz)))
    prop, ok = draw(jax.random.key(31), jnp.full(n, z, jnp.float32))
    assert bool(jnp.all(prop >= 0))
    se = math.sqrt(rate * (1 - rate) / n)
    assert abs(float(jnp.mean(ok)) - rate) < 5 * se, (float(jnp.mean(ok)), rate, se)


def test_pg_reference_sampler_matches_closed_moments():
    # the reference itself is checked, so a KS pass is not against a wrong reference
    ref = _pg_reference_draws(np.random.default_rng(5), 2.0, N_KS)
    zm, zv = _moments_z(ref, float(polya_gamma_mean(np.float64(2.0))),
                        float(polya_gamma_var(np.float64(2.0))))
    assert abs(zm) < 5 and abs(zv) < 5


# ----------------------------------------------------------------------------- PG mechanics
def test_pg_jit_vmap_determinism_and_edge_values():
    key = jax.random.key(3)
    c = jnp.linspace(-8, 8, 5000, dtype=jnp.float32)
    a = _pg(key, c, 1)
    np.testing.assert_array_equal(a, _pg(key, c, 1))  # same key, same draws
    assert not np.array_equal(a, _pg(jax.random.key(4), c, 1))
    np.testing.assert_array_equal(_pg(key, -c, 1), a)  # PG is symmetric in c
    assert bool(jnp.all(jnp.isfinite(a) & (a > 0)))
    # vmap over keys gives each key's own draws (to rounding: same accept decisions)
    keys = jax.random.split(key, 3)
    for n in (50, 5000):  # plain loop and staged compaction
        cc = c[:n]
        vm = np.asarray(_pg_vmap(keys, cc))
        each = np.stack([np.asarray(_pg(k, cc, 1)) for k in keys])
        np.testing.assert_allclose(vm, each, rtol=1e-5)
    # NaN -> NaN, +-inf -> 0 (the limit), the rest unaffected and positive
    e = _pg(key, jnp.array([jnp.nan, jnp.inf, -jnp.inf, 0.0, 60.0, -1e4]), 1)
    assert np.isnan(e[0]) and e[1] == 0 and e[2] == 0
    assert bool(jnp.all(jnp.isfinite(e[3:]) & (e[3:] > 0)))
    # shapes and dtypes
    assert _pg(key, jnp.zeros((2, 3)), 2).shape == (2, 3)
    assert _pg(key, 1.0, 1).shape == ()
    assert _pg(key, jnp.ones(3, jnp.int32), 1).dtype == jnp.float32
    with jax.enable_x64(True):
        assert _pg(key, jnp.ones(3, jnp.float64), 1).dtype == jnp.float64
        assert _pg(key, jnp.ones(3, jnp.float32), 1).dtype == jnp.float32


def test_pg_h_validation_and_no_gamma_primitive():
    key = jax.random.key(0)
    with pytest.raises(ValueError):
        polya_gamma(key, jnp.ones(3), h=0)
    with pytest.raises(TypeError):
        polya_gamma(key, jnp.ones(3), h=2.5)
    jaxpr = str(jax.make_jaxpr(polya_gamma)(key, jnp.ones(5000)))
    assert "while" in jaxpr and "random_gamma" not in jaxpr


# ----------------------------------------------------------------------------- truncated normal
INF = np.inf
TN_CASES = [  # mean, sd, lower, upper
    (0.0, 1.0, -1.0, 2.0),  # two-sided central
    (2.0, 1.0, 0.0, INF),  # probit y=1, mean +2
    (-2.0, 1.0, 0.0, INF),  # probit y=1, mean -2
    (2.0, 1.0, -INF, 0.0),  # probit y=0
    (-2.0, 1.0, -INF, 0.0),
    (0.0, 1.0, 8.0, INF),  # far tail
    (0.0, 1.0, 30.0, INF),
    (-40.0, 1.0, 0.0, INF),
    (40.0, 1.0, -INF, 0.0),
    (0.0, 1.0, 5.0, 5.001),  # narrow, far out
    (0.3, 1.0, -0.001, 0.002),  # narrow, central
    (0.0, 1.0, 3.0, 3.5),  # two-sided tail (inversion)
    (0.0, 1.0, 4.0, INF),  # exponential rejection near its threshold
    (0.0, 1.0, 4.5, 6.0),
    (0.0, 1.0, 0.0, 0.7),  # uniform rejection (not narrow enough to be flat)
    (1.0, 1.0, 1.5, 1.8),
    (0.0, 1.0, 6.0, 7.0),  # two-sided far tail (rejection)
    (0.0, 1.0, -7.0, -6.0),
    (1.0, 0.5, 1.2, INF),  # sd != 1
    (-1.0, 3.0, -INF, INF),  # no truncation
]


@pytest.mark.parametrize("mean,sd,lower,upper", TN_CASES)
def test_tn_ks_against_scipy(mean, sd, lower, upper):
    full = lambda v: jnp.full(N_KS, v, jnp.float32)  # noqa: E731
    x = _tn(jax.random.key(7), full(mean), full(lower), full(upper), full(sd))
    assert x.dtype == jnp.float32
    x = np.asarray(x, np.float64)
    assert np.all(np.isfinite(x))
    assert np.all(x >= np.float32(lower)) and np.all(x <= np.float32(upper))
    ref = stats.truncnorm((lower - mean) / sd, (upper - mean) / sd, loc=mean, scale=sd)
    assert stats.kstest(x, ref.cdf).pvalue > 1e-3
    # the same test rejects the reference shifted by 10% of its standard deviation
    shift = 0.1 * ref.std()
    assert stats.kstest(x, lambda v: ref.cdf(v - shift)).pvalue < 1e-4


@pytest.mark.parametrize("mean,lower", [(0.0, 4.0), (0.0, 8.0), (0.0, 30.0), (-40.0, 0.0),
                                        (0.0, 12.5)])
def test_tn_far_tail_mean(mean, lower):
    full = lambda v: jnp.full(N_KS, v, jnp.float32)  # noqa: E731
    x = _tn(jax.random.key(8), full(mean), full(lower), full(INF), full(1.0))
    x = np.asarray(x, np.float64)
    ref = stats.truncnorm(lower - mean, INF, loc=mean)
    se = ref.std() / math.sqrt(N_KS)
    assert abs(x.mean() - ref.mean()) < 5 * se
    # the spread too (relative SE of an sd here is about 1%): a draw that lost its float32
    # precision near a far-away bound, or a proposal accepted without its test, fails it
    assert abs(x.std() / ref.std() - 1) < 0.05


def test_tn_bounds_grid_float32():
    means = jnp.array([-60, -40, -10, -3, -1, 0, 1, 3, 10, 40, 60], jnp.float32)[:, None]
    bounds = np.array([(-INF, 0), (0, INF), (-1, 1), (5, 5.001), (30, INF), (-INF, -30),
                       (2, 2), (-1e-4, 1e-4), (8, 8.5), (-INF, INF), (0, 1e-7), (50, 51)],
                      np.float32)
    lo, hi = jnp.asarray(bounds[:, 0]), jnp.asarray(bounds[:, 1])
    for s in range(3):
        x = _tn(jax.random.key(s), means, lo, hi, jnp.float32(0.7))
        assert x.shape == (11, 12) and x.dtype == jnp.float32
        assert bool(jnp.all(jnp.isfinite(x))), np.argwhere(~np.isfinite(np.asarray(x)))
        assert bool(jnp.all((x >= lo) & (x <= hi)))
    np.testing.assert_array_equal(x[:, 6], 2.0)  # lower == upper
    # a bound so far out that (bound - mean)/sd overflows: the draw is that bound
    far = _tn(jax.random.key(0), jnp.array([0.0, 0.0]), jnp.array([1e10, -jnp.inf]),
              jnp.array([jnp.inf, -1e10]), jnp.float32(1e-30))
    np.testing.assert_array_equal(far, [1e10, -1e10])


def test_tn_invalid_inputs_give_nan_and_others_unaffected():
    key = jax.random.key(0)
    x = _tn(key, jnp.array([0.0, jnp.nan, 0.0, 0.0, 0.0]),
                         jnp.array([1.0, 0.0, 0.0, 0.0, -1.0]),
                         jnp.array([0.0, 1.0, 1.0, 1.0, 1.0]),
                         jnp.array([1.0, 1.0, 0.0, -1.0, 1.0]))
    assert bool(jnp.all(jnp.isnan(x[:4]))) and -1 <= float(x[4]) <= 1


def test_tn_jit_vmap_broadcast_determinism():
    key = jax.random.key(5)
    n = 5000
    m = jnp.linspace(-45, 45, n, dtype=jnp.float32)
    pos = jnp.arange(n) % 2 == 0
    lo = jnp.where(pos, 0.0, -jnp.inf)
    hi = jnp.where(pos, jnp.inf, 0.0)
    a = _tn(key, m, lo, hi, 1.0)
    np.testing.assert_array_equal(a, _tn(key, m, lo, hi, 1.0))
    assert not np.array_equal(a, _tn(jax.random.key(6), m, lo, hi, 1.0))
    assert bool(jnp.all(jnp.where(pos, a >= 0, a <= 0)))
    keys = jax.random.split(key, 3)
    for k in (40, n):  # plain loop and staged compaction
        vm = _tn_vmap(keys, m[:k], lo[:k], hi[:k], 1.0)
        each = jnp.stack([_tn(kk, m[:k], lo[:k], hi[:k], 1.0) for kk in keys])
        np.testing.assert_allclose(vm, each, rtol=1e-5, atol=1e-6)
    assert _tn(key, jnp.zeros((3, 1)), jnp.zeros(4), jnp.inf, 1.0).shape == (3, 4)
    assert _tn(key, 0.0, 1.0, 2.0, 1.0).shape == ()
    with jax.enable_x64(True):
        x = _tn(key, jnp.zeros(100), 30.0, jnp.inf, 1.0)
        assert x.dtype == jnp.float64 and bool(jnp.all(x >= 30.0))
        assert _tn(key, jnp.zeros(3, jnp.float32), 0.0, 1.0, 1.0).dtype == jnp.float32
