"""The friendly facade: :class:`BayesMF`.

The constructor only stores settings (scikit-learn style); :meth:`BayesMF.fit` builds the
validated :class:`~bayesmf.model.spec.ModelSpec`, calls the chosen inference method and
stores the resulting :class:`~bayesmf.posterior.Posterior` in ``posterior_``. Everything
else (predict, evaluate, recommend, save) delegates to the posterior and the
backend-free ``evaluate`` / ``recommend`` packages.

Example
-------
>>> import bayesmf
>>> ml = bayesmf.datasets.load_movielens("latest-small")        # doctest: +SKIP
>>> model = bayesmf.BayesMF(method="gibbs", rank=10, num_samples=200).fit(ml.ratings)  # doctest: +SKIP
>>> model.predict(pairs_df)                                       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import pandas as pd

from bayesmf.data.features import add_implicit_terms, parse_implicit_terms
from bayesmf.data.ratings import Ratings, raw_pairs
from bayesmf.errors import DataError, NotFittedError, SpecError
from bayesmf.infer import get_method
from bayesmf.model.spec import BayesPriors, ModelSpec
from bayesmf.posterior import Posterior

__all__ = ["BayesMF", "as_ratings", "load"]

_SPEC_FIELDS = ("rank", "likelihood", "prior", "global_mean", "user_bias", "item_bias", "noise",
                "noise_precision", "reg_factors", "reg_bias", "init_scale")
_BIAS_FIELDS = ("global_mean", "user_bias", "item_bias")
#: ``init_scale=None`` of a Gibbs fit to sampled negatives (Bernoulli): from factors of
#: sd 0.1 the chain's factor scale is still growing after 1,000 sweeps on Last.fm 2K; from
#: 1.0 it ranks better after the default 100 warm-up sweeps
#: (``benchmarks/results/bernoulli_start.md``, ``negative_redraw.md``)
SAMPLED_NEGATIVES_GIBBS_INIT_SCALE = 1.0
#: the method and rank of a fit when they are left out, per kind of feedback: ``bayesmf fit
#: --feedback F`` and :class:`~bayesmf.implicit_api.ImplicitRecommender` use them (implicit:
#: Bayesian implicit ALS, the recommended default, ``benchmarks/results/implicit_bayes.md``)
DEFAULT_METHOD = {"explicit": "map", "implicit": "gibbs"}
DEFAULT_RANK = {"explicit": 10, "implicit": 64}
#: methods whose fit takes ``user_features``/``item_features`` (the Macau prior; the MAP
#: solvers "als", "lbfgs", "adam" are options of "map")
FEATURE_METHODS = ("gibbs", "map", "svi", "nuts")


def as_ratings(data, *, user_col: str = "user", item_col: str = "item",
               rating_col: str = "rating", duplicates: str = "raise",
               id_type: str | None = None) -> Ratings:
    """Accept a :class:`Ratings`, an :class:`~bayesmf.data.Interactions` (its counts or
    weights become the values: the input of the implicit likelihood) or a DataFrame with
    user/item/rating columns.

    For a DataFrame, ``duplicates`` resolves repeated ``(user, item)`` pairs
    (``"raise"``, ``"last"``, ``"first"``, ``"mean"``) and ``id_type`` (``None`` keeps the
    columns' types; ``"auto"``, ``"str"``, ``"int"``, see
    :func:`bayesmf.data.vocab.parse_ids`) types the ids. A :class:`Ratings` is returned
    as it is (it was validated when built).
    """
    if isinstance(data, Ratings):
        return data
    from bayesmf.data.interactions import Interactions

    if isinstance(data, Interactions):
        return data.to_ratings()
    if isinstance(data, pd.DataFrame):
        return Ratings.from_dataframe(data, user_col, item_col, rating_col,
                                      duplicates=duplicates, id_type=id_type)
    raise DataError(f"expected a Ratings container or a pandas DataFrame with columns "
                    f"{user_col!r}, {item_col!r}, {rating_col!r}; got {type(data).__name__}")


class BayesMF:
    r"""Matrix factorization with biases, fitted by MAP or full Bayesian inference.

    Model (observed entries only): ``y_ui ~ p(y | eta_ui, theta)`` with the linear
    predictor ``eta_ui = mu + b_u + b_i + U_u . V_i`` and the likelihood chosen by
    ``likelihood`` (Gaussian by default: ``r_ui ~ N(eta_ui, 1/tau)``).

    Parameters
    ----------
    method : {"map", "gibbs", "nuts", "svi", "pymc-nuts", "pymc-advi"}
        Inference method (see :data:`bayesmf.infer.METHODS`).
    rank : int
        Number of latent factors (0 = biases only).
    likelihood : {"gaussian", "ordinal", "bernoulli-probit", "bernoulli-logit", "implicit"} or Likelihood
        The observation family (:mod:`bayesmf.model.likelihoods`): ``"gaussian"`` for
        ratings treated as continuous; ``"ordinal"`` (ordered probit with learned
        cutpoints) for star ratings -- predictions are expected ratings and the predictive
        is categorical over the levels; ``"bernoulli-probit"`` / ``"bernoulli-logit"``
        for 0/1 data (thumbs, clicks) -- predictions are P(y=1); ``"implicit"`` for
        counts or clicks of which only the positives are listed (plays, purchases: the
        confidence-weighted model of implicit ALS over the whole matrix, fitted to an
        :class:`~bayesmf.data.Interactions` or a user/item/count frame; methods ``map``
        and ``gibbs``). MAP solves the Bernoulli and ordinal families by L-BFGS.
    prior : {"normal-wishart", "normal-gamma", "gamma"}, FactorPrior or None
        The factor prior of the Bayesian methods (:mod:`bayesmf.model.priors`): the
        BPMF Normal-Wishart or independent Normal-Gamma precisions per factor dimension
        (libFM/myFM style) for real factors, hyperparameters in ``priors`` (their
        scale-aware defaults follow the training data); ``"gamma"`` or a
        :class:`~bayesmf.model.priors.HierarchicalGamma` with its hyperparameters: the
        HPF prior of the non-negative factors of ``likelihood="poisson"``. ``None``
        (default): the likelihood's own default (Normal-Wishart; Gamma for Poisson).
    global_mean, user_bias, item_bias : bool, optional
        Include :math:`\mu`, :math:`b_u`, :math:`b_i`; ``None`` (default) takes the
        likelihood's default: on for ratings and 0/1 data, off for ``"implicit"`` (the
        implicit-ALS model :math:`p_{ui} \sim N(U_u^\top V_i, 1/(\tau c_{ui}))`).
    noise : {"auto", "learned", "fixed"}
        Learn the Gaussian noise precision or keep it at ``noise_precision``; ``"auto"``
        (default) takes the likelihood's default: learned for ratings, fixed at 16 for
        ``"implicit"`` (a learned precision is pinned by the millions of unobserved
        pairs and regularises too little for ranking; ``benchmarks/results/implicit_bayes.md``).
    noise_precision : float, optional
        Initial or fixed noise precision; ``None`` takes the likelihood's default (1, or 16
        for ``"implicit"``).
    reg_factors, reg_bias, init_scale
        MAP regularisation and initial spread, see :class:`~bayesmf.model.spec.ModelSpec`.
        ``init_scale=None`` (default) is the spec's 0.1, except for a Gibbs fit to sampled
        negatives (``fit(interactions, negatives=...)``), which starts its chain from
        factors of sd 1.0 (:data:`SAMPLED_NEGATIVES_GIBBS_INIT_SCALE`; from 0.1 the
        factor scale of such a chain grows for hundreds of sweeps).
    priors : BayesPriors or dict, optional
        Hyperpriors of the Bayesian methods.
    seed : int
        Random seed; same data + settings + seed give identical results.
    progress : bool
        Show a progress bar while fitting.
    user_features, item_features : Features or DataFrame, optional
        Side information for the Macau prior (methods ``gibbs``, ``map``, ``svi``,
        ``nuts``): a
        :class:`~bayesmf.data.features.Features` or a DataFrame with a ``user``/``item``
        id column and one column per feature (encoded by
        :meth:`~bayesmf.data.features.Features.from_frame`); every id of the training data
        needs a row. The factor rows then have prior mean :math:`\mu + \beta^\top x`
        (:mod:`bayesmf.infer.gibbs`), and ids with features but no ratings can be
        predicted with ``posterior_.with_features(...)``. They are data, not settings:
        not part of :meth:`get_params` nor of the saved ``estimator`` record (the model
        file stores them with the posterior).
    implicit_terms : {"user", "item", "user,item"} or None
        SVD++-style implicit terms (:func:`bayesmf.data.features.add_implicit_terms`):
        the user factor's prior mean gets :math:`|N(u)|^{-1/2}\sum_{j\in N(u)} y_j` over
        the items the user rated (which, not how), the item factor the flipped term over
        the users who rated it; built from the training pairs as a feature block of the
        Macau prior, joined after ``user_features``/``item_features``.
    **options
        Method options, e.g. ``num_samples``, ``num_warmup``, ``num_chains``, ``thin``
        (MCMC), ``solver``, ``max_iter`` (MAP), ``num_steps``, ``guide``, ``batch_size``
        (SVI). Unknown options raise :class:`~bayesmf.errors.SpecError` at ``fit``.

    Attributes
    ----------
    posterior_ : Posterior
        The fitted posterior (MAP: one draw).
    fit_seconds_ : float
        Wall time of the last fit.
    """

    def __init__(self, method: str = "map", rank: int = 10, *, likelihood="gaussian",
                 prior=None, global_mean: bool | None = None,
                 user_bias: bool | None = None, item_bias: bool | None = None,
                 noise: str = "auto",
                 noise_precision: float | None = None, reg_factors: float | None = None,
                 reg_bias: float | None = None, init_scale: float | None = None,
                 priors: BayesPriors | dict | None = None, seed: int = 0,
                 progress: bool = False, user_features=None, item_features=None,
                 implicit_terms=None, **options):
        self.method = method
        self.user_features = user_features
        self.item_features = item_features
        self.implicit_terms = implicit_terms
        self.rank = rank
        self.likelihood = likelihood
        self.prior = prior
        self.global_mean = global_mean
        self.user_bias = user_bias
        self.item_bias = item_bias
        self.noise = noise
        self.noise_precision = noise_precision
        self.reg_factors = reg_factors
        self.reg_bias = reg_bias
        self.init_scale = init_scale
        self.priors = priors
        self.seed = seed
        self.progress = progress
        self.options = options

    # ------------------------------------------------------------------ configuration
    def get_params(self, deep: bool = True) -> dict:
        """The constructor's arguments (scikit-learn style: ``BayesMF(**get_params())``
        is an unfitted copy, so ``sklearn.base.clone`` works; ``deep`` is accepted for
        that protocol, there are no nested estimators)."""
        p = {n: getattr(self, n) for n in ("method",) + _SPEC_FIELDS + ("seed", "progress",
                                                                        "implicit_terms")}
        p["priors"] = self.priors
        p["user_features"] = self.user_features
        p["item_features"] = self.item_features
        p.update(self.options)
        return p

    def set_params(self, **params) -> "BayesMF":
        """Change settings (scikit-learn style); method options go to ``options``.
        Returns ``self``; the fitted posterior, if any, is kept until the next ``fit``."""
        for k, v in params.items():
            if k in ("method", "seed", "progress", "priors", "implicit_terms",
                     "user_features", "item_features") + _SPEC_FIELDS:
                setattr(self, k, v)
            else:
                self.options[k] = v
        return self

    def make_spec(self) -> ModelSpec:
        """The validated model specification for the current settings."""
        # None means "the spec's default" only for the regularisation strengths; every
        # other setting must be given (rank=None is an error, not a silent rank 10)
        kw = {n: getattr(self, n) for n in _SPEC_FIELDS
              if getattr(self, n) is not None
              or n not in ("reg_factors", "reg_bias", "noise_precision", "init_scale")
              + _BIAS_FIELDS}
        from bayesmf.model.likelihoods import get_likelihood

        lik = get_likelihood(self.likelihood)
        if any(getattr(self, n) is None for n in _BIAS_FIELDS):
            # NMF (non-negative W H on the observed ratings) has no biases or mean
            on = bool(lik.default_biases) and self.method != "nmf"
            kw.update({n: on for n in _BIAS_FIELDS if getattr(self, n) is None})
        if self.noise == "auto":  # the likelihood's default noise setting
            kw["noise"] = lik.default_noise[0]
        if self.noise_precision is None:
            kw["noise_precision"] = lik.default_noise[1]
        if "tau" not in lik.theta_names and (kw["noise"], float(kw["noise_precision"])) \
                != (lik.default_noise[0], float(lik.default_noise[1])):
            raise SpecError(f"noise / noise_precision set the Gaussian observation noise; "
                            f"likelihood {lik.name!r} has none (its scale is fixed by the "
                            f"family): leave them at their defaults")
        if self.priors is not None:
            kw["priors"] = (BayesPriors.from_dict(self.priors) if isinstance(self.priors, dict)
                            else self.priors)
        return ModelSpec(**kw)

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        return f"BayesMF(method={self.method!r}, rank={self.rank!r}, seed={self.seed!r}{opts})"

    # ------------------------------------------------------------------ fitting
    def fit(self, data, *, user_col: str = "user", item_col: str = "item",
            rating_col: str = "rating", duplicates: str = "raise",
            id_type: str | None = None, negatives=None) -> "BayesMF":
        """Fit to ratings (a :class:`Ratings` or a DataFrame) or implicit feedback (an
        :class:`~bayesmf.data.Interactions`); returns ``self``.

        For a DataFrame: ``duplicates="raise"|"last"|"first"|"mean"`` resolves repeated
        ``(user, item)`` pairs (raise by default), ``id_type=None|"auto"|"str"|"int"``
        types the ids (``None`` keeps the columns' types); see :func:`as_ratings`.
        Ids given later to ``predict``/``recommend`` as text (``"12"``) match integer ids
        (``12``) when they are the canonical text of the integer
        (:class:`~bayesmf.data.vocab.Vocabulary`).

        Implicit positives with a Bernoulli likelihood. An :class:`Interactions` lists
        positives only, so a ``"bernoulli-logit"``/``"bernoulli-probit"`` model needs
        ``negatives=``: a :class:`~bayesmf.data.negatives.NegativeSampler` (its own seed),
        its ``to_dict()``, or a rule string ``kind[^beta][:n[/user]]`` such as
        ``"uniform:4"`` (4 uniform negatives per positive) or ``"popularity:4"``
        (drawn with probability proportional to item popularity), seeded with this
        estimator's ``seed`` (grammar: :mod:`bayesmf.data.negatives`). The model is fitted
        to ``y_ui = 1`` on every stored pair and ``y_ui = 0`` on ``m_u`` distinct sampled
        non-positive items per user
        (:meth:`~bayesmf.data.negatives.NegativeSampler.training_ratings`). With the
        suffix ``"@sweep"`` (``"uniform:4@sweep"``, ``NegativeSampler(redraw="sweep")``;
        ``method="gibbs"`` or ``"svi"``) that draw is re-paired at every Gibbs sweep, each
        user and each item keeping its number of negatives, or redrawn at every SVI step
        (:mod:`bayesmf.infer.negative_redraw`).
        The rule, its seed and the counts go to ``posterior_.attrs["negatives"]`` (saved
        with the model). The seen pairs (``exclude_seen`` in ``recommend``) are the
        positives only: sampled negatives stay recommendable.

        Raises
        ------
        SpecError
            A Bernoulli likelihood given an Interactions without ``negatives=`` (it would
            see only 1s); ``negatives=`` with another likelihood or with data that are not
            an Interactions; an unparseable rule.
        """
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) \
                or not 0 <= self.seed < 2**32:
            raise SpecError(f"seed must be an integer in [0, 2**32), got {self.seed!r}")
        fit_fn = get_method(self.method)
        spec = self.make_spec()
        seen = neg_record = None
        sampled = _negatives_setup(data, spec, negatives, int(self.seed))
        if sampled is not None:
            sampler, seed = sampled
            if self.init_scale is None and self.method == "gibbs":
                spec = dataclasses.replace(spec, init_scale=SAMPLED_NEGATIVES_GIBBS_INIT_SCALE)
            train = sampler.training_ratings(data, seed)
            seen = data
            n_pos = int(data.nnz)
            want = sampler.n_per_user(data)
            neg_record = {**sampler.to_dict(), "seed": int(seed), "rule": sampler.to_string(),
                          "distinct": True, "n_positives": n_pos,
                          "n_negatives": int(train.nnz - n_pos),
                          "capped_users": int((want > sampler.n_candidates(data)).sum())}
        else:
            train = as_ratings(data, user_col=user_col, item_col=item_col,
                               rating_col=rating_col, duplicates=duplicates, id_type=id_type)
        spec.check_data(train.n_users, train.n_items, train.nnz)
        from bayesmf.infer import likelihood_fitter

        # the fitter that will run: the likelihood's own (e.g. Poisson's NUTS) or the method's
        _check_draws_memory(self.method, likelihood_fitter(self.method, spec) or fit_fn, spec,
                            train, self.options)
        t0 = time.perf_counter()
        uf, itf = self.user_features, self.item_features
        if parse_implicit_terms(self.implicit_terms):
            if seen is not None:
                raise SpecError("implicit_terms cannot be combined with sampled negatives "
                                "(the negatives are not interactions of the user)")
            uf, itf = add_implicit_terms(train, self.implicit_terms, uf, itf)
        feat_opts = {n: v for n, v in (("user_features", uf), ("item_features", itf))
                     if v is not None}
        if feat_opts and spec.prior.support != "real":
            raise SpecError(f"user_features/item_features (the Macau prior: a Gaussian "
                            f"regression of the factors on the features) need real factors; "
                            f"the {spec.likelihood.name} likelihood's factors are "
                            f"non-negative ({spec.prior.name} prior) and take no side "
                            f"information")
        if feat_opts and self.method not in FEATURE_METHODS:
            raise SpecError(f"user_features/item_features (the Macau prior) need a method "
                            f"in {FEATURE_METHODS} (e.g. method='gibbs'), got "
                            f"method={self.method!r}")
        redraw = {}
        if neg_record is not None and sampler.redraw == "sweep":
            if self.method not in ("gibbs", "svi"):
                raise SpecError(f"negatives redrawn every sweep ('{sampler.to_string()}') "
                                f"need method='gibbs' or 'svi', got method={self.method!r}; "
                                f"drop '@sweep' to fit one fixed draw of negatives")
            redraw = {"redraw_negatives": True}
        post = fit_fn(train, spec, seed=int(self.seed), progress=bool(self.progress),
                      **{**self.options, **feat_opts, **redraw})
        self.fit_seconds_ = time.perf_counter() - t0
        if seen is not None:
            from bayesmf.posterior import TrainInfo

            post.train = TrainInfo.from_ratings(train, seen=seen, **post.train.extra)
            post.attrs["negatives"] = neg_record
        post.attrs.setdefault("estimator", _jsonable_params(self.get_params()))
        post.attrs.setdefault("fit_seconds", self.fit_seconds_)
        self.posterior_ = post
        return self

    @property
    def posterior(self) -> Posterior:
        try:
            return self.posterior_
        except AttributeError:
            raise NotFittedError("this BayesMF instance is not fitted yet; call fit() first "
                                 "or load a saved model with bayesmf.load()") from None

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "posterior_")

    # ------------------------------------------------------------------ prediction
    def predict(self, pairs, *, interval: float = 0.9, clip: bool = True,
                unknown: str = "fallback", user_col: str = "user",
                item_col: str = "item") -> pd.DataFrame:
        """Predictive mean, std and central interval for (user, item) pairs (the mean and
        the bounds clipped to the training rating scale unless ``clip=False``).

        ``pairs`` is a DataFrame with user and item columns (raw ids), a Ratings
        container, or a ``(users, items)`` tuple. Returns a DataFrame with columns
        ``user, item, mean, std, std_param, lower, upper, known_user, known_item``;
        ``std`` includes observation noise, ``std_param`` does not (for MAP it is 0).
        Unknown ids get the population fallback and are flagged (``unknown="raise"``
        raises instead).
        """
        post = self.posterior
        users, items = raw_pairs(pairs, user_col, item_col)
        pred = post.predict(users, items, interval=interval, clip=clip, unknown=unknown)
        df = pred.to_frame()
        df.attrs["uncertainty"] = pred.uncertainty
        df.attrs["interval"] = interval
        return df

    def evaluate(self, test, **kwargs) -> dict:
        """Rating (and ranking) metrics on held-out ratings; see
        :func:`bayesmf.evaluate.evaluate`. For an implicit-feedback model (over all pairs,
        or Bernoulli with sampled negatives) ``test`` may also be the held-out
        interactions as a DataFrame with ``user`` and ``item`` columns and no ``rating``
        (every pair relevant), as ``bayesmf evaluate`` reads them."""
        from bayesmf import evaluate as ev
        from bayesmf.data.interactions import Interactions

        post = self.posterior
        implicit = post.likelihood.full_matrix or bool(post.attrs.get("negatives"))
        if (implicit and isinstance(test, pd.DataFrame) and "rating" not in test.columns
                and {"user", "item"} <= set(test.columns)):
            # held-out interactions as a user/item frame (the CLI's reading too): every
            # listed pair is relevant, the ids those of the model
            test = Interactions.from_arrays(test["user"].to_numpy(), test["item"].to_numpy())
        if not isinstance(test, Interactions):
            test = as_ratings(test)
        return ev.evaluate(post, test, **kwargs)

    def recommend(self, users, n: int = 10, strategy: str = "mean", **kwargs) -> pd.DataFrame:
        """Top-``n`` items per user; see :func:`bayesmf.recommend.recommend`."""
        from bayesmf import recommend as rec

        return rec.recommend(self.posterior, users, n=n, strategy=strategy, **kwargs)

    def recalibrate(self, data, *, method: str = "beta", fraction: float = 0.1,
                    seed: int | None = None) -> "BayesMF":
        r"""Recalibrate P(relevant) of a Bernoulli-logit model fitted with sampled
        negatives (``fit(interactions, negatives=...)``), in place; returns ``self``.

        Why: on held-out positives + fresh negatives by the fitting rule, the raw
        posterior predictive :math:`\frac1S\sum_s\sigma(\eta_s)` is under-confident
        (Last.fm, rank 32: ECE 0.030, fitted Platt slope about 1.3;
        ``benchmarks/results/calibration_implicit.md``). How
        (:mod:`bayesmf.evaluate.recalibration`): ``data`` -- the interactions the model
        was fitted on -- lose ``fraction`` of each user's positives (the carve); a copy of
        this estimator (same settings, raw logit) is fitted on the rest with the same
        negative-sampling rule; a monotone map of the logit (``method``: ``"beta"``,
        ``"platt"`` or ``"shift"``) is fitted on the carved positives + fresh negatives
        by the rule, per posterior draw; the map is attached to **this** model's
        posterior (:meth:`~bayesmf.evaluate.Recalibration.attach`). From then on
        ``predict``'s ``mean``, every recommendation strategy, ``evaluate`` and the saved
        file use the recalibrated P(y=1); rankings of the posterior mean change little
        and per-draw rankings not at all. Costs one more fit on ``1 - fraction`` of the
        data. The map is in :attr:`recalibration_` and ``posterior_.attrs
        ["recalibration"]``; the raw model is
        ``posterior_.with_likelihood("bernoulli-logit")``.
        """
        from bayesmf.data.interactions import Interactions
        from bayesmf.evaluate.recalibration import fit_recalibration, recalibration_carve
        from bayesmf.predictive.links import LINK_MAPS

        post = self.posterior
        neg = post.attrs.get("negatives")
        if post.likelihood.name != "bernoulli-logit" or not neg:
            raise SpecError("recalibrate needs a bernoulli-logit model fitted to "
                            "interactions with sampled negatives (fit(interactions, "
                            f"negatives='uniform:4')); this model: likelihood "
                            f"{post.likelihood.name!r}, "
                            f"{'with' if neg else 'without'} sampled negatives")
        if not isinstance(data, Interactions):
            raise DataError(f"recalibrate needs the Interactions the model was fitted on, "
                            f"got {type(data).__name__}")
        if int(data.nnz) != int(neg["n_positives"]):
            raise DataError(f"recalibrate needs the interactions the model was fitted on: "
                            f"it saw {neg['n_positives']} positives, these hold {data.nnz}")
        if method not in LINK_MAPS:
            raise SpecError(f"method must be one of {list(LINK_MAPS)} (maps of the logit "
                            f"per posterior draw), got {method!r}")
        if not (isinstance(fraction, (int, float)) and 0 < fraction < 1):
            raise SpecError(f"fraction must be in (0, 1), got {fraction!r}")
        carve_seed = int(self.seed) + 1 if seed is None else int(seed)
        carve = recalibration_carve(data, negatives=neg["rule"], fraction=fraction,
                                    seed=carve_seed)
        params = {**self.get_params(), "likelihood": "bernoulli-logit", "progress": False,
                  "user_features": self.user_features, "item_features": self.item_features}
        t0 = time.perf_counter()
        carve_model = type(self)(**params).fit(carve.fit, negatives=neg["rule"])
        fit_s = time.perf_counter() - t0
        rec = fit_recalibration(carve_model, carve.pairs, method=method, on="draws",
                                negatives=neg["rule"], fraction=float(fraction),
                                carve_seed=carve_seed, carve_fit_seconds=fit_s)
        self.posterior_ = rec.attach(post)
        self.recalibration_ = rec
        return self

    def to_datatree(self, **kwargs):
        """The posterior as an ArviZ 1.x ``xarray.DataTree``; see
        :func:`bayesmf.diagnostics.to_datatree` (e.g. ``log_likelihood=train`` for LOO)."""
        return self.posterior.to_datatree(**kwargs)

    # ------------------------------------------------------------------ persistence
    def save(self, path, **options) -> "BayesMF":
        """Write the fitted model to a netCDF file; ``options`` go to
        :func:`bayesmf.io.save` (``mode="draws"|"summary"``, ``draws=`` how many to keep:
        80 by default, ``"all"`` for every draw; ``thin=``)."""
        from bayesmf import io

        io.save(self.posterior, path, **options)
        return self

    @classmethod
    def from_posterior(cls, posterior: Posterior) -> "BayesMF":
        """The estimator of a fitted posterior (what :func:`load` returns), with the
        settings it was constructed with: a later ``fit`` on new data resolves the
        data-dependent defaults (``priors=None``: scaled to the new data; the ordinal
        levels; the regularisation) again, as the original estimator would. A model file
        without that record (or with a setting that cannot be rebuilt from it) takes the
        fitted model's resolved settings."""
        rec = dict(posterior.attrs.get("estimator", {}))
        method = rec.pop("method", posterior.method)
        for n in ("user_features", "item_features"):  # data, kept by the posterior
            rec.pop(n, None)
        rec.pop("_not_stored", None)
        spec = posterior.spec
        est = None
        if all(n in rec for n in _SPEC_FIELDS + ("priors",)):
            try:
                est = cls(method=method, **rec)
                est.make_spec()  # a setting the record holds only as text: refused
            except (SpecError, TypeError, ValueError):
                est = None
        if est is None:
            for n in _SPEC_FIELDS:
                rec[n] = getattr(spec, n)
            rec["priors"] = spec.priors
            est = cls(method=method, **rec)
        est.posterior_ = posterior
        return est


def load(path) -> BayesMF:
    """Load a model saved with :meth:`BayesMF.save` (or ``bayesmf fit --out``)."""
    from bayesmf import io

    return BayesMF.from_posterior(io.load(path))


def _negatives_setup(data, spec, negatives, seed: int):
    """``(sampler, seed)`` when ``data`` are implicit positives to be fitted by a
    Bernoulli likelihood with sampled negatives, ``None`` for an ordinary fit; SpecError
    for the combinations that cannot be meant (see :meth:`BayesMF.fit`)."""
    from bayesmf.data.interactions import Interactions

    lik = spec.likelihood
    bernoulli = lik.sampled_negatives
    implicit = isinstance(data, Interactions)
    if negatives is None:
        if bernoulli and implicit:
            raise SpecError(
                f"likelihood {lik.name!r} fitted to an Interactions would see only its "
                f"positives (every value 1) and learn nothing; pass negatives= to add "
                f"sampled non-interacted pairs as 0s, e.g. fit(interactions, "
                f"negatives='uniform:4') or negatives=NegativeSampler(...), or give 0/1 "
                f"Ratings that already hold negatives")
        if implicit and not lik.full_matrix:
            raise SpecError(
                f"likelihood {lik.name!r} fitted to an Interactions would model the listed "
                f"values of the interacted pairs only and never see a pair without an "
                f"interaction; for implicit feedback use likelihood='implicit' "
                f"(confidence-weighted, every pair), 'poisson' (counts, every pair) or "
                f"'bernoulli-logit' / 'bernoulli-probit' with negatives=; to model the "
                f"values of the listed pairs as ratings, fit them as a DataFrame or Ratings "
                f"(bayesmf.as_ratings)")
        return None
    if not bernoulli:
        raise SpecError(f"negatives= applies to the Bernoulli likelihoods "
                        f"('bernoulli-logit', 'bernoulli-probit') only, not {lik.name!r}; "
                        f"drop it (likelihood='implicit' weights every unobserved pair "
                        f"instead)")
    if not implicit:
        raise SpecError(f"negatives= needs implicit positives as an Interactions, got "
                        f"{type(data).__name__}; build one with Interactions.from_dataframe"
                        f"(...) or Interactions.from_ratings(ratings, threshold), or fit 0/1 "
                        f"Ratings without negatives=")
    from bayesmf.data.negatives import as_sampler

    # a sampler or its dict keeps its own seed; a rule string takes the estimator's
    sampler = as_sampler(negatives, seed=seed)
    return sampler, sampler.seed


def _check_draws_memory(method, fit_fn, spec, train, options) -> None:
    """Refuse, before any work, a fit whose kept draws would exceed the memory limit
    (:func:`bayesmf._memory.check_allocation`): ``chains x kept draws x ((N + M)(k + 1)
    + hyperparameters)`` float32 values, from the options over the fitter's defaults (its
    ``defaults`` attribute -- the PyMC and HPF fitters, whose modules hold several -- or
    its module's ``DEFAULTS``)."""
    import sys

    from bayesmf._memory import check_allocation, draws_bytes, format_bytes

    from bayesmf.infer import METHODS

    defaults = getattr(fit_fn, "defaults", None)
    for module in (getattr(fit_fn, "__module__", None),
                   METHODS[method].split(":")[0] if method in METHODS else None):
        if defaults is None and module is not None:
            defaults = getattr(sys.modules.get(module), "DEFAULTS", None)
    if not isinstance(defaults, dict) or "num_samples" not in defaults:
        return  # point estimates (MAP): one draw
    o = {**defaults, **{k: v for k, v in options.items() if k in defaults}}
    try:
        S = int(o["num_samples"])
        C = int(o.get("num_chains", 1))
        thin = int(o.get("thin", 1)) if method in ("nuts", "pymc-nuts") else 1
    except (TypeError, ValueError):
        return  # invalid values are reported by the method's own validation
    if S < 1 or C < 1 or thin < 1 or o.get("store_draws", True) is False:
        return
    S = S // thin  # the NUTS fitters keep num_samples // thin draws
    nb = draws_bytes(C, S, train.n_users, train.n_items, spec.rank)
    check_allocation(nb, f"the {method} posterior draws ({C} chain(s) x {S} draws x "
                     f"({train.n_users:,} users + {train.n_items:,} items) x rank "
                     f"{spec.rank}, {format_bytes(nb)} as float32)",
                     limit=options.get("memory_limit"))


def _jsonable_params(p: dict) -> dict:
    """The JSON-able record of the estimator's settings kept with the model
    (``attrs["estimator"]``, read back by :meth:`BayesMF.from_posterior`); a setting that
    is data or an arbitrary object is listed under ``_not_stored``."""
    out = {}
    for k, v in p.items():
        if isinstance(v, BayesPriors):
            from dataclasses import asdict

            v = asdict(v)
        if hasattr(v, "to_dict") and (hasattr(v, "ppl_name") or hasattr(v, "theta_names")):
            v = v.to_dict()
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, (str, int, float, bool, dict, list)) or v is None:
            out[k] = v
        elif isinstance(v, tuple):
            out[k] = list(v)
        else:  # data (features, arrays) or an object: named, not stored
            out.setdefault("_not_stored", []).append(k)
    return out
