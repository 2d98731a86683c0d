r"""Simulation-based calibration (SBC) of the inference methods (Talts et al. 2018).

If parameters are drawn from the prior, :math:`\tilde\theta\sim p(\theta)`, data from the
model, :math:`\tilde y\sim p(y\mid\tilde\theta)`, and :math:`L` draws
:math:`\theta_1..\theta_L` from a correct posterior :math:`p(\theta\mid\tilde y)`, then the
rank of :math:`f(\tilde\theta)` among :math:`f(\theta_1),\dots,f(\theta_L)`,

.. math::

    r = \#\{\ell : f(\theta_\ell) < f(\tilde\theta)\} \in \{0, \dots, L\},

is **uniform** on :math:`\{0,\dots,L\}` for every scalar :math:`f`. A sampler whose
posterior is too narrow gives U-shaped rank histograms, one that is too wide gives a hump,
a biased one a slope.

:func:`run_sbc` repeats this ``n_rep`` times for a small model over a **fixed** random
observed pattern, fitting with any registered method (or any ``fit(ratings, spec, seed)``
callable), and collects the ranks of **identifiable** quantities only (the factors are
identified only up to rotation/sign): :math:`\mu`, :math:`\tau`, a few user and item
biases, and the noise-free means :math:`m_{ui} = \mu + b_u + b_i + U_u^\top V_i` of a few
fixed (observed and unobserved) pairs. Posterior draws are thinned evenly to ``L``.

**The simulation's prior is the model's prior** -- :func:`simulate` draws from the
:class:`~bayesmf.model.spec.BayesPriors` of the spec exactly as
:mod:`bayesmf.infer.numpyro_model` and the Gibbs sampler define them:

* :math:`\mu\sim\mathcal N(m_\mu, \lambda_\mu^{-1})` (SBC needs ``lambda_mu > 0``: a flat
  prior cannot be simulated from);
* :math:`\tau\sim\mathrm{Gamma}(a_\tau, \text{rate } b_\tau)` (or fixed);
* :math:`\lambda_b\sim\mathrm{Gamma}(a_b, \text{rate } b_b)`,
  :math:`b\sim\mathcal N(0,\lambda_b^{-1})`, per side;
* factors, ``factor_prior="wishart"``: :math:`\Lambda\sim\mathcal W(w_0 I, \nu_0)` (mean
  :math:`\nu_0 w_0 I`; Bartlett: :math:`\Lambda = w_0 A A^\top`,
  :math:`A_{jj}^2\sim\chi^2_{\nu_0-j}`, :math:`A_{jl}\sim\mathcal N(0,1)`, :math:`j>l`),
  :math:`\mu_F\sim\mathcal N(0, (\beta_0\Lambda)^{-1})`, rows
  :math:`F_r\sim\mathcal N(\mu_F,\Lambda^{-1})`; ``factor_prior="diag"`` (NumPyro's ARD
  option): :math:`\Lambda=\mathrm{diag}(\lambda_j)`,
  :math:`\lambda_j\sim\mathrm{Gamma}(\nu_0/2, \text{rate } 1/(2w_0))`;
* :math:`r_{ui}\sim\mathcal N(\mu + b_u + b_i + U_u^\top V_i, \tau^{-1})` on the pattern.

Uniformity checks per quantity (:func:`uniformity_tests`): a chi-square test over rank
bins (exact expected counts), a Kolmogorov-Smirnov test of the randomised fractional
ranks :math:`(r + U)/(L+1)` against :math:`U(0,1)`, and the simultaneous ECDF-difference
envelope of Säilynoja, Bürkner & Vehtari (2022) (:func:`ecdf_envelope`), whose p-value is
the probability under uniformity of an ECDF at least as extreme anywhere. A result
:meth:`SBCResult.passes` at level ``alpha`` when no p-value falls below ``alpha``
divided by the number of tests (Bonferroni).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from scipy import stats

from bayesmf.errors import SpecError
from bayesmf.model.spec import ModelSpec

__all__ = ["observed_pattern", "simulate", "quantities", "rank_of", "uniformity_tests",
           "ecdf_envelope", "run_sbc", "SBCResult", "narrowed", "rank_histogram_text",
           "GibbsBatch", "NutsBatch", "step_with_data", "simulate_observations"]


# ----------------------------------------------------------------------------- simulation
def observed_pattern(n_users: int, n_items: int, density: float, seed: int = 0):
    """A fixed random observed pattern ``(users, items)`` (index arrays) in which every
    user and every item has at least one observation."""
    if not 0 < density <= 1:
        raise SpecError(f"density must be in (0, 1], got {density}")
    rng = np.random.default_rng(seed)
    mask = rng.random((n_users, n_items)) < density
    # guarantee coverage: a "diagonal" through shuffled rows and columns
    pu, pi = rng.permutation(n_users), rng.permutation(n_items)
    for r in range(max(n_users, n_items)):
        mask[pu[r % n_users], pi[r % n_items]] = True
    u, i = np.nonzero(mask)
    return u.astype(np.int32), i.astype(np.int32)


def _wishart_bartlett(rng, k: int, nu0: float, w0: float) -> np.ndarray:
    A = np.zeros((k, k))
    A[np.diag_indices(k)] = np.sqrt(rng.chisquare(nu0 - np.arange(k)))
    r, c = np.tril_indices(k, -1)
    A[r, c] = rng.standard_normal(len(r))
    return w0 * A @ A.T


def _nu0(spec: ModelSpec) -> float:
    """:math:`\\nu_0` of the spec's factor prior (its default when ``priors.nu0`` is None)."""
    return spec.prior.nu0(spec)


