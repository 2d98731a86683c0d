r"""Simulation-based calibration (Talts et al. 2018) of the **Macau** Gibbs sweep: the
BPMF Gibbs sampler with side features in the factor priors (module docs of
:mod:`bayesmf.infer.gibbs`, step 1m of :func:`bayesmf.infer.gibbs_kernel._sweep`).

The generic machinery (ranks, uniformity tests, :class:`~bayesmf.testing.sbc.SBCResult`,
negative controls) is :mod:`bayesmf.testing.sbc`; this module adds what the features
need.

**Prior simulated** (:func:`simulate_macau`) -- exactly the prior the kernel samples
from. Everything without features comes from :func:`bayesmf.testing.sbc.simulate`
(global mean, noise or the likelihood's parameters, biases, and per factor side
:math:`\Lambda\sim\mathcal W(w_0 I,\nu_0)` (or the diagonal Gamma prior),
:math:`\mu_F\mid\Lambda\sim\mathcal N(0,(\beta_0\Lambda)^{-1})`); then, per side with a
feature matrix :math:`X\ (n\times F)`:

.. math::

    \lambda_\beta &\sim \mathrm{Gamma}(a_\beta, \text{rate } b_\beta), \\
    \beta_f &\sim \mathcal N(0, (\lambda_\beta\Lambda)^{-1})\quad (f=1..F;\ \text{rows of }
        \beta\ (F\times k)), \\
    F_r &\sim \mathcal N(\mu_F + \beta^\top x_r,\ \Lambda^{-1}),

and the ratings are drawn again from the likelihood with the new factors
(:math:`r_{ui}\sim\mathcal N(\mu+b_u+b_i+U_u^\top V_i,\tau^{-1})` for the Gaussian, the
family's own observation model otherwise). With :math:`\Lambda = LL^\top`,
:math:`L^{-\top}z` (:math:`z` standard normal) has covariance :math:`\Lambda^{-1}`.

**Quantities ranked** (:func:`macau_quantities`). The joint prior is invariant under the
rotations :math:`(U, V, \mu_F, \Lambda, \beta) \to (UQ, VQ, Q^\top\mu_F,
Q^\top\Lambda Q, \beta Q)` (:math:`Q` orthogonal: :math:`W_0 = w_0 I` is isotropic and
:math:`\beta Q` has rows :math:`Q^\top\beta_f \sim \mathcal N(0,(\lambda_\beta
Q^\top\Lambda Q)^{-1})`), and the likelihood depends on :math:`UV^\top` only, so the
posterior is rotation-symmetric and no chain can be expected to traverse that symmetry.
Only rotation-invariant scalars are ranked: those of
:func:`bayesmf.testing.sbc.quantities` (:math:`\mu`, :math:`\tau`, biases, pair means
:math:`m_{ui}`) and per side with features

* ``lambda_beta_S`` -- :math:`\lambda_\beta` itself;
* ``tr_bLb_S`` -- :math:`\operatorname{tr}(\beta\Lambda\beta^\top)` (invariant under
  any invertible :math:`A`: :math:`\beta\to\beta A`, :math:`\Lambda\to
  A^{-1}\Lambda A^{-\top}`; under the prior :math:`\lambda_\beta
  \operatorname{tr}(\beta\Lambda\beta^\top)\sim\chi^2_{Fk}`);
* ``|beta|2_S`` -- :math:`\lVert\beta\rVert_F^2` (rotation-invariant: the Frobenius norm);
* ``|xb[r]|2_S`` -- :math:`\lVert\beta^\top x_r\rVert^2` of a probe row ``r``;
* ``logdet_S`` -- :math:`\log\det\Lambda`;

and, with features on both sides, the feature-only ("cold-start") means of the pairs,
``c[u,i]`` :math:`= (\mu_U + \beta_U^\top x_u)^\top(\mu_V + \beta_V^\top x_i)` (one side
without features contributes :math:`\mu_F` only), invariant under every
:math:`(UA, VA^{-\top})` reparametrisation.

:class:`MacauGibbsBatch` runs the kernel :class:`~bayesmf.infer.gibbs.BPMFGibbs` with the
features, ``vmap``-ed over replications (the pattern and the features are shared, only
the ratings differ); ``lambda_beta_prior`` of the **sampler** may differ from the
simulator's (a negative control). :func:`run_sbc_macau` ties it together.
"""

