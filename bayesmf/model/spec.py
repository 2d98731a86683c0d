r"""The model specification: one definition of the math, validated once.

Likelihood over the **observed** entries :math:`(u, i) \in \Omega` only:

.. math::

    r_{ui} \sim \mathcal N\!\left(\mu + b_u + b_i + U_u^\top V_i,\; \tau^{-1}\right)

* :math:`\mu` global mean (switch ``global_mean``), :math:`b_u`, :math:`b_i` user and item
  biases (switches ``user_bias``, ``item_bias``), :math:`U \in \mathbb R^{N\times k}`,
  :math:`V \in \mathbb R^{M\times k}` latent factors of rank :math:`k` (``rank``; ``rank=0``
  is the bias-only baseline), :math:`\tau` the noise precision (``noise="learned"`` or
  ``"fixed"`` at ``noise_precision``).

**PMF (MAP)** minimises the negative log posterior with fixed Gaussian priors
(Salakhutdinov & Mnih 2007, biases as in Koren, Bell & Volinsky 2009):

.. math::

    \tfrac{\tau}{2}\sum_{(u,i)\in\Omega}(r_{ui}-\hat r_{ui})^2
    + \tfrac{\lambda_U}{2}\lVert U\rVert^2 + \tfrac{\lambda_V}{2}\lVert V\rVert^2
    + \tfrac{\lambda_{b_u}}{2}\lVert b_u\rVert^2 + \tfrac{\lambda_{b_i}}{2}\lVert b_i\rVert^2

where the ``reg_*`` strengths are expressed per unit noise precision, i.e. the solver
minimises :math:`\sum (r-\hat r)^2 + \text{reg\_factors}(\lVert U\rVert^2+\lVert V\rVert^2)
+ \text{reg\_bias}(\lVert b_u\rVert^2+\lVert b_i\rVert^2)` (the classic ridge form), and
:math:`\lambda = \tau\cdot\text{reg}`.

**BPMF** (Salakhutdinov & Mnih 2008) puts hierarchical priors on the same parameters
(:class:`BayesPriors`): :math:`U_u \sim \mathcal N(\mu_U, \Lambda_U^{-1})` with
:math:`(\mu_U,\Lambda_U)\sim\mathcal{NW}(\mu_0, \beta_0, W_0, \nu_0)` (same for items),
:math:`b_u \sim \mathcal N(0, \sigma_{b_u}^2)` with
:math:`\sigma_{b_u}^{-2} \sim \mathrm{Gamma}(a_b, b_b)`, :math:`\tau\sim\mathrm{Gamma}(a_\tau,b_\tau)`
and a flat (or wide Gaussian) prior on :math:`\mu`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from bayesmf.errors import SpecError

__all__ = ["ModelSpec", "BayesPriors"]


def _positive(name, value, allow_zero=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{name} must be a number, got {value!r}") from None
    if not (v > 0 or (allow_zero and v == 0)) or v != v or v == float("inf"):
        raise SpecError(f"{name} must be {'>= 0' if allow_zero else '> 0'} and finite, got {value!r}")
    return v


@dataclass(frozen=True)
class BayesPriors:
    """Hyperpriors of the Bayesian model (BPMF with biases).

    * factors (:mod:`bayesmf.model.priors`): :math:`F_r\\sim N(\\mu_F, \\Lambda_F^{-1})`,
      :math:`\\mu_F\\mid\\Lambda_F \\sim N(0, (\\beta_0\\Lambda_F)^{-1})`, :math:`\\Lambda_F`
      Wishart :math:`(W_0 = w_0 I, \\nu_0)` or diagonal Gamma with the same
      :math:`(w_0, \\nu_0)`; ``nu0=None`` means the prior's default (:math:`k` for the
      Wishart, 1 for the diagonal prior).
    * biases: :math:`b \\sim N(0, 1/\\lambda_b)`, :math:`\\lambda_b \\sim \\mathrm{Gamma}(a_b, b_b)`.
    * noise: :math:`\\tau \\sim \\mathrm{Gamma}(a_\\tau, b_\\tau)` (shape, rate).
    * global mean: :math:`\\mu \\sim N(m_\\mu, 1/\\lambda_\\mu)`; ``lambda_mu=0`` is flat.

    **Scale-aware defaults.** ``w0``, ``bias_b`` and ``noise_b`` default to ``None``:
    resolved at fit time (:meth:`resolved`) from the scale :math:`s` of the data -- the
    standard deviation of the training values for the Gaussian likelihood, 1 for the
    unit-noise latent scale of probit/logit/ordinal -- as :math:`w_0 = 1/s`,
    :math:`b_b = b_\\tau = s^2`. Multiplying every rating by :math:`c` then multiplies the
    predictions by :math:`c` (factors by :math:`\\sqrt c`, biases by :math:`c`): the prior
    means the same thing on a 1-5 and on a 0-100 scale. On MovieLens (:math:`s\\approx 1.1`)
    they are close to the old fixed values 1.
    """

    beta0: float = 2.0
    w0: float | None = None
    nu0: float | None = None
    bias_a: float = 1.0
    bias_b: float | None = None
    noise_a: float = 1.0
    noise_b: float | None = None
    mu_mean: float = 0.0
    lambda_mu: float = 0.0

    #: fields resolved from the data scale when None
    SCALED = ("w0", "bias_b", "noise_b")

    def __post_init__(self):
        for n in ("beta0", "w0", "bias_a", "bias_b", "noise_a", "noise_b"):
            if getattr(self, n) is not None or n not in self.SCALED:
                _positive(n, getattr(self, n))
        _positive("lambda_mu", self.lambda_mu, allow_zero=True)
        if self.nu0 is not None:
            _positive("nu0", self.nu0)

    @classmethod
    def from_dict(cls, d: dict) -> "BayesPriors":
        """The priors from a ``{field: value}`` dict; an unknown key is a
        :class:`SpecError` naming the known ones."""
        if not isinstance(d, dict):
            raise SpecError(f"priors must be a BayesPriors or a dict, got {type(d).__name__}")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise SpecError(f"unknown prior setting(s) {unknown}; BayesPriors takes "
                            f"{sorted(cls.__dataclass_fields__)}")
        return cls(**d)

    @property
    def is_resolved(self) -> bool:
        return all(getattr(self, n) is not None for n in self.SCALED)

    def resolved(self, scale: float = 1.0) -> "BayesPriors":
        """The priors with the scale-aware defaults filled in for data scale ``scale``."""
        s = float(scale) if scale and float(scale) > 0 and scale == scale else 1.0
        auto = {"w0": 1.0 / s, "bias_b": s * s, "noise_b": s * s}
        return replace(self, **{n: v for n, v in auto.items() if getattr(self, n) is None})


@dataclass(frozen=True)
class ModelSpec:
    """Frozen, validated description of the model (shared by every inference method).

    Parameters
    ----------
    rank : int
        Number of latent factors ``k`` (``0`` for the bias-only model).
    global_mean, user_bias, item_bias : bool
        Include :math:`\\mu`, :math:`b_u`, :math:`b_i`.
    noise : {"learned", "fixed"}
        Learn :math:`\\tau` or keep it at ``noise_precision``.
    noise_precision : float
        Initial / fixed noise precision :math:`\\tau` (1/variance of a rating).
    reg_factors, reg_bias : float
        MAP ridge strengths (per unit noise precision) for factors and biases.
    init_scale : float
        Standard deviation of the random initial factors (the MAP start and the Gibbs
        chain's first state). For Bernoulli-logit Gibbs on sampled negatives 0.1 is a
        slow start: the factor scale is still growing after hundreds of sweeps, and
        ``init_scale=1.0`` ranks as well after the default 100 warm-up sweeps as 400-1,000
        sweeps do from 0.1 (``benchmarks/results/bernoulli_start.md``); ``BayesMF``
        with ``init_scale=None`` starts such fits at 1.0.
    priors : BayesPriors
        Hyperpriors for the Bayesian methods.
    prior : str, dict or FactorPrior, optional
        The factor prior (:mod:`bayesmf.model.priors`): ``"normal-wishart"`` (BPMF) or
        ``"normal-gamma"`` (independent per-dimension precisions, libFM/myFM style) for
        real factors; ``"gamma"`` (:class:`~bayesmf.model.priors.HierarchicalGamma`, the
        HPF prior of non-negative factors) for the Poisson likelihood. ``None`` (default):
        the likelihood's :attr:`~bayesmf.model.likelihoods.base.Likelihood.default_prior`
        (normal-wishart; gamma for Poisson). A prior whose support does not fit the
        likelihood is refused.
    likelihood : str or Likelihood
        The observation family (:mod:`bayesmf.model.likelihoods`): ``"gaussian"``
        (default), ``"ordinal"`` (ordered probit over the rating levels),
        ``"bernoulli-probit"``, ``"bernoulli-logit"`` (0/1 data), or an instance. Stored as
        the object; the ``noise*`` settings apply to the Gaussian family only.
    """

    rank: int = 10
    global_mean: bool = True
    user_bias: bool = True
    item_bias: bool = True
    noise: str = "learned"
    noise_precision: float = 1.0
    # ridge form (unnormalised sum of squares): chosen on ML-100K u1..u5, see
    # benchmarks/results/map_ml100k.md
    reg_factors: float = 12.0
    reg_bias: float = 3.0
    init_scale: float = 0.1
    priors: BayesPriors = field(default_factory=BayesPriors)
    likelihood: object = "gaussian"
    prior: object = None

    def __post_init__(self):
        if isinstance(self.rank, bool) or not isinstance(self.rank, int):
            try:
                import numpy as np

                if isinstance(self.rank, np.integer):
                    object.__setattr__(self, "rank", int(self.rank))
                else:
                    raise TypeError
            except TypeError:
                raise SpecError(f"rank must be an integer, got {self.rank!r}") from None
        if self.rank < 0:
            raise SpecError(f"rank must be >= 0, got {self.rank}")
        if self.rank > 10_000:
            raise SpecError(f"rank {self.rank} is unreasonably large (max 10000)")
        for n in ("global_mean", "user_bias", "item_bias"):
            if not isinstance(getattr(self, n), bool):
                raise SpecError(f"{n} must be True or False, got {getattr(self, n)!r}")
        if self.noise not in ("learned", "fixed"):
            raise SpecError(f"noise must be 'learned' or 'fixed', got {self.noise!r}")
        from bayesmf.model.likelihoods import get_likelihood

        object.__setattr__(self, "likelihood", get_likelihood(self.likelihood))
        from bayesmf.model.priors import get_prior

        lik = self.likelihood
        prior = get_prior(lik.default_prior if self.prior is None else self.prior)
        object.__setattr__(self, "prior", prior)
        if prior.support != lik.factor_support:
            if lik.factor_support == "nonnegative":
                raise SpecError(f"the {lik.name} likelihood has non-negative factors: its "
                                f"prior is {lik.default_prior!r} (Gamma factors), not "
                                f"{prior.name!r}")
            raise SpecError(f"prior {prior.name!r} (non-negative Gamma factors) goes with "
                            f"likelihood='poisson'; the {lik.name} likelihood takes "
                            "'normal-wishart' or 'normal-gamma' (the per-dimension "
                            "Gaussian prior)")
        _positive("noise_precision", self.noise_precision)
        _positive("reg_factors", self.reg_factors, allow_zero=True)
        _positive("reg_bias", self.reg_bias, allow_zero=True)
        _positive("init_scale", self.init_scale, allow_zero=True)
        if not isinstance(self.priors, BayesPriors):
            raise SpecError("priors must be a BayesPriors instance")
        if self.rank == 0 and not (self.user_bias or self.item_bias or self.global_mean):
            raise SpecError("rank=0 with no mean and no biases is an empty model")

    def check_data(self, n_users: int, n_items: int, nnz: int) -> None:
        """Reject ranks the data cannot support: ``k`` must not exceed ``min(users, items)``."""
        if self.rank > min(n_users, n_items):
            raise SpecError(
                f"rank {self.rank} is larger than the data supports: min(users={n_users}, "
                f"items={n_items}) = {min(n_users, n_items)}"
            )
        n_params = self.rank * (n_users + n_items)
        if n_params > 0 and nnz < 1:
            raise SpecError("no observations to fit")

    def replace(self, **changes) -> "ModelSpec":
        """A copy with some fields changed (re-validated)."""
        if "priors" in changes and isinstance(changes["priors"], dict):
            changes["priors"] = BayesPriors.from_dict(changes["priors"])
        return replace(self, **changes)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["likelihood"] = self.likelihood.to_dict()
        d["prior"] = self.prior.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ModelSpec":
        d = dict(d)
        lik = d.get("likelihood")
        if isinstance(lik, dict) and lik.get("name") == "poisson" \
                and any(k != "name" for k in lik):
            # files written before the Gamma prior became an object kept its
            # hyperparameters on the Poisson likelihood (and a Gaussian prior name)
            d["likelihood"] = {"name": "poisson"}
            d["prior"] = {"name": "gamma", **{k: v for k, v in lik.items() if k != "name"}}
        pri = d.pop("priors", None)
        if isinstance(pri, dict):
            d["priors"] = BayesPriors.from_dict(pri)
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise SpecError(f"unknown spec field(s): {sorted(unknown)}")
        return cls(**d)