def simulate(spec: ModelSpec, users, items, n_users: int, n_items: int, rng,
             factor_prior: str | None = None):
    """Draw ``(truth, ratings)`` from the prior and likelihood of ``spec`` (module docs).

    ``truth`` has ``mu, bu, bi, U, V, tau`` (switched-off terms are zeros/fixed) and the
    hyperparameters ``lambda_bu, lambda_bi, mu_U, Lambda_U, mu_V, Lambda_V``."""
    if factor_prior is None:
        factor_prior = spec.prior.ppl_name
    if factor_prior not in ("wishart", "diag"):
        raise SpecError(f"factor_prior must be 'wishart' or 'diag', got {factor_prior!r}")
    if factor_prior != spec.prior.ppl_name:  # the option names the prior (as in the PPLs)
        spec = spec.replace(prior=factor_prior)
    pri = spec.priors.resolved(1.0)  # scale-aware defaults at the unit scale
    if spec.global_mean and not pri.lambda_mu > 0:
        raise SpecError("SBC needs a proper prior on the global mean: set "
                        "priors.lambda_mu > 0 (a flat prior cannot be simulated from)")
    k = spec.rank
    t: dict = {}
    t["mu"] = (rng.normal(pri.mu_mean, 1 / np.sqrt(pri.lambda_mu)) if spec.global_mean
               else 0.0)
    t["tau"] = (rng.gamma(pri.noise_a, 1 / pri.noise_b) if spec.noise == "learned"
                else float(spec.noise_precision))
    for side, n, on in (("u", n_users, spec.user_bias), ("i", n_items, spec.item_bias)):
        if on:
            lam = rng.gamma(pri.bias_a, 1 / pri.bias_b)
            t[f"lambda_b{side}"] = lam
            t[f"b{side}"] = rng.normal(0, 1 / np.sqrt(lam), n)
        else:
            t[f"b{side}"] = np.zeros(n)
    for side, n in (("U", n_users), ("V", n_items)):
        if not k:
            t[side] = np.zeros((n, 0))
            continue
        nu0 = _nu0(spec)
        if factor_prior == "wishart":
            Lam = _wishart_bartlett(rng, k, nu0, pri.w0)
        else:
            Lam = np.diag(rng.gamma(nu0 / 2, 2 * pri.w0, k))
        # x = L^{-T} z has covariance Lambda^{-1} when Lambda = L L^T
        Lc = np.linalg.cholesky(Lam)
        mu_f = np.linalg.solve(Lc.T, rng.standard_normal(k)) / np.sqrt(pri.beta0)
        t[f"Lambda_{side}"] = Lam
        t[f"mu_{side}"] = mu_f
        t[side] = mu_f + np.linalg.solve(Lc.T, rng.standard_normal((k, n))).T
    if not spec.likelihood.gaussian_noise:  # the prior of the family's own parameters
        del t["tau"]
        t.update(spec.likelihood.theta_prior_draw(rng, spec))
    y = simulate_observations(rng, spec, t, users, items)
    return t, y


