"""Memory guard: refuse allocations that would exhaust the machine, with a useful message.

Large arrays in bayesmf are posterior draws (``chains x draws x (users + items) x rank``)
and the predictive work blocks (``draws x pairs x rank``). Before allocating one,
library code calls :func:`check_allocation`; if the request exceeds the **memory limit**
it raises :class:`~bayesmf.errors.MemoryLimitError` naming the array, its size, the limit
and where the limit came from, and suggesting thinning, fewer draws, streaming summaries
or smaller chunks.

The limit, resolved at call time (never at import) by :func:`memory_limit`:

1. the ``limit=`` argument (bytes as a number, or a string such as ``"2GB"``,
   ``"512MiB"``, ``"50%"`` of the currently available memory);
2. else the environment variable ``BAYESMF_MEMORY_LIMIT`` (same syntax);
3. else :data:`DEFAULT_FRACTION` (one half) of the currently **available** memory
   (``psutil`` when installed, else ``/proc/meminfo`` ``MemAvailable``, else
   ``os.sysconf``); when none of these work, no limit is enforced.

Sizes: ``KB/MB/GB/TB`` are powers of 1000, ``KiB/MiB/GiB/TiB`` (and bare ``K/M/G/T``)
powers of 1024.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np

from bayesmf.errors import MemoryLimitError, SpecError

__all__ = ["ENV_VAR", "DEFAULT_FRACTION", "parse_bytes", "format_bytes", "available_memory",
           "memory_limit", "check_allocation", "draws_bytes", "posterior_bytes",
           "predictive_pair_bytes", "max_pairs_per_block"]

ENV_VAR = "BAYESMF_MEMORY_LIMIT"
#: fraction of the available memory one allocation may take by default
DEFAULT_FRACTION = 0.5

_UNITS = {
    "": 1, "b": 1,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}
_SIZE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([a-zA-Z%]*)\s*$")


def parse_bytes(value, *, what: str = "memory limit") -> int:
    """``"2GB"`` -> ``2_000_000_000``; ``"1.5GiB"``, ``"512M"``, ``1e9``, ``"50%"`` (of the
    available memory) are accepted. Raises :class:`SpecError` for anything else."""
    if isinstance(value, (bool, np.bool_)):
        raise SpecError(f"{what} must be a size such as 2GB, got {value!r}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        v = float(value)
        if not math.isfinite(v) or v < 1:
            raise SpecError(f"{what} must be a positive size of at least 1 byte, got "
                            f"{value!r}")
        return int(v)
    if not isinstance(value, str):
        raise SpecError(f"{what} must be a number of bytes or a string such as '2GB', "
                        f"got {type(value).__name__}")
    m = _SIZE_RE.match(value)
    unit = m.group(2).lower() if m else None
    if m is None or (unit not in _UNITS and unit != "%"):
        raise SpecError(f"{what} {value!r} is not a size; use e.g. 2GB, 512MiB, 1e9 or 50%")
    num = float(m.group(1))
    if num <= 0:
        raise SpecError(f"{what} must be positive, got {value!r}")
    if unit != "%" and num * _UNITS[unit] < 1:
        raise SpecError(f"{what} {value!r} is less than 1 byte")
    if unit == "%":
        if num > 100:
            raise SpecError(f"{what} {value!r}: a percentage must be at most 100%")
        avail = available_memory()
        if avail is None:
            raise SpecError(f"{what} {value!r}: available memory is unknown on this system; "
                            "give a size in bytes instead")
        return int(avail * num / 100)
    return int(num * _UNITS[unit])


def format_bytes(n: float) -> str:
    """Human-readable size in binary units (``1.5 GiB``)."""
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def available_memory() -> int | None:
    """Currently available physical memory in bytes (``None`` if it cannot be found)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return int(psutil.virtual_memory().available)
        except Exception:  # pragma: no cover - psutil unsupported platform
            pass
    v = _meminfo_available()
    if v is not None:
        return v
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        return None


