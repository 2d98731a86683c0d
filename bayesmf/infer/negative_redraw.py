r"""Sampled negatives redrawn at every Gibbs sweep (on a static layout) or SVI step.

A Bernoulli model on implicit data is fitted to the positives (``y = 1``) plus sampled
negatives (``y = 0``, :mod:`bayesmf.data.negatives`). With ``redraw="sweep"`` the
negatives change at every sweep. The Gibbs sweep draws each side's rows from blocks of
observations laid out once with static shapes (:mod:`bayesmf.infer._rowblocks`), and a
fresh draw per user would change every item's number of negatives -- the item blocks'
shapes. So the redraw keeps both degree sequences and re-pairs:

* the fit-time training set (one draw of the rule) fixes each user's negative slots
  ``m_u`` and each item's negative slots ``k_i`` (``sum_u m_u = sum_i k_i = M``);
* at every sweep a uniformly random permutation ``rho`` of the ``M`` negative
  observations moves the item of observation ``neg[rho(s)]`` to observation ``neg[s]``
  (whose user stays). Each user keeps ``m_u`` negatives, each item ``k_i``: the user-side
  blocks keep their observations and only their other-side (item) indices change; the
  item-side blocks keep their rows and slots and point each slot at the observation that
  now holds it (``obs_map``, :func:`~bayesmf.infer._rowblocks.remap_blocks`);
* a re-paired negative that hits a positive of its user gets weight 0 for that sweep
  (``GibbsData.obs_mask``): its Gaussian pseudo-observation weight is 0 in both row draws
  and the mean draw, and its ``eta`` is 0 in the latent-scale move (a constant term of
  :math:`\log p(y \mid s\eta)`, so no influence on the move).

NumPyro SVI has no blocks: there (:mod:`bayesmf.infer.svi`, ``redraw_negatives``) every
optimisation step gives each negative *that the step uses* (all observations, or the
step's minibatch) the item of a uniformly random negative slot, independently
(:func:`resample_negatives`: the same law per slot, ``k_i / M``, without fixed item
totals), with the same mask (``handlers.mask`` on the likelihood site). The model draws
it (:func:`bayesmf.infer.numpyro_model.build_model`, ``redraw``), after its minibatch,
from its own ``numpyro.prng_key()``.

The sharded sampler (:mod:`bayesmf.infer.sharded`, ``chain_method="sharded"``) runs the
same re-pairing inside its ``shard_map``: the permutation and the new ``item`` / mask are
computed on every device from the same key (replicated, like the rest of the state), and
each device remaps the blocks of its own rows, whose observation and other-side indices
are global. Its chain is therefore the unsharded chain's, as for fixed negatives.

Per Gibbs sweep this costs one permutation of ``M``, gathers over the two layouts and a
binary search of each negative among its user's sorted positives (``steps`` halvings,
static). The random stream is a ``fold_in`` of the sweep's key, so the rest of the sweep
draws the same numbers as without the redraw. Per SVI step it costs a draw and a binary
search per used observation.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from bayesmf.errors import SpecError
from bayesmf.infer._rowblocks import remap_blocks

__all__ = ["NegativeRedraw", "check_redraw_likelihood", "redraw_layout", "redraw_negatives",
           "resample_negatives", "REDRAW_STREAM"]

#: ``fold_in`` constant of the redraw's key (its own stream within a sweep's key)
REDRAW_STREAM = 0x4E4547


class NegativeRedraw(NamedTuple):
    """Device arrays of the per-sweep redraw (a pytree; see the module docstring)."""

    neg_obs: jnp.ndarray    # (M,) int32: the observations that are sampled negatives
    item0: jnp.ndarray      # (n,) int32: each observation's item in the built layout
    pos_ptr: jnp.ndarray    # (N + 1,) int32: CSR offsets of each user's positives
    pos_items: jnp.ndarray  # (P,) int32: each user's positive items, sorted


def check_redraw_likelihood(lik) -> None:
    """SpecError unless ``lik`` is fitted to sampled negatives (``sampled_negatives``: the
    Bernoulli likelihoods)."""
    if not lik.sampled_negatives:
        raise SpecError(f"redrawing sampled negatives applies to the Bernoulli likelihoods "
                        f"only, not {lik.name!r}")


def redraw_layout(user, item, y) -> tuple[NegativeRedraw, int]:
    """``(NegativeRedraw, steps)`` of a 0/1 training set (host arrays; ``y == 0`` marks the
    sampled negatives, ``y == 1`` the positives). ``steps``: the binary-search halvings
    that cover the largest number of positives of a user (a static setting).
    SpecError if there are no negatives or no positives."""
    user = np.asarray(user, np.int64)
    item = np.asarray(item, np.int64)
    y = np.asarray(y)
    if user.shape != item.shape or user.shape != y.shape or user.ndim != 1:
        raise SpecError("user, item and y must be equal-length 1-d arrays")
    pos = y != 0
    if pos.all() or not pos.any():
        raise SpecError("redrawing negatives needs a 0/1 training set with both positives "
                        "(y = 1) and sampled negatives (y = 0)")
    n_users = int(user.max()) + 1
    pu, pi = user[pos], item[pos]
    order = np.lexsort((pi, pu))
    counts = np.bincount(pu, minlength=n_users)
    ptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    steps = int(np.ceil(np.log2(int(counts.max()) + 1))) + 1
    rd = NegativeRedraw(jnp.asarray(np.flatnonzero(~pos).astype(np.int32)),
                        jnp.asarray(item.astype(np.int32)), jnp.asarray(ptr),
                        jnp.asarray(pi[order].astype(np.int32)))
    return rd, steps


def _hits_positive(rd: NegativeRedraw, users, items, steps: int):
    """``items[j]`` is a positive of ``users[j]`` (binary search in the user's range)."""
    lo = rd.pos_ptr[users]
    end = rd.pos_ptr[users + 1]
    hi = end
    last = rd.pos_items.shape[0] - 1

    def halve(_, lh):
        lo, hi = lh
        mid = (lo + hi) // 2
        right = (lo < hi) & (rd.pos_items[jnp.minimum(mid, last)] < items)
        return jnp.where(right, mid + 1, lo), jnp.where(right | (lo >= hi), hi, mid)

    lo, _ = jax.lax.fori_loop(0, steps, halve, (lo, hi))
    return (lo < end) & (rd.pos_items[jnp.minimum(lo, last)] == items)


def _repaired(rd: NegativeRedraw, user, src, steps: int):
    """``(item, mask)``: negative ``neg_obs[s]`` takes the item of observation ``src[s]``
    (positives keep theirs); ``mask`` False where that item is a positive of its user."""
    item = rd.item0.at[rd.neg_obs].set(rd.item0[src])
    hit = _hits_positive(rd, user[rd.neg_obs], item[rd.neg_obs], steps)
    return item, jnp.ones(item.shape, bool).at[rd.neg_obs].set(~hit)


def redraw_negatives(key, data, n_users: int, n_items: int, steps: int, remap=remap_blocks):
    """``data`` (a :class:`~bayesmf.infer.gibbs_kernel.GibbsData` with ``redraw``) with
    its negatives re-paired by a random permutation drawn from ``key``: new ``item``
    array, remapped ``ublocks`` / ``iblocks`` and ``obs_mask`` (False where a re-paired
    negative hits a positive of its user). jit/vmap-able; the layouts' shapes are kept.

    ``remap(blocks, other_of_obs, n_other, obs_map=None)`` remaps one side's layout
    (:func:`~bayesmf.infer._rowblocks.remap_blocks`; the sharded sampler passes one for a
    device's :class:`~bayesmf.infer.sharded.ShardBlocks`, whose observation and other-side
    indices are global, so the same permutation -- replicated, from the same key -- moves
    the same observations on every device)."""
    rd = data.redraw
    M = rd.neg_obs.shape[0]
    src = rd.neg_obs[jax.random.permutation(key, M)]
    item, mask = _repaired(rd, data.user, src, steps)
    n = rd.item0.shape[0]
    # the item-side slot of the built observation src[s] now belongs to neg_obs[s]
    obs_map = jnp.arange(n, dtype=rd.neg_obs.dtype).at[src].set(rd.neg_obs)
    return data._replace(item=item, ublocks=remap(data.ublocks, item, n_items),
                         iblocks=remap(data.iblocks, data.user, n_users, obs_map),
                         obs_mask=mask)


def resample_negatives(key, rd: NegativeRedraw, users, items, negative, steps: int):
    """``(items, mask)`` for a method without blocks (SVI, at every optimisation step), on
    the observations it uses this step (all of them, or a minibatch; ``users``,
    ``items``, ``negative`` (bool: a sampled negative) per used observation, repeats
    allowed): each negative takes the item of a uniformly random negative slot,
    independently (with replacement: the items' totals vary, the law of each slot,
    ``k_i / M``, is the Gibbs re-pairing's); positives keep theirs; ``mask`` as in
    :func:`redraw_negatives` (False where a new item is a positive of its user). Costs
    ``O(B log P_u)`` for ``B`` used observations, not ``O(M)``."""
    M = rd.neg_obs.shape[0]
    src = rd.neg_obs[jax.random.randint(key, jnp.shape(users), 0, M)]
    new = jnp.where(negative, rd.item0[src], items)
    return new, ~(negative & _hits_positive(rd, users, new, steps))