# ----------------------------------------------------------------------------- quantities
def quantities(p: dict, spec: ModelSpec, pairs, n_bias: int) -> dict:
    """Identifiable scalar quantities of one parameter set (scalars) or of draws (leading
    axis ``S``): ``mu``, ``tau``, ``bu[j]``/``bi[j]`` for ``j < n_bias`` and ``m[u,i]``
    for the fixed ``pairs``. Constant quantities (switched off / fixed) are left out."""
    out = {}
    mu = np.asarray(p["mu"], float)
    if spec.global_mean:
        out["mu"] = mu
    lik = spec.likelihood
    if spec.noise == "learned" and "tau" in lik.theta_names:
        out["tau"] = np.asarray(p["tau"], float)
    if "cutpoints" in lik.theta_names:  # the free cutpoints (c_1 = 0 with a global mean)
        c = np.asarray(p["cutpoints"], float)
        for j in range(1 if spec.global_mean else 0, c.shape[-1]):
            out[f"cut[{j}]"] = c[..., j]
    for name in lik.theta_names:  # a family's own parameters, scalar or per entry
        if name in ("tau", "cutpoints") or name not in p:
            continue
        a = np.asarray(p[name], float)
        if a.ndim == np.ndim(mu):  # one value per parameter set / per draw
            out[name] = a
        else:
            for j in range(a.shape[-1]):
                out[f"{name}[{j}]"] = a[..., j]
    for b, on in (("bu", spec.user_bias), ("bi", spec.item_bias)):
        if on:
            arr = np.asarray(p[b], float)
            for j in range(min(n_bias, arr.shape[-1])):
                out[f"{b}[{j}]"] = arr[..., j]
    bu = np.asarray(p["bu"], float)
    bi = np.asarray(p["bi"], float)
    U = np.asarray(p["U"], float)
    V = np.asarray(p["V"], float)
    for u, i in pairs:
        out[f"m[{u},{i}]"] = (mu + bu[..., u] + bi[..., i]
                              + np.sum(U[..., u, :] * V[..., i, :], axis=-1))
    return out


def rank_of(true_value: float, draws: np.ndarray, rng) -> int:
    """``#{draws < true}`` with ties broken uniformly at random (``0..len(draws)``)."""
    draws = np.asarray(draws)
    below = int(np.sum(draws < true_value))
    ties = int(np.sum(draws == true_value))
    return below + (int(rng.integers(0, ties + 1)) if ties else 0)


def narrowed(factor: float) -> Callable:
    """A deliberately miscalibrated posterior (negative control): every quantity's draws
    are shrunk towards their mean by ``factor`` (< 1: too narrow, > 1: too wide)."""
    def transform(q: dict) -> dict:
        return {n: v.mean() + factor * (v - v.mean()) for n, v in q.items()}

    transform.__name__ = f"narrowed({factor:g})"
    return transform


# ----------------------------------------------------------------------------- tests
def ecdf_envelope(n: int, L: int, alpha: float = 0.05, n_sim: int = 2000, seed: int = 0):
    """Simultaneous ``1 - alpha`` band for the ECDF of ``n`` uniform ranks on ``0..L``
    (Säilynoja et al. 2022, simulation-adjusted). Returns ``(z, lower, upper, null)``:
    the grid ``z_j = j/(L+1)``, ``j = 1..L``, the band for the ECDF fraction
    ``#{r < j}/n`` at each ``z_j``, and the null distribution of the extremeness statistic
    used by :func:`uniformity_tests` (smaller = more extreme)."""
    rng = np.random.default_rng(seed)
    z = np.arange(1, L + 1) / (L + 1)
    null = _extremeness(rng.integers(0, L + 1, size=(n_sim, n)), L)
    gamma = float(np.quantile(null, alpha))
    lower = stats.binom.ppf(gamma / 2, n, z) / n
    upper = stats.binom.ppf(1 - gamma / 2, n, z) / n
    return z, lower, upper, null


