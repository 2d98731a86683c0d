"""Test harnesses for bayesmf and for code built on it (not needed to fit or predict).

* :mod:`bayesmf.testing.sbc` -- simulation-based calibration of any inference method x
  likelihood x factor prior (Talts et al. 2018), with the prior-predictive simulator
  :func:`~bayesmf.testing.sbc.simulate` (parameters from the spec's priors, data from its
  likelihood) and batched (vmapped) Gibbs / NUTS runners;
* :mod:`bayesmf.testing.sbc_macau` -- SBC of the Macau Gibbs step (side features: the
  coupled beta prior, lambda_beta): simulator, rotation-invariant quantities and a
  batched runner with features;
* :mod:`bayesmf.testing.conformance` -- planted data per likelihood, the smallest method
  settings that exercise every code path, and :class:`ConformanceTests`, a pytest mixin
  that checks any (method, likelihood) fit against the contract every Posterior keeps;
* :mod:`bayesmf.testing.interrupt` -- a simulated kill of a checkpointed run, for resume
  tests.

Imported lazily; ``bayesmf.testing.conformance`` needs pytest only when its mixin runs.
"""

__all__ = ["sbc", "sbc_macau", "conformance", "interrupt"]


def __getattr__(name):
    import importlib

    if name in __all__:
        return importlib.import_module(f"bayesmf.testing.{name}")
    raise AttributeError(f"module 'bayesmf.testing' has no attribute {name!r}")
