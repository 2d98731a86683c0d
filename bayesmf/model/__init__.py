"""The shared model: specification and likelihood."""

from bayesmf.model.likelihood import Params, log_likelihood, predict_mean
from bayesmf.model.spec import BayesPriors, ModelSpec

__all__ = ["ModelSpec", "BayesPriors", "Params", "predict_mean", "log_likelihood"]
