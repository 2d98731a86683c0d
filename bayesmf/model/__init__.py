"""The shared model: specification, parameters and (pure JAX) likelihood.

``bayesmf.model.likelihood`` imports JAX; import it explicitly where needed.
"""

from bayesmf.model.params import Params, zeros_params
from bayesmf.model.spec import BayesPriors, ModelSpec

__all__ = ["ModelSpec", "BayesPriors", "Params", "zeros_params"]