def memory_limit(limit=None) -> tuple[int | None, str]:
    """``(bytes, source)`` of the limit in force now; ``bytes`` is ``None`` when unknown.

    ``source`` says where it came from (for error messages)."""
    if limit is not None:
        return parse_bytes(limit), "limit= argument"
    env = os.environ.get(ENV_VAR)
    if env is not None and env.strip():
        return parse_bytes(env, what=f"{ENV_VAR}"), f"{ENV_VAR}={env.strip()}"
    avail = available_memory()
    if avail is None:
        return None, "unknown available memory"
    return int(avail * DEFAULT_FRACTION), (f"{DEFAULT_FRACTION:.0%} of the "
                                           f"{format_bytes(avail)} available")


def check_allocation(nbytes, what: str, limit=None, *, hint: str | None = None) -> int:
    """Raise :class:`MemoryLimitError` if allocating ``nbytes`` for ``what`` would exceed
    the memory limit (see the module docs); returns the limit (or 0 if none applies).

    ``hint`` replaces the generic advice (thin / fewer draws / stream / chunk)."""
    nbytes = int(nbytes)
    if nbytes < 0:
        raise SpecError(f"allocation size must be >= 0, got {nbytes}")
    lim, source = memory_limit(limit)
    if lim is None:
        return 0
    if nbytes > lim:
        advice = hint or ("thin the draws (thin=... or Posterior.thin), keep fewer samples "
                          "or chains, stream summaries instead of storing every draw, or "
                          "process fewer pairs/users per chunk")
        how = ("the memory_limit= option (e.g. memory_limit='16GB')"
               if source == "limit= argument" else
               f"the {ENV_VAR} environment variable (e.g. {ENV_VAR}=16GB; a fit also "
               f"takes memory_limit=, which wins over it)")
        raise MemoryLimitError(
            f"{what} needs {format_bytes(nbytes)}, more than the memory limit of "
            f"{format_bytes(lim)} ({source}); {advice}. Raise the limit with {how} if the "
            f"machine has room.")
    return lim


# ------------------------------------------------------------------------ size estimates
def draws_bytes(chains: int, draws: int, n_users: int, n_items: int, rank: int, *,
                itemsize: int = 4, hyper: bool = True) -> int:
    """Bytes of a posterior's draws: ``C*D*((N+M)*(k+1) + 2)`` values of ``itemsize``
    (factors, biases, ``mu``, ``tau``), plus ``2*(k + k^2 + 1)`` hyperparameters per draw
    when ``hyper``."""
    C, D, N, M, k = (int(x) for x in (chains, draws, n_users, n_items, rank))
    per_draw = (N + M) * (k + 1) + 2
    if hyper:
        per_draw += 2 * (k + k * k + 1)
    return C * D * per_draw * int(itemsize)


def posterior_bytes(draws: dict) -> int:
    """Total bytes of a dict of arrays (anything with ``nbytes`` or ``size``/``dtype``)."""
    total = 0
    for a in draws.values():
        nb = getattr(a, "nbytes", None)
        if nb is None:
            import numpy as np

            nb = np.asarray(a).nbytes
        total += int(nb)
    return total


def predictive_pair_bytes(n_samples: int, rank: int) -> int:
    """Peak bytes per (user, item) pair of a predictive block over ``n_samples`` draws:
    two gathered ``S x k`` float32 factor rows, ``~6`` float64 ``S``-vectors (mean,
    variance, sd, quantile bracketing) per pair."""
    S, k = int(n_samples), int(rank)
    return S * (2 * k * 4 + 6 * 8)


def max_pairs_per_block(n_samples: int, rank: int, max_elems: int, limit=None,
                        what: str = "a predictive block") -> int:
    """Pairs per predictive chunk: at most ``max_elems // (S * max(k, 1))`` and within a
    quarter of the memory limit; raises :class:`MemoryLimitError` if even one pair does
    not fit (too many draws for the limit)."""
    S = max(1, int(n_samples))
    step = max(1, int(max_elems) // (S * max(int(rank), 1)))
    per_pair = predictive_pair_bytes(S, rank)
    lim, _ = memory_limit(limit)
    if lim is not None:
        check_allocation(per_pair, f"{what} over {S} draws (one pair)", limit,
                         hint="thin the posterior (Posterior.thin) or keep fewer draws")
        step = max(1, min(step, (lim // 4) // per_pair))
    return step
