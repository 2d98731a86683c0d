r"""Fold-in: the posterior of a *new* user (or item) given the other side's draws, no refit.

For each posterior draw :math:`s` the model is linear-Gaussian in the new user's augmented
vector :math:`a=[b_u, U_u]\in\mathbb R^{k+1}` (just :math:`U_u` without a user bias): with
the user's ratings :math:`y_j` of items :math:`i_j` and :math:`z_{j,s}=[1, V_{i_j,s}]`,

.. math::

    y_j \mid a \sim \mathcal N(\mu_s + b_{i_j,s} + z_{j,s}^\top a,\ \tau_s^{-1}),\qquad
    a \sim \mathcal N(m_{0,s},\ P_{0,s}^{-1})

so :math:`a\mid y, \text{draw } s` is exactly Gaussian with

.. math::

    P_s = P_{0,s} + \tau_s Z_s^\top Z_s,\qquad
    \hat a_s = P_s^{-1}\big(P_{0,s}m_{0,s} + \tau_s Z_s^\top(y-\mu_s-b_{i,s})\big).

This is the BPMF Gibbs conditional of one user (Salakhutdinov & Mnih 2008) and, for MAP,
the ALS/ridge user update. The **prior** :math:`(m_0, P_0)` per draw (``prior=``):

* ``"hyper"``: the draw's hyperparameters ``mu_U``, ``Lambda_U`` and ``lambda_bu``
  (bias prior mean 0; when ``lambda_bu`` is absent, the population variance of
  :math:`b_u` in that draw);
* ``"ridge"``: the MAP prior of :class:`~bayesmf.model.spec.ModelSpec`:
  :math:`m_0=0`, :math:`P_0=\tau_s\,\mathrm{diag}(\text{reg\_bias},\text{reg\_factors} I)`;
* ``"population"``: the draw's population mean and covariance of :math:`[b_u, U_u]` over
  the training users -- the same moments as the posterior's unknown-id fallback, so a user
  with no ratings folds in to exactly the fallback in the Gaussian model (an augmented
  family's ``mode="mean"`` takes the prior mean as its plug-in row, which is not the
  fallback's integral over the population spread);
* ``"auto"`` (default): ``"hyper"`` when ``mu_U``/``Lambda_U`` are among the draws, else
  ``"ridge"`` for a point estimate (one draw), else ``"population"``.

``mode="sample"`` (default with more than one draw) draws :math:`a_s\sim\mathcal N(\hat a_s,
P_s^{-1})` once per posterior draw (seeded per user id: independent of the other users in
the call); ``mode="mean"`` keeps :math:`\hat a_s` (default for a point estimate, where it
is the exact MAP fold-in; it drops the conditional spread :math:`P_s^{-1}`, which is
kept in :attr:`FoldedUsers.cond_cov`). Either way the result has one value per posterior draw and is
used exactly like a trained user (:meth:`FoldedUsers.predict`,
:meth:`FoldedUsers.recommend`, or :meth:`FoldedUsers.append_to` for a new
:class:`~bayesmf.posterior.Posterior`). Items are folded in symmetrically
(:func:`fold_in_item`, hyperparameters ``mu_V``, ``Lambda_V``, ``lambda_bi``).

**Augmented likelihoods** (Bernoulli logit / probit, ordinal): :math:`a` given the draw
is not Gaussian, but it is given the augmentation of the sampler that fitted the model
(Pólya-Gamma :math:`\omega_j` for the logit, Polson, Scott & Windle 2013; the truncated
normal latent for probit and ordinal, Albert & Chib 1993): the likelihood's
``gaussianize`` turns each observation into a Gaussian pseudo-observation
:math:`(z_j, w_j)` given :math:`\eta_j`. ``mode="mean"`` (point estimates) finds the
row's MAP :math:`\hat a_s` by IRLS / Newton (the likelihood's ``working`` response and
weights) to :data:`IRLS_TOL`. ``mode="sample"`` runs, per posterior draw, a Markov
chain of :data:`AUGMENTED_SWEEPS` sweeps on :math:`a` given that draw's other side and
hyperparameters, started at :math:`\hat a_s`, and keeps its last state, a draw of
:math:`a\mid y, \text{draw } s`. Each sweep is (1) an independence Metropolis-Hastings
step with the Laplace proposal :math:`t_\nu(\hat a_s, H_s^{-1})` (:math:`H_s` the
posterior precision at the mode, :math:`\nu =` :data:`LAPLACE_T_DF`; accept with
probability :math:`\min\{1, \pi(a')q(a)/(\pi(a)q(a'))\}`, :math:`\pi` the exact
log likelihood of the family plus the Gaussian row prior), then (2) the sampler's own
data-augmentation row step (augmentation given :math:`a`, then :math:`a` given it). Both
leave :math:`\pi` invariant. The augmentation alone mixes slowly for a row with many
informative observations (for probit, most of the latent's information is missing when
:math:`|\eta|` is large: 2,000 observations, 25 sweeps from the prior mean stopped at 2.5
for a posterior at :math:`3.8\pm0.19`); the independence step moves such a sharp
posterior in one step, while the augmentation step handles skewed posteriors of rows with
few observations. Tested against quadrature for both. For a model
fitted to positives plus sampled negatives (``posterior.attrs["negatives"]``), a new
user whose data are positives only gets negatives drawn by the same rule (never one of
their positives; popularity from the training counts; seeded per user id), as their
training data were; a new item gets the users whose draws would have picked it
(:func:`_rule_item_negatives`); data that already contain zeros are used as given.

**Poisson factorisation** (``likelihood="poisson"``, HPF; Gopalan, Hofman & Blei 2015):
the new user's :math:`\theta_u` (and :math:`b_u`) given each draw's item factors
:math:`\beta_s` (and :math:`b_i`) follow the Gibbs sampler's own row steps
(:mod:`bayesmf.infer.hpf`): split each count over the components
:math:`(\theta_{uk}\beta_{ik}, b_u, b_i)` (multinomial), then
:math:`\theta_{uk}\sim\mathrm{Gamma}(a + \sum_i z_{uik},\ \xi_u + \sum_{i}\beta_{ik})`
(the sum over **all** items), :math:`b_u\sim\mathrm{Gamma}(e + \sum_i z_{ui,b},\ f + M)`,
:math:`\xi_u\sim\mathrm{Gamma}(a' + ka,\ a'/b' + \sum_k\theta_{uk})`; a chain of
:data:`GAMMA_SWEEPS` sweeps per draw, the last state kept (``prior`` does not apply: the
prior is the model's Gamma hierarchy). ``mode="mean"`` (the one-draw KL-NMF estimate)
runs the KL-NMF multiplicative updates of the row to convergence (the row's maximum
likelihood given the items, with the fit's ``l1``). Items fold in alike with
:math:`(c, c', d')`. ``cond_mean`` / ``cond_chol`` hold the last sweep's Gamma means and
standard deviations (diagonal) of ``[b, F]``; NaN for KL-NMF.

On a posterior with **implicit terms** (``BayesMF(implicit_terms=...)``: the Macau prior
with the block :math:`x_u = |N(u)|^{-1/2}\mathbf 1_{N(u)}`, :mod:`bayesmf.data.features`),
the ``"hyper"`` prior mean of a folded-in row is :math:`\mu_{U,s} + \beta_s^\top x_u` per
draw, with :math:`N(u)` the known items of its ratings (the SVD++ term); its other
feature columns, unknown here, are taken as zero (the population value of standardised
and one-hot columns) -- give features through
:meth:`~bayesmf.posterior.Posterior.with_features` to use them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from bayesmf.errors import DataError, SpecError
from bayesmf.posterior import Posterior, TrainInfo
from bayesmf.scoring.scorer import UserBlock
from bayesmf.scoring.strategies import id_keys

__all__ = ["fold_in", "fold_in_item", "FoldedUsers", "FoldedItems", "conditional_gaussian"]

_SIDES = {
    "user": dict(bias="bu", F="U", other_bias="bi", other_F="V", mu="mu_U", Lam="Lambda_U",
                 lam_b="lambda_bu", has_bias="user_bias"),
    "item": dict(bias="bi", F="V", other_bias="bu", other_F="U", mu="mu_V", Lam="Lambda_V",
                 lam_b="lambda_bi", has_bias="item_bias"),
}


def conditional_gaussian(Z, y, tau, P0, m0, background=None):
    r"""Per-draw Gaussian conditional of a linear-Gaussian model.

    ``Z (S, n, d)``, ``y (S, n)`` residual targets, ``tau (S,)`` (or per-observation
    weights ``(S, n)``), prior precision ``P0 (S, d, d)`` and mean ``m0 (S, d)``. Returns
    ``(mean (S, d), chol (S, d, d))`` with :math:`P = P_0 + \tau Z^\top Z = LL^\top`,
    mean :math:`P^{-1}(P_0m_0+\tau Z^\top y)`.

    ``background = (w0 (S,), t0 (S, n), G (S, d, d), g (S, d))`` (a full-matrix
    likelihood: every other-side row is an observation, the unobserved ones the
    pseudo-observation of weight :math:`w_0`): :math:`P = P_0 + G + \sum_j (w_j - w_0)
    z_jz_j^\top`, :math:`h = P_0m_0 + g + \sum_j (w_jy_j - w_0t_{0j})z_j` with the dense
    terms :math:`G = w_0X^\top X`, :math:`g = w_0X^\top t_0` over all other-side rows
    (:func:`bayesmf.infer.gibbs_steps.rows_draw`)."""
    tau = np.asarray(tau, np.float64)
    w = tau[:, None] if tau.ndim == 1 else tau
    w = np.broadcast_to(w, y.shape)
    if background is None:
        gw, rhs = w, w * y
        G, g = 0.0, 0.0
    else:
        w0, t0, G, g = background
        w0 = np.asarray(w0, np.float64)[:, None]
        gw, rhs = w - w0, w * y - w0 * t0
    Zt = np.swapaxes(Z, 1, 2)
    P = P0 + Zt @ (gw[..., None] * Z) + G  # batched GEMMs (a 3-operand einsum is slow)
    h = (P0 @ m0[..., None])[..., 0] + (Zt @ rhs[..., None])[..., 0] + g
    L = np.linalg.cholesky(P)
    mean = np.linalg.solve(P, h[..., None])[..., 0]
    return mean, L


def _parse_ratings(ratings, id_col, other_col, default_id):
    """-> DataFrame with columns [id_col, other_col, 'rating']."""
    if isinstance(ratings, dict):
        df = pd.DataFrame({other_col: list(ratings.keys()), "rating": list(ratings.values())})
        df[id_col] = default_id
    elif isinstance(ratings, pd.Series):
        df = pd.DataFrame({other_col: ratings.index.to_numpy(), "rating": ratings.to_numpy()})
        df[id_col] = default_id
    elif isinstance(ratings, pd.DataFrame):
        if other_col not in ratings.columns or "rating" not in ratings.columns:
            raise DataError(f"fold-in ratings need columns {other_col!r} and 'rating' "
                            f"(and optionally {id_col!r}); got {list(ratings.columns)}")
        df = ratings[[c for c in (id_col, other_col, "rating") if c in ratings.columns]].copy()
        if id_col not in df.columns:
            df[id_col] = default_id
    else:
        raise DataError("fold-in ratings must be a dict {id: rating}, a Series or a DataFrame")
    r = pd.to_numeric(df["rating"], errors="coerce").to_numpy(np.float64)
    if not np.all(np.isfinite(r)):
        raise DataError("fold-in ratings contain NaN/inf or non-numeric values")
    df["rating"] = r
    if df.duplicated([id_col, other_col]).any():
        raise DataError(f"duplicate ({id_col}, {other_col}) pairs in the fold-in ratings")
    return df


def _noise_precision(post) -> np.ndarray:
    """Per-draw ``tau`` (S,); 1 for a likelihood without one (Bernoulli, ordinal: unit
    latent noise, so the MAP ridge prior is ``reg``, not ``tau * reg``)."""
    if "tau" in post.draws:
        return post.flat("tau").astype(np.float64)
    return np.ones(post.n_samples)


def _prior(post, side, prior, S, k):
    cfg = _SIDES[side]
    use_bias = getattr(post.spec, cfg["has_bias"])
    d = k + 1 if use_bias else k
    if prior == "auto":
        if cfg["mu"] in post.draws and cfg["Lam"] in post.draws:
            prior = "hyper"
        elif post.n_samples == 1:
            prior = "ridge"
        else:
            prior = "population"
    P0 = np.zeros((S, d, d))
    m0 = np.zeros((S, d))
    tau = _noise_precision(post)
    off = 1 if use_bias else 0
    if prior == "hyper":
        if cfg["mu"] not in post.draws or cfg["Lam"] not in post.draws:
            raise SpecError(f"prior='hyper' needs draws {cfg['mu']!r} and {cfg['Lam']!r}")
        if k:
            m0[:, off:] = post.flat(cfg["mu"]).reshape(S, k)
            P0[:, off:, off:] = post.flat(cfg["Lam"]).reshape(S, k, k)
        if use_bias:
            if cfg["lam_b"] in post.draws:
                P0[:, 0, 0] = post.flat(cfg["lam_b"]).reshape(S)
            else:
                P0[:, 0, 0] = 1.0 / np.maximum(post.flat(cfg["bias"]).var(axis=1), 1e-12)
    elif prior == "ridge":
        if k:
            P0[:, off:, off:] = (tau * post.spec.reg_factors)[:, None, None] * np.eye(k)
        if use_bias:
            P0[:, 0, 0] = tau * post.spec.reg_bias
        P0 += 1e-10 * np.eye(d)  # reg = 0 with no ratings stays solvable
    elif prior == "population":
        mean, cov = post._population_moments()[side]  # over [b, F]
        sel = slice(None) if use_bias else slice(1, None)
        C = cov[:, sel, sel] + 1e-9 * np.eye(d)
        P0 = np.linalg.inv(C)
        m0 = mean[:, sel].copy()
    else:
        raise SpecError(f"prior must be 'auto', 'hyper', 'ridge' or 'population', got {prior!r}")
    return prior, use_bias, d, P0, m0


class _Folded:
    """Shared machinery of :class:`FoldedUsers` / :class:`FoldedItems`."""

    side = "user"

    def __init__(self, posterior, raw, b, F, mean, chol, rated, info):
        self.posterior = posterior
        self.raw = np.asarray(raw)
        self.b = b            # (S, n)
        self.F = F            # (S, n, k)
        self.cond_mean = mean  # (S, n, d)
        self.cond_chol = chol  # (S, n, d, d)
        self.rated = rated    # list of (other-side index array, ratings)
        self.info = info
        self.known = np.ones(len(self.raw), bool)

    def __len__(self):
        return len(self.raw)

    def __repr__(self):
        return (f"{type(self).__name__}(n={len(self)}, draws={self.b.shape[0]}, "
                f"prior={self.info['prior']!r}, mode={self.info['mode']!r})")

    @property
    def cond_cov(self):
        """Per-draw conditional covariance ``(S, n, d, d)`` of ``[b, F]`` (``F`` only
        without a bias)."""
        Linv = np.linalg.inv(self.cond_chol)
        return np.einsum("snji,snjk->snik", Linv, Linv)

    def _eta(self, other_idx):
        """Per-draw linear predictor ``(S, n, len(other_idx))`` of every (folded row,
        other-side index) pair."""
        p = self.posterior
        o = _SIDES[self.side]
        ob = p.flat(o["other_bias"])[:, other_idx].astype(np.float64)
        m = p.flat("mu").astype(np.float64)[:, None, None] + self.b[:, :, None] + ob[:, None, :]
        if p.spec.rank:
            OF = p.flat(o["other_F"])[:, other_idx].astype(np.float64)
            m = m + np.einsum("snk,sjk->snj", self.F, OF)
        return m

    def _predict(self, other_raw, other_vocab, interval, clip=True):
        """Predictive summary of the folded rows against ``other_raw``: the likelihood's
        posterior predictive (:meth:`~bayesmf.model.likelihoods.Likelihood.predictive`,
        one component per draw), as :meth:`bayesmf.posterior.Posterior.predict`."""
        other_raw = np.atleast_1d(np.asarray(other_raw))
        oi = other_vocab.encode(other_raw).astype(np.int64)
        m = self._eta(oi)
        S, n, J = m.shape
        post = self.posterior
        mix = post.likelihood.predictive(m.reshape(S, n * J), np.zeros((S, n * J)),
                                         post.theta_flat())
        a = (1 - interval) / 2
        mean, lo, hi = mix.mean(), mix.quantile(a), mix.quantile(1 - a)
        if clip:  # reported values on the rating scale, as Posterior.predict
            mean, lo, hi = (post.clip_to_scale(x) for x in (mean, lo, hi))
        other = "item" if self.side == "user" else "user"
        return pd.DataFrame({
            self.side: np.repeat(self.raw, J), other: np.tile(other_raw, n),
            "mean": mean.ravel(), "std": np.sqrt(mix.var()).ravel(),
            "std_param": np.sqrt(mix.param_var()).ravel(), "lower": lo.ravel(),
            "upper": hi.ravel()})


class FoldedUsers(_Folded):
    """New users folded into a posterior: per-draw ``b (S, n)`` and ``F (S, n, k)``.

    Usable wherever a trained user is: :meth:`predict`, :meth:`recommend` (also accepted
    as ``users=`` by :func:`bayesmf.recommend.recommend`; the items they rated are their
    "seen" items), :meth:`append_to`.
    """

    side = "user"

    # --- the user-source protocol of bayesmf.recommend.topk
    def block(self, scorer, rows):
        return UserBlock(self.b[:, rows], self.F[:, rows].astype(scorer.V.dtype),
                         np.zeros(len(rows), bool))

    def seen(self, rows):
        rr = np.concatenate([np.full(len(self.rated[r][0]), j) for j, r in enumerate(rows)]
                            + [np.zeros(0, np.int64)]).astype(np.int64)
        it = np.concatenate([self.rated[r][0] for r in rows] + [np.zeros(0, np.int64)])
        return rr, it.astype(np.int64)

    def keys(self, rows):
        return id_keys(self.raw[rows])

    # --- use
    def predict(self, items, interval: float = 0.9, clip: bool = True) -> pd.DataFrame:
        """Predictive ``mean, std, std_param, lower, upper`` of every (new user, item);
        mean and bounds clipped to the training rating scale unless ``clip=False``
        (:meth:`bayesmf.posterior.Posterior.predict`)."""
        return self._predict(items, self.posterior.items, interval, clip)

    def recommend(self, n: int = 10, strategy: str = "mean", **kwargs) -> pd.DataFrame:
        """:func:`bayesmf.recommend.recommend` for these users."""
        from bayesmf.recommend.topk import recommend

        return recommend(self.posterior, self, n, strategy, **kwargs)

    def append_to(self, posterior: Posterior | None = None) -> Posterior:
        """A new :class:`Posterior` with these users appended (vocabulary, draws, and
        their ratings added to the training pairs/counts; the global mean is kept)."""
        p = self.posterior if posterior is None else posterior
        clash = [x for x in self.raw.tolist() if x in p.users]
        if clash:
            raise DataError(f"user id(s) already in the posterior: {clash[:5]}")
        _check_new_ids(p.users, self.raw, "user")
        return _append(p, "user", self.raw, self.b, self.F, self.rated)


class FoldedItems(_Folded):
    """New items folded into a posterior: per-draw ``b (S, n)`` (item bias), ``F (S, n, k)``."""

    side = "item"

    def predict(self, users, interval: float = 0.9, clip: bool = True) -> pd.DataFrame:
        """Predictive ``mean, std, std_param, lower, upper`` of every (new item, user);
        clipped to the rating scale unless ``clip=False``."""
        return self._predict(users, self.posterior.users, interval, clip)

    def append_to(self, posterior: Posterior | None = None) -> Posterior:
        """A new :class:`Posterior` with these items appended (recommendable by
        :func:`bayesmf.recommend.recommend`)."""
        p = self.posterior if posterior is None else posterior
        clash = [x for x in self.raw.tolist() if x in p.items]
        if clash:
            raise DataError(f"item id(s) already in the posterior: {clash[:5]}")
        _check_new_ids(p.items, self.raw, "item")
        return _append(p, "item", self.raw, self.b, self.F, self.rated)


def _check_new_ids(vocab, raw, side: str) -> None:
    """A text id (such as fold_in's default ``"new_user"``) cannot join a vocabulary of
    integer ids: say which argument gives the row another id."""
    if len(raw) and not vocab.is_string:
        try:
            vocab.extend(raw)
        except DataError as e:
            fn = "fold_in_item" if side == "item" else "fold_in"
            raise DataError(f"{e}; this model's {side} ids are integers: fold in with "
                            f"{fn}(posterior, ratings, {side}=<an unused integer id>) to "
                            f"append the new {side}") from None


def _append(p: Posterior, side, raw, b, F, rated):
    C, D = p.n_chains, p.n_draws
    n = len(raw)
    cfg = _SIDES[side]
    d = dict(p.draws)
    d[cfg["bias"]] = np.concatenate([p.draws[cfg["bias"]],
                                     b.reshape(C, D, n).astype(p.draws[cfg["bias"]].dtype)], axis=2)
    d[cfg["F"]] = np.concatenate([p.draws[cfg["F"]],
                                  F.reshape(C, D, n, -1).astype(p.draws[cfg["F"]].dtype)], axis=2)
    t = p.train
    N, M = len(p.users), len(p.items)
    csr = sp.csr_matrix((np.ones(len(t.seen_indices)), t.seen_indices, t.seen_indptr), shape=(N, M))
    rows = np.concatenate([np.full(len(r[0]), j) for j, r in enumerate(rated)] + [np.zeros(0)])
    cols = np.concatenate([r[0] for r in rated] + [np.zeros(0)])
    if side == "user":
        users = p.users.extend(raw)
        items = p.items
        add = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, M))
        csr = sp.vstack([csr, add]).tocsr()
        uc = np.concatenate([t.user_counts, [len(r[0]) for r in rated]]).astype(np.int64)
        ic = t.item_counts + np.bincount(cols.astype(np.int64), minlength=M)
    else:
        users = p.users
        items = p.items.extend(raw)
        add = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, N)).T
        csr = sp.hstack([csr, add]).tocsr()
        uc = t.user_counts + np.bincount(cols.astype(np.int64), minlength=N)
        ic = np.concatenate([t.item_counts, [len(r[0]) for r in rated]]).astype(np.int64)
    csr.sort_indices()
    train = TrainInfo(t.scale, t.global_mean, int(t.n_train + len(rows)), uc.astype(np.int64),
                      ic.astype(np.int64), csr.indptr.astype(np.int64),
                      csr.indices.astype(np.int32), dict(t.extra, folded_in=side))
    # the side features stay (they describe the rows they list; with_features refuses
    # cold-start rows behind appended ones, and fold-in keeps the implicit-term block)
    return Posterior(d, p.spec, users, items, train, p.method, p.sample_stats, None,
                     dict(p.attrs, folded_in=int(n)), dict(p.features))


def _implicit_offset(posterior, side, other_idx):
    """``beta_s^T x (S, k)`` of a new row whose implicit block is ``other_idx`` (the
    implicit-term columns of ``posterior.features[side]``), or None when the posterior has
    no implicit terms on that side."""
    f = posterior.features.get(side)
    name = "beta_U" if side == "user" else "beta_V"
    if f is None or not f.has_implicit or name not in posterior.draws:
        return None
    start, beta = 0, posterior.flat(name).astype(np.float64)  # (S, F, k)
    x = np.zeros(beta.shape[1])
    other_vocab = posterior.items if side == "user" else posterior.users
    for col in f.schema:
        width = 1 if col["kind"] == "numeric" else len(col["categories"])
        if col["kind"] == "implicit" and len(other_idx):
            cats = {str(c): j for j, c in enumerate(col["categories"])}
            js = [cats[t] for t in map(str, other_vocab.ids[np.unique(other_idx)])
                  if t in cats]
            if js:
                x[start + np.asarray(js)] = 1.0 / np.sqrt(len(js))
        start += width
    return np.einsum("f,sfk->sk", x, beta)


#: Sweeps (independence step + augmentation step) of an augmented fold-in per posterior
#: draw, from the row's mode (module docs); the last state is kept.
#: ``tests/test_foldin_augmented.py`` checks the draws against quadrature for rows of 8
#: to 1,000 observations.
AUGMENTED_SWEEPS = 25
#: degrees of freedom of the multivariate-t Laplace proposal of the augmented fold-in
LAPLACE_T_DF = 6
#: IRLS (Newton) iterations and relative step tolerance of an augmented fold-in: the
#: answer of ``mode="mean"``, the start and proposal of ``mode="sample"``. The working
#: response is float32, whose rounding (steps ~5e-8 after convergence) a tighter
#: tolerance would never get below; Newton converges quadratically, so a step of 1e-6
#: leaves an error far below it (typically 4-5 iterations)
IRLS_MAX_ITER = 100
IRLS_TOL = 1e-6


_JITTED: dict = {}


def _jitted(lik, name: str):
    """``jax.jit(jax.vmap(lik.<name>))`` over the draws, compiled once per likelihood and
    padded row length (``_augmented_row`` pads rows to a power of two)."""
    import jax

    try:
        key = (lik, name)
        hash(key)
    except TypeError:  # an unhashable likelihood: compiled per call
        key = None
    if key is None or key not in _JITTED:
        axes = (0, None, 0, 0) if name == "gaussianize" else (None, 0, 0)
        fn = jax.jit(jax.vmap(getattr(lik, name), in_axes=axes))
        if key is None:
            return fn
        _JITTED[key] = fn
    return _JITTED[key]


def _augmented_row(lik, theta, rng, Z, y, off, P0, m0, mode):
    """One row of an augmented likelihood, per draw: ``(a (S, d), mean (S, d), chol
    (S, d, d), acceptance)`` with ``mean``, ``chol`` the Gaussian conditional of the last
    sweep and ``acceptance`` the mean acceptance rate of the independence steps (NaN for
    ``mode="mean"``) (module docs). ``y`` encoded, ``off (S, n)`` the linear predictor
    without the row,
    ``theta`` the likelihood's parameters per draw (leading axis ``S``). The row's
    observations are padded to a power of two (at least 8) with zero design rows, which
    add nothing to the conditional, so that one compiled augmentation serves rows of
    similar length."""
    import jax
    import jax.numpy as jnp

    S, n, d = Z.shape
    n_pad = max(8, 1 << max(0, n - 1).bit_length())
    if n_pad > n:
        Z = np.concatenate([Z, np.zeros((S, n_pad - n, d))], axis=1)
        off = np.concatenate([off, np.zeros((S, n_pad - n))], axis=1)
        y = np.concatenate([y, np.zeros(n_pad - n, np.asarray(y).dtype)])
    th = {k: jnp.asarray(v) for k, v in theta.items()}
    yj = jnp.asarray(y)
    # IRLS / Newton to the row's MAP given each draw: the answer of mode="mean", and the
    # start and the Laplace proposal of mode="sample"
    work = _jitted(lik, "working")
    a = m0.copy()
    for _ in range(IRLS_MAX_ITER):
        eta = off + np.einsum("snd,sd->sn", Z, a)
        z, w = (np.broadcast_to(np.asarray(x, np.float64).reshape(S, -1), (S, n_pad))
                for x in work(yj, jnp.asarray(eta), th))
        mean, L = conditional_gaussian(Z, z - off, w, P0, m0)
        step = np.max(np.abs(mean - a)) / max(1.0, float(np.max(np.abs(a))))
        a = mean
        if step < IRLS_TOL:
            break
    if mode == "mean":
        return a, mean, L, float("nan")
    mode_a, L_mode = a.copy(), L
    logp = _jitted(lik, "log_prob")
    nu = LAPLACE_T_DF

    def log_target(x):  # log p(y | x) + log N(x | m0, P0^-1), up to a constant
        eta = off + np.einsum("snd,sd->sn", Z, x)
        ll = np.asarray(logp(yj, jnp.asarray(eta), th), np.float64).reshape(S, -1)
        dx = x - m0
        return ll.sum(1) - 0.5 * np.einsum("sd,sde,se->s", dx, P0, dx)

    def log_proposal(x):  # multivariate t_nu(mode, H^-1), H = L L^T, up to a constant
        r = np.einsum("sdk,sd->sk", L_mode, x - mode_a)  # L^T (x - mode)
        return -0.5 * (nu + d) * np.log1p(np.sum(r * r, axis=1) / nu)

    gauss = _jitted(lik, "gaussianize")
    key = jax.random.PRNGKey(int(rng.integers(0, 2**31 - 1)))
    lt = log_target(a)
    accepted = np.zeros(S)
    for t in range(AUGMENTED_SWEEPS):
        # (1) independence Metropolis-Hastings with the Laplace t proposal
        e = rng.standard_normal((S, d)) * np.sqrt(nu / rng.chisquare(nu, S))[:, None]
        prop = mode_a + np.linalg.solve(np.swapaxes(L_mode, 1, 2), e[..., None])[..., 0]
        lt_p = log_target(prop)
        log_r = lt_p - lt + log_proposal(a) - log_proposal(prop)
        acc = np.log(rng.random(S)) < log_r
        a = np.where(acc[:, None], prop, a)
        lt = np.where(acc, lt_p, lt)
        accepted += acc
        # (2) the data-augmentation sweep: augmentation given a, then a given it
        eta = off + np.einsum("snd,sd->sn", Z, a)
        keys = jax.random.split(jax.random.fold_in(key, t), S)
        z, w = (np.broadcast_to(np.asarray(x, np.float64).reshape(S, -1), (S, n_pad))
                for x in gauss(keys, yj, jnp.asarray(eta), th))
        mean, L = conditional_gaussian(Z, z - off, w, P0, m0)
        e = rng.standard_normal((S, d))
        a = mean + np.linalg.solve(np.swapaxes(L, 1, 2), e[..., None])[..., 0]
        lt = log_target(a)
    return a, mean, L, float(accepted.mean() / AUGMENTED_SWEEPS)


def _rule_weights(posterior, rule) -> np.ndarray:
    """The fitted rule's weight of every training item: 1 (uniform) or the training
    popularity :math:`d_i^\beta` (a fresh array)."""
    if rule.kind == "uniform":
        return np.ones(len(posterior.items))
    return np.power(posterior.train.item_counts.astype(np.float64), rule.beta)


def _rule_item_negatives(posterior, rule, positives, seed, key) -> np.ndarray:
    r"""User indices of a new **item**'s negatives under the fitted rule ``rule``: the
    rule drew negatives per *user*, so a new item receives the ones the users' draws
    would have given it had it been in the catalogue. User :math:`u` (not one of its
    ``positives``) drew :math:`m_u` (``per_positive`` times its positives, or
    ``per_user``) of its non-interacted items with probability proportional to their
    weights :math:`w_j` (1, or the training popularity :math:`d_j^\beta`); it picks the
    new item with probability about :math:`\min(1, m_u w / W_u)`, :math:`w` the item's
    weight (its number of positives to the :math:`\beta` for a popularity rule) and
    :math:`W_u` the weight of the user's candidates plus :math:`w`. Each user is drawn
    independently with that probability; seeded by ``(seed, rule seed, the item's id
    key)``."""
    t = posterior.train
    N = len(posterior.users)
    d_u = t.user_counts.astype(np.float64)
    m_u = (rule.per_positive * d_u if rule.per_positive is not None
           else np.full(N, float(rule.per_user)))
    wj = _rule_weights(posterior, rule)
    w = 1.0 if rule.kind == "uniform" else float(len(positives)) ** rule.beta
    seen_w = np.add.reduceat(np.concatenate([wj[t.seen_indices], [0.0]]),
                             np.minimum(t.seen_indptr[:-1], len(t.seen_indices)))
    seen_w = np.where(np.diff(t.seen_indptr) > 0, seen_w, 0.0)
    W_u = np.maximum(wj.sum() - seen_w + w, w)
    p = np.minimum(1.0, m_u * w / W_u)
    p[np.asarray(positives, np.int64)] = 0.0
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(rule.seed), int(key), 1])
    return np.flatnonzero(rng.random(N) < p).astype(np.int64)


def _rule_negatives(posterior, rule, positives, seed, key) -> np.ndarray:
    """Item indices of a new user's negatives by the fitted rule ``rule`` (a
    :class:`~bayesmf.data.negatives.NegativeSampler`): ``per_positive * len(positives)``
    (or ``per_user``) distinct items, never a positive, drawn with probability
    proportional to the rule's weights -- uniform, or the training popularity ``d_i^beta``
    (:attr:`TrainInfo.item_counts <bayesmf.posterior.TrainInfo>`) -- capped at the
    candidates left; seeded by ``(seed, rule seed, the user's id key)``."""
    w = _rule_weights(posterior, rule)
    w[positives] = 0.0
    cand = np.flatnonzero(w > 0)
    m = rule.per_positive * len(positives) if rule.per_positive is not None else rule.per_user
    m = min(int(m), len(cand))
    if m == 0:
        return np.zeros(0, np.int64)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(rule.seed), int(key)])
    return np.sort(rng.choice(cand, size=m, replace=False,
                              p=w[cand] / w[cand].sum())).astype(np.int64)


