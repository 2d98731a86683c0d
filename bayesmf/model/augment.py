r"""Data-augmentation samplers of the Gibbs sampler for non-Gaussian likelihoods (pure JAX).

* :func:`polya_gamma` -- exact Pólya-Gamma draws :math:`\omega\sim\mathrm{PG}(h, c)` for the
  logistic (Bernoulli-logit) likelihood (Polson, Scott & Windle 2013), with the closed-form
  moments :func:`polya_gamma_mean` and :func:`polya_gamma_var`;
* :func:`truncated_normal` -- :math:`\mathcal N(\mu, s^2)` truncated to an interval, for the
  probit (Albert & Chib 1993, one-sided at 0) and ordered-probit (two-sided between
  cutpoints) augmentations.

Both samplers are elementwise, exact rejection samplers vectorised as a ``lax.while_loop``
that redraws proposals only for the entries not yet accepted; they are ``jit``- and
``vmap``-compatible, draw in the floating dtype of their inputs (float32 or float64) and
avoid ``jax.random.gamma`` (seconds of XLA compile time).
"""

from __future__ import annotations

import math
import operator

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import erf, log_ndtr, ndtri

__all__ = ["polya_gamma", "polya_gamma_mean", "polya_gamma_var", "truncated_normal"]

# ---------------------------------------------------------------- shared helpers

_MAX_ROUNDS = 1000  # safety bound of the rejection loops; never reached (acceptance > 0.7)


def _float_dtype(*xs):
    """Floating dtype of the inputs (integers -> JAX's default float); computations below
    float32 (float16, bfloat16) run in float32."""
    dt = jnp.result_type(*xs)
    if not jnp.issubdtype(dt, jnp.floating):
        dt = jnp.result_type(float)
    if jnp.finfo(dt).bits < 32:
        dt = jnp.dtype(jnp.float32)
    return jnp.dtype(dt)


def _open_uniform(key, shape, dtype):
    """Uniforms on the open interval (0, 1).

    ``jax.random.uniform`` returns multiples of eps on [0, 1); adding eps/2 moves them to
    the midpoints, exactly representable, so ``log(u)``, ``log(1-u)`` and ``ndtri(u)`` are
    finite."""
    return jax.random.uniform(key, shape, dtype) + jnp.asarray(jnp.finfo(dtype).eps / 2, dtype)


def _rounds(key, draw, args, x, max_rounds):
    """Rejection rounds on all of ``x`` until no entry is pending (``x < 0``) or
    ``max_rounds``: ``draw(key, args) -> (proposal >= 0, accepted)``; an accepted
    proposal is stored only into a pending entry, and "accepted" is read back from the
    stored value (``x >= 0``), never recomputed (XLA may evaluate a duplicated comparison
    with different rounding)."""

    def cond(s):
        i, x = s
        return (i < max_rounds) & ~jnp.all(x >= 0)

    def body(s):
        i, x = s
        prop, ok = draw(jax.random.fold_in(key, i), args)
        return i + 1, jnp.where(ok & (x < 0), prop, x)

    return lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), x))[1]


