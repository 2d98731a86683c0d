"""XLA compile options of bayesmf's compiled programs (the chain driver and the MAP/ALS
sweeps): passed per executable with ``Lowered.compile(compiler_options=...)``, never as
global configuration or ``XLA_FLAGS``."""

from __future__ import annotations

__all__ = ["CPU_COMPILER_OPTIONS", "compile_lowered"]


#: XLA options for the compiled chains on a CPU backend, passed per executable (no global
#: config changes). ``xla_cpu_experimental_ynn_fusion_type=""`` turns off XLA's
#: experimental YNNPACK fusions (by default reductions and others), which made the row
#: solves slower here. Measured on the ML-1M subset, 2-core CPU, seconds per Gibbs sweep
#: (median of 3, one process alternating): rank 32 0.163 -> 0.143, rank 10 0.033 -> 0.029
#: (dots alone in YNNPACK, ``"dot"``: 0.162 / 0.034); ``benchmarks/results/xla_cpu_options.md``.
#: A program that XLA cannot compile with them falls back to its defaults.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}


def compile_lowered(lowered, extra: dict | None = None):
    """``lowered.compile()`` with :data:`CPU_COMPILER_OPTIONS` on a CPU backend and the
    ``extra`` options (falling back to ``extra`` alone if XLA refuses them)."""
    import jax

    base = dict(extra or {})
    opts = {**CPU_COMPILER_OPTIONS, **base} if jax.default_backend() == "cpu" else base
    if opts == base:
        return lowered.compile(compiler_options=base or None)
    try:
        return lowered.compile(compiler_options=opts)
    except Exception:  # noqa: BLE001 -- an experimental XLA option: keep XLA's defaults
        return lowered.compile(compiler_options=base or None)