#: Gibbs sweeps of a Poisson-factorisation fold-in per posterior draw (module docs)
GAMMA_SWEEPS = 50
#: KL-NMF iterations and relative tolerance of a Poisson fold-in with ``mode="mean"``
KL_MAX_ITER = 2000
KL_TOL = 1e-10


def _gamma_row(prior, side, rng, y, OFo, colsum, obo, n_other, own_bias, mode, l1):
    """One new row of Poisson factorisation per draw (module docs; ``prior`` the fit's
    :class:`~bayesmf.model.priors.HierarchicalGamma`): ``(a (S, d), mean
    (S, d), sd (S, d))`` over ``[b, F]`` (``F`` only without the row's own bias). ``y``
    the row's counts at the other-side rows ``OFo (S, n, k)`` (their factors), ``obo (S,
    n)`` their biases (None: off), ``colsum (S, k)`` the other side's factor sums over
    all its ``n_other`` rows."""
    S, n, k = OFo.shape
    shape, shape2, rate2 = ((prior.a, prior.a_prime, prior.b_prime) if side == "user"
                            else (prior.c, prior.c_prime, prior.d_prime))
    e, f = prior.bias_shape, prior.bias_rate
    y = np.asarray(y, np.float64)
    extra = [np.ones((S, n, 1))] if own_bias else []
    if obo is not None:
        extra.append(obo[..., None])
    d = k + (1 if own_bias else 0)

    def rates(theta, b):  # (S, n, k + extras): the components of each count's rate
        parts = [theta[:, None, :] * OFo]
        if own_bias:
            parts.append(b[:, None, None] * extra[0])
        if obo is not None:
            parts.append(extra[-1])
        return np.concatenate(parts, axis=2)

    def pack(theta, b):
        return np.concatenate([b[:, None], theta], axis=1) if own_bias else theta

    if mode == "mean":  # KL-NMF: multiplicative updates of the row (nmf module docs)
        total = max(float(y.sum()), 1e-12)
        theta = np.full((S, k), total / max(float(colsum.sum()) / S, 1e-12) / k)
        b = np.full(S, 1e-3 * total / n_other) if own_bias else np.zeros(S)
        for _ in range(KL_MAX_ITER):
            R = rates(theta, b)
            q = np.where(y > 0, y / np.maximum(R.sum(2), 1e-300), 0.0)   # (S, n)
            new_t = theta * np.einsum("sn,snk->sk", q, OFo) / (colsum + l1)
            new_b = b * q.sum(1) / (n_other + l1) if own_bias else b
            step = np.max(np.abs(pack(new_t, new_b) - pack(theta, b))) / max(
                1e-300, float(np.max(pack(new_t, new_b))))
            theta, b = new_t, new_b
            if step < KL_TOL:
                break
        a_ = pack(theta, b)
        return a_, a_, np.full((S, d), np.nan)
    theta = np.full((S, k), shape / rate2)
    b = np.full(S, e / f)
    xi = np.full(S, rate2)
    counts = np.broadcast_to(np.rint(y).astype(np.int64), (S, n))
    for _ in range(GAMMA_SWEEPS):
        R = rates(theta, b)
        tot = R.sum(2, keepdims=True)
        P = np.where(tot > 0, R / np.where(tot > 0, tot, 1.0), 1.0 / R.shape[2])
        z = rng.multinomial(counts, P)                                  # (S, n, parts)
        sh = shape + z[..., :k].sum(1)
        rt = xi[:, None] + colsum
        theta = rng.gamma(sh, 1.0 / rt)
        mean, sd = sh / rt, np.sqrt(sh) / rt
        if own_bias:
            sb, rb = e + z[..., k].sum(1), f + n_other
            b = rng.gamma(sb, 1.0 / rb)
            mean = np.concatenate([(sb / rb)[:, None], mean], axis=1)
            sd = np.concatenate([(np.sqrt(sb) / rb)[:, None], sd], axis=1)
        xi = rng.gamma(shape2 + k * shape, 1.0 / (shape2 / rate2 + theta.sum(1)))
    return pack(theta, b), mean, sd