from __future__ import annotations

import time

import numpy as np

from bayesmf.errors import SpecError
from bayesmf.model.spec import ModelSpec
from bayesmf.testing import sbc

__all__ = ["simulate_macau", "macau_quantities", "MacauGibbsBatch", "run_sbc_macau",
           "MACAU_SIDES"]

#: feature side -> the factor letter of the draws (``beta_U``, ``Lambda_U``, ...)
MACAU_SIDES = {"user": "U", "item": "V"}


def _check_lb_prior(p, what="lambda_beta_prior"):
    try:
        a, b = (float(x) for x in p)
    except (TypeError, ValueError):
        raise SpecError(f"{what} must be (shape, rate), got {p!r}") from None
    if not (a > 0 and b > 0):
        raise SpecError(f"{what} must be positive (shape, rate), got {p!r}")
    return a, b


def simulate_macau(spec: ModelSpec, users, items, n_users: int, n_items: int, features: dict,
                   rng, lambda_beta_prior=(1.0, 1.0)):
    """Draw ``(truth, ratings)`` from the Macau prior and the likelihood (module docs).

    ``features`` maps ``"user"``/``"item"`` to a dense ``X (n, F)`` (or None);
    ``lambda_beta_prior`` is the Gamma (shape, rate) of :math:`\\lambda_\\beta`. ``truth``
    holds what :func:`bayesmf.testing.sbc.simulate` returns plus ``beta_U (F, k)``,
    ``lambda_beta_U`` (``_V`` alike) for the sides with features; ``U``/``V`` of those
    sides are redrawn around :math:`\\mu_F + X\\beta`."""
    a, b = _check_lb_prior(lambda_beta_prior)
    k = spec.rank
    if k < 1:
        raise SpecError("the Macau prior needs rank >= 1")
    if not spec.priors.is_resolved:
        spec = spec.replace(priors=spec.priors.resolved(1.0))
    t, _ = sbc.simulate(spec, users, items, n_users, n_items, rng)
    for side, n in (("user", n_users), ("item", n_items)):
        X = features.get(side)
        if X is None:
            continue
        X = np.asarray(X, float)
        if X.ndim != 2 or X.shape[0] != n:
            raise SpecError(f"{side} features must have shape ({n}, F), got {X.shape}")
        S = MACAU_SIDES[side]
        Lc = np.linalg.cholesky(t[f"Lambda_{S}"])
        lb = rng.gamma(a, 1.0 / b)
        # rows of beta ~ N(0, (lb Lambda)^{-1}): L^{-T} z / sqrt(lb), z ~ N(0, I_k)
        beta = np.linalg.solve(Lc.T, rng.standard_normal((k, X.shape[1]))).T / np.sqrt(lb)
        t[f"beta_{S}"] = beta
        t[f"lambda_beta_{S}"] = lb
        t[S] = (t[f"mu_{S}"] + X @ beta
                + np.linalg.solve(Lc.T, rng.standard_normal((k, n))).T)
    # simulate() already drew the family's parameters into t
    return t, sbc.simulate_observations(rng, spec, t, users, items)


