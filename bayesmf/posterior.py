r"""The one result type every inference method returns.

A :class:`Posterior` holds parameter **draws** with leading ``(chain, draw)`` axes
(MAP is a ``1 x 1`` "posterior"), the :class:`~bayesmf.model.spec.ModelSpec`, the user and
item vocabularies, and what the training data said (:class:`TrainInfo`: rating scale,
global mean, counts, the seen (user, item) pairs). Evaluation and recommendation consume
only this type and never ask which method produced it.

Standard draw names and shapes (``C`` chains, ``D`` draws, ``N`` users, ``M`` items,
``k`` rank): ``mu (C,D)``, ``bu (C,D,N)``, ``bi (C,D,M)``, ``U (C,D,N,k)``,
``V (C,D,M,k)``, ``tau (C,D)``; optional hyperparameters ``mu_U (C,D,k)``,
``Lambda_U (C,D,k,k)``, ``mu_V``, ``Lambda_V``, ``lambda_bu (C,D)``, ``lambda_bi (C,D)``.

Posterior predictive of a rating (per pair, a mixture over the S = C*D draws):

.. math::

    p(r_{ui}\mid \mathcal D) \approx \frac1S\sum_s
    \mathcal N\!\left(r;\; m_s,\; v_s + \tau_s^{-1}\right),\qquad
    m_s = \mu_s + b_{u,s} + b_{i,s} + U_{u,s}^\top V_{i,s}

so the predictive mean is :math:`\bar m`, and the predictive variance splits into
**parameter** uncertainty :math:`\mathrm{Var}_s(m_s)+\overline{v_s}` and **observation
noise** :math:`\overline{\tau_s^{-1}}`. For known pairs :math:`v_s=0`.

Unknown ids (``unknown="fallback"``): an unknown user is treated as a random member of
the training population -- per draw its augmented vector :math:`a_u=[b_u, U_u]` is
replaced by the population mean and covariance :math:`(\bar a_s, \Sigma_s)`, giving
:math:`m_s = \mu_s + b_{i,s} + \bar a_s^\top x_{i,s}` and
:math:`v_s = x_{i,s}^\top \Sigma_s x_{i,s}` with :math:`x_{i,s} = [1, V_{i,s}]`
(symmetrically for unknown items; both unknown treats user and item as independent
population members). The fallback mean and variance equal the moments of the mixture of
known-user predictions over users, so it is exactly as uncertain as "some user". These rows
are flagged ``known_user=False`` / ``known_item=False``.

Side features and cold start (the Macau prior, ``BayesMF(method="gibbs",
user_features=..., item_features=...)``): the posterior keeps the features of its ids in
``posterior.features`` (``{"user": Features | None, "item": ...}``, aligned to the
vocabularies) and the draws ``beta_U (C,D,F_U,k)``, ``lambda_beta_U`` (``_V`` alike).
:meth:`Posterior.with_features` adds **cold-start ids** -- ids with features but no
ratings -- to a new posterior: under the model a new user has
:math:`U_u \mid s \sim \mathcal N(\mu_{U,s} + \beta_{U,s}^\top x_u, \Lambda_{U,s}^{-1})`
and :math:`b_u \mid s \sim \mathcal N(0, \lambda_{b_u,s}^{-1})` (0 without user biases),
independent of everything else given draw :math:`s`. Its rows are appended with the
per-draw **means** (:math:`U_{u,s} = \mu_{U,s} + \beta_{U,s}^\top x_u`, :math:`b_{u,s}=0`)
and :meth:`pair_moments` adds the exact extra variance of such a pair: with the other
side's per-draw factor mean :math:`c_s` and covariance :math:`C_s` (0 for a fitted row,
:math:`\Lambda_{V,s}^{-1}` for a cold one, the population covariance for an unknown id),
:math:`v_s \mathrel{+}= \lambda_{b_u,s}^{-1} + c_s^\top\Lambda_{U,s}^{-1}c_s +
\operatorname{tr}(\Lambda_{U,s}^{-1}C_s)` (the trace counted once per pair). This is
narrower than the population fallback, whose covariance also holds the spread of
:math:`\beta^\top x` over the population. ``predict``, ``predictive``, ``quantiles``,
the metrics and the ``"mean"`` top-n scores are exact for cold ids; top-n strategies
that score per draw (``thompson``, ``upper``, ``prob``) see the cold rows at their
per-draw means (without the extra variance). The cold rows of each side are the index
range ``attrs["cold_start"][side] = [start, stop)`` (the population fallback of unknown
ids leaves them out; rows appended later, e.g. by fold-in, are not cold); the model file
stores the features with their schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import ndtri

from bayesmf._memory import check_allocation, max_pairs_per_block
from bayesmf.data.ratings import Ratings, RatingScale
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import DataError, SpecError
from bayesmf.model import linear
from bayesmf.model.params import Params
from bayesmf.model.spec import ModelSpec

__all__ = ["Posterior", "TrainInfo", "Prediction", "PARAM_NAMES", "ETA_NAMES"]

PARAM_NAMES = ("mu", "bu", "bi", "U", "V", "tau")
#: the draws of the linear predictor eta = mu + b_u + b_i + U_u . V_i (every likelihood)
ETA_NAMES = ("mu", "bu", "bi", "U", "V")
#: elements of a (draws x pairs x k) work block; keeps predictive memory bounded (~64 MB)
_BLOCK_ELEMS = 1 << 24


@dataclass(frozen=True)
class TrainInfo:
    """What the training data said, kept with the posterior.

    ``seen_indptr``/``seen_indices`` are the CSR structure (users x items) of the training
    pairs, used for exclude-seen recommendation.

    ``scale`` and ``global_mean`` describe the fitted values. The pair facts --
    ``n_train``, ``user_counts``, ``item_counts`` and the seen structure -- describe the
    **seen** pairs: the training pairs themselves, except for a Bernoulli fit on implicit
    positives plus sampled negatives (``BayesMF.fit(interactions, negatives=...)``), where
    they are the positives only (a sampled negative was never seen by its user and stays
    recommendable); ``extra["n_fit"]`` then counts every fitted pair.
    """

    scale: RatingScale
    global_mean: float
    n_train: int
    user_counts: np.ndarray
    item_counts: np.ndarray
    seen_indptr: np.ndarray
    seen_indices: np.ndarray
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_ratings(cls, r: Ratings, *, seen=None, **extra) -> "TrainInfo":
        """From the training ratings ``r``. ``seen`` (a Ratings or Interactions on the
        same vocabularies, default ``r``) gives the seen pairs and their counts; when it
        is not ``r``, ``extra["n_fit"] = r.nnz`` records the fitted pairs."""
        if seen is None or seen is r:
            csr = r.to_csr()
            return cls(scale=r.scale, global_mean=r.mean, n_train=r.nnz,
                       user_counts=r.user_counts().astype(np.int64),
                       item_counts=r.item_counts().astype(np.int64),
                       seen_indptr=csr.indptr.astype(np.int64),
                       seen_indices=csr.indices.astype(np.int32), extra=dict(extra))
        if len(seen.users) != len(r.users) or len(seen.items) != len(r.items) \
                or seen.users != r.users or seen.items != r.items:
            raise DataError("TrainInfo: the seen pairs must share the training ratings' "
                            "user and item vocabularies")
        extra = {"n_fit": int(r.nnz), **extra}
        su = np.asarray(seen.user, np.int64)
        si = np.asarray(seen.item, np.int64)
        N, M = len(r.users), len(r.items)
        user_counts = np.bincount(su, minlength=N).astype(np.int64)
        order = np.lexsort((si, su))
        return cls(scale=r.scale, global_mean=r.mean, n_train=int(len(su)),
                   user_counts=user_counts,
                   item_counts=np.bincount(si, minlength=M).astype(np.int64),
                   seen_indptr=np.concatenate([[0], np.cumsum(user_counts)]).astype(np.int64),
                   seen_indices=si[order].astype(np.int32), extra=dict(extra))

    def seen_items(self, user_index: int) -> np.ndarray:
        return self.seen_indices[self.seen_indptr[user_index]:self.seen_indptr[user_index + 1]]


@dataclass
class Prediction:
    """Per-pair predictive summary. Arrays have one entry per requested pair.

    ``std`` is the total predictive standard deviation (parameter + noise);
    ``std_param`` excludes observation noise. ``uncertainty`` says what ``std`` contains
    (``"noise only"`` for point estimates such as MAP).
    """

    user: np.ndarray
    item: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    std_param: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    known_user: np.ndarray
    known_item: np.ndarray
    interval: float
    uncertainty: str

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame({
            "user": self.user, "item": self.item, "mean": self.mean, "std": self.std,
            "std_param": self.std_param, "lower": self.lower, "upper": self.upper,
            "known_user": self.known_user, "known_item": self.known_item,
        })

    def __len__(self) -> int:
        return len(self.mean)


class Posterior:
    """Draws of the shared model's parameters plus everything needed to use them.

    Parameters
    ----------
    draws : dict of str -> ndarray
        At least ``mu, bu, bi, U, V, tau`` with leading ``(chain, draw)`` axes.
    spec : ModelSpec
    users, items : Vocabulary
    train : TrainInfo
    method : str
        Name of the inference method (``"map"``, ``"gibbs"``, ``"nuts"``, ...).
    sample_stats : dict, optional
        Per-(chain, draw) diagnostics (log likelihood, divergences, ...).
    native : object, optional
        The backend's own result (NumPyro ``MCMC``, PyMC ``Model``/DataTree...), not saved.
    attrs : dict, optional
        JSON-able metadata (seed, settings, timings).
    """

    def __init__(self, draws: dict, spec: ModelSpec, users: Vocabulary, items: Vocabulary,
                 train: TrainInfo, method: str, sample_stats: dict | None = None,
                 native=None, attrs: dict | None = None, features: dict | None = None):
        lik = spec.likelihood
        required = ETA_NAMES + tuple(lik.theta_names)
        missing = [n for n in required if n not in draws]
        if missing:
            raise SpecError(f"posterior draws miss {missing} (likelihood {lik.name!r})")
        # arrays that are not numpy yet (JAX device arrays, lists) are copied to host
        copied = sum(int(getattr(v, "nbytes", 0)) for v in draws.values()
                     if not isinstance(v, np.ndarray))
        if copied:
            check_allocation(copied, "copying the posterior draws to host memory")
        d = {k: np.asarray(v) for k, v in draws.items()}
        C, D = d["mu"].shape[:2] if d["mu"].ndim >= 2 else (None, None)
        if C is None:
            raise SpecError("draws must have leading (chain, draw) axes")
        N, M, k = len(users), len(items), spec.rank
        want = {"mu": (C, D), "bu": (C, D, N), "bi": (C, D, M), "U": (C, D, N, k),
                "V": (C, D, M, k)}
        if "tau" in lik.theta_names:
            want["tau"] = (C, D)
        if "cutpoints" in lik.theta_names:
            want["cutpoints"] = (C, D, lik.K - 1)
        for n, shp in want.items():
            if d[n].shape != shp:
                raise SpecError(f"draw {n!r} has shape {d[n].shape}, expected {shp}")
            if not np.all(np.isfinite(d[n])):
                raise SpecError(f"draw {n!r} contains NaN or inf")
        self.draws = d
        self.spec = spec
        self.users = users
        self.items = items
        self.train = train
        self.method = method
        self.sample_stats = {k: np.asarray(v) for k, v in (sample_stats or {}).items()}
        self.native = native
        self.attrs = dict(attrs or {})
        #: side features (Macau): ``{"user": Features | None, "item": Features | None}``
        #: aligned to the vocabularies (module docs)
        self.features = {"user": None, "item": None, **dict(features or {})}

    # ------------------------------------------------------------------ basics
    @property
    def n_chains(self) -> int:
        return self.draws["mu"].shape[0]

    @property
    def n_draws(self) -> int:
        return self.draws["mu"].shape[1]

    @property
    def n_samples(self) -> int:
        """Total number of draws ``S = chains * draws``."""
        return self.n_chains * self.n_draws

    @property
    def is_point_estimate(self) -> bool:
        """True for a single parameter set (MAP): no parameter uncertainty is available."""
        return self.n_samples == 1

    @property
    def uncertainty(self) -> str:
        return "noise only" if self.is_point_estimate else "parameter + noise"

    def __repr__(self) -> str:
        return (f"Posterior(method={self.method!r}, chains={self.n_chains}, "
                f"draws={self.n_draws}, users={len(self.users)}, items={len(self.items)}, "
                f"rank={self.spec.rank})")

    def flat(self, name: str) -> np.ndarray:
        """Draws of ``name`` with (chain, draw) merged into one leading axis ``S``."""
        a = self.draws[name]
        return a.reshape((self.n_samples,) + a.shape[2:])

    def params(self, chain: int = 0, draw: int = 0) -> Params:
        """One parameter set (``tau`` is None for likelihoods without a noise precision)."""
        return Params(*(self.draws[n][chain, draw] if n in self.draws else None
                        for n in PARAM_NAMES))

    def mean_params(self) -> Params:
        """Posterior mean of each parameter (for display; predictions average draws)."""
        return Params(*(self.draws[n].mean(axis=(0, 1)) if n in self.draws else None
                        for n in PARAM_NAMES))

    @property
    def likelihood(self):
        """The observation family (:mod:`bayesmf.model.likelihoods`)."""
        return self.spec.likelihood

    def theta_flat(self) -> dict:
        """The likelihood-parameter draws, ``(S, ...)`` each."""
        return {n: self.flat(n) for n in self.likelihood.theta_names}

    def noise_var(self) -> np.ndarray:
        """Per-draw observation-noise variance ``1/tau_s`` (shape ``(S,)``); Gaussian
        likelihood only."""
        lik = self.likelihood
        if not lik.gaussian_noise:
            raise SpecError(f"likelihood {lik.name!r} has no Gaussian observation noise; "
                            "use Posterior.predictive(...) for its predictive distribution")
        return lik.noise_var(self.theta_flat())

    def select(self, chains=None, draws=None) -> "Posterior":
        """A posterior restricted to some chains / draws: a slice, an integer or an array
        of integer positions (negative ones count from the end) or a boolean mask, for
        each. The result must keep at least one chain and one draw."""
        cs = slice(None) if chains is None else self._selection(chains, self.n_chains,
                                                                "chains")
        ds = slice(None) if draws is None else self._selection(draws, self.n_draws, "draws")
        if not (isinstance(cs, slice) and isinstance(ds, slice)):  # fancy index -> copy
            nc = len(range(self.n_chains)[cs]) if isinstance(cs, slice) else np.size(cs)
            nd_ = len(range(self.n_draws)[ds]) if isinstance(ds, slice) else np.size(ds)
            check_allocation(self.nbytes() * nc * nd_ // max(self.n_samples, 1),
                             f"selecting {nc} chain(s) x {nd_} draw(s) of the posterior")
        nd = {k: np.asarray(v)[cs][:, ds] for k, v in self.draws.items()}
        ss = {k: np.asarray(v)[cs][:, ds] for k, v in self.sample_stats.items()
              if np.ndim(v) >= 2}
        return Posterior(nd, self.spec, self.users, self.items, self.train, self.method,
                         ss, self.native, self.attrs, self.features)

    @staticmethod
    def _selection(sel, n: int, what: str):
        """``sel`` checked as a selection of ``n`` chains / draws (:meth:`select`)."""
        if isinstance(sel, slice):
            if not len(range(n)[sel]):
                raise SpecError(f"{what}={sel!r} selects none of the {n} {what}")
            return sel
        if isinstance(sel, (bool, np.bool_)):
            raise SpecError(f"{what} must be a slice, integer positions or a boolean mask, "
                            f"got {sel!r}")
        arr = np.atleast_1d(np.asarray(sel))
        if arr.size == 0:
            raise SpecError(f"{what}={sel!r} selects none of the {n} {what}")
        if arr.dtype == bool:
            if arr.shape != (n,):
                raise SpecError(f"a boolean mask of {what} needs {n} values, got "
                                f"{arr.shape[0] if arr.ndim == 1 else arr.shape}")
            arr = np.flatnonzero(arr)
        elif arr.dtype.kind not in "iu" or arr.ndim != 1:
            raise SpecError(f"{what} must be a slice, integer positions or a boolean mask, "
                            f"got {sel!r}")
        if arr.size == 0:
            raise SpecError(f"{what}={sel!r} selects none of the {n} {what}")
        if arr.min() < -n or arr.max() >= n:
            raise SpecError(f"{what} positions must lie in [-{n}, {n - 1}] (the posterior "
                            f"has {n} {what}), got {sel!r}")
        return arr.astype(np.int64)

    def thin(self, every: int) -> "Posterior":
        """Every ``every``-th draw of each chain (an integer >= 1)."""
        if isinstance(every, bool) or not isinstance(every, (int, np.integer)) or every < 1:
            raise SpecError(f"thin needs an integer >= 1, got {every!r}")
        return self.select(draws=slice(None, None, int(every)))

    def nbytes(self) -> int:
        return int(sum(v.nbytes for v in self.draws.values()))

    def to_datatree(self, **kwargs):
        """An ArviZ 1.x ``xarray.DataTree``; see :func:`bayesmf.diagnostics.to_datatree`."""
        from bayesmf.diagnostics import to_datatree

        return to_datatree(self, **kwargs)

    # ------------------------------------------------------------------ id handling
    def encode_pairs(self, users, items, unknown: str = "fallback"):
        """Raw ids -> (u_idx, i_idx, known_user, known_item). ``unknown`` is
        ``"fallback"`` (flag and use the population fallback) or ``"raise"``."""
        if unknown not in ("fallback", "raise"):
            raise SpecError(f"unknown= must be 'fallback' or 'raise', got {unknown!r}")
        # one id (a scalar) is one pair
        users = np.atleast_1d(users) if not isinstance(users, (pd.Series, pd.Index)) \
            else users
        items = np.atleast_1d(items) if not isinstance(items, (pd.Series, pd.Index)) \
            else items
        if len(users) != len(items):
            raise DataError(f"users and items differ in length: {len(users)} vs {len(items)}")
        if unknown == "raise":
            u = self.users.encode(users)
            i = self.items.encode(items)
            return u, i, np.ones(len(u), bool), np.ones(len(i), bool)
        u, ku = self.users.encode(users, unknown="mask")
        i, ki = self.items.encode(items, unknown="mask")
        return u, i, ku, ki

    # ------------------------------------------------------------------ predictive core
    def _population_moments(self):
        """Per draw, the population mean and covariance of the augmented user vectors
        ``a_u = [b_u, U_u]`` and item vectors ``a_i = [b_i, V_i]`` (shapes ``(S, k+1)`` and
        ``(S, k+1, k+1)``), used for the unknown-id fallback
        (:func:`bayesmf.model.linear.population_moments`)."""
        if not hasattr(self, "_pop_cache"):
            S, k = self.n_samples, self.spec.rank
            check_allocation(
                2 * S * max(len(self.users), len(self.items)) * max(k, 1) * 8,
                "population moments of the factors (unknown-id fallback)",
                hint="thin the posterior (Posterior.thin) or keep fewer draws")
            bu, bi, U, V = (self.flat(n) for n in ETA_NAMES[1:])
            if "cold_start" in self.attrs:  # the population: the rows fitted to ratings
                ku = ~self._cold_rows("user", np.arange(len(self.users)))
                ki = ~self._cold_rows("item", np.arange(len(self.items)))
                bu, U, bi, V = bu[:, ku], U[:, ku], bi[:, ki], V[:, ki]
            self._pop_cache = linear.population_moments(bu, bi, U, V)
        return self._pop_cache

    def pair_moments(self, u, i, known_user=None, known_item=None):
        """Per-draw linear predictor ``m (S, n)`` and its extra variance ``v (S, n)`` for
        index pairs (``-1``/unknown rows use the population fallback); see
        :func:`bayesmf.model.linear.pair_moments`. Callers chunk over pairs."""
        u = np.asarray(u, np.int64)
        i = np.asarray(i, np.int64)
        ku = (u >= 0) if known_user is None else np.asarray(known_user, bool)
        ki = (i >= 0) if known_item is None else np.asarray(known_item, bool)
        _check_index_range(u, ku, len(self.users), "user")
        _check_index_range(i, ki, len(self.items), "item")
        pop = None if (ku.all() and ki.all()) else self._population_moments()
        flat = {n: self.flat(n) for n in ETA_NAMES}
        m, v = linear.pair_moments(flat, u, i, ku, ki, pop)
        if "cold_start" in self.attrs:
            self._add_cold_variance(v, flat, u, i, ku, ki, pop)
        return m, v

    # ------------------------------------------------------------------ cold start
    def cold_range(self, side: str) -> tuple:
        """``(start, stop)``: the index range of the cold-start rows of ``side``
        ("user"/"item") added by :meth:`with_features` (empty without)."""
        n = len(self.users) if side == "user" else len(self.items)
        a, b = self.attrs.get("cold_start", {}).get(side, (n, n))
        return int(a), int(b)

    def _cold_rows(self, side, idx):
        a, b = self.cold_range(side)
        return (idx >= a) & (idx < b)

    def _cold_moments(self, side: str):
        r"""Per draw ``(var_b (S,), Sigma (S, k, k))``: the prior variance of a cold row's
        bias and the covariance :math:`\Lambda^{-1}` of its factors."""
        cache = self.__dict__.setdefault("_cold_cache", {})
        if side not in cache:
            S_ = "U" if side == "user" else "V"
            on = self.spec.user_bias if side == "user" else self.spec.item_bias
            lb = self.flat("lambda_bu" if side == "user" else "lambda_bi").astype(np.float64)
            vb = 1.0 / lb if on else np.zeros(self.n_samples)
            Lam = self.flat(f"Lambda_{S_}").astype(np.float64)
            Sig = np.linalg.inv(Lam)
            cache[side] = (vb, 0.5 * (Sig + Sig.transpose(0, 2, 1)))
        return cache[side]

    def _add_cold_variance(self, v, flat, u, i, ku, ki, pop):
        """Add the extra variance of pairs with a cold-start row (module docs), in place."""
        cu = ku & self._cold_rows("user", u)
        ci = ki & self._cold_rows("item", i)
        if not (cu.any() or ci.any()):
            return
        k = self.spec.rank

        def other(sel, side, idx, known, cold):
            """Factor mean (S, n, k) and covariance (S, n, k, k) or None of the other
            side's rows of the selected pairs."""
            S_ = "U" if side == "user" else "V"
            F = flat[S_][:, np.where(known[sel], idx[sel], 0)].astype(np.float64)
            unk = ~known[sel]
            cov = None
            if unk.any():
                pmean, pcov = pop[side]
                F[:, unk] = pmean[:, None, 1:]
                cov = np.zeros(F.shape + (k,))
                cov[:, unk] = pcov[:, None, 1:, 1:]
            if cold[sel].any():
                cov = np.zeros(F.shape + (k,)) if cov is None else cov
                cov[:, cold[sel]] = self._cold_moments(side)[1][:, None]
            return F, cov

        if cu.any():  # cold user: var b_u + c' A c + tr(A C)
            vb, A = self._cold_moments("user")
            c, C = other(cu, "item", i, ki, ci)
            v[:, cu] += vb[:, None] + np.einsum("snk,skl,snl->sn", c, A, c)
            if C is not None:
                v[:, cu] += np.einsum("skl,snlk->sn", A, C)
        if ci.any():  # cold item: var b_i + a' C a (+ tr(C A) for a population user)
            vb, Cv = self._cold_moments("item")
            a, A = other(ci, "user", u, ku, np.zeros_like(cu))
            v[:, ci] += vb[:, None] + np.einsum("snk,skl,snl->sn", a, Cv, a)
            if A is not None:
                v[:, ci] += np.einsum("skl,snlk->sn", Cv, A)

    def with_likelihood(self, likelihood, **attrs) -> "Posterior":
        """The same draws under another configuration of the **same** likelihood family
        (same name and parameters ``theta``), e.g. a Bernoulli-logit with a recalibrated
        predictive link (:meth:`bayesmf.evaluate.Recalibration.attach`); ``attrs`` are
        merged into a copy of :attr:`attrs`. The draws are shared, not copied."""
        from bayesmf.model.likelihoods import get_likelihood

        lik, old = get_likelihood(likelihood), self.likelihood
        if lik.name != old.name or tuple(lik.theta_names) != tuple(old.theta_names):
            raise SpecError(f"with_likelihood keeps the family: this posterior's likelihood "
                            f"is {old.name!r}, got {lik.name!r}")
        return Posterior(self.draws, self.spec.replace(likelihood=lik), self.users,
                         self.items, self.train, self.method, self.sample_stats,
                         self.native, {**self.attrs, **attrs}, self.features)

    def with_features(self, user_features=None, item_features=None) -> "Posterior":
        r"""A posterior with **cold-start ids** added: every id of ``user_features`` /
        ``item_features`` (a :class:`~bayesmf.data.features.Features` or a DataFrame with
        the columns the model was fitted with) that is not in the vocabulary is appended,
        its factor rows per draw at :math:`\mu_s + \beta_s^\top x` and its bias at 0,
        with the model's extra variance added at prediction (module docs). Rows of ids
        the model already knows are ignored (their factors come from their ratings).
        Needs a Macau posterior with features on that side (``BayesMF(method="gibbs",
        user_features=...)``)."""
        from bayesmf.data.features import Features

        draws = dict(self.draws)
        vocabs = {"user": self.users, "item": self.items}
        feats = dict(self.features)
        cold = {side: list(self.cold_range(side)) for side in ("user", "item")}
        C, D = self.n_chains, self.n_draws
        for side, new in (("user", user_features), ("item", item_features)):
            if new is None:
                continue
            S_ = "U" if side == "user" else "V"
            base = self.features.get(side)
            if base is None or f"beta_{S_}" not in self.draws:
                raise SpecError(f"this posterior has no {side} features (fit with "
                                f"BayesMF(method='gibbs' | 'map' | 'svi' | 'nuts', "
                                f"{side}_features=...))")
            if isinstance(new, pd.DataFrame):
                new = base.transform(new, side if side in new.columns else None)
            elif not isinstance(new, Features):
                raise DataError(f"{side}_features must be a Features or a DataFrame, got "
                                f"{type(new).__name__}")
            elif new.schema != base.schema:
                raise DataError(f"{side}_features were encoded with another schema than the "
                                f"model's; pass the raw DataFrame (or use "
                                f"posterior.features[{side!r}].transform(df))")
            _, known = vocabs[side].encode(new.ids.ids, unknown="mask")
            if known.all():
                continue
            n_side = len(vocabs[side])
            if len(base) != n_side:
                raise SpecError(f"the {side} features cover {len(base)} of the {n_side} "
                                f"{side}s of this posterior (rows appended without "
                                f"features); add cold-start {side}s before appending")
            if cold[side][0] == cold[side][1]:
                cold[side] = [n_side, n_side]
            elif cold[side][1] != n_side:
                raise SpecError(f"cannot add cold-start {side}s after rows were appended "
                                f"behind the earlier cold-start ones")
            new = new.subset(new.ids.ids[~known])
            X = new.dense()
            mu_f = self.draws[f"mu_{S_}"].astype(np.float64)          # C, D, k
            beta = self.draws[f"beta_{S_}"].astype(np.float64)        # C, D, F, k
            rows = mu_f[:, :, None, :] + np.einsum("nf,cdfk->cdnk", X, beta)
            draws[S_] = np.concatenate([draws[S_], rows.astype(draws[S_].dtype)], axis=2)
            b = "bu" if side == "user" else "bi"
            draws[b] = np.concatenate([draws[b], np.zeros((C, D, len(new)), draws[b].dtype)],
                                      axis=2)
            vocabs[side] = vocabs[side].extend(new.ids.ids)
            feats[side] = base.concat(new)
            cold[side][1] = len(vocabs[side])
        t = self.train
        n_u, n_i = len(vocabs["user"]) - len(self.users), len(vocabs["item"]) - len(self.items)
        train = TrainInfo(t.scale, t.global_mean, t.n_train,
                          np.concatenate([t.user_counts, np.zeros(n_u, np.int64)]),
                          np.concatenate([t.item_counts, np.zeros(n_i, np.int64)]),
                          np.concatenate([t.seen_indptr,
                                          np.full(n_u, t.seen_indptr[-1], np.int64)]),
                          t.seen_indices, dict(t.extra))
        attrs = {**self.attrs, "cold_start": cold}
        return Posterior(draws, self.spec, vocabs["user"], vocabs["item"], train,
                         self.method, self.sample_stats, self.native, attrs, feats)

    def _chunks(self, n: int):
        step = max_pairs_per_block(self.n_samples, self.spec.rank, _BLOCK_ELEMS)
        for a in range(0, n, step):
            yield slice(a, min(n, a + step))

    def predictive_mixture(self, u, i, known_user=None, known_item=None):
        """The posterior predictive of index pairs as a :class:`~bayesmf.predictive.Mixture`
        (one component per draw; the likelihood builds it from the per-draw linear
        predictor and its fallback variance, :meth:`pair_moments`). Callers chunk over
        pairs (:meth:`_chunks`)."""
        m, v = self.pair_moments(u, i, known_user, known_item)
        return self.likelihood.predictive(m, v, self.theta_flat())

    def predictive(self, users, items, unknown: str = "fallback"):
        """The posterior predictive of pairs of **raw ids** as a
        :class:`~bayesmf.predictive.Mixture`: ``mean()`` (expected rating; P(y=1) for
        Bernoulli), ``var()``, ``cdf``, ``logpdf``, ``quantile``, ``prob_at_least``,
        ``crps``, ``sample`` and, for discrete families, ``pmf()``. Holds ``S x pairs``
        arrays: pass a few thousand pairs at a time (:meth:`predict` chunks for you)."""
        u, i, ku, ki = self.encode_pairs(users, items, unknown)
        S = self.n_samples
        K = getattr(self.likelihood, "K", 1) if self.likelihood.discrete else 1
        check_allocation(3 * 8 * S * len(u) * max(K, 1),
                         f"the predictive mixture of {len(u)} pairs x {S} draws",
                         hint="pass fewer pairs per call or thin the posterior")
        return self.predictive_mixture(u, i, ku, ki)

    def predict(self, users, items, interval: float = 0.9, clip: bool = True,
                unknown: str = "fallback", method: str = "mixture") -> Prediction:
        """Predictive mean, std and central interval for pairs of **raw ids**.

        Parameters
        ----------
        interval : float
            Central interval probability (``0.9`` -> 5% and 95% quantiles).
        clip : bool
            Report the mean and the interval bounds on the training rating scale
            ``[train.scale.min, train.scale.max]`` (default ``True``):
            ``mean = clip(E[r])``, ``lower/upper = clip(F^{-1}(q))``. Only these reported
            point values are clipped: the predictive distribution keeps its mass (the
            Gaussian mixture still extends beyond the scale), ``std``/``std_param`` are
            those of the unclipped mixture, and :meth:`predictive`, :meth:`quantiles`,
            :meth:`prob_at_least`, :meth:`log_predictive_density` and the metrics NLPD,
            CRPS, PIT and coverage use the unclipped density. ``False`` reports the raw
            mixture mean and quantiles (a 5-star model may then predict 5.2 with an upper
            bound of 7.5). Ordinal and Bernoulli predictions already lie on their
            support, so clipping leaves them unchanged; a degenerate training scale
            (all ratings equal) leaves the values unclipped (:meth:`clip_to_scale`).
        unknown : {"fallback", "raise"}
            Unknown ids use the population fallback (see module docs) or raise.
        method : {"mixture", "gaussian"}
            Interval bounds from the exact draw mixture, or a Gaussian with the
            predictive mean and std.

        The mean is the expected value of the predictive (the expected rating; for a
        Bernoulli likelihood P(y=1)); discrete families give intervals on their support.
        """
        if not 0 < interval < 1:
            raise SpecError(f"interval must be in (0, 1), got {interval}")
        raw_u = np.atleast_1d(np.asarray(users))
        raw_i = np.atleast_1d(np.asarray(items))
        u, i, ku, ki = self.encode_pairs(raw_u, raw_i, unknown)
        out = self.summarize_indices(u, i, ku, ki, interval=interval, method=method)
        mean, std, std_p, lo, hi = out
        if clip:
            mean, lo, hi = (self.clip_to_scale(x) for x in (mean, lo, hi))
        return Prediction(raw_u, raw_i, mean, std, std_p, lo, hi, ku, ki, interval,
                          self.uncertainty)

    def clip_to_scale(self, x):
        """``x`` clipped to the training rating scale ``[train.scale.min, max]``
        (reported point predictions; NaN stays NaN). A degenerate scale (every training
        rating equal, ``max <= min``) says nothing about the range: ``x`` is returned
        unchanged."""
        x = np.asarray(x, np.float64)
        lo, hi = self.likelihood.clip_range(self.train.scale)
        if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
            return x
        return np.clip(x, lo, hi)

    def summarize_indices(self, u, i, known_user=None, known_item=None,
                          interval: float = 0.9, method: str = "mixture"):
        """Index-level predictive summary: ``(mean, std, std_param, lower, upper)`` of the
        unclipped mixture (:meth:`predict` clips the reported values)."""
        if method not in ("mixture", "gaussian"):
            raise SpecError(f"method must be 'mixture' or 'gaussian', got {method!r}")
        if method == "gaussian" and not self.likelihood.gaussian_noise:
            raise SpecError(f"method='gaussian' (intervals of a Gaussian with the predictive "
                            f"mean and std) applies to the Gaussian-noise likelihoods; the "
                            f"{self.likelihood.name!r} predictive is discrete and its "
                            f"intervals come from the mixture (method='mixture')")
        u = np.asarray(u)
        n = len(u)
        ku = (u >= 0) if known_user is None else np.asarray(known_user, bool)
        ki = (np.asarray(i) >= 0) if known_item is None else np.asarray(known_item, bool)
        mean = np.empty(n)
        std = np.empty(n)
        std_p = np.empty(n)
        lo = np.empty(n)
        hi = np.empty(n)
        a = (1 - interval) / 2
        gaussian = self.likelihood.gaussian_noise
        for sl in self._chunks(n):
            mix = self.predictive_mixture(u[sl], np.asarray(i)[sl], ku[sl], ki[sl])
            mm, tv, pv = mix.mean(), mix.var(), mix.param_var()
            mean[sl], std[sl], std_p[sl] = mm, np.sqrt(tv), np.sqrt(pv)
            if gaussian and (method == "gaussian" or self.n_samples == 1
                             and not (~ku[sl] | ~ki[sl]).any()):
                z = ndtri(1 - a)
                lo[sl], hi[sl] = mm - z * np.sqrt(tv), mm + z * np.sqrt(tv)
            else:
                lo[sl] = mix.quantile(a)
                hi[sl] = mix.quantile(1 - a)
        return mean, std, std_p, lo, hi

    def predictive_components(self, u, i, known_user=None, known_item=None):
        """``(m, sd)`` of the Gaussian mixture components, each ``(S, n)``, for index
        pairs: ``p(r) = mean_s N(r; m[s], sd[s]^2)`` (Gaussian likelihood; every family:
        :meth:`predictive_mixture`). Callers chunk over pairs."""
        m, v = self.pair_moments(u, i, known_user, known_item)
        return m, np.sqrt(v + self.noise_var()[:, None])

    def predictive_draws(self, users, items, n: int | None = None, seed: int = 0,
                         unknown: str = "fallback") -> np.ndarray:
        """Draws of future ratings ``(S', pairs)`` from the posterior predictive
        (one rating per posterior draw; ``n`` resamples draws with replacement)."""
        if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer))
                              or n < 1):
            raise SpecError(f"n (predictive draws) must be an integer >= 1 or None, got "
                            f"{n!r}")
        u, i, ku, ki = self.encode_pairs(users, items, unknown)
        rows = self.n_samples if n is None else int(n)
        check_allocation(3 * 8 * max(rows, self.n_samples) * len(u),
                         f"{rows} predictive draws for {len(u)} pairs",
                         hint="ask for fewer draws (n=...), thin the posterior or pass "
                              "fewer pairs per call")
        rng = np.random.default_rng(seed)
        if self.likelihood.gaussian_noise:  # Gaussian: one rating per draw, as before
            m, sd = self.predictive_components(u, i, ku, ki)
            if n is not None:
                pick = rng.integers(0, self.n_samples, size=n)
                m, sd = m[pick], sd[pick]
            return m + sd * rng.standard_normal(m.shape)
        mix = self.predictive_mixture(u, i, ku, ki)
        if n is not None:
            mix = mix.take(rng.integers(0, self.n_samples, size=n))
        return mix.sample(rng, None)

    def prob_at_least(self, users, items, threshold: float,
                      unknown: str = "fallback") -> np.ndarray:
        """Posterior predictive probability ``P(r_ui >= threshold)`` (mixture, exact);
        ``threshold`` one number or one per pair."""
        t = np.asarray(threshold)
        if t.dtype.kind not in "iuf" or not np.all(np.isfinite(t)):
            raise SpecError(f"threshold must be a finite number (or one per pair), got "
                            f"{threshold!r}")
        u, i, ku, ki = self.encode_pairs(users, items, unknown)
        out = np.empty(len(u))
        for sl in self._chunks(len(u)):
            out[sl] = self.predictive_mixture(u[sl], i[sl], ku[sl], ki[sl]).prob_at_least(
                threshold)
        return out

    def quantiles(self, users, items, q, unknown: str = "fallback") -> np.ndarray:
        """Predictive quantiles ``(len(q), pairs)`` of the draw mixture."""
        q = np.atleast_1d(np.asarray(q, float))
        if np.any((q <= 0) | (q >= 1)):
            raise SpecError("quantile levels must lie in (0, 1)")
        u, i, ku, ki = self.encode_pairs(users, items, unknown)
        out = np.empty((len(q), len(u)))
        for sl in self._chunks(len(u)):
            mix = self.predictive_mixture(u[sl], i[sl], ku[sl], ki[sl])
            for j, qq in enumerate(q):
                out[j, sl] = mix.quantile(qq)
        return out

    def log_predictive_density(self, ratings: Ratings) -> np.ndarray:
        """Per-rating ``log p(r | D)`` of the posterior predictive mixture (a density for
        the Gaussian, a probability for discrete families) for a test set encoded with
        this posterior's vocabularies (or with raw ids re-encoded)."""
        u, i, ku, ki, y = self._test_arrays(ratings)
        y, _ = self.likelihood.predictive_target(y)  # implicit: the preference 1
        out = np.empty(len(y))
        for sl in self._chunks(len(y)):
            out[sl] = self.predictive_mixture(u[sl], i[sl], ku[sl], ki[sl]).logpdf(y[sl])
        return out

    def _test_arrays(self, ratings: Ratings):
        if not isinstance(ratings, Ratings):
            raise DataError(f"expected a Ratings container, got {type(ratings).__name__}")
        self.likelihood.check_values(ratings.rating)
        if ratings.users == self.users and ratings.items == self.items:
            ones = np.ones(ratings.nnz, bool)
            return ratings.user, ratings.item, ones, ones, ratings.rating
        u, ku = self.users.encode(ratings.users.decode(ratings.user), unknown="mask")
        i, ki = self.items.encode(ratings.items.decode(ratings.item), unknown="mask")
        return u, i, ku, ki, ratings.rating


def _check_index_range(idx, known, n: int, side: str) -> None:
    """Index-level entry points need indices of THIS posterior's vocabularies."""
    if len(idx) != len(known):
        raise DataError(f"{side} indices and their known-mask differ in length")
    k = idx[known]
    if k.size and (k.min() < 0 or k.max() >= n):
        bad = k[(k < 0) | (k >= n)]
        raise DataError(
            f"{side} index {int(bad[0])} is outside this model's {side} vocabulary "
            f"(0..{n - 1}); index arrays must be encoded with Posterior.{side}s (use raw "
            f"ids with predict(), or Ratings.with_vocabularies(posterior.users, "
            f"posterior.items))")


# The one quantile solver of the package (safeguarded Newton), kept importable here.
from bayesmf.predictive.gaussian import mixture_quantile  # noqa: E402,F401
