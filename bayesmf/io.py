"""Save and load fitted models as netCDF-4 (HDF5) files.

A model file is a self-describing netCDF file (written with ``h5netcdf``) -- never a
pickle. It holds:

* the parameter draws, dims ``(chain, draw, user|item, factor[, factor_])`` with the raw
  user and item ids as coordinates ``user`` / ``item``;
* ``sample_stats__*`` variables (per chain and draw);
* the training facts (``train__*``: counts, seen-pair CSR structure);
* global attributes: ``bayesmf_schema`` (an integer, :data:`SCHEMA_VERSION`), the
  ``spec`` (JSON), ``method``, the rating ``scale`` (JSON) and free ``attrs`` (JSON).

Loading checks the schema version and the presence and shapes of every variable, and
raises :class:`~bayesmf.errors.ModelFileError` with a clear message for missing,
truncated, corrupted or unknown-version files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from bayesmf.data.ratings import RatingScale
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import ModelFileError
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo

__all__ = ["save", "load", "SCHEMA_VERSION"]

SCHEMA_VERSION = 2
#: versions this bayesmf reads: 1 (Gaussian only, likelihood as a string), 2 (likelihood
#: objects in the spec, their parameter draws such as ``cutpoints``)
READABLE_SCHEMAS = (1, 2)
_DIMS = {
    "mu": ("chain", "draw"), "tau": ("chain", "draw"),
    "bu": ("chain", "draw", "user"), "bi": ("chain", "draw", "item"),
    "U": ("chain", "draw", "user", "factor"), "V": ("chain", "draw", "item", "factor"),
    "mu_U": ("chain", "draw", "factor"), "mu_V": ("chain", "draw", "factor"),
    "Lambda_U": ("chain", "draw", "factor", "factor_"),
    "Lambda_V": ("chain", "draw", "factor", "factor_"),
    "lambda_bu": ("chain", "draw"), "lambda_bi": ("chain", "draw"),
    "cutpoints": ("chain", "draw", "cutpoint"),
}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return repr(obj)


def _dims_for(name: str, arr: np.ndarray) -> tuple:
    if name in _DIMS and len(_DIMS[name]) == arr.ndim:
        return _DIMS[name]
    return ("chain", "draw") + tuple(f"{name}_dim{j}" for j in range(arr.ndim - 2))


def save(posterior: Posterior, path, *, dtype=np.float32, extra_attrs: dict | None = None) -> Path:
    """Write ``posterior`` to ``path`` (netCDF-4). Draws are stored as ``dtype`` (float32
    by default). The file is written to a temporary name and renamed, so an interrupted
    save never leaves a truncated model under ``path``."""
    import xarray as xr

    path = Path(path)
    coords = {"user": posterior.users.ids, "item": posterior.items.ids}
    data = {}
    for name, arr in posterior.draws.items():
        a = np.asarray(arr)
        data[name] = (_dims_for(name, a), a.astype(dtype) if a.dtype.kind == "f" else a)
    for name, arr in posterior.sample_stats.items():
        a = np.asarray(arr)
        if a.dtype == bool:
            a = a.astype(np.int8)
        data[f"sample_stats__{name}"] = (
            ("chain", "draw") + tuple(f"ss_{name}_{j}" for j in range(a.ndim - 2)), a)
    t = posterior.train
    data["train__user_counts"] = (("user",), t.user_counts)
    data["train__item_counts"] = (("item",), t.item_counts)
    data["train__seen_indptr"] = (("seen_indptr",), t.seen_indptr)
    data["train__seen_indices"] = (("seen_nnz",), t.seen_indices)
    attrs = {
        "bayesmf_schema": SCHEMA_VERSION,
        "method": posterior.method,
        "spec": json.dumps(posterior.spec.to_dict()),
        "scale": json.dumps({"min": t.scale.min, "max": t.scale.max,
                             "levels": list(t.scale.levels) if t.scale.levels else None}),
        "train": json.dumps({"global_mean": t.global_mean, "n_train": t.n_train,
                             "extra": _jsonable(t.extra)}),
        "attrs": json.dumps(_jsonable({**posterior.attrs, **(extra_attrs or {})})),
        "user_id_kind": "str" if posterior.users.is_string else "int",
        "item_id_kind": "str" if posterior.items.is_string else "int",
    }
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        ds.to_netcdf(tmp, engine="h5netcdf")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load(path) -> Posterior:
    """Read a model written by :func:`save`; see the module docs for the checks."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
    except Exception as exc:  # h5py/h5netcdf raise many types for broken files
        raise ModelFileError(
            f"{path} is not a readable bayesmf model file (corrupted or truncated?): "
            f"{type(exc).__name__}: {exc}") from exc
    ver = ds.attrs.get("bayesmf_schema")
    if ver is None:
        raise ModelFileError(f"{path} is not a bayesmf model file (no bayesmf_schema attribute)")
    try:
        ver = int(ver)
    except (TypeError, ValueError):
        raise ModelFileError(f"{path} has a non-numeric model schema version {ver!r}") from None
    if ver not in READABLE_SCHEMAS:
        raise ModelFileError(
            f"{path} has model schema version {ver}; this bayesmf reads versions "
            f"{list(READABLE_SCHEMAS)}. Re-save it with a matching bayesmf version.")
    try:
        spec = ModelSpec.from_dict(json.loads(ds.attrs["spec"]))
        sc = json.loads(ds.attrs["scale"])
        tr = json.loads(ds.attrs["train"])
        attrs = json.loads(ds.attrs["attrs"])
        method = str(ds.attrs["method"])

        def ids(name):
            a = ds[name].values
            kind = ds.attrs.get(f"{name}_id_kind", "int")
            return a.astype(object) if kind == "str" else a.astype(np.int64)

        users = Vocabulary([str(x) for x in ids("user")] if ds.attrs.get("user_id_kind") == "str"
                           else ids("user"), "user")
        items = Vocabulary([str(x) for x in ids("item")] if ds.attrs.get("item_id_kind") == "str"
                           else ids("item"), "item")
        draws = {n: ds[n].values for n in ds.data_vars
                 if not n.startswith(("sample_stats__", "train__"))}
        stats = {n[len("sample_stats__"):]: ds[n].values for n in ds.data_vars
                 if n.startswith("sample_stats__")}
        levels = tuple(sc["levels"]) if sc.get("levels") else None
        train = TrainInfo(
            scale=RatingScale(sc["min"], sc["max"], levels), global_mean=tr["global_mean"],
            n_train=tr["n_train"], user_counts=ds["train__user_counts"].values,
            item_counts=ds["train__item_counts"].values,
            seen_indptr=ds["train__seen_indptr"].values,
            seen_indices=ds["train__seen_indices"].values, extra=tr.get("extra", {}))
        if len(train.seen_indptr) != len(users) + 1:
            raise ModelFileError(f"{path}: seen-pair structure does not match the users")
        return Posterior(draws, spec, users, items, train, method, stats, None, attrs)
    except ModelFileError:
        raise
    except Exception as exc:
        raise ModelFileError(f"{path} is an inconsistent bayesmf model file: "
                             f"{type(exc).__name__}: {exc}") from exc
