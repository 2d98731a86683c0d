"""Observation families as objects (see :mod:`bayesmf.model.likelihoods.base`).

======================  ==========================================  =====================
name                    for                                         class
======================  ==========================================  =====================
``"gaussian"``          explicit ratings treated as continuous      :class:`Gaussian`
``"ordinal"``           star ratings (integer or half stars)        :class:`OrdinalProbit`
``"bernoulli-probit"``  thumbs, clicks, any 0/1 column              :class:`BernoulliProbit`
``"bernoulli-logit"``   the same with the logistic link             :class:`BernoulliLogit`
``"implicit"``          counts/clicks over the whole matrix (HKV)   :class:`ImplicitGaussian`
``"poisson"``           counts over the whole matrix (HPF)          :class:`Poisson`
======================  ==========================================  =====================

:func:`get_likelihood` turns a name (or an instance) into a likelihood object;
:func:`likelihood_from_dict` reads one back from a model file. :data:`SUPPORTED` lists the
inference methods of each family.
"""

from __future__ import annotations

from bayesmf.errors import SpecError
from bayesmf.model.likelihoods.base import Likelihood
from bayesmf.model.likelihoods.bernoulli import BernoulliLogit, BernoulliProbit
from bayesmf.model.likelihoods.gaussian import Gaussian
from bayesmf.model.likelihoods.implicit import ImplicitGaussian
from bayesmf.model.likelihoods.ordinal import OrdinalProbit
from bayesmf.model.likelihoods.poisson import Poisson

__all__ = ["Likelihood", "Gaussian", "OrdinalProbit", "BernoulliProbit", "BernoulliLogit",
           "ImplicitGaussian", "Poisson", "LIKELIHOODS", "SUPPORTED", "get_likelihood",
           "likelihood_from_dict", "register_likelihood"]

#: registry: name -> class
LIKELIHOODS = {c.name: c for c in (Gaussian, OrdinalProbit, BernoulliProbit, BernoulliLogit,
                                     ImplicitGaussian, Poisson)}
_ALIASES = {"normal": "gaussian", "ordered-probit": "ordinal", "probit": "bernoulli-probit",
            "logit": "bernoulli-logit", "logistic": "bernoulli-logit",
            "bernoulli": "bernoulli-logit", "wmf": "implicit", "implicit-als": "implicit",
            "hkv": "implicit", "hpf": "poisson"}
#: likelihood name -> inference methods that run it
SUPPORTED = {n: tuple(c.methods) for n, c in LIKELIHOODS.items()}


def register_likelihood(cls, *, replace: bool = False):
    """Register a :class:`Likelihood` subclass under its ``name`` (usable as a decorator):
    ``get_likelihood(name)``, ``--likelihood name``, :data:`SUPPORTED` and the model files
    (:func:`bayesmf.load` rebuilds the family from its ``to_dict``) then know it. Register
    it before loading a model file that uses it (e.g. at the import of the module that
    defines it). A name already taken is refused unless ``replace=True``."""
    if not (isinstance(cls, type) and issubclass(cls, Likelihood)):
        raise SpecError(f"register_likelihood takes a Likelihood subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name or name == Likelihood.name:
        raise SpecError(f"{cls.__name__} needs a class attribute name = '...' (its registry "
                        "name)")
    name = name.lower()
    if (name in LIKELIHOODS or name in _ALIASES) and not replace \
            and LIKELIHOODS.get(name) is not cls:
        raise SpecError(f"likelihood name {name!r} is taken (by {LIKELIHOODS.get(name)}); "
                        "pass replace=True to override it")
    LIKELIHOODS[name] = cls
    SUPPORTED[name] = tuple(cls.methods)
    return cls


def get_likelihood(lik) -> Likelihood:
    """A :class:`Likelihood` from a name (``"gaussian"``, ``"ordinal"``,
    ``"bernoulli-probit"``, ``"bernoulli-logit"``) or an instance (returned unchanged)."""
    if isinstance(lik, Likelihood):
        return lik
    if isinstance(lik, dict):
        return likelihood_from_dict(lik)
    if not isinstance(lik, str):
        raise SpecError(f"likelihood must be a name or a Likelihood, got {lik!r}")
    name = _ALIASES.get(lik.lower(), lik.lower())
    if name not in LIKELIHOODS:
        raise SpecError(f"unknown likelihood {lik!r}; choose one of {sorted(LIKELIHOODS)}")
    return LIKELIHOODS[name]()


def likelihood_from_dict(d: dict) -> Likelihood:
    d = dict(d)
    name = d.pop("name", None)
    if name not in LIKELIHOODS:
        raise SpecError(f"unknown likelihood {name!r} in the model description; a family of "
                        f"your own is registered with bayesmf.model.likelihoods."
                        f"register_likelihood(cls) before the model is loaded")
    if "levels" in d and d["levels"] is not None:
        d["levels"] = tuple(d["levels"])
    if isinstance(d.get("recalibration"), list):
        d["recalibration"] = tuple(d["recalibration"])
    try:
        return LIKELIHOODS[name](**d)
    except TypeError as e:
        raise SpecError(f"bad parameters for likelihood {name!r}: {e}") from None