def macau_quantities(p: dict, spec: ModelSpec, pairs, n_bias: int, features: dict,
                     probes: dict | None = None) -> dict:
    """Rotation-invariant scalars of one parameter set (scalars) or of draws (leading
    axis ``S``): those of :func:`bayesmf.testing.sbc.quantities` plus the Macau ones of
    the module docs for each side in ``features`` (``probes[side]``: the probe rows of
    ``|xb[r]|2``, default ``(0,)``)."""
    out = sbc.quantities(p, spec, pairs, n_bias)
    probes = probes or {}
    prior_mean = {}
    for side in ("user", "item"):
        S = MACAU_SIDES[side]
        mu_f = np.asarray(p[f"mu_{S}"], float)
        X = features.get(side)
        if X is None:
            prior_mean[side] = lambda r, m=mu_f: m  # noqa: E731
            continue
        X = np.asarray(X, float)
        beta = np.asarray(p[f"beta_{S}"], float)     # (..., F, k)
        Lam = np.asarray(p[f"Lambda_{S}"], float)    # (..., k, k)
        out[f"lambda_beta_{S}"] = np.asarray(p[f"lambda_beta_{S}"], float)
        out[f"tr_bLb_{S}"] = np.sum((beta @ Lam) * beta, axis=(-2, -1))
        out[f"|beta|2_{S}"] = np.sum(beta * beta, axis=(-2, -1))
        for r in probes.get(side, (0,)):
            xb = np.einsum("f,...fk->...k", X[r], beta)
            out[f"|xb[{r}]|2_{S}"] = np.sum(xb * xb, axis=-1)
        out[f"logdet_{S}"] = np.linalg.slogdet(Lam)[1]
        prior_mean[side] = (lambda r, m=mu_f, b=beta, x=X:
                            m + np.einsum("f,...fk->...k", x[r], b))
    if all(features.get(s) is not None for s in ("user", "item")):
        for u, i in pairs:
            out[f"c[{u},{i}]"] = np.sum(prior_mean["user"](u) * prior_mean["item"](i), axis=-1)
    return out