def _fold_gamma(posterior, side, df, ids, mode, seed, unknown):
    """Fold-in of Poisson factorisation (module docs): one :func:`_gamma_row` per new
    row."""
    lik = posterior.likelihood
    spec = posterior.spec
    cfg = _SIDES[side]
    other = "item" if side == "user" else "user"
    other_vocab = posterior.items if side == "user" else posterior.users
    own_bias = bool(getattr(spec, cfg["has_bias"]))
    other_on = bool(getattr(spec, _SIDES[other]["has_bias"]))
    S, k = posterior.n_samples, spec.rank
    OF = posterior.flat(cfg["other_F"]).astype(np.float64)
    ob = posterior.flat(cfg["other_bias"]).astype(np.float64)
    colsum = OF.sum(1)
    n_other = OF.shape[1]
    l1 = float(posterior.attrs.get("options", {}).get("l1", 0.0) or 0.0)
    d = k + (1 if own_bias else 0)
    n = len(ids)
    b = np.zeros((S, n))
    F = np.zeros((S, n, k))
    means = np.zeros((S, n, d))
    chols = np.zeros((S, n, d, d))
    rated, dropped = [], 0
    keys = id_keys(ids)
    for j, uid in enumerate(ids):
        oi, y, n_unknown = _row_data(df, side, other_vocab, uid, unknown)
        dropped += n_unknown
        if len(y):
            lik.check_values(y)
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(keys[j])])
        a, mean, sd = _gamma_row(spec.prior, side, rng, lik.encode(y), OF[:, oi], colsum,
                                 ob[:, oi] if other_on else None, n_other, own_bias,
                                 mode, l1)
        if own_bias:
            b[:, j] = a[:, 0]
        F[:, j] = a[:, d - k:]
        means[:, j] = mean
        chols[:, j] = sd[..., None] * np.eye(d)
        order = np.argsort(oi)
        rated.append((oi[order], y[order]))
    info = {"prior": "gamma", "mode": mode, "seed": int(seed), "dropped_unknown": dropped}
    cls = FoldedUsers if side == "user" else FoldedItems
    return cls(posterior, ids, b, F, means, chols, rated, info)