def _batched_rejection(key, draw, make_args, inputs, x):
    """Exact batched rejection sampling of the pending entries (``x < 0``) of the 1-D
    ``x``; ``make_args(*inputs)`` gives the tuple of 1-D per-entry parameters of ``draw``
    (see :func:`_rounds`), computed only when some entry is pending.

    A round costs the same for accepted and pending entries, so a round on the whole array
    runs only when more than a quarter of it is pending; then the pending entries are
    gathered (``nonzero`` with a static size) into shorter arrays: one round on a quarter
    of the length when more than 1/16 is pending, then, until none is left, batches of 1/16
    of the length, each run until all its entries are accepted. Every round draws fresh
    independent variates, so an entry's accepted value is an exact draw whichever stage
    accepts it; a stage without enough pending entries does not run. Arrays shorter than
    4096 run the plain loop."""
    n = x.shape[0]

    def run(x):
        # the barrier ties the inputs to the loop-carried x, so that XLA's loop-invariant
        # code motion cannot hoist make_args (and the invariant parts of the rounds) out
        # of the loops, i.e. compute them also when nothing is pending
        x, *ins = lax.optimization_barrier((x, *inputs))
        args = make_args(*ins)
        if n < 4096:
            return _rounds(key, draw, args, x, _MAX_ROUNDS)
        # (length, rounds per batch, batches, runs while more than this many are pending)
        stages = ((n, 1, 1, n // 4), (n // 4, 1, 1, n // 16),
                  (n // 16, _MAX_ROUNDS, _MAX_ROUNDS, 0))
        for s, (m, rounds, batches, more_than) in enumerate(stages):

            def cond(c, batches=batches, more_than=more_than):
                j, x = c
                return (j < batches) & (jnp.sum(x < 0) > more_than)

            def body(c, m=m, rounds=rounds, s=s):
                j, x = c
                kb = jax.random.fold_in(jax.random.fold_in(key, s), j)
                if m == n:
                    return j + 1, _rounds(kb, draw, args, x, rounds)
                idx = jnp.nonzero(x < 0, size=m, fill_value=n)[0]
                sub = tuple(jnp.take(a, idx, axis=0, mode="clip") for a in args)
                xs = jnp.where(idx < n, -1.0, 0.0).astype(x.dtype)  # padding slots: done
                xs = _rounds(kb, draw, sub, xs, rounds)
                return j + 1, x.at[idx].set(xs, mode="drop")

            x = lax.while_loop(cond, body, (jnp.asarray(0, jnp.int32), x))[1]
        return x

    # a loop of at most one pass: nothing (not even the arguments) is computed when no
    # entry is pending, also under vmap (where lax.cond would run both branches)
    return lax.while_loop(lambda c: (c[0] < 1) & ~jnp.all(c[1] >= 0),
                          lambda c: (c[0] + 1, run(c[1])),
                          (jnp.asarray(0, jnp.int32), x))[1]


# ---------------------------------------------------------------- Pólya-Gamma

_T = 0.64  # Devroye's truncation point t
_PI2 = math.pi ** 2
# Levy(1) mass on (0, t]: P(1/N^2 <= t) = 2 Phi(-1/sqrt(t)); the left envelope is 2*Levy
_PHI_T = 0.5 * math.erfc((1.0 / math.sqrt(_T)) / math.sqrt(2.0))  # Phi(-1/sqrt t)
_LOG_Q_LEVY = math.log(4.0 * _PHI_T)
_SERIES_TERMS = 4  # terms of the alternating series (a_5/a_0 < 1e-39: no effect)


def _series_accept(x, y, right):
    r"""Devroye's alternating-series test ``y < S(x) = sum_n (-1)^n a_n(x)/a_0(x)``.

    ``a_n/a_0 = (2n+1) e^{n(n+1)/2}`` with ``e = exp(-4/x)`` on the left piece and
    ``e = exp(-pi^2 x)`` on the right. The coefficients decrease, so the partial sums
    alternate around S: an odd partial sum above ``y`` accepts, an even one below ``y``
    rejects. The loop over terms is bounded at ``n = _SERIES_TERMS = 4`` and unrolled: on
    either piece ``e <= exp(-6.25) < 0.002`` (at ``x = t``), so
    ``S >= 1 - 3e > 0.99`` and ``a_5/a_0 = 11 e^15 < 1e-39`` -- the later partial sums
    equal ``S_4`` in float64 (and float32) arithmetic, and a ``y`` that no partial sum up
    to ``n = 4`` decides can only be a tie ``y == S_4`` (rejected)."""
    cx = jnp.where(right, _PI2 * x, 4.0 / x)
    e = jnp.exp(-cx)
    S = jnp.ones_like(x)
    acc = jnp.zeros(x.shape, bool)
    dec = jnp.zeros(x.shape, bool)
    for n in range(1, _SERIES_TERMS + 1):
        r = (2 * n + 1) * e ** (n * (n + 1) // 2)  # integer powers: multiplications
        if n % 2:
            S = S - r
            now = ~dec & (y < S)
            acc = acc | now
        else:
            S = S + r
            now = ~dec & (y > S)
        dec = dec | now
    return acc


def _jstar1_draw(key, args):
    """One proposal round of Devroye's sampler for J*(1, z) (1-D arrays); ``args`` are
    ``z``, ``K = pi^2/8 + z^2/2``, the probability of the right piece and ``mu = 1/z``."""
    z, K, p_right, mu = args
    dt = z.dtype
    t = jnp.asarray(_T, dt)
    small = z < 1.0 / _T  # mu = 1/z > t: Levy envelope on the left piece
    ub, u1, v = _open_uniform(key, (3,) + z.shape, dt)
    right = ub < p_right
    # right piece: t + Exp(1)/K
    x_right = t - jnp.log(u1) / K
    # left piece: one normal quantile serves both proposals
    g = ndtri(jnp.where(small, u1 * _PHI_T, u1))
    # small z: Levy(1) truncated to (0, t]: 1/N^2 with |N| > 1/sqrt(t)
    x_levy = jnp.minimum(1.0 / (g * g), t)
    # large z: IG(mu, 1) by Michael-Schucany-Haas, rejected when > t; its coin is ub
    # recycled: given ub >= p_right, (ub - p_right)/(1 - p_right) ~ U(0, 1)
    w = mu * g * g
    x1 = mu / (1.0 + 0.5 * w + jnp.sqrt(w * (1.0 + 0.25 * w)))  # no cancellation
    x_ig = jnp.where((ub - p_right) * (mu + x1) <= (1.0 - p_right) * mu, x1, mu * mu / x1)
    prop = jnp.where(right, x_right, jnp.where(small, x_levy, x_ig))
    # the Levy envelope drops the factor exp(-z^2 x/2) of the target: it joins the test
    y = jnp.where(right | ~small, v, v * jnp.exp(0.5 * z * z * prop))
    ok = _series_accept(prop, y, right) & (right | small | (x_ig <= t))
    return prop, ok


def _jstar1_args(z):
    """Per-entry constants of :func:`_jstar1_draw`."""
    small = z < 1.0 / _T
    K = _PI2 / 8 + 0.5 * z * z
    log_p = jnp.log(math.pi / (2 * K)) - K * _T
    log_q = jnp.where(small, jnp.asarray(_LOG_Q_LEVY, z.dtype), math.log(2.0) - z)
    p_right = jax.nn.sigmoid(log_p - log_q)
    mu = 1.0 / jnp.where(small, 1.0, z)  # IG mean, used for the large-z entries only
    return z, K, p_right, mu


def _jstar1(key, z):
    """Exact J*(1, z) draws for finite z >= 0, elementwise; see :func:`polya_gamma`."""
    dt = z.dtype
    z = z.reshape(-1)
    x = _batched_rejection(key, _jstar1_draw, _jstar1_args, (z,),
                           jnp.full(z.shape, -1.0, dt))
    return jnp.where(x >= 0, x, jnp.nan)


def polya_gamma(key, c, h=1):
    r"""Exact draws of the Pólya-Gamma distribution :math:`\omega\sim\mathrm{PG}(h, c)`.

    ``c``: array of any shape (the draws have its shape and floating dtype, float32 or
    float64); ``h``: a positive Python ``int``, :math:`\mathrm{PG}(h,c)` being the sum of
    ``h`` independent :math:`\mathrm{PG}(1,c)` (``h`` fixes array shapes, so it is static
    under ``jit``). The distribution is symmetric in :math:`c`; :math:`|c|` is used.

    **Method** (Polson, Scott & Windle 2013, Section 4 and Algorithm 1, after Devroye
    2009). :math:`\mathrm{PG}(1,c) = J^*(1, z)/4` with :math:`z = |c|/2`, where

    .. math::

        f(x\mid z) = \cosh(z)\, e^{-z^2 x/2} \sum_{n\ge0} (-1)^n a_n(x), \qquad
        a_n(x) = \begin{cases}
            \pi(n+\tfrac12)\,\bigl(\tfrac{2}{\pi x}\bigr)^{3/2} e^{-2(n+1/2)^2/x},
                & 0 < x \le t,\\
            \pi(n+\tfrac12)\, e^{-(n+1/2)^2\pi^2 x/2}, & x > t,
        \end{cases}

    with :math:`t = 0.64`. The coefficients decrease in :math:`n` on each piece, so the
    partial sums :math:`S_n` alternate around the density and
    :math:`g(x) = \cosh(z) e^{-z^2x/2} a_0(x) \ge f(x)` is an envelope; a proposal
    :math:`X\sim g` is accepted when :math:`V a_0(X) < S_n(X)` for an odd :math:`n`,
    rejected when :math:`V a_0(X) > S_n(X)` for an even :math:`n` (:math:`V\sim U(0,1)`;
    the test is evaluated on :math:`a_n/a_0 = (2n+1)e^{-2n(n+1)/x}` resp.
    :math:`(2n+1)e^{-n(n+1)\pi^2x/2}`, which cannot underflow). The envelope's two pieces
    (up to the common factor :math:`\cosh z`):

    * :math:`x > t`: :math:`\tfrac{\pi}{2} e^{-Kx}`, :math:`K = \pi^2/8 + z^2/2` -- a
      truncated exponential :math:`X = t + E/K` of mass :math:`p = \tfrac{\pi}{2K}e^{-Kt}`;
    * :math:`x \le t`: :math:`2e^{-z}\,\mathrm{IG}(x\mid \mu = 1/z, \lambda = 1)`, the
      truncated inverse Gaussian of mass :math:`q = 2e^{-z}\,P_{\mathrm{IG}}(X\le t)`.

    The two inner rejection loops of the paper's truncated-IG sampler are folded into the
    single outer accept/reject (still exact, one level of looping): for
    :math:`\mu > t` (:math:`z < 1/t`) the left piece is proposed from the larger envelope
    :math:`2\,\mathrm{Levy}(x) \ge 2e^{-z}\mathrm{IG}(x)` -- :math:`X = 1/N^2` with
    :math:`|N| > 1/\sqrt t` by inversion, mass :math:`4\Phi(-1/\sqrt t)` -- and the
    paper's inner factor :math:`e^{-z^2X/2}` joins the series test; for :math:`\mu \le t`
    an untruncated :math:`\mathrm{IG}(\mu, 1)` draw (mass :math:`2e^{-z}`) is proposed and
    rejected when :math:`X > t`. The pieces are picked with probability proportional to
    their masses (computed in log space, so large :math:`|c|` cannot underflow). The
    acceptance rate per round is above 0.72 for every :math:`z` (> 0.999 for
    :math:`z \to 0` and :math:`z \to \infty`).

    Vectorisation: ``lax.while_loop`` rounds draw proposals (three uniforms per entry: the
    piece, the proposal -- the inverse-Gaussian's coin recycles the piece's uniform --
    and the test) and keep them for the entries not yet accepted, until all are; after
    the first round the pending entries are gathered into shorter arrays, so that the
    last few of them do not cost full-length rounds. The alternating series is a bounded
    loop of 4 terms, unrolled (later terms are below float64 resolution; see
    ``_series_accept``). NaN ``c`` gives NaN; :math:`|c| = \infty` gives 0 (the limit);
    otherwise draws are positive (at least the smallest normal float).
    """
    h = operator.index(h)
    if h < 1:
        raise ValueError(f"h must be a positive integer, got {h}")
    dt = _float_dtype(c)
    c = jnp.asarray(c)
    out_dt = c.dtype if jnp.issubdtype(c.dtype, jnp.floating) else dt
    z = 0.5 * jnp.abs(c.astype(dt))
    finite = jnp.isfinite(z)
    zz = jnp.where(finite, z, 0.0)
    shape = c.shape if h == 1 else (h,) + c.shape
    x = _jstar1(key, jnp.broadcast_to(zz, shape)).reshape(shape)
    if h > 1:
        x = jnp.sum(x, axis=0)
    omega = jnp.maximum(0.25 * x, jnp.finfo(dt).tiny)
    omega = jnp.where(finite, omega, jnp.where(jnp.isnan(z), jnp.nan, 0.0))
    return omega.astype(out_dt)


def polya_gamma_mean(c, h=1):
    r""":math:`E\,\mathrm{PG}(h, c) = h\,\tanh(c/2)/(2c)`, with the limit :math:`h/4` at
    :math:`c=0` (series :math:`\tfrac h4(1 - x^2/3 + 2x^4/15 - 17x^6/315)`,
    :math:`x = |c|/2`, for :math:`|c| < 0.02`)."""
    c = jnp.asarray(c)
    c = c.astype(_float_dtype(c))
    x = 0.5 * jnp.abs(c)
    sm = x < 0.01
    xs = jnp.where(sm, 1.0, x)
    x2 = x * x
    series = 1.0 - x2 / 3 + x2 * x2 * (2.0 / 15) - x2 * x2 * x2 * (17.0 / 315)
    return 0.25 * h * jnp.where(sm, series, jnp.tanh(xs) / xs)


_VAR_SERIES = [1 / math.factorial(2 * k + 3) for k in range(7)]  # (sinh c - c)/c^3


def polya_gamma_var(c, h=1):
    r""":math:`\mathrm{Var}\,\mathrm{PG}(h, c) = h\,\dfrac{\sinh c - c}{4c^3\cosh^2(c/2)}`,
    with the limit :math:`h/24` at :math:`c = 0`.

    Evaluated as :math:`\tfrac h4\,\tfrac{\sinh c - c}{c^3}\,\mathrm{sech}^2(c/2)` with the
    series :math:`\tfrac{\sinh c - c}{c^3} = \sum_{k\ge0} c^{2k}/(2k+3)!` (7 terms) for
    :math:`|c| < 1`, and as the equivalent
    :math:`h\,(2\tanh(c/2) - c\,\mathrm{sech}^2(c/2))/(4c^3)` (no overflow) otherwise;
    :math:`\mathrm{sech}^2 x = 4e^{-2x}/(1+e^{-2x})^2`. (Check of the closed form: with
    :math:`\mathrm{PG}(1,c) = \tfrac{1}{2\pi^2}\sum_k g_k/((k-\tfrac12)^2 + c^2/(4\pi^2))`,
    :math:`g_k\sim\mathrm{Exp}(1)`, the variance is
    :math:`\tfrac{1}{4\pi^4}\sum_k ((k-\tfrac12)^2 + c^2/(4\pi^2))^{-2}`, which is
    :math:`\tfrac{16}{4\pi^4}\cdot\tfrac{\pi^4}{96} = \tfrac1{24}` at :math:`c = 0`; the
    tests compare both at several :math:`c`.)"""
    c = jnp.asarray(c)
    c = jnp.abs(c.astype(_float_dtype(c)))
    sm = c < 1.0
    c2 = c * c
    g = jnp.zeros_like(c)
    for coef in reversed(_VAR_SERIES):
        g = g * c2 + coef
    e = jnp.exp(-c)  # exp(-2 * c/2)
    sech2 = 4.0 * e / jnp.square(1.0 + e)
    cl = jnp.where(sm, 1.0, c)
    large = (2.0 * jnp.tanh(0.5 * cl) - cl * sech2) / (4.0 * cl * cl * cl)
    return h * jnp.where(sm, 0.25 * g * sech2, large)


# ---------------------------------------------------------------- truncated normal

_TAIL = 4.0  # standardised lower end from which the exponential rejection sampler is used
_NARROW = 0.5  # hi^2 - lo^2 below which the uniform rejection sampler is used


def truncated_normal(key, mean, lower, upper, sd=1.0):
    r"""Draws of :math:`\mathcal N(\text{mean}, \text{sd}^2)` truncated to
    :math:`(\text{lower}, \text{upper})`, elementwise.

    ``mean``, ``lower``, ``upper``, ``sd`` are arrays (or scalars) that broadcast together;
    the draws have the broadcast shape and the floating dtype of the inputs. ``lower`` may
    be ``-inf`` and ``upper`` ``+inf`` (one-sided or no truncation); ``sd > 0``. The draws
    always lie in ``[lower, upper]`` (``lower == upper`` gives that point); invalid entries
    (``lower > upper``, NaN, ``sd <= 0``) give NaN.

    **Method.** Standardise, :math:`a = (\text{lower}-\text{mean})/\text{sd}`,
    :math:`b = (\text{upper}-\text{mean})/\text{sd}`, and reduce to an interval
    :math:`[\ell, h]` with :math:`0 \le \ell \le h` on the upper side: as is when
    :math:`a \ge 0`; reflected, :math:`(-b, -a)`, when :math:`b \le 0`; and when
    :math:`a < 0 < b` the half :math:`(0, b)` or the reflected half :math:`(0, -a)` is
    picked with probabilities :math:`\propto \operatorname{erf}(b/\sqrt2)` and
    :math:`\operatorname{erf}(-a/\sqrt2)`. The offset :math:`y = x - \ell \ge 0` is drawn
    by one of three exact methods and the draw is
    :math:`\text{base} \pm \text{sd}\cdot y` with base = lower, upper or mean -- so a
    draw just above a far-away bound keeps its precision -- clipped into the interval:

    * narrow intervals, :math:`h^2 - \ell^2 \le 1/2`: uniform proposal
      :math:`y = U(h-\ell)`, accepted with probability
      :math:`e^{-y(2\ell+y)/2} \ge e^{-1/4}`;
    * far tails, :math:`\ell \ge 4`: exponential proposal (Robert 1995) with rate
      :math:`\lambda = (\ell + \sqrt{\ell^2+4})/2`, truncated to :math:`y < h - \ell`,
      :math:`y = -\log(1 - U(1 - e^{-\lambda(h-\ell)}))/\lambda`, accepted with probability
      :math:`e^{-(y - (\lambda-\ell))^2/2}` (above 0.97 for :math:`\ell\ge4`, one- or
      two-sided);
    * otherwise inversion of the upper tail in log space:
      :math:`\log Q = \log\Phi(-\ell) + \log(1 - U(1 - e^{\log\Phi(-h) - \log\Phi(-\ell)}))`,
      :math:`x = -\Phi^{-1}(Q)` (``log_ndtr``, ``log1p``/``expm1``, ``ndtri``; no loop).

    The two rejection samplers share one batched rejection loop (``lax.while_loop`` rounds
    that redraw proposals for the entries not yet accepted, on compacted arrays after the
    first rounds); it does no round when no entry needs it.
    """
    dt = _float_dtype(mean, lower, upper, sd)
    mean, lower, upper, sd = jnp.broadcast_arrays(*(jnp.asarray(v).astype(dt)
                                                    for v in (mean, lower, upper, sd)))
    shape = mean.shape
    valid = (jnp.isfinite(mean) & jnp.isfinite(sd) & (sd > 0) & (lower <= upper)
             & (lower < jnp.inf) & (upper > -jnp.inf))
    a = (lower - mean) / sd
    b = (upper - mean) / sd
    a = jnp.where(valid, a, 0.0)
    b = jnp.where(valid, b, 1.0)
    k_side, k_inv, k_rej = jax.random.split(key, 3)

    central = (a < 0) & (b > 0)
    ea = erf(-a / math.sqrt(2))
    eb = erf(b / math.sqrt(2))
    u_side = jax.random.uniform(k_side, shape, dt)
    up = jnp.where(central, u_side * (ea + eb) < eb, a >= 0)
    lo = jnp.where(central, 0.0, jnp.where(up, a, -b))
    hi = jnp.where(up, b, -a)
    base = jnp.where(central, mean, jnp.where(up, lower, upper))
    sign = jnp.where(up, 1.0, -1.0).astype(dt)

    # lo = inf (a bound infinitely many sd away, by overflow): the draw is that bound
    far = ~jnp.isfinite(lo)
    uni = (hi - lo) * (hi + lo) <= _NARROW
    tail = ~uni & (lo >= _TAIL)
    loop = (uni | tail) & ~far

    # inversion (entries neither narrow nor in the far tail: 0 <= lo < 4)
    lpa = log_ndtr(-lo)
    lpb = log_ndtr(-hi)
    u = jax.random.uniform(k_inv, shape, dt)
    log_q = lpa + jnp.log1p(u * jnp.expm1(lpb - lpa))
    y_inv = -ndtri(jnp.exp(log_q)) - lo

    # rejection (narrow: uniform proposal; far tail: exponential proposal)
    def draw(key, args):
        lo, width, lam_off, trunc, uni = args
        u1, u2 = _open_uniform(key, (2,) + lo.shape, dt)
        u1 = u1 - jnp.asarray(jnp.finfo(dt).eps / 2, dt)  # [0, 1): y = 0 possible, y < width
        y_uni = u1 * width
        y_exp = -jnp.log1p(u1 * trunc) / (lo + lam_off)
        prop = jnp.where(uni, y_uni, y_exp)
        log_acc = jnp.where(uni, -0.5 * prop * (2.0 * lo + prop),
                            -0.5 * jnp.square(prop - lam_off))
        return jnp.maximum(prop, 0.0), jnp.log(u2) <= log_acc

    def make_args(lo, hi, uni):
        width = hi - lo
        lam_off = 2.0 / (jnp.sqrt(lo * lo + 4.0) + lo)  # lambda - lo, without cancellation
        trunc = jnp.expm1(-(lo + lam_off) * width)
        return lo, width, lam_off, trunc, uni

    y0 = jnp.where(loop & valid, -1.0, 0.0).astype(dt).reshape(-1)
    inputs = tuple(v.reshape(-1) for v in (lo, hi, uni))
    y_rej = _batched_rejection(k_rej, draw, make_args, inputs, y0).reshape(shape)

    y = jnp.where(loop, y_rej, jnp.where(far, 0.0, jnp.maximum(y_inv, 0.0)))
    x = jnp.clip(base + sign * sd * y, lower, upper)
    return jnp.where(valid, x, jnp.nan)
