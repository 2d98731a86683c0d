r"""Save and load fitted models as netCDF-4 (HDF5) files.

A model file is a self-describing netCDF file (written with ``h5netcdf``) -- never a
pickle. It holds:

* the parameter draws, dims ``(chain, draw, user|item, factor[, factor_])`` with the raw
  user and item ids as coordinates ``user`` / ``item``;
* ``sample_stats__*`` variables (per chain and draw);
* the training facts (``train__*``: counts, seen-pair CSR structure);
* side features of a Macau model (``features__<side>__indptr|indices|data``: the CSR
  matrix, rows = the vocabulary, cold-start rows included; the schema -- columns,
  categories, scaling -- in the JSON attribute ``features``); the link matrices
  ``beta_U``/``beta_V`` are draws with dims ``(chain, draw, user_feature|item_feature,
  factor)`` (rotated with the factors in summary files);
* global attributes: ``bayesmf_schema`` (an integer), the ``spec`` (JSON), ``method``,
  the rating ``scale`` (JSON), free ``attrs`` (JSON), the file ``mode`` and what
  :func:`save` kept (``saved``, JSON: chains and draws kept and of how many).

**Size.** Every array of 256 values or more is stored gzip-compressed (level
``compression``, 4 by default) with the HDF5 byte-shuffle filter; draws are stored as
float32 by default. Posterior draws are close to incompressible (about 23 of their 32
bits are sampling noise: lossless compression saves ~13%), so what makes a file small is
the **number of draws kept**. By default :func:`save` keeps at most
:data:`DEFAULT_DRAWS` (80) draws, evenly spaced over each chain: the README's Gibbs model
of MovieLens latest-small (rank 10, 300 draws) takes 32 MB instead of 137 MB (all 300
draws compressed: 119 MB; ``benchmarks/results/model_files.md``). ``draws=None`` keeps
every draw; ``thin=t`` keeps every ``t``-th draw of each chain.

**Exactness.** What is loaded is exactly what was saved: the reloaded posterior equals
``posterior.select(...)`` of the kept draws cast to ``dtype``, so for float32 draws
(every sampler's output) its predictions are bit-for-bit those of the kept draws in
memory. The attribute ``posterior.attrs["saved"]`` of a loaded model says which draws were
kept. Predictions from 80 of 300 Gibbs draws differ from the 300-draw ones by Monte
Carlo error only (latest-small: rms 0.04 in the predictive mean, test RMSE within 0.001).

**Summary files** (``mode="summary"``) keep no factor draws. For each user row
:math:`a_u = [b_u, U_u]` and each item row :math:`a_i = [b_i, V_i]` they store the
posterior mean :math:`m` and covariance :math:`\Sigma` (``(k+1)(k+2)/2`` packed values),
after aligning every draw's factors by an orthogonal Procrustes rotation
:math:`R_s` (:math:`U_s R_s, V_s R_s`: each draw's predictions are unchanged, but chains
that sit in rotated copies of the solution are brought together before averaging), plus
``draws`` evenly spaced real draws of the global quantities (``mu``, ``tau``,
cut-points, hyperparameters, rotated by the same :math:`R_s`). On load, ``draws`` row
draws :math:`a^{(s)} = m + F z^{(s)}` (:math:`F F^\top = \Sigma`) are rebuilt from
independent standard normals per row, centred and whitened so that every row's sample
mean and covariance equal the stored :math:`m` and :math:`\Sigma` exactly, with a seed
stored in the file (the same draws on every load). The result is an ordinary
:class:`~bayesmf.posterior.Posterior` (one chain): predict, intervals, evaluate,
recommend and fold-in work unchanged. The approximation: rows are independent a
posteriori (the cross-covariances between users, items and ``mu`` are dropped; each row's
own two moments are kept). Measured on latest-small (rank 10, 300 Gibbs draws, 80
rebuilt draws): a 3.0 MB file, rms 0.034 change in the predictive mean (80 real draws:
0.040), test RMSE 0.8401 vs 0.8391, and 90% intervals 3% wider (coverage 0.905 vs
0.897). Summary files are for serving predictions; they cannot be
used for convergence diagnostics (their draws are not a Markov chain). Models with
non-negative factors (``likelihood="poisson"``, the Gamma prior) are refused: Gaussian
rows would put mass on negative factors and the rotation would mix the factor labels.

**Schemas.** Files with draws are written as schema 2, readable by every bayesmf since
the likelihood objects; summary files need schema 3 (:data:`SCHEMA_VERSION`), which an
older bayesmf refuses with a clear message. Loading reads :data:`READABLE_SCHEMAS` (1:
Gaussian only, likelihood as a string), checks the presence and shapes of every variable,
and raises :class:`~bayesmf.errors.ModelFileError` with a one-line message for missing,
truncated, corrupted, inconsistent or unknown-version files; :func:`save` raises it when
the file cannot be written (missing folder, a folder in the way, no permission).
"""