def _fold_setup(posterior, side, ratings, new_id, mode, unknown):
    """``(df, ids, mode)``: the parsed ratings (columns ``side``, the other side,
    ``rating``), the new ids in order of appearance (``[new_id]`` when there is no
    rating: one row with the prior only) and the resolved ``mode``."""
    df = _parse_ratings(ratings, side, "item" if side == "user" else "user", new_id)
    if mode is None:
        mode = "mean" if posterior.n_samples == 1 else "sample"
    if mode not in ("sample", "mean"):
        raise SpecError(f"mode must be 'sample' or 'mean', got {mode!r}")
    if unknown not in ("ignore", "raise"):
        raise SpecError(f"unknown= must be 'ignore' or 'raise', got {unknown!r}")
    ids = pd.unique(df[side].to_numpy())
    if len(ids) == 0:
        ids = np.array([new_id])
    return df, ids, mode


def _row_data(df, side, other_vocab, uid, unknown):
    """``(other-side indices, values, n_unknown)`` of new row ``uid``: ids the posterior
    does not know are dropped (``unknown="ignore"``) or raise."""
    sub = df[df[side].to_numpy() == uid]
    other = "item" if side == "user" else "user"
    if unknown == "raise":
        oi = other_vocab.encode(sub[other].to_numpy())
        kn = np.ones(len(oi), bool)
    else:
        oi, kn = other_vocab.encode(sub[other].to_numpy(), unknown="mask")
    return oi[kn].astype(np.int64), sub["rating"].to_numpy()[kn], int((~kn).sum())


