r"""One Gibbs chain sharded over several devices (``fit_gibbs(..., chain_method="sharded")``).

The sweep's cost is the row solves of steps 3/4 (:mod:`bayesmf.infer.gibbs`): per row
:math:`r` the Gram :math:`\sum_{j\in O_r} w_j x_{c(j)}x_{c(j)}^\top` (:math:`O(|O_r| d^2)`,
:math:`d = k + 1`) and a Cholesky (:math:`O(d^3)`). This module splits those over ``D``
devices of one 1-d mesh (axis ``"shard"``):

**Layout** (numpy, built once per fit, :func:`build_shard_blocks`). The users are cut into
``D`` contiguous row ranges :math:`[s_p, e_p)` balanced by the work weight
:math:`|O_r| + d/3` (observations plus the Cholesky per row; :func:`partition_rows`); the
items likewise, independently. Device ``p`` holds the :class:`~bayesmf.infer._rowblocks.
RowBlocks` of its user rows (the observations of those users, for the user half-sweep)
and of its item rows (for the item half-sweep): the same segments, widths and bucket
order as the unsharded layout, restricted to the range, with row indices local
(``0..R-1``), other-side indices and observation indices global. Every device gets the
same shapes (``shard_map`` needs them): ``R = max_p (e_p - s_p)`` rows (the padding rows
have no observations and their draws are dropped) and per bucket the largest segment
count (padding segments point at the all-zero design row and add exactly 0).

**Sweep** (:func:`sharded_step`): the whole sweep runs inside ``jax.shard_map`` over the
mesh. The chain state (``U, V, b, mu``, hyperparameters, theta) is **replicated**. Each
half-sweep a device solves its own rows against the full other side's design
:math:`[1, F_{other}]` and ``jax.lax.all_gather`` (tiled) collects the new rows of all
devices; a precomputed index puts them back in global row order, so every device holds the
new full ``U`` (``b_u``) before the item half-sweep, which uses it as its design.
Everything else -- the hyperparameter steps, bias precisions, shift/scale/translation
moves, mu, the likelihood's augmentation and its theta (tau, cutpoints), the latent scale
move, train RMSE -- is the unsharded code (:func:`bayesmf.infer.gibbs_kernel._sweep`)
run on the replicated arrays, identically on every device.

Why replicated statistics rather than ``psum`` through :mod:`bayesmf.model.reduce`: the
reduce seam assumes every shard's rows / observations are real (``count(n)`` psums the
local *shape*), while balanced contiguous ranges need padding rows and padding
observations on all but the largest shard; those would enter ``count`` and the centred
second moments (:math:`\sum(F_r-\bar F)(F_r - \bar F)^\top`) and give wrong conditionals.
The replicated statistics are exact (they are the unsharded ones, bit for bit, given the
same inputs) and cheap: row statistics cost :math:`O((N+M)k^2)` against the
:math:`O(n d^2 + (N+M)d^3)` of the row solves. The per-observation vectors (``y``, the
pseudo-data ``z, w``, :math:`\eta`) are replicated too; the :math:`O(nk)` predictions
:math:`\eta_j` are computed by the device that holds observation ``j`` in the user
layout (:func:`sharded_obs`) and all-gathered, while the :math:`O(n)` augmentation and
likelihood statistics run on every device (the part that does not speed up, **Speed**).
``cfg.axis_name`` stays None: the reduce seam is the route for a state that does not fit
one device (rows sharded, statistics psum-ed), which needs masked counts first.

**Random draws.** The sweep keys are those of the unsharded sweep. The standard normals of
the row draws are drawn for *all* rows with the unsharded call
(``normal(key, (n_rows, d, 1))``, :math:`O((N+M)d)` per device) and each device takes the
slices of its rows (``noise=`` of :func:`~bayesmf.infer._rowblocks.
gaussian_from_precision`); every other draw (Gamma, Wishart, the moves, mu, tau, the
truncated normals / Polya-Gamma of the augmentation) is the unsharded call on replicated
arguments. Precisely:

* **bit-identical for any number of devices** (and to the unsharded chain): every random
  number of the sweep (all keys, the row noise, the augmentation and move variates given
  their arguments), the layout (each row's segments, widths, bucket order, hence the
  terms of its Gram), and the per-observation predictions (each evaluated by the same
  expression on one device and all-gathered, element for element);
* **equal up to float rounding**: the row draws themselves. On CPU the per-device row
  Grams are bit-identical when computed alone (checked), but XLA compiles the fused
  Gram / Cholesky / triangular-solve program for the per-device shapes (``R`` rows
  instead of ``N``) and tiles its reductions differently, so single draws differ in the
  last bit (1 ulp after one sweep, ~1e-6 after five), and everything downstream
  (hyperparameters, mu, tau) inherits it. With ``shard_devices=1`` the shapes are the
  unsharded ones and the chain is bit-identical to the unsharded one (checked for 5
  sweeps, Gaussian and bernoulli-probit). Chains are chaotic, so over hundreds of sweeps
  the round-off grows and 1- and 2-device chains agree in distribution only.

"The unsharded chain" is the one with every row drawn by its own Cholesky factor
(``low_width=0``): the sharded sweep always uses that layout, while an unsharded chain on a
long-tail side with ``low_width="auto"`` draws its rows of few observations through the
Woodbury identity (:mod:`bayesmf.infer._rowblocks`, **Rows of few observations**) with
other random numbers -- the same conditional distributions, not the same draws.

**Devices.** ``shard_devices`` (None: all ``jax.devices()``). On CPU start JAX with
``XLA_FLAGS=--xla_force_host_platform_device_count=D`` before it is imported. Several
chains run one after another, each over all the devices (``attrs["chain_method_used"]
== "sharded"``, ``attrs["devices"] == D``). Every option of the plain sweep is supported,
with the chain the unsharded one:

* fixed per-row priors (``row_priors``, posterior propagation,
  :mod:`bayesmf.infer.propagation`): each device takes its own rows' ``(P0, h0)``;
* side features (the Macau prior, :mod:`bayesmf.infer.gibbs`): the link matrices
  :math:`\beta` and their precisions are drawn on every device from the replicated
  factors and features (:math:`O(F k^2)` per side), and each device shifts its own rows'
  prior means by their offsets :math:`\beta^\top x_r`
  (:func:`~bayesmf.infer.gibbs_steps.offset_shift`);
* the full-matrix likelihoods (implicit feedback, :mod:`bayesmf.model.likelihoods.
  implicit`): the dense terms every row shares (:math:`w_0 X^\top X` and
  :math:`w_0 X^\top t_0`, :func:`~bayesmf.infer.gibbs_steps.background_terms`) are
  computed on every device from the replicated other side, :math:`O(n_{other} d^2)`, and
  each device adds them to its own rows' Grams;
* the IWLS Metropolis-Hastings row step of the augmented likelihoods (``row_mh``, on by
  default for probit; :func:`sharded_mh_rows`): each device builds, factors and proposes
  its own rows' Gaussians and accepts or rejects them with the slices of the unsharded
  uniforms; the per-observation terms (:math:`\eta`, the working response, the log
  likelihood) are evaluated on every device at the all-gathered current and proposed
  rows (:math:`O(nk)`, replicated like the augmentation), and the accepted rows are
  all-gathered;
* sampled negatives redrawn every sweep (``redraw_negatives=True``,
  ``negatives="uniform:4@sweep"``): every device draws the same re-pairing and remaps the
  blocks of its own rows (:mod:`bayesmf.infer.negative_redraw`);
* subspace row draws (``row_block``, :func:`~bayesmf.infer._rowblocks.subspace_part`):
  each device draws the coordinate blocks of its own rows, starting from their current
  values in the replicated state, with its slice of the unsharded ``(rows, d)`` normals,
  and the new rows are all-gathered.

**Multi-host** (tested with two processes on localhost, ``tests/test_sharded.py``, slow
mark): start one process per host and, before any other JAX call,
``jax.distributed.initialize(coordinator_address, num_processes, process_id)`` (on CPU
also ``jax.config.update("jax_cpu_collectives_implementation", "gloo")``); then
``jax.devices()`` lists the devices of all hosts, every process builds the same numpy
layout and calls ``fit_gibbs(..., chain_method="sharded")`` with the same arguments; the
placed arrays are global (``NamedSharding`` over the global mesh) and the replicated
results (draws, posterior) are readable on every host.

**Speed.** Only the row solves and the predictions are split; the rest is replicated
(about 10-20% of the CPU time of a Gaussian sweep at rank 32 on the 0.49M-rating ML-1M
subset; Amdahl then allows about 1.7x on 2 free cores, before the gathers; more
for the augmented likelihoods, whose truncated-normal / Polya-Gamma draws and latent
scale move run over all observations on every device; the Macau draws of beta and the
dense terms of a full-matrix likelihood are replicated too), plus one all-gather per
half-sweep (the new rows) and one per prediction pass (two with an augmented
likelihood); the 2-device run used about 12% more CPU time in total than the unsharded
one. On a CPU the speed-up is bounded by how many cores one device leaves idle: XLA's CPU
runtime already runs the independent operations of one device's program concurrently.
Measured idle on the 2-core box (ML-1M subset, rank 32, ``benchmarks/bench_sharded.py``
-> ``results/sharded.md``): one device with one row part keeps 1.77 cores busy (so 2
devices can give at most 1.13x there) and takes 0.1478 s/sweep, 2 forced CPU devices
0.1564, one device with its default row parts 0.1406. The sharded chain is for devices
that do not share cores: several GPUs, or hosts (**Multi-host**).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.errors import SpecError
from bayesmf.infer._rowblocks import (RowBlocks, build_row_blocks, remap_blocks,
                                      solve_part, subspace_part)
from bayesmf.infer._rowblocks import partition_rows as _partition_rows
from bayesmf.infer.negative_redraw import REDRAW_STREAM, redraw_negatives

__all__ = ["AXIS", "ShardBlocks", "partition_rows", "build_shard_blocks", "shard_mesh",
           "sharded_rows_draw", "sharded_mh_rows", "sharded_obs", "sharded_step",
           "sharded_data", "place"]

#: the mesh axis name of the sharded sampler
AXIS = "shard"


class ShardBlocks(NamedTuple):
    """One side's row blocks split over ``D`` devices (every leaf has a leading device
    axis of length ``D``; inside ``shard_map`` a device sees its own slice).

    ``blocks``: the device's :class:`RowBlocks` (``R`` local rows, global other-side and
    observation indices); ``rows (R,)``: global index of each local row (padding rows:
    clipped into range, their draws dropped); ``gather (n_rows,)``: position of global
    row ``r`` in the all-gathered ``(D * R)`` rows (the same on every device)."""

    blocks: RowBlocks
    rows: np.ndarray
    gather: np.ndarray
    #: ``(O,)`` the observations of the device's rows (padding: 0, dropped); the
    #: per-observation predictions are computed there and all-gathered
    obs: np.ndarray
    #: ``(n,)`` position of observation ``j`` in the all-gathered ``(D * O)`` values
    obs_gather: np.ndarray


def partition_rows(degree, n_devices: int, row_cost: float = 0.0) -> np.ndarray:
    """Boundaries ``b (D+1,)`` of ``D`` contiguous row ranges balanced by the weight
    ``degree_r + row_cost`` (:func:`bayesmf.infer._rowblocks.partition_rows`, with a
    :class:`~bayesmf.errors.SpecError` for a device count below 1)."""
    if int(n_devices) < 1:
        raise SpecError(f"the number of devices must be >= 1, got {n_devices!r}")
    return _partition_rows(degree, n_devices, row_cost)


def build_shard_blocks(rows, cols, n_rows: int, n_other: int, n_devices: int, *,
                       max_width: int = 128, row_cost: float = 0.0) -> ShardBlocks:
    """The :class:`ShardBlocks` (numpy, leading device axis) of one side: observation
    ``j`` has row ``rows[j]`` and other-side index ``cols[j]``; see the module docs."""
    rows = np.asarray(rows, np.int64)
    cols = np.asarray(cols, np.int64)
    D = int(n_devices)
    degree = np.bincount(rows, minlength=n_rows)
    bnd = partition_rows(degree, D, row_cost)
    R = max(1, int(np.max(np.diff(bnd))))
    per, obs_all = [], []
    for p in range(D):
        s, e = int(bnd[p]), int(bnd[p + 1])
        obs = np.flatnonzero((rows >= s) & (rows < e))
        obs_all.append(obs)
        b = build_row_blocks(rows[obs] - s, cols[obs], R, n_other=n_other,
                             max_width=max_width)
        # local observation positions -> global observation indices (padding 0 stays a
        # valid index; its design row is the zero row)
        seg_obs = tuple(obs[o] if obs.size else np.zeros_like(o) for o in b.seg_obs)
        per.append((dict(zip(b.widths, zip(b.seg_row, b.seg_cols, seg_obs))), b.degree))
    widths = sorted({w for d, _ in per for w in d})
    seg_row, seg_cols, seg_obs = [], [], []
    for w in widths:
        S = max(d[w][0].shape[0] if w in d else 0 for d, _ in per)
        rr, cc, oo = [], [], []
        for d, _ in per:
            r0, c0, o0 = d.get(w, (np.zeros(0, np.int32), np.zeros((0, w), np.int32),
                                   np.zeros((0, w), np.int32)))
            pad = S - r0.shape[0]
            # padding segments: the last local row, zero design rows (they add exactly 0)
            rr.append(np.concatenate([r0, np.full(pad, R - 1, np.int32)]).astype(np.int32))
            cc.append(np.concatenate([c0, np.full((pad, w), n_other, np.int32)]).astype(
                np.int32))
            oo.append(np.concatenate([o0, np.zeros((pad, w), np.int32)]).astype(np.int32))
        seg_row.append(np.stack(rr))
        seg_cols.append(np.stack(cc))
        seg_obs.append(np.stack(oo))
    degree_local = np.stack([g for _, g in per]).astype(np.int32)
    blocks = RowBlocks(tuple(seg_row), tuple(seg_cols), tuple(seg_obs), degree_local,
                       np.tile(np.asarray([n_other], np.int32), (D, 1)))
    local_rows = np.stack([np.clip(bnd[p] + np.arange(R), 0, max(n_rows - 1, 0))
                           for p in range(D)]).astype(np.int32)
    owner = np.repeat(np.arange(D), np.diff(bnd))
    gather = (owner * R + (np.arange(n_rows) - bnd[owner])).astype(np.int32)
    O = max(1, max(o.size for o in obs_all))
    obs_pad = np.zeros((D, O), np.int32)
    obs_gather = np.zeros(rows.size, np.int64)
    for p, o in enumerate(obs_all):
        obs_pad[p, :o.size] = o
        obs_gather[o] = p * O + np.arange(o.size)
    return ShardBlocks(blocks, local_rows, np.tile(gather, (D, 1)), obs_pad,
                       np.tile(obs_gather.astype(np.int32), (D, 1)))


def sharded_rows_draw(axis: str = AXIS):
    """A ``rows_fn`` for :func:`~bayesmf.infer.gibbs_kernel._sweep` (the signature of
    :func:`~bayesmf.infer.gibbs_steps.rows_draw`, with a device's :class:`ShardBlocks`
    as ``blocks``): solve the device's rows, add the slice of the all-rows noise, and
    all-gather the rows of every device over ``axis``; returns the full ``(b, F)``."""
    from bayesmf.infer.gibbs_steps import (_design, _joint_rows, _side_prior,
                                           background_terms, offset_shift)

    def rows_fn(key, k, sb, with_bias, other_F, y, tau, lam_b, Lam, mu_f, background=None,
                offset=None, row_prior=None, current=None, row_block=0):
        dt = y.dtype
        n_rows = sb.gather.shape[0]
        X = _design(k, with_bias, other_F, dt)
        d = X.shape[1]
        if row_prior is not None:  # propagated per-row priors: this device's rows'
            P0, h0 = (a[sb.rows] for a in row_prior)
        else:
            P0, h0 = _side_prior(k, with_bias, lam_b, Lam, mu_f, dt)
            if offset is not None and k:  # Macau: this device's rows' prior means
                h0 = offset_shift(offset[sb.rows], Lam, with_bias, h0)
        dense = rhs = None
        if background is not None:  # full-matrix likelihood: its dense terms, replicated
            tau, h0, dense, rhs = background_terms(background, X, y, tau, h0)
        # the unsharded noise of all rows, this device's slice (device-count independent)
        if row_block and row_block < d:  # subspace row draws from the device's current rows
            Z0 = _joint_rows(k, with_bias, current)[sb.rows]
            eps = jax.random.normal(key, (n_rows, d), dt)[sb.rows]
            Z = subspace_part(sb.blocks, X, y, tau, P0, h0, Z0, eps, row_block, dense, rhs,
                              False)
        else:
            eps = jax.random.normal(key, (n_rows, d, 1), dt)[sb.rows]
            Z = solve_part(sb.blocks, X, y, tau, P0, h0, eps, dense_gram=dense, rhs=rhs)
        Z = jax.lax.all_gather(Z, axis, tiled=True)[sb.gather]
        b = Z[:, 0] if with_bias else jnp.zeros((n_rows,), dt)
        return b, Z[:, int(with_bias):]

    return rows_fn


def sharded_mh_rows(axis: str = AXIS):
    """An ``mh_fn`` for :func:`~bayesmf.infer.gibbs_kernel._sweep` (the signature of
    :func:`~bayesmf.infer.gibbs_steps.iwls_mh_rows`, with a device's :class:`ShardBlocks`
    as ``blocks``): the IWLS Metropolis-Hastings step of the device's rows (their Grams,
    Cholesky factors, proposals and accept decisions), with the per-observation terms at
    the all-gathered rows and the unsharded random numbers sliced (``local=`` of
    :func:`~bayesmf.infer.gibbs_steps.iwls_mh_rows`); returns the full ``(b, F)``."""
    from bayesmf.infer.gibbs_steps import iwls_mh_rows

    def mh_fn(key, lik, theta, sb, *args, **kw):
        def gather(z):
            return jax.lax.all_gather(z, axis, tiled=True)[sb.gather]

        return iwls_mh_rows(key, lik, theta, sb.blocks, *args, local=(sb.rows, gather), **kw)

    return mh_fn


def sharded_obs(sb: ShardBlocks, users, items, axis: str = AXIS):
    """An ``obs_fn`` for :func:`~bayesmf.infer.gibbs_kernel._sweep`: ``f`` evaluated at
    the device's observations (``sb.obs``), all-gathered over ``axis`` and put back in
    observation order (the same values as ``f(users, items)``, element for element)."""
    u, i = users[sb.obs], items[sb.obs]

    def obs_fn(f):
        return jax.lax.all_gather(f(u, i), axis, tiled=True)[sb.obs_gather]

    return obs_fn


def _shard_map():
    if hasattr(jax, "shard_map"):
        return jax.shard_map
    from jax.experimental.shard_map import shard_map  # older JAX

    return shard_map


def _data_specs(data):
    from jax.sharding import PartitionSpec as Ps

    return type(data)(Ps(), Ps(), Ps(), Ps(AXIS), Ps(AXIS),
                      feats=None if data.feats is None else Ps(),
                      row_priors=None if data.row_priors is None else Ps(),
                      redraw=None if data.redraw is None else Ps())


def _remap_shard(sb: ShardBlocks, other_of_obs, n_other: int, obs_map=None) -> ShardBlocks:
    """:func:`~bayesmf.infer._rowblocks.remap_blocks` of a device's blocks (the ``remap``
    of :func:`~bayesmf.infer.negative_redraw.redraw_negatives`). ``sb.obs`` (the
    observations of the device's user rows) needs no remap: a re-paired negative keeps
    its user, only its item changes."""
    return sb._replace(blocks=remap_blocks(sb.blocks, other_of_obs, n_other, obs_map))


def sharded_step(cfg, mesh):
    """``step(data, key, state) -> (state, info)``: one sweep of one chain over ``mesh``
    (axis :data:`AXIS`), ``data`` from :func:`sharded_data`."""
    from jax.sharding import PartitionSpec as Ps

    from bayesmf.infer.gibbs_kernel import _sweep
    from bayesmf.model.reduce import sharded

    rows_fn = sharded_rows_draw(AXIS)
    mh_fn = sharded_mh_rows(AXIS)
    one = lambda t: jax.tree_util.tree_map(lambda a: a[0], t)  # noqa: E731

    def body(data, key, state):
        data = data._replace(ublocks=one(data.ublocks), iblocks=one(data.iblocks))
        if data.redraw is not None:  # the unsharded re-pairing, on this device's blocks
            data = redraw_negatives(jax.random.fold_in(key, REDRAW_STREAM), data,
                                    cfg.n_users, cfg.n_items, cfg.redraw_steps,
                                    remap=_remap_shard)
        obs_fn = sharded_obs(data.ublocks, data.user, data.item, AXIS)
        with sharded(None):  # statistics on the replicated arrays (module docs)
            return _sweep(cfg, data, key, state, rows_fn=rows_fn, obs_fn=obs_fn,
                          mh_fn=mh_fn)

    sm = _shard_map()

    def step(data, key, state):
        f = sm(body, mesh=mesh, in_specs=(_data_specs(data), Ps(), Ps()), out_specs=Ps(),
               check_vma=False)
        return f(data, key, state)

    return step


def shard_mesh(n_devices=None):
    """A 1-d mesh (axis :data:`AXIS`) over the first ``n_devices`` of ``jax.devices()``
    (None: all)."""
    from jax.sharding import Mesh

    devs = jax.devices()
    n = len(devs) if n_devices is None else n_devices
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SpecError(f"shard_devices must be an integer >= 1 or None, got {n_devices!r}")
    if n > len(devs):
        raise SpecError(f"shard_devices={n} but JAX sees {len(devs)} device(s); on CPU "
                        f"start it with XLA_FLAGS=--xla_force_host_platform_device_count={n} "
                        "before jax is imported")
    return Mesh(np.array(devs[:n]), (AXIS,))


def sharded_data(kern, train, mesh, max_width: int = 128):
    """The kernel's :class:`~bayesmf.infer.gibbs_kernel.GibbsData` with the row blocks
    of both sides replaced by their :class:`ShardBlocks` over ``mesh``, placed on it
    (blocks split over the devices, the observation vectors replicated)."""
    cfg = kern.cfg
    D = int(mesh.devices.size)
    u = np.asarray(train.user, np.int64)
    i = np.asarray(train.item, np.int64)
    d = cfg.k + 1
    ub = build_shard_blocks(u, i, cfg.n_users, cfg.n_items, D, max_width=max_width,
                            row_cost=d / 3.0)
    ib = build_shard_blocks(i, u, cfg.n_items, cfg.n_users, D, max_width=max_width,
                            row_cost=d / 3.0)
    data = kern.data._replace(ublocks=ub, iblocks=ib)
    return place(data, mesh)


def place(data, mesh):
    """Put ``data`` on ``mesh``: the :class:`ShardBlocks` split along their device axis,
    everything else replicated."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as Ps

    split = NamedSharding(mesh, Ps(AXIS))
    rep = NamedSharding(mesh, Ps())
    put = lambda t, s: jax.tree_util.tree_map(lambda a: jax.device_put(a, s), t)  # noqa
    return data._replace(user=put(data.user, rep), item=put(data.item, rep),
                         rating=put(data.rating, rep), ublocks=put(data.ublocks, split),
                         iblocks=put(data.iblocks, split),
                         feats=None if data.feats is None else put(data.feats, rep),
                         row_priors=(None if data.row_priors is None
                                     else put(data.row_priors, rep)),
                         redraw=None if data.redraw is None else put(data.redraw, rep))