from __future__ import annotations

import json
import numbers
import os
from pathlib import Path

import numpy as np

from bayesmf._memory import check_allocation
from bayesmf.data.ratings import RatingScale
from bayesmf.data.vocab import Vocabulary
from bayesmf.errors import MemoryLimitError, ModelFileError, SpecError
from bayesmf.model.spec import ModelSpec
from bayesmf.posterior import Posterior, TrainInfo

__all__ = ["save", "load", "SCHEMA_VERSION", "READABLE_SCHEMAS", "DEFAULT_DRAWS", "MODES"]

#: the newest schema this bayesmf writes (summary files); files with draws are written
#: as schema 2 so that older bayesmf versions read them
SCHEMA_VERSION = 3
_DRAWS_SCHEMA = 2
#: versions this bayesmf reads: 1 (Gaussian only, likelihood as a string), 2 (likelihood
#: objects in the spec, their parameter draws such as ``cutpoints``), 3 (summary files)
READABLE_SCHEMAS = (1, 2, 3)
#: draws kept by default by :func:`save` (evenly spaced over each chain)
DEFAULT_DRAWS = 80
#: ``"draws"``: real posterior draws; ``"summary"``: per-row means and covariances
MODES = ("draws", "summary")
#: arrays smaller than this are stored uncompressed (the filter costs more than it saves)
_MIN_COMPRESS = 256
_ROW_NAMES = ("bu", "U", "bi", "V")
_DIMS = {
    "mu": ("chain", "draw"), "tau": ("chain", "draw"),
    "bu": ("chain", "draw", "user"), "bi": ("chain", "draw", "item"),
    "U": ("chain", "draw", "user", "factor"), "V": ("chain", "draw", "item", "factor"),
    "mu_U": ("chain", "draw", "factor"), "mu_V": ("chain", "draw", "factor"),
    "Lambda_U": ("chain", "draw", "factor", "factor_"),
    "Lambda_V": ("chain", "draw", "factor", "factor_"),
    "lambda_bu": ("chain", "draw"), "lambda_bi": ("chain", "draw"),
    "cutpoints": ("chain", "draw", "cutpoint"),
    "beta_U": ("chain", "draw", "user_feature", "factor"),
    "beta_V": ("chain", "draw", "item_feature", "factor"),
    "lambda_beta_U": ("chain", "draw"), "lambda_beta_V": ("chain", "draw"),
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


# ----------------------------------------------------------------------------- options
def _pos_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise SpecError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _resolve_draws(draws, thin, mode: str):
    """``(n or None, thin)`` from the options: ``draws="auto"`` is :data:`DEFAULT_DRAWS`
    unless ``thin`` is given (then every thinned draw is kept) or in summary mode."""
    t = 1 if thin is None else _pos_int("thin", thin)
    if isinstance(draws, str):
        if draws == "auto":
            return (DEFAULT_DRAWS if thin is None or mode == "summary" else None), t
        if draws == "all":
            return None, t
        raise SpecError(f"draws must be a positive integer, None, 'all' or 'auto', "
                        f"got {draws!r}")
    return (None if draws is None else _pos_int("draws", draws)), t


def _kept(C: int, D: int, n: int | None, thin: int):
    """Chain and draw indices kept: every ``thin``-th draw of each chain, then at most
    ``n`` draws in all, ``n // C`` per chain evenly spaced from the first to the last
    (``n < C``: the last draw of ``n`` evenly spaced chains)."""
    chains = np.arange(C)
    draws = np.arange(0, D, thin)
    if n is None or n >= C * len(draws):
        return chains, draws
    if n < C:
        return np.unique(np.linspace(0, C - 1, n).round().astype(np.int64)), draws[-1:]
    d = n // C
    return chains, draws[np.linspace(0, len(draws) - 1, d).round().astype(np.int64)]


# ----------------------------------------------------------------------------- summary
def _procrustes_rotations(U: np.ndarray, V: np.ndarray, passes: int = 2) -> np.ndarray:
    """Per draw ``s`` the orthogonal ``R_s`` (``(S, k, k)``) minimising
    ``||[U_s; V_s] R_s - X_ref||_F`` (``R = W Z^T`` from the SVD ``W S Z^T`` of
    ``[U_s; V_s]^T X_ref``). The reference is the last draw, then the mean of the aligned
    draws (generalised Procrustes, ``passes`` rounds). ``U_s R_s (V_s R_s)^T =
    U_s V_s^T``: no prediction of any draw changes."""
    S, k = U.shape[0], U.shape[-1]
    R = np.broadcast_to(np.eye(k), (S, k, k)).copy()
    if k == 0:
        return R
    ref_u, ref_v = U[-1].astype(np.float64), V[-1].astype(np.float64)
    for _ in range(passes):
        sum_u = np.zeros_like(ref_u)
        sum_v = np.zeros_like(ref_v)
        for s in range(S):
            us, vs = U[s].astype(np.float64), V[s].astype(np.float64)
            w, _, zt = np.linalg.svd(us.T @ ref_u + vs.T @ ref_v)
            R[s] = w @ zt
            sum_u += us @ R[s]
            sum_v += vs @ R[s]
        ref_u, ref_v = sum_u / S, sum_v / S
    return R


def _row_moments(bias: np.ndarray, F: np.ndarray, R: np.ndarray):
    """Mean ``(n, k+1)`` and packed lower-triangular covariance ``(n, (k+1)(k+2)/2)``
    (denominator ``S - 1``, centred two-pass in float64) over the ``S`` draws of each
    row's ``[bias, F_s R_s]``, in row blocks of about 32 MB."""
    S, n, k = F.shape
    d = k + 1
    r, c = np.tril_indices(d)
    mean = np.empty((n, d))
    packed = np.empty((n, len(r)))
    step = max(1, (1 << 22) // (S * d))
    for a in range(0, n, step):
        b = min(n, a + step)
        A = np.empty((S, b - a, d))
        A[..., 0] = bias[:, a:b]
        A[..., 1:] = np.einsum("snk,skj->snj", F[:, a:b].astype(np.float64), R)
        m = A.mean(axis=0)
        X = A - m
        cov = np.einsum("snd,sne->nde", X, X) / (S - 1)
        mean[a:b] = m
        packed[a:b] = cov[:, r, c]
    return mean, packed


def _unpack(packed: np.ndarray, d: int) -> np.ndarray:
    if packed.shape[-1] != d * (d + 1) // 2:
        raise ModelFileError(f"summary covariance has {packed.shape[-1]} values per row, "
                             f"expected {d * (d + 1) // 2}")
    cov = np.zeros(packed.shape[:-1] + (d, d))
    r, c = np.tril_indices(d)
    cov[:, r, c] = packed
    cov[:, c, r] = packed
    return cov


def _rebuild_rows(mean: np.ndarray, packed: np.ndarray, S: int,
                  rng: np.random.Generator) -> np.ndarray:
    """``S`` draws ``(S, n, d)`` whose per-row sample mean and covariance (denominator
    ``S - 1``) equal ``mean`` and the unpacked covariance: ``a = m + F z`` with
    ``F = Q diag(sqrt(max(lambda, 0)))`` from the eigendecomposition of the covariance
    (robust to singular ones) and ``z`` standard normals made exactly zero-mean and
    white (``Z <- (Z - mean) L^{-T}``, ``L L^T`` their sample covariance)."""
    n, d = mean.shape
    out = np.empty((S, n, d), np.float32)
    step = max(1, (1 << 22) // (S * d))
    for a in range(0, n, step):
        b = min(n, a + step)
        lam, Q = np.linalg.eigh(_unpack(packed[a:b], d))
        F = Q * np.sqrt(np.clip(lam, 0.0, None))[:, None, :]
        Z = rng.standard_normal((b - a, S, d))
        Z -= Z.mean(axis=1, keepdims=True)
        G = np.einsum("nsd,nse->nde", Z, Z) / (S - 1)
        Linv = np.linalg.inv(np.linalg.cholesky(G))
        Z = np.einsum("nde,nse->nsd", Linv, Z)
        out[:, a:b] = (mean[a:b, None, :] + np.einsum("nde,nse->nsd", F, Z)).transpose(1, 0, 2)
    return out


def _summary_data(post: Posterior, n_out: int, dtype):
    """Variables of a summary file: per-row moments and ``n_out`` global draws."""
    k = post.spec.rank
    if post.spec.prior.support != "real":
        raise SpecError(f"mode='summary' rebuilds Gaussian factor rows after aligning the "
                        f"draws by rotations; the non-negative factors of the "
                        f"{post.likelihood.name} model ({post.spec.prior.name} prior) would "
                        f"turn negative and mix their labels: save with mode='draws' "
                        f"(draws=N keeps N evenly spaced draws)")
    if post.n_samples < 2:
        raise SpecError("mode='summary' needs a posterior with several draws; this one is "
                        "a point estimate (save it with mode='draws': it is one draw)")
    if n_out < k + 2:
        raise SpecError(f"mode='summary' rebuilds at least rank + 2 = {k + 2} draws "
                        f"(to match each row's mean and covariance); got draws={n_out}")
    S = post.n_samples
    check_allocation(8 * (k + 1) * (k + 4) * max(len(post.users), len(post.items)),
                     "the per-row moments of a summary model file")
    U, V = post.flat("U"), post.flat("V")
    R = _procrustes_rotations(U, V)
    data = {}
    for side, bias, F in (("user", post.flat("bu"), U), ("item", post.flat("bi"), V)):
        mean, packed = _row_moments(bias, F, R)
        data[f"summary__{side}_mean"] = ((side, "coef"), mean.astype(dtype))
        data[f"summary__{side}_cov"] = ((side, "coef_pair"), packed.astype(dtype))
    pick = np.linspace(0, S - 1, n_out).round().astype(np.int64)
    for name, arr in post.draws.items():
        if name in _ROW_NAMES:
            continue
        a = np.asarray(arr).reshape((S,) + np.shape(arr)[2:])[pick]
        if name in ("mu_U", "mu_V"):
            a = np.einsum("sk,skj->sj", a, R[pick])
        elif name in ("beta_U", "beta_V"):  # the link matrices map into the rotated space
            a = np.einsum("sfk,skj->sfj", a, R[pick])
        elif name in ("Lambda_U", "Lambda_V"):  # precision of R^T x: R^T Lambda R
            a = np.einsum("sik,sij,sjl->skl", R[pick], a, R[pick])
        a = a[None]
        data[name] = (_dims_for(name, a), a.astype(dtype) if a.dtype.kind == "f" else a)
    return data


def _summary_draws(ds, info: dict, k: int) -> dict:
    n_out = int(info["draws"])
    rng = np.random.default_rng(int(info.get("seed", 0)))
    out = {}
    for side, b, f in (("user", "bu", "U"), ("item", "bi", "V")):
        mean = ds[f"summary__{side}_mean"].values.astype(np.float64)
        if mean.shape[-1] != k + 1:
            raise ModelFileError(f"summary means have {mean.shape[-1]} coefficients per "
                                 f"{side}, expected rank + 1 = {k + 1}")
        check_allocation(4 * n_out * mean.size, f"rebuilding {n_out} {side} draws of a "
                         "summary model file")
        a = _rebuild_rows(mean, ds[f"summary__{side}_cov"].values.astype(np.float64),
                          n_out, rng)
        out[b] = a[None, :, :, 0]
        out[f] = np.ascontiguousarray(a[None, :, :, 1:])
    return out


# ----------------------------------------------------------------------------- save
def save(posterior: Posterior, path, *, mode: str = "draws", draws="auto", thin=None,
         dtype=np.float32, compression: int = 4, extra_attrs: dict | None = None) -> Path:
    """Write ``posterior`` to ``path`` (netCDF-4); returns the path.

    Parameters
    ----------
    mode : {"draws", "summary"}
        ``"draws"`` stores real posterior draws; ``"summary"`` per-row posterior means and
        covariances of ``[bias, factors]`` from which ``draws`` draws are rebuilt on load
        (a small file that still predicts with intervals; see the module docs for the
        approximation).
    draws : int, None, "all" or "auto"
        ``"draws"`` mode: keep at most this many draws, ``draws // chains`` per chain
        evenly spaced (first to last); ``None``/``"all"`` keeps every draw; ``"auto"``
        (default) is :data:`DEFAULT_DRAWS` (80), or every draw when ``thin`` is given.
        ``"summary"`` mode: the number of draws rebuilt on load (``"auto"``: 80; at
        least ``rank + 2``; ``None``: the posterior's number of draws).
    thin : int, optional
        Keep every ``thin``-th draw of each chain (before ``draws`` applies).
    dtype : numpy float type
        Storage type of the draws (float32 by default, what the samplers produce).
    compression : int
        gzip level 0-9 (0: none) for every array of 256 or more values, with the shuffle
        filter.
    extra_attrs : dict, optional
        Merged into the stored ``attrs``.

    The file is written to a temporary name and renamed, so an interrupted save never
    leaves a truncated model under ``path``. A missing folder, a folder at ``path`` or a
    write error raise :class:`~bayesmf.errors.ModelFileError`.
    """
    import xarray as xr

    if mode not in MODES:
        raise SpecError(f"mode must be one of {list(MODES)}, got {mode!r}")
    if isinstance(compression, bool) or not isinstance(compression, numbers.Integral) \
            or not 0 <= compression <= 9:
        raise SpecError(f"compression must be a gzip level 0-9, got {compression!r}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise SpecError(f"dtype must be a numpy float type, got {dtype!r}") from None
    if dtype.kind != "f":
        raise SpecError(f"dtype must be a numpy float type, got {dtype}")
    path = Path(path)
    _check_writable(path)
    n, thin = _resolve_draws(draws, thin, mode)
    C, D = posterior.n_chains, posterior.n_draws
    ci, di = _kept(C, D, None if mode == "summary" else n, thin)
    post = posterior if (len(ci) == C and len(di) == D) else posterior.select(ci, di)
    saved = {"mode": mode, "from_chains": C, "from_draws": D, "thin": thin,
             "dtype": str(dtype)}
    if mode == "summary":
        n_out = post.n_samples if n is None else n
        data = _summary_data(post, n_out, dtype)
        saved.update(chains=1, draws=n_out, seed=0, moments_from=post.n_samples,
                     alignment="orthogonal-procrustes")
        schema = SCHEMA_VERSION
    else:
        data = {}
        for name, arr in post.draws.items():
            a = np.asarray(arr)
            data[name] = (_dims_for(name, a), a.astype(dtype) if a.dtype.kind == "f" else a)
        for name, arr in post.sample_stats.items():
            a = np.asarray(arr)
            if a.dtype == bool:
                a = a.astype(np.int8)
            data[f"sample_stats__{name}"] = (
                ("chain", "draw") + tuple(f"ss_{name}_{j}" for j in range(a.ndim - 2)), a)
        saved.update(chains=post.n_chains, draws=post.n_draws)
        if len(di) < D or len(ci) < C:
            saved.update(chain_index=ci.tolist(), draw_index=di.tolist())
        schema = _DRAWS_SCHEMA
    feats = _features_data(posterior, data)
    t = posterior.train
    data["train__user_counts"] = (("user",), t.user_counts)
    data["train__item_counts"] = (("item",), t.item_counts)
    data["train__seen_indptr"] = (("seen_indptr",), t.seen_indptr)
    data["train__seen_indices"] = (("seen_nnz",), t.seen_indices)
    attrs = {
        "bayesmf_schema": schema,
        "mode": mode,
        "saved": json.dumps(_jsonable(saved)),
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
    if feats:
        attrs["features"] = json.dumps(feats)
    coords = {"user": posterior.users.ids, "item": posterior.items.ids}
    ds = xr.Dataset(data, coords=coords, attrs=attrs)
    encoding = {name: {"zlib": True, "complevel": int(compression), "shuffle": True}
                for name, var in ds.variables.items()
                if compression and var.size >= _MIN_COMPRESS and var.dtype.kind in "iuf"}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        ds.to_netcdf(tmp, engine="h5netcdf", encoding=encoding)
        os.replace(tmp, path)
    except OSError as exc:  # h5py puts its whole report in strerror: use the errno's text
        why = os.strerror(exc.errno) if exc.errno else type(exc).__name__
        raise ModelFileError(f"cannot write the model file {path}: {why}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _features_data(post: Posterior, data: dict) -> dict:
    """Side features (Macau): the matrix as CSR arrays ``features__<side>__indptr|indices|
    data`` in ``data`` (rows = the vocabulary); returns the JSON record of the schemas."""
    import scipy.sparse as sps

    out = {}
    for side, f in (getattr(post, "features", None) or {}).items():
        if f is None:
            continue
        X = sps.csr_matrix(f.X)
        data[f"features__{side}__indptr"] = ((f"features_{side}_indptr",),
                                             X.indptr.astype(np.int64))
        data[f"features__{side}__indices"] = ((f"features_{side}_nnz",),
                                              X.indices.astype(np.int64))
        data[f"features__{side}__data"] = ((f"features_{side}_nnz",),
                                           X.data.astype(np.float64))
        out[side] = {**f.to_dict(include_data=False), "sparse": f.is_sparse,
                     "shape": list(X.shape)}
    return out


def _load_features(ds, users, items) -> dict:
    """The side features stored by :func:`_features_data` (rows = the vocabularies, or
    their first rows when rows were appended by fold-in after the fit)."""
    import scipy.sparse as sps

    from bayesmf.data.features import Features

    out = {}
    rec = json.loads(ds.attrs["features"]) if "features" in ds.attrs else {}
    for side, r in rec.items():
        vocab = users if side == "user" else items
        shape = tuple(r["shape"])
        if shape[0] > len(vocab):
            raise ModelFileError(f"the stored {side} features have {shape[0]} rows for "
                                 f"{len(vocab)} {side}s")
        if shape[0] < len(vocab):  # rows appended by fold-in (no features) come last
            from bayesmf.data.vocab import Vocabulary

            vocab = Vocabulary(vocab.ids[:shape[0]], side)
        X = sps.csr_matrix((ds[f"features__{side}__data"].values,
                            ds[f"features__{side}__indices"].values,
                            ds[f"features__{side}__indptr"].values), shape=shape)
        out[side] = Features(vocab, X if r.get("sparse") else X.toarray(), r["schema"], side)
    return out


def _check_writable(path: Path) -> None:
    parent = path.parent
    if not parent.exists():
        raise ModelFileError(f"cannot write the model file {path}: the folder {parent} "
                             f"does not exist")
    if not parent.is_dir():
        raise ModelFileError(f"cannot write the model file {path}: {parent} is not a folder")
    if path.is_dir():
        raise ModelFileError(f"cannot write the model file {path}: it is a folder")


# ----------------------------------------------------------------------------- load
def _schema_version(ver, path: Path) -> int:
    """The integer schema version, or a one-line ModelFileError: an int, an integral
    float or a string of ASCII digits is accepted; ``2.5``, ``"two"``, ``inf``, ``nan``,
    booleans and arrays of several values are not."""
    if ver is None:
        raise ModelFileError(f"{path} is not a bayesmf model file (no bayesmf_schema "
                             f"attribute)")
    v = ver
    if isinstance(v, np.ndarray) and v.size == 1:
        v = v.reshape(()).item()
    if isinstance(v, (bytes, np.bytes_)):
        v = v.decode("utf-8", "replace")
    if isinstance(v, (bool, np.bool_)):
        pass
    elif isinstance(v, (str, np.str_)):
        s = str(v).strip()
        if s.isascii() and s.isdigit():
            return int(s)
    elif isinstance(v, numbers.Integral) and not isinstance(v, bool):
        return int(v)
    elif isinstance(v, numbers.Real) and np.isfinite(v) and float(v).is_integer():
        return int(v)
    shown = repr(ver.tolist() if isinstance(ver, np.ndarray) else ver)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    raise ModelFileError(f"{path} has a model schema version that is not an integer: "
                         f"{shown}; this bayesmf reads versions {list(READABLE_SCHEMAS)}")


def load(path) -> Posterior:
    """Read a model written by :func:`save`; see the module docs for the checks.

    A summary file (``mode="summary"``) loads as a one-chain posterior whose factor and
    bias draws are rebuilt from the stored per-row moments (the same draws on every
    load). ``posterior.attrs["saved"]`` says what the file kept."""
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder, not a model file")
    try:
        with xr.open_dataset(path, engine="h5netcdf") as ds:
            ds = ds.load()
    except Exception as exc:  # h5py/h5netcdf raise many types for broken files
        raise ModelFileError(
            f"{path} is not a readable bayesmf model file (corrupted or truncated?): "
            f"{type(exc).__name__}: {exc}") from exc
    ver = _schema_version(ds.attrs.get("bayesmf_schema"), path)
    if ver not in READABLE_SCHEMAS:
        raise ModelFileError(
            f"{path} has model schema version {ver}; this bayesmf reads versions "
            f"{list(READABLE_SCHEMAS)}. Re-save it with a matching bayesmf version.")
    mode = str(ds.attrs.get("mode", "draws"))
    if mode not in MODES:
        raise ModelFileError(f"{path} has an unknown model file mode {mode!r} "
                             f"(known: {list(MODES)})")
    try:
        spec = ModelSpec.from_dict(json.loads(ds.attrs["spec"]))
        sc = json.loads(ds.attrs["scale"])
        tr = json.loads(ds.attrs["train"])
        attrs = json.loads(ds.attrs["attrs"])
        saved = json.loads(ds.attrs["saved"]) if "saved" in ds.attrs else None
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
                 if not n.startswith(("sample_stats__", "train__", "summary__", "features__"))}
        stats = {n[len("sample_stats__"):]: ds[n].values for n in ds.data_vars
                 if n.startswith("sample_stats__")}
        if mode == "summary":
            if saved is None:
                raise ModelFileError(f"{path}: a summary model file without its 'saved' "
                                     f"attribute")
            draws.update(_summary_draws(ds, saved, spec.rank))
        levels = tuple(sc["levels"]) if sc.get("levels") else None
        train = TrainInfo(
            scale=RatingScale(sc["min"], sc["max"], levels), global_mean=tr["global_mean"],
            n_train=tr["n_train"], user_counts=ds["train__user_counts"].values,
            item_counts=ds["train__item_counts"].values,
            seen_indptr=ds["train__seen_indptr"].values,
            seen_indices=ds["train__seen_indices"].values, extra=tr.get("extra", {}))
        if len(train.seen_indptr) != len(users) + 1:
            raise ModelFileError(f"{path}: seen-pair structure does not match the users")
        if saved is not None:
            attrs["saved"] = saved
        feats = _load_features(ds, users, items)
        return Posterior(draws, spec, users, items, train, method, stats, None, attrs, feats)
    except (ModelFileError, MemoryLimitError):
        raise
    except Exception as exc:
        msg = " ".join(str(exc).split())
        raise ModelFileError(f"{path} is an inconsistent bayesmf model file: "
                             f"{type(exc).__name__}: {msg}") from exc