def _fold(posterior, side, ratings, new_id, mode, prior, seed, unknown):
    lik = posterior.likelihood
    df, ids, mode = _fold_setup(posterior, side, ratings, new_id, mode, unknown)
    if lik.row_fold == "gamma":
        return _fold_gamma(posterior, side, df, ids, mode, seed, unknown)
    cfg = _SIDES[side]
    other_vocab = posterior.items if side == "user" else posterior.users
    S, k = posterior.n_samples, posterior.spec.rank
    prior, use_bias, dd, P0, m0 = _prior(posterior, side, prior, S, k)
    mu = posterior.flat("mu").astype(np.float64)
    tau = _noise_precision(posterior)
    ob = posterior.flat(cfg["other_bias"])
    oF = posterior.flat(cfg["other_F"])
    bg = lik.background({"tau": tau})
    if bg is not None:  # full-matrix likelihood: the dense terms of every other-side row
        y0, w0 = bg
        X = np.empty((S, oF.shape[1], dd))
        if use_bias:
            X[..., 0] = 1.0
        if k:
            X[..., dd - k:] = oF
        t0_all = y0 - mu[:, None] - ob.astype(np.float64)
        dense = (w0[:, None, None] * np.einsum("smd,sme->sde", X, X),
                 w0[:, None] * np.einsum("smd,sm->sd", X, t0_all))
    theta = {n: posterior.flat(n) for n in lik.theta_names}
    neg_rule = None
    if lik.augmented and posterior.attrs.get("negatives"):
        import dataclasses

        from bayesmf.data.negatives import NegativeSampler

        keep = {"schema"} | {f.name for f in dataclasses.fields(NegativeSampler)}
        neg_rule = NegativeSampler.from_dict(
            {k_: v for k_, v in posterior.attrs["negatives"].items() if k_ in keep})
    drawn = 0
    n = len(ids)
    b = np.zeros((S, n))
    F = np.zeros((S, n, k))
    means = np.zeros((S, n, dd))
    chols = np.zeros((S, n, dd, dd))
    rated, acceptance = [], []
    dropped = 0
    keys = id_keys(ids)
    for j, uid in enumerate(ids):
        oi, y, n_unknown = _row_data(df, side, other_vocab, uid, unknown)
        dropped += n_unknown
        Z = np.empty((S, len(oi), dd))
        if use_bias:
            Z[..., 0] = 1.0
        if k:
            Z[..., dd - k:] = oF[:, oi].astype(np.float64)
        if len(y):
            lik.check_values(y)
        own_oi, own_y = oi, y  # the row's own data: its "seen" items, its SVD++ term
        if neg_rule is not None and len(y) and np.all(y == 1):
            ni = (_rule_negatives if side == "user" else _rule_item_negatives)(
                posterior, neg_rule, oi, seed, keys[j])
            drawn += len(ni)
            oi = np.concatenate([oi, ni])
            y = np.concatenate([y, np.zeros(len(ni))])
            Z = np.empty((S, len(oi), dd))
            if use_bias:
                Z[..., 0] = 1.0
            if k:
                Z[..., dd - k:] = oF[:, oi].astype(np.float64)
        off = mu[:, None] + ob[:, oi].astype(np.float64)
        y_enc = np.asarray(lik.encode(y))
        if not lik.augmented:
            z, w = lik.gaussianize(None, y_enc[None, :], None, {"tau": tau[:, None]})
            res = np.broadcast_to(np.asarray(z, np.float64), (S, len(oi))) - off
            w = np.broadcast_to(np.asarray(w, np.float64), (S, len(oi)))
        m0_j = m0
        shift = (_implicit_offset(posterior, side, own_oi) if prior == "hyper" and k
                 else None)
        if shift is not None:  # the SVD++ term of the prior mean (module docs)
            m0_j = m0.copy()
            m0_j[:, dd - k:] += shift
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(keys[j])])
        if lik.augmented:
            a, mean, L, acc = _augmented_row(lik, theta, rng, Z, y_enc, off, P0, m0_j,
                                             mode)
            acceptance.append(acc)
        else:
            mean, L = conditional_gaussian(
                Z, res, w, P0, m0_j, None if bg is None else (w0, y0 - off, *dense))
            if mode == "sample":
                z = rng.standard_normal((S, dd))
                a = mean + np.linalg.solve(np.swapaxes(L, 1, 2), z[..., None])[..., 0]
            else:
                a = mean
        if use_bias:
            b[:, j] = a[:, 0]
        if k:
            F[:, j] = a[:, dd - k:]
        means[:, j], chols[:, j] = mean, L
        order = np.argsort(own_oi)
        rated.append((own_oi[order], own_y[order]))
    info = {"prior": prior, "mode": mode, "seed": int(seed), "dropped_unknown": dropped}
    if neg_rule is not None:
        info["negatives"] = {"rule": neg_rule.to_string(), "drawn": drawn}
    if lik.augmented and mode == "sample":  # per row: the independence steps' acceptance
        info["acceptance"] = acceptance
    cls = FoldedUsers if side == "user" else FoldedItems
    return cls(posterior, ids, b, F, means, chols, rated, info)