def _extremeness(ranks: np.ndarray, L: int) -> np.ndarray:
    """Per row of ``ranks`` (shape ``(..., n)``): ``min_j 2 min(F(c_j), 1 - F(c_j - 1))``
    with ``c_j = #{r < j}`` and ``F`` the Binomial(n, j/(L+1)) CDF."""
    ranks = np.atleast_2d(ranks)
    n = ranks.shape[-1]
    j = np.arange(1, L + 1)
    counts = (ranks[..., None] < j).sum(axis=-2)  # (..., L)
    z = j / (L + 1)
    lo = stats.binom.cdf(counts, n, z)
    hi = stats.binom.sf(counts - 1, n, z)
    return np.minimum(1.0, 2 * np.minimum(lo, hi)).min(axis=-1)


def uniformity_tests(ranks, L: int, n_bins: int | None = None, seed: int = 0,
                     n_sim: int = 2000) -> dict:
    """p-values of three uniformity tests of ranks on ``0..L`` (see the module docs):
    ``chi2`` (``n_bins`` bins, default ``min(L+1, n//10)``), ``ks`` and ``ecdf``."""
    r = np.asarray(ranks, int)
    n = len(r)
    if n < 2:
        raise SpecError("uniformity tests need at least 2 ranks")
    if r.min() < 0 or r.max() > L:
        raise SpecError(f"ranks must lie in 0..{L}")
    B = n_bins or max(2, min(L + 1, n // 10))
    bin_of = np.arange(L + 1) * B // (L + 1)
    expected = n * np.bincount(bin_of, minlength=B) / (L + 1)
    observed = np.bincount(bin_of[r], minlength=B)
    chi2 = float(((observed - expected) ** 2 / expected).sum())
    p_chi2 = float(stats.chi2.sf(chi2, B - 1))
    rng = np.random.default_rng(seed)
    u = (r + rng.random(n)) / (L + 1)
    p_ks = float(stats.kstest(u, "uniform").pvalue)
    null = _extremeness(np.random.default_rng(seed + 1).integers(0, L + 1, (n_sim, n)), L)
    obs = float(_extremeness(r[None, :], L)[0])
    p_ecdf = float((np.sum(null <= obs) + 1) / (n_sim + 1))
    return {"chi2": p_chi2, "ks": p_ks, "ecdf": p_ecdf, "chi2_stat": chi2, "bins": B}


# ----------------------------------------------------------------------------- driver
@dataclass
class SBCResult:
    """Ranks per quantity (``ranks[name]``: ``(n_rep,)`` ints in ``0..L``) and tests."""

    method: str
    L: int
    ranks: dict
    spec: ModelSpec
    settings: dict
    seconds: float
    transform: str | None = None
    tests: dict = field(default_factory=dict)
    #: per quantity: the thinned draws ``(n_rep, L)`` and true values ``(n_rep,)``
    draws: dict = field(default_factory=dict, repr=False)
    truths: dict = field(default_factory=dict, repr=False)

    def __post_init__(self):
        if not self.tests:
            self.tests = {n: uniformity_tests(r, self.L, seed=j)
                          for j, (n, r) in enumerate(self.ranks.items())}

    @property
    def n_rep(self) -> int:
        return len(next(iter(self.ranks.values())))

    @property
    def n_tests(self) -> int:
        return 3 * len(self.ranks)

    @property
    def min_p(self) -> float:
        return min(min(t["chi2"], t["ks"], t["ecdf"]) for t in self.tests.values())

    def passes(self, alpha: float = 0.01) -> bool:
        """No p-value below ``alpha / n_tests`` (Bonferroni over quantities and tests)."""
        return self.min_p > alpha / self.n_tests

    def table(self):
        """A DataFrame: one row per quantity with the p-values and mean rank/L."""
        import pandas as pd

        rows = []
        for n, t in self.tests.items():
            r = self.ranks[n]
            rows.append({"quantity": n, "p_chi2": t["chi2"], "p_ks": t["ks"],
                         "p_ecdf": t["ecdf"], "mean_rank": float(np.mean(r)) / self.L,
                         "sd_rank": float(np.std(r)) / self.L})
        return pd.DataFrame(rows)

    def transformed(self, transform: Callable, seed: int = 0) -> "SBCResult":
        """Ranks of the same fits after ``transform`` of each replication's draws
        (e.g. the negative control :func:`narrowed`), without refitting."""
        if not self.draws:
            raise SpecError("this SBCResult kept no draws to transform")
        rng = np.random.default_rng(seed)
        ranks: dict = {n: [] for n in self.draws}
        new_draws: dict = {n: [] for n in self.draws}
        for rep in range(self.n_rep):
            q = transform({n: d[rep] for n, d in self.draws.items()})
            for n, v in q.items():
                ranks[n].append(rank_of(float(self.truths[n][rep]), v, rng))
                new_draws[n].append(v)
        return SBCResult(self.method, self.L, {n: np.asarray(r) for n, r in ranks.items()},
                         self.spec, self.settings, self.seconds,
                         getattr(transform, "__name__", "transformed"),
                         draws={n: np.asarray(v) for n, v in new_draws.items()},
                         truths=self.truths)

    def histograms(self, bins: int = 10) -> str:
        return "\n".join(rank_histogram_text(r, self.L, bins, n)
                         for n, r in self.ranks.items())


def rank_histogram_text(ranks, L: int, bins: int = 10, label: str = "") -> str:
    """One-line text histogram of ranks (``#`` bars scaled to the expected count 4)."""
    r = np.asarray(ranks, int)
    bin_of = np.arange(L + 1) * bins // (L + 1)
    obs = np.bincount(bin_of[r], minlength=bins)
    exp = len(r) * np.bincount(bin_of, minlength=bins) / (L + 1)
    bars = " ".join(f"{int(o):3d}" for o in obs)
    ratio = obs / exp
    glyph = "".join(" ▁▂▃▄▅▆▇█"[min(8, int(round(x * 4)))] for x in ratio)
    return f"{label:>12} |{glyph}| {bars}  (expected ~{exp.mean():.1f}/bin)"


class GibbsBatch:
    """Fit all SBC replications at once with the Gibbs kernel
    (:class:`bayesmf.infer.gibbs.BPMFGibbs`), ``vmap``-ed over the datasets: the
    replications share the observed pattern (hence the row blocks), only the ratings
    differ, so one compilation serves all of them. Each replication runs one chain of
    ``num_warmup + num_samples * thin`` sweeps from the kernel's ``init`` (sweep ``t``
    uses ``fold_in(key, t)``, as :func:`~bayesmf.infer.gibbs.fit_gibbs` does) and keeps
    ``num_samples`` draws. Pass an instance as ``method`` to :func:`run_sbc`."""

    batched = True
    __name__ = "gibbs"

    def __init__(self, num_samples: int = 100, num_warmup: int = 50, thin: int = 1,
                 low_width="auto", row_mh: bool = False, row_block=None):
        self.num_samples, self.num_warmup, self.thin = num_samples, num_warmup, thin
        #: the kernel's ``low_width`` (rows drawn through the Woodbury identity)
        self.low_width = low_width
        #: the kernel's ``row_mh`` (the IWLS Metropolis-Hastings row step)
        self.row_mh = row_mh
        #: the kernel's ``row_block`` (subspace Gibbs row draws)
        self.row_block = row_block

    def __call__(self, datasets, spec, seeds) -> list:
        import jax

        from bayesmf.infer.gibbs import BPMFGibbs

        kern = BPMFGibbs(datasets[0], spec, low_width=self.low_width, row_mh=self.row_mh,
                         row_block=self.row_block)
        args = gibbs_batch_args(kern, datasets, seeds)
        keep_names = ("mu", "bu", "bi", "U", "V") + tuple(kern.cfg.spec.likelihood.theta_names)
        chains = gibbs_batch_chains(kern, spec, keep_names, self.num_warmup,
                                    self.num_samples, self.thin)
        t0 = time.perf_counter()
        fn = jax.jit(chains).lower(*args).compile()
        t1 = time.perf_counter()
        outs = fn(*args)
        jax.block_until_ready(outs)
        self.timings = {"compile_s": t1 - t0, "run_s": time.perf_counter() - t1}
        outs = [np.asarray(o) for o in outs]
        return [{n: outs[j][r] for j, n in enumerate(keep_names)}
                for r in range(len(datasets))]


def gibbs_batch_args(kern, datasets, seeds) -> tuple:
    """``(keys, ys, means)`` of :func:`gibbs_batch_chains` for simulated ``datasets`` that
    share ``kern``'s observed pattern: one PRNG key per seed, the likelihood's encoding of
    each dataset's ratings and its offset of the linear predictor."""
    import jax
    import jax.numpy as jnp

    dt = kern.dtype
    lik = kern.cfg.spec.likelihood
    ys = jnp.asarray(np.stack([lik.encode(d.rating) for d in datasets]).astype(dt))
    means = jnp.asarray(np.array([lik.eta_offset(d.rating) for d in datasets]), dt)
    keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))
    return keys, ys, means


