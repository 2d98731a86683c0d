r"""ArviZ interoperability and convergence diagnostics on identifiable quantities.

Two entry points:

* :func:`to_datatree` turns a :class:`~bayesmf.posterior.Posterior` into an ArviZ 1.x
  :class:`xarray.DataTree` (groups ``posterior``, ``sample_stats`` and, on request,
  ``log_likelihood``, ``posterior_predictive``, ``observed_data``), so that
  ``arviz.summary``, ``arviz.rhat``, ``arviz.ess``, ``arviz.loo``, ``arviz.compare`` and
  the ``arviz_plots`` functions (trace, rank, dist, PPC, rootogram) work directly.
* :func:`diagnose` reports split R-hat and bulk/tail ESS on quantities the likelihood
  identifies -- predictions for a fixed probe set of (user, item) pairs, biases,
  :math:`\mu`, the noise precision :math:`\tau`, rotation-invariant summaries of the
  hyperparameters and the factor norms :math:`\lVert U_u\rVert`, :math:`\lVert V_i\rVert`.

Why not the raw factors
-----------------------
The likelihood depends on the factors only through :math:`U V^\top`. For any invertible
:math:`k\times k` matrix :math:`R`, :math:`(U R,\, V R^{-\top})` gives the same
likelihood; the rotation-invariant Gaussian / Normal-Wishart priors of BPMF leave an
exact symmetry under every orthogonal :math:`R` (rotations, axis permutations and sign
flips). The posterior of a single entry :math:`U_{uk}` is therefore a symmetric mixture
over these copies, and chains legitimately settle in different copies (or drift
between them). R-hat and ESS computed on raw :math:`U_{uk}` or :math:`V_{ik}` then
report "not converged" for a perfectly mixed sampler -- or, worse, agree by accident.
Quantities invariant under orthogonal :math:`R` do not have this problem:
:math:`U_u^\top V_i` (hence every prediction), :math:`\lVert U_u\rVert`,
:math:`\lVert V_i\rVert`, :math:`\operatorname{tr}\Lambda_U`,
:math:`\log\det\Lambda_U`, :math:`\lVert\mu_U\rVert`, biases, :math:`\mu` and :math:`\tau`.

Of these, the norms and the factor hyperparameters are identified by the priors only: a
non-orthogonal :math:`R` (e.g. :math:`(sU, V/s)`) changes them without changing any
prediction, so a Gibbs chain moves along that ridge slowly. The BPMF sampler's scale move
covers the overall scale (:math:`\log\det\Lambda` R-hat 1.03, ESS ~100 of 1,600 draws on
MovieLens-100K u1), but row norms and :math:`\lVert\mu_U\rVert` still have ESS ~10-40 where
predictions have ~1,000. A flag on a ``norm`` or ``hyper`` row therefore says that the
factor geometry drifts, not that predictions are unreliable; judge the latter on the
``prediction``, ``bias`` and ``global`` rows.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from bayesmf._memory import check_allocation
from bayesmf.data.ratings import Ratings
from bayesmf.errors import DataError, SpecError
from bayesmf.posterior import Posterior

__all__ = ["to_datatree", "diagnose", "NonIdentifiableWarning", "RHAT_MAX", "ESS_MIN_PER_CHAIN"]

#: R-hat above this flags a quantity (Vehtari et al. 2021 recommend 1.01)
RHAT_MAX = 1.01
#: bulk or tail ESS below this times the number of chains flags a quantity
ESS_MIN_PER_CHAIN = 100

_DIMS = {
    "mu": (), "tau": (), "lambda_bu": (), "lambda_bi": (),
    "bu": ("user",), "bi": ("item",),
    "U": ("user", "factor"), "V": ("item", "factor"),
    "mu_U": ("factor",), "mu_V": ("factor",),
    "Lambda_U": ("factor", "factor_"), "Lambda_V": ("factor", "factor_"),
    # Poisson factorization: user activity xi_u, item popularity eta_i
    "xi": ("user",), "eta": ("item",),
}
_FACTOR_VARS = ("U", "V", "mu_U", "mu_V", "Lambda_U", "Lambda_V")


class NonIdentifiableWarning(UserWarning):
    """Diagnostics were requested on quantities the likelihood does not identify."""


# ---------------------------------------------------------------------------- helpers
def _var_dims(name: str, arr: np.ndarray, sizes: dict | None = None) -> list[str]:
    """The dims of a ``(chain, draw, ...)`` variable: the named ones of :data:`_DIMS`
    where their number and (for those in ``sizes``) their lengths fit, else
    ``<name>_dim_<j>``."""
    extra = arr.ndim - 2
    dims = _DIMS.get(name)
    sizes = sizes or {}
    if dims is not None and len(dims) == extra and all(
            sizes.get(d, n) == n for d, n in zip(dims, arr.shape[2:])):
        return list(dims)
    return [f"{name}_dim_{j}" for j in range(extra)]


def _pairs_arrays(pairs, posterior: Posterior):
    """Raw (users, items) and optional ratings from Ratings / DataFrame / tuple."""
    if isinstance(pairs, Ratings):
        return (pairs.users.decode(pairs.user), pairs.items.decode(pairs.item),
                np.asarray(pairs.rating, float))
    if isinstance(pairs, pd.DataFrame):
        missing = [c for c in ("user", "item") if c not in pairs.columns]
        if missing:
            raise DataError(f"pairs frame misses column(s) {missing}; it has "
                            f"{list(pairs.columns)}")
        r = pairs["rating"].to_numpy(float) if "rating" in pairs.columns else None
        return pairs["user"].to_numpy(), pairs["item"].to_numpy(), r
    if isinstance(pairs, tuple) and len(pairs) in (2, 3):
        users, items = np.asarray(pairs[0]), np.asarray(pairs[1])
        r = np.asarray(pairs[2], float) if len(pairs) == 3 else None
        if len(users) != len(items) or (r is not None and len(r) != len(users)):
            raise DataError("pairs arrays differ in length")
        return users, items, r
    raise DataError("pairs must be a Ratings container, a DataFrame with user/item "
                    "(and optionally rating) columns, or a (users, items[, ratings]) tuple; "
                    f"got {type(pairs).__name__}")


def _pair_chunks(n: int, S: int, k: int):
    step = max(1, (1 << 23) // max(1, S * max(k, 1)))
    for a in range(0, n, step):
        yield slice(a, min(n, a + step))


def _pointwise_loglik(posterior: Posterior, users, items, y, memory_limit=None):
    """``log N(y | m_s, sd_s^2)`` per draw and observation, ``(C, D, n)`` float32.

    For known pairs ``sd_s^2 = 1/tau_s`` (the model's likelihood); ids unknown to the
    posterior use its population fallback (extra variance), see :mod:`bayesmf.posterior`.
    """
    C, D, S = posterior.n_chains, posterior.n_draws, posterior.n_samples
    n = len(y)
    check_allocation(4 * S * n, f"log_likelihood ({S} draws x {n} observations, float32)",
                     memory_limit, hint="pass fewer observations (a sample of the ratings) "
                     "or thin the posterior (Posterior.thin) before to_datatree")
    u, i, ku, ki = posterior.encode_pairs(users, items, unknown="fallback")
    out = np.empty((S, n), np.float32)
    half_log_2pi = 0.5 * np.log(2 * np.pi)
    lik = posterior.likelihood
    gaussian = lik.gaussian_noise
    for sl in _pair_chunks(n, S, posterior.spec.rank):
        if gaussian:
            # the family's own term: N(t | m, v + 1/(tau c)); (t, c) = (y, 1) for the
            # Gaussian, (1, confidence) for a listed implicit pair
            t, c = lik.predictive_target(y[sl])
            m, v = posterior.pair_moments(u[sl], i[sl], ku[sl], ki[sl])
            sd = np.sqrt(v + posterior.noise_var()[:, None] / c)
            z = (t - m) / sd
            out[:, sl] = -0.5 * z * z - np.log(sd) - half_log_2pi
        else:  # each draw's own distribution: log p(y | eta_s, theta_s)
            mix = posterior.predictive_mixture(u[sl], i[sl], ku[sl], ki[sl]).per_draw()
            out[:, sl] = mix.logpdf(np.broadcast_to(y[sl], (S, len(y[sl]))))
    return out.reshape(C, D, n)


def _predictive_draws(posterior: Posterior, users, items, seed, memory_limit=None, y=None):
    """One posterior-predictive draw per posterior draw and pair, ``(C, D, n)``. With the
    observed values ``y`` of listed pairs, a family whose listed pair has its own noise
    factor (implicit feedback: precision :math:`\tau c_{ui}`) replicates that pair's
    term, as ``log_likelihood`` scores it."""
    C, D, S = posterior.n_chains, posterior.n_draws, posterior.n_samples
    n = len(users)
    check_allocation(4 * S * n, f"posterior_predictive ({S} draws x {n} pairs, float32)",
                     memory_limit, hint="pass fewer pairs or thin the posterior")
    u, i, ku, ki = posterior.encode_pairs(users, items, unknown="fallback")
    rng = np.random.default_rng(seed)
    out = np.empty((S, n), np.float32)
    for sl in _pair_chunks(n, S, posterior.spec.rank):
        if posterior.likelihood.gaussian_noise:
            if y is None:
                m, sd = posterior.predictive_components(u[sl], i[sl], ku[sl], ki[sl])
            else:  # N(m, v + 1/(tau c)) of each listed pair
                _, c = posterior.likelihood.predictive_target(np.asarray(y)[sl])
                m, v = posterior.pair_moments(u[sl], i[sl], ku[sl], ki[sl])
                sd = np.sqrt(v + posterior.noise_var()[:, None] / c)
            out[:, sl] = m + sd * rng.standard_normal(m.shape)
        else:  # one draw from each posterior draw's own distribution
            mix = posterior.predictive_mixture(u[sl], i[sl], ku[sl], ki[sl])
            out[:, sl] = mix.sample(rng, None)
    return out.reshape(C, D, n)


def _discretizer(posterior: Posterior):
    """Map ratings to integer level codes ``round(r / step)`` on the training scale."""
    sc = posterior.train.scale
    step = sc.step
    if step is None:
        raise SpecError("discretize=True needs a rating scale with discrete levels (the "
                        "training ratings had more than 50 distinct values)")

    def f(x):
        x = np.clip(np.asarray(x, float), sc.min, sc.max)
        return np.rint(x / step).astype(np.int64)

    return f, step


def _same_rows(a, b) -> bool:
    return (len(a[0]) == len(b[0]) and np.array_equal(np.asarray(a[0]), np.asarray(b[0]))
            and np.array_equal(np.asarray(a[1]), np.asarray(b[1])))


# ---------------------------------------------------------------------------- DataTree
def to_datatree(posterior: Posterior, *, log_likelihood=False, posterior_predictive=None,
                observed=None, factors: bool = True, discretize: bool = False,
                seed: int = 0, memory_limit=None):
    r"""Convert a posterior to an ArviZ 1.x :class:`xarray.DataTree`.

    Parameters
    ----------
    posterior : Posterior
        Any method's result (MAP gives a ``1 x 1`` posterior; diagnostics need more).
    log_likelihood : False or Ratings
        Ratings to evaluate the pointwise log likelihood on (group ``log_likelihood``,
        variable ``rating``, dims ``(chain, draw, obs)``, float32). For ``arviz.loo`` use
        the **training** ratings the posterior was fitted to. It is computed in chunks
        over observations; the result has ``chains x draws x n`` entries (check with the
        memory limit, see :mod:`bayesmf._memory`), so thin the posterior or pass a
        sample when that is large.
    posterior_predictive : None, True, Ratings, DataFrame or tuple
        Pairs to draw replicated ratings for (one per posterior draw, noise included):
        ``True`` uses the observed rows; a Ratings container or a frame with a
        ``rating`` column also provides the observed values.
    observed : Ratings, optional
        Observations for the ``observed_data`` group; by default the ratings given to
        ``log_likelihood`` or ``posterior_predictive``. All groups with an ``obs``
        dimension refer to the same rows; mismatches raise
        :class:`~bayesmf.errors.SpecError`.
    factors : bool
        Include ``U``, ``V`` and the factor hyperparameters in ``posterior``
        (``False`` keeps the tree small: users x items x rank x draws adds up).
    discretize : bool
        Store predictive and observed ratings as integer level codes
        ``round(r / step)`` on the training scale (half stars: 1..10; whole stars:
        1..5) so that discrete checks such as ``arviz_plots.plot_ppc_rootogram`` work;
        the variable's ``attrs["step"]`` holds the step.
    seed : int
        Seed of the posterior predictive noise.

    Returns
    -------
    xarray.DataTree
        Coordinates are raw ids: ``user``, ``item``; ``factor`` is ``0..k-1``; ``obs``
        rows carry ``obs_user`` and ``obs_item`` coordinates.
    """
    from arviz_base import from_dict

    if not isinstance(posterior, Posterior):
        raise SpecError(f"expected a Posterior, got {type(posterior).__name__}")
    if log_likelihood is True:
        raise SpecError("log_likelihood=True is ambiguous: the posterior does not keep the "
                        "rating values; pass the training Ratings (log_likelihood=train)")
    C, D = posterior.n_chains, posterior.n_draws
    k = posterior.spec.rank

    # -- observation rows shared by log_likelihood / observed_data / posterior_predictive
    obs = None  # (users, items, ratings)
    sources = []
    if observed is not None:
        sources.append(("observed", _pairs_arrays(observed, posterior)))
    if log_likelihood is not False and log_likelihood is not None:
        if not isinstance(log_likelihood, Ratings):
            raise SpecError("log_likelihood must be False or a Ratings container, got "
                            f"{type(log_likelihood).__name__}")
        sources.append(("log_likelihood", _pairs_arrays(log_likelihood, posterior)))
    pp_pairs = None
    if posterior_predictive is not None and posterior_predictive is not False:
        if posterior_predictive is True:
            pass
        else:
            pp = _pairs_arrays(posterior_predictive, posterior)
            if pp[2] is not None:
                sources.append(("posterior_predictive", pp))
            else:
                pp_pairs = pp
    for name, src in sources:
        if src[2] is None:
            raise SpecError(f"{name} needs rating values (a Ratings container or a frame "
                            "with a 'rating' column)")
        if obs is None:
            obs = src
        elif not _same_rows(obs, src):
            raise SpecError(
                f"{name} refers to other (user, item) rows than {sources[0][0]}; the "
                "log_likelihood, posterior_predictive and observed_data groups share the "
                "'obs' dimension. Build one DataTree per set of rows.")
    if posterior_predictive is True and obs is None:
        raise SpecError("posterior_predictive=True needs observations (pass observed= or "
                        "log_likelihood=)")

    # -- posterior group
    data = {"posterior": {}}
    dims: dict[str, list[str]] = {}
    coords = {"user": posterior.users.ids, "item": posterior.items.ids}
    if k:
        coords["factor"] = np.arange(k)
        coords["factor_"] = np.arange(k)
    for name, arr in posterior.draws.items():
        if (not factors or k == 0) and name in _FACTOR_VARS:
            continue
        a = np.asarray(arr)
        data["posterior"][name] = a
        dims[name] = _var_dims(name, a, {"user": len(posterior.users),
                                         "item": len(posterior.items)})

    # -- sample_stats: per (chain, draw) entries
    stats = {}
    for name, arr in posterior.sample_stats.items():
        a = np.asarray(arr)
        if a.ndim < 2 or a.shape[:2] != (C, D):
            continue
        # ArviZ falls back to sample_stats.log_likelihood for loo when the log_likelihood
        # group is absent; a per-draw *total* there would silently give a wrong LOO.
        out_name = "log_likelihood_total" if name == "log_likelihood" else name
        stats[out_name] = a
        if a.ndim > 2:
            dims[out_name] = [f"{out_name}_dim_{j}" for j in range(a.ndim - 2)]
    if stats:
        data["sample_stats"] = stats

    # -- observation groups
    ostep = None
    if obs is not None or pp_pairs is not None:
        disc = None
        if discretize:
            disc, ostep = _discretizer(posterior)
        if obs is not None:
            ou, oi, oy = obs
            coords["obs"] = np.arange(len(oy))
            obs_coords = {"obs_user": ("obs", np.asarray(ou)), "obs_item": ("obs", np.asarray(oi))}
            # on the predictive's scale (implicit feedback: the preference 1 of a listed
            # pair, not its count), as log_likelihood and posterior_predictive
            ot = posterior.likelihood.predictive_target(np.asarray(oy, float))[0]
            data["observed_data"] = {"rating": disc(ot) if disc else ot}
            dims["rating"] = ["obs"]
            if log_likelihood is not False and log_likelihood is not None:
                data["log_likelihood"] = {
                    "rating": _pointwise_loglik(posterior, ou, oi, np.asarray(oy, float),
                                                memory_limit)}
            if posterior_predictive is not None and posterior_predictive is not False \
                    and pp_pairs is None:
                pp = _predictive_draws(posterior, ou, oi, seed, memory_limit,
                                       y=np.asarray(oy, float))
                data["posterior_predictive"] = {"rating": disc(pp) if disc else pp}
        if pp_pairs is not None:
            pu, pi, _ = pp_pairs
            coords["pair"] = np.arange(len(pu))
            pp = _predictive_draws(posterior, pu, pi, seed, memory_limit)
            name = "rating_pred" if obs is not None else "rating"
            data["posterior_predictive"] = {name: disc(pp) if disc else pp}
            dims[name] = ["pair"]
            pair_coords = {"pair_user": ("pair", np.asarray(pu)),
                           "pair_item": ("pair", np.asarray(pi))}
        else:
            pair_coords = {}
    attrs = {"bayesmf_method": posterior.method, "rank": int(k),
             "inference_library": "bayesmf"}
    dt = from_dict(data, dims=dims, coords=coords)
    dt.attrs.update(attrs)
    # extra (non-index) coordinates of the observation rows
    for group in ("observed_data", "log_likelihood", "posterior_predictive"):
        if group not in dt.children:
            continue
        ds = dt[group].to_dataset()
        add = {}
        if "obs" in ds.dims and obs is not None:
            add.update(obs_coords)
        if "pair" in ds.dims:
            add.update(pair_coords)
        if add:
            ds = ds.assign_coords(add)
        if ostep is not None and group != "log_likelihood":
            for v in ds.data_vars:
                ds[v].attrs.update(step=ostep, units=f"rating / {ostep:g}")
        dt[group] = ds
    return dt


# ---------------------------------------------------------------------------- diagnose
def _probe_pairs(posterior: Posterior, n_probe: int, rng):
    """Half observed training pairs, half random pairs (index space)."""
    tr = posterior.train
    N, M = len(posterior.users), len(posterior.items)
    n_seen = min(n_probe - n_probe // 2, int(tr.n_train))
    # distinct training rows without materialising a permutation of all of them
    pos = np.unique(rng.integers(0, int(tr.n_train), size=4 * n_seen + 8))
    pos = rng.permutation(pos)[:n_seen]
    su = np.searchsorted(tr.seen_indptr, pos, side="right") - 1
    si = tr.seen_indices[pos]
    n_rand = n_probe - n_seen
    ru = rng.integers(0, N, n_rand)
    ri = rng.integers(0, M, n_rand)
    return np.concatenate([su, ru]).astype(np.int64), np.concatenate([si, ri]).astype(np.int64)


def _label(ids, idx):
    return [str(x) for x in ids[idx]]


def _row_totals(post: Posterior, uu, ii):
    """``(C, D, len(uu))`` expected totals of users ``uu`` over all items and ``(C, D,
    len(ii))`` of items ``ii`` over all users (module docs of :func:`diagnose`)."""
    d = {k: np.asarray(post.draws[k], np.float64) for k in ("mu", "bu", "bi", "U", "V")}
    N, M = d["bu"].shape[2], d["bi"].shape[2]
    mu = d["mu"][..., None]
    act = (M * (mu + d["bu"][:, :, uu]) + d["bi"].sum(2, keepdims=True)
           + np.einsum("cduk,cdk->cdu", d["U"][:, :, uu], d["V"].sum(2)))
    pop = (N * (mu + d["bi"][:, :, ii]) + d["bu"].sum(2, keepdims=True)
           + np.einsum("cdik,cdk->cdi", d["V"][:, :, ii], d["U"].sum(2)))
    return act, pop


def diagnose(posterior: Posterior, probe_pairs=None, n_probe: int = 50, seed: int = 0, *,
             biases: str = "probe", raw_factors: bool = False) -> pd.DataFrame:
    r"""Convergence diagnostics (rank-normalised split R-hat, bulk and tail ESS) on
    identifiable quantities.

    Reported quantities (column ``kind``):

    * ``prediction`` -- the noise-free mean :math:`m_{ui} = \mu + b_u + b_i + U_u^\top V_i`
      for a fixed probe set of (user, item) pairs (``probe_pairs`` raw ids, or
      ``n_probe`` pairs drawn with ``seed``: half observed training pairs, half random);
    * ``global`` -- :math:`\mu` and the noise precision :math:`\tau`;
    * ``hyper`` -- hyperparameters when present: :math:`\lambda_{b_u}`, :math:`\lambda_{b_i}`,
      :math:`\operatorname{tr}\Lambda_U`, :math:`\log\det\Lambda_U`,
      :math:`\lVert\mu_U\rVert` (and for ``V``);
    * ``bias`` -- :math:`b_u`, :math:`b_i` of the probe users and items
      (``biases="all"``: every user and item; ``"none"``: skip);
    * ``activity`` / ``popularity`` -- full-matrix likelihoods (Poisson factorisation,
      implicit feedback), where every pair is data: the expected total of a probe user
      over all items :math:`\sum_i m_{ui} = M(\mu + b_u) + \sum_i b_i + U_u^\top\sum_i
      V_i` (HPF: the user's expected number of plays) and of a probe item over all users;
      linear in the predictions, so identified, unlike :math:`\xi_u`, :math:`\eta_i`
      or the factor sums, whose scale trades off between the two sides;
    * ``norm`` -- :math:`\lVert U_u\rVert`, :math:`\lVert V_i\rVert` of the probe users/items;
    * ``raw factor`` -- only with ``raw_factors=True``: :math:`U_{uk}`, :math:`V_{ik}` of the
      probe users and items. **These are not identified** (see below) and a
      :class:`NonIdentifiableWarning` is issued.

    Why R-hat on raw U and V is meaningless: the likelihood sees the factors only through
    :math:`UV^\top`, so :math:`(UR, VR^{-\top})` fits equally well for every invertible
    :math:`R`, and the rotation-invariant priors keep the symmetry for every orthogonal
    :math:`R` (rotations, permutations, sign flips). Different chains may sit in different
    rotated copies of the same posterior, so R-hat on :math:`U_{uk}` can be huge while every
    prediction has mixed perfectly. Diagnose the quantities above instead.

    Parameters
    ----------
    posterior : Posterior
        At least 4 draws per chain (MAP and single-draw results have nothing to diagnose).
    probe_pairs : DataFrame with user/item columns, or (users, items) tuple, optional
        Raw ids of the pairs whose predictions are diagnosed.
    n_probe : int
        Number of probe pairs drawn when ``probe_pairs`` is not given.
    seed : int
        Seed for drawing probe pairs.
    biases : {"probe", "all", "none"}
    raw_factors : bool
        Also report raw factor entries (with a warning; for demonstration).

    Returns
    -------
    pandas.DataFrame
        One row per quantity with columns ``kind, quantity, mean, sd, rhat, ess_bulk,
        ess_tail, flag``; ``flag`` is True where ``rhat > 1.01`` or an ESS is below
        ``100 * chains`` (Vehtari et al. 2021). ``attrs`` hold the thresholds, and
        ``hint`` when a flagged Gibbs fit of an augmented likelihood (ordinal, Bernoulli)
        ran without the IWLS row step (``row_mh``) that would mix it better.
    """
    import arviz_stats as azs

    if not isinstance(posterior, Posterior):
        raise SpecError(f"expected a Posterior, got {type(posterior).__name__}")
    if biases not in ("probe", "all", "none"):
        raise SpecError(f"biases must be 'probe', 'all' or 'none', got {biases!r}")
    if posterior.n_draws < 4:
        raise SpecError(f"diagnostics need at least 4 draws per chain; this posterior has "
                        f"{posterior.n_chains} chain(s) x {posterior.n_draws} draw(s)"
                        + (" (a point estimate such as MAP)" if posterior.is_point_estimate
                           else ""))
    if isinstance(n_probe, bool) or not isinstance(n_probe, (int, np.integer)) or n_probe < 1:
        raise SpecError(f"n_probe must be a positive integer, got {n_probe!r}")
    if raw_factors:
        warnings.warn(
            "R-hat and ESS on raw factor entries U[u,k], V[i,k] are meaningless: the "
            "likelihood depends on U and V only through U V^T, so (U R, V R^-T) fit equally "
            "well for any invertible R and the posterior is symmetric under rotations, "
            "permutations and sign flips of the factor axes. Chains in different rotated "
            "copies look 'unconverged' although every prediction has mixed. Judge "
            "convergence on the identifiable rows (predictions, biases, mu, tau, norms).",
            NonIdentifiableWarning, stacklevel=2)
    C, D = posterior.n_chains, posterior.n_draws
    rng = np.random.default_rng(seed)
    uids, iids = posterior.users.ids, posterior.items.ids
    if probe_pairs is None:
        pu, pi = _probe_pairs(posterior, int(n_probe), rng)
    else:
        ru, ri, _ = _pairs_arrays(probe_pairs, posterior)
        pu = posterior.users.encode(ru).astype(np.int64)
        pi = posterior.items.encode(ri).astype(np.int64)

    rows: list[pd.DataFrame] = []

    def add(kind, name, arr):
        """Diagnose the columns of ``arr`` (C, D, n) in blocks (bounded memory)."""
        arr = np.asarray(arr).reshape(C, D, -1)
        nm = [name] if isinstance(name, str) else list(name)
        if arr.shape[2] != len(nm):
            raise AssertionError("internal: names and columns disagree")
        step = max(1, (1 << 22) // (C * D))
        for a in range(0, len(nm), step):
            X = arr[:, :, a:a + step].astype(np.float64)
            with warnings.catch_warnings():
                # constant quantities (e.g. a fixed bias) give nan diagnostics, not noise
                warnings.simplefilter("ignore", RuntimeWarning)
                if C == 1 and D >= 4:  # one chain: R-hat of its halves (split R-hat;
                    # arviz_stats gives NaN for a single chain)
                    h = D // 2
                    rhat = np.asarray(azs.rhat(np.stack([X[0, :h], X[0, D - h:]]),
                                               chain_axis=0, draw_axis=1), float)
                else:
                    rhat = np.asarray(azs.rhat(X, chain_axis=0, draw_axis=1), float)
                ess_b = np.asarray(azs.ess(X, chain_axis=0, draw_axis=1, method="bulk"), float)
                ess_t = np.asarray(azs.ess(X, chain_axis=0, draw_axis=1, method="tail",
                                           prob=(0.05, 0.95)), float)
            rows.append(pd.DataFrame({
                "kind": kind, "quantity": nm[a:a + step], "mean": X.mean(axis=(0, 1)),
                "sd": X.reshape(C * D, -1).std(axis=0, ddof=1),
                "rhat": rhat, "ess_bulk": ess_b, "ess_tail": ess_t}))

    m, _ = posterior.pair_moments(pu, pi)  # (S, n) -- known pairs, v = 0
    add("prediction", [f"pred[{a}, {b}]" for a, b in zip(_label(uids, pu), _label(iids, pi))],
        m.T.reshape(len(pu), C, D).transpose(1, 2, 0))
    dr = posterior.draws
    spec = posterior.spec
    if spec.global_mean:
        add("global", "mu", dr["mu"])
    if spec.noise == "learned" and "tau" in dr:
        add("global", "tau", dr["tau"])
    for h in ("lambda_bu", "lambda_bi"):
        if h in dr and np.asarray(dr[h]).shape == (C, D):
            add("hyper", h, dr[h])
    for side in ("U", "V"):
        L = dr.get(f"Lambda_{side}")
        if L is not None and np.ndim(L) == 4 and spec.rank:
            L = np.asarray(L, np.float64)
            add("hyper", f"trace(Lambda_{side})", np.trace(L, axis1=2, axis2=3))
            add("hyper", f"logdet(Lambda_{side})", np.linalg.slogdet(L)[1])
        mv = dr.get(f"mu_{side}")
        if mv is not None and np.ndim(mv) == 3 and spec.rank:
            add("hyper", f"norm(mu_{side})", np.linalg.norm(np.asarray(mv, np.float64), axis=2))
    uu = np.unique(pu)
    ii = np.unique(pi)
    if posterior.likelihood.full_matrix:  # every pair is data: row totals over all pairs
        act, pop = _row_totals(posterior, uu, ii)
        add("activity", [f"sum_i m[{x}, i]" for x in _label(uids, uu)], act)
        add("popularity", [f"sum_u m[u, {x}]" for x in _label(iids, ii)], pop)
    if biases != "none":
        bu_idx = np.arange(len(uids)) if biases == "all" else uu
        bi_idx = np.arange(len(iids)) if biases == "all" else ii
        if spec.user_bias:
            add("bias", [f"bu[{x}]" for x in _label(uids, bu_idx)], dr["bu"][:, :, bu_idx])
        if spec.item_bias:
            add("bias", [f"bi[{x}]" for x in _label(iids, bi_idx)], dr["bi"][:, :, bi_idx])
    if spec.rank:
        add("norm", [f"|U[{x}]|" for x in _label(uids, uu)],
            np.linalg.norm(np.asarray(dr["U"][:, :, uu], np.float64), axis=3))
        add("norm", [f"|V[{x}]|" for x in _label(iids, ii)],
            np.linalg.norm(np.asarray(dr["V"][:, :, ii], np.float64), axis=3))
        if raw_factors:
            ks = range(spec.rank)
            add("raw factor", [f"U[{x}, {j}]" for x in _label(uids, uu) for j in ks],
                np.asarray(dr["U"][:, :, uu], np.float64).reshape(C, D, -1))
            add("raw factor", [f"V[{x}, {j}]" for x in _label(iids, ii) for j in ks],
                np.asarray(dr["V"][:, :, ii], np.float64).reshape(C, D, -1))

    df = pd.concat(rows, ignore_index=True)
    ess_min = ESS_MIN_PER_CHAIN * C
    df["flag"] = (df["rhat"] > RHAT_MAX) | (df["ess_bulk"] < ess_min) | (df["ess_tail"] < ess_min)
    df.attrs.update(rhat_max=RHAT_MAX, ess_min=ess_min, chains=C, draws=D)
    hint = _mixing_hint(posterior)
    if hint and bool(df["flag"].any()):
        df.attrs["hint"] = hint
    return df


def _mixing_hint(posterior) -> str | None:
    """The remedy for slow mixing that a Gibbs fit of an augmented likelihood without the
    IWLS row step has (``row_mh``, :mod:`bayesmf.infer.gibbs`), or None."""
    lik = posterior.likelihood
    settings = posterior.attrs.get("settings", {})
    if (posterior.method != "gibbs" or not lik.augmented or lik.full_matrix
            or "row_mh" not in settings or settings["row_mh"]):
        return None
    return (f"the {lik.name} Gibbs chain ran without the row Metropolis-Hastings step; its "
            "augmentation alone mixes slowly where predictions are confident: refit with "
            "row_mh=True (CLI --option row_mh=true), or run more sweeps "
            "(benchmarks/results/augmented_mixing_t1.md)")