class MacauGibbsBatch:
    """Fit all SBC replications at once with the Gibbs kernel
    :class:`~bayesmf.infer.gibbs.BPMFGibbs` **with side features** (the Macau prior),
    ``vmap``-ed over the datasets (shared observed pattern and features, only the ratings
    differ: one compilation). Each replication runs one chain of ``num_warmup +
    num_samples * thin`` sweeps from the kernel's ``init`` (``beta = 0``,
    ``lambda_beta = 1``; sweep ``t`` with ``fold_in(key, t)``, as
    :func:`~bayesmf.infer.gibbs.fit_gibbs`) and keeps ``num_samples`` draws of every
    parameter. ``lambda_beta_prior`` is the **sampler's** Gamma (shape, rate) of
    :math:`\\lambda_\\beta` (the kernel's option of that name); ``beta_solver`` its
    solver ("auto", "cholesky" or "cg"). The compiled sampler is kept on the instance
    and reused by a later call with the same spec, number of replications, observed
    pattern and features (only the ratings and seeds differ), e.g. for a run whose
    *simulator* uses another prior."""

    batched = True
    __name__ = "macau-gibbs"

    def __init__(self, num_samples: int = 100, num_warmup: int = 100, thin: int = 1,
                 lambda_beta_prior=(1.0, 1.0), beta_solver: str = "auto"):
        self.num_samples, self.num_warmup, self.thin = num_samples, num_warmup, thin
        self.lambda_beta_prior = _check_lb_prior(lambda_beta_prior)
        self.beta_solver = beta_solver
        self._compiled: dict = {}  # cache key -> (kept names, compiled fn, kernel)
        self.timings: dict = {}

    def __call__(self, datasets, spec, seeds, features: dict) -> list:
        import jax

        from bayesmf.data.features import Features
        from bayesmf.infer.gibbs import BPMFGibbs

        d0 = datasets[0]
        key = self._cache_key(datasets, spec, features)
        if key in self._compiled:  # same pattern, features, spec and shapes: reuse
            keep, fn, kern = self._compiled[key]
            return self._run(keep, fn, kern, datasets, seeds)
        fe = {}
        for side, vocab in (("user", d0.users), ("item", d0.items)):
            X = features.get(side)
            if X is not None:
                X = np.asarray(X, float)
                schema = [{"name": f"x{j}", "kind": "numeric", "mean": 0.0, "scale": 1.0}
                          for j in range(X.shape[1])]
                fe[side] = Features(vocab, X, schema, side)
        if not fe:
            raise SpecError("MacauGibbsBatch needs features on at least one side")
        kern = BPMFGibbs(d0, spec, user_features=fe.get("user"),
                         item_features=fe.get("item"), beta_solver=self.beta_solver,
                         lambda_beta_prior=self.lambda_beta_prior)
        args = sbc.gibbs_batch_args(kern, datasets, seeds)
        keep = (("mu", "bu", "bi", "U", "V", "mu_U", "Lambda_U", "mu_V", "Lambda_V")
                + tuple(kern.cfg.spec.likelihood.theta_names)
                + tuple(n for side in fe for n in (f"beta_{MACAU_SIDES[side]}",
                                                   f"lambda_beta_{MACAU_SIDES[side]}")))
        chains = sbc.gibbs_batch_chains(kern, spec, keep, self.num_warmup, self.num_samples,
                                        self.thin)
        t0 = time.perf_counter()
        fn = jax.jit(chains).lower(*args).compile()
        self._compiled[key] = (keep, fn, kern)
        out = self._run(keep, fn, kern, datasets, seeds)
        self.timings["compile_s"] = time.perf_counter() - t0 - self.timings["run_s"]
        return out

    def _cache_key(self, datasets, spec, features) -> tuple:
        import hashlib

        h = hashlib.sha256()
        d0 = datasets[0]
        for a in (d0.user, d0.item):
            h.update(np.ascontiguousarray(a, np.int64).tobytes())
        for side in ("user", "item"):
            X = features.get(side)
            h.update(side.encode() + b"-" if X is None
                     else np.ascontiguousarray(X, np.float64).tobytes() + side.encode())
        return (spec, len(datasets), d0.n_users, d0.n_items, h.hexdigest())

    def _run(self, keep, fn, kern, datasets, seeds) -> list:
        import jax

        args = sbc.gibbs_batch_args(kern, datasets, seeds)
        t1 = time.perf_counter()
        outs = fn(*args)
        jax.block_until_ready(outs)
        self.timings = {"compile_s": 0.0, "run_s": time.perf_counter() - t1}
        outs = [np.asarray(o) for o in outs]
        return [{n: outs[j][r] for j, n in enumerate(keep)} for r in range(len(datasets))]