def gibbs_batch_chains(kern, spec, keep, num_warmup: int, num_samples: int, thin: int):
    """``chains(keys, ys, means)``: one Gibbs chain per simulated dataset, ``vmap``-ed
    (jit it once; every dataset shares ``kern``'s pattern, only the ratings differ). A
    chain starts from ``kern.init`` (``mu`` at the dataset's mean when the spec has one),
    runs ``num_warmup + num_samples * thin`` sweeps (sweep ``t`` uses ``fold_in(key, t)``,
    as :func:`~bayesmf.infer.gibbs.fit_gibbs` does) and returns the ``num_samples``
    thinned draws of each state field named in ``keep``. Shared by :class:`GibbsBatch`
    and :class:`~bayesmf.testing.sbc_macau.MacauGibbsBatch`."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    W, S, T = num_warmup, num_samples, thin
    n_iter = W + S * T

    def one(key, y, mean):
        data = kern.data._replace(rating=y)
        st = kern.init(jax.random.fold_in(key, 2**31 - 1))
        if spec.global_mean:
            st = st._replace(mu=mean)

        def body(s, t):
            s, _ = step_with_data(kern, data, jax.random.fold_in(key, t), s)
            flat = s.flat()
            return s, tuple(flat[n] for n in keep)

        _, out = lax.scan(body, st, jnp.arange(n_iter, dtype=jnp.uint32))
        return tuple(o[W::T][:S] for o in out)

    return jax.vmap(one)


class NutsBatch:
    """Fit all SBC replications at once with NumPyro's NUTS on the model of
    :mod:`bayesmf.infer.numpyro_model` (the model and prior ``fit_nuts`` samples),
    ``vmap``-ed over the datasets through NumPyro's functional HMC API
    (``initialize_model(dynamic_args=True)`` + ``hmc(algo="NUTS")``): one compilation
    for all replications. Ratings are not centred (``offset=0``; the centring in
    ``fit_nuts`` is an exact reparametrisation). Each replication runs one chain of
    ``num_warmup`` adaptation + ``num_samples`` steps from the same initial point
    (``init_to_median`` on the first dataset)."""

    batched = True
    __name__ = "nuts"

    def __init__(self, num_samples: int = 100, num_warmup: int = 100,
                 target_accept: float = 0.8, factor_prior: str = "wishart",
                 centered: bool = False):
        self.num_samples, self.num_warmup = num_samples, num_warmup
        self.target_accept, self.factor_prior, self.centered = (target_accept,
                                                                factor_prior, centered)

    def __call__(self, datasets, spec, seeds) -> list:
        import jax
        import jax.numpy as jnp
        from jax import lax
        from numpyro.infer import init_to_median
        from numpyro.infer.hmc import hmc
        from numpyro.infer.util import initialize_model

        from bayesmf.infer.numpyro_model import build_model

        d0 = datasets[0]
        model = build_model(spec, d0.n_users, d0.n_items, offset=0.0,
                            centered=self.centered, factor_prior=self.factor_prior)
        u = jnp.asarray(d0.user, jnp.int32)
        i = jnp.asarray(d0.item, jnp.int32)
        ys = jnp.asarray(np.stack([d.rating for d in datasets]).astype(np.float32))
        info = initialize_model(jax.random.PRNGKey(0), model, model_args=(u, i, ys[0]),
                                dynamic_args=True,
                                init_strategy=init_to_median(num_samples=15))
        z0 = info.param_info.z
        init_kernel, sample_kernel = hmc(potential_fn_gen=info.potential_fn, algo="NUTS")
        post_gen = info.postprocess_fn
        W, S = self.num_warmup, self.num_samples
        keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds, jnp.uint32))
        names = ("mu", "bu", "bi", "U", "V", "tau")

        def one(key, y):
            args = (u, i, y)
            st = init_kernel(z0, num_warmup=W, target_accept_prob=self.target_accept,
                             model_args=args, rng_key=key)

            def body(st, _):
                st = sample_kernel(st, model_args=args)
                return st, (st.z, st.diverging)

            _, (zs, div) = lax.scan(body, st, None, length=W + S)
            zs = jax.tree_util.tree_map(lambda a: a[W:], zs)
            out = jax.vmap(post_gen(*args))(zs)
            return {n: out[n] for n in names if n in out}, div[W:].sum()

        t0 = time.perf_counter()
        fn = jax.jit(jax.vmap(one)).lower(keys, ys).compile()
        t1 = time.perf_counter()
        out, div = fn(keys, ys)
        jax.block_until_ready(out)
        self.timings = {"compile_s": t1 - t0, "run_s": time.perf_counter() - t1}
        self.divergences = np.asarray(div)
        out = {n: np.asarray(v) for n, v in out.items()}
        R = len(datasets)
        zeros = {"bu": (d0.n_users,), "bi": (d0.n_items,), "U": (d0.n_users, spec.rank),
                 "V": (d0.n_items, spec.rank)}
        res = []
        for r in range(R):
            d = {}
            for n in names:
                if n in out:
                    d[n] = out[n][r]
                elif n == "tau":
                    d[n] = np.full(S, spec.noise_precision)
                elif n == "mu":
                    d[n] = np.zeros(S)
                else:
                    d[n] = np.zeros((S,) + zeros[n])
            res.append(d)
        return res


def simulate_observations(rng, spec: ModelSpec, t: dict, users, items) -> np.ndarray:
    r"""The observations of the pairs ``(users, items)`` given the drawn parameters ``t``:
    :math:`\eta = \mu + b_u + b_i + U_u\cdot V_i`, then ``y ~ N(eta, 1/tau)`` for the
    Gaussian family or the family's own observation model
    (:meth:`~bayesmf.model.likelihoods.Likelihood.prior_simulate`, with its parameters
    already in ``t``)."""
    users = np.asarray(users)
    items = np.asarray(items)
    mean = (t["mu"] + t["bu"][users] + t["bi"][items]
            + np.sum(t["U"][users] * t["V"][items], axis=-1))
    lik = spec.likelihood
    if lik.gaussian_noise:
        return mean + rng.standard_normal(len(users)) / np.sqrt(t["tau"])
    return lik.prior_simulate(rng, mean, t)


def step_with_data(kern, data, key, state):
    """``kern.step`` with the kernel's data replaced by ``data`` (a shallow copy of the
    kernel, so the data can be a traced argument: one compiled sweep runs every simulated
    dataset of a batch). Used by the SBC harnesses of this package."""
    import copy

    k2 = copy.copy(kern)
    k2.data = data
    return k2.step(key, state)


def run_sbc(method, spec: ModelSpec, *, n_rep: int = 100, n_users: int = 8,
            n_items: int = 6, density: float = 0.5, L: int = 19, n_bias: int = 2,
            n_pairs: int = 3, seed: int = 0, options: dict | None = None,
            factor_prior: str | None = None, transform: Callable | None = None,
            progress: Callable | None = None) -> SBCResult:
    """Simulation-based calibration of ``method`` on a small model (module docs).

    Parameters
    ----------
    method : str or callable
        A registered method name (``"gibbs"``, ``"nuts"``, ``"svi"``, ...) or
        ``fit(ratings, spec, seed) -> Posterior``.
    spec : ModelSpec
        The model and its priors (``priors.lambda_mu > 0`` when ``global_mean``).
    n_rep, L : int
        Replications and posterior draws per rank (draws are thinned evenly to ``L``;
        the fit must return at least ``L``).
    n_users, n_items, density : observed pattern (fixed across replications, ``seed``).
    n_bias, n_pairs : how many biases per side and fixed pairs are ranked.
    options : dict
        Method options (e.g. ``num_samples``, ``num_warmup``).
    factor_prior : {"wishart", "diag"}, optional
        The method's factor prior; default ``options.get("factor_prior", "wishart")``.
    transform : callable, optional
        Applied to each replication's thinned quantity draws (negative controls, see
        :func:`narrowed`).
    progress : callable, optional
        ``progress(rep, n_rep)`` after each replication.
    """
    from bayesmf.data.ratings import Ratings
    from bayesmf.data.vocab import Vocabulary

    options = dict(options or {})
    if isinstance(method, str):
        from bayesmf.infer import get_method

        fit_fn = get_method(method)
        name = method

        def fit(r, s, sd):
            return fit_fn(r, s, seed=sd, **options)
    else:
        fit, name = method, getattr(method, "__name__", "custom")
    if factor_prior is None:
        factor_prior = options.get("factor_prior") or spec.prior.ppl_name
    if not spec.priors.is_resolved:  # SBC simulates at the unit scale
        spec = spec.replace(priors=spec.priors.resolved(1.0))
    spec.check_data(n_users, n_items, 1)
    u_idx, i_idx = observed_pattern(n_users, n_items, density, seed)
    users, items = Vocabulary(np.arange(n_users), "user"), Vocabulary(np.arange(n_items), "item")
    rng = np.random.default_rng(seed)
    # fixed pairs: the first observed pairs, then unobserved ones where they exist
    obs = list(zip(u_idx.tolist(), i_idx.tolist()))
    seen = set(obs)
    unobs = [(u, i) for u in range(n_users) for i in range(n_items) if (u, i) not in seen]
    pairs = (obs[: max(1, n_pairs - n_pairs // 2)] + unobs[: n_pairs // 2])[:n_pairs]
    ranks: dict = {}
    kept_draws: dict = {}
    kept_truth: dict = {}
    t0 = time.perf_counter()
    sims = [simulate(spec, u_idx, i_idx, n_users, n_items, rng, factor_prior)
            for _ in range(n_rep)]
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=n_rep)]
    datasets = [Ratings.from_indices(u_idx, i_idx, y, users, items) for _, y in sims]
    if getattr(method, "batched", False):
        fitted = method(datasets, spec, seeds)  # list of flat-draw dicts
    else:
        fitted = None
    for rep in range(n_rep):
        truth = sims[rep][0]
        if fitted is None:
            post = fit(datasets[rep], spec, seeds[rep])
            flat = {n: post.flat(n) for n in ("mu", "bu", "bi", "U", "V")
                    + tuple(post.likelihood.theta_names)}
        else:
            flat = fitted[rep]
        S = len(flat["mu"])
        if S < L:
            raise SpecError(f"SBC with L={L} needs at least {L} posterior draws; "
                            f"{name} returned {S}")
        pick = np.round(np.linspace(0, S - 1, L)).astype(int)
        flat = {n: np.asarray(v)[pick] for n, v in flat.items()}
        q_draws = quantities(flat, spec, pairs, n_bias)
        if transform is not None:
            q_draws = transform(q_draws)
        q_true = quantities(truth, spec, pairs, n_bias)
        for n, v in q_draws.items():
            ranks.setdefault(n, []).append(rank_of(float(q_true[n]), v, rng))
            kept_draws.setdefault(n, []).append(np.asarray(v, float))
            kept_truth.setdefault(n, []).append(float(q_true[n]))
        if progress is not None:
            progress(rep + 1, n_rep)
    settings = dict(n_rep=n_rep, n_users=n_users, n_items=n_items, density=density, L=L,
                    n_obs=len(u_idx), pairs=pairs, seed=seed, options=options,
                    factor_prior=factor_prior)
    if fitted is not None and hasattr(method, "timings"):
        settings["timings"] = dict(method.timings)
    return SBCResult(name, L, {n: np.asarray(r) for n, r in ranks.items()}, spec,
                     settings, time.perf_counter() - t0,
                     getattr(transform, "__name__", None) if transform else None,
                     draws={n: np.asarray(v) for n, v in kept_draws.items()},
                     truths={n: np.asarray(v) for n, v in kept_truth.items()})
