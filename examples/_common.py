"""Shared helpers of the example scripts (data loading, small subsets, printing)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bayesmf.data import kcore
from bayesmf.datasets import load_movielens

_VARIANTS = ("latest-small", "100k", "1m", "10m", "20m", "25m")


def guess_variant(path: str | None) -> str:
    """MovieLens variant from a folder/zip name such as ``ml-100k`` (default latest-small)."""
    if path is None:
        return "latest-small"
    name = Path(path).name.lower()
    for v in _VARIANTS:
        if name in (f"ml-{v}", f"ml-{v}.zip", v):
            return v
    raise SystemExit(f"cannot tell the MovieLens variant of {path!r}; pass --variant "
                     f"(one of {', '.join(_VARIANTS)})")


def load(data: str | None, variant: str | None):
    """The packaged latest-small (``data=None``) or a local MovieLens folder/zip."""
    variant = variant or guess_variant(data)
    if data is None:
        return load_movielens(variant)
    return load_movielens(variant, path=data, download=False)


def small_subset(ratings, max_users: int | None, min_item: int = 5):
    """The first ``max_users`` users (raw-id order) and the items they rated at least
    ``min_item`` times -- a quick corner of the data for smoke runs."""
    if not max_users:
        return ratings
    ids = np.sort(ratings.users.ids)[:max_users]
    keep = np.isin(ratings.users.decode(ratings.user), ids)
    return kcore(ratings.subset(keep), min_user=2, min_item=min_item).ratings


def method_options(method: str, samples: int, warmup: int, chains: int,
                   steps: int | None = None) -> dict:
    """Sampler settings for the MCMC/VI methods (MAP takes none of them)."""
    if method == "map":
        return {}
    if method in ("svi", "pymc-advi"):
        return {"num_samples": samples, **({"num_steps": steps} if steps else {})}
    return {"num_samples": samples, "num_warmup": warmup, "num_chains": chains}