def fold_in(posterior, ratings, user="new_user", *, mode=None, prior="auto", seed=0,
            unknown="ignore") -> FoldedUsers:
    """Fold new users into ``posterior`` without refitting (see the module docs).

    ``ratings``: a dict ``{item_id: rating}`` or a Series indexed by item id (one user,
    id ``user``), or a DataFrame with columns ``item, rating`` (one user) or
    ``user, item, rating`` (several). Items unknown to the posterior are ignored
    (counted in ``info["dropped_unknown"]``; ``unknown="raise"`` rejects them). A user
    with no usable rating gets the prior -- for ``prior="population"`` the posterior's
    unknown-user fallback -- in the models of the listed pairs only; in the models over
    all pairs (``implicit``, ``poisson``) every unlisted pair is an observation, so an
    empty history is "no interaction with any item" and folds to the posterior given
    those zeros (which, for Poisson, pulls the rates towards 0). For an augmented
    likelihood with ``mode="sample"``,
    ``info["acceptance"]`` lists per user the mean acceptance rate of the independence
    Metropolis-Hastings steps (module docs): near 1 when the Laplace proposal fits.
    """
    return _fold(posterior, "user", ratings, user, mode, prior, seed, unknown)


def fold_in_item(posterior, ratings, item="new_item", *, mode=None, prior="auto", seed=0,
                 unknown="ignore") -> FoldedItems:
    """Fold new items in from their ratings ``{user_id: rating}`` (or a Series / a
    DataFrame with ``user, rating`` [and ``item``]); symmetric to :func:`fold_in`. For a
    model fitted to positives with sampled negatives, an item given by positives only gets
    as negatives the users whose fitted draws would have picked it
    (:func:`_rule_item_negatives`; ``info["negatives"]``)."""
    return _fold(posterior, "item", ratings, item, mode, prior, seed, unknown)