def run_sbc_macau(spec: ModelSpec, *, method=None, n_rep: int = 100, n_users: int = 10,
                  n_items: int = 8, n_user_features: int = 3, n_item_features: int = 2,
                  density: float = 0.5, L: int = 19, n_bias: int = 1, n_pairs: int = 2,
                  seed: int = 0, lambda_beta_prior=(1.0, 1.0), transform=None) -> sbc.SBCResult:
    """SBC of the Macau Gibbs sweep (module docs) on a small model.

    The observed pattern (:func:`bayesmf.testing.sbc.observed_pattern`) and the feature
    matrices (standard normal, ``n_user_features`` / ``n_item_features`` columns; 0 = no
    features on that side) are fixed by ``seed``; each of the ``n_rep`` replications
    draws parameters from the Macau prior with ``lambda_beta_prior`` (the
    **simulator's**), ratings from the likelihood, and is fitted by ``method`` (default
    :class:`MacauGibbsBatch` ``()``; its own ``lambda_beta_prior`` is the sampler's),
    whose draws are thinned evenly to ``L``. ``n_bias`` biases per side and ``n_pairs``
    pairs (observed first, then unobserved) are ranked with the Macau quantities of
    :func:`macau_quantities` (probe row 0 per side). ``transform`` as in
    :func:`bayesmf.testing.sbc.run_sbc`. Returns a
    :class:`~bayesmf.testing.sbc.SBCResult` (draws and truths kept)."""
    from bayesmf.data.ratings import Ratings
    from bayesmf.data.vocab import Vocabulary

    method = MacauGibbsBatch() if method is None else method
    if not spec.priors.is_resolved:  # SBC simulates at the unit scale
        spec = spec.replace(priors=spec.priors.resolved(1.0))
    spec.check_data(n_users, n_items, 1)
    if n_user_features < 0 or n_item_features < 0 or not (n_user_features or n_item_features):
        raise SpecError("run_sbc_macau needs features on at least one side "
                        f"(got n_user_features={n_user_features}, "
                        f"n_item_features={n_item_features})")
    u_idx, i_idx = sbc.observed_pattern(n_users, n_items, density, seed)
    rng = np.random.default_rng(seed)
    features = {"user": rng.standard_normal((n_users, n_user_features)) if n_user_features
                else None,
                "item": rng.standard_normal((n_items, n_item_features)) if n_item_features
                else None}
    users = Vocabulary(np.arange(n_users), "user")
    items = Vocabulary(np.arange(n_items), "item")
    obs = list(zip(u_idx.tolist(), i_idx.tolist()))
    seen = set(obs)
    unobs = [(u, i) for u in range(n_users) for i in range(n_items) if (u, i) not in seen]
    pairs = (obs[: max(1, n_pairs - n_pairs // 2)] + unobs[: n_pairs // 2])[:n_pairs]
    t0 = time.perf_counter()
    sims = [simulate_macau(spec, u_idx, i_idx, n_users, n_items, features, rng,
                           lambda_beta_prior) for _ in range(n_rep)]
    seeds = [int(s) for s in rng.integers(0, 2**31 - 1, size=n_rep)]
    datasets = [Ratings.from_indices(u_idx, i_idx, y, users, items) for _, y in sims]
    fitted = method(datasets, spec, seeds, features)
    ranks: dict = {}
    kept_draws: dict = {}
    kept_truth: dict = {}
    for rep in range(n_rep):
        flat = fitted[rep]
        S = len(flat["mu"])
        if S < L:
            raise SpecError(f"SBC with L={L} needs at least {L} posterior draws; got {S}")
        pick = np.round(np.linspace(0, S - 1, L)).astype(int)
        flat = {n: np.asarray(v)[pick] for n, v in flat.items()}
        q_draws = macau_quantities(flat, spec, pairs, n_bias, features)
        if transform is not None:
            q_draws = transform(q_draws)
        q_true = macau_quantities(sims[rep][0], spec, pairs, n_bias, features)
        for n, v in q_draws.items():
            ranks.setdefault(n, []).append(sbc.rank_of(float(q_true[n]), v, rng))
            kept_draws.setdefault(n, []).append(np.asarray(v, float))
            kept_truth.setdefault(n, []).append(float(q_true[n]))
    settings = dict(n_rep=n_rep, n_users=n_users, n_items=n_items, density=density, L=L,
                    n_obs=len(u_idx), pairs=pairs, seed=seed,
                    n_user_features=n_user_features, n_item_features=n_item_features,
                    lambda_beta_prior_sim=tuple(float(x) for x in lambda_beta_prior),
                    lambda_beta_prior_fit=getattr(method, "lambda_beta_prior", None),
                    timings=dict(getattr(method, "timings", {})))
    return sbc.SBCResult(getattr(method, "__name__", "macau"), L,
                         {n: np.asarray(r) for n, r in ranks.items()}, spec, settings,
                         time.perf_counter() - t0,
                         getattr(transform, "__name__", None) if transform else None,
                         draws={n: np.asarray(v) for n, v in kept_draws.items()},
                         truths={n: np.asarray(v) for n, v in kept_truth.items()})
