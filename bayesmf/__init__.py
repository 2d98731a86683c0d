"""bayesmf: probabilistic and Bayesian matrix factorization with honest uncertainty.

Model over observed entries only: ``r_ui ~ N(mu + b_u + b_i + U_u . V_i, 1/tau)``,
fitted by MAP (PMF) or by Bayesian inference (Gibbs, NUTS, SVI; NumPyro and PyMC), with
every method returning one :class:`Posterior` that evaluation and recommendation consume.

Top-level names (everything else lives in its submodule):

* :class:`BayesMF` - the estimator facade; :func:`load` - load a saved model
* :class:`ImplicitRecommender` - the ``implicit`` library's API (``fit(user_items)``,
  ``recommend``, ``similar_items``) over a BayesMF model
* :func:`as_ratings` - a DataFrame (or Ratings) as a validated :class:`Ratings`
* :class:`Ratings`, :class:`Vocabulary` - the data layer
* :class:`ModelSpec`, :class:`BayesPriors` - the model specification
* :class:`Posterior` - the result of every inference method
* submodules ``datasets``, ``evaluate``, ``recommend``, ``infer``, ``io``, ``diagnostics``,
  ``selection``, ``spark`` (needs the ``spark`` extra), ``scoring``, ``predictive``
  (imported on first attribute access)
"""

from bayesmf.data.ratings import Ratings
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import (BayesMFError, DataError, MemoryLimitError, ModelFileError,
                            NotFittedError, SpecError, UnknownIdError)
from bayesmf.estimator import BayesMF, as_ratings, load
from bayesmf.model.spec import BayesPriors, ModelSpec
from bayesmf.posterior import Posterior

__version__ = "0.1.0"

__all__ = [
    "BayesMF",
    "ImplicitRecommender",
    "load",
    "as_ratings",
    "Ratings",
    "Vocabulary",
    "ModelSpec",
    "BayesPriors",
    "Posterior",
    "BayesMFError",
    "DataError",
    "UnknownIdError",
    "SpecError",
    "NotFittedError",
    "ModelFileError",
    "MemoryLimitError",
    "__version__",
]


def __getattr__(name):  # lazy submodules: `bayesmf.datasets` etc. without import cost
    import importlib

    if name == "ImplicitRecommender":  # pulls in bayesmf.recommend: on first use only
        from bayesmf.implicit_api import ImplicitRecommender

        return ImplicitRecommender
    if name in ("datasets", "evaluate", "recommend", "infer", "io", "diagnostics", "data",
                "model", "posterior", "cli", "selection", "spark", "scoring", "predictive"):
        return importlib.import_module(f"bayesmf.{name}")
    raise AttributeError(f"module 'bayesmf' has no attribute {name!r}")

